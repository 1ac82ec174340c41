//! Entry points for the fuzz targets in the repository's `fuzz/` directory
//! (feature `fuzzing`, off by default): the private reply decoder, driven
//! the way [`crate::Handle`] and [`crate::AsyncHandle`] drive it. Not a
//! stable API.

use crate::client::{check_exchange, daemons_from, family_from, info_from, timeouts_from};
use crate::codec::IpvsMessage;
use crate::engine::{Exchange, Payload};
use crate::types::{AddressFamily, RealServer, VirtualServer};

/// What the data messages of an exchange are decoded as: the five ways the
/// clients read an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyKind {
    /// Generic IPVS messages (timeouts, info, sync daemons, write ACKs).
    Ipvs,
    /// A service dump or a single service.
    Services,
    /// A real-server dump of a service of this family.
    RealServers(AddressFamily),
    /// The generic-netlink controller's answer to `CTRL_CMD_GETFAMILY`.
    Ctrl,
}

/// What an exchange amounted to, for the fuzz targets' checks.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplySummary {
    /// The last request was answered.
    pub done: bool,
    /// Refused requests (index in the exchange, positive errno).
    pub errors: Vec<(usize, i32)>,
    /// Services decoded.
    pub services: Vec<VirtualServer>,
    /// Real servers decoded.
    pub real_servers: Vec<RealServer>,
    /// Generic IPVS messages decoded.
    pub messages: Vec<IpvsMessage>,
    /// A message could not be decoded.
    pub decode_error: bool,
}

/// Feeds `datagrams`, in order, as the answers to requests numbered
/// `first..=last`, stopping once the exchange is complete (as the clients
/// do), then runs every conversion a client runs on such an answer.
pub fn decode_replies(kind: ReplyKind, first: u32, last: u32, datagrams: &[&[u8]]) -> ReplySummary {
    let payload = match kind {
        ReplyKind::Ipvs => Payload::Ipvs,
        ReplyKind::Services => Payload::Services,
        ReplyKind::RealServers(f) => Payload::RealServers(f),
        ReplyKind::Ctrl => Payload::Ctrl,
    };
    let mut ex = Exchange::new(first, last, payload);
    for d in datagrams {
        if ex.is_done() {
            break;
        }
        ex.feed(d);
    }
    // The results are thrown away: only panics, hangs and allocations count.
    let _ = check_exchange(&ex, "fuzz");
    if kind == ReplyKind::Ipvs {
        let _ = timeouts_from(&ex);
        let _ = info_from(&ex);
        let _ = daemons_from(&ex);
    }
    if kind == ReplyKind::Ctrl {
        let _ = family_from(&ex);
    }
    for e in &ex.errors {
        // What an error message of a refused request prints.
        let _ = crate::client::kernel_error("fuzz".to_owned(), &e.1).to_string();
    }
    ReplySummary {
        done: ex.is_done(),
        errors: ex.errors.iter().map(|(i, e)| (*i, e.errno)).collect(),
        services: ex.services,
        real_servers: ex.real_servers,
        messages: ex.messages,
        decode_error: ex.decode_error.is_some(),
    }
}
