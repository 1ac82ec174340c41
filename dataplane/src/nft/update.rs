//! The table's state in memory and how a plan's [`FilterOp`]s become
//! element changes: typed deltas in, typed deltas out, nothing re-rendered
//! or re-parsed.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use proxy_core::model::FilterFacts;
use proxy_core::plan::FilterOp;

use super::spec::{
    entry_elements, local_cidr_elements, node_port_addr, service_ip, Element, Skeleton,
};

/// What a filter update sent to the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FilterChange {
    /// Nothing: the table already matched.
    #[default]
    Unchanged,
    /// Set and map elements added/deleted in one transaction.
    Elements,
    /// The whole table replaced in one transaction.
    Table,
}

/// Elements to delete and to add, in one transaction (deletes first).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delta {
    /// Elements to delete (sorted).
    pub delete: Vec<Element>,
    /// Elements to add (sorted).
    pub add: Vec<Element>,
}

impl Delta {
    /// True when nothing changes.
    pub fn is_empty(&self) -> bool {
        self.delete.is_empty() && self.add.is_empty()
    }
}

/// What [`FilterState::stage`] found a plan to mean for the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Staged {
    /// The elements change by exactly this.
    Elements(Delta),
    /// The skeleton (or the placement of every element: `masqueradeAll`)
    /// changed: the table must be replaced.
    Table,
}

/// The facts our table holds and, for each element, how many facts need
/// it (a service address is needed by each of its ports and by being bound;
/// counting makes a delete exact: an element goes only when its last user
/// does).
#[derive(Debug, Clone)]
pub struct FilterState {
    masquerade_bit: u32,
    facts: FilterFacts,
    /// Addresses guarded as bound on the dummy interface.
    bound: BTreeSet<IpAddr>,
    /// Users of each element; `None` when elements are not tracked (packet
    /// filter off: facts only).
    counts: Option<HashMap<Element, u32>>,
}

impl FilterState {
    /// An empty table's state, with the addresses bound now; `elements`
    /// false tracks the facts only (nothing is rendered).
    pub fn new(masquerade_bit: u32, bound: BTreeSet<IpAddr>, elements: bool) -> Self {
        let mut s = FilterState {
            masquerade_bit,
            facts: FilterFacts::default(),
            bound,
            counts: elements.then(HashMap::new),
        };
        s.recount();
        s
    }

    /// The facts as last staged.
    pub fn facts(&self) -> &FilterFacts {
        &self.facts
    }

    /// The skeleton's inputs.
    pub fn skeleton(&self) -> Skeleton {
        Skeleton {
            masquerade_bit: self.masquerade_bit,
            local: self.facts.local_detect.clone(),
        }
    }

    /// Every element of the table (unordered).
    pub fn elements(&self) -> impl Iterator<Item = &Element> {
        self.counts.iter().flat_map(|c| c.keys())
    }

    /// Counts every element from the facts: O(entries).
    fn recount(&mut self) {
        let Some(counts) = self.counts.as_mut() else {
            return;
        };
        counts.clear();
        let mut buf = Vec::new();
        for e in &self.facts.entries {
            entry_elements(e, self.facts.masquerade_all, &mut buf);
        }
        buf.extend(self.bound.iter().map(|a| service_ip(*a)));
        buf.extend(
            self.facts
                .node_port_addresses
                .iter()
                .map(|a| node_port_addr(*a)),
        );
        let sk = Skeleton {
            masquerade_bit: self.masquerade_bit,
            local: self.facts.local_detect.clone(),
        };
        buf.extend(local_cidr_elements(&sk));
        for el in buf {
            *counts.entry(el).or_default() += 1;
        }
    }

    /// Applies a plan's filter operations and its address changes (`bind`
    /// before, `unbind` after the filter phase: both are reflected in the
    /// guard) and returns what the table must do. O(changed elements)
    /// unless the skeleton or `masqueradeAll` changes (then O(entries)).
    ///
    /// An `Add` of a present entry or a `Remove` of an absent one changes
    /// nothing (the facts are proxy-core's [`FilterFacts::apply`]).
    pub fn stage(&mut self, ops: &[FilterOp], bind: &[IpAddr], unbind: &[IpAddr]) -> Staged {
        // Element -> whether it was present before this plan.
        let mut touched: HashMap<Element, bool> = HashMap::new();
        let mut table = false;
        let mut buf = Vec::new();
        for op in ops {
            if let FilterOp::SetGlobals {
                local_detect,
                masquerade_all,
                node_port_addresses,
            } = op
            {
                if *local_detect != self.facts.local_detect
                    || *masquerade_all != self.facts.masquerade_all
                {
                    table = true;
                }
                for a in self
                    .facts
                    .node_port_addresses
                    .difference(node_port_addresses)
                {
                    buf.push((node_port_addr(*a), -1));
                }
                for a in node_port_addresses.difference(&self.facts.node_port_addresses) {
                    buf.push((node_port_addr(*a), 1));
                }
            }
            if self.facts.apply(op).is_err() {
                continue;
            }
            if table {
                // Recounted below; nothing else to track.
                continue;
            }
            let mut els = Vec::new();
            match op {
                FilterOp::Add(e) => {
                    entry_elements(e, self.facts.masquerade_all, &mut els);
                    buf.extend(els.into_iter().map(|el| (el, 1)));
                }
                FilterOp::Remove(e) => {
                    entry_elements(e, self.facts.masquerade_all, &mut els);
                    buf.extend(els.into_iter().map(|el| (el, -1)));
                }
                FilterOp::SetGlobals { .. } => {}
            }
            self.bump_all(&mut buf, &mut touched);
        }
        for a in bind {
            if self.bound.insert(*a) {
                buf.push((service_ip(*a), 1));
            }
        }
        for a in unbind {
            if self.bound.remove(a) {
                buf.push((service_ip(*a), -1));
            }
        }
        if table {
            self.recount();
            return Staged::Table;
        }
        self.bump_all(&mut buf, &mut touched);
        let Some(counts) = &self.counts else {
            return Staged::Elements(Delta::default());
        };
        let mut d = Delta::default();
        for (el, before) in touched {
            match (before, counts.contains_key(&el)) {
                (true, false) => d.delete.push(el),
                (false, true) => d.add.push(el),
                _ => {}
            }
        }
        d.delete.sort_unstable();
        d.add.sort_unstable();
        Staged::Elements(d)
    }

    fn bump_all(&mut self, buf: &mut Vec<(Element, i32)>, touched: &mut HashMap<Element, bool>) {
        let Some(counts) = self.counts.as_mut() else {
            buf.clear();
            return;
        };
        for (el, by) in buf.drain(..) {
            let n = counts.get(&el).copied().unwrap_or(0);
            touched.entry(el).or_insert(n > 0);
            if by > 0 {
                counts.insert(el, n + 1);
            } else if n <= 1 {
                counts.remove(&el);
            } else {
                counts.insert(el, n - 1);
            }
        }
    }
}
