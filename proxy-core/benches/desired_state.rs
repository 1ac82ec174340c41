//! Criterion benchmarks (issue 3 item 8): full desired state for 10,000
//! Services x 10 endpoints; one endpoint change at 1,000 / 10,000 / 30,000
//! Services (engine update, and engine update + partial plan).
//!
//! Every benchmark runs twice: `wall/...` (wall-clock time) and `cpu/...`
//! (this thread's CPU time, `CLOCK_THREAD_CPUTIME_ID`), because on a shared,
//! oversubscribed machine wall time mostly measures the other processes.
//!
//! The cluster: one port per Service, 10 endpoints each, 4 of them (every
//! third, from the first) on this node, so every Service also has 4 hairpin
//! facts: 50,000 filter entries at 10,000 Services. That is far more local
//! pods than a real node runs; it makes the build heavier, not lighter.

use std::hint::black_box;
use std::time::Instant;

use std::time::Duration;

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use proxy_core::{plan, plan_changes, DrainBook, Observed, ProxyState};

#[path = "../tests/common/mod.rs"]
mod common;
use common::{bench_cluster as cluster, bench_slice as slice, config, node};

fn full_state<M: Measurement>(c: &mut Criterion<M>, tag: &str) {
    let (svcs, slices) = cluster(10_000);
    let mut g = c.benchmark_group(format!("{tag}/full_state"));
    g.sample_size(10);
    // A cold start: one relist of everything. Dropping the state is not
    // part of building it, so it is kept out of the measurement.
    g.bench_function("10k_services_x_10_endpoints", |b| {
        b.iter_with_large_drop(|| {
            let mut s = ProxyState::new(config(), node());
            s.replace_all(&svcs, &slices);
            s
        })
    });
    g.bench_function("10k_services_x_10_endpoints_full_plan_from_empty", |b| {
        let mut s = ProxyState::new(config(), node());
        s.replace_all(&svcs, &slices);
        let policy = s.policy();
        let obs = Observed::default();
        b.iter(|| {
            let mut drains = DrainBook::new();
            black_box(
                plan(s.desired(), &obs, &policy, &mut drains, Instant::now())
                    .ipvs
                    .len(),
            )
        })
    });
    g.finish();
}

fn one_endpoint_change<M: Measurement>(c: &mut Criterion<M>, tag: &str) {
    let mut g = c.benchmark_group(format!("{tag}/one_endpoint_change"));
    for n in [1_000u32, 10_000, 30_000] {
        let (svcs, slices) = cluster(n);
        let mut s = ProxyState::new(config(), node());
        s.replace_all(&svcs, &slices);
        let policy = s.policy();
        let mut obs = Observed::default();
        let mut drains = DrainBook::new();
        let p = plan(s.desired(), &obs, &policy, &mut drains, Instant::now());
        obs.apply(&p).expect("initial plan applies");
        s.take_changes();
        // One Service in the middle flips one endpoint back and forth.
        let target = n / 2;
        let a = slice(target, 10, 0);
        let mut b2 = slice(target, 10, 0);
        b2.endpoints[9].addresses = vec!["10.250.0.1".into()];
        g.bench_with_input(BenchmarkId::new("engine", n), &n, |b, _| {
            let mut flip = false;
            b.iter(|| {
                flip = !flip;
                s.apply_slice(if flip { &b2 } else { &a });
                black_box(s.take_changes())
            })
        });
        g.bench_with_input(BenchmarkId::new("engine_and_plan", n), &n, |b, _| {
            let mut flip = false;
            b.iter(|| {
                flip = !flip;
                s.apply_slice(if flip { &b2 } else { &a });
                let ch = s.take_changes();
                black_box(plan_changes(
                    s.desired(),
                    &obs,
                    &ch,
                    &policy,
                    &mut drains,
                    Instant::now(),
                ))
            })
        });
    }
    g.finish();
}

/// This thread's CPU time.
struct ThreadCpuTime;

fn thread_cpu_now() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(Duration::from)
        .unwrap_or_default()
}

impl Measurement for ThreadCpuTime {
    type Intermediate = Duration;
    type Value = Duration;
    fn start(&self) -> Duration {
        thread_cpu_now()
    }
    fn end(&self, start: Duration) -> Duration {
        thread_cpu_now().saturating_sub(start)
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, v: &Duration) -> f64 {
        v.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        // Values are nanoseconds, as for wall time.
        static WALL: WallTime = WallTime;
        WALL.formatter()
    }
}

fn wall(c: &mut Criterion) {
    full_state(c, "wall");
    one_endpoint_change(c, "wall");
}

fn cpu(c: &mut Criterion<ThreadCpuTime>) {
    full_state(c, "cpu");
    one_endpoint_change(c, "cpu");
}

criterion_group!(wall_time, wall);
criterion_group! {
    name = cpu_time;
    config = Criterion::default().with_measurement(ThreadCpuTime);
    targets = cpu
}
criterion_main!(wall_time, cpu_time);
