//! Reads: lazy, batched, one fresh read transaction per batch so a slow consumer never pins old
//! pages.

use super::eval::{self, Plan};
use super::recent::Recent;
use super::{append_tracking, format, nonzero, storage_error, Dbs, Shared};
use crate::error::Result;
use crate::types::{
    EventRef, Position, Query, ReadRequest, SequencedEvent, SequencedEventRef, TrackingInfo,
};
use heed::RoTxn;
use std::cell::Cell;
use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::sync::Arc;

thread_local! {
    /// Event records decoded on this thread; see [`super::debug_counters`].
    pub(crate) static RECORDS_DECODED: Cell<u64> = const { Cell::new(0) };
}

/// Decodes the record stored at `position`, counting it.
fn decode_record(position: Position, bytes: &[u8]) -> Result<format::Decoded<EventRef<'_>>> {
    RECORDS_DECODED.with(|n| n.set(n.get() + 1));
    format::decode_event_ref(position, bytes)
}

/// A read in progress. Call [`Reader::next_batch`] until it returns `None`.
pub struct Reader {
    shared: Arc<Shared>,
    query: Query,
    backwards: bool,
    /// Next position to consider, or `None` once the read is exhausted.
    next: Option<Position>,
    /// Forward: the head captured at the start; backwards: 1.
    bound: Position,
    remaining: Option<u64>,
    head_at_start: Option<Position>,
    last_returned: Option<Position>,
}

impl Reader {
    pub(crate) fn new(shared: Arc<Shared>, request: ReadRequest) -> Result<Reader> {
        request.query.validate()?;
        let head = shared.head.load(Ordering::Acquire);
        let (next, bound) = if request.backwards {
            let start = match request.start {
                None => head,
                Some(s) => s.min(head),
            };
            (nonzero(start), 1)
        } else {
            let start = request.start.unwrap_or(1).max(1);
            ((start <= head).then_some(start), head)
        };
        let next = if request.limit == Some(0) { None } else { next };
        Ok(Reader {
            shared,
            query: request.query,
            backwards: request.backwards,
            next,
            bound,
            remaining: request.limit,
            head_at_start: nonzero(head),
            last_returned: None,
        })
    }

    /// The read's head: with a limit, the position of the last event returned so far; without,
    /// the store's head when the read began.
    pub fn head(&self) -> Option<Position> {
        if self.remaining.is_some() {
            self.last_returned
        } else {
            self.head_at_start
        }
    }

    /// Whether the read is complete: the next batch would be `None` without touching the store.
    pub fn is_complete(&self) -> bool {
        self.next.is_none()
    }

    /// Up to `max` more events, or `None` when the read is complete.
    pub fn next_batch(&mut self, max: usize) -> Result<Option<Vec<SequencedEvent>>> {
        let mut batch = Vec::new();
        let visited = self.next_batch_with(max, |event| batch.push(event.to_sequenced()))?;
        Ok(visited.map(|_| batch))
    }

    /// Visits up to `max` more events where they are stored, within one read transaction, and
    /// returns how many; `None` when the read is complete.
    pub fn next_batch_with(
        &mut self,
        max: usize,
        visit: impl FnMut(&SequencedEventRef<'_>),
    ) -> Result<Option<usize>> {
        let Some(next) = self.next else {
            return Ok(None);
        };
        let mut want = max.max(1);
        if let Some(remaining) = self.remaining {
            want = want.min(usize::try_from(remaining).unwrap_or(usize::MAX));
        }
        let (lo, hi) = if self.backwards {
            (self.bound, next)
        } else {
            (next, self.bound)
        };
        let visited = read_range_with(
            &self.shared,
            &self.query,
            lo,
            hi,
            self.backwards,
            want,
            visit,
        )?;
        let exhausted = visited.count < want;
        if let Some(last) = visited.last {
            self.last_returned = Some(last);
            self.next = if self.backwards {
                nonzero(last - 1)
            } else {
                last.checked_add(1)
            };
        }
        if let Some(remaining) = &mut self.remaining {
            *remaining -= visited.count as u64;
            if *remaining == 0 {
                self.next = None;
            }
        }
        if exhausted {
            self.next = None;
        }
        if visited.count == 0 {
            return Ok(None);
        }
        Ok(Some(visited.count))
    }
}

impl Iterator for Reader {
    type Item = Result<Vec<SequencedEvent>>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_batch(1000).transpose()
    }
}

/// What [`read_range_with`] visited.
#[derive(Clone, Copy)]
pub(crate) struct Visited {
    pub count: usize,
    /// The position of the last event visited.
    pub last: Option<Position>,
}

/// Visits up to `max` events matching `query` in `lo..=hi` where they are stored, in one read
/// transaction.
pub(crate) fn read_range_with(
    shared: &Shared,
    query: &Query,
    lo: Position,
    hi: Position,
    backwards: bool,
    max: usize,
    mut visit: impl FnMut(&SequencedEventRef<'_>),
) -> Result<Visited> {
    let mut visited = Visited {
        count: 0,
        last: None,
    };
    if max == 0 || lo > hi {
        return Ok(visited);
    }
    // Published after its commit: the snapshot taken next holds every position up to it.
    let head = shared.head.load(Ordering::Acquire);
    let txn = shared.env.read_txn().map_err(storage_error)?;
    let dbs = &shared.dbs;
    let plan = eval::plan(&txn, dbs, query)?;
    if let Plan::Items(items) = &plan {
        if items.is_empty() {
            return Ok(visited);
        }
    }
    let mut tracking_cache: Option<(Position, Position, TrackingInfo)> = None;
    let recent = &shared.recent;
    eval::for_each_match(
        &txn,
        dbs,
        recent,
        &plan,
        lo,
        hi,
        backwards,
        |position, record| {
            let (bytes, from_index) = match record {
                Some(bytes) => (bytes, false),
                None => (fetch_record(&txn, dbs, position)?, true),
            };
            let decoded = decode_record(position, bytes)?;
            // The indexes led here: a damaged index must not pass off other events.
            if from_index && !query.matches_keys(decoded.event.event_type, &decoded.event.tags) {
                return Err(format::corrupt(format!(
                    "the index is damaged: it lists position {position} for a query the event \
                     there does not match"
                )));
            }
            let tracking_info = if decoded.tracked {
                Some(tracking_of(&txn, dbs, position, &mut tracking_cache)?)
            } else {
                None
            };
            visit(&SequencedEventRef {
                position,
                event: decoded.event,
                tracking_info,
            });
            visited.count += 1;
            visited.last = Some(position);
            Ok(if visited.count >= max {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            })
        },
    )?;
    if matches!(plan, Plan::All) && visited.count < max {
        check_scan_complete(head, visited.last, lo, hi, backwards)?;
    }
    Ok(visited)
}

/// A scan of the whole log that ended early, inside the committed log, lost part of it to
/// damaged page structure.
fn check_scan_complete(
    head: Position,
    reached: Option<Position>,
    lo: Position,
    hi: Position,
    backwards: bool,
) -> Result<()> {
    let (lo, hi) = (lo.max(1), hi.min(head));
    if lo > hi {
        return Ok(());
    }
    let (complete, missing) = if backwards {
        (reached == Some(lo), reached.map_or(hi, |p| p - 1))
    } else {
        (reached == Some(hi), reached.map_or(lo, |p| p + 1))
    };
    if complete {
        return Ok(());
    }
    Err(format::corrupt(format!(
        "the log's page structure is damaged: a scan of positions {lo}..={hi} could not reach \
         position {missing}"
    )))
}

fn fetch_record<'t>(txn: &'t RoTxn, dbs: &Dbs, position: Position) -> Result<&'t [u8]> {
    dbs.events
        .get(txn, &format::position_key(position))
        .map_err(storage_error)?
        .ok_or_else(|| {
            format::corrupt(format!(
                "the index names position {position} but no event is stored there"
            ))
        })
}

/// The tracking info of the append that wrote `position`, from `cache` when the append is the
/// one found last.
fn tracking_of<'c>(
    txn: &RoTxn,
    dbs: &Dbs,
    position: Position,
    cache: &'c mut Option<(Position, Position, TrackingInfo)>,
) -> Result<&'c TrackingInfo> {
    let cached = matches!(cache, Some((first, last, _)) if *first <= position && position <= *last);
    if !cached {
        *cache = Some(append_tracking(txn, dbs, position)?);
    }
    match cache {
        Some((_, _, info)) => Ok(info),
        None => Err(format::corrupt(format!(
            "no tracking info found for position {position}"
        ))),
    }
}

/// Positions of up to `max` events matching `query` in `lo..=hi`, ascending, within `txn`.
pub(crate) fn matching_positions(
    txn: &RoTxn,
    dbs: &Dbs,
    recent: &Recent,
    query: &Query,
    lo: Position,
    hi: Position,
    max: usize,
) -> Result<Vec<Position>> {
    let mut out = Vec::new();
    if max == 0 {
        return Ok(out);
    }
    let plan = eval::plan(txn, dbs, query)?;
    eval::for_each_match(txn, dbs, recent, &plan, lo, hi, false, |position, _| {
        out.push(position);
        Ok(if out.len() >= max {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        })
    })?;
    Ok(out)
}

/// The uuid stored at `position`, read within `txn`.
pub(crate) fn stored_uuid(
    txn: &RoTxn,
    dbs: &Dbs,
    position: Position,
) -> Result<Option<uuid::Uuid>> {
    Ok(decode_record(position, fetch_record(txn, dbs, position)?)?
        .event
        .uuid)
}

#[cfg(test)]
mod tests {
    //! Damaged page structure cannot be produced on purpose through LMDB, so these tests damage
    //! the log the way it would look to a reader: records missing from the scan, an index that
    //! points at the wrong event.
    use super::super::{format, Store, StoreOptions};
    use crate::error::Error;
    use crate::types::{AppendRequest, Event, Query, QueryItem, ReadRequest};

    /// Ten events, all indexed.
    fn store_of_ten() -> (tempfile::TempDir, Store) {
        store_of_ten_with(StoreOptions {
            index_lag: 0,
            ..Default::default()
        })
    }

    fn store_of_ten_with(options: StoreOptions) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open_with(dir.path().join("db"), options).expect("open");
        for n in 1..=10 {
            let tag = if n % 2 == 0 { "even" } else { "odd" };
            store
                .append(AppendRequest {
                    events: vec![Event::new("E", [tag], vec![n])],
                    ..Default::default()
                })
                .expect("append");
        }
        (dir, store)
    }

    fn damage(store: &Store, change: impl FnOnce(&mut heed::RwTxn, &super::Dbs)) {
        let shared = &store.shared;
        let mut txn = shared.env.write_txn().expect("write txn");
        change(&mut txn, &shared.dbs);
        txn.commit().expect("commit");
    }

    fn read(store: &Store, start: Option<u64>, backwards: bool, query: Query) -> Error {
        let request = ReadRequest {
            query,
            start,
            backwards,
            limit: None,
        };
        match store.read_all(request) {
            Ok((events, _)) => panic!("a damaged log was served: {events:?}"),
            Err(e) => e,
        }
    }

    fn corruption_naming(e: &Error, words: &str) {
        match e {
            Error::Corruption(message) => assert!(message.contains(words), "{message}"),
            other => panic!("expected Corruption, got {other:?}"),
        }
    }

    #[test]
    fn a_scan_that_finds_a_gap_in_the_log_fails_as_corruption_and_the_rest_is_served() {
        let (_dir, store) = store_of_ten();
        damage(&store, |txn, dbs| {
            dbs.events
                .delete(txn, &format::position_key(5))
                .expect("delete");
        });
        let forwards = read(&store, None, false, Query::all());
        corruption_naming(&forwards, "expected position 5 next but found 6");
        let backwards = read(&store, None, true, Query::all());
        corruption_naming(&backwards, "expected position 5 next but found 4");
        let (after, _) = store
            .read_all(ReadRequest {
                start: Some(6),
                ..Default::default()
            })
            .expect("the intact part is served");
        let positions: Vec<u64> = after.iter().map(|e| e.position).collect();
        assert_eq!(positions, vec![6, 7, 8, 9, 10]);
    }

    #[test]
    fn a_scan_that_ends_before_the_head_fails_as_corruption() {
        let (_dir, store) = store_of_ten();
        damage(&store, |txn, dbs| {
            for p in [9, 10] {
                dbs.events
                    .delete(txn, &format::position_key(p))
                    .expect("delete");
            }
        });
        let e = read(&store, Some(6), false, Query::all());
        corruption_naming(&e, "could not reach position 9");
    }

    #[test]
    fn an_index_pointing_at_an_event_the_query_does_not_match_fails_as_corruption() {
        let (_dir, store) = store_of_ten();
        // A valid record, but not the event the "even" index lists at position 4.
        let mut record = Vec::new();
        format::encode_event(&Event::new("E", ["odd"], vec![4]), false, &mut record);
        damage(&store, |txn, dbs| {
            dbs.events
                .put(txn, &format::position_key(4), &record)
                .expect("put");
        });
        let even = Query::from_items([QueryItem::new(Vec::<String>::new(), ["even"])]);
        let e = read(&store, None, false, even);
        corruption_naming(&e, "lists position 4");
    }

    #[test]
    fn a_damaged_record_past_the_indexed_head_fails_a_query_as_corruption_naming_it() {
        let (dir, store) = store_of_ten_with(StoreOptions::default());
        damage(&store, |txn, dbs| {
            let mut record = dbs
                .events
                .get(txn, &format::position_key(7))
                .expect("get")
                .expect("present")
                .to_vec();
            let last = record.len() - 1;
            record[last] ^= 0xff;
            dbs.events
                .put(txn, &format::position_key(7), &record)
                .expect("put");
        });
        let odd = Query::from_items([QueryItem::new(Vec::<String>::new(), ["odd"])]);
        let even = Query::from_items([QueryItem::new(Vec::<String>::new(), ["even"])]);
        // Matched on the keys the writer kept: only a query that matches it reads the record.
        let e = read(&store, None, false, odd.clone());
        corruption_naming(&e, "position 7 fails its checksum");
        let (served, _) = store
            .read_all(ReadRequest {
                query: even.clone(),
                ..Default::default()
            })
            .expect("the events the query matches are intact");
        assert_eq!(served.len(), 5);
        // Reopened, the tail is read from the records again: every query past the indexed head
        // scans them, and appends are refused.
        drop(store);
        let store = Store::open(dir.path().join("db")).expect("reopen");
        corruption_naming(&read(&store, None, false, even), "position 7");
        corruption_naming(&read(&store, None, true, odd), "position 7");
        let refused = store
            .append(AppendRequest {
                events: vec![Event::new("E", ["odd"], vec![11])],
                ..Default::default()
            })
            .expect_err("an append over an unreadable tail");
        corruption_naming(&refused, "position 7");
    }

    #[test]
    fn a_store_whose_record_count_disagrees_with_its_last_position_is_not_opened() {
        let (dir, store) = store_of_ten();
        damage(&store, |txn, dbs| {
            dbs.events
                .delete(txn, &format::position_key(3))
                .expect("delete");
        });
        drop(store);
        match Store::open(dir.path().join("db")) {
            Ok(_) => panic!("a store with a hole in its log was opened"),
            Err(e) => corruption_naming(&e, "counts 9 event records but its last position is 10"),
        }
    }
}
