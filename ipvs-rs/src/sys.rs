//! Opening the netlink socket (optionally in another network namespace).

use std::fs::File;
use std::io::IoSliceMut;
use std::os::fd::{AsFd, BorrowedFd, RawFd};
use std::path::Path;

use netlink_sys::{protocols::NETLINK_GENERIC, Socket};
use nix::sched::{setns, CloneFlags};
use nix::sys::socket::{getsockopt, recvmmsg, setsockopt, sockopt, MsgFlags, MultiHeaders};

use crate::engine::Exchange;
use crate::error::{Error, Result};

/// Socket buffer size we ask for (the kernel doubles it). Large enough for
/// big dumps and for one `NLMSG_ERROR` per request of a full batch chunk.
const SOCKET_BUFFER: usize = 4 << 20;
/// Upper bound of bytes packed into one `sendmsg`.
const MAX_CHUNK_BYTES: usize = 256 << 10;
/// Upper bound of requests packed into one `sendmsg`.
const MAX_CHUNK_MSGS: usize = 1024;
/// Receive-queue memory one refused request's `NLMSG_ERROR` may take
/// (skb truesize, generously).
const ERROR_TRUESIZE: usize = 2048;

/// How many bytes and requests one `sendmsg` may carry on this socket.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChunkLimits {
    pub bytes: usize,
    pub msgs: usize,
}

/// Opens, binds and tunes a generic-netlink socket in the caller's
/// network namespace.
pub(crate) fn open_socket() -> Result<(Socket, ChunkLimits)> {
    let mut sock = Socket::new(NETLINK_GENERIC)?;
    sock.bind_auto()?;
    sock.set_non_blocking(true)?;
    // The *FORCE variants need CAP_NET_ADMIN (which IPVS writes need anyway);
    // fall back to the capped ones.
    if setsockopt(&sock, sockopt::RcvBufForce, &SOCKET_BUFFER).is_err() {
        let _ = setsockopt(&sock, sockopt::RcvBuf, &SOCKET_BUFFER);
    }
    if setsockopt(&sock, sockopt::SndBufForce, &SOCKET_BUFFER).is_err() {
        let _ = setsockopt(&sock, sockopt::SndBuf, &SOCKET_BUFFER);
    }
    // Errors carry only the request's header, and a text when the kernel has one.
    let _ = sock.set_cap_ack(true);
    let _ = sock.set_ext_ack(true);
    let rcv = getsockopt(&sock, sockopt::RcvBuf).unwrap_or(212_992);
    let snd = getsockopt(&sock, sockopt::SndBuf).unwrap_or(212_992);
    let limits = ChunkLimits {
        // netlink_sendmsg refuses more than sk_sndbuf - 32 bytes.
        bytes: snd.saturating_sub(64).clamp(4096, MAX_CHUNK_BYTES),
        msgs: (rcv / ERROR_TRUESIZE).clamp(16, MAX_CHUNK_MSGS),
    };
    Ok((sock, limits))
}

/// Opens the socket in the network namespace `ns` from a short-lived
/// thread, so the calling thread never changes namespace.
pub(crate) fn open_socket_in(ns: BorrowedFd<'_>, label: &str) -> Result<(Socket, ChunkLimits)> {
    std::thread::scope(|s| {
        s.spawn(|| {
            setns(ns, CloneFlags::CLONE_NEWNET).map_err(|e| Error::Netns {
                path: label.to_owned(),
                source: e.into(),
            })?;
            open_socket()
        })
        .join()
        .unwrap_or_else(|_| {
            Err(Error::Netns {
                path: label.to_owned(),
                source: std::io::Error::other("namespace thread panicked"),
            })
        })
    })
}

/// [`open_socket_in`] for a namespace path such as `/run/netns/NAME`.
pub(crate) fn open_socket_in_path(path: &Path) -> Result<(Socket, ChunkLimits)> {
    let label = path.display().to_string();
    let file = File::open(path).map_err(|source| Error::Netns {
        path: label.clone(),
        source,
    })?;
    open_socket_in(file.as_fd(), &label)
}

/// Receives up to two datagrams without blocking (one `recvmmsg`) and
/// feeds them to `ex`. Two, because the kernel produces the next part of a
/// dump (often just its `NLMSG_DONE`) while we read the previous one: a
/// per-service real-server dump then costs one receive call, not two.
pub(crate) fn recv_into(fd: RawFd, rx: &mut [u8], ex: &mut Exchange) -> nix::Result<()> {
    let half = rx.len() / 2;
    let (a, b) = rx.split_at_mut(half);
    let mut lens = [0usize; 2];
    let mut got = 0;
    {
        let mut iovs = [[IoSliceMut::new(a)], [IoSliceMut::new(b)]];
        let mut headers = MultiHeaders::<()>::preallocate(2, None);
        let results = recvmmsg(
            fd,
            &mut headers,
            iovs.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        )?;
        for (i, r) in results.enumerate().take(2) {
            lens[i] = r.bytes.min(half);
            got += 1;
        }
    }
    if got > 0 {
        ex.feed(&rx[..lens[0]]);
    }
    if got > 1 {
        ex.feed(&rx[half..half + lens[1]]);
    }
    Ok(())
}
