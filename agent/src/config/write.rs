//! `--write-config-to`: the configuration as a v1alpha1 document.

use std::net::SocketAddr;

use ipnet::IpNet;

use super::model::{DetectLocal, NodePortAddress, ProxyConfig};
use super::{ConfigError, API_VERSION, KIND};
use crate::duration;

/// Renders the configuration as a `KubeProxyConfiguration` v1alpha1 YAML
/// document (what `--write-config-to` writes): every field of kube-proxy's
/// v1alpha1 type that v1.29 through v1.35 all have (so each of them decodes it
/// strictly), the ones we do not use at kube-proxy's defaults, `mode: ipvs`.
/// [`parse_config_file`](super::parse_config_file) reads it back to the same configuration, except the
/// agent-only fields and a disabled health or metrics server: v1alpha1 has no
/// way to say "disabled" (an empty address means the default, in kube-proxy
/// and here), so one is written as `""`.
///
/// Left out: `featureGates`, `logging.vmodule` and `windowsRunAsService`
/// (`omitempty`, and empty here) and `iptables.snatNodeInternalIP` (newer than
/// v1.29: older kube-proxies would fall back to lenient decoding).
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
            "acceptContentTypes": "",
        },
        "configSyncPeriod": "15m0s",
        "conntrack": {
            "maxPerCore": 32768,
            "min": 131072,
            "tcpBeLiberal": false,
            "tcpCloseWaitTimeout": "1h0m0s",
            "tcpEstablishedTimeout": "24h0m0s",
            "udpStreamTimeout": "0s",
            "udpTimeout": "0s",
        },
        "clusterCIDR": cidrs(&cfg.cluster_cidrs).join(","),
        "detectLocalMode": cfg.detect_local.mode_name(),
        "detectLocal": { "bridgeInterface": bridge, "interfaceNamePrefix": prefix },
        "healthzBindAddress": addr(&cfg.healthz_bind_address),
        "hostnameOverride": cfg.hostname_override.clone().unwrap_or_default(),
        "enableProfiling": false,
        "iptables": {
            "localhostNodePorts": true,
            "masqueradeAll": cfg.masquerade_all,
            "masqueradeBit": 14,
            "minSyncPeriod": "1s",
            "syncPeriod": "30s",
        },
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
        "logging": {
            "flushFrequency": "5s",
            "format": cfg.log_format.as_str(),
            "options": {
                "json": { "infoBufferSize": "0" },
                "text": { "infoBufferSize": "0" },
            },
            "verbosity": cfg.verbosity,
        },
        "metricsBindAddress": addr(&cfg.metrics_bind_address),
        "mode": "ipvs",
        "nftables": {
            // kube-proxy reads iptables.masqueradeAll in IPVS mode.
            "masqueradeAll": false,
            "masqueradeBit": 14,
            "minSyncPeriod": "1s",
            "syncPeriod": "30s",
        },
        "nodePortAddresses": npa,
        "oomScoreAdj": cfg.oom_score_adj,
        "portRange": "",
        "showHiddenMetricsForVersion": "",
        "winkernel": {
            "enableDSR": false,
            "forwardHealthCheckVip": false,
            "networkName": "",
            "rootHnsEndpointName": "",
            "sourceVip": "",
        },
    });
    serde_saphyr::to_string(&doc).unwrap_or_default()
}

/// Writes [`to_yaml`] to `path`.
pub fn write_config(cfg: &ProxyConfig, path: &std::path::Path) -> Result<(), ConfigError> {
    std::fs::write(path, to_yaml(cfg)).map_err(|source| ConfigError::Write {
        path: path.to_path_buf(),
        source,
    })
}
