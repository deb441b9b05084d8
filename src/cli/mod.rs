//! The `raftkv` command line (docs/protocol.md §1): argument parsing, the one-shot client
//! commands, and dispatch to the node, the REPL and the benchmark.
//!
//! The CLI speaks only the client protocol, through [`crate::client::Client`]
//! (`bench` speaks it directly, for lower overhead).
//!
//! Sessions: a one-shot `put`, `append` or `delete` is a client of its own, so it
//! registers a session (one more log entry and round trip) and leaves it behind when it
//! exits; the cluster removes it once it has been idle for the session timeout (an hour
//! by default), or sooner if the session limit needs room, where such sessions, idle
//! since their one write, go first. Writing without a session instead would save that
//! entry, but then a write retried after a `timeout` could be applied twice (a `put`
//! too: a late duplicate can overwrite a newer value), so the one-shot commands keep
//! the exactly-once guarantee and pay for it. A `get` registers nothing; the REPL keeps
//! one session for its whole run.
//!
//! Finding the cluster: `--cluster FILE` or `--servers ADDR,...` when given, else the
//! cluster file named by `$RAFTKV_CLUSTER`, else `./cluster.json` (see [`Target`]), so
//! that after `make cluster` (or an `export RAFTKV_CLUSTER=...`) the commands need no
//! flag, as etcdctl needs none for a local etcd.

pub mod bench;
pub mod histogram;
pub mod repl;

use std::{
    ffi::OsString,
    io::{self, IsTerminal, Write},
    path::{Path, PathBuf},
    time::Duration,
};

use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};

use crate::{
    client::{Client, ClientError, ClientOptions},
    protocol::{Status, Token, DEFAULT_MAX_CLIENT_LINE},
    replica::DEFAULT_TICK_MS,
    server::{ClientTimeouts, NodeOptions},
    storage::StorageOptions,
};

/// Exit status: success.
pub const EXIT_OK: i32 = 0;
/// Exit status of `get`: the key does not exist.
pub const EXIT_NOT_FOUND: i32 = 1;
/// Exit status: bad command line, unreadable cluster file, or a request the server
/// rejected as `bad_request`.
pub const EXIT_USAGE: i32 = 2;
/// Exit status: the operation certainly did not take effect (no leader reachable in
/// time, node unreachable…). Safe to retry.
pub const EXIT_NOT_APPLIED: i32 = 3;
/// Exit status: a write's outcome is unknown; it may or may not have taken effect.
pub const EXIT_UNKNOWN: i32 = 4;
/// Exit status of `bench --check`: the history the run recorded is not linearizable, or
/// the checker gave up on it.
pub const EXIT_NOT_LINEARIZABLE: i32 = 5;
/// Exit status: a node answered `unauthorized` (it needs a client token and none was
/// given, or it refused the one given). Nothing was applied.
pub const EXIT_UNAUTHORIZED: i32 = 6;

const EXIT_CODES: &str = "\
Without --cluster or --servers, the client commands use the cluster file named by
$RAFTKV_CLUSTER, else ./cluster.json (-v says which).

Exit status of the client commands:
  0  success
  1  get: the key does not exist (nothing is printed on stdout)
  2  bad command line, cluster file or token file, or the server answered bad_request
  3  not applied: the operation certainly did not take effect (safe to retry)
  4  outcome unknown: the write may or may not have taken effect
  5  bench --check: the recorded history is not linearizable (or could not be checked)
  6  unauthorized: the cluster needs a token (--token-file) or refused the one given";

/// `raftkv`: the command line.
#[derive(Parser, Debug)]
#[command(
    name = "raftkv",
    version,
    about = "A Raft-replicated key-value store",
    after_help = EXIT_CODES,
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run one cluster member in the foreground (logs to stderr, stops on Ctrl-C)
    Node(NodeArgs),
    /// Interactive client: put, append, get, delete, status, leader; line editing and history (~/.raftkv_history) on a terminal, a script from a pipe
    Repl(ReplArgs),
    /// Print the value of KEY (linearizable read); exit status 1 if it does not exist
    Get(GetArgs),
    /// Set KEY to VALUE
    Put(WriteArgs),
    /// Append VALUE to the value of KEY (a missing key counts as empty)
    Append(WriteArgs),
    /// Remove KEY (no error if it does not exist)
    Delete(KeyArgs),
    /// Show every node's view of the cluster as a table
    Status(StatusArgs),
    /// Load the cluster with concurrent clients and report throughput and latency
    Bench(BenchArgs),
}

/// Flags of `raftkv node`.
#[derive(Args, Debug)]
pub struct NodeArgs {
    /// This node's id, as listed in the cluster file
    #[arg(long, value_name = "ID")]
    pub id: u64,
    /// Cluster file (JSON) listing every node's raft and client addresses
    #[arg(long, value_name = "FILE")]
    pub cluster: PathBuf,
    /// Directory for this node's write-ahead log, hard state and membership (created if missing)
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Lowest level of log line to write to stderr
    #[arg(long, value_name = "LEVEL", default_value = "info",
          value_parser = ["error", "warn", "info", "debug", "trace"])]
    pub log_level: String,
    /// Length of one Raft tick in milliseconds: heartbeats go out every 2 ticks, elections time out after 10 to 20, requests after 2 s
    #[arg(long, value_name = "N", default_value_t = DEFAULT_TICK_MS, value_parser = clap::value_parser!(u64).range(1..))]
    pub tick_ms: u64,
    /// Longest request line accepted from a client, in bytes
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_CLIENT_LINE)]
    pub max_line_bytes: usize,
    /// Take a snapshot and compact the log after this many applied entries (default: 20000, or 16 MiB of entries, whichever comes first)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub snapshot_entries: Option<u64>,
    /// Size at which a new write-ahead log segment is started; compaction deletes whole segments behind a snapshot, so smaller segments free disk sooner
    #[arg(long, value_name = "BYTES", default_value_t = StorageOptions::default().segment_bytes, value_parser = clap::value_parser!(u64).range(4096..))]
    pub wal_segment_bytes: u64,
    /// File holding the client token (trailing whitespace ignored): clients must send {"op":"auth","token":...} first on every connection
    #[arg(long, value_name = "FILE")]
    pub client_token_file: Option<PathBuf>,
    /// Close client connections idle this long (tests only; default 5 minutes)
    #[arg(long, value_name = "MS", hide = true, value_parser = clap::value_parser!(u64).range(1..))]
    pub client_idle_ms: Option<u64>,
    /// Close client connections whose request line is incomplete this long after its first byte (tests only; default 30 s)
    #[arg(long, value_name = "MS", hide = true, value_parser = clap::value_parser!(u64).range(1..))]
    pub client_line_ms: Option<u64>,
    /// Close client connections not authenticated this long after opening (tests only; default 10 s)
    #[arg(long, value_name = "MS", hide = true, value_parser = clap::value_parser!(u64).range(1..))]
    pub client_auth_ms: Option<u64>,
    /// File holding the cluster secret (at least 16 bytes; trailing whitespace is ignored): peers must prove they know it, and may speak only under the member id they proved
    #[arg(long, value_name = "FILE")]
    pub secret_file: Option<PathBuf>,
    /// Print every step of every request on stderr as it happens, one TRACE line each (the events of GET /v1/events, without heartbeat summaries); costs nothing when off
    #[arg(long)]
    pub trace: bool,
}

/// Where the cluster is: at most one of `--cluster` and `--servers`; with neither, see
/// [`Target::find`].
#[derive(Args, Debug, Clone)]
#[group(multiple = false)]
pub struct TargetArgs {
    /// Cluster file (JSON) listing every node's client address [default: $RAFTKV_CLUSTER, else ./cluster.json]
    #[arg(long, value_name = "FILE")]
    pub cluster: Option<PathBuf>,
    /// Comma-separated client addresses of the nodes, instead of --cluster
    #[arg(long, value_name = "ADDR,ADDR,...", value_delimiter = ',')]
    pub servers: Option<Vec<String>>,
}

/// Flags shared by every client command.
#[derive(Args, Debug, Clone)]
pub struct ClientArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Give up on an operation after this many seconds, retries included
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub timeout: f64,
    /// File holding the cluster's client token (nodes run with --client-token-file)
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Say on stderr which cluster file or servers (and token file) are used
    #[arg(short, long)]
    pub verbose: bool,
}

/// Flags of `raftkv repl`.
#[derive(Args, Debug)]
pub struct ReplArgs {
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Flags of `raftkv get`.
#[derive(Args, Debug)]
pub struct GetArgs {
    /// The key to read
    #[arg(allow_hyphen_values = true)]
    pub key: String,
    /// Read one node's local state without contacting a quorum (fast, possibly stale)
    #[arg(long)]
    pub stale: bool,
    /// Print the server's raw JSON response line instead of the value
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Flags of `raftkv put` and `raftkv append`.
#[derive(Args, Debug)]
pub struct WriteArgs {
    /// The key to write
    #[arg(allow_hyphen_values = true)]
    pub key: String,
    /// The value to write (or to append)
    #[arg(allow_hyphen_values = true)]
    pub value: String,
    /// Print the server's raw JSON response line instead of "OK"
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Flags of `raftkv delete`.
#[derive(Args, Debug)]
pub struct KeyArgs {
    /// The key to remove
    #[arg(allow_hyphen_values = true)]
    pub key: String,
    /// Print the server's raw JSON response line instead of "OK"
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Flags of `raftkv status`.
#[derive(Args, Debug)]
#[command(
    after_help = "Exit status: 0 if every node answered, 3 if any did not \
    (the table is printed either way), 6 if any answered unauthorized (a token is \
    needed, or the one given was refused), 2 for a bad command line, cluster file or \
    token file.\n\
    With --json, prints one line per node: {\"addr\":ADDR,\"response\":RAW STATUS RESPONSE} \
    or {\"addr\":ADDR,\"error\":TEXT}."
)]
pub struct StatusArgs {
    /// Print each node's raw JSON status response, one line per node
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Flags of `raftkv bench`.
#[derive(Args, Debug)]
#[command(
    after_help = "Runs until --ops operations are done or --duration passes, \
    whichever comes first (--ops 10000 if neither is given). Progress goes to stderr \
    every second; the report to stdout. Ctrl-C stops early and still reports.\n\n\
    With --check, every operation is recorded and, after the run, the history goes \
    through the linearizability checker; its verdict is part of the report. So that the \
    check means something, the run uses keys of its own (b-<run tag>-key-N, absent when \
    it starts, as the checker assumes) and every put or append writes a value no other \
    operation writes: the start of each value is replaced by <thread>.<counter>- (still \
    --value-size bytes, unless that is too short for the mark). Reads with --mix \
    stale_get are sent but not recorded, since they may lawfully be stale. The history, \
    values read included, is kept in memory until the end. The check is quick while few \
    operations are in flight on any one key; with dozens (many clients and pipelining on \
    a handful of keys) it may search for a long time and give up. A history that is not \
    linearizable, or that the checker gives up on, makes bench exit with status 5."
)]
pub struct BenchArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Number of concurrent clients (threads), each with its own connection
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub clients: u64,
    /// Total operations to run (over all clients)
    #[arg(long, value_name = "N")]
    pub ops: Option<u64>,
    /// Stop after this many seconds
    #[arg(long, value_name = "S")]
    pub duration: Option<f64>,
    /// Size of each written value in bytes
    #[arg(long, value_name = "BYTES", default_value_t = 100)]
    pub value_size: usize,
    /// Number of distinct keys, picked uniformly at random
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub keys: u64,
    /// Operation mix as weights: put, get, append, delete, stale_get (e.g. put=80,get=20)
    #[arg(long, value_name = "MIX", default_value = "put=100")]
    pub mix: String,
    /// Requests in flight per connection: send K, then read the K responses
    #[arg(long, value_name = "K", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub pipeline: u64,
    /// Print the final report as one JSON object
    #[arg(long)]
    pub json: bool,
    /// Record every operation and check after the run that the history is linearizable
    #[arg(long)]
    pub check: bool,
    /// Send the load over the HTTP API (keep-alive connections to the nodes' http addresses, from the cluster file) instead of the client protocol
    #[arg(long)]
    pub http: bool,
}

/// Runs the command line `args` (program name first) and returns the exit status.
pub fn run<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return e.exit_code();
        }
    };
    match cli.command {
        Command::Node(args) => run_node(args),
        Command::Repl(args) => run_repl(args),
        Command::Get(args) => run_get(args),
        Command::Put(args) => run_write("put", args),
        Command::Append(args) => run_write("append", args),
        Command::Delete(args) => {
            let request = json!({"op": "delete", "key": args.key});
            run_one_shot("delete", &args.client, request, args.json)
        }
        Command::Status(args) => run_status(args),
        Command::Bench(args) => bench::run(args),
    }
}

fn run_node(args: NodeArgs) -> i32 {
    let options = NodeOptions {
        id: args.id,
        cluster: args.cluster,
        data_dir: args.data_dir,
        log_level: args.log_level,
        tick_ms: args.tick_ms,
        max_line_bytes: args.max_line_bytes,
        snapshot_entries: args.snapshot_entries,
        wal_segment_bytes: args.wal_segment_bytes,
        client_token_file: args.client_token_file,
        client_timeouts: {
            let default = ClientTimeouts::default();
            let ms = |flag: Option<u64>, default| flag.map_or(default, Duration::from_millis);
            ClientTimeouts {
                idle: ms(args.client_idle_ms, default.idle),
                line: ms(args.client_line_ms, default.line),
                auth: ms(args.client_auth_ms, default.auth),
            }
        },
        secret_file: args.secret_file,
        trace: args.trace,
    };
    match crate::server::run(options) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("raftkv node: {e}");
            1
        }
    }
}

/// The environment variable naming the cluster file client commands use when given
/// neither `--cluster` nor `--servers`.
pub const CLUSTER_ENV: &str = "RAFTKV_CLUSTER";
/// The cluster file client commands look for in the current directory last.
pub const CLUSTER_FILE: &str = "cluster.json";

/// Where a client command found the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `--cluster FILE`.
    Flag(PathBuf),
    /// `--servers ADDR,...`.
    Servers(Vec<String>),
    /// The file `$RAFTKV_CLUSTER` names.
    Env(PathBuf),
    /// `./cluster.json`.
    CurrentDir(PathBuf),
}

impl Target {
    /// Finds the cluster: the flags first, then `env` (the value of
    /// `$RAFTKV_CLUSTER`; empty counts as unset), then `./cluster.json` if
    /// `cwd_file_exists`. A variable naming a missing file is an error when the file
    /// is read, not a reason to look further: the user asked for that file.
    pub fn find(
        args: &TargetArgs,
        env: Option<OsString>,
        cwd_file_exists: bool,
    ) -> Result<Target, String> {
        if let Some(path) = &args.cluster {
            return Ok(Target::Flag(path.clone()));
        }
        if let Some(servers) = &args.servers {
            return Ok(Target::Servers(servers.clone()));
        }
        if let Some(path) = env.filter(|v| !v.is_empty()) {
            return Ok(Target::Env(PathBuf::from(path)));
        }
        if cwd_file_exists {
            return Ok(Target::CurrentDir(Path::new(".").join(CLUSTER_FILE)));
        }
        Err(format!(
            "no cluster given: use --cluster FILE or --servers ADDR,ADDR,..., or set \
             ${CLUSTER_ENV} to a cluster file, or run where ./{CLUSTER_FILE} exists"
        ))
    }

    /// Where the cluster was found, for `-v` and for error messages.
    pub fn describe(&self) -> String {
        match self {
            Target::Flag(path) => format!("cluster file {} (--cluster)", path.display()),
            Target::Servers(servers) => format!("servers {} (--servers)", servers.join(",")),
            Target::Env(path) => format!("cluster file {} (from ${CLUSTER_ENV})", path.display()),
            Target::CurrentDir(path) => format!(
                "cluster file {} (found in the current directory)",
                path.display()
            ),
        }
    }
}

/// Builds the client the flags describe (finding the cluster as [`Target::find`]
/// says, and reading the token file), saying which on stderr with `--verbose`.
pub fn make_client(args: &ClientArgs) -> Result<Client, String> {
    if !(args.timeout.is_finite() && args.timeout > 0.0) {
        return Err(format!(
            "--timeout must be a positive number of seconds, not {}",
            args.timeout
        ));
    }
    let target = Target::find(
        &args.target,
        std::env::var_os(CLUSTER_ENV),
        Path::new(CLUSTER_FILE).exists(),
    )?;
    if args.verbose {
        eprintln!("raftkv: using {}", target.describe());
    }
    let token = match &args.token_file {
        Some(path) => {
            let token = Token::read_file(path).map_err(|e| e.to_string())?;
            if args.verbose {
                eprintln!("raftkv: using the token of {}", path.display());
            }
            Some(token)
        }
        None => None,
    };
    let options = ClientOptions {
        deadline: Duration::from_secs_f64(args.timeout),
        token,
        ..ClientOptions::default()
    };
    let client = match &target {
        Target::Servers(servers) => Client::new(servers.clone(), options),
        Target::Flag(path) => {
            Client::from_cluster_file(path, options).map_err(|e| e.to_string())?
        }
        Target::Env(path) | Target::CurrentDir(path) => Client::from_cluster_file(path, options)
            .map_err(|e| format!("{e} (the {})", target.describe()))?,
    };
    if client.addrs().is_empty() {
        return Err("no server addresses given".into());
    }
    Ok(client)
}

/// The exit status for a failed client operation.
pub fn exit_code(error: &ClientError) -> i32 {
    match error {
        ClientError::NotApplied { .. } => EXIT_NOT_APPLIED,
        ClientError::Unknown { .. } => EXIT_UNKNOWN,
        ClientError::BadRequest(_) | ClientError::NoServers => EXIT_USAGE,
        ClientError::Unauthorized(_) => EXIT_UNAUTHORIZED,
    }
}

/// Prints a failed operation as `raftkv OP: ...` (with a hint when a token is
/// missing) and returns its exit status.
fn fail(op: &str, error: &ClientError, args: &ClientArgs) -> i32 {
    let hint = match error {
        ClientError::Unauthorized(_) if args.token_file.is_none() => {
            " (give the cluster's token with --token-file FILE)"
        }
        _ => "",
    };
    eprintln!("raftkv {op}: {error}{hint}");
    exit_code(error)
}

fn run_get(args: GetArgs) -> i32 {
    let mut request = json!({"op": "get", "key": args.key});
    if args.stale {
        request["consistency"] = json!("stale");
    }
    run_one_shot("get", &args.client, request, args.json)
}

fn run_write(op: &str, args: WriteArgs) -> i32 {
    let request = json!({"op": op, "key": args.key, "value": args.value});
    run_one_shot(op, &args.client, request, args.json)
}

/// One request through the client; prints the result and returns the exit status.
fn run_one_shot(op: &str, args: &ClientArgs, request: Value, json_output: bool) -> i32 {
    let mut client = match make_client(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("raftkv {op}: {e}");
            return EXIT_USAGE;
        }
    };
    let key = request["key"].as_str().unwrap_or("").to_string();
    let response = match client.raw(request) {
        Ok((response, _)) => response,
        Err(e) => return fail(op, &e, args),
    };
    let mut stdout = io::stdout().lock();
    if json_output {
        let line = client
            .last_response_line()
            .map_or_else(|| response.to_string(), str::to_string);
        let _ = writeln!(stdout, "{line}");
    }
    if response.get("ok") != Some(&Value::Bool(true)) {
        let message = response
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("");
        eprintln!("raftkv {op}: {}", ClientError::BadRequest(message.into()));
        return EXIT_USAGE;
    }
    if op != "get" {
        if !json_output {
            let _ = writeln!(stdout, "OK");
        }
        return EXIT_OK;
    }
    match response.get("value") {
        Some(Value::String(value)) => {
            if !json_output {
                let _ = writeln!(stdout, "{value}");
            }
            EXIT_OK
        }
        None | Some(Value::Null) => {
            eprintln!("raftkv get: key not found: {key}");
            EXIT_NOT_FOUND
        }
        Some(other) => {
            eprintln!("raftkv get: malformed response: \"value\" is {other}");
            EXIT_NOT_APPLIED
        }
    }
}

fn run_status(args: StatusArgs) -> i32 {
    let mut client = match make_client(&args.client) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("raftkv status: {e}");
            return EXIT_USAGE;
        }
    };
    let mut stdout = io::stdout().lock();
    let mut all_answered = true;
    let mut unauthorized = None;
    if args.json {
        for addr in client.addrs() {
            let line = match client.status_raw(&addr) {
                Ok(response) => {
                    let raw = client
                        .last_response_line()
                        .map_or_else(|| response.to_string(), str::to_string);
                    format!("{{\"addr\":{},\"response\":{raw}}}", Value::String(addr))
                }
                Err(e) => {
                    all_answered = false;
                    let error = strip_addr(e.reason(), &addr);
                    let line = json!({"addr": addr, "error": error}).to_string();
                    if let ClientError::Unauthorized(_) = e {
                        unauthorized = Some(e);
                    }
                    line
                }
            };
            let _ = writeln!(stdout, "{line}");
        }
    } else {
        let rows = client.status_all();
        all_answered = rows.iter().all(|(_, r)| r.is_ok());
        unauthorized = rows
            .iter()
            .find(|(_, r)| matches!(r, Err(ClientError::Unauthorized(_))))
            .and_then(|(_, r)| r.clone().err());
        let _ = write!(stdout, "{}", status_table(&client, &rows));
    }
    match unauthorized {
        // The table already says which nodes refused; this adds the hint.
        Some(e) => fail("status", &e, &args.client),
        None if all_answered => EXIT_OK,
        None => EXIT_NOT_APPLIED,
    }
}

/// Renders the status of every node as an aligned text table, one row per node:
/// id, client address, role, term, leader, commit, applied, last log index, and
/// `ok` or why the node did not answer.
pub fn status_table(client: &Client, rows: &[(String, Result<Status, ClientError>)]) -> String {
    let header = [
        "ID", "ADDRESS", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED", "LAST", "SNAPSHOT", "STATE",
    ];
    let mut table: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for (addr, result) in rows {
        let known_id = client
            .node_id(addr)
            .map_or_else(|| "?".to_string(), |id| id.to_string());
        let row = match result {
            Ok(s) => vec![
                s.node.to_string(),
                addr.clone(),
                s.role.clone(),
                s.term.to_string(),
                s.leader
                    .map_or_else(|| "-".to_string(), |l| format!("n{l}")),
                s.commit_index.to_string(),
                s.applied_index.to_string(),
                s.last_log_index.to_string(),
                match s.snapshot_index {
                    0 => "-".to_string(),
                    i => format!("{i}@{}", s.snapshot_term),
                },
                "ok".to_string(),
            ],
            Err(e) => {
                let mut row = vec![known_id, addr.clone()];
                row.extend(std::iter::repeat_n("-".to_string(), 7));
                let why = match e {
                    ClientError::Unauthorized(_) => "unauthorized",
                    _ => "unreachable",
                };
                row.push(format!("{why}: {}", strip_addr(e.reason(), addr)));
                row
            }
        };
        table.push(row);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            table
                .iter()
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in &table {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[c]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `"127.0.0.1:8001: connection refused"` → `"connection refused"` when the address is
/// already shown in its own column.
fn strip_addr<'a>(reason: &'a str, addr: &str) -> &'a str {
    reason
        .strip_prefix(addr)
        .and_then(|r| r.strip_prefix(": "))
        .unwrap_or(reason)
}

/// Whether stdin is an interactive terminal (the REPL then shows a prompt).
pub fn stdin_is_terminal() -> bool {
    io::stdin().is_terminal()
}

fn run_repl(args: ReplArgs) -> i32 {
    let mut client = match make_client(&args.client) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("raftkv repl: {e}");
            return EXIT_USAGE;
        }
    };
    let result = if stdin_is_terminal() {
        let history = repl::history_path(
            std::env::var_os(repl::HISTFILE_ENV),
            std::env::var_os("HOME"),
        );
        repl::run_terminal(&mut client, history.as_deref())
    } else {
        repl::run(&mut client, io::stdin().lock(), &mut io::stdout().lock())
    };
    match result {
        Ok(()) => EXIT_OK,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => EXIT_OK,
        Err(e) => {
            eprintln!("raftkv repl: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_the_documented_command_lines() {
        let parse = |line: &str| Cli::try_parse_from(line.split_whitespace());
        let cli =
            parse("raftkv node --id 2 --cluster c.json --data-dir /tmp/d --tick-ms 5").unwrap();
        let Command::Node(n) = cli.command else {
            panic!()
        };
        assert_eq!((n.id, n.tick_ms, n.log_level.as_str()), (2, 5, "info"));
        assert_eq!(n.max_line_bytes, DEFAULT_MAX_CLIENT_LINE);
        let cli = parse("raftkv put k v --servers a:1,b:2 --json").unwrap();
        let Command::Put(w) = cli.command else {
            panic!()
        };
        assert_eq!(
            w.client.target.servers,
            Some(vec!["a:1".to_string(), "b:2".to_string()])
        );
        assert!(w.json);
        assert!(parse("raftkv get k --cluster c.json").is_ok());
        assert!(parse("raftkv status --cluster c.json").is_ok());
        assert!(parse("raftkv repl --servers a:1").is_ok());
        let cli =
            parse("raftkv bench --cluster c --clients 8 --mix put=80,get=20 --pipeline 4").unwrap();
        let Command::Bench(b) = cli.command else {
            panic!()
        };
        assert_eq!(
            (b.clients, b.pipeline, b.mix.as_str()),
            (8, 4, "put=80,get=20")
        );
        // at most one of --cluster and --servers (with neither, Target::find looks)
        assert!(parse("raftkv get k").is_ok());
        assert!(parse("raftkv get k --cluster c --servers a:1").is_err());
        let cli = parse("raftkv get k -v --token-file t").unwrap();
        let Command::Get(g) = cli.command else {
            panic!()
        };
        assert!(g.client.verbose);
        assert_eq!(g.client.token_file, Some(PathBuf::from("t")));
        let cli = parse(
            "raftkv node --id 1 --cluster c --data-dir d --client-token-file t --client-idle-ms 5",
        )
        .unwrap();
        let Command::Node(n) = cli.command else {
            panic!()
        };
        assert_eq!(n.client_token_file, Some(PathBuf::from("t")));
        assert_eq!((n.client_idle_ms, n.client_line_ms), (Some(5), None));
        assert!(parse("raftkv node --id 1 --cluster c --data-dir d --log-level loud").is_err());
    }

    #[test]
    fn one_shot_commands_against_a_fake_node() {
        let node = crate::client::fake::start_kv(1);
        let servers = format!("--servers={}", node.addr);
        let run = |args: &[&str]| {
            let mut line = vec!["raftkv"];
            line.extend_from_slice(args);
            line.push(&servers);
            super::run(line)
        };
        assert_eq!(run(&["put", "k", "v"]), EXIT_OK);
        assert_eq!(run(&["append", "k", "w", "--json"]), EXIT_OK);
        assert_eq!(run(&["get", "k"]), EXIT_OK);
        assert_eq!(run(&["get", "missing"]), EXIT_NOT_FOUND);
        assert_eq!(run(&["delete", "k"]), EXIT_OK);
        assert_eq!(run(&["get", "k", "--stale"]), EXIT_NOT_FOUND);
        assert_eq!(
            run(&["put", "k", &"x".repeat(crate::kv::MAX_VALUE_BYTES + 1)]),
            EXIT_USAGE
        );
        assert_eq!(run(&["status"]), EXIT_OK);
        assert_eq!(run(&["status", "--json"]), EXIT_OK);
        let down = crate::client::fake::refused_addr();
        let line = [
            "raftkv",
            "put",
            "k",
            "v",
            "--timeout",
            "0.2",
            "--servers",
            down.as_str(),
        ];
        assert_eq!(super::run(line), EXIT_NOT_APPLIED);
        assert_eq!(
            super::run([
                "raftkv",
                "node",
                "--id",
                "1",
                "--cluster",
                "c",
                "--data-dir",
                "d"
            ]),
            1
        );
    }

    #[test]
    fn the_cluster_is_found_by_flag_then_variable_then_current_directory() {
        let target = |cluster: Option<&str>, servers: Option<&str>| TargetArgs {
            cluster: cluster.map(PathBuf::from),
            servers: servers.map(|s| s.split(',').map(str::to_string).collect()),
        };
        let env = Some(OsString::from("/etc/raftkv.json"));
        let flag = target(Some("c.json"), None);
        assert_eq!(
            Target::find(&flag, env.clone(), true),
            Ok(Target::Flag("c.json".into()))
        );
        assert_eq!(
            Target::find(&target(None, Some("a:1,b:2")), env.clone(), true),
            Ok(Target::Servers(vec!["a:1".into(), "b:2".into()]))
        );
        let none = target(None, None);
        assert_eq!(
            Target::find(&none, env.clone(), true),
            Ok(Target::Env("/etc/raftkv.json".into()))
        );
        assert_eq!(
            Target::find(&none, Some(OsString::new()), true),
            Ok(Target::CurrentDir("./cluster.json".into())),
            "an empty variable counts as unset"
        );
        assert_eq!(
            Target::find(&none, None, true),
            Ok(Target::CurrentDir("./cluster.json".into()))
        );
        let err = Target::find(&none, None, false).unwrap_err();
        for named in [
            "--cluster",
            "--servers",
            "$RAFTKV_CLUSTER",
            "./cluster.json",
        ] {
            assert!(err.contains(named), "{err}");
        }
        assert_eq!(
            Target::Env("/etc/raftkv.json".into()).describe(),
            "cluster file /etc/raftkv.json (from $RAFTKV_CLUSTER)"
        );
    }

    #[test]
    fn unauthorized_has_its_own_exit_status_and_a_hint_without_a_token() {
        assert_eq!(
            exit_code(&ClientError::Unauthorized("no".into())),
            EXIT_UNAUTHORIZED
        );
        assert!(EXIT_CODES.contains(&format!("  {EXIT_UNAUTHORIZED}  unauthorized")));
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nothing");
        let line = [
            "raftkv",
            "get",
            "k",
            "--servers",
            "127.0.0.1:1",
            "--token-file",
            missing.to_str().unwrap(),
        ];
        assert_eq!(super::run(line), EXIT_USAGE, "an unreadable token file");
    }

    #[test]
    fn status_table_shows_reachable_and_unreachable_nodes() {
        let client = Client::new(vec!["a:1".into(), "b:2".into()], ClientOptions::default());
        let s = Status {
            node: 1,
            role: "leader".into(),
            term: 7,
            leader: Some(1),
            leader_addr: Some("a:1".into()),
            commit_index: 1042,
            applied_index: 1041,
            last_log_index: 1043,
            members: vec![1, 2],
            ..Default::default()
        };
        let rows = vec![
            ("a:1".to_string(), Ok(s)),
            (
                "b:2".to_string(),
                Err(ClientError::NotApplied {
                    reason: "b:2: connection refused".into(),
                }),
            ),
        ];
        let table = status_table(&client, &rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("ID  ADDRESS  ROLE"), "{table}");
        assert!(
            lines[1].contains("leader") && lines[1].contains("n1") && lines[1].contains("1042"),
            "{table}"
        );
        assert!(
            lines[2].ends_with("unreachable: connection refused"),
            "{table}"
        );
        assert!(lines[2].starts_with("?   b:2"), "{table}");
    }
}
