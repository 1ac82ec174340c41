//! Why an object, a port or an address was not (fully) programmed.

use std::fmt;

/// The kind of object a rejection is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKind {
    /// A core/v1 Service.
    Service,
    /// A discovery.k8s.io/v1 EndpointSlice.
    EndpointSlice,
}

impl ObjectKind {
    /// `Service` or `EndpointSlice`.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Service => "Service",
            ObjectKind::EndpointSlice => "EndpointSlice",
        }
    }
}

/// A reference to the rejected object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectRef {
    /// Service or EndpointSlice.
    pub kind: ObjectKind,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind.as_str(), self.namespace, self.name)
    }
}

/// Why something was rejected. [`RejectReason::as_str`] is a stable label
/// for metrics (`reason="..."`); new reasons may be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum RejectReason {
    /// The object has no name or namespace.
    MissingMetadata,
    /// A ClusterIP (or `clusterIPs` entry) is not an IP address.
    InvalidClusterIp,
    /// An externalIP is not an IP address.
    InvalidExternalIp,
    /// A load-balancer ingress IP is not an IP address.
    InvalidLoadBalancerIp,
    /// A `loadBalancerSourceRanges` entry is not a CIDR.
    InvalidSourceRange,
    /// A port, nodePort or healthCheckNodePort outside 1..=65535.
    PortOutOfRange,
    /// The protocol is not TCP, UDP or SCTP.
    UnsupportedProtocol,
    /// Two ports of one Service with the same protocol and port, or the same name.
    DuplicatePort,
    /// Another Service already claims this virtual server (same address,
    /// protocol and port, or same node port); the older Service keeps it.
    DuplicateVirtualServer,
    /// Another Service already claims this health-check node port.
    DuplicateHealthCheckNodePort,
    /// An endpoint with no addresses.
    EndpointWithoutAddress,
    /// An endpoint address that is not an IP address of the slice's type.
    InvalidEndpointAddress,
    /// An EndpointSlice without the `kubernetes.io/service-name` label.
    MissingServiceName,
    /// An EndpointSlice whose `addressType` is not IPv4 or IPv6 (FQDN).
    UnsupportedAddressType,
    /// More ports, endpoints or addresses than [`crate::Limits`] allow.
    TooLarge,
    /// The scheduler annotation names an unknown scheduler or flag; the
    /// node default is used instead.
    InvalidSchedulerAnnotation,
    /// An `externalTrafficPolicy: Local` port without a nodePort whose index
    /// is too large for a pod-source firewall mark; pods on this node reach
    /// only the local endpoints through its external addresses.
    NoPodFwmark,
    /// `sessionAffinityConfig.clientIP.timeoutSeconds` outside the API
    /// server's 1..=86400; the default (10800 s) is used instead.
    InvalidSessionAffinityTimeout,
}

impl RejectReason {
    /// A stable snake_case label, for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::MissingMetadata => "missing_metadata",
            RejectReason::InvalidClusterIp => "invalid_cluster_ip",
            RejectReason::InvalidExternalIp => "invalid_external_ip",
            RejectReason::InvalidLoadBalancerIp => "invalid_load_balancer_ip",
            RejectReason::InvalidSourceRange => "invalid_source_range",
            RejectReason::PortOutOfRange => "port_out_of_range",
            RejectReason::UnsupportedProtocol => "unsupported_protocol",
            RejectReason::DuplicatePort => "duplicate_port",
            RejectReason::DuplicateVirtualServer => "duplicate_virtual_server",
            RejectReason::DuplicateHealthCheckNodePort => "duplicate_health_check_node_port",
            RejectReason::EndpointWithoutAddress => "endpoint_without_address",
            RejectReason::InvalidEndpointAddress => "invalid_endpoint_address",
            RejectReason::MissingServiceName => "missing_service_name",
            RejectReason::UnsupportedAddressType => "unsupported_address_type",
            RejectReason::TooLarge => "too_large",
            RejectReason::InvalidSchedulerAnnotation => "invalid_scheduler_annotation",
            RejectReason::NoPodFwmark => "no_pod_fwmark",
            RejectReason::InvalidSessionAffinityTimeout => "invalid_session_affinity_timeout",
        }
    }

    /// Every reason, for pre-registering metric label values.
    pub const ALL: &'static [RejectReason] = &[
        RejectReason::MissingMetadata,
        RejectReason::InvalidClusterIp,
        RejectReason::InvalidExternalIp,
        RejectReason::InvalidLoadBalancerIp,
        RejectReason::InvalidSourceRange,
        RejectReason::PortOutOfRange,
        RejectReason::UnsupportedProtocol,
        RejectReason::DuplicatePort,
        RejectReason::DuplicateVirtualServer,
        RejectReason::DuplicateHealthCheckNodePort,
        RejectReason::EndpointWithoutAddress,
        RejectReason::InvalidEndpointAddress,
        RejectReason::MissingServiceName,
        RejectReason::UnsupportedAddressType,
        RejectReason::TooLarge,
        RejectReason::InvalidSchedulerAnnotation,
        RejectReason::NoPodFwmark,
        RejectReason::InvalidSessionAffinityTimeout,
    ];
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One rejected object, port, address or endpoint. The rest of the object
/// (and every other object) is still programmed unless `whole_object`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Rejection {
    /// The object.
    pub object: ObjectRef,
    /// Why.
    pub reason: RejectReason,
    /// True when nothing of the object is programmed.
    pub whole_object: bool,
    /// What exactly (port name, address, ...), human-readable.
    pub detail: String,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} ({})", self.object, self.reason, self.detail)
    }
}
