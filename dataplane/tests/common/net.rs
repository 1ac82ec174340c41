//! A small cluster in network namespaces, for end-to-end tests:
//!
//! ```text
//!  ext (198.51.100.10, .20) ── eth-ext ──┐
//!                                        node (this test thread; 198.51.100.1, 172.18.0.2)
//!  pod-a1 10.244.0.2 ─┐                  │  cni0 10.244.0.1/24, fd00:244::1/64
//!  pod-a2 10.244.0.3 ─┴── cni0 ──────────┤
//!                                        └── eth-b ── node-b (172.18.0.3)
//!                                                       └ cni0 10.244.1.1/24 ── pod-b1 10.244.1.2
//! ```
//!
//! The bridge ports are in hairpin mode, as the CNI bridge plugin
//! (`hairpinMode`) and kubelet (`--hairpin-mode`) set them: with
//! br_netfilter loaded, the reply of a hairpin connection is de-NATed at the
//! bridge's prerouting and bridged straight back out of the port it came
//! in on (IPVS then restores the source in the bridged FORWARD hook).
//!
//! Servers answer each TCP connection with `"<name> <peer-ip>\n"`, then echo
//! every line as `"<name> <line>\n"`; UDP servers answer each datagram with
//! `"<name> <peer-ip>"`.
#![allow(dead_code)]

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use nix::sched::{setns, CloneFlags};
use nix::sys::socket::{
    bind, connect, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrStorage,
};
use nix::sys::time::TimeVal;

use super::sh;

/// Runs `f` on a thread inside netns `ns` (a name under /run/netns).
pub fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    thread::scope(|s| {
        s.spawn(|| {
            enter(ns);
            f()
        })
        .join()
        .expect("netns thread panicked")
    })
}

fn enter(ns: &str) {
    let f = File::open(format!("/run/netns/{ns}")).expect("open netns");
    setns(f.as_fd(), CloneFlags::CLONE_NEWNET).expect("setns");
}

/// The pod-like namespaces of the topology, as (netns, IPv4, IPv6).
pub const POD_A1: (&str, &str, &str) = ("pod-a1", "10.244.0.2", "fd00:244::2");
/// Second pod on this node.
pub const POD_A2: (&str, &str, &str) = ("pod-a2", "10.244.0.3", "fd00:244::3");
/// Pod on the other node.
pub const POD_B1: (&str, &str, &str) = ("pod-b1", "10.244.1.2", "fd00:244:1::2");
/// The external client namespace and its two addresses.
pub const EXT: &str = "ext";
/// Allowed external client address.
pub const EXT_IP: &str = "198.51.100.10";
/// Second external client address.
pub const EXT_IP2: &str = "198.51.100.20";
/// The node's address facing the external client.
pub const NODE_EXT_IP: &str = "198.51.100.1";
/// The node's address facing the other node.
pub const NODE_IP: &str = "172.18.0.2";

const OTHERS: [&str; 5] = ["pod-a1", "pod-a2", "pod-b1", "node-b", "ext"];

/// Builds the topology around the calling thread's netns (the node), which
/// must be a fresh one. Other namespaces are (re)created.
pub fn build() {
    for ns in OTHERS {
        let _ = super::sh_try(&format!("ip netns del {ns}"));
        sh(&format!("ip netns add {ns} && ip -n {ns} link set lo up"));
    }
    // node: bridge for local pods, link to node-b, link to ext.
    sh("ip link add cni0 type bridge && ip link set cni0 up \
        && ip addr add 10.244.0.1/24 dev cni0 && ip addr add fd00:244::1/64 dev cni0 nodad");
    for (ns, v4, v6) in [POD_A1, POD_A2] {
        sh(&format!(
            "ip link add veth-{ns} type veth peer name eth0 netns {ns} \
             && ip link set veth-{ns} master cni0 up \
             && ip link set veth-{ns} type bridge_slave hairpin on \
             && ip -n {ns} link set eth0 up && ip -n {ns} addr add {v4}/24 dev eth0 \
             && ip -n {ns} -6 addr add {v6}/64 dev eth0 nodad \
             && ip -n {ns} route add default via 10.244.0.1 \
             && ip -n {ns} -6 route add default via fd00:244::1"
        ));
    }
    sh(
        "ip link add eth-b type veth peer name eth0 netns node-b && ip link set eth-b up \
        && ip addr add 172.18.0.2/24 dev eth-b && ip addr add fd00:18::2/64 dev eth-b nodad \
        && ip -n node-b link set eth0 up && ip -n node-b addr add 172.18.0.3/24 dev eth0 \
        && ip -n node-b -6 addr add fd00:18::3/64 dev eth0 nodad \
        && ip route add 10.244.1.0/24 via 172.18.0.3 \
        && ip -6 route add fd00:244:1::/64 via fd00:18::3 \
        && ip -n node-b route add default via 172.18.0.2 \
        && ip -n node-b -6 route add default via fd00:18::2 \
        && ip netns exec node-b sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 \
        && ip -n node-b link add cni0 type bridge && ip -n node-b link set cni0 up \
        && ip -n node-b addr add 10.244.1.1/24 dev cni0 \
        && ip -n node-b addr add fd00:244:1::1/64 dev cni0 nodad",
    );
    let (ns, v4, v6) = POD_B1;
    sh(&format!(
        "ip -n node-b link add veth-{ns} type veth peer name eth0 netns {ns} \
         && ip -n node-b link set veth-{ns} master cni0 up \
         && ip -n {ns} link set eth0 up && ip -n {ns} addr add {v4}/24 dev eth0 \
         && ip -n {ns} -6 addr add {v6}/64 dev eth0 nodad \
         && ip -n {ns} route add default via 10.244.1.1 \
         && ip -n {ns} -6 route add default via fd00:244:1::1"
    ));
    sh(
        "ip link add eth-ext type veth peer name eth0 netns ext && ip link set eth-ext up \
        && ip addr add 198.51.100.1/24 dev eth-ext \
        && ip -n ext link set eth0 up && ip -n ext addr add 198.51.100.10/24 dev eth0 \
        && ip -n ext addr add 198.51.100.20/24 dev eth0 \
        && ip -n ext route add default via 198.51.100.1",
    );
}

/// Starts a TCP server in `ns` on `addr`; returns once it listens.
pub fn tcp_server(ns: &str, addr: SocketAddr, name: &str) {
    let (tx, rx) = mpsc::channel();
    let (ns, name) = (ns.to_owned(), name.to_owned());
    thread::spawn(move || {
        enter(&ns);
        let l = TcpListener::bind(addr).expect("bind server");
        tx.send(()).ok();
        for c in l.incoming().flatten() {
            let name = name.clone();
            thread::spawn(move || serve(c, &name));
        }
    });
    rx.recv_timeout(Duration::from_secs(30)).expect("server up");
}

fn serve(mut c: TcpStream, name: &str) {
    let peer = c
        .peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    if c.write_all(format!("{name} {peer}\n").as_bytes()).is_err() {
        return;
    }
    let Ok(r) = c.try_clone() else { return };
    for line in BufReader::new(r).lines() {
        let Ok(line) = line else { return };
        if c.write_all(format!("{name} {line}\n").as_bytes()).is_err() {
            return;
        }
    }
}

/// Starts a UDP server in `ns` on `addr`.
pub fn udp_server(ns: &str, addr: SocketAddr, name: &str) {
    let (tx, rx) = mpsc::channel();
    let (ns, name) = (ns.to_owned(), name.to_owned());
    thread::spawn(move || {
        enter(&ns);
        let s = UdpSocket::bind(addr).expect("bind udp server");
        tx.send(()).ok();
        let mut buf = [0u8; 1500];
        while let Ok((_, peer)) = s.recv_from(&mut buf) {
            let _ = s.send_to(format!("{name} {}", peer.ip()).as_bytes(), peer);
        }
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("udp server up");
}

/// A TCP connection made from netns `ns` (optionally from source `src`),
/// with I/O deadlines.
pub fn tcp_connect(
    ns: &str,
    to: SocketAddr,
    src: Option<IpAddr>,
    timeout: Duration,
) -> std::io::Result<TcpStream> {
    in_ns(ns, || {
        let fam = if to.is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        let fd = socket(fam, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
        let tv = TimeVal::new(timeout.as_secs() as i64, 0);
        setsockopt(&fd, sockopt::SendTimeout, &tv)?;
        setsockopt(&fd, sockopt::ReceiveTimeout, &tv)?;
        if let Some(src) = src {
            bind(
                fd.as_raw_fd(),
                &SockaddrStorage::from(SocketAddr::new(src, 0)),
            )?;
        }
        connect(fd.as_raw_fd(), &SockaddrStorage::from(to))?;
        Ok(TcpStream::from(fd))
    })
}

/// Reads one line.
pub fn read_line(c: &mut TcpStream) -> std::io::Result<String> {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    loop {
        let n = c.read(&mut b)?;
        if n == 0 || b[0] == b'\n' {
            break;
        }
        out.push(b[0]);
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// One request: connect, read the greeting `"<name> <peer>"`, close.
pub fn tcp_hello(
    ns: &str,
    to: SocketAddr,
    src: Option<IpAddr>,
) -> std::io::Result<(String, String)> {
    let mut c = tcp_connect(ns, to, src, Duration::from_secs(5))?;
    let line = read_line(&mut c)?;
    let mut it = line.splitn(2, ' ');
    let name = it.next().unwrap_or_default().to_owned();
    let peer = it.next().unwrap_or_default().to_owned();
    if name.is_empty() {
        return Err(std::io::Error::other("empty greeting"));
    }
    Ok((name, peer))
}

/// One UDP request from `ns`: returns `(name, peer)` or an error on timeout.
pub fn udp_ask(ns: &str, to: SocketAddr, timeout: Duration) -> std::io::Result<(String, String)> {
    in_ns(ns, || {
        let bind: SocketAddr = if to.is_ipv4() {
            "0.0.0.0:0".parse().unwrap()
        } else {
            "[::]:0".parse().unwrap()
        };
        let s = UdpSocket::bind(bind)?;
        s.set_read_timeout(Some(timeout))?;
        s.send_to(b"q", to)?;
        let mut buf = [0u8; 512];
        let (n, _) = s.recv_from(&mut buf)?;
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        let mut it = text.splitn(2, ' ');
        Ok((
            it.next().unwrap_or_default().to_owned(),
            it.next().unwrap_or_default().to_owned(),
        ))
    })
}

/// Shorthand for a socket address.
pub fn sa(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().expect("ip"), port)
}
