//! `raftkv node --trace`: every event but the heartbeat summaries, one line each on
//! stderr (`TRACE 12:34:56.789012 n1 state fsync us=412 last=57`), printed by a thread
//! of its own from an ordinary subscription. So tracing never makes the thread that
//! emits an event wait for a terminal or a pipe: a trace that cannot keep up says
//! `dropped count=N` where it lost lines.

use std::{
    io::Write,
    sync::Arc,
    thread::{self, JoinHandle},
    time::Duration,
};

use super::{EventBus, NoEvent, Subscription, Watcher, What, TRACE_QUEUE};
use crate::error::{Error, Result};

/// Most lines written to stderr with one call.
const LINES_PER_WRITE: usize = 256;

/// Starts the trace printer on `bus`; it ends once the bus ends its subscription
/// ([`EventBus::end_all`]), after printing what was queued.
pub(crate) fn start(bus: &Arc<EventBus>) -> Result<JoinHandle<()>> {
    let subscription = bus
        .subscribe(Watcher::Trace, TRACE_QUEUE)
        .ok_or_else(|| Error::Config("cannot subscribe the trace to events".into()))?;
    thread::Builder::new()
        .name("trace".into())
        .stack_size(256 << 10)
        .spawn(move || print(&subscription))
        .map_err(|e| Error::io("cannot start the trace thread", e))
}

fn print(subscription: &Subscription) {
    let mut lines = String::new();
    loop {
        let first = match subscription.next(Duration::from_secs(3600)) {
            Ok(event) => event,
            Err(NoEvent::Quiet) => continue,
            Err(NoEvent::Ended) => return,
        };
        let more = std::iter::from_fn(|| subscription.try_next()).take(LINES_PER_WRITE - 1);
        for event in std::iter::once(first).chain(more) {
            if matches!(event.what, What::Heartbeats { .. }) {
                continue;
            }
            lines.push_str(&event.to_trace_line());
            lines.push('\n');
        }
        // Nothing sensible can be done if stderr is gone.
        let _ = std::io::stderr().lock().write_all(lines.as_bytes());
        lines.clear();
    }
}
