//! Unit tests of the Raft rules, one per rule, each naming the paper section it checks.
//! Nodes are driven by hand: messages are built and delivered explicitly.
//!
//! Rules that read better as a story are golden scripts instead (tests/scripts/):
//! one vote per term (split_vote), the up-to-date vote check (vote_log_check), leader
//! stickiness (leader_stickiness), conflict truncation (conflict_truncation), fast
//! backup (fast_backup), Figure 8 (figure8), group commit (group_commit), aborted
//! proposals (aborted_proposals), ReadIndex rounds and their failures (read_*),
//! check-quorum (check_quorum) and a single-node cluster (single_node).

use super::*;
use crate::kv::{Command, WriteOp};

fn config() -> Config {
    Config {
        election_ticks: 10,
        heartbeat_ticks: 2,
        max_inflight: 3,
        max_append_bytes: 1 << 20,
        ..Config::default()
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
        stamp: Default::default(),
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
fn a_leader_hearing_from_a_quorum_keeps_leading() {
    let mut l = leader(3);
    for _ in 0..50 {
        l.tick();
        ack(&mut l, 2, 1, 0);
    }
    assert_eq!(l.role(), Role::Leader);
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

// ----- log compaction and snapshots (§7) ------------------------------------------

/// A follower whose log holds `terms`, at `term`, that hears `meta` from leader 2.
fn install(terms: &[Term], commit: Index, meta: SnapshotMeta) -> (RaftNode, Ready) {
    let mut f = node_with_log(1, 3, 3, terms);
    if commit > 0 {
        let prev_term = terms[commit as usize - 1];
        let heartbeat = Body::Append {
            prev_index: commit,
            prev_term,
            entries: vec![],
            commit,
            read_round: 0,
        };
        f.step(msg(2, 1, 3, heartbeat));
        f.ready();
    }
    f.step(msg(2, 1, 3, Body::InstallSnapshot { meta }));
    let r = f.ready();
    (f, r)
}

#[test]
fn a_snapshot_at_or_below_the_commit_index_is_ignored() {
    // §7 (etcd's rule): it says nothing new; the answer says where the log is committed.
    let (f, r) = install(&[1, 1, 2, 2], 3, SnapshotMeta { index: 2, term: 1 });
    assert_eq!(r.installed, None);
    assert_eq!(response(&r), AppendResult::Match(3));
    assert_eq!((f.log().first_index(), f.last_index()), (1, 4));
}

#[test]
fn a_snapshot_whose_last_entry_the_log_holds_keeps_the_suffix() {
    // §7: "If existing log entry has same index and term as snapshot's last included
    // entry, retain log entries following it".
    let (f, r) = install(&[1, 1, 2, 2], 0, SnapshotMeta { index: 3, term: 2 });
    assert_eq!(
        r.installed, None,
        "the state machine catches up from the log"
    );
    assert_eq!(response(&r), AppendResult::Match(3));
    assert_eq!((f.commit_index(), f.last_index()), (3, 4));
}

#[test]
fn any_other_snapshot_replaces_the_whole_log() {
    // §7: "Discard the entire log"; a conflicting entry must not survive the install.
    let (f, r) = install(&[1, 1, 1, 1, 1, 1], 0, SnapshotMeta { index: 4, term: 2 });
    let meta = SnapshotMeta { index: 4, term: 2 };
    assert_eq!(r.installed, Some(meta));
    assert_eq!(response(&r), AppendResult::Match(4));
    assert_eq!(
        (f.log().first_index(), f.last_index(), f.log().last_term()),
        (5, 4, 2)
    );
    assert_eq!((f.commit_index(), f.applied_index()), (4, 4));
    assert!(
        r.committed.is_empty(),
        "nothing is applied: the snapshot is the state"
    );
}

/// The leader of a 3-node cluster after `writes` proposals that node 2 acknowledged
/// and node 3 never heard of, with its log compacted behind a snapshot of all of them;
/// then a heartbeat interval passes, so node 3's probe is due. Returns the leader, the
/// snapshot and what that heartbeat sent.
fn compacted_leader(writes: usize) -> (RaftNode, SnapshotMeta, Ready) {
    let mut l = leader(3);
    for i in 0..writes {
        l.propose(put(&i.to_string())).unwrap();
    }
    let r = l.ready();
    persist(&mut l, &r);
    let last = l.last_index();
    let ack = AppendResult::Match(last);
    l.step(msg(
        2,
        1,
        l.term(),
        Body::AppendResponse {
            result: ack,
            read_round: 0,
        },
    ));
    l.ready();
    assert_eq!(l.commit_index(), last);
    let meta = SnapshotMeta {
        index: last,
        term: l.term(),
    };
    l.snapshot_saved(meta);
    l.compact(last);
    assert_eq!(l.log().first_index(), last + 1);
    for _ in 0..config().heartbeat_ticks {
        l.tick();
    }
    let r = l.ready();
    (l, meta, r)
}

#[test]
fn a_leader_sends_its_snapshot_to_a_follower_that_needs_compacted_entries() {
    // Node 3's probe starts from an entry the log no longer holds: it gets the
    // snapshot instead.
    let (mut l, meta, r) = compacted_leader(6);
    let to_3: Vec<&Body> = r
        .messages
        .iter()
        .filter(|m| m.to == 3)
        .map(|m| &m.body)
        .collect();
    assert_eq!(to_3, vec![&Body::InstallSnapshot { meta }]);
    // While it is on its way, heartbeats check against the snapshot's position.
    for _ in 0..config().heartbeat_ticks {
        l.tick();
    }
    let r = l.ready();
    let heartbeat = r.messages.iter().find(|m| m.to == 3).expect("a heartbeat");
    assert!(
        matches!(heartbeat.body, Body::Append { prev_index, ref entries, .. } if prev_index == meta.index && entries.is_empty())
    );
    // The follower installed it and says so: replication continues after it.
    let ack = AppendResult::Match(meta.index);
    l.step(msg(
        3,
        1,
        l.term(),
        Body::AppendResponse {
            result: ack,
            read_round: 0,
        },
    ));
    l.propose(put("after")).unwrap();
    let r = l.ready();
    assert!(appends(&r)
        .iter()
        .any(|(to, prev, e)| *to == 3 && *prev == meta.index && e.len() == 1));
}

#[test]
fn a_finished_or_failed_transfer_makes_the_leader_probe_after_the_snapshot() {
    let (mut l, meta, _) = compacted_leader(1);
    l.snapshot_sent(3);
    l.propose(put("b")).unwrap();
    let r = l.ready();
    assert!(
        appends(&r)
            .iter()
            .any(|(to, prev, _)| *to == 3 && *prev == meta.index),
        "a probe from just after the snapshot"
    );
}

/// A follower of node 2 in term 2 whose log holds `entries` (all of term 1), with
/// `config`.
fn follower_with(config: Config, entries: Vec<Entry>) -> RaftNode {
    let hs = HardState {
        term: 2,
        voted_for: None,
    };
    RaftNode::new(
        1,
        &[1, 2, 3],
        config,
        1,
        hs,
        SnapshotMeta::default(),
        entries,
    )
}

/// The indexes of the committed entries each `ready` hands out until none are left.
fn apply_slices(n: &mut RaftNode) -> Vec<Vec<Index>> {
    let mut slices = Vec::new();
    loop {
        let r = n.ready();
        if r.committed.is_empty() {
            assert!(!n.has_unapplied());
            return slices;
        }
        slices.push(r.committed.iter().map(|e| e.index).collect());
    }
}

#[test]
fn a_large_commit_backlog_is_handed_out_in_slices_of_bounded_entries() {
    // Not a paper rule but the runtime's: applying a backlog (a restart, a follower
    // catching up) must not hold the node for as long as the backlog takes.
    let config = Config {
        max_apply_entries: 3,
        ..config()
    };
    let terms = [1; 10];
    let mut n = follower_with(config, super::log::tests::noop_entries(&terms));
    n.step(msg(2, 1, 2, heartbeat(10, 1, 10)));
    assert_eq!(n.commit_index(), 10);
    let first = n.ready();
    assert_eq!(first.committed.len(), 3);
    assert!(
        !first.messages.is_empty(),
        "the answer leaves with the first slice"
    );
    assert!(n.has_unapplied());
    assert_eq!(n.applied_index(), 3);
    assert_eq!(
        apply_slices(&mut n),
        vec![vec![4, 5, 6], vec![7, 8, 9], vec![10]]
    );
    assert_eq!(n.applied_index(), 10);
}

#[test]
fn a_slice_of_committed_entries_is_bounded_in_bytes_but_holds_at_least_one() {
    let config = Config {
        max_apply_bytes: 2500,
        ..config()
    };
    let entry = |index: Index, value_bytes: usize| Entry {
        index,
        term: 1,
        payload: crate::raft::Payload::Command(put(&"v".repeat(value_bytes))),
    };
    // 1000-byte values, then one far over the budget, then small ones.
    let entries = vec![
        entry(1, 1000),
        entry(2, 1000),
        entry(3, 1000),
        entry(4, 10_000),
        entry(5, 10),
        entry(6, 10),
    ];
    let mut n = follower_with(config, entries);
    n.step(msg(2, 1, 2, heartbeat(6, 1, 6)));
    assert_eq!(
        apply_slices(&mut n),
        vec![vec![1, 2], vec![3], vec![4], vec![5, 6]]
    );
}

#[test]
fn with_the_default_limits_a_small_backlog_is_one_slice() {
    // The golden scripts and the simulator's small logs never see a slice cut.
    let terms = [1; 100];
    let mut n = follower_with(config(), super::log::tests::noop_entries(&terms));
    n.step(msg(2, 1, 2, heartbeat(100, 1, 100)));
    assert_eq!(n.ready().committed.len(), 100);
    assert!(!n.has_unapplied());
}

mod validation;
