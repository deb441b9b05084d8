//! A replica: one Raft node plus its key-value state machine and the bookkeeping that
//! turns client requests into proposals and reads, and committed entries into replies.
//!
//! Like the Raft core it is pure (no threads, sockets, files or clocks), so the
//! simulator and the real node runtime share it: the simulator drives it with virtual
//! time and a fake network, the server with a timer thread and TCP. Replies are
//! addressed by an opaque reply address `T` chosen by the caller (a reply channel in
//! the server, a simulated client's attempt in the simulator).
//!
//! [`turn`] is the other half of that sharing: the one function that feeds a batch of
//! [`Input`]s to a replica and then persists, sends and replies in the order the
//! durability rule demands. The server's state thread and the simulator both call it.

pub mod turn;

use std::collections::{BTreeMap, HashMap};

use crate::{
    kv::{Command, Store, WriteResult},
    protocol::ErrorCode,
    raft::{Config, Entry, HardState, Index, Message, NodeId, Payload, RaftNode, Role, Term},
};

/// One input of a turn: everything that can happen to a node.
#[derive(Debug)]
pub enum Input<T> {
    /// One tick of time passed.
    Tick,
    /// A message from a peer.
    Peer(Message),
    /// A client request and where its answer goes.
    Request(ClientOp, T),
    /// The node is asked to stop (Ctrl-C, SIGTERM): fail what is pending, take nothing
    /// new.
    Shutdown,
}

/// What a client asked for, once parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientOp {
    /// A read; `stale` reads skip ReadIndex and answer from local state at once.
    Get {
        key: String,
        stale: bool,
    },
    Write(Command),
}

/// The answer to one client request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A get's result (`None`: the key is absent).
    Value(Option<String>),
    /// A write was applied (or had been applied before, for a retry).
    Written,
    Failed {
        code: ErrorCode,
        message: String,
        leader: Option<NodeId>,
    },
}

impl Outcome {
    /// The answer to a request that reached a node after its shutdown began.
    pub fn shutting_down() -> Outcome {
        Outcome::Failed {
            code: ErrorCode::Unavailable,
            message: "the node is shutting down; nothing was applied".into(),
            leader: None,
        }
    }
}

/// The length of a tick on a real node unless `--tick-ms` says otherwise. With the
/// core's default timing ([`Config::default`]: elections after 10–20 ticks, heartbeats
/// every 2) a follower waits 300–600 ms for its leader and a leader heartbeats every
/// 60 ms. The simulator and the golden scripts count the same ticks.
pub const DEFAULT_TICK_MS: u64 = 30;

/// How long a request may wait for commit or read confirmation before it is answered
/// `timeout` (a write: outcome unknown) or `unavailable` (a read). Shorter than the
/// client's 3 s wait for an answer, so the client hears the verdict instead of giving
/// up on the connection.
pub const REQUEST_TIMEOUT_MS: u64 = 2000;

/// Replica knobs beyond the Raft core's. This and [`Config::default`] are the one place
/// where the timing defaults of the server, the simulator and the tests live.
#[derive(Clone, Debug)]
pub struct ReplicaConfig {
    pub raft: Config,
    /// A request still unanswered after this many ticks gets `timeout` (writes) or
    /// `unavailable` (reads).
    pub request_timeout_ticks: u32,
}

impl ReplicaConfig {
    /// The default timing for ticks of `tick_ms` milliseconds: the same Raft timing in
    /// ticks, and a request timeout of [`REQUEST_TIMEOUT_MS`] of wall time (never less
    /// than two election timeouts, so a request can outlive one election).
    pub fn for_tick(tick_ms: u64) -> ReplicaConfig {
        let raft = Config::default();
        let ticks = REQUEST_TIMEOUT_MS.div_ceil(tick_ms.max(1));
        ReplicaConfig {
            request_timeout_ticks: u32::try_from(ticks)
                .unwrap_or(u32::MAX)
                .max(2 * raft.election_ticks),
            raft,
        }
    }
}

impl Default for ReplicaConfig {
    /// [`ReplicaConfig::for_tick`] at [`DEFAULT_TICK_MS`].
    fn default() -> ReplicaConfig {
        ReplicaConfig::for_tick(DEFAULT_TICK_MS)
    }
}

/// Work for the caller, in the order described on [`crate::raft::Ready`]: persist, call
/// [`Replica::persisted`], send, then deliver replies.
#[derive(Debug)]
pub struct ReplicaReady<T> {
    pub hard_state: Option<HardState>,
    pub entries: Vec<Entry>,
    pub messages: Vec<Message>,
    /// Entries applied to the state machine in this round (for observers; already applied).
    pub applied: Vec<Entry>,
    pub replies: Vec<(T, Outcome)>,
}

impl<T> ReplicaReady<T> {
    pub fn is_empty(&self) -> bool {
        self.hard_state.is_none()
            && self.entries.is_empty()
            && self.messages.is_empty()
            && self.applied.is_empty()
            && self.replies.is_empty()
    }
}

struct PendingWrite<T> {
    term: Term,
    token: T,
    deadline: u64,
}

struct PendingRead<T> {
    key: String,
    token: T,
    deadline: u64,
}

/// See the module documentation.
pub struct Replica<T> {
    node: RaftNode,
    store: Store,
    request_timeout: u64,
    now: u64,
    pending_writes: BTreeMap<Index, PendingWrite<T>>,
    pending_reads: HashMap<u64, PendingRead<T>>,
    next_read_id: u64,
    /// Replies produced outside `ready` (refusals, stale reads, timeouts).
    replies: Vec<(T, Outcome)>,
    /// Set by [`Input::Shutdown`]: new requests are refused at once.
    shutting_down: bool,
}

impl<T> Replica<T> {
    /// A replica restored from `hard_state` and `entries` (empty for a new node). The
    /// state machine starts empty and is rebuilt as entries commit.
    pub fn new(
        id: NodeId,
        members: &[NodeId],
        config: ReplicaConfig,
        seed: u64,
        hard_state: HardState,
        entries: Vec<Entry>,
    ) -> Replica<T> {
        Replica {
            node: RaftNode::new(id, members, config.raft, seed, hard_state, entries),
            store: Store::new(),
            request_timeout: u64::from(config.request_timeout_ticks),
            now: 0,
            pending_writes: BTreeMap::new(),
            pending_reads: HashMap::new(),
            next_read_id: 1,
            replies: Vec::new(),
            shutting_down: false,
        }
    }

    pub fn node(&self) -> &RaftNode {
        &self.node
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn role(&self) -> Role {
        self.node.role()
    }

    /// Requests waiting for commit or read confirmation.
    pub fn pending_requests(&self) -> usize {
        self.pending_writes.len() + self.pending_reads.len()
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down
    }

    /// Feeds one input in; its effects come out of the next [`ready`](Self::ready).
    pub fn feed(&mut self, input: Input<T>) {
        match input {
            Input::Tick => self.tick(),
            Input::Peer(message) => self.step(message),
            Input::Request(op, to) => self.request(to, op),
            Input::Shutdown => self.shutdown(),
        }
    }

    pub fn tick(&mut self) {
        self.now = self.now.saturating_add(1);
        self.node.tick();
        self.expire_requests();
    }

    /// See [`RaftNode::campaign`].
    pub fn campaign(&mut self) {
        self.node.campaign();
    }

    pub fn step(&mut self, message: Message) {
        self.node.step(message);
    }

    pub fn persisted(&mut self, index: Index, term: Term) {
        self.node.persisted(index, term);
    }

    /// Accepts one client request; its reply comes out of a later [`ready`](Self::ready).
    pub fn request(&mut self, token: T, op: ClientOp) {
        if self.shutting_down {
            return self.replies.push((token, Outcome::shutting_down()));
        }
        match op {
            ClientOp::Get { key, stale: true } => {
                let value = self.store.get(&key).map(str::to_owned);
                self.replies.push((token, Outcome::Value(value)));
            }
            ClientOp::Get { key, stale: false } => {
                if !self.node.is_leader() {
                    let refusal = self.refusal();
                    return self.replies.push((token, refusal));
                }
                let id = self.next_read_id;
                self.next_read_id += 1;
                let deadline = self.now.saturating_add(self.request_timeout);
                self.pending_reads.insert(
                    id,
                    PendingRead {
                        key,
                        token,
                        deadline,
                    },
                );
                self.node.read(id);
            }
            ClientOp::Write(command) => match self.node.propose(command) {
                Ok(index) => {
                    let write = PendingWrite {
                        term: self.node.term(),
                        token,
                        deadline: self.now.saturating_add(self.request_timeout),
                    };
                    self.pending_writes.insert(index, write);
                }
                Err(_) => {
                    let refusal = self.refusal();
                    self.replies.push((token, refusal));
                }
            },
        }
    }

    /// The answer for a request this node will not take: `not_leader` with a hint when a
    /// leader is known, `unavailable` during an election.
    fn refusal(&self) -> Outcome {
        match self.node.leader() {
            Some(leader) => Outcome::Failed {
                code: ErrorCode::NotLeader,
                message: format!(
                    "node {} is not the leader; node {leader} is",
                    self.node.id()
                ),
                leader: Some(leader),
            },
            None => Outcome::Failed {
                code: ErrorCode::Unavailable,
                message: "no leader is known right now (an election is under way)".into(),
                leader: None,
            },
        }
    }

    /// Drains the Raft core and applies what it committed.
    pub fn ready(&mut self) -> ReplicaReady<T> {
        let ready = self.node.ready();
        if let Some(from) = ready.aborted_from {
            for (_, write) in self.pending_writes.split_off(&from) {
                self.replies.push((write.token, lost_leadership()));
            }
        }
        for entry in &ready.committed {
            let result = match &entry.payload {
                Payload::Command(command) => Some(self.store.apply(command)),
                Payload::Noop => None,
            };
            let Some(write) = self.pending_writes.remove(&entry.index) else {
                continue;
            };
            let outcome = match result {
                _ if write.term != entry.term => lost_leadership(),
                Some(WriteResult::Ok) => Outcome::Written,
                Some(WriteResult::StaleSeq { last_seq }) => Outcome::Failed {
                    code: ErrorCode::BadRequest,
                    message: format!(
                        "seq is older than {last_seq}, the newest applied for this client; \
                         its result is no longer kept"
                    ),
                    leader: None,
                },
                None => unreachable!("a proposal is never a no-op"),
            };
            self.replies.push((write.token, outcome));
        }
        for id in ready.reads {
            if let Some(read) = self.pending_reads.remove(&id) {
                let value = self.store.get(&read.key).map(str::to_owned);
                self.replies.push((read.token, Outcome::Value(value)));
            }
        }
        for id in ready.failed_reads {
            if let Some(read) = self.pending_reads.remove(&id) {
                let refusal = self.refusal();
                self.replies.push((read.token, refusal));
            }
        }
        let mut replies = std::mem::take(&mut self.replies);
        self.add_leader_hints(&mut replies);
        ReplicaReady {
            hard_state: ready.hard_state,
            entries: ready.entries,
            messages: ready.messages,
            applied: ready.committed,
            replies,
        }
    }

    /// A hint helps a refused or timed-out client retry elsewhere: every failure names
    /// the leader this node knows of, except that a node going away never names itself.
    fn add_leader_hints(&self, replies: &mut [(T, Outcome)]) {
        let me = Some(self.node.id());
        let known = self.node.leader();
        for (_, outcome) in replies.iter_mut() {
            if let Outcome::Failed { leader, .. } = outcome {
                if leader.is_none() && known != me {
                    *leader = known;
                } else if self.shutting_down && *leader == me {
                    *leader = None;
                }
            }
        }
    }

    /// Fails every request still waiting, for a clean shutdown: writes get `timeout`
    /// (they may still commit on the other nodes), reads get `unavailable`. Requests
    /// that arrive later are refused.
    pub fn shutdown(&mut self) {
        self.shutting_down = true;
        self.now = u64::MAX;
        self.expire_requests();
    }

    /// Answers requests that waited too long. A write's fate is then unknown; a read
    /// simply was not served.
    fn expire_requests(&mut self) {
        let now = self.now;
        let leader = self.node.leader();
        for (_, write) in self.pending_writes.extract_if(.., |_, w| w.deadline <= now) {
            let outcome = Outcome::Failed {
                code: ErrorCode::Timeout,
                message: "the write was not committed in time; it may or may not take effect"
                    .into(),
                leader,
            };
            self.replies.push((write.token, outcome));
        }
        for (_, read) in self.pending_reads.extract_if(|_, r| r.deadline <= now) {
            let outcome = Outcome::Failed {
                code: ErrorCode::Unavailable,
                message: "the leader could not confirm a quorum in time".into(),
                leader,
            };
            self.replies.push((read.token, outcome));
        }
    }
}

fn lost_leadership() -> Outcome {
    Outcome::Failed {
        code: ErrorCode::Timeout,
        message: "leadership changed before the write committed; it may or may not take effect"
            .into(),
        leader: None,
    }
}
