//! ipvs-rs against a real kernel: every operation, in a fresh network
//! namespace per test. Run inside the test VM (scripts/test.sh), as root.
#![cfg(feature = "kernel-tests")]

mod common;

use common::{a, TestNs};
use ipvs::*;

fn vip4() -> ServiceKey {
    ServiceKey::tcp(a("10.96.0.1"), 80)
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
}

#[test]
fn batch_with_failures() {
    let ns = TestNs::new();
    let mut h = ns.handle();
    let mut ops = Vec::new();
    for i in 0..300u32 {
        let key = ServiceKey::tcp(a(&format!("10.97.{}.{}", i / 250, i % 250 + 1)), 80);
        ops.push(Op::AddService(VirtualServer::new(key)));
        for j in 0..3u32 {
            ops.push(Op::AddRealServer(
                key,
                RealServer::new(a(&format!("10.244.{}.{}", i % 200, j + 1)), 8080),
            ));
        }
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
    assert!(report.results[500].as_ref().unwrap_err().is_exists());
    assert!(report.results[700].as_ref().unwrap_err().is_not_found());
    let dump = h.dump().unwrap();
    assert_eq!(dump.len(), 300);
    assert!(dump.iter().all(|(_, rs)| rs.len() == 3));
}
