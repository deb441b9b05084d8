//! The in-memory Raft log, and which part of it is already on stable storage.

use super::{Entry, Index, Term};

/// The log of one node.
///
/// Invariants:
/// - `entries[i]` has index `i + 1`; terms never decrease along the log.
/// - `stable <= last_index()`: entries up to `stable` are known to be durable.
/// - `unstable_from <= last_index() + 1`: entries from `unstable_from` on have not yet been
///   handed to the caller for persistence (and anything stored at those indexes is stale).
#[derive(Clone, Debug, Default)]
pub struct Log {
    entries: Vec<Entry>,
    stable: Index,
    unstable_from: Index,
}

impl Log {
    /// A log restored from stable storage: all of it is durable.
    pub fn restore(entries: Vec<Entry>) -> Log {
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(
                e.index,
                i as Index + 1,
                "restored log must be consecutive from 1"
            );
        }
        let last = entries.len() as Index;
        Log {
            entries,
            stable: last,
            unstable_from: last + 1,
        }
    }

    pub fn last_index(&self) -> Index {
        self.entries.len() as Index
    }

    pub fn last_term(&self) -> Term {
        self.entries.last().map_or(0, |e| e.term)
    }

    /// Term of the entry at `index`; index 0 (the empty prefix) has term 0.
    pub fn term(&self, index: Index) -> Option<Term> {
        if index == 0 {
            return Some(0);
        }
        self.entries.get(index as usize - 1).map(|e| e.term)
    }

    pub fn get(&self, index: Index) -> Option<&Entry> {
        if index == 0 {
            return None;
        }
        self.entries.get(index as usize - 1)
    }

    /// Index of the last durable entry.
    pub fn stable(&self) -> Index {
        self.stable
    }

    /// Entries `from..=to` (clamped to the log), stopping early once `max_bytes` is
    /// exceeded, but always at least one entry if any is in range.
    pub fn slice(&self, from: Index, to: Index, max_bytes: usize) -> Vec<Entry> {
        let to = to.min(self.last_index());
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut i = from.max(1);
        while i <= to {
            let e = &self.entries[i as usize - 1];
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

    /// Removes every entry at `index` and after (a conflicting suffix, §5.3).
    pub fn truncate_from(&mut self, index: Index) {
        assert!(index >= 1);
        self.entries.truncate(index as usize - 1);
        self.stable = self.stable.min(index - 1);
        self.unstable_from = self.unstable_from.min(index);
    }

    /// Hands out the entries not yet given to the caller for persistence.
    pub fn take_unstable(&mut self) -> Vec<Entry> {
        let from = self.unstable_from.max(1);
        let out = self.entries[from as usize - 1..].to_vec();
        self.unstable_from = self.last_index() + 1;
        out
    }

    /// The caller made everything up to `index@term` durable.
    pub fn mark_stable(&mut self, index: Index, term: Term) {
        if index > self.stable && index < self.unstable_from && self.term(index) == Some(term) {
            self.stable = index;
        }
    }

    /// First index holding `term` (terms are sorted, so a binary search finds it).
    pub fn first_index_of_term(&self, term: Term) -> Option<Index> {
        let i = self.entries.partition_point(|e| e.term < term);
        (self.entries.get(i)?.term == term).then_some(i as Index + 1)
    }

    /// Last index holding `term`.
    pub fn last_index_of_term(&self, term: Term) -> Option<Index> {
        let i = self.entries.partition_point(|e| e.term <= term);
        (i > 0 && self.entries[i - 1].term == term).then_some(i as Index)
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
        Log::restore(noop_entries(terms))
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
    fn slice_respects_byte_budget_but_returns_one_entry() {
        let log = log_of(&[1, 1, 1, 1]);
        assert_eq!(log.slice(1, 4, 0).len(), 1);
        assert_eq!(log.slice(2, 10, usize::MAX).len(), 3);
    }
}
