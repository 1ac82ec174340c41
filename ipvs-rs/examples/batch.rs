//! Programs N services x M real servers in one batch, lists them back and
//! flushes, printing how long each step took (what `ipvsadm -R`, `-Sn` and
//! `-C` do, but batched).
//!
//! ```text
//! cargo run --release -p ipvs-rs --example batch -- [N] [M] [--unbatched]
//! cargo run --release -p ipvs-rs --example batch -- --dump-only
//! ```
//! Needs CAP_NET_ADMIN and a kernel with IPVS; it flushes IPVS first.
//! `--dump-only` only times listing what is there (e.g. after `ipvsadm -R`).

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use ipvs::{Handle, Op, RealServer, ServiceKey, VirtualServer};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let unbatched = args.iter().any(|a| a == "--unbatched");
    if args.iter().any(|a| a == "--dump-only") {
        let mut ipvs = Handle::new()?;
        let t = Instant::now();
        let services = ipvs.services()?.len();
        let only_services = t.elapsed();
        let t = Instant::now();
        let dump = ipvs.dump()?;
        let servers: usize = dump.iter().map(|(_, rs)| rs.len()).sum();
        println!(
            "dump {:.3} s ({} services, {servers} servers; the service list alone: {:.3} s for {services})",
            t.elapsed().as_secs_f64(),
            dump.len(),
            only_services.as_secs_f64(),
        );
        drop(dump);
        let t = Instant::now();
        let (mut n, mut servers) = (0, 0);
        ipvs.dump_each(|_, rs| {
            n += 1;
            servers += rs.len();
        })?;
        println!(
            "dump_each {:.3} s ({n} services, {servers} servers)",
            t.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    let mut nums = args.iter().filter_map(|a| a.parse::<u32>().ok());
    let n = nums.next().unwrap_or(1000);
    let m = nums.next().unwrap_or(10);

    let mut ops = Vec::with_capacity((n * (m + 1)) as usize);
    for i in 0..n {
        let vip = IpAddr::V4(Ipv4Addr::from(0x0a60_0000 + i)); // 10.96.0.0 + i
        let key = ServiceKey::tcp(vip, 80);
        ops.push(Op::AddService(VirtualServer::new(key).scheduler("rr")));
        for j in 0..m {
            let rip = IpAddr::V4(Ipv4Addr::from(0x0af4_0000 + (i % 4096) * 16 + j)); // 10.244.x.y
            ops.push(Op::AddRealServer(key, RealServer::new(rip, 8080)));
        }
    }

    let mut ipvs = Handle::new()?;
    ipvs.flush()?;
    let t = Instant::now();
    let report = if unbatched {
        ipvs.apply_unbatched(&ops)?
    } else {
        ipvs.apply(&ops)?
    };
    let apply = t.elapsed();
    if let Some((i, e)) = report.failures().next() {
        return Err(format!("operation {i} failed: {e}").into());
    }
    let t = Instant::now();
    let dump = ipvs.dump()?;
    let list = t.elapsed();
    let servers: usize = dump.iter().map(|(_, rs)| rs.len()).sum();
    let t = Instant::now();
    ipvs.flush()?;
    let flush = t.elapsed();
    println!(
        "{} {n} services x {m}: apply {:.3} s ({:.1} us/op), dump {:.3} s ({} services, {servers} servers), flush {:.3} s",
        if unbatched { "unbatched" } else { "batched" },
        apply.as_secs_f64(),
        apply.as_secs_f64() * 1e6 / ops.len() as f64,
        list.as_secs_f64(),
        dump.len(),
        flush.as_secs_f64(),
    );
    Ok(())
}
