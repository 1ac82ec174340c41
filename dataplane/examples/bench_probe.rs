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
//! bench_probe watch ACTION TIMEOUT_S CHECK...
//!     (the filter benchmark, benches/filter/run.sh) does ACTION, then
//!     polls until every CHECK holds. ACTION: `rename:SRC:DST` (one atomic
//!     manifest replacement or addition), `unlink:PATH` (a Service deleted)
//!     or `since:START_US` (nothing done; times count from START_US, e.g.
//!     the agent's start). CHECKs on IPVS (one small netlink read each):
//!     `ipvs-reals:VIP:PORT:N` (at least N real servers of weight > 0),
//!     `ipvs-in:VIP:PORT:IP:PORT` (that real server, weight > 0),
//!     `ipvs-out:VIP:PORT:IP:PORT` (gone or weight 0),
//!     `ipvs-gone:VIP:PORT` (no such virtual server). CHECKs on nftables,
//!     table `inet ipvs-proxy`, once the IPVS checks hold:
//!     `nft-has:SET:ELEMENT` and `nft-no:SET:ELEMENT` (exact key of a set
//!     without intervals: one nfnetlink NFT_MSG_GETSETELEM request per
//!     poll, answered by the kernel with the element or ENOENT; through
//!     `nft get element` only for an element this cannot encode),
//!     `nft-list-has:SET:TEXT` and `nft-list-no:SET:TEXT` (a source-range
//!     element `VIP . tcp . PORT . NET` of a small set: one nfnetlink dump
//!     of the set per poll, compared by key and key end; any other TEXT:
//!     `nft list set`, one `nft` run ($BENCH_REAL_NFT, default
//!     /usr/sbin/nft) per poll, every 10 ms, TEXT in its output or not). Prints `t0_us` (epoch us of the action), `ipvs_us` and
//!     `nft_us` (when each side held, from t0; `na` without checks of that
//!     side), `done_us` (the later), `polls`, `nft_execs` and `nft_exec_us`
//!     (the poller's own nft executions and their wall time) and
//!     `nft_gets` and `nft_get_us` (its netlink element reads and their
//!     wall time).
//! nft ARGS... (when invoked under the name `nft`, e.g. through a symlink)
//!     a logging wrapper for the agent's nft: runs $BENCH_REAL_NFT with the
//!     same arguments, stdin, stdout and stderr, and appends one line to
//!     $BENCH_NFT_LOG: `START_US END_US STDIN_BYTES EXIT ARGS...` (epoch
//!     us around the real nft's run).
//! ```
//! Exit status 0 when seen, 1 on timeout, 2 on bad arguments or IPVS
//! errors. Run as root in the network namespace the agent programs.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dataplane::nft::netlink::{
    dump_set, get_element, key_bytes, key_end_bytes, SetElements, NETLINK_NETFILTER,
};
use dataplane::nft::{Element, Key, Set};
use ipvs::exchange::{Blocking, Connection};
use ipvs::{Handle, Protocol, RealServerKey, ServiceKey};

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

/// The real nft binary (the poller's, and the one the wrapper runs).
fn real_nft() -> String {
    std::env::var("BENCH_REAL_NFT").unwrap_or_else(|_| "/usr/sbin/nft".to_owned())
}

/// `nft` for the agent: the real one, timed, with its stdin counted.
fn nft_wrapper(args: &[String]) -> ExitCode {
    let reads_stdin = args.windows(2).any(|w| w[0] == "-f" && w[1] == "-");
    let mut input = Vec::new();
    if reads_stdin {
        if let Err(e) = std::io::stdin().read_to_end(&mut input) {
            eprintln!("nft wrapper: reading stdin: {e}");
            return ExitCode::from(1);
        }
    }
    let start = now_us();
    let child = Command::new(real_nft())
        .args(args)
        .stdin(if reads_stdin {
            Stdio::piped()
        } else {
            Stdio::inherit()
        })
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            eprintln!("nft wrapper: cannot run {}: {e}", real_nft());
            return ExitCode::from(1);
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        // nft reads its whole input before it answers: no deadlock.
        let _ = stdin.write_all(&input);
    }
    let status = child.wait();
    let end = now_us();
    let code = match &status {
        Ok(s) => s.code().unwrap_or(1),
        Err(_) => 1,
    };
    if let Ok(log) = std::env::var("BENCH_NFT_LOG") {
        let line = format!("{start} {end} {} {code} {}\n", input.len(), args.join(" "));
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
        {
            // One write of one short line: appends of concurrent runs do not interleave.
            let _ = f.write_all(line.as_bytes());
        }
    }
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// One condition `watch` waits for.
enum Check {
    Reals(ServiceKey, usize),
    In(ServiceKey, RealServerKey),
    Out(ServiceKey, RealServerKey),
    Gone(ServiceKey),
    /// (element, wanted): one nfnetlink read (a get, or a dump of the
    /// small set for a source range).
    Netlink(Element, bool),
    /// (set, element, wanted): `nft get element`.
    NftGet(String, String, bool),
    /// (set, text, wanted): `nft list set`.
    NftList(String, String, bool),
}

/// `VIP:PORT` at the start of `s` (IPv4; the benchmark's addresses), and the rest.
fn vip_rest(s: &str) -> Result<(ServiceKey, &str), String> {
    let mut it = s.splitn(3, ':');
    let (ip, port) = (it.next().unwrap_or(""), it.next().unwrap_or(""));
    let a: SocketAddr = format!("{ip}:{port}")
        .parse()
        .map_err(|_| format!("not VIP:PORT: {s:?}"))?;
    Ok((ServiceKey::tcp(a.ip(), a.port()), it.next().unwrap_or("")))
}

fn parse_check(s: &str) -> Result<Check, String> {
    let (kind, rest) = s
        .split_once(':')
        .ok_or_else(|| format!("bad check {s:?}"))?;
    let set_text = |rest: &str| -> Result<(String, String), String> {
        rest.split_once(':')
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .ok_or_else(|| format!("bad check {s:?}: want SET:ELEMENT"))
    };
    Ok(match kind {
        "ipvs-reals" => {
            let (k, n) = vip_rest(rest)?;
            Check::Reals(k, n.parse().map_err(|_| format!("bad count in {s:?}"))?)
        }
        "ipvs-in" => {
            let (k, r) = vip_rest(rest)?;
            Check::In(k, real(r)?)
        }
        "ipvs-out" => {
            let (k, r) = vip_rest(rest)?;
            Check::Out(k, real(r)?)
        }
        "ipvs-gone" => Check::Gone(vip_rest(rest)?.0),
        "nft-has" | "nft-no" => {
            let (set, e) = set_text(rest)?;
            let want = kind == "nft-has";
            match element_of(&set, &e) {
                Some(el) if !matches!(el.key, Key::VipPortNet(..)) => Check::Netlink(el, want),
                _ => Check::NftGet(set, e, want),
            }
        }
        "nft-list-has" | "nft-list-no" => {
            let (set, e) = set_text(rest)?;
            let want = kind == "nft-list-has";
            match element_of(&set, &e) {
                Some(el) if matches!(el.key, Key::VipPortNet(..)) => Check::Netlink(el, want),
                _ => Check::NftList(set, e, want),
            }
        }
        _ => return Err(format!("unknown check {s:?}")),
    })
}

/// Pause between two nft polls (each is a process).
const NFT_POLL: Duration = Duration::from_millis(10);

/// An element of our table from the probe's text (`SET` and `A . tcp .
/// P`, `tcp . P`, `A`, or a source range `VIP . tcp . PORT . NET`), for a
/// netlink read; `None` when it is not one of those forms.
fn element_of(set: &str, text: &str) -> Option<Element> {
    let set = Set::all().find(|s| s.to_string() == set)?;
    let proto = |p: &str| match p {
        "tcp" => Some(Protocol::Tcp),
        "udp" => Some(Protocol::Udp),
        "sctp" => Some(Protocol::Sctp),
        _ => None,
    };
    let parts: Vec<&str> = text.split(" . ").map(str::trim).collect();
    let key = match parts.as_slice() {
        [a, p, n, net] => Key::VipPortNet(
            a.parse().ok()?,
            proto(p)?,
            n.parse().ok()?,
            net.parse().ok()?,
        ),
        [a, p, n] => Key::VipPort(a.parse().ok()?, proto(p)?, n.parse().ok()?),
        [p, n] => Key::ProtoPort(proto(p)?, n.parse().ok()?),
        [a] => Key::Addr(a.parse().ok()?),
        _ => return None,
    };
    Some(Element {
        set,
        key,
        mark: None,
    })
}

/// Whether our table's (small) set holds the range element `el`: one
/// NFT_MSG_GETSETELEM dump of the set, compared by key and key end.
fn nft_range_netlink(conn: &mut Connection<Blocking>, el: &Element) -> Result<bool, String> {
    let (key, end) = (key_bytes(&el.key), key_end_bytes(&el.key));
    conn.clear();
    conn.push(dump_set("ipvs-proxy", el.set));
    let ex = conn
        .exchange_blocking(SetElements::default())
        .map_err(|e| format!("nfnetlink: {e}"))?;
    if let Some((_, e)) = ex.errors().first() {
        return Err(format!("nfnetlink dump set: {e}"));
    }
    let got = ex.into_collected();
    Ok(got
        .0
        .iter()
        .any(|(k, e)| Some(k) == key.as_ref() && *e == end))
}

/// Whether our table's set holds `el`: one NFT_MSG_GETSETELEM exchange.
fn nft_get_netlink(conn: &mut Connection<Blocking>, el: &Element) -> Result<bool, String> {
    let req = get_element("ipvs-proxy", el).ok_or("element not encodable")?;
    conn.clear();
    conn.push(req);
    let ex = conn
        .exchange_blocking(())
        .map_err(|e| format!("nfnetlink: {e}"))?;
    match ex.errors().first() {
        None => Ok(true),
        Some((_, e)) if e.errno == 2 => Ok(false), // ENOENT
        Some((_, e)) => Err(format!("nfnetlink get element: {e}")),
    }
}

/// Runs the real nft on table `inet ipvs-proxy`; (success, stdout).
fn nft_query(args: &[&str], execs: &mut u64, exec_us: &mut u128) -> Result<(bool, String), String> {
    let t = Instant::now();
    let out = Command::new(real_nft())
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("nft: {e}"))?;
    *execs += 1;
    *exec_us += t.elapsed().as_micros();
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}

fn watch(args: &[String]) -> Result<bool, String> {
    let action: String = arg(args, 2, "ACTION")?;
    let timeout = Duration::from_secs(arg(args, 3, "TIMEOUT_S")?);
    let checks: Vec<Check> = args[4..]
        .iter()
        .map(|c| parse_check(c))
        .collect::<Result<_, _>>()?;
    let (ipvs_checks, nft_checks): (Vec<&Check>, Vec<&Check>) = checks.iter().partition(|c| {
        !matches!(
            c,
            Check::Netlink(..) | Check::NftGet(..) | Check::NftList(..)
        )
    });
    let mut h = Handle::new().map_err(|e| format!("ipvs: {e}"))?;
    let mut nfnl = Connection::<Blocking>::open(NETLINK_NETFILTER)
        .map_err(|e| format!("nfnetlink socket: {e}"))?;
    let mut nft_gets = 0u64;
    let mut nft_get_us = 0u128;
    // Netlink-readable element checks are polled every round; the others
    // (an `nft` process each) every NFT_POLL.
    let needs_process = nft_checks
        .iter()
        .any(|c| matches!(c, Check::NftGet(..) | Check::NftList(..)));
    // Times are measured on the monotonic clock from `t0`; `t0_us` is its
    // wall-clock value, to line up with the nft wrapper's log.
    let (t0, t0_us) = match action.split(':').collect::<Vec<_>>().as_slice() {
        ["rename", src, dst] => {
            let t = (Instant::now(), now_us());
            std::fs::rename(src, dst).map_err(|e| format!("rename {src} -> {dst}: {e}"))?;
            t
        }
        ["unlink", path] => {
            let t = (Instant::now(), now_us());
            std::fs::remove_file(path).map_err(|e| format!("unlink {path}: {e}"))?;
            t
        }
        ["since", us] => {
            let start: u128 = us.parse().map_err(|_| format!("bad START_US {us:?}"))?;
            let back = now_us().saturating_sub(start);
            let back = Duration::from_micros(u64::try_from(back).unwrap_or(u64::MAX));
            let now = Instant::now();
            (now.checked_sub(back).unwrap_or(now), start)
        }
        _ => return Err(format!("bad ACTION {action:?}")),
    };
    let deadline = Instant::now() + timeout;
    let (mut polls, mut nft_execs, mut nft_exec_us) = (0u64, 0u64, 0u128);
    let mut ipvs_at = ipvs_checks.is_empty().then_some(None);
    let mut nft_at = nft_checks.is_empty().then_some(None);
    let mut last_nft = Instant::now() - NFT_POLL;
    while Instant::now() < deadline {
        polls += 1;
        if ipvs_at.is_none() {
            let mut ok = true;
            for c in &ipvs_checks {
                let held = match c {
                    Check::Reals(k, n) => complete_one(&mut h, k, *n)?,
                    Check::In(k, r) | Check::Out(k, r) => {
                        let rs = match h.real_servers(k) {
                            Ok(rs) => rs,
                            Err(e) if e.is_not_found() => Vec::new(),
                            Err(e) => return Err(format!("ipvs: {e}")),
                        };
                        let up = rs.iter().any(|x| x.key == *r && x.weight > 0);
                        if matches!(c, Check::In(..)) {
                            up
                        } else {
                            !up
                        }
                    }
                    // A dump of a missing service's real servers is empty,
                    // not an error (the kernel's GET_DEST dump skips an
                    // unknown service): ask for the service itself.
                    Check::Gone(k) => match h.service(k) {
                        Ok(_) => false,
                        Err(e) if e.is_not_found() => true,
                        Err(e) => return Err(format!("ipvs: {e}")),
                    },
                    _ => unreachable!("partitioned"),
                };
                if !held {
                    ok = false;
                    break;
                }
            }
            if ok {
                ipvs_at = Some(Some(t0.elapsed()));
            }
        }
        // nft after IPVS: the agent programs IPVS first, and each nft poll
        // is a process that takes CPU from the agent.
        if nft_at.is_none()
            && ipvs_at.is_some()
            && (!needs_process || last_nft.elapsed() >= NFT_POLL)
        {
            last_nft = Instant::now();
            let mut ok = true;
            for c in &nft_checks {
                let held = match c {
                    Check::Netlink(el, want) => {
                        nft_gets += 1;
                        let t = Instant::now();
                        let held = if matches!(el.key, Key::VipPortNet(..)) {
                            nft_range_netlink(&mut nfnl, el)?
                        } else {
                            nft_get_netlink(&mut nfnl, el)?
                        };
                        nft_get_us += t.elapsed().as_micros();
                        held == *want
                    }
                    Check::NftGet(set, e, want) => {
                        let el = format!("{{ {e} }}");
                        let args = ["get", "element", "inet", "ipvs-proxy", set, &el];
                        nft_query(&args, &mut nft_execs, &mut nft_exec_us)?.0 == *want
                    }
                    Check::NftList(set, text, want) => {
                        let args = ["list", "set", "inet", "ipvs-proxy", set];
                        let (ok, out) = nft_query(&args, &mut nft_execs, &mut nft_exec_us)?;
                        ok && out.contains(text.as_str()) == *want
                    }
                    _ => unreachable!("partitioned"),
                };
                if !held {
                    ok = false;
                    break;
                }
            }
            if ok {
                nft_at = Some(Some(t0.elapsed()));
            }
        }
        if let (Some(i), Some(n)) = (ipvs_at, nft_at) {
            let us = |d: Option<Duration>| d.map_or("na".to_owned(), |d| d.as_micros().to_string());
            println!("t0_us {t0_us}");
            println!("ipvs_us {}", us(i));
            println!("nft_us {}", us(n));
            let done = i.max(n);
            println!("done_us {}", us(done));
            println!("polls {polls}");
            println!("nft_execs {nft_execs}");
            println!("nft_exec_us {nft_exec_us}");
            println!("nft_gets {nft_gets}");
            println!("nft_get_us {nft_get_us}");
            return Ok(true);
        }
        std::thread::sleep(CHANGE_POLL);
    }
    println!("t0_us {t0_us}");
    println!("polls {polls}");
    println!("ipvs_held {}", ipvs_at.is_some());
    println!("nft_held {}", nft_at.is_some());
    println!("nft_execs {nft_execs}");
    Ok(false)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let invoked = args
        .first()
        .map(|a| a.rsplit('/').next().unwrap_or(a).to_owned())
        .unwrap_or_default();
    if invoked == "nft" {
        return nft_wrapper(&args[1..]);
    }
    let r = match args.get(1).map(String::as_str) {
        Some("complete") => complete(&args),
        Some("change") => change(&args),
        Some("watch") => watch(&args),
        _ => Err("usage: bench_probe complete START_US KEYS_FILE REALS TIMEOUT_S | change SRC DST VIP:PORT NEW_IP:PORT OLD_IP:PORT TIMEOUT_S | watch ACTION TIMEOUT_S CHECK...".into()),
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
