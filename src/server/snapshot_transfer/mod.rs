//! The wire frames of a snapshot transfer, and the base64 codec their chunks use.
//!
//! A leader's replicator streams a snapshot file to a follower over the same peer
//! connection that carries its Raft messages (the sending side is in `replicator`, the
//! receiving side in `peer_port`). Every line on a peer connection is still one JSON
//! object; a snapshot frame is told from a Raft [`Message`] by its only top-level key,
//! `snapshot`, which no Raft message has (nor `ping`, the line a replicator sends when
//! it has had nothing to send for a second: `{"ping":{}}`):
//!
//! ```text
//! leader -> follower (beside the Raft messages, on the leader's outgoing connection)
//!   {"snapshot":{"offer":{"from":1,"to":2,"meta":{"index":42,"term":3},"term":5,"size":9000}}}
//!   {"snapshot":{"chunk":{"meta":{"index":42,"term":3},"term":5,"offset":0,"data":"UktWU05B..."}}}
//! follower -> leader (the only thing ever written back on that connection)
//!   {"snapshot_ack":{"meta":{"index":42,"term":3},"term":5,"status":{"stored":4096}}}
//!   {"snapshot_ack":{"meta":{"index":42,"term":3},"term":5,"status":"done"}}
//!   {"snapshot_ack":{"meta":{"index":42,"term":3},"term":5,"status":{"failed":"why"}}}
//! ```
//!
//! - An [`Offer`] opens a transfer: the snapshot's position (`meta`), the term of the
//!   leader sending it (`term`) and the file's `size` in bytes. `from` and `to` name
//!   the two nodes, so the follower can build the InstallSnapshot message its core
//!   will see once the data is complete.
//! - A [`Chunk`] carries the bytes of the snapshot file from `offset` on, in standard
//!   base64 (RFC 4648, with padding) because JSON strings cannot hold raw bytes.
//! - An [`Ack`] names the transfer it answers (`meta` and `term`, so an answer to an
//!   earlier transfer is recognised and ignored) and says how far it got:
//!   `stored` is the number of bytes the follower holds *durably* (fsynced), `done`
//!   means the snapshot is complete, verified, durable and handed to the follower's
//!   core, and `failed` ends the transfer with a reason.
//!
//! Everything here is checked before it is used: a line from a peer can make
//! [`parse_peer_line`] or [`parse_ack_line`] return an error, never panic, and a
//! chunk's data is refused before decoding if it would exceed [`MAX_CHUNK`] bytes.
//!
//! Base64 is a small hand-written codec (below, with its tests) rather than a
//! dependency: forty lines for one fixed alphabet, and the one place it is used
//! decodes straight from the JSON parser's borrowed string into the chunk's bytes.

use std::io::{self, Write};

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

use crate::{
    codec::write_json_line,
    raft::{Message, NodeId, SnapshotMeta, Term},
};

#[cfg(test)]
mod tests;

/// Largest chunk a follower accepts (decoded bytes). The leader sends smaller ones.
pub(crate) const MAX_CHUNK: usize = 4 << 20;
/// Largest snapshot file a follower accepts: far above any state this store could
/// hold in memory, yet a bound for numbers read from the wire.
pub(crate) const MAX_SNAPSHOT: u64 = 1 << 40;
/// Longest acknowledgement line a leader reads (acks are a few hundred bytes).
pub(crate) const MAX_ACK_LINE: usize = 16 << 10;
/// A failure reason is cut to this many bytes before it is sent.
const MAX_REASON: usize = 1024;

/// A snapshot frame, sent by the leader's replicator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Frame {
    /// Opens (or re-opens, to resume) a transfer.
    Offer(Offer),
    /// Bytes of the snapshot file.
    Chunk(Chunk),
}

/// Opens a transfer; the follower answers with the offset it already holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Offer {
    /// The leader sending the snapshot.
    pub from: NodeId,
    /// The follower it is for.
    pub to: NodeId,
    /// The snapshot's position.
    pub meta: SnapshotMeta,
    /// The leader's term: the term of the InstallSnapshot message.
    pub term: Term,
    /// Size of the snapshot file in bytes (header, body and trailer).
    pub size: u64,
}

/// Bytes `offset..offset + data.len()` of the snapshot file of transfer `meta`/`term`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Chunk {
    /// The snapshot's position.
    pub meta: SnapshotMeta,
    /// The leader's term.
    pub term: Term,
    /// Where `data` belongs in the file.
    pub offset: u64,
    /// The bytes, base64 on the wire, at most [`MAX_CHUNK`] of them.
    #[serde(with = "base64_field")]
    pub data: Vec<u8>,
}

impl std::fmt::Debug for Chunk {
    /// Position and length only: the data can be a megabyte.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Chunk {{ {}@{} term {}, {} bytes at {} }}",
            self.meta.index,
            self.meta.term,
            self.term,
            self.data.len(),
            self.offset
        )
    }
}

/// The follower's answer to an offer or a chunk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Ack {
    /// The snapshot's position, as in the offer.
    pub meta: SnapshotMeta,
    /// The leader's term, as in the offer.
    pub term: Term,
    /// How far the transfer got.
    pub status: AckStatus,
}

/// How far a transfer got, as the follower reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum AckStatus {
    /// This many bytes of the file are durable on the follower: the leader continues
    /// from here (the first answer to an offer is where a resumed transfer starts).
    Stored(u64),
    /// The snapshot is complete, verified, durable and was handed to the core.
    Done,
    /// The follower gave up on this transfer (bad checksum, I/O error, bad frame).
    Failed(String),
}

impl Ack {
    /// A `failed` answer, its reason cut to a bounded length.
    pub(crate) fn failed(meta: SnapshotMeta, term: Term, reason: &str) -> Ack {
        let mut end = reason.len().min(MAX_REASON);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        Ack {
            meta,
            term,
            status: AckStatus::Failed(reason[..end].to_string()),
        }
    }
}

/// One line read by a follower from a peer connection (after the handshake).
#[derive(Debug)]
pub(crate) enum PeerLine {
    /// A Raft message, exactly as before snapshots were streamed.
    Raft(Message),
    /// A snapshot frame.
    Snapshot(Frame),
    /// The dialer is alive and has nothing to say.
    Ping,
}

/// The ping line, without its `\n`.
pub(crate) const PING: &[u8] = br#"{"ping":{}}"#;

/// `{"ping": {}}` on the way in.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PingIn {
    ping: Empty,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

/// `{"snapshot": frame}` on the way out.
#[derive(Serialize)]
struct FrameOut<'a> {
    snapshot: &'a Frame,
}

/// `{"snapshot": frame}` on the way in.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FrameIn {
    snapshot: Frame,
}

/// `{"snapshot_ack": ack}` on the way out.
#[derive(Serialize)]
struct AckOut<'a> {
    snapshot_ack: &'a Ack,
}

/// `{"snapshot_ack": ack}` on the way in.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AckIn {
    snapshot_ack: Ack,
}

/// Writes `frame` as one line.
pub(crate) fn write_frame<W: Write>(out: &mut W, frame: &Frame) -> io::Result<()> {
    write_json_line(out, &FrameOut { snapshot: frame })
}

/// Writes `ack` as one line.
pub(crate) fn write_ack<W: Write>(out: &mut W, ack: &Ack) -> io::Result<()> {
    write_json_line(out, &AckOut { snapshot_ack: ack })
}

/// Parses one line from a peer connection (without its `\n`): a snapshot frame if its
/// first key is `"snapshot"`, a ping if it is `"ping"`, a Raft message otherwise.
/// Looking at the first key costs a few bytes, where trying one parse and then the
/// other would read a megabyte chunk twice. A frame's numbers are checked against
/// [`MAX_SNAPSHOT`].
pub(crate) fn parse_peer_line(line: &[u8]) -> Result<PeerLine, String> {
    if first_key_is(line, b"ping") {
        return serde_json::from_slice(line)
            .map(|PingIn { ping: Empty {} }| PeerLine::Ping)
            .map_err(|e| format!("not a ping: {e}"));
    }
    if !first_key_is(line, b"snapshot") {
        return serde_json::from_slice(line)
            .map(PeerLine::Raft)
            .map_err(|e| format!("not a Raft message: {e}"));
    }
    let frame = serde_json::from_slice::<FrameIn>(line)
        .map_err(|e| format!("not a snapshot frame: {e}"))?
        .snapshot;
    match &frame {
        Frame::Offer(offer) if offer.size > MAX_SNAPSHOT => {
            return Err(format!(
                "offers a {}-byte snapshot; at most {MAX_SNAPSHOT} are accepted",
                offer.size
            ))
        }
        Frame::Chunk(chunk)
            if chunk
                .offset
                .checked_add(chunk.data.len() as u64)
                .is_none_or(|end| end > MAX_SNAPSHOT) =>
        {
            return Err(format!(
                "sends a chunk at offset {}, past any snapshot accepted",
                chunk.offset
            ))
        }
        _ => {}
    }
    Ok(PeerLine::Snapshot(frame))
}

/// Parses one acknowledgement line (without its `\n`).
pub(crate) fn parse_ack_line(line: &[u8]) -> Result<Ack, String> {
    serde_json::from_slice::<AckIn>(line)
        .map(|a| a.snapshot_ack)
        .map_err(|e| format!("not a snapshot acknowledgement: {e}"))
}

/// Whether the JSON object in `line` starts with the key `key` (whitespace allowed).
fn first_key_is(line: &[u8], key: &[u8]) -> bool {
    let skip = |rest: &[u8]| -> usize {
        rest.iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(rest.len())
    };
    let mut at = skip(line);
    if line.get(at) != Some(&b'{') {
        return false;
    }
    at += 1;
    at += skip(&line[at..]);
    let rest = &line[at..];
    rest.len() > key.len() + 1
        && rest[0] == b'"'
        && &rest[1..=key.len()] == key
        && rest[key.len() + 1] == b'"'
}

/// Serde glue: `Vec<u8>` as a base64 string, refused before decoding if it would hold
/// more than [`MAX_CHUNK`] bytes.
mod base64_field {
    use super::*;

    pub(super) fn serialize<S: Serializer>(data: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::base64::encode(data))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = Vec<u8>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "base64 data of at most {MAX_CHUNK} bytes")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Vec<u8>, E> {
                super::base64::decode(text.as_bytes(), MAX_CHUNK).map_err(E::custom)
            }
        }
        d.deserialize_str(Visitor)
    }
}

/// Standard base64 (RFC 4648 §4): `A–Z a–z 0–9 + /`, padded with `=` to a multiple of
/// four characters. Decoding is strict: one encoding per byte string (no whitespace,
/// no missing padding, no stray bits in the last character).
pub(crate) mod base64 {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    /// Not a base64 character.
    const INVALID: u8 = 0xff;
    /// Each byte's 6-bit value, or [`INVALID`].
    const VALUES: [u8; 256] = {
        let mut table = [INVALID; 256];
        let mut i = 0;
        while i < 64 {
            table[ALPHABET[i] as usize] = i as u8;
            i += 1;
        }
        table
    };

    /// `data` in base64.
    pub(crate) fn encode(data: &[u8]) -> String {
        let mut out = Vec::with_capacity(data.len().div_ceil(3) * 4);
        let mut groups = data.chunks_exact(3);
        let char_at = |n: u32, shift: u32| ALPHABET[((n >> shift) & 63) as usize];
        for g in &mut groups {
            let n = u32::from(g[0]) << 16 | u32::from(g[1]) << 8 | u32::from(g[2]);
            out.extend_from_slice(&[char_at(n, 18), char_at(n, 12), char_at(n, 6), char_at(n, 0)]);
        }
        match *groups.remainder() {
            [a] => {
                let n = u32::from(a) << 16;
                out.extend_from_slice(&[char_at(n, 18), char_at(n, 12), b'=', b'=']);
            }
            [a, b] => {
                let n = u32::from(a) << 16 | u32::from(b) << 8;
                out.extend_from_slice(&[char_at(n, 18), char_at(n, 12), char_at(n, 6), b'=']);
            }
            _ => {}
        }
        // Every byte pushed comes from ALPHABET or is '=': ASCII.
        String::from_utf8(out).expect("base64 is ASCII")
    }

    /// The bytes `text` encodes, refusing malformed input and anything that would
    /// decode to more than `max` bytes (checked before allocating).
    pub(crate) fn decode(text: &[u8], max: usize) -> Result<Vec<u8>, String> {
        if !text.len().is_multiple_of(4) {
            return Err(format!(
                "base64 length {} is not a multiple of 4",
                text.len()
            ));
        }
        let padding = match text {
            [.., b'=', b'='] => 2,
            [.., b'='] => 1,
            _ => 0,
        };
        let len = text.len() / 4 * 3 - padding;
        if len > max {
            return Err(format!("{len} bytes of data; at most {max} are accepted"));
        }
        let mut out = Vec::with_capacity(len);
        let bad = |at: usize| format!("invalid base64 character at position {at}");
        let quads = text.len() / 4;
        for (q, quad) in text.chunks_exact(4).enumerate() {
            let last = q + 1 == quads;
            let pad = if last { padding } else { 0 };
            let mut n: u32 = 0;
            for (i, &c) in quad.iter().enumerate() {
                let v = if i >= 4 - pad {
                    0
                } else {
                    let v = VALUES[c as usize];
                    if v == INVALID {
                        return Err(bad(q * 4 + i));
                    }
                    v
                };
                n = n << 6 | u32::from(v);
            }
            let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
            let keep = 3 - pad;
            // The bits that padding drops must be zero, or two texts would decode
            // to the same bytes.
            if bytes[keep..].iter().any(|&b| b != 0) {
                return Err(bad(q * 4 + 3 - pad));
            }
            out.extend_from_slice(&bytes[..keep]);
        }
        Ok(out)
    }
}
