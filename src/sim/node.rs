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
//!
//! Each node also checks its own guarantees, which hold whatever its peers send (even
//! forged messages from members' ids, see [`super::hostile`]): its term never passes
//! [`MAX_TERM`], and an entry at or below its commit index is never truncated or
//! replaced ([`CommitMark`]).

use std::hash::{DefaultHasher, Hash, Hasher};

use rand::{rngs::StdRng, Rng};

use super::invariants::{payload_hash, DurableLog, Invariants};
use crate::{
    raft::{
        Entry, HardState, Index, Log, Message, NodeId, Role, SnapshotMeta, Term, Violation,
        MAX_TERM,
    },
    replica::{
        turn::{self, Durable, Halt, Observer, Replies, Transport},
        Input, Outcome, Replica, ReplicaConfig, ReplicaReady, Snapshot,
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
    /// A snapshot from the leader replaces the log (atomically: all or nothing).
    Install(Snapshot),
}

/// What a node has on stable storage.
#[derive(Clone, Debug, Default)]
pub struct Disk {
    pub hard_state: HardState,
    /// The newest durable snapshot.
    pub snapshot: Option<Snapshot>,
    /// The position before `log[0]`: what was compacted away (or installed).
    base: SnapshotMeta,
    /// Log entries after `base`, consecutive.
    log: Vec<Entry>,
    /// Written since the last sync, oldest first.
    unsynced: Vec<Write>,
}

impl Disk {
    /// The log entries on disk (those after the last compaction).
    pub fn log(&self) -> &[Entry] {
        &self.log
    }

    /// Index of the last entry on disk, or of the snapshot if the log is empty.
    pub fn last_index(&self) -> Index {
        self.base.index + self.log.len() as Index
    }

    /// Term at `index`, for the base and the entries held.
    pub fn term(&self, index: Index) -> Option<Term> {
        if index == self.base.index {
            return Some(self.base.term);
        }
        let i = index.checked_sub(self.base.index + 1)?;
        self.log.get(i as usize).map(|e| e.term)
    }

    /// What the durability invariant looks at.
    pub fn durable(&self, node: NodeId) -> DurableLog<'_> {
        DurableLog {
            node,
            snapshot: self.snapshot.as_ref().map_or(0, |s| s.meta.index),
            entries: &self.log,
        }
    }

    /// Makes `write` part of the stable state; checks Log Matching for new entries and
    /// that snapshots at one index agree.
    fn land(&mut self, node: NodeId, write: Write, inv: &mut Invariants) -> Result<(), String> {
        match write {
            Write::HardState(hs) => self.hard_state = hs,
            Write::Entries(entries) => {
                let Some(first) = entries.first() else {
                    return Ok(());
                };
                let prev_term = self.term(first.index - 1).ok_or_else(|| {
                    format!(
                        "n{node} stored entry {} after a gap (disk log ends at {})",
                        first.index,
                        self.last_index()
                    )
                })?;
                self.log
                    .truncate((first.index - self.base.index - 1) as usize);
                self.log.extend(entries.iter().cloned());
                inv.on_persist(node, &entries, prev_term)?;
            }
            Write::Install(snapshot) => {
                inv.on_snapshot(node, &snapshot)?;
                self.base = snapshot.meta;
                self.log.clear();
                self.snapshot = Some(snapshot);
            }
        }
        Ok(())
    }

    /// A snapshot saved in the background became durable.
    fn save(
        &mut self,
        node: NodeId,
        snapshot: Snapshot,
        inv: &mut Invariants,
    ) -> Result<(), String> {
        inv.on_snapshot(node, &snapshot)?;
        if self
            .snapshot
            .as_ref()
            .is_none_or(|s| s.meta.index < snapshot.meta.index)
        {
            self.snapshot = Some(snapshot);
        }
        Ok(())
    }

    /// Drops the entries up to `upto`, which the durable snapshot must cover.
    fn compact(&mut self, node: NodeId, upto: Index) -> Result<(), String> {
        let covered = self.snapshot.as_ref().map_or(0, |s| s.meta.index);
        if upto > covered {
            return Err(format!(
                "n{node} compacted its log to {upto}, past its durable snapshot at {covered}"
            ));
        }
        if upto <= self.base.index {
            return Ok(());
        }
        let term = self
            .term(upto)
            .ok_or_else(|| format!("n{node} compacted to {upto}, past its log's end"))?;
        self.log.drain(..(upto - self.base.index) as usize);
        self.base = SnapshotMeta { index: upto, term };
        Ok(())
    }
}

/// One node of a simulated cluster.
pub struct SimNode {
    pub id: NodeId,
    /// The running replica; `None` while crashed.
    pub replica: Option<Replica<Requester>>,
    pub disk: Disk,
    /// Starts so far; mixed into the seed of each incarnation's election timer, and
    /// names the incarnation a background snapshot save belongs to.
    pub restarts: u64,
    /// The term in which it was last seen leading, to check each new leadership once.
    led_term: Option<Term>,
    /// The entry at its commit index when last observed, in this incarnation.
    commit_mark: Option<CommitMark>,
}

/// The entry at a node's commit index, as last observed. Committed entries never change
/// (§5.4), so while the node runs the entry must stay as it was, and nothing written
/// later may replace an entry at or before it. Only compaction behind a snapshot (the
/// node's own, or one installed from its leader, which covers it) removes it. A restart
/// starts over: the commit index is not durable.
#[derive(Clone, Copy, Debug)]
struct CommitMark {
    index: Index,
    term: Term,
    /// Hash of its payload (none for the log's base, whose term alone is known).
    payload: Option<u64>,
}

impl CommitMark {
    /// The mark of the entry at `index` of `log`.
    fn at(log: &Log, index: Index) -> CommitMark {
        CommitMark {
            index,
            term: log.term(index).unwrap_or_default(),
            payload: log.get(index).map(|e| payload_hash(&e.payload)),
        }
    }

    /// Whether the node whose log is now `log`, and whose turn handed out `written` to
    /// persist, kept everything up to this mark.
    fn check(&self, id: NodeId, log: &Log, written: &[Entry]) -> Result<(), String> {
        if let Some(first) = written.first().filter(|e| e.index <= self.index) {
            return Err(format!(
                "n{id} rewrote {}@{}, at or below its commit index {}",
                first.index, first.term, self.index
            ));
        }
        if self.index < log.base().index {
            return Ok(()); // compacted behind a snapshot that covers it
        }
        let now = CommitMark::at(log, self.index);
        // The base keeps only its term: then the term is all there is to compare.
        let payload_kept = match (self.payload, now.payload) {
            (Some(before), Some(after)) => before == after,
            _ => true,
        };
        if now.term != self.term || !payload_kept {
            return Err(format!(
                "n{id} changed its committed entry {}@{} (now {}@{})",
                self.index, self.term, self.index, now.term
            ));
        }
        Ok(())
    }
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
    /// A snapshot to save in the background (the caller decides when it is durable).
    pub save: Option<Snapshot>,
    /// A safety invariant broke.
    pub violation: Option<String>,
    /// Messages the node refused as protocol violations.
    pub refused: Vec<Violation>,
    /// The node did not campaign: its term is at the limit.
    pub campaign_refused: bool,
}

impl SimNode {
    pub fn new(id: NodeId) -> SimNode {
        SimNode {
            id,
            replica: None,
            disk: Disk::default(),
            restarts: 0,
            led_term: None,
            commit_mark: None,
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
            self.disk.snapshot.clone(),
            self.disk.log.clone(),
        ));
        self.led_term = None;
        self.commit_mark = None;
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

    /// A background save of `snapshot` completed: it is durable now. The replica hears
    /// of it through [`Input::SnapshotSaved`] in its next turn.
    pub fn saved(&mut self, snapshot: Snapshot, inv: &mut Invariants) -> Result<(), String> {
        self.disk.save(self.id, snapshot, inv)
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
            commit_mark: &mut self.commit_mark,
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
    commit_mark: &'a mut Option<CommitMark>,
    crash_at: Option<CrashPoint>,
    out: TurnOutput,
}

impl TurnIo<'_> {
    fn fail(&mut self, violation: String) {
        self.out.violation.get_or_insert(violation);
    }

    /// What holds for this node whatever its peers send: no term beyond the limit, and
    /// committed entries kept.
    fn check_own_guarantees(
        &mut self,
        replica: &Replica<Requester>,
        ready: &ReplicaReady<Requester>,
    ) -> Result<(), String> {
        let term = replica.node().term();
        if term > MAX_TERM {
            return Err(format!("n{} is at term {term}, beyond {MAX_TERM}", self.id));
        }
        let node = replica.node();
        if let Some(mark) = self.commit_mark {
            mark.check(self.id, node.log(), &ready.entries)?;
        }
        *self.commit_mark = Some(CommitMark::at(node.log(), node.commit_index()));
        Ok(())
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

    fn install_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), Halt> {
        self.disk.unsynced.push(Write::Install(snapshot.clone()));
        Ok(())
    }

    fn compact_log(&mut self, upto: Index) -> Result<(), Halt> {
        if let Err(e) = self.disk.compact(self.id, upto) {
            self.fail(e);
        }
        Ok(())
    }

    fn save_snapshot(&mut self, snapshot: Snapshot) {
        self.out.save = Some(snapshot);
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
    /// Completeness once per new leadership; and the node's own guarantees.
    fn observe(&mut self, replica: &Replica<Requester>, ready: &ReplicaReady<Requester>) {
        self.out.refused.extend(ready.violations.iter().cloned());
        self.out.campaign_refused |= ready.campaign_refused;
        if let Err(e) = self.check_own_guarantees(replica, ready) {
            self.fail(e);
        }
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
