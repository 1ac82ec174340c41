//! `kubeproxy.config.k8s.io/v1alpha1`.

use std::net::{Ipv6Addr, SocketAddr};

use super::super::model::ProxyConfig;
use super::super::validate::{parse_bind_address, parse_cidr_list, Schema};
use super::super::{invalid, ConfigError};
use super::{
    check_masquerade_bit, ignore_conntrack, parse_detect_local, parse_ipvs_common, Section,
};

pub(super) fn parse_v1alpha1(
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
    // Empty or absent means kube-proxy's default here
    // (SetDefaults_KubeProxyConfiguration), as kubeadm's config.conf writes
    // it: it does not disable the server. The default follows bindAddress's
    // family: 0.0.0.0:10256 and 127.0.0.1:10249, or [::]:10256 and
    // [::1]:10249 when bindAddress is IPv6.
    let v6 = cfg.bind_address.is_ipv6();
    let given = |s: Option<String>| s.filter(|s| !s.trim().is_empty());
    match given(top.get::<String>("healthzBindAddress")?) {
        Some(s) => cfg.healthz_bind_address = parse_bind_address("healthzBindAddress", &s, 10256)?,
        None if v6 => {
            cfg.healthz_bind_address = Some(SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 10256))
        }
        None => {}
    }
    match given(top.get::<String>("metricsBindAddress")?) {
        Some(s) => cfg.metrics_bind_address = parse_bind_address("metricsBindAddress", &s, 10249)?,
        None if v6 => {
            cfg.metrics_bind_address = Some(SocketAddr::new(Ipv6Addr::LOCALHOST.into(), 10249))
        }
        None => {}
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
    if let Some(mut nft) = top.section("nftables")? {
        let why = "only used by kube-proxy's nftables mode";
        nft.ignore("masqueradeAll", &["false"], why, warnings);
        nft.ignore("masqueradeBit", &["14"], why, warnings);
        nft.ignore("minSyncPeriod", &["1s"], why, warnings);
        nft.ignore("syncPeriod", &["30s"], why, warnings);
        nft.finish(warnings);
    }
    top.ignore("windowsRunAsService", &[], "Windows only", warnings);
    Ok(())
}
