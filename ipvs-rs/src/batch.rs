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
/// Only the failures are stored: a restore of 10^5 operations that all
/// succeed keeps no per-operation memory (fresh memory is page faults,
/// which cost more than the encoding in a VM; docs/benchmarks.md).
/// [`BatchReport::result`] answers for any index, [`BatchReport::into_results`]
/// gives the whole list.
///
/// Non-exhaustive (room for per-batch facts such as the number of
/// `sendmsg` calls); built with [`BatchReport::new`] or
/// [`BatchReport::from_failures`], e.g. by a fake kernel in tests.
#[derive(Debug)]
#[non_exhaustive]
pub struct BatchReport {
    len: usize,
    /// `(index, error)`, by increasing index, each index at most once.
    failures: Vec<(usize, Error)>,
}

impl BatchReport {
    /// A report of these results (`results[i]` for `ops[i]`).
    pub fn new(results: Vec<Result<(), Error>>) -> Self {
        let len = results.len();
        let failures = results
            .into_iter()
            .enumerate()
            .filter_map(|(i, r)| r.err().map(|e| (i, e)))
            .collect();
        BatchReport { len, failures }
    }

    /// A report of `len` operations where those in `failures`
    /// (`(index, error)`) failed and all others succeeded. Indices at or
    /// past `len` are ignored; for an index given twice, the last error is
    /// kept.
    pub fn from_failures(len: usize, mut failures: Vec<(usize, Error)>) -> Self {
        failures.retain(|(i, _)| *i < len);
        // Stable: of two errors for one index, the later stays last.
        failures.sort_by_key(|(i, _)| *i);
        let mut kept: Vec<(usize, Error)> = Vec::with_capacity(failures.len());
        for f in failures {
            match kept.last_mut() {
                Some(last) if last.0 == f.0 => *last = f,
                _ => kept.push(f),
            }
        }
        BatchReport {
            len,
            failures: kept,
        }
    }

    /// The number of operations the report is about.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for a report about no operation.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True when every operation succeeded.
    pub fn is_ok(&self) -> bool {
        self.failures.is_empty()
    }

    /// The outcome of operation `index`, `None` past the end.
    pub fn result(&self, index: usize) -> Option<Result<(), &Error>> {
        if index >= self.len {
            return None;
        }
        Some(
            match self.failures.binary_search_by_key(&index, |(i, _)| *i) {
                Ok(at) => Err(&self.failures[at].1),
                Err(_) => Ok(()),
            },
        )
    }

    /// The failed operations: `(index, error)`, by increasing index.
    pub fn failures(&self) -> impl Iterator<Item = (usize, &Error)> {
        self.failures.iter().map(|(i, e)| (*i, e))
    }

    /// Every outcome, `results[i]` for `ops[i]`.
    pub fn into_results(self) -> Vec<Result<(), Error>> {
        let mut out: Vec<Result<(), Error>> = (0..self.len).map(|_| Ok(())).collect();
        for (i, e) in self.failures {
            out[i] = Err(e);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(n: &str) -> Error {
        Error::InvalidArgument(n.to_owned())
    }

    #[test]
    fn report_keeps_failures_in_order_and_answers_every_index() {
        let r = BatchReport::from_failures(
            6,
            vec![
                (4, err("a")),
                (1, err("b")),
                (4, err("c")),
                (9, err("past the end")),
            ],
        );
        assert_eq!(r.len(), 6);
        assert!(!r.is_ok());
        let f: Vec<(usize, String)> = r.failures().map(|(i, e)| (i, e.to_string())).collect();
        assert_eq!(
            f,
            vec![
                (1, "invalid argument: b".to_owned()),
                (4, "invalid argument: c".to_owned())
            ]
        );
        assert!(matches!(r.result(0), Some(Ok(()))));
        assert!(matches!(r.result(1), Some(Err(_))));
        assert!(r.result(6).is_none());
        let all = r.into_results();
        assert_eq!(all.len(), 6);
        assert_eq!(all.iter().filter(|x| x.is_err()).count(), 2);
        assert!(all[4].is_err() && all[5].is_ok());
    }

    #[test]
    fn new_and_into_results_round_trip() {
        let r = BatchReport::new(vec![Ok(()), Err(err("x")), Ok(())]);
        assert_eq!(r.failures().map(|(i, _)| i).collect::<Vec<_>>(), vec![1]);
        let back = r.into_results();
        assert!(back[0].is_ok() && back[1].is_err() && back[2].is_ok());
        assert!(BatchReport::new(Vec::new()).is_empty());
    }
}
