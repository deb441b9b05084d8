//! Unit tests of the Raft rules, one per rule, each naming the paper section it checks.
//! Nodes are driven by hand: messages are built and delivered explicitly.

use super::*;
use crate::kv::{Command, WriteOp};

fn config() -> Config {
    Config {
        election_ticks: 10,
        heartbeat_ticks: 2,
        max_inflight: 3,
        max_append_bytes: 1 << 20,
    }
}

fn node(id: NodeId, n: u64) -> RaftNode {
    let members: Vec<NodeId> = (1..=n).collect();
    RaftNode::new(
        id,
        &members,
        config(),
        id,
        HardState::default(),
        SnapshotMeta::default(),
        Vec::new(),
    )
}

fn node_with_log(id: NodeId, n: u64, term: Term, terms: &[Term]) -> RaftNode {
    let members: Vec<NodeId> = (1..=n).collect();
    let entries = super::log::tests::noop_entries(terms);
    let hs = HardState {
        term,
        voted_for: None,
    };
    RaftNode::new(
        id,
        &members,
        config(),
        id,
        hs,
        SnapshotMeta::default(),
        entries,
    )
}

fn put(v: &str) -> Command {
    Command {
        key: "k".into(),
        op: WriteOp::Put { value: v.into() },
        session: None,
    }
}

fn msg(from: NodeId, to: NodeId, term: Term, body: Body) -> Message {
    Message {
        from,
        to,
        term,
        body,
    }
}

/// Ticks until the node starts a pre-vote.
fn time_out(n: &mut RaftNode) -> Ready {
    for _ in 0..100 {
        n.tick();
        if n.role() != Role::Follower {
            return n.ready();
        }
    }
    panic!("no election timeout");
}

/// Persists everything the node hands out, as a runtime would.
fn persist(n: &mut RaftNode, ready: &Ready) {
    if let Some(last) = ready.entries.last() {
        n.persisted(last.index, last.term);
    }
}

/// Makes node 1 of an `n`-node cluster leader with votes from node 2 (and more as needed).
fn leader(n: u64) -> RaftNode {
    let mut l = node(1, n);
    let r = time_out(&mut l);
    let term = l.term() + 1;
    for peer in 2..=(n / 2 + 1) {
        l.step(msg(peer, 1, term, Body::PreVoteResponse { granted: true }));
    }
    assert_eq!(l.role(), Role::Candidate);
    for peer in 2..=(n / 2 + 1) {
        l.step(msg(peer, 1, term, Body::VoteResponse { granted: true }));
    }
    assert_eq!(l.role(), Role::Leader);
    let r2 = l.ready();
    persist(&mut l, &r2);
    drop(r);
    l
}

fn appends(ready: &Ready) -> Vec<(NodeId, Index, Vec<Entry>)> {
    ready
        .messages
        .iter()
        .filter_map(|m| match &m.body {
            Body::Append {
                prev_index,
                entries,
                ..
            } => Some((m.to, *prev_index, entries.clone())),
            _ => None,
        })
        .collect()
}

fn response(ready: &Ready) -> AppendResult {
    ready
        .messages
        .iter()
        .find_map(|m| match &m.body {
            Body::AppendResponse { result, .. } => Some(result.clone()),
            _ => None,
        })
        .expect("an append response")
}

// ----- elections -------------------------------------------------------------------

#[test]
fn election_timeout_starts_a_pre_vote_that_does_not_raise_the_term() {
    // Thesis §9.6: a pre-candidate asks with term+1 but keeps its own term.
    let mut n = node(1, 3);
    let r = time_out(&mut n);
    assert_eq!(n.role(), Role::PreCandidate);
    assert_eq!(n.term(), 0);
    assert!(r.hard_state.is_none(), "a pre-vote changes nothing durable");
    let prevotes: Vec<_> = r.messages.iter().filter(|m| m.term == 1).collect();
    assert_eq!(prevotes.len(), 2);
    assert!(prevotes
        .iter()
        .all(|m| matches!(m.body, Body::PreVote { .. })));
}

#[test]
fn election_timeouts_are_randomized() {
    // §5.2: randomized timeouts make split votes rare.
    let mut timeouts = std::collections::BTreeSet::new();
    for seed in 0..20 {
        let mut n = RaftNode::new(
            1,
            &[1, 2, 3],
            config(),
            seed,
            HardState::default(),
            SnapshotMeta::default(),
            vec![],
        );
        let mut ticks = 0;
        while n.role() == Role::Follower {
            n.tick();
            ticks += 1;
        }
        assert!((10..20).contains(&ticks));
        timeouts.insert(ticks);
    }
    assert!(timeouts.len() > 3, "timeouts vary: {timeouts:?}");
}

#[test]
fn winning_a_pre_vote_starts_an_election_with_a_durable_self_vote() {
    // §5.2: increment term, vote for self, ask for votes; Figure 2: persist before sending.
    let mut n = node(1, 3);
    time_out(&mut n);
    n.step(msg(2, 1, 1, Body::PreVoteResponse { granted: true }));
    assert_eq!(n.role(), Role::Candidate);
    let r = n.ready();
    assert_eq!(
        r.hard_state,
        Some(HardState {
            term: 1,
            voted_for: Some(1)
        })
    );
    assert_eq!(
        r.messages
            .iter()
            .filter(|m| matches!(m.body, Body::Vote { .. }))
            .count(),
        2
    );
}

#[test]
fn a_majority_of_votes_makes_a_leader_that_appends_a_noop() {
    // §5.2 and §8: a new leader commits a no-op of its own term.
    let mut l = leader(3);
    assert_eq!(l.last_index(), 1);
    assert_eq!(l.log().get(1).unwrap().payload, Payload::Noop);
    assert_eq!(l.log().get(1).unwrap().term, l.term());
    l.tick();
    l.tick();
    let r = l.ready();
    assert_eq!(appends(&r).len(), 2, "heartbeats/probes to both peers");
}

#[test]
fn votes_go_only_to_candidates_with_up_to_date_logs() {
    // §5.4.1: the election restriction.
    let mut n = node_with_log(1, 3, 2, &[1, 2, 2]);
    n.step(msg(
        2,
        1,
        3,
        Body::Vote {
            last_index: 5,
            last_term: 1,
        },
    ));
    let r = n.ready();
    assert!(matches!(
        r.messages[0].body,
        Body::VoteResponse { granted: false }
    ));
    assert_eq!(
        n.term(),
        3,
        "the higher term is adopted even when the vote is refused"
    );
    n.step(msg(
        3,
        1,
        3,
        Body::Vote {
            last_index: 3,
            last_term: 2,
        },
    ));
    let r = n.ready();
    assert!(matches!(
        r.messages[0].body,
        Body::VoteResponse { granted: true }
    ));
    assert_eq!(
        r.hard_state,
        Some(HardState {
            term: 3,
            voted_for: Some(3)
        })
    );
}

#[test]
fn at_most_one_vote_per_term() {
    // §5.2: each server votes for at most one candidate in a given term.
    let mut n = node(1, 3);
    n.step(msg(
        2,
        1,
        1,
        Body::Vote {
            last_index: 0,
            last_term: 0,
        },
    ));
    n.step(msg(
        3,
        1,
        1,
        Body::Vote {
            last_index: 0,
            last_term: 0,
        },
    ));
    n.step(msg(
        2,
        1,
        1,
        Body::Vote {
            last_index: 0,
            last_term: 0,
        },
    ));
    let r = n.ready();
    let grants: Vec<(NodeId, bool)> = r
        .messages
        .iter()
        .filter_map(|m| match m.body {
            Body::VoteResponse { granted } => Some((m.to, granted)),
            _ => None,
        })
        .collect();
    assert_eq!(grants, vec![(2, true), (3, false), (2, true)]);
}

#[test]
fn pre_votes_are_refused_while_a_leader_is_alive() {
    // Thesis §9.6 + §4.2.3: a node that hears from its leader does not help a returning
    // node disrupt it, and a pre-vote never changes the receiver's term.
    let mut n = node(1, 3);
    n.step(msg(2, 1, 4, heartbeat(0, 0, 0)));
    n.ready();
    n.step(msg(
        3,
        1,
        9,
        Body::PreVote {
            last_index: 10,
            last_term: 8,
        },
    ));
    let r = n.ready();
    assert!(matches!(
        r.messages[0].body,
        Body::PreVoteResponse { granted: false }
    ));
    assert_eq!(n.term(), 4);
    // A real vote request with a higher term is ignored entirely during the lease.
    n.step(msg(
        3,
        1,
        9,
        Body::Vote {
            last_index: 10,
            last_term: 8,
        },
    ));
    assert!(n.ready().messages.is_empty());
    assert_eq!(n.term(), 4);
    // Once the leader has been silent for an election timeout, the pre-vote is granted.
    for _ in 0..10 {
        n.tick();
    }
    n.ready();
    n.step(msg(
        3,
        1,
        9,
        Body::PreVote {
            last_index: 10,
            last_term: 8,
        },
    ));
    let r = n.ready();
    assert!(r
        .messages
        .iter()
        .any(|m| matches!(m.body, Body::PreVoteResponse { granted: true })));
}

fn heartbeat(prev_index: Index, prev_term: Term, commit: Index) -> Body {
    Body::Append {
        prev_index,
        prev_term,
        entries: vec![],
        commit,
        read_round: 0,
    }
}

#[test]
fn messages_from_stale_terms_are_answered_with_the_current_term() {
    // Figure 2: reply false if term < currentTerm, so the sender learns it is stale.
    let mut n = node_with_log(1, 3, 5, &[]);
    n.step(msg(2, 1, 3, heartbeat(0, 0, 0)));
    let r = n.ready();
    assert_eq!(r.messages[0].term, 5);
    assert!(matches!(r.messages[0].body, Body::AppendResponse { .. }));
    assert_eq!(n.leader(), None, "a stale leader is not followed");
}

#[test]
fn a_leader_seeing_a_higher_term_steps_down() {
    // §5.1: if a server's term is stale it reverts to follower.
    let mut l = leader(3);
    let term = l.term();
    l.step(msg(
        2,
        1,
        term + 1,
        Body::AppendResponse {
            result: AppendResult::Match(0),
            read_round: 0,
        },
    ));
    assert_eq!(l.role(), Role::Follower);
    assert_eq!(l.term(), term + 1);
}

// ----- log replication -------------------------------------------------------------

#[test]
fn append_is_rejected_when_the_previous_entry_does_not_match_with_a_hint() {
    // §5.3 consistency check, with the conflict hint for fast backup.
    let mut n = node_with_log(1, 3, 3, &[1, 1, 2, 2, 2]);
    n.step(msg(2, 1, 3, heartbeat(5, 3, 0)));
    assert_eq!(
        response(&n.ready()),
        AppendResult::Conflict {
            prev_index: 5,
            conflict_term: Some(2),
            conflict_index: 3
        }
    );
    n.step(msg(2, 1, 3, heartbeat(9, 3, 0)));
    assert_eq!(
        response(&n.ready()),
        AppendResult::Conflict {
            prev_index: 9,
            conflict_term: None,
            conflict_index: 6
        }
    );
}

fn entry(index: Index, term: Term) -> Entry {
    Entry {
        index,
        term,
        payload: Payload::Noop,
    }
}

#[test]
fn only_a_conflicting_suffix_is_truncated() {
    // §5.3: delete an existing entry and all that follow only if it conflicts; a
    // delayed, shorter append must not cut matching entries.
    let mut n = node_with_log(1, 3, 3, &[1, 1, 1, 1]);
    let append = |prev: Index, prev_term: Term, entries: Vec<Entry>| Body::Append {
        prev_index: prev,
        prev_term,
        entries,
        commit: 0,
        read_round: 0,
    };
    n.step(msg(2, 1, 3, append(1, 1, vec![entry(2, 1)])));
    assert_eq!(response(&n.ready()), AppendResult::Match(2));
    assert_eq!(n.last_index(), 4, "matching entries are kept");
    n.step(msg(
        2,
        1,
        3,
        append(2, 1, vec![entry(3, 3), entry(4, 3), entry(5, 3)]),
    ));
    let r = n.ready();
    assert_eq!(response(&r), AppendResult::Match(5));
    assert_eq!(n.log().term(3), Some(3));
    assert_eq!(
        r.entries.first().map(|e| e.index),
        Some(3),
        "storage rewrites from 3"
    );
}

#[test]
fn follower_commit_is_the_minimum_of_leader_commit_and_last_new_entry() {
    // Figure 2, AppendEntries receiver rule 5.
    let mut n = node_with_log(1, 3, 2, &[1, 1, 1, 1, 1]);
    n.step(msg(2, 1, 2, heartbeat(2, 1, 9)));
    assert_eq!(
        n.commit_index(),
        2,
        "only what this append verified can be committed"
    );
    let r = n.ready();
    assert_eq!(r.committed.len(), 2);
}

#[test]
fn a_leader_counts_itself_only_once_its_entries_are_durable() {
    // docs/architecture.md durability rule: the leader's own copy counts after `persisted`.
    let mut l = leader(3);
    let idx = l.propose(put("a")).unwrap();
    let r = l.ready();
    l.step(msg(
        2,
        1,
        l.term(),
        Body::AppendResponse {
            result: AppendResult::Match(idx),
            read_round: 0,
        },
    ));
    assert!(
        l.commit_index() < idx,
        "one follower alone is not a quorum of durable copies"
    );
    persist(&mut l, &r);
    assert_eq!(l.commit_index(), idx);
}

#[test]
fn entries_of_an_older_term_are_never_committed_by_counting_replicas() {
    // §5.4.2 and Figure 8.
    let members = [1, 2, 3];
    let hs = HardState {
        term: 2,
        voted_for: None,
    };
    let mut l = RaftNode::new(
        1,
        &members,
        config(),
        1,
        hs,
        SnapshotMeta::default(),
        vec![entry(1, 1), entry(2, 2)],
    );
    let r = time_out(&mut l);
    drop(r);
    l.step(msg(2, 1, 3, Body::PreVoteResponse { granted: true }));
    l.step(msg(2, 1, 3, Body::VoteResponse { granted: true }));
    assert_eq!(l.role(), Role::Leader);
    // Make the leader durable but hold back its no-op (index 3) from the follower.
    let r = l.ready();
    persist(&mut l, &r);
    l.step(msg(
        2,
        1,
        3,
        Body::AppendResponse {
            result: AppendResult::Match(2),
            read_round: 0,
        },
    ));
    assert_eq!(
        l.commit_index(),
        0,
        "2@2 is on a majority but is not of the current term"
    );
    l.step(msg(
        2,
        1,
        3,
        Body::AppendResponse {
            result: AppendResult::Match(3),
            read_round: 0,
        },
    ));
    assert_eq!(
        l.commit_index(),
        3,
        "committing 3@3 commits everything before it"
    );
}

#[test]
fn a_rejection_hint_skips_a_whole_divergent_term_at_once() {
    // §5.3 (end): fast backup; a follower with hundreds of stale entries is found in
    // one round trip instead of hundreds.
    let mut terms = vec![1; 10];
    terms.extend(vec![5; 300]);
    let hs = HardState {
        term: 6,
        voted_for: None,
    };
    let members = [1, 2, 3];
    let entries: Vec<Entry> = terms
        .iter()
        .enumerate()
        .map(|(i, &t)| entry(i as Index + 1, t))
        .collect();
    let mut l = RaftNode::new(
        1,
        &members,
        config(),
        1,
        hs,
        SnapshotMeta::default(),
        entries,
    );
    time_out(&mut l);
    l.step(msg(2, 1, 7, Body::PreVoteResponse { granted: true }));
    l.step(msg(2, 1, 7, Body::VoteResponse { granted: true }));
    let r = l.ready();
    persist(&mut l, &r);
    // Follower 2 has 10 entries of term 1 followed by 300 of term 3 (never committed).
    l.step(msg(
        2,
        1,
        7,
        Body::AppendResponse {
            result: AppendResult::Conflict {
                prev_index: 310,
                conflict_term: Some(3),
                conflict_index: 11,
            },
            read_round: 0,
        },
    ));
    let r = l.ready();
    let sent = appends(&r);
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].1, 10,
        "the next probe starts right after the common prefix"
    );
}

#[test]
fn proposals_in_one_batch_become_one_append_per_peer() {
    // docs/architecture.md, group commit: many proposals, one message per follower.
    let mut l = leader(3);
    l.step(msg(
        2,
        1,
        l.term(),
        Body::AppendResponse {
            result: AppendResult::Match(1),
            read_round: 0,
        },
    ));
    l.step(msg(
        3,
        1,
        l.term(),
        Body::AppendResponse {
            result: AppendResult::Match(1),
            read_round: 0,
        },
    ));
    l.ready();
    for i in 0..50 {
        l.propose(put(&i.to_string())).unwrap();
    }
    let r = l.ready();
    let sent = appends(&r);
    assert_eq!(sent.len(), 2);
    assert!(sent
        .iter()
        .all(|(_, prev, entries)| *prev == 1 && entries.len() == 50));
}

#[test]
fn pipelining_is_bounded_by_max_inflight() {
    // Progress flow control: at most `max_inflight` unacknowledged batches per follower.
    let mut l = leader(3);
    l.step(msg(
        2,
        1,
        l.term(),
        Body::AppendResponse {
            result: AppendResult::Match(1),
            read_round: 0,
        },
    ));
    l.ready();
    let mut to_2 = 0;
    for i in 0..6 {
        l.propose(put(&i.to_string())).unwrap();
        to_2 += appends(&l.ready())
            .iter()
            .filter(|(to, _, e)| *to == 2 && !e.is_empty())
            .count();
    }
    assert_eq!(to_2, 3, "config max_inflight is 3");
    l.step(msg(
        2,
        1,
        l.term(),
        Body::AppendResponse {
            result: AppendResult::Match(3),
            read_round: 0,
        },
    ));
    let r = l.ready();
    let more: Vec<_> = appends(&r)
        .into_iter()
        .filter(|(to, _, _)| *to == 2)
        .collect();
    assert!(!more.is_empty(), "an ack opens the window again");
}

#[test]
fn progress_probes_one_append_at_a_time_then_streams_within_a_window() {
    // §5.3 nextIndex/matchIndex, with probe and replicate states for flow control.
    use super::progress::{Progress, ProgressState};
    let mut p = Progress::new(5);
    assert_eq!(p.state(), &ProgressState::Probe { sent: false });
    assert!(!p.can_send_batch(3, 10), "no streaming while probing");
    p.on_probe_sent();
    assert_eq!(p.state(), &ProgressState::Probe { sent: true });
    assert_eq!(p.next(), 6, "a probe does not advance next");
    assert!(p.on_match(5));
    assert_eq!((p.matched(), p.next()), (5, 6));
    for end in [7, 8, 9] {
        assert!(p.can_send_batch(3, 10));
        p.on_batch_sent(end);
    }
    assert!(!p.can_send_batch(3, 10), "the window is full");
    assert!(p.on_match(8));
    assert_eq!(
        p.state(),
        &ProgressState::Replicate {
            inflight: [9].into()
        },
        "acknowledged batches leave the window"
    );
    assert!(!p.on_match(7), "an older acknowledgement is not news");
    p.on_reject(9);
    assert_eq!((p.matched(), p.next()), (8, 9));
    assert_eq!(
        p.state(),
        &ProgressState::Probe { sent: false },
        "a rejection returns to probing with nothing in flight"
    );
}

#[test]
fn proposals_to_a_follower_are_refused_with_the_leader_hint() {
    let mut n = node(2, 3);
    assert_eq!(n.propose(put("a")), Err(NotLeader { leader: None }));
    n.step(msg(1, 2, 1, heartbeat(0, 0, 0)));
    assert_eq!(n.propose(put("a")), Err(NotLeader { leader: Some(1) }));
    assert_eq!(n.last_index(), 0, "nothing was appended");
}

#[test]
fn a_deposed_leader_reports_its_uncommitted_proposals_as_unknown() {
    let mut l = leader(3);
    let a = l.propose(put("a")).unwrap();
    l.propose(put("b")).unwrap();
    l.ready();
    l.step(msg(2, 1, l.term() + 1, heartbeat(0, 0, 0)));
    let r = l.ready();
    assert_eq!(
        r.aborted_from,
        Some(1),
        "the no-op and both proposals are uncommitted"
    );
    assert!(a > 1);
}

// ----- reads and check-quorum ------------------------------------------------------

fn ack(l: &mut RaftNode, from: NodeId, index: Index, read_round: u64) {
    let term = l.term();
    l.step(msg(
        from,
        1,
        term,
        Body::AppendResponse {
            result: AppendResult::Match(index),
            read_round,
        },
    ));
}

#[test]
fn read_index_waits_for_a_quorum_heartbeat_round() {
    // Thesis §6.4: confirm leadership with one round shared by all waiting reads.
    let mut l = leader(3);
    ack(&mut l, 2, 1, 0);
    l.ready();
    assert_eq!(l.commit_index(), 1);
    l.read(10);
    l.read(11);
    let r = l.ready();
    let rounds: Vec<u64> = r
        .messages
        .iter()
        .filter_map(|m| match m.body {
            Body::Append { read_round, .. } => Some(read_round),
            _ => None,
        })
        .collect();
    assert_eq!(rounds.len(), 2, "one heartbeat per peer for both reads");
    assert!(r.reads.is_empty());
    ack(&mut l, 3, 1, rounds[0] - 1);
    assert!(
        l.ready().reads.is_empty(),
        "an ack of an older round does not count"
    );
    ack(&mut l, 3, 1, rounds[0]);
    assert_eq!(l.ready().reads, vec![10, 11]);
}

#[test]
fn reads_wait_until_the_new_leader_commits_its_noop() {
    // Thesis §6.4 step 1: a new leader does not yet know the commit index.
    let mut l = leader(3);
    l.read(7);
    let r = l.ready();
    assert!(r.reads.is_empty() && r.failed_reads.is_empty());
    ack(&mut l, 2, 1, 0);
    let r = l.ready();
    assert!(r.reads.is_empty(), "the round starts after the commit");
    let round = r
        .messages
        .iter()
        .find_map(|m| match m.body {
            Body::Append { read_round, .. } => Some(read_round),
            _ => None,
        })
        .unwrap();
    ack(&mut l, 2, 1, round);
    assert_eq!(l.ready().reads, vec![7]);
}

#[test]
fn a_read_confirmed_before_leadership_is_lost_is_still_served() {
    // Thesis §6.4: its leadership check happened after it arrived, so it is linearizable;
    // a read whose round is not yet confirmed fails instead.
    let mut l = leader(3);
    ack(&mut l, 2, 1, 0);
    l.ready();
    l.read(8);
    let round = l
        .ready()
        .messages
        .iter()
        .find_map(|m| match m.body {
            Body::Append { read_round, .. } => Some(read_round),
            _ => None,
        })
        .unwrap();
    ack(&mut l, 2, 1, round);
    l.read(9);
    l.step(msg(3, 1, l.term() + 1, heartbeat(1, 1, 1)));
    assert_eq!(l.role(), Role::Follower);
    let r = l.ready();
    assert_eq!(r.reads, vec![8]);
    assert_eq!(r.failed_reads, vec![9]);
}

#[test]
fn reads_on_a_follower_fail_cleanly() {
    let mut n = node(2, 3);
    n.read(1);
    assert_eq!(n.ready().failed_reads, vec![1]);
}

#[test]
fn a_leader_cut_off_from_its_quorum_steps_down_and_fails_its_reads() {
    // Thesis §6.2 check-quorum: no stale reads from a partitioned leader.
    let mut l = leader(3);
    ack(&mut l, 2, 1, 0);
    l.ready();
    l.read(5);
    l.ready();
    for _ in 0..20 {
        l.tick();
    }
    assert_eq!(l.role(), Role::Follower);
    assert_eq!(l.ready().failed_reads, vec![5]);
}

#[test]
fn a_leader_hearing_from_a_quorum_keeps_leading() {
    let mut l = leader(3);
    for _ in 0..50 {
        l.tick();
        ack(&mut l, 2, 1, 0);
    }
    assert_eq!(l.role(), Role::Leader);
}

#[test]
fn a_single_node_cluster_elects_itself_and_commits_after_persisting() {
    let mut n = node(1, 1);
    let r = time_out(&mut n);
    assert_eq!(n.role(), Role::Leader);
    assert!(r.messages.is_empty());
    assert_eq!(n.commit_index(), 0);
    persist(&mut n, &r);
    assert_eq!(n.commit_index(), 1);
    n.read(3);
    let r = n.ready();
    assert_eq!(r.reads, vec![3]);
}

#[test]
fn a_refusal_of_an_older_terms_append_does_not_rewind_replication() {
    // A delayed append from this node's previous term is refused with the current term
    // and `conflict_index` 0; that says nothing about the follower's log.
    let mut l = leader(3);
    let term = l.term();
    l.step(msg(
        2,
        1,
        term,
        Body::AppendResponse {
            result: AppendResult::Match(1),
            read_round: 0,
        },
    ));
    l.ready();
    for v in ["a", "b", "c"] {
        l.propose(put(v)).unwrap();
        l.ready();
    }
    let refusal = AppendResult::Conflict {
        prev_index: 3,
        conflict_term: None,
        conflict_index: 0,
    };
    l.step(msg(
        2,
        1,
        term,
        Body::AppendResponse {
            result: refusal,
            read_round: 0,
        },
    ));
    assert!(
        appends(&l.ready()).is_empty(),
        "no probe from index 1 again"
    );
}

#[test]
fn a_follower_that_lost_acknowledged_entries_is_caught_up_again() {
    // Outside Raft's fault model (its disk lost a synced tail), but the leader must not
    // ignore it forever: it believes the shorter log and probes from its end.
    let mut l = leader(3);
    let term = l.term();
    for v in ["a", "b", "c", "d"] {
        l.propose(put(v)).unwrap();
    }
    let r = l.ready();
    persist(&mut l, &r);
    l.step(msg(
        2,
        1,
        term,
        Body::AppendResponse {
            result: AppendResult::Match(5),
            read_round: 0,
        },
    ));
    l.ready();
    let lost = AppendResult::Conflict {
        prev_index: 5,
        conflict_term: None,
        conflict_index: 3,
    };
    l.step(msg(
        2,
        1,
        term,
        Body::AppendResponse {
            result: lost,
            read_round: 0,
        },
    ));
    let sent = appends(&l.ready());
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].1, 2,
        "the probe starts after the follower's last entry"
    );
    assert_eq!(sent[0].2.len(), 3, "and resends entries 3 to 5");
}
