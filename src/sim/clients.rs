//! Simulated clients: each runs one operation at a time against the cluster, retries
//! the way the real client does (follow the leader hint, reuse `seq` for a write), and
//! records what it saw for the linearizability check, as the checker's own
//! [`Operation`]s.
//!
//! Writes use registered sessions, as the real client does: before its first write a
//! client registers, and when a write is answered `session_expired` it registers again
//! and resends the write under the new session, but only if no earlier attempt may
//! have been applied; otherwise it gives the write up as outcome unknown. So a retry
//! after expiry is refused, never applied twice, and the history stays honest. (A
//! registration is not an operation on the keys: it is not recorded.)
//!
//! An operation enters the history when it ends: when it is answered (it completed), or
//! when the client gives up on a write that may have been applied (outcome unknown). An
//! operation given up on that certainly changed nothing — a read, or a write every
//! attempt of which was refused — did not happen as far as the check is concerned; it is
//! only counted.

use rand::{rngs::StdRng, Rng};

use super::{node::Requester, STEPS_PER_TICK};
use crate::{
    check::{KvOp, Operation},
    kv::{Command, Session, WriteOp},
    protocol::ErrorCode,
    raft::NodeId,
    replica::{ClientOp, Outcome},
};

/// Attempts per operation (per session it registers for it) before the client gives
/// up on it.
const MAX_ATTEMPTS: u32 = 12;

/// Sessions a client registers for one write before it gives the write up (a cluster
/// with a tiny session limit can push a new session out before its first write).
const MAX_REGISTRATIONS: u32 = 4;

/// A client's operation in progress.
struct InFlight {
    /// What the history will record: invoked at the step of the first attempt, not
    /// completed yet.
    operation: Operation,
    /// The request, sent again as is on every attempt: the operation's own, or a
    /// [`ClientOp::Register`] before a write.
    op: ClientOp,
    /// A write's key and operation, to build the request once a session exists.
    write: Option<(String, WriteOp)>,
    /// Sessions registered for this operation so far.
    registrations: u32,
    /// The client-wide number of the latest attempt.
    attempt: u64,
    /// Attempts made for this operation; it is given up after [`MAX_ATTEMPTS`].
    attempts: u32,
    /// Retry when no reply came by then.
    deadline: u64,
    /// Retry at this step (after a refusal).
    retry_at: Option<u64>,
    /// Some attempt may have been applied (it timed out or was answered `timeout`).
    maybe_applied: bool,
}

/// One simulated client.
struct SimClient {
    /// Its name, `c<index>`; it numbers the values it writes.
    name: String,
    /// Its registered session, if it has one.
    session: Option<u64>,
    /// The seq of its latest write in that session.
    seq: u64,
    /// The node it sends to next.
    target: NodeId,
    /// Operations started so far; numbers the values it writes.
    started: u64,
    /// Attempts sent so far over all operations.
    attempts_sent: u64,
    /// The operation in progress, if any.
    current: Option<InFlight>,
}

/// All simulated clients and their shared history.
pub struct Clients {
    /// The clients, by index.
    clients: Vec<SimClient>,
    /// The operations that may have taken effect, in the order they ended: completed
    /// ones, and writes given up on whose outcome is unknown.
    history: Vec<Operation>,
    /// Operations given up on that certainly changed nothing (left out of `history`).
    refused: usize,
    /// Writes answered `session_expired`.
    expired: usize,
    /// How many keys the clients use: `k0`, `k1`, …
    keys: usize,
    /// The cluster's nodes, to move on to the next one.
    ids: Vec<NodeId>,
    /// Clients start new operations only while active.
    active: bool,
    /// Steps an attempt waits for a reply before it is retried elsewhere.
    timeout_steps: u64,
}

impl Clients {
    pub fn new(count: usize, keys: usize, ids: &[NodeId], timeout_steps: u64) -> Clients {
        let clients = (0..count)
            .map(|i| SimClient {
                name: format!("c{i}"),
                session: None,
                seq: 0,
                target: ids[i % ids.len()],
                started: 0,
                attempts_sent: 0,
                current: None,
            })
            .collect();
        Clients {
            clients,
            history: Vec::new(),
            refused: 0,
            expired: 0,
            keys,
            ids: ids.to_vec(),
            active: true,
            timeout_steps,
        }
    }

    /// The operations that may have taken effect, ready for [`crate::check::check`].
    pub fn history(&self) -> &[Operation] {
        &self.history
    }

    /// How many operations were given up on without having changed anything.
    pub fn refused(&self) -> usize {
        self.refused
    }

    /// How many writes were answered `session_expired`.
    pub fn expired(&self) -> usize {
        self.expired
    }

    pub fn set_active(&mut self, active: bool) {
        self.active = active;
    }

    /// No client has an operation outstanding.
    pub fn idle(&self) -> bool {
        self.clients.iter().all(|c| c.current.is_none())
    }

    /// Starts new operations and retries; returns the requests to send.
    pub fn tick(
        &mut self,
        step: u64,
        rate: f64,
        rng: &mut StdRng,
    ) -> Vec<(NodeId, ClientOp, usize)> {
        let mut out = Vec::new();
        for i in 0..self.clients.len() {
            match &self.clients[i].current {
                None => {
                    if self.active && rng.gen_bool(rate) {
                        self.start_op(i, step, rng);
                        self.attempt(i, step, &mut out);
                    }
                }
                Some(f) => {
                    let due = f.retry_at.is_some_and(|r| r <= step);
                    let timed_out = f.retry_at.is_none() && f.deadline <= step;
                    if timed_out {
                        let c = &mut self.clients[i];
                        let f = c.current.as_mut().expect("in flight");
                        f.maybe_applied |= matches!(f.op, ClientOp::Write(_));
                        c.target = next_node(&self.ids, c.target);
                    }
                    if due || timed_out {
                        self.attempt(i, step, &mut out);
                    }
                }
            }
        }
        out
    }

    fn start_op(&mut self, i: usize, step: u64, rng: &mut StdRng) {
        let key = format!("k{}", rng.gen_range(0..self.keys));
        let c = &mut self.clients[i];
        c.started += 1;
        let value = format!("{}.{};", c.name, c.started);
        let roll = rng.gen_range(0..100);
        let (kind, write) = match roll {
            0..=34 => (KvOp::Get, None),
            35..=54 => (KvOp::Put(value.clone()), Some(WriteOp::Put { value })),
            55..=89 => (KvOp::Append(value.clone()), Some(WriteOp::Append { value })),
            _ => (KvOp::Delete, Some(WriteOp::Delete)),
        };
        let write = write.map(|op| (key.clone(), op));
        let op = match &write {
            None => ClientOp::Get {
                key: key.clone(),
                stale: false,
            },
            Some(_) if c.session.is_none() => ClientOp::Register,
            Some((key, op)) => next_write(c.session, &mut c.seq, key, op),
        };
        c.current = Some(InFlight {
            operation: Operation {
                client: i as u64,
                key,
                op: kind,
                invoke: step,
                complete: None,
                read: None,
            },
            op,
            write,
            registrations: 0,
            attempt: 0,
            attempts: 0,
            deadline: u64::MAX,
            retry_at: None,
            maybe_applied: false,
        });
    }

    fn attempt(&mut self, i: usize, step: u64, out: &mut Vec<(NodeId, ClientOp, usize)>) {
        let c = &mut self.clients[i];
        let f = c.current.as_mut().expect("in flight");
        if f.attempts >= MAX_ATTEMPTS {
            return self.give_up(i);
        }
        c.attempts_sent += 1;
        f.attempt = c.attempts_sent;
        f.attempts += 1;
        f.deadline = step + self.timeout_steps;
        f.retry_at = None;
        out.push((c.target, f.op.clone(), i));
    }

    /// The token for client `i`'s current attempt.
    pub fn token(&self, i: usize) -> Requester {
        let attempt = self.clients[i].current.as_ref().map_or(0, |f| f.attempt);
        Requester::Client { client: i, attempt }
    }

    /// Ends client `i`'s operation without an answer.
    fn give_up(&mut self, i: usize) {
        let f = self.clients[i].current.take().expect("in flight");
        if f.maybe_applied {
            self.history.push(f.operation);
        } else {
            self.refused += 1;
        }
    }

    /// Handles a reply; an error means the reply itself breaks the contract.
    pub fn on_reply(
        &mut self,
        token: Requester,
        outcome: Outcome,
        step: u64,
    ) -> Result<(), String> {
        let Requester::Client { client, attempt } = token else {
            return Ok(());
        };
        let c = &mut self.clients[client];
        let Some(f) = c.current.as_mut().filter(|f| f.attempt == attempt) else {
            return Ok(()); // a reply to an attempt we already gave up on
        };
        let is_write = matches!(f.op, ClientOp::Write(_));
        let registering = matches!(f.op, ClientOp::Register);
        match outcome {
            Outcome::Registered(session) if registering => {
                c.session = Some(session);
                c.seq = 0;
                f.registrations += 1;
                let (key, op) = f.write.clone().expect("registering for a write");
                f.op = next_write(c.session, &mut c.seq, &key, &op);
                f.attempts = 0;
                f.retry_at = Some(step);
            }
            Outcome::Failed {
                code: ErrorCode::SessionExpired,
                ..
            } if is_write => {
                // Not applied by this attempt. If an earlier one may have been, nobody
                // can tell any more: the write's outcome is unknown.
                self.expired += 1;
                c.session = None;
                if f.maybe_applied || f.registrations >= MAX_REGISTRATIONS {
                    self.give_up(client);
                } else {
                    f.op = ClientOp::Register;
                    f.retry_at = Some(step);
                }
            }
            Outcome::Value(v) if !is_write => {
                let mut done = c.current.take().expect("in flight").operation;
                done.read = v;
                done.complete = Some(step);
                self.history.push(done);
            }
            Outcome::Written if is_write => {
                let mut done = c.current.take().expect("in flight").operation;
                done.complete = Some(step);
                self.history.push(done);
            }
            Outcome::Failed {
                code: ErrorCode::NotLeader,
                leader,
                ..
            } => {
                c.target = leader.unwrap_or_else(|| next_node(&self.ids, c.target));
                f.retry_at = Some(step + STEPS_PER_TICK);
            }
            Outcome::Failed {
                code: ErrorCode::Unavailable,
                ..
            } => {
                c.target = next_node(&self.ids, c.target);
                f.retry_at = Some(step + 3 * STEPS_PER_TICK);
            }
            Outcome::Failed {
                code: ErrorCode::Timeout,
                ..
            } => {
                f.maybe_applied |= is_write;
                c.target = next_node(&self.ids, c.target);
                f.retry_at = Some(step + 3 * STEPS_PER_TICK);
            }
            other => {
                return Err(format!("client c{client} got {other:?} for {:?}", f.op));
            }
        }
        Ok(())
    }

    /// Ends the run: operations still outstanding are given up.
    pub fn finish(&mut self) {
        for i in 0..self.clients.len() {
            if self.clients[i].current.is_some() {
                self.give_up(i);
            }
        }
    }
}

/// The request for a write in the client's current session, with its next seq.
fn next_write(session: Option<u64>, seq: &mut u64, key: &str, op: &WriteOp) -> ClientOp {
    let session = session.expect("a write goes out in a session");
    *seq += 1;
    ClientOp::Write(Command::write(
        key,
        op.clone(),
        Some(Session::registered(session, *seq)),
    ))
}

fn next_node(ids: &[NodeId], current: NodeId) -> NodeId {
    let pos = ids.iter().position(|&i| i == current).unwrap_or(0);
    ids[(pos + 1) % ids.len()]
}
