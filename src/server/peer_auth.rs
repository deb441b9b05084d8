//! The peer handshake: the first lines of every connection to a raft port, before any
//! Raft message or snapshot frame. The replicator dials (`dial`), the raft port's
//! reader answers (`accept`); one JSON object per line, as everywhere else:
//!
//! ```text
//!  dialer A (replicator)                                        listener B (peer_port)
//!  {"hello":{"version":1,"cluster":C,"from":A,"to":B,"nonce":Na}} ---->
//!            <---- {"challenge":{"nonce":Nb,"proof":Pb}}    or {"refused":"why"}, closed
//!  {"proof":Pa} ---->
//!            <---- {"welcome":{}}                           or {"refused":"why"}, closed
//!  Raft messages, snapshot frames, {"ping":{}} ---->
//!            <---- snapshot acknowledgements
//! ```
//!
//! `Na` and `Nb` are 32 random bytes from the OS each, in hex. With a cluster secret,
//! `Pb = hex(HMAC-SHA256(secret, "raftkv-peer-v1\nlistener\nC\nA\nB\nNa\nNb"))`, and
//! `Pa` the same with `dialer` for `listener`; without one both are `null`.
//!
//! Why it is built this way:
//!
//! - *Mutual.* Each side proves the secret on a nonce the other chose: a stranger can
//!   pose neither as a member dialing in nor as the member a replicator meant to reach.
//!   A dialer checks the listener's proof before it sends its own.
//! - *Fresh.* Each proof covers both nonces, so one recorded from an earlier handshake
//!   proves nothing in the next.
//! - *Bound to roles, cluster and ids.* A listener's proof cannot be sent back as a
//!   dialer's (the role differs), nor used in another cluster or under another id. The
//!   listener then holds the connection to the id it authenticated: a message or
//!   snapshot offer whose `from` is not `A` or whose `to` is not `B` closes it
//!   (`peer_port`).
//! - *Checked in constant time* (`Mac::verify_slice`): how long a check takes says
//!   nothing about how close a guess came.
//! - *Bounded.* The whole handshake has [`DEADLINE`] and each line [`MAX_LINE`] bytes,
//!   so a stranger holds a connection for at most that long and that much memory
//!   (`peer_gate` bounds how many it may hold).
//! - *Without a secret* the handshake still runs, with `null` proofs: cluster and ids
//!   are still checked, which catches a node started with the wrong file or id, but
//!   anyone who reaches the port may claim any member's id. A secret on one side only
//!   is refused by both, so a half-configured cluster stops talking loudly instead of
//!   running open.
//!
//! A listener answers `refused` with a reason when the dialer spoke the handshake and
//! was turned away (wrong version, cluster, id or proof); to anything else (garbage,
//! silence, a closed connection) it says nothing and the caller closes. A dialer that
//! turns a listener away just closes.
//!
//! What it does not do: it authenticates the start of a connection, not each byte
//! after it, and encrypts nothing. Someone who can rewrite traffic between two members
//! (not merely reach a port) could take over a connection after its handshake; raft
//! ports belong on a private network, or in a tunnel.

use std::{
    collections::BTreeSet,
    fmt,
    io::{self, BufReader, Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use rand::{rngs::OsRng, RngCore};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use super::secret::{Secret, PROOF_BYTES};
use crate::{
    codec::{read_line, Line},
    hex,
    raft::NodeId,
};

/// The handshake's version; a hello with another is refused.
pub(crate) const VERSION: u64 = 1;
/// The whole handshake, on either side, must be done within this.
pub(crate) const DEADLINE: Duration = Duration::from_secs(2);
/// Longest handshake line read: a hello with the longest cluster name is ~250 bytes.
const MAX_LINE: usize = 1024;
/// Random bytes per nonce.
const NONCE_BYTES: usize = 32;
/// What the proofs are computed over starts with this.
const CONTEXT: &str = "raftkv-peer-v1";
/// A reason or name from the other side is cut to this many characters in our words.
const MAX_QUOTE: usize = 100;

/// Who this node is to its peers, and how it proves it.
#[derive(Debug)]
pub(crate) struct Auth {
    /// This node's cluster identity (`ClusterConfig::identity`).
    pub cluster: String,
    /// This node's id.
    pub me: NodeId,
    /// The ids that may dial this node (this node's own is refused all the same).
    pub members: BTreeSet<NodeId>,
    /// The cluster secret; without it the node proves nothing and asks for no proof.
    pub secret: Option<Secret>,
}

#[cfg(test)]
impl Auth {
    /// Node `me` of a cluster `test` of members 1, 2 and 3 with a secret, for tests
    /// of what runs over an authenticated connection.
    pub(crate) fn test(me: NodeId) -> Auth {
        Auth {
            cluster: "test".into(),
            me,
            members: [1, 2, 3].into(),
            secret: Secret::new(b"a secret for the tests").ok(),
        }
    }
}

/// A peer connection's socket, whose reads can be held to a deadline: during the
/// handshake each read waits only for what is left of [`DEADLINE`], so a peer that
/// trickles a byte at a time cannot stretch it. Afterwards reads wait as long as the
/// socket's read timeout says.
#[derive(Debug)]
pub(crate) struct PeerStream {
    stream: TcpStream,
    deadline: Option<Instant>,
}

impl PeerStream {
    pub(crate) fn new(stream: TcpStream) -> PeerStream {
        PeerStream {
            stream,
            deadline: None,
        }
    }

    /// The socket, to write on, shut down or set timeouts on.
    pub(crate) fn socket(&self) -> &TcpStream {
        &self.stream
    }
}

impl Read for PeerStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(deadline) = self.deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            self.stream.set_read_timeout(Some(left))?;
        }
        self.stream.read(buf)
    }
}

/// Why a handshake failed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The other side spoke the handshake and was turned away (or turned us away):
    /// another cluster or version, an id that is not its to claim, a wrong or missing
    /// proof. A misconfiguration or an intruder.
    Refused(String),
    /// The other side sent something that is not the handshake.
    Garbage(String),
    /// The connection closed, failed or stayed silent past the deadline.
    Broken(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Refused(why) | Failure::Garbage(why) | Failure::Broken(why) => {
                f.write_str(why)
            }
        }
    }
}

/// The listener's side: reads the dialer's hello and proof and answers them. Returns
/// the member id the dialer proved (without a secret: claimed). On a refusal the
/// dialer has been told why; the caller closes the connection on any failure.
pub(crate) fn accept(auth: &Auth, conn: &mut BufReader<PeerStream>) -> Result<NodeId, Failure> {
    let result = within_deadline(conn, |conn| listener_side(auth, conn));
    if let Err(Failure::Refused(why)) = &result {
        // Best effort: the connection is closed next either way.
        let _ = send(conn, &ListenerLine::Refused(why.clone()));
    }
    result
}

/// The dialer's side, towards member `peer`. `Ok` once the listener welcomed this
/// node; then the connection carries Raft messages.
pub(crate) fn dial(
    auth: &Auth,
    peer: NodeId,
    conn: &mut BufReader<PeerStream>,
) -> Result<(), Failure> {
    within_deadline(conn, |conn| dialer_side(auth, peer, conn))
}

/// Runs one side of the handshake under [`DEADLINE`], then lifts it.
fn within_deadline<T>(
    conn: &mut BufReader<PeerStream>,
    side: impl FnOnce(&mut BufReader<PeerStream>) -> Result<T, Failure>,
) -> Result<T, Failure> {
    conn.get_mut().deadline = Some(Instant::now() + DEADLINE);
    let result = side(conn);
    conn.get_mut().deadline = None;
    let value = result?;
    conn.get_ref()
        .socket()
        .set_read_timeout(None)
        .map_err(|e| Failure::Broken(format!("cannot clear the read timeout: {e}")))?;
    Ok(value)
}

fn listener_side(auth: &Auth, conn: &mut BufReader<PeerStream>) -> Result<NodeId, Failure> {
    let hello = match receive(conn, "a hello")? {
        DialerLine::Hello(hello) => hello,
        DialerLine::Proof(_) => return Err(Failure::Garbage("a proof before any hello".into())),
    };
    let from = hello.from;
    let refuse = |why: String| Err(Failure::Refused(why));
    if hello.version != VERSION {
        return refuse(format!(
            "handshake version {} is not supported (this node speaks {VERSION})",
            hello.version
        ));
    }
    if hello.cluster != auth.cluster {
        return refuse(format!(
            "this node belongs to cluster {}, not {}",
            auth.cluster,
            quote(&hello.cluster)
        ));
    }
    if hello.to != auth.me {
        return refuse(format!("this is n{}, not n{}", auth.me, hello.to));
    }
    if from == auth.me {
        return refuse(format!("n{from} is this node's own id"));
    }
    if !auth.members.contains(&from) {
        return refuse(format!(
            "n{from} is not a member of cluster {}",
            auth.cluster
        ));
    }
    if hex::decode::<NONCE_BYTES>(&hello.nonce).is_none() {
        return refuse(format!(
            "n{from}'s nonce is not {} hex digits",
            2 * NONCE_BYTES
        ));
    }
    let nonce = nonce()?;
    let transcript = Transcript {
        cluster: &auth.cluster,
        dialer: from,
        listener: auth.me,
        dialer_nonce: &hello.nonce,
        listener_nonce: &nonce,
    };
    let proof = auth.secret.as_ref().map(|s| transcript.prove(s, LISTENER));
    send(
        conn,
        &ListenerLine::Challenge(Challenge {
            nonce: nonce.clone(),
            proof,
        }),
    )?;
    let proof = match receive(conn, "a proof")? {
        DialerLine::Proof(proof) => proof,
        DialerLine::Hello(_) => return Err(Failure::Garbage("a second hello".into())),
    };
    match (&auth.secret, proof) {
        (Some(secret), Some(proof)) => {
            transcript
                .check(secret, DIALER, &proof)
                .map_err(|why| Failure::Refused(format!("n{from} {why}")))?;
        }
        (Some(_), None) => {
            return refuse(format!(
                "n{from} proves no cluster secret and this node requires one \
                 (start n{from} with --secret-file)"
            ))
        }
        (None, Some(_)) => {
            return refuse(format!(
                "n{from} proves a cluster secret and this node has none \
                 (start n{} with --secret-file too)",
                auth.me
            ))
        }
        (None, None) => {}
    }
    send(conn, &ListenerLine::Welcome(Empty {}))?;
    Ok(from)
}

fn dialer_side(auth: &Auth, peer: NodeId, conn: &mut BufReader<PeerStream>) -> Result<(), Failure> {
    let nonce = nonce()?;
    send(
        conn,
        &DialerLine::Hello(Hello {
            version: VERSION,
            cluster: auth.cluster.clone(),
            from: auth.me,
            to: peer,
            nonce: nonce.clone(),
        }),
    )?;
    let challenge = match receive(conn, "a challenge")? {
        ListenerLine::Challenge(challenge) => challenge,
        ListenerLine::Refused(why) => return Err(refused_by(peer, &why)),
        ListenerLine::Welcome(_) => {
            return Err(Failure::Garbage(format!(
                "n{peer} welcomed this node unasked"
            )))
        }
    };
    if hex::decode::<NONCE_BYTES>(&challenge.nonce).is_none() {
        return Err(Failure::Garbage(format!(
            "n{peer}'s nonce is not {} hex digits",
            2 * NONCE_BYTES
        )));
    }
    let transcript = Transcript {
        cluster: &auth.cluster,
        dialer: auth.me,
        listener: peer,
        dialer_nonce: &nonce,
        listener_nonce: &challenge.nonce,
    };
    match (&auth.secret, &challenge.proof) {
        (Some(secret), Some(proof)) => transcript
            .check(secret, LISTENER, proof)
            .map_err(|why| Failure::Refused(format!("n{peer} {why}")))?,
        (Some(_), None) => {
            return Err(Failure::Refused(format!(
                "n{peer} proves no cluster secret and this node requires one \
                 (start n{peer} with --secret-file)"
            )))
        }
        (None, Some(_)) => {
            return Err(Failure::Refused(format!(
                "n{peer} proves a cluster secret and this node has none \
                 (start n{} with --secret-file too)",
                auth.me
            )))
        }
        (None, None) => {}
    }
    let proof = auth.secret.as_ref().map(|s| transcript.prove(s, DIALER));
    send(conn, &DialerLine::Proof(proof))?;
    match receive(conn, "a welcome")? {
        ListenerLine::Welcome(_) => Ok(()),
        ListenerLine::Refused(why) => Err(refused_by(peer, &why)),
        ListenerLine::Challenge(_) => {
            Err(Failure::Garbage(format!("n{peer} sent a second challenge")))
        }
    }
}

fn refused_by(peer: NodeId, why: &str) -> Failure {
    Failure::Refused(format!("n{peer} refused this node: {}", quote(why)))
}

/// Role names in what the proofs cover.
const DIALER: &str = "dialer";
const LISTENER: &str = "listener";

/// What one handshake's proofs cover, besides the role.
struct Transcript<'a> {
    cluster: &'a str,
    dialer: NodeId,
    listener: NodeId,
    dialer_nonce: &'a str,
    listener_nonce: &'a str,
}

impl Transcript<'_> {
    /// `raftkv-peer-v1\n<role>\n<cluster>\n<A>\n<B>\n<nonce_a>\n<nonce_b>`. No field
    /// can hold a newline (ids are numbers, nonces hex, cluster names are checked),
    /// so two different transcripts never read the same.
    fn message(&self, role: &str) -> Vec<u8> {
        format!(
            "{CONTEXT}\n{role}\n{}\n{}\n{}\n{}\n{}",
            self.cluster, self.dialer, self.listener, self.dialer_nonce, self.listener_nonce
        )
        .into_bytes()
    }

    fn prove(&self, secret: &Secret, role: &str) -> String {
        hex::encode(&secret.prove(&self.message(role)))
    }

    /// Whether `proof` is `role`'s proof of this transcript.
    fn check(&self, secret: &Secret, role: &str, proof: &str) -> Result<(), String> {
        let Some(proof) = hex::decode::<PROOF_BYTES>(proof) else {
            return Err(format!(
                "sent a proof that is not {} hex digits",
                2 * PROOF_BYTES
            ));
        };
        if secret.verify(&self.message(role), &proof) {
            Ok(())
        } else {
            Err("could not prove the cluster secret (the two secrets differ)".into())
        }
    }
}

/// 32 fresh random bytes from the OS, in hex.
fn nonce() -> Result<String, Failure> {
    let mut bytes = [0; NONCE_BYTES];
    OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| Failure::Broken(format!("the OS gave no random bytes for a nonce: {e}")))?;
    Ok(hex::encode(&bytes))
}

/// A string from the other side, escaped and cut short for our log lines.
fn quote(text: &str) -> String {
    if text.chars().count() <= MAX_QUOTE {
        format!("{text:?}")
    } else {
        let cut: String = text.chars().take(MAX_QUOTE).collect();
        format!("{cut:?}...")
    }
}

/// Reads one handshake line and parses it as a `T`.
fn receive<T: DeserializeOwned>(
    conn: &mut BufReader<PeerStream>,
    what: &str,
) -> Result<T, Failure> {
    let mut buf = Vec::with_capacity(256);
    match read_line(conn, &mut buf, MAX_LINE) {
        Ok(Line::Complete) => {}
        Ok(Line::Eof) | Ok(Line::Truncated) => {
            return Err(Failure::Broken(format!(
                "the connection closed while waiting for {what}"
            )))
        }
        Ok(Line::TooLong) => {
            return Err(Failure::Garbage(format!(
                "a line over {MAX_LINE} bytes instead of {what}"
            )))
        }
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            return Err(Failure::Broken(format!(
                "the handshake took longer than {} s (waiting for {what})",
                DEADLINE.as_secs()
            )))
        }
        Err(e) => return Err(Failure::Broken(format!("reading {what} failed: {e}"))),
    }
    serde_json::from_slice(&buf).map_err(|e| Failure::Garbage(format!("not {what}: {e}")))
}

/// Writes `line` in one call: handshake lines are small.
fn send<T: Serialize>(conn: &BufReader<PeerStream>, line: &T) -> Result<(), Failure> {
    let mut bytes = serde_json::to_vec(line)
        .map_err(|e| Failure::Broken(format!("cannot encode a handshake line: {e}")))?;
    bytes.push(b'\n');
    conn.get_ref()
        .socket()
        .write_all(&bytes)
        .map_err(|e| Failure::Broken(format!("writing the handshake failed: {e}")))
}

/// A line from the dialer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum DialerLine {
    Hello(Hello),
    /// `null` without a secret.
    Proof(Option<String>),
}

/// A line from the listener.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ListenerLine {
    Challenge(Challenge),
    Welcome(Empty),
    /// Why; the listener closes the connection after it.
    Refused(String),
}

#[derive(Debug, Serialize, Deserialize)]
struct Hello {
    version: u64,
    /// The dialer's cluster identity.
    cluster: String,
    /// The dialer's id.
    from: NodeId,
    /// The listener it means to reach.
    to: NodeId,
    nonce: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Challenge {
    nonce: String,
    /// `null` without a secret.
    proof: Option<String>,
}

/// `{}`.
#[derive(Debug, Serialize, Deserialize)]
struct Empty {}

#[cfg(test)]
mod tests;
