//! Constants of the IPVS generic-netlink family, named exactly as
//! `include/uapi/linux/ip_vs.h` names them.

/// Name of the generic-netlink family.
pub const IPVS_GENL_NAME: &str = "IPVS";
/// Version of the generic-netlink family.
pub const IPVS_GENL_VERSION: u8 = 0x1;

// Commands.
/// Unused command 0.
pub const IPVS_CMD_UNSPEC: u8 = 0;
/// Add a service (`ipvsadm -A`); also each answer of a service dump.
pub const IPVS_CMD_NEW_SERVICE: u8 = 1;
/// Modify a service (`ipvsadm -E`).
pub const IPVS_CMD_SET_SERVICE: u8 = 2;
/// Delete a service (`ipvsadm -D`).
pub const IPVS_CMD_DEL_SERVICE: u8 = 3;
/// Get one service, or dump all (`ipvsadm -L`).
pub const IPVS_CMD_GET_SERVICE: u8 = 4;
/// Add a destination (`ipvsadm -a`); also each answer of a destination dump.
pub const IPVS_CMD_NEW_DEST: u8 = 5;
/// Modify a destination (`ipvsadm -e`).
pub const IPVS_CMD_SET_DEST: u8 = 6;
/// Delete a destination (`ipvsadm -d`).
pub const IPVS_CMD_DEL_DEST: u8 = 7;
/// Dump the destinations of a service.
pub const IPVS_CMD_GET_DEST: u8 = 8;
/// Start a sync daemon (`ipvsadm --start-daemon`).
pub const IPVS_CMD_NEW_DAEMON: u8 = 9;
/// Stop a sync daemon (`ipvsadm --stop-daemon`).
pub const IPVS_CMD_DEL_DAEMON: u8 = 10;
/// Dump the sync daemons (`ipvsadm -L --daemon`).
pub const IPVS_CMD_GET_DAEMON: u8 = 11;
/// Set the timeouts (`ipvsadm --set`); also the answer to GET_CONFIG.
pub const IPVS_CMD_SET_CONFIG: u8 = 12;
/// Get the timeouts (`ipvsadm -L --timeout`).
pub const IPVS_CMD_GET_CONFIG: u8 = 13;
/// Only used as the answer to GET_INFO.
pub const IPVS_CMD_SET_INFO: u8 = 14;
/// Get version and connection-table size.
pub const IPVS_CMD_GET_INFO: u8 = 15;
/// Zero counters (`ipvsadm -Z`).
pub const IPVS_CMD_ZERO: u8 = 16;
/// Delete all services and destinations (`ipvsadm -C`).
pub const IPVS_CMD_FLUSH: u8 = 17;

// First-level attributes of commands.
/// Nested service attributes.
pub const IPVS_CMD_ATTR_SERVICE: u16 = 1;
/// Nested destination attributes.
pub const IPVS_CMD_ATTR_DEST: u16 = 2;
/// Nested sync-daemon attributes.
pub const IPVS_CMD_ATTR_DAEMON: u16 = 3;
/// TCP connection timeout (u32 seconds).
pub const IPVS_CMD_ATTR_TIMEOUT_TCP: u16 = 4;
/// TCP FIN-wait timeout (u32 seconds).
pub const IPVS_CMD_ATTR_TIMEOUT_TCP_FIN: u16 = 5;
/// UDP timeout (u32 seconds).
pub const IPVS_CMD_ATTR_TIMEOUT_UDP: u16 = 6;

// Service attributes (nested in IPVS_CMD_ATTR_SERVICE).
/// Address family (u16).
pub const IPVS_SVC_ATTR_AF: u16 = 1;
/// Virtual service protocol (u16).
pub const IPVS_SVC_ATTR_PROTOCOL: u16 = 2;
/// Virtual service address (`union nf_inet_addr`).
pub const IPVS_SVC_ATTR_ADDR: u16 = 3;
/// Virtual service port (`__be16`).
pub const IPVS_SVC_ATTR_PORT: u16 = 4;
/// Firewall mark of the service (u32).
pub const IPVS_SVC_ATTR_FWMARK: u16 = 5;
/// Name of the scheduler (string).
pub const IPVS_SVC_ATTR_SCHED_NAME: u16 = 6;
/// Virtual service flags (`struct ip_vs_flags`).
pub const IPVS_SVC_ATTR_FLAGS: u16 = 7;
/// Persistence timeout (u32 seconds).
pub const IPVS_SVC_ATTR_TIMEOUT: u16 = 8;
/// Persistence netmask (`__be32` mask, or IPv6 prefix length).
pub const IPVS_SVC_ATTR_NETMASK: u16 = 9;
/// Nested service stats (32-bit counters).
pub const IPVS_SVC_ATTR_STATS: u16 = 10;
/// Name of the persistence engine (string).
pub const IPVS_SVC_ATTR_PE_NAME: u16 = 11;
/// Nested service stats (64-bit counters).
pub const IPVS_SVC_ATTR_STATS64: u16 = 12;

// Destination attributes (nested in IPVS_CMD_ATTR_DEST).
/// Real server address (`union nf_inet_addr`).
pub const IPVS_DEST_ATTR_ADDR: u16 = 1;
/// Real server port (`__be16`).
pub const IPVS_DEST_ATTR_PORT: u16 = 2;
/// Forwarding method (u32 connection flags).
pub const IPVS_DEST_ATTR_FWD_METHOD: u16 = 3;
/// Destination weight (u32).
pub const IPVS_DEST_ATTR_WEIGHT: u16 = 4;
/// Upper connection threshold (u32).
pub const IPVS_DEST_ATTR_U_THRESH: u16 = 5;
/// Lower connection threshold (u32).
pub const IPVS_DEST_ATTR_L_THRESH: u16 = 6;
/// Active connections (u32).
pub const IPVS_DEST_ATTR_ACTIVE_CONNS: u16 = 7;
/// Inactive connections (u32).
pub const IPVS_DEST_ATTR_INACT_CONNS: u16 = 8;
/// Persistent connections (u32).
pub const IPVS_DEST_ATTR_PERSIST_CONNS: u16 = 9;
/// Nested destination stats (32-bit counters).
pub const IPVS_DEST_ATTR_STATS: u16 = 10;
/// Address family of the real server address (u16).
pub const IPVS_DEST_ATTR_ADDR_FAMILY: u16 = 11;
/// Nested destination stats (64-bit counters).
pub const IPVS_DEST_ATTR_STATS64: u16 = 12;
/// Tunnel type (u8).
pub const IPVS_DEST_ATTR_TUN_TYPE: u16 = 13;
/// Tunnel port (`__be16`).
pub const IPVS_DEST_ATTR_TUN_PORT: u16 = 14;
/// Tunnel flags (u16).
pub const IPVS_DEST_ATTR_TUN_FLAGS: u16 = 15;

// Sync daemon attributes (nested in IPVS_CMD_ATTR_DAEMON).
/// Sync daemon state, master or backup (u32).
pub const IPVS_DAEMON_ATTR_STATE: u16 = 1;
/// Multicast interface name (string).
pub const IPVS_DAEMON_ATTR_MCAST_IFN: u16 = 2;
/// SyncID we belong to (u32).
pub const IPVS_DAEMON_ATTR_SYNC_ID: u16 = 3;
/// UDP payload size (u16).
pub const IPVS_DAEMON_ATTR_SYNC_MAXLEN: u16 = 4;
/// IPv4 multicast address (`struct in_addr`).
pub const IPVS_DAEMON_ATTR_MCAST_GROUP: u16 = 5;
/// IPv6 multicast address (`struct in6_addr`).
pub const IPVS_DAEMON_ATTR_MCAST_GROUP6: u16 = 6;
/// Multicast port base (u16, host byte order).
pub const IPVS_DAEMON_ATTR_MCAST_PORT: u16 = 7;
/// Multicast TTL (u8).
pub const IPVS_DAEMON_ATTR_MCAST_TTL: u16 = 8;

// Statistics attributes (nested in *_ATTR_STATS and *_ATTR_STATS64).
/// Connections scheduled.
pub const IPVS_STATS_ATTR_CONNS: u16 = 1;
/// Incoming packets.
pub const IPVS_STATS_ATTR_INPKTS: u16 = 2;
/// Outgoing packets.
pub const IPVS_STATS_ATTR_OUTPKTS: u16 = 3;
/// Incoming bytes.
pub const IPVS_STATS_ATTR_INBYTES: u16 = 4;
/// Outgoing bytes.
pub const IPVS_STATS_ATTR_OUTBYTES: u16 = 5;
/// Current connection rate.
pub const IPVS_STATS_ATTR_CPS: u16 = 6;
/// Current incoming packet rate.
pub const IPVS_STATS_ATTR_INPPS: u16 = 7;
/// Current outgoing packet rate.
pub const IPVS_STATS_ATTR_OUTPPS: u16 = 8;
/// Current incoming byte rate.
pub const IPVS_STATS_ATTR_INBPS: u16 = 9;
/// Current outgoing byte rate.
pub const IPVS_STATS_ATTR_OUTBPS: u16 = 10;
/// Padding for 64-bit alignment.
pub const IPVS_STATS_ATTR_PAD: u16 = 11;

// Attributes of the IPVS_CMD_GET_INFO reply (first level).
/// IPVS version number (u32).
pub const IPVS_INFO_ATTR_VERSION: u16 = 1;
/// Size of the connection hash table (u32).
pub const IPVS_INFO_ATTR_CONN_TAB_SIZE: u16 = 2;

// Name length limits, including the terminating NUL.
/// Maximum scheduler name length, including the NUL.
pub const IP_VS_SCHEDNAME_MAXLEN: usize = 16;
/// Maximum persistence engine name length, including the NUL.
pub const IP_VS_PENAME_MAXLEN: usize = 16;
/// Maximum interface name length, including the NUL.
pub const IP_VS_IFNAME_MAXLEN: usize = 16;

/// Mask of the forwarding method in a destination's connection flags.
pub const IP_VS_CONN_F_FWD_MASK: u32 = 0x0007;

// Address families.
/// `AF_INET` (from `<sys/socket.h>`).
pub const AF_INET: u16 = 2;
/// `AF_INET6` (from `<sys/socket.h>`).
pub const AF_INET6: u16 = 10;
