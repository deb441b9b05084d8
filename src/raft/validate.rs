//! Every message is checked here, field by field, before the core acts on it.
//!
//! Authentication (the cluster secret) keeps strangers off the raft port, but not a
//! member with a bug, a stale binary or a stolen secret. One forged line must not take
//! a node down: before these rules, a heartbeat claiming term `u64::MAX` put every node
//! at a term that could never be followed, and one append with a gap in its entries
//! tripped an assert on the state thread. So [`check`] runs at the top of
//! `RaftNode::step`, as a list of named rules ([`RULES`]); a message that breaks one is
//! dropped whole, unanswered, and reported as a [`Violation`] (in `Ready::violations`,
//! logged by the server as `protocol violation from n2: ...`).
//!
//! The rules hold for every message an honest member sends, so an honest cluster never
//! reports one (the simulator fails a run that does). Some need this node's state (its
//! term, commit index, log, and whom it follows); those are sound only under Raft's own
//! guarantees, and each says why.
//!
//! What the rules cannot catch is a well-formed lie from a member's id: an append with
//! invented entries at a plausible position, a false acknowledgement within the log.
//! Stopping those is what the secret is for. Even then the asserts that remain in the
//! core guard only the node's own invariants, which no message can reach: committed
//! entries are never truncated, terms never pass [`MAX_TERM`] and arithmetic on
//! indexes and terms never wraps.

use std::fmt;

use super::{AppendResult, Body, Index, Log, Message, NodeId, Term};

/// The highest term a node ever takes or starts. A term is one election, so an honest
/// cluster electing a thousand times a second would need a hundred million years to
/// get here; a message beyond it can only be forged. A node at this term does not
/// campaign any more (`Ready::campaign_refused`): there is no next term to campaign in.
/// Far enough below `u64::MAX` that `term + 1` never wraps.
pub const MAX_TERM: Term = 1 << 62;

/// The largest step over this node's term that a message may claim. Honest terms move
/// one election at a time, so no honest peer is ever this far ahead; a forged term
/// within it costs 2^30 messages to reach [`MAX_TERM`].
pub const MAX_TERM_JUMP: Term = 1 << 32;

/// The highest log index a message may name: far beyond any real log, far enough below
/// `u64::MAX` that `index + entries` and `index + 1` never wrap.
pub const MAX_INDEX: Index = 1 << 62;

/// The rules a message must keep, in the order they are checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rule {
    /// `to` is this node.
    Addressee,
    /// `from` is a member other than this node.
    Sender,
    /// No term beyond [`MAX_TERM`].
    TermLimit,
    /// No term more than [`MAX_TERM_JUMP`] beyond this node's.
    TermJump,
    /// Every log position is `0@0` or has index and term from 1, no index beyond
    /// [`MAX_INDEX`], and no term later than the message's (a node cannot hold
    /// entries of a term after its own).
    Position,
    /// An append's entries follow each other directly after its base.
    Consecutive,
    /// An append's entry terms never decrease: from the base's term on, up to the
    /// message's term.
    EntryTerms,
    /// A rejection's hint lies within the append it answers.
    Hint,
    /// One leader per term (§5.2): nobody but the leader this node follows, or itself
    /// while leading, sends appends or snapshots in its term.
    OneLeader,
    /// Committed entries never change (§5.4): a message at this node's term or later
    /// comes from a leader holding every entry this node knows is committed, so it
    /// never names another entry at or below the commit index. Obeying one that did
    /// would truncate committed entries.
    Committed,
    /// A follower answering this leader names only entries this leader has: a leader's
    /// log only grows while it leads, and every append came from it.
    BeyondLog,
    /// A follower echoes only ReadIndex rounds this leader started.
    ReadRound,
}

impl Rule {
    /// What the rule forbids, in a few words (the start of a log line).
    pub fn describe(self) -> &'static str {
        match self {
            Rule::Addressee => "addressed to another node",
            Rule::Sender => "not from another member",
            Rule::TermLimit => "term beyond the limit",
            Rule::TermJump => "term too far ahead",
            Rule::Position => "impossible log position",
            Rule::Consecutive => "entries not consecutive",
            Rule::EntryTerms => "entry terms out of order",
            Rule::Hint => "rejection hint out of range",
            Rule::OneLeader => "a second leader in one term",
            Rule::Committed => "contradicts a committed entry",
            Rule::BeyondLog => "names entries the leader does not have",
            Rule::ReadRound => "read round never started",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// A message the core refused because it broke a rule. The message was dropped whole:
/// nothing in it was acted on, and nothing was answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Whom the message claims to come from.
    pub from: NodeId,
    pub rule: Rule,
    /// The offending values, e.g. `term 18446744073709551615 > 4611686018427387904`.
    pub detail: String,
}

impl fmt::Display for Violation {
    /// `term beyond the limit: term 18446744073709551615 > 4611686018427387904`; the
    /// runtime adds who sent it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.rule, self.detail)
    }
}

/// What the receiving node knows that the rules are checked against.
pub(super) struct Receiver<'a> {
    pub id: NodeId,
    /// The other members.
    pub peers: &'a [NodeId],
    pub term: Term,
    pub commit: Index,
    pub log: &'a Log,
    /// The leader of `term` this node knows of (itself while leading).
    pub leader: Option<NodeId>,
    pub leading: bool,
    /// The latest ReadIndex round this node started.
    pub read_round: u64,
}

/// A broken rule, before it is attributed to the sender.
type Broken = (Rule, String);

/// One rule's check: `Err` names the rule and the offending values.
type Check = fn(&Message, &Receiver) -> Result<(), Broken>;

/// The rules, in order: who may speak, which terms exist, what a message may say on its
/// own, then what it may say given this node's state.
const RULES: &[Check] = &[
    addressed_here,
    from_another_member,
    term_within_limit,
    term_within_jump,
    positions_possible,
    entries_consecutive,
    entry_terms_ordered,
    hint_within_append,
    one_leader_per_term,
    committed_entries_stand,
    answers_what_was_sent,
];

/// Checks `m` against every rule; the first one broken is the verdict.
pub(super) fn check(m: &Message, at: &Receiver) -> Result<(), Violation> {
    RULES
        .iter()
        .try_for_each(|rule| rule(m, at))
        .map_err(|(rule, detail)| Violation {
            from: m.from,
            rule,
            detail,
        })
}

/// `Ok` if `kept`, else `rule` broken, with the offending values from `detail`.
fn require(kept: bool, rule: Rule, detail: impl FnOnce() -> String) -> Result<(), Broken> {
    if kept {
        Ok(())
    } else {
        Err((rule, detail()))
    }
}

fn addressed_here(m: &Message, at: &Receiver) -> Result<(), Broken> {
    require(m.to == at.id, Rule::Addressee, || {
        format!("to n{}, this is n{}", m.to, at.id)
    })
}

fn from_another_member(m: &Message, at: &Receiver) -> Result<(), Broken> {
    require(at.peers.contains(&m.from), Rule::Sender, || {
        if m.from == at.id {
            "claims to come from this node".into()
        } else {
            format!("n{} is not a member", m.from)
        }
    })
}

fn term_within_limit(m: &Message, _: &Receiver) -> Result<(), Broken> {
    require(m.term <= MAX_TERM, Rule::TermLimit, || {
        format!("term {} > {MAX_TERM}", m.term)
    })
}

fn term_within_jump(m: &Message, at: &Receiver) -> Result<(), Broken> {
    let highest = at.term.saturating_add(MAX_TERM_JUMP);
    require(m.term <= highest, Rule::TermJump, || {
        format!(
            "term {} is more than {MAX_TERM_JUMP} beyond {}",
            m.term, at.term
        )
    })
}

/// [`Rule::Position`] for every position a message names.
fn positions_possible(m: &Message, _: &Receiver) -> Result<(), Broken> {
    let position = |what: &str, index: Index, term: Term| -> Result<(), Broken> {
        let broken = |why: String| Err((Rule::Position, format!("{what} {index}@{term}: {why}")));
        if index > MAX_INDEX {
            broken(format!("index beyond {MAX_INDEX}"))
        } else if (index == 0) != (term == 0) {
            broken("only index 0 has term 0".into())
        } else if term > m.term {
            broken(format!("term after the message's term {}", m.term))
        } else {
            Ok(())
        }
    };
    let index = |what: &str, index: Index| {
        require(index <= MAX_INDEX, Rule::Position, || {
            format!("{what} {index} beyond {MAX_INDEX}")
        })
    };
    match &m.body {
        Body::PreVote {
            last_index,
            last_term,
        }
        | Body::Vote {
            last_index,
            last_term,
        } => position("last entry", *last_index, *last_term),
        Body::Append {
            prev_index,
            prev_term,
            commit,
            ..
        } => {
            position("base", *prev_index, *prev_term)?;
            index("commit", *commit)
        }
        Body::InstallSnapshot { meta } => position("snapshot", meta.index, meta.term),
        Body::AppendResponse {
            result: AppendResult::Match(i),
            ..
        } => index("match", *i),
        Body::AppendResponse {
            result: AppendResult::Conflict { prev_index, .. },
            ..
        } => index("rejected base", *prev_index),
        Body::PreVoteResponse { .. } | Body::VoteResponse { .. } => Ok(()),
    }
}

fn entries_consecutive(m: &Message, _: &Receiver) -> Result<(), Broken> {
    let Body::Append {
        prev_index,
        entries,
        ..
    } = &m.body
    else {
        return Ok(());
    };
    let mut due = *prev_index; // at most MAX_INDEX (`positions_possible`)
    for e in entries {
        due += 1;
        if e.index != due || due > MAX_INDEX {
            return Err((
                Rule::Consecutive,
                format!("entry {} where {due} was due (base {prev_index})", e.index),
            ));
        }
    }
    Ok(())
}

fn entry_terms_ordered(m: &Message, _: &Receiver) -> Result<(), Broken> {
    let Body::Append {
        prev_term, entries, ..
    } = &m.body
    else {
        return Ok(());
    };
    // Entry terms start at 1 even after the empty base 0@0.
    let mut floor = (*prev_term).max(1);
    for e in entries {
        if e.term < floor {
            return Err((
                Rule::EntryTerms,
                format!("entry {}@{} after term {floor}", e.index, e.term),
            ));
        }
        if e.term > m.term {
            return Err((
                Rule::EntryTerms,
                format!(
                    "entry {}@{} after the message's term {}",
                    e.index, e.term, m.term
                ),
            ));
        }
        floor = e.term;
    }
    Ok(())
}

/// A follower's hint is where its log meets the rejected base: at or before that base,
/// with a term no later than its own (see `AppendResult::Conflict`).
fn hint_within_append(m: &Message, _: &Receiver) -> Result<(), Broken> {
    let Body::AppendResponse {
        result:
            AppendResult::Conflict {
                prev_index,
                conflict_term,
                conflict_index,
            },
        ..
    } = &m.body
    else {
        return Ok(());
    };
    let broken = |why: &str| Err((Rule::Hint, format!("{why} (rejected base {prev_index})")));
    if conflict_index > prev_index {
        return broken(&format!("hint {conflict_index} beyond the base"));
    }
    match conflict_term {
        Some(t) if *t == 0 || *t > m.term || *conflict_index == 0 => broken(&format!(
            "hint {conflict_index}@{t} is no entry of the follower"
        )),
        _ => Ok(()),
    }
}

fn one_leader_per_term(m: &Message, at: &Receiver) -> Result<(), Broken> {
    let from_a_leader = matches!(m.body, Body::Append { .. } | Body::InstallSnapshot { .. });
    let Some(leader) = at.leader.filter(|_| from_a_leader && m.term == at.term) else {
        return Ok(());
    };
    require(leader == m.from, Rule::OneLeader, || {
        let led_by = if leader == at.id {
            "this node".to_string()
        } else {
            format!("n{leader}")
        };
        format!(
            "n{} acts as leader of term {}, led by {led_by}",
            m.from, m.term
        )
    })
}

fn committed_entries_stand(m: &Message, at: &Receiver) -> Result<(), Broken> {
    if m.term < at.term {
        // A stale leader's log may differ from ours at entries it never committed; the
        // message is refused for its term anyway, and nothing in it is used.
        return Ok(());
    }
    let contradiction = match &m.body {
        Body::Append {
            prev_index,
            prev_term,
            entries,
            ..
        } => first_contradiction(
            at,
            std::iter::once((*prev_index, *prev_term))
                .chain(entries.iter().map(|e| (e.index, e.term))),
        ),
        Body::InstallSnapshot { meta } => {
            first_contradiction(at, std::iter::once((meta.index, meta.term)))
        }
        _ => None,
    };
    match contradiction {
        None => Ok(()),
        Some((index, term, ours)) => Err((
            Rule::Committed,
            format!(
                "names {index}@{term}, but {index}@{ours} is committed here (commit {})",
                at.commit
            ),
        )),
    }
}

/// The first of `named` (in index order) at or below the commit index whose term
/// differs from this node's entry there, with that entry's term. Compacted entries are
/// committed everywhere and cannot be compared: they are skipped.
fn first_contradiction(
    at: &Receiver,
    named: impl Iterator<Item = (Index, Term)>,
) -> Option<(Index, Term, Term)> {
    named
        .take_while(|&(index, _)| index <= at.commit)
        .find_map(|(index, term)| match at.log.term(index) {
            Some(ours) if ours != term => Some((index, term, ours)),
            _ => None,
        })
}

fn answers_what_was_sent(m: &Message, at: &Receiver) -> Result<(), Broken> {
    let Body::AppendResponse { result, read_round } = &m.body else {
        return Ok(());
    };
    if !at.leading || m.term != at.term {
        // Not an answer to this leadership: only its term is looked at.
        return Ok(());
    }
    let last = at.log.last_index();
    let named = match result {
        AppendResult::Match(index) => *index,
        AppendResult::Conflict { prev_index, .. } => *prev_index,
    };
    if named > last {
        return Err((
            Rule::BeyondLog,
            format!("answers about index {named}, but the log ends at {last}"),
        ));
    }
    if *read_round > at.read_round {
        return Err((
            Rule::ReadRound,
            format!(
                "read={read_round}, the latest round started is {}",
                at.read_round
            ),
        ));
    }
    Ok(())
}
