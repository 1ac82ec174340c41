//! Unit tests of the skeleton, the elements, element updates and `nft` runs.

use std::collections::{BTreeSet, HashSet};
use std::net::IpAddr;

use ipnet::IpNet;
use ipvs::Protocol;
use proptest::prelude::*;
use proxy_core::model::{
    FilterEntry, HairpinFact, HealthCheckFact, Masquerade, NodePortFact, ServiceName,
    ServicePortFact, VipKind,
};
use proxy_core::plan::FilterOp;
use proxy_core::{IpFamily, LocalDetect};

use super::*;

const T: &str = "ipvs-proxy";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}
fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn port(a: &str, p: Protocol, n: u16, m: Masquerade) -> ServicePortFact {
    ServicePortFact {
        protocol: p,
        addr: ip(a),
        port: n,
        kind: VipKind::ClusterIp,
        masquerade: m,
        pod_fwmark: None,
        source_ranges: vec![],
        allow_from_node: false,
    }
}

fn hairpin(a: &str, n: u16) -> FilterEntry {
    FilterEntry::Hairpin(HairpinFact {
        protocol: Protocol::Tcp,
        addr: ip(a),
        port: n,
    })
}

fn globals(local: LocalDetect, all: bool, npa: &[&str]) -> FilterOp {
    FilterOp::SetGlobals {
        local_detect: local,
        masquerade_all: all,
        node_port_addresses: npa.iter().map(|a| ip(a)).collect(),
    }
}

fn cidrs() -> LocalDetect {
    LocalDetect::ClusterCidr(vec![net("10.244.0.0/16"), net("fd00:244::/56")])
}

/// A ClusterIP (TCP+UDP, v4 and v6), an LB IP with source ranges, an
/// ETP-Local LB port with its pod mark, node ports, a hairpin endpoint, a
/// health-check node port: as a fresh plan sends them.
fn sample_ops() -> Vec<FilterOp> {
    let u = Masquerade::UnlessFromPod;
    let mut ops = vec![globals(cidrs(), false, &["172.18.0.2"])];
    let mut add = |e| ops.push(FilterOp::Add(e));
    add(FilterEntry::ServicePort(port(
        "10.96.0.10",
        Protocol::Tcp,
        80,
        u,
    )));
    add(FilterEntry::ServicePort(port(
        "10.96.0.10",
        Protocol::Udp,
        53,
        u,
    )));
    add(FilterEntry::ServicePort(port(
        "fd00:96::10",
        Protocol::Tcp,
        80,
        u,
    )));
    add(FilterEntry::ServicePort(ServicePortFact {
        source_ranges: vec![net("198.51.100.0/24"), net("198.51.100.7/32")],
        allow_from_node: true,
        kind: VipKind::LoadBalancer,
        ..port("192.0.2.10", Protocol::Tcp, 80, Masquerade::Always)
    }));
    add(FilterEntry::ServicePort(ServicePortFact {
        pod_fwmark: Some(0x0101_0000 | 30443),
        kind: VipKind::LoadBalancer,
        ..port("192.0.2.10", Protocol::Tcp, 443, Masquerade::Never)
    }));
    add(FilterEntry::NodePort(NodePortFact {
        protocol: Protocol::Tcp,
        port: 30080,
        family: IpFamily::V4,
        masquerade: Masquerade::Always,
        pod_fwmark: None,
    }));
    add(FilterEntry::NodePort(NodePortFact {
        protocol: Protocol::Tcp,
        port: 30443,
        family: IpFamily::V4,
        masquerade: Masquerade::Never,
        pod_fwmark: Some(0x0101_0000 | 30443),
    }));
    add(FilterEntry::HealthCheck(HealthCheckFact {
        port: 32000,
        service: ServiceName::new("default", "lb"),
        local_endpoints: 1,
    }));
    add(hairpin("10.244.0.5", 8080));
    // A protocol the filter cannot match: no elements, not rendered wrongly.
    add(FilterEntry::ServicePort(port(
        "10.96.0.1",
        Protocol::Other(33),
        1,
        u,
    )));
    ops
}

fn bound() -> Vec<IpAddr> {
    vec![ip("10.96.0.10"), ip("192.0.2.10"), ip("fd00:96::10")]
}

fn sample() -> FilterState {
    let mut s = FilterState::new(0x4000, BTreeSet::new(), true);
    assert_eq!(s.stage(&sample_ops(), &bound(), &[]), Staged::Table);
    s
}

fn full(s: &FilterState) -> String {
    render_replace(T, &s.skeleton(), s.elements())
}

/// The elements of set `name` in a full table's text (`""` when none).
fn elements(text: &str, name: &str) -> String {
    let head = format!("add element inet {T} {name} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&head))
        .unwrap_or("")
        .to_owned()
}

fn chain<'a>(text: &'a str, name: &str) -> &'a str {
    let head = text.find(&format!("chain {name} {{")).unwrap();
    let body = &text[head..];
    &body[..body.find("\t}").unwrap()]
}

fn delta(s: &mut FilterState, ops: &[FilterOp], bind: &[IpAddr], unbind: &[IpAddr]) -> Delta {
    match s.stage(ops, bind, unbind) {
        Staged::Elements(d) => d,
        Staged::Table => panic!("expected an element change"),
    }
}

#[test]
fn replace_is_one_transaction_on_our_table_only() {
    let t = full(&sample());
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(lines[0], "table inet ipvs-proxy {}");
    assert_eq!(lines[1], "delete table inet ipvs-proxy");
    assert_eq!(lines[2], "table inet ipvs-proxy {");
    for l in t
        .lines()
        .filter(|l| l.contains("table ") || l.contains("element "))
    {
        assert!(l.contains(" inet ipvs-proxy"), "{l}");
    }
    assert!(!t.contains("flush ruleset"));
}

#[test]
fn the_skeleton_holds_no_element_and_depends_on_the_globals_only() {
    let s = sample();
    let sk = render_skeleton(T, &s.skeleton());
    assert!(!sk.contains("element"), "{sk}");
    assert!(!sk.contains("10.96.0.10"), "{sk}");
    // The same for an empty table with the same configuration.
    let mut empty = FilterState::new(0x4000, BTreeSet::new(), true);
    empty.stage(&[globals(cidrs(), false, &[])], &[], &[]);
    assert_eq!(render_skeleton(T, &empty.skeleton()), sk);
}

#[test]
fn sets_hold_the_facts_per_family() {
    let t = full(&sample());
    assert_eq!(
        elements(&t, "service-ports-v4"),
        "{ 10.96.0.10 . tcp . 80, 10.96.0.10 . udp . 53, 192.0.2.10 . tcp . 80, 192.0.2.10 . tcp . 443 }"
    );
    assert_eq!(
        elements(&t, "service-ports-v6"),
        "{ fd00:96::10 . tcp . 80 }"
    );
    assert_eq!(
        elements(&t, "masq-unless-pod-v4"),
        "{ 10.96.0.10 . tcp . 80, 10.96.0.10 . udp . 53 }"
    );
    assert_eq!(elements(&t, "masq-always-v4"), "{ 192.0.2.10 . tcp . 80 }");
    assert_eq!(elements(&t, "service-ips-v4"), "{ 10.96.0.10, 192.0.2.10 }");
    assert_eq!(elements(&t, "local-cidrs-v4"), "{ 10.244.0.0/16 }");
    assert_eq!(elements(&t, "local-cidrs-v6"), "{ fd00:244::/56 }");
    assert_eq!(elements(&t, "nodeport-addrs-v4"), "{ 172.18.0.2 }");
    assert_eq!(elements(&t, "nodeports-v4"), "{ tcp . 30080, tcp . 30443 }");
    assert_eq!(elements(&t, "nodeports-always-v4"), "{ tcp . 30080 }");
    assert_eq!(elements(&t, "nodeports-v6"), "");
    assert_eq!(elements(&t, "health-check-nodeports"), "{ 32000 }");
    assert_eq!(
        elements(&t, "hairpin-v4"),
        "{ 10.244.0.5 . 10.244.0.5 . tcp . 8080 }"
    );
    assert_eq!(
        elements(&t, "pod-marks-v4"),
        "{ 192.0.2.10 . tcp . 443 : 0x10176eb }"
    );
    assert_eq!(
        elements(&t, "nodeport-marks-v4"),
        "{ tcp . 30443 : 0x10176eb }"
    );
    assert!(
        !t.contains("10.96.0.1 "),
        "unmatchable protocol rendered: {t}"
    );
}

#[test]
fn etp_local_ports_keep_the_source() {
    let t = full(&sample());
    for set in ["masq-always-v4", "masq-unless-pod-v4"] {
        assert!(!elements(&t, set).contains(". 443"), "{set}");
    }
    assert!(!elements(&t, "nodeports-always-v4").contains("30443"));
    assert!(!elements(&t, "nodeports-unless-pod-v4").contains("30443"));
    // ...but the node's own connections are masqueraded (all ports).
    let out = chain(&t, "mark-out");
    assert!(out.contains("@service-ports-v4 ct mark set ct mark | 0x4000"));
    assert!(out.contains("@nodeports-v4 ct mark set ct mark | 0x4000"));
}

#[test]
fn overlapping_source_ranges_are_merged() {
    let t = full(&sample());
    assert_eq!(
        elements(&t, "lb-allowed-v4"),
        "{ 192.0.2.10 . tcp . 80 . 198.51.100.0/24 }"
    );
    assert_eq!(
        elements(&t, "lb-node-allowed-v4"),
        "{ 192.0.2.10 . tcp . 80 }"
    );
}

fn with_local(local: LocalDetect) -> FilterState {
    let mut s = sample();
    let op = globals(local, false, &["172.18.0.2"]);
    assert_eq!(s.stage(&[op], &[], &[]), Staged::Table);
    s
}

#[test]
fn pod_traffic_is_recognised_by_source_or_interface() {
    let t = full(&sample());
    let pre = chain(&t, "mark-pre");
    assert!(pre.contains(
        "ip saddr @local-cidrs-v4 meta mark set ip daddr . meta l4proto . th dport map @pod-marks-v4"
    ));
    assert!(pre.contains(
        "ct state new ip saddr != @local-cidrs-v4 ip daddr . meta l4proto . th dport @masq-unless-pod-v4"
    ));
    let t = full(&with_local(LocalDetect::InterfaceNamePrefix("veth".into())));
    let pre = chain(&t, "mark-pre");
    assert!(pre.contains("iifname \"veth*\" meta mark set"));
    assert!(pre.contains("ct state new iifname != \"veth*\" ip daddr"));
    assert_eq!(elements(&t, "local-cidrs-v4"), "");
}

#[test]
fn without_local_detection_everything_is_masqueraded_and_unmarked() {
    let t = full(&with_local(LocalDetect::None));
    let pre = chain(&t, "mark-pre");
    assert!(!pre.contains("map @pod-marks-v4"));
    assert!(pre.contains(
        "\t\tct state new ip daddr . meta l4proto . th dport @masq-unless-pod-v4 ct mark set"
    ));
}

#[test]
fn masquerade_all_marks_every_port_except_none_and_replaces_the_table() {
    let mut s = sample();
    let op = globals(cidrs(), true, &["172.18.0.2"]);
    assert_eq!(s.stage(&[op], &[], &[]), Staged::Table);
    let t = full(&s);
    assert_eq!(elements(&t, "masq-unless-pod-v4"), "");
    assert_eq!(
        elements(&t, "masq-always-v4"),
        "{ 10.96.0.10 . tcp . 80, 10.96.0.10 . udp . 53, 192.0.2.10 . tcp . 80, 192.0.2.10 . tcp . 443 }"
    );
    assert_eq!(
        elements(&t, "nodeports-always-v4"),
        "{ tcp . 30080, tcp . 30443 }"
    );
}

#[test]
fn custom_bit_is_used_everywhere() {
    let mut s = FilterState::new(0x8000, BTreeSet::new(), true);
    s.stage(&sample_ops(), &bound(), &[]);
    let t = full(&s);
    assert!(!t.contains("0x4000"));
    assert!(t.contains("ct mark & 0x8000 == 0x8000 counter masquerade"));
}

#[test]
fn bad_interface_names_are_refused() {
    let s = with_local(LocalDetect::BridgeInterface("br0\" accept; #".into()));
    assert!(s.skeleton().validate().is_err());
    assert!(!full(&s).contains("accept; #"));
    let s = with_local(LocalDetect::BridgeInterface("cni0".into()));
    assert!(s.skeleton().validate().is_ok());
}

#[test]
fn empty_table_renders_without_elements() {
    let s = FilterState::new(0x4000, BTreeSet::new(), true);
    let t = full(&s);
    assert!(!t.contains("element"));
    assert!(t.contains("chain service-guard-v4"));
}

/// The exact commands of an element change: a new ClusterIP port with its
/// address bound, an endpoint replaced (hairpin), an LB port's pod mark
/// changed (a map value: delete by key, add with the new value).
#[test]
fn element_changes_become_exact_element_commands() {
    let mut s = sample();
    let u = Masquerade::UnlessFromPod;
    let lb443 = |m| {
        FilterEntry::ServicePort(ServicePortFact {
            pod_fwmark: Some(m),
            kind: VipKind::LoadBalancer,
            ..port("192.0.2.10", Protocol::Tcp, 443, Masquerade::Never)
        })
    };
    let ops = vec![
        FilterOp::Add(hairpin("10.244.0.6", 8080)),
        FilterOp::Add(FilterEntry::ServicePort(port(
            "10.96.0.11",
            Protocol::Tcp,
            80,
            u,
        ))),
        FilterOp::Add(lb443(7)),
        FilterOp::Remove(hairpin("10.244.0.5", 8080)),
        FilterOp::Remove(lb443(0x0101_0000 | 30443)),
    ];
    let d = delta(&mut s, &ops, &[ip("10.96.0.11")], &[]);
    assert_eq!(
        render_delta(T, &d.delete, &d.add),
        "delete element inet ipvs-proxy pod-marks-v4 { 192.0.2.10 . tcp . 443 }\n\
         delete element inet ipvs-proxy hairpin-v4 { 10.244.0.5 . 10.244.0.5 . tcp . 8080 }\n\
         add element inet ipvs-proxy service-ips-v4 { 10.96.0.11 }\n\
         add element inet ipvs-proxy service-ports-v4 { 10.96.0.11 . tcp . 80 }\n\
         add element inet ipvs-proxy masq-unless-pod-v4 { 10.96.0.11 . tcp . 80 }\n\
         add element inet ipvs-proxy pod-marks-v4 { 192.0.2.10 . tcp . 443 : 0x7 }\n\
         add element inet ipvs-proxy hairpin-v4 { 10.244.0.6 . 10.244.0.6 . tcp . 8080 }\n"
    );
    // Nothing staged twice: the same plan again changes nothing.
    assert!(delta(&mut s, &[], &[], &[]).is_empty());
}

/// A service address is shared by its ports and by being bound: it leaves
/// the guard only with its last user.
#[test]
fn a_shared_address_goes_with_its_last_user() {
    let mut s = sample();
    let u = Masquerade::UnlessFromPod;
    let tcp = FilterEntry::ServicePort(port("10.96.0.10", Protocol::Tcp, 80, u));
    let udp = FilterEntry::ServicePort(port("10.96.0.10", Protocol::Udp, 53, u));
    let d = delta(&mut s, &[FilterOp::Remove(tcp)], &[], &[]);
    assert_eq!(
        render_delta(T, &d.delete, &d.add),
        "delete element inet ipvs-proxy service-ports-v4 { 10.96.0.10 . tcp . 80 }\n\
         delete element inet ipvs-proxy masq-unless-pod-v4 { 10.96.0.10 . tcp . 80 }\n"
    );
    let d = delta(&mut s, &[FilterOp::Remove(udp)], &[], &[ip("10.96.0.10")]);
    assert!(d.add.is_empty());
    assert!(
        d.delete
            .iter()
            .any(|e| e.set == Set::ServiceIps(IpFamily::V4)
                && e.key == Key::Addr(ip("10.96.0.10"))),
        "{d:?}"
    );
}

/// A changed entry arrives as remove + add in any order; elements common
/// to both are not touched.
#[test]
fn a_changed_entry_touches_only_what_differs() {
    let mut s = sample();
    let old = FilterEntry::ServicePort(ServicePortFact {
        source_ranges: vec![net("198.51.100.0/24"), net("198.51.100.7/32")],
        allow_from_node: true,
        kind: VipKind::LoadBalancer,
        ..port("192.0.2.10", Protocol::Tcp, 80, Masquerade::Always)
    });
    let new = FilterEntry::ServicePort(ServicePortFact {
        source_ranges: vec![net("203.0.113.0/24")],
        allow_from_node: true,
        kind: VipKind::LoadBalancer,
        ..port("192.0.2.10", Protocol::Tcp, 80, Masquerade::Always)
    });
    let d = delta(
        &mut s,
        &[FilterOp::Add(new), FilterOp::Remove(old)],
        &[],
        &[],
    );
    assert_eq!(
        render_delta(T, &d.delete, &d.add),
        "delete element inet ipvs-proxy lb-allowed-v4 { 192.0.2.10 . tcp . 80 . 198.51.100.0/24 }\n\
         add element inet ipvs-proxy lb-allowed-v4 { 192.0.2.10 . tcp . 80 . 203.0.113.0/24 }\n"
    );
}

#[test]
fn node_addresses_are_elements_but_local_detection_is_skeleton() {
    let mut s = sample();
    let d = delta(
        &mut s,
        &[globals(cidrs(), false, &["172.18.0.2", "172.18.0.3"])],
        &[],
        &[],
    );
    assert_eq!(
        render_delta(T, &d.delete, &d.add),
        "add element inet ipvs-proxy nodeport-addrs-v4 { 172.18.0.3 }\n"
    );
    let op = globals(
        LocalDetect::ClusterCidr(vec![net("10.244.0.0/17")]),
        false,
        &["172.18.0.2", "172.18.0.3"],
    );
    assert_eq!(s.stage(&[op], &[], &[]), Staged::Table);
}

/// Elements of a state counted from scratch.
fn from_scratch(s: &FilterState, bound: &BTreeSet<IpAddr>) -> HashSet<Element> {
    let mut fresh = FilterState::new(0x4000, bound.clone(), true);
    let f = s.facts();
    let mut ops = vec![FilterOp::SetGlobals {
        local_detect: f.local_detect.clone(),
        masquerade_all: f.masquerade_all,
        node_port_addresses: f.node_port_addresses.clone(),
    }];
    ops.extend(f.entries.iter().cloned().map(FilterOp::Add));
    fresh.stage(&ops, &[], &[]);
    fresh.elements().copied().collect()
}

fn arb_entry() -> impl Strategy<Value = FilterEntry> {
    let addr = prop_oneof![
        (0u8..4).prop_map(|i| IpAddr::from([10, 96, 0, i])),
        (0u8..2).prop_map(|i| IpAddr::from([0xfd00, 0, 0, 0, 0, 0, 0, u16::from(i)])),
    ];
    let proto = prop_oneof![
        Just(Protocol::Tcp),
        Just(Protocol::Udp),
        Just(Protocol::Other(33))
    ];
    let masq = prop_oneof![
        Just(Masquerade::UnlessFromPod),
        Just(Masquerade::Always),
        Just(Masquerade::Never)
    ];
    let range = prop_oneof![
        Just(vec![]),
        Just(vec![net("198.51.100.0/24")]),
        Just(vec![net("198.51.100.0/24"), net("203.0.113.0/25")]),
    ];
    prop_oneof![
        (
            addr.clone(),
            proto.clone(),
            79u16..82,
            masq.clone(),
            any::<bool>(),
            range,
            any::<bool>()
        )
            .prop_map(
                |(addr, protocol, port, masquerade, mark, source_ranges, node)| {
                    FilterEntry::ServicePort(ServicePortFact {
                        protocol,
                        addr,
                        port,
                        kind: VipKind::ClusterIp,
                        masquerade,
                        pod_fwmark: mark.then_some(0x100 + u32::from(port)),
                        source_ranges,
                        allow_from_node: node,
                    })
                }
            ),
        (proto.clone(), 30000u16..30003, masq, any::<bool>()).prop_map(
            |(protocol, port, m, v6)| {
                FilterEntry::NodePort(NodePortFact {
                    protocol,
                    port,
                    family: if v6 { IpFamily::V6 } else { IpFamily::V4 },
                    masquerade: m,
                    pod_fwmark: None,
                })
            }
        ),
        (addr, proto, 8080u16..8082).prop_map(|(addr, protocol, port)| {
            FilterEntry::Hairpin(HairpinFact {
                protocol,
                addr,
                port,
            })
        }),
        (32000u16..32002).prop_map(|port| FilterEntry::HealthCheck(HealthCheckFact {
            port,
            service: ServiceName::new("d", "s"),
            local_endpoints: 1,
        })),
    ]
}

proptest! {
    /// The element commands, applied to the old table's elements, give the
    /// new table's elements (as counted from scratch); every delete names a
    /// present element and every add a new one.
    #[test]
    fn deltas_take_the_old_elements_to_the_new(
        start in proptest::collection::vec(arb_entry(), 0..12),
        steps in proptest::collection::vec(
            (proptest::collection::vec((any::<bool>(), arb_entry()), 0..6),
             proptest::collection::vec((any::<bool>(), 0u8..4), 0..3)),
            1..6),
    ) {
        let mut s = FilterState::new(0x4000, BTreeSet::new(), true);
        let mut ops = vec![globals(cidrs(), false, &["172.18.0.2"])];
        ops.extend(start.into_iter().map(FilterOp::Add));
        prop_assert_eq!(s.stage(&ops, &[], &[]), Staged::Table);
        let mut bound = BTreeSet::new();
        let mut table: HashSet<Element> = s.elements().copied().collect();
        for (changes, addrs) in steps {
            let mut ops = Vec::new();
            for (add, e) in changes {
                ops.push(if add { FilterOp::Add(e) } else { FilterOp::Remove(e) });
            }
            let (mut bind, mut unbind) = (Vec::new(), Vec::new());
            for (b, i) in addrs {
                let a = IpAddr::from([10, 96, 0, i]);
                // A plan binds or unbinds an address, never both.
                if bind.contains(&a) || unbind.contains(&a) { continue }
                if b && bound.insert(a) { bind.push(a) }
                if !b && bound.remove(&a) { unbind.push(a) }
            }
            let d = delta(&mut s, &ops, &bind, &unbind);
            for e in &d.delete {
                prop_assert!(table.remove(e), "delete of an absent element {:?}", e);
            }
            for e in &d.add {
                prop_assert!(table.insert(*e), "add of a present element {:?}", e);
            }
            prop_assert_eq!(&table, &from_scratch(&s, &bound));
        }
    }
}

/// The host kernel has nftables: have it check a full table and an element
/// update on top of it in one transaction (`nft -c` commits nothing;
/// needs CAP_NET_ADMIN, tests run as root).
#[tokio::test]
async fn kernel_accepts_the_table_and_an_update_on_top_of_it() {
    let t = "ipvs-proxy-unit-check";
    let nft = Nft::new("nft", t);
    let mut s = FilterState::new(0x4000, BTreeSet::new(), true);
    s.stage(&sample_ops(), &bound(), &[]);
    let base = render_replace(t, &s.skeleton(), s.elements());
    let ops = vec![
        FilterOp::Remove(hairpin("10.244.0.5", 8080)),
        FilterOp::Add(hairpin("10.244.0.6", 8080)),
        FilterOp::Remove(FilterEntry::ServicePort(port(
            "10.96.0.10",
            Protocol::Udp,
            53,
            Masquerade::UnlessFromPod,
        ))),
    ];
    let d = delta(&mut s, &ops, &[ip("10.96.0.99")], &[ip("fd00:96::10")]);
    let script = format!("{base}{}", render_delta(t, &d.delete, &d.add));
    if let Err(e) = nft
        .run_script(
            "check",
            &["-c", "-f", "-"],
            &script,
            &mut NftStats::default(),
        )
        .await
    {
        panic!("nft -c refused: {e}\n{script}");
    }
    for local in [
        LocalDetect::None,
        LocalDetect::BridgeInterface("cni0".into()),
        LocalDetect::InterfaceNamePrefix("veth".into()),
    ] {
        let s = with_local(local);
        if let Err(e) = nft.check(&s.skeleton(), s.elements()).await {
            panic!("nft -c refused the table: {e}\n{}", full(&s));
        }
    }
    let empty = FilterState::new(0x4000, BTreeSet::new(), true);
    nft.check(&empty.skeleton(), empty.elements())
        .await
        .expect("empty table");
}

/// A fake `nft`: a shell script in a fresh directory.
fn fake_nft(name: &str, body: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = std::env::temp_dir().join(format!("dp-fake-nft-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("nft");
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

#[tokio::test]
async fn a_hung_nft_is_killed_at_its_deadline() {
    let dir = std::env::temp_dir().join(format!("dp-fake-nft-{}-hang", std::process::id()));
    let pidfile = dir.join("pid");
    let prog = fake_nft(
        "hang",
        &format!("echo $$ > {}\nexec sleep 60", pidfile.display()),
    );
    let nft = Nft::new(&prog, "t").with_timeout(std::time::Duration::from_millis(300));
    let mut stats = NftStats::default();
    let t = std::time::Instant::now();
    let script = "add element inet t x { 1 }\n";
    let e = nft
        .transaction("update", script, &mut stats)
        .await
        .expect_err("hung");
    assert!(
        matches!(&e, crate::Error::Timeout { after, .. } if after.as_millis() == 300),
        "{e}"
    );
    assert!(t.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(stats.executions, 1);
    assert_eq!(stats.input_bytes, script.len() as u64);
    // The process is gone (killed and reaped).
    let pid = std::fs::read_to_string(&pidfile).unwrap();
    let proc = format!("/proc/{}", pid.trim());
    for _ in 0..100 {
        if !std::path::Path::new(&proc).exists() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(!std::path::Path::new(&proc).exists(), "{proc} still there");
}

#[tokio::test]
async fn a_failing_nft_is_a_typed_error_with_its_stderr_and_sees_the_script() {
    let dir = std::env::temp_dir().join(format!("dp-fake-nft-{}-fail", std::process::id()));
    let input = dir.join("input");
    let prog = fake_nft(
        "fail",
        &format!(
            "cat > {}\necho 'Error: No such file or directory' >&2\nexit 1",
            input.display()
        ),
    );
    let nft = Nft::new(&prog, "t");
    let mut stats = NftStats::default();
    let script = "delete element inet t x { 1 }\n";
    let e = nft
        .transaction("update", script, &mut stats)
        .await
        .expect_err("fails");
    match &e {
        crate::Error::Nft { op, stderr, .. } => {
            assert_eq!(op, "update table inet t");
            assert_eq!(stderr, "Error: No such file or directory");
        }
        other => panic!("{other}"),
    }
    assert_eq!(std::fs::read_to_string(&input).unwrap(), script);
    assert_eq!(stats.executions, 1);
    assert_eq!(stats.input_bytes, script.len() as u64);
    let missing = Nft::new("/nonexistent/nft", "t");
    assert!(matches!(
        missing.transaction("update", script, &mut stats).await,
        Err(crate::Error::Spawn { .. })
    ));
}

// --- nfnetlink element transactions ----------------------------------------

fn el(set: Set, key: Key, mark: Option<u32>) -> Element {
    Element { set, key, mark }
}

#[test]
fn netlink_keys_use_nft_register_layout() {
    use netlink::key_bytes;
    // addr . proto . port: each field in a 32-bit slot, zero-padded.
    assert_eq!(
        key_bytes(&Key::VipPort(ip("10.96.0.1"), Protocol::Tcp, 80)).unwrap(),
        vec![10, 96, 0, 1, 6, 0, 0, 0, 0, 80, 0, 0]
    );
    assert_eq!(
        key_bytes(&Key::ProtoPort(Protocol::Udp, 30000)).unwrap(),
        vec![17, 0, 0, 0, 0x75, 0x30, 0, 0]
    );
    // A single field is its own length (the set's key length).
    assert_eq!(key_bytes(&Key::Port(31000)).unwrap(), vec![0x79, 0x18]);
    assert_eq!(
        key_bytes(&Key::Addr(ip("192.0.2.7"))).unwrap(),
        vec![192, 0, 2, 7]
    );
    let v6 = key_bytes(&Key::VipPort(ip("fd00::1"), Protocol::Sctp, 9)).unwrap();
    assert_eq!(v6.len(), 16 + 4 + 4);
    assert_eq!(&v6[16..], &[132, 0, 0, 0, 0, 9, 0, 0]);
    let hp = key_bytes(&Key::Hairpin(ip("10.1.0.5"), Protocol::Tcp, 8080)).unwrap();
    assert_eq!(
        hp,
        vec![10, 1, 0, 5, 10, 1, 0, 5, 6, 0, 0, 0, 0x1f, 0x90, 0, 0]
    );
    // A single-field interval is nft's to split: not encoded.
    assert!(key_bytes(&Key::Net(net("10.0.0.0/8"))).is_none());
    // A concatenated range: the key holds the first address, the key end
    // the last one of the source range.
    let r = Key::VipPortNet(ip("192.0.2.1"), Protocol::Tcp, 80, net("198.51.100.0/24"));
    assert_eq!(
        key_bytes(&r).unwrap(),
        vec![192, 0, 2, 1, 6, 0, 0, 0, 0, 80, 0, 0, 198, 51, 100, 0]
    );
    assert_eq!(
        netlink::key_end_bytes(&r).unwrap(),
        vec![192, 0, 2, 1, 6, 0, 0, 0, 0, 80, 0, 0, 198, 51, 100, 255]
    );
    assert!(netlink::key_end_bytes(&Key::Addr(ip("192.0.2.7"))).is_none());
}

#[test]
fn netlink_transaction_is_deletes_then_adds_one_message_per_set() {
    let f = IpFamily::V4;
    let d = Delta {
        delete: vec![
            el(
                Set::ServicePorts(f),
                Key::VipPort(ip("10.96.0.1"), Protocol::Tcp, 80),
                None,
            ),
            el(
                Set::ServicePorts(f),
                Key::VipPort(ip("10.96.0.2"), Protocol::Tcp, 80),
                None,
            ),
        ],
        add: vec![
            el(Set::ServiceIps(f), Key::Addr(ip("10.96.0.3")), None),
            el(
                Set::PodMarks(f),
                Key::VipPort(ip("10.96.0.3"), Protocol::Tcp, 80),
                Some(0x10),
            ),
        ],
    };
    let msgs = netlink::encode(T, &d).expect("hash sets and maps are encoded");
    assert_eq!(msgs.len(), 3, "one DELSETELEM, then one NEWSETELEM per set");
    // Source ranges (a concatenated-range set) are encoded too.
    let mut with_range = d.clone();
    with_range.add.push(el(
        Set::LbAllowed(f),
        Key::VipPortNet(ip("192.0.2.1"), Protocol::Tcp, 80, net("198.51.100.0/24")),
        None,
    ));
    assert_eq!(netlink::encode(T, &with_range).unwrap().len(), 4);
    // The local CIDRs anywhere in the delta: the whole change goes to nft.
    let mut cidr = Delta::default();
    cidr.delete
        .push(el(Set::LocalCidrs(f), Key::Net(net("10.0.0.0/8")), None));
    assert!(netlink::encode(T, &cidr).is_none());
}
