//! Services and EndpointSlices into desired state (proxy-core), structure
//! aware: the input is an `arbitrary` shape (a sequence of events over
//! objects whose every field is either a value from a pool of meaningful
//! ones or an arbitrary one), built into the JSON the API server sends and
//! deserialized by k8s-openapi, as the agent's watch does.
//!
//! Checks, besides no panic: after the events the incremental state equals
//! the from-scratch computation and a cold relist of the surviving objects;
//! a plan from an empty node applied to it converges, and then plans
//! nothing; the desired state renders as `ipvsadm -Sn` rules that
//! `ipvs::rules` reads back.
#![no_main]

use std::collections::BTreeMap;
use std::time::Instant;

use arbitrary::Arbitrary;
use ipvs_proxy_fuzz as _; // the allocation guard
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use libfuzzer_sys::fuzz_target;
use proxy_core::{
    desired_from_scratch, plan, Config, DrainBook, IpFamily, Limits, LocalDetect, NodeFacts,
    NodePortAddresses, Observed, ProxyState,
};
use serde_json::{json, Map, Value};

/// A string: mostly from a pool of values the code gives meaning to.
#[derive(Arbitrary, Debug)]
enum S {
    Pick(u8),
    Raw(String),
}

/// A number: mostly from a pool.
#[derive(Arbitrary, Debug)]
enum N {
    Pick(u8),
    Raw(i64),
}

fn s(v: &S, pool: &[&str]) -> Value {
    match v {
        S::Pick(i) => Value::from(pool[usize::from(*i) % pool.len()]),
        S::Raw(r) => Value::from(r.clone()),
    }
}

fn n(v: &N, pool: &[i64]) -> Value {
    match v {
        N::Pick(i) => Value::from(pool[usize::from(*i) % pool.len()]),
        N::Raw(r) => Value::from(*r),
    }
}

const NAMESPACES: &[&str] = &["ns", "ns", "default", ""];
const NAMES: &[&str] = &["s0", "s1", "s2", "s3"];
const SLICE_NAMES: &[&str] = &["sl0", "sl1", "sl2", "sl3", "sl4", "sl5"];
const IPS: &[&str] = &[
    "10.96.0.1",
    "10.96.0.2",
    "10.96.0.1",
    "fd00:96::1",
    "fd00:96::2",
    "None",
    "",
    "0.0.0.0",
    "::",
    "192.168.0.10",
    "fd00::10",
    "127.0.0.1",
    "::1",
    "10.96.0.256",
    "10.96.0.1/32",
    "::ffff:10.96.0.3",
    "224.0.0.1",
    "169.254.0.1",
    "010.096.000.001",
];
const EP_IPS: &[&str] = &[
    "10.0.1.1",
    "10.0.1.2",
    "10.0.1.1",
    "fd00:1::1",
    "fd00:1::2",
    "192.168.0.10",
    "127.0.0.1",
    "",
    "10.0.1.x",
    "::ffff:10.0.1.1",
    "0.0.0.0",
    "fe80::1",
    "10.0.1.3",
];
const EXT_IPS: &[&str] = &[
    "198.51.100.1",
    "198.51.100.2",
    "2001:db8::1",
    "192.168.0.10",
    "10.96.0.1",
    "",
    "junk",
];
const TYPES: &[&str] = &[
    "ClusterIP",
    "NodePort",
    "LoadBalancer",
    "ExternalName",
    "",
    "clusterip",
];
const PROTOCOLS: &[&str] = &["TCP", "UDP", "SCTP", "TCP", "tcp", ""];
const PORTS: &[i64] = &[
    80, 443, 53, 80, 0, 65535, 65536, -1, 8080, 30000, 30001, 32767, 32768,
];
const NODE_PORTS: &[i64] = &[30000, 30001, 30002, 32767, 0, -1, 65536, 80, 30000];
const PORT_NAMES: &[&str] = &["p0", "p1", "", "p0", "http", "P0"];
const POLICIES: &[&str] = &["Cluster", "Local", "", "local"];
const FAMILIES: &[&str] = &["IPv4", "IPv6", "", "IPv5"];
const FAMILY_POLICIES: &[&str] = &["SingleStack", "PreferDualStack", "RequireDualStack", ""];
const ADDRESS_TYPES: &[&str] = &["IPv4", "IPv6", "FQDN", "", "IPv4"];
const NODES: &[&str] = &["node-a", "node-b", "", "node-a"];
const ZONES: &[&str] = &["zone-a", "zone-b", ""];
const RANGES: &[&str] = &[
    "192.168.0.0/24",
    "0.0.0.0/0",
    "::/0",
    "10.0.0.1",
    "garbage",
    "2001:db8::/32",
];
const SCHEDULERS: &[&str] = &["sh", "rr", "mh", "wrr", "bogus", ""];
const SCHED_FLAGS: &[&str] = &[
    "sh-fallback",
    "sh-port",
    "sh-fallback,sh-port",
    "flag-1",
    "nope",
    "",
];
const IP_MODES: &[&str] = &["VIP", "Proxy", ""];
const TIMES: &[&str] = &[
    "2024-01-01T00:00:00Z",
    "2024-01-02T00:00:00Z",
    "2024-01-01T00:00:00Z",
];
const PROXY_NAMES: &[&str] = &["", "other-proxy"];

#[derive(Arbitrary, Debug)]
struct PortIn {
    name: Option<S>,
    protocol: Option<S>,
    port: N,
    target_port: Option<N>,
    node_port: Option<N>,
}

#[derive(Arbitrary, Debug)]
struct SvcIn {
    namespace: S,
    name: S,
    created: Option<S>,
    proxy_name: Option<S>,
    headless_label: bool,
    scheduler: Option<S>,
    scheduler_flags: Option<S>,
    type_: Option<S>,
    cluster_ip: Option<S>,
    cluster_ips: Option<Vec<S>>,
    ip_families: Option<Vec<S>>,
    ip_family_policy: Option<S>,
    ports: Option<Vec<PortIn>>,
    external_ips: Option<Vec<S>>,
    lb_ip: Option<S>,
    lb_source_ranges: Option<Vec<S>>,
    lb_ingress: Option<Vec<(S, Option<S>)>>,
    etp: Option<S>,
    itp: Option<S>,
    health_check_node_port: Option<N>,
    affinity: Option<(bool, Option<N>)>,
    publish_not_ready: Option<bool>,
}

#[derive(Arbitrary, Debug)]
struct EndpointIn {
    addresses: Vec<S>,
    ready: Option<bool>,
    serving: Option<bool>,
    terminating: Option<bool>,
    node: Option<S>,
    zone: Option<S>,
    zone_hints: Option<Vec<S>>,
    node_hints: Option<Vec<S>>,
}

#[derive(Arbitrary, Debug)]
struct SliceIn {
    namespace: S,
    name: S,
    service: Option<S>,
    address_type: S,
    ports: Option<Vec<PortIn>>,
    endpoints: Vec<EndpointIn>,
}

#[derive(Arbitrary, Debug)]
enum Event {
    ApplyService(Box<SvcIn>),
    DeleteService(S, S),
    ApplySlice(Box<SliceIn>),
    DeleteSlice(S, S),
    /// Swap to the other node facts.
    SetNode(bool),
}

#[derive(Arbitrary, Debug)]
struct Input {
    families: u8,
    local_detect: bool,
    masquerade_all: bool,
    node_port_primary: bool,
    small_limits: bool,
    scheduler: u8,
    events: Vec<Event>,
}

fn insert(m: &mut Map<String, Value>, k: &str, v: Option<Value>) {
    if let Some(v) = v {
        m.insert(k.to_owned(), v);
    }
}

fn list(v: &Option<Vec<S>>, pool: &[&str]) -> Option<Value> {
    v.as_ref()
        .map(|v| Value::Array(v.iter().map(|x| s(x, pool)).collect()))
}

fn port_json(p: &PortIn, with_node_port: bool) -> Value {
    let mut m = Map::new();
    insert(&mut m, "name", p.name.as_ref().map(|x| s(x, PORT_NAMES)));
    insert(
        &mut m,
        "protocol",
        p.protocol.as_ref().map(|x| s(x, PROTOCOLS)),
    );
    m.insert("port".into(), n(&p.port, PORTS));
    insert(
        &mut m,
        "targetPort",
        p.target_port.as_ref().map(|x| n(x, PORTS)),
    );
    if with_node_port {
        insert(
            &mut m,
            "nodePort",
            p.node_port.as_ref().map(|x| n(x, NODE_PORTS)),
        );
    }
    Value::Object(m)
}

fn service_json(v: &SvcIn) -> Value {
    let mut labels = Map::new();
    if let Some(p) = &v.proxy_name {
        labels.insert(
            "service.kubernetes.io/service-proxy-name".into(),
            s(p, PROXY_NAMES),
        );
    }
    if v.headless_label {
        labels.insert("service.kubernetes.io/headless".into(), Value::from(""));
    }
    let mut annotations = Map::new();
    insert(
        &mut annotations,
        "ipvs-proxy.io/scheduler",
        v.scheduler.as_ref().map(|x| s(x, SCHEDULERS)),
    );
    insert(
        &mut annotations,
        "ipvs-proxy.io/scheduler-flags",
        v.scheduler_flags.as_ref().map(|x| s(x, SCHED_FLAGS)),
    );
    let mut meta = Map::new();
    meta.insert("namespace".into(), s(&v.namespace, NAMESPACES));
    meta.insert("name".into(), s(&v.name, NAMES));
    insert(
        &mut meta,
        "creationTimestamp",
        v.created.as_ref().map(|x| s(x, TIMES)),
    );
    meta.insert("labels".into(), Value::Object(labels));
    meta.insert("annotations".into(), Value::Object(annotations));
    let mut spec = Map::new();
    insert(&mut spec, "type", v.type_.as_ref().map(|x| s(x, TYPES)));
    insert(
        &mut spec,
        "clusterIP",
        v.cluster_ip.as_ref().map(|x| s(x, IPS)),
    );
    insert(&mut spec, "clusterIPs", list(&v.cluster_ips, IPS));
    insert(&mut spec, "ipFamilies", list(&v.ip_families, FAMILIES));
    insert(
        &mut spec,
        "ipFamilyPolicy",
        v.ip_family_policy.as_ref().map(|x| s(x, FAMILY_POLICIES)),
    );
    insert(
        &mut spec,
        "ports",
        v.ports
            .as_ref()
            .map(|ps| Value::Array(ps.iter().map(|p| port_json(p, true)).collect())),
    );
    insert(&mut spec, "externalIPs", list(&v.external_ips, EXT_IPS));
    insert(
        &mut spec,
        "loadBalancerIP",
        v.lb_ip.as_ref().map(|x| s(x, EXT_IPS)),
    );
    insert(
        &mut spec,
        "loadBalancerSourceRanges",
        list(&v.lb_source_ranges, RANGES),
    );
    insert(
        &mut spec,
        "externalTrafficPolicy",
        v.etp.as_ref().map(|x| s(x, POLICIES)),
    );
    insert(
        &mut spec,
        "internalTrafficPolicy",
        v.itp.as_ref().map(|x| s(x, POLICIES)),
    );
    insert(
        &mut spec,
        "healthCheckNodePort",
        v.health_check_node_port.as_ref().map(|x| n(x, NODE_PORTS)),
    );
    if let Some((client_ip, timeout)) = &v.affinity {
        spec.insert(
            "sessionAffinity".into(),
            Value::from(if *client_ip { "ClientIP" } else { "None" }),
        );
        if let Some(t) = timeout {
            spec.insert(
                "sessionAffinityConfig".into(),
                json!({"clientIP": {"timeoutSeconds": n(t, &[10800, 1, 0, -1, 86400, 86401])}}),
            );
        }
    }
    insert(
        &mut spec,
        "publishNotReadyAddresses",
        v.publish_not_ready.map(Value::from),
    );
    let mut svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": spec});
    if let Some(ing) = &v.lb_ingress {
        let ing: Vec<Value> = ing
            .iter()
            .map(|(ip, mode)| {
                let mut m = Map::new();
                m.insert("ip".into(), s(ip, EXT_IPS));
                insert(&mut m, "ipMode", mode.as_ref().map(|x| s(x, IP_MODES)));
                Value::Object(m)
            })
            .collect();
        svc["status"] = json!({"loadBalancer": {"ingress": ing}});
    }
    svc
}

fn slice_json(v: &SliceIn) -> Value {
    let mut labels = Map::new();
    insert(
        &mut labels,
        "kubernetes.io/service-name",
        v.service.as_ref().map(|x| s(x, NAMES)),
    );
    let eps: Vec<Value> = v
        .endpoints
        .iter()
        .map(|e| {
            let mut m = Map::new();
            m.insert(
                "addresses".into(),
                Value::Array(e.addresses.iter().map(|a| s(a, EP_IPS)).collect()),
            );
            let mut c = Map::new();
            insert(&mut c, "ready", e.ready.map(Value::from));
            insert(&mut c, "serving", e.serving.map(Value::from));
            insert(&mut c, "terminating", e.terminating.map(Value::from));
            m.insert("conditions".into(), Value::Object(c));
            insert(&mut m, "nodeName", e.node.as_ref().map(|x| s(x, NODES)));
            insert(&mut m, "zone", e.zone.as_ref().map(|x| s(x, ZONES)));
            let mut hints = Map::new();
            if let Some(z) = &e.zone_hints {
                hints.insert(
                    "forZones".into(),
                    Value::Array(z.iter().map(|x| json!({"name": s(x, ZONES)})).collect()),
                );
            }
            if let Some(z) = &e.node_hints {
                hints.insert(
                    "forNodes".into(),
                    Value::Array(z.iter().map(|x| json!({"name": s(x, NODES)})).collect()),
                );
            }
            if !hints.is_empty() {
                m.insert("hints".into(), Value::Object(hints));
            }
            Value::Object(m)
        })
        .collect();
    let mut out = json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"namespace": s(&v.namespace, NAMESPACES), "name": s(&v.name, SLICE_NAMES), "labels": labels},
        "addressType": s(&v.address_type, ADDRESS_TYPES),
        "endpoints": eps,
    });
    if let Some(ps) = &v.ports {
        out["ports"] = Value::Array(ps.iter().map(|p| port_json(p, false)).collect());
    }
    out
}

fn text(v: &S, pool: &[&str]) -> String {
    match s(v, pool) {
        Value::String(x) => x,
        _ => unreachable!(),
    }
}

fn node(other: bool) -> NodeFacts {
    let (name, zone, ips): (&str, &str, &[&str]) = if other {
        ("node-a", "zone-b", &["192.168.0.11", "127.0.0.1"])
    } else {
        (
            "node-a",
            "zone-a",
            &["192.168.0.10", "fd00::10", "127.0.0.1", "::1"],
        )
    };
    NodeFacts {
        name: name.into(),
        labels: [("topology.kubernetes.io/zone".to_string(), zone.to_string())]
            .into_iter()
            .collect(),
        addresses: ips.iter().map(|a| a.parse().unwrap()).collect(),
        primary_ips: vec![ips[0].parse().unwrap()],
    }
}

fn config(i: &Input) -> Config {
    let mut c = Config::default();
    c.families = match i.families % 3 {
        0 => [IpFamily::V4, IpFamily::V6].into_iter().collect(),
        1 => [IpFamily::V4].into_iter().collect(),
        _ => [IpFamily::V6].into_iter().collect(),
    };
    if i.local_detect {
        c.local_detect = LocalDetect::ClusterCidr(vec!["10.0.0.0/16".parse().unwrap()]);
    }
    c.masquerade_all = i.masquerade_all;
    if i.node_port_primary {
        c.node_port_addresses = NodePortAddresses::parse(&["primary"]).unwrap();
    }
    if i.small_limits {
        c.limits = Limits {
            max_ports_per_service: 2,
            max_endpoints_per_service: 3,
            max_external_addresses_per_service: 2,
        };
    }
    if i.scheduler % 4 == 1 {
        c.scheduler = proxy_core::Scheduler::parse("sh", "sh-port").unwrap();
    }
    c
}

fuzz_target!(|input: Input| {
    let cfg = config(&input);
    let mut other_node = false;
    let mut state = ProxyState::new(cfg.clone(), node(other_node));
    // What the API server would hold after the events, by namespace/name.
    let mut services: BTreeMap<(String, String), Service> = BTreeMap::new();
    let mut slices: BTreeMap<(String, String), EndpointSlice> = BTreeMap::new();
    for e in input.events.iter().take(64) {
        match e {
            Event::ApplyService(v) => {
                // What does not deserialize is refused by the watch already.
                let Ok(svc) = serde_json::from_value::<Service>(service_json(v)) else {
                    continue;
                };
                state.apply_service(&svc);
                let key = (
                    svc.metadata.namespace.clone().unwrap_or_default(),
                    svc.metadata.name.clone().unwrap_or_default(),
                );
                services.insert(key, svc);
            }
            Event::DeleteService(ns, name) => {
                let (ns, name) = (text(ns, NAMESPACES), text(name, NAMES));
                state.delete_service(&ns, &name);
                services.remove(&(ns, name));
            }
            Event::ApplySlice(v) => {
                let Ok(sl) = serde_json::from_value::<EndpointSlice>(slice_json(v)) else {
                    continue;
                };
                state.apply_slice(&sl);
                let key = (
                    sl.metadata.namespace.clone().unwrap_or_default(),
                    sl.metadata.name.clone().unwrap_or_default(),
                );
                slices.insert(key, sl);
            }
            Event::DeleteSlice(ns, name) => {
                let (ns, name) = (text(ns, NAMESPACES), text(name, SLICE_NAMES));
                state.delete_slice(&ns, &name);
                slices.remove(&(ns, name));
            }
            Event::SetNode(b) => {
                other_node = *b;
                state.set_node(node(other_node));
            }
        }
        let _ = state.take_changes();
    }
    let _ = state.rejections();
    let facts = node(other_node);

    let scratch = desired_from_scratch(&cfg, &facts, services.values(), slices.values());
    assert_eq!(
        state.desired(),
        &scratch,
        "incremental state differs from scratch"
    );
    let mut cold = ProxyState::new(cfg.clone(), facts);
    cold.replace_all(services.values(), slices.values());
    assert_eq!(cold.desired(), &scratch, "relist differs from scratch");
    assert_eq!(
        (
            state.no_local_endpoints_internal(),
            state.no_local_endpoints_external()
        ),
        (
            cold.no_local_endpoints_internal(),
            cold.no_local_endpoints_external()
        ),
    );

    let policy = state.policy();
    let mut observed = Observed::default();
    let mut drains = DrainBook::new();
    let now = Instant::now();
    let p = plan(state.desired(), &observed, &policy, &mut drains, now);
    observed
        .apply(&p)
        .expect("a plan from an empty node applies");
    assert!(
        observed.converged(state.desired(), &policy),
        "not converged"
    );
    assert!(plan(state.desired(), &observed, &policy, &mut drains, now).is_empty());

    let save = proxy_core::render_ipvsadm_save(state.desired());
    if let Err(e) = ipvs::rules::parse_rules(&save) {
        panic!("rendered rules do not parse: {e:?}\n{save}");
    }
});
