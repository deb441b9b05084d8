//! The frame codec on its own, then the two sides of a transfer against each other
//! over real loopback TCP, authenticated by the peer handshake as on a node: a
//! leader's replicator reading from a snapshot store in one temporary directory, a
//! follower's peer reader writing into another, and between them a proxy that can
//! cut the connection, damage a chunk or hold the follower's answers back.

use std::{
    io::{BufRead, BufReader, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use crossbeam_channel::{bounded, Receiver, Sender};
use tempfile::TempDir;

use super::*;
use crate::{
    codec::{read_line, Line},
    kv::{Command, Store, WriteOp},
    raft::Body,
    replica::Snapshot,
    server::{
        budget::Budget,
        events::EventBus,
        peer_auth::{self, Auth, PeerStream},
        peer_port::{read_peer, Inbound, MAX_PEER_LINE},
        replicator::{self, Link, Tuning},
        shared::Input,
    },
    storage::{SnapshotStore, Storage},
};

// ---------------------------------------------------------------- base64

#[test]
fn base64_matches_the_rfc_4648_vectors() {
    let vectors: [(&[u8], &str); 7] = [
        (b"", ""),
        (b"f", "Zg=="),
        (b"fo", "Zm8="),
        (b"foo", "Zm9v"),
        (b"foob", "Zm9vYg=="),
        (b"fooba", "Zm9vYmE="),
        (b"foobar", "Zm9vYmFy"),
    ];
    for (bytes, text) in vectors {
        assert_eq!(base64::encode(bytes), text);
        assert_eq!(base64::decode(text.as_bytes(), 100).unwrap(), bytes);
    }
}

#[test]
fn base64_round_trips_every_byte_and_length() {
    let all: Vec<u8> = (0..=255).collect();
    for len in 0..all.len() {
        let text = base64::encode(&all[..len]);
        assert_eq!(text.len(), len.div_ceil(3) * 4);
        assert_eq!(base64::decode(text.as_bytes(), len).unwrap(), &all[..len]);
    }
}

#[test]
fn base64_refuses_malformed_or_oversized_text() {
    for bad in [
        "Zg=",      // not a multiple of 4
        "Zg",       // missing padding
        "Z===",     // too much padding
        "====",     // nothing but padding
        "Zg==Zg==", // padding in the middle
        "Zh==",     // stray bits under the padding
        "Zm9=",     // stray bits under the padding
        "Zm9v\n",   // whitespace
        "Zm-v",     // URL-safe alphabet
        "Zm9vYé==", // not ASCII
    ] {
        assert!(base64::decode(bad.as_bytes(), 100).is_err(), "{bad:?}");
    }
    assert!(base64::decode(b"Zm9vYmFy", 6).is_ok());
    let e = base64::decode(b"Zm9vYmFy", 5).unwrap_err();
    assert!(e.contains("at most 5"), "{e}");
}

// ---------------------------------------------------------------- frames

const META: SnapshotMeta = SnapshotMeta { index: 42, term: 3 };

fn offer(size: u64) -> Frame {
    Frame::Offer(Offer {
        from: 1,
        to: 2,
        meta: META,
        term: 5,
        size,
    })
}

fn line_of(frame: &Frame) -> Vec<u8> {
    let mut out = Vec::new();
    write_frame(&mut out, frame).unwrap();
    assert_eq!(out.pop(), Some(b'\n'));
    out
}

fn parse_frame(line: &[u8]) -> Frame {
    match parse_peer_line(line).unwrap() {
        PeerLine::Snapshot(frame) => frame,
        other => panic!("parsed as {other:?}"),
    }
}

#[test]
fn frames_have_the_documented_shape_and_round_trip() {
    let line = line_of(&offer(9000));
    assert_eq!(
        String::from_utf8(line.clone()).unwrap(),
        r#"{"snapshot":{"offer":{"from":1,"to":2,"meta":{"index":42,"term":3},"term":5,"size":9000}}}"#
    );
    assert_eq!(parse_frame(&line), offer(9000));

    let chunk = Frame::Chunk(Chunk {
        meta: META,
        term: 5,
        offset: 4096,
        data: b"foobar".to_vec(),
    });
    let line = line_of(&chunk);
    assert_eq!(
        String::from_utf8(line.clone()).unwrap(),
        r#"{"snapshot":{"chunk":{"meta":{"index":42,"term":3},"term":5,"offset":4096,"data":"Zm9vYmFy"}}}"#
    );
    assert_eq!(parse_frame(&line), chunk);
    // Whitespace before the key does not hide a frame.
    assert_eq!(
        parse_frame(&[b" { ".as_slice(), &line[1..]].concat()),
        chunk
    );

    for (status, json) in [
        (AckStatus::Stored(4096), r#"{"stored":4096}"#),
        (AckStatus::Done, r#""done""#),
        (AckStatus::Failed("bad".into()), r#"{"failed":"bad"}"#),
    ] {
        let ack = Ack {
            meta: META,
            term: 5,
            status,
        };
        let mut out = Vec::new();
        write_ack(&mut out, &ack).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            format!(
                r#"{{"snapshot_ack":{{"meta":{{"index":42,"term":3}},"term":5,"status":{json}}}}}"#
            ) + "\n"
        );
        assert_eq!(parse_ack_line(text.trim_end().as_bytes()).unwrap(), ack);
    }
}

#[test]
fn raft_messages_still_parse_as_before() {
    let message = Message {
        from: 1,
        to: 2,
        term: 5,
        body: Body::InstallSnapshot { meta: META },
    };
    let line = serde_json::to_vec(&message).unwrap();
    match parse_peer_line(&line).unwrap() {
        PeerLine::Raft(m) => assert_eq!(m, message),
        other => panic!("parsed as {other:?}"),
    }
    assert!(matches!(parse_peer_line(PING), Ok(PeerLine::Ping)));
    assert!(matches!(
        parse_peer_line(br#" { "ping" : { } }"#),
        Ok(PeerLine::Ping)
    ));
    for bad in [
        &br#"{"ping":{"x":1}}"#[..],
        br#"{"ping":{},"x":1}"#,
        br#"{"ping":null}"#,
    ] {
        assert!(
            parse_peer_line(bad).is_err(),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn bad_frames_are_errors_not_panics() {
    let chunk_line = |offset: u64, data: &str| {
        format!(
            r#"{{"snapshot":{{"chunk":{{"meta":{{"index":1,"term":1}},"term":1,"offset":{offset},"data":"{data}"}}}}}}"#
        )
    };
    let too_much = base64::encode(&vec![0; MAX_CHUNK + 1]);
    let lines = [
        String::new(),
        "{".into(),
        r#"{"snapshot":"#.into(),
        r#"{"snapshot":{}}"#.into(),
        r#"{"snapshot":{"offer":{"from":1}}}"#.into(),
        r#"{"snapshot":{"nonsense":{}}}"#.into(),
        r#"{"snapshot":{"offer":{"from":1,"to":2,"meta":{"index":1,"term":1},"term":1,"size":-1}}}"#
            .into(),
        format!(
            r#"{{"snapshot":{{"offer":{{"from":1,"to":2,"meta":{{"index":1,"term":1}},"term":1,"size":{}}}}}}}"#,
            MAX_SNAPSHOT + 1
        ),
        chunk_line(0, "Zg="),
        chunk_line(0, &too_much),
        chunk_line(u64::MAX, "Zm9v"),
        chunk_line(MAX_SNAPSHOT - 2, "Zm9v"),
        r#"{"snapshot":{"chunk":{"meta":{"index":1,"term":1},"term":1,"offset":0,"data":"Zg=="}},"x":1}"#
            .into(),
        r#"{"from":"one"}"#.into(),
    ];
    for line in &lines {
        assert!(parse_peer_line(line.as_bytes()).is_err(), "{line}");
    }
    assert!(parse_peer_line(chunk_line(MAX_SNAPSHOT - 3, "Zm9v").as_bytes()).is_ok());
    for line in [
        "",
        "{}",
        r#"{"snapshot_ack":{"meta":{"index":1,"term":1},"term":1,"status":"maybe"}}"#,
    ] {
        assert!(parse_ack_line(line.as_bytes()).is_err(), "{line}");
    }
}

#[test]
fn failure_reasons_are_cut_on_a_character_boundary() {
    let ack = Ack::failed(META, 5, &"é".repeat(MAX_REASON));
    let AckStatus::Failed(why) = ack.status else {
        panic!("not a failure");
    };
    assert!(why.len() <= MAX_REASON && why.len() >= MAX_REASON - 1);
    assert!(why.chars().all(|c| c == 'é'));
}

// ---------------------------------------------------------------- over TCP

const WAIT: Duration = Duration::from_secs(20);
const LEADER: NodeId = 1;
const FOLLOWER: NodeId = 2;
const TERM: Term = 5;

/// What the proxy forwarded from leader to follower, per connection (counted from 0).
#[derive(Clone, Debug)]
enum Seen {
    Offer {
        conn: usize,
    },
    Chunk {
        conn: usize,
        offset: u64,
        len: usize,
    },
    Raft,
}

/// How the proxy misbehaves.
#[derive(Default)]
struct Rules {
    /// Cut the first connection once it forwarded this many chunks.
    cut_after_chunks: Mutex<Option<usize>>,
    /// Damage one byte of the chunk with this number (counting all chunks once).
    corrupt_chunk: Mutex<Option<usize>>,
    /// Hold the follower's answers back once this many chunks were forwarded.
    hold_after_chunks: Mutex<Option<usize>>,
    /// The follower's answers wait while this is set.
    hold_acks: AtomicBool,
}

struct Proxy {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    rules: Arc<Rules>,
    connections: Arc<AtomicUsize>,
}

impl Proxy {
    fn start(to: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let proxy = Proxy {
            addr: listener.local_addr().unwrap(),
            seen: Arc::default(),
            rules: Arc::default(),
            connections: Arc::default(),
        };
        let (seen, rules, connections) = (
            Arc::clone(&proxy.seen),
            Arc::clone(&proxy.rules),
            Arc::clone(&proxy.connections),
        );
        thread::spawn(move || {
            let chunks = Arc::new(AtomicUsize::new(0));
            for (conn, leader) in listener.incoming().enumerate() {
                let Ok(leader) = leader else { return };
                let follower = TcpStream::connect(to).unwrap();
                connections.store(conn + 1, Ordering::SeqCst);
                let (l2, f2) = (leader.try_clone().unwrap(), follower.try_clone().unwrap());
                let rules_up = Arc::clone(&rules);
                thread::spawn(move || forward_acks(f2, l2, &rules_up));
                let (seen, rules, chunks) =
                    (Arc::clone(&seen), Arc::clone(&rules), Arc::clone(&chunks));
                thread::spawn(move || {
                    forward_lines(conn, leader, follower, &seen, &rules, &chunks)
                });
            }
        });
        proxy
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn chunks(&self, on: usize) -> Vec<(u64, usize)> {
        self.seen()
            .into_iter()
            .filter_map(|s| match s {
                Seen::Chunk { conn, offset, len } if conn == on => Some((offset, len)),
                _ => None,
            })
            .collect()
    }

    fn offers(&self) -> Vec<usize> {
        self.seen()
            .into_iter()
            .filter_map(|s| match s {
                Seen::Offer { conn } => Some(conn),
                _ => None,
            })
            .collect()
    }

    fn wait_for_connections(&self, n: usize) {
        wait_until(
            || self.connections.load(Ordering::SeqCst) >= n,
            "a new connection",
        );
    }
}

/// Leader to follower, line by line, applying the rules to chunks.
fn forward_lines(
    conn: usize,
    leader: TcpStream,
    mut follower: TcpStream,
    seen: &Mutex<Vec<Seen>>,
    rules: &Rules,
    chunks: &AtomicUsize,
) {
    let mut reader = BufReader::new(leader);
    let mut buf = Vec::new();
    let mut forwarded = 0;
    // The handshake's hello and proof go through as they are.
    let mut handshake = 2;
    while let Ok(Line::Complete) = read_line(&mut reader, &mut buf, MAX_PEER_LINE) {
        let line = if handshake > 0 {
            handshake -= 1;
            buf.clone()
        } else {
            match parse_peer_line(&buf).unwrap() {
                PeerLine::Raft(_) => {
                    seen.lock().unwrap().push(Seen::Raft);
                    buf.clone()
                }
                PeerLine::Ping => buf.clone(),
                PeerLine::Snapshot(Frame::Offer(_)) => {
                    seen.lock().unwrap().push(Seen::Offer { conn });
                    buf.clone()
                }
                PeerLine::Snapshot(Frame::Chunk(mut chunk)) => {
                    let number = chunks.fetch_add(1, Ordering::SeqCst);
                    seen.lock().unwrap().push(Seen::Chunk {
                        conn,
                        offset: chunk.offset,
                        len: chunk.data.len(),
                    });
                    let mut corrupt = rules.corrupt_chunk.lock().unwrap();
                    if *corrupt == Some(number) {
                        *corrupt = None;
                        chunk.data[7] ^= 0x20;
                    }
                    line_of(&Frame::Chunk(chunk))
                }
            }
        };
        if follower
            .write_all(&line)
            .and_then(|()| follower.write_all(b"\n"))
            .is_err()
        {
            break;
        }
        if matches!(seen.lock().unwrap().last(), Some(Seen::Chunk { .. })) {
            forwarded += 1;
            let mut cut = rules.cut_after_chunks.lock().unwrap();
            if *cut == Some(forwarded) {
                *cut = None;
                break;
            }
            let mut hold = rules.hold_after_chunks.lock().unwrap();
            if *hold == Some(forwarded) {
                *hold = None;
                rules.hold_acks.store(true, Ordering::SeqCst);
            }
        }
    }
    let _ = reader.get_ref().shutdown(Shutdown::Both);
    let _ = follower.shutdown(Shutdown::Both);
}

/// Follower to leader, as bytes, waiting while answers are held.
fn forward_acks(follower: TcpStream, mut leader: TcpStream, rules: &Rules) {
    let mut reader = BufReader::new(follower.try_clone().unwrap());
    loop {
        let n = match reader.fill_buf() {
            Ok([]) | Err(_) => break,
            Ok(bytes) => {
                while rules.hold_acks.load(Ordering::SeqCst) {
                    thread::sleep(Duration::from_millis(2));
                }
                if leader.write_all(bytes).is_err() {
                    break;
                }
                bytes.len()
            }
        };
        reader.consume(n);
    }
    let _ = leader.shutdown(Shutdown::Both);
    let _ = follower.shutdown(Shutdown::Both);
}

/// A leader's replicator and a follower's peer port, with a proxy between them.
struct Pair {
    _dirs: (TempDir, TempDir),
    follower_store: SnapshotStore,
    /// The replicator's queue.
    queue: Sender<Message>,
    /// What the replicator reports to the leader's state thread.
    leader_inbox: Receiver<Input>,
    /// What the follower's peer port hands to its state thread.
    follower_inbox: Receiver<Input>,
    proxy: Proxy,
    snapshot: Snapshot,
    /// Size of the snapshot file.
    size: u64,
}

fn tuning() -> Tuning {
    Tuning {
        chunk: 4096,
        window: 16384,
        ack_timeout: Duration::from_secs(10),
        finish_bytes_per_sec: 1 << 20,
    }
}

fn sample_snapshot(keys: usize) -> Snapshot {
    let mut store = Store::new();
    for i in 0..keys {
        store.apply(&Command {
            key: format!("key{i:05}"),
            op: WriteOp::Put {
                value: format!("{i:0100}"),
            },
            session: None,
            stamp: Default::default(),
        });
    }
    Snapshot {
        meta: SnapshotMeta {
            index: 1000,
            term: 3,
        },
        members: vec![LEADER, FOLLOWER, 3],
        store,
    }
}

fn pair(tuning: Tuning) -> Pair {
    pair_of(tuning, 1000)
}

/// A pair whose leader holds a snapshot of `keys` keys (about 120 bytes each).
fn pair_of(tuning: Tuning, keys: usize) -> Pair {
    let (leader_dir, follower_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let leader_store = Storage::open(leader_dir.path()).unwrap().0.snapshot_store();
    let follower_store = Storage::open(follower_dir.path())
        .unwrap()
        .0
        .snapshot_store();
    let snapshot = sample_snapshot(keys);
    leader_store
        .write(snapshot.meta, &snapshot.encode())
        .unwrap();
    let size = leader_store.open_source(snapshot.meta).unwrap().size();

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let follower_addr = listener.local_addr().unwrap();
    let (follower_tx, follower_inbox) = bounded(1024);
    let inbound = Arc::new(Inbound {
        auth: Arc::new(Auth::test(FOLLOWER)),
        inbox: follower_tx,
        budget: Arc::new(Budget::new(usize::MAX)),
        store: follower_store.clone(),
        gate: Default::default(),
        events: Arc::new(EventBus::new(FOLLOWER, Vec::new())),
    });
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let inbound = Arc::clone(&inbound);
            thread::spawn(move || read_peer(stream, "the test leader", &inbound));
        }
    });
    let proxy = Proxy::start(follower_addr);
    let (queue, queue_rx) = bounded(replicator::QUEUE);
    let (leader_tx, leader_inbox) = bounded(1024);
    let link = Link {
        peer: FOLLOWER,
        auth: Arc::new(Auth::test(LEADER)),
        addr: proxy.addr.to_string(),
        inbox: leader_tx,
        store: leader_store,
        tuning,
        queued_bytes: Arc::default(),
        keepalive: Default::default(),
        events: Arc::new(EventBus::new(LEADER, Vec::new())),
    };
    thread::spawn(move || replicator::run(link, queue_rx));
    proxy.wait_for_connections(1);
    Pair {
        _dirs: (leader_dir, follower_dir),
        follower_store,
        queue,
        leader_inbox,
        follower_inbox,
        proxy,
        snapshot,
        size,
    }
}

fn install_snapshot(meta: SnapshotMeta) -> Message {
    Message {
        from: LEADER,
        to: FOLLOWER,
        term: TERM,
        body: Body::InstallSnapshot { meta },
    }
}

fn heartbeat(commit: u64) -> Message {
    Message {
        from: LEADER,
        to: FOLLOWER,
        term: TERM,
        body: Body::Append {
            prev_index: 1000,
            prev_term: 3,
            entries: Vec::new(),
            commit,
            read_round: 0,
        },
    }
}

fn describe(input: &Input) -> String {
    match input {
        Input::Peer(m) => format!("Peer({m})"),
        Input::PeerSnapshot { message, .. } => format!("PeerSnapshot({message})"),
        Input::SnapshotSent(peer) => format!("SnapshotSent({peer})"),
        _ => "another input".into(),
    }
}

fn next(inbox: &Receiver<Input>) -> Input {
    inbox
        .recv_timeout(WAIT)
        .expect("an input within the time allowed")
}

fn wait_until(mut done: impl FnMut() -> bool, what: &str) {
    let until = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < until, "waited too long for {what}");
        thread::sleep(Duration::from_millis(2));
    }
}

impl Pair {
    /// Waits for the follower's core to be handed the snapshot, and checks it.
    fn expect_installed(&self) {
        let input = next(&self.follower_inbox);
        let Input::PeerSnapshot { message, snapshot } = input else {
            panic!("expected the snapshot, got {}", describe(&input));
        };
        assert_eq!(message, install_snapshot(self.snapshot.meta));
        assert_eq!(snapshot, self.snapshot);
        assert_eq!(
            self.follower_store.list().unwrap(),
            vec![self.snapshot.meta]
        );
    }

    /// Waits for the replicator to report the transfer ended.
    fn expect_sent(&self) {
        let input = next(&self.leader_inbox);
        assert!(
            matches!(input, Input::SnapshotSent(FOLLOWER)),
            "expected SnapshotSent, got {}",
            describe(&input)
        );
    }

    /// Neither side's state thread has anything waiting.
    fn expect_quiet(&self) {
        thread::sleep(Duration::from_millis(50));
        if let Ok(input) = self.follower_inbox.try_recv() {
            panic!("the follower got {}", describe(&input));
        }
        if let Ok(input) = self.leader_inbox.try_recv() {
            panic!("the leader got {}", describe(&input));
        }
    }

    fn partial_files(&self) -> Vec<String> {
        std::fs::read_dir(self.follower_store.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".partial"))
            .collect()
    }
}

/// The chunks in `chunks` cover `from..size` in order, without gaps.
fn assert_contiguous(chunks: &[(u64, usize)], from: u64, size: u64) {
    let mut at = from;
    for &(offset, len) in chunks {
        assert_eq!(offset, at, "chunks {chunks:?}");
        at += len as u64;
    }
    assert_eq!(at, size, "chunks {chunks:?}");
}

#[test]
fn a_snapshot_streams_under_flow_control_and_heartbeats_pass_it() {
    let p = pair(tuning());
    assert!(
        p.size > 100_000,
        "{} bytes: too small to need many chunks",
        p.size
    );
    *p.proxy.rules.hold_after_chunks.lock().unwrap() = Some(2);
    p.queue.send(install_snapshot(p.snapshot.meta)).unwrap();

    // The follower's answers are held after two chunks: the leader sends what its
    // window allows and then waits.
    wait_until(
        || p.proxy.rules.hold_acks.load(Ordering::SeqCst),
        "the hold",
    );
    thread::sleep(Duration::from_millis(200));
    let sent = p.proxy.chunks(0);
    let window = tuning().window + 2 * tuning().chunk as u64;
    let end = sent.last().map_or(0, |&(o, l)| o + l as u64);
    assert!(
        end <= window,
        "{end} bytes sent with at most 8192 acknowledged"
    );

    // A heartbeat queued now goes out at once, past the stalled snapshot.
    p.queue.send(heartbeat(7)).unwrap();
    let input = next(&p.follower_inbox);
    assert!(
        matches!(&input, Input::Peer(m) if *m == heartbeat(7)),
        "expected the heartbeat, got {}",
        describe(&input)
    );
    p.expect_quiet();

    // Released, the transfer completes: the follower's core gets the snapshot,
    // then the leader's hears the transfer ended.
    p.proxy.rules.hold_acks.store(false, Ordering::SeqCst);
    p.expect_installed();
    p.expect_sent();
    assert_contiguous(&p.proxy.chunks(0), 0, p.size);
    assert!(p.partial_files().is_empty());

    // The same InstallSnapshot again (say the probe after it was lost) is a new
    // transfer: the follower holds no partial file now, so it starts from 0.
    p.queue.send(install_snapshot(p.snapshot.meta)).unwrap();
    p.expect_installed();
    p.expect_sent();
    assert_eq!(p.proxy.offers(), vec![0, 0]);
}

#[test]
fn the_default_tuning_moves_a_multi_megabyte_snapshot() {
    let p = pair_of(Tuning::default(), 40_000);
    assert!(p.size > 4 << 20, "{} bytes", p.size);
    p.queue.send(install_snapshot(p.snapshot.meta)).unwrap();
    p.queue.send(heartbeat(1)).unwrap();
    let input = next(&p.follower_inbox);
    assert!(
        matches!(&input, Input::Peer(m) if *m == heartbeat(1)),
        "{}",
        describe(&input)
    );
    p.expect_installed();
    p.expect_sent();
    let chunks = p.proxy.chunks(0);
    assert!(chunks
        .iter()
        .all(|&(_, len)| len <= Tuning::default().chunk));
    assert_contiguous(&chunks, 0, p.size);
}

#[test]
fn a_dropped_connection_resumes_from_what_the_follower_stored() {
    let p = pair(tuning());
    *p.proxy.rules.cut_after_chunks.lock().unwrap() = Some(10);
    p.queue.send(install_snapshot(p.snapshot.meta)).unwrap();

    // The connection is cut after ten chunks: the transfer ends, unfinished.
    p.expect_sent();
    p.expect_quiet();
    let cut_at = 10 * tuning().chunk as u64;
    assert_contiguous(&p.proxy.chunks(0), 0, cut_at);
    assert_eq!(p.partial_files().len(), 1);

    // The core tries again once the replicator has reconnected: the follower
    // answers the new offer with what it stored, and the leader starts there.
    p.proxy.wait_for_connections(2);
    p.queue.send(install_snapshot(p.snapshot.meta)).unwrap();
    p.expect_installed();
    p.expect_sent();
    let resumed = p.proxy.chunks(1);
    let from = resumed[0].0;
    assert!(
        from > 0 && from <= cut_at,
        "resumed at byte {from}, not after the {cut_at} bytes sent before the cut"
    );
    assert_contiguous(&resumed, from, p.size);
    assert_eq!(p.proxy.offers(), vec![0, 1]);
}

#[test]
fn a_corrupt_chunk_fails_the_final_check_cleanly_and_the_retry_starts_over() {
    let p = pair(tuning());
    *p.proxy.rules.corrupt_chunk.lock().unwrap() = Some(3);
    p.queue.send(install_snapshot(p.snapshot.meta)).unwrap();

    // Every byte arrives, the checksum refuses the file: the follower deletes it,
    // answers `failed`, and its core never hears of the snapshot.
    p.expect_sent();
    p.expect_quiet();
    assert!(p.follower_store.list().unwrap().is_empty());
    assert!(p.partial_files().is_empty());
    assert_contiguous(&p.proxy.chunks(0), 0, p.size);

    // The retry, on the same connection, starts from byte 0 and succeeds.
    p.queue.send(install_snapshot(p.snapshot.meta)).unwrap();
    p.expect_installed();
    p.expect_sent();
    let all = p.proxy.chunks(0);
    let second = all.len() / 2;
    assert_contiguous(&all[second..], 0, p.size);
    assert_eq!(p.proxy.offers(), vec![0, 0]);
}

#[test]
fn a_follower_that_stops_answering_times_out_and_the_retry_resumes() {
    let p = pair(Tuning {
        ack_timeout: Duration::from_millis(300),
        ..tuning()
    });
    *p.proxy.rules.hold_after_chunks.lock().unwrap() = Some(3);
    p.queue.send(install_snapshot(p.snapshot.meta)).unwrap();
    let started = Instant::now();
    p.expect_sent();
    assert!(started.elapsed() >= Duration::from_millis(300));
    // The stalled connection is dropped and a new one made.
    p.proxy.wait_for_connections(2);
    p.proxy.rules.hold_acks.store(false, Ordering::SeqCst);
    p.queue.send(install_snapshot(p.snapshot.meta)).unwrap();
    p.expect_installed();
    p.expect_sent();
    let resumed = p.proxy.chunks(1);
    assert!(resumed[0].0 > 0, "resumed at {}", resumed[0].0);
    assert_contiguous(&resumed, resumed[0].0, p.size);
}

#[test]
fn a_missing_snapshot_ends_the_transfer_at_once() {
    let p = pair(tuning());
    p.queue
        .send(install_snapshot(SnapshotMeta { index: 7, term: 1 }))
        .unwrap();
    p.expect_sent();
    p.queue.send(heartbeat(1)).unwrap();
    let input = next(&p.follower_inbox);
    assert!(matches!(input, Input::Peer(_)), "{}", describe(&input));
    assert!(p.proxy.offers().is_empty());
}

#[test]
fn a_newer_term_stops_the_transfer() {
    let p = pair(tuning());
    *p.proxy.rules.hold_after_chunks.lock().unwrap() = Some(1);
    p.queue.send(install_snapshot(p.snapshot.meta)).unwrap();
    wait_until(
        || p.proxy.rules.hold_acks.load(Ordering::SeqCst),
        "the hold",
    );
    p.expect_quiet();
    // This node campaigns in a newer term: it no longer leads the transfer's term.
    let vote = Message {
        from: LEADER,
        to: FOLLOWER,
        term: TERM + 1,
        body: Body::Vote {
            last_index: 1000,
            last_term: 3,
        },
    };
    p.queue.send(vote.clone()).unwrap();
    p.expect_sent();
    p.proxy.rules.hold_acks.store(false, Ordering::SeqCst);
    let input = next(&p.follower_inbox);
    assert!(
        matches!(&input, Input::Peer(m) if *m == vote),
        "{}",
        describe(&input)
    );
}

#[test]
fn an_install_snapshot_for_an_unreachable_peer_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let store = Storage::open(dir.path()).unwrap().0.snapshot_store();
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (queue, queue_rx) = bounded(replicator::QUEUE);
    let (inbox, reports) = bounded(16);
    let link = Link {
        peer: FOLLOWER,
        auth: Arc::new(Auth::test(LEADER)),
        addr: closed.to_string(),
        inbox,
        store,
        tuning: tuning(),
        queued_bytes: Arc::default(),
        keepalive: Default::default(),
        events: Arc::new(EventBus::new(LEADER, Vec::new())),
    };
    thread::spawn(move || replicator::run(link, queue_rx));
    queue.send(install_snapshot(META)).unwrap();
    let input = next(&reports);
    assert!(
        matches!(input, Input::SnapshotSent(FOLLOWER)),
        "{}",
        describe(&input)
    );
}

/// The follower's side driven by hand, to check what it answers to frames a leader
/// would not send.
#[test]
fn the_receiver_answers_misbehaving_frames_without_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let store = Storage::open(dir.path()).unwrap().0.snapshot_store();
    let (inbox, follower_inbox) = bounded(16);
    let inbound = Arc::new(Inbound {
        auth: Arc::new(Auth::test(FOLLOWER)),
        inbox,
        budget: Arc::new(Budget::new(usize::MAX)),
        store: store.clone(),
        gate: Default::default(),
        events: Arc::new(EventBus::new(FOLLOWER, Vec::new())),
    });
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let inbound = Arc::clone(&inbound);
            thread::spawn(move || read_peer(stream.unwrap(), "test", &inbound));
        }
    });
    let snapshot = sample_snapshot(50);
    let file = {
        let source_dir = tempfile::tempdir().unwrap();
        let source = Storage::open(source_dir.path()).unwrap().0.snapshot_store();
        source.write(snapshot.meta, &snapshot.encode()).unwrap();
        let mut file = source.open_source(snapshot.meta).unwrap();
        file.read_chunk(0, file.size() as usize).unwrap()
    };
    let size = file.len() as u64;
    let meta = snapshot.meta;
    let chunk = |offset: u64, data: &[u8]| {
        Frame::Chunk(Chunk {
            meta,
            term: TERM,
            offset,
            data: data.to_vec(),
        })
    };
    let offer = Frame::Offer(Offer {
        from: LEADER,
        to: FOLLOWER,
        meta,
        term: TERM,
        size,
    });
    // A leader's connection: the handshake, then frames out and acknowledgements in.
    let connect = || {
        let stream = TcpStream::connect(addr).unwrap();
        let mut conn = BufReader::new(PeerStream::new(stream.try_clone().unwrap()));
        peer_auth::dial(&Auth::test(LEADER), FOLLOWER, &mut conn).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        (stream, conn)
    };
    let send = |out: &mut TcpStream, frame: &Frame| write_frame(out, frame).unwrap();
    let ack = |acks: &mut BufReader<PeerStream>| {
        let mut line = String::new();
        acks.read_line(&mut line).unwrap();
        parse_ack_line(line.trim_end().as_bytes()).unwrap().status
    };

    let (mut out, mut acks) = connect();
    // A chunk before any offer is ignored; the offer is answered.
    send(&mut out, &chunk(0, &file[..100]));
    send(&mut out, &offer);
    assert_eq!(ack(&mut acks), AckStatus::Stored(0));
    send(&mut out, &chunk(0, &file[..100]));
    assert_eq!(ack(&mut acks), AckStatus::Stored(100));
    // Bytes sent twice are skipped; a gap is refused.
    send(&mut out, &chunk(50, &file[50..300]));
    assert_eq!(ack(&mut acks), AckStatus::Stored(300));
    send(&mut out, &chunk(400, &file[400..500]));
    assert!(matches!(ack(&mut acks), AckStatus::Failed(_)));
    // Chunks of the failed transfer are ignored until a new offer, which resumes.
    send(&mut out, &chunk(300, &file[300..400]));
    send(&mut out, &offer);
    assert_eq!(ack(&mut acks), AckStatus::Stored(300));
    // A chunk that runs past the offered size is refused.
    let mut long = file[300..].to_vec();
    long.push(0);
    send(&mut out, &chunk(300, &long));
    assert!(matches!(ack(&mut acks), AckStatus::Failed(_)));

    // A dropped connection: the next one resumes from the durable bytes.
    send(&mut out, &offer);
    assert_eq!(ack(&mut acks), AckStatus::Stored(300));
    send(&mut out, &chunk(300, &file[300..1000]));
    assert_eq!(ack(&mut acks), AckStatus::Stored(1000));
    drop((out, acks));
    let (mut out, mut acks) = connect();
    send(&mut out, &offer);
    assert_eq!(ack(&mut acks), AckStatus::Stored(1000));
    // Raft messages on the same connection still go straight to the inbox.
    out.write_all(&serde_json::to_vec(&heartbeat(3)).unwrap())
        .and_then(|()| out.write_all(b"\n"))
        .unwrap();
    let input = next(&follower_inbox);
    assert!(
        matches!(&input, Input::Peer(m) if *m == heartbeat(3)),
        "{}",
        describe(&input)
    );
    send(&mut out, &chunk(1000, &file[1000..]));
    assert_eq!(ack(&mut acks), AckStatus::Stored(size));
    assert_eq!(ack(&mut acks), AckStatus::Done);
    let input = next(&follower_inbox);
    let Input::PeerSnapshot {
        message,
        snapshot: got,
    } = input
    else {
        panic!("expected the snapshot, got {}", describe(&input));
    };
    assert_eq!(message, install_snapshot(meta));
    assert_eq!(got, snapshot);

    // An offer for a snapshot bigger than anything accepted closes the connection.
    let too_big = Frame::Offer(Offer {
        size: MAX_SNAPSHOT + 1,
        ..match offer {
            Frame::Offer(o) => o,
            Frame::Chunk(_) => unreachable!(),
        }
    });
    send(&mut out, &too_big);
    let mut rest = String::new();
    assert_eq!(acks.read_line(&mut rest).unwrap(), 0, "{rest}");
}
