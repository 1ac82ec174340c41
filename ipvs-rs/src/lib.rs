//! A generic-netlink client for the Linux kernel's IP Virtual Server (IPVS).
#![warn(missing_docs)]

pub mod batch;
mod client;
pub mod error;
pub mod types;

pub use batch::{BatchReport, Op};
pub use client::Handle;
pub use error::{Error, Result};
pub use types::*;
