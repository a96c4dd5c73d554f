//! Many threads at once: conditional appends on overlapping consistency boundaries, readers and
//! followers during writes, racing retries.

mod common;

use common::*;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;
use umadb_core::{
    AppendCondition, AppendRequest, Error, Event, Position, Query, QueryItem, ReadRequest, Uuid,
};

/// A small deterministic generator, so a failure can be replayed.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

const BOUNDARIES: [&str; 3] = ["b0", "b1", "b2"];

struct Success {
    condition: AppendCondition,
    position: Position,
    data: Vec<u8>,
}

#[test]
fn no_two_conditional_appends_both_pass_when_one_should_fail() {
    let (_dir, store) = temp_store();
    let store = Arc::new(store);
    let threads = 16;
    let iterations = 40;
    let start = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let store = store.clone();
            let start = start.clone();
            std::thread::spawn(move || {
                let mut rng = XorShift(0x9e37_79b9_7f4a_7c15 ^ ((t as u64 + 1) * 0x1234_5678));
                let mut successes = Vec::new();
                let mut conflicts = 0;
                start.wait();
                for i in 0..iterations {
                    let k = rng.below(3) as usize;
                    let j = rng.below(3) as usize;
                    // The decision's boundary: one tag, two tags OR-ed, or a type within a tag.
                    let query = match rng.below(3) {
                        0 => Query::from_items([item(&[], &[BOUNDARIES[k]])]),
                        1 => Query::from_items([
                            item(&[], &[BOUNDARIES[k]]),
                            item(&[], &[BOUNDARIES[j]]),
                        ]),
                        _ => Query::from_items([item(&["Claimed"], &[BOUNDARIES[k]])]),
                    };
                    // Read the boundary: either the position of its last event, or the store's
                    // head as returned by a full read of it.
                    let after = if rng.below(2) == 0 {
                        let (_, head) = store
                            .read_all(ReadRequest {
                                query: query.clone(),
                                backwards: true,
                                limit: Some(1),
                                start: None,
                            })
                            .unwrap();
                        head
                    } else {
                        let (_, head) = store
                            .read_all(ReadRequest {
                                query: query.clone(),
                                ..Default::default()
                            })
                            .unwrap();
                        head
                    };
                    let event_type = if rng.below(4) == 0 {
                        "Other"
                    } else {
                        "Claimed"
                    };
                    let mut tags = vec![BOUNDARIES[k].to_string(), format!("thread:{t}")];
                    if rng.below(2) == 0 {
                        tags.push(BOUNDARIES[j].to_string());
                    }
                    let data = format!("{t}/{i}").into_bytes();
                    let condition = AppendCondition {
                        fail_if_events_match: query,
                        after,
                    };
                    let result = store.append(AppendRequest {
                        events: vec![Event::new(event_type, tags, data.clone())],
                        condition: Some(condition.clone()),
                        tracking_info: None,
                    });
                    match result {
                        Ok(position) => successes.push(Success {
                            condition,
                            position,
                            data,
                        }),
                        Err(Error::Integrity(_)) => conflicts += 1,
                        Err(other) => panic!("unexpected error: {other}"),
                    }
                }
                (successes, conflicts)
            })
        })
        .collect();
    let mut successes = Vec::new();
    let mut conflicts = 0;
    for handle in handles {
        let (s, c) = handle.join().unwrap();
        successes.extend(s);
        conflicts += c;
    }
    assert_eq!(successes.len() + conflicts, threads * iterations);
    eprintln!(
        "{} appends passed their condition, {conflicts} failed it",
        successes.len()
    );

    let (events, head) = store.read_all(ReadRequest::default()).unwrap();
    let positions: Vec<Position> = events.iter().map(|e| e.position).collect();
    assert_eq!(
        positions,
        (1..=head.unwrap_or(0)).collect::<Vec<_>>(),
        "gapless"
    );
    assert_eq!(
        successes.len(),
        events.len(),
        "one event per successful append"
    );
    let mut seen = HashSet::new();
    for success in &successes {
        assert!(
            seen.insert(success.position),
            "position {} returned twice",
            success.position
        );
        let recorded = &events[(success.position - 1) as usize];
        assert_eq!(recorded.event.data, success.data);
        let after = success.condition.after.unwrap_or(0);
        for e in &events[after as usize..(success.position - 1) as usize] {
            assert!(
                !model_matches(&success.condition.fail_if_events_match, &e.event),
                "the append at {} passed its condition although {} (after {after}) matches it",
                success.position,
                e.position
            );
        }
    }
}

#[test]
fn readers_and_followers_see_consistent_gapless_prefixes_while_writers_append() {
    let (_dir, store) = temp_store();
    let store = Arc::new(store);
    let writers_done = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..8)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut written = 0;
                for i in 0..50 {
                    let n = 1 + (t + i) % 3;
                    let events = (0..n)
                        .map(|k| {
                            Event::new("E", [format!("w{t}")], format!("{t}/{i}/{k}").into_bytes())
                        })
                        .collect();
                    store
                        .append(AppendRequest {
                            events,
                            ..Default::default()
                        })
                        .unwrap();
                    written += n;
                }
                written
            })
        })
        .collect();
    let readers: Vec<_> = [false, true]
        .into_iter()
        .map(|backwards| {
            let store = store.clone();
            let done = writers_done.clone();
            std::thread::spawn(move || {
                let mut last_head = 0;
                let mut reads = 0;
                loop {
                    let finished = done.load(Ordering::Acquire);
                    let mut reader = store
                        .read(ReadRequest {
                            backwards,
                            ..Default::default()
                        })
                        .unwrap();
                    let mut got = Vec::new();
                    while let Some(batch) = reader.next_batch(37).unwrap() {
                        got.extend(batch.into_iter().map(|e| e.position));
                    }
                    let head = reader.head().unwrap_or(0);
                    assert!(head >= last_head, "the head never moves back");
                    last_head = head;
                    let mut want: Vec<Position> = (1..=head).collect();
                    if backwards {
                        want.reverse();
                    }
                    assert_eq!(got, want);
                    reads += 1;
                    if finished {
                        return reads;
                    }
                }
            })
        })
        .collect();
    // A follower pages through the log as a subscription would: every position once, in order.
    let follower = {
        let store = store.clone();
        let done = writers_done.clone();
        std::thread::spawn(move || {
            let mut next = 1;
            let query = Query::from_items([QueryItem::new(Vec::<String>::new(), ["w3"])]);
            let mut mine = Vec::new();
            loop {
                let finished = done.load(Ordering::Acquire);
                let head = store.head().unwrap_or(0);
                while next <= head {
                    let page = store.read_range(&Query::all(), next, head, 64).unwrap();
                    assert!(!page.is_empty());
                    for e in &page {
                        assert_eq!(e.position, next, "no gap, no duplicate");
                        next += 1;
                    }
                    mine.extend(
                        store
                            .read_range(
                                &query,
                                page[0].position,
                                page[page.len() - 1].position,
                                usize::MAX,
                            )
                            .unwrap()
                            .into_iter()
                            .map(|e| e.position),
                    );
                }
                if finished && next > store.head().unwrap_or(0) {
                    return (next - 1, mine);
                }
                store.wait_for_head(next - 1, Duration::from_millis(100));
            }
        })
    };
    let written: usize = writers.into_iter().map(|w| w.join().unwrap()).sum();
    writers_done.store(true, Ordering::Release);
    for reader in readers {
        assert!(reader.join().unwrap() >= 1);
    }
    let (followed, mine) = follower.join().unwrap();
    assert_eq!(followed, written as u64);
    assert_eq!(store.head(), Some(written as u64));
    let (w3, _) = read(
        &store,
        Query::from_items([item(&[], &["w3"])]),
        None,
        false,
        None,
    );
    assert_eq!(
        mine, w3,
        "filtered pages agree with one read of the whole log"
    );
}

#[test]
fn concurrent_retries_of_one_append_write_it_once() {
    let (_dir, store) = temp_store();
    let store = Arc::new(store);
    append(&store, vec![event("Before", &["order:1"])]);
    let request = AppendRequest {
        events: vec![
            event("OrderPlaced", &["order:1"]).with_uuid(Uuid::from_u128(11)),
            event("OrderPaid", &["order:1"]).with_uuid(Uuid::from_u128(12)),
        ],
        condition: Some(AppendCondition {
            fail_if_events_match: Query::from_items([item(&[], &["order:1"])]),
            after: Some(1),
        }),
        tracking_info: None,
    };
    let threads = 12;
    let start = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let store = store.clone();
            let request = request.clone();
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                store.append(request).unwrap()
            })
        })
        .collect();
    let positions: Vec<Position> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(positions.iter().all(|&p| p == 3), "{positions:?}");
    assert_eq!(store.head(), Some(3));
}
