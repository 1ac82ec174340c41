//! The sockets under an exchange: opening them, and the one thing the
//! blocking and the tokio transports do differently (waiting for
//! readiness until a deadline).

use std::future::Future;
use std::io::IoSliceMut;
use std::os::fd::{AsFd, BorrowedFd, RawFd};
use std::time::{Duration, Instant};

use netlink_sys::Socket;
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::{setns, CloneFlags};
use nix::sys::socket::{getsockopt, recvmmsg, setsockopt, sockopt, MsgFlags, MultiHeaders};

use super::{Collect, Exchange, ExchangeError, Limits};

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

/// Which readiness an exchange waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interest {
    /// The socket has something to read.
    Read,
    /// The socket can take a `sendmsg`.
    Write,
}

mod sealed {
    pub trait Sealed {}
}

/// How an exchange waits for its socket: [`Blocking`] or [`Tokio`].
/// Sealed: the set of transports is this crate's to grow.
pub trait Transport: sealed::Sealed {
    /// The non-blocking netlink socket.
    fn socket(&self) -> &Socket;

    /// Called once at the start of every exchange (the tokio transport
    /// gives the runtime a chance to run other tasks: netlink answers
    /// synchronously, so a long batch would otherwise never yield).
    #[doc(hidden)]
    fn begin(&mut self) -> impl Future<Output = ()>;

    /// Waits until the socket is ready for `interest` or `deadline`
    /// passes (then [`ExchangeError::Timeout`] with `timeout`).
    #[doc(hidden)]
    fn wait(
        &mut self,
        interest: Interest,
        deadline: Instant,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), ExchangeError>>;
}

/// The blocking transport: waits in `poll(2)`.
#[derive(Debug)]
pub struct Blocking {
    sock: Socket,
}

impl Blocking {
    pub(crate) fn new(sock: Socket) -> Self {
        Blocking { sock }
    }
}

impl sealed::Sealed for Blocking {}

impl Transport for Blocking {
    fn socket(&self) -> &Socket {
        &self.sock
    }

    fn begin(&mut self) -> impl Future<Output = ()> {
        std::future::ready(())
    }

    fn wait(
        &mut self,
        interest: Interest,
        deadline: Instant,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), ExchangeError>> {
        std::future::ready(poll_until(self.sock.as_fd(), interest, deadline, timeout))
    }
}

fn poll_until(
    fd: BorrowedFd<'_>,
    interest: Interest,
    deadline: Instant,
    timeout: Duration,
) -> Result<(), ExchangeError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(ExchangeError::Timeout(timeout));
    }
    // Round up so we never spin on a zero-millisecond poll.
    let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
    let events = match interest {
        Interest::Read => PollFlags::POLLIN,
        Interest::Write => PollFlags::POLLOUT,
    };
    let mut fds = [PollFd::new(fd, events)];
    match poll(
        &mut fds,
        PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
    ) {
        Ok(_) | Err(Errno::EINTR) => Ok(()),
        Err(e) => Err(ExchangeError::Io(e.into())),
    }
}

/// The tokio transport: waits on the socket's `AsyncFd` registration with
/// a tokio timer. Needs a runtime with I/O and time enabled.
#[cfg(feature = "tokio")]
#[derive(Debug)]
pub struct Tokio {
    fd: tokio::io::unix::AsyncFd<Socket>,
}

#[cfg(feature = "tokio")]
impl Tokio {
    pub(crate) fn new(sock: Socket) -> std::io::Result<Self> {
        use tokio::io::Interest as I;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(std::io::Error::other("needs a tokio runtime"));
        }
        // Deprecated because a `T: AsRawFd` may not own its fd; ours moves
        // the owning `Socket` in, so the fd lives exactly as long as the
        // registration (the safe replacement would need `unsafe`).
        #[allow(deprecated)]
        let fd = tokio::io::unix::AsyncFd::with_interest(sock, I::READABLE | I::WRITABLE)?;
        Ok(Tokio { fd })
    }
}

#[cfg(feature = "tokio")]
impl sealed::Sealed for Tokio {}

#[cfg(feature = "tokio")]
impl Transport for Tokio {
    fn socket(&self) -> &Socket {
        self.fd.get_ref()
    }

    fn begin(&mut self) -> impl Future<Output = ()> {
        tokio::task::coop::consume_budget()
    }

    #[allow(clippy::manual_async_fn)] // the future must stay `Send`
    fn wait(
        &mut self,
        interest: Interest,
        deadline: Instant,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), ExchangeError>> {
        async move {
            let at = tokio::time::Instant::from_std(deadline);
            let ready = match interest {
                Interest::Read => tokio::time::timeout_at(at, self.fd.readable()).await,
                Interest::Write => tokio::time::timeout_at(at, self.fd.writable()).await,
            };
            // The caller retries its non-blocking call right after this,
            // so clearing before that call loses no wake-up.
            ready
                .map_err(|_| ExchangeError::Timeout(timeout))??
                .clear_ready();
            Ok(())
        }
    }
}

/// Opens, binds and tunes a netlink socket of `protocol` in the caller's
/// network namespace.
pub(crate) fn open_socket(protocol: isize) -> std::io::Result<(Socket, Limits)> {
    let mut sock = Socket::new(protocol)?;
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
    let limits = Limits {
        // netlink_sendmsg refuses more than sk_sndbuf - 32 bytes.
        bytes: snd.saturating_sub(64).clamp(4096, MAX_CHUNK_BYTES),
        msgs: (rcv / ERROR_TRUESIZE).clamp(16, MAX_CHUNK_MSGS),
    };
    Ok((sock, limits))
}

/// Opens the socket in the network namespace `ns` from a short-lived
/// thread, so the calling thread never changes namespace. The outer error
/// is about entering the namespace, the inner one about the socket.
pub(crate) fn open_socket_in(
    ns: BorrowedFd<'_>,
    protocol: isize,
) -> std::io::Result<std::io::Result<(Socket, Limits)>> {
    std::thread::scope(|s| {
        s.spawn(|| {
            setns(ns, CloneFlags::CLONE_NEWNET)?;
            Ok(open_socket(protocol))
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("namespace thread panicked")))
    })
}

/// Receives up to two datagrams without blocking (one `recvmmsg`) and
/// feeds them to `ex`. Two, because the kernel produces the next part of a
/// dump (often just its `NLMSG_DONE`) while we read the previous one: a
/// per-service dump then costs one receive call, not two.
pub(crate) fn recv_into<C: Collect>(
    fd: RawFd,
    rx: &mut [u8],
    ex: &mut Exchange<C>,
) -> nix::Result<()> {
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
