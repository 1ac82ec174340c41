//! Tests of [`super`].

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
