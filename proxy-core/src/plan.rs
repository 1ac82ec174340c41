//! Planning: desired state + observed kernel state -> ordered operations.
//!
//! # What is ours
//!
//! The plan never touches kernel objects that are not ours. An observed
//! virtual server is ours when it is in the desired state, or when
//!
//! - its address is bound on our dummy interface (`kube-ipvs0`: every address
//!   on it is ours, including ones a previous run or kube-proxy's IPVS mode
//!   bound), or
//! - its address is a node address and its port is inside the NodePort range
//!   (a NodePort virtual server), or
//! - it is a firewall-mark service whose mark carries our base
//!   ([`crate::fwmark`]),
//!
//! and its address is not inside `excludeCIDRs`. Addresses we unbind are
//! only ever taken from the dummy interface (the agent reports only those),
//! never inside `excludeCIDRs`, and never while a virtual server on them is
//! still draining.
//!
//! # Graceful termination
//!
//! A real server that is ours but no longer desired is, for TCP and SCTP,
//! first set to weight 0 (no new connections) and deleted once
//! `ActiveConn + InActConn == 0` or the drain period has passed since the
//! drain began; UDP real servers are deleted at once. A draining real server
//! that becomes desired again is restored (edited back to weight 1). The
//! real servers of a deleted Service are drained the same way; its virtual
//! server is deleted when none are left.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use ipvs::{ForwardMethod, Op, Protocol, RealServer, RealServerKey, ServiceKey, VirtualServer};

use crate::config::{Config, LocalDetect, NodeFacts};
use crate::model::{DesiredState, FilterEntry, FilterFacts};

/// One observed virtual server with its real servers, as ipvs-rs dumps them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedVirtualServer {
    /// The virtual server as the kernel reports it.
    pub server: VirtualServer,
    /// Its real servers, with their connection counters.
    pub real_servers: BTreeMap<RealServerKey, RealServer>,
}

/// What the node holds now: the IPVS table, the addresses on our dummy
/// interface and the filter facts last applied.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Observed {
    /// Every IPVS virtual server in the node's network namespace (ours or not).
    pub virtual_servers: BTreeMap<ServiceKey, ObservedVirtualServer>,
    /// Addresses bound on our dummy interface.
    pub addresses: BTreeSet<IpAddr>,
    /// The filter facts the packet filter holds, or `None` when unknown
    /// (first sync): the plan then sets every entry.
    pub filter: Option<FilterFacts>,
}

impl Observed {
    /// Builds the IPVS part from an ipvs-rs dump (`Handle::dump`).
    pub fn from_dump(
        dump: Vec<(VirtualServer, Vec<RealServer>)>,
        addresses: BTreeSet<IpAddr>,
        filter: Option<FilterFacts>,
    ) -> Self {
        let virtual_servers = dump
            .into_iter()
            .map(|(server, rs)| {
                let real_servers = rs.into_iter().map(|r| (r.key, r)).collect();
                (
                    server.key,
                    ObservedVirtualServer {
                        server,
                        real_servers,
                    },
                )
            })
            .collect();
        Observed {
            virtual_servers,
            addresses,
            filter,
        }
    }
}

/// When each draining real server began to drain. The agent keeps one book
/// across syncs and passes it to every plan; the plan updates it. After a
/// restart an empty book is fine: draining servers found at weight 0 start
/// their drain period again.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DrainBook {
    started: BTreeMap<(ServiceKey, RealServerKey), Instant>,
}

impl DrainBook {
    /// An empty book.
    pub fn new() -> Self {
        DrainBook::default()
    }

    /// Number of real servers draining.
    pub fn len(&self) -> usize {
        self.started.len()
    }

    /// True when nothing drains.
    pub fn is_empty(&self) -> bool {
        self.started.is_empty()
    }

    /// When this real server began to drain, if it drains.
    pub fn started(&self, svc: &ServiceKey, rs: &RealServerKey) -> Option<Instant> {
        self.started.get(&(*svc, *rs)).copied()
    }

    /// The draining real servers and when they began.
    pub fn iter(&self) -> impl Iterator<Item = (&ServiceKey, &RealServerKey, Instant)> {
        self.started.iter().map(|((s, r), t)| (s, r, *t))
    }

    fn services(&self) -> BTreeSet<ServiceKey> {
        self.started.keys().map(|(s, _)| *s).collect()
    }

    /// Forgets drains of `svc`'s real servers that `keep` rejects.
    fn prune(&mut self, svc: &ServiceKey, keep: impl Fn(&RealServerKey) -> bool) {
        let lo = RealServerKey {
            addr: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            port: 0,
        };
        let hi = RealServerKey {
            addr: IpAddr::V6(std::net::Ipv6Addr::from(u128::MAX)),
            port: u16::MAX,
        };
        let gone: Vec<(ServiceKey, RealServerKey)> = self
            .started
            .range((*svc, lo)..=(*svc, hi))
            .filter(|((_, r), _)| !keep(r))
            .map(|(k, _)| *k)
            .collect();
        for k in gone {
            self.started.remove(&k);
        }
    }
}

/// What decides ownership and drain timing (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanPolicy {
    /// Addresses and services inside these are never touched.
    pub exclude_cidrs: Vec<IpNet>,
    /// Base of our firewall marks.
    pub fwmark_base: u32,
    /// The NodePort range.
    pub node_port_range: RangeInclusive<u16>,
    /// The node's own addresses (NodePort virtual servers live on them).
    pub node_addresses: BTreeSet<IpAddr>,
    /// Longest drain.
    pub drain_period: Duration,
    /// Virtual servers on node addresses outside the NodePort range (an
    /// externalIP or LB IP that is a node address) that this process
    /// programmed and no longer wants: ours too, so they get removed.
    pub also_owned: BTreeSet<ServiceKey>,
}

impl PlanPolicy {
    /// The policy for a configuration and node.
    pub fn new(config: &Config, node: &NodeFacts) -> Self {
        PlanPolicy {
            exclude_cidrs: config.exclude_cidrs.clone(),
            fwmark_base: config.fwmark_base,
            node_port_range: config.node_port_range.clone(),
            node_addresses: node
                .addresses
                .iter()
                .chain(node.primary_ips.iter())
                .copied()
                .collect(),
            drain_period: config.drain_period,
            also_owned: BTreeSet::new(),
        }
    }

    fn excluded(&self, addr: &IpAddr) -> bool {
        self.exclude_cidrs.iter().any(|c| c.contains(addr))
    }

    /// True when an observed virtual server that is not desired is ours to
    /// drain and delete.
    pub fn owns(&self, key: &ServiceKey, observed: &Observed) -> bool {
        match key {
            ServiceKey::Addr { addr, port, .. } => {
                !self.excluded(addr)
                    && (observed.addresses.contains(addr)
                        || (self.node_addresses.contains(addr)
                            && (self.node_port_range.contains(port)
                                || self.also_owned.contains(key))))
            }
            ServiceKey::Fwmark { mark, .. } => crate::fwmark::is_ours(self.fwmark_base, *mark),
        }
    }
}

/// A change to the packet-filter facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterOp {
    /// Set the configuration-derived globals.
    SetGlobals {
        /// Local traffic detection.
        local_detect: LocalDetect,
        /// masqueradeAll.
        masquerade_all: bool,
        /// Node addresses serving NodePorts.
        node_port_addresses: BTreeSet<IpAddr>,
    },
    /// Add an entry.
    Add(FilterEntry),
    /// Remove an entry.
    Remove(FilterEntry),
}

impl FilterFacts {
    /// Applies one change: the one place a [`FilterOp`] meets the facts
    /// (the kernel model [`Observed::apply`] and the dataplane both use it).
    /// O(log n). Adding a present entry or removing an absent one changes
    /// nothing and is reported as [`ModelError::Filter`].
    pub fn apply(&mut self, op: &FilterOp) -> Result<(), ModelError> {
        match op {
            FilterOp::SetGlobals {
                local_detect,
                masquerade_all,
                node_port_addresses,
            } => {
                self.local_detect.clone_from(local_detect);
                self.masquerade_all = *masquerade_all;
                self.node_port_addresses.clone_from(node_port_addresses);
                Ok(())
            }
            FilterOp::Add(e) => {
                if self.entries.insert(e.clone()) {
                    Ok(())
                } else {
                    Err(ModelError::Filter(Box::new(e.clone())))
                }
            }
            FilterOp::Remove(e) => {
                if self.entries.remove(e) {
                    Ok(())
                } else {
                    Err(ModelError::Filter(Box::new(e.clone())))
                }
            }
        }
    }
}

/// One operation of a plan, in the order it must be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanOp {
    /// Bind an address on the dummy interface.
    Bind(IpAddr),
    /// An IPVS operation, for ipvs-rs `Handle::apply`.
    Ipvs(Op),
    /// A packet-filter change.
    Filter(FilterOp),
    /// Remove an address from the dummy interface.
    Unbind(IpAddr),
}

/// The operations that take the node from the observed to the desired state,
/// in four phases applied in this order: bind addresses, IPVS operations,
/// packet-filter changes, unbind addresses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Addresses to bind first (so the VIPs are local when IPVS serves them).
    pub bind: Vec<IpAddr>,
    /// IPVS operations, ready for `Handle::apply`: per virtual server, the
    /// service is added/edited before its real servers, real servers are
    /// drained/deleted before the service.
    pub ipvs: Vec<Op>,
    /// Packet-filter changes.
    pub filter: Vec<FilterOp>,
    /// Addresses to unbind last.
    pub unbind: Vec<IpAddr>,
    /// Real servers this plan began to drain (weight set to 0), for logs.
    pub drains_started: Vec<(ServiceKey, RealServerKey)>,
    /// Real servers still draining after this plan, kept until their
    /// connections end or the drain period passes.
    pub still_draining: usize,
}

impl Plan {
    /// True when there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.bind.is_empty()
            && self.ipvs.is_empty()
            && self.filter.is_empty()
            && self.unbind.is_empty()
    }

    /// Every operation, in order.
    pub fn ops(&self) -> Vec<PlanOp> {
        let mut out = Vec::with_capacity(
            self.bind.len() + self.ipvs.len() + self.filter.len() + self.unbind.len(),
        );
        out.extend(self.bind.iter().copied().map(PlanOp::Bind));
        out.extend(self.ipvs.iter().cloned().map(PlanOp::Ipvs));
        out.extend(self.filter.iter().cloned().map(PlanOp::Filter));
        out.extend(self.unbind.iter().copied().map(PlanOp::Unbind));
        out
    }
}

/// What changed in the desired state since the last plan: the keys a partial
/// plan must look at (from [`crate::ProxyState::take_changes`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Changes {
    /// Virtual servers added, changed or removed.
    pub virtual_servers: BTreeSet<ServiceKey>,
    /// Addresses added or removed.
    pub addresses: BTreeSet<IpAddr>,
    /// Filter entries added or removed.
    pub filter_entries: BTreeSet<FilterEntry>,
    /// The filter globals changed.
    pub filter_globals: bool,
    /// Everything may have changed (a cold start): plan in full. The key
    /// sets are then not filled.
    pub full: bool,
}

impl Changes {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        !self.full
            && self.virtual_servers.is_empty()
            && self.addresses.is_empty()
            && self.filter_entries.is_empty()
            && !self.filter_globals
    }

    /// Merges another set of changes into this one.
    pub fn merge(&mut self, other: Changes) {
        self.virtual_servers.extend(other.virtual_servers);
        self.addresses.extend(other.addresses);
        self.filter_entries.extend(other.filter_entries);
        self.filter_globals |= other.filter_globals;
        self.full |= other.full;
    }
}

/// Plans everything: every desired and every observed object is compared.
/// Use it for the periodic full reconcile and after start-up.
pub fn plan(
    desired: &DesiredState,
    observed: &Observed,
    policy: &PlanPolicy,
    drains: &mut DrainBook,
    now: Instant,
) -> Plan {
    let mut keys: BTreeSet<ServiceKey> = desired.virtual_servers.keys().copied().collect();
    keys.extend(observed.virtual_servers.keys().copied());
    let mut addrs: BTreeSet<IpAddr> = desired.addresses.clone();
    addrs.extend(observed.addresses.iter().copied());
    let mut out = Plan::default();
    // What is not in the kernel yet is added whole (everything, at the
    // first sync): one allocation of the exact size instead of doublings
    // that leave up to half of the largest one unused.
    let fresh: usize = keys
        .iter()
        .filter(|k| !observed.virtual_servers.contains_key(*k))
        .filter_map(|k| desired.virtual_servers.get(k))
        .map(|d| 1 + d.real_servers.len())
        .sum();
    out.ipvs.reserve_exact(fresh);
    plan_virtual_servers(desired, observed, policy, drains, now, &keys, &mut out);
    // Forget drains of real servers that are gone from the kernel.
    drains.started.retain(|(s, r), _| {
        observed
            .virtual_servers
            .get(s)
            .is_some_and(|o| o.real_servers.contains_key(r))
    });
    plan_addresses(desired, observed, policy, &addrs, &mut out);
    match &observed.filter {
        Some(f) => plan_filter_full(&desired.filter, f, &mut out.filter),
        None => plan_filter_fresh(&desired.filter, &mut out.filter),
    }
    out
}

/// Plans only what `changes` names, plus every real server still draining.
/// Cost is proportional to the change, not to the cluster.
pub fn plan_changes(
    desired: &DesiredState,
    observed: &Observed,
    changes: &Changes,
    policy: &PlanPolicy,
    drains: &mut DrainBook,
    now: Instant,
) -> Plan {
    if changes.full {
        return plan(desired, observed, policy, drains, now);
    }
    let mut keys = changes.virtual_servers.clone();
    keys.extend(drains.services());
    let mut out = Plan::default();
    plan_virtual_servers(desired, observed, policy, drains, now, &keys, &mut out);
    // A Service whose last draining real server went away frees its VIP now.
    let mut addrs = changes.addresses.clone();
    addrs.extend(out.ipvs.iter().filter_map(|op| match op {
        Op::DeleteService(ServiceKey::Addr { addr, .. }) => Some(*addr),
        _ => None,
    }));
    plan_addresses(desired, observed, policy, &addrs, &mut out);
    match &observed.filter {
        None => plan_filter_fresh(&desired.filter, &mut out.filter),
        Some(f) => {
            if changes.filter_globals && globals_differ(&desired.filter, f) {
                out.filter.push(globals_op(&desired.filter));
            }
            for e in &changes.filter_entries {
                match (desired.filter.entries.contains(e), f.entries.contains(e)) {
                    (true, false) => out.filter.push(FilterOp::Add(e.clone())),
                    (false, true) => out.filter.push(FilterOp::Remove(e.clone())),
                    _ => {}
                }
            }
        }
    }
    out
}

/// True when an observed real server has the desired configuration. The
/// kernel turns masquerading to a local address into `LOCALNODE` forwarding
/// (`__ip_vs_update_dest`), e.g. for a host-network endpoint on this node;
/// that is what we asked for, not a difference to correct.
pub fn real_server_matches(desired: &RealServer, observed: &RealServer) -> bool {
    if desired.forward == ForwardMethod::Masquerade && observed.forward == ForwardMethod::Local {
        let mut o = observed.clone();
        o.forward = ForwardMethod::Masquerade;
        return desired.same_config(&o);
    }
    desired.same_config(observed)
}

fn drain_protocol(key: &ServiceKey) -> Protocol {
    match key {
        ServiceKey::Addr { protocol, .. } => *protocol,
        // Unknown marks are treated like TCP: draining is the safe choice.
        ServiceKey::Fwmark { mark, .. } => {
            crate::fwmark::protocol_of(*mark).unwrap_or(Protocol::Tcp)
        }
    }
}

/// Decides for one undesired real server: `true` when it is deleted now.
fn drain_or_delete(
    key: &ServiceKey,
    rs: &RealServer,
    policy: &PlanPolicy,
    drains: &mut DrainBook,
    now: Instant,
    out: &mut Plan,
) -> bool {
    let protocol = drain_protocol(key);
    let idle = u64::from(rs.conns.active) + u64::from(rs.conns.inactive) == 0;
    let expired = drains
        .started(key, &rs.key)
        .is_some_and(|t| now.saturating_duration_since(t) >= policy.drain_period);
    if protocol == Protocol::Udp || idle || expired {
        drains.started.remove(&(*key, rs.key));
        return true;
    }
    if rs.weight != 0 {
        let mut quiesced = rs.clone();
        quiesced.weight = 0;
        quiesced.conns = Default::default();
        quiesced.stats = None;
        out.ipvs.push(Op::EditRealServer(*key, quiesced));
        if !drains.started.contains_key(&(*key, rs.key)) {
            out.drains_started.push((*key, rs.key));
        }
    }
    drains.started.entry((*key, rs.key)).or_insert(now);
    out.still_draining += 1;
    false
}

fn plan_virtual_servers(
    desired: &DesiredState,
    observed: &Observed,
    policy: &PlanPolicy,
    drains: &mut DrainBook,
    now: Instant,
    keys: &BTreeSet<ServiceKey>,
    out: &mut Plan,
) {
    for key in keys {
        match (
            desired.virtual_servers.get(key),
            observed.virtual_servers.get(key),
        ) {
            (Some(d), None) => {
                out.ipvs.push(Op::AddService(d.server.clone()));
                for rs in d.real_servers.iter() {
                    drains.started.remove(&(*key, rs.key));
                    out.ipvs.push(Op::AddRealServer(*key, rs.to_real_server()));
                }
            }
            (Some(d), Some(o)) => {
                // Drains of real servers that vanished from the kernel.
                drains.prune(key, |r| o.real_servers.contains_key(r));
                if !d.server.same_config(&o.server) {
                    out.ipvs.push(Op::EditService(d.server.clone()));
                }
                for rs in d.real_servers.iter() {
                    drains.started.remove(&(*key, rs.key));
                    match o.real_servers.get(&rs.key) {
                        None => out.ipvs.push(Op::AddRealServer(*key, rs.to_real_server())),
                        Some(ors) if !rs.matches(ors) => {
                            out.ipvs.push(Op::EditRealServer(*key, rs.to_real_server()))
                        }
                        Some(_) => {}
                    }
                }
                for ors in o.real_servers.values() {
                    if d.real_servers.contains_key(&ors.key) {
                        continue;
                    }
                    if drain_or_delete(key, ors, policy, drains, now, out) {
                        out.ipvs.push(Op::DeleteRealServer(*key, ors.key));
                    }
                }
            }
            (None, Some(o)) => {
                if !policy.owns(key, observed) {
                    drains.prune(key, |_| false);
                    continue;
                }
                drains.prune(key, |r| o.real_servers.contains_key(r));
                let mut deletes = Vec::new();
                let mut remaining = 0usize;
                for ors in o.real_servers.values() {
                    if drain_or_delete(key, ors, policy, drains, now, out) {
                        deletes.push(ors.key);
                    } else {
                        remaining += 1;
                    }
                }
                if remaining == 0 {
                    // Deleting the service removes its real servers with it.
                    out.ipvs.push(Op::DeleteService(*key));
                } else {
                    out.ipvs
                        .extend(deletes.into_iter().map(|r| Op::DeleteRealServer(*key, r)));
                }
            }
            (None, None) => drains.prune(key, |_| false),
        }
    }
}

/// True when an observed virtual server on `addr` survives the plan
/// (draining deleted services keep their VIP bound). Range lookups keep this
/// O(log n) per address.
fn still_used(observed: &Observed, deleted: &BTreeSet<ServiceKey>, addr: &IpAddr) -> bool {
    [Protocol::Tcp, Protocol::Udp, Protocol::Sctp]
        .into_iter()
        .any(|protocol| {
            let lo = ServiceKey::Addr {
                protocol,
                addr: *addr,
                port: 0,
            };
            let hi = ServiceKey::Addr {
                protocol,
                addr: *addr,
                port: u16::MAX,
            };
            observed
                .virtual_servers
                .range(lo..=hi)
                .any(|(k, _)| !deleted.contains(k))
        })
}

fn plan_addresses(
    desired: &DesiredState,
    observed: &Observed,
    policy: &PlanPolicy,
    addrs: &BTreeSet<IpAddr>,
    out: &mut Plan,
) {
    let deleted: BTreeSet<ServiceKey> = out
        .ipvs
        .iter()
        .filter_map(|op| match op {
            Op::DeleteService(k) => Some(*k),
            _ => None,
        })
        .collect();
    for addr in addrs {
        match (
            desired.addresses.contains(addr),
            observed.addresses.contains(addr),
        ) {
            (true, false) => out.bind.push(*addr),
            (false, true) if !policy.excluded(addr) && !still_used(observed, &deleted, addr) => {
                out.unbind.push(*addr);
            }
            _ => {}
        }
    }
}

fn globals_differ(a: &FilterFacts, b: &FilterFacts) -> bool {
    a.local_detect != b.local_detect
        || a.masquerade_all != b.masquerade_all
        || a.node_port_addresses != b.node_port_addresses
}

fn globals_op(f: &FilterFacts) -> FilterOp {
    FilterOp::SetGlobals {
        local_detect: f.local_detect.clone(),
        masquerade_all: f.masquerade_all,
        node_port_addresses: f.node_port_addresses.clone(),
    }
}

fn plan_filter_fresh(desired: &FilterFacts, out: &mut Vec<FilterOp>) {
    out.push(globals_op(desired));
    out.extend(desired.entries.iter().cloned().map(FilterOp::Add));
}

fn plan_filter_full(desired: &FilterFacts, observed: &FilterFacts, out: &mut Vec<FilterOp>) {
    if globals_differ(desired, observed) {
        out.push(globals_op(desired));
    }
    out.extend(
        observed
            .entries
            .difference(&desired.entries)
            .cloned()
            .map(FilterOp::Remove),
    );
    out.extend(
        desired
            .entries
            .difference(&observed.entries)
            .cloned()
            .map(FilterOp::Add),
    );
}

/// A plan operation a kernel would refuse, found by [`Observed::apply`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// `AddService` for a key that exists (kernel: EEXIST).
    #[error("virtual server {0} already exists")]
    ServiceExists(ServiceKey),
    /// An operation on a virtual server that does not exist (kernel: ESRCH).
    #[error("virtual server {0} does not exist")]
    NoSuchService(ServiceKey),
    /// `AddRealServer` for a real server that exists (kernel: EEXIST).
    #[error("real server {1:?} of {0} already exists")]
    RealServerExists(ServiceKey, RealServerKey),
    /// An operation on a real server that does not exist (kernel: ENOENT).
    #[error("real server {1:?} of {0} does not exist")]
    NoSuchRealServer(ServiceKey, RealServerKey),
    /// Binding a bound address or unbinding an unbound one.
    #[error("address {0} is already in that state")]
    Address(IpAddr),
    /// Adding a present filter entry or removing an absent one.
    #[error("filter entry {0:?} is already in that state")]
    Filter(Box<FilterEntry>),
    /// An operation the planner never emits.
    #[error("unexpected operation {0:?}")]
    Unexpected(Box<Op>),
}

impl Observed {
    /// Applies a plan to this model of the node, refusing what the kernel
    /// would refuse. Used by tests and by fakes of the kernel side.
    pub fn apply(&mut self, plan: &Plan) -> Result<(), ModelError> {
        for a in &plan.bind {
            if !self.addresses.insert(*a) {
                return Err(ModelError::Address(*a));
            }
        }
        for op in &plan.ipvs {
            self.apply_ipvs(op)?;
        }
        for f in &plan.filter {
            self.filter
                .get_or_insert_with(FilterFacts::default)
                .apply(f)?;
        }
        for a in &plan.unbind {
            if !self.addresses.remove(a) {
                return Err(ModelError::Address(*a));
            }
        }
        Ok(())
    }

    fn apply_ipvs(&mut self, op: &Op) -> Result<(), ModelError> {
        match op {
            Op::AddService(vs) => {
                if self.virtual_servers.contains_key(&vs.key) {
                    return Err(ModelError::ServiceExists(vs.key));
                }
                self.virtual_servers.insert(
                    vs.key,
                    ObservedVirtualServer {
                        server: vs.clone(),
                        real_servers: BTreeMap::new(),
                    },
                );
            }
            Op::EditService(vs) => {
                let o = self
                    .virtual_servers
                    .get_mut(&vs.key)
                    .ok_or(ModelError::NoSuchService(vs.key))?;
                o.server = vs.clone();
            }
            Op::DeleteService(k) => {
                self.virtual_servers
                    .remove(k)
                    .ok_or(ModelError::NoSuchService(*k))?;
            }
            Op::AddRealServer(k, rs) => {
                let o = self
                    .virtual_servers
                    .get_mut(k)
                    .ok_or(ModelError::NoSuchService(*k))?;
                if o.real_servers.insert(rs.key, rs.clone()).is_some() {
                    return Err(ModelError::RealServerExists(*k, rs.key));
                }
            }
            Op::EditRealServer(k, rs) => {
                let o = self
                    .virtual_servers
                    .get_mut(k)
                    .ok_or(ModelError::NoSuchService(*k))?;
                let cur = o
                    .real_servers
                    .get_mut(&rs.key)
                    .ok_or(ModelError::NoSuchRealServer(*k, rs.key))?;
                // The kernel keeps counters across edits.
                let conns = cur.conns;
                *cur = rs.clone();
                cur.conns = conns;
            }
            Op::DeleteRealServer(k, r) => {
                let o = self
                    .virtual_servers
                    .get_mut(k)
                    .ok_or(ModelError::NoSuchService(*k))?;
                o.real_servers
                    .remove(r)
                    .ok_or(ModelError::NoSuchRealServer(*k, *r))?;
            }
            other => return Err(ModelError::Unexpected(Box::new(other.clone()))),
        }
        Ok(())
    }

    /// True when what is ours equals `desired`: every desired virtual server
    /// and real server present with the same configuration (read-only
    /// fields ignored), no other virtual server or real server of ours, the
    /// same addresses and filter facts.
    pub fn converged(&self, desired: &DesiredState, policy: &PlanPolicy) -> bool {
        for (k, d) in &desired.virtual_servers {
            let Some(o) = self.virtual_servers.get(k) else {
                return false;
            };
            if !d.server.same_config(&o.server) || d.real_servers.len() != o.real_servers.len() {
                return false;
            }
            for rs in &d.real_servers {
                match o.real_servers.get(&rs.key) {
                    Some(ors) if rs.matches(ors) => {}
                    _ => return false,
                }
            }
        }
        let extra = self
            .virtual_servers
            .keys()
            .any(|k| !desired.virtual_servers.contains_key(k) && policy.owns(k, self));
        let addrs_ok = self
            .addresses
            .iter()
            .filter(|a| !policy.excluded(a))
            .eq(desired.addresses.iter().filter(|a| !policy.excluded(a)));
        !extra && addrs_ok && self.filter.as_ref() == Some(&desired.filter)
    }
}
