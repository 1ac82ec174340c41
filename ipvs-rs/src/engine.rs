//! IPVS over [`crate::exchange`]: encoding IPVS requests onto a
//! [`Connection`], and what to keep of the answers ([`Answer`], a
//! [`Collect`]).

use netlink_packet_core::Emitable;
use netlink_packet_core::{
    DecodeError, NetlinkHeader, NetlinkMessage, NetlinkPayload, NlasIterator, NLM_F_ACK,
    NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_generic::{GenlFamily, GenlMessage};

use crate::codec::{
    real_server_from_attrs, virtual_server_from_attrs, IpvsAttribute, IpvsCommand, IpvsMessage,
};
use crate::exchange::{Collect, Connection, Transport};
use crate::types::{AddressFamily, RealServer, VirtualServer};

/// Length of `struct genlmsghdr`.
const GENL_HDRLEN: usize = 4;
/// `CTRL_ATTR_FAMILY_ID`.
const CTRL_ATTR_FAMILY_ID: u16 = 1;

/// What a request expects back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expect {
    /// Nothing but the final ACK (writes).
    Ack,
    /// Zero or more data messages, then an ACK (a `doit` GET).
    Reply,
    /// A multipart dump ending with `NLMSG_DONE`.
    Dump,
    /// A write in a batch: no ACK unless it is the last one
    /// ([`Connection::ack_last`]).
    Batched,
}

impl Expect {
    fn flags(self) -> u16 {
        match self {
            Expect::Ack | Expect::Reply => NLM_F_REQUEST | NLM_F_ACK,
            Expect::Dump => NLM_F_REQUEST | NLM_F_DUMP,
            Expect::Batched => NLM_F_REQUEST,
        }
    }
}

/// Appends one IPVS request for family `family` to the next exchange;
/// returns its sequence number.
pub(crate) fn push<T: Transport, F: GenlFamily + Emitable + std::fmt::Debug>(
    conn: &mut Connection<T>,
    family: u16,
    msg: F,
    expect: Expect,
) -> u32 {
    let mut genl = GenlMessage::from_payload(msg);
    genl.set_resolved_family_id(family);
    let mut header = NetlinkHeader::default();
    header.flags = expect.flags();
    conn.push(NetlinkMessage::new(
        header,
        NetlinkPayload::InnerMessage(genl),
    ))
}

/// Appends `CTRL_CMD_GETFAMILY` for `name`.
pub(crate) fn push_get_family<T: Transport>(conn: &mut Connection<T>, name: &str) -> u32 {
    let genl = GenlMessage::from_payload(GenlCtrl {
        cmd: GenlCtrlCmd::GetFamily,
        nlas: vec![GenlCtrlAttrs::FamilyName(name.to_owned())],
    });
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_ACK;
    conn.push(NetlinkMessage::new(
        header,
        NetlinkPayload::InnerMessage(genl),
    ))
}

/// What the data messages of an IPVS exchange are, and what is kept of
/// them.
#[derive(Debug)]
pub(crate) enum Answer {
    /// IPVS messages, kept as [`IpvsMessage`]s.
    Ipvs(Vec<IpvsMessage>),
    /// Service nests, turned into [`VirtualServer`]s as they arrive (a big
    /// dump then never holds all its attribute lists at once: memory
    /// growth, i.e. page faults, is what costs most under UML).
    Services(Vec<VirtualServer>),
    /// Destination nests of a service of this family, turned into
    /// [`RealServer`]s as they arrive (into a reused vector).
    RealServers(AddressFamily, Vec<RealServer>),
    /// The generic-netlink controller's answer to GETFAMILY.
    Ctrl(Option<u16>),
}

impl Collect for Answer {
    fn data(&mut self, _message_type: u16, payload: &[u8]) -> Result<(), DecodeError> {
        let Some(header) = payload.get(..GENL_HDRLEN) else {
            return Err("truncated generic netlink header".into());
        };
        let attrs = &payload[GENL_HDRLEN..];
        let parse = || IpvsMessage::parse_attributes(IpvsCommand::from(header[0]), attrs);
        match self {
            Answer::Ipvs(out) => out.push(parse()?),
            Answer::Services(out) => {
                // Keep every well-formed service; report the first bad one.
                let mut first_err = None;
                for a in &parse()?.attributes {
                    if let IpvsAttribute::Service(attrs) = a {
                        match virtual_server_from_attrs(attrs) {
                            Ok(vs) => out.push(vs),
                            Err(e) => first_err = first_err.or(Some(e)),
                        }
                    }
                }
                if let Some(e) = first_err {
                    return Err(e);
                }
            }
            Answer::RealServers(family, out) => {
                let mut first_err = None;
                for a in &parse()?.attributes {
                    if let IpvsAttribute::Dest(attrs) = a {
                        match real_server_from_attrs(attrs, *family) {
                            Ok(rs) => out.push(rs),
                            Err(e) => first_err = first_err.or(Some(e)),
                        }
                    }
                }
                if let Some(e) = first_err {
                    return Err(e);
                }
            }
            Answer::Ctrl(id) => {
                for nla in NlasIterator::new(attrs).flatten() {
                    if nla.kind() == CTRL_ATTR_FAMILY_ID {
                        if let Ok(b) = <[u8; 2]>::try_from(nla.value()) {
                            *id = Some(u16::from_ne_bytes(b));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(all(test, target_endian = "little"))]
mod tests {
    use super::*;
    use crate::exchange::Exchange;

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
    fn config_answer_then_done_stale_ignored() {
        let mut ex = Exchange::new(7, 7, Answer::Ipvs(Vec::new()));
        // A config answer: genl IPVS_CMD_SET_CONFIG + IPVS_CMD_ATTR_TIMEOUT_TCP 900.
        let data = [12u8, 1, 0, 0, 8, 0, 4, 0, 0x84, 3, 0, 0];
        let mut dgram = nlmsg(0x42, 2 /* MULTI */, 6, &data); // stale seq 6
        dgram.extend(nlmsg(0x42, 2, 7, &data));
        dgram.extend(nlmsg(3 /* NLMSG_DONE */, 2, 7, &0i32.to_ne_bytes()));
        ex.feed(&dgram);
        assert!(ex.is_done());
        let Answer::Ipvs(msgs) = ex.into_collected() else {
            panic!("kind changed")
        };
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].attributes, vec![IpvsAttribute::TimeoutTcp(900)]);
    }

    #[test]
    fn short_genl_header_is_a_decode_error() {
        let mut ex = Exchange::new(1, 1, Answer::Services(Vec::new()));
        ex.feed(&nlmsg(0x42, 0, 1, &[1, 2]));
        assert_eq!(ex.decode_error(), Some("truncated generic netlink header"));
    }
}
