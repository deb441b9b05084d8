//! The commands that go through the replicated log.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Largest key accepted from clients, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// Largest value accepted from clients, in bytes.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;

/// Whose session a write belongs to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SessionId {
    /// A session the cluster created for an explicit `register` (thesis §6.3): its
    /// number was handed out by the state machine, so a number the table does not hold
    /// is never a new client, only an expired (or foreign) one.
    Registered(u64),
    /// The implicit session of a `client` name chosen by the client (the older form):
    /// an unknown name is taken for a new client.
    Named(String),
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionId::Registered(n) => write!(f, "session {n}"),
            SessionId::Named(name) => write!(f, "client {name:?}"),
        }
    }
}

/// A write request's identity for exactly-once application: its session and the
/// session's increasing sequence number.
///
/// In the log it is `{"id":N,"seq":S}` (registered) or `{"client":"name","seq":S}` (a
/// named session, the only form before registration existed, so old logs still read).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "WireSession", into = "WireSession")]
pub struct Session {
    pub id: SessionId,
    pub seq: u64,
}

impl Session {
    /// A write of the registered session `id`.
    pub fn registered(id: u64, seq: u64) -> Session {
        Session {
            id: SessionId::Registered(id),
            seq,
        }
    }

    /// A write of the client named `client`.
    pub fn named(client: impl Into<String>, seq: u64) -> Session {
        Session {
            id: SessionId::Named(client.into()),
            seq,
        }
    }
}

/// How a [`Session`] is spelled in the log.
#[derive(Serialize, Deserialize)]
struct WireSession {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client: Option<String>,
    seq: u64,
}

impl TryFrom<WireSession> for Session {
    type Error = &'static str;

    fn try_from(w: WireSession) -> Result<Session, &'static str> {
        let id = match (w.id, w.client) {
            (Some(id), None) => SessionId::Registered(id),
            (None, Some(client)) => SessionId::Named(client),
            _ => return Err("a session has exactly one of \"id\" and \"client\""),
        };
        Ok(Session { id, seq: w.seq })
    }
}

impl From<Session> for WireSession {
    fn from(s: Session) -> WireSession {
        let (id, client) = match s.id {
            SessionId::Registered(id) => (Some(id), None),
            SessionId::Named(client) => (None, Some(client)),
        };
        WireSession {
            id,
            client,
            seq: s.seq,
        }
    }
}

/// What a command does.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum WriteOp {
    Put {
        value: String,
    },
    Append {
        value: String,
    },
    Delete,
    /// Opens a new registered session (its number is the result); touches no key (the
    /// command's key is empty).
    Register,
}

/// The session rules in force: when an idle session expires and how many may exist.
/// Part of the replicated state (the leader stamps its own rules on a command when
/// they differ from the state's, [`Stamp::sessions`]), so every replica applies the
/// same rules at the same index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SessionLimits {
    /// A session idle for this many milliseconds of cluster time is removed.
    pub timeout_ms: u64,
    /// At most this many sessions exist; beyond it the least recently active goes.
    pub max_sessions: u64,
}

impl SessionLimits {
    /// One hour.
    pub const DEFAULT_TIMEOUT_MS: u64 = 3_600_000;
    pub const DEFAULT_MAX_SESSIONS: u64 = 100_000;
}

impl Default for SessionLimits {
    fn default() -> SessionLimits {
        SessionLimits {
            timeout_ms: SessionLimits::DEFAULT_TIMEOUT_MS,
            max_sessions: SessionLimits::DEFAULT_MAX_SESSIONS,
        }
    }
}

/// What the leader adds to a client's command when it proposes it: the cluster time,
/// and its session rules when the replicated ones differ. Clients never set it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Stamp {
    /// Cluster time in milliseconds (see the `kv` module essay); 0 in entries written
    /// before stamping existed, which then leave the clock where it is.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub time: u64,
    /// New session rules, from here on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sessions: Option<SessionLimits>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// One replicated command. Reads never enter the log (they use ReadIndex).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Command {
    pub key: String,
    #[serde(flatten)]
    pub op: WriteOp,
    /// `None` for writes sent without a session: applied every time they commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<Session>,
    /// Set by the leader (see [`Stamp`]); the default until then.
    #[serde(flatten)]
    pub stamp: Stamp,
}

impl Command {
    /// A write of `key` as a client sends it (not stamped yet).
    pub fn write(key: impl Into<String>, op: WriteOp, session: Option<Session>) -> Command {
        Command {
            key: key.into(),
            op,
            session,
            stamp: Stamp::default(),
        }
    }

    /// A session registration (not stamped yet).
    pub fn register() -> Command {
        Command::write("", WriteOp::Register, None)
    }

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
            WriteOp::Register => (b'r', ""),
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
            WriteOp::Delete | WriteOp::Register => 0,
        };
        let session = self.session.as_ref().map_or(0, |s| match &s.id {
            SessionId::Registered(_) => 24,
            SessionId::Named(client) => client.len() + 24,
        });
        32 + self.key.len() + value + session
    }
}

/// The result of applying a command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum WriteResult {
    Ok,
    /// A registration opened the session with this number.
    Registered {
        session: u64,
    },
    /// The command's `seq` is older than the newest one applied for its session; the
    /// answer to that older request is no longer kept.
    StaleSeq {
        last_seq: u64,
    },
    /// The command reuses its session's newest `seq` for a different write: not a
    /// retry, so not applied (two processes are probably using the same client name).
    SeqReused {
        seq: u64,
    },
    /// The command's session expired (or was pushed out by the session limit), so
    /// whether this `seq` was applied before is no longer known: not applied now.
    SessionExpired,
    /// The command names a registered session that never existed here (a number this
    /// cluster has not handed out yet): not applied.
    UnknownSession,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_read_old_log_entries_and_write_compact_new_ones() {
        // An entry written before sessions could be registered or commands stamped.
        let old = r#"{"key":"k","op":"append","value":"v","session":{"client":"c1","seq":5}}"#;
        let c: Command = serde_json::from_str(old).unwrap();
        assert_eq!(c.session, Some(Session::named("c1", 5)));
        assert_eq!(c.stamp, Stamp::default());
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            old,
            "unstamped: same bytes"
        );
        let mut c = Command::write(
            "k",
            WriteOp::Put { value: "v".into() },
            Some(Session::registered(7, 2)),
        );
        c.stamp.time = 1234;
        let text = serde_json::to_string(&c).unwrap();
        assert_eq!(
            text,
            r#"{"key":"k","op":"put","value":"v","session":{"id":7,"seq":2},"time":1234}"#
        );
        assert_eq!(serde_json::from_str::<Command>(&text).unwrap(), c);
        let mut r = Command::register();
        r.stamp.sessions = Some(SessionLimits {
            timeout_ms: 5,
            max_sessions: 6,
        });
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Command>(&text).unwrap(), r);
        assert!(serde_json::from_str::<Command>(
            r#"{"key":"k","op":"delete","session":{"id":1,"client":"c","seq":1}}"#
        )
        .is_err());
    }
}
