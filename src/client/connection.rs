//! One TCP connection to one node's client address: send a request line, read the
//! response line. Used by [`Client`](super::Client), and by the HTTP API's forwarding
//! from a follower to the leader (`server::http::forward`).

use std::{
    io::{self, BufReader, BufWriter, Write},
    net::{TcpStream, ToSocketAddrs},
    time::Duration,
};

use serde_json::Value;

use crate::{
    codec::{self, Line},
    protocol::Token,
};

/// Why one request/response exchange failed. The distinction is what the retry rules
/// of the client rest on (see the module docs of [`crate::client`]).
#[derive(Debug)]
pub(crate) enum CallError {
    /// The request certainly never reached the server: we could not connect.
    NotSent(String),
    /// The request was sent (or may have been, in part or whole), then the connection
    /// failed, closed or went silent before a complete, well-formed response arrived.
    Lost(String),
    /// The server answered our `auth` with `unauthorized` (and closed the connection):
    /// the request was not sent.
    Unauthorized,
}

/// An open connection with buffered reading and writing.
pub(crate) struct Conn {
    reader: BufReader<TcpStream>,
    writer: BufWriter<TcpStream>,
    /// The read timeout currently set on the socket, to skip redundant syscalls.
    read_timeout: Option<Duration>,
    buf: Vec<u8>,
}

impl Conn {
    /// Connects to `addr` (a `host:port` string, resolved here), trying each resolved
    /// address for at most `timeout`.
    pub(crate) fn connect(addr: &str, timeout: Duration) -> Result<Conn, CallError> {
        let targets = addr
            .to_socket_addrs()
            .map_err(|e| CallError::NotSent(format!("cannot resolve address: {e}")))?;
        let mut last = CallError::NotSent("address resolved to nothing".into());
        for target in targets {
            match TcpStream::connect_timeout(&target, timeout.max(Duration::from_millis(1))) {
                Ok(stream) => return Conn::from_stream(stream).map_err(CallError::NotSent),
                Err(e) => last = CallError::NotSent(describe(&e)),
            }
        }
        Err(last)
    }

    fn from_stream(stream: TcpStream) -> Result<Conn, String> {
        stream.set_nodelay(true).map_err(|e| describe(&e))?;
        let write_half = stream.try_clone().map_err(|e| describe(&e))?;
        Ok(Conn {
            reader: BufReader::with_capacity(64 * 1024, stream),
            writer: BufWriter::with_capacity(64 * 1024, write_half),
            read_timeout: None,
            buf: Vec::new(),
        })
    }

    /// Sends `auth` with `token` and reads the answer, before the connection carries
    /// anything else. A failure here means the request it was opened for was not sent.
    pub(crate) fn authenticate(
        &mut self,
        token: &Token,
        read_timeout: Duration,
        max_line: usize,
    ) -> Result<(), CallError> {
        let request = serde_json::json!({"op": "auth", "token": token.as_str()});
        let (response, line) = match self.call(&request, read_timeout, max_line) {
            Ok(answer) => answer,
            Err(CallError::Lost(e) | CallError::NotSent(e)) => {
                return Err(CallError::NotSent(format!("authenticating failed: {e}")))
            }
            Err(CallError::Unauthorized) => return Err(CallError::Unauthorized),
        };
        if response.get("ok") == Some(&Value::Bool(true)) {
            return Ok(());
        }
        match response.get("error").and_then(Value::as_str) {
            Some("unauthorized") => Err(CallError::Unauthorized),
            _ => Err(CallError::NotSent(format!(
                "the answer to auth was not ok: {line}"
            ))),
        }
    }

    /// Whether this idle connection still looks usable: the server has not closed it
    /// and has sent nothing unasked. Checking before reuse means that a node that
    /// restarted since our last request costs a reconnect, not an attempt whose outcome
    /// we would have to call unknown.
    pub(crate) fn is_reusable(&self) -> bool {
        if !self.reader.buffer().is_empty() {
            return false;
        }
        let stream = self.reader.get_ref();
        if stream.set_nonblocking(true).is_err() {
            return false;
        }
        let mut byte = [0u8; 1];
        let peeked = stream.peek(&mut byte);
        let restored = stream.set_nonblocking(false).is_ok();
        restored && matches!(peeked, Err(ref e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Sends `request` as one line and reads one response line, waiting at most
    /// `read_timeout` for it. Returns the parsed response and its exact text. On any
    /// error the connection must be dropped: its stream position is unknown.
    pub(crate) fn call(
        &mut self,
        request: &Value,
        read_timeout: Duration,
        max_line: usize,
    ) -> Result<(Value, String), CallError> {
        codec::write_json_line(&mut self.writer, request)
            .and_then(|()| self.writer.flush())
            .map_err(|e| CallError::Lost(format!("sending failed: {}", describe(&e))))?;
        let read_timeout = read_timeout.max(Duration::from_millis(1));
        if self.read_timeout != Some(read_timeout) {
            self.reader
                .get_ref()
                .set_read_timeout(Some(read_timeout))
                .map_err(|e| CallError::Lost(describe(&e)))?;
            self.read_timeout = Some(read_timeout);
        }
        match codec::read_line(&mut self.reader, &mut self.buf, max_line) {
            Ok(Line::Complete) => {}
            Ok(Line::Eof) => {
                return Err(CallError::Lost(
                    "the server closed the connection without answering".into(),
                ))
            }
            Ok(Line::Truncated) => {
                return Err(CallError::Lost(
                    "the server closed the connection in the middle of its answer".into(),
                ))
            }
            Ok(Line::TooLong) => {
                return Err(CallError::Lost(format!(
                    "response longer than {max_line} bytes"
                )))
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(CallError::Lost(format!(
                    "no response within {}",
                    crate::client::fmt_duration(read_timeout)
                )))
            }
            Err(e) => {
                return Err(CallError::Lost(format!(
                    "receiving failed: {}",
                    describe(&e)
                )))
            }
        }
        let line = String::from_utf8(std::mem::take(&mut self.buf))
            .map_err(|_| CallError::Lost("response is not valid UTF-8".into()))?;
        match serde_json::from_str::<Value>(&line) {
            Ok(value @ Value::Object(_)) => Ok((value, line)),
            Ok(_) => Err(CallError::Lost("response is not a JSON object".into())),
            Err(e) => Err(CallError::Lost(format!("response is not valid JSON: {e}"))),
        }
    }
}

/// A short description of an I/O error, without the "(os error N)" noise.
pub(super) fn describe(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".into(),
        io::ErrorKind::ConnectionReset => "connection reset by the server".into(),
        io::ErrorKind::ConnectionAborted => "connection aborted".into(),
        io::ErrorKind::BrokenPipe => "connection closed by the server".into(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => "timed out".into(),
        _ => {
            let text = e.to_string();
            match text.find(" (os error") {
                Some(i) => text[..i].to_string(),
                None => text,
            }
        }
    }
}
