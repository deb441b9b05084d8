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

use std::{
    io::{self, BufReader, BufWriter, Read, Write},
    net::{Shutdown, TcpListener, TcpStream},
    sync::{atomic::Ordering, Arc},
    thread,
    time::{Duration, Instant},
};

use serde::Serialize;
use serde_json::{Map, Value};

use super::{
    logging::{debug, warning, Throttle},
    reply_queue::{ConnQueue, Slot},
    shared::{Input, Shared},
};
use crate::{
    codec::{read_line, write_json_line, Line},
    kv::Command,
    protocol::{
        error_response, ok_response, parse_request, registered_response, ErrorCode, Op, Status,
    },
    replica::{ClientOp, Outcome},
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

/// Accepts client connections forever.
pub(crate) fn listen(listener: TcpListener, shared: Arc<Shared>) {
    let mut throttle = Throttle::new(Duration::from_secs(1));
    let mut refusals = Throttle::new(Duration::from_secs(1));
    let cap = connection_cap();
    if cap < MAX_CONNECTIONS {
        warning!(
            "serving at most {cap} client connections: the open-file limit is low \
             (raise it with `ulimit -n` for more)"
        );
    }
    for conn in listener.incoming() {
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                if let Some(more) = throttle.allow() {
                    warning!("accepting a client connection failed: {e} ({more} more such failures not shown)");
                }
                thread::sleep(Duration::from_millis(20)); // e.g. out of descriptors
                continue;
            }
        };
        let open = shared.client_conns.fetch_add(1, Ordering::AcqRel) + 1;
        let slot = ConnSlot(Arc::clone(&shared));
        if open > cap {
            if let Some(more) = refusals.allow() {
                warning!(
                    "refusing a client connection from {}: {cap} are open already \
                     ({more} more refusals not shown)",
                    stream
                        .peer_addr()
                        .map_or_else(|_| "?".into(), |a| a.to_string())
                );
            }
            continue; // `slot` and `stream` drop: counter restored, socket closed
        }
        if let Err(e) = start(stream, Arc::new(slot)) {
            if let Some(more) = refusals.allow() {
                warning!("cannot serve a client connection: {e} ({more} more not shown)");
            }
        }
    }
}

/// Holds one of the [`MAX_CONNECTIONS`] places while any thread of a connection runs.
struct ConnSlot(Arc<Shared>);

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.0.client_conns.fetch_sub(1, Ordering::AcqRel);
    }
}

fn start(stream: TcpStream, slot: Arc<ConnSlot>) -> io::Result<()> {
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
        .name("client-writer".into())
        .stack_size(STACK)
        .spawn(move || write_loop(write_half, &writer_queue, &writer_slot.0))?;
    let spawned = thread::Builder::new()
        .name("client-reader".into())
        .stack_size(STACK)
        .spawn({
            let queue = Arc::clone(&queue);
            move || {
                read_loop(&stream, &queue, &slot.0);
                queue.finish_reading();
            }
        });
    if let Err(e) = spawned {
        queue.finish_reading(); // lets the writer end
        return Err(e);
    }
    Ok(())
}

/// Reads request lines until EOF, an error or an oversized line.
fn read_loop(stream: &TcpStream, queue: &Arc<ConnQueue>, shared: &Shared) {
    let max = shared.max_line_bytes;
    let mut reader = BufReader::with_capacity(BUFFER, stream);
    let mut buf = Vec::with_capacity(1024);
    loop {
        match read_line(&mut reader, &mut buf, max) {
            Ok(Line::Complete) => {
                if !handle_line(&buf, queue, shared) {
                    return; // the writer is gone: the connection is dead
                }
                if buf.capacity() > 64 << 10 {
                    buf = Vec::with_capacity(1024);
                }
            }
            // A half line then EOF: nothing to answer (the client is gone).
            Ok(Line::Eof) | Ok(Line::Truncated) | Err(_) => return,
            Ok(Line::TooLong) => {
                let refusal = error_response(
                    None,
                    ErrorCode::BadRequest,
                    &format!("request line longer than {max} bytes; closing the connection"),
                    None,
                    None,
                );
                queue.push_ready(Slot::Ready(refusal));
                queue.push_ready(Slot::Close);
                queue.finish_reading();
                linger(reader.into_inner());
                return;
            }
        }
    }
}

/// Answers one request line; false if the connection's writer has gone.
fn handle_line(line: &[u8], queue: &Arc<ConnQueue>, shared: &Shared) -> bool {
    let request = match parse_request(line) {
        Ok(r) => r,
        Err(bad) => {
            let v = error_response(bad.id, ErrorCode::BadRequest, &bad.message, None, None);
            return queue.push_ready(Slot::Ready(v));
        }
    };
    let op = match request.op {
        Op::Status => return queue.push_ready(Slot::Ready(status(request.id, shared))),
        Op::Get { key, stale } => ClientOp::Get { key, stale },
        Op::Write { key, op, session } => ClientOp::Write(Command::write(key, op, session)),
        Op::Register => ClientOp::Register,
    };
    // The request line's length stands for what the request holds until answered
    // (its parsed form is no larger). This may wait: backpressure.
    let Some(reply) = queue.push_pending(request.id, line.len()) else {
        return false;
    };
    if shared.is_shutting_down() {
        reply.send(Outcome::shutting_down());
        return true;
    }
    // If the state thread has stopped, the request is dropped here and its reply
    // channel answers `unavailable` as it goes.
    let _ = shared.inbox.send(Input::Request(op, reply));
    true
}

/// Reads and discards input for a while, so that closing the socket does not reset
/// the connection (and destroy our last response) while the client is still sending.
fn linger(mut stream: &TcpStream) {
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

/// Writes answers in request order until the reader is done and everything is
/// written, or the client goes away. Flushes only when no further answer is ready.
fn write_loop(stream: Arc<TcpStream>, queue: &ConnQueue, shared: &Shared) {
    let mut out = BufWriter::with_capacity(BUFFER, &*stream);
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
                match slot {
                    Slot::Answered { id, outcome, .. } => {
                        write_outcome(&mut out, id.as_ref(), outcome, shared)?
                    }
                    Slot::Ready(v) => write_json_line(&mut out, &v)?,
                    Slot::Close => {
                        out.flush()?;
                        out.get_ref().shutdown(Shutdown::Write)?;
                        return Ok(());
                    }
                    Slot::Pending => unreachable!("only filled slots are taken"),
                }
            }
        }
    })();
    if let Err(e) = &result {
        debug!("client connection ended: {e}");
    }
    queue.written(unflushed, unflushed_bytes);
    queue.writer_stopped();
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
fn status(id: Option<Value>, shared: &Shared) -> Value {
    let status = {
        let r = shared.replica.lock();
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
    let fields = match serde_json::to_value(&status) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(), // cannot happen: Status is a plain struct
    };
    ok_response(id, fields)
}
