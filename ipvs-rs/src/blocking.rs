//! The blocking client.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;
use std::time::Duration;

use netlink_sys::protocols::NETLINK_GENERIC;

use crate::batch::{BatchReport, Op};
use crate::client::Client;
use crate::error::{Error, Result};
use crate::exchange::{block_on, Blocking, Connection};
use crate::types::{
    DaemonState, Info, RealServer, RealServerKey, ServiceKey, SyncDaemon, Timeouts, VirtualServer,
};

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
    client: Client<Blocking>,
}

/// Opens a generic-netlink connection in the namespace `ns` (`label` names
/// it in errors).
pub(crate) fn open_in(
    ns: BorrowedFd<'_>,
    label: &str,
) -> Result<(netlink_sys::Socket, crate::exchange::Limits)> {
    crate::exchange::open_socket_in(ns, NETLINK_GENERIC)
        .map_err(|source| Error::Netns {
            path: label.to_owned(),
            source,
        })?
        .map_err(Error::Io)
}

/// Opens the namespace file at `path`.
pub(crate) fn open_netns(path: &Path) -> Result<std::fs::File> {
    std::fs::File::open(path).map_err(|source| Error::Netns {
        path: path.display().to_string(),
        source,
    })
}

impl Handle {
    /// Opens a handle in the caller's network namespace and resolves the
    /// `IPVS` family ([`Error::IpvsUnavailable`] if the kernel has none).
    pub fn new() -> Result<Handle> {
        Self::from_connection(Connection::<Blocking>::open(NETLINK_GENERIC)?)
    }

    /// Opens a handle in the network namespace at `path` (e.g.
    /// `/run/netns/NAME` or `/proc/PID/ns/net`; `ipvsadm` run under
    /// `ip netns exec NAME`). The calling thread's namespace is not changed.
    pub fn new_in_netns(path: impl AsRef<Path>) -> Result<Handle> {
        let path = path.as_ref();
        let file = open_netns(path)?;
        let (sock, limits) = open_in(file.as_fd(), &path.display().to_string())?;
        Self::from_connection(Connection::new(Blocking::new(sock), limits))
    }

    /// Opens a handle in the network namespace referred to by `fd`.
    pub fn new_in_netns_fd(fd: BorrowedFd<'_>) -> Result<Handle> {
        let (sock, limits) = open_in(fd, &format!("fd {}", fd.as_raw_fd()))?;
        Self::from_connection(Connection::new(Blocking::new(sock), limits))
    }

    fn from_connection(conn: Connection<Blocking>) -> Result<Handle> {
        let mut client = Client::new(conn);
        block_on(client.resolve_family())?;
        Ok(Handle { client })
    }

    /// Sets the deadline of every later call (default
    /// [`crate::DEFAULT_TIMEOUT`]). A call that gets no complete answer in
    /// time fails with [`Error::Timeout`]; late answers are discarded by
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
    pub fn services(&mut self) -> Result<Vec<VirtualServer>> {
        block_on(self.client.services())
    }

    /// One virtual service (`ipvsadm -Ln -t addr:port`). A missing
    /// service is an error with [`Error::is_not_found`].
    pub fn service(&mut self, key: &ServiceKey) -> Result<VirtualServer> {
        block_on(self.client.service(key))
    }

    /// Adds a virtual service (`ipvsadm -A`). An unknown scheduler
    /// fails with [`Error::SchedulerUnavailable`].
    pub fn add_service(&mut self, vs: &VirtualServer) -> Result<()> {
        block_on(self.client.run_one(Op::AddService(vs.clone())))
    }

    /// Changes a virtual service's scheduler, flags, persistence
    /// (`ipvsadm -E`).
    pub fn edit_service(&mut self, vs: &VirtualServer) -> Result<()> {
        block_on(self.client.run_one(Op::EditService(vs.clone())))
    }

    /// Deletes a virtual service and its real servers (`ipvsadm -D`).
    pub fn delete_service(&mut self, key: &ServiceKey) -> Result<()> {
        block_on(self.client.run_one(Op::DeleteService(*key)))
    }

    /// The real servers of a service (`ipvsadm -Ln -t addr:port`,
    /// server lines). A missing service yields an empty list.
    pub fn real_servers(&mut self, svc: &ServiceKey) -> Result<Vec<RealServer>> {
        block_on(self.client.real_servers(svc))
    }

    /// Adds a real server to a service (`ipvsadm -a`).
    pub fn add_real_server(&mut self, svc: &ServiceKey, rs: &RealServer) -> Result<()> {
        block_on(self.client.run_one(Op::AddRealServer(*svc, rs.clone())))
    }

    /// Changes a real server's weight, method, thresholds, tunnel
    /// (`ipvsadm -e`).
    pub fn edit_real_server(&mut self, svc: &ServiceKey, rs: &RealServer) -> Result<()> {
        block_on(self.client.run_one(Op::EditRealServer(*svc, rs.clone())))
    }

    /// Removes a real server from a service (`ipvsadm -d`).
    pub fn delete_real_server(&mut self, svc: &ServiceKey, rs: &RealServerKey) -> Result<()> {
        block_on(self.client.run_one(Op::DeleteRealServer(*svc, *rs)))
    }

    /// Every service with its real servers (`ipvsadm -Sn`): one service
    /// dump, then one real-server dump per service, reusing buffers.
    pub fn dump(&mut self) -> Result<Vec<(VirtualServer, Vec<RealServer>)>> {
        block_on(self.client.dump())
    }

    /// Calls `f` with every service and its real servers, in kernel
    /// order, like [`Self::dump`] but without collecting everything
    /// first: one real-server buffer is reused for all services, so
    /// printing a big table (`ipvsadm -Sn`) needs little memory.
    pub fn dump_each<F>(&mut self, f: F) -> Result<()>
    where
        F: FnMut(&VirtualServer, &[RealServer]),
    {
        block_on(self.client.dump_each(f))
    }

    /// Removes every service and real server (`ipvsadm -C`).
    pub fn flush(&mut self) -> Result<()> {
        block_on(self.client.run_one(Op::Flush))
    }

    /// Zeroes the packet counters of one service or of all
    /// (`ipvsadm -Z [-t addr:port]`).
    pub fn zero(&mut self, svc: Option<&ServiceKey>) -> Result<()> {
        block_on(self.client.run_one(Op::Zero(svc.copied())))
    }

    /// The connection timeouts (`ipvsadm -L --timeout`).
    pub fn timeouts(&mut self) -> Result<Timeouts> {
        block_on(self.client.timeouts())
    }

    /// Sets the connection timeouts; 0 leaves a value unchanged
    /// (`ipvsadm --set tcp tcpfin udp`).
    pub fn set_timeouts(&mut self, t: &Timeouts) -> Result<()> {
        block_on(self.client.run_one(Op::SetTimeouts(*t)))
    }

    /// Version and connection-table size (ipvsadm's header line
    /// "IP Virtual Server version 1.2.1 (size=4096)").
    pub fn info(&mut self) -> Result<Info> {
        block_on(self.client.info())
    }

    /// The running sync daemons (`ipvsadm -L --daemon`).
    pub fn daemons(&mut self) -> Result<Vec<SyncDaemon>> {
        block_on(self.client.daemons())
    }

    /// Starts a sync daemon (`ipvsadm --start-daemon master|backup
    /// --mcast-interface IF --syncid ID ...`).
    pub fn start_daemon(&mut self, d: &SyncDaemon) -> Result<()> {
        block_on(self.client.start_daemon(d))
    }

    /// Stops the master or backup sync daemon (`ipvsadm --stop-daemon`).
    pub fn stop_daemon(&mut self, state: DaemonState) -> Result<()> {
        block_on(self.client.stop_daemon(state))
    }

    /// Applies many operations, packing as many requests into each
    /// `sendmsg` as the socket buffers allow (`ipvsadm -R`, batched).
    /// Results come back per operation, in order; a failing operation
    /// does not stop the others. `Err` only if nothing could be tried.
    pub fn apply(&mut self, ops: &[Op]) -> Result<BatchReport> {
        block_on(self.client.run_ops(ops, true))
    }

    /// Like [`Self::apply`] but one request per round trip, as
    /// `ipvsadm` and other clients do; for comparisons and benchmarks.
    pub fn apply_unbatched(&mut self, ops: &[Op]) -> Result<BatchReport> {
        block_on(self.client.run_ops(ops, false))
    }
}

impl AsFd for Handle {
    /// The netlink socket, e.g. to tune socket options or to poll.
    /// Reading from it directly would take answers the handle waits for.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.client.connection().as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::tests::fake_connection;
    use crate::types::AddressFamily;

    fn fake_handle() -> (Handle, netlink_sys::Socket) {
        let (sock, limits, peer) = crate::exchange::tests::fake_pair();
        let conn = fake_connection(Blocking::new(sock), limits);
        let client = Client::with_family(conn, 0x42);
        (Handle { client }, peer)
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
