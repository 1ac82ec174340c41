//! Claims of several Services on one key (a virtual server, a health-check
//! node port): the smallest rank wins, the others are rejected.

use super::HashMap;
use crate::parse::Rank;

/// Claims of several Services on one key; the smallest rank wins. Almost
/// every key has one claimant, held in place (no allocation); the others,
/// if any, in a sorted vector.
#[derive(Debug)]
pub(super) struct Claims<K, V> {
    pub(super) by_key: HashMap<K, Claimants<V>>,
}

/// The claimants of one key, by rank: `head` has the smallest.
#[derive(Debug)]
pub(super) struct Claimants<V> {
    head: (Rank, V),
    tail: Vec<(Rank, V)>,
}

impl<V> Claimants<V> {
    /// Sets (or with `None` withdraws) `rank`'s claim; `true` when no
    /// claimant is left.
    fn set(&mut self, rank: &Rank, v: Option<V>) -> bool {
        if *rank == self.head.0 {
            match v {
                Some(v) => self.head.1 = v,
                None if self.tail.is_empty() => return true,
                None => self.head = self.tail.remove(0),
            }
        } else if *rank < self.head.0 {
            if let Some(v) = v {
                let old = std::mem::replace(&mut self.head, (rank.clone(), v));
                self.tail.insert(0, old);
            }
        } else {
            match (v, self.tail.binary_search_by(|(r, _)| r.cmp(rank))) {
                (Some(v), Ok(i)) => self.tail[i].1 = v,
                (Some(v), Err(i)) => self.tail.insert(i, (rank.clone(), v)),
                (None, Ok(i)) => {
                    self.tail.remove(i);
                }
                (None, Err(_)) => {}
            }
        }
        false
    }
}

impl<K, V> Default for Claims<K, V> {
    fn default() -> Self {
        Claims {
            by_key: HashMap::default(),
        }
    }
}

impl<K: std::hash::Hash + Eq + Copy, V: Clone + PartialEq> Claims<K, V> {
    /// Sets (or with `None` withdraws) `rank`'s claim on `k`; returns the
    /// winner before and after when it changed.
    #[allow(clippy::type_complexity)]
    pub(super) fn set(
        &mut self,
        k: K,
        rank: &Rank,
        v: Option<V>,
    ) -> Option<(Option<V>, Option<V>)> {
        use std::collections::hash_map::Entry;
        match self.by_key.entry(k) {
            Entry::Vacant(e) => {
                let v = v?;
                e.insert(Claimants {
                    head: (rank.clone(), v.clone()),
                    tail: Vec::new(),
                });
                Some((None, Some(v)))
            }
            Entry::Occupied(mut e) => {
                let before = e.get().head.1.clone();
                let after = if e.get_mut().set(rank, v) {
                    e.remove();
                    None
                } else {
                    Some(e.get().head.1.clone())
                };
                (Some(&before) != after.as_ref()).then_some((Some(before), after))
            }
        }
    }

    /// The winner's claim on each key.
    pub(super) fn winners(&self) -> impl Iterator<Item = (&K, &V)> {
        self.by_key.iter().map(|(k, c)| (k, &c.head.1))
    }

    pub(super) fn losers(&self) -> impl Iterator<Item = (&K, &Rank, &Rank)> {
        self.by_key
            .iter()
            .flat_map(|(k, c)| c.tail.iter().map(move |(r, _)| (k, r, &c.head.0)))
    }
}
