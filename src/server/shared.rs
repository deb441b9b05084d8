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

use super::reply_queue::ReplyTo;
use crate::{
    raft::NodeId,
    replica::{self, Replica},
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
    /// The state thread's input queue.
    pub inbox: Sender<Input>,
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
