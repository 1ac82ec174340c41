//! Plain value types for IPVS objects: what a caller builds and what a dump
//! returns. They know nothing about netlink; the codec maps them to and from
//! attributes.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use bitflags::bitflags;

/// Address family of a virtual or real server (`AF_INET` / `AF_INET6`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum AddressFamily {
    /// IPv4 (`AF_INET`, 2).
    Inet,
    /// IPv6 (`AF_INET6`, 10).
    Inet6,
    /// A family value we do not know, kept as the kernel sent it.
    Other(u16),
}

impl AddressFamily {
    /// The family of an address.
    pub fn of(addr: &IpAddr) -> Self {
        match addr {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        }
    }
}

impl From<AddressFamily> for u16 {
    fn from(af: AddressFamily) -> u16 {
        match af {
            AddressFamily::Inet => 2,
            AddressFamily::Inet6 => 10,
            AddressFamily::Other(v) => v,
        }
    }
}

impl From<u16> for AddressFamily {
    fn from(v: u16) -> Self {
        match v {
            2 => AddressFamily::Inet,
            10 => AddressFamily::Inet6,
            v => AddressFamily::Other(v),
        }
    }
}

/// Transport protocol of an address-based virtual service
/// (ipvsadm `-t`, `-u`, `--sctp-service`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum Protocol {
    /// TCP (`IPPROTO_TCP`, 6); ipvsadm `-t`.
    Tcp,
    /// UDP (`IPPROTO_UDP`, 17); ipvsadm `-u`.
    Udp,
    /// SCTP (`IPPROTO_SCTP`, 132); ipvsadm `--sctp-service`.
    Sctp,
    /// Another IP protocol number, kept as the kernel sent it.
    Other(u16),
}

impl From<Protocol> for u16 {
    fn from(p: Protocol) -> u16 {
        match p {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
            Protocol::Other(v) => v,
        }
    }
}

impl From<u16> for Protocol {
    fn from(v: u16) -> Self {
        match v {
            6 => Protocol::Tcp,
            17 => Protocol::Udp,
            132 => Protocol::Sctp,
            v => Protocol::Other(v),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Protocol::Tcp => f.write_str("TCP"),
            Protocol::Udp => f.write_str("UDP"),
            Protocol::Sctp => f.write_str("SCTP"),
            Protocol::Other(v) => write!(f, "proto-{v}"),
        }
    }
}

/// What identifies a virtual service in the kernel: either protocol, address
/// and port, or a firewall mark and address family (ipvsadm `-f`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum ServiceKey {
    /// A TCP/UDP/SCTP service on `addr:port` (ipvsadm `-t`/`-u`/`--sctp-service`).
    Addr {
        /// Transport protocol.
        protocol: Protocol,
        /// Virtual IP address; its family is the service's family.
        addr: IpAddr,
        /// Virtual port (0 means all ports with persistence, as in ipvsadm).
        port: u16,
    },
    /// A firewall-mark service (ipvsadm `-f MARK`, with `-6` for IPv6).
    Fwmark {
        /// Address family of the service.
        family: AddressFamily,
        /// The packet mark (non-zero).
        mark: u32,
    },
}

impl ServiceKey {
    /// A TCP service key (`-t addr:port`).
    pub fn tcp(addr: IpAddr, port: u16) -> Self {
        ServiceKey::Addr {
            protocol: Protocol::Tcp,
            addr,
            port,
        }
    }

    /// A UDP service key (`-u addr:port`).
    pub fn udp(addr: IpAddr, port: u16) -> Self {
        ServiceKey::Addr {
            protocol: Protocol::Udp,
            addr,
            port,
        }
    }

    /// An SCTP service key (`--sctp-service addr:port`).
    pub fn sctp(addr: IpAddr, port: u16) -> Self {
        ServiceKey::Addr {
            protocol: Protocol::Sctp,
            addr,
            port,
        }
    }

    /// A firewall-mark service key (`-f mark`, IPv6 with `-6`).
    pub fn fwmark(family: AddressFamily, mark: u32) -> Self {
        ServiceKey::Fwmark { family, mark }
    }

    /// The service's address family.
    pub fn family(&self) -> AddressFamily {
        match self {
            ServiceKey::Addr { addr, .. } => AddressFamily::of(addr),
            ServiceKey::Fwmark { family, .. } => *family,
        }
    }
}

impl fmt::Display for ServiceKey {
    /// ipvsadm's notation: `TCP 10.0.0.1:80`, `TCP [fd00::1]:80`, `FWM 7`,
    /// `FWM 7 IPv6`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceKey::Addr {
                protocol,
                addr: IpAddr::V4(a),
                port,
            } => write!(f, "{protocol} {a}:{port}"),
            ServiceKey::Addr {
                protocol,
                addr: IpAddr::V6(a),
                port,
            } => write!(f, "{protocol} [{a}]:{port}"),
            ServiceKey::Fwmark {
                family: AddressFamily::Inet6,
                mark,
            } => write!(f, "FWM {mark} IPv6"),
            ServiceKey::Fwmark { mark, .. } => write!(f, "FWM {mark}"),
        }
    }
}

bitflags! {
    /// Virtual-service flags (`IP_VS_SVC_F_*`). Unknown bits are preserved.
    ///
    /// The scheduler flags `SCHED1..3` mean different things per scheduler:
    /// for `sh` and `mh`, `SCHED1` is `*-fallback` and `SCHED2` is `*-port`
    /// (ipvsadm `-b sh-fallback,sh-port`); see [`SchedFlag`].
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
    #[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
    pub struct ServiceFlags: u32 {
        /// Persistent service (`IP_VS_SVC_F_PERSISTENT`); set by ipvsadm `-p`.
        const PERSISTENT = 0x0001;
        /// The service is hashed in the kernel's tables (`IP_VS_SVC_F_HASHED`);
        /// read-only, reported by dumps, never sent.
        const HASHED = 0x0002;
        /// One-packet scheduling (`IP_VS_SVC_F_ONEPACKET`); ipvsadm `-o`.
        const ONEPACKET = 0x0004;
        /// Scheduler flag 1 (`IP_VS_SVC_F_SCHED1`): `sh-fallback`, `mh-fallback`, `flag-1`.
        const SCHED1 = 0x0008;
        /// Scheduler flag 2 (`IP_VS_SVC_F_SCHED2`): `sh-port`, `mh-port`, `flag-2`.
        const SCHED2 = 0x0010;
        /// Scheduler flag 3 (`IP_VS_SVC_F_SCHED3`): `flag-3`.
        const SCHED3 = 0x0020;
        // Keep bits we do not know yet.
        const _ = !0;
    }
}

/// A scheduler flag by its ipvsadm name (`-b NAME[,NAME...]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum SchedFlag {
    /// `sh-fallback`: source hashing skips overloaded/zero-weight servers.
    ShFallback,
    /// `sh-port`: source hashing includes the source port.
    ShPort,
    /// `mh-fallback`: maglev hashing skips unavailable servers.
    MhFallback,
    /// `mh-port`: maglev hashing includes the source port.
    MhPort,
    /// `flag-1`: the generic scheduler flag 1.
    Flag1,
    /// `flag-2`: the generic scheduler flag 2.
    Flag2,
    /// `flag-3`: the generic scheduler flag 3.
    Flag3,
}

impl SchedFlag {
    /// The service flag bit this name sets.
    pub fn bit(self) -> ServiceFlags {
        match self {
            SchedFlag::ShFallback | SchedFlag::MhFallback | SchedFlag::Flag1 => {
                ServiceFlags::SCHED1
            }
            SchedFlag::ShPort | SchedFlag::MhPort | SchedFlag::Flag2 => ServiceFlags::SCHED2,
            SchedFlag::Flag3 => ServiceFlags::SCHED3,
        }
    }

    /// The ipvsadm name.
    pub fn name(self) -> &'static str {
        match self {
            SchedFlag::ShFallback => "sh-fallback",
            SchedFlag::ShPort => "sh-port",
            SchedFlag::MhFallback => "mh-fallback",
            SchedFlag::MhPort => "mh-port",
            SchedFlag::Flag1 => "flag-1",
            SchedFlag::Flag2 => "flag-2",
            SchedFlag::Flag3 => "flag-3",
        }
    }

    /// The names ipvsadm prints for `flags` under scheduler `scheduler`
    /// (`sh` and `mh` get their own names, others the generic `flag-N`).
    pub fn names_for(scheduler: &str, flags: ServiceFlags) -> Vec<SchedFlag> {
        let mut out = Vec::new();
        let (f1, f2) = match scheduler {
            "sh" => (SchedFlag::ShFallback, SchedFlag::ShPort),
            "mh" => (SchedFlag::MhFallback, SchedFlag::MhPort),
            _ => (SchedFlag::Flag1, SchedFlag::Flag2),
        };
        if flags.contains(ServiceFlags::SCHED1) {
            out.push(f1);
        }
        if flags.contains(ServiceFlags::SCHED2) {
            out.push(f2);
        }
        if flags.contains(ServiceFlags::SCHED3) {
            out.push(SchedFlag::Flag3);
        }
        out
    }
}

impl fmt::Display for SchedFlag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SchedFlag {
    type Err = crate::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "sh-fallback" => SchedFlag::ShFallback,
            "sh-port" => SchedFlag::ShPort,
            "mh-fallback" => SchedFlag::MhFallback,
            "mh-port" => SchedFlag::MhPort,
            "flag-1" => SchedFlag::Flag1,
            "flag-2" => SchedFlag::Flag2,
            "flag-3" => SchedFlag::Flag3,
            other => {
                return Err(crate::Error::InvalidArgument(format!(
                    "unknown scheduler flag {other:?} (expected sh-fallback, sh-port, \
                     mh-fallback, mh-port, flag-1, flag-2 or flag-3)"
                )))
            }
        })
    }
}

/// Packet counters of a service or real server (`IPVS_*_ATTR_STATS64`, or
/// `IPVS_*_ATTR_STATS` widened when the kernel sends only the 32-bit set).
/// Read-only. Shown by `ipvsadm -Ln --stats` and `--rate`.
///
/// Non-exhaustive: a newer kernel may report more counters. To build one
/// (for a test or a fake kernel), start from [`Stats::default`] and set
/// the fields:
///
/// ```
/// let mut s = ipvs::Stats::default();
/// s.conns = 3;
/// assert_eq!(s.inpkts, 0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct Stats {
    /// Connections scheduled (`IPVS_STATS_ATTR_CONNS`).
    pub conns: u64,
    /// Incoming packets (`IPVS_STATS_ATTR_INPKTS`).
    pub inpkts: u64,
    /// Outgoing packets (`IPVS_STATS_ATTR_OUTPKTS`).
    pub outpkts: u64,
    /// Incoming bytes (`IPVS_STATS_ATTR_INBYTES`).
    pub inbytes: u64,
    /// Outgoing bytes (`IPVS_STATS_ATTR_OUTBYTES`).
    pub outbytes: u64,
    /// Connections per second, estimated (`IPVS_STATS_ATTR_CPS`).
    pub cps: u64,
    /// Incoming packets per second (`IPVS_STATS_ATTR_INPPS`).
    pub inpps: u64,
    /// Outgoing packets per second (`IPVS_STATS_ATTR_OUTPPS`).
    pub outpps: u64,
    /// Incoming bytes per second (`IPVS_STATS_ATTR_INBPS`).
    pub inbps: u64,
    /// Outgoing bytes per second (`IPVS_STATS_ATTR_OUTBPS`).
    pub outbps: u64,
}

/// A virtual service (ipvsadm `-A`/`-E`; listed by `-Ln`).
///
/// Equality of two services for reconciliation should use
/// [`VirtualServer::same_config`], which ignores read-only kernel fields.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct VirtualServer {
    /// What identifies the service.
    pub key: ServiceKey,
    /// Scheduler name (`-s`), e.g. `rr`, `wrr`, `lc`, `sh`, `mh`.
    pub scheduler: String,
    /// Service flags (`-p` sets PERSISTENT, `-o` ONEPACKET, `-b` SCHED1..3).
    pub flags: ServiceFlags,
    /// Persistence timeout in seconds (`-p TIMEOUT`); meaningful with PERSISTENT.
    pub timeout: u32,
    /// Persistence netmask (`-M`): for IPv4 the mask as a host-order u32
    /// (0xffffffff = /32), for IPv6 the prefix length (128).
    pub netmask: u32,
    /// Persistence engine name (`--pe`), e.g. `sip`.
    pub pe_name: Option<String>,
    /// Counters, when read from the kernel; ignored when sent.
    pub stats: Option<Stats>,
}

impl VirtualServer {
    /// A service with scheduler `rr`, no persistence and the default netmask
    /// for its family.
    pub fn new(key: ServiceKey) -> Self {
        let netmask = match key.family() {
            AddressFamily::Inet6 => 128,
            _ => 0xffff_ffff,
        };
        VirtualServer {
            key,
            scheduler: "rr".to_owned(),
            flags: ServiceFlags::empty(),
            timeout: 0,
            netmask,
            pe_name: None,
            stats: None,
        }
    }

    /// Sets the scheduler (`-s NAME`).
    pub fn scheduler(mut self, name: impl Into<String>) -> Self {
        self.scheduler = name.into();
        self
    }

    /// Makes the service persistent for `timeout` seconds (`-p TIMEOUT`).
    pub fn persistent(mut self, timeout: u32) -> Self {
        self.flags |= ServiceFlags::PERSISTENT;
        self.timeout = timeout;
        self
    }

    /// Sets the persistence netmask (`-M`).
    pub fn netmask(mut self, netmask: u32) -> Self {
        self.netmask = netmask;
        self
    }

    /// Adds a scheduler flag (`-b NAME`).
    pub fn sched_flag(mut self, flag: SchedFlag) -> Self {
        self.flags |= flag.bit();
        self
    }

    /// Enables one-packet scheduling (`-o`).
    pub fn one_packet(mut self) -> Self {
        self.flags |= ServiceFlags::ONEPACKET;
        self
    }

    /// Sets the persistence engine (`--pe NAME`).
    pub fn pe_name(mut self, name: impl Into<String>) -> Self {
        self.pe_name = Some(name.into());
        self
    }

    /// True when both describe the same configuration: read-only fields
    /// (stats, the HASHED flag) are ignored.
    pub fn same_config(&self, other: &VirtualServer) -> bool {
        self.key == other.key
            && self.scheduler == other.scheduler
            && self.flags.difference(ServiceFlags::HASHED)
                == other.flags.difference(ServiceFlags::HASHED)
            && self.timeout == other.timeout
            && self.netmask == other.netmask
            && self.pe_name == other.pe_name
    }
}

/// How packets reach a real server (`IP_VS_CONN_F_FWD_MASK` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum ForwardMethod {
    /// NAT (`IP_VS_CONN_F_MASQ`, 0); ipvsadm `-m`.
    #[default]
    Masquerade,
    /// Local node (`IP_VS_CONN_F_LOCALNODE`, 1); ipvsadm prints `Local`.
    Local,
    /// IP-in-IP or other tunnel (`IP_VS_CONN_F_TUNNEL`, 2); ipvsadm `-i`.
    Tunnel,
    /// Direct routing (`IP_VS_CONN_F_DROUTE`, 3); ipvsadm `-g`.
    Route,
    /// Cache bypass (`IP_VS_CONN_F_BYPASS`, 4).
    Bypass,
    /// A value we do not know, kept as sent.
    Other(u32),
}

impl From<ForwardMethod> for u32 {
    fn from(m: ForwardMethod) -> u32 {
        match m {
            ForwardMethod::Masquerade => 0,
            ForwardMethod::Local => 1,
            ForwardMethod::Tunnel => 2,
            ForwardMethod::Route => 3,
            ForwardMethod::Bypass => 4,
            ForwardMethod::Other(v) => v,
        }
    }
}

impl From<u32> for ForwardMethod {
    fn from(v: u32) -> Self {
        match v {
            0 => ForwardMethod::Masquerade,
            1 => ForwardMethod::Local,
            2 => ForwardMethod::Tunnel,
            3 => ForwardMethod::Route,
            4 => ForwardMethod::Bypass,
            v => ForwardMethod::Other(v),
        }
    }
}

/// Tunnel encapsulation of a tunnelled real server (`IP_VS_CONN_F_TUNNEL_TYPE_*`,
/// ipvsadm `--tun-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum TunnelType {
    /// IP-in-IP (0); `--tun-type ipip`.
    #[default]
    Ipip,
    /// Generic UDP encapsulation (1); `--tun-type gue`.
    Gue,
    /// GRE (2); `--tun-type gre`.
    Gre,
    /// A value we do not know, kept as sent.
    Other(u8),
}

impl From<TunnelType> for u8 {
    fn from(t: TunnelType) -> u8 {
        match t {
            TunnelType::Ipip => 0,
            TunnelType::Gue => 1,
            TunnelType::Gre => 2,
            TunnelType::Other(v) => v,
        }
    }
}

impl From<u8> for TunnelType {
    fn from(v: u8) -> Self {
        match v {
            0 => TunnelType::Ipip,
            1 => TunnelType::Gue,
            2 => TunnelType::Gre,
            v => TunnelType::Other(v),
        }
    }
}

bitflags! {
    /// Tunnel encapsulation flags (`IP_VS_TUNNEL_ENCAP_FLAG_*`;
    /// ipvsadm `--tun-nocsum`, `--tun-csum`, `--tun-remcsum`). Unknown bits preserved.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    #[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
    pub struct TunnelFlags: u16 {
        /// Outer UDP checksum (`IP_VS_TUNNEL_ENCAP_FLAG_CSUM`).
        const CSUM = 0x0001;
        /// Remote checksum offload (`IP_VS_TUNNEL_ENCAP_FLAG_REMCSUM`).
        const REMCSUM = 0x0002;
        const _ = !0;
    }
}

/// Tunnel settings of a real server with [`ForwardMethod::Tunnel`].
///
/// Non-exhaustive (the kernel has grown tunnel attributes before: type,
/// port and flags came in 5.2-5.3); built with [`Tunnel::new`] and its
/// setters:
///
/// ```
/// use ipvs::{Tunnel, TunnelFlags, TunnelType};
/// // ipvsadm -i --tun-type gue --tun-port 6080 --tun-csum
/// let t = Tunnel::new(TunnelType::Gue).port(6080).flags(TunnelFlags::CSUM);
/// assert_eq!(t.port, 6080);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct Tunnel {
    /// Encapsulation (`--tun-type`).
    pub kind: TunnelType,
    /// Destination UDP port for GUE (`--tun-port`); 0 otherwise.
    pub port: u16,
    /// Checksum flags (`--tun-nocsum` is the empty set).
    pub flags: TunnelFlags,
}

impl Tunnel {
    /// A tunnel of kind `kind` (`--tun-type`), port 0, no checksum flags
    /// (`--tun-nocsum`).
    pub const fn new(kind: TunnelType) -> Self {
        Tunnel {
            kind,
            port: 0,
            flags: TunnelFlags::empty(),
        }
    }

    /// Sets the GUE destination port (`--tun-port`).
    pub const fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Sets the checksum flags (`--tun-csum`: [`TunnelFlags::CSUM`],
    /// `--tun-remcsum`: [`TunnelFlags::REMCSUM`]).
    pub const fn flags(mut self, flags: TunnelFlags) -> Self {
        self.flags = flags;
        self
    }
}

/// What identifies a real server within its virtual service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct RealServerKey {
    /// Real server address; may be of another family than the service's
    /// (tunnelling / direct routing).
    pub addr: IpAddr,
    /// Real server port (ignored by the kernel for firewall-mark services
    /// with direct routing, but still part of the key).
    pub port: u16,
}

impl fmt::Display for RealServerKey {
    /// ipvsadm's notation: `10.1.0.1:8080`, `[fd00::1]:8080`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            IpAddr::V4(a) => write!(f, "{a}:{}", self.port),
            IpAddr::V6(a) => write!(f, "[{a}]:{}", self.port),
        }
    }
}

/// The IPVS schedulers the Linux kernel ships (`ip_vs_NAME` modules, in
/// the order of the kernel's `Kconfig`): what `ipvsadm -s` accepts
/// without an out-of-tree module.
pub const SCHEDULERS: &[&str] = &[
    "rr", "wrr", "lc", "wlc", "fo", "ovf", "lblc", "lblcr", "dh", "sh", "mh", "sed", "nq", "twos",
];

/// Connection counters of a real server. Read-only; shown by
/// `ipvsadm -Ln` (`ActiveConn`, `InActConn`) and `--persistent-conn`.
///
/// Non-exhaustive: a newer kernel may count more. Built (for a test or a
/// fake kernel) with [`ConnCounters::new`] or from `Default`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct ConnCounters {
    /// Active connections (`ActiveConn`).
    pub active: u32,
    /// Inactive connections (`InActConn`).
    pub inactive: u32,
    /// Persistent connection templates (`IPVS_DEST_ATTR_PERSIST_CONNS`).
    pub persistent: u32,
}

impl ConnCounters {
    /// Counters with these values.
    pub const fn new(active: u32, inactive: u32, persistent: u32) -> Self {
        ConnCounters {
            active,
            inactive,
            persistent,
        }
    }
}

/// A real server of a virtual service (ipvsadm `-a`/`-e`/`-d`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct RealServer {
    /// Address and port.
    pub key: RealServerKey,
    /// Forwarding method (`-m`, `-g`, `-i`).
    pub forward: ForwardMethod,
    /// Weight (`-w`); 0 quiesces the server (no new connections).
    pub weight: u32,
    /// Upper connection threshold (`-x`); 0 = none.
    pub upper_threshold: u32,
    /// Lower connection threshold (`-y`); 0 = none.
    pub lower_threshold: u32,
    /// Tunnel settings, meaningful with [`ForwardMethod::Tunnel`].
    pub tunnel: Tunnel,
    /// Connection counters, when read from the kernel; ignored when sent.
    pub conns: ConnCounters,
    /// Packet counters, when read from the kernel; ignored when sent.
    pub stats: Option<Stats>,
}

impl RealServer {
    /// A masqueraded real server with weight 1.
    pub fn new(addr: IpAddr, port: u16) -> Self {
        RealServer {
            key: RealServerKey { addr, port },
            forward: ForwardMethod::Masquerade,
            weight: 1,
            upper_threshold: 0,
            lower_threshold: 0,
            tunnel: Tunnel::default(),
            conns: ConnCounters::default(),
            stats: None,
        }
    }

    /// Sets the weight (`-w`).
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Sets the forwarding method (`-m`/`-g`/`-i`).
    pub fn forward(mut self, method: ForwardMethod) -> Self {
        self.forward = method;
        self
    }

    /// Sets the connection thresholds (`-x UPPER -y LOWER`).
    pub fn thresholds(mut self, upper: u32, lower: u32) -> Self {
        self.upper_threshold = upper;
        self.lower_threshold = lower;
        self
    }

    /// Tunnels to this server (`-i --tun-type ...`).
    pub fn tunnel(mut self, tunnel: Tunnel) -> Self {
        self.forward = ForwardMethod::Tunnel;
        self.tunnel = tunnel;
        self
    }

    /// True when both describe the same configuration: counters are ignored.
    pub fn same_config(&self, other: &RealServer) -> bool {
        self.key == other.key
            && self.forward == other.forward
            && self.weight == other.weight
            && self.upper_threshold == other.upper_threshold
            && self.lower_threshold == other.lower_threshold
            && self.tunnel == other.tunnel
    }
}

/// Connection timeouts in seconds (ipvsadm `--set tcp tcpfin udp`); 0 in a
/// set request leaves that value unchanged.
///
/// Non-exhaustive: the kernel may grow more timeouts (it keeps per-state
/// timeouts for SCTP and others that netlink does not carry yet). Built
/// with [`Timeouts::new`]:
///
/// ```
/// // ipvsadm --set 900 120 300
/// let t = ipvs::Timeouts::new(900, 120, 300);
/// assert_eq!(t.tcp_fin, 120);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct Timeouts {
    /// Established TCP sessions (`IPVS_CMD_ATTR_TIMEOUT_TCP`).
    pub tcp: u32,
    /// TCP after FIN (`IPVS_CMD_ATTR_TIMEOUT_TCP_FIN`).
    pub tcp_fin: u32,
    /// UDP (`IPVS_CMD_ATTR_TIMEOUT_UDP`).
    pub udp: u32,
}

impl Timeouts {
    /// The three timeouts of `ipvsadm --set TCP TCPFIN UDP`, in seconds
    /// (0 leaves a value unchanged).
    pub const fn new(tcp: u32, tcp_fin: u32, udp: u32) -> Self {
        Timeouts { tcp, tcp_fin, udp }
    }
}

/// Global IPVS information (`ipvsadm` header line:
/// "IP Virtual Server version 1.2.1 (size=4096)").
///
/// Non-exhaustive: `IPVS_CMD_SET_INFO` may grow attributes. Built (for a
/// test or a fake kernel) with [`Info::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct Info {
    /// Version as the kernel encodes it: `(major << 16) | (minor << 8) | patch`.
    pub version: u32,
    /// Size of the connection hash table.
    pub conn_table_size: u32,
}

impl Info {
    /// Information with these values (`version` encoded as the kernel
    /// does, `(major << 16) | (minor << 8) | patch`).
    pub const fn new(version: u32, conn_table_size: u32) -> Self {
        Info {
            version,
            conn_table_size,
        }
    }

    /// `(major, minor, patch)` of [`Info::version`].
    pub fn version_triple(&self) -> (u32, u32, u32) {
        (
            (self.version >> 16) & 0xff,
            (self.version >> 8) & 0xff,
            self.version & 0xff,
        )
    }
}

/// Role of a connection-synchronisation daemon (`IP_VS_STATE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum DaemonState {
    /// Master: sends connection state (`--start-daemon master`).
    Master,
    /// Backup: receives it (`--start-daemon backup`).
    Backup,
    /// A value we do not know, kept as sent.
    Other(u32),
}

impl From<DaemonState> for u32 {
    fn from(s: DaemonState) -> u32 {
        match s {
            DaemonState::Master => 1,
            DaemonState::Backup => 2,
            DaemonState::Other(v) => v,
        }
    }
}

impl From<u32> for DaemonState {
    fn from(v: u32) -> Self {
        match v {
            1 => DaemonState::Master,
            2 => DaemonState::Backup,
            v => DaemonState::Other(v),
        }
    }
}

/// A connection-synchronisation daemon (ipvsadm `--start-daemon`,
/// `--stop-daemon`, `-L --daemon`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct SyncDaemon {
    /// Master or backup.
    pub state: DaemonState,
    /// Multicast interface (`--mcast-interface`).
    pub interface: String,
    /// Sync id (`--syncid`).
    pub sync_id: u32,
    /// Maximum sync message length (`--sync-maxlen`), when set or reported.
    pub max_len: Option<u16>,
    /// Multicast group (`--mcast-group`), IPv4 or IPv6.
    pub mcast_group: Option<IpAddr>,
    /// Multicast UDP port (`--mcast-port`).
    pub mcast_port: Option<u16>,
    /// Multicast TTL (`--mcast-ttl`).
    pub mcast_ttl: Option<u8>,
}

impl SyncDaemon {
    /// A daemon with only the mandatory fields.
    pub fn new(state: DaemonState, interface: impl Into<String>, sync_id: u32) -> Self {
        SyncDaemon {
            state,
            interface: interface.into(),
            sync_id,
            max_len: None,
            mcast_group: None,
            mcast_port: None,
            mcast_ttl: None,
        }
    }
}
