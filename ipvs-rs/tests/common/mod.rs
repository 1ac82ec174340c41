//! Helpers for the real-kernel tests: a fresh network namespace per test,
//! with a dummy uplink and default routes so real servers are routable.
#![allow(dead_code)]

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use ipvs::Handle;

/// A network namespace that is deleted on drop.
pub struct TestNs {
    pub name: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip(8)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TestNs {
    /// Creates `ipvs-test-PID-N` with lo up and a dummy uplink `up0`
    /// (10.0.2.15/24, fd00:10::15/64, default routes via .2 / ::2).
    pub fn new() -> TestNs {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "ipvs-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name]);
        let ns = TestNs { name };
        let n = ns.name.as_str();
        ip(&["-n", n, "link", "set", "lo", "up"]);
        ip(&["-n", n, "link", "add", "up0", "type", "dummy"]);
        ip(&["-n", n, "link", "set", "up0", "multicast", "on"]);
        ip(&["-n", n, "link", "set", "up0", "up"]);
        ip(&["-n", n, "addr", "add", "10.0.2.15/24", "dev", "up0"]);
        ip(&[
            "-n", n, "route", "add", "default", "via", "10.0.2.2", "dev", "up0",
        ]);
        ip(&[
            "-n",
            n,
            "-6",
            "addr",
            "add",
            "fd00:10::15/64",
            "dev",
            "up0",
            "nodad",
        ]);
        ip(&[
            "-n",
            n,
            "-6",
            "route",
            "add",
            "default",
            "via",
            "fd00:10::2",
            "dev",
            "up0",
        ]);
        ns
    }

    /// `/run/netns/NAME`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    /// A handle opened in this namespace.
    pub fn handle(&self) -> Handle {
        Handle::new_in_netns(self.path()).expect("open IPVS handle in test netns")
    }

    /// Runs a command inside the namespace (`ip netns exec`), returning stdout;
    /// panics when it fails.
    pub fn exec(&self, cmd: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(cmd)
            .output()
            .expect("run ip netns exec");
        assert!(
            out.status.success(),
            "{}: {}",
            cmd.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Parses an address literal.
pub fn a(s: &str) -> IpAddr {
    s.parse().expect("address literal")
}
