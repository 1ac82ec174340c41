//! The incremental engine: Service and EndpointSlice events in, desired state
//! out. Each event recomputes only the Service it concerns.

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

mod claims;
mod names;
mod oracle;
mod sort_keys;
#[cfg(test)]
mod tests;

use claims::Claims;
use names::{slice_id, NameKey, SliceId};
pub use oracle::desired_from_scratch;
use sort_keys::{entry_key, filter_short_key, sort_by_short_key, v4_short, vs_short_key, EntryKey};

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

impl FilterFacts {
    /// True when the facts hold no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
