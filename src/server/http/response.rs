//! Writing HTTP responses: the status for each answer, the status line, a few header
//! fields and the body.

use std::io::{self, Write};

use serde_json::Value;

use super::super::shared::Shared;
use crate::{
    protocol::{error_object, registered_response, value_response, ErrorCode},
    replica::Outcome,
};

pub(super) const JSON: &str = "application/json";
const TEXT: &str = "text/plain; charset=utf-8";
pub(super) const HTML: &str = "text/html; charset=utf-8";

/// How to write the answer to one request. The reader decides it when it reads the
/// request and the writer needs it when the answer is ready, so it travels beside the
/// request's slot (`Shapes`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Shape {
    /// The status of an answer the port made itself; an answer from the state thread
    /// or the leader takes its status from its outcome. 100: the interim
    /// `100 Continue`, with the request's own answer to follow.
    pub status: u16,
    /// The answer to a get is the value as the body, as text (REST form), not JSON.
    pub raw_value: bool,
    /// One more header field: `Allow` for a 405, `WWW-Authenticate` for a 401,
    /// `Access-Control-Allow-Origin` for what the dashboard reads from other nodes.
    pub header: Option<(&'static str, &'static str)>,
    /// The answer is this page (HTML), not JSON: the dashboard.
    pub page: Option<&'static str>,
    /// Close the connection after this answer.
    pub close: bool,
    /// The answer is the event stream (`event_stream`): it lasts as long as the
    /// connection.
    pub events: bool,
}

impl Shape {
    /// A JSON answer with `status`.
    pub fn json(status: u16, close: bool) -> Shape {
        Shape {
            status,
            raw_value: false,
            header: None,
            page: None,
            close,
            events: false,
        }
    }
}

/// The HTTP status of an error code of the protocol. `not_leader` reaches an HTTP
/// client only when forwarding could not follow the leader (it moved while the request
/// was on its way): 503 like `unavailable`, since it too means "not applied, try again",
/// with `leader_addr` naming the new leader's client address.
pub(super) fn status_of(code: ErrorCode) -> u16 {
    match code {
        ErrorCode::BadRequest => 400,
        ErrorCode::Unauthorized => 401,
        ErrorCode::SessionExpired => 409,
        ErrorCode::NotLeader | ErrorCode::Unavailable => 503,
        ErrorCode::Timeout => 504,
    }
}

/// The error object of an answer the port makes itself, with `status`.
pub(super) fn refusal(status: u16, message: &str) -> Value {
    let code = match status {
        401 => ErrorCode::Unauthorized.as_str(),
        404 => "not_found",
        _ => ErrorCode::BadRequest.as_str(),
    };
    error_object(None, code, message, None, None)
}

/// The status, content type and body of an answer from the state thread or the leader.
pub(super) fn of_outcome(
    outcome: Outcome,
    raw_value: bool,
    shared: &Shared,
) -> (u16, &'static str, Vec<u8>) {
    let json = |status, v: Value| (status, JSON, v.to_string().into_bytes());
    match outcome {
        Outcome::Written => (200, JSON, br#"{"ok":true}"#.to_vec()),
        Outcome::Registered(session) => json(200, registered_response(None, session)),
        Outcome::Value(Some(value)) if raw_value => (200, TEXT, value.into_bytes()),
        Outcome::Value(None) if raw_value => json(404, refusal(404, "no such key")),
        Outcome::Value(value) => json(200, value_response(None, value)),
        Outcome::Failed {
            code,
            message,
            leader,
        } => {
            let v = error_object(
                None,
                code.as_str(),
                &message,
                leader,
                shared.client_addr(leader),
            );
            json(status_of(code), v)
        }
    }
}

/// Writes one response.
pub(super) fn write(
    out: &mut impl Write,
    status: u16,
    content_type: &str,
    shape: &Shape,
    body: &[u8],
) -> io::Result<()> {
    write!(
        out,
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n",
        reason(status),
        body.len()
    )?;
    if let Some((name, value)) = shape.header {
        write!(out, "{name}: {value}\r\n")?;
    }
    let connection: &[u8] = if shape.close {
        b"Connection: close\r\n\r\n"
    } else {
        b"Connection: keep-alive\r\n\r\n"
    };
    out.write_all(connection)?;
    out.write_all(body)
}

/// Writes the interim `100 Continue`.
pub(super) fn write_continue(out: &mut impl Write) -> io::Result<()> {
    out.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_code_has_its_status_and_every_status_its_reason() {
        for (code, status) in [
            (ErrorCode::BadRequest, 400),
            (ErrorCode::Unauthorized, 401),
            (ErrorCode::SessionExpired, 409),
            (ErrorCode::NotLeader, 503),
            (ErrorCode::Unavailable, 503),
            (ErrorCode::Timeout, 504),
        ] {
            assert_eq!(status_of(code), status, "{code:?}");
        }
        for status in [200, 400, 401, 404, 405, 408, 409, 411, 413, 431, 503, 504] {
            assert!(!reason(status).is_empty(), "{status}");
        }
        assert_eq!(refusal(404, "x")["error"], "not_found");
        assert_eq!(refusal(413, "x")["error"], "bad_request");
        assert_eq!(refusal(401, "x")["error"], "unauthorized");
    }

    #[test]
    fn a_response_is_a_status_line_fields_and_the_body() {
        let mut out = Vec::new();
        let shape = Shape {
            header: Some(("Allow", "GET")),
            ..Shape::json(405, true)
        };
        write(&mut out, 405, JSON, &shape, b"{}").unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 405 Method Not Allowed\r\nContent-Type: application/json\r\n\
             Content-Length: 2\r\nAllow: GET\r\nConnection: close\r\n\r\n{}"
        );
    }
}
