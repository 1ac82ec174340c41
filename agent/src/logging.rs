//! Logging set-up: klog-style `-v` levels mapped to `tracing` filters.

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

/// Installs the global subscriber. `RUST_LOG`, when set, replaces the
/// `-v`-derived filter. Returns an error if a subscriber is already set.
pub fn init(verbosity: u8, format: LogFormat) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(s) if !s.trim().is_empty() => EnvFilter::try_new(s).map_err(|e| e.to_string())?,
        _ => EnvFilter::try_new(filter_directive(verbosity)).map_err(|e| e.to_string())?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
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
