//! Client sessions on real processes (docs/protocol.md §3.6): a cluster file with a
//! one-second session timeout, so sessions expire while the test watches.

mod common;

use std::{fs, process::Command, time::Duration};

use common::*;
use serde_json::{json, Value};

const LEADER_WAIT: Duration = Duration::from_secs(15);

/// A 3-node cluster whose sessions expire after 1 s of cluster time.
fn start() -> Cluster {
    let mut c = Cluster::new(3);
    let mut file: Value = serde_json::from_slice(&fs::read(&c.cluster_file).unwrap()).unwrap();
    file["session_timeout_secs"] = json!(1);
    file["max_sessions"] = json!(1000);
    fs::write(&c.cluster_file, serde_json::to_vec_pretty(&file).unwrap()).unwrap();
    for id in c.ids() {
        c.spawn(id);
    }
    c
}

fn sessions(c: &Cluster, id: u64) -> Option<u64> {
    c.status(id).and_then(|s| s["sessions"].as_u64())
}

fn expect_ok(v: Value) {
    assert_eq!(v["ok"], true, "{v}");
}

/// Sessionless writes move cluster time along (each is stamped) until the leader
/// reports no session left.
fn wait_for_expiry(c: &Cluster, leader: u64) {
    let mut n = 0;
    c.wait_until("the sessions to expire", Duration::from_secs(10), || {
        n += 1;
        let tick = json!({"op": "put", "key": "tick", "value": n.to_string()});
        call(c.addr(leader), &tick).is_ok_and(|v| v["ok"] == true) && sessions(c, leader) == Some(0)
    });
}

#[test]
fn an_expired_sessions_retry_is_refused_everywhere_and_after_a_full_restart() {
    let mut c = start();
    let (leader, _) = c.wait_for_leader(&c.ids(), LEADER_WAIT);
    let mut conn = Conn::connect(c.addr(leader), Duration::from_secs(5)).unwrap();
    let registered = conn.call(&json!({"op": "register"})).unwrap();
    let session = registered["session"].as_u64().expect("a session number");
    let write = json!({"op": "append", "key": "k", "value": "a", "session": session, "seq": 1});
    expect_ok(conn.call(&write).unwrap());
    expect_ok(conn.call(&write).unwrap()); // a retry: answered, not applied again
    let named = json!({"op": "append", "key": "k", "value": "n", "client": "old", "seq": 1});
    expect_ok(conn.call(&named).unwrap());
    assert_eq!(sessions(&c, leader), Some(2));

    wait_for_expiry(&c, leader);
    // Every node removed them (at the same index; the simulator checks that part).
    c.wait_until("every node to drop them", Duration::from_secs(10), || {
        c.ids().iter().all(|&id| sessions(&c, id) == Some(0))
    });
    let refused = conn.call(&write).unwrap();
    assert_eq!(refused["error"], "session_expired", "{refused}");
    let refused = conn.call(&named).unwrap();
    assert_eq!(refused["error"], "session_expired", "{refused}");
    let v = conn.call(&json!({"op": "get", "key": "k"})).unwrap();
    assert_eq!(v["value"], "an");

    // A full restart rebuilds the same table from the log: still expired, and a new
    // registration gets a number never handed out before.
    drop(conn);
    c.kill_all();
    for id in c.ids() {
        c.spawn(id);
    }
    let (leader, _) = c.wait_for_leader(&c.ids(), LEADER_WAIT);
    let mut conn = Conn::connect(c.addr(leader), Duration::from_secs(5)).unwrap();
    let refused = conn.call(&write).unwrap();
    assert_eq!(refused["error"], "session_expired", "{refused}");
    let renewed = conn.call(&json!({"op": "register"})).unwrap();
    assert!(renewed["session"].as_u64().unwrap() > session, "{renewed}");
    let v = conn.call(&json!({"op": "get", "key": "k"})).unwrap();
    assert_eq!(v["value"], "an");
}

#[test]
fn one_shot_commands_leave_no_session_behind_for_longer_than_the_timeout() {
    let c = start();
    let (leader, _) = c.wait_for_leader(&c.ids(), LEADER_WAIT);
    let cluster = c.cluster_file.to_str().unwrap().to_string();
    let run = |args: &[&str]| {
        let out = Command::new(bin())
            .args(args)
            .args(["--cluster", &cluster])
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    run(&["put", "k", "v"]);
    run(&["append", "k", "w"]);
    assert_eq!(sessions(&c, leader), Some(2), "one session per call");
    wait_for_expiry(&c, leader);
    assert_eq!(run(&["get", "k"]), "vw\n");
    assert_eq!(sessions(&c, leader), Some(0), "a read registers nothing");
}
