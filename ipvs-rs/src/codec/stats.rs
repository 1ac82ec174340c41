//! Statistics nests (`IPVS_SVC_ATTR_STATS`, `IPVS_SVC_ATTR_STATS64`,
//! `IPVS_DEST_ATTR_STATS`, `IPVS_DEST_ATTR_STATS64`).

use netlink_packet_core::{DecodeError, DefaultNla, Nla, NlaBuffer, Parseable};

use super::constants::*;
use super::nla::{invalid, parse_u32_or_u64};
use crate::types::Stats;

/// One attribute of a statistics nest. Values are kept as u64; in the 32-bit
/// nest (`*_ATTR_STATS`) every counter but the byte counts is 32 bits wide
/// on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StatsAttribute {
    /// `IPVS_STATS_ATTR_CONNS`.
    Conns(u64),
    /// `IPVS_STATS_ATTR_INPKTS`.
    InPkts(u64),
    /// `IPVS_STATS_ATTR_OUTPKTS`.
    OutPkts(u64),
    /// `IPVS_STATS_ATTR_INBYTES` (always u64).
    InBytes(u64),
    /// `IPVS_STATS_ATTR_OUTBYTES` (always u64).
    OutBytes(u64),
    /// `IPVS_STATS_ATTR_CPS`.
    Cps(u64),
    /// `IPVS_STATS_ATTR_INPPS`.
    InPps(u64),
    /// `IPVS_STATS_ATTR_OUTPPS`.
    OutPps(u64),
    /// `IPVS_STATS_ATTR_INBPS`.
    InBps(u64),
    /// `IPVS_STATS_ATTR_OUTBPS`.
    OutBps(u64),
    /// An attribute we do not know (including `IPVS_STATS_ATTR_PAD`), kept as sent.
    Other(DefaultNla),
}

/// A statistics attribute together with the width it is emitted with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WideStats<'a> {
    pub attr: &'a StatsAttribute,
    pub wide: bool,
}

impl StatsAttribute {
    fn value(&self) -> Option<u64> {
        use StatsAttribute::*;
        match self {
            Conns(v) | InPkts(v) | OutPkts(v) | InBytes(v) | OutBytes(v) | Cps(v) | InPps(v)
            | OutPps(v) | InBps(v) | OutBps(v) => Some(*v),
            Other(_) => None,
        }
    }

    fn kind(&self) -> u16 {
        use StatsAttribute::*;
        match self {
            Conns(_) => IPVS_STATS_ATTR_CONNS,
            InPkts(_) => IPVS_STATS_ATTR_INPKTS,
            OutPkts(_) => IPVS_STATS_ATTR_OUTPKTS,
            InBytes(_) => IPVS_STATS_ATTR_INBYTES,
            OutBytes(_) => IPVS_STATS_ATTR_OUTBYTES,
            Cps(_) => IPVS_STATS_ATTR_CPS,
            InPps(_) => IPVS_STATS_ATTR_INPPS,
            OutPps(_) => IPVS_STATS_ATTR_OUTPPS,
            InBps(_) => IPVS_STATS_ATTR_INBPS,
            OutBps(_) => IPVS_STATS_ATTR_OUTBPS,
            Other(nla) => nla.kind(),
        }
    }

    /// Parses one attribute of a stats nest (either width).
    pub fn parse(buf: &NlaBuffer<&[u8]>) -> Result<Self, DecodeError> {
        use StatsAttribute::*;
        let v = buf.value();
        let num = |name: &str| parse_u32_or_u64(v).map_err(|e| invalid(name, e));
        Ok(match buf.kind() {
            IPVS_STATS_ATTR_CONNS => Conns(num("IPVS_STATS_ATTR_CONNS")?),
            IPVS_STATS_ATTR_INPKTS => InPkts(num("IPVS_STATS_ATTR_INPKTS")?),
            IPVS_STATS_ATTR_OUTPKTS => OutPkts(num("IPVS_STATS_ATTR_OUTPKTS")?),
            IPVS_STATS_ATTR_INBYTES => InBytes(num("IPVS_STATS_ATTR_INBYTES")?),
            IPVS_STATS_ATTR_OUTBYTES => OutBytes(num("IPVS_STATS_ATTR_OUTBYTES")?),
            IPVS_STATS_ATTR_CPS => Cps(num("IPVS_STATS_ATTR_CPS")?),
            IPVS_STATS_ATTR_INPPS => InPps(num("IPVS_STATS_ATTR_INPPS")?),
            IPVS_STATS_ATTR_OUTPPS => OutPps(num("IPVS_STATS_ATTR_OUTPPS")?),
            IPVS_STATS_ATTR_INBPS => InBps(num("IPVS_STATS_ATTR_INBPS")?),
            IPVS_STATS_ATTR_OUTBPS => OutBps(num("IPVS_STATS_ATTR_OUTBPS")?),
            _ => Other(DefaultNla::parse(buf)?),
        })
    }
}

impl Nla for WideStats<'_> {
    fn value_len(&self) -> usize {
        match (self.attr, self.wide) {
            (StatsAttribute::Other(nla), _) => nla.value_len(),
            (StatsAttribute::InBytes(_) | StatsAttribute::OutBytes(_), _) | (_, true) => 8,
            _ => 4,
        }
    }
    fn kind(&self) -> u16 {
        self.attr.kind()
    }
    fn emit_value(&self, buffer: &mut [u8]) {
        match (self.attr, self.attr.value()) {
            (StatsAttribute::Other(nla), _) => nla.emit_value(buffer),
            (_, Some(v)) if buffer.len() == 8 => buffer.copy_from_slice(&v.to_ne_bytes()),
            // The 32-bit nest: the kernel's own counters are 32 bits here.
            (_, Some(v)) => buffer.copy_from_slice(&(v as u32).to_ne_bytes()),
            (_, None) => {}
        }
    }
}

/// Folds a stats nest into [`Stats`].
pub fn stats_from_attrs(attrs: &[StatsAttribute]) -> Stats {
    let mut s = Stats::default();
    for a in attrs {
        match *a {
            StatsAttribute::Conns(v) => s.conns = v,
            StatsAttribute::InPkts(v) => s.inpkts = v,
            StatsAttribute::OutPkts(v) => s.outpkts = v,
            StatsAttribute::InBytes(v) => s.inbytes = v,
            StatsAttribute::OutBytes(v) => s.outbytes = v,
            StatsAttribute::Cps(v) => s.cps = v,
            StatsAttribute::InPps(v) => s.inpps = v,
            StatsAttribute::OutPps(v) => s.outpps = v,
            StatsAttribute::InBps(v) => s.inbps = v,
            StatsAttribute::OutBps(v) => s.outbps = v,
            StatsAttribute::Other(_) => {}
        }
    }
    s
}

/// The attributes of a stats nest for `s` (used by tests and fakes; the
/// kernel never receives stats).
pub fn stats_to_attrs(s: &Stats) -> Vec<StatsAttribute> {
    vec![
        StatsAttribute::Conns(s.conns),
        StatsAttribute::InPkts(s.inpkts),
        StatsAttribute::OutPkts(s.outpkts),
        StatsAttribute::InBytes(s.inbytes),
        StatsAttribute::OutBytes(s.outbytes),
        StatsAttribute::Cps(s.cps),
        StatsAttribute::InPps(s.inpps),
        StatsAttribute::OutPps(s.outpps),
        StatsAttribute::InBps(s.inbps),
        StatsAttribute::OutBps(s.outbps),
    ]
}

/// Emitted length of a stats nest's contents.
pub(crate) fn stats_len(attrs: &[StatsAttribute], wide: bool) -> usize {
    use netlink_packet_core::Emitable;
    attrs
        .iter()
        .map(|attr| WideStats { attr, wide }.buffer_len())
        .sum()
}

/// Emits a stats nest's contents.
pub(crate) fn emit_stats(attrs: &[StatsAttribute], wide: bool, buffer: &mut [u8]) {
    use netlink_packet_core::Emitable;
    let mut at = 0;
    for attr in attrs {
        let w = WideStats { attr, wide };
        let len = w.buffer_len();
        w.emit(&mut buffer[at..at + len]);
        at += len;
    }
}

/// Parses a stats nest's contents.
pub(crate) fn parse_stats(
    payload: &[u8],
    context: &str,
) -> Result<Vec<StatsAttribute>, DecodeError> {
    super::nla::parse_all(payload, context, StatsAttribute::parse)
}
