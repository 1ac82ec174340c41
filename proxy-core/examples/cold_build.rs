//! One cold full build of the benchmark cluster (10,000 Services x 10
//! endpoints), for instruction-count profiling:
//! `valgrind --tool=callgrind --toggle-collect='*replace_all*' target/release/examples/cold_build`.

use proxy_core::ProxyState;

#[path = "../tests/common/mod.rs"]
mod common;
use common::{bench_cluster, config, node};

/// Minor page faults of this process so far (`/proc/self/stat` field 10;
/// 0 where unavailable): fresh memory costs a fault per 4 KiB page.
fn minor_faults() -> u64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the command name, which is in parentheses.
            let rest = &s[s.rfind(')')? + 2..];
            rest.split_whitespace().nth(7)?.parse().ok()
        })
        .unwrap_or(0)
}

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let (svcs, slices) = bench_cluster(n);
    let cpu = || {
        nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
            .map(std::time::Duration::from)
            .unwrap_or_default()
    };
    // With `repeat`: further builds, first each dropped before the next
    // (memory reused), then all kept (fresh memory each time, as criterion's
    // `iter_with_large_drop` does), printing this thread's CPU time for each.
    let repeat: usize = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(0);
    for mode in ["dropped", "kept"] {
        let mut kept = Vec::new();
        for _ in 0..repeat {
            let (t, f) = (cpu(), minor_faults());
            let mut s = ProxyState::new(config(), node());
            s.replace_all(&svcs, &slices);
            println!(
                "{mode}: {:.1} ms CPU, {} page faults",
                (cpu() - t).as_secs_f64() * 1e3,
                minor_faults() - f
            );
            if mode == "kept" {
                kept.push(s);
            }
        }
    }
    let mut s = ProxyState::new(config(), node());
    s.replace_all(&svcs, &slices);
    println!(
        "{} virtual servers, {} real servers, {} filter entries",
        s.desired().virtual_servers.len(),
        s.desired().real_server_count(),
        s.desired().filter.entries.len()
    );
}
