//! The commands: run the agent, `plan` (dry run), `show` (what is
//! programmed, mapped back to Services), `--cleanup`.

use std::collections::BTreeSet;
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
use crate::proxier::{core_config, primary_ips, CoreProxier, ModelKernel};
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

async fn start_server(
    addr: Option<std::net::SocketAddr>,
    handler: http::Handler,
    hard_fail: bool,
    what: &str,
) -> Result<(), AppError> {
    let Some(addr) = addr else { return Ok(()) };
    match http::bind(addr) {
        Ok(l) => {
            tracing::info!(%addr, "serving {what}");
            tokio::spawn(http::serve(l, handler));
            Ok(())
        }
        Err(source) if hard_fail => Err(AppError::Bind { addr, source }),
        Err(e) => {
            tracing::error!(%addr, error = %e, "cannot serve {what}");
            Ok(())
        }
    }
}

/// Runs the agent until SIGTERM or SIGINT. The kernel keeps its rules when
/// the agent stops (fail static).
pub async fn run(flags: &Flags, cfg: ProxyConfig) -> Result<(), AppError> {
    let node = node_name(&cfg);
    let metrics = Metrics::new();
    let health = Arc::new(HealthState::new(2 * cfg.ipvs.sync_period, metrics.clone()));
    start_server(
        cfg.metrics_bind_address,
        http::metrics_handler(metrics.clone()),
        cfg.bind_address_hard_fail,
        "metrics",
    )
    .await?;
    start_server(
        cfg.healthz_bind_address,
        http::healthz_handler(health.clone()),
        cfg.bind_address_hard_fail,
        "healthz",
    )
    .await?;
    let control = control::Control::start(&node, flags);
    let hc = Arc::new(ServiceHealthServers::new(vec![], health.clone()));

    // Small: objects wait here fully parsed; the source waits instead.
    let (tx, rx) = mpsc::channel(CHANGE_QUEUE);
    // The cluster source, when there is one: polled below with the sync
    // loop, on the thread that builds the state, not spawned on a worker:
    // the objects it decodes are freed on that thread, so glibc reuses the
    // same arena for the state and the plan instead of keeping a second
    // one of freed pages (benches/memory, issue #17).
    let mut cluster_source = None;
    // Events need an API server: with --manifests, rejections are only
    // logged and counted.
    let event_sink = match &flags.manifests {
        Some(dir) => {
            tracing::info!(dir = %dir.display(), "following manifests");
            // inotify reports changes at once; the poll only catches what
            // it cannot see (e.g. files replaced behind symlinks).
            tokio::spawn(source::run_manifests(
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
            tokio::spawn(events::run(
                events_client,
                node.clone(),
                events_rx,
                events::RateLimit::default(),
            ));
            cluster_source = Some(source::run_cluster(client, node.clone(), tx));
            Some(sink)
        }
    };
    let loop_cfg = LoopConfig::new(cfg.ipvs.sync_period, cfg.ipvs.min_sync_period);
    let addrs = local_addresses(DUMMY_INTERFACE);
    let run_loop = async {
        if flags.dry_run {
            let p = CoreProxier::new(
                cfg.clone(),
                node.clone(),
                addrs,
                ModelKernel::default(),
                metrics.clone(),
                Some(hc.clone()),
            )?
            .with_events_opt(event_sink.clone());
            sync::run(
                control.publish(p),
                rx,
                loop_cfg,
                metrics.clone(),
                health.clone(),
            )
            .await;
        } else {
            let (dp, setup) = crate::kernel::open(&cfg)
                .await
                .map_err(AppError::Dataplane)?;
            tracing::info!(
                interface_index = setup.interface_index,
                sysctls_changed = setup.sysctls_changed.len(),
                "dataplane ready"
            );
            let p = CoreProxier::new(
                cfg.clone(),
                node.clone(),
                addrs,
                crate::kernel::DataplaneKernel::new(dp),
                metrics.clone(),
                Some(hc.clone()),
            )?
            .with_events_opt(event_sink.clone());
            // kube-proxy's iptables rules go once our table is in place.
            let remove =
                flags.remove_kube_proxy_rules.unwrap_or(true) && cfg.packet_filter.is_enabled();
            let p =
                crate::migrate::TakeOver::new(control.publish(p), remove.then(Default::default));
            sync::run(p, rx, loop_cfg, metrics.clone(), health.clone()).await;
        }
        Ok::<(), AppError>(())
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(AppError::Signal)?;
    // Ends only when the sync loop has dropped its receiver.
    let source = async move {
        match cluster_source {
            Some(f) => f.await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        r = run_loop => r,
        () = source => Ok(()),
        _ = tokio::signal::ctrl_c() => { tracing::info!("interrupted; leaving the rules in place"); Ok(()) }
        _ = term.recv() => { tracing::info!("terminated; leaving the rules in place"); Ok(()) }
    }
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
mod tests {
    use super::*;
    use ipvs::{RealServer, ServiceKey, VirtualServer};

    const WEB: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.0.10
  clusterIPs: [10.96.0.10]
  ipFamilies: [IPv4]
  ports:
  - {name: http, port: 80, targetPort: 8080, protocol: TCP}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: shop
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints:
- addresses: ["10.244.1.3"]
  conditions: {ready: true}
- addresses: ["10.244.1.2"]
  conditions: {ready: true}
"#;

    #[tokio::test]
    async fn plan_prints_ipvsadm_lines_and_addresses() {
        let dir = std::env::temp_dir().join(format!("ipvs-proxy-plan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("web.yaml"), WEB).unwrap();
        let flags = manifests_flags(dir);
        let cfg = ProxyConfig::default();
        let out = plan(&flags, &cfg, "n1", &["192.168.0.10".parse().unwrap()])
            .await
            .unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "-A -t 10.96.0.10:80 -s rr", "{out}");
        assert!(
            lines[1].starts_with("-a -t 10.96.0.10:80 -r 10.244.1.2:8080 -m"),
            "{out}"
        );
        assert!(
            lines[2].starts_with("-a -t 10.96.0.10:80 -r 10.244.1.3:8080 -m"),
            "{out}"
        );
        assert!(out.contains("# bind 10.96.0.10 dev kube-ipvs0"), "{out}");
    }

    #[tokio::test]
    async fn show_from_manifests_maps_virtual_servers_to_services() {
        let dir = std::env::temp_dir().join(format!("ipvs-proxy-show-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("web.yaml"), WEB).unwrap();
        let flags = manifests_flags(dir);
        let cfg = ProxyConfig::default();
        let snap = snapshot(&flags, &cfg, "n1").await.unwrap();
        let state = desired_for(&cfg, &snap, "n1", &["192.168.0.10".parse().unwrap()]).unwrap();
        let key = ServiceKey::Addr {
            protocol: ipvs::Protocol::Tcp,
            addr: "10.96.0.10".parse().unwrap(),
            port: 80,
        };
        let other = ServiceKey::Addr {
            protocol: ipvs::Protocol::Udp,
            addr: "10.0.0.1".parse().unwrap(),
            port: 53,
        };
        let vs = |k| {
            let mut v = VirtualServer::new(k);
            v.scheduler = "rr".into();
            v
        };
        let rs = |a: &str, w: u32, active: u32| {
            let mut r = RealServer::new(a.parse().unwrap(), 8080);
            r.weight = w;
            r.conns.active = active;
            r
        };
        // 10.244.1.9 is not wanted any more and at weight 0: draining.
        let dump = vec![
            (vs(other), vec![rs("10.0.0.2", 0, 0)]),
            (
                vs(key),
                vec![
                    rs("10.244.1.9", 0, 4),
                    rs("10.244.1.3", 1, 0),
                    rs("10.244.1.2", 1, 2),
                ],
            ),
        ];
        let mapping = control::DesiredMapping(state.desired());
        let mut view = View::new("manifests", control::virtual_servers(&dump, &mapping, []));
        let all = render_show(&view, ShowOutput::Text);
        assert_eq!(
            all,
            "shop/web:http  TCP 10.96.0.10:80  rr\n  -> 10.244.1.2:8080  weight 1  active 2  inactive 0\n  -> 10.244.1.3:8080  weight 1  active 0  inactive 0\n  -> 10.244.1.9:8080  weight 0  active 4  inactive 0  draining\n-  UDP 10.0.0.1:53  rr\n  -> 10.0.0.2:8080  weight 0  active 0  inactive 0\n"
        );
        let json: serde_json::Value =
            serde_json::from_str(&render_show(&view, ShowOutput::Json)).unwrap();
        assert_eq!(json["mapping"], "manifests");
        assert_eq!(json["virtual_servers"][0]["namespace"], "shop");
        assert_eq!(
            json["virtual_servers"][0]["real_servers"][2]["draining"],
            true
        );
        // Unknown to the mapping: draining unknown.
        assert!(json["virtual_servers"][1]["real_servers"][0]["draining"].is_null());
        view.select("shop/web");
        assert_eq!(view.virtual_servers.len(), 1);
        view.select("shop/other");
        assert_eq!(render_show(&view, ShowOutput::Text), "");
    }
}
