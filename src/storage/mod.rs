//! Durable storage of one node: the Raft log, the hard state (term + vote), the
//! membership and the snapshots, all under one data directory.
//!
//! # On-disk layout
//!
//! ```text
//! <dir>/
//!   LOCK                          OS file lock held while a Storage is open
//!   hard_state                    term + vote: one framed record
//!   membership                    the cluster config: one framed record
//!   identity                      the cluster identity and node id: one framed record
//!   wal/                          the log, which starts at 1 or anywhere after a snapshot
//!     00000000000000004001.seg    entries 4001, 4002, ...
//!     00000000000000004711.seg    entries 4711, 4712, ...
//!   snapshots/                    <index>-<term>, both 20 digits
//!     00000000000000003990-00000000000000000007.snap        the older one, a fallback
//!     00000000000000004650-00000000000000000008.snap        the newest: state up to 4650@8
//!     00000000000000004800-00000000000000000008.snap.tmp    being written
//!     00000000000000004800-00000000000000000008-00000000000000000009.partial
//!                                 being received from the leader of term 9
//!     ...-....snap.damaged        set aside by recovery, kept for an operator
//! ```
//!
//! Every record, in the log and in the small files alike, is
//! `[u32 LE payload length][u32 LE CRC32 of payload][payload]`, where the payload is the
//! JSON of an `Entry`, a `HardState`, a `ClusterConfig` or an `Identity`. A segment is named by the
//! index of its first entry, zero-padded to 20 digits so names sort like indexes, and
//! holds consecutive entries. A new segment starts when the current one has reached
//! `segment_bytes` (a segment overshoots by at most one `append` batch, since a batch
//! is one write). Only the last segment is ever written to. In memory the log keeps
//! one byte offset per entry from its first index on, enough to truncate at any index
//! without reading the disk.
//!
//! A snapshot file is a 28-byte header (magic, version, index, term), the body (the
//! state machine's bytes, opaque here), then the body's length and a CRC32 of every
//! byte before it; the `snapshot` module describes it exactly. The newest two
//! snapshots are kept.
//!
//! # Who touches what
//!
//! The state thread owns the [`Storage`]: it appends, syncs, saves the hard state,
//! compacts and resets the log. Snapshots are written, sent and received by other
//! threads through a [`SnapshotStore`] (a clonable path), so serializing 100 MB or
//! shipping it to a follower never stalls the state thread. Those threads only ever
//! create files under temporary names and rename them into place; the state thread
//! only deletes log segments, and only behind a snapshot that is already durable.
//!
//! # Crash safety
//!
//! What a crash (process kill or power loss) can do: lose or half-write anything not
//! yet fsynced, and, for a power loss, persist directory changes made since the last
//! directory fsync in any order. The design keeps all damage to the log at one
//! recognisable place, the end of the last segment, and makes every other
//! intermediate state one recovery accepts, by these rules:
//!
//! 1. **Appends only at the end.** Records are only ever added after the last one.
//! 2. **A segment is created only after the previous one is fsynced.** So every
//!    segment but the last is complete on disk and can hold no crash damage.
//! 3. **Truncation is durable before anything replaces it.** A conflict truncation
//!    deletes later segments (newest first, fsyncing the directory after each, so a
//!    crash part-way leaves a gap-free prefix), cuts the containing segment and
//!    fdatasyncs it, all before the new entries are written. Otherwise a lost
//!    truncation could let stale entries of an older term reappear behind new ones.
//! 4. **A snapshot appears only whole.** It is written as `.snap.tmp` (or received as
//!    `.partial` and its checksum verified), fsynced, renamed to `.snap`, and the
//!    directory fsynced, before `finish` returns. A crash leaves the old set of
//!    snapshots plus perhaps a temporary file, which is never read as a snapshot.
//! 5. **The log behind a snapshot goes only once the snapshot is durable.**
//!    [`Storage::compact`] and [`Storage::reset_log`] are called after the snapshot's
//!    `finish` returned, and refuse if its file is not there.
//! 6. **Compaction deletes whole segments lying at or below the snapshot.** Oldest
//!    first, one directory fsync at the end; since any subset of those deletions may
//!    survive a power loss, recovery accepts segments wholly covered by the snapshot
//!    that a gap cuts off from the rest of the log, and deletes them.
//! 7. **A reset deletes everything, fsyncs the directory, then creates the new empty
//!    segment `<snapshot index + 1>.seg` and fsyncs again.** A crash before the new
//!    segment exists leaves some subset of the old segments: recovery sees a log that
//!    ends before the snapshot or conflicts with it there (that is why the follower
//!    resets) and replaces it by the empty log itself, so the result is the new log.
//!    Old segments cannot survive beside the new one, thanks to the fsync between.
//!    No marker file is needed: the snapshot itself says where the log must continue.
//!
//! `sync` is one fdatasync of the last segment (plus an fsync of `wal/` when a
//! segment was created since the last one). When it returns, every appended entry is
//! on disk, and the durability rule of docs/architecture.md can release the batch's messages.
//!
//! The hard state, the membership and the identity are small files replaced atomically: write
//! `<name>.tmp`, fsync, rename over `<name>`, fsync the directory. A crash leaves the
//! old or the new version, never a mix; a leftover `.tmp` is removed on open.
//!
//! # Recovery
//!
//! `open` first reads and checks everything without writing a byte; only if all of it
//! is acceptable does it repair (cut a torn tail, delete compaction leftovers, reset a
//! log a snapshot supersedes, set a damaged snapshot aside, remove leftover `.tmp`
//! files). A refusal therefore leaves the directory exactly as it found it, for an
//! operator.
//!
//! ## Each segment: torn tail or damage?
//!
//! Every record's index must be the one after the previous, starting from the index
//! in the segment's name. A record is *bad* when its header is incomplete, its length
//! is zero or runs past the end of the file, or its checksum does not match. Zero
//! lengths are bad because a zero-filled region (what a torn write often leaves) would
//! otherwise checksum: the CRC32 of no bytes is 0. The rule for a bad record at
//! offset `o`:
//!
//! - in a segment other than the last: **corrupt** (rule 2 says no crash puts it there);
//! - in the last segment, when an intact record (header, length in bounds, matching
//!   checksum) starts at any byte offset after `o`: **corrupt**, because a crash only
//!   damages bytes after everything written before it, and intact bytes after the
//!   damage prove the damage is not at the end. Every offset is tried, since the bad
//!   record's own length field cannot be trusted to say where the next one starts;
//! - otherwise it is a **torn tail**: the file is truncated to `o`, and `notes` says so.
//!
//! A record with a matching checksum that is not a valid entry, or holds the wrong
//! index, is always corrupt: those bytes are exactly what was written, so no crash
//! explains them. Corruption is reported as `Error::Corrupt` naming the file and the
//! byte offset of the bad record.
//!
//! Cutting a torn tail loses only entries that were never fsynced, hence never
//! acknowledged. The rule errs towards refusing: after a power loss, a disk that wrote
//! the pages of one unsynced batch out of order could leave a hole followed by intact
//! records, which is indistinguishable from bit rot in acknowledged data. Recovery then
//! refuses and an operator decides; silently dropping acknowledged entries is worse.
//!
//! ## The snapshot, and how the log continues it
//!
//! Recovery loads the newest snapshot (by index, then term) and checks all of it:
//! size, magic, version, that the position in the header is the one in the name, the
//! stored body length and the checksum. The *live log* is the longest run of
//! contiguous segments ending with the last one. With a snapshot at `s`:
//!
//! - the live log must start at or before `s + 1`; a later start is a gap between the
//!   snapshot and the log: **corrupt**, naming the first segment. Without a snapshot
//!   it must start at 1, as before compaction existed;
//! - segments before a gap in the log must hold nothing above `s` (leftovers of an
//!   interrupted compaction, rule 6); they are deleted. A gap with entries above `s`
//!   before it lost part of the log: **corrupt**, naming the segment after the gap;
//! - a live log that ends before `s`, or holds index `s` with another term than the
//!   snapshot's, is what an interrupted reset (rule 7) or a crash between installing
//!   a leader's snapshot and resetting leaves; Raft §7 says the snapshot then
//!   supersedes the whole log, so it is replaced by an empty one continuing at `s + 1`;
//! - otherwise the log is kept as it is. [`Recovered::entries`] holds the entries
//!   from `s + 1` on; entries at or below `s` stay on disk until the caller compacts
//!   ([`Storage::first_index`] tells), which keeps recovery free of deletions it does
//!   not need.
//!
//! A damaged newest snapshot is never used. Recovery falls back to the next older
//! intact one (or to none) only if that loses nothing: the log must continue the
//! older snapshot by the rules above without being replaced, and reach at least the
//! damaged snapshot's index, so every entry the damaged snapshot held is still in the
//! log. A snapshot the node took itself always satisfies the second part, since it
//! covers only applied entries; a snapshot installed from a leader may not, and then
//! falling back would silently forget state the leader was told is stored. If the
//! fallback is allowed, the damaged file is renamed to `.snap.damaged` (kept for an
//! operator, out of every listing) and `notes` says so; otherwise the open is refused
//! with `Error::Corrupt` naming the damaged file. Older snapshots are read only when
//! needed, so damage in one is found only when it would be used.
//!
//! ## What was read is made durable
//!
//! Once everything is accepted, and before any repair, `open` fsyncs what it read:
//! every segment, `hard_state`, `membership`, `identity`, the snapshot used, and the data, `wal`
//! and `snapshots` directories. A process killed after writing but before fsyncing
//! leaves data in the page cache that a restarted node reads back like any other;
//! without this fsync it might vote, acknowledge or compact on the strength of data a
//! power loss would still take away. Repairs come after it because they rely on what
//! was read: deleting log segments behind a snapshot whose rename had not reached the
//! disk could lose both.
//!
//! Partial received snapshots (`.partial`) are left alone by recovery, so a transfer
//! can resume after a restart; their checksum is checked when they complete.
//!
//! # Poisoning
//!
//! After any failed write, truncation, deletion or fsync, the `Storage` is poisoned:
//! every later `append`, `sync`, `save_hard_state`, `save_membership`, `save_identity`,
//! `compact` and `reset_log` returns an error. After a failed fsync, Linux may already have dropped
//! the dirty pages and marked them clean, so a retried fsync can "succeed" with the
//! data gone; nothing written after a failure can be trusted, and a node must never
//! acknowledge on top of it. The way out is to restart the process, whose recovery
//! sees only what really is on disk. An [`IncomingSnapshot`] is poisoned the same way;
//! a [`SnapshotWriter`] that fails leaves no snapshot behind.

mod atomic_file;
mod frame;
mod lock;
mod recovery;
mod snapshot;
mod wal;

use std::{
    fmt, fs, io,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{
    config::ClusterConfig,
    error::{Error, Result},
    raft::{Entry, HardState, Index, NodeId, SnapshotMeta},
};
use atomic_file::{sync_dir, sync_file};
use lock::DirLock;
use snapshot::SNAPSHOT_DIR;
pub use snapshot::{
    IncomingSnapshot, SnapshotSource, SnapshotStore, SnapshotWriter, StoredSnapshot,
};
use wal::{Scan, Wal, WAL_DIR};

/// File holding the term and vote.
const HARD_STATE_FILE: &str = "hard_state";
/// File holding the cluster config the node bootstrapped with.
const MEMBERSHIP_FILE: &str = "membership";
/// File holding which cluster and which node the directory belongs to.
const IDENTITY_FILE: &str = "identity";
/// The small files replaced atomically.
const SMALL_FILES: [&str; 3] = [HARD_STATE_FILE, MEMBERSHIP_FILE, IDENTITY_FILE];

/// Whose data a directory holds: written on the first start, checked on every later
/// one, so a node is never started on another node's data, or on another cluster's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The cluster's identity ([`ClusterConfig::identity`]).
    pub cluster: String,
    /// The node the directory belongs to.
    pub node: NodeId,
}

/// Tuning for [`Storage::open_with`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StorageOptions {
    /// A new log segment is started once the current one has reached this size.
    /// Smaller segments make truncation and (later) compaction finer-grained; larger
    /// ones mean fewer files and fewer directory fsyncs. Values below 1 count as 1.
    pub segment_bytes: u64,
}

impl Default for StorageOptions {
    /// 8 MiB segments: compaction deletes whole segments, so a segment is about the
    /// most log a node keeps on disk beyond what its snapshots need.
    fn default() -> Self {
        StorageOptions {
            segment_bytes: 8 << 20,
        }
    }
}

/// Everything recovered from the data directory by [`Storage::open`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovered {
    /// The last saved term and vote; the default (term 0, no vote) if none was saved.
    pub hard_state: HardState,
    /// The newest intact snapshot, which the log continues; `None` if the log starts
    /// at index 1.
    pub snapshot: Option<StoredSnapshot>,
    /// The log entries after the snapshot: consecutive, the first with index
    /// `snapshot.meta.index + 1` (1 without a snapshot); empty if there are none.
    /// Entries at or below the snapshot's index may still be on disk until
    /// [`Storage::compact`] deletes them, but are not returned.
    pub entries: Vec<Entry>,
    /// The config saved by [`Storage::save_membership`]; `None` on a fresh directory.
    pub membership: Option<ClusterConfig>,
    /// What [`Storage::save_identity`] saved; `None` on a fresh directory, or one
    /// created before identities were recorded.
    pub identity: Option<Identity>,
    /// Human-readable facts about the recovery for the start-up log line, e.g.
    /// `cut a torn tail of 37 bytes at wal/00000000000000000001.seg offset 12345 (...)`.
    pub notes: Vec<String>,
}

/// The open, locked data directory of one node. Not shared between threads by design:
/// the state thread owns it and is the only writer of the log and the hard state.
/// Snapshots are written and read by other threads through a [`SnapshotStore`].
pub struct Storage {
    dir: PathBuf,
    wal: Wal,
    /// What was last made durable, so re-saving an unchanged value costs no fsync.
    hard_state: HardState,
    /// Why the storage refuses further use, after the first write or fsync failure.
    poisoned: Option<String>,
    _lock: DirLock,
}

impl Storage {
    /// Opens `dir` with [`StorageOptions::default`]: creates it if needed, takes an
    /// exclusive lock (a second open of the same directory, from this process or
    /// another, fails with [`Error::Locked`]) and recovers everything.
    pub fn open(dir: &Path) -> Result<(Storage, Recovered)> {
        Storage::open_with(dir, StorageOptions::default())
    }

    /// Like [`Storage::open`] with explicit options.
    ///
    /// Damage that a crash cannot explain is refused with [`Error::Corrupt`] and no
    /// file is modified; a torn log tail is cut, and a damaged snapshot that the log
    /// makes unnecessary is set aside, both reported in [`Recovered::notes`].
    pub fn open_with(dir: &Path, options: StorageOptions) -> Result<(Storage, Recovered)> {
        create_data_dir(dir)?;
        let lock = DirLock::acquire(dir)?;
        let wal_dir = dir.join(WAL_DIR);
        let snap_dir = dir.join(SNAPSHOT_DIR);

        // Read-only phase: every check that can refuse runs before anything changes.
        let scan = Scan::read(&wal_dir)?;
        let hard_state: HardState = atomic_file::load(dir, HARD_STATE_FILE)?.unwrap_or_default();
        let membership: Option<ClusterConfig> = atomic_file::load(dir, MEMBERSHIP_FILE)?;
        let identity: Option<Identity> = atomic_file::load(dir, IDENTITY_FILE)?;
        if let Some(config) = &membership {
            config.validate().map_err(|e| Error::Corrupt {
                file: dir.join(MEMBERSHIP_FILE),
                offset: 0,
                reason: format!("stored cluster config is invalid: {e}"),
            })?;
        }
        let choice = recovery::choose(&snap_dir, &scan)?;

        // What was read may have reached only the page cache before the last process
        // died; make it durable before anything relies on it, repairs included.
        scan.sync_all()?;
        for name in SMALL_FILES {
            atomic_file::sync_if_present(dir, name)?;
        }
        if let Some(snap) = &choice.snapshot {
            sync_file(&snap_dir.join(snapshot::file_name(snap.meta)))?;
        }
        if snap_dir.exists() {
            sync_dir(&snap_dir)?;
        }
        sync_dir(dir)?;

        // Repair phase.
        let mut notes = Vec::new();
        for name in SMALL_FILES {
            if atomic_file::remove_leftover(dir, name)? {
                notes.push(format!("removed {name}.tmp left by an interrupted replace"));
            }
        }
        if !snap_dir.exists() {
            fs::create_dir(&snap_dir)
                .map_err(|e| Error::io(format!("cannot create {}", snap_dir.display()), e))?;
            sync_dir(dir)?;
        }
        for name in snapshot::remove_leftovers(&snap_dir)? {
            notes.push(format!(
                "removed {SNAPSHOT_DIR}/{name} left by an interrupted snapshot write"
            ));
        }
        for (meta, why) in &choice.damaged {
            let aside = snapshot::set_aside(&snap_dir, *meta)?;
            notes.push(format!(
                "snapshot {}@{} is damaged ({why}); the log still holds every entry after \
                 the snapshot recovered from, so it was renamed to {SNAPSHOT_DIR}/{aside}",
                meta.index, meta.term
            ));
        }
        if !choice.damaged.is_empty() {
            sync_dir(&snap_dir)?;
        }
        if let Some(snap) = &choice.snapshot {
            notes.push(format!(
                "loaded snapshot {}@{} ({} body bytes)",
                snap.meta.index,
                snap.meta.term,
                snap.body.len()
            ));
        }
        let (wal, entries) = Wal::open(scan, choice.fit, options.segment_bytes, &mut notes)?;

        let storage = Storage {
            dir: dir.to_path_buf(),
            wal,
            hard_state,
            poisoned: None,
            _lock: lock,
        };
        Ok((
            storage,
            Recovered {
                hard_state,
                snapshot: choice.snapshot,
                entries,
                membership,
                identity,
                notes,
            },
        ))
    }

    /// Appends `entries`. `entries[0].index` may be at most `last_index() + 1`; every
    /// stored entry with an index at or above it is discarded first (Raft's conflict
    /// truncation, itself made durable before this returns). The entries must be
    /// consecutive. They are not durable until [`Storage::sync`]. An empty slice does
    /// nothing.
    ///
    /// Misuse (a gap, an index below `first_index()`, non-consecutive entries) is rejected before anything is
    /// written and does not poison the storage; any I/O failure does.
    pub fn append(&mut self, entries: &[Entry]) -> Result<()> {
        self.check_poisoned()?;
        let Some(first) = entries.first() else {
            return Ok(());
        };
        if first.index < self.first_index() || first.index > self.last_index().saturating_add(1) {
            return Err(invalid(format!(
                "cannot append entry {} to a log holding {}..={}",
                first.index,
                self.first_index(),
                self.last_index()
            )));
        }
        if let Some(pair) = entries
            .windows(2)
            .find(|pair| pair[0].index.checked_add(1) != Some(pair[1].index))
        {
            return Err(invalid(format!(
                "appended entries are not consecutive: {} follows {}",
                pair[1].index, pair[0].index
            )));
        }
        let result = self.wal.append(entries);
        self.poison_on_error(result)
    }

    /// Makes everything appended or truncated so far durable: one fdatasync of the
    /// current segment, plus an fsync of the `wal` directory if segments were created
    /// since the last call.
    pub fn sync(&mut self) -> Result<()> {
        self.check_poisoned()?;
        let result = self.wal.sync();
        self.poison_on_error(result)
    }

    /// Stores term and vote; durable when this returns (temp file, fsync, rename, fsync
    /// of the directory). The file carries a checksum, so damage is detected on open.
    pub fn save_hard_state(&mut self, hs: HardState) -> Result<()> {
        self.check_poisoned()?;
        if hs == self.hard_state {
            return Ok(());
        }
        let result = atomic_file::store(&self.dir, HARD_STATE_FILE, &hs);
        self.poison_on_error(result)?;
        self.hard_state = hs;
        Ok(())
    }

    /// Stores the cluster config the node bootstrapped with, durably and atomically in
    /// the same way as [`Storage::save_hard_state`].
    pub fn save_membership(&mut self, c: &ClusterConfig) -> Result<()> {
        self.check_poisoned()?;
        let result = atomic_file::store(&self.dir, MEMBERSHIP_FILE, c);
        self.poison_on_error(result)
    }

    /// Records whose data this directory holds, durably and atomically in the same
    /// way as [`Storage::save_hard_state`].
    pub fn save_identity(&mut self, identity: &Identity) -> Result<()> {
        self.check_poisoned()?;
        let result = atomic_file::store(&self.dir, IDENTITY_FILE, identity);
        self.poison_on_error(result)
    }

    /// Deletes the log segments whose entries all lie at or below `upto`, oldest
    /// first, never the last segment, then fsyncs the `wal` directory. Entries above
    /// `upto` that share a segment with older ones stay, so [`Storage::first_index`]
    /// may remain at or below `upto`.
    ///
    /// Call it only once a snapshot covering `upto` is durable (its
    /// [`SnapshotWriter::finish`] or [`IncomingSnapshot::finish`] returned): the
    /// deleted entries then live on in it, and recovery accepts every state a crash
    /// can leave. As a guard, it is refused (without poisoning) unless a stored
    /// snapshot reaches `upto`.
    ///
    /// Compacting only up to the *older* of the two kept snapshots keeps recovery's
    /// fallback usable should the newest one be damaged (see the module
    /// documentation), at the cost of one snapshot interval of log on disk;
    /// compacting up to the newest frees the most space. The caller chooses.
    pub fn compact(&mut self, upto: Index) -> Result<()> {
        self.check_poisoned()?;
        let stored = self.snapshot_store().list()?;
        if !stored.iter().any(|m| m.index >= upto) {
            return Err(misuse(
                "cannot compact the log",
                format!("no stored snapshot reaches index {upto}"),
            ));
        }
        let result = self.wal.compact(upto).map(drop);
        self.poison_on_error(result)
    }

    /// Replaces the whole log by an empty one whose next index is `meta.index + 1`,
    /// for a follower that installed the snapshot `meta` and whose log lacks that
    /// position or holds it with another term (Raft §7). Durable when it returns.
    ///
    /// Call it only once that snapshot is durable ([`IncomingSnapshot::finish`]
    /// returned); it is refused (without poisoning) if the snapshot's file is not in
    /// `snapshots/`. A crash part-way recovers to the old log or the new empty one,
    /// never a mix (see the module documentation).
    pub fn reset_log(&mut self, meta: SnapshotMeta) -> Result<()> {
        self.check_poisoned()?;
        let name = snapshot::file_name(meta);
        if !self.dir.join(SNAPSHOT_DIR).join(&name).exists() {
            return Err(misuse(
                "cannot reset the log",
                format!("snapshot {SNAPSHOT_DIR}/{name} is not stored"),
            ));
        }
        let Some(next) = meta.index.checked_add(1) else {
            return Err(misuse(
                "cannot reset the log",
                format!("index {} has no successor", meta.index),
            ));
        };
        let result = self.wal.reset(next);
        self.poison_on_error(result)
    }

    /// Index of the first entry the log holds on disk; `last_index() + 1` when it is
    /// empty. Entries before it exist only in a snapshot. It may lie at or below the
    /// snapshot's index, since compaction deletes whole segments.
    pub fn first_index(&self) -> Index {
        self.wal.first_index()
    }

    /// Index of the last stored entry (durable or not); when the log is empty, the
    /// index it continues from (0 for a new node, the snapshot's after a reset).
    pub fn last_index(&self) -> Index {
        self.wal.last_index()
    }

    /// Total size of the log segment files in bytes, for status and for deciding
    /// when to snapshot.
    pub fn wal_bytes(&self) -> u64 {
        self.wal.bytes()
    }

    /// A handle on the snapshot directory for other threads: the background thread
    /// that writes snapshots, replicators that send them, peer readers that receive
    /// them.
    pub fn snapshot_store(&self) -> SnapshotStore {
        SnapshotStore::new(self.dir.join(SNAPSHOT_DIR))
    }

    /// The data directory this storage was opened on.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn check_poisoned(&self) -> Result<()> {
        match &self.poisoned {
            None => Ok(()),
            Some(first) => Err(Error::io(
                format!(
                    "storage in {} refuses further use after an earlier failure ({first}); \
                     restart to recover from what is on disk",
                    self.dir.display()
                ),
                io::Error::other("storage poisoned"),
            )),
        }
    }

    fn poison_on_error<T>(&mut self, result: Result<T>) -> Result<T> {
        if let Err(e) = &result {
            self.poisoned.get_or_insert_with(|| e.to_string());
        }
        result
    }
}

impl fmt::Debug for Storage {
    /// A summary; the log's offset table and write buffer would drown a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Storage")
            .field("dir", &self.dir)
            .field("first_index", &self.first_index())
            .field("last_index", &self.last_index())
            .field("hard_state", &self.hard_state)
            .field("poisoned", &self.poisoned)
            .finish()
    }
}

/// Creates the data directory, making its own name durable too: otherwise a power
/// loss right after the first acknowledged write could take the whole directory.
fn create_data_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("cannot create data directory {}", dir.display()), e))?;
    match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => atomic_file::sync_dir(parent),
        _ => atomic_file::sync_dir(Path::new(".")),
    }
}

fn invalid(msg: String) -> Error {
    misuse("invalid append", msg)
}

/// A call the caller should not have made; it changes nothing and poisons nothing.
fn misuse(context: &str, msg: String) -> Error {
    Error::io(context, io::Error::new(io::ErrorKind::InvalidInput, msg))
}

#[cfg(test)]
mod tests;
