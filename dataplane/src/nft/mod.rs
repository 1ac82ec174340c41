//! The one nftables table of ours (`inet ipvs-proxy`), from proxy-core's
//! packet-filter facts. Cut along its seams:
//! - [`spec`]: what the table holds, in proxy-core's and ipvs-rs's types:
//!   the skeleton's inputs ([`Skeleton`]) and the elements of each fact;
//! - [`render`]: nft text - the skeleton, the atomic replacement, element
//!   updates (written only, never parsed back);
//! - [`update`]: the table's state in memory; a plan's `FilterOp`s become
//!   exactly the changed elements ([`FilterState::stage`]);
//! - [`exec`]: running `nft -f -` (tokio, with a deadline): the table's
//!   replacement and changes to interval sets;
//! - [`netlink`]: element changes of the other sets as one nf_tables
//!   transaction over nfnetlink (no process per change).
//!
//! How it fits around IPVS (hook priorities in parentheses):
//! - IPVS schedules packets to local VIPs in LOCAL_IN (priority 98) and packets from
//!   local processes in LOCAL_OUT (priority -98); replies are un-NATed in FORWARD.
//! - `mark-pre` (prerouting, mangle -150) and `mark-out` (output, route
//!   type, mangle) run before IPVS: they set the conntrack mark bit
//!   [`Skeleton::masquerade_bit`] on new connections that must be
//!   source-NATed, and set the packet mark that selects a firewall-mark
//!   virtual server for pods (and the node) reaching an
//!   `externalTrafficPolicy: Local` VIP. The conntrack mark is used for
//!   masquerading so that it never disturbs the packet mark IPVS matches.
//! - `filter-in` (input, filter 0) runs before IPVS's LOCAL_IN hook: load
//!   balancer source ranges, health-check node ports, and rejecting new
//!   connections to service IPs on ports that are not services.
//! - `nat-post` (postrouting, srcnat 100): masquerade marked connections
//!   (this works for IPVS traffic because `net.ipv4.vs.conntrack=1` keeps
//!   the connection's conntrack entry) and hairpin connections (a pod
//!   reaching itself through a Service).
//! - `filter-fwd` (forward, filter): accept marked and established
//!   traffic. In nftables an accept only ends our own chain; it cannot
//!   override a drop in another table.

pub mod exec;
pub mod netlink;
pub mod render;
pub mod spec;
pub mod update;

pub use exec::{Nft, NftStats, DEFAULT_NFT_TIMEOUT};
pub use render::{render_delta, render_replace, render_skeleton};
pub use spec::{Element, Key, Set, Skeleton};
pub use update::{Delta, FilterChange, FilterState, Staged};

/// Our table's family and name.
pub const DEFAULT_TABLE: &str = "ipvs-proxy";

/// The default conntrack-mark bit meaning "masquerade this connection"
/// (kube-proxy's 0x4000, but on the conntrack mark).
pub const DEFAULT_MASQUERADE_BIT: u32 = 0x4000;

#[cfg(test)]
mod tests;
