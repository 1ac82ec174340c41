//! Host test: Services and EndpointSlices through proxy-core into our
//! rendered nftables table (no kernel IPVS needed; `nft -c` validates).

mod common;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Instant;

use common::k8s::{service, slice, Ep};
use dataplane::nft::{render_delta, render_replace, FilterState, Staged};
use proxy_core::{
    plan, plan_changes, Config, DrainBook, LocalDetect, NodeFacts, Observed, ProxyState,
};
use serde_json::json;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn state() -> ProxyState {
    let config = Config {
        local_detect: LocalDetect::ClusterCidr(vec!["10.244.0.0/16".parse().unwrap()]),
        ..Config::default()
    };
    let node = NodeFacts {
        name: "node-a".into(),
        addresses: [ip("172.18.0.2")].into(),
        primary_ips: vec![ip("172.18.0.2")],
        ..NodeFacts::default()
    };
    let mut st = ProxyState::new(config, node);
    st.apply_service(&service(
        "default",
        "self",
        json!({"type": "ClusterIP", "clusterIP": "10.96.0.14", "clusterIPs": ["10.96.0.14"],
               "ipFamilies": ["IPv4"],
               "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]}),
        json!({}),
    ));
    st.apply_slice(&slice(
        "default",
        "self",
        "self-1",
        "IPv4",
        &[
            Ep("10.244.0.3", "node-a", true),
            Ep("10.244.1.2", "node-b", true),
        ],
        &[("http", "TCP", 8080)],
    ));
    st
}

/// A fresh plan from proxy-core, staged on an empty table.
fn fresh(st: &mut ProxyState) -> (FilterState, Observed) {
    let mut obs = Observed::default();
    let p = plan(
        st.desired(),
        &obs,
        &st.policy(),
        &mut DrainBook::new(),
        Instant::now(),
    );
    st.take_changes();
    let mut fs = FilterState::new(0x4000, BTreeSet::new(), true);
    assert_eq!(fs.stage(&p.filter, &p.bind, &p.unbind), Staged::Table);
    obs.apply(&p).expect("model");
    (fs, obs)
}

#[test]
fn a_local_endpoint_becomes_a_hairpin_element() {
    let mut st = state();
    let (fs, _) = fresh(&mut st);
    let text = render_replace("ipvs-proxy", &fs.skeleton(), fs.elements());
    assert!(
        text.contains("10.244.0.3 . 10.244.0.3 . tcp . 8080"),
        "facts: {:#?}\n{text}",
        st.desired().filter
    );
    // Only local endpoints hairpin.
    assert!(!text.contains("10.244.1.2 . 10.244.1.2"));
    assert!(text.contains("add element inet ipvs-proxy service-ips-v4 { 10.96.0.14 }\n"));
}

/// Through proxy-core's partial plan: an endpoint replaced becomes exactly
/// its hairpin element's delete and add - nothing else is sent.
#[test]
fn an_endpoint_change_is_two_element_commands() {
    let mut st = state();
    let (mut fs, obs) = fresh(&mut st);
    st.apply_slice(&slice(
        "default",
        "self",
        "self-1",
        "IPv4",
        &[
            Ep("10.244.0.4", "node-a", true),
            Ep("10.244.1.2", "node-b", true),
        ],
        &[("http", "TCP", 8080)],
    ));
    let changes = st.take_changes();
    let p = plan_changes(
        st.desired(),
        &obs,
        &changes,
        &st.policy(),
        &mut DrainBook::new(),
        Instant::now(),
    );
    let Staged::Elements(d) = fs.stage(&p.filter, &p.bind, &p.unbind) else {
        panic!("not an element change: {p:?}");
    };
    assert_eq!(
        render_delta("ipvs-proxy", &d.delete, &d.add),
        "delete element inet ipvs-proxy hairpin-v4 { 10.244.0.3 . 10.244.0.3 . tcp . 8080 }\n\
         add element inet ipvs-proxy hairpin-v4 { 10.244.0.4 . 10.244.0.4 . tcp . 8080 }\n"
    );
}
