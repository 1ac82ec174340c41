//! Helpers shared by the unit tests of the rules modules.

use std::net::IpAddr;

use super::parse_line;
use crate::batch::Op;

/// Parses an address literal.
pub(super) fn ip(s: &str) -> IpAddr {
    s.parse().expect("address literal")
}

/// The operation one rule line parses to; panics (failing the test) on a
/// parse error or a blank line.
pub(super) fn one(line: &str) -> Op {
    match parse_line(line) {
        Ok(Some(op)) => op,
        other => panic!("{line:?} -> {other:?}"),
    }
}
