//! The per-Service health-check servers (`externalTrafficPolicy: Local`),
//! kept in step with the desired state after each sync.

use std::collections::BTreeMap;

use super::{CoreProxier, Kernel};
use crate::http::ServiceRef;

impl<K: Kernel> CoreProxier<K> {
    pub(super) fn sync_health_checks(&self) {
        let Some(hc) = &self.health_checks else {
            return;
        };
        let mut ports = BTreeMap::new();
        let mut counts = BTreeMap::new();
        for f in self.state.desired().filter.health_checks() {
            let r = ServiceRef {
                namespace: f.service.namespace.clone(),
                name: f.service.name.clone(),
            };
            ports.insert(r.clone(), f.port);
            counts.insert(r, f.local_endpoints as usize);
        }
        for e in hc.sync_services(&ports) {
            tracing::warn!(error = %e, "health check port not opened; retrying on the next sync");
        }
        hc.sync_endpoints(&counts);
    }
}
