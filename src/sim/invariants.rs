//! The safety properties of Raft (§5.2–§5.4, Figure 3), checked as the simulation runs.
//!
//! They are cluster-wide: they hold because every member keeps the protocol. A run with
//! forged messages from members' ids ([`super::hostile`]) breaks that premise on
//! purpose, so there they are off ([`Invariants::local_only`]) and only each node's
//! own guarantees are checked (see `sim::node`).

use std::{
    collections::{BTreeMap, HashMap},
    hash::{BuildHasherDefault, Hash, Hasher},
};

use crate::{
    raft::{Entry, Index, Log, NodeId, Payload, Term},
    replica::Snapshot,
};

/// What the simulator has seen so far, to check each new observation against.
#[derive(Default)]
pub struct Invariants {
    /// The leader of each term.
    leaders: BTreeMap<Term, NodeId>,
    /// For every `index@term` ever stored anywhere: its predecessor's term and its
    /// payload. Raft creates an `index@term` once, so any two copies must agree; by
    /// induction over predecessors that is the Log Matching property.
    entries: FastMap<(Index, Term), (Term, u64)>,
    /// The committed log as applied by the first node to apply each index.
    applied: Vec<(Term, u64)>,
    /// The hash of the first snapshot seen at each index: every replica's snapshot at
    /// that index must have the same bytes.
    snapshots: FastMap<Index, (NodeId, u64)>,
    /// The cluster-wide checks are off: every method accepts everything.
    local_only: bool,
}

/// What one node holds durably, for the durability check.
pub struct DurableLog<'a> {
    pub node: NodeId,
    /// Index of its durable snapshot (0 if none): it holds every entry up to there.
    pub snapshot: Index,
    /// Its durable log entries, consecutive (the first may be after index 1).
    pub entries: &'a [Entry],
}

impl DurableLog<'_> {
    fn holds(&self, index: Index, term: Term, hash: u64) -> bool {
        if index <= self.snapshot {
            return true;
        }
        let Some(first) = self.entries.first() else {
            return false;
        };
        index
            .checked_sub(first.index)
            .and_then(|i| self.entries.get(i as usize))
            .is_some_and(|e| e.term == term && payload_hash(&e.payload) == hash)
    }
}

/// FNV-1a: deterministic and much cheaper than SipHash, which dominated the
/// simulator's profile. A collision could only hide a difference, never report a false
/// one, and payloads here are short distinct strings.
#[derive(Clone, Copy)]
pub struct FastHasher(u64);

impl Default for FastHasher {
    fn default() -> FastHasher {
        FastHasher(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

pub(super) fn payload_hash(p: &Payload) -> u64 {
    let mut h = FastHasher::default();
    p.hash(&mut h);
    h.finish()
}

impl Invariants {
    /// Checks that hold nothing: for runs where members' ids are forged, which may break
    /// every cluster-wide property.
    pub fn local_only() -> Invariants {
        Invariants {
            local_only: true,
            ..Invariants::default()
        }
    }

    /// Whether the cluster-wide checks are off.
    pub fn is_local_only(&self) -> bool {
        self.local_only
    }

    /// Number of entries known to be committed.
    pub fn committed(&self) -> Index {
        self.applied.len() as Index
    }

    /// Election Safety and Leader Completeness, checked when `node` becomes leader.
    pub fn on_leader(&mut self, node: NodeId, term: Term, log: &Log) -> Result<(), String> {
        if self.local_only {
            return Ok(());
        }
        if let Some(&other) = self.leaders.get(&term) {
            if other != node {
                return Err(format!(
                    "election safety: n{other} and n{node} both lead term {term}"
                ));
            }
        }
        self.leaders.insert(term, node);
        for (i, &(t, _)) in self.applied.iter().enumerate() {
            let index = i as Index + 1;
            if index < log.base().index {
                continue; // compacted into a snapshot; the snapshot check covers it
            }
            if log.term(index) != Some(t) {
                return Err(format!(
                    "leader completeness: n{node}, leader of term {term}, lacks committed entry \
                     {index}@{t} (has {:?})",
                    log.term(index)
                ));
            }
        }
        Ok(())
    }

    /// Log Matching, for consecutive entries `node` just stored; `prev_term` is the
    /// term of the entry before the first.
    pub fn on_persist(
        &mut self,
        node: NodeId,
        entries: &[Entry],
        mut prev_term: Term,
    ) -> Result<(), String> {
        if self.local_only {
            return Ok(());
        }
        for e in entries {
            let seen = (prev_term, payload_hash(&e.payload));
            prev_term = e.term;
            match self.entries.get(&(e.index, e.term)) {
                Some(&expected) if expected != seen => {
                    return Err(format!(
                        "log matching: n{node} stored {}@{} with predecessor term {prev_term} and \
                         a different payload/predecessor than another node's copy \
                         (expected predecessor term {})",
                        e.index, e.term, expected.0
                    ))
                }
                Some(_) => {}
                None => {
                    self.entries.insert((e.index, e.term), seen);
                }
            }
        }
        Ok(())
    }

    /// State Machine Safety: no two nodes apply different entries at one index.
    pub fn on_apply(&mut self, node: NodeId, entry: &Entry) -> Result<(), String> {
        if self.local_only {
            return Ok(());
        }
        let seen = (entry.term, payload_hash(&entry.payload));
        let i = entry.index as usize;
        if i <= self.applied.len() {
            if self.applied[i - 1] != seen {
                return Err(format!(
                    "state machine safety: n{node} applied {}@{} but {}@{} was applied before",
                    entry.index,
                    entry.term,
                    entry.index,
                    self.applied[i - 1].0
                ));
            }
        } else if i == self.applied.len() + 1 {
            self.applied.push(seen);
        } else {
            return Err(format!(
                "n{node} applied {} while only {} entries are known committed (gap)",
                entry.index,
                self.applied.len()
            ));
        }
        Ok(())
    }

    /// State Machine Safety for snapshots: two replicas' snapshots at one index are the
    /// same bytes, and a snapshot covers only committed entries.
    pub fn on_snapshot(&mut self, node: NodeId, snapshot: &Snapshot) -> Result<(), String> {
        if self.local_only {
            return Ok(());
        }
        let index = snapshot.meta.index;
        if index > self.applied.len() as Index {
            return Err(format!(
                "n{node} has a snapshot at {index}, past the {} entries known committed",
                self.applied.len()
            ));
        }
        let mut h = FastHasher::default();
        h.write(&snapshot.encode());
        let hash = h.finish();
        match self.snapshots.get(&index) {
            Some(&(other, expected)) if expected != hash => Err(format!(
                "snapshots differ: n{node}'s and n{other}'s at index {index} are not the same bytes"
            )),
            Some(_) => Ok(()),
            None => {
                self.snapshots.insert(index, (node, hash));
                Ok(())
            }
        }
    }

    /// Durability: every committed entry is on the stable storage of a quorum (in its
    /// log or covered by its snapshot), whatever crashed.
    pub fn check_durability(&self, durable_logs: &[DurableLog]) -> Result<(), String> {
        if self.local_only {
            return Ok(());
        }
        let quorum = durable_logs.len() / 2 + 1;
        for (i, &(term, hash)) in self.applied.iter().enumerate() {
            let index = i as Index + 1;
            let holders = durable_logs
                .iter()
                .filter(|d| d.holds(index, term, hash))
                .count();
            if holders < quorum {
                return Err(format!(
                    "durability: committed entry {}@{term} is stored on only {holders} of {} nodes",
                    i + 1,
                    durable_logs.len()
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::Log;

    fn noop(index: Index, term: Term) -> Entry {
        Entry {
            index,
            term,
            payload: Payload::Noop,
        }
    }

    #[test]
    fn two_leaders_in_one_term_are_caught() {
        let mut inv = Invariants::default();
        inv.on_leader(1, 3, &Log::default()).unwrap();
        inv.on_leader(1, 3, &Log::default()).unwrap();
        assert!(inv
            .on_leader(2, 3, &Log::default())
            .unwrap_err()
            .contains("election safety"));
    }

    #[test]
    fn a_leader_missing_a_committed_entry_is_caught() {
        let mut inv = Invariants::default();
        inv.on_apply(1, &noop(1, 1)).unwrap();
        let err = inv.on_leader(2, 2, &Log::default()).unwrap_err();
        assert!(err.contains("leader completeness"), "{err}");
        inv.on_leader(3, 3, &Log::restore(Default::default(), vec![noop(1, 1)]))
            .unwrap();
    }

    #[test]
    fn diverging_copies_of_one_entry_are_caught() {
        let mut inv = Invariants::default();
        let a = vec![noop(1, 1), noop(2, 2)];
        inv.on_persist(1, &a, 0).unwrap();
        let b = [noop(1, 2), noop(2, 2)];
        let err = inv.on_persist(2, &b[1..], b[0].term).unwrap_err();
        assert!(err.contains("log matching"), "{err}");
    }

    #[test]
    fn different_entries_applied_at_one_index_are_caught() {
        let mut inv = Invariants::default();
        inv.on_apply(1, &noop(1, 1)).unwrap();
        assert!(inv
            .on_apply(2, &noop(1, 2))
            .unwrap_err()
            .contains("state machine safety"));
        assert!(inv.on_apply(2, &noop(5, 2)).is_err(), "gaps are caught");
    }

    #[test]
    fn a_committed_entry_on_a_minority_is_caught() {
        let mut inv = Invariants::default();
        inv.on_apply(1, &noop(1, 1)).unwrap();
        let full = [noop(1, 1)];
        let empty: Vec<Entry> = vec![];
        let holds = |node, snapshot, entries| DurableLog {
            node,
            snapshot,
            entries,
        };
        let ok = [
            holds(1, 0, &full[..]),
            holds(2, 0, &full[..]),
            holds(3, 0, &empty[..]),
        ];
        inv.check_durability(&ok).unwrap();
        let bad = [
            holds(1, 0, &full[..]),
            holds(2, 0, &empty[..]),
            holds(3, 0, &empty[..]),
        ];
        assert!(inv
            .check_durability(&bad)
            .unwrap_err()
            .contains("durability"));
        let by_snapshot = [
            holds(1, 1, &empty[..]),
            holds(2, 0, &full[..]),
            holds(3, 0, &empty[..]),
        ];
        inv.check_durability(&by_snapshot).unwrap();
    }

    #[test]
    fn snapshots_that_differ_at_one_index_are_caught() {
        use crate::{kv::Store, raft::SnapshotMeta, replica::Snapshot};
        let mut inv = Invariants::default();
        inv.on_apply(1, &noop(1, 1)).unwrap();
        let snapshot = |members| Snapshot {
            meta: SnapshotMeta { index: 1, term: 1 },
            members,
            store: Store::new(),
        };
        inv.on_snapshot(1, &snapshot(vec![1, 2, 3])).unwrap();
        inv.on_snapshot(2, &snapshot(vec![1, 2, 3])).unwrap();
        let err = inv.on_snapshot(3, &snapshot(vec![1, 2])).unwrap_err();
        assert!(err.contains("snapshots differ"), "{err}");
        let mut ahead = snapshot(vec![1]);
        ahead.meta.index = 2;
        assert!(inv.on_snapshot(1, &ahead).unwrap_err().contains("past"));
    }
}
