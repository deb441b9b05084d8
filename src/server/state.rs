//! The state thread: the only writer of the replica, and the only user of storage.
//!
//! Its loop blocks for one input, drains whatever else is already queued into one
//! batch, and runs one [`turn`](crate::replica::turn) on it: the same function the
//! simulator runs. What is particular to a real node lives here, in [`NodeIo`]: the
//! WAL behind [`Durable`], the replicators' queues behind [`Transport`], the
//! connections' reply channels behind [`Replies`], and log lines for role, term and
//! leader changes, and for peer messages the core refused, behind [`Observer`]. The
//! same seams report the thread's events (`events::state`): the batch and its
//! requests, the WAL write and the fsync, and what the observer sees.
//!
//! **How long a turn takes is bounded, whatever the input.** A turn writes and syncs
//! what its batch produced, and ticks, heartbeats and elections wait for it (a tick is
//! taken at the start of the next turn), so:
//!
//! - a batch stops at [`MAX_BATCH`] inputs or [`MAX_BATCH_BYTES`] (4 MiB) of them,
//!   whichever comes first. Small writes reach the count long before the bytes (the
//!   fsync is amortized exactly as before); 1 MiB values reach the bytes after four,
//!   so one sync covers at most about 4 MiB instead of everything queued (64 MiB,
//!   575 ms, and a lost leadership, before). Taking a peer message into the batch
//!   gives its bytes back to the peer budget (`Shared::peer_budget`): from there on
//!   the batch bounds them;
//! - a committed backlog comes out of the replica in slices and a turn applies one;
//!   while one is left ([`turn::has_more`], seen by the observer), the next turn
//!   starts at once without waiting for input, and takes any pending tick first.
//!
//! **Keepalives.** While this thread writes and syncs, it cannot send heartbeats. It
//! tells the replicators when a write begins and when the sync is done, and whether
//! the node leads, through `Shared::watch`; a leader's replicators then resend the
//! last heartbeat to followers that heard nothing for a heartbeat interval (see
//! `replicator`). So a slow sync costs latency, not leadership.
//!
//! For tests, [`FAULT_LEADER_SYNC_MS`] makes every sync by a leading node that much
//! slower: a busy disk under the leader alone, which is what keepalives are for.

use std::{
    collections::BTreeMap,
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};

use super::{
    events::state::StateEvents,
    logging::{self, debug, error, info, warning, Level, Throttle},
    replicator::PeerQueue,
    reply_queue::ReplyTo,
    shared::{input_bytes, message_bytes, Input, Shared, StateWatch},
};
use crate::{
    error::Error,
    raft::{Body, Entry, HardState, Index, Message, NodeId, Role, Term, Violation, MAX_TERM},
    replica::{
        turn::{self, Durable, Halt, Observer, Replies, Transport},
        Outcome, Replica, ReplicaReady, Snapshot,
    },
    storage::Storage,
};

/// Most inputs folded into one batch (one fsync). Large enough to amortize the fsync
/// over thousands of clients, small enough to keep one turn's latency bounded.
pub(crate) const MAX_BATCH: usize = 4096;
/// A batch stops growing once its inputs hold this many bytes (writes' commands, peer
/// messages' entries; see `shared::input_bytes`), so that one turn writes and syncs a
/// bounded amount whatever the size of the values. The first input always goes in.
/// 4 MiB takes about 10 ms to write and sync on an SSD and stays near 100 ms on a
/// disk ten times slower, against an election timeout of 300 ms or more. Small writes
/// never reach it: 4096 puts of 100 bytes are 600 KB.
pub(crate) const MAX_BATCH_BYTES: usize = 4 << 20;

/// An fsync slower than this is worth a warning.
const SLOW_SYNC: Duration = Duration::from_millis(50);
/// At most one line per this interval for each kind of report a peer can cause at will
/// (protocol violations, a campaign refused at the term limit): a hostile peer must not
/// be able to flood the log.
const REPORT_EVERY: Duration = Duration::from_secs(1);
/// Fault injection for tests: every sync by a node while it leads takes this many
/// milliseconds longer (a busy disk under the leader only, the case keepalives are for).
pub(crate) const FAULT_LEADER_SYNC_MS: &str = "RAFTKV_FAULT_LEADER_SYNC_MS";

/// The state thread's own resources.
pub(crate) struct StateLoop {
    shared: Arc<Shared>,
    inbox: Receiver<Input>,
    io: NodeIo,
    batch: Vec<Input>,
    /// Bytes of the inputs in `batch` (see [`MAX_BATCH_BYTES`]).
    batch_bytes: usize,
}

impl StateLoop {
    pub(crate) fn new(
        shared: Arc<Shared>,
        storage: Storage,
        inbox: Receiver<Input>,
        peers: BTreeMap<NodeId, PeerQueue>,
        snapshots: Sender<Snapshot>,
        garbage: Sender<Vec<Entry>>,
    ) -> StateLoop {
        let seen = Seen::of(&shared.replica.lock());
        logging::set_term(seen.term);
        StateLoop {
            io: NodeIo {
                id: shared.id,
                storage,
                unsynced: false,
                sync_started: None,
                peers,
                snapshots,
                garbage,
                next_turn: Vec::new(),
                logged: seen,
                seen,
                backlog: false,
                violations: Vec::new(),
                violation_log: Throttle::new(REPORT_EVERY),
                campaign_refused: false,
                campaign_refused_log: Throttle::new(REPORT_EVERY),
                watch: Arc::clone(&shared.watch),
                events: StateEvents::new(Arc::clone(&shared.events)),
                leader_sync_delay: std::env::var(FAULT_LEADER_SYNC_MS)
                    .ok()
                    .and_then(|ms| ms.parse().ok())
                    .map(Duration::from_millis),
            },
            shared,
            inbox,
            batch: Vec::with_capacity(MAX_BATCH),
            batch_bytes: 0,
        }
    }

    /// Runs until a [`Input::Shutdown`] has been handled, then returns the inbox so the
    /// caller can refuse whatever is still queued. A storage failure ends the process.
    pub(crate) fn run(mut self) -> Receiver<Input> {
        let mut shutting_down = false;
        while !shutting_down {
            // With a committed backlog left to apply, the next turn starts at once
            // (applying the next slice) instead of waiting for input.
            let first = if self.io.backlog {
                match self.inbox.try_recv() {
                    Ok(input) => Some(input),
                    Err(TryRecvError::Empty) => None,
                    Err(TryRecvError::Disconnected) => break,
                }
            } else {
                match self.inbox.recv() {
                    Ok(input) => Some(input),
                    Err(_) => break, // cannot happen: `Shared` holds a sender
                }
            };
            // Time is read from the flag, not from a queued `Tick` (which only wakes
            // this thread): a tick still counts when a flood filled the inbox.
            if self.shared.tick_pending.swap(false, Ordering::AcqRel) {
                self.batch.push(Input::Tick);
            }
            self.batch.append(&mut self.io.next_turn);
            self.batch_bytes = 0;
            if let Some(first) = first {
                self.take(first);
            }
            while self.batch.len() < MAX_BATCH && self.batch_bytes < MAX_BATCH_BYTES {
                match self.inbox.try_recv() {
                    Ok(input) => self.take(input),
                    Err(_) => break,
                }
            }
            if self.batch.iter().any(|i| matches!(i, Input::Shutdown)) {
                shutting_down = true;
                self.shared.shutting_down.store(true, Ordering::Release);
                info!("shutting down: failing pending requests, taking no new ones");
                // Lets the HTTP writers of event streams finish; the trace goes on.
                self.shared.events.end_streams();
            }
            self.io.events.batch_taken(&self.batch);
            let mut replica = &self.shared.replica;
            if turn::run(&mut replica, self.batch.drain(..), &mut self.io).is_err() {
                std::process::exit(3); // `NodeIo` logged why
            }
            self.io.log_changes();
            self.shared
                .wal_bytes
                .store(self.io.storage.wal_bytes(), Ordering::Relaxed);
        }
        if let Err(e) = self.io.storage.sync() {
            fatal("the final sync", &e);
            std::process::exit(3);
        }
        info!("shut down cleanly: storage synced");
        self.inbox
    }

    /// Adds `input` to the batch. A peer message's bytes go back to the peer budget
    /// here: from now on they count in the batch, which is bounded by itself.
    fn take(&mut self, input: Input) {
        let bytes = input_bytes(&input);
        self.batch_bytes += bytes;
        if let Input::Peer(m) = &input {
            self.shared.peer_budget.release(message_bytes(m));
        }
        match input {
            Input::Tick => {}
            Input::Peer(m) if logging::enabled(Level::Debug) => {
                debug!("recv {m}");
                self.batch.push(Input::Peer(m));
            }
            input => self.batch.push(input),
        }
    }
}

/// A real node's side of a turn: WAL, replicator queues, reply channels, log lines.
struct NodeIo {
    id: NodeId,
    storage: Storage,
    /// Entries were appended since the last fsync.
    unsynced: bool,
    /// When the current write began, to warn about slow disks.
    sync_started: Option<Instant>,
    /// One bounded queue per peer (in messages and bytes), read by its replicator.
    peers: BTreeMap<NodeId, PeerQueue>,
    /// The snapshotter thread's queue (one slot).
    snapshots: Sender<Snapshot>,
    /// Compacted log entries for the snapshotter thread to free.
    garbage: Sender<Vec<Entry>>,
    /// Inputs this node gives itself for its next turn.
    next_turn: Vec<Input>,
    /// Role, term and leader as last logged, and as last observed.
    logged: Seen,
    seen: Seen,
    /// As last observed: committed entries wait to be applied (`turn::has_more`), so
    /// the next turn must not wait for input.
    backlog: bool,
    /// Peer messages the core refused during the turn, logged after it.
    violations: Vec<Violation>,
    violation_log: Throttle,
    /// The core refused to campaign at the term limit during the turn.
    campaign_refused: bool,
    campaign_refused_log: Throttle,
    /// Tells the replicators when this thread waits for the disk, and whether it leads.
    watch: Arc<StateWatch>,
    /// What this thread reports to `/v1/events` and `--trace`.
    events: StateEvents,
    /// See [`FAULT_LEADER_SYNC_MS`].
    leader_sync_delay: Option<Duration>,
}

impl NodeIo {
    /// Logs role, term and leader changes seen during the turn, and what the core
    /// refused (after the turn, so no log line is written while the state mutex is held).
    fn log_changes(&mut self) {
        for v in self.violations.drain(..) {
            if let Some(suppressed) = self.violation_log.allow() {
                warning!(
                    "protocol violation from n{}: {v}{}",
                    v.from,
                    more(suppressed)
                );
            }
        }
        if std::mem::take(&mut self.campaign_refused) {
            if let Some(suppressed) = self.campaign_refused_log.allow() {
                warning!(
                    "election timeout, but term {} is the highest there may be ({MAX_TERM}): \
                     this node will not campaign again; only a peer's absurd term gets a \
                     node here{}",
                    self.seen.term,
                    more(suppressed)
                );
            }
        }
        let (before, now) = (self.logged, self.seen);
        self.logged = now;
        if now.term != before.term {
            logging::set_term(now.term);
        }
        if now.role != before.role || now.term != before.term {
            match now.role {
                Role::Leader => info!(
                    "became leader for term {} (log ends at {}@{})",
                    now.term, now.last.0, now.last.1
                ),
                Role::Candidate => info!("election: campaigning for term {}", now.term),
                Role::PreCandidate => info!(
                    "election timeout in term {}: asking for pre-votes",
                    now.term
                ),
                Role::Follower if before.role != Role::Follower => info!(
                    "now follower in term {} (was {})",
                    now.term,
                    before.role.as_str()
                ),
                Role::Follower => info!("term {} begins (follower)", now.term),
            }
        }
        if now.leader != before.leader {
            match now.leader {
                Some(l) if l == self.id => {}
                Some(l) => info!("leader for term {} is n{l}", now.term),
                None => info!("no known leader in term {}", now.term),
            }
        }
    }
}

impl Durable for NodeIo {
    fn save_hard_state(&mut self, hard_state: HardState) -> Result<(), Halt> {
        self.sync_started.get_or_insert_with(Instant::now);
        self.watch.disk_busy();
        self.storage
            .save_hard_state(hard_state)
            .map_err(|e| fatal("saving term and vote", &e))
    }

    fn append(&mut self, entries: &[Entry]) -> Result<(), Halt> {
        self.sync_started.get_or_insert_with(Instant::now);
        self.watch.disk_busy();
        self.unsynced = true;
        let before = self.events.active().then(|| self.storage.wal_bytes());
        self.storage
            .append(entries)
            .map_err(|e| fatal("appending to the log", &e))?;
        if let (Some(before), Some(first), Some(last)) = (before, entries.first(), entries.last()) {
            // (Less than nothing when the append replaced a longer tail.)
            let bytes = self.storage.wal_bytes().saturating_sub(before);
            self.events.wal(first.index, last.index, bytes);
        }
        Ok(())
    }

    /// The snapshot's file is already in place (the peer reader finished receiving
    /// it before the core saw it); what is left is to drop the log it replaces.
    fn install_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), Halt> {
        self.watch.disk_busy();
        let meta = snapshot.meta;
        self.storage
            .reset_log(meta)
            .map_err(|e| fatal("resetting the log to an installed snapshot", &e))?;
        if self.events.active() {
            self.events.installed(meta, self.seen.leader);
        }
        info!(
            "installed the leader's snapshot {}@{}: the log now starts after it",
            meta.index, meta.term
        );
        Ok(())
    }

    /// The WAL keeps everything after the *older* of the two kept snapshots, so that a
    /// damaged newest snapshot can still be recovered from the older one plus the log.
    fn compact_log(&mut self, upto: Index) -> Result<(), Halt> {
        let kept = self
            .storage
            .snapshot_store()
            .list()
            .map_err(|e| fatal("listing snapshots", &e))?;
        let older = match kept.len() {
            0 | 1 => return Ok(()),
            n => kept[n - 2].index,
        };
        let upto = upto.min(older);
        self.storage
            .compact(upto)
            .map_err(|e| fatal("compacting the log", &e))
    }

    /// Hands the frozen snapshot to the snapshotter thread; it reports back through
    /// the inbox. The replica has at most one snapshot in flight, so the one-slot
    /// queue is free unless the snapshotter died.
    /// Off the state thread; if the snapshotter is busy and its queue full, here.
    fn free(&mut self, entries: Vec<Entry>) {
        let _ = self.garbage.try_send(entries);
    }

    fn save_snapshot(&mut self, snapshot: Snapshot) {
        if self.snapshots.try_send(snapshot).is_err() {
            error!("the snapshotter is not taking snapshots; none is saved");
        }
    }

    /// The hard state is durable as soon as it is saved; only appended entries need
    /// the WAL's fsync.
    fn sync(&mut self) -> Result<(), Halt> {
        if std::mem::take(&mut self.unsynced) {
            if let Some(delay) = self
                .leader_sync_delay
                .filter(|_| self.seen.role == Role::Leader)
            {
                std::thread::sleep(delay);
            }
            let started = self.events.active().then(Instant::now);
            self.storage
                .sync()
                .map_err(|e| fatal("syncing the log", &e))?;
            if let Some(started) = started {
                self.events.fsync(started);
            }
        }
        self.watch.disk_done();
        if let Some(started) = self.sync_started.take() {
            let took = started.elapsed();
            if took > SLOW_SYNC {
                warning!(
                    "slow disk: writing and syncing took {} ms",
                    took.as_millis()
                );
            }
        }
        Ok(())
    }
}

impl Transport for NodeIo {
    /// Never blocks: a full queue means the peer is slow or gone, and Raft retransmits
    /// what is lost.
    fn send(&mut self, message: Message) -> Result<(), Halt> {
        let Some(tx) = self.peers.get(&message.to) else {
            return Ok(());
        };
        if logging::enabled(Level::Debug) {
            debug!("send {message}");
        }
        let dropped = match tx.try_send(message) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Disconnected(m)) => m,
            Err(TrySendError::Full(m)) => {
                debug!("queue to n{} full; dropped {m}", m.to);
                m
            }
        };
        // A lost InstallSnapshot never reaches a replicator, so none would report the
        // transfer's end, and the core would wait for it forever: report it here.
        if let Body::InstallSnapshot { .. } = dropped.body {
            self.next_turn.push(Input::SnapshotSent(dropped.to));
        }
        Ok(())
    }
}

impl Replies<ReplyTo> for NodeIo {
    fn reply(&mut self, to: ReplyTo, outcome: Outcome) {
        to.send(outcome);
    }
}

impl Observer<ReplyTo> for NodeIo {
    fn observe(&mut self, replica: &Replica<ReplyTo>, ready: &ReplicaReady<ReplyTo>) {
        self.violations.extend(ready.violations.iter().cloned());
        self.campaign_refused |= ready.campaign_refused;
        self.seen = Seen::of(replica);
        self.backlog = turn::has_more(replica);
        if self.events.active() {
            self.events.observe(replica, ready);
        }
        let leading = self.seen.role == Role::Leader;
        self.watch.set_leading(leading.then_some(self.seen.term));
    }
}

/// What the log reports changes of: role, term, leader.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Seen {
    role: Role,
    term: Term,
    leader: Option<NodeId>,
    last: (u64, Term),
}

impl Seen {
    fn of(r: &Replica<ReplyTo>) -> Seen {
        let n = r.node();
        Seen {
            role: n.role(),
            term: n.term(),
            leader: n.leader(),
            last: (n.last_index(), n.log().last_term()),
        }
    }
}

/// ` (N more since the last line)` after a throttled line, when lines were suppressed.
fn more(suppressed: u64) -> String {
    match suppressed {
        0 => String::new(),
        n => format!(" ({n} more since the last line)"),
    }
}

/// A storage failure: after a failed write or fsync nothing on disk can be trusted, so
/// the node must not acknowledge anything more. The turn halts and the process leaves;
/// recovery on the next start sees only what is really on disk.
fn fatal(what: &str, e: &Error) -> Halt {
    error!("FATAL storage failure while {what}: {e}; exiting without acknowledging anything more");
    Halt
}
