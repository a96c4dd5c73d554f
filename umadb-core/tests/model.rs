//! Model-based tests: random appends and reads against a naive in-memory implementation of
//! DESIGN.md (`common::Model`); positions, events, heads and error kinds must be identical.

mod common;

use common::*;
use proptest::prelude::*;
use std::path::Path;
use std::sync::mpsc;
use umadb_core::{
    AppendCondition, AppendRequest, Event, Position, Query, QueryItem, ReadRequest, Store,
    TrackingInfo, Uuid, MAX_STRING_LEN,
};

/// Events use the first three types and four tags; queries may also name the last, unknown one.
const TYPES: [&str; 4] = ["A", "B", "C", "Unknown"];
const TAGS: [&str; 5] = ["t0", "t1", "t2", "t3", "unknown"];
const SOURCES: [&str; 2] = ["s0", "s1"];

#[derive(Debug, Clone)]
enum UuidSpec {
    None,
    Nil,
    Fresh,
}

#[derive(Debug, Clone)]
struct EventSpec {
    event_type: usize,
    tags: Vec<usize>,
    uuid: UuidSpec,
    oversized: bool,
}

#[derive(Debug, Clone)]
struct QuerySpec(Vec<(Vec<usize>, Vec<usize>)>);

#[derive(Debug, Clone)]
enum CondQuery {
    Random(QuerySpec),
    /// One item per submitted event, naming its type and tags: the events match their own
    /// condition, as in a typical decide-then-append (and its retries).
    OfTheEvents,
}

#[derive(Debug, Clone)]
enum AfterSpec {
    Absent,
    BehindHead(u64),
    BeyondHead(u64),
}

#[derive(Debug, Clone)]
struct AppendSpec {
    events: Vec<EventSpec>,
    condition: Option<(CondQuery, AfterSpec)>,
    tracking: Option<(usize, Position)>,
}

#[derive(Debug, Clone)]
struct ReadSpec {
    query: QuerySpec,
    /// Resolved modulo head + 4, so it falls on, before and beyond the head.
    start: Option<u64>,
    backwards: bool,
    limit: Option<u64>,
    batch: usize,
}

#[derive(Debug, Clone)]
enum Op {
    Append(AppendSpec),
    /// Resubmits an earlier request exactly as it was (index modulo the number made).
    Retry(usize),
    /// Submits several requests back to back, so that the writer commits them together.
    Group(Vec<AppendSpec>),
    Read(ReadSpec),
    Reopen,
}

fn uuid_spec() -> impl Strategy<Value = UuidSpec> {
    prop_oneof![
        2 => Just(UuidSpec::None),
        1 => Just(UuidSpec::Nil),
        5 => Just(UuidSpec::Fresh),
    ]
}

fn event_spec() -> impl Strategy<Value = EventSpec> {
    (
        0..3usize,
        proptest::collection::btree_set(0..4usize, 0..3),
        uuid_spec(),
        proptest::bool::weighted(0.02),
    )
        .prop_map(|(event_type, tags, uuid, oversized)| EventSpec {
            event_type,
            tags: tags.into_iter().collect(),
            uuid,
            oversized,
        })
}

fn query_spec() -> impl Strategy<Value = QuerySpec> {
    proptest::collection::vec(
        (
            proptest::collection::vec(0..TYPES.len(), 0..3),
            proptest::collection::vec(0..TAGS.len(), 0..3),
        ),
        0..3,
    )
    .prop_map(QuerySpec)
}

fn append_spec() -> impl Strategy<Value = AppendSpec> {
    let condition = (
        prop_oneof![
            query_spec().prop_map(CondQuery::Random),
            Just(CondQuery::OfTheEvents),
        ],
        prop_oneof![
            1 => Just(AfterSpec::Absent),
            4 => (0..4u64).prop_map(AfterSpec::BehindHead),
            1 => (1..3u64).prop_map(AfterSpec::BeyondHead),
        ],
    );
    (
        proptest::collection::vec(event_spec(), 0..4),
        proptest::option::weighted(0.6, condition),
        proptest::option::weighted(0.3, (0..SOURCES.len(), 0..12u64)),
    )
        .prop_map(|(events, condition, tracking)| AppendSpec {
            events,
            condition,
            tracking,
        })
}

fn read_spec() -> impl Strategy<Value = ReadSpec> {
    (
        query_spec(),
        proptest::option::weighted(0.6, any::<u64>()),
        any::<bool>(),
        proptest::option::weighted(0.4, 0..5u64),
        1..4usize,
    )
        .prop_map(|(query, start, backwards, limit, batch)| ReadSpec {
            query,
            start,
            backwards,
            limit,
            batch,
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => append_spec().prop_map(Op::Append),
        2 => any::<usize>().prop_map(Op::Retry),
        1 => proptest::collection::vec(append_spec(), 2..5).prop_map(Op::Group),
        6 => read_spec().prop_map(Op::Read),
        1 => Just(Op::Reopen),
    ]
}

/// Turns specs into requests, handing out fresh uuids.
struct Builder {
    next_uuid: u128,
}

impl Builder {
    fn query(&self, spec: &QuerySpec) -> Query {
        Query::from_items(spec.0.iter().map(|(types, tags)| {
            QueryItem::new(
                types.iter().map(|&t| TYPES[t]),
                tags.iter().map(|&t| TAGS[t]),
            )
        }))
    }

    fn request(&mut self, spec: &AppendSpec, head: Position) -> AppendRequest {
        let events: Vec<Event> = spec
            .events
            .iter()
            .map(|e| {
                let mut tags: Vec<String> = e.tags.iter().map(|&t| TAGS[t].to_string()).collect();
                if e.oversized {
                    tags.push("x".repeat(MAX_STRING_LEN + 1));
                }
                self.next_uuid += 1;
                let uuid = match e.uuid {
                    UuidSpec::None => None,
                    UuidSpec::Nil => Some(Uuid::nil()),
                    UuidSpec::Fresh => Some(Uuid::from_u128(self.next_uuid)),
                };
                Event {
                    event_type: TYPES[e.event_type].to_string(),
                    tags,
                    data: self.next_uuid.to_le_bytes().to_vec(),
                    uuid,
                    metadata: vec![("n".into(), self.next_uuid.to_string())],
                }
            })
            .collect();
        let condition = spec.condition.as_ref().map(|(q, after)| AppendCondition {
            fail_if_events_match: match q {
                CondQuery::Random(q) => self.query(q),
                CondQuery::OfTheEvents => Query::from_items(
                    events
                        .iter()
                        .map(|e| QueryItem::new([e.event_type.clone()], e.tags.clone())),
                ),
            },
            after: match after {
                AfterSpec::Absent => None,
                AfterSpec::BehindHead(k) => Some(head.saturating_sub(*k)),
                AfterSpec::BeyondHead(k) => Some(head + k),
            },
        });
        AppendRequest {
            events,
            condition,
            tracking_info: spec.tracking.map(|(s, position)| TrackingInfo {
                source: SOURCES[s].into(),
                position,
            }),
        }
    }
}

fn outcome(result: umadb_core::Result<Position>) -> Result<Position, &'static str> {
    result.map_err(|e| kind(&e))
}

fn run(ops: &[Op], dir: &Path) -> Result<(), TestCaseError> {
    let path = dir.join("db");
    let mut store = Some(Store::open(&path).expect("open"));
    let mut model = Model::default();
    let mut builder = Builder { next_uuid: 0 };
    let mut made: Vec<AppendRequest> = Vec::new();
    for (step, op) in ops.iter().enumerate() {
        let s = store.as_ref().expect("store is open");
        let head = model.head().unwrap_or(0);
        match op {
            Op::Append(spec) => {
                let request = builder.request(spec, head);
                let want = model.append(&request);
                prop_assert_eq!(outcome(s.append(request.clone())), want, "step {}", step);
                made.push(request);
            }
            Op::Retry(i) => {
                if made.is_empty() {
                    continue;
                }
                let request = made[i % made.len()].clone();
                let want = model.append(&request);
                prop_assert_eq!(outcome(s.append(request)), want, "step {}", step);
            }
            Op::Group(specs) => {
                let requests: Vec<AppendRequest> = specs
                    .iter()
                    .map(|spec| builder.request(spec, head))
                    .collect();
                let receivers: Vec<_> = requests
                    .iter()
                    .map(|request| {
                        let (tx, rx) = mpsc::sync_channel(1);
                        s.submit_append(request.clone(), Box::new(move |r| tx.send(r).unwrap()))
                            .unwrap();
                        rx
                    })
                    .collect();
                for (request, rx) in requests.iter().zip(receivers) {
                    let want = model.append(request);
                    prop_assert_eq!(outcome(rx.recv().unwrap()), want, "step {}", step);
                }
                made.extend(requests);
            }
            Op::Read(spec) => {
                let request = ReadRequest {
                    query: builder.query(&spec.query),
                    start: spec.start.map(|s| s % (head + 4)),
                    backwards: spec.backwards,
                    limit: spec.limit,
                };
                let mut reader = s.read(request.clone()).expect("read");
                let mut got = Vec::new();
                while let Some(batch) = reader.next_batch(spec.batch).expect("batch") {
                    prop_assert!(!batch.is_empty() && batch.len() <= spec.batch);
                    got.extend(batch);
                }
                let (want, want_head) = model.read(&request);
                prop_assert_eq!(&got, &want, "step {}: {:?}", step, request);
                prop_assert_eq!(reader.head(), want_head, "step {}: {:?}", step, request);
            }
            Op::Reopen => {
                drop(store.take());
                store = Some(Store::open(&path).expect("reopen"));
            }
        }
        let s = store.as_ref().expect("store is open");
        prop_assert_eq!(s.head(), model.head(), "head after step {}", step);
        for source in SOURCES {
            prop_assert_eq!(
                s.tracking_position(source).expect("tracking"),
                model.tracking.get(source).copied(),
                "tracking of {} after step {}",
                source,
                step
            );
        }
    }
    // Finally the whole log, both ways.
    let s = store.as_ref().expect("store is open");
    for backwards in [false, true] {
        let request = ReadRequest {
            backwards,
            ..Default::default()
        };
        prop_assert_eq!(
            s.read_all(request.clone()).expect("read"),
            model.read(&request)
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 96,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn engine_behaves_like_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().expect("temp dir");
        run(&ops, dir.path())?;
    }
}

// ---------------------------------------------------------------------------------------------
// Index chunks: positions crossing 65,536-position chunk boundaries.

const CHUNK: u64 = 1 << 16;

fn chunk_event(position: Position) -> Event {
    let near_boundary = (1..=2).any(|k| position.abs_diff(k * CHUNK) <= 3);
    let mut tags = Vec::new();
    if position.is_multiple_of(7) {
        tags.push("m7");
    }
    if position.is_multiple_of(1000) {
        tags.push("m1000");
    }
    if near_boundary {
        tags.push("edge");
    }
    // Present in chunks 0 and 2, absent from chunk 1: evaluation must skip a whole chunk.
    if !(500..=2 * CHUNK + 500).contains(&position) {
        tags.push("sparse");
    }
    // Only in chunk 1.
    if (CHUNK..2 * CHUNK).contains(&position) && position.is_multiple_of(11) {
        tags.push("c1");
    }
    Event::new(
        ["T0", "T1", "T2"][(position % 3) as usize],
        tags,
        position.to_be_bytes().to_vec(),
    )
}

#[test]
fn queries_across_index_chunk_boundaries_match_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("db")).unwrap();
    let mut model = Model::default();
    let total: u64 = 140_000;
    let batch: u64 = 10_000;
    for first in (1..=total).step_by(batch as usize) {
        let request = AppendRequest {
            events: (first..first + batch).map(chunk_event).collect(),
            ..Default::default()
        };
        assert_eq!(
            outcome(store.append(request.clone())),
            model.append(&request)
        );
    }
    assert_eq!(store.head(), Some(total));

    let q = |items: Vec<QueryItem>| Query::from_items(items);
    let queries = [
        q(vec![item(&[], &["edge"])]),
        q(vec![item(&[], &["sparse"])]),
        q(vec![item(&[], &["sparse", "m7"])]),
        q(vec![item(&["T1"], &["edge"])]),
        q(vec![item(&["T0", "T2"], &["m1000"])]),
        q(vec![item(&[], &["c1"])]),
        q(vec![item(&[], &["c1"]), item(&["T2"], &["sparse"])]),
        q(vec![item(&[], &["c1", "sparse"])]),
        q(vec![
            item(&["T1"], &["m7", "edge"]),
            item(&[], &["m1000", "c1"]),
        ]),
    ];
    let boundary_starts = [
        None,
        Some(0),
        Some(1),
        Some(CHUNK - 1),
        Some(CHUNK),
        Some(CHUNK + 1),
        Some(2 * CHUNK - 1),
        Some(2 * CHUNK),
        Some(2 * CHUNK + 1),
        Some(total),
        Some(total + 50_000),
    ];
    let mut compared = 0;
    for query in &queries {
        for start in boundary_starts {
            for backwards in [false, true] {
                for limit in [None, Some(1), Some(3), Some(700)] {
                    let request = ReadRequest {
                        query: query.clone(),
                        start,
                        backwards,
                        limit,
                    };
                    let got = store.read_all(request.clone()).unwrap();
                    assert_eq!(got, model.read(&request), "{request:?}");
                    compared += got.0.len();
                }
            }
        }
    }
    assert!(
        compared > 10_000,
        "the queries return something: {compared}"
    );

    // A dense query, limited, from every boundary.
    let dense = q(vec![item(&["T1"], &[])]);
    for start in boundary_starts {
        for backwards in [false, true] {
            let request = ReadRequest {
                query: dense.clone(),
                start,
                backwards,
                limit: Some(5),
            };
            assert_eq!(
                store.read_all(request.clone()).unwrap(),
                model.read(&request)
            );
        }
    }

    // Conditions whose matches lie across a boundary.
    let conditions = [
        (q(vec![item(&[], &["edge"])]), Some(CHUNK)),
        (q(vec![item(&[], &["edge"])]), Some(2 * CHUNK + 3)),
        (q(vec![item(&[], &["c1"])]), Some(CHUNK - 1)),
        (q(vec![item(&[], &["c1"])]), Some(2 * CHUNK - 1)),
        (q(vec![item(&[], &["sparse"])]), Some(CHUNK)),
        (q(vec![item(&[], &["c1", "sparse"])]), None),
        (q(vec![item(&["T0"], &["m1000"])]), Some(total - 2_000)),
    ];
    for (fail_if, after) in conditions {
        let request = conditional(
            vec![Event::new("T0", ["new"], vec![])],
            fail_if.clone(),
            after,
        );
        assert_eq!(
            outcome(store.append(request.clone())),
            model.append(&request),
            "{fail_if:?} after {after:?}"
        );
    }
    assert_eq!(store.head(), model.head());
}
