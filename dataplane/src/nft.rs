//! The one nftables table of ours (`inet ipvs-proxy`), rendered from the
//! packet-filter facts and replaced atomically with `nft -f -`.
//!
//! How it fits around IPVS (hook priorities in parentheses):
//! - IPVS schedules packets to local VIPs in LOCAL_IN (priority 98) and packets from
//!   local processes in LOCAL_OUT (priority -98); replies are un-NATed in FORWARD.
//! - `mark-pre` (prerouting, mangle -150) and `mark-out` (output, route
//!   type, mangle) run before IPVS: they set the conntrack mark bit
//!   [`FilterSpec::masquerade_bit`] on new connections that must be
//!   source-NATed, and set the packet mark that selects a firewall-mark
//!   virtual server for pods (and the node) reaching an
//!   `externalTrafficPolicy: Local` VIP. The conntrack mark is used for
//!   masquerading so that it never disturbs the packet mark IPVS matches.
//! - `filter-in` (input, filter 0) runs before IPVS's LOCAL_IN hook: load
//!   balancer source ranges, health-check node ports, and rejecting new
//!   connections to service IPs on ports that are not services.
//! - `nat-post` (postrouting, srcnat 100): masquerade marked connections
//!   (this works for IPVS traffic because `net.ipv4.vs.conntrack=1` keeps
//!   the connection's conntrack entry) and hairpin connections (a pod
//!   reaching itself through a Service).
//! - `filter-fwd` (forward, filter): accept marked and established
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

/// An IP family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    const BOTH: [Family; 2] = [Family::V4, Family::V6];

    fn has(self, a: &IpAddr) -> bool {
        matches!(
            (self, a),
            (Family::V4, IpAddr::V4(_)) | (Family::V6, IpAddr::V6(_))
        )
    }
    fn has_net(self, n: &IpNet) -> bool {
        matches!(
            (self, n),
            (Family::V4, IpNet::V4(_)) | (Family::V6, IpNet::V6(_))
        )
    }
    /// Set-name suffix.
    fn sfx(self) -> &'static str {
        match self {
            Family::V4 => "v4",
            Family::V6 => "v6",
        }
    }
    /// Match keyword (`ip` / `ip6`).
    fn kw(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        }
    }
    /// Address type.
    fn ty(self) -> &'static str {
        match self {
            Family::V4 => "ipv4_addr",
            Family::V6 => "ipv6_addr",
        }
    }
}

/// When a connection to a service is masqueraded (source-NATed to the node).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Masq {
    /// Unless it comes from a local pod ([`FilterSpec::local`]).
    UnlessFromPod,
    /// Always.
    Always,
    /// Never: the client's source IP is kept (`externalTrafficPolicy:
    /// Local`); the node's own connections are still masqueraded.
    Never,
}

/// How traffic from pods is told from other traffic (detect-local mode).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LocalMatch {
    /// Nothing is local.
    #[default]
    Nothing,
    /// Sources inside these networks.
    Cidrs(Vec<IpNet>),
    /// Packets entering through this interface.
    Interface(String),
    /// Packets entering through interfaces whose name starts with this.
    InterfacePrefix(String),
}

/// The packet-filter rules of one service address:port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRule {
    /// Masquerading.
    pub masq: Masq,
    /// Firewall mark for local pods (and the node) reaching this
    /// `externalTrafficPolicy: Local` address:port: IPVS then uses the
    /// firewall-mark virtual server with the cluster-wide endpoints.
    pub pod_mark: Option<u32>,
    /// Load-balancer source ranges; empty: every source.
    pub source_ranges: Vec<IpNet>,
    /// With source ranges: the node itself may connect too.
    pub allow_from_node: bool,
}

impl PortRule {
    /// A rule with the given masquerading and nothing else.
    pub fn masq(masq: Masq) -> Self {
        PortRule {
            masq,
            pod_mark: None,
            source_ranges: Vec::new(),
            allow_from_node: false,
        }
    }
}

/// The rules of one node port of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodePortRule {
    /// Masquerading.
    pub masq: Masq,
    /// As [`PortRule::pod_mark`].
    pub pod_mark: Option<u32>,
}

/// Everything the packet filter needs, already decided (by proxy-core; see
/// [`crate::facts`]). Both families may be mixed: each rule is rendered
/// once per family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterSpec {
    /// The conntrack-mark bit meaning "masquerade".
    pub masquerade_bit: u32,
    /// Masquerade every connection to a service (`masqueradeAll`).
    pub masquerade_all: bool,
    /// How local pod traffic is recognised.
    pub local: LocalMatch,
    /// Every address bound on the dummy interface: new connections to them
    /// on ports that are not services are rejected.
    pub service_ips: BTreeSet<IpAddr>,
    /// Service address:ports (ClusterIPs, external IPs, load-balancer IPs).
    pub ports: BTreeMap<VipPort, PortRule>,
    /// Node addresses that serve node ports.
    pub node_port_addrs: BTreeSet<IpAddr>,
    /// Node ports, per family.
    pub node_ports: BTreeMap<(Family, L4, u16), NodePortRule>,
    /// Health-check node ports (TCP) to accept.
    pub health_check_node_ports: BTreeSet<u16>,
    /// Local endpoints that may reach themselves through a service: a
    /// connection from `addr` to `addr:port` is masqueraded.
    pub hairpin: BTreeSet<VipPort>,
}

impl Default for FilterSpec {
    fn default() -> Self {
        FilterSpec {
            masquerade_bit: DEFAULT_MASQUERADE_BIT,
            masquerade_all: false,
            local: LocalMatch::Nothing,
            service_ips: BTreeSet::new(),
            ports: BTreeMap::new(),
            node_port_addrs: BTreeSet::new(),
            node_ports: BTreeMap::new(),
            health_check_node_ports: BTreeSet::new(),
            hairpin: BTreeSet::new(),
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

/// Aggregated (non-overlapping) networks of one family: interval sets
/// refuse overlapping elements.
fn nets(f: Family, nets: &[IpNet]) -> Vec<IpNet> {
    let mine: Vec<IpNet> = nets
        .iter()
        .filter(|n| f.has_net(n))
        .map(IpNet::trunc)
        .collect();
    IpNet::aggregate(&mine)
}

/// An interface name nft can take inside quotes.
fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 16
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
}

impl FilterSpec {
    /// The effective masquerading of a rule under `masquerade_all`.
    fn eff(&self, m: Masq) -> Masq {
        if self.masquerade_all {
            Masq::Always
        } else {
            m
        }
    }

    /// `(is-local, is-not-local)` match expressions for family `f`; `None`
    /// when nothing can be local for this family (then "not local" is
    /// everything: the empty string).
    fn local_exprs(&self, f: Family) -> Option<(String, String)> {
        let (k, s) = (f.kw(), f.sfx());
        match &self.local {
            LocalMatch::Nothing => None,
            LocalMatch::Cidrs(c) if nets(f, c).is_empty() => None,
            LocalMatch::Cidrs(_) => Some((
                format!("{k} saddr @local-cidrs-{s}"),
                format!("{k} saddr != @local-cidrs-{s}"),
            )),
            LocalMatch::Interface(i) if valid_ifname(i) => {
                Some((format!("iifname \"{i}\""), format!("iifname != \"{i}\"")))
            }
            LocalMatch::InterfacePrefix(p) if valid_ifname(p) => {
                Some((format!("iifname \"{p}*\""), format!("iifname != \"{p}*\"")))
            }
            // Invalid names are refused by `validate`; render nothing local.
            LocalMatch::Interface(_) | LocalMatch::InterfacePrefix(_) => None,
        }
    }

    /// Problems that would make nft refuse the ruleset.
    pub fn validate(&self) -> Result<(), String> {
        match &self.local {
            LocalMatch::Interface(i) | LocalMatch::InterfacePrefix(i) if !valid_ifname(i) => Err(
                format!("invalid interface name {i:?} for local-traffic detection"),
            ),
            _ => Ok(()),
        }
    }

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

/// A rendered table split into its skeleton (declarations and chains) and
/// the elements of each set and map.
struct Split {
    skeleton: String,
    /// (`set`|`map`, name) -> elements as rendered (`key` or `key : value`).
    elems: BTreeMap<(String, String), BTreeSet<String>>,
}

fn split(text: &str) -> Split {
    let mut skeleton = String::new();
    let mut elems = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    for line in text.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("set ").or_else(|| t.strip_prefix("map ")) {
            if let Some(name) = rest.strip_suffix(" {") {
                let kind = if t.starts_with("set ") { "set" } else { "map" };
                let key = (kind.to_owned(), name.to_owned());
                elems.insert(key.clone(), BTreeSet::new());
                current = Some(key);
            }
        } else if t == "}" {
            current = None;
        }
        if let (Some(key), Some(list)) = (&current, t.strip_prefix("elements = { ")) {
            let list = list.strip_suffix(" }").unwrap_or(list);
            if let Some(set) = elems.get_mut(key) {
                set.extend(list.split(", ").map(str::to_owned));
            }
            continue;
        }
        skeleton.push_str(line);
        skeleton.push('\n');
    }
    Split { skeleton, elems }
}

fn map_key(elem: &str) -> &str {
    elem.split(" : ").next().unwrap_or(elem)
}

/// The nft script that turns table `old` into `new` by adding and deleting
/// set and map elements only, in one transaction; `None` when the tables
/// differ in more than elements (rules, set types), so the whole table must
/// be replaced. An empty script means nothing changed.
pub fn render_update(old: &FilterSpec, new: &FilterSpec, table: &str) -> Option<String> {
    let (a, b) = (
        split(&old.render_table(table)),
        split(&new.render_table(table)),
    );
    if a.skeleton != b.skeleton {
        return None;
    }
    let mut deletes = String::new();
    let mut adds = String::new();
    let empty = BTreeSet::new();
    for ((kind, name), new_elems) in &b.elems {
        let old_elems = a.elems.get(&(kind.clone(), name.clone())).unwrap_or(&empty);
        let gone: Vec<&str> = old_elems
            .difference(new_elems)
            .map(|e| {
                if kind == "map" {
                    map_key(e)
                } else {
                    e.as_str()
                }
            })
            .collect();
        let came: Vec<&str> = new_elems
            .difference(old_elems)
            .map(String::as_str)
            .collect();
        if !gone.is_empty() {
            let _ = writeln!(
                deletes,
                "delete element inet {table} {name} {{ {} }}",
                gone.join(", ")
            );
        }
        if !came.is_empty() {
            let _ = writeln!(
                adds,
                "add element inet {table} {name} {{ {} }}",
                came.join(", ")
            );
        }
    }
    deletes.push_str(&adds);
    Some(deletes)
}

/// What a filter update sent to the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FilterChange {
    /// Nothing: the table already matched.
    #[default]
    Unchanged,
    /// Set and map elements added/deleted in one transaction.
    Elements,
    /// The whole table replaced in one transaction.
    Table,
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
        self.validated(spec)?;
        let script = spec.render_replace(&self.table);
        self.run_script(
            &format!("replace table inet {}", self.table),
            &["-f", "-"],
            &script,
        )
    }

    /// Moves our table from `old` (what the kernel holds) to `new`: element
    /// changes only when the rules are the same (one transaction), else a
    /// full replacement. Returns what was done.
    pub fn update(&self, old: &FilterSpec, new: &FilterSpec) -> Result<FilterChange> {
        self.validated(new)?;
        match render_update(old, new, &self.table) {
            Some(script) if script.is_empty() => Ok(FilterChange::Unchanged),
            Some(script) => {
                let op = format!("update table inet {}", self.table);
                match self.run_script(&op, &["-f", "-"], &script) {
                    Ok(()) => Ok(FilterChange::Elements),
                    // The table was not what we thought: rewrite it whole.
                    Err(_) => self.apply(new).map(|()| FilterChange::Table),
                }
            }
            None => self.apply(new).map(|()| FilterChange::Table),
        }
    }

    /// Has the kernel check `spec` without committing (`nft -c`).
    pub fn check(&self, spec: &FilterSpec) -> Result<()> {
        self.validated(spec)?;
        let script = spec.render_replace(&self.table);
        self.run_script(
            &format!("check table inet {}", self.table),
            &["-c", "-f", "-"],
            &script,
        )
    }

    fn validated(&self, spec: &FilterSpec) -> Result<()> {
        spec.validate().map_err(|stderr| Error::Nft {
            op: format!("render table inet {}", self.table),
            status: "not run".to_owned(),
            stderr,
        })
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
            lines.contains(
                &"delete element inet t hairpin-v4 { 10.244.0.5 . 10.244.0.5 . tcp . 8080 }"
            ),
            "{u}"
        );
        assert!(
            lines.contains(
                &"add element inet t hairpin-v4 { 10.244.0.6 . 10.244.0.6 . tcp . 8080 }"
            ),
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
}
