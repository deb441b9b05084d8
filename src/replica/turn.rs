//! One turn of a node: a batch of inputs goes in, and the replica's outputs leave in the
//! order the durability rule of docs/architecture.md demands. [`run`] is the only code
//! that decides that order. The server's state thread and the simulator both call it,
//! so a crash the simulator injects between any two of its steps is a crash a real node
//! can have, and the real node's code path is the one the simulator tests.
//!
//! A turn:
//! 1. takes the replica (through the state mutex, in the server), feeds the whole batch
//!    in, drains its outputs ([`Replica::ready`]) and lets it go;
//! 2. if the replica leads and has no new term or vote to save, sends its messages at
//!    once: its AppendEntries travel while it writes its own copy, so the followers'
//!    fsyncs overlap its own. It counts itself toward a commit only after step 4;
//! 3. installs a snapshot the leader sent (if the core accepted one), writes the hard
//!    state and the entries, and syncs **once** for all of them (group commit); then
//!    lets go of log entries a durable snapshot covers;
//! 4. takes the replica again to say what is now durable ([`Replica::persisted`]); that
//!    may commit more, so it drains again;
//! 5. sends the remaining messages (a vote, an acknowledgement: they promise what step
//!    3 made durable), then hands out the client replies, and starts saving a snapshot
//!    in the background if one is due;
//!
//! and repeats from step 2 while the replica has more to say, with one exception: a
//! large committed backlog (after a restart, or on a follower catching up) comes out
//! of [`Replica::ready`] in bounded slices, and a turn applies **one** slice. When the
//! drained slice left more behind, the turn says what is durable and ends; the runtime
//! then runs the next turn at once (see [`has_more`]), taking a pending tick and new
//! inputs first. So heartbeats, elections and `status` keep flowing while a backlog
//! of any size is applied. A turn whose backlog fits in one slice, which is every
//! turn of a small log, is unchanged.
//!
//! The runtime plugs in through four small traits: [`Durable`] (the WAL, or the
//! simulator's in-memory disk that keeps only what was synced), [`Transport`] (the
//! replicators' queues, or the simulated network), [`Replies`] (per-request reply
//! channels, or simulated clients) and [`Observer`] (logging, or invariant checks). Any
//! of the first two may [`Halt`] the turn: the node is gone from that instant, exactly
//! as after `kill -9`.

use parking_lot::Mutex;

use super::{Input, Outcome, Replica, ReplicaReady, Snapshot};
use crate::raft::{Entry, HardState, Index, Message, Role};

/// The node stopped in the middle of a turn: a crash injected by the simulator, or a
/// storage failure after which nothing more may be acknowledged. Nothing after the
/// point of failure happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Halt;

/// Stable storage for term, vote and log.
pub trait Durable {
    /// Writes term and vote; durable at the latest after the next [`sync`](Self::sync).
    fn save_hard_state(&mut self, hard_state: HardState) -> Result<(), Halt>;
    /// Writes entries, replacing any stored at the same index or later; durable after
    /// the next [`sync`](Self::sync).
    fn append(&mut self, entries: &[Entry]) -> Result<(), Halt>;
    /// Makes everything written so far durable.
    fn sync(&mut self) -> Result<(), Halt>;
    /// Makes `snapshot` (from the leader, complete on this node's disk) the current
    /// snapshot, and the log empty after it; durable at the latest after the next sync.
    fn install_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), Halt>;
    /// Drops stored log entries up to `upto`, which a durable snapshot covers.
    fn compact_log(&mut self, upto: Index) -> Result<(), Halt>;
    /// Starts saving `snapshot` in the background; when it is durable, the runtime
    /// feeds [`Input::SnapshotSaved`] in.
    fn save_snapshot(&mut self, snapshot: Snapshot);
    /// Log entries compaction removed from memory: the runtime frees them where it
    /// costs the state thread nothing (dropping them is the default).
    fn free(&mut self, entries: Vec<Entry>) {
        drop(entries);
    }
}

/// Where messages to peers go. Delivery is never promised: Raft retransmits.
pub trait Transport {
    fn send(&mut self, message: Message) -> Result<(), Halt>;
}

/// Where client answers go; `T` is the runtime's reply address.
pub trait Replies<T> {
    fn reply(&mut self, to: T, outcome: Outcome);
}

/// A look at the replica after each drain, while the turn still holds it; keep it brief
/// (in the server every other reader of the state waits meanwhile).
pub trait Observer<T> {
    fn observe(&mut self, replica: &Replica<T>, ready: &ReplicaReady<T>);
}

/// Where the replica lives between the two moments of a turn that touch it.
pub trait ReplicaCell<T> {
    fn with<R>(&mut self, f: impl FnOnce(&mut Replica<T>) -> R) -> R;
}

/// The server's replica, shared with threads that take read-only looks.
impl<T> ReplicaCell<T> for &Mutex<Replica<T>> {
    fn with<R>(&mut self, f: impl FnOnce(&mut Replica<T>) -> R) -> R {
        f(&mut self.lock())
    }
}

/// The simulator's replica, owned by the simulated node.
impl<T> ReplicaCell<T> for &mut Replica<T> {
    fn with<R>(&mut self, f: impl FnOnce(&mut Replica<T>) -> R) -> R {
        f(self)
    }
}

/// Runs one turn for `batch` (see the module documentation). `Err(Halt)` means the
/// runtime stopped the node partway; whatever it had not done by then never happens.
pub fn run<T, C, Io>(
    cell: &mut C,
    batch: impl IntoIterator<Item = Input<T>>,
    io: &mut Io,
) -> Result<(), Halt>
where
    C: ReplicaCell<T>,
    Io: Durable + Transport + Replies<T> + Observer<T>,
{
    let (mut ready, mut leading) = cell.with(|replica| {
        for input in batch {
            replica.feed(input);
        }
        drain(replica, io)
    });
    loop {
        let durable = release(&mut ready, leading, io)?;
        let next = cell.with(|replica| {
            // Did the slice just released leave a backlog? (Asked before `persisted`,
            // which may commit more: that is this turn's to hand out as usual.)
            let sliced = has_more(replica);
            if let Some(last) = durable {
                replica.persisted(last.index, last.term);
            }
            (!sliced).then(|| drain(replica, io))
        });
        match next {
            Some((more, still_leading)) if !more.is_empty() => {
                (ready, leading) = (more, still_leading);
            }
            // Nothing more, or a backlog slice was applied: the next turn continues.
            _ => return Ok(()),
        }
    }
}

/// Committed entries are waiting to be applied: the runtime should run another turn
/// soon, even with no new input (the backlog is applied one slice per turn).
pub fn has_more<T>(replica: &Replica<T>) -> bool {
    replica.node().has_unapplied()
}

/// Takes the replica's outputs and lets the observer look; also says whether it leads.
fn drain<T, Io: Observer<T>>(replica: &mut Replica<T>, io: &mut Io) -> (ReplicaReady<T>, bool) {
    let ready = replica.ready();
    io.observe(replica, &ready);
    (ready, replica.role() == Role::Leader)
}

/// Steps 2, 3 and 5 for one drained `ready`; returns the last entry made durable.
fn release<T, Io>(
    ready: &mut ReplicaReady<T>,
    leading: bool,
    io: &mut Io,
) -> Result<Option<Entry>, Halt>
where
    Io: Durable + Transport + Replies<T>,
{
    // A term or vote change never happens on a leader, but if one is pending nothing
    // leaves before it is durable.
    let early = leading && ready.hard_state.is_none();
    if early {
        send_all(&mut ready.messages, io)?;
    }
    if let Some(snapshot) = &ready.installed {
        // Before the entries: they (if any) continue the log after the snapshot.
        io.install_snapshot(snapshot)?;
    }
    if let Some(hard_state) = ready.hard_state {
        // Term and vote first: the log never holds a term the hard state lacks.
        io.save_hard_state(hard_state)?;
    }
    if !ready.entries.is_empty() {
        io.append(&ready.entries)?;
    }
    if ready.installed.is_some() || ready.hard_state.is_some() || !ready.entries.is_empty() {
        io.sync()?;
    }
    if let Some(upto) = ready.compact_to {
        io.compact_log(upto)?;
    }
    if !ready.removed_entries.is_empty() {
        io.free(std::mem::take(&mut ready.removed_entries));
    }
    send_all(&mut ready.messages, io)?;
    for (to, outcome) in ready.replies.drain(..) {
        io.reply(to, outcome);
    }
    if let Some(snapshot) = ready.take_snapshot.take() {
        io.save_snapshot(snapshot);
    }
    Ok(ready.entries.pop())
}

fn send_all(messages: &mut Vec<Message>, io: &mut impl Transport) -> Result<(), Halt> {
    for message in messages.drain(..) {
        io.send(message)?;
    }
    Ok(())
}
