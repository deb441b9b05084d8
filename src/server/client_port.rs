//! The client listener and, per connection, a reader thread and a writer thread.
//!
//! Responses must come back in request order even when a client pipelines. The reader
//! parses each line and appends a slot to the connection's [`ConnQueue`] *in order*:
//! for a request the state thread must answer, it sends the request to the inbox with
//! the slot's own reply channel ([`ReplyTo`]); answers it can give itself (`status`,
//! `bad_request`) go in ready-made. The writer only ever takes filled slots from the
//! front, so a slow write never lets a later fast read overtake it.
//!
//! Backpressure: before a request goes to the inbox, the reader waits for room for
//! its line's bytes on the connection ([`PIPELINE`] slots, [`PIPELINE_BYTES`]) and
//! then in the node ([`CLIENT_BYTES`], `Shared::client_budget`); meanwhile it reads no
//! more, so a client that sends faster than the node commits is slowed by TCP. The
//! bytes come back as answers replace requests and are written (`reply_queue`).
//!
//! **Slow and silent clients.** Each connection has its own reader and writer, so a
//! client that sends slowly, or not at all, holds up only its own reader: other
//! connections, the state thread and this connection's writer (which sends the answers
//! already queued) never wait for it. What it must not do is hold a connection, and
//! its two threads, forever. The reader's reads give up ([`TimedReader`]):
//! - when nothing at all has arrived for [`ClientTimeouts::idle`] (5 min): a dead or
//!   idle client's connection is closed quietly (clients reconnect when they need to);
//! - when a request line is still incomplete [`ClientTimeouts::line`] (30 s) after its
//!   first byte (a slow-loris client, one byte a second): `bad_request`, then closed;
//! - with a client token, when the connection has not authenticated within
//!   [`ClientTimeouts::auth`] (10 s) of opening: `unauthorized`, then closed.
//!
//! The idle and line times count only time the reader spent waiting for the client's
//! bytes, not time it spent waiting for room to queue a request (backpressure is the
//! node's doing, not the client's).
//!
//! **Authentication.** With a client token (`--client-token-file`), a connection's
//! first accepted request must be `{"op":"auth","token":...}`; until then every line
//! is answered `unauthorized` without being looked at further, and a wrong token is
//! answered `unauthorized` and the connection closed. The reader checks it in line
//! order, so a client may pipeline its first requests behind `auth`.
//!
//! **Shared with the HTTP port** (`http`), which differs only in framing: the accept
//! loop and the connection cap of both ports together ([`accept`]), the reader and
//! writer threads around a [`ConnQueue`] ([`serve`]), handing a request on with
//! [`submit`], [`status`] and [`linger`].

use std::{
    io::{self, BufReader, BufWriter, Read, Write},
    net::{Shutdown, TcpListener, TcpStream},
    sync::{atomic::Ordering, Arc},
    thread,
    time::{Duration, Instant},
};

use parking_lot::Mutex;
use serde::Serialize;
use serde_json::{Map, Value};

use super::{
    events::{failure, ReqTag, Via},
    logging::{debug, info, warning, Throttle},
    reply_queue::{ConnQueue, ReplyTo, Slot},
    shared::{Input, Shared},
};
use crate::{
    client::fmt_duration,
    codec::{read_line, write_json_line, Line},
    kv::Command,
    protocol::{
        error_response, ok_response, parse_request, registered_response, ErrorCode, Op, Status,
        Token,
    },
    replica::{ClientOp, Outcome, Replica},
};

/// Most client connections served at once; more are closed at once with a log line.
/// Lowered at start-up to fit the process's open-file limit (see [`connection_cap`]).
pub(crate) const MAX_CONNECTIONS: usize = 4096;
/// File descriptors kept for everything but client connections: WAL segments, the
/// hard-state file and its directory, peer connections.
const RESERVED_FDS: usize = 256;

/// The connection cap for this process: [`MAX_CONNECTIONS`], or less if the soft limit
/// on open files (read from /proc, as std has no getrlimit) would not leave room for the
/// node's own files: running out of descriptors there would stop the node.
pub(crate) fn connection_cap() -> usize {
    let soft = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("Max open files"))?;
            line.split_whitespace().nth(3)?.parse::<usize>().ok()
        });
    match soft {
        Some(limit) => MAX_CONNECTIONS.min(limit.saturating_sub(RESERVED_FDS).max(16)),
        None => MAX_CONNECTIONS,
    }
}
/// Answers outstanding on one connection; a client that pipelines more than this
/// without reading is slowed down by TCP backpressure.
const PIPELINE: usize = 1024;
/// Bytes one connection may hold in the node: requests read and not yet answered plus
/// answers not yet written (`reply_queue`). Far above what small requests ever
/// pipeline (1,024 puts of 100 bytes are about 150 KB), and an eighth of
/// [`CLIENT_BYTES`], so that no few connections can take the whole budget.
pub(crate) const PIPELINE_BYTES: usize = 2 << 20;
/// Bytes all client connections together may hold in the node (`Shared::client_budget`).
/// With the connections' read buffers (one line each, at most `--max-line-bytes`) this
/// is what clients can make a node hold, however many pipeline and however large
/// their values.
pub(crate) const CLIENT_BYTES: usize = 16 << 20;
/// A request line of at most this many bytes is small: it may also use
/// [`CLIENT_RESERVE`], room past [`CLIENT_BYTES`] that large requests cannot take, so
/// that small requests are never held back for long by large ones (`budget`).
pub(crate) const SMALL_REQUEST: usize = 64 << 10;
pub(crate) const CLIENT_RESERVE: usize = 4 << 20;
/// Stack size of connection threads: they parse and serialize small JSON documents.
const STACK: usize = 256 << 10;
/// After an oversized line, how much more input is read and discarded (and for how
/// long) before closing, so the client sees our `bad_request` rather than a reset.
const LINGER_BYTES: usize = 64 << 20;
const LINGER_TIME: Duration = Duration::from_secs(2);
/// A client that does not read its answers for this long is disconnected.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Socket buffer sizes per connection (thousands of connections may be open).
const BUFFER: usize = 16 << 10;

/// How long the client port waits for a client (module documentation,
/// docs/protocol.md §3.1). Tests shorten them with hidden `raftkv node` flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientTimeouts {
    /// A connection on which nothing arrives for this long is closed.
    pub idle: Duration,
    /// A request line must be complete this long after its first byte arrived.
    pub line: Duration,
    /// With a client token: a connection must authenticate this long after opening.
    pub auth: Duration,
}

impl Default for ClientTimeouts {
    /// 5 minutes idle (long enough for any pause in a real conversation, short
    /// enough that dead clients' threads go), 30 s per line, 10 s to authenticate.
    fn default() -> ClientTimeouts {
        ClientTimeouts {
            idle: Duration::from_secs(300),
            line: Duration::from_secs(30),
            auth: Duration::from_secs(10),
        }
    }
}

/// What every connection of the client port shares: its rules, and the throttles of
/// the warnings about clients it closed (a flood of them must not flood the log).
pub(crate) struct ClientPort {
    /// With a token, connections must authenticate first.
    token: Option<Token>,
    timeouts: ClientTimeouts,
    slow_warnings: Mutex<Throttle>,
    auth_warnings: Mutex<Throttle>,
}

impl ClientPort {
    pub(crate) fn new(token: Option<Token>, timeouts: ClientTimeouts) -> ClientPort {
        ClientPort {
            token,
            timeouts,
            slow_warnings: Mutex::new(Throttle::new(Duration::from_secs(10))),
            auth_warnings: Mutex::new(Throttle::new(Duration::from_secs(10))),
        }
    }
}

/// Accepts client connections forever.
pub(crate) fn listen(listener: TcpListener, shared: Arc<Shared>, port: Arc<ClientPort>) {
    match &port.token {
        Some(_) => info!(
            "clients must authenticate with the token of --client-token-file within {} \
             of connecting",
            fmt_duration(port.timeouts.auth)
        ),
        None => info!("client port open to anyone who can reach it (no --client-token-file)"),
    }
    accept(listener, &shared, "client", |stream, slot| {
        let port = Arc::clone(&port);
        let read = move |stream: &TcpStream, queue: &Arc<ConnQueue>, shared: &Shared| {
            read_loop(stream, queue, shared, &port)
        };
        serve(stream, slot, "client", read, write_answer)
    });
}

/// Accepts connections forever and hands each to `serve`, within the node's cap on
/// connections ([`connection_cap`]), which the client port and the HTTP port share
/// (`Shared::client_conns`): both spend the same file descriptors. `whom` names the
/// port in log lines.
pub(crate) fn accept(
    listener: TcpListener,
    shared: &Arc<Shared>,
    whom: &str,
    serve: impl Fn(TcpStream, Arc<ConnSlot>) -> io::Result<()>,
) {
    let mut throttle = Throttle::new(Duration::from_secs(1));
    let mut refusals = Throttle::new(Duration::from_secs(1));
    let cap = connection_cap();
    if cap < MAX_CONNECTIONS {
        warning!(
            "{whom} port: serving at most {cap} client and HTTP connections together: the \
             open-file limit is low (raise it with `ulimit -n` for more)"
        );
    }
    for conn in listener.incoming() {
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                if let Some(more) = throttle.allow() {
                    warning!("accepting a {whom} connection failed: {e} ({more} more such failures not shown)");
                }
                thread::sleep(Duration::from_millis(20)); // e.g. out of descriptors
                continue;
            }
        };
        let open = shared.client_conns.fetch_add(1, Ordering::AcqRel) + 1;
        let slot = ConnSlot(Arc::clone(shared));
        if open > cap {
            if let Some(more) = refusals.allow() {
                warning!(
                    "refusing a {whom} connection from {}: {cap} are open already \
                     ({more} more refusals not shown)",
                    peer(&stream)
                );
            }
            continue; // `slot` and `stream` drop: counter restored, socket closed
        }
        if let Err(e) = serve(stream, Arc::new(slot)) {
            if let Some(more) = refusals.allow() {
                warning!("cannot serve a {whom} connection: {e} ({more} more not shown)");
            }
        }
    }
}

/// Holds one of the [`MAX_CONNECTIONS`] places while any thread of a connection runs.
pub(crate) struct ConnSlot(Arc<Shared>);

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.0.client_conns.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves one connection with two threads around its ordered response queue
/// ([`ConnQueue`]): `read` runs on the reader thread and appends one slot per request,
/// in order (the queue is finished when it returns); the writer thread writes the
/// filled slots from the front with `write`, which says whether to close the
/// connection after the slot it wrote. `whom` names the threads.
pub(crate) fn serve<R, W>(
    stream: TcpStream,
    slot: Arc<ConnSlot>,
    whom: &str,
    read: R,
    write: W,
) -> io::Result<()>
where
    R: FnOnce(&TcpStream, &Arc<ConnQueue>, &Shared) + Send + 'static,
    W: FnMut(&mut BufWriter<&TcpStream>, Slot, &Shared) -> io::Result<After> + Send + 'static,
{
    stream.set_nodelay(true)?;
    // A client that stops reading its answers is dropped rather than holding two
    // threads forever.
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    // Reader and writer share one socket (`&TcpStream` reads and writes): one file
    // descriptor per connection, not two.
    let stream = Arc::new(stream);
    let write_half = Arc::clone(&stream);
    let shared = &slot.0;
    let queue = ConnQueue::new(
        PIPELINE,
        PIPELINE_BYTES,
        Arc::clone(&shared.unwritten),
        Arc::clone(&shared.client_budget),
    );
    let writer_queue = Arc::clone(&queue);
    let writer_slot = Arc::clone(&slot);
    thread::Builder::new()
        .name(format!("{whom}-writer"))
        .stack_size(STACK)
        .spawn(move || write_loop(&write_half, &writer_queue, &writer_slot.0, write))?;
    let spawned = thread::Builder::new()
        .name(format!("{whom}-reader"))
        .stack_size(STACK)
        .spawn({
            let queue = Arc::clone(&queue);
            move || {
                read(&stream, &queue, &slot.0);
                queue.finish_reading();
            }
        });
    if let Err(e) = spawned {
        queue.finish_reading(); // lets the writer end
        return Err(e);
    }
    Ok(())
}

/// Reads request lines until EOF, an error, an oversized line, a wrong token or one
/// of the deadlines of [`ClientTimeouts`].
fn read_loop(stream: &TcpStream, queue: &Arc<ConnQueue>, shared: &Shared, port: &ClientPort) {
    let max = shared.max_line_bytes;
    let mut reader = BufReader::with_capacity(BUFFER, TimedReader::new(stream, port));
    let mut buf = Vec::with_capacity(1024);
    let mut authenticated = port.token.is_none();
    let refusal = loop {
        match read_line(&mut reader, &mut buf, max) {
            Ok(Line::Complete) => {
                match handle_line(&buf, queue, shared, port, &mut authenticated) {
                    Next::Read => {
                        if authenticated {
                            reader.get_mut().authenticated();
                        }
                        if buf.capacity() > 64 << 10 {
                            buf = Vec::with_capacity(1024);
                        }
                    }
                    Next::Gone => return, // the writer is gone: the connection is dead
                    Next::Close(refusal) => {
                        if let Some(more) = port.auth_warnings.lock().allow() {
                            warning!(
                                "client {} gave a wrong token; closing its connection \
                                 ({more} more refused clients not shown)",
                                peer(stream)
                            );
                        }
                        break refusal;
                    }
                }
            }
            // A half line then EOF: nothing to answer (the client is gone).
            Ok(Line::Eof) | Ok(Line::Truncated) => return,
            Ok(Line::TooLong) => {
                break error_response(
                    None,
                    ErrorCode::BadRequest,
                    &format!("request line longer than {max} bytes; closing the connection"),
                    None,
                    None,
                )
            }
            Err(_) => match reader
                .get_ref()
                .expired
                .and_then(|e| expired(e, stream, port))
            {
                Some(refusal) => break refusal,
                // The connection failed (the client is gone), or went idle.
                None => return,
            },
        }
    };
    // A last answer, then the writer sends everything before it and closes.
    queue.push_ready(Slot::Ready(refusal));
    queue.push_ready(Slot::Close);
    queue.finish_reading();
    linger(stream);
}

/// Logs a connection that ran out of time, and returns its last answer (none for an
/// idle one: it is closed quietly).
fn expired(which: Expired, stream: &TcpStream, port: &ClientPort) -> Option<Value> {
    let (code, message) = match which {
        Expired::Idle => {
            debug!(
                "closing the idle client connection from {}: nothing received for {}",
                peer(stream),
                fmt_duration(port.timeouts.idle)
            );
            return None;
        }
        Expired::Line => {
            let within = fmt_duration(port.timeouts.line);
            debug!(
                "closing the client connection from {}: a request line was not complete \
                 within {within} of its first byte",
                peer(stream)
            );
            if let Some(more) = port.slow_warnings.lock().allow() {
                warning!(
                    "closed a client connection from {} that sent a request line too slowly \
                     ({more} more such connections not shown)",
                    peer(stream)
                );
            }
            let message = format!(
                "request line not complete within {within} of its first byte; closing the \
                 connection"
            );
            (ErrorCode::BadRequest, message)
        }
        Expired::Auth => {
            let within = fmt_duration(port.timeouts.auth);
            debug!(
                "closing the client connection from {}: not authenticated within {within}",
                peer(stream)
            );
            if let Some(more) = port.auth_warnings.lock().allow() {
                warning!(
                    "closed a client connection from {} that did not authenticate in time \
                     ({more} more refused clients not shown)",
                    peer(stream)
                );
            }
            let message =
                format!("not authenticated within {within} of connecting; closing the connection");
            (ErrorCode::Unauthorized, message)
        }
    };
    Some(error_response(None, code, &message, None, None))
}

/// The client's address, for log lines.
pub(crate) fn peer(stream: &TcpStream) -> String {
    stream
        .peer_addr()
        .map_or_else(|_| "?".into(), |a| a.to_string())
}

/// What the reader does after a line.
enum Next {
    /// Read the next line.
    Read,
    /// Send this answer after those queued, then close (a wrong token).
    Close(Value),
    /// The connection's writer has gone: stop.
    Gone,
}

/// Answers one request line.
fn handle_line(
    line: &[u8],
    queue: &Arc<ConnQueue>,
    shared: &Shared,
    port: &ClientPort,
    authenticated: &mut bool,
) -> Next {
    let pushed = |ok: bool| if ok { Next::Read } else { Next::Gone };
    let parsed = parse_request(line);
    if let Ok(request) = &parsed {
        if let Op::Auth { token } = &request.op {
            if !port.token.as_ref().is_none_or(|t| t.matches(token)) {
                return Next::Close(error_response(
                    request.id.clone(),
                    ErrorCode::Unauthorized,
                    "wrong token; closing the connection",
                    None,
                    None,
                ));
            }
            *authenticated = true;
            return pushed(
                queue.push_ready(Slot::Ready(ok_response(request.id.clone(), Map::new()))),
            );
        }
    }
    if !*authenticated {
        // Nothing but the id of a line is looked at before authentication.
        let id = match parsed {
            Ok(request) => request.id,
            Err(bad) => bad.id,
        };
        let refusal = error_response(
            id,
            ErrorCode::Unauthorized,
            "authentication required: send {\"op\":\"auth\",\"token\":\"...\"} first",
            None,
            None,
        );
        return pushed(queue.push_ready(Slot::Ready(refusal)));
    }
    let request = match parsed {
        Ok(r) => r,
        Err(bad) => {
            let v = error_response(bad.id, ErrorCode::BadRequest, &bad.message, None, None);
            return pushed(queue.push_ready(Slot::Ready(v)));
        }
    };
    let op = match request.op {
        Op::Status => return pushed(queue.push_ready(Slot::Ready(status(request.id, shared)))),
        Op::Get { key, stale } => ClientOp::Get { key, stale },
        Op::Write { key, op, session } => ClientOp::Write(Command::write(key, op, session)),
        Op::Register => ClientOp::Register,
        Op::Auth { .. } => unreachable!("answered above"),
    };
    let tag = shared
        .events
        .active()
        .then(|| shared.events.request(&op, Via::Line));
    // The request line's length stands for what the request holds until answered
    // (its parsed form is no larger).
    let queued = submit(queue, shared, request.id, line.len(), tag, |reply| {
        // If the state thread has stopped, the request is dropped here and its reply
        // channel answers `unavailable` as it goes.
        let _ = shared.inbox.send(Input::Request(op, reply));
    });
    pushed(queued)
}

/// Appends the slot of a request that is answered later, through its [`ReplyTo`]:
/// `deliver` hands that on (to the state thread, or to the HTTP port's forwarding),
/// unless the node is shutting down. This may wait for room on the connection and in
/// the node, `bytes` standing for what the request holds until answered
/// (backpressure); `tag` is the request's number for events, if it has one. False if
/// the connection's writer is gone.
pub(crate) fn submit(
    queue: &Arc<ConnQueue>,
    shared: &Shared,
    id: Option<Value>,
    bytes: usize,
    tag: Option<ReqTag>,
    deliver: impl FnOnce(ReplyTo),
) -> bool {
    let Some(reply) = queue.push_pending(id, bytes) else {
        return false;
    };
    let reply = reply.tagged(tag);
    if shared.is_shutting_down() {
        reply.send(Outcome::shutting_down());
    } else {
        deliver(reply);
    }
    true
}

/// Which deadline of [`ClientTimeouts`] ended a read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expired {
    Idle,
    Line,
    Auth,
}

/// The connection's socket as its reader sees it: each read waits at most until the
/// nearest deadline of [`ClientTimeouts`] and then fails with `TimedOut`, saying which
/// in [`TimedReader::expired`].
///
/// It follows the line framing itself (it sees every byte before the line reader
/// does): a line is open from its first byte until its `\n`. The idle and line
/// deadlines count the time spent blocked in `read`, so time the reader spent
/// elsewhere (waiting for room to queue a request) is never held against the client.
/// The socket's read timeout is only changed when it is longer than the time left (a
/// shorter one just wakes the reader to look again), so a busy connection makes no
/// extra system call per read.
struct TimedReader<'a> {
    stream: &'a TcpStream,
    timeouts: ClientTimeouts,
    /// Time spent blocked in reads since the last byte arrived.
    idle: Duration,
    /// Time spent blocked in reads since the first byte of the open line; `None`
    /// between lines.
    line: Option<Duration>,
    /// When a connection that has not authenticated is closed; `None` once it has (or
    /// when the node needs no token).
    auth_deadline: Option<Instant>,
    /// The read timeout last set on the socket.
    timeout_set: Option<Duration>,
    /// The deadline that ended the last read, if one did.
    expired: Option<Expired>,
}

impl<'a> TimedReader<'a> {
    fn new(stream: &'a TcpStream, port: &ClientPort) -> TimedReader<'a> {
        TimedReader {
            stream,
            timeouts: port.timeouts,
            idle: Duration::ZERO,
            line: None,
            auth_deadline: port
                .token
                .as_ref()
                .map(|_| Instant::now() + port.timeouts.auth),
            timeout_set: None,
            expired: None,
        }
    }

    /// The connection authenticated: no more deadline for that.
    fn authenticated(&mut self) {
        self.auth_deadline = None;
    }

    /// The nearest deadline: how long the next read may wait, and which it is.
    fn time_left(&self) -> (Duration, Expired) {
        let mut left = (self.timeouts.idle.saturating_sub(self.idle), Expired::Idle);
        if let Some(waited) = self.line {
            let line = self.timeouts.line.saturating_sub(waited);
            if line < left.0 {
                left = (line, Expired::Line);
            }
        }
        if let Some(deadline) = self.auth_deadline {
            let auth = deadline.saturating_duration_since(Instant::now());
            if auth < left.0 {
                left = (auth, Expired::Auth);
            }
        }
        left
    }

    /// Accounts for one read that waited `waited` and returned `bytes`.
    fn received(&mut self, bytes: &[u8], waited: Duration) {
        self.idle = if bytes.is_empty() {
            self.idle + waited
        } else {
            Duration::ZERO
        };
        match bytes.iter().rposition(|&b| b == b'\n') {
            // The open line (if any) ended; bytes after its `\n` open the next one.
            Some(end) => self.line = (end + 1 < bytes.len()).then_some(Duration::ZERO),
            None if bytes.is_empty() => {
                if let Some(line) = &mut self.line {
                    *line += waited;
                }
            }
            None => self.line = Some(self.line.map_or(Duration::ZERO, |line| line + waited)),
        }
    }
}

impl Read for TimedReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let (left, which) = self.time_left();
            if left.is_zero() {
                self.expired = Some(which);
                return Err(io::Error::new(io::ErrorKind::TimedOut, "client too slow"));
            }
            if self.timeout_set.is_none_or(|set| set > left) {
                self.stream.set_read_timeout(Some(left))?;
                self.timeout_set = Some(left);
            }
            let started = Instant::now();
            let mut stream = self.stream;
            match stream.read(buf) {
                Ok(n) => {
                    self.received(&buf[..n], started.elapsed());
                    return Ok(n);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    self.received(&[], started.elapsed());
                    // Woken by a timeout shorter than the time left: set the full one.
                    self.timeout_set = None;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Reads and discards input for a while, so that closing the socket does not reset
/// the connection (and destroy our last response) while the client is still sending.
pub(crate) fn linger(mut stream: &TcpStream) {
    let deadline = Instant::now() + LINGER_TIME;
    let mut scratch = [0u8; 16 << 10];
    let mut left = LINGER_BYTES;
    while left > 0 {
        let now = Instant::now();
        if now >= deadline || stream.set_read_timeout(Some(deadline - now)).is_err() {
            return;
        }
        match stream.read(&mut scratch) {
            Ok(0) | Err(_) => return,
            Ok(n) => left = left.saturating_sub(n),
        }
    }
}

/// What a connection's writer does after writing one answer.
pub(super) enum After {
    /// Goes on with the next answer.
    Next,
    /// Closes the connection.
    Close,
    /// Hands the rest of the connection to a stream (`GET /v1/events`), then closes it.
    /// A stream can last for hours, so the answers written before it are given back to
    /// the budgets first: left counted, a few large ones before a stream would hold the
    /// node-wide client budget, and every reader on the node would wait for it.
    Stream(fn(&mut BufWriter<&TcpStream>, &Shared) -> io::Result<()>),
}

/// Writes answers in request order with `write` until the reader is done and
/// everything is written, `write` asks to close, or the client goes away. Flushes only
/// when no further answer is ready.
fn write_loop(
    stream: &TcpStream,
    queue: &ConnQueue,
    shared: &Shared,
    mut write: impl FnMut(&mut BufWriter<&TcpStream>, Slot, &Shared) -> io::Result<After>,
) {
    let mut out = BufWriter::with_capacity(BUFFER, stream);
    let mut batch = Vec::new();
    // Answers taken and not yet flushed to the socket, and their bytes.
    let (mut unflushed, mut unflushed_bytes) = (0, 0);
    let result = (|| -> io::Result<()> {
        loop {
            // Take what is ready without waiting; only when nothing is, flush and wait.
            queue.take_filled(&mut batch, false);
            if batch.is_empty() {
                out.flush()?;
                let n = std::mem::take(&mut unflushed);
                queue.written(n, std::mem::take(&mut unflushed_bytes));
                if !queue.take_filled(&mut batch, true) {
                    return Ok(());
                }
            }
            unflushed += batch.len();
            unflushed_bytes += batch.iter().map(Slot::bytes).sum::<usize>();
            for slot in batch.drain(..) {
                match write(&mut out, slot, shared)? {
                    After::Next => continue,
                    After::Close => {}
                    After::Stream(stream) => {
                        out.flush()?;
                        let n = std::mem::take(&mut unflushed);
                        queue.written(n, std::mem::take(&mut unflushed_bytes));
                        stream(&mut out, shared)?;
                    }
                }
                out.flush()?;
                out.get_ref().shutdown(Shutdown::Write)?;
                return Ok(());
            }
        }
    })();
    if let Err(e) = &result {
        debug!("connection ended: {e}");
    }
    queue.written(unflushed, unflushed_bytes);
    queue.writer_stopped();
}

/// Writes one answer of the line protocol; closes after [`Slot::Close`].
fn write_answer(out: &mut BufWriter<&TcpStream>, slot: Slot, shared: &Shared) -> io::Result<After> {
    match slot {
        Slot::Answered {
            id, outcome, tag, ..
        } => {
            let answered = tag.map(|tag| (tag, failure(&outcome)));
            write_outcome(out, id.as_ref(), outcome, shared)?;
            if let Some((tag, failure)) = answered {
                shared.events.reply(tag, failure);
            }
        }
        Slot::Ready(v) => write_json_line(out, &v)?,
        Slot::Close => return Ok(After::Close),
        Slot::Pending => unreachable!("only filled slots are taken"),
    }
    Ok(After::Next)
}

/// `{"id":..,"ok":true}` or `{"id":..,"ok":true,"value":..}`, serialized directly.
#[derive(Serialize)]
struct Success<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a Value>,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<Option<&'a str>>,
}

fn write_outcome(
    out: &mut impl Write,
    id: Option<&Value>,
    outcome: Outcome,
    shared: &Shared,
) -> io::Result<()> {
    match outcome {
        Outcome::Written => write_json_line(
            out,
            &Success {
                id,
                ok: true,
                value: None,
            },
        ),
        Outcome::Registered(session) => {
            write_json_line(out, &registered_response(id.cloned(), session))
        }
        Outcome::Value(v) => write_json_line(
            out,
            &Success {
                id,
                ok: true,
                value: Some(v.as_deref()),
            },
        ),
        Outcome::Failed {
            code,
            message,
            leader,
        } => {
            let v = error_response(
                id.cloned(),
                code,
                &message,
                leader,
                shared.client_addr(leader),
            );
            write_json_line(out, &v)
        }
    }
}

/// This node's view of the cluster, from a brief look under the mutex.
pub(crate) fn status(id: Option<Value>, shared: &Shared) -> Value {
    status_with(id, shared, |_, _| {})
}

/// [`status`], with the fields `more` adds from the same look under the mutex (the
/// HTTP port's detail for the dashboard), so that they agree with the rest.
pub(crate) fn status_with(
    id: Option<Value>,
    shared: &Shared,
    more: impl FnOnce(&Replica<ReplyTo>, &mut Map<String, Value>),
) -> Value {
    let mut extra = Map::new();
    let status = {
        let r = shared.replica.lock();
        more(&r, &mut extra);
        let n = r.node();
        Status {
            node: n.id(),
            role: n.role().as_str().to_string(),
            term: n.term(),
            leader: n.leader(),
            leader_addr: None,
            commit_index: n.commit_index(),
            applied_index: n.applied_index(),
            last_log_index: n.last_index(),
            members: n.members(),
            snapshot_index: r.snapshot().index,
            snapshot_term: r.snapshot().term,
            first_log_index: n.log().first_index(),
            wal_bytes: shared.wal_bytes.load(Ordering::Relaxed),
            sessions: r.store().sessions() as u64,
        }
    };
    let status = Status {
        leader_addr: shared.client_addr(status.leader).map(str::to_string),
        ..status
    };
    let mut fields = match serde_json::to_value(&status) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(), // cannot happen: Status is a plain struct
    };
    fields.extend(extra);
    ok_response(id, fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Both ends of a loopback connection: (the client's, the node's).
    fn socket_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        (client, listener.accept().unwrap().0)
    }

    fn port(token: Option<&str>, idle: u32, line: u32, auth: u32) -> ClientPort {
        ClientPort::new(
            token.and_then(Token::new),
            ClientTimeouts {
                idle: idle * MS,
                line: line * MS,
                auth: auth * MS,
            },
        )
    }

    #[test]
    fn a_line_is_open_from_its_first_byte_to_its_newline() {
        let (_client, node) = socket_pair();
        let port = port(None, 1000, 100, 1000);
        let mut r = TimedReader::new(&node, &port);
        r.received(b"", 40 * MS); // silence between lines counts as idle only
        assert_eq!((r.idle, r.line), (40 * MS, None));
        r.received(b"{\"op\"", 5 * MS);
        assert_eq!((r.idle, r.line), (Duration::ZERO, Some(Duration::ZERO)));
        r.received(b":", 30 * MS);
        r.received(b"", 30 * MS);
        assert_eq!((r.idle, r.line), (30 * MS, Some(60 * MS)));
        assert_eq!(r.time_left(), (40 * MS, Expired::Line));
        // The line ends and the next begins in the same chunk: a fresh start.
        r.received(b"\"status\"}\n{\"op", 10 * MS);
        assert_eq!(r.line, Some(Duration::ZERO));
        r.received(b"\":\"status\"}\n", 10 * MS);
        assert_eq!((r.idle, r.line), (Duration::ZERO, None));
        assert_eq!(r.time_left(), (1000 * MS, Expired::Idle));
    }

    #[test]
    fn an_unauthenticated_connection_has_until_its_deadline() {
        let (_client, node) = socket_pair();
        let port = port(Some("t"), 1000, 1000, 300);
        let mut r = TimedReader::new(&node, &port);
        let (left, which) = r.time_left();
        assert_eq!(which, Expired::Auth);
        assert!(left <= 300 * MS && left > 200 * MS, "{left:?}");
        r.authenticated();
        assert_eq!(r.time_left(), (1000 * MS, Expired::Idle));
    }

    /// Reads through a `TimedReader` until it fails; returns what was read, which
    /// deadline ended it and when.
    fn read_until_expired(
        node: &TcpStream,
        port: &ClientPort,
    ) -> (Vec<u8>, Option<Expired>, Duration) {
        let started = Instant::now();
        let mut r = TimedReader::new(node, port);
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        loop {
            match r.read(&mut buf) {
                Ok(0) => return (got, None, started.elapsed()),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(_) => return (got, r.expired, started.elapsed()),
            }
        }
    }

    #[test]
    fn a_slow_loris_is_cut_off_by_the_line_deadline_and_a_silent_client_by_the_idle_one() {
        let (mut client, node) = socket_pair();
        let port = port(None, 150, 300, 1000);
        // One byte every 50 ms, never a newline: never idle, but the line never ends.
        let writer = thread::spawn(move || {
            for _ in 0..40 {
                if client.write_all(b"x").is_err() {
                    return;
                }
                thread::sleep(50 * MS);
            }
        });
        let (got, expired, after) = read_until_expired(&node, &port);
        assert_eq!(expired, Some(Expired::Line));
        assert!(after >= 300 * MS && after < 1500 * MS, "{after:?}");
        assert!(got.len() >= 4, "{got:?}");
        drop(node);
        writer.join().unwrap();

        // Whole lines as slowly: the line deadline never fires; silence ends it.
        let (mut client, node) = socket_pair();
        let writer = thread::spawn(move || {
            for _ in 0..8 {
                client.write_all(b"{}\n").unwrap();
                thread::sleep(50 * MS);
            }
            client // kept open, silent
        });
        let (got, expired, after) = read_until_expired(&node, &port);
        assert_eq!(expired, Some(Expired::Idle));
        assert_eq!(got, b"{}\n".repeat(8));
        assert!(after >= 500 * MS, "{after:?}");
        drop(writer.join().unwrap());
    }
}
