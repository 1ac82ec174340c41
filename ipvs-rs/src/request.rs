//! Turning operations into IPVS requests (pure: no sockets), after
//! checking what the kernel would refuse anyway or could not represent.

// Used by the clients; a codec-only build compiles it for its tests.
#![cfg_attr(not(feature = "blocking"), allow(dead_code))]

use crate::batch::Op;
use crate::codec::constants::{IP_VS_IFNAME_MAXLEN, IP_VS_PENAME_MAXLEN, IP_VS_SCHEDNAME_MAXLEN};
use crate::codec::write::{WriteBody, WriteRequest};
use crate::codec::{
    daemon_attrs, dest_attrs, dest_key_attrs, service_attrs, service_key_attrs, DaemonAttribute,
    IpvsAttribute, IpvsCommand, IpvsMessage,
};
use crate::error::{Error, Result};
use crate::types::{DaemonState, RealServer, ServiceKey, SyncDaemon, VirtualServer};
use netlink_packet_core::Emitable;
use netlink_packet_generic::GenlFamily;

/// A human description of `op` for error messages, e.g.
/// `add service TCP 10.0.0.1:80`.
pub(crate) fn describe(op: &Op) -> String {
    match op {
        Op::AddService(vs) => format!("add service {}", vs.key),
        Op::EditService(vs) => format!("edit service {}", vs.key),
        Op::DeleteService(k) => format!("delete service {k}"),
        Op::AddRealServer(k, r) => {
            format!("add real server {} to {k}", r.key)
        }
        Op::EditRealServer(k, r) => {
            format!("edit real server {} of {k}", r.key)
        }
        Op::DeleteRealServer(k, r) => format!("delete real server {r} of {k}"),
        Op::Flush => "flush".to_owned(),
        Op::Zero(None) => "zero all counters".to_owned(),
        Op::Zero(Some(k)) => format!("zero counters of {k}"),
        Op::SetTimeouts(_) => "set timeouts".to_owned(),
    }
}

fn check_name(what: &str, name: &str, max: usize) -> Result<()> {
    if name.len() >= max || name.as_bytes().contains(&0) {
        return Err(Error::InvalidArgument(format!(
            "{what} {name:?} must be shorter than {max} bytes and contain no NUL"
        )));
    }
    Ok(())
}

fn check_key(key: &ServiceKey) -> Result<()> {
    if let ServiceKey::Fwmark { mark: 0, .. } = key {
        return Err(Error::InvalidArgument(
            "a firewall-mark service needs a non-zero mark".to_owned(),
        ));
    }
    Ok(())
}

fn check_service(vs: &VirtualServer) -> Result<()> {
    check_key(&vs.key)?;
    check_name("scheduler name", &vs.scheduler, IP_VS_SCHEDNAME_MAXLEN)?;
    if vs.scheduler.is_empty() {
        return Err(Error::InvalidArgument("empty scheduler name".to_owned()));
    }
    if let Some(pe) = &vs.pe_name {
        check_name("persistence engine name", pe, IP_VS_PENAME_MAXLEN)?;
    }
    Ok(())
}

fn check_real_server(rs: &RealServer) -> Result<()> {
    if rs.weight > i32::MAX as u32 {
        return Err(Error::InvalidArgument(format!(
            "weight {} is larger than the kernel's maximum {}",
            rs.weight,
            i32::MAX
        )));
    }
    Ok(())
}

pub(crate) fn svc(key: &ServiceKey) -> IpvsAttribute {
    IpvsAttribute::Service(service_key_attrs(key))
}

/// An operation's request as the clients send it: service and real-server
/// writes emitted directly from the operation, the rest as an
/// [`IpvsMessage`]. The same bytes either way.
#[derive(Debug)]
pub(crate) enum Request<'a> {
    Write(WriteRequest<'a>),
    Message(IpvsMessage),
}

impl GenlFamily for Request<'_> {
    fn family_name() -> &'static str {
        IpvsMessage::family_name()
    }
    fn command(&self) -> u8 {
        match self {
            Request::Write(w) => w.command(),
            Request::Message(m) => m.command(),
        }
    }
    fn version(&self) -> u8 {
        match self {
            Request::Write(w) => w.version(),
            Request::Message(m) => m.version(),
        }
    }
}

impl Emitable for Request<'_> {
    fn buffer_len(&self) -> usize {
        match self {
            Request::Write(w) => w.buffer_len(),
            Request::Message(m) => m.buffer_len(),
        }
    }
    fn emit(&self, buffer: &mut [u8]) {
        match self {
            Request::Write(w) => w.emit(buffer),
            Request::Message(m) => m.emit(buffer),
        }
    }
}

/// The request for one operation, as [`encode_op`] checks and builds it,
/// with the writes of a restore or a sync emitted directly.
pub(crate) fn encode_request(op: &Op) -> Result<Request<'_>> {
    use IpvsCommand as C;
    let write = |cmd, body| Ok(Request::Write(WriteRequest { cmd, body }));
    match op {
        Op::AddService(vs) | Op::EditService(vs) => {
            check_service(vs)?;
            let cmd = if matches!(op, Op::AddService(_)) {
                C::NewService
            } else {
                C::SetService
            };
            write(cmd, WriteBody::Service(vs))
        }
        Op::DeleteService(k) => {
            check_key(k)?;
            write(C::DelService, WriteBody::ServiceKey(k))
        }
        Op::AddRealServer(k, rs) | Op::EditRealServer(k, rs) => {
            check_key(k)?;
            check_real_server(rs)?;
            let cmd = if matches!(op, Op::AddRealServer(..)) {
                C::NewDest
            } else {
                C::SetDest
            };
            write(cmd, WriteBody::Dest(k, rs))
        }
        Op::DeleteRealServer(k, rk) => {
            check_key(k)?;
            write(C::DelDest, WriteBody::DestKey(k, rk))
        }
        other => encode_op(other).map(Request::Message),
    }
}

/// The request for one operation, after checking what the kernel would
/// refuse anyway or could not represent.
pub(crate) fn encode_op(op: &Op) -> Result<IpvsMessage> {
    use IpvsCommand as C;
    Ok(match op {
        Op::AddService(vs) | Op::EditService(vs) => {
            check_service(vs)?;
            let cmd = if matches!(op, Op::AddService(_)) {
                C::NewService
            } else {
                C::SetService
            };
            IpvsMessage::new(cmd, vec![IpvsAttribute::Service(service_attrs(vs))])
        }
        Op::DeleteService(k) => {
            check_key(k)?;
            IpvsMessage::new(C::DelService, vec![svc(k)])
        }
        Op::AddRealServer(k, rs) | Op::EditRealServer(k, rs) => {
            check_key(k)?;
            check_real_server(rs)?;
            let cmd = if matches!(op, Op::AddRealServer(..)) {
                C::NewDest
            } else {
                C::SetDest
            };
            IpvsMessage::new(cmd, vec![svc(k), IpvsAttribute::Dest(dest_attrs(rs))])
        }
        Op::DeleteRealServer(k, rk) => {
            check_key(k)?;
            IpvsMessage::new(
                C::DelDest,
                vec![svc(k), IpvsAttribute::Dest(dest_key_attrs(rk))],
            )
        }
        Op::Flush => IpvsMessage::new(C::Flush, vec![]),
        Op::Zero(None) => IpvsMessage::new(C::Zero, vec![]),
        Op::Zero(Some(k)) => {
            check_key(k)?;
            IpvsMessage::new(C::Zero, vec![svc(k)])
        }
        Op::SetTimeouts(t) => IpvsMessage::new(
            C::SetConfig,
            vec![
                IpvsAttribute::TimeoutTcp(t.tcp),
                IpvsAttribute::TimeoutTcpFin(t.tcp_fin),
                IpvsAttribute::TimeoutUdp(t.udp),
            ],
        ),
    })
}

pub(crate) fn start_daemon_msg(d: &SyncDaemon) -> Result<IpvsMessage> {
    check_name("interface name", &d.interface, IP_VS_IFNAME_MAXLEN)?;
    if d.interface.is_empty() {
        return Err(Error::InvalidArgument(
            "a sync daemon needs a multicast interface".to_owned(),
        ));
    }
    Ok(IpvsMessage::new(
        IpvsCommand::NewDaemon,
        vec![IpvsAttribute::Daemon(daemon_attrs(d))],
    ))
}

pub(crate) fn stop_daemon_msg(state: DaemonState) -> IpvsMessage {
    IpvsMessage::new(
        IpvsCommand::DelDaemon,
        vec![IpvsAttribute::Daemon(vec![DaemonAttribute::State(
            state.into(),
        )])],
    )
}
