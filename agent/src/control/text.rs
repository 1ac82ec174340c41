//! The view as text, as `show` prints it by default.

use std::time::{SystemTime, UNIX_EPOCH};

use super::View;

/// The text form of a view: the agent's header lines (when an agent
/// answered), one line per virtual server (`-` for an unknown owner) with
/// its real servers below, then one line per rejected object.
pub fn render_text(view: &View) -> String {
    let mut out = String::new();
    if let Some(a) = &view.agent {
        out.push_str(&format!(
            "agent: pid {}, node {}, {}{}, running since {}\n",
            a.pid,
            a.node,
            a.source,
            if a.dry_run { ", dry run" } else { "" },
            a.started_at
        ));
        match &view.last_sync {
            None => out.push_str("last sync: none yet\n"),
            Some(s) => {
                let result = match s.result.as_str() {
                    "ok" => "ok".to_string(),
                    "refused" => format!("{} operations refused by the kernel", s.failed_ops),
                    _ => format!("failed: {}", s.error.as_deref().unwrap_or("?")),
                };
                out.push_str(&format!(
                    "last sync: {} {}, {} ms, {}\n",
                    s.started_at,
                    s.kind,
                    (s.duration_seconds * 1000.0).round(),
                    result
                ));
                if s.result != "ok" {
                    out.push_str(&format!(
                        "last successful sync: {}\n",
                        view.last_successful_sync.as_deref().unwrap_or("none")
                    ));
                }
            }
        }
    }
    for vs in &view.virtual_servers {
        let mut line = format!(
            "{}  {}  {}",
            vs.service.as_deref().unwrap_or("-"),
            vs.virtual_server,
            vs.scheduler
        );
        if let Some(t) = vs.persistent_timeout {
            line.push_str(&format!("  persistent {t}"));
        }
        if !vs.in_kernel {
            line.push_str("  (not in the kernel)");
        }
        out.push_str(&line);
        out.push('\n');
        for r in &vs.real_servers {
            let addr = if r.address.contains(':') {
                format!("[{}]:{}", r.address, r.port)
            } else {
                format!("{}:{}", r.address, r.port)
            };
            out.push_str(&format!(
                "  -> {addr}  weight {}  active {}  inactive {}{}\n",
                r.weight,
                r.active,
                r.inactive,
                if r.draining == Some(true) {
                    "  draining"
                } else {
                    ""
                }
            ));
        }
    }
    for r in &view.rejected {
        out.push_str(&format!(
            "rejected {} {}/{}: {} ({})\n",
            r.kind, r.namespace, r.name, r.reason, r.detail
        ));
    }
    out
}

/// RFC 3339 in UTC with milliseconds: `2026-12-07T23:10:05.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days -> civil date.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        d.subsec_millis()
    )
}
