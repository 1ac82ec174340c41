//! Element changes straight to the kernel's nf_tables over nfnetlink: one
//! transaction (`NFNL_MSG_BATCH_BEGIN`, one `NFT_MSG_DELSETELEM` and one
//! `NFT_MSG_NEWSETELEM` per touched set, `NFNL_MSG_BATCH_END`) in one
//! `sendmsg` over ipvs-rs's netlink exchange, instead of one `nft -f -`
//! process per change. The kernel applies the batch atomically or not at
//! all, as it does for `nft -f`.
//!
//! Only what this needs is encoded: set elements of our table's hash sets
//! and maps, and of the concatenated-range set `lb-allowed-*` (each element
//! one key and one key end: `VIP . proto . port . first address` to
//! `... . last address` of the source range, as nft sends them). The table
//! itself (its skeleton) and `local-cidrs-*` (a single-field interval set,
//! whose elements nft turns into start and end elements and merges) stay
//! with `nft -f` ([`super::exec`]); [`encode`] returns `None` for a delta
//! that touches them.
//!
//! The encoding follows the kernel's uapi (`linux/netfilter/nf_tables.h`)
//! and how nft lays out a concatenated key: each field in its own 32-bit
//! register slot (zero-padded), fields in declaration order, addresses and
//! ports in network byte order, protocols as one byte, marks in host order.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipvs::exchange::{Connection, ExchangeError, KernelError, Tokio};
use rtnetlink::packet_core::{
    DecodeError, NetlinkHeader, NetlinkMessage, NetlinkPayload, NetlinkSerializable, NlasIterator,
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REQUEST,
};

use super::spec::{Element, Key, Set};
use super::update::Delta;

/// `NETLINK_NETFILTER`.
pub const NETLINK_NETFILTER: isize = 12;
/// `NFNL_SUBSYS_NFTABLES`.
const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// `NFNL_MSG_BATCH_BEGIN` / `_END` (`NLMSG_MIN_TYPE` and the next).
const NFNL_MSG_BATCH_BEGIN: u16 = 16;
const NFNL_MSG_BATCH_END: u16 = 17;
/// `NFT_MSG_NEWSETELEM`, `NFT_MSG_GETSETELEM`, `NFT_MSG_DELSETELEM`.
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_GETSETELEM: u16 = 13;
const NFT_MSG_DELSETELEM: u16 = 14;
/// `NFPROTO_INET`: our table's family.
const NFPROTO_INET: u8 = 1;
/// `NFTA_SET_ELEM_LIST_TABLE`, `_SET`, `_ELEMENTS`.
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
/// `NFTA_LIST_ELEM`.
const NFTA_LIST_ELEM: u16 = 1;
/// `NFTA_SET_ELEM_KEY`, `NFTA_SET_ELEM_DATA`, `NFTA_SET_ELEM_KEY_END`.
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_SET_ELEM_KEY_END: u16 = 10;
/// `NFTA_DATA_VALUE`.
const NFTA_DATA_VALUE: u16 = 1;
/// `NLA_F_NESTED`.
const NLA_F_NESTED: u16 = 0x8000;

/// One nfnetlink message: the `nfgenmsg` header and its attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NfMessage {
    kind: u16,
    family: u8,
    res_id: u16,
    attrs: Vec<u8>,
}

impl NetlinkSerializable for NfMessage {
    fn message_type(&self) -> u16 {
        self.kind
    }

    fn buffer_len(&self) -> usize {
        4 + self.attrs.len()
    }

    fn serialize(&self, buffer: &mut [u8]) {
        buffer[0] = self.family;
        buffer[1] = 0; // NFNETLINK_V0
        buffer[2..4].copy_from_slice(&self.res_id.to_be_bytes());
        buffer[4..4 + self.attrs.len()].copy_from_slice(&self.attrs);
    }
}

fn message(m: NfMessage, flags: u16) -> NetlinkMessage<NfMessage> {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    let mut msg = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(m));
    msg.finalize();
    msg
}

/// Appends one attribute (padded to 4 bytes).
fn attr(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = 4 + value.len();
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(out.len().next_multiple_of(4), 0);
}

/// Appends a nested attribute whose content `f` writes.
fn nested(out: &mut Vec<u8>, kind: u16, f: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    f(out);
    let len = (out.len() - start) as u16;
    out[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    out[start + 2..start + 4].copy_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
}

fn string(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// True for sets whose elements are left to `nft -f`: the single-field
/// interval set of local CIDRs.
pub fn via_nft(set: Set) -> bool {
    matches!(set, Set::LocalCidrs(_))
}

fn addr_bytes(out: &mut Vec<u8>, a: IpAddr) {
    match a {
        IpAddr::V4(a) => out.extend_from_slice(&a.octets()),
        IpAddr::V6(a) => out.extend_from_slice(&a.octets()),
    }
}

/// One field of a concatenation: its bytes, zero-padded to 32 bits.
fn field(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(bytes);
    out.resize(out.len().next_multiple_of(4), 0);
}

/// A protocol as its one byte (our sets only hold TCP, UDP and SCTP).
fn proto(p: ipvs::Protocol) -> Option<u8> {
    u8::try_from(u16::from(p)).ok()
}

/// The key of an element as the kernel stores it; for a concatenated
/// range (`VIP . proto . port . network`) its start. `None` for a
/// single-field network (left to nft).
pub fn key_bytes(key: &Key) -> Option<Vec<u8>> {
    if let Key::VipPortNet(a, l4, p, n) = *key {
        return vip_port_addr(a, l4, p, n.network());
    }
    plain_key(key)
}

/// The end of a concatenated range's key (the range's last address), or
/// `None` for keys that are not ranges.
pub fn key_end_bytes(key: &Key) -> Option<Vec<u8>> {
    match *key {
        Key::VipPortNet(a, l4, p, n) => vip_port_addr(a, l4, p, n.broadcast()),
        _ => None,
    }
}

fn vip_port_addr(a: IpAddr, l4: ipvs::Protocol, p: u16, last: IpAddr) -> Option<Vec<u8>> {
    let mut k = Vec::with_capacity(48);
    addr_bytes(&mut k, a);
    field(&mut k, &[proto(l4)?]);
    field(&mut k, &p.to_be_bytes());
    addr_bytes(&mut k, last);
    Some(k)
}

fn plain_key(key: &Key) -> Option<Vec<u8>> {
    let mut k = Vec::with_capacity(40);
    match *key {
        // Single fields are not padded: the set's key length is theirs.
        Key::Port(p) => k.extend_from_slice(&p.to_be_bytes()),
        Key::Addr(a) => addr_bytes(&mut k, a),
        Key::VipPort(a, l4, p) => {
            addr_bytes(&mut k, a);
            field(&mut k, &[proto(l4)?]);
            field(&mut k, &p.to_be_bytes());
        }
        Key::ProtoPort(l4, p) => {
            field(&mut k, &[proto(l4)?]);
            field(&mut k, &p.to_be_bytes());
        }
        Key::Hairpin(a, l4, p) => {
            addr_bytes(&mut k, a);
            addr_bytes(&mut k, a);
            field(&mut k, &[proto(l4)?]);
            field(&mut k, &p.to_be_bytes());
        }
        Key::Net(_) | Key::VipPortNet(..) => return None,
    }
    Some(k)
}

/// The `NFTA_SET_ELEM_LIST_*` attributes of `elements` of one set.
fn element_list(table: &str, set: Set, elements: &[&Element], with_data: bool) -> Option<Vec<u8>> {
    let mut a = Vec::new();
    attr(&mut a, NFTA_SET_ELEM_LIST_TABLE, &string(table));
    attr(&mut a, NFTA_SET_ELEM_LIST_SET, &string(&set.to_string()));
    let mut keys = Vec::with_capacity(elements.len());
    for e in elements {
        keys.push((key_bytes(&e.key)?, key_end_bytes(&e.key), e.mark));
    }
    nested(&mut a, NFTA_SET_ELEM_LIST_ELEMENTS, |o| {
        for (key, end, mark) in &keys {
            nested(o, NFTA_LIST_ELEM, |o| {
                nested(o, NFTA_SET_ELEM_KEY, |o| attr(o, NFTA_DATA_VALUE, key));
                if let Some(end) = end {
                    nested(o, NFTA_SET_ELEM_KEY_END, |o| attr(o, NFTA_DATA_VALUE, end));
                }
                if let (true, Some(m)) = (with_data, mark) {
                    nested(o, NFTA_SET_ELEM_DATA, |o| {
                        attr(o, NFTA_DATA_VALUE, &m.to_ne_bytes())
                    });
                }
            });
        }
    });
    Some(a)
}

fn nft_msg(cmd: u16, attrs: Vec<u8>) -> NfMessage {
    NfMessage {
        kind: (NFNL_SUBSYS_NFTABLES << 8) | cmd,
        family: NFPROTO_INET,
        res_id: 0,
        attrs,
    }
}

fn batch_marker(kind: u16) -> NfMessage {
    NfMessage {
        kind,
        family: 0, // AF_UNSPEC
        res_id: NFNL_SUBSYS_NFTABLES,
        attrs: Vec::new(),
    }
}

/// Elements grouped by their set.
fn group(els: &[Element]) -> BTreeMap<Set, Vec<&Element>> {
    let mut by: BTreeMap<Set, Vec<&Element>> = BTreeMap::new();
    for e in els {
        by.entry(e.set).or_default().push(e);
    }
    by
}

/// The messages of one transaction applying `delta` to `table`: deletes
/// first (map elements by key), then adds, one message per set and kind;
/// every element message asks for an acknowledgement. `None` when the
/// delta touches the local-CIDR interval set (or a protocol our sets
/// cannot hold): that change goes through `nft -f`.
pub fn encode(table: &str, delta: &Delta) -> Option<Vec<(NfMessage, u16)>> {
    let mut msgs = Vec::new();
    for (set, els) in group(&delta.delete) {
        if via_nft(set) {
            return None;
        }
        let a = element_list(table, set, &els, false)?;
        msgs.push((nft_msg(NFT_MSG_DELSETELEM, a), NLM_F_REQUEST | NLM_F_ACK));
    }
    for (set, els) in group(&delta.add) {
        if via_nft(set) {
            return None;
        }
        let a = element_list(table, set, &els, true)?;
        // NLM_F_CREATE without NLM_F_EXCL: nft's `add element` (an
        // element already there is not an error).
        msgs.push((
            nft_msg(NFT_MSG_NEWSETELEM, a),
            NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK,
        ));
    }
    Some(msgs)
}

/// A `NFT_MSG_GETSETELEM` request for one element (not a dump): the kernel
/// answers with the element, or `ENOENT` when the set does not hold it.
/// For probes and tests; `None` for interval keys.
pub fn get_element(table: &str, element: &Element) -> Option<NetlinkMessage<NfMessage>> {
    let a = element_list(table, element.set, &[element], false)?;
    Some(message(
        nft_msg(NFT_MSG_GETSETELEM, a),
        NLM_F_REQUEST | NLM_F_ACK,
    ))
}

/// A `NFT_MSG_GETSETELEM` dump of one set of `table` (every element, in
/// `NFT_MSG_NEWSETELEM` messages that [`SetElements`] collects). For
/// probes and tests.
pub fn dump_set(table: &str, set: Set) -> NetlinkMessage<NfMessage> {
    let mut a = Vec::new();
    attr(&mut a, NFTA_SET_ELEM_LIST_TABLE, &string(table));
    attr(&mut a, NFTA_SET_ELEM_LIST_SET, &string(&set.to_string()));
    message(nft_msg(NFT_MSG_GETSETELEM, a), NLM_F_REQUEST | NLM_F_DUMP)
}

/// The elements of a set dump: each one's key and key end (ranges), as
/// the kernel holds them (compare with [`key_bytes`] / [`key_end_bytes`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetElements(pub Vec<(Vec<u8>, Option<Vec<u8>>)>);

fn data_value(nested: &[u8]) -> Option<Vec<u8>> {
    NlasIterator::new(nested)
        .flatten()
        .find(|n| n.kind() == NFTA_DATA_VALUE)
        .map(|n| n.value().to_vec())
}

impl ipvs::exchange::Collect for SetElements {
    fn data(&mut self, message_type: u16, payload: &[u8]) -> Result<(), DecodeError> {
        if message_type != (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSETELEM {
            return Ok(());
        }
        let attrs = payload
            .get(4..)
            .ok_or_else(|| DecodeError::from("short nfgenmsg"))?;
        for list in NlasIterator::new(attrs).flatten() {
            if list.kind() != NFTA_SET_ELEM_LIST_ELEMENTS {
                continue;
            }
            for el in NlasIterator::new(list.value()).flatten() {
                let (mut key, mut end) = (None, None);
                for a in NlasIterator::new(el.value()).flatten() {
                    match a.kind() {
                        NFTA_SET_ELEM_KEY => key = data_value(a.value()),
                        NFTA_SET_ELEM_KEY_END => end = data_value(a.value()),
                        _ => {}
                    }
                }
                if let Some(k) = key {
                    self.0.push((k, end));
                }
            }
        }
        Ok(())
    }
}

/// Why a netlink transaction did not apply.
#[derive(Debug, thiserror::Error)]
pub enum TxError {
    /// The socket or the deadline failed: whether the kernel applied the
    /// transaction is unknown.
    #[error("nfnetlink exchange: {0}")]
    Exchange(#[source] ExchangeError),
    /// The kernel refused the transaction (nothing of it applied): the
    /// first refusal.
    #[error("nf_tables refused the transaction: {0}")]
    Refused(KernelError),
    /// It does not fit one `sendmsg`.
    #[error("transaction of {0} bytes exceeds one sendmsg")]
    TooBig(usize),
}

/// An nfnetlink socket for our table's element transactions.
#[derive(Debug)]
pub struct NfTables {
    conn: Connection<Tokio>,
}

impl NfTables {
    /// Opens the socket (in the caller's network namespace), with `timeout`
    /// as the deadline of each transaction.
    pub fn open(timeout: std::time::Duration) -> std::io::Result<Self> {
        let mut conn = Connection::<Tokio>::open(NETLINK_NETFILTER)?;
        conn.set_timeout(timeout);
        Ok(NfTables { conn })
    }

    /// Sends `msgs` as one transaction and waits for the kernel's answer;
    /// returns the bytes sent.
    pub async fn transaction(&mut self, msgs: Vec<(NfMessage, u16)>) -> Result<usize, TxError> {
        self.conn.clear();
        self.conn
            .push(message(batch_marker(NFNL_MSG_BATCH_BEGIN), NLM_F_REQUEST));
        for (m, flags) in msgs {
            self.conn.push(message(m, flags));
        }
        self.conn
            .push_unanswered(message(batch_marker(NFNL_MSG_BATCH_END), NLM_F_REQUEST));
        let bytes = self.conn.pending_bytes();
        if bytes > self.conn.limits().bytes || self.conn.pending() > self.conn.limits().msgs {
            self.conn.clear();
            return Err(TxError::TooBig(bytes));
        }
        let ex = self.conn.exchange(()).await.map_err(TxError::Exchange)?;
        match ex.errors().first() {
            Some((_, e)) => Err(TxError::Refused(e.clone())),
            None => Ok(bytes),
        }
    }
}
