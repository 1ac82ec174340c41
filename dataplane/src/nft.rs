//! The one nftables table of ours (`inet ipvs-proxy`), rendered from the
//! packet-filter facts and replaced atomically with `nft -f -`.
//!
//! How it fits around IPVS (hook priorities in brackets):
//! - IPVS schedules packets to local VIPs in LOCAL_IN [98] and packets from
//!   local processes in LOCAL_OUT [-98]; replies are un-NATed in FORWARD.
//! - `mark-pre` (prerouting [mangle -150]) and `mark-out` (output, route
//!   type [mangle]) run before IPVS: they set the conntrack mark bit
//!   [`FilterSpec::masquerade_bit`] on new connections that must be
//!   source-NATed, and set the packet mark that selects a firewall-mark
//!   virtual server for pods (and the node) reaching an
//!   `externalTrafficPolicy: Local` VIP. The conntrack mark is used for
//!   masquerading so that it never disturbs the packet mark IPVS matches.
//! - `filter-in` (input [filter 0]) runs before IPVS's LOCAL_IN hook: load
//!   balancer source ranges, health-check node ports, and rejecting new
//!   connections to service IPs on ports that are not services.
//! - `nat-post` (postrouting [srcnat 100]): masquerade marked connections
//!   (this works for IPVS traffic because `net.ipv4.vs.conntrack=1` keeps
//!   the connection's conntrack entry) and hairpin connections (a pod
//!   reaching itself through a Service).
//! - `filter-fwd` (forward [filter]): accept marked and established
//!   traffic. In nftables an accept only ends our own chain; it cannot
//!   override a drop in another table.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;

use crate::cmd;
use crate::error::{Error, Result};

/// Our table's family and name.
pub const DEFAULT_TABLE: &str = "ipvs-proxy";

/// The default conntrack-mark bit meaning "masquerade this connection"
/// (kube-proxy's 0x4000, but on the conntrack mark).
pub const DEFAULT_MASQUERADE_BIT: u32 = 0x4000;

/// A transport protocol the filter matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum L4 {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl L4 {
    /// nft's name.
    pub fn as_str(self) -> &'static str {
        match self {
            L4::Tcp => "tcp",
            L4::Udp => "udp",
            L4::Sctp => "sctp",
        }
    }

    /// From an IPVS protocol; other protocols have no filter rules.
    pub fn from_ipvs(p: ipvs::Protocol) -> Option<L4> {
        match p {
            ipvs::Protocol::Tcp => Some(L4::Tcp),
            ipvs::Protocol::Udp => Some(L4::Udp),
            ipvs::Protocol::Sctp => Some(L4::Sctp),
            _ => None,
        }
    }
}

/// A service address, protocol and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VipPort {
    /// Service IP.
    pub addr: IpAddr,
    /// Protocol.
    pub protocol: L4,
    /// Port.
    pub port: u16,
}

impl VipPort {
    /// Shorthand constructor.
    pub fn new(addr: IpAddr, protocol: L4, port: u16) -> Self {
        VipPort {
            addr,
            protocol,
            port,
        }
    }
}

impl fmt::Display for VipPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} . {} . {}",
            self.addr,
            self.protocol.as_str(),
            self.port
        )
    }
}

/// Everything the packet filter needs, already decided (by proxy-core).
/// Addresses of both families may be mixed: each rule is rendered once per
/// family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterSpec {
    /// The conntrack-mark bit meaning "masquerade".
    pub masquerade_bit: u32,
    /// Masquerade every connection to a service (`masqueradeAll`).
    pub masquerade_all: bool,
    /// Pod addresses of the cluster (local-traffic detection): sources
    /// outside them are masqueraded on ClusterIPs; sources inside them get
    /// the firewall marks of `pod_source_marks`.
    pub cluster_cidrs: Vec<IpNet>,
    /// Every address bound on the dummy interface.
    pub service_ips: BTreeSet<IpAddr>,
    /// ClusterIP ports (masqueraded when the source is outside the cluster).
    pub cluster_ports: BTreeSet<VipPort>,
    /// Load-balancer and external-IP ports that masquerade every source.
    pub external_ports: BTreeSet<VipPort>,
    /// Load-balancer and external-IP ports with `externalTrafficPolicy:
    /// Local`: the source is kept.
    pub external_local_ports: BTreeSet<VipPort>,
    /// Node addresses that serve node ports.
    pub node_port_addrs: BTreeSet<IpAddr>,
    /// Node ports that masquerade every source.
    pub node_ports: BTreeSet<(L4, u16)>,
    /// Node ports with `externalTrafficPolicy: Local`: the source is kept.
    pub node_ports_local: BTreeSet<(L4, u16)>,
    /// Health-check node ports (TCP) to accept.
    pub health_check_node_ports: BTreeSet<u16>,
    /// Load-balancer ports with source ranges: only these sources (and the
    /// node itself) may connect.
    pub lb_source_ranges: BTreeMap<VipPort, Vec<IpNet>>,
    /// Local endpoint addresses: a connection from one of them to itself
    /// (through a Service) is masqueraded.
    pub hairpin: BTreeSet<IpAddr>,
    /// Firewall marks selecting the cluster-wide virtual server for pods and
    /// the node reaching an `externalTrafficPolicy: Local` VIP (load-balancer
    /// IPs, external IPs and `node-address:nodePort`).
    pub pod_source_marks: BTreeMap<VipPort, u32>,
}

impl Default for FilterSpec {
    fn default() -> Self {
        FilterSpec {
            masquerade_bit: DEFAULT_MASQUERADE_BIT,
            masquerade_all: false,
            cluster_cidrs: Vec::new(),
            service_ips: BTreeSet::new(),
            cluster_ports: BTreeSet::new(),
            external_ports: BTreeSet::new(),
            external_local_ports: BTreeSet::new(),
            node_port_addrs: BTreeSet::new(),
            node_ports: BTreeSet::new(),
            node_ports_local: BTreeSet::new(),
            health_check_node_ports: BTreeSet::new(),
            lb_source_ranges: BTreeMap::new(),
            hairpin: BTreeSet::new(),
            pod_source_marks: BTreeMap::new(),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Fam {
    V4,
    V6,
}

impl Fam {
    fn has(self, a: &IpAddr) -> bool {
        matches!(
            (self, a),
            (Fam::V4, IpAddr::V4(_)) | (Fam::V6, IpAddr::V6(_))
        )
    }
    fn has_net(self, n: &IpNet) -> bool {
        matches!((self, n), (Fam::V4, IpNet::V4(_)) | (Fam::V6, IpNet::V6(_)))
    }
    /// Set suffix.
    fn sfx(self) -> &'static str {
        match self {
            Fam::V4 => "v4",
            Fam::V6 => "v6",
        }
    }
    /// Match keyword (`ip` / `ip6`).
    fn kw(self) -> &'static str {
        match self {
            Fam::V4 => "ip",
            Fam::V6 => "ip6",
        }
    }
    /// Address type.
    fn ty(self) -> &'static str {
        match self {
            Fam::V4 => "ipv4_addr",
            Fam::V6 => "ipv6_addr",
        }
    }
}

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

fn vip_elems<'a>(f: Fam, it: impl IntoIterator<Item = &'a VipPort>) -> Vec<String> {
    it.into_iter()
        .filter(|v| f.has(&v.addr))
        .map(ToString::to_string)
        .collect()
}

/// Aggregated (non-overlapping) networks of one family: interval sets
/// refuse overlapping elements.
fn nets(f: Fam, nets: &[IpNet]) -> Vec<IpNet> {
    let mine: Vec<IpNet> = nets
        .iter()
        .filter(|n| f.has_net(n))
        .map(IpNet::trunc)
        .collect();
    IpNet::aggregate(&mine)
}

impl FilterSpec {
    fn all_service_ports(&self) -> BTreeSet<VipPort> {
        let mut s = self.cluster_ports.clone();
        s.extend(self.external_ports.iter().copied());
        s.extend(self.external_local_ports.iter().copied());
        s.extend(self.lb_source_ranges.keys().copied());
        s
    }

    /// The table definition (without the replace preamble).
    pub fn render_table(&self, table: &str) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "table inet {table} {{");
        let all_ports = self.all_service_ports();
        let np = |s: &BTreeSet<(L4, u16)>| -> Vec<String> {
            s.iter()
                .map(|(p, n)| format!("{} . {n}", p.as_str()))
                .collect()
        };
        set(
            &mut o,
            "nodeports",
            "inet_proto . inet_service",
            "",
            &np(&self.node_ports),
        );
        set(
            &mut o,
            "nodeports-local",
            "inet_proto . inet_service",
            "",
            &np(&self.node_ports_local),
        );
        let hc: Vec<String> = self
            .health_check_node_ports
            .iter()
            .map(u16::to_string)
            .collect();
        set(&mut o, "health-check-nodeports", "inet_service", "", &hc);
        for f in [Fam::V4, Fam::V6] {
            let sfx = f.sfx();
            let ty = f.ty();
            let vpt = format!("{ty} . inet_proto . inet_service");
            let cidrs: Vec<String> = nets(f, &self.cluster_cidrs)
                .iter()
                .map(ToString::to_string)
                .collect();
            set(
                &mut o,
                &format!("cluster-cidrs-{sfx}"),
                ty,
                "interval",
                &cidrs,
            );
            let ips: Vec<String> = self
                .service_ips
                .iter()
                .filter(|a| f.has(a))
                .map(ToString::to_string)
                .collect();
            set(&mut o, &format!("service-ips-{sfx}"), ty, "", &ips);
            set(
                &mut o,
                &format!("service-ports-{sfx}"),
                &vpt,
                "",
                &vip_elems(f, &all_ports),
            );
            set(
                &mut o,
                &format!("cluster-ports-{sfx}"),
                &vpt,
                "",
                &vip_elems(f, &self.cluster_ports),
            );
            set(
                &mut o,
                &format!("external-ports-{sfx}"),
                &vpt,
                "",
                &vip_elems(f, &self.external_ports),
            );
            let npa: Vec<String> = self
                .node_port_addrs
                .iter()
                .filter(|a| f.has(a))
                .map(ToString::to_string)
                .collect();
            set(&mut o, &format!("nodeport-addrs-{sfx}"), ty, "", &npa);
            let ranged = vip_elems(f, self.lb_source_ranges.keys());
            set(&mut o, &format!("lb-ranged-{sfx}"), &vpt, "", &ranged);
            let mut allowed = Vec::new();
            for (vip, ranges) in self.lb_source_ranges.iter().filter(|(v, _)| f.has(&v.addr)) {
                for n in nets(f, ranges) {
                    allowed.push(format!("{vip} . {n}"));
                }
            }
            set(
                &mut o,
                &format!("lb-allowed-{sfx}"),
                &format!("{vpt} . {ty}"),
                "interval",
                &allowed,
            );
            let hp: Vec<String> = self
                .hairpin
                .iter()
                .filter(|a| f.has(a))
                .map(|a| format!("{a} . {a}"))
                .collect();
            set(
                &mut o,
                &format!("hairpin-{sfx}"),
                &format!("{ty} . {ty}"),
                "",
                &hp,
            );
            let marks: Vec<String> = self
                .pod_source_marks
                .iter()
                .filter(|(v, _)| f.has(&v.addr))
                .map(|(v, m)| format!("{v} : {m:#x}"))
                .collect();
            map(&mut o, &format!("pod-marks-{sfx}"), &vpt, &marks);
        }

        let bit = self.masquerade_bit;
        let mark_masq = format!("ct mark set ct mark | {bit:#x}");
        let has_cidrs = |f: Fam| !nets(f, &self.cluster_cidrs).is_empty();

        // prerouting: select firewall-mark services for pods, mark for SNAT.
        o.push_str(
            "\tchain mark-pre {\n\t\ttype filter hook prerouting priority mangle; policy accept;\n",
        );
        for f in [Fam::V4, Fam::V6] {
            let (k, s) = (f.kw(), f.sfx());
            let key = format!("{k} daddr . meta l4proto . th dport");
            if has_cidrs(f) {
                let _ = writeln!(
                    o,
                    "\t\t{k} saddr @cluster-cidrs-{s} meta mark set {key} map @pod-marks-{s}"
                );
            }
            if self.masquerade_all {
                let _ = writeln!(o, "\t\tct state new {key} @service-ports-{s} {mark_masq}");
                let _ = writeln!(o, "\t\tct state new {k} daddr @nodeport-addrs-{s} meta l4proto . th dport @nodeports {mark_masq}");
                let _ = writeln!(o, "\t\tct state new {k} daddr @nodeport-addrs-{s} meta l4proto . th dport @nodeports-local {mark_masq}");
            } else {
                if has_cidrs(f) {
                    let _ = writeln!(o, "\t\tct state new {key} @cluster-ports-{s} {k} saddr != @cluster-cidrs-{s} {mark_masq}");
                }
                let _ = writeln!(o, "\t\tct state new {key} @external-ports-{s} {mark_masq}");
                let _ = writeln!(o, "\t\tct state new {k} daddr @nodeport-addrs-{s} meta l4proto . th dport @nodeports {mark_masq}");
            }
        }
        o.push_str("\t}\n");

        // output: the node itself is "inside" (reaches every endpoint) and is
        // always masqueraded: its source address may be the VIP itself.
        o.push_str(
            "\tchain mark-out {\n\t\ttype route hook output priority mangle; policy accept;\n",
        );
        for f in [Fam::V4, Fam::V6] {
            let (k, s) = (f.kw(), f.sfx());
            let key = format!("{k} daddr . meta l4proto . th dport");
            let _ = writeln!(o, "\t\tmeta mark set {key} map @pod-marks-{s}");
            let _ = writeln!(o, "\t\tct state new {key} @service-ports-{s} {mark_masq}");
            let _ = writeln!(o, "\t\tct state new {k} daddr @nodeport-addrs-{s} meta l4proto . th dport @nodeports {mark_masq}");
            let _ = writeln!(o, "\t\tct state new {k} daddr @nodeport-addrs-{s} meta l4proto . th dport @nodeports-local {mark_masq}");
        }
        o.push_str("\t}\n");

        // input: source ranges, health checks, the service-IP guard.
        o.push_str(
            "\tchain filter-in {\n\t\ttype filter hook input priority filter; policy accept;\n",
        );
        o.push_str("\t\tct state != new accept\n");
        for f in [Fam::V4, Fam::V6] {
            let (k, s) = (f.kw(), f.sfx());
            let _ = writeln!(
                o,
                "\t\t{k} daddr . meta l4proto . th dport @lb-ranged-{s} jump lb-ranges-{s}"
            );
        }
        o.push_str("\t\ttcp dport @health-check-nodeports accept\n");
        for f in [Fam::V4, Fam::V6] {
            let (k, s) = (f.kw(), f.sfx());
            let _ = writeln!(o, "\t\t{k} daddr @service-ips-{s} jump service-guard-{s}");
        }
        o.push_str("\t}\n");
        for f in [Fam::V4, Fam::V6] {
            let (k, s) = (f.kw(), f.sfx());
            let _ = writeln!(
                o,
                "\tchain lb-ranges-{s} {{\n\t\t{k} daddr . meta l4proto . th dport . {k} saddr @lb-allowed-{s} return\n\t\tfib saddr type local return\n\t\tdrop\n\t}}"
            );
            let _ = writeln!(
                o,
                "\tchain service-guard-{s} {{\n\t\t{k} daddr . meta l4proto . th dport @service-ports-{s} return\n\t\tmeta l4proto tcp reject with tcp reset\n\t\treject\n\t}}"
            );
        }

        let _ = writeln!(
            o,
            "\tchain filter-fwd {{\n\t\ttype filter hook forward priority filter; policy accept;\n\t\tct mark & {bit:#x} == {bit:#x} accept\n\t\tct state established,related accept\n\t}}"
        );

        o.push_str(
            "\tchain nat-post {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n",
        );
        let _ = writeln!(o, "\t\tct mark & {bit:#x} == {bit:#x} masquerade");
        for f in [Fam::V4, Fam::V6] {
            let (k, s) = (f.kw(), f.sfx());
            let _ = writeln!(o, "\t\t{k} saddr . {k} daddr @hairpin-{s} masquerade");
        }
        o.push_str("\t}\n}\n");
        o
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

/// Runs `nft` for our one table.
#[derive(Debug, Clone)]
pub struct Nft {
    program: PathBuf,
    table: String,
}

impl Default for Nft {
    fn default() -> Self {
        Nft::new("nft", DEFAULT_TABLE)
    }
}

impl Nft {
    /// `program` is the nft binary; `table` our table's name (family inet).
    pub fn new(program: impl AsRef<Path>, table: impl Into<String>) -> Self {
        Nft {
            program: program.as_ref().to_owned(),
            table: table.into(),
        }
    }

    /// Our table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    fn run_script(&self, op: &str, args: &[&str], script: &str) -> Result<()> {
        let out = cmd::run(&self.program, args, Some(script))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(Error::Nft {
                op: op.to_owned(),
                status: out.status.to_string(),
                stderr: cmd::stderr_of(&out),
            })
        }
    }

    /// Replaces our table with `spec`, in one transaction.
    pub fn apply(&self, spec: &FilterSpec) -> Result<()> {
        let script = spec.render_replace(&self.table);
        self.run_script(
            &format!("replace table inet {}", self.table),
            &["-f", "-"],
            &script,
        )
    }

    /// Has the kernel check `spec` without committing (`nft -c`).
    pub fn check(&self, spec: &FilterSpec) -> Result<()> {
        let script = spec.render_replace(&self.table);
        self.run_script(
            &format!("check table inet {}", self.table),
            &["-c", "-f", "-"],
            &script,
        )
    }

    /// Deletes our table if it exists (and nothing else).
    pub fn delete(&self) -> Result<()> {
        let t = &self.table;
        let script = format!("table inet {t} {{}}\ndelete table inet {t}\n");
        self.run_script(&format!("delete table inet {t}"), &["-f", "-"], &script)
    }

    /// Whether our table exists.
    pub fn exists(&self) -> Result<bool> {
        let out = cmd::run(&self.program, &["list", "table", "inet", &self.table], None)?;
        Ok(out.status.success())
    }

    /// `nft list table inet <ours>` text, when it exists.
    pub fn list(&self) -> Result<Option<String>> {
        let out = cmd::run(&self.program, &["list", "table", "inet", &self.table], None)?;
        Ok(out
            .status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn sample() -> FilterSpec {
        let mut s = FilterSpec {
            cluster_cidrs: vec![net("10.244.0.0/16"), net("fd00:244::/56")],
            ..FilterSpec::default()
        };
        s.service_ips
            .extend([ip("10.96.0.10"), ip("192.0.2.10"), ip("fd00:96::10")]);
        s.cluster_ports
            .insert(VipPort::new(ip("10.96.0.10"), L4::Tcp, 80));
        s.cluster_ports
            .insert(VipPort::new(ip("10.96.0.10"), L4::Udp, 53));
        s.cluster_ports
            .insert(VipPort::new(ip("fd00:96::10"), L4::Tcp, 80));
        s.external_ports
            .insert(VipPort::new(ip("192.0.2.10"), L4::Tcp, 80));
        s.external_local_ports
            .insert(VipPort::new(ip("192.0.2.10"), L4::Tcp, 443));
        s.node_port_addrs.insert(ip("172.18.0.2"));
        s.node_ports.insert((L4::Tcp, 30080));
        s.node_ports_local.insert((L4::Tcp, 30443));
        s.health_check_node_ports.insert(32000);
        s.lb_source_ranges.insert(
            VipPort::new(ip("192.0.2.10"), L4::Tcp, 80),
            vec![net("198.51.100.0/24"), net("198.51.100.7/32")],
        );
        s.hairpin.insert(ip("10.244.0.5"));
        s.pod_source_marks.insert(
            VipPort::new(ip("192.0.2.10"), L4::Tcp, 443),
            0x0101_0000 | 30443,
        );
        s
    }

    fn line_with<'a>(text: &'a str, needle: &str) -> Vec<&'a str> {
        text.lines().filter(|l| l.contains(needle)).collect()
    }

    #[test]
    fn replace_is_one_transaction_on_our_table_only() {
        let t = sample().render_replace("ipvs-proxy");
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "table inet ipvs-proxy {}");
        assert_eq!(lines[1], "delete table inet ipvs-proxy");
        assert_eq!(lines[2], "table inet ipvs-proxy {");
        // Nothing outside our table: every table statement names ours.
        for l in t.lines().filter(|l| l.contains("table ")) {
            assert!(l.contains("table inet ipvs-proxy"), "{l}");
        }
        assert!(!t.contains("flush ruleset"));
    }

    #[test]
    fn sets_hold_the_facts_per_family() {
        let t = sample().render_table("ipvs-proxy");
        assert!(
            t.contains("elements = { 10.96.0.10 . tcp . 80, 10.96.0.10 . udp . 53 }"),
            "{t}"
        );
        assert!(t.contains("elements = { fd00:96::10 . tcp . 80 }"));
        // The guard allows every service port, local or not, incl. ranged ones.
        let guard = line_with(&t, "10.96.0.10 . tcp . 80, 10.96.0.10 . udp . 53, 192.0.2.10 . tcp . 80, 192.0.2.10 . tcp . 443");
        assert_eq!(guard.len(), 1, "{t}");
        assert!(t.contains("elements = { tcp . 30080 }"));
        assert!(t.contains("elements = { tcp . 30443 }"));
        assert!(t.contains("elements = { 32000 }"));
        assert!(t.contains("elements = { 10.244.0.5 . 10.244.0.5 }"));
        assert!(
            t.contains("elements = { 192.0.2.10 . tcp . 443 : 0x10176eb }"),
            "{t}"
        );
    }

    #[test]
    fn overlapping_source_ranges_are_merged() {
        let t = sample().render_table("ipvs-proxy");
        // 198.51.100.7/32 lies inside 198.51.100.0/24: one element only.
        assert!(
            t.contains("elements = { 192.0.2.10 . tcp . 80 . 198.51.100.0/24 }"),
            "{t}"
        );
        assert!(!t.contains("198.51.100.7"));
    }

    #[test]
    fn cluster_ports_masquerade_only_outside_sources() {
        let t = sample().render_table("ipvs-proxy");
        let l = line_with(&t, "@cluster-ports-v4");
        assert_eq!(l.len(), 1);
        assert!(l[0].contains("ip saddr != @cluster-cidrs-v4"));
        assert!(l[0].contains("ct mark set ct mark | 0x4000"));
        // ETP Local external ports are never in a masquerade rule of mark-pre.
        let pre = t.split("chain mark-out").next().unwrap();
        assert!(!pre.contains("external-local"));
        assert!(!pre.contains("@nodeports-local"));
    }

    #[test]
    fn without_cluster_cidrs_cluster_ips_are_not_masqueraded() {
        let mut s = sample();
        s.cluster_cidrs.clear();
        let t = s.render_table("ipvs-proxy");
        assert!(line_with(&t, "@cluster-ports-v4").is_empty());
        // ...and no pod-source marking, since pods cannot be told apart.
        let pre = t.split("chain mark-out").next().unwrap();
        assert!(!pre.contains("@pod-marks-v4"));
    }

    #[test]
    fn masquerade_all_marks_every_service_port() {
        let mut s = sample();
        s.masquerade_all = true;
        let t = s.render_table("ipvs-proxy");
        let pre = t.split("chain mark-out").next().unwrap();
        assert!(pre.contains("ct state new ip daddr . meta l4proto . th dport @service-ports-v4 ct mark set ct mark | 0x4000"));
        assert!(pre.contains("@nodeports-local ct mark set"));
        assert!(!pre.contains("ip saddr != @cluster-cidrs-v4"));
    }

    #[test]
    fn custom_bit_is_used_everywhere() {
        let mut s = sample();
        s.masquerade_bit = 0x8000;
        let t = s.render_table("ipvs-proxy");
        assert!(!t.contains("0x4000"));
        assert!(t.contains("ct mark & 0x8000 == 0x8000 masquerade"));
    }

    #[test]
    fn empty_spec_renders_without_elements() {
        let t = FilterSpec::default().render_table("ipvs-proxy");
        assert!(!t.contains("elements"));
        assert!(t.contains("chain service-guard-v4"));
    }

    /// The host kernel has nftables: have it validate the rendered text.
    /// Needs root (CAP_NET_ADMIN); `nft -c` commits nothing.
    #[test]
    fn kernel_accepts_rendered_ruleset() {
        let nft = Nft::new("nft", "ipvs-proxy-unit-check");
        for s in [sample(), FilterSpec::default(), {
            let mut m = sample();
            m.masquerade_all = true;
            m
        }] {
            if let Err(e) = nft.check(&s) {
                panic!(
                    "nft -c refused the ruleset: {e}\n{}",
                    s.render_replace("ipvs-proxy-unit-check")
                );
            }
        }
    }
}
