//! The rules of `validate.rs`, one test each: a message that breaks one is dropped
//! whole (no term, vote, log, commit or role changes, nothing answered) and reported in
//! `Ready::violations`. Each test also shows that the honest neighbour of the broken
//! message is still taken.

use super::*;

/// Steps `m` into `n` and returns the rule it broke, checking that nothing else came
/// of it.
fn refused(n: &mut RaftNode, m: Message) -> Rule {
    let before = (n.hard_state(), n.role(), n.leader(), n.commit_index());
    let log_before: Vec<(Index, Term)> = (1..=n.last_index())
        .filter_map(|i| Some((i, n.log().term(i)?)))
        .collect();
    n.step(m);
    let r = n.ready();
    assert_eq!(r.violations.len(), 1, "one violation: {:?}", r.violations);
    assert!(r.messages.is_empty(), "nothing answered: {:?}", r.messages);
    assert!(r.hard_state.is_none() && r.entries.is_empty());
    assert_eq!(
        (n.hard_state(), n.role(), n.leader(), n.commit_index()),
        before
    );
    let log_after: Vec<(Index, Term)> = (1..=n.last_index())
        .filter_map(|i| Some((i, n.log().term(i)?)))
        .collect();
    assert_eq!(log_after, log_before, "the log is untouched");
    r.violations[0].rule
}

/// Steps `m` into `n` and checks that it was taken (no violation).
fn taken(n: &mut RaftNode, m: Message) -> Ready {
    n.step(m);
    let r = n.ready();
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    r
}

fn noop(index: Index, term: Term) -> Entry {
    Entry {
        index,
        term,
        payload: Payload::Noop,
    }
}

fn append(prev: (Index, Term), entries: Vec<Entry>, commit: Index) -> Body {
    Body::Append {
        prev_index: prev.0,
        prev_term: prev.1,
        entries,
        commit,
        read_round: 0,
    }
}

fn matched(index: Index, read_round: u64) -> Body {
    Body::AppendResponse {
        result: AppendResult::Match(index),
        read_round,
    }
}

#[test]
fn a_heartbeat_with_the_largest_term_changes_no_term() {
    // The incident of issue 9: one line with term u64::MAX from a member's id put every
    // node at a term that could never be followed.
    let mut n = node_with_log(2, 3, 4, &[1, 4]);
    let m = msg(1, 2, u64::MAX, heartbeat(2, 4, 2));
    assert_eq!(refused(&mut n, m), Rule::TermLimit);
    let m = msg(1, 2, MAX_TERM + 1, heartbeat(2, 4, 2));
    assert_eq!(refused(&mut n, m), Rule::TermLimit);
    taken(&mut n, msg(1, 2, 5, heartbeat(2, 4, 2)));
    assert_eq!(n.term(), 5);
}

#[test]
fn a_term_beyond_the_largest_jump_is_dropped() {
    let mut n = node_with_log(2, 3, 7, &[]);
    let far = 7 + MAX_TERM_JUMP + 1;
    assert_eq!(
        refused(
            &mut n,
            msg(
                3,
                2,
                far,
                Body::Vote {
                    last_index: 0,
                    last_term: 0
                }
            )
        ),
        Rule::TermJump
    );
    assert_eq!(
        refused(
            &mut n,
            msg(
                3,
                2,
                far,
                Body::PreVote {
                    last_index: 0,
                    last_term: 0
                }
            )
        ),
        Rule::TermJump
    );
    taken(&mut n, msg(1, 2, 7 + MAX_TERM_JUMP, heartbeat(0, 0, 0)));
    assert_eq!(n.term(), 7 + MAX_TERM_JUMP);
}

#[test]
fn only_other_members_may_speak_and_only_to_this_node() {
    let mut n = node(2, 3);
    for from in [0, 2, 4, u64::MAX] {
        assert_eq!(
            refused(&mut n, msg(from, 2, 1, heartbeat(0, 0, 0))),
            Rule::Sender
        );
    }
    for to in [0, 1, 3, 9] {
        assert_eq!(
            refused(&mut n, msg(1, to, 1, heartbeat(0, 0, 0))),
            Rule::Addressee
        );
    }
    taken(&mut n, msg(1, 2, 1, heartbeat(0, 0, 0)));
}

#[test]
fn non_consecutive_entries_are_refused_whole() {
    // Before validation, this append made the follower's state thread panic.
    let mut n = node_with_log(2, 3, 2, &[1, 1]);
    let gap = append((2, 1), vec![noop(3, 2), noop(5, 2)], 5);
    assert_eq!(refused(&mut n, msg(1, 2, 2, gap)), Rule::Consecutive);
    let repeat = append((2, 1), vec![noop(3, 2), noop(3, 2)], 3);
    assert_eq!(refused(&mut n, msg(1, 2, 2, repeat)), Rule::Consecutive);
    let not_after_base = append((2, 1), vec![noop(4, 2)], 4);
    assert_eq!(
        refused(&mut n, msg(1, 2, 2, not_after_base)),
        Rule::Consecutive
    );
    let past_the_limit = append((MAX_INDEX, 1), vec![noop(MAX_INDEX + 1, 2)], 0);
    assert_eq!(
        refused(&mut n, msg(1, 2, 2, past_the_limit)),
        Rule::Consecutive
    );
    let r = taken(
        &mut n,
        msg(1, 2, 2, append((2, 1), vec![noop(3, 2), noop(4, 2)], 0)),
    );
    assert_eq!(response(&r), AppendResult::Match(4));
}

#[test]
fn entry_terms_never_decrease_nor_pass_the_message_term() {
    let mut n = node_with_log(2, 3, 3, &[1, 2]);
    let cases = [
        vec![noop(3, 3), noop(4, 2)], // decreasing
        vec![noop(3, 1)],             // before the base's term
        vec![noop(3, 4)],             // after the message's term
    ];
    for entries in cases {
        let m = msg(1, 2, 3, append((2, 2), entries, 0));
        assert_eq!(refused(&mut n, m), Rule::EntryTerms);
    }
    let mut fresh = node(2, 3);
    let m = msg(1, 2, 1, append((0, 0), vec![noop(1, 0)], 0));
    assert_eq!(
        refused(&mut fresh, m),
        Rule::EntryTerms,
        "no entry has term 0"
    );
    taken(
        &mut n,
        msg(1, 2, 3, append((2, 2), vec![noop(3, 2), noop(4, 3)], 0)),
    );
}

#[test]
fn impossible_log_positions_are_refused() {
    let mut n = node_with_log(2, 3, 3, &[1, 2]);
    let vote = |last_index, last_term| Body::Vote {
        last_index,
        last_term,
    };
    let snapshot = |index, term| Body::InstallSnapshot {
        meta: SnapshotMeta { index, term },
    };
    let cases = [
        append((2, 4), vec![], 0),             // base of a later term
        append((2, 0), vec![], 0),             // an entry of term 0
        append((0, 1), vec![], 0),             // index 0 of term 1
        append((MAX_INDEX + 1, 3), vec![], 0), // past the largest index
        append((2, 2), vec![], MAX_INDEX + 1), // a commit past it
        vote(9, 4),                            // a candidate from the future
        snapshot(9, 4),                        // a snapshot from the future
        matched(MAX_INDEX + 1, 0),             // an acknowledgement past it
    ];
    for body in cases {
        let m = msg(1, 2, 3, body.clone());
        assert_eq!(refused(&mut n, m), Rule::Position, "{body:?}");
    }
    taken(&mut n, msg(3, 2, 4, vote(9, 3)));
}

#[test]
fn an_append_that_would_truncate_a_committed_entry_is_refused() {
    // §5.4: committed entries never change. The follower holds 1@1 2@1 3@2 with 3
    // committed; a leader of term 3 that names another entry at or below 3 is lying.
    let mut n = node_with_log(2, 3, 2, &[1, 1, 2]);
    taken(&mut n, msg(1, 2, 2, heartbeat(3, 2, 3)));
    assert_eq!(n.commit_index(), 3);
    let truncating = append((1, 1), vec![noop(2, 3), noop(3, 3)], 3);
    assert_eq!(
        refused(&mut n, msg(3, 2, 3, truncating.clone())),
        Rule::Committed
    );
    let at_commit = append((3, 3), vec![], 3);
    assert_eq!(refused(&mut n, msg(3, 2, 3, at_commit)), Rule::Committed);
    let snapshot = Body::InstallSnapshot {
        meta: SnapshotMeta { index: 2, term: 2 },
    };
    assert_eq!(refused(&mut n, msg(3, 2, 3, snapshot)), Rule::Committed);
    // A stale leader's log may differ from ours where it never committed: its message
    // is refused for its term, as always, and is no violation.
    let mut stale = node_with_log(2, 3, 2, &[1, 1, 2]);
    taken(&mut stale, msg(1, 2, 2, heartbeat(3, 2, 3)));
    let r = taken(
        &mut stale,
        msg(3, 2, 1, append((1, 1), vec![noop(2, 1)], 3)),
    );
    assert!(matches!(
        response(&r),
        AppendResult::Conflict {
            conflict_index: 0,
            ..
        }
    ));
    // Entries past the commit index are the leader's to replace.
    let r = taken(&mut n, msg(3, 2, 3, append((3, 2), vec![noop(4, 3)], 3)));
    assert_eq!(response(&r), AppendResult::Match(4));
}

#[test]
fn only_one_node_leads_a_term() {
    // §5.2, election safety: a follower of n1 in term 2 refuses appends of term 2 from
    // n3, and a leader refuses them from anyone.
    let mut n = node_with_log(2, 3, 2, &[1]);
    taken(&mut n, msg(1, 2, 2, heartbeat(1, 1, 0)));
    assert_eq!(n.leader(), Some(1));
    assert_eq!(
        refused(&mut n, msg(3, 2, 2, heartbeat(1, 1, 0))),
        Rule::OneLeader
    );
    let mut l = leader(3);
    let term = l.term();
    assert_eq!(
        refused(&mut l, msg(2, 1, term, heartbeat(0, 0, 0))),
        Rule::OneLeader
    );
    // A later term has a leader of its own.
    taken(&mut n, msg(3, 2, 3, heartbeat(1, 1, 0)));
    assert_eq!(n.leader(), Some(3));
}

#[test]
fn a_leader_ignores_answers_about_entries_it_does_not_have() {
    let mut l = leader(3);
    let (term, last) = (l.term(), l.last_index());
    assert_eq!(
        refused(&mut l, msg(2, 1, term, matched(last + 5, 0))),
        Rule::BeyondLog
    );
    let beyond = Body::AppendResponse {
        result: AppendResult::Conflict {
            prev_index: last + 5,
            conflict_term: None,
            conflict_index: 1,
        },
        read_round: 0,
    };
    assert_eq!(refused(&mut l, msg(2, 1, term, beyond)), Rule::BeyondLog);
    taken(&mut l, msg(2, 1, term, matched(last, 0)));
    assert_eq!(l.commit_index(), last, "the real acknowledgement commits");
}

#[test]
fn a_leader_ignores_read_rounds_it_never_started() {
    let mut l = leader(3);
    let term = l.term();
    let m = msg(2, 1, term, matched(0, l.read_round() + 1));
    assert_eq!(refused(&mut l, m), Rule::ReadRound);
}

#[test]
fn rejection_hints_stay_within_the_append_they_answer() {
    let mut l = leader(3);
    let term = l.term();
    let reject = |conflict_term, conflict_index| Body::AppendResponse {
        result: AppendResult::Conflict {
            prev_index: 1,
            conflict_term,
            conflict_index,
        },
        read_round: 0,
    };
    for body in [
        reject(None, 2),
        reject(Some(0), 1),
        reject(Some(term + 1), 1),
        reject(Some(1), 0),
    ] {
        assert_eq!(
            refused(&mut l, msg(2, 1, term, body.clone())),
            Rule::Hint,
            "{body:?}"
        );
    }
}

#[test]
fn a_node_at_the_term_limit_does_not_campaign() {
    // There is no term after MAX_TERM to campaign in: the node waits and says why.
    let mut n = node_with_log(1, 3, MAX_TERM, &[]);
    for _ in 0..100 {
        n.tick();
    }
    let r = n.ready();
    assert!(r.campaign_refused);
    assert_eq!((n.role(), n.term()), (Role::Follower, MAX_TERM));
    assert!(r.messages.is_empty() && r.hard_state.is_none());
    // One below it, a node still campaigns, into the last term there is.
    let mut n = node_with_log(1, 3, MAX_TERM - 1, &[]);
    let r = time_out(&mut n);
    assert!(!r.campaign_refused);
    assert!(r.messages.iter().all(|m| m.term == MAX_TERM));
}
