//! One Service (+ its EndpointSlices) -> its share of the desired state.
//! Pure and proportional to the size of that Service.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use ipvs::{Protocol, ServiceKey, VirtualServer};

use crate::config::{Config, IpFamily, NodeFacts};
use crate::fwmark;
use crate::model::{
    DesiredRealServer, DesiredVirtualServer, FilterEntry, HairpinFact, HealthCheckFact, Masquerade,
    NodePortFact, RealServers, ServiceName, ServicePortFact, VipKind,
};
use crate::parse::{ParsedEndpoint, ParsedPort, ParsedService, ParsedSlice};
use crate::reject::{ObjectKind, ObjectRef, RejectReason, Rejection};
use crate::vecmap::VecMap;

/// Node-wide inputs of the translation, derived once from config and node.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    pub config: Config,
    pub node: NodeFacts,
    /// Node addresses serving NodePorts.
    pub node_port_addrs: BTreeSet<IpAddr>,
    /// Every node address (interfaces + primary IPs).
    pub node_addrs: BTreeSet<IpAddr>,
}

impl Ctx {
    pub fn new(config: Config, node: NodeFacts) -> Self {
        let node_port_addrs = config
            .node_port_addresses
            .select(&node)
            .into_iter()
            .filter(|a| config.families.contains(&IpFamily::of(a)))
            .collect();
        let node_addrs = node
            .addresses
            .iter()
            .chain(node.primary_ips.iter())
            .copied()
            .collect();
        Ctx {
            config,
            node,
            node_port_addrs,
            node_addrs,
        }
    }
}

/// One virtual server a Service wants, with what comes with it. The
/// virtual server itself is shared with the desired state while this claim
/// wins its key: the state holds no copy of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PortClaim {
    pub vs: Arc<DesiredVirtualServer>,
    /// The address to bind on the dummy interface, if any.
    pub bind: Option<IpAddr>,
    /// The filter entry of the served address:port, if any; it exists
    /// while this claim wins, as do the hairpin entries.
    pub fact: Option<FilterEntry>,
    /// The port's hairpin endpoints (the same for every claim of the port),
    /// sorted and unique.
    pub hairpins: Box<[HairpinFact]>,
}

impl PortClaim {
    /// The filter entries that exist while this claim wins.
    pub fn filter_entries(&self) -> impl Iterator<Item = FilterEntry> + '_ {
        self.hairpins
            .iter()
            .map(|h| FilterEntry::Hairpin(*h))
            .chain(self.fact.iter().cloned())
    }
}

impl PortClaim {
    /// The virtual server as the desired state holds it.
    pub fn desired(&self) -> Arc<DesiredVirtualServer> {
        Arc::clone(&self.vs)
    }
}

/// A Service's share of the desired state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Contribution {
    /// Shared with the claim index: one copy per claim.
    pub claims: VecMap<ServiceKey, Arc<PortClaim>>,
    /// Boxed: few Services have one, and the engine keeps one
    /// contribution per Service.
    pub health_check: Option<Box<HealthCheckFact>>,
    pub rejections: Vec<Rejection>,
    /// Service ports (per family) with `internalTrafficPolicy: Local`,
    /// endpoints somewhere, and none on this node.
    pub no_local_internal: u32,
    /// Service ports (per family) with `externalTrafficPolicy: Local`, an
    /// external address (node port, externalIP or load-balancer IP),
    /// endpoints somewhere, and none on this node.
    pub no_local_external: u32,
}

/// One endpoint of one Service port, as seen by that Service.
#[derive(Debug, Clone, Copy)]
struct Ep<'a> {
    addr: IpAddr,
    port: u16,
    ready: bool,
    serving: bool,
    terminating: bool,
    local: bool,
    /// Chosen for the cluster-wide set (see [`categorize`]).
    in_cluster: bool,
    /// Chosen for the node-local set (see [`categorize`]).
    in_local: bool,
    /// The parsed endpoint (for its topology hints).
    src: &'a ParsedEndpoint,
}

/// Which of a port's endpoint sets a virtual server gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pick {
    /// Cluster-wide (topology-filtered, with the terminating fallback).
    Cluster,
    /// This node's.
    Local,
}

impl Ep<'_> {
    fn picked(&self, pick: Pick) -> bool {
        match pick {
            Pick::Cluster => self.in_cluster,
            Pick::Local => self.in_local,
        }
    }

    fn score(&self) -> u8 {
        if self.ready {
            2
        } else if self.serving {
            1
        } else {
            0
        }
    }
}

/// The endpoints of one Service port in one family, merged over slices and
/// de-duplicated by address:port (the best condition wins; ties go to the
/// slice with the smallest name).
fn merged_endpoints<'a>(
    svc: &ParsedService,
    port: &ParsedPort,
    family: IpFamily,
    slices: &'a VecMap<Arc<str>, ParsedSlice>,
    ctx: &Ctx,
) -> Vec<Ep<'a>> {
    let mut eps: Vec<Ep<'_>> = Vec::with_capacity(
        slices
            .values()
            .filter(|s| s.family == family)
            .map(|s| s.endpoints.len())
            .sum(),
    );
    for slice in slices.values().filter(|s| s.family == family) {
        let Some(sp) = slice
            .ports
            .iter()
            .find(|sp| sp.name == port.name() && sp.protocol == port.protocol)
        else {
            continue;
        };
        for e in &slice.endpoints {
            let (ready, serving) = if svc.publish_not_ready {
                (true, true)
            } else {
                (e.ready, e.serving)
            };
            let cand = Ep {
                addr: e.addr,
                port: sp.port,
                ready,
                serving,
                terminating: e.terminating,
                local: e.local,
                in_cluster: false,
                in_local: false,
                src: e,
            };
            eps.push(cand);
        }
    }
    // By address:port, the best condition first; the sort is stable, so
    // among equal conditions the earliest (smallest slice name) stays first.
    // One slice listed in address order (the usual case) has nothing to
    // sort or merge: checked in one pass.
    if !eps.is_sorted_by(|a, b| (a.addr, a.port) < (b.addr, b.port)) {
        eps.sort_by(|a, b| {
            (a.addr, a.port)
                .cmp(&(b.addr, b.port))
                .then(b.score().cmp(&a.score()))
        });
        eps.dedup_by(|later, first| (later.addr, later.port) == (first.addr, first.port));
    }
    eps.truncate(ctx.config.limits.max_endpoints_per_service);
    eps
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Topology {
    None,
    SameNode,
    SameZone,
}

fn hinted(h: Option<&Vec<String>>, name: &str) -> bool {
    h.is_some_and(|h| h.iter().any(|x| x == name))
}

/// kube-proxy's `topologyModeFromHints`: node hints are used when every
/// ready endpoint has them and one names this node (`trafficDistribution:
/// PreferSameNode`); else zone hints when every ready endpoint has them and
/// one names this node's zone (`PreferClose`/`PreferSameZone`, the
/// topology-mode annotation). Hints are only set by the EndpointSlice
/// controller when the Service asks for them, so the Service is not checked.
fn topology(eps: &[Ep<'_>], node: &str, zone: Option<&str>) -> Topology {
    let ready = || eps.iter().filter(|e| e.ready).map(|e| e.src);
    if !node.is_empty()
        && ready().all(|e| e.node_hints().is_some())
        && ready().any(|e| hinted(e.node_hints(), node))
    {
        return Topology::SameNode;
    }
    if let Some(zone) = zone {
        if ready().all(|e| e.zone_hints().is_some())
            && ready().any(|e| hinted(e.zone_hints(), zone))
        {
            return Topology::SameZone;
        }
    }
    Topology::None
}

/// kube-proxy's `CategorizeEndpoints`: marks the cluster endpoints
/// (`in_cluster`) and the local endpoints (`in_local`) in place, so no list
/// of either is allocated.
fn categorize(eps: &mut [Ep<'_>], node: &str, zone: Option<&str>) {
    let topo = topology(eps, node, zone);
    let mut any_cluster = false;
    let mut any_local = false;
    for e in eps.iter_mut() {
        e.in_cluster = e.ready
            && match topo {
                Topology::None => true,
                Topology::SameNode => hinted(e.src.node_hints(), node),
                Topology::SameZone => zone.is_some_and(|z| hinted(e.src.zone_hints(), z)),
            };
        e.in_local = e.local && e.ready;
        any_cluster |= e.in_cluster;
        any_local |= e.in_local;
    }
    if !any_cluster {
        // No ready endpoint anywhere: fall back to serving, terminating ones.
        for e in eps.iter_mut() {
            e.in_cluster = e.serving && e.terminating;
        }
    }
    if !any_local {
        for e in eps.iter_mut() {
            e.in_local = e.local && e.serving && e.terminating;
        }
    }
}

/// The endpoints come sorted and unique by address:port from
/// [`merged_endpoints`]; the sort in `collect` is then a linear check.
fn real_servers(eps: &[Ep<'_>], pick: Pick) -> RealServers {
    // Sized first: one allocation of the final size, not a growing vector
    // shrunk at the end.
    let mut v = Vec::with_capacity(eps.iter().filter(|e| e.picked(pick)).count());
    v.extend(
        eps.iter()
            .filter(|e| e.picked(pick))
            .map(|e| DesiredRealServer::new(e.addr, e.port)),
    );
    v.into_iter().collect()
}

fn key(protocol: Protocol, addr: IpAddr, port: u16) -> ServiceKey {
    ServiceKey::Addr {
        protocol,
        addr,
        port,
    }
}

/// Computes a Service's contribution.
pub(crate) fn compute(
    svc: &ParsedService,
    slices: Option<&VecMap<Arc<str>, ParsedSlice>>,
    ctx: &Ctx,
) -> Contribution {
    let empty = VecMap::default();
    let slices = slices.unwrap_or(&empty);
    let mut out = Contribution::default();
    let zone = ctx.node.zone();
    let masq_all = ctx.config.masquerade_all;
    // Built only for a rejection (rare): no string copies per Service.
    let obj = || ObjectRef {
        kind: ObjectKind::Service,
        namespace: svc.name.namespace.clone(),
        name: svc.name.name.clone(),
    };
    let allow_from_node = svc
        .source_ranges
        .iter()
        .any(|r| ctx.node_addrs.iter().any(|a| r.contains(a)));
    // Distinct local ready endpoint IPs, for the health check only.
    let mut local_ready: Vec<IpAddr> = Vec::new();
    let has_external =
        svc.node_ports_enabled || !svc.external_ips.is_empty() || !svc.lb_ips.is_empty();

    let scheduler = svc.scheduler.as_ref().unwrap_or(&ctx.config.scheduler);
    // The other family's addresses are dropped silently: the node does not
    // proxy that family.
    for &cip in svc
        .cluster_ips
        .iter()
        .filter(|ip| ctx.config.families.contains(&IpFamily::of(ip)))
    {
        let family = IpFamily::of(&cip);
        for port in &svc.ports {
            let mut eps = merged_endpoints(svc, port, family, slices, ctx);
            if svc.health_check_node_port.is_some() {
                local_ready.extend(eps.iter().filter(|e| e.local && e.ready).map(|e| e.addr));
            }
            categorize(&mut eps, &ctx.node.name, zone);
            let owner = &port.owner;
            let base = |k: ServiceKey| {
                let mut vs = VirtualServer::new(k);
                // In place: no new allocation when the name fits ("rr").
                vs.scheduler.clone_from(&scheduler.name);
                vs.flags |= scheduler.flags;
                if let Some(t) = svc.affinity_timeout {
                    vs = vs.persistent(t);
                }
                vs
            };
            // kube-proxy's `serviceNoLocalEndpointsTotal{Internal,External}`
            // rule: counted only when the port has usable endpoints
            // somewhere (`hasEndpoints`) but none on this node.
            let has_endpoints = eps.iter().any(|e| e.in_cluster);
            let externally_accessible = port.node_port.is_some()
                || svc.external_ips.iter().any(|ip| IpFamily::of(ip) == family)
                || svc.lb_ips.iter().any(|ip| IpFamily::of(ip) == family);
            if has_endpoints && !eps.iter().any(|e| e.in_local) {
                if svc.itp_local {
                    out.no_local_internal += 1;
                }
                if svc.etp_local && externally_accessible {
                    out.no_local_external += 1;
                }
            }
            let internal = if svc.itp_local {
                Pick::Local
            } else {
                Pick::Cluster
            };
            let external = if svc.etp_local {
                Pick::Local
            } else {
                Pick::Cluster
            };
            // Hairpin: a local endpoint reached through a VIP of its own
            // Service. Sorted and unique, as the endpoints are (the claims
            // compare them).
            let is_hairpin = |e: &&Ep<'_>| e.local && (e.picked(internal) || e.picked(external));
            let mut hairpins: Vec<HairpinFact> =
                Vec::with_capacity(eps.iter().filter(is_hairpin).count());
            hairpins.extend(eps.iter().filter(is_hairpin).map(|e| HairpinFact {
                protocol: port.protocol,
                addr: e.addr,
                port: e.port,
            }));
            let hairpins = hairpins.into_boxed_slice();

            let pod_fwmark = if svc.etp_local && has_external {
                let mark = match (port.node_port, svc.health_check_node_port) {
                    (Some(np), _) => {
                        fwmark::for_node_port(ctx.config.fwmark_base, port.protocol, np)
                    }
                    (None, Some(hc)) => fwmark::for_health_check_port(
                        ctx.config.fwmark_base,
                        port.protocol,
                        hc,
                        port.index,
                    ),
                    (None, None) => None,
                };
                if mark.is_none() {
                    out.rejections.push(Rejection {
                        object: obj(),
                        reason: RejectReason::NoPodFwmark,
                        whole_object: false,
                        detail: format!(
                            "port {:?}: no node port and no encodable health-check port; \
                             pods on this node reach only local endpoints via external addresses",
                            port.name()
                        ),
                    });
                }
                mark
            } else {
                None
            };

            let mut add = |vs: VirtualServer,
                           kind: VipKind,
                           pick: Pick,
                           bind: Option<IpAddr>,
                           fact: Option<FilterEntry>| {
                out.claims.insert(
                    vs.key,
                    Arc::new(PortClaim {
                        vs: Arc::new(DesiredVirtualServer {
                            server: vs,
                            owner: Arc::clone(owner),
                            kind,
                            real_servers: real_servers(&eps, pick),
                        }),
                        bind,
                        fact,
                        hairpins: hairpins.clone(),
                    }),
                );
            };

            // ClusterIP.
            let k = key(port.protocol, cip, port.port);
            add(
                base(k),
                VipKind::ClusterIp,
                internal,
                Some(cip),
                Some(FilterEntry::ServicePort(ServicePortFact {
                    protocol: port.protocol,
                    addr: cip,
                    port: port.port,
                    kind: VipKind::ClusterIp,
                    masquerade: if masq_all {
                        Masquerade::Always
                    } else {
                        Masquerade::UnlessFromPod
                    },
                    pod_fwmark: None,
                    source_ranges: Vec::new(),
                    allow_from_node: false,
                })),
            );
            let ext_masq = if svc.etp_local {
                Masquerade::Never
            } else {
                Masquerade::Always
            };
            // externalIPs.
            for &ip in svc
                .external_ips
                .iter()
                .filter(|ip| IpFamily::of(ip) == family)
            {
                let k = key(port.protocol, ip, port.port);
                // A node address is already local; it is not ours to bind.
                let bind = (!ctx.node_addrs.contains(&ip)).then_some(ip);
                add(
                    base(k),
                    VipKind::ExternalIp,
                    external,
                    bind,
                    Some(FilterEntry::ServicePort(ServicePortFact {
                        protocol: port.protocol,
                        addr: ip,
                        port: port.port,
                        kind: VipKind::ExternalIp,
                        masquerade: ext_masq,
                        pod_fwmark,
                        source_ranges: Vec::new(),
                        allow_from_node: false,
                    })),
                );
            }
            // Load-balancer ingress IPs.
            if !svc.source_ranges_unusable {
                let ranges: Vec<_> = svc
                    .source_ranges
                    .iter()
                    .filter(|r| IpFamily::of_net(r) == family)
                    .copied()
                    .collect();
                // Ranges exist only for the other family: no source of this
                // family may connect, so programming the IP would be wrong.
                let closed = !svc.source_ranges.is_empty() && ranges.is_empty();
                for &ip in svc.lb_ips.iter().filter(|ip| IpFamily::of(ip) == family) {
                    if closed {
                        continue;
                    }
                    let k = key(port.protocol, ip, port.port);
                    let bind = (!ctx.node_addrs.contains(&ip)).then_some(ip);
                    add(
                        base(k),
                        VipKind::LoadBalancer,
                        external,
                        bind,
                        Some(FilterEntry::ServicePort(ServicePortFact {
                            protocol: port.protocol,
                            addr: ip,
                            port: port.port,
                            kind: VipKind::LoadBalancer,
                            masquerade: ext_masq,
                            pod_fwmark,
                            source_ranges: ranges.clone(),
                            allow_from_node: allow_from_node && !ranges.is_empty(),
                        })),
                    );
                }
            }
            // NodePorts.
            if let Some(np) = port.node_port {
                let fact = FilterEntry::NodePort(NodePortFact {
                    protocol: port.protocol,
                    port: np,
                    family,
                    masquerade: ext_masq,
                    pod_fwmark,
                });
                for &addr in ctx
                    .node_port_addrs
                    .iter()
                    .filter(|a| IpFamily::of(a) == family)
                {
                    let k = key(port.protocol, addr, np);
                    add(
                        base(k),
                        VipKind::NodePort,
                        external,
                        None,
                        Some(fact.clone()),
                    );
                }
            }
            // The pod-source firewall-mark service: cluster-wide endpoints.
            if let Some(mark) = pod_fwmark {
                let k = ServiceKey::fwmark(family.address_family(), mark);
                add(base(k), VipKind::PodFwmark, Pick::Cluster, None, None);
            }
        }
    }
    if let Some(port) = svc.health_check_node_port {
        local_ready.sort_unstable();
        local_ready.dedup();
        out.health_check = Some(Box::new(HealthCheckFact {
            port,
            service: ServiceName::clone(&svc.name),
            local_endpoints: u32::try_from(local_ready.len()).unwrap_or(u32::MAX),
        }));
    }
    out
}
