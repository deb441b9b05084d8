//! What the threads of one node share: the inbox's message type and the [`Shared`]
//! context (the replica behind its mutex, the address book, a few flags and counters).

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
};

use crossbeam_channel::Sender;
use parking_lot::Mutex;

use super::{budget::Budget, reply_queue::ReplyTo};
use crate::{
    raft::{Body, Message, NodeId},
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
    /// Bytes of WAL segments on disk, as of the state thread's last turn (for `status`).
    pub wal_bytes: AtomicU64,
    /// Longest client request line accepted.
    pub max_line_bytes: usize,
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
