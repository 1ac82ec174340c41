//! Host test: Services and EndpointSlices through proxy-core into our
//! rendered nftables table (no kernel IPVS needed; `nft -c` validates).

mod common;

use std::collections::BTreeSet;
use std::net::IpAddr;

use common::k8s::{service, slice, Ep};
use dataplane::facts::filter_spec;
use proxy_core::{Config, LocalDetect, NodeFacts, ProxyState};
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

#[test]
fn a_local_endpoint_becomes_a_hairpin_element() {
    let st = state();
    let d = st.desired();
    let spec = filter_spec(&d.filter, &d.addresses, 0x4000);
    let text = spec.render_table("ipvs-proxy");
    assert!(
        text.contains("10.244.0.3 . 10.244.0.3 . tcp . 8080"),
        "facts: {:#?}\n{text}",
        d.filter
    );
    // Only local endpoints hairpin.
    assert!(!text.contains("10.244.1.2 . 10.244.1.2"));
    assert_eq!(spec.service_ips, BTreeSet::from([ip("10.96.0.14")]));
}
