//! Rejected objects: counted and logged once per standing rejection, and
//! reported as Warning Events (cluster mode) once per object generation.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use proxy_core::ObjectKind;

use super::{CoreProxier, Kernel};
use crate::events::{ObjectIdentity, RejectionEvent};
use crate::source::Kind;

impl<K: Kernel> CoreProxier<K> {
    pub(super) fn remember_identity(&mut self, kind: Kind, meta: &ObjectMeta) {
        if self.events.is_none() {
            return;
        }
        let key = (
            kind,
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().unwrap_or_default(),
        );
        self.identities.insert(
            key,
            ObjectIdentity {
                uid: meta.uid.clone(),
                resource_version: meta.resource_version.clone(),
                generation: meta.generation,
            },
        );
    }

    pub(super) fn note_rejections(&mut self) {
        let mut now = BTreeSet::new();
        for r in self.state.rejections() {
            let id = format!("{} {} {}", r.object, r.reason.as_str(), r.detail);
            if !self.seen_rejections.contains(&id) {
                tracing::warn!(object = %r.object, reason = r.reason.as_str(), detail = %r.detail, "object rejected");
                self.metrics
                    .rejected_objects_total
                    .with_label_values(&[r.object.kind.as_str(), r.reason.as_str()])
                    .inc();
            }
            now.insert(id);
        }
        self.seen_rejections = now;
        self.emit_events();
    }

    /// One Event per rejection, object uid and generation: a rejection
    /// that stands is not reported again on later syncs.
    fn emit_events(&mut self) {
        let Some(sink) = &self.events else { return };
        let mut now = BTreeSet::new();
        for r in self.state.rejections() {
            let kind = match r.object.kind {
                ObjectKind::Service => Kind::Service,
                ObjectKind::EndpointSlice => Kind::EndpointSlice,
            };
            let key = (kind, r.object.namespace.clone(), r.object.name.clone());
            let ident = self.identities.get(&key).cloned().unwrap_or_default();
            let id = format!(
                "{} {} {} {} {:?}",
                r.object,
                r.reason.as_str(),
                r.detail,
                ident.uid.as_deref().unwrap_or(""),
                ident.generation
            );
            if !self.seen_events.contains(&id) {
                if let Some(ev) = RejectionEvent::new(&r, &ident) {
                    sink.emit(ev);
                }
            }
            now.insert(id);
        }
        self.seen_events = now;
    }
}
