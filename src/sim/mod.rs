//! A deterministic cluster simulator: many replicas in one thread, virtual time, a
//! seeded network that delays, drops, duplicates and reorders, cut links, crashes that
//! lose everything not yet durable, and simulated clients whose history is checked for
//! linearizability.
//!
//! One seed determines everything (node timers, network fate of every message, client
//! choices, faults), so a failing run is replayed exactly from its seed. After every step
//! the safety properties of [`invariants`] are checked; on a violation the run stops with
//! an error naming the seed. Re-running that seed with `trace` on prints the last steps in
//! the `n1@3 → n2 Append …` vocabulary shared with the node's logs.
//!
//! Time: a step is the smallest unit; every [`STEPS_PER_TICK`] steps each live node
//! ticks. Message delays are in steps, so messages interleave within a tick.
//!
//! Each node runs the server's own turn code ([`crate::replica::turn`]; see [`node`]):
//! everything that reaches a node in one step (messages, client requests, the tick)
//! is one batch, as the server's state thread batches its inbox. The simulator only
//! plays the runtime: the disk, the network and the clients.
//!
//! Honest members never break a rule of the core's validation, so a run reports no
//! protocol violation, or fails. With [`SimConfig::hostile`] set, [`hostile`] throws
//! hand-made messages at the nodes instead, and the violations are counted
//! ([`Stats::violations`]).

mod chaos;
mod clients;
pub mod hostile;
pub mod invariants;
pub mod network;
pub mod node;
pub mod script;

use std::{
    cmp::Reverse,
    collections::{BTreeMap, BinaryHeap, VecDeque},
    hash::{Hash, Hasher},
};

use rand::{rngs::StdRng, Rng, SeedableRng};

pub use chaos::{
    chaos_config, hostile_config, run_hostile_seed, run_seed, RunSummary, CHAOS_TICKS, SETTLE_TICKS,
};
use clients::Clients;
use hostile::Hostile;
pub use hostile::{HostileConfig, HostileMode};
use invariants::Invariants;
pub use network::{Links, NetworkConfig};
use node::{CrashPoint, Requester, SimNode, TurnOutput};

use crate::{
    raft::{Body, Entry, Message, NodeId, Pos, Role, Rule, Term},
    replica::{ClientOp, Input, Outcome, Replica, ReplicaConfig, Snapshot},
};

/// Simulator steps per Raft tick.
pub const STEPS_PER_TICK: u64 = 10;

/// Random faults injected while the simulation runs (per tick probabilities).
#[derive(Clone, Debug, Default)]
pub struct FaultConfig {
    /// A random live node crashes.
    pub crash: f64,
    /// Each crashed node restarts.
    pub restart: f64,
    /// The network is re-partitioned at random (isolate one node, split in two, or cut
    /// one link one way).
    pub partition: f64,
    /// All cut links heal.
    pub heal: f64,
    /// A node's turn is planned to crash at a random [`CrashPoint`] inside it.
    pub crash_mid_turn: f64,
}

/// Everything a run depends on besides the seed.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    pub nodes: usize,
    pub network: NetworkConfig,
    pub replica: ReplicaConfig,
    pub faults: FaultConfig,
    /// Simulated clients, each with at most one operation outstanding.
    pub clients: usize,
    /// Keys the clients use (few keys, so operations contend).
    pub keys: usize,
    /// Per-tick probability that an idle client starts an operation.
    pub client_rate: f64,
    /// A client waits this many ticks for a reply before retrying elsewhere.
    pub client_timeout_ticks: u64,
    /// Keep the last this many trace lines (0: no tracing, fastest).
    pub trace: usize,
    /// Hand-made messages thrown at the nodes; `None` for an honest cluster.
    pub hostile: Option<HostileConfig>,
    /// The term every node starts in (as if it had been there before the run).
    pub start_term: Term,
}

impl SimConfig {
    /// A quiet cluster: reliable network, no faults, no clients.
    pub fn new(seed: u64, nodes: usize) -> SimConfig {
        SimConfig {
            seed,
            nodes,
            network: NetworkConfig::reliable(),
            replica: ReplicaConfig::default(),
            faults: FaultConfig::default(),
            clients: 0,
            keys: 3,
            client_rate: 0.3,
            // Shorter than the real client's 3 s (100 ticks): the simulated network
            // loses requests and replies, which TCP does not, so clients retry sooner.
            client_timeout_ticks: 40,
            trace: 0,
            hostile: None,
            start_term: 0,
        }
    }
}

/// Message and election counters, for the message-economy tests.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Messages sent, by kind.
    pub sent: BTreeMap<&'static str, u64>,
    /// Times a node became leader.
    pub elections_won: u64,
    /// Hostile messages thrown at the nodes.
    pub hostile: u64,
    /// Messages refused as protocol violations, by the rule they broke.
    pub violations: BTreeMap<Rule, u64>,
    /// Election timeouts at which a node did not campaign: its term was at the limit.
    pub campaigns_refused: u64,
}

impl Stats {
    pub fn total_sent(&self) -> u64 {
        self.sent.values().sum()
    }
}

/// A safety violation, with what is needed to reproduce it.
#[derive(Clone, Debug)]
pub struct SimFailure {
    pub seed: u64,
    pub step: u64,
    pub message: String,
}

impl std::fmt::Display for SimFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "seed {} failed at step {}: {}",
            self.seed, self.step, self.message
        )
    }
}

enum Event {
    Deliver(Message),
    Request {
        node: NodeId,
        token: Requester,
        op: ClientOp,
    },
    Reply {
        token: Requester,
        outcome: Outcome,
    },
    /// A node's background snapshot save completes (if that incarnation still runs).
    SnapshotSaved {
        node: NodeId,
        incarnation: u64,
        snapshot: Snapshot,
    },
    /// A leader's runtime reports the end of a snapshot transfer to `peer`.
    SnapshotSent {
        leader: NodeId,
        peer: NodeId,
    },
}

/// A queued event, ordered by time and then by creation so ties replay identically.
struct Scheduled {
    at: u64,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// The simulator. See the module documentation.
pub struct Sim {
    cfg: SimConfig,
    rng: StdRng,
    step: u64,
    seq: u64,
    ids: Vec<NodeId>,
    nodes: BTreeMap<NodeId, SimNode>,
    queue: BinaryHeap<Reverse<Scheduled>>,
    links: Links,
    invariants: Invariants,
    clients: Clients,
    /// The generator of hostile messages, if the run has them.
    hostile: Option<Hostile>,
    /// Replies to scripted requests ([`Sim::request`]), by request id.
    scripted: BTreeMap<u64, Option<Outcome>>,
    next_scripted: u64,
    faults_enabled: bool,
    stats: Stats,
    trace: VecDeque<String>,
    digest: invariants::FastHasher,
    failure: Option<SimFailure>,
}

impl Sim {
    pub fn new(cfg: SimConfig) -> Sim {
        assert!(
            (1..=7).contains(&cfg.nodes),
            "the simulator runs 1 to 7 nodes"
        );
        let ids: Vec<NodeId> = (1..=cfg.nodes as NodeId).collect();
        let mut sim = Sim {
            rng: StdRng::seed_from_u64(cfg.seed),
            step: 0,
            seq: 0,
            nodes: BTreeMap::new(),
            queue: BinaryHeap::new(),
            links: Links::default(),
            invariants: match cfg.hostile.map(|h| h.mode) {
                Some(HostileMode::Forged) => Invariants::local_only(),
                _ => Invariants::default(),
            },
            hostile: cfg.hostile.map(|h| Hostile::new(h, cfg.seed, &ids)),
            clients: Clients::new(
                cfg.clients,
                cfg.keys,
                &ids,
                cfg.client_timeout_ticks * STEPS_PER_TICK,
            ),
            scripted: BTreeMap::new(),
            next_scripted: 1,
            faults_enabled: true,
            stats: Stats::default(),
            trace: VecDeque::new(),
            digest: invariants::FastHasher::default(),
            failure: None,
            ids,
            cfg,
        };
        for id in sim.ids.clone() {
            let mut node = SimNode::new(id);
            node.disk.hard_state.term = sim.cfg.start_term;
            sim.nodes.insert(id, node);
            sim.start(id);
        }
        sim
    }

    // ----- inspection ----------------------------------------------------------------

    pub fn seed(&self) -> u64 {
        self.cfg.seed
    }
    pub fn ids(&self) -> &[NodeId] {
        &self.ids
    }
    pub fn now_ticks(&self) -> u64 {
        self.step / STEPS_PER_TICK
    }
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
    pub fn links(&mut self) -> &mut Links {
        &mut self.links
    }
    pub fn is_up(&self, id: NodeId) -> bool {
        self.nodes[&id].is_up()
    }
    pub fn replica(&self, id: NodeId) -> Option<&Replica<Requester>> {
        self.nodes[&id].replica.as_ref()
    }
    /// Entries `id` has made durable.
    pub fn durable_log(&self, id: NodeId) -> &[Entry] {
        self.nodes[&id].disk.log()
    }
    /// Entries known committed (applied by at least one node).
    pub fn committed(&self) -> u64 {
        self.invariants.committed()
    }
    /// The clients' operations that may have taken effect, for [`crate::check::check`].
    pub fn history(&self) -> &[crate::check::Operation] {
        self.clients.history()
    }
    /// The first safety violation, if any.
    pub fn failure(&self) -> Option<&SimFailure> {
        self.failure.as_ref()
    }
    /// The last trace lines (only with `trace > 0`).
    pub fn trace(&self) -> Vec<String> {
        self.trace.iter().cloned().collect()
    }
    /// A digest of every event so far: equal digests mean identical runs.
    pub fn digest(&self) -> u64 {
        self.digest.finish()
    }

    /// Live leaders, as (id, term), sorted by id.
    pub fn leaders(&self) -> Vec<(NodeId, Term)> {
        self.nodes
            .iter()
            .filter_map(|(&id, n)| n.replica.as_ref().map(|r| (id, r)))
            .filter(|(_, r)| r.role() == Role::Leader)
            .map(|(id, r)| (id, r.node().term()))
            .collect()
    }

    /// The live leader of the highest term, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.leaders()
            .into_iter()
            .max_by_key(|&(_, t)| t)
            .map(|(id, _)| id)
    }

    // ----- control -------------------------------------------------------------------

    /// Turns the random faults of the config on or off (scenarios script their own).
    pub fn set_faults(&mut self, enabled: bool) {
        self.faults_enabled = enabled;
    }

    /// Lets idle clients start operations or not.
    pub fn set_clients_active(&mut self, active: bool) {
        self.clients.set_active(active);
    }

    pub fn crash(&mut self, id: NodeId) {
        self.crash_at(id, None);
    }

    /// Crashes `id`; `point` says where in a turn it happened, if it did.
    fn crash_at(&mut self, id: NodeId, point: Option<CrashPoint>) {
        let node = self.nodes.get_mut(&id).expect("known node");
        let rng = &mut self.rng;
        match node.crash(|written| rng.gen_range(0..=written), &mut self.invariants) {
            Err(e) => self.fail(e),
            Ok(None) => {}
            Ok(Some((kept, written))) => {
                let line = match point {
                    None => format!("n{id} crashes"),
                    Some(p) => format!(
                        "n{id} crashes mid-turn ({p:?}; {kept} of {written} unsynced writes survive)"
                    ),
                };
                self.note(line);
                self.check(|s| s.check_durability());
            }
        }
    }

    pub fn restart(&mut self, id: NodeId) {
        if !self.is_up(id) {
            self.start(id);
            self.note(format!("n{id} restarts"));
        }
    }

    fn start(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("known node");
        node.start(&self.ids, &self.cfg.replica, self.cfg.seed);
    }

    /// Sends a client request straight to `node` (bypassing the simulated clients);
    /// its outcome appears in [`Sim::outcome`].
    pub fn request(&mut self, node: NodeId, op: ClientOp) -> u64 {
        let id = self.next_scripted;
        self.next_scripted += 1;
        self.scripted.insert(id, None);
        self.schedule(
            1,
            Event::Request {
                node,
                token: Requester::Script(id),
                op,
            },
        );
        id
    }

    pub fn outcome(&self, request: u64) -> Option<&Outcome> {
        self.scripted.get(&request).and_then(Option::as_ref)
    }

    /// Runs `ticks` ticks. Returns false if a safety violation stopped the run.
    pub fn run_ticks(&mut self, ticks: u64) -> bool {
        let end = self.step + ticks * STEPS_PER_TICK;
        while self.step < end && self.failure.is_none() {
            self.advance();
        }
        self.failure.is_none()
    }

    /// Runs until `done` holds (checked every tick) or `max_ticks` pass. Returns whether
    /// `done` held.
    pub fn run_until(&mut self, max_ticks: u64, mut done: impl FnMut(&Sim) -> bool) -> bool {
        for _ in 0..max_ticks {
            if done(self) {
                return true;
            }
            if !self.run_ticks(1) {
                return false;
            }
        }
        done(self)
    }

    /// Stops injecting faults, heals the network, restarts every node, lets clients
    /// finish, and checks that the cluster recovers: one leader, every node caught up,
    /// every client operation concluded. Then checks durability once more.
    pub fn settle(&mut self, max_ticks: u64) -> Result<(), String> {
        self.faults_enabled = false;
        self.clients.set_active(false);
        self.links.heal();
        for id in self.ids.clone() {
            self.restart(id);
        }
        let converged = self.run_until(max_ticks, |s| {
            let Some(leader) = s.leader() else {
                return false;
            };
            let lr = s.replica(leader).expect("leader is up");
            let target = lr.node().last_index();
            lr.node().commit_index() == target
                && s.leaders().len() == 1
                && s.clients.idle()
                && s.ids.iter().all(|&id| {
                    s.replica(id)
                        .is_some_and(|r| r.node().applied_index() == target)
                })
        });
        if let Some(f) = &self.failure {
            return Err(f.to_string());
        }
        if !converged {
            let states: Vec<String> = self
                .ids
                .iter()
                .map(|&id| match self.replica(id) {
                    Some(r) => format!(
                        "n{id}: {} term {} last {} commit {} applied {}",
                        r.role().as_str(),
                        r.node().term(),
                        r.node().last_index(),
                        r.node().commit_index(),
                        r.node().applied_index()
                    ),
                    None => format!("n{id}: down"),
                })
                .collect();
            return Err(format!(
                "seed {}: cluster did not converge within {max_ticks} ticks after healing: {}; \
                 clients idle: {}",
                self.cfg.seed,
                states.join("; "),
                self.clients.idle()
            ));
        }
        self.clients.finish();
        self.check_durability()
    }

    // ----- the step loop -------------------------------------------------------------

    fn advance(&mut self) {
        self.step += 1;
        let mut batches: BTreeMap<NodeId, Vec<Input<Requester>>> = BTreeMap::new();
        while self
            .queue
            .peek()
            .is_some_and(|Reverse(s)| s.at <= self.step)
        {
            let Reverse(s) = self.queue.pop().expect("peeked");
            if let Some((node, input)) = self.arrive(s.event) {
                batches.entry(node).or_default().push(input);
            }
            if self.failure.is_some() {
                return;
            }
        }
        let tick = self.step.is_multiple_of(STEPS_PER_TICK);
        if tick {
            if self.faults_enabled {
                self.inject_faults();
            }
            self.throw_hostile(&mut batches);
            if self.failure.is_some() {
                return;
            }
            for &id in &self.ids {
                if self.nodes[&id].is_up() {
                    batches.entry(id).or_default().push(Input::Tick);
                }
            }
        }
        for (id, batch) in batches {
            self.run_turn(id, batch);
            if self.failure.is_some() {
                return;
            }
        }
        if tick {
            self.tick_clients();
        }
    }

    fn tick_clients(&mut self) {
        let requests = self
            .clients
            .tick(self.step, self.cfg.client_rate, &mut self.rng);
        for (node, op, client) in requests {
            let token = self.clients.token(client);
            self.send_request(node, token, op);
        }
        if self.now_ticks().is_multiple_of(100) {
            self.check(|s| s.check_durability());
        }
    }

    fn inject_faults(&mut self) {
        let f = self.cfg.faults.clone();
        if f.crash > 0.0 && self.rng.gen_bool(f.crash) {
            let up: Vec<NodeId> = self
                .ids
                .iter()
                .copied()
                .filter(|&i| self.is_up(i))
                .collect();
            if !up.is_empty() {
                let victim = up[self.rng.gen_range(0..up.len())];
                self.crash(victim);
            }
        }
        if f.restart > 0.0 {
            for id in self.ids.clone() {
                if !self.is_up(id) && self.rng.gen_bool(f.restart) {
                    self.restart(id);
                }
            }
        }
        if f.partition > 0.0 && self.rng.gen_bool(f.partition) {
            let n = self.ids.len();
            match self.rng.gen_range(0..3) {
                0 => {
                    let victim = self.ids[self.rng.gen_range(0..n)];
                    self.links.heal();
                    let ids = self.ids.clone();
                    self.links.isolate(victim, &ids);
                }
                1 => {
                    let mut a = Vec::new();
                    let mut b = Vec::new();
                    for &id in &self.ids {
                        if self.rng.gen_bool(0.5) {
                            a.push(id)
                        } else {
                            b.push(id)
                        }
                    }
                    self.links.partition(&[a, b]);
                }
                _ => {
                    let from = self.ids[self.rng.gen_range(0..n)];
                    let to = self.ids[self.rng.gen_range(0..n)];
                    if from != to {
                        self.links.cut_one_way(from, to);
                    }
                }
            }
            let desc = self.links.describe();
            self.note(format!("network: cut {desc}"));
        }
        if f.heal > 0.0 && !self.links.is_healed() && self.rng.gen_bool(f.heal) {
            self.links.heal();
            self.note("network: healed".into());
        }
    }

    /// Throws each live node a hostile message, at the rate of the config, first in its
    /// batch so that it meets the state it was made for. In the malformed mode, a
    /// message the node would accept is a bug of the generator or of the validation.
    fn throw_hostile(&mut self, batches: &mut BTreeMap<NodeId, Vec<Input<Requester>>>) {
        let Some(hostile) = self.hostile.as_mut() else {
            return;
        };
        let mut thrown = Vec::new();
        for (&id, node) in &self.nodes {
            let Some(replica) = node.replica.as_ref().filter(|_| hostile.strikes()) else {
                continue;
            };
            let (message, snapshot) = hostile.message(replica.node());
            let accepted = replica.node().validate(&message).is_ok();
            thrown.push((id, message, snapshot, accepted));
        }
        let malformed_only =
            self.hostile.as_ref().map(Hostile::mode) == Some(HostileMode::Malformed);
        for (id, message, snapshot, accepted) in thrown {
            if malformed_only && accepted {
                return self.fail(format!(
                    "the hostile generator made a message n{id} accepts, in the malformed \
                     mode: {message}"
                ));
            }
            self.stats.hostile += 1;
            self.note(format!("hostile → n{id}: {message}"));
            let input = match snapshot {
                Some(snapshot) => Input::PeerSnapshot { message, snapshot },
                None => Input::Peer(message),
            };
            batches.entry(id).or_default().insert(0, input);
        }
    }

    /// An event reaches its destination: a message or request becomes an input of its
    /// node's next turn (if the node is up and the link is not cut); a reply reaches
    /// its client.
    fn arrive(&mut self, event: Event) -> Option<(NodeId, Input<Requester>)> {
        match event {
            Event::Deliver(m) => {
                let (from, to) = (m.from, m.to);
                if self.links.is_cut(from, to) || !self.is_up(to) {
                    self.snapshot_transfer_ended(&m);
                    return None;
                }
                self.digest_event(&(1u8, from, to, m.term, self.step));
                if self.cfg.trace > 0 {
                    self.note(format!("{m}"));
                }
                let Body::InstallSnapshot { meta } = m.body else {
                    return Some((to, Input::Peer(m)));
                };
                // The snapshot's data comes from the sender's disk, as a replicator
                // streams it; a sender that crashed, or has a newer snapshot by now,
                // sends nothing.
                self.snapshot_transfer_ended(&m);
                let sender = &self.nodes[&from];
                let snapshot = sender
                    .disk
                    .snapshot
                    .clone()
                    .filter(|s| sender.is_up() && s.meta == meta)?;
                Some((
                    to,
                    Input::PeerSnapshot {
                        message: m,
                        snapshot,
                    },
                ))
            }
            Event::SnapshotSaved {
                node,
                incarnation,
                snapshot,
            } => {
                let n = self.nodes.get_mut(&node).expect("known node");
                if !n.is_up() || n.restarts != incarnation {
                    return None; // the process that was writing it is gone
                }
                let meta = snapshot.meta;
                if let Err(e) = n.saved(snapshot, &mut self.invariants) {
                    self.fail(e);
                }
                self.note(format!(
                    "n{node} saved snapshot {}",
                    Pos(meta.index, meta.term)
                ));
                Some((node, Input::SnapshotSaved(meta)))
            }
            Event::SnapshotSent { leader, peer } => self
                .is_up(leader)
                .then_some((leader, Input::SnapshotSent(peer))),
            Event::Request { node, token, op } => {
                // A request to a node that is down is lost; the client will time out.
                self.is_up(node)
                    .then_some((node, Input::Request(op, token)))
            }
            Event::Reply { token, outcome } => {
                let kind = match &outcome {
                    Outcome::Value(v) => v.as_ref().map_or(1, String::len),
                    Outcome::Written => 2,
                    Outcome::Registered(n) => 3 + *n as usize,
                    Outcome::Failed { code, .. } => 10 + *code as usize,
                };
                self.digest_event(&(2u8, token, kind, self.step));
                match token {
                    Requester::Script(id) => {
                        self.scripted.insert(id, Some(outcome));
                    }
                    Requester::Client { .. } => {
                        let step = self.step;
                        let result = self.clients.on_reply(token, outcome, step);
                        // Forged entries may answer clients anything: what the clients
                        // are promised is a cluster-wide guarantee.
                        if let Err(e) = result {
                            if !self.invariants.is_local_only() {
                                self.fail(e);
                            }
                        }
                    }
                }
                None
            }
        }
    }

    /// One turn of node `id` (the server's turn code), maybe with a planned crash in
    /// it; then its messages and replies go out on the network.
    fn run_turn(&mut self, id: NodeId, batch: Vec<Input<Requester>>) {
        let f = self.cfg.faults.crash_mid_turn;
        let crash_at = (self.faults_enabled && f > 0.0 && self.rng.gen_bool(f))
            .then(|| CrashPoint::random(&mut self.rng));
        let node = self.nodes.get_mut(&id).expect("known node");
        let incarnation = node.restarts;
        let TurnOutput {
            messages,
            replies,
            crashed,
            elected,
            save,
            violation,
            refused,
            campaign_refused,
        } = node.turn(batch, crash_at, &mut self.invariants);
        self.stats.campaigns_refused += u64::from(campaign_refused);
        for v in refused {
            if self.hostile.is_none() {
                return self.fail(format!(
                    "n{id} refused a message of an honest cluster: from n{}: {v}",
                    v.from
                ));
            }
            *self.stats.violations.entry(v.rule).or_default() += 1;
        }
        if let Some(snapshot) = save {
            // Writing a snapshot takes a while on a background thread.
            let d = self.rng.gen_range(1..=3) * STEPS_PER_TICK;
            self.schedule(
                d,
                Event::SnapshotSaved {
                    node: id,
                    incarnation,
                    snapshot,
                },
            );
        }
        if let Some(term) = elected {
            self.stats.elections_won += 1;
            self.note(format!("n{id}@{term} becomes leader"));
        }
        if let Some(e) = violation {
            return self.fail(e);
        }
        for m in messages {
            self.send_message(m);
        }
        for (token, outcome) in replies {
            let delays = self.cfg.network.delays(&mut self.rng);
            if let Some(&d) = delays.first() {
                self.schedule(d, Event::Reply { token, outcome });
            }
        }
        if crashed.is_some() {
            self.crash_at(id, crashed);
        }
    }

    fn send_message(&mut self, m: Message) {
        let kind = match &m.body {
            Body::PreVote { .. } => "PreVote",
            Body::PreVoteResponse { .. } => "PreVoteResponse",
            Body::Vote { .. } => "Vote",
            Body::VoteResponse { .. } => "VoteResponse",
            Body::Append { entries, .. } if entries.is_empty() => "Heartbeat",
            Body::Append { .. } => "Append",
            Body::AppendResponse { .. } => "AppendResponse",
            Body::InstallSnapshot { .. } => "InstallSnapshot",
        };
        *self.stats.sent.entry(kind).or_default() += 1;
        let delays = self.cfg.network.delays(&mut self.rng);
        if delays.is_empty() {
            self.snapshot_transfer_ended(&m);
        }
        for d in delays {
            self.schedule(d, Event::Deliver(m.clone()));
        }
    }

    /// A snapshot transfer is over (delivered, or lost on the way): the sender's
    /// runtime tells its replica, as a real replicator does.
    fn snapshot_transfer_ended(&mut self, m: &Message) {
        if matches!(m.body, Body::InstallSnapshot { .. }) {
            let d = self.cfg.network.min_delay.max(1);
            let (leader, peer) = (m.from, m.to);
            self.schedule(d, Event::SnapshotSent { leader, peer });
        }
    }

    fn send_request(&mut self, node: NodeId, token: Requester, op: ClientOp) {
        let delays = self.cfg.network.delays(&mut self.rng);
        if let Some(&d) = delays.first() {
            self.schedule(d, Event::Request { node, token, op });
        }
    }

    fn schedule(&mut self, delay: u64, event: Event) {
        self.seq += 1;
        let s = Scheduled {
            at: self.step + delay.max(1),
            seq: self.seq,
            event,
        };
        self.queue.push(Reverse(s));
    }

    // ----- checking and tracing ------------------------------------------------------

    fn check_durability(&self) -> Result<(), String> {
        let logs: Vec<_> = self
            .nodes
            .iter()
            .map(|(&id, n)| n.disk.durable(id))
            .collect();
        self.invariants.check_durability(&logs)
    }

    fn check(&mut self, f: impl FnOnce(&Sim) -> Result<(), String>) {
        if let Err(e) = f(self) {
            self.fail(e);
        }
    }

    fn fail(&mut self, message: String) {
        if self.failure.is_none() {
            self.note(format!("VIOLATION: {message}"));
            self.failure = Some(SimFailure {
                seed: self.cfg.seed,
                step: self.step,
                message,
            });
        }
    }

    fn note(&mut self, line: String) {
        self.digest_event(&line);
        if self.cfg.trace > 0 {
            if self.trace.len() == self.cfg.trace {
                self.trace.pop_front();
            }
            self.trace
                .push_back(format!("t={:>6}.{} {line}", self.step / 10, self.step % 10));
        }
    }

    fn digest_event<H: Hash>(&mut self, e: &H) {
        e.hash(&mut self.digest);
    }
}
