//! Reading HTTP/1.1 requests off a connection: the head with `httparse`, the body by
//! `Content-Length`, within the port's size limits and deadlines; and the decoding of
//! percent-encoded paths and queries.
//!
//! Anything that leaves the framing in doubt ends the connection after one answer: a
//! head that does not parse, a `Transfer-Encoding`, a `Content-Length` that is not one
//! plain number, a body over the limit. Guessing where the next request starts is how
//! two parties come to disagree about it (request smuggling), so there is no guessing.

use std::{
    io::{self, Read},
    net::TcpStream,
    time::{Duration, Instant},
};

use crate::server::ClientTimeouts;

/// Longest request head (request line and header fields) accepted, in bytes.
pub(super) const MAX_HEAD: usize = 16 << 10;
/// Most header fields in one request.
pub(super) const MAX_HEADERS: usize = 64;
/// Bytes asked of the socket per read at least, and at most (a large body is read in
/// pieces of this size).
const READ_MIN: usize = 16 << 10;
const READ_MAX: usize = 256 << 10;
/// A read buffer that grew past this (a large body) is shrunk once it is empty again.
const KEEP_BUFFER: usize = 64 << 10;

/// One request's head: what the port needs of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Head {
    pub method: String,
    /// The path as sent (percent-encoded), without the query.
    pub path: String,
    /// What followed `?` in the target, as sent; empty if nothing did.
    pub query: String,
    /// The header fields in order: names in lower case, values as sent.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Bytes of the head itself.
    pub len: usize,
    /// The body's length: `Content-Length`, 0 without one.
    pub body_len: usize,
    /// The connection stays open after the answer: HTTP/1.1 unless `Connection: close`,
    /// HTTP/1.0 only with `Connection: keep-alive`; never after `HEAD`, whose answer
    /// must have no body while ours all have one (HEAD is not served), so that body
    /// cannot be taken for the next answer.
    pub keep_alive: bool,
    /// The client waits for `100 Continue` before it sends the body (`Expect:
    /// 100-continue`, as curl sends with larger bodies).
    pub expects_continue: bool,
}

impl Head {
    /// The value of the first header field called `name` (in lower case).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }
}

/// A request the port answers with an error status and then closes the connection,
/// since it cannot tell where the next request would start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Refusal {
    pub status: u16,
    pub message: String,
}

/// Why no request was read.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum ReadError {
    /// The client closed the connection, or it failed: nothing to answer (a request cut
    /// short included).
    Gone,
    /// Nothing arrived between requests for the idle timeout: closed without a word.
    Idle,
    /// Answer this, then close.
    Refused(Refusal),
}

fn refused(status: u16, message: impl Into<String>) -> ReadError {
    ReadError::Refused(Refusal {
        status,
        message: message.into(),
    })
}

/// Requests arriving on one connection, read through a buffer that may hold the start
/// of the next (pipelined) request.
///
/// Deadlines, as on the client port and with its [`ClientTimeouts`]: between requests
/// the connection may be silent for `idle`; from the first byte of a request, its head
/// and body must have arrived within `line` of waiting (a slow-loris client sending a
/// byte a second is cut off). Only time spent blocked waiting for the client counts,
/// not time the port spent making it wait (backpressure, a forward to the leader).
pub(super) struct Incoming<'a> {
    stream: &'a TcpStream,
    timeouts: ClientTimeouts,
    /// Longest body accepted.
    max_body: usize,
    buf: Vec<u8>,
    /// `buf[..start]` belongs to requests already taken.
    start: usize,
    /// Waiting left before the idle deadline, and before the current request's.
    idle_left: Duration,
    request_left: Duration,
    /// The read timeout last set on the socket.
    timeout_set: Option<Duration>,
}

impl<'a> Incoming<'a> {
    pub fn new(stream: &'a TcpStream, timeouts: ClientTimeouts, max_body: usize) -> Incoming<'a> {
        Incoming {
            stream,
            timeouts,
            max_body,
            buf: Vec::with_capacity(READ_MIN),
            start: 0,
            idle_left: timeouts.idle,
            request_left: timeouts.line,
            timeout_set: None,
        }
    }

    /// Reads the next request's head, and checks its framing.
    pub fn head(&mut self) -> Result<Head, ReadError> {
        self.compact();
        self.idle_left = self.timeouts.idle;
        self.request_left = self.timeouts.line;
        // Bytes known to hold no complete head: it can only end with a newline, so
        // the head is parsed again only when one arrives (not once per byte).
        let mut scanned = 0;
        loop {
            let pending = &self.buf[self.start..];
            if pending[scanned..].contains(&b'\n') {
                if let Some(head) = parse_head(pending, self.max_body)? {
                    return Ok(head);
                }
            }
            if pending.len() >= MAX_HEAD {
                return Err(refused(
                    431,
                    format!("request head longer than {MAX_HEAD} bytes"),
                ));
            }
            let begun = !pending.is_empty();
            scanned = pending.len();
            self.read_more(begun, READ_MIN)?;
        }
    }

    /// Whether the whole body of `head` has arrived already.
    pub fn has_body(&self, head: &Head) -> bool {
        self.buf.len() - self.start >= head.len + head.body_len
    }

    /// Reads the body `head` announced, and takes the request out of the buffer.
    pub fn body(&mut self, head: &Head) -> Result<Vec<u8>, ReadError> {
        let from = self.start + head.len;
        let end = from + head.body_len;
        while self.buf.len() < end {
            let want = (end - self.buf.len()).clamp(READ_MIN, READ_MAX);
            self.read_more(true, want)?;
        }
        self.start = end;
        Ok(self.buf[from..end].to_vec())
    }

    /// Drops the requests already taken from the buffer.
    fn compact(&mut self) {
        self.buf.drain(..self.start);
        self.start = 0;
        if self.buf.is_empty() && self.buf.capacity() > KEEP_BUFFER {
            self.buf = Vec::with_capacity(READ_MIN);
        }
    }

    /// Reads up to `want` more bytes into the buffer, waiting at most what is left of
    /// the request's deadline (`in_request`) or of the idle one.
    fn read_more(&mut self, in_request: bool, want: usize) -> Result<(), ReadError> {
        loop {
            let left = if in_request {
                self.request_left
            } else {
                self.idle_left
            };
            if left.is_zero() {
                return Err(if in_request {
                    let within = crate::client::fmt_duration(self.timeouts.line);
                    refused(
                        408,
                        format!("request not complete within {within} of its first byte"),
                    )
                } else {
                    ReadError::Idle
                });
            }
            // A shorter timeout than the time left only wakes us early to look again;
            // so the socket's timeout changes only when it must.
            if self.timeout_set.is_none_or(|set| set > left) {
                self.stream
                    .set_read_timeout(Some(left))
                    .map_err(|_| ReadError::Gone)?;
                self.timeout_set = Some(left);
            }
            let len = self.buf.len();
            self.buf.resize(len + want, 0);
            let started = Instant::now();
            let mut stream = self.stream;
            let result = stream.read(&mut self.buf[len..]);
            let waited = started.elapsed();
            if in_request {
                self.request_left = self.request_left.saturating_sub(waited);
            } else {
                self.idle_left = self.idle_left.saturating_sub(waited);
            }
            self.buf.truncate(len + *result.as_ref().unwrap_or(&0));
            match result {
                Ok(0) => return Err(ReadError::Gone),
                Ok(_) => return Ok(()),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    // Woken by a timeout shorter than the time left: set the full one.
                    self.timeout_set = None;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(ReadError::Gone),
            }
        }
    }
}

/// Parses a request head at the start of `bytes`: `None` while it is incomplete.
pub(super) fn parse_head(bytes: &[u8], max_body: usize) -> Result<Option<Head>, ReadError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut fields);
    let len = match request.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(refused(
                431,
                format!("more than {MAX_HEADERS} header fields"),
            ))
        }
        Err(e) => return Err(refused(400, format!("malformed HTTP request: {e}"))),
    };
    if len > MAX_HEAD {
        return Err(refused(
            431,
            format!("request head longer than {MAX_HEAD} bytes"),
        ));
    }
    // A complete parse has all three; the fallbacks are never used.
    let method = request.method.unwrap_or_default().to_string();
    let target = request.path.unwrap_or_default();
    let http_1_1 = request.version == Some(1);
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if !path.starts_with('/') {
        return Err(refused(
            400,
            format!("the request target must be a path such as /v1/status, not {target:?}"),
        ));
    }
    let mut headers = Vec::with_capacity(request.headers.len());
    let mut body_len: Option<u64> = None;
    let (mut close, mut keep_alive) = (false, false);
    let mut expects_continue = false;
    for field in request.headers.iter() {
        let name = field.name.to_ascii_lowercase();
        let value = field.value.trim_ascii();
        match name.as_str() {
            "transfer-encoding" => {
                return Err(refused(
                    411,
                    "Transfer-Encoding (such as chunked) is not supported: send the body \
                     with Content-Length",
                ))
            }
            "content-length" => {
                let n = parse_length(value)
                    .ok_or_else(|| refused(400, "Content-Length must be one decimal number"))?;
                if body_len.is_some_and(|m| m != n) {
                    return Err(refused(400, "conflicting Content-Length fields"));
                }
                body_len = Some(n);
            }
            "connection" => {
                for option in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                    close |= option.eq_ignore_ascii_case(b"close");
                    keep_alive |= option.eq_ignore_ascii_case(b"keep-alive");
                }
            }
            "expect" => expects_continue = value.eq_ignore_ascii_case(b"100-continue"),
            _ => {}
        }
        headers.push((name, value.to_vec()));
    }
    let body_len = body_len.unwrap_or(0);
    if body_len > max_body as u64 {
        return Err(refused(
            413,
            format!("body of {body_len} bytes; the limit is {max_body} (--max-line-bytes)"),
        ));
    }
    let keep_alive = !close && (http_1_1 || keep_alive) && method != "HEAD";
    Ok(Some(Head {
        method,
        path: path.to_string(),
        query: query.to_string(),
        headers,
        len,
        body_len: body_len as usize,
        keep_alive,
        expects_continue,
    }))
}

/// A `Content-Length` value: decimal digits only (no sign, no list), not too many.
fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// Decodes `%XX` escapes (and in a query, `+` as a space, as forms and browsers'
/// `URLSearchParams` encode it); the result must be UTF-8.
pub(super) fn percent_decode(text: &str, plus_is_space: bool) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = text
                    .get(i + 1..i + 3)
                    .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad percent-encoding in {text:?}"))?;
                out.push(hex);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| format!("{text:?} does not decode to UTF-8 text"))
}

/// The `name=value` pairs of a query, decoded. A name without `=` has the value "".
pub(super) fn query_pairs(query: &str) -> Result<Vec<(String, String)>, String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((percent_decode(name, true)?, percent_decode(value, true)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1000;

    fn head(text: &str) -> Result<Option<Head>, ReadError> {
        parse_head(text.as_bytes(), MAX)
    }

    fn status_of(text: &str) -> u16 {
        match head(text) {
            Err(ReadError::Refused(r)) => r.status,
            other => panic!("{text:?} was not refused: {other:?}"),
        }
    }

    #[test]
    fn a_complete_head_with_its_framing() {
        let text = "PUT /v1/kv/a%20b?consistency=stale HTTP/1.1\r\nHost: x\r\n\
                    Content-Length: 5\r\nExpect: 100-continue\r\nRaftkv-Seq:  7 \r\n\r\nhello";
        let h = head(text).unwrap().unwrap();
        assert_eq!(h.method, "PUT");
        assert_eq!(
            (h.path.as_str(), h.query.as_str()),
            ("/v1/kv/a%20b", "consistency=stale")
        );
        assert_eq!((h.len, h.body_len), (text.len() - 5, 5));
        assert!(h.keep_alive && h.expects_continue);
        assert_eq!(
            h.header("raftkv-seq"),
            Some(&b"7"[..]),
            "names lower-cased, values trimmed"
        );
        assert_eq!(
            head("GET / HTTP/1.1\r\nHost: x\r\n").unwrap(),
            None,
            "incomplete"
        );
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection() {
        let keep = |t: &str| head(t).unwrap().unwrap().keep_alive;
        assert!(keep("GET / HTTP/1.1\r\n\r\n"));
        assert!(!keep("GET / HTTP/1.1\r\nConnection: close\r\n\r\n"));
        assert!(!keep(
            "GET / HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n"
        ));
        assert!(!keep("GET / HTTP/1.0\r\n\r\n"));
        assert!(keep("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
        assert!(!keep("HEAD / HTTP/1.1\r\n\r\n"));
    }

    #[test]
    fn framing_in_doubt_is_refused() {
        assert_eq!(
            status_of("POST /put HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            411
        );
        for length in ["-1", "+5", "5, 5", "0x10", "", "99999999999999999999"] {
            let text = format!("POST /put HTTP/1.1\r\nContent-Length: {length}\r\n\r\n");
            assert_eq!(status_of(&text), 400, "{length:?}");
        }
        let twice = "POST /put HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n";
        assert_eq!(status_of(twice), 400);
        let same = "POST /put HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n";
        assert_eq!(head(same).unwrap().unwrap().body_len, 5);
        assert_eq!(
            status_of("POST /put HTTP/1.1\r\nContent-Length: 1001\r\n\r\n"),
            413
        );
        assert_eq!(status_of("garbage\r\n\r\n"), 400);
        assert_eq!(status_of("GET http://x/v1/status HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status_of("GET / HTTP/2.0\r\n\r\n"), 400);
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: y\r\n")).collect();
        assert_eq!(status_of(&format!("GET / HTTP/1.1\r\n{many}\r\n")), 431);
        let long = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "y".repeat(MAX_HEAD));
        assert_eq!(status_of(&long), 431);
    }

    #[test]
    fn percent_decoding_and_queries() {
        assert_eq!(percent_decode("a%2Fb%20c+d", false).unwrap(), "a/b c+d");
        assert_eq!(percent_decode("a+b", true).unwrap(), "a b");
        assert_eq!(percent_decode("%C3%A9", false).unwrap(), "é");
        for bad in ["%", "%4", "%zz", "%+1", "%FF"] {
            assert!(percent_decode(bad, false).is_err(), "{bad:?}");
        }
        let pairs = query_pairs("key=a%26b&&consistency=stale&flag").unwrap();
        assert_eq!(
            pairs,
            [("key", "a&b"), ("consistency", "stale"), ("flag", "")]
                .map(|(n, v)| (n.to_string(), v.to_string()))
        );
    }
}
