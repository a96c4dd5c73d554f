//! The journal (`storage/journal.rs`): a commit whose meta page never reached the disk is applied
//! again from its journal record when the store is opened.
//!
//! A power cut cannot be staged in a test, but its effect on the files can: the store is closed
//! (which flushes everything) and its data file copied; then one more group is appended and the
//! store closed again. The copied data file with the later journal files is the store as a power
//! cut after that group's answer could leave it, had its meta page been lost.

mod common;

use common::{
    conditional, event, item, query, read, rewrite_stamp, tracking, write_index_as_version_2,
};
use std::fs;
use std::path::{Path, PathBuf};
use umadb_core::{AppendRequest, Error, Event, ReadRequest, SequencedEvent, Store};

const HEADER_LEN: usize = 32;

fn journal_files(dir: &Path) -> Vec<PathBuf> {
    ["journal-0", "journal-1"]
        .iter()
        .map(|name| dir.join(name))
        .filter(|path| path.exists())
        .collect()
}

/// Copies the journal files of `from` into `to`.
fn copy_journal(from: &Path, to: &Path) {
    let files = journal_files(from);
    assert!(!files.is_empty(), "the store wrote no journal file");
    for file in files {
        fs::copy(&file, to.join(file.file_name().expect("name"))).expect("copy journal");
    }
}

fn all_events(store: &Store) -> Vec<SequencedEvent> {
    store.read_all(ReadRequest::default()).expect("read all").0
}

/// The journal file holding the record for LMDB transaction `txn_id` (its header says so).
fn record_file(dir: &Path, txn_id: u64) -> PathBuf {
    journal_files(dir)
        .into_iter()
        .find(|path| {
            let bytes = fs::read(path).expect("read journal");
            bytes.len() >= HEADER_LEN && bytes[8..16] == txn_id.to_le_bytes()
        })
        .unwrap_or_else(|| panic!("no journal record for transaction {txn_id}"))
}

/// The transaction id of the newest record in `dir`'s journal files.
fn newest_record_txn(dir: &Path) -> u64 {
    journal_files(dir)
        .iter()
        .map(|path| {
            let bytes = fs::read(path).expect("read journal");
            u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"))
        })
        .max()
        .expect("a journal record")
}

/// A store in `live` with two events, its data file copied into `lost` after a clean close; then
/// one more group (events with uuids, a condition and tracking info) appended to `live`. Returns
/// that group's events.
fn stage(live: &Path, lost: &Path) -> Vec<Event> {
    {
        let store = Store::open(live).expect("open");
        store
            .append(AppendRequest {
                events: vec![
                    event("Opened", &["account:1"]),
                    event("Deposited", &["account:1"]),
                ],
                ..Default::default()
            })
            .expect("first append");
    }
    fs::create_dir_all(lost).expect("dir");
    fs::copy(live.join("data.mdb"), lost.join("data.mdb")).expect("copy data file");
    let events = vec![
        event("Withdrawn", &["account:1", "atm:9"]).with_uuid(uuid::Uuid::from_u128(41)),
        event("Closed", &["account:1"]).with_uuid(uuid::Uuid::from_u128(42)),
    ];
    let store = Store::open(live).expect("reopen");
    let mut request = conditional(
        events.clone(),
        query(vec![item(&[], &["account:1"])]),
        Some(2),
    );
    request.tracking_info = Some(tracking("teller", 5));
    assert_eq!(store.append(request).expect("second append"), 4);
    events
}

/// `stage` with the journal files copied too. Returns the temporary directory, the copy, and the
/// file and bytes of the newest journal record in it.
fn staged_copy() -> (tempfile::TempDir, PathBuf, PathBuf, Vec<u8>) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let (live, lost) = (tmp.path().join("live"), tmp.path().join("lost"));
    stage(&live, &lost);
    copy_journal(&live, &lost);
    let file = record_file(&lost, newest_record_txn(&lost));
    let bytes = fs::read(&file).expect("read");
    (tmp, lost, file, bytes)
}

#[test]
fn an_answered_commit_whose_meta_page_was_lost_is_applied_again_at_open() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let (live, lost) = (tmp.path().join("live"), tmp.path().join("lost"));
    let events = stage(&live, &lost);
    let expected = all_events(&Store::open(&live).expect("open live"));
    {
        // Without the journal, the copy holds only the first commit.
        let plain = tmp.path().join("plain");
        fs::create_dir_all(&plain).expect("dir");
        fs::copy(lost.join("data.mdb"), plain.join("data.mdb")).expect("copy");
        assert_eq!(Store::open(&plain).expect("open the copy").head(), Some(2));
    }
    copy_journal(&live, &lost);

    let store = Store::open(&lost).expect("open with the journal");
    assert_eq!(store.head(), Some(4));
    let replay = store.journal_replay().expect("a replay");
    assert_eq!(
        (replay.requests, replay.events, replay.head_before),
        (1, 2, 2)
    );
    let got = all_events(&store);
    assert_eq!(got, expected);
    assert_eq!(got[2].event, events[0]);
    assert_eq!(got[3].event, events[1]);
    assert_eq!(got[3].tracking_info, Some(tracking("teller", 5)));
    assert_eq!(
        store.tracking_position("teller").expect("tracking"),
        Some(5)
    );
    // The replayed events are found by queries, and the next append follows them.
    let (atm, _) = read(
        &store,
        query(vec![item(&[], &["atm:9"])]),
        None,
        false,
        None,
    );
    assert_eq!(atm, vec![3]);
    // The same request again is an idempotent retry of the replayed one.
    let mut retry = conditional(
        events.clone(),
        query(vec![item(&[], &["account:1"])]),
        Some(2),
    );
    retry.tracking_info = Some(tracking("teller", 6));
    assert_eq!(store.append(retry).expect("retry"), 4);
    assert_eq!(
        store
            .append(AppendRequest {
                events: vec![event("Reopened", &["account:1"])],
                ..Default::default()
            })
            .expect("append after replay"),
        5
    );
    drop(store);
    // Opening again applies nothing twice.
    let store = Store::open(&lost).expect("open again");
    assert_eq!(store.head(), Some(5));
    assert_eq!(store.journal_replay(), None);
    assert_eq!(all_events(&store)[..4], expected[..]);
}

/// A store of format version 2 whose last commit's meta page a crash kept from the disk:
/// opening upgrades it in a transaction of its own, and still applies that commit's record.
#[test]
fn a_version_2_store_is_upgraded_and_its_lost_commit_applied_again() {
    let (_tmp, lost, file, mut bytes) = staged_copy();
    // Made like version 2 by direct writes, transactions of their own: the record is renumbered
    // to follow them, as a version 2 build would have numbered it.
    write_index_as_version_2(&lost);
    let mut stamp = b"umadb-v1".to_vec();
    stamp.extend_from_slice(&2u32.to_be_bytes());
    rewrite_stamp(&lost, &stamp);
    let last_txn = {
        let env = unsafe { heed::EnvOpenOptions::new().max_dbs(8).open(&lost) }.expect("env");
        let id = env.read_txn().expect("read txn").id() as u64;
        env.prepare_for_closing().wait();
        id
    };
    bytes[8..16].copy_from_slice(&(last_txn + 1).to_le_bytes());
    let body_len = u32::from_le_bytes(bytes[24..28].try_into().expect("4 bytes")) as usize;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&bytes[8..28]);
    hasher.update(&bytes[HEADER_LEN..HEADER_LEN + body_len]);
    let crc = hasher.finalize();
    bytes[28..32].copy_from_slice(&crc.to_le_bytes());
    fs::write(&file, bytes).expect("write");

    let store = Store::open(&lost).expect("open");
    assert_eq!(store.head(), Some(4));
    let replay = store.journal_replay().expect("a replay");
    assert_eq!((replay.requests, replay.events), (1, 2));
    let (atm, _) = read(
        &store,
        query(vec![item(&[], &["atm:9"])]),
        None,
        false,
        None,
    );
    assert_eq!(atm, vec![3]);
    let report = store.check(|_| {}).expect("check");
    assert!(report.is_ok(), "{:?}", report.problems);
}

#[test]
fn a_torn_journal_record_is_not_applied() {
    let (_tmp, lost, file, mut bytes) = staged_copy();
    bytes[HEADER_LEN + 10] ^= 0x55;
    fs::write(&file, bytes).expect("write");

    let store = Store::open(&lost).expect("open");
    assert_eq!(store.head(), Some(2));
    assert_eq!(store.journal_replay(), None);
    assert_eq!(store.tracking_position("teller").expect("tracking"), None);
}

#[test]
fn a_journal_record_written_onto_another_head_is_not_applied() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let (live, lost) = (tmp.path().join("live"), tmp.path().join("lost"));
    stage(&live, &lost);
    // Another store, at the same transaction id as the copy but with three events.
    let other = tmp.path().join("other");
    {
        let store = Store::open(&other).expect("open other");
        store
            .append(AppendRequest {
                events: vec![event("A", &[]), event("B", &[]), event("C", &[])],
                ..Default::default()
            })
            .expect("append");
    }
    copy_journal(&live, &other);
    let store = Store::open(&other).expect("open other with the journal");
    assert_eq!(store.head(), Some(3));
    let types: Vec<String> = all_events(&store)
        .into_iter()
        .map(|e| e.event.event_type)
        .collect();
    assert_eq!(types, ["A", "B", "C"]);
}

#[test]
fn a_journal_record_that_cannot_be_applied_refuses_the_store_with_a_clear_error() {
    let (_tmp, lost, file, mut bytes) = staged_copy();
    // A body whose checksum holds but which does not decode: a bug, not a torn write.
    let body = [0x05u8, 0x01, 0xff];
    bytes[24..28].copy_from_slice(&(body.len() as u32).to_le_bytes());
    bytes[HEADER_LEN..HEADER_LEN + body.len()].copy_from_slice(&body);
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&bytes[8..28]);
    hasher.update(&body);
    let crc = hasher.finalize();
    bytes[28..32].copy_from_slice(&crc.to_le_bytes());
    fs::write(&file, bytes).expect("write");

    let err = Store::open(&lost)
        .err()
        .expect("a record that cannot be applied must refuse the store");
    let Error::Corruption(message) = err else {
        panic!("expected a corruption error, got {err:?}");
    };
    assert!(message.contains("journal"), "{message}");
    // Moving the journal aside opens the store without that commit.
    for file in journal_files(&lost) {
        fs::remove_file(file).expect("remove");
    }
    assert_eq!(Store::open(&lost).expect("open").head(), Some(2));
}

#[test]
fn a_group_too_large_for_the_journal_is_committed_in_full() {
    let (dir, store) = common::temp_store();
    let path = dir.path().join("db");
    store
        .append(AppendRequest {
            events: vec![event("Small", &["s"])],
            ..Default::default()
        })
        .expect("small append");
    let big: Vec<Event> = (0..9)
        .map(|i| Event::new("Big", [format!("b:{i}")], vec![i as u8; 1 << 20]))
        .collect();
    assert_eq!(
        store
            .append(AppendRequest {
                events: big.clone(),
                ..Default::default()
            })
            .expect("big append"),
        10
    );
    drop(store);
    // No journal file was grown to hold the 9 MiB group.
    for file in journal_files(&path) {
        let len = fs::metadata(&file).expect("stat").len();
        assert!(len <= 1 << 20, "{} is {len} bytes", file.display());
    }
    let store = Store::open(&path).expect("reopen");
    let events = all_events(&store);
    assert_eq!(events.len(), 10);
    assert_eq!(
        events[1..]
            .iter()
            .map(|e| e.event.clone())
            .collect::<Vec<_>>(),
        big
    );
}

#[test]
fn a_new_store_has_no_journal_files_until_its_first_append() {
    let (dir, store) = common::temp_store();
    let path = dir.path().join("db");
    assert!(journal_files(&path).is_empty());
    store
        .append(AppendRequest {
            events: vec![event("First", &[])],
            ..Default::default()
        })
        .expect("append");
    assert_eq!(journal_files(&path).len(), 1);
    // The journal holds events, so it is private like the data file.
    use std::os::unix::fs::PermissionsExt;
    for file in journal_files(&path) {
        let mode = fs::metadata(&file).expect("stat").permissions().mode();
        assert_eq!(mode & 0o077, 0, "{} has mode {mode:o}", file.display());
    }
}

#[test]
fn a_record_is_applied_only_by_a_process_that_has_the_store_alone() {
    let (_tmp, lost, _, _) = staged_copy();
    // Another process with the store open holds a shared lock on its directory; to it, a record
    // for the next transaction is a commit that failed there, not one lost with a crash.
    let other = fs::File::open(&lost).expect("open directory");
    other.lock_shared().expect("shared lock");
    {
        let store = Store::open(&lost).expect("open beside another");
        assert_eq!(store.head(), Some(2));
        assert_eq!(store.journal_replay(), None);
    }
    drop(other);
    let store = Store::open(&lost).expect("open alone");
    assert_eq!(store.head(), Some(4));
    assert!(store.journal_replay().is_some());
}
