//! The filter's inputs: what the table must express, already decided.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use super::render::nets;
use super::DEFAULT_MASQUERADE_BIT;

/// A transport protocol the filter matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum L4 {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl L4 {
    /// nft's name.
    pub fn as_str(self) -> &'static str {
        match self {
            L4::Tcp => "tcp",
            L4::Udp => "udp",
            L4::Sctp => "sctp",
        }
    }

    /// From an IPVS protocol; other protocols have no filter rules.
    pub fn from_ipvs(p: ipvs::Protocol) -> Option<L4> {
        match p {
            ipvs::Protocol::Tcp => Some(L4::Tcp),
            ipvs::Protocol::Udp => Some(L4::Udp),
            ipvs::Protocol::Sctp => Some(L4::Sctp),
            _ => None,
        }
    }
}

/// A service address, protocol and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VipPort {
    /// Service IP.
    pub addr: IpAddr,
    /// Protocol.
    pub protocol: L4,
    /// Port.
    pub port: u16,
}

impl VipPort {
    /// Shorthand constructor.
    pub fn new(addr: IpAddr, protocol: L4, port: u16) -> Self {
        VipPort {
            addr,
            protocol,
            port,
        }
    }
}

impl fmt::Display for VipPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} . {} . {}",
            self.addr,
            self.protocol.as_str(),
            self.port
        )
    }
}

/// An IP family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    pub(super) const BOTH: [Family; 2] = [Family::V4, Family::V6];

    pub(super) fn has(self, a: &IpAddr) -> bool {
        matches!(
            (self, a),
            (Family::V4, IpAddr::V4(_)) | (Family::V6, IpAddr::V6(_))
        )
    }
    pub(super) fn has_net(self, n: &IpNet) -> bool {
        matches!(
            (self, n),
            (Family::V4, IpNet::V4(_)) | (Family::V6, IpNet::V6(_))
        )
    }
    /// Set-name suffix.
    pub(super) fn sfx(self) -> &'static str {
        match self {
            Family::V4 => "v4",
            Family::V6 => "v6",
        }
    }
    /// Match keyword (`ip` / `ip6`).
    pub(super) fn kw(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        }
    }
    /// Address type.
    pub(super) fn ty(self) -> &'static str {
        match self {
            Family::V4 => "ipv4_addr",
            Family::V6 => "ipv6_addr",
        }
    }
}

/// When a connection to a service is masqueraded (source-NATed to the node).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Masq {
    /// Unless it comes from a local pod ([`FilterSpec::local`]).
    UnlessFromPod,
    /// Always.
    Always,
    /// Never: the client's source IP is kept (`externalTrafficPolicy:
    /// Local`); the node's own connections are still masqueraded.
    Never,
}

/// How traffic from pods is told from other traffic (detect-local mode).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LocalMatch {
    /// Nothing is local.
    #[default]
    Nothing,
    /// Sources inside these networks.
    Cidrs(Vec<IpNet>),
    /// Packets entering through this interface.
    Interface(String),
    /// Packets entering through interfaces whose name starts with this.
    InterfacePrefix(String),
}

/// The packet-filter rules of one service address:port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRule {
    /// Masquerading.
    pub masq: Masq,
    /// Firewall mark for local pods (and the node) reaching this
    /// `externalTrafficPolicy: Local` address:port: IPVS then uses the
    /// firewall-mark virtual server with the cluster-wide endpoints.
    pub pod_mark: Option<u32>,
    /// Load-balancer source ranges; empty: every source.
    pub source_ranges: Vec<IpNet>,
    /// With source ranges: the node itself may connect too.
    pub allow_from_node: bool,
}

impl PortRule {
    /// A rule with the given masquerading and nothing else.
    pub fn masq(masq: Masq) -> Self {
        PortRule {
            masq,
            pod_mark: None,
            source_ranges: Vec::new(),
            allow_from_node: false,
        }
    }
}

/// The rules of one node port of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodePortRule {
    /// Masquerading.
    pub masq: Masq,
    /// As [`PortRule::pod_mark`].
    pub pod_mark: Option<u32>,
}

/// Everything the packet filter needs, already decided (by proxy-core; see
/// [`crate::facts`]). Both families may be mixed: each rule is rendered
/// once per family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterSpec {
    /// The conntrack-mark bit meaning "masquerade".
    pub masquerade_bit: u32,
    /// Masquerade every connection to a service (`masqueradeAll`).
    pub masquerade_all: bool,
    /// How local pod traffic is recognised.
    pub local: LocalMatch,
    /// Every address bound on the dummy interface: new connections to them
    /// on ports that are not services are rejected.
    pub service_ips: BTreeSet<IpAddr>,
    /// Service address:ports (ClusterIPs, external IPs, load-balancer IPs).
    pub ports: BTreeMap<VipPort, PortRule>,
    /// Node addresses that serve node ports.
    pub node_port_addrs: BTreeSet<IpAddr>,
    /// Node ports, per family.
    pub node_ports: BTreeMap<(Family, L4, u16), NodePortRule>,
    /// Health-check node ports (TCP) to accept.
    pub health_check_node_ports: BTreeSet<u16>,
    /// Local endpoints that may reach themselves through a service: a
    /// connection from `addr` to `addr:port` is masqueraded.
    pub hairpin: BTreeSet<VipPort>,
}

impl Default for FilterSpec {
    fn default() -> Self {
        FilterSpec {
            masquerade_bit: DEFAULT_MASQUERADE_BIT,
            masquerade_all: false,
            local: LocalMatch::Nothing,
            service_ips: BTreeSet::new(),
            ports: BTreeMap::new(),
            node_port_addrs: BTreeSet::new(),
            node_ports: BTreeMap::new(),
            health_check_node_ports: BTreeSet::new(),
            hairpin: BTreeSet::new(),
        }
    }
}

/// An interface name nft can take inside quotes.
pub(super) fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 16
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
}

impl FilterSpec {
    /// The effective masquerading of a rule under `masquerade_all`.
    pub(super) fn eff(&self, m: Masq) -> Masq {
        if self.masquerade_all {
            Masq::Always
        } else {
            m
        }
    }

    /// `(is-local, is-not-local)` match expressions for family `f`; `None`
    /// when nothing can be local for this family (then "not local" is
    /// everything: the empty string).
    pub(super) fn local_exprs(&self, f: Family) -> Option<(String, String)> {
        let (k, s) = (f.kw(), f.sfx());
        match &self.local {
            LocalMatch::Nothing => None,
            LocalMatch::Cidrs(c) if nets(f, c).is_empty() => None,
            LocalMatch::Cidrs(_) => Some((
                format!("{k} saddr @local-cidrs-{s}"),
                format!("{k} saddr != @local-cidrs-{s}"),
            )),
            LocalMatch::Interface(i) if valid_ifname(i) => {
                Some((format!("iifname \"{i}\""), format!("iifname != \"{i}\"")))
            }
            LocalMatch::InterfacePrefix(p) if valid_ifname(p) => {
                Some((format!("iifname \"{p}*\""), format!("iifname != \"{p}*\"")))
            }
            // Invalid names are refused by `validate`; render nothing local.
            LocalMatch::Interface(_) | LocalMatch::InterfacePrefix(_) => None,
        }
    }

    /// Problems that would make nft refuse the ruleset.
    pub fn validate(&self) -> Result<(), String> {
        match &self.local {
            LocalMatch::Interface(i) | LocalMatch::InterfacePrefix(i) if !valid_ifname(i) => Err(
                format!("invalid interface name {i:?} for local-traffic detection"),
            ),
            _ => Ok(()),
        }
    }
}
