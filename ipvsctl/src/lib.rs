//! `ipvsctl`: an `ipvsadm`-compatible command-line tool built on `ipvs-rs`.
//!
//! The binary (`src/main.rs`) only wires the kernel client to the rule
//! language of [`ipvs::rules`] (parsing `ipvsadm -R` rules and commands,
//! rendering `ipvsadm -Sn` output in ipvsadm's order) and to [`mod@format`],
//! which renders `ipvsadm -Ln` listings (and `--stats`, `--rate`, ...) and
//! the `--json` form.

pub mod format;
