//! The engine's internals: claims, name keys, shared names.

use super::{Claims, NameKey, ProxyState};
use crate::config::{Config, NodeFacts};
use crate::model::ServiceName;
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::hash::BuildHasher;
use std::sync::Arc;

#[test]
fn claims_go_to_the_smallest_rank_in_any_order() {
    let rank = |n: &str| (None, Arc::new(ServiceName::new("ns", n)));
    let (a, b, c) = (rank("a"), rank("b"), rank("c"));
    let mut m: Claims<u16, &str> = Claims::default();
    assert_eq!(m.set(1, &b, Some("b")), Some((None, Some("b"))));
    assert_eq!(m.set(1, &c, Some("c")), None);
    assert_eq!(m.set(1, &a, Some("a")), Some((Some("b"), Some("a"))));
    assert_eq!(m.set(1, &a, Some("a2")), Some((Some("a"), Some("a2"))));
    assert_eq!(m.set(1, &b, Some("b2")), None);
    let mut losers: Vec<&str> = m.losers().map(|(_, r, _)| r.1.name.as_str()).collect();
    losers.sort();
    assert_eq!(losers, ["b", "c"]);
    assert_eq!(m.set(1, &a, None), Some((Some("a2"), Some("b2"))));
    assert_eq!(m.set(1, &c, None), None);
    assert_eq!(m.set(1, &c, None), None);
    assert_eq!(m.set(1, &b, None), Some((Some("b2"), None)));
    assert!(m.by_key.is_empty());
    assert_eq!(m.set(1, &a, None), None);
    assert!(m.by_key.is_empty());
}

#[test]
fn name_keys_hash_and_compare_as_service_names() {
    let s = foldhash::fast::RandomState::default();
    for (ns, n) in [("default", "web"), ("", ""), ("a", "bc"), ("ab", "c")] {
        let owned = Arc::new(ServiceName::new(ns, n));
        let borrowed: &dyn NameKey = &(ns, n);
        assert_eq!(s.hash_one(&owned), s.hash_one(borrowed), "{ns}/{n}");
        assert!(<Arc<ServiceName> as std::borrow::Borrow<dyn NameKey>>::borrow(&owned) == borrowed);
    }
    let ab_c: &dyn NameKey = &("ab", "c");
    let a_bc: &dyn NameKey = &("a", "bc");
    assert!(ab_c != a_bc);
}

#[test]
fn a_service_and_its_slice_share_one_name() {
    let meta = |name: &str| ObjectMeta {
        namespace: Some("default".into()),
        name: Some(name.into()),
        ..Default::default()
    };
    let svc = Service {
        metadata: meta("web"),
        spec: Some(ServiceSpec {
            cluster_ips: Some(vec!["10.96.0.10".into()]),
            ports: Some(vec![ServicePort {
                port: 80,
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    };
    let mut slice_meta = meta("web-1");
    slice_meta.labels = Some(
        [(crate::SERVICE_NAME_LABEL.to_string(), "web".to_string())]
            .into_iter()
            .collect(),
    );
    let slice = EndpointSlice {
        metadata: slice_meta,
        address_type: "IPv4".into(),
        endpoints: vec![Endpoint {
            addresses: vec!["10.0.0.1".into()],
            ..Default::default()
        }],
        ports: None,
    };
    let mut s = ProxyState::new(Config::default(), NodeFacts::default());
    s.apply_slice(&slice);
    s.apply_service(&svc);
    let k: &dyn NameKey = &("default", "web");
    let (a, _) = s.slices.get_key_value(k).expect("slice indexed");
    let (b, _) = s.services.get_key_value(k).expect("service indexed");
    assert!(Arc::ptr_eq(a, b));
}
