//! Kubernetes Services -> desired IPVS node state, and minimal plans.
//!
//! Pure: no I/O, no clock (callers pass `now`), no kernel. Data flows one way:
//!
//! ```text
//! Service / EndpointSlice events ─▶ ProxyState (incremental, per Service)
//!                                     │ desired(): DesiredState
//!                                     ▼
//! kernel dump (ipvs-rs) ─▶ Observed ─▶ plan() / plan_changes() ─▶ Plan (ordered ops)
//! ```
//!
//! - [`DesiredState`]: IPVS virtual servers with real servers and owners,
//!   addresses for the dummy interface, packet-filter facts ([`FilterFacts`]).
//! - [`Plan`]: bind addresses, IPVS [`ipvs::Op`]s (hand them to
//!   `ipvs::Handle::apply`), filter changes, unbind addresses.
//! - [`Rejection`]: what was not programmed and why ([`RejectReason::as_str`]
//!   is a stable metrics label).
//!
//! The semantics and every deliberate difference from kube-proxy's IPVS mode
//! are written down in `docs/semantics.md`.

pub mod config;
pub mod fwmark;
pub mod model;
mod parse;
pub mod plan;
pub mod reject;
mod render;
mod state;
mod translate;
mod vecmap;

pub use config::{Config, IpFamily, Limits, LocalDetect, NodeFacts, NodePortAddresses, Scheduler};
pub use model::{
    DesiredRealServer, DesiredState, DesiredVirtualServer, FilterEntry, FilterFacts, HairpinFact,
    HealthCheckFact, Masquerade, NodePortFact, RealServers, ServiceName, ServicePortFact,
    ServicePortName, VipKind,
};
pub use parse::{
    DEFAULT_AFFINITY_TIMEOUT, SCHEDULER_ANNOTATION, SCHEDULER_FLAGS_ANNOTATION, SERVICE_NAME_LABEL,
    SERVICE_PROXY_NAME_LABEL,
};
pub use plan::real_server_matches;
pub use plan::{
    plan, plan_changes, Changes, DrainBook, FilterOp, ModelError, Observed, ObservedVirtualServer,
    Plan, PlanOp, PlanPolicy,
};
pub use reject::{ObjectKind, ObjectRef, RejectReason, Rejection};
pub use render::render_ipvsadm_save;
pub use state::{desired_from_scratch, ProxyState};

/// A configuration value the core cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A `nodePortAddresses` entry that is neither a CIDR nor `primary`.
    #[error("nodePortAddresses: {0:?} is neither a CIDR nor \"primary\"")]
    InvalidNodePortAddress(String),
    /// A scheduler name the kernel does not ship.
    #[error("unknown IPVS scheduler {0:?} (known: {known})", known = ipvs::SCHEDULERS.join(", "))]
    UnknownScheduler(String),
    /// A scheduler flag ipvsadm does not know.
    #[error("unknown IPVS scheduler flag {0:?} (known: sh-fallback, sh-port, mh-fallback, mh-port, flag-1, flag-2, flag-3)")]
    UnknownSchedulerFlag(String),
}
