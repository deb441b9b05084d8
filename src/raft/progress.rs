//! What a leader knows about each follower's log (§5.3, "nextIndex"/"matchIndex").

use std::collections::VecDeque;

use super::{Index, SnapshotMeta};

/// How a leader is sending to one follower.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProgressState {
    /// The leader does not yet know where their logs meet. It sends one AppendEntries
    /// at a time from `next` and backs off on each rejection. A new leader starts here
    /// for every follower, and every rejection returns here.
    Probe {
        /// A probe is outstanding: no other is sent until it is answered, except that
        /// each heartbeat resends it (it, or its answer, may have been lost).
        sent: bool,
    },
    /// The logs match up to `matched`: the leader streams batches optimistically,
    /// advancing `next` as it sends, without waiting for acknowledgements.
    Replicate {
        /// Last index of each unacknowledged batch, oldest first; at most
        /// `Config::max_inflight` of them (flow control).
        inflight: VecDeque<Index>,
    },
    /// The follower needs an entry the leader has compacted away (§7): a snapshot is on
    /// its way, and nothing else is sent (heartbeats aside) until the runtime reports
    /// the transfer done or failed, or the follower acknowledges the snapshot's index.
    /// Then the leader probes again from just after the snapshot.
    Snapshot {
        /// The snapshot being sent.
        pending: SnapshotMeta,
    },
}

impl ProgressState {
    /// The state's name as status reports it (docs/protocol.md §5.1).
    pub fn name(&self) -> &'static str {
        match self {
            ProgressState::Probe { .. } => "probe",
            ProgressState::Replicate { .. } => "replicate",
            ProgressState::Snapshot { .. } => "snapshot",
        }
    }
}

/// A leader's view of one follower.
///
/// Invariants:
/// - `matched < next`: what is known to match lies before what is sent next.
/// - In `Replicate`, in-flight ends increase and all are below `next`.
/// - `next` and `matched` change only through the transitions below (`on_match`,
///   `on_reject`, `on_batch_sent`, `on_snapshot_sent`, `on_snapshot_done`), which also
///   move between the states.
#[derive(Clone, Debug)]
pub struct Progress {
    /// Next index to send.
    next: Index,
    /// Highest index known to be replicated (and durable) on the follower.
    matched: Index,
    /// Probing or replicating, with what each needs.
    state: ProgressState,
    /// Heard from this follower during the current check-quorum window.
    pub recently_active: bool,
    /// Highest ReadIndex round this follower has acknowledged in the current term.
    pub read_ack: u64,
}

impl Progress {
    /// A follower of a new leader whose log ends at `last_index`: probe from just after
    /// it, knowing nothing matched yet.
    pub fn new(last_index: Index) -> Progress {
        Progress {
            next: last_index + 1,
            matched: 0,
            state: ProgressState::Probe { sent: false },
            recently_active: false,
            read_ack: 0,
        }
    }

    /// Next index to send.
    pub fn next(&self) -> Index {
        self.next
    }

    /// Highest index known to be replicated (and durable) on the follower.
    pub fn matched(&self) -> Index {
        self.matched
    }

    /// Probing, replicating or sending a snapshot.
    pub fn state(&self) -> &ProgressState {
        &self.state
    }

    /// The follower answered: it is alive, and has seen ReadIndex round `read_round`.
    pub fn heard_from(&mut self, read_round: u64) {
        self.recently_active = true;
        self.read_ack = self.read_ack.max(read_round);
    }

    /// Whether another batch may be streamed now: replicating, with room in the
    /// in-flight window and entries at `next` or later (the log ends at `last_index`).
    pub fn can_send_batch(&self, max_inflight: usize, last_index: Index) -> bool {
        match &self.state {
            ProgressState::Probe { .. } | ProgressState::Snapshot { .. } => false,
            ProgressState::Replicate { inflight } => {
                inflight.len() < max_inflight && self.next <= last_index
            }
        }
    }

    /// A batch ending at `end` was streamed (replicating only).
    pub fn on_batch_sent(&mut self, end: Index) {
        let ProgressState::Replicate { inflight } = &mut self.state else {
            unreachable!("batches are streamed only while replicating");
        };
        inflight.push_back(end);
        self.next = end + 1;
        assert!(self.matched < self.next);
    }

    /// A probe from `next` was sent (probing only); it does not advance `next`.
    pub fn on_probe_sent(&mut self) {
        let ProgressState::Probe { sent } = &mut self.state else {
            unreachable!("probes are sent only while probing");
        };
        *sent = true;
    }

    /// The snapshot `pending` is being sent to the follower, which needs an entry the
    /// leader no longer holds.
    pub fn on_snapshot_sent(&mut self, pending: SnapshotMeta) {
        self.state = ProgressState::Snapshot { pending };
    }

    /// The runtime finished sending the pending snapshot (`ok`) or gave up. Either way
    /// the leader probes from just after it: a follower that installed it matches
    /// there, and one that did not rejects the probe, which leads back to a snapshot.
    /// Does nothing unless a snapshot is pending.
    pub fn on_snapshot_done(&mut self) {
        if let ProgressState::Snapshot { pending } = self.state {
            self.next = pending.index + 1;
            self.state = ProgressState::Probe { sent: false };
        }
    }

    /// The follower's log matches ours up to `index`: replicate from here on (batches
    /// acknowledged by it leave the window). While a snapshot is pending, only an
    /// acknowledgement of the snapshot's index or later ends the transfer. Returns true
    /// if `matched` moved.
    pub fn on_match(&mut self, index: Index) -> bool {
        match &mut self.state {
            ProgressState::Probe { .. } => {
                self.state = ProgressState::Replicate {
                    inflight: VecDeque::new(),
                }
            }
            ProgressState::Snapshot { pending } if index < pending.index => {
                let moved = index > self.matched;
                self.matched = self.matched.max(index);
                self.next = self.next.max(index + 1);
                return moved;
            }
            ProgressState::Snapshot { .. } => {
                self.state = ProgressState::Replicate {
                    inflight: VecDeque::new(),
                }
            }
            ProgressState::Replicate { inflight } => {
                while inflight.front().is_some_and(|&end| end <= index) {
                    inflight.pop_front();
                }
            }
        }
        self.next = self.next.max(index + 1);
        if index > self.matched {
            self.matched = index;
            true
        } else {
            false
        }
    }

    /// The follower rejected an append; restart from `next` in probe mode, with
    /// nothing in flight. A `next` at or below `matched` means the follower lost entries
    /// it had acknowledged.
    pub fn on_reject(&mut self, next: Index) {
        self.matched = self.matched.min(next - 1);
        self.next = next;
        self.state = ProgressState::Probe { sent: false };
    }
}
