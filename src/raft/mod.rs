//! # The Raft consensus core
//!
//! This module is Raft and nothing else: no threads, sockets, locks, files, clocks or
//! unseeded randomness. A [`RaftNode`] is driven by four inputs and produces data:
//!
//! - [`RaftNode::tick`] — time passes (the runtime decides how long a tick is);
//! - [`RaftNode::step`] — a message from a peer arrives;
//! - [`RaftNode::propose`] — a client write, accepted only by the leader;
//! - [`RaftNode::read`] — a linearizable read, confirmed by ReadIndex.
//!
//! After a batch of inputs the caller drains a [`Ready`]: hard state and entries to make
//! durable, messages to send, committed entries to apply, reads that may now be served.
//! The same inputs always give the same outputs, which is what lets `crate::sim` run
//! thousands of seeded fault schedules and replay any failure exactly.
//!
//! ## How this Raft works (references are to the Raft paper, Ongaro & Ousterhout 2014,
//! and to Ongaro's thesis, 2014)
//!
//! **Roles** (§5.1). Every node is a follower, pre-candidate, candidate or leader. Each
//! role is entered through exactly one function (`become_follower`, `become_pre_candidate`,
//! `become_candidate`, `become_leader` in `node.rs`), so the rules of Figure 2 can be read
//! off those functions. The role is one value, `RoleState` (role.rs), that carries only
//! what the role needs: a follower the leader it knows of, a (pre-)candidate the votes of
//! its campaign, a leader its `LeaderState` (progress per follower, heartbeat and
//! check-quorum clocks, reads waiting for confirmation). Leaving a role drops its data,
//! so no leader-only field can be stale or half-reset. Callers see a plain `Role`.
//!
//! **Elections** (§5.2, §5.4.1). A follower that hears nothing for a randomized
//! election timeout (drawn from `[election_ticks, 2 * election_ticks)` with the seeded
//! RNG) first runs a *pre-vote* (thesis §9.6): it asks "would you vote for me in term
//! t+1?" without changing any term. Only with a majority of yeses does it become a
//! candidate, increment its term, vote for itself and send RequestVote. A vote is granted
//! at most once per term, only to a candidate whose log is at least as up-to-date as the
//! voter's (last term, then length). Term and vote are reported as hard state in the
//! `Ready`; the runtime makes them durable before any message of that `Ready` leaves.
//!
//! **Leader stickiness and check-quorum** (thesis §4.2.3, §6.2). A follower that heard
//! from its leader within the base election timeout refuses pre-votes and ignores vote
//! requests, so a node that was cut off cannot depose a healthy leader when it returns.
//! A leader that has not heard from a majority within an election timeout steps down, so
//! a leader cut off from the majority stops serving reads and writes.
//!
//! **Replication** (§5.3). The leader keeps a `Progress` (progress.rs) per follower, in
//! one of two states (`ProgressState`). While it does not know where their logs meet it
//! *probes* (`Probe { sent }`) with one AppendEntries at a time, resent by each heartbeat;
//! once an append succeeds it *replicates* (`Replicate { inflight }`), streaming batches
//! optimistically with at most `max_inflight` unacknowledged. Any rejection returns the
//! follower to probing with nothing in flight. The transitions are methods of `Progress`
//! (`on_match`, `on_reject`, `on_probe_sent`, `on_batch_sent`). All proposals since the last `Ready` travel in one
//! append per follower (batching). A follower checks `prev_index@prev_term`; on a
//! mismatch it answers with a hint (the conflicting term and the first index of that term
//! in its log, or its log's end), so the leader skips a whole divergent term per round
//! trip ("fast backup", end of §5.3). A follower truncates only a conflicting suffix,
//! never matching entries, so a delayed append cannot erase newer ones.
//!
//! **Commitment** (§5.3, §5.4.2, §8). The leader commits the highest index stored on a
//! quorum, counting only entries of its current term (Figure 8); earlier entries commit
//! with them. A new leader appends a no-op at once so this happens promptly. The leader
//! counts its own copy only once the runtime reports it durable (`persisted`).
//!
//! **Reads** (thesis §6.4). A read records the commit index, then waits for one
//! heartbeat round acknowledged by a quorum (rounds are shared by all reads that arrive
//! in the same batch) and for that index to be applied. A new leader holds reads until
//! its no-op commits. A read on a non-leader fails, and so does a read whose round a
//! quorum has not yet confirmed when its leader loses leadership; it is never answered
//! with possibly stale data. (A read already confirmed is still served: its leadership
//! check happened after it arrived, so it is linearizable. That is why confirmed reads
//! live on the node, not in `LeaderState`, and why the round counter does too: rounds
//! keep increasing across terms.)
//!
//! **Failure of a leader's proposals.** A proposal on a non-leader is refused with the
//! leader's id, and nothing is appended. A leader that steps down reports its
//! uncommitted proposals in `Ready::aborted_from`: their outcome is unknown (they may
//! still commit under the next leader), never "refused".
//!
//! **Log compaction** (§7). The core knows a snapshot only by its position
//! (`SnapshotMeta`: last included index and term); its contents belong to the state
//! machine and storage. The runtime tells the core when a snapshot it took is durable
//! (`snapshot_saved`) and how far to drop the log behind it (`compact`; a few entries
//! stay so a follower that lags a little catches up from the log). The log then starts
//! after its `base`, whose term it still knows for the consistency check. A leader that
//! would have to send a follower an entry it no longer holds sends `InstallSnapshot`
//! instead and moves that follower's `Progress` to its `Snapshot` state: nothing but
//! heartbeats (checked against the snapshot's position) until the runtime reports the
//! transfer over (`snapshot_sent`) or the follower acknowledges the snapshot's index;
//! then it probes again. A follower applies the etcd/LogCabin rules: a snapshot at or
//! below its commit index is ignored; one whose last entry its log already holds
//! commits up to it and keeps the log after it; any other replaces the whole log
//! (`Ready::installed`, made durable before the acknowledgement leaves). An append that
//! starts below the follower's commit index is answered with the commit index (those
//! entries are the same everywhere, and may be compacted).
//!
//! **Validation** (validate.rs). A message reaches the handlers above only if it keeps
//! every rule of `validate.rs`: addressed to this node by another member; a term no
//! higher than `MAX_TERM` (2^62) and at most `MAX_TERM_JUMP` (2^32) beyond ours;
//! possible log positions; an append's entries consecutive after its base, their terms
//! in order and no later than the message's; hints within the append they answer; one
//! leader per term; no contradiction of an entry this node knows is committed; answers
//! only about entries and read rounds this leader sent. A message that breaks one is
//! dropped whole, unanswered, and reported in `Ready::violations`. Honest members never
//! break them (the simulator fails any honest run that reports one); what they stop is
//! a buggy or forged member taking others down. A node at `MAX_TERM` no longer
//! campaigns (`Ready::campaign_refused`), so no term arithmetic ever wraps.
//!
//! ## Not implemented yet (honest list)
//! - Membership changes (§6): the member set is fixed at start.
//! - Leadership transfer (thesis §3.10) and leader leases for reads without a round trip.
//! - Flow control by bytes in flight (only by batch count).
//!
//! ## Invariants (asserted or checked by the simulator)
//! - Election safety: at most one leader per term.
//! - Log matching: two logs with an entry of the same index and term agree before it.
//! - Leader completeness: a committed entry is in every later leader's log.
//! - Committed entries are never truncated (asserted in `handle_append`; validate.rs
//!   refuses every message that would, so only a bug of the core can trip it).
//! - No node takes or starts a term beyond `MAX_TERM`.
//!
//! The asserts in the core guard these, the node's own invariants, only: nothing a
//! message contains reaches an assert, a panic or an index that can fail, because
//! validate.rs checks it first.

mod log;
mod node;
mod progress;
mod role;
mod types;
mod validate;

pub use log::Log;
pub use node::{Config, NotLeader, RaftNode, ReadId, Ready};
pub use progress::{Progress, ProgressState};
pub use role::Role;
pub use types::*;
pub use validate::{Rule, Violation, MAX_INDEX, MAX_TERM, MAX_TERM_JUMP};

#[cfg(test)]
mod tests;
