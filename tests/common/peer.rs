//! An outsider on the raft port: opens a connection, runs the peer handshake of
//! docs/protocol.md (with the right secret, a wrong one, or none), then writes
//! hand-made Raft messages. Used by tests/hostile.rs to play impostors and buggy members.

use std::{
    io::{self, BufRead, BufReader, Write},
    net::{TcpStream, ToSocketAddrs},
    time::Duration,
};

use hmac::{Hmac, KeyInit, Mac};
use rand::RngCore;
use serde_json::{json, Value};
use sha2::Sha256;

/// How the handshake ended.
#[derive(Debug)]
pub enum Handshake {
    /// The node said `welcome`: messages on this connection are taken as `from`'s.
    Welcome(PeerConn),
    /// The node said `refused` (its reason), or closed the connection.
    Refused(String),
}

/// A connection to a node's raft port.
pub struct PeerConn {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl std::fmt::Debug for PeerConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PeerConn({:?})", self.stream.peer_addr())
    }
}

impl PeerConn {
    /// Opens a plain connection (no handshake yet).
    pub fn connect(addr: &str) -> io::Result<PeerConn> {
        let sa = addr.to_socket_addrs()?.next().expect("address");
        let stream = TcpStream::connect_timeout(&sa, Duration::from_secs(2))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.set_write_timeout(Some(Duration::from_secs(5)))?;
        let reader = BufReader::new(stream.try_clone()?);
        Ok(PeerConn { stream, reader })
    }

    /// Connects to `addr` and claims to be node `from` of cluster `cluster`, talking
    /// to node `to`, proving it with `secret` (`None`: no proof at all).
    pub fn handshake(
        addr: &str,
        cluster: &str,
        from: u64,
        to: u64,
        secret: Option<&[u8]>,
    ) -> io::Result<Handshake> {
        let mut conn = PeerConn::connect(addr)?;
        let nonce_a = hex_nonce();
        conn.send(&json!({"hello": {
            "version": 1, "cluster": cluster, "from": from, "to": to, "nonce": nonce_a
        }}))?;
        let Some(answer) = conn.recv()? else {
            return Ok(Handshake::Refused("closed after hello".into()));
        };
        if let Some(why) = answer.get("refused") {
            return Ok(Handshake::Refused(why.to_string()));
        }
        let nonce_b = answer["challenge"]["nonce"]
            .as_str()
            .ok_or_else(|| bad(format!("no challenge in {answer}")))?
            .to_string();
        let proof = secret.map(|s| {
            proof(
                s,
                "dialer",
                &[
                    cluster,
                    &from.to_string(),
                    &to.to_string(),
                    &nonce_a,
                    &nonce_b,
                ],
            )
        });
        conn.send(&json!({ "proof": proof }))?;
        match conn.recv()? {
            Some(v) if v.get("welcome").is_some() => Ok(Handshake::Welcome(conn)),
            Some(v) => Ok(Handshake::Refused(v.to_string())),
            None => Ok(Handshake::Refused("closed after proof".into())),
        }
    }

    pub fn send(&mut self, v: &Value) -> io::Result<()> {
        let mut line = serde_json::to_vec(v).expect("json");
        line.push(b'\n');
        self.stream.write_all(&line)
    }

    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// One line from the node; `None` when it closed the connection.
    pub fn recv(&mut self) -> io::Result<Option<Value>> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        serde_json::from_str(&line)
            .map(Some)
            .map_err(|e| bad(format!("{e}: {line:?}")))
    }

    /// Whether the node closes the connection within `within` (reading and dropping
    /// whatever it sends meanwhile).
    pub fn closed_within(&mut self, within: Duration) -> bool {
        self.stream
            .set_read_timeout(Some(within))
            .expect("read timeout");
        loop {
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return false
                }
                Err(_) => return true, // reset
            }
        }
    }
}

/// HMAC-SHA256 of the handshake fields, as docs/protocol.md defines the proofs.
fn proof(secret: &[u8], role: &str, fields: &[&str]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
    let mut text = format!("raftkv-peer-v1\n{role}");
    for f in fields {
        text.push('\n');
        text.push_str(f);
    }
    mac.update(text.as_bytes());
    hex(&mac.finalize().into_bytes())
}

fn hex_nonce() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex(&bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn bad(text: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, text)
}

/// An AppendEntries as it travels on the wire.
pub fn append(
    from: u64,
    to: u64,
    term: u64,
    prev: (u64, u64),
    entries: &[(u64, u64)],
    commit: u64,
) -> Value {
    let entries: Vec<Value> = entries
        .iter()
        .map(|&(index, term)| json!({"index": index, "term": term, "payload": "noop"}))
        .collect();
    json!({"from": from, "to": to, "term": term, "body": {"append": {
        "prev_index": prev.0, "prev_term": prev.1, "entries": entries,
        "commit": commit, "read_round": 0
    }}})
}

/// A follower's acknowledgement that its log matches up to `index`.
pub fn ack(from: u64, to: u64, term: u64, index: u64, read_round: u64) -> Value {
    json!({"from": from, "to": to, "term": term, "body": {"append_response": {
        "result": {"match": index}, "read_round": read_round
    }}})
}
