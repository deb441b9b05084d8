//! Forwarding to the leader: a request that needs the leader (a write, a linearizable
//! get, `register`) that reached a follower's HTTP port goes to the leader's client port
//! as the line-protocol request it already is, and the leader's answer becomes the
//! follower's. Why forward rather than redirect: see the `http` module documentation.
//!
//! **Exactly once.** A request is sent to a leader once and never resent after an
//! uncertain failure: a connection lost after sending makes a write's outcome unknown
//! (`timeout`, HTTP 504), just as on the line protocol; the client's retry with the same
//! `client`/`seq` (or `session`/`seq`), carried in the forwarded request, learns the
//! outcome without applying it twice. Only a `not_leader` answer, which says the request
//! was not applied, sends it on to the leader it names (at most [`HOPS`] leaders).
//!
//! **Connections.** Idle connections to the leader are pooled (at most [`IDLE`]) and
//! checked before reuse, so a leader that restarted costs a reconnect, not an unknown
//! outcome. Each forward holds one connection alone, so a connection never has more than
//! one request in flight and its answers cannot be confused. With a client token, every
//! new connection starts with `auth` (this node's own token: a cluster shares one).

use std::time::Duration;

use parking_lot::Mutex;
use serde_json::Value;

use crate::{
    client::connection::{CallError, Conn},
    protocol::{ErrorCode, Token},
    raft::NodeId,
    replica::{Outcome, ReplicaConfig},
};

/// Most leaders one request is sent to (the first and the ones `not_leader` names).
const HOPS: usize = 3;
/// Longest wait for a TCP connection to the leader.
const CONNECT: Duration = Duration::from_secs(1);
/// Idle connections kept for reuse; more are closed.
const IDLE: usize = 64;
/// Longest answer line accepted from the leader: a 1 MiB value even if every byte is
/// escaped, as the client allows.
const MAX_ANSWER: usize = 16 << 20;

/// Sends requests on to the leader, over a pool of line-protocol connections.
pub(super) struct Forwarder {
    /// This node's client token, to authenticate to the leader's client port.
    token: Option<Token>,
    /// Longest wait for the leader's answer: its request timeout plus a second. It
    /// answers every request within its request timeout while it runs, so this fires
    /// only when it is gone or stuck.
    answer_within: Duration,
    /// Idle connections, with the address each goes to.
    idle: Mutex<Vec<(String, Conn)>>,
}

/// Where a request goes: a leader's id and its client address.
pub(super) struct Leader {
    pub id: NodeId,
    pub addr: String,
}

impl Forwarder {
    pub(super) fn new(token: Option<Token>, tick_ms: u64) -> Forwarder {
        let ticks = u64::from(ReplicaConfig::for_tick(tick_ms).request_timeout_ticks);
        Forwarder {
            token,
            answer_within: Duration::from_millis(ticks * tick_ms) + Duration::from_secs(1),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Sends `request` (a request object of the line protocol) to `leader` and returns
    /// its answer, following `not_leader` hints; `addr_of` gives a hinted leader's
    /// client address.
    pub(super) fn forward(
        &self,
        mut leader: Leader,
        request: &Value,
        addr_of: impl Fn(NodeId) -> Option<String>,
    ) -> Outcome {
        let op = request.get("op").and_then(Value::as_str).unwrap_or("");
        let write = op != "get";
        let mut hops = 1;
        loop {
            let failed = |code, message: String| Outcome::Failed {
                code,
                message,
                leader: Some(leader.id),
            };
            let n = leader.id;
            let outcome = match self.call(&leader.addr, request) {
                Ok(answer) => outcome_of(&answer, op),
                Err(CallError::NotSent(e)) => {
                    let message = format!("cannot reach the leader n{n}: {e}; nothing was applied");
                    return failed(ErrorCode::Unavailable, message);
                }
                Err(CallError::Unauthorized) => {
                    let message = format!(
                        "the leader n{n} refused this node's client token (give every node \
                         the same --client-token-file); nothing was applied"
                    );
                    return failed(ErrorCode::Unavailable, message);
                }
                Err(CallError::Lost(e)) if write => {
                    let message = format!(
                        "sent to the leader n{n}, then {e}: the write may or may not take effect"
                    );
                    return failed(ErrorCode::Timeout, message);
                }
                Err(CallError::Lost(e)) => {
                    let message = format!("sent to the leader n{n}, then {e}");
                    return failed(ErrorCode::Unavailable, message);
                }
            };
            let next = match &outcome {
                Outcome::Failed {
                    code: ErrorCode::NotLeader,
                    leader: Some(next),
                    ..
                } if hops < HOPS && *next != n => *next,
                _ => return outcome,
            };
            let Some(addr) = addr_of(next) else {
                return outcome;
            };
            leader = Leader { id: next, addr };
            hops += 1;
        }
    }

    /// One exchange with the node at `addr` on a pooled or new connection.
    fn call(&self, addr: &str, request: &Value) -> Result<Value, CallError> {
        let mut conn = match self.take_idle(addr) {
            Some(conn) => conn,
            None => {
                let mut conn = Conn::connect(addr, CONNECT)?;
                if let Some(token) = &self.token {
                    conn.authenticate(token, self.answer_within, MAX_ANSWER)?;
                }
                conn
            }
        };
        let (answer, _) = conn.call(request, self.answer_within, MAX_ANSWER)?;
        let stale = {
            let mut idle = self.idle.lock();
            // Forwards go to the leader: connections to any other node are of no more use
            // (leadership moved), and would hold that node's connection slots for good.
            let stale = if idle.iter().any(|(a, _)| a != addr) {
                let (keep, stale) = std::mem::take(&mut *idle)
                    .into_iter()
                    .partition(|(a, _)| a == addr);
                *idle = keep;
                stale
            } else {
                Vec::new()
            };
            if idle.len() < IDLE {
                idle.push((addr.to_string(), conn));
            }
            stale
        };
        drop(stale); // closed outside the lock
        Ok(answer)
    }

    /// An idle connection to `addr` that still looks usable (checked outside the lock:
    /// two system calls).
    fn take_idle(&self, addr: &str) -> Option<Conn> {
        loop {
            let conn = {
                let mut idle = self.idle.lock();
                let at = idle.iter().rposition(|(a, _)| a == addr)?;
                idle.swap_remove(at).1
            };
            if conn.is_reusable() {
                return Some(conn);
            }
        }
    }
}

/// The leader's answer to a request of `op` as an outcome, as if this node's state
/// thread had given it. An answer that makes no sense (which a leader does not send)
/// counts as a lost one.
fn outcome_of(answer: &Value, op: &str) -> Outcome {
    if answer.get("ok") == Some(&Value::Bool(true)) {
        let outcome = match op {
            "get" => match answer.get("value") {
                Some(Value::String(v)) => Some(Outcome::Value(Some(v.clone()))),
                Some(Value::Null) => Some(Outcome::Value(None)),
                _ => None,
            },
            "register" => answer
                .get("session")
                .and_then(Value::as_u64)
                .map(Outcome::Registered),
            _ => Some(Outcome::Written),
        };
        if let Some(outcome) = outcome {
            return outcome;
        }
    }
    let leader = answer.get("leader").and_then(Value::as_u64);
    let code = answer
        .get("error")
        .and_then(|code| serde_json::from_value::<ErrorCode>(code.clone()).ok());
    match code {
        Some(code) => Outcome::Failed {
            code,
            message: answer
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            leader,
        },
        None => Outcome::Failed {
            code: if op == "get" {
                ErrorCode::Unavailable
            } else {
                ErrorCode::Timeout
            },
            message: format!("the leader answered {answer}"),
            leader,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{client::fake, protocol::error_response};
    use serde_json::json;

    #[test]
    fn answers_become_outcomes() {
        assert_eq!(outcome_of(&json!({"ok":true}), "put"), Outcome::Written);
        assert_eq!(
            outcome_of(&json!({"ok":true,"value":"v"}), "get"),
            Outcome::Value(Some("v".into()))
        );
        assert_eq!(
            outcome_of(&json!({"ok":true,"value":null}), "get"),
            Outcome::Value(None)
        );
        assert_eq!(
            outcome_of(&json!({"ok":true,"session":7}), "register"),
            Outcome::Registered(7)
        );
        let refused =
            json!({"ok":false,"error":"not_leader","message":"m","leader":2,"leader_addr":"a"});
        assert_eq!(
            outcome_of(&refused, "put"),
            Outcome::Failed {
                code: ErrorCode::NotLeader,
                message: "m".into(),
                leader: Some(2)
            }
        );
        // Nonsense is an unknown outcome for a write, a failed read for a get.
        let odd = json!({"ok":false,"error":"frobbed"});
        assert!(matches!(
            outcome_of(&odd, "put"),
            Outcome::Failed {
                code: ErrorCode::Timeout,
                ..
            }
        ));
        assert!(matches!(
            outcome_of(&json!({"ok":true}), "get"),
            Outcome::Failed {
                code: ErrorCode::Unavailable,
                ..
            }
        ));
    }

    #[test]
    fn the_pool_lets_go_of_connections_to_a_node_that_no_longer_leads() {
        let (a, b) = (fake::start_kv(1), fake::start_kv(2));
        let forwarder = Forwarder::new(None, 30);
        let put = json!({"op":"put","key":"k","value":"v"});
        for (id, node) in [(1, &a), (2, &b)] {
            let leader = Leader {
                id,
                addr: node.addr.clone(),
            };
            assert_eq!(forwarder.forward(leader, &put, |_| None), Outcome::Written);
        }
        let idle = forwarder.idle.lock();
        assert_eq!(idle.len(), 1);
        assert_eq!(idle[0].0, b.addr);
    }

    #[test]
    fn hints_are_followed_a_few_times_and_an_unreachable_leader_applies_nothing() {
        let leader = fake::start_kv(2);
        let hint = leader.addr.clone();
        let follower = fake::Fake::start(move |_| {
            let refusal = error_response(None, ErrorCode::NotLeader, "no", Some(2), Some(&hint));
            fake::Action::Reply(refusal)
        });
        let forwarder = Forwarder::new(None, 30);
        let first = Leader {
            id: 3,
            addr: follower.addr.clone(),
        };
        let addr = leader.addr.clone();
        let outcome = forwarder.forward(first, &json!({"op":"put","key":"k","value":"v"}), |id| {
            (id == 2).then(|| addr.clone())
        });
        assert_eq!(outcome, Outcome::Written);
        let outcome = forwarder.forward(
            Leader {
                id: 2,
                addr: leader.addr.clone(),
            },
            &json!({"op":"get","key":"k"}),
            |_| None,
        );
        assert_eq!(
            outcome,
            Outcome::Value(Some("v".into())),
            "a pooled connection"
        );
        // Nobody listens there: certainly not applied.
        let addr = fake::refused_addr();
        let outcome = forwarder.forward(
            Leader { id: 2, addr },
            &json!({"op":"put","key":"k","value":"w"}),
            |_| None,
        );
        assert!(
            matches!(
                outcome,
                Outcome::Failed {
                    code: ErrorCode::Unavailable,
                    leader: Some(2),
                    ..
                }
            ),
            "{outcome:?}"
        );
    }
}
