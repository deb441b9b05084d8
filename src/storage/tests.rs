//! Behaviour of the `Storage` facade against real files in temporary directories.

use std::{collections::BTreeMap, fs, path::Path};

use super::{
    frame::{self, Decoded},
    wal::segment_name,
    Storage, StorageOptions,
};
use crate::{
    config::{ClusterConfig, NodeSpec},
    error::Error,
    kv::{Command, WriteOp},
    raft::{Entry, HardState, Index, Payload, Term},
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

fn cluster() -> ClusterConfig {
    ClusterConfig {
        nodes: (1..=3)
            .map(|id| NodeSpec {
                id,
                raft: format!("127.0.0.1:700{id}"),
                client: format!("127.0.0.1:800{id}"),
            })
            .collect(),
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
        assert_eq!(s.last_index(), 10);
    }
    let (s, rec) = Storage::open(tmp.path()).unwrap();
    let mut want = entries(1..=4, 1);
    want.extend(entries(5..=10, 2));
    assert_eq!(rec.entries, want);
    assert_eq!(rec.hard_state, hs);
    assert_eq!(rec.membership, Some(cluster()));
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

    let m = tmp.path().join("membership");
    let good_m = fs::read(&m).unwrap();
    fs::write(&m, &good_m[..good_m.len() - 1]).unwrap();
    assert_eq!(
        expect_corrupt(Storage::open(tmp.path())).0,
        m.to_string_lossy()
    );
    fs::write(&m, &good_m).unwrap();

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
