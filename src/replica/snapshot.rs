//! A snapshot of a replica (§7): the state machine at one applied index, with what the
//! core needs to continue after it.
//!
//! The bytes, in order (little-endian numbers, strings as in [`crate::kv::image`]):
//!
//! ```text
//! "raftkv-snapshot\n"   16 bytes of magic
//! u64 version (2; version 1 is still read: its store image is older, see kv::image)
//! u64 index, u64 term   the last entry the snapshot includes
//! u64 member count, then u64 id per member (ascending)
//! the store's image (kv::image)
//! ```
//!
//! Everything apply depends on is in it: the map, the session table, and the position.
//! Two replicas at the same index have applied the same entries, so they hold equal
//! stores and write byte-identical snapshots. The storage layer frames these bytes
//! with a checksum; this module only says what they mean.

use crate::{
    kv::{
        image::{DecodeError, Reader, Writer},
        Store,
    },
    raft::{NodeId, SnapshotMeta},
};

const MAGIC: &[u8; 16] = b"raftkv-snapshot\n";
const VERSION: u64 = 2;

/// See the module documentation. Cloning is O(1): the store is persistent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// The last log entry the snapshot includes.
    pub meta: SnapshotMeta,
    /// The members of the cluster at that point, sorted.
    pub members: Vec<NodeId>,
    /// The state machine after applying everything up to `meta.index`.
    pub store: Store,
}

impl Snapshot {
    /// The snapshot's bytes. Costs a walk over the whole store: call it off the state
    /// thread.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.bytes.extend_from_slice(MAGIC);
        w.u64(VERSION);
        w.u64(self.meta.index);
        w.u64(self.meta.term);
        w.u64(self.members.len() as u64);
        for &id in &self.members {
            w.u64(id);
        }
        self.store.write_image(&mut w);
        w.bytes
    }

    /// Reads bytes written by [`encode`](Self::encode); anything else is an error.
    pub fn decode(bytes: &[u8]) -> Result<Snapshot, DecodeError> {
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(DecodeError {
                offset: 0,
                reason: "not a raftkv snapshot (bad magic)".into(),
            });
        }
        let mut r = Reader::new(&bytes[MAGIC.len()..]);
        let version = r.u64("version")?;
        if !(1..=VERSION).contains(&version) {
            return Err(r.error(format!("unknown snapshot version {version}")));
        }
        let meta = SnapshotMeta {
            index: r.u64("index")?,
            term: r.u64("term")?,
        };
        let count = r.count("member count", 8)?;
        let mut members = Vec::with_capacity(count);
        for _ in 0..count {
            members.push(r.u64("member id")?);
        }
        if members.is_empty() || members.windows(2).any(|p| p[0] >= p[1]) {
            return Err(r.error("members must be a non-empty ascending list"));
        }
        let store = match version {
            1 => Store::read_image_v1(&mut r)?,
            _ => Store::read_image(&mut r)?,
        };
        r.finish()?;
        Ok(Snapshot {
            meta,
            members,
            store,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{Command, WriteOp};

    #[test]
    fn a_snapshot_round_trips_and_refuses_other_bytes() {
        let mut store = Store::new();
        store.apply(&Command::write(
            "k",
            WriteOp::Put { value: "v".into() },
            None,
        ));
        let s = Snapshot {
            meta: SnapshotMeta { index: 7, term: 2 },
            members: vec![1, 2, 3],
            store,
        };
        let bytes = s.encode();
        assert_eq!(Snapshot::decode(&bytes).unwrap(), s);
        assert!(Snapshot::decode(b"hello").is_err());
        for cut in [0, 10, 20, 40, bytes.len() - 1] {
            assert!(Snapshot::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = bytes.clone();
        bad[16] = 9; // version
        assert!(Snapshot::decode(&bad)
            .unwrap_err()
            .reason
            .contains("version"));
    }
}
