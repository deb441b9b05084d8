//! The client's error type: what a caller may conclude when an operation fails.

use std::fmt;

/// Why a [`Client`](super::Client) operation failed, sorted by what the caller may
/// conclude about the store.
///
/// | variant | did the operation take effect? | safe to simply retry? |
/// |---|---|---|
/// | [`NotApplied`](ClientError::NotApplied) | no, certainly not | yes |
/// | [`Unknown`](ClientError::Unknown) | maybe (writes only) | only idempotent writes (`put`, `delete`) |
/// | [`BadRequest`](ClientError::BadRequest) | no, certainly not | no: it will fail the same way |
/// | [`Unauthorized`](ClientError::Unauthorized) | no, certainly not | no: give the right token first |
/// | [`NoServers`](ClientError::NoServers) | no | no: configure addresses first |
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientError {
    /// The operation certainly had no effect on the store. Returned when the deadline
    /// passed and no attempt could have taken effect: every attempt either never reached
    /// a server (refused or failed connection) or was answered `not_leader` or
    /// `unavailable`, which the protocol defines as "not applied". A failed read
    /// (`get`, `status`) is always `NotApplied`, since reads change nothing.
    NotApplied {
        /// What went wrong, including the last error seen (for humans).
        reason: String,
    },
    /// A write may or may not have taken effect, and we could not find out in time.
    /// Returned when the deadline passed after at least one attempt that was sent to a
    /// server and then got no definite answer: a `timeout` response, a connection that
    /// closed or failed after the request left, a response that never came within the
    /// per-request timeout, or a garbled response. (If a later retry of the same
    /// `client`/`seq` is answered `ok`, the operation succeeds instead: the server
    /// applies a seq at most once and a retry reports the first attempt's result.)
    ///
    /// If the write is applied later, it is applied at most once, and never after a
    /// later write of the same client (its seq would then be stale).
    Unknown {
        /// What went wrong, including the last error seen (for humans).
        reason: String,
    },
    /// The server answered `bad_request`: the request itself is invalid (for example a
    /// key or value over the size limit). Nothing was applied; retrying cannot help.
    BadRequest(String),
    /// A node answered `unauthorized`: it requires a client token and this client has
    /// none ([`ClientOptions::token`](super::ClientOptions::token)), or refused the one
    /// it has. Nothing was applied; retrying with the same token cannot help.
    Unauthorized(String),
    /// The client has no server address to send the request to.
    NoServers,
}

impl ClientError {
    /// True only for [`ClientError::Unknown`]: the operation might have taken effect.
    pub fn may_have_been_applied(&self) -> bool {
        matches!(self, ClientError::Unknown { .. })
    }

    /// The human-readable detail, without the classification prefix.
    pub fn reason(&self) -> &str {
        match self {
            ClientError::NotApplied { reason } | ClientError::Unknown { reason } => reason,
            ClientError::BadRequest(message) | ClientError::Unauthorized(message) => message,
            ClientError::NoServers => "no server addresses given",
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::NotApplied { reason } => write!(f, "not applied: {reason}"),
            ClientError::Unknown { reason } => {
                write!(
                    f,
                    "outcome unknown (the write may or may not have been applied): {reason}"
                )
            }
            ClientError::BadRequest(message) => write!(f, "bad request: {message}"),
            ClientError::Unauthorized(message) => write!(f, "unauthorized: {message}"),
            ClientError::NoServers => write!(f, "no server addresses given"),
        }
    }
}

impl std::error::Error for ClientError {}
