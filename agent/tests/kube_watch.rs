//! The cluster source against an HTTP stand-in for the API server that speaks
//! the real list/watch wire format: lists with `metadata.resourceVersion`,
//! chunked watch streams of newline-delimited JSON events (ADDED, MODIFIED,
//! DELETED, BOOKMARK, ERROR with a 410 Gone Status), and failing lists.
//! A real `kube::Client` is pointed at it.
//!
//! Covered: kube-proxy's label selectors on the requests; initial lists
//! before anything else; watch events; resuming from a BOOKMARK's
//! resourceVersion when a stream ends; relist after 410 Gone turning missed
//! deletions into deletions; list failures retried with backoff without
//! deleting anything (fail static). Rejection Events: a malformed Service
//! yields exactly one POST to events.k8s.io/v1 with the expected fields, a
//! valid one none, later syncs none, a new generation one more. Client-side
//! rate limit (`--kube-api-qps`/`--kube-api-burst`): requests spaced by the
//! token bucket, client-go's defaults for 0, none for a negative qps, one
//! token per watch however many events it carries. Not covered: authentication, protobuf,
//! streaming lists (sendInitialEvents), real apiserver paging (`continue`).

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use ipvs_proxy::source::{run_cluster, Change, Kind, Object, ObjectKey};
use serde_json::{json, Value};
use tokio::sync::mpsc;

type Body = BoxBody<Bytes, Infallible>;

struct Resource {
    list_kind: &'static str,
    api_version: &'static str,
    kind: &'static str,
    objects: BTreeMap<String, Value>,
    watchers: Vec<mpsc::UnboundedSender<String>>,
    fail_lists: usize,
}

#[derive(Clone)]
struct StandIn {
    rv: Arc<Mutex<u64>>,
    resources: Arc<Mutex<HashMap<&'static str, Resource>>>,
    requests: Arc<Mutex<Vec<String>>>,
    /// When each request arrived (same order as `requests`).
    arrivals: Arc<Mutex<Vec<Instant>>>,
    /// POST/PATCH/PUT requests: (method, path, JSON body).
    writes: Arc<Mutex<Vec<(String, String, Value)>>>,
}

const SERVICES: &str = "/api/v1/services";
const SLICES: &str = "/apis/discovery.k8s.io/v1/endpointslices";
const NODES: &str = "/api/v1/nodes";

impl StandIn {
    fn new() -> Self {
        let mut m = HashMap::new();
        for (path, list_kind, api_version, kind) in [
            (SERVICES, "ServiceList", "v1", "Service"),
            (
                SLICES,
                "EndpointSliceList",
                "discovery.k8s.io/v1",
                "EndpointSlice",
            ),
            (NODES, "NodeList", "v1", "Node"),
        ] {
            m.insert(
                path,
                Resource {
                    list_kind,
                    api_version,
                    kind,
                    objects: BTreeMap::new(),
                    watchers: Vec::new(),
                    fail_lists: 0,
                },
            );
        }
        Self {
            rv: Arc::new(Mutex::new(100)),
            resources: Arc::new(Mutex::new(m)),
            requests: Arc::new(Mutex::new(Vec::new())),
            arrivals: Arc::new(Mutex::new(Vec::new())),
            writes: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn record(&self, uri: String) {
        self.requests.lock().unwrap().push(uri);
        self.arrivals.lock().unwrap().push(Instant::now());
    }

    /// Arrival times of the requests whose URI satisfies `pred`.
    fn arrivals_of(&self, pred: impl Fn(&str) -> bool) -> Vec<Instant> {
        let uris = self.requests.lock().unwrap();
        let times = self.arrivals.lock().unwrap();
        uris.iter()
            .zip(times.iter())
            .filter(|(u, _)| pred(u))
            .map(|(_, t)| *t)
            .collect()
    }

    fn next_rv(&self) -> String {
        let mut rv = self.rv.lock().unwrap();
        *rv += 1;
        rv.to_string()
    }

    fn send(r: &mut Resource, line: String) {
        r.watchers.retain(|w| w.send(line.clone()).is_ok());
    }

    /// Stores an object and tells open watches (ADDED or MODIFIED).
    fn put(&self, path: &'static str, mut obj: Value) {
        let rv = self.next_rv();
        obj["metadata"]["resourceVersion"] = json!(rv);
        let key = format!(
            "{}/{}",
            obj["metadata"]["namespace"].as_str().unwrap_or(""),
            obj["metadata"]["name"].as_str().unwrap_or("")
        );
        let mut res = self.resources.lock().unwrap();
        let r = res.get_mut(path).unwrap();
        obj["apiVersion"] = json!(r.api_version);
        obj["kind"] = json!(r.kind);
        let ty = if r.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        r.objects.insert(key, obj.clone());
        Self::send(r, json!({"type": ty, "object": obj}).to_string() + "\n");
    }

    /// Removes an object without telling anyone (a deletion missed while
    /// the watch was down).
    fn delete_silently(&self, path: &'static str, key: &str) {
        let mut res = self.resources.lock().unwrap();
        assert!(res.get_mut(path).unwrap().objects.remove(key).is_some());
    }

    fn bookmark(&self, path: &'static str) -> String {
        let rv = self.next_rv();
        let mut res = self.resources.lock().unwrap();
        let r = res.get_mut(path).unwrap();
        let line = json!({"type": "BOOKMARK", "object": {
            "apiVersion": r.api_version, "kind": r.kind,
            "metadata": {"resourceVersion": rv}}})
        .to_string()
            + "\n";
        Self::send(r, line);
        rv
    }

    /// Ends every open watch stream of `path` (the watcher resumes).
    fn close_watches(&self, path: &'static str) {
        self.resources
            .lock()
            .unwrap()
            .get_mut(path)
            .unwrap()
            .watchers
            .clear();
    }

    /// Sends `ERROR 410 Gone` on open watches and closes them.
    fn expire(&self, path: &'static str) {
        let mut res = self.resources.lock().unwrap();
        let r = res.get_mut(path).unwrap();
        let line = json!({"type": "ERROR", "object": {
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": "too old resource version: 1 (2)",
            "reason": "Expired", "code": 410}})
        .to_string()
            + "\n";
        Self::send(r, line);
        r.watchers.clear();
    }

    fn fail_next_lists(&self, path: &'static str, n: usize) {
        self.resources
            .lock()
            .unwrap()
            .get_mut(path)
            .unwrap()
            .fail_lists = n;
    }

    fn requests_for(&self, path: &str) -> Vec<String> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|u| u.starts_with(&format!("{path}?")) || u.as_str() == path)
            .cloned()
            .collect()
    }

    /// A write: recorded and echoed back as created (events only).
    async fn write(&self, req: Request<Incoming>) -> Response<Body> {
        let method = req.method().to_string();
        let path = req.uri().path().to_string();
        self.record(req.uri().to_string());
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        self.writes
            .lock()
            .unwrap()
            .push((method, path.clone(), value.clone()));
        if path.starts_with("/apis/events.k8s.io/v1/namespaces/") && path.ends_with("/events")
            || path.contains("/events/")
        {
            json_response(201, value)
        } else {
            status(405, "MethodNotAllowed", "read-only stand-in")
        }
    }

    fn event_writes(&self) -> Vec<(String, String, Value)> {
        self.writes
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, p, _)| p.starts_with("/apis/events.k8s.io/"))
            .cloned()
            .collect()
    }

    fn handle(&self, req: &Request<Incoming>) -> Response<Body> {
        let uri = req.uri().to_string();
        self.record(uri.clone());
        let path = req.uri().path();
        let query = req.uri().query().unwrap_or("");
        let watch = query
            .split('&')
            .any(|kv| kv == "watch=true" || kv == "watch=1");
        let mut res = self.resources.lock().unwrap();
        let Some(r) = res.get_mut(path) else {
            return status(404, "NotFound", "no such resource");
        };
        if watch {
            let (tx, rx) = mpsc::unbounded_channel::<String>();
            r.watchers.push(tx);
            let stream = futures::stream::unfold(rx, |mut rx| async move {
                rx.recv()
                    .await
                    .map(|line| (Ok::<_, Infallible>(Frame::data(Bytes::from(line))), rx))
            });
            let mut resp = Response::new(StreamBody::new(stream).boxed());
            resp.headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            return resp;
        }
        if r.fail_lists > 0 {
            r.fail_lists -= 1;
            return status(500, "InternalError", "etcdserver: request timed out");
        }
        let items: Vec<Value> = r.objects.values().cloned().collect();
        let body = json!({
            "apiVersion": r.api_version,
            "kind": r.list_kind,
            "metadata": {"resourceVersion": self.rv.lock().unwrap().to_string()},
            "items": items,
        });
        json_response(200, body)
    }
}

fn json_response(code: u16, body: Value) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())).boxed());
    *resp.status_mut() = hyper::StatusCode::from_u16(code).unwrap();
    resp.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    resp
}

fn status(code: u16, reason: &str, message: &str) -> Response<Body> {
    json_response(
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
               "status": "Failure", "message": message, "reason": reason, "code": code}),
    )
}

async fn start(stand_in: StandIn) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let s = stand_in.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let s = s.clone();
                    async move {
                        if req.method() == hyper::Method::GET {
                            Ok::<_, Infallible>(s.handle(&req))
                        } else {
                            Ok(s.write(req).await)
                        }
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

fn service(ns: &str, name: &str, ip: &str) -> Value {
    json!({"metadata": {"namespace": ns, "name": name},
           "spec": {"clusterIP": ip, "ports": [{"port": 80, "protocol": "TCP"}]}})
}

fn slice(ns: &str, name: &str, svc: &str, addr: &str) -> Value {
    json!({"metadata": {"namespace": ns, "name": name,
                        "labels": {"kubernetes.io/service-name": svc}},
           "addressType": "IPv4",
           "ports": [{"port": 8080}],
           "endpoints": [{"addresses": [addr]}]})
}

fn key(ns: &str, name: &str) -> ObjectKey {
    ObjectKey {
        namespace: ns.into(),
        name: name.into(),
    }
}

fn applied_name(c: &Change) -> Option<(Kind, String)> {
    match c {
        Change::Applied(Object::Service(s)) => Some((Kind::Service, s.metadata.name.clone()?)),
        Change::Applied(Object::EndpointSlice(s)) => {
            Some((Kind::EndpointSlice, s.metadata.name.clone()?))
        }
        Change::Applied(Object::Node(n)) => Some((Kind::Node, n.metadata.name.clone()?)),
        _ => None,
    }
}

async fn recv(rx: &mut mpsc::Receiver<Change>, within: Duration) -> Option<Change> {
    tokio::time::timeout(within, rx.recv()).await.ok().flatten()
}

/// Receives until `pred` matches, returning everything received.
async fn until(rx: &mut mpsc::Receiver<Change>, pred: impl Fn(&Change) -> bool) -> Vec<Change> {
    let mut seen = Vec::new();
    loop {
        let c = recv(rx, Duration::from_secs(20))
            .await
            .unwrap_or_else(|| panic!("timed out; received so far: {seen:#?}"));
        let done = pred(&c);
        seen.push(c);
        if done {
            return seen;
        }
    }
}

#[tokio::test]
async fn cluster_source_against_a_list_watch_stand_in() {
    let api = StandIn::new();
    api.put(SERVICES, service("a", "one", "10.96.0.1"));
    api.put(SERVICES, service("a", "two", "10.96.0.2"));
    api.put(SLICES, slice("a", "one-x", "one", "10.244.1.1"));
    api.put(
        NODES,
        json!({"metadata": {"name": "n1", "labels": {"topology.kubernetes.io/zone": "z1"}}}),
    );
    let addr = start(api.clone()).await;

    let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    let (tx, mut rx) = mpsc::channel(256);
    let task = tokio::spawn(run_cluster(client, "n1".into(), tx));

    // 1. Initial lists: every object, then a Listed marker per kind.
    let mut listed = std::collections::BTreeSet::new();
    let mut applied = std::collections::BTreeSet::new();
    while listed.len() < 3 {
        let c = recv(&mut rx, Duration::from_secs(20))
            .await
            .expect("initial lists");
        if let Change::Listed(k) = c {
            listed.insert(k);
        } else {
            applied.insert(applied_name(&c).expect("only applies before Listed"));
        }
    }
    assert_eq!(
        applied,
        [
            (Kind::Service, "one".to_string()),
            (Kind::Service, "two".to_string()),
            (Kind::EndpointSlice, "one-x".to_string()),
            (Kind::Node, "n1".to_string()),
        ]
        .into_iter()
        .collect()
    );

    // kube-proxy's selectors were sent.
    let selector = "labelSelector=%21service.kubernetes.io%2Fservice-proxy-name%2C%21service.kubernetes.io%2Fheadless";
    for path in [SERVICES, SLICES] {
        let reqs = api.requests_for(path);
        assert!(!reqs.is_empty());
        assert!(
            reqs.iter().all(|u| u.contains(selector)),
            "selector missing in {reqs:?}"
        );
    }
    let node_reqs = api.requests_for(NODES);
    assert!(
        node_reqs
            .iter()
            .all(|u| u.contains("fieldSelector=metadata.name%3Dn1")),
        "{node_reqs:?}"
    );

    // 2. A watch event.
    tokio::time::sleep(Duration::from_millis(200)).await; // watches open
    api.put(SERVICES, service("a", "three", "10.96.0.3"));
    let seen = until(&mut rx, |c| applied_name(c).is_some()).await;
    assert_eq!(
        applied_name(seen.last().unwrap()),
        Some((Kind::Service, "three".into()))
    );

    // 3. BOOKMARK, then the stream ends: the watch resumes from the
    //    bookmark's resourceVersion, without a relist.
    let bm = api.bookmark(SERVICES);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let lists_before = api
        .requests_for(SERVICES)
        .iter()
        .filter(|u| !u.contains("watch=true"))
        .count();
    api.close_watches(SERVICES);
    let mut resumed = false;
    for _ in 0..100 {
        if api
            .requests_for(SERVICES)
            .iter()
            .any(|u| u.contains("watch=true") && u.contains(&format!("resourceVersion={bm}")))
        {
            resumed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        resumed,
        "no watch from the bookmark: {:?}",
        api.requests_for(SERVICES)
    );
    let lists_after = api
        .requests_for(SERVICES)
        .iter()
        .filter(|u| !u.contains("watch=true"))
        .count();
    assert_eq!(
        lists_before, lists_after,
        "a bookmark resume must not relist"
    );
    api.put(SLICES, slice("a", "one-x", "one", "10.244.1.9"));
    let seen = until(&mut rx, |c| applied_name(c).is_some()).await;
    match seen.last().unwrap() {
        Change::Applied(Object::EndpointSlice(s)) => {
            assert_eq!(s.endpoints[0].addresses, vec!["10.244.1.9".to_string()])
        }
        other => panic!("unexpected {other:?}"),
    }

    // 4. A deletion missed while disconnected, then ERROR 410 Gone: the
    //    relist reports it deleted.
    tokio::time::sleep(Duration::from_millis(200)).await;
    api.delete_silently(SERVICES, "a/one");
    api.expire(SERVICES);
    let seen = until(&mut rx, |c| *c == Change::Listed(Kind::Service)).await;
    assert!(
        seen.contains(&Change::Deleted(Kind::Service, key("a", "one"))),
        "{seen:#?}"
    );
    assert!(
        !seen.contains(&Change::Deleted(Kind::Service, key("a", "two"))),
        "{seen:#?}"
    );

    // 5. The API server fails lists for a while: nothing is deleted, and
    //    the list is retried until it succeeds.
    tokio::time::sleep(Duration::from_millis(200)).await;
    api.fail_next_lists(SERVICES, 2);
    api.expire(SERVICES);
    let seen = until(&mut rx, |c| *c == Change::Listed(Kind::Service)).await;
    assert!(
        seen.iter().all(|c| !matches!(c, Change::Deleted(..))),
        "{seen:#?}"
    );
    let failed_then_ok = api
        .requests_for(SERVICES)
        .iter()
        .filter(|u| !u.contains("watch=true"))
        .count();
    assert!(
        failed_then_ok >= lists_after + 3,
        "two failed lists and one good one"
    );

    task.abort();
}

/// The agent's pipeline (cluster source, sync loop, proxy-core, an
/// in-memory kernel) with rejection events, against the stand-in.
#[tokio::test]
async fn a_malformed_service_gets_one_warning_event() {
    use ipvs_proxy::config::ProxyConfig;
    use ipvs_proxy::events::{self, EventSink, RateLimit};
    use ipvs_proxy::http::HealthState;
    use ipvs_proxy::metrics::Metrics;
    use ipvs_proxy::proxier::{CoreProxier, ModelKernel};
    use ipvs_proxy::sync::{self, LoopConfig};

    let api = StandIn::new();
    let mut bad = service("shop", "bad", "10.96.0.300");
    bad["metadata"]["uid"] = json!("uid-bad");
    bad["metadata"]["generation"] = json!(1);
    api.put(SERVICES, bad.clone());
    api.put(SERVICES, service("shop", "good", "10.96.0.20"));
    api.put(SLICES, slice("shop", "good-1", "good", "10.244.1.1"));
    api.put(NODES, json!({"metadata": {"name": "n1"}}));
    let addr = start(api.clone()).await;
    let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();

    let (tx, rx) = mpsc::channel(256);
    let (sink, events_rx) = EventSink::channel(16);
    let metrics = Metrics::new();
    let health = Arc::new(HealthState::new(Duration::from_secs(60), metrics.clone()));
    let proxier = CoreProxier::new(
        ProxyConfig::default(),
        "n1".into(),
        Default::default(),
        ModelKernel::default(),
        metrics.clone(),
        None,
    )
    .unwrap()
    .with_events(sink);
    let tasks = [
        tokio::spawn(events::run(
            client.clone(),
            "n1".into(),
            events_rx,
            RateLimit::default(),
        )),
        tokio::spawn(run_cluster(client, "n1".into(), tx)),
        tokio::spawn(sync::run(
            proxier,
            rx,
            LoopConfig::new(Duration::from_secs(60), Duration::from_millis(50)),
            metrics,
            health,
            tokio_util::sync::CancellationToken::new(),
        )),
    ];

    let wait_for = |n: usize| {
        let api = api.clone();
        async move {
            for _ in 0..200 {
                if api.event_writes().len() >= n {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("no event write #{n}: {:?}", api.event_writes());
        }
    };
    wait_for(1).await;
    // More syncs (a new valid Service, then its endpoints): no new event.
    tokio::time::sleep(Duration::from_millis(300)).await;
    api.put(SERVICES, service("shop", "other", "10.96.0.21"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    api.put(SLICES, slice("shop", "other-1", "other", "10.244.1.2"));
    tokio::time::sleep(Duration::from_millis(500)).await;

    let writes = api.event_writes();
    assert_eq!(writes.len(), 1, "{writes:#?}");
    let (method, path, ev) = &writes[0];
    assert_eq!(method, "POST");
    assert_eq!(path, "/apis/events.k8s.io/v1/namespaces/shop/events");
    assert_eq!(ev["type"], "Warning");
    assert_eq!(ev["reason"], "InvalidClusterIp");
    assert_eq!(ev["action"], "Program");
    assert_eq!(ev["reportingController"], "ipvs-proxy");
    assert_eq!(ev["reportingInstance"], "n1");
    assert_eq!(ev["regarding"]["kind"], "Service");
    assert_eq!(ev["regarding"]["apiVersion"], "v1");
    assert_eq!(ev["regarding"]["namespace"], "shop");
    assert_eq!(ev["regarding"]["name"], "bad");
    assert_eq!(ev["regarding"]["uid"], "uid-bad");
    assert_eq!(ev["metadata"]["namespace"], "shop");
    let note = ev["note"].as_str().unwrap();
    assert!(
        note.starts_with("Service not programmed: invalid cluster ip")
            && note.contains("10.96.0.300"),
        "{note}"
    );

    // A new generation that is still malformed: one more event.
    bad["metadata"]["generation"] = json!(2);
    bad["metadata"]["labels"] = json!({"edited": "yes"});
    api.put(SERVICES, bad);
    wait_for(2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let writes = api.event_writes();
    assert_eq!(writes.len(), 2, "{writes:#?}");
    assert_eq!(writes[1].2["reason"], "InvalidClusterIp");
    assert_eq!(writes[1].2["regarding"]["name"], "bad");

    for t in tasks {
        t.abort();
    }
}

/// When each thing happened, in order.
type Timeline<T> = Arc<Mutex<Vec<(Instant, T)>>>;

/// A kernel model whose `apply` takes as long as `delay` says, logging
/// when each apply starts and ends.
#[derive(Clone)]
struct SlowKernel {
    model: Arc<tokio::sync::Mutex<ipvs_proxy::proxier::ModelKernel>>,
    delay: Arc<Mutex<Duration>>,
    log: Timeline<String>,
}

impl SlowKernel {
    fn note(log: &Mutex<Vec<(Instant, String)>>, what: &str) {
        log.lock().unwrap().push((Instant::now(), what.to_string()));
    }
}

impl ipvs_proxy::proxier::Kernel for SlowKernel {
    fn observe(
        &mut self,
    ) -> impl std::future::Future<Output = Result<proxy_core::Observed, ipvs_proxy::Error>> + Send
    {
        let model = self.model.clone();
        async move { model.lock().await.observe().await }
    }

    fn apply(
        &mut self,
        plan: &proxy_core::Plan,
    ) -> impl std::future::Future<Output = ipvs_proxy::proxier::Applied> + Send {
        let (model, log, plan) = (self.model.clone(), self.log.clone(), plan.clone());
        let delay = *self.delay.lock().unwrap();
        async move {
            Self::note(&log, "apply started");
            tokio::time::sleep(delay).await;
            let applied = model.lock().await.apply(&plan).await;
            Self::note(&log, "apply ended");
            applied
        }
    }

    fn refresh(
        &mut self,
        keys: &[ipvs::ServiceKey],
    ) -> impl std::future::Future<
        Output = Result<Vec<proxy_core::ObservedVirtualServer>, ipvs_proxy::Error>,
    > + Send {
        let (model, keys) = (self.model.clone(), keys.to_vec());
        async move { model.lock().await.refresh(&keys).await }
    }
}

/// `GET /healthz` on `addr`: the status code, or `None` when refused.
async fn healthz(addr: SocketAddr) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    let text = String::from_utf8_lossy(&buf);
    text.split(' ').nth(1)?.parse().ok()
}

/// SIGTERM in the middle of a sync, the whole agent (`app::run_with`)
/// against the stand-in: `/healthz` turns 503 while the sync is still
/// applying, that sync runs to its end and no other starts, the rejection
/// Event it queued is posted, the healthz listener closes only after the
/// sync ended, the agent returns `Ok` well within the grace period, and the
/// kernel keeps what was programmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_sync_shuts_down_in_order() {
    use ipvs_proxy::config::{Flags, ProxyConfig};
    use ipvs_proxy::shutdown::Shutdown;

    let api = StandIn::new();
    api.put(SERVICES, service("shop", "web", "10.96.0.20"));
    api.put(SLICES, slice("shop", "web-1", "web", "10.244.1.1"));
    api.put(NODES, json!({"metadata": {"name": "n1"}}));
    let addr = start(api.clone()).await;
    let healthz_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap();

    let flags = Flags {
        master: Some(format!("http://{addr}")),
        control_socket: Some(String::new()),
        ..Flags::default()
    };
    let cfg = ProxyConfig {
        hostname_override: Some("n1".into()),
        healthz_bind_address: Some(healthz_addr),
        metrics_bind_address: None,
        ..ProxyConfig::default()
    };
    let kernel = SlowKernel {
        model: Arc::default(),
        delay: Arc::default(),
        log: Arc::default(),
    };
    let log = kernel.log.clone();
    let grace = Duration::from_secs(15);
    let shutdown = Shutdown::new(grace);
    shutdown.on_signals().unwrap();
    let agent = {
        let (k, shutdown) = (kernel.clone(), shutdown.clone());
        tokio::spawn(async move {
            let r = ipvs_proxy::app::run_with(&flags, cfg, shutdown, async { Ok((k, None)) }).await;
            (r, Instant::now())
        })
    };
    let wait = |what: &'static str, f: Box<dyn Fn() -> bool + Send>| async move {
        for _ in 0..400 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("timed out waiting for {what}");
    };
    let ended = |log: &Timeline<String>, n: usize| {
        let log = log.clone();
        Box::new(move || {
            log.lock()
                .unwrap()
                .iter()
                .filter(|e| e.1 == "apply ended")
                .count()
                >= n
        }) as Box<dyn Fn() -> bool + Send>
    };
    wait("the first sync", ended(&log, 1)).await;
    assert_eq!(healthz(healthz_addr).await, Some(200));

    // The next sync takes 2 s in the kernel; it programs a new Service and
    // rejects a malformed one (its Event is queued at the end of the sync).
    *kernel.delay.lock().unwrap() = Duration::from_secs(2);
    api.put(SERVICES, service("shop", "bad", "10.96.0.300"));
    api.put(SERVICES, service("shop", "api", "10.96.0.21"));
    let started = {
        let log = log.clone();
        Box::new(move || {
            log.lock()
                .unwrap()
                .iter()
                .filter(|e| e.1 == "apply started")
                .count()
                >= 2
        }) as Box<dyn Fn() -> bool + Send>
    };
    wait("the second sync to start applying", started).await;

    // A poller records when each /healthz request went out and the answer,
    // every 20 ms.
    let probes: Timeline<Option<u16>> = Arc::default();
    let poller = {
        let probes = probes.clone();
        tokio::spawn(async move {
            loop {
                let sent = Instant::now();
                let code = healthz(healthz_addr).await;
                probes.lock().unwrap().push((sent, code));
                if code.is_none() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let term_at = Instant::now();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());

    let (result, returned_at) = tokio::time::timeout(grace, agent)
        .await
        .expect("the agent returns within the grace period")
        .unwrap();
    result.expect("a clean stop");
    poller.await.unwrap();
    let took = returned_at - term_at;
    assert!(took < Duration::from_secs(10), "{took:?}");

    let log = log.lock().unwrap().clone();
    let names: Vec<&str> = log.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(
        names,
        [
            "apply started",
            "apply ended",
            "apply started",
            "apply ended"
        ],
        "the sync in progress finished, no other started"
    );
    let sync_end = log[3].0;
    assert!(sync_end > term_at, "the signal came during the sync");
    let probes = probes.lock().unwrap().clone();
    let first_503 = probes
        .iter()
        .find(|(t, c)| *t > term_at && *c == Some(503))
        .map(|p| p.0)
        .expect("healthz answered 503 after SIGTERM");
    assert!(
        first_503 < sync_end,
        "503 at once, not after the sync: {probes:?}"
    );
    // "At once": the signal's delivery and its task's wake-up take a
    // moment; 100 ms is far below the 2 s the sync still had to run.
    assert!(
        probes
            .iter()
            .all(|(t, c)| *t < term_at + Duration::from_millis(100) || *c != Some(200)),
        "no 200 after SIGTERM: {probes:?}"
    );
    let closed = probes.last().unwrap();
    assert_eq!(closed.1, None);
    assert!(
        closed.0 > sync_end,
        "the listener closed after the sync: {probes:?}"
    );

    // The Event of the interrupted sync was posted before the agent returned.
    let events = api.event_writes();
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0].2["regarding"]["name"], "bad");

    // Fail static: what was programmed stays, the new Service included.
    let model = kernel.model.lock().await;
    let vips: Vec<String> = model
        .node
        .virtual_servers
        .keys()
        .map(|k| format!("{k:?}"))
        .collect();
    assert_eq!(vips.len(), 2, "{vips:?}");
    assert!(vips.iter().any(|v| v.contains("10.96.0.21")), "{vips:?}");
}

/// `N` sequential lists through `client`; how long they took.
async fn lists(client: &kube::Client, n: usize) -> Duration {
    let api = kube::Api::<k8s_openapi::api::core::v1::Service>::all(client.clone());
    let t0 = Instant::now();
    for _ in 0..n {
        api.list(&Default::default()).await.expect("list");
    }
    t0.elapsed()
}

/// `--kube-api-qps`/`--kube-api-burst` as client-go applies them: a token
/// bucket of `burst` tokens refilled at `qps`, one token per request.
#[tokio::test]
async fn requests_are_rate_limited_like_client_go() {
    use ipvs_proxy::ratelimit::{self, RateLimit};
    let api = StandIn::new();
    api.put(SERVICES, service("a", "one", "10.96.0.1"));
    let addr = start(api.clone()).await;
    let config = || kube::Config::new(format!("http://{addr}").parse().unwrap());

    // qps 10, burst 3: 13 requests = 3 at once + 10 at 100 ms intervals.
    let limited = ratelimit::client(config(), RateLimit::from_client_config(10.0, 3)).unwrap();
    let took = lists(&limited, 13).await;
    assert!(took >= Duration::from_millis(990), "{took:?}");
    let at = api.arrivals_of(|u| u.starts_with(SERVICES));
    assert_eq!(at.len(), 13);
    for w in at[3..].windows(2) {
        // Requests leave at 100 ms intervals once the burst is spent.
        assert!(w[1] - w[0] >= Duration::from_millis(90), "{at:?}");
    }

    // A negative qps: no limit. The same 13 requests take well under the
    // limited run's second.
    let unlimited = ratelimit::client(config(), RateLimit::from_client_config(-1.0, 3)).unwrap();
    let took = lists(&unlimited, 13).await;
    assert!(took < Duration::from_millis(900), "{took:?}");

    // qps 0 and burst 0 are client-go's defaults 5 and 10: the 11th and
    // 12th requests wait for tokens (200 ms each).
    let defaults = ratelimit::client(config(), RateLimit::from_client_config(0.0, 0)).unwrap();
    let took = lists(&defaults, 12).await;
    assert!(took >= Duration::from_millis(390), "{took:?}");
}

/// A watch takes one token when it is opened, however many events its
/// stream then carries.
#[tokio::test]
async fn a_watch_counts_once() {
    use ipvs_proxy::ratelimit::{self, RateLimit};
    let api = StandIn::new();
    api.put(SERVICES, service("a", "one", "10.96.0.1"));
    api.put(NODES, json!({"metadata": {"name": "n1"}}));
    let addr = start(api.clone()).await;
    let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    // Three lists spend the burst; the three watches then open one per
    // 250 ms.
    let client = ratelimit::client(config, RateLimit::from_client_config(4.0, 3)).unwrap();
    let (tx, mut rx) = mpsc::channel(256);
    let task = tokio::spawn(run_cluster(client, "n1".into(), tx));
    let mut listed = 0;
    while listed < 3 {
        if let Change::Listed(_) = recv(&mut rx, Duration::from_secs(20)).await.expect("lists") {
            listed += 1;
        }
    }
    let is_watch = |u: &str| u.contains("watch=true");
    for _ in 0..100 {
        if api.arrivals_of(is_watch).len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut watches = api.arrivals_of(is_watch);
    assert_eq!(watches.len(), 3, "{:?}", api.requests.lock().unwrap());
    watches.sort();
    let lists_at = api.arrivals_of(|u| !is_watch(u));
    let first = *lists_at.iter().min().unwrap();
    for (i, w) in watches.iter().enumerate() {
        let due = Duration::from_millis(250 * (i as u64 + 1));
        assert!(
            *w - first >= due - Duration::from_millis(20),
            "watch {i}: {:?}",
            *w - first
        );
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = api.requests.lock().unwrap().len();
    // 40 events on the open Service watch arrive without new requests,
    // faster than the 4 tokens a second they would need as requests.
    let t0 = Instant::now();
    for i in 0..40 {
        api.put(
            SERVICES,
            service("a", &format!("s{i}"), &format!("10.96.1.{i}")),
        );
    }
    let mut got = 0;
    while got < 40 {
        let c = recv(&mut rx, Duration::from_secs(20))
            .await
            .expect("events");
        if applied_name(&c).is_some() {
            got += 1;
        }
    }
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert_eq!(api.requests.lock().unwrap().len(), before);
    task.abort();
}
