//! `Store::check` verifies a whole store; `Store::backup` copies one consistently.

mod common;

use common::{append, event, item, query, raw_write, temp_store, Raw};
use umadb_core::{AppendRequest, Event, ReadRequest, Store, StoreOptions, TrackingInfo};

fn fill(store: &Store) {
    for i in 0..50u64 {
        let tag = format!("t{}", i % 7);
        append(
            store,
            vec![event("A", &[&tag, "shared"]), event("B", &[&tag])],
        );
    }
    store
        .append(AppendRequest {
            events: vec![event("C", &["tracked"])],
            condition: None,
            tracking_info: Some(TrackingInfo {
                source: "upstream".into(),
                position: 9,
            }),
        })
        .expect("tracked append");
}

#[test]
fn check_passes_on_a_healthy_store() {
    let (_dir, store) = temp_store();
    fill(&store);
    let report = store.check(|_| {}).expect("check runs");
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.events, 101);
    assert_eq!(report.head, 101);
}

#[test]
fn check_passes_on_an_empty_store() {
    let (_dir, store) = temp_store();
    let report = store.check(|_| {}).expect("check runs");
    assert!(report.is_ok());
    assert_eq!((report.events, report.head), (0, 0));
}

#[test]
fn check_reports_a_record_that_fails_its_checksum_with_its_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db");
    let marker = b"damage-me-please";
    {
        let store = Store::open(&path).expect("open");
        fill(&store);
        append(&store, vec![Event::new("D", ["d"], marker.to_vec())]);
    }
    let mut data = std::fs::read(path.join("data.mdb")).expect("read file");
    let at = data
        .windows(marker.len())
        .position(|w| w == marker)
        .expect("record in file");
    data[at + 3] ^= 0x01;
    std::fs::write(path.join("data.mdb"), &data).expect("write file");
    let store = Store::open(&path).expect("reopen");
    let report = store.check(|_| {}).expect("check runs");
    assert!(!report.is_ok());
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("position 102") && p.contains("checksum")),
        "{:?}",
        report.problems
    );
}

/// Index entries as raw (key, value) pairs.
type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// The open chunks (key kind | 0x40, id, zeros; value: base, first position, chunk) must agree
/// with the key's full chunks: a key whose open chunk is gone, or names another first
/// position, is reported.
#[test]
fn check_reports_open_index_chunks_that_disagree_with_the_full_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db");
    let indexed_at_once = StoreOptions {
        index_lag: 0,
        ..Default::default()
    };
    {
        let store = Store::open_with(&path, indexed_at_once.clone()).expect("open");
        // Each tag on every other event: a byte a position, several 256-byte chunks each.
        let events = (0..2_000)
            .map(|i| event("A", &[if i % 2 == 0 { "even" } else { "odd" }]))
            .collect();
        append(&store, events);
        let report = store.check(|_| {}).expect("check runs");
        assert!(report.is_ok(), "{:?}", report.problems);
    }
    let damage = |edit: &dyn Fn(&mut Entries)| -> Vec<String> {
        let copy = tempfile::tempdir().expect("tempdir");
        std::fs::copy(path.join("data.mdb"), copy.path().join("data.mdb")).expect("copy");
        raw_write(copy.path(), |opener, wtxn| {
            let index = opener.create_database::<Raw, Raw>(wtxn, Some("index"))?;
            let mut entries = Vec::new();
            for entry in index.iter(wtxn)? {
                let (k, v) = entry?;
                entries.push((k.to_vec(), v.to_vec()));
            }
            index.clear(wtxn)?;
            edit(&mut entries);
            for (k, v) in entries {
                index.put(wtxn, &k, &v)?;
            }
            Ok(())
        });
        let store = Store::open_with(copy.path(), indexed_at_once.clone()).expect("reopen");
        store.check(|_| {}).expect("check runs").problems
    };
    // The open chunk of a tag (kind 2) with full chunks (kind 2 keys hold only full ones).
    let open_of_many = |entries: &Entries| {
        let (full, _) = entries
            .iter()
            .find(|(k, _)| k[0] == 2)
            .expect("a tag with full chunks");
        entries
            .iter()
            .position(|(k, _)| k[0] == 0x42 && k[1..5] == full[1..5])
            .expect("its open chunk")
    };
    let problems = damage(&|entries| {
        let at = open_of_many(entries);
        entries.remove(at);
    });
    // Its positions in the open chunk are reported missing (the report keeps the first
    // problems it finds; the key itself is reported after them, as having no open chunk).
    assert!(
        problems
            .iter()
            .any(|p| p.contains("no open chunk") || p.contains("missing from the index of Tag")),
        "{problems:?}"
    );
    let problems = damage(&|entries| {
        let at = open_of_many(entries);
        entries[at].1[15] ^= 1;
    });
    assert!(
        problems
            .iter()
            .any(|p| p.contains("disagrees with the key's full chunks")),
        "{problems:?}"
    );
}

#[test]
fn backup_is_a_consistent_copy_that_passes_check() {
    let (dir, store) = temp_store();
    fill(&store);
    let target = dir.path().join("backup");
    store.backup(&target).expect("backup");
    drop(store);
    let copy = Store::open(&target).expect("open backup");
    assert!(copy.check(|_| {}).expect("check").is_ok());
    let (events, head) = copy
        .read_all(ReadRequest {
            query: query(vec![item(&["A"], &["shared"])]),
            ..Default::default()
        })
        .expect("read");
    assert_eq!(events.len(), 50);
    assert_eq!(head, Some(101));
    assert_eq!(
        copy.tracking_position("upstream").expect("tracking"),
        Some(9)
    );
}

#[test]
fn backup_refuses_to_overwrite_a_store() {
    let (dir, store) = temp_store();
    fill(&store);
    let target = dir.path().join("backup");
    store.backup(&target).expect("first backup");
    assert!(matches!(
        store.backup(&target),
        Err(umadb_core::Error::InvalidArgument(_))
    ));
}

#[test]
fn backup_during_appends_holds_a_gapless_prefix() {
    let (dir, store) = temp_store();
    let store = std::sync::Arc::new(store);
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            for i in 0..300u64 {
                append(&store, vec![event("W", &[&format!("w{}", i % 5)])]);
            }
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(20));
    let target = dir.path().join("backup");
    store.backup(&target).expect("backup");
    writer.join().expect("writer");
    let copy = Store::open(&target).expect("open backup");
    let report = copy.check(|_| {}).expect("check");
    assert!(report.is_ok(), "{:?}", report.problems);
    let (events, _) = copy.read_all(ReadRequest::default()).expect("read");
    let positions: Vec<u64> = events.iter().map(|e| e.position).collect();
    assert_eq!(positions, (1..=report.head).collect::<Vec<_>>());
}

/// A long log is checked in two halves on two threads: damage on either side of where it is
/// split, and at the split itself, is reported as one pass through the log reports it.
#[test]
fn check_finds_damage_on_both_sides_of_where_it_splits_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db");
    let indexed_at_once = StoreOptions {
        index_lag: 0,
        ..Default::default()
    };
    let n = 30_000u64;
    {
        let store = Store::open_with(&path, indexed_at_once.clone()).expect("open");
        for first in (0..n).step_by(5_000) {
            let tags: Vec<String> = (first..first + 5_000).map(|i| format!("t{i}")).collect();
            append(&store, tags.iter().map(|t| event("A", &[t])).collect());
        }
        let report = store.check(|_| {}).expect("check runs");
        assert!(report.is_ok(), "{:?}", report.problems);
    }
    // Positions 15,001 (the first of the upper half) and 20,000 go, and two keys of 7 bytes
    // come in their place (opening counts the records against the last position), one sorting
    // in each half; the index entries of the tags of positions 100 and 25,000 go too (each tag
    // is on one event: its open chunk's base).
    raw_write(&path, |opener, wtxn| {
        let events = opener.create_database::<Raw, Raw>(wtxn, Some("events"))?;
        for position in [15_001u64, 20_000] {
            assert!(events.delete(wtxn, &position.to_be_bytes())?);
        }
        // Before position 14,848 (0x3A00) and before 19,968 (0x4E00).
        for bogus in [[0, 0, 0, 0, 0, 0, 0x3A], [0, 0, 0, 0, 0, 0, 0x4E]] {
            events.put(wtxn, &bogus, b"junk")?;
        }
        let index = opener.create_database::<Raw, Raw>(wtxn, Some("index"))?;
        let mut doomed = Vec::new();
        for entry in index.iter(wtxn)? {
            let (k, v) = entry?;
            let base = u64::from_be_bytes(v[..8].try_into().expect("8 bytes"));
            if k[0] == 0x42 && (base == 100 || base == 25_000) {
                doomed.push(k.to_vec());
            }
        }
        assert_eq!(doomed.len(), 2);
        for k in doomed {
            index.delete(wtxn, &k)?;
        }
        Ok(())
    });
    let store = Store::open_with(&path, indexed_at_once).expect("reopen");
    let report = store.check(|_| {}).expect("check runs");
    assert_eq!(
        report.problems,
        vec![
            "event at position 100 is missing from the index of Tag \"t99\"".to_string(),
            "event key has 7 bytes, expected 8".into(),
            "positions are not gapless: expected 15001, found 15002".into(),
            "event key has 7 bytes, expected 8".into(),
            "positions are not gapless: expected 20000, found 20001".into(),
            "event at position 25000 is missing from the index of Tag \"t24999\"".into(),
            "the indexes hold 59998 positions but the events name 59996 (type, tag) memberships"
                .into(),
        ]
    );
    assert_eq!(report.problem_count, 7);
    assert_eq!((report.events, report.head), (n - 2, n));
}
