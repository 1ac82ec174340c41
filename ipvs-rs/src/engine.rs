//! The sans-I/O protocol engine shared by [`crate::Handle`] and
//! [`crate::AsyncHandle`]: it writes requests into a buffer, numbers them, and
//! matches every received message to the request it answers. It never
//! touches a socket.
//!
//! Matching rules (what the kernel guarantees for a netlink socket):
//! - requests in one `sendmsg` are processed in order; a failing request
//!   gets an `NLMSG_ERROR` with its sequence number and processing continues;
//! - a request with `NLM_F_ACK` gets an `NLMSG_ERROR` with code 0 on success;
//! - a dump ends with `NLMSG_DONE` (or an `NLMSG_ERROR` if it cannot start).
//!
//! So an exchange of requests `first..=last`, where only `last` asks for an
//! ACK, is complete when `last` is answered; every request before it that
//! got no error succeeded. Messages with sequence numbers outside the
//! exchange (late answers to an exchange that timed out) are dropped, so a
//! timeout never leaves the socket out of step.

use netlink_packet_core::{
    NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NlasIterator, NLMSG_DONE,
    NLMSG_ERROR, NLM_F_ACK, NLM_F_ACK_TLVS, NLM_F_CAPPED, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_generic::GenlMessage;

use crate::codec::{
    real_server_from_attrs, virtual_server_from_attrs, IpvsAttribute, IpvsCommand, IpvsMessage,
};
use crate::types::{AddressFamily, RealServer, VirtualServer};

/// Length of `struct nlmsghdr`.
const NLMSG_HDRLEN: usize = 16;
/// Length of `struct genlmsghdr`.
const GENL_HDRLEN: usize = 4;
/// `NLMSGERR_ATTR_MSG`: the extended-ACK error text.
const NLMSGERR_ATTR_MSG: u16 = 1;
/// `CTRL_ATTR_FAMILY_ID`.
const CTRL_ATTR_FAMILY_ID: u16 = 1;
/// Offset of `nlmsg_flags` in `struct nlmsghdr`.
const FLAGS_OFFSET: usize = 6;

/// What a request expects back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expect {
    /// Nothing but the final ACK (writes).
    Ack,
    /// Zero or more data messages, then an ACK (a `doit` GET).
    Reply,
    /// A multipart dump ending with `NLMSG_DONE`.
    Dump,
}

impl Expect {
    fn flags(self) -> u16 {
        match self {
            Expect::Ack | Expect::Reply => NLM_F_REQUEST | NLM_F_ACK,
            Expect::Dump => NLM_F_REQUEST | NLM_F_DUMP,
        }
    }
}

/// Request numbering and encoding.
#[derive(Debug)]
pub(crate) struct Engine {
    /// The resolved IPVS family id (0 until resolved).
    pub family: u16,
    seq: u32,
}

impl Engine {
    pub(crate) fn new() -> Self {
        Engine { family: 0, seq: 0 }
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Forgets the last sequence number handed out (its request was
    /// removed from the buffer before sending).
    pub(crate) fn unpush(&mut self) {
        self.seq = self.seq.wrapping_sub(1);
    }

    /// Appends one IPVS request with netlink header flags `flags` to `tx`;
    /// returns its sequence number. (Batched writes are pushed without
    /// `NLM_F_ACK`, which [`set_ack_flag`] then sets on the last one.)
    pub(crate) fn push(&mut self, tx: &mut Vec<u8>, msg: IpvsMessage, flags: u16) -> u32 {
        let seq = self.next_seq();
        let mut genl = GenlMessage::from_payload(msg);
        genl.set_resolved_family_id(self.family);
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = seq;
        let mut nl = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(genl));
        nl.finalize();
        let start = tx.len();
        tx.resize(start + nl.buffer_len(), 0);
        nl.serialize(&mut tx[start..]);
        seq
    }

    /// Appends a request expecting `expect`.
    pub(crate) fn push_request(
        &mut self,
        tx: &mut Vec<u8>,
        msg: IpvsMessage,
        expect: Expect,
    ) -> u32 {
        self.push(tx, msg, expect.flags())
    }

    /// Appends `CTRL_CMD_GETFAMILY` for `name`.
    pub(crate) fn push_get_family(&mut self, tx: &mut Vec<u8>, name: &str) -> u32 {
        let seq = self.next_seq();
        let genl = GenlMessage::from_payload(GenlCtrl {
            cmd: GenlCtrlCmd::GetFamily,
            nlas: vec![GenlCtrlAttrs::FamilyName(name.to_owned())],
        });
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK;
        header.sequence_number = seq;
        let mut nl = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(genl));
        nl.finalize();
        let start = tx.len();
        tx.resize(start + nl.buffer_len(), 0);
        nl.serialize(&mut tx[start..]);
        seq
    }
}

/// Sets `NLM_F_ACK` on the message starting at `offset` of `tx`.
pub(crate) fn set_ack_flag(tx: &mut [u8], offset: usize) {
    if let Some(f) = tx.get_mut(offset + FLAGS_OFFSET..offset + FLAGS_OFFSET + 2) {
        let flags = u16::from_ne_bytes([f[0], f[1]]) | NLM_F_ACK;
        f.copy_from_slice(&flags.to_ne_bytes());
    }
}

/// A refusal by the kernel of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KernelError {
    /// Positive errno.
    pub errno: i32,
    /// The extended-ACK text, if the kernel sent one.
    pub extack: Option<String>,
}

/// What the data messages of an exchange are, and what to keep of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Payload {
    /// IPVS messages, kept as [`IpvsMessage`]s.
    Ipvs,
    /// Service nests, turned into [`VirtualServer`]s as they arrive (a big
    /// dump then never holds all its attribute lists at once: memory
    /// growth, i.e. page faults, is what costs most under UML).
    Services,
    /// Destination nests of a service of this family, turned into
    /// [`RealServer`]s as they arrive.
    RealServers(AddressFamily),
    /// The generic-netlink controller's answer to GETFAMILY.
    Ctrl,
}

/// The state of one exchange: requests `first..=last` in flight.
#[derive(Debug)]
pub(crate) struct Exchange {
    first: u32,
    last: u32,
    payload: Payload,
    done: bool,
    /// `(index in the exchange, error)` for every refused request.
    pub errors: Vec<(usize, KernelError)>,
    /// Data messages answering the exchange, in order ([`Payload::Ipvs`]).
    pub messages: Vec<IpvsMessage>,
    /// Services answering the exchange ([`Payload::Services`]).
    pub services: Vec<VirtualServer>,
    /// Real servers answering the exchange ([`Payload::RealServers`]).
    pub real_servers: Vec<RealServer>,
    /// The family id found in a GETFAMILY answer.
    pub family_id: Option<u16>,
    /// The first message that could not be decoded.
    pub decode_error: Option<String>,
    /// The kernel dropped answers (the receive queue overflowed: `ENOBUFS`).
    pub overrun: bool,
}

impl Exchange {
    pub(crate) fn new(first: u32, last: u32, payload: Payload) -> Self {
        Exchange {
            first,
            last,
            payload,
            done: false,
            errors: Vec::new(),
            messages: Vec::new(),
            services: Vec::new(),
            real_servers: Vec::new(),
            family_id: None,
            decode_error: None,
            overrun: false,
        }
    }

    /// True once the last request has been answered.
    pub(crate) fn is_done(&self) -> bool {
        self.done
    }

    fn index_of(&self, seq: u32) -> Option<usize> {
        let off = seq.wrapping_sub(self.first);
        (off <= self.last.wrapping_sub(self.first)).then_some(off as usize)
    }

    fn note_decode_error(&mut self, e: impl std::fmt::Display) {
        if self.decode_error.is_none() {
            self.decode_error = Some(e.to_string());
        }
    }

    /// Feeds one received datagram (possibly several messages).
    pub(crate) fn feed(&mut self, datagram: &[u8]) {
        let mut at = 0;
        while datagram.len().saturating_sub(at) >= NLMSG_HDRLEN {
            let buf = match NetlinkBuffer::new_checked(&datagram[at..]) {
                Ok(b) => b,
                Err(e) => {
                    self.note_decode_error(e);
                    return;
                }
            };
            let len = buf.length() as usize;
            let seq = buf.sequence_number();
            let kind = buf.message_type();
            let flags = buf.flags();
            let payload = buf.payload();
            at += (len + 3) & !3;
            let Some(index) = self.index_of(seq) else {
                continue; // a late answer to an earlier exchange
            };
            let is_last = seq == self.last;
            match kind {
                NLMSG_ERROR => {
                    match parse_error(payload, flags) {
                        Some(e) if e.errno != 0 => self.errors.push((index, e)),
                        Some(_) => {}
                        None => self.note_decode_error("truncated NLMSG_ERROR"),
                    }
                    if is_last {
                        self.done = true;
                    }
                }
                NLMSG_DONE => {
                    // The payload is the dump's final status (0 or -errno).
                    if let Some(code) = payload.get(..4) {
                        let code = i32::from_ne_bytes([code[0], code[1], code[2], code[3]]);
                        if code < 0 {
                            self.errors.push((
                                index,
                                KernelError {
                                    errno: code.saturating_neg(),
                                    extack: None,
                                },
                            ));
                        }
                    }
                    if is_last {
                        self.done = true;
                    }
                }
                k if k < 16 => {} // NLMSG_NOOP, NLMSG_OVERRUN and reserved types
                _ => self.data(payload),
            }
        }
    }

    fn data(&mut self, payload: &[u8]) {
        let Some(header) = payload.get(..GENL_HDRLEN) else {
            self.note_decode_error("truncated generic netlink header");
            return;
        };
        let attrs = &payload[GENL_HDRLEN..];
        let parse = || IpvsMessage::parse_attributes(IpvsCommand::from(header[0]), attrs);
        match self.payload {
            Payload::Ipvs => match parse() {
                Ok(m) => self.messages.push(m),
                Err(e) => self.note_decode_error(e),
            },
            Payload::Services => match parse() {
                Ok(m) => {
                    for a in &m.attributes {
                        if let IpvsAttribute::Service(attrs) = a {
                            match virtual_server_from_attrs(attrs) {
                                Ok(vs) => self.services.push(vs),
                                Err(e) => self.note_decode_error(e),
                            }
                        }
                    }
                }
                Err(e) => self.note_decode_error(e),
            },
            Payload::RealServers(family) => match parse() {
                Ok(m) => {
                    for a in &m.attributes {
                        if let IpvsAttribute::Dest(attrs) = a {
                            match real_server_from_attrs(attrs, family) {
                                Ok(rs) => self.real_servers.push(rs),
                                Err(e) => self.note_decode_error(e),
                            }
                        }
                    }
                }
                Err(e) => self.note_decode_error(e),
            },
            Payload::Ctrl => {
                for nla in NlasIterator::new(attrs).flatten() {
                    if nla.kind() == CTRL_ATTR_FAMILY_ID {
                        if let Ok(b) = <[u8; 2]>::try_from(nla.value()) {
                            self.family_id = Some(u16::from_ne_bytes(b));
                        }
                    }
                }
            }
        }
    }
}

/// Reads an `NLMSG_ERROR` payload: the code and, with extended ACKs, the
/// kernel's error text.
fn parse_error(payload: &[u8], flags: u16) -> Option<KernelError> {
    let code = payload.get(..4)?;
    let code = i32::from_ne_bytes([code[0], code[1], code[2], code[3]]);
    let mut extack = None;
    if flags & NLM_F_ACK_TLVS != 0 {
        // After the code comes the request's header (capped) or the whole
        // request, then the TLVs.
        let orig_len = payload
            .get(4..8)
            .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .unwrap_or(0);
        let skip = if flags & NLM_F_CAPPED != 0 {
            NLMSG_HDRLEN
        } else {
            (orig_len.max(NLMSG_HDRLEN) + 3) & !3
        };
        if let Some(tlvs) = payload.get(4 + skip..) {
            for nla in NlasIterator::new(tlvs).flatten() {
                if nla.kind() == NLMSGERR_ATTR_MSG {
                    let v = nla.value();
                    let v = v.split(|b| *b == 0).next().unwrap_or(v);
                    extack = Some(String::from_utf8_lossy(v).into_owned());
                }
            }
        }
    }
    Some(KernelError {
        errno: code.saturating_neg(),
        extack,
    })
}

#[cfg(all(test, target_endian = "little"))]
mod tests {
    use super::*;

    fn nlmsg(kind: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&((16 + payload.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&flags.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(payload);
        while !m.len().is_multiple_of(4) {
            m.push(0);
        }
        m
    }

    #[test]
    fn dump_answer_then_done_in_one_datagram_stale_ignored() {
        let mut ex = Exchange::new(7, 7, Payload::Ipvs);
        // A config answer: genl IPVS_CMD_SET_CONFIG + IPVS_CMD_ATTR_TIMEOUT_TCP 900.
        let data = [12u8, 1, 0, 0, 8, 0, 4, 0, 0x84, 3, 0, 0];
        let mut dgram = nlmsg(0x42, 2 /* MULTI */, 6, &data); // stale seq 6
        dgram.extend(nlmsg(0x42, 2, 7, &data));
        dgram.extend(nlmsg(NLMSG_DONE, 2, 7, &0i32.to_ne_bytes()));
        ex.feed(&dgram);
        assert!(ex.is_done());
        assert_eq!(ex.messages.len(), 1);
        assert_eq!(
            ex.messages[0].attributes,
            vec![IpvsAttribute::TimeoutTcp(900)]
        );
        assert!(ex.errors.is_empty());
    }

    #[test]
    fn error_with_extended_ack_text_and_dump_error() {
        let mut ex = Exchange::new(1, 3, Payload::Ipvs);
        let mut err = Vec::new();
        err.extend_from_slice(&(-22i32).to_ne_bytes()); // -EINVAL
        err.extend_from_slice(&[16, 0, 0, 0, 0x42, 0, 5, 0, 2, 0, 0, 0, 0, 0, 0, 0]); // request header
        err.extend_from_slice(&[12, 0, 1, 0]); // NLMSGERR_ATTR_MSG, len 12
        err.extend_from_slice(b"bad\0pad\0");
        ex.feed(&nlmsg(NLMSG_ERROR, NLM_F_CAPPED | NLM_F_ACK_TLVS, 2, &err));
        assert!(!ex.is_done());
        ex.feed(&nlmsg(NLMSG_DONE, 0, 3, &(-16i32).to_ne_bytes())); // dump ended with EBUSY
        assert!(ex.is_done());
        assert_eq!(
            ex.errors,
            vec![
                (
                    1,
                    KernelError {
                        errno: 22,
                        extack: Some("bad".into())
                    }
                ),
                (
                    2,
                    KernelError {
                        errno: 16,
                        extack: None
                    }
                ),
            ]
        );
    }

    #[test]
    fn garbage_never_panics() {
        let mut ex = Exchange::new(1, 1, Payload::Ipvs);
        for len in 0..64u32 {
            let mut g = vec![0xffu8; 40];
            g[..4].copy_from_slice(&len.to_ne_bytes());
            g[8..12].copy_from_slice(&1u32.to_ne_bytes());
            ex.feed(&g);
            ex.feed(&g[..(len as usize).min(40)]);
        }
        // A data message too short for a genl header.
        ex.feed(&nlmsg(0x42, 0, 1, &[1, 2]));
        assert!(ex.decode_error.is_some());
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut ex = Exchange::new(u32::MAX, 1, Payload::Ipvs);
        ex.feed(&nlmsg(NLMSG_ERROR, 0, 0, &(-3i32).to_ne_bytes().repeat(5)));
        ex.feed(&nlmsg(NLMSG_ERROR, 0, 1, &0i32.to_ne_bytes().repeat(5)));
        assert!(ex.is_done());
        assert_eq!(ex.errors[0].0, 1);
    }
}
