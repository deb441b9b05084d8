//! The fault scenarios of docs/testing.md, each on the deterministic simulator. Every
//! test names its seed; a failure message carries it so the run can be replayed.

use raftkv::{
    kv::{Command, Session, SessionId, SessionLimits, WriteOp},
    protocol::ErrorCode,
    raft::{NodeId, Payload, Role},
    replica::{ClientOp, Outcome},
    sim::{NetworkConfig, Sim, SimConfig},
};

/// Election timeout is 10..20 ticks in `SimConfig::new`.
const ELECTION: u64 = 20;

fn sim(seed: u64, nodes: usize) -> Sim {
    let mut cfg = SimConfig::new(seed, nodes);
    cfg.trace = 40;
    Sim::new(cfg)
}

fn ensure(sim: &Sim, ok: bool, what: &str) {
    if !ok {
        panic!(
            "seed {}: {what}\nfailure: {:?}\nlast trace lines:\n{}",
            sim.seed(),
            sim.failure(),
            sim.trace().join("\n")
        );
    }
}

/// Runs `ticks` ticks and fails the test on a safety violation.
fn run(sim: &mut Sim, ticks: u64, what: &str) {
    let ok = sim.run_ticks(ticks);
    ensure(sim, ok, what);
}

fn elect(sim: &mut Sim) -> NodeId {
    let ok = sim.run_until(10 * ELECTION, |s| s.leader().is_some());
    ensure(sim, ok, "no leader elected");
    sim.leader().unwrap()
}

/// Runs until a leader other than `old` exists and returns it.
fn elect_other_than(sim: &mut Sim, old: NodeId) -> NodeId {
    let other = |s: &Sim| {
        s.leaders()
            .into_iter()
            .find(|&(id, _)| id != old)
            .map(|(id, _)| id)
    };
    let ok = sim.run_until(10 * ELECTION, |s| other(s).is_some());
    ensure(sim, ok, "no new leader");
    other(sim).unwrap()
}

fn put(key: &str, value: &str) -> ClientOp {
    ClientOp::Write(Command::write(
        key,
        WriteOp::Put {
            value: value.into(),
        },
        None,
    ))
}

fn append(key: &str, value: &str, client: &str, seq: u64) -> ClientOp {
    ClientOp::Write(Command::write(
        key,
        WriteOp::Append {
            value: value.into(),
        },
        Some(Session::named(client, seq)),
    ))
}

fn append_in(session: u64, seq: u64, key: &str, value: &str) -> ClientOp {
    ClientOp::Write(Command::write(
        key,
        WriteOp::Append {
            value: value.into(),
        },
        Some(Session::registered(session, seq)),
    ))
}

fn get(key: &str) -> ClientOp {
    ClientOp::Get {
        key: key.into(),
        stale: false,
    }
}

/// Sends `op` to `node` and runs until it is answered.
fn call(sim: &mut Sim, node: NodeId, op: ClientOp) -> Outcome {
    let id = sim.request(node, op);
    let ok = sim.run_until(20 * ELECTION, |s| s.outcome(id).is_some());
    ensure(sim, ok, "request not answered");
    sim.outcome(id).unwrap().clone()
}

fn applied_everywhere(sim: &Sim, index: u64) -> bool {
    sim.ids().iter().all(|&id| {
        sim.replica(id)
            .is_some_and(|r| r.node().applied_index() >= index)
    })
}

fn value_at(sim: &Sim, node: NodeId, key: &str) -> Option<String> {
    sim.replica(node)
        .unwrap()
        .store()
        .get(key)
        .map(str::to_owned)
}

#[test]
fn a_leader_is_elected_promptly_and_terms_stay_stable() {
    for seed in 0..20 {
        let mut sim = sim(seed, 3);
        let ok = sim.run_until(3 * ELECTION, |s| s.leader().is_some());
        ensure(&sim, ok, "no leader within three election timeouts");
        ensure(&sim, sim.leaders().len() == 1, "more than one leader");
        let (leader, term) = sim.leaders()[0];
        run(&mut sim, 1000, "violation");
        ensure(
            &sim,
            sim.leaders() == vec![(leader, term)],
            "leader or term changed without faults",
        );
    }
}

#[test]
fn a_new_leader_is_elected_when_the_leader_is_cut_off_and_the_old_one_rejoins_as_follower() {
    let mut sim = sim(11, 3);
    let old = elect(&mut sim);
    let ids = sim.ids().to_vec();
    sim.links().isolate(old, &ids);
    elect_other_than(&mut sim, old);
    sim.links().heal();
    let ok = sim.run_until(10 * ELECTION, |s| {
        s.leaders().len() == 1 && s.replica(old).unwrap().role() == Role::Follower
    });
    ensure(&sim, ok, "the old leader did not rejoin as a follower");
}

#[test]
fn no_leader_is_elected_without_a_majority_and_one_is_when_it_returns() {
    let mut sim = sim(12, 5);
    let leader = elect(&mut sim);
    let mut down: Vec<NodeId> = sim.ids().iter().copied().filter(|&i| i != leader).collect();
    down.truncate(3);
    for &id in &down {
        sim.crash(id);
    }
    // The old leader steps down (check-quorum) and no one can win.
    run(&mut sim, 10 * ELECTION, "violation");
    ensure(
        &sim,
        sim.leaders().is_empty(),
        "a leader without a majority",
    );
    sim.restart(down[0]);
    elect(&mut sim);
}

#[test]
fn repeated_random_cut_offs_keep_at_most_one_leader_then_exactly_one() {
    let mut sim = sim(13, 5);
    elect(&mut sim);
    let ids = sim.ids().to_vec();
    for round in 0..30u64 {
        let victim = ids[(round * 7 % 5) as usize];
        sim.links().heal();
        sim.links().isolate(victim, &ids);
        run(&mut sim, ELECTION * 2, "violation during churn");
        let max_term = sim.leaders().iter().map(|&(_, t)| t).max();
        let at_max = sim
            .leaders()
            .iter()
            .filter(|&&(_, t)| Some(t) == max_term)
            .count();
        ensure(&sim, at_max <= 1, "two leaders in the newest term");
    }
    sim.links().heal();
    let ok = sim.run_until(10 * ELECTION, |s| s.leaders().len() == 1);
    ensure(&sim, ok, "no single leader after healing");
}

#[test]
fn every_command_is_committed_at_the_same_index_on_all_nodes() {
    let mut sim = sim(14, 5);
    let leader = elect(&mut sim);
    for i in 0..20 {
        let out = call(&mut sim, leader, put("k", &i.to_string()));
        assert_eq!(out, Outcome::Written);
    }
    let last = sim.replica(leader).unwrap().node().last_index();
    let ok = sim.run_until(5 * ELECTION, |s| applied_everywhere(s, last));
    ensure(&sim, ok, "not applied everywhere");
    for &id in sim.ids() {
        assert_eq!(
            sim.durable_log(id),
            sim.durable_log(leader),
            "n{id}'s log differs"
        );
        assert_eq!(value_at(&sim, id, "k").as_deref(), Some("19"));
    }
}

#[test]
fn a_failed_follower_does_not_stop_agreement_and_catches_up_when_it_returns() {
    let mut sim = sim(15, 3);
    let leader = elect(&mut sim);
    let follower = sim.ids().iter().copied().find(|&i| i != leader).unwrap();
    sim.crash(follower);
    for i in 0..10 {
        assert_eq!(
            call(&mut sim, leader, put("k", &i.to_string())),
            Outcome::Written
        );
    }
    sim.restart(follower);
    let last = sim.replica(leader).unwrap().node().last_index();
    let ok = sim.run_until(10 * ELECTION, |s| applied_everywhere(s, last));
    ensure(&sim, ok, "the returning follower did not catch up");
    assert_eq!(value_at(&sim, follower, "k").as_deref(), Some("9"));
}

#[test]
fn nothing_commits_without_a_majority_and_it_does_once_the_majority_returns() {
    let mut sim = sim(16, 3);
    let leader = elect(&mut sim);
    assert_eq!(call(&mut sim, leader, put("k", "before")), Outcome::Written);
    let commit = sim.replica(leader).unwrap().node().commit_index();
    let ids = sim.ids().to_vec();
    // Cut the leader off without letting it notice yet: it accepts the proposal.
    sim.links().isolate(leader, &ids);
    let id = sim.request(leader, put("k", "during"));
    run(&mut sim, ELECTION / 2, "violation");
    let index = sim.replica(leader).unwrap().node().last_index();
    assert!(index > commit, "the leader appended the proposal");
    assert_eq!(sim.replica(leader).unwrap().node().commit_index(), commit);
    run(&mut sim, ELECTION * 3, "violation");
    match sim.outcome(id) {
        Some(Outcome::Failed {
            code: ErrorCode::Timeout,
            ..
        }) => {}
        other => panic!("an appended write must end as timeout (unknown), got {other:?}"),
    }
    // Same with a follower majority that is merely down: the proposal waits for them.
    sim.links().heal();
    let leader = elect(&mut sim);
    let others: Vec<NodeId> = ids.iter().copied().filter(|&i| i != leader).collect();
    for &o in &others {
        sim.crash(o);
    }
    let id = sim.request(leader, put("k", "after"));
    run(&mut sim, 5, "violation");
    let stuck = sim.replica(leader).map(|r| r.node().commit_index());
    run(&mut sim, 5, "violation");
    assert_eq!(
        sim.replica(leader).map(|r| r.node().commit_index()),
        stuck,
        "no commit alone"
    );
    for &o in &others {
        sim.restart(o);
    }
    let ok = sim.run_until(20 * ELECTION, |s| {
        s.leader()
            .is_some_and(|l| s.replica(l).unwrap().store().get("k") == Some("after"))
    }) || matches!(
        sim.outcome(id),
        Some(Outcome::Failed {
            code: ErrorCode::Timeout,
            ..
        })
    );
    ensure(
        &sim,
        ok,
        "the write neither committed nor timed out after the majority returned",
    );
}

#[test]
fn many_concurrent_proposals_all_commit_exactly_once_in_one_order() {
    let mut sim = sim(17, 3);
    let leader = elect(&mut sim);
    let ids: Vec<u64> = (0..100)
        .map(|i| sim.request(leader, append("k", &format!("{i},"), &format!("c{i}"), 1)))
        .collect();
    let ok = sim.run_until(10 * ELECTION, |s| {
        ids.iter().all(|&i| s.outcome(i).is_some())
    });
    ensure(&sim, ok, "not all answered");
    assert!(ids
        .iter()
        .all(|&i| sim.outcome(i) == Some(&Outcome::Written)));
    let value = value_at(&sim, leader, "k").unwrap();
    let mut parts: Vec<&str> = value.trim_end_matches(',').split(',').collect();
    assert_eq!(parts.len(), 100, "each exactly once");
    parts.sort();
    parts.dedup();
    assert_eq!(parts.len(), 100);
    let last = sim.replica(leader).unwrap().node().last_index();
    let ok = sim.run_until(5 * ELECTION, |s| applied_everywhere(s, last));
    ensure(&sim, ok, "not applied");
    for &id in sim.ids() {
        assert_eq!(
            value_at(&sim, id, "k").unwrap(),
            value,
            "same order on n{id}"
        );
    }
}

#[test]
fn a_partitioned_old_leader_loses_its_uncommitted_entries_and_keeps_committed_ones() {
    let mut sim = sim(18, 5);
    let old = elect(&mut sim);
    assert_eq!(call(&mut sim, old, put("a", "committed")), Outcome::Written);
    let ids = sim.ids().to_vec();
    sim.links().isolate(old, &ids);
    for i in 0..5 {
        sim.request(old, put("b", &format!("lost{i}")));
    }
    run(&mut sim, 2, "violation");
    let new = elect_other_than(&mut sim, old);
    assert_eq!(call(&mut sim, new, put("b", "kept")), Outcome::Written);
    sim.links().heal();
    let last = sim.replica(new).unwrap().node().last_index();
    let ok = sim.run_until(20 * ELECTION, |s| applied_everywhere(s, last));
    ensure(&sim, ok, "not converged");
    let log = sim.durable_log(old);
    let lost = log.iter().any(|e| match &e.payload {
        Payload::Command(c) => matches!(&c.op, WriteOp::Put { value } if value.starts_with("lost")),
        Payload::Noop => false,
    });
    assert!(!lost, "uncommitted entries of the old leader were replaced");
    assert_eq!(value_at(&sim, old, "a").as_deref(), Some("committed"));
    assert_eq!(value_at(&sim, old, "b").as_deref(), Some("kept"));
}

#[test]
fn a_follower_with_hundreds_of_divergent_entries_catches_up_in_few_round_trips() {
    let mut sim = sim(19, 3);
    let old = elect(&mut sim);
    let ids = sim.ids().to_vec();
    sim.links().isolate(old, &ids);
    for i in 0..300 {
        sim.request(old, put("x", &i.to_string()));
    }
    let new = elect_other_than(&mut sim, old);
    for i in 0..300 {
        sim.request(new, put("y", &i.to_string()));
    }
    run(&mut sim, ELECTION, "violation");
    let old_log = sim.durable_log(old).len();
    assert!(
        old_log > 300,
        "the old leader holds a long divergent log ({old_log})"
    );
    let before = sim.stats().sent.get("Append").copied().unwrap_or(0);
    sim.links().heal();
    let last = sim.replica(new).unwrap().node().last_index();
    let ok = sim.run_until(20 * ELECTION, |s| applied_everywhere(s, last));
    ensure(&sim, ok, "did not catch up");
    let appends = sim.stats().sent.get("Append").copied().unwrap_or(0) - before;
    assert!(
        appends < 40,
        "catching up took {appends} appends with entries"
    );
}

#[test]
fn message_economy_elections_idle_heartbeats_and_commands_cost_bounded_messages() {
    let mut sim = sim(20, 3);
    elect(&mut sim);
    let election = sim.stats().total_sent();
    assert!(election <= 20, "electing took {election} messages");
    // Idle: only heartbeats and their responses, (n-1) per heartbeat interval each.
    run(&mut sim, 20, "violation");
    let before = sim.stats().clone();
    run(&mut sim, 100, "violation");
    let after = sim.stats().clone();
    let delta = |k: &str| after.sent.get(k).unwrap_or(&0) - before.sent.get(k).unwrap_or(&0);
    assert_eq!(
        after.total_sent() - before.total_sent(),
        delta("Heartbeat") + delta("AppendResponse")
    );
    assert!(
        delta("Heartbeat") <= 2 * (100 / 2) + 2,
        "heartbeats: {}",
        delta("Heartbeat")
    );
    // Agreement: one append and one response per follower per command, when sequential.
    let leader = sim.leader().unwrap();
    let before = sim.stats().total_sent();
    let hb_before = sim.stats().sent.get("Heartbeat").copied().unwrap_or(0);
    for i in 0..10 {
        call(&mut sim, leader, put("k", &i.to_string()));
    }
    let hb = sim.stats().sent.get("Heartbeat").copied().unwrap_or(0) - hb_before;
    let per_command = (sim.stats().total_sent() - before - 2 * hb) as f64 / 10.0;
    assert!(
        per_command <= 4.0,
        "{per_command} messages per command beyond heartbeats"
    );
}

#[test]
fn after_a_full_restart_everything_committed_is_still_there() {
    let mut sim = sim(21, 3);
    let leader = elect(&mut sim);
    for i in 0..10 {
        assert_eq!(
            call(&mut sim, leader, append("k", &i.to_string(), "c", i + 1)),
            Outcome::Written
        );
    }
    for id in sim.ids().to_vec() {
        sim.crash(id);
    }
    for id in sim.ids().to_vec() {
        sim.restart(id);
    }
    let leader = elect(&mut sim);
    assert_eq!(
        call(&mut sim, leader, get("k")),
        Outcome::Value(Some("0123456789".into()))
    );
}

#[test]
fn figure_8_an_old_term_entry_is_never_committed_by_counting_alone() {
    // The Figure 8 schedule, randomized as in the classic test: leaders crash right
    // after appending; the invariants (state machine safety, leader completeness)
    // would catch an old-term entry committed by counting and later overwritten.
    for seed in 0..20 {
        let mut cfg = SimConfig::new(100 + seed, 5);
        cfg.network = NetworkConfig::unreliable();
        cfg.trace = 40;
        let mut sim = Sim::new(cfg);
        for round in 0..40u64 {
            if let Some(l) = sim.leader() {
                sim.request(l, put("k", &round.to_string()));
                let pause = if round % 2 == 0 { 1 } else { ELECTION / 2 };
                run(&mut sim, pause, "violation");
                sim.crash(l);
            }
            let up = sim.ids().iter().filter(|&&i| sim.is_up(i)).count();
            if up < 3 {
                let down: Vec<NodeId> = sim
                    .ids()
                    .iter()
                    .copied()
                    .filter(|&i| !sim.is_up(i))
                    .collect();
                sim.restart(down[(round as usize) % down.len()]);
            }
            run(&mut sim, ELECTION, "violation");
        }
        sim.settle(3000)
            .unwrap_or_else(|e| panic!("{e}\n{}", sim.trace().join("\n")));
    }
}

#[test]
fn a_returning_partitioned_node_does_not_disrupt_a_healthy_leader() {
    // Pre-vote (thesis §9.6): the isolated node never raises its term.
    let mut sim = sim(22, 3);
    let leader = elect(&mut sim);
    let term = sim.replica(leader).unwrap().node().term();
    let ids = sim.ids().to_vec();
    let loner = ids.iter().copied().find(|&i| i != leader).unwrap();
    sim.links().isolate(loner, &ids);
    run(&mut sim, 20 * ELECTION, "violation");
    assert_eq!(
        sim.replica(loner).unwrap().node().term(),
        term,
        "pre-vote keeps the term"
    );
    sim.links().heal();
    run(&mut sim, 10 * ELECTION, "violation");
    assert_eq!(
        sim.leaders(),
        vec![(leader, term)],
        "the leader was not disturbed"
    );
}

#[test]
fn a_leader_cut_off_from_the_majority_stops_serving_reads() {
    // Check-quorum + ReadIndex: no stale read from a deposed leader.
    let mut sim = sim(23, 3);
    let old = elect(&mut sim);
    assert_eq!(call(&mut sim, old, put("k", "v1")), Outcome::Written);
    let ids = sim.ids().to_vec();
    sim.links().isolate(old, &ids);
    let new = elect_other_than(&mut sim, old);
    assert_eq!(call(&mut sim, new, put("k", "v2")), Outcome::Written);
    match call(&mut sim, old, get("k")) {
        Outcome::Value(v) => panic!("the cut-off leader served a read: {v:?}"),
        Outcome::Failed { code, .. } => {
            assert!(
                matches!(code, ErrorCode::NotLeader | ErrorCode::Unavailable),
                "{code:?}"
            )
        }
        other => panic!("{other:?}"),
    }
    // A stale read is explicitly allowed to be out of date, and is served.
    let stale = call(
        &mut sim,
        old,
        ClientOp::Get {
            key: "k".into(),
            stale: true,
        },
    );
    assert_eq!(stale, Outcome::Value(Some("v1".into())));
}

/// Runs clients on `cfg` for `ticks`, settles, and checks the history.
fn run_with_clients(cfg: SimConfig, ticks: u64) {
    let mut sim = Sim::new(cfg);
    run(&mut sim, ticks, "violation");
    sim.settle(4000)
        .unwrap_or_else(|e| panic!("{e}\n{}", sim.trace().join("\n")));
    let ok = sim
        .history()
        .iter()
        .filter(|op| op.complete.is_some())
        .count();
    assert!(
        ok > 100,
        "seed {}: only {ok} operations completed",
        sim.seed()
    );
    if let Err(v) = raftkv::check::check(sim.history()) {
        panic!("seed {}: not linearizable: {v}", sim.seed());
    }
}

#[test]
fn agreement_is_reached_on_an_unreliable_network() {
    // Loss, duplication, reordering and long delays; no crashes.
    for seed in 0..10 {
        let mut cfg = SimConfig::new(300 + seed, 5);
        cfg.network = NetworkConfig::unreliable();
        cfg.clients = 5;
        cfg.trace = 40;
        run_with_clients(cfg, 1500);
    }
}

#[test]
fn crash_restart_churn_with_mid_turn_crashes_on_an_unreliable_network_stays_correct() {
    for seed in 0..10 {
        let mut cfg = SimConfig::new(400 + seed, 5);
        cfg.network = NetworkConfig::unreliable();
        cfg.faults = raftkv::sim::FaultConfig {
            crash: 0.02,
            restart: 0.05,
            partition: 0.02,
            heal: 0.03,
            crash_mid_turn: 0.002,
        };
        cfg.clients = 5;
        cfg.trace = 40;
        run_with_clients(cfg, 1500);
    }
}

fn expect_session_expired(outcome: Outcome, what: &str) {
    assert!(
        matches!(
            outcome,
            Outcome::Failed {
                code: ErrorCode::SessionExpired,
                ..
            }
        ),
        "{what}: {outcome:?}"
    );
}

/// Thesis §6.3: idle sessions expire by cluster time carried in the log, so every
/// replica removes them at the same index, including a replica that was cut off and
/// catches up later, and across a change of leader (the new one resumes the clock from
/// the stamps it holds). A late retry of a write of the expired session is refused with
/// `session_expired` and not applied; so is the retry of a named client's write.
#[test]
fn idle_sessions_expire_at_the_same_index_everywhere_and_a_late_retry_is_refused() {
    let mut cfg = SimConfig::new(21, 3);
    cfg.trace = 40;
    // 600 ms of cluster time: 20 ticks of 30 ms.
    cfg.replica.sessions = SessionLimits {
        timeout_ms: 600,
        max_sessions: 100,
    };
    // Snapshots all the time, so the byte-identical-snapshot invariant compares the
    // session tables of the replicas too.
    cfg.replica.snapshot_entries = 2;
    let mut sim = Sim::new(cfg);
    let a = elect(&mut sim);
    let Outcome::Registered(session) = call(&mut sim, a, ClientOp::Register) else {
        panic!("register was not answered with a session")
    };
    let first = append_in(session, 1, "k", "a");
    assert_eq!(call(&mut sim, a, first.clone()), Outcome::Written);

    // The leader is cut off; another takes over, resuming cluster time from the stamps
    // it holds. A named client writes through it.
    let ids = sim.ids().to_vec();
    sim.links().isolate(a, &ids);
    let b = elect_other_than(&mut sim, a);
    assert_eq!(
        call(&mut sim, b, append("k", "n", "named", 1)),
        Outcome::Written
    );
    let named_at = sim.replica(b).unwrap().node().last_index();
    // Time passes beyond the timeout (25 ticks: 750 ms), but nothing is stamped, so
    // nothing expires yet: expiry only ever happens at an index.
    run(&mut sim, 25, "idle");
    let registered = SessionId::Registered(session);
    for &id in &ids {
        let store = sim.replica(id).unwrap().store();
        assert!(store.has_session(&registered), "n{id} expired it early");
    }

    // Any command is stamped with the new leader's clock: both sessions expire at its
    // index, on every replica, the cut-off one included once it catches up.
    assert_eq!(call(&mut sim, b, put("other", "x")), Outcome::Written);
    let expiry = sim.replica(b).unwrap().node().last_index();

    // The late retry of the first write: refused, not applied. A new write of the
    // expired session likewise, and the named client's retry too (its tombstone
    // refuses seqs it had seen for one more timeout).
    expect_session_expired(call(&mut sim, b, first), "retry after expiry");
    let second = append_in(session, 2, "k", "b");
    expect_session_expired(call(&mut sim, b, second), "new write after expiry");
    let named_retry = append("k", "n", "named", 1);
    expect_session_expired(call(&mut sim, b, named_retry), "named retry");

    sim.links().heal();
    let last = sim.replica(b).unwrap().node().last_index();
    let named = SessionId::Named("named".into());
    let mut checked = 0;
    let caught_up = sim.run_until(20 * ELECTION, |s| {
        for &id in s.ids() {
            let r = s.replica(id).unwrap();
            let applied = r.node().applied_index();
            assert_eq!(
                r.store().has_session(&registered),
                applied < expiry,
                "n{id} at applied index {applied}: {registered} should expire at {expiry}"
            );
            assert_eq!(
                r.store().has_session(&named),
                (named_at..expiry).contains(&applied),
                "n{id} at applied index {applied}: {named} should live from {named_at} \
                 to {expiry}"
            );
            checked += 1;
        }
        applied_everywhere(s, last)
    });
    ensure(&sim, caught_up, "the cut-off node did not catch up");
    assert!(checked > 3);
    for &id in &ids {
        assert_eq!(value_at(&sim, id, "k").as_deref(), Some("an"), "n{id}");
    }

    // Going on: a new session, and the named client with a newer seq.
    let Outcome::Registered(renewed) = call(&mut sim, b, ClientOp::Register) else {
        panic!("register was not answered with a session")
    };
    assert!(renewed > session, "session numbers are never reused");
    assert_eq!(
        call(&mut sim, b, append_in(renewed, 1, "k", "b")),
        Outcome::Written
    );
    assert_eq!(
        call(&mut sim, b, append("k", "m", "named", 2)),
        Outcome::Written
    );
    assert_eq!(value_at(&sim, b, "k").as_deref(), Some("anbm"));
}

/// A small session limit pushes the least recently active session out, the same way
/// on every replica; its retry is refused, never applied a second time.
#[test]
fn the_session_limit_pushes_out_the_least_recently_active_session() {
    let mut cfg = SimConfig::new(22, 3);
    cfg.trace = 40;
    cfg.replica.sessions = SessionLimits {
        timeout_ms: SessionLimits::DEFAULT_TIMEOUT_MS,
        max_sessions: 2,
    };
    let mut sim = Sim::new(cfg);
    let leader = elect(&mut sim);
    let mut sessions = Vec::new();
    for _ in 0..2 {
        let Outcome::Registered(n) = call(&mut sim, leader, ClientOp::Register) else {
            panic!("register was not answered with a session")
        };
        sessions.push(n);
    }
    let (s1, s2) = (sessions[0], sessions[1]);
    assert_eq!(
        call(&mut sim, leader, append_in(s1, 1, "k", "1")),
        Outcome::Written
    );
    assert_eq!(
        call(&mut sim, leader, append_in(s2, 1, "k", "2")),
        Outcome::Written
    );
    // s1 wrote before s2: it is the one a third session pushes out.
    let Outcome::Registered(s3) = call(&mut sim, leader, ClientOp::Register) else {
        panic!("register was not answered with a session")
    };
    expect_session_expired(
        call(&mut sim, leader, append_in(s1, 1, "k", "1")),
        "retry of a pushed-out session",
    );
    assert_eq!(
        call(&mut sim, leader, append_in(s3, 1, "k", "3")),
        Outcome::Written
    );
    let last = sim.replica(leader).unwrap().node().last_index();
    let ok = sim.run_until(5 * ELECTION, |s| applied_everywhere(s, last));
    ensure(&sim, ok, "not applied everywhere");
    for &id in sim.ids() {
        let store = sim.replica(id).unwrap().store();
        assert_eq!(store.sessions(), 2, "n{id}");
        assert!(!store.has_session(&SessionId::Registered(s1)), "n{id}");
        assert_eq!(value_at(&sim, id, "k").as_deref(), Some("123"), "n{id}");
    }
}

/// The leader's cluster clock (LogCabin's cluster clock, thesis §6.3): stamps advance
/// with the leader's ticks, never go backwards along the log, and a new leader resumes
/// from the stamps it holds, including after the old leader was cut off.
#[test]
fn cluster_time_stamps_advance_with_ticks_and_never_go_backwards_across_leaders() {
    let mut sim = sim(23, 3);
    let ids = sim.ids().to_vec();
    let mut leader = elect(&mut sim);
    let stamps = |sim: &Sim, id: NodeId| -> Vec<u64> {
        sim.durable_log(id)
            .iter()
            .filter_map(|e| match &e.payload {
                Payload::Command(c) => Some(c.stamp.time),
                Payload::Noop => None,
            })
            .collect()
    };
    for round in 0..4 {
        assert_eq!(
            call(&mut sim, leader, put("k", &format!("{round}a"))),
            Outcome::Written
        );
        run(&mut sim, 100, "idle");
        assert_eq!(
            call(&mut sim, leader, put("k", &format!("{round}b"))),
            Outcome::Written
        );
        let times = stamps(&sim, leader);
        let (before, after) = (times[times.len() - 2], times[times.len() - 1]);
        assert!(
            after >= before + 100 * 30,
            "100 ticks of 30 ms passed between the stamps {before} and {after}"
        );
        sim.links().isolate(leader, &ids);
        leader = elect_other_than(&mut sim, leader);
        sim.links().heal();
    }
    assert_eq!(call(&mut sim, leader, put("k", "end")), Outcome::Written);
    let times = stamps(&sim, leader);
    assert_eq!(times.len(), 9);
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "stamps went backwards: {times:?}"
    );
    let clock = sim.replica(leader).unwrap().store().clock();
    assert_eq!(clock, *times.last().unwrap());
}
