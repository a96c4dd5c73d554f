//! Criterion benchmarks of the storage engine, in-process (no gRPC).
//!
//! `cargo bench -p umadb-benches --bench core` runs them all; pass a filter to run some, e.g.
//! `cargo bench -p umadb-benches --bench core -- append/`. Throughput is reported in events/s
//! (appends, scans) or requests/s (tag queries).

use criterion::{criterion_group, criterion_main, Bencher, BenchmarkId, Criterion, Throughput};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tempfile::TempDir;
use umadb_core::{
    AppendCondition, AppendRequest, Event, Query, QueryItem, ReadRequest, Store, Uuid,
    DEFAULT_INDEX_LAG,
};

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

const TYPES: [&str; 5] = [
    "OrderPlaced",
    "OrderPaid",
    "OrderShipped",
    "OrderCancelled",
    "CustomerRegistered",
];
/// Size of the read benchmarks' store, and its number of distinct tags (~10 events per tag).
const LARGE: u64 = 1_000_000;
const LARGE_TAGS: u64 = LARGE / 10;

fn event(n: u64, tags: u64) -> Event {
    let mut data = vec![b'x'; 100];
    data[..8].copy_from_slice(&n.to_le_bytes());
    Event::new(
        TYPES[(n % TYPES.len() as u64) as usize],
        [format!("order-{}", n % tags)],
        data,
    )
}

/// Appends `count` events in requests of 10,000, the bench log's standard content.
fn populate(store: &Store, count: u64) {
    let mut n = store.head().unwrap_or(0);
    let end = n + count;
    while n < end {
        let batch = (end - n).min(10_000);
        let events = (n..n + batch).map(|i| event(i, LARGE_TAGS)).collect();
        store
            .append(AppendRequest {
                events,
                ..Default::default()
            })
            .expect("populate append");
        n += batch;
    }
}

/// The 1,000,000-event store shared by the read benchmarks, built once per run.
fn large_store() -> &'static (TempDir, Arc<Store>) {
    static STORE: OnceLock<(TempDir, Arc<Store>)> = OnceLock::new();
    STORE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path().join("db")).expect("open");
        eprintln!("building a {LARGE}-event store for the read benchmarks…");
        let started = Instant::now();
        populate(&store, LARGE);
        eprintln!("built in {:.1?}", started.elapsed());
        (dir, Arc::new(store))
    })
}

/// Runs `iters` requests spread over `threads` threads; returns the wall time.
fn run_threads(
    threads: u64,
    iters: u64,
    request: impl Fn(u64, u64) -> AppendRequest + Sync,
    store: &Store,
) -> Duration {
    let per_thread = iters.div_ceil(threads);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..threads {
            let request = &request;
            scope.spawn(move || {
                for i in 0..per_thread {
                    store.append(request(t, i)).expect("append");
                }
            });
        }
    });
    started.elapsed()
}

fn append(c: &mut Criterion) {
    let mut group = c.benchmark_group("append");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    for per_request in [1u64, 10, 100] {
        for threads in [1u64, 64] {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = Store::open(dir.path().join("db")).expect("open");
            group.throughput(Throughput::Elements(per_request));
            let id = BenchmarkId::new(
                format!("{per_request}_per_request"),
                format!("{threads}_threads"),
            );
            group.bench_function(id, |b| {
                b.iter_custom(|iters| {
                    run_threads(
                        threads,
                        iters,
                        |t, i| AppendRequest {
                            events: (0..per_request)
                                .map(|k| event(t * 1_000_000 + i * 100 + k, 1000))
                                .collect(),
                            ..Default::default()
                        },
                        &store,
                    )
                })
            });
        }
    }
    group.finish();
}

fn conditional_append(c: &mut Criterion) {
    let mut group = c.benchmark_group("conditional_append");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(1));
    for threads in [1u64, 64] {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path().join("db")).expect("open");
        group.bench_function(
            BenchmarkId::new("1_per_request", format!("{threads}_threads")),
            |b| {
                b.iter_custom(|iters| {
                    run_threads(
                        threads,
                        iters,
                        |t, i| {
                            // A boundary of its own: the condition never fails, as in a real
                            // command on a fresh entity, but it is always evaluated.
                            let id = NEXT_ID.fetch_add(1, Ordering::Relaxed) as u128;
                            let tag = format!("entity-{id}-{t}-{i}");
                            AppendRequest {
                                events: vec![Event::new("Created", [tag.clone()], vec![0; 100])
                                    .with_uuid(Uuid::from_u128(id + 1))],
                                condition: Some(AppendCondition {
                                    fail_if_events_match: Query::from_items([QueryItem::new(
                                        Vec::<String>::new(),
                                        [tag],
                                    )]),
                                    after: store.head(),
                                }),
                                tracking_info: None,
                            }
                        },
                        &store,
                    )
                })
            },
        );
    }
    group.finish();
}

/// One append on an empty store against one on the 1M-event store: the cost must not grow.
fn append_at_size(c: &mut Criterion) {
    let mut group = c.benchmark_group("append_at_size");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(100));
    let dir = tempfile::tempdir().expect("tempdir");
    let empty = Store::open(dir.path().join("db")).expect("open");
    let (_, large) = large_store();
    for (name, store) in [("empty", &empty), ("1M", large.as_ref())] {
        group.bench_function(BenchmarkId::new("100_per_request", name), |b| {
            let mut n = 0;
            b.iter(|| {
                n += 100;
                let events = (n..n + 100).map(|i| event(i, LARGE_TAGS)).collect();
                store
                    .append(AppendRequest {
                        events,
                        ..Default::default()
                    })
                    .expect("append")
            })
        });
    }
    group.finish();
}

/// Reads all events of one tag after another, spread over the store.
fn read_random_tags(b: &mut Bencher, store: &Store) {
    let mut tag = 0u64;
    b.iter(|| {
        tag = (tag + 7919) % LARGE_TAGS;
        let query = Query::from_items([QueryItem::new(
            Vec::<String>::new(),
            [format!("order-{tag}")],
        )]);
        let (events, _) = store
            .read_all(ReadRequest {
                query,
                ..Default::default()
            })
            .expect("read");
        assert!(!events.is_empty());
    })
}

fn read(c: &mut Criterion) {
    let (_, store) = large_store();
    let mut group = c.benchmark_group("read_1M");
    group.sample_size(10);
    group.throughput(Throughput::Elements(1));
    group.bench_function("tag_query", |b| read_random_tags(b, store));
    // A live store's newest events are not yet in the indexes (StoreOptions::index_lag): here
    // half the default lag of them, 16 per commit, which every query also matches.
    let tail = DEFAULT_INDEX_LAG / 2;
    for first in (LARGE..LARGE + tail).step_by(16) {
        store
            .append(AppendRequest {
                events: (first..first + 16).map(|n| event(n, LARGE_TAGS)).collect(),
                ..Default::default()
            })
            .expect("append");
    }
    group.bench_function("tag_query_past_unindexed_tail", |b| {
        read_random_tags(b, store)
    });
    // One type of five: about 200,000 events, found through the type's index chunks.
    group.throughput(Throughput::Elements(LARGE / TYPES.len() as u64));
    group.bench_function("type_query", |b| {
        let query = Query::from_items([QueryItem::new([TYPES[1]], Vec::<String>::new())]);
        b.iter(|| {
            let mut reader = store
                .read(ReadRequest {
                    query: query.clone(),
                    ..Default::default()
                })
                .expect("read");
            let mut count = 0u64;
            while let Some(batch) = reader.next_batch(1000).expect("batch") {
                count += batch.len() as u64;
            }
            assert!(count >= LARGE / TYPES.len() as u64);
        })
    });
    group.throughput(Throughput::Elements(LARGE));
    group.bench_function("full_scan", |b| {
        b.iter(|| {
            let mut reader = store.read(ReadRequest::default()).expect("read");
            let mut count = 0u64;
            while let Some(batch) = reader.next_batch(1000).expect("batch") {
                count += batch.len() as u64;
            }
            assert!(count >= LARGE);
        })
    });
    group.finish();
}

criterion_group!(benches, append, conditional_append, append_at_size, read);
criterion_main!(benches);
