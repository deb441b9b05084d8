//! The data-directory lock: one `Storage` per directory, across processes and within one.

use std::{
    fs::{File, OpenOptions, TryLockError},
    path::Path,
};

use crate::error::{Error, Result};

/// Name of the lock file inside the data directory. It holds no data; only the lock
/// on it matters, so a stale file left by a dead process is harmless.
pub(crate) const LOCK_FILE: &str = "LOCK";

/// An exclusive lock on a data directory, released when dropped (or when the
/// process dies, which is why an OS file lock beats a pid file).
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the lock or fails at once with [`Error::Locked`]; waiting would only hide
    /// the mistake of starting two nodes on one directory.
    ///
    /// The lock belongs to the open file description, not the process, so a second
    /// `Storage::open` of the same directory inside this process is refused too.
    pub(crate) fn acquire(dir: &Path) -> Result<DirLock> {
        let path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(format!("cannot open lock file {}", path.display()), e))?;
        match file.try_lock() {
            Ok(()) => Ok(DirLock { _file: file }),
            Err(TryLockError::WouldBlock) => Err(Error::Locked(dir.to_path_buf())),
            Err(TryLockError::Error(e)) => {
                Err(Error::io(format!("cannot lock {}", path.display()), e))
            }
        }
    }
}
