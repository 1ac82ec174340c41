//! Memory held by a `ProxyState` for the benchmark cluster (N Services x 10
//! endpoints, as in `benches/desired_state.rs`). The state is built by a
//! cold `replace_all`, the input objects are dropped, and the state is then
//! leaked on purpose, so that what is still allocated at exit is exactly the
//! state's heap:
//!
//! `valgrind --tool=dhat --dhat-out-file=/dev/null target/release/examples/heap 3000`
//! ("At t-end" = the state; "At t-gmax" = the peak, inputs included).
//!
//! Without valgrind it prints the process's resident set size (VmRSS) at each
//! step, a coarser figure that includes allocator slack.

use proxy_core::ProxyState;

#[path = "../tests/common/mod.rs"]
mod common;
use common::{bench_cluster, config, node};

/// VmRSS in KiB from /proc/self/status (0 where unavailable).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(3_000);
    let rss0 = rss_kib();
    let (svcs, slices) = bench_cluster(n);
    let rss1 = rss_kib();
    let mut s = ProxyState::new(config(), node());
    s.replace_all(&svcs, &slices);
    let rss2 = rss_kib();
    drop(svcs);
    drop(slices);
    let rss3 = rss_kib();
    println!(
        "{n} Services: {} virtual servers, {} real servers; VmRSS KiB: start {rss0}, \
         inputs built {rss1}, state built {rss2}, inputs dropped {rss3}",
        s.desired().virtual_servers.len(),
        s.desired().real_server_count(),
    );
    // Leaked on purpose: what valgrind finds allocated at exit is the state.
    std::mem::forget(s);
}
