//! `Store::check` verifies a whole store; `Store::backup` copies one consistently.

mod common;

use common::{append, event, item, query, temp_store};
use umadb_core::{AppendRequest, Event, ReadRequest, Store, TrackingInfo};

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
