//! The real [`Kernel`]: the `dataplane` crate (IPVS through ipvs-rs, the
//! dummy interface, our nftables table).

use std::future::Future;

use dataplane::Dataplane;
use ipvs::ServiceKey;
use proxy_core::{Observed, ObservedVirtualServer, Plan};

use crate::proxier::{op_label, FailedOp, Kernel};

/// The node's kernel, through the dataplane.
#[derive(Debug)]
pub struct DataplaneKernel {
    dp: Dataplane,
}

impl DataplaneKernel {
    /// Wraps a dataplane (already set up).
    pub fn new(dp: Dataplane) -> Self {
        Self { dp }
    }

    /// The dataplane.
    pub fn dataplane(&mut self) -> &mut Dataplane {
        &mut self.dp
    }
}

fn failed(op: &'static str, kind: &str, detail: impl std::fmt::Display) -> FailedOp {
    FailedOp {
        op,
        kind: kind.to_string(),
        detail: detail.to_string(),
    }
}

impl Kernel for DataplaneKernel {
    async fn observe(&mut self) -> Result<Observed, String> {
        self.dp.observe().await.map_err(|e| e.to_string())
    }

    async fn apply(&mut self, plan: &Plan) -> Vec<FailedOp> {
        {
            match self.dp.apply(plan).await {
                Err(e) => vec![failed("apply", "unavailable", e)],
                Ok(report) => {
                    let mut out = Vec::new();
                    for (a, e) in &report.bind_failures {
                        out.push(failed("bind_address", "refused", format!("{a}: {e}")));
                    }
                    for (op, e) in &report.ipvs_failures {
                        out.push(failed(op_label(op), e.kind_label(), format!("{op:?}: {e}")));
                    }
                    if let Some(e) = &report.filter_failure {
                        out.push(failed("replace_filter", "refused", e));
                    }
                    if report.filter_failure.is_some() {
                        // The table is in an unknown state: rewrite it next time.
                        self.dp.forget_filter();
                    }
                    for (a, e) in &report.unbind_failures {
                        out.push(failed("unbind_address", "refused", format!("{a}: {e}")));
                    }
                    out
                }
            }
        }
    }

    fn refresh(
        &mut self,
        keys: &[ServiceKey],
    ) -> impl Future<Output = Result<Vec<ObservedVirtualServer>, String>> + Send {
        let keys = keys.to_vec();
        async move {
            let mut out = Vec::with_capacity(keys.len());
            for k in keys {
                let server = match self.dp.ipvs().service(&k).await {
                    Ok(s) => s,
                    Err(e) if e.is_not_found() => continue,
                    Err(e) => return Err(e.to_string()),
                };
                let rs = match self.dp.ipvs().real_servers(&k).await {
                    Ok(r) => r,
                    Err(e) if e.is_not_found() => continue,
                    Err(e) => return Err(e.to_string()),
                };
                out.push(ObservedVirtualServer {
                    server,
                    real_servers: rs.into_iter().map(|r| (r.key, r)).collect(),
                });
            }
            Ok(out)
        }
    }
}
