//! Command-line flags and the `KubeProxyConfiguration` file, resolved into one
//! effective [`ProxyConfig`].
//!
//! Precedence follows kube-proxy (`cmd/kube-proxy/app/options.go`): without
//! `--config` the flags apply over kube-proxy's defaults; with `--config` the
//! file replaces the flag values wholesale, except the logging flags (`-v`,
//! `--log-format`) and `--hostname-override`, which still win when given, and
//! the flags that have no configuration field (`--master`, `--cleanup`,
//! `--write-config-to`, and ours: `--manifests`, `--drain-period`,
//! `--service-cluster-ip-range`, `--packet-filter`). kube-proxy drops the other flags silently;
//! we log a warning naming each one.
//!
//! The file is a `kubeproxy.config.k8s.io/v1alpha1` or `v1alpha2`
//! `KubeProxyConfiguration`. v1alpha2 is the layout of kube-proxy's KEP-784
//! (kubernetes/kubernetes PR #121830: sync periods at the top level, a
//! `linux` section, bind addresses as CIDRs plus a port, `nodeIPOverride`,
//! `detectLocal.clusterCIDRs`, `configHardFail`), with that PR's defaults.
//! Each version is read with its own paths, defaults and error names;
//! `--write-config-to` writes v1alpha1, which every kube-proxy reads.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::de::DeserializeOwned;
use serde_yaml::{Mapping, Value};

use crate::duration;

/// The API version of the configuration file we write (`--write-config-to`);
/// we read it and [`API_VERSION_V1ALPHA2`].
pub const API_VERSION: &str = "kubeproxy.config.k8s.io/v1alpha1";
/// The restructured API version of kube-proxy's configuration (KEP-784), also
/// read by `--config`.
pub const API_VERSION_V1ALPHA2: &str = "kubeproxy.config.k8s.io/v1alpha2";
/// The kind of the configuration file we read and write.
pub const KIND: &str = "KubeProxyConfiguration";

/// IPVS schedulers accepted: the ones the kernel ships (kube-proxy's
/// `validateIPVSSchedulerMethod` list plus `mh`, `fo`, `ovf`, `twos`).
pub const SCHEDULERS: &[&str] = ipvs::SCHEDULERS;

/// An invalid configuration: start-up stops with this message.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A field (config path, with its flag when there is one) has a bad value.
    #[error("invalid value {value:?} for {field}: {reason}")]
    Invalid {
        /// `ipvs.syncPeriod (--ipvs-sync-period)` style name.
        field: String,
        /// The offending value as text.
        value: String,
        /// Why it was refused.
        reason: String,
    },
    /// The configuration file could not be read.
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The configuration file is not YAML/JSON.
    #[error("configuration file is not valid YAML: {0}")]
    Syntax(#[source] serde_yaml::Error),
    /// Writing `--write-config-to` failed.
    #[error("cannot write configuration to {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

fn invalid(field: &str, value: impl ToString, reason: impl ToString) -> ConfigError {
    ConfigError::Invalid {
        field: field.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

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
    fn parse(field: &str, s: &str) -> Result<Self, ConfigError> {
        match s {
            "" | "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(invalid(field, other, "must be \"text\" or \"json\"")),
        }
    }
    fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Json => "json",
        }
    }
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

/// The flags of the agent (and of `plan`, which resolves the same configuration).
///
/// Every value flag is optional so we know which ones were given.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Flags {
    /// The path to the configuration file (a KubeProxyConfiguration, kubeproxy.config.k8s.io/v1alpha1 or v1alpha2).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// If set, write the effective configuration to this file and exit.
    #[arg(long, value_name = "FILE")]
    pub write_config_to: Option<PathBuf>,
    /// If true, remove everything this agent created on the node (IPVS services, addresses, the nftables table) and exit.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub cleanup: Option<bool>,
    /// Which proxy mode to use; this agent only implements 'ipvs'.
    #[arg(long, value_name = "MODE")]
    pub proxy_mode: Option<String>,
    /// Path to kubeconfig file with authorization information (the master location can be overridden by the master flag).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The address of the Kubernetes API server (overrides any value in kubeconfig).
    #[arg(long, value_name = "URL")]
    pub master: Option<String>,
    /// QPS to use while talking with kubernetes apiserver.
    #[arg(long, value_name = "QPS")]
    pub kube_api_qps: Option<f32>,
    /// Burst to use while talking with kubernetes apiserver.
    #[arg(long, value_name = "N")]
    pub kube_api_burst: Option<i32>,
    /// Content type of requests sent to apiserver (accepted; this agent always uses JSON).
    #[arg(long, value_name = "TYPE")]
    pub kube_api_content_type: Option<String>,
    /// If non-empty, used as the name of the Node the agent runs on (else $NODE_NAME, else the hostname).
    #[arg(long, value_name = "NAME")]
    pub hostname_override: Option<String>,
    /// Overrides the agent's idea of its node's primary IP (no socket is bound to it).
    #[arg(long, value_name = "IP")]
    pub bind_address: Option<IpAddr>,
    /// The IP address and port for the health check server to serve on (empty disables).
    #[arg(long, value_name = "IP:PORT")]
    pub healthz_bind_address: Option<String>,
    /// The IP address and port for the metrics server to serve on (empty disables).
    #[arg(long, value_name = "IP:PORT")]
    pub metrics_bind_address: Option<String>,
    /// If true, failure to bind the healthz or metrics port is fatal.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub bind_address_hard_fail: Option<bool>,
    /// An interval (e.g. '5s', '1m', '2h22m') indicating how frequently the full reconcile runs. Must be greater than 0.
    #[arg(long, value_name = "DURATION", value_parser = duration::parse)]
    pub ipvs_sync_period: Option<Duration>,
    /// The minimum period between IPVS rule resyncs (e.g. '5s', '1m'). 0 applies every change at once.
    #[arg(long, value_name = "DURATION", value_parser = duration::parse)]
    pub ipvs_min_sync_period: Option<Duration>,
    /// The ipvs scheduler type (rr, wrr, lc, wlc, lblc, lblcr, sh, dh, sed, nq, mh, ...). Default rr.
    #[arg(long, value_name = "NAME")]
    pub ipvs_scheduler: Option<String>,
    /// A comma-separated list of CIDRs which the ipvs proxier should not touch when cleaning up IPVS rules.
    #[arg(long, value_name = "CIDRS", value_delimiter = ',')]
    pub ipvs_exclude_cidrs: Option<Vec<String>>,
    /// Enable strict ARP by setting arp_ignore to 1 and arp_announce to 2.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub ipvs_strict_arp: Option<bool>,
    /// The timeout for idle IPVS TCP connections, 0 to leave as-is.
    #[arg(long, value_name = "DURATION", value_parser = duration::parse)]
    pub ipvs_tcp_timeout: Option<Duration>,
    /// The timeout for IPVS TCP connections after receiving a FIN packet, 0 to leave as-is.
    #[arg(long, value_name = "DURATION", value_parser = duration::parse)]
    pub ipvs_tcpfin_timeout: Option<Duration>,
    /// The timeout for IPVS UDP packets, 0 to leave as-is.
    #[arg(long, value_name = "DURATION", value_parser = duration::parse)]
    pub ipvs_udp_timeout: Option<Duration>,
    /// SNAT all traffic sent via Service cluster IPs.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub masquerade_all: Option<bool>,
    /// Accepted for compatibility and ignored: this agent marks with nftables, not an iptables fwmark bit.
    #[arg(long, value_name = "BIT")]
    pub iptables_masquerade_bit: Option<i32>,
    /// The CIDR range(s) of the pods in the cluster (comma-separated dual-stack pair allowed).
    #[arg(long, value_name = "CIDRS")]
    pub cluster_cidr: Option<String>,
    /// Mode to use to detect local traffic: ClusterCIDR, NodeCIDR, BridgeInterface or InterfaceNamePrefix.
    #[arg(long, value_name = "MODE")]
    pub detect_local_mode: Option<String>,
    /// A bridge interface name, used when --detect-local-mode is BridgeInterface.
    #[arg(long, value_name = "NAME")]
    pub pod_bridge_interface: Option<String>,
    /// An interface name prefix, used when --detect-local-mode is InterfaceNamePrefix.
    #[arg(long, value_name = "PREFIX")]
    pub pod_interface_name_prefix: Option<String>,
    /// CIDRs of node IPs that accept NodePort connections, or 'primary' (the Node's primary IPs). Default: all local IPs.
    #[arg(long, value_name = "CIDRS", value_delimiter = ',')]
    pub nodeport_addresses: Option<Vec<String>>,
    /// The oom-score-adj value for the agent process, in [-1000, 1000].
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub oom_score_adj: Option<i32>,
    /// Log verbosity (klog-style): 0-1 info, 2-3 our debug, 4 debug, 5+ trace.
    #[arg(short = 'v', long = "v", value_name = "LEVEL")]
    pub v: Option<u8>,
    /// Log format.
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// (ours) Longest time a removed TCP/SCTP real server is kept draining (weight 0) before it is deleted.
    #[arg(long, value_name = "DURATION", value_parser = duration::parse)]
    pub drain_period: Option<Duration>,
    /// (ours) The Service cluster IP range(s), comma-separated; checked against --cluster-cidr for overlap.
    #[arg(long, value_name = "CIDRS")]
    pub service_cluster_ip_range: Option<String>,
    /// (ours) Read Services and EndpointSlices from YAML files in this directory instead of the API server.
    #[arg(long, value_name = "DIR")]
    pub manifests: Option<PathBuf>,
    /// (ours) Program an in-memory model instead of the kernel: logs every change it would make, touches nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// (ours) The packet filter kept next to IPVS: 'nftables' (default) or 'none' (kernels without nftables; masquerade, LB source ranges and ETP Local pod routing are then NOT enforced).
    #[arg(long, value_enum, value_name = "FILTER")]
    pub packet_filter: Option<PacketFilter>,
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
    fn mode_name(&self) -> &'static str {
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
        }
    }
}

/// The result of resolving flags and file.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The effective configuration.
    pub config: ProxyConfig,
    /// Warnings to log once logging is set up (ignored fields and flags).
    pub warnings: Vec<String>,
}

/// Resolves flags (and the file named by `--config`) into the effective
/// configuration. `node_name_env` is `$NODE_NAME`.
pub fn resolve(flags: &Flags, node_name_env: Option<&str>) -> Result<Resolved, ConfigError> {
    let mut warnings = Vec::new();
    let mut cfg = ProxyConfig::default();
    let mut schema = Schema::V1alpha1;
    match &flags.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            let (file_cfg, file_schema) = parse_document(&text, &mut warnings)?;
            cfg = file_cfg;
            schema = file_schema;
            for name in flags_ignored_with_config(flags) {
                warnings.push(format!(
                    "flag --{name} is ignored because --config is given (as in kube-proxy); set it in the configuration file"
                ));
            }
        }
        None => apply_flags(flags, &mut cfg, &mut warnings)?,
    }
    // Flags that win even over the file.
    if let Some(v) = flags.v {
        cfg.verbosity = v;
    }
    if let Some(f) = flags.log_format {
        cfg.log_format = f;
    }
    if let Some(name) = &flags.hostname_override {
        let name = name.trim();
        if name.is_empty() {
            return Err(invalid(
                "hostnameOverride (--hostname-override)",
                "",
                "empty hostname-override is invalid",
            ));
        }
        cfg.hostname_override = Some(name.to_lowercase());
    }
    if cfg.hostname_override.is_none() {
        if let Some(env) = node_name_env.map(str::trim).filter(|s| !s.is_empty()) {
            cfg.hostname_override = Some(env.to_lowercase());
        }
    }
    if let Some(d) = flags.drain_period {
        cfg.drain_period = d;
    }
    if let Some(s) = &flags.service_cluster_ip_range {
        cfg.service_cidrs = parse_cidr_list("--service-cluster-ip-range", s)?;
    }
    if let Some(p) = flags.packet_filter {
        cfg.packet_filter = p;
    }
    validate_as(&cfg, schema)?;
    Ok(Resolved {
        config: cfg,
        warnings,
    })
}

/// Names of the flags given that `--config` overrides.
fn flags_ignored_with_config(f: &Flags) -> Vec<&'static str> {
    let mut out = Vec::new();
    let mut check = |given: bool, name: &'static str| {
        if given {
            out.push(name);
        }
    };
    check(f.proxy_mode.is_some(), "proxy-mode");
    check(f.kubeconfig.is_some(), "kubeconfig");
    check(f.kube_api_qps.is_some(), "kube-api-qps");
    check(f.kube_api_burst.is_some(), "kube-api-burst");
    check(f.kube_api_content_type.is_some(), "kube-api-content-type");
    check(f.bind_address.is_some(), "bind-address");
    check(f.healthz_bind_address.is_some(), "healthz-bind-address");
    check(f.metrics_bind_address.is_some(), "metrics-bind-address");
    check(f.bind_address_hard_fail.is_some(), "bind-address-hard-fail");
    check(f.ipvs_sync_period.is_some(), "ipvs-sync-period");
    check(f.ipvs_min_sync_period.is_some(), "ipvs-min-sync-period");
    check(f.ipvs_scheduler.is_some(), "ipvs-scheduler");
    check(f.ipvs_exclude_cidrs.is_some(), "ipvs-exclude-cidrs");
    check(f.ipvs_strict_arp.is_some(), "ipvs-strict-arp");
    check(f.ipvs_tcp_timeout.is_some(), "ipvs-tcp-timeout");
    check(f.ipvs_tcpfin_timeout.is_some(), "ipvs-tcpfin-timeout");
    check(f.ipvs_udp_timeout.is_some(), "ipvs-udp-timeout");
    check(f.masquerade_all.is_some(), "masquerade-all");
    check(
        f.iptables_masquerade_bit.is_some(),
        "iptables-masquerade-bit",
    );
    check(f.cluster_cidr.is_some(), "cluster-cidr");
    check(f.detect_local_mode.is_some(), "detect-local-mode");
    check(f.pod_bridge_interface.is_some(), "pod-bridge-interface");
    check(
        f.pod_interface_name_prefix.is_some(),
        "pod-interface-name-prefix",
    );
    check(f.nodeport_addresses.is_some(), "nodeport-addresses");
    check(f.oom_score_adj.is_some(), "oom-score-adj");
    out
}

fn apply_flags(
    f: &Flags,
    cfg: &mut ProxyConfig,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    if let Some(mode) = &f.proxy_mode {
        check_mode("mode (--proxy-mode)", mode)?;
    }
    if let Some(p) = &f.kubeconfig {
        cfg.client.kubeconfig = Some(p.clone());
    }
    if let Some(q) = f.kube_api_qps {
        cfg.client.qps = q;
    }
    if let Some(b) = f.kube_api_burst {
        cfg.client.burst = b;
    }
    if let Some(c) = &f.kube_api_content_type {
        cfg.client.content_type = c.clone();
    }
    if let Some(ip) = f.bind_address {
        cfg.bind_address = ip;
    }
    if let Some(a) = &f.healthz_bind_address {
        cfg.healthz_bind_address =
            parse_bind_address("healthzBindAddress (--healthz-bind-address)", a, 10256)?;
    }
    if let Some(a) = &f.metrics_bind_address {
        cfg.metrics_bind_address =
            parse_bind_address("metricsBindAddress (--metrics-bind-address)", a, 10249)?;
    }
    if let Some(b) = f.bind_address_hard_fail {
        cfg.bind_address_hard_fail = b;
    }
    if let Some(d) = f.ipvs_sync_period {
        cfg.ipvs.sync_period = d;
    }
    if let Some(d) = f.ipvs_min_sync_period {
        cfg.ipvs.min_sync_period = d;
    }
    if let Some(s) = &f.ipvs_scheduler {
        cfg.ipvs.scheduler = if s.is_empty() { "rr".into() } else { s.clone() };
    }
    if let Some(list) = &f.ipvs_exclude_cidrs {
        cfg.ipvs.exclude_cidrs = list
            .iter()
            .filter(|s| !s.trim().is_empty())
            .map(|s| parse_cidr("ipvs.excludeCIDRs (--ipvs-exclude-cidrs)", s))
            .collect::<Result<_, _>>()?;
    }
    if let Some(b) = f.ipvs_strict_arp {
        cfg.ipvs.strict_arp = b;
    }
    if let Some(d) = f.ipvs_tcp_timeout {
        cfg.ipvs.tcp_timeout = d;
    }
    if let Some(d) = f.ipvs_tcpfin_timeout {
        cfg.ipvs.tcp_fin_timeout = d;
    }
    if let Some(d) = f.ipvs_udp_timeout {
        cfg.ipvs.udp_timeout = d;
    }
    if let Some(b) = f.masquerade_all {
        cfg.masquerade_all = b;
    }
    if let Some(bit) = f.iptables_masquerade_bit {
        if !(0..=31).contains(&bit) {
            return Err(invalid(
                "iptables.masqueradeBit (--iptables-masquerade-bit)",
                bit,
                "must be within the range [0, 31]",
            ));
        }
        if bit != 14 {
            warnings.push("flag --iptables-masquerade-bit is ignored: this agent marks packets in its own nftables table".into());
        }
    }
    if let Some(c) = &f.cluster_cidr {
        cfg.cluster_cidrs = parse_cidr_list("clusterCIDR (--cluster-cidr)", c)?;
    }
    cfg.detect_local = detect_local(
        "detectLocalMode (--detect-local-mode)",
        f.detect_local_mode.as_deref().unwrap_or(""),
        f.pod_bridge_interface.as_deref().unwrap_or(""),
        f.pod_interface_name_prefix.as_deref().unwrap_or(""),
    )?;
    if let Some(list) = &f.nodeport_addresses {
        cfg.node_port_addresses =
            parse_node_port_addresses("nodePortAddresses (--nodeport-addresses)", list, warnings)?;
    }
    if let Some(n) = f.oom_score_adj {
        cfg.oom_score_adj = n;
    }
    Ok(())
}

fn check_mode(field: &str, mode: &str) -> Result<(), ConfigError> {
    match mode {
        "" | "ipvs" => Ok(()),
        other => Err(invalid(
            field,
            other,
            "ipvs-proxy only implements the 'ipvs' proxy mode; run kube-proxy for iptables or nftables",
        )),
    }
}

fn parse_cidr(field: &str, s: &str) -> Result<IpNet, ConfigError> {
    s.trim()
        .parse::<IpNet>()
        .map_err(|_| invalid(field, s, "must be a valid IP block (e.g. 10.0.0.0/8)"))
}

fn parse_cidr_list(field: &str, s: &str) -> Result<Vec<IpNet>, ConfigError> {
    let cidrs: Vec<IpNet> = s
        .split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| parse_cidr(field, p))
        .collect::<Result<_, _>>()?;
    match cidrs.as_slice() {
        [] | [_] => Ok(cidrs),
        [a, b] if a.addr().is_ipv4() != b.addr().is_ipv4() => Ok(cidrs),
        _ => Err(invalid(
            field,
            s,
            "only one CIDR allowed or a valid dual-stack pair (e.g. 10.100.0.0/16,fde4:8dba:82e1::/48)",
        )),
    }
}

fn parse_bind_address(
    field: &str,
    s: &str,
    default_port: u16,
) -> Result<Option<SocketAddr>, ConfigError> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        if sa.port() == 0 {
            return Err(invalid(field, s, "must be a valid port"));
        }
        return Ok(Some(sa));
    }
    // kube-proxy appends the default port to a bare IP.
    let bare = s.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(Some(SocketAddr::new(ip, default_port)));
    }
    Err(invalid(field, s, "must be IP:port"))
}

fn detect_local(
    field: &str,
    mode: &str,
    bridge: &str,
    prefix: &str,
) -> Result<DetectLocal, ConfigError> {
    match mode {
        "" | "ClusterCIDR" => Ok(DetectLocal::ClusterCidr),
        "NodeCIDR" => Ok(DetectLocal::NodeCidr),
        "BridgeInterface" => {
            if bridge.is_empty() {
                Err(invalid(
                    "detectLocal.bridgeInterface (--pod-bridge-interface)",
                    bridge,
                    "must be set when detectLocalMode is BridgeInterface",
                ))
            } else {
                Ok(DetectLocal::BridgeInterface(bridge.to_string()))
            }
        }
        "InterfaceNamePrefix" => {
            if prefix.is_empty() {
                Err(invalid(
                    "detectLocal.interfaceNamePrefix (--pod-interface-name-prefix)",
                    prefix,
                    "must be set when detectLocalMode is InterfaceNamePrefix",
                ))
            } else {
                Ok(DetectLocal::InterfaceNamePrefix(prefix.to_string()))
            }
        }
        other => Err(invalid(
            field,
            other,
            "must be ClusterCIDR, NodeCIDR, BridgeInterface or InterfaceNamePrefix",
        )),
    }
}

fn parse_node_port_addresses(
    field: &str,
    list: &[String],
    warnings: &mut Vec<String>,
) -> Result<Vec<NodePortAddress>, ConfigError> {
    let mut out = Vec::new();
    for item in list.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        match item {
            "primary" => out.push(NodePortAddress::Primary),
            "all" => {
                out.push(NodePortAddress::Cidr("0.0.0.0/0".parse().expect("literal")));
                out.push(NodePortAddress::Cidr("::/0".parse().expect("literal")));
            }
            "localhost" => warnings.push(format!(
                "{field}: 'localhost' is ignored: NodePorts on loopback are not supported in IPVS mode (as in kube-proxy)"
            )),
            cidr => {
                let net = parse_cidr(field, cidr)?;
                if net.addr().is_loopback() {
                    warnings.push(format!(
                        "{field}: loopback range {net} serves no NodePorts in IPVS mode"
                    ));
                }
                out.push(NodePortAddress::Cidr(net));
            }
        }
    }
    Ok(out)
}

/// Which names a validation error uses for a field: kube-proxy's flags and
/// v1alpha1 paths (flags, v1alpha1 files), or v1alpha2 paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Schema {
    /// `kubeproxy.config.k8s.io/v1alpha1` (and the flags, which follow it).
    V1alpha1,
    /// `kubeproxy.config.k8s.io/v1alpha2`.
    V1alpha2,
}

impl Schema {
    fn sync_period(self) -> &'static str {
        match self {
            Self::V1alpha1 => "ipvs.syncPeriod (--ipvs-sync-period)",
            Self::V1alpha2 => "syncPeriod (--ipvs-sync-period)",
        }
    }
    fn min_sync_period(self) -> &'static str {
        match self {
            Self::V1alpha1 => "ipvs.minSyncPeriod",
            Self::V1alpha2 => "minSyncPeriod",
        }
    }
    fn cluster_cidr(self) -> &'static str {
        match self {
            Self::V1alpha1 => "clusterCIDR (--cluster-cidr)",
            Self::V1alpha2 => "detectLocal.clusterCIDRs (--cluster-cidr)",
        }
    }
    fn oom_score_adj(self) -> &'static str {
        match self {
            Self::V1alpha1 => "oomScoreAdj (--oom-score-adj)",
            Self::V1alpha2 => "linux.oomScoreAdj (--oom-score-adj)",
        }
    }
}

/// Validates the effective configuration (kube-proxy's rules for the IPVS
/// mode, plus the service/cluster CIDR overlap check). Errors name the
/// v1alpha1 field and its flag.
pub fn validate(cfg: &ProxyConfig) -> Result<(), ConfigError> {
    validate_as(cfg, Schema::V1alpha1)
}

fn validate_as(cfg: &ProxyConfig, schema: Schema) -> Result<(), ConfigError> {
    let ipvs = &cfg.ipvs;
    if ipvs.sync_period.is_zero() {
        return Err(invalid(
            schema.sync_period(),
            duration::format(ipvs.sync_period),
            "must be greater than 0",
        ));
    }
    if ipvs.min_sync_period > ipvs.sync_period {
        return Err(invalid(
            schema.sync_period(),
            duration::format(ipvs.sync_period),
            format!(
                "must be greater than or equal to {} ({})",
                schema.min_sync_period(),
                duration::format(ipvs.min_sync_period)
            ),
        ));
    }
    if !SCHEDULERS.contains(&ipvs.scheduler.as_str()) {
        return Err(invalid(
            "ipvs.scheduler (--ipvs-scheduler)",
            &ipvs.scheduler,
            format!("must be one of {}", SCHEDULERS.join(", ")),
        ));
    }
    if cfg.client.burst < 0 {
        return Err(invalid(
            "clientConnection.burst (--kube-api-burst)",
            cfg.client.burst,
            "must be greater than or equal to 0",
        ));
    }
    // Like kube-proxy, only burst is checked: a negative qps means no
    // client-side rate limit in client-go (agent/src/ratelimit.rs).
    if !cfg.client.qps.is_finite() {
        return Err(invalid(
            "clientConnection.qps (--kube-api-qps)",
            cfg.client.qps,
            "must be a finite number",
        ));
    }
    if !(-1000..=1000).contains(&cfg.oom_score_adj) {
        return Err(invalid(
            schema.oom_score_adj(),
            cfg.oom_score_adj,
            "must be within the range [-1000, 1000]",
        ));
    }
    for s in &cfg.service_cidrs {
        for c in &cfg.cluster_cidrs {
            if s.contains(&c.network()) || c.contains(&s.network()) {
                return Err(invalid(
                    schema.cluster_cidr(),
                    c,
                    format!("overlaps the service CIDR {s} (--service-cluster-ip-range); pod and service ranges must be disjoint"),
                ));
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The configuration file.

/// One mapping of the file with the keys read so far, so that the rest can be
/// reported as unknown.
struct Section<'a> {
    path: String,
    map: &'a Mapping,
    seen: BTreeSet<String>,
}

impl<'a> Section<'a> {
    fn new(path: &str, map: &'a Mapping) -> Self {
        Self {
            path: path.to_string(),
            map,
            seen: BTreeSet::new(),
        }
    }

    fn field_name(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{}", self.path, key)
        }
    }

    fn raw(&mut self, key: &str) -> Option<&'a Value> {
        self.seen.insert(key.to_string());
        match self.map.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        }
    }

    fn get<T: DeserializeOwned>(&mut self, key: &str) -> Result<Option<T>, ConfigError> {
        let name = self.field_name(key);
        match self.raw(key) {
            None => Ok(None),
            Some(v) => serde_yaml::from_value(v.clone())
                .map(Some)
                .map_err(|e| invalid(&name, value_text(v), e)),
        }
    }

    fn duration(&mut self, key: &str) -> Result<Option<Duration>, ConfigError> {
        let name = self.field_name(key);
        match self.get::<String>(key)? {
            None => Ok(None),
            Some(s) => duration::parse(&s)
                .map(Some)
                .map_err(|e| invalid(&name, &s, e.reason)),
        }
    }

    fn section(&mut self, key: &str) -> Result<Option<Section<'a>>, ConfigError> {
        let name = self.field_name(key);
        match self.raw(key) {
            None => Ok(None),
            Some(Value::Mapping(m)) => Ok(Some(Section::new(&name, m))),
            Some(v) => Err(invalid(&name, value_text(v), "must be a mapping")),
        }
    }

    /// A field we do not implement: warn when it is set to anything but
    /// kube-proxy's default (`defaults`) or an empty value.
    fn ignore(&mut self, key: &str, defaults: &[&str], why: &str, warnings: &mut Vec<String>) {
        let name = self.field_name(key);
        if let Some(v) = self.raw(key) {
            let text = value_text(v);
            if !is_empty_value(v) && !defaults.contains(&text.as_str()) {
                warnings.push(format!("configuration field {name} is ignored: {why}"));
            }
        }
    }

    /// A v1alpha1 field found in a v1alpha2 document: kube-proxy refuses it
    /// (strict decoding, `configHardFail` defaults to true), so do we, naming
    /// where it lives now; with `configHardFail: false` it is a warning and
    /// the value is not used.
    fn moved(
        &mut self,
        key: &str,
        now: &str,
        hard_fail: bool,
        warnings: &mut Vec<String>,
    ) -> Result<(), ConfigError> {
        let name = self.field_name(key);
        let Some(v) = self.raw(key) else {
            return Ok(());
        };
        let reason = format!("{name} is a {API_VERSION} field; in {API_VERSION_V1ALPHA2} {now}");
        if hard_fail {
            Err(invalid(
                &name,
                value_text(v),
                format!("{reason} (configHardFail: false turns this into a warning)"),
            ))
        } else {
            warnings.push(format!("configuration field {name} is ignored: {reason}"));
            Ok(())
        }
    }

    fn finish(self, warnings: &mut Vec<String>) {
        for key in self.map.keys() {
            let key = value_text(key);
            if !self.seen.contains(&key) {
                warnings.push(format!(
                    "unknown configuration field {} is ignored",
                    self.field_name(&key)
                ));
            }
        }
    }
}

/// Null, false, zero, "", "0s", and collections of only such values.
fn is_empty_value(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(false) => true,
        Value::Mapping(m) => m.values().all(is_empty_value),
        Value::Sequence(s) => s.iter().all(is_empty_value),
        other => matches!(value_text(other).as_str(), "" | "0" | "0s"),
    }
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => serde_yaml::to_string(other)
            .map(|s| s.trim_end().to_string())
            .unwrap_or_default(),
    }
}

/// Parses a `KubeProxyConfiguration` document (`kubeproxy.config.k8s.io/v1alpha1`
/// or `v1alpha2`) into the effective configuration, with kube-proxy's defaults
/// of that version for absent fields. Ignored fields produce warnings.
pub fn parse_config_file(
    text: &str,
    warnings: &mut Vec<String>,
) -> Result<ProxyConfig, ConfigError> {
    parse_document(text, warnings).map(|(cfg, _)| cfg)
}

/// [`parse_config_file`], also saying which version the document was.
fn parse_document(
    text: &str,
    warnings: &mut Vec<String>,
) -> Result<(ProxyConfig, Schema), ConfigError> {
    let doc: Value = serde_yaml::from_str(text).map_err(ConfigError::Syntax)?;
    let empty = Mapping::new();
    let map = match &doc {
        Value::Mapping(m) => m,
        Value::Null => &empty,
        other => {
            return Err(invalid(
                "(document)",
                value_text(other),
                "must be a mapping",
            ))
        }
    };
    let mut top = Section::new("", map);
    let mut cfg = ProxyConfig::default();

    let versions = format!("must be {API_VERSION} or {API_VERSION_V1ALPHA2}");
    let schema = match top.get::<String>("apiVersion")? {
        Some(v) if v == API_VERSION => Schema::V1alpha1,
        Some(v) if v == API_VERSION_V1ALPHA2 => Schema::V1alpha2,
        Some(v) => return Err(invalid("apiVersion", v, versions)),
        None => return Err(invalid("apiVersion", "", versions)),
    };
    match top.get::<String>("kind")? {
        Some(k) if k == KIND => {}
        other => {
            return Err(invalid(
                "kind",
                other.unwrap_or_default(),
                format!("must be {KIND}"),
            ))
        }
    }
    // The fields both versions share, at the same paths.
    if let Some(mode) = top.get::<String>("mode")? {
        check_mode("mode", &mode)?;
    }
    if let Some(name) = top.get::<String>("hostnameOverride")? {
        let name = name.trim().to_lowercase();
        if !name.is_empty() {
            cfg.hostname_override = Some(name);
        }
    }
    if let Some(b) = top.get::<bool>("bindAddressHardFail")? {
        cfg.bind_address_hard_fail = b;
    }
    if let Some(list) = top.get::<Vec<String>>("nodePortAddresses")? {
        cfg.node_port_addresses = parse_node_port_addresses("nodePortAddresses", &list, warnings)?;
    }
    if let Some(mut cc) = top.section("clientConnection")? {
        parse_client_connection(&mut cc, &mut cfg, warnings)?;
        cc.finish(warnings);
    }
    if let Some(mut logging) = top.section("logging")? {
        parse_logging(&mut logging, &mut cfg, warnings)?;
        logging.finish(warnings);
    }
    match schema {
        Schema::V1alpha1 => parse_v1alpha1(&mut top, &mut cfg, warnings)?,
        Schema::V1alpha2 => parse_v1alpha2(&mut top, &mut cfg, warnings)?,
    }
    top.ignore(
        "featureGates",
        &[],
        "the agent has no feature gates",
        warnings,
    );
    top.ignore(
        "enableProfiling",
        &[],
        "no profiling handler is served",
        warnings,
    );
    top.ignore(
        "showHiddenMetricsForVersion",
        &[],
        "no metric is hidden",
        warnings,
    );
    top.ignore(
        "configSyncPeriod",
        &["15m0s", "15m"],
        "watches have no informer resync; the sync period drives the full reconcile",
        warnings,
    );
    top.ignore("winkernel", &[], "Windows only", warnings);
    top.finish(warnings);
    Ok((cfg, schema))
}

fn parse_client_connection(
    cc: &mut Section<'_>,
    cfg: &mut ProxyConfig,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    if let Some(p) = cc.get::<String>("kubeconfig")? {
        if !p.is_empty() {
            cfg.client.kubeconfig = Some(PathBuf::from(p));
        }
    }
    if let Some(q) = cc.get::<f32>("qps")? {
        if q != 0.0 {
            cfg.client.qps = q;
        }
    }
    if let Some(b) = cc.get::<i32>("burst")? {
        if b != 0 {
            cfg.client.burst = b;
        }
    }
    if let Some(c) = cc.get::<String>("contentType")? {
        if !c.is_empty() {
            cfg.client.content_type = c;
        }
    }
    cc.ignore(
        "acceptContentTypes",
        &[],
        "the agent always speaks JSON",
        warnings,
    );
    Ok(())
}

fn parse_logging(
    logging: &mut Section<'_>,
    cfg: &mut ProxyConfig,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    if let Some(f) = logging.get::<String>("format")? {
        cfg.log_format = LogFormat::parse(&logging.field_name("format"), &f)?;
    }
    if let Some(v) = logging.get::<u8>("verbosity")? {
        cfg.verbosity = v;
    }
    logging.ignore(
        "flushFrequency",
        &["5s", "5000000000"],
        "logs are not buffered",
        warnings,
    );
    logging.ignore(
        "vmodule",
        &[],
        "use RUST_LOG for per-module levels",
        warnings,
    );
    logging.ignore(
        "options",
        &[],
        "no logging options are implemented",
        warnings,
    );
    Ok(())
}

/// The IPVS fields both versions keep in `ipvs`.
fn parse_ipvs_common(ipvs: &mut Section<'_>, cfg: &mut ProxyConfig) -> Result<(), ConfigError> {
    if let Some(s) = ipvs.get::<String>("scheduler")? {
        if !s.is_empty() {
            cfg.ipvs.scheduler = s;
        }
    }
    if let Some(list) = ipvs.get::<Vec<String>>("excludeCIDRs")? {
        let name = ipvs.field_name("excludeCIDRs");
        cfg.ipvs.exclude_cidrs = list
            .iter()
            .map(|s| parse_cidr(&name, s))
            .collect::<Result<_, _>>()?;
    }
    if let Some(b) = ipvs.get::<bool>("strictARP")? {
        cfg.ipvs.strict_arp = b;
    }
    if let Some(d) = ipvs.duration("tcpTimeout")? {
        cfg.ipvs.tcp_timeout = d;
    }
    if let Some(d) = ipvs.duration("tcpFinTimeout")? {
        cfg.ipvs.tcp_fin_timeout = d;
    }
    if let Some(d) = ipvs.duration("udpTimeout")? {
        cfg.ipvs.udp_timeout = d;
    }
    Ok(())
}

/// `detectLocalMode` and `detectLocal` (v1alpha2 adds `detectLocal.clusterCIDRs`).
fn parse_detect_local(
    top: &mut Section<'_>,
    cfg: &mut ProxyConfig,
    schema: Schema,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    let mode = top.get::<String>("detectLocalMode")?.unwrap_or_default();
    let (mut bridge, mut prefix) = (String::new(), String::new());
    if let Some(mut dl) = top.section("detectLocal")? {
        bridge = dl.get::<String>("bridgeInterface")?.unwrap_or_default();
        prefix = dl.get::<String>("interfaceNamePrefix")?.unwrap_or_default();
        if schema == Schema::V1alpha2 {
            if let Some(list) = dl.get::<Vec<String>>("clusterCIDRs")? {
                cfg.cluster_cidrs = parse_cidr_list("detectLocal.clusterCIDRs", &list.join(","))?;
            }
        }
        dl.finish(warnings);
    }
    cfg.detect_local = detect_local("detectLocalMode", &mode, &bridge, &prefix)?;
    Ok(())
}

/// `conntrack` (v1alpha1) or `linux.conntrack` (v1alpha2): left to the node;
/// each field is warned about when it differs from kube-proxy's default.
fn ignore_conntrack(ct: &mut Section<'_>, warnings: &mut Vec<String>) {
    let why = "conntrack limits and timeouts are left to the node (set them with sysctl)";
    ct.ignore("maxPerCore", &["32768"], why, warnings);
    ct.ignore("min", &["131072"], why, warnings);
    ct.ignore("tcpEstablishedTimeout", &["24h0m0s", "24h"], why, warnings);
    ct.ignore("tcpCloseWaitTimeout", &["1h0m0s", "1h"], why, warnings);
    ct.ignore("tcpBeLiberal", &[], why, warnings);
    ct.ignore("udpTimeout", &[], why, warnings);
    ct.ignore("udpStreamTimeout", &[], why, warnings);
}

/// A masquerade bit: validated ([0, 31]) and, unless kube-proxy's 14, warned
/// about: the agent marks packets in its own nftables table.
fn check_masquerade_bit(
    sec: &mut Section<'_>,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    let name = sec.field_name("masqueradeBit");
    match sec.get::<i32>("masqueradeBit")? {
        Some(bit) if !(0..=31).contains(&bit) => {
            Err(invalid(&name, bit, "must be within the range [0, 31]"))
        }
        Some(bit) if bit != 14 => {
            warnings.push(format!(
                "configuration field {name} is ignored: this agent marks packets in its own nftables table"
            ));
            Ok(())
        }
        _ => Ok(()),
    }
}

fn parse_v1alpha1(
    top: &mut Section<'_>,
    cfg: &mut ProxyConfig,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    if let Some(s) = top.get::<String>("bindAddress")? {
        if !s.is_empty() {
            cfg.bind_address = s.parse().map_err(|_| {
                invalid(
                    "bindAddress",
                    &s,
                    "not a valid textual representation of an IP address",
                )
            })?;
        }
    }
    if let Some(s) = top.get::<String>("healthzBindAddress")? {
        cfg.healthz_bind_address = parse_bind_address("healthzBindAddress", &s, 10256)?;
    }
    if let Some(s) = top.get::<String>("metricsBindAddress")? {
        cfg.metrics_bind_address = parse_bind_address("metricsBindAddress", &s, 10249)?;
    }
    if let Some(s) = top.get::<String>("clusterCIDR")? {
        cfg.cluster_cidrs = parse_cidr_list("clusterCIDR", &s)?;
    }
    parse_detect_local(top, cfg, Schema::V1alpha1, warnings)?;
    if let Some(n) = top.get::<i32>("oomScoreAdj")? {
        cfg.oom_score_adj = n;
    }
    if let Some(mut ipvs) = top.section("ipvs")? {
        if let Some(d) = ipvs.duration("syncPeriod")? {
            if !d.is_zero() {
                cfg.ipvs.sync_period = d;
            }
        }
        if let Some(d) = ipvs.duration("minSyncPeriod")? {
            cfg.ipvs.min_sync_period = d;
        }
        parse_ipvs_common(&mut ipvs, cfg)?;
        ipvs.finish(warnings);
    }
    if let Some(mut ipt) = top.section("iptables")? {
        if let Some(b) = ipt.get::<bool>("masqueradeAll")? {
            cfg.masquerade_all = b;
        }
        check_masquerade_bit(&mut ipt, warnings)?;
        let why = "only used by kube-proxy's iptables mode";
        ipt.ignore("syncPeriod", &["30s"], why, warnings);
        ipt.ignore("minSyncPeriod", &["1s"], why, warnings);
        ipt.ignore("localhostNodePorts", &["true"], why, warnings);
        ipt.ignore("snatNodeInternalIP", &[], why, warnings);
        ipt.finish(warnings);
    }
    if let Some(mut ct) = top.section("conntrack")? {
        ignore_conntrack(&mut ct, warnings);
        ct.finish(warnings);
    }
    top.ignore("portRange", &[], "userspace mode is gone", warnings);
    top.ignore(
        "udpIdleTimeout",
        &["250ms"],
        "userspace mode is gone",
        warnings,
    );
    top.ignore(
        "nftables",
        &[],
        "only used by kube-proxy's nftables mode",
        warnings,
    );
    top.ignore("windowsRunAsService", &[], "Windows only", warnings);
    Ok(())
}

fn parse_v1alpha2(
    top: &mut Section<'_>,
    cfg: &mut ProxyConfig,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    // Read first: it decides whether v1alpha1 leftovers stop the start.
    let hard_fail = top.get::<bool>("configHardFail")?.unwrap_or(true);
    let moved: &[(&str, &str)] = &[
        ("bindAddress", "it is nodeIPOverride (a list)"),
        (
            "healthzBindAddress",
            "it is healthzBindAddresses (CIDRs) and healthzBindPort",
        ),
        (
            "metricsBindAddress",
            "it is metricsBindAddresses (CIDRs) and metricsBindPort",
        ),
        ("clusterCIDR", "it is detectLocal.clusterCIDRs (a list)"),
        ("oomScoreAdj", "it is linux.oomScoreAdj"),
        ("conntrack", "it is linux.conntrack"),
        ("windowsRunAsService", "it is windows.runAsService"),
        ("portRange", "it was dropped"),
        ("udpIdleTimeout", "it was dropped"),
    ];
    for (key, now) in moved {
        top.moved(key, now, hard_fail, warnings)?;
    }

    if let Some(d) = top.duration("syncPeriod")? {
        if !d.is_zero() {
            cfg.ipvs.sync_period = d;
        }
    }
    // v1alpha2 defaults an unset or zero minSyncPeriod to 1s (kube-proxy's
    // SetDefaults_KubeProxyConfiguration); v1alpha1's ipvs.minSyncPeriod was 0s.
    cfg.ipvs.min_sync_period = Duration::from_secs(1);
    match top.duration("minSyncPeriod")? {
        Some(d) if d.is_zero() => warnings.push(
            "configuration field minSyncPeriod: 0s means unset in kubeproxy.config.k8s.io/v1alpha2; kube-proxy's default 1s applies".into(),
        ),
        Some(d) => cfg.ipvs.min_sync_period = d,
        None => {}
    }
    let node_ips = top.get::<Vec<String>>("nodeIPOverride")?;
    if let Some(list) = node_ips {
        cfg.bind_address = parse_node_ip_override(&list)?;
    }
    cfg.healthz_bind_address = Some(bind_from_cidrs(
        top,
        "healthzBindAddresses",
        "healthzBindPort",
        &["0.0.0.0/0", "::/0"],
        10256,
    )?);
    cfg.metrics_bind_address = Some(bind_from_cidrs(
        top,
        "metricsBindAddresses",
        "metricsBindPort",
        &["127.0.0.0/8", "::1/128"],
        10249,
    )?);
    parse_detect_local(top, cfg, Schema::V1alpha2, warnings)?;
    if let Some(mut linux) = top.section("linux")? {
        if let Some(n) = linux.get::<i32>("oomScoreAdj")? {
            cfg.oom_score_adj = n;
        }
        if let Some(b) = linux.get::<bool>("masqueradeAll")? {
            cfg.masquerade_all = b;
        }
        if let Some(mut ct) = linux.section("conntrack")? {
            ignore_conntrack(&mut ct, warnings);
            ct.finish(warnings);
        }
        linux.finish(warnings);
    }
    if let Some(mut ipvs) = top.section("ipvs")? {
        ipvs.moved(
            "syncPeriod",
            "it is syncPeriod (top level)",
            hard_fail,
            warnings,
        )?;
        ipvs.moved(
            "minSyncPeriod",
            "it is minSyncPeriod (top level)",
            hard_fail,
            warnings,
        )?;
        check_masquerade_bit(&mut ipvs, warnings)?;
        parse_ipvs_common(&mut ipvs, cfg)?;
        ipvs.finish(warnings);
    }
    if let Some(mut ipt) = top.section("iptables")? {
        ipt.moved(
            "masqueradeAll",
            "it is linux.masqueradeAll",
            hard_fail,
            warnings,
        )?;
        ipt.moved(
            "syncPeriod",
            "it is syncPeriod (top level)",
            hard_fail,
            warnings,
        )?;
        ipt.moved(
            "minSyncPeriod",
            "it is minSyncPeriod (top level)",
            hard_fail,
            warnings,
        )?;
        let why = "only used by kube-proxy's iptables mode";
        ipt.ignore("masqueradeBit", &["14"], why, warnings);
        ipt.ignore("localhostNodePorts", &["true"], why, warnings);
        ipt.finish(warnings);
    }
    if let Some(mut nft) = top.section("nftables")? {
        nft.moved(
            "masqueradeAll",
            "it is linux.masqueradeAll",
            hard_fail,
            warnings,
        )?;
        nft.moved(
            "syncPeriod",
            "it is syncPeriod (top level)",
            hard_fail,
            warnings,
        )?;
        nft.moved(
            "minSyncPeriod",
            "it is minSyncPeriod (top level)",
            hard_fail,
            warnings,
        )?;
        nft.ignore(
            "masqueradeBit",
            &["14"],
            "only used by kube-proxy's nftables mode",
            warnings,
        );
        nft.finish(warnings);
    }
    top.ignore("windows", &[], "Windows only", warnings);
    Ok(())
}

/// `nodeIPOverride`: the node's primary IP. `0.0.0.0`/`::` mean none; the
/// agent holds one override, so two IPs (a dual-stack pair) are refused
/// rather than half applied.
fn parse_node_ip_override(list: &[String]) -> Result<IpAddr, ConfigError> {
    let mut ips = Vec::new();
    for (i, s) in list.iter().enumerate() {
        let s = s.trim();
        if s.is_empty() {
            continue;
        }
        let ip: IpAddr = s.parse().map_err(|_| {
            invalid(
                &format!("nodeIPOverride[{i}]"),
                s,
                "not a valid textual representation of an IP address",
            )
        })?;
        if !ip.is_unspecified() {
            ips.push(ip);
        }
    }
    match ips.as_slice() {
        [] => Ok(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        [ip] => Ok(*ip),
        _ => Err(invalid(
            "nodeIPOverride",
            list.join(","),
            "ipvs-proxy takes one primary IP override; a dual-stack pair is not supported yet",
        )),
    }
}

/// v1alpha2's `*BindAddresses` (CIDRs holding the node IPs to serve on) and
/// `*BindPort`, as the one socket address the agent binds: all addresses
/// (`0.0.0.0/0` and/or `::/0`: the IPv4 wildcard when it is listed, else
/// `[::]`), loopback (`127.0.0.0/8` and/or `::1/128`: `127.0.0.1` when listed,
/// else `[::1]`), or one host prefix (`10.0.0.5/32`). Other ranges would need
/// the node's addresses to pick from and are refused, naming the field.
fn bind_from_cidrs(
    top: &mut Section<'_>,
    addrs_key: &str,
    port_key: &str,
    default_addrs: &[&str],
    default_port: u16,
) -> Result<SocketAddr, ConfigError> {
    let port = match top.get::<i64>(port_key)? {
        None | Some(0) => default_port,
        Some(p) => u16::try_from(p)
            .map_err(|_| invalid(port_key, p, "must be a valid port number (1-65535)"))?,
    };
    let given = top
        .get::<Vec<String>>(addrs_key)?
        .unwrap_or_default()
        .into_iter()
        .filter(|s| !s.trim().is_empty())
        .collect::<Vec<_>>();
    let list: Vec<String> = if given.is_empty() {
        default_addrs.iter().map(|s| s.to_string()).collect()
    } else {
        given
    };
    let mut nets = Vec::new();
    for (i, s) in list.iter().enumerate() {
        nets.push(parse_cidr(&format!("{addrs_key}[{i}]"), s)?);
    }
    // The address a host prefix names (10.0.0.5/32 -> 10.0.0.5).
    let host = |n: &IpNet| (n.prefix_len() == n.max_prefix_len()).then(|| n.addr());
    let v4 = nets.iter().find(|n| n.addr().is_ipv4());
    let ip = if let [n] = nets.as_slice() {
        match host(n) {
            Some(ip) => ip,
            None if n.prefix_len() == 0 => n.network(),
            None if n.addr().is_loopback() && n.addr().is_ipv4() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            None => return Err(one_address(addrs_key, &list)),
        }
    } else if nets.iter().all(|n| n.prefix_len() == 0) {
        v4.map_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED), |n| n.network())
    } else if nets.iter().all(|n| n.addr().is_loopback()) {
        v4.map_or(IpAddr::V6(Ipv6Addr::LOCALHOST), |n| {
            host(n).unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
        })
    } else {
        return Err(one_address(addrs_key, &list));
    };
    Ok(SocketAddr::new(ip, port))
}

fn one_address(field: &str, list: &[String]) -> ConfigError {
    invalid(
        field,
        list.join(","),
        "ipvs-proxy serves on one address: give one host prefix (e.g. 10.0.0.5/32), 0.0.0.0/0 and/or ::/0 (all addresses), or 127.0.0.0/8 and/or ::1/128 (loopback)",
    )
}

/// Renders the configuration as a `KubeProxyConfiguration` YAML document
/// (what `--write-config-to` writes); [`parse_config_file`] reads it back to
/// the same configuration, except the agent-only fields.
pub fn to_yaml(cfg: &ProxyConfig) -> String {
    let addr = |a: &Option<SocketAddr>| a.map(|a| a.to_string()).unwrap_or_default();
    let cidrs = |v: &[IpNet]| v.iter().map(|c| c.to_string()).collect::<Vec<_>>();
    let (bridge, prefix) = match &cfg.detect_local {
        DetectLocal::BridgeInterface(b) => (b.clone(), String::new()),
        DetectLocal::InterfaceNamePrefix(p) => (String::new(), p.clone()),
        _ => (String::new(), String::new()),
    };
    let npa: Vec<String> = cfg
        .node_port_addresses
        .iter()
        .map(|a| match a {
            NodePortAddress::Primary => "primary".to_string(),
            NodePortAddress::Cidr(c) => c.to_string(),
        })
        .collect();
    let doc = serde_json::json!({
        "apiVersion": API_VERSION,
        "kind": KIND,
        "bindAddress": cfg.bind_address.to_string(),
        "bindAddressHardFail": cfg.bind_address_hard_fail,
        "clientConnection": {
            "kubeconfig": cfg.client.kubeconfig.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
            "qps": cfg.client.qps,
            "burst": cfg.client.burst,
            "contentType": cfg.client.content_type,
        },
        "clusterCIDR": cidrs(&cfg.cluster_cidrs).join(","),
        "detectLocalMode": cfg.detect_local.mode_name(),
        "detectLocal": { "bridgeInterface": bridge, "interfaceNamePrefix": prefix },
        "healthzBindAddress": addr(&cfg.healthz_bind_address),
        "hostnameOverride": cfg.hostname_override.clone().unwrap_or_default(),
        "iptables": { "masqueradeAll": cfg.masquerade_all, "masqueradeBit": 14 },
        "ipvs": {
            "syncPeriod": duration::format(cfg.ipvs.sync_period),
            "minSyncPeriod": duration::format(cfg.ipvs.min_sync_period),
            "scheduler": cfg.ipvs.scheduler,
            "excludeCIDRs": cidrs(&cfg.ipvs.exclude_cidrs),
            "strictARP": cfg.ipvs.strict_arp,
            "tcpTimeout": duration::format(cfg.ipvs.tcp_timeout),
            "tcpFinTimeout": duration::format(cfg.ipvs.tcp_fin_timeout),
            "udpTimeout": duration::format(cfg.ipvs.udp_timeout),
        },
        "logging": { "format": cfg.log_format.as_str(), "verbosity": cfg.verbosity },
        "metricsBindAddress": addr(&cfg.metrics_bind_address),
        "mode": "ipvs",
        "nodePortAddresses": npa,
        "oomScoreAdj": cfg.oom_score_adj,
    });
    serde_yaml::to_string(&doc).unwrap_or_default()
}

/// Writes [`to_yaml`] to `path`.
pub fn write_config(cfg: &ProxyConfig, path: &std::path::Path) -> Result<(), ConfigError> {
    std::fs::write(path, to_yaml(cfg)).map_err(|source| ConfigError::Write {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        flags: Flags,
    }

    fn flags(args: &[&str]) -> Flags {
        let mut v = vec!["ipvs-proxy"];
        v.extend_from_slice(args);
        Cli::try_parse_from(v).expect("flags parse").flags
    }

    fn resolve_args(args: &[&str]) -> Result<Resolved, ConfigError> {
        resolve(&flags(args), None)
    }

    fn field_of(err: ConfigError) -> String {
        match err {
            ConfigError::Invalid { field, .. } => field,
            other => panic!("expected Invalid, got {other}"),
        }
    }

    fn temp_file(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ipvs-proxy-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write temp");
        p
    }

    #[test]
    fn defaults_match_kube_proxy() {
        let r = resolve_args(&[]).unwrap();
        let c = r.config;
        assert_eq!(
            c.healthz_bind_address,
            Some("0.0.0.0:10256".parse().unwrap())
        );
        assert_eq!(
            c.metrics_bind_address,
            Some("127.0.0.1:10249".parse().unwrap())
        );
        assert_eq!(c.ipvs.sync_period, Duration::from_secs(30));
        assert_eq!(c.ipvs.min_sync_period, Duration::ZERO);
        assert_eq!(c.ipvs.scheduler, "rr");
        assert_eq!(c.client.qps, 5.0);
        assert_eq!(c.client.burst, 10);
        assert_eq!(c.detect_local, DetectLocal::ClusterCidr);
        assert!(r.warnings.is_empty());
    }

    #[test]
    fn flags_apply_without_config() {
        let c = resolve_args(&[
            "--ipvs-scheduler=wlc",
            "--ipvs-sync-period",
            "1m",
            "--ipvs-min-sync-period=2s",
            "--ipvs-exclude-cidrs=10.9.0.0/16,fd00::/64",
            "--ipvs-strict-arp",
            "--ipvs-tcp-timeout=15m",
            "--ipvs-udp-timeout=30s",
            "--masquerade-all=true",
            "--cluster-cidr=10.244.0.0/16,fd00:244::/56",
            "--nodeport-addresses=primary,192.168.0.0/16",
            "--healthz-bind-address=127.0.0.1:20256",
            "--metrics-bind-address=",
            "--kube-api-qps=50",
            "--kube-api-burst=100",
            "-v",
            "4",
        ])
        .unwrap()
        .config;
        assert_eq!(c.ipvs.scheduler, "wlc");
        assert_eq!(c.ipvs.sync_period, Duration::from_secs(60));
        assert_eq!(c.ipvs.min_sync_period, Duration::from_secs(2));
        assert_eq!(c.ipvs.exclude_cidrs.len(), 2);
        assert!(c.ipvs.strict_arp);
        assert_eq!(c.ipvs.tcp_timeout, Duration::from_secs(900));
        assert_eq!(c.ipvs.udp_timeout, Duration::from_secs(30));
        assert!(c.masquerade_all);
        assert_eq!(c.cluster_cidrs.len(), 2);
        assert_eq!(
            c.node_port_addresses,
            vec![
                NodePortAddress::Primary,
                NodePortAddress::Cidr("192.168.0.0/16".parse().unwrap())
            ]
        );
        assert_eq!(
            c.healthz_bind_address,
            Some("127.0.0.1:20256".parse().unwrap())
        );
        assert_eq!(c.metrics_bind_address, None);
        assert_eq!(c.client.qps, 50.0);
        assert_eq!(c.client.burst, 100);
        assert_eq!(c.verbosity, 4);
    }

    #[test]
    fn other_proxy_modes_are_refused_with_a_clear_message() {
        for mode in ["iptables", "nftables", "kernelspace"] {
            let err = resolve_args(&["--proxy-mode", mode]).unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.contains("only implements the 'ipvs' proxy mode"),
                "{msg}"
            );
            assert!(msg.contains("--proxy-mode"), "{msg}");
        }
        assert!(resolve_args(&["--proxy-mode=ipvs"]).is_ok());
        let file = temp_file("mode.yaml", "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: iptables\n");
        let err = resolve(&flags(&["--config", file.to_str().unwrap()]), None).unwrap_err();
        assert_eq!(field_of(err), "mode");
    }

    #[test]
    fn invalid_values_name_the_field() {
        let cases: &[(&[&str], &str)] = &[
            (
                &["--ipvs-scheduler=foo"],
                "ipvs.scheduler (--ipvs-scheduler)",
            ),
            (
                &["--ipvs-sync-period=0s"],
                "ipvs.syncPeriod (--ipvs-sync-period)",
            ),
            (
                &["--ipvs-sync-period=1s", "--ipvs-min-sync-period=5s"],
                "ipvs.syncPeriod (--ipvs-sync-period)",
            ),
            (
                &["--cluster-cidr=10.0.0.0/33"],
                "clusterCIDR (--cluster-cidr)",
            ),
            (
                &["--cluster-cidr=10.0.0.0/8,10.1.0.0/16"],
                "clusterCIDR (--cluster-cidr)",
            ),
            (
                &["--ipvs-exclude-cidrs=nope"],
                "ipvs.excludeCIDRs (--ipvs-exclude-cidrs)",
            ),
            (
                &["--healthz-bind-address=foo:1"],
                "healthzBindAddress (--healthz-bind-address)",
            ),
            (
                &["--detect-local-mode=Magic"],
                "detectLocalMode (--detect-local-mode)",
            ),
            (
                &["--detect-local-mode=BridgeInterface"],
                "detectLocal.bridgeInterface (--pod-bridge-interface)",
            ),
            (&["--oom-score-adj=-2000"], "oomScoreAdj (--oom-score-adj)"),
            (
                &["--kube-api-burst=-1"],
                "clientConnection.burst (--kube-api-burst)",
            ),
            (
                &["--hostname-override=  "],
                "hostnameOverride (--hostname-override)",
            ),
        ];
        for (args, field) in cases {
            let err = resolve_args(args).unwrap_err();
            assert_eq!(&field_of(err), field, "{args:?}");
        }
    }

    #[test]
    fn service_and_cluster_cidr_must_not_overlap() {
        let err = resolve_args(&[
            "--cluster-cidr=10.96.0.0/12",
            "--service-cluster-ip-range=10.96.0.0/16",
        ])
        .unwrap_err();
        assert!(
            err.to_string().contains("overlaps the service CIDR"),
            "{err}"
        );
        let err = resolve_args(&[
            "--cluster-cidr=10.0.0.0/8",
            "--service-cluster-ip-range=10.96.0.0/12",
        ])
        .unwrap_err();
        assert_eq!(field_of(err), "clusterCIDR (--cluster-cidr)");
        assert!(resolve_args(&[
            "--cluster-cidr=10.244.0.0/16,fd00:244::/56",
            "--service-cluster-ip-range=10.96.0.0/12,fd00:96::/112",
        ])
        .is_ok());
        // Only one side known: nothing to check.
        assert!(resolve_args(&["--service-cluster-ip-range=10.96.0.0/12"]).is_ok());
    }

    const FULL: &str = r#"
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: ipvs
bindAddress: 0.0.0.0
healthzBindAddress: 0.0.0.0:10256
metricsBindAddress: 0.0.0.0:10249
clusterCIDR: 10.244.0.0/16
clientConnection:
  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf
  qps: 20
  burst: 40
  contentType: application/vnd.kubernetes.protobuf
  acceptContentTypes: ""
conntrack:
  maxPerCore: 32768
  min: 262144
configSyncPeriod: 15m0s
iptables:
  masqueradeAll: true
  masqueradeBit: 14
  syncPeriod: 30s
  minSyncPeriod: 1s
ipvs:
  scheduler: lc
  syncPeriod: 45s
  minSyncPeriod: 1s
  excludeCIDRs: ["192.168.100.0/24"]
  strictARP: true
  tcpTimeout: 0s
  tcpFinTimeout: 30s
  udpTimeout: 0s
nodePortAddresses: ["primary"]
detectLocalMode: ClusterCIDR
logging:
  format: json
  verbosity: 2
featureGates:
  SomeGate: true
winkernel:
  networkName: ""
somethingNew: 1
"#;

    #[test]
    fn config_file_is_honoured_and_ignored_fields_are_named() {
        let mut warnings = Vec::new();
        let c = parse_config_file(FULL, &mut warnings).unwrap();
        assert_eq!(c.ipvs.scheduler, "lc");
        assert_eq!(c.ipvs.sync_period, Duration::from_secs(45));
        assert_eq!(c.ipvs.min_sync_period, Duration::from_secs(1));
        assert_eq!(c.ipvs.tcp_fin_timeout, Duration::from_secs(30));
        assert!(c.ipvs.strict_arp);
        assert!(c.masquerade_all);
        assert_eq!(
            c.metrics_bind_address,
            Some("0.0.0.0:10249".parse().unwrap())
        );
        assert_eq!(c.client.qps, 20.0);
        assert_eq!(
            c.client.kubeconfig.as_deref(),
            Some(std::path::Path::new("/var/lib/kube-proxy/kubeconfig.conf"))
        );
        assert_eq!(c.node_port_addresses, vec![NodePortAddress::Primary]);
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.verbosity, 2);
        let joined = warnings.join("\n");
        assert!(joined.contains("conntrack.min is ignored"), "{joined}");
        // kube-proxy's default left in a dump is not noise.
        assert!(!joined.contains("maxPerCore"), "{joined}");
        assert!(joined.contains("featureGates is ignored"), "{joined}");
        assert!(
            joined.contains("unknown configuration field somethingNew"),
            "{joined}"
        );
        // kube-proxy defaults written back are not noise.
        assert!(!joined.contains("configSyncPeriod"), "{joined}");
        assert!(!joined.contains("iptables.syncPeriod"), "{joined}");
        assert!(!joined.contains("masqueradeBit"), "{joined}");
        assert!(!joined.contains("winkernel"), "{joined}");
        assert_eq!(warnings.len(), 3, "{joined}");
    }

    #[test]
    fn config_file_errors_name_the_field() {
        let head = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n";
        let cases = [
            ("ipvs:\n  syncPeriod: soon\n", "ipvs.syncPeriod"),
            ("ipvs:\n  strictARP: [1]\n", "ipvs.strictARP"),
            ("ipvs:\n  excludeCIDRs: [\"x\"]\n", "ipvs.excludeCIDRs"),
            (
                "clientConnection:\n  burst: many\n",
                "clientConnection.burst",
            ),
            (
                "metricsBindAddress: \"1.2.3.4:99999\"\n",
                "metricsBindAddress",
            ),
            ("clusterCIDR: 300.0.0.0/8\n", "clusterCIDR"),
            ("iptables:\n  masqueradeBit: 40\n", "iptables.masqueradeBit"),
            ("logging:\n  format: xml\n", "logging.format"),
            ("ipvs: 3\n", "ipvs"),
        ];
        for (body, field) in cases {
            let err = parse_config_file(&format!("{head}{body}"), &mut vec![]).unwrap_err();
            assert!(field_of(err).starts_with(field), "{body}");
        }
        let err = parse_config_file("apiVersion: v1\nkind: Pod\n", &mut vec![]).unwrap_err();
        assert_eq!(field_of(err), "apiVersion");
        // A scheduler name that parses but is unknown is caught by validation.
        let c =
            parse_config_file(&format!("{head}ipvs:\n  scheduler: foo\n"), &mut vec![]).unwrap();
        assert_eq!(
            field_of(validate(&c).unwrap_err()),
            "ipvs.scheduler (--ipvs-scheduler)"
        );
    }

    #[test]
    fn with_config_most_flags_are_ignored_but_logging_and_hostname_win() {
        let file = temp_file("full.yaml", FULL);
        let r = resolve(
            &flags(&[
                "--config",
                file.to_str().unwrap(),
                "--ipvs-scheduler=sh",
                "--masquerade-all=false",
                "--log-format=text",
                "-v=5",
                "--hostname-override=Node-A",
                "--drain-period=2m",
            ]),
            Some("from-env"),
        )
        .unwrap();
        assert_eq!(
            r.config.ipvs.scheduler, "lc",
            "file wins over --ipvs-scheduler"
        );
        assert!(r.config.masquerade_all);
        assert_eq!(r.config.log_format, LogFormat::Text);
        assert_eq!(r.config.verbosity, 5);
        assert_eq!(r.config.hostname_override.as_deref(), Some("node-a"));
        assert_eq!(r.config.drain_period, Duration::from_secs(120));
        let joined = r.warnings.join("\n");
        assert!(joined.contains("--ipvs-scheduler is ignored"), "{joined}");
        assert!(joined.contains("--masquerade-all is ignored"), "{joined}");
        assert!(!joined.contains("--hostname-override"), "{joined}");
    }

    #[test]
    fn node_name_env_is_a_fallback() {
        let r = resolve(&flags(&[]), Some("Worker-1")).unwrap();
        assert_eq!(r.config.hostname_override.as_deref(), Some("worker-1"));
        let r = resolve(&flags(&["--hostname-override=a"]), Some("b")).unwrap();
        assert_eq!(r.config.hostname_override.as_deref(), Some("a"));
    }

    #[test]
    fn packet_filter_defaults_to_nftables_and_none_is_explicit() {
        let d = resolve_args(&[]).unwrap().config;
        assert_eq!(d.packet_filter, PacketFilter::Nftables);
        assert!(d.packet_filter.is_enabled());
        let n = resolve_args(&["--packet-filter=none"]).unwrap().config;
        assert_eq!(n.packet_filter, PacketFilter::None);
        assert!(!n.packet_filter.is_enabled());
        assert_eq!(
            resolve_args(&["--packet-filter", "nftables"])
                .unwrap()
                .config
                .packet_filter,
            PacketFilter::Nftables
        );
        // Like --manifests, the flag has no configuration field: it applies
        // with --config too, and is not reported as ignored.
        let file = temp_file("pf.yaml", FULL);
        let r = resolve(
            &flags(&["--config", file.to_str().unwrap(), "--packet-filter=none"]),
            None,
        )
        .unwrap();
        assert_eq!(r.config.packet_filter, PacketFilter::None);
        assert!(
            !r.warnings.join("\n").contains("packet-filter"),
            "{:?}",
            r.warnings
        );
        // Anything else is refused by the parser, never taken as "none".
        assert!(Cli::try_parse_from(["ipvs-proxy", "--packet-filter=iptables"]).is_err());
        assert!(Cli::try_parse_from(["ipvs-proxy", "--packet-filter="]).is_err());
    }

    #[test]
    fn written_config_reads_back_identically() {
        let c = resolve_args(&[
            "--ipvs-scheduler=wrr",
            "--ipvs-sync-period=2m",
            "--ipvs-min-sync-period=500ms",
            "--ipvs-exclude-cidrs=10.9.0.0/16",
            "--ipvs-tcpfin-timeout=20s",
            "--cluster-cidr=10.244.0.0/16",
            "--detect-local-mode=InterfaceNamePrefix",
            "--pod-interface-name-prefix=veth",
            "--nodeport-addresses=primary,10.0.0.0/8",
            "--metrics-bind-address=0.0.0.0:9999",
            "--healthz-bind-address=",
            "--hostname-override=n1",
            "--kubeconfig=/etc/kubeconfig",
            "--masquerade-all",
            "--log-format=json",
            "-v=3",
        ])
        .unwrap()
        .config;
        let text = to_yaml(&c);
        let mut warnings = Vec::new();
        let back = parse_config_file(&text, &mut warnings).unwrap();
        assert_eq!(back, c, "{text}");
        assert!(warnings.is_empty(), "{warnings:?}");
        let path = temp_file("written.yaml", "");
        write_config(&c, &path).unwrap();
        let r = resolve(&flags(&["--config", path.to_str().unwrap()]), None).unwrap();
        assert_eq!(r.config, c);
    }

    // ---- kubeproxy.config.k8s.io/v1alpha2 ----

    const V1ALPHA2_CONFIGMAP: &str =
        include_str!("../tests/fixtures/kube-proxy-v1alpha2-configmap.yaml");

    const V2_HEAD: &str =
        "apiVersion: kubeproxy.config.k8s.io/v1alpha2\nkind: KubeProxyConfiguration\n";

    /// The `config.conf` key of the fixture ConfigMap.
    fn configmap_config() -> String {
        let cm: Value = serde_yaml::from_str(V1ALPHA2_CONFIGMAP).expect("fixture is YAML");
        cm["data"]["config.conf"]
            .as_str()
            .expect("data.config.conf")
            .to_string()
    }

    fn v2(body: &str) -> Result<(ProxyConfig, Vec<String>), ConfigError> {
        let mut warnings = Vec::new();
        parse_config_file(&format!("{V2_HEAD}{body}"), &mut warnings).map(|c| (c, warnings))
    }

    /// Resolves `--config` on a v1alpha2 document (so validation runs too).
    fn resolve_v2(name: &str, body: &str, extra: &[&str]) -> Result<Resolved, ConfigError> {
        let file = temp_file(name, &format!("{V2_HEAD}{body}"));
        let mut args = vec!["--config", file.to_str().expect("utf-8 path")];
        args.extend_from_slice(extra);
        resolve(&flags(&args), None)
    }

    #[test]
    fn v1alpha2_configmap_is_honoured_without_noise() {
        let mut warnings = Vec::new();
        let c = parse_config_file(&configmap_config(), &mut warnings).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(c.ipvs.sync_period, Duration::from_secs(45));
        assert_eq!(c.ipvs.min_sync_period, Duration::from_secs(2));
        assert_eq!(c.ipvs.scheduler, "lc");
        assert_eq!(
            c.ipvs.exclude_cidrs,
            vec!["192.168.100.0/24".parse::<IpNet>().unwrap()]
        );
        assert!(c.ipvs.strict_arp);
        assert_eq!(c.ipvs.tcp_fin_timeout, Duration::from_secs(30));
        assert!(c.masquerade_all, "linux.masqueradeAll");
        assert_eq!(c.oom_score_adj, -999);
        assert_eq!(
            c.cluster_cidrs,
            vec![
                "10.244.0.0/16".parse::<IpNet>().unwrap(),
                "fd00:10:244::/56".parse().unwrap()
            ]
        );
        assert_eq!(c.detect_local, DetectLocal::ClusterCidr);
        assert_eq!(
            c.healthz_bind_address,
            Some("0.0.0.0:10256".parse().unwrap())
        );
        assert_eq!(
            c.metrics_bind_address,
            Some("0.0.0.0:10249".parse().unwrap())
        );
        assert_eq!(c.bind_address, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        assert_eq!(c.client.qps, 10.0);
        assert_eq!(c.client.burst, 20);
        assert_eq!(
            c.client.kubeconfig.as_deref(),
            Some(std::path::Path::new("/var/lib/kube-proxy/kubeconfig.conf"))
        );
        assert_eq!(c.node_port_addresses, vec![NodePortAddress::Primary]);
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.verbosity, 2);
        // And it passes start-up validation through --config.
        let file = temp_file("v2-configmap.yaml", &configmap_config());
        let r = resolve(&flags(&["--config", file.to_str().unwrap()]), None).unwrap();
        assert_eq!(r.config, c);
    }

    #[test]
    fn v1alpha2_defaults_are_kube_proxys() {
        // An empty v1alpha2 document: v1alpha1's defaults except
        // minSyncPeriod, which v1alpha2 defaults to 1s.
        let (c, warnings) = v2("").unwrap();
        let expected = ProxyConfig {
            ipvs: IpvsConfig {
                min_sync_period: Duration::from_secs(1),
                ..ProxyConfig::default().ipvs
            },
            ..ProxyConfig::default()
        };
        assert_eq!(c, expected);
        assert!(warnings.is_empty(), "{warnings:?}");
        // The same as kube-proxy's own dump of its v1alpha2 defaults, which
        // must not produce a single warning either.
        let dump = "bindAddressHardFail: false
clientConnection: {acceptContentTypes: \"\", burst: 10, contentType: application/vnd.kubernetes.protobuf, kubeconfig: \"\", qps: 5}
configHardFail: true
configSyncPeriod: 15m0s
detectLocal: {}
detectLocalMode: ClusterCIDR
enableProfiling: false
healthzBindAddresses: [0.0.0.0/0, \"::/0\"]
healthzBindPort: 10256
iptables: {localhostNodePorts: false, masqueradeBit: 14}
ipvs: {masqueradeBit: 14, strictARP: false, tcpFinTimeout: 0s, tcpTimeout: 0s, udpTimeout: 0s}
linux:
  conntrack: {maxPerCore: 32768, min: 131072, tcpBeLiberal: false, tcpCloseWaitTimeout: 1h0m0s, tcpEstablishedTimeout: 24h0m0s, udpStreamTimeout: 0s, udpTimeout: 0s}
  masqueradeAll: false
  oomScoreAdj: -999
logging: {flushFrequency: 5s, format: text, options: {json: {infoBufferSize: \"0\"}, text: {infoBufferSize: \"0\"}}, verbosity: 0}
metricsBindAddresses: [127.0.0.0/8, \"::1/128\"]
metricsBindPort: 10249
minSyncPeriod: 1s
nftables: {masqueradeBit: 14}
syncPeriod: 30s
windows: {runAsService: false}
winkernel: {enableDSR: false, forwardHealthCheckVip: false}
";
        let (d, warnings) = v2(dump).unwrap();
        assert_eq!(d, expected);
        assert!(warnings.is_empty(), "{warnings:?}");
        // A zero minSyncPeriod is "unset" in v1alpha2: 1s, said out loud.
        let (z, warnings) = v2("minSyncPeriod: 0s\n").unwrap();
        assert_eq!(z.ipvs.min_sync_period, Duration::from_secs(1));
        assert!(
            warnings.iter().any(|w| w.contains("minSyncPeriod: 0s")),
            "{warnings:?}"
        );
        // A zero syncPeriod is unset too: 30s, as in v1alpha1.
        let (z, _) = v2("syncPeriod: 0s\n").unwrap();
        assert_eq!(z.ipvs.sync_period, Duration::from_secs(30));
    }

    #[test]
    fn v1alpha2_moved_fields_are_read_at_their_new_paths() {
        type Check = fn(&ProxyConfig) -> bool;
        let cases: &[(&str, Check)] = &[
            ("syncPeriod: 1m\n", |c| {
                c.ipvs.sync_period == Duration::from_secs(60)
            }),
            ("minSyncPeriod: 500ms\n", |c| {
                c.ipvs.min_sync_period == Duration::from_millis(500)
            }),
            ("linux:\n  masqueradeAll: true\n", |c| c.masquerade_all),
            ("linux:\n  oomScoreAdj: -500\n", |c| c.oom_score_adj == -500),
            ("detectLocal:\n  clusterCIDRs: [10.1.0.0/16]\n", |c| {
                c.cluster_cidrs == vec!["10.1.0.0/16".parse::<IpNet>().unwrap()]
            }),
            ("nodeIPOverride: [192.0.2.7]\n", |c| {
                c.bind_address == "192.0.2.7".parse::<IpAddr>().unwrap()
            }),
            ("nodeIPOverride: [\"0.0.0.0\"]\n", |c| {
                c.bind_address.is_unspecified()
            }),
            ("healthzBindPort: 20256\n", |c| {
                c.healthz_bind_address == Some("0.0.0.0:20256".parse().unwrap())
            }),
            ("healthzBindAddresses: [\"::/0\"]\n", |c| {
                c.healthz_bind_address == Some("[::]:10256".parse().unwrap())
            }),
            (
                "healthzBindAddresses: [10.0.0.5/32]\nhealthzBindPort: 9090\n",
                |c| c.healthz_bind_address == Some("10.0.0.5:9090".parse().unwrap()),
            ),
            ("metricsBindAddresses: [\"::1/128\"]\n", |c| {
                c.metrics_bind_address == Some("[::1]:10249".parse().unwrap())
            }),
            (
                "metricsBindAddresses: [\"fd00::9/128\"]\nmetricsBindPort: 9999\n",
                |c| c.metrics_bind_address == Some("[fd00::9]:9999".parse().unwrap()),
            ),
            ("metricsBindAddresses: [127.0.0.5/32, \"::1/128\"]\n", |c| {
                c.metrics_bind_address == Some("127.0.0.5:10249".parse().unwrap())
            }),
            ("metricsBindAddresses: [127.0.0.0/8]\n", |c| {
                c.metrics_bind_address == Some("127.0.0.1:10249".parse().unwrap())
            }),
            ("healthzBindAddresses: [0.0.0.0/0]\n", |c| {
                c.healthz_bind_address == Some("0.0.0.0:10256".parse().unwrap())
            }),
            ("metricsBindAddresses: [0.0.0.0/0, \"::/0\"]\n", |c| {
                c.metrics_bind_address == Some("0.0.0.0:10249".parse().unwrap())
            }),
            (
                "ipvs:\n  scheduler: sh\n  tcpTimeout: 15m\n  udpTimeout: 30s\n",
                |c| {
                    c.ipvs.scheduler == "sh"
                        && c.ipvs.tcp_timeout == Duration::from_secs(900)
                        && c.ipvs.udp_timeout == Duration::from_secs(30)
                },
            ),
            (
                "detectLocalMode: InterfaceNamePrefix\ndetectLocal:\n  interfaceNamePrefix: veth\n",
                |c| c.detect_local == DetectLocal::InterfaceNamePrefix("veth".into()),
            ),
        ];
        for (body, check) in cases {
            let (c, warnings) = v2(body).unwrap_or_else(|e| panic!("{body}: {e}"));
            assert!(check(&c), "{body}: {c:?}");
            assert!(warnings.is_empty(), "{body}: {warnings:?}");
        }
    }

    #[test]
    fn v1alpha1_fields_in_a_v1alpha2_file_stop_the_start_naming_the_new_path() {
        let cases = [
            (
                "ipvs:\n  syncPeriod: 45s\n",
                "ipvs.syncPeriod",
                "syncPeriod (top level)",
            ),
            (
                "ipvs:\n  minSyncPeriod: 1s\n",
                "ipvs.minSyncPeriod",
                "minSyncPeriod (top level)",
            ),
            (
                "iptables:\n  masqueradeAll: true\n",
                "iptables.masqueradeAll",
                "linux.masqueradeAll",
            ),
            (
                "iptables:\n  syncPeriod: 30s\n",
                "iptables.syncPeriod",
                "syncPeriod (top level)",
            ),
            (
                "nftables:\n  masqueradeAll: true\n",
                "nftables.masqueradeAll",
                "linux.masqueradeAll",
            ),
            (
                "clusterCIDR: 10.244.0.0/16\n",
                "clusterCIDR",
                "detectLocal.clusterCIDRs",
            ),
            ("oomScoreAdj: -999\n", "oomScoreAdj", "linux.oomScoreAdj"),
            ("conntrack:\n  min: 1\n", "conntrack", "linux.conntrack"),
            ("bindAddress: 10.0.0.1\n", "bindAddress", "nodeIPOverride"),
            (
                "healthzBindAddress: 0.0.0.0:10256\n",
                "healthzBindAddress",
                "healthzBindAddresses",
            ),
            (
                "metricsBindAddress: 0.0.0.0:10249\n",
                "metricsBindAddress",
                "metricsBindPort",
            ),
            (
                "windowsRunAsService: true\n",
                "windowsRunAsService",
                "windows.runAsService",
            ),
            ("portRange: \"\"\n", "portRange", "dropped"),
            ("udpIdleTimeout: 250ms\n", "udpIdleTimeout", "dropped"),
        ];
        for (body, field, now) in cases {
            let err = v2(body).unwrap_err();
            let msg = err.to_string();
            assert_eq!(field_of(err), field, "{body}");
            assert!(msg.contains(now), "{body}: {msg}");
            assert!(msg.contains("kubeproxy.config.k8s.io/v1alpha2"), "{msg}");
            // configHardFail: false makes it a warning, and the old field is
            // not used.
            let (c, warnings) = v2(&format!("configHardFail: false\n{body}")).unwrap();
            assert_eq!(c, v2("").unwrap().0, "{body}");
            assert_eq!(warnings.len(), 1, "{body}: {warnings:?}");
            assert!(warnings[0].contains(field), "{warnings:?}");
        }
    }

    #[test]
    fn v1alpha2_invalid_values_name_the_v1alpha2_field() {
        // Caught while reading the file.
        let cases = [
            ("syncPeriod: soon\n", "syncPeriod"),
            ("minSyncPeriod: [1]\n", "minSyncPeriod"),
            ("linux: 3\n", "linux"),
            ("linux:\n  masqueradeAll: maybe\n", "linux.masqueradeAll"),
            ("linux:\n  oomScoreAdj: low\n", "linux.oomScoreAdj"),
            (
                "detectLocal:\n  clusterCIDRs: [10.0.0.0/33]\n",
                "detectLocal.clusterCIDRs",
            ),
            (
                "detectLocal:\n  clusterCIDRs: [10.0.0.0/8, 10.1.0.0/16]\n",
                "detectLocal.clusterCIDRs",
            ),
            (
                "detectLocal:\n  clusterCIDRs: 10.0.0.0/8\n",
                "detectLocal.clusterCIDRs",
            ),
            ("healthzBindPort: 70000\n", "healthzBindPort"),
            ("metricsBindPort: -1\n", "metricsBindPort"),
            ("healthzBindAddresses: [nope]\n", "healthzBindAddresses[0]"),
            (
                "metricsBindAddresses: [\"::1/128\", x]\n",
                "metricsBindAddresses[1]",
            ),
            (
                "metricsBindAddresses: [10.0.0.0/8]\n",
                "metricsBindAddresses",
            ),
            (
                "healthzBindAddresses: [10.0.0.5/32, 10.0.0.6/32]\n",
                "healthzBindAddresses",
            ),
            ("nodeIPOverride: [not-an-ip]\n", "nodeIPOverride[0]"),
            (
                "nodeIPOverride: [10.0.0.1, \"fd00::1\"]\n",
                "nodeIPOverride",
            ),
            ("ipvs:\n  masqueradeBit: 40\n", "ipvs.masqueradeBit"),
            ("ipvs:\n  excludeCIDRs: [x]\n", "ipvs.excludeCIDRs"),
            ("configHardFail: sometimes\n", "configHardFail"),
            ("logging:\n  format: xml\n", "logging.format"),
            ("mode: iptables\n", "mode"),
            (
                "detectLocalMode: BridgeInterface\n",
                "detectLocal.bridgeInterface (--pod-bridge-interface)",
            ),
        ];
        for (body, field) in cases {
            let err = v2(body).unwrap_err();
            assert_eq!(field_of(err), field, "{body}");
        }
        // Caught by start-up validation: the v1alpha2 path, not v1alpha1's.
        let cases = [
            (
                "syncPeriod: 1s\nminSyncPeriod: 5s\n",
                "syncPeriod (--ipvs-sync-period)",
            ),
            (
                "linux:\n  oomScoreAdj: 2000\n",
                "linux.oomScoreAdj (--oom-score-adj)",
            ),
            (
                "ipvs:\n  scheduler: foo\n",
                "ipvs.scheduler (--ipvs-scheduler)",
            ),
            (
                "clientConnection:\n  burst: -1\n",
                "clientConnection.burst (--kube-api-burst)",
            ),
        ];
        for (i, (body, field)) in cases.iter().enumerate() {
            let err = resolve_v2(&format!("v2-invalid-{i}.yaml"), body, &[]).unwrap_err();
            let msg = err.to_string();
            assert_eq!(&field_of(err), field, "{body}");
            assert!(!msg.contains("ipvs.syncPeriod"), "{msg}");
            assert!(!msg.contains("ipvs.minSyncPeriod"), "{msg}");
        }
        let err = resolve_v2(
            "v2-minsync.yaml",
            "syncPeriod: 1s\nminSyncPeriod: 5s\n",
            &[],
        )
        .unwrap_err();
        assert!(err.to_string().contains("minSyncPeriod (5s)"), "{err}");
        // The service CIDR overlap check names the v1alpha2 field too.
        let err = resolve_v2(
            "v2-overlap.yaml",
            "detectLocal:\n  clusterCIDRs: [10.0.0.0/8]\n",
            &["--service-cluster-ip-range=10.96.0.0/12"],
        )
        .unwrap_err();
        assert_eq!(field_of(err), "detectLocal.clusterCIDRs (--cluster-cidr)");
        // Neither version is anything else.
        let mut w = vec![];
        let err = parse_config_file(
            "apiVersion: kubeproxy.config.k8s.io/v1beta1\nkind: KubeProxyConfiguration\n",
            &mut w,
        )
        .unwrap_err();
        let msg = err.to_string();
        assert_eq!(field_of(err), "apiVersion");
        assert!(
            msg.contains("v1alpha1") && msg.contains("v1alpha2"),
            "{msg}"
        );
    }

    #[test]
    fn v1alpha2_ignored_and_unknown_fields_are_warned_about_by_name() {
        let (_, warnings) = v2(
            "linux:\n  conntrack:\n    maxPerCore: 0\n    tcpBeLiberal: true\n  newThing: 1\nipvs:\n  masqueradeBit: 12\niptables:\n  masqueradeBit: 13\nnftables:\n  masqueradeBit: 15\nwindows:\n  runAsService: true\nfeatureGates:\n  SomeGate: true\nsomethingNew: 1\n",
        )
        .unwrap();
        let joined = warnings.join("\n");
        for name in [
            "linux.conntrack.tcpBeLiberal is ignored",
            "unknown configuration field linux.newThing",
            "ipvs.masqueradeBit is ignored",
            "iptables.masqueradeBit is ignored",
            "nftables.masqueradeBit is ignored",
            "windows is ignored",
            "featureGates is ignored",
            "unknown configuration field somethingNew",
        ] {
            assert!(joined.contains(name), "{name}: {joined}");
        }
        // maxPerCore 0 ("leave the limit as-is") is not a setting to warn about.
        assert!(!joined.contains("maxPerCore"), "{joined}");
        assert_eq!(warnings.len(), 8, "{joined}");
    }

    #[test]
    fn v1alpha2_and_v1alpha1_with_the_same_settings_agree() {
        let v1 = "apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: ipvs
bindAddress: 192.0.2.10
healthzBindAddress: 127.0.0.1:20256
metricsBindAddress: 0.0.0.0:9100
clusterCIDR: 10.244.0.0/16,fd00:244::/56
oomScoreAdj: -500
iptables:
  masqueradeAll: true
ipvs:
  syncPeriod: 1m
  minSyncPeriod: 3s
  scheduler: wrr
  strictARP: true
nodePortAddresses: [10.0.0.0/8]
";
        let v2_body = "mode: ipvs
nodeIPOverride: [192.0.2.10]
healthzBindAddresses: [127.0.0.1/32]
healthzBindPort: 20256
metricsBindAddresses: [0.0.0.0/0]
metricsBindPort: 9100
detectLocal:
  clusterCIDRs: [10.244.0.0/16, \"fd00:244::/56\"]
linux:
  oomScoreAdj: -500
  masqueradeAll: true
syncPeriod: 1m
minSyncPeriod: 3s
ipvs:
  scheduler: wrr
  strictARP: true
nodePortAddresses: [10.0.0.0/8]
";
        let mut w1 = vec![];
        let a = parse_config_file(v1, &mut w1).unwrap();
        let (b, w2) = v2(v2_body).unwrap();
        assert_eq!(a, b);
        assert!(w1.is_empty() && w2.is_empty(), "{w1:?} {w2:?}");
    }

    #[test]
    fn v1alpha2_file_with_flags_as_today() {
        let body = "syncPeriod: 45s\nminSyncPeriod: 2s\nipvs:\n  scheduler: lc\nlinux:\n  masqueradeAll: true\nlogging:\n  format: json\n  verbosity: 2\nhostnameOverride: from-file\n";
        let r = resolve_v2(
            "v2-flags.yaml",
            body,
            &[
                "--ipvs-sync-period=5s",
                "--ipvs-min-sync-period=0s",
                "--ipvs-scheduler=sh",
                "--masquerade-all=false",
                "--log-format=text",
                "-v=5",
                "--hostname-override=Node-A",
                "--drain-period=2m",
                "--packet-filter=none",
            ],
        )
        .unwrap();
        let c = &r.config;
        // The file wins over the flags that have a configuration field...
        assert_eq!(c.ipvs.sync_period, Duration::from_secs(45));
        assert_eq!(c.ipvs.min_sync_period, Duration::from_secs(2));
        assert_eq!(c.ipvs.scheduler, "lc");
        assert!(c.masquerade_all);
        // ...except logging and the hostname; flags without a field apply.
        assert_eq!(c.log_format, LogFormat::Text);
        assert_eq!(c.verbosity, 5);
        assert_eq!(c.hostname_override.as_deref(), Some("node-a"));
        assert_eq!(c.drain_period, Duration::from_secs(120));
        assert_eq!(c.packet_filter, PacketFilter::None);
        let joined = r.warnings.join("\n");
        for flag in [
            "--ipvs-sync-period is ignored",
            "--ipvs-min-sync-period is ignored",
            "--ipvs-scheduler is ignored",
            "--masquerade-all is ignored",
        ] {
            assert!(joined.contains(flag), "{flag}: {joined}");
        }
        assert!(!joined.contains("--hostname-override"), "{joined}");
        assert_eq!(r.warnings.len(), 4, "{joined}");
    }

    #[test]
    fn write_config_from_a_v1alpha2_file_writes_v1alpha1() {
        let file = temp_file("v2-to-write.yaml", &configmap_config());
        let c = resolve(&flags(&["--config", file.to_str().unwrap()]), None)
            .unwrap()
            .config;
        let text = to_yaml(&c);
        assert!(
            text.contains("apiVersion: kubeproxy.config.k8s.io/v1alpha1"),
            "{text}"
        );
        let mut warnings = Vec::new();
        assert_eq!(
            parse_config_file(&text, &mut warnings).unwrap(),
            c,
            "{text}"
        );
        assert!(warnings.is_empty(), "{warnings:?}");
    }
}
