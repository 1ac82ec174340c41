//! Kernel settings, per network namespace, on a real kernel with IPVS (UML).
#![cfg(feature = "kernel-tests")]

mod common;

use common::Netns;
use dataplane::sysctl::{self, KernelVersion, SysctlConfig};

#[test]
fn settings_are_written_in_the_threads_namespace_only() {
    let outer_arp = sysctl::read("net.ipv4.conf.all.arp_ignore").unwrap();
    let outer_conntrack = sysctl::read("net.ipv4.vs.conntrack").unwrap();
    {
        let _ns = Netns::enter("dp-sysctl");
        let cfg = SysctlConfig {
            ipv6: true,
            strict_arp: true,
        };
        let want = sysctl::desired(&cfg, KernelVersion::running().unwrap());
        // A fresh namespace starts at the kernel defaults, which differ.
        assert_eq!(sysctl::read("net.ipv4.vs.conntrack").unwrap(), "0");
        let changed = sysctl::apply(&want).unwrap();
        assert!(changed
            .iter()
            .any(|c| c.key == "net.ipv4.vs.conntrack" && c.old == "0"));
        for s in &want {
            assert_eq!(sysctl::read(s.key).unwrap(), s.value, "{}", s.key);
        }
        assert_eq!(sysctl::read("net.ipv4.conf.all.arp_announce").unwrap(), "2");
        // Converged: nothing to write.
        assert!(sysctl::apply(&want).unwrap().is_empty());
    }
    assert_eq!(
        sysctl::read("net.ipv4.conf.all.arp_ignore").unwrap(),
        outer_arp
    );
    assert_eq!(
        sysctl::read("net.ipv4.vs.conntrack").unwrap(),
        outer_conntrack
    );
}

#[test]
fn a_missing_key_is_named() {
    let err = sysctl::read("net.ipv4.vs.no_such_setting").unwrap_err();
    assert!(
        err.to_string().contains("net.ipv4.vs.no_such_setting"),
        "{err}"
    );
}

/// Preflight on the UML kernel: IPVS and the loaded schedulers are found,
/// an unknown scheduler and (UML has no nftables inet family) nftables are
/// named as missing.
#[test]
fn preflight_names_exactly_what_is_missing() {
    use dataplane::preflight::{self, Missing, PreflightConfig};
    let ok = PreflightConfig {
        schedulers: vec!["rr".into(), "wrr".into(), "mh".into()],
        check_nftables: false,
        ..PreflightConfig::default()
    };
    preflight::run(&ok).expect("IPVS and rr/wrr/mh are there");
    let bad = PreflightConfig {
        schedulers: vec!["rr".into(), "nosuch".into()],
        check_nftables: true,
        ..PreflightConfig::default()
    };
    match preflight::run(&bad) {
        Err(dataplane::Error::Preflight(missing)) => {
            assert!(
                missing
                    .iter()
                    .any(|m| matches!(m, Missing::Scheduler { name, .. } if name == "nosuch")),
                "{missing:?}"
            );
            assert!(
                !missing
                    .iter()
                    .any(|m| matches!(m, Missing::Scheduler { name, .. } if name == "rr")),
                "{missing:?}"
            );
            let text = dataplane::Error::Preflight(missing.clone()).to_string();
            assert!(text.contains("ip_vs_nosuch"), "{text}");
            if !std::path::Path::new("/sys/module/nf_tables").exists() {
                assert!(
                    missing
                        .iter()
                        .any(|m| matches!(m, Missing::Nftables { .. })),
                    "{missing:?}"
                );
            }
        }
        other => panic!("expected a preflight failure, got {other:?}"),
    }
}
