//! What a history records, and the sequential model the search runs it against.
//!
//! A history is a list of [`Operation`]s, each one client's view of one call on one key:
//! what it did ([`KvOp`]), when it was sent, and when and how it was answered, if it was.
//! The simulator, the process tests and `raftkv bench --check` record these directly.
//!
//! Because linearizability is checked per key (see the essay in `check/mod.rs`), the
//! model is one key's value, [`Value`]; the search turns each operation into a [`Step`]
//! and asks [`Step::apply`] what the value becomes, or whether the model refuses it (a
//! read that does not see the current value).

use std::rc::Rc;

use super::fingerprint::{self, ABSENT, UNOBSERVABLE};

/// What a client did to one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvOp {
    /// Read the key; the value read is in [`Operation::read`].
    Get,
    /// Set the key to this value.
    Put(String),
    /// Append this string to the key's value; a missing key counts as `""`.
    Append(String),
    /// Remove the key.
    Delete,
}

/// One client operation on one key, as seen by the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// Who issued it (used in messages only).
    pub client: u64,
    /// The key it touched.
    pub key: String,
    /// What it did.
    pub op: KvOp,
    /// Time the op was first sent.
    pub invoke: u64,
    /// `Some(t)`: it completed OK at `t`. `None`: outcome unknown (timed out, or the client
    /// gave up) — it may have taken effect at any time after `invoke`, or never.
    pub complete: Option<u64>,
    /// For a completed Get: the value read (`None` = key absent). Ignored otherwise.
    pub read: Option<String>,
}

/// The key's value as the search knows it.
#[derive(Clone)]
pub(super) enum Text {
    /// The key does not exist.
    Absent,
    /// The key holds this string (shared, since many configurations hold the same value).
    Present(Rc<String>),
    /// Some present value that no remaining read can see (see "Unobservable values are
    /// merged" in the essay of `check/mod.rs`).
    Unobservable,
}

/// The key's value during the search, with its fingerprint.
#[derive(Clone)]
pub(super) struct Value {
    /// The value itself.
    pub(super) text: Text,
    /// Identifies the value in the memo table: [`ABSENT`], [`UNOBSERVABLE`], or the
    /// packed polynomial hash of a present string.
    pub(super) fingerprint: u128,
}

impl Value {
    pub(super) fn absent() -> Value {
        Value {
            text: Text::Absent,
            fingerprint: ABSENT,
        }
    }

    pub(super) fn unobservable() -> Value {
        Value {
            text: Text::Unobservable,
            fingerprint: UNOBSERVABLE,
        }
    }

    fn present(text: &str) -> Value {
        Value {
            text: Text::Present(Rc::new(text.to_string())),
            fingerprint: fingerprint::pack(fingerprint::poly_hash(text)),
        }
    }

    pub(super) fn is_absent(&self) -> bool {
        matches!(self.text, Text::Absent)
    }

    /// The value if it is present and concrete.
    pub(super) fn as_str(&self) -> Option<&str> {
        match &self.text {
            Text::Present(text) => Some(text),
            Text::Absent | Text::Unobservable => None,
        }
    }
}

/// An operation prepared for the search.
pub(super) enum Step<'h> {
    /// A completed read and what it returned.
    Get(Option<&'h str>),
    /// Set the value to this one (fingerprint computed once, here).
    Put(Value),
    /// Append `suffix`, with what it takes to extend the fingerprint in O(1).
    Append {
        /// The appended string.
        suffix: &'h str,
        /// `poly_hash(suffix)`.
        hash: [u64; 2],
        /// `B^len(suffix)` for each base.
        shift: [u64; 2],
    },
    /// Remove the key.
    Delete,
}

impl<'h> Step<'h> {
    /// The step for `op`, which must be a completed read or a write.
    pub(super) fn new(op: &'h Operation) -> Step<'h> {
        match &op.op {
            KvOp::Get => Step::Get(op.read.as_deref()),
            KvOp::Put(v) => Step::Put(Value::present(v)),
            KvOp::Append(v) => Step::Append {
                suffix: v,
                hash: fingerprint::poly_hash(v),
                shift: fingerprint::shift(v.len()),
            },
            KvOp::Delete => Step::Delete,
        }
    }
}

impl Step<'_> {
    pub(super) fn is_get(&self) -> bool {
        matches!(self, Step::Get(_))
    }

    /// The value after applying this step to `value`, or `None` if the model refuses it (a
    /// read that does not match).
    pub(super) fn apply(&self, value: &Value) -> Option<Value> {
        match self {
            Step::Get(read) => {
                let matches = match (&value.text, read) {
                    (Text::Absent, None) => true,
                    (Text::Present(text), Some(read)) => text.as_str() == *read,
                    _ => false,
                };
                matches.then(|| value.clone())
            }
            Step::Put(new) => Some(new.clone()),
            Step::Delete => Some(Value::absent()),
            Step::Append {
                suffix,
                hash,
                shift,
            } => {
                let (old, old_hash) = match &value.text {
                    Text::Unobservable => return Some(Value::unobservable()),
                    Text::Absent => ("", [0, 0]),
                    Text::Present(text) => (text.as_str(), fingerprint::unpack(value.fingerprint)),
                };
                let mut text = String::with_capacity(old.len() + suffix.len());
                text.push_str(old);
                text.push_str(suffix);
                Some(Value {
                    text: Text::Present(Rc::new(text)),
                    fingerprint: fingerprint::pack(fingerprint::concat(old_hash, *hash, *shift)),
                })
            }
        }
    }
}
