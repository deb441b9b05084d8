//! The response queue of one client connection: answers leave in request order.
//!
//! The reader appends one slot per request, in arrival order. A slot is either filled
//! at once (`status`, `bad_request`) or later by the state thread through the
//! request's [`ReplyTo`], which is that request's own reply channel: it addresses
//! exactly one slot, can be used once, and never blocks its user. The writer takes
//! filled slots from the front only, so a fast answer (a stale read) never overtakes
//! a slow one (a write waiting for commit) that was asked for first.
//!
//! Why not a crossbeam `bounded(1)` channel per request plus a queue of receivers:
//! that is what this replaces. The writer then blocked twice per request (for the
//! next receiver, then for its answer), and crossbeam's blocking receive spins and
//! calls `sched_yield` before it parks; with 64 clients on 2 cores, the writers'
//! spinning took over half of the leader's CPU. Here the writer parks once per
//! request on a condition variable (no spinning), and no channel is allocated per
//! request.

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use parking_lot::{Condvar, Mutex};
use serde_json::Value;

use crate::replica::Outcome;

/// What the writer will send for one request.
pub(crate) enum Slot {
    /// Waiting for the state thread (the id to echo travels with the [`ReplyTo`]).
    Pending,
    /// The state thread's answer.
    Answered { id: Option<Value>, outcome: Outcome },
    /// An answer known without the state thread (`status`, `bad_request`).
    Ready(Value),
    /// Send everything before, then close our sending side.
    Close,
}

impl Slot {
    fn is_filled(&self) -> bool {
        !matches!(self, Slot::Pending)
    }
}

struct Inner {
    slots: VecDeque<Slot>,
    /// Sequence number of `slots[0]`; slot `s` lives at `s - front`.
    front: u64,
    /// No more slots will be added.
    reader_done: bool,
    /// The writer has stopped (the client went away): answers are discarded.
    writer_done: bool,
}

/// One connection's ordered response queue; shared by its reader, its writer and
/// (through [`ReplyTo`]) the state thread.
pub(crate) struct ConnQueue {
    inner: Mutex<Inner>,
    /// The front slot was filled, or the reader finished.
    writer_wake: Condvar,
    /// A slot was taken: room for the reader again.
    reader_wake: Condvar,
    /// Most slots outstanding before the reader waits (TCP backpressure).
    limit: usize,
    /// Node-wide count of answers not yet handed to the socket (see `Shared`).
    unwritten: Arc<AtomicUsize>,
}

/// How a request's answer finds its way back: the reply channel of one request, which
/// fills its slot in the connection's ordered response queue. Sending never blocks;
/// dropping it unused (a request that never reached the state thread) answers
/// `unavailable`.
pub(crate) struct ReplyTo {
    queue: Arc<ConnQueue>,
    seq: u64,
    id: Option<Value>,
    sent: bool,
}

impl ConnQueue {
    pub(crate) fn new(limit: usize, unwritten: Arc<AtomicUsize>) -> Arc<ConnQueue> {
        Arc::new(ConnQueue {
            inner: Mutex::new(Inner {
                slots: VecDeque::new(),
                front: 0,
                reader_done: false,
                writer_done: false,
            }),
            writer_wake: Condvar::new(),
            reader_wake: Condvar::new(),
            limit: limit.max(1),
            unwritten,
        })
    }

    /// Appends an answer that is already known. False if the writer has stopped.
    pub(crate) fn push_ready(&self, slot: Slot) -> bool {
        self.push(slot).is_some()
    }

    /// Appends a slot for a request the state thread will answer through the returned
    /// [`ReplyTo`]; `None` if the writer has stopped.
    pub(crate) fn push_pending(self: &Arc<Self>, id: Option<Value>) -> Option<ReplyTo> {
        let seq = self.push(Slot::Pending)?;
        Some(ReplyTo {
            queue: Arc::clone(self),
            seq,
            id,
            sent: false,
        })
    }

    fn push(&self, slot: Slot) -> Option<u64> {
        let mut inner = self.inner.lock();
        while inner.slots.len() >= self.limit && !inner.writer_done {
            self.reader_wake.wait(&mut inner);
        }
        if inner.writer_done {
            return None;
        }
        let filled = slot.is_filled();
        inner.slots.push_back(slot);
        self.unwritten.fetch_add(1, Ordering::AcqRel);
        if filled && inner.slots.len() == 1 {
            self.writer_wake.notify_one();
        }
        Some(inner.front + inner.slots.len() as u64 - 1)
    }

    /// The reader is done: the writer stops once the queue is empty.
    pub(crate) fn finish_reading(&self) {
        self.inner.lock().reader_done = true;
        self.writer_wake.notify_one();
    }

    /// Moves the filled slots at the front into `out` (in order). Blocks until there is
    /// at least one, unless `wait` is false. Returns false when nothing is left to
    /// write and the reader is done.
    pub(crate) fn take_filled(&self, out: &mut Vec<Slot>, wait: bool) -> bool {
        let mut inner = self.inner.lock();
        loop {
            let mut taken = 0;
            while inner.slots.front().is_some_and(Slot::is_filled) {
                out.push(inner.slots.pop_front().expect("front exists"));
                inner.front += 1;
                taken += 1;
            }
            if taken > 0 {
                self.reader_wake.notify_one();
                return true;
            }
            if inner.reader_done && inner.slots.is_empty() {
                return false;
            }
            if !wait {
                return true;
            }
            self.writer_wake.wait(&mut inner);
        }
    }

    /// `n` answers reached the socket (or were dropped with it).
    pub(crate) fn written(&self, n: usize) {
        if n > 0 {
            self.unwritten.fetch_sub(n, Ordering::AcqRel);
        }
    }

    /// The writer stopped (the client is gone): discard what is queued and refuse more.
    pub(crate) fn writer_stopped(&self) {
        let mut inner = self.inner.lock();
        inner.writer_done = true;
        let dropped = inner.slots.len();
        inner.front += dropped as u64;
        inner.slots.clear();
        self.reader_wake.notify_all();
        drop(inner);
        self.written(dropped);
    }
}

impl ReplyTo {
    /// Delivers the answer; never blocks for more than a brief lock.
    pub(crate) fn send(mut self, outcome: Outcome) {
        self.fill(outcome);
    }

    fn fill(&mut self, outcome: Outcome) {
        self.sent = true;
        let mut inner = self.queue.inner.lock();
        if inner.writer_done || self.seq < inner.front {
            return;
        }
        let at = (self.seq - inner.front) as usize;
        if let Some(slot) = inner.slots.get_mut(at) {
            *slot = Slot::Answered {
                id: self.id.take(),
                outcome,
            };
            if at == 0 {
                self.queue.writer_wake.notify_one();
            }
        }
    }
}

impl Drop for ReplyTo {
    fn drop(&mut self) {
        if !self.sent {
            self.fill(Outcome::shutting_down());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::thread;

    fn queue() -> Arc<ConnQueue> {
        ConnQueue::new(4, Arc::new(AtomicUsize::new(0)))
    }

    #[test]
    fn answers_leave_in_request_order() {
        let q = queue();
        let a = q.push_pending(Some(json!(1))).unwrap();
        let b = q.push_pending(Some(json!(2))).unwrap();
        assert!(q.push_ready(Slot::Ready(json!("status"))));
        let mut out = Vec::new();
        b.send(Outcome::Written);
        assert!(q.take_filled(&mut out, false));
        assert!(out.is_empty(), "the second answer must wait for the first");
        a.send(Outcome::Value(None));
        assert!(q.take_filled(&mut out, false));
        assert_eq!(out.len(), 3);
        assert!(matches!(&out[0], Slot::Answered { id: Some(i), .. } if *i == json!(1)));
        assert!(matches!(&out[1], Slot::Answered { id: Some(i), .. } if *i == json!(2)));
        assert!(matches!(&out[2], Slot::Ready(_)));
        assert_eq!(q.unwritten.load(Ordering::Relaxed), 3);
        q.written(3);
        q.finish_reading();
        assert!(!q.take_filled(&mut out, true));
    }

    #[test]
    fn a_dropped_reply_answers_unavailable_and_a_gone_writer_discards() {
        let q = queue();
        drop(q.push_pending(None).unwrap());
        let mut out = Vec::new();
        q.take_filled(&mut out, false);
        assert!(matches!(
            &out[0],
            Slot::Answered {
                outcome: Outcome::Failed { .. },
                ..
            }
        ));
        let late = q.push_pending(None).unwrap();
        q.writer_stopped();
        late.send(Outcome::Written); // ignored, no panic
        assert!(q.push_pending(None).is_none());
        assert_eq!(q.unwritten.load(Ordering::Relaxed), 1); // the one taken, not yet written
    }

    #[test]
    fn the_reader_waits_when_the_pipeline_is_full() {
        let q = queue();
        let replies: Vec<ReplyTo> = (0..4).map(|_| q.push_pending(None).unwrap()).collect();
        let q2 = Arc::clone(&q);
        let reader = thread::spawn(move || q2.push_ready(Slot::Ready(json!(5))));
        for r in replies {
            r.send(Outcome::Written);
        }
        let mut out = Vec::new();
        while out.len() < 5 {
            assert!(q.take_filled(&mut out, true));
        }
        assert!(reader.join().unwrap());
    }
}
