//! One netlink request/answer exchange, for any netlink protocol, over a
//! blocking or a tokio socket.
//!
//! This is the machinery under [`crate::Handle`] and [`crate::AsyncHandle`],
//! public so that other netlink users (for instance batched rtnetlink
//! address writes) get the same behaviour without writing the loop again:
//!
//! - requests are numbered and packed into one buffer ([`Connection::push`]),
//!   sent with one `sendmsg`;
//! - every received message is matched to its request by sequence number:
//!   `NLMSG_ERROR` (an ACK, or a refusal with its errno and the kernel's
//!   extended-ACK text), `NLMSG_DONE` (the end of a dump, or a dump's
//!   error), data messages (given to a [`Collect`]);
//! - an exchange of requests `first..=last` where only `last` asks for an
//!   ACK is complete when `last` is answered; every earlier request that got
//!   no error succeeded (the kernel handles the requests of one `sendmsg` in
//!   order and answers each failing one);
//! - messages outside the window (late answers to an exchange that timed
//!   out or whose future was dropped) are ignored, and the next exchange
//!   first drains what an abandoned one left queued, so a dump left running
//!   in the kernel cannot make the next one fail with `EBUSY`;
//! - a full receive queue (`ENOBUFS`: the kernel dropped answers) is
//!   reported ([`Exchange::overrun`]), never taken for success;
//! - one deadline per exchange ([`Connection::set_timeout`]), started only
//!   when the socket first has to wait: the kernel answers netlink requests
//!   synchronously, so the common case reads no clock (a syscall under UML).
//!
//! The matching ([`Exchange::feed`]) is sans-I/O; the socket work is written
//! once, for a small sealed [`Transport`] trait with two implementations:
//! [`Blocking`] (`poll(2)`) and, with feature `tokio`, [`Tokio`]
//! (`AsyncFd`).
//!
//! ```no_run
//! use ipvs::exchange::{Blocking, Connection};
//! use netlink_packet_core::{NetlinkMessage, NLM_F_REQUEST};
//! # fn requests() -> Vec<NetlinkMessage<netlink_packet_generic::GenlMessage<ipvs::codec::IpvsMessage>>> { vec![] }
//! # fn main() -> std::io::Result<()> {
//! let mut conn = Connection::<Blocking>::open(netlink_sys::protocols::NETLINK_GENERIC)?;
//! for mut msg in requests() {
//!     msg.header.flags = NLM_F_REQUEST; // no ACK: only failures answer
//!     conn.push(msg);
//! }
//! conn.ack_last(); // the last request's ACK ends the exchange
//! let ex = conn.exchange_blocking(())?;
//! for (index, err) in ex.errors() {
//!     eprintln!("request {index}: errno {}", err.errno);
//! }
//! # Ok(()) }
//! ```

mod feed;
mod transport;

pub use feed::{Collect, Exchange, KernelError};
#[cfg(feature = "tokio")]
pub use transport::Tokio;
pub use transport::{Blocking, Transport};

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use netlink_packet_core::{NetlinkMessage, NetlinkSerializable, NLM_F_ACK};
use netlink_sys::Socket;
use nix::errno::Errno;
use nix::sys::socket::{recv, send, MsgFlags};

pub(crate) use transport::open_socket_in;
use transport::{open_socket, Interest};

use crate::DEFAULT_TIMEOUT;

/// Size of the reused receive buffer (two datagrams of half each).
const RX_BUFFER: usize = 1 << 20;
/// Offset of `nlmsg_flags` in `struct nlmsghdr`.
const FLAGS_OFFSET: usize = 6;

/// Why an exchange as a whole failed (as opposed to single requests the
/// kernel refused, which are in [`Exchange::errors`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExchangeError {
    /// A socket call failed.
    #[error("netlink socket: {0}")]
    Io(#[from] std::io::Error),
    /// The exchange was not complete within the deadline. Its late answers
    /// are discarded by the next exchange.
    #[error("no answer from the kernel within {0:?}")]
    Timeout(Duration),
}

impl From<ExchangeError> for std::io::Error {
    fn from(e: ExchangeError) -> Self {
        match e {
            ExchangeError::Io(e) => e,
            e @ ExchangeError::Timeout(_) => {
                std::io::Error::new(std::io::ErrorKind::TimedOut, e.to_string())
            }
        }
    }
}

/// How many requests and bytes one `sendmsg` of this socket may carry so
/// that the kernel takes it and every answer fits the receive queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Bytes per `sendmsg` (below the send buffer).
    pub bytes: usize,
    /// Requests per `sendmsg` (room for one error answer each in the
    /// receive buffer).
    pub msgs: usize,
}

/// A netlink socket with its buffers, request numbering and deadline: the
/// requests pushed since the last exchange go out in one `sendmsg` at the
/// next [`Connection::exchange`].
pub struct Connection<T> {
    transport: T,
    limits: Limits,
    timeout: Duration,
    seq: u32,
    /// Start offset in `tx` of every pushed request.
    offsets: Vec<usize>,
    /// How many of the last pushed requests the kernel never answers
    /// ([`Connection::push_unanswered`]).
    unanswered: usize,
    tx: Vec<u8>,
    rx: Vec<u8>,
    /// An exchange was abandoned (timeout, error, dropped future): its late
    /// answers, or the rest of its dump, may still be queued.
    dirty: bool,
}

impl<T> std::fmt::Debug for Connection<T> {
    // Not derived: the buffers are a megabyte of bytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("limits", &self.limits)
            .field("timeout", &self.timeout)
            .field("seq", &self.seq)
            .field("pending", &self.offsets.len())
            .finish_non_exhaustive()
    }
}

impl Connection<Blocking> {
    /// Opens, binds and tunes a netlink socket of `protocol` (e.g.
    /// `netlink_sys::protocols::NETLINK_GENERIC`) in the caller's network
    /// namespace.
    pub fn open(protocol: isize) -> std::io::Result<Self> {
        let (sock, limits) = open_socket(protocol)?;
        Ok(Self::new(Blocking::new(sock), limits))
    }

    /// [`Connection::open`] in the network namespace referred to by `ns`,
    /// from a short-lived thread: the calling thread never changes
    /// namespace.
    pub fn open_in(ns: BorrowedFd<'_>, protocol: isize) -> std::io::Result<Self> {
        let (sock, limits) = open_socket_in(ns, protocol)??;
        Ok(Self::new(Blocking::new(sock), limits))
    }

    /// [`Connection::open_in`] for a namespace path such as
    /// `/run/netns/NAME` or `/proc/PID/ns/net`.
    pub fn open_in_path(path: impl AsRef<Path>, protocol: isize) -> std::io::Result<Self> {
        let file = std::fs::File::open(path)?;
        Self::open_in(file.as_fd(), protocol)
    }

    /// [`Connection::exchange`], blocking the calling thread.
    pub fn exchange_blocking<C: Collect>(
        &mut self,
        collect: C,
    ) -> Result<Exchange<C>, ExchangeError> {
        block_on(self.exchange(collect))
    }
}

#[cfg(feature = "tokio")]
impl Connection<Tokio> {
    /// Opens a netlink socket of `protocol` registered with the current
    /// tokio runtime (which needs I/O and time enabled).
    pub fn open(protocol: isize) -> std::io::Result<Self> {
        let (sock, limits) = open_socket(protocol)?;
        Ok(Self::new(Tokio::new(sock)?, limits))
    }

    /// [`Connection::open`] in the network namespace referred to by `ns`;
    /// the calling thread never changes namespace.
    pub fn open_in(ns: BorrowedFd<'_>, protocol: isize) -> std::io::Result<Self> {
        let (sock, limits) = open_socket_in(ns, protocol)??;
        Ok(Self::new(Tokio::new(sock)?, limits))
    }

    /// [`Connection::open_in`] for a namespace path.
    pub fn open_in_path(path: impl AsRef<Path>, protocol: isize) -> std::io::Result<Self> {
        let file = std::fs::File::open(path)?;
        Self::open_in(file.as_fd(), protocol)
    }
}

impl<T: Transport> Connection<T> {
    pub(crate) fn new(transport: T, limits: Limits) -> Self {
        Connection {
            transport,
            limits,
            timeout: DEFAULT_TIMEOUT,
            seq: 0,
            offsets: Vec::new(),
            unanswered: 0,
            tx: Vec::with_capacity(limits.bytes),
            rx: vec![0; RX_BUFFER],
            dirty: false,
        }
    }

    /// The socket, e.g. to tune options. Reading from it directly would
    /// take answers an exchange waits for.
    pub fn socket(&self) -> &Socket {
        self.transport.socket()
    }

    /// How much one exchange may carry on this socket.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    #[cfg(test)]
    pub(crate) fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Sets the deadline of every later exchange (default
    /// [`crate::DEFAULT_TIMEOUT`]).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// The deadline of one exchange.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Appends a request, numbered with the next sequence number, to the
    /// next exchange; returns that number. The header flags are the
    /// caller's (`NLM_F_REQUEST`, plus `NLM_F_ACK` or `NLM_F_DUMP`); the
    /// length is filled in.
    pub fn push<M: NetlinkSerializable>(&mut self, msg: NetlinkMessage<M>) -> u32 {
        self.unanswered = 0;
        self.append(msg)
    }

    /// Appends a request the kernel never answers, such as nfnetlink's
    /// `NFNL_MSG_BATCH_END` (which closes a transaction and is not
    /// acknowledged even with `NLM_F_ACK`): it is sent with the others, but
    /// the exchange is complete when the requests pushed before it are
    /// answered. Returns its sequence number.
    pub fn push_unanswered<M: NetlinkSerializable>(&mut self, msg: NetlinkMessage<M>) -> u32 {
        self.unanswered += 1;
        self.append(msg)
    }

    fn append<M: NetlinkSerializable>(&mut self, mut msg: NetlinkMessage<M>) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        msg.header.sequence_number = self.seq;
        msg.finalize();
        let start = self.tx.len();
        // Messages start on 4-byte boundaries (NLMSG_ALIGN).
        self.tx
            .resize(start + msg.buffer_len().next_multiple_of(4), 0);
        msg.serialize(&mut self.tx[start..start + msg.buffer_len()]);
        self.offsets.push(start);
        self.seq
    }

    /// Removes the last pushed request (e.g. it made the chunk too big).
    pub fn pop(&mut self) {
        if let Some(start) = self.offsets.pop() {
            self.tx.truncate(start);
            self.seq = self.seq.wrapping_sub(1);
            self.unanswered = self.unanswered.saturating_sub(1);
        }
    }

    /// Sets `NLM_F_ACK` on the last pushed request that the kernel answers
    /// (before any [`Connection::push_unanswered`] ones): a batch of writes
    /// pushed without it then gets one ACK, and an answer per failure.
    pub fn ack_last(&mut self) {
        let Some(&start) = self
            .offsets
            .len()
            .checked_sub(1 + self.unanswered)
            .and_then(|i| self.offsets.get(i))
        else {
            return;
        };
        if let Some(f) = self
            .tx
            .get_mut(start + FLAGS_OFFSET..start + FLAGS_OFFSET + 2)
        {
            let flags = u16::from_ne_bytes([f[0], f[1]]) | NLM_F_ACK;
            f.copy_from_slice(&flags.to_ne_bytes());
        }
    }

    /// Requests pushed since the last exchange.
    pub fn pending(&self) -> usize {
        self.offsets.len()
    }

    /// Bytes pushed since the last exchange.
    pub fn pending_bytes(&self) -> usize {
        self.tx.len()
    }

    /// Forgets the pushed requests without sending them.
    pub fn clear(&mut self) {
        self.tx.clear();
        self.offsets.clear();
        self.unanswered = 0;
    }

    /// Sends the pushed requests in one `sendmsg` and receives until the
    /// last one is answered or the deadline passes. With no request
    /// pushed, returns an empty complete exchange at once.
    ///
    /// Dropping the future is safe: the next exchange discards the
    /// abandoned one's answers.
    pub async fn exchange<C: Collect>(&mut self, collect: C) -> Result<Exchange<C>, ExchangeError> {
        // Trailing requests the kernel never answers are sent but not
        // waited for.
        let n = (self.offsets.len() - self.unanswered) as u32;
        let last = self.seq.wrapping_sub(self.unanswered as u32);
        let first = last.wrapping_sub(n).wrapping_add(1);
        let mut ex = Exchange::new(first, last, collect);
        if n == 0 {
            ex.finish();
            return Ok(ex);
        }
        let result = self.run(&mut ex).await;
        self.clear();
        result.map(|()| ex)
    }

    async fn run<C: Collect>(&mut self, ex: &mut Exchange<C>) -> Result<(), ExchangeError> {
        self.transport.begin().await;
        let timeout = self.timeout;
        let mut deadline = Deadline::new(timeout);
        let raw = self.transport.socket().as_raw_fd();
        let mut reads = 0u32;
        if self.dirty {
            // Each read lets the kernel produce the next part of an
            // abandoned dump, so this ends when that dump is finished.
            loop {
                match recv(raw, &mut self.rx, MsgFlags::MSG_DONTWAIT) {
                    Ok(_) | Err(Errno::EINTR) | Err(Errno::ENOBUFS) => {
                        reads += 1;
                        if reads.is_multiple_of(256) {
                            deadline.check()?;
                        }
                    }
                    Err(Errno::EAGAIN) => break,
                    Err(e) => return Err(ExchangeError::Io(e.into())),
                }
            }
        }
        // Stays set if this fails or its future is dropped before the end.
        self.dirty = true;
        loop {
            match send(raw, &self.tx, MsgFlags::MSG_DONTWAIT) {
                Ok(sent) if sent == self.tx.len() => break,
                Ok(sent) => {
                    return Err(ExchangeError::Io(std::io::Error::other(format!(
                        "sent {sent} of {} bytes",
                        self.tx.len()
                    ))))
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => {
                    let at = deadline.check()?;
                    self.transport.wait(Interest::Write, at, timeout).await?;
                }
                Err(e) => return Err(ExchangeError::Io(e.into())),
            }
        }
        while !ex.is_done() {
            match transport::recv_into(raw, &mut self.rx, ex) {
                Ok(()) => {
                    // Bound the time even if unrelated messages keep coming.
                    reads += 1;
                    if reads.is_multiple_of(256) && !ex.is_done() {
                        deadline.check()?;
                    }
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => {
                    let at = deadline.check()?;
                    self.transport.wait(Interest::Read, at, timeout).await?;
                }
                Err(Errno::ENOBUFS) => ex.set_overrun(),
                Err(e) => return Err(ExchangeError::Io(e.into())),
            }
        }
        self.dirty = false;
        Ok(())
    }
}

impl<T: Transport> AsFd for Connection<T> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.transport.socket().as_fd()
    }
}

/// A deadline whose clock is read only when first needed.
struct Deadline {
    timeout: Duration,
    at: Option<Instant>,
}

impl Deadline {
    fn new(timeout: Duration) -> Self {
        Deadline { timeout, at: None }
    }

    /// The deadline, or the timeout error if it has passed.
    fn check(&mut self) -> Result<Instant, ExchangeError> {
        let now = Instant::now();
        let at = *self.at.get_or_insert(now + self.timeout);
        if now >= at {
            return Err(ExchangeError::Timeout(self.timeout));
        }
        Ok(at)
    }
}

/// Runs a future whose every await is ready at once (the [`Blocking`]
/// transport waits inside `poll(2)` and never returns `Pending`).
pub(crate) fn block_on<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        // Not reached with the blocking transport; yield rather than spin hot.
        std::thread::yield_now();
    }
}

#[cfg(test)]
pub(crate) mod tests;
