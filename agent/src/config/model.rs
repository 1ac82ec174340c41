//! The effective configuration and its value types.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

use super::{invalid, ConfigError};

/// Output format of the logs (`--log-format`, `logging.format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    pub(super) fn parse(field: &str, s: &str) -> Result<Self, ConfigError> {
        match s {
            "" | "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(invalid(field, other, "must be \"text\" or \"json\"")),
        }
    }
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Json => "json",
        }
    }
}

/// How set and map element changes reach our nftables table
/// (`--nft-element-updates`). The table itself and interval-set changes
/// always go through `nft -f -`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum NftElementUpdates {
    /// One nf_tables transaction over nfnetlink per sync: no process.
    #[default]
    Netlink,
    /// One `nft -f -` run per sync (the fallback; slower per change).
    Nft,
}

/// Which packet filter the agent maintains next to IPVS (`--packet-filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum PacketFilter {
    /// Our nftables table: masquerade marking, hairpin, LoadBalancer source
    /// ranges, externalTrafficPolicy Local pod routing, service-IP guard.
    /// Preflight fails when the kernel or `nft` cannot hold it.
    #[default]
    Nftables,
    /// No packet filter: IPVS and the dummy interface only. For kernels
    /// without nftables (user-mode Linux benchmarks and tests); nothing the
    /// table would enforce is enforced, and the agent says so loudly at start.
    None,
}

impl PacketFilter {
    /// The flag value (`nftables` or `none`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Nftables => "nftables",
            Self::None => "none",
        }
    }

    /// Whether our nftables table is maintained.
    pub fn is_enabled(self) -> bool {
        self == Self::Nftables
    }
}

/// How traffic from pods on this node is recognised (`detectLocalMode`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DetectLocal {
    /// Source in the cluster CIDR(s).
    ClusterCidr,
    /// Source in the Node's `spec.podCIDRs`.
    NodeCidr,
    /// Arriving from this bridge.
    BridgeInterface(String),
    /// Arriving from an interface whose name starts with this prefix.
    InterfaceNamePrefix(String),
}

impl DetectLocal {
    pub(super) fn mode_name(&self) -> &'static str {
        match self {
            Self::ClusterCidr => "ClusterCIDR",
            Self::NodeCidr => "NodeCIDR",
            Self::BridgeInterface(_) => "BridgeInterface",
            Self::InterfaceNamePrefix(_) => "InterfaceNamePrefix",
        }
    }
}

/// One entry of `nodePortAddresses`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodePortAddress {
    /// Node IPs inside this CIDR.
    Cidr(IpNet),
    /// The Node object's primary IPs.
    Primary,
}

/// IPVS settings.
#[derive(Debug, Clone, PartialEq)]
pub struct IpvsConfig {
    /// Full reconcile interval.
    pub sync_period: Duration,
    /// Minimum interval between two applied syncs (coalescing).
    pub min_sync_period: Duration,
    /// Default scheduler.
    pub scheduler: String,
    /// IPVS services inside these never touched.
    pub exclude_cidrs: Vec<IpNet>,
    /// arp_ignore=1 / arp_announce=2.
    pub strict_arp: bool,
    /// IPVS TCP idle timeout; zero leaves the kernel's value.
    pub tcp_timeout: Duration,
    /// IPVS TCP FIN timeout; zero leaves the kernel's value.
    pub tcp_fin_timeout: Duration,
    /// IPVS UDP timeout; zero leaves the kernel's value.
    pub udp_timeout: Duration,
}

/// API server connection settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientConnection {
    /// kubeconfig path; none means in-cluster, then the default kubeconfig.
    pub kubeconfig: Option<PathBuf>,
    /// Requests per second.
    pub qps: f32,
    /// Burst.
    pub burst: i32,
    /// Content type (recorded only; we speak JSON).
    pub content_type: String,
}

/// The effective configuration after flags, file and validation.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyConfig {
    /// Name of our Node, if overridden.
    pub hostname_override: Option<String>,
    /// Primary node IP override (unspecified = none).
    pub bind_address: IpAddr,
    /// Health server address; `None` disables it.
    pub healthz_bind_address: Option<SocketAddr>,
    /// Metrics server address; `None` disables it.
    pub metrics_bind_address: Option<SocketAddr>,
    /// Failure to bind is fatal.
    pub bind_address_hard_fail: bool,
    /// API server connection.
    pub client: ClientConnection,
    /// IPVS settings.
    pub ipvs: IpvsConfig,
    /// SNAT everything sent to service IPs.
    pub masquerade_all: bool,
    /// Local traffic detection.
    pub detect_local: DetectLocal,
    /// Pod CIDRs of the cluster (at most one per family).
    pub cluster_cidrs: Vec<IpNet>,
    /// Where NodePorts are served; empty = all local addresses.
    pub node_port_addresses: Vec<NodePortAddress>,
    /// OOM score adjustment.
    pub oom_score_adj: i32,
    /// Log format.
    pub log_format: LogFormat,
    /// Log verbosity.
    pub verbosity: u8,
    /// (ours) Maximum drain time of a removed real server.
    pub drain_period: Duration,
    /// (ours) Service cluster IP ranges.
    pub service_cidrs: Vec<IpNet>,
    /// (ours) The packet filter kept next to IPVS (`--packet-filter`).
    pub packet_filter: PacketFilter,
    /// (ours) How element changes reach our table (`--nft-element-updates`).
    pub nft_element_updates: NftElementUpdates,
}

/// Default `--drain-period`.
pub const DEFAULT_DRAIN_PERIOD: Duration = Duration::from_secs(15 * 60);

impl Default for ProxyConfig {
    /// kube-proxy's v1alpha1 defaults, mode ipvs.
    fn default() -> Self {
        Self {
            hostname_override: None,
            bind_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            healthz_bind_address: Some(SocketAddr::from(([0, 0, 0, 0], 10256))),
            metrics_bind_address: Some(SocketAddr::from(([127, 0, 0, 1], 10249))),
            bind_address_hard_fail: false,
            client: ClientConnection {
                kubeconfig: None,
                qps: 5.0,
                burst: 10,
                content_type: "application/vnd.kubernetes.protobuf".into(),
            },
            ipvs: IpvsConfig {
                sync_period: Duration::from_secs(30),
                min_sync_period: Duration::ZERO,
                scheduler: "rr".into(),
                exclude_cidrs: vec![],
                strict_arp: false,
                tcp_timeout: Duration::ZERO,
                tcp_fin_timeout: Duration::ZERO,
                udp_timeout: Duration::ZERO,
            },
            masquerade_all: false,
            detect_local: DetectLocal::ClusterCidr,
            cluster_cidrs: vec![],
            node_port_addresses: vec![],
            oom_score_adj: -999,
            log_format: LogFormat::Text,
            verbosity: 0,
            drain_period: DEFAULT_DRAIN_PERIOD,
            service_cidrs: vec![],
            packet_filter: PacketFilter::Nftables,
            nft_element_updates: NftElementUpdates::Netlink,
        }
    }
}
