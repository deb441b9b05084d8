//! The replicated state machine: a string → string map plus the session table that
//! makes writes exactly-once.
//!
//! [`Store::apply`] is deterministic: the same commands in the same order give the same
//! map, session table and results on every node. The session table maps each client
//! name to the newest `seq` applied for it and that write's result, so a retried write
//! (same client, same seq) gets the first attempt's answer instead of running twice.
//!
//! Both maps are persistent B-trees (`imbl::OrdMap`): a clone shares every node with
//! the original and copies only what either side changes later. So a snapshot is a
//! clone taken in O(1) on the state thread and serialized on another
//! ([`image`]), and, being ordered, two stores with the same contents serialize to the
//! same bytes.

mod command;
pub mod image;

pub use command::{Command, Session, WriteOp, WriteResult, MAX_KEY_BYTES, MAX_VALUE_BYTES};

use imbl::OrdMap;

/// The newest write applied for one client. Only successful writes are recorded, so
/// the answer to a retry of it is always [`WriteResult::Ok`].
#[derive(Clone, Debug, PartialEq, Eq)]
struct SessionRecord {
    last_seq: u64,
    /// [`Command::fingerprint`] of that write: a retry must match it.
    last_fingerprint: u64,
}

/// The key-value map and the session table. Cloning is O(1) (see the module
/// documentation).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Store {
    data: OrdMap<String, String>,
    sessions: OrdMap<String, SessionRecord>,
    /// Bytes of keys and values in `data`: about the size of a snapshot of it.
    data_bytes: u64,
}

impl Store {
    pub fn new() -> Store {
        Store::default()
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.data.get(key).map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Applies one committed write and returns its result.
    pub fn apply(&mut self, command: &Command) -> WriteResult {
        if let Some(session) = &command.session {
            if let Some(record) = self.sessions.get(&session.client) {
                if session.seq == record.last_seq {
                    if record.last_fingerprint != command.fingerprint() {
                        return WriteResult::SeqReused { seq: session.seq };
                    }
                    return WriteResult::Ok;
                }
                if session.seq < record.last_seq {
                    return WriteResult::StaleSeq {
                        last_seq: record.last_seq,
                    };
                }
            }
        }
        let entry_bytes = |k: &String, v: &String| (k.len() + v.len()) as u64;
        match &command.op {
            WriteOp::Put { value } => {
                self.data_bytes += entry_bytes(&command.key, value);
                if let Some(old) = self.data.insert(command.key.clone(), value.clone()) {
                    self.data_bytes -= entry_bytes(&command.key, &old);
                }
            }
            WriteOp::Append { value } => {
                let current = self.data.entry(command.key.clone()).or_default();
                if current.is_empty() {
                    self.data_bytes += command.key.len() as u64;
                }
                current.push_str(value);
                self.data_bytes += value.len() as u64;
            }
            WriteOp::Delete => {
                if let Some(old) = self.data.remove(&command.key) {
                    self.data_bytes -= entry_bytes(&command.key, &old);
                }
            }
        }
        if let Some(session) = &command.session {
            let record = SessionRecord {
                last_seq: session.seq,
                last_fingerprint: command.fingerprint(),
            };
            self.sessions.insert(session.client.clone(), record);
        }
        WriteResult::Ok
    }

    /// About the size of the store's image in bytes (keys and values; sessions are
    /// small beside them).
    pub fn approx_bytes(&self) -> u64 {
        self.data_bytes
    }

    /// Number of clients with a session.
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(key: &str, op: WriteOp, session: Option<(&str, u64)>) -> Command {
        Command {
            key: key.into(),
            op,
            session: session.map(|(c, s)| Session {
                client: c.into(),
                seq: s,
            }),
        }
    }

    fn append(v: &str) -> WriteOp {
        WriteOp::Append { value: v.into() }
    }

    #[test]
    fn put_append_delete() {
        let mut s = Store::new();
        s.apply(&cmd("k", append("a"), None));
        assert_eq!(
            s.get("k"),
            Some("a"),
            "append to a missing key starts from \"\""
        );
        s.apply(&cmd("k", append("b"), None));
        assert_eq!(s.get("k"), Some("ab"));
        s.apply(&cmd("k", WriteOp::Put { value: "x".into() }, None));
        assert_eq!(s.get("k"), Some("x"));
        s.apply(&cmd("k", WriteOp::Delete, None));
        assert_eq!(s.get("k"), None);
        assert_eq!(s.apply(&cmd("k", WriteOp::Delete, None)), WriteResult::Ok);
    }

    #[test]
    fn a_retried_write_is_applied_once() {
        let mut s = Store::new();
        assert_eq!(
            s.apply(&cmd("k", append("a"), Some(("c1", 1)))),
            WriteResult::Ok
        );
        assert_eq!(
            s.apply(&cmd("k", append("a"), Some(("c1", 1)))),
            WriteResult::Ok
        );
        assert_eq!(s.get("k"), Some("a"));
        s.apply(&cmd("k", append("b"), Some(("c1", 2))));
        s.apply(&cmd("k", append("z"), Some(("c2", 1))));
        assert_eq!(s.get("k"), Some("abz"), "sessions are per client");
        assert_eq!(
            s.apply(&cmd("k", append("a"), Some(("c1", 1)))),
            WriteResult::StaleSeq { last_seq: 2 }
        );
        assert_eq!(s.get("k"), Some("abz"));
    }

    #[test]
    fn a_reused_client_name_is_refused_never_silently_dropped() {
        // A new process reusing an old client name starts its seq again at 1: the same
        // seq as a recorded write, but a different write. It is not a retry.
        let mut s = Store::new();
        s.apply(&cmd("k", append("a"), Some(("c1", 1))));
        assert_eq!(
            s.apply(&cmd("k", append("b"), Some(("c1", 1)))),
            WriteResult::SeqReused { seq: 1 }
        );
        assert_eq!(
            s.apply(&cmd("other", append("a"), Some(("c1", 1)))),
            WriteResult::SeqReused { seq: 1 },
            "another key is another write"
        );
        assert_eq!(s.get("k"), Some("a"));
        assert_eq!(s.get("other"), None);
        // The real retry still gets the first answer.
        assert_eq!(
            s.apply(&cmd("k", append("a"), Some(("c1", 1)))),
            WriteResult::Ok
        );
    }

    #[test]
    fn the_size_estimate_follows_puts_appends_and_deletes() {
        let mut s = Store::new();
        s.apply(&cmd(
            "ab",
            WriteOp::Put {
                value: "xyz".into(),
            },
            None,
        ));
        assert_eq!(s.approx_bytes(), 5);
        s.apply(&cmd("ab", append("12"), None));
        s.apply(&cmd("c", append("1"), None));
        assert_eq!(s.approx_bytes(), 7 + 2);
        s.apply(&cmd("ab", WriteOp::Put { value: "".into() }, None));
        assert_eq!(s.approx_bytes(), 2 + 2);
        s.apply(&cmd("ab", WriteOp::Delete, None));
        s.apply(&cmd("zz", WriteOp::Delete, None));
        assert_eq!(s.approx_bytes(), 2);
    }

    #[test]
    fn commands_without_a_session_apply_every_time() {
        let mut s = Store::new();
        s.apply(&cmd("k", append("a"), None));
        s.apply(&cmd("k", append("a"), None));
        assert_eq!(s.get("k"), Some("aa"));
    }
}
