//! Rendering the table as nft text: the skeleton (declarations and
//! chains) apart from the elements, the atomic replacement, and element
//! updates. Text is only written, never read back.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use proxy_core::{IpFamily, LocalDetect};

use super::spec::{l4_name, valid_ifname, Element, Key, Set, Skeleton, FAMILIES};

/// Set-name suffix of a family.
fn sfx(f: IpFamily) -> &'static str {
    match f {
        IpFamily::V4 => "v4",
        IpFamily::V6 => "v6",
    }
}

/// Match keyword (`ip` / `ip6`).
fn kw(f: IpFamily) -> &'static str {
    match f {
        IpFamily::V4 => "ip",
        IpFamily::V6 => "ip6",
    }
}

/// Address type.
fn ty(f: IpFamily) -> &'static str {
    match f {
        IpFamily::V4 => "ipv4_addr",
        IpFamily::V6 => "ipv6_addr",
    }
}

impl fmt::Display for Set {
    fn fmt(&self, o: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (base, f) = match *self {
            Set::HealthCheckNodePorts => return o.write_str("health-check-nodeports"),
            Set::LocalCidrs(f) => ("local-cidrs", f),
            Set::ServiceIps(f) => ("service-ips", f),
            Set::ServicePorts(f) => ("service-ports", f),
            Set::MasqAlways(f) => ("masq-always", f),
            Set::MasqUnlessPod(f) => ("masq-unless-pod", f),
            Set::PodMarks(f) => ("pod-marks", f),
            Set::LbRanged(f) => ("lb-ranged", f),
            Set::LbNodeAllowed(f) => ("lb-node-allowed", f),
            Set::LbAllowed(f) => ("lb-allowed", f),
            Set::NodePortAddrs(f) => ("nodeport-addrs", f),
            Set::NodePorts(f) => ("nodeports", f),
            Set::NodePortsAlways(f) => ("nodeports-always", f),
            Set::NodePortsUnlessPod(f) => ("nodeports-unless-pod", f),
            Set::NodePortMarks(f) => ("nodeport-marks", f),
            Set::Hairpin(f) => ("hairpin", f),
        };
        write!(o, "{base}-{}", sfx(f))
    }
}

impl Set {
    /// `(type, flags)` of the declaration.
    fn decl(self) -> (String, &'static str) {
        let vpt = |f| format!("{} . inet_proto . inet_service", ty(f));
        let npt = "inet_proto . inet_service".to_owned();
        match self {
            Set::HealthCheckNodePorts => ("inet_service".to_owned(), ""),
            Set::LocalCidrs(f) => (ty(f).to_owned(), "interval"),
            Set::ServiceIps(f) | Set::NodePortAddrs(f) => (ty(f).to_owned(), ""),
            Set::ServicePorts(f)
            | Set::MasqAlways(f)
            | Set::MasqUnlessPod(f)
            | Set::LbRanged(f)
            | Set::LbNodeAllowed(f) => (vpt(f), ""),
            Set::PodMarks(f) => (format!("{} : mark", vpt(f)), ""),
            Set::LbAllowed(f) => (format!("{} . {}", vpt(f), ty(f)), "interval"),
            Set::NodePorts(_) | Set::NodePortsAlways(_) | Set::NodePortsUnlessPod(_) => (npt, ""),
            Set::NodePortMarks(_) => (format!("{npt} : mark"), ""),
            Set::Hairpin(f) => (format!("{} . {}", ty(f), vpt(f)), ""),
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, o: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = |p| l4_name(p).unwrap_or("none");
        match *self {
            Key::Port(n) => write!(o, "{n}"),
            Key::Addr(a) => write!(o, "{a}"),
            Key::Net(n) => write!(o, "{n}"),
            Key::VipPort(a, l4, n) => write!(o, "{a} . {} . {n}", p(l4)),
            Key::VipPortNet(a, l4, n, net) => write!(o, "{a} . {} . {n} . {net}", p(l4)),
            Key::ProtoPort(l4, n) => write!(o, "{} . {n}", p(l4)),
            Key::Hairpin(a, l4, n) => write!(o, "{a} . {a} . {} . {n}", p(l4)),
        }
    }
}

impl fmt::Display for Element {
    /// The element as nft writes it: `key` or `key : mark`.
    fn fmt(&self, o: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.mark {
            Some(m) => write!(o, "{} : {m:#x}", self.key),
            None => write!(o, "{}", self.key),
        }
    }
}

/// `(is-local, is-not-local)` match expressions for family `f`; `None`
/// when nothing can be local for this family (then "not local" is
/// everything: the empty string).
fn local_exprs(s: &Skeleton, f: IpFamily) -> Option<(String, String)> {
    let (k, x) = (kw(f), sfx(f));
    match &s.local {
        LocalDetect::None => None,
        LocalDetect::ClusterCidr(_) | LocalDetect::NodeCidr(_) if s.local_cidrs(f).is_empty() => {
            None
        }
        LocalDetect::ClusterCidr(_) | LocalDetect::NodeCidr(_) => Some((
            format!("{k} saddr @local-cidrs-{x}"),
            format!("{k} saddr != @local-cidrs-{x}"),
        )),
        LocalDetect::BridgeInterface(i) if valid_ifname(i) => {
            Some((format!("iifname \"{i}\""), format!("iifname != \"{i}\"")))
        }
        LocalDetect::InterfaceNamePrefix(p) if valid_ifname(p) => {
            Some((format!("iifname \"{p}*\""), format!("iifname != \"{p}*\"")))
        }
        // Invalid names are refused by `validate`; render nothing local.
        LocalDetect::BridgeInterface(_) | LocalDetect::InterfaceNamePrefix(_) => None,
    }
}

/// The table's skeleton: every set and map declared (empty), every chain
/// with its rules. A function of [`Skeleton`] only, O(1) in the number of
/// Services.
pub fn render_skeleton(table: &str, sk: &Skeleton) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "table inet {table} {{");
    for set in Set::all() {
        let (t, flags) = set.decl();
        let kind = if set.is_map() { "map" } else { "set" };
        let _ = write!(o, "\t{kind} {set} {{\n\t\ttype {t}\n");
        if !flags.is_empty() {
            let _ = writeln!(o, "\t\tflags {flags}");
        }
        o.push_str("\t}\n");
    }

    let bit = sk.masquerade_bit;
    let masq = format!("ct mark set ct mark | {bit:#x}");

    // prerouting: select firewall-mark services for pods, mark for SNAT.
    o.push_str(
        "\tchain mark-pre {\n\t\ttype filter hook prerouting priority mangle; policy accept;\n",
    );
    for f in FAMILIES {
        let (k, s) = (kw(f), sfx(f));
        let key = format!("{k} daddr . meta l4proto . th dport");
        let np = format!("{k} daddr @nodeport-addrs-{s} meta l4proto . th dport");
        let local = local_exprs(sk, f);
        if let Some((is_local, _)) = &local {
            let _ = writeln!(o, "\t\t{is_local} meta mark set {key} map @pod-marks-{s}");
            let _ = writeln!(
                    o,
                    "\t\t{is_local} {k} daddr @nodeport-addrs-{s} meta mark set meta l4proto . th dport map @nodeport-marks-{s}"
                );
        }
        let not_local = local.map(|(_, n)| format!("{n} ")).unwrap_or_default();
        let _ = writeln!(o, "\t\tct state new {key} @masq-always-{s} {masq}");
        let _ = writeln!(
            o,
            "\t\tct state new {not_local}{key} @masq-unless-pod-{s} {masq}"
        );
        let _ = writeln!(o, "\t\tct state new {np} @nodeports-always-{s} {masq}");
        let _ = writeln!(
            o,
            "\t\tct state new {not_local}{np} @nodeports-unless-pod-{s} {masq}"
        );
    }
    o.push_str("\t}\n");

    // output: the node itself counts as inside (reaches every endpoint)
    // and is always masqueraded: its source address may be the VIP.
    o.push_str("\tchain mark-out {\n\t\ttype route hook output priority mangle; policy accept;\n");
    for f in FAMILIES {
        let (k, s) = (kw(f), sfx(f));
        let key = format!("{k} daddr . meta l4proto . th dport");
        let np = format!("{k} daddr @nodeport-addrs-{s} meta l4proto . th dport");
        let _ = writeln!(o, "\t\t{key} @lb-ranged-{s} jump lb-ranges-{s}");
        let _ = writeln!(o, "\t\tmeta mark set {key} map @pod-marks-{s}");
        let _ = writeln!(
                o,
                "\t\t{k} daddr @nodeport-addrs-{s} meta mark set meta l4proto . th dport map @nodeport-marks-{s}"
            );
        let _ = writeln!(o, "\t\tct state new {key} @service-ports-{s} {masq}");
        let _ = writeln!(o, "\t\tct state new {np} @nodeports-{s} {masq}");
    }
    o.push_str("\t}\n");

    // input: source ranges, health checks, the service-IP guard.
    o.push_str("\tchain filter-in {\n\t\ttype filter hook input priority filter; policy accept;\n");
    o.push_str("\t\tct state != new accept\n");
    for f in FAMILIES {
        let (k, s) = (kw(f), sfx(f));
        let _ = writeln!(
            o,
            "\t\t{k} daddr . meta l4proto . th dport @lb-ranged-{s} jump lb-ranges-{s}"
        );
    }
    o.push_str("\t\ttcp dport @health-check-nodeports accept\n");
    for f in FAMILIES {
        let (k, s) = (kw(f), sfx(f));
        let _ = writeln!(o, "\t\t{k} daddr @service-ips-{s} jump service-guard-{s}");
    }
    o.push_str("\t}\n");
    for f in FAMILIES {
        let (k, s) = (kw(f), sfx(f));
        let key = format!("{k} daddr . meta l4proto . th dport");
        let _ = writeln!(
                o,
                "\tchain lb-ranges-{s} {{\n\t\t{key} . {k} saddr @lb-allowed-{s} return\n\t\tfib saddr type local {key} @lb-node-allowed-{s} return\n\t\tdrop\n\t}}"
            );
        let _ = writeln!(
                o,
                "\tchain service-guard-{s} {{\n\t\t{key} @service-ports-{s} return\n\t\tmeta l4proto tcp reject with tcp reset\n\t\treject\n\t}}"
            );
    }

    let _ = writeln!(
            o,
            "\tchain filter-fwd {{\n\t\ttype filter hook forward priority filter; policy accept;\n\t\tct mark & {bit:#x} == {bit:#x} accept\n\t\tct state established,related accept\n\t}}"
        );

    o.push_str(
        "\tchain nat-post {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n",
    );
    let _ = writeln!(o, "\t\tct mark & {bit:#x} == {bit:#x} counter masquerade");
    for f in FAMILIES {
        let (k, s) = (kw(f), sfx(f));
        let _ = writeln!(
            o,
            "\t\t{k} saddr . {k} daddr . meta l4proto . th dport @hairpin-{s} counter masquerade"
        );
    }
    o.push_str("\t}\n}\n");
    o
}

/// `add element` lines for `elements`, one line per set (sorted, so the
/// text is deterministic).
fn add_lines<'a>(o: &mut String, table: &str, elements: impl Iterator<Item = &'a Element>) {
    let mut by_set: BTreeMap<Set, Vec<&Element>> = BTreeMap::new();
    for e in elements {
        by_set.entry(e.set).or_default().push(e);
    }
    for (set, mut es) in by_set {
        es.sort_unstable();
        let _ = write!(o, "add element inet {table} {set} {{ ");
        for (i, e) in es.iter().enumerate() {
            if i > 0 {
                o.push_str(", ");
            }
            let _ = write!(o, "{e}");
        }
        o.push_str(" }\n");
    }
}

/// The transaction that replaces our table atomically: create it if
/// missing, delete it, declare the skeleton, add every element - one
/// `nft -f` run, one kernel transaction, so packets never see a
/// half-written table. O(elements).
pub fn render_replace<'a>(
    table: &str,
    skeleton: &Skeleton,
    elements: impl Iterator<Item = &'a Element>,
) -> String {
    let mut o = format!("table inet {table} {{}}\ndelete table inet {table}\n");
    o.push_str(&render_skeleton(table, skeleton));
    add_lines(&mut o, table, elements);
    o
}

/// The transaction for an element change: `delete element` lines (map
/// elements by key), then `add element` lines. O(changed elements).
pub fn render_delta(table: &str, delete: &[Element], add: &[Element]) -> String {
    let mut o = String::new();
    let mut by_set: BTreeMap<Set, Vec<&Element>> = BTreeMap::new();
    for e in delete {
        by_set.entry(e.set).or_default().push(e);
    }
    for (set, es) in by_set {
        let _ = write!(o, "delete element inet {table} {set} {{ ");
        for (i, e) in es.iter().enumerate() {
            if i > 0 {
                o.push_str(", ");
            }
            // A map element is deleted by its key.
            let _ = write!(o, "{}", e.key);
        }
        o.push_str(" }\n");
    }
    add_lines(&mut o, table, add.iter());
    o
}
