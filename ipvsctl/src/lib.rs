//! `ipvsctl`: an `ipvsadm`-compatible command-line tool built on `ipvs-rs`.
//!
//! The binary (`src/main.rs`) only wires these modules to the kernel:
//! - [`rules`] parses the `ipvsadm -R` rule language into [`ipvs::Op`]s and
//!   renders kernel state exactly as `ipvsadm -Sn` prints it;
//! - [`mod@format`] renders `ipvsadm -Ln` listings (and `--stats`, `--rate`, ...)
//!   and the `--json` form;
//! - [`order`] sorts services and real servers the way `ipvsadm` does, so
//!   that `ipvsctl save` and `ipvsadm -Sn` print the same lines in the same
//!   order.
#![warn(missing_docs)]

pub mod format;
pub mod order;
pub mod rules;
