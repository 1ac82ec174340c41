//! The desired node state: what IPVS, the dummy interface and the packet
//! filter should hold. Plain data, built by [`crate::ProxyState`] and compared
//! with the kernel by [`crate::plan()`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use ipvs::{ForwardMethod, Protocol, RealServer, RealServerKey, ServiceKey, VirtualServer};

use crate::config::{IpFamily, LocalDetect};

/// A Service's identity: `namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceName {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ServiceName {
    /// A name from its parts.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ServiceName {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One port of a Service: `namespace/name:portname` (kube-proxy's
/// `ServicePortName`; the port name is empty for a single unnamed port).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServicePortName {
    /// The Service (shared with the engine's other indexes).
    pub service: Arc<ServiceName>,
    /// The port's `name` (may be empty).
    pub port: String,
    /// The port's protocol.
    pub protocol: Protocol,
}

impl fmt::Display for ServicePortName {
    /// `namespace/name:port` (kube-proxy's notation), the protocol omitted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.service, self.port)
    }
}

/// Which of a Service's addresses a virtual server serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum VipKind {
    /// `spec.clusterIPs`.
    ClusterIp,
    /// `spec.externalIPs`.
    ExternalIp,
    /// `status.loadBalancer.ingress[].ip` (not `ipMode: Proxy`).
    LoadBalancer,
    /// A node address with the port's `nodePort`.
    NodePort,
    /// The firewall-mark service that serves pod (and node) traffic to the
    /// external addresses of an `externalTrafficPolicy: Local` port with the
    /// cluster-wide endpoints (see [`crate::fwmark`]).
    PodFwmark,
}

impl VipKind {
    /// A stable lower-case label (`cluster-ip`, `external-ip`,
    /// `load-balancer`, `node-port`, `pod-fwmark`).
    pub fn as_str(self) -> &'static str {
        match self {
            VipKind::ClusterIp => "cluster-ip",
            VipKind::ExternalIp => "external-ip",
            VipKind::LoadBalancer => "load-balancer",
            VipKind::NodePort => "node-port",
            VipKind::PodFwmark => "pod-fwmark",
        }
    }

    /// True for the kinds whose address we bind on the dummy interface.
    pub fn binds_address(self) -> bool {
        matches!(
            self,
            VipKind::ClusterIp | VipKind::ExternalIp | VipKind::LoadBalancer
        )
    }
}

impl fmt::Display for VipKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One virtual server we want programmed, with its real servers and owner.
///
/// The desired state holds each one behind an [`Arc`] shared with the
/// engine's claim on its key: building the state copies nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredVirtualServer {
    /// The IPVS virtual server (key, scheduler, flags, persistence).
    pub server: VirtualServer,
    /// The Service port it implements, for logs and `show` (shared by
    /// every virtual server of that port).
    pub owner: Arc<ServicePortName>,
    /// Which address of the Service it serves.
    pub kind: VipKind,
    /// Its real servers (all weight 1, masquerade), sorted by key.
    pub real_servers: RealServers,
}

impl DesiredVirtualServer {
    /// The key.
    pub fn key(&self) -> &ServiceKey {
        &self.server.key
    }
}

/// A real server as the proxy decides it: address, port, weight and
/// forwarding method. The rest of an [`ipvs::RealServer`] (thresholds,
/// tunnel settings, counters) is never set by the proxy, so the desired
/// state does not carry it: [`DesiredRealServer::to_real_server`] builds the
/// kernel's form where an operation needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DesiredRealServer {
    /// Address and port.
    pub key: RealServerKey,
    /// Weight (`-w`).
    pub weight: u32,
    /// Forwarding method (`-m`).
    pub forward: ForwardMethod,
}

impl DesiredRealServer {
    /// A masqueraded real server with weight 1 (what every Service endpoint
    /// gets).
    pub fn new(addr: IpAddr, port: u16) -> Self {
        DesiredRealServer {
            key: RealServerKey { addr, port },
            weight: 1,
            forward: ForwardMethod::Masquerade,
        }
    }

    /// The real server as ipvs-rs programs it (no thresholds, no tunnel
    /// settings).
    pub fn to_real_server(&self) -> RealServer {
        RealServer::new(self.key.addr, self.key.port)
            .weight(self.weight)
            .forward(self.forward)
    }

    /// True when an observed real server has this configuration: the same
    /// as [`crate::real_server_matches`]`(&self.to_real_server(), observed)`
    /// (read-only fields ignored; the kernel's `LOCALNODE` for a
    /// masqueraded local address is not a difference), without building
    /// the kernel's form.
    pub fn matches(&self, observed: &RealServer) -> bool {
        let forward_ok = self.forward == observed.forward
            || (self.forward == ForwardMethod::Masquerade
                && observed.forward == ForwardMethod::Local);
        self.key == observed.key
            && forward_ok
            && self.weight == observed.weight
            && observed.upper_threshold == 0
            && observed.lower_threshold == 0
            && observed.tunnel == ipvs::Tunnel::default()
    }
}

/// The real servers of a desired virtual server: sorted by key, one per
/// key, in one allocation (a virtual server rarely has more than a few
/// dozen, and the state holds one set per virtual server).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RealServers(Box<[DesiredRealServer]>);

impl RealServers {
    /// Number of real servers.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are none (the virtual server forwards nothing).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The real server with this key.
    pub fn get(&self, key: &RealServerKey) -> Option<&DesiredRealServer> {
        self.0
            .binary_search_by(|r| r.key.cmp(key))
            .ok()
            .map(|i| &self.0[i])
    }

    /// True when a real server has this key.
    pub fn contains_key(&self, key: &RealServerKey) -> bool {
        self.get(key).is_some()
    }

    /// The real servers, by key.
    pub fn iter(&self) -> std::slice::Iter<'_, DesiredRealServer> {
        self.0.iter()
    }

    /// The keys, in order.
    pub fn keys(&self) -> impl Iterator<Item = &RealServerKey> {
        self.0.iter().map(|r| &r.key)
    }

    /// The real servers as a sorted slice.
    pub fn as_slice(&self) -> &[DesiredRealServer] {
        &self.0
    }
}

impl FromIterator<DesiredRealServer> for RealServers {
    /// Sorts by key; of several with one key, the first is kept.
    fn from_iter<I: IntoIterator<Item = DesiredRealServer>>(iter: I) -> Self {
        let mut v: Vec<DesiredRealServer> = iter.into_iter().collect();
        // The engine's input is already sorted and unique: checked, not sorted.
        if !v.is_sorted_by(|a, b| a.key < b.key) {
            // Stable: the first of equal keys stays first.
            v.sort_by_key(|r| r.key);
            v.dedup_by(|later, first| later.key == first.key);
        }
        RealServers(v.into_boxed_slice())
    }
}

impl<'a> IntoIterator for &'a RealServers {
    type Item = &'a DesiredRealServer;
    type IntoIter = std::slice::Iter<'a, DesiredRealServer>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// How traffic to a served address:port must be masqueraded (SNAT to the
/// node) after IPVS picked a real server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Masquerade {
    /// Masquerade unless the source is local pod traffic per
    /// [`FilterFacts::local_detect`] (ClusterIPs; `LocalDetect::None` means
    /// nothing is local, so everything is masqueraded).
    UnlessFromPod,
    /// Always masquerade (external addresses with `externalTrafficPolicy:
    /// Cluster`, and everything under `masqueradeAll`).
    Always,
    /// Never masquerade: the client source IP is kept
    /// (`externalTrafficPolicy: Local`). Traffic from the node itself is the
    /// exception: it is sent to the pod-fwmark service and masqueraded.
    Never,
}

impl Masquerade {
    /// A stable label.
    pub fn as_str(self) -> &'static str {
        match self {
            Masquerade::UnlessFromPod => "unless-from-pod",
            Masquerade::Always => "always",
            Masquerade::Never => "never",
        }
    }
}

/// An address:port IPVS serves on an address bound on the dummy interface
/// (ClusterIP, externalIP or load-balancer IP).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServicePortFact {
    /// Transport protocol.
    pub protocol: Protocol,
    /// The address.
    pub addr: IpAddr,
    /// The port.
    pub port: u16,
    /// Which kind of address it is.
    pub kind: VipKind,
    /// Masquerading rule.
    pub masquerade: Masquerade,
    /// With `externalTrafficPolicy: Local`: packets from local pods (per
    /// [`FilterFacts::local_detect`]) and from the node itself to this
    /// address:port get this mark, so IPVS sends them to the cluster-wide
    /// endpoints; the node's own packets are also masqueraded.
    pub pod_fwmark: Option<u32>,
    /// Load-balancer source ranges: when non-empty, only these sources may
    /// connect (same family as `addr`); others are dropped.
    pub source_ranges: Vec<IpNet>,
    /// With source ranges: one of them contains a node address, so traffic
    /// from the node itself is allowed too (kube-proxy's rule).
    pub allow_from_node: bool,
}

/// A NodePort served on every address of [`FilterFacts::node_port_addresses`]
/// of one family.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodePortFact {
    /// Transport protocol.
    pub protocol: Protocol,
    /// The node port.
    pub port: u16,
    /// The family of the node addresses this entry is for.
    pub family: IpFamily,
    /// Masquerading rule ([`Masquerade::Always`] or, with
    /// `externalTrafficPolicy: Local`, [`Masquerade::Never`]).
    pub masquerade: Masquerade,
    /// As [`ServicePortFact::pod_fwmark`].
    pub pod_fwmark: Option<u32>,
}

/// A local endpoint that can be reached through a service by itself
/// (hairpin): traffic from `addr` to `addr:port` after IPVS must be
/// masqueraded, or the pod would answer itself directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HairpinFact {
    /// Transport protocol.
    pub protocol: Protocol,
    /// The endpoint's address.
    pub addr: IpAddr,
    /// The endpoint's port.
    pub port: u16,
}

/// A health-check node port of an `externalTrafficPolicy: Local` load
/// balancer: the agent serves HTTP on it; the packet filter accepts it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HealthCheckFact {
    /// `spec.healthCheckNodePort`.
    pub port: u16,
    /// The Service.
    pub service: ServiceName,
    /// Ready endpoints of the Service on this node (the health check answers
    /// 200 when > 0, 503 otherwise).
    pub local_endpoints: u32,
}

/// One element of the packet-filter facts; a plan adds and removes these.
///
/// `Hash` covers only what identifies an entry (kind, protocol, address,
/// port), in one or two integer writes: entries that are equal hash
/// equally, and two entries for one address:port that differ elsewhere
/// (masquerading, ranges) only share a hash.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum FilterEntry {
    /// A served address:port.
    ServicePort(ServicePortFact),
    /// A served node port.
    NodePort(NodePortFact),
    /// A hairpin endpoint.
    Hairpin(HairpinFact),
    /// A health-check node port.
    HealthCheck(HealthCheckFact),
}

impl std::hash::Hash for FilterEntry {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        // Kind (2 bits) | protocol number (16) | port (16) | IPv4 address
        // (32); an IPv6 address is written on its own.
        let head = |kind: u64, p: Protocol, port: u16| -> u64 {
            (kind << 62) | (u64::from(u16::from(p)) << 48) | (u64::from(port) << 32)
        };
        let with_addr = |h: &mut H, head: u64, a: &IpAddr| match a {
            IpAddr::V4(v) => h.write_u64(head | u64::from(v.to_bits())),
            IpAddr::V6(v) => {
                h.write_u64(head | 1);
                h.write_u128(v.to_bits());
            }
        };
        match self {
            FilterEntry::ServicePort(f) => with_addr(h, head(0, f.protocol, f.port), &f.addr),
            FilterEntry::NodePort(f) => {
                h.write_u64(head(1, f.protocol, f.port) | u64::from(f.family == IpFamily::V6))
            }
            FilterEntry::Hairpin(f) => with_addr(h, head(2, f.protocol, f.port), &f.addr),
            FilterEntry::HealthCheck(f) => h.write_u64(head(3, Protocol::Tcp, f.port)),
        }
    }
}

impl FilterEntry {
    /// A stable label of the entry's kind (`service-port`, `node-port`,
    /// `hairpin`, `health-check`).
    pub fn kind(&self) -> &'static str {
        match self {
            FilterEntry::ServicePort(_) => "service-port",
            FilterEntry::NodePort(_) => "node-port",
            FilterEntry::Hairpin(_) => "hairpin",
            FilterEntry::HealthCheck(_) => "health-check",
        }
    }
}

/// The packet-filter facts around IPVS, independent of nftables syntax.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FilterFacts {
    /// How local pod traffic is detected (from the configuration).
    pub local_detect: LocalDetect,
    /// Masquerade every service packet (from the configuration).
    pub masquerade_all: bool,
    /// The node addresses NodePorts are served on.
    pub node_port_addresses: BTreeSet<IpAddr>,
    /// Every entry, sorted and de-duplicated.
    pub entries: BTreeSet<FilterEntry>,
}

impl FilterFacts {
    /// The served address:ports.
    pub fn service_ports(&self) -> impl Iterator<Item = &ServicePortFact> {
        self.entries.iter().filter_map(|e| match e {
            FilterEntry::ServicePort(f) => Some(f),
            _ => None,
        })
    }

    /// The served node ports.
    pub fn node_ports(&self) -> impl Iterator<Item = &NodePortFact> {
        self.entries.iter().filter_map(|e| match e {
            FilterEntry::NodePort(f) => Some(f),
            _ => None,
        })
    }

    /// The hairpin endpoints.
    pub fn hairpins(&self) -> impl Iterator<Item = &HairpinFact> {
        self.entries.iter().filter_map(|e| match e {
            FilterEntry::Hairpin(f) => Some(f),
            _ => None,
        })
    }

    /// The health-check node ports.
    pub fn health_checks(&self) -> impl Iterator<Item = &HealthCheckFact> {
        self.entries.iter().filter_map(|e| match e {
            FilterEntry::HealthCheck(f) => Some(f),
            _ => None,
        })
    }
}

/// Everything the node should hold for the Services it knows.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DesiredState {
    /// Virtual servers by key, each with its real servers and owner
    /// (shared with the engine: cloning the state copies no virtual server).
    pub virtual_servers: BTreeMap<ServiceKey, Arc<DesiredVirtualServer>>,
    /// Addresses to bind on the dummy interface (`/32`, `/128`).
    pub addresses: BTreeSet<IpAddr>,
    /// Packet-filter facts.
    pub filter: FilterFacts,
}

impl DesiredState {
    /// Number of real servers over all virtual servers.
    pub fn real_server_count(&self) -> usize {
        self.virtual_servers
            .values()
            .map(|v| v.real_servers.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::{DesiredRealServer, RealServers};
    use ipvs::{ForwardMethod, RealServer};
    use proptest::prelude::*;
    use std::net::IpAddr;

    proptest! {
        /// The lean comparison agrees with comparing the kernel's form.
        #[test]
        fn matches_agrees_with_real_server_matches(
            d_port in 1u16..4, d_weight in 0u32..3, d_fwd in 0u32..3,
            o_port in 1u16..4, o_weight in 0u32..3, o_fwd in 0u32..3,
            upper in 0u32..2, lower in 0u32..2, tun_port in 0u16..2,
            active in 0u32..3,
        ) {
            let a: IpAddr = "10.0.0.1".parse().unwrap();
            let d = DesiredRealServer {
                key: ipvs::RealServerKey { addr: a, port: d_port },
                weight: d_weight,
                forward: ForwardMethod::from(d_fwd),
            };
            let mut o = RealServer::new(a, o_port)
                .weight(o_weight)
                .forward(ForwardMethod::from(o_fwd));
            o.upper_threshold = upper;
            o.lower_threshold = lower;
            o.tunnel.port = tun_port;
            o.conns.active = active;
            prop_assert_eq!(
                d.matches(&o),
                crate::real_server_matches(&d.to_real_server(), &o)
            );
        }
    }

    #[test]
    fn real_servers_are_sorted_and_unique_by_key() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let rs: RealServers = [
            DesiredRealServer::new(ip("10.0.0.2"), 80),
            DesiredRealServer::new(ip("10.0.0.1"), 81),
            DesiredRealServer {
                weight: 0,
                ..DesiredRealServer::new(ip("10.0.0.1"), 80)
            },
            DesiredRealServer::new(ip("10.0.0.1"), 80),
        ]
        .into_iter()
        .collect();
        let keys: Vec<String> = rs
            .keys()
            .map(|k| format!("{}:{}", k.addr, k.port))
            .collect();
        assert_eq!(keys, ["10.0.0.1:80", "10.0.0.1:81", "10.0.0.2:80"]);
        // The first of two with one key is kept.
        let k = ipvs::RealServerKey {
            addr: ip("10.0.0.1"),
            port: 80,
        };
        assert_eq!(rs.get(&k).map(|r| r.weight), Some(0));
        assert!(!rs.contains_key(&ipvs::RealServerKey { port: 82, ..k }));
        assert_eq!(rs.len(), 3);
        assert_eq!(rs.iter().count(), rs.as_slice().len());
    }
}
