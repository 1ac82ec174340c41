//! Node dataplane: applies ipvs-proxy plans to the kernel.
//!
//! - [`link`]: the dummy interface holding service addresses (rtnetlink);
//! - [`sysctl`]: the kernel settings IPVS proxying needs;
//! - [`preflight`]: is IPVS, are the schedulers, is nftables there;
//! - [`nft`]: our one nftables table, replaced atomically.
//!
//! Everything acts on the network namespace of the calling thread.
#![warn(missing_docs)]

mod cmd;
pub mod error;
pub mod link;
pub mod nft;
pub mod preflight;
pub mod sysctl;

pub use error::{Error, Result};
