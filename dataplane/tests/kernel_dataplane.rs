//! Dataplane::apply / observe / cleanup with real IPVS (UML; no nftables
//! there, so the packet filter is off in these tests - e2e tests cover it).
#![cfg(feature = "kernel-tests")]

mod common;

use std::collections::BTreeSet;
use std::net::IpAddr;

use common::k8s::{service, slice, sync, Ep};
use common::{rt, sh, Netns};
use dataplane::nft::FilterChange;
use dataplane::{Dataplane, DataplaneConfig};
use proxy_core::{Config, DrainBook, NodeFacts, ProxyState};
use serde_json::json;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn cfg() -> DataplaneConfig {
    DataplaneConfig {
        packet_filter: false,
        ..DataplaneConfig::default()
    }
}

fn node() -> NodeFacts {
    NodeFacts {
        name: "node-a".into(),
        addresses: [ip("10.0.2.15")].into(),
        primary_ips: vec![ip("10.0.2.15")],
        ..NodeFacts::default()
    }
}

/// web: ClusterIP 10.96.0.10:80 -> two remote endpoints on 8080.
fn web_state() -> ProxyState {
    let mut st = ProxyState::new(Config::default(), node());
    st.apply_service(&service(
        "default",
        "web",
        json!({"type": "ClusterIP", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
               "ipFamilies": ["IPv4"],
               "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]}),
        json!({}),
    ));
    st.apply_slice(&slice(
        "default",
        "web",
        "web-1",
        "IPv4",
        &[
            Ep("10.244.1.2", "node-b", true),
            Ep("10.244.2.2", "node-c", true),
        ],
        &[("http", "TCP", 8080)],
    ));
    st
}

fn ipvs_list() -> String {
    sh("ipvsadm -Ln")
}

#[test]
fn a_plan_programs_ipvs_and_addresses_and_converges() {
    let _ns = Netns::enter("dp-apply").with_uplink();
    rt().block_on(async {
        let mut dp = Dataplane::new(cfg()).await.unwrap();
        dp.setup().await.unwrap();
        let st = web_state();
        let mut drains = DrainBook::new();
        let (p, rep) = sync(&mut dp, &st, &mut drains).await;
        assert_eq!(p.bind, vec![ip("10.96.0.10")]);
        assert_eq!(rep.ipvs_ok, 3, "one service + two real servers: {p:?}");
        let l = ipvs_list();
        assert!(l.contains("TCP  10.96.0.10:80 rr"), "{l}");
        assert!(l.contains("10.244.1.2:8080"), "{l}");
        assert!(l.contains("10.244.2.2:8080"), "{l}");
        assert!(sh("ip addr show dev kube-ipvs0").contains("10.96.0.10/32"));
        assert_eq!(sh("cat /proc/sys/net/ipv4/vs/conntrack").trim(), "1");

        // Converged: a second plan against the kernel has no IPVS or address op.
        let (p2, _) = sync(&mut dp, &st, &mut drains).await;
        assert!(
            p2.ipvs.is_empty() && p2.bind.is_empty() && p2.unbind.is_empty(),
            "{p2:?}"
        );
    });
}

#[test]
fn a_restarted_dataplane_adopts_the_kernel_state() {
    let _ns = Netns::enter("dp-adopt").with_uplink();
    rt().block_on(async {
        let st = web_state();
        {
            let mut dp = Dataplane::new(cfg()).await.unwrap();
            dp.setup().await.unwrap();
            sync(&mut dp, &st, &mut DrainBook::new()).await;
        }
        // "Restart": a new Dataplane and an empty drain book.
        let mut dp = Dataplane::new(cfg()).await.unwrap();
        dp.setup().await.unwrap();
        let before = ipvs_list();
        let (p, _) = sync(&mut dp, &st, &mut DrainBook::new()).await;
        assert!(
            p.ipvs.is_empty() && p.bind.is_empty() && p.unbind.is_empty(),
            "{p:?}"
        );
        assert_eq!(ipvs_list(), before);
    });
}

/// Without connections there is nothing to drain: the real server goes in
/// the same sync (draining under a live connection is an e2e test).
#[test]
fn a_removed_endpoint_without_connections_goes_at_once() {
    let _ns = Netns::enter("dp-remove").with_uplink();
    rt().block_on(async {
        let mut dp = Dataplane::new(cfg()).await.unwrap();
        dp.setup().await.unwrap();
        let mut st = web_state();
        let mut drains = DrainBook::new();
        sync(&mut dp, &st, &mut drains).await;
        assert!(ipvs_list().contains("10.244.2.2:8080"));
        st.apply_slice(&slice(
            "default",
            "web",
            "web-1",
            "IPv4",
            &[Ep("10.244.1.2", "node-b", true)],
            &[("http", "TCP", 8080)],
        ));
        let (p, _) = sync(&mut dp, &st, &mut drains).await;
        assert_eq!(p.ipvs.len(), 1, "{p:?}");
        let l = ipvs_list();
        assert!(!l.contains("10.244.2.2:8080"), "{l}");
        assert!(l.contains("10.244.1.2:8080"), "{l}");
        assert!(drains.is_empty());
    });
}

#[test]
fn cleanup_removes_ours_and_leaves_foreign_objects() {
    let _ns = Netns::enter("dp-cleanup").with_uplink();
    // Foreign: an IPVS service with a real server, an interface with an
    // address, an IPVS service on an address of the node outside the
    // NodePort range.
    sh("ipvsadm -A -t 192.0.2.50:80 -s wrr && ipvsadm -a -t 192.0.2.50:80 -r 10.0.2.99:80 -m");
    sh("ipvsadm -A -t 10.0.2.15:8443 -s rr");
    sh("ip link add foreign0 type dummy && ip addr add 192.0.2.50/32 dev foreign0");
    rt().block_on(async {
        let mut dp = Dataplane::new(cfg()).await.unwrap();
        dp.setup().await.unwrap();
        let st = web_state();
        let mut drains = DrainBook::new();
        let (_, _) = sync(&mut dp, &st, &mut drains).await;
        // The plan itself never touched the foreign service.
        let l = ipvs_list();
        assert!(l.contains("TCP  192.0.2.50:80 wrr"), "{l}");
        assert!(l.contains("10.0.2.99:80"), "{l}");

        let rep = dp.cleanup(&st.policy()).await.unwrap();
        assert_eq!(
            rep.virtual_servers
                .iter()
                .map(|k| k.to_string())
                .collect::<BTreeSet<_>>(),
            ["TCP 10.96.0.10:80".to_owned()].into()
        );
        assert!(rep.interface_deleted);
        let l = ipvs_list();
        assert!(!l.contains("10.96.0.10"), "{l}");
        assert!(l.contains("TCP  192.0.2.50:80 wrr"), "{l}");
        assert!(l.contains("10.0.2.99:80"), "{l}");
        assert!(l.contains("TCP  10.0.2.15:8443 rr"), "{l}");
        assert!(sh("ip addr show dev foreign0").contains("192.0.2.50/32"));
        assert!(!common::sh_try("ip link show kube-ipvs0").0);
        // A second cleanup finds nothing of ours.
        let again = dp.cleanup(&st.policy()).await.unwrap();
        assert!(again.virtual_servers.is_empty() && !again.interface_deleted);
    });
}

/// The agent's `--packet-filter none`: `nft` is never run (it points at a
/// program that does not exist), yet IPVS and the addresses are programmed,
/// the filter facts are tracked (the next plan is empty), and cleanup
/// leaves nftables alone.
#[test]
fn without_the_packet_filter_nft_is_never_run() {
    let _ns = Netns::enter("dp-nofilter").with_uplink();
    rt().block_on(async {
        let mut dp = Dataplane::new(DataplaneConfig {
            nft: "/nonexistent/nft".into(),
            ..cfg()
        })
        .await
        .unwrap();
        dp.setup().await.unwrap();
        let st = web_state();
        let mut drains = DrainBook::new();
        let (p, rep) = sync(&mut dp, &st, &mut drains).await;
        assert!(!p.filter.is_empty(), "filter facts to track: {p:?}");
        assert_eq!(rep.filter_change, FilterChange::Unchanged);
        let l = ipvs_list();
        assert!(l.contains("TCP  10.96.0.10:80 rr"), "{l}");
        assert!(
            l.contains("10.244.1.2:8080") && l.contains("10.244.2.2:8080"),
            "{l}"
        );
        assert!(sh("ip addr show dev kube-ipvs0").contains("10.96.0.10/32"));
        let (p2, _) = sync(&mut dp, &st, &mut drains).await;
        assert!(
            p2.ipvs.is_empty() && p2.bind.is_empty() && p2.filter.is_empty(),
            "{p2:?}"
        );
        let rep = dp.cleanup(&st.policy()).await.unwrap();
        assert!(!rep.table_deleted);
        assert!(rep.interface_deleted);
        assert!(!ipvs_list().contains("10.96.0.10"));
    });
}
