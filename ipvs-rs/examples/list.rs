//! Lists the virtual services and their real servers, like `ipvsadm -Ln`.
//!
//! ```text
//! cargo run -p ipvs-rs --example list [NETNS_PATH]
//! ```

use ipvs::{ForwardMethod, Handle, RealServer, SchedFlag, VirtualServer};

fn method(rs: &RealServer) -> &'static str {
    match rs.forward {
        ForwardMethod::Masquerade => "Masq",
        ForwardMethod::Local => "Local",
        ForwardMethod::Tunnel => "Tunnel",
        ForwardMethod::Route => "Route",
        ForwardMethod::Bypass => "Bypass",
        _ => "?",
    }
}

fn service_line(vs: &VirtualServer) -> String {
    let mut line = format!("{} {}", vs.key, vs.scheduler);
    let flags = SchedFlag::names_for(&vs.scheduler, vs.flags);
    if !flags.is_empty() {
        let names: Vec<&str> = flags.iter().map(|f| f.name()).collect();
        line.push_str(&format!(" ({})", names.join(",")));
    }
    if vs.flags.contains(ipvs::ServiceFlags::PERSISTENT) {
        line.push_str(&format!(" persistent {}", vs.timeout));
    }
    line
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut ipvs = match std::env::args().nth(1) {
        Some(path) => Handle::new_in_netns(path)?,
        None => Handle::new()?,
    };
    let info = ipvs.info()?;
    let (major, minor, patch) = info.version_triple();
    println!(
        "IP Virtual Server version {major}.{minor}.{patch} (size={})",
        info.conn_table_size
    );
    println!("Prot LocalAddress:Port Scheduler Flags");
    println!("  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn");
    for (vs, servers) in ipvs.dump()? {
        println!("{}", service_line(&vs));
        for rs in servers {
            let addr = match rs.key.addr {
                std::net::IpAddr::V4(a) => format!("{a}:{}", rs.key.port),
                std::net::IpAddr::V6(a) => format!("[{a}]:{}", rs.key.port),
            };
            println!(
                "  -> {addr:<28} {:<7} {:<6} {:<10} {}",
                method(&rs),
                rs.weight,
                rs.conns.active,
                rs.conns.inactive
            );
        }
    }
    Ok(())
}
