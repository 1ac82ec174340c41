//! The [`Proxier`] that programs the node: proxy-core decides, a [`Kernel`]
//! (the dataplane, or a fake in tests) applies.
//!
//! A full sync reads the kernel once ([`Kernel::observe`]) and plans
//! everything; a partial sync plans only what changed against a shadow of
//! the kernel state kept from the last dump and the plans applied since,
//! refreshing the counters of draining real servers only. Any doubt about
//! the shadow (a refused operation, a model error) makes the next sync full.
//! Every forwarding change is logged as one structured line.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipvs::{Op, ServiceKey};
use k8s_openapi::api::core::v1::Node;
use proxy_core::{
    DesiredState, DrainBook, NodeFacts, Observed, ObservedVirtualServer, Plan, ProxyState,
};

use crate::config::{DetectLocal, ProxyConfig};
use crate::error::{Chain, Error};
use crate::events::{EventSink, ObjectIdentity};
use crate::http::ServiceHealthServers;
use crate::metrics::Metrics;
use crate::source::{Change, Kind, Object};
use crate::sync::{Proxier, SyncKind, SyncOutcome};

mod change_log;
mod convert;
mod health_checks;
mod model;
mod rejections;
#[cfg(test)]
mod tests;

use change_log::SyncTimings;
use convert::local_detect;
pub use convert::{core_config, primary_ips};
pub use model::ModelKernel;

/// One kernel operation that failed.
#[derive(Debug)]
pub struct FailedOp {
    /// Operation label (`add_virtual_server`, `bind_address`, ...).
    pub op: &'static str,
    /// What the operation was on (the IPVS operation, the address).
    pub detail: String,
    /// Why it failed; [`Error::metric_label`] is its metrics label.
    pub error: Error,
}

/// What [`Kernel::apply`] did.
#[derive(Debug, Default)]
pub struct Applied {
    /// The operations that failed.
    pub failed: Vec<FailedOp>,
    /// Wall time of each phase (`bind`, `ipvs`, `filter`, `unbind`), where
    /// the kernel measures them.
    pub phases: Vec<(&'static str, Duration)>,
    /// The `nft` runs of this apply.
    pub nft: dataplane::nft::NftStats,
}

/// The kernel side, behind a seam.
pub trait Kernel: Send {
    /// One read of the node: the IPVS table, our dummy interface's
    /// addresses, the filter facts last applied.
    fn observe(&mut self) -> impl Future<Output = Result<Observed, Error>> + Send;
    /// Applies a plan operation by operation; a failure does not stop the
    /// others.
    fn apply(&mut self, plan: &Plan) -> impl Future<Output = Applied> + Send;
    /// Fresh state (with connection counters) of these virtual servers;
    /// absent ones are left out.
    fn refresh(
        &mut self,
        keys: &[ServiceKey],
    ) -> impl Future<Output = Result<Vec<ObservedVirtualServer>, Error>> + Send;
}

/// Label of an IPVS operation for metrics.
pub fn op_label(op: &Op) -> &'static str {
    match op {
        Op::AddService(_) => "add_virtual_server",
        Op::EditService(_) => "edit_virtual_server",
        Op::DeleteService(_) => "delete_virtual_server",
        Op::AddRealServer(..) => "add_real_server",
        Op::EditRealServer(..) => "edit_real_server",
        Op::DeleteRealServer(..) => "delete_real_server",
        Op::Flush => "flush",
        Op::Zero(_) => "zero",
        Op::SetTimeouts(_) => "set_timeouts",
        _ => "other",
    }
}

/// proxy-core + a kernel.
pub struct CoreProxier<K> {
    cfg: ProxyConfig,
    state: ProxyState,
    kernel: K,
    drains: DrainBook,
    shadow: Option<Observed>,
    node_name: String,
    node: Option<Node>,
    local_addresses: BTreeSet<IpAddr>,
    /// Owners of the virtual servers desired or in the shadow, shared with
    /// the desired state (one name per Service port, not a copy per sync).
    owners: HashMap<ServiceKey, Arc<proxy_core::ServicePortName>>,
    seen_rejections: BTreeSet<String>,
    events: Option<EventSink>,
    identities: HashMap<(Kind, String, String), ObjectIdentity>,
    seen_events: BTreeSet<String>,
    metrics: Metrics,
    health_checks: Option<Arc<ServiceHealthServers>>,
}

impl<K> std::fmt::Debug for CoreProxier<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreProxier")
            .field("node_name", &self.node_name)
            .finish_non_exhaustive()
    }
}

impl<K: Kernel> CoreProxier<K> {
    /// A proxier for node `node_name` with these local interface addresses.
    pub fn new(
        cfg: ProxyConfig,
        node_name: String,
        local_addresses: BTreeSet<IpAddr>,
        kernel: K,
        metrics: Metrics,
        health_checks: Option<Arc<ServiceHealthServers>>,
    ) -> Result<Self, Error> {
        let core = core_config(&cfg)?;
        let facts = NodeFacts {
            name: node_name.clone(),
            labels: BTreeMap::new(),
            addresses: local_addresses.clone(),
            primary_ips: primary_ips(None, cfg.bind_address),
        };
        Ok(Self {
            state: ProxyState::new(core, facts),
            cfg,
            kernel,
            drains: DrainBook::new(),
            shadow: None,
            node_name,
            node: None,
            local_addresses,
            owners: HashMap::new(),
            seen_rejections: BTreeSet::new(),
            events: None,
            identities: HashMap::new(),
            seen_events: BTreeSet::new(),
            metrics,
            health_checks,
        })
    }

    /// Posts a Warning Event for each newly rejected object (cluster mode).
    pub fn with_events(self, sink: EventSink) -> Self {
        self.with_events_opt(Some(sink))
    }

    /// [`Self::with_events`] when `sink` is `Some`.
    pub fn with_events_opt(mut self, sink: Option<EventSink>) -> Self {
        self.events = sink;
        self
    }

    /// The desired state as it stands.
    pub fn desired(&self) -> &DesiredState {
        self.state.desired()
    }

    /// The kernel (for tests and `show`).
    pub fn kernel(&self) -> &K {
        &self.kernel
    }

    /// The Service port (`namespace/name:port`) a virtual server belongs
    /// to: from the desired state, else as remembered from when it was
    /// desired (a deleted Service whose real servers still drain); `None`
    /// when it is not known to be ours (for `show`).
    pub fn owner_of(&self, key: &ServiceKey) -> Option<String> {
        self.state
            .owner_of(key)
            .map(|o| o.to_string())
            .or_else(|| self.owners.get(key).map(|o| o.to_string()))
    }

    /// The real servers draining and since when (for `show`).
    pub fn drains(&self) -> &DrainBook {
        &self.drains
    }

    /// The objects rejected as the model stands (for `show`).
    pub fn rejections(&self) -> Vec<proxy_core::Rejection> {
        self.state.rejections()
    }

    fn refresh_node(&mut self) {
        let labels = self
            .node
            .as_ref()
            .and_then(|n| n.metadata.labels.clone())
            .unwrap_or_default()
            .into_iter()
            .collect();
        let facts = NodeFacts {
            name: self.node_name.clone(),
            labels,
            addresses: self.local_addresses.clone(),
            primary_ips: primary_ips(self.node.as_ref(), self.cfg.bind_address),
        };
        if &facts != self.state.node() {
            self.state.set_node(facts);
        }
        if matches!(self.cfg.detect_local, DetectLocal::NodeCidr) {
            let ld = local_detect(&self.cfg, self.node.as_ref());
            if ld != self.state.config().local_detect {
                let mut c = self.state.config().clone();
                c.local_detect = ld;
                self.state.set_config(c);
            }
        }
    }

    fn owner(&self, key: &ServiceKey) -> String {
        self.state
            .owner_of(key)
            .map(|o| o.to_string())
            .or_else(|| self.owners.get(key).map(|o| o.to_string()))
            .unwrap_or_else(|| "-".to_string())
    }

    fn count_ops(&self, plan: &Plan) {
        let m = &self.metrics.netlink_operations_total;
        for op in &plan.ipvs {
            m.with_label_values(&[op_label(op)]).inc();
        }
        if !plan.bind.is_empty() {
            m.with_label_values(&["bind_address"])
                .inc_by(plan.bind.len() as u64);
        }
        if !plan.unbind.is_empty() {
            m.with_label_values(&["unbind_address"])
                .inc_by(plan.unbind.len() as u64);
        }
        if !plan.filter.is_empty() {
            m.with_label_values(&["replace_filter"]).inc();
        }
    }

    fn outcome(&self, failed: usize) -> SyncOutcome {
        let desired = self.state.desired();
        // Ours only: foreign virtual servers in the kernel are not counted.
        let (virtual_servers, real_servers) = match &self.shadow {
            None => (desired.virtual_servers.len(), desired.real_server_count()),
            Some(s) => {
                let policy = self.state.policy();
                s.virtual_servers
                    .iter()
                    .filter(|(k, _)| desired.virtual_servers.contains_key(*k) || policy.owns(k, s))
                    .fold((0, 0), |(v, r), (_, o)| (v + 1, r + o.real_servers.len()))
            }
        };
        SyncOutcome {
            failed_ops: failed,
            virtual_servers,
            real_servers,
            draining: self.drains.len(),
            // Per Service port and family, as kube-proxy counts them.
            no_local_endpoints_internal: self.state.no_local_endpoints_internal(),
            no_local_endpoints_external: self.state.no_local_endpoints_external(),
        }
    }

    async fn do_sync(&mut self, kind: SyncKind) -> Result<SyncOutcome, Error> {
        let now = Instant::now();
        let full = kind == SyncKind::Full || self.shadow.is_none();
        let mut read = Duration::ZERO;
        let plan = if full {
            let observed = self.kernel.observe().await?;
            read = now.elapsed();
            self.state.take_changes();
            let plan = proxy_core::plan(
                self.state.desired(),
                &observed,
                &self.state.policy(),
                &mut self.drains,
                now,
            );
            self.shadow = Some(observed);
            plan
        } else {
            let changes = self.state.take_changes();
            let shadow = self.shadow.as_mut().expect("checked above");
            // Fresh counters for what the plan may drain or delete: the
            // changed virtual servers we hold and the draining ones. A stale
            // counter would delete a real server that still has connections.
            let draining: Vec<ServiceKey> = {
                let mut v: BTreeSet<ServiceKey> = self.drains.iter().map(|(s, _, _)| *s).collect();
                v.extend(
                    changes
                        .virtual_servers
                        .iter()
                        .filter(|k| shadow.virtual_servers.contains_key(*k))
                        .copied(),
                );
                v.into_iter().collect()
            };
            if !draining.is_empty() {
                let fresh = self.kernel.refresh(&draining).await?;
                read = now.elapsed();
                let mut present = BTreeSet::new();
                for vs in fresh {
                    present.insert(vs.server.key);
                    shadow.virtual_servers.insert(vs.server.key, vs);
                }
                for k in &draining {
                    if !present.contains(k) {
                        shadow.virtual_servers.remove(k);
                    }
                }
            }
            proxy_core::plan_changes(
                self.state.desired(),
                shadow,
                &changes,
                &self.state.policy(),
                &mut self.drains,
                now,
            )
        };
        let planned = now.elapsed();
        {
            let _batch = crate::logging::Batch::open();
            self.log_plan(&plan, kind);
        }
        let logged = now.elapsed();
        // Remember owners of what this plan deletes, for later log lines.
        for (k, v) in &self.state.desired().virtual_servers {
            self.owners.entry(*k).or_insert_with(|| v.owner.clone());
        }
        self.count_ops(&plan);
        let applied = if plan.is_empty() {
            Applied::default()
        } else {
            self.kernel.apply(&plan).await
        };
        let failures = applied.failed;
        if applied.nft.executions > 0 {
            let m = &self.metrics;
            m.nft_executions_total
                .inc_by(u64::from(applied.nft.executions));
            m.nft_input_bytes_total.inc_by(applied.nft.input_bytes);
            m.nft_duration.observe(applied.nft.duration.as_secs_f64());
        }
        if applied.nft.netlink_transactions > 0 {
            let m = &self.metrics;
            m.nft_netlink_transactions_total
                .inc_by(u64::from(applied.nft.netlink_transactions));
            m.nft_netlink_bytes_total.inc_by(applied.nft.netlink_bytes);
        }
        if applied.nft.element_fallbacks > 0 {
            self.metrics
                .nft_element_fallbacks_total
                .inc_by(u64::from(applied.nft.element_fallbacks));
        }
        for f in &failures {
            let kind = f.error.metric_label();
            tracing::warn!(op = f.op, kind, detail = %f.detail, error = %Chain(&f.error), "kernel refused an operation");
            self.metrics
                .netlink_errors_total
                .with_label_values(&[f.op, kind])
                .inc();
        }
        if failures.is_empty() {
            if let Some(s) = self.shadow.as_mut() {
                if let Err(e) = s.apply(&plan) {
                    tracing::warn!(error = %e, "kernel model out of step; next sync is full");
                    self.shadow = None;
                }
            }
        } else {
            // Part of the plan is not in the kernel: re-read it next time.
            self.shadow = None;
        }
        // Forget owners of virtual servers that are gone.
        if let Some(s) = &self.shadow {
            let desired = &self.state.desired().virtual_servers;
            self.owners
                .retain(|k, _| desired.contains_key(k) || s.virtual_servers.contains_key(k));
        }
        self.note_rejections();
        self.sync_health_checks();
        let timings = SyncTimings {
            read,
            plan: planned.saturating_sub(read),
            log: logged.saturating_sub(planned),
            apply: applied.phases,
            nft: applied.nft,
            total: now.elapsed(),
        };
        timings.log(kind, &plan, failures.len());
        Ok(self.outcome(failures.len()))
    }
}

impl<K: Kernel> Proxier for CoreProxier<K> {
    fn apply_change(&mut self, change: Change) {
        match change {
            Change::Applied(Object::Service(s)) => {
                self.remember_identity(Kind::Service, &s.metadata);
                self.state.apply_service(&s)
            }
            Change::Applied(Object::EndpointSlice(s)) => {
                self.remember_identity(Kind::EndpointSlice, &s.metadata);
                self.state.apply_slice(&s)
            }
            Change::Applied(Object::Node(n)) => {
                if n.metadata.name.as_deref() == Some(self.node_name.as_str()) {
                    self.node = Some(*n);
                    self.refresh_node();
                }
            }
            Change::Deleted(Kind::Service, k) => {
                self.identities
                    .remove(&(Kind::Service, k.namespace.clone(), k.name.clone()));
                self.state.delete_service(&k.namespace, &k.name)
            }
            Change::Deleted(Kind::EndpointSlice, k) => {
                self.identities
                    .remove(&(Kind::EndpointSlice, k.namespace.clone(), k.name.clone()));
                self.state.delete_slice(&k.namespace, &k.name)
            }
            Change::Deleted(Kind::Node, _) => {
                self.node = None;
                self.refresh_node();
            }
            Change::Listed(_) => {}
        }
    }

    fn sync(&mut self, kind: SyncKind) -> impl Future<Output = Result<SyncOutcome, Error>> + Send {
        self.do_sync(kind)
    }
}
