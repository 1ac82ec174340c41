//! The core proxier's syncs, change log, rejections and conversions.

use super::change_log::{fmt_rs, vs_changes, VsWhat};
use super::*;
use crate::source::ObjectKey;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

fn service(yaml: &str) -> Change {
    let s: Service = serde_saphyr::from_str(yaml).expect("service yaml");
    Change::Applied(Object::Service(Box::new(s)))
}

fn slice(name: &str, svc: &str, addrs: &[&str]) -> Change {
    let eps: Vec<String> = addrs
        .iter()
        .map(|a| {
            format!("- addresses: [\"{a}\"]\n  conditions: {{ready: true}}\n  nodeName: other")
        })
        .collect();
    let yaml = format!(
        "metadata:\n  namespace: default\n  name: {name}\n  labels:\n    kubernetes.io/service-name: {svc}\naddressType: IPv4\nports:\n- port: 8080\n  protocol: TCP\n  name: http\nendpoints:\n{}\n",
        eps.join("\n")
    );
    let s: EndpointSlice = serde_saphyr::from_str(&yaml).expect("slice yaml");
    Change::Applied(Object::EndpointSlice(Box::new(s)))
}

const WEB: &str = "metadata: {namespace: default, name: web}\nspec:\n  clusterIP: 10.96.0.10\n  clusterIPs: [10.96.0.10]\n  ipFamilies: [IPv4]\n  type: ClusterIP\n  ports:\n  - {name: http, port: 80, protocol: TCP, targetPort: 8080}\n";

fn proxier() -> CoreProxier<ModelKernel> {
    let cfg = ProxyConfig {
        drain_period: Duration::from_secs(60),
        ..ProxyConfig::default()
    };
    CoreProxier::new(
        cfg,
        "node-a".into(),
        ["192.168.0.10".parse().unwrap()].into_iter().collect(),
        ModelKernel::default(),
        Metrics::new(),
        None,
    )
    .expect("proxier")
}

fn real_servers(p: &CoreProxier<ModelKernel>) -> Vec<(String, u32)> {
    let mut v: Vec<(String, u32)> = p
        .kernel()
        .node
        .virtual_servers
        .values()
        .flat_map(|vs| vs.real_servers.values().map(|r| (fmt_rs(&r.key), r.weight)))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn programs_converges_and_drains() {
    let mut p = proxier();
    p.apply_change(service(WEB));
    p.apply_change(slice("web-1", "web", &["10.244.1.2", "10.244.1.3"]));
    let out = p.sync(SyncKind::Full).await.expect("sync");
    assert_eq!(out.failed_ops, 0);
    assert_eq!(out.virtual_servers, 1);
    assert_eq!(out.real_servers, 2);
    let node = &p.kernel().node;
    assert!(node.addresses.contains(&"10.96.0.10".parse().unwrap()));
    assert_eq!(
        real_servers(&p),
        vec![("10.244.1.2:8080".into(), 1), ("10.244.1.3:8080".into(), 1)]
    );
    assert_eq!(p.kernel().dumps, 1);

    // Converged: a partial sync changes nothing and reads nothing.
    let before = p.kernel().node.clone();
    p.sync(SyncKind::Partial).await.unwrap();
    assert_eq!(p.kernel().node, before);
    assert_eq!(p.kernel().dumps, 1, "partial syncs use the shadow");

    // One endpoint with an open connection is replaced: it drains (TCP),
    // the new one is added.
    let key = *p.kernel().node.virtual_servers.keys().next().unwrap();
    let set_conns = |p: &mut CoreProxier<ModelKernel>, active: u32| {
        let vs = p.kernel.node.virtual_servers.get_mut(&key).unwrap();
        for rs in vs.real_servers.values_mut() {
            if rs.key.addr == "10.244.1.3".parse::<IpAddr>().unwrap() {
                rs.conns.active = active;
            }
        }
    };
    set_conns(&mut p, 1);
    p.apply_change(slice("web-1", "web", &["10.244.1.2", "10.244.1.4"]));
    let out = p.sync(SyncKind::Partial).await.unwrap();
    assert_eq!(out.draining, 1);
    assert_eq!(
        real_servers(&p),
        vec![
            ("10.244.1.2:8080".into(), 1),
            ("10.244.1.3:8080".into(), 0),
            ("10.244.1.4:8080".into(), 1)
        ]
    );
    // Still connected: the drain check keeps it.
    let out = p.sync(SyncKind::Partial).await.unwrap();
    assert_eq!(out.draining, 1);
    // Its connection ends: the next drain check (refreshing counters,
    // no full dump) deletes it.
    set_conns(&mut p, 0);
    let out = p.sync(SyncKind::Partial).await.unwrap();
    assert_eq!(out.draining, 0);
    assert_eq!(
        real_servers(&p),
        vec![("10.244.1.2:8080".into(), 1), ("10.244.1.4:8080".into(), 1)]
    );
    assert!(p.kernel().node.virtual_servers.contains_key(&key));
    assert_eq!(p.kernel().dumps, 1);

    // The Service goes: drained and removed, address unbound.
    p.apply_change(Change::Deleted(
        Kind::Service,
        ObjectKey {
            namespace: "default".into(),
            name: "web".into(),
        },
    ));
    p.sync(SyncKind::Partial).await.unwrap();
    p.sync(SyncKind::Partial).await.unwrap();
    assert!(p.kernel().node.virtual_servers.is_empty());
    assert!(!p
        .kernel()
        .node
        .addresses
        .contains(&"10.96.0.10".parse().unwrap()));
}

/// A log writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every test's info lines, through one global subscriber (a scoped
/// one races with other test threads registering the same callsites).
fn captured() -> &'static Captured {
    static CAPTURED: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    CAPTURED.get_or_init(|| {
        let out = Captured::default();
        let w = out.clone();
        let sub = tracing_subscriber::fmt()
            .with_writer(move || w.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        tracing::subscriber::set_global_default(sub).expect("the only global subscriber");
        out
    })
}

impl Captured {
    /// The lines logged since the last call that mention `needle`,
    /// without timestamp and target.
    fn take(&self, needle: &str) -> Vec<String> {
        let mut buf = self.0.lock().unwrap();
        let text = String::from_utf8_lossy(&buf).into_owned();
        // Keep a partial last line (another thread mid-write).
        let cut = text.rfind('\n').map_or(0, |i| i + 1);
        buf.drain(..cut);
        text[..cut]
            .lines()
            .filter(|l| l.contains(needle))
            .map(|l| l.split_once(": ").map_or(l, |(_, m)| m).to_string())
            .collect()
    }
}

#[tokio::test]
async fn one_line_per_virtual_server_names_its_real_servers() {
    let out = captured();
    // Its own Service and address: other tests log at the same time.
    let vip = "10.96.7.7";
    let mut p = proxier();
    p.apply_change(service(
        &WEB.replace("name: web", "name: logged")
            .replace("10.96.0.10", vip),
    ));
    p.apply_change(slice("logged-1", "logged", &["10.244.1.2", "10.244.1.3"]));
    p.sync(SyncKind::Full).await.unwrap();
    assert_eq!(
        out.take(vip),
        vec![
            "address bound address=10.96.7.7".to_string(),
            "virtual server added service=default/logged:http virtual_server=TCP 10.96.7.7:80 \
             scheduler=rr added=10.244.1.2:8080,10.244.1.3:8080"
                .into(),
        ]
    );

    // One endpoint with a connection replaced, another added: one line.
    let key = *p.kernel().node.virtual_servers.keys().next().unwrap();
    let vs = p.kernel.node.virtual_servers.get_mut(&key).unwrap();
    for rs in vs.real_servers.values_mut() {
        rs.conns.active = 1;
    }
    p.apply_change(slice(
        "logged-1",
        "logged",
        &["10.244.1.2", "10.244.1.4", "10.244.1.5"],
    ));
    p.sync(SyncKind::Partial).await.unwrap();
    assert_eq!(
        out.take(vip),
        vec![
            "real servers changed service=default/logged:http virtual_server=TCP 10.96.7.7:80 \
             added=10.244.1.4:8080,10.244.1.5:8080 draining=10.244.1.3:8080"
                .to_string()
        ]
    );

    // The Service goes: its real servers drain, then it is removed and
    // its address unbound.
    for rs in p
        .kernel
        .node
        .virtual_servers
        .get_mut(&key)
        .unwrap()
        .real_servers
        .values_mut()
    {
        rs.conns.active = 0;
    }
    p.apply_change(Change::Deleted(
        Kind::Service,
        ObjectKey {
            namespace: "default".into(),
            name: "logged".into(),
        },
    ));
    p.sync(SyncKind::Partial).await.unwrap();
    p.sync(SyncKind::Partial).await.unwrap();
    let lines = out.take(vip);
    assert!(
        lines.iter().any(|l| {
            l.starts_with(
            "virtual server removed service=default/logged:http virtual_server=TCP 10.96.7.7:80"
        )
        }),
        "{lines:#?}"
    );
    assert!(
        lines.contains(&"address unbound address=10.96.7.7".to_string()),
        "{lines:#?}"
    );
    assert!(
        !lines.iter().any(|l| l.starts_with("real server ")),
        "per-real-server lines are debug only: {lines:#?}"
    );
}

#[test]
fn real_server_lists_show_weights_other_than_one() {
    let key = ServiceKey::tcp("10.96.0.10".parse().unwrap(), 80);
    let rs = |a: &str, w: u32| {
        let mut r = ipvs::RealServer::new(a.parse().unwrap(), 8080);
        r.weight = w;
        r
    };
    let plan = Plan {
        ipvs: vec![
            Op::AddRealServer(key, rs("10.244.1.2", 1)),
            Op::AddRealServer(key, rs("fd00::2", 3)),
            Op::EditRealServer(key, rs("10.244.1.3", 1)),
        ],
        ..Plan::default()
    };
    let c = vs_changes(&plan);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].what, VsWhat::RealServers);
    assert_eq!(
        c[0].added.as_deref(),
        Some("10.244.1.2:8080,[fd00::2]:8080/w3")
    );
    assert_eq!(c[0].updated.as_deref(), Some("10.244.1.3:8080"));
    assert_eq!(
        (c[0].draining.as_deref(), c[0].removed.as_deref()),
        (None, None)
    );
    // The debug lines classify each real server as the info line does.
    let each: Vec<(&str, String)> = c[0].each.iter().map(|(w, k)| (*w, fmt_rs(k))).collect();
    assert_eq!(
        each,
        [
            ("real server added", "10.244.1.2:8080".to_string()),
            ("real server added", "[fd00::2]:8080".to_string()),
            ("real server updated", "10.244.1.3:8080".to_string()),
        ]
    );
}

#[tokio::test]
async fn refused_operations_are_counted_and_retried_from_a_fresh_dump() {
    let mut p = proxier();
    // EHOSTUNREACH: an errno the label groups as `kernel`.
    p.kernel.refuse.push(("add_real_server", 113));
    p.apply_change(service(WEB));
    p.apply_change(slice("web-1", "web", &["10.244.1.2", "10.244.1.3"]));
    let out = p.sync(SyncKind::Full).await.unwrap();
    assert_eq!(out.failed_ops, 1);
    assert_eq!(
        real_servers(&p).len(),
        1,
        "the other real server is programmed"
    );
    let text = p.metrics.render();
    assert!(
        text.contains("ipvs_proxy_netlink_errors_total{kind=\"kernel\",op=\"add_real_server\"} 1"),
        "{text}"
    );
    // The retry (a partial sync by the loop) re-reads the kernel and fixes it.
    let out = p.sync(SyncKind::Partial).await.unwrap();
    assert_eq!(out.failed_ops, 0);
    assert_eq!(real_servers(&p).len(), 2);
    assert_eq!(p.kernel().dumps, 2);
}

#[tokio::test]
async fn foreign_virtual_servers_are_not_counted() {
    let mut p = proxier();
    let foreign = ipvs::VirtualServer::new(ServiceKey::Addr {
        protocol: ipvs::Protocol::Tcp,
        addr: "192.0.2.50".parse().unwrap(),
        port: 80,
    });
    p.kernel.node.virtual_servers.insert(
        foreign.key,
        ObservedVirtualServer {
            server: foreign.clone(),
            real_servers: BTreeMap::new(),
        },
    );
    p.apply_change(service(WEB));
    p.apply_change(slice("web-1", "web", &["10.244.1.2"]));
    let out = p.sync(SyncKind::Full).await.unwrap();
    assert_eq!((out.virtual_servers, out.real_servers), (1, 1));
    assert!(
        p.kernel().node.virtual_servers.contains_key(&foreign.key),
        "untouched"
    );
}

#[tokio::test]
async fn drift_is_repaired_by_the_full_sync() {
    let mut p = proxier();
    p.apply_change(service(WEB));
    p.apply_change(slice("web-1", "web", &["10.244.1.2"]));
    p.sync(SyncKind::Full).await.unwrap();
    // Someone deletes our virtual server behind our back.
    p.kernel.node.virtual_servers.clear();
    p.sync(SyncKind::Partial).await.unwrap();
    assert!(
        p.kernel().node.virtual_servers.is_empty(),
        "partial trusts the shadow"
    );
    p.sync(SyncKind::Full).await.unwrap();
    assert_eq!(real_servers(&p), vec![("10.244.1.2:8080".into(), 1)]);
}

#[tokio::test]
async fn rejections_are_counted_once() {
    let mut p = proxier();
    p.apply_change(service(
        "metadata: {namespace: default, name: bad}\nspec:\n  clusterIP: 10.96.0.999\n  ports:\n  - {port: 80}\n",
    ));
    p.sync(SyncKind::Full).await.unwrap();
    p.sync(SyncKind::Partial).await.unwrap();
    let text = p.metrics.render();
    let line = text
        .lines()
        .find(|l| l.starts_with("ipvs_proxy_rejected_objects_total{"))
        .unwrap_or_else(|| panic!("no rejection counted:\n{text}"));
    assert!(line.contains("kind=\"Service\""), "{line}");
    assert!(line.ends_with(" 1"), "{line}");
}

#[tokio::test]
async fn no_local_endpoint_counts_reach_the_outcome() {
    let mut p = proxier();
    // Endpoints only on another node; ITP Local on one Service, ETP
    // Local (NodePort) on another.
    p.apply_change(service(&WEB.replace(
        "  type: ClusterIP\n",
        "  type: ClusterIP\n  internalTrafficPolicy: Local\n",
    )));
    p.apply_change(slice("web-1", "web", &["10.244.1.2"]));
    p.apply_change(service(
        "metadata: {namespace: default, name: np}\nspec:\n  clusterIP: 10.96.0.11\n  clusterIPs: [10.96.0.11]\n  type: NodePort\n  externalTrafficPolicy: Local\n  ports:\n  - {name: http, port: 80, protocol: TCP, nodePort: 30080}\n",
    ));
    p.apply_change(slice("np-1", "np", &["10.244.1.3"]));
    let out = p.sync(SyncKind::Full).await.unwrap();
    assert_eq!(
        (
            out.no_local_endpoints_internal,
            out.no_local_endpoints_external
        ),
        (1, 1)
    );
    // Without endpoints anywhere a port is not counted (kube-proxy's rule).
    p.apply_change(Change::Deleted(
        Kind::EndpointSlice,
        ObjectKey {
            namespace: "default".into(),
            name: "web-1".into(),
        },
    ));
    let out = p.sync(SyncKind::Partial).await.unwrap();
    assert_eq!(
        (
            out.no_local_endpoints_internal,
            out.no_local_endpoints_external
        ),
        (0, 1)
    );
}

#[test]
fn primary_ips_prefer_internal_one_per_family() {
    let node: Node = serde_saphyr::from_str(
        "metadata: {name: n}\nstatus:\n  addresses:\n  - {type: Hostname, address: n}\n  - {type: ExternalIP, address: 203.0.113.5}\n  - {type: InternalIP, address: 10.0.0.5}\n  - {type: InternalIP, address: 10.0.0.6}\n  - {type: InternalIP, address: fd00::5}\n",
    )
    .unwrap();
    let ips = primary_ips(Some(&node), "0.0.0.0".parse().unwrap());
    assert_eq!(
        ips,
        vec![
            "10.0.0.5".parse::<IpAddr>().unwrap(),
            "fd00::5".parse().unwrap()
        ]
    );
    assert_eq!(
        primary_ips(Some(&node), "10.9.9.9".parse().unwrap()),
        vec!["10.9.9.9".parse::<IpAddr>().unwrap()]
    );
}
