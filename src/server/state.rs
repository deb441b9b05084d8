//! The state thread: the only writer of the replica, and the only user of storage.
//!
//! One turn of its loop handles one *batch*: it blocks for one input, drains whatever
//! else is already queued (up to [`MAX_BATCH`]), feeds it all to the replica under the
//! mutex, then works off the replica's output without the mutex: persist entries and
//! hard state, fsync **once**, tell the replica what is durable, hand messages to the
//! replicators, deliver client replies. That order is the durability rule of DESIGN.md;
//! the single fsync for everything a batch produced is group commit.

use std::{
    collections::BTreeMap,
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::{
    logging::{self, debug, error, info, warning, Level},
    reply_queue::ReplyTo,
    shared::{Input, Shared},
};
use crate::{
    error::Error,
    protocol::ErrorCode,
    raft::{Message, NodeId, Role, Term},
    replica::{Outcome, ReplicaReady},
    storage::Storage,
};

/// Most inputs folded into one batch (one fsync). Large enough to amortize the fsync
/// over thousands of clients, small enough to keep one turn's latency bounded.
pub(crate) const MAX_BATCH: usize = 4096;

/// An fsync slower than this is worth a warning.
const SLOW_SYNC: Duration = Duration::from_millis(50);

/// What the log reports changes of: role, term, leader.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Seen {
    role: Role,
    term: Term,
    leader: Option<NodeId>,
    last: (u64, Term),
}

/// The state thread's own resources.
pub(crate) struct StateLoop {
    shared: Arc<Shared>,
    storage: Storage,
    inbox: Receiver<Input>,
    /// One bounded channel per peer, read by its replicator.
    peers: BTreeMap<NodeId, Sender<Message>>,
    seen: Seen,
    batch: Vec<Input>,
    shutting_down: bool,
}

impl StateLoop {
    pub(crate) fn new(
        shared: Arc<Shared>,
        storage: Storage,
        inbox: Receiver<Input>,
        peers: BTreeMap<NodeId, Sender<Message>>,
    ) -> StateLoop {
        let seen = observe(&shared.replica.lock());
        logging::set_term(seen.term);
        StateLoop {
            shared,
            storage,
            inbox,
            peers,
            seen,
            batch: Vec::with_capacity(MAX_BATCH),
            shutting_down: false,
        }
    }

    /// Runs until a [`Input::Shutdown`] has been handled, then returns the inbox so the
    /// caller can refuse whatever is still queued. A storage failure ends the process.
    pub(crate) fn run(mut self) -> Receiver<Input> {
        while !self.shutting_down {
            let Ok(first) = self.inbox.recv() else {
                break; // cannot happen: `Shared` holds a sender
            };
            self.batch.push(first);
            while self.batch.len() < MAX_BATCH {
                match self.inbox.try_recv() {
                    Ok(input) => self.batch.push(input),
                    Err(_) => break,
                }
            }
            self.turn();
        }
        if let Err(e) = self.storage.sync() {
            fatal("the final sync", &e);
        }
        info!("shut down cleanly: storage synced");
        self.inbox
    }

    /// Handles the batch and everything it leads to.
    fn turn(&mut self) {
        if logging::enabled(Level::Debug) {
            for input in &self.batch {
                if let Input::Peer(m) = input {
                    debug!("recv {m}");
                }
            }
        }
        let mut refused = Vec::new();
        let (mut ready, mut seen) = {
            let mut r = self.shared.replica.lock();
            // Time is read from the flag, not from the queued `Tick` (which only wakes
            // this thread): a tick still counts when a flood filled the inbox.
            if self.shared.tick_pending.swap(false, Ordering::AcqRel) {
                r.tick();
            }
            for input in self.batch.drain(..) {
                match input {
                    Input::Tick => {}
                    Input::Peer(m) => r.step(m),
                    Input::Request(_, token) if self.shutting_down => refused.push(token),
                    Input::Request(op, token) => r.request(token, op),
                    Input::Shutdown => {
                        if !self.shutting_down {
                            self.shutting_down = true;
                            self.shared.shutting_down.store(true, Ordering::Release);
                        }
                    }
                }
            }
            if self.shutting_down {
                r.shutdown();
            }
            (r.ready(), observe(&r))
        };
        if self.shutting_down {
            info!(
                "shutting down: no new requests; failing {} pending and {} just-arrived ones",
                ready.replies.len(),
                refused.len()
            );
        }
        for token in refused {
            token.send(shutting_down_outcome());
        }
        loop {
            self.note_changes(seen);
            let persisted = self.handle(&mut ready, seen);
            let mut r = self.shared.replica.lock();
            if let Some((index, term)) = persisted {
                r.persisted(index, term);
            }
            ready = r.ready();
            seen = observe(&r);
            drop(r);
            if ready.is_empty() {
                self.note_changes(seen);
                return;
            }
        }
    }

    /// Persists, sends and replies for one `ready`; returns the last entry made durable.
    fn handle(&mut self, ready: &mut ReplicaReady<ReplyTo>, seen: Seen) -> Option<(u64, Term)> {
        // A leader may ship its new entries to followers before its own fsync (they
        // overlap); it counts itself toward commit only after `persisted`. Everything
        // else waits for the fsync. A term/vote change never happens on a leader, but
        // if one is pending, nothing leaves early.
        let early = seen.role == Role::Leader && ready.hard_state.is_none();
        if early {
            self.send(std::mem::take(&mut ready.messages));
        }
        let persisted = ready.entries.last().map(|e| (e.index, e.term));
        if ready.hard_state.is_some() || !ready.entries.is_empty() {
            let started = Instant::now();
            if let Some(hs) = ready.hard_state {
                // Term and vote first: the log never holds a term the hard state lacks.
                if let Err(e) = self.storage.save_hard_state(hs) {
                    fatal("saving term and vote", &e);
                }
            }
            if !ready.entries.is_empty() {
                if let Err(e) = self.storage.append(&ready.entries) {
                    fatal("appending to the log", &e);
                }
                if let Err(e) = self.storage.sync() {
                    fatal("syncing the log", &e);
                }
            }
            let took = started.elapsed();
            if took > SLOW_SYNC {
                warning!(
                    "slow fsync: {} ms for {} entries{}",
                    took.as_millis(),
                    ready.entries.len(),
                    if ready.hard_state.is_some() {
                        " and the hard state"
                    } else {
                        ""
                    }
                );
            }
        }
        if !early {
            self.send(std::mem::take(&mut ready.messages));
        }
        for (token, mut outcome) in ready.replies.drain(..) {
            if let Outcome::Failed { leader, .. } = &mut outcome {
                // A hint helps the client retry elsewhere; a node that is going away
                // never names itself.
                let me = Some(self.shared.id);
                if leader.is_none() && seen.leader != me {
                    *leader = seen.leader;
                } else if self.shutting_down && *leader == me {
                    *leader = None;
                }
            }
            token.send(outcome);
        }
        persisted
    }

    /// Hands messages to the replicators without ever blocking: a full channel means
    /// the peer is slow or gone, and Raft retransmits what is lost.
    fn send(&self, messages: Vec<Message>) {
        for m in messages {
            let Some(tx) = self.peers.get(&m.to) else {
                continue;
            };
            if logging::enabled(Level::Debug) {
                debug!("send {m}");
            }
            match tx.try_send(m) {
                Ok(()) => {}
                Err(TrySendError::Full(m)) => debug!("queue to n{} full; dropped {m}", m.to),
                Err(TrySendError::Disconnected(_)) => {}
            }
        }
    }

    /// Logs role, term and leader changes.
    fn note_changes(&mut self, now: Seen) {
        let before = std::mem::replace(&mut self.seen, now);
        if now.term != before.term {
            logging::set_term(now.term);
        }
        if now.role != before.role || now.term != before.term {
            match now.role {
                Role::Leader => info!(
                    "became leader for term {} (log ends at {}@{})",
                    now.term, now.last.0, now.last.1
                ),
                Role::Candidate => info!("election: campaigning for term {}", now.term),
                Role::PreCandidate => info!(
                    "election timeout in term {}: asking for pre-votes",
                    now.term
                ),
                Role::Follower if before.role != Role::Follower => info!(
                    "now follower in term {} (was {})",
                    now.term,
                    before.role.as_str()
                ),
                Role::Follower => info!("term {} begins (follower)", now.term),
            }
        }
        if now.leader != before.leader {
            match now.leader {
                Some(l) if l == self.shared.id => {}
                Some(l) => info!("leader for term {} is n{l}", now.term),
                None => info!("no known leader in term {}", now.term),
            }
        }
    }
}

fn observe(r: &crate::replica::Replica<ReplyTo>) -> Seen {
    let n = r.node();
    Seen {
        role: n.role(),
        term: n.term(),
        leader: n.leader(),
        last: (n.last_index(), n.log().last_term()),
    }
}

/// The answer to a request that arrived after shutdown began.
pub(crate) fn shutting_down_outcome() -> Outcome {
    Outcome::Failed {
        code: ErrorCode::Unavailable,
        message: "the node is shutting down; nothing was applied".into(),
        leader: None,
    }
}

/// A storage failure: after a failed write or fsync nothing on disk can be trusted, so
/// the node must not acknowledge anything more. Log and leave at once; recovery on the
/// next start sees only what is really on disk.
fn fatal(what: &str, e: &Error) -> ! {
    error!("FATAL storage failure while {what}: {e}; exiting without acknowledging anything more");
    std::process::exit(3)
}
