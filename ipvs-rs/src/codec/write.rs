//! Service and real-server writes emitted straight from the value types.
//!
//! The same bytes as building the attribute lists ([`service_attrs`],
//! [`dest_attrs`], ...) into an [`IpvsMessage`] and emitting that, without
//! the intermediate vectors and strings: a restore sends one such request
//! per line, and building the lists was most of what ipvs-rs added to the
//! kernel's own time (docs/benchmarks.md, the floor benchmark). The tests
//! compare both paths byte for byte.
//!
//! [`service_attrs`]: super::service_attrs
//! [`dest_attrs`]: super::dest_attrs
//! [`IpvsMessage`]: super::IpvsMessage

use std::net::IpAddr;

use netlink_packet_core::Emitable;
use netlink_packet_generic::GenlFamily;

use super::constants::*;
use super::service::netmask_to_wire;
use super::IpvsCommand;
use crate::types::{
    AddressFamily, RealServer, RealServerKey, ServiceFlags, ServiceKey, VirtualServer,
};

/// What a write request carries.
#[derive(Debug, Clone, Copy)]
pub(crate) enum WriteBody<'a> {
    /// A whole service (`IPVS_CMD_NEW_SERVICE`, `IPVS_CMD_SET_SERVICE`).
    Service(&'a VirtualServer),
    /// A service key (`IPVS_CMD_DEL_SERVICE`).
    ServiceKey(&'a ServiceKey),
    /// A service key and a whole destination (`IPVS_CMD_NEW_DEST`,
    /// `IPVS_CMD_SET_DEST`).
    Dest(&'a ServiceKey, &'a RealServer),
    /// A service key and a destination key (`IPVS_CMD_DEL_DEST`).
    DestKey(&'a ServiceKey, &'a RealServerKey),
}

/// A write request: a command and what it carries, emitted directly.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WriteRequest<'a> {
    pub(crate) cmd: IpvsCommand,
    pub(crate) body: WriteBody<'a>,
}

const fn align(n: usize) -> usize {
    (n + 3) & !3
}

/// Length of an attribute with a value of `n` bytes, padding included.
const fn attr(n: usize) -> usize {
    align(4 + n)
}

fn service_key_len(key: &ServiceKey) -> usize {
    match key {
        // AF, PROTOCOL, ADDR (16), PORT
        ServiceKey::Addr { .. } => attr(2) + attr(2) + attr(16) + attr(2),
        // AF, FWMARK
        ServiceKey::Fwmark { .. } => attr(2) + attr(4),
    }
}

fn service_len(vs: &VirtualServer) -> usize {
    service_key_len(&vs.key)
        + attr(vs.scheduler.len() + 1)
        + attr(8) // FLAGS {flags, mask}
        + attr(4) // TIMEOUT
        + attr(4) // NETMASK
        + vs.pe_name.as_ref().map_or(0, |pe| attr(pe.len() + 1))
}

const DEST_KEY_LEN: usize = attr(2) + attr(16) + attr(2);
// + FWD_METHOD, WEIGHT, U_THRESH, L_THRESH, TUN_TYPE (u8), TUN_PORT, TUN_FLAGS
const DEST_LEN: usize = DEST_KEY_LEN + 4 * attr(4) + attr(1) + attr(2) + attr(2);

/// Writes attributes one after the other into a buffer sized by
/// [`Emitable::buffer_len`].
struct Cursor<'b> {
    buf: &'b mut [u8],
    at: usize,
}

impl Cursor<'_> {
    fn header(&mut self, len: usize, kind: u16) {
        self.buf[self.at..self.at + 2].copy_from_slice(&(len as u16).to_ne_bytes());
        self.buf[self.at + 2..self.at + 4].copy_from_slice(&kind.to_ne_bytes());
    }

    fn attr(&mut self, kind: u16, value: &[u8]) {
        let len = 4 + value.len();
        self.header(len, kind);
        self.buf[self.at + 4..self.at + len].copy_from_slice(value);
        let end = self.at + align(len);
        self.buf[self.at + len..end].fill(0);
        self.at = end;
    }

    fn u16(&mut self, kind: u16, v: u16) {
        self.attr(kind, &v.to_ne_bytes());
    }

    fn be16(&mut self, kind: u16, v: u16) {
        self.attr(kind, &v.to_be_bytes());
    }

    fn u32(&mut self, kind: u16, v: u32) {
        self.attr(kind, &v.to_ne_bytes());
    }

    fn cstr(&mut self, kind: u16, s: &str) {
        let len = 4 + s.len() + 1;
        self.header(len, kind);
        let v = self.at + 4;
        self.buf[v..v + s.len()].copy_from_slice(s.as_bytes());
        let end = self.at + align(len);
        self.buf[v + s.len()..end].fill(0);
        self.at = end;
    }

    /// A nest of `len` bytes of attributes, written by `f`.
    fn nest(&mut self, kind: u16, len: usize, f: impl FnOnce(&mut Self)) {
        self.header(4 + len, kind);
        self.at += 4;
        f(self);
    }

    fn addr(&mut self, kind: u16, addr: &IpAddr) {
        let mut v = [0u8; 16];
        match addr {
            IpAddr::V4(a) => v[..4].copy_from_slice(&a.octets()),
            IpAddr::V6(a) => v.copy_from_slice(&a.octets()),
        }
        self.attr(kind, &v);
    }

    fn service_key(&mut self, key: &ServiceKey) {
        match key {
            ServiceKey::Addr {
                protocol,
                addr,
                port,
            } => {
                self.u16(IPVS_SVC_ATTR_AF, AddressFamily::of(addr).into());
                self.u16(IPVS_SVC_ATTR_PROTOCOL, (*protocol).into());
                self.addr(IPVS_SVC_ATTR_ADDR, addr);
                self.be16(IPVS_SVC_ATTR_PORT, *port);
            }
            ServiceKey::Fwmark { family, mark } => {
                self.u16(IPVS_SVC_ATTR_AF, (*family).into());
                self.u32(IPVS_SVC_ATTR_FWMARK, *mark);
            }
        }
    }

    fn service(&mut self, vs: &VirtualServer) {
        self.service_key(&vs.key);
        self.cstr(IPVS_SVC_ATTR_SCHED_NAME, &vs.scheduler);
        let mut flags = [0u8; 8];
        flags[..4].copy_from_slice(
            &vs.flags
                .difference(ServiceFlags::HASHED)
                .bits()
                .to_ne_bytes(),
        );
        flags[4..].copy_from_slice(&(!0u32).to_ne_bytes());
        self.attr(IPVS_SVC_ATTR_FLAGS, &flags);
        self.u32(IPVS_SVC_ATTR_TIMEOUT, vs.timeout);
        self.u32(
            IPVS_SVC_ATTR_NETMASK,
            netmask_to_wire(vs.key.family(), vs.netmask),
        );
        if let Some(pe) = &vs.pe_name {
            self.cstr(IPVS_SVC_ATTR_PE_NAME, pe);
        }
    }

    fn dest_key(&mut self, key: &RealServerKey) {
        self.u16(
            IPVS_DEST_ATTR_ADDR_FAMILY,
            AddressFamily::of(&key.addr).into(),
        );
        self.addr(IPVS_DEST_ATTR_ADDR, &key.addr);
        self.be16(IPVS_DEST_ATTR_PORT, key.port);
    }

    fn dest(&mut self, rs: &RealServer) {
        self.dest_key(&rs.key);
        self.u32(
            IPVS_DEST_ATTR_FWD_METHOD,
            u32::from(rs.forward) & IP_VS_CONN_F_FWD_MASK,
        );
        self.u32(IPVS_DEST_ATTR_WEIGHT, rs.weight);
        self.u32(IPVS_DEST_ATTR_U_THRESH, rs.upper_threshold);
        self.u32(IPVS_DEST_ATTR_L_THRESH, rs.lower_threshold);
        self.attr(IPVS_DEST_ATTR_TUN_TYPE, &[rs.tunnel.kind.into()]);
        self.be16(IPVS_DEST_ATTR_TUN_PORT, rs.tunnel.port);
        self.u16(IPVS_DEST_ATTR_TUN_FLAGS, rs.tunnel.flags.bits());
    }
}

impl GenlFamily for WriteRequest<'_> {
    fn family_name() -> &'static str {
        IPVS_GENL_NAME
    }
    fn command(&self) -> u8 {
        self.cmd.into()
    }
    fn version(&self) -> u8 {
        IPVS_GENL_VERSION
    }
}

impl Emitable for WriteRequest<'_> {
    fn buffer_len(&self) -> usize {
        match self.body {
            WriteBody::Service(vs) => 4 + service_len(vs),
            WriteBody::ServiceKey(k) => 4 + service_key_len(k),
            WriteBody::Dest(k, _) => 4 + service_key_len(k) + 4 + DEST_LEN,
            WriteBody::DestKey(k, _) => 4 + service_key_len(k) + 4 + DEST_KEY_LEN,
        }
    }

    fn emit(&self, buffer: &mut [u8]) {
        let mut c = Cursor { buf: buffer, at: 0 };
        match self.body {
            WriteBody::Service(vs) => {
                c.nest(IPVS_CMD_ATTR_SERVICE, service_len(vs), |c| c.service(vs))
            }
            WriteBody::ServiceKey(k) => c.nest(IPVS_CMD_ATTR_SERVICE, service_key_len(k), |c| {
                c.service_key(k)
            }),
            WriteBody::Dest(k, rs) => {
                c.nest(IPVS_CMD_ATTR_SERVICE, service_key_len(k), |c| {
                    c.service_key(k)
                });
                c.nest(IPVS_CMD_ATTR_DEST, DEST_LEN, |c| c.dest(rs));
            }
            WriteBody::DestKey(k, rk) => {
                c.nest(IPVS_CMD_ATTR_SERVICE, service_key_len(k), |c| {
                    c.service_key(k)
                });
                c.nest(IPVS_CMD_ATTR_DEST, DEST_KEY_LEN, |c| c.dest_key(rk));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::request::{encode_op, encode_request, Request};
    use crate::types::{ForwardMethod, Protocol, Tunnel, TunnelFlags, TunnelType};
    use crate::Op;

    fn bytes(e: &impl Emitable) -> Vec<u8> {
        // Poisoned, so that a byte the emitter forgets to write shows.
        let mut b = vec![0xa5; e.buffer_len()];
        e.emit(&mut b);
        b
    }

    fn keys() -> Vec<ServiceKey> {
        let v4 = IpAddr::V4(Ipv4Addr::new(10, 96, 0, 1));
        let v6 = IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x10));
        vec![
            ServiceKey::tcp(v4, 80),
            ServiceKey::udp(v6, 53),
            ServiceKey::sctp(v4, 0xfffe),
            ServiceKey::Addr {
                protocol: Protocol::Other(99),
                addr: v4,
                port: 0,
            },
            ServiceKey::fwmark(AddressFamily::Inet, 7),
            ServiceKey::fwmark(AddressFamily::Inet6, u32::MAX),
        ]
    }

    fn services(key: ServiceKey) -> Vec<VirtualServer> {
        let mut out = Vec::new();
        // Scheduler names of every length modulo 4 (padding), up to the limit.
        for sched in ["rr", "wrr", "wlcx", "lblcr", "abcdefghijklmno"] {
            for pe in [None, Some("sip"), Some("abcd")] {
                let mut vs = VirtualServer::new(key)
                    .scheduler(sched)
                    .persistent(360)
                    .netmask(0xffff_ff00)
                    .one_packet();
                vs.flags |= ServiceFlags::HASHED | ServiceFlags::from_bits_retain(0x8000_0000);
                if let Some(pe) = pe {
                    vs = vs.pe_name(pe);
                }
                out.push(vs);
            }
        }
        out.push(VirtualServer::new(key));
        out
    }

    fn real_servers() -> Vec<RealServer> {
        let v4 = IpAddr::V4(Ipv4Addr::new(10, 244, 1, 2));
        let v6 = IpAddr::V6(Ipv6Addr::new(0xfd00, 0x10, 0, 0, 0, 0, 0, 2));
        let mut out = Vec::new();
        for addr in [v4, v6] {
            for forward in [
                ForwardMethod::Masquerade,
                ForwardMethod::Route,
                ForwardMethod::Local,
                ForwardMethod::Other(0xff),
            ] {
                out.push(RealServer::new(addr, 8080).forward(forward).weight(65535));
            }
            for kind in [
                TunnelType::Ipip,
                TunnelType::Gue,
                TunnelType::Gre,
                TunnelType::Other(9),
            ] {
                let t = Tunnel::new(kind)
                    .port(6080)
                    .flags(TunnelFlags::CSUM | TunnelFlags::from_bits_retain(0x8000));
                out.push(
                    RealServer::new(addr, 0)
                        .tunnel(t)
                        .thresholds(100, 10)
                        .weight(0),
                );
            }
        }
        out
    }

    /// Every write: the direct bytes are the attribute lists' bytes.
    #[test]
    fn direct_writes_emit_the_codec_bytes() {
        let mut ops = Vec::new();
        for key in keys() {
            for vs in services(key) {
                ops.push(Op::AddService(vs.clone()));
                ops.push(Op::EditService(vs));
            }
            ops.push(Op::DeleteService(key));
            for rs in real_servers() {
                ops.push(Op::DeleteRealServer(key, rs.key));
                ops.push(Op::AddRealServer(key, rs.clone()));
                ops.push(Op::EditRealServer(key, rs));
            }
        }
        assert!(ops.len() > 300);
        for op in &ops {
            let direct = encode_request(op).unwrap();
            assert!(matches!(direct, Request::Write(_)), "{op:?} not direct");
            let tree = encode_op(op).unwrap();
            assert_eq!(direct.command(), tree.command(), "{op:?}");
            assert_eq!(direct.version(), tree.version(), "{op:?}");
            assert_eq!(bytes(&direct), bytes(&tree), "{op:?}");
        }
    }

    /// The checks are the same on both paths.
    #[test]
    fn direct_writes_refuse_what_encode_op_refuses() {
        let bad = [
            Op::AddService(VirtualServer::new(ServiceKey::fwmark(
                AddressFamily::Inet,
                0,
            ))),
            Op::AddService(VirtualServer::new(keys()[0]).scheduler("")),
            Op::EditService(VirtualServer::new(keys()[0]).scheduler("a-very-long-scheduler")),
            Op::AddRealServer(
                keys()[0],
                RealServer::new(IpAddr::from([1, 2, 3, 4]), 1).weight(u32::MAX),
            ),
            Op::DeleteRealServer(
                ServiceKey::fwmark(AddressFamily::Inet, 0),
                RealServer::new(IpAddr::from([1, 2, 3, 4]), 1).key,
            ),
        ];
        for op in &bad {
            assert!(encode_op(op).is_err(), "{op:?}");
            assert!(encode_request(op).is_err(), "{op:?}");
        }
    }
}
