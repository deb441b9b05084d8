//! The search for a linearization of one key's history: Wing & Gong's depth-first search
//! with Lowe's just-in-time linearization and memoization of configurations, plus the
//! exact shortcuts of "Making it fast" in the essay of `check/mod.rs`, which explains why
//! each one never changes the verdict.
//!
//! [`Searcher::run`] is the whole loop: gather the candidates that may be linearized next
//! ([`Searcher::gather_candidates`]), try them in earliest-deadline-first order
//! ([`Searcher::take`]), and when none works, undo the last choice and go on with the next
//! candidate of that configuration ([`Searcher::backtrack`]). The read lookahead
//! ([`Searcher::dooms_a_pending_read`]) rejects a write as soon as some read in flight
//! could no longer see what it returned.

use super::fingerprint::Memo;
use super::history::{Event, KeyHistory, Links, ReadIndex, HEAD, TAIL};
use super::model::{Step, Text, Value};

/// How far the read lookahead walks the event list before it stops looking (pruning less,
/// never wrongly): it runs at every step, so a read in flight for very long must not make
/// every step walk the whole history.
const LOOKAHEAD_LIMIT: usize = 1_000;

/// The result of one key's search.
pub(super) enum Search {
    /// A linearization: search op ids in order (completed ops, and the unknown-outcome ops
    /// it chose to include).
    Linearizable(Vec<usize>),
    /// None exists; the longest linearizable prefix found.
    Stuck(Vec<usize>),
    /// Too many configurations.
    GaveUp,
}

impl KeyHistory<'_> {
    /// The just-in-time depth-first search with memoization (see the essay in
    /// `check/mod.rs`).
    pub(super) fn search(&self, max_states: usize) -> Search {
        let mut searcher = Searcher::new(self, max_states);
        searcher.run()
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
    /// It is linearized now, on top of the stack.
    Taken,
    /// The model refused it, the lookahead doomed it, or the configuration was seen before.
    Rejected,
    /// The memo table outgrew the limit.
    GaveUp,
}

/// The mutable state of one key's search.
pub(super) struct Searcher<'k, 'h> {
    /// The history searched.
    key: &'k KeyHistory<'h>,
    /// The event list, with the linearized ops lifted out.
    links: Links,
    /// Completed reads not linearized yet.
    reads: ReadIndex<'h>,
    /// The key's value after the linearized ops.
    pub(super) value: Value,
    /// Zobrist fingerprint of the set of linearized ops.
    linearized: u128,
    /// Completed ops not linearized yet.
    remaining: usize,
    /// The linearized ops, in order.
    stack: Vec<Frame>,
    /// Fingerprints of the configurations explored.
    memo: Memo,
    /// Give up when `memo` grows past this.
    max_states: usize,
    /// The longest linearizable prefix so far (search op ids), for the explanation.
    best: Vec<usize>,
    /// How much of `stack` still agrees with `best`.
    agree: usize,
    /// Scratch: the writes that may be linearized next, as (deadline, node), sorted.
    candidates: Vec<(u64, usize)>,
    /// Scratch: effect classes met while gathering candidates.
    classes_seen: Vec<usize>,
    /// Scratch for the lookahead: suffixes of pending appends.
    appends: Vec<&'h str>,
    /// Scratch for the lookahead: values of pending puts.
    puts: Vec<&'k str>,
}

impl<'k, 'h> Searcher<'k, 'h> {
    /// A search at the start of `key`'s history: nothing linearized, the key absent.
    pub(super) fn new(key: &'k KeyHistory<'h>, max_states: usize) -> Searcher<'k, 'h> {
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

    /// The search loop (see the essay in `check/mod.rs`).
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
    pub(super) fn replay(&mut self, op: usize) {
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
    pub(super) fn first_blind_read(&mut self, taking: usize, value: &Value) -> Option<usize> {
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
