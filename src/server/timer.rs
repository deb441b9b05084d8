//! The timer thread: the node's only clock. It queues a `Tick` every tick interval;
//! the Raft core counts ticks, never reads a clock.

use std::{
    sync::{atomic::Ordering, Arc},
    thread,
    time::{Duration, Instant},
};

use crossbeam_channel::TrySendError;

use super::shared::{Input, Shared};

/// Runs until the state thread is gone. At most one tick is ever queued: a state
/// thread that fell behind (a slow fsync) gets one tick, not a burst that would fire
/// election timeouts all at once. A process that was paused (SIGSTOP) likewise resumes
/// with a single tick rather than catching up.
pub(crate) fn run(shared: Arc<Shared>, tick: Duration) {
    let mut next = Instant::now() + tick;
    loop {
        let now = Instant::now();
        if next > now {
            thread::sleep(next - now);
        }
        let now = Instant::now();
        next += tick;
        if next < now {
            next = now + tick; // we were paused or starved: do not catch up
        }
        if shared.tick_pending.swap(true, Ordering::AcqRel) {
            continue;
        }
        // The flag is the tick; this only wakes an idle state thread. When the inbox
        // is full the state thread is busy and will see the flag on its next turn.
        match shared.inbox.try_send(Input::Tick) {
            Ok(()) | Err(TrySendError::Full(_)) => {}
            Err(TrySendError::Disconnected(_)) => return,
        }
    }
}
