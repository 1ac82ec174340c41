//! A small health-checked load balancer: programs the virtual and real
//! servers of a config file, probes every real server over TCP, sets a
//! failing one's weight to 0 (no new connections; established ones stay)
//! and restores its configured weight when it answers again. Prints each
//! change. On Ctrl-C (or SIGTERM) it removes its services, or leaves them
//! with `--keep`.
//!
//! ```text
//! cargo run -p ipvs-rs --example healthlb -- CONFIG [--interval-ms 1000] [--timeout-ms 500] [--keep]
//! ```
//!
//! The config is an `ipvsadm -R` rules file (what `ipvsadm -Sn` prints),
//! `#` comments allowed:
//!
//! ```text
//! -A -t 10.96.0.1:80 -s wrr
//! -a -t 10.96.0.1:80 -r 10.244.1.2:8080 -m -w 3
//! -a -t 10.96.0.1:80 -r 10.244.1.3:8080 -m -w 1
//! ```
//!
//! Real servers are probed at their address and port (for firewall-mark
//! services too); a probe is one TCP connect with a deadline.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use ipvs::rules::parse_rules;
use ipvs::{AsyncHandle, Op, RealServer, ServiceKey, VirtualServer};
use tokio::net::TcpStream;
use tokio::signal::unix::{signal, SignalKind};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

struct Options {
    config: String,
    interval: Duration,
    timeout: Duration,
    keep: bool,
}

fn options() -> Res<Options> {
    let mut args = std::env::args().skip(1);
    let mut o = Options {
        config: String::new(),
        interval: Duration::from_millis(1000),
        timeout: Duration::from_millis(500),
        keep: false,
    };
    while let Some(a) = args.next() {
        let mut ms = |what: &str| -> Res<Duration> {
            let v = args.next().ok_or(format!("{what} needs a value"))?;
            Ok(Duration::from_millis(v.parse()?))
        };
        match a.as_str() {
            "--interval-ms" => o.interval = ms("--interval-ms")?,
            "--timeout-ms" => o.timeout = ms("--timeout-ms")?,
            "--keep" => o.keep = true,
            _ if o.config.is_empty() && !a.starts_with('-') => o.config = a,
            _ => return Err(format!("unexpected argument {a:?}").into()),
        }
    }
    if o.config.is_empty() {
        return Err("usage: healthlb CONFIG [--interval-ms N] [--timeout-ms N] [--keep]".into());
    }
    Ok(o)
}

/// A real server as configured, and whether its last probe succeeded.
struct Backend {
    service: ServiceKey,
    server: RealServer,
    healthy: bool,
}

/// The services and real servers of the config file, in file order.
fn read_config(path: &str) -> Res<(Vec<VirtualServer>, Vec<Backend>)> {
    let text = std::fs::read_to_string(path)?;
    let rules = parse_rules(&text).map_err(|errs| {
        let lines: Vec<String> = errs.iter().map(|e| format!("{path}: {e}")).collect();
        lines.join("\n")
    })?;
    let (mut services, mut backends) = (Vec::new(), Vec::new());
    for rule in rules {
        match rule.op {
            Op::AddService(vs) => services.push(vs),
            Op::AddRealServer(service, server) => backends.push(Backend {
                service,
                server,
                healthy: true,
            }),
            other => {
                return Err(format!("{path}:{}: not a -A/-a rule: {other:?}", rule.line).into())
            }
        }
    }
    Ok((services, backends))
}

/// Adds what is missing and brings what exists to the configured state.
async fn program(
    ipvs: &mut AsyncHandle,
    services: &[VirtualServer],
    backends: &[Backend],
) -> Res<()> {
    let existing: HashMap<ServiceKey, VirtualServer> = ipvs
        .services()
        .await?
        .into_iter()
        .map(|vs| (vs.key, vs))
        .collect();
    let mut ops = Vec::new();
    for vs in services {
        ops.push(match existing.get(&vs.key) {
            Some(old) if old.same_config(vs) => continue,
            Some(_) => Op::EditService(vs.clone()),
            None => Op::AddService(vs.clone()),
        });
    }
    let mut current: HashMap<ServiceKey, Vec<RealServer>> = HashMap::new();
    for key in existing.keys() {
        current.insert(*key, ipvs.real_servers(key).await?);
    }
    for b in backends {
        let old = current
            .get(&b.service)
            .and_then(|list| list.iter().find(|rs| rs.key == b.server.key));
        ops.push(match old {
            Some(old) if old.same_config(&b.server) => continue,
            Some(_) => Op::EditRealServer(b.service, b.server.clone()),
            None => Op::AddRealServer(b.service, b.server.clone()),
        });
    }
    let report = ipvs.apply(&ops).await?;
    if let Some((i, e)) = report.failures().next() {
        return Err(format!("{}: {e}", ipvs::rules::render_op(&ops[i])).into());
    }
    Ok(())
}

/// One TCP connect to `addr`, within `timeout`.
async fn probe(addr: SocketAddr, timeout: Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

/// Probes every real server once (all at the same time) and applies the
/// weight changes: 0 for a newly failing server, the configured weight for
/// a recovered one.
async fn check(ipvs: &mut AsyncHandle, backends: &mut [Backend], timeout: Duration) -> Res<()> {
    let probes: Vec<_> = backends
        .iter()
        .map(|b| {
            tokio::spawn(probe(
                SocketAddr::new(b.server.key.addr, b.server.key.port),
                timeout,
            ))
        })
        .collect();
    let mut ops = Vec::new();
    for (b, p) in backends.iter_mut().zip(probes) {
        let up = p.await.unwrap_or(false);
        if up == b.healthy {
            continue;
        }
        b.healthy = up;
        let weight = if up { b.server.weight } else { 0 };
        let state = if up { "UP" } else { "DOWN" };
        // ipvsadm -e -t VIP -r RS -w WEIGHT
        ops.push(Op::EditRealServer(
            b.service,
            b.server.clone().weight(weight),
        ));
        println!(
            "{state} {} real server {} weight {weight}",
            b.service, b.server.key
        );
    }
    for (i, e) in ipvs.apply(&ops).await?.failures() {
        eprintln!("{}: {e}", ipvs::rules::render_op(&ops[i]));
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Res<()> {
    let o = options()?;
    let (services, mut backends) = read_config(&o.config)?;
    let mut ipvs = AsyncHandle::new().await?;
    program(&mut ipvs, &services, &backends).await?;
    println!(
        "programmed {} services, {} real servers; probing every {:?}",
        services.len(),
        backends.len(),
        o.interval
    );
    let mut term = signal(SignalKind::terminate())?;
    let mut tick = tokio::time::interval(o.interval);
    loop {
        tokio::select! {
            _ = tick.tick() => check(&mut ipvs, &mut backends, o.timeout).await?,
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        }
    }
    if o.keep {
        println!("exiting, services left in place");
    } else {
        // ipvsadm -D -t VIP, for each configured service.
        let ops: Vec<Op> = services
            .iter()
            .map(|vs| Op::DeleteService(vs.key))
            .collect();
        let report = ipvs.apply(&ops).await?;
        for (i, e) in report.failures() {
            eprintln!("{}: {e}", ipvs::rules::render_op(&ops[i]));
        }
        println!("exiting, {} services removed", ops.len());
    }
    Ok(())
}
