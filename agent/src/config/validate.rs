//! Value parsers shared by flags and file, and the validation of the result.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use super::model::{DetectLocal, NodePortAddress, ProxyConfig};
use super::{invalid, ConfigError, SCHEDULERS};
use crate::duration;

pub(super) fn check_mode(field: &str, mode: &str) -> Result<(), ConfigError> {
    match mode {
        "" | "ipvs" => Ok(()),
        other => Err(invalid(
            field,
            other,
            "ipvs-proxy only implements the 'ipvs' proxy mode; run kube-proxy for iptables or nftables",
        )),
    }
}

pub(super) fn parse_cidr(field: &str, s: &str) -> Result<IpNet, ConfigError> {
    s.trim()
        .parse::<IpNet>()
        .map_err(|_| invalid(field, s, "must be a valid IP block (e.g. 10.0.0.0/8)"))
}

pub(super) fn parse_cidr_list(field: &str, s: &str) -> Result<Vec<IpNet>, ConfigError> {
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

pub(super) fn parse_bind_address(
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

pub(super) fn detect_local(
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

pub(super) fn parse_node_port_addresses(
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
pub(super) enum Schema {
    /// `kubeproxy.config.k8s.io/v1alpha1` (and the flags, which follow it).
    V1alpha1,
    /// `kubeproxy.config.k8s.io/v1alpha2`.
    V1alpha2,
}

impl Schema {
    pub(super) fn sync_period(self) -> &'static str {
        match self {
            Self::V1alpha1 => "ipvs.syncPeriod (--ipvs-sync-period)",
            Self::V1alpha2 => "syncPeriod (--ipvs-sync-period)",
        }
    }
    pub(super) fn min_sync_period(self) -> &'static str {
        match self {
            Self::V1alpha1 => "ipvs.minSyncPeriod",
            Self::V1alpha2 => "minSyncPeriod",
        }
    }
    pub(super) fn cluster_cidr(self) -> &'static str {
        match self {
            Self::V1alpha1 => "clusterCIDR (--cluster-cidr)",
            Self::V1alpha2 => "detectLocal.clusterCIDRs (--cluster-cidr)",
        }
    }
    pub(super) fn oom_score_adj(self) -> &'static str {
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

pub(super) fn validate_as(cfg: &ProxyConfig, schema: Schema) -> Result<(), ConfigError> {
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
