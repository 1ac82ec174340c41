//! Service and EndpointSlice fixtures (JSON, as the API server sends them)
//! and a tiny "agent" loop: ProxyState -> plan -> Dataplane::apply.
#![allow(dead_code)]

use std::time::Instant;

use dataplane::{ApplyReport, Dataplane};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use proxy_core::{plan, DrainBook, Plan, ProxyState};
use serde_json::{json, Value};

/// A Service from a JSON `spec` (and optional `status`).
pub fn service(ns: &str, name: &str, spec: Value, status: Value) -> Service {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"namespace": ns, "name": name, "uid": format!("uid-{ns}-{name}")},
        "spec": spec,
        "status": status,
    }))
    .expect("valid Service fixture")
}

/// One endpoint: address, node, ready.
pub struct Ep<'a>(pub &'a str, pub &'a str, pub bool);

/// An EndpointSlice of `svc` with `ports` as `(name, protocol, port)`.
pub fn slice(
    ns: &str,
    svc: &str,
    name: &str,
    family: &str,
    eps: &[Ep<'_>],
    ports: &[(&str, &str, u16)],
) -> EndpointSlice {
    let endpoints: Vec<Value> = eps
        .iter()
        .map(|Ep(ip, node, ready)| {
            json!({"addresses": [ip], "nodeName": node,
                   "conditions": {"ready": ready, "serving": ready, "terminating": !ready}})
        })
        .collect();
    let ports: Vec<Value> = ports
        .iter()
        .map(|(n, p, port)| json!({"name": n, "protocol": p, "port": port}))
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"namespace": ns, "name": name,
                     "labels": {"kubernetes.io/service-name": svc}},
        "addressType": family,
        "endpoints": endpoints,
        "ports": ports,
    }))
    .expect("valid EndpointSlice fixture")
}

/// Plans against what the node holds and applies; panics on any failure.
pub async fn sync(
    dp: &mut Dataplane,
    state: &ProxyState,
    drains: &mut DrainBook,
) -> (Plan, ApplyReport) {
    let observed = dp.observe().await.expect("observe");
    let p = plan(
        state.desired(),
        &observed,
        &state.policy(),
        drains,
        Instant::now(),
    );
    let report = dp.apply(&p).await.expect("apply");
    assert!(report.is_ok(), "apply failed: {report:?}\nplan: {p:?}");
    (p, report)
}
