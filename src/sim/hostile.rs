//! Hostile messages: a seeded generator that throws hand-made Raft messages at the
//! nodes of a running simulation, to show that no input crashes a node or breaks what
//! it guarantees (docs/testing.md, "The hostile sweep").
//!
//! Two modes, because the two kinds of hostility allow different promises:
//!
//! - [`HostileMode::Malformed`]: messages that break a rule of the core's validation
//!   (absurd terms up to `u64::MAX`, gaps in entries, impossible positions, commits and
//!   matches beyond any log, hints out of range, rounds never started, a second leader
//!   in a term, truncations of committed entries; ids 0, the target's own, strangers'),
//!   from anyone, and well-formed messages from strangers. Every one must be refused, so
//!   the honest members keep every invariant of the simulator, and recover and answer
//!   their clients linearizably as without them. Each message is checked against the
//!   target's validation before it is thrown: one the core would accept is a bug, of
//!   this generator or of the validation, and fails the run.
//! - [`HostileMode::Forged`]: well-formed messages claiming members' ids (what the
//!   cluster secret exists to stop), and some malformed ones. Forged entries may be
//!   committed and applied, so the cluster-wide invariants are off
//!   ([`super::invariants::Invariants::local_only`]); what must hold is each node's own
//!   guarantees: no panic, no term beyond `MAX_TERM`, no committed entry truncated or
//!   changed (see `sim::node`).
//!
//! A message is thrown at a node at the start of a tick, first in its batch, so it meets
//! exactly the state it was made for. The generator draws from its own RNG, so a run
//! without it is the honest run, bit for bit.

use rand::{rngs::StdRng, Rng, SeedableRng};

use crate::{
    kv::{Command, Session, SessionLimits, Stamp, Store, WriteOp},
    raft::{
        AppendResult, Body, Entry, Index, Message, NodeId, Payload, RaftNode, SnapshotMeta, Term,
        MAX_INDEX, MAX_TERM, MAX_TERM_JUMP,
    },
    replica::Snapshot,
};

/// Which hostility a run faces (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostileMode {
    /// Messages the core must refuse, from anyone; well-formed ones from strangers.
    Malformed,
    /// Well-formed messages claiming members' ids (and some malformed ones).
    Forged,
}

impl HostileMode {
    pub fn as_str(self) -> &'static str {
        match self {
            HostileMode::Malformed => "malformed",
            HostileMode::Forged => "forged",
        }
    }
}

/// How much hostility a run faces.
#[derive(Clone, Copy, Debug)]
pub struct HostileConfig {
    pub mode: HostileMode,
    /// Per tick, the probability that each live node is thrown one message.
    pub rate: f64,
}

/// One malformed message the target's state allows, if it allows one of this kind.
type Malformation = fn(&mut Hostile, &RaftNode) -> Option<Message>;

/// Every kind of malformed message, each breaking one rule of `raft::validate`. The
/// first few need nothing of the target; the last four need a leader, or committed
/// entries, and give way to another kind when the target has none.
const MALFORMATIONS: &[Malformation] = &[
    Hostile::absurd_term,
    Hostile::not_from_a_member,
    Hostile::addressed_elsewhere,
    Hostile::entries_with_a_gap,
    Hostile::entry_terms_disordered,
    Hostile::impossible_position,
    Hostile::hint_out_of_range,
    Hostile::second_leader,
    Hostile::contradicts_committed,
    Hostile::answer_beyond_log,
    Hostile::read_round_never_started,
];

/// The generator. See the module documentation.
pub struct Hostile {
    config: HostileConfig,
    rng: StdRng,
    members: Vec<NodeId>,
}

impl Hostile {
    pub fn new(config: HostileConfig, seed: u64, members: &[NodeId]) -> Hostile {
        Hostile {
            config,
            // Its own stream: without hostile messages, the run draws what it always did.
            rng: StdRng::seed_from_u64(seed ^ 0x686f_7374_696c_6521),
            members: members.to_vec(),
        }
    }

    pub fn mode(&self) -> HostileMode {
        self.config.mode
    }

    /// Whether a node is thrown a message this tick.
    pub fn strikes(&mut self) -> bool {
        self.rng.gen_bool(self.config.rate)
    }

    /// A message for `target`, made for its state now, and the data of the snapshot an
    /// `InstallSnapshot` names (an empty store: whatever a forger has).
    pub fn message(&mut self, target: &RaftNode) -> (Message, Option<Snapshot>) {
        let m = match self.config.mode {
            HostileMode::Forged if !self.rng.gen_ratio(1, 4) => self.forged(target),
            HostileMode::Malformed | HostileMode::Forged => self.malformed(target),
        };
        let data = match m.body {
            Body::InstallSnapshot { meta } => Some(Snapshot {
                meta,
                members: self.members.clone(),
                store: Store::new(),
            }),
            _ => None,
        };
        (m, data)
    }

    /// A well-formed message from a member (or from the target itself, in a cluster of
    /// one, where there is no other member to claim to be).
    fn forged(&mut self, target: &RaftNode) -> Message {
        let term = self.plausible_term(target);
        let body = self.well_formed(target, term);
        Message {
            from: self.member_but(target.id()),
            to: target.id(),
            term,
            body,
        }
    }

    fn malformed(&mut self, target: &RaftNode) -> Message {
        for _ in 0..8 {
            let kind = MALFORMATIONS[self.rng.gen_range(0..MALFORMATIONS.len())];
            if let Some(m) = kind(self, target) {
                return m;
            }
        }
        self.absurd_term(target).expect("always possible")
    }

    // ----- the malformations ---------------------------------------------------------

    fn absurd_term(&mut self, target: &RaftNode) -> Option<Message> {
        let term = match self.rng.gen_range(0..3) {
            0 => u64::MAX,
            1 => MAX_TERM + 1 + self.rng.gen_range(0..1000),
            _ => (target.term() + MAX_TERM_JUMP + 1).saturating_add(self.rng.gen_range(0..1000)),
        };
        let body = self.well_formed(target, term);
        Some(self.claiming_a_member(target, term, body))
    }

    fn not_from_a_member(&mut self, target: &RaftNode) -> Option<Message> {
        let term = self.plausible_term(target);
        let body = self.well_formed(target, term);
        let from = match self.rng.gen_range(0..4) {
            0 => 0,
            1 => target.id(),
            2 => u64::MAX,
            _ => self.stranger(),
        };
        Some(Message {
            from,
            to: target.id(),
            term,
            body,
        })
    }

    fn addressed_elsewhere(&mut self, target: &RaftNode) -> Option<Message> {
        let mut m = self.forged(target);
        m.to = match self.rng.gen_range(0..3) {
            0 => 0,
            1 => self.stranger(),
            _ => self.member_but(target.id()),
        };
        (m.to != target.id()).then_some(m)
    }

    fn entries_with_a_gap(&mut self, target: &RaftNode) -> Option<Message> {
        let term = self.plausible_term(target);
        let (prev_index, prev_term) = match self.rng.gen_ratio(1, 5) {
            // Near the largest index: the entries would run past it.
            true => (MAX_INDEX - 1, term),
            false => self.position(target, term),
        };
        let mut entries = self.entries(prev_index, prev_term, term, 2);
        let at = self.rng.gen_range(0..entries.len());
        match self.rng.gen_range(0..3) {
            0 => entries[at].index += 1 + self.rng.gen_range(0..3), // a gap
            1 => entries[at].index -= 1,                            // a repeat
            _ => entries.reverse(),                                 // backwards
        }
        let body = Body::Append {
            prev_index,
            prev_term,
            entries,
            commit: 0,
            read_round: 0,
        };
        Some(self.claiming_a_member(target, term, body))
    }

    fn entry_terms_disordered(&mut self, target: &RaftNode) -> Option<Message> {
        let term = self.plausible_term(target);
        let (prev_index, prev_term) = self.position(target, term);
        let mut entries = self.entries(prev_index, prev_term, term, 2);
        let last = entries.len() - 1;
        match self.rng.gen_range(0..4) {
            // An entry of a term after the message's.
            0 => entries[last].term = term + 1 + self.rng.gen_range(0..5),
            // Term 0, which no entry has.
            1 => entries[0].term = 0,
            // Decreasing (needs two terms to choose from).
            2 if term >= 2 => {
                entries[0].term = term;
                entries[1].term = self.rng.gen_range(1..term);
            }
            // Before the base's term (needs a base of a term after 1).
            3 if prev_term >= 2 => entries[0].term = self.rng.gen_range(1..prev_term),
            _ => entries[last].term = u64::MAX,
        }
        let body = Body::Append {
            prev_index,
            prev_term,
            entries,
            commit: 0,
            read_round: 0,
        };
        Some(self.claiming_a_member(target, term, body))
    }

    fn impossible_position(&mut self, target: &RaftNode) -> Option<Message> {
        let term = self.plausible_term(target);
        let beyond = MAX_INDEX + 1 + self.rng.gen_range(0..1000);
        let later = term + 1 + self.rng.gen_range(0..5);
        let last = target.last_index().max(1);
        let append = |prev_index, prev_term, commit| Body::Append {
            prev_index,
            prev_term,
            entries: Vec::new(),
            commit,
            read_round: 0,
        };
        let body = match self.rng.gen_range(0..9) {
            0 => append(last, later, 0),
            1 => append(0, self.rng.gen_range(1..=term), 0),
            2 => append(self.rng.gen_range(1..=last), 0, 0),
            3 => append(beyond, term, 0),
            4 => append(0, 0, [beyond, u64::MAX][self.rng.gen_range(0..2)]),
            5 => Body::Vote {
                last_index: last,
                last_term: later,
            },
            6 => Body::PreVote {
                last_index: last,
                last_term: later,
            },
            7 => Body::InstallSnapshot {
                meta: SnapshotMeta {
                    index: last,
                    term: later,
                },
            },
            _ => Body::AppendResponse {
                result: match self.rng.gen() {
                    true => AppendResult::Match(beyond),
                    false => AppendResult::Conflict {
                        prev_index: beyond,
                        conflict_term: None,
                        conflict_index: 0,
                    },
                },
                read_round: 0,
            },
        };
        Some(self.claiming_a_member(target, term, body))
    }

    fn hint_out_of_range(&mut self, target: &RaftNode) -> Option<Message> {
        let term = self.plausible_term(target);
        let prev_index = self.rng.gen_range(1..=target.last_index().max(1));
        let (conflict_term, conflict_index) = match self.rng.gen_range(0..4) {
            0 => (None, prev_index + 1 + self.rng.gen_range(0..10)),
            1 => (Some(0), self.rng.gen_range(1..=prev_index)),
            2 => (Some(term + 1), self.rng.gen_range(1..=prev_index)),
            _ => (Some(self.rng.gen_range(1..=term)), 0),
        };
        let body = Body::AppendResponse {
            result: AppendResult::Conflict {
                prev_index,
                conflict_term,
                conflict_index,
            },
            read_round: 0,
        };
        Some(self.claiming_a_member(target, term, body))
    }

    /// An append or snapshot in the target's term from another node than the leader it
    /// follows (or than itself, while it leads).
    fn second_leader(&mut self, target: &RaftNode) -> Option<Message> {
        let leader = target.leader()?;
        let others: Vec<NodeId> = self
            .members
            .iter()
            .copied()
            .filter(|&m| m != leader && m != target.id())
            .collect();
        let from = *others.get(self.rng.gen_range(0..others.len().max(1)))?;
        let term = target.term();
        let body = match self.rng.gen_ratio(1, 4) {
            true => Body::InstallSnapshot {
                meta: self.snapshot_position(target, term),
            },
            false => self.append(target, term),
        };
        Some(Message {
            from,
            to: target.id(),
            term,
            body,
        })
    }

    /// An append (or snapshot) in the target's term whose base or entries contradict an
    /// entry the target holds at or below its commit index: obeying it would truncate
    /// a committed entry.
    fn contradicts_committed(&mut self, target: &RaftNode) -> Option<Message> {
        let (log, commit, term) = (target.log(), target.commit_index(), target.term());
        let first = log.base().index.max(1);
        if commit < first {
            return None; // nothing committed and held
        }
        let j = self.rng.gen_range(first..=commit);
        let ours = log.term(j)?;
        // The entry before `j`, unless `j` is the base.
        let before = log.term(j - 1);
        // Another term for index `j` that keeps the message well-formed otherwise.
        let other = match before {
            _ if ours != term => term,
            Some(b) if b >= 1 && b != ours => b,
            _ => return None,
        };
        let body = match (self.rng.gen_range(0..3), before) {
            // Entries from `j` on: obeying would truncate at `j`.
            (0, Some(before)) => Body::Append {
                prev_index: j - 1,
                prev_term: before,
                entries: (j..=commit.min(j + 2))
                    .map(|index| noop(index, other))
                    .collect(),
                commit,
                read_round: 0,
            },
            (1, _) => Body::InstallSnapshot {
                meta: SnapshotMeta {
                    index: j,
                    term: other,
                },
            },
            _ => Body::Append {
                prev_index: j,
                prev_term: other,
                entries: Vec::new(),
                commit,
                read_round: 0,
            },
        };
        // From the leader it follows, if any, so that only this rule is broken.
        let from = match target.leader() {
            Some(l) if l != target.id() => l,
            _ => self.member_but(target.id()),
        };
        Some(Message {
            from,
            to: target.id(),
            term,
            body,
        })
    }

    /// A leader's follower acknowledging, or refusing, entries past the leader's log.
    fn answer_beyond_log(&mut self, target: &RaftNode) -> Option<Message> {
        if !target.is_leader() {
            return None;
        }
        let beyond = target.last_index() + 1 + self.rng.gen_range(0..1000);
        let result = match self.rng.gen() {
            true => AppendResult::Match(beyond),
            false => AppendResult::Conflict {
                prev_index: beyond,
                conflict_term: None,
                conflict_index: self.rng.gen_range(0..=beyond),
            },
        };
        let body = Body::AppendResponse {
            result,
            read_round: 0,
        };
        Some(self.claiming_a_member(target, target.term(), body))
    }

    /// A leader's follower confirming a ReadIndex round the leader never started.
    fn read_round_never_started(&mut self, target: &RaftNode) -> Option<Message> {
        if !target.is_leader() {
            return None;
        }
        let body = Body::AppendResponse {
            result: AppendResult::Match(self.rng.gen_range(0..=target.last_index())),
            read_round: target.read_round() + 1 + self.rng.gen_range(0..100),
        };
        Some(self.claiming_a_member(target, target.term(), body))
    }

    // ----- well-formed parts ---------------------------------------------------------

    /// A message of `term` claiming to come from another member.
    fn claiming_a_member(&mut self, target: &RaftNode, term: Term, body: Body) -> Message {
        Message {
            from: self.member_but(target.id()),
            to: target.id(),
            term,
            body,
        }
    }

    /// Any message body that keeps every stateless rule, at `term`.
    fn well_formed(&mut self, target: &RaftNode, term: Term) -> Body {
        match self.rng.gen_range(0..7) {
            0 | 1 => {
                let (last_index, last_term) = self.position(target, term);
                match self.rng.gen() {
                    true => Body::PreVote {
                        last_index,
                        last_term,
                    },
                    false => Body::Vote {
                        last_index,
                        last_term,
                    },
                }
            }
            2 => Body::PreVoteResponse {
                granted: self.rng.gen(),
            },
            3 => Body::VoteResponse {
                granted: self.rng.gen(),
            },
            4 => self.append(target, term),
            5 => self.answer(target, term),
            _ => Body::InstallSnapshot {
                meta: self.snapshot_position(target, term),
            },
        }
    }

    fn append(&mut self, target: &RaftNode, term: Term) -> Body {
        let (prev_index, prev_term) = self.position(target, term);
        let entries = self.entries(prev_index, prev_term, term, 0);
        let last_new = prev_index + entries.len() as Index;
        Body::Append {
            prev_index,
            prev_term,
            entries,
            commit: self.rng.gen_range(0..=last_new + 3),
            read_round: self.rng.gen_range(0..=target.read_round() + 2),
        }
    }

    /// A follower's answer that a leader of `term` could have been sent.
    fn answer(&mut self, target: &RaftNode, term: Term) -> Body {
        let last = target.last_index();
        let result = match self.rng.gen() {
            true => AppendResult::Match(self.rng.gen_range(0..=last)),
            false => {
                let prev_index = self.rng.gen_range(0..=last);
                let conflict_term = (prev_index > 0 && self.rng.gen()).then(|| {
                    // A term the follower might have there.
                    let ours = target.log().term(prev_index).unwrap_or(term);
                    self.rng.gen_range(1..=ours.clamp(1, term))
                });
                let lowest = u64::from(conflict_term.is_some());
                AppendResult::Conflict {
                    prev_index,
                    conflict_term,
                    conflict_index: self.rng.gen_range(lowest..=prev_index.max(lowest)),
                }
            }
        };
        Body::AppendResponse {
            result,
            read_round: self.rng.gen_range(0..=target.read_round()),
        }
    }

    /// Consecutive entries after `prev_index@prev_term`, at least `at_least` (terms
    /// from the base's to `term`), carrying every kind of command a log may hold.
    fn entries(
        &mut self,
        prev_index: Index,
        prev_term: Term,
        term: Term,
        at_least: usize,
    ) -> Vec<Entry> {
        let count = self.rng.gen_range(at_least..=at_least.max(3));
        let mut t = prev_term.clamp(1, term.max(1));
        (1..=count as Index)
            .map(|k| {
                t = self.rng.gen_range(t..=term.max(t));
                let payload = match self.rng.gen_ratio(1, 3) {
                    true => Payload::Noop,
                    false => Payload::Command(self.command()),
                };
                Entry {
                    index: prev_index + k,
                    term: t,
                    payload,
                }
            })
            .collect()
    }

    /// A command as a forger might write it: odd sessions, seq 0, a registration with a
    /// key, absurd stamps and session rules, sometimes a large value.
    fn command(&mut self) -> Command {
        let value = match self.rng.gen_ratio(1, 50) {
            true => "v".repeat(64 << 10),
            false => "forged".into(),
        };
        let op = match self.rng.gen_range(0..4) {
            0 => WriteOp::Put { value },
            1 => WriteOp::Append { value },
            2 => WriteOp::Delete,
            _ => WriteOp::Register,
        };
        let session = match self.rng.gen_range(0..4) {
            0 => None,
            1 => Some(Session::registered(self.rng.gen_range(0..4), 0)),
            2 => Some(Session::registered(u64::MAX, u64::MAX)),
            _ => Some(Session::named("", self.rng.gen_range(0..3))),
        };
        let stamp = Stamp {
            time: [0, 1, u64::MAX][self.rng.gen_range(0..3)],
            sessions: self.rng.gen_ratio(1, 5).then(|| SessionLimits {
                timeout_ms: [0, 1, u64::MAX][self.rng.gen_range(0..3)],
                max_sessions: [0, 1, u64::MAX][self.rng.gen_range(0..3)],
            }),
        };
        Command {
            key: ["k", "", "forged"][self.rng.gen_range(0..3)].into(),
            op,
            session,
            stamp,
        }
    }

    /// A log position for a message of `term`: mostly one the target holds (at, near or
    /// past its commit index), with a term no later than `term`.
    fn position(&mut self, target: &RaftNode, term: Term) -> (Index, Term) {
        let log = target.log();
        let low = target
            .commit_index()
            .saturating_sub(2)
            .max(log.base().index);
        let index = self.rng.gen_range(low..=target.last_index() + 2);
        if index == 0 || term == 0 {
            return (0, 0);
        }
        let held = log
            .term(index)
            .unwrap_or_else(|| self.rng.gen_range(1..=term));
        (index, held.clamp(1, term))
    }

    /// A snapshot's position for a message of `term`: somewhere around the log's end.
    fn snapshot_position(&mut self, target: &RaftNode, term: Term) -> SnapshotMeta {
        let (index, term) = self.position(target, term);
        SnapshotMeta { index, term }
    }

    /// Mostly the target's term, sometimes a little before or after, rarely the largest
    /// jump a message may make; never 0, which only a brand-new node has.
    fn plausible_term(&mut self, target: &RaftNode) -> Term {
        let t = target.term();
        let term = match self.rng.gen_range(0..50) {
            0..=4 => t.saturating_sub(self.rng.gen_range(1..=3)),
            5..=14 => t.saturating_add(self.rng.gen_range(1..=2)),
            15 => t.saturating_add(MAX_TERM_JUMP),
            _ => t,
        };
        term.max(1)
    }

    /// A member other than `id` (`id` itself in a cluster of one).
    fn member_but(&mut self, id: NodeId) -> NodeId {
        let others: Vec<NodeId> = self.members.iter().copied().filter(|&m| m != id).collect();
        match others.is_empty() {
            true => id,
            false => others[self.rng.gen_range(0..others.len())],
        }
    }

    /// An id that is no member's.
    fn stranger(&mut self) -> NodeId {
        let highest = self.members.iter().copied().max().unwrap_or(0);
        highest + self.rng.gen_range(1..=1000)
    }
}

fn noop(index: Index, term: Term) -> Entry {
    Entry {
        index,
        term,
        payload: Payload::Noop,
    }
}
