//! The blocking client.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;
use std::time::Instant;

#[cfg(test)]
use netlink_packet_core::NLM_F_ACK;
use netlink_sys::Socket;
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recv, send, MsgFlags};

use crate::batch::{BatchReport, Op};
use crate::client::{ipvs_methods, Core};
use crate::engine::{Exchange, Payload};
use crate::error::{Error, Result};
use crate::sys::{open_socket, open_socket_in, open_socket_in_path, recv_into, ChunkLimits};
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
        if self.core.dirty {
            self.drain(&mut deadline, what)?;
        }
        self.core.dirty = true;
        loop {
            match send(fd, &self.core.tx, MsgFlags::MSG_DONTWAIT) {
                Ok(_) => break,
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => self.wait(PollFlags::POLLOUT, &mut deadline, what)?,
                Err(e) => return Err(Error::Io(e.into())),
            }
        }
        let mut ex = Exchange::new(first, last, payload);
        ex.real_servers = std::mem::take(&mut self.core.spare_real_servers);
        let mut spins = 0u32;
        while !ex.is_done() {
            match recv_into(fd, &mut self.core.rx, &mut ex) {
                Ok(()) => {
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
        self.core.dirty = false;
        Ok(ex)
    }

    /// Reads and drops whatever is queued. Each read lets the kernel
    /// produce the next part of an abandoned dump, so this ends when that
    /// dump is finished.
    fn drain(&mut self, deadline: &mut Option<Instant>, what: &str) -> Result<()> {
        let fd = self.sock.as_raw_fd();
        let mut n = 0u32;
        loop {
            match recv(fd, &mut self.core.rx, MsgFlags::MSG_DONTWAIT) {
                Ok(_) | Err(Errno::EINTR) | Err(Errno::ENOBUFS) => {
                    n += 1;
                    if n.is_multiple_of(256) {
                        self.check_deadline(deadline, what)?;
                    }
                }
                Err(Errno::EAGAIN) => break,
                Err(e) => return Err(Error::Io(e.into())),
            }
        }
        self.core.dirty = false;
        Ok(())
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

impl AsFd for Handle {
    /// The netlink socket, e.g. to tune socket options or to poll.
    /// Reading from it directly would take answers the handle waits for.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

/// The engine and the blocking transport against a fake kernel: a second
/// netlink socket the handle is connected to, which answers (or not) as
/// each test wants. Connecting to a user-space netlink port needs
/// CAP_NET_ADMIN; the project's tests run as root.
#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use netlink_sys::{protocols::NETLINK_GENERIC, SocketAddr};
    use std::time::Duration;

    /// A handle wired to a fake kernel socket, with a made-up family id.
    pub(crate) fn fake_pair() -> (Socket, ChunkLimits, Socket) {
        let (sock, limits) = open_socket().expect("netlink socket");
        let mut peer = Socket::new(NETLINK_GENERIC).expect("peer socket");
        let addr = peer.bind_auto().expect("bind peer");
        sock.connect(&SocketAddr::new(addr.port_number(), 0))
            .expect("connect to the fake kernel (needs CAP_NET_ADMIN)");
        (sock, limits, peer)
    }

    fn fake_handle() -> (Handle, Socket) {
        let (sock, limits, peer) = fake_pair();
        let mut h = Handle {
            sock,
            core: Core::new(limits),
        };
        h.core.engine.family = 0x42;
        (h, peer)
    }

    /// Receives one datagram on the fake kernel: its requests' sequence
    /// numbers and flags, and who sent them.
    pub(crate) fn take_requests(peer: &Socket) -> (Vec<(u32, u16)>, SocketAddr) {
        let mut buf = Vec::with_capacity(1 << 20);
        let (n, from) = peer.recv_from(&mut buf, 0).expect("peer recv");
        let mut out = Vec::new();
        let mut at = 0;
        while at + 16 <= n {
            let len = u32::from_ne_bytes(buf[at..at + 4].try_into().unwrap()) as usize;
            let flags = u16::from_ne_bytes(buf[at + 6..at + 8].try_into().unwrap());
            let seq = u32::from_ne_bytes(buf[at + 8..at + 12].try_into().unwrap());
            out.push((seq, flags));
            at += (len + 3) & !3;
        }
        (out, from)
    }

    /// An NLMSG_ERROR answering `seq` with `errno` (0: an ACK).
    pub(crate) fn ack(seq: u32, errno: i32) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&36u32.to_ne_bytes()); // nlmsg_len
        m.extend_from_slice(&2u16.to_ne_bytes()); // NLMSG_ERROR
        m.extend_from_slice(&0x100u16.to_ne_bytes()); // NLM_F_CAPPED
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes()); // port id
        m.extend_from_slice(&(-errno).to_ne_bytes()); // error code
        m.extend_from_slice(&[0u8; 16]); // the request's header (capped)
        m
    }

    #[test]
    fn no_answer_times_out_and_late_answers_are_ignored() {
        let (mut h, peer) = fake_handle();
        h.set_timeout(Duration::from_millis(150));
        let start = Instant::now();
        let err = h.flush().unwrap_err();
        let took = start.elapsed();
        assert!(err.is_timeout(), "{err}");
        assert_eq!(
            err.to_string(),
            "flush: no answer from the kernel within 150ms"
        );
        assert!(
            took >= Duration::from_millis(150) && took < Duration::from_secs(3),
            "{took:?}"
        );
        let (reqs, _) = take_requests(&peer);
        let stale = reqs[0].0;

        // The next call gets a late answer to the first one (an error!),
        // then its own ACK: it must succeed.
        let t = std::thread::spawn(move || {
            let (reqs, from) = take_requests(&peer);
            let mut answer = ack(stale, 2);
            answer.extend(ack(reqs[0].0, 0));
            peer.send_to(&answer, &from, 0).unwrap();
            // A third request gets EEXIST.
            let (reqs, from) = take_requests(&peer);
            peer.send_to(&ack(reqs[0].0, 17), &from, 0).unwrap();
        });
        h.zero(None).expect("own ACK after a stale error");
        let err = h.set_timeouts(&Timeouts::default()).unwrap_err();
        assert!(err.is_exists(), "{err}");
        assert_eq!(err.to_string(), "set timeouts: File exists (errno 17)");
        t.join().unwrap();
    }

    #[test]
    fn batch_acks_only_the_last_request_and_matches_errors() {
        let (mut h, peer) = fake_handle();
        h.core.limits.msgs = 4;
        let ops: Vec<Op> = (0..10u16)
            .map(|i| Op::DeleteService(ServiceKey::tcp("10.0.0.1".parse().unwrap(), i + 1)))
            .collect();
        let t = std::thread::spawn(move || {
            let mut chunks = Vec::new();
            for _ in 0..3 {
                let (reqs, from) = take_requests(&peer);
                // Only the last request of each chunk asks for an ACK.
                let acked: Vec<bool> = reqs.iter().map(|(_, f)| f & NLM_F_ACK != 0).collect();
                let mut answer = Vec::new();
                // Refuse the second request of every chunk with ESRCH.
                if reqs.len() > 1 {
                    answer.extend(ack(reqs[1].0, 3));
                }
                answer.extend(ack(reqs.last().unwrap().0, 0));
                peer.send_to(&answer, &from, 0).unwrap();
                chunks.push(acked);
            }
            chunks
        });
        let report = h.apply(&ops).unwrap();
        let chunks = t.join().unwrap();
        assert_eq!(
            chunks,
            vec![
                vec![false, false, false, true],
                vec![false, false, false, true],
                vec![false, true]
            ]
        );
        let failed: Vec<usize> = report.failures().map(|(i, _)| i).collect();
        assert_eq!(failed, vec![1, 5, 9]);
        assert!(report.results[5].as_ref().unwrap_err().is_not_found());
        assert_eq!(
            report.results[5].as_ref().unwrap_err().to_string(),
            "delete service TCP 10.0.0.1:6: No such process (errno 3)"
        );
    }

    #[test]
    fn batch_timeout_reports_unknown_and_unsent_operations() {
        let (mut h, _peer) = fake_handle();
        h.core.limits.msgs = 2;
        h.set_timeout(Duration::from_millis(50));
        let ops = vec![Op::Flush, Op::Flush, Op::Flush];
        let report = h.apply(&ops).unwrap();
        let msgs: Vec<String> = report
            .results
            .iter()
            .map(|r| r.as_ref().unwrap_err().to_string())
            .collect();
        assert_eq!(
            msgs,
            vec![
                "flush: outcome unknown: batch of 2 operations: no answer from the kernel within 50ms",
                "flush: outcome unknown: batch of 2 operations: no answer from the kernel within 50ms",
                "flush: not sent: an earlier chunk of the batch failed",
            ]
        );
    }

    /// On a kernel without IPVS (e.g. the build host) opening a handle says
    /// so; with IPVS loaded (`/proc/net/ip_vs` exists) it works.
    #[test]
    fn ipvs_unavailable_or_usable() {
        let loaded = std::path::Path::new("/proc/net/ip_vs").exists();
        match Handle::new() {
            Ok(h) => assert!(loaded && h.family_id() != 0),
            Err(e) => {
                assert!(!loaded, "IPVS is loaded but: {e}");
                assert!(matches!(e, Error::IpvsUnavailable), "{e:?}");
                assert!(e.to_string().contains("modprobe ip_vs"), "{e}");
            }
        }
    }

    #[test]
    fn invalid_arguments_are_refused_before_sending() {
        let (mut h, _peer) = fake_handle();
        let key = ServiceKey::tcp("10.0.0.1".parse().unwrap(), 80);
        let err = h
            .add_service(&VirtualServer::new(key).scheduler("a-very-long-scheduler"))
            .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        let err = h
            .add_real_server(
                &key,
                &RealServer::new("10.0.0.2".parse().unwrap(), 1).weight(u32::MAX),
            )
            .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        let err = h
            .delete_service(&ServiceKey::fwmark(AddressFamily::Inet, 0))
            .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        let err = h
            .start_daemon(&SyncDaemon::new(DaemonState::Master, "", 1))
            .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    }
}
