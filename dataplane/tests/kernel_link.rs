//! The dummy interface and its addresses on a real kernel (UML).
#![cfg(feature = "kernel-tests")]

mod common;

use std::net::IpAddr;

use common::{rt, sh, sh_try, Netns};
use dataplane::link::DummyLink;
use dataplane::Error;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn ensure_creates_an_up_dummy_once() {
    let _ns = Netns::enter("dp-link-ensure");
    rt().block_on(async {
        let link = DummyLink::connect("kube-ipvs0").unwrap();
        assert_eq!(link.index().await.unwrap(), None);
        let idx = link.ensure().await.unwrap();
        assert_eq!(link.ensure().await.unwrap(), idx, "second ensure reuses it");
        let show = sh("ip -d link show kube-ipvs0");
        assert!(show.contains("dummy"), "{show}");
        assert!(link.is_up().await.unwrap());
        // Taken down by someone: ensure brings it up again.
        sh("ip link set kube-ipvs0 down");
        assert!(!link.is_up().await.unwrap());
        link.ensure().await.unwrap();
        assert!(link.is_up().await.unwrap());
    });
}

#[test]
fn addresses_are_host_routes_on_our_interface_only() {
    let _ns = Netns::enter("dp-link-addrs");
    // A foreign interface with an address we also "want": never touched.
    sh(
        "ip link add foreign0 type dummy && ip link set foreign0 up \
        && ip addr add 10.96.0.10/32 dev foreign0 && ip addr add 192.0.2.99/24 dev foreign0",
    );
    rt().block_on(async {
        let link = DummyLink::connect("kube-ipvs0").unwrap();
        link.ensure().await.unwrap();
        for a in ["10.96.0.10", "10.96.0.11", "fd00:96::10"] {
            link.add_address(ip(a)).await.unwrap();
        }
        // Adding again is fine.
        link.add_address(ip("10.96.0.11")).await.unwrap();
        let got = link.addresses().await.unwrap();
        let want = [ip("10.96.0.10"), ip("10.96.0.11"), ip("fd00:96::10")].into();
        assert_eq!(got, want);
        let show = sh("ip addr show dev kube-ipvs0");
        assert!(show.contains("inet 10.96.0.11/32"), "{show}");
        assert!(show.contains("inet6 fd00:96::10/128"), "{show}");
        assert!(
            !show.contains("tentative"),
            "IPv6 VIPs must be usable at once: {show}"
        );

        link.remove_address(ip("10.96.0.10")).await.unwrap();
        link.remove_address(ip("fd00:96::10")).await.unwrap();
        // Not bound on ours (only on foreign0): nothing happens.
        link.remove_address(ip("192.0.2.99")).await.unwrap();
        assert_eq!(link.addresses().await.unwrap(), [ip("10.96.0.11")].into());
        let foreign = sh("ip addr show dev foreign0");
        assert!(foreign.contains("inet 10.96.0.10/32"), "{foreign}");
        assert!(foreign.contains("inet 192.0.2.99/24"), "{foreign}");

        assert!(matches!(
            link.add_address(ip("0.0.0.0")).await,
            Err(Error::BadAddress(_))
        ));
        assert!(link.delete().await.unwrap());
        assert!(!link.delete().await.unwrap());
        assert!(!sh_try("ip link show kube-ipvs0").0);
        assert!(sh("ip addr show dev foreign0").contains("10.96.0.10/32"));
    });
}

#[test]
fn refuses_a_foreign_interface_with_our_name() {
    let _ns = Netns::enter("dp-link-foreign");
    sh("ip link add kube-ipvs0 type veth peer name kube-peer");
    rt().block_on(async {
        let link = DummyLink::connect("kube-ipvs0").unwrap();
        match link.ensure().await {
            Err(Error::NotADummy { kind, .. }) => assert_eq!(kind, "veth"),
            other => panic!("expected NotADummy, got {other:?}"),
        }
        assert!(matches!(link.delete().await, Err(Error::NotADummy { .. })));
        assert!(matches!(
            link.add_address(ip("10.96.0.1")).await,
            Err(Error::NotADummy { .. })
        ));
    });
    assert!(sh("ip -d link show kube-ipvs0").contains("veth"));
}
