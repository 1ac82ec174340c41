//! Helpers shared by the kernel and end-to-end tests: network namespaces
//! entered by the test thread, shell commands, a tokio runtime.
#![allow(dead_code)]

use std::fs::File;
use std::os::fd::AsFd;
use std::process::Command;

pub mod k8s;
pub mod net;

use nix::sched::{setns, CloneFlags};

/// Runs a shell command line in the calling thread's network namespace;
/// panics with its output when it fails.
pub fn sh(cmd: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .expect("spawn sh");
    assert!(
        out.status.success(),
        "command failed: {cmd}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a shell command line; returns (success, stdout+stderr).
pub fn sh_try(cmd: &str) -> (bool, String) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .expect("spawn sh");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// A fresh named network namespace that the current thread has entered;
/// dropping it returns the thread to its previous namespace and deletes it.
pub struct Netns {
    pub name: String,
    orig: File,
}

impl Netns {
    /// Creates `name` (deleting a leftover of the same name), enters it and
    /// brings `lo` up.
    pub fn enter(name: &str) -> Netns {
        let orig = File::open("/proc/thread-self/ns/net").expect("open own netns");
        let _ = sh_try(&format!("ip netns del {name}"));
        sh(&format!("ip netns add {name}"));
        let f = File::open(format!("/run/netns/{name}")).expect("open new netns");
        setns(f.as_fd(), CloneFlags::CLONE_NEWNET).expect("setns");
        sh("ip link set lo up");
        Netns {
            name: name.to_owned(),
            orig,
        }
    }

    /// Gives the namespace a dummy uplink with addresses and default routes,
    /// so IPVS accepts real servers anywhere.
    pub fn with_uplink(self) -> Netns {
        sh("ip link add uplink0 type dummy && ip link set uplink0 up \
            && ip addr add 10.0.2.15/24 dev uplink0 && ip route add default via 10.0.2.2 \
            && ip -6 addr add fd00:10::15/64 dev uplink0 nodad \
            && ip -6 route add default via fd00:10::2");
        self
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = setns(self.orig.as_fd(), CloneFlags::CLONE_NEWNET);
        let _ = sh_try(&format!("ip netns del {}", self.name));
    }
}

/// A current-thread runtime: sockets it opens live in the thread's netns.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}
