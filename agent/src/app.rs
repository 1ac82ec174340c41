//! The commands: run the agent, `plan` (dry run), `show` (what is
//! programmed, mapped back to Services), `--cleanup`.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::ListParams;
use kube::{Api, Client};
use proxy_core::{NodeFacts, ProxyState};
use tokio::sync::mpsc;

use crate::config::{Flags, ProxyConfig};
use crate::control::{self, View};
use crate::events::{self, EventSink};
use crate::http::{self, HealthState, ServiceHealthServers};
use crate::metrics::Metrics;
use crate::proxier::{core_config, primary_ips, CoreProxier, Kernel, ModelKernel};
use crate::shutdown::Shutdown;
use crate::source::{self, LABEL_SELECTOR};
use crate::sync::{self, LoopConfig};

/// Name of our dummy interface (the dataplane's default).
pub const DUMMY_INTERFACE: &str = "kube-ipvs0";

/// Changes waiting for the sync loop. Each holds a whole object, so the
/// queue is kept short and a source that runs ahead waits: this bounds
/// what can pile up while a long sync runs. (At 3,000 x 10 from manifests
/// the sync loop keeps up: 4,096 or 256 made no measurable difference,
/// VmHWM 52.2-52.7 MB either way, start-up no slower.)
const CHANGE_QUEUE: usize = 256;

/// Rejection events waiting to be posted; more are dropped.
const EVENT_QUEUE: usize = 256;

/// Why a command failed: the agent's [`Error`](crate::Error).
pub use crate::error::Error as AppError;

/// The node name: `hostnameOverride`/`NODE_NAME`, else the hostname.
pub fn node_name(cfg: &ProxyConfig) -> String {
    cfg.hostname_override.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_lowercase())
            .unwrap_or_default()
    })
}

/// Addresses on this host's interfaces, except `skip_interface`.
pub fn local_addresses(skip_interface: &str) -> BTreeSet<IpAddr> {
    let mut out = BTreeSet::new();
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return out;
    };
    for ifa in addrs {
        if ifa.interface_name == skip_interface {
            continue;
        }
        let Some(a) = ifa.address else { continue };
        if let Some(v4) = a.as_sockaddr_in() {
            out.insert(IpAddr::V4(v4.ip()));
        } else if let Some(v6) = a.as_sockaddr_in6() {
            out.insert(IpAddr::V6(v6.ip()));
        }
    }
    out
}

/// A client for the API server from the configuration and `--master`,
/// rate-limited by `clientConnection.qps`/`.burst` as client-go does
/// (see [`crate::ratelimit`]).
pub async fn kube_client(cfg: &ProxyConfig, master: Option<&str>) -> Result<Client, AppError> {
    fn err(e: impl std::error::Error + Send + Sync + 'static) -> AppError {
        AppError::Client(Box::new(e))
    }
    let mut kcfg = match (&cfg.client.kubeconfig, master) {
        (Some(path), _) => {
            let kc = kube::config::Kubeconfig::read_from(path).map_err(err)?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(err)?
        }
        (None, Some(m)) => kube::Config::new(m.parse().map_err(err)?),
        (None, None) => kube::Config::infer().await.map_err(err)?,
    };
    if let Some(m) = master {
        kcfg.cluster_url = m.parse().map_err(err)?;
    }
    let limit = crate::ratelimit::RateLimit::from_client_config(cfg.client.qps, cfg.client.burst);
    crate::ratelimit::client(kcfg, limit).map_err(err)
}

/// Services, EndpointSlices and the Node, read once.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Services.
    pub services: Vec<Service>,
    /// EndpointSlices.
    pub slices: Vec<EndpointSlice>,
    /// Our Node, when known.
    pub node: Option<Node>,
}

/// Reads the sources once: `--manifests DIR`, else the cluster.
pub async fn snapshot(
    flags: &Flags,
    cfg: &ProxyConfig,
    node_name: &str,
) -> Result<Snapshot, AppError> {
    if let Some(dir) = &flags.manifests {
        let m = source::read_manifests(dir)?;
        let keep = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
            source::selected(meta)
        };
        return Ok(Snapshot {
            services: m
                .services
                .into_iter()
                .filter(|s| keep(&s.metadata))
                .collect(),
            slices: m.slices.into_iter().filter(|s| keep(&s.metadata)).collect(),
            node: None,
        });
    }
    let client = kube_client(cfg, flags.master.as_deref()).await?;
    let lp = ListParams::default().labels(LABEL_SELECTOR);
    let services = Api::<Service>::all(client.clone())
        .list(&lp)
        .await
        .map_err(|source| AppError::Kube {
            what: "services",
            source,
        })?
        .items;
    let slices = Api::<EndpointSlice>::all(client.clone())
        .list(&lp)
        .await
        .map_err(|source| AppError::Kube {
            what: "endpointslices",
            source,
        })?
        .items;
    let node = Api::<Node>::all(client)
        .get_opt(node_name)
        .await
        .map_err(|source| AppError::Kube {
            what: "nodes",
            source,
        })?;
    Ok(Snapshot {
        services,
        slices,
        node,
    })
}

/// The desired state for a snapshot, node name and node addresses.
pub fn desired_for(
    cfg: &ProxyConfig,
    snap: &Snapshot,
    node_name: &str,
    node_ips: &[IpAddr],
) -> Result<ProxyState, AppError> {
    let core = core_config(cfg)?;
    let mut primary = primary_ips(snap.node.as_ref(), cfg.bind_address);
    if primary.is_empty() {
        for ip in node_ips {
            if !primary.iter().any(|p| p.is_ipv4() == ip.is_ipv4()) {
                primary.push(*ip);
            }
        }
    }
    let facts = NodeFacts {
        name: node_name.to_string(),
        labels: snap
            .node
            .as_ref()
            .and_then(|n| n.metadata.labels.clone())
            .unwrap_or_default()
            .into_iter()
            .collect(),
        addresses: node_ips.iter().copied().collect(),
        primary_ips: primary,
    };
    let mut state = ProxyState::new(core, facts);
    state.replace_all(&snap.services, &snap.slices);
    Ok(state)
}

/// `ipvs-proxy plan`: the desired IPVS state in `ipvsadm -Sn` format, then
/// the addresses to bind as comments. Touches nothing.
pub async fn plan(
    flags: &Flags,
    cfg: &ProxyConfig,
    node_name: &str,
    node_ips: &[IpAddr],
) -> Result<String, AppError> {
    let snap = snapshot(flags, cfg, node_name).await?;
    let state = desired_for(cfg, &snap, node_name, node_ips)?;
    for r in state.rejections() {
        eprintln!(
            "# rejected {}: {} ({})",
            r.object,
            r.reason.as_str(),
            r.detail
        );
    }
    let mut out = proxy_core::render_ipvsadm_save(state.desired());
    for a in &state.desired().addresses {
        out.push_str(&format!("# bind {a} dev {DUMMY_INTERFACE}\n"));
    }
    Ok(out)
}

/// Renders a view as text ([`crate::control::render_text`]) or as JSON
/// (the [`crate::control::View`] document, pretty-printed).
pub fn render_show(view: &View, output: ShowOutput) -> String {
    match output {
        ShowOutput::Text => control::render_text(view),
        ShowOutput::Json => serde_json::to_string_pretty(view).unwrap_or_default() + "\n",
    }
}

/// The view `show` builds itself from `--manifests DIR` or the cluster:
/// the kernel's table, each virtual server named after the Service port
/// that wants it (`-` when unknown or not ours).
async fn show_from_sources(
    flags: &Flags,
    cfg: &ProxyConfig,
    node_name: &str,
) -> Result<View, AppError> {
    let dump = control::read_kernel().await?;
    let node_ips: Vec<IpAddr> = local_addresses(DUMMY_INTERFACE).into_iter().collect();
    let mapping = if flags.manifests.is_some() {
        "manifests"
    } else {
        "cluster"
    };
    match snapshot(flags, cfg, node_name).await {
        Ok(snap) => {
            let state = desired_for(cfg, &snap, node_name, &node_ips)?;
            let desired = state.desired();
            let mut view = View::new(
                mapping,
                control::virtual_servers(&dump, &control::DesiredMapping(desired), []),
            );
            view.rejected = state
                .rejections()
                .iter()
                .map(control::RejectedView::from_rejection)
                .collect();
            Ok(view)
        }
        Err(e) => {
            eprintln!("# cannot map virtual servers to Services: {e}");
            Ok(View::new(
                "kernel",
                control::virtual_servers(&dump, &control::Unmapped, []),
            ))
        }
    }
}

/// `ipvs-proxy show [NAMESPACE/NAME]`: what is programmed in IPVS on this
/// node, each virtual server mapped back to its Service port. Without
/// source flags (`--manifests`, `--kubeconfig`, `--master`) it asks the
/// running agent on its control socket; with no agent there, it says so on
/// stderr and prints the kernel's table unmapped. With source flags it reads
/// them once, as `plan` does.
pub async fn show(
    flags: &Flags,
    cfg: &ProxyConfig,
    node_name: &str,
    args: &ShowArgs,
) -> Result<String, AppError> {
    let only = args.service.as_deref();
    let from_sources =
        flags.manifests.is_some() || flags.kubeconfig.is_some() || flags.master.is_some();
    let mut view = if from_sources {
        show_from_sources(flags, cfg, node_name).await?
    } else {
        let path = control::socket_path(flags.control_socket.as_deref())
            .unwrap_or_else(|| PathBuf::from(control::DEFAULT_SOCKET));
        match control::fetch(&path, only).await {
            Ok(v) => v,
            Err(e @ control::ClientError::NoAgent { .. }) => {
                eprintln!("ipvs-proxy: {e}");
                eprintln!("ipvs-proxy: showing the kernel's IPVS state, not mapped to Services");
                let dump = control::read_kernel().await?;
                View::new(
                    "kernel",
                    control::virtual_servers(&dump, &control::Unmapped, []),
                )
            }
            Err(e) => return Err(e.into()),
        }
    };
    if let Some(o) = only {
        if view.mapping == "kernel" {
            eprintln!("ipvs-proxy: without a mapping {o} cannot be picked out: showing everything");
        } else {
            view.select(o);
        }
    }
    Ok(render_show(&view, args.output))
}

/// `--cleanup`: removes our IPVS services, nftables table and dummy
/// interface; nothing else.
pub async fn cleanup(cfg: &ProxyConfig) -> Result<String, AppError> {
    let core = core_config(cfg)?;
    let facts = NodeFacts {
        addresses: local_addresses(DUMMY_INTERFACE),
        ..NodeFacts::default()
    };
    let policy = proxy_core::PlanPolicy::new(&core, &facts);
    let mut dp = dataplane::Dataplane::new(crate::kernel::dataplane_config(cfg))
        .await
        .map_err(AppError::Dataplane)?;
    let report = dp.cleanup(&policy).await.map_err(AppError::Dataplane)?;
    Ok(format!(
        "removed {} IPVS virtual servers; nftables table deleted: {}; interface deleted: {}",
        report.virtual_servers.len(),
        report.table_deleted,
        report.interface_deleted
    ))
}

fn start_server(
    shutdown: &Shutdown,
    addr: Option<std::net::SocketAddr>,
    handler: http::Handler,
    hard_fail: bool,
    what: &str,
) -> Result<(), AppError> {
    let Some(addr) = addr else { return Ok(()) };
    match http::bind(addr) {
        Ok(l) => {
            tracing::info!(%addr, "serving {what}");
            shutdown.spawn(http::serve(l, handler, shutdown.close_token()));
            Ok(())
        }
        Err(source) if hard_fail => Err(AppError::Bind { addr, source }),
        Err(e) => {
            tracing::error!(%addr, error = %e, "cannot serve {what}");
            Ok(())
        }
    }
}

/// What the agent programs, and kube-proxy's leftovers to remove after the
/// first clean full sync (`None`: nothing to remove).
pub type OpenedKernel<K> = (K, Option<dataplane::kube_proxy::CleanupConfig>);

/// Runs the agent until SIGTERM or SIGINT, then shuts down in order within
/// `--shutdown-grace-period` ([`crate::shutdown`]). The kernel keeps its
/// rules when the agent stops (fail static).
pub async fn run(flags: &Flags, cfg: ProxyConfig) -> Result<(), AppError> {
    let shutdown = Shutdown::new(
        flags
            .shutdown_grace_period
            .unwrap_or(crate::shutdown::DEFAULT_GRACE),
    );
    shutdown.on_signals().map_err(AppError::Signal)?;
    if flags.dry_run {
        let kernel = async { Ok((ModelKernel::default(), None)) };
        return run_with(flags, cfg, shutdown, kernel).await;
    }
    // kube-proxy's iptables rules go once our table is in place.
    let remove = flags.remove_kube_proxy_rules.unwrap_or(true) && cfg.packet_filter.is_enabled();
    let kcfg = cfg.clone();
    let kernel = async move {
        let (dp, setup) = crate::kernel::open(&kcfg)
            .await
            .map_err(AppError::Dataplane)?;
        tracing::info!(
            interface_index = setup.interface_index,
            sysctls_changed = setup.sysctls_changed.len(),
            "dataplane ready"
        );
        Ok((
            crate::kernel::DataplaneKernel::new(dp),
            remove.then(Default::default),
        ))
    };
    run_with(flags, cfg, shutdown, kernel).await
}

/// Runs the agent on the kernel `kernel` opens (after the servers and the
/// sources have started) until `shutdown` begins, then finishes the
/// shutdown's phases in order, bounded by its grace period: `Ok` once every
/// task has ended or the grace period has passed. A start-up error begins
/// the shutdown too, and is returned once it is done.
pub async fn run_with<K, F>(
    flags: &Flags,
    cfg: ProxyConfig,
    shutdown: Shutdown,
    kernel: F,
) -> Result<(), AppError>
where
    K: Kernel + 'static,
    F: Future<Output = Result<OpenedKernel<K>, AppError>>,
{
    let work = async {
        let r = serve_until_stopped(flags, cfg, &shutdown, kernel).await;
        if let Err(e) = &r {
            tracing::error!(error = %crate::error::Chain(e), "cannot run; shutting down");
            shutdown.begin();
        }
        tracing::info!("closing the servers; sending the queued events");
        shutdown.close_and_wait().await;
        r
    };
    let started = std::time::Instant::now();
    match shutdown.bounded(work).await {
        Some(r) => {
            tracing::info!(took = ?started.elapsed(), "stopped");
            r
        }
        None => {
            tracing::warn!(
                grace = ?shutdown.grace(),
                tasks = shutdown.running(),
                "shutdown took longer than the grace period (--shutdown-grace-period); exiting with work unfinished"
            );
            Ok(())
        }
    }
}

/// Phase 0 and 1 of the agent's life: starts the servers, the sources and
/// the sync loop, all on `shutdown`'s tracker, and returns when the sync
/// loop has stopped (shutdown begun, its sync in progress finished). What
/// it owns (the proxier, the event sink) is dropped on return, so the event
/// poster ends once the servers holding the rest have closed.
async fn serve_until_stopped<K, F>(
    flags: &Flags,
    cfg: ProxyConfig,
    shutdown: &Shutdown,
    kernel: F,
) -> Result<(), AppError>
where
    K: Kernel + 'static,
    F: Future<Output = Result<OpenedKernel<K>, AppError>>,
{
    let node = node_name(&cfg);
    let metrics = Metrics::new();
    let health = Arc::new(
        HealthState::new(2 * cfg.ipvs.sync_period, metrics.clone())
            .with_shutdown(shutdown.stop_token()),
    );
    start_server(
        shutdown,
        cfg.metrics_bind_address,
        http::metrics_handler(metrics.clone()),
        cfg.bind_address_hard_fail,
        "metrics",
    )?;
    start_server(
        shutdown,
        cfg.healthz_bind_address,
        http::healthz_handler(health.clone()),
        cfg.bind_address_hard_fail,
        "healthz",
    )?;
    let control = control::Control::start(&node, flags, shutdown);
    let hc =
        Arc::new(ServiceHealthServers::new(vec![], health.clone()).with_shutdown(shutdown.clone()));

    // Small: objects wait here fully parsed; the source waits instead.
    let (tx, rx) = mpsc::channel(CHANGE_QUEUE);
    // Events need an API server: with --manifests, rejections are only
    // logged and counted.
    let event_sink = match &flags.manifests {
        Some(dir) => {
            tracing::info!(dir = %dir.display(), "following manifests");
            // inotify reports changes at once; the poll only catches what
            // it cannot see (e.g. files replaced behind symlinks).
            shutdown.spawn_until_stopped(source::run_manifests(
                dir.clone(),
                Duration::from_secs(5),
                tx,
            ));
            None
        }
        None => {
            let client = kube_client(&cfg, flags.master.as_deref()).await?;
            tracing::info!(node = %node, "watching the API server");
            let (sink, events_rx) = EventSink::channel(EVENT_QUEUE);
            // Its own client and rate limit, as kube-proxy's event client:
            // posting events never delays a list or a watch.
            let events_client = kube_client(&cfg, flags.master.as_deref()).await?;
            // Not stopped by the shutdown: it ends when the last sink is
            // dropped, having posted what was queued.
            shutdown.spawn(events::run(
                events_client,
                node.clone(),
                events_rx,
                events::RateLimit::default(),
            ));
            shutdown.spawn_until_stopped(source::run_cluster(client, node.clone(), tx));
            Some(sink)
        }
    };
    let loop_cfg = LoopConfig::new(cfg.ipvs.sync_period, cfg.ipvs.min_sync_period);
    let addrs = local_addresses(DUMMY_INTERFACE);
    let (kernel, cleanup) = kernel.await?;
    let p = CoreProxier::new(
        cfg.clone(),
        node.clone(),
        addrs,
        kernel,
        metrics.clone(),
        Some(hc),
    )?
    .with_events_opt(event_sink);
    let p = crate::migrate::TakeOver::new(control.publish(p), cleanup);
    sync::run(p, rx, loop_cfg, metrics, health, shutdown.stop_token()).await;
    Ok(())
}

/// Writes `oomScoreAdj` for this process (best effort).
pub fn set_oom_score_adj(value: i32) {
    if let Err(e) = std::fs::write("/proc/self/oom_score_adj", value.to_string()) {
        tracing::warn!(error = %e, value, "cannot set oom_score_adj");
    }
}

/// Arguments of `plan` beyond the shared flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PlanArgs {
    /// The node to plan for (endpoints with this nodeName are local).
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,
    /// A node address (repeat for several; NodePorts are served on them).
    #[arg(long = "node-ip", value_name = "IP")]
    pub node_ips: Vec<IpAddr>,
}

/// Arguments of `show` beyond the shared flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ShowArgs {
    /// Only this Service (`namespace/name`).
    #[arg(value_name = "NAMESPACE/NAME")]
    pub service: Option<String>,
    /// The node name used to map virtual servers to Services (with
    /// `--manifests` or a kubeconfig).
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,
    /// Output format: `text`, or `json` (the documented `View` document).
    #[arg(short = 'o', long, value_enum, value_name = "FORMAT", default_value_t)]
    pub output: ShowOutput,
}

/// `show`'s output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ShowOutput {
    /// One line per virtual server, its real servers below.
    #[default]
    Text,
    /// The [`View`] document.
    Json,
}

/// Directory argument helper for tests.
pub fn manifests_flags(dir: PathBuf) -> Flags {
    Flags {
        manifests: Some(dir),
        ..Flags::default()
    }
}

#[cfg(test)]
mod tests;
