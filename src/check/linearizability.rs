//! A linearizability checker for histories of key-value operations.
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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;

/// What a client did to one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvOp {
    /// Read the key; the value read is in [`Operation::read`].
    Get,
    /// Set the key to this value.
    Put(String),
    /// Append this string to the key's value; a missing key counts as `""`.
    Append(String),
    /// Remove the key.
    Delete,
}

/// One client operation on one key, as seen by the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// Who issued it (used in messages only).
    pub client: u64,
    /// The key it touched.
    pub key: String,
    /// What it did.
    pub op: KvOp,
    /// Time the op was first sent.
    pub invoke: u64,
    /// `Some(t)`: it completed OK at `t`. `None`: outcome unknown (timed out, or the client
    /// gave up) — it may have taken effect at any time after `invoke`, or never.
    pub complete: Option<u64>,
    /// For a completed Get: the value read (`None` = key absent). Ignored otherwise.
    pub read: Option<String>,
}

/// Why a history is not linearizable (or could not be decided), for one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The key whose operations admit no linearization.
    pub key: String,
    /// A readable explanation: the operations of that key (client, op, interval, result)
    /// and the longest linearizable prefix the search found.
    pub message: String,
}

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

// ---------------------------------------------------------------------------------------
// Fingerprints.

/// The Mersenne prime 2^61 − 1, modulus of the polynomial string hash.
const MODULUS: u64 = (1 << 61) - 1;
/// Two fixed bases for the polynomial hash, drawn at random once.
const BASES: [u64; 2] = [
    0x0d9e_8b5f_3c1a_7e45 % MODULUS,
    0x1b6f_2a4c_9e37_d081 % MODULUS,
];
/// Fingerprint of the absent value; those of present values have both halves below 2^61.
const ABSENT: u128 = u128::MAX;
/// Fingerprint of the abstract unobservable value.
const UNOBSERVABLE: u128 = u128::MAX - 1;

fn mul_mod(a: u64, b: u64) -> u64 {
    let x = u128::from(a) * u128::from(b);
    let folded = ((x >> 61) as u64) + ((x as u64) & MODULUS);
    let folded = (folded & MODULUS) + (folded >> 61);
    if folded >= MODULUS {
        folded - MODULUS
    } else {
        folded
    }
}

fn add_mod(a: u64, b: u64) -> u64 {
    let sum = a + b;
    if sum >= MODULUS {
        sum - MODULUS
    } else {
        sum
    }
}

fn pow_mod(mut base: u64, mut exp: u64) -> u64 {
    let mut result = 1;
    while exp > 0 {
        if exp & 1 == 1 {
            result = mul_mod(result, base);
        }
        base = mul_mod(base, base);
        exp >>= 1;
    }
    result
}

/// The polynomial hash of a string under both bases: `h(s) = Σ (s[i] + 1) · B^(len-1-i)`.
/// Bytes map to 1..=256, so strings of different lengths hash as different polynomials, and
/// `h(s ++ t) = h(s) · B^len(t) + h(t)`.
fn poly_hash(s: &str) -> [u64; 2] {
    BASES.map(|base| {
        s.bytes()
            .fold(0, |h, b| add_mod(mul_mod(h, base), u64::from(b) + 1))
    })
}

fn pack(halves: [u64; 2]) -> u128 {
    (u128::from(halves[0]) << 64) | u128::from(halves[1])
}

fn unpack(fingerprint: u128) -> [u64; 2] {
    [(fingerprint >> 64) as u64, fingerprint as u64]
}

/// SplitMix64: a tiny deterministic generator for the Zobrist keys.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The memo table's hasher: its keys are already uniformly distributed 128-bit
/// fingerprints, so folding them is enough.
#[derive(Default)]
struct FingerprintHasher(u64);

impl Hasher for FingerprintHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u128(&mut self, x: u128) {
        self.0 ^= (x as u64) ^ ((x >> 64) as u64);
    }
}

type Memo = HashSet<u128, BuildHasherDefault<FingerprintHasher>>;

// ---------------------------------------------------------------------------------------
// The model: one key's value.

#[derive(Clone)]
enum Text {
    Absent,
    Present(Rc<String>),
    /// Some present value that no remaining read can see (see the module docs).
    Unobservable,
}

/// The key's value during the search, with its fingerprint.
#[derive(Clone)]
struct Value {
    text: Text,
    fingerprint: u128,
}

impl Value {
    fn absent() -> Value {
        Value {
            text: Text::Absent,
            fingerprint: ABSENT,
        }
    }

    fn unobservable() -> Value {
        Value {
            text: Text::Unobservable,
            fingerprint: UNOBSERVABLE,
        }
    }

    fn is_absent(&self) -> bool {
        matches!(self.text, Text::Absent)
    }

    /// The value if it is present and concrete.
    fn as_str(&self) -> Option<&str> {
        match &self.text {
            Text::Present(text) => Some(text),
            Text::Absent | Text::Unobservable => None,
        }
    }
}

/// An operation prepared for the search.
enum Step<'h> {
    /// A completed read and what it returned.
    Get(Option<&'h str>),
    Put(Value),
    Append {
        suffix: &'h str,
        /// `poly_hash(suffix)`.
        hash: [u64; 2],
        /// `B^len(suffix)` for each base.
        shift: [u64; 2],
    },
    Delete,
}

impl Step<'_> {
    fn is_get(&self) -> bool {
        matches!(self, Step::Get(_))
    }

    /// The value after applying this step to `value`, or `None` if the model refuses it (a
    /// read that does not match).
    fn apply(&self, value: &Value) -> Option<Value> {
        match self {
            Step::Get(read) => {
                let matches = match (&value.text, read) {
                    (Text::Absent, None) => true,
                    (Text::Present(text), Some(read)) => text.as_str() == *read,
                    _ => false,
                };
                matches.then(|| value.clone())
            }
            Step::Put(new) => Some(new.clone()),
            Step::Delete => Some(Value::absent()),
            Step::Append {
                suffix,
                hash,
                shift,
            } => {
                let (old, old_hash) = match &value.text {
                    Text::Unobservable => return Some(Value::unobservable()),
                    Text::Absent => ("", [0, 0]),
                    Text::Present(text) => (text.as_str(), unpack(value.fingerprint)),
                };
                let mut text = String::with_capacity(old.len() + suffix.len());
                text.push_str(old);
                text.push_str(suffix);
                let new_hash = [0, 1].map(|i| add_mod(mul_mod(old_hash[i], shift[i]), hash[i]));
                Some(Value {
                    text: Text::Present(Rc::new(text)),
                    fingerprint: pack(new_hash),
                })
            }
        }
    }
}

/// The distinct present values returned by completed reads, sorted, with a Fenwick tree of
/// how many reads of each are not linearized yet. Values with a given prefix are
/// contiguous in byte order, so "does a remaining read start with `s`" is two binary
/// searches and a range sum.
#[derive(Clone)]
struct ReadIndex<'h> {
    values: Vec<&'h str>,
    tree: Vec<i64>,
}

impl<'h> ReadIndex<'h> {
    fn new(mut values: Vec<&'h str>) -> ReadIndex<'h> {
        values.sort_unstable();
        values.dedup();
        let tree = vec![0; values.len() + 1];
        ReadIndex { values, tree }
    }

    fn slot(&self, value: &str) -> Option<usize> {
        self.values.binary_search(&value).ok()
    }

    fn add(&mut self, slot: usize, delta: i64) {
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

    fn any_starting_with(&self, prefix: &str) -> bool {
        let start = self.values.partition_point(|v| *v < prefix);
        let len = self.values[start..].partition_point(|v| v.starts_with(prefix));
        len > 0 && self.sum(start + len) > self.sum(start)
    }
}

// ---------------------------------------------------------------------------------------
// One key's history.

/// An operation of the key that takes part in the search.
struct SearchOp<'h> {
    /// Index in the caller's history.
    index: usize,
    step: Step<'h>,
    /// Completion time; `u64::MAX` for unknown outcome.
    deadline: u64,
    completed: bool,
    /// For a read of a present value: its slot in the [`ReadIndex`].
    read_slot: Option<usize>,
    /// Writes with the same effect (every delete; puts, or appends, of equal strings) share
    /// a class: the search only branches on the earliest-deadline one of a class.
    class: usize,
    /// Zobrist key: the set of linearized ops is fingerprinted by XOR of these.
    zobrist: u128,
}

/// An operation of the key left out of the search, and why.
struct LeftOut {
    index: usize,
    reason: &'static str,
}

#[derive(Clone, Copy)]
enum Event {
    /// Head or tail sentinel.
    Sentinel,
    /// The op's call; `ret` is the node of its return event, if it completed.
    Call {
        op: usize,
        ret: Option<usize>,
    },
    Return {
        op: usize,
    },
}

/// Node ids of the event list's sentinels.
const HEAD: usize = 0;
const TAIL: usize = 1;

/// How far the read lookahead walks the event list before it stops looking (pruning less,
/// never wrongly): it runs at every step, so a read in flight for very long must not make
/// every step walk the whole history.
const LOOKAHEAD_LIMIT: usize = 1_000;

/// The links of the doubly-linked event list (indexed by node id), which the search
/// mutates: lifting unlinks a node but leaves its own links in place, so relinking in
/// reverse order restores the list exactly (Knuth's dancing links).
#[derive(Clone)]
struct Links {
    next: Vec<usize>,
    prev: Vec<usize>,
}

impl Links {
    fn unlink(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = n;
        self.prev[n] = p;
    }

    fn relink(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = node;
        self.prev[n] = node;
    }

    /// Removes a call and its return (if any) from the list.
    fn lift(&mut self, events: &[Event], call: usize) {
        self.unlink(call);
        if let Event::Call { ret: Some(ret), .. } = events[call] {
            self.unlink(ret);
        }
    }

    /// Undoes the matching [`lift`](Self::lift); lifts must be undone in reverse order.
    fn unlift(&mut self, events: &[Event], call: usize) {
        if let Event::Call { ret: Some(ret), .. } = events[call] {
            self.relink(ret);
        }
        self.relink(call);
    }
}

/// The result of one key's search.
enum Search {
    /// A linearization: search op ids in order (completed ops, and the unknown-outcome ops
    /// it chose to include).
    Linearizable(Vec<usize>),
    /// None exists; the longest linearizable prefix found.
    Stuck(Vec<usize>),
    /// Too many configurations.
    GaveUp,
}

/// One key's history, prepared for the search.
struct KeyHistory<'h> {
    history: &'h [Operation],
    /// All of the key's operations (indices into `history`), by invoke time.
    all: Vec<usize>,
    ops: Vec<SearchOp<'h>>,
    left_out: Vec<LeftOut>,
    completed: usize,
    events: Vec<Event>,
    /// Each op's call node; node ids follow time order.
    call_node: Vec<usize>,
    /// The list of events in time order, before any is lifted.
    links: Links,
    /// Every completed read pending.
    reads: ReadIndex<'h>,
}

impl<'h> KeyHistory<'h> {
    /// Prepares the operations at `indices` of `history` (all of one key, all well-formed).
    fn new(history: &'h [Operation], indices: &[usize]) -> KeyHistory<'h> {
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
            let step = match &op.op {
                KvOp::Get => Step::Get(op.read.as_deref()),
                KvOp::Put(v) => Step::Put(Value {
                    text: Text::Present(Rc::new(v.clone())),
                    fingerprint: pack(poly_hash(v)),
                }),
                KvOp::Append(v) => Step::Append {
                    suffix: v,
                    hash: poly_hash(v),
                    shift: BASES.map(|base| pow_mod(base, v.len() as u64)),
                },
                KvOp::Delete => Step::Delete,
            };
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
            let zobrist =
                (u128::from(splitmix64(&mut seed)) << 64) | u128::from(splitmix64(&mut seed));
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

    fn op_at(&self, node: usize) -> usize {
        match self.events[node] {
            Event::Call { op, .. } | Event::Return { op } => op,
            Event::Sentinel => usize::MAX,
        }
    }

    /// The just-in-time depth-first search with memoization (see the module docs).
    fn search(&self, max_states: usize) -> Search {
        let mut searcher = Searcher::new(self, max_states);
        searcher.run()
    }

    /// Replays a linearization found by the search against the sequential model and the
    /// real-time order, so that a bug in the search cannot make a history pass.
    fn verify(&self, order: &[usize]) -> Result<(), String> {
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

    /// The operation's line in a message: `op 7: client 2 get -> "a" [10, 20]`.
    fn line(&self, index: usize) -> String {
        let op = &self.history[index];
        format!("op {index}: {} {}", describe_op(op), interval(op))
    }

    /// Counts of the key's ops, for messages.
    fn summary(&self) -> String {
        let unknown = self.ops.len() - self.completed;
        format!(
            "The key has {}: {} completed, {unknown} with unknown outcome searched, {} left out.",
            plural(self.all.len(), "operation"),
            self.completed,
            self.left_out.len()
        )
    }

    /// Explains why no linearization exists, given the longest prefix found.
    fn explain(&self, best: &[usize]) -> String {
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

/// One linearized op on the search stack.
struct Frame {
    /// Its call's node.
    call: usize,
    /// The value before it.
    before: Value,
    /// A read taken because it matched: when it is undone there is no alternative to try
    /// in its place.
    forced: bool,
}

/// What became of one try to linearize a candidate next.
enum Take {
    Taken,
    /// The model refused it, the lookahead doomed it, or the configuration was seen before.
    Rejected,
    GaveUp,
}

/// The mutable state of one key's search.
struct Searcher<'k, 'h> {
    key: &'k KeyHistory<'h>,
    links: Links,
    /// Completed reads not linearized yet.
    reads: ReadIndex<'h>,
    value: Value,
    /// Zobrist fingerprint of the set of linearized ops.
    linearized: u128,
    /// Completed ops not linearized yet.
    remaining: usize,
    stack: Vec<Frame>,
    memo: Memo,
    max_states: usize,
    /// The longest prefix so far, and how much of `stack` still agrees with it.
    best: Vec<usize>,
    agree: usize,
    /// Scratch: the writes that may be linearized next, as (deadline, node), sorted.
    candidates: Vec<(u64, usize)>,
    /// Scratch: effect classes met while gathering candidates.
    classes_seen: Vec<usize>,
    /// Scratch for the lookahead: suffixes of pending appends, values of pending puts.
    appends: Vec<&'h str>,
    puts: Vec<&'k str>,
}

impl<'k, 'h> Searcher<'k, 'h> {
    /// A search at the start of `key`'s history: nothing linearized, the key absent.
    fn new(key: &'k KeyHistory<'h>, max_states: usize) -> Searcher<'k, 'h> {
        Searcher {
            key,
            links: key.links.clone(),
            reads: key.reads.clone(),
            value: Value::absent(),
            linearized: 0,
            remaining: key.completed,
            stack: Vec::new(),
            memo: Memo::default(),
            max_states,
            best: Vec::new(),
            agree: 0,
            candidates: Vec::new(),
            classes_seen: Vec::new(),
            appends: Vec::new(),
            puts: Vec::new(),
        }
    }

    /// The search loop (see the module docs).
    fn run(&mut self) -> Search {
        let key = self.key;
        // `resume`: when coming back to a configuration, the candidate tried last there.
        let mut resume: Option<(u64, usize)> = None;
        loop {
            if self.remaining == 0 {
                let order = self.stack.iter().map(|f| key.op_at(f.call)).collect();
                return Search::Linearizable(order);
            }
            let matching_read = self.gather_candidates(resume);
            let mut outcome = Take::Rejected;
            if let Some(read) = matching_read {
                // Taking it loses nothing; if it was explored before and failed, then so
                // does this configuration, so no other candidate needs a try.
                outcome = self.take(read, true);
            } else {
                for i in 0..self.candidates.len() {
                    outcome = self.take(self.candidates[i].1, false);
                    if !matches!(outcome, Take::Rejected) {
                        break;
                    }
                }
            }
            match outcome {
                Take::Taken => resume = None,
                Take::GaveUp => return Search::GaveUp,
                Take::Rejected => match self.backtrack() {
                    Some(tried) => resume = Some(tried),
                    None => return Search::Stuck(std::mem::take(&mut self.best)),
                },
            }
        }
    }

    /// Collects the candidate writes (calls before the first return) into `candidates` in
    /// earliest-deadline-first order, keeping only those after `resume` if given. Without
    /// `resume` (a configuration visited for the first time) it returns a candidate that can
    /// be taken without loss of generality, if there is one: a read that sees the current
    /// value, or, while the value is unobservable, a put of a value no remaining read
    /// starts with (it leaves the value unobservable, and wherever else it could go, no
    /// read sees its effect).
    fn gather_candidates(&mut self, resume: Option<(u64, usize)>) -> Option<usize> {
        let key = self.key;
        self.candidates.clear();
        let mut node = self.links.next[HEAD];
        let unobservable = matches!(self.value.text, Text::Unobservable);
        while let Event::Call { op, .. } = key.events[node] {
            let candidate = &key.ops[op];
            let free = match &candidate.step {
                Step::Get(_) => candidate.step.apply(&self.value).is_some(),
                Step::Put(put) => {
                    unobservable
                        && put
                            .as_str()
                            .is_some_and(|v| !self.reads.any_starting_with(v))
                }
                Step::Append { .. } | Step::Delete => false,
            };
            if free && resume.is_none() {
                return Some(node);
            }
            if !candidate.step.is_get() {
                self.candidates.push((candidate.deadline, node));
            }
            node = self.links.next[node];
        }
        self.candidates.sort_unstable();
        // Of writes with the same effect, only the one due first needs a try: in any
        // linearization taking another one now, it can trade places with that one.
        self.classes_seen.clear();
        let (classes_seen, candidates) = (&mut self.classes_seen, &mut self.candidates);
        candidates.retain(|&(deadline, node)| {
            let class = key.ops[key.op_at(node)].class;
            let first = !classes_seen.contains(&class);
            classes_seen.push(class);
            first && resume.is_none_or(|tried| (deadline, node) > tried)
        });
        None
    }

    /// Tries to linearize the op whose call is at `node` next.
    fn take(&mut self, node: usize, forced: bool) -> Take {
        let key = self.key;
        let op = key.op_at(node);
        let candidate = &key.ops[op];
        let Some(mut after) = candidate.step.apply(&self.value) else {
            return Take::Rejected;
        };
        if let Some(slot) = candidate.read_slot {
            self.reads.add(slot, -1);
        }
        if let Text::Present(text) = &after.text {
            if !self.reads.any_starting_with(text) {
                after = Value::unobservable();
            }
        }
        let set = self.linearized ^ candidate.zobrist;
        let fresh = (candidate.step.is_get() || !self.dooms_a_pending_read(node, &after))
            && self.memo.insert(set ^ after.fingerprint);
        if !fresh {
            if let Some(slot) = candidate.read_slot {
                self.reads.add(slot, 1);
            }
            return Take::Rejected;
        }
        if self.memo.len() > self.max_states {
            return Take::GaveUp;
        }
        let before = std::mem::replace(&mut self.value, after);
        self.stack.push(Frame {
            call: node,
            before,
            forced,
        });
        self.linearized = set;
        if candidate.completed {
            self.remaining -= 1;
        }
        self.links.lift(&key.events, node);
        if self.stack.len() > self.best.len() {
            self.best.truncate(self.agree);
            let added = self.stack[self.agree..].iter().map(|f| key.op_at(f.call));
            self.best.extend(added);
            self.agree = self.stack.len();
        }
        Take::Taken
    }

    /// Linearizes `op` next with no checks, to rebuild a configuration for a message.
    fn replay(&mut self, op: usize) {
        let key = self.key;
        if let Some(after) = key.ops[op].step.apply(&self.value) {
            self.value = after;
        }
        if let Some(slot) = key.ops[op].read_slot {
            self.reads.add(slot, -1);
        }
        self.links.lift(&key.events, key.call_node[op]);
    }

    /// Undoes the last choice, and the forced reads taken after it. Returns the
    /// (deadline, node) of the write undone, so its configuration can go on with the next
    /// candidate, or `None` if there is no choice left to undo.
    fn backtrack(&mut self) -> Option<(u64, usize)> {
        let key = self.key;
        loop {
            let frame = self.stack.pop()?;
            self.agree = self.agree.min(self.stack.len());
            let op = &key.ops[key.op_at(frame.call)];
            self.value = frame.before;
            self.linearized ^= op.zobrist;
            if op.completed {
                self.remaining += 1;
            }
            if let Some(slot) = op.read_slot {
                self.reads.add(slot, 1);
            }
            self.links.unlift(&key.events, frame.call);
            if !frame.forced {
                return Some((op.deadline, frame.call));
            }
        }
    }

    /// Read lookahead: after the op at node `taking` makes the value `value`, can every
    /// read in flight still see what it returned? A pending read can only be preceded by
    /// the ops whose call comes before its return in the list, so its value must be built
    /// from a base — the current value, one of those puts' values, or absent after one of
    /// those deletes — by those appends: it must equal a present base, or start with it
    /// (absent: with "") and end with one of the appends. Walking the list once, the ops
    /// seen so far are exactly those, so each read is tested on reaching its return: the
    /// reads called before the first return, and any other read returning before the last
    /// of them. Returns `true` if one of them cannot see its value any more.
    fn dooms_a_pending_read(&mut self, taking: usize, value: &Value) -> bool {
        self.first_blind_read(taking, value).is_some()
    }

    /// The first read in flight (in return order) that can no longer see its value, as
    /// [`dooms_a_pending_read`](Self::dooms_a_pending_read) decides; `taking` is the node
    /// of the op just taken, left out of what may still come (any non-node if none).
    fn first_blind_read(&mut self, taking: usize, value: &Value) -> Option<usize> {
        let key = self.key;
        let mut has_delete = false;
        self.appends.clear();
        self.puts.clear();
        let mut first_return = None;
        let mut in_flight = 0;
        let mut node = self.links.next[HEAD];
        let mut walked = 0;
        while node != TAIL && walked <= LOOKAHEAD_LIMIT {
            match key.events[node] {
                Event::Call { op, .. } if node != taking => match &key.ops[op].step {
                    Step::Delete => has_delete = true,
                    Step::Append { suffix, .. } => self.appends.push(suffix),
                    Step::Put(put) => self.puts.extend(put.as_str()),
                    Step::Get(_) => in_flight += usize::from(first_return.is_none()),
                },
                Event::Return { op } => {
                    let first_return = *first_return.get_or_insert(node);
                    if let Step::Get(read) = key.ops[op].step {
                        if !self.can_read(read, value, has_delete) {
                            return Some(op);
                        }
                        if key.call_node[op] < first_return {
                            in_flight -= 1;
                        }
                        if in_flight == 0 {
                            return None;
                        }
                    }
                }
                _ => {}
            }
            node = self.links.next[node];
            walked += 1;
        }
        None
    }

    /// Can a read see `read` if the value is now `value`, given what may still come before
    /// it (in `self.puts` and `self.appends`, and `has_delete`)? See
    /// [`dooms_a_pending_read`](Self::dooms_a_pending_read).
    fn can_read(&self, read: Option<&str>, value: &Value, has_delete: bool) -> bool {
        let can_be_absent = value.is_absent() || has_delete;
        let Some(wanted) = read else {
            return can_be_absent;
        };
        let ends_with_append = |len: usize| {
            self.appends
                .iter()
                .any(|a| a.len() <= len && wanted.ends_with(a))
        };
        let grows_into = |base: &str| {
            wanted.starts_with(base)
                && (wanted.len() == base.len() || ends_with_append(wanted.len() - base.len()))
        };
        value.as_str().is_some_and(grows_into)
            || (can_be_absent && ends_with_append(wanted.len()))
            || self.puts.iter().any(|put| grows_into(put))
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

/// `client 3 put "a"`, `client 1 get -> absent`, ...
fn describe_op(op: &Operation) -> String {
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

fn show_value(value: Option<&str>) -> String {
    value.map_or_else(|| "absent".to_string(), show)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use std::collections::HashMap;

    // ---- building histories -----------------------------------------------------------

    fn op(client: u64, kind: KvOp, invoke: u64, complete: Option<u64>) -> Operation {
        Operation {
            client,
            key: "k".into(),
            op: kind,
            invoke,
            complete,
            read: None,
        }
    }

    fn put(client: u64, value: &str, invoke: u64, complete: u64) -> Operation {
        op(client, KvOp::Put(value.into()), invoke, Some(complete))
    }

    fn append(client: u64, value: &str, invoke: u64, complete: u64) -> Operation {
        op(client, KvOp::Append(value.into()), invoke, Some(complete))
    }

    fn delete(client: u64, invoke: u64, complete: u64) -> Operation {
        op(client, KvOp::Delete, invoke, Some(complete))
    }

    fn get(client: u64, read: Option<&str>, invoke: u64, complete: u64) -> Operation {
        Operation {
            read: read.map(str::to_string),
            ..op(client, KvOp::Get, invoke, Some(complete))
        }
    }

    /// A write (or read) whose outcome is unknown: invoked at `invoke`, never answered.
    fn unknown(client: u64, kind: KvOp, invoke: u64) -> Operation {
        op(client, kind, invoke, None)
    }

    fn on(key: &str, operation: Operation) -> Operation {
        Operation {
            key: key.into(),
            ..operation
        }
    }

    #[track_caller]
    fn assert_linearizable(history: &[Operation]) {
        if let Err(violation) = check(history) {
            panic!("expected a linearizable history, got:\n{violation}");
        }
    }

    /// Asserts the history is refuted (not merely given up on or malformed).
    #[track_caller]
    fn assert_violation(history: &[Operation]) -> Violation {
        match check(history) {
            Ok(()) => panic!("expected a violation, but the history passed: {history:#?}"),
            Err(violation) => {
                assert!(
                    violation.message.starts_with("No linearization exists"),
                    "expected a refutation, got:\n{violation}"
                );
                violation
            }
        }
    }

    // ---- histories that must pass -----------------------------------------------------

    #[test]
    fn empty_history_is_linearizable() {
        assert_eq!(check_with_limit(&[], 0), Ok(CheckOutcome::Linearizable));
        assert_linearizable(&[]);
    }

    #[test]
    fn sequential_put_get_append_delete_history_passes() {
        assert_linearizable(&[
            get(1, None, 0, 1),
            put(1, "a", 2, 3),
            get(2, Some("a"), 4, 5),
            append(1, "b", 6, 7),
            get(3, Some("ab"), 8, 9),
            put(2, "c", 10, 11),
            get(1, Some("c"), 12, 13),
            delete(3, 14, 15),
            get(2, None, 16, 17),
            put(1, "d", 18, 19),
            get(1, Some("d"), 20, 21),
        ]);
    }

    #[test]
    fn append_to_missing_key_starts_from_empty_string() {
        assert_linearizable(&[append(1, "x", 0, 1), get(1, Some("x"), 2, 3)]);
        assert_linearizable(&[
            put(1, "old", 0, 1),
            delete(1, 2, 3),
            append(2, "x", 4, 5),
            append(3, "y", 6, 7),
            get(1, Some("xy"), 8, 9),
        ]);
    }

    #[test]
    fn empty_string_value_is_not_the_same_as_absent() {
        assert_linearizable(&[put(1, "", 0, 1), get(1, Some(""), 2, 3)]);
        assert_violation(&[put(1, "", 0, 1), get(1, None, 2, 3)]);
        assert_violation(&[get(1, Some(""), 0, 1)]);
    }

    #[test]
    fn concurrent_puts_may_take_effect_in_either_order() {
        // Both puts overlap; later reads agree on one order — either one.
        for (first, last) in [("a", "b"), ("b", "a")] {
            assert_linearizable(&[
                put(1, "a", 0, 10),
                put(2, "b", 5, 15),
                get(3, Some(first), 6, 8),
                get(3, Some(last), 20, 21),
                get(1, Some(last), 22, 23),
            ]);
        }
    }

    #[test]
    fn read_overlapping_a_write_may_see_old_or_new_value() {
        for seen in ["old", "new"] {
            assert_linearizable(&[
                put(1, "old", 0, 1),
                put(2, "new", 10, 20),
                get(3, Some(seen), 12, 18),
                get(3, Some("new"), 21, 22),
            ]);
        }
    }

    #[test]
    fn concurrent_appends_may_apply_in_either_order() {
        for seen in ["xy", "yx"] {
            assert_linearizable(&[
                append(1, "x", 0, 10),
                append(2, "y", 0, 10),
                get(3, Some(seen), 11, 12),
                get(1, Some(seen), 13, 14),
            ]);
        }
    }

    #[test]
    fn ops_that_only_touch_at_one_instant_count_as_concurrent() {
        // The put completes at 10 and the read is invoked at 10: closed intervals overlap,
        // so the read may still be ordered first.
        assert_linearizable(&[put(1, "a", 0, 10), get(2, None, 10, 12)]);
    }

    #[test]
    fn interleaved_keys_are_checked_independently() {
        assert_linearizable(&[
            on("x", put(1, "1", 0, 10)),
            on("y", put(2, "1", 0, 10)),
            on("x", get(3, Some("1"), 11, 12)),
            on("y", get(3, None, 5, 8)),
            on("y", get(4, Some("1"), 11, 12)),
        ]);
    }

    // ---- unknown outcomes ---------------------------------------------------------------

    #[test]
    fn unknown_outcome_write_may_have_taken_effect() {
        assert_linearizable(&[
            put(1, "a", 0, 10),
            unknown(2, KvOp::Put("b".into()), 5),
            get(3, Some("b"), 20, 30),
        ]);
    }

    #[test]
    fn unknown_outcome_write_may_never_have_taken_effect() {
        assert_linearizable(&[
            put(1, "a", 0, 10),
            unknown(2, KvOp::Put("b".into()), 5),
            get(3, Some("a"), 20, 30),
        ]);
        assert_linearizable(&[
            put(1, "a", 0, 10),
            unknown(2, KvOp::Append("b".into()), 5),
            unknown(2, KvOp::Delete, 6),
            get(3, Some("a"), 20, 30),
            get(3, Some("a"), 40, 50),
        ]);
    }

    #[test]
    fn unknown_outcome_write_may_take_effect_long_after_its_client_gave_up() {
        assert_linearizable(&[
            put(1, "a", 0, 10),
            unknown(2, KvOp::Append("b".into()), 5),
            get(3, Some("a"), 20, 30),
            get(3, Some("a"), 40, 50),
            get(3, Some("ab"), 60, 70),
        ]);
    }

    #[test]
    fn unknown_outcome_get_is_ignored() {
        let mut lost_read = unknown(2, KvOp::Get, 2);
        lost_read.read = Some("never written".into());
        assert_linearizable(&[put(1, "a", 0, 1), lost_read, get(3, Some("a"), 5, 6)]);
    }

    // ---- histories that must fail -----------------------------------------------------

    #[test]
    fn read_of_value_written_only_after_the_read_completed_fails() {
        assert_violation(&[get(1, Some("a"), 0, 10), put(2, "a", 11, 20)]);
    }

    #[test]
    fn stale_read_after_newer_write_completed_fails() {
        assert_violation(&[
            put(1, "old", 0, 10),
            put(1, "new", 20, 30),
            get(2, Some("old"), 40, 50),
        ]);
    }

    #[test]
    fn two_reads_seeing_concurrent_appends_in_opposite_orders_fail() {
        assert_violation(&[
            append(1, "x", 0, 10),
            append(2, "y", 0, 10),
            get(3, Some("xy"), 20, 30),
            get(4, Some("yx"), 20, 30),
        ]);
    }

    #[test]
    fn append_applied_twice_fails() {
        assert_violation(&[append(1, "a", 0, 10), get(2, Some("aa"), 20, 30)]);
        // Retried without an answer, then acknowledged: still only one append was sent.
        assert_violation(&[
            unknown(1, KvOp::Append("a".into()), 0),
            get(2, Some("a"), 5, 6),
            get(2, Some("aa"), 20, 30),
        ]);
    }

    #[test]
    fn read_after_a_completed_delete_that_still_sees_the_value_fails() {
        assert_violation(&[
            put(1, "a", 0, 10),
            delete(1, 20, 30),
            get(2, Some("a"), 40, 50),
        ]);
    }

    #[test]
    fn read_of_a_value_nobody_wrote_fails() {
        assert_violation(&[
            put(1, "a", 0, 10),
            put(2, "b", 5, 15),
            get(3, Some("c"), 0, 20),
        ]);
    }

    #[test]
    fn append_to_missing_key_that_does_not_start_from_empty_fails() {
        assert_violation(&[append(1, "b", 0, 10), get(2, Some("ab"), 20, 30)]);
    }

    #[test]
    fn value_flipping_back_between_sequential_reads_fails() {
        // The write overlaps both reads, but once a read saw it, a later read cannot
        // un-see it.
        assert_violation(&[
            put(1, "old", 0, 1),
            put(2, "new", 10, 100),
            get(3, Some("new"), 20, 30),
            get(3, Some("old"), 40, 50),
        ]);
    }

    #[test]
    fn read_cannot_see_an_unknown_outcome_write_before_its_invoke() {
        assert_violation(&[
            get(1, Some("b"), 0, 10),
            unknown(2, KvOp::Put("b".into()), 20),
            get(1, Some("b"), 30, 40),
        ]);
        assert_violation(&[
            get(1, Some("b"), 0, 10),
            unknown(2, KvOp::Put("b".into()), 20),
        ]);
    }

    #[test]
    fn unknown_outcome_write_cannot_be_seen_then_unseen() {
        assert_violation(&[
            put(1, "a", 0, 1),
            unknown(2, KvOp::Append("x".into()), 2),
            get(3, Some("ax"), 10, 20),
            get(3, Some("a"), 30, 40),
        ]);
    }

    #[test]
    fn violation_names_the_broken_key_among_many() {
        let violation = check(&[
            on("a", put(1, "1", 0, 10)),
            on("a", get(2, Some("1"), 11, 12)),
            on("b", put(1, "1", 0, 10)),
            on("b", get(2, None, 11, 12)),
            on("c", get(2, None, 11, 12)),
        ])
        .unwrap_err();
        assert_eq!(violation.key, "b");
    }

    #[test]
    fn violation_message_lists_the_ops_and_the_longest_linearizable_prefix() {
        let violation = assert_violation(&[
            put(7, "a", 0, 10),
            append(8, "b", 20, 30),
            get(9, Some("a"), 40, 50),
            unknown(6, KvOp::Get, 45),
        ]);
        let text = violation.to_string();
        // The append cannot come before the read (it would see "ab") nor after it (it
        // completed first), so the longest prefix stops before the append.
        for expected in [
            "key \"k\"",
            "The key has 4 operations: 3 completed",
            "Longest linearizable prefix found: 1 op (1 of 3 completed ones)",
            "1. op 0: client 7 put \"a\" [0, 10]",
            "value after it: \"a\"",
            "Stuck at op 1: client 8 append \"b\" [20, 30]",
            "op 2: client 9 get -> \"a\" [40, 50]",
            "op 3: client 6 get (no reply) [45, ∞) outcome unknown (left out",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
    }

    #[test]
    fn op_completing_before_its_invoke_is_reported_not_a_panic() {
        let violation = check(&[put(1, "a", 10, 5)]).unwrap_err();
        assert!(violation.message.contains("invalid history"), "{violation}");
    }

    // ---- limits -------------------------------------------------------------------------

    #[test]
    fn check_with_limit_gives_up_when_the_search_exceeds_the_limit() {
        let history = [
            put(1, "a", 0, 1),
            append(1, "b", 2, 3),
            get(2, Some("ab"), 4, 5),
            delete(1, 6, 7),
        ];
        assert_eq!(check_with_limit(&history, 1), Ok(CheckOutcome::GaveUp));
        assert_eq!(
            check_with_limit(&history, 100),
            Ok(CheckOutcome::Linearizable)
        );
    }

    #[test]
    fn check_treats_giving_up_as_an_error_not_a_pass() {
        let history = [
            put(1, "a", 0, 1),
            get(2, Some("a"), 2, 3),
            get(2, Some("a"), 4, 5),
        ];
        let violation = check_strict(&history, 1).unwrap_err();
        assert_eq!(violation.key, "k");
        assert!(violation.message.contains("gave up"), "{violation}");
    }

    #[test]
    fn concurrent_appends_are_ordered_by_the_next_read_not_by_trying_every_order() {
        // Twelve concurrent appends then a read showing them in reverse: without the read
        // lookahead the search would try the appends' orders one by one (12! of them).
        let mut history: Vec<Operation> = (0..12)
            .map(|c| append(c, &format!("<{c}>"), 0, 100))
            .collect();
        let all: String = (0..12).rev().map(|c| format!("<{c}>")).collect();
        history.push(get(99, Some(&all), 101, 102));
        assert_eq!(
            check_with_limit(&history, 1_000),
            Ok(CheckOutcome::Linearizable)
        );
    }

    #[test]
    fn unknown_writes_nobody_saw_do_not_multiply_the_search() {
        // Forty timed-out writes that never happened, interleaved with reads.
        let mut history = vec![put(0, "base", 0, 1)];
        for i in 0..40u64 {
            history.push(unknown(
                1 + i,
                KvOp::Append(format!("<lost {i}>")),
                2 + 10 * i,
            ));
            history.push(unknown(
                1 + i,
                KvOp::Put(format!("<lost put {i}>")),
                3 + 10 * i,
            ));
            history.push(get(100, Some("base"), 5 + 10 * i, 8 + 10 * i));
        }
        assert_eq!(
            check_with_limit(&history, 1_000),
            Ok(CheckOutcome::Linearizable)
        );
    }

    // ---- randomized ---------------------------------------------------------------------

    /// A history from a real sequential execution: each client issues ops one after
    /// another; each op takes effect at a random instant inside its interval (an
    /// unknown-outcome write at a random instant after its invoke — possibly after its
    /// client gave up — or never), and reads return the value at their instant.
    ///
    /// Written values are unique unless `tokens` is non-empty, in which case they are drawn
    /// from it, so that different writes collide and appends combine ambiguously.
    fn generate(
        rng: &mut StdRng,
        keys: &[&str],
        clients: u64,
        ops_per_client: usize,
        unknown_rate: f64,
        tokens: &[&str],
    ) -> Vec<Operation> {
        let mut history = Vec::new();
        let mut effects = Vec::new(); // (instant, history index)
        for client in 0..clients {
            let mut now = rng.gen_range(0..20u64);
            for n in 0..ops_per_client {
                let invoke = now + rng.gen_range(1..=20);
                let duration = rng.gen_range(0..=60);
                let key = keys[rng.gen_range(0..keys.len())].to_string();
                let token = match tokens.len() {
                    0 => None,
                    len => Some(tokens[rng.gen_range(0..len)].to_string()),
                };
                let kind = match rng.gen_range(0..100) {
                    0..=39 => KvOp::Get,
                    40..=64 => KvOp::Put(token.unwrap_or_else(|| format!("<p{client}.{n}>"))),
                    65..=89 => KvOp::Append(token.unwrap_or_else(|| format!("<a{client}.{n}>"))),
                    _ => KvOp::Delete,
                };
                let lost = rng.gen_bool(unknown_rate);
                let index = history.len();
                if lost {
                    if kind != KvOp::Get && rng.gen_bool(0.5) {
                        effects.push((invoke + rng.gen_range(0..=200), index));
                    }
                    now = invoke + duration;
                    let read = (kind == KvOp::Get).then(|| "<garbage>".to_string());
                    history.push(Operation {
                        client,
                        key,
                        op: kind,
                        invoke,
                        complete: None,
                        read,
                    });
                } else {
                    let complete = invoke + duration;
                    effects.push((rng.gen_range(invoke..=complete), index));
                    now = complete;
                    history.push(Operation {
                        client,
                        key,
                        op: kind,
                        invoke,
                        complete: Some(complete),
                        read: None,
                    });
                }
            }
        }
        effects.sort_unstable();
        let mut map: HashMap<String, String> = HashMap::new();
        for (_, index) in effects {
            let operation = &mut history[index];
            match &operation.op {
                KvOp::Get => operation.read = map.get(&operation.key).cloned(),
                KvOp::Put(v) => {
                    map.insert(operation.key.clone(), v.clone());
                }
                KvOp::Append(v) => map.entry(operation.key.clone()).or_default().push_str(v),
                KvOp::Delete => {
                    map.remove(&operation.key);
                }
            }
        }
        history
    }

    /// Finds a read that must not see `put v`: a completed put `w1` of `v`, then a
    /// completed put or delete `w2` invoked after `w1` completed, then a completed read
    /// invoked after `w2` completed. Values are unique and none is a prefix of another, so
    /// in every linearization the read's value does not start with `v`.
    fn stale_read(history: &[Operation]) -> Option<(usize, String)> {
        let completed = |o: &&Operation| o.complete.is_some();
        for w1 in history.iter().filter(completed) {
            let (KvOp::Put(v), Some(c1)) = (&w1.op, w1.complete) else {
                continue;
            };
            for w2 in history.iter().filter(completed) {
                let Some(c2) = w2.complete else { continue };
                if w2.key != w1.key
                    || w2.invoke <= c1
                    || !matches!(w2.op, KvOp::Put(_) | KvOp::Delete)
                {
                    continue;
                }
                let read = history.iter().position(|r| {
                    r.key == w1.key && r.op == KvOp::Get && r.complete.is_some() && r.invoke > c2
                });
                if let Some(read) = read {
                    return Some((read, v.clone()));
                }
            }
        }
        None
    }

    #[test]
    fn random_histories_from_real_executions_pass_and_fail_once_a_read_is_corrupted() {
        let mut rng = StdRng::seed_from_u64(0x11ea_41ab);
        for round in 0..20 {
            let history = generate(&mut rng, &["x", "y", "z"], 8, 60, 0.1, &[]);
            if let Err(violation) = check(&history) {
                panic!("round {round}: a real execution was refuted:\n{violation}");
            }

            let (read, stale) = stale_read(&history).expect("the history has a stale-read spot");
            let mut corrupted = history.clone();
            corrupted[read].read = Some(stale);
            let violation = assert_violation(&corrupted);
            assert_eq!(violation.key, history[read].key, "round {round}");

            let reads: Vec<usize> = (0..history.len())
                .filter(|&i| history[i].op == KvOp::Get && history[i].complete.is_some())
                .collect();
            let read = reads[rng.gen_range(0..reads.len())];
            let mut corrupted = history.clone();
            corrupted[read].read = Some("<never written>".into());
            let violation = assert_violation(&corrupted);
            assert_eq!(violation.key, history[read].key, "round {round}");
        }
    }

    /// Linearizable or not, by trying every order of every admissible subset of ops: slow,
    /// obviously right, and independent of the search.
    fn brute_force(history: &[Operation]) -> bool {
        fn place(ops: &[&Operation], placed: &mut Vec<bool>, value: Option<String>) -> bool {
            if (0..ops.len()).all(|i| placed[i] || ops[i].complete.is_none()) {
                return true;
            }
            for i in 0..ops.len() {
                // Next must not be preceded in real time by an op not yet placed.
                let blocked = (0..ops.len()).any(|j| {
                    !placed[j] && j != i && ops[j].complete.is_some_and(|c| c < ops[i].invoke)
                });
                if placed[i] || blocked {
                    continue;
                }
                let after = match &ops[i].op {
                    KvOp::Get if ops[i].read != value => continue,
                    KvOp::Get => value.clone(),
                    KvOp::Put(v) => Some(v.clone()),
                    KvOp::Append(v) => Some(value.clone().unwrap_or_default() + v),
                    KvOp::Delete => None,
                };
                placed[i] = true;
                if place(ops, placed, after) {
                    return true;
                }
                placed[i] = false;
            }
            false
        }
        let ops: Vec<&Operation> = history
            .iter()
            .filter(|o| o.op != KvOp::Get || o.complete.is_some())
            .collect();
        place(&ops, &mut vec![false; ops.len()], None)
    }

    #[test]
    fn agrees_with_brute_force_on_small_random_histories() {
        let mut rng = StdRng::seed_from_u64(7);
        let values = ["a", "b", "ab"];
        let reads = [
            None,
            Some("a"),
            Some("b"),
            Some("ab"),
            Some("aa"),
            Some("ba"),
            Some("bab"),
        ];
        let (mut passed, mut failed) = (0, 0);
        for round in 0..3000 {
            let mut history = Vec::new();
            for client in 0..3 {
                let mut now = rng.gen_range(0..5u64);
                for _ in 0..rng.gen_range(1..=3) {
                    let invoke = now + rng.gen_range(0..4);
                    let complete = invoke + rng.gen_range(0..8);
                    let value = values[rng.gen_range(0..values.len())].to_string();
                    let kind = match rng.gen_range(0..4) {
                        0 => KvOp::Get,
                        1 => KvOp::Put(value),
                        2 => KvOp::Append(value),
                        _ => KvOp::Delete,
                    };
                    let read = reads[rng.gen_range(0..reads.len())].map(str::to_string);
                    let lost = rng.gen_bool(0.2);
                    history.push(Operation {
                        client,
                        key: "k".into(),
                        op: kind,
                        invoke,
                        complete: (!lost).then_some(complete),
                        read,
                    });
                    now = complete + 1;
                }
            }
            let expected = brute_force(&history);
            let got = check_with_limit(&history, 100_000);
            assert_eq!(
                got.is_ok(),
                expected,
                "round {round}: checker says {got:?}, brute force says {expected}: {history:#?}"
            );
            assert_ne!(got, Ok(CheckOutcome::GaveUp));
            if expected {
                passed += 1;
            } else {
                failed += 1;
            }
        }
        // Both answers were exercised plenty.
        assert!(
            passed > 300 && failed > 300,
            "passed {passed}, failed {failed}"
        );
    }

    /// Plain Wing & Gong search with exact memoization of (set of ops taken, value), none
    /// of the checker's shortcuts: the reference for histories too long for brute force.
    fn reference(history: &[Operation]) -> bool {
        fn go(
            ops: &[&Operation],
            done: u64,
            value: Option<String>,
            seen: &mut HashSet<(u64, Option<String>)>,
        ) -> bool {
            let pending = |i: usize| done & (1 << i) == 0;
            if (0..ops.len()).all(|i| !pending(i) || ops[i].complete.is_none()) {
                return true;
            }
            if !seen.insert((done, value.clone())) {
                return false;
            }
            (0..ops.len()).any(|i| {
                let minimal = pending(i)
                    && !(0..ops.len()).any(|j| {
                        pending(j) && j != i && ops[j].complete.is_some_and(|c| c < ops[i].invoke)
                    });
                let after = match &ops[i].op {
                    _ if !minimal => return false,
                    KvOp::Get if ops[i].read != value => return false,
                    KvOp::Get => value.clone(),
                    KvOp::Put(v) => Some(v.clone()),
                    KvOp::Append(v) => Some(value.clone().unwrap_or_default() + v),
                    KvOp::Delete => None,
                };
                go(ops, done | (1 << i), after, seen)
            })
        }
        let ops: Vec<&Operation> = history
            .iter()
            .filter(|o| o.op != KvOp::Get || o.complete.is_some())
            .collect();
        assert!(ops.len() <= 64);
        go(&ops, 0, None, &mut HashSet::new())
    }

    #[test]
    fn agrees_with_plain_memoized_search_on_medium_random_histories() {
        let mut rng = StdRng::seed_from_u64(99);
        let (mut passed, mut failed) = (0, 0);
        for round in 0..400 {
            // Few distinct values, so that different writes collide and appends combine.
            let clients = rng.gen_range(3..=6);
            let tokens = ["x", "y", "xy"];
            let mut history = generate(
                &mut rng,
                &["k"],
                clients,
                36 / clients as usize,
                0.15,
                &tokens,
            );
            // Half the time, one read is changed to some plausible value; whether that
            // breaks the history is for the reference to say.
            let reads: Vec<usize> = (0..history.len())
                .filter(|&i| history[i].op == KvOp::Get && history[i].complete.is_some())
                .collect();
            if !reads.is_empty() && rng.gen_bool(0.5) {
                let read = reads[rng.gen_range(0..reads.len())];
                history[read].read = [None, Some("x"), Some("y"), Some("xy"), Some("yx")]
                    [rng.gen_range(0..5)]
                .map(str::to_string);
            }
            let expected = reference(&history);
            let got = check_with_limit(&history, 1_000_000);
            assert_ne!(got, Ok(CheckOutcome::GaveUp), "round {round}");
            assert_eq!(
                got.is_ok(),
                expected,
                "round {round}: checker says {got:?}, reference says {expected}: {history:#?}"
            );
            if expected {
                passed += 1;
            } else {
                failed += 1;
            }
        }
        assert!(
            passed > 40 && failed > 40,
            "passed {passed}, failed {failed}"
        );
    }

    #[test]
    fn two_thousand_ops_on_one_key_from_sixteen_clients_check_quickly() {
        // About twelve ops in flight at any time, 2% of them timing out.
        let mut rng = StdRng::seed_from_u64(2000);
        let history = generate(&mut rng, &["hot"], 16, 125, 0.02, &[]);
        assert_eq!(history.len(), 2000);
        assert_linearizable(&history);
        // It needs about ten thousand configurations; a hundred thousand flags a regression
        // long before it would make `check` give up.
        assert_eq!(
            check_with_limit(&history, 100_000),
            Ok(CheckOutcome::Linearizable)
        );
    }

    #[test]
    fn two_thousand_ops_on_one_key_from_thirty_two_clients_check_without_giving_up() {
        // About twenty-five ops in flight at any time on one key: ~0.5M configurations.
        let mut rng = StdRng::seed_from_u64(3200);
        let history = generate(&mut rng, &["hot"], 32, 63, 0.02, &[]);
        assert_linearizable(&history);
    }
}
