//! The incremental engine: Service and EndpointSlice events in, desired state
//! out. Each event recomputes only the Service it concerns.

use std::collections::BTreeMap;

/// The engine's indexes hash Service names, keys and filter entries many
/// times per event: foldhash (randomly seeded per process) instead of
/// SipHash. The keys come from the API server, not from packets.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
use std::net::IpAddr;
use std::sync::Arc;

use ipvs::ServiceKey;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::config::{Config, NodeFacts};
use crate::model::{
    DesiredState, FilterEntry, FilterFacts, HairpinFact, HealthCheckFact, ServiceName,
};
use crate::parse::{
    new_name, parse_service, parse_slice, ParsedService, ParsedSlice, Rank, ServiceParse,
};
use crate::plan::{Changes, PlanPolicy};
use crate::reject::{ObjectKind, ObjectRef, RejectReason, Rejection};
use crate::translate::{compute, Contribution, Ctx, PortClaim};
use crate::vecmap::VecMap;

/// A slice's namespace and name; the name is shared with the Service's map
/// of slices (one allocation per slice name).
type SliceId = (String, Arc<str>);

fn slice_id(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> SliceId {
    (
        meta.namespace.clone().unwrap_or_default(),
        Arc::from(meta.name.as_deref().unwrap_or("")),
    )
}

/// A Service name as a lookup key, so that the indexes keyed by
/// `Arc<ServiceName>` can be searched with borrowed strings (no
/// `ServiceName` built per lookup). Hashes and compares exactly as
/// `ServiceName` does (namespace, then name), as `Borrow` requires.
trait NameKey {
    fn parts(&self) -> (&str, &str);
}

impl NameKey for (&str, &str) {
    fn parts(&self) -> (&str, &str) {
        (self.0, self.1)
    }
}

impl NameKey for ServiceName {
    fn parts(&self) -> (&str, &str) {
        (&self.namespace, &self.name)
    }
}

impl<'a> std::borrow::Borrow<dyn NameKey + 'a> for Arc<ServiceName> {
    fn borrow(&self) -> &(dyn NameKey + 'a) {
        &**self
    }
}

impl std::hash::Hash for dyn NameKey + '_ {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        let (namespace, name) = self.parts();
        namespace.hash(h);
        name.hash(h);
    }
}

impl PartialEq for dyn NameKey + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn NameKey + '_ {}

/// Claims of several Services on one key; the smallest rank wins. Almost
/// every key has one claimant, held in place (no allocation); the others,
/// if any, in a sorted vector.
#[derive(Debug)]
struct Claims<K, V> {
    by_key: HashMap<K, Claimants<V>>,
}

/// The claimants of one key, by rank: `head` has the smallest.
#[derive(Debug)]
struct Claimants<V> {
    head: (Rank, V),
    tail: Vec<(Rank, V)>,
}

impl<V> Claimants<V> {
    /// Sets (or with `None` withdraws) `rank`'s claim; `true` when no
    /// claimant is left.
    fn set(&mut self, rank: &Rank, v: Option<V>) -> bool {
        if *rank == self.head.0 {
            match v {
                Some(v) => self.head.1 = v,
                None if self.tail.is_empty() => return true,
                None => self.head = self.tail.remove(0),
            }
        } else if *rank < self.head.0 {
            if let Some(v) = v {
                let old = std::mem::replace(&mut self.head, (rank.clone(), v));
                self.tail.insert(0, old);
            }
        } else {
            match (v, self.tail.binary_search_by(|(r, _)| r.cmp(rank))) {
                (Some(v), Ok(i)) => self.tail[i].1 = v,
                (Some(v), Err(i)) => self.tail.insert(i, (rank.clone(), v)),
                (None, Ok(i)) => {
                    self.tail.remove(i);
                }
                (None, Err(_)) => {}
            }
        }
        false
    }
}

impl<K, V> Default for Claims<K, V> {
    fn default() -> Self {
        Claims {
            by_key: HashMap::default(),
        }
    }
}

impl<K: std::hash::Hash + Eq + Copy, V: Clone + PartialEq> Claims<K, V> {
    /// Sets (or with `None` withdraws) `rank`'s claim on `k`; returns the
    /// winner before and after when it changed.
    #[allow(clippy::type_complexity)]
    fn set(&mut self, k: K, rank: &Rank, v: Option<V>) -> Option<(Option<V>, Option<V>)> {
        use std::collections::hash_map::Entry;
        match self.by_key.entry(k) {
            Entry::Vacant(e) => {
                let v = v?;
                e.insert(Claimants {
                    head: (rank.clone(), v.clone()),
                    tail: Vec::new(),
                });
                Some((None, Some(v)))
            }
            Entry::Occupied(mut e) => {
                let before = e.get().head.1.clone();
                let after = if e.get_mut().set(rank, v) {
                    e.remove();
                    None
                } else {
                    Some(e.get().head.1.clone())
                };
                (Some(&before) != after.as_ref()).then_some((Some(before), after))
            }
        }
    }

    /// The winner's claim on each key.
    fn winners(&self) -> impl Iterator<Item = (&K, &V)> {
        self.by_key.iter().map(|(k, c)| (k, &c.head.1))
    }

    fn losers(&self) -> impl Iterator<Item = (&K, &Rank, &Rank)> {
        self.by_key
            .iter()
            .flat_map(|(k, c)| c.tail.iter().map(move |(r, _)| (k, r, &c.head.0)))
    }
}

/// A sort key for [`FilterEntry`]: `entry_key(a) < entry_key(b)` implies
/// `a < b` for every entry the engine makes (protocols TCP, UDP and SCTP).
/// The keys (here and in [`filter_short_key`]) only make the sort cheap (integers
/// instead of the derived comparison of enums): the `BTreeSet` built from the
/// sorted entries sorts its input again (stable, linear when already sorted),
/// which settles ties and any other protocol.
type EntryKey = (u128, u64);

fn entry_key(e: &FilterEntry) -> EntryKey {
    let proto = |p: ipvs::Protocol| -> u128 {
        match p {
            ipvs::Protocol::Tcp => 0,
            ipvs::Protocol::Udp => 1,
            ipvs::Protocol::Sctp => 2,
            _ => 3,
        }
    };
    // Variant (2 bits), protocol (2), family (1), then the address and port.
    let addr_port = |disc: u128, p: ipvs::Protocol, a: &IpAddr, port: u16| -> EntryKey {
        let head = (disc << 126) | (proto(p) << 124);
        match a {
            IpAddr::V4(v) => (head | (u128::from(v.to_bits()) << 16) | u128::from(port), 0),
            IpAddr::V6(v) => {
                let bits = v.to_bits();
                (
                    head | (1 << 123) | (bits >> 5),
                    (u64::try_from(bits & 31).unwrap_or(0) << 16) | u64::from(port),
                )
            }
        }
    };
    match e {
        FilterEntry::ServicePort(f) => addr_port(0, f.protocol, &f.addr, f.port),
        FilterEntry::NodePort(f) => (
            (1 << 126) | (proto(f.protocol) << 124) | u128::from(f.port),
            0,
        ),
        FilterEntry::Hairpin(f) => addr_port(2, f.protocol, &f.addr, f.port),
        FilterEntry::HealthCheck(f) => ((3 << 126) | u128::from(f.port), 0),
    }
}

/// Sorts `v` by `key` when every element has one (`true`), as plain
/// integers: key and index packed into one `u128`. Leaves `v` unsorted and
/// returns `false` as soon as one element has no key.
fn sort_by_short_key<T: Copy>(v: &mut [T], key: impl Fn(&T) -> Option<u64>) -> bool {
    let mut keys = Vec::with_capacity(v.len());
    for (i, x) in v.iter().enumerate() {
        let Some(k) = key(x) else {
            return false;
        };
        keys.push((u128::from(k) << 64) | i as u128);
    }
    keys.sort_unstable();
    let sorted: Vec<T> = keys.iter().map(|k| v[*k as u64 as usize]).collect();
    v.copy_from_slice(&sorted);
    true
}

fn protocol_short(p: ipvs::Protocol) -> Option<u64> {
    match p {
        ipvs::Protocol::Tcp => Some(0),
        ipvs::Protocol::Udp => Some(1),
        ipvs::Protocol::Sctp => Some(2),
        _ => None,
    }
}

/// Variant, protocol, IPv4 address, port in 64 bits, in that order.
fn v4_short(disc: u64, p: ipvs::Protocol, a: &IpAddr, port: u16) -> Option<u64> {
    match a {
        IpAddr::V4(v) => Some(
            (disc << 62)
                | (protocol_short(p)? << 60)
                | (u64::from(v.to_bits()) << 16)
                | u64::from(port),
        ),
        IpAddr::V6(_) => None,
    }
}

/// A 64-bit key that orders IPv4 and node-port [`FilterEntry`]s as the
/// derived `Ord` does (variant, protocol, then address and port); `None`
/// for the others (IPv6).
fn filter_short_key(e: &FilterEntry) -> Option<u64> {
    Some(match e {
        FilterEntry::ServicePort(f) => v4_short(0, f.protocol, &f.addr, f.port)?,
        FilterEntry::NodePort(f) => {
            (1 << 62)
                | (protocol_short(f.protocol)? << 60)
                | (u64::from(f.port) << 1)
                | u64::from(f.family == crate::config::IpFamily::V6)
        }
        FilterEntry::Hairpin(f) => v4_short(2, f.protocol, &f.addr, f.port)?,
        FilterEntry::HealthCheck(f) => (3 << 62) | u64::from(f.port),
    })
}

/// A 64-bit key that orders IPv4 address [`ServiceKey`]s as the derived
/// `Ord` does; `None` for the others (IPv6, firewall marks).
fn vs_short_key(k: &ServiceKey) -> Option<u64> {
    match k {
        ServiceKey::Addr {
            protocol,
            addr,
            port,
        } => v4_short(0, *protocol, addr, *port),
        _ => None,
    }
}

/// Everything the proxy knows, with the desired state kept up to date
/// incrementally. Feed it events; read [`ProxyState::desired`]; take
/// [`ProxyState::take_changes`] for [`crate::plan_changes`].
#[derive(Debug)]
pub struct ProxyState {
    ctx: Ctx,
    // Names are shared (`Arc`): one allocation per Service name, however
    // many indexes hold it.
    // Boxed as parsed: the table stays small (16 bytes a slot) and a parsed
    // Service is never moved.
    services: HashMap<Arc<ServiceName>, Box<ParsedService>>,
    service_rejections: HashMap<ServiceName, Vec<Rejection>>,
    slices: HashMap<Arc<ServiceName>, VecMap<Arc<str>, ParsedSlice>>,
    slice_service: HashMap<SliceId, Arc<ServiceName>>,
    slice_rejections: HashMap<SliceId, Vec<Rejection>>,
    contributions: HashMap<Arc<ServiceName>, (Rank, Contribution)>,
    vs_claims: Claims<ServiceKey, Arc<PortClaim>>,
    hc_claims: Claims<u16, HealthCheckFact>,
    address_refs: HashMap<IpAddr, u32>,
    filter_refs: HashMap<FilterEntry, u32>,
    /// The hairpin entries' counts apart: most filter entries are
    /// hairpins, and a `HairpinFact` is a third of a `FilterEntry`.
    hairpin_refs: HashMap<HairpinFact, u32>,
    desired: DesiredState,
    changes: Changes,
    /// Keys on node addresses we programmed and dropped (see
    /// [`PlanPolicy::also_owned`]).
    retired_node_keys: std::collections::BTreeSet<ServiceKey>,
    /// Sums of [`Contribution::no_local_internal`] / `no_local_external`.
    no_local: (usize, usize),
    /// During a cold [`ProxyState::replace_all`]: the reference counts and
    /// claims are kept, but the sorted sets and maps of `desired` are built
    /// once at the end (a sort and a bulk build instead of one B-tree
    /// insert per entry).
    bulk: bool,
}

impl ProxyState {
    /// An empty state for this configuration and node.
    pub fn new(config: Config, node: NodeFacts) -> Self {
        let ctx = Ctx::new(config, node);
        let mut s = ProxyState {
            ctx,
            services: HashMap::default(),
            service_rejections: HashMap::default(),
            slices: HashMap::default(),
            slice_service: HashMap::default(),
            slice_rejections: HashMap::default(),
            contributions: HashMap::default(),
            vs_claims: Claims::default(),
            hc_claims: Claims::default(),
            address_refs: HashMap::default(),
            filter_refs: HashMap::default(),
            hairpin_refs: HashMap::default(),
            desired: DesiredState::default(),
            changes: Changes::default(),
            retired_node_keys: Default::default(),
            no_local: (0, 0),
            bulk: false,
        };
        s.set_filter_globals();
        s
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.ctx.config
    }

    /// The node facts in use.
    pub fn node(&self) -> &NodeFacts {
        &self.ctx.node
    }

    /// The ownership and drain policy for [`crate::plan()`].
    pub fn policy(&self) -> PlanPolicy {
        let mut p = PlanPolicy::new(&self.ctx.config, &self.ctx.node);
        p.also_owned.clone_from(&self.retired_node_keys);
        p
    }

    /// The desired node state.
    pub fn desired(&self) -> &DesiredState {
        &self.desired
    }

    /// Service ports with `internalTrafficPolicy: Local` whose endpoints are
    /// all on other nodes: their ClusterIPs forward nothing here. Counted as
    /// kube-proxy counts `kubeproxy_sync_proxy_rules_no_local_endpoints_total
    /// {traffic_policy="internal"}`: once per Service port and IP family,
    /// only when the port has usable (ready, or serving and terminating)
    /// endpoints somewhere. Kept up to date per event; O(1).
    pub fn no_local_endpoints_internal(&self) -> usize {
        self.no_local.0
    }

    /// Service ports with `externalTrafficPolicy: Local` and an external
    /// address (node port, externalIP or load-balancer IP) whose endpoints
    /// are all on other nodes: external traffic is dropped here. Same rule
    /// as [`ProxyState::no_local_endpoints_internal`] (kube-proxy's
    /// `traffic_policy="external"`). O(1).
    pub fn no_local_endpoints_external(&self) -> usize {
        self.no_local.1
    }

    /// What changed in the desired state since the last call.
    pub fn take_changes(&mut self) -> Changes {
        std::mem::take(&mut self.changes)
    }

    fn set_filter_globals(&mut self) {
        let f = &mut self.desired.filter;
        let before = (
            f.local_detect.clone(),
            f.masquerade_all,
            f.node_port_addresses.clone(),
        );
        f.local_detect = self.ctx.config.local_detect.clone();
        f.masquerade_all = self.ctx.config.masquerade_all;
        f.node_port_addresses = self.ctx.node_port_addrs.clone();
        if before
            != (
                f.local_detect.clone(),
                f.masquerade_all,
                f.node_port_addresses.clone(),
            )
        {
            self.changes.filter_globals = true;
        }
    }

    /// Replaces the node facts (labels, addresses); recomputes every Service.
    /// The node name is fixed at construction: a different `name` is ignored.
    pub fn set_node(&mut self, mut node: NodeFacts) {
        node.name.clone_from(&self.ctx.node.name);
        if node == self.ctx.node {
            return;
        }
        self.ctx = Ctx::new(self.ctx.config.clone(), node);
        self.recompute_all();
    }

    /// Replaces the configuration and recomputes every Service (changed
    /// [`crate::Limits`] apply to objects received afterwards).
    pub fn set_config(&mut self, config: Config) {
        if config == self.ctx.config {
            return;
        }
        // Parsed objects do not depend on the configuration except for
        // `limits`: new limits apply to objects received from now on.
        self.ctx = Ctx::new(config, self.ctx.node.clone());
        self.recompute_all();
    }

    fn recompute_all(&mut self) {
        self.set_filter_globals();
        let mut names: Vec<Arc<ServiceName>> = self.services.keys().cloned().collect();
        names.extend(self.contributions.keys().cloned());
        names.sort();
        names.dedup();
        for n in names {
            self.recompute(&n);
        }
    }

    /// The shared name of a Service this state already knows, or a new one.
    fn name(&self, namespace: &str, name: &str) -> Arc<ServiceName> {
        let k: &dyn NameKey = &(namespace, name);
        let known = match self.slices.get_key_value(k) {
            Some((n, _)) => Some(n),
            None => self.services.get_key_value(k).map(|(n, _)| n),
        };
        match known {
            Some(n) => Arc::clone(n),
            None => new_name(namespace, name),
        }
    }

    /// Adds or updates a Service.
    pub fn apply_service(&mut self, svc: &Service) {
        let mut rejections = Vec::new();
        let parsed = parse_service(
            svc,
            &self.ctx.config,
            &|ns, n| self.name(ns, n),
            &mut rejections,
        );
        let name: Arc<ServiceName> = match (&parsed, &svc.metadata.namespace, &svc.metadata.name) {
            (ServiceParse::Proxied(p), _, _) => Arc::clone(&p.name),
            (_, Some(ns), Some(n)) => Arc::new(ServiceName::new(ns.as_str(), n.as_str())),
            _ => {
                // Nameless objects cannot be tracked; record and stop.
                self.service_rejections
                    .insert(ServiceName::new("", ""), rejections);
                return;
            }
        };
        if !rejections.is_empty() {
            self.service_rejections
                .insert(ServiceName::clone(&name), rejections);
        } else if !self.service_rejections.is_empty() {
            self.service_rejections.remove(&*name);
        }
        match parsed {
            ServiceParse::Proxied(p) => match self.services.entry(Arc::clone(&name)) {
                std::collections::hash_map::Entry::Occupied(mut e) => {
                    if *e.get() == p {
                        return;
                    }
                    e.insert(p);
                }
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(p);
                }
            },
            ServiceParse::Ignored | ServiceParse::Rejected => {
                if self.services.remove(&*name).is_none() {
                    return;
                }
            }
        }
        self.recompute(&name);
    }

    /// Deletes a Service.
    pub fn delete_service(&mut self, namespace: &str, name: &str) {
        let n = ServiceName::new(namespace, name);
        self.service_rejections.remove(&n);
        if self.services.remove(&n).is_some() {
            self.recompute(&n);
        }
    }

    /// Adds or updates an EndpointSlice.
    pub fn apply_slice(&mut self, slice: &EndpointSlice) {
        let mut rejections = Vec::new();
        let parsed = parse_slice(
            slice,
            &self.ctx.config,
            &self.ctx.node.name,
            &|ns, n| self.name(ns, n),
            &mut rejections,
        );
        let id = slice_id(&slice.metadata);
        if !rejections.is_empty() {
            self.slice_rejections.insert(id.clone(), rejections);
        } else if !self.slice_rejections.is_empty() {
            self.slice_rejections.remove(&id);
        }
        match parsed {
            Some(p) => {
                let svc = p.service.clone();
                let name = Arc::clone(&id.1);
                // One lookup: the slice's Service is recorded first (the
                // same one again when nothing changed).
                if let Some(old) = self.slice_service.insert(id, svc.clone()) {
                    if old != svc {
                        self.remove_slice_from(&old, &name);
                        self.recompute(&old);
                    }
                }
                let entry = self.slices.entry(svc.clone()).or_default();
                if entry.get(&name) == Some(&p) {
                    return;
                }
                entry.insert(name, p);
                self.recompute(&svc);
            }
            None => self.forget_slice(&id),
        }
    }

    /// Deletes an EndpointSlice.
    pub fn delete_slice(&mut self, namespace: &str, name: &str) {
        let id: SliceId = (namespace.to_owned(), Arc::from(name));
        self.slice_rejections.remove(&id);
        self.forget_slice(&id);
    }

    fn forget_slice(&mut self, id: &SliceId) {
        if let Some(svc) = self.slice_service.remove(id) {
            self.remove_slice_from(&svc, &id.1);
            self.recompute(&svc);
        }
    }

    fn remove_slice_from(&mut self, svc: &ServiceName, slice: &str) {
        if let Some(m) = self.slices.get_mut(svc) {
            m.remove(slice);
            if m.is_empty() {
                self.slices.remove(svc);
            }
        }
    }

    /// Replaces everything with these objects (after a relist). Only the
    /// Services whose inputs changed are recomputed; slices are taken before
    /// Services so that a cold start computes each Service once.
    // Never inlined: profiles (callgrind `--toggle-collect`) measure it by name.
    #[inline(never)]
    pub fn replace_all<'a>(
        &mut self,
        services: impl IntoIterator<Item = &'a Service>,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
    ) {
        // Cold start: nothing can have gone away, no bookkeeping needed.
        let cold = self.services.is_empty()
            && self.slice_service.is_empty()
            && self.service_rejections.is_empty()
            && self.slice_rejections.is_empty()
            && self.contributions.is_empty();
        let slices = slices.into_iter();
        let services = services.into_iter();
        if cold {
            // The first plan after this is a full one: no keys to record.
            self.changes.full = true;
            self.bulk = true;
            // Sized once instead of grown (and rehashed) step by step.
            let n_slices = slices.size_hint().0;
            let n_services = services.size_hint().0;
            self.slice_service.reserve(n_slices);
            self.slices.reserve(n_slices.min(n_services.max(1)));
            self.services.reserve(n_services);
            self.contributions.reserve(n_services);
            self.vs_claims.by_key.reserve(n_services);
            self.address_refs.reserve(n_services);
            for s in slices {
                self.apply_slice(s);
            }
            // One served-port entry per Service port, plus about one hairpin
            // entry per local endpoint.
            let local: usize = self
                .slices
                .values()
                .flat_map(|m| m.values())
                .map(|p| p.endpoints.iter().filter(|e| e.local).count())
                .sum();
            self.filter_refs.reserve(n_services);
            self.hairpin_refs.reserve(local);
            for s in services {
                self.apply_service(s);
            }
            self.finish_bulk();
            return;
        }
        let mut seen_slices = std::collections::HashSet::new();
        for s in slices {
            seen_slices.insert(slice_id(&s.metadata));
            self.apply_slice(s);
        }
        let gone: Vec<SliceId> = self
            .slice_service
            .keys()
            .chain(self.slice_rejections.keys())
            .filter(|id| !seen_slices.contains(*id))
            .cloned()
            .collect();
        for id in gone {
            self.delete_slice(&id.0, &id.1);
        }
        let mut seen_svc = std::collections::HashSet::new();
        for s in services {
            if let (Some(ns), Some(n)) = (&s.metadata.namespace, &s.metadata.name) {
                seen_svc.insert(ServiceName::new(ns.as_str(), n.as_str()));
            }
            self.apply_service(s);
        }
        let gone: Vec<ServiceName> = self
            .services
            .keys()
            .map(|n| &**n)
            .chain(self.service_rejections.keys())
            .filter(|n| !seen_svc.contains(*n))
            .cloned()
            .collect();
        for n in gone {
            self.delete_service(&n.namespace, &n.name);
        }
    }

    /// Ends bulk mode: builds `desired`'s virtual servers, addresses and
    /// filter entries from the winning claims and the reference counts
    /// (which are exactly what the incremental path keeps in them).
    fn finish_bulk(&mut self) {
        self.bulk = false;
        // Keys are sorted with references to the claims, so each (large)
        // virtual server is built once, in order, and moved only into the map.
        // Every key in the index has a claimant: sized once.
        let mut vs: Vec<(ServiceKey, &Arc<PortClaim>)> =
            Vec::with_capacity(self.vs_claims.by_key.len());
        vs.extend(self.vs_claims.winners().map(|(k, c)| (*k, c)));
        if !sort_by_short_key(&mut vs, |e| vs_short_key(&e.0)) {
            vs.sort_unstable_by_key(|e| e.0);
        }
        self.desired.virtual_servers = vs.into_iter().map(|(k, c)| (k, c.desired())).collect();
        let mut addrs: Vec<IpAddr> = self.address_refs.keys().copied().collect();
        addrs.sort_unstable();
        self.desired.addresses = addrs.into_iter().collect();
        // Filter entries: sorted by integer keys that order like the derived
        // `Ord` (see `entry_key`), moving references, not entries.
        let mut sorted: Vec<&FilterEntry> = self.filter_refs.keys().collect();
        if !sort_by_short_key(&mut sorted, |e| filter_short_key(e)) {
            let mut v: Vec<(EntryKey, &FilterEntry)> =
                sorted.iter().map(|e| (entry_key(e), *e)).collect();
            v.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)));
            sorted = v.into_iter().map(|(_, e)| e).collect();
        }
        // Hairpins sort among themselves and go between the node ports and
        // the health checks (the variants' order).
        let mut hairpins: Vec<HairpinFact> = self.hairpin_refs.keys().copied().collect();
        let hairpin_key = |h: &HairpinFact| v4_short(2, h.protocol, &h.addr, h.port);
        if !sort_by_short_key(&mut hairpins, hairpin_key) {
            hairpins.sort_unstable();
        }
        let split = sorted.partition_point(|e| {
            matches!(e, FilterEntry::ServicePort(_) | FilterEntry::NodePort(_))
        });
        self.desired.filter.entries = sorted[..split]
            .iter()
            .copied()
            .cloned()
            .chain(hairpins.into_iter().map(FilterEntry::Hairpin))
            .chain(sorted[split..].iter().copied().cloned())
            .collect();
    }

    /// Every standing rejection: per object, plus the losers of conflicts.
    pub fn rejections(&self) -> Vec<Rejection> {
        let mut out: Vec<Rejection> = self
            .service_rejections
            .values()
            .chain(self.slice_rejections.values())
            .flatten()
            .cloned()
            .collect();
        out.extend(
            self.contributions
                .values()
                .flat_map(|(_, c)| c.rejections.iter().cloned()),
        );
        let svc_ref = |r: &Rank| ObjectRef {
            kind: ObjectKind::Service,
            namespace: r.1.namespace.clone(),
            name: r.1.name.clone(),
        };
        for (k, loser, winner) in self.vs_claims.losers() {
            out.push(Rejection {
                object: svc_ref(loser),
                reason: RejectReason::DuplicateVirtualServer,
                whole_object: false,
                detail: format!("{k} is already served for {}", winner.1),
            });
        }
        for (k, loser, winner) in self.hc_claims.losers() {
            out.push(Rejection {
                object: svc_ref(loser),
                reason: RejectReason::DuplicateHealthCheckNodePort,
                whole_object: false,
                detail: format!("health-check node port {k} is already used by {}", winner.1),
            });
        }
        out.sort();
        out
    }

    /// Number of Services proxied.
    pub fn service_count(&self) -> usize {
        self.services.len()
    }

    /// The Service port that owns a virtual server, for `show`.
    pub fn owner_of(&self, key: &ServiceKey) -> Option<&crate::model::ServicePortName> {
        self.desired.virtual_servers.get(key).map(|v| &*v.owner)
    }

    fn recompute(&mut self, name: &ServiceName) {
        let (key, rank, new) = match self.services.get(name) {
            Some(svc) => (
                Some(Arc::clone(&svc.name)),
                svc.rank.clone(),
                compute(svc, self.slices.get(name), &self.ctx),
            ),
            None if self.contributions.contains_key(name) => (
                None,
                (None, Arc::new(name.clone())),
                Contribution::default(),
            ),
            None => return,
        };
        let (old_rank, old) = self
            .contributions
            .remove(name)
            .unwrap_or_else(|| (rank.clone(), Contribution::default()));
        // `old`'s counts were added when it was placed: no underflow.
        self.no_local.0 = (self.no_local.0 + new.no_local_internal as usize)
            .saturating_sub(old.no_local_internal as usize);
        self.no_local.1 = (self.no_local.1 + new.no_local_external as usize)
            .saturating_sub(old.no_local_external as usize);
        // Withdraw old claims that are gone or changed (under the old rank),
        // then place the new ones.
        let same_rank = old_rank == rank;
        for (k, c) in &old.claims {
            if !same_rank || new.claims.get(k) != Some(c) {
                if let Some((before, after)) = self.vs_claims.set(*k, &old_rank, None) {
                    self.swap_winner(*k, before, after);
                }
            }
        }
        for (k, c) in &new.claims {
            if !same_rank || old.claims.get(k) != Some(c) {
                if let Some((before, after)) = self.vs_claims.set(*k, &rank, Some(c.clone())) {
                    self.swap_winner(*k, before, after);
                }
            }
        }
        if old.health_check != new.health_check || !same_rank {
            if let Some(h) = &old.health_check {
                if let Some((b, a)) = self.hc_claims.set(h.port, &old_rank, None) {
                    self.swap_hc(b, a);
                }
            }
            if let Some(h) = &new.health_check {
                if let Some((b, a)) =
                    self.hc_claims
                        .set(h.port, &rank, Some(HealthCheckFact::clone(h)))
                {
                    self.swap_hc(b, a);
                }
            }
        }
        if let Some(key) = key {
            self.contributions.insert(key, (rank, new));
        }
    }

    fn swap_winner(
        &mut self,
        k: ServiceKey,
        before: Option<Arc<PortClaim>>,
        after: Option<Arc<PortClaim>>,
    ) {
        if !self.changes.full {
            self.changes.virtual_servers.insert(k);
        }
        if let Some(b) = before {
            if let Some(a) = b.bind {
                self.unref_address(a);
            }
            for h in b.hairpins.iter() {
                self.unref_hairpin(*h);
            }
            if let Some(e) = &b.fact {
                self.unref_filter(e);
            }
        }
        match after {
            Some(a) => {
                if let Some(ip) = a.bind {
                    self.ref_address(ip);
                }
                for h in a.hairpins.iter() {
                    self.ref_hairpin(*h);
                }
                if let Some(e) = &a.fact {
                    self.ref_filter(e);
                }
                if !self.bulk {
                    self.desired.virtual_servers.insert(k, a.desired());
                }
                self.retired_node_keys.remove(&k);
            }
            None => {
                if !self.bulk {
                    self.desired.virtual_servers.remove(&k);
                }
                if let ServiceKey::Addr { addr, .. } = k {
                    if self.ctx.node_addrs.contains(&addr) {
                        self.retired_node_keys.insert(k);
                    }
                }
            }
        }
    }

    fn swap_hc(&mut self, before: Option<HealthCheckFact>, after: Option<HealthCheckFact>) {
        if let Some(b) = before {
            self.unref_filter(&FilterEntry::HealthCheck(b));
        }
        if let Some(a) = after {
            self.ref_filter(&FilterEntry::HealthCheck(a));
        }
    }

    fn ref_address(&mut self, ip: IpAddr) {
        let n = self.address_refs.entry(ip).or_insert(0);
        *n += 1;
        if *n == 1 && !self.bulk {
            self.desired.addresses.insert(ip);
            if !self.changes.full {
                self.changes.addresses.insert(ip);
            }
        }
    }

    fn unref_address(&mut self, ip: IpAddr) {
        if let Some(n) = self.address_refs.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.address_refs.remove(&ip);
                if !self.bulk {
                    self.desired.addresses.remove(&ip);
                }
                if !self.changes.full {
                    self.changes.addresses.insert(ip);
                }
            }
        }
    }

    fn ref_filter(&mut self, e: &FilterEntry) {
        if let Some(n) = self.filter_refs.get_mut(e) {
            *n += 1;
            return;
        }
        self.filter_refs.insert(e.clone(), 1);
        self.filter_entry_placed(e);
    }

    /// A filter entry's first reference: into `desired` and the changes.
    fn filter_entry_placed(&mut self, e: &FilterEntry) {
        if !self.bulk {
            self.desired.filter.entries.insert(e.clone());
        }
        if !self.changes.full {
            self.changes.filter_entries.insert(e.clone());
        }
    }

    /// A filter entry's last reference is gone.
    fn filter_entry_withdrawn(&mut self, e: &FilterEntry) {
        if !self.bulk {
            self.desired.filter.entries.remove(e);
        }
        if !self.changes.full {
            self.changes.filter_entries.insert(e.clone());
        }
    }

    fn ref_hairpin(&mut self, h: HairpinFact) {
        let n = self.hairpin_refs.entry(h).or_insert(0);
        *n += 1;
        if *n == 1 {
            self.filter_entry_placed(&FilterEntry::Hairpin(h));
        }
    }

    fn unref_hairpin(&mut self, h: HairpinFact) {
        if let Some(n) = self.hairpin_refs.get_mut(&h) {
            *n -= 1;
            if *n == 0 {
                self.hairpin_refs.remove(&h);
                self.filter_entry_withdrawn(&FilterEntry::Hairpin(h));
            }
        }
    }

    fn unref_filter(&mut self, e: &FilterEntry) {
        if let Some(n) = self.filter_refs.get_mut(e) {
            *n -= 1;
            if *n == 0 {
                self.filter_refs.remove(e);
                self.filter_entry_withdrawn(e);
            }
        }
    }
}

/// Builds the desired state from scratch, without the incremental engine:
/// every Service is translated, each contested key goes to the smallest
/// rank, and addresses and filter entries are collected from the winners.
/// The reference the incremental engine is tested against; later objects
/// with the same namespace/name replace earlier ones.
pub fn desired_from_scratch<'a>(
    config: &Config,
    node: &NodeFacts,
    services: impl IntoIterator<Item = &'a Service>,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
) -> DesiredState {
    let ctx = Ctx::new(config.clone(), node.clone());
    let mut parsed: BTreeMap<ServiceName, Option<ParsedService>> = BTreeMap::new();
    for s in services {
        let (Some(ns), Some(n)) = (&s.metadata.namespace, &s.metadata.name) else {
            continue;
        };
        let p = match parse_service(s, config, &new_name, &mut Vec::new()) {
            ServiceParse::Proxied(p) => Some(*p),
            _ => None,
        };
        parsed.insert(ServiceName::new(ns.as_str(), n.as_str()), p);
    }
    let mut by_id: BTreeMap<SliceId, Option<ParsedSlice>> = BTreeMap::new();
    for s in slices {
        let id = slice_id(&s.metadata);
        by_id.insert(
            id,
            parse_slice(s, config, &node.name, &new_name, &mut Vec::new()),
        );
    }
    let mut grouped: HashMap<Arc<ServiceName>, VecMap<Arc<str>, ParsedSlice>> = HashMap::default();
    for ((_, name), p) in by_id {
        if let Some(p) = p {
            grouped
                .entry(p.service.clone())
                .or_default()
                .insert(name, p);
        }
    }
    let mut vs: BTreeMap<ServiceKey, (Rank, Arc<PortClaim>)> = BTreeMap::new();
    let mut hc: BTreeMap<u16, (Rank, HealthCheckFact)> = BTreeMap::new();
    for p in parsed.values().flatten() {
        let c = compute(p, grouped.get(&*p.name), &ctx);
        for (k, claim) in c.claims {
            match vs.get(&k) {
                Some((r, _)) if *r <= p.rank => {}
                _ => {
                    vs.insert(k, (p.rank.clone(), claim));
                }
            }
        }
        if let Some(h) = c.health_check {
            match hc.get(&h.port) {
                Some((r, _)) if *r <= p.rank => {}
                _ => {
                    hc.insert(h.port, (p.rank.clone(), *h));
                }
            }
        }
    }
    let mut out = DesiredState::default();
    out.filter.local_detect = config.local_detect.clone();
    out.filter.masquerade_all = config.masquerade_all;
    out.filter.node_port_addresses = ctx.node_port_addrs.clone();
    for (k, (_, claim)) in vs {
        out.virtual_servers.insert(k, claim.desired());
        out.addresses.extend(claim.bind);
        out.filter.entries.extend(claim.filter_entries());
    }
    out.filter
        .entries
        .extend(hc.into_values().map(|(_, h)| FilterEntry::HealthCheck(h)));
    out
}

impl FilterFacts {
    /// True when the facts hold no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::{Claims, NameKey, ProxyState};
    use crate::config::{Config, NodeFacts};
    use crate::model::ServiceName;
    use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::hash::BuildHasher;
    use std::sync::Arc;

    #[test]
    fn claims_go_to_the_smallest_rank_in_any_order() {
        let rank = |n: &str| (None, Arc::new(ServiceName::new("ns", n)));
        let (a, b, c) = (rank("a"), rank("b"), rank("c"));
        let mut m: Claims<u16, &str> = Claims::default();
        assert_eq!(m.set(1, &b, Some("b")), Some((None, Some("b"))));
        assert_eq!(m.set(1, &c, Some("c")), None);
        assert_eq!(m.set(1, &a, Some("a")), Some((Some("b"), Some("a"))));
        assert_eq!(m.set(1, &a, Some("a2")), Some((Some("a"), Some("a2"))));
        assert_eq!(m.set(1, &b, Some("b2")), None);
        let mut losers: Vec<&str> = m.losers().map(|(_, r, _)| r.1.name.as_str()).collect();
        losers.sort();
        assert_eq!(losers, ["b", "c"]);
        assert_eq!(m.set(1, &a, None), Some((Some("a2"), Some("b2"))));
        assert_eq!(m.set(1, &c, None), None);
        assert_eq!(m.set(1, &c, None), None);
        assert_eq!(m.set(1, &b, None), Some((Some("b2"), None)));
        assert!(m.by_key.is_empty());
        assert_eq!(m.set(1, &a, None), None);
        assert!(m.by_key.is_empty());
    }

    #[test]
    fn name_keys_hash_and_compare_as_service_names() {
        let s = foldhash::fast::RandomState::default();
        for (ns, n) in [("default", "web"), ("", ""), ("a", "bc"), ("ab", "c")] {
            let owned = Arc::new(ServiceName::new(ns, n));
            let borrowed: &dyn NameKey = &(ns, n);
            assert_eq!(s.hash_one(&owned), s.hash_one(borrowed), "{ns}/{n}");
            assert!(
                <Arc<ServiceName> as std::borrow::Borrow<dyn NameKey>>::borrow(&owned) == borrowed
            );
        }
        let ab_c: &dyn NameKey = &("ab", "c");
        let a_bc: &dyn NameKey = &("a", "bc");
        assert!(ab_c != a_bc);
    }

    #[test]
    fn a_service_and_its_slice_share_one_name() {
        let meta = |name: &str| ObjectMeta {
            namespace: Some("default".into()),
            name: Some(name.into()),
            ..Default::default()
        };
        let svc = Service {
            metadata: meta("web"),
            spec: Some(ServiceSpec {
                cluster_ips: Some(vec!["10.96.0.10".into()]),
                ports: Some(vec![ServicePort {
                    port: 80,
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            status: None,
        };
        let mut slice_meta = meta("web-1");
        slice_meta.labels = Some(
            [(crate::SERVICE_NAME_LABEL.to_string(), "web".to_string())]
                .into_iter()
                .collect(),
        );
        let slice = EndpointSlice {
            metadata: slice_meta,
            address_type: "IPv4".into(),
            endpoints: vec![Endpoint {
                addresses: vec!["10.0.0.1".into()],
                ..Default::default()
            }],
            ports: None,
        };
        let mut s = ProxyState::new(Config::default(), NodeFacts::default());
        s.apply_slice(&slice);
        s.apply_service(&svc);
        let k: &dyn NameKey = &("default", "web");
        let (a, _) = s.slices.get_key_value(k).expect("slice indexed");
        let (b, _) = s.services.get_key_value(k).expect("service indexed");
        assert!(Arc::ptr_eq(a, b));
    }
}
