//! The forwarding-change log: one info line per address bound or unbound
//! and per virtual server touched, and the per-sync timing line.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::Duration;

use ipvs::{Op, RealServerKey, ServiceKey};
use proxy_core::Plan;

use super::{CoreProxier, Kernel};
use crate::sync::SyncKind;

pub(super) fn fmt_rs(k: &RealServerKey) -> String {
    match k.addr {
        IpAddr::V4(a) => format!("{a}:{}", k.port),
        IpAddr::V6(a) => format!("[{a}]:{}", k.port),
    }
}

/// Plans with at least this many operations get an info line with their
/// timings ([`SyncTimings`]); smaller ones a debug line.
const TIMED_SYNC_OPS: usize = 100;

/// Where one sync's time went.
#[derive(Debug, Clone, Default)]
pub(super) struct SyncTimings {
    /// Reading the kernel: the dump of a full sync, the per-service reads of
    /// a partial one.
    pub(super) read: Duration,
    /// Planning (proxy-core).
    pub(super) plan: Duration,
    /// The forwarding-change log lines.
    pub(super) log: Duration,
    /// The kernel's phases.
    pub(super) apply: Vec<(&'static str, Duration)>,
    /// The `nft` runs.
    pub(super) nft: dataplane::nft::NftStats,
    /// From the start of the sync to the end.
    pub(super) total: Duration,
}

impl SyncTimings {
    /// One line: info for a large plan or a sync over a second, else debug.
    pub(super) fn log(&self, kind: SyncKind, plan: &Plan, failed: usize) {
        let ops = plan.ipvs.len() + plan.bind.len() + plan.unbind.len() + plan.filter.len();
        let ms = |d: Duration| (d.as_secs_f64() * 1e4).round() / 10.0;
        let phase = |name: &str| {
            self.apply
                .iter()
                .find(|(n, _)| *n == name)
                .map_or(0.0, |(_, d)| ms(*d))
        };
        macro_rules! line {
            ($level:ident) => {
                tracing::$level!(
                    ?kind,
                    ops,
                    failed,
                    read_ms = ms(self.read),
                    plan_ms = ms(self.plan),
                    log_ms = ms(self.log),
                    bind_ms = phase("bind"),
                    ipvs_ms = phase("ipvs"),
                    filter_ms = phase("filter"),
                    unbind_ms = phase("unbind"),
                    nft_runs = self.nft.executions,
                    nft_ms = ms(self.nft.duration),
                    nft_bytes = self.nft.input_bytes,
                    nft_netlink = self.nft.netlink_transactions,
                    nft_netlink_bytes = self.nft.netlink_bytes,
                    total_ms = ms(self.total),
                    "sync done"
                )
            };
        }
        if ops >= TIMED_SYNC_OPS || self.total >= Duration::from_secs(1) {
            line!(info);
        } else {
            line!(debug);
        }
    }
}

/// What a plan does to one virtual server itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum VsWhat {
    Added,
    Updated,
    Removed,
    /// Only its real servers change.
    RealServers,
}

impl VsWhat {
    /// The log message: the text operators grep for.
    fn message(self) -> &'static str {
        match self {
            VsWhat::Added => "virtual server added",
            VsWhat::Updated => "virtual server updated",
            VsWhat::Removed => "virtual server removed",
            VsWhat::RealServers => "real servers changed",
        }
    }
}

/// Everything one plan does to one virtual server, for its log line.
/// Real-server lists are comma-separated `ADDR:PORT` (`[ADDR]:PORT` for
/// IPv6), with `/wN` appended when the weight set is not 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct VsChange {
    pub(super) key: ServiceKey,
    pub(super) what: VsWhat,
    /// The scheduler, when the virtual server is added or updated.
    pub(super) scheduler: Option<String>,
    pub(super) added: Option<String>,
    pub(super) draining: Option<String>,
    pub(super) updated: Option<String>,
    pub(super) removed: Option<String>,
    /// Each real server's change (message, real server), for the debug
    /// lines; classified once, with the info line's lists.
    pub(super) each: Vec<(&'static str, RealServerKey)>,
}

impl VsChange {
    fn new(key: ServiceKey) -> Self {
        Self {
            key,
            what: VsWhat::RealServers,
            scheduler: None,
            added: None,
            draining: None,
            updated: None,
            removed: None,
            each: Vec::new(),
        }
    }

    /// One debug line per real server (the lines of the per-VS info line).
    fn log_each(&self, service: &str) {
        for (what, rs) in &self.each {
            tracing::debug!(service = %service, virtual_server = %self.key, real_server = %fmt_rs(rs), "{what}");
        }
    }
}

/// The virtual server an IPVS operation acts on.
pub(super) fn op_key(op: &Op) -> Option<ServiceKey> {
    match op {
        Op::AddService(vs) | Op::EditService(vs) => Some(vs.key),
        Op::DeleteService(k)
        | Op::AddRealServer(k, _)
        | Op::EditRealServer(k, _)
        | Op::DeleteRealServer(k, _) => Some(*k),
        _ => None,
    }
}

fn push_rs(list: &mut Option<String>, rs: &RealServerKey, weight: Option<u32>) {
    let s = list.get_or_insert_with(String::new);
    if !s.is_empty() {
        s.push(',');
    }
    s.push_str(&fmt_rs(rs));
    if let Some(w) = weight.filter(|w| *w != 1) {
        s.push_str(&format!("/w{w}"));
    }
}

/// The plan's IPVS operations grouped by virtual server, in the order the
/// plan first touches each.
pub(super) fn vs_changes(plan: &Plan) -> Vec<VsChange> {
    let draining: BTreeSet<(ServiceKey, RealServerKey)> =
        plan.drains_started.iter().copied().collect();
    let mut out: Vec<VsChange> = Vec::new();
    let mut at: HashMap<ServiceKey, usize> = HashMap::new();
    for op in &plan.ipvs {
        let Some(key) = op_key(op) else { continue };
        let i = *at.entry(key).or_insert_with(|| {
            out.push(VsChange::new(key));
            out.len() - 1
        });
        let c = &mut out[i];
        match op {
            Op::AddService(vs) => {
                c.what = VsWhat::Added;
                c.scheduler = Some(vs.scheduler.clone());
            }
            Op::EditService(vs) => {
                if c.what == VsWhat::RealServers {
                    c.what = VsWhat::Updated;
                }
                c.scheduler = Some(vs.scheduler.clone());
            }
            Op::DeleteService(_) => c.what = VsWhat::Removed,
            Op::AddRealServer(_, rs) => {
                push_rs(&mut c.added, &rs.key, Some(rs.weight));
                c.each.push(("real server added", rs.key));
            }
            Op::EditRealServer(k, rs) if draining.contains(&(*k, rs.key)) => {
                push_rs(&mut c.draining, &rs.key, None);
                c.each.push(("real server draining", rs.key));
            }
            Op::EditRealServer(_, rs) => {
                push_rs(&mut c.updated, &rs.key, Some(rs.weight));
                c.each.push(("real server updated", rs.key));
            }
            Op::DeleteRealServer(_, rs) => {
                push_rs(&mut c.removed, rs, None);
                c.each.push(("real server removed", *rs));
            }
            _ => {}
        }
    }
    out
}

impl<K: Kernel> CoreProxier<K> {
    /// The forwarding changes of a plan, one info line per address bound
    /// or unbound and one per virtual server touched, naming its service
    /// and the real servers added, draining, updated and removed (see
    /// [`VsChange`]); each real server at debug, the whole plan at debug.
    pub(super) fn log_plan(&self, plan: &Plan, kind: SyncKind) {
        if plan.is_empty() {
            return;
        }
        tracing::debug!(?kind, ?plan, "plan");
        for a in &plan.bind {
            tracing::info!(address = %a, "address bound");
        }
        for c in vs_changes(plan) {
            let service = self.owner(&c.key);
            if tracing::enabled!(tracing::Level::DEBUG) {
                c.log_each(&service);
            }
            tracing::info!(
                service = %service,
                virtual_server = %c.key,
                scheduler = c.scheduler.as_deref().map(tracing::field::display),
                added = c.added.as_deref().map(tracing::field::display),
                draining = c.draining.as_deref().map(tracing::field::display),
                updated = c.updated.as_deref().map(tracing::field::display),
                removed = c.removed.as_deref().map(tracing::field::display),
                "{}",
                c.what.message()
            );
        }
        for op in &plan.ipvs {
            if op_key(op).is_none() {
                tracing::info!(op = ?op, "ipvs operation");
            }
        }
        if !plan.filter.is_empty() {
            tracing::info!(changes = plan.filter.len(), "packet filter updated");
        }
        for a in &plan.unbind {
            tracing::info!(address = %a, "address unbound");
        }
    }
}
