//! The user's side against a real cluster: one-shot commands and their exit codes, the
//! REPL driven through a pipe (quoting, errors, status table, a leader failover in the
//! middle of a session), `bench --check`, and the `make cluster` launch path.

mod common;

use std::{
    io::{BufRead, BufReader, Write},
    net::TcpListener,
    path::Path,
    process::{Command, Output, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use common::{bin, Cluster, ELECTION};

fn raftkv(cluster: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .arg("--cluster")
        .arg(cluster)
        .stdin(Stdio::null())
        .output()
        .expect("run raftkv")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ready_cluster(n: u64) -> Cluster {
    let c = Cluster::start(n);
    c.wait_for_leader(&c.ids(), 20 * ELECTION);
    c
}

#[test]
fn one_shot_commands_print_results_and_use_documented_exit_codes() {
    let c = ready_cluster(3);
    let f = &c.cluster_file;

    let out = raftkv(f, &["put", "greeting", "hello world"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = raftkv(f, &["append", "greeting", "!"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = raftkv(f, &["get", "greeting"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stdout), "hello world!\n");

    // --json prints the raw protocol response.
    let out = raftkv(f, &["get", "greeting", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    assert_eq!(v["ok"], true);
    assert_eq!(v["value"], "hello world!");

    // A missing key: exit status 1, nothing on stdout.
    let out = raftkv(f, &["get", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());

    let out = raftkv(f, &["delete", "greeting"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(raftkv(f, &["get", "greeting"]).status.code(), Some(1));

    // --servers instead of --cluster.
    let servers = c.client_addrs().join(",");
    let out = Command::new(bin())
        .args(["put", "k", "v", "--servers", &servers])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    // Keys and values may start with a dash.
    let out = raftkv(f, &["put", "-dash", "-5"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&raftkv(f, &["get", "-dash"]).stdout), "-5\n");

    // status: a table with a row per node, one leader.
    let out = raftkv(f, &["status"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(table.contains("leader"), "{table}");
    for n in c.nodes.values() {
        assert!(table.contains(&n.client), "{table}");
    }

    // A wrong flag: usage error, exit status 2.
    let out = raftkv(f, &["get"]);
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(bin())
        .args(["put", "k", "v", "--bogus"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn one_shot_commands_against_no_reachable_node_fail_with_not_applied() {
    // A port nobody listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(bin())
        .args([
            "put",
            "k",
            "v",
            "--servers",
            &format!("127.0.0.1:{port}"),
            "--timeout",
            "1",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stderr).lines().count(),
        1,
        "one-line error: {}",
        text(&out.stderr)
    );
}

#[test]
fn a_piped_repl_script_prints_results_with_quoting_and_clear_errors() {
    let c = ready_cluster(3);
    let script = concat!(
        "put greeting \"hello world\"\n",
        "append greeting ' and more'\n",
        "get greeting\n",
        "put tab \"a\\tb\"\n",
        "get tab\n",
        "get missing\n",
        "put onlykey\n",
        "frobnicate x\n",
        "put x \"unterminated\n",
        "delete greeting\n",
        "get greeting\n",
        "status\n",
        "leader\n",
        "exit\n",
        "get never-reached\n",
    );
    let mut child = Command::new(bin())
        .args(["repl", "--cluster"])
        .arg(&c.cluster_file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines.contains(&"\"hello world and more\""), "{stdout}");
    assert!(lines.contains(&"\"a\\tb\""), "{stdout}");
    assert!(lines.contains(&"(nil)"), "{stdout}");
    assert!(
        stdout.to_lowercase().contains("usage"),
        "wrong arity gets usage: {stdout}"
    );
    assert!(
        stdout.contains("frobnicate"),
        "unknown command is named: {stdout}"
    );
    assert!(
        stdout.contains("quote"),
        "unterminated quote is explained: {stdout}"
    );
    for n in c.nodes.values() {
        assert!(
            stdout.contains(&n.client),
            "status table lists {}: {stdout}",
            n.client
        );
    }
    assert!(!stdout.contains("never-reached"), "exit stops the script");
    assert!(
        !stdout.contains("raftkv>"),
        "no prompt when stdin is not a terminal"
    );
}

#[test]
fn a_repl_session_survives_a_leader_failover() {
    let mut c = ready_cluster(3);
    let mut child = Command::new(bin())
        .args(["repl", "--cluster"])
        .arg(&c.cluster_file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    let expect = |want: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
                if line.contains(want) {
                    return;
                }
                seen.push(line);
            }
        }
        panic!("REPL never printed {want:?}; saw {seen:?}");
    };
    writeln!(stdin, "put k before").unwrap();
    expect("OK");
    let (leader, _) = c.wait_for_leader(&c.ids(), 20 * ELECTION);
    c.kill(leader);
    writeln!(stdin, "append k -after").unwrap();
    expect("OK");
    writeln!(stdin, "get k").unwrap();
    expect("\"before-after\"");
    writeln!(stdin, "quit").unwrap();
    drop(stdin);
    assert!(child.wait().unwrap().success());
}

/// Without `--cluster`/`--servers`, client commands use `$RAFTKV_CLUSTER`, then
/// `./cluster.json`; a flag wins over both, the variable over the file, and `-v` says
/// which was used.
#[test]
fn client_commands_find_the_cluster_by_flag_then_variable_then_current_directory() {
    let c = ready_cluster(1);
    let empty = tempfile::tempdir().unwrap();
    let with_file = tempfile::tempdir().unwrap();
    std::fs::copy(&c.cluster_file, with_file.path().join("cluster.json")).unwrap();
    let bogus = empty.path().join("no-such-cluster.json");
    // `raftkv ARGS` run in `dir`, with RAFTKV_CLUSTER set to `env` (or unset).
    let run = |dir: &Path, env: Option<&Path>, args: &[&str], input: &str| {
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .current_dir(dir)
            .env_remove("RAFTKV_CLUSTER")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(env) = env {
            cmd.env("RAFTKV_CLUSTER", env);
        }
        let mut child = cmd.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };

    // The variable, from a directory without a cluster file.
    let (code, _, stderr) = run(
        empty.path(),
        Some(&c.cluster_file),
        &["put", "k", "v", "-v"],
        "",
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("(from $RAFTKV_CLUSTER)"), "{stderr}");
    let (code, stdout, _) = run(empty.path(), Some(&c.cluster_file), &["status"], "");
    assert_eq!(code, Some(0));
    assert!(stdout.contains(&c.nodes[&1].client), "{stdout}");
    // ./cluster.json, for one-shot commands and the REPL alike.
    let (code, stdout, stderr) = run(with_file.path(), None, &["get", "k", "--verbose"], "");
    assert_eq!((code, stdout.as_str()), (Some(0), "v\n"), "{stderr}");
    assert!(
        stderr.contains("found in the current directory"),
        "{stderr}"
    );
    let (code, stdout, _) = run(with_file.path(), None, &["repl"], "append k w\nget k\n");
    assert_eq!((code, stdout.as_str()), (Some(0), "OK\n\"vw\"\n"));
    // The variable wins over ./cluster.json, even when it names a missing file.
    let (code, _, stderr) = run(with_file.path(), Some(&bogus), &["get", "k"], "");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("no-such-cluster.json") && stderr.contains("$RAFTKV_CLUSTER"),
        "{stderr}"
    );
    // A flag wins over both.
    let cluster = c.cluster_file.to_str().unwrap();
    let (code, stdout, stderr) = run(
        with_file.path(),
        Some(&bogus),
        &["get", "k", "-v", "--cluster", cluster],
        "",
    );
    assert_eq!((code, stdout.as_str()), (Some(0), "vw\n"), "{stderr}");
    assert!(stderr.contains("(--cluster)"), "{stderr}");
    let servers = c.client_addrs().join(",");
    let (code, stdout, _) = run(
        empty.path(),
        Some(&bogus),
        &["get", "k", "--servers", &servers],
        "",
    );
    assert_eq!((code, stdout.as_str()), (Some(0), "vw\n"));
    // None of the three: a usage error naming them all.
    let (code, _, stderr) = run(empty.path(), None, &["get", "k"], "");
    assert_eq!(code, Some(2));
    for named in [
        "--cluster",
        "--servers",
        "$RAFTKV_CLUSTER",
        "./cluster.json",
    ] {
        assert!(stderr.contains(named), "{stderr}");
    }
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

/// `raftkv bench --check` against a real cluster: a concurrent, pipelined mix of every
/// operation on a few keys is recorded, and the history is found linearizable.
#[test]
fn bench_check_records_a_linearizable_history() {
    let c = ready_cluster(3);
    let out = raftkv(
        &c.cluster_file,
        &[
            "bench",
            "--check",
            "--json",
            "--ops",
            "600",
            "--clients",
            "4",
            "--pipeline",
            "2",
            "--keys",
            "3",
            "--value-size",
            "24",
            "--mix",
            "put=2,get=3,append=2,delete=1,stale_get=1",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(report["check"]["passed"], true, "{report}");
    let operations = report["check"]["operations"].as_u64().unwrap();
    assert!(
        operations > 300,
        "stale reads aside, most ops are checked: {report}"
    );
}

/// `make cluster`, a one-shot put/get, then `make stop`: the launch path a newcomer
/// uses, on free ports and a temp folder.
#[test]
fn make_cluster_put_get_and_stop() {
    let make_ok = Command::new("make")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(make_ok, "make is required (it drives the cluster launch)");
    let dir = tempfile::tempdir().unwrap();
    let base = free_block_of_ports();
    let cluster = dir.path().join("cluster.json");
    let data = dir.path().join("data");
    let vars = [
        format!("CLUSTER={}", cluster.display()),
        format!("DATA={}", data.display()),
        format!("RAFT_BASE={}", base),
        format!("CLIENT_BASE={}", base + 10),
        format!("BIN={}", bin()),
        "CARGO=true".to_string(), // already built by cargo test; do not rebuild
    ];
    let make = |target: &str| {
        Command::new("make")
            .arg("--no-print-directory")
            .arg("-C")
            .arg(env!("CARGO_MANIFEST_DIR"))
            .arg(target)
            .args(&vars)
            .output()
            .unwrap()
    };
    let stop = Stopper(&make);
    let out = make("cluster");
    assert!(
        out.status.success(),
        "make cluster: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("leader"),
        "{}",
        text(&out.stdout)
    );
    let out = raftkv(&cluster, &["put", "made", "by-make"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = raftkv(&cluster, &["get", "made"]);
    assert_eq!(text(&out.stdout), "by-make\n");
    drop(stop);
    for i in 1..=3 {
        assert!(
            !data.join(format!("n{i}.pid")).exists(),
            "make stop removed the pid files"
        );
    }
    let out = raftkv(&cluster, &["get", "made", "--timeout", "1"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "the nodes are gone after make stop"
    );
}

/// Runs `make stop` when dropped, so a failing test leaves no nodes behind.
struct Stopper<'a, F: Fn(&str) -> Output>(&'a F);

impl<F: Fn(&str) -> Output> Drop for Stopper<'_, F> {
    fn drop(&mut self) {
        let out = (self.0)("stop");
        assert!(
            out.status.success() || thread::panicking(),
            "make stop failed"
        );
    }
}

/// A base port such that base+1..=base+3 and base+11..=base+13 are free.
fn free_block_of_ports() -> u16 {
    for base in (20_000u16..30_000)
        .step_by(37)
        .skip((std::process::id() % 200) as usize)
    {
        let ok = (1..=3)
            .chain(11..=13)
            .all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        if ok {
            return base;
        }
    }
    panic!("no free block of ports");
}
