//! The client protocol of docs/protocol.md §3: request parsing (server side), and the
//! response shapes both sides share.
//!
//! Requests are parsed from a generic JSON value by hand rather than by derive, so every
//! way a request can be wrong gets its own clear `bad_request` message, and the `"id"`
//! is echoed whenever the line was a JSON object at all.

use std::{fmt, path::Path};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{
    error::{self, Error},
    kv::{Session, WriteOp, MAX_KEY_BYTES, MAX_VALUE_BYTES},
};

/// Default longest request line a node accepts from a client, in bytes: room for a
/// maximal value even when every byte is a control character escaped as `\u00XX`
/// (6 bytes each), plus the key and the other fields.
pub const DEFAULT_MAX_CLIENT_LINE: usize = 8 * 1024 * 1024;

/// One parsed client request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Echoed verbatim in the response.
    pub id: Option<Value>,
    pub op: Op,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Get {
        key: String,
        stale: bool,
    },
    Write {
        key: String,
        op: WriteOp,
        session: Option<Session>,
    },
    /// Open a registered session (docs/protocol.md §3.6).
    Register,
    Status,
    /// Prove knowledge of the client token on this connection (docs/protocol.md §3.11).
    Auth {
        token: String,
    },
}

/// The error codes of docs/protocol.md §3.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not accepted here and never applied; retry at `leader_addr`.
    NotLeader,
    /// Outcome unknown; retry with the same client/seq to learn it.
    Timeout,
    /// No quorum reachable; nothing applied.
    Unavailable,
    /// The request itself is wrong.
    BadRequest,
    /// Not applied by this request: its session expired (or never existed). An
    /// earlier attempt of the same write may have been applied before it expired.
    SessionExpired,
    /// Not looked at: the connection has not authenticated (or gave a wrong token).
    Unauthorized,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::NotLeader => "not_leader",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::SessionExpired => "session_expired",
            ErrorCode::Unauthorized => "unauthorized",
        }
    }
}

/// The client token (docs/protocol.md §3.11): what a node started with
/// `--client-token-file` asks of every connection, and what a client sends in `auth`.
///
/// Its `Debug` form hides the text, so that options holding one can be printed. `==`
/// is there for comparing options; a node checks a token with [`Token::matches`].
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// A token with this text; `None` if it is empty.
    pub fn new(text: impl Into<String>) -> Option<Token> {
        let text = text.into();
        (!text.is_empty()).then_some(Token(text))
    }

    /// Reads a token file: its bytes with trailing whitespace (the final newline an
    /// editor adds) removed. The text must be UTF-8, since the token travels in a JSON
    /// string, and must not be empty: an empty file is a mistake, not "no token".
    pub fn read_file(path: &Path) -> error::Result<Token> {
        let bytes = std::fs::read(path)
            .map_err(|e| Error::io(format!("cannot read token file {}", path.display()), e))?;
        let text = String::from_utf8(bytes).map_err(|_| {
            Error::Config(format!("token file {} is not UTF-8 text", path.display()))
        })?;
        Token::new(text.trim_end()).ok_or_else(|| {
            Error::Config(format!(
                "token file {} is empty (or only whitespace)",
                path.display()
            ))
        })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `given` is this token, in a time that depends on this token's length
    /// only, never on how much of `given` is right: every byte of the token is
    /// compared, against `given` repeated as needed, and the differences are
    /// accumulated without an early exit. (The length of the token is the only thing
    /// its timing could tell, and it is the same for every attempt.)
    pub fn matches(&self, given: &str) -> bool {
        let (token, given) = (self.0.as_bytes(), given.as_bytes());
        if given.is_empty() {
            return false;
        }
        let mut diff = u8::from(token.len() != given.len());
        for (i, byte) in token.iter().enumerate() {
            diff |= byte ^ given[i % given.len()];
        }
        std::hint::black_box(diff) == 0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<hidden>)")
    }
}

/// A request that could not be parsed: what to answer, and the id to echo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadRequest {
    pub id: Option<Value>,
    pub message: String,
}

/// Parses one request line.
pub fn parse_request(line: &[u8]) -> Result<Request, BadRequest> {
    let value: Value = serde_json::from_slice(line).map_err(|e| BadRequest {
        id: None,
        message: format!("invalid JSON: {e}"),
    })?;
    let Value::Object(obj) = value else {
        return Err(BadRequest {
            id: None,
            message: "a request must be a JSON object".into(),
        });
    };
    parse_request_object(&obj)
}

/// Parses one request given as a JSON object: a line's, or one the HTTP API built from
/// a path, query, headers and body, so both get the same checks and messages.
pub fn parse_request_object(obj: &Map<String, Value>) -> Result<Request, BadRequest> {
    let bad = |id: &Option<Value>, message: String| BadRequest {
        id: id.clone(),
        message,
    };
    let id = obj.get("id").cloned();
    let op = match obj.get("op") {
        Some(Value::String(op)) => op.as_str(),
        Some(_) => return Err(bad(&id, "\"op\" must be a string".into())),
        None => return Err(bad(&id, "missing \"op\"".into())),
    };
    let op = match op {
        "get" => {
            let key = key_field(obj).map_err(|m| bad(&id, m))?;
            let stale = match obj.get("consistency") {
                None | Some(Value::Null) => false,
                Some(Value::String(c)) if c == "linearizable" => false,
                Some(Value::String(c)) if c == "stale" => true,
                Some(_) => {
                    return Err(bad(
                        &id,
                        "\"consistency\" must be \"stale\" or \"linearizable\"".into(),
                    ))
                }
            };
            Op::Get { key, stale }
        }
        "put" | "append" | "delete" => {
            let key = key_field(obj).map_err(|m| bad(&id, m))?;
            let write = match op {
                "put" => WriteOp::Put {
                    value: value_field(obj).map_err(|m| bad(&id, m))?,
                },
                "append" => WriteOp::Append {
                    value: value_field(obj).map_err(|m| bad(&id, m))?,
                },
                _ => WriteOp::Delete,
            };
            let session = session_fields(obj).map_err(|m| bad(&id, m))?;
            Op::Write {
                key,
                op: write,
                session,
            }
        }
        "register" => Op::Register,
        "status" => Op::Status,
        "auth" => match obj.get("token") {
            Some(Value::String(token)) => Op::Auth {
                token: token.clone(),
            },
            Some(_) => return Err(bad(&id, "\"token\" must be a string".into())),
            None => return Err(bad(&id, "missing \"token\"".into())),
        },
        other => {
            let shown: String = other.chars().take(40).collect();
            return Err(bad(
                &id,
                format!(
                    "unknown op {shown:?} (expected get, put, append, delete, register, status \
                     or auth)"
                ),
            ));
        }
    };
    Ok(Request { id, op })
}

fn key_field(obj: &Map<String, Value>) -> Result<String, String> {
    match obj.get("key") {
        Some(Value::String(k)) if k.len() > MAX_KEY_BYTES => Err(format!(
            "key is {} bytes; the limit is {MAX_KEY_BYTES}",
            k.len()
        )),
        Some(Value::String(k)) => Ok(k.clone()),
        Some(_) => Err("\"key\" must be a string".into()),
        None => Err("missing \"key\"".into()),
    }
}

fn value_field(obj: &Map<String, Value>) -> Result<String, String> {
    match obj.get("value") {
        Some(Value::String(v)) if v.len() > MAX_VALUE_BYTES => Err(format!(
            "value is {} bytes; the limit is {MAX_VALUE_BYTES}",
            v.len()
        )),
        Some(Value::String(v)) => Ok(v.clone()),
        Some(_) => Err("\"value\" must be a string".into()),
        None => Err("missing \"value\"".into()),
    }
}

/// The exactly-once fields of a write: `session` + `seq` (registered), `client` + `seq`
/// (named), or none of them.
fn session_fields(obj: &Map<String, Value>) -> Result<Option<Session>, String> {
    let present = |name| obj.get(name).filter(|v| !v.is_null());
    let (session, client, seq) = (present("session"), present("client"), present("seq"));
    let seq = match seq {
        None => None,
        Some(s) => match s.as_u64() {
            Some(seq) if seq >= 1 => Some(seq),
            _ => return Err("\"seq\" must be an integer from 1 to 2^64-1".into()),
        },
    };
    match (session, client, seq) {
        (None, None, None) => Ok(None),
        (Some(_), Some(_), _) => Err("give \"session\" or \"client\", not both".into()),
        (Some(n), None, Some(seq)) => match n.as_u64() {
            Some(n) if n >= 1 => Ok(Some(Session::registered(n, seq))),
            _ => Err("\"session\" must be a session number from register".into()),
        },
        (Some(_), None, None) => Err("\"session\" and \"seq\" must be given together".into()),
        (None, Some(Value::String(c)), Some(seq)) => {
            if c.is_empty() {
                return Err("\"client\" must be a non-empty string".into());
            }
            if c.len() > MAX_KEY_BYTES {
                return Err(format!("\"client\" is longer than {MAX_KEY_BYTES} bytes"));
            }
            Ok(Some(Session::named(c.clone(), seq)))
        }
        (None, Some(Value::String(_)), None) => {
            Err("\"client\" and \"seq\" must be given together".into())
        }
        (None, Some(_), _) => Err("\"client\" must be a non-empty string".into()),
        (None, None, Some(_)) => Err("\"seq\" needs \"session\" (or \"client\") beside it".into()),
    }
}

/// Builds `{"ok":true}` plus extra fields, echoing `id`.
pub fn ok_response(id: Option<Value>, extra: Map<String, Value>) -> Value {
    let mut obj = Map::new();
    if let Some(id) = id {
        obj.insert("id".into(), id);
    }
    obj.insert("ok".into(), Value::Bool(true));
    obj.extend(extra);
    Value::Object(obj)
}

/// Builds `{"ok":true,"value":...}` for a get.
pub fn value_response(id: Option<Value>, value: Option<String>) -> Value {
    let mut extra = Map::new();
    extra.insert("value".into(), value.map_or(Value::Null, Value::String));
    ok_response(id, extra)
}

/// Builds `{"ok":true,"session":N}`, the answer to a `register`.
pub fn registered_response(id: Option<Value>, session: u64) -> Value {
    let mut extra = Map::new();
    extra.insert("session".into(), Value::from(session));
    ok_response(id, extra)
}

/// Builds an error response. `leader` is the leader's id, `leader_addr` its client
/// address; both are always present (possibly null), as docs/protocol.md promises.
pub fn error_response(
    id: Option<Value>,
    code: ErrorCode,
    message: &str,
    leader: Option<u64>,
    leader_addr: Option<&str>,
) -> Value {
    error_object(id, code.as_str(), message, leader, leader_addr)
}

/// Builds an error object with any `code`: those of [`ErrorCode`], and the HTTP API's
/// `not_found` (docs/protocol.md §5), which the line protocol never sends.
pub fn error_object(
    id: Option<Value>,
    code: &str,
    message: &str,
    leader: Option<u64>,
    leader_addr: Option<&str>,
) -> Value {
    let mut obj = Map::new();
    if let Some(id) = id {
        obj.insert("id".into(), id);
    }
    obj.insert("ok".into(), Value::Bool(false));
    obj.insert("error".into(), Value::String(code.into()));
    obj.insert("message".into(), Value::String(message.into()));
    obj.insert("leader".into(), leader.map_or(Value::Null, Value::from));
    obj.insert(
        "leader_addr".into(),
        leader_addr.map_or(Value::Null, |a| Value::String(a.into())),
    );
    Value::Object(obj)
}

/// The fields of a `status` response (docs/protocol.md §3, "Status").
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub node: u64,
    pub role: String,
    pub term: u64,
    pub leader: Option<u64>,
    pub leader_addr: Option<String>,
    pub commit_index: u64,
    pub applied_index: u64,
    pub last_log_index: u64,
    pub members: Vec<u64>,
    /// The newest snapshot's last included entry (0 and 0: none yet).
    #[serde(default)]
    pub snapshot_index: u64,
    #[serde(default)]
    pub snapshot_term: u64,
    /// The first entry the log still holds in memory (the ones before it were
    /// compacted into the snapshot).
    #[serde(default)]
    pub first_log_index: u64,
    /// Bytes of write-ahead log on disk.
    #[serde(default)]
    pub wal_bytes: u64,
    /// Clients with a session (exactly-once state) in the state machine.
    #[serde(default)]
    pub sessions: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(s: &str) -> Result<Request, BadRequest> {
        parse_request(s.as_bytes())
    }

    #[test]
    fn parses_every_documented_example() {
        let r = parse(r#"{"op":"put","key":"foo","value":"bar","client":"c7","seq":1}"#).unwrap();
        assert_eq!(
            r.op,
            Op::Write {
                key: "foo".into(),
                op: WriteOp::Put {
                    value: "bar".into()
                },
                session: Some(Session::named("c7", 1))
            }
        );
        let r = parse(r#"{"op":"get","key":"foo","id":42}"#).unwrap();
        assert_eq!(r.id, Some(json!(42)));
        assert_eq!(
            r.op,
            Op::Get {
                key: "foo".into(),
                stale: false
            }
        );
        let r = parse(r#"{"op":"get","key":"foo","consistency":"stale"}"#).unwrap();
        assert_eq!(
            r.op,
            Op::Get {
                key: "foo".into(),
                stale: true
            }
        );
        assert_eq!(parse(r#"{"op":"status"}"#).unwrap().op, Op::Status);
        let r = parse(r#"{"op":"delete","key":"foo","client":"c7","seq":3}"#).unwrap();
        assert!(matches!(
            r.op,
            Op::Write {
                op: WriteOp::Delete,
                ..
            }
        ));
    }

    #[test]
    fn parses_register_and_the_registered_session_form() {
        let r = parse(r#"{"op":"register","id":"r"}"#).unwrap();
        assert_eq!((r.op, r.id), (Op::Register, Some(json!("r"))));
        let r = parse(r#"{"op":"append","key":"k","value":"v","session":12,"seq":3}"#).unwrap();
        assert_eq!(
            r.op,
            Op::Write {
                key: "k".into(),
                op: WriteOp::Append { value: "v".into() },
                session: Some(Session::registered(12, 3))
            }
        );
        // null counts as absent, as for client and seq; so does the session on a get.
        let r = parse(r#"{"op":"delete","key":"k","session":null,"seq":null}"#).unwrap();
        assert!(matches!(r.op, Op::Write { session: None, .. }));
        assert!(parse(r#"{"op":"get","key":"k","session":"x"}"#).is_ok());
        for (line, message) in [
            (
                r#"{"op":"put","key":"k","value":"v","session":1,"client":"c","seq":1}"#,
                "not both",
            ),
            (
                r#"{"op":"put","key":"k","value":"v","session":1}"#,
                "together",
            ),
            (
                r#"{"op":"put","key":"k","value":"v","session":0,"seq":1}"#,
                "session number",
            ),
            (
                r#"{"op":"put","key":"k","value":"v","session":"7","seq":1}"#,
                "session number",
            ),
            (r#"{"op":"put","key":"k","value":"v","seq":4}"#, "needs"),
            (r#"{"op":"regster"}"#, "register"),
        ] {
            let err = parse(line).expect_err(line);
            assert!(err.message.contains(message), "{line}: {}", err.message);
        }
    }

    #[test]
    fn the_register_answer_and_the_session_expired_code() {
        assert_eq!(
            registered_response(Some(json!(4)), 17),
            json!({"id": 4, "ok": true, "session": 17})
        );
        let v = error_response(None, ErrorCode::SessionExpired, "gone", None, None);
        assert_eq!(v["error"], "session_expired");
        assert_eq!(
            serde_json::from_value::<ErrorCode>(json!("session_expired")).unwrap(),
            ErrorCode::SessionExpired
        );
    }

    #[test]
    fn bad_requests_echo_the_id_when_the_line_was_an_object() {
        for (line, id) in [
            (r#"{"op":"frob","id":"x"}"#, Some(json!("x"))),
            (r#"{"op":"put","key":"k","id":7}"#, Some(json!(7))),
            (r#"{"op":"put","key":"k","value":1,"id":7}"#, Some(json!(7))),
            (
                r#"{"op":"put","key":"k","value":"v","client":"c","id":1}"#,
                Some(json!(1)),
            ),
            (
                r#"{"op":"put","key":"k","value":"v","seq":3,"id":1}"#,
                Some(json!(1)),
            ),
            (
                r#"{"op":"put","key":"k","value":"v","client":"","seq":3}"#,
                None,
            ),
            (
                r#"{"op":"put","key":"k","value":"v","client":"c","seq":0}"#,
                None,
            ),
            (
                r#"{"op":"put","key":"k","value":"v","client":"c","seq":-2}"#,
                None,
            ),
            (
                r#"{"op":"put","key":"k","value":"v","client":"c","seq":1.5}"#,
                None,
            ),
            (r#"{"op":"get","key":"k","consistency":"eventual"}"#, None),
            (r#"{"key":"k"}"#, None),
            (r#"[1,2]"#, None),
            (r#"{"op":"get""#, None),
        ] {
            let err = parse(line).expect_err(line);
            assert_eq!(err.id, id, "{line}");
            assert!(!err.message.is_empty());
        }
    }

    #[test]
    fn parses_auth_and_the_unauthorized_code() {
        let r = parse(r#"{"op":"auth","token":"s3cret","id":1}"#).unwrap();
        assert_eq!(
            (r.op, r.id),
            (
                Op::Auth {
                    token: "s3cret".into()
                },
                Some(json!(1))
            )
        );
        for (line, message) in [
            (r#"{"op":"auth","id":2}"#, "missing \"token\""),
            (r#"{"op":"auth","token":7,"id":2}"#, "must be a string"),
        ] {
            let err = parse(line).expect_err(line);
            assert_eq!(err.id, Some(json!(2)));
            assert!(err.message.contains(message), "{line}: {}", err.message);
        }
        let v = error_response(None, ErrorCode::Unauthorized, "no", None, None);
        assert_eq!(v["error"], "unauthorized");
        assert_eq!(
            serde_json::from_value::<ErrorCode>(json!("unauthorized")).unwrap(),
            ErrorCode::Unauthorized
        );
    }

    #[test]
    fn a_token_matches_only_itself_and_hides_in_debug_output() {
        let token = Token::new("correct horse").unwrap();
        assert!(token.matches("correct horse"));
        for wrong in [
            "",
            "c",
            "correct hors",
            "correct horsf",
            "correct horse ",
            "x",
        ] {
            assert!(!token.matches(wrong), "{wrong:?}");
        }
        // The given text is repeated to the token's length: a prefix that repeats
        // into the token still differs in length.
        let token = Token::new("abab").unwrap();
        assert!(!token.matches("ab"));
        assert_eq!(format!("{token:?}"), "Token(<hidden>)");
        assert!(Token::new("").is_none());
    }

    #[test]
    fn a_token_file_is_trimmed_at_the_end_and_must_hold_something() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, " s3cret \r\n\n").unwrap();
        assert_eq!(Token::read_file(&path).unwrap().as_str(), " s3cret");
        std::fs::write(&path, " \n\t\n").unwrap();
        let err = Token::read_file(&path).unwrap_err().to_string();
        assert!(err.contains("is empty"), "{err}");
        std::fs::write(&path, b"\xff\xfe").unwrap();
        let err = Token::read_file(&path).unwrap_err().to_string();
        assert!(err.contains("UTF-8"), "{err}");
        let err = Token::read_file(&dir.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot read token file"), "{err}");
    }

    #[test]
    fn oversized_keys_and_values_are_refused() {
        let big_key = "k".repeat(MAX_KEY_BYTES + 1);
        let line = json!({"op":"get","key":big_key}).to_string();
        assert!(parse(&line).unwrap_err().message.contains("limit"));
        let big = "v".repeat(MAX_VALUE_BYTES + 1);
        let line = json!({"op":"put","key":"k","value":big}).to_string();
        assert!(parse(&line).unwrap_err().message.contains("limit"));
    }

    #[test]
    fn error_responses_always_carry_leader_fields() {
        let v = error_response(
            Some(json!(1)),
            ErrorCode::NotLeader,
            "no",
            Some(2),
            Some("a:1"),
        );
        assert_eq!(v["error"], "not_leader");
        assert_eq!(v["leader_addr"], "a:1");
        assert_eq!(v["id"], 1);
        let v = error_response(None, ErrorCode::Unavailable, "no", None, None);
        assert!(v.get("leader_addr").unwrap().is_null());
        assert!(v.get("id").is_none());
    }
}
