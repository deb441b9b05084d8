//! `raftkv bench`: closed-loop load against the leader, with a latency report.
//!
//! Each of `--clients` threads opens its own connection to the leader and loops: send
//! `--pipeline` K requests (each op drawn from `--mix`, each key uniformly from
//! `--keys`), then read the K responses in order, timing each from the moment its
//! request was written to the moment its response was read. The run stops when `--ops`
//! operations have been sent or `--duration` has passed (or on Ctrl-C).
//!
//! To keep overhead low, the bench speaks the protocol directly rather than through
//! [`Client`]: there are no retries, and every error response or lost connection is
//! counted (by error code) instead of retried. Writes carry `client`/`seq`; each of
//! the K in-flight slots of a connection has its own client name, so no client ever
//! has more than one write outstanding. A write that failed is not retried: the slot
//! moves on to its next seq. (These are named sessions, docs/protocol.md §3.6: they
//! expire after the cluster's session timeout like any other, and since a slot never
//! retries, the limits of that form do not matter here; registering a session per slot
//! would only cost a round trip per slot at the start.)
//!
//! The leader is found through the nodes' status first. On `not_leader` with a hint
//! the thread reconnects to the hinted node; on a lost connection it looks for the
//! leader again (one thread searches, the others wait for its answer). With
//! `--token-file`, every connection starts with `auth`; a refused token stops the
//! thread (the leader search before the run has already checked it).
//!
//! With `--http`, the same load goes over the HTTP API instead (`bench/http.rs`).
//!
//! With `--check`, every thread also records what it did as the linearizability
//! checker's [`Operation`]s, timed in nanoseconds since the run started, and after the run
//! the whole history goes through [`check::check`]. An operation answered `ok` completed;
//! a write that got no definite answer (lost connection, `timeout`, an answer the bench
//! cannot read) keeps an unknown outcome, since it may still take effect; one refused
//! with `not_leader`, `unavailable`, `bad_request` or `session_expired` did not happen
//! and is left out, as is a read without an answer, which changed nothing. For the
//! check to mean something the run needs keys that start absent and values that tell
//! writes apart, so it uses keys of its own, named after the run, and every put or
//! append writes a value no other operation writes. Stale reads are not recorded: they may lawfully be out of date.
//! Without `--check` nothing is recorded.

use std::{
    borrow::Cow,
    collections::BTreeMap,
    fmt::Write as _,
    io::{self, BufReader, BufWriter, Write},
    net::{TcpStream, ToSocketAddrs},
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use parking_lot::Mutex;
use rand::{distributions::Alphanumeric, rngs::StdRng, Rng, SeedableRng};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    fail, histogram::Histogram, make_client, BenchArgs, EXIT_NOT_LINEARIZABLE, EXIT_OK, EXIT_USAGE,
};
pub use http::HttpTarget;

use crate::{
    check::{self, KvOp, Operation, Violation},
    client::{Client, ClientError, ClientOptions},
    codec::{self, Line},
    protocol::ErrorCode,
};

mod http;

/// Default total operations when neither `--ops` nor `--duration` is given.
pub const DEFAULT_OPS: u64 = 10_000;

/// Longest response line the bench reads.
const MAX_RESPONSE_LINE: usize = 64 * 1024 * 1024;

/// A thread that cannot reach any leader for this long gives up.
const GIVE_UP_AFTER: Duration = Duration::from_secs(15);

/// One kind of operation the bench issues.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BenchOp {
    Put,
    Get,
    Append,
    Delete,
    /// `get` with `"consistency":"stale"`.
    StaleGet,
}

impl BenchOp {
    const ALL: [BenchOp; 5] = [
        BenchOp::Put,
        BenchOp::Get,
        BenchOp::Append,
        BenchOp::Delete,
        BenchOp::StaleGet,
    ];

    /// Its name in `--mix` and in reports.
    pub fn name(self) -> &'static str {
        match self {
            BenchOp::Put => "put",
            BenchOp::Get => "get",
            BenchOp::Append => "append",
            BenchOp::Delete => "delete",
            BenchOp::StaleGet => "stale_get",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A weighted choice of operations, parsed from `put=80,get=20,append=0`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mix {
    /// (kind, weight) with weight > 0, in the order given.
    weights: Vec<(BenchOp, u32)>,
    total: u32,
}

impl Mix {
    /// Parses `name=weight,...`. Names: put, get, append, delete, stale_get; weights are
    /// non-negative integers; a name may appear once; the weights must not all be 0.
    pub fn parse(text: &str) -> Result<Mix, String> {
        let mut weights = Vec::new();
        let mut seen = Vec::new();
        let mut total: u32 = 0;
        for item in text.split(',').map(str::trim) {
            if item.is_empty() {
                return Err(format!("--mix {text:?}: empty item"));
            }
            let (name, weight) = item
                .split_once('=')
                .ok_or_else(|| format!("--mix: {item:?} is not NAME=WEIGHT"))?;
            let kind = BenchOp::ALL
                .into_iter()
                .find(|k| k.name() == name.trim())
                .ok_or_else(|| {
                    format!(
                        "--mix: unknown operation {:?} (put, get, append, delete, stale_get)",
                        name.trim()
                    )
                })?;
            let weight: u32 = weight.trim().parse().map_err(|_| {
                format!(
                    "--mix: weight of {} must be a non-negative integer",
                    kind.name()
                )
            })?;
            if seen.contains(&kind) {
                return Err(format!("--mix: {} appears twice", kind.name()));
            }
            seen.push(kind);
            total = total
                .checked_add(weight)
                .ok_or("--mix: weights are too large")?;
            if weight > 0 {
                weights.push((kind, weight));
            }
        }
        if total == 0 {
            return Err("--mix: at least one weight must be positive".into());
        }
        Ok(Mix { weights, total })
    }

    /// The operation for a uniform draw `r` in `0..total`.
    fn pick_at(&self, mut r: u32) -> BenchOp {
        for &(kind, weight) in &self.weights {
            if r < weight {
                return kind;
            }
            r -= weight;
        }
        self.weights.last().expect("a mix has a positive weight").0
    }

    /// A random operation, with probability proportional to its weight.
    pub fn pick(&self, rng: &mut impl Rng) -> BenchOp {
        self.pick_at(rng.gen_range(0..self.total))
    }
}

/// A validated bench configuration.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// Threads, each with its own connection.
    pub clients: usize,
    /// Total operations to send; `None` means until the duration passes.
    pub ops: Option<u64>,
    /// How long to run; `None` means until `ops` are sent.
    pub duration: Option<Duration>,
    /// Bytes per written value.
    pub value_size: usize,
    /// Distinct keys, picked uniformly.
    pub keys: u64,
    /// The operations to issue, by weight.
    pub mix: Mix,
    /// Requests in flight per connection.
    pub pipeline: usize,
    /// Record the history and check it for linearizability after the run (`--check`).
    pub check: bool,
    /// With `--http`: speak the HTTP API, at these addresses, instead of the client
    /// protocol.
    pub http: Option<HttpTarget>,
}

impl BenchConfig {
    /// Checks the flags and fills in defaults.
    pub fn from_args(args: &BenchArgs) -> Result<BenchConfig, String> {
        let duration = match args.duration {
            Some(d) if !(d.is_finite() && d > 0.0) => {
                return Err(format!(
                    "--duration must be a positive number of seconds, not {d}"
                ))
            }
            Some(d) => Some(Duration::from_secs_f64(d)),
            None => None,
        };
        let ops = match (args.ops, duration) {
            (Some(0), _) => return Err("--ops must be positive".into()),
            (Some(n), _) => Some(n),
            (None, Some(_)) => None,
            (None, None) => Some(DEFAULT_OPS),
        };
        if args.value_size > crate::kv::MAX_VALUE_BYTES {
            return Err(format!(
                "--value-size is over the limit of {} bytes",
                crate::kv::MAX_VALUE_BYTES
            ));
        }
        Ok(BenchConfig {
            clients: args.clients as usize,
            ops,
            duration,
            value_size: args.value_size,
            keys: args.keys,
            mix: Mix::parse(&args.mix)?,
            pipeline: args.pipeline as usize,
            check: args.check,
            http: None,
        })
    }
}

/// Counts of one operation kind.
#[derive(Clone, Debug, Default)]
pub struct OpStats {
    /// Latency of successful operations, in microseconds.
    pub latency_us: Histogram,
    /// Failed operations, by error code (`not_leader`, `timeout`, …, or `connection`
    /// for a connection lost before the response).
    pub errors: BTreeMap<String, u64>,
}

impl OpStats {
    fn merge(&mut self, other: &OpStats) {
        self.latency_us.merge(&other.latency_us);
        for (code, n) in &other.errors {
            *self.errors.entry(code.clone()).or_default() += n;
        }
    }

    fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// What the linearizability checker made of a run's history (`--check`).
#[derive(Clone, Debug)]
pub struct HistoryCheck {
    /// Operations checked: those that completed, and writes whose outcome is unknown.
    pub operations: usize,
    /// Of those, the writes whose outcome is unknown.
    pub unknown_outcome: usize,
    /// How long the check took.
    pub elapsed: Duration,
    /// `Err` if the history is not linearizable, or the checker gave up on it.
    pub verdict: Result<(), Violation>,
}

impl HistoryCheck {
    /// Checks `history`.
    fn of(history: &[Operation]) -> HistoryCheck {
        let start = Instant::now();
        let verdict = check::check(history);
        HistoryCheck {
            operations: history.len(),
            unknown_outcome: history.iter().filter(|op| op.complete.is_none()).count(),
            elapsed: start.elapsed(),
            verdict,
        }
    }
}

/// The outcome of a run.
#[derive(Clone, Debug)]
pub struct BenchReport {
    /// The configuration it ran with.
    pub config: BenchConfig,
    /// From the first request to the last response.
    pub elapsed: Duration,
    /// Per operation kind that was issued.
    pub by_op: BTreeMap<BenchOp, OpStats>,
    /// With `--check`: the verdict on the recorded history.
    pub check: Option<HistoryCheck>,
}

impl BenchReport {
    fn all(&self) -> OpStats {
        let mut all = OpStats::default();
        self.by_op.values().for_each(|s| all.merge(s));
        all
    }

    fn rate(&self, n: u64) -> f64 {
        n as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The human-readable report.
    pub fn to_text(&self) -> String {
        let c = &self.config;
        let all = self.all();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} ok ops in {:.2} s: {:.0} ops/s ({} clients, pipeline {}, {}-byte values, {} keys{})",
            all.latency_us.count(),
            self.elapsed.as_secs_f64(),
            self.rate(all.latency_us.count()),
            c.clients,
            c.pipeline,
            c.value_size,
            c.keys,
            if c.http.is_some() { ", over HTTP" } else { "" }
        );
        let _ = writeln!(
            out,
            "{:<10} {:>9} {:>7} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8}",
            "op", "ok", "errors", "ops/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"
        );
        let mut rows: Vec<(&str, &OpStats)> =
            self.by_op.iter().map(|(k, s)| (k.name(), s)).collect();
        if rows.len() > 1 {
            rows.push(("all", &all));
        }
        for (name, s) in rows {
            let h = &s.latency_us;
            let ms = |us: u64| us as f64 / 1000.0;
            let _ = writeln!(
                out,
                "{:<10} {:>9} {:>7} {:>10.0} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3}",
                name,
                h.count(),
                s.error_count(),
                self.rate(h.count()),
                ms(h.percentile(50.0)),
                ms(h.percentile(90.0)),
                ms(h.percentile(99.0)),
                ms(h.percentile(99.9)),
                ms(h.max())
            );
        }
        if !all.errors.is_empty() {
            let list: Vec<String> = all
                .errors
                .iter()
                .map(|(code, n)| format!("{code}={n}"))
                .collect();
            let _ = writeln!(out, "errors: {}", list.join(" "));
        }
        if let Some(check) = &self.check {
            let what = format!(
                "{} operations ({} with outcome unknown)",
                check.operations, check.unknown_outcome
            );
            let took = check.elapsed.as_secs_f64();
            let _ = match &check.verdict {
                Ok(()) => writeln!(
                    out,
                    "check: {what} are linearizable (checked in {took:.2} s)"
                ),
                Err(violation) => writeln!(
                    out,
                    "check: FAILED for {what} (checked in {took:.2} s)\n{violation}"
                ),
            };
        }
        out
    }

    /// The machine-readable report: one JSON object.
    pub fn to_json(&self) -> Value {
        let stats = |s: &OpStats| {
            let h = &s.latency_us;
            let ms = |us: u64| us as f64 / 1000.0;
            json!({
                "ok": h.count(),
                "errors": s.errors,
                "ops_per_sec": self.rate(h.count()),
                "latency_ms": {
                    "p50": ms(h.percentile(50.0)),
                    "p90": ms(h.percentile(90.0)),
                    "p99": ms(h.percentile(99.0)),
                    "p99.9": ms(h.percentile(99.9)),
                    "max": ms(h.max()),
                    "mean": h.mean() / 1000.0,
                },
            })
        };
        let by_op: serde_json::Map<String, Value> = self
            .by_op
            .iter()
            .map(|(k, s)| (k.name().to_string(), stats(s)))
            .collect();
        let c = &self.config;
        let mut report = json!({
            "clients": c.clients,
            "pipeline": c.pipeline,
            "value_size": c.value_size,
            "keys": c.keys,
            "protocol": if c.http.is_some() { "http" } else { "client" },
            "elapsed_sec": self.elapsed.as_secs_f64(),
            "total": stats(&self.all()),
            "ops": by_op,
        });
        if let Some(check) = &self.check {
            let mut verdict = json!({
                "operations": check.operations,
                "unknown_outcome": check.unknown_outcome,
                "check_sec": check.elapsed.as_secs_f64(),
                "passed": check.verdict.is_ok(),
            });
            if let Err(violation) = &check.verdict {
                verdict["key"] = json!(violation.key);
                verdict["explanation"] = json!(violation.message);
            }
            report["check"] = verdict;
        }
        report
    }
}

/// State shared by the worker threads.
struct Shared {
    config: BenchConfig,
    /// Addresses of all nodes, for finding the leader again.
    addrs: Vec<String>,
    /// Options for leader searches.
    search: ClientOptions,
    /// The leader's address and a generation number bumped on every change.
    leader: Mutex<(String, u64)>,
    /// Operations handed out so far.
    claimed: AtomicU64,
    /// Responses (ok or not) read so far; for progress.
    completed: AtomicU64,
    errors: AtomicU64,
    stop: Arc<AtomicBool>,
    start: Instant,
    /// A random tag making this run's client names unique.
    run_tag: u32,
    /// Put before every key: empty, or with `--check` `b-<run tag>-`, so that the run's
    /// keys are absent when it starts, as the checker assumes.
    key_prefix: String,
}

impl Shared {
    fn should_stop(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
            || self
                .config
                .duration
                .is_some_and(|d| self.start.elapsed() >= d)
    }

    /// Claims up to `want` operations; 0 when the run is over.
    fn claim(&self, want: u64) -> u64 {
        if self.should_stop() {
            return 0;
        }
        let Some(limit) = self.config.ops else {
            return want;
        };
        let first = self.claimed.fetch_add(want, Ordering::Relaxed);
        limit.saturating_sub(first).min(want)
    }

    fn current_leader(&self) -> (String, u64) {
        self.leader.lock().clone()
    }

    /// Switches to `addr` unless someone already changed the leader since `seen`.
    fn hint_leader(&self, addr: String, seen: u64) {
        let mut leader = self.leader.lock();
        if leader.1 == seen {
            *leader = (addr, seen + 1);
        }
    }

    /// Looks for the leader again, unless someone already did since `seen`.
    fn search_leader(&self, seen: u64) -> (String, u64) {
        let mut leader = self.leader.lock();
        if leader.1 == seen {
            let mut client = Client::new(self.addrs.clone(), self.search.clone());
            match client.find_leader() {
                Ok(addr) => *leader = (addr, seen + 1),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        leader.clone()
    }
}

/// The fields of a response the bench looks at.
#[derive(Deserialize)]
struct Reply<'a> {
    /// Success.
    ok: bool,
    /// The error code of a failure.
    #[serde(default)]
    error: Option<String>,
    /// Where the leader is, with `not_leader`.
    #[serde(default)]
    leader_addr: Option<String>,
    /// What a get read (`None`: absent); borrowed from the line unless it has escapes,
    /// so reading it costs nothing when the history is not recorded.
    #[serde(default, borrow)]
    value: Option<Cow<'a, str>>,
}

/// Whether an error answer leaves a write's outcome open. `not_leader`, `unavailable`
/// and `bad_request` mean it was not applied and never will be; so does
/// `session_expired` here, since the bench sends each write once (the answer is about
/// the only attempt); `timeout` means it may have been, and a code the bench does not
/// know is taken the same way.
fn may_have_applied(code: &str) -> bool {
    ![
        ErrorCode::NotLeader,
        ErrorCode::Unavailable,
        ErrorCode::BadRequest,
        ErrorCode::SessionExpired,
    ]
    .iter()
    .any(|refusal| refusal.as_str() == code)
}

/// One worker's connection.
struct Conn<'a> {
    reader: BufReader<TcpStream>,
    writer: BufWriter<TcpStream>,
    /// With `--http`: requests and answers are HTTP messages.
    http: Option<&'a HttpTarget>,
}

impl<'a> Conn<'a> {
    /// Connects to the node at client address `addr` (to its HTTP address with
    /// `--http`) and, with a token, authenticates. A refused token is a
    /// `PermissionDenied` error.
    fn open(addr: &str, shared: &'a Shared) -> io::Result<Conn<'a>> {
        let http = shared.config.http.as_ref();
        let addr = match http {
            Some(http) => http.addr_of(addr)?,
            None => addr,
        };
        let target = addr.to_socket_addrs()?.next().ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "address resolved to nothing")
        })?;
        let stream = TcpStream::connect_timeout(&target, Duration::from_secs(1))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.set_write_timeout(Some(Duration::from_secs(10)))?;
        let mut conn = Conn {
            reader: BufReader::with_capacity(256 * 1024, stream.try_clone()?),
            writer: BufWriter::with_capacity(256 * 1024, stream),
            http,
        };
        // Over HTTP the token goes with every request instead.
        if let Some(token) = shared.search.token.as_ref().filter(|_| http.is_none()) {
            codec::write_json_line(
                &mut conn.writer,
                &json!({"op": "auth", "token": token.as_str()}),
            )?;
            conn.writer.flush()?;
            let mut line = Vec::new();
            if codec::read_line(&mut conn.reader, &mut line, MAX_RESPONSE_LINE)? != Line::Complete {
                return Err(io::Error::other("the connection closed during auth"));
            }
            let answer: Value = serde_json::from_slice(&line).unwrap_or(Value::Null);
            if answer.get("ok") != Some(&Value::Bool(true)) {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!(
                        "{addr} refused the token: {}",
                        String::from_utf8_lossy(&line)
                    ),
                ));
            }
        }
        Ok(conn)
    }

    /// Sends the operation whose client-protocol request is `request`, on `key`.
    fn send(&mut self, kind: BenchOp, key: &str, request: &str) -> io::Result<()> {
        match self.http {
            Some(http) => http.write_request(&mut self.writer, kind, key, request),
            None => {
                self.writer.write_all(request.as_bytes())?;
                self.writer.write_all(b"\n")
            }
        }
    }

    /// Reads the next answer (its JSON object) into `buf`; false if none came.
    fn recv(&mut self, buf: &mut Vec<u8>) -> bool {
        match self.http {
            Some(_) => matches!(http::read_response(&mut self.reader, buf), Ok(true)),
            None => matches!(
                codec::read_line(&mut self.reader, buf, MAX_RESPONSE_LINE),
                Ok(Line::Complete)
            ),
        }
    }
}

/// One pipelined request position of a connection: its own client name and seq counter.
struct PipelineSession {
    /// The session's client name, unique to the run.
    client: String,
    /// The seq of its next write.
    next_seq: u64,
    /// Its number among all sessions of the run: the `client` of its recorded operations.
    id: u64,
}

/// A request written and not answered yet.
struct Sent {
    /// What it is, for the stats.
    kind: BenchOp,
    /// When it was written, for its latency.
    at: Instant,
    /// With `--check`: the operation as the history will record it, once its outcome is
    /// known; `None` without `--check` and for a stale read.
    operation: Option<Operation>,
}

/// With `--check`: one thread's record of what it did, in the checker's terms.
struct Recorder {
    /// Times are nanoseconds since this instant, the run's start, shared by all threads.
    start: Instant,
    /// The thread's number, part of every value it writes.
    thread: usize,
    /// Values written so far, numbering the next one.
    written: u64,
    /// The operations that may have taken effect: completed ones, and writes whose
    /// outcome is unknown.
    history: Vec<Operation>,
}

impl Recorder {
    /// Nanoseconds since the run started.
    fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// A value no other operation of the run writes: `filler` with its start replaced by
    /// `<thread>.<counter>-`, as long as `filler`, or as the mark if that is longer. The
    /// filler is alphanumeric, so the mark reads back unambiguously; it goes first so
    /// that values differ within the part the checker's explanations show.
    fn unique_value(&mut self, filler: &str) -> String {
        self.written += 1;
        let mark = format!("{}.{}-", self.thread, self.written);
        let keep = filler.len().saturating_sub(mark.len());
        format!("{mark}{}", &filler[..keep])
    }

    /// The operation a request of `kind` on `key` from session `client` starts, invoked
    /// now and not answered yet; puts and appends get a value of their own, made from
    /// `filler`. `None` for a stale read, which is not checked.
    fn invoke(
        &mut self,
        kind: BenchOp,
        client: u64,
        key: String,
        filler: &str,
    ) -> Option<Operation> {
        let op = match kind {
            BenchOp::Get => KvOp::Get,
            BenchOp::Put => KvOp::Put(self.unique_value(filler)),
            BenchOp::Append => KvOp::Append(self.unique_value(filler)),
            BenchOp::Delete => KvOp::Delete,
            BenchOp::StaleGet => return None,
        };
        Some(Operation {
            client,
            key,
            op,
            invoke: self.now(),
            complete: None,
            read: None,
        })
    }

    /// Records `operation` as answered `ok` now; `read` is what a get returned.
    fn answered(&mut self, mut operation: Operation, read: Option<String>) {
        operation.complete = Some(self.now());
        operation.read = read;
        self.history.push(operation);
    }

    /// Records `operation` as left without a definite answer: a write may still take
    /// effect, so it stays with its outcome unknown; a read changed nothing and is left
    /// out.
    fn unanswered(&mut self, operation: Operation) {
        if operation.op != KvOp::Get {
            self.history.push(operation);
        }
    }
}

/// One bench thread: its stats by operation kind and, with `--check`, its history.
fn worker(shared: &Shared, number: usize) -> (BTreeMap<BenchOp, OpStats>, Vec<Operation>) {
    let config = &shared.config;
    let mut rng = StdRng::from_entropy();
    let value: String = (&mut rng)
        .sample_iter(Alphanumeric)
        .take(config.value_size)
        .map(char::from)
        .collect();
    let mut slots: Vec<PipelineSession> = (0..config.pipeline)
        .map(|s| PipelineSession {
            client: format!("b-{:08x}-{number}-{s}", shared.run_tag),
            next_seq: 1,
            id: (number * config.pipeline + s) as u64,
        })
        .collect();
    let mut recorder = config.check.then(|| Recorder {
        start: shared.start,
        thread: number,
        written: 0,
        history: Vec::new(),
    });
    let prefix = &shared.key_prefix;
    let mut stats: [OpStats; 5] = Default::default();
    let mut conn: Option<Conn> = None;
    let (mut leader, mut generation) = shared.current_leader();
    let mut line = String::new();
    let mut key_name = String::new();
    let mut buf = Vec::new();
    let mut in_flight: Vec<Sent> = Vec::with_capacity(config.pipeline);
    let mut unreachable_since: Option<Instant> = None;
    loop {
        if conn.is_none() {
            if shared.should_stop() {
                break;
            }
            match Conn::open(&leader, shared) {
                Ok(c) => {
                    conn = Some(c);
                    unreachable_since = None;
                }
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                    eprintln!("raftkv bench: thread {number}: {e}; giving up");
                    break;
                }
                Err(_) => {
                    let since = *unreachable_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= GIVE_UP_AFTER {
                        eprintln!("raftkv bench: thread {number}: no leader reachable; giving up");
                        break;
                    }
                    (leader, generation) = shared.search_leader(generation);
                    continue;
                }
            }
        }
        let c = conn.as_mut().expect("connected above");
        let n = shared.claim(config.pipeline as u64) as usize;
        if n == 0 {
            break;
        }
        in_flight.clear();
        let mut failed = false;
        for slot in slots.iter_mut().take(n) {
            let kind = config.mix.pick(&mut rng);
            key_name.clear();
            let _ = write!(key_name, "{prefix}key-{}", rng.gen_range(0..config.keys));
            let operation = recorder
                .as_mut()
                .and_then(|recorder| recorder.invoke(kind, slot.id, key_name.clone(), &value));
            let written = match operation.as_ref().map(|o| &o.op) {
                Some(KvOp::Put(v) | KvOp::Append(v)) => v,
                _ => &value,
            };
            line.clear();
            let _ = match kind {
                BenchOp::Get => write!(line, r#"{{"op":"get","key":"{key_name}"}}"#),
                BenchOp::StaleGet => {
                    write!(
                        line,
                        r#"{{"op":"get","key":"{key_name}","consistency":"stale"}}"#
                    )
                }
                BenchOp::Delete => write!(
                    line,
                    r#"{{"op":"delete","key":"{key_name}","client":"{}","seq":{}}}"#,
                    slot.client, slot.next_seq
                ),
                BenchOp::Put | BenchOp::Append => write!(
                    line,
                    r#"{{"op":"{}","key":"{key_name}","value":"{written}","client":"{}","seq":{}}}"#,
                    kind.name(),
                    slot.client,
                    slot.next_seq
                ),
            };
            if !matches!(kind, BenchOp::Get | BenchOp::StaleGet) {
                slot.next_seq += 1;
            }
            in_flight.push(Sent {
                kind,
                at: Instant::now(),
                operation,
            });
            if c.send(kind, &key_name, &line).is_err() {
                failed = true;
                break;
            }
        }
        if !failed && c.writer.flush().is_err() {
            failed = true;
        }
        let mut hint = None;
        let mut answered = 0;
        if !failed {
            for sent in &mut in_flight {
                if !c.recv(&mut buf) {
                    break;
                }
                let elapsed = sent.at.elapsed();
                answered += 1;
                shared.completed.fetch_add(1, Ordering::Relaxed);
                let stat = &mut stats[sent.kind.index()];
                let recording = recorder.as_mut().zip(sent.operation.take());
                match serde_json::from_slice::<Reply>(&buf) {
                    Ok(Reply {
                        ok: true, value, ..
                    }) => {
                        stat.latency_us
                            .record(elapsed.as_micros().try_into().unwrap_or(u64::MAX));
                        if let Some((recorder, operation)) = recording {
                            recorder.answered(operation, value.map(Cow::into_owned));
                        }
                    }
                    Ok(reply) => {
                        let code = reply.error.unwrap_or_else(|| "error".into());
                        if code == "not_leader" {
                            hint = reply.leader_addr.filter(|a| *a != leader).or(hint);
                        }
                        if let Some((recorder, operation)) = recording {
                            if may_have_applied(&code) {
                                recorder.unanswered(operation);
                            }
                        }
                        shared.errors.fetch_add(1, Ordering::Relaxed);
                        *stat.errors.entry(code).or_default() += 1;
                    }
                    Err(_) => {
                        if let Some((recorder, operation)) = recording {
                            recorder.unanswered(operation);
                        }
                        shared.errors.fetch_add(1, Ordering::Relaxed);
                        *stat.errors.entry("malformed_response".into()).or_default() += 1;
                    }
                }
            }
        }
        if answered < in_flight.len() {
            // The connection broke: every unanswered request counts as lost.
            for sent in &mut in_flight[answered..] {
                shared.errors.fetch_add(1, Ordering::Relaxed);
                shared.completed.fetch_add(1, Ordering::Relaxed);
                *stats[sent.kind.index()]
                    .errors
                    .entry("connection".into())
                    .or_default() += 1;
                if let Some((recorder, operation)) = recorder.as_mut().zip(sent.operation.take()) {
                    recorder.unanswered(operation);
                }
            }
            conn = None;
            (leader, generation) = shared.search_leader(generation);
        } else if let Some(addr) = hint {
            conn = None;
            shared.hint_leader(addr, generation);
            (leader, generation) = shared.current_leader();
        }
    }
    let stats = BenchOp::ALL
        .into_iter()
        .zip(stats)
        .filter(|(_, s)| s.latency_us.count() > 0 || !s.errors.is_empty())
        .collect();
    (stats, recorder.map(|r| r.history).unwrap_or_default())
}

/// Runs a bench with `config` against the cluster `client` knows; `stop` ends it early.
/// Progress goes to stderr once a second unless `quiet`. Fails only if no leader is
/// found at the start.
pub fn run_bench(
    client: &mut Client,
    config: BenchConfig,
    stop: Arc<AtomicBool>,
    quiet: bool,
) -> Result<BenchReport, ClientError> {
    let leader = client.find_leader()?;
    let search = ClientOptions {
        deadline: Duration::from_secs(2),
        ..client.options().clone()
    };
    let run_tag: u32 = rand::random();
    let key_prefix = if config.check {
        format!("b-{run_tag:08x}-")
    } else {
        String::new()
    };
    let shared = Shared {
        addrs: client.addrs(),
        search,
        leader: Mutex::new((leader, 0)),
        claimed: AtomicU64::new(0),
        completed: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        stop,
        start: Instant::now(),
        run_tag,
        key_prefix,
        config,
    };
    let finished = AtomicUsize::new(0);
    let mut by_op: BTreeMap<BenchOp, OpStats> = BTreeMap::new();
    let mut history: Vec<Operation> = Vec::new();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..shared.config.clients)
            .map(|number| {
                let (shared, finished) = (&shared, &finished);
                std::thread::Builder::new()
                    .name(format!("bench-{number}"))
                    .spawn_scoped(scope, move || {
                        let outcome = worker(shared, number);
                        finished.fetch_add(1, Ordering::Release);
                        outcome
                    })
                    .expect("spawn a bench thread")
            })
            .collect();
        let mut last_report = Instant::now();
        let mut last_completed = 0;
        while finished.load(Ordering::Acquire) < handles.len() {
            std::thread::sleep(Duration::from_millis(20));
            if !quiet && last_report.elapsed() >= Duration::from_secs(1) {
                let completed = shared.completed.load(Ordering::Relaxed);
                let rate =
                    (completed - last_completed) as f64 / last_report.elapsed().as_secs_f64();
                eprintln!(
                    "[{:6.1} s] {completed} ops, {rate:.0} ops/s, {} errors",
                    shared.start.elapsed().as_secs_f64(),
                    shared.errors.load(Ordering::Relaxed)
                );
                last_report = Instant::now();
                last_completed = completed;
            }
        }
        for handle in handles {
            let (stats, recorded) = handle.join().expect("a bench thread panicked");
            for (kind, stats) in stats {
                by_op.entry(kind).or_default().merge(&stats);
            }
            history.extend(recorded);
        }
    });
    let elapsed = shared.start.elapsed();
    let check = shared.config.check.then(|| {
        if !quiet {
            eprintln!(
                "checking the history of {} operations for linearizability",
                history.len()
            );
        }
        HistoryCheck::of(&history)
    });
    Ok(BenchReport {
        elapsed,
        by_op,
        config: shared.config,
        check,
    })
}

/// `raftkv bench`: returns the exit status.
pub fn run(args: BenchArgs) -> i32 {
    let mut config = match BenchConfig::from_args(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("raftkv bench: {e}");
            return EXIT_USAGE;
        }
    };
    let mut client = match make_client(&args.client) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("raftkv bench: {e}");
            return EXIT_USAGE;
        }
    };
    if args.http {
        match HttpTarget::from_args(&args.client.target, client.options().token.as_ref()) {
            Ok(http) => config.http = Some(http),
            Err(e) => {
                eprintln!("raftkv bench: {e}");
                return EXIT_USAGE;
            }
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let on_signal = stop.clone();
    // Ctrl-C ends the run early; the report is still printed.
    let _ = ctrlc::set_handler(move || on_signal.store(true, Ordering::Relaxed));
    match run_bench(&mut client, config, stop, false) {
        Ok(report) => {
            if args.json {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.to_text());
            }
            match report.check.map(|check| check.verdict) {
                Some(Err(violation)) => {
                    eprintln!(
                        "raftkv bench: the check failed for key {:?}; the report explains why",
                        violation.key
                    );
                    EXIT_NOT_LINEARIZABLE
                }
                Some(Ok(())) | None => EXIT_OK,
            }
        }
        Err(e) => fail("bench: cannot find the leader", &e, &args.client),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::fake;

    #[test]
    fn mix_parsing() {
        let mix = Mix::parse("put=80,get=20,append=0").unwrap();
        assert_eq!(mix.weights, vec![(BenchOp::Put, 80), (BenchOp::Get, 20)]);
        assert_eq!(mix.total, 100);
        assert_eq!(mix.pick_at(0), BenchOp::Put);
        assert_eq!(mix.pick_at(79), BenchOp::Put);
        assert_eq!(mix.pick_at(80), BenchOp::Get);
        assert_eq!(mix.pick_at(99), BenchOp::Get);
        let mix = Mix::parse(" stale_get = 1 , delete=3").unwrap();
        assert_eq!(
            mix.weights,
            vec![(BenchOp::StaleGet, 1), (BenchOp::Delete, 3)]
        );
        for bad in [
            "",
            "put",
            "put=",
            "put=-1",
            "put=x",
            "frob=1",
            "put=0,get=0",
            "put=1,put=2",
            "put=1,",
            "put=4294967295,get=1",
        ] {
            assert!(Mix::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn mix_picks_in_proportion() {
        let mix = Mix::parse("put=3,get=1").unwrap();
        let mut rng = StdRng::seed_from_u64(7);
        let puts = (0..4000)
            .filter(|_| mix.pick(&mut rng) == BenchOp::Put)
            .count();
        assert!((2800..3200).contains(&puts), "{puts}");
    }

    fn args(line: &str) -> BenchArgs {
        use clap::Parser;
        let cli = super::super::Cli::try_parse_from(line.split_whitespace()).unwrap();
        let super::super::Command::Bench(args) = cli.command else {
            panic!()
        };
        args
    }

    #[test]
    fn config_defaults_and_bounds() {
        let c = BenchConfig::from_args(&args("raftkv bench --servers a:1")).unwrap();
        assert_eq!(
            (c.ops, c.duration, c.clients, c.pipeline),
            (Some(DEFAULT_OPS), None, 1, 1)
        );
        let c = BenchConfig::from_args(&args("raftkv bench --servers a:1 --duration 2")).unwrap();
        assert_eq!((c.ops, c.duration), (None, Some(Duration::from_secs(2))));
        let c = BenchConfig::from_args(&args("raftkv bench --servers a:1 --duration 2 --ops 5"))
            .unwrap();
        assert_eq!((c.ops, c.duration), (Some(5), Some(Duration::from_secs(2))));
        assert!(BenchConfig::from_args(&args("raftkv bench --servers a:1 --ops 0")).is_err());
        assert!(BenchConfig::from_args(&args("raftkv bench --servers a:1 --duration=-1")).is_err());
        assert!(BenchConfig::from_args(&args("raftkv bench --servers a:1 --mix get")).is_err());
        assert!(!c.check);
        let c = BenchConfig::from_args(&args("raftkv bench --servers a:1 --check")).unwrap();
        assert!(c.check);
    }

    #[test]
    fn a_pipelined_run_against_a_fake_node_counts_every_op() {
        let node = fake::start_kv(1);
        let mut client = Client::new(vec![node.addr.clone()], ClientOptions::default());
        let config = BenchConfig {
            clients: 3,
            ops: Some(301),
            duration: None,
            value_size: 16,
            keys: 10,
            mix: Mix::parse("put=2,get=1,append=1,stale_get=1").unwrap(),
            pipeline: 4,
            check: false,
            http: None,
        };
        let report =
            run_bench(&mut client, config, Arc::new(AtomicBool::new(false)), true).unwrap();
        let all = report.all();
        assert_eq!(all.latency_us.count(), 301);
        assert!(all.errors.is_empty(), "{:?}", all.errors);
        assert!(report.by_op.contains_key(&BenchOp::Put));
        // Each slot's writes use increasing seqs under its own client name.
        let mut last: BTreeMap<String, u64> = BTreeMap::new();
        for r in node.seen().iter().filter(|r| r.get("seq").is_some()) {
            let client = r["client"].as_str().unwrap().to_string();
            let seq = r["seq"].as_u64().unwrap();
            let prev = last.insert(client, seq).unwrap_or(0);
            assert_eq!(seq, prev + 1);
        }
        assert!(
            !last.is_empty() && last.len() <= 3 * 4,
            "one name per slot: {last:?}"
        );
        let text = report.to_text();
        assert!(text.contains("301 ok ops"), "{text}");
        assert!(text.lines().any(|l| l.starts_with("all ")), "{text}");
        let json = report.to_json();
        assert_eq!(json["total"]["ok"], 301);
        assert!(json["ops"]["put"]["latency_ms"]["p99"].as_f64().unwrap() > 0.0);
    }

    #[test]
    fn errors_are_counted_by_code_and_hints_followed() {
        let leader = fake::start_kv(2);
        let hint = leader.addr.clone();
        // A node that claims leadership in its status but answers not_leader to writes.
        let impostor = fake::Fake::start(move |r| {
            if r["op"] == "status" {
                fake::Action::Reply(json!({"ok": true, "node": 1, "role": "leader", "term": 9,
                    "leader": 1, "leader_addr": null, "commit_index": 0, "applied_index": 0,
                    "last_log_index": 0, "members": [1, 2]}))
            } else {
                fake::Action::Reply(fake::not_leader(Some(&hint)))
            }
        });
        let mut client = Client::new(
            vec![impostor.addr.clone(), leader.addr.clone()],
            ClientOptions::default(),
        );
        let config = BenchConfig {
            clients: 1,
            ops: Some(20),
            duration: None,
            value_size: 8,
            keys: 5,
            mix: Mix::parse("put=1").unwrap(),
            pipeline: 2,
            check: false,
            http: None,
        };
        let report =
            run_bench(&mut client, config, Arc::new(AtomicBool::new(false)), true).unwrap();
        let all = report.all();
        assert_eq!(
            all.errors.get("not_leader"),
            Some(&2),
            "the first batch fails"
        );
        assert_eq!(
            all.latency_us.count(),
            18,
            "the rest went to the hinted leader"
        );
    }

    #[test]
    fn check_records_the_history_and_passes_a_correct_node() {
        let node = fake::start_kv(1);
        let mut client = Client::new(vec![node.addr.clone()], ClientOptions::default());
        let config = BenchConfig {
            clients: 3,
            ops: Some(300),
            duration: None,
            value_size: 16,
            keys: 4,
            mix: Mix::parse("put=2,get=2,append=2,delete=1,stale_get=1").unwrap(),
            pipeline: 4,
            check: true,
            http: None,
        };
        let report =
            run_bench(&mut client, config, Arc::new(AtomicBool::new(false)), true).unwrap();
        let check = report.check.as_ref().expect("--check reports a verdict");
        assert_eq!(check.verdict, Ok(()));
        // Every operation was answered ok; all but the stale reads are in the history.
        let stale = report
            .by_op
            .get(&BenchOp::StaleGet)
            .map_or(0, |s| s.latency_us.count());
        assert_eq!(check.operations as u64, 300 - stale);
        assert_eq!(check.unknown_outcome, 0);
        // The run's own keys, and a value of its own for every write, of the set size.
        let seen = node.seen();
        let requests = seen.iter().filter(|r| r["op"] != "status");
        let mut values = std::collections::HashSet::new();
        for request in requests {
            let key = request["key"].as_str().unwrap();
            assert!(key.starts_with("b-") && key.contains("-key-"), "{key}");
            if let Some(value) = request["value"].as_str() {
                assert_eq!(value.len(), 16, "{value}");
                assert!(values.insert(value.to_string()), "{value} written twice");
            }
        }
        assert!(!values.is_empty());
        let text = report.to_text();
        assert!(text.contains("are linearizable"), "{text}");
        let json = report.to_json();
        assert_eq!(json["check"]["passed"], true);
        assert_eq!(json["check"]["operations"], check.operations);
    }

    #[test]
    fn check_fails_a_node_that_acknowledges_writes_it_never_applies() {
        // Writes are answered ok and dropped; every read finds the key absent. A read
        // after an acknowledged put must see it, so the history has no linearization.
        let me = Arc::new(Mutex::new(String::new()));
        let mut honest = fake::kv(1, me.clone(), Default::default());
        let liar = fake::Fake::start(move |r| match r["op"].as_str() {
            Some("status") => honest(r),
            Some("get") => fake::Action::Reply(json!({"ok": true, "value": null})),
            _ => fake::Action::Reply(fake::ok()),
        });
        *me.lock() = liar.addr.clone();
        let config = BenchConfig {
            clients: 1,
            ops: Some(40),
            duration: None,
            value_size: 8,
            keys: 1,
            mix: Mix::parse("put=1,get=1").unwrap(),
            pipeline: 1,
            check: true,
            http: None,
        };
        let mut client = Client::new(vec![liar.addr.clone()], ClientOptions::default());
        let report =
            run_bench(&mut client, config, Arc::new(AtomicBool::new(false)), true).unwrap();
        let violation = report.check.as_ref().unwrap().verdict.clone().unwrap_err();
        assert!(
            violation.message.starts_with("No linearization exists"),
            "{violation}"
        );
        assert!(report.to_text().contains("check: FAILED"));
        let json = report.to_json();
        assert_eq!(json["check"]["passed"], false);
        assert_eq!(json["check"]["key"], violation.key);

        // The command exits with its own status.
        let servers = format!("--servers={}", liar.addr);
        let status = super::super::run([
            "raftkv",
            "bench",
            &servers,
            "--check",
            "--ops",
            "40",
            "--keys",
            "1",
            "--mix",
            "put=1,get=1",
        ]);
        assert_eq!(status, EXIT_NOT_LINEARIZABLE);
    }
}
