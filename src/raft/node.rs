//! One Raft node: the roles, the RPC handlers and the outputs the caller drains.

use std::collections::{BTreeMap, VecDeque};

use rand::{rngs::StdRng, Rng, SeedableRng};

use super::{
    log::Log, progress::Progress, AppendResult, Body, Entry, HardState, Index, Message, NodeId,
    Payload, Term,
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
        }
    }
}

/// A node's role (§5.1, plus pre-candidate from thesis §9.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Follower => "follower",
            Role::PreCandidate => "pre_candidate",
            Role::Candidate => "candidate",
            Role::Leader => "leader",
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
/// 1. persist `hard_state` and `entries` (entries replace any stored entry at the same
///    index or later) and make them durable;
/// 2. call [`RaftNode::persisted`] with the last persisted entry;
/// 3. send `messages` (a leader's `Append` messages may be sent before step 1);
/// 4. apply `committed` in order, then serve `reads`; answer `failed_reads`; treat
///    proposals at index >= `aborted_from` as outcome-unknown.
#[derive(Debug, Default)]
pub struct Ready {
    pub hard_state: Option<HardState>,
    pub entries: Vec<Entry>,
    pub messages: Vec<Message>,
    pub committed: Vec<Entry>,
    /// Reads confirmed by a quorum whose read index is applied once `committed` is.
    pub reads: Vec<ReadId>,
    /// Reads this node cannot serve (not leader, or leadership lost); never served.
    pub failed_reads: Vec<ReadId>,
    /// Set when this node stopped being leader with uncommitted entries of its own.
    pub aborted_from: Option<Index>,
}

impl Ready {
    pub fn is_empty(&self) -> bool {
        self.hard_state.is_none()
            && self.entries.is_empty()
            && self.messages.is_empty()
            && self.committed.is_empty()
            && self.reads.is_empty()
            && self.failed_reads.is_empty()
            && self.aborted_from.is_none()
    }
}

/// A read waiting for its leadership confirmation round.
#[derive(Clone, Copy, Debug)]
struct PendingRead {
    id: ReadId,
    /// The commit index when the read arrived; served once applied.
    index: Index,
    /// The heartbeat round that must be acknowledged by a quorum.
    round: u64,
}

/// A pure Raft node. See the module documentation of [`crate::raft`].
pub struct RaftNode {
    id: NodeId,
    /// The other members, sorted so every iteration is deterministic.
    peers: Vec<NodeId>,
    config: Config,
    rng: StdRng,

    term: Term,
    voted_for: Option<NodeId>,
    role: Role,
    leader: Option<NodeId>,
    log: Log,
    commit: Index,
    /// Committed entries up to here have been handed to the caller to apply.
    applied: Index,

    /// Ticks since the last election-timer reset (followers/candidates), or since the
    /// start of the current check-quorum window (leaders).
    election_elapsed: u32,
    randomized_timeout: u32,
    heartbeat_elapsed: u32,

    /// Votes (or pre-votes) received in the current campaign.
    votes: BTreeMap<NodeId, bool>,
    /// Per-follower replication state; only meaningful while leader.
    progress: BTreeMap<NodeId, Progress>,

    /// Latest ReadIndex round started; monotonic across terms.
    read_round: u64,
    /// Reads that arrived before this leader committed an entry of its term.
    reads_before_commit: Vec<ReadId>,
    /// Reads not yet assigned a round (one round is shared by the whole batch).
    reads_unsent: Vec<ReadId>,
    reads_pending: VecDeque<PendingRead>,
    /// Reads confirmed by a quorum, waiting for their index to be applied.
    reads_confirmed: Vec<(ReadId, Index)>,

    // Outputs, drained by `ready`.
    hard_state_dirty: bool,
    outbox: Vec<Message>,
    failed_reads: Vec<ReadId>,
    aborted_from: Option<Index>,
}

impl RaftNode {
    /// A node starting from `hard_state` and `entries` recovered from stable storage (both
    /// empty for a brand-new node). `members` includes `id`.
    pub fn new(
        id: NodeId,
        members: &[NodeId],
        config: Config,
        seed: u64,
        hard_state: HardState,
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
            role: Role::Follower,
            leader: None,
            log: Log::restore(entries),
            commit: 0,
            applied: 0,
            election_elapsed: 0,
            randomized_timeout: 0,
            heartbeat_elapsed: 0,
            votes: BTreeMap::new(),
            progress: BTreeMap::new(),
            read_round: 0,
            reads_before_commit: Vec::new(),
            reads_unsent: Vec::new(),
            reads_pending: VecDeque::new(),
            reads_confirmed: Vec::new(),
            hard_state_dirty: false,
            outbox: Vec::new(),
            failed_reads: Vec::new(),
            aborted_from: None,
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
        self.role
    }
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }
    pub fn is_leader(&self) -> bool {
        self.role == Role::Leader
    }
    pub fn commit_index(&self) -> Index {
        self.commit
    }
    pub fn applied_index(&self) -> Index {
        self.applied
    }
    pub fn last_index(&self) -> Index {
        self.log.last_index()
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

    // ----- inputs --------------------------------------------------------------------

    /// Advances time by one tick.
    pub fn tick(&mut self) {
        self.election_elapsed += 1;
        if self.role == Role::Leader {
            self.tick_leader();
        } else if self.election_elapsed >= self.randomized_timeout {
            self.become_pre_candidate();
        }
    }

    fn tick_leader(&mut self) {
        // Check-quorum (thesis §6.2): a leader that has not heard from a majority within
        // an election timeout steps down, so a cut-off leader stops serving reads.
        if self.election_elapsed >= self.config.election_ticks {
            self.election_elapsed = 0;
            let active = 1 + self.progress.values().filter(|p| p.recently_active).count();
            if active < self.quorum() {
                self.become_follower(self.term, None);
                return;
            }
            for p in self.progress.values_mut() {
                p.recently_active = false;
            }
        }
        self.heartbeat_elapsed += 1;
        if self.heartbeat_elapsed >= self.config.heartbeat_ticks {
            self.broadcast_heartbeat();
        }
    }

    /// Appends a client command if this node is the leader. It is sent with the next
    /// [`ready`](Self::ready), batched with every other proposal since the last one.
    pub fn propose(&mut self, command: Command) -> Result<Index, NotLeader> {
        if self.role != Role::Leader {
            return Err(NotLeader {
                leader: self.leader,
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
        if self.role != Role::Leader {
            self.failed_reads.push(id);
        } else if self.log.term(self.commit) != Some(self.term) {
            // Until the leader's no-op commits it may not know the latest commit index.
            self.reads_before_commit.push(id);
        } else {
            self.reads_unsent.push(id);
        }
    }

    /// The election timer fires now: a node that does not lead starts a pre-vote at
    /// once (golden scripts use it to pick who campaigns).
    pub fn campaign(&mut self) {
        if self.role != Role::Leader {
            self.become_pre_candidate();
        }
    }

    /// Handles one message from a peer.
    pub fn step(&mut self, m: Message) {
        if m.to != self.id || !self.peers.contains(&m.from) {
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
            let leader = matches!(m.body, Body::Append { .. }).then_some(m.from);
            self.become_follower(m.term, leader);
        } else if m.term < self.term {
            // A stale sender: tell it our term so it steps down (Figure 2).
            match m.body {
                Body::Vote { .. } => self.send(m.from, Body::VoteResponse { granted: false }),
                Body::Append { prev_index, .. } => self.send(
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
            Body::PreVote { .. } | Body::PreVoteResponse { .. } => unreachable!("handled above"),
        }
    }

    /// The caller made the log durable up to `index@term`. A leader counts its own
    /// copy toward a commit only from here on (DESIGN.md, durability rule).
    pub fn persisted(&mut self, index: Index, term: Term) {
        let before = self.log.stable();
        self.log.mark_stable(index, term);
        if self.log.stable() > before && self.role == Role::Leader {
            self.maybe_commit();
        }
    }

    /// Drains everything the caller must act on. Sends the appends and read rounds
    /// that the batch of inputs since the last call made necessary.
    pub fn ready(&mut self) -> Ready {
        if self.role == Role::Leader {
            self.flush_leader();
        }
        let hard_state = std::mem::take(&mut self.hard_state_dirty).then(|| self.hard_state());
        let entries = self.log.take_unstable();
        let committed = if self.commit > self.applied {
            let c = self.log.slice(self.applied + 1, self.commit, usize::MAX);
            self.applied = self.commit;
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
        }
    }

    // ----- role transitions (one function per role) ----------------------------------

    fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        if self.role == Role::Leader {
            self.step_down_leader();
        }
        if term > self.term {
            self.term = term;
            self.voted_for = None;
            self.hard_state_dirty = true;
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.reset_election_timer();
    }

    /// Leadership is lost: uncommitted proposals have an unknown fate, waiting reads fail.
    fn step_down_leader(&mut self) {
        if self.log.last_index() > self.commit {
            let from = self.commit + 1;
            self.aborted_from = Some(self.aborted_from.map_or(from, |a| a.min(from)));
        }
        self.failed_reads.append(&mut self.reads_before_commit);
        self.failed_reads.append(&mut self.reads_unsent);
        self.failed_reads
            .extend(self.reads_pending.drain(..).map(|r| r.id));
        self.progress.clear();
    }

    /// Pre-vote: ask whether we could win before raising our term, so a node that was
    /// cut off cannot disrupt a healthy leader when it returns.
    fn become_pre_candidate(&mut self) {
        self.start_campaign(Role::PreCandidate);
        if self.won_votes() {
            return self.become_candidate();
        }
        let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
        for peer in self.peers.clone() {
            self.send_with_term(
                peer,
                self.term + 1,
                Body::PreVote {
                    last_index,
                    last_term,
                },
            );
        }
    }

    /// §5.2: new term, vote for self, ask everyone.
    fn become_candidate(&mut self) {
        self.term += 1;
        self.voted_for = Some(self.id);
        self.hard_state_dirty = true;
        self.start_campaign(Role::Candidate);
        if self.won_votes() {
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
        self.role = Role::Leader;
        self.leader = Some(self.id);
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        let last = self.log.last_index();
        self.progress = self
            .peers
            .iter()
            .map(|&p| (p, Progress::new(last)))
            .collect();
        self.log.append(Entry {
            index: last + 1,
            term: self.term,
            payload: Payload::Noop,
        });
        // The probes go out in `flush_leader`, together with the no-op.
    }

    /// Common start of a (pre-)vote campaign: no known leader, a fresh timeout, and
    /// only our own vote so far.
    fn start_campaign(&mut self, role: Role) {
        self.role = role;
        self.leader = None;
        self.reset_election_timer();
        self.votes.clear();
        self.votes.insert(self.id, true);
    }

    fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        let base = self.config.election_ticks;
        self.randomized_timeout = self.rng.gen_range(base..2 * base);
    }

    fn won_votes(&self) -> bool {
        self.votes.values().filter(|&&g| g).count() >= self.quorum()
    }

    fn lost_votes(&self) -> bool {
        self.votes.values().filter(|&&g| !g).count() >= self.quorum()
    }

    /// A follower that heard from its leader within the base election timeout, or a
    /// leader, believes a leader is alive.
    fn in_lease(&self) -> bool {
        match self.role {
            Role::Leader => true,
            Role::Follower => {
                self.leader.is_some() && self.election_elapsed < self.config.election_ticks
            }
            _ => false,
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
        if self.role != Role::PreCandidate || (granted && term != self.term + 1) {
            return;
        }
        self.votes.insert(from, granted);
        if self.won_votes() {
            self.become_candidate();
        } else if self.lost_votes() {
            self.become_follower(self.term, None);
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
        if self.role != Role::Candidate {
            return;
        }
        self.votes.insert(from, granted);
        if self.won_votes() {
            self.become_leader();
        } else if self.lost_votes() {
            self.become_follower(self.term, None);
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
        if self.role != Role::Follower {
            self.become_follower(self.term, Some(from));
        }
        self.leader = Some(from);
        self.election_elapsed = 0;

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

    fn handle_append_response(&mut self, from: NodeId, result: AppendResult, read_round: u64) {
        if self.role != Role::Leader {
            return;
        }
        let last = self.log.last_index();
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.recently_active = true;
        pr.read_ack = pr.read_ack.max(read_round);
        match result {
            AppendResult::Match(index) => {
                if pr.on_match(index.min(last)) {
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
                let latest = prev_index + 1 == pr.next;
                let in_window = pr.matched < prev_index && prev_index < pr.next;
                if (latest || in_window) && conflict_index > 0 {
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
        let mut matched: Vec<Index> = self.progress.values().map(|p| p.matched).collect();
        matched.push(self.log.stable());
        matched.sort_unstable_by(|a, b| b.cmp(a));
        let candidate = matched[self.quorum() - 1];
        if candidate > self.commit && self.log.term(candidate) == Some(self.term) {
            self.commit = candidate;
            // The first commit in our term lets waiting reads learn a safe read index.
            self.reads_unsent.append(&mut self.reads_before_commit);
        }
    }

    /// Once per batch: stream new entries to every replicating follower and start one
    /// ReadIndex round for all reads that arrived in the batch.
    fn flush_leader(&mut self) {
        for peer in self.peers.clone() {
            let pr = &self.progress[&peer];
            if pr.probing {
                if !pr.probe_sent {
                    // A new leader's first probe carries the no-op.
                    self.send_probe(peer);
                }
            } else {
                self.send_entries(peer);
            }
        }
        if !self.reads_unsent.is_empty() {
            self.read_round += 1;
            let (index, round) = (self.commit, self.read_round);
            for id in self.reads_unsent.drain(..) {
                self.reads_pending
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
        loop {
            let pr = &self.progress[&peer];
            if pr.probing
                || pr.inflight.len() >= self.config.max_inflight
                || pr.next > self.log.last_index()
            {
                return;
            }
            let end = self.send_append(peer, true);
            let pr = self.progress.get_mut(&peer).expect("peer has progress");
            pr.inflight.push_back(end);
            pr.next = end + 1;
        }
    }

    /// Sends one AppendEntries from the follower's `next` (with entries, or none for a
    /// heartbeat) and returns the last index it covers.
    fn send_append(&mut self, peer: NodeId, with_entries: bool) -> Index {
        let next = self.progress[&peer].next;
        let prev_index = next - 1;
        let prev_term = self.log.term(prev_index).expect("next is within the log");
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
        end
    }

    /// Heartbeats assert leadership, carry the commit index, confirm read rounds, and
    /// (re)send a probe to followers whose log position is still unknown.
    fn broadcast_heartbeat(&mut self) {
        self.heartbeat_elapsed = 0;
        for peer in self.peers.clone() {
            if self.progress[&peer].probing {
                self.send_probe(peer);
            } else {
                self.send_append(peer, false);
            }
        }
    }

    fn send_probe(&mut self, peer: NodeId) {
        self.send_append(peer, true);
        self.progress
            .get_mut(&peer)
            .expect("peer has progress")
            .probe_sent = true;
    }

    /// Moves reads whose round a quorum has acknowledged to the confirmed list.
    fn release_reads(&mut self) {
        let mut acks: Vec<u64> = self.progress.values().map(|p| p.read_ack).collect();
        acks.push(self.read_round);
        acks.sort_unstable_by(|a, b| b.cmp(a));
        let confirmed = acks[self.quorum() - 1];
        while self
            .reads_pending
            .front()
            .is_some_and(|r| r.round <= confirmed)
        {
            let r = self.reads_pending.pop_front().expect("front exists");
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
