//! What both clients share: turning operations into requests, kernel
//! refusals into typed errors, and the client methods themselves, written
//! once as `async fn`s of [`Client`] over any [`Transport`]. The blocking
//! [`crate::Handle`] runs them with the blocking transport (every await
//! is ready at once); the async [`crate::AsyncHandle`] awaits them.

use std::time::Duration;

use crate::batch::{BatchReport, Op};
use crate::codec::constants::IPVS_GENL_NAME;
use crate::codec::{sync_daemon_from_attrs, IpvsAttribute, IpvsCommand, IpvsMessage};
use crate::engine::{push, push_get_family, Answer, Expect};
use crate::error::{libc_errno, Error, Result};
use crate::exchange::{Connection, Exchange, ExchangeError, KernelError, Transport};
use crate::request::{describe, encode_request, start_daemon_msg, stop_daemon_msg, svc};
use crate::types::{
    DaemonState, Info, RealServer, ServiceKey, SyncDaemon, Timeouts, VirtualServer,
};

/// Default deadline of every call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// A kernel refusal of a request described by `op`.
pub(crate) fn kernel_error(op: String, e: &KernelError) -> Error {
    Error::Kernel {
        op,
        errno: e.errno,
        message: e.to_string(),
    }
}

/// A kernel refusal of `op`, classified: a missing scheduler module is
/// reported as [`Error::SchedulerUnavailable`].
fn op_error(op: &Op, e: &KernelError) -> Error {
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
fn unknown_outcome(op: &Op, cause: &Error) -> Error {
    Error::NotApplied {
        op: describe(op),
        reason: format!("outcome unknown: {cause}"),
    }
}

/// The result of an operation skipped because the batch stopped early.
fn aborted(op: &Op) -> Error {
    Error::NotApplied {
        op: describe(op),
        reason: "not sent: an earlier chunk of the batch failed".to_owned(),
    }
}

/// The error when the kernel dropped answers (receive queue full).
fn lost_replies() -> Error {
    Error::Io(nix::errno::Errno::ENOBUFS.into())
}

/// Turns the answer of an exchange into an error if the kernel refused it,
/// could not be decoded, or answers were lost.
pub(crate) fn check_exchange(ex: &Exchange<Answer>, what: &str) -> Result<()> {
    if let Some((_, e)) = ex.errors().first() {
        return Err(kernel_error(what.to_owned(), e));
    }
    if let Some(d) = ex.decode_error() {
        return Err(Error::Decode(format!("{what}: {d}")));
    }
    if ex.overrun() {
        return Err(lost_replies());
    }
    Ok(())
}

pub(crate) fn daemons_from(msgs: &[IpvsMessage]) -> Result<Vec<SyncDaemon>> {
    let mut out = Vec::new();
    for m in msgs {
        for a in &m.attributes {
            if let IpvsAttribute::Daemon(attrs) = a {
                out.push(sync_daemon_from_attrs(attrs).map_err(|e| Error::Decode(e.to_string()))?);
            }
        }
    }
    Ok(out)
}

pub(crate) fn timeouts_from(msgs: &[IpvsMessage]) -> Result<Timeouts> {
    let mut t = Timeouts::default();
    let mut seen = false;
    for m in msgs {
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

pub(crate) fn info_from(msgs: &[IpvsMessage]) -> Result<Info> {
    let mut version = None;
    let mut size = None;
    for m in msgs {
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

/// The IPVS client over a transport: the connection, the resolved family,
/// a spare real-server vector.
pub(crate) struct Client<T> {
    conn: Connection<T>,
    family: u16,
    /// A cleared real-server list whose memory the next real-server dump
    /// reuses (see `dump_each`: fresh memory means page faults, costly in
    /// UML).
    spare_real_servers: Vec<RealServer>,
}

impl<T> std::fmt::Debug for Client<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("family", &self.family)
            .field("conn", &self.conn)
            .finish_non_exhaustive()
    }
}

fn exchange_error(what: &str, e: ExchangeError) -> Error {
    match e {
        ExchangeError::Timeout(after) => Error::Timeout {
            op: what.to_owned(),
            after,
        },
        ExchangeError::Io(e) => Error::Io(e),
    }
}

/// A service key as a request attribute.
fn svc_msg(cmd: IpvsCommand, key: &ServiceKey) -> IpvsMessage {
    IpvsMessage::new(cmd, vec![svc(key)])
}

impl<T: Transport> Client<T> {
    /// A client on `conn`, before the family is resolved.
    pub(crate) fn new(mut conn: Connection<T>) -> Self {
        conn.set_timeout(DEFAULT_TIMEOUT);
        Client {
            conn,
            family: 0,
            spare_real_servers: Vec::new(),
        }
    }

    #[cfg(test)]
    pub(crate) fn with_family(conn: Connection<T>, family: u16) -> Self {
        let mut c = Self::new(conn);
        c.family = family;
        c
    }

    pub(crate) fn connection(&self) -> &Connection<T> {
        &self.conn
    }

    #[cfg(test)]
    pub(crate) fn connection_mut(&mut self) -> &mut Connection<T> {
        &mut self.conn
    }

    pub(crate) fn set_timeout(&mut self, timeout: Duration) {
        self.conn.set_timeout(timeout);
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.conn.timeout()
    }

    pub(crate) fn family_id(&self) -> u16 {
        self.family
    }

    /// Resolves the `IPVS` family id (`CTRL_CMD_GETFAMILY`).
    pub(crate) async fn resolve_family(&mut self) -> Result<()> {
        const WHAT: &str = "resolve the IPVS family";
        self.conn.clear();
        push_get_family(&mut self.conn, IPVS_GENL_NAME);
        let ex = self
            .conn
            .exchange(Answer::Ctrl(None))
            .await
            .map_err(|e| exchange_error(WHAT, e))?;
        self.family = family_from(&ex)?;
        Ok(())
    }

    /// One request, its answer checked.
    async fn request(
        &mut self,
        msg: IpvsMessage,
        expect: Expect,
        answer: Answer,
        what: &str,
    ) -> Result<Answer> {
        self.conn.clear();
        push(&mut self.conn, self.family, msg, expect);
        let ex = self
            .conn
            .exchange(answer)
            .await
            .map_err(|e| exchange_error(what, e))?;
        check_exchange(&ex, what)?;
        Ok(ex.into_collected())
    }

    /// One IPVS data request whose answer is a list of messages.
    async fn messages(
        &mut self,
        msg: IpvsMessage,
        expect: Expect,
        what: &str,
    ) -> Result<Vec<IpvsMessage>> {
        match self
            .request(msg, expect, Answer::Ipvs(Vec::new()), what)
            .await?
        {
            Answer::Ipvs(m) => Ok(m),
            _ => Ok(Vec::new()),
        }
    }

    pub(crate) async fn run_one(&mut self, op: Op) -> Result<()> {
        let msg = encode_request(&op)?;
        let what = describe(&op);
        self.conn.clear();
        push(&mut self.conn, self.family, msg, Expect::Ack);
        let ex = self
            .conn
            .exchange(Answer::Ipvs(Vec::new()))
            .await
            .map_err(|e| exchange_error(&what, e))?;
        if let Some((_, e)) = ex.errors().first() {
            return Err(op_error(&op, e));
        }
        check_exchange(&ex, &what)
    }

    pub(crate) async fn run_ops(&mut self, ops: &[Op], batched: bool) -> Result<BatchReport> {
        // Only failures are kept (see BatchReport): a restore has ~10^5
        // operations, and fresh memory is costly (page faults under UML).
        let mut failures: Vec<(usize, Error)> = Vec::new();
        let limits = self.conn.limits();
        let max_msgs = if batched { limits.msgs } else { 1 };
        let mut chunk: Vec<usize> = Vec::new();
        let mut next = 0;
        while next < ops.len() {
            chunk.clear();
            self.conn.clear();
            while next < ops.len() && chunk.len() < max_msgs {
                let msg = match encode_request(&ops[next]) {
                    Ok(m) => m,
                    Err(e) => {
                        failures.push((next, e));
                        next += 1;
                        continue;
                    }
                };
                push(&mut self.conn, self.family, msg, Expect::Batched);
                if self.conn.pending_bytes() > limits.bytes && !chunk.is_empty() {
                    self.conn.pop();
                    break;
                }
                chunk.push(next);
                next += 1;
            }
            if chunk.is_empty() {
                continue;
            }
            // Only the last request asks for an ACK: the kernel still
            // answers every failing one, in order.
            self.conn.ack_last();
            let what = if chunk.len() == 1 {
                describe(&ops[chunk[0]])
            } else {
                format!("batch of {} operations", chunk.len())
            };
            match self.conn.exchange(()).await {
                Ok(ex) => {
                    // Kernel refusals are pushed after the overrun's
                    // unknowns: from_failures keeps the last per index.
                    if ex.overrun() {
                        for &idx in &chunk {
                            failures.push((idx, unknown_outcome(&ops[idx], &lost_replies())));
                        }
                    }
                    for (k, e) in ex.errors() {
                        if let Some(&idx) = chunk.get(*k) {
                            failures.push((idx, op_error(&ops[idx], e)));
                        }
                    }
                }
                Err(e) => {
                    let e = exchange_error(&what, e);
                    for &idx in &chunk {
                        failures.push((idx, unknown_outcome(&ops[idx], &e)));
                    }
                    break;
                }
            }
        }
        // After a failed exchange: the operations never sent.
        for (idx, op) in ops.iter().enumerate().skip(next) {
            failures.push((idx, aborted(op)));
        }
        Ok(BatchReport::from_failures(ops.len(), failures))
    }

    pub(crate) async fn services(&mut self) -> Result<Vec<VirtualServer>> {
        let msg = IpvsMessage::new(IpvsCommand::GetService, vec![]);
        let answer = Answer::Services(Vec::new());
        match self
            .request(msg, Expect::Dump, answer, "list services")
            .await?
        {
            Answer::Services(v) => Ok(v),
            _ => Ok(Vec::new()),
        }
    }

    pub(crate) async fn service(&mut self, key: &ServiceKey) -> Result<VirtualServer> {
        let msg = svc_msg(IpvsCommand::GetService, key);
        let what = format!("get service {key}");
        let answer = Answer::Services(Vec::new());
        match self.request(msg, Expect::Reply, answer, &what).await? {
            Answer::Services(v) => v.into_iter().next(),
            _ => None,
        }
        .ok_or_else(|| Error::Decode(format!("{what}: empty answer")))
    }

    pub(crate) async fn real_servers(&mut self, svc: &ServiceKey) -> Result<Vec<RealServer>> {
        let msg = svc_msg(IpvsCommand::GetDest, svc);
        let reuse = std::mem::take(&mut self.spare_real_servers);
        let answer = Answer::RealServers(svc.family(), reuse);
        match self
            .request(msg, Expect::Dump, answer, "list real servers")
            .await?
        {
            Answer::RealServers(_, v) => Ok(v),
            _ => Ok(Vec::new()),
        }
    }

    pub(crate) async fn dump(&mut self) -> Result<Vec<(VirtualServer, Vec<RealServer>)>> {
        let services = self.services().await?;
        let mut out = Vec::with_capacity(services.len());
        for vs in services {
            // Decoded into the reused vector, then moved into one of the
            // exact size: a vector grown by doubling would hold ~60% more
            // than its 10 real servers, and at 10^5 real servers that
            // slack is thousands of page faults (costly under UML).
            let mut rs = self.real_servers(&vs.key).await?;
            let mut exact = Vec::with_capacity(rs.len());
            exact.append(&mut rs);
            out.push((vs, exact));
            self.spare_real_servers = rs;
        }
        Ok(out)
    }

    pub(crate) async fn dump_each<F>(&mut self, mut f: F) -> Result<()>
    where
        F: FnMut(&VirtualServer, &[RealServer]),
    {
        for vs in &self.services().await? {
            let mut rs = self.real_servers(&vs.key).await?;
            f(vs, &rs);
            rs.clear();
            self.spare_real_servers = rs;
        }
        Ok(())
    }

    pub(crate) async fn timeouts(&mut self) -> Result<Timeouts> {
        let msg = IpvsMessage::new(IpvsCommand::GetConfig, vec![]);
        timeouts_from(&self.messages(msg, Expect::Reply, "get timeouts").await?)
    }

    pub(crate) async fn info(&mut self) -> Result<Info> {
        let msg = IpvsMessage::new(IpvsCommand::GetInfo, vec![]);
        info_from(&self.messages(msg, Expect::Reply, "get info").await?)
    }

    pub(crate) async fn daemons(&mut self) -> Result<Vec<SyncDaemon>> {
        let msg = IpvsMessage::new(IpvsCommand::GetDaemon, vec![]);
        daemons_from(
            &self
                .messages(msg, Expect::Dump, "list sync daemons")
                .await?,
        )
    }

    pub(crate) async fn start_daemon(&mut self, d: &SyncDaemon) -> Result<()> {
        let msg = start_daemon_msg(d)?;
        let what = format!("start sync daemon on {}", d.interface);
        self.messages(msg, Expect::Ack, &what).await.map(drop)
    }

    pub(crate) async fn stop_daemon(&mut self, state: DaemonState) -> Result<()> {
        let msg = stop_daemon_msg(state);
        self.messages(msg, Expect::Ack, "stop sync daemon")
            .await
            .map(drop)
    }
}

/// The family id from a `CTRL_CMD_GETFAMILY` exchange.
pub(crate) fn family_from(ex: &Exchange<Answer>) -> Result<u16> {
    if let Some((_, e)) = ex.errors().first() {
        // The controller answers ENOENT for an unregistered family.
        if e.errno == libc_errno::ENOENT {
            return Err(Error::IpvsUnavailable);
        }
        return Err(kernel_error("resolve the IPVS family".to_owned(), e));
    }
    match ex.collected() {
        Answer::Ctrl(Some(id)) => Ok(*id),
        _ => Err(Error::IpvsUnavailable),
    }
}
