//! The snapshotter thread: turns a frozen snapshot of the replica into a file, off the
//! state thread.
//!
//! The state thread's part of taking a snapshot is O(1): the replica clones its
//! persistent store (`imbl`) at the applied index and hands the clone over here, then
//! goes on applying writes, which copy only the tree nodes they touch. This thread
//! walks the frozen clone in key order, encodes it, and writes it atomically through
//! `storage::SnapshotStore` (temporary file, fsync, rename, fsync of the directory,
//! keep the newest two). Only then does the state thread hear `SnapshotSaved`, and
//! only then may the log behind the snapshot go: the order of DESIGN's "snapshot
//! durable, then the log behind it deleted".
//!
//! It also frees the log entries compaction removes from memory: dropping a few
//! hundred thousand entries takes tens of milliseconds, which the state thread (and the
//! heartbeats it sends) should not spend.

use std::{sync::Arc, time::Instant};

use crossbeam_channel::{select, Receiver, Sender};

use super::{
    events::{emit, EventBus, What},
    logging::{error, info},
    shared::Input,
};
use crate::{raft::Entry, replica::Snapshot, storage::SnapshotStore};

/// Runs until the state thread drops the sending side of `queue`.
pub(crate) fn run(
    store: SnapshotStore,
    queue: Receiver<Snapshot>,
    garbage: Receiver<Vec<Entry>>,
    inbox: Sender<Input>,
    events: Arc<EventBus>,
) {
    loop {
        let snapshot = select! {
            recv(queue) -> s => match s {
                Ok(s) => s,
                Err(_) => return,
            },
            recv(garbage) -> entries => {
                drop(entries);
                continue;
            }
        };
        let meta = snapshot.meta;
        let started = Instant::now();
        let body = snapshot.encode();
        drop(snapshot); // the frozen view: let its shared nodes go
        let encoded = started.elapsed();
        let input = match store.write(meta, &body) {
            Ok(()) => {
                info!(
                    "snapshot {}@{} saved: {} bytes, encoded in {} ms, written in {} ms",
                    meta.index,
                    meta.term,
                    body.len(),
                    encoded.as_millis(),
                    (started.elapsed() - encoded).as_millis()
                );
                emit!(
                    events,
                    What::Snapshot {
                        index: meta.index,
                        term: meta.term,
                        from: None,
                        bytes: Some(body.len() as u64),
                    }
                );
                Input::SnapshotSaved(meta)
            }
            Err(e) => {
                error!(
                    "saving snapshot {}@{} failed: {e}; the log is kept and a snapshot is tried again later",
                    meta.index, meta.term
                );
                Input::SnapshotFailed
            }
        };
        if inbox.send(input).is_err() {
            return; // the state thread has stopped
        }
    }
}
