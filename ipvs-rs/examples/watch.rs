//! Prints per-service rates every interval, computed from the kernel's
//! counters (the difference of two samples, like `ipvsadm -Ln --rate`
//! but measured over our own interval), with the kernel's own estimate
//! of connections per second beside them.
//!
//! ```text
//! cargo run -p ipvs-rs --example watch -- [--interval-ms 1000] [--count N]
//! ```
//!
//! One line per service and interval:
//!
//! ```text
//! TCP 10.96.0.1:80 conns/s 12.0 inpkts/s 96.0 outpkts/s 80.0 inbytes/s 6400 outbytes/s 91000 (kernel cps 11) conns 1234
//! ```

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ipvs::{Handle, ServiceKey, Stats};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> Res<()> {
    let mut interval = Duration::from_millis(1000);
    let mut count: Option<u64> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().ok_or(format!("{a} needs a value"))?;
        match a.as_str() {
            "--interval-ms" => interval = Duration::from_millis(v.parse()?),
            "--count" => count = Some(v.parse()?),
            _ => return Err(format!("unexpected argument {a:?}").into()),
        }
    }
    let mut ipvs = Handle::new()?;
    // The previous sample of each service: its counters and when.
    let mut last: HashMap<ServiceKey, (Stats, Instant)> = HashMap::new();
    let mut printed = 0;
    loop {
        // ipvsadm -Ln --stats (service lines): one dump of the services.
        let services = ipvs.services()?;
        let now = Instant::now();
        let mut seen = HashMap::new();
        for vs in services {
            let Some(stats) = vs.stats else { continue };
            if let Some((before, at)) = last.get(&vs.key) {
                let secs = now.duration_since(*at).as_secs_f64().max(1e-3);
                // Counters restart from 0 after `ipvsadm -Z` or a re-add.
                let rate = |now: u64, then: u64| now.saturating_sub(then) as f64 / secs;
                println!(
                    "{} conns/s {:.1} inpkts/s {:.1} outpkts/s {:.1} inbytes/s {:.0} outbytes/s {:.0} (kernel cps {}) conns {}",
                    vs.key,
                    rate(stats.conns, before.conns),
                    rate(stats.inpkts, before.inpkts),
                    rate(stats.outpkts, before.outpkts),
                    rate(stats.inbytes, before.inbytes),
                    rate(stats.outbytes, before.outbytes),
                    stats.cps,
                    stats.conns,
                );
            }
            seen.insert(vs.key, (stats, now));
        }
        last = seen;
        printed += 1;
        if count.is_some_and(|c| printed > c) {
            return Ok(());
        }
        std::thread::sleep(interval);
    }
}
