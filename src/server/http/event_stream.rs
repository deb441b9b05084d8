//! `GET /v1/events`: the node's events as a server-sent event stream
//! (`text/event-stream`), for the dashboard (docs/protocol.md §5).
//!
//! The stream is the answer to the connection's last request: the reader stops reading
//! after it, and the connection's writer thread writes the stream until the client
//! goes away, so a stream costs the two threads of any connection and never touches
//! the state thread. The writer subscribes to the node's [`EventBus`] with a queue of
//! its own ([`STREAM_QUEUE`] events): a browser that falls behind loses events and is
//! told how many (`dropped`); the node never waits for it. At most [`MAX_STREAMS`]
//! streams are served at once (503 beyond).
//!
//! It opens with a `hello` event (the members with their addresses, and this node's
//! status object, so a page knows whom else to subscribe to and where everything
//! stands), then one SSE message per event: `event: <kind>` and `data: <the event as
//! JSON>`. After [`KEEPALIVE`] without an event it writes the comment `: keepalive`,
//! so proxies and browsers keep the connection open and a dead client is found by the
//! write that fails (or times out, after the port's 30 s). When the node shuts down,
//! the stream ends.
//!
//! The answer carries `Access-Control-Allow-Origin: *`: the dashboard page served by
//! one node subscribes to every node's stream.
//!
//! [`EventBus`]: crate::server::events::EventBus
//! [`STREAM_QUEUE`]: crate::server::events::STREAM_QUEUE
//! [`MAX_STREAMS`]: crate::server::events::MAX_STREAMS

use std::{
    io::{self, Write},
    time::Duration,
};

use serde_json::{json, Value};

use super::{
    super::{
        client_port::status,
        events::{now_us, Event, NoEvent, Subscription, Watcher, MAX_STREAMS, STREAM_QUEUE},
        shared::Shared,
    },
    response::{self, Shape},
};
use crate::protocol::{error_object, ErrorCode};

/// A comment goes out after this long without an event.
pub(super) const KEEPALIVE: Duration = Duration::from_secs(15);
/// Most events written between two flushes: a burst goes out in a few large writes.
const EVENTS_PER_FLUSH: usize = 256;

/// The answer's head: no length, the stream ends with the connection.
const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\n\
    Content-Type: text/event-stream\r\n\
    Cache-Control: no-cache\r\n\
    Access-Control-Allow-Origin: *\r\n\
    Connection: close\r\n\r\n";

/// Writes the event stream to `out` until the client goes away (`Err`) or the node
/// shuts down (`Ok`); or a 503 if [`MAX_STREAMS`] are open already.
pub(super) fn serve(out: &mut impl Write, shared: &Shared) -> io::Result<()> {
    let Some(subscription) = shared.events.subscribe(Watcher::Stream, STREAM_QUEUE) else {
        let message =
            format!("{MAX_STREAMS} event streams are open on this node already; try again later");
        let body = error_object(None, ErrorCode::Unavailable.as_str(), &message, None, None);
        return response::write(
            out,
            503,
            response::JSON,
            &Shape::json(503, true),
            body.to_string().as_bytes(),
        );
    };
    // Subscribed before the status is taken: nothing that happens after it is missed.
    stream(out, &subscription, &hello(shared), KEEPALIVE)
}

/// The `hello` that opens every stream.
fn hello(shared: &Shared) -> Value {
    let members: Vec<Value> = shared
        .events
        .members()
        .iter()
        .map(|m| json!({"id": m.id, "raft": m.raft, "client": m.client, "http": m.http}))
        .collect();
    json!({
        "t": now_us(),
        "node": shared.id,
        "thread": std::thread::current().name().unwrap_or("unnamed"),
        "kind": "hello",
        "members": members,
        "status": status(None, shared),
    })
}

/// Writes the head, `hello`, then every event of `subscription`, with a comment after
/// each `keepalive` of silence.
fn stream(
    out: &mut impl Write,
    subscription: &Subscription,
    hello: &Value,
    keepalive: Duration,
) -> io::Result<()> {
    out.write_all(HEAD)?;
    write_message(out, "hello", &hello.to_string())?;
    out.flush()?;
    loop {
        match subscription.next(keepalive) {
            Ok(first) => {
                let more =
                    std::iter::from_fn(|| subscription.try_next()).take(EVENTS_PER_FLUSH - 1);
                for event in std::iter::once(first).chain(more) {
                    write_event(out, &event)?;
                }
            }
            Err(NoEvent::Quiet) => out.write_all(b": keepalive\n\n")?,
            Err(NoEvent::Ended) => return out.flush(),
        }
        out.flush()?;
    }
}

fn write_event(out: &mut impl Write, event: &Event) -> io::Result<()> {
    write_message(out, event.what.kind(), &event.to_json())
}

/// One SSE message. `data` is one line of JSON (JSON text never holds a raw newline).
fn write_message(out: &mut impl Write, kind: &str, data: &str) -> io::Result<()> {
    write!(out, "event: {kind}\ndata: {data}\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::events::{EventBus, What};
    use std::{
        sync::{Arc, Mutex},
        thread,
    };

    /// A writer the test can read while the stream writes to it.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Capture {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    #[test]
    fn a_stream_is_a_head_a_hello_events_and_keepalives_until_the_bus_ends_it() {
        let bus = Arc::new(EventBus::new(1, Vec::new()));
        let subscription = bus.subscribe(Watcher::Stream, 16).unwrap();
        let out = Capture::default();
        let writer = {
            let mut out = out.clone();
            thread::spawn(move || {
                let hello = json!({"kind": "hello"});
                stream(&mut out, &subscription, &hello, Duration::from_millis(50))
            })
        };
        bus.emit(What::Commit { index: 7 });
        thread::sleep(Duration::from_millis(150));
        bus.end_streams();
        writer.join().unwrap().unwrap();
        let text = out.text();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        for field in [
            "Content-Type: text/event-stream",
            "Cache-Control: no-cache",
            "Access-Control-Allow-Origin: *",
        ] {
            assert!(head.contains(field), "{head}");
        }
        let messages: Vec<&str> = body.split("\n\n").collect();
        assert_eq!(messages[0], "event: hello\ndata: {\"kind\":\"hello\"}");
        assert!(
            messages[1].starts_with("event: commit\ndata: {\"t\":"),
            "{body}"
        );
        assert!(
            messages[1].ends_with("\"kind\":\"commit\",\"index\":7}"),
            "{body}"
        );
        assert_eq!(messages[2], ": keepalive", "{body}");
    }
}
