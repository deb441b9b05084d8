//! What the threads of one node share: the inbox's message type and the [`Shared`]
//! context (the replica behind its mutex, the address book, a few flags and counters).

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use crossbeam_channel::Sender;
use parking_lot::Mutex;

use super::{budget::Budget, events::EventBus, reply_queue::ReplyTo};
use crate::{
    raft::{Body, Message, NodeId, Term},
    replica::{self, ClientOp, Replica},
};

/// One input for the state thread. A queued `Tick` only wakes the thread; the tick
/// itself is [`Shared::tick_pending`].
pub(crate) type Input = replica::Input<ReplyTo>;

/// State shared by all threads of a node. Only the state thread mutates the replica;
/// others lock it briefly for a read-only look (`status`).
pub(crate) struct Shared {
    pub id: NodeId,
    pub replica: Mutex<Replica<ReplyTo>>,
    /// Client address of every member, for `leader_addr`.
    pub client_addrs: BTreeMap<NodeId, String>,
    /// The state thread's input queue, bounded in items; its bytes are bounded by the
    /// two budgets below.
    pub inbox: Sender<Input>,
    /// Bytes of client requests read and not yet answered, plus answers not yet
    /// written to their sockets: what client connections hold in this node. Readers
    /// wait for room before they queue a request.
    pub client_budget: Arc<Budget>,
    /// Bytes of peer messages in the inbox ([`message_bytes`]): peer readers take
    /// them before queueing, the state thread gives them back as it takes the message.
    /// Apart from the clients' budget, so a client flood never delays a heartbeat or
    /// an acknowledgement.
    pub peer_budget: Arc<Budget>,
    /// Set when shutdown begins: readers stop forwarding new requests.
    pub shutting_down: AtomicBool,
    /// A tick is due and not yet handled. The state thread takes it at its next turn;
    /// the timer queues an `Input::Tick` only to wake it, and never more than one, so a
    /// busy state thread never finds a pile of ticks (time just runs slower for it), and
    /// a full inbox delays no tick beyond the current turn.
    pub tick_pending: AtomicBool,
    /// Answers queued on client connections and not yet handed to their sockets.
    pub unwritten: Arc<AtomicUsize>,
    /// Open client connections.
    pub client_conns: AtomicUsize,
    /// What the replicators see of the state thread (for keepalives).
    pub watch: Arc<StateWatch>,
    /// Bytes of WAL segments on disk, as of the state thread's last turn (for `status`).
    pub wal_bytes: AtomicU64,
    /// Longest client request line accepted.
    pub max_line_bytes: usize,
    /// Where every thread reports what it does, for `/v1/events` and `--trace`.
    pub events: Arc<EventBus>,
}

impl Shared {
    /// The client address of node `id`, if it is a member.
    pub fn client_addr(&self, id: Option<NodeId>) -> Option<&str> {
        id.and_then(|id| self.client_addrs.get(&id))
            .map(String::as_str)
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }
}

/// What the state thread shows the replicators of itself, so that they can keep the
/// followers from timing out while it waits for its disk (`replicator`, keepalives).
/// Written by the state thread only.
#[derive(Debug)]
pub(crate) struct StateWatch {
    epoch: Instant,
    /// When the current write and sync began, in milliseconds after `epoch` plus one;
    /// 0 while the state thread is not writing.
    disk_since: AtomicU64,
    /// The term in which this node leads; 0 while it does not.
    leading: AtomicU64,
}

impl Default for StateWatch {
    fn default() -> StateWatch {
        StateWatch {
            epoch: Instant::now(),
            disk_since: AtomicU64::new(0),
            leading: AtomicU64::new(0),
        }
    }
}

impl StateWatch {
    /// The state thread starts writing (a no-op if it already is).
    pub fn disk_busy(&self) {
        if self.disk_since.load(Ordering::Relaxed) == 0 {
            let now = self.epoch.elapsed().as_millis() as u64 + 1;
            self.disk_since.store(now, Ordering::Release);
        }
    }

    /// What it wrote is durable.
    pub fn disk_done(&self) {
        self.disk_since.store(0, Ordering::Release);
    }

    /// How long the state thread has been writing and syncing, if it is.
    pub fn disk_busy_for(&self) -> Option<Duration> {
        let since = self.disk_since.load(Ordering::Acquire).checked_sub(1)?;
        let now = self.epoch.elapsed().as_millis() as u64;
        Some(Duration::from_millis(now.saturating_sub(since)))
    }

    /// Whether and in which term this node leads, as of the state thread's last look.
    pub fn set_leading(&self, term: Option<Term>) {
        self.leading.store(term.unwrap_or(0), Ordering::Release);
    }

    pub fn leading(&self) -> Option<Term> {
        Some(self.leading.load(Ordering::Acquire)).filter(|&t| t > 0)
    }
}

/// What a peer message is counted as in the byte bounds (the inbox, a batch, a
/// replicator's queue): its entries' approximate size, plus a little for the rest.
pub(crate) fn message_bytes(message: &Message) -> usize {
    64 + entry_bytes(message)
}

/// The approximate size of the log entries a message carries (0 for all but Append).
pub(crate) fn entry_bytes(message: &Message) -> usize {
    match &message.body {
        Body::Append { entries, .. } => entries.iter().map(|e| e.approx_size()).sum(),
        _ => 0,
    }
}

/// What an input is counted as when a batch's bytes are bounded.
pub(crate) fn input_bytes(input: &Input) -> usize {
    match input {
        Input::Peer(m) => message_bytes(m),
        Input::Request(ClientOp::Write(command), _) => command.approx_size(),
        Input::Request(ClientOp::Get { key, .. }, _) => 32 + key.len(),
        _ => 0,
    }
}
