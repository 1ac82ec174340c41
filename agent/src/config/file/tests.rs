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

#[test]
fn an_empty_bind_address_in_a_file_means_the_default_as_in_kube_proxy() {
    // v1alpha1 cannot say "disabled": kube-proxy's defaulting turns "" into
    // the default address, and kubeadm's config.conf writes "".
    let c = resolve_args(&["--healthz-bind-address=", "--metrics-bind-address="])
        .unwrap()
        .config;
    assert_eq!(c.healthz_bind_address, None);
    let text = to_yaml(&c);
    assert!(
        text.contains("healthzBindAddress: ''") || text.contains("healthzBindAddress: \"\""),
        "{text}"
    );
    let mut warnings = Vec::new();
    let back = parse_config_file(&text, &mut warnings).unwrap();
    assert_eq!(
        back.healthz_bind_address,
        Some("0.0.0.0:10256".parse().unwrap())
    );
    assert_eq!(
        back.metrics_bind_address,
        Some("127.0.0.1:10249".parse().unwrap())
    );
}

#[test]
fn absent_or_empty_bind_addresses_take_kube_proxys_default_for_the_bind_address_family() {
    let parse = |body: &str| {
        let text = format!(
            "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n{body}"
        );
        parse_config_file(&text, &mut Vec::new()).unwrap()
    };
    let addr = |s: &str| Some(s.parse::<std::net::SocketAddr>().unwrap());
    for body in [
        "bindAddress: \"::\"\n",
        "bindAddress: fd00::1\nhealthzBindAddress: \"\"\nmetricsBindAddress: \"\"\n",
    ] {
        let c = parse(body);
        assert_eq!(c.healthz_bind_address, addr("[::]:10256"), "{body}");
        assert_eq!(c.metrics_bind_address, addr("[::1]:10249"), "{body}");
    }
    for body in ["", "bindAddress: 10.0.0.1\nhealthzBindAddress: \"\"\n"] {
        let c = parse(body);
        assert_eq!(c.healthz_bind_address, addr("0.0.0.0:10256"), "{body}");
        assert_eq!(c.metrics_bind_address, addr("127.0.0.1:10249"), "{body}");
    }
    // A given address wins, whatever bindAddress is; a bare IP takes the port.
    let c = parse("bindAddress: \"::\"\nhealthzBindAddress: 10.0.0.2\n");
    assert_eq!(c.healthz_bind_address, addr("10.0.0.2:10256"));
}

/// The fields of kube-proxy's `KubeProxyConfiguration` v1alpha1 (json names,
/// nested with `.`), read from kubernetes/kubernetes
/// staging/src/k8s.io/kube-proxy/config/v1alpha1/types.go (commit
/// 052d2d84f95e, the newest stored: it already has
/// `iptables.snatNodeInternalIP`), component-base's
/// `ClientConnectionConfiguration` (config/v1alpha1) and
/// `LoggingConfiguration` (logs/api/v1/types.go, commit 008b3652959c:
/// `options.{text,json}` each inline `OutputRoutingOptions`, i.e.
/// `splitStream` and `infoBufferSize`).
const UPSTREAM_V1ALPHA1_FIELDS: &[&str] = &[
    "apiVersion",
    "kind",
    "featureGates",
    "clientConnection.kubeconfig",
    "clientConnection.acceptContentTypes",
    "clientConnection.contentType",
    "clientConnection.qps",
    "clientConnection.burst",
    "logging.format",
    "logging.flushFrequency",
    "logging.verbosity",
    "logging.vmodule",
    "logging.options.text.splitStream",
    "logging.options.text.infoBufferSize",
    "logging.options.json.splitStream",
    "logging.options.json.infoBufferSize",
    "hostnameOverride",
    "bindAddress",
    "healthzBindAddress",
    "metricsBindAddress",
    "bindAddressHardFail",
    "enableProfiling",
    "showHiddenMetricsForVersion",
    "mode",
    "iptables.masqueradeBit",
    "iptables.masqueradeAll",
    "iptables.localhostNodePorts",
    "iptables.snatNodeInternalIP",
    "iptables.syncPeriod",
    "iptables.minSyncPeriod",
    "ipvs.syncPeriod",
    "ipvs.minSyncPeriod",
    "ipvs.scheduler",
    "ipvs.excludeCIDRs",
    "ipvs.strictARP",
    "ipvs.tcpTimeout",
    "ipvs.tcpFinTimeout",
    "ipvs.udpTimeout",
    "nftables.masqueradeBit",
    "nftables.masqueradeAll",
    "nftables.syncPeriod",
    "nftables.minSyncPeriod",
    "winkernel.networkName",
    "winkernel.sourceVip",
    "winkernel.enableDSR",
    "winkernel.rootHnsEndpointName",
    "winkernel.forwardHealthCheckVip",
    "detectLocalMode",
    "detectLocal.bridgeInterface",
    "detectLocal.interfaceNamePrefix",
    "clusterCIDR",
    "nodePortAddresses",
    "oomScoreAdj",
    "conntrack.maxPerCore",
    "conntrack.min",
    "conntrack.tcpEstablishedTimeout",
    "conntrack.tcpCloseWaitTimeout",
    "conntrack.tcpBeLiberal",
    "conntrack.udpTimeout",
    "conntrack.udpStreamTimeout",
    "configSyncPeriod",
    "portRange",
    "windowsRunAsService",
];

/// Upstream fields `--write-config-to` leaves out, and why.
const NOT_WRITTEN: &[&str] = &[
    // omitempty upstream, and empty (or false) here.
    "featureGates",
    "logging.vmodule",
    "logging.options.text.splitStream",
    "logging.options.json.splitStream",
    "windowsRunAsService",
    // Newer than v1.29: older kube-proxies would decode the file leniently.
    "iptables.snatNodeInternalIP",
];

fn leaf_paths(prefix: &str, v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) if !m.is_empty() => {
            for (k, v) in m {
                let k = k.as_str();
                let p = if prefix.is_empty() {
                    k.to_string()
                } else {
                    format!("{prefix}.{k}")
                };
                leaf_paths(&p, v, out);
            }
        }
        _ => out.push(prefix.to_string()),
    }
}

#[test]
fn written_config_has_every_field_of_kube_proxys_type_with_its_defaults() {
    let text = to_yaml(&ProxyConfig::default());
    let doc: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    let mut written = Vec::new();
    leaf_paths("", &doc, &mut written);
    written.sort();
    let mut expected: Vec<String> = UPSTREAM_V1ALPHA1_FIELDS
        .iter()
        .filter(|f| !NOT_WRITTEN.contains(f))
        .map(|f| f.to_string())
        .collect();
    expected.sort();
    assert_eq!(written, expected, "{text}");
    // kube-proxy's defaults (SetDefaults_KubeProxyConfiguration), mode ipvs.
    for (path, want) in [
        ("apiVersion", "kubeproxy.config.k8s.io/v1alpha1"),
        ("kind", "KubeProxyConfiguration"),
        ("mode", "ipvs"),
        ("bindAddress", "0.0.0.0"),
        ("healthzBindAddress", "0.0.0.0:10256"),
        ("metricsBindAddress", "127.0.0.1:10249"),
        (
            "clientConnection.contentType",
            "application/vnd.kubernetes.protobuf",
        ),
        ("clientConnection.qps", "5.0"),
        ("clientConnection.burst", "10"),
        ("configSyncPeriod", "15m0s"),
        ("conntrack.maxPerCore", "32768"),
        ("conntrack.min", "131072"),
        ("conntrack.tcpEstablishedTimeout", "24h0m0s"),
        ("conntrack.tcpCloseWaitTimeout", "1h0m0s"),
        ("iptables.masqueradeBit", "14"),
        ("iptables.localhostNodePorts", "true"),
        ("iptables.syncPeriod", "30s"),
        ("iptables.minSyncPeriod", "1s"),
        ("ipvs.syncPeriod", "30s"),
        ("ipvs.minSyncPeriod", "0s"),
        ("detectLocalMode", "ClusterCIDR"),
        ("oomScoreAdj", "-999"),
        ("logging.format", "text"),
        ("logging.flushFrequency", "5s"),
    ] {
        let mut v = &doc;
        for k in path.split('.') {
            v = &v[k];
        }
        let got = match v {
            serde_json::Value::String(s) => s.clone(),
            other => serde_saphyr::to_string(other).unwrap().trim().to_string(),
        };
        assert_eq!(got, want, "{path}");
    }
    // And it reads back without a warning.
    let mut warnings = Vec::new();
    parse_config_file(&text, &mut warnings).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
}

/// A valid value for an upstream field that is not kube-proxy's default.
fn non_default(path: &str) -> serde_json::Value {
    use serde_json::Value as V;
    let s = |x: &str| V::String(x.to_string());
    let n = |x: i64| V::Number(x.into());
    let last = path.rsplit('.').next().unwrap();
    match path {
        "featureGates" => serde_saphyr::from_str("{SomeGate: true}").unwrap(),
        "logging.vmodule" => {
            serde_saphyr::from_str("[{filePattern: proxier, verbosity: 4}]").unwrap()
        }
        "logging.format" => s("json"),
        "logging.verbosity" => n(3),
        "clientConnection.qps" | "clientConnection.burst" => n(7),
        "clientConnection.contentType" => s("application/json"),
        "clientConnection.kubeconfig" => s("/etc/k.conf"),
        "iptables.masqueradeBit" | "nftables.masqueradeBit" => n(15),
        "iptables.localhostNodePorts" => V::Bool(false),
        "oomScoreAdj" => n(-5),
        "conntrack.maxPerCore" | "conntrack.min" => n(7),
        "ipvs.excludeCIDRs" => serde_saphyr::from_str("[10.9.0.0/16]").unwrap(),
        "nodePortAddresses" => serde_saphyr::from_str("[10.0.0.0/8]").unwrap(),
        "ipvs.scheduler" => s("wlc"),
        "bindAddress" => s("10.0.0.1"),
        "healthzBindAddress" => s("127.0.0.1:1234"),
        "metricsBindAddress" => s("127.0.0.1:1235"),
        "clusterCIDR" => s("10.1.0.0/16"),
        "detectLocalMode" => s("NodeCIDR"),
        "mode" => s("ipvs"),
        "showHiddenMetricsForVersion" => s("1.34"),
        "portRange" => s("30000-30100"),
        "logging.options.text.infoBufferSize" | "logging.options.json.infoBufferSize" => s("1Ki"),
        _ if last.ends_with("Period") || last.ends_with("Timeout") || last == "flushFrequency" => {
            s("7s")
        }
        _ if matches!(
            last,
            "bindAddressHardFail"
                | "enableProfiling"
                | "masqueradeAll"
                | "snatNodeInternalIP"
                | "strictARP"
                | "enableDSR"
                | "forwardHealthCheckVip"
                | "tcpBeLiberal"
                | "splitStream"
                | "windowsRunAsService"
        ) =>
        {
            V::Bool(true)
        }
        _ => s("x"),
    }
}

/// Fields whose value changes nothing here without another field (as in
/// kube-proxy): `mode: ipvs` is what we run; the detectLocal names apply
/// only with their detectLocalMode; `iptables.localhostNodePorts: false` is
/// what IPVS mode always does.
const ACCEPTED_SILENTLY: &[&str] = &[
    "mode",
    "iptables.localhostNodePorts",
    "detectLocal.bridgeInterface",
    "detectLocal.interfaceNamePrefix",
];

#[test]
fn every_field_of_kube_proxys_type_is_honoured_or_named_in_a_warning() {
    let base = parse_config_file(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n",
        &mut Vec::new(),
    )
    .unwrap();
    let mut failures = Vec::new();
    for path in UPSTREAM_V1ALPHA1_FIELDS {
        if matches!(*path, "apiVersion" | "kind") {
            continue;
        }
        let mut doc = serde_json::Map::new();
        doc.insert("apiVersion".into(), API_VERSION.into());
        doc.insert("kind".into(), KIND.into());
        let keys: Vec<&str> = path.split('.').collect();
        let mut at = &mut doc;
        for k in &keys[..keys.len() - 1] {
            at = at
                .entry(*k)
                .or_insert_with(|| serde_json::Value::Object(Default::default()))
                .as_object_mut()
                .unwrap();
        }
        at.insert((*keys.last().unwrap()).into(), non_default(path));
        let text = serde_saphyr::to_string(&doc).unwrap();
        let mut warnings = Vec::new();
        let c = parse_config_file(&text, &mut warnings)
            .unwrap_or_else(|e| panic!("{path}: {e}\n{text}"));
        // Named itself, or a section it is in (`winkernel`, `logging.options`).
        let warned = (1..=keys.len()).any(|i| {
            let p = keys[..i].join(".");
            warnings.iter().any(|w| w.contains(&format!("field {p} ")))
        });
        let honoured = c != base;
        if !(honoured || warned || ACCEPTED_SILENTLY.contains(path)) {
            failures.push(format!("{path}: neither honoured nor warned about"));
        }
        if honoured && warned {
            failures.push(format!("{path}: honoured and warned: {warnings:?}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn every_honoured_field_survives_write_config_and_reading_back() {
    // One document with every upstream field at a non-default value (the
    // ones we honour change the configuration), written by
    // `--write-config-to` and read back: the same configuration, and
    // nothing but upstream's field names in the written file.
    let mut doc = serde_json::Map::new();
    doc.insert("apiVersion".into(), API_VERSION.into());
    doc.insert("kind".into(), KIND.into());
    for path in UPSTREAM_V1ALPHA1_FIELDS {
        if matches!(*path, "apiVersion" | "kind") {
            continue;
        }
        let keys: Vec<&str> = path.split('.').collect();
        let mut at = &mut doc;
        for k in &keys[..keys.len() - 1] {
            at = at
                .entry((*k).to_string())
                .or_insert_with(|| serde_json::Value::Object(Default::default()))
                .as_object_mut()
                .unwrap();
        }
        at.insert((*keys.last().unwrap()).into(), non_default(path));
    }
    // detectLocalMode NodeCIDR takes no name; the bridge one needs its own.
    doc.insert("detectLocalMode".into(), "BridgeInterface".into());
    doc.insert(
        "detectLocal".into(),
        serde_saphyr::from_str::<serde_json::Value>(
            "{bridgeInterface: cbr0, interfaceNamePrefix: ''}",
        )
        .unwrap(),
    );
    // JSON is YAML: the file parser reads it as kube-proxy would.
    let text = serde_json::to_string_pretty(&doc).unwrap();
    let mut warnings = Vec::new();
    let c = parse_config_file(&text, &mut warnings).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let base = ProxyConfig::default();
    assert_ne!(c.ipvs, base.ipvs);
    assert_ne!(c.client, base.client);
    assert_ne!(c.healthz_bind_address, base.healthz_bind_address);
    assert_ne!(c.log_format, base.log_format);
    assert_ne!(c.verbosity, base.verbosity);

    let written = to_yaml(&c);
    let mut again = Vec::new();
    let back = parse_config_file(&written, &mut again).unwrap();
    assert_eq!(back, c, "{written}");
    assert!(again.is_empty(), "{again:?}");
    let mut paths = Vec::new();
    let written_doc: serde_json::Value = serde_saphyr::from_str(&written).unwrap();
    leaf_paths("", &written_doc, &mut paths);
    for p in &paths {
        assert!(
            UPSTREAM_V1ALPHA1_FIELDS.contains(&p.as_str()),
            "{p} is not upstream's"
        );
    }
}
