//! Tests of the control endpoint: the view, its text, the socket and the
//! client, and the agent's side over a model kernel.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::UNIX_EPOCH;

use ipvs::ServiceKey;
use tokio::net::UnixStream;
use tokio_util::sync::CancellationToken;

use super::server::{percent_decode, service_param};
use super::*;
use crate::config::ProxyConfig;
use crate::metrics::Metrics;
use crate::proxier::ModelKernel;
use crate::source::Object;
use ipvs::{RealServer, RealServerKey, VirtualServer};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::collections::{BTreeMap, HashMap};

/// A mapping from a fixed table: owners by key, draining real servers
/// with their age.
#[derive(Default)]
struct Fixed {
    owners: BTreeMap<ServiceKey, String>,
    draining: HashMap<(ServiceKey, RealServerKey), Duration>,
}

impl Mapping for Fixed {
    fn owner(&self, key: &ServiceKey) -> Option<String> {
        self.owners.get(key).cloned()
    }
    fn draining(&self, vs: &ServiceKey, rs: &RealServer) -> (Option<bool>, Option<Duration>) {
        match self.draining.get(&(*vs, rs.key)) {
            Some(d) => (Some(true), Some(*d)),
            None => (Some(false), None),
        }
    }
}

fn web() -> ServiceKey {
    ServiceKey::tcp("10.96.0.10".parse().unwrap(), 80)
}
fn foreign() -> ServiceKey {
    ServiceKey::tcp("192.0.2.50".parse().unwrap(), 80)
}
fn rs(a: &str, w: u32, active: u32, inactive: u32) -> RealServer {
    let mut r = RealServer::new(a.parse().unwrap(), 8080);
    r.weight = w;
    r.conns.active = active;
    r.conns.inactive = inactive;
    r
}
fn dump() -> Dump {
    let mut sticky = VirtualServer::new(ServiceKey::tcp("10.96.0.11".parse().unwrap(), 80));
    sticky.flags |= ipvs::ServiceFlags::PERSISTENT;
    sticky.timeout = 600;
    vec![
        (VirtualServer::new(foreign()), vec![]),
        (
            VirtualServer::new(web()),
            vec![rs("10.244.1.3", 0, 1, 7), rs("10.244.1.2", 1, 0, 2)],
        ),
        (sticky, vec![rs("fd00::5", 1, 0, 0)]),
    ]
}
fn fixed() -> Fixed {
    let mut m = Fixed::default();
    m.owners.insert(web(), "shop/web:http".into());
    m.owners.insert(
        ServiceKey::tcp("10.96.0.11".parse().unwrap(), 80),
        "shop/sticky:".into(),
    );
    m.draining.insert(
        (
            web(),
            RealServerKey {
                addr: "10.244.1.3".parse().unwrap(),
                port: 8080,
            },
        ),
        Duration::from_millis(12_340),
    );
    m
}
fn agent_view() -> View {
    let missing = VirtualServer::new(ServiceKey::udp("10.96.0.53".parse().unwrap(), 53));
    let mut v = View::new(
        "agent",
        virtual_servers(
            &dump(),
            &fixed(),
            [(&missing, "kube-system/dns:dns".to_string())],
        ),
    );
    v.agent = Some(AgentInfo {
        pid: 42,
        version: "0.1.0".into(),
        node: "node-a".into(),
        source: "manifests /m".into(),
        dry_run: false,
        started_at: "2026-12-07T23:00:00.000Z".into(),
    });
    v.last_sync = Some(LastSync {
        started_at: "2026-12-07T23:00:01.500Z".into(),
        duration_seconds: 0.0123,
        kind: "full".into(),
        result: "ok".into(),
        failed_ops: 0,
        error: None,
        virtual_servers: 3,
        real_servers: 3,
        draining: 1,
    });
    v.last_successful_sync = Some("2026-12-07T23:00:01.512Z".into());
    v.rejected = vec![RejectedView {
        kind: "Service".into(),
        namespace: "shop".into(),
        name: "bad".into(),
        reason: "invalid_cluster_ip".into(),
        detail: "clusterIP \"x\"".into(),
        whole_object: true,
    }];
    v
}

#[test]
fn text_names_services_marks_drains_and_lists_rejections() {
    let text = render_text(&agent_view());
    assert_eq!(
        text,
        "agent: pid 42, node node-a, manifests /m, running since 2026-12-07T23:00:00.000Z\n\
             last sync: 2026-12-07T23:00:01.500Z full, 12 ms, ok\n\
             kube-system/dns:dns  UDP 10.96.0.53:53  rr  (not in the kernel)\n\
             shop/sticky:  TCP 10.96.0.11:80  rr  persistent 600\n  \
             -> [fd00::5]:8080  weight 1  active 0  inactive 0\n\
             shop/web:http  TCP 10.96.0.10:80  rr\n  \
             -> 10.244.1.2:8080  weight 1  active 0  inactive 2\n  \
             -> 10.244.1.3:8080  weight 0  active 1  inactive 7  draining\n\
             -  TCP 192.0.2.50:80  rr\n\
             rejected Service shop/bad: invalid_cluster_ip (clusterIP \"x\")\n"
    );
}

#[test]
fn text_of_a_failed_sync_names_the_last_good_one() {
    let mut v = agent_view();
    let s = v.last_sync.as_mut().unwrap();
    s.result = "refused".into();
    s.failed_ops = 2;
    let text = render_text(&v);
    assert!(
            text.contains("full, 12 ms, 2 operations refused by the kernel\nlast successful sync: 2026-12-07T23:00:01.512Z\n"),
            "{text}"
        );
    v.last_sync = None;
    assert!(render_text(&v).contains("last sync: none yet\n"));
}

#[test]
fn json_has_the_documented_shape_and_reads_back() {
    let v = agent_view();
    let j: serde_json::Value = serde_json::to_value(&v).unwrap();
    assert_eq!(j["version"], 1);
    assert_eq!(j["mapping"], "agent");
    assert_eq!(j["agent"]["pid"], 42);
    assert_eq!(j["last_sync"]["result"], "ok");
    assert_eq!(j["last_sync"]["kind"], "full");
    assert_eq!(j["last_successful_sync"], "2026-12-07T23:00:01.512Z");
    let web = &j["virtual_servers"][2];
    assert_eq!(web["service"], "shop/web:http");
    assert_eq!(web["namespace"], "shop");
    assert_eq!(web["name"], "web");
    assert_eq!(web["port_name"], "http");
    assert_eq!(web["virtual_server"], "TCP 10.96.0.10:80");
    assert_eq!(web["protocol"], "TCP");
    assert_eq!(web["address"], "10.96.0.10");
    assert_eq!(web["port"], 80);
    assert!(web["fwmark"].is_null());
    assert!(web["persistent_timeout"].is_null());
    assert_eq!(web["in_kernel"], true);
    let drain = &web["real_servers"][1];
    assert_eq!(drain["address"], "10.244.1.3");
    assert_eq!(drain["port"], 8080);
    assert_eq!(drain["weight"], 0);
    assert_eq!(drain["active"], 1);
    assert_eq!(drain["inactive"], 7);
    assert_eq!(drain["draining"], true);
    assert_eq!(drain["draining_seconds"], 12.3);
    assert_eq!(web["real_servers"][0]["draining"], false);
    assert!(j["virtual_servers"][3]["service"].is_null());
    assert_eq!(j["rejected"][0]["reason"], "invalid_cluster_ip");
    assert_eq!(j["rejected"][0]["whole_object"], true);
    let back: View = serde_json::from_value(j).unwrap();
    assert_eq!(back, v);
}

#[test]
fn unmapped_knows_no_owner_and_no_drain() {
    let v = View::new("kernel", virtual_servers(&dump(), &Unmapped, []));
    assert_eq!(v.virtual_servers.len(), 3);
    assert!(v.virtual_servers.iter().all(|s| s.service.is_none()));
    assert!(v
        .virtual_servers
        .iter()
        .flat_map(|s| &s.real_servers)
        .all(|r| r.draining.is_none()));
    let text = render_text(&v);
    assert!(text.starts_with("-  TCP 10.96.0.10:80  rr\n"), "{text}");
    assert!(!text.contains("draining"), "{text}");
}

#[test]
fn select_keeps_one_service_or_one_port() {
    let mut v = agent_view();
    v.select("shop/web");
    assert_eq!(v.virtual_servers.len(), 1);
    assert_eq!(
        v.virtual_servers[0].service.as_deref(),
        Some("shop/web:http")
    );
    assert!(v.rejected.is_empty());
    let mut v = agent_view();
    v.select("shop/bad");
    assert!(v.virtual_servers.is_empty());
    assert_eq!(v.rejected.len(), 1);
    let mut v = agent_view();
    v.select("shop/web:http");
    assert_eq!(v.virtual_servers.len(), 1);
    let mut v = agent_view();
    v.select("shop/we");
    assert!(v.virtual_servers.is_empty());
}

#[test]
fn rfc3339_formats_utc() {
    assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    let t = UNIX_EPOCH + Duration::from_millis(1_796_684_405_123);
    assert_eq!(rfc3339(t), "2026-12-07T23:00:05.123Z");
    let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
    assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
}

#[test]
fn query_values_are_decoded() {
    assert_eq!(
        service_param(Some("service=shop%2Fweb%3Ahttp")).as_deref(),
        Some("shop/web:http")
    );
    assert_eq!(
        service_param(Some("x=1&service=a/b")).as_deref(),
        Some("a/b")
    );
    assert_eq!(service_param(Some("service=")), None);
    assert_eq!(service_param(None), None);
    assert_eq!(percent_decode("100%"), "100%");
    assert_eq!(percent_decode("%zz"), "%zz");
}

// --- the socket and the protocol -----------------------------------------------

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ipvs-proxy-control-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

struct FakeSource(View);

impl ViewSource for FakeSource {
    fn view<'a>(&'a self, only: Option<&'a str>) -> BoxFuture<'a, Result<View, String>> {
        Box::pin(async move {
            let mut v = self.0.clone();
            if let Some(o) = only {
                v.select(o);
            }
            Ok(v)
        })
    }
}

#[test]
fn bind_makes_a_private_directory_and_socket_and_removes_it_on_drop() {
    let dir = temp("bind");
    let path = dir.join("sub").join("ipvs-proxy.sock");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let b = bind(&path).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&dir.join("sub")), 0o700);
        assert_eq!(mode(&path), 0o600);
        // Someone answers: a second agent must not take it over.
        match bind(&path) {
            Err(BindError::InUse(p)) => assert_eq!(p, path),
            other => panic!("{other:?}"),
        }
        drop(b);
        assert!(!path.exists(), "removed on a clean exit");
    });
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_stale_socket_is_replaced_and_anything_else_is_left_alone() {
    let dir = temp("stale");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("s.sock");
    // A dead agent's socket: the file stays, nobody listens.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        match fetch(&path, None).await {
            Err(ClientError::NoAgent { .. }) => {}
            other => panic!("{other:?}"),
        }
        let b = bind(&path).expect("stale socket replaced");
        drop(b);
        // A regular file in the way is never removed.
        std::fs::write(&path, "not ours").unwrap();
        match bind(&path) {
            Err(BindError::NotASocket(_)) => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not ours");
        // The dropped guard of an older socket leaves a newer one alone.
        std::fs::remove_file(&path).unwrap();
        let old = bind(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let new = bind(&path).unwrap();
        drop(old);
        assert!(path.exists(), "the newer socket stays");
        drop(new);
        assert!(!path.exists());
    });
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn show_asks_the_agent_over_the_socket() {
    let dir = temp("proto");
    let path = dir.join("ipvs-proxy.sock");
    match fetch(&path, None).await {
        Err(ClientError::NoAgent { .. }) => {}
        other => panic!("no socket yet: {other:?}"),
    }
    let b = bind(&path).unwrap();
    let server = tokio::spawn(serve(
        b,
        Arc::new(FakeSource(agent_view())),
        CancellationToken::new(),
    ));
    assert_eq!(fetch(&path, None).await.unwrap(), agent_view());
    let one = fetch(&path, Some("shop/web")).await.unwrap();
    assert_eq!(one.virtual_servers.len(), 1);
    assert_eq!(
        one.virtual_servers[0].service.as_deref(),
        Some("shop/web:http")
    );
    assert!(one.agent.is_some());
    // Plain HTTP for curl users; other paths are 404s.
    let mut s = UnixStream::connect(&path).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 404"), "{out}");
    server.abort();
    let _ = server.await;
    assert!(!path.exists(), "the ended server removed its socket");
    match fetch(&path, None).await {
        Err(ClientError::NoAgent { .. }) => {}
        other => panic!("server gone: {other:?}"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_error_reading_the_kernel_reaches_the_client() {
    let dir = temp("err");
    let path = dir.join("ipvs-proxy.sock");
    let c = Control::new("node-a", "cluster".into(), false).with_reader(Arc::new(|| {
        Box::pin(async { Err("cannot open IPVS: nope".into()) })
    }));
    let server = tokio::spawn(serve(
        bind(&path).unwrap(),
        Arc::new(c),
        CancellationToken::new(),
    ));
    match fetch(&path, None).await {
        Err(ClientError::Failed { detail, .. }) => {
            assert!(
                detail.contains("500") && detail.contains("cannot open IPVS: nope"),
                "{detail}"
            )
        }
        other => panic!("{other:?}"),
    }
    server.abort();
    let _ = server.await;
    let _ = std::fs::remove_dir_all(&dir);
}

// --- the agent's state ------------------------------------------------------------

const WEB: &str = "metadata: {namespace: default, name: web}\nspec:\n  clusterIP: 10.96.0.10\n  clusterIPs: [10.96.0.10]\n  ipFamilies: [IPv4]\n  type: ClusterIP\n  ports:\n  - {name: http, port: 80, protocol: TCP, targetPort: 8080}\n";
const BAD: &str = "metadata: {namespace: default, name: bad}\nspec:\n  clusterIP: 10.96.0.99\n  clusterIPs: [10.96.0.99]\n  ipFamilies: [IPv4]\n  type: ClusterIP\n  ports:\n  - {name: http, port: 0, protocol: TCP, targetPort: 8080}\n";

fn service(yaml: &str) -> Change {
    let s: Service = serde_saphyr::from_str(yaml).unwrap();
    Change::Applied(Object::Service(Box::new(s)))
}

fn slice(addrs: &[&str]) -> Change {
    let eps: String = addrs
        .iter()
        .map(|a| format!("- addresses: [\"{a}\"]\n  conditions: {{ready: true}}\n"))
        .collect();
    let yaml = format!(
            "metadata:\n  namespace: default\n  name: web-1\n  labels:\n    kubernetes.io/service-name: web\naddressType: IPv4\nports:\n- {{port: 8080, protocol: TCP, name: http}}\nendpoints:\n{eps}"
        );
    let s: EndpointSlice = serde_saphyr::from_str(&yaml).unwrap();
    Change::Applied(Object::EndpointSlice(Box::new(s)))
}

fn proxier(kernel: ModelKernel) -> CoreProxier<ModelKernel> {
    let cfg = ProxyConfig {
        drain_period: Duration::from_secs(600),
        ..ProxyConfig::default()
    };
    CoreProxier::new(
        cfg,
        "node-a".into(),
        ["192.168.0.10".parse().unwrap()].into_iter().collect(),
        kernel,
        Metrics::new(),
        None,
    )
    .unwrap()
}

#[tokio::test]
async fn the_agent_view_maps_from_its_own_state() {
    use crate::source::Kind;
    // A kernel where 10.244.1.3 has an open connection.
    let mut first = proxier(ModelKernel::default());
    first.apply_change(service(WEB));
    first.apply_change(slice(&["10.244.1.2", "10.244.1.3"]));
    first.sync(SyncKind::Full).await.unwrap();
    let mut kernel = first.kernel().clone();
    for vs in kernel.node.virtual_servers.values_mut() {
        for r in vs.real_servers.values_mut() {
            if r.key.addr == "10.244.1.3".parse::<std::net::IpAddr>().unwrap() {
                r.conns.active = 1;
            }
        }
    }

    // Refused once, by the last sync below.
    kernel.refuse.push(("add_virtual_server", 17)); // EEXIST
                                                    // What the (fake) kernel answers at request time.
    let dump: Dump = vec![
        (
            VirtualServer::new(web()),
            vec![
                rs("10.244.1.2", 1, 0, 0),
                rs("10.244.1.3", 0, 1, 0),
                rs("10.244.1.4", 1, 0, 0),
            ],
        ),
        (VirtualServer::new(foreign()), vec![]),
    ];
    let d = dump.clone();
    let control =
        Control::new("node-a", "manifests /m".into(), false).with_reader(Arc::new(move || {
            let d = d.clone();
            Box::pin(async move { Ok(d) })
        }));
    // Before the proxier exists: the kernel, unmapped.
    let v = control.view(None).await.unwrap();
    assert!(v.last_sync.is_none() && v.virtual_servers.iter().all(|s| s.service.is_none()));

    let mut p = control.publish(proxier(kernel));
    p.apply_change(service(WEB));
    p.apply_change(service(BAD));
    // A request holding the state: changes wait, in order.
    {
        let shared = p.shared.clone();
        let _held = shared.0.lock().await;
        p.apply_change(slice(&["10.244.1.2", "10.244.1.4"]));
        p.apply_change(Change::Listed(Kind::Service));
        assert_eq!(p.queued.len(), 2);
    }
    let out = p.sync(SyncKind::Full).await.unwrap();
    assert!(p.queued.is_empty());
    assert_eq!(out.draining, 1, "10.244.1.3 drains: {out:?}");

    let v = control.view(None).await.unwrap();
    assert_eq!(v.mapping, "agent");
    assert_eq!(v.agent.as_ref().unwrap().node, "node-a");
    let s = v.last_sync.as_ref().unwrap();
    assert_eq!((s.kind.as_str(), s.result.as_str()), ("full", "ok"));
    assert_eq!((s.virtual_servers, s.draining), (1, 1));
    assert!(v.last_successful_sync.is_some());
    let web_vs = &v.virtual_servers[0];
    assert_eq!(web_vs.service.as_deref(), Some("default/web:http"));
    let drains: Vec<(&str, Option<bool>)> = web_vs
        .real_servers
        .iter()
        .map(|r| (r.address.as_str(), r.draining))
        .collect();
    assert_eq!(
        drains,
        vec![
            ("10.244.1.2", Some(false)),
            ("10.244.1.3", Some(true)),
            ("10.244.1.4", Some(false))
        ]
    );
    assert!(web_vs.real_servers[1].draining_seconds.is_some());
    assert!(v.virtual_servers[1].service.is_none(), "foreign: not ours");
    assert_eq!(v.rejected.len(), 1, "{:?}", v.rejected);
    assert_eq!(
        (v.rejected[0].kind.as_str(), v.rejected[0].name.as_str()),
        ("Service", "bad")
    );

    let one = control.view(Some("default/bad")).await.unwrap();
    assert!(one.virtual_servers.is_empty());
    assert_eq!(one.rejected.len(), 1);

    // A sync the kernel refuses part of is recorded as such.
    p.apply_change(service(&WEB.replace("10.96.0.10", "10.96.0.20")));
    p.sync(SyncKind::Partial).await.unwrap();
    let v = control.view(None).await.unwrap();
    let s = v.last_sync.unwrap();
    assert_eq!((s.kind.as_str(), s.result.as_str()), ("partial", "refused"));
    assert!(s.failed_ops >= 1);
    assert!(v.last_successful_sync.is_some());
}
