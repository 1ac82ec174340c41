//! Unit tests of rendering and updates.

use std::net::IpAddr;

use ipnet::IpNet;

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}
fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}
fn vp(a: &str, p: L4, port: u16) -> VipPort {
    VipPort::new(ip(a), p, port)
}

/// A ClusterIP (TCP+UDP, v4 and v6), an LB IP with source ranges, an
/// ETP-Local LB port with its pod mark, node ports, a hairpin endpoint.
fn sample() -> FilterSpec {
    let mut s = FilterSpec {
        local: LocalMatch::Cidrs(vec![net("10.244.0.0/16"), net("fd00:244::/56")]),
        ..FilterSpec::default()
    };
    s.service_ips
        .extend([ip("10.96.0.10"), ip("192.0.2.10"), ip("fd00:96::10")]);
    let unless = PortRule::masq(Masq::UnlessFromPod);
    s.ports
        .insert(vp("10.96.0.10", L4::Tcp, 80), unless.clone());
    s.ports
        .insert(vp("10.96.0.10", L4::Udp, 53), unless.clone());
    s.ports.insert(vp("fd00:96::10", L4::Tcp, 80), unless);
    s.ports.insert(
        vp("192.0.2.10", L4::Tcp, 80),
        PortRule {
            source_ranges: vec![net("198.51.100.0/24"), net("198.51.100.7/32")],
            allow_from_node: true,
            ..PortRule::masq(Masq::Always)
        },
    );
    s.ports.insert(
        vp("192.0.2.10", L4::Tcp, 443),
        PortRule {
            pod_mark: Some(0x0101_0000 | 30443),
            ..PortRule::masq(Masq::Never)
        },
    );
    s.node_port_addrs.insert(ip("172.18.0.2"));
    s.node_ports.insert(
        (Family::V4, L4::Tcp, 30080),
        NodePortRule {
            masq: Masq::Always,
            pod_mark: None,
        },
    );
    s.node_ports.insert(
        (Family::V4, L4::Tcp, 30443),
        NodePortRule {
            masq: Masq::Never,
            pod_mark: Some(0x0101_0000 | 30443),
        },
    );
    s.health_check_node_ports.insert(32000);
    s.hairpin.insert(vp("10.244.0.5", L4::Tcp, 8080));
    s
}

/// The `elements = { ... }` line of set/map `name`.
fn elements(text: &str, name: &str) -> String {
    let head = text
        .find(&format!("set {name} {{"))
        .or_else(|| text.find(&format!("map {name} {{")))
        .unwrap_or_else(|| panic!("no set {name}"));
    let body = &text[head..];
    let end = body.find("\t}").unwrap();
    body[..end]
        .lines()
        .find_map(|l| l.trim().strip_prefix("elements = "))
        .unwrap_or("")
        .to_owned()
}

fn chain<'a>(text: &'a str, name: &str) -> &'a str {
    let head = text.find(&format!("chain {name} {{")).unwrap();
    let body = &text[head..];
    &body[..body.find("\t}").unwrap()]
}

#[test]
fn replace_is_one_transaction_on_our_table_only() {
    let t = sample().render_replace("ipvs-proxy");
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(lines[0], "table inet ipvs-proxy {}");
    assert_eq!(lines[1], "delete table inet ipvs-proxy");
    assert_eq!(lines[2], "table inet ipvs-proxy {");
    for l in t.lines().filter(|l| l.contains("table ")) {
        assert!(l.contains("table inet ipvs-proxy"), "{l}");
    }
    assert!(!t.contains("flush ruleset"));
}

#[test]
fn sets_hold_the_facts_per_family() {
    let t = sample().render_table("ipvs-proxy");
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
}

#[test]
fn etp_local_ports_keep_the_source() {
    let t = sample().render_table("ipvs-proxy");
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
    let t = sample().render_table("ipvs-proxy");
    assert_eq!(
        elements(&t, "lb-allowed-v4"),
        "{ 192.0.2.10 . tcp . 80 . 198.51.100.0/24 }"
    );
    assert_eq!(
        elements(&t, "lb-node-allowed-v4"),
        "{ 192.0.2.10 . tcp . 80 }"
    );
}

#[test]
fn pod_traffic_is_recognised_by_source_or_interface() {
    let t = sample().render_table("ipvs-proxy");
    let pre = chain(&t, "mark-pre");
    assert!(pre.contains(
        "ip saddr @local-cidrs-v4 meta mark set ip daddr . meta l4proto . th dport map @pod-marks-v4"
    ));
    assert!(pre.contains(
        "ct state new ip saddr != @local-cidrs-v4 ip daddr . meta l4proto . th dport @masq-unless-pod-v4"
    ));
    let mut s = sample();
    s.local = LocalMatch::InterfacePrefix("veth".into());
    let t = s.render_table("ipvs-proxy");
    let pre = chain(&t, "mark-pre");
    assert!(pre.contains("iifname \"veth*\" meta mark set"));
    assert!(pre.contains("ct state new iifname != \"veth*\" ip daddr"));
    assert_eq!(elements(&t, "local-cidrs-v4"), "");
}

#[test]
fn without_local_detection_everything_is_masqueraded_and_unmarked() {
    let mut s = sample();
    s.local = LocalMatch::Nothing;
    let t = s.render_table("ipvs-proxy");
    let pre = chain(&t, "mark-pre");
    assert!(!pre.contains("map @pod-marks-v4"));
    assert!(pre.contains(
        "\t\tct state new ip daddr . meta l4proto . th dport @masq-unless-pod-v4 ct mark set"
    ));
}

#[test]
fn masquerade_all_marks_every_port_except_none() {
    let mut s = sample();
    s.masquerade_all = true;
    let t = s.render_table("ipvs-proxy");
    assert_eq!(elements(&t, "masq-unless-pod-v4"), "");
    assert_eq!(
        elements(&t, "masq-always-v4"),
        elements(&t, "service-ports-v4")
    );
    assert_eq!(
        elements(&t, "nodeports-always-v4"),
        "{ tcp . 30080, tcp . 30443 }"
    );
}

#[test]
fn custom_bit_is_used_everywhere() {
    let mut s = sample();
    s.masquerade_bit = 0x8000;
    let t = s.render_table("ipvs-proxy");
    assert!(!t.contains("0x4000"));
    assert!(t.contains("ct mark & 0x8000 == 0x8000 counter masquerade"));
}

#[test]
fn bad_interface_names_are_refused() {
    let mut s = sample();
    s.local = LocalMatch::Interface("br0\" accept; #".into());
    assert!(s.validate().is_err());
    assert!(!s.render_table("t").contains("accept; #"));
    s.local = LocalMatch::Interface("cni0".into());
    assert!(s.validate().is_ok());
}

#[test]
fn empty_spec_renders_without_elements() {
    let t = FilterSpec::default().render_table("ipvs-proxy");
    assert!(!t.contains("elements"));
    assert!(t.contains("chain service-guard-v4"));
}

#[test]
fn element_changes_become_element_updates() {
    let old = sample();
    let mut new = sample();
    new.hairpin.remove(&vp("10.244.0.5", L4::Tcp, 8080));
    new.hairpin.insert(vp("10.244.0.6", L4::Tcp, 8080));
    new.ports.insert(
        vp("10.96.0.11", L4::Tcp, 80),
        PortRule::masq(Masq::UnlessFromPod),
    );
    new.ports
        .get_mut(&vp("192.0.2.10", L4::Tcp, 443))
        .unwrap()
        .pod_mark = Some(7);
    let u = render_update(&old, &new, "t").expect("same rules");
    let lines: Vec<&str> = u.lines().collect();
    assert!(
        lines
            .contains(&"delete element inet t hairpin-v4 { 10.244.0.5 . 10.244.0.5 . tcp . 8080 }"),
        "{u}"
    );
    assert!(
        lines.contains(&"add element inet t hairpin-v4 { 10.244.0.6 . 10.244.0.6 . tcp . 8080 }"),
        "{u}"
    );
    assert!(
        lines.contains(&"add element inet t service-ips-v4 { 10.96.0.11 }"),
        "{u}"
    );
    // A changed map value: delete by key, add with the new value.
    assert!(
        lines.contains(&"delete element inet t pod-marks-v4 { 192.0.2.10 . tcp . 443 }"),
        "{u}"
    );
    assert!(
        lines.contains(&"add element inet t pod-marks-v4 { 192.0.2.10 . tcp . 443 : 0x7 }"),
        "{u}"
    );
    // Deletes come before adds.
    let first_add = lines.iter().position(|l| l.starts_with("add")).unwrap();
    assert!(lines[..first_add].iter().all(|l| l.starts_with("delete")));
    assert!(lines[first_add..].iter().all(|l| l.starts_with("add")));
    assert_eq!(render_update(&old, &old, "t").as_deref(), Some(""));
}

#[test]
fn rule_changes_need_a_full_replace() {
    let old = sample();
    let mut new = sample();
    new.local = LocalMatch::Interface("cni0".into());
    assert_eq!(render_update(&old, &new, "t"), None);
    let mut new = sample();
    new.masquerade_bit = 0x8000;
    assert_eq!(render_update(&old, &new, "t"), None);
}

/// The update script is valid on top of the old table (`nft -c` of
/// old table + update in one transaction, against the host kernel).
#[test]
fn kernel_accepts_an_update_on_top_of_the_old_table() {
    let old = sample();
    let mut new = sample();
    new.hairpin.clear();
    new.service_ips.insert(ip("10.96.0.99"));
    new.ports.remove(&vp("192.0.2.10", L4::Tcp, 80));
    let t = "ipvs-proxy-unit-update";
    let script = format!(
        "{}{}",
        old.render_replace(t),
        render_update(&old, &new, t).unwrap()
    );
    let nft = Nft::new("nft", t);
    if let Err(e) = nft.run_script("check", &["-c", "-f", "-"], &script) {
        panic!("nft -c refused: {e}\n{script}");
    }
}

/// The host kernel has nftables: have it validate the rendered text.
/// Needs CAP_NET_ADMIN (tests run as root); `nft -c` commits nothing.
#[test]
fn kernel_accepts_rendered_ruleset() {
    let nft = Nft::new("nft", "ipvs-proxy-unit-check");
    let mut all = sample();
    all.masquerade_all = true;
    let mut iface = sample();
    iface.local = LocalMatch::Interface("cni0".into());
    for s in [sample(), FilterSpec::default(), all, iface] {
        if let Err(e) = nft.check(&s) {
            panic!(
                "nft -c refused the ruleset: {e}\n{}",
                s.render_replace("ipvs-proxy-unit-check")
            );
        }
    }
}
