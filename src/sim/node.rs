//! One simulated node: its replica while it runs, and a disk that survives crashes.
//!
//! The node runs the server's own turn ([`crate::replica::turn::run`]); only the
//! runtime around it is simulated. Its [`Disk`] keeps what was synced. What was written
//! but not yet synced when the node crashes survives as a random prefix, as after a
//! power cut: the WAL's checksums cut a torn tail back to whole records, and the
//! hard-state file is either old or new. A crash can be planned to land inside a turn
//! ([`CrashPoint`]), so the simulator crashes a node exactly where a real one can:
//! after writing but before the fsync, after the fsync but before anything was sent,
//! and between two messages of one batch, including a leader's messages sent before its
//! own fsync.

use std::hash::{DefaultHasher, Hash, Hasher};

use rand::{rngs::StdRng, Rng};

use super::invariants::Invariants;
use crate::{
    raft::{Entry, HardState, Message, NodeId, Role, Term},
    replica::{
        turn::{self, Durable, Halt, Observer, Replies, Transport},
        Input, Outcome, Replica, ReplicaConfig, ReplicaReady,
    },
};

/// Whom a reply is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Requester {
    /// Attempt number `attempt` of simulated client `client`; attempt numbers are never
    /// reused across operations, so a late reply cannot be mistaken for a newer one's.
    Client { client: usize, attempt: u64 },
    /// A request injected by a test through [`super::Sim::request`]
    /// or a golden script.
    Script(u64),
}

/// Where a planned crash lands in a turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashPoint {
    /// Everything of the turn was written, nothing synced.
    BeforeSync,
    /// The sync completed; no message that waited for it has left.
    AfterSync,
    /// The turn's `n`th message (counting from 0, early ones included) never leaves;
    /// those before it did.
    BeforeMessage(usize),
}

impl CrashPoint {
    /// A crash point drawn at random.
    pub fn random(rng: &mut StdRng) -> CrashPoint {
        match rng.gen_range(0..4) {
            0 => CrashPoint::BeforeSync,
            1 => CrashPoint::AfterSync,
            _ => CrashPoint::BeforeMessage(rng.gen_range(0..4)),
        }
    }
}

/// One write to the disk, as the turn issued it.
#[derive(Clone, Debug)]
enum Write {
    HardState(HardState),
    Entries(Vec<Entry>),
}

/// What a node has on stable storage.
#[derive(Clone, Debug, Default)]
pub struct Disk {
    pub hard_state: HardState,
    pub log: Vec<Entry>,
    /// Written since the last sync, oldest first.
    unsynced: Vec<Write>,
}

impl Disk {
    /// Makes `write` part of the stable state; checks Log Matching for new entries.
    fn land(&mut self, node: NodeId, write: Write, inv: &mut Invariants) -> Result<(), String> {
        match write {
            Write::HardState(hs) => self.hard_state = hs,
            Write::Entries(entries) => {
                let Some(first) = entries.first() else {
                    return Ok(());
                };
                self.log.truncate(first.index as usize - 1);
                self.log.extend(entries.iter().cloned());
                inv.on_persist(node, &entries, &self.log)?;
            }
        }
        Ok(())
    }
}

/// One node of a simulated cluster.
pub struct SimNode {
    pub id: NodeId,
    /// The running replica; `None` while crashed.
    pub replica: Option<Replica<Requester>>,
    pub disk: Disk,
    /// Starts so far; mixed into the seed of each incarnation's election timer.
    restarts: u64,
    /// The term in which it was last seen leading, to check each new leadership once.
    led_term: Option<Term>,
}

/// What one turn produced for the world outside the node.
#[derive(Debug, Default)]
pub struct TurnOutput {
    /// Messages that left, in order.
    pub messages: Vec<Message>,
    pub replies: Vec<(Requester, Outcome)>,
    /// The node crashed partway (a planned [`CrashPoint`] was reached).
    pub crashed: Option<CrashPoint>,
    /// Terms this node won during the turn.
    pub elected: Option<Term>,
    /// A safety invariant broke.
    pub violation: Option<String>,
}

impl SimNode {
    pub fn new(id: NodeId) -> SimNode {
        SimNode {
            id,
            replica: None,
            disk: Disk::default(),
            restarts: 0,
            led_term: None,
        }
    }

    pub fn is_up(&self) -> bool {
        self.replica.is_some()
    }

    /// Starts a new incarnation from what is on disk.
    pub fn start(&mut self, members: &[NodeId], config: &ReplicaConfig, seed: u64) {
        self.restarts += 1;
        let mut h = DefaultHasher::new();
        (seed, self.id, self.restarts).hash(&mut h);
        self.replica = Some(Replica::new(
            self.id,
            members,
            config.clone(),
            h.finish(),
            self.disk.hard_state,
            self.disk.log.clone(),
        ));
        self.led_term = None;
    }

    /// Crashes the node: the replica is gone, and of the writes not yet synced the
    /// first `keep(written)` survive. Returns `None` if it was already down, else how
    /// many unsynced writes survived of how many.
    pub fn crash(
        &mut self,
        keep: impl FnOnce(usize) -> usize,
        inv: &mut Invariants,
    ) -> Result<Option<(usize, usize)>, String> {
        if self.replica.take().is_none() {
            return Ok(None);
        }
        let unsynced = std::mem::take(&mut self.disk.unsynced);
        let written = unsynced.len();
        let kept = keep(written).min(written);
        for write in unsynced.into_iter().take(kept) {
            self.disk.land(self.id, write, inv)?;
        }
        Ok(Some((kept, written)))
    }

    /// Runs one turn of the server's turn code on `batch`. With `crash_at`, the node
    /// crashes when the turn reaches that point (the caller then calls
    /// [`crash`](Self::crash)).
    pub fn turn(
        &mut self,
        batch: Vec<Input<Requester>>,
        crash_at: Option<CrashPoint>,
        inv: &mut Invariants,
    ) -> TurnOutput {
        let Some(replica) = self.replica.as_mut() else {
            return TurnOutput::default();
        };
        let mut io = TurnIo {
            id: self.id,
            disk: &mut self.disk,
            invariants: inv,
            led_term: &mut self.led_term,
            crash_at,
            out: TurnOutput::default(),
        };
        let mut cell = replica;
        if turn::run(&mut cell, batch, &mut io) == Err(Halt) {
            io.out.crashed = crash_at;
        }
        io.out
    }
}

/// The simulated runtime of one turn.
struct TurnIo<'a> {
    id: NodeId,
    disk: &'a mut Disk,
    invariants: &'a mut Invariants,
    led_term: &'a mut Option<Term>,
    crash_at: Option<CrashPoint>,
    out: TurnOutput,
}

impl TurnIo<'_> {
    fn fail(&mut self, violation: String) {
        self.out.violation.get_or_insert(violation);
    }
}

impl Durable for TurnIo<'_> {
    fn save_hard_state(&mut self, hard_state: HardState) -> Result<(), Halt> {
        self.disk.unsynced.push(Write::HardState(hard_state));
        Ok(())
    }

    fn append(&mut self, entries: &[Entry]) -> Result<(), Halt> {
        self.disk.unsynced.push(Write::Entries(entries.to_vec()));
        Ok(())
    }

    fn sync(&mut self) -> Result<(), Halt> {
        if self.crash_at == Some(CrashPoint::BeforeSync) {
            return Err(Halt);
        }
        for write in std::mem::take(&mut self.disk.unsynced) {
            if let Err(e) = self.disk.land(self.id, write, self.invariants) {
                self.fail(e);
            }
        }
        if self.crash_at == Some(CrashPoint::AfterSync) {
            return Err(Halt);
        }
        Ok(())
    }
}

impl Transport for TurnIo<'_> {
    fn send(&mut self, message: Message) -> Result<(), Halt> {
        if self.crash_at == Some(CrashPoint::BeforeMessage(self.out.messages.len())) {
            return Err(Halt);
        }
        self.out.messages.push(message);
        Ok(())
    }
}

impl Replies<Requester> for TurnIo<'_> {
    fn reply(&mut self, to: Requester, outcome: Outcome) {
        self.out.replies.push((to, outcome));
    }
}

impl Observer<Requester> for TurnIo<'_> {
    /// State Machine Safety for what was applied; Election Safety and Leader
    /// Completeness once per new leadership.
    fn observe(&mut self, replica: &Replica<Requester>, ready: &ReplicaReady<Requester>) {
        for entry in &ready.applied {
            if let Err(e) = self.invariants.on_apply(self.id, entry) {
                self.fail(e);
            }
        }
        let node = replica.node();
        if node.role() == Role::Leader && *self.led_term != Some(node.term()) {
            *self.led_term = Some(node.term());
            self.out.elected = Some(node.term());
            if let Err(e) = self.invariants.on_leader(self.id, node.term(), node.log()) {
                self.fail(e);
            }
        }
    }
}
