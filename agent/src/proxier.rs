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

use ipvs::{Op, RealServerKey, ServiceKey};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use proxy_core::{
    DesiredState, DrainBook, LocalDetect, NodeFacts, NodePortAddresses, ObjectKind, Observed,
    ObservedVirtualServer, Plan, ProxyState, Scheduler,
};

use crate::config::{DetectLocal, NodePortAddress, ProxyConfig};
use crate::events::{EventSink, ObjectIdentity, RejectionEvent};
use crate::http::{ServiceHealthServers, ServiceRef};
use crate::metrics::Metrics;
use crate::source::{Change, Kind, Object};
use crate::sync::{Proxier, SyncError, SyncKind, SyncOutcome};

/// One kernel operation that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedOp {
    /// Operation label (`add_virtual_server`, `bind_address`, ...).
    pub op: &'static str,
    /// Error kind label (`exists`, `not_found`, `invalid`, ...).
    pub kind: String,
    /// Human-readable detail.
    pub detail: String,
}

/// What [`Kernel::apply`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
    fn observe(&mut self) -> impl Future<Output = Result<Observed, String>> + Send;
    /// Applies a plan operation by operation; a failure does not stop the
    /// others.
    fn apply(&mut self, plan: &Plan) -> impl Future<Output = Applied> + Send;
    /// Fresh state (with connection counters) of these virtual servers;
    /// absent ones are left out.
    fn refresh(
        &mut self,
        keys: &[ServiceKey],
    ) -> impl Future<Output = Result<Vec<ObservedVirtualServer>, String>> + Send;
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

/// Translates the agent's configuration for proxy-core.
pub fn core_config(cfg: &ProxyConfig) -> Result<proxy_core::Config, String> {
    let scheduler = Scheduler::parse(&cfg.ipvs.scheduler, "").map_err(|e| e.to_string())?;
    let mut npa = NodePortAddresses::default();
    for a in &cfg.node_port_addresses {
        match a {
            NodePortAddress::Primary => npa.primary = true,
            NodePortAddress::Cidr(c) => npa.cidrs.push(*c),
        }
    }
    let secs = |d: Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
    Ok(proxy_core::Config {
        scheduler,
        local_detect: local_detect(cfg, None),
        node_port_addresses: npa,
        masquerade_all: cfg.masquerade_all,
        exclude_cidrs: cfg.ipvs.exclude_cidrs.clone(),
        strict_arp: cfg.ipvs.strict_arp,
        timeouts: ipvs::Timeouts {
            tcp: secs(cfg.ipvs.tcp_timeout),
            tcp_fin: secs(cfg.ipvs.tcp_fin_timeout),
            udp: secs(cfg.ipvs.udp_timeout),
        },
        drain_period: cfg.drain_period,
        ..proxy_core::Config::default()
    })
}

fn local_detect(cfg: &ProxyConfig, node: Option<&Node>) -> LocalDetect {
    match &cfg.detect_local {
        DetectLocal::ClusterCidr if cfg.cluster_cidrs.is_empty() => LocalDetect::None,
        DetectLocal::ClusterCidr => LocalDetect::ClusterCidr(cfg.cluster_cidrs.clone()),
        DetectLocal::NodeCidr => {
            let cidrs: Vec<ipnet::IpNet> = node
                .and_then(|n| n.spec.as_ref())
                .and_then(|s| s.pod_cidrs.clone())
                .unwrap_or_default()
                .iter()
                .filter_map(|c| c.parse().ok())
                .collect();
            if cidrs.is_empty() {
                LocalDetect::None
            } else {
                LocalDetect::NodeCidr(cidrs)
            }
        }
        DetectLocal::BridgeInterface(b) => LocalDetect::BridgeInterface(b.clone()),
        DetectLocal::InterfaceNamePrefix(p) => LocalDetect::InterfaceNamePrefix(p.clone()),
    }
}

/// The node's primary IPs from its status (InternalIP first, then
/// ExternalIP), one per family, unless `bind_address` overrides.
pub fn primary_ips(node: Option<&Node>, bind_address: IpAddr) -> Vec<IpAddr> {
    if !bind_address.is_unspecified() {
        return vec![bind_address];
    }
    let mut out: Vec<IpAddr> = Vec::new();
    let addrs = node
        .and_then(|n| n.status.as_ref())
        .and_then(|s| s.addresses.clone())
        .unwrap_or_default();
    for ty in ["InternalIP", "ExternalIP"] {
        for a in addrs.iter().filter(|a| a.type_ == ty) {
            if let Ok(ip) = a.address.parse::<IpAddr>() {
                if !out.iter().any(|o| o.is_ipv4() == ip.is_ipv4()) {
                    out.push(ip);
                }
            }
        }
    }
    out
}

fn fmt_rs(k: &RealServerKey) -> String {
    match k.addr {
        IpAddr::V4(a) => format!("{a}:{}", k.port),
        IpAddr::V6(a) => format!("[{a}]:{}", k.port),
    }
}

/// Plans with at least this many operations get an info line with their
/// timings ([`SyncTimings`]); smaller ones a debug line.
const TIMED_SYNC_OPS: usize = 100;

/// Where one sync's time went.
#[derive(Debug, Clone, Default)]
struct SyncTimings {
    /// Reading the kernel: the dump of a full sync, the per-service reads of
    /// a partial one.
    read: Duration,
    /// Planning (proxy-core).
    plan: Duration,
    /// The forwarding-change log lines.
    log: Duration,
    /// The kernel's phases.
    apply: Vec<(&'static str, Duration)>,
    /// The `nft` runs.
    nft: dataplane::nft::NftStats,
    /// From the start of the sync to the end.
    total: Duration,
}

impl SyncTimings {
    /// One line: info for a large plan or a sync over a second, else debug.
    fn log(&self, kind: SyncKind, plan: &Plan, failed: usize) {
        let ops = plan.ipvs.len() + plan.bind.len() + plan.unbind.len() + plan.filter.len();
        let ms = |d: Duration| (d.as_secs_f64() * 1e4).round() / 10.0;
        let phase = |name: &str| {
            self.apply
                .iter()
                .find(|(n, _)| *n == name)
                .map_or(0.0, |(_, d)| ms(*d))
        };
        macro_rules! line {
            ($level:ident) => {
                tracing::$level!(
                    ?kind,
                    ops,
                    failed,
                    read_ms = ms(self.read),
                    plan_ms = ms(self.plan),
                    log_ms = ms(self.log),
                    bind_ms = phase("bind"),
                    ipvs_ms = phase("ipvs"),
                    filter_ms = phase("filter"),
                    unbind_ms = phase("unbind"),
                    nft_runs = self.nft.executions,
                    nft_ms = ms(self.nft.duration),
                    nft_bytes = self.nft.input_bytes,
                    total_ms = ms(self.total),
                    "sync done"
                )
            };
        }
        if ops >= TIMED_SYNC_OPS || self.total >= Duration::from_secs(1) {
            line!(info);
        } else {
            line!(debug);
        }
    }
}

/// What a plan does to one virtual server itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VsWhat {
    Added,
    Updated,
    Removed,
    /// Only its real servers change.
    RealServers,
}

impl VsWhat {
    /// The log message: the text operators grep for.
    fn message(self) -> &'static str {
        match self {
            VsWhat::Added => "virtual server added",
            VsWhat::Updated => "virtual server updated",
            VsWhat::Removed => "virtual server removed",
            VsWhat::RealServers => "real servers changed",
        }
    }
}

/// Everything one plan does to one virtual server, for its log line.
/// Real-server lists are comma-separated `ADDR:PORT` (`[ADDR]:PORT` for
/// IPv6), with `/wN` appended when the weight set is not 1.
#[derive(Debug, Clone, PartialEq, Eq)]
struct VsChange {
    key: ServiceKey,
    what: VsWhat,
    /// The scheduler, when the virtual server is added or updated.
    scheduler: Option<String>,
    added: Option<String>,
    draining: Option<String>,
    updated: Option<String>,
    removed: Option<String>,
    /// Each real server's change (message, real server), for the debug
    /// lines; classified once, with the info line's lists.
    each: Vec<(&'static str, RealServerKey)>,
}

impl VsChange {
    fn new(key: ServiceKey) -> Self {
        Self {
            key,
            what: VsWhat::RealServers,
            scheduler: None,
            added: None,
            draining: None,
            updated: None,
            removed: None,
            each: Vec::new(),
        }
    }

    /// One debug line per real server (the lines of the per-VS info line).
    fn log_each(&self, service: &str) {
        for (what, rs) in &self.each {
            tracing::debug!(service = %service, virtual_server = %self.key, real_server = %fmt_rs(rs), "{what}");
        }
    }
}

/// The virtual server an IPVS operation acts on.
fn op_key(op: &Op) -> Option<ServiceKey> {
    match op {
        Op::AddService(vs) | Op::EditService(vs) => Some(vs.key),
        Op::DeleteService(k)
        | Op::AddRealServer(k, _)
        | Op::EditRealServer(k, _)
        | Op::DeleteRealServer(k, _) => Some(*k),
        _ => None,
    }
}

fn push_rs(list: &mut Option<String>, rs: &RealServerKey, weight: Option<u32>) {
    let s = list.get_or_insert_with(String::new);
    if !s.is_empty() {
        s.push(',');
    }
    s.push_str(&fmt_rs(rs));
    if let Some(w) = weight.filter(|w| *w != 1) {
        s.push_str(&format!("/w{w}"));
    }
}

/// The plan's IPVS operations grouped by virtual server, in the order the
/// plan first touches each.
fn vs_changes(plan: &Plan) -> Vec<VsChange> {
    let draining: BTreeSet<(ServiceKey, RealServerKey)> =
        plan.drains_started.iter().copied().collect();
    let mut out: Vec<VsChange> = Vec::new();
    let mut at: HashMap<ServiceKey, usize> = HashMap::new();
    for op in &plan.ipvs {
        let Some(key) = op_key(op) else { continue };
        let i = *at.entry(key).or_insert_with(|| {
            out.push(VsChange::new(key));
            out.len() - 1
        });
        let c = &mut out[i];
        match op {
            Op::AddService(vs) => {
                c.what = VsWhat::Added;
                c.scheduler = Some(vs.scheduler.clone());
            }
            Op::EditService(vs) => {
                if c.what == VsWhat::RealServers {
                    c.what = VsWhat::Updated;
                }
                c.scheduler = Some(vs.scheduler.clone());
            }
            Op::DeleteService(_) => c.what = VsWhat::Removed,
            Op::AddRealServer(_, rs) => {
                push_rs(&mut c.added, &rs.key, Some(rs.weight));
                c.each.push(("real server added", rs.key));
            }
            Op::EditRealServer(k, rs) if draining.contains(&(*k, rs.key)) => {
                push_rs(&mut c.draining, &rs.key, None);
                c.each.push(("real server draining", rs.key));
            }
            Op::EditRealServer(_, rs) => {
                push_rs(&mut c.updated, &rs.key, Some(rs.weight));
                c.each.push(("real server updated", rs.key));
            }
            Op::DeleteRealServer(_, rs) => {
                push_rs(&mut c.removed, rs, None);
                c.each.push(("real server removed", *rs));
            }
            _ => {}
        }
    }
    out
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
    owners: HashMap<ServiceKey, String>,
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
    ) -> Result<Self, String> {
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

    fn remember_identity(&mut self, kind: Kind, meta: &ObjectMeta) {
        if self.events.is_none() {
            return;
        }
        let key = (
            kind,
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().unwrap_or_default(),
        );
        self.identities.insert(
            key,
            ObjectIdentity {
                uid: meta.uid.clone(),
                resource_version: meta.resource_version.clone(),
                generation: meta.generation,
            },
        );
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
            .or_else(|| self.owners.get(key).cloned())
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
            .or_else(|| self.owners.get(key).cloned())
            .unwrap_or_else(|| "-".to_string())
    }

    /// The forwarding changes of a plan, one info line per address bound
    /// or unbound and one per virtual server touched, naming its service
    /// and the real servers added, draining, updated and removed (see
    /// [`VsChange`]); each real server at debug, the whole plan at debug.
    fn log_plan(&self, plan: &Plan, kind: SyncKind) {
        if plan.is_empty() {
            return;
        }
        tracing::debug!(?kind, ?plan, "plan");
        for a in &plan.bind {
            tracing::info!(address = %a, "address bound");
        }
        for c in vs_changes(plan) {
            let service = self.owner(&c.key);
            if tracing::enabled!(tracing::Level::DEBUG) {
                c.log_each(&service);
            }
            tracing::info!(
                service = %service,
                virtual_server = %c.key,
                scheduler = c.scheduler.as_deref().map(tracing::field::display),
                added = c.added.as_deref().map(tracing::field::display),
                draining = c.draining.as_deref().map(tracing::field::display),
                updated = c.updated.as_deref().map(tracing::field::display),
                removed = c.removed.as_deref().map(tracing::field::display),
                "{}",
                c.what.message()
            );
        }
        for op in &plan.ipvs {
            if op_key(op).is_none() {
                tracing::info!(op = ?op, "ipvs operation");
            }
        }
        if !plan.filter.is_empty() {
            tracing::info!(changes = plan.filter.len(), "packet filter updated");
        }
        for a in &plan.unbind {
            tracing::info!(address = %a, "address unbound");
        }
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

    fn note_rejections(&mut self) {
        let mut now = BTreeSet::new();
        for r in self.state.rejections() {
            let id = format!("{} {} {}", r.object, r.reason.as_str(), r.detail);
            if !self.seen_rejections.contains(&id) {
                tracing::warn!(object = %r.object, reason = r.reason.as_str(), detail = %r.detail, "object rejected");
                self.metrics
                    .rejected_objects_total
                    .with_label_values(&[r.object.kind.as_str(), r.reason.as_str()])
                    .inc();
            }
            now.insert(id);
        }
        self.seen_rejections = now;
        self.emit_events();
    }

    /// One Event per rejection, object uid and generation: a rejection
    /// that stands is not reported again on later syncs.
    fn emit_events(&mut self) {
        let Some(sink) = &self.events else { return };
        let mut now = BTreeSet::new();
        for r in self.state.rejections() {
            let kind = match r.object.kind {
                ObjectKind::Service => Kind::Service,
                ObjectKind::EndpointSlice => Kind::EndpointSlice,
            };
            let key = (kind, r.object.namespace.clone(), r.object.name.clone());
            let ident = self.identities.get(&key).cloned().unwrap_or_default();
            let id = format!(
                "{} {} {} {} {:?}",
                r.object,
                r.reason.as_str(),
                r.detail,
                ident.uid.as_deref().unwrap_or(""),
                ident.generation
            );
            if !self.seen_events.contains(&id) {
                if let Some(ev) = RejectionEvent::new(&r, &ident) {
                    sink.emit(ev);
                }
            }
            now.insert(id);
        }
        self.seen_events = now;
    }

    fn sync_health_checks(&self) {
        let Some(hc) = &self.health_checks else {
            return;
        };
        let mut ports = BTreeMap::new();
        let mut counts = BTreeMap::new();
        for f in self.state.desired().filter.health_checks() {
            let r = ServiceRef {
                namespace: f.service.namespace.clone(),
                name: f.service.name.clone(),
            };
            ports.insert(r.clone(), f.port);
            counts.insert(r, f.local_endpoints as usize);
        }
        for e in hc.sync_services(&ports) {
            tracing::warn!(error = %e, "health check port not opened; retrying on the next sync");
        }
        hc.sync_endpoints(&counts);
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

    async fn do_sync(&mut self, kind: SyncKind) -> Result<SyncOutcome, SyncError> {
        let now = Instant::now();
        let full = kind == SyncKind::Full || self.shadow.is_none();
        let mut read = Duration::ZERO;
        let plan = if full {
            let observed = self.kernel.observe().await.map_err(SyncError)?;
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
                let fresh = self.kernel.refresh(&draining).await.map_err(SyncError)?;
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
            self.owners.entry(*k).or_insert_with(|| v.owner.to_string());
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
        for f in &failures {
            tracing::warn!(op = f.op, kind = %f.kind, detail = %f.detail, "kernel refused an operation");
            self.metrics
                .netlink_errors_total
                .with_label_values(&[f.op, &f.kind])
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

    fn sync(
        &mut self,
        kind: SyncKind,
    ) -> impl Future<Output = Result<SyncOutcome, SyncError>> + Send {
        self.do_sync(kind)
    }
}

/// An in-memory kernel: applies plans to a [`proxy_core::Observed`] model.
/// For tests, dry runs and benchmarks of the agent without a kernel.
#[derive(Debug, Default, Clone)]
pub struct ModelKernel {
    /// The modelled node.
    pub node: Observed,
    /// Operations to refuse: (op label, error kind), consumed once each.
    pub refuse: Vec<(&'static str, String)>,
    /// Number of `observe` calls (full dumps).
    pub dumps: usize,
}

impl Kernel for ModelKernel {
    fn observe(&mut self) -> impl Future<Output = Result<Observed, String>> + Send {
        self.dumps += 1;
        let o = self.node.clone();
        async move { Ok(o) }
    }

    fn apply(&mut self, plan: &Plan) -> impl Future<Output = Applied> + Send {
        let mut failed = Vec::new();
        let mut accepted = plan.clone();
        if !self.refuse.is_empty() {
            accepted.ipvs.clear();
            for op in &plan.ipvs {
                let label = op_label(op);
                if let Some(i) = self.refuse.iter().position(|(l, _)| *l == label) {
                    let (_, kind) = self.refuse.remove(i);
                    failed.push(FailedOp {
                        op: label,
                        kind,
                        detail: format!("{op:?}"),
                    });
                } else {
                    accepted.ipvs.push(op.clone());
                }
            }
        }
        if let Err(e) = self.node.apply(&accepted) {
            failed.push(FailedOp {
                op: "model",
                kind: "invalid".into(),
                detail: e.to_string(),
            });
        }
        async move {
            Applied {
                failed,
                ..Applied::default()
            }
        }
    }

    fn refresh(
        &mut self,
        keys: &[ServiceKey],
    ) -> impl Future<Output = Result<Vec<ObservedVirtualServer>, String>> + Send {
        let out: Vec<ObservedVirtualServer> = keys
            .iter()
            .filter_map(|k| self.node.virtual_servers.get(k).cloned())
            .collect();
        async move { Ok(out) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::ObjectKey;
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::api::discovery::v1::EndpointSlice;

    fn service(yaml: &str) -> Change {
        let s: Service = serde_yaml::from_str(yaml).expect("service yaml");
        Change::Applied(Object::Service(Box::new(s)))
    }

    fn slice(name: &str, svc: &str, addrs: &[&str]) -> Change {
        let eps: Vec<String> = addrs
            .iter()
            .map(|a| {
                format!("- addresses: [\"{a}\"]\n  conditions: {{ready: true}}\n  nodeName: other")
            })
            .collect();
        let yaml = format!(
            "metadata:\n  namespace: default\n  name: {name}\n  labels:\n    kubernetes.io/service-name: {svc}\naddressType: IPv4\nports:\n- port: 8080\n  protocol: TCP\n  name: http\nendpoints:\n{}\n",
            eps.join("\n")
        );
        let s: EndpointSlice = serde_yaml::from_str(&yaml).expect("slice yaml");
        Change::Applied(Object::EndpointSlice(Box::new(s)))
    }

    const WEB: &str = "metadata: {namespace: default, name: web}\nspec:\n  clusterIP: 10.96.0.10\n  clusterIPs: [10.96.0.10]\n  ipFamilies: [IPv4]\n  type: ClusterIP\n  ports:\n  - {name: http, port: 80, protocol: TCP, targetPort: 8080}\n";

    fn proxier() -> CoreProxier<ModelKernel> {
        let cfg = ProxyConfig {
            drain_period: Duration::from_secs(60),
            ..ProxyConfig::default()
        };
        CoreProxier::new(
            cfg,
            "node-a".into(),
            ["192.168.0.10".parse().unwrap()].into_iter().collect(),
            ModelKernel::default(),
            Metrics::new(),
            None,
        )
        .expect("proxier")
    }

    fn real_servers(p: &CoreProxier<ModelKernel>) -> Vec<(String, u32)> {
        let mut v: Vec<(String, u32)> = p
            .kernel()
            .node
            .virtual_servers
            .values()
            .flat_map(|vs| vs.real_servers.values().map(|r| (fmt_rs(&r.key), r.weight)))
            .collect();
        v.sort();
        v
    }

    #[tokio::test]
    async fn programs_converges_and_drains() {
        let mut p = proxier();
        p.apply_change(service(WEB));
        p.apply_change(slice("web-1", "web", &["10.244.1.2", "10.244.1.3"]));
        let out = p.sync(SyncKind::Full).await.expect("sync");
        assert_eq!(out.failed_ops, 0);
        assert_eq!(out.virtual_servers, 1);
        assert_eq!(out.real_servers, 2);
        let node = &p.kernel().node;
        assert!(node.addresses.contains(&"10.96.0.10".parse().unwrap()));
        assert_eq!(
            real_servers(&p),
            vec![("10.244.1.2:8080".into(), 1), ("10.244.1.3:8080".into(), 1)]
        );
        assert_eq!(p.kernel().dumps, 1);

        // Converged: a partial sync changes nothing and reads nothing.
        let before = p.kernel().node.clone();
        p.sync(SyncKind::Partial).await.unwrap();
        assert_eq!(p.kernel().node, before);
        assert_eq!(p.kernel().dumps, 1, "partial syncs use the shadow");

        // One endpoint with an open connection is replaced: it drains (TCP),
        // the new one is added.
        let key = *p.kernel().node.virtual_servers.keys().next().unwrap();
        let set_conns = |p: &mut CoreProxier<ModelKernel>, active: u32| {
            let vs = p.kernel.node.virtual_servers.get_mut(&key).unwrap();
            for rs in vs.real_servers.values_mut() {
                if rs.key.addr == "10.244.1.3".parse::<IpAddr>().unwrap() {
                    rs.conns.active = active;
                }
            }
        };
        set_conns(&mut p, 1);
        p.apply_change(slice("web-1", "web", &["10.244.1.2", "10.244.1.4"]));
        let out = p.sync(SyncKind::Partial).await.unwrap();
        assert_eq!(out.draining, 1);
        assert_eq!(
            real_servers(&p),
            vec![
                ("10.244.1.2:8080".into(), 1),
                ("10.244.1.3:8080".into(), 0),
                ("10.244.1.4:8080".into(), 1)
            ]
        );
        // Still connected: the drain check keeps it.
        let out = p.sync(SyncKind::Partial).await.unwrap();
        assert_eq!(out.draining, 1);
        // Its connection ends: the next drain check (refreshing counters,
        // no full dump) deletes it.
        set_conns(&mut p, 0);
        let out = p.sync(SyncKind::Partial).await.unwrap();
        assert_eq!(out.draining, 0);
        assert_eq!(
            real_servers(&p),
            vec![("10.244.1.2:8080".into(), 1), ("10.244.1.4:8080".into(), 1)]
        );
        assert!(p.kernel().node.virtual_servers.contains_key(&key));
        assert_eq!(p.kernel().dumps, 1);

        // The Service goes: drained and removed, address unbound.
        p.apply_change(Change::Deleted(
            Kind::Service,
            ObjectKey {
                namespace: "default".into(),
                name: "web".into(),
            },
        ));
        p.sync(SyncKind::Partial).await.unwrap();
        p.sync(SyncKind::Partial).await.unwrap();
        assert!(p.kernel().node.virtual_servers.is_empty());
        assert!(!p
            .kernel()
            .node
            .addresses
            .contains(&"10.96.0.10".parse().unwrap()));
    }

    /// A log writer into a shared buffer.
    #[derive(Clone, Default)]
    struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Every test's info lines, through one global subscriber (a scoped
    /// one races with other test threads registering the same callsites).
    fn captured() -> &'static Captured {
        static CAPTURED: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
        CAPTURED.get_or_init(|| {
            let out = Captured::default();
            let w = out.clone();
            let sub = tracing_subscriber::fmt()
                .with_writer(move || w.clone())
                .with_ansi(false)
                .with_max_level(tracing::Level::INFO)
                .finish();
            tracing::subscriber::set_global_default(sub).expect("the only global subscriber");
            out
        })
    }

    impl Captured {
        /// The lines logged since the last call that mention `needle`,
        /// without timestamp and target.
        fn take(&self, needle: &str) -> Vec<String> {
            let mut buf = self.0.lock().unwrap();
            let text = String::from_utf8_lossy(&buf).into_owned();
            // Keep a partial last line (another thread mid-write).
            let cut = text.rfind('\n').map_or(0, |i| i + 1);
            buf.drain(..cut);
            text[..cut]
                .lines()
                .filter(|l| l.contains(needle))
                .map(|l| l.split_once(": ").map_or(l, |(_, m)| m).to_string())
                .collect()
        }
    }

    #[tokio::test]
    async fn one_line_per_virtual_server_names_its_real_servers() {
        let out = captured();
        // Its own Service and address: other tests log at the same time.
        let vip = "10.96.7.7";
        let mut p = proxier();
        p.apply_change(service(
            &WEB.replace("name: web", "name: logged")
                .replace("10.96.0.10", vip),
        ));
        p.apply_change(slice("logged-1", "logged", &["10.244.1.2", "10.244.1.3"]));
        p.sync(SyncKind::Full).await.unwrap();
        assert_eq!(
            out.take(vip),
            vec![
                "address bound address=10.96.7.7".to_string(),
                "virtual server added service=default/logged:http virtual_server=TCP 10.96.7.7:80 \
                 scheduler=rr added=10.244.1.2:8080,10.244.1.3:8080"
                    .into(),
            ]
        );

        // One endpoint with a connection replaced, another added: one line.
        let key = *p.kernel().node.virtual_servers.keys().next().unwrap();
        let vs = p.kernel.node.virtual_servers.get_mut(&key).unwrap();
        for rs in vs.real_servers.values_mut() {
            rs.conns.active = 1;
        }
        p.apply_change(slice(
            "logged-1",
            "logged",
            &["10.244.1.2", "10.244.1.4", "10.244.1.5"],
        ));
        p.sync(SyncKind::Partial).await.unwrap();
        assert_eq!(
            out.take(vip),
            vec![
                "real servers changed service=default/logged:http virtual_server=TCP 10.96.7.7:80 \
                 added=10.244.1.4:8080,10.244.1.5:8080 draining=10.244.1.3:8080"
                    .to_string()
            ]
        );

        // The Service goes: its real servers drain, then it is removed and
        // its address unbound.
        for rs in p
            .kernel
            .node
            .virtual_servers
            .get_mut(&key)
            .unwrap()
            .real_servers
            .values_mut()
        {
            rs.conns.active = 0;
        }
        p.apply_change(Change::Deleted(
            Kind::Service,
            ObjectKey {
                namespace: "default".into(),
                name: "logged".into(),
            },
        ));
        p.sync(SyncKind::Partial).await.unwrap();
        p.sync(SyncKind::Partial).await.unwrap();
        let lines = out.take(vip);
        assert!(
            lines.iter().any(|l| {
                l.starts_with(
                "virtual server removed service=default/logged:http virtual_server=TCP 10.96.7.7:80"
            )
            }),
            "{lines:#?}"
        );
        assert!(
            lines.contains(&"address unbound address=10.96.7.7".to_string()),
            "{lines:#?}"
        );
        assert!(
            !lines.iter().any(|l| l.starts_with("real server ")),
            "per-real-server lines are debug only: {lines:#?}"
        );
    }

    #[test]
    fn real_server_lists_show_weights_other_than_one() {
        let key = ServiceKey::tcp("10.96.0.10".parse().unwrap(), 80);
        let rs = |a: &str, w: u32| {
            let mut r = ipvs::RealServer::new(a.parse().unwrap(), 8080);
            r.weight = w;
            r
        };
        let plan = Plan {
            ipvs: vec![
                Op::AddRealServer(key, rs("10.244.1.2", 1)),
                Op::AddRealServer(key, rs("fd00::2", 3)),
                Op::EditRealServer(key, rs("10.244.1.3", 1)),
            ],
            ..Plan::default()
        };
        let c = vs_changes(&plan);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].what, VsWhat::RealServers);
        assert_eq!(
            c[0].added.as_deref(),
            Some("10.244.1.2:8080,[fd00::2]:8080/w3")
        );
        assert_eq!(c[0].updated.as_deref(), Some("10.244.1.3:8080"));
        assert_eq!(
            (c[0].draining.as_deref(), c[0].removed.as_deref()),
            (None, None)
        );
        // The debug lines classify each real server as the info line does.
        let each: Vec<(&str, String)> = c[0].each.iter().map(|(w, k)| (*w, fmt_rs(k))).collect();
        assert_eq!(
            each,
            [
                ("real server added", "10.244.1.2:8080".to_string()),
                ("real server added", "[fd00::2]:8080".to_string()),
                ("real server updated", "10.244.1.3:8080".to_string()),
            ]
        );
    }

    #[tokio::test]
    async fn refused_operations_are_counted_and_retried_from_a_fresh_dump() {
        let mut p = proxier();
        p.kernel.refuse.push(("add_real_server", "no_route".into()));
        p.apply_change(service(WEB));
        p.apply_change(slice("web-1", "web", &["10.244.1.2", "10.244.1.3"]));
        let out = p.sync(SyncKind::Full).await.unwrap();
        assert_eq!(out.failed_ops, 1);
        assert_eq!(
            real_servers(&p).len(),
            1,
            "the other real server is programmed"
        );
        let text = p.metrics.render();
        assert!(
            text.contains(
                "ipvs_proxy_netlink_errors_total{kind=\"no_route\",op=\"add_real_server\"} 1"
            ),
            "{text}"
        );
        // The retry (a partial sync by the loop) re-reads the kernel and fixes it.
        let out = p.sync(SyncKind::Partial).await.unwrap();
        assert_eq!(out.failed_ops, 0);
        assert_eq!(real_servers(&p).len(), 2);
        assert_eq!(p.kernel().dumps, 2);
    }

    #[tokio::test]
    async fn foreign_virtual_servers_are_not_counted() {
        let mut p = proxier();
        let foreign = ipvs::VirtualServer::new(ServiceKey::Addr {
            protocol: ipvs::Protocol::Tcp,
            addr: "192.0.2.50".parse().unwrap(),
            port: 80,
        });
        p.kernel.node.virtual_servers.insert(
            foreign.key,
            ObservedVirtualServer {
                server: foreign.clone(),
                real_servers: BTreeMap::new(),
            },
        );
        p.apply_change(service(WEB));
        p.apply_change(slice("web-1", "web", &["10.244.1.2"]));
        let out = p.sync(SyncKind::Full).await.unwrap();
        assert_eq!((out.virtual_servers, out.real_servers), (1, 1));
        assert!(
            p.kernel().node.virtual_servers.contains_key(&foreign.key),
            "untouched"
        );
    }

    #[tokio::test]
    async fn drift_is_repaired_by_the_full_sync() {
        let mut p = proxier();
        p.apply_change(service(WEB));
        p.apply_change(slice("web-1", "web", &["10.244.1.2"]));
        p.sync(SyncKind::Full).await.unwrap();
        // Someone deletes our virtual server behind our back.
        p.kernel.node.virtual_servers.clear();
        p.sync(SyncKind::Partial).await.unwrap();
        assert!(
            p.kernel().node.virtual_servers.is_empty(),
            "partial trusts the shadow"
        );
        p.sync(SyncKind::Full).await.unwrap();
        assert_eq!(real_servers(&p), vec![("10.244.1.2:8080".into(), 1)]);
    }

    #[tokio::test]
    async fn rejections_are_counted_once() {
        let mut p = proxier();
        p.apply_change(service(
            "metadata: {namespace: default, name: bad}\nspec:\n  clusterIP: 10.96.0.999\n  ports:\n  - {port: 80}\n",
        ));
        p.sync(SyncKind::Full).await.unwrap();
        p.sync(SyncKind::Partial).await.unwrap();
        let text = p.metrics.render();
        let line = text
            .lines()
            .find(|l| l.starts_with("ipvs_proxy_rejected_objects_total{"))
            .unwrap_or_else(|| panic!("no rejection counted:\n{text}"));
        assert!(line.contains("kind=\"Service\""), "{line}");
        assert!(line.ends_with(" 1"), "{line}");
    }

    #[tokio::test]
    async fn no_local_endpoint_counts_reach_the_outcome() {
        let mut p = proxier();
        // Endpoints only on another node; ITP Local on one Service, ETP
        // Local (NodePort) on another.
        p.apply_change(service(&WEB.replace(
            "  type: ClusterIP\n",
            "  type: ClusterIP\n  internalTrafficPolicy: Local\n",
        )));
        p.apply_change(slice("web-1", "web", &["10.244.1.2"]));
        p.apply_change(service(
            "metadata: {namespace: default, name: np}\nspec:\n  clusterIP: 10.96.0.11\n  clusterIPs: [10.96.0.11]\n  type: NodePort\n  externalTrafficPolicy: Local\n  ports:\n  - {name: http, port: 80, protocol: TCP, nodePort: 30080}\n",
        ));
        p.apply_change(slice("np-1", "np", &["10.244.1.3"]));
        let out = p.sync(SyncKind::Full).await.unwrap();
        assert_eq!(
            (
                out.no_local_endpoints_internal,
                out.no_local_endpoints_external
            ),
            (1, 1)
        );
        // Without endpoints anywhere a port is not counted (kube-proxy's rule).
        p.apply_change(Change::Deleted(
            Kind::EndpointSlice,
            ObjectKey {
                namespace: "default".into(),
                name: "web-1".into(),
            },
        ));
        let out = p.sync(SyncKind::Partial).await.unwrap();
        assert_eq!(
            (
                out.no_local_endpoints_internal,
                out.no_local_endpoints_external
            ),
            (0, 1)
        );
    }

    #[test]
    fn primary_ips_prefer_internal_one_per_family() {
        let node: Node = serde_yaml::from_str(
            "metadata: {name: n}\nstatus:\n  addresses:\n  - {type: Hostname, address: n}\n  - {type: ExternalIP, address: 203.0.113.5}\n  - {type: InternalIP, address: 10.0.0.5}\n  - {type: InternalIP, address: 10.0.0.6}\n  - {type: InternalIP, address: fd00::5}\n",
        )
        .unwrap();
        let ips = primary_ips(Some(&node), "0.0.0.0".parse().unwrap());
        assert_eq!(
            ips,
            vec![
                "10.0.0.5".parse::<IpAddr>().unwrap(),
                "fd00::5".parse().unwrap()
            ]
        );
        assert_eq!(
            primary_ips(Some(&node), "10.9.9.9".parse().unwrap()),
            vec!["10.9.9.9".parse::<IpAddr>().unwrap()]
        );
    }
}
