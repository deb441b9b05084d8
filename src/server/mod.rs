//! The threaded runtime of one node.
//!
//! PLACEHOLDER in the `client` branch: only the interface the CLI calls. The real
//! server replaces this file at merge.

use std::path::PathBuf;

use crate::error::{Error, Result};

/// Everything `raftkv node` passes to [`run`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeOptions {
    /// This node's id in the cluster file.
    pub id: u64,
    /// The cluster file (PROTOCOL.md §2).
    pub cluster: PathBuf,
    /// Where this node keeps its log, hard state and snapshots.
    pub data_dir: PathBuf,
    /// The lowest level of log line written to stderr: error, warn, info, debug or trace.
    pub log_level: String,
    /// Milliseconds per Raft tick.
    pub tick_ms: u64,
    /// Longest request line accepted from a client, in bytes.
    pub max_line_bytes: usize,
}

/// Runs one node in the foreground until SIGINT/SIGTERM.
pub fn run(options: NodeOptions) -> Result<()> {
    let _ = options;
    Err(Error::Config("server not built in this branch".into()))
}
