//! Small files replaced atomically: the hard state and the membership.
//!
//! The whole content is one framed record (see `frame`), so a reader can tell an
//! intact file from a damaged one. Replacement goes through `<name>.tmp`: write,
//! fsync, rename over `<name>`, fsync the directory. `rename` is atomic, so after a
//! crash `<name>` is either the old or the new version, never a mix; what a crash can
//! leave behind is a half-written `<name>.tmp`, which is never read and is removed on
//! the next open.

use std::{
    fs::{self, File},
    io::{self, Write},
    path::{Path, PathBuf},
};

use serde::{de::DeserializeOwned, Serialize};

use super::frame::{self, Decoded};
use crate::error::{Error, Result};

/// Reads `<dir>/<name>`; `None` if it does not exist yet.
///
/// Damage is an error rather than "absent": silently forgetting a vote could let this
/// node vote twice in one term.
pub(crate) fn load<T: DeserializeOwned>(dir: &Path, name: &str) -> Result<Option<T>> {
    let path = dir.join(name);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("cannot read {}", path.display()), e)),
    };
    let corrupt = |offset: usize, reason: String| Error::Corrupt {
        file: path.clone(),
        offset: offset as u64,
        reason,
    };
    match frame::decode(&bytes, 0) {
        Decoded::End => Err(corrupt(0, "file is empty".into())),
        Decoded::Bad { reason } => Err(corrupt(0, reason)),
        Decoded::Record { next, .. } if next != bytes.len() => Err(corrupt(
            next,
            format!("{} unexpected bytes after the record", bytes.len() - next),
        )),
        Decoded::Record { payload, .. } => serde_json::from_slice(payload).map(Some).map_err(|e| {
            corrupt(
                frame::HEADER_LEN,
                format!("checksum matches but content is invalid: {e}"),
            )
        }),
    }
}

/// Durably replaces `<dir>/<name>` with `value`; when this returns `Ok`, a crash at any
/// later moment still finds `value`.
pub(crate) fn store<T: Serialize>(dir: &Path, name: &str, value: &T) -> Result<()> {
    let path = dir.join(name);
    let tmp = tmp_path(dir, name);
    let mut buf = Vec::with_capacity(256);
    frame::encode(&mut buf, value)
        .map_err(|e| Error::io(format!("cannot encode {}", path.display()), e))?;
    let ctx = |what: &str| format!("cannot {what} {}", tmp.display());
    let mut file = File::create(&tmp).map_err(|e| Error::io(ctx("create"), e))?;
    file.write_all(&buf)
        .map_err(|e| Error::io(ctx("write"), e))?;
    file.sync_all().map_err(|e| Error::io(ctx("fsync"), e))?;
    drop(file);
    fs::rename(&tmp, &path).map_err(|e| {
        Error::io(
            format!("cannot rename {} to {}", tmp.display(), path.display()),
            e,
        )
    })?;
    // Without this the rename itself may be lost in a crash, bringing back the old value.
    sync_dir(dir)
}

/// Removes a `<name>.tmp` left by a crash in the middle of [`store`]; true if there was one.
pub(crate) fn remove_leftover(dir: &Path, name: &str) -> Result<bool> {
    let tmp = tmp_path(dir, name);
    match fs::remove_file(&tmp) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(format!("cannot remove {}", tmp.display()), e)),
    }
}

/// Makes creations, renames and deletions of entries in `dir` durable. File fsync
/// covers a file's content, not the directory entry that names it.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(format!("cannot fsync directory {}", dir.display()), e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// fsyncs the content of the file at `path`, for data another process wrote and we
/// are about to rely on. A read-only descriptor suffices: fsync covers the file, not
/// the descriptor it is called through.
pub(crate) fn sync_file(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(format!("cannot fsync {}", path.display()), e))
}

/// Like [`sync_file`] for `<dir>/<name>`, doing nothing when it does not exist.
pub(crate) fn sync_if_present(dir: &Path, name: &str) -> Result<()> {
    let path = dir.join(name);
    match File::open(&path) {
        Ok(f) => f
            .sync_all()
            .map_err(|e| Error::io(format!("cannot fsync {}", path.display()), e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("cannot open {}", path.display()), e)),
    }
}

fn tmp_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.tmp"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_then_load_and_replace() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load::<Vec<u32>>(dir.path(), "f").unwrap(), None);
        store(dir.path(), "f", &vec![1u32, 2]).unwrap();
        store(dir.path(), "f", &vec![3u32]).unwrap();
        assert_eq!(load::<Vec<u32>>(dir.path(), "f").unwrap(), Some(vec![3]));
        assert!(!dir.path().join("f.tmp").exists());
    }

    #[test]
    fn damaged_files_are_corrupt_with_their_name() {
        let dir = tempfile::tempdir().unwrap();
        store(dir.path(), "f", &vec![1u32, 2]).unwrap();
        let path = dir.path().join("f");
        let good = fs::read(&path).unwrap();
        let mut flipped = good.clone();
        flipped[frame::HEADER_LEN] ^= 0x20;
        let mut longer = good.clone();
        longer.push(0);
        for bad in [Vec::new(), good[..good.len() - 1].to_vec(), flipped, longer] {
            fs::write(&path, &bad).unwrap();
            match load::<Vec<u32>>(dir.path(), "f") {
                Err(Error::Corrupt { file, .. }) => assert_eq!(file, path),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }
}
