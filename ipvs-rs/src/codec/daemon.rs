//! Sync-daemon attributes (nested in `IPVS_CMD_ATTR_DAEMON`) and their
//! mapping to [`SyncDaemon`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_core::{
    parse_string, parse_u16, parse_u32, parse_u8, DecodeError, DefaultNla, Nla, NlaBuffer,
    Parseable,
};

use super::constants::*;
use super::nla::{emit_cstr, invalid};
use crate::types::{DaemonState, SyncDaemon};

/// One attribute of a sync-daemon nest.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DaemonAttribute {
    /// `IPVS_DAEMON_ATTR_STATE` (u32: 1 master, 2 backup).
    State(u32),
    /// `IPVS_DAEMON_ATTR_MCAST_IFN` (NUL-terminated interface name).
    McastIfn(String),
    /// `IPVS_DAEMON_ATTR_SYNC_ID` (u32).
    SyncId(u32),
    /// `IPVS_DAEMON_ATTR_SYNC_MAXLEN` (u16).
    SyncMaxlen(u16),
    /// `IPVS_DAEMON_ATTR_MCAST_GROUP` (`struct in_addr`, 4 bytes).
    McastGroup(Ipv4Addr),
    /// `IPVS_DAEMON_ATTR_MCAST_GROUP6` (`struct in6_addr`, 16 bytes).
    McastGroup6(Ipv6Addr),
    /// `IPVS_DAEMON_ATTR_MCAST_PORT` (u16 in host byte order: unlike the
    /// service and destination ports, the kernel reads it with `nla_get_u16`).
    McastPort(u16),
    /// `IPVS_DAEMON_ATTR_MCAST_TTL` (u8).
    McastTtl(u8),
    /// An attribute we do not know, kept as sent.
    Other(DefaultNla),
}

impl Nla for DaemonAttribute {
    fn value_len(&self) -> usize {
        use DaemonAttribute::*;
        match self {
            State(_) | SyncId(_) | McastGroup(_) => 4,
            McastIfn(s) => s.len() + 1,
            SyncMaxlen(_) | McastPort(_) => 2,
            McastGroup6(_) => 16,
            McastTtl(_) => 1,
            Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        use DaemonAttribute::*;
        match self {
            State(_) => IPVS_DAEMON_ATTR_STATE,
            McastIfn(_) => IPVS_DAEMON_ATTR_MCAST_IFN,
            SyncId(_) => IPVS_DAEMON_ATTR_SYNC_ID,
            SyncMaxlen(_) => IPVS_DAEMON_ATTR_SYNC_MAXLEN,
            McastGroup(_) => IPVS_DAEMON_ATTR_MCAST_GROUP,
            McastGroup6(_) => IPVS_DAEMON_ATTR_MCAST_GROUP6,
            McastPort(_) => IPVS_DAEMON_ATTR_MCAST_PORT,
            McastTtl(_) => IPVS_DAEMON_ATTR_MCAST_TTL,
            Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        use DaemonAttribute::*;
        match self {
            State(v) | SyncId(v) => buffer.copy_from_slice(&v.to_ne_bytes()),
            McastIfn(s) => emit_cstr(s, buffer),
            SyncMaxlen(v) | McastPort(v) => buffer.copy_from_slice(&v.to_ne_bytes()),
            McastGroup(a) => buffer.copy_from_slice(&a.octets()),
            McastGroup6(a) => buffer.copy_from_slice(&a.octets()),
            McastTtl(v) => buffer[0] = *v,
            Other(nla) => nla.emit_value(buffer),
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&'a T>> for DaemonAttribute {
    fn parse(buf: &NlaBuffer<&'a T>) -> Result<Self, DecodeError> {
        use DaemonAttribute::*;
        let v = buf.value();
        Ok(match buf.kind() {
            IPVS_DAEMON_ATTR_STATE => {
                State(parse_u32(v).map_err(|e| invalid("IPVS_DAEMON_ATTR_STATE", e))?)
            }
            IPVS_DAEMON_ATTR_MCAST_IFN => {
                McastIfn(parse_string(v).map_err(|e| invalid("IPVS_DAEMON_ATTR_MCAST_IFN", e))?)
            }
            IPVS_DAEMON_ATTR_SYNC_ID => {
                SyncId(parse_u32(v).map_err(|e| invalid("IPVS_DAEMON_ATTR_SYNC_ID", e))?)
            }
            IPVS_DAEMON_ATTR_SYNC_MAXLEN => {
                SyncMaxlen(parse_u16(v).map_err(|e| invalid("IPVS_DAEMON_ATTR_SYNC_MAXLEN", e))?)
            }
            IPVS_DAEMON_ATTR_MCAST_GROUP => match <[u8; 4]>::try_from(v) {
                Ok(o) => McastGroup(Ipv4Addr::from(o)),
                Err(_) => {
                    return Err(invalid(
                        "IPVS_DAEMON_ATTR_MCAST_GROUP",
                        DecodeError::invalid_ip_address(v.len()),
                    ))
                }
            },
            IPVS_DAEMON_ATTR_MCAST_GROUP6 => match <[u8; 16]>::try_from(v) {
                Ok(o) => McastGroup6(Ipv6Addr::from(o)),
                Err(_) => {
                    return Err(invalid(
                        "IPVS_DAEMON_ATTR_MCAST_GROUP6",
                        DecodeError::invalid_ip_address(v.len()),
                    ))
                }
            },
            IPVS_DAEMON_ATTR_MCAST_PORT => {
                McastPort(parse_u16(v).map_err(|e| invalid("IPVS_DAEMON_ATTR_MCAST_PORT", e))?)
            }
            IPVS_DAEMON_ATTR_MCAST_TTL => {
                McastTtl(parse_u8(v).map_err(|e| invalid("IPVS_DAEMON_ATTR_MCAST_TTL", e))?)
            }
            _ => Other(DefaultNla::parse(buf)?),
        })
    }
}

/// The attributes that start a daemon (`IPVS_CMD_NEW_DAEMON`).
pub fn daemon_attrs(d: &SyncDaemon) -> Vec<DaemonAttribute> {
    let mut attrs = vec![
        DaemonAttribute::State(d.state.into()),
        DaemonAttribute::McastIfn(d.interface.clone()),
        DaemonAttribute::SyncId(d.sync_id),
    ];
    if let Some(v) = d.max_len {
        attrs.push(DaemonAttribute::SyncMaxlen(v));
    }
    match d.mcast_group {
        Some(IpAddr::V4(a)) => attrs.push(DaemonAttribute::McastGroup(a)),
        Some(IpAddr::V6(a)) => attrs.push(DaemonAttribute::McastGroup6(a)),
        None => {}
    }
    if let Some(v) = d.mcast_port {
        attrs.push(DaemonAttribute::McastPort(v));
    }
    if let Some(v) = d.mcast_ttl {
        attrs.push(DaemonAttribute::McastTtl(v));
    }
    attrs
}

/// Builds a [`SyncDaemon`] from a daemon nest sent by the kernel.
pub fn sync_daemon_from_attrs(attrs: &[DaemonAttribute]) -> Result<SyncDaemon, DecodeError> {
    let mut state = None;
    let mut d = SyncDaemon::new(DaemonState::Master, String::new(), 0);
    for a in attrs {
        match a {
            DaemonAttribute::State(v) => state = Some(DaemonState::from(*v)),
            DaemonAttribute::McastIfn(v) => d.interface.clone_from(v),
            DaemonAttribute::SyncId(v) => d.sync_id = *v,
            DaemonAttribute::SyncMaxlen(v) => d.max_len = Some(*v),
            DaemonAttribute::McastGroup(v) => d.mcast_group = Some(IpAddr::V4(*v)),
            DaemonAttribute::McastGroup6(v) => d.mcast_group = Some(IpAddr::V6(*v)),
            DaemonAttribute::McastPort(v) => d.mcast_port = Some(*v),
            DaemonAttribute::McastTtl(v) => d.mcast_ttl = Some(*v),
            DaemonAttribute::Other(_) => {}
        }
    }
    d.state = state.ok_or_else(|| DecodeError::from("daemon without IPVS_DAEMON_ATTR_STATE"))?;
    Ok(d)
}
