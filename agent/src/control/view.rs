//! The view: the JSON document `show` prints (`View`, version
//! [`super::VIEW_VERSION`]), built from a kernel dump and a mapping back to
//! Services.

use std::time::{Duration, Instant};

use ipvs::ServiceKey;
use serde::{Deserialize, Serialize};

use crate::proxier::{CoreProxier, Kernel};

use super::VIEW_VERSION;

/// What `show` prints: one document, the same shape whether it came from the
/// running agent, from `--manifests`/a kubeconfig, or from the kernel alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct View {
    /// [`VIEW_VERSION`].
    pub version: u32,
    /// Where the mapping came from: `agent` (the running agent), `manifests`
    /// or `cluster` (`show` read the sources itself), `kernel` (no
    /// mapping: no agent answered).
    pub mapping: String,
    /// The agent that answered (`null` unless `mapping` is `agent`).
    pub agent: Option<AgentInfo>,
    /// The agent's last sync (`null` before the first one, or without an
    /// agent).
    pub last_sync: Option<LastSync>,
    /// When the last sync without errors ended (`null`: none yet).
    pub last_successful_sync: Option<String>,
    /// The virtual servers, sorted by service then key.
    pub virtual_servers: Vec<VirtualServerView>,
    /// Objects refused (malformed Services and EndpointSlices), with why.
    pub rejected: Vec<RejectedView>,
}

/// The agent process behind the socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentInfo {
    /// Its pid.
    pub pid: u32,
    /// Its version (`CARGO_PKG_VERSION`).
    pub version: String,
    /// The node name it programs for.
    pub node: String,
    /// `cluster` or `manifests DIR`.
    pub source: String,
    /// True with `--dry-run`: nothing is programmed in the kernel.
    pub dry_run: bool,
    /// When it started (RFC 3339, UTC).
    pub started_at: String,
}

/// One sync of the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastSync {
    /// When it started (RFC 3339, UTC).
    pub started_at: String,
    /// How long it took.
    pub duration_seconds: f64,
    /// `full` or `partial`.
    pub kind: String,
    /// `ok`, `refused` (the kernel refused `failed_ops` operations; their
    /// Services are retried) or `error` (the sync failed as a whole).
    pub result: String,
    /// Operations the kernel refused.
    pub failed_ops: usize,
    /// Why the sync failed (`result` `error`).
    pub error: Option<String>,
    /// Virtual servers programmed after it.
    pub virtual_servers: usize,
    /// Real servers programmed after it (draining included).
    pub real_servers: usize,
    /// Real servers draining after it.
    pub draining: usize,
}

/// One IPVS virtual server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VirtualServerView {
    /// The Service port, `namespace/name:port` (`null`: not known to be
    /// ours).
    pub service: Option<String>,
    /// The Service's namespace.
    pub namespace: Option<String>,
    /// The Service's name.
    pub name: Option<String>,
    /// The port's name (empty for a single unnamed port).
    pub port_name: Option<String>,
    /// ipvsadm's notation: `TCP 10.96.0.10:80`, `UDP [fd00::a]:53`, `FWM 7`.
    pub virtual_server: String,
    /// `TCP`, `UDP`, `SCTP` (`null` for a firewall mark).
    pub protocol: Option<String>,
    /// The virtual address (`null` for a firewall mark).
    pub address: Option<String>,
    /// The virtual port (`null` for a firewall mark).
    pub port: Option<u16>,
    /// The firewall mark (`null` unless a firewall-mark service).
    pub fwmark: Option<u32>,
    /// The scheduler.
    pub scheduler: String,
    /// The persistence timeout in seconds (`null`: not persistent).
    pub persistent_timeout: Option<u32>,
    /// False for a virtual server the agent wants but the kernel does not
    /// hold (refused, or `--dry-run`); its `real_servers` are then empty.
    pub in_kernel: bool,
    /// The real servers, sorted by address and port.
    pub real_servers: Vec<RealServerView>,
}

/// One real server of a virtual server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RealServerView {
    /// Address.
    pub address: String,
    /// Port.
    pub port: u16,
    /// Weight (0: no new connections).
    pub weight: u32,
    /// Active connections (the kernel's, at request time).
    pub active: u32,
    /// Inactive connections (the kernel's, at request time).
    pub inactive: u32,
    /// True while the agent drains it (removed endpoint, weight 0, deleted
    /// once its connections end or after `--drain-period`); `null` when
    /// unknown (no mapping).
    pub draining: Option<bool>,
    /// How long it has been draining, in seconds (agent only).
    pub draining_seconds: Option<f64>,
}

/// An object refused by the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedView {
    /// `Service` or `EndpointSlice`.
    pub kind: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// A stable reason label (as in `ipvs_proxy_rejected_objects_total`).
    pub reason: String,
    /// What exactly, human-readable.
    pub detail: String,
    /// True when nothing of the object is programmed.
    pub whole_object: bool,
}

impl RejectedView {
    /// From proxy-core's rejection.
    pub fn from_rejection(r: &proxy_core::Rejection) -> Self {
        RejectedView {
            kind: r.object.kind.as_str().to_string(),
            namespace: r.object.namespace.clone(),
            name: r.object.name.clone(),
            reason: r.reason.as_str().to_string(),
            detail: r.detail.clone(),
            whole_object: r.whole_object,
        }
    }
}

/// A kernel dump, as ipvs-rs reads it.
pub type Dump = Vec<(ipvs::VirtualServer, Vec<ipvs::RealServer>)>;

/// What a mapping knows about one virtual server and its real servers.
pub trait Mapping {
    /// The Service port (`namespace/name:port`) the virtual server belongs to.
    fn owner(&self, key: &ServiceKey) -> Option<String>;
    /// Whether a real server drains (`None`: unknown) and for how long.
    fn draining(&self, vs: &ServiceKey, rs: &ipvs::RealServer) -> (Option<bool>, Option<Duration>);
}

/// No mapping: the kernel's state as it is.
#[derive(Debug, Default)]
pub struct Unmapped;

impl Mapping for Unmapped {
    fn owner(&self, _: &ServiceKey) -> Option<String> {
        None
    }
    fn draining(&self, _: &ServiceKey, _: &ipvs::RealServer) -> (Option<bool>, Option<Duration>) {
        (None, None)
    }
}

/// A mapping computed from a desired state alone (`show --manifests`, or
/// with a kubeconfig): a real server of a virtual server the state wants
/// drains when the state does not want it and its weight is 0.
#[derive(Debug)]
pub struct DesiredMapping<'a>(pub &'a proxy_core::DesiredState);

impl Mapping for DesiredMapping<'_> {
    fn owner(&self, key: &ServiceKey) -> Option<String> {
        self.0.virtual_servers.get(key).map(|v| v.owner.to_string())
    }
    fn draining(&self, vs: &ServiceKey, rs: &ipvs::RealServer) -> (Option<bool>, Option<Duration>) {
        match self.0.virtual_servers.get(vs) {
            Some(d) => (
                Some(rs.weight == 0 && !d.real_servers.contains_key(&rs.key)),
                None,
            ),
            None => (None, None),
        }
    }
}

/// The running agent's mapping: owners from its state (including virtual
/// servers of deleted Services that still drain), draining from its drain
/// book.
pub(super) struct AgentMapping<'a, K> {
    pub(super) proxier: &'a CoreProxier<K>,
    pub(super) now: Instant,
}

impl<K: Kernel> Mapping for AgentMapping<'_, K> {
    fn owner(&self, key: &ServiceKey) -> Option<String> {
        self.proxier.owner_of(key)
    }
    fn draining(&self, vs: &ServiceKey, rs: &ipvs::RealServer) -> (Option<bool>, Option<Duration>) {
        match self.proxier.drains().started(vs, &rs.key) {
            Some(t) => (Some(true), Some(self.now.saturating_duration_since(t))),
            None => (Some(false), None),
        }
    }
}

fn split_owner(owner: &str) -> (Option<String>, Option<String>, Option<String>) {
    let Some((svc, port)) = owner.rsplit_once(':') else {
        return (None, None, None);
    };
    match svc.split_once('/') {
        Some((ns, name)) => (Some(ns.into()), Some(name.into()), Some(port.into())),
        None => (None, None, None),
    }
}

fn fmt_addr(a: std::net::IpAddr) -> String {
    a.to_string()
}

fn vs_view(
    vs: &ipvs::VirtualServer,
    service: Option<String>,
    in_kernel: bool,
) -> VirtualServerView {
    let (namespace, name, port_name) = service
        .as_deref()
        .map(split_owner)
        .unwrap_or((None, None, None));
    let (protocol, address, port, fwmark) = match vs.key {
        ServiceKey::Addr {
            protocol,
            addr,
            port,
        } => (
            Some(protocol.to_string()),
            Some(fmt_addr(addr)),
            Some(port),
            None,
        ),
        ServiceKey::Fwmark { mark, .. } => (None, None, None, Some(mark)),
    };
    VirtualServerView {
        service,
        namespace,
        name,
        port_name,
        virtual_server: vs.key.to_string(),
        protocol,
        address,
        port,
        fwmark,
        scheduler: vs.scheduler.clone(),
        persistent_timeout: vs
            .flags
            .contains(ipvs::ServiceFlags::PERSISTENT)
            .then_some(vs.timeout),
        in_kernel,
        real_servers: Vec::new(),
    }
}

/// Joins a kernel dump with a mapping; `desired` adds the virtual servers
/// wanted but absent from the kernel (`in_kernel: false`).
pub fn virtual_servers<'a>(
    dump: &[(ipvs::VirtualServer, Vec<ipvs::RealServer>)],
    mapping: &dyn Mapping,
    desired: impl IntoIterator<Item = (&'a ipvs::VirtualServer, String)>,
) -> Vec<VirtualServerView> {
    let mut out: Vec<(ServiceKey, VirtualServerView)> = Vec::with_capacity(dump.len());
    let mut seen: std::collections::HashSet<ServiceKey> = std::collections::HashSet::new();
    for (vs, rss) in dump {
        seen.insert(vs.key);
        let mut v = vs_view(vs, mapping.owner(&vs.key), true);
        let mut rss: Vec<&ipvs::RealServer> = rss.iter().collect();
        rss.sort_by_key(|r| r.key);
        v.real_servers = rss
            .into_iter()
            .map(|r| {
                let (draining, since) = mapping.draining(&vs.key, r);
                RealServerView {
                    address: fmt_addr(r.key.addr),
                    port: r.key.port,
                    weight: r.weight,
                    active: r.conns.active,
                    inactive: r.conns.inactive,
                    draining,
                    draining_seconds: since.map(|d| (d.as_secs_f64() * 10.0).round() / 10.0),
                }
            })
            .collect();
        out.push((vs.key, v));
    }
    for (vs, owner) in desired {
        if !seen.contains(&vs.key) {
            out.push((vs.key, vs_view(vs, Some(owner), false)));
        }
    }
    // Unmapped last, as `-` sorts after letters in the text form.
    out.sort_by(|a, b| {
        (a.1.service.is_none(), &a.1.service, a.0).cmp(&(b.1.service.is_none(), &b.1.service, b.0))
    });
    out.into_iter().map(|(_, v)| v).collect()
}

impl View {
    /// A view with no agent behind it.
    pub fn new(mapping: &str, virtual_servers: Vec<VirtualServerView>) -> Self {
        View {
            version: VIEW_VERSION,
            mapping: mapping.to_string(),
            agent: None,
            last_sync: None,
            last_successful_sync: None,
            virtual_servers,
            rejected: Vec::new(),
        }
    }

    /// Keeps one Service (`namespace/name`, or one port:
    /// `namespace/name:port`) and its rejections.
    pub fn select(&mut self, only: &str) {
        let matches = |owner: &str| owner == only || owner.starts_with(&format!("{only}:"));
        self.virtual_servers
            .retain(|v| v.service.as_deref().is_some_and(matches));
        let (ns, name) = only.split_once('/').unwrap_or(("", only));
        let name = name.split_once(':').map_or(name, |(n, _)| n);
        self.rejected
            .retain(|r| r.kind == "Service" && r.namespace == ns && r.name == name);
    }
}
