//! What the agent tells the core about the node and its configuration.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::time::Duration;

use ipnet::IpNet;

/// An IP family, as Kubernetes names it (`IPv4` / `IPv6` in `spec.ipFamilies`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpFamily {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl IpFamily {
    /// The family of an address.
    pub fn of(addr: &IpAddr) -> IpFamily {
        match addr {
            IpAddr::V4(_) => IpFamily::V4,
            IpAddr::V6(_) => IpFamily::V6,
        }
    }

    /// The family of a network.
    pub fn of_net(net: &IpNet) -> IpFamily {
        match net {
            IpNet::V4(_) => IpFamily::V4,
            IpNet::V6(_) => IpFamily::V6,
        }
    }

    /// The Kubernetes spelling: `IPv4` or `IPv6`.
    pub fn as_str(self) -> &'static str {
        match self {
            IpFamily::V4 => "IPv4",
            IpFamily::V6 => "IPv6",
        }
    }

    /// The ipvs-rs address family.
    pub fn address_family(self) -> ipvs::AddressFamily {
        match self {
            IpFamily::V4 => ipvs::AddressFamily::Inet,
            IpFamily::V6 => ipvs::AddressFamily::Inet6,
        }
    }
}

impl fmt::Display for IpFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Facts about the node the agent runs on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeFacts {
    /// The Node object's name; endpoints with this `nodeName` are local.
    pub name: String,
    /// The Node's labels; `topology.kubernetes.io/zone` selects zone hints.
    pub labels: BTreeMap<String, String>,
    /// Every address on the node's interfaces except our dummy interface
    /// (loopback included; the core filters it). NodePorts are served on a
    /// subset of these, chosen by [`Config::node_port_addresses`].
    pub addresses: BTreeSet<IpAddr>,
    /// The node's primary IPs (from `Node.status.addresses`, InternalIP first),
    /// at most one per family; used by `nodePortAddresses: ["primary"]`.
    pub primary_ips: Vec<IpAddr>,
}

impl NodeFacts {
    /// The zone label (`topology.kubernetes.io/zone`), if any.
    pub fn zone(&self) -> Option<&str> {
        self.labels
            .get("topology.kubernetes.io/zone")
            .map(String::as_str)
    }
}

/// How the proxy tells traffic from pods on this node from other traffic
/// (kube-proxy's `--detect-local-mode`). The packet filter uses it to decide
/// masquerading and, for `externalTrafficPolicy: Local`, to send pod traffic
/// to the cluster-wide endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum LocalDetect {
    /// No detection: every source counts as non-local (kube-proxy's behaviour
    /// without a cluster CIDR).
    #[default]
    None,
    /// Sources inside these cluster CIDRs (one or two families) are pods.
    ClusterCidr(Vec<IpNet>),
    /// Sources inside the node's pod CIDRs (`Node.spec.podCIDRs`) are local pods.
    NodeCidr(Vec<IpNet>),
    /// Traffic arriving on this bridge interface comes from local pods.
    BridgeInterface(String),
    /// Traffic arriving on interfaces whose name starts with this prefix comes
    /// from local pods.
    InterfaceNamePrefix(String),
}

/// Where NodePorts are served (kube-proxy's `nodePortAddresses`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodePortAddresses {
    /// CIDRs: serve on node addresses inside them. Empty together with
    /// `primary == false` means every non-loopback node address.
    pub cidrs: Vec<IpNet>,
    /// The special value `primary`: serve on the node's primary IPs.
    pub primary: bool,
}

impl NodePortAddresses {
    /// Parses kube-proxy's list form (`["10.0.0.0/8", "primary"]`).
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<Self, crate::ConfigError> {
        let mut out = NodePortAddresses::default();
        for item in items {
            let item = item.as_ref().trim();
            if item == "primary" {
                out.primary = true;
            } else {
                let net: IpNet = item
                    .parse()
                    .map_err(|_| crate::ConfigError::InvalidNodePortAddress(item.to_owned()))?;
                out.cidrs.push(net);
            }
        }
        Ok(out)
    }

    /// The node addresses NodePorts are served on, given the node's facts.
    /// Loopback addresses are never chosen (IPVS cannot serve them without
    /// `route_localnet` tricks, and kube-proxy's IPVS mode does not either).
    pub fn select(&self, node: &NodeFacts) -> BTreeSet<IpAddr> {
        let all = self.cidrs.is_empty() && !self.primary;
        node.addresses
            .iter()
            .chain(node.primary_ips.iter())
            .copied()
            .filter(|a| !a.is_loopback() && !a.is_unspecified())
            .filter(|a| {
                all || self.cidrs.iter().any(|c| c.contains(a))
                    || (self.primary && node.primary_ips.contains(a))
            })
            .collect()
    }
}

/// A scheduler with its flags (ipvsadm `-s NAME -b FLAGS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scheduler {
    /// Scheduler name, e.g. `rr`, `wrr`, `lc`, `sh`, `mh`.
    pub name: String,
    /// Scheduler flags (`SCHED1..3` bits of [`ipvs::ServiceFlags`]).
    pub flags: ipvs::ServiceFlags,
}

impl Default for Scheduler {
    fn default() -> Self {
        Scheduler {
            name: "rr".to_owned(),
            flags: ipvs::ServiceFlags::empty(),
        }
    }
}

impl Scheduler {
    /// Parses a scheduler name and a comma-separated flag list
    /// (`"sh"`, `"sh-fallback,sh-port"`).
    pub fn parse(name: &str, flags: &str) -> Result<Self, crate::ConfigError> {
        let name = name.trim();
        if !ipvs::SCHEDULERS.contains(&name) {
            return Err(crate::ConfigError::UnknownScheduler(name.to_owned()));
        }
        let mut bits = ipvs::ServiceFlags::empty();
        for f in flags.split(',').map(str::trim).filter(|f| !f.is_empty()) {
            let flag: ipvs::SchedFlag = f
                .parse()
                .map_err(|_| crate::ConfigError::UnknownSchedulerFlag(f.to_owned()))?;
            bits |= flag.bit();
        }
        Ok(Scheduler {
            name: name.to_owned(),
            flags: bits,
        })
    }
}

/// Size limits that keep one absurd object from hurting the node. Objects
/// beyond them are rejected with [`crate::RejectReason::TooLarge`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Most ports one Service may declare.
    pub max_ports_per_service: usize,
    /// Most distinct endpoints one Service may have after merging its slices.
    pub max_endpoints_per_service: usize,
    /// Most externalIPs plus load-balancer ingress IPs per Service.
    pub max_external_addresses_per_service: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_ports_per_service: 1_000,
            max_endpoints_per_service: 100_000,
            max_external_addresses_per_service: 256,
        }
    }
}

/// The proxy's configuration as far as the core needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Node default scheduler (kube-proxy `ipvs.scheduler`, default `rr`).
    pub scheduler: Scheduler,
    /// The families this node proxies (dual stack: both).
    pub families: BTreeSet<IpFamily>,
    /// How local (pod) traffic is detected.
    pub local_detect: LocalDetect,
    /// Where NodePorts are served.
    pub node_port_addresses: NodePortAddresses,
    /// The NodePort range (`--service-node-port-range`); IPVS services on node
    /// addresses with ports inside it are considered ours.
    pub node_port_range: RangeInclusive<u16>,
    /// Masquerade all traffic to service IPs (kube-proxy `masqueradeAll`).
    pub masquerade_all: bool,
    /// CIDRs whose IPVS services and addresses we never touch when cleaning up
    /// (kube-proxy `ipvs.excludeCIDRs`).
    pub exclude_cidrs: Vec<IpNet>,
    /// Strict ARP on the node (kube-proxy `ipvs.strictARP`); passed through to
    /// the dataplane, no effect on the desired IPVS state.
    pub strict_arp: bool,
    /// IPVS connection timeouts (kube-proxy `ipvs.tcpTimeout` etc.); 0 = keep.
    pub timeouts: ipvs::Timeouts,
    /// Longest time a removed TCP/SCTP real server is kept draining (weight 0)
    /// before it is deleted even with connections left.
    pub drain_period: Duration,
    /// The base of the firewall marks used for pod-source fwmark services
    /// (`externalTrafficPolicy: Local`); see [`crate::fwmark`].
    pub fwmark_base: u32,
    /// Size limits.
    pub limits: Limits,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            scheduler: Scheduler::default(),
            families: [IpFamily::V4, IpFamily::V6].into_iter().collect(),
            local_detect: LocalDetect::None,
            node_port_addresses: NodePortAddresses::default(),
            node_port_range: 30000..=32767,
            masquerade_all: false,
            exclude_cidrs: Vec::new(),
            strict_arp: false,
            timeouts: ipvs::Timeouts::default(),
            drain_period: Duration::from_secs(15 * 60),
            fwmark_base: crate::fwmark::DEFAULT_BASE,
            limits: Limits::default(),
        }
    }
}

impl Config {
    /// True when `addr` lies inside one of [`Config::exclude_cidrs`].
    pub fn is_excluded(&self, addr: &IpAddr) -> bool {
        self.exclude_cidrs.iter().any(|c| c.contains(addr))
    }
}
