//! The states a node can be in (§5.1, plus pre-candidate from thesis §9.6), each with
//! only the data that role needs, so a follower cannot hold votes and a candidate cannot
//! hold replication progress.

use std::collections::{BTreeMap, VecDeque};

use super::{progress::Progress, Index, NodeId, ReadId};

/// A node's role, as callers see it: a plain name without the role's data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Follows a leader's appends, or waits for one to appear.
    Follower,
    /// Asks whether it could win an election before raising its term (thesis §9.6).
    PreCandidate,
    /// Raised its term and asks for votes (§5.2).
    Candidate,
    /// Replicates its log to the others and serves clients (§5.3).
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

/// A node's role together with the data only that role has. Each variant is entered
/// through one function of `RaftNode` (`become_follower`, `become_pre_candidate`,
/// `become_candidate`, `become_leader`); leaving a role drops its data.
#[derive(Debug)]
pub enum RoleState {
    Follower {
        /// The leader of the current term, once heard from (a hint for clients).
        leader: Option<NodeId>,
    },
    /// Campaigning without changing any term; the pre-votes received so far.
    PreCandidate(Votes),
    /// Campaigning in its own new term; the votes received so far.
    Candidate(Votes),
    /// Leading; what only a leader tracks.
    Leader(LeaderState),
}

impl RoleState {
    /// The role's plain name.
    pub fn role(&self) -> Role {
        match self {
            RoleState::Follower { .. } => Role::Follower,
            RoleState::PreCandidate(_) => Role::PreCandidate,
            RoleState::Candidate(_) => Role::Candidate,
            RoleState::Leader(_) => Role::Leader,
        }
    }
}

/// Where a campaign stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tally {
    /// A quorum granted.
    Won,
    /// A quorum refused: the campaign cannot succeed.
    Lost,
    /// Neither yet.
    Open,
}

/// The (pre-)votes received in one campaign, our own included; at most one per node.
#[derive(Debug)]
pub struct Votes {
    /// Each answer so far, by voter.
    granted: BTreeMap<NodeId, bool>,
}

impl Votes {
    /// A campaign that so far has only the candidate's own vote.
    pub fn new(own: NodeId) -> Votes {
        Votes {
            granted: BTreeMap::from([(own, true)]),
        }
    }

    /// Records `from`'s answer (a repeated answer replaces the earlier one).
    pub fn record(&mut self, from: NodeId, granted: bool) {
        self.granted.insert(from, granted);
    }

    /// Won once `quorum` granted, lost once `quorum` refused.
    pub fn tally(&self, quorum: usize) -> Tally {
        let yes = self.granted.values().filter(|&&g| g).count();
        let no = self.granted.len() - yes;
        if yes >= quorum {
            Tally::Won
        } else if no >= quorum {
            Tally::Lost
        } else {
            Tally::Open
        }
    }
}

/// What a leader tracks, from `become_leader` until it steps down. When it steps down
/// its unconfirmed reads fail; reads a quorum already confirmed are kept on the node
/// (`RaftNode::reads_confirmed`) and still served.
#[derive(Debug)]
pub struct LeaderState {
    /// Replication state of each follower, by id (every peer has one).
    pub progress: BTreeMap<NodeId, Progress>,
    /// Ticks since the current check-quorum window began (thesis §6.2).
    pub check_quorum_elapsed: u32,
    /// Ticks since the last heartbeat broadcast.
    pub heartbeat_elapsed: u32,
    /// Reads that arrived before this leader committed an entry of its term.
    pub reads_before_commit: Vec<ReadId>,
    /// Reads not yet assigned a round (one round is shared by the whole batch).
    pub reads_unsent: Vec<ReadId>,
    /// Reads whose round a quorum has not yet acknowledged, oldest round first.
    pub reads_pending: VecDeque<PendingRead>,
}

impl LeaderState {
    /// A new leader whose log ends at `last_index` (before its no-op): it probes every
    /// peer and starts its clocks.
    pub fn new(peers: &[NodeId], last_index: Index) -> LeaderState {
        LeaderState {
            progress: peers
                .iter()
                .map(|&p| (p, Progress::new(last_index)))
                .collect(),
            check_quorum_elapsed: 0,
            heartbeat_elapsed: 0,
            reads_before_commit: Vec::new(),
            reads_unsent: Vec::new(),
            reads_pending: VecDeque::new(),
        }
    }

    /// Whether a quorum, counting ourselves, was heard from in this check-quorum window.
    pub fn quorum_active(&self, quorum: usize) -> bool {
        let active = 1 + self.progress.values().filter(|p| p.recently_active).count();
        active >= quorum
    }

    /// Starts the next check-quorum window: nobody heard from yet.
    pub fn start_check_quorum_window(&mut self) {
        self.check_quorum_elapsed = 0;
        for p in self.progress.values_mut() {
            p.recently_active = false;
        }
    }

    /// The highest index stored on a quorum, counting our own durable log up to `own`.
    pub fn quorum_matched(&self, own: Index, quorum: usize) -> Index {
        let mut matched: Vec<Index> = self.progress.values().map(|p| p.matched()).collect();
        matched.push(own);
        matched.sort_unstable_by(|a, b| b.cmp(a));
        matched[quorum - 1]
    }

    /// The highest ReadIndex round acknowledged by a quorum, counting our own `own`.
    pub fn quorum_read_round(&self, own: u64, quorum: usize) -> u64 {
        let mut acks: Vec<u64> = self.progress.values().map(|p| p.read_ack).collect();
        acks.push(own);
        acks.sort_unstable_by(|a, b| b.cmp(a));
        acks[quorum - 1]
    }
}

/// A read waiting for its leadership confirmation round.
#[derive(Clone, Copy, Debug)]
pub struct PendingRead {
    /// The caller's handle.
    pub id: ReadId,
    /// The commit index when the read's round started; served once applied.
    pub index: Index,
    /// The heartbeat round that must be acknowledged by a quorum.
    pub round: u64,
}
