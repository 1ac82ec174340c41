//! Property tests of `ipvs::rules`: anything the save renderer prints parses
//! back to the same configuration and renders again to the same text, every
//! operation's rule form round-trips, ipvsadm's order does not depend on the
//! input order where ipvsadm's compare is a total order, and the parser never
//! panics.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipvs::rules::{
    parse_args, parse_line, parse_rules, render_op, render_save, render_save_sorted,
    MAX_PERSISTENCE_TIMEOUT,
};
use ipvs::{
    AddressFamily, ForwardMethod, Op, Protocol, RealServer, RealServerKey, ServiceFlags,
    ServiceKey, Timeouts, Tunnel, TunnelFlags, TunnelType, VirtualServer,
};
use proptest::prelude::*;

fn addr(v6: bool) -> BoxedStrategy<IpAddr> {
    if v6 {
        any::<u128>()
            .prop_map(|n| IpAddr::V6(Ipv6Addr::from(n)))
            .boxed()
    } else {
        any::<u32>()
            .prop_map(|n| IpAddr::V4(Ipv4Addr::from(n)))
            .boxed()
    }
}

fn service_key() -> impl Strategy<Value = ServiceKey> {
    prop_oneof![
        (0..3u8, any::<bool>(), any::<u16>()).prop_flat_map(|(p, v6, port)| {
            let protocol = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp][p as usize];
            addr(v6).prop_map(move |addr| ServiceKey::Addr {
                protocol,
                addr,
                port,
            })
        }),
        (any::<bool>(), 1..=u32::MAX).prop_map(|(v6, mark)| ServiceKey::Fwmark {
            family: if v6 {
                AddressFamily::Inet6
            } else {
                AddressFamily::Inet
            },
            mark,
        }),
    ]
}

/// A service the kernel could hold and ipvsadm could print, as save shows
/// it: the netmask only matters (and is only kept) when persistent.
fn virtual_server() -> impl Strategy<Value = VirtualServer> {
    (
        service_key(),
        prop::sample::select(vec!["rr", "wrr", "lc", "wlc", "sh", "mh", "dh", "sed"]),
        prop::option::of(1..=MAX_PERSISTENCE_TIMEOUT),
        0u32..=32,
        1u32..=128,
        0u32..8,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(key, sched, persist, plen4, plen6, sflags, ops, pe)| {
            let mut vs = VirtualServer::new(key).scheduler(sched);
            let zero_port = matches!(key, ServiceKey::Addr { port: 0, .. });
            let persist = match (persist, zero_port) {
                (None, true) => Some(360),
                (p, _) => p,
            };
            if let Some(t) = persist {
                vs = vs.persistent(t);
                vs.netmask = match key.family() {
                    AddressFamily::Inet6 => plen6,
                    _ if plen4 == 0 => u32::MAX,
                    _ => u32::MAX << (32 - plen4),
                };
            }
            vs.flags |= ServiceFlags::from_bits_retain(sflags << 3);
            if ops
                && matches!(
                    key,
                    ServiceKey::Addr {
                        protocol: Protocol::Udp,
                        ..
                    }
                )
            {
                vs = vs.one_packet();
            }
            if pe {
                vs = vs.pe_name("sip");
            }
            vs
        })
}

/// A real server of `key` that ipvsadm accepts (ports forced like ipvsadm
/// does, tunnel options valid for their type), thresholds optional.
fn real_server(key: ServiceKey, thresholds: bool) -> impl Strategy<Value = RealServer> {
    let same_v6 = key.family() == AddressFamily::Inet6;
    (
        0..3u8,
        any::<bool>(),
        any::<u16>(),
        0u32..=65_535,
        0..3u8,
        1u16..=65_535,
        0..3u8,
        0u32..1000,
        0u32..1000,
    )
        .prop_flat_map(
            move |(fwd, other_family, port, weight, tt, tport, csum, x, y)| {
                let forward = [
                    ForwardMethod::Masquerade,
                    ForwardMethod::Route,
                    ForwardMethod::Tunnel,
                ][fwd as usize];
                let v6 = if forward == ForwardMethod::Tunnel && other_family {
                    !same_v6
                } else {
                    same_v6
                };
                addr(v6).prop_map(move |a| {
                    let port = match key {
                        ServiceKey::Addr { port: p, .. }
                            if forward != ForwardMethod::Masquerade =>
                        {
                            p
                        }
                        _ => port,
                    };
                    let mut rs = RealServer::new(a, port).forward(forward).weight(weight);
                    if thresholds {
                        rs = rs.thresholds(x, y);
                    }
                    if forward == ForwardMethod::Tunnel {
                        let kind =
                            [TunnelType::Ipip, TunnelType::Gue, TunnelType::Gre][tt as usize];
                        let flags = match (kind, csum) {
                            (TunnelType::Ipip, _) | (_, 0) => TunnelFlags::empty(),
                            (_, 1) => TunnelFlags::CSUM,
                            (TunnelType::Gue, _) => TunnelFlags::REMCSUM,
                            _ => TunnelFlags::CSUM,
                        };
                        rs = rs.tunnel(
                            Tunnel::new(kind)
                                .port(if kind == TunnelType::Gue { tport } else { 0 })
                                .flags(flags),
                        );
                    }
                    rs
                })
            },
        )
}

fn service_with_servers(
    thresholds: bool,
) -> impl Strategy<Value = (VirtualServer, Vec<RealServer>)> {
    virtual_server().prop_flat_map(move |vs| {
        let key = vs.key;
        (
            Just(vs),
            prop::collection::vec(real_server(key, thresholds), 0..4),
        )
    })
}

type Dump = Vec<(VirtualServer, Vec<RealServer>)>;

/// `(service, real servers)` pairs of a dump, as [`render_save`] takes them.
fn pairs(dump: &Dump) -> impl Iterator<Item = (&VirtualServer, &Vec<RealServer>)> {
    dump.iter().map(|(vs, reals)| (vs, reals))
}

/// The dump that `-A` / `-a` operations describe, in their order.
fn ops_to_dump(ops: &[Op]) -> Dump {
    let mut dump: Dump = Vec::new();
    for op in ops {
        match op {
            Op::AddService(vs) => dump.push((vs.clone(), Vec::new())),
            Op::AddRealServer(k, rs) => {
                if let Some((_, reals)) = dump.iter_mut().find(|(vs, _)| vs.key == *k) {
                    reals.push(rs.clone());
                }
            }
            _ => {}
        }
    }
    dump
}

/// A deterministic Fisher-Yates shuffle driven by `seed`.
fn shuffle<T>(v: &mut [T], mut seed: u64) {
    for i in (1..v.len()).rev() {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let j = (seed >> 33) as usize % (i + 1);
        v.swap(i, j);
    }
}

/// A service and real servers whose addresses all lie in 10.0.0.0/8 or
/// fd00::/104 (differences fit a C int: ipvsadm's compare is a total order
/// there), keys and real-server addresses distinct, as in a kernel dump.
fn near_service_with_servers() -> impl Strategy<Value = (VirtualServer, Vec<RealServer>)> {
    let near = |v6: bool| {
        (0u32..1 << 24).prop_map(move |n| {
            if v6 {
                IpAddr::V6(Ipv6Addr::from(0xfd00_u128 << 112 | u128::from(n)))
            } else {
                IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | n))
            }
        })
    };
    let key = prop_oneof![
        (0..3u8, any::<bool>(), any::<u16>()).prop_flat_map(move |(p, v6, port)| {
            let protocol = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp][p as usize];
            near(v6).prop_map(move |addr| ServiceKey::Addr {
                protocol,
                addr,
                port,
            })
        }),
        (any::<bool>(), 1u32..1 << 31).prop_map(|(v6, mark)| ServiceKey::Fwmark {
            family: if v6 {
                AddressFamily::Inet6
            } else {
                AddressFamily::Inet
            },
            mark,
        }),
    ];
    key.prop_flat_map(move |key| {
        let v6 = key.family() == AddressFamily::Inet6;
        (
            Just(VirtualServer::new(key).scheduler("rr").persistent(60)),
            prop::collection::btree_set((near(v6), any::<u16>()), 0..5),
        )
    })
    .prop_map(|(vs, reals)| {
        let reals = reals
            .into_iter()
            .map(|(a, p)| RealServer::new(a, p).forward(ForwardMethod::Masquerade))
            .collect();
        (vs, reals)
    })
}

fn any_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        virtual_server().prop_map(Op::AddService),
        virtual_server().prop_map(Op::EditService),
        service_key().prop_map(Op::DeleteService),
        service_key()
            .prop_flat_map(|k| real_server(k, true).prop_map(move |rs| Op::AddRealServer(k, rs))),
        service_key()
            .prop_flat_map(|k| real_server(k, true).prop_map(move |rs| Op::EditRealServer(k, rs))),
        service_key().prop_flat_map(|k| {
            let v6 = k.family() == AddressFamily::Inet6;
            (addr(v6), any::<u16>())
                .prop_map(move |(addr, port)| Op::DeleteRealServer(k, RealServerKey { addr, port }))
        }),
        Just(Op::Flush),
        prop::option::of(service_key()).prop_map(Op::Zero),
        (0u32..100_000, 0u32..100_000, 0u32..100_000)
            .prop_map(|(tcp, tcp_fin, udp)| Op::SetTimeouts(Timeouts::new(tcp, tcp_fin, udp))),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// save -> parse gives back every service and real server, and
    /// rendering what was parsed gives the same text again.
    #[test]
    fn save_output_parses_back_to_the_same_state_and_text(
        dump in prop::collection::vec(service_with_servers(false), 0..5)
    ) {
        let text = render_save(pairs(&dump));
        let rules = parse_rules(&text).map_err(|e| TestCaseError::fail(format!("{e:?}\n{text}")))?;
        let mut expected = Vec::new();
        for (vs, reals) in &dump {
            expected.push(Op::AddService(vs.clone()));
            for rs in reals {
                expected.push(Op::AddRealServer(vs.key, rs.clone()));
            }
        }
        let got: Vec<Op> = rules.into_iter().map(|r| r.op).collect();
        let again = render_save(pairs(&ops_to_dump(&got)));
        prop_assert_eq!(got, expected, "{}", text);
        prop_assert_eq!(again, text);
    }

    /// Where ipvsadm's compare is a total order (all addresses in one /8,
    /// marks below 2^31), the sorted save is the same whatever order the
    /// kernel dumps in, and sorted by family, protocol, address and port.
    #[test]
    fn sorted_save_does_not_depend_on_dump_order(
        dump in prop::collection::vec(near_service_with_servers(), 0..8),
        seed in any::<u64>(),
    ) {
        // A kernel holds each service once.
        let mut dump = dump;
        let mut keys = Vec::new();
        dump.retain(|(vs, _)| {
            let new = !keys.contains(&vs.key);
            keys.push(vs.key);
            new
        });
        let text = render_save_sorted(dump.clone());
        let mut shuffled = dump.clone();
        shuffle(&mut shuffled, seed);
        for (_, reals) in shuffled.iter_mut() {
            shuffle(reals, seed.rotate_left(17));
        }
        prop_assert_eq!(render_save_sorted(shuffled), text.clone());
        let mut sorted = dump;
        sorted.sort_by_key(|(vs, _)| total_order_key(&vs.key));
        for (_, reals) in sorted.iter_mut() {
            reals.sort_by_key(|r| (r.key.addr, r.key.port));
        }
        prop_assert_eq!(render_save(pairs(&sorted)), text);
    }

    /// Every operation's rule form reads back to the same operation.
    #[test]
    fn every_op_round_trips_through_its_rule(op in any_op()) {
        let line = render_op(&op);
        let back = parse_line(&line).map_err(|e| TestCaseError::fail(format!("{line}: {e}")))?;
        prop_assert_eq!(back, Some(op), "{}", line);
    }

    /// Arbitrary input never panics the parser.
    #[test]
    fn parser_never_panics(line in "[-a-zA-Z0-9 .:\\[\\]=,]{0,60}") {
        let _ = parse_line(&line);
    }

    /// Arbitrary option soup built from real options never panics either.
    #[test]
    fn option_soup_never_panics(words in prop::collection::vec(prop::sample::select(vec![
        "-A", "-E", "-D", "-a", "-e", "-d", "-C", "-Z", "--set", "-t", "-u", "--sctp-service",
        "-f", "-6", "-s", "-p", "-M", "-b", "-o", "--pe", "-r", "-g", "-i", "-m", "-w", "-x",
        "-y", "--tun-type", "--tun-port", "--tun-csum", "--tun-nocsum", "--tun-remcsum",
        "10.0.0.1:80", "[fd00::1]:0", "0", "7", "rr", "sh", "gue", "gre", "sh-port", "255.255.0.0",
    ]), 0..12)) {
        let _ = parse_args(&words);
    }
}

/// The order of `ipvsadm -Sn` for services that compare without
/// wrapping: mark, family, protocol, address, port.
fn total_order_key(key: &ServiceKey) -> (u32, u16, u16, std::net::IpAddr, u16) {
    match *key {
        ServiceKey::Addr {
            protocol,
            addr,
            port,
        } => (
            0,
            AddressFamily::of(&addr).into(),
            protocol.into(),
            addr,
            port,
        ),
        ServiceKey::Fwmark { family, mark } => {
            let zero = if family == AddressFamily::Inet6 {
                std::net::IpAddr::from([0u16; 8])
            } else {
                std::net::IpAddr::from([0u8; 4])
            };
            (mark, family.into(), 0, zero, 0)
        }
    }
}
