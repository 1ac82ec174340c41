//! The desired node state: what IPVS, the dummy interface and the packet
//! filter should hold. Plain data, built by [`crate::ProxyState`] and compared
//! with the kernel by [`crate::plan()`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use ipvs::{Protocol, RealServer, RealServerKey, ServiceKey, VirtualServer};

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
    /// The Service.
    pub service: ServiceName,
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredVirtualServer {
    /// The IPVS virtual server (key, scheduler, flags, persistence).
    pub server: VirtualServer,
    /// The Service port it implements, for logs and `show`.
    pub owner: ServicePortName,
    /// Which address of the Service it serves.
    pub kind: VipKind,
    /// Its real servers (all weight 1, masquerade).
    pub real_servers: BTreeMap<RealServerKey, RealServer>,
}

impl DesiredVirtualServer {
    /// The key.
    pub fn key(&self) -> &ServiceKey {
        &self.server.key
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
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
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
    /// Virtual servers by key, each with its real servers and owner.
    pub virtual_servers: BTreeMap<ServiceKey, DesiredVirtualServer>,
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
