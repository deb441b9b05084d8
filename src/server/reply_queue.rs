//! The response queue of one client connection: answers leave in request order.
//!
//! The reader appends one slot per request, in arrival order. A slot is either filled
//! at once (`status`, `bad_request`) or later by the state thread through the
//! request's [`ReplyTo`], which is that request's own reply channel: it addresses
//! exactly one slot, can be used once, and never blocks its user. The writer takes
//! filled slots from the front only, so a fast answer (a stale read) never overtakes
//! a slow one (a write waiting for commit) that was asked for first.
//!
//! **Bounded in slots and in bytes.** The reader waits (TCP backpressure) while the
//! connection has [`ConnQueue::new`]'s `limit` slots outstanding, or while its bytes
//! would pass `byte_limit`: the bytes of requests read and not yet answered (their
//! request lines) plus those of answers not yet written (a get's value can be large).
//! The same bytes count in the node-wide client [`Budget`]: a request waits first for
//! room on its connection, then for room in the node. The per-connection cap is what
//! makes this fair: no connection holds more than its share of the node's budget, so a
//! few connections flooding large writes cannot take it all, and a request from any
//! other connection finds room as soon as the next batch is answered. A request larger
//! than the cap still passes once its connection holds nothing else.
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

use super::{budget::Budget, events::ReqTag};
use crate::replica::Outcome;

/// What the writer will send for one request.
pub(crate) enum Slot {
    /// Waiting for the state thread (the id to echo travels with the [`ReplyTo`]).
    Pending,
    /// The state thread's answer, counted as `bytes` until it is written; `tag` is
    /// the request's, if it was numbered for events.
    Answered {
        id: Option<Value>,
        outcome: Outcome,
        bytes: usize,
        tag: Option<ReqTag>,
    },
    /// An answer known without the state thread (`status`, `bad_request`).
    Ready(Value),
    /// Send everything before, then close our sending side.
    Close,
}

impl Slot {
    fn is_filled(&self) -> bool {
        !matches!(self, Slot::Pending)
    }

    /// What the slot is counted as in the byte bounds (answers the reader made itself
    /// are small and not counted).
    pub(crate) fn bytes(&self) -> usize {
        match self {
            Slot::Answered { bytes, .. } => *bytes,
            _ => 0,
        }
    }
}

/// What an answer is counted as until it is written: its value or message, plus a
/// little for the rest of the line.
pub(crate) fn answer_bytes(outcome: &Outcome) -> usize {
    64 + match outcome {
        Outcome::Value(Some(v)) => v.len(),
        Outcome::Failed { message, .. } => message.len(),
        Outcome::Value(None) | Outcome::Written | Outcome::Registered(_) => 0,
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
    /// Bytes of the requests waiting in `slots` and of the answers not yet written
    /// (also those the writer took and has not flushed).
    bytes: usize,
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
    /// Most bytes outstanding before the reader waits (see the module documentation).
    byte_limit: usize,
    /// Node-wide count of answers not yet handed to the socket (see `Shared`).
    unwritten: Arc<AtomicUsize>,
    /// The node-wide byte budget of client connections (`Shared::client_budget`).
    budget: Arc<Budget>,
}

/// How a request's answer finds its way back: the reply channel of one request, which
/// fills its slot in the connection's ordered response queue. Sending never blocks;
/// dropping it unused (a request that never reached the state thread) answers
/// `unavailable`.
pub(crate) struct ReplyTo {
    queue: Arc<ConnQueue>,
    seq: u64,
    id: Option<Value>,
    /// The request's bytes, held in both byte bounds until the answer replaces them.
    bytes: usize,
    sent: bool,
    /// The request's number and read time, while someone watches events.
    tag: Option<ReqTag>,
}

impl ConnQueue {
    /// A queue that holds at most `limit` slots and about `byte_limit` bytes, whose
    /// bytes also count in the node-wide `budget`.
    pub(crate) fn new(
        limit: usize,
        byte_limit: usize,
        unwritten: Arc<AtomicUsize>,
        budget: Arc<Budget>,
    ) -> Arc<ConnQueue> {
        Arc::new(ConnQueue {
            inner: Mutex::new(Inner {
                slots: VecDeque::new(),
                front: 0,
                reader_done: false,
                writer_done: false,
                bytes: 0,
            }),
            writer_wake: Condvar::new(),
            reader_wake: Condvar::new(),
            limit: limit.max(1),
            byte_limit,
            unwritten,
            budget,
        })
    }

    /// Appends an answer that is already known. False if the writer has stopped.
    pub(crate) fn push_ready(&self, slot: Slot) -> bool {
        let mut inner = self.inner.lock();
        if !self.wait_for_room(&mut inner, 0) {
            return false;
        }
        self.push(&mut inner, slot, 0);
        true
    }

    /// Appends a slot for a request of `bytes` bytes that the state thread will
    /// answer through the returned [`ReplyTo`]. Waits for room on this connection,
    /// then in the node's budget. `None` if the writer has stopped.
    pub(crate) fn push_pending(
        self: &Arc<Self>,
        id: Option<Value>,
        bytes: usize,
    ) -> Option<ReplyTo> {
        let mut inner = self.inner.lock();
        if !self.wait_for_room(&mut inner, bytes) {
            return None;
        }
        if !self.budget.try_acquire(bytes) {
            // Only this thread adds to the queue, so the room found stays while it
            // waits for the node's budget (never holding the queue's lock meanwhile).
            drop(inner);
            self.budget.acquire(bytes);
            inner = self.inner.lock();
            if inner.writer_done {
                drop(inner);
                self.budget.release(bytes);
                return None;
            }
        }
        let seq = self.push(&mut inner, Slot::Pending, bytes);
        Some(ReplyTo {
            queue: Arc::clone(self),
            seq,
            id,
            bytes,
            sent: false,
            tag: None,
        })
    }

    /// Waits until `bytes` more fit on this connection; false if the writer stopped.
    fn wait_for_room(&self, inner: &mut parking_lot::MutexGuard<'_, Inner>, bytes: usize) -> bool {
        while !inner.writer_done
            && (inner.slots.len() >= self.limit
                || (inner.bytes > 0 && inner.bytes + bytes > self.byte_limit))
        {
            self.reader_wake.wait(inner);
        }
        !inner.writer_done
    }

    fn push(&self, inner: &mut Inner, slot: Slot, bytes: usize) -> u64 {
        let filled = slot.is_filled();
        inner.slots.push_back(slot);
        inner.bytes += bytes;
        self.unwritten.fetch_add(1, Ordering::AcqRel);
        if filled && inner.slots.len() == 1 {
            self.writer_wake.notify_one();
        }
        inner.front + inner.slots.len() as u64 - 1
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

    /// `n` answers of `bytes` bytes (see [`Slot::bytes`]) that the writer took
    /// reached the socket (or were dropped with it).
    pub(crate) fn written(&self, n: usize, bytes: usize) {
        if n > 0 {
            self.unwritten.fetch_sub(n, Ordering::AcqRel);
        }
        if bytes > 0 {
            let mut inner = self.inner.lock();
            inner.bytes -= bytes;
            self.reader_wake.notify_one();
            drop(inner);
            self.budget.release(bytes);
        }
    }

    /// The writer stopped (the client is gone): discard what is queued and refuse more.
    /// A pending request's bytes go back when its [`ReplyTo`] is used or dropped.
    pub(crate) fn writer_stopped(&self) {
        let mut inner = self.inner.lock();
        inner.writer_done = true;
        let dropped = inner.slots.len();
        let answered: usize = inner.slots.iter().map(Slot::bytes).sum();
        inner.front += dropped as u64;
        inner.slots.clear();
        inner.bytes = 0;
        self.reader_wake.notify_all();
        drop(inner);
        if dropped > 0 {
            self.unwritten.fetch_sub(dropped, Ordering::AcqRel);
        }
        self.budget.release(answered);
    }
}

impl ReplyTo {
    /// The same reply address, for a request numbered `tag` (events).
    pub(crate) fn tagged(mut self, tag: Option<ReqTag>) -> ReplyTo {
        self.tag = tag;
        self
    }

    /// The request's number and read time, if it has them.
    pub(crate) fn tag(&self) -> Option<ReqTag> {
        self.tag
    }

    /// Delivers the answer; never blocks for more than a brief lock.
    pub(crate) fn send(mut self, outcome: Outcome) {
        self.fill(outcome);
    }

    /// Fills the slot; from now on the answer's bytes count instead of the request's.
    fn fill(&mut self, outcome: Outcome) {
        self.sent = true;
        let queue = &self.queue;
        let bytes = answer_bytes(&outcome);
        // A larger answer is charged before the writer can see it: the writer gives its
        // bytes back once it is written, which must never come before they are held
        // (the budget would clamp at zero and keep the difference for good).
        if bytes > self.bytes {
            queue.budget.charge(bytes - self.bytes);
        }
        let mut inner = queue.inner.lock();
        let at = match self.seq.checked_sub(inner.front) {
            Some(at) if !inner.writer_done && (at as usize) < inner.slots.len() => at as usize,
            _ => {
                // The client is gone and its slots with it: only the budget is owed.
                drop(inner);
                queue.budget.release(self.bytes.max(bytes));
                return;
            }
        };
        inner.slots[at] = Slot::Answered {
            id: self.id.take(),
            outcome,
            bytes,
            tag: self.tag,
        };
        inner.bytes = inner.bytes + bytes - self.bytes;
        if at == 0 {
            queue.writer_wake.notify_one();
        }
        if bytes < self.bytes {
            queue.reader_wake.notify_one();
        }
        drop(inner);
        if bytes < self.bytes {
            queue.budget.release(self.bytes - bytes);
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
    use std::{thread, time::Duration};

    fn queue() -> Arc<ConnQueue> {
        ConnQueue::new(
            4,
            1 << 20,
            Arc::new(AtomicUsize::new(0)),
            Arc::new(Budget::new(1 << 20)),
        )
    }

    fn queue_with(byte_limit: usize, budget: &Arc<Budget>) -> Arc<ConnQueue> {
        ConnQueue::new(
            1024,
            byte_limit,
            Arc::new(AtomicUsize::new(0)),
            Arc::clone(budget),
        )
    }

    /// Takes what is filled, as the writer does, and says it was written.
    fn write_out(q: &ConnQueue) -> usize {
        let mut out = Vec::new();
        q.take_filled(&mut out, false);
        let bytes = out.iter().map(Slot::bytes).sum();
        q.written(out.len(), bytes);
        out.len()
    }

    #[test]
    fn answers_leave_in_request_order() {
        let q = queue();
        let a = q.push_pending(Some(json!(1)), 10).unwrap();
        let b = q.push_pending(Some(json!(2)), 10).unwrap();
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
        q.written(3, out.iter().map(Slot::bytes).sum());
        q.finish_reading();
        assert!(!q.take_filled(&mut out, true));
    }

    #[test]
    fn a_dropped_reply_answers_unavailable_and_a_gone_writer_discards() {
        let q = queue();
        drop(q.push_pending(None, 10).unwrap());
        let mut out = Vec::new();
        q.take_filled(&mut out, false);
        assert!(matches!(
            &out[0],
            Slot::Answered {
                outcome: Outcome::Failed { .. },
                ..
            }
        ));
        let late = q.push_pending(None, 10).unwrap();
        q.writer_stopped();
        late.send(Outcome::Written); // ignored, no panic
        assert!(q.push_pending(None, 10).is_none());
        assert_eq!(q.unwritten.load(Ordering::Relaxed), 1); // the one taken, not yet written
    }

    #[test]
    fn the_reader_waits_when_the_pipeline_is_full() {
        let q = queue();
        let replies: Vec<ReplyTo> = (0..4).map(|_| q.push_pending(None, 10).unwrap()).collect();
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

    #[test]
    fn a_connection_holds_at_most_its_byte_cap_until_answers_are_written() {
        let budget = Arc::new(Budget::new(1 << 20));
        let q = queue_with(1000, &budget);
        let first = q.push_pending(None, 600).unwrap();
        let q2 = Arc::clone(&q);
        let reader =
            thread::spawn(move || q2.push_pending(None, 600).map(|r| r.send(Outcome::Written)));
        thread::sleep(Duration::from_millis(30));
        assert!(
            !reader.is_finished(),
            "600 more bytes do not fit under 1000"
        );
        assert_eq!(budget.used(), 600);
        // The answer replaces the request's bytes: a small answer makes room at once.
        first.send(Outcome::Written);
        assert!(reader.join().unwrap().is_some());
        assert_eq!(write_out(&q), 2);
        assert_eq!(budget.used(), 0, "every byte goes back once written");
        assert_eq!(q.inner.lock().bytes, 0);
    }

    #[test]
    fn a_request_over_the_cap_passes_alone_and_a_large_answer_counts_until_written() {
        let budget = Arc::new(Budget::new(1 << 20));
        let q = queue_with(100, &budget);
        let big = q.push_pending(None, 500).unwrap();
        big.send(Outcome::Value(Some("v".repeat(5000))));
        assert_eq!(budget.used(), 5064, "the unwritten answer is held");
        let q2 = Arc::clone(&q);
        let reader = thread::spawn(move || q2.push_ready(Slot::Ready(json!("status"))));
        thread::sleep(Duration::from_millis(30));
        assert!(
            !reader.is_finished(),
            "nothing more while the answer is unwritten"
        );
        assert_eq!(write_out(&q), 1);
        assert!(reader.join().unwrap());
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn an_answer_larger_than_its_request_is_held_before_the_writer_can_give_it_back() {
        // The writer writes each answer the moment it is filled; had the answer's
        // extra bytes been charged after that, a release would now and then come
        // first (a debug assertion in `Budget::release`), and a budget with nothing
        // else held would keep the difference.
        let budget = Arc::new(Budget::new(1 << 20));
        let q = queue_with(1 << 20, &budget);
        let writer = {
            let q = Arc::clone(&q);
            thread::spawn(move || {
                let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    let mut out = Vec::new();
                    while q.take_filled(&mut out, true) {
                        let bytes = out.iter().map(Slot::bytes).sum();
                        q.written(out.len(), bytes);
                        out.clear();
                    }
                }));
                q.writer_stopped(); // after a panic, so that the reader stops too
                written.is_ok()
            })
        };
        for _ in 0..20_000 {
            let Some(reply) = q.push_pending(None, 10) else {
                break;
            };
            reply.send(Outcome::Value(Some("v".repeat(100))));
        }
        q.finish_reading();
        assert!(writer.join().unwrap(), "a release came before its charge");
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn the_node_budget_holds_back_every_connection_and_a_gone_client_pays_back() {
        let budget = Arc::new(Budget::new(1000));
        let (a, b) = (queue_with(800, &budget), queue_with(800, &budget));
        let held = a.push_pending(None, 700).unwrap();
        let b2 = Arc::clone(&b);
        let other = thread::spawn(move || b2.push_pending(None, 400));
        thread::sleep(Duration::from_millis(30));
        assert!(
            !other.is_finished(),
            "the node's budget is spent, not b's cap"
        );
        // The client of `a` goes away before its answer: its bytes still come back.
        a.writer_stopped();
        held.send(Outcome::Written);
        let _reply = other.join().unwrap().expect("b's request got in");
        assert_eq!(budget.used(), 400);
    }
}
