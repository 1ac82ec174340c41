//! The blocking client.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;
use std::time::Instant;

use netlink_sys::Socket;
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recv, send, MsgFlags};

use crate::batch::{BatchReport, Op};
use crate::client::{ipvs_methods, Core};
use crate::engine::{Exchange, Payload};
use crate::error::{Error, Result};
use crate::sys::{open_socket, open_socket_in, open_socket_in_path, ChunkLimits};
use crate::types::*;

/// A blocking IPVS client: one generic-netlink socket, reused buffers,
/// every call bounded by a deadline ([`Handle::set_timeout`]).
///
/// ```no_run
/// use ipvs::{Handle, RealServer, ServiceKey, VirtualServer};
/// # fn main() -> ipvs::Result<()> {
/// let mut ipvs = Handle::new()?;
/// let key = ServiceKey::tcp("10.0.0.1".parse().unwrap(), 80);
/// ipvs.add_service(&VirtualServer::new(key).scheduler("wrr"))?; // ipvsadm -A -t 10.0.0.1:80 -s wrr
/// ipvs.add_real_server(&key, &RealServer::new("10.1.0.1".parse().unwrap(), 8080).weight(2))?;
/// for (vs, servers) in ipvs.dump()? {
///     println!("{} {} servers", vs.key, servers.len());
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Handle {
    sock: Socket,
    core: Core,
}

impl Handle {
    /// Opens a handle in the caller's network namespace and resolves the
    /// `IPVS` family ([`Error::IpvsUnavailable`] if the kernel has none).
    pub fn new() -> Result<Handle> {
        Self::from_socket(open_socket()?)
    }

    /// Opens a handle in the network namespace at `path` (e.g.
    /// `/run/netns/NAME` or `/proc/PID/ns/net`; `ipvsadm` run under
    /// `ip netns exec NAME`). The calling thread's namespace is not changed.
    pub fn new_in_netns(path: impl AsRef<Path>) -> Result<Handle> {
        Self::from_socket(open_socket_in_path(path.as_ref())?)
    }

    /// Opens a handle in the network namespace referred to by `fd`.
    pub fn new_in_netns_fd(fd: BorrowedFd<'_>) -> Result<Handle> {
        let label = format!("fd {}", fd.as_raw_fd());
        Self::from_socket(open_socket_in(fd, &label)?)
    }

    fn from_socket((sock, limits): (Socket, ChunkLimits)) -> Result<Handle> {
        let mut h = Handle {
            sock,
            core: Core::new(limits),
        };
        h.resolve_family()?;
        Ok(h)
    }

    fn resolve_family(&mut self) -> Result<()> {
        self.core.tx.clear();
        let seq = self
            .core
            .engine
            .push_get_family(&mut self.core.tx, crate::codec::constants::IPVS_GENL_NAME);
        let ex = self.exchange(seq, seq, Payload::Ctrl, "resolve the IPVS family")?;
        self.core.engine.family = crate::client::family_from(&ex)?;
        Ok(())
    }

    /// Sends `core.tx` and receives until the exchange is complete or the
    /// deadline passes. The deadline starts at the first wait: the kernel
    /// answers netlink requests synchronously, so in the common case no
    /// clock is read at all (clock reads are syscalls under UML).
    fn exchange(
        &mut self,
        first: u32,
        last: u32,
        payload: Payload,
        what: &str,
    ) -> Result<Exchange> {
        let fd = self.sock.as_raw_fd();
        let mut deadline: Option<Instant> = None;
        loop {
            match send(fd, &self.core.tx, MsgFlags::MSG_DONTWAIT) {
                Ok(_) => break,
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => self.wait(PollFlags::POLLOUT, &mut deadline, what)?,
                Err(e) => return Err(Error::Io(e.into())),
            }
        }
        let mut ex = Exchange::new(first, last, payload);
        let mut spins = 0u32;
        while !ex.is_done() {
            match recv(fd, &mut self.core.rx, MsgFlags::MSG_DONTWAIT) {
                Ok(n) => {
                    let n = n.min(self.core.rx.len());
                    ex.feed(&self.core.rx[..n]);
                    // Bound the time even if unrelated messages keep coming.
                    spins += 1;
                    if spins.is_multiple_of(256) {
                        self.check_deadline(&mut deadline, what)?;
                    }
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => self.wait(PollFlags::POLLIN, &mut deadline, what)?,
                Err(Errno::ENOBUFS) => ex.overrun = true,
                Err(e) => return Err(Error::Io(e.into())),
            }
        }
        Ok(ex)
    }

    fn check_deadline(
        &self,
        deadline: &mut Option<Instant>,
        what: &str,
    ) -> Result<std::time::Duration> {
        let now = Instant::now();
        let d = *deadline.get_or_insert(now + self.core.timeout);
        let left = d.saturating_duration_since(now);
        if left.is_zero() {
            return Err(Error::Timeout {
                op: what.to_owned(),
                after: self.core.timeout,
            });
        }
        Ok(left)
    }

    fn wait(&self, events: PollFlags, deadline: &mut Option<Instant>, what: &str) -> Result<()> {
        let left = self.check_deadline(deadline, what)?;
        // Round up so we never spin on a zero-millisecond poll.
        let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        let mut fds = [PollFd::new(self.sock.as_fd(), events)];
        match poll(
            &mut fds,
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(_) | Err(Errno::EINTR) => Ok(()),
            Err(e) => Err(Error::Io(e.into())),
        }
    }

    ipvs_methods!();
}
