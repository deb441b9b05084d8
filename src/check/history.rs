//! One key's history, prepared for the search (see "The search" and "Making it fast" in
//! the essay of `check/mod.rs`).
//!
//! [`KeyHistory::new`] takes the key's operations from the caller's history, leaves out
//! those that cannot matter (reads with unknown outcome, and unknown-outcome writes no
//! read could have observed), and builds what the search walks and updates: the
//! operations as [`Step`]s with their deadlines, effect classes and Zobrist keys, the
//! doubly-linked list of call and return events ([`Links`]), and the index of the values
//! completed reads returned ([`ReadIndex`]). [`KeyHistory::verify`] replays a
//! linearization the search found against the plain model, so that a bug in the search
//! can fail a good history but never pass a bad one.

use std::collections::{HashMap, HashSet};

use super::fingerprint;
use super::model::{KvOp, Operation, Step, Value};

/// The distinct present values returned by completed reads, sorted, with a Fenwick tree of
/// how many reads of each are not linearized yet. Values with a given prefix are
/// contiguous in byte order, so "does a remaining read start with `s`" is two binary
/// searches and a range sum.
#[derive(Clone)]
pub(super) struct ReadIndex<'h> {
    /// The distinct values, sorted.
    values: Vec<&'h str>,
    /// The Fenwick tree of pending-read counts per slot, 1-based (`tree[0]` is unused).
    tree: Vec<i64>,
}

impl<'h> ReadIndex<'h> {
    /// An index of `values`, with no read pending yet.
    fn new(mut values: Vec<&'h str>) -> ReadIndex<'h> {
        values.sort_unstable();
        values.dedup();
        let tree = vec![0; values.len() + 1];
        ReadIndex { values, tree }
    }

    /// The slot of `value`, if some read returned it.
    fn slot(&self, value: &str) -> Option<usize> {
        self.values.binary_search(&value).ok()
    }

    /// Adds `delta` to the count of pending reads in `slot`.
    pub(super) fn add(&mut self, slot: usize, delta: i64) {
        let mut i = slot + 1;
        while i < self.tree.len() {
            self.tree[i] += delta;
            i += i & i.wrapping_neg();
        }
    }

    /// Pending reads in slots `0..end`.
    fn sum(&self, end: usize) -> i64 {
        let (mut i, mut total) = (end, 0);
        while i > 0 {
            total += self.tree[i];
            i -= i & i.wrapping_neg();
        }
        total
    }

    /// Does some pending read's value start with `prefix`?
    pub(super) fn any_starting_with(&self, prefix: &str) -> bool {
        let start = self.values.partition_point(|v| *v < prefix);
        let len = self.values[start..].partition_point(|v| v.starts_with(prefix));
        len > 0 && self.sum(start + len) > self.sum(start)
    }
}

/// An operation of the key that takes part in the search.
pub(super) struct SearchOp<'h> {
    /// Index in the caller's history.
    pub(super) index: usize,
    /// What it does to the model.
    pub(super) step: Step<'h>,
    /// Completion time; `u64::MAX` for unknown outcome.
    pub(super) deadline: u64,
    /// It completed (as opposed to: outcome unknown).
    pub(super) completed: bool,
    /// For a read of a present value: its slot in the [`ReadIndex`].
    pub(super) read_slot: Option<usize>,
    /// Writes with the same effect (every delete; puts, or appends, of equal strings) share
    /// a class: the search only branches on the earliest-deadline one of a class.
    pub(super) class: usize,
    /// Zobrist key: the set of linearized ops is fingerprinted by XOR of these.
    pub(super) zobrist: u128,
}

/// An operation of the key left out of the search, and why.
pub(super) struct LeftOut {
    /// Index in the caller's history.
    pub(super) index: usize,
    /// Why, for messages.
    pub(super) reason: &'static str,
}

/// A node of the event list.
#[derive(Clone, Copy)]
pub(super) enum Event {
    /// Head or tail sentinel.
    Sentinel,
    /// The op's call; `ret` is the node of its return event, if it completed.
    Call {
        /// The search op id.
        op: usize,
        /// The node of its return event.
        ret: Option<usize>,
    },
    /// The op's return: it must be linearized before the search gets past this node.
    Return {
        /// The search op id.
        op: usize,
    },
}

/// Node id of the event list's head sentinel.
pub(super) const HEAD: usize = 0;
/// Node id of the event list's tail sentinel.
pub(super) const TAIL: usize = 1;

/// The links of the doubly-linked event list (indexed by node id), which the search
/// mutates: lifting unlinks a node but leaves its own links in place, so relinking in
/// reverse order restores the list exactly (Knuth's dancing links).
#[derive(Clone)]
pub(super) struct Links {
    /// The node after each node.
    pub(super) next: Vec<usize>,
    /// The node before each node.
    prev: Vec<usize>,
}

impl Links {
    /// Takes `node` out of the list; its own links stay, for [`relink`](Self::relink).
    fn unlink(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = n;
        self.prev[n] = p;
    }

    /// Puts back `node`, unlinked last, where it was.
    fn relink(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = node;
        self.prev[n] = node;
    }

    /// Removes a call and its return (if any) from the list.
    pub(super) fn lift(&mut self, events: &[Event], call: usize) {
        self.unlink(call);
        if let Event::Call { ret: Some(ret), .. } = events[call] {
            self.unlink(ret);
        }
    }

    /// Undoes the matching [`lift`](Self::lift); lifts must be undone in reverse order.
    pub(super) fn unlift(&mut self, events: &[Event], call: usize) {
        if let Event::Call { ret: Some(ret), .. } = events[call] {
            self.relink(ret);
        }
        self.relink(call);
    }
}

/// One key's history, prepared for the search.
pub(super) struct KeyHistory<'h> {
    /// The caller's whole history (other keys' operations included).
    pub(super) history: &'h [Operation],
    /// All of the key's operations (indices into `history`), by invoke time.
    pub(super) all: Vec<usize>,
    /// The operations that take part in the search, by invoke time; their position is
    /// their search op id.
    pub(super) ops: Vec<SearchOp<'h>>,
    /// The operations left out of the search.
    pub(super) left_out: Vec<LeftOut>,
    /// How many of `ops` completed: the search is done when all of them are linearized.
    pub(super) completed: usize,
    /// The call and return events, by node id.
    pub(super) events: Vec<Event>,
    /// Each op's call node; node ids follow time order.
    pub(super) call_node: Vec<usize>,
    /// The list of events in time order, before any is lifted.
    pub(super) links: Links,
    /// The values completed reads returned, every read pending.
    pub(super) reads: ReadIndex<'h>,
}

impl<'h> KeyHistory<'h> {
    /// Prepares the operations at `indices` of `history` (all of one key, all well-formed).
    pub(super) fn new(history: &'h [Operation], indices: &[usize]) -> KeyHistory<'h> {
        let mut all = indices.to_vec();
        all.sort_by_key(|&i| (history[i].invoke, i));

        // What completed reads saw decides which unknown-outcome writes could matter.
        let completed_reads = || {
            all.iter()
                .map(|&i| &history[i])
                .filter(|op| op.op == KvOp::Get && op.complete.is_some())
        };
        let seen: HashSet<Option<&str>> = completed_reads().map(|op| op.read.as_deref()).collect();
        let mut reads = ReadIndex::new(seen.iter().flatten().copied().collect());
        let has_append = all
            .iter()
            .any(|&i| matches!(history[i].op, KvOp::Append(_)));
        let last_completion = all.iter().filter_map(|&i| history[i].complete).max();

        let mut ops = Vec::new();
        let mut left_out = Vec::new();
        let mut classes: HashMap<(u8, &str), usize> = HashMap::new();
        let mut seed = 0x5eed_c0de_u64;
        for &index in &all {
            let op = &history[index];
            if op.complete.is_none() {
                let reason = if op.op == KvOp::Get {
                    Some("a read with unknown outcome constrains nothing")
                } else if last_completion.is_none_or(|last| op.invoke > last) {
                    Some("invoked after every completed op finished")
                } else if !observable(&op.op, &seen, has_append) {
                    Some("no read could have observed it")
                } else {
                    None
                };
                if let Some(reason) = reason {
                    left_out.push(LeftOut { index, reason });
                    continue;
                }
            }
            let step = Step::new(op);
            let read_slot = match step {
                Step::Get(Some(read)) => reads.slot(read),
                _ => None,
            };
            if let Some(slot) = read_slot {
                reads.add(slot, 1);
            }
            let effect = match &op.op {
                KvOp::Get => (0, ""),
                KvOp::Put(v) => (1, v.as_str()),
                KvOp::Append(v) => (2, v.as_str()),
                KvOp::Delete => (3, ""),
            };
            let next_class = classes.len();
            let class = *classes.entry(effect).or_insert(next_class);
            let zobrist = fingerprint::zobrist_key(&mut seed);
            ops.push(SearchOp {
                index,
                step,
                deadline: op.complete.unwrap_or(u64::MAX),
                completed: op.complete.is_some(),
                read_slot,
                class,
                zobrist,
            });
        }
        let completed = ops.iter().filter(|op| op.completed).count();

        // Events: (time, calls before returns, op id) → node ids from 2 on.
        let mut timed: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * ops.len());
        for (id, op) in ops.iter().enumerate() {
            let operation = &history[op.index];
            timed.push((operation.invoke, false, id));
            if let Some(complete) = operation.complete {
                timed.push((complete, true, id));
            }
        }
        timed.sort_unstable();
        let mut events = vec![Event::Sentinel, Event::Sentinel];
        let mut call_node = vec![0; ops.len()];
        for &(_, is_return, op) in &timed {
            let node = events.len();
            if is_return {
                events.push(Event::Return { op });
                if let Event::Call { ret, .. } = &mut events[call_node[op]] {
                    *ret = Some(node);
                }
            } else {
                call_node[op] = node;
                events.push(Event::Call { op, ret: None });
            }
        }
        // The list in time order: HEAD, nodes 2.., TAIL.
        let order: Vec<usize> = std::iter::once(HEAD)
            .chain(2..events.len())
            .chain(std::iter::once(TAIL))
            .collect();
        let mut next = vec![TAIL; events.len()];
        let mut prev = vec![HEAD; events.len()];
        for pair in order.windows(2) {
            next[pair[0]] = pair[1];
            prev[pair[1]] = pair[0];
        }
        KeyHistory {
            history,
            all,
            ops,
            left_out,
            completed,
            events,
            call_node,
            links: Links { next, prev },
            reads,
        }
    }

    /// The search op id of the event at `node`.
    pub(super) fn op_at(&self, node: usize) -> usize {
        match self.events[node] {
            Event::Call { op, .. } | Event::Return { op } => op,
            Event::Sentinel => usize::MAX,
        }
    }

    /// Replays a linearization found by the search against the sequential model and the
    /// real-time order, so that a bug in the search cannot make a history pass.
    pub(super) fn verify(&self, order: &[usize]) -> Result<(), String> {
        let mut seen = vec![false; self.ops.len()];
        for &op in order {
            if op >= self.ops.len() || std::mem::replace(&mut seen[op], true) {
                return Err(format!("search op {op} is invalid or appears twice"));
            }
        }
        if let Some(missing) = (0..self.ops.len()).find(|&op| self.ops[op].completed && !seen[op]) {
            return Err(format!(
                "completed {} is missing",
                self.line(self.ops[missing].index)
            ));
        }
        // Real time: nothing may come after an op that completed before it was invoked.
        let mut earliest_later_completion = u64::MAX;
        for &op in order.iter().rev() {
            let operation = &self.history[self.ops[op].index];
            if operation.invoke > earliest_later_completion {
                return Err(format!(
                    "{} is ordered after an op that completed before it",
                    self.line(self.ops[op].index)
                ));
            }
            if let Some(complete) = operation.complete {
                earliest_later_completion = earliest_later_completion.min(complete);
            }
        }
        let mut value = Value::absent();
        for &op in order {
            value = self.ops[op]
                .step
                .apply(&value)
                .ok_or_else(|| format!("the model refuses {}", self.line(self.ops[op].index)))?;
        }
        Ok(())
    }
}

/// Could a write with unknown outcome have been seen by one of the completed reads
/// (`reads`: the distinct values they returned)? If not, there is a linearization without
/// it whenever there is one with it: the reads that would follow it up to the next put or
/// delete would all see its mark (a value starting with the put's value, containing the
/// appended string, or absent / built from appends after a delete), and there are none.
fn observable(op: &KvOp, reads: &HashSet<Option<&str>>, has_append: bool) -> bool {
    let any_read = |test: &dyn Fn(&str) -> bool| reads.iter().flatten().any(|read| test(read));
    match op {
        KvOp::Get => true,
        KvOp::Put(v) => any_read(&|read| read.starts_with(v.as_str())),
        KvOp::Append(v) => any_read(&|read| read.contains(v.as_str())),
        KvOp::Delete => has_append || reads.contains(&None),
    }
}
