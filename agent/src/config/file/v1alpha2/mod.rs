//! `kubeproxy.config.k8s.io/v1alpha2` (KEP-784).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;

use super::super::model::ProxyConfig;
use super::super::validate::{parse_cidr, Schema};
use super::super::{invalid, ConfigError};
use super::{
    check_masquerade_bit, ignore_conntrack, parse_detect_local, parse_ipvs_common, Section,
};

pub(super) fn parse_v1alpha2(
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

#[cfg(test)]
mod tests;
