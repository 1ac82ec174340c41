//! The view as text, as `show` prints it by default.

use std::time::SystemTime;

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
    let t = jiff::Timestamp::try_from(t).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}
