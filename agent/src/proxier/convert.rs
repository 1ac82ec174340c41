//! Conversions from the agent's configuration and the Node object to
//! proxy-core's inputs.

use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use proxy_core::{LocalDetect, NodePortAddresses, Scheduler};

use crate::config::{DetectLocal, NodePortAddress, ProxyConfig};
use crate::error::Error;

/// Translates the agent's configuration for proxy-core.
pub fn core_config(cfg: &ProxyConfig) -> Result<proxy_core::Config, Error> {
    let scheduler = Scheduler::parse(&cfg.ipvs.scheduler, "")?;
    let mut npa = NodePortAddresses::default();
    for a in &cfg.node_port_addresses {
        match a {
            NodePortAddress::Primary => npa.primary = true,
            NodePortAddress::Cidr(c) => npa.cidrs.push(*c),
        }
    }
    let secs = |d: Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
    Ok(proxy_core::Config {
        scheduler,
        local_detect: local_detect(cfg, None),
        node_port_addresses: npa,
        masquerade_all: cfg.masquerade_all,
        exclude_cidrs: cfg.ipvs.exclude_cidrs.clone(),
        strict_arp: cfg.ipvs.strict_arp,
        timeouts: ipvs::Timeouts::new(
            secs(cfg.ipvs.tcp_timeout),
            secs(cfg.ipvs.tcp_fin_timeout),
            secs(cfg.ipvs.udp_timeout),
        ),
        drain_period: cfg.drain_period,
        ..proxy_core::Config::default()
    })
}

pub(super) fn local_detect(cfg: &ProxyConfig, node: Option<&Node>) -> LocalDetect {
    match &cfg.detect_local {
        DetectLocal::ClusterCidr if cfg.cluster_cidrs.is_empty() => LocalDetect::None,
        DetectLocal::ClusterCidr => LocalDetect::ClusterCidr(cfg.cluster_cidrs.clone()),
        DetectLocal::NodeCidr => {
            let cidrs: Vec<ipnet::IpNet> = node
                .and_then(|n| n.spec.as_ref())
                .and_then(|s| s.pod_cidrs.clone())
                .unwrap_or_default()
                .iter()
                .filter_map(|c| c.parse().ok())
                .collect();
            if cidrs.is_empty() {
                LocalDetect::None
            } else {
                LocalDetect::NodeCidr(cidrs)
            }
        }
        DetectLocal::BridgeInterface(b) => LocalDetect::BridgeInterface(b.clone()),
        DetectLocal::InterfaceNamePrefix(p) => LocalDetect::InterfaceNamePrefix(p.clone()),
    }
}

/// The node's primary IPs from its status (InternalIP first, then
/// ExternalIP), one per family, unless `bind_address` overrides.
pub fn primary_ips(node: Option<&Node>, bind_address: IpAddr) -> Vec<IpAddr> {
    if !bind_address.is_unspecified() {
        return vec![bind_address];
    }
    let mut out: Vec<IpAddr> = Vec::new();
    let addrs = node
        .and_then(|n| n.status.as_ref())
        .and_then(|s| s.addresses.clone())
        .unwrap_or_default();
    for ty in ["InternalIP", "ExternalIP"] {
        for a in addrs.iter().filter(|a| a.type_ == ty) {
            if let Ok(ip) = a.address.parse::<IpAddr>() {
                if !out.iter().any(|o| o.is_ipv4() == ip.is_ipv4()) {
                    out.push(ip);
                }
            }
        }
    }
    out
}
