//! A replica: one Raft node plus its key-value state machine and the bookkeeping that
//! turns client requests into proposals and reads, and committed entries into replies.
//!
//! Like the Raft core it is pure (no threads, sockets, files or clocks), so the
//! simulator and the real node runtime share it: the simulator drives it with virtual
//! time and a fake network, the server with a timer thread and TCP. Replies are
//! addressed by an opaque reply address `T` chosen by the caller (a reply channel in
//! the server, a simulated client's attempt in the simulator).
//!
//! **Cluster time.** The leader's replica stamps every command it proposes with its
//! clock in milliseconds (and with its session rules when the replicated ones differ),
//! so that the state machine can expire idle sessions by time carried in the log,
//! identically on every replica (see the `kv` module essay, thesis §6.3 and LogCabin's
//! cluster clock). The clock is counted in ticks of [`ReplicaConfig::tick_ms`], so a
//! replica still reads no clock of its own. A replica that becomes leader starts its
//! clock from the newest stamp it holds (the applied state's clock, and any later stamp
//! in the uncommitted tail of its log, since those entries may still commit before its
//! own), never below its own earlier reading, and advances it by one tick's length per
//! tick while it leads. Followers never stamp. So stamps never go backwards along the
//! log, and cluster time never runs ahead of the time leaders have served; elections
//! and a lagging timer only slow it down (sessions then live longer, never shorter).
//!
//! [`turn`] is the other half of that sharing: the one function that feeds a batch of
//! [`Input`]s to a replica and then persists, sends and replies in the order the
//! durability rule demands. The server's state thread and the simulator both call it.

mod snapshot;
pub mod turn;

pub use snapshot::Snapshot;

use std::collections::{BTreeMap, HashMap};

use crate::{
    kv::{Command, SessionId, SessionLimits, Stamp, Store, WriteResult},
    protocol::ErrorCode,
    raft::{
        Body, Config, Entry, HardState, Index, Message, NodeId, Payload, RaftNode, ReadId, Role,
        SnapshotMeta, Term, Violation,
    },
};

/// One input of a turn: everything that can happen to a node.
#[derive(Debug)]
pub enum Input<T> {
    /// One tick of time passed.
    Tick,
    /// A message from a peer.
    Peer(Message),
    /// An InstallSnapshot message from the leader, with the snapshot it names, complete
    /// and durable on this node's disk.
    PeerSnapshot {
        message: Message,
        snapshot: Snapshot,
    },
    /// A snapshot this node took ([`ReplicaReady::take_snapshot`]) is now durable.
    SnapshotSaved(SnapshotMeta),
    /// Saving that snapshot failed (a full disk, say): the next one is taken when the
    /// next interval is up.
    SnapshotFailed,
    /// Sending this leader's snapshot to that peer ended (done, or given up).
    SnapshotSent(NodeId),
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
    /// Open a registered session (answered [`Outcome::Registered`]).
    Register,
}

/// The answer to one client request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A get's result (`None`: the key is absent).
    Value(Option<String>),
    /// A write was applied (or had been applied before, for a retry).
    Written,
    /// A session was registered, with this number.
    Registered(u64),
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

/// Take a snapshot after this many entries were applied since the last one, unless
/// `--snapshot-entries` says otherwise.
pub const DEFAULT_SNAPSHOT_ENTRIES: u64 = 20_000;
/// ... or after this many bytes of commands were applied since the last one.
pub const DEFAULT_SNAPSHOT_BYTES: u64 = 16 << 20;
/// At most this many applied entries are kept in the log behind a snapshot, so that
/// a follower that lags a little catches up from the log rather than by a snapshot.
const MAX_TRAILING_ENTRIES: u64 = 5_000;

/// Replica knobs beyond the Raft core's. This and [`Config::default`] are the one place
/// where the timing defaults of the server, the simulator and the tests live.
#[derive(Clone, Debug)]
pub struct ReplicaConfig {
    pub raft: Config,
    /// A request still unanswered after this many ticks gets `timeout` (writes) or
    /// `unavailable` (reads).
    pub request_timeout_ticks: u32,
    /// Take a snapshot once this many entries were applied since the last one.
    pub snapshot_entries: u64,
    /// ... or once this many bytes of entries were (whichever comes first).
    pub snapshot_bytes: u64,
    /// The length of one tick in milliseconds: how far a leader's cluster clock moves
    /// per tick.
    pub tick_ms: u64,
    /// The session rules this replica stamps while it leads (from the cluster file
    /// stored with the membership; they must be the same on every node, and if not,
    /// the current leader's are the ones in force).
    pub sessions: SessionLimits,
}

impl ReplicaConfig {
    /// Entries kept in the log behind a snapshot: a quarter of the snapshot interval,
    /// at most [`MAX_TRAILING_ENTRIES`].
    fn trailing_entries(&self) -> u64 {
        (self.snapshot_entries / 4).min(MAX_TRAILING_ENTRIES)
    }
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
            snapshot_entries: DEFAULT_SNAPSHOT_ENTRIES,
            snapshot_bytes: DEFAULT_SNAPSHOT_BYTES,
            tick_ms: tick_ms.max(1),
            sessions: SessionLimits::default(),
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
    /// A snapshot from the leader replaced the log and the state machine: make it the
    /// durable snapshot, with the log reset to start after it, before anything else.
    pub installed: Option<Snapshot>,
    pub hard_state: Option<HardState>,
    pub entries: Vec<Entry>,
    pub messages: Vec<Message>,
    /// Entries applied to the state machine in this round (for observers; already applied).
    pub applied: Vec<Entry>,
    pub replies: Vec<(T, Outcome)>,
    /// A snapshot to save in the background; report [`Input::SnapshotSaved`] when it is
    /// durable. At most one is being saved at a time.
    pub take_snapshot: Option<Snapshot>,
    /// The log's entries up to here may go from disk: a durable snapshot covers them.
    pub compact_to: Option<Index>,
    /// Entries compaction removed from memory: freeing a large batch of them takes a
    /// while, so the runtime may free them off the state thread.
    pub removed_entries: Vec<Entry>,
    /// Peer messages refused for breaking a rule of the core's validation (see
    /// [`crate::raft::Violation`]), for the runtime to report. Nothing to act on.
    pub violations: Vec<Violation>,
    /// The election timer fired but the term is [`crate::raft::MAX_TERM`]: this node
    /// did not campaign and never will (see [`crate::raft::Ready::campaign_refused`]).
    pub campaign_refused: bool,
}

impl<T> ReplicaReady<T> {
    pub fn is_empty(&self) -> bool {
        self.installed.is_none()
            && self.take_snapshot.is_none()
            && self.compact_to.is_none()
            && self.hard_state.is_none()
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

/// A leader's cluster clock (see the module documentation).
#[derive(Clone, Copy, Debug, Default)]
struct LeaderClock {
    /// The term it was (re)started in; a clock from another term is restarted first.
    term: Term,
    /// Cluster time in milliseconds.
    ms: u64,
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
    config: ReplicaConfig,
    request_timeout: u64,
    now: u64,
    pending_writes: BTreeMap<Index, PendingWrite<T>>,
    pending_reads: HashMap<u64, PendingRead<T>>,
    next_read_id: u64,
    /// Replies produced outside `ready` (refusals, stale reads, timeouts).
    replies: Vec<(T, Outcome)>,
    /// Set by [`Input::Shutdown`]: new requests are refused at once.
    shutting_down: bool,
    /// Entries and bytes applied since the last snapshot was taken.
    since_snapshot: (u64, u64),
    /// A snapshot was handed out to be saved and is not durable yet.
    saving_snapshot: bool,
    /// The snapshot of the latest `PeerSnapshot` input, until the core installs it.
    incoming: Option<Snapshot>,
    /// The log was compacted up to here since the last `ready`.
    compact_to: Option<Index>,
    /// Entries compaction removed from memory since the last `ready`.
    removed_entries: Vec<Entry>,
    /// The cluster clock, while leading.
    clock: LeaderClock,
}

impl<T> Replica<T> {
    /// A replica restored from what stable storage holds: `hard_state`, the newest
    /// `snapshot` and the log `entries` (all empty for a new node; entries the
    /// snapshot covers are skipped). The state machine starts from the snapshot and is
    /// rebuilt from there as entries commit.
    pub fn new(
        id: NodeId,
        members: &[NodeId],
        config: ReplicaConfig,
        seed: u64,
        hard_state: HardState,
        snapshot: Option<Snapshot>,
        mut entries: Vec<Entry>,
    ) -> Replica<T> {
        let (meta, store) = snapshot.map_or_else(Default::default, |s| (s.meta, s.store));
        entries.retain(|e| e.index > meta.index);
        let node = RaftNode::new(
            id,
            members,
            config.raft.clone(),
            seed,
            hard_state,
            meta,
            entries,
        );
        Replica {
            node,
            store,
            request_timeout: u64::from(config.request_timeout_ticks),
            config,
            since_snapshot: (0, 0),
            saving_snapshot: false,
            incoming: None,
            compact_to: None,
            removed_entries: Vec::new(),
            clock: LeaderClock::default(),
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

    /// The reply address of the write proposed at `index` in `term`, while it waits
    /// for commit (for observers: which request an appended entry is).
    pub fn waiting_write(&self, index: Index, term: Term) -> Option<&T> {
        self.pending_writes
            .get(&index)
            .filter(|w| w.term == term)
            .map(|w| &w.token)
    }

    /// The reply address of linearizable read `id`, while it waits (for observers).
    pub fn waiting_read(&self, id: ReadId) -> Option<&T> {
        self.pending_reads.get(&id).map(|r| &r.token)
    }

    /// Feeds one input in; its effects come out of the next [`ready`](Self::ready).
    pub fn feed(&mut self, input: Input<T>) {
        match input {
            Input::Tick => self.tick(),
            // The data of a snapshot travels beside its message; without it there is
            // nothing to install.
            Input::Peer(Message {
                body: Body::InstallSnapshot { .. },
                ..
            }) => {}
            Input::Peer(message) => self.step(message),
            Input::PeerSnapshot { message, snapshot } => {
                if matches!(message.body, Body::InstallSnapshot { meta } if meta == snapshot.meta) {
                    let before = self.node.installing();
                    self.step(message);
                    // Keep the data only if the core installed this snapshot just now: one
                    // it ignored (old, refused, stale) must not take the place of one it
                    // installed earlier in the batch.
                    if self.node.installing() != before {
                        self.incoming = Some(snapshot);
                    }
                }
            }
            Input::SnapshotSaved(meta) => self.snapshot_saved(meta),
            Input::SnapshotFailed => self.saving_snapshot = false,
            Input::SnapshotSent(peer) => self.node.snapshot_sent(peer),
            Input::Request(op, to) => self.request(to, op),
            Input::Shutdown => self.shutdown(),
        }
    }

    pub fn tick(&mut self) {
        self.now = self.now.saturating_add(1);
        if self.node.is_leader() {
            let ms = self.cluster_time().saturating_add(self.config.tick_ms);
            self.clock.ms = ms;
        }
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
            ClientOp::Write(command) => self.propose(token, command),
            ClientOp::Register => self.propose(token, Command::register()),
        }
    }

    /// Stamps a command (if this replica leads) and proposes it; its answer comes when
    /// it is applied.
    fn propose(&mut self, token: T, mut command: Command) {
        if self.node.is_leader() {
            let time = self.cluster_time();
            let rules = self.config.sessions;
            command.stamp = Stamp {
                time,
                sessions: (rules != self.store.limits()).then_some(rules),
            };
        }
        match self.node.propose(command) {
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
        }
    }

    /// The leader's cluster time in ms, restarting the clock first if this is a new
    /// term (see the module documentation). Call only while leading.
    fn cluster_time(&mut self) -> u64 {
        let term = self.node.term();
        if self.clock.term != term {
            let log = self.node.log();
            let newest_in_log = (self.node.applied_index() + 1..=log.last_index())
                .filter_map(|i| match &log.get(i)?.payload {
                    Payload::Command(c) => Some(c.stamp.time),
                    Payload::Noop => None,
                })
                .max()
                .unwrap_or(0);
            let ms = self.clock.ms.max(self.store.clock()).max(newest_in_log);
            self.clock = LeaderClock { term, ms };
        }
        self.clock.ms
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

    /// A snapshot this replica took is durable: the core may send it, and the log
    /// behind it (but a few trailing entries) may go.
    fn snapshot_saved(&mut self, meta: SnapshotMeta) {
        self.saving_snapshot = false;
        self.node.snapshot_saved(meta);
        let before = self.node.log().base().index;
        let removed = self.node.compact(self.trailing_start(meta.index));
        if self.removed_entries.is_empty() {
            self.removed_entries = removed; // a move, not a copy of every entry
        } else {
            self.removed_entries.extend(removed);
        }
        let after = self.node.log().base().index;
        if after > before {
            self.compact_to = Some(after);
        }
    }

    /// Where compaction behind a snapshot at `index` stops: it keeps a few trailing
    /// entries, at most [`ReplicaConfig::trailing_entries`] of them and at most a
    /// quarter of `snapshot_bytes` (with large values, a count alone could keep
    /// gigabytes).
    fn trailing_start(&self, index: Index) -> Index {
        let max_bytes = self.config.snapshot_bytes / 4;
        let (mut keep, mut bytes) = (0, 0);
        while keep < self.config.trailing_entries() {
            let Some(entry) = self.node.log().get(index - keep) else {
                break;
            };
            bytes += entry.approx_size() as u64;
            if bytes > max_bytes {
                break;
            }
            keep += 1;
        }
        index - keep
    }

    /// The newest snapshot this replica has (index 0 if none).
    pub fn snapshot(&self) -> SnapshotMeta {
        self.node.snapshot()
    }

    /// Drains the Raft core and applies what it committed.
    pub fn ready(&mut self) -> ReplicaReady<T> {
        let ready = self.node.ready();
        let installed = ready.installed.map(|meta| {
            // `feed` steps an InstallSnapshot only together with its data.
            let snapshot = self
                .incoming
                .take()
                .filter(|s| s.meta == meta)
                .expect("an installed snapshot came with its data");
            self.store = snapshot.store.clone();
            self.since_snapshot = (0, 0);
            snapshot
        });
        self.incoming = None;
        if let Some(from) = ready.aborted_from {
            for (_, write) in self.pending_writes.split_off(&from) {
                self.replies.push((write.token, lost_leadership()));
            }
        }
        for entry in &ready.committed {
            self.since_snapshot.0 += 1;
            self.since_snapshot.1 += entry.approx_size() as u64;
            let applied = match &entry.payload {
                Payload::Command(command) => Some((command, self.store.apply(command))),
                Payload::Noop => None,
            };
            let Some(write) = self.pending_writes.remove(&entry.index) else {
                continue;
            };
            let outcome = match applied {
                _ if write.term != entry.term => lost_leadership(),
                Some((_, WriteResult::Ok)) => Outcome::Written,
                Some((_, WriteResult::Registered { session })) => Outcome::Registered(session),
                Some((
                    command,
                    result @ (WriteResult::SessionExpired | WriteResult::UnknownSession),
                )) => Outcome::Failed {
                    code: ErrorCode::SessionExpired,
                    message: session_expired_message(command, &result),
                    leader: None,
                },
                Some((command, WriteResult::SeqReused { seq })) => Outcome::Failed {
                    code: ErrorCode::BadRequest,
                    message: seq_reused_message(command, seq),
                    leader: None,
                },
                Some((command, WriteResult::StaleSeq { last_seq })) => Outcome::Failed {
                    code: ErrorCode::BadRequest,
                    message: format!(
                        "seq is older than {last_seq}, the newest applied for this {}; its \
                         result is no longer kept",
                        session_word(command)
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
            installed,
            hard_state: ready.hard_state,
            entries: ready.entries,
            messages: ready.messages,
            applied: ready.committed,
            replies,
            take_snapshot: self.maybe_take_snapshot(),
            compact_to: self.compact_to.take(),
            removed_entries: std::mem::take(&mut self.removed_entries),
            violations: ready.violations,
            campaign_refused: ready.campaign_refused,
        }
    }

    /// A snapshot of everything applied, when enough was applied since the last one and
    /// none is being saved. O(1): the store is persistent. "Enough" is the configured
    /// entries or bytes, and also a quarter of the state's size in new log bytes, so
    /// that a large state is not rewritten to disk every few seconds (LogCabin's rule):
    /// the log behind a snapshot then costs at most a quarter of the snapshot.
    fn maybe_take_snapshot(&mut self) -> Option<Snapshot> {
        let (entries, bytes) = self.since_snapshot;
        let due = (entries >= self.config.snapshot_entries || bytes >= self.config.snapshot_bytes)
            && bytes.saturating_mul(4) >= self.store.approx_bytes();
        if !due || self.saving_snapshot {
            return None;
        }
        let index = self.node.applied_index();
        let term = self
            .node
            .log()
            .term(index)
            .expect("the applied entry's term is known");
        self.saving_snapshot = true;
        self.since_snapshot = (0, 0);
        Some(Snapshot {
            meta: SnapshotMeta { index, term },
            members: self.node.members(),
            store: self.store.clone(),
        })
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

/// "client" for a named session (the word the protocol has always used), "session"
/// for a registered one.
fn session_word(command: &Command) -> &'static str {
    match command.session.as_ref().map(|s| &s.id) {
        Some(SessionId::Registered(_)) => "session",
        _ => "client",
    }
}

fn seq_reused_message(command: &Command, seq: u64) -> String {
    match command.session.as_ref().map(|s| &s.id) {
        Some(SessionId::Registered(n)) => format!(
            "seq {seq} of session {n} was already used for a different write, so this one \
             is not a retry and was not applied; is another process using the same session?"
        ),
        _ => format!(
            "seq {seq} of this client was already used for a different write, so this one is \
             not a retry and was not applied; is another process using the same client name?"
        ),
    }
}

/// Why a write got `session_expired`, in words that say what to do next.
fn session_expired_message(command: &Command, result: &WriteResult) -> String {
    let Some(session) = &command.session else {
        return "the write's session expired; it was not applied".into();
    };
    match (&session.id, result) {
        (SessionId::Registered(n), WriteResult::UnknownSession) => format!(
            "session {n} was never registered with this cluster, so this write was not \
             applied; register a session first"
        ),
        (SessionId::Registered(n), _) => format!(
            "session {n} expired (idle longer than the session timeout, or pushed out by \
             the session limit), so this write was not applied by this request; an earlier \
             attempt of it may have been applied before the session expired. Register a new \
             session to go on"
        ),
        (SessionId::Named(_), _) => format!(
            "the session of this client name expired (idle longer than the session \
             timeout, or pushed out by the session limit), so seq {} was not applied by \
             this request; an earlier attempt of it may have been. A higher seq starts the \
             session again; registered sessions (register) say this more reliably",
            session.seq
        ),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn install(index: Index, term: Term, members: &[NodeId]) -> Input<u32> {
        let meta = SnapshotMeta { index, term };
        let message = Message {
            from: 1,
            to: 2,
            term: 2,
            body: Body::InstallSnapshot { meta },
        };
        let snapshot = Snapshot {
            meta,
            members: members.to_vec(),
            store: Store::new(),
        };
        Input::PeerSnapshot { message, snapshot }
    }

    #[test]
    fn a_snapshot_ignored_in_a_batch_keeps_the_data_of_the_one_installed() {
        // Two InstallSnapshots in one batch, the newer first (the network reordered them):
        // the older is ignored, and must not take the place of the data installed.
        let hard_state = HardState {
            term: 2,
            voted_for: None,
        };
        let mut r: Replica<u32> = Replica::new(
            2,
            &[1, 2, 3],
            ReplicaConfig::default(),
            2,
            hard_state,
            None,
            Vec::new(),
        );
        r.feed(install(5, 2, &[1, 2, 3]));
        r.feed(install(3, 1, &[9]));
        let ready = r.ready();
        let installed = ready.installed.expect("the newer snapshot is installed");
        assert_eq!(installed.meta, SnapshotMeta { index: 5, term: 2 });
        assert_eq!(installed.members, [1, 2, 3]);
    }
}
