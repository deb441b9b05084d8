//! The text of a [`Violation`]: what a person reads when a history fails.
//!
//! A refutation names the key, counts its operations, shows the longest linearizable
//! prefix the search found and the value after it, points at the read the lookahead found
//! blind or the operation the search got stuck on, and lists the operations in flight
//! around that point (all of them if there are few), each with its client, result and
//! interval, and the reason if it was left out of the search.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use super::history::KeyHistory;
use super::model::{KvOp, Operation, Text};
use super::search::Searcher;
use super::Violation;

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "linearizability check failed for key {}:\n{}",
            show(&self.key),
            self.message
        )
    }
}

impl KeyHistory<'_> {
    /// The operation's line in a message: `op 7: client 2 get -> "a" [10, 20]`.
    pub(super) fn line(&self, index: usize) -> String {
        let op = &self.history[index];
        format!("op {index}: {} {}", describe_op(op), interval(op))
    }

    /// Counts of the key's ops, for messages.
    pub(super) fn summary(&self) -> String {
        let unknown = self.ops.len() - self.completed;
        format!(
            "The key has {}: {} completed, {unknown} with unknown outcome searched, {} left out.",
            plural(self.all.len(), "operation"),
            self.completed,
            self.left_out.len()
        )
    }

    /// Explains why no linearization exists, given the longest prefix found.
    pub(super) fn explain(&self, best: &[usize]) -> String {
        const PREFIX_LINES: usize = 30;
        const OP_LINES: usize = 100;
        let mut out = format!("No linearization exists. {}\n", self.summary());

        let mut at_best = Searcher::new(self, 0);
        for &op in best {
            at_best.replay(op);
        }
        let value = at_best.value.clone();
        let blind = at_best.first_blind_read(usize::MAX, &value);
        let in_best: HashSet<usize> = best.iter().copied().collect();
        let completed_in_best = best.iter().filter(|&&op| self.ops[op].completed).count();
        out += &format!(
            "Longest linearizable prefix found: {} ({completed_in_best} of {} completed ones):\n",
            plural(best.len(), "op"),
            self.completed
        );
        let skip = best.len().saturating_sub(PREFIX_LINES);
        if skip > 0 {
            out += &format!("  ... {skip} earlier ops\n");
        }
        for (position, &op) in best.iter().enumerate().skip(skip) {
            out += &format!("  {:>4}. {}\n", position + 1, self.line(self.ops[op].index));
        }
        let shown_value = match &value.text {
            Text::Present(text) => show(text),
            Text::Absent | Text::Unobservable => "absent".to_string(),
        };
        out += &format!("  value after it: {shown_value}\n");
        if let Some(blind) = blind {
            out += &format!(
                "After it, {} can no longer return what it did: nothing that may still take \
                 effect before it completed produces that value.\n",
                self.line(self.ops[blind].index)
            );
        }

        // The op that got stuck: the unlinearized completed one that completes first.
        let stuck = (0..self.ops.len())
            .filter(|op| self.ops[*op].completed && !in_best.contains(op))
            .min_by_key(|&op| (self.ops[op].deadline, op));
        let mut window = (0, u64::MAX);
        if let Some(stuck) = stuck {
            let deadline = self.ops[stuck].deadline;
            out += &format!(
                "Stuck at {}: it completed at {deadline}, so it must take effect by then, but no \
                 order of the ops that may still take effect by then allows it after this \
                 prefix.\n",
                self.line(self.ops[stuck].index)
            );
            let recent = best.iter().rev().take(10).map(|&op| self.ops[op].index);
            let pending = (0..self.ops.len())
                .filter(|op| !in_best.contains(op))
                .map(|op| self.ops[op].index)
                .filter(|&i| self.history[i].invoke <= deadline);
            let start = recent.chain(pending).map(|i| self.history[i].invoke).min();
            window = (start.unwrap_or(0), deadline);
        }

        let reasons: BTreeMap<usize, &str> =
            self.left_out.iter().map(|l| (l.index, l.reason)).collect();
        let shown: Vec<usize> = if self.all.len() <= OP_LINES {
            self.all.clone()
        } else {
            self.all
                .iter()
                .copied()
                .filter(|&i| {
                    let op = &self.history[i];
                    let left_out = reasons.contains_key(&i);
                    op.invoke <= window.1
                        && op
                            .complete
                            .map_or(!left_out || op.invoke >= window.0, |c| c >= window.0)
                })
                .take(OP_LINES)
                .collect()
        };
        if shown.len() == self.all.len() {
            out += "Operations on this key, by invoke time:\n";
        } else {
            out += &format!(
                "Operations on this key in flight during [{}, {}], by invoke time ({} of {} \
                 shown):\n",
                window.0,
                window.1,
                shown.len(),
                self.all.len()
            );
        }
        for index in shown {
            out += &format!("  {}", self.line(index));
            if let Some(reason) = reasons.get(&index) {
                out += &format!(" (left out: {reason})");
            }
            out += "\n";
        }
        out
    }
}

/// `client 3 put "a"`, `client 1 get -> absent`, ...
pub(super) fn describe_op(op: &Operation) -> String {
    let what = match &op.op {
        KvOp::Get if op.complete.is_none() => "get (no reply)".to_string(),
        KvOp::Get => format!("get -> {}", show_value(op.read.as_deref())),
        KvOp::Put(v) => format!("put {}", show(v)),
        KvOp::Append(v) => format!("append {}", show(v)),
        KvOp::Delete => "delete".to_string(),
    };
    format!("client {} {what}", op.client)
}

/// `[10, 20]`, or `[10, ∞) outcome unknown`.
fn interval(op: &Operation) -> String {
    match op.complete {
        Some(complete) => format!("[{}, {complete}]", op.invoke),
        None => format!("[{}, ∞) outcome unknown", op.invoke),
    }
}

/// A value for a message: quoted and escaped, shortened if long.
fn show(s: &str) -> String {
    const MAX_CHARS: usize = 48;
    if s.chars().count() <= MAX_CHARS {
        format!("{s:?}")
    } else {
        let head: String = s.chars().take(MAX_CHARS).collect();
        format!("{head:?}... ({} bytes)", s.len())
    }
}

/// `1 op`, `2 ops`.
fn plural(count: usize, noun: &str) -> String {
    if count == 1 {
        format!("1 {noun}")
    } else {
        format!("{count} {noun}s")
    }
}

/// A read's value for a message: quoted, or `absent`.
fn show_value(value: Option<&str>) -> String {
    value.map_or_else(|| "absent".to_string(), show)
}
