//! The HTTP API (docs/protocol.md §5): HTTP/1.1 on the node's `http` address, one more
//! front door beside the client port, with the same requests, guarantees and bounds.
//!
//! **The same requests.** Each HTTP request is turned into the request object a client
//! would send on the client port ([`routes`]) and parsed by the same parser, so both
//! ports check the same things with the same messages. The request then travels the
//! client port's road: a slot in the connection's ordered response queue (`ConnQueue`),
//! the same inbox, the same state thread, the same byte budgets and backpressure, the
//! same reply path (`ReplyTo`). Only the framing differs, and the rendering: an outcome
//! becomes a status and a body ([`response`]).
//!
//! **Threads.** As on the client port, each connection has a reader thread and a writer
//! thread (`client_port::serve`), and the two ports share one cap on connections. The
//! reader reads a request ([`parse`]), appends its slot, and reads the next, so
//! pipelined requests are answered in order by construction. How to write each answer
//! (JSON or a raw value, a status of its own, closing after it) is decided by the reader
//! and needed by the writer: it travels beside the slot in a FIFO of [`Shape`]s, one per
//! slot, pushed and taken in the same order.
//!
//! **Forwarding, not redirecting.** A follower that gets a request needing the leader (a
//! write, a linearizable get, `register`) sends it to the leader's client port and
//! relays the answer ([`forward`]); a stale get and `status` are answered locally. A 307
//! redirect would leave the work to the client, and many do not do it: curl follows no
//! redirect without `-L`, and after a 301/302 turns a POST into a GET, and scripts and
//! `fetch` callers resend bodies inconsistently. Forwarding also keeps exactly-once: the
//! forwarded write carries its `client`/`seq` (or `session`/`seq`) and is sent once;
//! if the connection is lost after sending, the answer is `timeout` (504), the client's
//! retry with the same numbers learns the outcome. The reader forwards in its own
//! thread, so a forward holds up only its own connection, and (as for a request the
//! state thread answers) its bytes count in the budgets until its answer is written.
//!
//! **Limits.** Request heads up to 16 KiB and 64 header fields (431 beyond); bodies up to
//! `--max-line-bytes` by `Content-Length` (413 beyond); `Transfer-Encoding` (chunked) is
//! refused with 411: a client that can send chunked can send a length, and one framing
//! is one less to get wrong. A connection idle between requests for the client port's
//! idle time is closed, and a request must be complete within its line time of its
//! first byte (408). Any request whose framing is in doubt is answered and the
//! connection closed; every other bad request is answered 400 and the connection stays.
//!
//! **The event stream** (`GET /v1/events`, [`event_stream`]) is the one answer that does
//! not come from a request: the reader stops after it and the connection's writer
//! thread streams the node's events until the client goes away.
//!
//! **Authentication.** With `--client-token-file`, every request needs
//! `Authorization: Bearer <token>`: without one it is answered 401 (the connection
//! stays); with a wrong one 401 and the connection is closed, as the client port
//! closes after a wrong `auth`. The comparison is [`Token::matches`]: constant time.
//!
//! **The dashboard** ([`dashboard`]): `GET /` is a page compiled into the binary, which
//! reads every node's `GET /v1/status?log=N` (status with the detail it shows) and
//! event stream. Status answers carry `Access-Control-Allow-Origin: *` so that a page
//! served by one node can read the others; key reads do not.

mod dashboard;
mod event_stream;
mod forward;
mod parse;
mod response;
mod routes;

use std::{
    collections::VecDeque,
    io::{self, BufWriter},
    net::{TcpListener, TcpStream},
    sync::Arc,
    time::Duration,
};

use parking_lot::Mutex;
use serde_json::Value;

use super::{
    client_port::{accept, linger, peer, serve, status, submit, After, ClientTimeouts},
    events::{emit, failure, Via, What},
    logging::{debug, info, warning, Throttle},
    reply_queue::{ConnQueue, Slot},
    shared::{Input, Shared},
};
use crate::{
    client::fmt_duration,
    kv::Command,
    protocol::{parse_request_object, Op, Token},
    raft::NodeId,
    replica::ClientOp,
};
use forward::{Forwarder, Leader};
use parse::{Head, Incoming, ReadError};
use response::Shape;
use routes::{Call, NoRoute};

/// What every connection of the HTTP port shares.
pub(crate) struct HttpPort {
    /// With a token, every request must carry it.
    token: Option<Token>,
    /// The client port's deadlines: `idle` between requests, `line` for one request.
    timeouts: ClientTimeouts,
    forwarder: Forwarder,
    /// Throttles for the warnings about refused and slow clients.
    auth_warnings: Mutex<Throttle>,
    slow_warnings: Mutex<Throttle>,
}

impl HttpPort {
    pub(crate) fn new(token: Option<Token>, timeouts: ClientTimeouts, tick_ms: u64) -> HttpPort {
        HttpPort {
            forwarder: Forwarder::new(token.clone(), tick_ms),
            token,
            timeouts,
            auth_warnings: Mutex::new(Throttle::new(Duration::from_secs(10))),
            slow_warnings: Mutex::new(Throttle::new(Duration::from_secs(10))),
        }
    }
}

/// Accepts HTTP connections forever.
pub(crate) fn listen(listener: TcpListener, shared: Arc<Shared>, port: Arc<HttpPort>) {
    let addr = listener
        .local_addr()
        .map_or_else(|_| "?".into(), |a| a.to_string());
    match &port.token {
        Some(_) => info!(
            "HTTP API on {addr}; requests need Authorization: Bearer with the token of \
             --client-token-file"
        ),
        None => info!("HTTP API on {addr}, open to anyone who can reach it"),
    }
    accept(listener, &shared, "http", |stream, slot| {
        let shapes = Arc::new(Shapes::default());
        let (port, writer_shapes) = (Arc::clone(&port), Arc::clone(&shapes));
        let read = move |stream: &TcpStream, queue: &Arc<ConnQueue>, shared: &Shared| {
            read_loop(stream, queue, shared, &port, &shapes)
        };
        let write = move |out: &mut BufWriter<&TcpStream>, slot: Slot, shared: &Shared| {
            write_answer(out, slot, shared, &writer_shapes)
        };
        serve(stream, slot, "http", read, write)
    });
}

/// The shapes of the answers a connection owes, in request order: the reader pushes one
/// before each slot it appends, the writer takes one with each slot it takes, so every
/// answer meets its own.
#[derive(Default)]
struct Shapes(Mutex<VecDeque<Shape>>);

/// What the reader does after a request.
enum Next {
    Read,
    /// The answer says so: stop reading, the writer closes after it.
    Close,
    /// The connection's writer has gone: stop.
    Gone,
}

/// Reads and answers requests until the client closes, the connection goes idle, a
/// request asks to close or cannot be framed.
fn read_loop(
    stream: &TcpStream,
    queue: &Arc<ConnQueue>,
    shared: &Shared,
    port: &HttpPort,
    shapes: &Shapes,
) {
    let mut incoming = Incoming::new(stream, port.timeouts, shared.max_line_bytes);
    let refusal = loop {
        let head = match incoming.head() {
            Ok(head) => head,
            Err(e) => break e,
        };
        if head.expects_continue
            && !incoming.has_body(&head)
            && !answer(queue, shapes, Shape::json(100, false), Value::Null)
        {
            return;
        }
        let body = match incoming.body(&head) {
            Ok(body) => body,
            Err(e) => break e,
        };
        match handle(&head, &body, queue, shared, port, shapes) {
            Next::Read if head.keep_alive => {}
            Next::Read | Next::Close => {
                queue.finish_reading();
                linger(stream);
                return;
            }
            Next::Gone => return,
        }
    };
    let refusal = match refusal {
        ReadError::Gone => return,
        ReadError::Idle => {
            let idle = fmt_duration(port.timeouts.idle);
            debug!(
                "closing the idle HTTP connection from {}: nothing for {idle}",
                peer(stream)
            );
            return;
        }
        ReadError::Refused(refusal) => refusal,
    };
    if refusal.status == 408 {
        if let Some(more) = port.slow_warnings.lock().allow() {
            warning!(
                "closed an HTTP connection from {} that sent a request too slowly \
                 ({more} more such connections not shown)",
                peer(stream)
            );
        }
    }
    let message = format!("{}; closing the connection", refusal.message);
    if answer(
        queue,
        shapes,
        Shape::json(refusal.status, true),
        response::refusal(refusal.status, &message),
    ) {
        queue.finish_reading();
        linger(stream);
    }
}

/// Appends an answer the port made itself. False if the writer has gone.
fn answer(queue: &ConnQueue, shapes: &Shapes, shape: Shape, body: Value) -> bool {
    shapes.0.lock().push_back(shape);
    queue.push_ready(Slot::Ready(body))
}

/// Answers one request: itself, or through the state thread or the leader.
fn handle(
    head: &Head,
    body: &[u8],
    queue: &Arc<ConnQueue>,
    shared: &Shared,
    port: &HttpPort,
    shapes: &Shapes,
) -> Next {
    let close = !head.keep_alive;
    let pushed = |ok: bool| if ok { Next::Read } else { Next::Gone };
    let refuse = |status: u16, header, message: &str| {
        let shape = Shape {
            header,
            ..Shape::json(status, close)
        };
        pushed(answer(
            queue,
            shapes,
            shape,
            response::refusal(status, message),
        ))
    };
    if let Err(refusal) = authorize(head, port) {
        let shape = Shape {
            header: Some(("WWW-Authenticate", "Bearer realm=\"raftkv\"")),
            ..Shape::json(401, close || refusal.close)
        };
        let body = response::refusal(401, refusal.message);
        return match (answer(queue, shapes, shape, body), refusal.close) {
            (false, _) => Next::Gone,
            (true, true) => Next::Close,
            (true, false) => Next::Read,
        };
    }
    if let Err(message) = same_origin(head) {
        return refuse(403, None, message);
    }
    let route = match routes::route(&head.method, &head.path) {
        Ok(route) => route,
        Err(NoRoute::NotFound) => {
            return refuse(
                404,
                None,
                &format!("no such endpoint: {} {}", head.method, head.path),
            )
        }
        Err(NoRoute::Method(allow)) => {
            let message = format!(
                "{} {} is not served (it takes {allow})",
                head.method, head.path
            );
            return refuse(405, Some(("Allow", allow)), &message);
        }
    };
    // What the dashboard reads from other nodes than its own is open to any origin:
    // status says nothing a member of the cluster could not see anyway.
    let cross_origin = Shape {
        header: Some(("Access-Control-Allow-Origin", "*")),
        ..Shape::json(200, close)
    };
    let (request, raw_value) = match routes::call(route, head, body) {
        Ok(Call::Status { log: None }) => {
            return pushed(answer(queue, shapes, cross_origin, status(None, shared)))
        }
        Ok(Call::Status { log: Some(log) }) => {
            let status = dashboard::status(shared, log);
            return pushed(answer(queue, shapes, cross_origin, status));
        }
        Ok(Call::Page) => {
            let shape = Shape {
                page: Some(dashboard::PAGE),
                ..Shape::json(200, close)
            };
            return pushed(answer(queue, shapes, shape, Value::Null));
        }
        Ok(Call::Events) => {
            // The stream is the connection's last answer: read nothing more.
            let shape = Shape {
                events: true,
                ..Shape::json(200, true)
            };
            return match answer(queue, shapes, shape, Value::Null) {
                true => Next::Close,
                false => Next::Gone,
            };
        }
        Ok(Call::Client { request, raw_value }) => (request, raw_value),
        Err(message) => return refuse(400, None, &message),
    };
    let op = match parse_request_object(&request).map(|r| r.op) {
        Ok(Op::Get { key, stale }) => ClientOp::Get { key, stale },
        Ok(Op::Write { key, op, session }) => ClientOp::Write(Command::write(key, op, session)),
        Ok(Op::Register) => ClientOp::Register,
        // Routes make neither (status has a route of its own, auth is a header).
        Ok(Op::Status | Op::Auth { .. }) => return refuse(400, None, "not an HTTP request"),
        Err(bad) => return refuse(400, None, &bad.message),
    };
    let shape = Shape {
        raw_value,
        ..Shape::json(200, close)
    };
    shapes.0.lock().push_back(shape);
    // What the request holds until answered: its head and body.
    let bytes = head.len + body.len();
    let stale = matches!(op, ClientOp::Get { stale: true, .. });
    let leader = (!stale).then(|| leader_elsewhere(shared)).flatten();
    let tag = shared
        .events
        .active()
        .then(|| shared.events.request(&op, Via::Http));
    let queued = match leader {
        Some(leader) => submit(queue, shared, None, bytes, tag, |reply| {
            if let Some(tag) = tag {
                let to = leader.id;
                emit!(shared.events, What::Forward { req: tag.req, to });
            }
            let addr_of = |id| shared.client_addr(Some(id)).map(str::to_string);
            let request = Value::Object(request);
            reply.send(port.forwarder.forward(leader, &request, addr_of));
        }),
        None => submit(queue, shared, None, bytes, tag, |reply| {
            // If the state thread has stopped, the request is dropped here and its reply
            // answers `unavailable` as it goes.
            let _ = shared.inbox.send(Input::Request(op, reply));
        }),
    };
    pushed(queued)
}

/// Why a request is answered 401.
struct Unauthorized {
    message: &'static str,
    /// A wrong token, not a missing one: the connection is closed after the answer, as
    /// the client port closes after a wrong `auth`.
    close: bool,
}

/// Checks the request's token, if the node has one.
fn authorize(head: &Head, port: &HttpPort) -> Result<(), Unauthorized> {
    let Some(token) = &port.token else {
        return Ok(());
    };
    match head.header("authorization").and_then(bearer_token) {
        None => Err(Unauthorized {
            message: "authentication required: send Authorization: Bearer <token>",
            close: false,
        }),
        Some(given) if !token.matches(given) => {
            if let Some(more) = port.auth_warnings.lock().allow() {
                warning!(
                    "HTTP client gave a wrong token; closing its connection \
                     ({more} more refused clients not shown)"
                );
            }
            Err(Unauthorized {
                message: "wrong token; closing the connection",
                close: true,
            })
        }
        Some(_) => Ok(()),
    }
}

/// Refuses a write a web page on another site makes. A page's `fetch` or form can POST
/// to any address without asking first (a "simple" request: no preflight), so without
/// this any site a user visits could write to a node on their machine. Browsers name the
/// page's origin in `Origin` on such requests; curl and scripts send none. A write that
/// names an origin must come from this node's own page: that origin's host and port are
/// the `Host` it was sent to. Reads stay open: another site's page cannot see their
/// answers (only status carries `Access-Control-Allow-Origin`).
fn same_origin(head: &Head) -> Result<(), &'static str> {
    if head.method == "GET" {
        return Ok(());
    }
    let Some(origin) = head.header("origin") else {
        return Ok(());
    };
    let origin_host = origin
        .strip_prefix(b"http://")
        .or_else(|| origin.strip_prefix(b"https://"));
    match (origin_host, head.header("host")) {
        (Some(from), Some(host)) if from.eq_ignore_ascii_case(host) => Ok(()),
        _ => Err("a write from a web page of another origin is refused (its Origin is not this node's Host)"),
    }
}

/// Where a request that needs the leader goes when another node leads, as far as this
/// node knows. `None` when it leads itself or knows no leader: then its state thread
/// answers, as on the client port (`unavailable` without a leader).
fn leader_elsewhere(shared: &Shared) -> Option<Leader> {
    if shared.watch.leading().is_some() {
        return None;
    }
    let id: NodeId = shared.replica.lock().node().leader()?;
    let addr = shared.client_addr(Some(id)).filter(|_| id != shared.id)?;
    Some(Leader {
        id,
        addr: addr.to_string(),
    })
}

/// The token of an `Authorization: Bearer <token>` field (the scheme in any case).
fn bearer_token(value: &[u8]) -> Option<&str> {
    let value = std::str::from_utf8(value).ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Writes one answer with its shape, and says what comes after it.
fn write_answer(
    out: &mut BufWriter<&TcpStream>,
    slot: Slot,
    shared: &Shared,
    shapes: &Shapes,
) -> io::Result<After> {
    let Some(shape) = shapes.0.lock().pop_front() else {
        return Ok(After::Close); // cannot happen: every slot is pushed with its shape
    };
    match (slot, shape.page) {
        (Slot::Answered { outcome, tag, .. }, _) => {
            let answered = tag.map(|tag| (tag, failure(&outcome)));
            let (status, content_type, body) =
                response::of_outcome(outcome, shape.raw_value, shared);
            response::write(out, status, content_type, &shape, &body)?;
            if let Some((tag, failure)) = answered {
                shared.events.reply(tag, failure);
            }
        }
        (Slot::Ready(_), _) if shape.events => {
            return Ok(After::Stream(|out, shared| {
                event_stream::serve(out, shared)
            }));
        }
        (Slot::Ready(_), _) if shape.status == 100 => response::write_continue(out)?,
        (Slot::Ready(_), Some(page)) => {
            response::write(out, shape.status, response::HTML, &shape, page.as_bytes())?;
        }
        (Slot::Ready(body), None) => {
            let body = body.to_string().into_bytes();
            response::write(out, shape.status, response::JSON, &shape, &body)?;
        }
        // Neither is ever pushed with a shape; closing is the safe answer.
        (Slot::Close | Slot::Pending, _) => return Ok(After::Close),
    }
    Ok(if shape.close {
        After::Close
    } else {
        After::Next
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(method: &str, headers: &[(&str, &str)]) -> Head {
        Head {
            method: method.into(),
            path: "/put".into(),
            query: String::new(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect(),
            len: 0,
            body_len: 0,
            keep_alive: true,
            expects_continue: false,
        }
    }

    #[test]
    fn a_write_from_another_origin_is_refused_one_from_this_nodes_page_or_a_script_is_not() {
        let host = ("host", "127.0.0.1:9001");
        for ok in [
            head("POST", &[host]),                                      // curl
            head("POST", &[host, ("origin", "http://127.0.0.1:9001")]), // its own page
            head("DELETE", &[host, ("origin", "http://127.0.0.1:9001")]),
            head("GET", &[host, ("origin", "http://evil.example")]), // a read
        ] {
            assert_eq!(same_origin(&ok), Ok(()), "{ok:?}");
        }
        for bad in [
            head("POST", &[host, ("origin", "http://evil.example")]),
            head("PUT", &[host, ("origin", "http://127.0.0.1:9002")]),
            head("POST", &[host, ("origin", "null")]),
            head("POST", &[("origin", "http://127.0.0.1:9001")]), // no Host
        ] {
            assert!(same_origin(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bearer_tokens() {
        assert_eq!(bearer_token(b"Bearer s3cret"), Some("s3cret"));
        assert_eq!(bearer_token(b"bearer  s3cret "), Some("s3cret"));
        for bad in [
            &b"Basic czNjcmV0"[..],
            b"Bearer",
            b"Bearer ",
            b"s3cret",
            b"Bearer \xff",
        ] {
            assert_eq!(bearer_token(bad), None, "{bad:?}");
        }
    }
}
