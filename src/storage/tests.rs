//! Behaviour of the `Storage` facade against real files in temporary directories.

use std::{collections::BTreeMap, fs, io::Write, path::Path};

use super::{
    frame::{self, Decoded},
    snapshot::file_name,
    wal::segment_name,
    Identity, Storage, StorageOptions, StoredSnapshot,
};
use crate::{
    config::{ClusterConfig, NodeSpec},
    error::Error,
    kv::{Command, WriteOp},
    raft::{Entry, HardState, Index, Payload, SnapshotMeta, Term},
};

fn entry(index: Index, term: Term) -> Entry {
    Entry {
        index,
        term,
        payload: Payload::Command(Command {
            key: format!("k{index}"),
            op: WriteOp::Put {
                value: format!("value of {index} in term {term}"),
            },
            session: None,
            stamp: Default::default(),
        }),
    }
}

fn entries(indexes: std::ops::RangeInclusive<Index>, term: Term) -> Vec<Entry> {
    indexes.map(|i| entry(i, term)).collect()
}

fn tiny() -> StorageOptions {
    StorageOptions { segment_bytes: 1 }
}

fn seg_path(dir: &Path, first: Index) -> std::path::PathBuf {
    dir.join("wal").join(segment_name(first))
}

fn segment_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Every file under `dir` with its bytes, to prove a refused open changed nothing.
fn all_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for item in fs::read_dir(&d).unwrap() {
            let path = item.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let name = path
                    .strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.insert(name, fs::read(&path).unwrap());
            }
        }
    }
    out
}

/// Byte offsets of the intact records of a segment file.
fn record_offsets(path: &Path) -> Vec<usize> {
    let bytes = fs::read(path).unwrap();
    let mut offsets = Vec::new();
    let mut at = 0;
    while let Decoded::Record { next, .. } = frame::decode(&bytes, at) {
        offsets.push(at);
        at = next;
    }
    offsets
}

fn flip_byte(path: &Path, offset: usize) {
    let mut bytes = fs::read(path).unwrap();
    bytes[offset] ^= 0x40;
    fs::write(path, bytes).unwrap();
}

fn expect_corrupt(result: crate::error::Result<(Storage, super::Recovered)>) -> (String, u64) {
    match result {
        Err(Error::Corrupt {
            file,
            offset,
            reason,
        }) => {
            assert!(!reason.is_empty());
            (file.to_string_lossy().into_owned(), offset)
        }
        Err(other) => panic!("expected Corrupt, got {other}"),
        Ok(_) => panic!("expected Corrupt, got a successful open"),
    }
}

fn identity() -> Identity {
    Identity {
        cluster: "test-cluster".into(),
        node: 2,
    }
}

fn cluster() -> ClusterConfig {
    ClusterConfig {
        cluster: None,
        nodes: (1..=3)
            .map(|id| NodeSpec {
                id,
                raft: format!("127.0.0.1:700{id}"),
                client: format!("127.0.0.1:800{id}"),
                http: None,
            })
            .collect(),
        sessions: Default::default(),
    }
}

#[test]
fn fresh_dir_recovers_nothing_and_creates_the_first_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node1");
    let (storage, rec) = Storage::open(&dir).unwrap();
    assert_eq!(rec.hard_state, HardState::default());
    assert!(rec.entries.is_empty());
    assert_eq!(rec.membership, None);
    assert_eq!(rec.identity, None);
    assert_eq!(storage.last_index(), 0);
    assert_eq!(storage.dir(), dir);
    assert_eq!(segment_names(&dir), vec![segment_name(1)]);
}

#[test]
fn reopen_returns_entries_hard_state_and_membership() {
    let tmp = tempfile::tempdir().unwrap();
    let hs = HardState {
        term: 3,
        voted_for: Some(2),
    };
    {
        let (mut s, _) = Storage::open(tmp.path()).unwrap();
        s.append(&entries(1..=4, 1)).unwrap();
        s.append(&entries(5..=10, 2)).unwrap();
        s.append(&[]).unwrap();
        s.sync().unwrap();
        s.save_hard_state(hs).unwrap();
        s.save_membership(&cluster()).unwrap();
        s.save_identity(&identity()).unwrap();
        assert_eq!(s.last_index(), 10);
    }
    let (s, rec) = Storage::open(tmp.path()).unwrap();
    let mut want = entries(1..=4, 1);
    want.extend(entries(5..=10, 2));
    assert_eq!(rec.entries, want);
    assert_eq!(rec.hard_state, hs);
    assert_eq!(rec.membership, Some(cluster()));
    assert_eq!(rec.identity, Some(identity()));
    assert_eq!(s.last_index(), 10);
    assert!(
        rec.notes.iter().any(|n| n.contains("1..=10")),
        "{:?}",
        rec.notes
    );
}

#[test]
fn segments_rotate_and_are_named_by_their_first_index() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let (mut s, _) =
            Storage::open_with(tmp.path(), StorageOptions { segment_bytes: 300 }).unwrap();
        for i in 1..=30 {
            s.append(&[entry(i, 1)]).unwrap();
        }
        s.sync().unwrap();
    }
    let names = segment_names(tmp.path());
    assert!(names.len() > 3, "{names:?}");
    let (_, rec) = Storage::open(tmp.path()).unwrap();
    assert_eq!(rec.entries, entries(1..=30, 1));
    for name in names {
        let first: Index = name.trim_end_matches(".seg").parse().unwrap();
        let bytes = fs::read(tmp.path().join("wal").join(&name)).unwrap();
        let Decoded::Record { payload, .. } = frame::decode(&bytes, 0) else {
            panic!("{name} does not start with a record");
        };
        let e: Entry = serde_json::from_slice(payload).unwrap();
        assert_eq!(e.index, first, "{name}");
    }
}

#[test]
fn conflict_truncation_in_the_middle_of_a_segment() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let (mut s, _) = Storage::open(tmp.path()).unwrap();
        s.append(&entries(1..=10, 1)).unwrap();
        s.sync().unwrap();
        s.append(&entries(6..=8, 2)).unwrap();
        assert_eq!(s.last_index(), 8);
        s.sync().unwrap();
    }
    let (mut s, rec) = Storage::open(tmp.path()).unwrap();
    let mut want = entries(1..=5, 1);
    want.extend(entries(6..=8, 2));
    assert_eq!(rec.entries, want);
    s.append(&entries(9..=9, 2)).unwrap();
    assert_eq!(s.last_index(), 9);
}

#[test]
fn conflict_truncation_across_segment_boundaries() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (mut s, _) = Storage::open_with(dir, tiny()).unwrap();
    // With 1-byte segments every append batch gets a segment of its own.
    for batch in [1..=3, 4..=6, 7..=9] {
        s.append(&entries(batch, 1)).unwrap();
    }
    assert_eq!(segment_names(dir), [1, 4, 7].map(segment_name));

    // Cut inside segment 4; segment 7 goes away, the new entries open segment 5.
    s.append(&entries(5..=6, 2)).unwrap();
    assert_eq!(segment_names(dir), [1, 4, 5].map(segment_name));
    assert_eq!(s.last_index(), 6);

    // Cut inside the first segment; two later segments go away.
    s.append(&entries(2..=2, 3)).unwrap();
    assert_eq!(segment_names(dir), [1, 2].map(segment_name));

    // Cut everything: the first segment is emptied and reused.
    s.append(&entries(1..=1, 4)).unwrap();
    assert_eq!(segment_names(dir), [segment_name(1)]);
    s.append(&entries(2..=3, 4)).unwrap();
    s.sync().unwrap();
    drop(s);

    let (_, rec) = Storage::open_with(dir, tiny()).unwrap();
    assert_eq!(rec.entries, entries(1..=3, 4));

    // A cut at the exact first index of a segment empties and reuses that segment.
    let (mut s, _) = Storage::open_with(dir, tiny()).unwrap();
    assert_eq!(segment_names(dir), [1, 2].map(segment_name));
    s.append(&entries(4..=5, 4)).unwrap();
    s.append(&entries(6..=7, 4)).unwrap();
    assert_eq!(segment_names(dir), [1, 2, 4, 6].map(segment_name));
    s.append(&entries(4..=4, 5)).unwrap();
    assert_eq!(segment_names(dir), [1, 2, 4].map(segment_name));
    s.sync().unwrap();
    drop(s);
    let (_, rec) = Storage::open_with(dir, tiny()).unwrap();
    let mut want = entries(1..=3, 4);
    want.push(entry(4, 5));
    assert_eq!(rec.entries, want);
}

#[test]
fn truncated_last_record_is_cut_and_later_appends_work() {
    let tmp = tempfile::tempdir().unwrap();
    let seg = seg_path(tmp.path(), 1);
    {
        let (mut s, _) = Storage::open(tmp.path()).unwrap();
        s.append(&entries(1..=5, 1)).unwrap();
        s.sync().unwrap();
    }
    let last = *record_offsets(&seg).last().unwrap();
    let len = fs::metadata(&seg).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 3)
        .unwrap();

    {
        let (mut s, rec) = Storage::open(tmp.path()).unwrap();
        assert_eq!(rec.entries, entries(1..=4, 1));
        let note = format!(
            "cut a torn tail of {} bytes at wal/{} offset {last}",
            len - 3 - last as u64,
            segment_name(1)
        );
        assert!(
            rec.notes.iter().any(|n| n.starts_with(&note)),
            "{:?}",
            rec.notes
        );
        assert_eq!(fs::metadata(&seg).unwrap().len(), last as u64);
        s.append(&entries(5..=6, 2)).unwrap();
        s.sync().unwrap();
    }
    let (_, rec) = Storage::open(tmp.path()).unwrap();
    let mut want = entries(1..=4, 1);
    want.extend(entries(5..=6, 2));
    assert_eq!(rec.entries, want);
    assert!(
        !rec.notes.iter().any(|n| n.contains("torn")),
        "{:?}",
        rec.notes
    );
}

#[test]
fn torn_header_and_zero_filled_tail_are_cut() {
    let tmp = tempfile::tempdir().unwrap();
    let seg = seg_path(tmp.path(), 1);
    {
        let (mut s, _) = Storage::open(tmp.path()).unwrap();
        s.append(&entries(1..=3, 1)).unwrap();
        s.sync().unwrap();
    }
    let good = fs::read(&seg).unwrap();
    for tail in [vec![7u8, 0, 0], vec![0u8; 4096]] {
        let mut bytes = good.clone();
        bytes.extend_from_slice(&tail);
        fs::write(&seg, &bytes).unwrap();
        let (_, rec) = Storage::open(tmp.path()).unwrap();
        assert_eq!(rec.entries, entries(1..=3, 1));
        assert!(
            rec.notes.iter().any(|n| n.contains("torn tail")),
            "{:?}",
            rec.notes
        );
        assert_eq!(fs::read(&seg).unwrap(), good);
    }
}

#[test]
fn flipped_byte_mid_segment_is_refused_and_files_are_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let seg = seg_path(tmp.path(), 1);
    {
        let (mut s, _) = Storage::open(tmp.path()).unwrap();
        s.append(&entries(1..=5, 1)).unwrap();
        s.sync().unwrap();
        s.save_hard_state(HardState {
            term: 1,
            voted_for: Some(1),
        })
        .unwrap();
    }
    let third = record_offsets(&seg)[2];
    flip_byte(&seg, third + frame::HEADER_LEN + 5);
    let before = all_files(tmp.path());
    let (file, offset) = expect_corrupt(Storage::open(tmp.path()));
    assert_eq!(file, seg.to_string_lossy());
    assert_eq!(offset, third as u64);
    assert_eq!(all_files(tmp.path()), before);
    // The refused open released its lock: trying again gives the same answer.
    assert_eq!(expect_corrupt(Storage::open(tmp.path())).1, third as u64);
}

#[test]
fn flipped_length_mid_segment_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let seg = seg_path(tmp.path(), 1);
    {
        let (mut s, _) = Storage::open(tmp.path()).unwrap();
        s.append(&entries(1..=5, 1)).unwrap();
        s.sync().unwrap();
    }
    let second = record_offsets(&seg)[1];
    // A length running past the end of the file looks like a torn tail on its own;
    // the intact records after it give it away.
    flip_byte(&seg, second + 2);
    let before = all_files(tmp.path());
    assert_eq!(
        expect_corrupt(Storage::open(tmp.path())),
        (seg.to_string_lossy().into(), second as u64)
    );
    assert_eq!(all_files(tmp.path()), before);
}

#[test]
fn flipped_byte_in_the_last_record_is_cut_as_torn() {
    let tmp = tempfile::tempdir().unwrap();
    let seg = seg_path(tmp.path(), 1);
    {
        let (mut s, _) = Storage::open(tmp.path()).unwrap();
        s.append(&entries(1..=5, 1)).unwrap();
        s.sync().unwrap();
    }
    let fifth = record_offsets(&seg)[4];
    flip_byte(&seg, fifth + frame::HEADER_LEN + 3);
    let (_, rec) = Storage::open(tmp.path()).unwrap();
    assert_eq!(rec.entries, entries(1..=4, 1));
    assert!(
        rec.notes.iter().any(|n| n.contains("checksum mismatch")),
        "{:?}",
        rec.notes
    );
    assert_eq!(fs::metadata(&seg).unwrap().len(), fifth as u64);
}

#[test]
fn damage_in_a_segment_before_the_last_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    {
        let (mut s, _) = Storage::open_with(dir, tiny()).unwrap();
        s.append(&entries(1..=3, 1)).unwrap();
        s.append(&entries(4..=6, 1)).unwrap();
        s.sync().unwrap();
    }
    // Chopping the end of segment 1 would pass for a torn tail in the last segment.
    let first = seg_path(dir, 1);
    let last_record = *record_offsets(&first).last().unwrap();
    let len = fs::metadata(&first).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&first)
        .unwrap()
        .set_len(len - 1)
        .unwrap();
    let before = all_files(dir);
    let (file, offset) = expect_corrupt(Storage::open_with(dir, tiny()));
    assert_eq!(
        (file, offset),
        (first.to_string_lossy().into(), last_record as u64)
    );
    assert_eq!(all_files(dir), before);
}

#[test]
fn missing_segment_is_refused_as_an_index_gap() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    {
        let (mut s, _) = Storage::open_with(dir, tiny()).unwrap();
        for batch in [1..=2, 3..=4, 5..=6] {
            s.append(&entries(batch, 1)).unwrap();
        }
        s.sync().unwrap();
    }
    fs::remove_file(seg_path(dir, 3)).unwrap();
    let before = all_files(dir);
    let (file, offset) = expect_corrupt(Storage::open_with(dir, tiny()));
    assert_eq!(
        (file, offset),
        (seg_path(dir, 5).to_string_lossy().into(), 0)
    );
    assert_eq!(all_files(dir), before);

    fs::remove_file(seg_path(dir, 1)).unwrap();
    let (file, _) = expect_corrupt(Storage::open_with(dir, tiny()));
    assert_eq!(file, seg_path(dir, 5).to_string_lossy());
}

#[test]
fn corrupt_hard_state_and_membership_files_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let (mut s, _) = Storage::open(tmp.path()).unwrap();
        s.save_hard_state(HardState {
            term: 7,
            voted_for: None,
        })
        .unwrap();
        s.save_membership(&cluster()).unwrap();
        s.save_identity(&identity()).unwrap();
    }
    let hs = tmp.path().join("hard_state");
    let good_hs = fs::read(&hs).unwrap();
    flip_byte(&hs, good_hs.len() - 2);
    assert_eq!(
        expect_corrupt(Storage::open(tmp.path())).0,
        hs.to_string_lossy()
    );
    fs::write(&hs, &good_hs[..good_hs.len() / 2]).unwrap();
    assert_eq!(
        expect_corrupt(Storage::open(tmp.path())).0,
        hs.to_string_lossy()
    );
    fs::write(&hs, &good_hs).unwrap();

    for name in ["membership", "identity"] {
        let m = tmp.path().join(name);
        let good_m = fs::read(&m).unwrap();
        fs::write(&m, &good_m[..good_m.len() - 1]).unwrap();
        assert_eq!(
            expect_corrupt(Storage::open(tmp.path())).0,
            m.to_string_lossy()
        );
        fs::write(&m, &good_m).unwrap();
    }

    let (_, rec) = Storage::open(tmp.path()).unwrap();
    assert_eq!(
        rec.hard_state,
        HardState {
            term: 7,
            voted_for: None
        }
    );
}

#[test]
fn leftover_tmp_files_are_removed_and_reported() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let (mut s, _) = Storage::open(tmp.path()).unwrap();
        s.save_hard_state(HardState {
            term: 2,
            voted_for: Some(3),
        })
        .unwrap();
    }
    fs::write(tmp.path().join("hard_state.tmp"), b"half a wri").unwrap();
    let (_, rec) = Storage::open(tmp.path()).unwrap();
    assert_eq!(
        rec.hard_state,
        HardState {
            term: 2,
            voted_for: Some(3)
        }
    );
    assert!(!tmp.path().join("hard_state.tmp").exists());
    assert!(
        rec.notes.iter().any(|n| n.contains("hard_state.tmp")),
        "{:?}",
        rec.notes
    );
}

#[test]
fn second_open_of_a_locked_dir_fails_until_the_first_is_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let (first, _) = Storage::open(tmp.path()).unwrap();
    match Storage::open(tmp.path()) {
        Err(Error::Locked(dir)) => assert_eq!(dir, tmp.path()),
        Err(other) => panic!("expected Locked, got {other}"),
        Ok(_) => panic!("expected Locked, got a second open"),
    }
    drop(first);
    Storage::open(tmp.path()).unwrap();
}

#[test]
fn failed_segment_creation_poisons_the_storage() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut s, _) = Storage::open_with(tmp.path(), tiny()).unwrap();
    s.append(&[entry(1, 1)]).unwrap();
    s.sync().unwrap();
    // Rotation must create segment 2; a directory in its place makes that fail, even
    // for root, where permission tricks do not.
    fs::create_dir(seg_path(tmp.path(), 2)).unwrap();
    assert!(matches!(s.append(&[entry(2, 1)]), Err(Error::Io { .. })));
    fs::remove_dir(seg_path(tmp.path(), 2)).unwrap();
    // The cause is gone, but nothing may be trusted after a failure.
    for result in [
        s.append(&[entry(2, 1)]),
        s.sync(),
        s.save_hard_state(HardState {
            term: 9,
            voted_for: None,
        }),
        s.save_membership(&cluster()),
        s.save_identity(&identity()),
    ] {
        let err = result.unwrap_err().to_string();
        assert!(err.contains("earlier failure"), "{err}");
    }
}

#[test]
fn failed_hard_state_save_poisons_the_storage() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut s, _) = Storage::open(tmp.path()).unwrap();
    fs::create_dir(tmp.path().join("hard_state.tmp")).unwrap();
    assert!(s
        .save_hard_state(HardState {
            term: 1,
            voted_for: Some(1)
        })
        .is_err());
    assert!(s.append(&[entry(1, 1)]).is_err());
    assert!(s.sync().is_err());
}

#[test]
fn misuse_of_append_is_rejected_without_poisoning() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut s, _) = Storage::open(tmp.path()).unwrap();
    s.append(&entries(1..=3, 1)).unwrap();
    assert!(s.append(&[entry(5, 1)]).is_err(), "gap");
    assert!(s.append(&[entry(0, 1)]).is_err(), "index 0");
    assert!(
        s.append(&[entry(4, 1), entry(6, 1)]).is_err(),
        "not consecutive"
    );
    assert_eq!(s.last_index(), 3);
    s.append(&[entry(4, 1)]).unwrap();
    s.sync().unwrap();
    assert_eq!(s.last_index(), 4);
}

#[test]
fn unchanged_hard_state_is_not_rewritten() {
    let tmp = tempfile::tempdir().unwrap();
    let hs = HardState {
        term: 4,
        voted_for: Some(1),
    };
    let (mut s, _) = Storage::open(tmp.path()).unwrap();
    s.save_hard_state(hs).unwrap();
    let path = tmp.path().join("hard_state");
    fs::remove_file(&path).unwrap();
    s.save_hard_state(hs).unwrap();
    assert!(!path.exists());
    // The default hard state of a fresh directory needs no file either.
    let tmp2 = tempfile::tempdir().unwrap();
    let (mut s2, _) = Storage::open(tmp2.path()).unwrap();
    s2.save_hard_state(HardState::default()).unwrap();
    assert!(!tmp2.path().join("hard_state").exists());
}

// ---- snapshots, compaction and log resets ----

fn meta(index: Index, term: Term) -> SnapshotMeta {
    SnapshotMeta { index, term }
}

/// A recognisable body of `len` bytes for the snapshot `m`.
fn body(m: SnapshotMeta, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u64 * 31 + m.index * 7 + m.term) as u8)
        .collect()
}

fn snap_path(dir: &Path, m: SnapshotMeta) -> std::path::PathBuf {
    dir.join("snapshots").join(file_name(m))
}

fn snapshot_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A node whose log holds 1..=12 in term 1, one segment per batch of three:
/// segments 1, 4, 7 and 10.
fn four_segments(dir: &Path) -> Storage {
    let (mut s, _) = Storage::open_with(dir, tiny()).unwrap();
    for batch in [1..=3, 4..=6, 7..=9, 10..=12] {
        s.append(&entries(batch, 1)).unwrap();
    }
    s.sync().unwrap();
    assert_eq!(segment_names(dir), [1, 4, 7, 10].map(segment_name));
    s
}

fn has_note(notes: &[String], needle: &str) -> bool {
    notes.iter().any(|n| n.contains(needle))
}

#[test]
fn snapshot_round_trip_through_write_stream_and_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (mut s, rec) = Storage::open(dir).unwrap();
    assert_eq!(rec.snapshot, None);
    s.append(&entries(1..=10, 2)).unwrap();
    s.sync().unwrap();
    let store = s.snapshot_store();
    assert!(store.list().unwrap().is_empty());

    store.write(meta(4, 2), &body(meta(4, 2), 1000)).unwrap();
    // The streaming writer: the body arrives in pieces, as a serializer writes it.
    let big = body(meta(8, 2), 3 << 20);
    let mut w = store.create(meta(8, 2)).unwrap();
    for piece in big.chunks(70_001) {
        std::io::Write::write_all(&mut w, piece).unwrap();
    }
    w.finish().unwrap();
    assert_eq!(store.list().unwrap(), vec![meta(4, 2), meta(8, 2)]);
    assert_eq!(store.load(meta(8, 2)).unwrap().body, big);
    assert_eq!(
        fs::metadata(snap_path(dir, meta(8, 2))).unwrap().len(),
        big.len() as u64 + 40
    );
    // An empty body is a valid snapshot too.
    store.write(meta(9, 2), &[]).unwrap();
    assert!(store.load(meta(9, 2)).unwrap().body.is_empty());
    drop(s);

    let (s, rec) = Storage::open(dir).unwrap();
    assert_eq!(
        rec.snapshot,
        Some(StoredSnapshot {
            meta: meta(9, 2),
            body: Vec::new()
        })
    );
    assert_eq!(rec.entries, entries(10..=10, 2));
    // Nothing was compacted: the entries below the snapshot are still on disk.
    assert_eq!((s.first_index(), s.last_index()), (1, 10));
    assert!(
        has_note(&rec.notes, "loaded snapshot 9@2"),
        "{:?}",
        rec.notes
    );
}

#[test]
fn only_the_newest_two_snapshots_are_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let (s, _) = Storage::open(tmp.path()).unwrap();
    let store = s.snapshot_store();
    for i in 1..=5 {
        store
            .write(meta(i * 10, 1), &body(meta(i * 10, 1), 100))
            .unwrap();
        let want: Vec<_> = (i.saturating_sub(1).max(1)..=i)
            .map(|j| meta(j * 10, 1))
            .collect();
        assert_eq!(store.list().unwrap(), want);
    }
    assert_eq!(
        snapshot_names(tmp.path()),
        [meta(40, 1), meta(50, 1)].map(file_name)
    );
}

#[test]
fn abandoned_writer_leaves_no_file_and_leftover_tmp_is_removed_on_open() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    {
        let (s, _) = Storage::open(dir).unwrap();
        let store = s.snapshot_store();
        let mut w = store.create(meta(3, 1)).unwrap();
        std::io::Write::write_all(&mut w, b"half of a state machine").unwrap();
        drop(w);
        assert!(snapshot_names(dir).is_empty());
    }
    // What a crash in the middle of a write leaves.
    let leftover = dir
        .join("snapshots")
        .join(format!("{}.tmp", file_name(meta(3, 1))));
    fs::write(&leftover, b"RKVSNAP\0 and then nothing").unwrap();

    // Removed only after every check passed: a refused open leaves it.
    let seg = seg_path(dir, 1);
    fs::write(&seg, [0xFFu8; 64]).unwrap();
    fs::OpenOptions::new()
        .append(true)
        .open(&seg)
        .unwrap()
        .write_all(&{
            let mut b = Vec::new();
            frame::encode(&mut b, &entry(1, 1)).unwrap();
            b
        })
        .unwrap();
    expect_corrupt(Storage::open(dir));
    assert!(leftover.exists());

    fs::write(&seg, b"").unwrap();
    let (_, rec) = Storage::open(dir).unwrap();
    assert!(!leftover.exists());
    assert!(
        has_note(&rec.notes, "interrupted snapshot write"),
        "{:?}",
        rec.notes
    );
}

#[test]
fn compaction_deletes_only_wholly_covered_segments() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut s = four_segments(dir);
    // Refused without a snapshot that reaches the index, and nothing changes.
    assert!(s.compact(7).is_err());
    assert_eq!(segment_names(dir).len(), 4);

    s.snapshot_store()
        .write(meta(7, 1), &body(meta(7, 1), 500))
        .unwrap();
    let before = s.wal_bytes();
    s.compact(7).unwrap();
    // Segment 7 holds 8 and 9 too: it stays, and so does everything after it.
    assert_eq!(segment_names(dir), [7, 10].map(segment_name));
    assert_eq!((s.first_index(), s.last_index()), (7, 12));
    assert!(s.wal_bytes() < before);
    let on_disk: u64 = segment_names(dir)
        .iter()
        .map(|n| fs::metadata(dir.join("wal").join(n)).unwrap().len())
        .sum();
    assert_eq!(s.wal_bytes(), on_disk);
    // The last segment is never deleted, however far the snapshot reaches.
    s.snapshot_store()
        .write(meta(12, 1), &body(meta(12, 1), 10))
        .unwrap();
    s.compact(12).unwrap();
    assert_eq!(segment_names(dir), [segment_name(10)]);
    s.append(&entries(13..=14, 1)).unwrap();
    s.sync().unwrap();
    drop(s);

    let (s, rec) = Storage::open_with(dir, tiny()).unwrap();
    assert_eq!(rec.snapshot.unwrap().meta, meta(12, 1));
    assert_eq!(rec.entries, entries(13..=14, 1));
    assert_eq!((s.first_index(), s.last_index()), (10, 14));
}

#[test]
fn recovery_starts_from_the_snapshot_and_the_log_suffix() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut s = four_segments(dir);
    s.snapshot_store()
        .write(meta(5, 1), &body(meta(5, 1), 64))
        .unwrap();
    s.compact(5).unwrap();
    assert_eq!(segment_names(dir), [4, 7, 10].map(segment_name));
    drop(s);
    let (mut s, rec) = Storage::open_with(dir, tiny()).unwrap();
    assert_eq!(rec.snapshot.as_ref().unwrap().meta, meta(5, 1));
    assert_eq!(rec.snapshot.unwrap().body, body(meta(5, 1), 64));
    assert_eq!(rec.entries, entries(6..=12, 1));
    assert_eq!(s.first_index(), 4);
    // A conflict truncation in a log that starts at 4 still works, down to its first
    // segment; below the first index it is misuse and poisons nothing.
    s.append(&entries(6..=6, 2)).unwrap();
    assert_eq!(segment_names(dir), [4, 6].map(segment_name));
    assert!(s.append(&entries(3..=3, 2)).is_err());
    s.append(&entries(7..=7, 2)).unwrap();
    s.sync().unwrap();
    drop(s);
    let (_, rec) = Storage::open_with(dir, tiny()).unwrap();
    assert_eq!(rec.entries, entries(6..=7, 2));
}

#[test]
fn a_crash_between_snapshot_and_compaction_is_harmless() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let s = four_segments(dir);
    s.snapshot_store()
        .write(meta(9, 1), &body(meta(9, 1), 64))
        .unwrap();
    drop(s);
    // Not compacted at all.
    let (s, rec) = Storage::open_with(dir, tiny()).unwrap();
    assert_eq!(rec.entries, entries(10..=12, 1));
    assert_eq!(s.first_index(), 1);
    drop(s);
    // Compaction part-way, with the deletions reaching the disk out of order: a
    // covered segment cut off by a gap is deleted on open.
    fs::remove_file(seg_path(dir, 4)).unwrap();
    let (s, rec) = Storage::open_with(dir, tiny()).unwrap();
    assert_eq!(rec.entries, entries(10..=12, 1));
    assert_eq!(s.first_index(), 7);
    assert_eq!(segment_names(dir), [7, 10].map(segment_name));
    assert!(
        has_note(&rec.notes, "interrupted compaction"),
        "{:?}",
        rec.notes
    );
}

#[test]
fn a_gap_between_the_snapshot_and_the_log_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let s = four_segments(dir);
    s.snapshot_store()
        .write(meta(5, 1), &body(meta(5, 1), 64))
        .unwrap();
    drop(s);
    // Entries 6 and 7..9 lost: the log restarts at 10, the snapshot ends at 5.
    fs::remove_file(seg_path(dir, 1)).unwrap();
    fs::remove_file(seg_path(dir, 4)).unwrap();
    fs::remove_file(seg_path(dir, 7)).unwrap();
    let before = all_files(dir);
    let (file, offset) = expect_corrupt(Storage::open_with(dir, tiny()));
    assert_eq!(
        (file, offset),
        (seg_path(dir, 10).to_string_lossy().into(), 0)
    );
    assert_eq!(all_files(dir), before);

    // A gap with entries above the snapshot before it: entries 4..=6 are missing
    // from the middle of the log.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let s = four_segments(dir);
    s.snapshot_store()
        .write(meta(2, 1), &body(meta(2, 1), 64))
        .unwrap();
    drop(s);
    fs::remove_file(seg_path(dir, 4)).unwrap();
    let (file, _) = expect_corrupt(Storage::open_with(dir, tiny()));
    assert_eq!(file, seg_path(dir, 7).to_string_lossy());
}

#[test]
fn damaged_newest_snapshot_falls_back_when_the_log_covers_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    {
        let (mut s, _) = Storage::open(dir).unwrap();
        s.append(&entries(1..=10, 1)).unwrap();
        s.sync().unwrap();
        let store = s.snapshot_store();
        store.write(meta(4, 1), &body(meta(4, 1), 300)).unwrap();
        store.write(meta(8, 1), &body(meta(8, 1), 300)).unwrap();
    }
    let newest = snap_path(dir, meta(8, 1));
    flip_byte(&newest, 100);
    let (mut s, rec) = Storage::open(dir).unwrap();
    assert_eq!(
        rec.snapshot,
        Some(StoredSnapshot {
            meta: meta(4, 1),
            body: body(meta(4, 1), 300)
        })
    );
    assert_eq!(rec.entries, entries(5..=10, 1));
    assert!(
        has_note(&rec.notes, "snapshot 8@1 is damaged (corrupt data in"),
        "{:?}",
        rec.notes
    );
    // Set aside for an operator, out of the way of the next snapshots.
    assert!(!newest.exists());
    assert_eq!(
        snapshot_names(dir),
        [
            file_name(meta(4, 1)),
            format!("{}.damaged", file_name(meta(8, 1)))
        ]
    );
    s.snapshot_store()
        .write(meta(8, 1), &body(meta(8, 1), 300))
        .unwrap();
    assert_eq!(s.snapshot_store().list().unwrap(), [meta(4, 1), meta(8, 1)]);
    s.append(&entries(11..=11, 1)).unwrap();
}

#[test]
fn damaged_only_snapshot_falls_back_to_a_log_that_starts_at_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    {
        let (mut s, _) = Storage::open(dir).unwrap();
        s.append(&entries(1..=10, 1)).unwrap();
        s.sync().unwrap();
        s.snapshot_store()
            .write(meta(8, 1), &body(meta(8, 1), 300))
            .unwrap();
    }
    let path = snap_path(dir, meta(8, 1));
    let len = fs::metadata(&path).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 7)
        .unwrap();
    let (_, rec) = Storage::open(dir).unwrap();
    assert_eq!(rec.snapshot, None);
    assert_eq!(rec.entries, entries(1..=10, 1));
    assert!(has_note(&rec.notes, "8@1 is damaged"), "{:?}", rec.notes);
}

#[test]
fn damaged_newest_snapshot_without_log_coverage_is_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut s = four_segments(dir);
    let store = s.snapshot_store();
    store.write(meta(4, 1), &body(meta(4, 1), 300)).unwrap();
    store.write(meta(9, 1), &body(meta(9, 1), 300)).unwrap();
    s.compact(9).unwrap();
    assert_eq!(segment_names(dir), [segment_name(10)]);
    drop(s);
    // The log starts at 10, the older snapshot ends at 4: entries 5..=9 exist only
    // in the damaged one.
    let newest = snap_path(dir, meta(9, 1));
    flip_byte(&newest, 40);
    let before = all_files(dir);
    let (file, _) = expect_corrupt(Storage::open_with(dir, tiny()));
    assert_eq!(file, newest.to_string_lossy());
    assert_eq!(all_files(dir), before);

    // Truncated instead of flipped: the same refusal.
    fs::write(
        &newest,
        &before[&format!("snapshots/{}", file_name(meta(9, 1)))][..100],
    )
    .unwrap();
    match Storage::open_with(dir, tiny()) {
        Err(Error::Corrupt { file, reason, .. }) => {
            assert_eq!(file, newest);
            assert!(reason.contains("cannot fall back"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn fallback_is_refused_when_the_log_ends_before_the_damaged_snapshot() {
    // The shape a crash between installing a leader's snapshot and resetting the
    // log leaves: the log is far behind the newest snapshot, so falling back to the
    // older one would lose what the leader was told is stored.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    {
        let (mut s, _) = Storage::open(dir).unwrap();
        s.append(&entries(1..=10, 1)).unwrap();
        s.sync().unwrap();
        let store = s.snapshot_store();
        store.write(meta(4, 1), &body(meta(4, 1), 30)).unwrap();
        store.write(meta(50, 3), &body(meta(50, 3), 30)).unwrap();
    }
    flip_byte(&snap_path(dir, meta(50, 3)), 30);
    let (file, _) = expect_corrupt(Storage::open(dir));
    assert_eq!(file, snap_path(dir, meta(50, 3)).to_string_lossy());
}

#[test]
fn garbage_snapshot_files_are_corrupt_never_a_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let (s, _) = Storage::open(tmp.path()).unwrap();
    let store = s.snapshot_store();
    let m = meta(7, 2);
    store.write(m, &body(m, 200)).unwrap();
    let path = snap_path(tmp.path(), m);
    let good = fs::read(&path).unwrap();
    let n = good.len();

    let mut huge_len = good.clone();
    huge_len[n - 12..n - 4].copy_from_slice(&u64::MAX.to_le_bytes());
    let mut version = good.clone();
    version[8] = 9;
    let mut magic = good.clone();
    magic[0] = b'X';
    let mut extended = good.clone();
    extended.extend_from_slice(&[0; 16]);
    let other = {
        store.write(meta(8, 2), &body(m, 200)).unwrap();
        fs::read(snap_path(tmp.path(), meta(8, 2))).unwrap()
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("5 bytes", good[..5].to_vec()),
        ("header only", good[..28].to_vec()),
        ("one short of empty body", good[..39].to_vec()),
        ("zeros", vec![0; 4096]),
        ("0xFF", vec![0xFF; 333]),
        ("body length u64::MAX", huge_len),
        ("unknown version", version),
        ("wrong magic", magic),
        ("extended", extended),
        ("truncated by one", good[..n - 1].to_vec()),
        ("another snapshot under this name", other),
    ];
    for (what, bytes) in cases {
        fs::write(&path, &bytes).unwrap();
        match store.load(m) {
            Err(Error::Corrupt { file, .. }) => assert_eq!(file, path, "{what}"),
            other => panic!("{what}: expected Corrupt, got {other:?}"),
        }
        match store.open_source(m) {
            Err(Error::Corrupt { file, .. }) => assert_eq!(file, path, "{what}"),
            other => panic!("{what}: expected Corrupt from open_source, got {other:?}"),
        }
    }
}

#[test]
fn malformed_snapshot_name_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    drop(Storage::open(tmp.path()).unwrap());
    let stray = tmp.path().join("snapshots").join("7-2.snap");
    fs::write(&stray, b"x").unwrap();
    let (file, _) = expect_corrupt(Storage::open(tmp.path()));
    assert_eq!(file, stray.to_string_lossy());
}

#[test]
fn reset_log_then_append_then_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (mut s, _) = Storage::open_with(dir, tiny()).unwrap();
    s.append(&entries(1..=3, 1)).unwrap();
    s.append(&entries(4..=5, 1)).unwrap();
    s.sync().unwrap();
    let m = meta(20, 3);
    // Refused without the snapshot on disk, and the storage is still usable.
    assert!(s.reset_log(m).is_err());
    s.snapshot_store().write(m, &body(m, 128)).unwrap();
    s.reset_log(m).unwrap();
    assert_eq!(segment_names(dir), [segment_name(21)]);
    assert_eq!((s.first_index(), s.last_index()), (21, 20));
    assert!(
        s.append(&entries(20..=20, 3)).is_err(),
        "below the first index"
    );
    assert!(s.append(&entries(22..=22, 3)).is_err(), "a gap");
    s.append(&entries(21..=23, 3)).unwrap();
    s.append(&entries(24..=25, 3)).unwrap();
    s.sync().unwrap();
    drop(s);

    let (mut s, rec) = Storage::open_with(dir, tiny()).unwrap();
    assert_eq!(rec.snapshot.unwrap().meta, m);
    assert_eq!(rec.entries, entries(21..=25, 3));
    assert!(!has_note(&rec.notes, "replaced the log"), "{:?}", rec.notes);
    // Conflict truncation in a log that starts after a reset: inside the first
    // segment, and at its very first index.
    s.append(&entries(23..=23, 4)).unwrap();
    assert_eq!(segment_names(dir), [21, 23].map(segment_name));
    s.sync().unwrap();
    drop(s);
    let (mut s, rec) = Storage::open_with(dir, tiny()).unwrap();
    let mut want = entries(21..=22, 3);
    want.push(entry(23, 4));
    assert_eq!(rec.entries, want);
    s.append(&entries(21..=21, 5)).unwrap();
    s.sync().unwrap();
    drop(s);
    let (s, rec) = Storage::open_with(dir, tiny()).unwrap();
    assert_eq!(rec.entries, entries(21..=21, 5));
    assert_eq!(s.last_index(), 21);
}

#[test]
fn a_crash_at_any_step_of_reset_log_recovers() {
    // Each case is a state reset_log passes through, left by hand: the snapshot is
    // durable (it always is first), the old log 1..=12 in term 1 conflicts with it
    // at index 9 (term 2) or ends before it (index 20).
    type Step = fn(&Path);
    let steps: [(&str, Step); 5] = [
        ("nothing deleted yet", |_| {}),
        ("newest segment deleted", |d| {
            fs::remove_file(seg_path(d, 10)).unwrap()
        }),
        ("a middle segment deleted", |d| {
            fs::remove_file(seg_path(d, 4)).unwrap()
        }),
        ("every segment deleted", |d| {
            for i in [1, 4, 7, 10] {
                fs::remove_file(seg_path(d, i)).unwrap();
            }
        }),
        ("the wal directory itself gone", |d| {
            fs::remove_dir_all(d.join("wal")).unwrap()
        }),
    ];
    for m in [meta(9, 2), meta(20, 2)] {
        for (what, step) in steps {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path();
            let s = four_segments(dir);
            s.snapshot_store().write(m, &body(m, 50)).unwrap();
            drop(s);
            step(dir);
            let (mut s, rec) = Storage::open_with(dir, tiny())
                .unwrap_or_else(|e| panic!("{}@{} {what}: {e}", m.index, m.term));
            assert_eq!(rec.snapshot.unwrap().meta, m, "{what}");
            assert!(rec.entries.is_empty(), "{what}: {:?}", rec.entries);
            assert_eq!(s.last_index(), m.index, "{what}");
            assert_eq!(segment_names(dir), [segment_name(m.index + 1)], "{what}");
            s.append(&entries(m.index + 1..=m.index + 2, 2)).unwrap();
            s.sync().unwrap();
            drop(s);
            let (_, rec) = Storage::open_with(dir, tiny()).unwrap();
            assert_eq!(rec.entries, entries(m.index + 1..=m.index + 2, 2), "{what}");
        }
    }
    // The last state: the new empty segment exists (possibly beside nothing else).
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut s = four_segments(dir);
    s.snapshot_store()
        .write(meta(9, 2), &body(meta(9, 2), 5))
        .unwrap();
    s.reset_log(meta(9, 2)).unwrap();
    drop(s);
    let (_, rec) = Storage::open_with(dir, tiny()).unwrap();
    assert!(rec.entries.is_empty());
    assert!(!has_note(&rec.notes, "replaced the log"), "{:?}", rec.notes);
    assert!(has_note(&rec.notes, "next index 10"), "{:?}", rec.notes);
}

#[test]
fn a_log_that_matches_the_snapshot_is_kept() {
    // The snapshot's own entry is in the log with its term: nothing to replace.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let s = four_segments(dir);
    s.snapshot_store()
        .write(meta(9, 1), &body(meta(9, 1), 5))
        .unwrap();
    drop(s);
    let (_, rec) = Storage::open_with(dir, tiny()).unwrap();
    assert_eq!(rec.entries, entries(10..=12, 1));
    assert_eq!(segment_names(dir), [1, 4, 7, 10].map(segment_name));
}

/// Sends every byte of `source` into `incoming` in chunks of `size`, from where the
/// incoming file stands.
fn send(source: &mut super::SnapshotSource, incoming: &mut super::IncomingSnapshot, size: usize) {
    loop {
        let at = incoming.offset();
        let chunk = source.read_chunk(at, size).unwrap();
        if chunk.is_empty() {
            break;
        }
        incoming.write_chunk(at, &chunk).unwrap();
    }
}

#[test]
fn chunked_transfer_resumes_from_the_stored_offset() {
    let leader = tempfile::tempdir().unwrap();
    let follower = tempfile::tempdir().unwrap();
    let m = meta(30, 4);
    let big = body(m, 100_000);
    let (ls, _) = Storage::open(leader.path()).unwrap();
    ls.snapshot_store().write(m, &big).unwrap();
    let mut source = ls.snapshot_store().open_source(m).unwrap();
    assert_eq!(source.meta(), m);
    assert_eq!(source.size(), big.len() as u64 + 40);
    assert!(source.read_chunk(source.size() + 1, 10).is_err());
    assert!(source.read_chunk(u64::MAX, usize::MAX).is_err());
    assert!(source.read_chunk(source.size(), 10).unwrap().is_empty());
    assert_eq!(
        source
            .read_chunk(source.size() - 3, usize::MAX)
            .unwrap()
            .len(),
        3
    );

    let (mut fs_, _) = Storage::open_with(follower.path(), tiny()).unwrap();
    fs_.append(&entries(1..=5, 1)).unwrap();
    fs_.sync().unwrap();
    let store = fs_.snapshot_store();
    let mut incoming = store.receive(m, 7).unwrap();
    assert_eq!((incoming.meta(), incoming.leader_term()), (m, 7));
    assert_eq!(incoming.offset(), 0);
    for i in 0..3u64 {
        let chunk = source.read_chunk(i * 4096, 4096).unwrap();
        incoming.write_chunk(i * 4096, &chunk).unwrap();
    }
    assert_eq!(incoming.offset(), 3 * 4096);
    // The connection drops; a new reader thread picks the transfer up again.
    drop(incoming);
    let mut incoming = store.receive(m, 7).unwrap();
    assert_eq!(incoming.offset(), 3 * 4096);
    // A chunk past the stored bytes would leave a hole: refused, and harmless.
    let ahead = source.read_chunk(5 * 4096, 10).unwrap();
    assert!(incoming.write_chunk(5 * 4096, &ahead).is_err());
    assert!(incoming.write_chunk(u64::MAX, &ahead).is_err());
    // A resent chunk overlapping the stored bytes adds only what is new.
    let overlap = source.read_chunk(2 * 4096, 8192).unwrap();
    incoming.write_chunk(2 * 4096, &overlap).unwrap();
    assert_eq!(incoming.offset(), 4 * 4096);
    incoming.write_chunk(0, &[1, 2, 3]).unwrap();
    assert_eq!(incoming.offset(), 4 * 4096);
    send(&mut source, &mut incoming, 10_000);
    let snap = incoming.finish().unwrap();
    assert_eq!((snap.meta, &snap.body), (m, &big));
    assert_eq!(store.list().unwrap(), [m]);
    assert!(!snapshot_names(follower.path())
        .iter()
        .any(|n| n.ends_with(".partial")));

    // The follower's log lacks 30@4: it resets, then a restart finds the snapshot.
    fs_.reset_log(m).unwrap();
    drop(fs_);
    let (s, rec) = Storage::open_with(follower.path(), tiny()).unwrap();
    assert_eq!(rec.snapshot.unwrap().body, big);
    assert!(rec.entries.is_empty());
    assert_eq!(s.last_index(), 30);
}

#[test]
fn a_new_transfer_discards_the_partial_file_of_another() {
    let tmp = tempfile::tempdir().unwrap();
    let (s, _) = Storage::open(tmp.path()).unwrap();
    let store = s.snapshot_store();
    let m = meta(30, 4);
    let mut first = store.receive(m, 7).unwrap();
    first.write_chunk(0, &[0u8; 10]).unwrap();
    drop(first);
    // Same snapshot from the leader of a later term: its bytes may differ.
    assert_eq!(store.receive(m, 8).unwrap().offset(), 0);
    let partials = |dir: &Path| {
        snapshot_names(dir)
            .into_iter()
            .filter(|n| n.ends_with(".partial"))
            .count()
    };
    assert_eq!(partials(tmp.path()), 1);
    let mut again = store.receive(meta(31, 4), 8).unwrap();
    assert_eq!(again.offset(), 0);
    assert_eq!(partials(tmp.path()), 1);
    // Bytes that are not this snapshot's header are not resumed from.
    again
        .write_chunk(0, b"not a snapshot header at all, no")
        .unwrap();
    drop(again);
    assert_eq!(store.receive(meta(31, 4), 8).unwrap().offset(), 0);
}

#[test]
fn a_damaged_chunk_is_refused_at_finish() {
    let leader = tempfile::tempdir().unwrap();
    let follower = tempfile::tempdir().unwrap();
    let m = meta(12, 2);
    let (ls, _) = Storage::open(leader.path()).unwrap();
    ls.snapshot_store().write(m, &body(m, 20_000)).unwrap();
    let mut source = ls.snapshot_store().open_source(m).unwrap();
    let (fs_, _) = Storage::open(follower.path()).unwrap();
    let store = fs_.snapshot_store();

    let mut incoming = store.receive(m, 3).unwrap();
    let mut chunk = source.read_chunk(0, 8192).unwrap();
    chunk[5000] ^= 0x01;
    incoming.write_chunk(0, &chunk).unwrap();
    send(&mut source, &mut incoming, 8192);
    let partial = follower
        .path()
        .join("snapshots")
        .join(snapshot_names(follower.path()).pop().unwrap());
    assert!(partial.to_string_lossy().ends_with(".partial"));
    match incoming.finish() {
        Err(Error::Corrupt { file, reason, .. }) => {
            assert_eq!(file, partial);
            assert!(reason.contains("checksum"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(snapshot_names(follower.path()).is_empty());
    // The sender stopping short is refused the same way.
    let mut incoming = store.receive(m, 3).unwrap();
    assert_eq!(incoming.offset(), 0);
    let all = source.read_chunk(0, usize::MAX).unwrap();
    incoming.write_chunk(0, &all[..all.len() - 1]).unwrap();
    assert!(matches!(incoming.finish(), Err(Error::Corrupt { .. })));
    assert!(store.list().unwrap().is_empty());
    // And a clean resend succeeds.
    let mut incoming = store.receive(m, 3).unwrap();
    send(&mut source, &mut incoming, 1 << 20);
    assert_eq!(incoming.finish().unwrap().body, body(m, 20_000));
}

#[test]
fn a_log_reset_without_its_snapshot_is_refused() {
    // An empty log continuing at 21 with no snapshot: entries 1..=20 are nowhere.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    {
        let (mut s, _) = Storage::open(dir).unwrap();
        s.snapshot_store().write(meta(20, 1), b"state").unwrap();
        s.reset_log(meta(20, 1)).unwrap();
    }
    fs::remove_file(snap_path(dir, meta(20, 1))).unwrap();
    let (file, _) = expect_corrupt(Storage::open(dir));
    assert_eq!(file, seg_path(dir, 21).to_string_lossy());
}

#[test]
fn a_snapshot_being_sent_survives_being_pruned() {
    let tmp = tempfile::tempdir().unwrap();
    let (s, _) = Storage::open(tmp.path()).unwrap();
    let store = s.snapshot_store();
    let m = meta(10, 1);
    store.write(m, &body(m, 5000)).unwrap();
    let mut source = store.open_source(m).unwrap();
    let first = source.read_chunk(0, 100).unwrap();
    store.write(meta(20, 1), b"newer").unwrap();
    store.write(meta(30, 1), b"newest").unwrap();
    assert!(!snap_path(tmp.path(), m).exists());
    // The open file still holds every byte of it.
    let mut all = first;
    all.extend(source.read_chunk(100, usize::MAX).unwrap());
    let mut incoming = store.receive(m, 1).unwrap();
    incoming.write_chunk(0, &all).unwrap();
    assert_eq!(incoming.finish().unwrap().body, body(m, 5000));
}

#[test]
fn compacting_to_the_older_snapshot_keeps_the_fallback_usable() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut s = four_segments(dir);
    let store = s.snapshot_store();
    store.write(meta(4, 1), &body(meta(4, 1), 30)).unwrap();
    store.write(meta(9, 1), &body(meta(9, 1), 30)).unwrap();
    s.compact(4).unwrap();
    assert_eq!(segment_names(dir), [4, 7, 10].map(segment_name));
    drop(s);
    flip_byte(&snap_path(dir, meta(9, 1)), 50);
    let (_, rec) = Storage::open_with(dir, tiny()).unwrap();
    assert_eq!(rec.snapshot.unwrap().meta, meta(4, 1));
    assert_eq!(rec.entries, entries(5..=12, 1));
}
