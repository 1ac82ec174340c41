//! Every manifest in `deploy/` parses into its Kubernetes type (k8s-openapi;
//! the ServiceMonitor as JSON with checks), carries no field the type does not
//! know, and the RBAC rules are exactly what the agent needs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// (file, document) for every YAML document in deploy/.
fn documents() -> Vec<(String, Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(deploy_dir())
        .expect("deploy/ exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("readable");
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text).expect("valid YAML");
        for v in docs {
            if !v.is_null() {
                out.push((f.file_name().unwrap().to_string_lossy().into_owned(), v));
            }
        }
    }
    out
}

/// Drops nulls, empty objects and empty arrays, so that a re-serialized
/// object compares equal to its source when no field was lost.
fn normalize(v: &Value) -> Option<Value> {
    match v {
        Value::Null => None,
        Value::Object(m) => {
            let m: serde_json::Map<String, Value> = m
                .iter()
                .filter_map(|(k, v)| normalize(v).map(|v| (k.clone(), v)))
                .collect();
            (!m.is_empty()).then_some(Value::Object(m))
        }
        Value::Array(a) => {
            let a: Vec<Value> = a.iter().filter_map(normalize).collect();
            (!a.is_empty()).then_some(Value::Array(a))
        }
        other => Some(other.clone()),
    }
}

/// Parses into `T` and checks that nothing was dropped (a misspelt or
/// misplaced field would be).
fn parse<T: DeserializeOwned + Serialize>(file: &str, v: &Value) -> T {
    let obj: T = serde_json::from_value(v.clone())
        .unwrap_or_else(|e| panic!("{file}: does not parse as its type: {e}"));
    let back = serde_json::to_value(&obj).expect("serializes");
    assert_eq!(
        normalize(&back),
        normalize(v),
        "{file}: fields lost in parsing (unknown or misplaced fields)"
    );
    obj
}

#[test]
fn every_manifest_parses_into_its_type() {
    let docs = documents();
    let mut kinds = BTreeSet::new();
    for (file, v) in &docs {
        let kind = v["kind"].as_str().expect("kind").to_string();
        let api = v["apiVersion"].as_str().expect("apiVersion").to_string();
        match (api.as_str(), kind.as_str()) {
            ("v1", "ServiceAccount") => {
                parse::<ServiceAccount>(file, v);
            }
            ("v1", "ConfigMap") => {
                parse::<ConfigMap>(file, v);
            }
            ("v1", "Service") => {
                parse::<Service>(file, v);
            }
            ("apps/v1", "DaemonSet") => {
                parse::<DaemonSet>(file, v);
            }
            ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
                parse::<ClusterRole>(file, v);
            }
            ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
                parse::<ClusterRoleBinding>(file, v);
            }
            ("monitoring.coreos.com/v1", "ServiceMonitor") => {}
            other => panic!("{file}: unexpected kind {other:?}"),
        }
        kinds.insert(kind);
    }
    for k in [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "DaemonSet",
        "Service",
        "ServiceMonitor",
    ] {
        assert!(kinds.contains(k), "deploy/ lacks a {k}");
    }
}

fn one<T: DeserializeOwned + Serialize>(kind: &str) -> T {
    let docs = documents();
    let mut found: Vec<&(String, Value)> = docs.iter().filter(|(_, v)| v["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "exactly one {kind}");
    let (file, v) = found.remove(0);
    parse(file, v)
}

#[test]
fn rbac_rules_are_exactly_what_the_agent_needs() {
    let role: ClusterRole = one("ClusterRole");
    let mut granted = BTreeSet::new();
    for rule in role.rules.unwrap_or_default() {
        assert!(rule.resource_names.is_none(), "no resourceNames expected");
        assert!(
            rule.non_resource_urls.is_none(),
            "no nonResourceURLs expected"
        );
        for g in rule.api_groups.clone().unwrap_or_default() {
            for r in rule.resources.clone().unwrap_or_default() {
                for verb in &rule.verbs {
                    granted.insert((g.clone(), r.clone(), verb.clone()));
                }
            }
        }
    }
    let mut expected = BTreeSet::new();
    for (g, r) in [
        ("", "services"),
        ("", "nodes"),
        ("discovery.k8s.io", "endpointslices"),
    ] {
        for verb in ["get", "list", "watch"] {
            expected.insert((g.to_string(), r.to_string(), verb.to_string()));
        }
    }
    for g in ["", "events.k8s.io"] {
        for verb in ["create", "patch"] {
            expected.insert((g.to_string(), "events".to_string(), verb.to_string()));
        }
    }
    assert_eq!(granted, expected);

    let binding: ClusterRoleBinding = one("ClusterRoleBinding");
    let sa: ServiceAccount = one("ServiceAccount");
    assert_eq!(binding.role_ref.kind, "ClusterRole");
    assert_eq!(Some(binding.role_ref.name.clone()), role.metadata.name);
    let subjects = binding.subjects.unwrap_or_default();
    assert_eq!(subjects.len(), 1);
    assert_eq!(subjects[0].kind, "ServiceAccount");
    assert_eq!(Some(subjects[0].name.clone()), sa.metadata.name);
    assert_eq!(subjects[0].namespace, sa.metadata.namespace);
}

#[test]
fn daemonset_runs_on_the_host_network_with_probes_and_capabilities() {
    let ds: DaemonSet = one("DaemonSet");
    let sa: ServiceAccount = one("ServiceAccount");
    let cm: ConfigMap = one("ConfigMap");
    let spec = ds.spec.expect("spec").template.spec.expect("pod spec");
    assert_eq!(spec.host_network, Some(true));
    assert_eq!(
        spec.priority_class_name.as_deref(),
        Some("system-node-critical")
    );
    assert_eq!(spec.service_account_name, sa.metadata.name);
    let tolerations = spec.tolerations.unwrap_or_default();
    assert!(
        tolerations
            .iter()
            .any(|t| t.operator.as_deref() == Some("Exists") && t.key.is_none()),
        "must tolerate every taint"
    );
    let c = &spec.containers[0];
    let caps = c
        .security_context
        .as_ref()
        .and_then(|s| s.capabilities.as_ref())
        .and_then(|c| c.add.clone())
        .unwrap_or_default();
    assert!(caps.contains(&"NET_ADMIN".to_string()));
    assert!(caps.contains(&"SYS_MODULE".to_string()));
    let probe_path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        p.as_ref()
            .and_then(|p| p.http_get.as_ref())
            .and_then(|h| h.path.clone())
    };
    assert_eq!(probe_path(&c.liveness_probe).as_deref(), Some("/livez"));
    assert_eq!(probe_path(&c.readiness_probe).as_deref(), Some("/healthz"));
    let mounts = c.volume_mounts.clone().unwrap_or_default();
    let modules = mounts
        .iter()
        .find(|m| m.mount_path == "/lib/modules")
        .expect("/lib/modules mounted");
    assert_eq!(modules.read_only, Some(true));
    let volumes = spec.volumes.unwrap_or_default();
    let lib = volumes
        .iter()
        .find(|v| v.name == modules.name)
        .expect("volume for /lib/modules");
    assert_eq!(
        lib.host_path.as_ref().map(|h| h.path.as_str()),
        Some("/lib/modules")
    );
    // NODE_NAME from the downward API.
    let env = c.env.clone().unwrap_or_default();
    let node = env
        .iter()
        .find(|e| e.name == "NODE_NAME")
        .expect("NODE_NAME");
    assert_eq!(
        node.value_from
            .as_ref()
            .and_then(|v| v.field_ref.as_ref())
            .map(|f| f.field_path.as_str()),
        Some("spec.nodeName")
    );
    // The config flag points into the mounted ConfigMap, and the ConfigMap
    // holds a configuration the agent accepts without warnings.
    let args = c.command.clone().unwrap_or_default();
    let config_arg = args
        .iter()
        .find_map(|a| a.strip_prefix("--config="))
        .expect("--config");
    let config_mount = mounts
        .iter()
        .find(|m| config_arg.starts_with(&format!("{}/", m.mount_path)))
        .expect("config file inside a mount");
    let cfg_volume = volumes
        .iter()
        .find(|v| v.name == config_mount.name)
        .expect("config volume");
    assert_eq!(
        cfg_volume.config_map.as_ref().map(|c| c.name.clone()),
        cm.metadata.name
    );
    let key = config_arg.rsplit('/').next().expect("file name");
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .expect("config key in the ConfigMap");
    let mut warnings = Vec::new();
    let cfg = ipvs_proxy::config::parse_config_file(text, &mut warnings).expect("valid config");
    ipvs_proxy::config::validate(&cfg).expect("valid config");
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(
        cfg.healthz_bind_address.map(|a| a.port()),
        Some(10256),
        "probes target the healthz port"
    );
}

#[test]
fn service_monitor_scrapes_the_metrics_service() {
    let docs = documents();
    let (_, sm) = docs
        .iter()
        .find(|(_, v)| v["kind"] == "ServiceMonitor")
        .expect("ServiceMonitor");
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    assert!(sm["metadata"]["name"].is_string());
    let svc: Service = one("Service");
    let labels = svc.metadata.labels.clone().unwrap_or_default();
    let wanted = sm["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("matchLabels");
    for (k, v) in wanted {
        assert_eq!(labels.get(k).map(String::as_str), v.as_str(), "label {k}");
    }
    let endpoints = sm["spec"]["endpoints"].as_array().expect("endpoints");
    assert!(!endpoints.is_empty());
    let port_names: Vec<String> = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| p.name)
        .collect();
    for ep in endpoints {
        let port = ep["port"].as_str().expect("named port");
        assert!(
            port_names.iter().any(|p| p == port),
            "port {port} not on the Service"
        );
        assert_eq!(ep["path"], "/metrics");
    }
    let svc_port = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default()[0]
        .port;
    assert_eq!(svc_port, 10249, "kube-proxy's metrics port");
    if let Some(ns) = sm["spec"]["namespaceSelector"]["matchNames"].as_array() {
        assert!(ns
            .iter()
            .any(|n| Some(n.as_str().unwrap_or("")) == svc.metadata.namespace.as_deref()));
    }
}

// ---- the kube-proxy drop-in (deploy/kubeadm/, docs/migration.md) ----

fn fixture(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn yaml(text: &str) -> Value {
    serde_saphyr::from_str(text).expect("valid YAML")
}

#[test]
fn kubeadm_variant_is_kubeadms_daemonset_with_only_the_image_changed() {
    let ours_text = std::fs::read_to_string(deploy_dir().join("kubeadm/kube-proxy-daemonset.yaml"))
        .expect("deploy/kubeadm/kube-proxy-daemonset.yaml");
    let ours = yaml(&ours_text);
    let _: DaemonSet = parse("kubeadm/kube-proxy-daemonset.yaml", &ours);
    let mut kubeadm = yaml(&fixture("kubeadm-kube-proxy-daemonset.yaml"));
    let _: DaemonSet = parse("kubeadm-kube-proxy-daemonset.yaml", &kubeadm);
    let image = ours["spec"]["template"]["spec"]["containers"][0]["image"].clone();
    assert_ne!(
        image, kubeadm["spec"]["template"]["spec"]["containers"][0]["image"],
        "the image is ours"
    );
    kubeadm["spec"]["template"]["spec"]["containers"][0]["image"] = image.clone();
    assert_eq!(ours, kubeadm, "only the image differs from kubeadm's");
    // The same image as our own DaemonSet.
    let own: DaemonSet = one("DaemonSet");
    let own_image = own.spec.unwrap().template.spec.unwrap().containers[0]
        .image
        .clone();
    assert_eq!(Some(image.as_str().unwrap().to_string()), own_image);
}

#[test]
fn the_image_answers_to_kube_proxys_path() {
    let dockerfile = std::fs::read_to_string(deploy_dir().join("Dockerfile")).unwrap();
    let line = dockerfile
        .lines()
        .find(|l| l.contains("/usr/local/bin/kube-proxy") && l.starts_with("RUN ln -s"))
        .expect("a RUN line linking /usr/local/bin/kube-proxy");
    assert_eq!(
        line.trim(),
        "RUN ln -s ipvs-proxy /usr/local/bin/kube-proxy"
    );
    assert!(dockerfile.contains("COPY --from=build /ipvs-proxy /usr/local/bin/ipvs-proxy"));
}

#[derive(clap::Parser)]
struct Cli {
    #[command(flatten)]
    flags: ipvs_proxy::config::Flags,
}

/// kubeadm's container command, as the kubelet runs it (`$(NODE_NAME)`
/// expanded), on kubeadm's ConfigMap mounted at /var/lib/kube-proxy.
#[test]
fn kubeadms_container_command_starts_the_agent_on_kubeadms_configmap() {
    use clap::Parser;
    let ds = yaml(&fixture("kubeadm-kube-proxy-daemonset.yaml"));
    let command: Vec<String> =
        serde_json::from_value(ds["spec"]["template"]["spec"]["containers"][0]["command"].clone())
            .unwrap();
    assert_eq!(
        command,
        [
            "/usr/local/bin/kube-proxy",
            "--config=/var/lib/kube-proxy/config.conf",
            "--hostname-override=$(NODE_NAME)"
        ]
    );
    let cm: ConfigMap =
        serde_saphyr::from_str(&fixture("kubeadm-kube-proxy-configmap.yaml")).unwrap();
    let data = cm.data.unwrap();
    let dir = std::env::temp_dir().join(format!("ipvs-proxy-kubeadm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.conf"), &data["config.conf"]).unwrap();
    let args: Vec<String> = command
        .iter()
        .map(|a| {
            a.replace("$(NODE_NAME)", "worker-1")
                .replace("/var/lib/kube-proxy", dir.to_str().unwrap())
        })
        .collect();
    let kp = ipvs_proxy::config::kube_proxy_args(args).expect("kube-proxy's flags");
    assert!(kp.warnings.is_empty(), "{:?}", kp.warnings);
    let cli = Cli::try_parse_from(kp.args).expect("clap");
    let r = ipvs_proxy::config::resolve(&cli.flags, Some("worker-1")).expect("resolves");
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    assert_eq!(r.config.hostname_override.as_deref(), Some("worker-1"));
    assert_eq!(
        r.config.client.kubeconfig.as_deref(),
        Some(Path::new("/var/lib/kube-proxy/kubeconfig.conf"))
    );
}

/// kubeadm's kubeconfig.conf (in-cluster CA, service-account token file):
/// kube-rs reads it, and sends the token file's content as the bearer token
/// (to a local stand-in for the API server).
#[tokio::test]
async fn kube_rs_reads_kubeadms_kubeconfig_with_the_token_file() {
    use k8s_openapi::api::core::v1::Service;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let cm: ConfigMap =
        serde_saphyr::from_str(&fixture("kubeadm-kube-proxy-configmap.yaml")).unwrap();
    let kubeconfig = cm.data.unwrap()["kubeconfig.conf"].clone();
    // The file as kubeadm writes it parses with the paths it names.
    let kc = kube::config::Kubeconfig::from_yaml(&kubeconfig).expect("kubeconfig parses");
    let user = kc.auth_infos[0].auth_info.clone().expect("user");
    assert_eq!(
        user.token_file.as_deref(),
        Some("/var/run/secrets/kubernetes.io/serviceaccount/token")
    );
    let cluster = kc.clusters[0].cluster.clone().expect("cluster");
    assert_eq!(
        cluster.certificate_authority.as_deref(),
        Some("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt")
    );
    assert_eq!(cluster.server.as_deref(), Some("https://192.168.0.10:6443"));

    // Served over plain HTTP locally, so no CA is loaded; the token file is
    // the one thing under test.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let dir = std::env::temp_dir().join(format!("ipvs-proxy-kubeconfig-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let token = dir.join("token");
    // As the kubelet writes a projected token: no trailing newline (kube-rs
    // refuses one as an invalid header value; client-go trims it).
    std::fs::write(&token, "projected-sa-token-123").unwrap();
    let local = kubeconfig
        .replace(
            "/var/run/secrets/kubernetes.io/serviceaccount/token",
            token.to_str().unwrap(),
        )
        .replace(
            "    certificate-authority: /var/run/secrets/kubernetes.io/serviceaccount/ca.crt\n",
            "",
        )
        .replace("https://192.168.0.10:6443", &format!("http://{addr}"));
    let path = dir.join("kubeconfig.conf");
    std::fs::write(&path, &local).unwrap();

    let server = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = sock.read(&mut chunk).await.unwrap();
            assert!(n > 0, "request ended early");
            buf.extend_from_slice(&chunk[..n]);
        }
        let body = r#"{"kind":"ServiceList","apiVersion":"v1","metadata":{"resourceVersion":"7"},"items":[]}"#;
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        sock.write_all(resp.as_bytes()).await.unwrap();
        String::from_utf8_lossy(&buf).into_owned()
    });

    let kc = kube::config::Kubeconfig::read_from(&path).unwrap();
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .expect("kube-rs takes kubeadm's kubeconfig");
    let client = kube::Client::try_from(config).unwrap();
    let list = kube::Api::<Service>::all(client)
        .list(&Default::default())
        .await
        .expect("list");
    assert!(list.items.is_empty());
    let request = tokio::time::timeout(std::time::Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap();
    let auth = request
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("authorization:"))
        .unwrap_or_else(|| panic!("no Authorization header in {request}"));
    assert_eq!(
        auth.split_once(':').unwrap().1.trim(),
        "Bearer projected-sa-token-123"
    );
}

/// Every call the agent makes to the API server (group, resource, verb):
/// the Service, EndpointSlice and Node watches of agent/src/source/cluster.rs
/// (kube-runtime's watcher: list, then watch), `plan`/`show` in
/// agent/src/app.rs (list Services and EndpointSlices, get the Node), and the
/// rejection Events of agent/src/events.rs (kube-runtime's Recorder:
/// events.k8s.io/v1, create, then patch for a repeat).
const AGENT_API_CALLS: &[(&str, &str, &str)] = &[
    ("", "services", "list"),
    ("", "services", "watch"),
    ("discovery.k8s.io", "endpointslices", "list"),
    ("discovery.k8s.io", "endpointslices", "watch"),
    ("", "nodes", "list"),
    ("", "nodes", "watch"),
    ("", "nodes", "get"),
    ("events.k8s.io", "events", "create"),
    ("events.k8s.io", "events", "patch"),
];

/// `system:node-proxier` as plugin/pkg/auth/authorizer/rbac/bootstrappolicy
/// defines it (kubeadm binds the kube-proxy ServiceAccount to it):
/// list/watch services and endpoints, get/list/watch nodes, the events rule
/// (create/update/patch events in "" and events.k8s.io), list/watch
/// endpointslices.
fn node_proxier_rules() -> Vec<(Vec<&'static str>, Vec<&'static str>, Vec<&'static str>)> {
    vec![
        (
            vec![""],
            vec!["services", "endpoints"],
            vec!["list", "watch"],
        ),
        (vec![""], vec!["nodes"], vec!["get", "list", "watch"]),
        (
            vec!["", "events.k8s.io"],
            vec!["events"],
            vec!["create", "update", "patch"],
        ),
        (
            vec!["discovery.k8s.io"],
            vec!["endpointslices"],
            vec!["list", "watch"],
        ),
    ]
}

#[test]
fn every_api_call_of_the_agent_is_allowed_by_system_node_proxier_and_our_role() {
    let rules = node_proxier_rules();
    for (g, r, v) in AGENT_API_CALLS {
        assert!(
            rules
                .iter()
                .any(|(gs, rs, vs)| gs.contains(g) && rs.contains(r) && vs.contains(v)),
            "system:node-proxier does not allow {v} {g}/{r}"
        );
    }
    let role: ClusterRole = one("ClusterRole");
    let rules = role.rules.unwrap_or_default();
    for (g, r, v) in AGENT_API_CALLS {
        assert!(
            rules.iter().any(|rule| {
                rule.api_groups
                    .as_ref()
                    .is_some_and(|gs| gs.iter().any(|x| x == g))
                    && rule
                        .resources
                        .as_ref()
                        .is_some_and(|rs| rs.iter().any(|x| x == r))
                    && rule.verbs.iter().any(|x| x == v)
            }),
            "deploy/rbac.yaml does not allow {v} {g}/{r}"
        );
    }
}
