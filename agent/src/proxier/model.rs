//! [`ModelKernel`], the in-memory [`Kernel`].

use std::future::Future;

use ipvs::ServiceKey;
use proxy_core::{Observed, ObservedVirtualServer, Plan};

use super::{op_label, Applied, FailedOp, Kernel};
use crate::error::Error;

/// An in-memory kernel: applies plans to a [`proxy_core::Observed`] model.
/// For tests, dry runs and benchmarks of the agent without a kernel.
#[derive(Debug, Default, Clone)]
pub struct ModelKernel {
    /// The modelled node.
    pub node: Observed,
    /// Operations to refuse: (op label, the kernel's errno), consumed once
    /// each.
    pub refuse: Vec<(&'static str, i32)>,
    /// Number of `observe` calls (full dumps).
    pub dumps: usize,
}

impl Kernel for ModelKernel {
    fn observe(&mut self) -> impl Future<Output = Result<Observed, Error>> + Send {
        self.dumps += 1;
        let o = self.node.clone();
        async move { Ok(o) }
    }

    fn apply(&mut self, plan: &Plan) -> impl Future<Output = Applied> + Send {
        let mut failed = Vec::new();
        // A copy of the plan only when some operation is to be refused: the
        // first full sync's plan is as large as the whole state.
        let mut accepted = None;
        if !self.refuse.is_empty() {
            let accepted = accepted.insert(plan.clone());
            accepted.ipvs.clear();
            for op in &plan.ipvs {
                let label = op_label(op);
                if let Some(i) = self.refuse.iter().position(|(l, _)| *l == label) {
                    let (_, errno) = self.refuse.remove(i);
                    failed.push(FailedOp {
                        op: label,
                        detail: format!("{op:?}"),
                        error: Error::Ipvs(ipvs::Error::Kernel {
                            op: label.replace('_', " "),
                            errno,
                            message: std::io::Error::from_raw_os_error(errno).to_string(),
                        }),
                    });
                } else {
                    accepted.ipvs.push(op.clone());
                }
            }
        }
        if let Err(e) = self.node.apply(accepted.as_ref().unwrap_or(plan)) {
            failed.push(FailedOp {
                op: "model",
                detail: "plan".into(),
                error: Error::Model(e),
            });
        }
        async move {
            Applied {
                failed,
                ..Applied::default()
            }
        }
    }

    fn refresh(
        &mut self,
        keys: &[ServiceKey],
    ) -> impl Future<Output = Result<Vec<ObservedVirtualServer>, Error>> + Send {
        let out: Vec<ObservedVirtualServer> = keys
            .iter()
            .filter_map(|k| self.node.virtual_servers.get(k).cloned())
            .collect();
        async move { Ok(out) }
    }
}
