//! One test per semantic rule and corner case of DESIGN.md, named after the rule.

mod common;

use common::*;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use umadb_core::{
    AppendRequest, Error, Event, OpeningProgress, Position, ProgressReporter, Query, ReadRequest,
    Store, StoreOptions, TrackingInfo, Uuid, MAX_STRING_LEN,
};

// ---------------------------------------------------------------------------------------------
// Positions and head

#[test]
fn empty_store_has_head_none_and_reads_nothing() {
    let (_dir, store) = temp_store();
    assert_eq!(store.head(), None);
    assert_eq!(
        read(&store, Query::all(), None, false, None),
        (vec![], None)
    );
    assert_eq!(read(&store, Query::all(), None, true, None), (vec![], None));
    assert_eq!(
        read(&store, Query::all(), Some(5), true, Some(3)),
        (vec![], None)
    );
}

#[test]
fn positions_start_at_one_and_are_gapless() {
    let (_dir, store) = temp_store();
    assert_eq!(append(&store, vec![event("A", &["x"])]), 1);
    assert_eq!(store.head(), Some(1));
    assert_eq!(
        append(
            &store,
            vec![event("A", &[]), event("B", &[]), event("C", &[])]
        ),
        4
    );
    // Failed requests of every kind consume no position.
    let failed = store.append(conditional(
        vec![event("A", &[])],
        query(vec![item(&["A"], &[])]),
        None,
    ));
    assert!(matches!(failed, Err(Error::Integrity(_))));
    let mut oversized = event("A", &[]);
    oversized.tags.push("t".repeat(MAX_STRING_LEN + 1));
    assert!(matches!(
        store.append(AppendRequest {
            events: vec![oversized],
            ..Default::default()
        }),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(append(&store, vec![event("D", &[])]), 5);
    assert_eq!(store.head(), Some(5));
    assert_eq!(all_positions(&store), vec![1, 2, 3, 4, 5]);
}

#[test]
fn events_of_one_append_occupy_consecutive_positions_in_the_order_given() {
    let (_dir, store) = temp_store();
    append(&store, vec![event("First", &[])]);
    let events: Vec<Event> = (0..10)
        .map(|i| event(&format!("E{i}"), &["batch"]))
        .collect();
    assert_eq!(append(&store, events.clone()), 11);
    let (read_back, _) = store
        .read_all(ReadRequest {
            query: query(vec![item(&[], &["batch"])]),
            ..Default::default()
        })
        .unwrap();
    let positions: Vec<_> = read_back.iter().map(|e| e.position).collect();
    assert_eq!(positions, (2..=11).collect::<Vec<_>>());
    let read_events: Vec<_> = read_back.into_iter().map(|e| e.event).collect();
    assert_eq!(read_events, events);
}

#[test]
fn append_is_atomic_all_or_nothing() {
    let (_dir, store) = temp_store();
    append(&store, vec![event("A", &["x"])]);
    let mut bad = event("C", &["x"]);
    bad.metadata
        .push(("k".into(), "v".repeat(MAX_STRING_LEN + 1)));
    let result = store.append(AppendRequest {
        events: vec![event("A", &["y"]), event("B", &["y"]), bad],
        ..Default::default()
    });
    assert!(matches!(result, Err(Error::InvalidArgument(_))));
    assert_eq!(store.head(), Some(1));
    assert_eq!(all_positions(&store), vec![1]);
    // Nothing of the failed request reached the indexes either.
    assert_eq!(
        read(&store, query(vec![item(&[], &["y"])]), None, false, None),
        (vec![], Some(1))
    );
    assert_eq!(
        read(&store, query(vec![item(&["B"], &[])]), None, false, None),
        (vec![], Some(1))
    );
}

// ---------------------------------------------------------------------------------------------
// Append conditions

#[test]
fn condition_fails_when_matching_event_after_position() {
    let (_dir, store) = temp_store();
    append(&store, vec![event("Registered", &["student:1"])]);
    append(&store, vec![event("Registered", &["student:2"])]);
    let q = query(vec![item(&["Registered"], &["student:2"])]);
    let result = store.append(conditional(vec![event("X", &[])], q, Some(1)));
    match result {
        Err(Error::Integrity(message)) => assert!(message.contains('2'), "{message}"),
        other => panic!("expected an integrity error, got {other:?}"),
    }
    assert_eq!(store.head(), Some(2));
}

#[test]
fn condition_passes_when_matching_events_are_at_or_before_position() {
    let (_dir, store) = temp_store();
    append(&store, vec![event("Registered", &["student:1"])]);
    append(&store, vec![event("Other", &["student:1"])]);
    let q = query(vec![item(&["Registered"], &["student:1"])]);
    assert_eq!(
        store
            .append(conditional(vec![event("X", &[])], q, Some(1)))
            .unwrap(),
        3
    );
}

#[test]
fn condition_passes_when_no_event_matches() {
    let (_dir, store) = temp_store();
    append(&store, vec![event("A", &["x"])]);
    let q = query(vec![item(&["A"], &["y"]), item(&["B"], &[])]);
    assert_eq!(
        store
            .append(conditional(vec![event("X", &[])], q, None))
            .unwrap(),
        2
    );
}

#[test]
fn condition_without_after_fails_on_any_matching_event() {
    let (_dir, store) = temp_store();
    append(&store, vec![event("A", &["x"])]);
    append(&store, vec![event("B", &[]); 3]);
    let q = query(vec![item(&[], &["x"])]);
    assert!(matches!(
        store.append(conditional(vec![event("X", &[])], q.clone(), None)),
        Err(Error::Integrity(_))
    ));
    // after = 0 is the same as absent: the event at position 1 is after 0.
    assert!(matches!(
        store.append(conditional(vec![event("X", &[])], q, Some(0))),
        Err(Error::Integrity(_))
    ));
}

#[test]
fn condition_after_at_or_beyond_head_passes() {
    let (_dir, store) = temp_store();
    append(&store, vec![event("A", &["x"]); 2]);
    let q = query(vec![item(&[], &["x"])]);
    assert_eq!(
        store
            .append(conditional(vec![event("B", &[])], q.clone(), Some(2)))
            .unwrap(),
        3
    );
    assert_eq!(
        store
            .append(conditional(vec![event("B", &[])], q, Some(1000)))
            .unwrap(),
        4
    );
}

#[test]
fn condition_with_empty_query_fails_on_any_event_after_position() {
    let (_dir, store) = temp_store();
    append(&store, vec![event("A", &[])]);
    assert!(matches!(
        store.append(conditional(vec![event("B", &[])], Query::all(), Some(0))),
        Err(Error::Integrity(_))
    ));
    assert_eq!(
        store
            .append(conditional(vec![event("B", &[])], Query::all(), Some(1)))
            .unwrap(),
        2
    );
}

#[test]
fn condition_on_empty_store_passes() {
    let (_dir, store) = temp_store();
    assert_eq!(
        store
            .append(conditional(vec![event("A", &[])], Query::all(), None))
            .unwrap(),
        1
    );
}

// ---------------------------------------------------------------------------------------------
// Idempotent retries

fn keyed(event_type: &str, tags: &[&str], id: u128) -> Event {
    event(event_type, tags).with_uuid(Uuid::from_u128(id))
}

#[test]
fn idempotent_retry_returns_position_of_recorded_events() {
    let (_dir, store) = temp_store();
    append(&store, vec![event("Before", &["c"])]);
    let q = query(vec![item(&[], &["c"])]);
    let request = conditional(
        vec![keyed("A", &["c"], 1), keyed("B", &["c"], 2)],
        q.clone(),
        Some(1),
    );
    assert_eq!(store.append(request.clone()).unwrap(), 3);
    append(&store, vec![event("Unrelated", &["d"])]);
    assert_eq!(store.append(request.clone()).unwrap(), 3);
    assert_eq!(store.head(), Some(4), "a retry writes nothing");
    // Later events matching the query do not stop the first N from being recognised.
    append(&store, vec![keyed("C", &["c"], 3)]);
    assert_eq!(store.append(request).unwrap(), 3);
    assert_eq!(store.head(), Some(5));
}

#[test]
fn idempotent_retry_requires_same_uuids_in_same_order() {
    let (_dir, store) = temp_store();
    let q = query(vec![item(&[], &["c"])]);
    let events = vec![keyed("A", &["c"], 1), keyed("B", &["c"], 2)];
    assert_eq!(
        store
            .append(conditional(events.clone(), q.clone(), None))
            .unwrap(),
        2
    );
    let reversed: Vec<Event> = events.iter().rev().cloned().collect();
    assert!(matches!(
        store.append(conditional(reversed, q.clone(), None)),
        Err(Error::Integrity(_))
    ));
    let other_uuid = vec![keyed("A", &["c"], 1), keyed("B", &["c"], 99)];
    assert!(matches!(
        store.append(conditional(other_uuid, q.clone(), None)),
        Err(Error::Integrity(_))
    ));
    // More events than were recorded: the (N = 3) first matches do not exist.
    let longer = vec![
        keyed("A", &["c"], 1),
        keyed("B", &["c"], 2),
        keyed("C", &["c"], 3),
    ];
    assert!(matches!(
        store.append(conditional(longer, q.clone(), None)),
        Err(Error::Integrity(_))
    ));
    // A prefix is the first N matches and is recognised.
    assert_eq!(
        store
            .append(conditional(vec![keyed("A", &["c"], 1)], q, None))
            .unwrap(),
        1
    );
    assert_eq!(store.head(), Some(2));
}

#[test]
fn idempotency_is_decided_by_uuids_alone() {
    let (_dir, store) = temp_store();
    let q = query(vec![item(&[], &["c"])]);
    store
        .append(conditional(vec![keyed("A", &["c"], 7)], q.clone(), None))
        .unwrap();
    // Same uuid, different type and data: still the recorded append.
    let mut different = keyed("Z", &["c"], 7);
    different.data = b"other".to_vec();
    assert_eq!(
        store.append(conditional(vec![different], q, None)).unwrap(),
        1
    );
    assert_eq!(store.head(), Some(1));
}

#[test]
fn idempotent_retry_requires_every_event_to_have_a_uuid() {
    let (_dir, store) = temp_store();
    let q = query(vec![item(&[], &["c"])]);
    let events = vec![keyed("A", &["c"], 1), event("B", &["c"])];
    store
        .append(conditional(events.clone(), q.clone(), None))
        .unwrap();
    assert!(matches!(
        store.append(conditional(events, q, None)),
        Err(Error::Integrity(_))
    ));
}

#[test]
fn idempotent_retry_only_applies_when_condition_fails() {
    let (_dir, store) = temp_store();
    let q = query(vec![item(&[], &["c"])]);
    let events = vec![keyed("A", &["c"], 1)];
    store
        .append(conditional(events.clone(), q.clone(), None))
        .unwrap();
    // Without a condition, or with one that passes, the same uuid is written again.
    assert_eq!(
        store
            .append(AppendRequest {
                events: events.clone(),
                ..Default::default()
            })
            .unwrap(),
        2
    );
    assert_eq!(store.append(conditional(events, q, Some(2))).unwrap(), 3);
}

#[test]
fn uniqueness_of_uuids_is_not_otherwise_enforced() {
    let (_dir, store) = temp_store();
    let e = keyed("A", &["c"], 5);
    assert_eq!(append(&store, vec![e.clone()]), 1);
    assert_eq!(append(&store, vec![e.clone(), e]), 3);
}

#[test]
fn nil_uuid_is_not_an_idempotency_key() {
    let (_dir, store) = temp_store();
    let q = query(vec![item(&[], &["c"])]);
    let e = event("A", &["c"]).with_uuid(Uuid::nil());
    assert_eq!(
        store
            .append(conditional(vec![e.clone()], q.clone(), None))
            .unwrap(),
        1
    );
    // A retry with the nil uuid is not recognised: the condition fails.
    assert!(matches!(
        store.append(conditional(vec![e.clone()], q.clone(), None)),
        Err(Error::Integrity(_))
    ));
    // And a new write with the nil uuid whose condition passes is written, not dropped.
    assert_eq!(store.append(conditional(vec![e], q, Some(1))).unwrap(), 2);
    assert_eq!(store.head(), Some(2));
}

// ---------------------------------------------------------------------------------------------
// Zero-event appends and tracking info

#[test]
fn zero_event_append_returns_zero_and_still_records_tracking() {
    let (_dir, store) = temp_store();
    append(&store, vec![event("A", &[])]);
    let position = store
        .append(AppendRequest {
            events: vec![],
            condition: None,
            tracking_info: Some(tracking("upstream", 10)),
        })
        .unwrap();
    assert_eq!(position, 0);
    assert_eq!(store.head(), Some(1));
    assert_eq!(store.tracking_position("upstream").unwrap(), Some(10));
    // ... and enforced.
    let again = store.append(AppendRequest {
        events: vec![],
        condition: None,
        tracking_info: Some(tracking("upstream", 10)),
    });
    assert!(matches!(again, Err(Error::Integrity(_))));
    assert_eq!(
        store
            .append(AppendRequest {
                events: vec![],
                condition: None,
                tracking_info: Some(tracking("upstream", 11)),
            })
            .unwrap(),
        0
    );
    assert_eq!(store.tracking_position("upstream").unwrap(), Some(11));
}

#[test]
fn zero_event_append_on_empty_store_returns_zero() {
    let (_dir, store) = temp_store();
    assert_eq!(append(&store, vec![]), 0);
    assert_eq!(store.head(), None);
}

#[test]
fn zero_event_append_with_failing_condition_is_integrity_error() {
    let (_dir, store) = temp_store();
    append(&store, vec![event("A", &["x"])]);
    let mut request = conditional(vec![], query(vec![item(&[], &["x"])]), None);
    request.tracking_info = Some(tracking("s", 1));
    assert!(matches!(store.append(request), Err(Error::Integrity(_))));
    assert_eq!(store.tracking_position("s").unwrap(), None);
}

#[test]
fn tracking_position_must_increase() {
    let (_dir, store) = temp_store();
    assert_eq!(store.tracking_position("s").unwrap(), None);
    let with = |events: Vec<Event>, source: &str, position| AppendRequest {
        events,
        condition: None,
        tracking_info: Some(tracking(source, position)),
    };
    assert_eq!(
        store.append(with(vec![event("A", &[])], "s", 5)).unwrap(),
        1
    );
    assert_eq!(store.tracking_position("s").unwrap(), Some(5));
    for stale in [5, 4, 0] {
        assert!(matches!(
            store.append(with(vec![event("B", &[])], "s", stale)),
            Err(Error::Integrity(_))
        ));
    }
    assert_eq!(
        store.head(),
        Some(1),
        "a stale tracking position writes no event"
    );
    assert_eq!(store.tracking_position("s").unwrap(), Some(5));
    // Sources are independent.
    assert_eq!(
        store.append(with(vec![event("C", &[])], "t", 1)).unwrap(),
        2
    );
    assert_eq!(
        store.append(with(vec![event("D", &[])], "s", 6)).unwrap(),
        3
    );
    assert_eq!(store.tracking_position("s").unwrap(), Some(6));
    assert_eq!(store.tracking_position("t").unwrap(), Some(1));
    assert_eq!(store.tracking_position("unknown").unwrap(), None);
}

#[test]
fn tracking_is_not_recorded_when_the_append_fails() {
    let (_dir, store) = temp_store();
    append(&store, vec![event("A", &["x"])]);
    let mut request = conditional(vec![event("B", &[])], query(vec![item(&[], &["x"])]), None);
    request.tracking_info = Some(tracking("s", 3));
    assert!(matches!(store.append(request), Err(Error::Integrity(_))));
    assert_eq!(store.tracking_position("s").unwrap(), None);
}

#[test]
fn sequenced_events_carry_the_tracking_info_of_their_append() {
    let (_dir, store) = temp_store();
    append(&store, vec![event("Plain", &[])]);
    let tracked = |n: usize, source: &str, position| AppendRequest {
        events: vec![event("Tracked", &[]); n],
        condition: None,
        tracking_info: Some(tracking(source, position)),
    };
    store.append(tracked(2, "a", 1)).unwrap(); // 2..=3
    store.append(tracked(3, "a", 2)).unwrap(); // 4..=6
    append(&store, vec![event("Plain", &[])]); // 7
    store.append(tracked(1, "b", 9)).unwrap(); // 8
    let expected = [
        None,
        Some(tracking("a", 1)),
        Some(tracking("a", 1)),
        Some(tracking("a", 2)),
        Some(tracking("a", 2)),
        Some(tracking("a", 2)),
        None,
        Some(tracking("b", 9)),
    ];
    for backwards in [false, true] {
        let (events, _) = store
            .read_all(ReadRequest {
                backwards,
                ..Default::default()
            })
            .unwrap();
        let mut got: Vec<(u64, Option<TrackingInfo>)> = events
            .into_iter()
            .map(|e| (e.position, e.tracking_info))
            .collect();
        got.sort_by_key(|(p, _)| *p);
        let want: Vec<_> = expected
            .iter()
            .enumerate()
            .map(|(i, t)| (i as u64 + 1, t.clone()))
            .collect();
        assert_eq!(got, want, "backwards = {backwards}");
        // Single-event reads (no cache shared between events) agree.
        for (position, info) in &want {
            let (one, _) = store
                .read_all(ReadRequest {
                    start: Some(*position),
                    limit: Some(1),
                    ..Default::default()
                })
                .unwrap();
            assert_eq!(&one[0].tracking_info, info);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Read corner cases

fn store_with(n: usize) -> (tempfile::TempDir, Store) {
    let (dir, store) = temp_store();
    append(
        &store,
        (0..n)
            .map(|i| event(if i % 2 == 0 { "Even" } else { "Odd" }, &[]))
            .collect(),
    );
    (dir, store)
}

#[test]
fn limit_zero_returns_nothing_and_head_none() {
    let (_dir, store) = store_with(5);
    for backwards in [false, true] {
        for start in [None, Some(0), Some(3), Some(99)] {
            assert_eq!(
                read(&store, Query::all(), start, backwards, Some(0)),
                (vec![], None)
            );
        }
    }
}

#[test]
fn forward_from_zero_reads_from_first_event() {
    let (_dir, store) = store_with(3);
    assert_eq!(
        read(&store, Query::all(), Some(0), false, None),
        (vec![1, 2, 3], Some(3))
    );
}

#[test]
fn forward_start_is_inclusive() {
    let (_dir, store) = store_with(5);
    assert_eq!(
        read(&store, Query::all(), Some(3), false, None),
        (vec![3, 4, 5], Some(5))
    );
    let odd = query(vec![item(&["Odd"], &[])]);
    assert_eq!(
        read(&store, odd.clone(), Some(2), false, None).0,
        vec![2, 4]
    );
    assert_eq!(read(&store, odd, Some(3), false, None).0, vec![4]);
}

#[test]
fn forward_from_beyond_head_returns_nothing_with_store_head() {
    let (_dir, store) = store_with(3);
    assert_eq!(
        read(&store, Query::all(), Some(4), false, None),
        (vec![], Some(3))
    );
    assert_eq!(
        read(&store, Query::all(), Some(u64::MAX), false, None),
        (vec![], Some(3))
    );
    assert_eq!(
        read(&store, Query::all(), Some(4), false, Some(2)),
        (vec![], None)
    );
}

#[test]
fn backwards_reads_in_descending_order_and_start_is_inclusive() {
    let (_dir, store) = store_with(5);
    assert_eq!(
        read(&store, Query::all(), None, true, None),
        (vec![5, 4, 3, 2, 1], Some(5))
    );
    assert_eq!(
        read(&store, Query::all(), Some(3), true, None),
        (vec![3, 2, 1], Some(5))
    );
    let even = query(vec![item(&["Even"], &[])]);
    assert_eq!(read(&store, even, Some(4), true, None).0, vec![3, 1]);
}

#[test]
fn backwards_from_zero_returns_nothing() {
    let (_dir, store) = store_with(3);
    assert_eq!(
        read(&store, Query::all(), Some(0), true, None),
        (vec![], Some(3))
    );
    assert_eq!(
        read(&store, Query::all(), Some(0), true, Some(5)),
        (vec![], None)
    );
}

#[test]
fn backwards_from_beyond_head_reads_from_last() {
    let (_dir, store) = store_with(3);
    for start in [4, 1000, u64::MAX] {
        assert_eq!(
            read(&store, Query::all(), Some(start), true, None),
            (vec![3, 2, 1], Some(3))
        );
    }
    assert_eq!(
        read(&store, Query::all(), Some(1000), true, Some(1)),
        (vec![3], Some(3))
    );
}

#[test]
fn read_head_is_head_at_start_without_limit() {
    let (_dir, store) = store_with(4);
    // Even when nothing matches, the head is the store's head.
    let none = query(vec![item(&["Missing"], &[])]);
    assert_eq!(read(&store, none, None, false, None), (vec![], Some(4)));
    let odd = query(vec![item(&["Odd"], &[])]);
    assert_eq!(
        read(&store, odd.clone(), None, false, None),
        (vec![2, 4], Some(4))
    );
    assert_eq!(
        read(&store, odd.clone(), None, true, None),
        (vec![4, 2], Some(4))
    );

    // Events appended after the read began are not returned by it.
    let mut reader = store
        .read(ReadRequest {
            query: Query::all(),
            ..Default::default()
        })
        .unwrap();
    let first = reader.next_batch(2).unwrap().unwrap();
    assert_eq!(first.len(), 2);
    append(&store, vec![event("Odd", &[]); 3]);
    let mut rest = Vec::new();
    while let Some(batch) = reader.next_batch(2).unwrap() {
        rest.extend(batch.into_iter().map(|e| e.position));
    }
    assert_eq!(rest, vec![3, 4]);
    assert_eq!(reader.head(), Some(4));
    assert_eq!(store.head(), Some(7));

    // Backwards, from beyond the head: starts at the head captured when the read began.
    for start in [None, Some(1000)] {
        let mut reader = store
            .read(ReadRequest {
                query: Query::all(),
                start,
                backwards: true,
                limit: None,
            })
            .unwrap();
        append(&store, vec![event("Odd", &[])]);
        let mut got = Vec::new();
        while let Some(batch) = reader.next_batch(3).unwrap() {
            got.extend(batch.into_iter().map(|e| e.position));
        }
        let head_at_start = store.head().unwrap() - 1;
        assert_eq!(got, (1..=head_at_start).rev().collect::<Vec<_>>());
        assert_eq!(reader.head(), Some(head_at_start));
    }
}

#[test]
fn read_head_is_last_returned_with_limit() {
    let (_dir, store) = store_with(6);
    let odd = query(vec![item(&["Odd"], &[])]);
    assert_eq!(
        read(&store, odd.clone(), None, false, Some(2)),
        (vec![2, 4], Some(4))
    );
    assert_eq!(
        read(&store, odd.clone(), None, true, Some(2)),
        (vec![6, 4], Some(4))
    );
    // Limit above the number of matches: still the last one returned.
    assert_eq!(
        read(&store, odd.clone(), Some(3), false, Some(10)),
        (vec![4, 6], Some(6))
    );
    // Nothing returned: none, even though the store has events.
    assert_eq!(read(&store, odd, Some(7), false, Some(10)), (vec![], None));
    let none = query(vec![item(&["Missing"], &[])]);
    assert_eq!(read(&store, none, None, false, Some(3)), (vec![], None));
}

#[test]
fn reads_stream_in_batches_of_at_most_the_size_asked() {
    let (_dir, store) = store_with(10);
    for backwards in [false, true] {
        let mut reader = store
            .read(ReadRequest {
                query: Query::all(),
                backwards,
                limit: Some(7),
                start: None,
            })
            .unwrap();
        let mut sizes = Vec::new();
        let mut positions = Vec::new();
        while let Some(batch) = reader.next_batch(3).unwrap() {
            sizes.push(batch.len());
            positions.extend(batch.iter().map(|e| e.position));
        }
        assert_eq!(sizes, vec![3, 3, 1]);
        let want: Vec<u64> = if backwards {
            (4..=10).rev().collect()
        } else {
            (1..=7).collect()
        };
        assert_eq!(positions, want);
        assert_eq!(reader.head(), want.last().copied());
        assert!(reader.next_batch(3).unwrap().is_none());
    }
}

#[test]
fn read_range_returns_matches_within_bounds_ascending() {
    let (_dir, store) = store_with(10);
    let even = query(vec![item(&["Even"], &[])]);
    let got: Vec<u64> = store
        .read_range(&even, 2, 8, 100)
        .unwrap()
        .iter()
        .map(|e| e.position)
        .collect();
    assert_eq!(got, vec![3, 5, 7]);
    let got: Vec<u64> = store
        .read_range(&Query::all(), 4, 100, 2)
        .unwrap()
        .iter()
        .map(|e| e.position)
        .collect();
    assert_eq!(got, vec![4, 5]);
    assert!(store
        .read_range(&Query::all(), 5, 4, 10)
        .unwrap()
        .is_empty());
}

#[test]
fn a_visiting_read_is_handed_each_event_exactly_as_a_copying_read_returns_it() {
    let (_dir, store) = temp_store();
    let mut rich = event("Rich", &["a", "b"]).with_uuid(Uuid::from_u128(7));
    rich.metadata = vec![("k".into(), "v".into()), ("".into(), "".into())];
    rich.data = vec![0, 255, 1];
    for (i, tracked) in [None, Some(tracking("up", 5)), Some(tracking("up", 9))]
        .into_iter()
        .enumerate()
    {
        store
            .append(AppendRequest {
                events: vec![
                    rich.clone(),
                    event("Plain", &["a"]),
                    event(&i.to_string(), &[]),
                ],
                tracking_info: tracked,
                ..Default::default()
            })
            .expect("append");
    }
    let requests = [
        (Query::all(), None, false, None),
        (Query::all(), Some(8), true, None),
        (query(vec![item(&[], &["a"])]), Some(2), false, Some(3)),
        (query(vec![item(&["Rich"], &["b"])]), None, true, None),
    ];
    for (q, start, backwards, limit) in requests {
        let request = ReadRequest {
            query: q.clone(),
            start,
            backwards,
            limit,
        };
        let (copied, copied_head) = store.read_all(request.clone()).expect("read");
        let mut reader = store.read(request).expect("read");
        let mut visited = Vec::new();
        while let Some(n) = reader
            .next_batch_with(2, |e| visited.push(e.to_sequenced()))
            .expect("batch")
        {
            assert!(n > 0 && n <= 2, "a batch visits 1..=2 events, not {n}");
        }
        assert_eq!(
            visited, copied,
            "{q:?} from {start:?}, backwards {backwards}"
        );
        assert_eq!(reader.head(), copied_head);
        if !backwards && limit.is_none() {
            let mut ranged = Vec::new();
            let (count, last) = store
                .read_range_with(&q, start.unwrap_or(1), 9, 100, |e| {
                    ranged.push(e.to_sequenced())
                })
                .expect("range");
            assert_eq!(
                ranged,
                store.read_range(&q, start.unwrap_or(1), 9, 100).unwrap()
            );
            assert_eq!(
                (count, last),
                (ranged.len(), ranged.last().map(|e| e.position))
            );
        }
    }
    let (all, _) = store.read_all(ReadRequest::default()).expect("read");
    assert_eq!(all[0].event, rich);
    assert_eq!(all[3].tracking_info, Some(tracking("up", 5)));
    assert_eq!(all[8].tracking_info, Some(tracking("up", 9)));
}

// ---------------------------------------------------------------------------------------------
// Query matching

fn matching(store: &Store, q: Query) -> Vec<u64> {
    read(store, q, None, false, None).0
}

#[test]
fn extra_event_tags_do_not_prevent_match() {
    let (_dir, store) = temp_store();
    append(
        &store,
        vec![event("A", &["x", "y", "z"]), event("A", &["x"])],
    );
    assert_eq!(matching(&store, query(vec![item(&[], &["x"])])), vec![1, 2]);
    assert_eq!(matching(&store, query(vec![item(&["A"], &["y"])])), vec![1]);
    assert_eq!(
        matching(&store, query(vec![item(&["A"], &["z", "x"])])),
        vec![1]
    );
}

#[test]
fn query_item_requires_every_one_of_its_tags() {
    let (_dir, store) = temp_store();
    append(
        &store,
        vec![
            event("A", &["x"]),
            event("A", &["y"]),
            event("A", &["x", "y"]),
            event("A", &[]),
        ],
    );
    assert_eq!(
        matching(&store, query(vec![item(&[], &["x", "y"])])),
        vec![3]
    );
    assert_eq!(
        matching(&store, query(vec![item(&[], &["x", "unknown"])])),
        Vec::<u64>::new()
    );
    // A tag named twice is required once.
    assert_eq!(
        matching(&store, query(vec![item(&[], &["x", "x"])])),
        vec![1, 3]
    );
}

#[test]
fn query_item_types_are_ored_and_anded_with_tags() {
    let (_dir, store) = temp_store();
    append(
        &store,
        vec![
            event("A", &["x"]),
            event("B", &["x"]),
            event("C", &["x"]),
            event("A", &[]),
        ],
    );
    assert_eq!(
        matching(&store, query(vec![item(&["A", "B"], &[])])),
        vec![1, 2, 4]
    );
    assert_eq!(
        matching(&store, query(vec![item(&["A", "B"], &["x"])])),
        vec![1, 2]
    );
    // An unknown type among known ones does not spoil the item.
    assert_eq!(
        matching(&store, query(vec![item(&["Nope", "C"], &["x"])])),
        vec![3]
    );
    assert_eq!(
        matching(&store, query(vec![item(&["Nope"], &[])])),
        Vec::<u64>::new()
    );
}

#[test]
fn query_items_are_ored() {
    let (_dir, store) = temp_store();
    append(
        &store,
        vec![
            event("A", &["x"]),
            event("B", &["y"]),
            event("C", &["z"]),
            event("A", &["y"]),
        ],
    );
    let q = query(vec![item(&["A"], &["x"]), item(&[], &["y"])]);
    assert_eq!(matching(&store, q.clone()), vec![1, 2, 4]);
    assert_eq!(read(&store, q, None, true, None).0, vec![4, 2, 1]);
    // An item that cannot match does not hide the others.
    let q = query(vec![item(&["Nope"], &["x"]), item(&["C"], &[])]);
    assert_eq!(matching(&store, q), vec![3]);
}

#[test]
fn empty_query_matches_everything() {
    let (_dir, store) = temp_store();
    append(
        &store,
        vec![event("A", &["x"]), event("B", &[]), event("", &[""])],
    );
    assert_eq!(matching(&store, Query::all()), vec![1, 2, 3]);
    // So does an item with no types and no tags, whatever the other items say.
    let q = query(vec![item(&["Nope"], &[]), item(&[], &[])]);
    assert_eq!(matching(&store, q), vec![1, 2, 3]);
}

#[test]
fn empty_strings_are_ordinary_types_and_tags() {
    let (_dir, store) = temp_store();
    append(&store, vec![event("", &[""]), event("A", &["x"])]);
    assert_eq!(matching(&store, query(vec![item(&[""], &[])])), vec![1]);
    assert_eq!(matching(&store, query(vec![item(&[], &[""])])), vec![1]);
}

// ---------------------------------------------------------------------------------------------
// Sizes and round trips

#[test]
fn strings_up_to_65535_bytes_work_and_longer_are_invalid_argument() {
    let (_dir, store) = temp_store();
    let max = |c: char| c.to_string().repeat(MAX_STRING_LEN);
    // Multi-byte characters: the limit counts bytes (3 bytes × 21,845 = 65,535).
    let max_utf8 = "€".repeat(MAX_STRING_LEN / 3);
    assert_eq!(max_utf8.len(), MAX_STRING_LEN);
    let long_type = max('T');
    let long_tag = max('g');
    let mut ok = Event::new(
        long_type.clone(),
        [long_tag.clone(), max_utf8.clone()],
        vec![1],
    );
    ok.metadata.push((max('k'), max('v')));
    assert_eq!(append(&store, vec![ok.clone(), event("Short", &["g"])]), 2);
    let (events, _) = store.read_all(ReadRequest::default()).unwrap();
    assert_eq!(events[0].event, ok);
    // Long types and tags are queryable and usable in conditions.
    assert_eq!(
        matching(
            &store,
            query(vec![item(&[&long_type], &[&long_tag, &max_utf8])])
        ),
        vec![1]
    );
    assert!(matches!(
        store.append(conditional(
            vec![event("X", &[])],
            query(vec![item(&[], &[&long_tag])]),
            None
        )),
        Err(Error::Integrity(_))
    ));
    // A different long tag of the same length is a different tag.
    let mut other_tag = long_tag.clone();
    other_tag.replace_range(..1, "h");
    assert_eq!(
        matching(&store, query(vec![item(&[], &[&other_tag])])),
        Vec::<u64>::new()
    );

    let too_long = |c: char| c.to_string().repeat(MAX_STRING_LEN + 1);
    let base = || event("A", &["t"]);
    let mut with_type = base();
    with_type.event_type = too_long('T');
    let mut with_tag = base();
    with_tag.tags.push(too_long('g'));
    let mut with_key = base();
    with_key.metadata.push((too_long('k'), "v".into()));
    let mut with_value = base();
    with_value.metadata.push(("k".into(), too_long('v')));
    let mut with_utf8_tag = base();
    with_utf8_tag.tags.push(format!("{max_utf8}x"));
    for bad in [with_type, with_tag, with_key, with_value, with_utf8_tag] {
        let result = store.append(AppendRequest {
            events: vec![base(), bad],
            ..Default::default()
        });
        match result {
            Err(Error::InvalidArgument(message)) => {
                assert!(message.contains("65535"), "{message}")
            }
            other => panic!("expected invalid argument, got {other:?}"),
        }
    }
    // Nothing was written, not even the valid event in front.
    assert_eq!(store.head(), Some(2));
    assert_eq!(
        matching(&store, query(vec![item(&["A"], &[])])),
        Vec::<u64>::new()
    );
    // Over-long strings in queries, conditions and tracking sources are refused too.
    assert!(matches!(
        store.read(ReadRequest {
            query: query(vec![item(&[], &[&too_long('g')])]),
            ..Default::default()
        }),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        store.append(conditional(
            vec![base()],
            query(vec![item(&[&too_long('T')], &[])]),
            None
        )),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        store.append(AppendRequest {
            events: vec![base()],
            condition: None,
            tracking_info: Some(tracking(&too_long('s'), 1)),
        }),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(store.head(), Some(2));
}

#[test]
fn events_round_trip_byte_for_byte() {
    let (_dir, store) = temp_store();
    let all_bytes: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
    let rich = Event {
        event_type: "Ünïcödé ✓ type".into(),
        tags: vec!["tag:1".into(), "".into(), "日本語".into(), "tag:1".into()],
        data: all_bytes,
        uuid: Some(Uuid::from_u128(0x0123_4567_89ab_cdef_fedc_ba98_7654_3210)),
        metadata: vec![
            ("z-first".into(), "order is kept".into()),
            ("a".into(), "".into()),
            ("".into(), "empty key".into()),
            ("a".into(), "duplicate keys are kept".into()),
        ],
    };
    let bare = Event {
        event_type: String::new(),
        tags: vec![],
        data: vec![],
        uuid: None,
        metadata: vec![],
    };
    let nil = Event {
        uuid: Some(Uuid::nil()),
        data: vec![0; 1 << 20],
        ..event("Nil", &["n"])
    };
    let info = tracking("source ✓", u64::MAX);
    store
        .append(AppendRequest {
            events: vec![rich.clone(), bare.clone()],
            condition: None,
            tracking_info: Some(info.clone()),
        })
        .unwrap();
    append(&store, vec![nil.clone()]);
    let (events, head) = store.read_all(ReadRequest::default()).unwrap();
    assert_eq!(head, Some(3));
    assert_eq!(events.len(), 3);
    assert_eq!(events[0].position, 1);
    assert_eq!(events[0].event, rich);
    assert_eq!(events[0].tracking_info, Some(info.clone()));
    assert_eq!(events[1].event, bare);
    assert_eq!(events[1].tracking_info, Some(info.clone()));
    assert_eq!(events[2].event, nil, "the nil uuid is stored as given");
    assert_eq!(events[2].tracking_info, None);
    assert_eq!(store.tracking_position("source ✓").unwrap(), Some(u64::MAX));
}

// ---------------------------------------------------------------------------------------------
// Persistence and opening

#[test]
fn reopen_persists_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let long_tag = "L".repeat(1000);
    let written = {
        let store = Store::open(&path).unwrap();
        append(
            &store,
            vec![event("A", &["x", &long_tag]), event("B", &["y"])],
        );
        store
            .append(AppendRequest {
                events: vec![event("C", &["x"]).with_uuid(Uuid::from_u128(3))],
                condition: None,
                tracking_info: Some(tracking("src", 42)),
            })
            .unwrap();
        store
            .append(AppendRequest {
                events: vec![],
                condition: None,
                tracking_info: Some(tracking("other", 7)),
            })
            .unwrap();
        let (events, _) = store.read_all(ReadRequest::default()).unwrap();
        store.close().expect("closed cleanly");
        events
    };
    let store = Store::open(&path).unwrap();
    assert_eq!(store.head(), Some(3));
    assert_eq!(
        store.read_all(ReadRequest::default()).unwrap(),
        (written, Some(3))
    );
    assert_eq!(store.tracking_position("src").unwrap(), Some(42));
    assert_eq!(store.tracking_position("other").unwrap(), Some(7));
    assert_eq!(matching(&store, query(vec![item(&[], &["x"])])), vec![1, 3]);
    assert_eq!(
        matching(&store, query(vec![item(&[], &[&long_tag])])),
        vec![1]
    );
    assert_eq!(matching(&store, query(vec![item(&["B"], &[])])), vec![2]);
    // Appends continue at head + 1, reuse interned strings, and the tracking rule still holds.
    assert_eq!(append(&store, vec![event("A", &["x", &long_tag])]), 4);
    assert_eq!(
        matching(&store, query(vec![item(&[], &[&long_tag])])),
        vec![1, 4]
    );
    assert!(matches!(
        store.append(AppendRequest {
            events: vec![event("D", &[])],
            condition: None,
            tracking_info: Some(tracking("src", 42)),
        }),
        Err(Error::Integrity(_))
    ));
    // An idempotent retry is recognised across a restart.
    let retry = conditional(
        vec![event("C", &["x"]).with_uuid(Uuid::from_u128(3))],
        query(vec![item(&["C"], &[])]),
        Some(2),
    );
    assert_eq!(store.append(retry).unwrap(), 3);
}

fn expect_open_error(path: &std::path::Path) -> Error {
    match Store::open(path) {
        Ok(_) => panic!("{} opened as a store", path.display()),
        Err(e) => {
            assert!(
                e.message().contains(&path.display().to_string()),
                "the message names the path: {e}"
            );
            e
        }
    }
}

#[test]
fn opening_a_garbage_data_file_fails_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    std::fs::create_dir(&path).unwrap();
    let garbage: Vec<u8> = (0..64 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(path.join("data.mdb"), &garbage).unwrap();
    let e = expect_open_error(&path);
    assert!(matches!(e, Error::Corruption(_)), "{e}");
    // The file was not overwritten.
    assert_eq!(std::fs::read(path.join("data.mdb")).unwrap(), garbage);
}

#[test]
fn opening_a_truncated_data_file_fails_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let store = Store::open(&path).unwrap();
        append(&store, vec![event("A", &["x"]); 100]);
    }
    let data = std::fs::read(path.join("data.mdb")).unwrap();
    std::fs::write(path.join("data.mdb"), &data[..100]).unwrap();
    let e = expect_open_error(&path);
    assert!(matches!(e, Error::Corruption(_)), "{e}");
}

#[test]
fn opening_a_store_with_an_unknown_format_version_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let store = Store::open(&path).unwrap();
        append(&store, vec![event("A", &[])]);
    }
    let mut stamp = b"umadb-v1".to_vec();
    stamp.extend_from_slice(&99u32.to_be_bytes());
    rewrite_stamp(&path, &stamp);
    let e = expect_open_error(&path);
    assert!(matches!(e, Error::Corruption(_)), "{e}");
    assert!(e.message().contains("99"), "{e}");

    rewrite_stamp(&path, b"something else entirely");
    let e = expect_open_error(&path);
    assert!(matches!(e, Error::Corruption(_)), "{e}");
}

/// Removes the `indexed_head` meta entry of a closed store and stamps it with `version`.
fn make_like_version(path: &std::path::Path, version: u32) {
    raw_write(path, |opener, wtxn| {
        let meta = opener.create_database::<Raw, Raw>(wtxn, Some("meta"))?;
        meta.delete(wtxn, b"indexed_head")?;
        let mut stamp = b"umadb-v1".to_vec();
        stamp.extend_from_slice(&version.to_be_bytes());
        meta.put(wtxn, b"format", &stamp)
    });
}

/// The upgrade moves newest chunks a batch of keys at a time: a store with more keys than a
/// batch, some with full chunks, answers as before and passes the check.
#[test]
fn a_version_2_store_with_many_keys_is_upgraded_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let options = StoreOptions {
        index_lag: 0,
        ..Default::default()
    };
    let n = 24_000u64;
    {
        let store = Store::open_with(&path, options.clone()).unwrap();
        for first in (0..n).step_by(4_000) {
            let events = (first..first + 4_000)
                .map(|i| {
                    let own = format!("own-{i}");
                    let shared = format!("shared-{}", i % 3);
                    event(&format!("Type{}", i % 2), &[own.as_str(), shared.as_str()])
                })
                .collect();
            append(&store, events);
        }
    }
    let chunks = chunk_forms(&path).len();
    assert!(chunks > 24_000, "{chunks} chunks");
    write_index_as_version_2(&path);
    let mut stamp = b"umadb-v1".to_vec();
    stamp.extend_from_slice(&2u32.to_be_bytes());
    rewrite_stamp(&path, &stamp);

    let heard = Arc::new(Mutex::new(Vec::new()));
    let sink = heard.clone();
    let options = StoreOptions {
        progress: Some(ProgressReporter::new(move |progress| {
            sink.lock().unwrap().push(progress)
        })),
        ..options
    };
    let store = Store::open_with(&path, options).unwrap();
    assert_eq!(store.upgraded_from(), Some(2));
    // The upgrade was reported from its start, after each batch of keys and at its end, the
    // page walk before it likewise.
    let heard = heard.lock().unwrap();
    let upgrade: Vec<(u64, u64)> = heard
        .iter()
        .filter_map(|progress| match *progress {
            OpeningProgress::UpgradingIndex { from, done, total } => {
                assert_eq!(from, 2);
                Some((done, total))
            }
            OpeningProgress::WalkingPages { .. } => None,
        })
        .collect();
    assert!(upgrade.len() >= 4, "{upgrade:?}");
    assert_eq!(upgrade[0], (0, chunks as u64));
    assert_eq!(upgrade[upgrade.len() - 1], (chunks as u64, chunks as u64));
    assert!(upgrade.windows(2).all(|w| w[0].0 < w[1].0), "{upgrade:?}");
    let walk: Vec<(u64, u64)> = heard
        .iter()
        .filter_map(|progress| match *progress {
            OpeningProgress::WalkingPages { done, total } => Some((done, total)),
            OpeningProgress::UpgradingIndex { .. } => None,
        })
        .collect();
    assert!(walk.len() >= 2, "{walk:?}");
    assert_eq!(walk[0].0, 0);
    assert!(
        walk[0].1 > 2 && walk.iter().all(|w| w.1 == walk[0].1),
        "{walk:?}"
    );
    assert_eq!(walk[walk.len() - 1].0, walk[0].1);
    assert!(
        matches!(heard[0], OpeningProgress::WalkingPages { done: 0, .. }),
        "the walk comes first: {heard:?}"
    );
    drop(heard);
    let report = store.check(|_| {}).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    let positions_of = |tags: &[&str], types: &[&str]| -> Vec<Position> {
        let request = ReadRequest {
            query: query(vec![item(types, tags)]),
            ..Default::default()
        };
        store
            .read_all(request)
            .unwrap()
            .0
            .iter()
            .map(|e| e.position)
            .collect()
    };
    for i in [0u64, 9_999, 10_000, 23_999] {
        let own = format!("own-{i}");
        assert_eq!(positions_of(&[own.as_str()], &[]), vec![i + 1]);
    }
    let shared: Vec<Position> = (0..n).filter(|i| i % 3 == 1).map(|i| i + 1).collect();
    assert_eq!(positions_of(&["shared-1"], &[]), shared);
    let both: Vec<Position> = (0..n).filter(|i| i % 6 == 1).map(|i| i + 1).collect();
    assert_eq!(positions_of(&["shared-1"], &["Type1"]), both);
    drop(store);
    assert_eq!(chunk_forms(&path).len(), chunks);
}

/// The first byte of each index chunk of a closed store, by key kind (1 type, 2 tag).
fn chunk_forms(path: &std::path::Path) -> Vec<(u8, u8)> {
    let mut forms = Vec::new();
    raw_write(path, |opener, wtxn| {
        let index = opener.create_database::<Raw, Raw>(wtxn, Some("index"))?;
        for entry in index.iter(wtxn)? {
            let (key, value) = entry?;
            if key[0] & 0x40 != 0 {
                forms.push((key[0] & !0x40, value[16]));
            } else {
                forms.push((key[0], value[0]));
            }
        }
        Ok(())
    });
    forms
}

/// A type on every event is a run: its chunk leaves the gap form (a byte a position) for
/// roaring's run form when the gap form fills, so one chunk holds it all. Tags on every other
/// event stay in the gap form, a byte a position where roaring's array takes two.
#[test]
fn dense_keys_take_the_smaller_form() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let n = 6_000;
    {
        let indexed_at_once = StoreOptions {
            index_lag: 0,
            ..Default::default()
        };
        let store = Store::open_with(&path, indexed_at_once).unwrap();
        let events = (0..n)
            .map(|i| event("Every", &[if i % 2 == 0 { "even" } else { "odd" }]))
            .collect();
        append(&store, events);
        let report = store.check(|_| {}).unwrap();
        assert!(report.is_ok(), "{:?}", report.problems);
        let (every, _) = store
            .read_all(ReadRequest {
                query: query(vec![item(&["Every"], &[])]),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(every.len(), n);
    }
    let forms = chunk_forms(&path);
    let types: Vec<u8> = forms.iter().filter(|f| f.0 == 1).map(|f| f.1).collect();
    assert_eq!(types, [0x3B], "one chunk in roaring's run form");
    let tags: Vec<u8> = forms.iter().filter(|f| f.0 == 2).map(|f| f.1).collect();
    // 3,000 positions each, at a byte a gap: a 256-byte chunk holds 252 of them (the header
    // names offset 0), so 12 chunks per tag; roaring's array would take 24.
    assert_eq!(tags, [1; 24]);
}

fn stamp_of(path: &std::path::Path) -> Vec<u8> {
    let mut stamp = Vec::new();
    raw_write(path, |opener, wtxn| {
        let meta = opener.create_database::<Raw, Raw>(wtxn, Some("meta"))?;
        stamp = meta.get(wtxn, b"format")?.unwrap_or_default().to_vec();
        Ok(())
    });
    stamp
}

#[test]
fn a_version_1_store_is_upgraded_on_open_and_answers_queries_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let indexed_at_once = StoreOptions {
        index_lag: 0,
        ..Default::default()
    };
    {
        // Version 1 indexed every event at once.
        let store = Store::open_with(&path, indexed_at_once).unwrap();
        for i in 0..10 {
            append(
                &store,
                vec![event("A", &[if i % 2 == 0 { "even" } else { "odd" }])],
            );
        }
    }
    assert!(write_index_as_version_2(&path) > 0);
    make_like_version(&path, 1);
    let store = Store::open(&path).unwrap();
    assert_eq!(store.upgraded_from(), Some(1));
    let even = query(vec![item(&[], &["even"])]);
    let positions = |store: &Store| -> Vec<Position> {
        let request = ReadRequest {
            query: even.clone(),
            ..Default::default()
        };
        let (events, _) = store.read_all(request).unwrap();
        events.iter().map(|e| e.position).collect()
    };
    assert_eq!(positions(&store), vec![1, 3, 5, 7, 9]);
    append(&store, vec![event("A", &["even"])]);
    assert_eq!(positions(&store), vec![1, 3, 5, 7, 9, 11]);
    let report = store.check(|_| {}).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    drop(store);
    let mut want = b"umadb-v1".to_vec();
    want.extend_from_slice(&3u32.to_be_bytes());
    assert_eq!(stamp_of(&path), want);
}

/// A version 2 store's index chunks are all in the roaring form: version 3 reads them, extends
/// them, starts new chunks beside them in the gap form, and a full check agrees with the log.
#[test]
fn a_version_2_store_keeps_its_roaring_chunks_and_goes_on_in_the_gap_form() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let options = StoreOptions {
        index_lag: 0,
        ..Default::default()
    };
    let tag = |i: usize| format!("tag-{}", i % 7);
    let append_range = |store: &Store, range: std::ops::Range<usize>| {
        for i in range {
            let t = tag(i);
            let kind = if i % 3 == 0 { "Third" } else { "Other" };
            append(store, vec![event(kind, &[t.as_str(), "all"])]);
        }
    };
    {
        let store = Store::open_with(&path, options.clone()).unwrap();
        append_range(&store, 0..40);
    }
    assert!(write_index_as_version_2(&path) > 0);
    let mut stamp = b"umadb-v1".to_vec();
    stamp.extend_from_slice(&2u32.to_be_bytes());
    rewrite_stamp(&path, &stamp);

    let positions_of = |store: &Store, types: &[&str], tags: &[&str]| -> Vec<Position> {
        let request = ReadRequest {
            query: query(vec![item(types, tags)]),
            ..Default::default()
        };
        let (events, _) = store.read_all(request).unwrap();
        events.iter().map(|e| e.position).collect()
    };
    // Position p holds event i = p - 1.
    let expected = |n: usize, keep: &dyn Fn(usize) -> bool| -> Vec<Position> {
        (0..n)
            .filter(|&i| keep(i))
            .map(|i| i as Position + 1)
            .collect()
    };
    let store = Store::open_with(&path, options.clone()).unwrap();
    assert_eq!(store.upgraded_from(), Some(2));
    assert_eq!(
        positions_of(&store, &[], &["tag-3"]),
        expected(40, &|i| i % 7 == 3)
    );
    append_range(&store, 40..100);
    append(&store, vec![event("New", &["fresh"])]);
    assert_eq!(
        positions_of(&store, &[], &["tag-3"]),
        expected(100, &|i| i % 7 == 3)
    );
    assert_eq!(
        positions_of(&store, &["Third"], &["all"]),
        expected(100, &|i| i % 3 == 0)
    );
    assert_eq!(positions_of(&store, &["New"], &[]), vec![101]);
    let report = store.check(|_| {}).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    drop(store);
    let mut want = b"umadb-v1".to_vec();
    want.extend_from_slice(&3u32.to_be_bytes());
    assert_eq!(stamp_of(&path), want);
    let forms = chunk_forms(&path);
    assert!(
        forms.iter().any(|f| f.1 == 1),
        "no chunk in the gap form: {forms:?}"
    );
    assert!(
        forms.iter().any(|f| f.1 == 0x3A),
        "no chunk in the roaring form: {forms:?}"
    );
    let store = Store::open_with(&path, options).unwrap();
    assert_eq!(store.upgraded_from(), None);
    assert_eq!(
        positions_of(&store, &["Other"], &["tag-5"]),
        expected(100, &|i| i % 3 != 0 && i % 7 == 5)
    );
}

#[test]
fn a_store_without_its_indexed_head_serves_reads_refuses_appends_and_fails_check() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let store = Store::open(&path).unwrap();
        append(&store, vec![event("A", &["t"]), event("B", &["t"])]);
    }
    make_like_version(&path, 2);
    let store = Store::open(&path).unwrap();
    let (events, _) = store.read_all(ReadRequest::default()).unwrap();
    assert_eq!(events.len(), 2);
    let refused = store
        .append(AppendRequest {
            events: vec![event("C", &[])],
            ..Default::default()
        })
        .unwrap_err();
    assert!(matches!(refused, Error::Corruption(_)), "{refused}");
    assert!(refused.message().contains("indexed head"), "{refused}");
    assert_eq!(store.head(), Some(2));
    let report = store.check(|_| {}).unwrap();
    assert!(
        report.problems.iter().any(|p| p.contains("indexed head")),
        "{:?}",
        report.problems
    );
}

#[test]
fn opening_an_lmdb_environment_of_another_layout_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    std::fs::create_dir(&path).unwrap();
    raw_write(&path, |opener, wtxn| {
        let main = opener.create_database::<Raw, Raw>(wtxn, None)?;
        main.put(wtxn, b"meta", b"not a database handle")?;
        main.put(wtxn, b"someone", b"else's data")
    });
    let before = std::fs::read(path.join("data.mdb")).unwrap();
    let e = expect_open_error(&path);
    assert!(matches!(e, Error::Corruption(_)), "{e}");
    assert_eq!(
        std::fs::read(path.join("data.mdb")).unwrap(),
        before,
        "left untouched"
    );
}

#[test]
fn opening_an_lmdb_environment_whose_names_clash_with_ours_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    std::fs::create_dir(&path).unwrap();
    // "events" is a plain key here, not a database: LMDB refuses to open it as one.
    raw_write(&path, |opener, wtxn| {
        let main = opener.create_database::<Raw, Raw>(wtxn, None)?;
        main.put(wtxn, b"events", b"plain value")
    });
    let before = std::fs::read(path.join("data.mdb")).unwrap();
    let e = expect_open_error(&path);
    assert!(matches!(e, Error::Corruption(_)), "{e}");
    assert_eq!(
        std::fs::read(path.join("data.mdb")).unwrap(),
        before,
        "left untouched"
    );
}

#[test]
fn opening_an_lmdb_environment_with_foreign_databases_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    std::fs::create_dir(&path).unwrap();
    raw_write(&path, |opener, wtxn| {
        let users = opener.create_database::<Raw, Raw>(wtxn, Some("users"))?;
        users.put(wtxn, b"alice", b"1")
    });
    let before = std::fs::read(path.join("data.mdb")).unwrap();
    let e = expect_open_error(&path);
    assert!(matches!(e, Error::Corruption(_)), "{e}");
    assert_eq!(
        std::fs::read(path.join("data.mdb")).unwrap(),
        before,
        "left untouched"
    );
}

#[test]
fn damaged_event_record_is_reported_as_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let marker = b"find-me-in-the-data-file";
    {
        let store = Store::open(&path).unwrap();
        append(&store, vec![event("A", &[])]);
        append(&store, vec![Event::new("B", ["b"], marker.to_vec())]);
    }
    let mut data = std::fs::read(path.join("data.mdb")).unwrap();
    let at = data
        .windows(marker.len())
        .position(|w| w == marker)
        .expect("record bytes are in the file");
    data[at] ^= 0xff;
    std::fs::write(path.join("data.mdb"), &data).unwrap();
    let store = Store::open(&path).unwrap();
    match store.read_all(ReadRequest::default()) {
        Err(Error::Corruption(message)) => assert!(message.contains("position 2"), "{message}"),
        other => panic!("expected corruption, got {other:?}"),
    }
    // The undamaged event is still readable.
    assert_eq!(
        read(&store, Query::all(), Some(1), false, Some(1)),
        (vec![1], Some(1))
    );
}

#[test]
fn a_path_that_is_a_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not-a-dir");
    std::fs::write(&path, b"hello").unwrap();
    let e = expect_open_error(&path);
    assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    assert_eq!(std::fs::read(&path).unwrap(), b"hello");
}

#[test]
fn a_store_open_in_this_process_cannot_be_opened_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let store = Store::open(&path).unwrap();
    append(&store, vec![event("A", &[])]);
    let e = expect_open_error(&path);
    assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    // The first handle keeps working, and the store opens again once it is dropped.
    assert_eq!(append(&store, vec![event("B", &[])]), 2);
    drop(store);
    let store = Store::open(&path).unwrap();
    assert_eq!(store.head(), Some(2));
}

#[test]
fn a_missing_directory_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a").join("b").join("db");
    let store = Store::open(&path).unwrap();
    assert_eq!(store.head(), None);
    assert!(path.is_dir());
}

// ---------------------------------------------------------------------------------------------
// Waiting, listeners, closing

#[test]
fn wait_for_head_wakes_on_commit() {
    let (_dir, store) = temp_store();
    let store = Arc::new(store);
    let timeout = Duration::from_secs(120);
    let waiter = {
        let store = store.clone();
        std::thread::spawn(move || {
            let began = Instant::now();
            let head = store.wait_for_head(0, timeout);
            (head, began.elapsed())
        })
    };
    // Give the waiter a chance to block first; correctness does not depend on it.
    std::thread::sleep(Duration::from_millis(50));
    append(&store, vec![event("A", &[])]);
    let (head, waited) = waiter.join().unwrap();
    assert_eq!(head, Some(1));
    assert!(waited < timeout, "woken by the commit, not by the timeout");
}

#[test]
fn wait_for_head_returns_at_once_when_head_is_already_past() {
    let (_dir, store) = temp_store();
    append(&store, vec![event("A", &[]); 3]);
    // A timeout this long would hang the suite if the call waited.
    assert_eq!(store.wait_for_head(2, Duration::from_secs(3600)), Some(3));
}

#[test]
fn wait_for_head_times_out_with_current_head() {
    let (_dir, store) = temp_store();
    assert_eq!(store.wait_for_head(0, Duration::from_millis(20)), None);
    append(&store, vec![event("A", &[])]);
    assert_eq!(store.wait_for_head(1, Duration::from_millis(20)), Some(1));
}

#[test]
fn wait_for_head_wakes_on_close() {
    let (_dir, store) = temp_store();
    let store = Arc::new(store);
    let timeout = Duration::from_secs(120);
    let waiter = {
        let store = store.clone();
        std::thread::spawn(move || {
            let began = Instant::now();
            let head = store.wait_for_head(0, timeout);
            (head, began.elapsed())
        })
    };
    std::thread::sleep(Duration::from_millis(50));
    store.close().expect("closed cleanly");
    let (head, waited) = waiter.join().unwrap();
    assert_eq!(head, None);
    assert!(waited < timeout);
}

#[test]
fn on_commit_reports_each_new_head_after_it_is_readable() {
    let (_dir, store) = temp_store();
    let store = Arc::new(store);
    let (tx, rx) = mpsc::channel();
    {
        let weak = Arc::downgrade(&store);
        store.on_commit(move |head| {
            // The new head is visible to readers by the time listeners hear of it.
            let visible = weak.upgrade().map(|s| s.head());
            let _ = tx.send((head, visible));
        });
    }
    append(&store, vec![event("A", &[]); 2]);
    append(&store, vec![]);
    let _ = store.append(conditional(vec![event("B", &[])], Query::all(), None));
    append(&store, vec![event("C", &[])]);
    store.close().expect("closed cleanly");
    let heard: Vec<_> = rx.try_iter().collect();
    assert_eq!(heard, vec![(2, Some(Some(2))), (3, Some(Some(3)))]);
}

#[test]
fn close_answers_queued_appends_and_refuses_later_ones() {
    let (_dir, store) = temp_store();
    let (tx, rx) = mpsc::channel();
    for i in 0..50 {
        let tx = tx.clone();
        store
            .submit_append(
                AppendRequest {
                    events: vec![event("A", &[])],
                    ..Default::default()
                },
                Box::new(move |r| tx.send((i, r)).unwrap()),
            )
            .unwrap();
    }
    store.close().expect("closed cleanly");
    drop(tx);
    let mut answers: Vec<_> = rx.iter().collect();
    answers.sort_by_key(|(i, _)| *i);
    let positions: Vec<u64> = answers.into_iter().map(|(_, r)| r.unwrap()).collect();
    assert_eq!(positions, (1..=50).collect::<Vec<_>>());
    assert!(store.append(AppendRequest::default()).is_err());
    assert!(store
        .submit_append(AppendRequest::default(), Box::new(|_| {}))
        .is_err());
    // Reads still work on a closed store.
    assert_eq!(all_positions(&store).len(), 50);
    // Closing again does nothing.
    store.close().expect("a second close succeeds");
}

// ---------------------------------------------------------------------------------------------
// Group commit

/// Submits all requests back to back (so the writer sees them queued together) and returns the
/// results in submission order.
fn submit_all(store: &Store, requests: Vec<AppendRequest>) -> Vec<umadb_core::Result<u64>> {
    let receivers: Vec<_> = requests
        .into_iter()
        .map(|request| {
            let (tx, rx) = mpsc::sync_channel(1);
            store
                .submit_append(request, Box::new(move |r| tx.send(r).unwrap()))
                .unwrap();
            rx
        })
        .collect();
    receivers.into_iter().map(|rx| rx.recv().unwrap()).collect()
}

#[test]
fn condition_sees_earlier_requests_in_the_same_group() {
    let (_dir, store) = temp_store();
    let q = query(vec![item(&[], &["x"])]);
    let results = submit_all(
        &store,
        vec![
            AppendRequest {
                events: vec![event("A", &["x"])],
                ..Default::default()
            },
            conditional(vec![event("B", &["x"])], q.clone(), Some(0)),
            conditional(vec![event("C", &["x"])], q.clone(), Some(1)),
            conditional(vec![event("D", &["x"])], q.clone(), Some(1)),
        ],
    );
    let kinds: Vec<_> = results
        .iter()
        .map(|r| r.as_ref().map_err(kind).copied())
        .collect();
    assert_eq!(
        kinds,
        vec![Ok(1), Err("Integrity"), Ok(2), Err("Integrity")]
    );
    assert_eq!(all_positions(&store), vec![1, 2]);
}

#[test]
fn idempotent_retry_and_tracking_within_the_same_group() {
    let (_dir, store) = temp_store();
    let q = query(vec![item(&[], &["x"])]);
    let keyed_request = conditional(
        vec![keyed("A", &["x"], 1), keyed("A", &["x"], 2)],
        q.clone(),
        None,
    );
    let tracked = |position| AppendRequest {
        events: vec![event("T", &[])],
        condition: None,
        tracking_info: Some(tracking("s", position)),
    };
    let results = submit_all(
        &store,
        vec![
            keyed_request.clone(),
            keyed_request,
            tracked(5),
            tracked(5),
            tracked(6),
        ],
    );
    let kinds: Vec<_> = results
        .iter()
        .map(|r| r.as_ref().map_err(kind).copied())
        .collect();
    assert_eq!(kinds, vec![Ok(2), Ok(2), Ok(3), Err("Integrity"), Ok(4)]);
    assert_eq!(store.tracking_position("s").unwrap(), Some(6));
}

#[test]
fn a_failed_request_in_a_group_does_not_affect_others() {
    let (_dir, store) = temp_store();
    let store = Arc::new(store);
    append(&store, vec![event("Seed", &["taken"])]);
    let threads = 8;
    let per_thread = 40;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                let (tx, rx) = mpsc::channel();
                for i in 0..per_thread {
                    let n = 1 + (t + i) % 3;
                    let events: Vec<Event> = (0..n)
                        .map(|k| {
                            Event::new(
                                "Ok",
                                [format!("thread:{t}")],
                                format!("{t}/{i}/{k}").into_bytes(),
                            )
                        })
                        .collect();
                    let request = match i % 4 {
                        // Fails its condition.
                        1 => conditional(events, query(vec![item(&[], &["taken"])]), None),
                        // Fails validation.
                        2 => {
                            let mut events = events;
                            events[0].event_type = "x".repeat(MAX_STRING_LEN + 1);
                            AppendRequest {
                                events,
                                ..Default::default()
                            }
                        }
                        _ => AppendRequest {
                            events,
                            ..Default::default()
                        },
                    };
                    let tx = tx.clone();
                    store
                        .submit_append(request, Box::new(move |r| tx.send((i, n, r)).unwrap()))
                        .unwrap();
                }
                drop(tx);
                rx.iter().collect::<Vec<_>>()
            })
        })
        .collect();
    let mut written = 1;
    let mut expected = std::collections::BTreeMap::new();
    for (t, handle) in handles.into_iter().enumerate() {
        for (i, n, result) in handle.join().unwrap() {
            match (i % 4, result) {
                (1, Err(Error::Integrity(_))) | (2, Err(Error::InvalidArgument(_))) => {}
                (0 | 3, Ok(last)) => {
                    written += n as u64;
                    for k in 0..n {
                        let position = last + 1 + k as u64 - n as u64;
                        assert!(
                            expected.insert(position, format!("{t}/{i}/{k}")).is_none(),
                            "position {position} given twice"
                        );
                    }
                }
                (mode, other) => panic!("request kind {mode} got {other:?}"),
            }
        }
    }
    assert_eq!(store.head(), Some(written));
    let (events, _) = store.read_all(ReadRequest::default()).unwrap();
    assert_eq!(events.len() as u64, written);
    for e in events.into_iter().skip(1) {
        assert_eq!(
            Some(&String::from_utf8(e.event.data).unwrap()),
            expected.get(&e.position),
            "event at {}",
            e.position
        );
    }
}

#[test]
fn types_and_tags_are_separate_namespaces() {
    let (_dir, store) = temp_store();
    append(&store, vec![event("x", &["y"]), event("y", &["x"])]);
    assert_eq!(matching(&store, query(vec![item(&["x"], &[])])), vec![1]);
    assert_eq!(matching(&store, query(vec![item(&[], &["x"])])), vec![2]);
    assert_eq!(
        matching(&store, query(vec![item(&["x"], &["x"])])),
        Vec::<u64>::new()
    );
}

#[test]
fn a_full_map_fails_the_append_cleanly_and_consumes_no_position() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let small = umadb_core::StoreOptions {
        map_size: 1 << 20,
        ..Default::default()
    };
    let big = |i: u8| Event::new("Big", ["big"], vec![i; 64 * 1024]);
    let written = {
        let store = Store::open_with(&path, small.clone()).unwrap();
        let mut written = 0;
        let error = loop {
            match store.append(AppendRequest {
                events: vec![big(written as u8)],
                ..Default::default()
            }) {
                Ok(position) => {
                    written += 1;
                    assert_eq!(position, written);
                    assert!(written < 100, "a 1 MiB map cannot hold this much");
                }
                Err(e) => break e,
            }
        };
        assert!(matches!(error, Error::Io(_)), "{error}");
        assert!(error.message().contains("map size"), "{error}");
        // The store still answers: head unchanged, everything written readable.
        assert_eq!(store.head(), Some(written));
        assert_eq!(all_positions(&store), (1..=written).collect::<Vec<_>>());
        written
    };
    let store = Store::open(&path).unwrap();
    assert_eq!(store.head(), Some(written));
    assert_eq!(append(&store, vec![big(0)]), written + 1);
    assert_eq!(
        matching(&store, query(vec![item(&[], &["big"])])),
        (1..=written + 1).collect::<Vec<_>>()
    );
}

#[test]
fn a_reader_keeps_working_after_the_store_is_dropped() {
    let (_dir, store) = store_with(5);
    let mut reader = store
        .read(ReadRequest {
            query: Query::all(),
            ..Default::default()
        })
        .unwrap();
    let first = reader.next_batch(2).unwrap().unwrap();
    drop(store);
    let mut positions: Vec<u64> = first.iter().map(|e| e.position).collect();
    while let Some(batch) = reader.next_batch(2).unwrap() {
        positions.extend(batch.iter().map(|e| e.position));
    }
    assert_eq!(positions, vec![1, 2, 3, 4, 5]);
    assert_eq!(reader.head(), Some(5));
}
