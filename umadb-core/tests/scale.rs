//! A store of 1,000,000 events: a query touches only the events and index chunks it needs,
//! whatever the size of the log. A sparse tag's positions share one index chunk (chunks fill up
//! by size, not by position range), so its whole history is one chunk load. Counts, not timings (performance is measured in benches/).

use umadb_core::{
    debug_counters, debug_index_lookups, reset_debug_counters, AppendRequest, Event, Position,
    Query, QueryItem, ReadRequest, Store, StoreOptions,
};

const EVENTS: u64 = 1_000_000;
const TAGS: u64 = 100_000;
const TYPES: u64 = 5;
const BATCH: u64 = 10_000;

/// Event at `position`: type and tag cycle through their alphabets, so each tag has
/// EVENTS / TAGS = 10 events, one every 100,000 positions.
fn event_at(position: Position) -> Event {
    let i = position - 1;
    Event::new(
        format!("Type{}", i % TYPES),
        [format!("tag-{}", i % TAGS)],
        i.to_le_bytes().to_vec(),
    )
}

fn tag_positions(tag: u64) -> Vec<Position> {
    (0..EVENTS / TAGS).map(|j| tag + 1 + j * TAGS).collect()
}

fn tag_query(tags: &[u64]) -> Query {
    Query::from_items(
        tags.iter()
            .map(|t| QueryItem::new(Vec::<String>::new(), [format!("tag-{t}")])),
    )
}

/// Reads and returns (positions, records decoded, index chunk loads).
fn measured(store: &Store, request: ReadRequest) -> (Vec<Position>, u64, u64) {
    reset_debug_counters();
    let (events, _) = store.read_all(request).unwrap();
    let (decoded, chunks) = debug_counters();
    for e in &events {
        assert_eq!(e.event, event_at(e.position));
    }
    (events.iter().map(|e| e.position).collect(), decoded, chunks)
}

#[test]
fn queries_on_a_million_events_touch_only_what_they_return() {
    let dir = tempfile::tempdir().unwrap();
    // Every event indexed at once: the counts below are those of the index walk.
    let options = StoreOptions {
        index_lag: 0,
        ..Default::default()
    };
    let store = Store::open_with(dir.path().join("db"), options).unwrap();
    for first in (1..=EVENTS).step_by(BATCH as usize) {
        let last = store
            .append(AppendRequest {
                events: (first..first + BATCH).map(event_at).collect(),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(last, first + BATCH - 1);
    }
    assert_eq!(store.head(), Some(EVENTS));

    // One tag, ten events spread over the whole log.
    let tag = 12_345;
    let want = tag_positions(tag);
    let (got, decoded, chunks) = measured(
        &store,
        ReadRequest {
            query: tag_query(&[tag]),
            ..Default::default()
        },
    );
    assert_eq!(got, want);
    assert_eq!(
        decoded,
        want.len() as u64,
        "only the matching records are decoded"
    );
    assert_eq!(
        chunks, 1,
        "the tag's ten positions share one chunk, loaded once"
    );
    assert_eq!(
        debug_index_lookups(),
        1,
        "the key's open chunk, looked up with its header (the key's first position) and \
         loaded at once, holds all ten: its last position ends the walk"
    );

    // Backwards with a limit stops at the first match.
    let (got, decoded, chunks) = measured(
        &store,
        ReadRequest {
            query: tag_query(&[tag]),
            backwards: true,
            limit: Some(1),
            start: None,
        },
    );
    assert_eq!(got, vec![*want.last().unwrap()]);
    assert_eq!((decoded, chunks), (1, 1));

    // From the middle of the log.
    let start = EVENTS / 2;
    let later: Vec<Position> = want.iter().copied().filter(|&p| p >= start).collect();
    let (got, decoded, chunks) = measured(
        &store,
        ReadRequest {
            query: tag_query(&[tag]),
            start: Some(start),
            ..Default::default()
        },
    );
    assert_eq!(got, later);
    assert_eq!(decoded, later.len() as u64);
    assert_eq!(chunks, 1);
    assert_eq!(
        debug_index_lookups(),
        1,
        "the key's open chunk, which holds the start, and no full chunk after it"
    );

    // Type and tag: the type's chunks are loaded only where the tag has events (the type is
    // dense, so each of the tag's ten positions lies in a different chunk of the type).
    let event_type = format!("Type{}", tag % TYPES);
    let (got, decoded, chunks) = measured(
        &store,
        ReadRequest {
            query: Query::from_items([QueryItem::new([event_type], [format!("tag-{tag}")])]),
            ..Default::default()
        },
    );
    assert_eq!(got, want);
    assert_eq!(decoded, want.len() as u64);
    assert_eq!(chunks as usize, 1 + want.len());

    // Two items OR-ed.
    let mut both: Vec<Position> = tag_positions(7)
        .into_iter()
        .chain(tag_positions(99_999))
        .collect();
    both.sort_unstable();
    let (got, decoded, chunks) = measured(
        &store,
        ReadRequest {
            query: tag_query(&[7, 99_999]),
            ..Default::default()
        },
    );
    assert_eq!(got, both);
    assert_eq!(decoded, both.len() as u64);
    // One chunk per tag, each loaded once.
    assert_eq!(chunks, 2);
    assert_eq!(
        debug_index_lookups(),
        2,
        "per tag: its open chunk, with its header"
    );

    // A dense type, limited: one chunk, as many records as asked.
    let (got, decoded, chunks) = measured(
        &store,
        ReadRequest {
            query: Query::from_items([QueryItem::new(["Type3"], Vec::<String>::new())]),
            limit: Some(10),
            ..Default::default()
        },
    );
    assert_eq!(got, (0..10).map(|j| 4 + j * TYPES).collect::<Vec<_>>());
    assert_eq!((decoded, chunks), (10, 1));

    // Nothing matches: nothing is decoded.
    let wrong_type = format!("Type{}", (tag + 1) % TYPES);
    let (got, decoded, _) = measured(
        &store,
        ReadRequest {
            query: Query::from_items([QueryItem::new([wrong_type], [format!("tag-{tag}")])]),
            ..Default::default()
        },
    );
    assert!(got.is_empty());
    assert_eq!(decoded, 0);
    let (got, decoded, chunks) = measured(
        &store,
        ReadRequest {
            query: tag_query(&[TAGS + 1]),
            ..Default::default()
        },
    );
    assert!(got.is_empty());
    assert_eq!((decoded, chunks), (0, 0));

    // Streaming in small batches decodes each record once.
    reset_debug_counters();
    let mut reader = store
        .read(ReadRequest {
            query: tag_query(&[tag]),
            ..Default::default()
        })
        .unwrap();
    let mut streamed = Vec::new();
    while let Some(batch) = reader.next_batch(3).unwrap() {
        streamed.extend(batch.into_iter().map(|e| e.position));
    }
    assert_eq!(streamed, want);
    assert_eq!(debug_counters().0, want.len() as u64);

    // A rare type, only in the newest chunk: the tag's older chunks are skipped, not loaded.
    let late: Vec<Event> = (0..5)
        .map(|_| Event::new("Late", [format!("tag-{tag}")], vec![]))
        .collect();
    let last = store
        .append(AppendRequest {
            events: late,
            ..Default::default()
        })
        .unwrap();
    reset_debug_counters();
    let (events, _) = store
        .read_all(ReadRequest {
            query: Query::from_items([QueryItem::new(["Late"], [format!("tag-{tag}")])]),
            ..Default::default()
        })
        .unwrap();
    let positions: Vec<Position> = events.iter().map(|e| e.position).collect();
    assert_eq!(positions, (EVENTS + 1..=last).collect::<Vec<_>>());
    assert_eq!(debug_counters(), (5, 2));
}
