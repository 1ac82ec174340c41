//! `ipvs-proxy`, the node agent: kube-proxy's IPVS mode in Rust.
//!
//! Data flows one way: sources (API server watches or a manifest directory)
//! -> the sync loop (proxy-core decides, the dataplane applies) -> the kernel;
//! metrics and health are read from the side.

pub mod app;
pub mod config;
pub mod control;
pub mod duration;
pub mod error;
pub mod events;
pub mod http;
pub mod kernel;
pub mod logging;
pub mod metrics;
pub mod migrate;
pub mod proxier;
pub mod ratelimit;
pub mod shutdown;
pub mod source;
pub mod sync;
pub mod yaml;

pub use error::Error;
