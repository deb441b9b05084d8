//! The byte image of a [`Store`]: what a snapshot file holds of the state machine.
//!
//! A compact binary form, written in key order, so equal stores give equal bytes on
//! every replica (a snapshot's checksum can be compared across nodes), and a million
//! keys take about their own size rather than JSON's escaping and quoting. All numbers
//! are little-endian:
//!
//! ```text
//! u64 key count, then per key (ascending):     u32 len, key bytes, u32 len, value bytes
//! u64 clock (cluster time, ms)
//! u64 session timeout (ms), u64 maximum number of sessions
//! u64 registrations so far
//! u64 session count, then per session (ascending: registered by number, then named
//!     by name): u8 kind, and for kind 0 (registered) u64 number, for kind 1 (named)
//!     u32 len, name bytes; then u64 last seq, u64 fingerprint of that write,
//!     u64 last activity (cluster time)
//! u64 tombstone count, then per tombstone (ascending by name): u32 len, name bytes,
//!     u64 last seq, u64 last activity
//! ```
//!
//! This is the image of snapshot format 2. Format 1 (before sessions could expire)
//! ended after the sessions, which were all named and carried no activity:
//! `u64 count, then per client: u32 len, name bytes, u64 last seq, u64 fingerprint`.
//! [`Store::read_image_v1`] reads it; its sessions count as active at time 0.
//!
//! [`Reader`] refuses anything it did not write: lengths past the end, invalid UTF-8,
//! keys out of order, trailing bytes. It never panics on bad input.

use std::fmt;

use super::{SessionId, SessionLimits, SessionRecord, Store, Tombstone};

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
    pub fn u8(&mut self, v: u8) {
        self.bytes.push(v);
    }

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

    pub fn u8(&mut self, what: &str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
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
        w.u64(self.clock);
        w.u64(self.limits.timeout_ms);
        w.u64(self.limits.max_sessions);
        w.u64(self.registered);
        w.u64(self.sessions.len() as u64);
        for (id, record) in &self.sessions {
            match id {
                SessionId::Registered(n) => {
                    w.u8(0);
                    w.u64(*n);
                }
                SessionId::Named(name) => {
                    w.u8(1);
                    w.str(name);
                }
            }
            w.u64(record.last_seq);
            w.u64(record.last_fingerprint);
            w.u64(record.last_active);
        }
        w.u64(self.tombstones.len() as u64);
        for (name, t) in &self.tombstones {
            w.str(name);
            w.u64(t.last_seq);
            w.u64(t.last_active);
        }
    }

    /// Reads an image written by [`write_image`](Self::write_image).
    pub fn read_image(r: &mut Reader) -> Result<Store, DecodeError> {
        let mut store = Store::new();
        store.read_data(r)?;
        store.clock = r.u64("clock")?;
        store.limits = SessionLimits {
            timeout_ms: r.u64("session timeout")?,
            max_sessions: r.u64("maximum number of sessions")?,
        };
        store.registered = r.u64("registrations")?;
        let count = r.count("session count", 29)?;
        for _ in 0..count {
            let id = match r.u8("session kind")? {
                0 => SessionId::Registered(r.u64("session number")?),
                1 => SessionId::Named(r.str("client name")?),
                other => return Err(r.error(format!("unknown session kind {other}"))),
            };
            if matches!(id, SessionId::Registered(n) if n == 0 || n > store.registered) {
                return Err(r.error(format!("{id} was never registered")));
            }
            let record = SessionRecord {
                last_seq: r.u64("sequence number")?,
                last_fingerprint: r.u64("write fingerprint")?,
                last_active: r.u64("last activity")?,
            };
            store.insert_read_session(r, id, record)?;
        }
        let count = r.count("tombstone count", 20)?;
        for _ in 0..count {
            let name = r.str("client name")?;
            let tombstone = Tombstone {
                last_seq: r.u64("sequence number")?,
                last_active: r.u64("last activity")?,
            };
            if store.tombstones.get_max().is_some_and(|(l, _)| *l >= name) {
                return Err(r.error("tombstones are not in ascending order"));
            }
            if store.sessions.contains_key(&SessionId::Named(name.clone())) {
                return Err(r.error(format!("client {name:?} is both live and expired")));
            }
            store
                .tombstones_by_activity
                .insert((tombstone.last_active, name.clone()));
            store.tombstones.insert(name, tombstone);
        }
        Ok(store)
    }

    /// Reads the image of snapshot format 1 (see the module documentation).
    pub fn read_image_v1(r: &mut Reader) -> Result<Store, DecodeError> {
        let mut store = Store::new();
        store.read_data(r)?;
        let count = r.count("session count", 20)?;
        for _ in 0..count {
            let id = SessionId::Named(r.str("client name")?);
            let record = SessionRecord {
                last_seq: r.u64("sequence number")?,
                last_fingerprint: r.u64("write fingerprint")?,
                last_active: 0,
            };
            store.insert_read_session(r, id, record)?;
        }
        Ok(store)
    }

    /// Reads the keys and values into this (empty) store.
    fn read_data(&mut self, r: &mut Reader) -> Result<(), DecodeError> {
        let keys = r.count("key count", 8)?;
        for _ in 0..keys {
            let key = r.str("key")?;
            let value = r.str("value")?;
            if self.data.get_max().is_some_and(|(l, _)| *l >= key) {
                return Err(r.error("keys are not in ascending order"));
            }
            self.data_bytes += (key.len() + value.len()) as u64;
            self.data.insert(key, value);
        }
        Ok(())
    }

    fn insert_read_session(
        &mut self,
        r: &Reader,
        id: SessionId,
        record: SessionRecord,
    ) -> Result<(), DecodeError> {
        if self.sessions.get_max().is_some_and(|(l, _)| *l >= id) {
            return Err(r.error("sessions are not in ascending order"));
        }
        self.by_activity.insert((record.last_active, id.clone()));
        self.sessions.insert(id, record);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{Command, Session, WriteOp, WriteResult};

    fn put(key: &str, value: &str, session: Option<Session>, time: u64) -> Command {
        let mut c = Command::write(
            key,
            WriteOp::Put {
                value: value.into(),
            },
            session,
        );
        c.stamp.time = time;
        c
    }

    fn register_at(time: u64) -> Command {
        let mut c = Command::register();
        c.stamp.time = time;
        c
    }

    /// A store with keys, registered and named sessions, a tombstone, a clock and
    /// rules that are not the defaults.
    fn store() -> Store {
        let mut s = Store::new();
        let mut rules = Command::register();
        rules.stamp.sessions = Some(SessionLimits {
            timeout_ms: 100,
            max_sessions: 50,
        });
        assert_eq!(s.apply(&rules), WriteResult::Registered { session: 1 });
        s.apply(&put("gone", "x", Some(Session::named("old", 3)), 5));
        for (k, v, c) in [
            ("b", "2", Some(Session::named("c2", 7))),
            ("a", "1", None),
            ("ü", "ß", Some(Session::registered(1, 7))),
        ] {
            s.apply(&put(k, v, c, 60));
        }
        s.apply(&register_at(110));
        assert_eq!((s.sessions(), s.tombstones()), (3, 1));
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
        assert_eq!(back.clock(), 110);
        assert_eq!(back.limits().max_sessions, 50);
        // The restored store goes on exactly like the original: same expiry, same
        // numbers for new registrations.
        let (mut a, mut b) = (s.clone(), back);
        for c in [put("z", "1", None, 205), Command::register()] {
            assert_eq!(a.apply(&c), b.apply(&c));
        }
        assert_eq!(a, b);
        assert_eq!(a.tombstones(), 1, "the old tombstone aged out, c2's is new");
        // The same contents built in another order: the same bytes.
        let mut other = Store::new();
        let mut rules = Command::register();
        rules.stamp.sessions = Some(SessionLimits {
            timeout_ms: 100,
            max_sessions: 50,
        });
        other.apply(&rules);
        other.apply(&put("gone", "x", Some(Session::named("old", 3)), 5));
        for (k, v, c) in [
            ("ü", "ß", Some(Session::registered(1, 7))),
            ("a", "1", None),
            ("b", "2", Some(Session::named("c2", 7))),
        ] {
            other.apply(&put(k, v, c, 60));
        }
        other.apply(&register_at(110));
        assert_eq!(image(&other), bytes);
    }

    #[test]
    fn an_image_of_format_1_is_read_with_its_sessions_named_and_active_at_zero() {
        let mut w = Writer::default();
        w.u64(1);
        w.str("k");
        w.str("v");
        w.u64(2);
        for (client, seq) in [("a", 3), ("b", 4)] {
            w.str(client);
            w.u64(seq);
            w.u64(99);
        }
        let mut r = Reader::new(&w.bytes);
        let mut s = Store::read_image_v1(&mut r).unwrap();
        r.finish().unwrap();
        assert_eq!(s.get("k"), Some("v"));
        assert_eq!(s.sessions(), 2);
        assert_eq!(s.limits(), SessionLimits::default());
        let retry = Command::write("k", WriteOp::Delete, Some(Session::named("a", 3)));
        assert_eq!(
            s.apply(&retry),
            WriteResult::SeqReused { seq: 3 },
            "the fingerprint came along"
        );
        let mut late = put("k", "w", None, SessionLimits::DEFAULT_TIMEOUT_MS);
        late.session = None;
        s.apply(&late);
        assert_eq!((s.sessions(), s.tombstones()), (0, 2));
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
        // A registered session beyond the registrations counted.
        let mut s = Store::new();
        s.apply(&Command::register());
        let mut bad = image(&s);
        let at = bad.len() - 8 - 24 - 8; // the session's number
        bad[at..at + 8].copy_from_slice(&2u64.to_le_bytes());
        assert!(Store::read_image(&mut Reader::new(&bad))
            .unwrap_err()
            .reason
            .contains("never registered"));
    }
}
