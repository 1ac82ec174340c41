//! Criterion benchmarks of the packet filter's pure part (issue 12): one
//! endpoint change at 1,000 and 10,000 Services x 10 endpoints, from the
//! plan's filter operations to the nft commands (stage on the table's state,
//! then render the element update), and the full table the periodic full
//! sync writes. The cluster is proxy-core's bench cluster (4 of 10 endpoints per
//! Service on this node, so 4 hairpin facts per Service).
//!
//! Also the same change as nfnetlink element messages (what the agent
//! sends by default).
//!
//! Run: `cargo bench -p dataplane --bench filter`. Prints the bytes of nft
//! input of each case once.

use std::collections::BTreeSet;
use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use dataplane::nft::{netlink, render_delta, render_replace, FilterState, Staged};
use proxy_core::{plan, plan_changes, DrainBook, Observed, Plan, ProxyState};

#[path = "../../proxy-core/tests/common/mod.rs"]
mod common;
use common::{bench_cluster as cluster, bench_slice as slice, config, node};

/// The table after a cold start at `n` Services, and the two partial plans
/// that move one local endpoint of one Service away and back.
fn setup(n: u32) -> (FilterState, [Plan; 2]) {
    let (svcs, slices) = cluster(n);
    let mut s = ProxyState::new(config(), node());
    s.replace_all(&svcs, &slices);
    let policy = s.policy();
    let mut obs = Observed::default();
    let mut drains = DrainBook::new();
    let p = plan(s.desired(), &obs, &policy, &mut drains, Instant::now());
    obs.apply(&p).expect("initial plan applies");
    s.take_changes();
    let mut fs = FilterState::new(0x4000, BTreeSet::new(), true);
    assert_eq!(fs.stage(&p.filter, &p.bind, &p.unbind), Staged::Table);
    let target = n / 2;
    let a = slice(target, 10, 0);
    let mut b = slice(target, 10, 0);
    // Endpoint 0 is on this node: replacing it changes a hairpin fact.
    b.endpoints[0].addresses = vec!["10.250.0.1".into()];
    let mut step = |sl| {
        s.apply_slice(sl);
        let ch = s.take_changes();
        let p = plan_changes(s.desired(), &obs, &ch, &policy, &mut drains, Instant::now());
        obs.apply(&p).expect("partial plan applies");
        p
    };
    let there = step(&b);
    let back = step(&a);
    assert!(!there.filter.is_empty(), "the change reaches the filter");
    (fs, [there, back])
}

fn one_endpoint_change(c: &mut Criterion) {
    let mut g = c.benchmark_group("filter/one_endpoint_change");
    for n in [1_000u32, 10_000] {
        let (mut fs, plans) = setup(n);
        let mut i = 0;
        let mut bytes = 0;
        g.bench_with_input(BenchmarkId::new("ops_to_nft_commands", n), &n, |b, _| {
            b.iter(|| {
                let p = &plans[i % 2];
                i += 1;
                let Staged::Elements(d) = fs.stage(&p.filter, &p.bind, &p.unbind) else {
                    panic!("not an element change")
                };
                let script = render_delta("ipvs-proxy", &d.delete, &d.add);
                bytes = script.len();
                black_box(script)
            })
        });
        eprintln!("one endpoint change at {n} Services: {bytes} bytes of nft input");
        let mut msgs = 0;
        g.bench_with_input(
            BenchmarkId::new("ops_to_netlink_messages", n),
            &n,
            |b, _| {
                b.iter(|| {
                    let p = &plans[i % 2];
                    i += 1;
                    let Staged::Elements(d) = fs.stage(&p.filter, &p.bind, &p.unbind) else {
                        panic!("not an element change")
                    };
                    let m = netlink::encode("ipvs-proxy", &d).expect("no interval set");
                    msgs = m.len();
                    black_box(m)
                })
            },
        );
        eprintln!("one endpoint change at {n} Services: {msgs} nfnetlink element messages");
    }
    g.finish();
}

fn full_table(c: &mut Criterion) {
    let mut g = c.benchmark_group("filter/full_table");
    g.sample_size(10);
    for n in [1_000u32, 10_000] {
        let (fs, _) = setup(n);
        let mut bytes = 0;
        g.bench_with_input(BenchmarkId::new("render_replace", n), &n, |b, _| {
            b.iter(|| {
                let t = render_replace("ipvs-proxy", &fs.skeleton(), fs.elements());
                bytes = t.len();
                black_box(t)
            })
        });
        eprintln!("full table at {n} Services: {bytes} bytes of nft input");
    }
    g.finish();
}

criterion_group!(benches, one_endpoint_change, full_table);
criterion_main!(benches);
