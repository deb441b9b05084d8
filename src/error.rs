//! The crate's one error type.

use std::{fmt, io, path::PathBuf};

/// Everything that can go wrong outside the pure Raft core.
#[derive(Debug)]
pub enum Error {
    /// An I/O call failed; `context` says what we were doing.
    Io { context: String, source: io::Error },
    /// Data on disk is damaged in a way recovery must not paper over.
    Corrupt {
        file: PathBuf,
        offset: u64,
        reason: String,
    },
    /// Another process holds the data directory.
    Locked(PathBuf),
    /// A cluster file or command-line setting is invalid.
    Config(String),
    /// A peer or server spoke something other than the protocol.
    Protocol(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io(context: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { context, source } => write!(f, "{context}: {source}"),
            Error::Corrupt {
                file,
                offset,
                reason,
            } => {
                write!(
                    f,
                    "corrupt data in {} at byte offset {offset}: {reason}",
                    file.display()
                )
            }
            Error::Locked(dir) => write!(
                f,
                "data directory {} is in use by another raftkv process",
                dir.display()
            ),
            Error::Config(msg) => write!(f, "{msg}"),
            Error::Protocol(msg) => write!(f, "protocol error: {msg}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
