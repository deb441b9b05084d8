//! The in-memory Raft log, which part of it is already on stable storage, and where it
//! begins once a snapshot has replaced its prefix (§7).

use super::{Entry, Index, SnapshotMeta, Term};

/// The log of one node.
///
/// Invariants:
/// - the log holds the entries `first_index()..=last_index()`; everything up to and
///   including `base` was compacted into a snapshot, and `base`'s term is still known
///   (it is the snapshot's, and answers the consistency check of the next append);
/// - `entries[i]` has index `base.index + 1 + i`; terms never decrease along the log;
/// - `stable <= last_index()`: entries up to `stable` are known to be durable;
/// - `unstable_from <= last_index() + 1`: entries from `unstable_from` on have not yet been
///   handed to the caller for persistence (and anything stored at those indexes is stale).
#[derive(Clone, Debug, Default)]
pub struct Log {
    /// The last compacted position; index 0 (term 0) when nothing was compacted.
    base: SnapshotMeta,
    entries: Vec<Entry>,
    stable: Index,
    unstable_from: Index,
}

impl Log {
    /// A log restored from stable storage: entries after `base`, all durable.
    pub fn restore(base: SnapshotMeta, entries: Vec<Entry>) -> Log {
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(
                e.index,
                base.index + 1 + i as Index,
                "restored log must be consecutive from its base"
            );
        }
        let last = base.index + entries.len() as Index;
        Log {
            base,
            entries,
            stable: last,
            unstable_from: last + 1,
        }
    }

    /// The last compacted position (the snapshot the log starts after).
    pub fn base(&self) -> SnapshotMeta {
        self.base
    }

    /// The first index the log holds (or would hold: it may be empty).
    pub fn first_index(&self) -> Index {
        self.base.index + 1
    }

    pub fn last_index(&self) -> Index {
        self.base.index + self.entries.len() as Index
    }

    pub fn last_term(&self) -> Term {
        self.entries.last().map_or(self.base.term, |e| e.term)
    }

    /// Position of `index` in `entries`, if the log holds it.
    fn offset(&self, index: Index) -> Option<usize> {
        let i = index.checked_sub(self.first_index())?;
        (i < self.entries.len() as Index).then_some(i as usize)
    }

    /// Term of the entry at `index`: known for the base and every entry held, `None`
    /// for compacted indexes and those past the end.
    pub fn term(&self, index: Index) -> Option<Term> {
        if index == self.base.index {
            return Some(self.base.term);
        }
        self.offset(index).map(|i| self.entries[i].term)
    }

    pub fn get(&self, index: Index) -> Option<&Entry> {
        self.offset(index).map(|i| &self.entries[i])
    }

    /// Index of the last durable entry.
    pub fn stable(&self) -> Index {
        self.stable
    }

    /// Entries `from..=to` (clamped to what the log holds), stopping early once
    /// `max_bytes` is exceeded, but always at least one entry if any is in range.
    pub fn slice(&self, from: Index, to: Index, max_bytes: usize) -> Vec<Entry> {
        let to = to.min(self.last_index());
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut i = from.max(self.first_index());
        while i <= to {
            let e = &self.entries[(i - self.first_index()) as usize];
            bytes += e.approx_size();
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(e.clone());
            i += 1;
        }
        out
    }

    pub fn append(&mut self, entry: Entry) {
        assert_eq!(
            entry.index,
            self.last_index() + 1,
            "log entries must be consecutive"
        );
        assert!(
            entry.term >= self.last_term(),
            "terms never decrease along the log"
        );
        self.entries.push(entry);
    }

    /// Removes every entry at `index` and after (a conflicting suffix, §5.3). Compacted
    /// entries are committed and can never conflict.
    pub fn truncate_from(&mut self, index: Index) {
        assert!(
            index > self.base.index,
            "compacted entries are never truncated"
        );
        self.entries.truncate((index - self.first_index()) as usize);
        self.stable = self.stable.min(index - 1);
        self.unstable_from = self.unstable_from.min(index);
    }

    /// Removes the entries up to and including `upto`, which a durable snapshot covers,
    /// and returns them. They must be durable themselves (the caller compacts only
    /// applied entries). Freeing a large prefix takes a while, so the caller may drop
    /// the returned entries elsewhere; only the entries kept are moved here.
    pub fn compact(&mut self, upto: Index) -> Vec<Entry> {
        if upto <= self.base.index {
            return Vec::new();
        }
        assert!(upto <= self.stable, "only durable entries are compacted");
        let term = self.term(upto).expect("a held entry");
        let kept = self.entries.split_off((upto - self.base.index) as usize);
        self.base = SnapshotMeta { index: upto, term };
        std::mem::replace(&mut self.entries, kept)
    }

    /// Replaces the whole log by a snapshot's position: a follower installed a snapshot
    /// its log does not contain. The caller makes the snapshot durable before it acts on
    /// it, so the new base counts as stable.
    pub fn reset(&mut self, snapshot: SnapshotMeta) {
        self.entries.clear();
        self.base = snapshot;
        self.stable = snapshot.index;
        self.unstable_from = snapshot.index + 1;
    }

    /// Hands out the entries not yet given to the caller for persistence.
    pub fn take_unstable(&mut self) -> Vec<Entry> {
        let from = self.unstable_from.max(self.first_index());
        let out = self.entries[(from - self.first_index()) as usize..].to_vec();
        self.unstable_from = self.last_index() + 1;
        out
    }

    /// The caller made everything up to `index@term` durable.
    pub fn mark_stable(&mut self, index: Index, term: Term) {
        if index > self.stable && index < self.unstable_from && self.term(index) == Some(term) {
            self.stable = index;
        }
    }

    /// First index holding `term` among the entries held (terms are sorted, so a
    /// binary search finds it).
    pub fn first_index_of_term(&self, term: Term) -> Option<Index> {
        let i = self.entries.partition_point(|e| e.term < term);
        (self.entries.get(i)?.term == term).then_some(self.first_index() + i as Index)
    }

    /// Last index holding `term` among the entries held, or the base if it has it.
    pub fn last_index_of_term(&self, term: Term) -> Option<Index> {
        let i = self.entries.partition_point(|e| e.term <= term);
        if i > 0 && self.entries[i - 1].term == term {
            Some(self.base.index + i as Index)
        } else {
            (i == 0 && self.base.term == term && self.base.index > 0).then_some(self.base.index)
        }
    }

    /// Is a log ending at `last_index@last_term` at least as up-to-date as ours (§5.4.1)?
    pub fn is_up_to_date(&self, last_index: Index, last_term: Term) -> bool {
        last_term > self.last_term()
            || (last_term == self.last_term() && last_index >= self.last_index())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::raft::Payload;

    /// No-op entries 1, 2, … with the given terms: a log shape for tests.
    pub(crate) fn noop_entries(terms: &[Term]) -> Vec<Entry> {
        terms
            .iter()
            .enumerate()
            .map(|(i, &t)| Entry {
                index: i as Index + 1,
                term: t,
                payload: Payload::Noop,
            })
            .collect()
    }

    fn log_of(terms: &[Term]) -> Log {
        Log::restore(SnapshotMeta::default(), noop_entries(terms))
    }

    #[test]
    fn term_lookups_use_sorted_terms() {
        let log = log_of(&[1, 1, 2, 2, 2, 5]);
        assert_eq!(log.first_index_of_term(2), Some(3));
        assert_eq!(log.last_index_of_term(2), Some(5));
        assert_eq!(log.first_index_of_term(3), None);
        assert_eq!(log.last_index_of_term(4), None);
        assert_eq!(log.last_index_of_term(5), Some(6));
        assert_eq!(log.term(0), Some(0));
        assert_eq!(log.term(7), None);
    }

    #[test]
    fn truncation_lowers_stable_and_unstable_marks() {
        let mut log = log_of(&[1, 1, 1]);
        assert_eq!(log.stable(), 3);
        log.truncate_from(2);
        assert_eq!(log.stable(), 1);
        log.append(Entry {
            index: 2,
            term: 2,
            payload: Payload::Noop,
        });
        let unstable = log.take_unstable();
        assert_eq!(unstable.len(), 1);
        assert_eq!(unstable[0].index, 2);
        log.mark_stable(2, 2);
        assert_eq!(log.stable(), 2);
    }

    #[test]
    fn up_to_date_compares_last_term_then_length() {
        let log = log_of(&[1, 2, 2]);
        assert!(log.is_up_to_date(3, 2));
        assert!(log.is_up_to_date(1, 3));
        assert!(!log.is_up_to_date(2, 2));
        assert!(!log.is_up_to_date(9, 1));
    }

    #[test]
    fn a_compacted_log_answers_for_its_base_and_what_it_holds() {
        let mut log = log_of(&[1, 1, 2, 2, 3]);
        log.compact(3);
        assert_eq!((log.first_index(), log.last_index()), (4, 5));
        assert_eq!(log.term(3), Some(2), "the base's term stays known");
        assert_eq!(log.term(2), None, "compacted");
        assert!(log.get(3).is_none());
        assert_eq!(log.get(4).map(|e| e.term), Some(2));
        assert_eq!(log.slice(1, 9, usize::MAX).len(), 2);
        assert_eq!(log.last_index_of_term(2), Some(4));
        assert_eq!(log.first_index_of_term(2), Some(4));
        log.compact(5);
        assert_eq!((log.last_index(), log.last_term()), (5, 3));
        assert_eq!(log.last_index_of_term(3), Some(5), "the base has that term");
        log.append(Entry {
            index: 6,
            term: 3,
            payload: Payload::Noop,
        });
        log.truncate_from(6);
        assert_eq!(log.last_index(), 5);
    }

    #[test]
    fn reset_replaces_the_log_by_a_snapshot_position() {
        let mut log = log_of(&[1, 1]);
        log.reset(SnapshotMeta { index: 9, term: 4 });
        assert_eq!(
            (log.first_index(), log.last_index(), log.last_term()),
            (10, 9, 4)
        );
        assert_eq!(log.stable(), 9);
        assert!(log.take_unstable().is_empty());
        assert!(log.is_up_to_date(9, 4) && !log.is_up_to_date(8, 4));
    }

    #[test]
    fn slice_respects_byte_budget_but_returns_one_entry() {
        let log = log_of(&[1, 1, 1, 1]);
        assert_eq!(log.slice(1, 4, 0).len(), 1);
        assert_eq!(log.slice(2, 10, usize::MAX).len(), 3);
    }
}
