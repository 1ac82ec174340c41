//! Sources of Services, EndpointSlices and our Node: watches on the API
//! server, or a directory of manifests. Both feed the same stream of
//! [`Change`]s to the sync loop.
//!
//! Rules shared by both: kube-proxy's label selector
//! ([`LABEL_SELECTOR`]) on Services and EndpointSlices; a kind is
//! [`Change::Listed`] once its first complete list has been delivered; after
//! a relist, objects that are gone are reported deleted. Errors never delete
//! anything: while the API server is unreachable the node keeps what it has
//! (fail static) and the watches retry with backoff.

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

mod cluster;
mod manifests;

pub use cluster::run_cluster;
pub use manifests::{
    read_manifests, run_manifests, ManifestError, ManifestIndex, Manifests, RefreshReport,
};

/// kube-proxy's selector for Services and EndpointSlices: skip objects
/// handled by another service proxy and headless services' slices.
pub const LABEL_SELECTOR: &str =
    "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless";
/// Label naming the service proxy that handles a Service.
pub const LABEL_SERVICE_PROXY_NAME: &str = "service.kubernetes.io/service-proxy-name";
/// Label the endpoint controllers put on headless services' endpoints.
pub const LABEL_HEADLESS: &str = "service.kubernetes.io/headless";

/// The kinds we follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// core/v1 Service.
    Service,
    /// discovery.k8s.io/v1 EndpointSlice.
    EndpointSlice,
    /// Our own core/v1 Node.
    Node,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Service => "Service",
            Self::EndpointSlice => "EndpointSlice",
            Self::Node => "Node",
        })
    }
}

/// `namespace/name` of an object (namespace empty for Nodes).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ObjectKey {
    fn of(meta: &ObjectMeta) -> Self {
        Self {
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
        }
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

/// An object from a source.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    /// A Service.
    Service(Box<Service>),
    /// An EndpointSlice.
    EndpointSlice(Box<EndpointSlice>),
    /// Our Node.
    Node(Box<Node>),
}

/// One change delivered to the sync loop.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Created or modified.
    Applied(Object),
    /// Deleted (or no longer selected).
    Deleted(Kind, ObjectKey),
    /// The first complete list of this kind has been delivered (sent again
    /// after each relist).
    Listed(Kind),
}

/// Whether kube-proxy's label selector keeps an object with these labels.
pub fn selected(meta: &ObjectMeta) -> bool {
    meta.labels.as_ref().is_none_or(|l| {
        !l.contains_key(LABEL_SERVICE_PROXY_NAME) && !l.contains_key(LABEL_HEADLESS)
    })
}
