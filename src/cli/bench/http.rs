//! `raftkv bench --http`: the same load over the HTTP API (docs/protocol.md §5), so the
//! two front doors can be compared. Each client keeps one HTTP/1.1 keep-alive connection
//! to the leader's `http` address (from the cluster file) and pipelines `--pipeline`
//! requests on it, as it would on the client port. Requests use the simple form, whose
//! answers are the client protocol's JSON objects: a get is `GET /get?key=K`, a write
//! `POST /put` (`/append`, `/delete`) with the very request object the client protocol
//! would carry as its body (the simple form takes the same fields and sets `op` from the
//! path). The token, if any, goes in `Authorization` on every request.

use std::{
    collections::BTreeMap,
    io::{self, BufRead, Read, Write},
    path::Path,
};

use super::BenchOp;
use crate::{
    cli::{Target, TargetArgs, CLUSTER_ENV, CLUSTER_FILE},
    config::ClusterConfig,
    protocol::Token,
};

/// Longest response head read.
const MAX_HEAD: usize = 64 << 10;

/// Where the nodes serve HTTP, and what every request carries (`BenchConfig::http`).
#[derive(Clone, Debug)]
pub struct HttpTarget {
    /// The `http` address of each node, by its client address (leader searches and
    /// `not_leader` hints give client addresses).
    by_client: BTreeMap<String, String>,
    /// Sent in `Authorization` with every request (its `Debug` form hides it).
    token: Option<Token>,
}

impl HttpTarget {
    /// The nodes' HTTP addresses from the cluster file the client flags name: `--servers`
    /// lists client addresses only, so it cannot be used.
    pub(super) fn from_args(
        target: &TargetArgs,
        token: Option<&Token>,
    ) -> Result<HttpTarget, String> {
        let found = Target::find(
            target,
            std::env::var_os(CLUSTER_ENV),
            Path::new(CLUSTER_FILE).exists(),
        )?;
        let path = match &found {
            Target::Servers(_) => {
                return Err(
                    "--http needs a cluster file (the nodes' http addresses are in it), \
                            not --servers"
                        .into(),
                )
            }
            Target::Flag(path) | Target::Env(path) | Target::CurrentDir(path) => path,
        };
        let config = ClusterConfig::load(path).map_err(|e| e.to_string())?;
        let by_client: BTreeMap<String, String> = config
            .nodes
            .iter()
            .filter_map(|n| Some((n.client.clone(), n.http.clone()?)))
            .collect();
        if by_client.is_empty() {
            return Err(format!(
                "--http: no node of {} has an \"http\" address",
                path.display()
            ));
        }
        Ok(HttpTarget {
            by_client,
            token: token.cloned(),
        })
    }

    /// The HTTP address of the node at client address `client`.
    pub(super) fn addr_of(&self, client: &str) -> io::Result<&str> {
        self.by_client
            .get(client)
            .map(String::as_str)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("the node at {client} has no http address in the cluster file"),
                )
            })
    }

    /// Writes the request for one operation on `key`; `request` is the client
    /// protocol's request object for it.
    pub(super) fn write_request(
        &self,
        out: &mut impl Write,
        kind: BenchOp,
        key: &str,
        request: &str,
    ) -> io::Result<()> {
        match kind {
            // The bench's keys are letters, digits and dashes: nothing to encode.
            BenchOp::Get => write!(out, "GET /get?key={key} HTTP/1.1\r\n")?,
            BenchOp::StaleGet => write!(out, "GET /get?key={key}&consistency=stale HTTP/1.1\r\n")?,
            BenchOp::Put | BenchOp::Append | BenchOp::Delete => write!(
                out,
                "POST /{} HTTP/1.1\r\nContent-Length: {}\r\n",
                kind.name(),
                request.len()
            )?,
        }
        if let Some(token) = &self.token {
            write!(out, "Authorization: Bearer {}\r\n", token.as_str())?;
        }
        out.write_all(b"Host: raftkv\r\n\r\n")?;
        match kind {
            BenchOp::Get | BenchOp::StaleGet => Ok(()),
            BenchOp::Put | BenchOp::Append | BenchOp::Delete => out.write_all(request.as_bytes()),
        }
    }
}

/// Reads one response and puts its body in `body`; false if the connection closed
/// before it began.
pub(super) fn read_response(reader: &mut impl BufRead, body: &mut Vec<u8>) -> io::Result<bool> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let before = head.len();
        let n = reader
            .by_ref()
            .take(MAX_HEAD as u64)
            .read_until(b'\n', &mut head)?;
        if n == 0 {
            return match before {
                0 => Ok(false),
                _ => Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed in a response",
                )),
            };
        }
        if head.len() > MAX_HEAD {
            return Err(io::Error::other("response head too long"));
        }
    }
    let mut fields = [httparse::EMPTY_HEADER; 16];
    let mut response = httparse::Response::new(&mut fields);
    if !response
        .parse(&head)
        .map_err(io::Error::other)?
        .is_complete()
    {
        return Err(io::Error::other("malformed response head"));
    }
    let length = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| {
            std::str::from_utf8(h.value)
                .ok()?
                .trim()
                .parse::<usize>()
                .ok()
        })
        .ok_or_else(|| io::Error::other("response without Content-Length"))?;
    body.clear();
    body.resize(length, 0);
    reader.read_exact(body)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_responses() {
        let target = HttpTarget {
            by_client: BTreeMap::new(),
            token: Token::new("t"),
        };
        let mut out = Vec::new();
        let json = r#"{"op":"put","key":"key-1","value":"v","client":"c","seq":1}"#;
        target
            .write_request(&mut out, BenchOp::Put, "key-1", json)
            .unwrap();
        target
            .write_request(&mut out, BenchOp::StaleGet, "key-1", "")
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            format!(
                "POST /put HTTP/1.1\r\nContent-Length: {}\r\nAuthorization: Bearer t\r\nHost: raftkv\r\n\r\n{json}\
                 GET /get?key=key-1&consistency=stale HTTP/1.1\r\nAuthorization: Bearer t\r\nHost: raftkv\r\n\r\n",
                json.len()
            )
        );
        let responses = b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{\"ok\":true}\
                          HTTP/1.1 503 Service Unavailable\r\ncontent-length: 2\r\n\r\n{}";
        let mut reader = io::BufReader::new(&responses[..]);
        let mut body = Vec::new();
        assert!(read_response(&mut reader, &mut body).unwrap());
        assert_eq!(body, br#"{"ok":true}"#);
        assert!(read_response(&mut reader, &mut body).unwrap());
        assert_eq!(body, b"{}");
        assert!(!read_response(&mut reader, &mut body).unwrap());
    }
}
