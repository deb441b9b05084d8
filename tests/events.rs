//! Events against real nodes (docs/protocol.md §5, `/v1/events`; `raftkv node --trace`):
//! a put seen on every node's stream from its request to its reply, a killed leader
//! seen as elections on the others, a subscriber that stops reading costing the
//! writers nothing and being told what it lost, and the trace of one put, hop by hop.
//! Streams are read with a raw socket, the way a browser's `EventSource` reads them.

mod common;

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Write},
    net::TcpStream,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use common::{Cluster, Conn};
use serde_json::{json, Value};

/// A cluster of `n` nodes, each with an HTTP address, started with `args`, with an
/// agreed leader; returns it with the HTTP addresses and the leader.
fn http_cluster(n: u64, args: &[&str]) -> (Cluster, BTreeMap<u64, String>, u64) {
    let mut c = Cluster::new(n);
    let http = c.add_http();
    c.node_args = args.iter().map(|a| a.to_string()).collect();
    for id in c.ids() {
        c.spawn(id);
    }
    let (leader, _) = c.wait_for_leader(&c.ids(), Duration::from_secs(20));
    (c, http, leader)
}

/// Opens `GET /v1/events` on `addr` and reads the answer's head.
fn subscribe(addr: &str) -> BufReader<TcpStream> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .write_all(b"GET /v1/events HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\n\r\n")
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
        head.push_str(&line);
    }
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    for field in [
        "Content-Type: text/event-stream",
        "Cache-Control: no-cache",
        "Access-Control-Allow-Origin: *",
    ] {
        assert!(head.contains(field), "{field} missing in\n{head}");
    }
    reader
}

/// The next event of a stream (its data, which repeats the kind), skipping comments;
/// `None` when the stream ends.
fn next_event(reader: &mut impl BufRead) -> Option<Value> {
    let (mut kind, mut data): (Option<Value>, Option<String>) = (None, None);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end_matches('\n');
        if line.is_empty() {
            if let (Some(kind), Some(data)) = (kind.take(), data.take()) {
                let data: Value = serde_json::from_str(&data).unwrap();
                assert_eq!(data["kind"], kind, "the SSE event name is the kind");
                return Some(data);
            }
        } else if let Some(k) = line.strip_prefix("event: ") {
            kind = Some(Value::from(k));
        } else if let Some(d) = line.strip_prefix("data: ") {
            data = Some(d.to_string());
        } else {
            assert!(line.starts_with(':'), "not SSE: {line:?}");
        }
    }
}

/// A node's stream, read into a list by a thread of its own.
struct Watched {
    events: Arc<Mutex<Vec<Value>>>,
}

impl Watched {
    fn start(addr: &str) -> Watched {
        let mut reader = subscribe(addr);
        let events = Arc::new(Mutex::new(Vec::new()));
        let list = Arc::clone(&events);
        thread::spawn(move || {
            while let Some(e) = next_event(&mut reader) {
                list.lock().unwrap().push(e);
            }
        });
        Watched { events }
    }

    fn snapshot(&self) -> Vec<Value> {
        self.events.lock().unwrap().clone()
    }

    /// Waits until `found` finds something in the events so far; returns it.
    fn wait_for<T>(&self, what: &str, mut found: impl FnMut(&[Value]) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(t) = found(&self.snapshot()) {
                return t;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} within 20 s; events: {:#?}",
                self.snapshot()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The position of the first event from `from` on that `matches`.
fn find(events: &[Value], from: usize, matches: impl Fn(&Value) -> bool) -> Option<usize> {
    (from..events.len()).find(|&i| matches(&events[i]))
}

fn kind(e: &Value, k: &str) -> bool {
    e["kind"] == k
}

fn num(e: &Value, field: &str) -> u64 {
    e[field].as_u64().unwrap_or(0)
}

/// Whether an append event carries entry `index`.
fn carries(e: &Value, index: u64) -> bool {
    e["type"] == "append" && num(e, "first") <= index && index <= num(e, "last")
}

fn put(addr: &str, key: &str, value: &str) {
    let mut c = Conn::connect(addr, Duration::from_secs(5)).unwrap();
    let answer = c
        .call(&json!({"op": "put", "key": key, "value": value}))
        .unwrap();
    assert_eq!(answer["ok"], true, "{answer}");
}

#[test]
fn a_put_is_seen_on_every_node_from_its_request_to_its_reply() {
    let (c, http, leader) = http_cluster(3, &[]);
    let streams: BTreeMap<u64, Watched> = http
        .iter()
        .map(|(&id, a)| (id, Watched::start(a)))
        .collect();
    for (id, s) in &streams {
        let hello = s.wait_for("hello", |e| e.first().cloned());
        assert_eq!(hello["kind"], "hello");
        assert_eq!(hello["node"], *id);
        assert_eq!(hello["status"]["node"], *id);
        let members = hello["members"].as_array().unwrap();
        assert_eq!(members.len(), 3);
        assert_eq!(members[0]["http"], http[&1]);
        assert_eq!(members[1]["client"], c.nodes[&2].client);
    }
    put(c.addr(leader), "traced", "v");

    // The leader: request -> taken -> appended -> commit -> apply -> reply, in order.
    let l = &streams[&leader];
    let (req, index) = l.wait_for("the put's reply", |events| {
        let at = find(events, 0, |e| kind(e, "request") && e["key"] == "traced")?;
        let request = &events[at];
        assert_eq!(
            (&request["op"], &request["via"]),
            (&json!("put"), &json!("line"))
        );
        assert_eq!(request["thread"], "client-reader");
        let req = num(request, "req");
        let is = |k: &'static str| move |e: &Value| kind(e, k) && num(e, "req") == req;
        let taken = find(events, at, is("taken"))?;
        let appended = find(events, taken, is("appended"))?;
        let index = num(&events[appended], "index");
        let commit = find(events, appended, |e| {
            kind(e, "commit") && num(e, "index") >= index
        })?;
        let apply = find(events, commit, |e| {
            kind(e, "apply") && num(e, "first") <= index && index <= num(e, "last")
        })?;
        let reply = find(events, apply, is("reply"))?;
        assert_eq!(events[reply]["ok"], true);
        assert_eq!(events[reply]["thread"], "client-writer");
        for (at, thread) in [(taken, "state"), (appended, "state"), (commit, "state")] {
            assert_eq!(events[at]["thread"], thread, "{}", events[at]);
        }
        Some((req, index))
    });
    assert!(req > 0 && index > 0);
    let events = l.snapshot();
    for follower in c.ids().into_iter().filter(|&id| id != leader) {
        let sent = events
            .iter()
            .find(|e| kind(e, "send") && num(e, "to") == follower && carries(e, index));
        let sent = sent.unwrap_or_else(|| panic!("no append of {index} to n{follower}"));
        assert_eq!(sent["thread"], format!("replicator-n{follower}"));
    }

    // The followers: their peer reader reads the append, their state thread syncs it.
    for follower in c.ids().into_iter().filter(|&id| id != leader) {
        streams[&follower].wait_for("the append and its fsync", |events| {
            let recv = find(events, 0, |e| {
                kind(e, "recv") && num(e, "from") == leader && carries(e, index)
            })?;
            assert_eq!(events[recv]["thread"], "peer-reader");
            let fsync = find(events, recv, |e| {
                kind(e, "fsync") && num(e, "last") >= index
            })?;
            assert_eq!(events[fsync]["thread"], "state");
            find(events, fsync, |e| {
                kind(e, "send") && e["type"] == "append_response" && num(e, "match") >= index
            })
        });
    }
}

#[test]
fn a_killed_leader_shows_up_as_elections_on_the_others() {
    let (mut c, http, leader) = http_cluster(3, &[]);
    let others: Vec<u64> = c.ids().into_iter().filter(|&id| id != leader).collect();
    let streams: BTreeMap<u64, Watched> = others
        .iter()
        .map(|&id| (id, Watched::start(&http[&id])))
        .collect();
    for s in streams.values() {
        s.wait_for("hello", |e| e.first().cloned());
    }
    c.kill(leader);
    let (new_leader, term) = c.wait_for_leader(&others, Duration::from_secs(20));
    let s = &streams[&new_leader];
    s.wait_for("a pre-vote, a campaign, then leadership", |events| {
        let pre = find(events, 0, |e| kind(e, "election") && e["pre"] == true)?;
        let campaign = find(events, pre, |e| {
            kind(e, "election") && e["pre"] == false && num(e, "term") == term
        })?;
        find(events, campaign, |e| {
            kind(e, "role") && e["role"] == "leader" && num(e, "term") == term
        })
    });
    let other = others.iter().find(|&&id| id != new_leader).unwrap();
    streams[other].wait_for("the new leader, known", |events| {
        find(events, 0, |e| {
            kind(e, "role") && num(e, "term") == term && num(e, "leader") == new_leader
        })
    });
}

/// Median time of the puts `clients` clients make for `run`, each to `addr` with
/// long keys (so that the events they cause are large), and how many were made.
fn put_load(addr: &str, clients: usize, run: Duration) -> (Duration, usize) {
    let key_pad = "k".repeat(900);
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..clients)
        .map(|w| {
            let (addr, stop, key_pad) = (addr.to_string(), Arc::clone(&stop), key_pad.clone());
            thread::spawn(move || {
                let mut conn = Conn::connect(&addr, Duration::from_secs(5)).unwrap();
                let mut took = Vec::new();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let key = format!("{key_pad}-{w}-{}", i % 50);
                    let answer = conn
                        .call(&json!({"op": "put", "key": key, "value": "v"}))
                        .unwrap();
                    assert_eq!(answer["ok"], true, "{answer}");
                    took.push(started.elapsed());
                    i += 1;
                }
                took
            })
        })
        .collect();
    thread::sleep(run);
    stop.store(true, Ordering::Relaxed);
    let mut took: Vec<Duration> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    took.sort();
    (took[took.len() / 2], took.len())
}

#[test]
fn a_subscriber_that_stops_reading_costs_the_writers_nothing_and_is_told_what_it_lost() {
    let (c, http, leader) = http_cluster(3, &[]);
    let addr = c.addr(leader).to_string();
    let (without, puts_without) = put_load(&addr, 8, Duration::from_secs(3));

    // Subscribes, reads the hello, then reads nothing while the same load runs: its
    // socket's buffers fill, then its queue, then it loses events.
    let mut stalled = subscribe(&http[&leader]);
    assert_eq!(next_event(&mut stalled).unwrap()["kind"], "hello");
    let (with, puts_with) = put_load(&addr, 8, Duration::from_secs(3));
    eprintln!(
        "median put: {without:?} without a subscriber ({puts_without} puts), {with:?} \
         with one that never reads ({puts_with} puts)"
    );
    // Loose, for a busy shared machine: emitting costs a little, waiting would cost
    // seconds (the stalled stream's writes block for up to 30 s).
    assert!(
        with <= without * 4 + Duration::from_millis(20),
        "{with:?} against {without:?}"
    );

    // It reads again: first what was queued before the gap, then `dropped`.
    let reading = thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            match next_event(&mut stalled) {
                Some(e) if e["kind"] == "dropped" => return num(&e, "count"),
                Some(_) => {}
                None => break,
            }
        }
        0
    });
    // Events after the gap put the `dropped` in (heartbeat summaries would too).
    let mut conn = Conn::connect(&addr, Duration::from_secs(5)).unwrap();
    while !reading.is_finished() {
        let answer = conn
            .call(&json!({"op": "put", "key": "after", "value": "v"}))
            .unwrap();
        assert_eq!(answer["ok"], true);
        thread::sleep(Duration::from_millis(10));
    }
    let lost = reading.join().unwrap();
    assert!(lost > 0, "no dropped event with a count");
}

#[test]
fn the_trace_of_a_put_follows_it_hop_by_hop() {
    let mut c = Cluster::start_with(3, &["--trace"]);
    let (leader, _) = c.wait_for_leader(&c.ids(), Duration::from_secs(20));
    put(c.addr(leader), "hop", "by-hop");
    // Lines reach the log from the trace thread; the ack of the slower follower and
    // the next heartbeat's commit come a little later.
    thread::sleep(Duration::from_millis(500));
    let on_leader = trace_lines(&c, leader);
    assert!(!on_leader.is_empty(), "{}", c.logs_tail());
    assert!(
        on_leader.iter().all(|l| !l.contains(" heartbeats ")),
        "heartbeat summaries are left out"
    );
    let field = |line: &str, name: &str| -> Option<u64> {
        line.split(' ')
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
    };
    let at = |lines: &[String], from: usize, what: &dyn Fn(&str) -> bool| -> usize {
        (from..lines.len())
            .find(|&i| what(&lines[i]))
            .unwrap_or_else(|| panic!("not found after line {from}:\n{}", lines.join("\n")))
    };
    let prefix = format!(" n{leader} ");
    assert!(on_leader[0].contains(&prefix), "{}", on_leader[0]);
    let request = at(&on_leader, 0, &|l| {
        l.contains(" client-reader request ") && l.contains(" op=put key=hop via=line")
    });
    let req = field(&on_leader[request], "req").unwrap();
    let of_req = |k: &'static str| move |l: &str| l.contains(k) && field(l, "req") == Some(req);
    let taken = at(&on_leader, request, &of_req(" state taken "));
    let appended = at(&on_leader, taken, &of_req(" state appended "));
    let index = field(&on_leader[appended], "index").unwrap();
    let covers = |l: &str| field(l, "first") <= Some(index) && Some(index) <= field(l, "last");
    let wal = at(&on_leader, appended, &|l| {
        l.contains(" state wal ") && covers(l)
    });
    at(&on_leader, wal, &|l| {
        l.contains(" state fsync ") && field(l, "last") >= Some(index)
    });
    let sent = at(&on_leader, appended, &|l| {
        l.contains(" replicator-n")
            && l.contains(" send ")
            && l.contains(" type=append ")
            && covers(l)
    });
    let acked = at(&on_leader, sent, &|l| {
        l.contains(" peer-reader recv ")
            && l.contains(" type=append_response ")
            && field(l, "match") >= Some(index)
    });
    let commit = at(&on_leader, acked, &|l| {
        l.contains(" state commit ") && field(l, "index") >= Some(index)
    });
    let apply = at(&on_leader, commit, &|l| {
        l.contains(" state apply ") && covers(l)
    });
    let reply = at(&on_leader, apply, &of_req(" client-writer reply "));
    assert!(
        on_leader[reply].contains(" ok=true "),
        "{}",
        on_leader[reply]
    );

    for follower in c.ids().into_iter().filter(|&id| id != leader) {
        let on_follower = trace_lines(&c, follower);
        let recv = at(&on_follower, 0, &|l| {
            l.contains(" peer-reader recv ") && l.contains(" type=append ") && covers(l)
        });
        let fsync = at(&on_follower, recv, &|l| {
            l.contains(" state fsync ") && field(l, "last") >= Some(index)
        });
        at(&on_follower, fsync, &|l| {
            l.contains(&format!(" replicator-n{leader} send "))
                && l.contains(" type=append_response ")
                && field(l, "match") >= Some(index)
        });
    }
    // Without --trace, nothing of the sort.
    c.kill(leader);
    c.node_args.clear();
    c.spawn(leader);
    let before = trace_lines(&c, leader).len();
    let (now_leading, _) = c.wait_for_leader(&c.ids(), Duration::from_secs(20));
    put(c.addr(now_leading), "quiet", "v");
    thread::sleep(Duration::from_millis(300));
    assert_eq!(
        trace_lines(&c, leader).len(),
        before,
        "a node without --trace traces"
    );
}

/// The `TRACE` lines of node `id`'s log so far.
fn trace_lines(c: &Cluster, id: u64) -> Vec<String> {
    c.log_text(id)
        .lines()
        .filter(|l| l.starts_with("TRACE "))
        .map(str::to_string)
        .collect()
}

/// Answers written just before a stream on the same connection are given back to the
/// node's client budget before the stream starts: 24 answers of 1 MiB and then
/// `/v1/events` on one connection once held 25 MiB of the 16 MiB budget for as long as
/// the stream lasted, and every other client of the node waited.
#[test]
fn large_answers_before_a_stream_do_not_hold_the_nodes_client_budget() {
    let (c, http, leader) = http_cluster(1, &[]);
    let big = "x".repeat(1 << 20);
    put(c.addr(leader), "big", &big);
    let mut stream = TcpStream::connect(&http[&leader]).unwrap();
    let mut requests = Vec::new();
    for _ in 0..24 {
        requests
            .extend_from_slice(b"GET /v1/kv/big?consistency=stale HTTP/1.1\r\nHost: test\r\n\r\n");
    }
    requests.extend_from_slice(b"GET /v1/events HTTP/1.1\r\nHost: test\r\n\r\n");
    stream.write_all(&requests).unwrap();
    // Read everything the node writes (24 MiB of answers, then events) meanwhile.
    let read = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (reading, counter) = (stream.try_clone().unwrap(), std::sync::Arc::clone(&read));
    let reader = std::thread::spawn(move || {
        let mut sink = [0u8; 64 << 10];
        let mut r = reading;
        while let Ok(n) = std::io::Read::read(&mut r, &mut sink) {
            if n == 0 {
                break;
            }
            counter.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        }
    });
    c.wait_until(
        "the 24 answers before the stream",
        Duration::from_secs(20),
        || read.load(std::sync::atomic::Ordering::Relaxed) >= 24 << 20,
    );
    // Another client of the node, while the stream is open.
    let mut conn = Conn::connect(c.addr(leader), Duration::from_secs(2)).unwrap();
    conn.set_timeout(Duration::from_secs(5));
    let answer = conn
        .call(&json!({"op": "put", "key": "other", "value": "client"}))
        .expect("a put while the stream is open");
    assert_eq!(answer["ok"], true, "{answer}");
    stream.shutdown(std::net::Shutdown::Both).unwrap();
    reader.join().unwrap();
}
