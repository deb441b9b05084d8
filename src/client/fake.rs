//! A fake raftkv node for tests: a `TcpListener` thread speaking the client protocol,
//! whose every answer is decided by a test-supplied handler.

use std::{
    io::{BufReader, BufWriter, Write},
    net::{TcpListener, TcpStream},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    thread,
};

use parking_lot::Mutex;
use serde_json::{json, Value};

use crate::{
    codec::{self, Line},
    kv::{Command, SessionLimits, Stamp, Store, WriteResult},
    protocol::{self, ErrorCode, Op},
};

/// What the fake does with one request.
pub(crate) enum Action {
    /// Answer with this response line.
    Reply(Value),
    /// Close the connection without answering.
    Close,
    /// Never answer (keep reading further requests).
    Ignore,
}

type Handler = Box<dyn FnMut(&Value) -> Action + Send>;

/// A running fake node. Its threads live until the test process exits.
pub(crate) struct Fake {
    /// Its client address.
    pub addr: String,
    seen: Arc<Mutex<Vec<Value>>>,
}

impl Fake {
    /// Starts a fake node on a free loopback port; `handler` decides every answer.
    pub fn start(handler: impl FnMut(&Value) -> Action + Send + 'static) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Mutex<Handler>> = Arc::new(Mutex::new(Box::new(handler)));
        let seen2 = seen.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (handler, seen) = (handler.clone(), seen2.clone());
                thread::spawn(move || serve(stream, &handler, &seen));
            }
        });
        Fake { addr, seen }
    }

    /// Every request received so far, in arrival order.
    pub fn seen(&self) -> Vec<Value> {
        self.seen.lock().clone()
    }
}

fn serve(stream: TcpStream, handler: &Mutex<Handler>, seen: &Mutex<Vec<Value>>) {
    let _ = stream.set_nodelay(true);
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = BufWriter::new(stream);
    let mut buf = Vec::new();
    while let Ok(Line::Complete) =
        codec::read_line(&mut reader, &mut buf, protocol::DEFAULT_MAX_CLIENT_LINE)
    {
        let request: Value = match serde_json::from_slice(&buf) {
            Ok(v) => v,
            Err(e) => {
                let r = protocol::error_response(
                    None,
                    ErrorCode::BadRequest,
                    &e.to_string(),
                    None,
                    None,
                );
                let _ = codec::write_json_line(&mut writer, &r).and_then(|()| writer.flush());
                continue;
            }
        };
        seen.lock().push(request.clone());
        let action = (handler.lock())(&request);
        match action {
            Action::Reply(response) => {
                if codec::write_json_line(&mut writer, &response)
                    .and_then(|()| writer.flush())
                    .is_err()
                {
                    return;
                }
            }
            Action::Close => return,
            Action::Ignore => {}
        }
    }
}

/// An address where nothing listens: connecting is refused.
pub(crate) fn refused_addr() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// A `not_leader` response with an optional hint.
pub(crate) fn not_leader(hint: Option<&str>) -> Value {
    protocol::error_response(None, ErrorCode::NotLeader, "not the leader", None, hint)
}

/// An error response with `code` and no leader hint.
pub(crate) fn error(code: ErrorCode) -> Value {
    protocol::error_response(None, code, "fake says so", None, None)
}

/// `{"ok":true}`.
pub(crate) fn ok() -> Value {
    json!({"ok": true})
}

/// How long a session lives in the fake cluster of [`kv`], in ms of its clock.
pub(crate) const FAKE_SESSION_TIMEOUT_MS: u64 = 1000;

/// A handler behaving like a healthy one-node cluster's leader with id `node`: the real
/// request parser and state machine (sessions included) behind the real protocol. Its
/// cluster clock is `clock` (ms), which the test moves; sessions expire after
/// [`FAKE_SESSION_TIMEOUT_MS`] of it.
pub(crate) fn kv(
    node: u64,
    addr_of_self: Arc<Mutex<String>>,
    clock: Arc<AtomicU64>,
) -> impl FnMut(&Value) -> Action {
    let mut store = Store::new();
    move |request| {
        let request = match protocol::parse_request(request.to_string().as_bytes()) {
            Ok(r) => r,
            Err(bad) => {
                return Action::Reply(protocol::error_response(
                    bad.id,
                    ErrorCode::BadRequest,
                    &bad.message,
                    None,
                    None,
                ))
            }
        };
        let mut command = match request.op {
            Op::Get { key, .. } => {
                let value = store.get(&key).map(str::to_string);
                return Action::Reply(protocol::value_response(request.id, value));
            }
            Op::Write { key, op, session } => Command::write(key, op, session),
            Op::Register => Command::register(),
            Op::Auth { .. } => {
                return Action::Reply(protocol::ok_response(request.id, Default::default()))
            }
            Op::Status => {
                let addr = addr_of_self.lock().clone();
                let mut status = serde_json::to_value(protocol::Status {
                    node,
                    role: "leader".into(),
                    term: 3,
                    leader: Some(node),
                    leader_addr: Some(addr),
                    commit_index: 7,
                    applied_index: 7,
                    last_log_index: 7,
                    members: vec![node],
                    sessions: store.sessions() as u64,
                    ..Default::default()
                })
                .unwrap();
                status["ok"] = Value::Bool(true);
                return Action::Reply(status);
            }
        };
        command.stamp = Stamp {
            time: clock.load(Ordering::SeqCst),
            sessions: Some(SessionLimits {
                timeout_ms: FAKE_SESSION_TIMEOUT_MS,
                max_sessions: 1000,
            }),
        };
        let error = |code, message: &str| {
            protocol::error_response(request.id.clone(), code, message, None, None)
        };
        Action::Reply(match store.apply(&command) {
            WriteResult::Ok => protocol::ok_response(request.id.clone(), Default::default()),
            WriteResult::Registered { session } => {
                protocol::registered_response(request.id.clone(), session)
            }
            WriteResult::SessionExpired | WriteResult::UnknownSession => {
                error(ErrorCode::SessionExpired, "the session expired (fake)")
            }
            WriteResult::SeqReused { .. } | WriteResult::StaleSeq { .. } => {
                error(ErrorCode::BadRequest, "seq reused or stale (fake)")
            }
        })
    }
}

/// Starts a fake healthy one-node cluster (see [`kv`]) whose clock stands still.
pub(crate) fn start_kv(node: u64) -> Fake {
    start_kv_with_clock(node).0
}

/// Starts a fake healthy one-node cluster (see [`kv`]) and returns its clock.
pub(crate) fn start_kv_with_clock(node: u64) -> (Fake, Arc<AtomicU64>) {
    let me = Arc::new(Mutex::new(String::new()));
    let clock = Arc::new(AtomicU64::new(0));
    let fake = Fake::start(kv(node, me.clone(), clock.clone()));
    *me.lock() = fake.addr.clone();
    (fake, clock)
}
