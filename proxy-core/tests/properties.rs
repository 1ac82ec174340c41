//! Property tests (issue 3 item 8) over random clusters and change sequences:
//! incremental == from scratch; applying plan(d, o) to o gives d; plan of a
//! converged node is empty; partial plans after changes converge too.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use proptest::prelude::*;
use proxy_core::{desired_from_scratch, plan, plan_changes, DrainBook, Observed, ProxyState};

#[derive(Debug, Clone)]
struct SvcSpec {
    name: u8,
    ip: u8,
    v6: bool,
    ports: Vec<(u8, u8)>, // (port index into pool, protocol index)
    kind: u8,             // 0 ClusterIP, 1 NodePort, 2 LoadBalancer
    etp_local: bool,
    itp_local: bool,
    affinity: bool,
    external: Option<u8>,
    lb_ip: Option<u8>,
    created: u8,
    extra: u8, // bit 0: publishNotReadyAddresses, bit 1: source range, bit 2: scheduler annotation
}

#[derive(Debug, Clone)]
struct SliceSpec {
    name: u8,
    svc: u8,
    v6: bool,
    port_shift: u16,
    eps: Vec<(u8, bool, u8)>, // (ip, local, condition kind)
    hints: u8,                // 0 none, 1 zone hints, 2 zone and node hints
}

const PROTOS: [&str; 3] = ["TCP", "UDP", "SCTP"];
const PORTS: [i32; 3] = [80, 443, 53];

fn svc_spec() -> impl Strategy<Value = SvcSpec> {
    (
        0u8..6,
        0u8..5,
        any::<bool>(),
        prop::collection::vec((0u8..3, 0u8..3), 0..3),
        0u8..3,
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        prop::option::of(0u8..3),
        prop::option::of(0u8..3),
        (0u8..4, 0u8..8),
    )
        .prop_map(
            |(
                name,
                ip,
                v6,
                ports,
                kind,
                etp_local,
                itp_local,
                affinity,
                external,
                lb_ip,
                (created, extra),
            )| {
                SvcSpec {
                    name,
                    ip,
                    v6,
                    ports,
                    kind,
                    etp_local,
                    itp_local,
                    affinity,
                    external,
                    lb_ip,
                    created,
                    extra,
                }
            },
        )
}

fn slice_spec() -> impl Strategy<Value = SliceSpec> {
    (
        0u8..10,
        0u8..6,
        any::<bool>(),
        0u16..2,
        prop::collection::vec((0u8..6, any::<bool>(), 0u8..4), 0..5),
        0u8..3,
    )
        .prop_map(|(name, svc, v6, port_shift, eps, hints)| SliceSpec {
            name,
            svc,
            v6,
            port_shift,
            eps,
            hints,
        })
}

fn build_svc(s: &SvcSpec) -> Service {
    let ip4 = format!("10.96.0.{}", s.ip);
    let name = format!("s{}", s.name);
    let mut b = Svc::new("ns", &name, &ip4).created(i64::from(s.created));
    if s.v6 {
        b = b.cluster_ips(&[&ip4, &format!("fd00:96::{}", s.ip)]);
    }
    b = match s.kind {
        1 => b.type_("NodePort"),
        2 => b.type_("LoadBalancer"),
        _ => b,
    };
    for (i, (p, proto)) in s.ports.iter().enumerate() {
        b = b.port(
            &format!("p{p}"),
            PROTOS[usize::from(*proto)],
            PORTS[usize::from(*p)],
        );
        if s.kind > 0 {
            b = b.node_port(30000 + i32::from(s.name) * 10 + i as i32);
        }
    }
    if let Some(e) = s.external {
        b = b.external_ip(&format!("198.51.100.{e}"));
    }
    if s.kind == 2 {
        if let Some(l) = s.lb_ip {
            b = b.lb_ingress(&format!("203.0.113.{l}"), None);
        }
        if s.etp_local {
            b = b.etp_local(Some(31000 + i32::from(s.name)));
        }
    } else if s.etp_local && s.kind == 1 {
        b = b.etp_local(None);
    }
    if s.itp_local {
        b = b.itp_local();
    }
    if s.affinity {
        b = b.affinity(Some(100));
    }
    if s.extra & 1 != 0 {
        b = b.publish_not_ready();
    }
    if s.extra & 2 != 0 {
        b = b.source_range("192.168.0.0/24");
    }
    if s.extra & 4 != 0 {
        b = b.annotation("ipvs-proxy.io/scheduler", "sh");
    }
    b.build()
}

fn build_slice(s: &SliceSpec) -> EndpointSlice {
    let mut b = Slice::new("ns", &format!("sl{}", s.name), &format!("s{}", s.svc));
    if s.v6 {
        b = b.address_type("IPv6");
    }
    for (p, proto) in [(0usize, 0usize), (1, 1), (2, 2), (0, 1)] {
        b = b.port(
            &format!("p{p}"),
            PROTOS[proto],
            8000 + PORTS[p] + i32::from(s.port_shift),
        );
    }
    for (ip, local, cond) in &s.eps {
        let addr = if s.v6 {
            format!("fd00:1::{ip}")
        } else {
            format!("10.0.1.{ip}")
        };
        let node = if *local { NODE } else { "node-b" };
        b = match cond {
            0 | 1 => b.ep(&addr, node),
            2 => b.ep_cond(&addr, node, Some(false), Some(true), Some(true)),
            _ => b.ep_cond(&addr, node, Some(false), Some(false), Some(false)),
        };
        if s.hints > 0 {
            b = b.hints(&[if ip % 2 == 0 { "zone-a" } else { "zone-b" }]);
        }
        if s.hints > 1 {
            b = b.node_hints(&[node]);
        }
    }
    b.build()
}

#[derive(Debug, Clone)]
enum Change {
    ApplySvc(SvcSpec),
    DeleteSvc(u8),
    ApplySlice(SliceSpec),
    DeleteSlice(u8),
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        3 => svc_spec().prop_map(Change::ApplySvc),
        1 => (0u8..6).prop_map(Change::DeleteSvc),
        4 => slice_spec().prop_map(Change::ApplySlice),
        1 => (0u8..10).prop_map(Change::DeleteSlice),
    ]
}

/// The object set the change sequence leaves, as the API server would hold it.
#[derive(Default, Clone)]
struct World {
    svcs: BTreeMap<u8, Service>,
    slices: BTreeMap<u8, EndpointSlice>,
}

impl World {
    fn step(&mut self, s: &mut ProxyState, c: &Change) {
        match c {
            Change::ApplySvc(x) => {
                let v = build_svc(x);
                s.apply_service(&v);
                self.svcs.insert(x.name, v);
            }
            Change::DeleteSvc(n) => {
                s.delete_service("ns", &format!("s{n}"));
                self.svcs.remove(n);
            }
            Change::ApplySlice(x) => {
                let v = build_slice(x);
                s.apply_slice(&v);
                self.slices.insert(x.name, v);
            }
            Change::DeleteSlice(n) => {
                s.delete_slice("ns", &format!("sl{n}"));
                self.slices.remove(n);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn incremental_equals_from_scratch(changes in prop::collection::vec(change(), 1..40)) {
        let mut s = ProxyState::new(config(), node());
        let mut w = World::default();
        for c in &changes {
            w.step(&mut s, c);
            let scratch = desired_from_scratch(&config(), &node(), w.svcs.values(), w.slices.values());
            prop_assert_eq!(s.desired(), &scratch);
            // The no-local-endpoint counts, kept per event, match a relist.
            let mut cold = ProxyState::new(config(), node());
            cold.replace_all(w.svcs.values(), w.slices.values());
            prop_assert_eq!(
                (s.no_local_endpoints_internal(), s.no_local_endpoints_external()),
                (cold.no_local_endpoints_internal(), cold.no_local_endpoints_external())
            );
        }
    }

    #[test]
    fn replace_all_equals_from_scratch(
        a in prop::collection::vec(change(), 0..30),
        b in prop::collection::vec(change(), 0..30),
    ) {
        // A relist onto a cold state and onto a state holding other objects.
        let mut s = ProxyState::new(config(), node());
        let mut wa = World::default();
        for c in &a { wa.step(&mut s, c); }
        let mut wb = World::default();
        let mut scratch_state = ProxyState::new(config(), node());
        for c in &b { wb.step(&mut scratch_state, c); }
        let want = desired_from_scratch(&config(), &node(), wb.svcs.values(), wb.slices.values());
        let mut cold = ProxyState::new(config(), node());
        cold.replace_all(wb.svcs.values(), wb.slices.values());
        prop_assert_eq!(cold.desired(), &want);
        s.replace_all(wb.svcs.values(), wb.slices.values());
        prop_assert_eq!(s.desired(), &want);
        prop_assert_eq!(s.rejections(), cold.rejections());
    }

    #[test]
    fn plan_applied_to_observed_yields_desired(
        a in prop::collection::vec(change(), 0..25),
        b in prop::collection::vec(change(), 0..25),
        busy in prop::collection::vec(any::<bool>(), 64),
    ) {
        let t0 = Instant::now();
        let mut s = ProxyState::new(config(), node());
        let mut w = World::default();
        for c in &a { w.step(&mut s, c); }
        let policy = s.policy();
        let mut obs = Observed::default();
        let mut drains = DrainBook::new();
        let p = plan(s.desired(), &obs, &policy, &mut drains, t0);
        obs.apply(&p).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(obs.converged(s.desired(), &policy));
        // plan(d, d) is empty.
        prop_assert!(plan(s.desired(), &obs, &policy, &mut drains, t0).is_empty());

        // Some real servers carry connections, then the cluster changes.
        let mut i = 0;
        for v in obs.virtual_servers.values_mut() {
            for r in v.real_servers.values_mut() {
                if busy[i % busy.len()] { r.conns.active = 1; }
                i += 1;
            }
        }
        s.take_changes();
        for c in &b { w.step(&mut s, c); }
        let changes = s.take_changes();
        // Incremental plan of only the changes.
        let p = plan_changes(s.desired(), &obs, &changes, &policy, &mut drains, t0);
        obs.apply(&p).map_err(|e| TestCaseError::fail(e.to_string()))?;
        // Draining servers keep the node from converging until they are idle;
        // a full plan must agree that nothing else is left to do.
        let p = plan(s.desired(), &obs, &policy, &mut drains, t0);
        prop_assert!(p.ipvs.iter().all(|op| matches!(op, ipvs::Op::DeleteRealServer(..) | ipvs::Op::DeleteService(..) | ipvs::Op::EditRealServer(..))), "{:?}", p);
        prop_assert!(p.bind.is_empty() && p.filter.is_empty(), "{:?}", p);
        obs.apply(&p).map_err(|e| TestCaseError::fail(e.to_string()))?;
        // After the drain period everything undesired is gone.
        let later = t0 + policy.drain_period + Duration::from_secs(1);
        let p = plan_changes(s.desired(), &obs, &Default::default(), &policy, &mut drains, later);
        obs.apply(&p).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(obs.converged(s.desired(), &policy), "not converged: {:?}", plan(s.desired(), &obs, &policy, &mut drains.clone(), later));
        prop_assert!(drains.is_empty());
        prop_assert!(plan(s.desired(), &obs, &policy, &mut drains, later).is_empty());
    }

    #[test]
    fn arbitrary_strings_never_panic(
        ip in ".{0,20}", port in any::<i32>(), proto in ".{0,6}", np in any::<i32>(),
        ep in ".{0,20}", addr_type in ".{0,6}", sport in any::<i32>(),
    ) {
        let mut svc = Svc::new("ns", "x", &ip).port("p", &proto, port).node_port(np).build();
        if let Some(spec) = svc.spec.as_mut() {
            spec.health_check_node_port = Some(np);
            spec.external_traffic_policy = Some("Local".into());
            spec.load_balancer_source_ranges = Some(vec![ip.clone()]);
        }
        let slice = Slice::new("ns", "x-1", "x")
            .address_type(&addr_type)
            .port("p", &proto, sport)
            .raw_ep(vec![ep.clone()])
            .build();
        let mut s = ProxyState::new(config(), node());
        s.apply_service(&svc);
        s.apply_slice(&slice);
        let _ = s.rejections();
        let _ = proxy_core::render_ipvsadm_save(s.desired());
        s.delete_service("ns", "x");
        s.delete_slice("ns", "x-1");
        prop_assert!(s.desired().virtual_servers.is_empty());
        prop_assert!(s.desired().addresses.is_empty());
        prop_assert!(s.desired().filter.entries.is_empty());
    }
}
