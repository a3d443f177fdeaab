//! The headroom table's per-node states ([`NodeState`]: one reading per signal in [`SIGNALS`]),
//! looked up by name on every request for every candidate.
//!
//! A `HashMap<String, NodeState>` kept each ~200-byte state next to its key: 5 000 of them are a
//! megabyte, past a core's L2, and half of a decision's time was the first read of the entry
//! (`perf annotate`, 5 000-name prioritize). Here the lookup touches only small, dense arrays
//! (an index of `u32`s and the names in one buffer), so a request resolves every candidate
//! first and then reads the states with a prefetch a few candidates ahead.

use foldhash::fast::RandomState;
use hashbrown::HashTable;
use std::hash::BuildHasher;

use edgewatt_crds::{prom::Reading, promql::Signal};

use crate::{nodes::NodeFacts, protocol::NodeNames};

/// Signals the refresher reads for every node.
pub const SIGNALS: [Signal; 6] = Signal::ALL;

/// Position of `signal` in [`NodeState::readings`].
pub fn signal_index(signal: Signal) -> usize {
    SIGNALS
        .iter()
        .position(|s| *s == signal)
        .expect("SIGNALS is Signal::ALL")
}

/// What the extender knows about one node, with sample ages as of the table's fetch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeState {
    /// Indexed by [`signal_index`]: a fixed array, since every request looks up six signals for
    /// each of up to thousands of nodes (a hash map per node cost ~1 ms per 5 000-node request).
    pub readings: [Option<Reading>; SIGNALS.len()],
    /// The controller marked it starved (`edgewatt_target_starved{kind="Node"} == 1`).
    pub starved: bool,
    /// The Node view's facts for it when the table was published (see
    /// [`crate::headroom::HeadroomTable::join`]).
    pub facts: Option<NodeFacts>,
}

#[derive(Debug, Clone, Default)]
pub struct NodeTable {
    /// Name `i` is the name of `states[i]`.
    names: NodeNames,
    states: Vec<NodeState>,
    /// Indexes into `states`, hashed by name.
    index: HashTable<u32>,
    hasher: RandomState,
}

impl PartialEq for NodeTable {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().all(|(n, s)| other.get(n) == Some(s))
    }
}

impl NodeTable {
    pub fn len(&self) -> usize {
        self.states.len()
    }

    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    /// Where `name`'s state is, if the table has one.
    pub fn find(&self, name: &str) -> Option<usize> {
        let hash = self.hasher.hash_one(name);
        self.index
            .find(hash, |&i| self.names.get(i as usize) == Some(name))
            .map(|&i| i as usize)
    }

    pub fn get(&self, name: &str) -> Option<&NodeState> {
        self.find(name).map(|i| &self.states[i])
    }

    pub fn state(&self, i: usize) -> &NodeState {
        &self.states[i]
    }

    /// Asks the CPU to start loading state `i` (a hint: no effect on results).
    #[inline(always)]
    pub fn prefetch(&self, i: usize) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a prefetch never faults and reads nothing into the program.
        unsafe {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            _mm_prefetch::<_MM_HINT_T0>((&self.states[i] as *const NodeState).cast());
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = i;
    }

    /// `name`'s state, a default one added first if it has none.
    pub fn entry(&mut self, name: &str) -> &mut NodeState {
        let i = match self.find(name) {
            Some(i) => i,
            None => self.push(name, NodeState::default()),
        };
        &mut self.states[i]
    }

    fn push(&mut self, name: &str, state: NodeState) -> usize {
        let i = self.states.len();
        self.names.push(name);
        self.states.push(state);
        let (index, names, hasher) = (&mut self.index, &self.names, &self.hasher);
        index.insert_unique(hasher.hash_one(name), i as u32, |&j| {
            hasher.hash_one(names.get(j as usize).unwrap_or_default())
        });
        i
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &NodeState)> {
        self.names.iter().zip(&self.states)
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&str, &mut NodeState)> {
        self.names.iter().zip(&mut self.states)
    }

    pub fn values(&self) -> impl Iterator<Item = &NodeState> {
        self.states.iter()
    }
}

impl FromIterator<(String, NodeState)> for NodeTable {
    /// A name given twice keeps its last state, as a map would.
    fn from_iter<I: IntoIterator<Item = (String, NodeState)>>(pairs: I) -> Self {
        let mut t = Self::default();
        for (name, state) in pairs {
            *t.entry(&name) = state;
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_name_and_only_those() {
        let mut t: NodeTable = (0..5000)
            .map(|i| {
                let s = NodeState {
                    starved: i % 3 == 0,
                    ..Default::default()
                };
                (format!("node-{i:05}"), s)
            })
            .collect();
        assert_eq!(t.len(), 5000);
        for i in 0..5000 {
            let s = t.get(&format!("node-{i:05}")).expect("present");
            assert_eq!(s.starved, i % 3 == 0);
        }
        assert!(
            t.get("node-5000").is_none() && t.get("").is_none() && t.get("node-0000").is_none()
        );
        // A prefix of a stored name is not that name (names share one buffer).
        t.entry("ab").starved = true;
        assert!(t.get("a").is_none() && t.get("abc").is_none() && t.get("ab").unwrap().starved);
        assert!(t.get("node-00003").unwrap().starved);
        t.entry("node-00003").starved = false;
        assert!(!t.get("node-00003").unwrap().starved && t.len() == 5001);
        let names: Vec<&str> = t.iter().map(|(n, _)| n).take(2).collect();
        assert_eq!(names, ["node-00000", "node-00001"]);
    }
}
