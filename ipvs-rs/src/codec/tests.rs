//! Byte-level round trips for every IPVS message kind: captured-style bytes
//! -> expected value -> emitted bytes, identical. Fields are commented
//! (x86_64, little endian: "native" below). Each nest is
//! `len(u16) type(u16) value... padding to 4`.
#![cfg(target_endian = "little")]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_core::{DefaultNla, Emitable, ParseableParametrized};
use netlink_packet_generic::GenlHeader;

use super::*;
use crate::types::*;

/// Parses `bytes` (genlmsghdr + attributes), checks it equals `expected`,
/// emits `expected` and checks the bytes are the same.
fn round_trip(bytes: &[u8], expected: &IpvsMessage) {
    let header = GenlHeader {
        cmd: bytes[0],
        version: bytes[1],
    };
    assert_eq!(header.version, 1, "IPVS_GENL_VERSION");
    let parsed = IpvsMessage::parse_with_param(&bytes[4..], header).expect("parse");
    assert_eq!(&parsed, expected);
    let mut out = vec![0u8; 4 + expected.buffer_len()];
    out[0] = u8::from(expected.cmd);
    out[1] = 1;
    expected.emit(&mut out[4..]);
    assert_eq!(out, bytes);
    // Every truncation is an error or a shorter message, never a panic.
    for cut in 4..bytes.len() {
        let _ = IpvsMessage::parse_with_param(&bytes[4..cut], header);
    }
}

fn only_service(m: &IpvsMessage) -> VirtualServer {
    match &m.attributes[..] {
        [IpvsAttribute::Service(a)] => virtual_server_from_attrs(a).unwrap(),
        other => panic!("not a single service: {other:?}"),
    }
}

#[rustfmt::skip]
const NEW_SERVICE_TCP4: &[u8] = &[
    0x01, 0x01, 0x00, 0x00,             // genl: cmd IPVS_CMD_NEW_SERVICE, version 1
    0x54, 0x00, 0x01, 0x00,             // IPVS_CMD_ATTR_SERVICE, len 84
      0x06, 0x00, 0x01, 0x00,           //   IPVS_SVC_ATTR_AF, len 6
      0x02, 0x00, 0x00, 0x00,           //     AF_INET (u16) + pad
      0x06, 0x00, 0x02, 0x00,           //   IPVS_SVC_ATTR_PROTOCOL
      0x06, 0x00, 0x00, 0x00,           //     IPPROTO_TCP + pad
      0x14, 0x00, 0x03, 0x00,           //   IPVS_SVC_ATTR_ADDR, len 20
      0x0a, 0x60, 0x00, 0x01,           //     10.96.0.1
      0x00, 0x00, 0x00, 0x00,           //     rest of nf_inet_addr
      0x00, 0x00, 0x00, 0x00,
      0x00, 0x00, 0x00, 0x00,
      0x06, 0x00, 0x04, 0x00,           //   IPVS_SVC_ATTR_PORT
      0x00, 0x50, 0x00, 0x00,           //     80, network order + pad
      0x07, 0x00, 0x06, 0x00,           //   IPVS_SVC_ATTR_SCHED_NAME, len 7
      0x72, 0x72, 0x00, 0x00,           //     "rr\0" + pad
      0x0c, 0x00, 0x07, 0x00,           //   IPVS_SVC_ATTR_FLAGS, len 12
      0x01, 0x00, 0x00, 0x00,           //     flags: PERSISTENT
      0xff, 0xff, 0xff, 0xff,           //     mask: all
      0x08, 0x00, 0x08, 0x00,           //   IPVS_SVC_ATTR_TIMEOUT
      0x2c, 0x01, 0x00, 0x00,           //     300 s
      0x08, 0x00, 0x09, 0x00,           //   IPVS_SVC_ATTR_NETMASK
      0xff, 0xff, 0xff, 0x00,           //     255.255.255.0 (__be32)
];

#[test]
fn new_service_tcp_v4_persistent() {
    let vs = VirtualServer::new(ServiceKey::tcp(IpAddr::V4(Ipv4Addr::new(10, 96, 0, 1)), 80))
        .persistent(300)
        .netmask(0xffff_ff00);
    let msg = IpvsMessage::new(
        IpvsCommand::NewService,
        vec![IpvsAttribute::Service(service_attrs(&vs))],
    );
    round_trip(NEW_SERVICE_TCP4, &msg);
    assert_eq!(only_service(&msg), vs);
}

#[rustfmt::skip]
const SET_SERVICE_FWMARK6: &[u8] = &[
    0x02, 0x01, 0x00, 0x00,             // genl: IPVS_CMD_SET_SERVICE
    0x40, 0x00, 0x01, 0x00,             // IPVS_CMD_ATTR_SERVICE, len 64
      0x06, 0x00, 0x01, 0x00,           //   IPVS_SVC_ATTR_AF
      0x0a, 0x00, 0x00, 0x00,           //     AF_INET6
      0x08, 0x00, 0x05, 0x00,           //   IPVS_SVC_ATTR_FWMARK
      0x07, 0x00, 0x00, 0x00,           //     7
      0x07, 0x00, 0x06, 0x00,           //   IPVS_SVC_ATTR_SCHED_NAME
      0x73, 0x68, 0x00, 0x00,           //     "sh\0"
      0x0c, 0x00, 0x07, 0x00,           //   IPVS_SVC_ATTR_FLAGS
      0x1c, 0x00, 0x00, 0x00,           //     ONEPACKET|SCHED1|SCHED2 (sh-fallback, sh-port)
      0xff, 0xff, 0xff, 0xff,           //     mask
      0x08, 0x00, 0x08, 0x00,           //   IPVS_SVC_ATTR_TIMEOUT
      0x00, 0x00, 0x00, 0x00,           //     0
      0x08, 0x00, 0x09, 0x00,           //   IPVS_SVC_ATTR_NETMASK
      0x80, 0x00, 0x00, 0x00,           //     prefix length 128 (native)
      0x08, 0x00, 0x0b, 0x00,           //   IPVS_SVC_ATTR_PE_NAME
      0x73, 0x69, 0x70, 0x00,           //     "sip\0"
];

#[test]
fn set_service_fwmark_v6_sched_flags_pe() {
    let vs = VirtualServer::new(ServiceKey::fwmark(AddressFamily::Inet6, 7))
        .scheduler("sh")
        .sched_flag(SchedFlag::ShFallback)
        .sched_flag(SchedFlag::ShPort)
        .one_packet()
        .pe_name("sip");
    let msg = IpvsMessage::new(
        IpvsCommand::SetService,
        vec![IpvsAttribute::Service(service_attrs(&vs))],
    );
    round_trip(SET_SERVICE_FWMARK6, &msg);
    assert_eq!(only_service(&msg), vs);
}

#[rustfmt::skip]
const SERVICE_DUMP_UDP6: &[u8] = &[
    0x01, 0x01, 0x00, 0x00,             // genl: IPVS_CMD_NEW_SERVICE (a dump answer)
    0xc8, 0x00, 0x01, 0x00,             // IPVS_CMD_ATTR_SERVICE, len 200
      0x06, 0x00, 0x01, 0x00,           //   IPVS_SVC_ATTR_AF
      0x0a, 0x00, 0x00, 0x00,           //     AF_INET6
      0x06, 0x00, 0x02, 0x00,           //   IPVS_SVC_ATTR_PROTOCOL
      0x11, 0x00, 0x00, 0x00,           //     IPPROTO_UDP
      0x14, 0x00, 0x03, 0x00,           //   IPVS_SVC_ATTR_ADDR
      0xfd, 0x00, 0x00, 0x00,           //     fd00::53
      0x00, 0x00, 0x00, 0x00,
      0x00, 0x00, 0x00, 0x00,
      0x00, 0x00, 0x00, 0x53,
      0x06, 0x00, 0x04, 0x00,           //   IPVS_SVC_ATTR_PORT
      0x00, 0x35, 0x00, 0x00,           //     53
      0x08, 0x00, 0x06, 0x00,           //   IPVS_SVC_ATTR_SCHED_NAME
      0x77, 0x72, 0x72, 0x00,           //     "wrr\0"
      0x0c, 0x00, 0x07, 0x00,           //   IPVS_SVC_ATTR_FLAGS
      0x02, 0x00, 0x00, 0x00,           //     HASHED
      0xff, 0xff, 0xff, 0xff,           //     mask
      0x08, 0x00, 0x08, 0x00,           //   IPVS_SVC_ATTR_TIMEOUT
      0x00, 0x00, 0x00, 0x00,
      0x08, 0x00, 0x09, 0x00,           //   IPVS_SVC_ATTR_NETMASK
      0x80, 0x00, 0x00, 0x00,           //     128
      0x30, 0x00, 0x0a, 0x00,           //   IPVS_SVC_ATTR_STATS (32-bit nest), len 48
        0x08, 0x00, 0x01, 0x00,         //     IPVS_STATS_ATTR_CONNS
        0x05, 0x00, 0x00, 0x00,         //       5
        0x08, 0x00, 0x02, 0x00,         //     IPVS_STATS_ATTR_INPKTS
        0x0a, 0x00, 0x00, 0x00,         //       10
        0x0c, 0x00, 0x04, 0x00,         //     IPVS_STATS_ATTR_INBYTES (always u64)
        0xe8, 0x03, 0x00, 0x00,         //       1000
        0x00, 0x00, 0x00, 0x00,
        0x08, 0x00, 0x06, 0x00,         //     IPVS_STATS_ATTR_CPS
        0x01, 0x00, 0x00, 0x00,         //       1
        0x08, 0x00, 0x0b, 0x00,         //     IPVS_STATS_ATTR_PAD (kept as unknown)
        0x00, 0x00, 0x00, 0x00,
      0x34, 0x00, 0x0c, 0x00,           //   IPVS_SVC_ATTR_STATS64, len 52
        0x0c, 0x00, 0x01, 0x00,         //     IPVS_STATS_ATTR_CONNS (u64)
        0x00, 0x00, 0x00, 0x00,         //       1 << 32
        0x01, 0x00, 0x00, 0x00,
        0x0c, 0x00, 0x02, 0x00,         //     IPVS_STATS_ATTR_INPKTS
        0x0a, 0x00, 0x00, 0x00,         //       10
        0x00, 0x00, 0x00, 0x00,
        0x0c, 0x00, 0x04, 0x00,         //     IPVS_STATS_ATTR_INBYTES
        0xe8, 0x03, 0x00, 0x00,         //       1000
        0x00, 0x00, 0x00, 0x00,
        0x0c, 0x00, 0x0a, 0x00,         //     IPVS_STATS_ATTR_OUTBPS
        0x07, 0x00, 0x00, 0x00,         //       7
        0x00, 0x00, 0x00, 0x00,
      0x08, 0x00, 0x0d, 0x00,           //   attribute 13: unknown to us, kept
      0xaa, 0xbb, 0xcc, 0xdd,
      0x08, 0x00, 0x0b, 0x00,           //   IPVS_SVC_ATTR_PE_NAME
      0x00, 0x00, 0x00, 0x00,           //     "" (no engine) + pad
];

#[test]
fn service_dump_answer_udp_v6_stats_unknown() {
    let stats = vec![
        StatsAttribute::Conns(5),
        StatsAttribute::InPkts(10),
        StatsAttribute::InBytes(1000),
        StatsAttribute::Cps(1),
        StatsAttribute::Other(DefaultNla::new(11, vec![0; 4])),
    ];
    let stats64 = vec![
        StatsAttribute::Conns(1 << 32),
        StatsAttribute::InPkts(10),
        StatsAttribute::InBytes(1000),
        StatsAttribute::OutBps(7),
    ];
    let addr = IpAddr::V6("fd00::53".parse::<Ipv6Addr>().unwrap());
    let mut attrs = service_key_attrs(&ServiceKey::udp(addr, 53));
    attrs.extend([
        ServiceAttribute::SchedName("wrr".into()),
        ServiceAttribute::Flags { flags: 2, mask: !0 },
        ServiceAttribute::Timeout(0),
        ServiceAttribute::Netmask(128),
        ServiceAttribute::Stats(stats),
        ServiceAttribute::Stats64(stats64),
        ServiceAttribute::Other(DefaultNla::new(13, vec![0xaa, 0xbb, 0xcc, 0xdd])),
        ServiceAttribute::PeName(String::new()),
    ]);
    // PeName("") is emitted as 1 byte: not the 4 NULs above; check parse only.
    let header = GenlHeader { cmd: 1, version: 1 };
    let parsed = IpvsMessage::parse_with_param(&SERVICE_DUMP_UDP6[4..], header).unwrap();
    let mut expected_attrs = attrs.clone();
    // The kernel pads "\0" with NULs: parse keeps it as "\0\0\0" stripped of one NUL.
    expected_attrs.pop();
    expected_attrs.push(ServiceAttribute::PeName("\0\0\0".into()));
    assert_eq!(
        parsed,
        IpvsMessage::new(
            IpvsCommand::NewService,
            vec![IpvsAttribute::Service(expected_attrs)]
        )
    );
    let vs = only_service(&parsed);
    assert_eq!(vs.key, ServiceKey::udp(addr, 53));
    assert_eq!(vs.scheduler, "wrr");
    assert_eq!(vs.flags, ServiceFlags::HASHED);
    assert_eq!(vs.netmask, 128);
    // 64-bit counters win over the 32-bit ones.
    let s = vs.stats.unwrap();
    assert_eq!(
        (s.conns, s.inpkts, s.inbytes, s.outbps, s.cps),
        (1 << 32, 10, 1000, 7, 0)
    );

    // Without the PE attribute the bytes round-trip exactly.
    let cut = SERVICE_DUMP_UDP6.len() - 8;
    let mut bytes = SERVICE_DUMP_UDP6[..cut].to_vec();
    bytes[4] = 0xc0; // nest len 192
    attrs.pop();
    round_trip(
        &bytes,
        &IpvsMessage::new(IpvsCommand::NewService, vec![IpvsAttribute::Service(attrs)]),
    );
}

#[rustfmt::skip]
const SERVICE_KEY_TCP4: [u8; 48] = [
    0x30, 0x00, 0x01, 0x00,             // IPVS_CMD_ATTR_SERVICE, len 48
      0x06, 0x00, 0x01, 0x00,           //   IPVS_SVC_ATTR_AF
      0x02, 0x00, 0x00, 0x00,           //     AF_INET
      0x06, 0x00, 0x02, 0x00,           //   IPVS_SVC_ATTR_PROTOCOL
      0x06, 0x00, 0x00, 0x00,           //     TCP
      0x14, 0x00, 0x03, 0x00,           //   IPVS_SVC_ATTR_ADDR
      0x0a, 0x60, 0x00, 0x01,           //     10.96.0.1
      0x00, 0x00, 0x00, 0x00,
      0x00, 0x00, 0x00, 0x00,
      0x00, 0x00, 0x00, 0x00,
      0x06, 0x00, 0x04, 0x00,           //   IPVS_SVC_ATTR_PORT
      0x00, 0x50, 0x00, 0x00,           //     80
];

#[rustfmt::skip]
const DEST_TUNNEL_GUE: [u8; 96] = [
    0x60, 0x00, 0x02, 0x00,             // IPVS_CMD_ATTR_DEST, len 96
      0x06, 0x00, 0x0b, 0x00,           //   IPVS_DEST_ATTR_ADDR_FAMILY
      0x02, 0x00, 0x00, 0x00,           //     AF_INET
      0x14, 0x00, 0x01, 0x00,           //   IPVS_DEST_ATTR_ADDR
      0x0a, 0xf4, 0x01, 0x02,           //     10.244.1.2
      0x00, 0x00, 0x00, 0x00,
      0x00, 0x00, 0x00, 0x00,
      0x00, 0x00, 0x00, 0x00,
      0x06, 0x00, 0x02, 0x00,           //   IPVS_DEST_ATTR_PORT
      0x1f, 0x90, 0x00, 0x00,           //     8080, network order
      0x08, 0x00, 0x03, 0x00,           //   IPVS_DEST_ATTR_FWD_METHOD
      0x02, 0x00, 0x00, 0x00,           //     IP_VS_CONN_F_TUNNEL
      0x08, 0x00, 0x04, 0x00,           //   IPVS_DEST_ATTR_WEIGHT
      0x03, 0x00, 0x00, 0x00,           //     3
      0x08, 0x00, 0x05, 0x00,           //   IPVS_DEST_ATTR_U_THRESH
      0x64, 0x00, 0x00, 0x00,           //     100
      0x08, 0x00, 0x06, 0x00,           //   IPVS_DEST_ATTR_L_THRESH
      0x0a, 0x00, 0x00, 0x00,           //     10
      0x05, 0x00, 0x0d, 0x00,           //   IPVS_DEST_ATTR_TUN_TYPE
      0x01, 0x00, 0x00, 0x00,           //     GUE + pad
      0x06, 0x00, 0x0e, 0x00,           //   IPVS_DEST_ATTR_TUN_PORT
      0x17, 0xc0, 0x00, 0x00,           //     6080, network order
      0x06, 0x00, 0x0f, 0x00,           //   IPVS_DEST_ATTR_TUN_FLAGS
      0x01, 0x00, 0x00, 0x00,           //     CSUM (native u16)
];

fn tunnel_rs() -> RealServer {
    RealServer::new(IpAddr::V4(Ipv4Addr::new(10, 244, 1, 2)), 8080)
        .weight(3)
        .thresholds(100, 10)
        .tunnel(Tunnel {
            kind: TunnelType::Gue,
            port: 6080,
            flags: TunnelFlags::CSUM,
        })
}

#[test]
fn new_dest_tunnel_gue() {
    let key = ServiceKey::tcp(IpAddr::V4(Ipv4Addr::new(10, 96, 0, 1)), 80);
    let mut bytes = vec![0x05, 0x01, 0x00, 0x00]; // genl: IPVS_CMD_NEW_DEST
    bytes.extend_from_slice(&SERVICE_KEY_TCP4);
    bytes.extend_from_slice(&DEST_TUNNEL_GUE);
    let rs = tunnel_rs();
    let msg = IpvsMessage::new(
        IpvsCommand::NewDest,
        vec![
            IpvsAttribute::Service(service_key_attrs(&key)),
            IpvsAttribute::Dest(dest_attrs(&rs)),
        ],
    );
    round_trip(&bytes, &msg);
    let IpvsAttribute::Dest(d) = &msg.attributes[1] else {
        panic!()
    };
    assert_eq!(real_server_from_attrs(d, AddressFamily::Inet).unwrap(), rs);
}

#[test]
fn del_dest_key_only() {
    #[rustfmt::skip]
    let dest: [u8; 40] = [
        0x28, 0x00, 0x02, 0x00,         // IPVS_CMD_ATTR_DEST, len 40
          0x06, 0x00, 0x0b, 0x00,       //   IPVS_DEST_ATTR_ADDR_FAMILY
          0x0a, 0x00, 0x00, 0x00,       //     AF_INET6
          0x14, 0x00, 0x01, 0x00,       //   IPVS_DEST_ATTR_ADDR
          0xfd, 0x00, 0x00, 0x00,       //     fd00::2
          0x00, 0x00, 0x00, 0x00,
          0x00, 0x00, 0x00, 0x00,
          0x00, 0x00, 0x00, 0x02,
          0x06, 0x00, 0x02, 0x00,       //   IPVS_DEST_ATTR_PORT
          0x00, 0x50, 0x00, 0x00,       //     80
    ];
    let key = ServiceKey::tcp(IpAddr::V4(Ipv4Addr::new(10, 96, 0, 1)), 80);
    let rk = RealServerKey {
        addr: "fd00::2".parse().unwrap(),
        port: 80,
    };
    let mut bytes = vec![0x07, 0x01, 0x00, 0x00]; // genl: IPVS_CMD_DEL_DEST
    bytes.extend_from_slice(&SERVICE_KEY_TCP4);
    bytes.extend_from_slice(&dest);
    round_trip(
        &bytes,
        &IpvsMessage::new(
            IpvsCommand::DelDest,
            vec![
                IpvsAttribute::Service(service_key_attrs(&key)),
                IpvsAttribute::Dest(dest_key_attrs(&rk)),
            ],
        ),
    );
}

#[test]
fn dest_dump_answer_with_counters_and_stats64() {
    #[rustfmt::skip]
    let bytes: Vec<u8> = [
        &[0x05u8, 0x01, 0x00, 0x00][..],  // genl: IPVS_CMD_NEW_DEST (a dump answer)
        &[0x58, 0x00, 0x02, 0x00],         // IPVS_CMD_ATTR_DEST, len 88
        &[0x14, 0x00, 0x01, 0x00,          //   IPVS_DEST_ATTR_ADDR: 10.244.1.3
          0x0a, 0xf4, 0x01, 0x03, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        &[0x06, 0x00, 0x02, 0x00, 0x00, 0x50, 0x00, 0x00], // IPVS_DEST_ATTR_PORT 80
        &[0x08, 0x00, 0x03, 0x00, 0x03, 0x00, 0x00, 0x00], // FWD_METHOD: DROUTE
        &[0x08, 0x00, 0x04, 0x00, 0x01, 0x00, 0x00, 0x00], // WEIGHT 1
        &[0x08, 0x00, 0x07, 0x00, 0x02, 0x00, 0x00, 0x00], // ACTIVE_CONNS 2
        &[0x08, 0x00, 0x08, 0x00, 0x05, 0x00, 0x00, 0x00], // INACT_CONNS 5
        &[0x08, 0x00, 0x09, 0x00, 0x01, 0x00, 0x00, 0x00], // PERSIST_CONNS 1
        &[0x10, 0x00, 0x0c, 0x00,          //   IPVS_DEST_ATTR_STATS64, len 16
          0x0c, 0x00, 0x01, 0x00,          //     CONNS (u64) 9
          0x09, 0, 0, 0, 0, 0, 0, 0],
    ]
    .concat();
    let expected = IpvsMessage::new(
        IpvsCommand::NewDest,
        vec![IpvsAttribute::Dest(vec![
            DestAttribute::Addr(vec![10, 244, 1, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            DestAttribute::Port(80),
            DestAttribute::FwdMethod(3),
            DestAttribute::Weight(1),
            DestAttribute::ActiveConns(2),
            DestAttribute::InactiveConns(5),
            DestAttribute::PersistentConns(1),
            DestAttribute::Stats64(vec![StatsAttribute::Conns(9)]),
        ])],
    );
    round_trip(&bytes, &expected);
    let IpvsAttribute::Dest(d) = &expected.attributes[0] else {
        panic!()
    };
    // No IPVS_DEST_ATTR_ADDR_FAMILY (old kernels): the service's family is used.
    let rs = real_server_from_attrs(d, AddressFamily::Inet).unwrap();
    assert_eq!(rs.key.addr, IpAddr::V4(Ipv4Addr::new(10, 244, 1, 3)));
    assert_eq!(rs.forward, ForwardMethod::Route);
    assert_eq!(
        rs.conns,
        ConnCounters {
            active: 2,
            inactive: 5,
            persistent: 1
        }
    );
    assert_eq!(rs.stats.unwrap().conns, 9);
}

#[rustfmt::skip]
const NEW_DAEMON_V4: &[u8] = &[
    0x09, 0x01, 0x00, 0x00,             // genl: IPVS_CMD_NEW_DAEMON
    0x40, 0x00, 0x03, 0x00,             // IPVS_CMD_ATTR_DAEMON, len 64
      0x08, 0x00, 0x01, 0x00,           //   IPVS_DAEMON_ATTR_STATE
      0x01, 0x00, 0x00, 0x00,           //     IP_VS_STATE_MASTER
      0x09, 0x00, 0x02, 0x00,           //   IPVS_DAEMON_ATTR_MCAST_IFN, len 9
      0x65, 0x74, 0x68, 0x30,           //     "eth0"
      0x00, 0x00, 0x00, 0x00,           //     NUL + pad
      0x08, 0x00, 0x03, 0x00,           //   IPVS_DAEMON_ATTR_SYNC_ID
      0x07, 0x00, 0x00, 0x00,           //     7
      0x06, 0x00, 0x04, 0x00,           //   IPVS_DAEMON_ATTR_SYNC_MAXLEN
      0xdc, 0x05, 0x00, 0x00,           //     1500
      0x08, 0x00, 0x05, 0x00,           //   IPVS_DAEMON_ATTR_MCAST_GROUP
      0xe0, 0x00, 0x00, 0x51,           //     224.0.0.81
      0x06, 0x00, 0x07, 0x00,           //   IPVS_DAEMON_ATTR_MCAST_PORT
      0x90, 0x22, 0x00, 0x00,           //     8848 in HOST order (nla_get_u16)
      0x05, 0x00, 0x08, 0x00,           //   IPVS_DAEMON_ATTR_MCAST_TTL
      0x01, 0x00, 0x00, 0x00,           //     1 + pad
];

#[test]
fn new_daemon_all_attributes() {
    let mut d = SyncDaemon::new(DaemonState::Master, "eth0", 7);
    d.max_len = Some(1500);
    d.mcast_group = Some(IpAddr::V4(Ipv4Addr::new(224, 0, 0, 81)));
    d.mcast_port = Some(8848);
    d.mcast_ttl = Some(1);
    let msg = IpvsMessage::new(
        IpvsCommand::NewDaemon,
        vec![IpvsAttribute::Daemon(daemon_attrs(&d))],
    );
    round_trip(NEW_DAEMON_V4, &msg);
    let IpvsAttribute::Daemon(a) = &msg.attributes[0] else {
        panic!()
    };
    assert_eq!(sync_daemon_from_attrs(a).unwrap(), d);
}

#[test]
fn daemon_dump_answer_v6_group_and_del_daemon() {
    #[rustfmt::skip]
    let bytes: &[u8] = &[
        0x09, 0x01, 0x00, 0x00,         // genl: IPVS_CMD_NEW_DAEMON (a dump answer)
        0x38, 0x00, 0x03, 0x00,         // IPVS_CMD_ATTR_DAEMON, len 56
          0x08, 0x00, 0x01, 0x00,       //   STATE
          0x02, 0x00, 0x00, 0x00,       //     IP_VS_STATE_BACKUP
          0x08, 0x00, 0x02, 0x00,       //   MCAST_IFN, len 8
          0x75, 0x70, 0x30, 0x00,       //     "up0\0"
          0x08, 0x00, 0x03, 0x00,       //   SYNC_ID
          0x09, 0x00, 0x00, 0x00,       //     9
          0x14, 0x00, 0x06, 0x00,       //   MCAST_GROUP6
          0xff, 0x02, 0x00, 0x00,       //     ff02::51
          0x00, 0x00, 0x00, 0x00,
          0x00, 0x00, 0x00, 0x00,
          0x00, 0x00, 0x00, 0x51,
          0x06, 0x00, 0x07, 0x00,       //   MCAST_PORT
          0x90, 0x22, 0x00, 0x00,       //     8848
    ];
    let mut d = SyncDaemon::new(DaemonState::Backup, "up0", 9);
    d.mcast_group = Some("ff02::51".parse().unwrap());
    d.mcast_port = Some(8848);
    let msg = IpvsMessage::new(
        IpvsCommand::NewDaemon,
        vec![IpvsAttribute::Daemon(daemon_attrs(&d))],
    );
    round_trip(bytes, &msg);

    #[rustfmt::skip]
    let del: &[u8] = &[
        0x0a, 0x01, 0x00, 0x00,         // genl: IPVS_CMD_DEL_DAEMON
        0x0c, 0x00, 0x03, 0x00,         // IPVS_CMD_ATTR_DAEMON, len 12
          0x08, 0x00, 0x01, 0x00,       //   STATE
          0x02, 0x00, 0x00, 0x00,       //     backup
    ];
    round_trip(del, &crate::request::stop_daemon_msg(DaemonState::Backup));
}

#[test]
fn timeouts_config_info_zero_flush_get() {
    #[rustfmt::skip]
    let set_config: &[u8] = &[
        0x0c, 0x01, 0x00, 0x00,         // genl: IPVS_CMD_SET_CONFIG (also GET_CONFIG's answer)
        0x08, 0x00, 0x04, 0x00,         // IPVS_CMD_ATTR_TIMEOUT_TCP
        0x84, 0x03, 0x00, 0x00,         //   900
        0x08, 0x00, 0x05, 0x00,         // IPVS_CMD_ATTR_TIMEOUT_TCP_FIN
        0x78, 0x00, 0x00, 0x00,         //   120
        0x08, 0x00, 0x06, 0x00,         // IPVS_CMD_ATTR_TIMEOUT_UDP
        0x2c, 0x01, 0x00, 0x00,         //   300
    ];
    let t = Timeouts {
        tcp: 900,
        tcp_fin: 120,
        udp: 300,
    };
    round_trip(
        set_config,
        &crate::request::encode_op(&crate::Op::SetTimeouts(t)).unwrap(),
    );

    #[rustfmt::skip]
    let info: &[u8] = &[
        0x0e, 0x01, 0x00, 0x00,         // genl: IPVS_CMD_SET_INFO (GET_INFO's answer)
        0x08, 0x00, 0x01, 0x00,         // IPVS_INFO_ATTR_VERSION (info numbering!)
        0x01, 0x02, 0x01, 0x00,         //   0x010201 = 1.2.1
        0x08, 0x00, 0x02, 0x00,         // IPVS_INFO_ATTR_CONN_TAB_SIZE
        0x00, 0x10, 0x00, 0x00,         //   4096
    ];
    round_trip(
        info,
        &IpvsMessage::new(
            IpvsCommand::SetInfo,
            vec![
                IpvsAttribute::InfoVersion(0x010201),
                IpvsAttribute::InfoConnTabSize(4096),
            ],
        ),
    );

    let key = ServiceKey::tcp(IpAddr::V4(Ipv4Addr::new(10, 96, 0, 1)), 80);
    let mut zero = vec![0x10, 0x01, 0x00, 0x00]; // genl: IPVS_CMD_ZERO, one service
    zero.extend_from_slice(&SERVICE_KEY_TCP4);
    round_trip(
        &zero,
        &crate::request::encode_op(&crate::Op::Zero(Some(key))).unwrap(),
    );
    // IPVS_CMD_ZERO for all, IPVS_CMD_FLUSH, and the argument-less GETs.
    round_trip(
        &[0x10, 0x01, 0x00, 0x00],
        &crate::request::encode_op(&crate::Op::Zero(None)).unwrap(),
    );
    round_trip(
        &[0x11, 0x01, 0x00, 0x00],
        &crate::request::encode_op(&crate::Op::Flush).unwrap(),
    );
    for cmd in [
        IpvsCommand::GetService,
        IpvsCommand::GetDaemon,
        IpvsCommand::GetConfig,
        IpvsCommand::GetInfo,
    ] {
        round_trip(
            &[u8::from(cmd), 0x01, 0x00, 0x00],
            &IpvsMessage::new(cmd, vec![]),
        );
    }
    let mut get_dest = vec![0x08, 0x01, 0x00, 0x00]; // genl: IPVS_CMD_GET_DEST of a service
    get_dest.extend_from_slice(&SERVICE_KEY_TCP4);
    round_trip(
        &get_dest,
        &IpvsMessage::new(
            IpvsCommand::GetDest,
            vec![IpvsAttribute::Service(service_key_attrs(&key))],
        ),
    );
    let mut del = vec![0x03, 0x01, 0x00, 0x00]; // genl: IPVS_CMD_DEL_SERVICE
    del.extend_from_slice(&SERVICE_KEY_TCP4);
    round_trip(
        &del,
        &crate::request::encode_op(&crate::Op::DeleteService(key)).unwrap(),
    );
}

#[test]
fn unknown_first_level_attribute_and_command_survive() {
    #[rustfmt::skip]
    let bytes: &[u8] = &[
        0x63, 0x01, 0x00, 0x00,         // genl: command 99 (unknown)
        0x08, 0x00, 0x2a, 0x00,         // attribute 42 (unknown)
        0x01, 0x02, 0x03, 0x04,
    ];
    round_trip(
        bytes,
        &IpvsMessage::new(
            IpvsCommand::Other(99),
            vec![IpvsAttribute::Other(DefaultNla::new(42, vec![1, 2, 3, 4]))],
        ),
    );
}

#[test]
fn malformed_values_are_errors_not_panics() {
    #[rustfmt::skip]
    let bad_port: &[u8] = &[
        0x0c, 0x00, 0x01, 0x00,         // IPVS_CMD_ATTR_SERVICE
          0x05, 0x00, 0x04, 0x00,       //   IPVS_SVC_ATTR_PORT with 1 byte
          0x50, 0x00, 0x00, 0x00,
    ];
    let header = GenlHeader { cmd: 1, version: 1 };
    let err = IpvsMessage::parse_with_param(bad_port, header).unwrap_err();
    assert!(err.to_string().contains("IPVS_SVC_ATTR_PORT"), "{err}");
    // A nest length running past the buffer.
    let overlong: &[u8] = &[0xff, 0x00, 0x01, 0x00, 0x00, 0x00];
    assert!(IpvsMessage::parse_with_param(overlong, header).is_err());
    // A service without a key cannot become a VirtualServer.
    assert!(virtual_server_from_attrs(&[ServiceAttribute::Family(2)]).is_err());
    // An IPv6 family with a 4-byte address.
    let attrs = [
        ServiceAttribute::Family(10),
        ServiceAttribute::Protocol(6),
        ServiceAttribute::Addr(vec![1, 2, 3, 4]),
        ServiceAttribute::Port(1),
    ];
    assert!(virtual_server_from_attrs(&attrs).is_err());
}
