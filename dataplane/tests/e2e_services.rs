//! End-to-end: real TCP/UDP traffic through IPVS and our nftables table, in
//! a qemu guest (Debian kernel with nftables). Services and EndpointSlices
//! go through proxy-core (ProxyState -> plan) and the Dataplane, as in the
//! agent. Topology: see `common/net.rs`.
#![cfg(feature = "e2e-tests")]

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::k8s::{service, slice, sync, Ep};
use common::net::{
    self, sa, tcp_connect, tcp_hello, tcp_server, udp_ask, udp_server, EXT, EXT_IP, EXT_IP2,
    NODE_EXT_IP, POD_A1, POD_A2, POD_B1,
};
use common::{rt, sh, sh_try, Netns};
use dataplane::nft::FilterChange;
use dataplane::sysctl::SysctlConfig;
use dataplane::{ApplyReport, Dataplane, DataplaneConfig};
use proxy_core::{Config, DrainBook, LocalDetect, NodeFacts, ProxyState};
use serde_json::{json, Value};
use tokio::runtime::Runtime;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The node under test: its netns (entered by the test thread), the
/// topology around it, proxy-core state and the dataplane.
struct Node {
    rt: Runtime,
    dp: Option<Dataplane>,
    state: ProxyState,
    drains: DrainBook,
    _ns: Netns,
}

fn config() -> Config {
    Config {
        local_detect: LocalDetect::ClusterCidr(vec![
            "10.244.0.0/16".parse().unwrap(),
            "fd00:244::/48".parse().unwrap(),
        ]),
        ..Config::default()
    }
}

fn dp_config() -> DataplaneConfig {
    DataplaneConfig {
        sysctl: SysctlConfig {
            ipv6: true,
            strict_arp: false,
        },
        ..DataplaneConfig::default()
    }
}

impl Node {
    fn new(config: Config) -> Node {
        let ns = Netns::enter("node");
        net::build();
        let rt = rt();
        let node = NodeFacts {
            name: "node-a".into(),
            addresses: [ip("172.18.0.2"), ip(NODE_EXT_IP), ip("fd00:18::2")].into(),
            primary_ips: vec![ip("172.18.0.2"), ip("fd00:18::2")],
            ..NodeFacts::default()
        };
        let mut dp = rt.block_on(Dataplane::new(dp_config())).expect("dataplane");
        rt.block_on(dp.setup()).expect("setup");
        Node {
            rt,
            dp: Some(dp),
            state: ProxyState::new(config, node),
            drains: DrainBook::new(),
            _ns: ns,
        }
    }

    fn sync(&mut self) -> ApplyReport {
        let dp = self.dp.as_mut().expect("dataplane");
        self.rt.block_on(sync(dp, &self.state, &mut self.drains)).1
    }

    fn service(&mut self, name: &str, spec: Value, status: Value) {
        self.state
            .apply_service(&service("default", name, spec, status));
    }

    fn endpoints(&mut self, svc: &str, family: &str, eps: &[Ep<'_>], ports: &[(&str, &str, u16)]) {
        self.state.apply_slice(&slice(
            "default",
            svc,
            &format!("{svc}-{}", family.to_lowercase()),
            family,
            eps,
            ports,
        ));
    }
}

fn http_port() -> Value {
    json!([{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}])
}

/// TCP servers "pod-a2" and "pod-b1" on :8080 (v4 and v6).
fn start_web_servers() {
    for (ns, v4, v6) in [POD_A2, POD_B1] {
        tcp_server(ns, sa(v4, 8080), ns);
        tcp_server(ns, sa(v6, 8080), ns);
    }
}

fn both_endpoints() -> [Ep<'static>; 2] {
    [Ep(POD_A2.1, "node-a", true), Ep(POD_B1.1, "node-b", true)]
}

/// `n` greetings from `ns` to `to` (each a new connection): names and peers.
fn hellos(ns: &str, to: &str, port: u16, src: Option<&str>, n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| {
            tcp_hello(ns, sa(to, port), src.map(ip)).unwrap_or_else(|e| {
                panic!(
                    "request {i} from {ns} to {to}:{port}: {e}\n{}",
                    diagnostics()
                )
            })
        })
        .collect()
}

/// The node's IPVS table, connections, our nftables table with counters and
/// conntrack entries, for failure messages.
fn diagnostics() -> String {
    let mut out = String::new();
    for cmd in [
        "ipvsadm -Ln",
        "ipvsadm -Lnc",
        "nft list table inet ipvs-proxy",
        "cat /proc/net/nf_conntrack",
        "ip addr",
        "ip route",
    ] {
        let (_, text) = sh_try(cmd);
        out.push_str(&format!("--- {cmd}\n{text}\n"));
    }
    out
}

fn names(v: &[(String, String)]) -> BTreeSet<String> {
    v.iter().map(|(n, _)| n.clone()).collect()
}

fn peers(v: &[(String, String)]) -> BTreeSet<String> {
    v.iter().map(|(_, p)| p.clone()).collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn clusterip_spreads_new_connections_over_all_endpoints() {
    let mut node = Node::new(config());
    start_web_servers();
    node.service(
        "web",
        json!({"type": "ClusterIP", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
               "ipFamilies": ["IPv4"], "ports": http_port()}),
        json!({}),
    );
    node.endpoints("web", "IPv4", &both_endpoints(), &[("http", "TCP", 8080)]);
    node.sync();
    let r = hellos(POD_A1.0, "10.96.0.10", 80, None, 10);
    assert_eq!(names(&r), set(&["pod-a2", "pod-b1"]), "{r:?}");
    // Pod to ClusterIP is not masqueraded: backends see the pod's address.
    assert_eq!(peers(&r), set(&[POD_A1.1]), "{r:?}");
    // A second Service is added with element updates only; its port must
    // reach the guard set (else new connections to it are rejected).
    node.service(
        "web2",
        json!({"type": "ClusterIP", "clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"],
               "ipFamilies": ["IPv4"], "ports": http_port()}),
        json!({}),
    );
    node.endpoints(
        "web2",
        "IPv4",
        &[Ep(POD_B1.1, "node-b", true)],
        &[("http", "TCP", 8080)],
    );
    let report = node.sync();
    assert_eq!(report.filter_change, FilterChange::Elements, "{report:?}");
    assert_eq!(
        names(&hellos(POD_A1.0, "10.96.0.20", 80, None, 2)),
        set(&["pod-b1"])
    );
    assert_eq!(
        names(&hellos(POD_A1.0, "10.96.0.10", 80, None, 4)),
        set(&["pod-a2", "pod-b1"])
    );
}

#[test]
fn nodeport_from_outside_is_masqueraded_to_local_and_remote_endpoints() {
    let mut node = Node::new(config());
    start_web_servers();
    node.service(
        "np",
        json!({"type": "NodePort", "clusterIP": "10.96.0.11", "clusterIPs": ["10.96.0.11"],
               "ipFamilies": ["IPv4"],
               "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080,
                          "nodePort": 30080}]}),
        json!({}),
    );
    node.endpoints("np", "IPv4", &both_endpoints(), &[("http", "TCP", 8080)]);
    node.sync();
    let r = hellos(EXT, NODE_EXT_IP, 30080, Some(EXT_IP), 10);
    assert_eq!(names(&r), set(&["pod-a2", "pod-b1"]), "{r:?}");
    assert!(
        !peers(&r).contains(EXT_IP),
        "source must be NATed to the node: {r:?}"
    );
}

#[test]
fn load_balancer_ip_and_external_ip_answer() {
    let mut node = Node::new(config());
    start_web_servers();
    node.service(
        "lb",
        json!({"type": "LoadBalancer", "clusterIP": "10.96.0.12", "clusterIPs": ["10.96.0.12"],
               "ipFamilies": ["IPv4"], "externalIPs": ["192.0.2.20"],
               "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080,
                          "nodePort": 30081}]}),
        json!({"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}}),
    );
    node.endpoints("lb", "IPv4", &both_endpoints(), &[("http", "TCP", 8080)]);
    node.sync();
    for vip in ["192.0.2.10", "192.0.2.20"] {
        let r = hellos(EXT, vip, 80, Some(EXT_IP), 8);
        assert_eq!(names(&r), set(&["pod-a2", "pod-b1"]), "{vip}: {r:?}");
    }
}

#[test]
fn session_affinity_client_ip_sticks() {
    let mut node = Node::new(config());
    start_web_servers();
    node.service(
        "sticky",
        json!({"type": "ClusterIP", "clusterIP": "10.96.0.13", "clusterIPs": ["10.96.0.13"],
               "ipFamilies": ["IPv4"], "sessionAffinity": "ClientIP", "ports": http_port()}),
        json!({}),
    );
    node.endpoints(
        "sticky",
        "IPv4",
        &both_endpoints(),
        &[("http", "TCP", 8080)],
    );
    node.sync();
    let r = hellos(POD_A1.0, "10.96.0.13", 80, None, 8);
    assert_eq!(names(&r).len(), 1, "one backend for one client: {r:?}");
}

#[test]
fn external_traffic_policy_local_keeps_source_and_pods_reach_all() {
    let mut node = Node::new(config());
    start_web_servers();
    node.service(
        "local",
        json!({"type": "LoadBalancer", "clusterIP": "10.96.0.17", "clusterIPs": ["10.96.0.17"],
               "ipFamilies": ["IPv4"], "externalTrafficPolicy": "Local",
               "healthCheckNodePort": 32000,
               "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080,
                          "nodePort": 30082}]}),
        json!({"loadBalancer": {"ingress": [{"ip": "192.0.2.30"}]}}),
    );
    node.endpoints("local", "IPv4", &both_endpoints(), &[("http", "TCP", 8080)]);
    node.sync();
    // External client: only the local endpoint, and its own source address.
    for (vip, port) in [("192.0.2.30", 80), (NODE_EXT_IP, 30082)] {
        let r = hellos(EXT, vip, port, Some(EXT_IP), 6);
        assert_eq!(names(&r), set(&["pod-a2"]), "{vip}:{port}: {r:?}");
        assert_eq!(peers(&r), set(&[EXT_IP]), "{vip}:{port}: {r:?}");
    }
    // A pod on this node: every endpoint, through the same LB IP.
    let r = hellos(POD_A1.0, "192.0.2.30", 80, None, 12);
    assert_eq!(names(&r), set(&["pod-a2", "pod-b1"]), "{r:?}");
}

#[test]
fn hairpin_a_pod_reaches_itself_through_its_service() {
    let mut node = Node::new(config());
    start_web_servers();
    node.service(
        "self",
        json!({"type": "ClusterIP", "clusterIP": "10.96.0.14", "clusterIPs": ["10.96.0.14"],
               "ipFamilies": ["IPv4"], "ports": http_port()}),
        json!({}),
    );
    node.endpoints(
        "self",
        "IPv4",
        &[Ep(POD_A2.1, "node-a", true)],
        &[("http", "TCP", 8080)],
    );
    node.sync();
    let r = hellos(POD_A2.0, "10.96.0.14", 80, None, 3);
    assert_eq!(names(&r), set(&["pod-a2"]));
    assert!(
        !peers(&r).contains(POD_A2.1),
        "hairpin must be masqueraded: {r:?}"
    );
}

#[test]
fn load_balancer_source_ranges_accept_allowed_and_drop_others() {
    let mut node = Node::new(config());
    start_web_servers();
    node.service(
        "ranged",
        json!({"type": "LoadBalancer", "clusterIP": "10.96.0.18", "clusterIPs": ["10.96.0.18"],
               "ipFamilies": ["IPv4"], "loadBalancerSourceRanges": ["198.51.100.10/32"],
               "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080,
                          "nodePort": 30083}]}),
        json!({"loadBalancer": {"ingress": [{"ip": "192.0.2.40"}]}}),
    );
    node.endpoints(
        "ranged",
        "IPv4",
        &both_endpoints(),
        &[("http", "TCP", 8080)],
    );
    node.sync();
    hellos(EXT, "192.0.2.40", 80, Some(EXT_IP), 3);
    let denied = tcp_connect(
        EXT,
        sa("192.0.2.40", 80),
        Some(ip(EXT_IP2)),
        Duration::from_secs(3),
    );
    assert!(
        denied.is_err(),
        "a source outside the ranges must not connect"
    );
}

#[test]
fn draining_endpoint_keeps_its_long_lived_connection() {
    let drain = Duration::from_secs(8);
    let mut node = Node::new(Config {
        drain_period: drain,
        ..config()
    });
    start_web_servers();
    node.service(
        "drain",
        json!({"type": "ClusterIP", "clusterIP": "10.96.0.15", "clusterIPs": ["10.96.0.15"],
               "ipFamilies": ["IPv4"], "ports": http_port()}),
        json!({}),
    );
    node.endpoints("drain", "IPv4", &both_endpoints(), &[("http", "TCP", 8080)]);
    node.sync();
    // A long-lived connection that landed on pod-b1.
    let mut long = None;
    for _ in 0..30 {
        let mut c =
            tcp_connect(POD_A1.0, sa("10.96.0.15", 80), None, Duration::from_secs(5)).unwrap();
        if net::read_line(&mut c).unwrap().starts_with("pod-b1 ") {
            long = Some(c);
            break;
        }
    }
    let mut long = long.expect("rr must reach pod-b1");
    node.endpoints(
        "drain",
        "IPv4",
        &[Ep(POD_A2.1, "node-a", true)],
        &[("http", "TCP", 8080)],
    );
    let removed_at = Instant::now();
    node.sync();
    let l = sh("ipvsadm -Ln -t 10.96.0.15:80");
    let line = l
        .lines()
        .find(|x| x.contains("10.244.1.2:8080"))
        .unwrap_or_else(|| panic!("draining, not gone: {l}"));
    assert_eq!(line.split_whitespace().nth(3), Some("0"), "weight 0: {l}");
    // The old connection still works; new ones go to pod-a2 only.
    long.write_all(b"ping\n").unwrap();
    assert_eq!(net::read_line(&mut long).unwrap(), "pod-b1 ping");
    let r = hellos(POD_A1.0, "10.96.0.15", 80, None, 6);
    assert_eq!(names(&r), set(&["pod-a2"]), "{r:?}");
    long.write_all(b"again\n").unwrap();
    assert_eq!(net::read_line(&mut long).unwrap(), "pod-b1 again");
    drop(long);
    // After the drain period the real server is deleted.
    let wait = drain.saturating_sub(removed_at.elapsed()) + Duration::from_secs(1);
    thread::sleep(wait);
    node.sync();
    let l = sh("ipvsadm -Ln -t 10.96.0.15:80");
    assert!(!l.contains("10.244.1.2:8080"), "{l}");
    assert!(l.contains("10.244.0.3:8080"), "{l}");
}

#[test]
fn a_non_service_port_on_a_service_ip_is_refused() {
    let mut node = Node::new(config());
    start_web_servers();
    // Something on the node listens on every address, port 81.
    let _listener = std::net::TcpListener::bind("0.0.0.0:81").unwrap();
    node.service(
        "web",
        json!({"type": "ClusterIP", "clusterIP": "10.96.0.16", "clusterIPs": ["10.96.0.16"],
               "ipFamilies": ["IPv4"], "ports": http_port()}),
        json!({}),
    );
    node.endpoints("web", "IPv4", &both_endpoints(), &[("http", "TCP", 8080)]);
    node.sync();
    // Control: the node's own address reaches the listener...
    tcp_connect(POD_A1.0, sa("10.244.0.1", 81), None, Duration::from_secs(5))
        .expect("the node's listener is reachable on a node address");
    // ...the service IP on a non-service port does not.
    let err = tcp_connect(POD_A1.0, sa("10.96.0.16", 81), None, Duration::from_secs(5))
        .expect_err("service IP, non-service port");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    hellos(POD_A1.0, "10.96.0.16", 80, None, 2);
}

#[test]
fn udp_keeps_answering_through_an_endpoint_change() {
    let mut node = Node::new(config());
    for (ns, v4, _) in [POD_A2, POD_B1] {
        udp_server(ns, sa(v4, 5353), ns);
    }
    node.service(
        "dns",
        json!({"type": "ClusterIP", "clusterIP": "10.96.0.53", "clusterIPs": ["10.96.0.53"],
               "ipFamilies": ["IPv4"],
               "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353}]}),
        json!({}),
    );
    node.endpoints("dns", "IPv4", &both_endpoints(), &[("dns", "UDP", 5353)]);
    node.sync();
    let ask = || {
        // A DNS client retries once on timeout.
        udp_ask(POD_A1.0, sa("10.96.0.53", 53), Duration::from_secs(2))
            .or_else(|_| udp_ask(POD_A1.0, sa("10.96.0.53", 53), Duration::from_secs(2)))
            .expect("UDP answer")
    };
    let before: BTreeSet<String> = (0..8).map(|_| ask().0).collect();
    assert_eq!(before, set(&["pod-a2", "pod-b1"]));
    node.endpoints(
        "dns",
        "IPv4",
        &[Ep(POD_A2.1, "node-a", true)],
        &[("dns", "UDP", 5353)],
    );
    node.sync();
    assert!(
        !sh("ipvsadm -Ln -u 10.96.0.53:53").contains("10.244.1.2"),
        "UDP goes at once"
    );
    let after: BTreeSet<String> = (0..8).map(|_| ask().0).collect();
    assert_eq!(after, set(&["pod-a2"]));
}

#[test]
fn ipv6_clusterip_spreads() {
    let mut node = Node::new(config());
    start_web_servers();
    node.service(
        "web6",
        json!({"type": "ClusterIP", "clusterIP": "fd00:96::10", "clusterIPs": ["fd00:96::10"],
               "ipFamilies": ["IPv6"], "ports": http_port()}),
        json!({}),
    );
    node.endpoints(
        "web6",
        "IPv6",
        &[Ep(POD_A2.2, "node-a", true), Ep(POD_B1.2, "node-b", true)],
        &[("http", "TCP", 8080)],
    );
    node.sync();
    let r = hellos(POD_A1.0, "fd00:96::10", 80, None, 10);
    assert_eq!(names(&r), set(&["pod-a2", "pod-b1"]), "{r:?}");
    assert_eq!(peers(&r), set(&[POD_A1.2]), "{r:?}");
}

#[test]
fn foreign_objects_survive_syncs_and_cleanup() {
    let mut node = Node::new(config());
    start_web_servers();
    sh("ipvsadm -A -t 192.0.2.50:80 -s wrr && ipvsadm -a -t 192.0.2.50:80 -r 10.244.0.3:8080 -m");
    sh("ip link add foreign0 type dummy && ip addr add 192.0.2.50/32 dev foreign0");
    sh("nft add table inet foreign && nft add chain inet foreign c '{ type filter hook input priority 10; }' \
        && nft add rule inet foreign c tcp dport 9 counter");
    node.service(
        "web",
        json!({"type": "ClusterIP", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
               "ipFamilies": ["IPv4"], "ports": http_port()}),
        json!({}),
    );
    node.endpoints("web", "IPv4", &both_endpoints(), &[("http", "TCP", 8080)]);
    node.sync();
    node.sync();
    let foreign_ok = || {
        let l = sh("ipvsadm -Ln");
        assert!(l.contains("TCP  192.0.2.50:80 wrr"), "{l}");
        assert!(l.contains("10.244.0.3:8080"), "{l}");
        assert!(sh("ip addr show dev foreign0").contains("192.0.2.50/32"));
        assert!(sh("nft list table inet foreign").contains("tcp dport 9 counter"));
    };
    foreign_ok();
    assert!(sh("nft list tables").contains("table inet ipvs-proxy"));
    let policy = node.state.policy();
    let dp = node.dp.as_mut().unwrap();
    let rep = node.rt.block_on(dp.cleanup(&policy)).unwrap();
    assert!(rep.table_deleted && rep.interface_deleted, "{rep:?}");
    foreign_ok();
    assert!(!sh("ipvsadm -Ln").contains("10.96.0.10"));
    assert!(!sh("nft list tables").contains("ipvs-proxy"));
    assert!(!sh_try("ip link show kube-ipvs0").0);
}

#[test]
fn restarting_the_dataplane_under_load_fails_no_request() {
    let mut node = Node::new(config());
    start_web_servers();
    node.service(
        "web",
        json!({"type": "ClusterIP", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
               "ipFamilies": ["IPv4"], "ports": http_port()}),
        json!({}),
    );
    node.endpoints("web", "IPv4", &both_endpoints(), &[("http", "TCP", 8080)]);
    node.sync();
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let loop_thread = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match tcp_hello(POD_A1.0, sa("10.96.0.10", 80), None) {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        })
    };
    thread::sleep(Duration::from_secs(2));
    // Restart: drop the dataplane (as a stopped agent would), start a new
    // one, adopt and sync - twice.
    for _ in 0..2 {
        node.dp = None;
        node.drains = DrainBook::new();
        thread::sleep(Duration::from_millis(500));
        let mut dp = node.rt.block_on(Dataplane::new(dp_config())).unwrap();
        node.rt.block_on(dp.setup()).unwrap();
        node.dp = Some(dp);
        node.sync();
        thread::sleep(Duration::from_secs(1));
    }
    stop.store(true, Ordering::Relaxed);
    loop_thread.join().unwrap();
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(ok >= 5, "the loop must have run: {ok} ok");
    assert_eq!(failed, 0, "{failed} failed of {}", ok + failed);
}
