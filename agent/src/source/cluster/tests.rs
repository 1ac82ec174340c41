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
