//! The kernel-side probe of the agent benchmark (`benches/agent/run.sh`):
//! watches IPVS through ipvs-rs with cheap reads instead of a full
//! `ipvsadm -Sn` per poll.
//!
//! ```text
//! bench_probe complete START_US KEYS_FILE REALS TIMEOUT_S
//!     polls until every TCP virtual server listed in KEYS_FILE (one
//!     VIP:PORT a line) has REALS real servers of weight > 0; prints
//!     `complete_us N` (microseconds since START_US, wall clock in us
//!     since the epoch) and `polls N`. Each poll reads the real servers of
//!     the first services not yet seen complete, one small request each.
//! bench_probe change SRC DST VIP:PORT NEW_IP:PORT OLD_IP:PORT TIMEOUT_S
//!     renames SRC to DST (one atomic manifest replacement) and polls the
//!     real servers of TCP VIP:PORT until NEW is there with weight > 0 and
//!     OLD is gone or at weight 0; prints `change_us N` (from just before
//!     the rename) and `polls N`.
//! ```
//! Exit status 0 when seen, 1 on timeout, 2 on bad arguments or IPVS
//! errors. Run as root in the network namespace the agent programs.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ipvs::{Handle, RealServerKey, ServiceKey};

/// Pause between two polls while waiting for the complete state.
const COMPLETE_POLL: Duration = Duration::from_millis(5);
/// Pause between two polls while waiting for one change (one small read each).
const CHANGE_POLL: Duration = Duration::from_millis(2);

fn now_us() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0)
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> Result<T, String> {
    let s = args
        .get(i)
        .ok_or_else(|| format!("missing argument {i}: {what}"))?;
    s.parse()
        .map_err(|_| format!("argument {i} ({what}): cannot parse {s:?}"))
}

/// Whether `key` has at least `reals` real servers of weight > 0 (false
/// while the service does not exist).
fn complete_one(h: &mut Handle, key: &ServiceKey, reals: usize) -> Result<bool, String> {
    match h.real_servers(key) {
        Ok(rs) => Ok(rs.iter().filter(|r| r.weight > 0).count() >= reals),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(format!("ipvs: {e}")),
    }
}

fn complete(args: &[String]) -> Result<bool, String> {
    let start_us: u128 = arg(args, 2, "START_US")?;
    let keys_file: String = arg(args, 3, "KEYS_FILE")?;
    let reals: usize = arg(args, 4, "REALS")?;
    let timeout = Duration::from_secs(arg(args, 5, "TIMEOUT_S")?);
    let text = std::fs::read_to_string(&keys_file).map_err(|e| format!("read {keys_file}: {e}"))?;
    let keys: Vec<ServiceKey> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.trim()
                .parse::<SocketAddr>()
                .map(|a| ServiceKey::tcp(a.ip(), a.port()))
                .map_err(|_| format!("{keys_file}: not VIP:PORT: {l:?}"))
        })
        .collect::<Result<_, _>>()?;
    let deadline = Instant::now() + timeout;
    let mut polls = 0u64;
    // IPVS may not be there yet (the agent's preflight loads it).
    let mut h = loop {
        match Handle::new() {
            Ok(h) => break h,
            Err(_) if Instant::now() < deadline => std::thread::sleep(COMPLETE_POLL),
            Err(e) => return Err(format!("ipvs: {e}")),
        }
    };
    // Services found complete are not read again (the agent only adds at
    // start), so the whole wait costs about one small read per service plus
    // one per poll, whatever order the agent programs them in.
    let mut pending = keys.as_slice();
    while Instant::now() < deadline {
        polls += 1;
        while let Some((k, rest)) = pending.split_first() {
            if !complete_one(&mut h, k, reals)? {
                break;
            }
            pending = rest;
        }
        if pending.is_empty() {
            let done = now_us();
            println!("complete_us {}", done.saturating_sub(start_us));
            println!("polls {polls}");
            return Ok(true);
        }
        std::thread::sleep(COMPLETE_POLL);
    }
    println!("polls {polls}");
    println!("pending {}", pending.len());
    Ok(false)
}

fn real(s: &str) -> Result<RealServerKey, String> {
    let a: SocketAddr = s.parse().map_err(|_| format!("not IP:PORT: {s:?}"))?;
    Ok(RealServerKey {
        addr: a.ip(),
        port: a.port(),
    })
}

fn change(args: &[String]) -> Result<bool, String> {
    let src: String = arg(args, 2, "SRC")?;
    let dst: String = arg(args, 3, "DST")?;
    let vip: SocketAddr = arg(args, 4, "VIP:PORT")?;
    let new = real(&arg::<String>(args, 5, "NEW_IP:PORT")?)?;
    let old = real(&arg::<String>(args, 6, "OLD_IP:PORT")?)?;
    let timeout = Duration::from_secs(arg(args, 7, "TIMEOUT_S")?);
    let key = ServiceKey::tcp(vip.ip(), vip.port());
    let mut h = Handle::new().map_err(|e| format!("ipvs: {e}"))?;
    let t0 = Instant::now();
    std::fs::rename(&src, &dst).map_err(|e| format!("rename {src} -> {dst}: {e}"))?;
    let deadline = t0 + timeout;
    let mut polls = 0u64;
    while Instant::now() < deadline {
        polls += 1;
        let rs = h.real_servers(&key).map_err(|e| format!("ipvs: {e}"))?;
        let new_up = rs.iter().any(|r| r.key == new && r.weight > 0);
        let old_down = !rs.iter().any(|r| r.key == old && r.weight > 0);
        if new_up && old_down {
            println!("change_us {}", t0.elapsed().as_micros());
            println!("polls {polls}");
            return Ok(true);
        }
        std::thread::sleep(CHANGE_POLL);
    }
    println!("polls {polls}");
    Ok(false)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let r = match args.get(1).map(String::as_str) {
        Some("complete") => complete(&args),
        Some("change") => change(&args),
        _ => Err("usage: bench_probe complete START_US KEYS_FILE REALS TIMEOUT_S | change SRC DST VIP:PORT NEW_IP:PORT OLD_IP:PORT TIMEOUT_S".into()),
    };
    match r {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("bench_probe: timed out");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("bench_probe: {e}");
            ExitCode::from(2)
        }
    }
}
