//! Destination (real server) attributes (nested in `IPVS_CMD_ATTR_DEST`) and
//! their mapping to [`RealServer`].

use netlink_packet_core::{
    parse_u16, parse_u16_be, parse_u32, parse_u8, DecodeError, DefaultNla, Nla, NlaBuffer,
    Parseable,
};

use super::constants::*;
use super::nla::invalid;
use super::service::{inet_addr_bytes, inet_addr_from};
use super::stats::{emit_stats, parse_stats, stats_from_attrs, stats_len, StatsAttribute};
use crate::types::{
    AddressFamily, ConnCounters, ForwardMethod, RealServer, RealServerKey, Tunnel, TunnelFlags,
    TunnelType,
};

/// One attribute of a destination nest.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DestAttribute {
    /// `IPVS_DEST_ATTR_ADDR`: `union nf_inet_addr`, 16 bytes.
    Addr(Vec<u8>),
    /// `IPVS_DEST_ATTR_PORT` (u16, network byte order on the wire).
    Port(u16),
    /// `IPVS_DEST_ATTR_FWD_METHOD` (u32 connection flags; the kernel keeps
    /// only `IP_VS_CONN_F_FWD_MASK`).
    FwdMethod(u32),
    /// `IPVS_DEST_ATTR_WEIGHT` (u32; the kernel's `int`).
    Weight(u32),
    /// `IPVS_DEST_ATTR_U_THRESH` (u32).
    UpperThreshold(u32),
    /// `IPVS_DEST_ATTR_L_THRESH` (u32).
    LowerThreshold(u32),
    /// `IPVS_DEST_ATTR_ACTIVE_CONNS` (u32, read-only).
    ActiveConns(u32),
    /// `IPVS_DEST_ATTR_INACT_CONNS` (u32, read-only).
    InactiveConns(u32),
    /// `IPVS_DEST_ATTR_PERSIST_CONNS` (u32, read-only).
    PersistentConns(u32),
    /// `IPVS_DEST_ATTR_STATS` (nested, 32-bit counters).
    Stats(Vec<StatsAttribute>),
    /// `IPVS_DEST_ATTR_ADDR_FAMILY` (u16).
    AddrFamily(u16),
    /// `IPVS_DEST_ATTR_STATS64` (nested, 64-bit counters).
    Stats64(Vec<StatsAttribute>),
    /// `IPVS_DEST_ATTR_TUN_TYPE` (u8).
    TunType(u8),
    /// `IPVS_DEST_ATTR_TUN_PORT` (u16, network byte order on the wire).
    TunPort(u16),
    /// `IPVS_DEST_ATTR_TUN_FLAGS` (u16).
    TunFlags(u16),
    /// An attribute we do not know, kept as sent.
    Other(DefaultNla),
}

impl Nla for DestAttribute {
    fn value_len(&self) -> usize {
        use DestAttribute::*;
        match self {
            Addr(a) => a.len(),
            TunType(_) => 1,
            Port(_) | AddrFamily(_) | TunPort(_) | TunFlags(_) => 2,
            FwdMethod(_) | Weight(_) | UpperThreshold(_) | LowerThreshold(_) | ActiveConns(_)
            | InactiveConns(_) | PersistentConns(_) => 4,
            Stats(s) => stats_len(s, false),
            Stats64(s) => stats_len(s, true),
            Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        use DestAttribute::*;
        match self {
            Addr(_) => IPVS_DEST_ATTR_ADDR,
            Port(_) => IPVS_DEST_ATTR_PORT,
            FwdMethod(_) => IPVS_DEST_ATTR_FWD_METHOD,
            Weight(_) => IPVS_DEST_ATTR_WEIGHT,
            UpperThreshold(_) => IPVS_DEST_ATTR_U_THRESH,
            LowerThreshold(_) => IPVS_DEST_ATTR_L_THRESH,
            ActiveConns(_) => IPVS_DEST_ATTR_ACTIVE_CONNS,
            InactiveConns(_) => IPVS_DEST_ATTR_INACT_CONNS,
            PersistentConns(_) => IPVS_DEST_ATTR_PERSIST_CONNS,
            Stats(_) => IPVS_DEST_ATTR_STATS,
            AddrFamily(_) => IPVS_DEST_ATTR_ADDR_FAMILY,
            Stats64(_) => IPVS_DEST_ATTR_STATS64,
            TunType(_) => IPVS_DEST_ATTR_TUN_TYPE,
            TunPort(_) => IPVS_DEST_ATTR_TUN_PORT,
            TunFlags(_) => IPVS_DEST_ATTR_TUN_FLAGS,
            Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        use DestAttribute::*;
        match self {
            Addr(a) => buffer.copy_from_slice(a),
            Port(v) | TunPort(v) => buffer.copy_from_slice(&v.to_be_bytes()),
            AddrFamily(v) | TunFlags(v) => buffer.copy_from_slice(&v.to_ne_bytes()),
            TunType(v) => buffer[0] = *v,
            FwdMethod(v) | Weight(v) | UpperThreshold(v) | LowerThreshold(v) | ActiveConns(v)
            | InactiveConns(v) | PersistentConns(v) => buffer.copy_from_slice(&v.to_ne_bytes()),
            Stats(s) => emit_stats(s, false, buffer),
            Stats64(s) => emit_stats(s, true, buffer),
            Other(nla) => nla.emit_value(buffer),
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&'a T>> for DestAttribute {
    fn parse(buf: &NlaBuffer<&'a T>) -> Result<Self, DecodeError> {
        use DestAttribute::*;
        let v = buf.value();
        let u32_of = |name: &str| parse_u32(v).map_err(|e| invalid(name, e));
        Ok(match buf.kind() {
            IPVS_DEST_ATTR_ADDR => Addr(v.to_vec()),
            IPVS_DEST_ATTR_PORT => {
                Port(parse_u16_be(v).map_err(|e| invalid("IPVS_DEST_ATTR_PORT", e))?)
            }
            IPVS_DEST_ATTR_FWD_METHOD => FwdMethod(u32_of("IPVS_DEST_ATTR_FWD_METHOD")?),
            IPVS_DEST_ATTR_WEIGHT => Weight(u32_of("IPVS_DEST_ATTR_WEIGHT")?),
            IPVS_DEST_ATTR_U_THRESH => UpperThreshold(u32_of("IPVS_DEST_ATTR_U_THRESH")?),
            IPVS_DEST_ATTR_L_THRESH => LowerThreshold(u32_of("IPVS_DEST_ATTR_L_THRESH")?),
            IPVS_DEST_ATTR_ACTIVE_CONNS => ActiveConns(u32_of("IPVS_DEST_ATTR_ACTIVE_CONNS")?),
            IPVS_DEST_ATTR_INACT_CONNS => InactiveConns(u32_of("IPVS_DEST_ATTR_INACT_CONNS")?),
            IPVS_DEST_ATTR_PERSIST_CONNS => {
                PersistentConns(u32_of("IPVS_DEST_ATTR_PERSIST_CONNS")?)
            }
            IPVS_DEST_ATTR_STATS => Stats(parse_stats(v, "IPVS_DEST_ATTR_STATS")?),
            IPVS_DEST_ATTR_ADDR_FAMILY => {
                AddrFamily(parse_u16(v).map_err(|e| invalid("IPVS_DEST_ATTR_ADDR_FAMILY", e))?)
            }
            IPVS_DEST_ATTR_STATS64 => Stats64(parse_stats(v, "IPVS_DEST_ATTR_STATS64")?),
            IPVS_DEST_ATTR_TUN_TYPE => {
                TunType(parse_u8(v).map_err(|e| invalid("IPVS_DEST_ATTR_TUN_TYPE", e))?)
            }
            IPVS_DEST_ATTR_TUN_PORT => {
                TunPort(parse_u16_be(v).map_err(|e| invalid("IPVS_DEST_ATTR_TUN_PORT", e))?)
            }
            IPVS_DEST_ATTR_TUN_FLAGS => {
                TunFlags(parse_u16(v).map_err(|e| invalid("IPVS_DEST_ATTR_TUN_FLAGS", e))?)
            }
            _ => Other(DefaultNla::parse(buf)?),
        })
    }
}

/// The attributes identifying a destination (enough for `IPVS_CMD_DEL_DEST`).
pub fn dest_key_attrs(key: &RealServerKey) -> Vec<DestAttribute> {
    vec![
        DestAttribute::AddrFamily(AddressFamily::of(&key.addr).into()),
        DestAttribute::Addr(inet_addr_bytes(&key.addr)),
        DestAttribute::Port(key.port),
    ]
}

/// All attributes of a destination, as `IPVS_CMD_NEW_DEST` and
/// `IPVS_CMD_SET_DEST` need them. Tunnel attributes are always sent so the
/// kernel's state equals what was asked for; counters are never sent.
pub fn dest_attrs(rs: &RealServer) -> Vec<DestAttribute> {
    let mut attrs = dest_key_attrs(&rs.key);
    attrs.extend([
        DestAttribute::FwdMethod(u32::from(rs.forward) & IP_VS_CONN_F_FWD_MASK),
        DestAttribute::Weight(rs.weight),
        DestAttribute::UpperThreshold(rs.upper_threshold),
        DestAttribute::LowerThreshold(rs.lower_threshold),
        DestAttribute::TunType(rs.tunnel.kind.into()),
        DestAttribute::TunPort(rs.tunnel.port),
        DestAttribute::TunFlags(rs.tunnel.flags.bits()),
    ]);
    attrs
}

/// Builds a [`RealServer`] from a destination nest sent by the kernel.
/// `service_family` is used when the kernel omits `IPVS_DEST_ATTR_ADDR_FAMILY`
/// (kernels before 3.18).
pub fn real_server_from_attrs(
    attrs: &[DestAttribute],
    service_family: AddressFamily,
) -> Result<RealServer, DecodeError> {
    let mut af = None;
    let mut addr = None;
    let mut port = None;
    let mut rs_fwd = ForwardMethod::Masquerade;
    let mut weight = 0;
    let mut upper = 0;
    let mut lower = 0;
    let mut conns = ConnCounters::default();
    let mut tunnel = Tunnel::default();
    let mut stats = None;
    let mut stats64 = None;
    for a in attrs {
        match a {
            DestAttribute::Addr(v) => addr = Some(v.as_slice()),
            DestAttribute::Port(v) => port = Some(*v),
            DestAttribute::FwdMethod(v) => rs_fwd = ForwardMethod::from(v & IP_VS_CONN_F_FWD_MASK),
            DestAttribute::Weight(v) => weight = *v,
            DestAttribute::UpperThreshold(v) => upper = *v,
            DestAttribute::LowerThreshold(v) => lower = *v,
            DestAttribute::ActiveConns(v) => conns.active = *v,
            DestAttribute::InactiveConns(v) => conns.inactive = *v,
            DestAttribute::PersistentConns(v) => conns.persistent = *v,
            DestAttribute::Stats(v) => stats = Some(stats_from_attrs(v)),
            DestAttribute::AddrFamily(v) => af = Some(*v),
            DestAttribute::Stats64(v) => stats64 = Some(stats_from_attrs(v)),
            DestAttribute::TunType(v) => tunnel.kind = TunnelType::from(*v),
            DestAttribute::TunPort(v) => tunnel.port = *v,
            DestAttribute::TunFlags(v) => tunnel.flags = TunnelFlags::from_bits_retain(*v),
            DestAttribute::Other(_) => {}
        }
    }
    let af = af.unwrap_or_else(|| service_family.into());
    let addr = addr.ok_or_else(|| DecodeError::from("destination without IPVS_DEST_ATTR_ADDR"))?;
    let port = port.ok_or_else(|| DecodeError::from("destination without IPVS_DEST_ATTR_PORT"))?;
    let mut rs = RealServer::new(inet_addr_from(af, addr, "IPVS_DEST_ATTR_ADDR")?, port);
    rs.forward = rs_fwd;
    rs.weight = weight;
    rs.upper_threshold = upper;
    rs.lower_threshold = lower;
    rs.tunnel = tunnel;
    rs.conns = conns;
    rs.stats = stats64.or(stats);
    Ok(rs)
}
