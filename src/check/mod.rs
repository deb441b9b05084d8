//! The linearizability checker: it judges, from the outside, whether what the cluster did
//! was correct, by deciding whether a recorded history of client operations could have come
//! from a single copy of the key-value map applying each operation atomically at some
//! instant between its invocation and its completion.
//!
//! Every driver of the cluster records its history in the checker's own vocabulary,
//! [`Operation`] and [`KvOp`]: the deterministic simulator (times are virtual steps), the
//! real-process tests and `raftkv bench --check` (times are wall-clock nanoseconds). Times
//! are plain `u64`s in whatever unit the caller uses; only their order matters.
//!
//! # What is checked
//!
//! A history is *linearizable* (Herlihy & Wing, 1990) if every operation can be given a
//! single instant — its linearization point — inside its interval `[invoke, complete]`, such
//! that applying the operations one at a time in the order of those instants to an ordinary
//! sequential map gives every read exactly the value it returned. Operations whose outcome
//! is unknown (the client timed out or gave up) may take effect at any instant after their
//! invocation, or never; reads with an unknown outcome returned nothing and constrain
//! nothing, so they are dropped.
//!
//! Intervals are closed: two operations whose intervals only touch (one completes at `t`,
//! the other is invoked at `t`) count as concurrent and may be ordered either way. This errs
//! on the side of never reporting a violation that did not happen when clocks are coarse.
//!
//! # Per key
//!
//! Every operation touches one key, and linearizability is *local* (compositional): a
//! history is linearizable if and only if the sub-history of each key is (Herlihy & Wing,
//! 1990, theorem 1). So the checker splits the history by key and searches each part on
//! its own, with the key's value (`Option<String>`) as the model state. This turns one
//! search whose state space is the product of all keys' into many small ones.
//!
//! # The search
//!
//! The algorithm is Wing & Gong's depth-first search for a linearization ("Testing and
//! verifying concurrent objects", J. Parallel Distrib. Comput. 17, 1993) with the two
//! improvements of Lowe ("Testing for linearizability", Concurrency and Computation:
//! Practice and Experience 29(4), 2017): *just-in-time linearization* and *memoization of
//! configurations*, on the event list that Porcupine uses (Athalye,
//! <https://github.com/anishathalye/porcupine>; Knossos, Kingsbury, does the same for
//! Jepsen):
//!
//! * Each operation becomes a *call* event at its invoke time and a *return* event at its
//!   completion time; the events are sorted by time (calls before returns at equal times)
//!   into a doubly-linked list. The calls before the first return are exactly the
//!   operations that may be linearized next: every operation that completed before they
//!   were invoked is already linearized.
//! * From a configuration, the search tries those candidates one at a time: apply the
//!   operation to the model; if the model accepts it (a read must see the current value)
//!   and the resulting configuration is new, push the choice on a stack and unlink the call
//!   and its return from the list ("lift" it). When no candidate works — in particular when
//!   the first return belongs to an operation that cannot be linearized now — it pops the
//!   last choice, relinks it (the list is a dancing-links structure, so this is O(1)),
//!   restores the model and tries the next candidate of that configuration.
//! * A *configuration* is the set of operations linearized so far plus the model state. Two
//!   paths reaching the same configuration have the same future, so each configuration is
//!   explored at most once (Lowe's memoization). This is what keeps typical histories
//!   polynomial instead of factorial.
//!
//! Operations with unknown outcome have no return event (their completion is +∞): they can
//! be linearized anywhere after their call, and never force a backtrack. The search succeeds
//! as soon as every *completed* operation is linearized; unknown-outcome ones still pending
//! then are taken to have happened after everything else, or never, which is the same thing
//! for the operations we saw.
//!
//! # Making it fast
//!
//! Memoization alone is not enough for a hot key with a dozen operations in flight: the
//! number of configurations grows with the subsets of concurrent writes and, since appends
//! make a different value for each order, with their orders too. Each of the following is
//! exact (it never changes the verdict), and together they take a 2000-operation history
//! with sixteen clients on one key from tens of millions of configurations to about ten
//! thousand:
//!
//! * **Earliest deadline first.** Candidates are tried in order of completion time, the
//!   ones that must take effect soonest first (Lowe's just-in-time rule: do not linearize an
//!   operation before it is needed). Trying them in invoke order, as Porcupine does,
//!   linearizes long-running writes too early and finds out many reads later.
//! * **Moves that lose nothing are taken without branching.** A candidate read that sees
//!   the current value can be linearized now without loss of generality: moving a read
//!   earlier, to a point where it sees the same value, breaks no real-time constraint. So
//!   can a put of a value no remaining read starts with, while the current value is
//!   already unobservable (below): it changes nothing anyone sees, here or wherever else it
//!   would go. If such a move leads nowhere, neither does the configuration it was taken
//!   from, so its alternatives are not tried.
//! * **Identical writes are interchangeable.** Of the candidates with the same effect
//!   (every delete; puts, or appends, of equal strings), only the one due first is tried:
//!   any linearization that takes another one now can swap the two.
//! * **Unobservable values are merged.** A present value that no remaining read's value
//!   starts with can never be seen: every read before the next put or delete would see it
//!   followed by appends. All such values behave the same, so they become one abstract
//!   value (appends keep it, reads reject it), and the orders of a burst of writes that is
//!   overwritten before anyone looks collapse into one configuration. The remaining reads'
//!   values are kept sorted with a Fenwick tree of counts, so the test is a prefix range
//!   query: O(|value| log n).
//! * **Read lookahead.** After a write, every read in flight must still be able to see
//!   what it returned. Only operations invoked before a read completed can precede it, so
//!   its value must be built from a base — the current value, one of those puts' values,
//!   or absent after one of those deletes — by those appends: equal to a present base, or
//!   starting with the base and ending with one of the appends. A write that leaves some
//!   read without a way is rejected at once instead of when that read's deadline comes.
//!   One walk of the event list checks every read in flight against exactly the operations
//!   that may precede it; the walk is capped at a thousand events.
//! * **Unobservable unknown writes are dropped** before the search. A write with unknown
//!   outcome that no read could have observed — a `put v` when no read returned a value
//!   starting with `v`, an `append v` when no read contains `v`, a `delete` when no read
//!   returned "absent" and the key has no appends — can be moved out of any linearization
//!   without changing a read. So can one invoked after every completed operation finished.
//!   Timed-out writes are common under faults and each one kept is a branch everywhere.
//! * **Fingerprinted configurations.** The set of linearized operations is identified by a
//!   128-bit Zobrist hash (the XOR of a random 128-bit key per operation), updated in O(1)
//!   per step, and the value by a 128-bit polynomial hash (two bases modulo 2^61 − 1) that an
//!   append extends in O(1). The memo table holds 16-byte fingerprints instead of a bitset
//!   and a string per configuration. A false "already seen" has probability about 2^-100
//!   and could only prune a path, so at worst it would yield a spurious violation.
//!
//! A history is only ever declared linearizable after the linearization found has been
//! replayed against the plain sequential model and the real-time order, so a bug in any of
//! the above could make the checker fail a good history, but never pass a bad one. The
//! tests also compare the verdicts with a brute-force enumeration on small histories and
//! with a plain memoized search on medium ones.
//!
//! # Complexity
//!
//! Each search step costs O(w) for a window of w events in flight (gathering candidates and
//! the lookahead walk, which also compares each read in flight with the pending puts and
//! appends), plus O(|value| log n) for appends (building the new string), reads (comparing
//! it) and the observability test. The number of steps is bounded by the number of
//! distinct configurations, which in the worst case is exponential in the number of
//! operations concurrent at one time — deciding linearizability is NP-complete (Gibbons &
//! Korach, 1997) — and for a history that is not linearizable the search must exhaust the
//! configurations reachable before the point of failure. Measured on 2000-operation
//! histories of one key from real sequential executions (release build): 16 clients, ~10
//! thousand configurations, 15 ms; 32 clients (~25 operations in flight), ~0.5 million,
//! 1.5 s; 64 clients exceed [`DEFAULT_MAX_STATES`]. Refuting a corrupted 16-client history
//! takes under a second. [`check_with_limit`] bounds the configurations explored per key
//! and reports [`CheckOutcome::GaveUp`] beyond it; memory is about 17 bytes per
//! configuration (hash-set slack aside) plus O(n) for the event list.
//!
//! # Where things are
//!
//! Read in this order; each file is one concern:
//!
//! * `mod.rs` (here): the entry points [`check`] and [`check_with_limit`], which split
//!   the history by key, search each key and turn the verdict into a [`Violation`].
//! * `model.rs`: what a history records ([`Operation`], [`KvOp`]) and the sequential model
//!   the search runs — one key's value, and what each operation does to it.
//! * `history.rs`: one key's operations prepared for the search — unknown writes nobody
//!   could have seen left out, the event list, the index of the values reads returned —
//!   and the replay that verifies a linearization found.
//! * `search.rs`: the search itself, with its shortcuts.
//! * `fingerprint.rs`: the hashes that identify a configuration in the memo table.
//! * `explain.rs`: the text of a violation — the operations, the longest linearizable
//!   prefix and where the search got stuck.
//! * `tests.rs`: histories that must pass, histories that must fail, and randomized
//!   comparisons with a brute-force enumeration and a plain memoized search.

mod explain;
mod fingerprint;
mod history;
mod model;
mod search;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

pub use model::{KvOp, Operation};

use explain::describe_op;
use history::KeyHistory;
use search::Search;

/// Why a history is not linearizable (or could not be decided), for one key. It displays
/// as `linearizability check failed for key "k":` and the message (see `explain.rs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The key whose operations admit no linearization.
    pub key: String,
    /// A readable explanation: the operations of that key (client, op, interval, result)
    /// and the longest linearizable prefix the search found.
    pub message: String,
}

impl std::error::Error for Violation {}

/// The result of a search that found no violation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckOutcome {
    /// Every key's history has a linearization.
    Linearizable,
    /// No violation was found, but for at least one key the search explored more than the
    /// allowed number of configurations without finding a linearization either: the
    /// history is neither proven linearizable nor refuted.
    GaveUp,
}

/// The number of configurations (set of linearized operations plus value) [`check`] lets
/// the search explore for one key before giving up. Histories from real executions need a
/// few per operation; this leaves room for heavy concurrency and faults while bounding
/// memory to a few hundred MB.
pub const DEFAULT_MAX_STATES: usize = 10_000_000;

/// Checks that `history` is linearizable.
///
/// Returns `Err` with an explanation if some key's operations admit no linearization, if
/// the history is malformed (an operation completing before it was invoked), or if the
/// search for some key exceeded [`DEFAULT_MAX_STATES`] configurations: a history that could
/// not be checked is a failure to conclude, never a pass.
pub fn check(history: &[Operation]) -> Result<(), Violation> {
    check_strict(history, DEFAULT_MAX_STATES)
}

/// Checks that `history` is linearizable, exploring at most `max_states` configurations per
/// key.
///
/// Returns `Ok(CheckOutcome::Linearizable)` if every key has a linearization,
/// `Ok(CheckOutcome::GaveUp)` if no violation was found but some key's search hit the limit,
/// and `Err` if some key has none or the history is malformed. Keys are checked in sorted
/// order and the first violation is reported.
pub fn check_with_limit(
    history: &[Operation],
    max_states: usize,
) -> Result<CheckOutcome, Violation> {
    Ok(match run(history, max_states)? {
        None => CheckOutcome::Linearizable,
        Some(_) => CheckOutcome::GaveUp,
    })
}

/// [`check`] with a chosen limit: giving up is an error.
fn check_strict(history: &[Operation], max_states: usize) -> Result<(), Violation> {
    match run(history, max_states)? {
        None => Ok(()),
        Some(gave_up) => Err(gave_up),
    }
}

/// Checks every key. `Ok(None)`: all linearizable. `Ok(Some(v))`: no violation, but the
/// search gave up on a key (`v` says which and why). `Err`: a violation.
fn run(history: &[Operation], max_states: usize) -> Result<Option<Violation>, Violation> {
    for (index, op) in history.iter().enumerate() {
        if let Some(complete) = op.complete {
            if complete < op.invoke {
                return Err(Violation {
                    key: op.key.clone(),
                    message: format!(
                        "invalid history: op {index} ({}) completes at {complete}, before it was \
                         invoked at {}",
                        describe_op(op),
                        op.invoke
                    ),
                });
            }
        }
    }
    let mut by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (index, op) in history.iter().enumerate() {
        by_key.entry(op.key.as_str()).or_default().push(index);
    }
    let mut gave_up = None;
    for (key, indices) in by_key {
        let prepared = KeyHistory::new(history, &indices);
        match prepared.search(max_states) {
            Search::Linearizable(order) => {
                if let Err(problem) = prepared.verify(&order) {
                    return Err(Violation {
                        key: key.to_string(),
                        message: format!(
                            "internal error in the checker: the linearization it found does not \
                             replay ({problem}); treating the history as unchecked.\n{}",
                            prepared.summary()
                        ),
                    });
                }
            }
            Search::Stuck(best) => {
                return Err(Violation {
                    key: key.to_string(),
                    message: prepared.explain(&best),
                })
            }
            Search::GaveUp => {
                if gave_up.is_none() {
                    gave_up = Some(Violation {
                        key: key.to_string(),
                        message: format!(
                            "the search gave up after exploring {max_states} configurations \
                             without finding a linearization or refuting one: this history is \
                             neither proven linearizable nor shown not to be.\n{}",
                            prepared.summary()
                        ),
                    });
                }
            }
        }
    }
    Ok(gave_up)
}
