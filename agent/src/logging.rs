//! Logging set-up: klog-style `-v` levels mapped to `tracing` filters, and
//! a stderr writer that can hold lines back while a sync logs its plan
//! ([`Batch`]).

use std::cell::RefCell;
use std::io::Write;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Our crates, which get more verbose before the libraries do.
const OUR_CRATES: &[&str] = &["ipvs_proxy", "proxy_core", "dataplane", "ipvs"];

/// The filter directive for a klog verbosity: 0-1 info; 2-3 debug for our
/// crates; 4 debug everywhere; 5+ trace for ours and debug for the rest.
/// Forwarding changes are logged at info; whole plans at debug.
pub fn filter_directive(verbosity: u8) -> String {
    let ours = |level: &str| {
        OUR_CRATES
            .iter()
            .map(|c| format!("{c}={level}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    match verbosity {
        0 | 1 => "info".to_string(),
        2 | 3 => format!("info,{}", ours("debug")),
        4 => "debug".to_string(),
        _ => format!("debug,{}", ours("trace")),
    }
}

thread_local! {
    /// Lines held back by this thread's [`Batch`]; `None` when none is open.
    static HELD: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
}

/// Held-back bytes that are written out at once, even while the batch is
/// still open.
const HELD_MAX: usize = 64 << 10;

/// While a `Batch` lives, the log lines of its thread are collected in
/// memory and written to stderr together when it is dropped, or whenever
/// 64 KiB have piled up; other threads write as usual. A large sync logs
/// thousands of lines in a few hundred milliseconds without awaiting:
/// one `write` per 64 KiB instead of one per line. Batches do not nest:
/// opening one while another is open on the thread does nothing. Lines
/// held when the process dies abruptly (SIGKILL) are lost.
#[derive(Debug)]
#[must_use = "the lines are held only while the batch lives"]
pub struct Batch {
    opened: bool,
}

impl Batch {
    /// Starts holding lines back.
    pub fn open() -> Self {
        let opened = HELD.with_borrow_mut(|held| {
            let opened = held.is_none();
            if opened {
                *held = Some(Vec::new());
            }
            opened
        });
        Batch { opened }
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        if !self.opened {
            return;
        }
        if let Some(buf) = HELD.with_borrow_mut(Option::take) {
            // Nowhere to report a failed log write.
            let _ = std::io::stderr().write_all(&buf);
        }
    }
}

/// Stderr, through the [`Batch`] buffer while one is open.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        HELD.with_borrow_mut(|held| match held.as_mut() {
            Some(v) => {
                v.extend_from_slice(buf);
                if v.len() >= HELD_MAX {
                    let out = std::io::stderr().write_all(v);
                    v.clear();
                    out?;
                }
                Ok(buf.len())
            }
            None => std::io::stderr().write(buf),
        })
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = Stderr;

    fn make_writer(&'a self) -> Self::Writer {
        Stderr
    }
}

/// Installs the global subscriber. `RUST_LOG`, when set, replaces the
/// `-v`-derived filter. Returns an error if a subscriber is already set.
pub fn init(verbosity: u8, format: LogFormat) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(s) if !s.trim().is_empty() => EnvFilter::try_new(s).map_err(|e| e.to_string())?,
        _ => EnvFilter::try_new(filter_directive(verbosity)).map_err(|e| e.to_string())?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    }
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_holds_lines_until_it_ends() {
        let outer = Batch::open();
        Stderr.write_all(b"one\n").unwrap();
        {
            let inner = Batch::open();
            assert!(!inner.opened, "batches do not nest");
            Stderr.write_all(b"two\n").unwrap();
        }
        assert_eq!(
            HELD.with_borrow(|h| h.clone()).as_deref(),
            Some(&b"one\ntwo\n"[..]),
            "still held after the inner batch"
        );
        // Past the limit, everything held is written out.
        Stderr.write_all(&vec![b'x'; HELD_MAX]).unwrap();
        assert_eq!(HELD.with_borrow(|h| h.clone()).as_deref(), Some(&b""[..]));
        Stderr.write_all(b"three\n").unwrap();
        drop(outer);
        assert!(HELD.with_borrow(Option::is_none));
    }

    #[test]
    fn verbosity_levels_map_to_filters() {
        assert_eq!(filter_directive(0), "info");
        assert_eq!(filter_directive(1), "info");
        assert!(filter_directive(2).starts_with("info,ipvs_proxy=debug"));
        assert_eq!(filter_directive(4), "debug");
        assert!(filter_directive(9).contains("ipvs_proxy=trace"));
        for v in 0..=10 {
            assert!(
                EnvFilter::try_new(filter_directive(v)).is_ok(),
                "level {v} must give a valid filter"
            );
        }
    }
}
