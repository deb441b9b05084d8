//! Real-process tests: clusters of `raftkv node` processes on 127.0.0.1, faults by
//! signals (SIGKILL, SIGSTOP/SIGCONT, SIGINT), bad input, damaged data directories.

mod common;

use std::{
    fs,
    io::Write,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use common::*;
use serde_json::{json, Value};

const LEADER_WAIT: Duration = Duration::from_secs(15);

fn others(c: &Cluster, not: &[u64]) -> Vec<u64> {
    c.ids().into_iter().filter(|id| !not.contains(id)).collect()
}

fn addrs_of(c: &Cluster, ids: &[u64]) -> Vec<String> {
    ids.iter().map(|&id| c.addr(id).to_string()).collect()
}

fn ok(v: &Value) -> bool {
    v["ok"] == true
}

fn expect_ok(v: Value) -> Value {
    assert!(ok(&v), "expected success, got {v}");
    v
}

fn expect_error(v: &Value, code: &str) {
    assert_eq!(v["ok"], false, "expected {code}, got {v}");
    assert_eq!(v["error"], code, "expected {code}, got {v}");
    assert!(
        v.get("leader").is_some() && v.get("leader_addr").is_some(),
        "{v}"
    );
}

fn put(addrs: &[String], key: &str, value: &str) {
    let mut c = RetryClient::new(1000, addrs.to_vec());
    let deadline = Instant::now() + Duration::from_secs(20);
    match c.write(key, KvOp::Put(value.into()), deadline) {
        Answer::Ok(_) => {}
        other => panic!("put {key}={value} failed: {other:?}"),
    }
}

/// Waits until at least `at_least` appends are acknowledged in total.
fn wait_acked(c: &Cluster, acked: &Arc<Mutex<Vec<String>>>, at_least: usize, what: &str) {
    c.wait_until(
        &format!("{at_least} acknowledged appends ({what})"),
        Duration::from_secs(30),
        || acked.lock().unwrap().len() >= at_least,
    );
}

fn stop_clients(
    stop: &Arc<AtomicBool>,
    handles: Vec<thread::JoinHandle<Vec<Operation>>>,
) -> Vec<Operation> {
    stop.store(true, Ordering::Relaxed);
    handles
        .into_iter()
        .flat_map(|h| h.join().expect("client thread panicked"))
        .collect()
}

/// Sanity checks on a history that hold whatever the interleaving: every completed
/// read of the append log is a sequence of distinct tokens, and reads by one client
/// never go backwards (each sees a prefix-extension of its previous one).
fn check_history(history: &[Operation]) {
    let mut last_read: std::collections::BTreeMap<u64, String> = Default::default();
    for r in history {
        if r.op != KvOp::Get || r.complete.is_none() {
            continue;
        }
        let v = r.read.clone().unwrap_or_default();
        check_tokens(&v, &[]);
        if let Some(prev) = last_read.get(&r.client) {
            assert!(
                v.starts_with(prev.as_str()),
                "client {} read {v:?} after {prev:?}",
                r.client
            );
        }
        last_read.insert(r.client, v);
    }
}

// 1 -------------------------------------------------------------------------------------

#[test]
fn three_nodes_elect_agree_serve_pipeline_and_apply_writes_once() {
    let c = Cluster::start(3);
    let (leader, term) = c.wait_for_leader(&c.ids(), LEADER_WAIT);
    for id in c.ids() {
        let s = c.status(id).expect("status");
        assert_eq!(s["node"], id);
        assert_eq!(s["leader"], leader);
        assert_eq!(s["term"], term);
        assert_eq!(s["leader_addr"], c.addr(leader));
        assert_eq!(s["members"], json!([1, 2, 3]));
        assert_eq!(s["role"], if id == leader { "leader" } else { "follower" });
        for f in ["commit_index", "applied_index", "last_log_index"] {
            assert!(s[f].is_u64(), "{f} in {s}");
        }
    }

    let la = c.addr(leader).to_string();
    let mut conn = Conn::connect(&la, Duration::from_secs(2)).unwrap();
    let mut call = |v: Value| conn.call(&v).unwrap();
    expect_ok(call(json!({"op":"put","key":"k","value":"v1"})));
    assert_eq!(call(json!({"op":"get","key":"k"}))["value"], "v1");
    expect_ok(call(json!({"op":"append","key":"k","value":"+x"})));
    expect_ok(call(json!({"op":"append","key":"fresh","value":"a"})));
    assert_eq!(call(json!({"op":"get","key":"k","id":5}))["value"], "v1+x");
    assert_eq!(call(json!({"op":"get","key":"fresh"}))["value"], "a");
    expect_ok(call(json!({"op":"delete","key":"k"})));
    expect_ok(call(json!({"op":"delete","key":"never-there"})));
    let v = call(json!({"op":"get","key":"k","id":"g"}));
    assert_eq!(v, json!({"ok":true,"id":"g","value":null}));

    // A follower refuses writes, names the leader, and does not apply them.
    let f = others(&c, &[leader])[0];
    let v = common::call(
        c.addr(f),
        &json!({"op":"put","key":"k2","value":"no","id":9}),
    )
    .unwrap();
    expect_error(&v, "not_leader");
    assert_eq!(v["id"], 9);
    assert_eq!(v["leader"], leader);
    assert_eq!(v["leader_addr"], la);
    let v = common::call(c.addr(f), &json!({"op":"get","key":"k2"})).unwrap();
    expect_error(&v, "not_leader");
    assert_eq!(call(json!({"op":"get","key":"k2"}))["value"], Value::Null);

    // Pipelining: 200 requests without waiting; answers in order, ids echoed, writes
    // applied in the order sent.
    let ids: Vec<Value> = (0..200)
        .map(|i| {
            if i % 3 == 0 {
                json!(format!("s{i}"))
            } else {
                json!(i)
            }
        })
        .collect();
    let mut batch = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let req = if i % 10 == 9 {
            json!({"op":"get","key":"pipe","consistency":"stale","id":id})
        } else {
            json!({"op":"append","key":"pipe","value":format!("{i},"),"id":id})
        };
        batch.extend(serde_json::to_vec(&req).unwrap());
        batch.push(b'\n');
    }
    conn.send_raw(&batch).unwrap();
    for id in &ids {
        let v = conn.recv().unwrap();
        assert_eq!(&v["id"], id, "responses out of order: {v}");
        expect_ok(v);
    }
    let expected: String = (0..200)
        .filter(|i| i % 10 != 9)
        .map(|i| format!("{i},"))
        .collect();
    let v = conn.call(&json!({"op":"get","key":"pipe"})).unwrap();
    assert_eq!(v["value"], expected.as_str());

    // Exactly once: the same client/seq twice (in sequence, then pipelined) applies once.
    let w = json!({"op":"append","key":"once","value":"x","client":"dup","seq":1});
    expect_ok(conn.call(&w).unwrap());
    expect_ok(conn.call(&w).unwrap());
    let w2 = json!({"op":"append","key":"once","value":"y","client":"dup","seq":2});
    conn.send(&w2).unwrap();
    conn.send(&w2).unwrap();
    expect_ok(conn.recv().unwrap());
    expect_ok(conn.recv().unwrap());
    let v = conn.call(&json!({"op":"get","key":"once"})).unwrap();
    assert_eq!(v["value"], "xy");
    // ... also when the retry reaches another node.
    let v = common::call(c.addr(f), &w).unwrap();
    expect_error(&v, "not_leader");
    let v = conn.call(&json!({"op":"get","key":"once"})).unwrap();
    assert_eq!(v["value"], "xy");
    // A new process reusing the client name (its seq starting again) is told so,
    // instead of getting "ok" for a write that was never applied.
    let reused = json!({"op":"append","key":"once","value":"z","client":"dup","seq":2});
    let v = conn.call(&reused).unwrap();
    expect_error(&v, "bad_request");
    assert!(
        v["message"].as_str().unwrap().contains("already used"),
        "{v}"
    );
    let v = conn.call(&json!({"op":"get","key":"once"})).unwrap();
    assert_eq!(v["value"], "xy");
}

// 2 -------------------------------------------------------------------------------------

#[test]
fn five_nodes_survive_two_sigkills() {
    let mut c = Cluster::start(5);
    let (leader, term) = c.wait_for_leader(&c.ids(), LEADER_WAIT);
    let all = c.client_addrs();
    put(&all, "before", "1");
    let victim = others(&c, &[leader])[0];
    c.kill(leader);
    c.kill(victim);
    let alive = others(&c, &[leader, victim]);
    let (new_leader, new_term) = c.wait_for_leader(&alive, LEADER_WAIT);
    assert!(new_leader != leader && new_term > term);
    put(&all, "after", "2");
    assert_eq!(
        read_key(&all, "before", Duration::from_secs(10)).as_deref(),
        Some("1")
    );
    assert_eq!(
        read_key(&all, "after", Duration::from_secs(10)).as_deref(),
        Some("2")
    );
    // Every survivor applies both writes.
    for id in alive {
        c.wait_until(
            &format!("n{id} to apply the writes"),
            Duration::from_secs(10),
            || {
                ["before", "after"].iter().all(|k| {
                    common::call(
                        c.addr(id),
                        &json!({"op":"get","key":k,"consistency":"stale"}),
                    )
                    .is_ok_and(|v| !v["value"].is_null())
                })
            },
        );
    }
}

// 3 -------------------------------------------------------------------------------------

#[test]
fn leader_sigkill_under_load_loses_no_acknowledged_append() {
    let mut c = Cluster::start(3);
    let (leader, term) = c.wait_for_leader(&c.ids(), LEADER_WAIT);
    let addrs = c.client_addrs();
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let clients = spawn_appenders(3, &addrs, "log", &stop, &acked);
    wait_acked(&c, &acked, 100, "before the kill");

    c.kill(leader);
    let killed = Instant::now();
    let survivors = others(&c, &[leader]);
    let (new_leader, new_term) = c.wait_for_leader(&survivors, LEADER_WAIT);
    let failover = killed.elapsed();
    assert!(new_leader != leader && new_term > term);
    assert!(
        failover < 8 * ELECTION,
        "new leader only after {failover:?}\n{}",
        c.logs_tail()
    );
    let n = acked.lock().unwrap().len();
    wait_acked(&c, &acked, n + 100, "after the failover");
    let history = stop_clients(&stop, clients);

    let value = read_key(&addrs, "log", Duration::from_secs(10)).unwrap_or_default();
    check_tokens(&value, &acked.lock().unwrap());
    check_history(&history);
    assert_linearizable(&history);
    eprintln!(
        "failover took {failover:?}; {} acknowledged appends, {} ops recorded",
        acked.lock().unwrap().len(),
        history.len()
    );
}

// 3b ------------------------------------------------------------------------------------

/// Network faults through in-test TCP proxies (docs/testing.md): the leader is cut off
/// both ways under load, the majority elects a new leader and keeps accepting writes,
/// the old leader steps down; after healing it catches up, nothing acknowledged is lost
/// and the history is linearizable. Then a one-way cut (followers → leader only).
#[test]
fn a_partitioned_leader_is_replaced_and_catches_up_when_the_network_heals() {
    let c = Cluster::start_behind_proxies(3);
    let (leader, term) = c.wait_for_leader(&c.ids(), LEADER_WAIT);
    let addrs = c.client_addrs();
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let clients = spawn_appenders(3, &addrs, "log", &stop, &acked);
    wait_acked(&c, &acked, 50, "before the partition");

    c.isolate(leader);
    let survivors = others(&c, &[leader]);
    let (second, second_term) = c.wait_for_leader(&survivors, LEADER_WAIT);
    assert!(second != leader && second_term > term);
    c.wait_until("the cut-off leader to step down", LEADER_WAIT, || {
        c.status(leader).is_some_and(|s| s["role"] != "leader")
    });
    let n = acked.lock().unwrap().len();
    wait_acked(&c, &acked, n + 50, "while the old leader is cut off");

    c.heal();
    c.wait_for_leader(&c.ids(), LEADER_WAIT);

    // One way only: the leader still reaches its followers, but hears nothing back.
    let (leader, _) = c.wait_for_leader(&c.ids(), LEADER_WAIT);
    for f in others(&c, &[leader]) {
        c.cut(f, leader);
    }
    c.wait_until("a leader other than the deaf one", LEADER_WAIT, || {
        others(&c, &[leader])
            .iter()
            .any(|&id| c.status(id).is_some_and(|s| s["role"] == "leader"))
    });
    let n = acked.lock().unwrap().len();
    wait_acked(&c, &acked, n + 50, "after the one-way cut");
    c.heal();
    let (final_leader, _) = c.wait_for_leader(&c.ids(), LEADER_WAIT);
    let n = acked.lock().unwrap().len();
    wait_acked(&c, &acked, n + 20, "after healing");
    let history = stop_clients(&stop, clients);

    let target = c.status(final_leader).unwrap()["commit_index"]
        .as_u64()
        .unwrap();
    c.wait_until("every node to apply everything", LEADER_WAIT, || {
        c.ids().iter().all(|&id| {
            c.status(id)
                .is_some_and(|s| s["applied_index"].as_u64().unwrap_or(0) >= target)
        })
    });
    let value = read_key(&addrs, "log", Duration::from_secs(10)).unwrap_or_default();
    check_tokens(&value, &acked.lock().unwrap());
    check_history(&history);
    assert_linearizable(&history);
}

// 4 -------------------------------------------------------------------------------------

#[test]
fn sigkill_all_nodes_under_load_then_restart_keeps_acknowledged_writes() {
    let mut c = Cluster::start(3);
    c.wait_for_leader(&c.ids(), LEADER_WAIT);
    let addrs = c.client_addrs();
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let clients = spawn_appenders(3, &addrs, "log", &stop, &acked);
    wait_acked(&c, &acked, 150, "before the crash");
    c.kill_all();
    stop_clients(&stop, clients);
    let acked = acked.lock().unwrap().clone();

    for id in c.ids() {
        c.spawn(id);
    }
    c.wait_for_leader(&c.ids(), LEADER_WAIT);
    let value = read_key(&addrs, "log", Duration::from_secs(10)).unwrap_or_default();
    check_tokens(&value, &acked);
    // The cluster keeps working after the restart.
    put(&addrs, "after-restart", "yes");
}

// 5 -------------------------------------------------------------------------------------

#[test]
fn sigstop_leader_steps_down_on_sigcont_and_serves_no_stale_read() {
    let c = Cluster::start(3);
    let (old, term) = c.wait_for_leader(&c.ids(), LEADER_WAIT);
    let addrs = c.client_addrs();
    let mut first = RetryClient::new(400, addrs.clone());
    let first_put = first.write(
        "probe",
        KvOp::Put("old".into()),
        Instant::now() + LEADER_WAIT,
    );
    assert!(matches!(first_put, Answer::Ok(_)), "{first_put:?}");
    let rest = others(&c, &[old]);
    let rest_addrs = addrs_of(&c, &rest);

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let clients = spawn_appenders(2, &addrs, "log", &stop, &acked);
    wait_acked(&c, &acked, 20, "before the pause");

    c.signal(old, "STOP");
    let stopped = Instant::now();
    let (new, new_term) = c.wait_for_leader(&rest, LEADER_WAIT);
    assert!(new != old && new_term > term);
    let mut writer = RetryClient::new(500, rest_addrs.clone());
    let deadline = Instant::now() + Duration::from_secs(20);
    let probe_put = writer.write("probe", KvOp::Put("new".into()), deadline);
    assert!(matches!(probe_put, Answer::Ok(_)), "{probe_put:?}");
    let n = acked.lock().unwrap().len();
    wait_acked(&c, &acked, n + 10, "while the old leader is paused");
    // The pause itself: at least three election timeouts, like a long GC pause.
    if let Some(rest) = (3 * ELECTION).checked_sub(stopped.elapsed()) {
        thread::sleep(rest);
    }

    // A linearizable read waiting in the old leader's socket when it wakes up must not
    // see the overwritten value.
    let mut conn = Conn::connect(c.addr(old), Duration::from_secs(2)).unwrap();
    conn.set_timeout(Duration::from_secs(10));
    let invoke = now_ns();
    conn.send(&json!({"op":"get","key":"probe","id":1}))
        .unwrap();
    c.signal(old, "CONT");
    let v = conn.recv().expect("the old leader answers after SIGCONT");
    let complete = now_ns();
    eprintln!("get from the old leader right after SIGCONT: {v}");
    assert_eq!(v["id"], 1);
    if ok(&v) {
        assert_eq!(v["value"], "new", "stale read from the old leader: {v}");
    } else {
        assert!(
            ["not_leader", "unavailable", "timeout"].contains(&v["error"].as_str().unwrap()),
            "{v}"
        );
    }

    // It steps down, follows the new leader and catches up.
    c.wait_until(
        "the old leader to follow the new one",
        Duration::from_secs(10),
        || {
            c.status(old)
                .is_some_and(|s| s["role"] == "follower" && s["leader"] == new)
        },
    );
    let n = acked.lock().unwrap().len();
    wait_acked(&c, &acked, n + 10, "after SIGCONT");
    let mut history = stop_clients(&stop, clients);
    let target = c.status(new).unwrap()["commit_index"].as_u64().unwrap();
    c.wait_until(
        "the old leader to catch up",
        Duration::from_secs(10),
        || {
            c.status(old)
                .is_some_and(|s| s["applied_index"].as_u64().unwrap() >= target)
        },
    );

    let value = read_key(&addrs, "log", Duration::from_secs(10)).unwrap_or_default();
    let acked = acked.lock().unwrap().clone();
    check_tokens(&value, &acked);
    let stale = common::call(
        c.addr(old),
        &json!({"op":"get","key":"log","consistency":"stale"}),
    )
    .unwrap();
    check_tokens(stale["value"].as_str().unwrap_or(""), &acked);

    history.extend(first.history);
    history.extend(writer.history);
    history.push(Operation {
        client: 600,
        key: "probe".into(),
        op: KvOp::Get,
        invoke,
        complete: ok(&v).then_some(complete),
        read: v["value"].as_str().map(str::to_string),
    });
    check_history(&history);
    assert_linearizable(&history);
}

// 6 -------------------------------------------------------------------------------------

#[test]
fn bad_client_input_gets_bad_request_or_close_and_harms_nobody() {
    let mut c = Cluster::start(3);
    let (leader, term) = c.wait_for_leader(&c.ids(), LEADER_WAIT);
    let la = c.addr(leader).to_string();
    let addrs = c.client_addrs();
    put(&addrs, "keep", "safe");
    let before = c.status(leader).unwrap()["last_log_index"]
        .as_u64()
        .unwrap();

    // One connection survives every kind of bad line.
    let mut conn = Conn::connect(&la, Duration::from_secs(2)).unwrap();
    let bad_lines: &[(&[u8], Value)] = &[
        (b"{not json", Value::Null),
        (b"[1,2,3]", Value::Null),
        (b"\"just a string\"", Value::Null),
        (b"", Value::Null),
        (br#"{"op":"put","key":5,"value":"x","id":7}"#, json!(7)),
        (br#"{"op":"put","key":"keep","id":8}"#, json!(8)),
        (br#"{"op":"frobnicate","key":"keep","id":"z"}"#, json!("z")),
        (
            br#"{"op":"append","key":"keep","value":"x","client":"c1"}"#,
            Value::Null,
        ),
        (
            br#"{"op":"put","key":"keep","value":"x","client":"c1","seq":0}"#,
            Value::Null,
        ),
        (
            br#"{"op":"get","key":"keep","consistency":"eventual","id":[1]}"#,
            json!([1]),
        ),
        (b"{\"op\":\"get\",\"key\":\"\xff\xfe\"}", Value::Null),
    ];
    for (line, id) in bad_lines {
        conn.send_raw(line).unwrap();
        conn.send_raw(b"\n").unwrap();
        let v = conn.recv().unwrap();
        expect_error(&v, "bad_request");
        assert_eq!(v.get("id").cloned().unwrap_or(Value::Null), *id, "{v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // Deeply nested JSON must not blow a connection thread's small stack.
    for open in ["[", "{\"a\":"] {
        conn.send_raw(open.repeat(100_000).as_bytes()).unwrap();
        conn.send_raw(b"\n").unwrap();
        expect_error(&conn.recv().unwrap(), "bad_request");
    }
    assert_eq!(
        conn.call(&json!({"op":"get","key":"keep"})).unwrap()["value"],
        "safe"
    );

    // A 10 MiB line: bad_request (or a closed connection), then the connection closes.
    let mut big = Conn::connect(&la, Duration::from_secs(2)).unwrap();
    big.set_timeout(Duration::from_secs(10));
    let mut stream = big.stream.try_clone().unwrap();
    let sender = thread::spawn(move || {
        let mut line = vec![b'a'; 10 << 20];
        line.push(b'\n');
        let _ = stream.write_all(&line); // may fail once the node closes
    });
    // (A reset may destroy the answer: a closed connection is acceptable too.)
    if let Ok(Some(v)) = big.recv_opt() {
        expect_error(&v, "bad_request");
        assert!(matches!(big.recv_opt(), Ok(None) | Err(_)), "still open");
    }
    sender.join().unwrap();

    // Random binary: every "line" is a bad_request, then a good request still works.
    let mut bin = Conn::connect(&la, Duration::from_secs(2)).unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let garbage: Vec<u8> = (0..64 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    bin.send_raw(&garbage).unwrap();
    bin.send_raw(b"\n{\"op\":\"status\",\"id\":\"end\"}\n")
        .unwrap();
    loop {
        let v = bin.recv().unwrap();
        if v["id"] == "end" {
            expect_ok(v);
            break;
        }
        expect_error(&v, "bad_request");
    }

    // A half line, then the client disconnects.
    let mut half = Conn::connect(&la, Duration::from_secs(2)).unwrap();
    half.send_raw(br#"{"op":"put","key":"keep","value":"torn"#)
        .unwrap();
    drop(half);

    // 300 idle connections held open while a normal client is served.
    let idle: Vec<Conn> = (0..300)
        .map(|_| Conn::connect(&la, Duration::from_secs(2)).unwrap())
        .collect();
    let mut normal = Conn::connect(&la, Duration::from_secs(2)).unwrap();
    expect_ok(
        normal
            .call(&json!({"op":"put","key":"other","value":"x"}))
            .unwrap(),
    );
    assert_eq!(
        normal.call(&json!({"op":"get","key":"keep"})).unwrap()["value"],
        "safe"
    );
    drop(idle);

    // Nothing but the one good put reached the log; every node still runs, same leader.
    let after = c.status(leader).unwrap()["last_log_index"]
        .as_u64()
        .unwrap();
    assert_eq!(after, before + 1);
    for id in c.ids() {
        assert!(c.is_running(id), "n{id} died\n{}", c.logs_tail());
    }
    assert_eq!(c.wait_for_leader(&c.ids(), LEADER_WAIT), (leader, term));
    assert_eq!(
        read_key(&addrs, "keep", Duration::from_secs(10)).as_deref(),
        Some("safe")
    );
}

#[test]
fn bad_raft_input_is_dropped_and_the_cluster_keeps_its_leader() {
    let mut c = Cluster::start(3);
    let (leader, term) = c.wait_for_leader(&c.ids(), LEADER_WAIT);
    for id in c.ids() {
        let raft = c.nodes[&id].raft.clone();
        let lines: Vec<Vec<u8>> = vec![
            b"hello there\n".to_vec(),
            b"{\"x\":1}\n".to_vec(),
            b"\x00\x01\x02\xff\xfe garbage \x07\n".to_vec(),
            format!("{}\n", "[".repeat(100_000)).into_bytes(),
            format!("{}\n", "{\"body\":".repeat(100_000)).into_bytes(),
            // a well-formed message from a node that is not a member, with a huge term
            format!(
                "{{\"from\":99,\"to\":{id},\"term\":{},\"body\":{{\"vote\":{{\"last_index\":1000000,\"last_term\":1000000}}}}}}\n",
                term + 100
            )
            .into_bytes(),
            // a message addressed to another node
            format!(
                "{{\"from\":{leader},\"to\":77,\"term\":{},\"body\":{{\"vote\":{{\"last_index\":1,\"last_term\":1}}}}}}\n",
                term + 100
            )
            .into_bytes(),
        ];
        for line in lines {
            let mut conn = Conn::connect(&raft, Duration::from_secs(2)).unwrap();
            // The port closes a connection whose first line is not a handshake, possibly
            // before a long line is all written: a failed send is the node doing its job.
            if conn.send_raw(&line).is_err() {
                continue;
            }
            conn.set_timeout(Duration::from_millis(300));
            // The node either closes the connection or ignores the line; never answers.
            if let Ok(Some(v)) = conn.recv_opt() {
                panic!("raft port answered {v}");
            }
        }
        // A line longer than the peer limit (64 MiB), without a newline.
        let mut conn = Conn::connect(&raft, Duration::from_secs(2)).unwrap();
        let chunk = vec![b'{'; 1 << 20];
        for _ in 0..80 {
            if conn.send_raw(&chunk).is_err() {
                break; // closed by the node, as it should
            }
        }
    }
    for id in c.ids() {
        assert!(c.is_running(id), "n{id} died\n{}", c.logs_tail());
    }
    assert_eq!(c.wait_for_leader(&c.ids(), LEADER_WAIT), (leader, term));
    let addrs = c.client_addrs();
    put(&addrs, "still", "works");
    assert!(c.log_text(leader).contains("closing its connection"));
}

// 7 -------------------------------------------------------------------------------------

/// Starts 3 nodes, writes `writes` keys, stops a follower by SIGKILL once it has
/// everything, and returns (cluster, leader, follower).
fn cluster_with_stopped_follower(writes: usize) -> (Cluster, u64, u64) {
    let mut c = Cluster::start(3);
    let (leader, _) = c.wait_for_leader(&c.ids(), LEADER_WAIT);
    let addrs = c.client_addrs();
    let mut client = RetryClient::new(1, addrs);
    for i in 0..writes {
        let deadline = Instant::now() + Duration::from_secs(20);
        let a = client.write(&format!("k{i}"), KvOp::Put(format!("value-{i}")), deadline);
        assert!(matches!(a, Answer::Ok(_)), "{a:?}");
    }
    let f = others(&c, &[leader])[0];
    let target = c.status(leader).unwrap()["commit_index"].as_u64().unwrap();
    c.wait_until(
        &format!("n{f} to store every write"),
        Duration::from_secs(10),
        || {
            c.status(f)
                .is_some_and(|s| s["last_log_index"].as_u64().unwrap() >= target)
        },
    );
    c.kill(f);
    (c, leader, f)
}

/// What a crash in the middle of writing a batch leaves: the last segment ends in a
/// record cut short. (A crash can only tear bytes that were never fsynced, hence never
/// acknowledged; so the torn record is one the node had not acknowledged: a copy of
/// the last record's first half, appended after it.)
#[test]
fn torn_wal_tail_is_cut_and_the_node_rejoins() {
    let (mut c, leader, f) = cluster_with_stopped_follower(20);
    let seg = segments(&c.nodes[&f].data_dir).pop().expect("a segment");
    let bytes = fs::read(&seg).unwrap();
    let offsets = record_offsets(&bytes);
    let last = *offsets.last().expect("records");
    // Cut the last segment in the middle of its last record, as a crash mid-write
    // would (here the record had even been acknowledged, which is harsher).
    fs::write(&seg, &bytes[..last + (bytes.len() - last) / 2]).unwrap();
    assert_eq!(
        record_offsets(&fs::read(&seg).unwrap()).len(),
        offsets.len() - 1
    );

    c.spawn(f);
    c.wait_until(
        "the torn tail to be reported",
        Duration::from_secs(10),
        || c.log_text(f).contains("torn tail"),
    );
    let addrs = c.client_addrs();
    put(&addrs, "after-tear", "ok");
    let target = c.status(leader).unwrap()["commit_index"].as_u64().unwrap();
    c.wait_until(
        &format!("n{f} to rejoin and catch up"),
        Duration::from_secs(15),
        || {
            c.status(f).is_some_and(|s| {
                s["leader"] == leader && s["applied_index"].as_u64().unwrap() >= target
            })
        },
    );
    let v = common::call(
        c.addr(f),
        &json!({"op":"get","key":"k19","consistency":"stale"}),
    )
    .unwrap();
    assert_eq!(v["value"], "value-19");
}

#[test]
fn flipped_byte_mid_wal_is_refused_naming_file_and_offset() {
    let (mut c, _leader, f) = cluster_with_stopped_follower(20);
    let seg = segments(&c.nodes[&f].data_dir).pop().expect("a segment");
    let mut bytes = fs::read(&seg).unwrap();
    let offsets = record_offsets(&bytes);
    assert!(
        offsets.len() >= 10,
        "expected many records, got {}",
        offsets.len()
    );
    let victim = offsets[offsets.len() / 2];
    let len = u32::from_le_bytes(bytes[victim..victim + 4].try_into().unwrap()) as usize;
    bytes[victim + 8 + len / 2] ^= 0x20;
    fs::write(&seg, &bytes).unwrap();

    c.spawn(f);
    let status = c.wait_exit(f, Duration::from_secs(10));
    assert!(!status.success(), "the node must refuse damaged data");
    let log = c.log_text(f);
    let name = seg.file_name().unwrap().to_str().unwrap();
    assert!(log.contains(name), "the error must name {name}:\n{log}");
    assert!(
        log.contains(&format!("offset {victim}")),
        "the error must name offset {victim}:\n{log}"
    );
    assert_eq!(
        fs::read(&seg).unwrap(),
        bytes,
        "the damaged file was modified"
    );
}

// 8 -------------------------------------------------------------------------------------

#[test]
fn sigint_and_sigterm_exit_zero_promptly_and_restart_keeps_data() {
    let mut c = Cluster::start(3);
    let (leader, _) = c.wait_for_leader(&c.ids(), LEADER_WAIT);
    let addrs = c.client_addrs();
    for i in 0..10 {
        put(&addrs, &format!("k{i}"), &format!("v{i}"));
    }
    let f = others(&c, &[leader])[0];
    for (id, sig) in [(leader, "INT"), (f, "TERM")] {
        let sent = Instant::now();
        c.signal(id, sig);
        let status = c.wait_exit(id, Duration::from_secs(5));
        assert!(
            status.success(),
            "n{id} exited with {status} after SIG{sig}"
        );
        assert!(sent.elapsed() < Duration::from_secs(3), "slow shutdown");
        assert!(c.log_text(id).contains("shut down cleanly"));
    }
    // A restarted node takes the membership from its own data, not from the file.
    fs::write(&c.cluster_file, "this is no longer a cluster file").unwrap();
    c.spawn(leader);
    c.spawn(f);
    c.wait_for_leader(&c.ids(), LEADER_WAIT);
    assert!(c.log_text(f).contains("using the stored membership"));
    for i in 0..10 {
        let v = read_key(&addrs, &format!("k{i}"), Duration::from_secs(10));
        assert_eq!(v, Some(format!("v{i}")));
    }
}

#[test]
fn a_second_node_on_the_same_data_dir_is_refused() {
    let mut c = Cluster::new(1);
    c.spawn(1);
    c.wait_for_leader(&[1], LEADER_WAIT);
    put(&c.client_addrs(), "k", "v");

    let err_path = c.dir.path().join("second.err");
    let mut second = c
        .command(1)
        .stderr(fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = second.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = second.kill();
            panic!("the second node did not exit");
        }
        thread::sleep(Duration::from_millis(10));
    };
    let err = fs::read_to_string(&err_path).unwrap();
    assert!(!status.success());
    assert!(err.contains("in use"), "{err}");
    // A node id that is not in the cluster file is refused too.
    let out = std::process::Command::new(bin())
        .args(["node", "--id", "9", "--cluster"])
        .arg(&c.cluster_file)
        .arg("--data-dir")
        .arg(c.dir.path().join("stranger"))
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a member"), "{err}");
    // The first node is unaffected.
    assert!(c.is_running(1));
    assert_eq!(
        read_key(&c.client_addrs(), "k", Duration::from_secs(5)).as_deref(),
        Some("v")
    );
}

/// The history plumbing to the checker works: a read that misses a write completed
/// before it started is caught.
#[test]
#[should_panic(expected = "linearizability check failed")]
fn the_history_checker_catches_a_stale_read() {
    let rec = |op, invoke, complete, read: Option<&str>| Operation {
        client: 1,
        key: "k".into(),
        op,
        invoke,
        complete: Some(complete),
        read: read.map(str::to_string),
    };
    assert_linearizable(&[
        rec(KvOp::Put("a".into()), 1, 2, None),
        rec(KvOp::Put("b".into()), 3, 4, None),
        rec(KvOp::Get, 5, 6, Some("a")),
    ]);
}
