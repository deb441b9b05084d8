//! The blocking client: finds the leader, retries, and makes writes exactly-once.
//!
//! # How an operation runs
//!
//! A [`Client`] knows the client addresses of the cluster's nodes (from a cluster file
//! or a `--servers` list) and keeps at most one open TCP connection per node. Each
//! operation (`get`, `put`, …) is one request line sent to one node at a time, repeated
//! until a definite answer arrives or the operation's deadline
//! ([`ClientOptions::deadline`], 10 s by default) passes:
//!
//! 1. **Where to send.** To the node that last answered `ok` (the remembered leader),
//!    else to the next node in turn. A `not_leader` answer that names a `leader_addr`
//!    sends the next attempt straight there (an address missing from our list is added
//!    to it); one without a hint moves on to the next node.
//! 2. **When to wait.** Answers that say "not now" (`unavailable`, `timeout`) and
//!    failures after sending (lost connection, no response within
//!    [`ClientOptions::request_timeout`]) wait a backoff before the next attempt:
//!    20 ms, doubling up to 500 ms, each wait drawn at random from its upper half so
//!    that many clients do not retry in lockstep. Quick failures (refused connection,
//!    `not_leader`) move on at once, but after as many of them in a row as there are
//!    nodes, the client waits too, so a leaderless cluster is not hammered.
//! 3. **When to stop.** On `ok` (success) and `bad_request` (the request is wrong and
//!    will stay wrong); otherwise at the deadline.
//!
//! # Exactly-once writes
//!
//! Before its first write a client registers a session with the cluster
//! (`{"op":"register"}`, answered with the session's number; docs/protocol.md §3.6) and
//! then numbers its writes `seq = 1, 2, 3, …`. A write carries `session` and `seq`, and
//! **every retry of that write reuses the same `seq`**, whichever node it goes to. The
//! servers apply a given `(session, seq)` at most once and answer a retry with the first
//! attempt's result, so retrying after an uncertain failure is safe: it either applies
//! the write for the first time or reports that it already was. The next write gets the
//! next `seq` whatever the previous outcome. Because operations take `&mut self`, a
//! `Client` has at most one write outstanding, as docs/protocol.md asks.
//!
//! A session idle longer than the cluster's session timeout (an hour by default), or
//! pushed out by its session limit, expires, and a write naming it is answered
//! `session_expired`: not applied by that attempt. The client then registers a new
//! session and sends the write again under it, but only if no earlier attempt of the
//! write may have been applied (all were refused, or never reached a node); otherwise
//! the old session's record, the only thing that could say whether that attempt took
//! effect, is gone, so the write fails as [`ClientError::Unknown`] rather than risk
//! applying it twice.
//!
//! With [`ClientOptions::client_id`] set, the client uses the older form instead: every
//! write carries that `client` name and a `seq`, no registration. The cluster keeps such
//! a session only while it is active (and refuses retries of it for one more timeout
//! after it expired); see docs/protocol.md §3.6 for exactly what that form guarantees.
//! A client also falls back to that form, under a random name, if a node answers
//! `register` with `bad_request` (a node from before registration existed).
//!
//! # What a failure means
//!
//! When the deadline passes, the error says what the caller may conclude
//! ([`ClientError`]):
//! - [`ClientError::Unknown`] if the operation is a write and at least one attempt
//!   *may* have reached a server's log: it was sent and then answered `timeout`, or the
//!   connection failed or closed after sending, or no (well-formed) answer came within
//!   the per-request timeout. Such an attempt may still be applied later, even after
//!   the call returned; it will never be applied twice, nor after a later write of the
//!   same client (whose higher `seq` makes it stale).
//! - [`ClientError::NotApplied`] otherwise: every attempt failed to connect or was
//!   answered `not_leader`/`unavailable`, which the protocol defines as "not applied,
//!   never will be". Reads always fail this way, since they change nothing.
//!
//! Before reusing an idle connection the client checks, without blocking, that the
//! server has not closed it meanwhile; so a node that restarted between two operations,
//! or closed the connection after minutes of idleness, costs a reconnect, not an
//! uncertain outcome.
//!
//! # Authentication
//!
//! With [`ClientOptions::token`] set, every connection the client opens (the first,
//! reconnects, one to a node a `not_leader` hint named) starts with
//! `{"op":"auth","token":...}` before the request it was opened for; a node without a
//! token answers that `ok` too. An `unauthorized` answer, to `auth` or (without a
//! token) to a request, ends the operation at once with
//! [`ClientError::Unauthorized`]: retrying cannot fix a missing or wrong token. (If an
//! earlier attempt of a write may have been applied, the outcome stays
//! [`ClientError::Unknown`].)
//!
//! # Threads
//!
//! A `Client` is `Send` and not meant to be shared: its methods take `&mut self`. Give
//! each thread its own client; creating one is cheap (no connection is opened until the
//! first operation), and separate clients have separate names, so their writes never
//! contend for one `seq` counter. Wrapping one in a `Mutex` works too, but serializes
//! every operation of every thread behind one connection per node.

pub(crate) mod connection;
mod error;
#[cfg(test)]
pub(crate) mod fake;
#[cfg(test)]
mod tests;

pub use error::ClientError;

use std::{
    path::Path,
    time::{Duration, Instant},
};

use rand::Rng;
use serde_json::{json, Value};

use crate::{
    config::ClusterConfig,
    kv::{MAX_KEY_BYTES, MAX_VALUE_BYTES},
    protocol::{ErrorCode, Status, Token},
};
use connection::{CallError, Conn};

/// Settings of a [`Client`]. `ClientOptions::default()` gives the documented defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientOptions {
    /// Overall time budget of one operation, retries and backoff included (10 s).
    pub deadline: Duration,
    /// Longest wait for one TCP connect (1 s).
    pub connect_timeout: Duration,
    /// Longest wait for the response to one request once sent (3 s). After that the
    /// attempt counts as lost (outcome unknown for a write) and the connection is closed.
    pub request_timeout: Duration,
    /// First backoff wait between attempts (20 ms); doubles after each wait.
    pub backoff_start: Duration,
    /// Largest backoff wait (500 ms).
    pub backoff_max: Duration,
    /// `None` (the default): register a session before the first write and use it
    /// (`session` + `seq`). `Some(name)`: use the older form instead, every write
    /// carrying this `client` name and a `seq`, without registering. Two clients must
    /// never use the same name at the same time.
    pub client_id: Option<String>,
    /// Longest response line accepted, in bytes (16 MiB).
    pub max_line_bytes: usize,
    /// The client token of the cluster (nodes started with `--client-token-file`),
    /// sent in an `auth` request on every new connection; `None` (the default): no
    /// `auth`, for nodes that need none.
    pub token: Option<Token>,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            deadline: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(3),
            backoff_start: Duration::from_millis(20),
            backoff_max: Duration::from_millis(500),
            client_id: None,
            max_line_bytes: 16 * 1024 * 1024,
            token: None,
        }
    }
}

/// A random client name: `c-` and 16 hex digits.
pub fn random_client_id() -> String {
    format!("c-{:016x}", rand::random::<u64>())
}

/// Which session this client's writes carry.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Identity {
    /// A registered session; `None` until the first write registers one (and again
    /// after the cluster said it expired).
    Registered(Option<u64>),
    /// The older form: a `client` name of our choosing.
    Named(String),
}

/// One node the client may talk to.
struct Node {
    /// Its client address, as given or as learned from a `leader_addr` hint.
    addr: String,
    /// Its id, when known from the cluster file.
    id: Option<u64>,
    /// The open connection, if any.
    conn: Option<Conn>,
}

/// A blocking client of a raftkv cluster. See the [module docs](self) for the retry and
/// exactly-once rules, and [`ClientError`] for what a failure means.
pub struct Client {
    /// Every node we know of; configured ones first, hinted ones appended.
    nodes: Vec<Node>,
    /// How many of `nodes` were configured (the rest were learned from hints).
    configured: usize,
    options: ClientOptions,
    /// The session our writes carry.
    identity: Identity,
    /// The `seq` the next write will carry.
    next_seq: u64,
    /// Index of the node that last answered `ok`, while it keeps doing so.
    leader: Option<usize>,
    /// Where the next search for a leader starts.
    cursor: usize,
    /// Index of the node that gave the final answer of the last operation.
    last_node: Option<usize>,
    /// The exact response line of the last operation's final answer.
    last_line: Option<String>,
    /// Attempts made by the last operation (registering included).
    last_attempts: u32,
    /// When the last operation started.
    op_started: Instant,
}

/// The final answer of [`Client::execute`].
struct Done {
    /// `ok`, `bad_request` or `session_expired`.
    response: Value,
    /// The index of the node that gave it.
    node: usize,
    /// Some earlier attempt of the request may have been applied.
    maybe_applied: bool,
}

/// The `message` of an error response ("" if none).
fn message_of(response: &Value) -> &str {
    response
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// What the client makes of one well-formed response.
enum Answer {
    /// `ok: true`, `bad_request` or `session_expired`: final for this request (the
    /// caller decides what a `session_expired` means for the operation).
    Final,
    /// `unauthorized`: final for the whole operation.
    Unauthorized,
    NotLeader(Option<String>),
    Unavailable(String),
    Timeout(String),
    /// An error code this client does not know; treated as uncertain.
    Other(String),
}

fn classify(response: &Value) -> Answer {
    if response.get("ok") == Some(&Value::Bool(true)) {
        return Answer::Final;
    }
    let message = response
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let code = response.get("error").and_then(Value::as_str).unwrap_or("");
    match serde_json::from_value::<ErrorCode>(Value::String(code.into())) {
        Ok(ErrorCode::BadRequest | ErrorCode::SessionExpired) => Answer::Final,
        Ok(ErrorCode::NotLeader) => Answer::NotLeader(
            response
                .get("leader_addr")
                .and_then(Value::as_str)
                .filter(|a| !a.is_empty())
                .map(str::to_string),
        ),
        Ok(ErrorCode::Unavailable) => Answer::Unavailable(message),
        Ok(ErrorCode::Unauthorized) => Answer::Unauthorized,
        Ok(ErrorCode::Timeout) => Answer::Timeout(message),
        Err(_) => Answer::Other(format!("unexpected response {response}")),
    }
}

/// Refuses, without sending it, a request whose key or value is over the protocol's
/// size limits: the server would refuse it too (or close the connection on an
/// oversized line, which would leave a write's outcome needlessly unknown).
fn check_sizes(request: &Value) -> Result<(), ClientError> {
    for (field, limit) in [("key", MAX_KEY_BYTES), ("value", MAX_VALUE_BYTES)] {
        if let Some(Value::String(s)) = request.get(field) {
            if s.len() > limit {
                return Err(ClientError::BadRequest(format!(
                    "{field} is {} bytes; the limit is {limit}",
                    s.len()
                )));
            }
        }
    }
    Ok(())
}

/// Formats a duration for messages: `850 ms`, `1.3 ms`, `10.0 s`.
pub(crate) fn fmt_duration(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms >= 1000.0 {
        format!("{:.1} s", ms / 1000.0)
    } else if ms >= 10.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

/// Doubling backoff with jitter.
struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    /// The next wait: uniformly random in the upper half of the current step.
    fn next_wait(&mut self) -> Duration {
        let step = self.next;
        self.next = (step * 2).min(self.max);
        let half = step / 2;
        half + rand::thread_rng().gen_range(Duration::ZERO..=step - half)
    }
}

impl Client {
    /// A client of the nodes at `addrs` (client addresses, `host:port`). Empty and
    /// duplicate entries are dropped. No connection is opened until the first operation.
    pub fn new(addrs: Vec<String>, options: ClientOptions) -> Client {
        let mut client = Client {
            nodes: Vec::new(),
            configured: 0,
            identity: match &options.client_id {
                Some(name) => Identity::Named(name.clone()),
                None => Identity::Registered(None),
            },
            options,
            next_seq: 1,
            leader: None,
            cursor: 0,
            last_node: None,
            last_line: None,
            last_attempts: 0,
            op_started: Instant::now(),
        };
        for addr in addrs {
            let addr = addr.trim();
            if !addr.is_empty() {
                client.node_index(addr);
            }
        }
        client.configured = client.nodes.len();
        client
    }

    /// A client of the nodes of a cluster file (docs/protocol.md §2); it knows their ids.
    pub fn from_cluster_file(path: &Path, options: ClientOptions) -> crate::error::Result<Client> {
        Ok(Client::from_cluster(&ClusterConfig::load(path)?, options))
    }

    /// A client of the nodes of a parsed cluster configuration; it knows their ids.
    pub fn from_cluster(config: &ClusterConfig, options: ClientOptions) -> Client {
        let mut client = Client::new(config.client_addrs(), options);
        for spec in &config.nodes {
            if let Some(node) = client.nodes.iter_mut().find(|n| n.addr == spec.client) {
                node.id = Some(spec.id);
            }
        }
        client
    }

    /// The `client` name this client's writes carry, when it uses the named form.
    pub fn client_id(&self) -> Option<&str> {
        match &self.identity {
            Identity::Named(name) => Some(name),
            Identity::Registered(_) => None,
        }
    }

    /// The number of the registered session this client's writes carry, once it has
    /// one.
    pub fn session(&self) -> Option<u64> {
        match self.identity {
            Identity::Registered(session) => session,
            Identity::Named(_) => None,
        }
    }

    /// The options this client was made with.
    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// The configured node addresses, in the order given.
    pub fn addrs(&self) -> Vec<String> {
        self.nodes[..self.configured]
            .iter()
            .map(|n| n.addr.clone())
            .collect()
    }

    /// The id of the node at client address `addr`, if the cluster file named it.
    pub fn node_id(&self, addr: &str) -> Option<u64> {
        self.nodes
            .iter()
            .find(|n| n.addr == addr)
            .and_then(|n| n.id)
    }

    /// How to name the node at `addr` for humans: `n2` when its id is known, else the
    /// address itself.
    pub fn node_label(&self, addr: &str) -> String {
        match self.node_id(addr) {
            Some(id) => format!("n{id}"),
            None => addr.to_string(),
        }
    }

    /// The address of the node that gave the final answer to the last operation (`None`
    /// if it failed without one).
    pub fn last_addr(&self) -> Option<&str> {
        self.last_node.map(|i| self.nodes[i].addr.as_str())
    }

    /// The exact response line of the last operation's final answer, as received.
    pub fn last_response_line(&self) -> Option<&str> {
        self.last_line.as_deref()
    }

    /// The node currently believed to be the leader (the last one to answer `ok`).
    pub fn known_leader(&self) -> Option<&str> {
        self.leader.map(|i| self.nodes[i].addr.as_str())
    }

    /// Reads `key` linearizably; `None` if it is absent.
    pub fn get(&mut self, key: &str) -> Result<Option<String>, ClientError> {
        self.read(json!({"op": "get", "key": key}))
    }

    /// Reads `key` from one node's local state (`"consistency":"stale"`): fast, but
    /// possibly out of date. Goes to the remembered leader when there is one.
    pub fn get_stale(&mut self, key: &str) -> Result<Option<String>, ClientError> {
        self.read(json!({"op": "get", "key": key, "consistency": "stale"}))
    }

    /// Sets `key` to `value`.
    pub fn put(&mut self, key: &str, value: &str) -> Result<(), ClientError> {
        self.write(json!({"op": "put", "key": key, "value": value}))
    }

    /// Appends `value` to the value of `key` (a missing key counts as `""`).
    pub fn append(&mut self, key: &str, value: &str) -> Result<(), ClientError> {
        self.write(json!({"op": "append", "key": key, "value": value}))
    }

    /// Removes `key`; no error if it is absent.
    pub fn delete(&mut self, key: &str) -> Result<(), ClientError> {
        self.write(json!({"op": "delete", "key": key}))
    }

    /// Sends any request through the leader-finding, retrying machinery and returns the
    /// final response (`ok`, `bad_request` or `session_expired`) with the address that
    /// gave it. A write (`op` put/append/delete) without `session`, `client` and `seq`
    /// goes out as this client's writes do (its session and next seq added, registering
    /// first if needed, and again if the session expired); one that has any of them is
    /// sent as it is.
    pub fn raw(&mut self, request: Value) -> Result<(Value, String), ClientError> {
        let deadline = self.start_operation();
        let op = request.get("op").and_then(Value::as_str).unwrap_or("");
        let is_write = matches!(op, "put" | "append" | "delete" | "register");
        let ours = matches!(op, "put" | "append" | "delete")
            && ["session", "client", "seq"]
                .iter()
                .all(|f| request.get(f).is_none());
        let (response, index) = if ours {
            self.write_in_session(request, deadline)?
        } else {
            let done = self.execute(&request, is_write, deadline)?;
            (done.response, done.node)
        };
        Ok((response, self.nodes[index].addr.clone()))
    }

    /// Asks the node at `addr` for its status: one attempt, no retries, and no leader
    /// needed. The raw response (`ok` or not) is returned as it came, except that an
    /// `unauthorized` answer is [`ClientError::Unauthorized`].
    pub fn status_raw(&mut self, addr: &str) -> Result<Value, ClientError> {
        let index = self.node_index(addr);
        let deadline = Instant::now() + self.options.request_timeout;
        self.last_node = None;
        self.last_line = None;
        match self.attempt(index, &json!({"op": "status"}), deadline) {
            Ok((response, _)) if matches!(classify(&response), Answer::Unauthorized) => {
                Err(self.unauthorized(addr, false))
            }
            Ok((response, line)) => {
                self.last_node = Some(index);
                self.last_line = Some(line);
                Ok(response)
            }
            Err(CallError::Unauthorized) => Err(self.unauthorized(addr, false)),
            Err(CallError::NotSent(e) | CallError::Lost(e)) => Err(ClientError::NotApplied {
                reason: format!("{addr}: {e}"),
            }),
        }
    }

    /// Asks the node at `addr` for its status (see [`Client::status_raw`]) and parses
    /// the answer.
    pub fn status(&mut self, addr: &str) -> Result<Status, ClientError> {
        let response = self.status_raw(addr)?;
        if response.get("ok") != Some(&Value::Bool(true)) {
            let message = response
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("");
            return match response.get("error").and_then(Value::as_str) {
                Some("bad_request") => Err(ClientError::BadRequest(message.into())),
                code => Err(ClientError::NotApplied {
                    reason: format!("{addr}: {}: {message}", code.unwrap_or("error")),
                }),
            };
        }
        serde_json::from_value(response).map_err(|e| ClientError::NotApplied {
            reason: format!("{addr}: malformed status response: {e}"),
        })
    }

    /// The status of every configured node, in order, each with its address.
    pub fn status_all(&mut self) -> Vec<(String, Result<Status, ClientError>)> {
        self.addrs()
            .into_iter()
            .map(|addr| {
                let status = self.status(&addr);
                (addr, status)
            })
            .collect()
    }

    /// Finds the current leader through the nodes' status, retrying until the deadline:
    /// the node reporting `role: leader` in the highest term, else the `leader_addr`
    /// reported in the highest term. Remembers it and returns its client address.
    pub fn find_leader(&mut self) -> Result<String, ClientError> {
        if self.nodes.is_empty() {
            return Err(ClientError::NoServers);
        }
        let deadline = Instant::now() + self.options.deadline;
        let mut backoff = self.backoff();
        loop {
            let mut best: Option<(u64, bool, String)> = None; // (term, is the node itself, addr)
            let mut errors = Vec::new();
            for (addr, status) in self.status_all() {
                match status {
                    Ok(s) => {
                        let candidate = if s.role == "leader" {
                            Some((s.term, true, addr))
                        } else {
                            s.leader_addr.map(|a| (s.term, false, a))
                        };
                        if let Some(c) = candidate {
                            if best.as_ref().is_none_or(|b| (c.0, c.1) > (b.0, b.1)) {
                                best = Some(c);
                            }
                        }
                    }
                    // Asking again will not help.
                    Err(e @ ClientError::Unauthorized(_)) => return Err(e),
                    Err(e) => errors.push(e.reason().to_string()),
                }
            }
            if let Some((_, _, addr)) = best {
                let index = self.node_index(&addr);
                self.leader = Some(index);
                return Ok(addr);
            }
            let now = Instant::now();
            if now >= deadline {
                let mut reason = "no node knows a leader".to_string();
                if !errors.is_empty() {
                    reason = format!("{reason}; {}", errors.join("; "));
                }
                return Err(ClientError::NotApplied { reason });
            }
            std::thread::sleep(backoff.next_wait().min(deadline - now));
        }
    }

    fn read(&mut self, request: Value) -> Result<Option<String>, ClientError> {
        let deadline = self.start_operation();
        let response = self.execute(&request, false, deadline)?.response;
        Self::check_ok(&response)?;
        match response.get("value") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(v)) => Ok(Some(v.clone())),
            Some(other) => Err(ClientError::NotApplied {
                reason: format!("malformed response: \"value\" is {other}"),
            }),
        }
    }

    fn write(&mut self, request: Value) -> Result<(), ClientError> {
        let deadline = self.start_operation();
        let (response, _) = self.write_in_session(request, deadline)?;
        Self::check_ok(&response)
    }

    /// Resets what the last operation reports and returns the new one's deadline.
    fn start_operation(&mut self) -> Instant {
        self.last_node = None;
        self.last_line = None;
        self.last_attempts = 0;
        self.op_started = Instant::now();
        self.op_started + self.options.deadline
    }

    /// Sends a write in this client's session with the next seq, registering a session
    /// first when there is none, and registering a new one when the cluster says it
    /// expired, as long as no attempt may have applied the write (module docs). Returns
    /// the final response (`ok`, `bad_request`, or for a named client
    /// `session_expired`) and the node that gave it.
    fn write_in_session(
        &mut self,
        mut request: Value,
        deadline: Instant,
    ) -> Result<(Value, usize), ClientError> {
        loop {
            let session = match &self.identity {
                Identity::Named(name) => ("client", Value::String(name.clone())),
                Identity::Registered(Some(n)) => ("session", Value::from(*n)),
                Identity::Registered(None) => {
                    self.register(deadline)?;
                    continue;
                }
            };
            request[session.0] = session.1;
            request["seq"] = Value::from(self.take_seq());
            let done = self.execute(&request, true, deadline)?;
            if done.response.get("error").and_then(Value::as_str) != Some("session_expired") {
                return Ok((done.response, done.node));
            }
            let expired = matches!(self.identity, Identity::Registered(Some(_)));
            if done.maybe_applied {
                if expired {
                    self.identity = Identity::Registered(None);
                }
                return Err(ClientError::Unknown {
                    reason: format!(
                        "the session expired before this client learned whether an earlier \
                         attempt of the write was applied; last answer: {}",
                        message_of(&done.response)
                    ),
                });
            }
            if !expired {
                // A named session: the cluster refuses this seq for good (the name's
                // expired session had used it). That is for the caller to sort out.
                return Ok((done.response, done.node));
            }
            // Certainly not applied: go on under a new session.
            self.identity = Identity::Registered(None);
            if Instant::now() >= deadline {
                return Err(ClientError::NotApplied {
                    reason: format!(
                        "the session expired and there was no time left to register a new \
                         one: {}",
                        message_of(&done.response)
                    ),
                });
            }
        }
    }

    /// Registers a new session and makes it this client's; its writes start again at
    /// seq 1. A node that does not know `register` (answers `bad_request`) makes the
    /// client fall back to the named form under a random name.
    fn register(&mut self, deadline: Instant) -> Result<(), ClientError> {
        let done = self.execute(&json!({"op": "register"}), false, deadline)?;
        let response = done.response;
        self.next_seq = 1;
        if response.get("ok") != Some(&Value::Bool(true)) {
            self.identity = Identity::Named(random_client_id());
            return Ok(());
        }
        match response.get("session").and_then(Value::as_u64) {
            Some(n) => {
                self.identity = Identity::Registered(Some(n));
                Ok(())
            }
            None => Err(ClientError::NotApplied {
                reason: format!("malformed answer to register: {response}"),
            }),
        }
    }

    /// `execute` returns only `ok`, `bad_request` and `session_expired` responses; turn
    /// the others into an error (a `session_expired` that gets here is a named
    /// client's seq refused for good, as final as `bad_request`).
    fn check_ok(response: &Value) -> Result<(), ClientError> {
        if response.get("ok") == Some(&Value::Bool(true)) {
            Ok(())
        } else {
            Err(ClientError::BadRequest(message_of(response).to_string()))
        }
    }

    fn take_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    fn backoff(&self) -> Backoff {
        Backoff {
            next: self.options.backoff_start,
            max: self.options.backoff_max,
        }
    }

    /// The index of the node at `addr`, adding it if unknown.
    fn node_index(&mut self, addr: &str) -> usize {
        if let Some(i) = self.nodes.iter().position(|n| n.addr == addr) {
            return i;
        }
        self.nodes.push(Node {
            addr: addr.to_string(),
            id: None,
            conn: None,
        });
        self.nodes.len() - 1
    }

    fn next_node(&mut self, index: usize) -> usize {
        self.cursor = (index + 1) % self.nodes.len();
        self.cursor
    }

    /// The retry loop described in the module docs, until `deadline`. Returns the final
    /// response (`ok`, `bad_request` or `session_expired`), the node that gave it, and
    /// whether an earlier attempt may have been applied.
    fn execute(
        &mut self,
        request: &Value,
        is_write: bool,
        deadline: Instant,
    ) -> Result<Done, ClientError> {
        self.last_node = None;
        self.last_line = None;
        if self.nodes.is_empty() {
            return Err(ClientError::NoServers);
        }
        check_sizes(request)?;
        let mut backoff = self.backoff();
        // Whether some attempt may have put this write into a server's log.
        let mut maybe_applied = false;
        let mut last_error;
        // Failures in a row that did not wait.
        let mut quick_failures = 0;
        let mut target = self.leader.unwrap_or(self.cursor % self.nodes.len());
        loop {
            self.last_attempts += 1;
            let addr = self.nodes[target].addr.clone();
            let wait = match self.attempt(target, request, deadline) {
                Ok((response, line)) => match classify(&response) {
                    Answer::Final => {
                        if response.get("ok") == Some(&Value::Bool(true)) {
                            self.leader = Some(target);
                        }
                        self.last_node = Some(target);
                        self.last_line = Some(line);
                        return Ok(Done {
                            response,
                            node: target,
                            maybe_applied,
                        });
                    }
                    Answer::NotLeader(hint) => {
                        if self.leader == Some(target) {
                            self.leader = None;
                        }
                        match hint {
                            Some(hint) if hint != addr => {
                                last_error = format!("{addr}: not leader; leader is {hint}");
                                target = self.node_index(&hint);
                            }
                            _ => {
                                last_error = format!("{addr}: not leader; no leader known");
                                target = self.next_node(target);
                            }
                        }
                        false
                    }
                    Answer::Unavailable(message) => {
                        last_error = format!("{addr}: unavailable: {message}");
                        self.leader = None;
                        target = self.next_node(target);
                        true
                    }
                    Answer::Timeout(message) => {
                        maybe_applied |= is_write;
                        last_error = format!("{addr}: timeout: {message}");
                        true
                    }
                    Answer::Other(message) => {
                        maybe_applied |= is_write;
                        last_error = format!("{addr}: {message}");
                        self.leader = None;
                        target = self.next_node(target);
                        true
                    }
                    Answer::Unauthorized => return Err(self.unauthorized(&addr, maybe_applied)),
                },
                Err(CallError::Unauthorized) => return Err(self.unauthorized(&addr, maybe_applied)),
                Err(CallError::NotSent(e)) => {
                    last_error = format!("{addr}: {e}");
                    self.leader = None;
                    target = self.next_node(target);
                    false
                }
                Err(CallError::Lost(e)) => {
                    maybe_applied |= is_write;
                    last_error = format!("{addr}: {e}");
                    self.leader = None;
                    target = self.next_node(target);
                    true
                }
            };
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            quick_failures = if wait { 0 } else { quick_failures + 1 };
            if wait || quick_failures >= self.nodes.len() {
                quick_failures = 0;
                std::thread::sleep(backoff.next_wait().min(deadline - now));
                if Instant::now() >= deadline {
                    break;
                }
            }
        }
        let reason = format!(
            "gave up after {} attempts in {}; last error: {last_error}",
            self.last_attempts,
            fmt_duration(self.op_started.elapsed())
        );
        Err(if maybe_applied {
            ClientError::Unknown { reason }
        } else {
            ClientError::NotApplied { reason }
        })
    }

    /// The error for an `unauthorized` answer from `addr`: final, but if an earlier
    /// attempt of a write may have been applied its outcome stays unknown. (The node's
    /// own message adds nothing: it says a token is needed, or was wrong.)
    fn unauthorized(&self, addr: &str, maybe_applied: bool) -> ClientError {
        let reason = match self.options.token {
            Some(_) => format!("{addr}: the node refused the token"),
            None => format!("{addr}: the node requires a client token and none was given"),
        };
        if maybe_applied {
            ClientError::Unknown {
                reason: format!("an earlier attempt may have been applied; then {reason}"),
            }
        } else {
            ClientError::Unauthorized(reason)
        }
    }

    /// One exchange with one node, (re)connecting (and authenticating) if needed. Any
    /// failure closes the connection.
    fn attempt(
        &mut self,
        index: usize,
        request: &Value,
        deadline: Instant,
    ) -> Result<(Value, String), CallError> {
        let options = &self.options;
        let node = &mut self.nodes[index];
        if node.conn.as_ref().is_some_and(|c| !c.is_reusable()) {
            node.conn = None;
        }
        let conn = match &mut node.conn {
            Some(conn) => conn,
            None => {
                let remaining = deadline.saturating_duration_since(Instant::now());
                let mut conn = Conn::connect(&node.addr, options.connect_timeout.min(remaining))?;
                if let Some(token) = &options.token {
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    conn.authenticate(
                        token,
                        options.request_timeout.min(remaining),
                        options.max_line_bytes,
                    )?;
                }
                node.conn.insert(conn)
            }
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        let result = conn.call(
            request,
            options.request_timeout.min(remaining),
            options.max_line_bytes,
        );
        if result.is_err() {
            node.conn = None;
        }
        result
    }
}
