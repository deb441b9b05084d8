//! What the state thread reports, through the seams of a turn: the batch it took and
//! the requests in it (before the turn), what the replica decided (from the turn's
//! `Observer`: role, term and leader, elections, votes, entries appended for requests,
//! commit, apply, ReadIndex reads) and what it wrote (from `Durable`: WAL, fsync, an
//! installed snapshot).
//!
//! **A batch is reported only when it leads to something.** Every tick and every
//! plain heartbeat makes a batch of its own; reporting those would drown the rest. So
//! a batch's event waits, and goes out just before the first other event the state
//! thread emits for it (with the time it was taken); a batch that changes nothing
//! visible is never mentioned. The batch numbers count them all, so a gap in the
//! numbers is quiet turns.
//!
//! **Reads.** A linearizable read is announced (`read`, with its read index) when its
//! ReadIndex round has gone out, and again with `confirmed` when a quorum has answered
//! the round while this node still leads in the same term; a read that fails instead
//! is told by its reply. (A node without peers confirms in the same step as it
//! starts: its reads are never announced.)

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Instant,
};

use super::{micros, now_us, EventBus, What};
use crate::{
    raft::{Index, NodeId, ReadId, Role, SnapshotMeta, Term},
    replica::{Replica, ReplicaReady},
    server::{reply_queue::ReplyTo, shared::Input},
};

/// The state thread's reporter; lives in its `NodeIo`.
pub(crate) struct StateEvents {
    bus: Arc<EventBus>,
    /// Batches taken so far: the current one's number.
    batch: u64,
    /// The current batch's event (and when it was taken), until something it led to
    /// is reported.
    unreported: Option<(u64, What)>,
    /// Role, term and leader as last reported.
    seen: Option<(Role, Term, Option<NodeId>)>,
    /// The commit index as last reported.
    commit: Index,
    /// Reads announced and not yet confirmed: read id -> (request, read index, term).
    /// `None` for a read that came before anyone watched (it has no request number).
    reads: BTreeMap<ReadId, Option<(u64, Index, Term)>>,
    /// The last index written since the last fsync.
    written: Option<Index>,
}

impl StateEvents {
    pub(crate) fn new(bus: Arc<EventBus>) -> StateEvents {
        StateEvents {
            bus,
            batch: 0,
            unreported: None,
            seen: None,
            commit: 0,
            reads: BTreeMap::new(),
            written: None,
        }
    }

    #[inline]
    pub(crate) fn active(&self) -> bool {
        self.bus.active()
    }

    /// Emits `what`, after the current batch's event if that is still unreported.
    /// Call only while [`StateEvents::active`].
    fn emit(&mut self, what: What) {
        if let Some((t, batch)) = self.unreported.take() {
            self.bus.emit_at(t, batch);
        }
        self.bus.emit(what);
    }

    /// The state thread took `batch`; reports the requests in it (and so the batch).
    pub(crate) fn batch_taken(&mut self, batch: &[Input]) {
        self.batch += 1;
        if !self.active() {
            // Nothing of this stays valid while nobody watches.
            self.unreported = None;
            self.reads.clear();
            self.written = None;
            return;
        }
        let requests = batch
            .iter()
            .filter(|i| matches!(i, Input::Request(..)))
            .count();
        self.unreported = Some((
            now_us(),
            What::Batch {
                batch: self.batch,
                size: batch.len(),
                requests,
            },
        ));
        for input in batch {
            if let Input::Request(_, reply) = input {
                if let Some(tag) = reply.tag() {
                    let batch = self.batch;
                    self.emit(What::Taken {
                        req: tag.req,
                        batch,
                    });
                }
            }
        }
    }

    /// The turn's look at the replica after a drain (under the state mutex: this only
    /// queues events). Call only while [`StateEvents::active`].
    pub(crate) fn observe(&mut self, replica: &Replica<ReplyTo>, ready: &ReplicaReady<ReplyTo>) {
        let node = replica.node();
        let now = (node.role(), node.term(), node.leader());
        if self.seen != Some(now) {
            let before = self.seen.replace(now);
            let (role, term, leader) = now;
            self.emit(What::Role { role, term, leader });
            let campaign = match role {
                Role::PreCandidate => Some(What::Election {
                    term: term + 1,
                    pre: true,
                }),
                Role::Candidate => Some(What::Election { term, pre: false }),
                _ => None,
            };
            // (Not for the role found when watching begins: that election is old news.)
            if let Some(election) = campaign.filter(|_| before.is_some()) {
                self.emit(election);
            }
        }
        if let Some(hard_state) = ready.hard_state {
            // A vote for another node is only ever recorded as it is granted.
            if let Some(to) = hard_state.voted_for.filter(|&c| c != node.id()) {
                self.emit(What::Vote {
                    term: hard_state.term,
                    to,
                });
            }
        }
        for entry in &ready.entries {
            let tag = replica
                .waiting_write(entry.index, entry.term)
                .and_then(ReplyTo::tag);
            if let Some(tag) = tag {
                self.emit(What::Appended {
                    req: tag.req,
                    index: entry.index,
                    term: entry.term,
                });
            }
        }
        self.observe_reads(replica);
        if node.commit_index() > self.commit {
            self.commit = node.commit_index();
            self.emit(What::Commit { index: self.commit });
        }
        if let (Some(first), Some(last)) = (ready.applied.first(), ready.applied.last()) {
            self.emit(What::Apply {
                first: first.index,
                last: last.index,
            });
        }
    }

    /// Announces reads whose round went out, and confirms those a quorum answered.
    fn observe_reads(&mut self, replica: &Replica<ReplyTo>) {
        let node = replica.node();
        let mut waiting = BTreeSet::new();
        for (id, read_index) in node.reads_awaiting_quorum() {
            waiting.insert(id);
            if self.reads.contains_key(&id) {
                continue;
            }
            let tag = replica.waiting_read(id).and_then(ReplyTo::tag);
            if let Some(tag) = tag {
                self.emit(What::Read {
                    req: tag.req,
                    read_index,
                    confirmed: false,
                });
            }
            let announced = tag.map(|t| (t.req, read_index, node.term()));
            self.reads.insert(id, announced);
        }
        if self.reads.len() == waiting.len() {
            return;
        }
        let leading_in = node.is_leader().then(|| node.term());
        let done: Vec<_> = self
            .reads
            .iter()
            .filter(|(id, _)| !waiting.contains(id))
            .map(|(&id, &announced)| (id, announced))
            .collect();
        for (id, announced) in done {
            self.reads.remove(&id);
            // Gone from the wait while still leading in its term: its round came back.
            if let Some((req, read_index, term)) = announced {
                if leading_in == Some(term) {
                    self.emit(What::Read {
                        req,
                        read_index,
                        confirmed: true,
                    });
                }
            }
        }
    }

    /// Entries `first..=last` were written to the WAL, `bytes` of them.
    pub(crate) fn wal(&mut self, first: Index, last: Index, bytes: u64) {
        self.written = Some(last);
        self.emit(What::Wal { first, last, bytes });
    }

    /// The fsync that began at `started` made the log durable up to what was written.
    pub(crate) fn fsync(&mut self, started: Instant) {
        let last = self.written.take().unwrap_or(0);
        self.emit(What::Fsync {
            us: micros(started.elapsed()),
            last,
        });
    }

    /// The leader `from`'s snapshot `meta` replaced the log.
    pub(crate) fn installed(&mut self, meta: SnapshotMeta, from: Option<NodeId>) {
        self.emit(What::Snapshot {
            index: meta.index,
            term: meta.term,
            from,
            bytes: None,
        });
    }
}
