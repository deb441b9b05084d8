//! The commands that go through the replicated log.

use serde::{Deserialize, Serialize};

/// Largest key accepted from clients, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// Largest value accepted from clients, in bytes.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;

/// A write request's identity for exactly-once application: the client's chosen name
/// and its increasing sequence number.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Session {
    pub client: String,
    pub seq: u64,
}

/// What a write does to its key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum WriteOp {
    Put { value: String },
    Append { value: String },
    Delete,
}

/// One replicated write. Reads never enter the log (they use ReadIndex).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Command {
    pub key: String,
    #[serde(flatten)]
    pub op: WriteOp,
    /// `None` for writes sent without `client`/`seq`: applied every time they commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<Session>,
}

impl Command {
    /// A fingerprint of what the write does (key, operation, value), the same on every
    /// node and every build: a retry carries the same fingerprint as its first attempt,
    /// another write under a reused `client`/`seq` almost surely does not. FNV-1a.
    pub fn fingerprint(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for &b in bytes {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        };
        let (tag, value) = match &self.op {
            WriteOp::Put { value } => (b'p', value.as_str()),
            WriteOp::Append { value } => (b'a', value.as_str()),
            WriteOp::Delete => (b'd', ""),
        };
        eat(&(self.key.len() as u64).to_le_bytes());
        eat(self.key.as_bytes());
        eat(&[tag]);
        eat(value.as_bytes());
        h
    }

    /// Approximate encoded size, used to cap the bytes in one AppendEntries message.
    pub fn approx_size(&self) -> usize {
        let value = match &self.op {
            WriteOp::Put { value } | WriteOp::Append { value } => value.len(),
            WriteOp::Delete => 0,
        };
        32 + self.key.len() + value + self.session.as_ref().map_or(0, |s| s.client.len() + 24)
    }
}

/// The result of applying a write, kept in the session table so a retry gets the
/// first attempt's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum WriteResult {
    Ok,
    /// The command's `seq` is older than the newest one applied for its client; the
    /// answer to that older request is no longer kept.
    StaleSeq {
        last_seq: u64,
    },
    /// The command reuses its client's newest `seq` for a different write: not a retry,
    /// so not applied (two processes are probably using the same client name).
    SeqReused {
        seq: u64,
    },
}
