//! What a leader knows about each follower's log (§5.3, "nextIndex"/"matchIndex").

use std::collections::VecDeque;

use super::Index;

/// A leader's view of one follower.
///
/// A follower is either *probing* (the leader does not yet know where their logs meet,
/// so it sends one AppendEntries at a time and backs off on rejection) or *replicating*
/// (logs match up to `matched`; the leader streams batches optimistically, up to
/// `max_inflight` unacknowledged ones).
#[derive(Clone, Debug)]
pub struct Progress {
    /// Next index to send.
    pub next: Index,
    /// Highest index known to be replicated (and durable) on the follower.
    pub matched: Index,
    /// True until an AppendEntries has succeeded since the last rejection.
    pub probing: bool,
    /// A probe is outstanding (probing mode sends one at a time; heartbeats resend it).
    pub probe_sent: bool,
    /// Last index of each unacknowledged batch in flight (replicating mode only).
    pub inflight: VecDeque<Index>,
    /// Heard from this follower during the current check-quorum window.
    pub recently_active: bool,
    /// Highest ReadIndex round this follower has acknowledged in the current term.
    pub read_ack: u64,
}

impl Progress {
    pub fn new(last_index: Index) -> Progress {
        Progress {
            next: last_index + 1,
            matched: 0,
            probing: true,
            probe_sent: false,
            inflight: VecDeque::new(),
            recently_active: false,
            read_ack: 0,
        }
    }

    /// The follower's log matches ours up to `index`. Returns true if that is news.
    pub fn on_match(&mut self, index: Index) -> bool {
        self.probing = false;
        self.probe_sent = false;
        while self.inflight.front().is_some_and(|&end| end <= index) {
            self.inflight.pop_front();
        }
        self.next = self.next.max(index + 1);
        if index > self.matched {
            self.matched = index;
            true
        } else {
            false
        }
    }

    /// The follower rejected an append; restart from `next` in probe mode. A `next` at
    /// or below `matched` means the follower lost entries it had acknowledged.
    pub fn on_reject(&mut self, next: Index) {
        self.matched = self.matched.min(next - 1);
        self.next = next;
        self.probing = true;
        self.probe_sent = false;
        self.inflight.clear();
    }
}
