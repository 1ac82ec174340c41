//! Bad input (issue 3 item 5): never panics, never affects other Services,
//! and every rejection carries a reason.

mod common;

use common::*;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use proxy_core::{desired_from_scratch, Config, ProxyState, RejectReason};

fn good() -> Service {
    Svc::new("default", "good", "10.96.0.99")
        .port("http", "TCP", 80)
        .build()
}

fn good_slice() -> EndpointSlice {
    Slice::new("default", "good-1", "good")
        .port("http", "TCP", 8080)
        .ep("10.0.9.9", "node-b")
        .build()
}

/// Feeds the good Service plus `bad` ones; checks the good one is intact
/// and returns the rejection reasons.
fn run(bad: &[Service], bad_slices: &[EndpointSlice]) -> (ProxyState, Vec<RejectReason>) {
    let mut s = ProxyState::new(config(), node());
    s.apply_service(&good());
    s.apply_slice(&good_slice());
    let before = s
        .desired()
        .virtual_servers
        .get(&ipvs::ServiceKey::tcp("10.96.0.99".parse().unwrap(), 80))
        .cloned()
        .unwrap();
    for b in bad {
        s.apply_service(b);
    }
    for b in bad_slices {
        s.apply_slice(b);
    }
    let after = s
        .desired()
        .virtual_servers
        .get(&ipvs::ServiceKey::tcp("10.96.0.99".parse().unwrap(), 80))
        .cloned()
        .unwrap();
    assert_eq!(before, after, "a bad object changed another Service");
    let reasons = s.rejections().into_iter().map(|r| r.reason).collect();
    (s, reasons)
}

#[test]
fn unparseable_cluster_ip_rejects_the_service() {
    let (s, r) = run(
        &[Svc::new("default", "bad", "10.96.0.300")
            .port("http", "TCP", 80)
            .build()],
        &[],
    );
    assert_eq!(r, [RejectReason::InvalidClusterIp]);
    assert!(s.rejections()[0].whole_object);
    assert_eq!(s.desired().virtual_servers.len(), 1);
}

#[test]
fn unparseable_external_and_lb_ips_reject_only_that_address() {
    let (s, r) = run(
        &[Svc::new("default", "bad", "10.96.0.5")
            .port("http", "TCP", 80)
            .external_ip("nonsense")
            .external_ip("198.51.100.1")
            .lb_ingress("1.2.3", None)
            .build()],
        &[],
    );
    assert!(r.contains(&RejectReason::InvalidExternalIp));
    assert!(r.contains(&RejectReason::InvalidLoadBalancerIp));
    assert!(s
        .desired()
        .virtual_servers
        .contains_key(&ipvs::ServiceKey::tcp("198.51.100.1".parse().unwrap(), 80)));
}

#[test]
fn ports_out_of_range_and_duplicates_reject_the_port() {
    let (s, r) = run(
        &[Svc::new("default", "bad", "10.96.0.5")
            .port("a", "TCP", 0)
            .port("b", "TCP", 70000)
            .port("c", "TCP", 80)
            .port("d", "TCP", 80)
            .port("c", "UDP", 81)
            .port("e", "ICMP", 82)
            .port("f", "TCP", 83)
            .node_port(-1)
            .build()],
        &[],
    );
    let mut r = r;
    r.sort();
    let mut want = vec![
        RejectReason::PortOutOfRange,
        RejectReason::PortOutOfRange,
        RejectReason::PortOutOfRange,
        RejectReason::DuplicatePort,
        RejectReason::DuplicatePort,
        RejectReason::UnsupportedProtocol,
    ];
    want.sort();
    assert_eq!(r, want);
    let keys: Vec<String> = s
        .desired()
        .virtual_servers
        .keys()
        .filter(
            |k| matches!(k, ipvs::ServiceKey::Addr { addr, .. } if addr.to_string() == "10.96.0.5"),
        )
        .map(|k| k.to_string())
        .collect();
    assert_eq!(keys, ["TCP 10.96.0.5:80", "TCP 10.96.0.5:83"]);
}

#[test]
fn cluster_ip_claimed_by_two_services_goes_to_the_older_in_any_order() {
    let older = Svc::new("a", "older", "10.96.0.7")
        .port("http", "TCP", 80)
        .created(1_000)
        .build();
    let newer = Svc::new("a", "newer", "10.96.0.7")
        .port("http", "TCP", 80)
        .created(2_000)
        .build();
    for order in [[&older, &newer], [&newer, &older]] {
        let mut s = ProxyState::new(config(), node());
        for x in order {
            s.apply_service(x);
        }
        let v = s
            .desired()
            .virtual_servers
            .get(&ipvs::ServiceKey::tcp("10.96.0.7".parse().unwrap(), 80))
            .unwrap();
        assert_eq!(v.owner.service.name, "older");
        let r = s.rejections();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].reason, RejectReason::DuplicateVirtualServer);
        assert_eq!(r[0].object.name, "newer");
        // The winner goes away: the other takes over.
        s.delete_service("a", "older");
        let v = s
            .desired()
            .virtual_servers
            .get(&ipvs::ServiceKey::tcp("10.96.0.7".parse().unwrap(), 80))
            .unwrap();
        assert_eq!(v.owner.service.name, "newer");
        assert!(s.rejections().is_empty());
        assert_eq!(s.desired().addresses.len(), 1);
    }
}

#[test]
fn bad_endpoints_are_skipped_with_reasons() {
    let slice = Slice::new("default", "bad-1", "bad")
        .port("http", "TCP", 8080)
        .raw_ep(vec![])
        .raw_ep(vec!["10.0.0.999".into()])
        .raw_ep(vec!["fd00::1".into()])
        .ep("10.0.5.5", "node-b")
        .build();
    let svc = Svc::new("default", "bad", "10.96.0.5")
        .port("http", "TCP", 80)
        .build();
    let (s, mut r) = run(&[svc], &[slice]);
    r.sort();
    assert_eq!(
        r,
        [
            RejectReason::EndpointWithoutAddress,
            RejectReason::InvalidEndpointAddress,
            RejectReason::InvalidEndpointAddress
        ]
    );
    let v = s
        .desired()
        .virtual_servers
        .get(&ipvs::ServiceKey::tcp("10.96.0.5".parse().unwrap(), 80))
        .unwrap();
    assert_eq!(v.real_servers.len(), 1);
}

#[test]
fn slices_without_service_name_or_with_bad_ports_are_rejected() {
    let mut nolabel = Slice::new("default", "orphan", "x")
        .port("http", "TCP", 8080)
        .build();
    nolabel.metadata.labels = None;
    let badport = Slice::new("default", "bp", "good")
        .port("http", "TCP", 0)
        .ep("10.0.9.8", "node-b")
        .build();
    let weird = Slice::new("default", "w", "good")
        .address_type("Carrier-Pigeon")
        .build();
    let fqdn = Slice::new("default", "f", "good")
        .address_type("FQDN")
        .build();
    let (_, mut r) = run(&[], &[nolabel, badport, weird, fqdn]);
    r.sort();
    assert_eq!(
        r,
        [
            RejectReason::PortOutOfRange,
            RejectReason::MissingServiceName,
            RejectReason::UnsupportedAddressType
        ]
    );
}

#[test]
fn absurd_sizes_are_rejected_by_limits() {
    let mut svc = Svc::new("default", "huge", "10.96.0.8");
    for i in 0..20 {
        svc = svc.port(&format!("p{i}"), "TCP", 1000 + i);
    }
    let cfg = Config {
        limits: proxy_core::Limits {
            max_ports_per_service: 10,
            max_endpoints_per_service: 3,
            max_external_addresses_per_service: 1,
        },
        ..config()
    };
    let mut s = ProxyState::new(cfg.clone(), node());
    s.apply_service(&svc.build());
    s.apply_service(
        &Svc::new("default", "ext", "10.96.0.9")
            .port("http", "TCP", 80)
            .external_ip("198.51.100.1")
            .external_ip("198.51.100.2")
            .build(),
    );
    s.apply_service(
        &Svc::new("default", "many", "10.96.0.10")
            .port("http", "TCP", 80)
            .build(),
    );
    let mut sl = Slice::new("default", "many-1", "many").port("http", "TCP", 80);
    for i in 0..10 {
        sl = sl.ep(&format!("10.0.7.{i}"), "node-b");
    }
    s.apply_slice(&sl.build());
    let r: Vec<_> = s.rejections().into_iter().map(|r| r.reason).collect();
    assert_eq!(
        r.iter().filter(|x| **x == RejectReason::TooLarge).count(),
        3
    );
    let d = s.desired();
    assert!(!d
        .virtual_servers
        .keys()
        .any(|k| k.to_string().starts_with("TCP 10.96.0.8:")));
    assert!(!d
        .virtual_servers
        .contains_key(&ipvs::ServiceKey::tcp("198.51.100.1".parse().unwrap(), 80)));
    let many = d
        .virtual_servers
        .get(&ipvs::ServiceKey::tcp("10.96.0.10".parse().unwrap(), 80))
        .unwrap();
    assert_eq!(many.real_servers.len(), 3);
}

#[test]
fn missing_metadata_is_rejected_not_panicking() {
    let mut svc = good();
    svc.metadata.name = None;
    let mut sl = good_slice();
    sl.metadata.namespace = None;
    let (_, r) = run(&[svc], &[sl]);
    assert_eq!(
        r,
        [RejectReason::MissingMetadata, RejectReason::MissingMetadata]
    );
}

#[test]
fn every_reason_has_a_distinct_stable_label() {
    let labels: std::collections::BTreeSet<&str> =
        RejectReason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(labels.len(), RejectReason::ALL.len());
    assert!(labels
        .iter()
        .all(|l| l.chars().all(|c| c.is_ascii_lowercase() || c == '_')));
}

#[test]
fn from_scratch_agrees_on_bad_input() {
    let bad = Svc::new("default", "bad", "garbage")
        .port("x", "TCP", 1)
        .build();
    let cfg = config();
    let d = desired_from_scratch(&cfg, &node(), &[good(), bad], &[good_slice()]);
    assert_eq!(d.virtual_servers.len(), 1);
}

#[test]
fn affinity_timeout_outside_the_api_servers_range_is_rejected_and_the_default_used() {
    // Found by the desired_state fuzz target: 16777215 s became an IPVS
    // persistence that ipvsadm and ipvs::rules refuse to restore.
    for t in [16_777_215, 86_401, -5] {
        let (s, r) = run(
            &[Svc::new("default", "sticky", "10.96.0.98")
                .port("http", "TCP", 80)
                .affinity(Some(t))
                .build()],
            &[],
        );
        assert_eq!(r, [RejectReason::InvalidSessionAffinityTimeout], "{t}");
        assert!(!s.rejections()[0].whole_object, "{t}: the Service is kept");
        let vs =
            &s.desired().virtual_servers[&ipvs::ServiceKey::tcp("10.96.0.98".parse().unwrap(), 80)];
        assert_eq!(
            vs.server.timeout,
            proxy_core::DEFAULT_AFFINITY_TIMEOUT,
            "{t}"
        );
    }
    // The edges of the range are kept as they are.
    for t in [1, 86_400] {
        let (s, r) = run(
            &[Svc::new("default", "sticky", "10.96.0.98")
                .port("http", "TCP", 80)
                .affinity(Some(t))
                .build()],
            &[],
        );
        assert!(r.is_empty(), "{t}: {r:?}");
        let vs =
            &s.desired().virtual_servers[&ipvs::ServiceKey::tcp("10.96.0.98".parse().unwrap(), 80)];
        assert_eq!(vs.server.timeout, t as u32);
    }
}
