//! Property tests of the codec: arbitrary values encode and decode to
//! themselves, and arbitrary bytes never make the parser panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipvs::codec::*;
use ipvs::*;
use netlink_packet_core::{DefaultNla, Emitable, ParseableParametrized};
use netlink_packet_generic::GenlHeader;
use proptest::prelude::*;

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|o| IpAddr::V4(Ipv4Addr::from(o))),
        any::<[u8; 16]>().prop_map(|o| IpAddr::V6(Ipv6Addr::from(o))),
    ]
}

fn name(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[a-z0-9_-]{{1,{max}}}")).unwrap()
}

fn service_key() -> impl Strategy<Value = ServiceKey> {
    prop_oneof![
        (0..3u8, ip(), any::<u16>()).prop_map(|(p, addr, port)| ServiceKey::Addr {
            protocol: [Protocol::Tcp, Protocol::Udp, Protocol::Sctp][p as usize],
            addr,
            port,
        }),
        (any::<bool>(), 1..u32::MAX).prop_map(|(v6, mark)| ServiceKey::fwmark(
            if v6 {
                AddressFamily::Inet6
            } else {
                AddressFamily::Inet
            },
            mark
        )),
    ]
}

fn virtual_server() -> impl Strategy<Value = VirtualServer> {
    (
        service_key(),
        name(15),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        proptest::option::of(name(15)),
    )
        .prop_map(|(key, sched, flags, timeout, netmask, pe)| {
            let mut vs = VirtualServer::new(key).scheduler(sched).netmask(netmask);
            // HASHED is read-only: never sent.
            vs.flags = ServiceFlags::from_bits_retain(flags) - ServiceFlags::HASHED;
            vs.timeout = timeout;
            vs.pe_name = pe;
            vs
        })
}

fn real_server() -> impl Strategy<Value = RealServer> {
    (
        ip(),
        any::<u16>(),
        0..5u32,
        0..=i32::MAX as u32,
        any::<u32>(),
        any::<u32>(),
        (any::<u8>(), any::<u16>(), any::<u16>()),
    )
        .prop_map(|(addr, port, fwd, weight, u, l, (tt, tp, tf))| {
            let mut rs = RealServer::new(addr, port)
                .forward(ForwardMethod::from(fwd))
                .weight(weight)
                .thresholds(u, l);
            rs.tunnel = Tunnel::new(TunnelType::from(tt))
                .port(tp)
                .flags(TunnelFlags::from_bits_retain(tf));
            rs
        })
}

fn daemon() -> impl Strategy<Value = SyncDaemon> {
    (
        prop_oneof![Just(DaemonState::Master), Just(DaemonState::Backup)],
        name(15),
        any::<u32>(),
        proptest::option::of(any::<u16>()),
        proptest::option::of(ip()),
        proptest::option::of(any::<u16>()),
        proptest::option::of(any::<u8>()),
    )
        .prop_map(|(state, ifn, id, maxlen, group, port, ttl)| {
            let mut d = SyncDaemon::new(state, ifn, id);
            d.max_len = maxlen;
            d.mcast_group = group;
            d.mcast_port = port;
            d.mcast_ttl = ttl;
            d
        })
}

/// Emits `msg` and parses it back.
fn reparse(msg: &IpvsMessage) -> IpvsMessage {
    let mut buf = vec![0u8; msg.buffer_len()];
    msg.emit(&mut buf);
    let header = GenlHeader {
        cmd: u8::from(msg.cmd),
        version: 1,
    };
    IpvsMessage::parse_with_param(&buf, header).expect("own output parses")
}

proptest! {
    #[test]
    fn services_round_trip(vs in virtual_server()) {
        let msg = IpvsMessage::new(IpvsCommand::NewService, vec![IpvsAttribute::Service(service_attrs(&vs))]);
        let back = reparse(&msg);
        prop_assert_eq!(&back, &msg);
        let IpvsAttribute::Service(attrs) = &back.attributes[0] else { unreachable!() };
        prop_assert_eq!(virtual_server_from_attrs(attrs).unwrap(), vs);
    }

    #[test]
    fn real_servers_round_trip(key in service_key(), rs in real_server()) {
        let msg = IpvsMessage::new(
            IpvsCommand::NewDest,
            vec![IpvsAttribute::Service(service_key_attrs(&key)), IpvsAttribute::Dest(dest_attrs(&rs))],
        );
        let back = reparse(&msg);
        prop_assert_eq!(&back, &msg);
        let IpvsAttribute::Dest(attrs) = &back.attributes[1] else { unreachable!() };
        prop_assert_eq!(real_server_from_attrs(attrs, key.family()).unwrap(), rs);
    }

    #[test]
    fn daemons_round_trip(d in daemon()) {
        let msg = IpvsMessage::new(IpvsCommand::NewDaemon, vec![IpvsAttribute::Daemon(daemon_attrs(&d))]);
        let back = reparse(&msg);
        prop_assert_eq!(&back, &msg);
        let IpvsAttribute::Daemon(attrs) = &back.attributes[0] else { unreachable!() };
        prop_assert_eq!(sync_daemon_from_attrs(attrs).unwrap(), d);
    }

    #[test]
    fn stats64_round_trip(v in proptest::array::uniform10(any::<u64>())) {
        let mut s = Stats::default();
        (s.conns, s.inpkts, s.outpkts, s.inbytes, s.outbytes) = (v[0], v[1], v[2], v[3], v[4]);
        (s.cps, s.inpps, s.outpps, s.inbps, s.outbps) = (v[5], v[6], v[7], v[8], v[9]);
        let key = ServiceKey::tcp(IpAddr::V4(Ipv4Addr::LOCALHOST), 1);
        let mut attrs = service_key_attrs(&key);
        attrs.push(ServiceAttribute::Stats64(stats_to_attrs(&s)));
        let msg = IpvsMessage::new(IpvsCommand::NewService, vec![IpvsAttribute::Service(attrs)]);
        let back = reparse(&msg);
        prop_assert_eq!(&back, &msg);
        let IpvsAttribute::Service(attrs) = &back.attributes[0] else { unreachable!() };
        prop_assert_eq!(virtual_server_from_attrs(attrs).unwrap().stats, Some(s));
    }

    #[test]
    fn unknown_attributes_survive(kind in 13u16..0x3fff, value in proptest::collection::vec(any::<u8>(), 0..64)) {
        let msg = IpvsMessage::new(
            IpvsCommand::NewService,
            vec![
                IpvsAttribute::Service(vec![ServiceAttribute::Other(DefaultNla::new(kind, value.clone()))]),
                IpvsAttribute::Other(DefaultNla::new(kind, value)),
            ],
        );
        prop_assert_eq!(reparse(&msg), msg);
    }

    #[test]
    fn arbitrary_bytes_never_panic(cmd in any::<u8>(), bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let header = GenlHeader { cmd, version: 1 };
        if let Ok(m) = IpvsMessage::parse_with_param(&bytes[..], header) {
            for a in &m.attributes {
                match a {
                    IpvsAttribute::Service(s) => { let _ = virtual_server_from_attrs(s); }
                    IpvsAttribute::Dest(d) => { let _ = real_server_from_attrs(d, AddressFamily::Inet6); }
                    IpvsAttribute::Daemon(d) => { let _ = sync_daemon_from_attrs(d); }
                    _ => {}
                }
            }
        }
    }

    #[test]
    fn nested_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256), kind in 1u16..4) {
        // A well-formed outer nest around arbitrary inner bytes.
        let len = (bytes.len() + 4) as u16;
        let mut buf = len.to_ne_bytes().to_vec();
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&bytes);
        while !buf.len().is_multiple_of(4) { buf.push(0); }
        let _ = IpvsMessage::parse_with_param(&buf[..], GenlHeader { cmd: 1, version: 1 });
    }
}
