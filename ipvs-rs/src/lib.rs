//! A generic-netlink client for the Linux kernel's IP Virtual Server (IPVS).
//!
//! - [`Handle`] (blocking) and [`AsyncHandle`] (tokio, feature `tokio`,
//!   on by default) share one sans-I/O engine and one codec ([`codec`]);
//! - every IPVS command is covered: services, real servers, stats and
//!   stats64, zero, flush, timeouts, info, sync daemons;
//! - [`Handle::apply`] packs many changes into each `sendmsg` and reports a
//!   result per change;
//! - every call has a deadline ([`Handle::set_timeout`]); errors are typed
//!   ([`Error::is_not_found`], [`Error::SchedulerUnavailable`], ...);
//! - handles can be opened in another network namespace
//!   ([`Handle::new_in_netns`]) without moving the calling thread;
//! - [`rules`] reads and writes the `ipvsadm` rule language: `ipvsadm -Sn`
//!   output exactly as ipvsadm prints it, `ipvsadm -R` input.
//!
//! Method docs name the `ipvsadm` command each one corresponds to.
#![warn(missing_docs)]

#[cfg(feature = "tokio")]
mod asynch;
pub mod batch;
mod blocking;
mod client;
pub mod codec;
mod engine;
pub mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod rules;
mod sys;
pub mod types;

#[cfg(feature = "tokio")]
pub use asynch::AsyncHandle;
pub use batch::{BatchReport, Op};
pub use blocking::Handle;
pub use client::DEFAULT_TIMEOUT;
pub use error::{Error, Result};
pub use types::*;

/// The README's example, compiled as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
