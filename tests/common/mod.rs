//! Harness for real-process tests: a cluster of `raftkv node` processes on 127.0.0.1
//! with free ports and temporary data directories, a raw protocol client, and a
//! retrying client that follows leader hints and records a history.
//!
//! Every node's stderr goes to its own log file (kept across restarts); failure
//! messages include the tails of all logs. Set `RAFTKV_KEEP_TEST_DIRS=1` to keep the
//! data directories and logs of every test for inspection. All children are killed when the
//! [`Cluster`] is dropped, also when a test panics.

#![allow(dead_code)]

pub mod peer;
pub mod proxy;
pub mod webdriver;

use std::{
    collections::BTreeMap,
    fs::{self, File, OpenOptions},
    io::{self, BufRead, BufReader, Write},
    net::{TcpListener, TcpStream, ToSocketAddrs},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

pub use raftkv::check::{KvOp, Operation};
use serde_json::{json, Value};

/// Milliseconds per Raft tick used by the tests (the node default).
pub const TICK_MS: u64 = raftkv::replica::DEFAULT_TICK_MS;
/// Upper bound of one election timeout at [`TICK_MS`] (twice the base timeout).
pub const ELECTION: Duration =
    Duration::from_millis(2 * raftkv::raft::Config::DEFAULT_ELECTION_TICKS as u64 * TICK_MS);

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_raftkv")
}

/// One member's addresses and files.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    pub id: u64,
    pub raft: String,
    pub client: String,
    /// With [`Cluster::add_http`]: where the node serves HTTP.
    pub http: Option<String>,
    pub data_dir: PathBuf,
    pub log: PathBuf,
}

/// A cluster of real node processes.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub cluster_file: PathBuf,
    pub nodes: BTreeMap<u64, NodeInfo>,
    children: BTreeMap<u64, Child>,
    /// With [`Cluster::start_behind_proxies`]: each node's own cluster file, and the
    /// proxy of every directed link `(from, to)`.
    node_files: BTreeMap<u64, PathBuf>,
    proxies: BTreeMap<(u64, u64), proxy::Proxy>,
    /// Extra `raftkv node` arguments for every node started from now on.
    pub node_args: Vec<String>,
    /// The cluster's name (the cluster file's `cluster` key): its identity in the peer
    /// handshake.
    pub name: String,
    /// With [`Cluster::start_secured`]: the cluster secret every node is started with.
    pub secret: Option<Vec<u8>>,
}

impl Cluster {
    /// Writes a cluster file for `n` nodes (ids 1..=n) and starts them all.
    pub fn start(n: u64) -> Cluster {
        Cluster::start_with(n, &[])
    }

    /// Like [`Cluster::start`], every node started with `args` added.
    pub fn start_with(n: u64, args: &[&str]) -> Cluster {
        let mut c = Cluster::new(n);
        c.node_args = args.iter().map(|a| a.to_string()).collect();
        for id in 1..=n {
            c.spawn(id);
        }
        c
    }

    /// Started the way `make cluster` does it: a named cluster, a secret file readable
    /// only by its owner, every node with `--secret-file`.
    pub fn start_secured(n: u64) -> Cluster {
        let mut c = Cluster::new(n);
        c.secure();
        for id in 1..=n {
            c.spawn(id);
        }
        c
    }

    /// Writes a fresh secret (64 hex characters, mode 0600) and adds `--secret-file`
    /// to the arguments of every node started from now on.
    pub fn secure(&mut self) {
        use std::os::unix::fs::OpenOptionsExt;
        let secret = random_hex(32).into_bytes();
        let path = self.dir.path().join("cluster.secret");
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .expect("secret file");
        f.write_all(&secret).expect("write secret");
        f.write_all(b"\n").expect("write secret");
        self.node_args.push("--secret-file".into());
        self.node_args.push(path.display().to_string());
        self.secret = Some(secret);
    }

    /// Like [`Cluster::start`] but starts nothing.
    pub fn new(n: u64) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("raftkv-test-")
            .tempdir()
            .expect("temp dir");
        let ports = free_ports(2 * n as usize);
        let mut nodes = BTreeMap::new();
        for id in 1..=n {
            let i = (id - 1) as usize;
            nodes.insert(
                id,
                NodeInfo {
                    id,
                    raft: format!("127.0.0.1:{}", ports[2 * i]),
                    client: format!("127.0.0.1:{}", ports[2 * i + 1]),
                    http: None,
                    data_dir: dir.path().join(format!("n{id}")),
                    log: dir.path().join(format!("n{id}.log")),
                },
            );
        }
        let name = format!("raftkv-test-{}", random_hex(8));
        let cluster_file = dir.path().join("cluster.json");
        let c = Cluster {
            dir,
            cluster_file,
            nodes,
            children: BTreeMap::new(),
            node_files: BTreeMap::new(),
            proxies: BTreeMap::new(),
            node_args: Vec::new(),
            name,
            secret: None,
        };
        c.write_cluster_file();
        c
    }

    /// Writes the cluster file from `nodes`.
    fn write_cluster_file(&self) {
        let nodes: Vec<Value> = self
            .nodes
            .values()
            .map(|n| {
                let mut node = json!({"id": n.id, "raft": n.raft, "client": n.client});
                if let Some(http) = &n.http {
                    node["http"] = json!(http);
                }
                node
            })
            .collect();
        let file = json!({ "cluster": self.name, "nodes": nodes });
        fs::write(
            &self.cluster_file,
            serde_json::to_vec_pretty(&file).unwrap(),
        )
        .unwrap();
    }

    /// Gives every node an HTTP address (the cluster file's `http` key), before any
    /// starts; returns them by id.
    pub fn add_http(&mut self) -> BTreeMap<u64, String> {
        let ports = free_ports(self.nodes.len());
        for (n, port) in self.nodes.values_mut().zip(ports) {
            n.http = Some(format!("127.0.0.1:{port}"));
        }
        self.write_cluster_file();
        self.nodes
            .values()
            .map(|n| (n.id, n.http.clone().unwrap_or_default()))
            .collect()
    }

    /// Like [`Cluster::start`], but every node reaches every peer through a proxy of its
    /// own (see [`proxy`]), so [`Cluster::cut`] and [`Cluster::heal`] can partition the
    /// network. Clients still talk to the nodes directly.
    pub fn start_behind_proxies(n: u64) -> Cluster {
        let mut c = Cluster::new(n);
        let ids = c.ids();
        for &from in &ids {
            for &to in &ids {
                if from == to {
                    continue;
                }
                // Bound here, in this process, so the OS can pick a free port (from the
                // ephemeral range, which `free_ports` never hands out): no window for
                // another listener to take it between picking and binding.
                let listener = TcpListener::bind(("127.0.0.1", 0)).expect("proxy port");
                let p = proxy::Proxy::start(listener, c.nodes[&to].raft.clone());
                c.proxies.insert((from, to), p);
            }
            // One name for all: each node's file lists other (proxy) addresses, and
            // without a name each file would describe a cluster of its own.
            let file = json!({
                "cluster": c.name,
                "nodes": c.nodes.values().map(|n| {
                    let raft = if n.id == from { n.raft.clone() } else { c.proxies[&(from, n.id)].addr.clone() };
                    json!({"id": n.id, "raft": raft, "client": n.client})
                }).collect::<Vec<_>>()
            });
            let path = c.dir.path().join(format!("cluster-n{from}.json"));
            fs::write(&path, serde_json::to_vec_pretty(&file).unwrap()).unwrap();
            c.node_files.insert(from, path);
        }
        for id in ids {
            c.spawn(id);
        }
        c
    }

    /// Cuts every link between `node` and the others, both ways.
    pub fn isolate(&self, node: u64) {
        for (&(from, to), p) in &self.proxies {
            if from == node || to == node {
                p.set_cut(true);
            }
        }
    }

    /// Cuts the one directed link `from → to`.
    pub fn cut(&self, from: u64, to: u64) {
        self.proxies[&(from, to)].set_cut(true);
    }

    /// Heals every link.
    pub fn heal(&self) {
        for p in self.proxies.values() {
            p.set_cut(false);
        }
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    pub fn addr(&self, id: u64) -> &str {
        &self.nodes[&id].client
    }

    pub fn client_addrs(&self) -> Vec<String> {
        self.nodes.values().map(|n| n.client.clone()).collect()
    }

    /// The command that runs node `id` (on its own data dir unless changed).
    pub fn command(&self, id: u64) -> Command {
        let n = &self.nodes[&id];
        let mut cmd = Command::new(bin());
        cmd.arg("node")
            .arg("--id")
            .arg(id.to_string())
            .arg("--cluster")
            .arg(self.node_files.get(&id).unwrap_or(&self.cluster_file))
            .arg("--data-dir")
            .arg(&n.data_dir)
            .arg("--tick-ms")
            .arg(TICK_MS.to_string())
            .args(&self.node_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        cmd
    }

    /// Starts (or restarts) node `id`, its stderr appended to its log file.
    pub fn spawn(&mut self, id: u64) {
        assert!(
            !self.children.contains_key(&id),
            "node {id} is already running"
        );
        let log = open_append(&self.nodes[&id].log);
        let child = self
            .command(id)
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn raftkv node");
        self.children.insert(id, child);
    }

    pub fn pid(&self, id: u64) -> u32 {
        self.children[&id].id()
    }

    pub fn is_running(&mut self, id: u64) -> bool {
        match self.children.get_mut(&id) {
            Some(c) => c.try_wait().expect("try_wait").is_none(),
            None => false,
        }
    }

    /// SIGKILLs node `id` and reaps it.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut c) = self.children.remove(&id) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGKILLs all running nodes as close together as possible, then reaps them.
    pub fn kill_all(&mut self) {
        for c in self.children.values_mut() {
            let _ = c.kill();
        }
        for (_, mut c) in std::mem::take(&mut self.children) {
            let _ = c.wait();
        }
    }

    /// Sends a signal by name (`STOP`, `CONT`, `INT`, `TERM`) to node `id`.
    pub fn signal(&self, id: u64, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid(id).to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} n{id} failed");
    }

    /// Waits for node `id` to exit on its own and reaps it.
    pub fn wait_exit(&mut self, id: u64, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            let c = self.children.get_mut(&id).expect("node is running");
            if let Some(status) = c.try_wait().expect("try_wait") {
                self.children.remove(&id);
                return status;
            }
            if Instant::now() > deadline {
                panic!(
                    "n{id} did not exit within {timeout:?}\n{}",
                    self.logs_tail()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The last lines of every node's log, for failure messages.
    pub fn logs_tail(&self) -> String {
        let mut out = String::new();
        for n in self.nodes.values() {
            let text = fs::read_to_string(&n.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(40);
            out.push_str(&format!(
                "----- n{} log (last {} lines) -----\n",
                n.id,
                lines.len() - from
            ));
            for l in &lines[from..] {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    pub fn log_text(&self, id: u64) -> String {
        fs::read_to_string(&self.nodes[&id].log).unwrap_or_default()
    }

    /// `status` of node `id`, or `None` if it does not answer promptly.
    pub fn status(&self, id: u64) -> Option<Value> {
        let mut c = Conn::connect(self.addr(id), Duration::from_millis(500)).ok()?;
        let v = c.call(&json!({"op": "status"})).ok()?;
        (v["ok"] == true).then_some(v)
    }

    /// Waits until every node in `among` answers `status`, all name the same leader
    /// (one of `among`) and term, and the leader says it is leader. Returns
    /// (leader id, term).
    pub fn wait_for_leader(&self, among: &[u64], timeout: Duration) -> (u64, u64) {
        let deadline = Instant::now() + timeout;
        loop {
            let last: Vec<(u64, Option<Value>)> =
                among.iter().map(|&id| (id, self.status(id))).collect();
            if let Some(found) = agreed_leader(&last, among) {
                return found;
            }
            if Instant::now() > deadline {
                let seen: Vec<String> = last
                    .iter()
                    .map(|(id, s)| match s {
                        Some(s) => format!(
                            "n{id}: role={} term={} leader={}",
                            s["role"], s["term"], s["leader"]
                        ),
                        None => format!("n{id}: no answer"),
                    })
                    .collect();
                panic!(
                    "no agreed leader among {among:?} within {timeout:?}; last seen: {}\n{}",
                    seen.join(", "),
                    self.logs_tail()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Polls `cond` until it holds; panics with `what` and the logs on timeout.
    pub fn wait_until(&self, what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !cond() {
            if Instant::now() > deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {what}\n{}",
                    self.logs_tail()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in self.children.values_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if thread::panicking() {
            eprintln!("{}", self.logs_tail());
        }
        if std::env::var_os("RAFTKV_KEEP_TEST_DIRS").is_some() {
            let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir"));
            eprintln!("keeping {}", dir.keep().display());
        }
    }
}

fn agreed_leader(seen: &[(u64, Option<Value>)], among: &[u64]) -> Option<(u64, u64)> {
    let mut agreed: Option<(u64, u64)> = None;
    for (_, s) in seen {
        let s = s.as_ref()?;
        let leader = s["leader"].as_u64()?;
        let term = s["term"].as_u64()?;
        match agreed {
            None => agreed = Some((leader, term)),
            Some(a) if a != (leader, term) => return None,
            Some(_) => {}
        }
    }
    let (leader, _) = agreed?;
    let (_, ls) = seen.iter().find(|(id, _)| *id == leader)?;
    (among.contains(&leader) && ls.as_ref()?["role"] == "leader").then_some(agreed?)
}

fn open_append(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open log file")
}

/// `n` distinct free TCP ports on 127.0.0.1 (all bound at once, then released).
///
/// They are taken from below the kernel's ephemeral range, so that no outgoing
/// connection (of this test or another one running at the same time) can be given
/// one of them between our check and the node's bind.
pub fn free_ports(n: usize) -> Vec<u16> {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let ephemeral_low: u32 = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u32, ephemeral_low.max(12_000));
    let span = high - low;
    // Different test processes start at different places; threads of one process
    // never reuse a candidate.
    let start = (std::process::id() * 7919) % span;
    let mut held = Vec::new();
    while held.len() < n {
        let i = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(i < span, "ran out of candidate ports");
        let port = low + (start + i) % span;
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port as u16)) {
            held.push(l);
        }
    }
    held.iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// The number in environment variable `name` (seeds, threads of a soak), else `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `bytes` random bytes as lowercase hex.
pub fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut b = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A raw protocol connection: JSON lines out, JSON lines in, with timeouts.
pub struct Conn {
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Conn {
    pub fn connect(addr: &str, timeout: Duration) -> io::Result<Conn> {
        let sa = addr.to_socket_addrs()?.next().expect("address");
        let stream = TcpStream::connect_timeout(&sa, timeout)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout.max(Duration::from_secs(5))))?;
        stream.set_write_timeout(Some(Duration::from_secs(10)))?;
        let reader = BufReader::new(stream.try_clone()?);
        Ok(Conn { stream, reader })
    }

    pub fn set_timeout(&self, timeout: Duration) {
        self.stream.set_read_timeout(Some(timeout)).unwrap();
    }

    pub fn send(&mut self, v: &Value) -> io::Result<()> {
        let mut line = serde_json::to_vec(v).unwrap();
        line.push(b'\n');
        self.stream.write_all(&line)
    }

    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads one response line. `Ok(None)`: the server closed the connection.
    pub fn recv_opt(&mut self) -> io::Result<Option<Value>> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        serde_json::from_str(&line)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{e}: {line:?}")))
    }

    pub fn recv(&mut self) -> io::Result<Value> {
        self.recv_opt()?
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed"))
    }

    pub fn call(&mut self, v: &Value) -> io::Result<Value> {
        self.send(v)?;
        self.recv()
    }
}

/// One request to `addr` on a fresh connection.
pub fn call(addr: &str, v: &Value) -> io::Result<Value> {
    Conn::connect(addr, Duration::from_secs(2))?.call(v)
}

/// Nanoseconds since the first call, shared by all threads of a test process.
pub fn now_ns() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// The outcome of a retried request.
#[derive(Debug)]
pub enum Answer {
    /// `{"ok":true,...}`
    Ok(Value),
    /// A definitive refusal (`bad_request`).
    Refused(Value),
    /// Still no definitive answer when the client gave up; the outcome is unknown.
    Unknown(String),
}

/// A client that retries until it gets a definitive answer, following leader hints,
/// with its own `client` name and increasing `seq` for writes. Every request that may
/// have taken effect is recorded in `history`, in the checker's terms.
pub struct RetryClient {
    pub id: u64,
    pub name: String,
    seq: u64,
    addrs: Vec<String>,
    next: usize,
    target: Option<String>,
    conn: Option<(String, Conn)>,
    /// Per attempt: how long to wait for an answer before trying elsewhere.
    pub attempt_timeout: Duration,
    /// Its operations, as the linearizability checker takes them: invoke and complete
    /// times in [`now_ns`]; a refused request is left out (it did not happen).
    pub history: Vec<Operation>,
    /// Raised by the test to make the client stop retrying (the op becomes unknown).
    pub stop: Arc<AtomicBool>,
}

/// Makes every client name unique within a test process (a reused name with a reset
/// seq would be answered from the session table instead of being applied).
static NEXT_CLIENT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl RetryClient {
    pub fn new(id: u64, addrs: Vec<String>) -> RetryClient {
        RetryClient {
            id,
            name: format!("c{id}-{}", NEXT_CLIENT.fetch_add(1, Ordering::Relaxed)),
            seq: 0,
            next: id as usize % addrs.len(),
            addrs,
            target: None,
            conn: None,
            attempt_timeout: Duration::from_secs(2),
            history: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
        }
    }

    /// A write with a fresh seq, retried with the same seq until ok, refused, the
    /// deadline passes or `stop` is raised.
    pub fn write(&mut self, key: &str, op: KvOp, deadline: Instant) -> Answer {
        self.seq += 1;
        let mut req = json!({"key": key, "client": self.name, "seq": self.seq});
        match &op {
            KvOp::Put(v) => {
                req["op"] = json!("put");
                req["value"] = json!(v);
            }
            KvOp::Append(v) => {
                req["op"] = json!("append");
                req["value"] = json!(v);
            }
            KvOp::Delete => req["op"] = json!("delete"),
            KvOp::Get => unreachable!("use get"),
        }
        self.recorded(key, op, &req, deadline)
    }

    /// A linearizable get, retried until answered.
    pub fn get(&mut self, key: &str, deadline: Instant) -> Answer {
        let req = json!({"op": "get", "key": key});
        self.recorded(key, KvOp::Get, &req, deadline)
    }

    fn recorded(&mut self, key: &str, op: KvOp, req: &Value, deadline: Instant) -> Answer {
        let invoke = now_ns();
        let answer = self.call(req, deadline);
        let complete = matches!(answer, Answer::Ok(_)).then(now_ns);
        let read = match (&op, &answer) {
            (KvOp::Get, Answer::Ok(v)) => v["value"].as_str().map(str::to_string),
            _ => None,
        };
        // A refused request (bad_request) did not happen: leave it out.
        if !matches!(answer, Answer::Refused(_)) {
            self.history.push(Operation {
                client: self.id,
                key: key.to_string(),
                op,
                invoke,
                complete,
                read,
            });
        }
        answer
    }

    /// Sends `req` until a definitive answer.
    pub fn call(&mut self, req: &Value, deadline: Instant) -> Answer {
        let mut last = String::from("no attempt made");
        loop {
            if Instant::now() > deadline || self.stop.load(Ordering::Relaxed) {
                return Answer::Unknown(last);
            }
            match self.attempt(req) {
                Ok(v) if v["ok"] == true => return Answer::Ok(v),
                Ok(v) => {
                    let code = v["error"].as_str().unwrap_or("?").to_string();
                    match code.as_str() {
                        "bad_request" => return Answer::Refused(v),
                        "not_leader" => match v["leader_addr"].as_str() {
                            Some(a) => self.target = Some(a.to_string()),
                            None => self.rotate(),
                        },
                        "unavailable" | "timeout" => {
                            if let Some(a) = v["leader_addr"].as_str() {
                                self.target = Some(a.to_string());
                            } else {
                                self.rotate();
                            }
                            thread::sleep(Duration::from_millis(20)); // retry pacing
                        }
                        _ => panic!("unexpected response {v}"),
                    }
                    last = v.to_string();
                }
                Err(e) => {
                    last = format!("{e}");
                    self.conn = None;
                    self.rotate();
                    thread::sleep(Duration::from_millis(20)); // retry pacing
                }
            }
        }
    }

    fn rotate(&mut self) {
        self.target = None;
        self.next = (self.next + 1) % self.addrs.len();
    }

    fn attempt(&mut self, req: &Value) -> io::Result<Value> {
        let addr = self
            .target
            .clone()
            .unwrap_or_else(|| self.addrs[self.next].clone());
        if self.conn.as_ref().map(|(a, _)| a != &addr).unwrap_or(true) {
            let conn = Conn::connect(&addr, Duration::from_millis(500))?;
            self.conn = Some((addr, conn));
        }
        let (_, conn) = self.conn.as_mut().unwrap();
        conn.set_timeout(self.attempt_timeout);
        let result = conn.call(req);
        if result.is_err() {
            self.conn = None;
        }
        result
    }
}

/// Runs `clients` threads, each appending unique tokens `c<id>.<n>;` to `key` (and
/// reading it every few ops) until `stop` is raised. Returns the handles; each yields
/// its client's history.
pub fn spawn_appenders(
    clients: u64,
    addrs: &[String],
    key: &str,
    stop: &Arc<AtomicBool>,
    acked: &Arc<Mutex<Vec<String>>>,
) -> Vec<thread::JoinHandle<Vec<Operation>>> {
    (1..=clients)
        .map(|id| {
            let addrs = addrs.to_vec();
            let key = key.to_string();
            let stop = Arc::clone(stop);
            let acked = Arc::clone(acked);
            thread::spawn(move || {
                let mut c = RetryClient::new(id, addrs);
                c.stop = Arc::clone(&stop);
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let deadline = Instant::now() + Duration::from_secs(20);
                    if n.is_multiple_of(4) {
                        c.get(&key, deadline);
                        continue;
                    }
                    let token = format!("c{id}.{n};");
                    if let Answer::Ok(_) = c.write(&key, KvOp::Append(token.clone()), deadline) {
                        acked.lock().unwrap().push(token);
                    }
                }
                c.history
            })
        })
        .collect()
}

/// Checks that every acknowledged token appears exactly once in `value`, and that no
/// token appears twice.
pub fn check_tokens(value: &str, acked: &[String]) {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for t in value.split_terminator(';') {
        *counts.entry(t).or_default() += 1;
    }
    for (t, n) in &counts {
        assert_eq!(*n, 1, "token {t} applied {n} times");
    }
    for t in acked {
        let t = t.trim_end_matches(';');
        assert!(
            counts.contains_key(t),
            "acknowledged append {t} is missing from the final value"
        );
    }
}

/// Feeds a recorded history to the linearizability checker (`raftkv::check`);
/// panics with its explanation if the history has no linearization.
pub fn assert_linearizable(history: &[Operation]) {
    if let Err(v) = raftkv::check::check(history) {
        panic!("{v}");
    }
}

/// A linearizable read through a retrying client, panicking if it cannot be done.
pub fn read_key(addrs: &[String], key: &str, timeout: Duration) -> Option<String> {
    let mut c = RetryClient::new(99, addrs.to_vec());
    match c.get(key, Instant::now() + timeout) {
        Answer::Ok(v) => v["value"].as_str().map(str::to_string),
        other => panic!("reading {key} failed: {other:?}"),
    }
}

/// Files of the write-ahead log of a data directory, sorted (the last one is written).
pub fn segments(data_dir: &Path) -> Vec<PathBuf> {
    let mut segs: Vec<PathBuf> = fs::read_dir(data_dir.join("wal"))
        .expect("wal dir")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segs.sort();
    segs
}

/// Byte offsets of the records in a segment (`[len u32][crc u32][payload]` framing).
pub fn record_offsets(bytes: &[u8]) -> Vec<usize> {
    let mut offsets = Vec::new();
    let mut at = 0;
    while at + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if len == 0 || at + 8 + len > bytes.len() {
            break;
        }
        offsets.push(at);
        at += 8 + len;
    }
    offsets
}
