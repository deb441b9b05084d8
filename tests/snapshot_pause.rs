//! How long the state thread pauses to take a snapshot of a million keys: the work
//! `Replica::ready` does in the turn that takes it, against a turn that does not.
//! A measurement for docs/benchmarks.md, not a pass/fail test:
//!
//! ```text
//! cargo test --release --test snapshot_pause -- --ignored --nocapture
//! ```

use std::time::{Duration, Instant};

use raftkv::{
    kv::{Command, WriteOp},
    raft::HardState,
    replica::{ClientOp, Input, Replica, ReplicaConfig, ReplicaReady},
};

const KEYS: u64 = 1_000_000;

fn put(i: u64) -> ClientOp {
    ClientOp::Write(Command::write(
        format!("key-{i:07}"),
        WriteOp::Put {
            value: "v".repeat(100),
        },
        None,
    ))
}

/// Feeds `ops` to a single-node replica's leader and applies them; returns how long
/// the `ready` that applied them took, and what it handed out.
fn apply(
    r: &mut Replica<u64>,
    ops: impl Iterator<Item = ClientOp>,
) -> (Duration, ReplicaReady<u64>) {
    for op in ops {
        r.request(0, op);
    }
    let ready = r.ready();
    if let Some(last) = ready.entries.last() {
        r.persisted(last.index, last.term);
    }
    let started = Instant::now();
    let ready = r.ready();
    let took = started.elapsed();
    assert!(!ready.applied.is_empty());
    (took, ready)
}

#[test]
#[ignore = "a measurement; run with --ignored --nocapture"]
fn state_thread_pause_when_a_snapshot_of_a_million_keys_is_taken() {
    let config = ReplicaConfig {
        snapshot_entries: KEYS + 7, // due at the last single write below (with the no-op)
        snapshot_bytes: u64::MAX,
        ..ReplicaConfig::default()
    };
    let mut r: Replica<u64> = Replica::new(1, &[1], config, 7, HardState::default(), None, vec![]);
    r.campaign();
    let ready = r.ready();
    if let Some(last) = ready.entries.last() {
        r.persisted(last.index, last.term);
    }
    r.ready();
    for chunk in 0..(KEYS / 10_000) {
        apply(&mut r, (chunk * 10_000..(chunk + 1) * 10_000).map(put));
    }
    // Single writes without a snapshot, then the one that makes it due.
    let mut plain: Vec<Duration> = (0..5)
        .map(|i| apply(&mut r, std::iter::once(put(i))).0)
        .collect();
    plain.sort();
    let (with_snapshot, ready) = apply(&mut r, std::iter::once(put(42)));
    let snapshot = ready.take_snapshot.expect("the snapshot was due");
    println!(
        "{} keys: a turn applying one write took {:?} (median of 5); the turn that also took \
         snapshot {}@{} took {:?}",
        snapshot.store.len(),
        plain[2],
        snapshot.meta.index,
        snapshot.meta.term,
        with_snapshot
    );
    // When the snapshot is durable, the state thread drops the log behind it.
    let started = Instant::now();
    r.feed(Input::SnapshotSaved(snapshot.meta));
    let ready = r.ready();
    println!(
        "the turn that learnt it was saved and compacted the log to {:?} took {:?}",
        ready.compact_to,
        started.elapsed()
    );
    let encode = Instant::now();
    let bytes = snapshot.encode();
    println!(
        "encoding it (on the snapshotter thread, not the state thread): {:?} for {} bytes",
        encode.elapsed(),
        bytes.len()
    );
}
