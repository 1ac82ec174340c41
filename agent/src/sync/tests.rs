//! Tests of [`super`].

use super::*;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::sync::Mutex;

#[derive(Debug, Clone, PartialEq)]
enum Call {
    Change(String),
    Sync(SyncKind, Duration),
    SyncDone(Duration),
}

/// Records calls; `fail` makes the next n syncs fail; `draining` is
/// reported after each sync, decremented every sync.
#[derive(Clone)]
struct Fake {
    calls: Arc<Mutex<Vec<Call>>>,
    start: Instant,
    fail: Arc<Mutex<usize>>,
    draining: Arc<Mutex<usize>>,
    /// How long each sync takes.
    delay: Arc<Mutex<Duration>>,
}

impl Fake {
    fn new() -> Self {
        Self {
            calls: Arc::default(),
            start: Instant::now(),
            fail: Arc::default(),
            draining: Arc::default(),
            delay: Arc::default(),
        }
    }
    fn syncs(&self) -> Vec<(SyncKind, Duration)> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter_map(|c| match c {
                Call::Sync(k, t) => Some((*k, *t)),
                _ => None,
            })
            .collect()
    }
}

impl Proxier for Fake {
    fn apply_change(&mut self, change: Change) {
        let name = match &change {
            Change::Applied(Object::Service(s)) => {
                format!("svc {}", s.metadata.name.clone().unwrap_or_default())
            }
            Change::Applied(Object::EndpointSlice(s)) => {
                format!("slice {}", s.metadata.name.clone().unwrap_or_default())
            }
            Change::Applied(Object::Node(_)) => "node".into(),
            Change::Deleted(k, key) => format!("del {k} {key}"),
            Change::Listed(k) => format!("listed {k}"),
        };
        self.calls.lock().unwrap().push(Call::Change(name));
    }

    fn sync(&mut self, kind: SyncKind) -> impl Future<Output = Result<SyncOutcome, Error>> + Send {
        let at = Instant::now() - self.start;
        self.calls.lock().unwrap().push(Call::Sync(kind, at));
        let fail = {
            let mut f = self.fail.lock().unwrap();
            let fail = *f > 0;
            *f = f.saturating_sub(1);
            fail
        };
        let draining = {
            let mut d = self.draining.lock().unwrap();
            let now = *d;
            *d = d.saturating_sub(1);
            now
        };
        let delay = *self.delay.lock().unwrap();
        let (calls, start) = (self.calls.clone(), self.start);
        async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            calls
                .lock()
                .unwrap()
                .push(Call::SyncDone(Instant::now() - start));
            if fail {
                Err(Error::Ipvs(ipvs::Error::IpvsUnavailable))
            } else {
                Ok(SyncOutcome {
                    virtual_servers: 3,
                    real_servers: 7,
                    draining,
                    ..Default::default()
                })
            }
        }
    }
}

fn svc(name: &str) -> Change {
    Change::Applied(Object::Service(Box::new(Service {
        metadata: ObjectMeta {
            namespace: Some("ns".into()),
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    })))
}

fn slice(name: &str, trigger: Option<&str>) -> Change {
    Change::Applied(Object::EndpointSlice(Box::new(EndpointSlice {
        metadata: ObjectMeta {
            namespace: Some("ns".into()),
            name: Some(name.into()),
            annotations: trigger.map(|t| {
                [(LAST_CHANGE_TRIGGER_TIME.to_string(), t.to_string())]
                    .into_iter()
                    .collect()
            }),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: vec![],
        ports: None,
    })))
}

struct Harness {
    fake: Fake,
    tx: mpsc::Sender<Change>,
    metrics: Metrics,
    task: tokio::task::JoinHandle<()>,
}

fn start(cfg: LoopConfig) -> Harness {
    let fake = Fake::new();
    let metrics = Metrics::new();
    let health = Arc::new(HealthState::new(Duration::from_secs(60), metrics.clone()));
    let (tx, rx) = mpsc::channel(100);
    let task = tokio::spawn(run(
        fake.clone(),
        rx,
        cfg,
        metrics.clone(),
        health,
        CancellationToken::new(),
    ));
    Harness {
        fake,
        tx,
        metrics,
        task,
    }
}

fn cfg() -> LoopConfig {
    LoopConfig {
        sync_period: Duration::from_secs(30),
        min_sync_period: Duration::from_secs(1),
        initial_retry: Duration::from_secs(1),
        max_retry: Duration::from_secs(8),
        drain_check_interval: Duration::from_secs(5),
    }
}

async fn advance(d: Duration) {
    tokio::time::sleep(d).await;
}

#[tokio::test(start_paused = true)]
async fn nothing_is_synced_before_both_kinds_are_listed() {
    let h = start(cfg());
    h.tx.send(svc("a")).await.unwrap();
    h.tx.send(Change::Listed(Kind::Service)).await.unwrap();
    advance(Duration::from_secs(60)).await;
    assert!(
        h.fake.syncs().is_empty(),
        "synced before slices were listed"
    );
    h.tx.send(Change::Listed(Kind::EndpointSlice))
        .await
        .unwrap();
    advance(Duration::from_millis(10)).await;
    let syncs = h.fake.syncs();
    assert_eq!(syncs.len(), 1);
    assert_eq!(syncs[0].0, SyncKind::Full, "the first sync is full");
    h.task.abort();
}

#[tokio::test(start_paused = true)]
async fn changes_are_coalesced_and_rate_limited_and_full_sync_is_periodic() {
    let h = start(cfg());
    h.tx.send(Change::Listed(Kind::Service)).await.unwrap();
    h.tx.send(Change::Listed(Kind::EndpointSlice))
        .await
        .unwrap();
    advance(Duration::from_millis(10)).await;
    assert_eq!(h.fake.syncs().len(), 1);
    // A burst of 50 changes within the min sync period: one partial sync,
    // not before 1 s after the previous sync.
    for i in 0..50 {
        h.tx.send(slice(&format!("s{i}"), None)).await.unwrap();
        advance(Duration::from_millis(10)).await;
    }
    advance(Duration::from_secs(2)).await;
    let syncs = h.fake.syncs();
    assert_eq!(syncs.len(), 2, "{syncs:?}");
    assert_eq!(syncs[1].0, SyncKind::Partial);
    assert!(
        syncs[1].1 >= syncs[0].1 + Duration::from_secs(1),
        "{syncs:?}"
    );
    let text = h.metrics.render();
    assert!(text.contains("kubeproxy_sync_proxy_rules_endpoint_changes_total 50"));
    assert!(text.contains("kubeproxy_sync_proxy_rules_endpoint_changes_pending 0"));
    assert!(text.contains("ipvs_proxy_real_servers 7"));
    // Quiet: the next sync is the periodic full one, 30 s after the first.
    advance(Duration::from_secs(40)).await;
    let syncs = h.fake.syncs();
    assert_eq!(syncs.len(), 3, "{syncs:?}");
    assert_eq!(syncs[2].0, SyncKind::Full);
    let gap = syncs[2].1 - syncs[0].1;
    assert!(
        gap >= Duration::from_secs(30) && gap < Duration::from_secs(31),
        "{gap:?}"
    );
    h.task.abort();
}

#[tokio::test(start_paused = true)]
async fn failures_are_retried_with_backoff() {
    let h = start(cfg());
    *h.fake.fail.lock().unwrap() = 3;
    h.tx.send(Change::Listed(Kind::Service)).await.unwrap();
    h.tx.send(Change::Listed(Kind::EndpointSlice))
        .await
        .unwrap();
    advance(Duration::from_secs(20)).await;
    let syncs = h.fake.syncs();
    assert_eq!(syncs.len(), 4, "3 failures then success: {syncs:?}");
    let gaps: Vec<Duration> = syncs.windows(2).map(|w| w[1].1 - w[0].1).collect();
    let secs: Vec<u64> = gaps.iter().map(|g| g.as_secs()).collect();
    assert_eq!(secs, vec![1, 2, 4], "exponential backoff");
    assert!(
        syncs.iter().all(|s| s.0 == SyncKind::Full),
        "retries are full syncs"
    );
    assert!(h
        .metrics
        .render()
        .contains("ipvs_proxy_sync_errors_total 3"));
    h.task.abort();
}

#[tokio::test(start_paused = true)]
async fn persistent_failures_turn_health_unhealthy() {
    let fake = Fake::new();
    let metrics = Metrics::new();
    // Health on tokio's (paused) clock.
    let t0 = Instant::now();
    let clock: crate::http::Clock = Arc::new(move || {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000) + (Instant::now() - t0)
    });
    let health = Arc::new(HealthState::with_clock(
        Duration::from_secs(60),
        metrics.clone(),
        clock,
    ));
    let (tx, rx) = mpsc::channel(10);
    let task = tokio::spawn(run(
        fake.clone(),
        rx,
        cfg(),
        metrics,
        health.clone(),
        CancellationToken::new(),
    ));
    tx.send(Change::Listed(Kind::Service)).await.unwrap();
    tx.send(Change::Listed(Kind::EndpointSlice)).await.unwrap();
    advance(Duration::from_secs(1)).await;
    assert!(health.is_healthy().0);
    // From now on every sync fails, with no new change arriving.
    *fake.fail.lock().unwrap() = usize::MAX;
    advance(Duration::from_secs(35)).await; // the periodic full sync fails
    assert!(health.is_healthy().0, "not late yet");
    advance(Duration::from_secs(70)).await;
    assert!(
        !health.is_healthy().0,
        "failing for longer than the timeout"
    );
    *fake.fail.lock().unwrap() = 0;
    advance(Duration::from_secs(10)).await; // next retry succeeds
    assert!(health.is_healthy().0);
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn draining_servers_are_checked_periodically() {
    let h = start(cfg());
    *h.fake.draining.lock().unwrap() = 2;
    h.tx.send(Change::Listed(Kind::Service)).await.unwrap();
    h.tx.send(Change::Listed(Kind::EndpointSlice))
        .await
        .unwrap();
    advance(Duration::from_secs(12)).await;
    let syncs = h.fake.syncs();
    // Full at 0 (2 draining), partial at 5 s (1 draining), partial at
    // 10 s (0 draining), then quiet until the full sync.
    assert_eq!(syncs.len(), 3, "{syncs:?}");
    assert_eq!(syncs[1].0, SyncKind::Partial);
    assert_eq!(syncs[1].1.as_secs(), 5);
    assert_eq!(syncs[2].1.as_secs(), 10);
    h.task.abort();
}

#[tokio::test]
async fn network_programming_latency_from_trigger_time() {
    let h = start(LoopConfig {
        min_sync_period: Duration::ZERO,
        ..cfg()
    });
    h.tx.send(Change::Listed(Kind::Service)).await.unwrap();
    h.tx.send(Change::Listed(Kind::EndpointSlice))
        .await
        .unwrap();
    // Two seconds ago.
    let t = SystemTime::now() - Duration::from_secs(2);
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    let stamp =
        crate::http::go_time_string(Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs)));
    // "YYYY-MM-DD HH:MM:SS +0000 UTC" -> RFC 3339.
    let rfc = format!("{}T{}Z", &stamp[..10], &stamp[11..19]);
    h.tx.send(slice("x", Some(&rfc))).await.unwrap();
    let mut ok = false;
    for _ in 0..100 {
        let text = h.metrics.render();
        if text.contains("kubeproxy_network_programming_duration_seconds_count 1") {
            assert!(
                text.contains("kubeproxy_network_programming_duration_seconds_bucket{le=\"1\"} 0"),
                "{text}"
            );
            assert!(
                text.contains("kubeproxy_network_programming_duration_seconds_bucket{le=\"4\"} 1"),
                "{text}"
            );
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok, "latency not observed");
    h.task.abort();
}

#[tokio::test(start_paused = true)]
async fn stop_lets_the_sync_in_progress_finish_and_starts_no_other() {
    let fake = Fake::new();
    *fake.delay.lock().unwrap() = Duration::from_secs(10);
    let metrics = Metrics::new();
    let health = Arc::new(HealthState::new(Duration::from_secs(60), metrics.clone()));
    let (tx, rx) = mpsc::channel(10);
    let stop = CancellationToken::new();
    let task = tokio::spawn(run(fake.clone(), rx, cfg(), metrics, health, stop.clone()));
    tx.send(Change::Listed(Kind::Service)).await.unwrap();
    tx.send(Change::Listed(Kind::EndpointSlice)).await.unwrap();
    advance(Duration::from_secs(1)).await;
    assert_eq!(fake.syncs().len(), 1, "the first sync is running");
    // A change arrives, then the stop, both during the sync.
    tx.send(svc("a")).await.unwrap();
    stop.cancel();
    advance(Duration::from_secs(2)).await;
    assert!(!task.is_finished(), "returned in the middle of a sync");
    let t0 = Instant::now();
    task.await.unwrap();
    assert!(t0.elapsed() >= Duration::from_secs(7), "{:?}", t0.elapsed());
    let calls = fake.calls.lock().unwrap().clone();
    let done: Vec<_> = calls
        .iter()
        .filter(|c| matches!(c, Call::SyncDone(_)))
        .collect();
    assert_eq!(
        done,
        [&Call::SyncDone(Duration::from_secs(10))],
        "{calls:?}"
    );
    assert_eq!(fake.syncs().len(), 1, "no sync after the stop: {calls:?}");
}

#[test]
fn rfc3339() {
    let t = parse_rfc3339("2023-11-14T22:13:20Z").unwrap();
    assert_eq!(
        t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(),
        1_700_000_000
    );
    let t = parse_rfc3339("2023-11-15T00:13:20.5+02:00").unwrap();
    assert_eq!(
        t.duration_since(SystemTime::UNIX_EPOCH).unwrap(),
        Duration::from_millis(1_700_000_000_500)
    );
    for bad in [
        "",
        "2023-11-14",
        "2023-13-14T00:00:00Z",
        "2023-11-14T25:00:00Z",
        "x-y-zT00:00:00Z",
    ] {
        assert!(parse_rfc3339(bad).is_none(), "{bad}");
    }
}
