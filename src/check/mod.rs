//! Checkers that judge, from the outside, whether what the cluster did was correct.
//!
//! [`linearizability`] decides whether a recorded history of client operations could have
//! come from a single copy of the key-value map applying each operation atomically at some
//! instant between its invocation and its completion. It is used by the deterministic
//! simulator (virtual time) and by the real-process tests (wall-clock nanoseconds); times
//! are plain `u64`s in whatever unit the caller uses.

pub mod linearizability;

pub use linearizability::{
    check, check_with_limit, CheckOutcome, KvOp, Operation, Violation, DEFAULT_MAX_STATES,
};
