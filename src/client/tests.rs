//! Leader discovery and retry semantics, against fake nodes.

use std::{
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use serde_json::{json, Value};

use super::{
    fake::{self, Action, Fake},
    *,
};

/// Options that keep failing tests short.
fn quick(deadline_ms: u64) -> ClientOptions {
    ClientOptions {
        deadline: Duration::from_millis(deadline_ms),
        connect_timeout: Duration::from_millis(200),
        request_timeout: Duration::from_millis(150),
        backoff_start: Duration::from_millis(5),
        backoff_max: Duration::from_millis(40),
        client_id: Some("c-test".into()),
        ..ClientOptions::default()
    }
}

fn session(request: &Value) -> (String, u64) {
    (
        request["client"].as_str().unwrap().to_string(),
        request["seq"].as_u64().unwrap(),
    )
}

/// A handler that answers the `n`th request (0-based) with `script(n)`.
fn scripted(script: impl Fn(usize) -> Action + Send + 'static) -> impl FnMut(&Value) -> Action {
    let count = AtomicUsize::new(0);
    move |_| script(count.fetch_add(1, Ordering::SeqCst))
}

#[test]
fn client_is_send() {
    fn assert_send<T: Send>() {}
    assert_send::<Client>();
    assert_send::<ClientError>();
}

#[test]
fn follows_a_not_leader_hint_and_remembers_the_leader() {
    let b = fake::start_kv(2);
    let hint = b.addr.clone();
    let a = Fake::start(move |_| Action::Reply(fake::not_leader(Some(&hint))));
    // Only A is configured: the client must learn B from the hint.
    let mut client = Client::new(vec![a.addr.clone()], quick(2000));
    client.put("k", "v1").unwrap();
    assert_eq!(client.last_addr(), Some(b.addr.as_str()));
    assert_eq!(client.known_leader(), Some(b.addr.as_str()));
    assert_eq!(a.seen().len(), 1);
    // The next operations go straight to the remembered leader.
    assert_eq!(client.get("k").unwrap().as_deref(), Some("v1"));
    client.append("k", "+").unwrap();
    assert_eq!(client.get("k").unwrap().as_deref(), Some("v1+"));
    assert_eq!(a.seen().len(), 1);
    // A's answer was "not applied", so B saw the first write exactly once, with seq 1.
    let writes: Vec<_> = b
        .seen()
        .iter()
        .filter(|r| r["op"] != "get")
        .map(session)
        .collect();
    assert_eq!(
        writes,
        vec![("c-test".to_string(), 1), ("c-test".to_string(), 2)]
    );
}

#[test]
fn skips_a_node_that_refuses_connections() {
    let b = fake::start_kv(2);
    let mut client = Client::new(vec![fake::refused_addr(), b.addr.clone()], quick(2000));
    client.put("k", "v").unwrap();
    assert_eq!(client.last_addr(), Some(b.addr.as_str()));
    assert_eq!(client.get("k").unwrap().as_deref(), Some("v"));
    assert_eq!(client.delete("k"), Ok(()));
    assert_eq!(client.get("k"), Ok(None));
}

#[test]
fn a_timeout_is_retried_with_the_same_seq() {
    let node = Fake::start(scripted(|n| {
        Action::Reply(if n == 0 {
            fake::error(ErrorCode::Timeout)
        } else {
            fake::ok()
        })
    }));
    let mut client = Client::new(vec![node.addr.clone()], quick(2000));
    client.put("k", "v").unwrap();
    let seen = node.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0], seen[1], "the retry is the very same request");
    assert_eq!(session(&seen[1]), ("c-test".into(), 1));
    // The next write moves on to the next seq.
    client.put("k", "w").unwrap();
    assert_eq!(session(&node.seen()[2]).1, 2);
}

#[test]
fn a_dropped_connection_is_retried_with_the_same_seq_elsewhere() {
    let a = Fake::start(|_| Action::Close);
    let b = fake::start_kv(2);
    let mut client = Client::new(vec![a.addr.clone(), b.addr.clone()], quick(2000));
    client.append("k", "x").unwrap();
    assert_eq!(session(&a.seen()[0]), session(&b.seen()[0]));
    assert_eq!(client.get("k").unwrap().as_deref(), Some("x"));
}

#[test]
fn a_silent_node_times_out_and_the_retry_reuses_the_seq() {
    let node = Fake::start(scripted(|n| {
        if n == 0 {
            Action::Ignore
        } else {
            Action::Reply(fake::ok())
        }
    }));
    let mut client = Client::new(vec![node.addr.clone()], quick(2000));
    client.delete("k").unwrap();
    let seen = node.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(session(&seen[0]), session(&seen[1]));
}

#[test]
fn only_not_leader_unavailable_and_refusals_mean_not_applied() {
    let no_hint = Fake::start(|_| Action::Reply(fake::not_leader(None)));
    let unavailable = Fake::start(|_| Action::Reply(fake::error(ErrorCode::Unavailable)));
    let addrs = vec![
        no_hint.addr.clone(),
        unavailable.addr.clone(),
        fake::refused_addr(),
    ];
    let mut client = Client::new(addrs, quick(300));
    let started = Instant::now();
    let err = client.put("k", "v").unwrap_err();
    assert!(matches!(err, ClientError::NotApplied { .. }), "{err}");
    assert!(!err.may_have_been_applied());
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "the deadline is kept"
    );
    assert!(
        client.last_attempts > 3,
        "it kept retrying until the deadline"
    );
    assert_eq!(client.last_addr(), None);
    // Every attempt carried the same seq.
    let mut seqs: Vec<_> = no_hint
        .seen()
        .iter()
        .chain(unavailable.seen().iter())
        .map(session)
        .collect();
    seqs.dedup();
    assert_eq!(seqs, vec![("c-test".to_string(), 1)]);
}

#[test]
fn all_refused_is_not_applied() {
    let mut client = Client::new(vec![fake::refused_addr(), fake::refused_addr()], quick(200));
    let err = client.put("k", "v").unwrap_err();
    assert!(matches!(err, ClientError::NotApplied { .. }), "{err}");
    assert!(err.reason().contains("connection refused"), "{err}");
}

#[test]
fn an_uncertain_attempt_makes_the_outcome_unknown_even_if_later_ones_are_refused() {
    // First a timeout, then "not leader" forever: the first attempt may still commit.
    let node = Fake::start(scripted(|n| {
        Action::Reply(if n == 0 {
            fake::error(ErrorCode::Timeout)
        } else {
            fake::not_leader(None)
        })
    }));
    let mut client = Client::new(vec![node.addr.clone()], quick(300));
    let err = client.put("k", "v").unwrap_err();
    assert!(matches!(err, ClientError::Unknown { .. }), "{err}");
    assert!(err.may_have_been_applied());
    assert!(err.to_string().starts_with("outcome unknown"));
}

#[test]
fn lost_connections_and_silence_make_writes_unknown_but_reads_not_applied() {
    for action in [|| Action::Close, || Action::Ignore] {
        let node = Fake::start(move |_| action());
        let mut client = Client::new(vec![node.addr.clone()], quick(250));
        let err = client.put("k", "v").unwrap_err();
        assert!(matches!(err, ClientError::Unknown { .. }), "{err}");
        let err = client.get("k").unwrap_err();
        assert!(matches!(err, ClientError::NotApplied { .. }), "{err}");
    }
}

#[test]
fn bad_request_is_final_and_not_retried() {
    let node =
        Fake::start(|_| Action::Reply(protocol_error(ErrorCode::BadRequest, "value is too large")));
    let mut client = Client::new(vec![node.addr.clone()], quick(2000));
    let err = client.put("k", "v").unwrap_err();
    assert_eq!(err, ClientError::BadRequest("value is too large".into()));
    assert_eq!(node.seen().len(), 1);
    assert_eq!(client.last_addr(), Some(node.addr.as_str()));
}

fn protocol_error(code: ErrorCode, message: &str) -> Value {
    crate::protocol::error_response(None, code, message, None, None)
}

#[test]
fn no_servers() {
    let mut client = Client::new(vec![" ".into()], quick(100));
    assert_eq!(client.get("k"), Err(ClientError::NoServers));
    assert_eq!(client.find_leader(), Err(ClientError::NoServers));
}

#[test]
fn a_connection_the_server_closed_while_idle_is_replaced_before_use() {
    // The node answers, then hangs up; the next request must go over a new connection
    // at the first attempt, rather than being lost on the dead one.
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap().to_string();
    let mut client = Client::new(vec![addr.clone()], quick(2000));
    let accept = std::thread::spawn(move || {
        let (stream, _) = server.accept().unwrap();
        let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
        let mut writer = stream;
        let mut buf = Vec::new();
        crate::codec::read_line(&mut reader, &mut buf, 1 << 16).unwrap();
        crate::codec::write_json_line(&mut writer, &fake::ok()).unwrap();
        drop(writer);
        drop(reader);
        // A second connection gets a proper answer.
        let (stream, _) = server.accept().unwrap();
        let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
        let mut writer = stream;
        crate::codec::read_line(&mut reader, &mut buf, 1 << 16).unwrap();
        crate::codec::write_json_line(&mut writer, &fake::ok()).unwrap();
        String::from_utf8(buf).unwrap()
    });
    client.put("k", "1").unwrap();
    std::thread::sleep(Duration::from_millis(50)); // let the FIN arrive
    client.put("k", "2").unwrap();
    assert_eq!(
        client.last_attempts, 1,
        "the dead connection was noticed before sending"
    );
    let second: Value = serde_json::from_str(&accept.join().unwrap()).unwrap();
    assert_eq!(second["seq"], 2);
}

#[test]
fn raw_adds_a_session_to_writes_and_keeps_the_exact_response_line() {
    let node = fake::start_kv(1);
    let mut client = Client::new(vec![node.addr.clone()], quick(2000));
    let (response, addr) = client
        .raw(json!({"op": "put", "key": "k", "value": "v"}))
        .unwrap();
    assert_eq!(response, json!({"ok": true}));
    assert_eq!(addr, node.addr);
    assert_eq!(session(&node.seen()[0]), ("c-test".into(), 1));
    let (response, _) = client
        .raw(json!({"op": "get", "key": "k", "id": 9}))
        .unwrap();
    assert_eq!(response["value"], "v");
    assert_eq!(
        client.last_response_line(),
        Some(r#"{"id":9,"ok":true,"value":"v"}"#)
    );
    // A user-supplied session is left alone; a bad request comes back as a response.
    let (response, _) = client
        .raw(json!({"op": "put", "key": "k", "value": "v", "seq": 5}))
        .unwrap();
    assert_eq!(response["error"], "bad_request");
    assert!(node.seen()[2].get("client").is_none());
}

#[test]
fn status_of_each_node_and_leader_discovery() {
    let leader = fake::start_kv(2);
    let hint = leader.addr.clone();
    let follower = Fake::start(move |_| {
        let mut s = json!({"ok": true, "node": 1, "role": "follower", "term": 3, "leader": 2,
            "leader_addr": hint, "commit_index": 7, "applied_index": 6, "last_log_index": 7,
            "members": [1, 2, 3], "extra": "ignored"});
        s["x"] = json!(1);
        Action::Reply(s)
    });
    let down = fake::refused_addr();
    let config = ClusterConfig::parse(
        &json!({"nodes": [
            {"id": 1, "raft": "127.0.0.1:1", "client": follower.addr},
            {"id": 2, "raft": "127.0.0.1:2", "client": leader.addr},
            {"id": 3, "raft": "127.0.0.1:3", "client": down},
        ]})
        .to_string(),
    )
    .unwrap();
    let mut client = Client::from_cluster(&config, quick(500));
    let all = client.status_all();
    assert_eq!(all.len(), 3);
    let s1 = all[0].1.as_ref().unwrap();
    assert_eq!(
        (s1.node, s1.role.as_str(), s1.leader, s1.applied_index),
        (1, "follower", Some(2), 6)
    );
    assert_eq!(all[1].1.as_ref().unwrap().role, "leader");
    assert!(matches!(all[2].1, Err(ClientError::NotApplied { .. })));
    assert_eq!(client.node_label(&leader.addr), "n2");
    assert_eq!(client.find_leader().unwrap(), leader.addr);
    assert_eq!(client.known_leader(), Some(leader.addr.as_str()));
}

#[test]
fn backoff_doubles_with_jitter_up_to_the_cap() {
    let mut b = Backoff {
        next: Duration::from_millis(20),
        max: Duration::from_millis(500),
    };
    let waits: Vec<_> = (0..8).map(|_| b.next_wait()).collect();
    assert!(waits[0] >= Duration::from_millis(10) && waits[0] <= Duration::from_millis(20));
    assert!(waits[1] >= Duration::from_millis(20) && waits[1] <= Duration::from_millis(40));
    for w in &waits[5..] {
        assert!(
            *w >= Duration::from_millis(250) && *w <= Duration::from_millis(500),
            "{w:?}"
        );
    }
}

#[test]
fn oversized_keys_and_values_are_refused_without_sending() {
    let node = fake::start_kv(1);
    let mut client = Client::new(vec![node.addr.clone()], quick(2000));
    let big = "v".repeat(crate::kv::MAX_VALUE_BYTES + 1);
    assert!(
        matches!(client.put("k", &big), Err(ClientError::BadRequest(m)) if m.contains("limit"))
    );
    let long_key = "k".repeat(crate::kv::MAX_KEY_BYTES + 1);
    assert!(matches!(
        client.get(&long_key),
        Err(ClientError::BadRequest(_))
    ));
    assert!(matches!(
        client.raw(json!({"op": "get", "key": long_key})),
        Err(ClientError::BadRequest(_))
    ));
    assert!(node.seen().is_empty());
    // At the limit is fine.
    client.put("k", &big[1..]).unwrap();
}

/// Options for a client that registers sessions (no `client_id`).
fn registering(deadline_ms: u64) -> ClientOptions {
    ClientOptions {
        client_id: None,
        ..quick(deadline_ms)
    }
}

fn ops(seen: &[Value]) -> Vec<String> {
    seen.iter()
        .map(|r| match (r["op"].as_str().unwrap(), r.get("session")) {
            (op, Some(s)) => format!("{op} s{s} #{}", r["seq"]),
            (op, None) => op.to_string(),
        })
        .collect()
}

#[test]
fn a_client_registers_a_session_on_its_first_write_and_numbers_writes_in_it() {
    let node = fake::start_kv(1);
    let mut client = Client::new(vec![node.addr.clone()], registering(2000));
    assert_eq!(client.session(), None);
    assert_eq!(client.get("k"), Ok(None), "a read needs no session");
    client.put("k", "v").unwrap();
    client.append("k", "w").unwrap();
    assert_eq!(client.session(), Some(1));
    assert_eq!(client.client_id(), None);
    assert_eq!(client.get("k").unwrap().as_deref(), Some("vw"));
    assert_eq!(
        ops(&node.seen()),
        vec!["get", "register", "put s1 #1", "append s1 #2", "get"]
    );
    // raw() writes go out the same way; one with its own session goes as it is.
    let (response, _) = client
        .raw(json!({"op": "delete", "key": "k", "id": 3}))
        .unwrap();
    assert_eq!(response, json!({"id": 3, "ok": true}));
    let (response, _) = client
        .raw(json!({"op": "put", "key": "k", "value": "x", "session": 9, "seq": 1}))
        .unwrap();
    assert_eq!(response["error"], "session_expired");
    let seen = ops(&node.seen());
    assert_eq!(seen[5..], ["delete s1 #3", "put s9 #1"]);
}

#[test]
fn an_expired_session_is_replaced_and_a_write_it_certainly_did_not_apply_goes_again() {
    let (node, clock) = fake::start_kv_with_clock(1);
    let mut client = Client::new(vec![node.addr.clone()], registering(2000));
    client.append("k", "a").unwrap();
    clock.store(5 * fake::FAKE_SESSION_TIMEOUT_MS, Ordering::SeqCst);
    client.append("k", "b").unwrap();
    assert_eq!(
        client.get("k").unwrap().as_deref(),
        Some("ab"),
        "applied once"
    );
    assert_eq!(client.session(), Some(2));
    assert_eq!(
        ops(&node.seen()),
        vec![
            "register",
            "append s1 #1",
            "append s1 #2", // session_expired: not applied
            "register",
            "append s2 #1",
            "get"
        ]
    );
}

#[test]
fn an_expired_session_after_an_uncertain_attempt_makes_the_write_unknown() {
    // Attempt 1 times out (it may have been applied); by the retry the session is
    // gone, and with it the only record of whether attempt 1 took effect.
    let node = Fake::start(scripted(|n| {
        Action::Reply(match n {
            0 => json!({"ok": true, "session": 1}),
            1 => fake::error(ErrorCode::Timeout),
            2 => fake::error(ErrorCode::SessionExpired),
            3 => json!({"ok": true, "session": 2}),
            _ => fake::ok(),
        })
    }));
    let mut client = Client::new(vec![node.addr.clone()], registering(2000));
    let err = client.append("k", "a").unwrap_err();
    assert!(matches!(err, ClientError::Unknown { .. }), "{err}");
    assert!(err.reason().contains("session expired"), "{err}");
    assert_eq!(client.session(), None, "the old session is dropped");
    // The next write registers a new session.
    client.append("k", "b").unwrap();
    assert_eq!(
        ops(&node.seen()),
        vec![
            "register",
            "append s1 #1",
            "append s1 #1",
            "register",
            "append s2 #1"
        ]
    );
}

#[test]
fn a_node_that_does_not_know_register_gets_the_named_form() {
    let node = Fake::start(|r| {
        Action::Reply(if r["op"] == "register" {
            protocol_error(ErrorCode::BadRequest, "unknown op \"register\"")
        } else {
            fake::ok()
        })
    });
    let mut client = Client::new(vec![node.addr.clone()], registering(2000));
    client.put("k", "v").unwrap();
    client.put("k", "w").unwrap();
    let name = client.client_id().unwrap().to_string();
    assert!(name.starts_with("c-"), "{name}");
    let seen = node.seen();
    assert_eq!(seen.len(), 3);
    assert_eq!(session(&seen[1]), (name.clone(), 1));
    assert_eq!(session(&seen[2]), (name, 2));
}

#[test]
fn a_named_client_refused_as_expired_gets_a_final_error() {
    // The cluster refuses this seq of the name for good: not applied, not retried.
    let node = Fake::start(|_| Action::Reply(fake::error(ErrorCode::SessionExpired)));
    let mut client = Client::new(vec![node.addr.clone()], quick(2000));
    let err = client.put("k", "v").unwrap_err();
    assert!(matches!(err, ClientError::BadRequest(_)), "{err}");
    assert_eq!(node.seen().len(), 1);
}

/// Options of a client with the token `s3cret`.
fn with_token(deadline_ms: u64) -> ClientOptions {
    ClientOptions {
        token: Token::new("s3cret"),
        ..quick(deadline_ms)
    }
}

#[test]
fn a_token_is_sent_first_on_every_connection_the_client_opens() {
    let me = Arc::new(parking_lot::Mutex::new(String::new()));
    let mut kv = fake::kv(1, Arc::clone(&me), Arc::new(AtomicU64::new(0)));
    let mut dropped = false;
    // The first put loses its connection: the retry goes out on a new one.
    let node = Fake::start(move |r| {
        if r["op"] == "put" && !dropped {
            dropped = true;
            return Action::Close;
        }
        kv(r)
    });
    *me.lock() = node.addr.clone();
    let mut client = Client::new(vec![node.addr.clone()], with_token(2000));
    client.put("k", "v").unwrap();
    assert_eq!(client.get("k").unwrap().as_deref(), Some("v"));
    let seen = node.seen();
    let ops: Vec<&str> = seen.iter().map(|r| r["op"].as_str().unwrap()).collect();
    assert_eq!(ops, ["auth", "put", "auth", "put", "get"]);
    assert!(seen
        .iter()
        .filter(|r| r["op"] == "auth")
        .all(|r| r["token"] == "s3cret"));
    // And against a node that needs no token, `auth` is simply answered ok.
    let open = fake::start_kv(2);
    let mut client = Client::new(vec![open.addr.clone()], with_token(2000));
    client.put("k", "v").unwrap();
}

#[test]
fn unauthorized_is_final_and_says_whether_a_token_was_given() {
    let node = Fake::start(|_| {
        Action::Reply(protocol_error(
            ErrorCode::Unauthorized,
            "authentication required",
        ))
    });
    let started = Instant::now();
    let mut client = Client::new(vec![node.addr.clone()], quick(5000));
    let err = client.put("k", "v").unwrap_err();
    assert!(
        matches!(&err, ClientError::Unauthorized(m) if m.contains("none was given")),
        "{err}"
    );
    assert!(!err.may_have_been_applied());
    assert!(matches!(client.get("k"), Err(ClientError::Unauthorized(_))));
    assert!(matches!(
        client.status(&node.addr),
        Err(ClientError::Unauthorized(_))
    ));
    assert!(matches!(
        client.find_leader(),
        Err(ClientError::Unauthorized(_))
    ));
    let mut client = Client::new(vec![node.addr.clone()], with_token(5000));
    let err = client.get("k").unwrap_err();
    assert!(
        matches!(&err, ClientError::Unauthorized(m) if m.contains("refused the token")),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "not retried until the deadline"
    );
}

#[test]
fn unauthorized_after_an_attempt_that_may_have_applied_leaves_the_outcome_unknown() {
    // The first put gets no answer (it may have been applied); the retry is refused.
    let node = Fake::start(scripted(|n| match n {
        0 => Action::Ignore,
        _ => Action::Reply(protocol_error(ErrorCode::Unauthorized, "no")),
    }));
    let mut client = Client::new(vec![node.addr.clone()], quick(2000));
    let err = client.put("k", "v").unwrap_err();
    assert!(err.may_have_been_applied(), "{err}");
}
