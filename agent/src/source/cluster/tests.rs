//! Tests of the cluster source's delta tracking.

use super::*;
use crate::source::{LABEL_HEADLESS, LABEL_SERVICE_PROXY_NAME};

fn svc(ns: &str, name: &str, rv: Option<&str>, labels: &[(&str, &str)]) -> Service {
    Service {
        metadata: ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            resource_version: rv.map(Into::into),
            labels: (!labels.is_empty()).then(|| {
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            }),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn key(ns: &str, name: &str) -> ObjectKey {
    ObjectKey {
        namespace: ns.into(),
        name: name.into(),
    }
}

#[test]
fn relist_turns_into_deltas() {
    let mut t = Tracker::<Service>::new();
    let mut out = Vec::new();
    t.event(Event::Init, &mut out);
    t.event(Event::InitApply(svc("a", "x", Some("1"), &[])), &mut out);
    t.event(Event::InitApply(svc("a", "y", Some("2"), &[])), &mut out);
    assert_eq!(out.len(), 2, "objects are passed on as the list arrives");
    t.event(Event::InitDone, &mut out);
    assert_eq!(out.len(), 3);
    assert_eq!(out[2], Change::Listed(Kind::Service));

    // Relist after 410 Gone: x unchanged, y changed, z new, and one gone.
    out.clear();
    t.event(Event::Apply(svc("a", "w", Some("3"), &[])), &mut out);
    out.clear();
    t.event(Event::Init, &mut out);
    t.event(Event::InitApply(svc("a", "x", Some("1"), &[])), &mut out);
    t.event(Event::InitApply(svc("a", "y", Some("5"), &[])), &mut out);
    t.event(Event::InitApply(svc("a", "z", Some("6"), &[])), &mut out);
    t.event(Event::InitDone, &mut out);
    assert_eq!(
        out,
        vec![
            Change::Applied(Object::Service(Box::new(svc("a", "y", Some("5"), &[])))),
            Change::Applied(Object::Service(Box::new(svc("a", "z", Some("6"), &[])))),
            Change::Deleted(Kind::Service, key("a", "w")),
            Change::Listed(Kind::Service),
        ]
    );
    // Only keys and versions are kept.
    assert_eq!(t.known.len(), 3);
    assert!(t.listing.is_none());
}

#[test]
fn managed_fields_and_last_applied_are_dropped() {
    let mut s = svc("a", "x", Some("1"), &[]);
    s.metadata.managed_fields = Some(vec![Default::default(); 3]);
    s.metadata.annotations = Some(
        [
            (LAST_APPLIED.to_string(), "{\"big\": true}".to_string()),
            ("keep".to_string(), "me".to_string()),
        ]
        .into_iter()
        .collect(),
    );
    let mut t = Tracker::<Service>::new();
    let mut out = Vec::new();
    t.event(Event::Apply(s), &mut out);
    match &out[0] {
        Change::Applied(Object::Service(s)) => {
            assert!(s.metadata.managed_fields.is_none());
            let a = s.metadata.annotations.as_ref().expect("annotations");
            assert_eq!(a.len(), 1);
            assert_eq!(a["keep"], "me");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn selector_and_duplicates() {
    let mut t = Tracker::<Service>::new();
    let mut out = Vec::new();
    t.event(Event::Apply(svc("a", "x", Some("1"), &[])), &mut out);
    t.event(Event::Apply(svc("a", "x", Some("1"), &[])), &mut out);
    assert_eq!(out.len(), 1, "same resourceVersion twice is one change");
    // Gaining the service-proxy-name label means: not ours any more.
    t.event(
        Event::Apply(svc(
            "a",
            "x",
            Some("2"),
            &[(LABEL_SERVICE_PROXY_NAME, "other")],
        )),
        &mut out,
    );
    assert_eq!(out[1], Change::Deleted(Kind::Service, key("a", "x")));
    t.event(
        Event::Apply(svc("a", "h", Some("3"), &[(LABEL_HEADLESS, "")])),
        &mut out,
    );
    assert_eq!(out.len(), 2, "headless-labelled objects are skipped");
    t.event(Event::Delete(svc("a", "nope", None, &[])), &mut out);
    assert_eq!(out.len(), 2, "deleting an unknown object is silent");
}

/// The lean decoding gives what the full decoding and [`slim`] give,
/// for objects as the API server sends them (with managedFields and
/// kubectl's copy) and for odd ones (nulls, missing fields, no
/// metadata).
#[test]
fn lean_decoding_equals_full_decoding_then_slim() {
    let svc = r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web",
        "namespace": "shop", "uid": "0b5e", "resourceVersion": "42", "generation": 3,
        "creationTimestamp": "2026-12-01T10:00:00Z", "labels": {"app": "web"},
        "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"big\": 1}\n",
            "service.kubernetes.io/topology-mode": "Auto"},
        "managedFields": [{"manager": "kubectl", "operation": "Update", "apiVersion": "v1",
            "time": "2026-12-01T10:00:00Z", "fieldsType": "FieldsV1",
            "fieldsV1": {"f:spec": {"f:ports": {"k:{\"port\":80}": {".": {}}}}}}],
        "ownerReferences": [{"apiVersion": "v1", "kind": "X", "name": "o", "uid": "u"}]},
        "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
            "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP",
            "nodePort": 30080}], "sessionAffinity": "None", "externalTrafficPolicy": "Local",
            "healthCheckNodePort": 31000, "unknownField": [1, 2]},
        "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}}"#;
    let slice = r#"{"kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
        "metadata": {"name": "web-1", "namespace": "shop", "resourceVersion": "43",
        "labels": {"kubernetes.io/service-name": "web"},
        "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
        "managedFields": [{"manager": "m", "fieldsV1": {"f:a": {}}}]},
        "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": true},
            "nodeName": "n1", "zone": "z", "hints": {"forZones": [{"name": "z"}]}}]}"#;
    let full = |text: &str| -> Service {
        let mut s: Service = serde_json::from_str(text).unwrap();
        slim(&mut s.metadata);
        s
    };
    let lean = |text: &str| -> Service { serde_json::from_str::<Lean<Service>>(text).unwrap().0 };
    assert_eq!(lean(svc), full(svc));
    let l = lean(svc);
    assert_eq!(l.metadata.annotations.as_ref().map(|a| a.len()), Some(1));
    assert!(l.metadata.managed_fields.is_none());
    assert_eq!(
        l.metadata.owner_references.as_ref().map(|o| o.len()),
        Some(1)
    );
    for odd in [
        r#"{"metadata": null, "spec": null}"#,
        r#"{}"#,
        r#"{"metadata": {"name": "a", "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "x"}}}"#,
        r#"{"metadata": {"name": "a", "annotations": null, "managedFields": null}}"#,
    ] {
        assert_eq!(lean(odd), full(odd), "{odd}");
    }
    let full_slice = |text: &str| -> EndpointSlice {
        let mut s: EndpointSlice = serde_json::from_str(text).unwrap();
        slim(&mut s.metadata);
        s
    };
    let lean_slice = |text: &str| -> EndpointSlice {
        serde_json::from_str::<Lean<EndpointSlice>>(text).unwrap().0
    };
    assert_eq!(lean_slice(slice), full_slice(slice));
    assert!(lean_slice(slice).metadata.annotations.is_none());
    for odd in [
        r#"{"addressType": null, "endpoints": null, "metadata": null}"#,
        r#"{"ports": [{"port": 80}]}"#,
    ] {
        assert_eq!(lean_slice(odd), full_slice(odd), "{odd}");
    }
    // A wrong type is still an error.
    assert!(serde_json::from_str::<Lean<Service>>(r#"{"spec": 3}"#).is_err());
    assert!(serde_json::from_str::<Lean<EndpointSlice>>(r#"{"endpoints": {}}"#).is_err());
}
