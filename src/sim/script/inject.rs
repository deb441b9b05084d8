//! The `inject` command of golden scripts: a hand-made message, in a compact form,
//! handed to one node as if it had just arrived from the network (whatever its `to`
//! and whatever the links). It is how a script tells what the core does with a message
//! no honest member sends:
//!
//! ```text
//! inject ID from=N KIND term=T [to=N] FIELDS
//!   pre-vote last=I@T                 vote last=I@T
//!   pre-vote-response granted|refused vote-response granted|refused
//!   append prev=I@T [entries=I@T,I@T:k=v,...] [commit=C] [read=R]
//!   append-response match=I [read=R]
//!   append-response reject=I hint=I@T|end@I [read=R]
//!   install-snapshot snapshot=I@T
//! ```
//!
//! `to` defaults to the node injected into. An entry is a no-op unless it says
//! `:key=value` (a put). Numbers are plain `u64`s, so `term=18446744073709551615`
//! is the largest term a message can carry.

use super::Args;
use crate::{
    kv::{Command, WriteOp},
    raft::{AppendResult, Body, Entry, Index, Message, NodeId, Payload, SnapshotMeta, Term},
};

/// The message `inject ID ...` describes, for node `target`.
pub(super) fn message(target: NodeId, args: &Args) -> Result<Message, String> {
    let from = args.number("from")?.ok_or("from=N is required")?;
    let term = args.number("term")?.ok_or("term=T is required")?;
    let to = args.number("to")?.unwrap_or(target);
    let kind = args
        .words
        .get(1)
        .ok_or("which message? (append, vote, ...)")?;
    let position = |key: &str| -> Result<(Index, Term), String> {
        position(args.get(key).ok_or(format!("{key}=I@T is required"))?)
    };
    let granted = || match args.words.get(2) {
        Some(&"granted") => Ok(true),
        Some(&"refused") => Ok(false),
        _ => Err("granted or refused?".to_string()),
    };
    let read_round = args.number("read")?.unwrap_or(0);
    let body = match *kind {
        "pre-vote" | "vote" => {
            let (last_index, last_term) = position("last")?;
            match *kind {
                "pre-vote" => Body::PreVote {
                    last_index,
                    last_term,
                },
                _ => Body::Vote {
                    last_index,
                    last_term,
                },
            }
        }
        "pre-vote-response" => Body::PreVoteResponse {
            granted: granted()?,
        },
        "vote-response" => Body::VoteResponse {
            granted: granted()?,
        },
        "append" => {
            let (prev_index, prev_term) = position("prev")?;
            Body::Append {
                prev_index,
                prev_term,
                entries: args.get("entries").map_or(Ok(Vec::new()), entries)?,
                commit: args.number("commit")?.unwrap_or(0),
                read_round,
            }
        }
        "append-response" => {
            let result = match (args.number("match")?, args.number("reject")?) {
                (Some(index), None) => AppendResult::Match(index),
                (None, Some(prev_index)) => {
                    let hint = args.get("hint").ok_or("reject=I needs hint=I@T or end@I")?;
                    let (conflict_term, conflict_index) = match hint.strip_prefix("end@") {
                        Some(end) => (None, number(end)?),
                        None => {
                            let (index, term) = position(hint)?;
                            (Some(term), index)
                        }
                    };
                    AppendResult::Conflict {
                        prev_index,
                        conflict_term,
                        conflict_index,
                    }
                }
                _ => return Err("append-response needs match=I or reject=I".into()),
            };
            Body::AppendResponse { result, read_round }
        }
        "install-snapshot" => {
            let (index, term) = position("snapshot")?;
            Body::InstallSnapshot {
                meta: SnapshotMeta { index, term },
            }
        }
        other => return Err(format!("unknown message {other:?}")),
    };
    Ok(Message {
        from,
        to,
        term,
        body,
    })
}

/// `5@3`: index 5, term 3.
fn position(text: &str) -> Result<(Index, Term), String> {
    let (index, term) = text
        .split_once('@')
        .ok_or(format!("{text} is not a position (index@term)"))?;
    Ok((number(index)?, number(term)?))
}

/// `5@3,6@3:k=v`: a no-op at 5@3, then a put of k=v at 6@3.
fn entries(text: &str) -> Result<Vec<Entry>, String> {
    text.split(',')
        .map(|item| {
            let (at, put) = match item.split_once(':') {
                Some((at, put)) => (at, Some(put)),
                None => (item, None),
            };
            let (index, term) = position(at)?;
            let payload = match put {
                None => Payload::Noop,
                Some(put) => {
                    let (key, value) = put
                        .split_once('=')
                        .ok_or(format!("{put} is not key=value"))?;
                    let op = WriteOp::Put {
                        value: value.into(),
                    };
                    Payload::Command(Command::write(key, op, None))
                }
            };
            Ok(Entry {
                index,
                term,
                payload,
            })
        })
        .collect()
}

fn number(text: &str) -> Result<u64, String> {
    text.parse().map_err(|_| format!("{text} is not a number"))
}
