//! The kernel's own cost for a restore and a dump, against ipvs-rs's
//! (`benches/ipvs/run.sh` runs this inside UML; see docs/benchmarks.md).
//!
//! ```text
//! floor replay-restore RULES   # the floor: prebuilt batches, timed send + ACK reads
//! floor apply RULES            # ours: Handle::apply on the same operations
//! floor replay-dump            # the floor of a dump: timed requests + raw reads
//! floor dump                   # ours: Handle::dump (everything in memory)
//! floor dump-each              # ours: Handle::dump_each (one service at a time)
//! floor encode RULES           # host-side: the replay's encode alone, 3 times
//! ```
//!
//! The floor of a restore: every request is encoded once, before the
//! clock starts, into the same batches `Handle::apply` sends (same socket
//! set-up, same per-`sendmsg` limits, `NLM_F_ACK` on the last request of
//! each batch). Timed: one `sendmsg` per batch and the receive calls until
//! that batch's ACK, nothing decoded beyond the netlink headers. That is
//! the kernel's work for the adds plus the system calls no client can
//! avoid on this interface, so no client can be faster. The dump's floor
//! is the same idea: the service-dump request and one real-server dump
//! request per service are built first; timed are the requests and the
//! reads, headers only.
//!
//! Each mode prints `KEY VALUE` lines: wall time, user and system CPU time
//! of the timed part (`getrusage`), in microseconds, and counts.

use std::os::fd::AsRawFd;
use std::time::Instant;

use ipvs::codec::{
    dest_attrs, service_attrs, service_key_attrs, IpvsAttribute, IpvsCommand, IpvsMessage,
};
use ipvs::exchange::{Blocking, Connection};
use ipvs::{Handle, Op};
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLMSG_DONE, NLMSG_ERROR, NLM_F_ACK, NLM_F_DUMP,
    NLM_F_REQUEST,
};
use netlink_packet_generic::GenlMessage;
use nix::errno::Errno;
use nix::sys::resource::{getrusage, UsageWho};
use nix::sys::socket::{recvmmsg, send, MsgFlags, MultiHeaders};
use std::io::IoSliceMut;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// CPU times of this process so far, in microseconds (user, system), and
/// its minor page faults (costly under UML: each is a trip through the
/// host).
fn usage() -> (i64, i64, i64) {
    let u = getrusage(UsageWho::RUSAGE_SELF).expect("getrusage");
    let us = |t: nix::sys::time::TimeVal| t.tv_sec() * 1_000_000 + t.tv_usec();
    (
        us(u.user_time()),
        us(u.system_time()),
        u.minor_page_faults(),
    )
}

/// Times `f`, printing `KEY_us`, `KEY_user_us`, `KEY_sys_us`, `KEY_faults`.
fn timed<T>(key: &str, f: impl FnOnce() -> Res<T>) -> Res<T> {
    let (u0, s0, f0) = usage();
    let t0 = Instant::now();
    let out = f()?;
    let wall = t0.elapsed().as_micros();
    let (u1, s1, f1) = usage();
    println!("{key}_us {wall}");
    println!("{key}_user_us {}", u1 - u0);
    println!("{key}_sys_us {}", s1 - s0);
    println!("{key}_faults {}", f1 - f0);
    Ok(out)
}

fn read_ops(path: &str) -> Res<Vec<Op>> {
    let text = std::fs::read_to_string(path)?;
    let rules = ipvs::rules::parse_rules(&text).map_err(|e| format!("{path}: {e:?}"))?;
    Ok(rules.into_iter().map(|r| r.op).collect())
}

/// One request, serialized with sequence number `seq`.
fn encode(family: u16, msg: IpvsMessage, flags: u16, seq: u32, out: &mut Vec<u8>) {
    let mut genl = GenlMessage::from_payload(msg);
    genl.set_resolved_family_id(family);
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = seq;
    let mut nl = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(genl));
    nl.finalize();
    let start = out.len();
    out.resize(start + nl.buffer_len().next_multiple_of(4), 0);
    nl.serialize(&mut out[start..start + nl.buffer_len()]);
}

/// The same request `Handle::apply` sends for `op` (adds only: a restore).
fn request(op: &Op) -> Res<IpvsMessage> {
    Ok(match op {
        Op::AddService(vs) => IpvsMessage::new(
            IpvsCommand::NewService,
            vec![IpvsAttribute::Service(service_attrs(vs))],
        ),
        Op::AddRealServer(k, rs) => IpvsMessage::new(
            IpvsCommand::NewDest,
            vec![
                IpvsAttribute::Service(service_key_attrs(k)),
                IpvsAttribute::Dest(dest_attrs(rs)),
            ],
        ),
        other => return Err(format!("not an add: {other:?}").into()),
    })
}

/// A prebuilt batch: its bytes and the sequence number of its last request.
struct Batch {
    bytes: Vec<u8>,
    last: u32,
}

/// Packs the requests as `Handle::apply` does: at most `limits.msgs`
/// requests and `limits.bytes` bytes per `sendmsg`, ACK on the last.
fn batches(family: u16, ops: &[Op], conn: &Connection<Blocking>) -> Res<Vec<Batch>> {
    let limits = conn.limits();
    let mut out = Vec::new();
    let mut cur = Vec::with_capacity(limits.bytes);
    let (mut n, mut seq, mut last_start) = (0usize, 0u32, 0usize);
    let close = |cur: &mut Vec<u8>, last_start: usize, seq: u32, out: &mut Vec<Batch>| {
        // NLM_F_ACK on the last request (nlmsg_flags at offset 6).
        let f = u16::from_ne_bytes([cur[last_start + 6], cur[last_start + 7]]) | NLM_F_ACK;
        cur[last_start + 6..last_start + 8].copy_from_slice(&f.to_ne_bytes());
        out.push(Batch {
            bytes: std::mem::take(cur),
            last: seq,
        });
    };
    for op in ops {
        let mut one = Vec::new();
        encode(family, request(op)?, NLM_F_REQUEST, seq + 1, &mut one);
        if n > 0 && (n == limits.msgs || cur.len() + one.len() > limits.bytes) {
            close(&mut cur, last_start, seq, &mut out);
            n = 0;
        }
        seq += 1;
        last_start = cur.len();
        cur.extend_from_slice(&one);
        n += 1;
    }
    if n > 0 {
        close(&mut cur, last_start, seq, &mut out);
    }
    Ok(out)
}

/// Walks the netlink headers of `buf`, counting error answers (non-zero
/// `NLMSG_ERROR`); true at the ACK / `NLMSG_DONE` of request `last`.
fn scan(buf: &[u8], last: u32, errors: &mut usize) -> bool {
    let mut at = 0;
    while at + 16 <= buf.len() {
        let word = |o: usize| u32::from_ne_bytes([buf[o], buf[o + 1], buf[o + 2], buf[o + 3]]);
        let len = word(at) as usize;
        let kind = u16::from_ne_bytes([buf[at + 4], buf[at + 5]]);
        let seq = word(at + 8);
        if kind == NLMSG_ERROR && at + 20 <= buf.len() {
            let errno =
                i32::from_ne_bytes([buf[at + 16], buf[at + 17], buf[at + 18], buf[at + 19]]);
            if errno != 0 {
                *errors += 1;
            }
            if seq == last {
                return true;
            }
        } else if kind == NLMSG_DONE && seq == last {
            return true;
        }
        if len < 16 {
            break;
        }
        at += len.next_multiple_of(4);
    }
    false
}

/// Sends `bytes` in one `sendmsg` and reads (blocking) until `last` is
/// answered. The kernel answers netlink requests synchronously, so the
/// reads do not wait.
fn round_trip(fd: i32, bytes: &[u8], last: u32, rx: &mut [u8], errors: &mut usize) -> Res<()> {
    let sent = send(fd, bytes, MsgFlags::empty())?;
    if sent != bytes.len() {
        return Err(format!("sent {sent} of {} bytes", bytes.len()).into());
    }
    // Up to two datagrams per call, as `Handle` reads: a dump's data and
    // its NLMSG_DONE (which the kernel produces while the first is read).
    let half = rx.len() / 2;
    loop {
        let (a, b) = rx.split_at_mut(half);
        let mut iovs = [[IoSliceMut::new(a)], [IoSliceMut::new(b)]];
        let mut headers = MultiHeaders::<()>::preallocate(2, None);
        let lens: Vec<usize> = match recvmmsg(
            fd,
            &mut headers,
            iovs.iter_mut(),
            MsgFlags::MSG_WAITFORONE,
            None,
        ) {
            Ok(results) => results.map(|r| r.bytes.min(half)).collect(),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        };
        for (i, n) in lens.into_iter().enumerate() {
            if scan(&rx[i * half..i * half + n], last, errors) {
                return Ok(());
            }
        }
    }
}

/// A socket set up the way `Handle`'s is (buffers, capped and extended
/// ACKs), switched to blocking reads.
fn socket() -> Res<Connection<Blocking>> {
    let conn = Connection::<Blocking>::open(netlink_sys::protocols::NETLINK_GENERIC)?;
    conn.socket().set_non_blocking(false)?;
    Ok(conn)
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args.first().map(String::as_str).unwrap_or("");
    if mode == "encode" {
        // Host-side: the encode alone (no kernel needed; family id made up).
        let ops = read_ops(args.get(1).ok_or("encode RULES")?)?;
        let conn = socket()?;
        for _ in 0..3 {
            let b = timed("encode", || batches(0x20, &ops, &conn))?;
            println!("encode_batches {}", b.len());
        }
        return Ok(());
    }
    let family = Handle::new()?.family_id();
    let mut rx = vec![0u8; 1 << 20];
    match mode {
        "replay-restore" => {
            let ops = read_ops(args.get(1).ok_or("replay-restore RULES")?)?;
            let conn = socket()?;
            let prebuilt = batches(family, &ops, &conn)?;
            let fd = conn.socket().as_raw_fd();
            let mut errors = 0;
            timed("replay_restore", || {
                for b in &prebuilt {
                    round_trip(fd, &b.bytes, b.last, &mut rx, &mut errors)?;
                }
                Ok(())
            })?;
            println!("replay_restore_batches {}", prebuilt.len());
            println!("replay_restore_requests {}", ops.len());
            println!("replay_restore_errors {errors}");
            if errors > 0 {
                return Err(format!("{errors} requests refused").into());
            }
        }
        "apply" => {
            let ops = read_ops(args.get(1).ok_or("apply RULES")?)?;
            let mut h = Handle::new()?;
            let report = timed("apply", || Ok(h.apply(&ops)?))?;
            let failed = report.failures().count();
            println!("apply_requests {}", ops.len());
            println!("apply_errors {failed}");
            if failed > 0 {
                return Err(format!("{failed} operations failed").into());
            }
        }
        "replay-dump" => {
            let conn = socket()?;
            let keys: Vec<_> = Handle::new()?
                .services()?
                .into_iter()
                .map(|vs| vs.key)
                .collect();
            // seq 1: the service dump; seq 2..: one real-server dump each.
            let mut svc_req = Vec::new();
            let dump = NLM_F_REQUEST | NLM_F_DUMP;
            encode(
                family,
                IpvsMessage::new(IpvsCommand::GetService, vec![]),
                dump,
                1,
                &mut svc_req,
            );
            let dest_reqs: Vec<Vec<u8>> = keys
                .iter()
                .enumerate()
                .map(|(i, k)| {
                    let mut b = Vec::new();
                    let msg = IpvsMessage::new(
                        IpvsCommand::GetDest,
                        vec![IpvsAttribute::Service(service_key_attrs(k))],
                    );
                    encode(family, msg, dump, i as u32 + 2, &mut b);
                    b
                })
                .collect();
            let fd = conn.socket().as_raw_fd();
            let mut errors = 0;
            timed("replay_dump", || {
                round_trip(fd, &svc_req, 1, &mut rx, &mut errors)?;
                for (i, b) in dest_reqs.iter().enumerate() {
                    round_trip(fd, b, i as u32 + 2, &mut rx, &mut errors)?;
                }
                Ok(())
            })?;
            println!("replay_dump_services {}", keys.len());
            if errors > 0 {
                return Err(format!("{errors} dump errors").into());
            }
        }
        "dump" => {
            let mut h = Handle::new()?;
            let d = timed("dump", || Ok(h.dump()?))?;
            println!("dump_services {}", d.len());
            println!(
                "dump_real_servers {}",
                d.iter().map(|(_, r)| r.len()).sum::<usize>()
            );
        }
        "dump-each" => {
            let mut h = Handle::new()?;
            let (mut services, mut reals) = (0usize, 0usize);
            timed("dump_each", || {
                Ok(h.dump_each(|_, rs| {
                    services += 1;
                    reals += rs.len();
                })?)
            })?;
            println!("dump_each_services {services}");
            println!("dump_each_real_servers {reals}");
        }
        _ => {
            return Err(
                "usage: floor replay-restore RULES | apply RULES | replay-dump | dump | dump-each | encode RULES"
                    .into(),
            )
        }
    }
    Ok(())
}
