//! The client port against real nodes: authentication with `--client-token-file`
//! (raw protocol, the CLI with `--token-file`, the REPL, bench), and the deadlines for
//! slow, silent and unauthenticated clients (docs/protocol.md §3.1, §3.11). The
//! deadlines are shortened with the node's hidden `--client-*-ms` flags.

mod common;

use std::{
    fs,
    io::{self, BufRead, BufReader, Write},
    path::PathBuf,
    process::{Command, Output, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use common::{bin, Cluster, Conn};
use raftkv::{
    client::{Client, ClientOptions},
    protocol::Token,
};
use serde_json::{json, Value};

const TOKEN: &str = "s3cret";

/// A cluster of `n` nodes started with `extra` flags, and with the client token
/// [`TOKEN`] if `guarded`; returns it once it has a leader, with the token file.
fn cluster(n: u64, guarded: bool, extra: &[&str]) -> (Cluster, PathBuf) {
    let mut c = Cluster::new(n);
    let token_file = c.dir.path().join("client-token");
    fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let mut args: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
    if guarded {
        args.push("--client-token-file".into());
        args.push(token_file.display().to_string());
    }
    c.node_args = args;
    for id in c.ids() {
        c.spawn(id);
    }
    let token = guarded.then_some(TOKEN);
    if let Err(e) = client(&c, token).find_leader() {
        panic!("no leader: {e}\n{}", c.logs_tail());
    }
    (c, token_file)
}

/// A library client of `c`, with `token` if given.
fn client(c: &Cluster, token: Option<&str>) -> Client {
    let options = ClientOptions {
        deadline: Duration::from_secs(20),
        token: token.and_then(Token::new),
        ..ClientOptions::default()
    };
    Client::new(c.client_addrs(), options)
}

fn auth(token: &str, id: u64) -> Value {
    json!({"op": "auth", "token": token, "id": id})
}

/// Asserts that the node closed `conn`: end of stream (or a reset), not a timeout.
fn assert_closed(conn: &mut Conn) {
    conn.set_timeout(Duration::from_secs(10));
    match conn.recv_opt() {
        Ok(None) => {}
        Err(e)
            if !matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) => {}
        other => panic!("expected the node to close the connection, got {other:?}"),
    }
}

fn unauthorized(v: &Value) -> bool {
    v["ok"] == false && v["error"] == "unauthorized" && v["leader_addr"].is_null()
}

#[test]
fn with_a_token_nothing_but_auth_is_answered_before_auth_and_a_wrong_token_closes() {
    let (c, _) = cluster(1, true, &["--client-auth-ms", "1500"]);
    let addr = c.addr(1);

    let mut conn = Conn::connect(addr, Duration::from_secs(2)).unwrap();
    let v = conn.call(&json!({"op": "status", "id": 1})).unwrap();
    assert!(unauthorized(&v), "{v}");
    assert_eq!(v["id"], 1);
    assert!(v["message"].as_str().unwrap().contains("auth"), "{v}");
    // The connection stays open: more refusals, even for lines that are not requests.
    let v = conn
        .call(&json!({"op": "put", "key": "k", "value": "v"}))
        .unwrap();
    assert!(unauthorized(&v), "{v}");
    conn.send_raw(b"{not json\n").unwrap();
    assert!(unauthorized(&conn.recv().unwrap()));
    // The right token, then everything works.
    assert_eq!(
        conn.call(&auth(TOKEN, 2)).unwrap(),
        json!({"id": 2, "ok": true})
    );
    assert_eq!(conn.call(&json!({"op": "status"})).unwrap()["ok"], true);
    let v = conn
        .call(&json!({"op": "put", "key": "k", "value": "v"}))
        .unwrap();
    assert_eq!(v["ok"], true, "{v}");

    // auth may be pipelined with what follows it.
    let mut conn = Conn::connect(addr, Duration::from_secs(2)).unwrap();
    conn.send_raw(
        format!(
            "{}\n{}\n",
            auth(TOKEN, 1),
            json!({"op": "get", "key": "k", "id": 2})
        )
        .as_bytes(),
    )
    .unwrap();
    assert_eq!(conn.recv().unwrap(), json!({"id": 1, "ok": true}));
    assert_eq!(conn.recv().unwrap()["value"], "v");

    // A wrong token is answered, then the connection is closed.
    for wrong in ["s3cre", "s3cret!", "S3CRET", ""] {
        let mut conn = Conn::connect(addr, Duration::from_secs(2)).unwrap();
        let v = conn.call(&auth(wrong, 3)).unwrap();
        assert!(unauthorized(&v), "{wrong:?}: {v}");
        assert_eq!(v["id"], 3);
        assert_closed(&mut conn);
    }

    // A connection that does not authenticate in time is told so and closed.
    let mut conn = Conn::connect(addr, Duration::from_secs(2)).unwrap();
    let opened = Instant::now();
    let v = conn.recv().unwrap();
    assert!(unauthorized(&v), "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("not authenticated within"),
        "{v}"
    );
    assert!(
        opened.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        opened.elapsed()
    );
    assert_closed(&mut conn);
    // One that did authenticate has no such deadline.
    let mut conn = Conn::connect(addr, Duration::from_secs(2)).unwrap();
    assert_eq!(conn.call(&auth(TOKEN, 1)).unwrap()["ok"], true);
    thread::sleep(Duration::from_millis(2000));
    assert_eq!(
        conn.call(&json!({"op": "get", "key": "k"})).unwrap()["value"],
        "v"
    );
}

#[test]
fn without_a_token_the_port_is_open_and_auth_is_answered_ok() {
    let (c, _) = cluster(1, false, &[]);
    let mut conn = Conn::connect(c.addr(1), Duration::from_secs(2)).unwrap();
    assert_eq!(conn.call(&json!({"op": "status"})).unwrap()["ok"], true);
    assert_eq!(
        conn.call(&auth("anything", 7)).unwrap(),
        json!({"id": 7, "ok": true})
    );
    let v = conn.call(&json!({"op": "auth", "id": 8})).unwrap();
    assert_eq!(
        (&v["error"], &v["id"]),
        (&json!("bad_request"), &json!(8)),
        "{v}"
    );
    // A client configured with a token works against an open node too.
    let mut client = client(&c, Some(TOKEN));
    client.put("k", "v").unwrap();
    assert_eq!(client.get("k").unwrap().as_deref(), Some("v"));
}

#[test]
fn a_node_refuses_to_start_with_an_unreadable_or_empty_token_file() {
    let c = Cluster::new(1);
    let empty = c.dir.path().join("empty-token");
    fs::write(&empty, " \n\n").unwrap();
    for (file, says) in [
        (empty, "is empty"),
        (c.dir.path().join("missing"), "cannot read token file"),
    ] {
        let out = c
            .command(1)
            .arg("--client-token-file")
            .arg(&file)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
    }
}

fn raftkv(c: &Cluster, args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .arg("--cluster")
        .arg(&c.cluster_file)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn the_cli_authenticates_with_token_file_and_exits_6_without_it() {
    let (c, token_file) = cluster(3, true, &[]);
    let token = token_file.to_str().unwrap();
    let wrong_file = c.dir.path().join("wrong-token");
    fs::write(&wrong_file, "guess\n").unwrap();
    let wrong = wrong_file.to_str().unwrap();

    let out = raftkv(&c, &["put", "k", "v", "--token-file", token]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = raftkv(&c, &["get", "k", "--token-file", token]);
    assert_eq!(text(&out.stdout), "v\n");
    let out = raftkv(&c, &["status", "--token-file", token]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));

    // Without a token: a clear one-line error, at once, and exit status 6.
    let started = Instant::now();
    let out = raftkv(&c, &["get", "k"]);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("raftkv get: unauthorized: "), "{stderr}");
    assert!(stderr.contains("--token-file"), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "not retried until --timeout"
    );
    let out = raftkv(&c, &["put", "k", "w"]);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out.stderr));
    let out = raftkv(&c, &["status"]);
    assert_eq!(out.status.code(), Some(6));
    assert!(
        text(&out.stdout).contains("unauthorized"),
        "{}",
        text(&out.stdout)
    );
    // A wrong token: the same status, saying so.
    let out = raftkv(&c, &["put", "k", "w", "--token-file", wrong]);
    assert_eq!(out.status.code(), Some(6));
    assert!(
        text(&out.stderr).contains("refused the token"),
        "{}",
        text(&out.stderr)
    );
    let out = raftkv(&c, &["bench", "--ops", "10", "--token-file", wrong]);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out.stderr));
    assert_eq!(
        text(&raftkv(&c, &["get", "k", "--token-file", token]).stdout),
        "v\n"
    );

    // bench and the REPL take it too.
    let out = raftkv(
        &c,
        &[
            "bench",
            "--ops",
            "200",
            "--clients",
            "2",
            "--token-file",
            token,
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("200 ok ops"),
        "{}",
        text(&out.stdout)
    );
    let mut repl = Command::new(bin())
        .args(["repl", "--token-file", token, "--cluster"])
        .arg(&c.cluster_file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    repl.stdin
        .take()
        .unwrap()
        .write_all(b"append k +\nget k\n")
        .unwrap();
    let out = repl.wait_with_output().unwrap();
    assert_eq!(text(&out.stdout), "OK\n\"v+\"\n");
}

#[test]
fn a_slow_loris_is_closed_after_the_line_deadline_while_others_are_served() {
    const LINE_MS: u64 = 1500;
    let (c, _) = cluster(1, false, &["--client-line-ms", &LINE_MS.to_string()]);
    let addr = c.addr(1).to_string();
    // Slow clients: each sends a whole write, then the next line a byte every 100 ms.
    let slow: Vec<_> = (0..16)
        .map(|i| {
            let addr = addr.clone();
            thread::spawn(move || {
                let mut conn = Conn::connect(&addr, Duration::from_secs(2)).unwrap();
                let put = json!({"op": "put", "key": format!("slow{i}"), "value": "v", "id": i});
                conn.send(&put).unwrap();
                let started = Instant::now();
                // Dribbled on another thread, so that this one can watch the answers.
                let mut dribble = conn.stream.try_clone().unwrap();
                let dribbler = thread::spawn(move || {
                    for byte in br#"{"op":"get","key":"never-complete"}"#.iter().cycle().take(100) {
                        if dribble.write_all(&[*byte]).is_err() {
                            return;
                        }
                        thread::sleep(Duration::from_millis(100));
                    }
                });
                // The queued answer arrives while the client is still dribbling.
                let first = conn.recv().unwrap();
                let answered = started.elapsed();
                let last = conn.recv().unwrap();
                let closed_after = started.elapsed();
                assert_closed(&mut conn);
                drop(conn);
                dribbler.join().unwrap();
                (first, answered, last, closed_after)
            })
        })
        .collect();
    // Meanwhile a normal client writes away, unhindered.
    let mut normal = client(&c, None);
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut writes = 0;
    while started.elapsed() < Duration::from_millis(LINE_MS + 500) {
        let t = Instant::now();
        normal.put("normal", &writes.to_string()).unwrap();
        slowest = slowest.max(t.elapsed());
        writes += 1;
    }
    assert!(
        slowest < Duration::from_millis(500),
        "a write took {slowest:?}"
    );
    for handle in slow {
        let (first, answered, last, closed_after) = handle.join().unwrap();
        assert_eq!(first["ok"], true, "{first}");
        assert!(answered < Duration::from_millis(LINE_MS), "{answered:?}");
        assert_eq!(last["error"], "bad_request", "{last}");
        assert!(
            last["message"]
                .as_str()
                .unwrap()
                .contains("not complete within"),
            "{last}"
        );
        assert!(
            closed_after >= Duration::from_millis(LINE_MS)
                && closed_after < Duration::from_millis(LINE_MS + 3000),
            "{closed_after:?}"
        );
    }
    assert!(
        c.log_text(1).contains("sent a request line too slowly"),
        "a warning names it\n{}",
        c.logs_tail()
    );
}

#[test]
fn an_idle_connection_is_closed_and_the_client_and_repl_reconnect_without_a_word() {
    const IDLE_MS: u64 = 400;
    let (c, token_file) = cluster(3, true, &["--client-idle-ms", &IDLE_MS.to_string()]);
    // The node closes a silent connection, without an answer.
    let mut conn = Conn::connect(c.addr(1), Duration::from_secs(2)).unwrap();
    assert_eq!(conn.call(&auth(TOKEN, 1)).unwrap()["ok"], true);
    let started = Instant::now();
    assert_closed(&mut conn);
    assert!(started.elapsed() >= Duration::from_millis(IDLE_MS));

    // The library reconnects (and authenticates again) when its connection was closed.
    let mut lib = client(&c, Some(TOKEN));
    lib.put("k", "1").unwrap();
    thread::sleep(Duration::from_millis(3 * IDLE_MS));
    lib.append("k", "2").unwrap();
    assert_eq!(lib.get("k").unwrap().as_deref(), Some("12"));

    // So a REPL left open longer than the idle timeout just goes on.
    let mut repl = Command::new(bin())
        .args(["repl", "--token-file"])
        .arg(&token_file)
        .arg("--cluster")
        .arg(&c.cluster_file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = repl.stdin.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = repl.stdout.take().unwrap();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    let next = || rx.recv_timeout(Duration::from_secs(20)).unwrap();
    for (command, answer) in [
        ("append k 3", "OK"),
        ("get k", "\"123\""),
        ("put k 4", "OK"),
        ("get k", "\"4\""),
    ] {
        writeln!(stdin, "{command}").unwrap();
        assert_eq!(next(), answer, "{command}");
        thread::sleep(Duration::from_millis(3 * IDLE_MS));
    }
    drop(stdin);
    assert!(repl.wait().unwrap().success());
}
