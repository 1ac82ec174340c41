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

#[test]
fn thousands_of_addresses_in_batches_each_outcome_in_place() {
    let _ns = Netns::enter("dp-link-batch");
    rt().block_on(async {
        let link = DummyLink::connect("kube-ipvs0").unwrap();
        link.ensure().await.unwrap();
        // IPv6 off on our interface: the kernel refuses IPv6 addresses
        // there (EACCES), and only those.
        sh("echo 1 > /proc/sys/net/ipv6/conf/kube-ipvs0/disable_ipv6");
        // More than one chunk (at most 1,024 requests per sendmsg).
        let mut want: Vec<IpAddr> = (0..3000u32)
            .map(|i| IpAddr::V4(std::net::Ipv4Addr::from(0x0a60_0001 + i)))
            .collect();
        want.insert(1700, ip("fd00:96::1"));
        // Already bound: success.
        sh("ip addr add 10.96.0.5/32 dev kube-ipvs0");
        let res = link.add_addresses(&want).await.unwrap();
        assert_eq!(res.len(), want.len());
        for (i, (a, r)) in res.iter().enumerate() {
            assert_eq!(*a, want[i], "outcomes keep the order of the request");
            if i == 1700 {
                match r {
                    Err(Error::Refused { op, source }) => {
                        assert_eq!(source.raw_os_error(), Some(13), "EACCES: {source}");
                        assert!(op.contains("fd00:96::1"), "{op}");
                    }
                    other => panic!("expected the IPv6 address refused, got {other:?}"),
                }
            } else {
                assert!(r.is_ok(), "{a}: {r:?}");
            }
        }
        let got = link.addresses().await.unwrap();
        assert_eq!(got.len(), 3000);
        assert!(got.contains(&ip("10.96.11.184")), "the last one");
        let count = sh("ip -4 addr show dev kube-ipvs0 | grep -c 'inet .*/32'");
        assert_eq!(count.trim(), "3000");

        // All removed in one call; one never bound is fine too.
        let mut gone = want.clone();
        gone.push(ip("10.99.0.1"));
        let res = link.remove_addresses(&gone).await.unwrap();
        assert_eq!(res.len(), gone.len());
        assert!(res.iter().all(|(_, r)| r.is_ok()), "{res:?}");
        assert!(link.addresses().await.unwrap().is_empty());
    });
}
