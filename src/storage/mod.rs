//! Durable storage of one node: the Raft log, the hard state (term + vote) and the
//! membership, all under one data directory.
//!
//! # On-disk layout
//!
//! ```text
//! <dir>/
//!   LOCK                          OS file lock held while a Storage is open
//!   hard_state                    term + vote: one framed record
//!   membership                    the cluster config: one framed record
//!   wal/
//!     00000000000000000001.seg    entries 1, 2, 3, ...
//!     00000000000000004711.seg    entries 4711, 4712, ...
//! ```
//!
//! Every record, in the log and in the small files alike, is
//! `[u32 LE payload length][u32 LE CRC32 of payload][payload]`, where the payload is the
//! JSON of an `Entry`, a `HardState` or a `ClusterConfig`. A segment is named by the
//! index of its first entry, zero-padded to 20 digits so names sort like indexes, and
//! holds consecutive entries. A new segment starts when the current one has reached
//! `segment_bytes` (a segment overshoots by at most one `append` batch, since a batch
//! is one write). Only the last segment is ever written to. In memory the log keeps
//! one byte offset per entry, enough to truncate at any index without reading the disk.
//!
//! # Crash safety
//!
//! What a crash (process kill or power loss) can do: lose or half-write anything not
//! yet fsynced. The design keeps all such damage at one recognisable place, the end of
//! the last segment, by three rules:
//!
//! 1. **Appends only at the end.** Records are only ever added after the last one.
//! 2. **A segment is created only after the previous one is fsynced.** So every
//!    segment but the last is complete on disk and can hold no crash damage.
//! 3. **Truncation is durable before anything replaces it.** A conflict truncation
//!    deletes later segments (newest first, so a crash part-way leaves a gap-free
//!    prefix), fsyncs the directory, cuts the containing segment and fdatasyncs it,
//!    all before the new entries are written. Otherwise a lost truncation could let
//!    stale entries of an older term reappear behind new ones.
//!
//! `sync` is then one fdatasync of the last segment (plus an fsync of `wal/` when a
//! segment was created since the last one). When it returns, every appended entry is
//! on disk, and the durability rule of docs/architecture.md can release the batch's messages.
//!
//! The hard state and the membership are small files replaced atomically: write
//! `<name>.tmp`, fsync, rename over `<name>`, fsync the directory. A crash leaves the
//! old or the new version, never a mix; a leftover `.tmp` is removed on open.
//!
//! # Recovery: torn tail or damage?
//!
//! `open` first reads and checks everything without writing a byte; only if all of it
//! is acceptable does it repair (cut a torn tail, remove leftover `.tmp` files). A
//! refusal therefore leaves the directory exactly as it found it, for an operator.
//!
//! Segments are read in order; the first must start at index 1, each must start right
//! after the previous one ends, and every record's index must be the next one. A
//! record is *bad* when its header is incomplete, its length is zero or runs past the
//! end of the file, or its checksum does not match. Zero lengths are bad because a
//! zero-filled region (what a torn write often leaves) would otherwise checksum: the
//! CRC32 of no bytes is 0. The rule for a bad record at offset `o`:
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
//! # Poisoning
//!
//! After any failed write, truncation or fsync, the `Storage` is poisoned: every later
//! `append`, `sync`, `save_hard_state` and `save_membership` returns an error. After a
//! failed fsync, Linux may already have dropped the dirty pages and marked them clean,
//! so a retried fsync can "succeed" with the data gone; nothing written after a
//! failure can be trusted, and a node must never acknowledge on top of it. The way out
//! is to restart the process, whose recovery sees only what really is on disk.

mod atomic_file;
mod frame;
mod lock;
mod wal;

use std::{
    fmt, fs, io,
    path::{Path, PathBuf},
};

use crate::{
    config::ClusterConfig,
    error::{Error, Result},
    raft::{Entry, HardState, Index},
};
use lock::DirLock;
use wal::{Scan, Wal, WAL_DIR};

/// File holding the term and vote.
const HARD_STATE_FILE: &str = "hard_state";
/// File holding the cluster config the node bootstrapped with.
const MEMBERSHIP_FILE: &str = "membership";

/// Tuning for [`Storage::open_with`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StorageOptions {
    /// A new log segment is started once the current one has reached this size.
    /// Smaller segments make truncation and (later) compaction finer-grained; larger
    /// ones mean fewer files and fewer directory fsyncs. Values below 1 count as 1.
    pub segment_bytes: u64,
}

impl Default for StorageOptions {
    /// 64 MiB segments.
    fn default() -> Self {
        StorageOptions {
            segment_bytes: 64 << 20,
        }
    }
}

/// Everything recovered from the data directory by [`Storage::open`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovered {
    /// The last saved term and vote; the default (term 0, no vote) if none was saved.
    pub hard_state: HardState,
    /// All log entries, consecutive, the first with index 1; empty if there are none.
    pub entries: Vec<Entry>,
    /// The config saved by [`Storage::save_membership`]; `None` on a fresh directory.
    pub membership: Option<ClusterConfig>,
    /// Human-readable facts about the recovery for the start-up log line, e.g.
    /// `cut a torn tail of 37 bytes at wal/00000000000000000001.seg offset 12345 (...)`.
    pub notes: Vec<String>,
}

/// The open, locked data directory of one node. Not shared between threads by design:
/// the state thread owns it and is the only writer.
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
    /// file is modified; a torn log tail is cut and reported in [`Recovered::notes`].
    pub fn open_with(dir: &Path, options: StorageOptions) -> Result<(Storage, Recovered)> {
        create_data_dir(dir)?;
        let lock = DirLock::acquire(dir)?;

        // Read-only phase: every check that can refuse runs before anything changes.
        let (scan, entries) = Scan::read(&dir.join(WAL_DIR))?;
        let hard_state: HardState = atomic_file::load(dir, HARD_STATE_FILE)?.unwrap_or_default();
        let membership: Option<ClusterConfig> = atomic_file::load(dir, MEMBERSHIP_FILE)?;
        if let Some(config) = &membership {
            config.validate().map_err(|e| Error::Corrupt {
                file: dir.join(MEMBERSHIP_FILE),
                offset: 0,
                reason: format!("stored cluster config is invalid: {e}"),
            })?;
        }

        // Repair phase.
        let mut notes = Vec::new();
        for name in [HARD_STATE_FILE, MEMBERSHIP_FILE] {
            if atomic_file::remove_leftover(dir, name)? {
                notes.push(format!("removed {name}.tmp left by an interrupted replace"));
            }
        }
        let wal = Wal::open(scan, options.segment_bytes, &mut notes)?;

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
                entries,
                membership,
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
    /// Misuse (a gap, index 0, non-consecutive entries) is rejected before anything is
    /// written and does not poison the storage; any I/O failure does.
    pub fn append(&mut self, entries: &[Entry]) -> Result<()> {
        self.check_poisoned()?;
        let Some(first) = entries.first() else {
            return Ok(());
        };
        if first.index == 0 || first.index > self.last_index() + 1 {
            return Err(invalid(format!(
                "cannot append entry {} to a log ending at {}",
                first.index,
                self.last_index()
            )));
        }
        if let Some(pair) = entries
            .windows(2)
            .find(|pair| pair[1].index != pair[0].index + 1)
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

    /// Index of the last stored entry (durable or not), 0 if the log is empty.
    pub fn last_index(&self) -> Index {
        self.wal.last_index()
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
    Error::io(
        "invalid append",
        io::Error::new(io::ErrorKind::InvalidInput, msg),
    )
}

#[cfg(test)]
mod tests;
