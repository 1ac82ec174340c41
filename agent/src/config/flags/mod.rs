//! The command-line flags and their resolution with the file.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::file::parse_document;
use super::model::{LogFormat, NftElementUpdates, PacketFilter, ProxyConfig};
use super::validate::{
    check_mode, detect_local, parse_bind_address, parse_cidr, parse_cidr_list,
    parse_node_port_addresses, validate_as, Schema,
};
use super::{invalid, ConfigError};
use crate::duration;

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
    /// Log format (kube-proxy's --logging-format).
    #[arg(long, alias = "logging-format", value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Deprecated kube-proxy flag: the port a bare-IP --healthz-bind-address serves on; 0 disables the health server.
    #[arg(long, value_name = "PORT", allow_hyphen_values = true)]
    pub healthz_port: Option<i32>,
    /// Deprecated kube-proxy flag: the port a bare-IP --metrics-bind-address serves on; 0 disables the metrics server.
    #[arg(long, value_name = "PORT", allow_hyphen_values = true)]
    pub metrics_port: Option<i32>,
    /// If true, do the initialisation that needs full root privileges and exit (this agent needs none ahead of its start: it exits 0).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub init_only: Option<bool>,
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
    /// (ours) How set/map element changes reach our nftables table: 'netlink' (default: one nf_tables transaction over nfnetlink, no process) or 'nft' (an `nft -f -` run per change). The table itself always goes through nft.
    #[arg(long, value_enum, value_name = "HOW")]
    pub nft_element_updates: Option<NftElementUpdates>,
    /// (ours) The unix socket the agent serves `show` on and `show` asks (root only; empty: the agent serves none).
    #[arg(long, value_name = "PATH")]
    pub control_socket: Option<String>,
    /// (ours) After the first full sync succeeded, remove kube-proxy's IPVS-mode iptables chains and ipsets (default true; needs --packet-filter nftables).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub remove_kube_proxy_rules: Option<bool>,
    /// (ours) On SIGTERM/SIGINT, the longest the agent takes to stop in order (healthz 503, sources stopped, the sync in progress finished, servers closed, events sent) before it exits anyway; keep it below the pod's terminationGracePeriodSeconds. Default 20s.
    #[arg(long, value_name = "DURATION", value_parser = duration::parse)]
    pub shutdown_grace_period: Option<Duration>,
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
    // kube-proxy skips an empty --hostname-override and refuses a blank one.
    if let Some(name) = flags.hostname_override.as_ref().filter(|n| !n.is_empty()) {
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
    if let Some(u) = flags.nft_element_updates {
        cfg.nft_element_updates = u;
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
    check(f.healthz_port.is_some(), "healthz-port");
    check(f.metrics_port.is_some(), "metrics-port");
    out
}

/// A bind-address flag with kube-proxy's deprecated port flag
/// (`addressFromDeprecatedFlags`, applied without `--config` and
/// `--write-config-to`): port 0 disables the server; otherwise the port is
/// appended to an address that has none, and has no effect on one that has.
#[allow(clippy::too_many_arguments)]
fn deprecated_port(
    field: &str,
    port_flag: &str,
    addr: Option<&str>,
    port: Option<i32>,
    current: Option<std::net::SocketAddr>,
    default_port: u16,
    writing_config: bool,
    warnings: &mut Vec<String>,
) -> Result<Option<std::net::SocketAddr>, ConfigError> {
    let port = port.filter(|_| !writing_config);
    if port == Some(0) {
        return Ok(None);
    }
    let given_port = match port {
        None => None,
        Some(p) => Some(u16::try_from(p).map_err(|_| {
            invalid(
                &format!("--{port_flag}"),
                p,
                "must be a valid port number (1-65535)",
            )
        })?),
    };
    let Some(addr) = addr else {
        if given_port.is_some() {
            warnings.push(format!(
                "flag --{port_flag} has no effect: the bind address already names a port (as in kube-proxy); set the port in the bind address"
            ));
        }
        return Ok(current);
    };
    let bare = addr.trim().parse::<std::net::SocketAddr>().is_err();
    if given_port.is_some() && !bare {
        warnings.push(format!(
            "flag --{port_flag} has no effect: the bind address already names a port (as in kube-proxy)"
        ));
    }
    let default_port = if bare {
        given_port.unwrap_or(default_port)
    } else {
        default_port
    };
    parse_bind_address(field, addr, default_port)
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
    cfg.healthz_bind_address = deprecated_port(
        "healthzBindAddress (--healthz-bind-address)",
        "healthz-port",
        f.healthz_bind_address.as_deref(),
        f.healthz_port,
        cfg.healthz_bind_address,
        10256,
        f.write_config_to.is_some(),
        warnings,
    )?;
    cfg.metrics_bind_address = deprecated_port(
        "metricsBindAddress (--metrics-bind-address)",
        "metrics-port",
        f.metrics_bind_address.as_deref(),
        f.metrics_port,
        cfg.metrics_bind_address,
        10249,
        f.write_config_to.is_some(),
        warnings,
    )?;
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

mod compat;

pub use compat::{
    kube_proxy_args, lookup, parse_go_bool, Check, Effect, Kind, KubeProxyArgs, KubeProxyFlag,
    KUBE_PROXY_FLAGS,
};

#[cfg(test)]
mod tests;
