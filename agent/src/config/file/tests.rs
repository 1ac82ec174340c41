use std::time::Duration;

use super::*;
use crate::config::testutil::*;
use crate::config::*;

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
    let c = parse_config_file(&format!("{head}ipvs:\n  scheduler: foo\n"), &mut vec![]).unwrap();
    assert_eq!(
        field_of(validate(&c).unwrap_err()),
        "ipvs.scheduler (--ipvs-scheduler)"
    );
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
