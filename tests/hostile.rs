//! Hostile input on the raft port, against real clusters started the way `make cluster`
//! starts them (a named cluster, a secret file, `--secret-file` on every node), and the
//! same attacks against clusters without a secret.
//!
//! Every attack ends with the same checks (`assert_unharmed`): every node is alive, a
//! new write is acknowledged within seconds, every key written before holds its value
//! on every node, and no term jumped. With a secret, an outsider is not heard at all;
//! without one, forged-but-valid messages are what the secret is for, so those runs
//! check what validation alone promises: no crash, no wrapped term, no committed entry
//! truncated.

mod common;

use std::{
    fs,
    net::TcpStream,
    os::unix::fs::PermissionsExt,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use common::{
    peer::{self, Handshake, PeerConn},
    Answer, Cluster, Conn, KvOp, RetryClient,
};
use serde_json::{json, Value};

const LEADER_WAIT: Duration = Duration::from_secs(15);
const KEYS: usize = 20;

/// What held before an attack.
struct Before {
    leader: u64,
    term: u64,
    keys: Vec<(String, String)>,
}

/// A fresh 3-node cluster, with or without a secret, with [`KEYS`] keys written.
fn fresh(secured: bool) -> (Cluster, Before) {
    let c = if secured {
        Cluster::start_secured(3)
    } else {
        Cluster::start(3)
    };
    let (leader, term) = c.wait_for_leader(&c.ids(), LEADER_WAIT);
    let keys: Vec<(String, String)> = (0..KEYS)
        .map(|i| (format!("k{i}"), format!("v{i}")))
        .collect();
    let mut client = RetryClient::new(1, c.client_addrs());
    for (k, v) in &keys {
        put(&mut client, k, v);
    }
    (c, Before { leader, term, keys })
}

fn put(client: &mut RetryClient, key: &str, value: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    match client.write(key, KvOp::Put(value.into()), deadline) {
        Answer::Ok(_) => {}
        other => panic!("put {key} failed: {other:?}"),
    }
}

fn status(c: &Cluster, id: u64) -> Value {
    c.status(id)
        .unwrap_or_else(|| panic!("n{id} does not answer status\n{}", c.logs_tail()))
}

fn term_of(c: &Cluster, id: u64) -> u64 {
    status(c, id)["term"].as_u64().expect("term")
}

fn last_index(c: &Cluster, id: u64) -> u64 {
    status(c, id)["last_log_index"]
        .as_u64()
        .expect("last_log_index")
}

/// The checks every attack ends with: every node alive and agreeing on a leader whose
/// term is at most `new_terms` above the term before; a new write acknowledged within
/// seconds; every earlier key holding its value on every node.
fn assert_unharmed(c: &mut Cluster, before: &Before, new_terms: u64) {
    for id in c.ids() {
        assert!(c.is_running(id), "n{id} died\n{}", c.logs_tail());
    }
    let (leader, term) = c.wait_for_leader(&c.ids(), LEADER_WAIT);
    assert!(
        term <= before.term + new_terms,
        "the term jumped from {} to {term}\n{}",
        before.term,
        c.logs_tail()
    );
    let started = Instant::now();
    put(
        &mut RetryClient::new(2, c.client_addrs()),
        "after",
        "attack",
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a new write took {:?}",
        started.elapsed()
    );
    let commit = status(c, leader)["commit_index"].as_u64().expect("commit");
    for id in c.ids() {
        c.wait_until(&format!("n{id} to apply {commit}"), LEADER_WAIT, || {
            c.status(id)
                .and_then(|s| s["applied_index"].as_u64())
                .is_some_and(|a| a >= commit)
        });
        let mut conn = Conn::connect(c.addr(id), Duration::from_secs(2)).expect("connect");
        for (k, v) in &before.keys {
            let got = conn
                .call(&json!({"op": "get", "key": k, "consistency": "stale"}))
                .expect("stale get");
            assert_eq!(got["value"], json!(v), "n{id} lost {k}\n{}", c.logs_tail());
        }
    }
}

/// Delivers `messages` to node `to`'s raft port claiming to be node `from`. Without a
/// secret the handshake (no proof) succeeds and the messages are written. With one,
/// every way in is tried and must be refused: a wrong secret, no proof, and the
/// messages written with no handshake at all.
fn deliver(c: &Cluster, from: u64, to: u64, messages: &[Value]) {
    let addr = c.nodes[&to].raft.clone();
    if c.secret.is_some() {
        for secret in [Some(&b"not the cluster secret at all"[..]), None] {
            match PeerConn::handshake(&addr, &c.name, from, to, secret).expect("handshake") {
                Handshake::Refused(_) => {}
                Handshake::Welcome(_) => {
                    panic!("n{to} welcomed an impostor claiming n{from} (secret {secret:?})")
                }
            }
        }
        let mut conn = PeerConn::connect(&addr).expect("connect");
        for m in messages {
            if conn.send(m).is_err() {
                break; // closed already
            }
        }
        assert!(
            conn.closed_within(Duration::from_secs(5)),
            "n{to} kept a connection open that sent Raft messages without a handshake"
        );
    } else {
        match PeerConn::handshake(&addr, &c.name, from, to, None).expect("handshake") {
            Handshake::Welcome(mut conn) => {
                for m in messages {
                    if conn.send(m).is_err() {
                        break; // closed: a protocol violation
                    }
                }
                thread::sleep(Duration::from_millis(300));
            }
            Handshake::Refused(why) => panic!("an open node refused the handshake: {why}"),
        }
    }
}

/// Without a secret the messages got in: node `id` must have dropped them, saying why.
fn assert_violation_logged(c: &Cluster, id: u64, rule: &str) {
    if c.secret.is_none() {
        c.wait_until(
            &format!("n{id} to log \"{rule}\""),
            Duration::from_secs(5),
            || {
                c.log_text(id)
                    .lines()
                    .any(|l| l.contains("protocol violation") && l.contains(rule))
            },
        );
    }
}

fn others(c: &Cluster, not: u64) -> Vec<u64> {
    c.ids().into_iter().filter(|&id| id != not).collect()
}

// The huge-term line ---------------------------------------------------------------------

fn huge_term(secured: bool) {
    let (mut c, before) = fresh(secured);
    let leader = before.leader;
    for to in c.ids() {
        let from = if to == leader {
            others(&c, leader)[0]
        } else {
            leader
        };
        let heartbeat = peer::append(from, to, u64::MAX, (0, 0), &[], 0);
        let vote = json!({"from": from, "to": to, "term": u64::MAX,
            "body": {"vote": {"last_index": u64::MAX, "last_term": u64::MAX}}});
        let pre_vote = json!({"from": from, "to": to, "term": u64::MAX - 1,
            "body": {"pre_vote": {"last_index": u64::MAX, "last_term": u64::MAX}}});
        deliver(&c, from, to, &[heartbeat, vote, pre_vote]);
        assert_violation_logged(&c, to, "term beyond the limit");
    }
    // Nobody took the term: it is not even one election away.
    for id in c.ids() {
        let term = term_of(&c, id);
        assert!(term <= before.term + 1, "n{id} is at term {term}");
    }
    assert_unharmed(&mut c, &before, 2);
}

#[test]
fn a_huge_term_from_an_outsider_is_not_heard() {
    huge_term(true);
}

#[test]
fn without_a_secret_a_huge_term_is_dropped_and_no_term_wraps() {
    huge_term(false);
}

// Non-consecutive entries ----------------------------------------------------------------

fn non_consecutive(secured: bool) {
    let (mut c, before) = fresh(secured);
    let leader = before.leader;
    let term = before.term;
    for to in others(&c, leader) {
        let last = last_index(&c, to);
        let m = peer::append(
            leader,
            to,
            term,
            (last, term),
            &[(last + 1, term), (last + 3, term), (last + 2, term)],
            last + 3,
        );
        // And entries whose terms go down, and one beyond the message's term.
        let down = peer::append(
            leader,
            to,
            term,
            (last, term),
            &[(last + 1, term), (last + 2, term.saturating_sub(1))],
            last,
        );
        let future = peer::append(leader, to, term, (last, term), &[(last + 1, term + 5)], 0);
        deliver(&c, leader, to, &[m, down, future]);
        // (Violations are logged at most once a second: the first one shows.)
        assert_violation_logged(&c, to, "entries not consecutive");
    }
    assert_unharmed(&mut c, &before, 1);
}

#[test]
fn non_consecutive_entries_from_an_outsider_are_not_heard() {
    non_consecutive(true);
}

#[test]
fn without_a_secret_non_consecutive_entries_are_refused_and_nothing_crashes() {
    non_consecutive(false);
}

// Forged acknowledgements ----------------------------------------------------------------

/// Both followers are stopped; an outsider acknowledges, in their names, the entry a
/// client's put just appended on the leader. The leader must not acknowledge the put:
/// no majority stored it. (Without a secret a forged but valid acknowledgement would
/// be believed — that is what the secret is for — so that run forges only
/// acknowledgements of entries the leader does not have, which validation drops.)
fn forged_acks(secured: bool) {
    let (mut c, before) = fresh(secured);
    let leader = before.leader;
    let followers = others(&c, leader);
    for &f in &followers {
        c.signal(f, "STOP");
    }
    let initial = last_index(&c, leader);
    let mut client = Conn::connect(c.addr(leader), Duration::from_secs(2)).expect("connect");
    client
        .send(&json!({"op": "put", "key": "forged", "value": "never stored by a majority"}))
        .expect("send put");
    let mut last = initial;
    c.wait_until(
        "the leader to append the put",
        Duration::from_secs(2),
        || {
            last = last_index(&c, leader);
            last > initial
        },
    );
    let claimed = if secured { last } else { last + 1000 };
    for &f in &followers {
        deliver(
            &c,
            f,
            leader,
            &[peer::ack(f, leader, before.term, claimed, 0)],
        );
    }
    assert_violation_logged(&c, leader, "names entries the leader does not have");
    client.set_timeout(Duration::from_secs(3));
    if let Ok(answer) = client.recv() {
        assert_ne!(
            answer["ok"],
            json!(true),
            "the leader acknowledged a write no follower stored\n{}",
            c.logs_tail()
        );
    }
    let commit = status(&c, leader)["commit_index"].as_u64().expect("commit");
    assert!(
        commit < last,
        "the leader committed {last} with both followers stopped"
    );
    for &f in &followers {
        c.signal(f, "CONT");
    }
    assert_unharmed(&mut c, &before, 2);
}

#[test]
fn forged_acknowledgements_cannot_make_a_quorum() {
    forged_acks(true);
}

#[test]
fn without_a_secret_acknowledgements_of_unknown_entries_are_ignored() {
    forged_acks(false);
}

// Forged entries with a higher term ------------------------------------------------------

/// An outsider, claiming to be the other follower, sends a follower a new term's log
/// that replaces everything from index 1, and a commit index far ahead. Without a
/// secret the message gets in, but it names other entries at indexes the follower
/// knows are committed: no leader could send that, so it is dropped whole (term
/// included) and logged.
fn forged_entries(secured: bool) {
    let (mut c, before) = fresh(secured);
    let leader = before.leader;
    let followers = others(&c, leader);
    let (target, claimed) = (followers[0], followers[1]);
    let term = before.term + 1;
    let entries: Vec<(u64, u64)> = (1..=5).map(|i| (i, term)).collect();
    let m = peer::append(claimed, target, term, (0, 0), &entries, 5);
    deliver(&c, claimed, target, &[m]);
    assert_violation_logged(&c, target, "contradicts a committed entry");
    assert_unharmed(&mut c, &before, 1);
}

#[test]
fn forged_entries_with_a_higher_term_are_not_heard() {
    forged_entries(true);
}

#[test]
fn without_a_secret_forged_entries_never_truncate_committed_ones() {
    forged_entries(false);
}

// A node with the wrong secret -----------------------------------------------------------

#[test]
fn a_node_with_the_wrong_secret_is_kept_out_and_changes_nothing() {
    let mut c = Cluster::new(3);
    c.secure();
    c.spawn(1);
    c.spawn(2);
    let (leader, term) = c.wait_for_leader(&[1, 2], LEADER_WAIT);
    // n3 is started with a secret of its own (a file as private as the real one).
    let wrong = c.dir.path().join("wrong.secret");
    fs::write(&wrong, "a different secret, same cluster\n").expect("write");
    fs::set_permissions(&wrong, fs::Permissions::from_mode(0o600)).expect("chmod");
    let right = c.node_args.clone();
    let at = right
        .iter()
        .position(|a| a == "--secret-file")
        .expect("secured")
        + 1;
    c.node_args[at] = wrong.display().to_string();
    c.spawn(3);
    c.node_args = right;
    let mut client = RetryClient::new(1, c.client_addrs());
    for i in 0..KEYS {
        put(&mut client, &format!("k{i}"), &format!("v{i}"));
    }
    thread::sleep(Duration::from_secs(3));
    assert!(c.is_running(3), "n3 died\n{}", c.logs_tail());
    let n3 = status(&c, 3);
    assert_eq!(n3["leader"], Value::Null, "n3 found a leader: {n3}");
    assert_eq!(n3["applied_index"], json!(0), "n3 applied entries: {n3}");
    assert_eq!(c.wait_for_leader(&[1, 2], LEADER_WAIT), (leader, term));
    for id in [1, 2] {
        let log = c.log_text(id);
        let warnings = log
            .lines()
            .filter(|l| l.contains("WARN") && l.contains("handshake"))
            .count();
        assert!(warnings >= 1, "n{id} did not say why it refused n3\n{log}");
        assert!(
            warnings <= 10,
            "n{id} logged {warnings} handshake warnings in ~4 s"
        );
    }
    put(&mut client, "after", "attack");
}

// 400 idle connections per raft port -----------------------------------------------------

/// Keeps about `per_port` idle connections open to every raft port, opening fresh
/// ones all the time (the node closes idle ones), until `stop`.
fn flood(addrs: Vec<String>, per_port: usize, stop: Arc<AtomicBool>) -> thread::JoinHandle<usize> {
    thread::spawn(move || {
        let mut open: Vec<Vec<TcpStream>> = addrs.iter().map(|_| Vec::new()).collect();
        let mut opened = 0;
        while !stop.load(Ordering::Relaxed) {
            for (i, addr) in addrs.iter().enumerate() {
                for _ in 0..per_port / 4 {
                    if let Ok(s) = TcpStream::connect(addr) {
                        open[i].push(s);
                        opened += 1;
                    }
                }
                let excess = open[i].len().saturating_sub(per_port);
                open[i].drain(..excess);
            }
            thread::sleep(Duration::from_millis(250));
        }
        opened
    })
}

fn idle_flood(secured: bool) {
    let (mut c, before) = fresh(secured);
    let stop = Arc::new(AtomicBool::new(false));
    let raft_addrs: Vec<String> = c.nodes.values().map(|n| n.raft.clone()).collect();
    let flooder = flood(raft_addrs, 400, Arc::clone(&stop));
    thread::sleep(Duration::from_secs(2));

    // A follower restarts and must get back in past the flood.
    let follower = others(&c, before.leader)[0];
    c.kill(follower);
    c.spawn(follower);
    let mut client = RetryClient::new(3, c.client_addrs());
    put(&mut client, "during", "flood");
    c.wait_until("the restarted follower to catch up", LEADER_WAIT, || {
        let leader_commit = c
            .status(before.leader)
            .and_then(|s| s["commit_index"].as_u64());
        let applied = c.status(follower).and_then(|s| s["applied_index"].as_u64());
        matches!((leader_commit, applied), (Some(l), Some(a)) if a >= l)
    });

    // The leader dies; the two others must reach each other past the flood.
    c.kill(before.leader);
    let rest = others(&c, before.leader);
    c.wait_for_leader(&rest, LEADER_WAIT);
    put(&mut client, "after", "failover");
    c.spawn(before.leader);

    stop.store(true, Ordering::Relaxed);
    let opened = flooder.join().expect("flooder");
    assert!(opened >= 1200, "the flood opened only {opened} connections");
    assert_unharmed(&mut c, &before, 4);
}

#[test]
fn idle_connections_cannot_keep_members_out() {
    idle_flood(true);
}

#[test]
fn without_a_secret_idle_connections_cannot_keep_members_out() {
    idle_flood(false);
}

// A data directory of another node or another cluster -----------------------------------

#[test]
fn a_node_refuses_another_nodes_or_another_clusters_data_directory() {
    let (mut c, before) = fresh(true);
    let victim = others(&c, before.leader)[0];
    c.kill(victim);
    let refusal = |cmd: &mut std::process::Command| {
        let out = cmd
            .stderr(std::process::Stdio::piped())
            .output()
            .expect("run node");
        assert!(!out.status.success(), "the node started");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };

    // Another node's id on this directory.
    let other_id = others(&c, victim).into_iter().max().expect("a member");
    let mut cmd = c.command(victim);
    let args: Vec<String> = cmd
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let at = args.iter().position(|a| a == "--id").expect("--id") + 1;
    let mut renamed = args.clone();
    renamed[at] = other_id.to_string();
    let text = refusal(std::process::Command::new(cmd.get_program()).args(&renamed));
    assert!(
        text.contains(&format!("not to n{other_id}")) && text.contains(&format!("--id {victim}")),
        "{text}"
    );

    // Another cluster's file (same members, another name).
    let file: Value = serde_json::from_slice(&fs::read(&c.cluster_file).unwrap()).unwrap();
    let mut other = file.clone();
    other["cluster"] = json!("somebody-elses-cluster");
    let other_file = c.dir.path().join("other-cluster.json");
    fs::write(&other_file, serde_json::to_vec(&other).unwrap()).unwrap();
    let at = args
        .iter()
        .position(|a| a == "--cluster")
        .expect("--cluster")
        + 1;
    let mut moved = args.clone();
    moved[at] = other_file.display().to_string();
    cmd = std::process::Command::new(cmd.get_program());
    let text = refusal(cmd.args(&moved));
    assert!(
        text.contains(&format!("belongs to cluster {}", c.name))
            && text.contains("describes cluster somebody-elses-cluster"),
        "{text}"
    );

    // Its own id and file: back in, nothing lost.
    c.spawn(victim);
    assert_unharmed(&mut c, &before, 1);
}
