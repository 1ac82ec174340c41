//! Tests of [`super`].

use std::time::UNIX_EPOCH;

use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A raw HTTP/1.1 GET over a real socket: (status, headers, body).
async fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read");
    let text = String::from_utf8(buf).expect("utf8");
    let (head, body) = text.split_once("\r\n\r\n").expect("head/body");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status");
    (status, head.to_lowercase(), body.to_string())
}

async fn start(handler: Handler) -> (SocketAddr, JoinHandle<()>) {
    let l = bind("127.0.0.1:0".parse().unwrap()).expect("bind");
    let addr = l.local_addr().expect("addr");
    (
        addr,
        tokio::spawn(serve(l, handler, CancellationToken::new())),
    )
}

fn fake_clock(start: SystemTime) -> (Clock, Arc<Mutex<SystemTime>>) {
    let t = Arc::new(Mutex::new(start));
    let t2 = t.clone();
    (Arc::new(move || *t2.lock().unwrap()), t)
}

#[test]
fn go_time_format() {
    assert_eq!(go_time_string(None), "0001-01-01 00:00:00 +0000 UTC");
    let t = UNIX_EPOCH + Duration::new(1_700_000_000, 120_000_000);
    assert_eq!(go_time_string(Some(t)), "2023-11-14 22:13:20.12 +0000 UTC");
    let t = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
    assert_eq!(go_time_string(Some(t)), "2000-02-29 00:00:00 +0000 UTC");
}

#[tokio::test]
async fn metrics_server_serves_metrics_and_proxy_mode() {
    let m = Metrics::new();
    m.service_changes_total.inc_by(3);
    let (addr, task) = start(metrics_handler(m)).await;
    let (code, head, body) = get(addr, "/metrics").await;
    assert_eq!(code, 200);
    assert!(head.contains("content-type: text/plain; version=0.0.4"));
    assert!(body.contains("kubeproxy_sync_proxy_rules_service_changes_total 3"));
    let (code, _, body) = get(addr, "/proxyMode").await;
    assert_eq!((code, body.as_str()), (200, "ipvs"));
    assert_eq!(get(addr, "/nope").await.0, 404);
    task.abort();
}

#[tokio::test]
async fn healthz_and_livez_follow_kube_proxy_rules() {
    let m = Metrics::new();
    let t0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let (clock, now) = fake_clock(t0);
    let health = Arc::new(HealthState::with_clock(
        Duration::from_secs(60),
        m.clone(),
        clock,
    ));
    let (addr, task) = start(healthz_handler(health.clone())).await;

    // Starting up: healthy even with a queued update.
    health.queued_update();
    let (code, head, body) = get(addr, "/healthz").await;
    assert_eq!(code, 200, "{body}");
    assert!(head.contains("content-type: application/json"));
    assert!(head.contains("x-content-type-options: nosniff"));
    assert_eq!(
            body,
            "{\"lastUpdated\": \"2023-11-14 22:13:20 +0000 UTC\",\"currentTime\": \"2023-11-14 22:13:20 +0000 UTC\", \"nodeEligible\": true}"
        );

    // First sync done, then an update waits longer than the timeout.
    health.updated();
    *now.lock().unwrap() = t0 + Duration::from_secs(10);
    health.queued_update();
    assert_eq!(get(addr, "/livez").await.0, 200);
    *now.lock().unwrap() = t0 + Duration::from_secs(71);
    let (code, _, body) = get(addr, "/healthz").await;
    assert_eq!(code, 503);
    assert!(
        body.starts_with("{\"lastUpdated\": \"2023-11-14 22:13:20 +0000 UTC\""),
        "{body}"
    );
    let (code, _, body) = get(addr, "/livez").await;
    assert_eq!(code, 503);
    assert!(!body.contains("nodeEligible"));

    // Synced again: healthy; then the node gets the deletion taint:
    // /healthz is 503 but /livez stays 200.
    health.updated();
    assert_eq!(get(addr, "/healthz").await.0, 200);
    let node = Node {
        spec: Some(k8s_openapi::api::core::v1::NodeSpec {
            taints: Some(vec![k8s_openapi::api::core::v1::Taint {
                key: TO_BE_DELETED_TAINT.into(),
                effect: "NoSchedule".into(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    health.sync_node(Some(&node));
    let (code, _, body) = get(addr, "/healthz").await;
    assert_eq!(code, 503);
    assert!(body.ends_with("\"nodeEligible\": false}"), "{body}");
    assert_eq!(get(addr, "/livez").await.0, 200);

    let text = m.render();
    assert!(
        text.contains("kubeproxy_proxy_healthz_total{code=\"200\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("kubeproxy_proxy_healthz_total{code=\"503\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("kubeproxy_proxy_livez_total{code=\"200\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("kubeproxy_proxy_livez_total{code=\"503\"} 1"),
        "{text}"
    );
    task.abort();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

#[tokio::test]
async fn service_health_check_ports() {
    let m = Metrics::new();
    let health = Arc::new(HealthState::new(Duration::from_secs(60), m));
    let servers = ServiceHealthServers::new(vec!["127.0.0.1".parse().unwrap()], health.clone());
    let svc = ServiceRef {
        namespace: "default".into(),
        name: "web".into(),
    };
    let port = free_port();
    let errors = servers.sync_services(&BTreeMap::from([(svc.clone(), port)]));
    assert!(errors.is_empty(), "{errors:?}");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));

    let (code, head, body) = get(addr, "/").await;
    assert_eq!(code, 503);
    assert!(
        head.contains("x-load-balancing-endpoint-weight: 0"),
        "{head}"
    );
    assert_eq!(
            body,
            "{\n\t\"service\": {\n\t\t\"namespace\": \"default\",\n\t\t\"name\": \"web\"\n\t},\n\t\"localEndpoints\": 0,\n\t\"serviceProxyHealthy\": true\n}"
        );

    servers.sync_endpoints(&BTreeMap::from([(svc.clone(), 3)]));
    let (code, head, body) = get(addr, "/any/path").await;
    assert_eq!(code, 200);
    assert!(
        head.contains("x-load-balancing-endpoint-weight: 3"),
        "{head}"
    );
    assert!(body.contains("\"localEndpoints\": 3"));

    // A port already taken is reported, not fatal.
    let other = ServiceRef {
        namespace: "default".into(),
        name: "clash".into(),
    };
    let errors = servers.sync_services(&BTreeMap::from([
        (svc.clone(), port),
        (other.clone(), port),
    ]));
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].service, other);
    assert_eq!(servers.open(), BTreeMap::from([(svc.clone(), port)]));

    // Removing the service closes the port.
    servers.sync_services(&BTreeMap::new());
    let mut closed = false;
    for _ in 0..50 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(closed, "health check port still open after removal");

    // Default: every address of both families (IPv4 reached through the
    // dual-stack socket, or the IPv4 fallback).
    let all = ServiceHealthServers::new(vec![], health);
    let port = free_port();
    assert!(all
        .sync_services(&BTreeMap::from([(svc.clone(), port)]))
        .is_empty());
    let (code, _, _) = get(SocketAddr::from(([127, 0, 0, 1], port)), "/").await;
    assert_eq!(code, 503);
}
