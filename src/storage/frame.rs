//! Record framing: `[u32 LE payload length][u32 LE crc32 of payload][payload]`.
//!
//! The same frame wraps every log entry and the whole content of the small
//! atomically-replaced files, so one decoder decides everywhere whether bytes are
//! exactly what we wrote. Payloads are always JSON objects; [`find_valid_record`]
//! relies on that to skip most byte offsets cheaply.

use std::io;

use serde::Serialize;

/// Bytes before the payload: length, then checksum.
pub(crate) const HEADER_LEN: usize = 8;

/// Appends one framed record holding `value` as JSON to `buf`.
///
/// The value is serialized straight into `buf` behind a placeholder header that is
/// filled in afterwards, so a batch of records costs no allocation beyond the
/// buffer's own growth.
pub(crate) fn encode<T: Serialize>(buf: &mut Vec<u8>, value: &T) -> io::Result<()> {
    let start = buf.len();
    buf.extend_from_slice(&[0; HEADER_LEN]);
    if let Err(e) = serde_json::to_writer(&mut *buf, value) {
        buf.truncate(start);
        return Err(io::Error::other(e));
    }
    let Ok(len) = u32::try_from(buf.len() - start - HEADER_LEN) else {
        buf.truncate(start);
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "record larger than 4 GiB",
        ));
    };
    let payload = &buf[start + HEADER_LEN..];
    let crc = crc32fast::hash(payload);
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..start + HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// What lies at one offset of a byte string.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded<'a> {
    /// An intact record; the next one starts at `next`.
    Record { payload: &'a [u8], next: usize },
    /// The offset is exactly the end of the bytes.
    End,
    /// Not a record we could have written; `reason` says why, for error messages.
    Bad { reason: String },
}

/// Decodes the record starting at `at`.
///
/// A zero length is rejected even though its checksum would match (the CRC32 of no
/// bytes is 0): a zero-filled region, the usual remains of a torn write, would
/// otherwise read as an endless run of empty records.
pub(crate) fn decode(bytes: &[u8], at: usize) -> Decoded<'_> {
    let rest = bytes.len().saturating_sub(at);
    if rest == 0 {
        return Decoded::End;
    }
    if rest < HEADER_LEN {
        return Decoded::Bad {
            reason: format!("incomplete record header ({rest} bytes)"),
        };
    }
    let (len, crc) = header(bytes, at);
    if len == 0 {
        return Decoded::Bad {
            reason: "record length is zero".into(),
        };
    }
    let body = rest - HEADER_LEN;
    if len > body {
        return Decoded::Bad {
            reason: format!(
                "record length {len} runs past the end of the file ({body} bytes left)"
            ),
        };
    }
    let payload = &bytes[at + HEADER_LEN..at + HEADER_LEN + len];
    let actual = crc32fast::hash(payload);
    if actual != crc {
        return Decoded::Bad {
            reason: format!("checksum mismatch (stored {crc:08x}, computed {actual:08x})"),
        };
    }
    Decoded::Record {
        payload,
        next: at + HEADER_LEN + len,
    }
}

/// The first offset at or after `from` where an intact record starts, if any.
///
/// This is the witness that tells damage in the middle of a file from a torn tail:
/// a crash can leave garbage only after everything that was written before it, so an
/// intact record after a bad one means the bad bytes are not a torn tail. Every
/// offset is tried because the bad record's own length field cannot be trusted to
/// say where the next record begins. The test for a JSON object's `{` first keeps the
/// scan linear in practice; only offsets passing it pay for a checksum.
pub(crate) fn find_valid_record(bytes: &[u8], from: usize) -> Option<usize> {
    let last_start = bytes.len().checked_sub(HEADER_LEN + 1)?;
    (from..=last_start).find(|&at| {
        bytes[at + HEADER_LEN] == b'{' && matches!(decode(bytes, at), Decoded::Record { .. })
    })
}

fn header(bytes: &[u8], at: usize) -> (usize, u32) {
    let word = |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    (word(at) as usize, word(at + 4))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(values: &[serde_json::Value]) -> Vec<u8> {
        let mut buf = Vec::new();
        for v in values {
            encode(&mut buf, v).unwrap();
        }
        buf
    }

    #[test]
    fn framing_round_trip() {
        let values: Vec<serde_json::Value> = (0..50)
            .map(|i| serde_json::json!({ "i": i, "s": "x".repeat(i) }))
            .collect();
        let buf = records(&values);
        let mut at = 0;
        let mut back = Vec::new();
        loop {
            match decode(&buf, at) {
                Decoded::Record { payload, next } => {
                    back.push(serde_json::from_slice::<serde_json::Value>(payload).unwrap());
                    at = next;
                }
                Decoded::End => break,
                Decoded::Bad { reason } => panic!("{reason}"),
            }
        }
        assert_eq!(back, values);
        let first_len = u32::from_le_bytes(buf[0..4].try_into().unwrap()) as usize;
        assert_eq!(
            &buf[HEADER_LEN..HEADER_LEN + first_len],
            br#"{"i":0,"s":""}"#
        );
    }

    #[test]
    fn decode_rejects_short_zero_oversized_and_flipped_records() {
        let buf = records(&[serde_json::json!({ "k": "v" })]);
        assert!(matches!(decode(&buf[..5], 0), Decoded::Bad { .. }));
        assert!(matches!(
            decode(&buf[..buf.len() - 1], 0),
            Decoded::Bad { .. }
        ));
        assert!(matches!(decode(&[0u8; 32], 0), Decoded::Bad { .. }));
        let mut flipped = buf.clone();
        let last = flipped.len() - 2;
        flipped[last] ^= 0x01;
        assert!(matches!(decode(&flipped, 0), Decoded::Bad { .. }));
        assert_eq!(decode(&buf, buf.len()), Decoded::End);
    }

    #[test]
    fn find_valid_record_skips_garbage_and_finds_the_next_record() {
        let one = records(&[serde_json::json!({ "a": 1 })]);
        let mut buf = vec![0xAB; 13];
        buf.extend_from_slice(&one);
        buf.extend_from_slice(&[0; 20]);
        assert_eq!(find_valid_record(&buf, 0), Some(13));
        assert_eq!(find_valid_record(&buf, 14), None);
        assert_eq!(find_valid_record(&[], 0), None);
    }
}
