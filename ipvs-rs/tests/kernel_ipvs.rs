//! ipvs-rs against a real kernel: every operation, in a fresh network
//! namespace per test. Run inside the test VM (scripts/test.sh), as root.
#![cfg(feature = "kernel-tests")]

mod common;

use std::time::Instant;

use common::{a, TestNs};
use ipvs::*;

fn vip4() -> ServiceKey {
    ServiceKey::tcp(a("10.96.0.1"), 80)
}

/// The ops that add service `key` (defaults) and then each real server.
fn add_service_ops(key: ServiceKey, reals: impl IntoIterator<Item = RealServer>) -> Vec<Op> {
    let mut ops = vec![Op::AddService(VirtualServer::new(key))];
    ops.extend(reals.into_iter().map(|rs| Op::AddRealServer(key, rs)));
    ops
}

#[test]
fn info_and_empty_list() {
    let ns = TestNs::new();
    let mut h = ns.handle();
    assert_ne!(h.family_id(), 0);
    let info = h.info().unwrap();
    assert_eq!(info.version_triple(), (1, 2, 1));
    assert!(info.conn_table_size > 0);
    assert!(h.services().unwrap().is_empty());
    assert!(h.dump().unwrap().is_empty());
}

#[test]
fn add_get_edit_delete_tcp_service() {
    let ns = TestNs::new();
    let mut h = ns.handle();
    let vs = VirtualServer::new(vip4()).scheduler("wrr");
    h.add_service(&vs).unwrap();
    let got = h.service(&vip4()).unwrap();
    assert!(got.same_config(&vs), "{got:?} vs {vs:?}");
    assert!(got.flags.contains(ServiceFlags::HASHED));
    // ipvsadm sees the same thing.
    let listing = ns.exec(&["ipvsadm", "-Sn"]);
    assert_eq!(listing.trim(), "-A -t 10.96.0.1:80 -s wrr");

    let edited = vs
        .clone()
        .scheduler("lc")
        .persistent(300)
        .netmask(0xffff_ff00);
    h.edit_service(&edited).unwrap();
    let got = h.service(&vip4()).unwrap();
    assert!(got.same_config(&edited), "{got:?}");
    let listing = ns.exec(&["ipvsadm", "-Sn"]);
    assert_eq!(
        listing.trim(),
        "-A -t 10.96.0.1:80 -s lc -p 300 -M 255.255.255.0"
    );

    h.delete_service(&vip4()).unwrap();
    let err = h.service(&vip4()).unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert!(h.services().unwrap().is_empty());
}

#[test]
fn real_servers_add_edit_delete() {
    let ns = TestNs::new();
    let mut h = ns.handle();
    h.add_service(&VirtualServer::new(vip4())).unwrap();
    let rs1 = RealServer::new(a("10.244.1.2"), 8080).weight(3);
    let rs2 = RealServer::new(a("10.244.1.3"), 8080)
        .forward(ForwardMethod::Route)
        .thresholds(100, 10);
    h.add_real_server(&vip4(), &rs1).unwrap();
    h.add_real_server(&vip4(), &rs2).unwrap();
    let mut got = h.real_servers(&vip4()).unwrap();
    got.sort_by_key(|r| r.key);
    assert_eq!(got.len(), 2);
    assert!(got[0].same_config(&rs1), "{:?}", got[0]);
    assert!(got[1].same_config(&rs2), "{:?}", got[1]);

    let rs1b = rs1.clone().weight(0);
    h.edit_real_server(&vip4(), &rs1b).unwrap();
    let got = h.real_servers(&vip4()).unwrap();
    assert!(got.iter().any(|r| r.same_config(&rs1b)));

    h.delete_real_server(&vip4(), &rs2.key).unwrap();
    let got = h.real_servers(&vip4()).unwrap();
    assert_eq!(got.len(), 1);
    let err = h.delete_real_server(&vip4(), &rs2.key).unwrap_err();
    assert!(err.is_not_found(), "{err}");
}

#[test]
fn errors_are_typed() {
    let ns = TestNs::new();
    let mut h = ns.handle();
    let vs = VirtualServer::new(vip4());
    h.add_service(&vs).unwrap();
    let err = h.add_service(&vs).unwrap_err();
    assert!(err.is_exists(), "{err}");
    assert_eq!(err.kind_label(), "exists");
    let err = h
        .add_service(&VirtualServer::new(ServiceKey::tcp(a("10.96.0.2"), 80)).scheduler("nosuch"))
        .unwrap_err();
    assert!(
        matches!(&err, Error::SchedulerUnavailable(s) if s == "nosuch"),
        "{err:?}"
    );
    let err = h
        .delete_service(&ServiceKey::udp(a("10.96.0.9"), 53))
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert_eq!(
        err.to_string(),
        "delete service UDP 10.96.0.9:53: No such process (errno 3)"
    );
    // Editing to a missing scheduler is refused the same way.
    let err = h
        .edit_service(&vs.clone().scheduler("nosuch2"))
        .unwrap_err();
    assert!(
        matches!(&err, Error::SchedulerUnavailable(s) if s == "nosuch2"),
        "{err:?}"
    );
    // A missing persistence engine: ENOENT too, reported with both names.
    let err = h
        .add_service(
            &VirtualServer::new(ServiceKey::udp(a("10.96.0.3"), 53))
                .persistent(10)
                .pe_name("nope"),
        )
        .unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    assert!(err.to_string().contains("\"nope\""), "{err}");
    // A real server for a missing service.
    let err = h
        .add_real_server(
            &ServiceKey::tcp(a("10.96.0.77"), 80),
            &RealServer::new(a("10.244.0.1"), 80),
        )
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");
    // Editing a real server that does not exist.
    let err = h
        .edit_real_server(&vip4(), &RealServer::new(a("10.244.0.99"), 80))
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");
    // The service is still as it was.
    assert!(h.service(&vip4()).unwrap().same_config(&vs));
}

#[test]
fn batch_with_failures() {
    let ns = TestNs::new();
    let mut h = ns.handle();
    let mut ops = Vec::new();
    for i in 0..300u32 {
        let key = ServiceKey::tcp(a(&format!("10.97.{}.{}", i / 250, i % 250 + 1)), 80);
        ops.extend(add_service_ops(
            key,
            (1..=3).map(|j| RealServer::new(a(&format!("10.244.{}.{j}", i % 200)), 8080)),
        ));
    }
    // Failing ops in the middle: a duplicate service, a server of a missing
    // service, a duplicate server.
    let dup = ops[0].clone();
    let missing = Op::AddRealServer(
        ServiceKey::tcp(a("10.99.0.1"), 80),
        RealServer::new(a("10.244.0.9"), 1),
    );
    let dup_rs = ops[1].clone();
    ops.insert(500, dup);
    ops.insert(700, missing);
    ops.push(dup_rs);
    let report = h.apply(&ops).unwrap();
    let failures: Vec<usize> = report.failures().map(|(i, _)| i).collect();
    assert_eq!(
        failures,
        vec![500, 700, ops.len() - 1],
        "{:?}",
        report.failures().collect::<Vec<_>>()
    );
    assert!(report.result(500).unwrap().unwrap_err().is_exists());
    assert!(report.result(700).unwrap().unwrap_err().is_not_found());
    assert!(matches!(report.result(499), Some(Ok(()))));
    assert!(report.result(ops.len()).is_none());
    let dump = h.dump().unwrap();
    assert_eq!(dump.len(), 300);
    assert!(dump.iter().all(|(_, rs)| rs.len() == 3));
}

/// `ipvsadm -Sn` output as sorted lines, after checking that
/// `ipvs::rules` renders the handle's dump to exactly the same text (lines
/// and order).
fn saved(ns: &TestNs, h: &mut Handle) -> Vec<String> {
    let theirs = ns.exec(&["ipvsadm", "-Sn"]);
    let ours = rules::render_save_sorted(h.dump().unwrap());
    assert_eq!(
        ours, theirs,
        "ipvs::rules::render_save_sorted vs ipvsadm -Sn"
    );
    let mut v: Vec<String> = theirs.lines().map(str::to_owned).collect();
    v.sort();
    v
}

#[test]
fn protocols_families_and_fwmarks() {
    let ns = TestNs::new();
    let mut h = ns.handle();
    let keys = [
        ServiceKey::tcp(a("10.96.0.1"), 80),
        ServiceKey::udp(a("10.96.0.1"), 53),
        ServiceKey::sctp(a("10.96.0.1"), 3868),
        ServiceKey::tcp(a("fd00:96::1"), 443),
        ServiceKey::udp(a("fd00:96::1"), 53),
        ServiceKey::sctp(a("fd00:96::1"), 3868),
        ServiceKey::fwmark(AddressFamily::Inet, 7),
        ServiceKey::fwmark(AddressFamily::Inet6, 7),
    ];
    for k in &keys {
        h.add_service(&VirtualServer::new(*k)).unwrap();
    }
    let mut got: Vec<ServiceKey> = h.services().unwrap().iter().map(|v| v.key).collect();
    got.sort();
    let mut want = keys.to_vec();
    want.sort();
    assert_eq!(got, want);
    for k in &keys {
        let vs = h.service(k).unwrap();
        assert!(vs.same_config(&VirtualServer::new(*k)), "{vs:?}");
    }
    let mut want = vec![
        "-A -f 7 -6 -s rr",
        "-A -f 7 -s rr",
        "-A -t 10.96.0.1:80 -s rr",
        "-A -t [fd00:96::1]:443 -s rr",
        "-A -u 10.96.0.1:53 -s rr",
        "-A -u [fd00:96::1]:53 -s rr",
        "-A --sctp-service 10.96.0.1:3868 -s rr",
        "-A --sctp-service [fd00:96::1]:3868 -s rr",
    ];
    want.sort();
    assert_eq!(saved(&ns, &mut h), want);
    for k in &keys {
        h.delete_service(k).unwrap();
    }
    assert!(h.services().unwrap().is_empty());
}

#[test]
fn scheduler_flags_persistence_one_packet_pe() {
    let ns = TestNs::new();
    let mut h = ns.handle();
    let sh = VirtualServer::new(ServiceKey::tcp(a("10.96.0.1"), 80))
        .scheduler("sh")
        .sched_flag(SchedFlag::ShFallback)
        .sched_flag(SchedFlag::ShPort);
    let mh = VirtualServer::new(ServiceKey::tcp(a("10.96.0.2"), 80))
        .scheduler("mh")
        .sched_flag(SchedFlag::MhPort);
    let persist6 = VirtualServer::new(ServiceKey::tcp(a("fd00:96::1"), 80))
        .persistent(600)
        .netmask(64);
    let onepacket = VirtualServer::new(ServiceKey::udp(a("10.96.0.3"), 53)).one_packet();
    let sip = VirtualServer::new(ServiceKey::udp(a("10.96.0.4"), 5060))
        .persistent(60)
        .pe_name("sip");
    for vs in [&sh, &mh, &persist6, &onepacket, &sip] {
        h.add_service(vs).unwrap();
        let got = h.service(&vs.key).unwrap();
        assert!(got.same_config(vs), "sent {vs:?}\ngot {got:?}");
    }
    assert_eq!(
        saved(&ns, &mut h),
        vec![
            "-A -t 10.96.0.1:80 -s sh -b sh-fallback,sh-port",
            "-A -t 10.96.0.2:80 -s mh -b mh-port",
            "-A -t [fd00:96::1]:80 -s rr -p 600 -M 64",
            "-A -u 10.96.0.3:53 -s rr -o",
            "-A -u 10.96.0.4:5060 -s rr -p 60 --pe sip",
        ]
    );
    // Edit: drop the flags and the engine.
    let plain = VirtualServer::new(sip.key).scheduler("wrr");
    h.edit_service(&plain).unwrap();
    assert!(h.service(&sip.key).unwrap().same_config(&plain));
}

#[test]
fn forwarding_methods_thresholds_tunnels() {
    let ns = TestNs::new();
    let mut h = ns.handle();
    let k = ServiceKey::tcp(a("10.96.0.1"), 80);
    h.add_service(&VirtualServer::new(k)).unwrap();
    let servers = vec![
        RealServer::new(a("10.244.1.1"), 8080)
            .weight(5)
            .thresholds(1000, 100),
        RealServer::new(a("10.244.1.2"), 80).forward(ForwardMethod::Route),
        RealServer::new(a("10.244.1.3"), 80).tunnel(Tunnel::default()),
        RealServer::new(a("10.244.1.4"), 80).tunnel(
            Tunnel::new(TunnelType::Gue)
                .port(6080)
                .flags(TunnelFlags::CSUM),
        ),
        RealServer::new(a("10.244.1.5"), 80).tunnel(
            Tunnel::new(TunnelType::Gue)
                .port(6081)
                .flags(TunnelFlags::REMCSUM),
        ),
        RealServer::new(a("10.244.1.6"), 80).tunnel(
            Tunnel::new(TunnelType::Gre)
                .port(0)
                .flags(TunnelFlags::CSUM),
        ),
    ];
    for rs in &servers {
        h.add_real_server(&k, rs).unwrap();
    }
    let mut got = h.real_servers(&k).unwrap();
    got.sort_by_key(|r| r.key);
    assert_eq!(got.len(), servers.len());
    for (g, w) in got.iter().zip(&servers) {
        assert!(g.same_config(w), "sent {w:?}\ngot {g:?}");
        assert_eq!(g.conns, ConnCounters::default());
    }
    assert_eq!(
        saved(&ns, &mut h),
        vec![
            "-A -t 10.96.0.1:80 -s rr",
            "-a -t 10.96.0.1:80 -r 10.244.1.1:8080 -m -w 5",
            "-a -t 10.96.0.1:80 -r 10.244.1.2:80 -g -w 1",
            "-a -t 10.96.0.1:80 -r 10.244.1.3:80 -i -w 1 --tun-type ipip",
            "-a -t 10.96.0.1:80 -r 10.244.1.4:80 -i -w 1 --tun-type gue --tun-port 6080 --tun-csum",
            "-a -t 10.96.0.1:80 -r 10.244.1.5:80 -i -w 1 --tun-type gue --tun-port 6081 --tun-remcsum",
            "-a -t 10.96.0.1:80 -r 10.244.1.6:80 -i -w 1 --tun-type gre --tun-csum",
        ]
    );
    // Thresholds are not in -Sn; -Ln shows them.
    let ln = ns.exec(&["ipvsadm", "-Ln", "--thresholds"]);
    assert!(
        ln.lines()
            .any(|l| l.contains("10.244.1.1:8080") && l.contains("1000") && l.contains("100")),
        "{ln}"
    );

    // A local address becomes the Local method; bypass is stored as sent.
    let local = RealServer::new(a("10.0.2.15"), 80).forward(ForwardMethod::Masquerade);
    h.add_real_server(&k, &local).unwrap();
    let got = h.real_servers(&k).unwrap();
    let l = got.iter().find(|r| r.key == local.key).unwrap();
    let ln = ns.exec(&["ipvsadm", "-Ln"]);
    let ipvsadm_says = ln
        .lines()
        .find(|x| x.contains("10.0.2.15:80"))
        .unwrap()
        .to_owned();
    match l.forward {
        ForwardMethod::Local => assert!(ipvsadm_says.contains("Local"), "{ipvsadm_says}"),
        ForwardMethod::Masquerade => assert!(ipvsadm_says.contains("Masq"), "{ipvsadm_says}"),
        other => panic!("unexpected {other:?}: {ipvsadm_says}"),
    }
}

#[test]
fn real_server_of_other_family() {
    let ns = TestNs::new();
    let mut h = ns.handle();
    let k6 = ServiceKey::tcp(a("fd00:96::1"), 80);
    h.add_service(&VirtualServer::new(k6)).unwrap();
    // The kernel forwards to another family only through a tunnel.
    let tun4 = RealServer::new(a("10.244.1.2"), 80).tunnel(Tunnel::default());
    h.add_real_server(&k6, &tun4).unwrap();
    let got = h.real_servers(&k6).unwrap();
    assert_eq!(got.len(), 1);
    assert!(got[0].same_config(&tun4), "{:?}", got[0]);
    let err = h
        .add_real_server(&k6, &RealServer::new(a("10.244.1.3"), 80))
        .unwrap_err();
    assert!(err.is_invalid(), "{err}");
    h.delete_real_server(&k6, &tun4.key).unwrap();
    assert!(h.real_servers(&k6).unwrap().is_empty());
}

/// Sends `n` UDP datagrams to `to` from inside `ns`.
fn send_udp(ns: &TestNs, to: std::net::SocketAddr, n: usize) {
    let path = ns.path();
    std::thread::spawn(move || {
        let f = std::fs::File::open(path).unwrap();
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        for _ in 0..n {
            s.send_to(b"hello", to).unwrap();
        }
    })
    .join()
    .unwrap();
}

#[test]
fn stats_and_zero() {
    let ns = TestNs::new();
    let mut h = ns.handle();
    let k = ServiceKey::udp(a("10.96.0.10"), 53);
    let k2 = ServiceKey::udp(a("10.96.0.11"), 53);
    for key in [k, k2] {
        h.add_service(&VirtualServer::new(key)).unwrap();
        h.add_real_server(&key, &RealServer::new(a("10.244.1.2"), 5353))
            .unwrap();
    }
    send_udp(&ns, "10.96.0.10:53".parse().unwrap(), 5);
    send_udp(&ns, "10.96.0.11:53".parse().unwrap(), 3);
    // The kernel folds its per-CPU counters into what it reports every 2 s.
    let settled = |h: &mut Handle, key: &ServiceKey, pkts: u64| {
        let until = Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let s = h.service(key).unwrap().stats.expect("stats");
            if s.inpkts >= pkts || Instant::now() > until {
                return s;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    };
    let s = settled(&mut h, &k, 5);
    assert_eq!(settled(&mut h, &k2, 3).inpkts, 3);
    assert_eq!((s.conns, s.inpkts), (1, 5), "{s:?}");
    assert_eq!(s.inbytes, 5 * (20 + 8 + 5), "{s:?}");
    let rs = h.real_servers(&k).unwrap();
    let rstats = rs[0].stats.expect("dest stats");
    assert_eq!((rstats.conns, rstats.inpkts), (1, 5));
    assert_eq!(
        rs[0].conns.active + rs[0].conns.inactive,
        1,
        "{:?}",
        rs[0].conns
    );
    // ipvsadm agrees.
    let ln = ns.exec(&[
        "ipvsadm",
        "-Ln",
        "--stats",
        "--exact",
        "-u",
        "10.96.0.10:53",
    ]);
    assert!(
        ln.lines().any(|l| l.starts_with("UDP")
            && l.split_whitespace().nth(2) == Some("1")
            && l.split_whitespace().nth(3) == Some("5")),
        "{ln}"
    );

    h.zero(Some(&k)).unwrap();
    let s = h.service(&k).unwrap().stats.unwrap();
    assert_eq!((s.conns, s.inpkts, s.inbytes), (0, 0, 0));
    assert_eq!(h.service(&k2).unwrap().stats.unwrap().inpkts, 3);
    h.zero(None).unwrap();
    assert_eq!(h.service(&k2).unwrap().stats.unwrap().inpkts, 0);
}

#[test]
fn flush_timeouts_info() {
    let ns = TestNs::new();
    let mut h = ns.handle();
    for p in 1..=20 {
        h.add_service(&VirtualServer::new(ServiceKey::tcp(a("10.96.0.1"), p)))
            .unwrap();
    }
    assert_eq!(h.services().unwrap().len(), 20);
    h.flush().unwrap();
    assert!(h.services().unwrap().is_empty());

    let t0 = h.timeouts().unwrap();
    assert_eq!(t0, Timeouts::new(900, 120, 300));
    h.set_timeouts(&Timeouts::new(3600, 30, 60)).unwrap();
    assert_eq!(h.timeouts().unwrap(), Timeouts::new(3600, 30, 60));
    // 0 leaves a value unchanged.
    h.set_timeouts(&Timeouts::new(0, 0, 90)).unwrap();
    assert_eq!(h.timeouts().unwrap(), Timeouts::new(3600, 30, 90));
    let out = ns.exec(&["ipvsadm", "-L", "--timeout"]);
    assert!(out.contains("3600 30 90"), "{out}");

    let info = h.info().unwrap();
    let out = ns.exec(&["ipvsadm", "-Ln"]);
    assert!(
        out.contains(&format!("(size={})", info.conn_table_size)),
        "{out} vs {info:?}"
    );
}

#[test]
fn sync_daemons() {
    let ns = TestNs::new();
    let mut h = ns.handle();
    assert!(h.daemons().unwrap().is_empty());
    let mut master = SyncDaemon::new(DaemonState::Master, "up0", 7);
    master.mcast_group = Some(a("239.1.2.3"));
    master.mcast_port = Some(8850);
    master.mcast_ttl = Some(2);
    master.max_len = Some(1400);
    h.start_daemon(&master).unwrap();
    let backup = SyncDaemon::new(DaemonState::Backup, "up0", 9);
    h.start_daemon(&backup).unwrap();
    let ds = h.daemons().unwrap();
    assert_eq!(ds.len(), 2, "{ds:?}");
    let m = ds.iter().find(|d| d.state == DaemonState::Master).unwrap();
    assert_eq!((m.interface.as_str(), m.sync_id), ("up0", 7));
    assert_eq!(m.mcast_group, Some(a("239.1.2.3")));
    assert_eq!(m.mcast_port, Some(8850));
    assert_eq!(m.mcast_ttl, Some(2));
    assert_eq!(m.max_len, Some(1400));
    let b = ds.iter().find(|d| d.state == DaemonState::Backup).unwrap();
    assert_eq!((b.interface.as_str(), b.sync_id), ("up0", 9));
    // The kernel's defaults for what we left out.
    assert_eq!(b.mcast_group, Some(a("224.0.0.81")));
    assert_eq!(b.mcast_port, Some(8848));
    let out = ns.exec(&["ipvsadm", "-L", "--daemon"]);
    assert!(
        out.contains("master sync daemon (mcast=up0, syncid=7"),
        "{out}"
    );
    // The multicast port travels in host byte order: ipvsadm agrees on it.
    assert!(out.contains("port=8850"), "{out}");
    assert!(out.contains("group=239.1.2.3"), "{out}");
    // A second master is refused.
    let err = h.start_daemon(&master).unwrap_err();
    assert!(err.is_already_exists(), "{err}");
    h.stop_daemon(DaemonState::Master).unwrap();
    let ds = h.daemons().unwrap();
    assert_eq!(ds.len(), 1);
    assert_eq!(ds[0].state, DaemonState::Backup);
    h.stop_daemon(DaemonState::Backup).unwrap();
    assert!(h.daemons().unwrap().is_empty());
}

#[test]
fn unbatched_apply_matches_batched() {
    let ns = TestNs::new();
    let mut h = ns.handle();
    let k = ServiceKey::tcp(a("10.96.0.1"), 80);
    let mut ops = add_service_ops(
        k,
        (1..=20).map(|i| RealServer::new(a(&format!("10.244.0.{i}")), 80)),
    );
    ops.push(Op::AddService(VirtualServer::new(k))); // exists
    ops.push(Op::EditRealServer(
        k,
        RealServer::new(a("10.244.0.1"), 80).weight(9),
    ));
    ops.push(Op::DeleteRealServer(
        k,
        RealServerKey {
            addr: a("10.244.9.9"),
            port: 80,
        },
    )); // missing
    ops.push(Op::SetTimeouts(Timeouts::new(100, 0, 0)));
    let report = h.apply_unbatched(&ops).unwrap();
    let failed: Vec<usize> = report.failures().map(|(i, _)| i).collect();
    assert_eq!(failed, vec![21, 23]);
    let state = h.dump().unwrap();
    h.flush().unwrap();
    let report2 = h.apply(&ops).unwrap();
    let failed2: Vec<usize> = report2.failures().map(|(i, _)| i).collect();
    assert_eq!(failed2, failed);
    let state2 = h.dump().unwrap();
    assert_eq!(state.len(), 1);
    assert_eq!(state2[0].1.len(), 20);
    let norm = |s: &Vec<(VirtualServer, Vec<RealServer>)>| {
        let mut rs: Vec<(RealServerKey, u32)> = s[0].1.iter().map(|r| (r.key, r.weight)).collect();
        rs.sort();
        rs
    };
    assert_eq!(norm(&state), norm(&state2));
    assert_eq!(h.timeouts().unwrap().tcp, 100);
}

#[test]
fn namespaces_are_isolated() {
    let ns1 = TestNs::new();
    let ns2 = TestNs::new();
    let mut h1 = ns1.handle();
    let f = std::fs::File::open(ns2.path()).unwrap();
    let mut h2 = Handle::new_in_netns_fd(std::os::fd::AsFd::as_fd(&f)).unwrap();
    h1.add_service(&VirtualServer::new(vip4())).unwrap();
    assert_eq!(h1.services().unwrap().len(), 1);
    assert!(h2.services().unwrap().is_empty());
    // The test process itself stayed in its own namespace.
    let mut root = Handle::new().unwrap();
    assert!(root.services().unwrap().iter().all(|v| v.key != vip4()));
    assert_eq!(ns2.exec(&["ipvsadm", "-Sn"]).trim(), "");
    let err = Handle::new_in_netns("/run/netns/does-not-exist").unwrap_err();
    assert!(matches!(err, Error::Netns { .. }), "{err}");
}

#[test]
fn async_handle() {
    let ns = TestNs::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut h = AsyncHandle::new_in_netns(ns.path()).await.unwrap();
        let k = ServiceKey::udp(a("fd00:96::53"), 53);
        h.add_service(&VirtualServer::new(k).scheduler("lc"))
            .await
            .unwrap();
        let ops: Vec<Op> = (1..=50)
            .map(|i| Op::AddRealServer(k, RealServer::new(a(&format!("fd00:244::{i:x}")), 53)))
            .collect();
        let report = h.apply(&ops).await.unwrap();
        assert!(report.is_ok());
        let dump = h.dump().await.unwrap();
        assert_eq!(dump.len(), 1);
        assert_eq!(dump[0].0.scheduler, "lc");
        assert_eq!(dump[0].1.len(), 50);
        let err = h.add_service(&VirtualServer::new(k)).await.unwrap_err();
        assert!(err.is_exists());
        assert_eq!(h.info().await.unwrap().version_triple(), (1, 2, 1));
        // A second handle, opened from a namespace fd, sees the same state.
        let f = std::fs::File::open(ns.path()).unwrap();
        let mut h2 = AsyncHandle::new_in_netns_fd(std::os::fd::AsFd::as_fd(&f))
            .await
            .unwrap();
        assert_eq!(h2.real_servers(&k).await.unwrap().len(), 50);
        h.flush().await.unwrap();
        assert!(h2.services().await.unwrap().is_empty());
    });
}

#[test]
fn large_dump_and_batch() {
    let ns = TestNs::new();
    let mut h = ns.handle();
    let mut ops = Vec::new();
    for i in 0..2000u32 {
        let k = ServiceKey::tcp(
            a(&format!(
                "10.{}.{}.{}",
                100 + i / 65536,
                (i / 256) % 256,
                i % 256
            )),
            80,
        );
        ops.extend(add_service_ops(
            k,
            (1..=5).map(|j| RealServer::new(a(&format!("10.244.{}.{j}", i % 250)), 8080)),
        ));
    }
    let t = Instant::now();
    let report = h.apply(&ops).unwrap();
    let took = t.elapsed();
    assert!(report.is_ok(), "{:?}", report.failures().next());
    let t = Instant::now();
    let dump = h.dump().unwrap();
    let dump_took = t.elapsed();
    eprintln!("12000 ops: apply {took:?}, dump {dump_took:?}");
    assert_eq!(dump.len(), 2000);
    assert!(dump.iter().all(|(_, rs)| rs.len() == 5));
    // dump_each sees exactly the same, in the same order.
    let mut each = Vec::new();
    h.dump_each(|vs, rs| each.push((vs.clone(), rs.to_vec())))
        .unwrap();
    assert_eq!(each, dump);
    assert_eq!(saved(&ns, &mut h).len(), 12000);
}

/// With a receive buffer too small for the kernel's answers, answers are
/// dropped (ENOBUFS), the final ACK among them: the batch must end at the
/// deadline, claim no success it cannot know, and the handle must work
/// afterwards (the wedge of kubernetes#71071 cannot happen).
#[test]
fn lost_answers_time_out_and_the_handle_recovers() {
    use nix::sys::socket::{setsockopt, sockopt};
    use std::time::Duration;
    let ns = TestNs::new();
    let mut h = ns.handle();
    setsockopt(&h, sockopt::RcvBuf, &0).unwrap(); // the kernel's minimum
    h.set_timeout(Duration::from_millis(500));
    let ops: Vec<Op> = (1..=300)
        .map(|p| Op::DeleteService(ServiceKey::tcp(a("10.96.9.9"), p)))
        .collect();
    let t = Instant::now();
    let report = h.apply(&ops).unwrap();
    let took = t.elapsed();
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert!(
        report.failures().count() == ops.len(),
        "no op can have succeeded"
    );
    let unknown = report
        .failures()
        .filter(|(_, e)| matches!(e, Error::NotApplied { .. }))
        .count();
    assert!(unknown > 0, "some answers must have been lost");

    setsockopt(&h, sockopt::RcvBufForce, &(4 << 20)).unwrap();
    h.set_timeout(Duration::from_secs(5));
    h.add_service(&VirtualServer::new(vip4())).unwrap();
    assert_eq!(h.services().unwrap().len(), 1);
    let err = h
        .delete_service(&ServiceKey::tcp(a("10.96.9.9"), 1))
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");
}
