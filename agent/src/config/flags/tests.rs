use std::time::Duration;

use clap::Parser;

use super::*;
use crate::config::testutil::*;
use crate::config::*;

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
