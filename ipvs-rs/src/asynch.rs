//! The async (tokio) client.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;
use std::time::Duration;

use netlink_sys::protocols::NETLINK_GENERIC;

use crate::batch::{BatchReport, Op};
use crate::blocking::{open_in, open_netns};
use crate::client::Client;
use crate::error::Result;
use crate::exchange::{Connection, Tokio};
use crate::types::{
    DaemonState, Info, RealServer, RealServerKey, ServiceKey, SyncDaemon, Timeouts, VirtualServer,
};

/// An async IPVS client for tokio, with the same methods as
/// [`crate::Handle`] (as `async fn`s) and the same exchange and codec.
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
    client: Client<Tokio>,
}

impl AsyncHandle {
    /// Opens a handle in the caller's network namespace and resolves the
    /// `IPVS` family ([`crate::Error::IpvsUnavailable`] if the kernel has none).
    pub async fn new() -> Result<AsyncHandle> {
        Self::from_connection(Connection::<Tokio>::open(NETLINK_GENERIC)?).await
    }

    /// Opens a handle in the network namespace at `path` (e.g.
    /// `/run/netns/NAME` or `/proc/PID/ns/net`; `ipvsadm` run under
    /// `ip netns exec NAME`). The calling thread's namespace is not changed.
    pub async fn new_in_netns(path: impl AsRef<Path>) -> Result<AsyncHandle> {
        let path = path.as_ref();
        let file = open_netns(path)?;
        let (sock, limits) = open_in(file.as_fd(), &path.display().to_string())?;
        Self::from_connection(Connection::new(Tokio::new(sock)?, limits)).await
    }

    /// Opens a handle in the network namespace referred to by `fd`.
    pub async fn new_in_netns_fd(fd: BorrowedFd<'_>) -> Result<AsyncHandle> {
        let (sock, limits) = open_in(fd, &format!("fd {}", fd.as_raw_fd()))?;
        Self::from_connection(Connection::new(Tokio::new(sock)?, limits)).await
    }

    async fn from_connection(conn: Connection<Tokio>) -> Result<AsyncHandle> {
        let mut client = Client::new(conn);
        client.resolve_family().await?;
        Ok(AsyncHandle { client })
    }

    /// Sets the deadline of every later call (default
    /// [`crate::DEFAULT_TIMEOUT`]). A call that gets no complete answer in
    /// time fails with [`crate::Error::Timeout`]; late answers are discarded by
    /// the next calls.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.client.set_timeout(timeout);
    }

    /// The current per-call deadline.
    pub fn timeout(&self) -> Duration {
        self.client.timeout()
    }

    /// The resolved id of the `IPVS` generic-netlink family.
    pub fn family_id(&self) -> u16 {
        self.client.family_id()
    }

    /// All virtual services, without their real servers
    /// (`ipvsadm -Ln`, service lines).
    pub async fn services(&mut self) -> Result<Vec<VirtualServer>> {
        self.client.services().await
    }

    /// One virtual service (`ipvsadm -Ln -t addr:port`). A missing
    /// service is an error with [`crate::Error::is_not_found`].
    pub async fn service(&mut self, key: &ServiceKey) -> Result<VirtualServer> {
        self.client.service(key).await
    }

    /// Adds a virtual service (`ipvsadm -A`). An unknown scheduler
    /// fails with [`crate::Error::SchedulerUnavailable`].
    pub async fn add_service(&mut self, vs: &VirtualServer) -> Result<()> {
        self.client.run_one(Op::AddService(vs.clone())).await
    }

    /// Changes a virtual service's scheduler, flags, persistence
    /// (`ipvsadm -E`).
    pub async fn edit_service(&mut self, vs: &VirtualServer) -> Result<()> {
        self.client.run_one(Op::EditService(vs.clone())).await
    }

    /// Deletes a virtual service and its real servers (`ipvsadm -D`).
    pub async fn delete_service(&mut self, key: &ServiceKey) -> Result<()> {
        self.client.run_one(Op::DeleteService(*key)).await
    }

    /// The real servers of a service (`ipvsadm -Ln -t addr:port`,
    /// server lines). A missing service yields an empty list.
    pub async fn real_servers(&mut self, svc: &ServiceKey) -> Result<Vec<RealServer>> {
        self.client.real_servers(svc).await
    }

    /// Adds a real server to a service (`ipvsadm -a`).
    pub async fn add_real_server(&mut self, svc: &ServiceKey, rs: &RealServer) -> Result<()> {
        self.client
            .run_one(Op::AddRealServer(*svc, rs.clone()))
            .await
    }

    /// Changes a real server's weight, method, thresholds, tunnel
    /// (`ipvsadm -e`).
    pub async fn edit_real_server(&mut self, svc: &ServiceKey, rs: &RealServer) -> Result<()> {
        self.client
            .run_one(Op::EditRealServer(*svc, rs.clone()))
            .await
    }

    /// Removes a real server from a service (`ipvsadm -d`).
    pub async fn delete_real_server(&mut self, svc: &ServiceKey, rs: &RealServerKey) -> Result<()> {
        self.client.run_one(Op::DeleteRealServer(*svc, *rs)).await
    }

    /// Every service with its real servers (`ipvsadm -Sn`): one service
    /// dump, then one real-server dump per service, reusing buffers.
    pub async fn dump(&mut self) -> Result<Vec<(VirtualServer, Vec<RealServer>)>> {
        self.client.dump().await
    }

    /// Calls `f` with every service and its real servers, in kernel
    /// order, like [`Self::dump`] but without collecting everything
    /// first: one real-server buffer is reused for all services, so
    /// printing a big table (`ipvsadm -Sn`) needs little memory.
    pub async fn dump_each<F>(&mut self, f: F) -> Result<()>
    where
        F: FnMut(&VirtualServer, &[RealServer]),
    {
        self.client.dump_each(f).await
    }

    /// Removes every service and real server (`ipvsadm -C`).
    pub async fn flush(&mut self) -> Result<()> {
        self.client.run_one(Op::Flush).await
    }

    /// Zeroes the packet counters of one service or of all
    /// (`ipvsadm -Z [-t addr:port]`).
    pub async fn zero(&mut self, svc: Option<&ServiceKey>) -> Result<()> {
        self.client.run_one(Op::Zero(svc.copied())).await
    }

    /// The connection timeouts (`ipvsadm -L --timeout`).
    pub async fn timeouts(&mut self) -> Result<Timeouts> {
        self.client.timeouts().await
    }

    /// Sets the connection timeouts; 0 leaves a value unchanged
    /// (`ipvsadm --set tcp tcpfin udp`).
    pub async fn set_timeouts(&mut self, t: &Timeouts) -> Result<()> {
        self.client.run_one(Op::SetTimeouts(*t)).await
    }

    /// Version and connection-table size (ipvsadm's header line
    /// "IP Virtual Server version 1.2.1 (size=4096)").
    pub async fn info(&mut self) -> Result<Info> {
        self.client.info().await
    }

    /// The running sync daemons (`ipvsadm -L --daemon`).
    pub async fn daemons(&mut self) -> Result<Vec<SyncDaemon>> {
        self.client.daemons().await
    }

    /// Starts a sync daemon (`ipvsadm --start-daemon master|backup
    /// --mcast-interface IF --syncid ID ...`).
    pub async fn start_daemon(&mut self, d: &SyncDaemon) -> Result<()> {
        self.client.start_daemon(d).await
    }

    /// Stops the master or backup sync daemon (`ipvsadm --stop-daemon`).
    pub async fn stop_daemon(&mut self, state: DaemonState) -> Result<()> {
        self.client.stop_daemon(state).await
    }

    /// Applies many operations, packing as many requests into each
    /// `sendmsg` as the socket buffers allow (`ipvsadm -R`, batched).
    /// Results come back per operation, in order; a failing operation
    /// does not stop the others. `Err` only if nothing could be tried.
    pub async fn apply(&mut self, ops: &[Op]) -> Result<BatchReport> {
        self.client.run_ops(ops, true).await
    }

    /// Like [`Self::apply`] but one request per round trip, as
    /// `ipvsadm` and other clients do; for comparisons and benchmarks.
    pub async fn apply_unbatched(&mut self, ops: &[Op]) -> Result<BatchReport> {
        self.client.run_ops(ops, false).await
    }
}

impl AsFd for AsyncHandle {
    /// The netlink socket, e.g. to tune socket options.
    /// Reading from it directly would take answers the handle waits for.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.client.connection().as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::tests::{ack, fake_connection, fake_pair, take_requests};
    use crate::types::AddressFamily;

    async fn fake_handle() -> (AsyncHandle, netlink_sys::Socket) {
        let (sock, limits, peer) = fake_pair();
        let conn = fake_connection(Tokio::new(sock).unwrap(), limits);
        let client = Client::with_family(conn, 0x42);
        (AsyncHandle { client }, peer)
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

    #[test]
    fn needs_a_runtime() {
        let err = crate::exchange::block_on(AsyncHandle::new()).unwrap_err();
        assert!(matches!(err, crate::Error::Io(_)), "{err:?}");
        assert!(err.to_string().contains("tokio runtime"), "{err}");
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
