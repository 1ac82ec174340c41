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

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::de::DeserializeOwned;
use serde_yaml::{Mapping, Value};

use crate::duration;

/// The API version of the configuration file we read and write.
pub const API_VERSION: &str = "kubeproxy.config.k8s.io/v1alpha1";
/// The kind of the configuration file we read and write.
pub const KIND: &str = "KubeProxyConfiguration";

/// IPVS schedulers kube-proxy accepts (`validateIPVSSchedulerMethod`), plus
/// the ones newer kernels ship (`mh`, `fo`, `ovf`, `twos`).
pub const SCHEDULERS: &[&str] = &[
    "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "sh", "dh", "sed", "nq", "mh", "fo", "ovf", "twos",
];

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
    /// The path to the configuration file (a KubeProxyConfiguration, kubeproxy.config.k8s.io/v1alpha1).
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
    match &flags.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            cfg = parse_config_file(&text, &mut warnings)?;
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
    validate(&cfg)?;
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

/// Validates the effective configuration (kube-proxy's rules for the IPVS
/// mode, plus the service/cluster CIDR overlap check).
pub fn validate(cfg: &ProxyConfig) -> Result<(), ConfigError> {
    let ipvs = &cfg.ipvs;
    if ipvs.sync_period.is_zero() {
        return Err(invalid(
            "ipvs.syncPeriod (--ipvs-sync-period)",
            duration::format(ipvs.sync_period),
            "must be greater than 0",
        ));
    }
    if ipvs.min_sync_period > ipvs.sync_period {
        return Err(invalid(
            "ipvs.syncPeriod (--ipvs-sync-period)",
            duration::format(ipvs.sync_period),
            format!(
                "must be greater than or equal to ipvs.minSyncPeriod ({})",
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
            "oomScoreAdj (--oom-score-adj)",
            cfg.oom_score_adj,
            "must be within the range [-1000, 1000]",
        ));
    }
    for s in &cfg.service_cidrs {
        for c in &cfg.cluster_cidrs {
            if s.contains(&c.network()) || c.contains(&s.network()) {
                return Err(invalid(
                    "clusterCIDR (--cluster-cidr)",
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

/// Parses a `KubeProxyConfiguration` document into the effective
/// configuration (defaults for absent fields). Ignored fields produce warnings.
pub fn parse_config_file(
    text: &str,
    warnings: &mut Vec<String>,
) -> Result<ProxyConfig, ConfigError> {
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

    match top.get::<String>("apiVersion")? {
        Some(v) if v == API_VERSION => {}
        Some(v) => {
            return Err(invalid(
                "apiVersion",
                v,
                format!("must be {API_VERSION} (v1alpha2 is not supported yet)"),
            ))
        }
        None => return Err(invalid("apiVersion", "", format!("must be {API_VERSION}"))),
    }
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
    if let Some(mode) = top.get::<String>("mode")? {
        check_mode("mode", &mode)?;
    }
    if let Some(name) = top.get::<String>("hostnameOverride")? {
        let name = name.trim().to_lowercase();
        if !name.is_empty() {
            cfg.hostname_override = Some(name);
        }
    }
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
    if let Some(b) = top.get::<bool>("bindAddressHardFail")? {
        cfg.bind_address_hard_fail = b;
    }
    if let Some(s) = top.get::<String>("clusterCIDR")? {
        cfg.cluster_cidrs = parse_cidr_list("clusterCIDR", &s)?;
    }
    let mode = top.get::<String>("detectLocalMode")?.unwrap_or_default();
    let (mut bridge, mut prefix) = (String::new(), String::new());
    if let Some(mut dl) = top.section("detectLocal")? {
        bridge = dl.get::<String>("bridgeInterface")?.unwrap_or_default();
        prefix = dl.get::<String>("interfaceNamePrefix")?.unwrap_or_default();
        dl.finish(warnings);
    }
    cfg.detect_local = detect_local("detectLocalMode", &mode, &bridge, &prefix)?;
    if let Some(list) = top.get::<Vec<String>>("nodePortAddresses")? {
        cfg.node_port_addresses = parse_node_port_addresses("nodePortAddresses", &list, warnings)?;
    }
    if let Some(n) = top.get::<i32>("oomScoreAdj")? {
        cfg.oom_score_adj = n;
    }
    if let Some(mut cc) = top.section("clientConnection")? {
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
        cc.finish(warnings);
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
        if let Some(s) = ipvs.get::<String>("scheduler")? {
            if !s.is_empty() {
                cfg.ipvs.scheduler = s;
            }
        }
        if let Some(list) = ipvs.get::<Vec<String>>("excludeCIDRs")? {
            cfg.ipvs.exclude_cidrs = list
                .iter()
                .map(|s| parse_cidr("ipvs.excludeCIDRs", s))
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
        ipvs.finish(warnings);
    }
    if let Some(mut ipt) = top.section("iptables")? {
        if let Some(b) = ipt.get::<bool>("masqueradeAll")? {
            cfg.masquerade_all = b;
        }
        match ipt.get::<i32>("masqueradeBit")? {
            Some(bit) if !(0..=31).contains(&bit) => {
                return Err(invalid(
                    "iptables.masqueradeBit",
                    bit,
                    "must be within the range [0, 31]",
                ))
            }
            Some(bit) if bit != 14 => warnings.push(
                "configuration field iptables.masqueradeBit is ignored: this agent marks packets in its own nftables table".into(),
            ),
            _ => {}
        }
        let why = "only used by kube-proxy's iptables mode";
        ipt.ignore("syncPeriod", &["30s"], why, warnings);
        ipt.ignore("minSyncPeriod", &["1s"], why, warnings);
        ipt.ignore("localhostNodePorts", &["true"], why, warnings);
        ipt.ignore("snatNodeInternalIP", &[], why, warnings);
        ipt.finish(warnings);
    }
    if let Some(mut logging) = top.section("logging")? {
        if let Some(f) = logging.get::<String>("format")? {
            cfg.log_format = LogFormat::parse("logging.format", &f)?;
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
        logging.finish(warnings);
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
        "watches have no informer resync; ipvs.syncPeriod drives the full reconcile",
        warnings,
    );
    top.ignore("portRange", &[], "userspace mode is gone", warnings);
    top.ignore(
        "udpIdleTimeout",
        &["250ms"],
        "userspace mode is gone",
        warnings,
    );
    top.ignore(
        "conntrack",
        &[],
        "conntrack limits and timeouts are left to the node (set them with sysctl)",
        warnings,
    );
    top.ignore(
        "nftables",
        &[],
        "only used by kube-proxy's nftables mode",
        warnings,
    );
    top.ignore("winkernel", &[], "Windows only", warnings);
    top.ignore("windowsRunAsService", &[], "Windows only", warnings);
    top.finish(warnings);
    Ok(cfg)
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
  min: 131072
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
        assert!(joined.contains("conntrack is ignored"), "{joined}");
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
}
