use std::ffi::OsString;

use clap::Parser;

use super::*;
use crate::config::testutil::{temp_file, Cli};
use crate::config::{resolve, Resolved};

/// The whole pipeline main runs: kube-proxy's reading, clap, resolution.
fn cmdline(args: &[&str]) -> Result<(Resolved, Vec<String>), String> {
    let mut v = vec!["kube-proxy"];
    v.extend_from_slice(args);
    let kp = kube_proxy_args(v).map_err(|e| e.to_string())?;
    let cli = Cli::try_parse_from(kp.args).map_err(|e| e.to_string())?;
    let r = resolve(&cli.flags, None).map_err(|e| e.to_string())?;
    Ok((r, kp.warnings))
}

fn strs(a: &[OsString]) -> Vec<String> {
    a.iter().map(|s| s.to_string_lossy().into_owned()).collect()
}

/// A value kube-proxy accepts for this flag (and so do we).
fn sample(f: &KubeProxyFlag, config_file: &str) -> String {
    match f.name {
        "config" => config_file.to_string(),
        "write-config-to" => "/tmp/ipvs-proxy-never-written.yaml".into(),
        "proxy-mode" => "ipvs".into(),
        "ipvs-scheduler" => "wrr".into(),
        "ipvs-sync-period" => "1m".into(),
        "ipvs-min-sync-period" => "1s".into(),
        "bind-address" => "10.0.0.1".into(),
        "healthz-bind-address" => "0.0.0.0:10256".into(),
        "metrics-bind-address" => "127.0.0.1:10249".into(),
        "cluster-cidr" => "10.244.0.0/16".into(),
        "detect-local-mode" => "ClusterCIDR".into(),
        "ipvs-exclude-cidrs" | "nodeport-addresses" => "10.0.0.0/8".into(),
        "logging-format" => "json".into(),
        "kube-api-content-type" => "application/json".into(),
        "healthz-port" => "10256".into(),
        "metrics-port" => "10249".into(),
        "iptables-masquerade-bit" => "14".into(),
        "oom-score-adj" => "-500".into(),
        "hostname-override" => "node-a".into(),
        _ => match f.kind {
            Kind::Bool => "true".into(),
            Kind::String | Kind::StringSlice => "some-value".into(),
            Kind::Int32 | Kind::Uint32 | Kind::Uint64 => "3".into(),
            Kind::Float32 => "7.5".into(),
            Kind::Duration => "2m30s".into(),
            Kind::MapStringBool => "SomeGate=true,OtherGate=false".into(),
            Kind::Quantity => "2Ki".into(),
            Kind::PortRange => "30000-30100".into(),
            Kind::Severity => "WARNING".into(),
            Kind::TraceLocation => "proxier.go:120".into(),
            Kind::VModule => "proxier=4,sync*=2".into(),
            Kind::MajorMinor => "1.34".into(),
        },
    }
}

/// Every spelling pflag takes for this flag and value.
fn spellings(f: &KubeProxyFlag, value: &str) -> Vec<Vec<String>> {
    let mut out = vec![vec![format!("--{}={value}", f.name)]];
    if f.kind == Kind::Bool {
        out.push(vec![format!("--{}", f.name)]);
        out.push(vec![format!("--{}=false", f.name)]);
        out.push(vec![format!("--{}=1", f.name)]);
    } else {
        out.push(vec![format!("--{}", f.name), value.to_string()]);
    }
    if f.name.contains('-') {
        out.push(vec![format!("--{}={value}", f.name.replace('-', "_"))]);
    }
    if f.name == "v" {
        out.push(vec![format!("-v={value}")]);
        out.push(vec![format!("-v{value}")]);
        out.push(vec!["-v".to_string(), value.to_string()]);
    }
    out
}

#[test]
fn every_kube_proxy_flag_parses_in_every_spelling() {
    let file = temp_file(
        "compat-minimal.yaml",
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n",
    );
    let file = file.to_str().expect("utf-8 path");
    let mut checked = 0;
    for f in KUBE_PROXY_FLAGS {
        let value = sample(f, file);
        for spelling in spellings(f, &value) {
            let args: Vec<&str> = spelling.iter().map(String::as_str).collect();
            let (_, warnings) = cmdline(&args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            let named: Vec<&String> = warnings
                .iter()
                .filter(|w| w.starts_with(&format!("flag --{} has no effect", f.name)))
                .collect();
            match f.effect {
                Effect::Ignored(why) => {
                    assert_eq!(named.len(), 1, "{args:?}: {warnings:?}");
                    assert!(named[0].ends_with(why), "{args:?}: {warnings:?}");
                }
                Effect::Honoured(_) => assert!(named.is_empty(), "{args:?}: {warnings:?}"),
            }
            checked += 1;
        }
    }
    // 69 flags, every one in at least two spellings.
    assert!(checked >= 2 * KUBE_PROXY_FLAGS.len(), "{checked}");
}

/// kube-proxy's own flags on Linux (`cmd/kube-proxy/app`, `AddFlags`; the
/// Linux `addOSFlags` adds none) in v1.31 through v1.35, read from
/// kubernetes/kubernetes `cmd/kube-proxy/app/options.go` (a v1.31
/// development version and the newest stored one, commit 008b3652959c) and
/// checked against the kubernetes.io kube-proxy references for v1.31, v1.34
/// and v1.35 (which do not show the deprecated, hidden `healthz-port` and
/// `metrics-port`). See docs/migration.md, "Which kube-proxy flags".
const APP_FLAGS: [&str; 47] = [
    "config",
    "write-config-to",
    "cleanup",
    "feature-gates",
    "kubeconfig",
    "master",
    "kube-api-content-type",
    "kube-api-burst",
    "kube-api-qps",
    "hostname-override",
    "bind-address",
    "healthz-bind-address",
    "metrics-bind-address",
    "bind-address-hard-fail",
    "profiling",
    "show-hidden-metrics-for-version",
    "init-only",
    "proxy-mode",
    "iptables-masquerade-bit",
    "masquerade-all",
    "iptables-localhost-nodeports",
    "iptables-sync-period",
    "iptables-min-sync-period",
    "ipvs-sync-period",
    "ipvs-min-sync-period",
    "ipvs-scheduler",
    "ipvs-exclude-cidrs",
    "ipvs-strict-arp",
    "ipvs-tcp-timeout",
    "ipvs-tcpfin-timeout",
    "ipvs-udp-timeout",
    "detect-local-mode",
    "pod-bridge-interface",
    "pod-interface-name-prefix",
    "cluster-cidr",
    "nodeport-addresses",
    "oom-score-adj",
    "conntrack-max-per-core",
    "conntrack-min",
    "conntrack-tcp-timeout-established",
    "conntrack-tcp-timeout-close-wait",
    "conntrack-tcp-be-liberal",
    "conntrack-udp-timeout",
    "conntrack-udp-timeout-stream",
    "config-sync-period",
    "healthz-port",
    "metrics-port",
];
/// In v1.29 and v1.30 only (the pre-v1.31 `server.go` `AddFlags`; removed
/// by kubernetes#126293, CHANGELOG-1.31 v1.31.0-rc.0).
const APP_FLAGS_UNTIL_V1_30: [&str; 1] = ["proxy-port-range"];
/// component-base `logs/api/v1` `AddFlags` with the text and JSON formats
/// registered.
const LOGSAPI_FLAGS: [&str; 8] = [
    "logging-format",
    "log-flush-frequency",
    "v",
    "vmodule",
    "log-text-split-stream",
    "log-text-info-buffer-size",
    "log-json-split-stream",
    "log-json-info-buffer-size",
];
/// klog v2's flags on goflag.CommandLine, in klog's spelling (the v1.31,
/// v1.34 and v1.35 references list them so); `-v` and `--vmodule` are
/// logsapi's.
const KLOG_FLAGS: [&str; 11] = [
    "add_dir_header",
    "alsologtostderr",
    "log_backtrace_at",
    "log_dir",
    "log_file",
    "log_file_max_size",
    "logtostderr",
    "one_output",
    "skip_headers",
    "skip_log_headers",
    "stderrthreshold",
];
/// cadvisor's `machine` package (`flag.String("boot_id_file", ...)`), linked
/// by kube-proxy's Linux build in every version.
const CADVISOR_FLAGS: [&str; 2] = ["boot_id_file", "machine_id_file"];

/// Upstream's flag names for kube-proxy 1.`minor` (`_` read as `-`, as
/// kube-proxy's word-separator normalisation reads them), without `-h/--help`
/// and `--version`, which clap and [`kube_proxy_args`] handle.
fn upstream(minor: u32) -> std::collections::BTreeSet<String> {
    let until_v1_30: &[&str] = if minor <= 30 {
        &APP_FLAGS_UNTIL_V1_30
    } else {
        &[]
    };
    APP_FLAGS
        .iter()
        .chain(until_v1_30)
        .chain(&LOGSAPI_FLAGS)
        .chain(&KLOG_FLAGS)
        .chain(&CADVISOR_FLAGS)
        .map(|n| n.replace('_', "-"))
        .collect()
}

#[test]
fn the_list_is_upstreams_flag_set_in_every_version() {
    for minor in OLDEST..=NEWEST {
        let ours: std::collections::BTreeSet<String> = KUBE_PROXY_FLAGS
            .iter()
            .filter(|f| f.versions.contains(minor))
            .map(|f| f.name.to_string())
            .collect();
        let theirs = upstream(minor);
        assert_eq!(
            ours.symmetric_difference(&theirs).collect::<Vec<_>>(),
            Vec::<&String>::new(),
            "v1.{minor}: ours vs upstream's"
        );
        // Each upstream spelling (klog's with `_`) is found.
        for n in APP_FLAGS.iter().chain(&KLOG_FLAGS).chain(&CADVISOR_FLAGS) {
            assert!(lookup(n).is_some(), "v1.{minor}: --{n}");
        }
    }
    assert_eq!(upstream(29).len(), 69);
    assert_eq!(upstream(30).len(), 69);
    assert_eq!(upstream(31).len(), 68);
    assert_eq!(upstream(35).len(), 68);
    // Nothing in the list outside the versions it covers.
    assert_eq!(KUBE_PROXY_FLAGS.len(), upstream(29).len());
    for f in KUBE_PROXY_FLAGS {
        assert!(
            f.versions.first >= OLDEST && f.versions.last <= NEWEST,
            "{}",
            f.name
        );
    }
}

#[test]
fn version_takes_kube_proxys_values() {
    let kp = kube_proxy_args(["kube-proxy", "--version=raw"]).unwrap();
    assert_eq!(strs(&kp.args), ["kube-proxy", "--version"]);
    let kp = kube_proxy_args(["kube-proxy", "--version=false", "--v=1"]).unwrap();
    assert_eq!(strs(&kp.args), ["kube-proxy", "--v=1"]);
    // vX.Y.Z sets the reported version and runs on: accepted, one warning.
    let (_, w) = cmdline(&["--version=v1.35.0", "--version=v1.35.0-rc.1+abc"]).unwrap();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].starts_with("flag --version=vX.Y.Z has no effect"),
        "{w:?}"
    );
}

#[test]
fn the_list_is_kube_proxys_linux_flag_set() {
    let mut names: Vec<&str> = KUBE_PROXY_FLAGS.iter().map(|f| f.name).collect();
    let n = names.len();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), n, "a flag is listed twice");
    for must in [
        "config",
        "hostname-override",
        "feature-gates",
        "show-hidden-metrics-for-version",
        "conntrack-tcp-be-liberal",
        "iptables-localhost-nodeports",
        "logging-format",
        "v",
        "vmodule",
        "log-json-info-buffer-size",
        "logtostderr",
        "stderrthreshold",
        "init-only",
        "healthz-port",
    ] {
        assert!(lookup(must).is_some(), "{must}");
    }
    // klog's underscore spellings resolve to the same flag.
    assert_eq!(lookup("log_dir").map(|f| f.name), Some("log-dir"));
    // Windows-only flags are not on kube-proxy's Linux command line.
    assert!(lookup("windows-service").is_none());
    // Every honoured flag is one clap knows.
    for f in KUBE_PROXY_FLAGS {
        if let Effect::Honoured(_) = f.effect {
            let v = sample(f, "/x.yaml");
            let kp = kube_proxy_args(["kube-proxy", &format!("--{}={v}", f.name)]).unwrap();
            assert!(Cli::try_parse_from(kp.args).is_ok(), "{}", f.name);
        }
    }
}

#[test]
fn a_bool_never_takes_the_next_argument() {
    let kp = kube_proxy_args(["kube-proxy", "--cleanup", "false"]).unwrap();
    assert_eq!(strs(&kp.args), ["kube-proxy", "--cleanup=true", "false"]);
    let kp = kube_proxy_args(["kube-proxy", "--profiling", "--v", "3"]).unwrap();
    assert_eq!(strs(&kp.args), ["kube-proxy", "--v=3"]);
    assert_eq!(kp.warnings.len(), 1);
}

#[test]
fn last_value_wins_lists_append_and_repeats_warn_once() {
    let kp = kube_proxy_args([
        "kube-proxy",
        "--ipvs-scheduler=rr",
        "--nodeport-addresses=10.0.0.0/8",
        "--conntrack-min=1",
        "--ipvs-scheduler",
        "wlc",
        "--nodeport-addresses",
        "192.168.0.0/16",
        "--conntrack_min=2",
    ])
    .unwrap();
    assert_eq!(
        strs(&kp.args),
        [
            "kube-proxy",
            "--ipvs-scheduler=wlc",
            "--nodeport-addresses=10.0.0.0/8,192.168.0.0/16"
        ]
    );
    assert_eq!(kp.warnings.len(), 1, "{:?}", kp.warnings);
    // -v above 255 is a valid uint32 for kube-proxy; our levels top out.
    let kp = kube_proxy_args(["kube-proxy", "-v", "4000"]).unwrap();
    assert_eq!(strs(&kp.args), ["kube-proxy", "--v=255"]);
}

#[test]
fn values_kube_proxy_rejects_are_rejected_naming_the_flag() {
    for (arg, reason) in [
        ("--conntrack-min=-1", "greater than or equal to 0"),
        ("--conntrack-max-per-core=x", "int32"),
        ("--config-sync-period=0s", "greater than 0"),
        ("--iptables-sync-period=fast", "invalid"),
        ("--feature-gates=SomeGate", "missing bool value"),
        (
            "--feature-gates=SomeGate=maybe",
            "invalid value of SomeGate",
        ),
        ("--cleanup=yes", "bool"),
        ("--profiling=", "bool"),
        ("--log-text-info-buffer-size=lots", "quantities"),
        ("--stderrthreshold=LOUD", "severity"),
        ("--proxy-port-range=200-100", "begin-end"),
        ("--log-backtrace-at=nowhere", "file.go:234"),
        ("--vmodule=proxier", "pattern=N"),
        (
            "--show-hidden-metrics-for-version=latest",
            "<major>.<minor>",
        ),
        ("--v=-1", "uint32"),
        ("--log-file-max-size=-5", "uint64"),
        ("--kube-api-burst=99999999999", "int32"),
        ("--version=maybe", "raw"),
        ("--version=v1.35", "vX.Y.Z"),
    ] {
        let err = kube_proxy_args(["kube-proxy", arg])
            .unwrap_err()
            .to_string();
        let name = arg.split('=').next().unwrap();
        assert!(err.contains(name), "{arg}: {err}");
        assert!(err.contains(reason), "{arg}: {err}");
    }
    let err = kube_proxy_args(["kube-proxy", "--kubeconfig"]).unwrap_err();
    assert!(err.to_string().contains("flag needs an argument"), "{err}");
}

#[test]
fn other_proxy_modes_still_refuse_through_the_whole_command_line() {
    for mode in ["iptables", "nftables", "kernelspace"] {
        let err = cmdline(&["--proxy-mode", mode]).unwrap_err();
        assert!(
            err.contains("only implements the 'ipvs' proxy mode"),
            "{err}"
        );
    }
    assert!(cmdline(&["--proxy-mode="]).is_ok());
}

#[test]
fn deprecated_port_flags_do_what_kube_proxy_does() {
    let (r, w) = cmdline(&["--healthz-port=0", "--metrics-port=0"]).unwrap();
    assert_eq!(r.config.healthz_bind_address, None);
    assert_eq!(r.config.metrics_bind_address, None);
    assert!(w.is_empty() && r.warnings.is_empty());
    // A bare IP takes the port; an address with a port keeps it.
    let (r, _) = cmdline(&["--healthz-bind-address=10.1.1.1", "--healthz-port=12000"]).unwrap();
    assert_eq!(
        r.config.healthz_bind_address,
        Some("10.1.1.1:12000".parse().unwrap())
    );
    let (r, _) = cmdline(&["--metrics-port=12001"]).unwrap();
    assert_eq!(
        r.config.metrics_bind_address,
        Some("127.0.0.1:10249".parse().unwrap())
    );
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("--metrics-port has no effect")),
        "{:?}",
        r.warnings
    );
}

#[test]
fn our_own_flags_and_subcommands_pass_through() {
    let kp = kube_proxy_args([
        "ipvs-proxy",
        "plan",
        "--manifests",
        "/m",
        "--node-name",
        "n1",
        "--dry-run",
        "--v",
        "2",
    ])
    .unwrap();
    assert_eq!(
        strs(&kp.args),
        [
            "ipvs-proxy",
            "plan",
            "--manifests",
            "/m",
            "--node-name",
            "n1",
            "--dry-run",
            "--v=2"
        ]
    );
    assert!(kp.warnings.is_empty());
}

const KUBEADM_CONFIGMAP: &str =
    include_str!("../../../../tests/fixtures/kubeadm-kube-proxy-configmap.yaml");

/// The command line of kubeadm's kube-proxy DaemonSet
/// (cmd/kubeadm/app/phases/addons/proxy/manifests.go), `$(NODE_NAME)` expanded
/// by the kubelet, on kubeadm's config.conf.
#[test]
fn kubeadms_command_line_and_config_conf_resolve_without_a_warning() {
    let cm: serde_json::Value = serde_saphyr::from_str(KUBEADM_CONFIGMAP).unwrap();
    let conf = cm["data"]["config.conf"].as_str().unwrap();
    let path = temp_file("kubeadm-config.conf", conf);
    let config = format!("--config={}", path.display());
    let (r, flag_warnings) = cmdline(&[&config, "--hostname-override=Node-A"]).unwrap();
    assert!(flag_warnings.is_empty(), "{flag_warnings:?}");
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    let c = r.config;
    assert_eq!(c.hostname_override.as_deref(), Some("node-a"));
    assert_eq!(
        c.client.kubeconfig.as_deref(),
        Some(std::path::Path::new("/var/lib/kube-proxy/kubeconfig.conf"))
    );
    assert_eq!(c.cluster_cidrs, vec!["10.244.0.0/16".parse().unwrap()]);
    // kubeadm's empty and null fields take kube-proxy's defaults.
    assert_eq!(
        c.healthz_bind_address,
        Some("0.0.0.0:10256".parse().unwrap())
    );
    assert_eq!(
        c.metrics_bind_address,
        Some("127.0.0.1:10249".parse().unwrap())
    );
    assert_eq!((c.client.qps, c.client.burst), (5.0, 10));
    assert_eq!(c.ipvs.sync_period, std::time::Duration::from_secs(30));
    assert_eq!(c.ipvs.scheduler, "rr");
    assert_eq!(c.oom_score_adj, -999);
    assert_eq!(c.detect_local, crate::config::DetectLocal::ClusterCidr);
    // The same file with kube-proxy's iptables default mode ("") also starts.
    let iptables = conf.replace("mode: ipvs", "mode: \"\"");
    let path = temp_file("kubeadm-config-iptables.conf", &iptables);
    assert!(cmdline(&[&format!("--config={}", path.display())]).is_ok());
}
