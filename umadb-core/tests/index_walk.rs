//! The writer adds a commit's index entries in one backwards walk over the index: it steps over
//! keys it leaves alone, seeks past long gaps, rewrites each key's newest chunk where the cursor
//! stands, and inserts chunks under new keys afterwards.
//! These runs mix the cases round by round: runs of neighbouring tags, tags far apart, new tags
//! (whose keys land at the end of the index), new event types (whose keys land in its middle), and
//! a tag whose chunks fill up and split. After the rounds the check must find the indexes holding
//! exactly the log's (type or tag, position) pairs, and every query must answer what a plain map
//! of positions says, before and after reopening.

mod common;

use common::{item, query, read};
use std::collections::BTreeMap;
use umadb_core::{AppendRequest, Event, Position, Store, StoreOptions};

/// The positions each type and tag should match.
#[derive(Default)]
struct Expected {
    types: BTreeMap<String, Vec<Position>>,
    tags: BTreeMap<String, Vec<Position>>,
}

/// A small deterministic generator (64-bit LCG), so a failure repeats.
struct Gen(u64);

impl Gen {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n.max(1)
    }
}

fn tag(n: u64) -> String {
    format!("tag-{n:05}")
}

/// Tag numbers for one round's events, and whether the round brings a new event type.
fn round_tags(g: &mut Gen, round: u64, known: &mut u64) -> (Vec<u64>, bool) {
    match round % 5 {
        // Neighbouring keys: one cursor step apart.
        0 => {
            let start = g.below(*known);
            ((start..start + 60).map(|n| n % *known).collect(), false)
        }
        // Keys far apart: the walk must seek.
        1 => {
            let start = g.below(*known);
            ((0..40).map(|i| (start + i * 97) % *known).collect(), false)
        }
        // New tags: keys past the end of the index.
        2 => {
            let first = *known;
            *known += 50;
            ((first..*known).collect(), false)
        }
        // A new event type (a key inside the index) and random existing tags.
        3 => ((0..30).map(|_| g.below(*known)).collect(), true),
        // New and existing tags interleaved.
        _ => {
            let first = *known;
            *known += 20;
            let mut tags: Vec<u64> = (first..*known).collect();
            tags.extend((0..20).map(|_| g.below(first)));
            (tags, false)
        }
    }
}

fn positions(store: &Store, types: &[&str], tags: &[&str]) -> Vec<Position> {
    read(store, query(vec![item(types, tags)]), None, false, None).0
}

fn assert_queries_match(store: &Store, expected: &Expected, at: &str) {
    for (name, want) in &expected.types {
        assert_eq!(&positions(store, &[name], &[]), want, "type {name}, {at}");
    }
    for (name, want) in &expected.tags {
        assert_eq!(&positions(store, &[], &[name]), want, "tag {name}, {at}");
    }
}

fn run(index_lag: u64, seed: u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("db");
    let options = StoreOptions {
        index_lag,
        ..Default::default()
    };
    let store = Store::open_with(&path, options.clone()).expect("open");
    let mut g = Gen(seed);
    let mut expected = Expected::default();
    let mut known = 200;
    let mut types = 1;
    let mut head: Position = 0;
    for round in 0..150 {
        let (tags, new_type) = round_tags(&mut g, round, &mut known);
        if new_type {
            types += 1;
        }
        let events: Vec<Event> = tags
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let event_type = format!("type-{:03}", (n + round) % types);
                let mut names = vec![tag(n)];
                // Every third event also carries "hot", so its chunks fill up and split.
                if (head + i as u64).is_multiple_of(3) {
                    names.push("hot".to_string());
                }
                Event::new(event_type, names, vec![1, 2, 3])
            })
            .collect();
        for (i, event) in events.iter().enumerate() {
            let position = head + 1 + i as u64;
            expected
                .types
                .entry(event.event_type.clone())
                .or_default()
                .push(position);
            for name in &event.tags {
                let list = expected.tags.entry(name.clone()).or_default();
                if list.last() != Some(&position) {
                    list.push(position);
                }
            }
        }
        head = store
            .append(AppendRequest {
                events,
                ..Default::default()
            })
            .expect("append");
    }
    let hot = expected.tags["hot"].len();
    assert!(
        hot > 2_000,
        "the hot tag must fill several chunks; it has {hot} positions"
    );
    let report = store.check(|_| {}).expect("check");
    assert!(
        report.is_ok(),
        "index_lag {index_lag}: {:?}",
        report.problems
    );
    assert_queries_match(&store, &expected, &format!("index_lag {index_lag}"));
    drop(store);
    let store = Store::open_with(&path, options).expect("reopen");
    let report = store.check(|_| {}).expect("check after reopening");
    assert!(
        report.is_ok(),
        "index_lag {index_lag}: {:?}",
        report.problems
    );
    assert_queries_match(
        &store,
        &expected,
        &format!("index_lag {index_lag}, reopened"),
    );
}

#[test]
fn every_commit_indexed() {
    run(0, 7);
}

#[test]
fn indexed_every_few_commits() {
    run(37, 11);
}
