//! Chainable fixtures for Services, EndpointSlices, nodes and configs.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{
    ClientIPConfig, LoadBalancerIngress, LoadBalancerStatus, Service, ServicePort, ServiceSpec,
    ServiceStatus, SessionAffinityConfig,
};
use k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointHints, EndpointPort, EndpointSlice, ForZone,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use proxy_core::{Config, NodeFacts};

pub struct Svc(pub Service);

impl Svc {
    /// A ClusterIP Service `ns/name` with the given cluster IP.
    pub fn new(ns: &str, name: &str, cluster_ip: &str) -> Self {
        Svc(Service {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some(cluster_ip.into()),
                cluster_ips: Some(vec![cluster_ip.into()]),
                type_: Some("ClusterIP".into()),
                ..Default::default()
            }),
            status: None,
        })
    }
    fn spec(&mut self) -> &mut ServiceSpec {
        self.0.spec.get_or_insert_with(Default::default)
    }
    pub fn cluster_ips(mut self, ips: &[&str]) -> Self {
        self.spec().cluster_ip = ips.first().map(|s| s.to_string());
        self.spec().cluster_ips = Some(ips.iter().map(|s| s.to_string()).collect());
        self
    }
    pub fn type_(mut self, t: &str) -> Self {
        self.spec().type_ = Some(t.into());
        self
    }
    pub fn port(mut self, name: &str, proto: &str, port: i32) -> Self {
        self.spec()
            .ports
            .get_or_insert_with(Vec::new)
            .push(ServicePort {
                name: (!name.is_empty()).then(|| name.to_string()),
                protocol: Some(proto.into()),
                port,
                ..Default::default()
            });
        self
    }
    /// Sets the nodePort of the last port (and type NodePort unless LB).
    pub fn node_port(mut self, np: i32) -> Self {
        if self.spec().type_.as_deref() != Some("LoadBalancer") {
            self.spec().type_ = Some("NodePort".into());
        }
        if let Some(p) = self.spec().ports.as_mut().and_then(|p| p.last_mut()) {
            p.node_port = Some(np);
        }
        self
    }
    pub fn external_ip(mut self, ip: &str) -> Self {
        self.spec()
            .external_ips
            .get_or_insert_with(Vec::new)
            .push(ip.into());
        self
    }
    pub fn lb_ingress(mut self, ip: &str, mode: Option<&str>) -> Self {
        self.spec().type_ = Some("LoadBalancer".into());
        let st = self.0.status.get_or_insert_with(ServiceStatus::default);
        st.load_balancer
            .get_or_insert_with(LoadBalancerStatus::default)
            .ingress
            .get_or_insert_with(Vec::new)
            .push(LoadBalancerIngress {
                ip: Some(ip.into()),
                ip_mode: mode.map(String::from),
                ..Default::default()
            });
        self
    }
    pub fn source_range(mut self, cidr: &str) -> Self {
        self.spec()
            .load_balancer_source_ranges
            .get_or_insert_with(Vec::new)
            .push(cidr.into());
        self
    }
    pub fn etp_local(mut self, hc_port: Option<i32>) -> Self {
        self.spec().external_traffic_policy = Some("Local".into());
        self.spec().health_check_node_port = hc_port;
        self
    }
    pub fn itp_local(mut self) -> Self {
        self.spec().internal_traffic_policy = Some("Local".into());
        self
    }
    pub fn affinity(mut self, timeout: Option<i32>) -> Self {
        self.spec().session_affinity = Some("ClientIP".into());
        self.spec().session_affinity_config = timeout.map(|t| SessionAffinityConfig {
            client_ip: Some(ClientIPConfig {
                timeout_seconds: Some(t),
            }),
        });
        self
    }
    pub fn publish_not_ready(mut self) -> Self {
        self.spec().publish_not_ready_addresses = Some(true);
        self
    }
    pub fn annotation(mut self, k: &str, v: &str) -> Self {
        self.0
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(k.into(), v.into());
        self
    }
    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.0
            .metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(k.into(), v.into());
        self
    }
    pub fn created(mut self, secs: i64) -> Self {
        self.0.metadata.creation_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::from_second(secs).unwrap(),
            ));
        self
    }
    pub fn build(self) -> Service {
        self.0
    }
}

pub struct Slice(pub EndpointSlice);

impl Slice {
    /// An IPv4 slice `ns/name` of Service `svc`.
    pub fn new(ns: &str, name: &str, svc: &str) -> Self {
        Slice(EndpointSlice {
            address_type: "IPv4".into(),
            endpoints: Vec::new(),
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                labels: Some(
                    [("kubernetes.io/service-name".to_string(), svc.to_string())]
                        .into_iter()
                        .collect(),
                ),
                ..Default::default()
            },
            ports: None,
        })
    }
    pub fn address_type(mut self, t: &str) -> Self {
        self.0.address_type = t.into();
        self
    }
    pub fn port(mut self, name: &str, proto: &str, port: i32) -> Self {
        self.0
            .ports
            .get_or_insert_with(Vec::new)
            .push(EndpointPort {
                name: (!name.is_empty()).then(|| name.to_string()),
                protocol: Some(proto.into()),
                port: Some(port),
                app_protocol: None,
            });
        self
    }
    /// A ready endpoint on `node`.
    pub fn ep(self, addr: &str, node: &str) -> Self {
        self.ep_cond(addr, node, Some(true), Some(true), Some(false))
    }
    pub fn ep_cond(
        mut self,
        addr: &str,
        node: &str,
        ready: Option<bool>,
        serving: Option<bool>,
        terminating: Option<bool>,
    ) -> Self {
        self.0.endpoints.push(Endpoint {
            addresses: vec![addr.into()],
            conditions: Some(EndpointConditions {
                ready,
                serving,
                terminating,
            }),
            node_name: (!node.is_empty()).then(|| node.to_string()),
            ..Default::default()
        });
        self
    }
    /// Zone hints on the last endpoint.
    pub fn hints(mut self, zones: &[&str]) -> Self {
        if let Some(e) = self.0.endpoints.last_mut() {
            let h = e.hints.get_or_insert_with(EndpointHints::default);
            h.for_zones = Some(
                zones
                    .iter()
                    .map(|z| ForZone {
                        name: z.to_string(),
                    })
                    .collect(),
            );
        }
        self
    }
    /// Node hints on the last endpoint.
    pub fn node_hints(mut self, nodes: &[&str]) -> Self {
        if let Some(e) = self.0.endpoints.last_mut() {
            let h = e.hints.get_or_insert_with(Default::default);
            h.for_nodes = Some(
                nodes
                    .iter()
                    .map(|n| k8s_openapi::api::discovery::v1::ForNode {
                        name: n.to_string(),
                    })
                    .collect(),
            );
        }
        self
    }
    pub fn raw_ep(mut self, addresses: Vec<String>) -> Self {
        self.0.endpoints.push(Endpoint {
            addresses,
            ..Default::default()
        });
        self
    }
    pub fn build(self) -> EndpointSlice {
        self.0
    }
}

pub const NODE: &str = "node-a";
pub const NODE_IP: &str = "192.168.0.10";
pub const NODE_IP6: &str = "fd00::10";

/// Node `node-a` in zone `zone-a` with 192.168.0.10, fd00::10 and loopback.
pub fn node() -> NodeFacts {
    NodeFacts {
        name: NODE.into(),
        labels: [(
            "topology.kubernetes.io/zone".to_string(),
            "zone-a".to_string(),
        )]
        .into_iter()
        .collect(),
        addresses: [NODE_IP, NODE_IP6, "127.0.0.1", "::1"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect(),
        primary_ips: vec![NODE_IP.parse().unwrap()],
    }
}

pub fn config() -> Config {
    Config {
        local_detect: proxy_core::LocalDetect::ClusterCidr(vec!["10.0.0.0/16".parse().unwrap()]),
        ..Config::default()
    }
}

/// The benchmark cluster's Service `i`: `bench/svc-{i}`, ClusterIP
/// 10.96.0.0 + i, one TCP port 80 named `http`.
pub fn bench_svc(i: u32) -> Service {
    let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + i);
    Svc::new("bench", &format!("svc-{i}"), &ip.to_string())
        .port("http", "TCP", 80)
        .build()
}

/// The benchmark cluster's EndpointSlice of Service `i`: `eps` ready
/// endpoints (port 8080) from 10.128.0.0 + 16 i + `shift`; every third, from
/// the first, on this node (`node-a`), the others on `node-b`.
pub fn bench_slice(i: u32, eps: u32, shift: u32) -> EndpointSlice {
    let mut s =
        Slice::new("bench", &format!("svc-{i}-abc"), &format!("svc-{i}")).port("http", "TCP", 8080);
    for j in 0..eps {
        let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 128, 0, 0)) + i * 16 + j + shift);
        s = s.ep(
            &ip.to_string(),
            if j % 3 == 0 { "node-a" } else { "node-b" },
        );
    }
    s.build()
}

/// The benchmark cluster: `n` Services with 10 endpoints each.
pub fn bench_cluster(n: u32) -> (Vec<Service>, Vec<EndpointSlice>) {
    (
        (0..n).map(bench_svc).collect(),
        (0..n).map(|i| bench_slice(i, 10, 0)).collect(),
    )
}
