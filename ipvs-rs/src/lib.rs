#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

#[cfg(feature = "tokio")]
mod asynch;
mod batch;
#[cfg(feature = "blocking")]
mod blocking;
#[cfg(feature = "blocking")]
mod client;
pub mod codec;
#[cfg(feature = "blocking")]
mod engine;
mod error;
#[cfg(feature = "blocking")]
pub mod exchange;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod request;
pub mod rules;
mod types;

#[cfg(feature = "tokio")]
pub use asynch::AsyncHandle;
pub use batch::{BatchReport, Op};
#[cfg(feature = "blocking")]
pub use blocking::Handle;
#[cfg(feature = "blocking")]
pub use client::DEFAULT_TIMEOUT;
pub use error::{Error, Result};
pub use types::*;
