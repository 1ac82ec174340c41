//! Matching received messages to the requests of one exchange (sans-I/O).

use netlink_packet_core::{
    DecodeError, NetlinkBuffer, NlasIterator, NLMSG_DONE, NLMSG_ERROR, NLM_F_ACK_TLVS, NLM_F_CAPPED,
};

/// Length of `struct nlmsghdr`.
const NLMSG_HDRLEN: usize = 16;
/// `NLMSGERR_ATTR_MSG`: the extended-ACK error text.
const NLMSGERR_ATTR_MSG: u16 = 1;
/// Message types below this are netlink control messages
/// (`NLMSG_MIN_TYPE`).
const NLMSG_MIN_TYPE: u16 = 16;

/// What to do with the data messages answering an exchange (dump parts,
/// `doit` answers). [`Exchange::feed`] calls it with each message's type
/// and payload (after the `nlmsghdr`), in order.
///
/// `()` ignores data messages (write-only batches).
pub trait Collect {
    /// Takes one data message. An error is kept as the exchange's
    /// [`Exchange::decode_error`] (the first one only) and does not stop
    /// the exchange.
    fn data(&mut self, message_type: u16, payload: &[u8]) -> Result<(), DecodeError>;
}

impl Collect for () {
    fn data(&mut self, _: u16, _: &[u8]) -> Result<(), DecodeError> {
        Ok(())
    }
}

/// A refusal by the kernel of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KernelError {
    /// Positive errno.
    pub errno: i32,
    /// The extended-ACK text, if the kernel sent one.
    pub extack: Option<String>,
}

impl KernelError {
    /// A refusal with `errno` (positive) and no text.
    pub fn new(errno: i32) -> Self {
        KernelError {
            errno,
            extack: None,
        }
    }
}

impl std::fmt::Display for KernelError {
    /// The errno's text, then the kernel's extended-ACK text if any:
    /// `File exists`, `Invalid argument: bad attribute`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(nix::errno::Errno::from_raw(self.errno).desc())?;
        match &self.extack {
            Some(x) if !x.is_empty() => write!(f, ": {x}"),
            _ => Ok(()),
        }
    }
}

/// The state of one exchange: requests `first..=last` in flight, what
/// answered them so far.
#[derive(Debug)]
pub struct Exchange<C> {
    first: u32,
    last: u32,
    done: bool,
    errors: Vec<(usize, KernelError)>,
    decode_error: Option<String>,
    overrun: bool,
    collect: C,
}

impl<C: Collect> Exchange<C> {
    /// An exchange of the requests numbered `first..=last` (wrapping).
    pub fn new(first: u32, last: u32, collect: C) -> Self {
        Exchange {
            first,
            last,
            done: false,
            errors: Vec::new(),
            decode_error: None,
            overrun: false,
            collect,
        }
    }

    /// True once the last request has been answered.
    pub fn is_done(&self) -> bool {
        self.done
    }

    pub(crate) fn finish(&mut self) {
        self.done = true;
    }

    /// `(index in the exchange, error)` for every refused request, in the
    /// order the kernel answered.
    pub fn errors(&self) -> &[(usize, KernelError)] {
        &self.errors
    }

    /// The first data message that could not be decoded.
    pub fn decode_error(&self) -> Option<&str> {
        self.decode_error.as_deref()
    }

    /// The kernel dropped answers (the receive queue overflowed,
    /// `ENOBUFS`): requests without an error answer may have failed.
    pub fn overrun(&self) -> bool {
        self.overrun
    }

    pub(crate) fn set_overrun(&mut self) {
        self.overrun = true;
    }

    /// The collector.
    pub fn collected(&self) -> &C {
        &self.collect
    }

    /// The collector, by value.
    pub fn into_collected(self) -> C {
        self.collect
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

    /// Feeds one received datagram (possibly several messages). Messages
    /// outside the exchange's sequence window are ignored; garbage never
    /// panics (it is noted as a decode error).
    pub fn feed(&mut self, datagram: &[u8]) {
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
                            self.errors
                                .push((index, KernelError::new(code.saturating_neg())));
                        }
                    }
                    if is_last {
                        self.done = true;
                    }
                }
                k if k < NLMSG_MIN_TYPE => {} // NLMSG_NOOP, NLMSG_OVERRUN, reserved
                _ => {
                    if let Err(e) = self.collect.data(kind, payload) {
                        self.note_decode_error(e);
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

    pub(crate) fn nlmsg(kind: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
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

    /// Keeps the payloads of data messages.
    #[derive(Default)]
    struct Keep(Vec<(u16, Vec<u8>)>);
    impl Collect for Keep {
        fn data(&mut self, kind: u16, payload: &[u8]) -> Result<(), DecodeError> {
            if payload.is_empty() {
                return Err(DecodeError::from("empty"));
            }
            self.0.push((kind, payload.to_vec()));
            Ok(())
        }
    }

    #[test]
    fn data_then_done_in_one_datagram_stale_ignored() {
        let mut ex = Exchange::new(7, 7, Keep::default());
        let mut dgram = nlmsg(0x42, 2 /* MULTI */, 6, &[1, 2, 3, 4]); // stale seq 6
        dgram.extend(nlmsg(0x42, 2, 7, &[5, 6, 7, 8]));
        dgram.extend(nlmsg(NLMSG_DONE, 2, 7, &0i32.to_ne_bytes()));
        ex.feed(&dgram);
        assert!(ex.is_done());
        assert_eq!(ex.collected().0, vec![(0x42, vec![5, 6, 7, 8])]);
        assert!(ex.errors().is_empty());
        assert_eq!(ex.decode_error(), None);
    }

    #[test]
    fn error_with_extended_ack_text_and_dump_error() {
        let mut ex = Exchange::new(1, 3, ());
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
            ex.errors(),
            &[
                (
                    1,
                    KernelError {
                        errno: 22,
                        extack: Some("bad".into())
                    }
                ),
                (2, KernelError::new(16)),
            ]
        );
        assert_eq!(ex.errors()[0].1.to_string(), "Invalid argument: bad");
        assert_eq!(ex.errors()[1].1.to_string(), "Device or resource busy");
    }

    #[test]
    fn garbage_never_panics_and_decode_errors_are_kept() {
        let mut ex = Exchange::new(1, 1, Keep::default());
        for len in 0..64u32 {
            let mut g = vec![0xffu8; 40];
            g[..4].copy_from_slice(&len.to_ne_bytes());
            g[8..12].copy_from_slice(&1u32.to_ne_bytes());
            ex.feed(&g);
            ex.feed(&g[..(len as usize).min(40)]);
        }
        let mut ex = Exchange::new(1, 1, Keep::default());
        ex.feed(&nlmsg(0x42, 0, 1, &[]));
        assert_eq!(ex.decode_error(), Some("empty"));
        assert!(!ex.is_done());
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut ex = Exchange::new(u32::MAX, 1, ());
        ex.feed(&nlmsg(NLMSG_ERROR, 0, 0, &(-3i32).to_ne_bytes().repeat(5)));
        ex.feed(&nlmsg(NLMSG_ERROR, 0, 1, &0i32.to_ne_bytes().repeat(5)));
        assert!(ex.is_done());
        assert_eq!(ex.errors()[0].0, 1);
    }
}
