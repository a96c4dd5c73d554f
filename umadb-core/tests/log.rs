//! The log (`storage/wal.rs`): groups recorded after the last checkpoint are applied again when
//! a store that was not closed is opened.
//!
//! A power cut cannot be staged here (`umadb-server/tests/durability.rs` rebuilds the states one
//! can leave), but the worst of its effects on the files can: the store is closed and its data
//! file copied; the store is opened again (a checkpoint) and one more group appended; then the
//! log files are copied while the store is still open. The data file without that group's
//! pages, with the log files that record it, is the store as a power cut after the group's
//! answer could leave it.

mod common;

use common::{conditional, event, item, query, read, tracking};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;
use umadb_core::{AppendRequest, Error, Event, ReadRequest, SequencedEvent, Store, StoreOptions};

/// Checkpoints only when a test says so (opening, a group too large for a record, closing).
fn no_timed_checkpoints() -> StoreOptions {
    StoreOptions {
        checkpoint_interval: Duration::from_secs(3600),
        ..Default::default()
    }
}

fn open(path: &Path) -> Store {
    Store::open_with(path, no_timed_checkpoints()).expect("open")
}

fn log_files(dir: &Path) -> Vec<PathBuf> {
    ["log-0", "log-1"]
        .iter()
        .map(|name| dir.join(name))
        .filter(|path| path.exists())
        .collect()
}

/// Copies the log files of `from` into `to`.
fn copy_log(from: &Path, to: &Path) {
    let files = log_files(from);
    assert!(!files.is_empty(), "the store wrote no log file");
    for file in files {
        fs::copy(&file, to.join(file.file_name().expect("name"))).expect("copy log");
    }
}

fn all_events(store: &Store) -> Vec<SequencedEvent> {
    store.read_all(ReadRequest::default()).expect("read all").0
}

const FILE_HEADER_EPOCH: usize = 8;
const RECORDS_AT: usize = 4096;
const RECORD_HEADER: usize = 40;

/// The log file of the newest epoch in `dir` (its header says so).
fn newest_log_file(dir: &Path) -> PathBuf {
    log_files(dir)
        .into_iter()
        .max_by_key(|path| {
            let bytes = fs::read(path).expect("read log");
            u64::from_le_bytes(
                bytes[FILE_HEADER_EPOCH..FILE_HEADER_EPOCH + 8]
                    .try_into()
                    .expect("8 bytes"),
            )
        })
        .expect("a log file")
}

/// A store in `live` with two events, its data file copied into `lost` after a clean close; then
/// one more group (events with uuids, a condition and tracking info) appended to `live`, and the
/// log files copied into `lost` before `live` is closed. Returns that group's events.
fn stage(live: &Path, lost: &Path) -> Vec<Event> {
    {
        let store = open(live);
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
    let store = open(live);
    let request = staged_request(&events, 5);
    assert_eq!(store.append(request).expect("second append"), 4);
    copy_log(live, lost);
    events
}

/// The staged group's request: `events` on the condition that nothing tagged `account:1` follows
/// position 2, tracked as the teller's `position`.
fn staged_request(events: &[Event], position: u64) -> AppendRequest {
    let mut request = conditional(
        events.to_vec(),
        query(vec![item(&[], &["account:1"])]),
        Some(2),
    );
    request.tracking_info = Some(tracking("teller", position));
    request
}

/// `stage`d. Returns the temporary directory, the copy, and the file and bytes of the newest
/// epoch in it, which holds the group's record.
fn staged_copy() -> (tempfile::TempDir, PathBuf, PathBuf, Vec<u8>) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let (live, lost) = (tmp.path().join("live"), tmp.path().join("lost"));
    stage(&live, &lost);
    let file = newest_log_file(&lost);
    let bytes = fs::read(&file).expect("read");
    (tmp, lost, file, bytes)
}

/// Seals the record at the start of `bytes`' records again after a test changed it.
fn reseal_first_record(bytes: &mut [u8]) {
    let at = RECORDS_AT;
    let body_len =
        u32::from_le_bytes(bytes[at + 32..at + 36].try_into().expect("4 bytes")) as usize;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&bytes[at + 8..at + 36]);
    hasher.update(&bytes[at + RECORD_HEADER..at + RECORD_HEADER + body_len]);
    let crc = hasher.finalize();
    bytes[at + 36..at + 40].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn an_answered_group_whose_pages_were_lost_is_applied_again_at_open() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let (live, lost) = (tmp.path().join("live"), tmp.path().join("lost"));
    let events = stage(&live, &lost);
    let expected = all_events(&open(&live));
    {
        // Without the log, the copy holds only the first group.
        let plain = tmp.path().join("plain");
        fs::create_dir_all(&plain).expect("dir");
        fs::copy(lost.join("data.mdb"), plain.join("data.mdb")).expect("copy");
        assert_eq!(open(&plain).head(), Some(2));
    }

    let store = open(&lost);
    assert_eq!(store.head(), Some(4));
    let replay = store.journal_replay().expect("a replay");
    assert_eq!(
        (
            replay.records,
            replay.requests,
            replay.events,
            replay.head_before
        ),
        (1, 1, 2, 2)
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
    let retry = staged_request(&events, 6);
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

#[test]
fn a_torn_log_record_is_not_applied() {
    let (_tmp, lost, file, mut bytes) = staged_copy();
    bytes[RECORDS_AT + RECORD_HEADER + 10] ^= 0x55;
    fs::write(&file, bytes).expect("write");

    let store = open(&lost);
    assert_eq!(store.head(), Some(2));
    assert_eq!(store.journal_replay(), None);
    assert_eq!(store.tracking_position("teller").expect("tracking"), None);
}

/// Log files beside a data file they were not written with (a store restored from another's
/// files, say) refuse the store, with the way out in the error.
#[test]
fn log_files_of_another_store_refuse_it_with_a_clear_error() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let (live, lost) = (tmp.path().join("live"), tmp.path().join("lost"));
    stage(&live, &lost);
    // Another store with three events, and as many commits as the copy.
    let other = tmp.path().join("other");
    {
        let store = open(&other);
        store
            .append(AppendRequest {
                events: vec![event("A", &[]), event("B", &[]), event("C", &[])],
                ..Default::default()
            })
            .expect("append");
    }
    copy_log(&lost, &other);
    let Err(Error::Corruption(message)) = Store::open_with(&other, no_timed_checkpoints()) else {
        panic!("the other store opened with the copy's log");
    };
    assert!(message.contains("do not belong together"), "{message}");
    for file in log_files(&other) {
        fs::remove_file(file).expect("remove");
    }
    let store = open(&other);
    let types: Vec<String> = all_events(&store)
        .into_iter()
        .map(|e| e.event.event_type)
        .collect();
    assert_eq!(types, ["A", "B", "C"]);
}

#[test]
fn a_log_record_that_cannot_be_applied_refuses_the_store_with_a_clear_error() {
    let (_tmp, lost, file, mut bytes) = staged_copy();
    // A body whose checksum holds but which does not decode: a bug, not a torn write.
    let body = [0x05u8, 0x01, 0xff];
    let at = RECORDS_AT;
    bytes[at + 32..at + 36].copy_from_slice(&(body.len() as u32).to_le_bytes());
    bytes[at + RECORD_HEADER..at + RECORD_HEADER + body.len()].copy_from_slice(&body);
    reseal_first_record(&mut bytes);
    fs::write(&file, bytes).expect("write");

    let err = Store::open_with(&lost, no_timed_checkpoints())
        .err()
        .expect("a record that cannot be applied must refuse the store");
    let Error::Corruption(message) = err else {
        panic!("expected a corruption error, got {err:?}");
    };
    assert!(message.contains("log-0 and log-1"), "{message}");
    // Moving the log aside opens the store without that group.
    for file in log_files(&lost) {
        fs::remove_file(file).expect("remove");
    }
    assert_eq!(open(&lost).head(), Some(2));
}

/// A record that does not continue from where the store and the records before it end is not
/// taken for the end of the log: the store is refused.
#[test]
fn a_log_record_onto_another_head_refuses_the_store() {
    let (_tmp, lost, file, mut bytes) = staged_copy();
    let at = RECORDS_AT;
    bytes[at + 24..at + 32].copy_from_slice(&7u64.to_le_bytes());
    reseal_first_record(&mut bytes);
    fs::write(&file, bytes).expect("write");
    let Err(Error::Corruption(message)) = Store::open_with(&lost, no_timed_checkpoints()) else {
        panic!("a record onto another head was applied or ignored");
    };
    assert!(message.contains("continues from position 7"), "{message}");
}

/// A group too large for a record is made durable by a checkpoint before it is answered: the
/// files as they stand right after the answer hold it, with no record to apply.
#[test]
fn a_group_too_large_for_a_record_is_made_durable_by_a_checkpoint() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let path = tmp.path().join("db");
    let store = open(&path);
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
    let copy = tmp.path().join("copy");
    fs::create_dir_all(&copy).expect("dir");
    fs::copy(path.join("data.mdb"), copy.join("data.mdb")).expect("copy data file");
    copy_log(&path, &copy);
    drop(store);
    // No log file was grown to hold the 9 MiB group.
    for file in log_files(&path) {
        let len = fs::metadata(&file).expect("stat").len();
        assert!(len <= 1 << 20, "{} is {len} bytes", file.display());
    }
    let store = open(&copy);
    assert_eq!(store.journal_replay(), None);
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
fn a_new_store_has_private_log_files_from_its_first_opening() {
    let (dir, _store) = common::temp_store();
    let path = dir.path().join("db");
    assert_eq!(log_files(&path).len(), 1);
    // The log holds events, so it is private like the data file.
    use std::os::unix::fs::PermissionsExt;
    for file in log_files(&path) {
        let mode = fs::metadata(&file).expect("stat").permissions().mode();
        assert_eq!(mode & 0o077, 0, "{} has mode {mode:o}", file.display());
    }
}

/// A process that opens a store another has open (`umadb check` beside a running server) shares
/// its page cache, which holds every commit: it leaves the data file and the log alone. Only
/// one process appends: the one holding `writer.lock`; the others refuse appends.
#[test]
fn a_process_beside_the_appending_one_neither_recovers_nor_appends() {
    let (_tmp, lost, _, _) = staged_copy();
    // What the appending process holds: a shared lock on the directory, and the writer's lock.
    let directory = fs::File::open(&lost).expect("open directory");
    directory.lock_shared().expect("shared lock");
    let writer = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(lost.join("writer.lock"))
        .expect("writer lock file");
    writer.lock().expect("writer lock");
    {
        let store = open(&lost);
        assert_eq!(store.head(), Some(2));
        assert_eq!(store.journal_replay(), None);
        let refused = refused_append(&store, "Beside");
        assert!(refused.message().contains("another process"), "{refused:?}");
    }
    drop((directory, writer));
    let store = open(&lost);
    assert_eq!(store.head(), Some(4));
    assert!(store.journal_replay().is_some());
}

/// The error an append of one event of type `name` through `store` is refused with.
fn refused_append(store: &Store, name: &str) -> Error {
    store
        .append(AppendRequest {
            events: vec![event(name, &[])],
            ..Default::default()
        })
        .expect_err("a refused append")
}

/// `umadb check` after a crash with no server running has the store alone: it brings it back
/// without taking the appending process's role, and marks its checkpoint closed, so the next
/// opening applies nothing again.
#[test]
fn a_reading_process_alone_recovers_the_store_and_leaves_appending_to_others() {
    let (_tmp, lost, _, _) = staged_copy();
    let reading = StoreOptions {
        appends: false,
        ..no_timed_checkpoints()
    };
    {
        let checker = Store::open_with(&lost, reading).expect("open for reading");
        assert!(!checker.appends());
        assert_eq!(checker.head(), Some(4));
        assert!(checker.journal_replay().is_some());
        // The writer's lock is free for a server.
        let writer = fs::File::open(lost.join("writer.lock")).expect("writer lock file");
        writer.try_lock().expect("the writer lock is free");
        drop(writer);
        let refused = refused_append(&checker, "Checked");
        assert!(refused.message().contains("reading only"), "{refused:?}");
    }
    let store = open(&lost);
    assert!(store.appends());
    assert_eq!(store.journal_replay(), None);
    assert_eq!(store.head(), Some(4));
}
