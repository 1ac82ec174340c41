//! Lookup keys of the engine's indexes: slice ids and borrowed Service
//! names.

use std::sync::Arc;

use crate::model::ServiceName;

/// A slice's namespace and name; the name is shared with the Service's map
/// of slices (one allocation per slice name).
pub(super) type SliceId = (String, Arc<str>);

pub(super) fn slice_id(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> SliceId {
    (
        meta.namespace.clone().unwrap_or_default(),
        Arc::from(meta.name.as_deref().unwrap_or("")),
    )
}

/// A Service name as a lookup key, so that the indexes keyed by
/// `Arc<ServiceName>` can be searched with borrowed strings (no
/// `ServiceName` built per lookup). Hashes and compares exactly as
/// `ServiceName` does (namespace, then name), as `Borrow` requires.
pub(super) trait NameKey {
    fn parts(&self) -> (&str, &str);
}

impl NameKey for (&str, &str) {
    fn parts(&self) -> (&str, &str) {
        (self.0, self.1)
    }
}

impl NameKey for ServiceName {
    fn parts(&self) -> (&str, &str) {
        (&self.namespace, &self.name)
    }
}

impl<'a> std::borrow::Borrow<dyn NameKey + 'a> for Arc<ServiceName> {
    fn borrow(&self) -> &(dyn NameKey + 'a) {
        &**self
    }
}

impl std::hash::Hash for dyn NameKey + '_ {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        let (namespace, name) = self.parts();
        namespace.hash(h);
        name.hash(h);
    }
}

impl PartialEq for dyn NameKey + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn NameKey + '_ {}
