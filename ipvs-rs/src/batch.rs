//! Batched changes: many operations, one report.

use crate::error::Error;
use crate::types::{RealServer, RealServerKey, ServiceKey, Timeouts, VirtualServer};

/// One change to apply in a batch ([`crate::Handle::apply`]). Each maps to one
/// ipvsadm command.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Op {
    /// `ipvsadm -A`.
    AddService(VirtualServer),
    /// `ipvsadm -E`.
    EditService(VirtualServer),
    /// `ipvsadm -D`.
    DeleteService(ServiceKey),
    /// `ipvsadm -a`.
    AddRealServer(ServiceKey, RealServer),
    /// `ipvsadm -e`.
    EditRealServer(ServiceKey, RealServer),
    /// `ipvsadm -d`.
    DeleteRealServer(ServiceKey, RealServerKey),
    /// `ipvsadm -C`.
    Flush,
    /// `ipvsadm -Z [service]`.
    Zero(Option<ServiceKey>),
    /// `ipvsadm --set`.
    SetTimeouts(Timeouts),
}

/// The outcome of a batch: one result per operation, in order.
///
/// Non-exhaustive (room for per-batch facts such as the number of
/// `sendmsg` calls); built with [`BatchReport::new`], e.g. by a fake
/// kernel in tests.
#[derive(Debug)]
#[non_exhaustive]
pub struct BatchReport {
    /// `results[i]` is the outcome of `ops[i]`.
    pub results: Vec<Result<(), Error>>,
}

impl BatchReport {
    /// A report of these results (`results[i]` for `ops[i]`).
    pub fn new(results: Vec<Result<(), Error>>) -> Self {
        BatchReport { results }
    }

    /// True when every operation succeeded.
    pub fn is_ok(&self) -> bool {
        self.results.iter().all(Result::is_ok)
    }

    /// The failed operations: `(index, error)`.
    pub fn failures(&self) -> impl Iterator<Item = (usize, &Error)> {
        self.results
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.as_ref().err().map(|e| (i, e)))
    }
}
