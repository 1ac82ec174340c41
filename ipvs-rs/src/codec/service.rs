//! Service attributes (nested in `IPVS_CMD_ATTR_SERVICE`) and their mapping
//! to [`VirtualServer`] / [`ServiceKey`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_core::{
    parse_string, parse_u16, parse_u16_be, parse_u32, DecodeError, DefaultNla, Nla, NlaBuffer,
    Parseable,
};

use super::constants::*;
use super::nla::{emit_cstr, invalid};
use super::stats::{emit_stats, parse_stats, stats_from_attrs, stats_len, StatsAttribute};
use crate::types::{AddressFamily, Protocol, ServiceFlags, ServiceKey, VirtualServer};

/// One attribute of a service nest.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServiceAttribute {
    /// `IPVS_SVC_ATTR_AF` (u16).
    Family(u16),
    /// `IPVS_SVC_ATTR_PROTOCOL` (u16).
    Protocol(u16),
    /// `IPVS_SVC_ATTR_ADDR`: `union nf_inet_addr`, 16 bytes (IPv4 in the first 4).
    Addr(Vec<u8>),
    /// `IPVS_SVC_ATTR_PORT` (u16, network byte order on the wire).
    Port(u16),
    /// `IPVS_SVC_ATTR_FWMARK` (u32).
    Fwmark(u32),
    /// `IPVS_SVC_ATTR_SCHED_NAME` (NUL-terminated string).
    SchedName(String),
    /// `IPVS_SVC_ATTR_FLAGS`: `struct ip_vs_flags { flags, mask }`.
    Flags {
        /// Flag values.
        flags: u32,
        /// Which flags `flags` sets.
        mask: u32,
    },
    /// `IPVS_SVC_ATTR_TIMEOUT` (u32 seconds).
    Timeout(u32),
    /// `IPVS_SVC_ATTR_NETMASK`: the u32 exactly as the kernel stores it
    /// (for IPv4 a `__be32` mask, for IPv6 the prefix length).
    Netmask(u32),
    /// `IPVS_SVC_ATTR_STATS` (nested, 32-bit counters).
    Stats(Vec<StatsAttribute>),
    /// `IPVS_SVC_ATTR_PE_NAME` (NUL-terminated string).
    PeName(String),
    /// `IPVS_SVC_ATTR_STATS64` (nested, 64-bit counters).
    Stats64(Vec<StatsAttribute>),
    /// An attribute we do not know, kept as sent.
    Other(DefaultNla),
}

impl Nla for ServiceAttribute {
    fn value_len(&self) -> usize {
        use ServiceAttribute::*;
        match self {
            Family(_) | Protocol(_) | Port(_) => 2,
            Fwmark(_) | Timeout(_) | Netmask(_) => 4,
            Flags { .. } => 8,
            Addr(a) => a.len(),
            SchedName(s) | PeName(s) => s.len() + 1,
            Stats(s) => stats_len(s, false),
            Stats64(s) => stats_len(s, true),
            Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        use ServiceAttribute::*;
        match self {
            Family(_) => IPVS_SVC_ATTR_AF,
            Protocol(_) => IPVS_SVC_ATTR_PROTOCOL,
            Addr(_) => IPVS_SVC_ATTR_ADDR,
            Port(_) => IPVS_SVC_ATTR_PORT,
            Fwmark(_) => IPVS_SVC_ATTR_FWMARK,
            SchedName(_) => IPVS_SVC_ATTR_SCHED_NAME,
            Flags { .. } => IPVS_SVC_ATTR_FLAGS,
            Timeout(_) => IPVS_SVC_ATTR_TIMEOUT,
            Netmask(_) => IPVS_SVC_ATTR_NETMASK,
            Stats(_) => IPVS_SVC_ATTR_STATS,
            PeName(_) => IPVS_SVC_ATTR_PE_NAME,
            Stats64(_) => IPVS_SVC_ATTR_STATS64,
            Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        use ServiceAttribute::*;
        match self {
            Family(v) | Protocol(v) => buffer.copy_from_slice(&v.to_ne_bytes()),
            Port(v) => buffer.copy_from_slice(&v.to_be_bytes()),
            Fwmark(v) | Timeout(v) | Netmask(v) => buffer.copy_from_slice(&v.to_ne_bytes()),
            Flags { flags, mask } => {
                buffer[..4].copy_from_slice(&flags.to_ne_bytes());
                buffer[4..8].copy_from_slice(&mask.to_ne_bytes());
            }
            Addr(a) => buffer.copy_from_slice(a),
            SchedName(s) | PeName(s) => emit_cstr(s, buffer),
            Stats(s) => emit_stats(s, false, buffer),
            Stats64(s) => emit_stats(s, true, buffer),
            Other(nla) => nla.emit_value(buffer),
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&'a T>> for ServiceAttribute {
    fn parse(buf: &NlaBuffer<&'a T>) -> Result<Self, DecodeError> {
        use ServiceAttribute::*;
        let v = buf.value();
        Ok(match buf.kind() {
            IPVS_SVC_ATTR_AF => Family(parse_u16(v).map_err(|e| invalid("IPVS_SVC_ATTR_AF", e))?),
            IPVS_SVC_ATTR_PROTOCOL => {
                Protocol(parse_u16(v).map_err(|e| invalid("IPVS_SVC_ATTR_PROTOCOL", e))?)
            }
            IPVS_SVC_ATTR_ADDR => Addr(v.to_vec()),
            IPVS_SVC_ATTR_PORT => {
                Port(parse_u16_be(v).map_err(|e| invalid("IPVS_SVC_ATTR_PORT", e))?)
            }
            IPVS_SVC_ATTR_FWMARK => {
                Fwmark(parse_u32(v).map_err(|e| invalid("IPVS_SVC_ATTR_FWMARK", e))?)
            }
            IPVS_SVC_ATTR_SCHED_NAME => {
                SchedName(parse_string(v).map_err(|e| invalid("IPVS_SVC_ATTR_SCHED_NAME", e))?)
            }
            IPVS_SVC_ATTR_FLAGS => {
                if v.len() != 8 {
                    return Err(invalid(
                        "IPVS_SVC_ATTR_FLAGS",
                        DecodeError::invalid_number(8, v.len()),
                    ));
                }
                Flags {
                    flags: parse_u32(&v[..4])?,
                    mask: parse_u32(&v[4..8])?,
                }
            }
            IPVS_SVC_ATTR_TIMEOUT => {
                Timeout(parse_u32(v).map_err(|e| invalid("IPVS_SVC_ATTR_TIMEOUT", e))?)
            }
            IPVS_SVC_ATTR_NETMASK => {
                Netmask(parse_u32(v).map_err(|e| invalid("IPVS_SVC_ATTR_NETMASK", e))?)
            }
            IPVS_SVC_ATTR_STATS => Stats(parse_stats(v, "IPVS_SVC_ATTR_STATS")?),
            IPVS_SVC_ATTR_PE_NAME => {
                PeName(parse_string(v).map_err(|e| invalid("IPVS_SVC_ATTR_PE_NAME", e))?)
            }
            IPVS_SVC_ATTR_STATS64 => Stats64(parse_stats(v, "IPVS_SVC_ATTR_STATS64")?),
            _ => Other(DefaultNla::parse(buf)?),
        })
    }
}

/// The 16-byte `union nf_inet_addr` of an address.
pub(crate) fn inet_addr_bytes(addr: &IpAddr) -> Vec<u8> {
    let mut out = vec![0u8; 16];
    match addr {
        IpAddr::V4(a) => out[..4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => out.copy_from_slice(&a.octets()),
    }
    out
}

/// Reads an address of family `af` from a `union nf_inet_addr` (4 or 16 bytes).
pub(crate) fn inet_addr_from(af: u16, bytes: &[u8], what: &str) -> Result<IpAddr, DecodeError> {
    match af {
        AF_INET if bytes.len() >= 4 => Ok(IpAddr::V4(Ipv4Addr::new(
            bytes[0], bytes[1], bytes[2], bytes[3],
        ))),
        AF_INET6 if bytes.len() >= 16 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(&bytes[..16]);
            Ok(IpAddr::V6(Ipv6Addr::from(o)))
        }
        AF_INET | AF_INET6 => Err(DecodeError::from(format!(
            "{what}: address of {} bytes is too short for family {af}",
            bytes.len()
        ))),
        _ => Err(DecodeError::from(format!(
            "{what}: unsupported address family {af}"
        ))),
    }
}

/// The attributes identifying a service (enough for delete, get, zero and
/// as the parent of a destination).
pub fn service_key_attrs(key: &ServiceKey) -> Vec<ServiceAttribute> {
    match key {
        ServiceKey::Addr {
            protocol,
            addr,
            port,
        } => vec![
            ServiceAttribute::Family(AddressFamily::of(addr).into()),
            ServiceAttribute::Protocol((*protocol).into()),
            ServiceAttribute::Addr(inet_addr_bytes(addr)),
            ServiceAttribute::Port(*port),
        ],
        ServiceKey::Fwmark { family, mark } => vec![
            ServiceAttribute::Family((*family).into()),
            ServiceAttribute::Fwmark(*mark),
        ],
    }
}

/// The netmask as the kernel stores it: a `__be32` mask for IPv4 (our
/// [`VirtualServer::netmask`] holds it in host order), a plain prefix length
/// otherwise.
pub(crate) fn netmask_to_wire(family: AddressFamily, netmask: u32) -> u32 {
    match family {
        AddressFamily::Inet => netmask.to_be(),
        _ => netmask,
    }
}

fn netmask_from_wire(family: u16, raw: u32) -> u32 {
    match family {
        AF_INET => u32::from_be(raw),
        _ => raw,
    }
}

/// All attributes of a service, as `IPVS_CMD_NEW_SERVICE` and
/// `IPVS_CMD_SET_SERVICE` need them. Read-only fields (stats, the HASHED
/// flag) are not sent.
pub fn service_attrs(vs: &VirtualServer) -> Vec<ServiceAttribute> {
    let mut attrs = service_key_attrs(&vs.key);
    attrs.push(ServiceAttribute::SchedName(vs.scheduler.clone()));
    attrs.push(ServiceAttribute::Flags {
        flags: vs.flags.difference(ServiceFlags::HASHED).bits(),
        mask: !0,
    });
    attrs.push(ServiceAttribute::Timeout(vs.timeout));
    attrs.push(ServiceAttribute::Netmask(netmask_to_wire(
        vs.key.family(),
        vs.netmask,
    )));
    if let Some(pe) = &vs.pe_name {
        attrs.push(ServiceAttribute::PeName(pe.clone()));
    }
    attrs
}

/// Builds a [`VirtualServer`] from a service nest sent by the kernel.
pub fn virtual_server_from_attrs(attrs: &[ServiceAttribute]) -> Result<VirtualServer, DecodeError> {
    let mut af = None;
    let mut protocol = None;
    let mut addr = None;
    let mut port = None;
    let mut fwmark = None;
    let mut sched = String::new();
    let mut flags = ServiceFlags::empty();
    let mut timeout = 0;
    let mut netmask = None;
    let mut pe_name = None;
    let mut stats = None;
    let mut stats64 = None;
    for a in attrs {
        match a {
            ServiceAttribute::Family(v) => af = Some(*v),
            ServiceAttribute::Protocol(v) => protocol = Some(*v),
            ServiceAttribute::Addr(v) => addr = Some(v.as_slice()),
            ServiceAttribute::Port(v) => port = Some(*v),
            ServiceAttribute::Fwmark(v) => fwmark = Some(*v),
            ServiceAttribute::SchedName(v) => sched.clone_from(v),
            ServiceAttribute::Flags { flags: f, mask } => {
                flags = ServiceFlags::from_bits_retain(f & mask)
            }
            ServiceAttribute::Timeout(v) => timeout = *v,
            ServiceAttribute::Netmask(v) => netmask = Some(*v),
            ServiceAttribute::PeName(v) if !v.is_empty() => pe_name = Some(v.clone()),
            ServiceAttribute::PeName(_) => {}
            ServiceAttribute::Stats(v) => stats = Some(stats_from_attrs(v)),
            ServiceAttribute::Stats64(v) => stats64 = Some(stats_from_attrs(v)),
            ServiceAttribute::Other(_) => {}
        }
    }
    let af = af.ok_or_else(|| DecodeError::from("service without IPVS_SVC_ATTR_AF"))?;
    let key = match (fwmark, protocol, addr, port) {
        (Some(mark), _, _, _) if mark != 0 => ServiceKey::Fwmark {
            family: AddressFamily::from(af),
            mark,
        },
        (_, Some(protocol), Some(addr), Some(port)) => ServiceKey::Addr {
            protocol: Protocol::from(protocol),
            addr: inet_addr_from(af, addr, "IPVS_SVC_ATTR_ADDR")?,
            port,
        },
        _ => {
            return Err(DecodeError::from(
                "service with neither a firewall mark nor protocol, address and port",
            ))
        }
    };
    let mut vs = VirtualServer::new(key);
    vs.scheduler = sched;
    vs.flags = flags;
    vs.timeout = timeout;
    if let Some(raw) = netmask {
        vs.netmask = netmask_from_wire(af, raw);
    }
    vs.pe_name = pe_name;
    vs.stats = stats64.or(stats);
    Ok(vs)
}
