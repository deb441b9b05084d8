//! The vocabulary: what an [`Event`] can say ([`What`]), how a Raft message is told
//! ([`Gist`]), and the two ways an event is written: one JSON object (the data of an
//! SSE message) and one `--trace` line. Both walk the same list of fields
//! ([`What::fields`]), so the stream and the trace cannot drift apart.

use std::{fmt::Write as _, sync::Arc};

use crate::{
    raft::{AppendResult, Body, Index, Message, NodeId, Role, Term},
    replica::ClientOp,
};

/// One thing that happened on a node.
#[derive(Clone, Debug)]
pub(crate) struct Event {
    /// When, in microseconds since the Unix epoch.
    pub t: u64,
    /// The node it happened on.
    pub node: NodeId,
    /// The name of the thread that did it (`state`, `client-reader`, `replicator-n2`, ...).
    pub thread: Arc<str>,
    pub what: What,
}

/// The kinds of event and their own fields (docs/protocol.md §5, `/v1/events`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum What {
    /// The role, term or known leader changed.
    Role {
        role: Role,
        term: Term,
        leader: Option<NodeId>,
    },
    /// An election started: a pre-vote round for `term` (`pre`), or a campaign in it.
    Election { term: Term, pre: bool },
    /// This node granted its vote in `term` to candidate `to`.
    Vote { term: Term, to: NodeId },
    /// A Raft message was written to the connection to `to`.
    Send { to: NodeId, gist: Gist },
    /// A Raft message from `from` was read off its connection.
    Recv { from: NodeId, gist: Gist },
    /// Plain heartbeats exchanged with `peer` since its last summary (sent and
    /// received, of either direction: empty appends and answers that acknowledge
    /// nothing new); at most one summary per peer per [`super::HEARTBEAT_SUMMARY`].
    Heartbeats {
        peer: NodeId,
        sent: u64,
        received: u64,
    },
    /// The state thread took a batch of `size` inputs, `requests` of them client
    /// requests. Reported only for a batch that leads to some other event.
    Batch {
        batch: u64,
        size: usize,
        requests: usize,
    },
    /// The state thread took request `req` into batch `batch`.
    Taken { req: u64, batch: u64 },
    /// Entries `first..=last` were written to the log, `bytes` of it.
    Wal {
        first: Index,
        last: Index,
        bytes: u64,
    },
    /// The log is durable up to `last`; the fsync took `us` microseconds.
    Fsync { us: u64, last: Index },
    /// The commit index advanced to `index`.
    Commit { index: Index },
    /// Entries `first..=last` were applied to the state machine.
    Apply { first: Index, last: Index },
    /// A snapshot at `index@term` was saved (`bytes` long), or installed from the
    /// leader `from`.
    Snapshot {
        index: Index,
        term: Term,
        from: Option<NodeId>,
        bytes: Option<u64>,
    },
    /// A client request was read off its connection and numbered `req`.
    Request {
        req: u64,
        op: &'static str,
        /// Absent for `register`, which touches no key.
        key: Option<String>,
        /// A get with `consistency: stale` (answered from local state at once).
        stale: bool,
        via: Via,
    },
    /// A follower's HTTP port sent request `req` on to the leader `to`.
    Forward { req: u64, to: NodeId },
    /// Request `req`'s entry was appended to the leader's log at `index@term`.
    Appended { req: u64, index: Index, term: Term },
    /// Linearizable read `req` waits for `read_index` to be applied, and for its
    /// ReadIndex round to come back from a quorum (`confirmed` once it has).
    Read {
        req: u64,
        read_index: Index,
        confirmed: bool,
    },
    /// Request `req`'s answer was written to its connection, `us` microseconds after
    /// the request was read; `error` is the error code when not `ok`.
    Reply {
        req: u64,
        ok: bool,
        error: Option<&'static str>,
        us: u64,
    },
    /// This subscriber lost `count` events here, because it read too slowly.
    Dropped { count: u64 },
}

/// Which front door a request came through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Via {
    /// The client port (newline-delimited JSON, docs/protocol.md §3).
    Line,
    Http,
}

/// A Raft message as events tell it: its type, term and positions, never its
/// entries (an event must stay small, however large the batch it describes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Gist {
    pub term: Term,
    pub body: GistBody,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GistBody {
    PreVote {
        last_log: Index,
    },
    PreVoteResponse {
        granted: bool,
    },
    Vote {
        last_log: Index,
    },
    VoteResponse {
        granted: bool,
    },
    /// `entries`: the first and last index carried, `None` for a heartbeat.
    Append {
        prev: Index,
        entries: Option<(Index, Index)>,
        commit: Index,
        round: u64,
    },
    /// `Ok(match)` or `Err(the refused prev index)`.
    AppendResponse {
        result: Result<Index, Index>,
        round: u64,
    },
    InstallSnapshot {
        index: Index,
    },
}

impl Gist {
    pub fn of(m: &Message) -> Gist {
        let body = match &m.body {
            Body::PreVote { last_index, .. } => GistBody::PreVote {
                last_log: *last_index,
            },
            Body::PreVoteResponse { granted } => GistBody::PreVoteResponse { granted: *granted },
            Body::Vote { last_index, .. } => GistBody::Vote {
                last_log: *last_index,
            },
            Body::VoteResponse { granted } => GistBody::VoteResponse { granted: *granted },
            Body::Append {
                prev_index,
                entries,
                commit,
                read_round,
                ..
            } => GistBody::Append {
                prev: *prev_index,
                entries: entries
                    .first()
                    .zip(entries.last())
                    .map(|(a, b)| (a.index, b.index)),
                commit: *commit,
                round: *read_round,
            },
            Body::AppendResponse { result, read_round } => GistBody::AppendResponse {
                result: match result {
                    AppendResult::Match(i) => Ok(*i),
                    AppendResult::Conflict { prev_index, .. } => Err(*prev_index),
                },
                round: *read_round,
            },
            Body::InstallSnapshot { meta } => GistBody::InstallSnapshot { index: meta.index },
        };
        Gist { term: m.term, body }
    }

    /// The message type, as the wire names it.
    fn kind(&self) -> &'static str {
        match self.body {
            GistBody::PreVote { .. } => "pre_vote",
            GistBody::PreVoteResponse { .. } => "pre_vote_response",
            GistBody::Vote { .. } => "vote",
            GistBody::VoteResponse { .. } => "vote_response",
            GistBody::Append { .. } => "append",
            GistBody::AppendResponse { .. } => "append_response",
            GistBody::InstallSnapshot { .. } => "install_snapshot",
        }
    }

    fn fields(&self, f: &mut impl FnMut(&'static str, Field<'_>)) {
        f("type", Field::Word(self.kind()));
        f("term", Field::Num(self.term));
        match self.body {
            GistBody::PreVote { last_log } | GistBody::Vote { last_log } => {
                f("last_log", Field::Num(last_log));
            }
            GistBody::PreVoteResponse { granted } | GistBody::VoteResponse { granted } => {
                f("granted", Field::Bool(granted));
            }
            GistBody::Append {
                prev,
                entries,
                commit,
                round,
            } => {
                f("prev", Field::Num(prev));
                if let Some((first, last)) = entries {
                    f("first", Field::Num(first));
                    f("last", Field::Num(last));
                }
                f("commit", Field::Num(commit));
                round_field(round, f);
            }
            GistBody::AppendResponse { result, round } => {
                match result {
                    Ok(i) => f("match", Field::Num(i)),
                    Err(i) => f("reject", Field::Num(i)),
                }
                round_field(round, f);
            }
            GistBody::InstallSnapshot { index } => f("index", Field::Num(index)),
        }
    }
}

/// A ReadIndex round is worth showing only once one was started (0: none ever was).
fn round_field(round: u64, f: &mut impl FnMut(&'static str, Field<'_>)) {
    if round > 0 {
        f("round", Field::Num(round));
    }
}

/// One field's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Field<'a> {
    Num(u64),
    Bool(bool),
    /// A word of the vocabulary (`put`, `follower`, `append`): never needs quoting.
    Word(&'static str),
    /// Text from a client (a key): quoted in the trace when it is not a plain word.
    Text(&'a str),
    /// Known to be unknown (a role event's `leader` during an election).
    Null,
}

/// The `op` of a client request.
pub(crate) fn op_name(op: &ClientOp) -> &'static str {
    use crate::kv::WriteOp;
    match op {
        ClientOp::Get { .. } => "get",
        ClientOp::Register => "register",
        ClientOp::Write(c) => match c.op {
            WriteOp::Put { .. } => "put",
            WriteOp::Append { .. } => "append",
            WriteOp::Delete => "delete",
            WriteOp::Register => "register",
        },
    }
}

impl What {
    /// The kind, as SSE's `event:` line and the trace name it.
    pub fn kind(&self) -> &'static str {
        match self {
            What::Role { .. } => "role",
            What::Election { .. } => "election",
            What::Vote { .. } => "vote",
            What::Send { .. } => "send",
            What::Recv { .. } => "recv",
            What::Heartbeats { .. } => "heartbeats",
            What::Batch { .. } => "batch",
            What::Taken { .. } => "taken",
            What::Wal { .. } => "wal",
            What::Fsync { .. } => "fsync",
            What::Commit { .. } => "commit",
            What::Apply { .. } => "apply",
            What::Snapshot { .. } => "snapshot",
            What::Request { .. } => "request",
            What::Forward { .. } => "forward",
            What::Appended { .. } => "appended",
            What::Read { .. } => "read",
            What::Reply { .. } => "reply",
            What::Dropped { .. } => "dropped",
        }
    }

    /// Calls `f` with each field of this kind, in the order they are written.
    pub fn fields(&self, f: &mut impl FnMut(&'static str, Field<'_>)) {
        use Field::{Bool, Null, Num, Text, Word};
        match self {
            What::Role { role, term, leader } => {
                f("role", Word(role.as_str()));
                f("term", Num(*term));
                f("leader", leader.map_or(Null, Num));
            }
            What::Election { term, pre } => {
                f("term", Num(*term));
                f("pre", Bool(*pre));
            }
            What::Vote { term, to } => {
                f("term", Num(*term));
                f("to", Num(*to));
            }
            What::Send { to, gist } => {
                f("to", Num(*to));
                gist.fields(f);
            }
            What::Recv { from, gist } => {
                f("from", Num(*from));
                gist.fields(f);
            }
            What::Heartbeats {
                peer,
                sent,
                received,
            } => {
                f("peer", Num(*peer));
                f("sent", Num(*sent));
                f("received", Num(*received));
            }
            What::Batch {
                batch,
                size,
                requests,
            } => {
                f("batch", Num(*batch));
                f("size", Num(*size as u64));
                f("requests", Num(*requests as u64));
            }
            What::Taken { req, batch } => {
                f("req", Num(*req));
                f("batch", Num(*batch));
            }
            What::Wal { first, last, bytes } => {
                f("first", Num(*first));
                f("last", Num(*last));
                f("bytes", Num(*bytes));
            }
            What::Fsync { us, last } => {
                f("us", Num(*us));
                f("last", Num(*last));
            }
            What::Commit { index } => f("index", Num(*index)),
            What::Apply { first, last } => {
                f("first", Num(*first));
                f("last", Num(*last));
            }
            What::Snapshot {
                index,
                term,
                from,
                bytes,
            } => {
                f("index", Num(*index));
                f("term", Num(*term));
                if let Some(from) = from {
                    f("from", Num(*from));
                }
                if let Some(bytes) = bytes {
                    f("bytes", Num(*bytes));
                }
            }
            What::Request {
                req,
                op,
                key,
                stale,
                via,
            } => {
                f("req", Num(*req));
                f("op", Word(op));
                if let Some(key) = key {
                    f("key", Text(key));
                }
                if *stale {
                    f("stale", Bool(true));
                }
                f(
                    "via",
                    Word(match via {
                        Via::Line => "line",
                        Via::Http => "http",
                    }),
                );
            }
            What::Forward { req, to } => {
                f("req", Num(*req));
                f("to", Num(*to));
            }
            What::Appended { req, index, term } => {
                f("req", Num(*req));
                f("index", Num(*index));
                f("term", Num(*term));
            }
            What::Read {
                req,
                read_index,
                confirmed,
            } => {
                f("req", Num(*req));
                f("read_index", Num(*read_index));
                f("confirmed", Bool(*confirmed));
            }
            What::Reply { req, ok, error, us } => {
                f("req", Num(*req));
                f("ok", Bool(*ok));
                if let Some(error) = error {
                    f("error", Word(error));
                }
                f("us", Num(*us));
            }
            What::Dropped { count } => f("count", Num(*count)),
        }
    }
}

impl Event {
    /// The event as one JSON object: the common fields, `kind`, then the kind's own.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(160);
        let _ = write!(
            out,
            "{{\"t\":{},\"node\":{},\"thread\":{},\"kind\":\"{}\"",
            self.t,
            self.node,
            json_string(&self.thread),
            self.what.kind()
        );
        self.what.fields(&mut |name, value| {
            let _ = write!(out, ",\"{name}\":");
            match value {
                Field::Num(n) => {
                    let _ = write!(out, "{n}");
                }
                Field::Bool(b) => {
                    let _ = write!(out, "{b}");
                }
                Field::Word(w) => out.push_str(&json_string(w)),
                Field::Text(t) => out.push_str(&json_string(t)),
                Field::Null => out.push_str("null"),
            }
        });
        out.push('}');
        out
    }

    /// The event as one `--trace` line (without its newline):
    /// `TRACE 12:34:56.789012 n1 client-reader request req=7 op=put key=k via=line`.
    pub fn to_trace_line(&self) -> String {
        let mut out = String::with_capacity(128);
        let secs = self.t / 1_000_000;
        let _ = write!(
            out,
            "TRACE {:02}:{:02}:{:02}.{:06} n{} {} {}",
            secs / 3600 % 24,
            secs / 60 % 60,
            secs % 60,
            self.t % 1_000_000,
            self.node,
            self.thread,
            self.what.kind()
        );
        self.what.fields(&mut |name, value| {
            let _ = match value {
                Field::Num(n) => write!(out, " {name}={n}"),
                Field::Bool(b) => write!(out, " {name}={b}"),
                Field::Word(w) => write!(out, " {name}={w}"),
                Field::Text(t) if is_plain_word(t) => write!(out, " {name}={t}"),
                Field::Text(t) => write!(out, " {name}={}", json_string(t)),
                Field::Null => write!(out, " {name}=-"),
            };
        });
        out
    }
}

fn json_string(s: &str) -> String {
    // Serializing a string cannot fail.
    serde_json::to_string(s).unwrap_or_default()
}

/// A key printed bare in a trace line cannot be mistaken for more fields.
fn is_plain_word(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.:/@".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::Entry;

    fn event(what: What) -> Event {
        Event {
            t: 1_700_000_000_123_456,
            node: 1,
            thread: Arc::from("state"),
            what,
        }
    }

    #[test]
    fn an_event_is_one_json_object_and_one_trace_line_with_the_same_fields() {
        let e = event(What::Request {
            req: 7,
            op: "put",
            key: Some("a key\"".into()),
            stale: false,
            via: Via::Line,
        });
        let json: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"t": 1_700_000_000_123_456u64, "node": 1, "thread": "state",
                "kind": "request", "req": 7, "op": "put", "key": "a key\"", "via": "line"})
        );
        assert_eq!(
            e.to_trace_line(),
            r#"TRACE 22:13:20.123456 n1 state request req=7 op=put key="a key\"" via=line"#
        );
        let role = event(What::Role {
            role: Role::Candidate,
            term: 3,
            leader: None,
        });
        assert!(role
            .to_json()
            .ends_with(r#""role":"candidate","term":3,"leader":null}"#));
        assert!(role
            .to_trace_line()
            .ends_with("role role=candidate term=3 leader=-"));
    }

    #[test]
    fn a_message_is_told_by_its_positions_not_its_entries() {
        let entry = |index| Entry {
            index,
            term: 2,
            payload: crate::raft::Payload::Noop,
        };
        let m = Message {
            from: 1,
            to: 2,
            term: 2,
            body: Body::Append {
                prev_index: 4,
                prev_term: 1,
                entries: vec![entry(5), entry(6)],
                commit: 4,
                read_round: 0,
            },
        };
        let send = event(What::Send {
            to: 2,
            gist: Gist::of(&m),
        });
        assert!(send
            .to_trace_line()
            .ends_with("send to=2 type=append term=2 prev=4 first=5 last=6 commit=4"));
        let answer = Message {
            from: 2,
            to: 1,
            term: 2,
            body: Body::AppendResponse {
                result: AppendResult::Conflict {
                    prev_index: 4,
                    conflict_term: None,
                    conflict_index: 3,
                },
                read_round: 9,
            },
        };
        let recv = event(What::Recv {
            from: 2,
            gist: Gist::of(&answer),
        });
        assert!(recv
            .to_json()
            .ends_with(r#""from":2,"type":"append_response","term":2,"reject":4,"round":9}"#));
    }
}
