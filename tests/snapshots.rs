//! Snapshots and log compaction on real processes: nodes started with a small
//! `--snapshot-entries`, so that they snapshot and compact all the time.

mod common;

use std::{
    fs,
    path::{Path, PathBuf},
    sync::{atomic::AtomicBool, Arc, Mutex},
    time::Duration,
};

use common::*;

const LEADER_WAIT: Duration = Duration::from_secs(15);

fn snapshot_files(data_dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(data_dir.join("snapshots"))
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "snap"));
    files.sort();
    files
}

/// Appends from three clients until at least `count` are acknowledged.
fn append_until(c: &Cluster, count: usize) -> Vec<String> {
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let clients = spawn_appenders(3, &c.client_addrs(), "log", &stop, &acked);
    c.wait_until(
        &format!("{count} acknowledged appends"),
        Duration::from_secs(60),
        || acked.lock().unwrap().len() >= count,
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for h in clients {
        h.join().expect("client thread");
    }
    let acked = acked.lock().unwrap().clone();
    acked
}

fn status_u64(c: &Cluster, id: u64, field: &str) -> u64 {
    c.status(id)
        .and_then(|s| s[field].as_u64())
        .unwrap_or_default()
}

#[test]
fn a_full_restart_after_compaction_keeps_every_acknowledged_write() {
    let mut c = Cluster::start_with(3, &["--snapshot-entries", "50"]);
    c.wait_for_leader(&c.ids(), LEADER_WAIT);
    let acked = append_until(&c, 400);
    for id in c.ids() {
        c.wait_until(
            &format!("n{id} to have compacted its log behind a snapshot"),
            Duration::from_secs(20),
            || {
                status_u64(&c, id, "snapshot_index") > 0
                    && status_u64(&c, id, "first_log_index") > 1
            },
        );
    }
    c.kill_all();
    for id in c.ids() {
        assert!(
            !snapshot_files(&c.nodes[&id].data_dir).is_empty(),
            "n{id} has snapshot files"
        );
        c.spawn(id);
    }
    c.wait_for_leader(&c.ids(), LEADER_WAIT);
    let value = read_key(&c.client_addrs(), "log", Duration::from_secs(10)).unwrap_or_default();
    check_tokens(&value, &acked);
    for id in c.ids() {
        assert!(
            c.log_text(id).contains("recovered") && status_u64(&c, id, "snapshot_index") > 0,
            "n{id} restarted from a snapshot"
        );
    }
}

#[test]
fn a_damaged_snapshot_is_never_used_silently() {
    // Small WAL segments, so that compaction really deletes log behind snapshots.
    let mut c = Cluster::start_with(
        3,
        &["--snapshot-entries", "50", "--wal-segment-bytes", "4096"],
    );
    c.wait_for_leader(&c.ids(), LEADER_WAIT);
    let acked = append_until(&c, 300);
    let victim = 3;
    let dir = c.nodes[&victim].data_dir.clone();
    c.wait_until("two snapshots on n3", Duration::from_secs(20), || {
        snapshot_files(&dir).len() >= 2
    });
    c.signal(victim, "TERM");
    assert!(c.wait_exit(victim, Duration::from_secs(10)).success());

    // The newest is damaged: the node falls back to the older one and the log after
    // it (which it keeps for this), says so, and has every acknowledged write.
    let newest = snapshot_files(&dir).pop().expect("a snapshot");
    let mut bytes = fs::read(&newest).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    fs::write(&newest, &bytes).unwrap();
    c.spawn(victim);
    c.wait_until("n3 to serve again", Duration::from_secs(10), || {
        c.status(victim).is_some()
    });
    let name = newest.file_name().unwrap().to_string_lossy().to_string();
    assert!(
        c.log_text(victim).contains(&name),
        "the log names the damaged snapshot {name}:\n{}",
        c.log_text(victim)
    );
    c.signal(victim, "TERM");
    assert!(c.wait_exit(victim, Duration::from_secs(10)).success());
    let others: Vec<String> = [1, 2].iter().map(|&id| c.addr(id).to_string()).collect();
    let value = read_key(&others, "log", Duration::from_secs(10)).unwrap_or_default();
    check_tokens(&value, &acked);

    // Every snapshot damaged: nothing to fall back to, so the node refuses to start
    // and names the file.
    for file in snapshot_files(&dir) {
        let mut bytes = fs::read(&file).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        fs::write(&file, &bytes).unwrap();
    }
    let before = c.log_text(victim).len();
    c.spawn(victim);
    let status = c.wait_exit(victim, Duration::from_secs(10));
    assert!(
        !status.success(),
        "a node with only damaged snapshots must not start"
    );
    let log = c.log_text(victim)[before..].to_string();
    assert!(
        log.contains(".snap") && log.contains("corrupt"),
        "the refusal names the file:\n{log}"
    );
}

/// Runs `raftkv bench` against the cluster: `ops` puts from 16 clients over `keys` keys.
fn bench_puts(c: &Cluster, ops: u64, keys: u64) {
    let out = std::process::Command::new(bin())
        .args(["bench", "--servers", &c.client_addrs().join(",")])
        .args(["--clients", "16", "--ops", &ops.to_string()])
        .args(["--keys", &keys.to_string(), "--value-size", "20"])
        .output()
        .expect("bench runs");
    assert!(
        out.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every key's value as node `id` has it (stale reads: its own state machine).
fn node_values(c: &Cluster, id: u64, keys: u64) -> Vec<Option<String>> {
    let mut conn = Conn::connect(c.addr(id), Duration::from_secs(5)).expect("connect");
    (0..keys)
        .map(|k| {
            let v = conn
                .call(
                    &serde_json::json!({"op":"get","key":format!("key-{k}"),"consistency":"stale"}),
                )
                .expect("stale get");
            assert_eq!(v["ok"], true, "{v}");
            v["value"].as_str().map(str::to_string)
        })
        .collect()
}

#[test]
fn a_follower_down_during_20000_writes_catches_up_by_snapshot() {
    let mut c = Cluster::start_with(3, &["--snapshot-entries", "100"]);
    let (leader, _) = c.wait_for_leader(&c.ids(), LEADER_WAIT);
    let down = if leader == 3 { 2 } else { 3 };
    c.kill(down);
    bench_puts(&c, 20_000, 1000);
    let leader_snapshot = status_u64(&c, leader, "snapshot_index");
    assert!(
        leader_snapshot > 10_000,
        "the leader compacted: snapshot at {leader_snapshot}"
    );

    c.spawn(down);
    let target = status_u64(&c, leader, "commit_index");
    c.wait_until(
        &format!("n{down} to catch up to {target}"),
        Duration::from_secs(30),
        || status_u64(&c, down, "applied_index") >= target,
    );
    assert!(
        c.log_text(down).contains("installed the leader's snapshot"),
        "n{down} caught up by snapshot:\n{}",
        c.log_text(down)
    );
    assert_eq!(
        node_values(&c, down, 1000),
        node_values(&c, leader, 1000),
        "the caught-up follower holds the leader's data"
    );
}

#[test]
fn sigkill_during_an_install_leaves_the_follower_recoverable() {
    let mut c = Cluster::start_with(3, &["--snapshot-entries", "100"]);
    let (leader, _) = c.wait_for_leader(&c.ids(), LEADER_WAIT);
    let down = if leader == 3 { 2 } else { 3 };
    c.kill(down);
    // About 10 MB of state, so the transfer takes a while.
    let out = std::process::Command::new(bin())
        .args(["bench", "--servers", &c.client_addrs().join(",")])
        .args(["--clients", "8", "--ops", "1500", "--keys", "500"])
        .args(["--value-size", "20000"])
        .output()
        .expect("bench runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Kill the follower as soon as it starts receiving the snapshot, then restart it.
    // (Usually the kill lands mid-transfer and the restarted follower resumes from the
    // bytes it had stored; `receiving snapshot ... resuming at byte N` in its log.)
    let before = c.log_text(down).len();
    c.spawn(down);
    c.wait_until(
        &format!("n{down} to start receiving the snapshot"),
        Duration::from_secs(20),
        || c.log_text(down)[before..].contains("receiving snapshot"),
    );
    c.kill(down);
    c.spawn(down);
    let target = status_u64(&c, leader, "commit_index");
    c.wait_until(
        &format!("n{down} to catch up to {target} after the killed install"),
        Duration::from_secs(30),
        || status_u64(&c, down, "applied_index") >= target,
    );
    assert_eq!(node_values(&c, down, 500), node_values(&c, leader, 500));
}

#[test]
fn sigkill_at_random_moments_while_snapshots_are_written_loses_nothing() {
    let mut c = Cluster::start_with(3, &["--snapshot-entries", "20"]);
    c.wait_for_leader(&c.ids(), LEADER_WAIT);
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let clients = spawn_appenders(3, &c.client_addrs(), "log", &stop, &acked);
    // Snapshots every 20 entries are written all the time: kills land in the middle of
    // snapshot writes, compactions and installs. One node at a time, so a majority
    // keeps serving.
    for round in 0..9u64 {
        let victim = round % 3 + 1;
        std::thread::sleep(Duration::from_millis(150 + 37 * round));
        c.kill(victim);
        c.spawn(victim);
        c.wait_until(
            &format!("n{victim} to serve again"),
            Duration::from_secs(10),
            || c.status(victim).is_some(),
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for h in clients {
        h.join().expect("client thread");
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 50,
        "the cluster kept serving: {} appends",
        acked.len()
    );
    let (leader, _) = c.wait_for_leader(&c.ids(), LEADER_WAIT);
    let target = status_u64(&c, leader, "commit_index");
    for id in c.ids() {
        c.wait_until(
            &format!("n{id} to be current"),
            Duration::from_secs(20),
            || status_u64(&c, id, "applied_index") >= target,
        );
    }
    let value = read_key(&c.client_addrs(), "log", Duration::from_secs(10)).unwrap_or_default();
    check_tokens(&value, &acked);
    for id in c.ids() {
        let mine = node_values_of(&c, id, "log");
        assert_eq!(
            mine.as_deref(),
            Some(value.as_str()),
            "n{id} holds the same log"
        );
    }
}

/// One key's value as node `id` has it.
fn node_values_of(c: &Cluster, id: u64, key: &str) -> Option<String> {
    let mut conn = Conn::connect(c.addr(id), Duration::from_secs(5)).expect("connect");
    let v = conn
        .call(&serde_json::json!({"op":"get","key":key,"consistency":"stale"}))
        .expect("stale get");
    v["value"].as_str().map(str::to_string)
}
