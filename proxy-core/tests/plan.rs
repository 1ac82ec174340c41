//! Planning (issue 3 item 6): ordered operations, ownership, graceful drain.

mod common;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::*;
use ipvs::{Op, RealServer, ServiceFlags, ServiceKey, VirtualServer};
use proxy_core::{
    plan, plan_changes, render_ipvsadm_save, Config, DrainBook, FilterOp, Observed,
    ObservedVirtualServer, PlanPolicy, ProxyState,
};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn web_state(eps: &[&str], proto: &str) -> ProxyState {
    let mut s = ProxyState::new(config(), node());
    s.apply_service(
        &Svc::new("default", "web", "10.96.0.10")
            .port("http", proto, 80)
            .build(),
    );
    let mut sl = Slice::new("default", "web-1", "web").port("http", proto, 8080);
    for e in eps {
        sl = sl.ep(e, "node-b");
    }
    s.apply_slice(&sl.build());
    s
}

fn vip() -> ServiceKey {
    ServiceKey::tcp(ip("10.96.0.10"), 80)
}

/// Plans from `obs`, applies to it, and returns the plan.
fn step(
    s: &ProxyState,
    obs: &mut Observed,
    drains: &mut DrainBook,
    now: Instant,
) -> proxy_core::Plan {
    let p = plan(s.desired(), obs, &s.policy(), drains, now);
    obs.apply(&p).expect("plan applies to the model");
    p
}

fn set_conns(obs: &mut Observed, k: &ServiceKey, addr: &str, active: u32, inactive: u32) {
    let rs = obs
        .virtual_servers
        .get_mut(k)
        .unwrap()
        .real_servers
        .values_mut()
        .find(|r| r.key.addr == ip(addr))
        .unwrap();
    rs.conns.active = active;
    rs.conns.inactive = inactive;
}

#[test]
fn first_plan_binds_adds_and_sets_filter_then_converges() {
    let s = web_state(&["10.0.1.1", "10.0.1.2"], "TCP");
    let mut obs = Observed::default();
    let mut drains = DrainBook::new();
    let now = Instant::now();
    let p = step(&s, &mut obs, &mut drains, now);
    assert_eq!(p.bind, [ip("10.96.0.10")]);
    assert_eq!(p.ipvs.len(), 3);
    assert!(matches!(&p.ipvs[0], Op::AddService(v) if v.key == vip()));
    assert!(
        matches!(&p.ipvs[1], Op::AddRealServer(k, r) if *k == vip() && r.key.addr == ip("10.0.1.1"))
    );
    assert!(matches!(p.filter[0], FilterOp::SetGlobals { .. }));
    assert!(p.filter.iter().any(|f| matches!(f, FilterOp::Add(_))));
    assert!(p.unbind.is_empty());
    // Order of ops(): bind, ipvs, filter, unbind.
    let ops = p.ops();
    assert!(matches!(ops[0], proxy_core::PlanOp::Bind(_)));
    assert!(obs.converged(s.desired(), &s.policy()));
    assert!(plan(s.desired(), &obs, &s.policy(), &mut drains, now).is_empty());
}

#[test]
fn read_only_kernel_fields_never_cause_operations() {
    let s = web_state(&["10.0.1.1"], "TCP");
    let mut obs = Observed::default();
    let mut drains = DrainBook::new();
    let now = Instant::now();
    step(&s, &mut obs, &mut drains, now);
    let o = obs.virtual_servers.get_mut(&vip()).unwrap();
    o.server.flags |= ServiceFlags::HASHED;
    let mut stats = ipvs::Stats::default();
    stats.conns = 5;
    o.server.stats = Some(stats);
    for rs in o.real_servers.values_mut() {
        rs.conns.active = 3;
        rs.conns.inactive = 9;
        rs.conns.persistent = 1;
        rs.stats = Some(ipvs::Stats::default());
    }
    assert!(plan(s.desired(), &obs, &s.policy(), &mut drains, now).is_empty());
}

#[test]
fn removed_tcp_server_with_connections_drains_then_is_deleted_when_idle() {
    let mut s = web_state(&["10.0.1.1", "10.0.1.2"], "TCP");
    let mut obs = Observed::default();
    let mut drains = DrainBook::new();
    let t0 = Instant::now();
    step(&s, &mut obs, &mut drains, t0);
    set_conns(&mut obs, &vip(), "10.0.1.2", 2, 1);
    s.apply_slice(
        &Slice::new("default", "web-1", "web")
            .port("http", "TCP", 8080)
            .ep("10.0.1.1", "node-b")
            .build(),
    );
    let p = step(&s, &mut obs, &mut drains, t0);
    assert_eq!(p.ipvs.len(), 1);
    assert!(
        matches!(&p.ipvs[0], Op::EditRealServer(k, r) if *k == vip() && r.weight == 0 && r.key.addr == ip("10.0.1.2"))
    );
    assert_eq!(p.drains_started.len(), 1);
    assert_eq!(drains.len(), 1);
    // Still busy a minute later: nothing to do.
    let p = step(&s, &mut obs, &mut drains, t0 + Duration::from_secs(60));
    assert!(p.ipvs.is_empty());
    assert_eq!(p.still_draining, 1);
    // Connections gone: deleted.
    set_conns(&mut obs, &vip(), "10.0.1.2", 0, 0);
    let p = step(&s, &mut obs, &mut drains, t0 + Duration::from_secs(61));
    assert_eq!(
        p.ipvs,
        [Op::DeleteRealServer(
            vip(),
            RealServer::new(ip("10.0.1.2"), 8080).key
        )]
    );
    assert!(drains.is_empty());
    assert!(obs.converged(s.desired(), &s.policy()));
}

#[test]
fn draining_server_is_deleted_after_the_drain_period_even_if_busy() {
    let mut s = web_state(&["10.0.1.1", "10.0.1.2"], "TCP");
    let mut obs = Observed::default();
    let mut drains = DrainBook::new();
    let t0 = Instant::now();
    step(&s, &mut obs, &mut drains, t0);
    set_conns(&mut obs, &vip(), "10.0.1.2", 1, 0);
    s.apply_slice(
        &Slice::new("default", "web-1", "web")
            .port("http", "TCP", 8080)
            .ep("10.0.1.1", "node-b")
            .build(),
    );
    step(&s, &mut obs, &mut drains, t0);
    let period = s.config().drain_period;
    let p = step(
        &s,
        &mut obs,
        &mut drains,
        t0 + period - Duration::from_secs(1),
    );
    assert!(p.ipvs.is_empty());
    let p = step(&s, &mut obs, &mut drains, t0 + period);
    assert!(matches!(&p.ipvs[..], [Op::DeleteRealServer(_, r)] if r.addr == ip("10.0.1.2")));
}

#[test]
fn removed_idle_server_is_deleted_at_once() {
    let mut s = web_state(&["10.0.1.1", "10.0.1.2"], "TCP");
    let mut obs = Observed::default();
    let mut drains = DrainBook::new();
    let t0 = Instant::now();
    step(&s, &mut obs, &mut drains, t0);
    s.apply_slice(
        &Slice::new("default", "web-1", "web")
            .port("http", "TCP", 8080)
            .ep("10.0.1.1", "node-b")
            .build(),
    );
    let p = step(&s, &mut obs, &mut drains, t0);
    assert!(matches!(&p.ipvs[..], [Op::DeleteRealServer(_, r)] if r.addr == ip("10.0.1.2")));
}

#[test]
fn removed_udp_server_is_deleted_at_once_even_with_connections() {
    let mut s = web_state(&["10.0.1.1", "10.0.1.2"], "UDP");
    let mut obs = Observed::default();
    let mut drains = DrainBook::new();
    let t0 = Instant::now();
    step(&s, &mut obs, &mut drains, t0);
    let k = ServiceKey::udp(ip("10.96.0.10"), 80);
    set_conns(&mut obs, &k, "10.0.1.2", 0, 7);
    s.apply_slice(
        &Slice::new("default", "web-1", "web")
            .port("http", "UDP", 8080)
            .ep("10.0.1.1", "node-b")
            .build(),
    );
    let p = step(&s, &mut obs, &mut drains, t0);
    assert!(
        matches!(&p.ipvs[..], [Op::DeleteRealServer(kk, r)] if *kk == k && r.addr == ip("10.0.1.2"))
    );
    assert!(drains.is_empty());
}

#[test]
fn draining_server_that_returns_is_restored() {
    let mut s = web_state(&["10.0.1.1", "10.0.1.2"], "TCP");
    let mut obs = Observed::default();
    let mut drains = DrainBook::new();
    let t0 = Instant::now();
    step(&s, &mut obs, &mut drains, t0);
    set_conns(&mut obs, &vip(), "10.0.1.2", 1, 0);
    let one = Slice::new("default", "web-1", "web")
        .port("http", "TCP", 8080)
        .ep("10.0.1.1", "node-b");
    s.apply_slice(&one.build());
    step(&s, &mut obs, &mut drains, t0);
    assert_eq!(drains.len(), 1);
    s.apply_slice(
        &Slice::new("default", "web-1", "web")
            .port("http", "TCP", 8080)
            .ep("10.0.1.1", "node-b")
            .ep("10.0.1.2", "node-b")
            .build(),
    );
    let p = step(&s, &mut obs, &mut drains, t0);
    assert!(
        matches!(&p.ipvs[..], [Op::EditRealServer(_, r)] if r.key.addr == ip("10.0.1.2") && r.weight == 1)
    );
    assert!(drains.is_empty());
    assert!(obs.converged(s.desired(), &s.policy()));
}

#[test]
fn deleted_service_drains_its_servers_and_keeps_the_vip_until_done() {
    let mut s = web_state(&["10.0.1.1", "10.0.1.2"], "TCP");
    let mut obs = Observed::default();
    let mut drains = DrainBook::new();
    let t0 = Instant::now();
    step(&s, &mut obs, &mut drains, t0);
    set_conns(&mut obs, &vip(), "10.0.1.1", 4, 0);
    s.take_changes();
    s.delete_service("default", "web");
    let changes = s.take_changes();
    let p = plan_changes(s.desired(), &obs, &changes, &s.policy(), &mut drains, t0);
    obs.apply(&p).unwrap();
    // The idle server goes at once, the busy one drains, the VS and VIP stay.
    assert_eq!(p.ipvs.len(), 2);
    assert!(p.ipvs.iter().any(
        |o| matches!(o, Op::EditRealServer(_, r) if r.key.addr == ip("10.0.1.1") && r.weight == 0)
    ));
    assert!(p
        .ipvs
        .iter()
        .any(|o| matches!(o, Op::DeleteRealServer(_, r) if r.addr == ip("10.0.1.2"))));
    assert!(p.unbind.is_empty());
    assert!(obs.virtual_servers.contains_key(&vip()));
    assert!(obs.addresses.contains(&ip("10.96.0.10")));
    // Idle now: a partial plan with no new changes finishes the job.
    set_conns(&mut obs, &vip(), "10.0.1.1", 0, 0);
    let p = plan_changes(
        s.desired(),
        &obs,
        &Default::default(),
        &s.policy(),
        &mut drains,
        t0 + Duration::from_secs(5),
    );
    obs.apply(&p).unwrap();
    assert_eq!(p.ipvs, [Op::DeleteService(vip())]);
    assert_eq!(p.unbind, [ip("10.96.0.10")]);
    assert!(obs.virtual_servers.is_empty());
    assert!(obs.converged(s.desired(), &s.policy()));
}

#[test]
fn objects_that_are_not_ours_are_never_touched() {
    let cfg = Config {
        exclude_cidrs: vec!["10.200.0.0/16".parse().unwrap()],
        ..config()
    };
    let s = ProxyState::new(cfg, node());
    let mut obs = Observed::default();
    let foreign = [
        // Not on our dummy interface, not a node address.
        ServiceKey::tcp(ip("172.20.0.1"), 80),
        // A node address, but outside the NodePort range.
        ServiceKey::tcp(ip(NODE_IP), 8080),
        // On our dummy interface but inside excludeCIDRs.
        ServiceKey::tcp(ip("10.200.0.1"), 80),
        // A firewall mark without our base.
        ServiceKey::fwmark(ipvs::AddressFamily::Inet, 0x4000),
    ];
    for k in foreign {
        let mut rs = std::collections::BTreeMap::new();
        let r = RealServer::new(ip("10.9.9.9"), 80);
        rs.insert(r.key, r);
        obs.virtual_servers.insert(
            k,
            ObservedVirtualServer {
                server: VirtualServer::new(k),
                real_servers: rs,
            },
        );
    }
    obs.addresses.insert(ip("10.200.0.1"));
    // Ours: on the dummy interface, and a stale NodePort.
    let stale = [
        ServiceKey::tcp(ip("10.96.5.5"), 80),
        ServiceKey::udp(ip(NODE_IP), 30053),
    ];
    for k in stale {
        obs.virtual_servers.insert(
            k,
            ObservedVirtualServer {
                server: VirtualServer::new(k),
                real_servers: Default::default(),
            },
        );
    }
    obs.addresses.insert(ip("10.96.5.5"));
    let mut drains = DrainBook::new();
    let p = plan(s.desired(), &obs, &s.policy(), &mut drains, Instant::now());
    let deleted: BTreeSet<ServiceKey> = p
        .ipvs
        .iter()
        .map(|o| match o {
            Op::DeleteService(k) => *k,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(deleted, stale.into_iter().collect());
    assert_eq!(p.unbind, [ip("10.96.5.5")]);
}

#[test]
fn changed_scheduler_edits_the_service_in_place() {
    let mut s = web_state(&["10.0.1.1"], "TCP");
    let mut obs = Observed::default();
    let mut drains = DrainBook::new();
    let now = Instant::now();
    step(&s, &mut obs, &mut drains, now);
    s.apply_service(
        &Svc::new("default", "web", "10.96.0.10")
            .port("http", "TCP", 80)
            .annotation("ipvs-proxy.io/scheduler", "wrr")
            .build(),
    );
    let p = step(&s, &mut obs, &mut drains, now);
    assert!(matches!(&p.ipvs[..], [Op::EditService(v)] if v.scheduler == "wrr"));
}

#[test]
fn policy_owns_our_fwmarks_and_node_ports() {
    let policy = PlanPolicy::new(&config(), &node());
    let obs = Observed::default();
    let mark = proxy_core::fwmark::for_node_port(
        proxy_core::fwmark::DEFAULT_BASE,
        ipvs::Protocol::Tcp,
        30080,
    )
    .unwrap();
    assert!(policy.owns(&ServiceKey::fwmark(ipvs::AddressFamily::Inet, mark), &obs));
    assert!(policy.owns(&ServiceKey::tcp(ip(NODE_IP), 30080), &obs));
    assert!(!policy.owns(&ServiceKey::tcp(ip(NODE_IP), 22), &obs));
    assert!(!policy.owns(&ServiceKey::tcp(ip("10.96.0.10"), 80), &obs));
}

#[test]
fn dry_run_renders_ipvsadm_save_format() {
    let mut s = ProxyState::new(config(), node());
    s.apply_service(
        &Svc::new("default", "api", "10.96.0.1")
            .cluster_ips(&["10.96.0.1", "fd00:96::1"])
            .port("https", "TCP", 443)
            .affinity(Some(60))
            .build(),
    );
    s.apply_service(
        &Svc::new("kube-system", "dns", "10.96.0.53")
            .port("dns", "UDP", 53)
            .annotation("ipvs-proxy.io/scheduler", "sh")
            .annotation("ipvs-proxy.io/scheduler-flags", "sh-port")
            .build(),
    );
    s.apply_slice(
        &Slice::new("default", "api-1", "api")
            .port("https", "TCP", 6443)
            .ep("10.0.0.6", "node-b")
            .ep("10.0.0.5", "node-b")
            .build(),
    );
    s.apply_slice(
        &Slice::new("default", "api-6", "api")
            .address_type("IPv6")
            .port("https", "TCP", 6443)
            .ep("fd00::5", "node-b")
            .build(),
    );
    let want = "\
-A -t 10.96.0.1:443 -s rr -p 60
-a -t 10.96.0.1:443 -r 10.0.0.5:6443 -m -w 1
-a -t 10.96.0.1:443 -r 10.0.0.6:6443 -m -w 1
-A -t [fd00:96::1]:443 -s rr -p 60
-a -t [fd00:96::1]:443 -r [fd00::5]:6443 -m -w 1
-A -u 10.96.0.53:53 -s sh -b sh-port
";
    assert_eq!(render_ipvsadm_save(s.desired()), want);
}

#[test]
fn dropped_external_ip_on_a_node_address_is_removed() {
    let mut s = ProxyState::new(config(), node());
    let svc = Svc::new("default", "web", "10.96.0.10")
        .port("http", "TCP", 80)
        .external_ip(NODE_IP);
    s.apply_service(&svc.build());
    let mut obs = Observed::default();
    let mut drains = DrainBook::new();
    let now = Instant::now();
    step(&s, &mut obs, &mut drains, now);
    let k = ServiceKey::tcp(ip(NODE_IP), 80);
    assert!(obs.virtual_servers.contains_key(&k));
    s.apply_service(
        &Svc::new("default", "web", "10.96.0.10")
            .port("http", "TCP", 80)
            .build(),
    );
    let p = step(&s, &mut obs, &mut drains, now);
    assert_eq!(p.ipvs, [Op::DeleteService(k)]);
    assert!(obs.converged(s.desired(), &s.policy()));
}

#[test]
fn drains_of_servers_removed_behind_our_back_are_forgotten() {
    let mut s = web_state(&["10.0.1.1", "10.0.1.2"], "TCP");
    let mut obs = Observed::default();
    let mut drains = DrainBook::new();
    let t0 = Instant::now();
    step(&s, &mut obs, &mut drains, t0);
    set_conns(&mut obs, &vip(), "10.0.1.2", 1, 0);
    s.apply_slice(
        &Slice::new("default", "web-1", "web")
            .port("http", "TCP", 8080)
            .ep("10.0.1.1", "node-b")
            .build(),
    );
    s.take_changes();
    step(&s, &mut obs, &mut drains, t0);
    assert_eq!(drains.len(), 1);
    // Someone deletes the draining server (ipvsadm -d): a partial plan with
    // no changes forgets it and plans nothing.
    let rs = RealServer::new(ip("10.0.1.2"), 8080).key;
    obs.virtual_servers
        .get_mut(&vip())
        .unwrap()
        .real_servers
        .remove(&rs);
    let p = plan_changes(
        s.desired(),
        &obs,
        &Default::default(),
        &s.policy(),
        &mut drains,
        t0,
    );
    assert!(p.is_empty());
    assert!(drains.is_empty());
}

#[test]
fn local_node_forwarding_reported_by_the_kernel_is_not_a_difference() {
    // A host-network endpoint on this node: the kernel reports LOCALNODE.
    let s = web_state(&[NODE_IP], "TCP");
    let mut obs = Observed::default();
    let mut drains = DrainBook::new();
    let now = Instant::now();
    step(&s, &mut obs, &mut drains, now);
    for rs in obs
        .virtual_servers
        .get_mut(&vip())
        .unwrap()
        .real_servers
        .values_mut()
    {
        rs.forward = ipvs::ForwardMethod::Local;
    }
    assert!(plan(s.desired(), &obs, &s.policy(), &mut drains, now).is_empty());
    assert!(obs.converged(s.desired(), &s.policy()));
    // A real difference (weight) is still corrected.
    for rs in obs
        .virtual_servers
        .get_mut(&vip())
        .unwrap()
        .real_servers
        .values_mut()
    {
        rs.weight = 5;
    }
    let p = plan(s.desired(), &obs, &s.policy(), &mut drains, now);
    assert!(matches!(&p.ipvs[..], [Op::EditRealServer(_, r)] if r.weight == 1));
}

#[test]
fn after_a_restart_a_busy_draining_server_starts_a_new_drain_period() {
    let mut s = web_state(&["10.0.1.1", "10.0.1.2", "10.0.1.3"], "TCP");
    let mut obs = Observed::default();
    let mut drains = DrainBook::new();
    let t0 = Instant::now();
    step(&s, &mut obs, &mut drains, t0);
    set_conns(&mut obs, &vip(), "10.0.1.2", 1, 0);
    set_conns(&mut obs, &vip(), "10.0.1.3", 1, 0);
    s.apply_slice(
        &Slice::new("default", "web-1", "web")
            .port("http", "TCP", 8080)
            .ep("10.0.1.1", "node-b")
            .build(),
    );
    step(&s, &mut obs, &mut drains, t0);
    assert_eq!(drains.len(), 2);
    // A restart: the kernel keeps both at weight 0, the drain book is new.
    let period = s.config().drain_period;
    let t1 = t0 + period - Duration::from_secs(1);
    let mut drains = DrainBook::new();
    set_conns(&mut obs, &vip(), "10.0.1.3", 0, 0);
    let p = step(&s, &mut obs, &mut drains, t1);
    // The idle one goes at once; the busy one is not deleted at t0 + period
    // but drains again from t1, without a new weight edit.
    assert!(matches!(&p.ipvs[..], [Op::DeleteRealServer(_, r)] if r.addr == ip("10.0.1.3")));
    assert!(p.drains_started.is_empty());
    assert_eq!(drains.len(), 1);
    let p = step(&s, &mut obs, &mut drains, t0 + period);
    assert!(p.ipvs.is_empty());
    let p = step(
        &s,
        &mut obs,
        &mut drains,
        t1 + period - Duration::from_secs(1),
    );
    assert!(p.ipvs.is_empty());
    let p = step(&s, &mut obs, &mut drains, t1 + period);
    assert!(matches!(&p.ipvs[..], [Op::DeleteRealServer(_, r)] if r.addr == ip("10.0.1.2")));
    assert!(obs.converged(s.desired(), &s.policy()));
}

#[test]
fn external_ip_on_a_node_address_left_by_a_previous_run_is_not_adopted() {
    let svc = || Svc::new("default", "web", "10.96.0.10").port("http", "TCP", 80);
    let mut first = ProxyState::new(config(), node());
    first.apply_service(&svc().external_ip(NODE_IP).build());
    let mut obs = Observed::default();
    let mut drains = DrainBook::new();
    let now = Instant::now();
    step(&first, &mut obs, &mut drains, now);
    let k = ServiceKey::tcp(ip(NODE_IP), 80);
    let before = obs.virtual_servers.get(&k).cloned();
    assert!(before.is_some());
    // A new process that never programmed it: port 80 on a node address is
    // outside the NodePort range and the address is not on our dummy
    // interface, so the virtual server is not ours and stays untouched.
    let mut second = ProxyState::new(config(), node());
    second.apply_service(&svc().build());
    step(&second, &mut obs, &mut drains, now);
    assert_eq!(obs.virtual_servers.get(&k).cloned(), before);
    assert!(obs.converged(second.desired(), &second.policy()));
}

/// What kube-proxy's IPVS mode leaves for `web` (pkg/proxy/ipvs/proxier.go
/// syncService/syncEndpoint): scheduler rr, netmask /32, the kernel's HASHED
/// flag, real servers masqueraded at weight 1; here also the ClientIP
/// affinity it had before the Service changed, a real server it was
/// draining (weight 0) that is wanted again, one no longer wanted, and a
/// Service deleted while no proxy ran.
fn kube_proxy_left() -> Observed {
    let mut web = VirtualServer::new(vip());
    web.flags = ServiceFlags::HASHED | ServiceFlags::PERSISTENT;
    web.timeout = 10800;
    let mut rs2 = RealServer::new(ip("10.0.1.2"), 8080).weight(0);
    rs2.conns.active = 1;
    let mut rs3 = RealServer::new(ip("10.0.1.3"), 8080).weight(1);
    rs3.conns.active = 2;
    let stale_key = ServiceKey::tcp(ip("10.96.0.99"), 80);
    let mut stale = VirtualServer::new(stale_key);
    stale.flags = ServiceFlags::HASHED;
    Observed::from_dump(
        vec![
            (
                web,
                vec![RealServer::new(ip("10.0.1.1"), 8080).weight(1), rs2, rs3],
            ),
            (stale, vec![RealServer::new(ip("10.0.1.5"), 8080).weight(1)]),
        ],
        [ip("10.96.0.10"), ip("10.96.0.99")].into_iter().collect(),
        None,
    )
}

#[test]
fn kube_proxys_virtual_servers_are_adopted_and_edited_in_place() {
    let s = web_state(&["10.0.1.1", "10.0.1.2"], "TCP");
    let mut obs = kube_proxy_left();
    let mut drains = DrainBook::new();
    let now = Instant::now();
    let p = step(&s, &mut obs, &mut drains, now);
    let stale_key = ServiceKey::tcp(ip("10.96.0.99"), 80);
    // Nothing of `web` is deleted or added: its connections keep their
    // entries. What differs is edited.
    assert!(
        !p.ipvs.iter().any(|op| matches!(
            op,
            Op::AddService(_) | Op::AddRealServer(..) | Op::DeleteRealServer(..)
        )),
        "{:#?}",
        p.ipvs
    );
    assert!(
        matches!(&p.ipvs[0], Op::EditService(v) if v.key == vip()
            && !v.flags.contains(ServiceFlags::PERSISTENT) && v.scheduler == "rr"),
        "{:#?}",
        p.ipvs
    );
    assert!(p.ipvs.iter().any(|op| matches!(op,
        Op::EditRealServer(k, r) if *k == vip() && r.key.addr == ip("10.0.1.2") && r.weight == 1)));
    assert!(p.ipvs.iter().any(|op| matches!(op,
        Op::EditRealServer(k, r) if *k == vip() && r.key.addr == ip("10.0.1.3") && r.weight == 0)));
    assert_eq!(p.drains_started.len(), 1);
    // The Service nobody wants any more goes, with its address.
    assert!(p.ipvs.contains(&Op::DeleteService(stale_key)));
    assert!(p.bind.is_empty());
    assert_eq!(p.unbind, [ip("10.96.0.99")]);
    assert_eq!(p.ipvs.len(), 4, "{:#?}", p.ipvs);
    // Once the drained server's connections end, the node has converged.
    obs.virtual_servers
        .get_mut(&vip())
        .unwrap()
        .real_servers
        .values_mut()
        .for_each(|r| r.conns = Default::default());
    step(&s, &mut obs, &mut drains, now);
    assert!(obs.converged(s.desired(), &s.policy()));
}

#[test]
fn kube_proxys_matching_virtual_servers_need_no_operation() {
    let s = web_state(&["10.0.1.1", "10.0.1.2"], "TCP");
    let mut web = VirtualServer::new(vip());
    web.flags = ServiceFlags::HASHED;
    let obs = Observed::from_dump(
        vec![(
            web,
            vec![
                RealServer::new(ip("10.0.1.1"), 8080).weight(1),
                RealServer::new(ip("10.0.1.2"), 8080).weight(1),
            ],
        )],
        [ip("10.96.0.10")].into_iter().collect(),
        None,
    );
    let p = plan(
        s.desired(),
        &obs,
        &s.policy(),
        &mut DrainBook::new(),
        Instant::now(),
    );
    assert!(
        p.ipvs.is_empty() && p.bind.is_empty() && p.unbind.is_empty(),
        "{p:#?}"
    );
}
