//! Kubernetes objects -> validated internal form, once per event. Bad input
//! becomes [`Rejection`]s; nothing here panics.

use std::net::IpAddr;

use ipnet::IpNet;
use ipvs::Protocol;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::config::{Config, IpFamily, Scheduler};
use crate::model::{ServiceName, ServicePortName};
use crate::reject::{ObjectKind, ObjectRef, RejectReason, Rejection};

/// Annotation selecting a per-Service IPVS scheduler (e.g. `sh`, `mh`).
pub const SCHEDULER_ANNOTATION: &str = "ipvs-proxy.io/scheduler";
/// Annotation with comma-separated scheduler flags (e.g. `sh-fallback,sh-port`).
pub const SCHEDULER_FLAGS_ANNOTATION: &str = "ipvs-proxy.io/scheduler-flags";
/// Services with this label belong to another proxy and are ignored.
pub const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";
/// The label naming an EndpointSlice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Default `sessionAffinityConfig.clientIP.timeoutSeconds` (3 hours).
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10_800;
/// Largest `timeoutSeconds` the API server admits (one day).
pub const MAX_AFFINITY_TIMEOUT: u32 = 86_400;

/// Sort order among Services claiming the same thing: the oldest wins, then
/// the smallest `namespace/name`, so the outcome does not depend on the order
/// in which objects arrive.
pub(crate) type Rank = (Option<(i64, i32)>, std::sync::Arc<ServiceName>);

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParsedPort {
    /// `namespace/name:port`, shared by every virtual server of the port;
    /// `owner.port` is the port's name.
    pub owner: std::sync::Arc<ServicePortName>,
    pub index: usize,
    pub protocol: Protocol,
    pub port: u16,
    pub node_port: Option<u16>,
}

impl ParsedPort {
    /// The port's `name` (may be empty).
    pub fn name(&self) -> &str {
        &self.owner.port
    }
}

/// A Service's cluster IPs: at most one per family, so at most two, held
/// in place (no allocation per Service).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct ClusterIps([Option<IpAddr>; 2]);

impl ClusterIps {
    /// The addresses, in the order given.
    pub fn iter(&self) -> impl Iterator<Item = &IpAddr> {
        self.0.iter().flatten()
    }

    /// Adds an address of a family not held yet (so never a third).
    fn push(&mut self, ip: IpAddr) {
        if let Some(slot) = self.0.iter_mut().find(|s| s.is_none()) {
            *slot = Some(ip);
        }
    }
}

/// A Service we proxy, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParsedService {
    /// The same allocation as `rank.1`.
    pub name: std::sync::Arc<ServiceName>,
    pub rank: Rank,
    /// At most one per family, only families the node proxies.
    pub cluster_ips: ClusterIps,
    pub external_ips: Vec<IpAddr>,
    pub lb_ips: Vec<IpAddr>,
    pub source_ranges: Vec<IpNet>,
    /// Source ranges were given but none was valid: program no LB IPs.
    pub source_ranges_unusable: bool,
    pub ports: Vec<ParsedPort>,
    pub node_ports_enabled: bool,
    pub etp_local: bool,
    pub itp_local: bool,
    pub health_check_node_port: Option<u16>,
    pub affinity_timeout: Option<u32>,
    /// The annotated scheduler; `None`: the node default.
    pub scheduler: Option<Scheduler>,
    pub publish_not_ready: bool,
}

/// The object being parsed, borrowed: the owned [`ObjectRef`] is built only
/// when a rejection needs it (rare), not once per object.
#[derive(Clone, Copy)]
struct Obj<'a> {
    kind: ObjectKind,
    ns: &'a str,
    name: &'a str,
}

fn obj<'a>(kind: ObjectKind, ns: &'a str, name: &'a str) -> Obj<'a> {
    Obj { kind, ns, name }
}

fn reject(o: &Obj<'_>, reason: RejectReason, whole: bool, detail: String) -> Rejection {
    Rejection {
        object: ObjectRef {
            kind: o.kind,
            namespace: o.ns.to_owned(),
            name: o.name.to_owned(),
        },
        reason,
        whole_object: whole,
        detail,
    }
}

pub(crate) fn parse_protocol(p: Option<&str>) -> Option<Protocol> {
    match p.unwrap_or("TCP") {
        "TCP" => Some(Protocol::Tcp),
        "UDP" => Some(Protocol::Udp),
        "SCTP" => Some(Protocol::Sctp),
        _ => None,
    }
}

/// The protocol of a Service or EndpointSlice port, or a rejection of that
/// port (the object's other ports still count).
fn port_protocol(
    o: &Obj<'_>,
    pname: &str,
    protocol: Option<&str>,
    rejections: &mut Vec<Rejection>,
) -> Option<Protocol> {
    let parsed = parse_protocol(protocol);
    if parsed.is_none() {
        rejections.push(reject(
            o,
            RejectReason::UnsupportedProtocol,
            false,
            format!("port {pname:?}: protocol {:?}", protocol.unwrap_or("")),
        ));
    }
    parsed
}

fn port_u16(p: i32) -> Option<u16> {
    u16::try_from(p).ok().filter(|p| *p != 0)
}

/// `str::parse::<IpAddr>`, with a fast path for the common IPv4 form.
trait ParseIp {
    fn parse_ip(&self) -> Result<IpAddr, std::net::AddrParseError>;
}

impl ParseIp for str {
    fn parse_ip(&self) -> Result<IpAddr, std::net::AddrParseError> {
        match parse_ipv4_fast(self.as_bytes()) {
            Some(a) => Ok(IpAddr::V4(a)),
            None => self.parse::<IpAddr>(),
        }
    }
}

/// Four decimal octets without leading zeros, each at most 255 (exactly
/// what `Ipv4Addr::from_str` accepts in this shape); `None` for anything
/// else, which the caller hands to the standard parser, so the outcome is
/// the standard one for every input.
fn parse_ipv4_fast(b: &[u8]) -> Option<std::net::Ipv4Addr> {
    // "0.0.0.0" to "255.255.255.255": 7 to 15 bytes.
    if b.len() < 7 || b.len() > 15 {
        return None;
    }
    let digit = |i: usize| -> Option<u32> {
        let d = b.get(i)?.wrapping_sub(b'0');
        (d <= 9).then_some(u32::from(d))
    };
    let mut i = 0;
    let mut bits: u32 = 0;
    for n in 0..4 {
        if n > 0 {
            if b.get(i) != Some(&b'.') {
                return None;
            }
            i += 1;
        }
        // One to three digits, no leading zero; a fourth digit is caught
        // by the next '.' or end check.
        let d0 = digit(i)?;
        let mut v = d0;
        i += 1;
        if let Some(d1) = digit(i) {
            if d0 == 0 {
                return None;
            }
            v = v * 10 + d1;
            i += 1;
            if let Some(d2) = digit(i) {
                v = v * 10 + d2;
                i += 1;
                if v > 255 {
                    return None;
                }
            }
        }
        bits = (bits << 8) | v;
    }
    (i == b.len()).then_some(std::net::Ipv4Addr::from_bits(bits))
}

/// Gives the shared name of a Service (`namespace`, `name`): the engine
/// hands out the one it already holds, so each name is allocated once.
pub(crate) type Names<'n> = &'n dyn Fn(&str, &str) -> std::sync::Arc<ServiceName>;

/// A new shared name (for callers that keep no index of names).
pub(crate) fn new_name(namespace: &str, name: &str) -> std::sync::Arc<ServiceName> {
    std::sync::Arc::new(ServiceName::new(namespace, name))
}

/// The outcome of parsing a Service.
pub(crate) enum ServiceParse {
    /// Proxied.
    Proxied(Box<ParsedService>),
    /// Not ours to proxy (headless, ExternalName, other proxy, no usable
    /// family); not an error.
    Ignored,
    /// Rejected as a whole.
    Rejected,
}

/// Parses a Service; rejections are appended to `rejections`.
pub(crate) fn parse_service(
    svc: &Service,
    config: &Config,
    names: Names<'_>,
    rejections: &mut Vec<Rejection>,
) -> ServiceParse {
    let (Some(ns), Some(name)) = (
        svc.metadata.namespace.as_deref(),
        svc.metadata.name.as_deref(),
    ) else {
        rejections.push(reject(
            &obj(
                ObjectKind::Service,
                svc.metadata.namespace.as_deref().unwrap_or(""),
                svc.metadata.name.as_deref().unwrap_or(""),
            ),
            RejectReason::MissingMetadata,
            true,
            "metadata.namespace and metadata.name are required".to_owned(),
        ));
        return ServiceParse::Rejected;
    };
    let o = obj(ObjectKind::Service, ns, name);
    if svc
        .metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(SERVICE_PROXY_NAME_LABEL))
    {
        return ServiceParse::Ignored;
    }
    let Some(spec) = svc.spec.as_ref() else {
        return ServiceParse::Ignored;
    };
    let type_ = spec.type_.as_deref().unwrap_or("ClusterIP");
    if type_ == "ExternalName" {
        return ServiceParse::Ignored;
    }
    // clusterIPs[0] == clusterIP when both are set; clusterIP alone on old objects.
    let raw_ips: &[String] = match (&spec.cluster_ips, &spec.cluster_ip) {
        (Some(ips), _) if !ips.is_empty() => ips,
        (_, Some(ip)) => std::slice::from_ref(ip),
        _ => &[],
    };
    if raw_ips.is_empty() || raw_ips.iter().any(|ip| ip == "None" || ip.is_empty()) {
        // Headless (or not allocated yet): nothing to proxy.
        return ServiceParse::Ignored;
    }
    let mut cluster_ips = ClusterIps::default();
    for (i, raw) in raw_ips.iter().enumerate() {
        match raw.parse_ip() {
            Ok(ip) => {
                if cluster_ips
                    .iter()
                    .any(|c| IpFamily::of(c) == IpFamily::of(&ip))
                {
                    rejections.push(reject(
                        &o,
                        RejectReason::InvalidClusterIp,
                        false,
                        format!("clusterIPs[{i}] {raw}: second address of one family"),
                    ));
                } else {
                    cluster_ips.push(ip);
                }
            }
            Err(_) => {
                let whole = i == 0;
                rejections.push(reject(
                    &o,
                    RejectReason::InvalidClusterIp,
                    whole,
                    format!("clusterIPs[{i}] {raw:?} is not an IP address"),
                ));
                if whole {
                    return ServiceParse::Rejected;
                }
            }
        }
    }
    // Families the node does not proxy are dropped at translation time, so
    // a configuration change needs no re-parse.
    let has_family = |f: IpFamily| cluster_ips.iter().any(|c| IpFamily::of(c) == f);
    let limits = &config.limits;

    let raw_ports = spec.ports.as_deref().unwrap_or(&[]);
    if raw_ports.len() > limits.max_ports_per_service {
        rejections.push(reject(
            &o,
            RejectReason::TooLarge,
            true,
            format!(
                "{} ports, more than the limit of {}",
                raw_ports.len(),
                limits.max_ports_per_service
            ),
        ));
        return ServiceParse::Rejected;
    }
    let node_ports_enabled = type_ == "NodePort" || type_ == "LoadBalancer";
    let sname = names(ns, name);
    let mut ports: Vec<ParsedPort> = Vec::with_capacity(raw_ports.len());
    for (index, p) in raw_ports.iter().enumerate() {
        let pname: &str = p.name.as_deref().unwrap_or("");
        let Some(protocol) = port_protocol(&o, pname, p.protocol.as_deref(), rejections) else {
            continue;
        };
        let Some(port) = port_u16(p.port) else {
            rejections.push(reject(
                &o,
                RejectReason::PortOutOfRange,
                false,
                format!("port {pname:?}: port {} outside 1-65535", p.port),
            ));
            continue;
        };
        let node_port = match p.node_port {
            Some(np) if node_ports_enabled => match port_u16(np) {
                Some(np) => Some(np),
                None => {
                    rejections.push(reject(
                        &o,
                        RejectReason::PortOutOfRange,
                        false,
                        format!("port {pname:?}: nodePort {np} outside 1-65535"),
                    ));
                    None
                }
            },
            _ => None,
        };
        if let Some(prev) = ports
            .iter()
            .find(|q| (q.protocol == protocol && q.port == port) || q.name() == pname)
        {
            rejections.push(reject(
                &o,
                RejectReason::DuplicatePort,
                false,
                format!(
                    "port {pname:?} ({protocol} {port}) duplicates port {:?} ({} {})",
                    prev.name(),
                    prev.protocol,
                    prev.port
                ),
            ));
            continue;
        }
        ports.push(ParsedPort {
            owner: std::sync::Arc::new(ServicePortName {
                service: std::sync::Arc::clone(&sname),
                port: pname.to_owned(),
                protocol,
            }),
            index,
            protocol,
            port,
            node_port,
        });
    }

    let mut external_ips = Vec::new();
    for raw in spec.external_ips.iter().flatten() {
        match raw.parse_ip() {
            Ok(ip) if has_family(IpFamily::of(&ip)) => {
                if !external_ips.contains(&ip) {
                    external_ips.push(ip)
                }
            }
            Ok(_) => {}
            Err(_) => rejections.push(reject(
                &o,
                RejectReason::InvalidExternalIp,
                false,
                format!("externalIPs: {raw:?} is not an IP address"),
            )),
        }
    }
    let mut lb_ips = Vec::new();
    if type_ == "LoadBalancer" {
        let ingress = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref());
        for ing in ingress.into_iter().flatten() {
            // ipMode Proxy: the load balancer proxies to the node; the IP is
            // not delivered here, so we must not capture it.
            if ing.ip_mode.as_deref() == Some("Proxy") {
                continue;
            }
            let Some(raw) = ing.ip.as_deref() else {
                continue;
            };
            match raw.parse_ip() {
                Ok(ip) if has_family(IpFamily::of(&ip)) => {
                    if !lb_ips.contains(&ip) {
                        lb_ips.push(ip)
                    }
                }
                Ok(_) => {}
                Err(_) => rejections.push(reject(
                    &o,
                    RejectReason::InvalidLoadBalancerIp,
                    false,
                    format!("status.loadBalancer.ingress: {raw:?} is not an IP address"),
                )),
            }
        }
    }
    if external_ips.len() + lb_ips.len() > limits.max_external_addresses_per_service {
        rejections.push(reject(
            &o,
            RejectReason::TooLarge,
            false,
            format!(
                "{} externalIPs and load-balancer IPs, more than the limit of {}; none programmed",
                external_ips.len() + lb_ips.len(),
                limits.max_external_addresses_per_service
            ),
        ));
        external_ips.clear();
        lb_ips.clear();
    }
    let mut source_ranges = Vec::new();
    let raw_ranges = spec.load_balancer_source_ranges.as_deref().unwrap_or(&[]);
    for raw in raw_ranges {
        match raw.trim().parse::<IpNet>() {
            Ok(n) => source_ranges.push(n.trunc()),
            Err(_) => rejections.push(reject(
                &o,
                RejectReason::InvalidSourceRange,
                false,
                format!("loadBalancerSourceRanges: {raw:?} is not a CIDR"),
            )),
        }
    }
    source_ranges.sort();
    source_ranges.dedup();
    let source_ranges_unusable = !raw_ranges.is_empty() && source_ranges.is_empty();
    if source_ranges_unusable && !lb_ips.is_empty() {
        rejections.push(reject(
            &o,
            RejectReason::InvalidSourceRange,
            false,
            "no valid loadBalancerSourceRanges: load-balancer IPs not programmed (fail closed)"
                .to_owned(),
        ));
    }

    let etp_local = node_ports_enabled && spec.external_traffic_policy.as_deref() == Some("Local");
    let itp_local = spec.internal_traffic_policy.as_deref() == Some("Local");
    let health_check_node_port = match spec.health_check_node_port {
        Some(p) if etp_local && type_ == "LoadBalancer" => match port_u16(p) {
            Some(p) => Some(p),
            None => {
                rejections.push(reject(
                    &o,
                    RejectReason::PortOutOfRange,
                    false,
                    format!("healthCheckNodePort {p} outside 1-65535"),
                ));
                None
            }
        },
        _ => None,
    };
    let affinity_timeout = if spec.session_affinity.as_deref() == Some("ClientIP") {
        let t = spec
            .session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds);
        match t {
            // Unset or 0: the API server's default.
            None | Some(0) => Some(DEFAULT_AFFINITY_TIMEOUT),
            Some(t) if (1..=i64::from(MAX_AFFINITY_TIMEOUT)).contains(&i64::from(t)) => {
                Some(t as u32)
            }
            Some(t) => {
                // The API server never admits it; IPVS would take it as a
                // persistence that ipvsadm and `ipvs::rules` refuse (found
                // by the desired_state fuzz target).
                rejections.push(reject(
                    &o,
                    RejectReason::InvalidSessionAffinityTimeout,
                    false,
                    format!(
                        "sessionAffinityConfig.clientIP.timeoutSeconds {t} outside \
                         1-{MAX_AFFINITY_TIMEOUT}: {DEFAULT_AFFINITY_TIMEOUT} used"
                    ),
                ));
                Some(DEFAULT_AFFINITY_TIMEOUT)
            }
        }
    } else {
        None
    };
    let ann = svc.metadata.annotations.as_ref();
    let scheduler = match ann.and_then(|a| a.get(SCHEDULER_ANNOTATION)) {
        None => None,
        Some(s) => {
            let flags = ann
                .and_then(|a| a.get(SCHEDULER_FLAGS_ANNOTATION))
                .map(String::as_str)
                .unwrap_or("");
            match Scheduler::parse(s, flags) {
                Ok(s) => Some(s),
                Err(e) => {
                    rejections.push(reject(
                        &o,
                        RejectReason::InvalidSchedulerAnnotation,
                        false,
                        format!("{e}; using the node default scheduler"),
                    ));
                    None
                }
            }
        }
    };
    let rank_time = svc
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| (t.0.as_second(), t.0.subsec_nanosecond()));
    ServiceParse::Proxied(Box::new(ParsedService {
        rank: (rank_time, sname.clone()),
        name: sname,
        cluster_ips,
        external_ips,
        lb_ips,
        source_ranges,
        source_ranges_unusable,
        ports,
        node_ports_enabled,
        etp_local,
        itp_local,
        health_check_node_port,
        affinity_timeout,
        scheduler,
        publish_not_ready: spec.publish_not_ready_addresses == Some(true),
    }))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SlicePort {
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParsedEndpoint {
    pub addr: IpAddr,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    /// `nodeName` is this node (the node name is fixed for a `ProxyState`).
    pub local: bool,
    /// Topology hints, boxed: most endpoints have none, and every endpoint
    /// of the cluster is held, so the common case costs one pointer.
    pub hints: Option<Box<Hints>>,
}

/// An endpoint's topology hints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hints {
    /// `hints.forZones` names; `None` when the endpoint has no zone hints.
    pub zones: Option<Vec<String>>,
    /// `hints.forNodes` names; `None` when the endpoint has no node hints.
    pub nodes: Option<Vec<String>>,
}

impl ParsedEndpoint {
    /// `hints.forZones` names, if any.
    pub fn zone_hints(&self) -> Option<&Vec<String>> {
        self.hints.as_ref().and_then(|h| h.zones.as_ref())
    }

    /// `hints.forNodes` names, if any.
    pub fn node_hints(&self) -> Option<&Vec<String>> {
        self.hints.as_ref().and_then(|h| h.nodes.as_ref())
    }
}

/// An EndpointSlice, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParsedSlice {
    pub service: std::sync::Arc<ServiceName>,
    pub family: IpFamily,
    pub ports: Vec<SlicePort>,
    pub endpoints: Vec<ParsedEndpoint>,
}

/// Parses an EndpointSlice. `Ok(None)`: nothing to use (FQDN slices).
pub(crate) fn parse_slice(
    slice: &EndpointSlice,
    config: &Config,
    node_name: &str,
    names: Names<'_>,
    rejections: &mut Vec<Rejection>,
) -> Option<ParsedSlice> {
    let ns = slice.metadata.namespace.as_deref().unwrap_or("");
    let name = slice.metadata.name.as_deref().unwrap_or("");
    let o = obj(ObjectKind::EndpointSlice, ns, name);
    if ns.is_empty() || name.is_empty() {
        rejections.push(reject(
            &o,
            RejectReason::MissingMetadata,
            true,
            "metadata.namespace and metadata.name are required".to_owned(),
        ));
        return None;
    }
    let Some(svc) = slice
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SERVICE_NAME_LABEL))
        .filter(|s| !s.is_empty())
    else {
        rejections.push(reject(
            &o,
            RejectReason::MissingServiceName,
            true,
            format!("no {SERVICE_NAME_LABEL} label"),
        ));
        return None;
    };
    let family = match slice.address_type.as_str() {
        "IPv4" => IpFamily::V4,
        "IPv6" => IpFamily::V6,
        // FQDN slices are legal and simply not for a proxy.
        "FQDN" => return None,
        other => {
            rejections.push(reject(
                &o,
                RejectReason::UnsupportedAddressType,
                true,
                format!("addressType {other:?}"),
            ));
            return None;
        }
    };
    let mut ports = Vec::with_capacity(slice.ports.as_ref().map_or(0, Vec::len));
    for p in slice.ports.iter().flatten() {
        let pname = p.name.clone().unwrap_or_default();
        let Some(protocol) = port_protocol(&o, &pname, p.protocol.as_deref(), rejections) else {
            continue;
        };
        let Some(port) = p.port.and_then(port_u16) else {
            rejections.push(reject(
                &o,
                RejectReason::PortOutOfRange,
                false,
                format!("port {pname:?}: port {:?} outside 1-65535", p.port),
            ));
            continue;
        };
        ports.push(SlicePort {
            name: pname,
            protocol,
            port,
        });
    }
    let mut endpoints = Vec::with_capacity(slice.endpoints.len());
    let max = config.limits.max_endpoints_per_service;
    if slice.endpoints.len() > max {
        rejections.push(reject(
            &o,
            RejectReason::TooLarge,
            false,
            format!(
                "{} endpoints, more than the limit of {max}; the rest ignored",
                slice.endpoints.len()
            ),
        ));
    }
    for (i, ep) in slice.endpoints.iter().take(max).enumerate() {
        // Like kube-proxy, only the first address is used: the API defines
        // further addresses as interchangeable and consumers may pick the first.
        let Some(raw) = ep.addresses.first() else {
            rejections.push(reject(
                &o,
                RejectReason::EndpointWithoutAddress,
                false,
                format!("endpoints[{i}] has no addresses"),
            ));
            continue;
        };
        let addr = match raw.parse_ip() {
            Ok(a) if IpFamily::of(&a) == family => a,
            _ => {
                rejections.push(reject(
                    &o,
                    RejectReason::InvalidEndpointAddress,
                    false,
                    format!(
                        "endpoints[{i}] address {raw:?} is not an {} address",
                        family.as_str()
                    ),
                ));
                continue;
            }
        };
        let c = ep.conditions.as_ref();
        // Nil ready/serving mean true; nil terminating means false (API docs).
        let ready = c.and_then(|c| c.ready).unwrap_or(true);
        let serving = c.and_then(|c| c.serving).unwrap_or(ready);
        let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
        let zone_hints = ep
            .hints
            .as_ref()
            .and_then(|h| h.for_zones.as_ref())
            .filter(|z| !z.is_empty())
            .map(|z| z.iter().map(|z| z.name.clone()).collect());
        let node_hints = ep
            .hints
            .as_ref()
            .and_then(|h| h.for_nodes.as_ref())
            .filter(|n| !n.is_empty())
            .map(|n| n.iter().map(|n| n.name.clone()).collect());
        let hints = (zone_hints.is_some() || node_hints.is_some()).then(|| {
            Box::new(Hints {
                zones: zone_hints,
                nodes: node_hints,
            })
        });
        endpoints.push(ParsedEndpoint {
            addr,
            ready,
            serving,
            terminating,
            local: !node_name.is_empty() && ep.node_name.as_deref() == Some(node_name),
            hints,
        });
    }
    Some(ParsedSlice {
        service: names(ns, svc),
        family,
        ports,
        endpoints,
    })
}

#[cfg(test)]
mod tests {
    use super::ParseIp;
    use proptest::prelude::*;
    use std::net::IpAddr;

    fn agrees(s: &str) {
        assert_eq!(s.parse_ip(), s.parse::<IpAddr>(), "{s:?}");
    }

    #[test]
    fn fast_ipv4_parse_agrees_with_std() {
        for s in [
            "1.2.3.4",
            "0.0.0.0",
            "255.255.255.255",
            "10.128.0.10",
            "256.1.1.1",
            "1.2.3.256",
            "01.2.3.4",
            "1.2.3.04",
            "1.2.3.00",
            "0000.1.1.1",
            "1.2.3",
            "1.2.3.4.",
            ".1.2.3.4",
            "1..2.3",
            " 1.2.3.4",
            "1.2.3.4 ",
            "1.2.3.4x",
            "1.2.3.-4",
            "+1.2.3.4",
            "",
            "::1",
            "fd00::10",
            "::ffff:1.2.3.4",
            "9999.1.1.1",
            "0.0.0.1",
            "1.0.0.0",
            "10.0.255.0",
            "300.1.1.1",
            "1.300.1.1",
            "1.1.1.300",
            "1.2.3.4.5",
            "1.2.3.",
            "12.34.56.789",
            "255.255.255.2555",
            "a.b.c.d",
        ] {
            agrees(s);
        }
    }

    proptest! {
        #[test]
        fn fast_ipv4_parse_agrees_with_std_on_digit_strings(s in "[0-9.]{0,20}") {
            prop_assert_eq!(s.parse_ip(), s.parse::<IpAddr>());
        }

        #[test]
        fn fast_ipv4_parse_agrees_with_std_on_dotted_quads(
            a in "(0|00|[1-9][0-9]{0,3}|0[0-9]{1,2})",
            b in "[0-9]{1,3}",
            c in "[0-9]{1,3}",
            d in "(0|[0-9]{1,4}|[1-9][0-9]{0,2}[x/]?)",
        ) {
            let s = format!("{a}.{b}.{c}.{d}");
            prop_assert_eq!(s.parse_ip(), s.parse::<IpAddr>());
        }
    }
}
