//! One Raft node: the roles, the RPC handlers and the outputs the caller drains.

use std::collections::BTreeMap;

use rand::{rngs::StdRng, Rng, SeedableRng};

use super::{
    log::Log,
    progress::{Progress, ProgressState},
    role::{LeaderState, PendingRead, Role, RoleState, Tally, Votes},
    validate::{self, Receiver, Violation, MAX_TERM},
    AppendResult, Body, Entry, HardState, Index, Message, NodeId, Payload, SnapshotMeta, Term,
};
use crate::kv::Command;

/// Timing and flow-control knobs. Time is counted in ticks; the runtime decides how
/// long a tick is.
#[derive(Clone, Debug)]
pub struct Config {
    /// Base election timeout; each wait is drawn from `[election_ticks, 2 * election_ticks)`.
    /// It is also the check-quorum window and the leader lease followers honour.
    pub election_ticks: u32,
    /// A leader sends heartbeats every this many ticks.
    pub heartbeat_ticks: u32,
    /// Unacknowledged AppendEntries batches allowed per follower.
    pub max_inflight: usize,
    /// Approximate byte budget of one AppendEntries message.
    pub max_append_bytes: usize,
    /// Most committed entries one [`Ready`] hands out to apply; the rest come with the
    /// next. A large backlog (after a restart, or a follower catching up) is thus
    /// applied in slices, and the runtime gets to tick, send heartbeats and answer
    /// `status` between them.
    pub max_apply_entries: usize,
    /// ... and at most about this many bytes of them (always at least one entry).
    pub max_apply_bytes: usize,
}

impl Config {
    /// The default base election timeout, in ticks.
    pub const DEFAULT_ELECTION_TICKS: u32 = 10;
}

impl Default for Config {
    fn default() -> Config {
        Config {
            election_ticks: Config::DEFAULT_ELECTION_TICKS,
            heartbeat_ticks: 2,
            max_inflight: 8,
            max_append_bytes: 1 << 20,
            max_apply_entries: 4096,
            max_apply_bytes: 4 << 20,
        }
    }
}

/// A caller's handle for one linearizable read.
pub type ReadId = u64;

/// A proposal refused because this node is not the leader. Nothing was appended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotLeader {
    /// The leader of the current term, if this node knows it.
    pub leader: Option<NodeId>,
}

/// Everything the caller must act on after a batch of inputs, in this order:
/// 1. make `installed` the durable snapshot (the log now starts after it), persist
///    `hard_state` and `entries` (entries replace any stored entry at the same index or
///    later) and make them durable;
/// 2. call [`RaftNode::persisted`] with the last persisted entry;
/// 3. send `messages` (a leader's `Append` messages may be sent before step 1);
/// 4. apply `committed` in order, then serve `reads`; answer `failed_reads`; treat
///    proposals at index >= `aborted_from` as outcome-unknown.
///
/// `committed` is one slice of what is committed and not yet handed out (at most
/// [`Config::max_apply_entries`] entries and about [`Config::max_apply_bytes`]); when
/// more is left, [`RaftNode::has_unapplied`] says so and the next `Ready` continues.
#[derive(Debug, Default)]
pub struct Ready {
    /// Term and vote, if they changed since the last `Ready`.
    pub hard_state: Option<HardState>,
    /// Entries to persist, in index order.
    pub entries: Vec<Entry>,
    /// Messages to send, in order.
    pub messages: Vec<Message>,
    /// Newly committed entries to apply, in index order (a bounded slice of them).
    pub committed: Vec<Entry>,
    /// Reads confirmed by a quorum whose read index is applied once `committed` is.
    pub reads: Vec<ReadId>,
    /// Reads this node cannot serve (not leader, or leadership lost); never served.
    pub failed_reads: Vec<ReadId>,
    /// Set when this node stopped being leader with uncommitted entries of its own.
    pub aborted_from: Option<Index>,
    /// A snapshot from the leader replaced this follower's log (§7): the caller makes
    /// it durable (with the log reset to start after it) before anything of this
    /// `Ready` leaves, and restores the state machine from it instead of applying.
    pub installed: Option<SnapshotMeta>,
    /// Messages refused for breaking a rule of `validate.rs`, for the runtime to log.
    /// They ask nothing of the caller, so [`Ready::is_empty`] ignores them.
    pub violations: Vec<Violation>,
    /// The election timer fired, but this node's term is [`MAX_TERM`], so it did not
    /// campaign: there is no later term to campaign in. Only a peer's absurd term puts
    /// a node there; the runtime says so, since this node can never lead again.
    /// Like `violations`, a report only.
    pub campaign_refused: bool,
}

impl Ready {
    pub fn is_empty(&self) -> bool {
        self.installed.is_none()
            && self.hard_state.is_none()
            && self.entries.is_empty()
            && self.messages.is_empty()
            && self.committed.is_empty()
            && self.reads.is_empty()
            && self.failed_reads.is_empty()
            && self.aborted_from.is_none()
    }
}

/// A pure Raft node. See the module documentation of [`crate::raft`].
pub struct RaftNode {
    /// This node's id.
    id: NodeId,
    /// The other members, sorted so every iteration is deterministic.
    peers: Vec<NodeId>,
    /// Timing and flow-control knobs.
    config: Config,
    /// The only source of randomness (election timeouts), seeded by the caller.
    rng: StdRng,

    /// Current term (Figure 2); durable.
    term: Term,
    /// Whom this node voted for in `term` (Figure 2); durable.
    voted_for: Option<NodeId>,
    /// The role, with the data only that role has (role.rs).
    role: RoleState,
    /// The log, and how much of it is durable.
    log: Log,
    /// Highest index known to be committed.
    commit: Index,
    /// Committed entries up to here have been handed to the caller to apply.
    applied: Index,
    /// The newest durable snapshot the caller has (§7): what a follower gets that needs
    /// an entry compacted away. Index 0 when there is none.
    snapshot: SnapshotMeta,

    /// Ticks since the last election-timer reset (followers and (pre-)candidates; a
    /// leader keeps its own clocks in `LeaderState`).
    election_elapsed: u32,
    /// This wait's election timeout, drawn from `[election_ticks, 2 * election_ticks)`.
    randomized_timeout: u32,

    /// Latest ReadIndex round started; monotonic across terms, so it stays on the node
    /// rather than in `LeaderState` (every Append carries it).
    read_round: u64,
    /// Reads confirmed by a quorum, waiting for their index to be applied. Kept on the
    /// node, not in `LeaderState`: a read confirmed before leadership is lost is still
    /// served (its leadership check happened after it arrived).
    reads_confirmed: Vec<(ReadId, Index)>,

    // Outputs, drained by `ready`.
    /// Term or vote changed since the last `Ready`.
    hard_state_dirty: bool,
    /// Messages to send, in order.
    outbox: Vec<Message>,
    /// Reads this node cannot serve.
    failed_reads: Vec<ReadId>,
    /// Lowest index of a proposal whose outcome became unknown when leadership was lost.
    aborted_from: Option<Index>,
    /// A snapshot installed since the last `Ready`.
    installed: Option<SnapshotMeta>,
    /// Messages refused since the last `Ready`.
    violations: Vec<Violation>,
    /// A campaign was refused at [`MAX_TERM`] since the last `Ready`.
    campaign_refused: bool,
}

impl RaftNode {
    /// A node starting from what stable storage holds: `hard_state`, the newest
    /// `snapshot` (index 0 if none), and the log `entries` after it (all empty for a
    /// brand-new node). Everything the snapshot covers counts as committed and
    /// applied. `members` includes `id`.
    pub fn new(
        id: NodeId,
        members: &[NodeId],
        config: Config,
        seed: u64,
        hard_state: HardState,
        snapshot: SnapshotMeta,
        entries: Vec<Entry>,
    ) -> RaftNode {
        assert!(
            members.contains(&id),
            "a node must be a member of its own cluster"
        );
        assert!(config.heartbeat_ticks < config.election_ticks);
        let mut peers: Vec<NodeId> = members.iter().copied().filter(|&m| m != id).collect();
        peers.sort_unstable();
        peers.dedup();
        let mut node = RaftNode {
            id,
            peers,
            config,
            rng: StdRng::seed_from_u64(seed),
            term: hard_state.term,
            voted_for: hard_state.voted_for,
            role: RoleState::Follower { leader: None },
            log: Log::restore(snapshot, entries),
            commit: snapshot.index,
            applied: snapshot.index,
            snapshot,
            election_elapsed: 0,
            randomized_timeout: 0,
            read_round: 0,
            reads_confirmed: Vec::new(),
            hard_state_dirty: false,
            outbox: Vec::new(),
            failed_reads: Vec::new(),
            aborted_from: None,
            installed: None,
            violations: Vec::new(),
            campaign_refused: false,
        };
        node.reset_election_timer();
        node
    }

    // ----- read-only accessors -------------------------------------------------------

    pub fn id(&self) -> NodeId {
        self.id
    }
    pub fn term(&self) -> Term {
        self.term
    }
    pub fn role(&self) -> Role {
        self.role.role()
    }
    /// The leader of the current term, if known (this node's own id while leading).
    pub fn leader(&self) -> Option<NodeId> {
        match &self.role {
            RoleState::Follower { leader } => *leader,
            RoleState::Leader(_) => Some(self.id),
            RoleState::PreCandidate(_) | RoleState::Candidate(_) => None,
        }
    }
    pub fn is_leader(&self) -> bool {
        matches!(self.role, RoleState::Leader(_))
    }
    /// The newest snapshot this node can send (index 0 if none).
    pub fn snapshot(&self) -> SnapshotMeta {
        self.snapshot
    }
    /// A snapshot from the leader installed since the last [`Ready`], which will hand
    /// it out as `Ready::installed`.
    pub fn installing(&self) -> Option<SnapshotMeta> {
        self.installed
    }
    pub fn commit_index(&self) -> Index {
        self.commit
    }
    pub fn applied_index(&self) -> Index {
        self.applied
    }
    /// Committed entries are left that no [`Ready`] has handed out yet: the last one
    /// handed out a slice of a larger backlog.
    pub fn has_unapplied(&self) -> bool {
        self.commit > self.applied
    }
    pub fn last_index(&self) -> Index {
        self.log.last_index()
    }
    /// The latest ReadIndex round this node started (followers echo it back).
    pub fn read_round(&self) -> u64 {
        self.read_round
    }
    /// Reads whose ReadIndex round a quorum has not acknowledged yet, each with the
    /// index it will be served at (none unless leading). A read look for observers.
    pub fn reads_awaiting_quorum(&self) -> impl Iterator<Item = (ReadId, Index)> + '_ {
        let pending = match &self.role {
            RoleState::Leader(leader) => Some(&leader.reads_pending),
            _ => None,
        };
        pending.into_iter().flatten().map(|r| (r.id, r.index))
    }
    pub fn log(&self) -> &Log {
        &self.log
    }
    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            voted_for: self.voted_for,
        }
    }
    /// While leading, what this leader knows of each follower's log, by id (for status
    /// and the dashboard); `None` in any other role.
    pub fn replication(&self) -> Option<&BTreeMap<NodeId, Progress>> {
        match &self.role {
            RoleState::Leader(leader) => Some(&leader.progress),
            _ => None,
        }
    }
    /// All members, sorted.
    pub fn members(&self) -> Vec<NodeId> {
        let mut m = self.peers.clone();
        m.push(self.id);
        m.sort_unstable();
        m
    }
    fn quorum(&self) -> usize {
        let members = self.peers.len() + 1;
        members / 2 + 1
    }

    /// The leader's state. Only called while leading.
    fn leader_state(&mut self) -> &mut LeaderState {
        match &mut self.role {
            RoleState::Leader(leader) => leader,
            _ => unreachable!("only a leader has leader state"),
        }
    }

    /// The leader's progress for `peer`. Only called while leading.
    fn progress(&self, peer: NodeId) -> &Progress {
        match &self.role {
            RoleState::Leader(leader) => &leader.progress[&peer],
            _ => unreachable!("only a leader tracks progress"),
        }
    }

    /// The leader's progress for `peer`, to change. Only called while leading.
    fn progress_mut(&mut self, peer: NodeId) -> &mut Progress {
        self.leader_state()
            .progress
            .get_mut(&peer)
            .expect("every peer has progress")
    }

    // ----- inputs --------------------------------------------------------------------

    /// Advances time by one tick.
    pub fn tick(&mut self) {
        if self.is_leader() {
            self.tick_leader();
        } else {
            self.election_elapsed += 1;
            if self.election_elapsed >= self.randomized_timeout {
                self.become_pre_candidate();
            }
        }
    }

    fn tick_leader(&mut self) {
        let quorum = self.quorum();
        let config = &self.config;
        let RoleState::Leader(leader) = &mut self.role else {
            unreachable!("tick_leader runs only on a leader");
        };
        // Check-quorum (thesis §6.2): a leader that has not heard from a majority within
        // an election timeout steps down, so a cut-off leader stops serving reads.
        leader.check_quorum_elapsed += 1;
        if leader.check_quorum_elapsed >= config.election_ticks {
            if !leader.quorum_active(quorum) {
                return self.become_follower(self.term, None);
            }
            leader.start_check_quorum_window();
        }
        leader.heartbeat_elapsed += 1;
        if leader.heartbeat_elapsed >= config.heartbeat_ticks {
            self.broadcast_heartbeat();
        }
    }

    /// Appends a client command if this node is the leader. It is sent with the next
    /// [`ready`](Self::ready), batched with every other proposal since the last one.
    pub fn propose(&mut self, command: Command) -> Result<Index, NotLeader> {
        if !self.is_leader() {
            return Err(NotLeader {
                leader: self.leader(),
            });
        }
        let index = self.log.last_index() + 1;
        self.log.append(Entry {
            index,
            term: self.term,
            payload: Payload::Command(command),
        });
        Ok(index)
    }

    /// Starts a linearizable read (ReadIndex, thesis §6.4). The read comes back in
    /// `Ready::reads` once it is safe to serve from the state machine, or in
    /// `Ready::failed_reads` if this node cannot serve it.
    pub fn read(&mut self, id: ReadId) {
        let RoleState::Leader(leader) = &mut self.role else {
            self.failed_reads.push(id);
            return;
        };
        if self.log.term(self.commit) != Some(self.term) {
            // Until the leader's no-op commits it may not know the latest commit index.
            leader.reads_before_commit.push(id);
        } else {
            leader.reads_unsent.push(id);
        }
    }

    /// The election timer fires now: a node that does not lead starts a pre-vote at
    /// once (golden scripts use it to pick who campaigns).
    pub fn campaign(&mut self) {
        if !self.is_leader() {
            self.become_pre_candidate();
        }
    }

    /// The caller made a snapshot durable (§7): it covers the log up to `meta`, which
    /// must be applied. From now on it is what a follower gets that needs an entry the
    /// log no longer holds.
    pub fn snapshot_saved(&mut self, meta: SnapshotMeta) {
        assert!(
            meta.index <= self.applied,
            "a snapshot covers applied entries only"
        );
        if meta.index > self.snapshot.index {
            self.snapshot = meta;
        }
    }

    /// Drops the log's entries up to `upto` (at most the newest snapshot's index): the
    /// caller keeps a few entries behind the snapshot, so that a follower that lags
    /// only a little catches up from the log rather than by a snapshot.
    /// Returns the entries removed (the caller decides where to free them).
    pub fn compact(&mut self, upto: Index) -> Vec<Entry> {
        let upto = upto.min(self.snapshot.index).min(self.log.stable());
        self.log.compact(upto)
    }

    /// The runtime finished sending this leader's snapshot to `peer`, or gave up on it.
    /// Either way the leader probes from just after the snapshot again: the probe
    /// finds out whether the follower installed it.
    pub fn snapshot_sent(&mut self, peer: NodeId) {
        if let RoleState::Leader(leader) = &mut self.role {
            if let Some(pr) = leader.progress.get_mut(&peer) {
                pr.on_snapshot_done();
            }
        }
    }

    /// Whether `m` keeps every rule of `validate.rs` given this node's state: `step`
    /// acts on a message only if it does. Pure, so a caller may ask first.
    pub fn validate(&self, m: &Message) -> Result<(), Violation> {
        let receiver = Receiver {
            id: self.id,
            peers: &self.peers,
            term: self.term,
            commit: self.commit,
            log: &self.log,
            leader: self.leader(),
            leading: self.is_leader(),
            read_round: self.read_round,
        };
        validate::check(m, &receiver)
    }

    /// Handles one message from a peer. A message that breaks a rule of `validate.rs`
    /// is dropped whole and reported in `Ready::violations`.
    pub fn step(&mut self, m: Message) {
        if let Err(violation) = self.validate(&m) {
            self.violations.push(violation);
            return;
        }
        match m.body {
            // Pre-votes never change anybody's term (thesis §9.6).
            Body::PreVote {
                last_index,
                last_term,
            } => return self.handle_pre_vote(m.from, m.term, last_index, last_term),
            Body::PreVoteResponse { granted } => {
                return self.handle_pre_vote_response(m.from, m.term, granted)
            }
            _ => {}
        }
        if m.term > self.term {
            if matches!(m.body, Body::Vote { .. }) && self.in_lease() {
                // Thesis §4.2.3: while a leader is known to be alive, ignore
                // disruptive vote requests (and do not adopt their term).
                return;
            }
            let from_leader = matches!(m.body, Body::Append { .. } | Body::InstallSnapshot { .. });
            self.become_follower(m.term, from_leader.then_some(m.from));
        } else if m.term < self.term {
            // A stale sender: tell it our term so it steps down (Figure 2).
            let stale_prev = match m.body {
                Body::Append { prev_index, .. } => Some(prev_index),
                Body::InstallSnapshot { meta } => Some(meta.index),
                _ => None,
            };
            match (m.body, stale_prev) {
                (Body::Vote { .. }, _) => self.send(m.from, Body::VoteResponse { granted: false }),
                (_, Some(prev_index)) => self.send(
                    m.from,
                    Body::AppendResponse {
                        result: AppendResult::Conflict {
                            prev_index,
                            conflict_term: None,
                            conflict_index: 0,
                        },
                        read_round: 0,
                    },
                ),
                _ => {}
            }
            return;
        }
        match m.body {
            Body::Vote {
                last_index,
                last_term,
            } => self.handle_vote(m.from, last_index, last_term),
            Body::VoteResponse { granted } => self.handle_vote_response(m.from, granted),
            Body::Append {
                prev_index,
                prev_term,
                entries,
                commit,
                read_round,
            } => self.handle_append(m.from, prev_index, prev_term, entries, commit, read_round),
            Body::AppendResponse { result, read_round } => {
                self.handle_append_response(m.from, result, read_round)
            }
            Body::InstallSnapshot { meta } => self.handle_install_snapshot(m.from, meta),
            Body::PreVote { .. } | Body::PreVoteResponse { .. } => unreachable!("handled above"),
        }
    }

    /// The caller made the log durable up to `index@term`. A leader counts its own
    /// copy toward a commit only from here on (docs/architecture.md, durability rule).
    pub fn persisted(&mut self, index: Index, term: Term) {
        let before = self.log.stable();
        self.log.mark_stable(index, term);
        if self.log.stable() > before && self.is_leader() {
            self.maybe_commit();
        }
    }

    /// Drains everything the caller must act on. Sends the appends and read rounds
    /// that the batch of inputs since the last call made necessary.
    pub fn ready(&mut self) -> Ready {
        if self.is_leader() {
            self.flush_leader();
        }
        let hard_state = std::mem::take(&mut self.hard_state_dirty).then(|| self.hard_state());
        let entries = self.log.take_unstable();
        let committed = if self.commit > self.applied {
            // One bounded slice; the rest comes with the next `Ready`.
            let max_entries = self.config.max_apply_entries.max(1) as Index;
            let to = self.commit.min(self.applied + max_entries);
            let c = self
                .log
                .slice(self.applied + 1, to, self.config.max_apply_bytes);
            self.applied = c.last().map_or(self.commit, |e| e.index);
            c
        } else {
            Vec::new()
        };
        let applied = self.applied;
        let mut reads = Vec::new();
        self.reads_confirmed.retain(|&(id, index)| {
            if index <= applied {
                reads.push(id);
                false
            } else {
                true
            }
        });
        Ready {
            hard_state,
            entries,
            messages: std::mem::take(&mut self.outbox),
            committed,
            reads,
            failed_reads: std::mem::take(&mut self.failed_reads),
            aborted_from: self.aborted_from.take(),
            installed: self.installed.take(),
            violations: std::mem::take(&mut self.violations),
            campaign_refused: std::mem::take(&mut self.campaign_refused),
        }
    }

    // ----- role transitions (one function per role) ----------------------------------

    /// Follows `leader` (if known) in `term`; a higher term clears our vote (§5.1). A
    /// leader stepping down gives up its `LeaderState` here.
    fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        let previous = std::mem::replace(&mut self.role, RoleState::Follower { leader });
        if let RoleState::Leader(state) = previous {
            self.step_down_leader(state);
        }
        if term > self.term {
            self.term = term;
            self.voted_for = None;
            self.hard_state_dirty = true;
        }
        self.reset_election_timer();
    }

    /// Leadership is lost: uncommitted proposals have an unknown fate, reads not yet
    /// confirmed by a quorum fail (confirmed ones stay in `reads_confirmed`), and the
    /// rest of the leader's state is dropped.
    fn step_down_leader(&mut self, leader: LeaderState) {
        if self.log.last_index() > self.commit {
            let from = self.commit + 1;
            self.aborted_from = Some(self.aborted_from.map_or(from, |a| a.min(from)));
        }
        self.failed_reads.extend(leader.reads_before_commit);
        self.failed_reads.extend(leader.reads_unsent);
        self.failed_reads
            .extend(leader.reads_pending.into_iter().map(|r| r.id));
    }

    /// Pre-vote: ask whether we could win before raising our term, so a node that was
    /// cut off cannot disrupt a healthy leader when it returns.
    fn become_pre_candidate(&mut self) {
        if self.term >= MAX_TERM {
            // There is no next term: wait as a follower, and say why nothing happens.
            self.campaign_refused = true;
            return self.become_follower(self.term, None);
        }
        if self.start_campaign(RoleState::PreCandidate) == Tally::Won {
            return self.become_candidate();
        }
        let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
        for peer in self.peers.clone() {
            self.send_with_term(
                peer,
                self.term + 1, // at most MAX_TERM: checked above
                Body::PreVote {
                    last_index,
                    last_term,
                },
            );
        }
    }

    /// §5.2: new term, vote for self, ask everyone.
    fn become_candidate(&mut self) {
        assert!(
            self.term < MAX_TERM,
            "a pre-vote is only started below the term limit"
        );
        self.term += 1;
        self.voted_for = Some(self.id);
        self.hard_state_dirty = true;
        if self.start_campaign(RoleState::Candidate) == Tally::Won {
            return self.become_leader();
        }
        let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
        for peer in self.peers.clone() {
            self.send(
                peer,
                Body::Vote {
                    last_index,
                    last_term,
                },
            );
        }
    }

    /// §5.2/§8: take over, append a no-op of our own term so earlier entries can commit.
    fn become_leader(&mut self) {
        let last = self.log.last_index();
        self.role = RoleState::Leader(LeaderState::new(&self.peers, last));
        self.log.append(Entry {
            index: last + 1,
            term: self.term,
            payload: Payload::Noop,
        });
        // The probes go out in `flush_leader`, together with the no-op.
    }

    /// Common start of a (pre-)vote campaign: no known leader, a fresh timeout, and
    /// only our own vote so far, which wins at once in a single-node cluster.
    fn start_campaign(&mut self, campaign: fn(Votes) -> RoleState) -> Tally {
        let votes = Votes::new(self.id);
        let tally = votes.tally(self.quorum());
        self.role = campaign(votes);
        self.reset_election_timer();
        tally
    }

    fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        let base = self.config.election_ticks;
        self.randomized_timeout = self.rng.gen_range(base..2 * base);
    }

    /// A follower that heard from its leader within the base election timeout, or a
    /// leader, believes a leader is alive.
    fn in_lease(&self) -> bool {
        match self.role {
            RoleState::Leader(_) => true,
            RoleState::Follower { leader } => {
                leader.is_some() && self.election_elapsed < self.config.election_ticks
            }
            RoleState::PreCandidate(_) | RoleState::Candidate(_) => false,
        }
    }

    // ----- elections -----------------------------------------------------------------

    fn handle_pre_vote(&mut self, from: NodeId, term: Term, last_index: Index, last_term: Term) {
        let granted =
            term > self.term && !self.in_lease() && self.log.is_up_to_date(last_index, last_term);
        let reply_term = if granted { term } else { self.term };
        self.send_with_term(from, reply_term, Body::PreVoteResponse { granted });
    }

    fn handle_pre_vote_response(&mut self, from: NodeId, term: Term, granted: bool) {
        if !granted && term > self.term {
            return self.become_follower(term, None);
        }
        if granted && Some(term) != self.term.checked_add(1) {
            return;
        }
        let quorum = self.quorum();
        let RoleState::PreCandidate(votes) = &mut self.role else {
            return;
        };
        votes.record(from, granted);
        match votes.tally(quorum) {
            Tally::Won => self.become_candidate(),
            Tally::Lost => self.become_follower(self.term, None),
            Tally::Open => {}
        }
    }

    /// RequestVote receiver (Figure 2): one vote per term, only for an up-to-date log.
    fn handle_vote(&mut self, from: NodeId, last_index: Index, last_term: Term) {
        let can_vote = self.voted_for.is_none_or(|v| v == from);
        let granted = can_vote && self.log.is_up_to_date(last_index, last_term);
        if granted {
            self.voted_for = Some(from);
            self.hard_state_dirty = true;
            self.reset_election_timer();
        }
        self.send(from, Body::VoteResponse { granted });
    }

    fn handle_vote_response(&mut self, from: NodeId, granted: bool) {
        let quorum = self.quorum();
        let RoleState::Candidate(votes) = &mut self.role else {
            return;
        };
        votes.record(from, granted);
        match votes.tally(quorum) {
            Tally::Won => self.become_leader(),
            Tally::Lost => self.become_follower(self.term, None),
            Tally::Open => {}
        }
    }

    // ----- log replication -----------------------------------------------------------

    /// AppendEntries receiver (Figure 2, §5.3).
    fn handle_append(
        &mut self,
        from: NodeId,
        prev_index: Index,
        prev_term: Term,
        entries: Vec<Entry>,
        leader_commit: Index,
        read_round: u64,
    ) {
        self.heard_from_leader(from);
        if prev_index < self.commit {
            // Everything up to the commit index is committed, hence the same as the
            // leader's log (and may be compacted here): say where it ends, and the
            // leader continues from there. Only a delayed or duplicated append, or
            // a leader that does not know our snapshot, starts that far back.
            let result = AppendResult::Match(self.commit);
            return self.send(from, Body::AppendResponse { result, read_round });
        }
        let result = match self.log.term(prev_index) {
            None => AppendResult::Conflict {
                prev_index,
                conflict_term: None,
                conflict_index: self.log.last_index() + 1,
            },
            Some(t) if t != prev_term => AppendResult::Conflict {
                prev_index,
                conflict_term: Some(t),
                conflict_index: self.log.first_index_of_term(t).unwrap_or(prev_index),
            },
            Some(_) => {
                let last_new = prev_index + entries.len() as Index;
                for entry in entries {
                    match self.log.term(entry.index) {
                        Some(t) if t == entry.term => continue,
                        Some(_) => {
                            // Only a conflicting suffix is cut, never matching entries.
                            // The entries follow `prev_index`, which is at or past the
                            // commit index, and validate.rs refuses a message naming
                            // another committed entry: no input reaches this assert.
                            assert!(entry.index > self.commit, "a committed entry conflicts");
                            self.log.truncate_from(entry.index);
                            self.log.append(entry);
                        }
                        None => self.log.append(entry),
                    }
                }
                self.commit = self.commit.max(leader_commit.min(last_new));
                AppendResult::Match(last_new)
            }
        };
        self.send(from, Body::AppendResponse { result, read_round });
    }

    /// A message from the leader of our term: follow it, and restart the election timer.
    fn heard_from_leader(&mut self, from: NodeId) {
        match &mut self.role {
            RoleState::Follower { leader } => *leader = Some(from),
            _ => self.become_follower(self.term, Some(from)),
        }
        self.election_elapsed = 0;
    }

    /// InstallSnapshot receiver (§7), by the rules etcd and LogCabin follow: a snapshot
    /// at or below the commit index says nothing new; one whose last entry the log
    /// already holds commits up to it and keeps the log (the entries after it may be
    /// newer than the snapshot); any other replaces the whole log. The runtime hands
    /// the snapshot in only once its data is complete and durable here.
    fn handle_install_snapshot(&mut self, from: NodeId, meta: SnapshotMeta) {
        self.heard_from_leader(from);
        let index = if meta.index <= self.commit {
            self.commit
        } else if self.log.term(meta.index) == Some(meta.term) {
            self.commit = meta.index;
            meta.index
        } else {
            self.log.reset(meta);
            self.commit = meta.index;
            self.applied = meta.index;
            self.snapshot = meta;
            self.installed = Some(meta);
            meta.index
        };
        let result = AppendResult::Match(index);
        self.send(
            from,
            Body::AppendResponse {
                result,
                read_round: 0,
            },
        );
    }

    fn handle_append_response(&mut self, from: NodeId, result: AppendResult, read_round: u64) {
        let RoleState::Leader(leader) = &mut self.role else {
            return;
        };
        let Some(pr) = leader.progress.get_mut(&from) else {
            return;
        };
        pr.heard_from(read_round);
        match result {
            AppendResult::Match(index) => {
                // At most our last index: validate.rs drops any other answer.
                if pr.on_match(index) {
                    self.maybe_commit();
                }
                self.send_entries(from);
            }
            AppendResult::Conflict {
                prev_index,
                conflict_term,
                conflict_index,
            } => {
                // A rejection is current if it answers the latest append sent
                // (`next - 1`) or one still in the in-flight window; older ones are
                // stale or duplicated. `conflict_index` 0 answers an older term's
                // append: the follower refused its term, which says nothing of its log.
                let latest = prev_index + 1 == pr.next();
                let in_window = pr.matched() < prev_index && prev_index < pr.next();
                // While a snapshot is on its way, the follower refuses every append
                // (heartbeats included) until it has installed it: nothing to learn.
                let sending_snapshot = matches!(pr.state(), ProgressState::Snapshot { .. });
                if (latest || in_window) && conflict_index > 0 && !sending_snapshot {
                    let hint = match conflict_term.and_then(|t| self.log.last_index_of_term(t)) {
                        Some(last_of_term) => last_of_term + 1,
                        None => conflict_index,
                    };
                    // A hint at or below `matched` means the follower's log is shorter
                    // than it once acknowledged (it lost its disk's tail): believe it,
                    // or it is never caught up. Commit never moves back, so this only
                    // delays future commits.
                    pr.on_reject(hint.min(prev_index).max(1));
                    self.send_probe(from);
                }
            }
        }
        self.release_reads();
    }

    /// The commit rule (§5.3, §5.4.2): the highest index stored on a quorum, but only by
    /// counting replicas of an entry from the current term (the figure-8 rule).
    fn maybe_commit(&mut self) {
        let quorum = self.quorum();
        let RoleState::Leader(leader) = &mut self.role else {
            unreachable!("only a leader commits by counting replicas");
        };
        let candidate = leader.quorum_matched(self.log.stable(), quorum);
        if candidate > self.commit && self.log.term(candidate) == Some(self.term) {
            self.commit = candidate;
            // The first commit in our term lets waiting reads learn a safe read index.
            leader.reads_unsent.append(&mut leader.reads_before_commit);
        }
    }

    /// Once per batch: stream new entries to every replicating follower and start one
    /// ReadIndex round for all reads that arrived in the batch.
    fn flush_leader(&mut self) {
        for peer in self.peers.clone() {
            match self.progress(peer).state() {
                // A new leader's first probe carries the no-op.
                ProgressState::Probe { sent: false } => self.send_probe(peer),
                ProgressState::Probe { sent: true } | ProgressState::Snapshot { .. } => {}
                ProgressState::Replicate { .. } => self.send_entries(peer),
            }
        }
        let RoleState::Leader(leader) = &mut self.role else {
            unreachable!("flush_leader runs only on a leader");
        };
        if !leader.reads_unsent.is_empty() {
            self.read_round += 1;
            let (index, round) = (self.commit, self.read_round);
            for id in leader.reads_unsent.drain(..) {
                leader
                    .reads_pending
                    .push_back(PendingRead { id, index, round });
            }
            if self.peers.is_empty() {
                self.release_reads();
            } else {
                self.broadcast_heartbeat();
            }
        }
    }

    /// Sends as many batches to a replicating follower as the in-flight window allows.
    fn send_entries(&mut self, peer: NodeId) {
        while self
            .progress(peer)
            .can_send_batch(self.config.max_inflight, self.log.last_index())
        {
            match self.send_append(peer, true) {
                Some(end) => self.progress_mut(peer).on_batch_sent(end),
                None => return, // the follower gets a snapshot instead
            }
        }
    }

    /// Sends one AppendEntries from the follower's `next` (with entries, or none for a
    /// heartbeat) and returns the last index it covers. If the log no longer holds the
    /// entry before `next`, the follower is sent the snapshot instead (§7), and `None`
    /// comes back.
    fn send_append(&mut self, peer: NodeId, with_entries: bool) -> Option<Index> {
        let next = self.progress(peer).next();
        let prev_index = next - 1;
        let Some(prev_term) = self.log.term(prev_index) else {
            self.send_snapshot(peer);
            return None;
        };
        let entries = if with_entries {
            self.log
                .slice(next, self.log.last_index(), self.config.max_append_bytes)
        } else {
            Vec::new()
        };
        let end = prev_index + entries.len() as Index;
        let body = Body::Append {
            prev_index,
            prev_term,
            entries,
            commit: self.commit,
            read_round: self.read_round,
        };
        self.send(peer, body);
        Some(end)
    }

    /// Sends the newest snapshot to a follower that needs an entry compacted away; the
    /// runtime moves its data and reports back through `snapshot_sent`.
    fn send_snapshot(&mut self, peer: NodeId) {
        let meta = self.snapshot;
        assert!(
            meta.index >= self.log.base().index,
            "the log is compacted only behind a snapshot"
        );
        self.progress_mut(peer).on_snapshot_sent(meta);
        self.send(peer, Body::InstallSnapshot { meta });
    }

    /// A heartbeat to a follower that is being sent a snapshot: it checks against the
    /// snapshot's position, so the follower acknowledges once it has installed it.
    fn send_snapshot_heartbeat(&mut self, peer: NodeId, pending: SnapshotMeta) {
        let body = Body::Append {
            prev_index: pending.index,
            prev_term: pending.term,
            entries: Vec::new(),
            commit: self.commit,
            read_round: self.read_round,
        };
        self.send(peer, body);
    }

    /// Heartbeats assert leadership, carry the commit index, confirm read rounds, and
    /// (re)send a probe to followers whose log position is still unknown.
    fn broadcast_heartbeat(&mut self) {
        self.leader_state().heartbeat_elapsed = 0;
        for peer in self.peers.clone() {
            match *self.progress(peer).state() {
                ProgressState::Probe { .. } => self.send_probe(peer),
                ProgressState::Replicate { .. } => {
                    self.send_append(peer, false);
                }
                ProgressState::Snapshot { pending } => self.send_snapshot_heartbeat(peer, pending),
            }
        }
    }

    /// Sends the one outstanding probe: an append from `next`, with entries.
    fn send_probe(&mut self, peer: NodeId) {
        if self.send_append(peer, true).is_some() {
            self.progress_mut(peer).on_probe_sent();
        }
    }

    /// Moves reads whose round a quorum has acknowledged to the confirmed list.
    fn release_reads(&mut self) {
        let quorum = self.quorum();
        let RoleState::Leader(leader) = &mut self.role else {
            unreachable!("only a leader confirms reads");
        };
        let confirmed = leader.quorum_read_round(self.read_round, quorum);
        while leader
            .reads_pending
            .front()
            .is_some_and(|r| r.round <= confirmed)
        {
            let r = leader.reads_pending.pop_front().expect("front exists");
            self.reads_confirmed.push((r.id, r.index));
        }
    }

    fn send(&mut self, to: NodeId, body: Body) {
        self.send_with_term(to, self.term, body);
    }

    fn send_with_term(&mut self, to: NodeId, term: Term, body: Body) {
        self.outbox.push(Message {
            from: self.id,
            to,
            term,
            body,
        });
    }
}
