//! Events: what the threads of a node did, as it happens, for the dashboard's
//! `GET /v1/events` and for `raftkv node --trace`. One vocabulary serves both
//! ([`vocabulary`], docs/protocol.md §5.6): a client request is numbered (`req`) where it
//! is read, and every thread that moves it on says so in its own name, so one put can
//! be followed from the client reader through the state thread, the WAL and the fsync,
//! the replicators and the followers' peer readers, back to the commit, the apply and
//! the reply writer.
//!
//! **Nobody waits for a watcher.** Each subscriber (an SSE stream, the trace printer)
//! has its own bounded queue, and an event is offered to each with `try_send`: a
//! subscriber that reads too slowly loses events instead of slowing the thread that
//! emits them, whichever thread that is. Its losses are counted, and the next event
//! that finds room is preceded by a `dropped` event saying how many went missing
//! there, so a gap is never silent. Consensus, disks and clients never wait for an
//! event.
//!
//! **Free when nobody watches.** [`EventBus::active`] is one relaxed atomic load, and
//! every emission point asks it before it builds anything ([`emit!`]): with no
//! subscriber and no `--trace`, an event costs that load and nothing else, not even a
//! request number or a clock read.
//!
//! **Emitted where the work is done**, each on its own thread:
//!
//! | thread | events |
//! |---|---|
//! | `client-reader`, `http-reader` | `request` (a request read; its `req` is given here), `forward` (a follower's HTTP port sent it to the leader) |
//! | `state` | `batch`, `taken`, `appended`, `wal`, `fsync`, `commit`, `apply`, `read`, `role`, `election`, `vote`, `snapshot` (installed) ([`state`]) |
//! | `replicator-nN` | `send` (a message written to peer N's connection), `heartbeats` |
//! | `peer-reader` | `recv` (a message read off a peer's connection), `heartbeats` |
//! | `client-writer`, `http-writer` | `reply` (the answer written, with the time since the request was read) |
//! | `snapshotter` | `snapshot` (saved) |
//!
//! The state thread reports through the turn's seams (`NodeIo`'s [`Durable`] calls and
//! its [`Observer`]), never from inside the Raft core, which stays pure.
//!
//! **Heartbeats are summed, not streamed.** A leader sends every follower a heartbeat
//! every 60 ms and each is answered: as events, that noise would bury everything
//! else. An append without entries and an answer that acknowledges nothing new are
//! *plain* ([`Beats`]) and only counted, per peer; a `heartbeats` event sums them up at
//! most once per [`HEARTBEAT_SUMMARY`]. A heartbeat that carries news (a higher commit
//! index, a new ReadIndex round) and the answer to a round are shown one by one: they
//! are what a commit or a linearizable read travels on. The trace leaves summaries out.
//!
//! [`Durable`]: crate::replica::turn::Durable
//! [`Observer`]: crate::replica::turn::Observer

pub(crate) mod state;
pub(crate) mod trace;
mod vocabulary;

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};
use parking_lot::RwLock;

use vocabulary::{op_name, Gist};
pub(crate) use vocabulary::{Event, Via, What};

use crate::{
    config::NodeSpec,
    protocol::ErrorCode,
    raft::{AppendResult, Body, Index, Message, NodeId, Term},
    replica::{ClientOp, Outcome},
};

/// Most SSE streams one node serves at once; one more is answered 503. A dashboard
/// takes one per node it shows.
pub(crate) const MAX_STREAMS: usize = 32;
/// Events an SSE stream's queue holds. A browser keeps up easily; a stalled one fills
/// it in well under a second of heavy load and from then on only loses events.
pub(crate) const STREAM_QUEUE: usize = 4096;
/// Events the trace printer's queue holds: a burst of a few thousand requests is
/// printed whole; beyond that the trace says what it lost.
pub(crate) const TRACE_QUEUE: usize = 64 * 1024;
/// At most one `heartbeats` summary per peer per this interval.
pub(crate) const HEARTBEAT_SUMMARY: Duration = Duration::from_millis(500);

/// Emits `what` on `bus` if anyone watches; `what` is not even built otherwise.
macro_rules! emit {
    ($bus:expr, $what:expr) => {{
        let bus: &$crate::server::events::EventBus = &$bus;
        if bus.active() {
            bus.emit($what);
        }
    }};
}
pub(crate) use emit;

/// Who receives events: an SSE stream, or the `--trace` printer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Watcher {
    /// Counted against [`MAX_STREAMS`], and ended when the node shuts down.
    Stream,
    /// Lasts as long as the node.
    Trace,
}

/// The node's event bus: its subscribers, and the counters events are numbered by.
pub(crate) struct EventBus {
    node: NodeId,
    /// The members with their addresses, for the `hello` that opens a stream.
    members: Vec<NodeSpec>,
    subscribers: RwLock<Vec<Subscriber>>,
    /// How many subscribers there are: non-zero is [`EventBus::active`].
    subscribed: AtomicUsize,
    /// The last request number given ([`EventBus::request`]).
    last_req: AtomicU64,
    /// The last subscriber id given.
    last_subscriber: AtomicU64,
    /// Plain heartbeats per peer since the peer's last summary.
    heartbeats: BTreeMap<NodeId, Tally>,
    /// The clock the summaries' interval is measured on.
    epoch: Instant,
}

/// One subscriber's end of the bus.
struct Subscriber {
    id: u64,
    watcher: Watcher,
    queue: Sender<Arc<Event>>,
    /// Events this subscriber lost since the last `dropped` it was sent.
    lost: AtomicU64,
}

/// Plain heartbeats exchanged with one peer since its last summary.
#[derive(Default)]
struct Tally {
    sent: AtomicU64,
    received: AtomicU64,
    /// When the current summary interval began, in ms since `epoch` plus one; 0: none
    /// began yet.
    since: AtomicU64,
}

/// The node's number for a client request, and when it was read: given by the reader
/// while anyone watches, carried with the request's reply address to the writer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ReqTag {
    pub req: u64,
    pub read: Instant,
}

/// Which way a Raft message went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Way {
    Sent,
    Received,
}

impl EventBus {
    /// A bus for node `node` of a cluster of `members`, with nobody watching yet.
    pub(crate) fn new(node: NodeId, members: Vec<NodeSpec>) -> EventBus {
        let heartbeats = members
            .iter()
            .filter(|m| m.id != node)
            .map(|m| (m.id, Tally::default()))
            .collect();
        EventBus {
            node,
            members,
            subscribers: RwLock::new(Vec::new()),
            subscribed: AtomicUsize::new(0),
            last_req: AtomicU64::new(0),
            last_subscriber: AtomicU64::new(0),
            heartbeats,
            epoch: Instant::now(),
        }
    }

    /// Whether anyone watches: ask before building an event ([`emit!`]).
    #[inline]
    pub(crate) fn active(&self) -> bool {
        self.subscribed.load(Ordering::Relaxed) > 0
    }

    /// Offers an event to every subscriber, now, from this thread. Never blocks.
    pub(crate) fn emit(&self, what: What) {
        self.emit_at(now_us(), what);
    }

    /// Like [`EventBus::emit`], for something that happened at `t` (µs since the
    /// epoch) and is reported only now.
    pub(crate) fn emit_at(&self, t: u64, what: What) {
        let event = Arc::new(Event {
            t,
            node: self.node,
            thread: thread_name(),
            what,
        });
        for s in self.subscribers.read().iter() {
            s.offer(&event);
        }
    }

    /// A new subscriber's queue of `capacity` events; `None` when [`MAX_STREAMS`]
    /// streams are open already.
    pub(crate) fn subscribe(
        self: &Arc<Self>,
        watcher: Watcher,
        capacity: usize,
    ) -> Option<Subscription> {
        let (tx, rx) = bounded(capacity);
        let mut subscribers = self.subscribers.write();
        let streams = subscribers
            .iter()
            .filter(|s| s.watcher == Watcher::Stream)
            .count();
        if watcher == Watcher::Stream && streams >= MAX_STREAMS {
            return None;
        }
        let id = self.last_subscriber.fetch_add(1, Ordering::Relaxed) + 1;
        subscribers.push(Subscriber {
            id,
            watcher,
            queue: tx,
            lost: AtomicU64::new(0),
        });
        self.subscribed.store(subscribers.len(), Ordering::Relaxed);
        Some(Subscription {
            bus: Arc::clone(self),
            id,
            queue: rx,
        })
    }

    /// Ends every SSE stream (at shutdown): each gets what is queued for it, then its
    /// end. The trace goes on.
    pub(crate) fn end_streams(&self) {
        self.drop_subscribers(|s| s.watcher == Watcher::Stream);
    }

    /// Ends every subscription, the trace's included: each gets what is queued, then
    /// its end.
    pub(crate) fn end_all(&self) {
        self.drop_subscribers(|_| true);
    }

    fn drop_subscribers(&self, which: impl Fn(&Subscriber) -> bool) {
        let mut subscribers = self.subscribers.write();
        subscribers.retain(|s| !which(s));
        self.subscribed.store(subscribers.len(), Ordering::Relaxed);
    }

    /// Numbers a client request just read off its connection (`op`, through `via`) and
    /// emits its `request` event. Call only while [`EventBus::active`].
    pub(crate) fn request(&self, op: &ClientOp, via: Via) -> ReqTag {
        let tag = ReqTag {
            req: self.last_req.fetch_add(1, Ordering::Relaxed) + 1,
            read: Instant::now(),
        };
        let (key, stale) = match op {
            ClientOp::Get { key, stale } => (Some(key.clone()), *stale),
            ClientOp::Write(c) if !c.key.is_empty() => (Some(c.key.clone()), false),
            ClientOp::Write(_) | ClientOp::Register => (None, false),
        };
        self.emit(What::Request {
            req: tag.req,
            op: op_name(op),
            key,
            stale,
            via,
        });
        tag
    }

    /// The answer to request `tag` was written to its connection; `failure` is its
    /// error code if it is one ([`failure`]).
    pub(crate) fn reply(&self, tag: ReqTag, failure: Option<ErrorCode>) {
        self.emit(What::Reply {
            req: tag.req,
            ok: failure.is_none(),
            error: failure.map(ErrorCode::as_str),
            us: micros(tag.read.elapsed()),
        });
    }

    /// Message `m` went to or came from a peer: a `send` or `recv` event, or one more
    /// plain heartbeat in the peer's tally. `beats` is the connection's (and this
    /// direction's) memory of what was plain. Call only while [`EventBus::active`].
    pub(crate) fn message(&self, way: Way, m: &Message, beats: &mut Beats) {
        let peer = match way {
            Way::Sent => m.to,
            Way::Received => m.from,
        };
        if beats.is_plain(m) {
            return self.heartbeat(peer, way);
        }
        let gist = Gist::of(m);
        self.emit(match way {
            Way::Sent => What::Send { to: peer, gist },
            Way::Received => What::Recv { from: peer, gist },
        });
    }

    /// One more plain heartbeat to or from `peer`; sums them up in a `heartbeats`
    /// event once [`HEARTBEAT_SUMMARY`] has passed since the last. Whichever thread
    /// counts first after that emits it. Call only while [`EventBus::active`].
    pub(crate) fn heartbeat(&self, peer: NodeId, way: Way) {
        let Some(tally) = self.heartbeats.get(&peer) else {
            return;
        };
        match way {
            Way::Sent => tally.sent.fetch_add(1, Ordering::Relaxed),
            Way::Received => tally.received.fetch_add(1, Ordering::Relaxed),
        };
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        let since = tally.since.load(Ordering::Relaxed);
        if since == 0 {
            // The first heartbeat seen starts the first interval.
            let _ = tally
                .since
                .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
            return;
        }
        // One thread wins the interval; the others go on counting into the next. (Another
        // thread may have started an interval after this one read the clock.)
        if now.saturating_sub(since) < HEARTBEAT_SUMMARY.as_millis() as u64
            || tally
                .since
                .compare_exchange(since, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        self.emit(What::Heartbeats {
            peer,
            sent: tally.sent.swap(0, Ordering::Relaxed),
            received: tally.received.swap(0, Ordering::Relaxed),
        });
    }

    /// The members and their addresses (`hello`).
    pub(crate) fn members(&self) -> &[NodeSpec] {
        &self.members
    }
}

impl Subscriber {
    /// Queues `event` if there is room, after a `dropped` for what was lost before it.
    fn offer(&self, event: &Arc<Event>) {
        if self.lost.load(Ordering::Relaxed) > 0 {
            let count = self.lost.swap(0, Ordering::Relaxed);
            if count > 0 {
                let gap = Arc::new(Event {
                    what: What::Dropped { count },
                    thread: Arc::clone(&event.thread),
                    ..**event
                });
                if self.queue.try_send(gap).is_err() {
                    self.lost.fetch_add(count + 1, Ordering::Relaxed);
                    return;
                }
            }
        }
        if self.queue.try_send(Arc::clone(event)).is_err() {
            self.lost.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A subscriber's queue; leaving the bus when dropped.
pub(crate) struct Subscription {
    bus: Arc<EventBus>,
    id: u64,
    queue: Receiver<Arc<Event>>,
}

/// Why [`Subscription::next`] returned no event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NoEvent {
    /// Nothing happened for the time given.
    Quiet,
    /// The bus ended this subscription (the node is shutting down).
    Ended,
}

impl Subscription {
    /// The next event, waiting at most `wait`.
    pub(crate) fn next(&self, wait: Duration) -> Result<Arc<Event>, NoEvent> {
        self.queue.recv_timeout(wait).map_err(|e| match e {
            RecvTimeoutError::Timeout => NoEvent::Quiet,
            RecvTimeoutError::Disconnected => NoEvent::Ended,
        })
    }

    /// The next event if one is queued.
    pub(crate) fn try_next(&self) -> Option<Arc<Event>> {
        self.queue.try_recv().ok()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let id = self.id;
        self.bus.drop_subscribers(|s| s.id == id);
    }
}

/// The error code of an answer that is one.
pub(crate) fn failure(outcome: &Outcome) -> Option<ErrorCode> {
    match outcome {
        Outcome::Failed { code, .. } => Some(*code),
        _ => None,
    }
}

/// Tells a connection's plain heartbeats from the messages worth an event of their
/// own, in one direction: an append without entries that carries no higher commit
/// index and no new ReadIndex round, and an answer that acknowledges no higher index
/// and no new round. Anything of another term starts over.
#[derive(Debug, Default)]
pub(crate) struct Beats {
    term: Term,
    commit: Index,
    matched: Index,
    round: u64,
}

impl Beats {
    /// Whether `m` is plain, remembering what it carried.
    pub(crate) fn is_plain(&mut self, m: &Message) -> bool {
        if m.term != self.term {
            *self = Beats {
                term: m.term,
                ..Beats::default()
            };
        }
        match &m.body {
            Body::Append {
                entries,
                commit,
                read_round,
                ..
            } => {
                let plain =
                    entries.is_empty() && *commit <= self.commit && *read_round <= self.round;
                self.commit = self.commit.max(*commit);
                self.round = self.round.max(*read_round);
                plain
            }
            Body::AppendResponse {
                result: AppendResult::Match(index),
                read_round,
            } => {
                let plain = *index <= self.matched && *read_round <= self.round;
                self.matched = self.matched.max(*index);
                self.round = self.round.max(*read_round);
                plain
            }
            _ => false,
        }
    }
}

/// Microseconds since the Unix epoch.
pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, micros)
}

pub(crate) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// This thread's name, shared by all the events it emits.
fn thread_name() -> Arc<str> {
    thread_local! {
        static NAME: Arc<str> = Arc::from(std::thread::current().name().unwrap_or("unnamed"));
    }
    NAME.with(Arc::clone)
}

#[cfg(test)]
mod tests;
