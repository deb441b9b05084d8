//! The vocabulary of the Raft core: ids, log entries, hard state and messages.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::kv::Command;

/// A node's id: a positive integer, unique in the cluster.
pub type NodeId = u64;
/// A Raft term (§5.1). Term 0 exists only before anything happened.
pub type Term = u64;
/// A log position, starting at 1. Index 0 is the empty prefix (term 0).
pub type Index = u64;

/// What a log entry carries.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Payload {
    /// Appended by every new leader at the start of its term (§8) so it can commit
    /// entries of earlier terms and serve reads.
    Noop,
    /// A client write for the state machine.
    Command(Command),
}

/// One log entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Entry {
    pub index: Index,
    pub term: Term,
    pub payload: Payload,
}

impl Entry {
    pub fn approx_size(&self) -> usize {
        match &self.payload {
            Payload::Noop => 24,
            Payload::Command(c) => 24 + c.approx_size(),
        }
    }
}

/// What the core knows of a snapshot: the last log position it covers (§7). The
/// snapshot's contents belong to the state machine and storage, never to the core.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// The last entry the snapshot includes.
    pub index: Index,
    /// That entry's term.
    pub term: Term,
}

/// The state that must be on stable storage before the node answers any RPC (Figure 2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    pub term: Term,
    pub voted_for: Option<NodeId>,
}

/// A message between two Raft nodes. `term` is the sender's current term, except in
/// `PreVote` (the term the sender would campaign in) and a granted `PreVoteResponse`
/// (echoing that term).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub from: NodeId,
    pub to: NodeId,
    pub term: Term,
    pub body: Body,
}

/// The RPCs of Figure 2, plus pre-vote (thesis §9.6).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Body {
    /// "Would you vote for me in `term`?" Changes nobody's term or vote.
    PreVote {
        last_index: Index,
        last_term: Term,
    },
    PreVoteResponse {
        granted: bool,
    },
    /// RequestVote (§5.2, §5.4.1).
    Vote {
        last_index: Index,
        last_term: Term,
    },
    VoteResponse {
        granted: bool,
    },
    /// AppendEntries (§5.3); with no entries it is a heartbeat. `read_round` is the
    /// leader's latest ReadIndex round, echoed back to confirm leadership for reads.
    Append {
        prev_index: Index,
        prev_term: Term,
        entries: Vec<Entry>,
        commit: Index,
        read_round: u64,
    },
    AppendResponse {
        result: AppendResult,
        read_round: u64,
    },
    /// InstallSnapshot (§7): the follower needs entries the leader has compacted
    /// away. The message names the snapshot; its data travels beside it (the
    /// runtime streams it in chunks), and the follower's core sees the message only
    /// once the data is complete and durable. Answered by an `AppendResponse`.
    InstallSnapshot {
        meta: SnapshotMeta,
    },
}

/// A follower's answer to an AppendEntries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppendResult {
    /// The follower's log matches the leader's up to and including this index.
    Match(Index),
    /// The consistency check failed at `prev_index`. The hint lets the leader skip a
    /// whole divergent term at once (§5.3, "fast backup"): if `conflict_term` is set,
    /// the follower's entry at `prev_index` has that term and the follower's first
    /// entry of that term is at `conflict_index`; otherwise the follower's log ends at
    /// `conflict_index - 1`. `conflict_index` 0 means the append was refused for its
    /// stale term alone.
    Conflict {
        prev_index: Index,
        conflict_term: Option<Term>,
        conflict_index: Index,
    },
}

/// `index@term`, the way positions are printed everywhere in traces and logs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Pos(pub Index, pub Term);

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.0, self.1)
    }
}

impl fmt::Display for Message {
    /// One-line trace form: `n1@3 → n2 Append base=5@2 [6@3..7@3] commit=5`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}@{} → n{} ", self.from, self.term, self.to)?;
        match &self.body {
            Body::PreVote {
                last_index,
                last_term,
            } => {
                write!(f, "PreVote last={}", Pos(*last_index, *last_term))
            }
            Body::PreVoteResponse { granted } => write!(f, "PreVoteResponse granted={granted}"),
            Body::Vote {
                last_index,
                last_term,
            } => {
                write!(f, "Vote last={}", Pos(*last_index, *last_term))
            }
            Body::VoteResponse { granted } => write!(f, "VoteResponse granted={granted}"),
            Body::Append {
                prev_index,
                prev_term,
                entries,
                commit,
                read_round,
            } => {
                write!(f, "Append base={}", Pos(*prev_index, *prev_term))?;
                match (entries.first(), entries.last()) {
                    (Some(a), Some(b)) if entries.len() > 1 => {
                        write!(f, " [{}..{}]", Pos(a.index, a.term), Pos(b.index, b.term))?
                    }
                    (Some(a), _) => write!(f, " [{}]", Pos(a.index, a.term))?,
                    _ => {}
                }
                write!(f, " commit={commit}")?;
                if *read_round > 0 {
                    write!(f, " read={read_round}")?;
                }
                Ok(())
            }
            Body::InstallSnapshot { meta } => {
                write!(f, "InstallSnapshot {}", Pos(meta.index, meta.term))
            }
            Body::AppendResponse { result, read_round } => {
                match result {
                    AppendResult::Match(i) => write!(f, "AppendResponse match={i}")?,
                    AppendResult::Conflict {
                        prev_index,
                        conflict_term,
                        conflict_index,
                    } => {
                        write!(f, "AppendResponse reject base={prev_index} hint=")?;
                        match conflict_term {
                            Some(t) => write!(f, "{}", Pos(*conflict_index, *t))?,
                            None => write!(f, "end@{conflict_index}")?,
                        }
                    }
                }
                if *read_round > 0 {
                    write!(f, " read={read_round}")?;
                }
                Ok(())
            }
        }
    }
}
