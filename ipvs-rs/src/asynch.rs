//! The async (tokio) client.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;

use netlink_sys::Socket;
use nix::errno::Errno;
use nix::sys::socket::{recv, send, MsgFlags};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::time::Instant;

use crate::batch::{BatchReport, Op};
use crate::client::{ipvs_methods, Core};
use crate::engine::{Exchange, Payload};
use crate::error::{Error, Result};
use crate::sys::{open_socket, open_socket_in, open_socket_in_path, recv_into, ChunkLimits};
use crate::types::*;

/// An async IPVS client for tokio, with the same methods as
/// [`crate::Handle`] (as `async fn`s) and the same engine and codec.
///
/// Needs a tokio runtime with I/O and time enabled. Each call is bounded
/// by the handle's deadline ([`AsyncHandle::set_timeout`]); dropping a call's
/// future is safe: its late answers are discarded by the next call.
///
/// ```no_run
/// # async fn demo() -> ipvs::Result<()> {
/// let mut ipvs = ipvs::AsyncHandle::new().await?;
/// for vs in ipvs.services().await? {
///     println!("{}", vs.key);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct AsyncHandle {
    fd: AsyncFd<Socket>,
    core: Core,
}

impl AsyncHandle {
    /// Opens a handle in the caller's network namespace
    /// ([`Error::IpvsUnavailable`] if the kernel has no IPVS).
    pub async fn new() -> Result<AsyncHandle> {
        Self::from_socket(open_socket()?).await
    }

    /// Opens a handle in the network namespace at `path`; the calling
    /// thread's namespace is not changed.
    pub async fn new_in_netns(path: impl AsRef<Path>) -> Result<AsyncHandle> {
        Self::from_socket(open_socket_in_path(path.as_ref())?).await
    }

    /// Opens a handle in the network namespace referred to by `fd`.
    pub async fn new_in_netns_fd(fd: BorrowedFd<'_>) -> Result<AsyncHandle> {
        let label = format!("fd {}", fd.as_raw_fd());
        let sock = open_socket_in(fd, &label)?;
        Self::from_socket(sock).await
    }

    async fn from_socket((sock, limits): (Socket, ChunkLimits)) -> Result<AsyncHandle> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::Io(std::io::Error::other(
                "AsyncHandle needs a tokio runtime",
            )));
        }
        // Deprecated because a `T: AsRawFd` may not own its fd; ours moves
        // the owning `Socket` in, so the fd lives exactly as long as the
        // registration (the safe replacement would need `unsafe`).
        #[allow(deprecated)]
        let fd = AsyncFd::with_interest(sock, Interest::READABLE | Interest::WRITABLE)?;
        let mut h = AsyncHandle {
            fd,
            core: Core::new(limits),
        };
        h.core.tx.clear();
        let seq = h
            .core
            .engine
            .push_get_family(&mut h.core.tx, crate::codec::constants::IPVS_GENL_NAME);
        let ex = h
            .exchange(seq, seq, Payload::Ctrl, "resolve the IPVS family")
            .await?;
        h.core.engine.family = crate::client::family_from(&ex)?;
        Ok(h)
    }

    async fn exchange(
        &mut self,
        first: u32,
        last: u32,
        payload: Payload,
        what: &str,
    ) -> Result<Exchange> {
        // Netlink answers synchronously, so without this a long batch or
        // dump would never yield to the runtime.
        tokio::task::coop::consume_budget().await;
        let timeout = self.core.timeout;
        // Read the clock only when needed (a syscall under UML).
        let mut deadline: Option<Instant> = None;
        let mut deadline = move || *deadline.get_or_insert_with(|| Instant::now() + timeout);
        let mut reads = 0u32;
        let timed_out = || Error::Timeout {
            op: what.to_owned(),
            after: timeout,
        };
        let Self { fd, core } = self;
        let raw = fd.get_ref().as_raw_fd();
        if core.dirty {
            // See `Core::dirty`; each read lets an abandoned dump go on.
            loop {
                match recv(raw, &mut core.rx, MsgFlags::MSG_DONTWAIT) {
                    Ok(_) | Err(Errno::EINTR) | Err(Errno::ENOBUFS) => {
                        reads += 1;
                        if reads.is_multiple_of(256) && Instant::now() >= deadline() {
                            return Err(timed_out());
                        }
                    }
                    Err(Errno::EAGAIN) => break,
                    Err(e) => return Err(Error::Io(e.into())),
                }
            }
        }
        // Stays set if this future is dropped or fails before the end.
        core.dirty = true;
        loop {
            match send(raw, &core.tx, MsgFlags::MSG_DONTWAIT) {
                Ok(_) => break,
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => {
                    let mut guard = tokio::time::timeout_at(deadline(), fd.writable())
                        .await
                        .map_err(|_| timed_out())??;
                    guard.clear_ready();
                }
                Err(e) => return Err(Error::Io(e.into())),
            }
        }
        let mut ex = Exchange::new(first, last, payload);
        ex.real_servers = std::mem::take(&mut core.spare_real_servers);
        while !ex.is_done() {
            match recv_into(raw, &mut core.rx, &mut ex) {
                Ok(()) => {
                    // Bound the time even if unrelated messages keep coming.
                    reads += 1;
                    if reads.is_multiple_of(256) && !ex.is_done() && Instant::now() >= deadline() {
                        return Err(timed_out());
                    }
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => {
                    let mut guard = tokio::time::timeout_at(deadline(), fd.readable())
                        .await
                        .map_err(|_| timed_out())??;
                    guard.clear_ready();
                }
                Err(Errno::ENOBUFS) => ex.overrun = true,
                Err(e) => return Err(Error::Io(e.into())),
            }
        }
        core.dirty = false;
        Ok(ex)
    }

    ipvs_methods!(async await);
}

impl std::os::fd::AsFd for AsyncHandle {
    /// The netlink socket, e.g. to tune socket options.
    /// Reading from it directly would take answers the handle waits for.
    fn as_fd(&self) -> BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(self.fd.get_ref())
    }
}

/// The async transport against the fake kernel of the blocking tests.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocking::tests::{ack, fake_pair, take_requests};
    use std::time::Duration;

    async fn fake_handle() -> (AsyncHandle, Socket) {
        let (sock, limits, peer) = fake_pair();
        #[allow(deprecated)]
        let fd = AsyncFd::with_interest(sock, Interest::READABLE | Interest::WRITABLE).unwrap();
        let mut h = AsyncHandle {
            fd,
            core: Core::new(limits),
        };
        h.core.engine.family = 0x42;
        (h, peer)
    }

    /// The handle and its futures can move between tokio worker threads.
    #[allow(dead_code)]
    fn futures_are_send(h: &mut AsyncHandle, ops: &[Op], k: &ServiceKey) {
        fn send<T: Send>(_: T) {}
        send(h.dump());
        send(h.apply(ops));
        send(h.add_service(&VirtualServer::new(*k)));
        send(AsyncHandle::new());
    }

    #[test]
    fn debug_does_not_print_buffers() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (h, _peer) = rt.block_on(fake_handle());
        let s = format!("{h:?}");
        assert!(s.len() < 1000, "{}", s.len());
        assert!(s.contains("family: 66"), "{s}");
    }

    #[tokio::test]
    async fn timeout_then_dropped_future_then_success() {
        let (mut h, peer) = fake_handle().await;
        h.set_timeout(Duration::from_millis(100));
        let start = std::time::Instant::now();
        let err = h.flush().await.unwrap_err();
        assert!(err.is_timeout(), "{err}");
        assert!(start.elapsed() >= Duration::from_millis(100));

        // A call whose future is dropped while it waits.
        let dropped = tokio::time::timeout(Duration::from_millis(20), h.zero(None)).await;
        assert!(dropped.is_err(), "the fake kernel has not answered yet");

        // The fake kernel answers both abandoned requests late, then the
        // next one (with an error, to see it is the one matched).
        let t = std::thread::spawn(move || {
            let (first, from) = take_requests(&peer);
            let (second, _) = take_requests(&peer);
            let mut late = ack(first[0].0, 0);
            late.extend(ack(second[0].0, 0));
            peer.send_to(&late, &from, 0).unwrap();
            let (third, from) = take_requests(&peer);
            peer.send_to(&ack(third[0].0, 3), &from, 0).unwrap();
        });
        // Give the late answers time to be queued before the next call.
        tokio::time::sleep(Duration::from_millis(50)).await;
        h.set_timeout(Duration::from_secs(5));
        let err = h
            .delete_service(&ServiceKey::fwmark(AddressFamily::Inet, 1))
            .await
            .unwrap_err();
        assert!(err.is_not_found(), "{err}");
        assert_eq!(
            err.to_string(),
            "delete service FWM 1: No such process (errno 3)"
        );
        t.join().unwrap();
    }
}
