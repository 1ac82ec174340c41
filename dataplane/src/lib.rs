//! Node dataplane: applies ipvs-proxy plans to the kernel.
//!
//! - [`link`]: the dummy interface holding service addresses (rtnetlink);
//! - [`sysctl`]: the kernel settings IPVS proxying needs;
//! - [`preflight`]: is IPVS, are the schedulers, is nftables there;
//! - [`nft`]: our one nftables table: skeleton and elements apart, element
//!   changes from the plan's filter operations, atomic replacement;
//! - [`kube_proxy`]: finds and removes kube-proxy's IPVS-mode iptables
//!   chains and ipsets after a migration;
//! - [`Dataplane`]: applies proxy-core plans, reads state back, cleans up.
//!
//! Everything acts on the network namespace of the calling thread.

mod cmd;
mod dataplane;
pub mod error;
pub mod kube_proxy;
pub mod link;
pub mod nft;
pub mod preflight;
pub mod sysctl;

pub use dataplane::{
    ApplyReport, ApplyTimings, CleanupReport, Dataplane, DataplaneConfig, SetupReport,
};
pub use error::{Error, Result};
