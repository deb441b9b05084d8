//! Bounds of memory and of time: what a node holds, and how long one turn of its state
//! thread takes, whatever the clients send and however long the log.
//!
//! - A flood of large writes on real processes: 16 connections each pipeline 60 puts
//!   of 1 MiB values without reading their answers. The node must slow them down (TCP
//!   backpressure) rather than buffer everything, keep its leadership (heartbeats flow
//!   while large batches are synced), serve another client's small writes meanwhile,
//!   and lose no acknowledged write.
//! - A leader whose every sync takes 800 ms (more than the longest election timeout,
//!   injected with `RAFTKV_FAULT_LEADER_SYNC_MS`) keeps its leadership: its
//!   replicators resend the last heartbeat while it waits for its disk.
//! - A committed backlog applied in slices, one per turn, under the simulator's faults:
//!   with slices of a couple of entries, every seed still keeps every invariant,
//!   converges and leaves a linearizable history.

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

const FLOODERS: usize = 16;
const WRITES_EACH: usize = 60;
const VALUE_BYTES: usize = 1 << 20;
/// "A few hundred MB": what a node may hold at its peak while flooded.
const RSS_LIMIT_MB: u64 = 400;

/// Peak resident set (VmHWM) and current resident set (VmRSS) of a process, in MiB.
fn memory_mb(pid: u32) -> Option<(u64, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb / 1024)
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

/// The value of write `i` of flooder `c`: exactly [`VALUE_BYTES`] long, and telling
/// whose it is from its first bytes.
fn big_value(c: usize, i: usize) -> String {
    let mut v = format!("c{c}-w{i}-");
    v.extend(std::iter::repeat_n('x', VALUE_BYTES - v.len()));
    v
}

/// The slow-disk warnings of a node's log: how many, and the longest (ms).
fn slow_syncs(log: &str) -> (usize, u64) {
    let ms: Vec<u64> = log
        .lines()
        .filter_map(|l| l.split("writing and syncing took ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect();
    (ms.len(), ms.iter().copied().max().unwrap_or(0))
}

#[test]
fn a_flood_of_pipelined_1mib_puts_is_slowed_not_buffered_and_the_leader_keeps_its_term() {
    // Snapshots every 64 entries (or 16 MiB) keep 16 entries behind them: the
    // in-memory log is then bounded too (its default tail of 5,000 entries is counted,
    // not sized, and would hold 5 GB of 1 MiB entries).
    let c = Cluster::start_with(3, &["--snapshot-entries", "64"]);
    let (leader, term) = c.wait_for_leader(&c.ids(), Duration::from_secs(15));
    let leader_addr = c.addr(leader).to_string();
    // Election rounds so far (the first election's included): none may follow.
    let pre_votes = |c: &Cluster| -> usize {
        c.ids()
            .iter()
            .map(|&id| c.log_text(id).matches("asking for pre-votes").count())
            .sum()
    };
    let pre_votes_before = pre_votes(&c);

    // Memory of every node, sampled while the flood runs (VmHWM is the kernel's own
    // peak, so nothing between samples is missed).
    let done = Arc::new(AtomicBool::new(false));
    let pids: Vec<(u64, u32)> = c.ids().into_iter().map(|id| (id, c.pid(id))).collect();
    let peaks = Arc::new(Mutex::new(vec![0u64; pids.len()]));
    let sampler = {
        let (done, peaks, pids) = (Arc::clone(&done), Arc::clone(&peaks), pids.clone());
        thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                for (i, (_, pid)) in pids.iter().enumerate() {
                    if let Some((hwm, _)) = memory_mb(*pid) {
                        let mut p = peaks.lock().unwrap();
                        p[i] = p[i].max(hwm);
                    }
                }
                thread::sleep(Duration::from_millis(50));
            }
        })
    };

    // Another client's small writes, one at a time, for as long as the flood lasts.
    let small = {
        let (done, addr) = (Arc::clone(&done), leader_addr.clone());
        thread::spawn(move || {
            let mut conn = Conn::connect(&addr, Duration::from_secs(10)).expect("connect");
            conn.set_timeout(Duration::from_secs(10));
            let (mut latencies, mut failures) = (Vec::new(), Vec::new());
            let mut n = 0;
            while !done.load(Ordering::Relaxed) {
                n += 1;
                let started = Instant::now();
                match conn.call(&json!({"op": "put", "key": format!("small-{n}"), "value": "v"})) {
                    Ok(v) if v["ok"] == true => latencies.push(started.elapsed()),
                    Ok(v) => failures.push(v.to_string()),
                    Err(e) => {
                        failures.push(e.to_string());
                        match Conn::connect(&addr, Duration::from_secs(10)) {
                            Ok(c) => conn = c,
                            Err(_) => thread::sleep(Duration::from_millis(100)),
                        }
                    }
                }
                thread::sleep(Duration::from_millis(20));
            }
            (latencies, failures)
        })
    };

    // The flood: each connection writes all its requests first, then reads the answers.
    let started = Instant::now();
    let flooders: Vec<_> = (0..FLOODERS)
        .map(|c| {
            let addr = leader_addr.clone();
            thread::spawn(move || {
                let mut conn = Conn::connect(&addr, Duration::from_secs(10)).expect("connect");
                conn.stream
                    .set_write_timeout(Some(Duration::from_secs(60)))
                    .unwrap();
                conn.set_timeout(Duration::from_secs(60));
                let writer = conn.stream.try_clone().unwrap();
                let sender = thread::spawn(move || {
                    let mut writer = std::io::BufWriter::new(writer);
                    for i in 0..WRITES_EACH {
                        let req = json!({"id": i, "op": "put", "key": format!("flood-{c}"),
                                         "value": big_value(c, i)});
                        let mut line = serde_json::to_vec(&req).unwrap();
                        line.push(b'\n');
                        if writer.write_all(&line).is_err() {
                            return;
                        }
                    }
                    let _ = writer.flush();
                });
                let answers: Vec<Value> = (0..WRITES_EACH)
                    .map(|_| {
                        conn.recv()
                            .unwrap_or_else(|e| json!({"lost": e.to_string()}))
                    })
                    .collect();
                sender.join().unwrap();
                answers
            })
        })
        .collect();
    let answers: Vec<Vec<Value>> = flooders.into_iter().map(|h| h.join().unwrap()).collect();
    let flood_ms = started.elapsed().as_millis();
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let (latencies, small_failures) = small.join().unwrap();
    let small_writes = latencies.len();
    let peaks = peaks.lock().unwrap().clone();

    let acked: usize = answers.iter().flatten().filter(|v| v["ok"] == true).count();
    let refusals: Vec<&Value> = answers
        .iter()
        .flatten()
        .filter(|v| v["ok"] != true)
        .collect();
    let slowest_small = latencies.iter().max().copied().unwrap_or_default();
    let median_small = {
        let mut l = latencies.clone();
        l.sort();
        l.get(l.len() / 2).copied().unwrap_or_default()
    };
    let status = c.status(leader).expect("the leader answers status");
    let syncs: Vec<(u64, usize, u64)> = c
        .ids()
        .into_iter()
        .map(|id| {
            let (n, ms) = slow_syncs(&c.log_text(id));
            (id, n, ms)
        })
        .collect();
    let elections = pre_votes(&c) - pre_votes_before;
    eprintln!(
        "flood of {FLOODERS}x{WRITES_EACH} puts of 1 MiB: {flood_ms} ms, {acked} acknowledged, \
         {} refused; peak RSS per node (MiB) {:?} (leader n{leader}); slow syncs (node, \
         count over 50 ms, longest ms) {syncs:?}; pre-vote rounds: {elections}; term {term} -> {}; \
         small writes: {small_writes} (median {} ms, slowest {} ms, {} failed)",
        refusals.len(),
        pids.iter()
            .zip(&peaks)
            .map(|((id, _), mb)| (*id, *mb))
            .collect::<Vec<_>>(),
        status["term"],
        median_small.as_millis(),
        slowest_small.as_millis(),
        small_failures.len()
    );

    // Leadership: same leader, same term, and no follower even started an election.
    assert_eq!(status["role"], "leader", "{status}");
    assert_eq!(status["term"], term, "the leader lost its term: {status}");
    assert_eq!(elections, 0, "a node timed out waiting for the leader");
    // Memory: the readers were slowed; nobody buffered the whole flood.
    for ((id, _), mb) in pids.iter().zip(&peaks) {
        assert!(
            *mb < RSS_LIMIT_MB,
            "n{id} peaked at {mb} MiB (limit {RSS_LIMIT_MB})"
        );
    }
    // Every put is answered; any refusal must say why, and nothing acknowledged is lost.
    for r in &refusals {
        assert!(r["error"].is_string() && r["message"].is_string(), "{r}");
    }
    assert_eq!(acked, FLOODERS * WRITES_EACH, "refusals: {refusals:?}");
    for (c_id, conn_answers) in answers.iter().enumerate() {
        let last_ok = conn_answers.iter().rposition(|v| v["ok"] == true);
        let Some(last_ok) = last_ok else { continue };
        let got = call(
            &leader_addr,
            &json!({"op": "get", "key": format!("flood-{c_id}")}),
        )
        .expect("get");
        let value = got["value"].as_str().expect("the key holds a value");
        assert_eq!(value.len(), VALUE_BYTES, "flood-{c_id}");
        assert!(
            value.starts_with(&format!("c{c_id}-w{last_ok}-")),
            "flood-{c_id} holds {:?}, not write {last_ok}",
            &value[..16]
        );
    }
    // Not starved: the small writer kept going, and no write of it waited long.
    assert!(
        small_failures.is_empty(),
        "small writes failed: {small_failures:?}"
    );
    assert!(small_writes >= 10, "only {small_writes} small writes");
    assert!(
        slowest_small < Duration::from_secs(2),
        "a small write waited {slowest_small:?}"
    );
}

#[test]
fn a_backlog_applied_in_tiny_slices_keeps_every_invariant_under_faults() {
    // Slices of at most 2 entries (or 64 bytes): nearly every commit leaves a backlog,
    // so turns end early and the rest is applied over the following turns, through
    // crashes, restarts, partitions, snapshots and elections.
    for seed in 0..150 {
        let mut cfg = raftkv::sim::chaos_config(seed);
        cfg.replica.raft.max_apply_entries = 2;
        cfg.replica.raft.max_apply_bytes = 64;
        let mut sim = raftkv::sim::Sim::new(cfg);
        assert!(
            sim.run_ticks(raftkv::sim::CHAOS_TICKS),
            "{}",
            sim.failure().expect("failed")
        );
        sim.settle(raftkv::sim::SETTLE_TICKS)
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        raftkv::check::check(sim.history())
            .unwrap_or_else(|v| panic!("seed {seed}: not linearizable: {v}"));
        assert!(sim.committed() > 0, "seed {seed} did some work");
    }
}

/// Node processes started by a test itself (with an environment of their own); killed
/// when dropped, also when the test panics.
struct Children(Vec<std::process::Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn a_leader_whose_every_sync_takes_800_ms_keeps_its_leadership() {
    const SYNC_MS: u64 = 800;
    assert!(
        Duration::from_millis(SYNC_MS) > ELECTION,
        "longer than any election timeout"
    );
    let c = Cluster::new(3);
    let _children = Children(
        c.ids()
            .into_iter()
            .map(|id| {
                let log = fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&c.nodes[&id].log)
                    .unwrap();
                c.command(id)
                    .env("RAFTKV_FAULT_LEADER_SYNC_MS", SYNC_MS.to_string())
                    .stderr(log)
                    .spawn()
                    .expect("spawn raftkv node")
            })
            .collect(),
    );
    let (leader, term) = c.wait_for_leader(&c.ids(), Duration::from_secs(20));
    let pre_votes = |c: &Cluster| -> usize {
        c.ids()
            .iter()
            .map(|&id| c.log_text(id).matches("asking for pre-votes").count())
            .sum()
    };
    let before = pre_votes(&c);
    let mut conn = Conn::connect(c.addr(leader), Duration::from_secs(10)).expect("connect");
    let started = Instant::now();
    for i in 0..4 {
        let v = conn
            .call(&json!({"op": "put", "key": format!("k{i}"), "value": "v"}))
            .expect("an answer");
        assert_eq!(v["ok"], true, "put {i}: {v}");
    }
    let took = started.elapsed();
    let status = c.status(leader).expect("status");
    eprintln!(
        "4 puts through a leader syncing in {SYNC_MS} ms took {} ms; term {term} -> {}; \
         pre-vote rounds after the first election: {}",
        took.as_millis(),
        status["term"],
        pre_votes(&c) - before
    );
    assert!(
        took >= Duration::from_millis(4 * SYNC_MS),
        "every put waited for a slow sync"
    );
    assert_eq!(status["role"], "leader", "{status}");
    assert_eq!(status["term"], term, "{status}");
    assert_eq!(
        pre_votes(&c),
        before,
        "a follower timed out during a slow sync"
    );
}
