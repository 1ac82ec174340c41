//! Entry points for the fuzz targets in the repository's `fuzz/` directory
//! (feature `fuzzing`, off by default): the private reply decoder, driven
//! the way [`crate::Handle`] and [`crate::AsyncHandle`] drive it. Not a
//! stable API.

use crate::client::{
    check_exchange, daemons_from, family_from, info_from, kernel_error, timeouts_from,
};
use crate::codec::IpvsMessage;
use crate::engine::Answer;
use crate::exchange::Exchange;
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
    let answer = match kind {
        ReplyKind::Ipvs => Answer::Ipvs(Vec::new()),
        ReplyKind::Services => Answer::Services(Vec::new()),
        ReplyKind::RealServers(f) => Answer::RealServers(f, Vec::new()),
        ReplyKind::Ctrl => Answer::Ctrl(None),
    };
    let mut ex = Exchange::new(first, last, answer);
    for d in datagrams {
        if ex.is_done() {
            break;
        }
        ex.feed(d);
    }
    // The results are thrown away: only panics, hangs and allocations count.
    let _ = check_exchange(&ex, "fuzz");
    if kind == ReplyKind::Ctrl {
        let _ = family_from(&ex);
    }
    for (_, e) in ex.errors() {
        // What an error message of a refused request prints.
        let _ = kernel_error("fuzz".to_owned(), e).to_string();
    }
    let mut summary = ReplySummary {
        done: ex.is_done(),
        errors: ex.errors().iter().map(|(i, e)| (*i, e.errno)).collect(),
        services: Vec::new(),
        real_servers: Vec::new(),
        messages: Vec::new(),
        decode_error: ex.decode_error().is_some(),
    };
    match ex.into_collected() {
        Answer::Ipvs(msgs) => {
            let _ = timeouts_from(&msgs);
            let _ = info_from(&msgs);
            let _ = daemons_from(&msgs);
            summary.messages = msgs;
        }
        Answer::Services(v) => summary.services = v,
        Answer::RealServers(_, v) => summary.real_servers = v,
        Answer::Ctrl(_) => {}
    }
    summary
}
