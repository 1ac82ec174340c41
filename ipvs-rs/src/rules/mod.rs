//! The `ipvsadm` rule language: what `ipvsadm -Sn` prints and `ipvsadm -R`
//! reads, one command per line (`-A -t 10.0.0.1:80 -s rr`,
//! `-a -t 10.0.0.1:80 -r 10.244.1.2:8080 -m -w 1`), on this crate's own
//! [`VirtualServer`], [`RealServer`] and [`Op`] values.
//!
//! - Rendering: [`render_save_sorted`] prints a dump (as
//!   [`crate::Handle::dump`] returns it) exactly as `ipvsadm -Sn` does, lines
//!   and order; [`render_save`] keeps the caller's order (for callers with an
//!   order of their own); [`render_service`] and [`render_real_server`] give
//!   single lines; [`render_op`] gives any [`Op`] as a line [`parse_line`]
//!   reads back to the same operation.
//! - Parsing: [`parse_rules`] reads a rules file (`ipvsadm -R`),
//!   [`parse_line`] one line and [`parse_args`] one command as separate
//!   arguments (an `ipvsadm` command line).
//! - Order: [`sort_like_ipvsadm`] sorts a dump the way ipvsadm prints it,
//!   quirks included (see [`sort_like_ipvsadm`]).
//!
//! Parsing follows ipvsadm 1.31 (checked against the real binary in UML):
//! the same defaults (scheduler `wlc`, forwarding `-g`, weight 1, persistence
//! timeout 360 s), the same client-side rules (a direct-routed or tunnelled
//! real server of an address service takes the service's port; a real server
//! of another address family must be tunnelled; `-o` only for UDP; a zero
//! port needs `-p`; tunnel options per tunnel type). Addresses and ports are
//! numeric only (no host or service names). Unlike `ipvsadm -R`, blank lines
//! and lines starting with `#` are skipped.
//!
//! Rendering prints services and real servers exactly as `ipvsadm -Sn` does:
//! scheduler, persistence with its netmask (only when persistent and not the
//! default), persistence engine, one-packet scheduling, scheduler flags,
//! forwarding method, weight and tunnel options. Like ipvsadm, the save
//! format has no real-server thresholds (`-x`/`-y`); [`render_op`] keeps
//! them.
//!
//! ```
//! use ipvs::rules::{parse_rules, render_save_sorted};
//! use ipvs::Op;
//!
//! let text = "-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -r 10.244.1.2:8080 -m -w 1\n";
//! let mut dump = Vec::new();
//! for rule in parse_rules(text).expect("valid rules") {
//!     match rule.op {
//!         Op::AddService(vs) => dump.push((vs, Vec::new())),
//!         Op::AddRealServer(_, rs) => dump.last_mut().expect("service first").1.push(rs),
//!         _ => {}
//!     }
//! }
//! assert_eq!(render_save_sorted(dump), text);
//! ```
//!
//! [`VirtualServer`]: crate::VirtualServer
//! [`RealServer`]: crate::RealServer
//! [`Op`]: crate::Op

mod order;
mod parse;
mod render;
#[cfg(test)]
mod test_support;

pub use order::sort_like_ipvsadm;
pub use parse::{parse_addr_port, parse_args, parse_line, parse_rules};
pub use render::{
    forward_switch, render_op, render_real_server, render_save, render_save_sorted, render_service,
    render_service_key, sched_flag_names,
};

use crate::batch::Op;

/// ipvsadm's default scheduler (`DEF_SCHED`).
pub const DEFAULT_SCHEDULER: &str = "wlc";
/// Persistence timeout used by `-p` without a value (seconds).
pub const DEFAULT_PERSISTENCE_TIMEOUT: u32 = 360;
/// Largest persistence timeout ipvsadm accepts (31 days, in seconds).
pub const MAX_PERSISTENCE_TIMEOUT: u32 = 86_400 * 31;

/// A rule that could not be parsed; the message says why, in the words an
/// `ipvsadm` user would recognise (`illegal weight "70000" (expected
/// 0..65535)`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RuleError {
    message: String,
}

impl RuleError {
    fn new(message: impl Into<String>) -> Self {
        RuleError {
            message: message.into(),
        }
    }

    /// What is wrong with the rule.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// A parse error located in a rules file (1-based line number).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
#[non_exhaustive]
pub struct LineError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with the line.
    pub message: String,
}

/// One parsed rule and the line it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rule {
    /// 1-based line number in the input.
    pub line: usize,
    /// The operation the line asks for.
    pub op: Op,
}
