//! IPVS generic-netlink messages: a command and its first-level attributes.

use netlink_packet_core::{
    parse_u32, DecodeError, DefaultNla, Emitable, Nla, NlaBuffer, Parseable, ParseableParametrized,
};
use netlink_packet_generic::{GenlFamily, GenlHeader};

use super::constants::*;
use super::daemon::DaemonAttribute;
use super::dest::DestAttribute;
use super::nla::{emit_nested, invalid, nested_len, parse_all};
use super::service::ServiceAttribute;

/// An IPVS command (`IPVS_CMD_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IpvsCommand {
    /// `IPVS_CMD_NEW_SERVICE` (ipvsadm `-A`; also the reply to GET_SERVICE).
    NewService,
    /// `IPVS_CMD_SET_SERVICE` (ipvsadm `-E`).
    SetService,
    /// `IPVS_CMD_DEL_SERVICE` (ipvsadm `-D`).
    DelService,
    /// `IPVS_CMD_GET_SERVICE` (ipvsadm `-L`).
    GetService,
    /// `IPVS_CMD_NEW_DEST` (ipvsadm `-a`; also the reply to GET_DEST).
    NewDest,
    /// `IPVS_CMD_SET_DEST` (ipvsadm `-e`).
    SetDest,
    /// `IPVS_CMD_DEL_DEST` (ipvsadm `-d`).
    DelDest,
    /// `IPVS_CMD_GET_DEST`.
    GetDest,
    /// `IPVS_CMD_NEW_DAEMON` (ipvsadm `--start-daemon`).
    NewDaemon,
    /// `IPVS_CMD_DEL_DAEMON` (ipvsadm `--stop-daemon`).
    DelDaemon,
    /// `IPVS_CMD_GET_DAEMON` (ipvsadm `-L --daemon`).
    GetDaemon,
    /// `IPVS_CMD_SET_CONFIG` (ipvsadm `--set`; also the reply to GET_CONFIG).
    SetConfig,
    /// `IPVS_CMD_GET_CONFIG` (ipvsadm `-L --timeout`).
    GetConfig,
    /// `IPVS_CMD_SET_INFO` (only the reply to GET_INFO).
    SetInfo,
    /// `IPVS_CMD_GET_INFO` (ipvsadm's version header).
    GetInfo,
    /// `IPVS_CMD_ZERO` (ipvsadm `-Z`).
    Zero,
    /// `IPVS_CMD_FLUSH` (ipvsadm `-C`).
    Flush,
    /// A command we do not know.
    Other(u8),
}

impl From<IpvsCommand> for u8 {
    fn from(c: IpvsCommand) -> u8 {
        use IpvsCommand::*;
        match c {
            NewService => IPVS_CMD_NEW_SERVICE,
            SetService => IPVS_CMD_SET_SERVICE,
            DelService => IPVS_CMD_DEL_SERVICE,
            GetService => IPVS_CMD_GET_SERVICE,
            NewDest => IPVS_CMD_NEW_DEST,
            SetDest => IPVS_CMD_SET_DEST,
            DelDest => IPVS_CMD_DEL_DEST,
            GetDest => IPVS_CMD_GET_DEST,
            NewDaemon => IPVS_CMD_NEW_DAEMON,
            DelDaemon => IPVS_CMD_DEL_DAEMON,
            GetDaemon => IPVS_CMD_GET_DAEMON,
            SetConfig => IPVS_CMD_SET_CONFIG,
            GetConfig => IPVS_CMD_GET_CONFIG,
            SetInfo => IPVS_CMD_SET_INFO,
            GetInfo => IPVS_CMD_GET_INFO,
            Zero => IPVS_CMD_ZERO,
            Flush => IPVS_CMD_FLUSH,
            Other(v) => v,
        }
    }
}

impl From<u8> for IpvsCommand {
    fn from(v: u8) -> Self {
        use IpvsCommand::*;
        match v {
            IPVS_CMD_NEW_SERVICE => NewService,
            IPVS_CMD_SET_SERVICE => SetService,
            IPVS_CMD_DEL_SERVICE => DelService,
            IPVS_CMD_GET_SERVICE => GetService,
            IPVS_CMD_NEW_DEST => NewDest,
            IPVS_CMD_SET_DEST => SetDest,
            IPVS_CMD_DEL_DEST => DelDest,
            IPVS_CMD_GET_DEST => GetDest,
            IPVS_CMD_NEW_DAEMON => NewDaemon,
            IPVS_CMD_DEL_DAEMON => DelDaemon,
            IPVS_CMD_GET_DAEMON => GetDaemon,
            IPVS_CMD_SET_CONFIG => SetConfig,
            IPVS_CMD_GET_CONFIG => GetConfig,
            IPVS_CMD_SET_INFO => SetInfo,
            IPVS_CMD_GET_INFO => GetInfo,
            IPVS_CMD_ZERO => Zero,
            IPVS_CMD_FLUSH => Flush,
            v => Other(v),
        }
    }
}

impl IpvsCommand {
    /// Whether this command's first-level attributes use the
    /// `IPVS_INFO_ATTR_*` numbering instead of `IPVS_CMD_ATTR_*`.
    fn uses_info_attrs(self) -> bool {
        matches!(self, IpvsCommand::SetInfo | IpvsCommand::GetInfo)
    }
}

/// A first-level attribute of an IPVS message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IpvsAttribute {
    /// `IPVS_CMD_ATTR_SERVICE` (nested).
    Service(Vec<ServiceAttribute>),
    /// `IPVS_CMD_ATTR_DEST` (nested).
    Dest(Vec<DestAttribute>),
    /// `IPVS_CMD_ATTR_DAEMON` (nested).
    Daemon(Vec<DaemonAttribute>),
    /// `IPVS_CMD_ATTR_TIMEOUT_TCP` (u32 seconds).
    TimeoutTcp(u32),
    /// `IPVS_CMD_ATTR_TIMEOUT_TCP_FIN` (u32 seconds).
    TimeoutTcpFin(u32),
    /// `IPVS_CMD_ATTR_TIMEOUT_UDP` (u32 seconds).
    TimeoutUdp(u32),
    /// `IPVS_INFO_ATTR_VERSION` (u32; only in `IPVS_CMD_SET_INFO`/`GET_INFO`).
    InfoVersion(u32),
    /// `IPVS_INFO_ATTR_CONN_TAB_SIZE` (u32; only in `IPVS_CMD_SET_INFO`/`GET_INFO`).
    InfoConnTabSize(u32),
    /// An attribute we do not know, kept as sent.
    Other(DefaultNla),
}

impl Nla for IpvsAttribute {
    fn value_len(&self) -> usize {
        use IpvsAttribute::*;
        match self {
            Service(a) => nested_len(a),
            Dest(a) => nested_len(a),
            Daemon(a) => nested_len(a),
            TimeoutTcp(_) | TimeoutTcpFin(_) | TimeoutUdp(_) | InfoVersion(_)
            | InfoConnTabSize(_) => 4,
            Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        use IpvsAttribute::*;
        match self {
            Service(_) => IPVS_CMD_ATTR_SERVICE,
            Dest(_) => IPVS_CMD_ATTR_DEST,
            Daemon(_) => IPVS_CMD_ATTR_DAEMON,
            TimeoutTcp(_) => IPVS_CMD_ATTR_TIMEOUT_TCP,
            TimeoutTcpFin(_) => IPVS_CMD_ATTR_TIMEOUT_TCP_FIN,
            TimeoutUdp(_) => IPVS_CMD_ATTR_TIMEOUT_UDP,
            InfoVersion(_) => IPVS_INFO_ATTR_VERSION,
            InfoConnTabSize(_) => IPVS_INFO_ATTR_CONN_TAB_SIZE,
            Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        use IpvsAttribute::*;
        match self {
            Service(a) => emit_nested(a, buffer),
            Dest(a) => emit_nested(a, buffer),
            Daemon(a) => emit_nested(a, buffer),
            TimeoutTcp(v) | TimeoutTcpFin(v) | TimeoutUdp(v) | InfoVersion(v)
            | InfoConnTabSize(v) => buffer.copy_from_slice(&v.to_ne_bytes()),
            Other(nla) => nla.emit_value(buffer),
        }
    }
}

impl IpvsAttribute {
    fn parse_cmd_attr(buf: &NlaBuffer<&[u8]>) -> Result<Self, DecodeError> {
        use IpvsAttribute::*;
        let v = buf.value();
        Ok(match buf.kind() {
            IPVS_CMD_ATTR_SERVICE => Service(parse_all(v, "IPVS_CMD_ATTR_SERVICE", |b| {
                ServiceAttribute::parse(b)
            })?),
            IPVS_CMD_ATTR_DEST => Dest(parse_all(v, "IPVS_CMD_ATTR_DEST", |b| {
                DestAttribute::parse(b)
            })?),
            IPVS_CMD_ATTR_DAEMON => Daemon(parse_all(v, "IPVS_CMD_ATTR_DAEMON", |b| {
                DaemonAttribute::parse(b)
            })?),
            IPVS_CMD_ATTR_TIMEOUT_TCP => {
                TimeoutTcp(parse_u32(v).map_err(|e| invalid("IPVS_CMD_ATTR_TIMEOUT_TCP", e))?)
            }
            IPVS_CMD_ATTR_TIMEOUT_TCP_FIN => TimeoutTcpFin(
                parse_u32(v).map_err(|e| invalid("IPVS_CMD_ATTR_TIMEOUT_TCP_FIN", e))?,
            ),
            IPVS_CMD_ATTR_TIMEOUT_UDP => {
                TimeoutUdp(parse_u32(v).map_err(|e| invalid("IPVS_CMD_ATTR_TIMEOUT_UDP", e))?)
            }
            _ => Other(DefaultNla::parse(buf)?),
        })
    }

    fn parse_info_attr(buf: &NlaBuffer<&[u8]>) -> Result<Self, DecodeError> {
        use IpvsAttribute::*;
        let v = buf.value();
        Ok(match buf.kind() {
            IPVS_INFO_ATTR_VERSION => {
                InfoVersion(parse_u32(v).map_err(|e| invalid("IPVS_INFO_ATTR_VERSION", e))?)
            }
            IPVS_INFO_ATTR_CONN_TAB_SIZE => InfoConnTabSize(
                parse_u32(v).map_err(|e| invalid("IPVS_INFO_ATTR_CONN_TAB_SIZE", e))?,
            ),
            _ => Other(DefaultNla::parse(buf)?),
        })
    }
}

/// The payload of an IPVS generic-netlink message (after the `genlmsghdr`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpvsMessage {
    /// The command.
    pub cmd: IpvsCommand,
    /// First-level attributes.
    pub attributes: Vec<IpvsAttribute>,
}

impl IpvsMessage {
    /// A message with a command and attributes.
    pub fn new(cmd: IpvsCommand, attributes: Vec<IpvsAttribute>) -> Self {
        IpvsMessage { cmd, attributes }
    }

    /// Parses the attributes following a genetlink header carrying `cmd`.
    pub fn parse_attributes(cmd: IpvsCommand, payload: &[u8]) -> Result<Self, DecodeError> {
        let attributes = if cmd.uses_info_attrs() {
            parse_all(payload, "IPVS info message", IpvsAttribute::parse_info_attr)?
        } else {
            parse_all(payload, "IPVS message", IpvsAttribute::parse_cmd_attr)?
        };
        Ok(IpvsMessage { cmd, attributes })
    }
}

impl GenlFamily for IpvsMessage {
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

impl Emitable for IpvsMessage {
    fn buffer_len(&self) -> usize {
        nested_len(&self.attributes)
    }
    fn emit(&self, buffer: &mut [u8]) {
        emit_nested(&self.attributes, buffer)
    }
}

impl ParseableParametrized<[u8], GenlHeader> for IpvsMessage {
    fn parse_with_param(buf: &[u8], header: GenlHeader) -> Result<Self, DecodeError> {
        Self::parse_attributes(IpvsCommand::from(header.cmd), buf)
    }
}
