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
    atomic_file::sync_dir,
    frame::{self, Decoded},
};
use crate::{
    error::{Error, Result},
    raft::{Entry, Index},
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
#[derive(Debug)]
struct Segment {
    first_index: Index,
    len: u64,
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
#[derive(Debug)]
pub(crate) struct Scan {
    dir: PathBuf,
    segments: Vec<Segment>,
    offsets: Vec<u64>,
    cut: Option<Cut>,
}

impl Scan {
    /// Reads and checks every segment under `wal_dir` (absent = empty log) without
    /// modifying anything; returns the scan and all intact entries.
    pub(crate) fn read(wal_dir: &Path) -> Result<(Scan, Vec<Entry>)> {
        let mut scan = Scan {
            dir: wal_dir.to_path_buf(),
            segments: Vec::new(),
            offsets: Vec::new(),
            cut: None,
        };
        let mut entries = Vec::new();
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
            let expected = entries.len() as Index + 1;
            if first_index != expected {
                // A gap means a lost segment or a stray file; either way entries are
                // missing from the middle, which no crash of ours can produce.
                return Err(corrupt(
                    0,
                    format!(
                        "segment should start at index {expected} (the log before it ends at {})",
                        expected - 1
                    ),
                ));
            }
            bytes.clear();
            File::open(&path)
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;

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
                        let want = entries.len() as Index + 1;
                        if entry.index != want {
                            return Err(corrupt(
                                at,
                                format!("record holds index {}, expected {want}", entry.index),
                            ));
                        }
                        scan.offsets.push(at as u64);
                        entries.push(entry);
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
            scan.segments.push(Segment {
                first_index,
                len: at as u64,
            });
        }
        Ok((scan, entries))
    }
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

/// The open log. Invariants: `segments` is never empty, the first starts at index 1,
/// each starts where the previous ends, `offsets[i]` is the byte offset of entry
/// `i + 1` inside its segment, and `file` is the last segment positioned at its end.
#[derive(Debug)]
pub(crate) struct Wal {
    dir: PathBuf,
    segment_bytes: u64,
    segments: Vec<Segment>,
    offsets: Vec<u64>,
    file: File,
    buf: Vec<u8>,
    /// `file` has writes not yet covered by an fdatasync.
    unsynced: bool,
    /// A segment was created since the directory was last fsynced.
    dir_unsynced: bool,
}

impl Wal {
    /// Applies what recovery decided (cutting a torn tail, creating the first segment
    /// of a fresh log) and opens the last segment for appending.
    pub(crate) fn open(scan: Scan, segment_bytes: u64, notes: &mut Vec<String>) -> Result<Wal> {
        let Scan {
            dir,
            mut segments,
            offsets,
            cut,
        } = scan;
        if !dir.exists() {
            fs::create_dir(&dir)
                .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
            if let Some(parent) = dir.parent() {
                sync_dir(parent)?;
            }
        }
        let file = match segments.last_mut() {
            None => {
                let file = create_segment(&dir, 1)?;
                sync_dir(&dir)?;
                segments.push(Segment {
                    first_index: 1,
                    len: 0,
                });
                file
            }
            Some(last) => {
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
            }
        };
        notes.push(match offsets.len() {
            0 => format!("log is empty ({} segment)", segments.len()),
            n => format!("log holds entries 1..={n} in {} segment(s)", segments.len()),
        });
        Ok(Wal {
            dir,
            segment_bytes: segment_bytes.max(1),
            segments,
            offsets,
            file,
            buf: Vec::new(),
            unsynced: false,
            dir_unsynced: false,
        })
    }

    /// Index of the last entry, 0 if the log is empty.
    pub(crate) fn last_index(&self) -> Index {
        self.offsets.len() as Index
    }

    /// Appends `entries`, which the caller has checked are non-empty, consecutive and
    /// start at most one past the end; anything stored from `entries[0].index` on is
    /// discarded first.
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

    /// Discards entries `from..`, durably, before the caller writes their replacements.
    ///
    /// Later segments go first, newest first, so a crash part-way leaves a shorter but
    /// gap-free log. The truncation is fsynced at once, not at the next `sync`: if it
    /// were lost while the new records survived, old entries of an older term would
    /// reappear behind them and form a log no leader ever sent.
    fn truncate_from(&mut self, from: Index) -> Result<()> {
        let pos = self.segments.partition_point(|s| s.first_index <= from) - 1;
        let keep = self.offsets[(from - 1) as usize];
        if pos + 1 < self.segments.len() {
            while self.segments.len() > pos + 1 {
                if let Some(seg) = self.segments.pop() {
                    let path = self.dir.join(segment_name(seg.first_index));
                    fs::remove_file(&path)
                        .map_err(|e| Error::io(format!("cannot delete {}", path.display()), e))?;
                }
            }
            sync_dir(&self.dir)?;
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
        self.offsets.truncate((from - 1) as usize);
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
