//! The dashboard (docs/protocol.md §5.7, `GET /`): one self-contained page, and the
//! detail of `GET /v1/status?log=N` it reads from every node.
//!
//! The page is hand-written HTML, CSS and JavaScript (`dashboard.html`), compiled into
//! the binary so a node needs no files and the page fetches nothing from elsewhere. In
//! the browser it learns the members and their HTTP addresses from its own node's
//! status (`addresses`), then polls every node's status with the detail below and
//! follows every node's `GET /v1/events`; so it shows each node as that node reports
//! itself, and a node that does not answer as unreachable. Both answers carry
//! `Access-Control-Allow-Origin: *`, which lets a page served by one node read the
//! others (they are other origins: other ports).
//!
//! **The detail is bounded.** An answer the port makes itself is not counted in the
//! connection's byte bounds (`reply_queue`), so what `?log=N` adds stays small: at
//! most [`MAX_LOG`] entries, keys cut to [`KEY_CUT`] bytes, no values.

use serde_json::{json, Map, Value};

use super::super::{client_port::status_with, shared::Shared};
use crate::{
    kv::WriteOp,
    raft::{Entry, Payload},
};

/// The page, served as it is.
pub(super) const PAGE: &str = include_str!("dashboard.html");

/// Most log entries `?log=N` returns: the page shows 40.
const MAX_LOG: usize = 50;
/// Keys in the log view are cut to this many bytes (then end in `…`).
const KEY_CUT: usize = 64;

/// The status object of §3.9 with the dashboard's detail: `vote`, `addresses` (every
/// member's raft, client and http address), the last `log` entries (at most
/// [`MAX_LOG`]) and, on a leader, `progress` (each follower's match, next and state).
pub(super) fn status(shared: &Shared, log: usize) -> Value {
    status_with(None, shared, |r, fields| {
        let n = r.node();
        let last = n.last_index();
        let first = n
            .log()
            .first_index()
            .max(last.saturating_sub(log.min(MAX_LOG) as u64) + 1);
        let entries: Vec<Value> = (first..=last)
            .filter_map(|i| n.log().get(i))
            .map(entry)
            .collect();
        let addresses: Vec<Value> = shared
            .events
            .members()
            .iter()
            .map(|m| json!({"id": m.id, "raft": m.raft, "client": m.client, "http": m.http}))
            .collect();
        fields.insert("vote".into(), json!(n.hard_state().voted_for));
        fields.insert("addresses".into(), addresses.into());
        fields.insert("log".into(), entries.into());
        if let Some(followers) = n.replication() {
            let progress: Map<String, Value> = followers
                .iter()
                .map(|(id, p)| {
                    let view =
                        json!({"match": p.matched(), "next": p.next(), "state": p.state().name()});
                    (id.to_string(), view)
                })
                .collect();
            fields.insert("progress".into(), progress.into());
        }
    })
}

/// One entry as the log view shows it: position, operation and key.
fn entry(e: &Entry) -> Value {
    let (op, key) = match &e.payload {
        Payload::Noop => ("noop", None),
        Payload::Command(c) => match &c.op {
            WriteOp::Put { .. } => ("put", Some(cut(&c.key))),
            WriteOp::Append { .. } => ("append", Some(cut(&c.key))),
            WriteOp::Delete => ("delete", Some(cut(&c.key))),
            WriteOp::Register => ("register", None),
        },
    };
    let mut v = json!({"index": e.index, "term": e.term, "op": op});
    if let Some(key) = key {
        v["key"] = key.into();
    }
    v
}

/// `key`, or its first [`KEY_CUT`] bytes (on a character boundary) and `…`.
fn cut(key: &str) -> String {
    if key.len() <= KEY_CUT {
        return key.to_string();
    }
    let end = (0..=KEY_CUT)
        .rev()
        .find(|&i| key.is_char_boundary(i))
        .unwrap_or(0);
    format!("{}…", &key[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::Command;

    #[test]
    fn entries_show_their_operation_and_key_but_never_a_value() {
        let put = Entry {
            index: 7,
            term: 2,
            payload: Payload::Command(Command::write(
                "greeting",
                WriteOp::Put {
                    value: "hello".into(),
                },
                None,
            )),
        };
        assert_eq!(
            entry(&put),
            json!({"index": 7, "term": 2, "op": "put", "key": "greeting"})
        );
        let noop = Entry {
            index: 8,
            term: 3,
            payload: Payload::Noop,
        };
        assert_eq!(entry(&noop), json!({"index": 8, "term": 3, "op": "noop"}));
        let register = Entry {
            payload: Payload::Command(Command::register()),
            ..noop
        };
        assert_eq!(entry(&register)["op"], "register");
        assert!(entry(&register).get("key").is_none());
    }

    #[test]
    fn long_keys_are_cut_on_a_character_boundary() {
        assert_eq!(cut("short"), "short");
        let exact = "k".repeat(KEY_CUT);
        assert_eq!(cut(&exact), exact);
        let long = format!("{}é", "k".repeat(KEY_CUT - 1)); // é straddles the cut
        assert_eq!(cut(&long), format!("{}…", "k".repeat(KEY_CUT - 1)));
        assert_eq!(
            cut(&"é".repeat(100)),
            format!("{}…", "é".repeat(KEY_CUT / 2))
        );
    }
}
