//! The client listener and, per connection, a reader thread and a writer thread.
//!
//! Responses must come back in request order even when a client pipelines. The reader
//! parses each line and, for a request the state thread must answer, creates a
//! `bounded(1)` reply channel, queues `(id, receiver)` to the writer *in order* and
//! sends the request with the reply sender to the inbox. The writer waits on each
//! receiver in turn, so a slow write never lets a later fast read overtake it. Answers
//! the reader can give itself (`status`, `bad_request`) are queued ready-made in the
//! same order.

use std::{
    io::{self, BufReader, BufWriter, Read, Write},
    net::{Shutdown, TcpListener, TcpStream},
    sync::{atomic::Ordering, Arc},
    thread,
    time::{Duration, Instant},
};

use crossbeam_channel::{bounded, Receiver, Sender, TryRecvError};
use serde::Serialize;
use serde_json::{Map, Value};

use super::{
    log::{debug, warning},
    shared::{Input, Shared, Unwritten},
    state::shutting_down_outcome,
};
use crate::{
    codec::{read_line, write_json_line, Line},
    kv::Command,
    protocol::{error_response, ok_response, parse_request, ErrorCode, Op, Status},
    replica::{ClientOp, Outcome},
};

/// Most client connections served at once; more are closed at once with a log line.
pub(crate) const MAX_CONNECTIONS: usize = 4096;
/// Responses queued for one connection's writer; a client that pipelines more than
/// this without reading is slowed down by TCP backpressure.
const PIPELINE: usize = 1024;
/// Stack size of connection threads: they parse and serialize small JSON documents.
const STACK: usize = 256 << 10;
/// After an oversized line, how much more input is read and discarded (and for how
/// long) before closing, so the client sees our `bad_request` rather than a reset.
const LINGER_BYTES: usize = 64 << 20;
const LINGER_TIME: Duration = Duration::from_secs(2);

/// One response slot in a connection's writer queue.
struct Pending {
    what: Answer,
    _count: Unwritten,
}

enum Answer {
    /// Wait for the state thread's outcome.
    Wait {
        id: Option<Value>,
        rx: Receiver<Outcome>,
    },
    /// Already known (status, bad_request).
    Ready(Value),
    /// Write what came before, then close our sending side.
    Close,
}

/// Accepts client connections forever.
pub(crate) fn listen(listener: TcpListener, shared: Arc<Shared>) {
    for conn in listener.incoming() {
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                warning!("accepting a client connection failed: {e}");
                thread::sleep(Duration::from_millis(20)); // e.g. out of descriptors
                continue;
            }
        };
        let open = shared.client_conns.fetch_add(1, Ordering::AcqRel) + 1;
        let slot = ConnSlot(Arc::clone(&shared));
        if open > MAX_CONNECTIONS {
            warning!(
                "refusing a client connection from {}: {MAX_CONNECTIONS} are open already",
                stream
                    .peer_addr()
                    .map_or_else(|_| "?".into(), |a| a.to_string())
            );
            continue; // `slot` and `stream` drop: counter restored, socket closed
        }
        if let Err(e) = start(stream, Arc::new(slot)) {
            warning!("cannot serve a client connection: {e}");
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
    let write_half = stream.try_clone()?;
    let (tx, rx) = bounded::<Pending>(PIPELINE);
    let writer_slot = Arc::clone(&slot);
    thread::Builder::new()
        .name("client-writer".into())
        .stack_size(STACK)
        .spawn(move || write_loop(write_half, &rx, &writer_slot.0))?;
    thread::Builder::new()
        .name("client-reader".into())
        .stack_size(STACK)
        .spawn(move || read_loop(stream, &tx, &slot.0))?;
    Ok(())
}

/// Reads request lines until EOF, an error or an oversized line.
fn read_loop(stream: TcpStream, out: &Sender<Pending>, shared: &Arc<Shared>) {
    let max = shared.max_line_bytes;
    let mut reader = BufReader::with_capacity(64 << 10, stream);
    let mut buf = Vec::with_capacity(1024);
    loop {
        match read_line(&mut reader, &mut buf, max) {
            Ok(Line::Complete) => {
                if !handle_line(&buf, out, shared) {
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
                let _ = send(out, shared, Answer::Ready(refusal));
                let _ = send(out, shared, Answer::Close);
                linger(reader.into_inner());
                return;
            }
        }
    }
}

/// Answers one request line; false if the connection's writer has gone.
fn handle_line(line: &[u8], out: &Sender<Pending>, shared: &Arc<Shared>) -> bool {
    let request = match parse_request(line) {
        Ok(r) => r,
        Err(bad) => {
            let v = error_response(bad.id, ErrorCode::BadRequest, &bad.message, None, None);
            return send(out, shared, Answer::Ready(v));
        }
    };
    let op = match request.op {
        Op::Status => return send(out, shared, Answer::Ready(status(request.id, shared))),
        Op::Get { key, stale } => ClientOp::Get { key, stale },
        Op::Write { key, op, session } => ClientOp::Write(Command { key, op, session }),
    };
    let (reply, rx) = bounded(1);
    if !send(out, shared, Answer::Wait { id: request.id, rx }) {
        return false;
    }
    if shared.is_shutting_down() {
        let _ = reply.try_send(shutting_down_outcome());
        return true;
    }
    // If the state thread has stopped, the request and its reply sender are dropped
    // here and the writer answers `unavailable`.
    let _ = shared.inbox.send(Input::Request(op, reply));
    true
}

fn send(out: &Sender<Pending>, shared: &Arc<Shared>, what: Answer) -> bool {
    let pending = Pending {
        what,
        _count: Unwritten::new(shared),
    };
    out.send(pending).is_ok()
}

/// Reads and discards input for a while, so that closing the socket does not reset
/// the connection (and destroy our last response) while the client is still sending.
fn linger(mut stream: TcpStream) {
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

/// Writes answers in queue order until the queue closes or the client goes away.
fn write_loop(stream: TcpStream, queue: &Receiver<Pending>, shared: &Shared) {
    let mut out = BufWriter::with_capacity(64 << 10, stream);
    // Answers written but not yet flushed still count as unwritten, so a shutting-down
    // node waits for them to reach the socket.
    let mut unflushed: Vec<Unwritten> = Vec::new();
    let result = (|| -> io::Result<()> {
        loop {
            let pending = match queue.try_recv() {
                Ok(p) => p,
                Err(TryRecvError::Empty) => {
                    out.flush()?;
                    unflushed.clear();
                    match queue.recv() {
                        Ok(p) => p,
                        Err(_) => break,
                    }
                }
                Err(TryRecvError::Disconnected) => break,
            };
            let Pending {
                what,
                _count: count,
            } = pending;
            unflushed.push(count);
            match what {
                Answer::Wait { id, rx } => {
                    let outcome = match rx.try_recv() {
                        Ok(o) => o,
                        Err(_) => {
                            out.flush()?;
                            // Earlier answers reached the socket; this one did not.
                            let current = unflushed.pop();
                            unflushed.clear();
                            unflushed.extend(current);
                            rx.recv().unwrap_or_else(|_| shutting_down_outcome())
                        }
                    };
                    write_outcome(&mut out, id.as_ref(), outcome, shared)?;
                }
                Answer::Ready(v) => write_json_line(&mut out, &v)?,
                Answer::Close => {
                    out.flush()?;
                    out.get_ref().shutdown(Shutdown::Write)?;
                    return Ok(());
                }
            }
        }
        out.flush()
    })();
    if let Err(e) = result {
        debug!("client connection ended: {e}");
    }
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
