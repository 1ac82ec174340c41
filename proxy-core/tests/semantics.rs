//! Table tests of the Service semantics (issue 3 item 4), each written from
//! Kubernetes' documented behaviour. docs/semantics.md maps features to these
//! test names.

mod common;

use std::collections::BTreeSet;
use std::net::IpAddr;

use common::*;
use ipvs::{ServiceFlags, ServiceKey};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use proxy_core::{
    desired_from_scratch, Config, DesiredState, FilterEntry, Masquerade, NodeFacts, ProxyState,
    RejectReason, VipKind,
};

fn state(cfg: Config, node: NodeFacts, svcs: &[Service], slices: &[EndpointSlice]) -> ProxyState {
    let mut s = ProxyState::new(cfg.clone(), node.clone());
    for x in svcs {
        s.apply_service(x);
    }
    for x in slices {
        s.apply_slice(x);
    }
    // Every table case doubles as an incremental == from-scratch check.
    assert_eq!(
        s.desired(),
        &desired_from_scratch(&cfg, &node, svcs, slices),
        "incremental and from-scratch states differ"
    );
    s
}

fn desired(svcs: &[Service], slices: &[EndpointSlice]) -> DesiredState {
    state(config(), node(), svcs, slices).desired().clone()
}

/// Virtual servers as `KEY -> [real servers]` strings, sorted.
fn table(d: &DesiredState) -> Vec<String> {
    d.virtual_servers
        .values()
        .map(|v| {
            let rs: Vec<String> = v
                .real_servers
                .keys()
                .map(|k| match k.addr {
                    IpAddr::V4(a) => format!("{a}:{}", k.port),
                    IpAddr::V6(a) => format!("[{a}]:{}", k.port),
                })
                .collect();
            format!("{} -> [{}]", v.server.key, rs.join(" "))
        })
        .collect()
}

fn addrs(d: &DesiredState) -> Vec<String> {
    d.addresses.iter().map(|a| a.to_string()).collect()
}

fn web() -> Svc {
    Svc::new("default", "web", "10.96.0.10").port("http", "TCP", 80)
}

fn web_slice() -> Slice {
    Slice::new("default", "web-1", "web").port("http", "TCP", 8080)
}

#[test]
fn cluster_ip_gets_ready_endpoints_and_binds_vip() {
    let d = desired(
        &[web().build()],
        &[web_slice()
            .ep("10.0.1.1", "node-b")
            .ep("10.0.2.1", NODE)
            .build()],
    );
    assert_eq!(
        table(&d),
        ["TCP 10.96.0.10:80 -> [10.0.1.1:8080 10.0.2.1:8080]"]
    );
    assert_eq!(addrs(&d), ["10.96.0.10"]);
    let v = d.virtual_servers.values().next().unwrap();
    assert_eq!(v.kind, VipKind::ClusterIp);
    assert_eq!(v.owner.to_string(), "default/web:http");
    assert_eq!(v.server.scheduler, "rr");
    assert!(v.real_servers.iter().all(|r| r.weight == 1));
}

#[test]
fn cluster_ip_masquerades_unless_from_pod_or_always_with_masquerade_all() {
    let d = desired(&[web().build()], &[]);
    let f: Vec<_> = d.filter.service_ports().collect();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].masquerade, Masquerade::UnlessFromPod);
    let cfg = Config {
        masquerade_all: true,
        ..config()
    };
    let s = state(cfg, node(), &[web().build()], &[]);
    let f: Vec<_> = s.desired().filter.service_ports().collect();
    assert_eq!(f[0].masquerade, Masquerade::Always);
    assert!(s.desired().filter.masquerade_all);
}

#[test]
fn service_without_endpoints_keeps_an_empty_virtual_server() {
    let d = desired(&[web().build()], &[]);
    assert_eq!(table(&d), ["TCP 10.96.0.10:80 -> []"]);
}

#[test]
fn node_port_on_all_non_loopback_node_addresses_by_default() {
    let svc = web().node_port(30080).build();
    let d = desired(&[svc], &[web_slice().ep("10.0.1.1", "node-b").build()]);
    assert_eq!(
        table(&d),
        [
            "TCP 10.96.0.10:80 -> [10.0.1.1:8080]",
            "TCP 192.168.0.10:30080 -> [10.0.1.1:8080]",
        ]
    );
    // Node addresses are not ours to bind.
    assert_eq!(addrs(&d), ["10.96.0.10"]);
    let np: Vec<_> = d.filter.node_ports().collect();
    assert_eq!(np.len(), 1);
    assert_eq!(np[0].port, 30080);
    assert_eq!(np[0].masquerade, Masquerade::Always);
    assert_eq!(
        d.filter.node_port_addresses,
        BTreeSet::from([
            "192.168.0.10".parse::<IpAddr>().unwrap(),
            "fd00::10".parse().unwrap()
        ])
    );
}

#[test]
fn node_port_addresses_cidrs_and_primary() {
    let mut n = node();
    n.addresses.insert("172.16.0.5".parse().unwrap());
    let svc = web().node_port(30080).build();
    let cfg = Config {
        node_port_addresses: proxy_core::NodePortAddresses::parse(&["172.16.0.0/12"]).unwrap(),
        ..config()
    };
    let s = state(cfg, n.clone(), std::slice::from_ref(&svc), &[]);
    assert_eq!(
        table(s.desired()),
        ["TCP 10.96.0.10:80 -> []", "TCP 172.16.0.5:30080 -> []"]
    );
    let cfg = Config {
        node_port_addresses: proxy_core::NodePortAddresses::parse(&["primary"]).unwrap(),
        ..config()
    };
    let s = state(cfg, n, &[svc], &[]);
    assert_eq!(
        table(s.desired()),
        ["TCP 10.96.0.10:80 -> []", "TCP 192.168.0.10:30080 -> []"]
    );
    assert!(proxy_core::NodePortAddresses::parse(&["bogus"]).is_err());
}

#[test]
fn load_balancer_ingress_ips_except_ip_mode_proxy() {
    let svc = web()
        .type_("LoadBalancer")
        .lb_ingress("203.0.113.7", None)
        .lb_ingress("203.0.113.8", Some("VIP"))
        .lb_ingress("203.0.113.9", Some("Proxy"))
        .build();
    let d = desired(&[svc], &[web_slice().ep("10.0.1.1", "node-b").build()]);
    assert_eq!(
        table(&d),
        [
            "TCP 10.96.0.10:80 -> [10.0.1.1:8080]",
            "TCP 203.0.113.7:80 -> [10.0.1.1:8080]",
            "TCP 203.0.113.8:80 -> [10.0.1.1:8080]",
        ]
    );
    assert_eq!(addrs(&d), ["10.96.0.10", "203.0.113.7", "203.0.113.8"]);
    let lb: Vec<_> = d
        .filter
        .service_ports()
        .filter(|f| f.kind == VipKind::LoadBalancer)
        .collect();
    assert!(lb.iter().all(|f| f.masquerade == Masquerade::Always));
}

#[test]
fn load_balancer_source_ranges_are_facts_per_vip() {
    let svc = web()
        .type_("LoadBalancer")
        .lb_ingress("203.0.113.7", None)
        .source_range("198.51.100.0/24")
        .source_range("192.168.0.0/24")
        .source_range("2001:db8::/32")
        .build();
    let d = desired(&[svc], &[]);
    let lb: Vec<_> = d
        .filter
        .service_ports()
        .filter(|f| f.kind == VipKind::LoadBalancer)
        .collect();
    assert_eq!(lb.len(), 1);
    let ranges: Vec<String> = lb[0].source_ranges.iter().map(|r| r.to_string()).collect();
    // Only this family's ranges; the node (192.168.0.10) is inside one.
    assert_eq!(ranges, ["192.168.0.0/24", "198.51.100.0/24"]);
    assert!(lb[0].allow_from_node);
}

#[test]
fn invalid_source_ranges_fail_closed() {
    let svc = web()
        .type_("LoadBalancer")
        .lb_ingress("203.0.113.7", None)
        .source_range("not-a-cidr")
        .build();
    let s = state(config(), node(), &[svc], &[]);
    assert_eq!(table(s.desired()), ["TCP 10.96.0.10:80 -> []"]);
    assert!(s
        .rejections()
        .iter()
        .any(|r| r.reason == RejectReason::InvalidSourceRange));
}

#[test]
fn external_ips_are_served_and_bound_unless_node_address() {
    let svc = web()
        .external_ip("198.51.100.20")
        .external_ip(NODE_IP)
        .external_ip("2001:db8::1")
        .build();
    let d = desired(&[svc], &[]);
    assert_eq!(
        table(&d),
        [
            "TCP 10.96.0.10:80 -> []",
            "TCP 192.168.0.10:80 -> []",
            "TCP 198.51.100.20:80 -> []",
        ]
    );
    // The IPv6 externalIP of a single-stack IPv4 Service is dropped; the node
    // address is served but not bound.
    assert_eq!(addrs(&d), ["10.96.0.10", "198.51.100.20"]);
}

#[test]
fn several_ports_with_named_target_ports_per_slice() {
    // Named target ports resolve per pod: two slices carry different numbers.
    let svc = Svc::new("default", "multi", "10.96.0.11")
        .port("http", "TCP", 80)
        .port("dns", "UDP", 53)
        .build();
    let a = Slice::new("default", "multi-a", "multi")
        .port("http", "TCP", 8080)
        .port("dns", "UDP", 5353)
        .ep("10.0.1.1", "node-b")
        .build();
    let b = Slice::new("default", "multi-b", "multi")
        .port("http", "TCP", 9090)
        .ep("10.0.1.2", "node-b")
        .build();
    let d = desired(&[svc], &[a, b]);
    assert_eq!(
        table(&d),
        [
            "TCP 10.96.0.11:80 -> [10.0.1.1:8080 10.0.1.2:9090]",
            "UDP 10.96.0.11:53 -> [10.0.1.1:5353]",
        ]
    );
}

#[test]
fn tcp_udp_sctp_protocols() {
    let svc = Svc::new("default", "p", "10.96.0.12")
        .port("t", "TCP", 1)
        .port("u", "UDP", 2)
        .port("s", "SCTP", 3)
        .build();
    let d = desired(&[svc], &[]);
    assert_eq!(
        table(&d),
        [
            "TCP 10.96.0.12:1 -> []",
            "UDP 10.96.0.12:2 -> []",
            "SCTP 10.96.0.12:3 -> []",
        ]
    );
}

#[test]
fn session_affinity_client_ip_is_persistence_with_timeout() {
    let d = desired(&[web().affinity(Some(600)).build()], &[]);
    let v = d.virtual_servers.values().next().unwrap();
    assert!(v.server.flags.contains(ServiceFlags::PERSISTENT));
    assert_eq!(v.server.timeout, 600);
    assert_eq!(v.server.netmask, 0xffff_ffff);
    let d = desired(&[web().affinity(None).build()], &[]);
    let v = d.virtual_servers.values().next().unwrap();
    assert_eq!(v.server.timeout, 10_800);
    let d = desired(&[web().build()], &[]);
    let v = d.virtual_servers.values().next().unwrap();
    assert!(!v.server.flags.contains(ServiceFlags::PERSISTENT));
}

fn etp_local_lb() -> Svc {
    web()
        .type_("LoadBalancer")
        .node_port(30080)
        .lb_ingress("203.0.113.7", None)
        .etp_local(Some(31000))
}

#[test]
fn etp_local_external_vips_get_only_local_endpoints() {
    let d = desired(
        &[etp_local_lb().build()],
        &[web_slice()
            .ep("10.0.1.1", "node-b")
            .ep("10.0.2.1", NODE)
            .build()],
    );
    let mark = proxy_core::fwmark::for_node_port(
        proxy_core::fwmark::DEFAULT_BASE,
        ipvs::Protocol::Tcp,
        30080,
    )
    .unwrap();
    assert_eq!(
        table(&d),
        [
            "TCP 10.96.0.10:80 -> [10.0.1.1:8080 10.0.2.1:8080]",
            "TCP 192.168.0.10:30080 -> [10.0.2.1:8080]",
            "TCP 203.0.113.7:80 -> [10.0.2.1:8080]",
            &format!("FWM {mark} -> [10.0.1.1:8080 10.0.2.1:8080]"),
        ]
    );
    let lb: Vec<_> = d
        .filter
        .service_ports()
        .filter(|f| f.kind == VipKind::LoadBalancer)
        .collect();
    assert_eq!(lb[0].masquerade, Masquerade::Never);
    assert_eq!(lb[0].pod_fwmark, Some(mark));
    let np: Vec<_> = d.filter.node_ports().collect();
    assert_eq!(np[0].masquerade, Masquerade::Never);
    assert_eq!(np[0].pod_fwmark, Some(mark));
    let fwm = d
        .virtual_servers
        .values()
        .find(|v| v.kind == VipKind::PodFwmark)
        .unwrap();
    assert_eq!(fwm.owner.to_string(), "default/web:http");
}

#[test]
fn etp_local_without_local_endpoints_drops_instead_of_falling_back() {
    let d = desired(
        &[etp_local_lb().build()],
        &[web_slice().ep("10.0.1.1", "node-b").build()],
    );
    let lb = d
        .virtual_servers
        .values()
        .find(|v| v.kind == VipKind::LoadBalancer)
        .unwrap();
    // Kept with no real servers: IPVS answers with no destination (dropped),
    // never the cluster-wide fallback of kube-proxy's IPVS mode.
    assert!(lb.real_servers.is_empty());
    let hc: Vec<_> = d.filter.health_checks().collect();
    assert_eq!(hc.len(), 1);
    assert_eq!(hc[0].port, 31000);
    assert_eq!(hc[0].local_endpoints, 0);
}

#[test]
fn etp_local_health_check_counts_local_ready_endpoints() {
    let d = desired(
        &[etp_local_lb().port("https", "TCP", 443).build()],
        &[web_slice()
            .port("https", "TCP", 8443)
            .ep("10.0.2.1", NODE)
            .ep("10.0.2.2", NODE)
            .ep_cond("10.0.2.3", NODE, Some(false), Some(false), Some(false))
            .build()],
    );
    let hc: Vec<_> = d.filter.health_checks().collect();
    // Unique IPs over ports, ready only.
    assert_eq!(hc[0].local_endpoints, 2);
    assert_eq!(hc[0].service.to_string(), "default/web");
}

#[test]
fn etp_local_without_node_ports_uses_health_check_mark() {
    let svc = web()
        .type_("LoadBalancer")
        .lb_ingress("203.0.113.7", None)
        .etp_local(Some(31000))
        .build();
    let d = desired(&[svc], &[]);
    let want = proxy_core::fwmark::for_health_check_port(
        proxy_core::fwmark::DEFAULT_BASE,
        ipvs::Protocol::Tcp,
        31000,
        0,
    )
    .unwrap();
    assert!(d
        .virtual_servers
        .contains_key(&ServiceKey::fwmark(ipvs::AddressFamily::Inet, want)));
}

#[test]
fn itp_local_cluster_ip_gets_only_local_endpoints() {
    let d = desired(
        &[web().itp_local().build()],
        &[web_slice()
            .ep("10.0.1.1", "node-b")
            .ep("10.0.2.1", NODE)
            .build()],
    );
    assert_eq!(table(&d), ["TCP 10.96.0.10:80 -> [10.0.2.1:8080]"]);
    let d = desired(
        &[web().itp_local().build()],
        &[web_slice().ep("10.0.1.1", "node-b").build()],
    );
    assert_eq!(table(&d), ["TCP 10.96.0.10:80 -> []"]);
}

/// (internal, external) no-local-endpoint counts of a state.
fn no_local(svcs: &[Service], slices: &[EndpointSlice]) -> (usize, usize) {
    let s = state(config(), node(), svcs, slices);
    (
        s.no_local_endpoints_internal(),
        s.no_local_endpoints_external(),
    )
}

#[test]
fn no_local_endpoints_counted_per_service_port_as_kube_proxy() {
    let remote = web_slice()
        .port("dns", "UDP", 5353)
        .ep("10.0.1.1", "node-b")
        .build();
    let two_ports = || web().port("dns", "UDP", 53);
    // (case, Services, slices, (internal, external))
    type Case = (
        &'static str,
        Vec<Service>,
        Vec<EndpointSlice>,
        (usize, usize),
    );
    let cases: Vec<Case> = vec![
        (
            "ITP Local, endpoints elsewhere: one per port",
            vec![two_ports().itp_local().build()],
            vec![remote.clone()],
            (2, 0),
        ),
        (
            "ITP Local with a local endpoint",
            vec![two_ports().itp_local().build()],
            vec![web_slice()
                .port("dns", "UDP", 5353)
                .ep("10.0.1.1", "node-b")
                .ep("10.0.2.1", NODE)
                .build()],
            (0, 0),
        ),
        (
            "ITP Local, no endpoints at all (kube-proxy: hasEndpoints false)",
            vec![two_ports().itp_local().build()],
            vec![],
            (0, 0),
        ),
        (
            "ITP Local, only an unready, non-serving endpoint elsewhere",
            vec![web().itp_local().build()],
            vec![web_slice()
                .ep_cond("10.0.1.1", "node-b", Some(false), Some(false), Some(false))
                .build()],
            (0, 0),
        ),
        (
            "ITP Local, only a serving terminating endpoint elsewhere",
            vec![web().itp_local().build()],
            vec![web_slice()
                .ep_cond("10.0.1.1", "node-b", Some(false), Some(true), Some(true))
                .build()],
            (1, 0),
        ),
        (
            "ITP Cluster: never counted",
            vec![two_ports().build()],
            vec![remote.clone()],
            (0, 0),
        ),
        (
            "ETP Local NodePort, endpoints elsewhere",
            vec![web().node_port(30080).etp_local(None).build()],
            vec![remote.clone()],
            (0, 1),
        ),
        (
            "ETP Local load balancer, endpoints elsewhere",
            vec![etp_local_lb().build()],
            vec![remote.clone()],
            (0, 1),
        ),
        (
            "ETP Local load balancer with a local endpoint",
            vec![etp_local_lb().build()],
            vec![web_slice().ep("10.0.2.1", NODE).build()],
            (0, 0),
        ),
        (
            "ETP Local load balancer without endpoints",
            vec![etp_local_lb().build()],
            vec![],
            (0, 0),
        ),
        (
            "ETP and ITP Local, endpoints elsewhere: both",
            vec![etp_local_lb().itp_local().build()],
            vec![remote.clone()],
            (1, 1),
        ),
        (
            "dual stack ITP Local: one per port and family",
            vec![web()
                .cluster_ips(&["10.96.0.10", "fd00:96::10"])
                .itp_local()
                .build()],
            vec![
                remote.clone(),
                Slice::new("default", "web-6", "web")
                    .address_type("IPv6")
                    .port("http", "TCP", 8080)
                    .ep("fd00:1::1", "node-b")
                    .build(),
            ],
            (2, 0),
        ),
    ];
    for (case, svcs, slices, want) in cases {
        assert_eq!(no_local(&svcs, &slices), want, "{case}");
    }
}

#[test]
fn no_local_endpoints_follow_events() {
    let mut s = ProxyState::new(config(), node());
    s.apply_service(&web().itp_local().build());
    s.apply_slice(&web_slice().ep("10.0.1.1", "node-b").build());
    assert_eq!(s.no_local_endpoints_internal(), 1);
    // A local endpoint appears.
    s.apply_slice(
        &web_slice()
            .ep("10.0.1.1", "node-b")
            .ep("10.0.2.1", NODE)
            .build(),
    );
    assert_eq!(s.no_local_endpoints_internal(), 0);
    s.apply_slice(&web_slice().ep("10.0.1.1", "node-b").build());
    assert_eq!(s.no_local_endpoints_internal(), 1);
    // The policy goes back to Cluster, then the Service goes away.
    s.apply_service(&web().itp_local().build());
    s.apply_service(&web().build());
    assert_eq!(s.no_local_endpoints_internal(), 0);
    s.apply_service(&web().itp_local().build());
    assert_eq!(s.no_local_endpoints_internal(), 1);
    s.delete_service("default", "web");
    assert_eq!(s.no_local_endpoints_internal(), 0);
    // A relist onto a cold state counts the same.
    let mut cold = ProxyState::new(config(), node());
    cold.replace_all(
        &[etp_local_lb().itp_local().build()],
        &[web_slice().ep("10.0.1.1", "node-b").build()],
    );
    assert_eq!(
        (
            cold.no_local_endpoints_internal(),
            cold.no_local_endpoints_external()
        ),
        (1, 1)
    );
}

#[test]
fn topology_hints_filter_to_own_zone_when_all_hinted() {
    let s = web_slice()
        .ep("10.0.1.1", "node-b")
        .hints(&["zone-a"])
        .ep("10.0.1.2", "node-c")
        .hints(&["zone-b"]);
    let d = desired(&[web().build()], &[s.build()]);
    assert_eq!(table(&d), ["TCP 10.96.0.10:80 -> [10.0.1.1:8080]"]);
}

#[test]
fn topology_hints_ignored_when_one_endpoint_lacks_them_or_none_for_zone() {
    let s = web_slice()
        .ep("10.0.1.1", "node-b")
        .hints(&["zone-a"])
        .ep("10.0.1.2", "node-c");
    let d = desired(&[web().build()], &[s.build()]);
    assert_eq!(
        table(&d),
        ["TCP 10.96.0.10:80 -> [10.0.1.1:8080 10.0.1.2:8080]"]
    );
    let s = web_slice()
        .ep("10.0.1.1", "node-b")
        .hints(&["zone-c"])
        .ep("10.0.1.2", "node-c")
        .hints(&["zone-b"]);
    let d = desired(&[web().build()], &[s.build()]);
    assert_eq!(
        table(&d),
        ["TCP 10.96.0.10:80 -> [10.0.1.1:8080 10.0.1.2:8080]"]
    );
}

#[test]
fn conditions_ready_only_then_serving_terminating_fallback() {
    let s = web_slice()
        .ep("10.0.1.1", "node-b")
        .ep_cond("10.0.1.2", "node-b", Some(false), Some(true), Some(true))
        .ep_cond("10.0.1.3", "node-b", Some(false), Some(false), Some(false));
    let d = desired(&[web().build()], &[s.build()]);
    assert_eq!(table(&d), ["TCP 10.96.0.10:80 -> [10.0.1.1:8080]"]);
    // No ready endpoint: serving+terminating ones are used.
    let s = web_slice()
        .ep_cond("10.0.1.2", "node-b", Some(false), Some(true), Some(true))
        .ep_cond("10.0.1.4", "node-b", Some(false), Some(false), Some(true))
        .ep_cond("10.0.1.3", "node-b", Some(false), Some(false), Some(false));
    let d = desired(&[web().build()], &[s.build()]);
    assert_eq!(table(&d), ["TCP 10.96.0.10:80 -> [10.0.1.2:8080]"]);
    // Nil conditions mean ready.
    let s = web_slice().ep_cond("10.0.1.5", "node-b", None, None, None);
    let d = desired(&[web().build()], &[s.build()]);
    assert_eq!(table(&d), ["TCP 10.96.0.10:80 -> [10.0.1.5:8080]"]);
}

#[test]
fn publish_not_ready_addresses_uses_not_ready_endpoints() {
    let s = web_slice().ep_cond("10.0.1.3", "node-b", Some(false), Some(false), Some(false));
    let d = desired(&[web().publish_not_ready().build()], &[s.build()]);
    assert_eq!(table(&d), ["TCP 10.96.0.10:80 -> [10.0.1.3:8080]"]);
}

#[test]
fn dual_stack_per_ip_families() {
    let svc = web().cluster_ips(&["10.96.0.10", "fd00:96::10"]).build();
    let v4 = web_slice().ep("10.0.1.1", "node-b").build();
    let v6 = Slice::new("default", "web-6", "web")
        .address_type("IPv6")
        .port("http", "TCP", 8080)
        .ep("fd00:1::1", "node-b")
        .build();
    let d = desired(std::slice::from_ref(&svc), &[v4.clone(), v6.clone()]);
    assert_eq!(
        table(&d),
        [
            "TCP 10.96.0.10:80 -> [10.0.1.1:8080]",
            "TCP [fd00:96::10]:80 -> [[fd00:1::1]:8080]",
        ]
    );
    // A v4-only node drops the v6 family.
    let cfg = Config {
        families: [proxy_core::IpFamily::V4].into_iter().collect(),
        ..config()
    };
    let s = state(cfg, node(), &[svc], &[v4, v6.clone()]);
    assert_eq!(table(s.desired()), ["TCP 10.96.0.10:80 -> [10.0.1.1:8080]"]);
    // A single-stack v4 Service ignores IPv6 slices.
    let d = desired(&[web().build()], &[v6]);
    assert_eq!(table(&d), ["TCP 10.96.0.10:80 -> []"]);
}

#[test]
fn headless_external_name_and_other_proxy_services_ignored() {
    let headless = Svc::new("default", "h", "None")
        .port("http", "TCP", 80)
        .build();
    let en = Svc::new("default", "e", "").type_("ExternalName").build();
    let other = Svc::new("default", "o", "10.96.0.20")
        .port("http", "TCP", 80)
        .label("service.kubernetes.io/service-proxy-name", "other")
        .build();
    let s = state(config(), node(), &[headless, en, other], &[]);
    assert!(s.desired().virtual_servers.is_empty());
    assert!(s.desired().addresses.is_empty());
    assert!(s.rejections().is_empty());
}

#[test]
fn slices_merged_and_deduplicated() {
    let a = web_slice()
        .ep("10.0.1.1", "node-b")
        .ep("10.0.1.2", "node-b")
        .build();
    let b = Slice::new("default", "web-2", "web")
        .port("http", "TCP", 8080)
        .ep("10.0.1.2", "node-b")
        .ep("10.0.1.3", "node-b")
        .build();
    let d = desired(&[web().build()], &[a, b]);
    assert_eq!(
        table(&d),
        ["TCP 10.96.0.10:80 -> [10.0.1.1:8080 10.0.1.2:8080 10.0.1.3:8080]"]
    );
}

#[test]
fn duplicate_endpoint_prefers_ready_copy() {
    let a = web_slice()
        .ep_cond("10.0.1.2", "node-b", Some(false), Some(false), Some(false))
        .ep("10.0.1.9", "node-b")
        .build();
    let b = Slice::new("default", "web-2", "web")
        .port("http", "TCP", 8080)
        .ep("10.0.1.2", "node-b")
        .build();
    let d = desired(&[web().build()], &[a, b]);
    assert_eq!(
        table(&d),
        ["TCP 10.96.0.10:80 -> [10.0.1.2:8080 10.0.1.9:8080]"]
    );
}

#[test]
fn scheduler_annotation_with_flags_else_node_default() {
    let svc = web()
        .annotation("ipvs-proxy.io/scheduler", "mh")
        .annotation("ipvs-proxy.io/scheduler-flags", "mh-fallback,mh-port")
        .build();
    let d = desired(&[svc], &[]);
    let v = d.virtual_servers.values().next().unwrap();
    assert_eq!(v.server.scheduler, "mh");
    assert!(v
        .server
        .flags
        .contains(ServiceFlags::SCHED1 | ServiceFlags::SCHED2));

    let cfg = Config {
        scheduler: proxy_core::Scheduler::parse("lc", "").unwrap(),
        ..config()
    };
    let s = state(cfg.clone(), node(), &[web().build()], &[]);
    assert_eq!(
        s.desired()
            .virtual_servers
            .values()
            .next()
            .unwrap()
            .server
            .scheduler,
        "lc"
    );

    let bad = web().annotation("ipvs-proxy.io/scheduler", "bogus").build();
    let s = state(cfg, node(), &[bad], &[]);
    assert_eq!(
        s.desired()
            .virtual_servers
            .values()
            .next()
            .unwrap()
            .server
            .scheduler,
        "lc"
    );
    let r = s.rejections();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].reason, RejectReason::InvalidSchedulerAnnotation);
    assert_eq!(r[0].reason.as_str(), "invalid_scheduler_annotation");
    assert!(!r[0].whole_object);
}

#[test]
fn hairpin_facts_for_local_endpoints() {
    let d = desired(
        &[web().build()],
        &[web_slice()
            .ep("10.0.1.1", "node-b")
            .ep("10.0.2.1", NODE)
            .build()],
    );
    let h: Vec<String> = d
        .filter
        .hairpins()
        .map(|h| format!("{} {}:{}", h.protocol, h.addr, h.port))
        .collect();
    assert_eq!(h, ["TCP 10.0.2.1:8080"]);
}

#[test]
fn filter_entries_cover_every_served_vip_port() {
    let svc = web().external_ip("198.51.100.20").build();
    let d = desired(&[svc], &[]);
    let sp: Vec<String> = d
        .filter
        .service_ports()
        .map(|f| format!("{} {}:{} {}", f.protocol, f.addr, f.port, f.kind))
        .collect();
    assert_eq!(
        sp,
        [
            "TCP 10.96.0.10:80 cluster-ip",
            "TCP 198.51.100.20:80 external-ip"
        ]
    );
    assert!(d
        .filter
        .entries
        .iter()
        .all(|e| !matches!(e, FilterEntry::HealthCheck(_))));
}

#[test]
fn node_hints_prefer_same_node_when_all_hinted() {
    let s = web_slice()
        .ep("10.0.1.1", "node-b")
        .node_hints(&["node-b"])
        .hints(&["zone-a"])
        .ep("10.0.2.1", NODE)
        .node_hints(&[NODE])
        .hints(&["zone-a"]);
    let d = desired(&[web().build()], &[s.build()]);
    assert_eq!(table(&d), ["TCP 10.96.0.10:80 -> [10.0.2.1:8080]"]);
    // Not every endpoint has node hints: zone hints apply instead.
    let s = web_slice()
        .ep("10.0.1.1", "node-b")
        .hints(&["zone-a"])
        .ep("10.0.2.1", NODE)
        .node_hints(&[NODE])
        .hints(&["zone-a"]);
    let d = desired(&[web().build()], &[s.build()]);
    assert_eq!(
        table(&d),
        ["TCP 10.96.0.10:80 -> [10.0.1.1:8080 10.0.2.1:8080]"]
    );
}
