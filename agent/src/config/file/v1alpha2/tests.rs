use std::time::Duration;

use serde_json::Value;

use super::*;
use crate::config::testutil::*;
use crate::config::*;

const V1ALPHA2_CONFIGMAP: &str =
    include_str!("../../../../tests/fixtures/kube-proxy-v1alpha2-configmap.yaml");

const V2_HEAD: &str =
    "apiVersion: kubeproxy.config.k8s.io/v1alpha2\nkind: KubeProxyConfiguration\n";

/// The `config.conf` key of the fixture ConfigMap.
fn configmap_config() -> String {
    let cm: Value = serde_saphyr::from_str(V1ALPHA2_CONFIGMAP).expect("fixture is YAML");
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
