//! Taking a node over from kube-proxy's IPVS mode.
//!
//! The IPVS virtual and real servers and the addresses on `kube-ipvs0` that
//! kube-proxy left are adopted by the ordinary plan (what matches is kept,
//! what differs is edited in place, the rest drained and deleted). What the
//! plan does not know are kube-proxy's iptables chains and ipsets: they are
//! removed here, once, after our first full sync has succeeded with no
//! failed operation, so our own nftables table is in place before
//! kube-proxy's rules go (`--remove-kube-proxy-rules`, default true).

use std::future::Future;

use dataplane::kube_proxy::{self, CleanupConfig};

use crate::error::Error;
use crate::source::Change;
use crate::sync::{Proxier, SyncKind, SyncOutcome};

/// A proxier that removes kube-proxy's leftovers after its first clean
/// full sync.
#[derive(Debug)]
pub struct TakeOver<P> {
    inner: P,
    pending: Option<CleanupConfig>,
}

impl<P> TakeOver<P> {
    /// Wraps `inner`; `cleanup` is `None` when nothing is to be removed.
    pub fn new(inner: P, cleanup: Option<CleanupConfig>) -> Self {
        TakeOver {
            inner,
            pending: cleanup,
        }
    }
}

/// Logs what the removal found and did.
pub fn log_report(r: &kube_proxy::CleanupReport) {
    if r.is_empty() && r.errors.is_empty() {
        tracing::info!("no kube-proxy iptables chains or ipsets found");
        return;
    }
    let chains: Vec<String> = r.chains.iter().map(ToString::to_string).collect();
    tracing::info!(
        chains = ?chains,
        jumps = r.jumps.len(),
        sets = ?r.sets,
        "removed kube-proxy's iptables chains and ipsets"
    );
    for (c, why) in &r.kept {
        tracing::warn!(chain = %c, reason = %why, "kept a kube-proxy chain");
    }
    for e in &r.errors {
        tracing::warn!(error = %e, "removing kube-proxy's leftovers");
    }
}

impl<P: Proxier> TakeOver<P> {
    async fn sync_then_take_over(&mut self, kind: SyncKind) -> Result<SyncOutcome, Error> {
        let out = self.inner.sync(kind).await;
        if let (Ok(o), SyncKind::Full) = (&out, kind) {
            if o.failed_ops == 0 {
                if let Some(cfg) = self.pending.take() {
                    log_report(&kube_proxy::remove_leftovers(&cfg).await);
                }
            } else if self.pending.is_some() {
                tracing::info!(
                    failed_ops = o.failed_ops,
                    "kube-proxy's iptables rules stay until a full sync succeeds"
                );
            }
        }
        out
    }
}

impl<P: Proxier> Proxier for TakeOver<P> {
    fn apply_change(&mut self, change: Change) {
        self.inner.apply_change(change);
    }

    fn sync(&mut self, kind: SyncKind) -> impl Future<Output = Result<SyncOutcome, Error>> + Send {
        self.sync_then_take_over(kind)
    }
}
