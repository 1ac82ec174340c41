//! Rendering a [`FilterSpec`] as nft text.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use ipnet::IpNet;

use super::spec::{Family, FilterSpec, LocalMatch, Masq, NodePortRule, PortRule, VipPort, L4};

/// Writes `set NAME { type T; [flags F;] [elements = { ... }] }`.
fn set(out: &mut String, name: &str, ty: &str, flags: &str, elems: &[String]) {
    let _ = write!(out, "\tset {name} {{\n\t\ttype {ty}\n");
    if !flags.is_empty() {
        let _ = writeln!(out, "\t\tflags {flags}");
    }
    if !elems.is_empty() {
        let _ = writeln!(out, "\t\telements = {{ {} }}", elems.join(", "));
    }
    out.push_str("\t}\n");
}

fn map(out: &mut String, name: &str, ty: &str, elems: &[String]) {
    let _ = write!(out, "\tmap {name} {{\n\t\ttype {ty} : mark\n");
    if !elems.is_empty() {
        let _ = writeln!(out, "\t\telements = {{ {} }}", elems.join(", "));
    }
    out.push_str("\t}\n");
}

/// Aggregated (non-overlapping) networks of one family: interval sets
/// refuse overlapping elements.
pub(super) fn nets(f: Family, nets: &[IpNet]) -> Vec<IpNet> {
    let mine: Vec<IpNet> = nets
        .iter()
        .filter(|n| f.has_net(n))
        .map(IpNet::trunc)
        .collect();
    IpNet::aggregate(&mine)
}

impl FilterSpec {
    /// The table definition (without the replace preamble).
    pub fn render_table(&self, table: &str) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "table inet {table} {{");
        let hc: Vec<String> = self
            .health_check_node_ports
            .iter()
            .map(u16::to_string)
            .collect();
        set(&mut o, "health-check-nodeports", "inet_service", "", &hc);
        for f in Family::BOTH {
            self.render_sets(f, &mut o);
        }

        let bit = self.masquerade_bit;
        let masq = format!("ct mark set ct mark | {bit:#x}");

        // prerouting: select firewall-mark services for pods, mark for SNAT.
        o.push_str(
            "\tchain mark-pre {\n\t\ttype filter hook prerouting priority mangle; policy accept;\n",
        );
        for f in Family::BOTH {
            let (k, s) = (f.kw(), f.sfx());
            let key = format!("{k} daddr . meta l4proto . th dport");
            let np = format!("{k} daddr @nodeport-addrs-{s} meta l4proto . th dport");
            let local = self.local_exprs(f);
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
        o.push_str(
            "\tchain mark-out {\n\t\ttype route hook output priority mangle; policy accept;\n",
        );
        for f in Family::BOTH {
            let (k, s) = (f.kw(), f.sfx());
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
        o.push_str(
            "\tchain filter-in {\n\t\ttype filter hook input priority filter; policy accept;\n",
        );
        o.push_str("\t\tct state != new accept\n");
        for f in Family::BOTH {
            let (k, s) = (f.kw(), f.sfx());
            let _ = writeln!(
                o,
                "\t\t{k} daddr . meta l4proto . th dport @lb-ranged-{s} jump lb-ranges-{s}"
            );
        }
        o.push_str("\t\ttcp dport @health-check-nodeports accept\n");
        for f in Family::BOTH {
            let (k, s) = (f.kw(), f.sfx());
            let _ = writeln!(o, "\t\t{k} daddr @service-ips-{s} jump service-guard-{s}");
        }
        o.push_str("\t}\n");
        for f in Family::BOTH {
            let (k, s) = (f.kw(), f.sfx());
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
        for f in Family::BOTH {
            let (k, s) = (f.kw(), f.sfx());
            let _ = writeln!(
                o,
                "\t\t{k} saddr . {k} daddr . meta l4proto . th dport @hairpin-{s} counter masquerade"
            );
        }
        o.push_str("\t}\n}\n");
        o
    }

    fn render_sets(&self, f: Family, o: &mut String) {
        let (s, ty) = (f.sfx(), f.ty());
        let vpt = format!("{ty} . inet_proto . inet_service");
        let ports: Vec<(&VipPort, &PortRule)> =
            self.ports.iter().filter(|(v, _)| f.has(&v.addr)).collect();
        let pick = |pred: &dyn Fn(&PortRule) -> bool| -> Vec<String> {
            ports
                .iter()
                .filter(|(_, r)| pred(r))
                .map(|(v, _)| v.to_string())
                .collect()
        };
        let local_cidrs: Vec<String> = match &self.local {
            LocalMatch::Cidrs(c) => nets(f, c).iter().map(ToString::to_string).collect(),
            _ => Vec::new(),
        };
        set(o, &format!("local-cidrs-{s}"), ty, "interval", &local_cidrs);
        let ips: Vec<String> = self
            .service_ips
            .iter()
            .chain(ports.iter().map(|(v, _)| &v.addr))
            .filter(|a| f.has(a))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .map(ToString::to_string)
            .collect();
        set(o, &format!("service-ips-{s}"), ty, "", &ips);
        set(o, &format!("service-ports-{s}"), &vpt, "", &pick(&|_| true));
        set(
            o,
            &format!("masq-always-{s}"),
            &vpt,
            "",
            &pick(&|r| self.eff(r.masq) == Masq::Always),
        );
        set(
            o,
            &format!("masq-unless-pod-{s}"),
            &vpt,
            "",
            &pick(&|r| self.eff(r.masq) == Masq::UnlessFromPod),
        );
        let marks: Vec<String> = ports
            .iter()
            .filter_map(|(v, r)| r.pod_mark.map(|m| format!("{v} : {m:#x}")))
            .collect();
        map(o, &format!("pod-marks-{s}"), &vpt, &marks);
        set(
            o,
            &format!("lb-ranged-{s}"),
            &vpt,
            "",
            &pick(&|r| !r.source_ranges.is_empty()),
        );
        set(
            o,
            &format!("lb-node-allowed-{s}"),
            &vpt,
            "",
            &pick(&|r| !r.source_ranges.is_empty() && r.allow_from_node),
        );
        let mut allowed = Vec::new();
        for (v, r) in &ports {
            for n in nets(f, &r.source_ranges) {
                allowed.push(format!("{v} . {n}"));
            }
        }
        set(
            o,
            &format!("lb-allowed-{s}"),
            &format!("{vpt} . {ty}"),
            "interval",
            &allowed,
        );

        let npa: Vec<String> = self
            .node_port_addrs
            .iter()
            .filter(|a| f.has(a))
            .map(ToString::to_string)
            .collect();
        set(o, &format!("nodeport-addrs-{s}"), ty, "", &npa);
        let nps: Vec<(L4, u16, &NodePortRule)> = self
            .node_ports
            .iter()
            .filter(|((fam, _, _), _)| *fam == f)
            .map(|((_, p, n), r)| (*p, *n, r))
            .collect();
        let np_pick = |pred: &dyn Fn(&NodePortRule) -> bool| -> Vec<String> {
            nps.iter()
                .filter(|(_, _, r)| pred(r))
                .map(|(p, n, _)| format!("{} . {n}", p.as_str()))
                .collect()
        };
        let npt = "inet_proto . inet_service";
        set(o, &format!("nodeports-{s}"), npt, "", &np_pick(&|_| true));
        set(
            o,
            &format!("nodeports-always-{s}"),
            npt,
            "",
            &np_pick(&|r| self.eff(r.masq) == Masq::Always),
        );
        set(
            o,
            &format!("nodeports-unless-pod-{s}"),
            npt,
            "",
            &np_pick(&|r| self.eff(r.masq) == Masq::UnlessFromPod),
        );
        let np_marks: Vec<String> = nps
            .iter()
            .filter_map(|(p, n, r)| r.pod_mark.map(|m| format!("{} . {n} : {m:#x}", p.as_str())))
            .collect();
        map(o, &format!("nodeport-marks-{s}"), npt, &np_marks);

        let hp: Vec<String> = self
            .hairpin
            .iter()
            .filter(|v| f.has(&v.addr))
            .map(|v| format!("{} . {v}", v.addr))
            .collect();
        set(
            o,
            &format!("hairpin-{s}"),
            &format!("{ty} . {vpt}"),
            "",
            &hp,
        );
    }

    /// The full transaction that replaces our table atomically: create it if
    /// missing, delete it, define it anew - one `nft -f` run, one kernel
    /// transaction, so packets never see a half-written table.
    pub fn render_replace(&self, table: &str) -> String {
        format!(
            "table inet {table} {{}}\ndelete table inet {table}\n{}",
            self.render_table(table)
        )
    }
}
