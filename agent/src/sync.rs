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
    s.trim()
        .parse::<jiff::Timestamp>()
        .ok()
        .map(SystemTime::from)
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
mod tests;
