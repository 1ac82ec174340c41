//! What our table holds, in proxy-core's and ipvs-rs's own types: the
//! *skeleton* (set and map declarations, chains: a function of the node's
//! configuration only) and the *elements* of its sets and maps (a function
//! of each [`FilterEntry`], the node-port addresses and the bound service
//! addresses).

use std::net::IpAddr;

use ipnet::IpNet;
use ipvs::Protocol;
use proxy_core::model::{FilterEntry, Masquerade};
use proxy_core::{IpFamily, LocalDetect};

/// The inputs of the table's skeleton. When these are unchanged, a change
/// of the facts is a change of elements only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skeleton {
    /// The conntrack-mark bit meaning "masquerade".
    pub masquerade_bit: u32,
    /// How local pod traffic is recognised.
    pub local: LocalDetect,
}

impl Skeleton {
    /// Problems that would make nft refuse the table (interface names are
    /// rendered inside quotes).
    pub fn validate(&self) -> Result<(), String> {
        match &self.local {
            LocalDetect::BridgeInterface(i) | LocalDetect::InterfaceNamePrefix(i)
                if !valid_ifname(i) =>
            {
                Err(format!(
                    "invalid interface name {i:?} for local-traffic detection"
                ))
            }
            _ => Ok(()),
        }
    }

    /// The local-detection CIDRs, aggregated, of family `f` (empty unless
    /// detection is by CIDR).
    pub fn local_cidrs(&self, f: IpFamily) -> Vec<IpNet> {
        match &self.local {
            LocalDetect::ClusterCidr(c) | LocalDetect::NodeCidr(c) => nets(f, c),
            _ => Vec::new(),
        }
    }
}

/// The sets and maps of our table (one per family where addresses are in
/// the key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Set {
    /// `health-check-nodeports`: TCP ports accepted.
    HealthCheckNodePorts,
    /// `local-cidrs-*`: sources that are local pods.
    LocalCidrs(IpFamily),
    /// `service-ips-*`: addresses guarded (non-service ports rejected).
    ServiceIps(IpFamily),
    /// `service-ports-*`: every served address . protocol . port.
    ServicePorts(IpFamily),
    /// `masq-always-*`.
    MasqAlways(IpFamily),
    /// `masq-unless-pod-*`.
    MasqUnlessPod(IpFamily),
    /// `pod-marks-*` (map to a packet mark).
    PodMarks(IpFamily),
    /// `lb-ranged-*`: ports with load-balancer source ranges.
    LbRanged(IpFamily),
    /// `lb-node-allowed-*`: ranged ports the node itself may reach.
    LbNodeAllowed(IpFamily),
    /// `lb-allowed-*`: port . allowed source network.
    LbAllowed(IpFamily),
    /// `nodeport-addrs-*`: node addresses serving node ports.
    NodePortAddrs(IpFamily),
    /// `nodeports-*`.
    NodePorts(IpFamily),
    /// `nodeports-always-*`.
    NodePortsAlways(IpFamily),
    /// `nodeports-unless-pod-*`.
    NodePortsUnlessPod(IpFamily),
    /// `nodeport-marks-*` (map to a packet mark).
    NodePortMarks(IpFamily),
    /// `hairpin-*`: endpoint . endpoint . protocol . port.
    Hairpin(IpFamily),
}

impl Set {
    /// Every set and map, in declaration order.
    pub fn all() -> impl Iterator<Item = Set> {
        std::iter::once(Set::HealthCheckNodePorts).chain(FAMILIES.into_iter().flat_map(|f| {
            [
                Set::LocalCidrs(f),
                Set::ServiceIps(f),
                Set::ServicePorts(f),
                Set::MasqAlways(f),
                Set::MasqUnlessPod(f),
                Set::PodMarks(f),
                Set::LbRanged(f),
                Set::LbNodeAllowed(f),
                Set::LbAllowed(f),
                Set::NodePortAddrs(f),
                Set::NodePorts(f),
                Set::NodePortsAlways(f),
                Set::NodePortsUnlessPod(f),
                Set::NodePortMarks(f),
                Set::Hairpin(f),
            ]
        }))
    }

    /// Whether this is a map (elements carry a mark).
    pub fn is_map(self) -> bool {
        matches!(self, Set::PodMarks(_) | Set::NodePortMarks(_))
    }
}

/// Both families, in rendering order.
pub const FAMILIES: [IpFamily; 2] = [IpFamily::V4, IpFamily::V6];

/// The key of one element.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    /// A port.
    Port(u16),
    /// An address.
    Addr(IpAddr),
    /// A network (interval sets).
    Net(IpNet),
    /// Address . protocol . port.
    VipPort(IpAddr, Protocol, u16),
    /// Address . protocol . port . source network.
    VipPortNet(IpAddr, Protocol, u16, IpNet),
    /// Protocol . port.
    ProtoPort(Protocol, u16),
    /// Endpoint . endpoint . protocol . port (hairpin).
    Hairpin(IpAddr, Protocol, u16),
}

/// One element of one set or map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Element {
    /// Where it lives.
    pub set: Set,
    /// Its key.
    pub key: Key,
    /// The mark it maps to (maps only).
    pub mark: Option<u32>,
}

impl Element {
    fn new(set: Set, key: Key) -> Self {
        Element {
            set,
            key,
            mark: None,
        }
    }
}

/// nft's name of a protocol the filter matches; `None` for others (their
/// entries have no filter rules).
pub fn l4_name(p: Protocol) -> Option<&'static str> {
    match p {
        Protocol::Tcp => Some("tcp"),
        Protocol::Udp => Some("udp"),
        Protocol::Sctp => Some("sctp"),
        _ => None,
    }
}

/// The effective masquerading under `masqueradeAll`.
fn eff(m: Masquerade, masquerade_all: bool) -> Masquerade {
    if masquerade_all {
        Masquerade::Always
    } else {
        m
    }
}

/// The elements one entry contributes (in O(1) for all but source ranges,
/// which are O(ranges)). Entries with protocols the filter cannot match
/// contribute nothing.
pub fn entry_elements(e: &FilterEntry, masquerade_all: bool, out: &mut Vec<Element>) {
    match e {
        FilterEntry::ServicePort(f) => {
            if l4_name(f.protocol).is_none() {
                return;
            }
            let fam = IpFamily::of(&f.addr);
            let k = Key::VipPort(f.addr, f.protocol, f.port);
            out.push(Element::new(Set::ServiceIps(fam), Key::Addr(f.addr)));
            out.push(Element::new(Set::ServicePorts(fam), k));
            match eff(f.masquerade, masquerade_all) {
                Masquerade::Always => out.push(Element::new(Set::MasqAlways(fam), k)),
                Masquerade::UnlessFromPod => out.push(Element::new(Set::MasqUnlessPod(fam), k)),
                Masquerade::Never => {}
            }
            if let Some(m) = f.pod_fwmark {
                out.push(Element {
                    mark: Some(m),
                    ..Element::new(Set::PodMarks(fam), k)
                });
            }
            if !f.source_ranges.is_empty() {
                out.push(Element::new(Set::LbRanged(fam), k));
                if f.allow_from_node {
                    out.push(Element::new(Set::LbNodeAllowed(fam), k));
                }
                for n in nets(fam, &f.source_ranges) {
                    out.push(Element::new(
                        Set::LbAllowed(fam),
                        Key::VipPortNet(f.addr, f.protocol, f.port, n),
                    ));
                }
            }
        }
        FilterEntry::NodePort(f) => {
            if l4_name(f.protocol).is_none() {
                return;
            }
            let fam = f.family;
            let k = Key::ProtoPort(f.protocol, f.port);
            out.push(Element::new(Set::NodePorts(fam), k));
            match eff(f.masquerade, masquerade_all) {
                Masquerade::Always => out.push(Element::new(Set::NodePortsAlways(fam), k)),
                Masquerade::UnlessFromPod => {
                    out.push(Element::new(Set::NodePortsUnlessPod(fam), k))
                }
                Masquerade::Never => {}
            }
            if let Some(m) = f.pod_fwmark {
                out.push(Element {
                    mark: Some(m),
                    ..Element::new(Set::NodePortMarks(fam), k)
                });
            }
        }
        FilterEntry::Hairpin(h) => {
            if l4_name(h.protocol).is_some() {
                out.push(Element::new(
                    Set::Hairpin(IpFamily::of(&h.addr)),
                    Key::Hairpin(h.addr, h.protocol, h.port),
                ));
            }
        }
        FilterEntry::HealthCheck(h) => {
            out.push(Element::new(Set::HealthCheckNodePorts, Key::Port(h.port)));
        }
    }
}

/// The guard element of a bound service address.
pub fn service_ip(a: IpAddr) -> Element {
    Element::new(Set::ServiceIps(IpFamily::of(&a)), Key::Addr(a))
}

/// The element of a node address serving node ports.
pub fn node_port_addr(a: IpAddr) -> Element {
    Element::new(Set::NodePortAddrs(IpFamily::of(&a)), Key::Addr(a))
}

/// The elements of the local-detection CIDRs.
pub fn local_cidr_elements(s: &Skeleton) -> impl Iterator<Item = Element> + '_ {
    FAMILIES.into_iter().flat_map(move |f| {
        s.local_cidrs(f)
            .into_iter()
            .map(move |n| Element::new(Set::LocalCidrs(f), Key::Net(n)))
    })
}

/// Aggregated (non-overlapping) networks of one family: interval sets
/// refuse overlapping elements.
pub fn nets(f: IpFamily, nets: &[IpNet]) -> Vec<IpNet> {
    let mine: Vec<IpNet> = nets
        .iter()
        .filter(|n| IpFamily::of_net(n) == f)
        .map(IpNet::trunc)
        .collect();
    IpNet::aggregate(&mine)
}

/// An interface name nft can take inside quotes.
pub(super) fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 16
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
}
