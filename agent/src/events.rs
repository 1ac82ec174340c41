//! Kubernetes Events for rejected objects (cluster mode only).
//!
//! The sync loop hands each newly rejected object to an [`EventSink`]
//! without waiting: a bounded channel, and an event is dropped (logged at
//! debug) when it is full. A spawned task ([`run`]) posts them as
//! events.k8s.io/v1 `Warning` Events regarding the rejected object, at most
//! [`RateLimit::burst`] at once and then one per [`RateLimit::refill`];
//! events over the limit are dropped and logged. A failed post is only
//! logged. With `--manifests` there is no API server and no sink: rejections
//! are logged and counted only.

use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::Client;
use proxy_core::{ObjectKind, RejectReason, Rejection};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// `reportingController` of our Events.
pub const REPORTING_CONTROLLER: &str = "ipvs-proxy";

/// `action` of our Events.
pub const ACTION: &str = "Program";

/// Identity of a rejected object as the API server knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectIdentity {
    /// `metadata.uid`.
    pub uid: Option<String>,
    /// `metadata.resourceVersion`.
    pub resource_version: Option<String>,
    /// `metadata.generation`.
    pub generation: Option<i64>,
}

/// One Event to post.
#[derive(Debug, Clone, PartialEq)]
pub struct RejectionEvent {
    /// The rejected object.
    pub regarding: ObjectReference,
    /// CamelCase reason (`InvalidClusterIp`).
    pub reason: String,
    /// Human-readable message.
    pub note: String,
}

impl RejectionEvent {
    /// The Event for a rejection of the object with this identity; `None`
    /// when the object has no name or namespace to refer to.
    pub fn new(r: &Rejection, id: &ObjectIdentity) -> Option<Self> {
        if r.object.name.is_empty() || r.object.namespace.is_empty() {
            return None;
        }
        let api_version = match r.object.kind {
            ObjectKind::Service => "v1",
            ObjectKind::EndpointSlice => "discovery.k8s.io/v1",
        };
        let what = if r.whole_object {
            "not programmed"
        } else {
            "partly programmed"
        };
        let mut note = format!(
            "{} {}: {} ({})",
            r.object.kind.as_str(),
            what,
            r.reason.as_str().replace('_', " "),
            r.detail
        );
        // events.k8s.io/v1 caps the note at 1 kB.
        if note.len() > 1024 {
            let mut end = 1021;
            while !note.is_char_boundary(end) {
                end -= 1;
            }
            note.truncate(end);
            note.push_str("...");
        }
        Some(Self {
            regarding: ObjectReference {
                api_version: Some(api_version.into()),
                kind: Some(r.object.kind.as_str().into()),
                namespace: Some(r.object.namespace.clone()),
                name: Some(r.object.name.clone()),
                uid: id.uid.clone(),
                resource_version: id.resource_version.clone(),
                field_path: None,
            },
            reason: camel_case(r.reason),
            note,
        })
    }
}

/// `invalid_cluster_ip` -> `InvalidClusterIp`.
pub fn camel_case(reason: RejectReason) -> String {
    reason
        .as_str()
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

/// The sending side, held by the proxier. Never blocks.
#[derive(Debug, Clone)]
pub struct EventSink {
    tx: mpsc::Sender<RejectionEvent>,
}

impl EventSink {
    /// A sink and its receiving end, with room for `capacity` events.
    pub fn channel(capacity: usize) -> (Self, mpsc::Receiver<RejectionEvent>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (Self { tx }, rx)
    }

    /// Queues an event; drops it when the queue is full or closed.
    pub fn emit(&self, ev: RejectionEvent) {
        if let Err(e) = self.tx.try_send(ev) {
            tracing::debug!(error = %e, "rejection event dropped");
        }
    }
}

/// How many events are posted: `burst` at once, then one per `refill`.
#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    /// Events that may be posted back to back.
    pub burst: u32,
    /// Time to earn one more.
    pub refill: Duration,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            burst: 25,
            refill: Duration::from_secs(5),
        }
    }
}

struct Bucket {
    limit: RateLimit,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            tokens: f64::from(limit.burst),
            last: Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        let refill = self.limit.refill.as_secs_f64();
        if refill > 0.0 {
            let earned = now.duration_since(self.last).as_secs_f64() / refill;
            self.tokens = (self.tokens + earned).min(f64::from(self.limit.burst));
        } else {
            self.tokens = f64::from(self.limit.burst);
        }
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Posts the queued events until the sink is dropped. `node` is the
/// `reportingInstance`.
pub async fn run(
    client: Client,
    node: String,
    mut rx: mpsc::Receiver<RejectionEvent>,
    limit: RateLimit,
) {
    let recorder = Recorder::new(
        client,
        Reporter {
            controller: REPORTING_CONTROLLER.into(),
            instance: Some(node),
        },
    );
    let mut bucket = Bucket::new(limit);
    while let Some(ev) = rx.recv().await {
        let object = format!(
            "{}/{}",
            ev.regarding.namespace.as_deref().unwrap_or(""),
            ev.regarding.name.as_deref().unwrap_or("")
        );
        if !bucket.take() {
            tracing::debug!(%object, reason = %ev.reason, "rejection event over the rate limit; dropped");
            continue;
        }
        let event = Event {
            type_: EventType::Warning,
            reason: ev.reason.clone(),
            note: Some(ev.note.clone()),
            action: ACTION.into(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&event, &ev.regarding).await {
            tracing::warn!(%object, reason = %ev.reason, error = %e, "cannot post the rejection event");
        }
    }
}

#[cfg(test)]
mod tests;
