//! The byte image of a [`Store`]: what a snapshot file holds of the state machine.
//!
//! A compact binary form, written in key order, so equal stores give equal bytes on
//! every replica (a snapshot's checksum can be compared across nodes), and a million
//! keys take about their own size rather than JSON's escaping and quoting. All numbers
//! are little-endian:
//!
//! ```text
//! u64 key count, then per key (ascending):    u32 len, key bytes, u32 len, value bytes
//! u64 session count, then per client (ascending): u32 len, client bytes, u64 last seq,
//!                                                  u64 fingerprint of that write
//! ```
//!
//! [`Reader`] refuses anything it did not write: lengths past the end, invalid UTF-8,
//! keys out of order, trailing bytes. It never panics on bad input.

use std::fmt;

use imbl::OrdMap;

use super::{SessionRecord, Store};

/// Why bytes are not a valid image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError {
    /// Byte offset where the problem was found.
    pub offset: u64,
    pub reason: String,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at byte {})", self.reason, self.offset)
    }
}

/// Appends little-endian numbers and length-prefixed strings to a buffer.
#[derive(Default)]
pub struct Writer {
    pub bytes: Vec<u8>,
}

impl Writer {
    pub fn u64(&mut self, v: u64) {
        self.bytes.extend_from_slice(&v.to_le_bytes());
    }

    pub fn str(&mut self, s: &str) {
        // Keys, values and client names are far below 4 GiB (the protocol caps them).
        let len = u32::try_from(s.len()).expect("strings in a store are under 4 GiB");
        self.bytes.extend_from_slice(&len.to_le_bytes());
        self.bytes.extend_from_slice(s.as_bytes());
    }
}

/// Reads what a [`Writer`] wrote, checking every length against what is left.
pub struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, at: 0 }
    }

    pub fn error(&self, reason: impl Into<String>) -> DecodeError {
        DecodeError {
            offset: self.at as u64,
            reason: reason.into(),
        }
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], DecodeError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| self.error(format!("{what} runs past the end")))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    pub fn u64(&mut self, what: &str) -> Result<u64, DecodeError> {
        let b = self.take(8, what)?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    pub fn str(&mut self, what: &str) -> Result<String, DecodeError> {
        let b = self.take(4, what)?;
        let len = u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize;
        let start = self.at;
        let b = self.take(len, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError {
            offset: start as u64,
            reason: format!("{what} is not UTF-8"),
        })
    }

    /// A count of items each at least `min_item` bytes long: bounded by what is left,
    /// so an absurd count fails here instead of reserving memory for it.
    pub fn count(&mut self, what: &str, min_item: usize) -> Result<usize, DecodeError> {
        let n = self.u64(what)?;
        let left = (self.bytes.len() - self.at) as u64;
        if n > left / min_item as u64 {
            return Err(self.error(format!("{what} {n} cannot fit in {left} bytes")));
        }
        Ok(n as usize)
    }

    /// Fails unless every byte was read.
    pub fn finish(self) -> Result<(), DecodeError> {
        if self.at == self.bytes.len() {
            Ok(())
        } else {
            Err(self.error(format!(
                "{} unexpected bytes after the end",
                self.bytes.len() - self.at
            )))
        }
    }
}

impl Store {
    /// Writes the image of this store (see the module documentation).
    pub fn write_image(&self, w: &mut Writer) {
        w.u64(self.data.len() as u64);
        for (key, value) in &self.data {
            w.str(key);
            w.str(value);
        }
        w.u64(self.sessions.len() as u64);
        for (client, record) in &self.sessions {
            w.str(client);
            w.u64(record.last_seq);
            w.u64(record.last_fingerprint);
        }
    }

    /// Reads an image written by [`write_image`](Self::write_image).
    pub fn read_image(r: &mut Reader) -> Result<Store, DecodeError> {
        let mut data = OrdMap::new();
        let keys = r.count("key count", 8)?;
        let mut last: Option<String> = None;
        for _ in 0..keys {
            let key = r.str("key")?;
            let value = r.str("value")?;
            if last.as_ref().is_some_and(|l| *l >= key) {
                return Err(r.error("keys are not in ascending order"));
            }
            last = Some(key.clone());
            data.insert(key, value);
        }
        let mut sessions = OrdMap::new();
        let clients = r.count("session count", 20)?;
        let mut last: Option<String> = None;
        for _ in 0..clients {
            let client = r.str("client name")?;
            let last_seq = r.u64("sequence number")?;
            let last_fingerprint = r.u64("write fingerprint")?;
            if last.as_ref().is_some_and(|l| *l >= client) {
                return Err(r.error("sessions are not in ascending order"));
            }
            last = Some(client.clone());
            sessions.insert(
                client,
                SessionRecord {
                    last_seq,
                    last_fingerprint,
                },
            );
        }
        let data_bytes = data
            .iter()
            .map(|(k, v): (&String, &String)| (k.len() + v.len()) as u64)
            .sum();
        Ok(Store {
            data,
            sessions,
            data_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{Command, Session, WriteOp};

    fn store() -> Store {
        let mut s = Store::new();
        for (k, v, c) in [
            ("b", "2", Some("c2")),
            ("a", "1", None),
            ("ü", "ß", Some("c1")),
        ] {
            s.apply(&Command {
                key: k.into(),
                op: WriteOp::Put { value: v.into() },
                session: c.map(|c| Session {
                    client: c.into(),
                    seq: 7,
                }),
            });
        }
        s
    }

    fn image(s: &Store) -> Vec<u8> {
        let mut w = Writer::default();
        s.write_image(&mut w);
        w.bytes
    }

    #[test]
    fn an_image_round_trips_and_equal_stores_give_equal_bytes() {
        let s = store();
        let bytes = image(&s);
        let mut r = Reader::new(&bytes);
        let back = Store::read_image(&mut r).unwrap();
        r.finish().unwrap();
        assert_eq!(back, s);
        // The same contents built in another order: the same bytes.
        let mut other = Store::new();
        for cmd in ["ü", "a", "b"] {
            let (v, c) = match cmd {
                "a" => ("1", None),
                "b" => ("2", Some("c2")),
                _ => ("ß", Some("c1")),
            };
            other.apply(&Command {
                key: cmd.into(),
                op: WriteOp::Put { value: v.into() },
                session: c.map(|c: &str| Session {
                    client: c.into(),
                    seq: 7,
                }),
            });
        }
        assert_eq!(image(&other), bytes);
    }

    #[test]
    fn damaged_images_are_refused_without_panicking() {
        let bytes = image(&store());
        for cut in 0..bytes.len() {
            let mut r = Reader::new(&bytes[..cut]);
            assert!(
                Store::read_image(&mut r).and_then(|_| r.finish()).is_err(),
                "cut at {cut}"
            );
        }
        let mut absurd = bytes.clone();
        absurd[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(Store::read_image(&mut Reader::new(&absurd))
            .unwrap_err()
            .reason
            .contains("cannot fit"));
        let mut trailing = bytes.clone();
        trailing.push(0);
        let mut r = Reader::new(&trailing);
        Store::read_image(&mut r).unwrap();
        assert!(r.finish().is_err());
    }
}
