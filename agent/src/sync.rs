//! The sync loop: when to sync, not what to program.
//!
//! Changes from the sources are handed to a [`Proxier`] as they arrive and
//! coalesced: one partial sync covers everything that arrived since the last
//! one, at most once per `minSyncPeriod`. A full sync (one kernel dump, the
//! whole desired state compared) runs every `syncPeriod` and repairs drift.
//! Nothing is synced before Services and EndpointSlices have both been
//! listed. A failed sync is retried with exponential backoff; while real
//! servers drain, partial syncs run every `drain_check_interval` to delete
//! them once their connections end. The proxy health and kube-proxy's sync
//! metrics are kept here.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::{Chain, Error};
use crate::http::HealthState;
use crate::metrics::{unix_now, Metrics};
use crate::source::{Change, Kind, Object, ObjectKey};

/// Annotation the EndpointSlice controller sets to the time of the change
/// that triggered the slice update (network programming latency).
pub const LAST_CHANGE_TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// Which kind of sync to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncKind {
    /// Only what changed since the last sync (plus draining real servers).
    Partial,
    /// Everything, from one kernel dump.
    Full,
}

/// What a sync did, for metrics and scheduling.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncOutcome {
    /// Operations the kernel refused; their Services are retried with
    /// backoff while the others stay programmed.
    pub failed_ops: usize,
    /// IPVS virtual servers programmed after the sync.
    pub virtual_servers: usize,
    /// IPVS real servers programmed after the sync (draining included).
    pub real_servers: usize,
    /// Real servers draining after the sync.
    pub draining: usize,
    /// Services with internalTrafficPolicy Local and no local endpoint.
    pub no_local_endpoints_internal: usize,
    /// Services with externalTrafficPolicy Local and no local endpoint.
    pub no_local_endpoints_external: usize,
}

/// The decisions and the kernel side, behind one seam so the loop can be
/// tested with a fake.
pub trait Proxier: Send {
    /// Takes one change from a source into the model.
    fn apply_change(&mut self, change: Change);
    /// Programs the node.
    fn sync(&mut self, kind: SyncKind) -> impl Future<Output = Result<SyncOutcome, Error>> + Send;
}

/// Timing of the loop.
#[derive(Debug, Clone)]
pub struct LoopConfig {
    /// Full reconcile interval (`ipvs.syncPeriod`).
    pub sync_period: Duration,
    /// Minimum interval between syncs (`ipvs.minSyncPeriod`).
    pub min_sync_period: Duration,
    /// First retry delay after a failure; doubles up to `max_retry`.
    pub initial_retry: Duration,
    /// Longest retry delay.
    pub max_retry: Duration,
    /// How often draining real servers are checked.
    pub drain_check_interval: Duration,
}

impl LoopConfig {
    /// The loop timing for the given periods.
    pub fn new(sync_period: Duration, min_sync_period: Duration) -> Self {
        Self {
            sync_period,
            min_sync_period,
            initial_retry: Duration::from_secs(1),
            max_retry: sync_period.min(Duration::from_secs(30)),
            drain_check_interval: Duration::from_secs(5),
        }
    }
}

/// Parses an RFC 3339 timestamp (`2026-11-24T04:20:45Z`,
/// `2026-11-24T04:20:45.123+02:00`) as Kubernetes writes them.
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    let (date, rest) = s.split_once(['T', 't'])?;
    let mut d = date.split('-');
    let (y, m, day): (i64, u32, u32) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    if d.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    let (time, offset_secs) = if let Some(t) = rest.strip_suffix(['Z', 'z']) {
        (t, 0i64)
    } else {
        let i = rest.rfind(['+', '-'])?;
        let (t, off) = rest.split_at(i);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (oh, om) = off[1..].split_once(':')?;
        let (oh, om): (i64, i64) = (oh.parse().ok()?, om.parse().ok()?);
        (t, sign * (oh * 3600 + om * 60))
    };
    let (hms, frac) = match time.split_once('.') {
        Some((a, b)) => (a, b),
        None => (time, ""),
    };
    let mut t = hms.split(':');
    let (hh, mm, ss): (i64, i64, i64) = (
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
    );
    if t.next().is_some() || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let nanos: u32 = if frac.is_empty() {
        0
    } else {
        if !frac.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
        digits.parse().ok()?
    };
    let days = days_from_civil(y, m, day);
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss - offset_secs;
    let secs = u64::try_from(secs).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::new(secs, nanos))
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn trigger_time(change: &Change) -> Option<SystemTime> {
    match change {
        Change::Applied(Object::EndpointSlice(s)) => s
            .metadata
            .annotations
            .as_ref()?
            .get(LAST_CHANGE_TRIGGER_TIME)
            .and_then(|t| parse_rfc3339(t)),
        _ => None,
    }
}

/// The loop's bookkeeping between syncs.
struct Pending {
    services: BTreeSet<ObjectKey>,
    slices: BTreeSet<ObjectKey>,
    other: bool,
    triggers: Vec<SystemTime>,
}

impl Pending {
    fn new() -> Self {
        Self {
            services: BTreeSet::new(),
            slices: BTreeSet::new(),
            other: false,
            triggers: Vec::new(),
        }
    }
    fn any(&self) -> bool {
        !self.services.is_empty() || !self.slices.is_empty() || self.other
    }
}

/// Runs the sync loop until `changes` closes or `stop` is cancelled. A
/// sync in progress when `stop` is cancelled runs to its end (the kernel
/// is never left with half a plan); no sync starts after it.
pub async fn run<P: Proxier>(
    mut proxier: P,
    mut changes: mpsc::Receiver<Change>,
    cfg: LoopConfig,
    metrics: Metrics,
    health: Arc<HealthState>,
    stop: CancellationToken,
) {
    let mut listed: BTreeSet<Kind> = BTreeSet::new();
    let mut pending = Pending::new();
    let mut last_sync: Option<Instant> = None;
    let mut next_full: Option<Instant> = None; // None: the first sync is full
    let mut retry_at: Option<Instant> = None;
    let mut retry_delay = cfg.initial_retry;
    let mut draining = 0usize;
    let mut open = true;

    while open || pending.any() {
        let ready = listed.contains(&Kind::Service) && listed.contains(&Kind::EndpointSlice);
        let now = Instant::now();
        // When is the next sync due?
        let due: Option<Instant> = if !ready {
            None
        } else if let Some(r) = retry_at {
            Some(r)
        } else {
            let earliest = last_sync.map_or(now, |t| t + cfg.min_sync_period);
            let mut d = next_full.unwrap_or(now);
            if pending.any() {
                d = d.min(earliest.max(now));
            }
            if draining > 0 {
                let drain_due = last_sync.map_or(now, |t| t + cfg.drain_check_interval);
                d = d.min(drain_due.max(earliest));
            }
            Some(d)
        };

        let sleep = async {
            match due {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            biased;
            () = stop.cancelled() => {
                tracing::info!(pending = pending.any(), "sync loop stopped");
                return;
            }
            c = changes.recv(), if open => {
                match c {
                    Some(c) => {
                        take(&mut proxier, c, &mut listed, &mut pending, &metrics, &health);
                        // Coalesce whatever else is already waiting.
                        while let Ok(c) = changes.try_recv() {
                            take(&mut proxier, c, &mut listed, &mut pending, &metrics, &health);
                        }
                    }
                    None => {
                        open = false;
                        if !ready { break; }
                    }
                }
                continue;
            }
            _ = sleep => {}
        }

        let now = Instant::now();
        let kind = if next_full.is_none_or(|f| now >= f) {
            SyncKind::Full
        } else {
            SyncKind::Partial
        };
        let started = std::time::Instant::now();
        let taken = std::mem::replace(&mut pending, Pending::new());
        metrics.service_changes_pending.set(0);
        metrics.endpoint_changes_pending.set(0);
        let result = proxier.sync(kind).await;
        let elapsed = started.elapsed().as_secs_f64();
        metrics.sync_proxy_rules_duration.observe(elapsed);
        match kind {
            SyncKind::Full => metrics.sync_full_proxy_rules_duration.observe(elapsed),
            SyncKind::Partial => metrics.sync_partial_proxy_rules_duration.observe(elapsed),
        }
        last_sync = Some(Instant::now());
        match result {
            Ok(out) => {
                if kind == SyncKind::Full {
                    next_full = Some(Instant::now() + cfg.sync_period);
                }
                metrics.virtual_servers.set(out.virtual_servers as i64);
                metrics.real_servers.set(out.real_servers as i64);
                metrics.draining_real_servers.set(out.draining as i64);
                metrics
                    .no_local_endpoints
                    .with_label_values(&["internal"])
                    .set(out.no_local_endpoints_internal as i64);
                metrics
                    .no_local_endpoints
                    .with_label_values(&["external"])
                    .set(out.no_local_endpoints_external as i64);
                draining = out.draining;
                let wall = SystemTime::now();
                for t in &taken.triggers {
                    if let Ok(d) = wall.duration_since(*t) {
                        metrics
                            .network_programming_duration
                            .observe(d.as_secs_f64());
                    }
                }
                if out.failed_ops > 0 {
                    tracing::warn!(failed_ops = out.failed_ops, retry_in = ?retry_delay, "kernel refused some operations; retrying those services");
                    metrics.sync_errors_total.inc();
                    // Still owed to the kernel: health turns 503 if this lasts.
                    health.queued_update();
                    retry_at = Some(Instant::now() + retry_delay);
                    retry_delay = (retry_delay * 2).min(cfg.max_retry);
                } else {
                    retry_at = None;
                    retry_delay = cfg.initial_retry;
                    metrics.sync_proxy_rules_last_timestamp.set(unix_now());
                    health.updated();
                }
            }
            Err(e) => {
                tracing::error!(error = %Chain(&e), retry_in = ?retry_delay, ?kind, "sync failed");
                metrics.sync_errors_total.inc();
                health.queued_update();
                // Keep what was pending; the retry is a full sync.
                pending = merge(taken, pending);
                next_full = Some(Instant::now());
                retry_at = Some(Instant::now() + retry_delay);
                retry_delay = (retry_delay * 2).min(cfg.max_retry);
            }
        }
    }
}

fn merge(mut a: Pending, b: Pending) -> Pending {
    a.services.extend(b.services);
    a.slices.extend(b.slices);
    a.other |= b.other;
    a.triggers.extend(b.triggers);
    a
}

fn take<P: Proxier>(
    proxier: &mut P,
    c: Change,
    listed: &mut BTreeSet<Kind>,
    pending: &mut Pending,
    metrics: &Metrics,
    health: &HealthState,
) {
    match &c {
        Change::Listed(kind) => {
            if listed.insert(*kind) {
                tracing::info!(%kind, "initial list complete");
            }
        }
        Change::Applied(Object::Service(s)) => {
            pending
                .services
                .insert(key_of(&s.metadata.namespace, &s.metadata.name));
            metrics.service_changes_total.inc();
        }
        Change::Deleted(Kind::Service, k) => {
            pending.services.insert(k.clone());
            metrics.service_changes_total.inc();
        }
        Change::Applied(Object::EndpointSlice(s)) => {
            pending
                .slices
                .insert(key_of(&s.metadata.namespace, &s.metadata.name));
            metrics.endpoint_changes_total.inc();
            if let Some(t) = trigger_time(&c) {
                pending.triggers.push(t);
            }
        }
        Change::Deleted(Kind::EndpointSlice, k) => {
            pending.slices.insert(k.clone());
            metrics.endpoint_changes_total.inc();
        }
        Change::Applied(Object::Node(n)) => {
            health.sync_node(Some(n));
            pending.other = true;
        }
        Change::Deleted(Kind::Node, _) => {
            health.sync_node(None);
            pending.other = true;
        }
    }
    if !matches!(c, Change::Listed(_)) {
        health.queued_update();
        metrics
            .sync_proxy_rules_last_queued_timestamp
            .set(unix_now());
        metrics
            .service_changes_pending
            .set(pending.services.len() as i64);
        metrics
            .endpoint_changes_pending
            .set(pending.slices.len() as i64);
    }
    proxier.apply_change(c);
}

fn key_of(ns: &Option<String>, name: &Option<String>) -> ObjectKey {
    ObjectKey {
        namespace: ns.clone().unwrap_or_default(),
        name: name.clone().unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
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

        fn sync(
            &mut self,
            kind: SyncKind,
        ) -> impl Future<Output = Result<SyncOutcome, Error>> + Send {
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
                    text.contains(
                        "kubeproxy_network_programming_duration_seconds_bucket{le=\"1\"} 0"
                    ),
                    "{text}"
                );
                assert!(
                    text.contains(
                        "kubeproxy_network_programming_duration_seconds_bucket{le=\"4\"} 1"
                    ),
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
}
