//! The IPVS generic-netlink codec: pure, no sockets.
//!
//! One enum per attribute space ([`ServiceAttribute`], [`DestAttribute`],
//! [`DaemonAttribute`], [`StatsAttribute`], [`IpvsAttribute`]), each keeping
//! attributes it does not know as `Other`, and [`IpvsMessage`] implementing
//! [`netlink_packet_generic::GenlFamily`]. Functions map the crate's value
//! types to and from attribute lists. Wire quirks live here: ports are in
//! network byte order except the sync daemon's multicast port, addresses are
//! a 16-byte `union nf_inet_addr` with a separate family, the IPv4
//! persistence netmask is a `__be32`, service flags travel as `{flags, mask}`.

pub mod constants;
mod daemon;
mod dest;
mod message;
mod nla;
mod service;
mod stats;
pub(crate) mod write;

pub use daemon::{daemon_attrs, sync_daemon_from_attrs, DaemonAttribute};
pub use dest::{dest_attrs, dest_key_attrs, real_server_from_attrs, DestAttribute};
pub use message::{IpvsAttribute, IpvsCommand, IpvsMessage};
pub use service::{service_attrs, service_key_attrs, virtual_server_from_attrs, ServiceAttribute};
pub use stats::{stats_from_attrs, stats_to_attrs, StatsAttribute};

#[cfg(test)]
mod tests;
