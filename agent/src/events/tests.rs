//! Tests of [`super`].

use super::*;
use proxy_core::ObjectRef;

fn rejection(reason: RejectReason, name: &str) -> Rejection {
    Rejection {
        object: ObjectRef {
            kind: ObjectKind::Service,
            namespace: "shop".into(),
            name: name.into(),
        },
        reason,
        whole_object: true,
        detail: "clusterIP \"10.96.0.x\"".into(),
    }
}

#[test]
fn reasons_are_camel_case() {
    assert_eq!(
        camel_case(RejectReason::InvalidClusterIp),
        "InvalidClusterIp"
    );
    assert_eq!(
        camel_case(RejectReason::DuplicateHealthCheckNodePort),
        "DuplicateHealthCheckNodePort"
    );
    for r in RejectReason::ALL {
        let c = camel_case(*r);
        assert!(
            c.chars().all(|ch| ch.is_ascii_alphanumeric()) && c.len() <= 128,
            "{c}"
        );
        assert!(c.starts_with(|ch: char| ch.is_ascii_uppercase()), "{c}");
    }
}

#[test]
fn event_refers_to_the_object() {
    let id = ObjectIdentity {
        uid: Some("u-1".into()),
        resource_version: Some("7".into()),
        generation: Some(2),
    };
    let ev = RejectionEvent::new(&rejection(RejectReason::InvalidClusterIp, "web"), &id)
        .expect("named object");
    assert_eq!(ev.regarding.kind.as_deref(), Some("Service"));
    assert_eq!(ev.regarding.api_version.as_deref(), Some("v1"));
    assert_eq!(ev.regarding.uid.as_deref(), Some("u-1"));
    assert_eq!(ev.reason, "InvalidClusterIp");
    assert_eq!(
        ev.note,
        "Service not programmed: invalid cluster ip (clusterIP \"10.96.0.x\")"
    );
    assert!(RejectionEvent::new(&rejection(RejectReason::MissingMetadata, ""), &id).is_none());
}

#[test]
fn long_notes_are_cut_at_a_char_boundary() {
    let mut r = rejection(RejectReason::TooLarge, "web");
    r.detail = "é".repeat(2000);
    let ev = RejectionEvent::new(&r, &ObjectIdentity::default()).unwrap();
    assert!(ev.note.len() <= 1024 && ev.note.ends_with("..."));
}

#[tokio::test(start_paused = true)]
async fn bucket_allows_a_burst_then_refills() {
    let mut b = Bucket::new(RateLimit {
        burst: 2,
        refill: Duration::from_secs(10),
    });
    assert!(b.take() && b.take());
    assert!(!b.take());
    tokio::time::advance(Duration::from_secs(11)).await;
    assert!(b.take());
    assert!(!b.take());
}

#[tokio::test]
async fn a_full_sink_drops_without_blocking() {
    let (sink, mut rx) = EventSink::channel(1);
    let r = rejection(RejectReason::InvalidClusterIp, "web");
    let ev = RejectionEvent::new(&r, &ObjectIdentity::default()).unwrap();
    sink.emit(ev.clone());
    sink.emit(ev.clone());
    assert_eq!(rx.recv().await, Some(ev));
    assert!(rx.try_recv().is_err());
}
