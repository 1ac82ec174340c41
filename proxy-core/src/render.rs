//! The dry run: the desired IPVS state in `ipvsadm -Sn` format.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};

use ipvs::{AddressFamily, ForwardMethod, Protocol, SchedFlag, ServiceFlags, ServiceKey};

use crate::model::DesiredState;

fn key(k: &ServiceKey) -> String {
    match k {
        ServiceKey::Addr {
            protocol,
            addr,
            port,
        } => {
            let opt = match protocol {
                Protocol::Tcp => "-t",
                Protocol::Udp => "-u",
                _ => "--sctp-service",
            };
            format!("{opt} {}", addr_port(addr, *port))
        }
        ServiceKey::Fwmark {
            family: AddressFamily::Inet6,
            mark,
        } => format!("-f {mark} -6"),
        ServiceKey::Fwmark { mark, .. } => format!("-f {mark}"),
    }
}

fn addr_port(addr: &IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

/// Renders the desired virtual and real servers as `ipvsadm -Sn` would print
/// them once programmed: one `-A` line per virtual server followed by its
/// `-a` lines, virtual servers in key order (protocol, address, port;
/// firewall marks last), real servers by address and port. ipvsadm's own
/// order differs (it sorts with wrapping unsigned comparisons), so compare
/// with `diff <(ipvs-proxy plan | sort) <(ipvsadm -Sn | sort)`.
pub fn render_ipvsadm_save(desired: &DesiredState) -> String {
    let mut out = String::new();
    for v in desired.virtual_servers.values() {
        let vs = &v.server;
        let k = key(&vs.key);
        let _ = write!(out, "-A {k} -s {}", vs.scheduler);
        if vs.flags.contains(ServiceFlags::PERSISTENT) {
            let _ = write!(out, " -p {}", vs.timeout);
            match vs.key.family() {
                AddressFamily::Inet6 if vs.netmask != 128 => {
                    let _ = write!(out, " -M {}", vs.netmask);
                }
                AddressFamily::Inet if vs.netmask != u32::MAX => {
                    let _ = write!(out, " -M {}", Ipv4Addr::from(vs.netmask));
                }
                _ => {}
            }
        }
        if let Some(pe) = vs.pe_name.as_deref().filter(|p| !p.is_empty()) {
            let _ = write!(out, " --pe {pe}");
        }
        if vs.flags.contains(ServiceFlags::ONEPACKET) {
            out.push_str(" -o");
        }
        let flags = SchedFlag::names_for(&vs.scheduler, vs.flags);
        if !flags.is_empty() {
            let names: Vec<&str> = flags.iter().map(|f| f.name()).collect();
            let _ = write!(out, " -b {}", names.join(","));
        }
        out.push('\n');
        for rs in v.real_servers.values() {
            let fwd = match rs.forward {
                ForwardMethod::Masquerade => "-m",
                ForwardMethod::Tunnel => "-i",
                _ => "-g",
            };
            let _ = writeln!(
                out,
                "-a {k} -r {} {fwd} -w {}",
                addr_port(&rs.key.addr, rs.key.port),
                rs.weight
            );
        }
    }
    out
}
