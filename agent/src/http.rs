//! The HTTP servers: metrics (`/metrics`, `/proxyMode`, `/healthz`), proxy
//! health (`/healthz`, `/livez`) and the per-service health-check node ports
//! of `externalTrafficPolicy: Local` Services - with kube-proxy's bodies,
//! status codes and headers (`pkg/proxy/healthcheck`).

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Node;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// The taint the cluster autoscaler puts on a node it is about to delete.
pub const TO_BE_DELETED_TAINT: &str = "ToBeDeletedByClusterAutoscaler";

/// A response body.
pub type Body = Full<Bytes>;

/// A request handler: synchronous, since every answer is computed from memory.
pub type Handler = Arc<dyn Fn(&Request<Incoming>) -> Response<Body> + Send + Sync>;

/// Serves HTTP/1.1 on `listener` until `close` is cancelled, then stops
/// accepting (new connections are refused), lets each open connection
/// finish the request it holds (idle keep-alive connections close at once)
/// and returns when the last one has ended. Dropping the future closes
/// everything at once instead.
pub async fn serve(listener: TcpListener, handler: Handler, close: CancellationToken) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            () = close.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let h = handler.clone();
                    let close = close.clone();
                    conns.spawn(async move {
                        let svc = service_fn(move |req| {
                            let h = h.clone();
                            async move { Ok::<_, Infallible>(h(&req)) }
                        });
                        let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
                        if let Err(e) = graceful(conn, &close).await {
                            tracing::debug!(error = %e, "http connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    while conns.join_next().await.is_some() {}
}

/// Drives one HTTP/1.1 connection; once `close` is cancelled, asks it to
/// end after the request in flight (hyper's graceful shutdown).
pub(crate) async fn graceful<I, S, B>(
    conn: http1::Connection<I, S>,
    close: &CancellationToken,
) -> hyper::Result<()>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => r,
        () = close.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    }
}

fn response(status: StatusCode, content_type: &str, body: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert(CONTENT_TYPE, v);
    }
    r
}

fn not_found() -> Response<Body> {
    response(
        StatusCode::NOT_FOUND,
        "text/plain; charset=utf-8",
        "404 page not found\n".into(),
    )
}

/// The metrics server's handler: `/metrics`, `/proxyMode` (`ipvs`) and a
/// plain `/healthz` (`ok`), as kube-proxy's metrics mux serves them.
pub fn metrics_handler(metrics: Metrics) -> Handler {
    Arc::new(move |req| match req.uri().path() {
        "/metrics" => response(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(),
        ),
        "/proxyMode" => response(StatusCode::OK, "text/plain; charset=utf-8", "ipvs".into()),
        "/healthz" => response(StatusCode::OK, "text/plain; charset=utf-8", "ok".into()),
        _ => not_found(),
    })
}

/// Formats like Go's `time.Time.String()` in UTC
/// (`2006-01-02 15:04:05.999999999 +0000 UTC`, fraction without trailing
/// zeros); `None` is Go's zero time. The monotonic-clock suffix Go appends
/// (`m=+1.23`) is left out.
pub fn go_time_string(t: Option<SystemTime>) -> String {
    let Some(t) = t else {
        return "0001-01-01 00:00:00 +0000 UTC".into();
    };
    // Before the epoch cannot happen with a real clock; the epoch then.
    let t = jiff::Timestamp::try_from(t).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    t.strftime("%Y-%m-%d %H:%M:%S%.f +0000 UTC").to_string()
}

/// A clock, injectable for tests.
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

#[derive(Debug)]
struct HealthInner {
    last_updated: Option<SystemTime>,
    oldest_pending_queued: Option<SystemTime>,
    node_eligible: bool,
}

/// The proxy's health, as kube-proxy's `ProxyHealthServer` defines it:
/// unhealthy when a queued update has waited longer than the timeout (twice
/// the sync period) since the first successful sync; `/healthz` is also 503
/// when the node is being deleted or carries the autoscaler's deletion taint,
/// and from the moment the agent begins to shut down
/// ([`HealthState::with_shutdown`]).
pub struct HealthState {
    inner: Mutex<HealthInner>,
    stopping: CancellationToken,
    timeout: Duration,
    clock: Clock,
    metrics: Metrics,
}

impl std::fmt::Debug for HealthState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthState")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl HealthState {
    /// Health with the real clock.
    pub fn new(timeout: Duration, metrics: Metrics) -> Self {
        Self::with_clock(timeout, metrics, Arc::new(SystemTime::now))
    }

    /// Health with an injected clock.
    pub fn with_clock(timeout: Duration, metrics: Metrics, clock: Clock) -> Self {
        Self {
            inner: Mutex::new(HealthInner {
                last_updated: None,
                oldest_pending_queued: None,
                // Eligible while starting, until a Node event says otherwise.
                node_eligible: true,
            }),
            stopping: CancellationToken::new(),
            timeout,
            clock,
            metrics,
        }
    }

    /// `/healthz` answers 503 once `stopping` is cancelled (the agent's
    /// shutdown has begun: [`crate::shutdown`]); `/livez` does not change.
    pub fn with_shutdown(mut self, stopping: CancellationToken) -> Self {
        self.stopping = stopping;
        self
    }

    /// Whether the agent is shutting down.
    pub fn is_stopping(&self) -> bool {
        self.stopping.is_cancelled()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HealthInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A change arrived that needs a sync (kube-proxy's `QueuedUpdate`).
    pub fn queued_update(&self) {
        let now = (self.clock)();
        let mut g = self.lock();
        if g.oldest_pending_queued.is_none() {
            g.oldest_pending_queued = Some(now);
        }
    }

    /// A sync succeeded (kube-proxy's `Updated`).
    pub fn updated(&self) {
        let now = (self.clock)();
        let mut g = self.lock();
        g.oldest_pending_queued = None;
        g.last_updated = Some(now);
    }

    /// Takes the node's eligibility from our Node object (`None`: deleted).
    pub fn sync_node(&self, node: Option<&Node>) {
        let eligible = match node {
            None => false,
            Some(n) => {
                n.metadata.deletion_timestamp.is_none()
                    && !n
                        .spec
                        .as_ref()
                        .and_then(|s| s.taints.as_ref())
                        .is_some_and(|t| t.iter().any(|t| t.key == TO_BE_DELETED_TAINT))
            }
        };
        self.lock().node_eligible = eligible;
    }

    /// Whether the node is eligible (not being deleted).
    pub fn node_eligible(&self) -> bool {
        self.lock().node_eligible
    }

    /// The proxy's own health, ignoring the node, and the last update time.
    pub fn is_healthy(&self) -> (bool, Option<SystemTime>) {
        let now = (self.clock)();
        let g = self.lock();
        let Some(last) = g.last_updated else {
            // Healthy while starting up.
            return (true, None);
        };
        match g.oldest_pending_queued {
            Some(q) if now.duration_since(q).unwrap_or_default() >= self.timeout => {
                (false, Some(last))
            }
            _ => (true, Some(last)),
        }
    }

    fn answer(&self, with_node: bool) -> Response<Body> {
        let node_eligible = self.node_eligible();
        let (healthy, last) = self.is_healthy();
        let now = (self.clock)();
        let healthy = healthy && (!with_node || (node_eligible && !self.is_stopping()));
        let (status, code) = if healthy {
            (StatusCode::OK, "200")
        } else {
            (StatusCode::SERVICE_UNAVAILABLE, "503")
        };
        let counter = if with_node {
            &self.metrics.healthz_total
        } else {
            &self.metrics.livez_total
        };
        counter.with_label_values(&[code]).inc();
        // As kube-proxy: a healthy answer reports lastUpdated = now.
        let last = if healthy { Some(now) } else { last };
        let body = if with_node {
            format!(
                "{{\"lastUpdated\": {:?},\"currentTime\": {:?}, \"nodeEligible\": {}}}",
                go_time_string(last),
                go_time_string(Some(now)),
                node_eligible
            )
        } else {
            format!(
                "{{\"lastUpdated\": {:?},\"currentTime\": {:?}}}",
                go_time_string(last),
                go_time_string(Some(now))
            )
        };
        let mut r = response(status, "application/json", body);
        r.headers_mut().insert(
            "X-Content-Type-Options",
            HeaderValue::from_static("nosniff"),
        );
        r
    }
}

/// The healthz server's handler: `/healthz` (proxy and node) and `/livez`
/// (proxy only).
pub fn healthz_handler(health: Arc<HealthState>) -> Handler {
    Arc::new(move |req| match req.uri().path() {
        "/healthz" => health.answer(true),
        "/livez" => health.answer(false),
        _ => not_found(),
    })
}

/// A Service's `namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl std::fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

struct HcInstance {
    port: u16,
    endpoints: Arc<AtomicUsize>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for HcInstance {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Health-check node port servers, one per `externalTrafficPolicy: Local`
/// Service: 200 when the node has local endpoints and the proxy is healthy,
/// else 503; body and `X-Load-Balancing-Endpoint-Weight` as kube-proxy.
pub struct ServiceHealthServers {
    node_ips: Vec<IpAddr>,
    health: Arc<HealthState>,
    shutdown: Option<crate::shutdown::Shutdown>,
    services: Mutex<HashMap<ServiceRef, HcInstance>>,
}

impl std::fmt::Debug for ServiceHealthServers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceHealthServers")
            .field("node_ips", &self.node_ips)
            .finish_non_exhaustive()
    }
}

/// A health-check port that could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open health check port {port} for {service} on {addr}: {source}")]
pub struct HealthCheckBindError {
    /// The Service.
    pub service: ServiceRef,
    /// The port.
    pub port: u16,
    /// The address.
    pub addr: SocketAddr,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

impl ServiceHealthServers {
    /// Servers listening on `node_ips` (empty: all addresses of both
    /// families, `[::]` dual-stack, or `0.0.0.0` where IPv6 is off).
    pub fn new(node_ips: Vec<IpAddr>, health: Arc<HealthState>) -> Self {
        let node_ips = if node_ips.is_empty() {
            vec![IpAddr::from([0u16; 8])]
        } else {
            node_ips
        };
        Self {
            node_ips,
            health,
            shutdown: None,
            services: Mutex::new(HashMap::new()),
        }
    }

    /// The servers run on the agent's task tracker and close gracefully in
    /// its shutdown's phase 2; without it they run until dropped.
    pub fn with_shutdown(mut self, shutdown: crate::shutdown::Shutdown) -> Self {
        self.shutdown = Some(shutdown);
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ServiceRef, HcInstance>> {
        self.services.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `wanted` (Service -> health-check port) the set of open
    /// servers: closes the others, opens the new ones (must run inside a
    /// tokio runtime). Ports that cannot be opened are returned; they are
    /// retried on the next call.
    pub fn sync_services(&self, wanted: &BTreeMap<ServiceRef, u16>) -> Vec<HealthCheckBindError> {
        let mut services = self.lock();
        services.retain(|name, inst| {
            let keep = wanted.get(name) == Some(&inst.port);
            if !keep {
                tracing::info!(service = %name, port = inst.port, "Closing healthcheck");
            }
            keep
        });
        let mut errors = Vec::new();
        for (name, &port) in wanted {
            if services.contains_key(name) {
                continue;
            }
            let endpoints = Arc::new(AtomicUsize::new(0));
            let mut tasks = Vec::new();
            let mut failed = false;
            for ip in &self.node_ips {
                let addr = SocketAddr::new(*ip, port);
                let bound = match bind(addr) {
                    // No IPv6 on this node: all IPv4 addresses instead.
                    Err(_) if ip.is_ipv6() && ip.is_unspecified() => {
                        bind(SocketAddr::new(IpAddr::from([0, 0, 0, 0]), port))
                    }
                    other => other,
                };
                match bound {
                    Ok(listener) => {
                        let handler = self.handler(name.clone(), endpoints.clone());
                        tasks.push(match &self.shutdown {
                            Some(s) => s.spawn(serve(listener, handler, s.close_token())),
                            None => {
                                tokio::spawn(serve(listener, handler, CancellationToken::new()))
                            }
                        });
                    }
                    Err(source) => {
                        errors.push(HealthCheckBindError {
                            service: name.clone(),
                            port,
                            addr,
                            source,
                        });
                        failed = true;
                        break;
                    }
                }
            }
            if failed {
                for t in tasks {
                    t.abort();
                }
                continue;
            }
            tracing::info!(service = %name, port, "Opening healthcheck");
            services.insert(
                name.clone(),
                HcInstance {
                    port,
                    endpoints,
                    tasks,
                },
            );
        }
        errors
    }

    /// Sets the number of local endpoints per Service; Services not listed
    /// have none.
    pub fn sync_endpoints(&self, counts: &BTreeMap<ServiceRef, usize>) {
        for (name, inst) in self.lock().iter() {
            let n = counts.get(name).copied().unwrap_or(0);
            inst.endpoints.store(n, Ordering::Relaxed);
        }
    }

    /// The Services with an open health-check port, and the ports.
    pub fn open(&self) -> BTreeMap<ServiceRef, u16> {
        self.lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.port))
            .collect()
    }

    fn handler(&self, name: ServiceRef, endpoints: Arc<AtomicUsize>) -> Handler {
        let health = self.health.clone();
        Arc::new(move |_req| {
            let count = endpoints.load(Ordering::Relaxed);
            let healthy = health.is_healthy().0;
            let status = if count != 0 && healthy {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            let body = format!(
                "{{\n\t\"service\": {{\n\t\t\"namespace\": {:?},\n\t\t\"name\": {:?}\n\t}},\n\t\"localEndpoints\": {},\n\t\"serviceProxyHealthy\": {}\n}}",
                name.namespace, name.name, count, healthy
            );
            let mut r = response(status, "application/json", body);
            r.headers_mut().insert(
                "X-Content-Type-Options",
                HeaderValue::from_static("nosniff"),
            );
            r.headers_mut().insert(
                "X-Load-Balancing-Endpoint-Weight",
                HeaderValue::from(count as u64),
            );
            r
        })
    }
}

/// Binds a listening socket (SO_REUSEADDR, as Go's net.Listen).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

#[cfg(test)]
mod tests;
