//! [`Dataplane`]: applies proxy-core plans to the node and reads back what
//! the node holds.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ipvs::{AsyncHandle, Op, ServiceKey};
use proxy_core::plan::{Observed, Plan, PlanPolicy};

use crate::error::{Error, Result};
use crate::link::{DummyLink, DEFAULT_INTERFACE};
use crate::nft::exec::validated;
use crate::nft::netlink::{self, NfTables};
use crate::nft::{
    render_delta, render_replace, FilterChange, FilterState, Nft, NftStats, Staged,
    DEFAULT_MASQUERADE_BIT, DEFAULT_NFT_TIMEOUT, DEFAULT_TABLE,
};
use crate::sysctl::{self, KernelVersion, SysctlConfig};

/// How the dataplane is set up.
#[derive(Debug, Clone)]
pub struct DataplaneConfig {
    /// The dummy interface holding service addresses.
    pub interface: String,
    /// The `nft` program.
    pub nft: PathBuf,
    /// Our nftables table (family `inet`).
    pub table: String,
    /// The conntrack-mark bit meaning "masquerade".
    pub masquerade_bit: u32,
    /// Kernel settings.
    pub sysctl: SysctlConfig,
    /// Write sysctls in [`Dataplane::setup`] (off when another component
    /// owns them).
    pub manage_sysctls: bool,
    /// Maintain our nftables table. Off only where the kernel has no
    /// nftables and the packet filter is not needed (kernel tests of the
    /// IPVS and address paths; the agent's `--packet-filter none`): plans'
    /// filter operations are then tracked as facts but nothing is rendered
    /// or sent to `nft`, and [`Dataplane::cleanup`] leaves nftables alone.
    pub packet_filter: bool,
    /// Deadline of one `nft` run; a run past it is killed and reported as
    /// [`Error::Timeout`].
    pub nft_timeout: Duration,
    /// Element changes of hash sets and maps go to the kernel as one
    /// nfnetlink transaction instead of an `nft -f -` run (default true;
    /// the table itself and interval sets always go through `nft`).
    pub nft_netlink: bool,
}

impl Default for DataplaneConfig {
    fn default() -> Self {
        DataplaneConfig {
            interface: DEFAULT_INTERFACE.to_owned(),
            nft: PathBuf::from("nft"),
            table: DEFAULT_TABLE.to_owned(),
            masquerade_bit: DEFAULT_MASQUERADE_BIT,
            sysctl: SysctlConfig::default(),
            manage_sysctls: true,
            packet_filter: true,
            nft_timeout: DEFAULT_NFT_TIMEOUT,
            nft_netlink: true,
        }
    }
}

/// What [`Dataplane::setup`] did.
#[derive(Debug, Clone, Default)]
pub struct SetupReport {
    /// The dummy interface's index.
    pub interface_index: u32,
    /// Sysctls changed.
    pub sysctls_changed: Vec<sysctl::Changed>,
}

/// The outcome of applying a plan: every failure, per operation. A failed
/// operation does not stop the others; the next sync's plan retries it.
#[derive(Debug, Default)]
pub struct ApplyReport {
    /// Addresses bound.
    pub bound: usize,
    /// IPVS operations that succeeded.
    pub ipvs_ok: usize,
    /// Addresses unbound.
    pub unbound: usize,
    /// What was sent to our nftables table.
    pub filter_change: FilterChange,
    /// Addresses that could not be bound.
    pub bind_failures: Vec<(IpAddr, Error)>,
    /// IPVS operations the kernel refused, with why.
    pub ipvs_failures: Vec<(Op, ipvs::Error)>,
    /// The packet filter's failure, if any (the table is then unknown: the
    /// next [`Dataplane::observe`] reports no facts, so the next plan
    /// re-sends them all and the table is replaced).
    pub filter_failure: Option<Error>,
    /// An element update that failed and was repaired in the same apply
    /// by replacing the table (not a failure of the apply).
    pub filter_fallback: Option<Error>,
    /// The `nft` runs of this apply.
    pub nft: NftStats,
    /// Addresses that could not be unbound.
    pub unbind_failures: Vec<(IpAddr, Error)>,
    /// Wall time of each phase.
    pub timings: ApplyTimings,
}

/// Wall time of each phase of [`Dataplane::apply`] (zero for a phase with
/// nothing to do).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyTimings {
    /// Binding addresses on the dummy interface.
    pub bind: Duration,
    /// The IPVS operations.
    pub ipvs: Duration,
    /// The packet filter (facts, rendering, `nft`).
    pub filter: Duration,
    /// Unbinding addresses.
    pub unbind: Duration,
}

impl ApplyReport {
    /// True when every operation succeeded.
    pub fn is_ok(&self) -> bool {
        self.bind_failures.is_empty()
            && self.ipvs_failures.is_empty()
            && self.filter_failure.is_none()
            && self.unbind_failures.is_empty()
    }

    /// Number of failed operations.
    pub fn failure_count(&self) -> usize {
        self.bind_failures.len()
            + self.ipvs_failures.len()
            + usize::from(self.filter_failure.is_some())
            + self.unbind_failures.len()
    }
}

/// What [`Dataplane::cleanup`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanupReport {
    /// IPVS virtual servers deleted (ours by the ownership rule).
    pub virtual_servers: Vec<ServiceKey>,
    /// Whether our nftables table existed and was deleted.
    pub table_deleted: bool,
    /// Whether our dummy interface existed and was deleted.
    pub interface_deleted: bool,
}

/// The node's dataplane: IPVS, the dummy interface, our nftables table.
/// All of it in the network namespace of the thread that called
/// [`Dataplane::new`] (and for `nft`/sysctls, of the calling thread).
#[derive(Debug)]
pub struct Dataplane {
    cfg: DataplaneConfig,
    ipvs: AsyncHandle,
    link: DummyLink,
    nft: Nft,
    /// The nfnetlink socket for element transactions (`None`: all through
    /// `nft`).
    nfnl: Option<NfTables>,
    /// Our table as last written (None before the first apply, after a
    /// failed `nft` run and after [`Dataplane::forget_filter`]).
    filter: Option<FilterState>,
    /// The addresses on our interface as last observed, with the plans'
    /// binds and unbinds since: the service-IP guard's addresses when the
    /// table is rebuilt (no address dump per apply).
    addresses: BTreeSet<IpAddr>,
}

impl Dataplane {
    /// Opens the IPVS and rtnetlink connections. Changes nothing.
    pub async fn new(cfg: DataplaneConfig) -> Result<Self> {
        let ipvs = AsyncHandle::new().await?;
        let link = DummyLink::connect(cfg.interface.clone())?;
        let nft = Nft::new(&cfg.nft, cfg.table.clone()).with_timeout(cfg.nft_timeout);
        let nfnl = if cfg.packet_filter && cfg.nft_netlink {
            Some(NfTables::open(cfg.nft_timeout).map_err(Error::Socket)?)
        } else {
            None
        };
        Ok(Dataplane {
            cfg,
            ipvs,
            link,
            nft,
            nfnl,
            filter: None,
            addresses: BTreeSet::new(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &DataplaneConfig {
        &self.cfg
    }

    /// The dummy interface.
    pub fn link(&self) -> &DummyLink {
        &self.link
    }

    /// The nftables runner for our table.
    pub fn nft(&self) -> &Nft {
        &self.nft
    }

    /// The IPVS handle (for reads such as `dump` or `info`).
    pub fn ipvs(&mut self) -> &mut AsyncHandle {
        &mut self.ipvs
    }

    /// Creates the dummy interface if needed, sets it up, writes sysctls.
    pub async fn setup(&mut self) -> Result<SetupReport> {
        let interface_index = self.link.ensure().await?;
        let sysctls_changed = if self.cfg.manage_sysctls {
            let kernel = KernelVersion::running()?;
            sysctl::apply(&sysctl::desired(&self.cfg.sysctl, kernel))?
        } else {
            Vec::new()
        };
        Ok(SetupReport {
            interface_index,
            sysctls_changed,
        })
    }

    /// Reads the node's state for planning: every IPVS virtual server (ours
    /// or not; the plan decides), the addresses on our interface, and the
    /// filter facts this process last applied (`None` after a start, so the
    /// first plan rewrites the table: that is how an existing table is
    /// adopted).
    pub async fn observe(&mut self) -> Result<Observed> {
        let dump = self.ipvs.dump().await?;
        let addresses = self.link.addresses().await?;
        self.addresses.clone_from(&addresses);
        let facts = self.filter.as_ref().map(|f| f.facts().clone());
        Ok(Observed::from_dump(dump, addresses, facts))
    }

    /// Applies a plan in its four phases: bind addresses, IPVS operations
    /// (batched), the packet filter (one nft transaction: set/map element
    /// changes when only elements changed, else a table replacement; nothing
    /// when the rendered table is unchanged), unbind addresses. Failures are
    /// collected per operation; an error is returned only when a phase
    /// could not run at all (e.g. the IPVS socket failed).
    pub async fn apply(&mut self, plan: &Plan) -> Result<ApplyReport> {
        let mut report = ApplyReport::default();
        let t = Instant::now();
        for (addr, res) in self.link.add_addresses(&plan.bind).await? {
            match res {
                Ok(()) => report.bound += 1,
                Err(e) => report.bind_failures.push((addr, e)),
            }
        }
        report.timings.bind = t.elapsed();
        if !plan.ipvs.is_empty() {
            let t = Instant::now();
            let batch = self.ipvs.apply(&plan.ipvs).await?;
            for (op, res) in plan.ipvs.iter().zip(batch.into_results()) {
                match res {
                    Ok(()) => report.ipvs_ok += 1,
                    Err(e) => report.ipvs_failures.push((op.clone(), e)),
                }
            }
            report.timings.ipvs = t.elapsed();
        }
        for a in &plan.bind {
            self.addresses.insert(*a);
        }
        for a in &plan.unbind {
            self.addresses.remove(a);
        }
        let filter_unchanged = plan.filter.is_empty()
            && plan.bind.is_empty()
            && plan.unbind.is_empty()
            && self.filter.is_some();
        if !filter_unchanged {
            let t = Instant::now();
            self.apply_filter(plan, &mut report).await;
            report.timings.filter = t.elapsed();
        }
        self.unbind(plan, &mut report).await?;
        Ok(report)
    }

    /// The packet-filter phase: the plan's filter operations (and its
    /// address changes, for the guard) staged on the table's state, then
    /// one `nft -f -` transaction of exactly the changed elements, or of a
    /// whole new table when the skeleton changed or the table is unknown.
    async fn apply_filter(&mut self, plan: &Plan, report: &mut ApplyReport) {
        let (mut state, known) = match self.filter.take() {
            Some(s) => (s, true),
            None => {
                // Unknown table: build from nothing; the guard starts from
                // the addresses before this plan's changes.
                let mut before = self.addresses.clone();
                for a in &plan.bind {
                    before.remove(a);
                }
                before.extend(plan.unbind.iter().copied());
                let s = FilterState::new(self.cfg.masquerade_bit, before, self.cfg.packet_filter);
                (s, false)
            }
        };
        let staged = state.stage(&plan.filter, &plan.bind, &plan.unbind);
        if !self.cfg.packet_filter {
            // Keep the facts (the next plan is computed against them) but
            // render and send nothing.
            self.filter = Some(state);
            return;
        }
        let table = self.nft.table().to_owned();
        let skeleton = state.skeleton();
        let replace = |state: &FilterState| render_replace(&table, &skeleton, state.elements());
        let res = match (known, staged) {
            (true, Staged::Elements(d)) if d.is_empty() => Ok(FilterChange::Unchanged),
            (true, Staged::Elements(d)) => {
                let sent = match (self.nfnl.as_mut(), netlink::encode(&table, &d)) {
                    (Some(nfnl), Some(msgs)) => {
                        let t = Instant::now();
                        let res = nfnl.transaction(msgs).await;
                        report.nft.netlink_transactions += 1;
                        report.nft.netlink_duration += t.elapsed();
                        match res {
                            Ok(bytes) => {
                                report.nft.netlink_bytes += bytes as u64;
                                Ok(())
                            }
                            Err(e) => Err(Error::NfNetlink(e)),
                        }
                    }
                    // Interval sets (or no socket): nft does the change.
                    _ => {
                        let script = render_delta(&table, &d.delete, &d.add);
                        self.nft
                            .transaction("update", &script, &mut report.nft)
                            .await
                    }
                };
                match sent {
                    Ok(()) => Ok(FilterChange::Elements),
                    // The table was not what we thought (e.g. deleted by
                    // someone): rewrite it whole, now.
                    Err(e) => {
                        report.nft.element_fallbacks += 1;
                        report.filter_fallback = Some(e);
                        self.nft
                            .transaction("replace", &replace(&state), &mut report.nft)
                            .await
                            .map(|()| FilterChange::Table)
                    }
                }
            }
            _ => match validated(&table, &skeleton) {
                Err(e) => Err(e),
                Ok(()) => self
                    .nft
                    .transaction("replace", &replace(&state), &mut report.nft)
                    .await
                    .map(|()| FilterChange::Table),
            },
        };
        match res {
            Ok(change) => {
                report.filter_change = change;
                self.filter = Some(state);
            }
            // The table is unknown now: the next observe reports no facts,
            // so the next plan re-sends them all and the table is replaced.
            Err(e) => report.filter_failure = Some(e),
        }
    }

    /// The last phase of [`Dataplane::apply`]: unbind addresses.
    async fn unbind(&mut self, plan: &Plan, report: &mut ApplyReport) -> Result<()> {
        let t = Instant::now();
        for (addr, res) in self.link.remove_addresses(&plan.unbind).await? {
            match res {
                Ok(()) => report.unbound += 1,
                Err(e) => report.unbind_failures.push((addr, e)),
            }
        }
        report.timings.unbind = t.elapsed();
        Ok(())
    }

    /// Forgets the table this process wrote, so the next
    /// [`Dataplane::observe`] reports no filter facts, the next plan
    /// re-sends them all and the next apply replaces the whole table in one
    /// transaction. The agent calls it before each full sync's observe:
    /// that is how drift in our table (an element or the table deleted by
    /// someone) is repaired.
    pub fn forget_filter(&mut self) {
        self.filter = None;
    }

    /// Removes everything of ours and nothing else: the IPVS virtual
    /// servers `policy` says are ours (address on our interface, node
    /// address with a port in the NodePort range, or firewall mark with our
    /// base; never inside excludeCIDRs), our nftables table, our dummy
    /// interface (and with it its addresses). Sysctls are left as they are.
    pub async fn cleanup(&mut self, policy: &PlanPolicy) -> Result<CleanupReport> {
        let observed =
            Observed::from_dump(self.ipvs.dump().await?, self.link.addresses().await?, None);
        let ours: Vec<ServiceKey> = observed
            .virtual_servers
            .keys()
            .filter(|k| policy.owns(k, &observed))
            .copied()
            .collect();
        let ops: Vec<Op> = ours.iter().map(|k| Op::DeleteService(*k)).collect();
        let mut report = CleanupReport::default();
        if !ops.is_empty() {
            let res = self.ipvs.apply(&ops).await?;
            for (k, r) in ours.iter().zip(res.into_results()) {
                match r {
                    Ok(()) => report.virtual_servers.push(*k),
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(Error::Ipvs(e)),
                }
            }
        }
        report.table_deleted = self.cfg.packet_filter && self.nft.exists().await?;
        if report.table_deleted {
            self.nft.delete().await?;
        }
        report.interface_deleted = self.link.delete().await?;
        self.forget_filter();
        Ok(report)
    }
}
