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

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::future::BoxFuture;

use crate::error::Error;
use crate::proxier::{CoreProxier, Kernel};
use crate::source::Change;
use crate::sync::{Proxier, SyncKind, SyncOutcome};

mod client;
mod server;
#[cfg(test)]
mod tests;
mod text;
mod view;

pub use client::{fetch, ClientError};
pub use server::{bind, serve, BindError, Bound};
pub use text::{render_text, rfc3339};
use view::AgentMapping;
pub use view::{
    virtual_servers, AgentInfo, DesiredMapping, Dump, LastSync, Mapping, RealServerView,
    RejectedView, Unmapped, View, VirtualServerView,
};

/// Where the agent serves its view unless `--control-socket` says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/ipvs-proxy/ipvs-proxy.sock";

/// The version of the [`View`] JSON shape.
pub const VIEW_VERSION: u32 = 1;

/// The request path.
pub const SHOW_PATH: &str = "/v1/show";

/// How long `show` waits to connect, and for the whole answer.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub(super) const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);

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
