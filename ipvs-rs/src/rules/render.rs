//! Rendering in `ipvsadm -Sn` format.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};

use super::order::sort_like_ipvsadm;
use crate::batch::Op;
use crate::types::{
    AddressFamily, ForwardMethod, Protocol, RealServer, RealServerKey, SchedFlag, ServiceFlags,
    ServiceKey, TunnelFlags, TunnelType, VirtualServer,
};

/// The service part of a rule: `-t 10.0.0.1:80`, `-u [fd00::1]:53`,
/// `--sctp-service 10.0.0.3:3868`, `-f 7`, `-f 8 -6`.
pub fn render_service_key(key: &ServiceKey) -> String {
    let mut s = String::new();
    write_service_key(&mut s, key);
    s
}

fn write_service_key(out: &mut String, key: &ServiceKey) {
    match key {
        ServiceKey::Addr {
            protocol,
            addr,
            port,
        } => {
            out.push_str(match protocol {
                Protocol::Tcp => "-t ",
                Protocol::Udp => "-u ",
                _ => "--sctp-service ",
            });
            write_addr_port(out, addr, *port);
        }
        ServiceKey::Fwmark { family, mark } => {
            let _ = write!(out, "-f {mark}");
            if *family == AddressFamily::Inet6 {
                out.push_str(" -6");
            }
        }
    }
}

/// `a.b.c.d:port` or `[v6]:port`, as ipvsadm prints addresses with `-n`
/// ([`RealServerKey`]'s `Display`).
fn write_addr_port(out: &mut String, addr: &IpAddr, port: u16) {
    let _ = write!(out, "{}", RealServerKey { addr: *addr, port });
}

/// The scheduler-flag names ipvsadm prints for a service
/// (`sh-fallback,sh-port`), `None` when it prints no `-b`.
pub fn sched_flag_names(vs: &VirtualServer) -> Option<String> {
    let names = SchedFlag::names_for(&vs.scheduler, vs.flags);
    if names.is_empty() {
        None
    } else {
        Some(names.iter().map(|f| f.name()).collect::<Vec<_>>().join(","))
    }
}

/// A service rule as `ipvsadm -Sn` prints it, with `cmd` `-A` (or `-E`).
fn write_service_rule(out: &mut String, cmd: &str, vs: &VirtualServer) {
    out.push_str(cmd);
    out.push(' ');
    write_service_key(out, &vs.key);
    let _ = write!(out, " -s {}", vs.scheduler);
    if vs.flags.contains(ServiceFlags::PERSISTENT) {
        let _ = write!(out, " -p {}", vs.timeout);
        // ipvsadm prints the netmask only when it is not the default
        // (a host: 255.255.255.255 or /128).
        let _ = match vs.key.family() {
            AddressFamily::Inet6 if vs.netmask != 128 => write!(out, " -M {}", vs.netmask),
            AddressFamily::Inet6 => Ok(()),
            _ if vs.netmask != u32::MAX => write!(out, " -M {}", Ipv4Addr::from(vs.netmask)),
            _ => Ok(()),
        };
    }
    if let Some(pe) = vs.pe_name.as_deref().filter(|pe| !pe.is_empty()) {
        let _ = write!(out, " --pe {pe}");
    }
    if vs.flags.contains(ServiceFlags::ONEPACKET) {
        out.push_str(" -o");
    }
    if let Some(names) = sched_flag_names(vs) {
        let _ = write!(out, " -b {names}");
    }
}

/// The forwarding switch ipvsadm prints (`-m`, `-i`, `-g`); the local and
/// bypass methods print as `-g`, as ipvsadm does.
pub fn forward_switch(m: ForwardMethod) -> &'static str {
    match m {
        ForwardMethod::Masquerade => "-m",
        ForwardMethod::Tunnel => "-i",
        _ => "-g",
    }
}

fn tunnel_csum_option(flags: TunnelFlags) -> &'static str {
    let csum = flags.contains(TunnelFlags::CSUM);
    let rem = flags.contains(TunnelFlags::REMCSUM);
    match (csum, rem) {
        (false, false) => "--tun-nocsum",
        (true, false) => "--tun-csum",
        (false, true) => "--tun-remcsum",
        (true, true) => "--tun-csum --tun-remcsum",
    }
}

/// A real-server rule as `ipvsadm -Sn` prints it, with `cmd` `-a` (or
/// `-e`); `thresholds` adds `-x`/`-y` (not in the save format).
fn write_real_server_rule(
    out: &mut String,
    cmd: &str,
    key: &ServiceKey,
    rs: &RealServer,
    thresholds: bool,
) {
    out.push_str(cmd);
    out.push(' ');
    write_service_key(out, key);
    out.push_str(" -r ");
    write_addr_port(out, &rs.key.addr, rs.key.port);
    let _ = write!(out, " {} -w {}", forward_switch(rs.forward), rs.weight);
    if rs.forward == ForwardMethod::Tunnel {
        let _ = match rs.tunnel.kind {
            TunnelType::Ipip => write!(out, " --tun-type ipip"),
            TunnelType::Gue => write!(
                out,
                " --tun-type gue --tun-port {} {}",
                rs.tunnel.port,
                tunnel_csum_option(rs.tunnel.flags)
            ),
            TunnelType::Gre => write!(
                out,
                " --tun-type gre {}",
                tunnel_csum_option(rs.tunnel.flags)
            ),
            _ => Ok(()),
        };
    }
    if thresholds {
        if rs.upper_threshold != 0 {
            let _ = write!(out, " -x {}", rs.upper_threshold);
        }
        if rs.lower_threshold != 0 {
            let _ = write!(out, " -y {}", rs.lower_threshold);
        }
    }
}

/// A service line exactly as `ipvsadm -Sn` prints it (no newline).
pub fn render_service(vs: &VirtualServer) -> String {
    let mut s = String::new();
    write_service_rule(&mut s, "-A", vs);
    s
}

/// A real-server line of service `key` exactly as `ipvsadm -Sn` prints it
/// (no newline; no thresholds, as in ipvsadm's save format).
pub fn render_real_server(key: &ServiceKey, rs: &RealServer) -> String {
    let mut s = String::new();
    write_real_server_rule(&mut s, "-a", key, rs, false);
    s
}

/// `ipvsadm -Sn` output for services and their real servers in the order
/// given: each service's `-A` line followed by its `-a` lines, every line
/// ending in a newline. Callers with an order of their own use this; for
/// ipvsadm's order use [`render_save_sorted`].
///
/// Takes anything that iterates over `(service, real servers)` pairs, e.g.
/// `dump.iter().map(|(vs, reals)| (vs, reals))` over a
/// [`crate::Handle::dump`].
pub fn render_save<'a, I, R>(dump: I) -> String
where
    I: IntoIterator<Item = (&'a VirtualServer, R)>,
    R: IntoIterator<Item = &'a RealServer>,
{
    let mut out = String::new();
    for (vs, reals) in dump {
        write_service_rule(&mut out, "-A", vs);
        out.push('\n');
        for rs in reals {
            write_real_server_rule(&mut out, "-a", &vs.key, rs, false);
            out.push('\n');
        }
    }
    out
}

/// Exactly what `ipvsadm -Sn` prints for a dump ([`crate::Handle::dump`]):
/// sorted with [`sort_like_ipvsadm`], then rendered by [`render_save`].
/// Like ipvsadm's, the order is by family, protocol, address and port
/// (firewall marks last), except where ipvsadm's wrapping address compare
/// makes it depend on the order the kernel dumped entries in: see
/// `ipvsadm`'s service comparison.
pub fn render_save_sorted(mut dump: Vec<(VirtualServer, Vec<RealServer>)>) -> String {
    sort_like_ipvsadm(&mut dump);
    render_save(dump.iter().map(|(vs, reals)| (vs, reals)))
}

/// Renders any operation as a rule line that [`super::parse_line`] reads
/// back to the same operation (unlike the save format, real-server
/// thresholds are kept).
pub fn render_op(op: &Op) -> String {
    let mut s = String::new();
    match op {
        Op::AddService(vs) => write_service_rule(&mut s, "-A", vs),
        Op::EditService(vs) => write_service_rule(&mut s, "-E", vs),
        Op::DeleteService(k) => {
            s.push_str("-D ");
            write_service_key(&mut s, k);
        }
        Op::AddRealServer(k, rs) => write_real_server_rule(&mut s, "-a", k, rs, true),
        Op::EditRealServer(k, rs) => write_real_server_rule(&mut s, "-e", k, rs, true),
        Op::DeleteRealServer(k, r) => {
            s.push_str("-d ");
            write_service_key(&mut s, k);
            s.push_str(" -r ");
            write_addr_port(&mut s, &r.addr, r.port);
        }
        Op::Flush => s.push_str("-C"),
        Op::Zero(None) => s.push_str("-Z"),
        Op::Zero(Some(k)) => {
            s.push_str("-Z ");
            write_service_key(&mut s, k);
        }
        Op::SetTimeouts(t) => {
            let _ = write!(s, "--set {} {} {}", t.tcp, t.tcp_fin, t.udp);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::test_support::{ip, one};
    use crate::types::RealServerKey;

    /// Lines printed by the real `ipvsadm -Sn` (v1.31, UML kernel 6.1) for
    /// rules covering every option; each must parse and render back unchanged.
    const IPVSADM_SAVE: &str = "\
-A -t 10.0.0.1:80 -s rr
-a -t 10.0.0.1:80 -r 10.244.1.2:8080 -m -w 1
-a -t 10.0.0.1:80 -r 10.244.1.3:80 -g -w 0
-a -t 10.0.0.1:80 -r 10.244.1.4:80 -i -w 1 --tun-type ipip
-A -t 10.0.0.5:0 -s wlc -p 100
-a -t 10.0.0.5:0 -r 10.244.1.12:0 -g -w 1
-A -t 10.0.0.6:81 -s rr -b flag-1,flag-2,flag-3
-A -t 10.0.0.7:82 -s wlc
-A -u 10.0.0.2:53 -s wrr -p 300 -M 255.255.255.0
-a -u 10.0.0.2:53 -r 10.244.1.5:53 -m -w 3
-A -u 10.0.0.4:5060 -s rr -p 30 --pe sip
-a -u 10.0.0.4:5060 -r 10.244.1.9:5060 -i -w 1 --tun-type gre --tun-csum
-a -u 10.0.0.4:5060 -r 10.244.1.10:5060 -i -w 1 --tun-type gue --tun-port 7000 --tun-remcsum
-a -u 10.0.0.4:5060 -r 10.244.1.11:5060 -i -w 1 --tun-type gre --tun-nocsum
-A -t [fd00::100]:443 -s rr -p 60 -M 64
-a -t [fd00::100]:443 -r [fd00::11]:8443 -m -w 5
-a -t [fd00::100]:443 -r 10.244.1.8:443 -i -w 1 --tun-type gue --tun-port 6080 --tun-csum
-A -f 7 -s sh -b sh-fallback,sh-port
-a -f 7 -r 10.244.1.6:0 -g -w 1
-A -f 8 -6 -s mh -p 360 -b mh-port
-a -f 8 -6 -r [fd00::10]:0 -g -w 1
-a -f 8 -6 -r [fd00::11]:80 -m -w 1
-A -u 10.0.0.4:5060 -s rr -p 30 -M 255.255.0.0 --pe sip -o -b flag-1
-A -u 10.0.0.5:53 -s rr -o
-A --sctp-service 10.0.0.3:3868 -s lc
-a --sctp-service 10.0.0.3:3868 -r 192.168.100.1:3868 -m -w 1
-a -t [2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff]:65535 -r [2001:db8:aaaa:bbbb:cccc:dddd:eeee:1]:65535 -m -w 65535
";

    #[test]
    fn ipvsadm_save_lines_render_back_identically() {
        for line in IPVSADM_SAVE.lines() {
            let rendered = match one(line) {
                Op::AddService(vs) => render_service(&vs),
                Op::AddRealServer(k, rs) => render_real_server(&k, &rs),
                other => panic!("unexpected {other:?}"),
            };
            assert_eq!(rendered, line);
        }
    }

    #[test]
    fn save_keeps_the_given_order_and_leaves_thresholds_out() {
        let a = VirtualServer::new(ServiceKey::udp(ip("10.0.0.9"), 53)).scheduler("rr");
        let b = VirtualServer::new(ServiceKey::tcp(ip("10.0.0.1"), 80)).scheduler("rr");
        let rs = RealServer::new(ip("10.244.1.2"), 8080)
            .forward(ForwardMethod::Masquerade)
            .thresholds(5, 1);
        let out = render_save([(&a, vec![]), (&b, vec![&rs])]);
        assert_eq!(
            out,
            "-A -u 10.0.0.9:53 -s rr\n\
             -A -t 10.0.0.1:80 -s rr\n\
             -a -t 10.0.0.1:80 -r 10.244.1.2:8080 -m -w 1\n"
        );
    }

    #[test]
    fn save_sorted_prints_in_ipvsadm_order() {
        let svc = |k: ServiceKey| VirtualServer::new(k).scheduler("rr");
        let masq = |a: &str| RealServer::new(ip(a), 53).forward(ForwardMethod::Masquerade);
        // Kernel (hash) order in, ipvsadm order out: fwmark last, IPv4
        // before IPv6, TCP before UDP, real servers with ipvsadm's
        // wrapping address compare (seen in UML: 192.168.7.1, 200.0.0.1,
        // 11.0.0.1).
        let dump = vec![
            (svc(ServiceKey::fwmark(AddressFamily::Inet, 7)), vec![]),
            (
                svc(ServiceKey::udp(ip("10.0.0.8"), 53)),
                vec![masq("11.0.0.1"), masq("200.0.0.1"), masq("192.168.7.1")],
            ),
            (svc(ServiceKey::tcp(ip("fd00::100"), 443)), vec![]),
            (svc(ServiceKey::tcp(ip("10.0.0.1"), 80)), vec![]),
        ];
        assert_eq!(
            render_save_sorted(dump),
            "\
-A -t 10.0.0.1:80 -s rr
-A -u 10.0.0.8:53 -s rr
-a -u 10.0.0.8:53 -r 192.168.7.1:53 -m -w 1
-a -u 10.0.0.8:53 -r 200.0.0.1:53 -m -w 1
-a -u 10.0.0.8:53 -r 11.0.0.1:53 -m -w 1
-A -t [fd00::100]:443 -s rr
-A -f 7 -s rr
"
        );
    }

    #[test]
    fn netmask_is_printed_only_when_persistent_and_not_a_host() {
        let v4 = VirtualServer::new(ServiceKey::tcp(ip("10.0.0.1"), 80)).scheduler("rr");
        let v6 = VirtualServer::new(ServiceKey::tcp(ip("fd00::1"), 80)).scheduler("rr");
        assert_eq!(
            render_service(&v4.clone().netmask(0xffff_ff00)),
            "-A -t 10.0.0.1:80 -s rr"
        );
        assert_eq!(
            render_service(&v4.clone().persistent(60)),
            "-A -t 10.0.0.1:80 -s rr -p 60"
        );
        assert_eq!(
            render_service(&v4.persistent(60).netmask(0xffff_ff00)),
            "-A -t 10.0.0.1:80 -s rr -p 60 -M 255.255.255.0"
        );
        assert_eq!(
            render_service(&v6.clone().persistent(60)),
            "-A -t [fd00::1]:80 -s rr -p 60"
        );
        assert_eq!(
            render_service(&v6.persistent(60).netmask(64)),
            "-A -t [fd00::1]:80 -s rr -p 60 -M 64"
        );
    }

    #[test]
    fn local_and_bypass_render_as_g() {
        for m in [ForwardMethod::Local, ForwardMethod::Bypass] {
            let rs = RealServer::new(ip("10.0.0.1"), 80).forward(m);
            assert_eq!(
                render_real_server(&ServiceKey::tcp(ip("10.0.0.1"), 80), &rs),
                "-a -t 10.0.0.1:80 -r 10.0.0.1:80 -g -w 1"
            );
        }
    }

    #[test]
    fn ops_render_with_their_command_and_thresholds() {
        let k = ServiceKey::fwmark(AddressFamily::Inet6, 8);
        let rs = RealServer::new(ip("fd00::10"), 0).thresholds(40, 20);
        assert_eq!(
            render_op(&Op::EditRealServer(k, rs)),
            "-e -f 8 -6 -r [fd00::10]:0 -m -w 1 -x 40 -y 20"
        );
        assert_eq!(
            render_op(&Op::DeleteRealServer(
                k,
                RealServerKey {
                    addr: ip("fd00::10"),
                    port: 0
                }
            )),
            "-d -f 8 -6 -r [fd00::10]:0"
        );
        assert_eq!(render_op(&Op::Zero(None)), "-Z");
        assert_eq!(render_op(&Op::Zero(Some(k))), "-Z -f 8 -6");
    }
}
