//! What both clients share: turning operations into requests, kernel
//! refusals into typed errors, and the client methods themselves (written
//! once, expanded into the blocking [`crate::Handle`] and the async
//! [`crate::AsyncHandle`] by [`ipvs_methods`]).

use std::time::Duration;

use crate::batch::Op;
use crate::codec::constants::{IP_VS_IFNAME_MAXLEN, IP_VS_PENAME_MAXLEN, IP_VS_SCHEDNAME_MAXLEN};
use crate::codec::{
    daemon_attrs, dest_attrs, dest_key_attrs, service_attrs, service_key_attrs,
    sync_daemon_from_attrs, DaemonAttribute, IpvsAttribute, IpvsCommand, IpvsMessage,
};
use crate::engine::{Engine, Exchange, KernelError};
use crate::error::{libc_errno, Error, Result};
use crate::sys::ChunkLimits;
use crate::types::{
    DaemonState, Info, RealServer, ServiceKey, SyncDaemon, Timeouts, VirtualServer,
};

/// Default deadline of every call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Size of the reused receive buffer.
const RX_BUFFER: usize = 1 << 20;

/// State shared by both handles: numbering, buffers, limits.
pub(crate) struct Core {
    pub engine: Engine,
    pub tx: Vec<u8>,
    pub rx: Vec<u8>,
    pub timeout: Duration,
    pub limits: ChunkLimits,
    /// An exchange was abandoned (timeout, error, dropped future): its late
    /// answers, or the rest of its dump, may still be queued. The next
    /// exchange drains them first, so that a dump left running in the
    /// kernel cannot make the next dump fail with `EBUSY`.
    pub dirty: bool,
    /// A cleared real-server list whose memory the next exchange reuses
    /// (see `dump_each`: fresh memory means page faults, costly in UML).
    pub spare_real_servers: Vec<RealServer>,
}

impl std::fmt::Debug for Core {
    // Not derived: the buffers are a megabyte of bytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("family", &self.engine.family)
            .field("timeout", &self.timeout)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Core {
    pub(crate) fn new(limits: ChunkLimits) -> Self {
        Core {
            engine: Engine::new(),
            tx: Vec::with_capacity(limits.bytes),
            rx: vec![0; RX_BUFFER],
            timeout: DEFAULT_TIMEOUT,
            limits,
            dirty: false,
            spare_real_servers: Vec::new(),
        }
    }
}

/// The errno text, plus the kernel's extended-ACK text if any.
fn errno_message(e: &KernelError) -> String {
    let text = nix::errno::Errno::from_raw(e.errno).desc();
    match &e.extack {
        Some(x) if !x.is_empty() => format!("{text}: {x}"),
        _ => text.to_owned(),
    }
}

/// A kernel refusal of a request described by `op`.
pub(crate) fn kernel_error(op: String, e: &KernelError) -> Error {
    Error::Kernel {
        op,
        errno: e.errno,
        message: errno_message(e),
    }
}

/// A kernel refusal of `op`, classified: a missing scheduler module is
/// reported as [`Error::SchedulerUnavailable`].
pub(crate) fn op_error(op: &Op, e: &KernelError) -> Error {
    match op {
        // ip_vs_add_service / ip_vs_edit_service answer ENOENT when the
        // scheduler (or the persistence engine) module is missing.
        Op::AddService(vs) | Op::EditService(vs) if e.errno == libc_errno::ENOENT => {
            match &vs.pe_name {
                None => Error::SchedulerUnavailable(vs.scheduler.clone()),
                Some(pe) => Error::Kernel {
                    op: describe(op),
                    errno: e.errno,
                    message: format!(
                        "scheduler {:?} or persistence engine {pe:?} is not available \
                         (modprobe ip_vs_{} / ip_vs_pe_{pe})",
                        vs.scheduler, vs.scheduler
                    ),
                },
            }
        }
        _ => kernel_error(describe(op), e),
    }
}

/// The result of an operation whose answer was lost or never came.
pub(crate) fn unknown_outcome(op: &Op, cause: &Error) -> Error {
    Error::NotApplied {
        op: describe(op),
        reason: format!("outcome unknown: {cause}"),
    }
}

/// The result of an operation skipped because the batch stopped early.
pub(crate) fn aborted(op: &Op) -> Error {
    Error::NotApplied {
        op: describe(op),
        reason: "not sent: an earlier chunk of the batch failed".to_owned(),
    }
}

/// The error when the kernel dropped answers (receive queue full).
pub(crate) fn lost_replies() -> Error {
    Error::Io(nix::errno::Errno::ENOBUFS.into())
}

/// A human description of `op` for error messages, e.g.
/// `add service TCP 10.0.0.1:80`.
pub(crate) fn describe(op: &Op) -> String {
    fn rs(addr: &std::net::IpAddr, port: u16) -> String {
        match addr {
            std::net::IpAddr::V4(a) => format!("{a}:{port}"),
            std::net::IpAddr::V6(a) => format!("[{a}]:{port}"),
        }
    }
    match op {
        Op::AddService(vs) => format!("add service {}", vs.key),
        Op::EditService(vs) => format!("edit service {}", vs.key),
        Op::DeleteService(k) => format!("delete service {k}"),
        Op::AddRealServer(k, r) => {
            format!("add real server {} to {k}", rs(&r.key.addr, r.key.port))
        }
        Op::EditRealServer(k, r) => {
            format!("edit real server {} of {k}", rs(&r.key.addr, r.key.port))
        }
        Op::DeleteRealServer(k, r) => format!("delete real server {} of {k}", rs(&r.addr, r.port)),
        Op::Flush => "flush".to_owned(),
        Op::Zero(None) => "zero all counters".to_owned(),
        Op::Zero(Some(k)) => format!("zero counters of {k}"),
        Op::SetTimeouts(_) => "set timeouts".to_owned(),
    }
}

fn check_name(what: &str, name: &str, max: usize) -> Result<()> {
    if name.len() >= max || name.as_bytes().contains(&0) {
        return Err(Error::InvalidArgument(format!(
            "{what} {name:?} must be shorter than {max} bytes and contain no NUL"
        )));
    }
    Ok(())
}

fn check_key(key: &ServiceKey) -> Result<()> {
    if let ServiceKey::Fwmark { mark: 0, .. } = key {
        return Err(Error::InvalidArgument(
            "a firewall-mark service needs a non-zero mark".to_owned(),
        ));
    }
    Ok(())
}

fn check_service(vs: &VirtualServer) -> Result<()> {
    check_key(&vs.key)?;
    check_name("scheduler name", &vs.scheduler, IP_VS_SCHEDNAME_MAXLEN)?;
    if vs.scheduler.is_empty() {
        return Err(Error::InvalidArgument("empty scheduler name".to_owned()));
    }
    if let Some(pe) = &vs.pe_name {
        check_name("persistence engine name", pe, IP_VS_PENAME_MAXLEN)?;
    }
    Ok(())
}

fn check_real_server(rs: &RealServer) -> Result<()> {
    if rs.weight > i32::MAX as u32 {
        return Err(Error::InvalidArgument(format!(
            "weight {} is larger than the kernel's maximum {}",
            rs.weight,
            i32::MAX
        )));
    }
    Ok(())
}

fn svc(key: &ServiceKey) -> IpvsAttribute {
    IpvsAttribute::Service(service_key_attrs(key))
}

/// The request for one operation, after checking what the kernel would
/// refuse anyway or could not represent.
pub(crate) fn encode_op(op: &Op) -> Result<IpvsMessage> {
    use IpvsCommand as C;
    Ok(match op {
        Op::AddService(vs) | Op::EditService(vs) => {
            check_service(vs)?;
            let cmd = if matches!(op, Op::AddService(_)) {
                C::NewService
            } else {
                C::SetService
            };
            IpvsMessage::new(cmd, vec![IpvsAttribute::Service(service_attrs(vs))])
        }
        Op::DeleteService(k) => {
            check_key(k)?;
            IpvsMessage::new(C::DelService, vec![svc(k)])
        }
        Op::AddRealServer(k, rs) | Op::EditRealServer(k, rs) => {
            check_key(k)?;
            check_real_server(rs)?;
            let cmd = if matches!(op, Op::AddRealServer(..)) {
                C::NewDest
            } else {
                C::SetDest
            };
            IpvsMessage::new(cmd, vec![svc(k), IpvsAttribute::Dest(dest_attrs(rs))])
        }
        Op::DeleteRealServer(k, rk) => {
            check_key(k)?;
            IpvsMessage::new(
                C::DelDest,
                vec![svc(k), IpvsAttribute::Dest(dest_key_attrs(rk))],
            )
        }
        Op::Flush => IpvsMessage::new(C::Flush, vec![]),
        Op::Zero(None) => IpvsMessage::new(C::Zero, vec![]),
        Op::Zero(Some(k)) => {
            check_key(k)?;
            IpvsMessage::new(C::Zero, vec![svc(k)])
        }
        Op::SetTimeouts(t) => IpvsMessage::new(
            C::SetConfig,
            vec![
                IpvsAttribute::TimeoutTcp(t.tcp),
                IpvsAttribute::TimeoutTcpFin(t.tcp_fin),
                IpvsAttribute::TimeoutUdp(t.udp),
            ],
        ),
    })
}

pub(crate) fn start_daemon_msg(d: &SyncDaemon) -> Result<IpvsMessage> {
    check_name("interface name", &d.interface, IP_VS_IFNAME_MAXLEN)?;
    if d.interface.is_empty() {
        return Err(Error::InvalidArgument(
            "a sync daemon needs a multicast interface".to_owned(),
        ));
    }
    Ok(IpvsMessage::new(
        IpvsCommand::NewDaemon,
        vec![IpvsAttribute::Daemon(daemon_attrs(d))],
    ))
}

pub(crate) fn stop_daemon_msg(state: DaemonState) -> IpvsMessage {
    IpvsMessage::new(
        IpvsCommand::DelDaemon,
        vec![IpvsAttribute::Daemon(vec![DaemonAttribute::State(
            state.into(),
        )])],
    )
}

/// Turns the answer of an exchange into an error if the kernel refused it,
/// could not be decoded, or answers were lost.
pub(crate) fn check_exchange(ex: &Exchange, what: &str) -> Result<()> {
    if let Some((_, e)) = ex.errors.first() {
        return Err(kernel_error(what.to_owned(), e));
    }
    if let Some(d) = &ex.decode_error {
        return Err(Error::Decode(format!("{what}: {d}")));
    }
    if ex.overrun {
        return Err(lost_replies());
    }
    Ok(())
}

pub(crate) fn daemons_from(ex: &Exchange) -> Result<Vec<SyncDaemon>> {
    let mut out = Vec::new();
    for m in &ex.messages {
        for a in &m.attributes {
            if let IpvsAttribute::Daemon(attrs) = a {
                out.push(sync_daemon_from_attrs(attrs).map_err(|e| Error::Decode(e.to_string()))?);
            }
        }
    }
    Ok(out)
}

pub(crate) fn timeouts_from(ex: &Exchange) -> Result<Timeouts> {
    let mut t = Timeouts::default();
    let mut seen = false;
    for m in &ex.messages {
        for a in &m.attributes {
            match a {
                IpvsAttribute::TimeoutTcp(v) => t.tcp = *v,
                IpvsAttribute::TimeoutTcpFin(v) => t.tcp_fin = *v,
                IpvsAttribute::TimeoutUdp(v) => t.udp = *v,
                _ => continue,
            }
            seen = true;
        }
    }
    if !seen {
        return Err(Error::Decode(
            "IPVS_CMD_GET_CONFIG answer without timeouts".to_owned(),
        ));
    }
    Ok(t)
}

pub(crate) fn info_from(ex: &Exchange) -> Result<Info> {
    let mut version = None;
    let mut size = None;
    for m in &ex.messages {
        for a in &m.attributes {
            match a {
                IpvsAttribute::InfoVersion(v) => version = Some(*v),
                IpvsAttribute::InfoConnTabSize(v) => size = Some(*v),
                _ => {}
            }
        }
    }
    match (version, size) {
        (Some(version), Some(conn_table_size)) => Ok(Info {
            version,
            conn_table_size,
        }),
        _ => Err(Error::Decode(
            "IPVS_CMD_GET_INFO answer without version or size".to_owned(),
        )),
    }
}

/// The client methods, written once for both handles. The handle provides
/// `core: Core` and `exchange(first, last, payload, what) -> Result<Exchange>`
/// (an `async fn` for the async handle); invoke as `ipvs_methods!()` or
/// `ipvs_methods!(async await)`.
macro_rules! ipvs_methods {
    ($($async:ident $await:ident)?) => {
        /// Sets the deadline of every later call (default 5 s). A call that
        /// gets no complete answer in time fails with [`Error::Timeout`];
        /// late answers are discarded by the next calls.
        pub fn set_timeout(&mut self, timeout: std::time::Duration) {
            self.core.timeout = timeout;
        }

        /// The current per-call deadline.
        pub fn timeout(&self) -> std::time::Duration {
            self.core.timeout
        }

        /// The resolved id of the `IPVS` generic-netlink family.
        pub fn family_id(&self) -> u16 {
            self.core.engine.family
        }

        $($async)? fn request(
            &mut self,
            msg: $crate::codec::IpvsMessage,
            expect: $crate::engine::Expect,
            payload: $crate::engine::Payload,
            what: &str,
        ) -> Result<$crate::engine::Exchange> {
            self.core.tx.clear();
            let seq = self.core.engine.push_request(&mut self.core.tx, msg, expect);
            let ex = self.exchange(seq, seq, payload, what)$(.$await)?;
            let ex = ex?;
            $crate::client::check_exchange(&ex, what)?;
            Ok(ex)
        }

        $($async)? fn run_one(&mut self, op: Op) -> Result<()> {
            let msg = $crate::client::encode_op(&op)?;
            let what = $crate::client::describe(&op);
            self.core.tx.clear();
            let seq = self.core.engine.push_request(&mut self.core.tx, msg, $crate::engine::Expect::Ack);
            let ex = self.exchange(seq, seq, $crate::engine::Payload::Ipvs, &what)$(.$await)?;
            let ex = ex?;
            if let Some((_, e)) = ex.errors.first() {
                return Err($crate::client::op_error(&op, e));
            }
            $crate::client::check_exchange(&ex, &what)
        }

        $($async)? fn run_ops(&mut self, ops: &[Op], batched: bool) -> Result<BatchReport> {
            use $crate::client::{aborted, encode_op, lost_replies, op_error, unknown_outcome};
            let mut results: Vec<Option<Result<()>>> = (0..ops.len()).map(|_| None).collect();
            let max_msgs = if batched { self.core.limits.msgs } else { 1 };
            let mut chunk: Vec<usize> = Vec::new();
            let mut next = 0;
            while next < ops.len() {
                chunk.clear();
                self.core.tx.clear();
                let (mut first, mut last, mut last_off) = (0u32, 0u32, 0usize);
                while next < ops.len() && chunk.len() < max_msgs {
                    let msg = match encode_op(&ops[next]) {
                        Ok(m) => m,
                        Err(e) => {
                            results[next] = Some(Err(e));
                            next += 1;
                            continue;
                        }
                    };
                    let off = self.core.tx.len();
                    let seq = self.core.engine.push(
                        &mut self.core.tx,
                        msg,
                        netlink_packet_core::NLM_F_REQUEST,
                    );
                    if self.core.tx.len() > self.core.limits.bytes && !chunk.is_empty() {
                        self.core.tx.truncate(off);
                        self.core.engine.unpush();
                        break;
                    }
                    if chunk.is_empty() {
                        first = seq;
                    }
                    last = seq;
                    last_off = off;
                    chunk.push(next);
                    next += 1;
                }
                if chunk.is_empty() {
                    continue;
                }
                // Only the last request asks for an ACK: the kernel still
                // answers every failing one, in order.
                $crate::engine::set_ack_flag(&mut self.core.tx, last_off);
                let what = if chunk.len() == 1 {
                    $crate::client::describe(&ops[chunk[0]])
                } else {
                    format!("batch of {} operations", chunk.len())
                };
                let ex = self.exchange(first, last, $crate::engine::Payload::Ipvs, &what)$(.$await)?;
                match ex {
                    Ok(ex) => {
                        for &idx in &chunk {
                            results[idx] = Some(if ex.overrun {
                                Err(unknown_outcome(&ops[idx], &lost_replies()))
                            } else {
                                Ok(())
                            });
                        }
                        for (k, e) in &ex.errors {
                            if let Some(&idx) = chunk.get(*k) {
                                results[idx] = Some(Err(op_error(&ops[idx], e)));
                            }
                        }
                    }
                    Err(e) => {
                        for &idx in &chunk {
                            results[idx] = Some(Err(unknown_outcome(&ops[idx], &e)));
                        }
                        break;
                    }
                }
            }
            Ok(BatchReport {
                results: results
                    .into_iter()
                    .zip(ops)
                    .map(|(r, op)| r.unwrap_or_else(|| Err(aborted(op))))
                    .collect(),
            })
        }

        /// All virtual services, without their real servers
        /// (`ipvsadm -Ln`, service lines).
        pub $($async)? fn services(&mut self) -> Result<Vec<VirtualServer>> {
            let msg = $crate::codec::IpvsMessage::new($crate::codec::IpvsCommand::GetService, vec![]);
            let ex = self.request(msg, $crate::engine::Expect::Dump, $crate::engine::Payload::Services, "list services")$(.$await)?;
            Ok(ex?.services)
        }

        /// One virtual service (`ipvsadm -Ln -t addr:port`). A missing
        /// service is an error with [`Error::is_not_found`].
        pub $($async)? fn service(&mut self, key: &ServiceKey) -> Result<VirtualServer> {
            let msg = $crate::codec::IpvsMessage::new(
                $crate::codec::IpvsCommand::GetService,
                vec![$crate::codec::IpvsAttribute::Service($crate::codec::service_key_attrs(key))],
            );
            let what = format!("get service {key}");
            let ex = self.request(msg, $crate::engine::Expect::Reply, $crate::engine::Payload::Services, &what)$(.$await)?;
            ex?.services
                .into_iter()
                .next()
                .ok_or_else(|| Error::Decode(format!("{what}: empty answer")))
        }

        /// Adds a virtual service (`ipvsadm -A`). An unknown scheduler
        /// fails with [`Error::SchedulerUnavailable`].
        pub $($async)? fn add_service(&mut self, vs: &VirtualServer) -> Result<()> {
            self.run_one(Op::AddService(vs.clone()))$(.$await)?
        }

        /// Changes a virtual service's scheduler, flags, persistence
        /// (`ipvsadm -E`).
        pub $($async)? fn edit_service(&mut self, vs: &VirtualServer) -> Result<()> {
            self.run_one(Op::EditService(vs.clone()))$(.$await)?
        }

        /// Deletes a virtual service and its real servers (`ipvsadm -D`).
        pub $($async)? fn delete_service(&mut self, key: &ServiceKey) -> Result<()> {
            self.run_one(Op::DeleteService(*key))$(.$await)?
        }

        /// The real servers of a service (`ipvsadm -Ln -t addr:port`,
        /// server lines). A missing service yields an empty list.
        pub $($async)? fn real_servers(&mut self, svc: &ServiceKey) -> Result<Vec<RealServer>> {
            let msg = $crate::codec::IpvsMessage::new(
                $crate::codec::IpvsCommand::GetDest,
                vec![$crate::codec::IpvsAttribute::Service($crate::codec::service_key_attrs(svc))],
            );
            let ex = self.request(
                msg,
                $crate::engine::Expect::Dump,
                $crate::engine::Payload::RealServers(svc.family()),
                "list real servers",
            )$(.$await)?;
            Ok(ex?.real_servers)
        }

        /// Adds a real server to a service (`ipvsadm -a`).
        pub $($async)? fn add_real_server(&mut self, svc: &ServiceKey, rs: &RealServer) -> Result<()> {
            self.run_one(Op::AddRealServer(*svc, rs.clone()))$(.$await)?
        }

        /// Changes a real server's weight, method, thresholds, tunnel
        /// (`ipvsadm -e`).
        pub $($async)? fn edit_real_server(&mut self, svc: &ServiceKey, rs: &RealServer) -> Result<()> {
            self.run_one(Op::EditRealServer(*svc, rs.clone()))$(.$await)?
        }

        /// Removes a real server from a service (`ipvsadm -d`).
        pub $($async)? fn delete_real_server(&mut self, svc: &ServiceKey, rs: &RealServerKey) -> Result<()> {
            self.run_one(Op::DeleteRealServer(*svc, *rs))$(.$await)?
        }

        /// Every service with its real servers (`ipvsadm -Sn`): one service
        /// dump, then one real-server dump per service, reusing buffers.
        pub $($async)? fn dump(&mut self) -> Result<Vec<(VirtualServer, Vec<RealServer>)>> {
            let services = self.services()$(.$await)?;
            let services = services?;
            let mut out = Vec::with_capacity(services.len());
            for vs in services {
                let rs = self.real_servers(&vs.key)$(.$await)?;
                out.push((vs, rs?));
            }
            Ok(out)
        }

        /// Calls `f` with every service and its real servers, in kernel
        /// order, like [`Self::dump`] but without collecting everything
        /// first: one real-server buffer is reused for all services, so
        /// printing a big table (`ipvsadm -Sn`) needs little memory.
        pub $($async)? fn dump_each<F>(&mut self, mut f: F) -> Result<()>
        where
            F: FnMut(&VirtualServer, &[RealServer]),
        {
            let services = self.services()$(.$await)?;
            for vs in &services? {
                let msg = $crate::codec::IpvsMessage::new(
                    $crate::codec::IpvsCommand::GetDest,
                    vec![$crate::codec::IpvsAttribute::Service($crate::codec::service_key_attrs(&vs.key))],
                );
                let ex = self.request(
                    msg,
                    $crate::engine::Expect::Dump,
                    $crate::engine::Payload::RealServers(vs.key.family()),
                    "list real servers",
                )$(.$await)?;
                let mut ex = ex?;
                f(vs, &ex.real_servers);
                ex.real_servers.clear();
                self.core.spare_real_servers = std::mem::take(&mut ex.real_servers);
            }
            Ok(())
        }

        /// Removes every service and real server (`ipvsadm -C`).
        pub $($async)? fn flush(&mut self) -> Result<()> {
            self.run_one(Op::Flush)$(.$await)?
        }

        /// Zeroes the packet counters of one service or of all
        /// (`ipvsadm -Z [-t addr:port]`).
        pub $($async)? fn zero(&mut self, svc: Option<&ServiceKey>) -> Result<()> {
            self.run_one(Op::Zero(svc.copied()))$(.$await)?
        }

        /// The connection timeouts (`ipvsadm -L --timeout`).
        pub $($async)? fn timeouts(&mut self) -> Result<Timeouts> {
            let msg = $crate::codec::IpvsMessage::new($crate::codec::IpvsCommand::GetConfig, vec![]);
            let ex = self.request(msg, $crate::engine::Expect::Reply, $crate::engine::Payload::Ipvs, "get timeouts")$(.$await)?;
            $crate::client::timeouts_from(&ex?)
        }

        /// Sets the connection timeouts; 0 leaves a value unchanged
        /// (`ipvsadm --set tcp tcpfin udp`).
        pub $($async)? fn set_timeouts(&mut self, t: &Timeouts) -> Result<()> {
            self.run_one(Op::SetTimeouts(*t))$(.$await)?
        }

        /// Version and connection-table size (ipvsadm's header line
        /// "IP Virtual Server version 1.2.1 (size=4096)").
        pub $($async)? fn info(&mut self) -> Result<Info> {
            let msg = $crate::codec::IpvsMessage::new($crate::codec::IpvsCommand::GetInfo, vec![]);
            let ex = self.request(msg, $crate::engine::Expect::Reply, $crate::engine::Payload::Ipvs, "get info")$(.$await)?;
            $crate::client::info_from(&ex?)
        }

        /// The running sync daemons (`ipvsadm -L --daemon`).
        pub $($async)? fn daemons(&mut self) -> Result<Vec<SyncDaemon>> {
            let msg = $crate::codec::IpvsMessage::new($crate::codec::IpvsCommand::GetDaemon, vec![]);
            let ex = self.request(msg, $crate::engine::Expect::Dump, $crate::engine::Payload::Ipvs, "list sync daemons")$(.$await)?;
            $crate::client::daemons_from(&ex?)
        }

        /// Starts a sync daemon (`ipvsadm --start-daemon master|backup
        /// --mcast-interface IF --syncid ID ...`).
        pub $($async)? fn start_daemon(&mut self, d: &SyncDaemon) -> Result<()> {
            let msg = $crate::client::start_daemon_msg(d)?;
            let what = format!("start sync daemon on {}", d.interface);
            let ex = self.request(msg, $crate::engine::Expect::Ack, $crate::engine::Payload::Ipvs, &what)$(.$await)?;
            ex.map(drop)
        }

        /// Stops the master or backup sync daemon (`ipvsadm --stop-daemon`).
        pub $($async)? fn stop_daemon(&mut self, state: DaemonState) -> Result<()> {
            let msg = $crate::client::stop_daemon_msg(state);
            let ex = self.request(msg, $crate::engine::Expect::Ack, $crate::engine::Payload::Ipvs, "stop sync daemon")$(.$await)?;
            ex.map(drop)
        }

        /// Applies many operations, packing as many requests into each
        /// `sendmsg` as the socket buffers allow (`ipvsadm -R`, batched).
        /// Results come back per operation, in order; a failing operation
        /// does not stop the others. `Err` only if nothing could be tried.
        pub $($async)? fn apply(&mut self, ops: &[Op]) -> Result<BatchReport> {
            self.run_ops(ops, true)$(.$await)?
        }

        /// Like [`Self::apply`] but one request per round trip, as
        /// `ipvsadm` and other clients do; for comparisons and benchmarks.
        pub $($async)? fn apply_unbatched(&mut self, ops: &[Op]) -> Result<BatchReport> {
            self.run_ops(ops, false)$(.$await)?
        }
    };
}
pub(crate) use ipvs_methods;

/// The family id from a `CTRL_CMD_GETFAMILY` exchange.
pub(crate) fn family_from(ex: &Exchange) -> Result<u16> {
    if let Some((_, e)) = ex.errors.first() {
        // The controller answers ENOENT for an unregistered family.
        if e.errno == libc_errno::ENOENT {
            return Err(Error::IpvsUnavailable);
        }
        return Err(kernel_error("resolve the IPVS family".to_owned(), e));
    }
    ex.family_id.ok_or(Error::IpvsUnavailable)
}
