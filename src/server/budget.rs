//! A byte budget shared by threads: how the node bounds the memory that input from the
//! network may hold before the state thread is done with it.
//!
//! Readers [`acquire`](Budget::acquire) the bytes of what they are about to queue and
//! wait while the budget is spent; so a flood stays in the sender's socket (TCP
//! backpressure) instead of in this process. The state thread only ever
//! [`release`](Budget::release)s or [`charge`](Budget::charge)s (which never waits):
//! it must never block on a reader, or the budget could never be paid back.
//!
//! The common case costs one compare-and-swap to acquire and one subtraction to
//! release. Only a reader that finds the budget spent takes the mutex and parks on
//! the condition variable; a release wakes the parked readers only when there are
//! some (`waiting`), so releasing stays cheap when nobody waits. All of `used` and
//! `waiting` use `SeqCst`: a release that reads `waiting == 0` happened before the
//! reader's registration, so that reader's next look sees the released bytes.

use std::{
    sync::atomic::{AtomicUsize, Ordering::SeqCst},
    time::Duration,
};

use parking_lot::{Condvar, Mutex};

/// A bounded number of bytes, taken and given back by different threads.
pub(crate) struct Budget {
    /// Most bytes held at once (by acquirers; see [`Budget::charge`] for the rest).
    limit: usize,
    /// Acquisitions of at most this many bytes may go `reserve` bytes past `limit`.
    small: usize,
    /// Room that only small acquisitions may use (see [`Budget::with_small_lane`]).
    reserve: usize,
    /// Bytes held now.
    used: AtomicUsize,
    /// Readers parked in [`Budget::acquire`].
    waiting: AtomicUsize,
    /// Guards parking, so a release cannot slip between a reader's look and its sleep.
    lock: Mutex<()>,
    room: Condvar,
}

impl Budget {
    pub(crate) fn new(limit: usize) -> Budget {
        Budget {
            limit: limit.max(1),
            small: 0,
            reserve: 0,
            used: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            lock: Mutex::new(()),
            room: Condvar::new(),
        }
    }

    /// Lets acquisitions of at most `small` bytes use `reserve` bytes more than the
    /// limit. Large ones that wait are released all of the same size, and they take
    /// back exactly what their peers gave back, so without a lane of its own a small
    /// request could find the budget full again at every release. With it, a small
    /// request waits only while small requests fill the reserve too.
    pub(crate) fn with_small_lane(mut self, small: usize, reserve: usize) -> Budget {
        self.small = small;
        self.reserve = reserve;
        self
    }

    /// Takes `bytes`, waiting while that would pass the limit. Something larger than
    /// the whole budget is let in once nothing else is held, so it waits but is never
    /// refused for good.
    pub(crate) fn acquire(&self, bytes: usize) {
        if self.try_acquire(bytes) {
            return;
        }
        let mut guard = self.lock.lock();
        self.waiting.fetch_add(1, SeqCst);
        while !self.try_acquire(bytes) {
            // The timeout is only a safety net; releases wake waiters.
            self.room.wait_for(&mut guard, Duration::from_millis(100));
        }
        self.waiting.fetch_sub(1, SeqCst);
    }

    /// Takes `bytes` if they fit now.
    pub(crate) fn try_acquire(&self, bytes: usize) -> bool {
        let limit = if bytes <= self.small {
            self.limit.saturating_add(self.reserve)
        } else {
            self.limit
        };
        self.used
            .fetch_update(SeqCst, SeqCst, |used| {
                (used == 0 || used.saturating_add(bytes) <= limit)
                    .then(|| used.saturating_add(bytes))
            })
            .is_ok()
    }

    /// Takes `bytes` whether or not they fit, never waiting: for the state thread,
    /// which must not block (it charges a client's answer until it is written). Those
    /// bytes count against the limit, so readers wait for them too.
    pub(crate) fn charge(&self, bytes: usize) {
        self.used.fetch_add(bytes, SeqCst);
    }

    /// Gives back `bytes` taken by [`acquire`](Self::acquire) or
    /// [`charge`](Self::charge), and wakes waiting readers if there are any.
    pub(crate) fn release(&self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        // Saturating: a miscount must never wrap around to a budget spent forever.
        let before = self
            .used
            .fetch_update(SeqCst, SeqCst, |used| Some(used.saturating_sub(bytes)))
            .unwrap_or_else(|used| used);
        debug_assert!(before >= bytes, "released more bytes than were held");
        if self.waiting.load(SeqCst) > 0 {
            let _guard = self.lock.lock();
            self.room.notify_all();
        }
    }

    /// Bytes held now.
    #[cfg(test)]
    pub(crate) fn used(&self) -> usize {
        self.used.load(SeqCst)
    }

    #[cfg(test)]
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{
        sync::{atomic::AtomicBool, Arc},
        thread,
        time::Instant,
    };

    #[test]
    fn acquire_within_the_limit_never_waits_and_release_gives_back() {
        let b = Budget::new(100);
        b.acquire(60);
        b.acquire(40);
        assert_eq!(b.used(), 100);
        assert!(!b.try_acquire(1), "the budget is spent");
        b.release(40);
        assert!(b.try_acquire(40));
        b.release(100);
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn something_larger_than_the_budget_gets_in_alone() {
        let b = Budget::new(10);
        assert!(b.try_acquire(50), "alone, it may pass the limit");
        assert!(!b.try_acquire(1), "nothing else meanwhile");
        b.release(50);
        b.acquire(5);
        assert!(!b.try_acquire(50), "not while anything else is held");
    }

    #[test]
    fn a_reader_waits_for_room_and_is_woken_by_a_release() {
        let b = Arc::new(Budget::new(100));
        b.acquire(90);
        let passed = Arc::new(AtomicBool::new(false));
        let reader = {
            let (b, passed) = (Arc::clone(&b), Arc::clone(&passed));
            thread::spawn(move || {
                b.acquire(20);
                passed.store(true, SeqCst);
            })
        };
        thread::sleep(Duration::from_millis(30));
        assert!(!passed.load(SeqCst), "20 more bytes do not fit in 10");
        let released = Instant::now();
        b.release(50);
        reader.join().unwrap();
        assert!(passed.load(SeqCst));
        assert!(
            released.elapsed() < Duration::from_millis(90),
            "woken by the release, not by the safety-net timeout"
        );
        assert_eq!(b.used(), 60);
    }

    #[test]
    fn small_acquisitions_have_a_lane_large_ones_cannot_fill() {
        let b = Budget::new(100).with_small_lane(5, 20);
        assert!(b.try_acquire(100));
        assert!(!b.try_acquire(6), "a large one waits at the limit");
        for _ in 0..4 {
            assert!(b.try_acquire(5), "small ones use the reserve");
        }
        assert!(!b.try_acquire(5), "until the reserve is full too");
        b.release(10);
        assert!(
            !b.try_acquire(6),
            "freed room under the reserve is not for large ones"
        );
        assert!(b.try_acquire(5));
    }

    #[test]
    fn charges_never_wait_and_count_against_readers() {
        let b = Budget::new(100);
        b.charge(150);
        assert_eq!(b.used(), 150);
        assert!(!b.try_acquire(1), "charged bytes hold readers off");
        b.release(150);
        assert!(b.try_acquire(100));
    }

    #[test]
    fn many_readers_and_releasers_never_lose_a_byte_or_pass_the_limit() {
        let b = Arc::new(Budget::new(1000));
        let over = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let (b, over) = (Arc::clone(&b), Arc::clone(&over));
                thread::spawn(move || {
                    for i in 0..2000 {
                        let n = 1 + (t * 37 + i * 13) % 300;
                        b.acquire(n);
                        if b.used() > b.limit() {
                            over.store(true, SeqCst);
                        }
                        b.release(n);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(!over.load(SeqCst), "more than the limit was held at once");
        assert_eq!(b.used(), 0);
    }
}
