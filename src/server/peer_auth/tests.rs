//! Both sides of the handshake over loopback TCP, and a hand-driven dialer or listener
//! for what a real one never sends.

use std::{
    io::{BufRead, BufReader, Write},
    net::{TcpListener, TcpStream},
    thread,
    time::{Duration, Instant},
};

use super::*;

const SECRET: &[u8] = b"0123456789abcdef-the-cluster-secret";

fn auth(me: NodeId, secret: Option<&[u8]>) -> Auth {
    Auth {
        cluster: "test".into(),
        me,
        members: [1, 2, 3].into(),
        secret: secret.map(|s| Secret::new(s).unwrap()),
    }
}

/// The two ends of one loopback connection: (dialer's, listener's).
fn connection() -> (BufReader<PeerStream>, BufReader<PeerStream>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let dialer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (accepted, _) = listener.accept().unwrap();
    (
        BufReader::new(PeerStream::new(dialer)),
        BufReader::new(PeerStream::new(accepted)),
    )
}

/// Runs `dial` (as n1, towards n2) against `accept` (as n2). A side that fails
/// closes its end, as `replicator` and `peer_port` do.
fn handshake(dialer: Auth, listener: Auth) -> (Result<(), Failure>, Result<NodeId, Failure>) {
    let (mut d, mut l) = connection();
    let listening = thread::spawn(move || accept(&listener, &mut l));
    let dialed = dial(&dialer, 2, &mut d);
    drop(d);
    (dialed, listening.join().unwrap())
}

fn refused(result: Result<impl fmt::Debug, Failure>, words: &str) {
    match result {
        Err(Failure::Refused(why)) => assert!(why.contains(words), "{why:?} lacks {words:?}"),
        other => panic!("expected a refusal with {words:?}, got {other:?}"),
    }
}

fn broken(result: Result<impl fmt::Debug, Failure>) {
    assert!(matches!(result, Err(Failure::Broken(_))), "{result:?}");
}

#[test]
fn the_same_secret_on_both_sides_is_welcome_and_the_connection_carries_on() {
    let (mut d, mut l) = connection();
    let listening = thread::spawn(move || {
        let from = accept(&auth(2, Some(SECRET)), &mut l).unwrap();
        let mut line = String::new();
        l.read_line(&mut line).unwrap();
        (from, line)
    });
    dial(&auth(1, Some(SECRET)), 2, &mut d).unwrap();
    d.get_ref().socket().write_all(b"{\"ping\":{}}\n").unwrap();
    let (from, line) = listening.join().unwrap();
    assert_eq!(from, 1);
    assert_eq!(
        line, "{\"ping\":{}}\n",
        "what follows the handshake is not lost"
    );
    // No deadline is left behind on either end.
    assert_eq!(d.get_ref().socket().read_timeout().unwrap(), None);
}

#[test]
fn no_secret_on_either_side_still_checks_cluster_and_ids() {
    let (dialed, accepted) = handshake(auth(1, None), auth(2, None));
    assert_eq!((dialed, accepted), (Ok(()), Ok(1)));
}

#[test]
fn a_wrong_secret_is_refused_by_the_dialer_before_it_proves_anything() {
    let other = b"another-secret-of-sufficient-length";
    let (dialed, accepted) = handshake(auth(1, Some(other)), auth(2, Some(SECRET)));
    refused(dialed, "could not prove the cluster secret");
    broken(accepted);
}

#[test]
fn a_secret_on_one_side_only_is_refused() {
    let (dialed, accepted) = handshake(auth(1, None), auth(2, Some(SECRET)));
    refused(dialed, "n2 proves a cluster secret and this node has none");
    broken(accepted);
    let (dialed, accepted) = handshake(auth(1, Some(SECRET)), auth(2, None));
    refused(
        dialed,
        "n2 proves no cluster secret and this node requires one",
    );
    broken(accepted);
}

#[test]
fn another_cluster_is_refused_and_told_why() {
    let mut other = auth(1, Some(SECRET));
    other.cluster = "prod".into();
    let (dialed, accepted) = handshake(other, auth(2, Some(SECRET)));
    refused(accepted, "belongs to cluster test, not \"prod\"");
    refused(
        dialed,
        "n2 refused this node: \"this node belongs to cluster test",
    );
}

#[test]
fn ids_that_are_not_the_dialers_to_claim_are_refused() {
    for (me, words) in [
        (9, "n9 is not a member of cluster test"),
        (2, "n2 is this node's own id"),
    ] {
        let (dialed, accepted) = handshake(auth(me, Some(SECRET)), auth(2, Some(SECRET)));
        refused(accepted, words);
        refused(dialed, words);
    }
    // A dialer that means another node.
    let (mut d, mut l) = connection();
    let listening = thread::spawn(move || accept(&auth(3, Some(SECRET)), &mut l));
    refused(
        dial(&auth(1, Some(SECRET)), 2, &mut d),
        "this is n3, not n2",
    );
    refused(listening.join().unwrap(), "this is n3, not n2");
}

/// A dialer driven line by line: the raw socket and its reader.
struct Raw {
    out: TcpStream,
    lines: BufReader<TcpStream>,
    accepted: thread::JoinHandle<Result<NodeId, Failure>>,
}

fn raw(listener: Auth) -> Raw {
    let (d, mut l) = connection();
    let accepted = thread::spawn(move || {
        let result = accept(&listener, &mut l);
        drop(l);
        result
    });
    let socket = d.into_inner().stream;
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    Raw {
        out: socket.try_clone().unwrap(),
        lines: BufReader::new(socket),
        accepted,
    }
}

impl Raw {
    fn send(&mut self, line: &str) {
        self.out.write_all(line.as_bytes()).unwrap();
        self.out.write_all(b"\n").unwrap();
    }

    fn recv(&mut self) -> serde_json::Value {
        let mut line = String::new();
        self.lines.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
    }

    /// Nothing more comes: the listener closed without a word.
    fn expect_closed(&mut self) {
        let mut rest = String::new();
        assert_eq!(self.lines.read_line(&mut rest).unwrap_or(0), 0, "{rest:?}");
    }

    fn hello(&mut self, nonce: &str) -> serde_json::Value {
        self.send(&format!(
            r#"{{"hello":{{"version":1,"cluster":"test","from":1,"to":2,"nonce":"{nonce}"}}}}"#
        ));
        self.recv()["challenge"].clone()
    }
}

const NONCE_A: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

fn proof_of(role: &str, nonce_a: &str, nonce_b: &str) -> String {
    let t = Transcript {
        cluster: "test",
        dialer: 1,
        listener: 2,
        dialer_nonce: nonce_a,
        listener_nonce: nonce_b,
    };
    t.prove(&Secret::new(SECRET).unwrap(), role)
}

#[test]
fn the_wire_format_is_the_documented_one() {
    let mut raw = raw(auth(2, Some(SECRET)));
    let challenge = raw.hello(NONCE_A);
    let nonce_b = challenge["nonce"].as_str().unwrap().to_string();
    assert_eq!(nonce_b.len(), 64);
    assert!(nonce_b
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    // The listener's proof is the documented HMAC, spelled out here by hand.
    let message = format!("raftkv-peer-v1\nlistener\ntest\n1\n2\n{NONCE_A}\n{nonce_b}");
    let expected = crate::hex::encode(&Secret::new(SECRET).unwrap().prove(message.as_bytes()));
    assert_eq!(challenge["proof"], expected.as_str());
    raw.send(&format!(
        r#"{{"proof":"{}"}}"#,
        proof_of(DIALER, NONCE_A, &nonce_b)
    ));
    assert_eq!(raw.recv(), serde_json::json!({"welcome": {}}));
    assert_eq!(raw.accepted.join().unwrap(), Ok(1));

    // Without a secret: null proofs.
    let mut raw = self::raw(auth(2, None));
    assert_eq!(raw.hello(NONCE_A)["proof"], serde_json::Value::Null);
    raw.send(r#"{"proof":null}"#);
    assert_eq!(raw.recv(), serde_json::json!({"welcome": {}}));
    assert_eq!(raw.accepted.join().unwrap(), Ok(1));
}

#[test]
fn a_proof_replayed_from_another_handshake_or_reflected_is_refused() {
    let mut raw = raw(auth(2, Some(SECRET)));
    let challenge = raw.hello(NONCE_A);
    // A dialer's proof recorded from a handshake with another listener nonce.
    let other_nonce = "ff".repeat(32);
    raw.send(&format!(
        r#"{{"proof":"{}"}}"#,
        proof_of(DIALER, NONCE_A, &other_nonce)
    ));
    assert!(raw.recv()["refused"]
        .as_str()
        .unwrap()
        .contains("could not prove"));
    raw.expect_closed();
    refused(raw.accepted.join().unwrap(), "could not prove");

    // The listener's own proof sent back.
    let mut raw = self::raw(auth(2, Some(SECRET)));
    let challenge2 = raw.hello(NONCE_A);
    assert_ne!(challenge2["nonce"], challenge["nonce"], "fresh nonces");
    raw.send(&format!(r#"{{"proof":{}}}"#, challenge2["proof"]));
    assert!(raw.recv()["refused"].is_string());
    refused(raw.accepted.join().unwrap(), "could not prove");

    // No proof, or not hex.
    for (proof, words) in [
        ("null", "proves no cluster secret"),
        (r#""zz""#, "not 64 hex digits"),
    ] {
        let mut raw = self::raw(auth(2, Some(SECRET)));
        raw.hello(NONCE_A);
        raw.send(&format!(r#"{{"proof":{proof}}}"#));
        assert!(raw.recv()["refused"].is_string());
        refused(raw.accepted.join().unwrap(), words);
    }
}

#[test]
fn a_bad_hello_is_refused_with_a_reason() {
    for (hello, words) in [
        (
            format!(
                r#"{{"hello":{{"version":2,"cluster":"test","from":1,"to":2,"nonce":"{NONCE_A}"}}}}"#
            ),
            "version 2 is not supported",
        ),
        (
            r#"{"hello":{"version":1,"cluster":"test","from":1,"to":2,"nonce":"abc"}}"#.to_string(),
            "nonce is not 64 hex digits",
        ),
    ] {
        let mut raw = raw(auth(2, Some(SECRET)));
        raw.send(&hello);
        assert!(raw.recv()["refused"].as_str().unwrap().contains(words));
        raw.expect_closed();
        refused(raw.accepted.join().unwrap(), words);
    }
}

#[test]
fn garbage_gets_no_answer() {
    for line in [
        "hello there".to_string(),
        r#"{"x":1}"#.into(),
        r#"{"proof":null}"#.into(),
        format!(
            r#"{{"hello":{{"version":1,"cluster":"test","from":1,"to":2,"nonce":"{NONCE_A}"}},"extra":1}}"#
        ),
        r#"{"hello":{"version":-1}}"#.into(),
        r#"{"from":1,"to":2,"term":5,"body":{"vote":{"last_index":1,"last_term":1}}}"#.into(),
        "\u{0}\u{1}garbage".into(),
        "{".repeat(5000),
    ] {
        let mut raw = raw(auth(2, Some(SECRET)));
        raw.send(&line);
        raw.expect_closed();
        let result = raw.accepted.join().unwrap();
        assert!(
            matches!(result, Err(Failure::Garbage(_))),
            "{line:.40}: {result:?}"
        );
    }
    // A listener that answers garbage is refused by the dialer.
    let (mut d, l) = connection();
    thread::spawn(move || {
        let mut out = l.into_inner().stream;
        out.write_all(b"{\"snapshot_ack\":{}}\n").unwrap();
        thread::sleep(Duration::from_secs(1));
    });
    let dialed = dial(&auth(1, Some(SECRET)), 2, &mut d);
    assert!(matches!(dialed, Err(Failure::Garbage(_))), "{dialed:?}");
}

#[test]
fn a_silent_or_trickling_peer_times_out_on_both_sides() {
    let started = Instant::now();
    // A dialer that sends half a hello, a byte at a time, each within the deadline.
    let (d, mut l) = connection();
    let trickling = thread::spawn(move || {
        let mut out = d.into_inner().stream;
        for b in br#"{"hello":{"version":1,"#.iter() {
            if out.write_all(&[*b]).is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(300));
        }
    });
    let listening = thread::spawn(move || accept(&auth(2, Some(SECRET)), &mut l));
    // A listener that accepts and says nothing.
    let (mut d, _silent) = connection();
    let dialed = dial(&auth(1, Some(SECRET)), 2, &mut d);
    let accepted = listening.join().unwrap();
    for result in [dialed.map(|()| 0), accepted] {
        match result {
            Err(Failure::Broken(why)) => assert!(why.contains("longer than 2 s"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
    let took = started.elapsed();
    assert!(
        took >= DEADLINE && took < DEADLINE + Duration::from_secs(2),
        "{took:?}"
    );
    drop(trickling);
}
