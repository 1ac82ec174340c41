//! Opens an IPVS client in a named network namespace (`ip netns add NAME`
//! creates `/run/netns/NAME`) and lists, adds or removes a service there,
//! without moving the calling thread: the socket is opened from a
//! short-lived thread that enters the namespace, and every later request
//! on it is handled by that namespace's IPVS.
//!
//! ```text
//! cargo run -p ipvs-rs --example netns -- NAME list
//! cargo run -p ipvs-rs --example netns -- NAME add 10.96.0.10:80
//! cargo run -p ipvs-rs --example netns -- NAME del 10.96.0.10:80
//! ```
//!
//! Like `ip netns exec NAME ipvsadm -Ln`, `... ipvsadm -A -t VIP -s rr`
//! and `... ipvsadm -D -t VIP`.

use ipvs::rules::parse_addr_port;
use ipvs::{Handle, ServiceKey, VirtualServer};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: netns NAME list | add ADDR:PORT | del ADDR:PORT";
    let (name, cmd) = match args.as_slice() {
        [name, cmd, ..] => (name, cmd.as_str()),
        _ => return Err(usage.into()),
    };
    let mut ipvs = Handle::new_in_netns(format!("/run/netns/{name}"))?;
    let key = || -> Res<ServiceKey> {
        let arg = args.get(2).ok_or(usage)?;
        let (addr, port) = parse_addr_port(arg)?;
        Ok(ServiceKey::tcp(addr, port.ok_or("a port is needed")?))
    };
    match cmd {
        "list" => {
            for vs in ipvs.services()? {
                println!("{} {}", vs.key, vs.scheduler);
            }
        }
        "add" => {
            let vs = VirtualServer::new(key()?).scheduler("rr");
            ipvs.add_service(&vs)?;
            println!("added {} in netns {name}", vs.key);
        }
        "del" => {
            let k = key()?;
            ipvs.delete_service(&k)?;
            println!("deleted {k} in netns {name}");
        }
        _ => return Err(usage.into()),
    }
    Ok(())
}
