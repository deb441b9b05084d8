//! Snapshot files: written whole by a background thread, read at recovery, and moved
//! between nodes in chunks.
//!
//! # Format
//!
//! ```text
//! offset   size  field
//!      0      8  magic "RKVSNAP\0"
//!      8      4  format version, u32 LE (1)
//!     12      8  index of the last entry the snapshot includes, u64 LE
//!     20      8  that entry's term, u64 LE
//!     28      n  body: the state machine's bytes, opaque here
//! 28 + n      8  n, u64 LE
//! 36 + n      4  CRC32 of every byte before it, u32 LE
//! ```
//!
//! The body length sits after the body so a writer can stream a body whose size it
//! does not know in advance. A reader knows `n` from the file size and compares it
//! with the stored one, so a truncated or extended file is refused even before the
//! checksum is compared; the checksum then covers everything else.
//!
//! # Names
//!
//! `<index>-<term>.snap`, both zero-padded to 20 digits so names sort like log
//! positions. Being written: `<index>-<term>.snap.tmp`, renamed into place once
//! complete and fsynced. Being received from a leader:
//! `<index>-<term>-<leader term>.partial`, renamed into place once its checksum
//! verifies. Set aside by recovery: `<index>-<term>.snap.damaged`. Only `.snap` names
//! count as snapshots.
//!
//! # Transfer
//!
//! What travels is the file itself, byte for byte: [`SnapshotSource`] reads it by
//! offset on the leader, [`IncomingSnapshot`] writes it by offset on the follower,
//! and the follower checks the same checksum the leader's disk was checked with, so
//! damage anywhere on the way is caught at [`IncomingSnapshot::finish`].
//!
//! # Threads
//!
//! [`SnapshotStore`] is a path, cheap to clone and `Send`: the state thread keeps
//! `Storage`, a background thread writes snapshots, replicators read them and peer
//! readers receive them, all at once. Files are only ever created under temporary
//! names and renamed into place, and an open file keeps its content after being
//! deleted, so a reader never sees half a snapshot. The one shared decision, which
//! snapshots to keep, is made after every new one (the newest two by log position
//! stay) and is safe to race: each pruner deletes only what is older than two
//! snapshots it has seen.

use std::{
    fmt,
    fs::{self, File, OpenOptions},
    io::{self, BufWriter, Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
};

use super::atomic_file::sync_dir;
use crate::{
    error::{Error, Result},
    raft::{SnapshotMeta, Term},
};

/// Name of the snapshot directory inside the data directory.
pub(crate) const SNAPSHOT_DIR: &str = "snapshots";

const MAGIC: [u8; 8] = *b"RKVSNAP\0";
const VERSION: u32 = 1;
/// Magic, version, index, term.
const HEADER_LEN: usize = 28;
/// Body length, checksum.
const TRAILER_LEN: usize = 12;
/// Every byte of a snapshot file that is not body.
const OVERHEAD: u64 = (HEADER_LEN + TRAILER_LEN) as u64;

const SUFFIX: &str = ".snap";
const TMP_SUFFIX: &str = ".snap.tmp";
const PARTIAL_SUFFIX: &str = ".partial";
const DAMAGED_SUFFIX: &str = ".damaged";
/// Digits of each number in a name: enough for any u64.
const NAME_DIGITS: usize = 20;

/// How many snapshots are kept; the older one is recovery's fallback.
const KEEP: usize = 2;
/// Read and write buffer size for streaming a body.
const IO_CHUNK: usize = 1 << 20;

/// A snapshot as stored: the log position it covers and the state machine's bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredSnapshot {
    /// The last log entry the snapshot includes.
    pub meta: SnapshotMeta,
    /// The serialized state machine, exactly as it was written.
    pub body: Vec<u8>,
}

impl fmt::Debug for StoredSnapshot {
    /// The position and the body's size; the body itself can be 100 MB.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "StoredSnapshot {{ {}@{}, {} body bytes }}",
            self.meta.index,
            self.meta.term,
            self.body.len()
        )
    }
}

/// `00000000000000000042-00000000000000000003.snap` for the snapshot ending at 42@3.
pub(crate) fn file_name(meta: SnapshotMeta) -> String {
    format!(
        "{:0NAME_DIGITS$}-{:0NAME_DIGITS$}{SUFFIX}",
        meta.index, meta.term
    )
}

fn partial_name(meta: SnapshotMeta, leader_term: Term) -> String {
    format!(
        "{:0NAME_DIGITS$}-{:0NAME_DIGITS$}-{leader_term:0NAME_DIGITS$}{PARTIAL_SUFFIX}",
        meta.index, meta.term
    )
}

fn parse_name(name: &str) -> Option<SnapshotMeta> {
    let (index, term) = name.strip_suffix(SUFFIX)?.split_once('-')?;
    Some(SnapshotMeta {
        index: parse_number(index)?,
        term: parse_number(term)?,
    })
}

fn parse_number(digits: &str) -> Option<u64> {
    if digits.len() != NAME_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn header(meta: SnapshotMeta) -> [u8; HEADER_LEN] {
    let mut h = [0; HEADER_LEN];
    h[..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[12..20].copy_from_slice(&meta.index.to_le_bytes());
    h[20..28].copy_from_slice(&meta.term.to_le_bytes());
    h
}

/// The snapshots stored in `dir` (absent = none), oldest first, and the names ending
/// in `.snap` that are not snapshot names.
pub(crate) fn list(dir: &Path) -> Result<(Vec<SnapshotMeta>, Vec<String>)> {
    let ctx = || format!("cannot list {}", dir.display());
    let listing = match fs::read_dir(dir) {
        Ok(listing) => listing,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
        Err(e) => return Err(Error::io(ctx(), e)),
    };
    let mut metas = Vec::new();
    let mut malformed = Vec::new();
    for item in listing {
        let name = item.map_err(|e| Error::io(ctx(), e))?.file_name();
        let name = name.to_string_lossy();
        if !name.ends_with(SUFFIX) {
            continue;
        }
        match parse_name(&name) {
            Some(meta) => metas.push(meta),
            None => malformed.push(name.into_owned()),
        }
    }
    metas.sort_unstable_by_key(|m| (m.index, m.term));
    Ok((metas, malformed))
}

/// The names in `dir` ending in `suffix`.
fn names_ending(dir: &Path, suffix: &str) -> Result<Vec<String>> {
    let ctx = || format!("cannot list {}", dir.display());
    let listing = match fs::read_dir(dir) {
        Ok(listing) => listing,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(ctx(), e)),
    };
    let mut names = Vec::new();
    for item in listing {
        let name = item.map_err(|e| Error::io(ctx(), e))?.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(suffix) {
            names.push(name.into_owned());
        }
    }
    names.sort_unstable();
    Ok(names)
}

/// Reads and verifies the stored snapshot `meta` in `dir`.
pub(crate) fn read(dir: &Path, meta: SnapshotMeta) -> Result<StoredSnapshot> {
    let path = dir.join(file_name(meta));
    let mut file =
        File::open(&path).map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
    let body = verify(&mut file, &path, meta, true)?;
    Ok(StoredSnapshot { meta, body })
}

/// Reads `file` (the snapshot file at `path`, which must hold `meta`) from its start
/// to its end and checks everything: size, magic, version, position, body length
/// and checksum. Returns the body if `keep_body`, else an empty vector (the body is
/// then streamed through the checksum in small pieces).
///
/// Every number read from the file is checked against the file's real size before it
/// is used, so damage gives [`Error::Corrupt`] naming `path`, never a panic or a huge
/// allocation.
fn verify(file: &mut File, path: &Path, meta: SnapshotMeta, keep_body: bool) -> Result<Vec<u8>> {
    let corrupt = |offset: u64, reason: String| Error::Corrupt {
        file: path.to_path_buf(),
        offset,
        reason,
    };
    let size = file
        .metadata()
        .map_err(|e| Error::io(format!("cannot stat {}", path.display()), e))?
        .len();
    if size < OVERHEAD {
        return Err(corrupt(
            0,
            format!(
                "{size} bytes is too short for a snapshot (header and trailer take {OVERHEAD})"
            ),
        ));
    }
    let body_len = size - OVERHEAD;
    let mut head = [0; HEADER_LEN];
    read_exact(file, &mut head, path)?;
    if head[..8] != MAGIC {
        return Err(corrupt(0, "not a snapshot file (wrong magic bytes)".into()));
    }
    let version = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
    if version != VERSION {
        return Err(corrupt(
            8,
            format!("format version {version}; this build reads version {VERSION}"),
        ));
    }
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&head);

    let mut body = Vec::new();
    if keep_body {
        let n = usize::try_from(body_len)
            .map_err(|_| corrupt(HEADER_LEN as u64, format!("{body_len}-byte body")))?;
        body.try_reserve_exact(n).map_err(|e| {
            Error::io(
                format!("cannot hold the {n}-byte body of {}", path.display()),
                io::Error::new(io::ErrorKind::OutOfMemory, e.to_string()),
            )
        })?;
        // `take` + `read_to_end` fills the reserved space without zeroing it first.
        Read::by_ref(file)
            .take(body_len)
            .read_to_end(&mut body)
            .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
        if body.len() != n {
            return Err(Error::io(
                format!("file shrank while being read: {}", path.display()),
                io::ErrorKind::UnexpectedEof.into(),
            ));
        }
        hasher.update(&body);
    } else {
        let mut buf = vec![0; (IO_CHUNK as u64).min(body_len) as usize];
        let mut left = body_len;
        while left > 0 {
            let n = (buf.len() as u64).min(left) as usize;
            read_exact(file, &mut buf[..n], path)?;
            hasher.update(&buf[..n]);
            left -= n as u64;
        }
    }

    let mut tail = [0; TRAILER_LEN];
    read_exact(file, &mut tail, path)?;
    let mut stored_len = [0; 8];
    stored_len.copy_from_slice(&tail[..8]);
    let stored_len = u64::from_le_bytes(stored_len);
    if stored_len != body_len {
        return Err(corrupt(
            size - TRAILER_LEN as u64,
            format!(
                "the trailer records a {stored_len}-byte body but the file holds \
                 {body_len} body bytes: truncated, extended or damaged"
            ),
        ));
    }
    hasher.update(&tail[..8]);
    let stored_crc = u32::from_le_bytes([tail[8], tail[9], tail[10], tail[11]]);
    let actual = hasher.finalize();
    if stored_crc != actual {
        return Err(corrupt(
            size - 4,
            format!("checksum mismatch (stored {stored_crc:08x}, computed {actual:08x})"),
        ));
    }
    let mut number = [0; 8];
    number.copy_from_slice(&head[12..20]);
    let index = u64::from_le_bytes(number);
    number.copy_from_slice(&head[20..28]);
    let term = u64::from_le_bytes(number);
    if (index, term) != (meta.index, meta.term) {
        return Err(corrupt(
            12,
            format!(
                "the file holds the snapshot {index}@{term}, not {}@{} as its name says",
                meta.index, meta.term
            ),
        ));
    }
    Ok(body)
}

/// `read_exact` with our error: running short means the file changed under us,
/// since its size was checked first.
fn read_exact(file: &mut File, buf: &mut [u8], path: &Path) -> Result<()> {
    file.read_exact(buf).map_err(|e| {
        let what = if e.kind() == io::ErrorKind::UnexpectedEof {
            "file shrank while being read"
        } else {
            "cannot read"
        };
        Error::io(format!("{what}: {}", path.display()), e)
    })
}

/// Removes `*.snap.tmp` files in `dir` left by writes a crash interrupted; returns
/// their names. Only for recovery: at run time a `.tmp` may be a write in progress.
pub(crate) fn remove_leftovers(dir: &Path) -> Result<Vec<String>> {
    let names = names_ending(dir, TMP_SUFFIX)?;
    for name in &names {
        let path = dir.join(name);
        fs::remove_file(&path)
            .map_err(|e| Error::io(format!("cannot remove {}", path.display()), e))?;
    }
    if !names.is_empty() {
        sync_dir(dir)?;
    }
    Ok(names)
}

/// Renames the damaged snapshot `meta` to `<name>.damaged`, out of every listing but
/// kept for an operator; returns the new name. The directory is not fsynced here.
pub(crate) fn set_aside(dir: &Path, meta: SnapshotMeta) -> Result<String> {
    let name = file_name(meta);
    let aside = format!("{name}{DAMAGED_SUFFIX}");
    fs::rename(dir.join(&name), dir.join(&aside)).map_err(|e| {
        Error::io(
            format!("cannot rename {name} to {aside} in {}", dir.display()),
            e,
        )
    })?;
    Ok(aside)
}

/// Deletes all but the newest [`KEEP`] snapshots in `dir`.
///
/// Best effort: a snapshot that could not be deleted costs only disk space and goes
/// on the next call, and a failure here must not make the caller believe the new
/// snapshot, already durable, was not stored.
fn prune(dir: &Path) {
    let Ok((metas, _)) = list(dir) else {
        return;
    };
    if metas.len() <= KEEP {
        return;
    }
    for meta in &metas[..metas.len() - KEEP] {
        let _ = fs::remove_file(dir.join(file_name(*meta)));
    }
    let _ = sync_dir(dir);
}

/// Renames a complete, fsynced file into place as snapshot `meta`, makes the name
/// durable and prunes old snapshots.
fn install(dir: &Path, from: &Path, meta: SnapshotMeta) -> Result<()> {
    let to = dir.join(file_name(meta));
    fs::rename(from, &to).map_err(|e| {
        Error::io(
            format!("cannot rename {} to {}", from.display(), to.display()),
            e,
        )
    })?;
    // Without this the rename may be lost in a crash, and with it the snapshot that
    // the caller is about to compact the log behind.
    sync_dir(dir)?;
    prune(dir);
    Ok(())
}

fn misuse(context: String, msg: String) -> Error {
    Error::io(context, io::Error::new(io::ErrorKind::InvalidInput, msg))
}

/// A handle on the `snapshots/` directory of an open data directory, for threads
/// other than the one that owns `Storage`; get one from `Storage::snapshot_store`.
/// Cheap to clone and `Send`: it holds only the path.
#[derive(Clone, Debug)]
pub struct SnapshotStore {
    dir: PathBuf,
}

impl SnapshotStore {
    pub(crate) fn new(dir: PathBuf) -> SnapshotStore {
        SnapshotStore { dir }
    }

    /// The `snapshots/` directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The positions of the stored snapshots, oldest first.
    pub fn list(&self) -> Result<Vec<SnapshotMeta>> {
        Ok(list(&self.dir)?.0)
    }

    /// Stores a snapshot durably: see [`SnapshotStore::create`], which this is a
    /// shorthand for when the body is already in memory.
    pub fn write(&self, meta: SnapshotMeta, body: &[u8]) -> Result<()> {
        let mut writer = self.create(meta)?;
        writer
            .write_all(body)
            .map_err(|e| Error::io(format!("cannot write {}", writer.tmp.display()), e))?;
        writer.finish()
    }

    /// Starts writing the snapshot `meta`: the body goes through the returned
    /// [`SnapshotWriter`] (an `io::Write`, so a state machine can serialize straight
    /// into it, with no copy of the body in memory), then
    /// [`SnapshotWriter::finish`] makes it durable.
    pub fn create(&self, meta: SnapshotMeta) -> Result<SnapshotWriter> {
        let tmp = self.dir.join(format!(
            "{}{}",
            file_name(meta).trim_end_matches(SUFFIX),
            TMP_SUFFIX
        ));
        let file = File::create(&tmp)
            .map_err(|e| Error::io(format!("cannot create {}", tmp.display()), e))?;
        let mut writer = SnapshotWriter {
            dir: self.dir.clone(),
            meta,
            tmp,
            out: Some(BufWriter::with_capacity(IO_CHUNK, file)),
            hasher: crc32fast::Hasher::new(),
            body_len: 0,
        };
        let head = header(meta);
        writer.hasher.update(&head);
        if let Some(out) = writer.out.as_mut() {
            out.write_all(&head)
                .map_err(|e| Error::io(format!("cannot write {}", writer.tmp.display()), e))?;
        }
        Ok(writer)
    }

    /// Reads and verifies the stored snapshot `meta`.
    pub fn load(&self, meta: SnapshotMeta) -> Result<StoredSnapshot> {
        read(&self.dir, meta)
    }

    /// Opens the stored snapshot `meta` for sending in chunks, after checking its
    /// whole content (one streaming read; a damaged file is refused here with
    /// [`Error::Corrupt`] instead of being shipped). The open file stays readable
    /// even if a newer snapshot prunes it meanwhile.
    pub fn open_source(&self, meta: SnapshotMeta) -> Result<SnapshotSource> {
        let path = self.dir.join(file_name(meta));
        let mut file = File::open(&path)
            .map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
        verify(&mut file, &path, meta, false)?;
        let size = file
            .metadata()
            .map_err(|e| Error::io(format!("cannot stat {}", path.display()), e))?
            .len();
        Ok(SnapshotSource {
            meta,
            path,
            file,
            size,
        })
    }

    /// Starts, or resumes, receiving the snapshot `meta` from the leader of
    /// `leader_term`. The partial file of any other transfer (another position or
    /// another leader, whose bytes could differ) is deleted. A partial file of this
    /// transfer is kept if it starts with the header `meta` calls for, and
    /// [`IncomingSnapshot::offset`] says where the leader should continue.
    ///
    /// The kept length is fsynced before it is reported. After a power loss it may
    /// still include pages the previous process wrote but never synced; such
    /// garbage is caught by the checksum at [`IncomingSnapshot::finish`], which then
    /// discards the file, and the transfer starts over.
    pub fn receive(&self, meta: SnapshotMeta, leader_term: Term) -> Result<IncomingSnapshot> {
        let name = partial_name(meta, leader_term);
        let mut dir_changed = false;
        for other in names_ending(&self.dir, PARTIAL_SUFFIX)? {
            if other != name {
                let path = self.dir.join(&other);
                fs::remove_file(&path)
                    .map_err(|e| Error::io(format!("cannot remove {}", path.display()), e))?;
                dir_changed = true;
            }
        }
        let path = self.dir.join(&name);
        let ctx = |what: &str| format!("cannot {what} {}", path.display());
        let (mut file, created) = match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(file) => (file, true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .map_err(|e| Error::io(ctx("open"), e))?;
                (file, false)
            }
            Err(e) => return Err(Error::io(ctx("create"), e)),
        };
        let mut len = file
            .metadata()
            .map_err(|e| Error::io(ctx("stat"), e))?
            .len();
        let expected = header(meta);
        let n = len.min(HEADER_LEN as u64) as usize;
        let mut got = [0; HEADER_LEN];
        file.read_exact(&mut got[..n])
            .map_err(|e| Error::io(ctx("read"), e))?;
        if got[..n] != expected[..n] {
            file.set_len(0).map_err(|e| Error::io(ctx("truncate"), e))?;
            len = 0;
        }
        file.seek(SeekFrom::Start(len))
            .map_err(|e| Error::io(ctx("seek"), e))?;
        file.sync_data()
            .map_err(|e| Error::io(ctx("fdatasync"), e))?;
        if created || dir_changed {
            sync_dir(&self.dir)?;
        }
        Ok(IncomingSnapshot {
            dir: self.dir.clone(),
            meta,
            leader_term,
            path,
            file,
            offset: len,
            poisoned: None,
        })
    }
}

/// A snapshot being written: an `io::Write` for the body, then
/// [`SnapshotWriter::finish`]. Dropped without `finish`, it deletes its temporary
/// file and no snapshot appears.
pub struct SnapshotWriter {
    dir: PathBuf,
    meta: SnapshotMeta,
    tmp: PathBuf,
    /// `None` once finished.
    out: Option<BufWriter<File>>,
    hasher: crc32fast::Hasher,
    body_len: u64,
}

impl SnapshotWriter {
    /// The position this snapshot covers.
    pub fn meta(&self) -> SnapshotMeta {
        self.meta
    }

    /// Completes the snapshot durably: writes the trailer, fsyncs the file, renames
    /// `<index>-<term>.snap.tmp` to `<index>-<term>.snap`, fsyncs the directory,
    /// then deletes all but the newest two snapshots. Once this returns `Ok` the
    /// snapshot survives any crash, and the log up to its index may be compacted.
    /// On failure the temporary file is removed and no snapshot appears.
    pub fn finish(mut self) -> Result<()> {
        let result = self.complete();
        if result.is_err() {
            self.out = None;
            let _ = fs::remove_file(&self.tmp);
        }
        result
    }

    fn complete(&mut self) -> Result<()> {
        let ctx = |what: &str| format!("cannot {what} {}", self.tmp.display());
        let Some(mut out) = self.out.take() else {
            return Err(misuse(ctx("finish"), "already finished".into()));
        };
        let len = self.body_len.to_le_bytes();
        self.hasher.update(&len);
        let crc = self.hasher.clone().finalize();
        out.write_all(&len)
            .and_then(|()| out.write_all(&crc.to_le_bytes()))
            .map_err(|e| Error::io(ctx("write"), e))?;
        let file = out
            .into_inner()
            .map_err(|e| Error::io(ctx("write"), e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(ctx("fsync"), e))?;
        drop(file);
        install(&self.dir, &self.tmp, self.meta)
    }
}

impl Write for SnapshotWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let out = self
            .out
            .as_mut()
            .ok_or_else(|| io::Error::other("snapshot writer already finished"))?;
        let n = out.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.body_len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.out.as_mut() {
            Some(out) => out.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

impl fmt::Debug for SnapshotWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshotWriter")
            .field("tmp", &self.tmp)
            .field("body_len", &self.body_len)
            .finish()
    }
}

/// A stored snapshot file opened for sending: read it by offset, in chunks of the
/// sender's choosing. The bytes are the whole file (header, body, trailer), which
/// the receiver writes at the same offsets into an [`IncomingSnapshot`].
#[derive(Debug)]
pub struct SnapshotSource {
    meta: SnapshotMeta,
    path: PathBuf,
    file: File,
    size: u64,
}

impl SnapshotSource {
    /// The position of the snapshot being sent.
    pub fn meta(&self) -> SnapshotMeta {
        self.meta
    }

    /// Total bytes to send: the file size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Up to `max_len` bytes from `offset`; fewer only at the end of the file, none
    /// at `offset == size()`. An offset past the end is an error, not a panic.
    pub fn read_chunk(&mut self, offset: u64, max_len: usize) -> Result<Vec<u8>> {
        if offset > self.size {
            return Err(misuse(
                format!("cannot read {}", self.path.display()),
                format!("offset {offset} is past the end ({} bytes)", self.size),
            ));
        }
        let n = (self.size - offset).min(max_len as u64) as usize;
        let mut chunk = vec![0; n];
        self.file
            .seek(SeekFrom::Start(offset))
            .map_err(|e| Error::io(format!("cannot seek in {}", self.path.display()), e))?;
        read_exact(&mut self.file, &mut chunk, &self.path)?;
        Ok(chunk)
    }
}

/// A snapshot being received from the leader, chunk by chunk, into a partial file
/// that survives dropped connections and restarts. Get one from
/// [`SnapshotStore::receive`].
#[derive(Debug)]
pub struct IncomingSnapshot {
    dir: PathBuf,
    meta: SnapshotMeta,
    leader_term: Term,
    path: PathBuf,
    /// Positioned at `offset`.
    file: File,
    offset: u64,
    /// Why the handle refuses further use, after a failed write or fsync.
    poisoned: Option<String>,
}

impl IncomingSnapshot {
    /// The position of the snapshot being received.
    pub fn meta(&self) -> SnapshotMeta {
        self.meta
    }

    /// The term of the leader sending it.
    pub fn leader_term(&self) -> Term {
        self.leader_term
    }

    /// Bytes durably stored: the next chunk must start at or before this offset, and
    /// a transfer resumed after a dropped connection starts here.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Stores `data`, which belongs at byte `offset` of the snapshot file, and
    /// fdatasyncs it before returning, so [`IncomingSnapshot::offset`] only ever
    /// counts durable bytes. (One fdatasync per chunk: chunks of a megabyte or so
    /// keep that cheap.)
    ///
    /// A chunk that starts past `offset()` would leave a hole and is refused (the
    /// sender should resume from `offset()`); bytes before `offset()`, resent after a
    /// lost reply, are skipped. Neither poisons the handle. A failed write or fsync
    /// does: after it, nothing written can be trusted, and the way on is a new
    /// [`SnapshotStore::receive`], whose partial file the final checksum guards.
    pub fn write_chunk(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        if let Some(first) = &self.poisoned {
            return Err(Error::io(
                format!(
                    "incoming snapshot {} refuses further writes after an earlier failure \
                     ({first}); start the transfer again",
                    self.path.display()
                ),
                io::Error::other("incoming snapshot poisoned"),
            ));
        }
        if offset > self.offset {
            return Err(misuse(
                format!("cannot store a snapshot chunk in {}", self.path.display()),
                format!(
                    "chunk starts at byte {offset} but only {} bytes are stored; resend from there",
                    self.offset
                ),
            ));
        }
        let skip = self.offset - offset;
        if skip >= data.len() as u64 {
            return Ok(());
        }
        let fresh = &data[skip as usize..];
        let ctx = |what: &str| format!("cannot {what} {}", self.path.display());
        let result = self
            .file
            .write_all(fresh)
            .map_err(|e| Error::io(ctx("write"), e))
            .and_then(|()| {
                self.file
                    .sync_data()
                    .map_err(|e| Error::io(ctx("fdatasync"), e))
            });
        if let Err(e) = result {
            self.poisoned = Some(e.to_string());
            return Err(e);
        }
        self.offset += fresh.len() as u64;
        Ok(())
    }

    /// Checks the received file (size, header, position, checksum), fsyncs it,
    /// renames it to `<index>-<term>.snap`, fsyncs the directory and prunes old
    /// snapshots; returns the snapshot. Once this returns `Ok` the snapshot is
    /// durable and the caller may reset or compact the log behind it.
    ///
    /// A file that fails the checks is deleted (the transfer must start over from
    /// byte 0) and refused with [`Error::Corrupt`] naming it.
    pub fn finish(mut self) -> Result<StoredSnapshot> {
        if self.poisoned.is_some() {
            return Err(Error::io(
                format!("cannot finish {}", self.path.display()),
                io::Error::other("an earlier write failed"),
            ));
        }
        self.file
            .seek(SeekFrom::Start(0))
            .map_err(|e| Error::io(format!("cannot seek in {}", self.path.display()), e))?;
        let body = match verify(&mut self.file, &self.path, self.meta, true) {
            Ok(body) => body,
            Err(e @ Error::Corrupt { .. }) => {
                drop(self.file);
                let _ = fs::remove_file(&self.path);
                let _ = sync_dir(&self.dir);
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        self.file
            .sync_all()
            .map_err(|e| Error::io(format!("cannot fsync {}", self.path.display()), e))?;
        drop(self.file);
        install(&self.dir, &self.path, self.meta)?;
        Ok(StoredSnapshot {
            meta: self.meta,
            body,
        })
    }
}
