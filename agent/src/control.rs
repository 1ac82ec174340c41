//! The local control endpoint: the running agent's view for `ipvs-proxy show`.
//!
//! The agent serves HTTP/1.1 on a unix socket (default
//! [`DEFAULT_SOCKET`]; the socket `0600`, its directory created `0700`, so
//! only root on the node can connect; peers of another uid are refused as
//! well). One request, `GET /v1/show[?service=NAMESPACE/NAME]`, answers a
//! [`View`] as JSON: each IPVS virtual server read from the kernel at
//! request time (connection counters are the kernel's), mapped back to the
//! Service port it belongs to from the agent's own state (no second watch of
//! the cluster), with its real servers, weights, connection counters and
//! draining state, plus the last sync and the rejected objects.
//!
//! `ipvs-proxy show` is the client ([`fetch`]); `curl --unix-socket
//! /run/ipvs-proxy/ipvs-proxy.sock http://localhost/v1/show` works too.
//! The JSON shape ([`View`], `"version": 1`) is stable: fields may be added,
//! none is renamed or removed without a new version.

use std::convert::Infallible;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Bytes;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use ipvs::ServiceKey;
use serde::{Deserialize, Serialize};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::proxier::{CoreProxier, Kernel};
use crate::source::Change;
use crate::sync::{Proxier, SyncKind, SyncOutcome};

/// Where the agent serves its view unless `--control-socket` says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/ipvs-proxy/ipvs-proxy.sock";

/// The version of the [`View`] JSON shape.
pub const VIEW_VERSION: u32 = 1;

/// The request path.
pub const SHOW_PATH: &str = "/v1/show";

/// How long `show` waits to connect, and for the whole answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);

/// Longest the agent waits for the kernel's table while it holds the state
/// (and so delays the next sync).
const READ_TIMEOUT: Duration = Duration::from_secs(30);

async fn read_bounded(read: &Reader) -> Result<Dump, String> {
    tokio::time::timeout(READ_TIMEOUT, read())
        .await
        .map_err(|_| format!("the kernel's IPVS table was not read in {READ_TIMEOUT:?}"))?
}

/// The socket path from `--control-socket`: the default when unset, `None`
/// when set to the empty string (the agent then serves nothing).
pub fn socket_path(flag: Option<&str>) -> Option<PathBuf> {
    match flag {
        None => Some(PathBuf::from(DEFAULT_SOCKET)),
        Some("") => None,
        Some(p) => Some(PathBuf::from(p)),
    }
}

// --- the view -------------------------------------------------------------------

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
struct AgentMapping<'a, K> {
    proxier: &'a CoreProxier<K>,
    now: Instant,
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

// --- text -----------------------------------------------------------------------

/// The text form of a view: the agent's header lines (when an agent
/// answered), one line per virtual server (`-` for an unknown owner) with
/// its real servers below, then one line per rejected object.
pub fn render_text(view: &View) -> String {
    let mut out = String::new();
    if let Some(a) = &view.agent {
        out.push_str(&format!(
            "agent: pid {}, node {}, {}{}, running since {}\n",
            a.pid,
            a.node,
            a.source,
            if a.dry_run { ", dry run" } else { "" },
            a.started_at
        ));
        match &view.last_sync {
            None => out.push_str("last sync: none yet\n"),
            Some(s) => {
                let result = match s.result.as_str() {
                    "ok" => "ok".to_string(),
                    "refused" => format!("{} operations refused by the kernel", s.failed_ops),
                    _ => format!("failed: {}", s.error.as_deref().unwrap_or("?")),
                };
                out.push_str(&format!(
                    "last sync: {} {}, {} ms, {}\n",
                    s.started_at,
                    s.kind,
                    (s.duration_seconds * 1000.0).round(),
                    result
                ));
                if s.result != "ok" {
                    out.push_str(&format!(
                        "last successful sync: {}\n",
                        view.last_successful_sync.as_deref().unwrap_or("none")
                    ));
                }
            }
        }
    }
    for vs in &view.virtual_servers {
        let mut line = format!(
            "{}  {}  {}",
            vs.service.as_deref().unwrap_or("-"),
            vs.virtual_server,
            vs.scheduler
        );
        if let Some(t) = vs.persistent_timeout {
            line.push_str(&format!("  persistent {t}"));
        }
        if !vs.in_kernel {
            line.push_str("  (not in the kernel)");
        }
        out.push_str(&line);
        out.push('\n');
        for r in &vs.real_servers {
            let addr = if r.address.contains(':') {
                format!("[{}]:{}", r.address, r.port)
            } else {
                format!("{}:{}", r.address, r.port)
            };
            out.push_str(&format!(
                "  -> {addr}  weight {}  active {}  inactive {}{}\n",
                r.weight,
                r.active,
                r.inactive,
                if r.draining == Some(true) {
                    "  draining"
                } else {
                    ""
                }
            ));
        }
    }
    for r in &view.rejected {
        out.push_str(&format!(
            "rejected {} {}/{}: {} ({})\n",
            r.kind, r.namespace, r.name, r.reason, r.detail
        ));
    }
    out
}

/// RFC 3339 in UTC with milliseconds: `2026-12-07T23:10:05.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days -> civil date.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        d.subsec_millis()
    )
}

// --- the agent's side -------------------------------------------------------------

/// Answers requests: the production one is [`Control`]; tests use fakes.
pub trait ViewSource: Send + Sync {
    /// The view, for one Service when `only` is set.
    fn view<'a>(&'a self, only: Option<&'a str>) -> BoxFuture<'a, Result<View, String>>;
}

/// Reads the kernel's IPVS table (counters included).
pub async fn read_kernel() -> Result<Dump, ipvs::Error> {
    ipvs::AsyncHandle::new().await?.dump().await
}

/// The state one sync leaves, kept with the proxier.
#[derive(Debug, Default)]
struct Record {
    last: Option<LastSync>,
    last_ok: Option<SystemTime>,
}

struct Held<K> {
    proxier: CoreProxier<K>,
    record: Record,
}

/// The agent's state as the sync loop leaves it; read under the same lock
/// the sync takes, so a view never sees half a sync.
trait Attached: Send + Sync {
    fn view<'a>(
        &'a self,
        agent: AgentInfo,
        read: &'a Reader,
    ) -> BoxFuture<'a, Result<View, String>>;
}

/// Reads the kernel's table: [`read_kernel`], or a fake in tests.
pub type Reader = Arc<dyn Fn() -> BoxFuture<'static, Result<Dump, String>> + Send + Sync>;

struct Shared<K>(tokio::sync::Mutex<Held<K>>);

impl<K: Kernel + 'static> Attached for Shared<K> {
    fn view<'a>(
        &'a self,
        agent: AgentInfo,
        read: &'a Reader,
    ) -> BoxFuture<'a, Result<View, String>> {
        Box::pin(async move {
            // Held across the read: no sync runs between the kernel's table
            // and the state it is mapped with.
            let held = self.0.lock().await;
            let dump = read_bounded(read).await?;
            let mapping = AgentMapping {
                proxier: &held.proxier,
                now: Instant::now(),
            };
            let desired = held
                .proxier
                .desired()
                .virtual_servers
                .values()
                .map(|v| (&v.server, v.owner.to_string()));
            let mut view = View::new("agent", virtual_servers(&dump, &mapping, desired));
            view.agent = Some(agent);
            view.last_sync = held.record.last.clone();
            view.last_successful_sync = held.record.last_ok.map(rfc3339);
            view.rejected = held
                .proxier
                .rejections()
                .iter()
                .map(RejectedView::from_rejection)
                .collect();
            Ok(view)
        })
    }
}

/// The agent's control endpoint state: who it is, and (once the proxier
/// exists) the proxier behind a lock the sync loop shares. Cheap to clone.
#[derive(Clone)]
pub struct Control {
    agent: AgentInfo,
    attached: Arc<Mutex<Option<Arc<dyn Attached>>>>,
    read: Reader,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("agent", &self.agent)
            .finish_non_exhaustive()
    }
}

impl Control {
    /// For the agent of this node reading `source` (`cluster` or
    /// `manifests DIR`).
    pub fn new(node: &str, source: String, dry_run: bool) -> Self {
        Control {
            agent: AgentInfo {
                pid: std::process::id(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                node: node.to_string(),
                source,
                dry_run,
                started_at: rfc3339(SystemTime::now()),
            },
            attached: Arc::default(),
            read: Arc::new(|| {
                Box::pin(async {
                    read_kernel()
                        .await
                        .map_err(|e| format!("cannot read IPVS: {}", crate::error::Chain(&e)))
                })
            }),
        }
    }

    /// Reads the kernel with `read` instead (tests).
    pub fn with_reader(mut self, read: Reader) -> Self {
        self.read = read;
        self
    }

    /// The agent's endpoint: built from its flags and started at once (on
    /// `--control-socket`, default [`DEFAULT_SOCKET`]; nothing when empty),
    /// on the agent's tracker, closing in its shutdown's phase 2.
    pub fn start(
        node: &str,
        flags: &crate::config::Flags,
        shutdown: &crate::shutdown::Shutdown,
    ) -> Self {
        let source = match &flags.manifests {
            Some(dir) => format!("manifests {}", dir.display()),
            None => "cluster".to_string(),
        };
        let c = Control::new(node, source, flags.dry_run);
        c.spawn(socket_path(flags.control_socket.as_deref()), shutdown);
        c
    }

    /// The proxier the sync loop runs, wrapped so that each sync is recorded
    /// and requests can read its state between syncs.
    pub fn publish<K: Kernel + 'static>(&self, proxier: CoreProxier<K>) -> Published<K> {
        let shared = Arc::new(Shared(tokio::sync::Mutex::new(Held {
            proxier,
            record: Record::default(),
        })));
        *self.attached.lock().unwrap_or_else(|p| p.into_inner()) = Some(shared.clone());
        Published {
            shared,
            queued: Vec::new(),
        }
    }

    /// Binds `path` and serves on the shutdown's tracker until its phase 2;
    /// the socket file is removed then. A failure to bind is logged: the
    /// agent runs on.
    pub fn spawn(&self, path: Option<PathBuf>, shutdown: &crate::shutdown::Shutdown) {
        let Some(path) = path else { return };
        match bind(&path) {
            Ok(bound) => {
                tracing::info!(socket = %path.display(), "serving show");
                shutdown.spawn(serve(bound, Arc::new(self.clone()), shutdown.close_token()));
            }
            Err(e) => tracing::error!(socket = %path.display(), error = %e, "cannot serve show"),
        }
    }
}

impl ViewSource for Control {
    fn view<'a>(&'a self, only: Option<&'a str>) -> BoxFuture<'a, Result<View, String>> {
        Box::pin(async move {
            let attached = self
                .attached
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let mut view = match attached {
                Some(a) => a.view(self.agent.clone(), &self.read).await?,
                // Still starting: the kernel as it is.
                None => {
                    let dump = read_bounded(&self.read).await?;
                    let mut v = View::new("agent", virtual_servers(&dump, &Unmapped, []));
                    v.agent = Some(self.agent.clone());
                    v
                }
            };
            if let Some(o) = only {
                view.select(o);
            }
            Ok(view)
        })
    }
}

/// A [`CoreProxier`] whose state `show` can read; see [`Control::publish`].
pub struct Published<K> {
    shared: Arc<Shared<K>>,
    /// Changes that arrived while a request held the state; applied, in
    /// order, before the next change or sync.
    queued: Vec<Change>,
}

impl<K> std::fmt::Debug for Published<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Published")
            .field("queued", &self.queued.len())
            .finish_non_exhaustive()
    }
}

fn kind_label(kind: SyncKind) -> &'static str {
    match kind {
        SyncKind::Full => "full",
        SyncKind::Partial => "partial",
    }
}

impl<K: Kernel + 'static> Proxier for Published<K> {
    fn apply_change(&mut self, change: Change) {
        // Never wait here: a request holding the state only delays the
        // change until the next call.
        match self.shared.0.try_lock() {
            Ok(mut held) => {
                for c in self.queued.drain(..) {
                    held.proxier.apply_change(c);
                }
                held.proxier.apply_change(change);
            }
            Err(_) => self.queued.push(change),
        }
    }

    async fn sync(&mut self, kind: SyncKind) -> Result<SyncOutcome, Error> {
        let mut held = self.shared.0.lock().await;
        for c in self.queued.drain(..) {
            held.proxier.apply_change(c);
        }
        let started = SystemTime::now();
        let t = Instant::now();
        let result = held.proxier.sync(kind).await;
        let end = SystemTime::now();
        let mut rec = LastSync {
            started_at: rfc3339(started),
            duration_seconds: t.elapsed().as_secs_f64(),
            kind: kind_label(kind).to_string(),
            result: "ok".to_string(),
            failed_ops: 0,
            error: None,
            virtual_servers: 0,
            real_servers: 0,
            draining: 0,
        };
        match &result {
            Ok(o) => {
                rec.failed_ops = o.failed_ops;
                rec.virtual_servers = o.virtual_servers;
                rec.real_servers = o.real_servers;
                rec.draining = o.draining;
                if o.failed_ops > 0 {
                    rec.result = "refused".to_string();
                } else {
                    held.record.last_ok = Some(end);
                }
            }
            Err(e) => {
                rec.result = "error".to_string();
                rec.error = Some(e.to_string());
            }
        }
        held.record.last = Some(rec);
        result
    }
}

// --- the socket -------------------------------------------------------------------

/// Why the control socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Another process answers on the path.
    #[error("another agent answers on {0}")]
    InUse(PathBuf),
    /// Something that is not a socket is in the way (never removed).
    #[error("{0} exists and is not a socket; not removing it")]
    NotASocket(PathBuf),
    /// The directory belongs to another user.
    #[error("{dir} belongs to uid {uid}, not to us; not serving there")]
    ForeignDirectory {
        /// The directory.
        dir: PathBuf,
        /// Its owner.
        uid: u32,
    },
    /// A system call failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was attempted.
        what: &'static str,
        /// On what.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// A bound control socket; dropping it removes the socket file if it is
/// still ours.
#[derive(Debug)]
pub struct Bound {
    listener: UnixListener,
    path: PathBuf,
    id: (u64, u64),
}

impl Bound {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Bound {
    fn drop(&mut self) {
        // Only our own file: another agent may have taken the path over.
        if let Ok(m) = std::fs::symlink_metadata(&self.path) {
            if (m.dev(), m.ino()) == self.id {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// Binds the control socket at `path`: creates its directory (`0700`) when
/// missing, replaces a stale socket left by a dead agent (one nobody answers
/// on), refuses to touch anything else, and makes the socket `0600`.
pub fn bind(path: &Path) -> Result<Bound, BindError> {
    let io_err = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| BindError::Io { what, path, source }
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        match std::fs::symlink_metadata(dir) {
            Ok(m) => {
                let euid = nix::unistd::geteuid().as_raw();
                if m.uid() != euid {
                    return Err(BindError::ForeignDirectory {
                        dir: dir.to_path_buf(),
                        uid: m.uid(),
                    });
                }
                if m.mode() & 0o077 != 0 {
                    tracing::warn!(dir = %dir.display(), mode = format!("{:o}", m.mode() & 0o7777), "the control socket's directory is open to other users; the socket itself is 0600");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(io_err("cannot create", dir))?;
            }
            Err(e) => return Err(io_err("cannot read", dir)(e)),
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => return Err(BindError::InUse(path.to_path_buf())),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                tracing::info!(socket = %path.display(), "removing the stale socket of an agent that is gone");
                std::fs::remove_file(path).map_err(io_err("cannot remove", path))?;
            }
            Err(e) => return Err(io_err("cannot check", path)(e)),
        },
        Ok(_) => return Err(BindError::NotASocket(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("cannot read", path)(e)),
    }
    let listener = UnixListener::bind(path).map_err(io_err("cannot bind", path))?;
    // Bound first, then 0600: the directory (ours, 0700) keeps others out
    // in between.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(io_err("cannot chmod", path))?;
    let m = std::fs::symlink_metadata(path).map_err(io_err("cannot read", path))?;
    Ok(Bound {
        listener,
        path: path.to_path_buf(),
        id: (m.dev(), m.ino()),
    })
}

type Body = Full<Bytes>;

fn respond(status: StatusCode, content_type: &str, body: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert(CONTENT_TYPE, v);
    }
    r
}

fn error_body(msg: &str) -> String {
    serde_json::json!({ "error": msg }).to_string() + "\n"
}

/// Decodes `%XX` escapes (and `+` as a space) of a query value.
fn percent_decode(s: &str) -> String {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The `service` parameter of a query string.
fn service_param(query: Option<&str>) -> Option<String> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "service")
        .map(|(_, v)| percent_decode(v))
        .filter(|v| !v.is_empty())
}

async fn handle<B>(req: Request<B>, source: Arc<dyn ViewSource>) -> Response<Body> {
    if req.uri().path() != SHOW_PATH {
        return respond(
            StatusCode::NOT_FOUND,
            "application/json",
            error_body("not found; try GET /v1/show[?service=NAMESPACE/NAME]"),
        );
    }
    if req.method() != hyper::Method::GET {
        return respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "application/json",
            error_body("only GET"),
        );
    }
    let only = service_param(req.uri().query());
    match source.view(only.as_deref()).await {
        Ok(v) => match serde_json::to_string(&v) {
            Ok(s) => respond(StatusCode::OK, "application/json", s + "\n"),
            Err(e) => respond(
                StatusCode::INTERNAL_SERVER_ERROR,
                "application/json",
                error_body(&e.to_string()),
            ),
        },
        Err(e) => respond(
            StatusCode::INTERNAL_SERVER_ERROR,
            "application/json",
            error_body(&e),
        ),
    }
}

/// Serves `bound` until `close` is cancelled: the socket file goes then,
/// and the requests in flight are answered before it returns (dropping the
/// future ends them at once). Peers of another uid than ours (root, for the
/// agent) are refused even if the file mode let them connect.
pub async fn serve(bound: Bound, source: Arc<dyn ViewSource>, close: CancellationToken) {
    let euid = nix::unistd::geteuid().as_raw();
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            () = close.cancelled() => break,
            accepted = bound.listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let uid = stream.peer_cred().map(|c| c.uid()).ok();
                    let src = source.clone();
                    let close = close.clone();
                    conns.spawn(async move {
                        let allowed = uid == Some(euid) || uid == Some(0);
                        let svc = hyper::service::service_fn(move |req| {
                            let src = src.clone();
                            async move {
                                if !allowed {
                                    return Ok::<_, Infallible>(respond(
                                        StatusCode::FORBIDDEN,
                                        "application/json",
                                        error_body("only root may ask"),
                                    ));
                                }
                                Ok::<_, Infallible>(handle(req, src).await)
                            }
                        });
                        let conn = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc);
                        if let Err(e) = crate::http::graceful(conn, &close).await {
                            tracing::debug!(error = %e, "control connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "control socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    // New clients find no agent from here on.
    drop(bound);
    while conns.join_next().await.is_some() {}
}

// --- the client ---------------------------------------------------------------------

/// Why `show` got no view from the agent.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answers on the socket (no file, or a stale one).
    #[error("no agent answers on {path}: {source}")]
    NoAgent {
        /// The socket.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Not allowed to connect (not root).
    #[error("cannot connect to {path}: {source} (show needs root)")]
    Denied {
        /// The socket.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Anything else on the way.
    #[error("asking the agent on {path}: {detail}")]
    Failed {
        /// The socket.
        path: PathBuf,
        /// What failed.
        detail: String,
    },
}

/// Asks the agent on `path` for its view (one Service when `only` is set).
pub async fn fetch(path: &Path, only: Option<&str>) -> Result<View, ClientError> {
    let failed = |detail: String| ClientError::Failed {
        path: path.to_path_buf(),
        detail,
    };
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, UnixStream::connect(path)).await {
        Err(_) => return Err(failed("timed out connecting".into())),
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let path = path.to_path_buf();
            return Err(match e.kind() {
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
                    ClientError::NoAgent { path, source: e }
                }
                io::ErrorKind::PermissionDenied => ClientError::Denied { path, source: e },
                _ => ClientError::Failed {
                    path,
                    detail: e.to_string(),
                },
            });
        }
    };
    let mut uri = SHOW_PATH.to_string();
    if let Some(o) = only {
        uri.push_str("?service=");
        for b in o.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~/:".contains(&b) {
                uri.push(b as char);
            } else {
                uri.push_str(&format!("%{b:02X}"));
            }
        }
    }
    let ask = async {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        let driver = tokio::spawn(conn);
        let req = Request::get(uri)
            .header(hyper::header::HOST, "localhost")
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        driver.abort();
        if status != StatusCode::OK {
            let msg = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(String::from))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_string());
            return Err(format!("the agent answered {status}: {msg}"));
        }
        serde_json::from_slice::<View>(&body).map_err(|e| format!("unreadable answer: {e}"))
    };
    match tokio::time::timeout(ANSWER_TIMEOUT, ask).await {
        Err(_) => Err(failed(format!("no answer in {ANSWER_TIMEOUT:?}"))),
        Ok(r) => r.map_err(failed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProxyConfig;
    use crate::metrics::Metrics;
    use crate::proxier::ModelKernel;
    use crate::source::Object;
    use ipvs::{RealServer, RealServerKey, VirtualServer};
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use std::collections::{BTreeMap, HashMap};

    /// A mapping from a fixed table: owners by key, draining real servers
    /// with their age.
    #[derive(Default)]
    struct Fixed {
        owners: BTreeMap<ServiceKey, String>,
        draining: HashMap<(ServiceKey, RealServerKey), Duration>,
    }

    impl Mapping for Fixed {
        fn owner(&self, key: &ServiceKey) -> Option<String> {
            self.owners.get(key).cloned()
        }
        fn draining(&self, vs: &ServiceKey, rs: &RealServer) -> (Option<bool>, Option<Duration>) {
            match self.draining.get(&(*vs, rs.key)) {
                Some(d) => (Some(true), Some(*d)),
                None => (Some(false), None),
            }
        }
    }

    fn web() -> ServiceKey {
        ServiceKey::tcp("10.96.0.10".parse().unwrap(), 80)
    }
    fn foreign() -> ServiceKey {
        ServiceKey::tcp("192.0.2.50".parse().unwrap(), 80)
    }
    fn rs(a: &str, w: u32, active: u32, inactive: u32) -> RealServer {
        let mut r = RealServer::new(a.parse().unwrap(), 8080);
        r.weight = w;
        r.conns.active = active;
        r.conns.inactive = inactive;
        r
    }
    fn dump() -> Dump {
        let mut sticky = VirtualServer::new(ServiceKey::tcp("10.96.0.11".parse().unwrap(), 80));
        sticky.flags |= ipvs::ServiceFlags::PERSISTENT;
        sticky.timeout = 600;
        vec![
            (VirtualServer::new(foreign()), vec![]),
            (
                VirtualServer::new(web()),
                vec![rs("10.244.1.3", 0, 1, 7), rs("10.244.1.2", 1, 0, 2)],
            ),
            (sticky, vec![rs("fd00::5", 1, 0, 0)]),
        ]
    }
    fn fixed() -> Fixed {
        let mut m = Fixed::default();
        m.owners.insert(web(), "shop/web:http".into());
        m.owners.insert(
            ServiceKey::tcp("10.96.0.11".parse().unwrap(), 80),
            "shop/sticky:".into(),
        );
        m.draining.insert(
            (
                web(),
                RealServerKey {
                    addr: "10.244.1.3".parse().unwrap(),
                    port: 8080,
                },
            ),
            Duration::from_millis(12_340),
        );
        m
    }
    fn agent_view() -> View {
        let missing = VirtualServer::new(ServiceKey::udp("10.96.0.53".parse().unwrap(), 53));
        let mut v = View::new(
            "agent",
            virtual_servers(
                &dump(),
                &fixed(),
                [(&missing, "kube-system/dns:dns".to_string())],
            ),
        );
        v.agent = Some(AgentInfo {
            pid: 42,
            version: "0.1.0".into(),
            node: "node-a".into(),
            source: "manifests /m".into(),
            dry_run: false,
            started_at: "2026-12-07T23:00:00.000Z".into(),
        });
        v.last_sync = Some(LastSync {
            started_at: "2026-12-07T23:00:01.500Z".into(),
            duration_seconds: 0.0123,
            kind: "full".into(),
            result: "ok".into(),
            failed_ops: 0,
            error: None,
            virtual_servers: 3,
            real_servers: 3,
            draining: 1,
        });
        v.last_successful_sync = Some("2026-12-07T23:00:01.512Z".into());
        v.rejected = vec![RejectedView {
            kind: "Service".into(),
            namespace: "shop".into(),
            name: "bad".into(),
            reason: "invalid_cluster_ip".into(),
            detail: "clusterIP \"x\"".into(),
            whole_object: true,
        }];
        v
    }

    #[test]
    fn text_names_services_marks_drains_and_lists_rejections() {
        let text = render_text(&agent_view());
        assert_eq!(
            text,
            "agent: pid 42, node node-a, manifests /m, running since 2026-12-07T23:00:00.000Z\n\
             last sync: 2026-12-07T23:00:01.500Z full, 12 ms, ok\n\
             kube-system/dns:dns  UDP 10.96.0.53:53  rr  (not in the kernel)\n\
             shop/sticky:  TCP 10.96.0.11:80  rr  persistent 600\n  \
             -> [fd00::5]:8080  weight 1  active 0  inactive 0\n\
             shop/web:http  TCP 10.96.0.10:80  rr\n  \
             -> 10.244.1.2:8080  weight 1  active 0  inactive 2\n  \
             -> 10.244.1.3:8080  weight 0  active 1  inactive 7  draining\n\
             -  TCP 192.0.2.50:80  rr\n\
             rejected Service shop/bad: invalid_cluster_ip (clusterIP \"x\")\n"
        );
    }

    #[test]
    fn text_of_a_failed_sync_names_the_last_good_one() {
        let mut v = agent_view();
        let s = v.last_sync.as_mut().unwrap();
        s.result = "refused".into();
        s.failed_ops = 2;
        let text = render_text(&v);
        assert!(
            text.contains("full, 12 ms, 2 operations refused by the kernel\nlast successful sync: 2026-12-07T23:00:01.512Z\n"),
            "{text}"
        );
        v.last_sync = None;
        assert!(render_text(&v).contains("last sync: none yet\n"));
    }

    #[test]
    fn json_has_the_documented_shape_and_reads_back() {
        let v = agent_view();
        let j: serde_json::Value = serde_json::to_value(&v).unwrap();
        assert_eq!(j["version"], 1);
        assert_eq!(j["mapping"], "agent");
        assert_eq!(j["agent"]["pid"], 42);
        assert_eq!(j["last_sync"]["result"], "ok");
        assert_eq!(j["last_sync"]["kind"], "full");
        assert_eq!(j["last_successful_sync"], "2026-12-07T23:00:01.512Z");
        let web = &j["virtual_servers"][2];
        assert_eq!(web["service"], "shop/web:http");
        assert_eq!(web["namespace"], "shop");
        assert_eq!(web["name"], "web");
        assert_eq!(web["port_name"], "http");
        assert_eq!(web["virtual_server"], "TCP 10.96.0.10:80");
        assert_eq!(web["protocol"], "TCP");
        assert_eq!(web["address"], "10.96.0.10");
        assert_eq!(web["port"], 80);
        assert!(web["fwmark"].is_null());
        assert!(web["persistent_timeout"].is_null());
        assert_eq!(web["in_kernel"], true);
        let drain = &web["real_servers"][1];
        assert_eq!(drain["address"], "10.244.1.3");
        assert_eq!(drain["port"], 8080);
        assert_eq!(drain["weight"], 0);
        assert_eq!(drain["active"], 1);
        assert_eq!(drain["inactive"], 7);
        assert_eq!(drain["draining"], true);
        assert_eq!(drain["draining_seconds"], 12.3);
        assert_eq!(web["real_servers"][0]["draining"], false);
        assert!(j["virtual_servers"][3]["service"].is_null());
        assert_eq!(j["rejected"][0]["reason"], "invalid_cluster_ip");
        assert_eq!(j["rejected"][0]["whole_object"], true);
        let back: View = serde_json::from_value(j).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn unmapped_knows_no_owner_and_no_drain() {
        let v = View::new("kernel", virtual_servers(&dump(), &Unmapped, []));
        assert_eq!(v.virtual_servers.len(), 3);
        assert!(v.virtual_servers.iter().all(|s| s.service.is_none()));
        assert!(v
            .virtual_servers
            .iter()
            .flat_map(|s| &s.real_servers)
            .all(|r| r.draining.is_none()));
        let text = render_text(&v);
        assert!(text.starts_with("-  TCP 10.96.0.10:80  rr\n"), "{text}");
        assert!(!text.contains("draining"), "{text}");
    }

    #[test]
    fn select_keeps_one_service_or_one_port() {
        let mut v = agent_view();
        v.select("shop/web");
        assert_eq!(v.virtual_servers.len(), 1);
        assert_eq!(
            v.virtual_servers[0].service.as_deref(),
            Some("shop/web:http")
        );
        assert!(v.rejected.is_empty());
        let mut v = agent_view();
        v.select("shop/bad");
        assert!(v.virtual_servers.is_empty());
        assert_eq!(v.rejected.len(), 1);
        let mut v = agent_view();
        v.select("shop/web:http");
        assert_eq!(v.virtual_servers.len(), 1);
        let mut v = agent_view();
        v.select("shop/we");
        assert!(v.virtual_servers.is_empty());
    }

    #[test]
    fn rfc3339_formats_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_796_684_405_123);
        assert_eq!(rfc3339(t), "2026-12-07T23:00:05.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn query_values_are_decoded() {
        assert_eq!(
            service_param(Some("service=shop%2Fweb%3Ahttp")).as_deref(),
            Some("shop/web:http")
        );
        assert_eq!(
            service_param(Some("x=1&service=a/b")).as_deref(),
            Some("a/b")
        );
        assert_eq!(service_param(Some("service=")), None);
        assert_eq!(service_param(None), None);
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

    // --- the socket and the protocol -----------------------------------------------

    fn temp(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("ipvs-proxy-control-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    struct FakeSource(View);

    impl ViewSource for FakeSource {
        fn view<'a>(&'a self, only: Option<&'a str>) -> BoxFuture<'a, Result<View, String>> {
            Box::pin(async move {
                let mut v = self.0.clone();
                if let Some(o) = only {
                    v.select(o);
                }
                Ok(v)
            })
        }
    }

    #[test]
    fn bind_makes_a_private_directory_and_socket_and_removes_it_on_drop() {
        let dir = temp("bind");
        let path = dir.join("sub").join("ipvs-proxy.sock");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let b = bind(&path).unwrap();
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
            assert_eq!(mode(&dir.join("sub")), 0o700);
            assert_eq!(mode(&path), 0o600);
            // Someone answers: a second agent must not take it over.
            match bind(&path) {
                Err(BindError::InUse(p)) => assert_eq!(p, path),
                other => panic!("{other:?}"),
            }
            drop(b);
            assert!(!path.exists(), "removed on a clean exit");
        });
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_stale_socket_is_replaced_and_anything_else_is_left_alone() {
        let dir = temp("stale");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        // A dead agent's socket: the file stays, nobody listens.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            match fetch(&path, None).await {
                Err(ClientError::NoAgent { .. }) => {}
                other => panic!("{other:?}"),
            }
            let b = bind(&path).expect("stale socket replaced");
            drop(b);
            // A regular file in the way is never removed.
            std::fs::write(&path, "not ours").unwrap();
            match bind(&path) {
                Err(BindError::NotASocket(_)) => {}
                other => panic!("{other:?}"),
            }
            assert_eq!(std::fs::read_to_string(&path).unwrap(), "not ours");
            // The dropped guard of an older socket leaves a newer one alone.
            std::fs::remove_file(&path).unwrap();
            let old = bind(&path).unwrap();
            std::fs::remove_file(&path).unwrap();
            let new = bind(&path).unwrap();
            drop(old);
            assert!(path.exists(), "the newer socket stays");
            drop(new);
            assert!(!path.exists());
        });
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn show_asks_the_agent_over_the_socket() {
        let dir = temp("proto");
        let path = dir.join("ipvs-proxy.sock");
        match fetch(&path, None).await {
            Err(ClientError::NoAgent { .. }) => {}
            other => panic!("no socket yet: {other:?}"),
        }
        let b = bind(&path).unwrap();
        let server = tokio::spawn(serve(
            b,
            Arc::new(FakeSource(agent_view())),
            CancellationToken::new(),
        ));
        assert_eq!(fetch(&path, None).await.unwrap(), agent_view());
        let one = fetch(&path, Some("shop/web")).await.unwrap();
        assert_eq!(one.virtual_servers.len(), 1);
        assert_eq!(
            one.virtual_servers[0].service.as_deref(),
            Some("shop/web:http")
        );
        assert!(one.agent.is_some());
        // Plain HTTP for curl users; other paths are 404s.
        let mut s = UnixStream::connect(&path).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        s.write_all(b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 404"), "{out}");
        server.abort();
        let _ = server.await;
        assert!(!path.exists(), "the ended server removed its socket");
        match fetch(&path, None).await {
            Err(ClientError::NoAgent { .. }) => {}
            other => panic!("server gone: {other:?}"),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn an_error_reading_the_kernel_reaches_the_client() {
        let dir = temp("err");
        let path = dir.join("ipvs-proxy.sock");
        let c = Control::new("node-a", "cluster".into(), false).with_reader(Arc::new(|| {
            Box::pin(async { Err("cannot open IPVS: nope".into()) })
        }));
        let server = tokio::spawn(serve(
            bind(&path).unwrap(),
            Arc::new(c),
            CancellationToken::new(),
        ));
        match fetch(&path, None).await {
            Err(ClientError::Failed { detail, .. }) => {
                assert!(
                    detail.contains("500") && detail.contains("cannot open IPVS: nope"),
                    "{detail}"
                )
            }
            other => panic!("{other:?}"),
        }
        server.abort();
        let _ = server.await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    // --- the agent's state ------------------------------------------------------------

    const WEB: &str = "metadata: {namespace: default, name: web}\nspec:\n  clusterIP: 10.96.0.10\n  clusterIPs: [10.96.0.10]\n  ipFamilies: [IPv4]\n  type: ClusterIP\n  ports:\n  - {name: http, port: 80, protocol: TCP, targetPort: 8080}\n";
    const BAD: &str = "metadata: {namespace: default, name: bad}\nspec:\n  clusterIP: 10.96.0.99\n  clusterIPs: [10.96.0.99]\n  ipFamilies: [IPv4]\n  type: ClusterIP\n  ports:\n  - {name: http, port: 0, protocol: TCP, targetPort: 8080}\n";

    fn service(yaml: &str) -> Change {
        let s: Service = serde_saphyr::from_str(yaml).unwrap();
        Change::Applied(Object::Service(Box::new(s)))
    }

    fn slice(addrs: &[&str]) -> Change {
        let eps: String = addrs
            .iter()
            .map(|a| format!("- addresses: [\"{a}\"]\n  conditions: {{ready: true}}\n"))
            .collect();
        let yaml = format!(
            "metadata:\n  namespace: default\n  name: web-1\n  labels:\n    kubernetes.io/service-name: web\naddressType: IPv4\nports:\n- {{port: 8080, protocol: TCP, name: http}}\nendpoints:\n{eps}"
        );
        let s: EndpointSlice = serde_saphyr::from_str(&yaml).unwrap();
        Change::Applied(Object::EndpointSlice(Box::new(s)))
    }

    fn proxier(kernel: ModelKernel) -> CoreProxier<ModelKernel> {
        let cfg = ProxyConfig {
            drain_period: Duration::from_secs(600),
            ..ProxyConfig::default()
        };
        CoreProxier::new(
            cfg,
            "node-a".into(),
            ["192.168.0.10".parse().unwrap()].into_iter().collect(),
            kernel,
            Metrics::new(),
            None,
        )
        .unwrap()
    }

    #[tokio::test]
    async fn the_agent_view_maps_from_its_own_state() {
        use crate::source::Kind;
        // A kernel where 10.244.1.3 has an open connection.
        let mut first = proxier(ModelKernel::default());
        first.apply_change(service(WEB));
        first.apply_change(slice(&["10.244.1.2", "10.244.1.3"]));
        first.sync(SyncKind::Full).await.unwrap();
        let mut kernel = first.kernel().clone();
        for vs in kernel.node.virtual_servers.values_mut() {
            for r in vs.real_servers.values_mut() {
                if r.key.addr == "10.244.1.3".parse::<std::net::IpAddr>().unwrap() {
                    r.conns.active = 1;
                }
            }
        }

        // Refused once, by the last sync below.
        kernel.refuse.push(("add_virtual_server", 17)); // EEXIST
                                                        // What the (fake) kernel answers at request time.
        let dump: Dump = vec![
            (
                VirtualServer::new(web()),
                vec![
                    rs("10.244.1.2", 1, 0, 0),
                    rs("10.244.1.3", 0, 1, 0),
                    rs("10.244.1.4", 1, 0, 0),
                ],
            ),
            (VirtualServer::new(foreign()), vec![]),
        ];
        let d = dump.clone();
        let control =
            Control::new("node-a", "manifests /m".into(), false).with_reader(Arc::new(move || {
                let d = d.clone();
                Box::pin(async move { Ok(d) })
            }));
        // Before the proxier exists: the kernel, unmapped.
        let v = control.view(None).await.unwrap();
        assert!(v.last_sync.is_none() && v.virtual_servers.iter().all(|s| s.service.is_none()));

        let mut p = control.publish(proxier(kernel));
        p.apply_change(service(WEB));
        p.apply_change(service(BAD));
        // A request holding the state: changes wait, in order.
        {
            let shared = p.shared.clone();
            let _held = shared.0.lock().await;
            p.apply_change(slice(&["10.244.1.2", "10.244.1.4"]));
            p.apply_change(Change::Listed(Kind::Service));
            assert_eq!(p.queued.len(), 2);
        }
        let out = p.sync(SyncKind::Full).await.unwrap();
        assert!(p.queued.is_empty());
        assert_eq!(out.draining, 1, "10.244.1.3 drains: {out:?}");

        let v = control.view(None).await.unwrap();
        assert_eq!(v.mapping, "agent");
        assert_eq!(v.agent.as_ref().unwrap().node, "node-a");
        let s = v.last_sync.as_ref().unwrap();
        assert_eq!((s.kind.as_str(), s.result.as_str()), ("full", "ok"));
        assert_eq!((s.virtual_servers, s.draining), (1, 1));
        assert!(v.last_successful_sync.is_some());
        let web_vs = &v.virtual_servers[0];
        assert_eq!(web_vs.service.as_deref(), Some("default/web:http"));
        let drains: Vec<(&str, Option<bool>)> = web_vs
            .real_servers
            .iter()
            .map(|r| (r.address.as_str(), r.draining))
            .collect();
        assert_eq!(
            drains,
            vec![
                ("10.244.1.2", Some(false)),
                ("10.244.1.3", Some(true)),
                ("10.244.1.4", Some(false))
            ]
        );
        assert!(web_vs.real_servers[1].draining_seconds.is_some());
        assert!(v.virtual_servers[1].service.is_none(), "foreign: not ours");
        assert_eq!(v.rejected.len(), 1, "{:?}", v.rejected);
        assert_eq!(
            (v.rejected[0].kind.as_str(), v.rejected[0].name.as_str()),
            ("Service", "bad")
        );

        let one = control.view(Some("default/bad")).await.unwrap();
        assert!(one.virtual_servers.is_empty());
        assert_eq!(one.rejected.len(), 1);

        // A sync the kernel refuses part of is recorded as such.
        p.apply_change(service(&WEB.replace("10.96.0.10", "10.96.0.20")));
        p.sync(SyncKind::Partial).await.unwrap();
        let v = control.view(None).await.unwrap();
        let s = v.last_sync.unwrap();
        assert_eq!((s.kind.as_str(), s.result.as_str()), ("partial", "refused"));
        assert!(s.failed_ops >= 1);
        assert!(v.last_successful_sync.is_some());
    }
}
