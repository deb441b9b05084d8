//! The write-ahead log: segment files, appends, conflict truncation and recovery.
//!
//! See the module documentation of `storage` for the layout and the crash-safety
//! argument; the comments here explain the individual steps that argument leans on.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
};

use super::{
    atomic_file::{sync_dir, sync_file},
    frame::{self, Decoded},
};
use crate::{
    error::{Error, Result},
    raft::{Entry, Index, SnapshotMeta},
};

/// Name of the log directory inside the data directory.
pub(crate) const WAL_DIR: &str = "wal";

/// Digits in a segment name: enough for any u64, so names sort like their indexes.
const NAME_DIGITS: usize = 20;
const SEGMENT_SUFFIX: &str = ".seg";

/// A batch buffer that grew past this is dropped after use, so one huge batch does
/// not pin its memory for the life of the node.
const MAX_KEPT_BUFFER: usize = 4 << 20;

/// `00000000000000000042.seg` for the segment whose first entry is index 42.
pub(crate) fn segment_name(first_index: Index) -> String {
    format!("{first_index:0NAME_DIGITS$}{SEGMENT_SUFFIX}")
}

fn parse_segment_name(name: &str) -> Option<Index> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != NAME_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// One segment file. Only its name and length are kept; the byte offsets of its
/// entries live in `Wal::offsets`.
#[derive(Clone, Copy, Debug)]
struct Segment {
    first_index: Index,
    len: u64,
}

/// A segment as the recovery scan found it.
#[derive(Debug)]
struct Scanned {
    segment: Segment,
    /// Intact entries it holds (after any torn tail).
    count: u64,
}

impl Scanned {
    /// The index an entry right after this segment would have.
    fn next_index(&self) -> Index {
        self.segment.first_index + self.count
    }
}

/// Where recovery will cut the last segment: it keeps `keep` bytes.
#[derive(Debug)]
struct Cut {
    keep: u64,
    dropped: u64,
    reason: String,
}

/// What the read-only recovery pass found. Turning it into a [`Wal`] is the first
/// step that writes anything, so every refusal happens before any file changes.
///
/// The scan checks each segment on its own (records intact and consecutive from the
/// index in its name, damage only as a torn tail of the last one); how the segments
/// fit together depends on the snapshot, and is [`Scan::fit`]'s business.
#[derive(Debug)]
pub(crate) struct Scan {
    dir: PathBuf,
    segments: Vec<Scanned>,
    /// Byte offset of every intact entry, all segments in order.
    offsets: Vec<u64>,
    /// Every intact entry, all segments in order.
    entries: Vec<Entry>,
    cut: Option<Cut>,
}

impl Scan {
    /// Reads and checks every segment under `wal_dir` (absent = no segments) without
    /// modifying anything.
    pub(crate) fn read(wal_dir: &Path) -> Result<Scan> {
        let mut scan = Scan {
            dir: wal_dir.to_path_buf(),
            segments: Vec::new(),
            offsets: Vec::new(),
            entries: Vec::new(),
            cut: None,
        };
        let firsts = list_segments(wal_dir)?;
        let mut bytes = Vec::new();
        for (i, &first_index) in firsts.iter().enumerate() {
            let is_last = i + 1 == firsts.len();
            let path = wal_dir.join(segment_name(first_index));
            let corrupt = |offset: usize, reason: String| Error::Corrupt {
                file: path.clone(),
                offset: offset as u64,
                reason,
            };
            if first_index == 0 {
                return Err(corrupt(0, "log indexes start at 1".into()));
            }
            bytes.clear();
            File::open(&path)
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;

            let mut count: u64 = 0;
            let mut at = 0;
            loop {
                match frame::decode(&bytes, at) {
                    Decoded::Record { payload, next } => {
                        let entry: Entry = serde_json::from_slice(payload).map_err(|e| {
                            corrupt(
                                at,
                                format!("checksum matches but the record is not a log entry: {e}"),
                            )
                        })?;
                        // The last index is kept free so "one past the end" always exists.
                        let want = first_index
                            .checked_add(count)
                            .filter(|&want| want < Index::MAX);
                        if Some(entry.index) != want {
                            return Err(corrupt(
                                at,
                                format!(
                                    "record holds index {}, expected {}",
                                    entry.index,
                                    want.map_or("none (past the largest index)".into(), |w| w
                                        .to_string())
                                ),
                            ));
                        }
                        scan.offsets.push(at as u64);
                        scan.entries.push(entry);
                        count += 1;
                        at = next;
                    }
                    Decoded::End => break,
                    Decoded::Bad { reason } if !is_last => {
                        return Err(corrupt(
                            at,
                            format!(
                                "{reason}; segments are fsynced before the next one is \
                                 created, so damage here is not a torn write"
                            ),
                        ));
                    }
                    Decoded::Bad { reason } => {
                        if let Some(later) = frame::find_valid_record(&bytes, at + 1) {
                            return Err(corrupt(
                                at,
                                format!(
                                    "{reason}; an intact record follows at offset {later}, \
                                     so this is damage, not a torn tail"
                                ),
                            ));
                        }
                        scan.cut = Some(Cut {
                            keep: at as u64,
                            dropped: (bytes.len() - at) as u64,
                            reason,
                        });
                        break;
                    }
                }
            }
            scan.segments.push(Scanned {
                segment: Segment {
                    first_index,
                    len: at as u64,
                },
                count,
            });
        }
        Ok(scan)
    }

    /// Decides how the scanned segments continue `snapshot` (or, without one, start
    /// the log at index 1), still without modifying anything; `snapshot_file` names
    /// the snapshot in error messages.
    ///
    /// The live log is the longest run of contiguous segments that ends with the last
    /// one. It must start at or before `snapshot.index + 1`, else entries are missing:
    /// refused, naming its first segment. Segments before a gap must lie wholly at or
    /// below the snapshot index (compaction leftovers); otherwise the gap took entries
    /// the snapshot does not hold: refused, naming the segment after the gap. A live
    /// log that ends before the snapshot, or holds the snapshot's index with another
    /// term, is replaced by an empty one (Raft §7: a snapshot that does not match the
    /// log supersedes all of it).
    pub(crate) fn fit(&self, snapshot: Option<SnapshotMeta>, snapshot_file: &str) -> Result<Fit> {
        let base = snapshot.map_or(0, |m| m.index);
        let covers = match snapshot {
            None => "there is no snapshot".to_string(),
            Some(m) => format!(
                "the snapshot {snapshot_file} ends at {}@{}",
                m.index, m.term
            ),
        };
        let segs = &self.segments;
        let path = |i: usize| self.dir.join(segment_name(segs[i].segment.first_index));
        let continues = |j: usize| segs[j - 1].next_index() == segs[j].segment.first_index;
        let live_from = (1..segs.len()).rev().find(|&j| !continues(j)).unwrap_or(0);

        // Entries above the snapshot before a gap: the gap lost some of the log.
        if let Some(above) = segs[..live_from]
            .iter()
            .position(|s| s.next_index() - 1 > base)
        {
            let j = (above + 1..=live_from)
                .find(|&j| !continues(j))
                .unwrap_or(live_from);
            let end = segs[j - 1].next_index() - 1;
            return Err(Error::Corrupt {
                file: path(j),
                offset: 0,
                reason: format!(
                    "segment should start at index {} (the log before it ends at {end}), \
                     and {covers}, so entries are missing",
                    end + 1
                ),
            });
        }
        let live = &segs[live_from..];
        let (Some(first), Some(last)) = (live.first(), live.last()) else {
            return Ok(Fit {
                base,
                live_from,
                reset: None,
            });
        };
        let first = first.segment.first_index;
        if first > base.saturating_add(1) {
            return Err(Error::Corrupt {
                file: path(live_from),
                offset: 0,
                reason: format!(
                    "the log starts at index {first}, but {covers}: entries {}..={} are missing",
                    base + 1,
                    first - 1
                ),
            });
        }
        let last = last.next_index() - 1;
        let reset = match snapshot {
            None => None,
            Some(m) if last < m.index => Some(format!(
                "the log ends at {last}, before the snapshot at {}",
                m.index
            )),
            Some(m) if first <= m.index => {
                let stale: u64 = segs[..live_from].iter().map(|s| s.count).sum();
                let term = self.entries[(stale + m.index - first) as usize].term;
                (term != m.term).then(|| {
                    format!(
                        "its entry {} has term {term}, the snapshot's has term {}",
                        m.index, m.term
                    )
                })
            }
            Some(_) => None,
        };
        Ok(Fit {
            base,
            live_from,
            reset,
        })
    }

    /// The last index the live log would hold under `fit`: `fit.base` if it is empty
    /// or will be replaced.
    pub(crate) fn last_index(&self, fit: &Fit) -> Index {
        match self.segments.last() {
            Some(last) if fit.reset.is_none() && fit.live_from < self.segments.len() => {
                last.next_index() - 1
            }
            _ => fit.base,
        }
    }

    /// fsyncs every segment and the log directory, so what the previous process left
    /// in the page cache is on disk before this one treats it as durable.
    pub(crate) fn sync_all(&self) -> Result<()> {
        if !self.dir.exists() {
            return Ok(());
        }
        for s in &self.segments {
            sync_file(&self.dir.join(segment_name(s.segment.first_index)))?;
        }
        sync_dir(&self.dir)
    }
}

/// How the scanned log continues the snapshot recovery chose; see [`Scan::fit`].
#[derive(Debug)]
pub(crate) struct Fit {
    /// The snapshot's index (0 without one): recovery returns the entries after it,
    /// and an empty log continues at `base + 1`.
    pub(crate) base: Index,
    /// Segments before this position are compaction leftovers wholly covered by the
    /// snapshot and cut off from the live log by a gap; they are deleted on open.
    pub(crate) live_from: usize,
    /// Why the live log must be replaced by an empty one continuing the snapshot.
    pub(crate) reset: Option<String>,
}

/// The first indexes of the segments under `wal_dir`, sorted. Files not ending in
/// `.seg` are ignored; a `.seg` file with a malformed name is refused, since skipping
/// it could silently drop part of the log.
fn list_segments(wal_dir: &Path) -> Result<Vec<Index>> {
    let ctx = || format!("cannot list {}", wal_dir.display());
    let listing = match fs::read_dir(wal_dir) {
        Ok(listing) => listing,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(ctx(), e)),
    };
    let mut firsts = Vec::new();
    for item in listing {
        let name = item.map_err(|e| Error::io(ctx(), e))?.file_name();
        let name = name.to_string_lossy();
        if !name.ends_with(SEGMENT_SUFFIX) {
            continue;
        }
        match parse_segment_name(&name) {
            Some(first) => firsts.push(first),
            None => {
                return Err(Error::Corrupt {
                    file: wal_dir.join(&*name),
                    offset: 0,
                    reason: format!("segment names are {NAME_DIGITS} digits + {SEGMENT_SUFFIX}"),
                })
            }
        }
    }
    firsts.sort_unstable();
    Ok(firsts)
}

/// The open log. Invariants: `segments` is never empty, the first starts at
/// `first_index`, each starts where the previous ends, `offsets[i]` is the byte
/// offset of entry `first_index + i` inside its segment, and `file` is the last
/// segment positioned at its end. An empty log (`offsets` empty) continues at
/// `first_index`, which is 1 for a new node and `snapshot.index + 1` after a reset.
#[derive(Debug)]
pub(crate) struct Wal {
    dir: PathBuf,
    segment_bytes: u64,
    segments: Vec<Segment>,
    first_index: Index,
    offsets: Vec<u64>,
    file: File,
    buf: Vec<u8>,
    /// `file` has writes not yet covered by an fdatasync.
    unsynced: bool,
    /// A segment was created since the directory was last fsynced.
    dir_unsynced: bool,
}

impl Wal {
    /// Applies what recovery decided under `fit` (deleting compaction leftovers,
    /// cutting a torn tail, replacing a log the snapshot supersedes, creating the
    /// first segment) and opens the last segment for appending. Returns the log and
    /// the recovered entries after `fit.base`.
    pub(crate) fn open(
        scan: Scan,
        fit: Fit,
        segment_bytes: u64,
        notes: &mut Vec<String>,
    ) -> Result<(Wal, Vec<Entry>)> {
        let Scan {
            dir,
            segments: scanned,
            mut offsets,
            mut entries,
            cut,
        } = scan;
        if !dir.exists() {
            fs::create_dir(&dir)
                .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
            if let Some(parent) = dir.parent() {
                sync_dir(parent)?;
            }
        }
        let mut segments: Vec<Segment> = scanned.iter().map(|s| s.segment).collect();

        let stale = &scanned[..fit.live_from];
        if !stale.is_empty() {
            // Any order is safe: recovery ignores whatever is left of them.
            for s in stale {
                remove_segment(&dir, s.segment.first_index)?;
            }
            sync_dir(&dir)?;
            let count: u64 = stale.iter().map(|s| s.count).sum();
            offsets.drain(..count as usize);
            entries.drain(..count as usize);
            segments.drain(..fit.live_from);
            notes.push(format!(
                "deleted {} segment(s) left by an interrupted compaction, all at or below \
                 the snapshot at {}",
                stale.len(),
                fit.base
            ));
        }

        let next = fit.base.saturating_add(1);
        let file = if let Some(reason) = &fit.reset {
            let file = restart(&dir, &segments, next)?;
            notes.push(format!(
                "replaced the log by an empty one continuing the snapshot at {} ({reason}; \
                 an install was interrupted before its log reset)",
                fit.base
            ));
            segments = vec![Segment {
                first_index: next,
                len: 0,
            }];
            offsets.clear();
            entries.clear();
            file
        } else if segments.is_empty() {
            let file = create_segment(&dir, next)?;
            sync_dir(&dir)?;
            segments.push(Segment {
                first_index: next,
                len: 0,
            });
            file
        } else {
            let last = segments[segments.len() - 1];
            let path = dir.join(segment_name(last.first_index));
            let ctx = |what: &str| format!("cannot {what} {}", path.display());
            let mut file = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| Error::io(ctx("open"), e))?;
            if let Some(cut) = cut {
                // Made durable before anything new is appended, so new records can
                // never end up in front of leftovers of the old tail.
                file.set_len(cut.keep)
                    .map_err(|e| Error::io(ctx("truncate"), e))?;
                file.sync_data()
                    .map_err(|e| Error::io(ctx("fdatasync"), e))?;
                notes.push(format!(
                    "cut a torn tail of {} bytes at {WAL_DIR}/{} offset {} ({})",
                    cut.dropped,
                    segment_name(last.first_index),
                    cut.keep,
                    cut.reason
                ));
            }
            file.seek(SeekFrom::Start(last.len))
                .map_err(|e| Error::io(ctx("seek"), e))?;
            file
        };

        let first_index = segments[0].first_index;
        let wal = Wal {
            dir,
            segment_bytes: segment_bytes.max(1),
            segments,
            first_index,
            offsets,
            file,
            buf: Vec::new(),
            unsynced: false,
            dir_unsynced: false,
        };
        notes.push(match wal.offsets.len() {
            0 => format!(
                "log is empty, next index {} ({} segment)",
                first_index,
                wal.segments.len()
            ),
            _ => format!(
                "log holds entries {first_index}..={} in {} segment(s)",
                wal.last_index(),
                wal.segments.len()
            ),
        });
        // Entries the snapshot already holds stay on disk until compaction, but the
        // caller gets the log from the snapshot on.
        let covered = entries.partition_point(|e| e.index <= fit.base);
        entries.drain(..covered);
        Ok((wal, entries))
    }

    /// Index of the first entry the log holds, or of the next one when it is empty.
    pub(crate) fn first_index(&self) -> Index {
        self.first_index
    }

    /// Index of the last entry; `first_index() - 1` if the log is empty.
    pub(crate) fn last_index(&self) -> Index {
        self.first_index + self.offsets.len() as Index - 1
    }

    /// Total bytes of all segment files, as written (durable or not).
    pub(crate) fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum()
    }

    /// Appends `entries`, which the caller has checked are non-empty, consecutive and
    /// start between `first_index()` and one past the end; anything stored from
    /// `entries[0].index` on is discarded first.
    pub(crate) fn append(&mut self, entries: &[Entry]) -> Result<()> {
        let first = entries[0].index;
        if first <= self.last_index() {
            self.truncate_from(first)?;
        }
        if self.current().len >= self.segment_bytes {
            self.rotate(first)?;
        }
        let base = self.current().len;
        let kept = self.offsets.len();
        self.buf.clear();
        for entry in entries {
            self.offsets.push(base + self.buf.len() as u64);
            if let Err(e) = frame::encode(&mut self.buf, entry) {
                self.offsets.truncate(kept);
                return Err(Error::io(format!("cannot encode entry {}", entry.index), e));
            }
        }
        if let Err(e) = self.file.write_all(&self.buf) {
            self.offsets.truncate(kept);
            return Err(Error::io(
                format!("cannot write to {}", self.current_path().display()),
                e,
            ));
        }
        let written = self.buf.len() as u64;
        if self.buf.capacity() > MAX_KEPT_BUFFER {
            self.buf = Vec::new();
        }
        if let Some(seg) = self.segments.last_mut() {
            seg.len += written;
        }
        self.unsynced = true;
        Ok(())
    }

    /// Makes everything appended so far durable: one fdatasync in the common case.
    pub(crate) fn sync(&mut self) -> Result<()> {
        self.sync_segment()?;
        if self.dir_unsynced {
            sync_dir(&self.dir)?;
            self.dir_unsynced = false;
        }
        Ok(())
    }

    /// Deletes the segments, oldest first, whose entries all lie at or below `upto`,
    /// never the last one, then fsyncs the directory. Returns how many went.
    ///
    /// Any subset of the deletions may survive a crash; recovery accepts every such
    /// state because the snapshot the caller made durable first covers all of them.
    pub(crate) fn compact(&mut self, upto: Index) -> Result<usize> {
        let mut removed = 0;
        while self.segments.len() > 1 && self.segments[1].first_index - 1 <= upto {
            let seg = self.segments[0];
            remove_segment(&self.dir, seg.first_index)?;
            let next = self.segments[1].first_index;
            self.offsets.drain(..(next - seg.first_index) as usize);
            self.segments.remove(0);
            self.first_index = next;
            removed += 1;
        }
        if removed > 0 {
            sync_dir(&self.dir)?;
        }
        Ok(removed)
    }

    /// Replaces the whole log by an empty one that continues at `next_index`; see
    /// [`restart`] for why every intermediate state recovers.
    pub(crate) fn reset(&mut self, next_index: Index) -> Result<()> {
        // Nothing unsynced may be left half-accounted: the old file goes away anyway.
        self.unsynced = false;
        self.file = restart(&self.dir, &self.segments, next_index)?;
        self.segments = vec![Segment {
            first_index: next_index,
            len: 0,
        }];
        self.first_index = next_index;
        self.offsets.clear();
        self.dir_unsynced = false;
        Ok(())
    }

    /// Discards entries `from..`, durably, before the caller writes their replacements.
    ///
    /// Later segments go first, newest first, each deletion fsynced before the next
    /// (directory changes are not promised to reach the disk in order), so a crash
    /// part-way leaves a shorter but gap-free log. The truncation is fsynced at once,
    /// not at the next `sync`: if it were lost while the new records survived, old
    /// entries of an older term would reappear behind them and form a log no leader
    /// ever sent.
    fn truncate_from(&mut self, from: Index) -> Result<()> {
        let pos = self.segments.partition_point(|s| s.first_index <= from) - 1;
        let keep = self.offsets[(from - self.first_index) as usize];
        if pos + 1 < self.segments.len() {
            while self.segments.len() > pos + 1 {
                if let Some(seg) = self.segments.pop() {
                    remove_segment(&self.dir, seg.first_index)?;
                    sync_dir(&self.dir)?;
                }
            }
            self.dir_unsynced = false;
            let path = self.current_path();
            self.file = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
        }
        let path = self.current_path();
        let ctx = |what: &str| format!("cannot {what} {}", path.display());
        self.file
            .set_len(keep)
            .map_err(|e| Error::io(ctx("truncate"), e))?;
        self.file
            .seek(SeekFrom::Start(keep))
            .map_err(|e| Error::io(ctx("seek"), e))?;
        self.file
            .sync_data()
            .map_err(|e| Error::io(ctx("fdatasync"), e))?;
        self.unsynced = false;
        self.segments[pos].len = keep;
        self.offsets.truncate((from - self.first_index) as usize);
        Ok(())
    }

    /// fdatasyncs the current segment if anything was written since the last sync.
    fn sync_segment(&mut self) -> Result<()> {
        if self.unsynced {
            self.file.sync_data().map_err(|e| {
                Error::io(
                    format!("cannot fdatasync {}", self.current_path().display()),
                    e,
                )
            })?;
            self.unsynced = false;
        }
        Ok(())
    }

    /// Starts a new segment for entries from `first_index` on.
    ///
    /// The full segment is fsynced first, so a segment file exists only if everything
    /// before it is complete on disk. That is what lets recovery treat any damage
    /// outside the last segment as real corruption instead of a torn write.
    fn rotate(&mut self, first_index: Index) -> Result<()> {
        self.sync_segment()?;
        self.file = create_segment(&self.dir, first_index)?;
        self.segments.push(Segment {
            first_index,
            len: 0,
        });
        self.dir_unsynced = true;
        Ok(())
    }

    fn current(&self) -> &Segment {
        &self.segments[self.segments.len() - 1]
    }

    fn current_path(&self) -> PathBuf {
        self.dir.join(segment_name(self.current().first_index))
    }
}

/// Deletes every segment in `segments` and starts an empty one named `next_index`.
///
/// All deletions are made durable (directory fsync) before the new segment is
/// created, and the new one is durable before this returns. A crash therefore leaves
/// some subset of the old segments and no new one, which recovery, seeing the
/// snapshot the caller made durable first, either keeps as the old log or replaces
/// (it ends before the snapshot or conflicts with it); or no old segment and perhaps
/// the new empty one, which is the new log. Never a mix of old and new.
fn restart(dir: &Path, segments: &[Segment], next_index: Index) -> Result<File> {
    for seg in segments.iter().rev() {
        remove_segment(dir, seg.first_index)?;
    }
    sync_dir(dir)?;
    let file = create_segment(dir, next_index)?;
    sync_dir(dir)?;
    Ok(file)
}

fn remove_segment(dir: &Path, first_index: Index) -> Result<()> {
    let path = dir.join(segment_name(first_index));
    fs::remove_file(&path).map_err(|e| Error::io(format!("cannot delete {}", path.display()), e))
}

/// `create_new` because an existing file with this name would mean our bookkeeping
/// is wrong, and overwriting it could destroy entries.
fn create_segment(dir: &Path, first_index: Index) -> Result<File> {
    let path = dir.join(segment_name(first_index));
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| Error::io(format!("cannot create {}", path.display()), e))
}
