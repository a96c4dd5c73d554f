//! Reads: lazy, batched, one fresh read transaction per batch so a slow consumer never pins old
//! pages.

use super::eval::{self, Plan};
use super::{append_tracking, format, nonzero, storage_error, Dbs, Shared};
use crate::error::Result;
use crate::types::{Position, Query, ReadRequest, SequencedEvent, TrackingInfo};
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
fn decode_record(position: Position, bytes: &[u8]) -> Result<format::DecodedEvent> {
    RECORDS_DECODED.with(|n| n.set(n.get() + 1));
    format::decode_event(position, bytes)
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
        let batch = read_range(&self.shared, &self.query, lo, hi, self.backwards, want)?;
        let exhausted = batch.len() < want;
        if let Some(last) = batch.last() {
            self.last_returned = Some(last.position);
            self.next = if self.backwards {
                nonzero(last.position - 1)
            } else {
                last.position.checked_add(1)
            };
        }
        if let Some(remaining) = &mut self.remaining {
            *remaining -= batch.len() as u64;
            if *remaining == 0 {
                self.next = None;
            }
        }
        if exhausted {
            self.next = None;
        }
        if batch.is_empty() {
            return Ok(None);
        }
        Ok(Some(batch))
    }
}

impl Iterator for Reader {
    type Item = Result<Vec<SequencedEvent>>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_batch(1000).transpose()
    }
}

/// Up to `max` events matching `query` in `lo..=hi`, in one read transaction.
pub(crate) fn read_range(
    shared: &Shared,
    query: &Query,
    lo: Position,
    hi: Position,
    backwards: bool,
    max: usize,
) -> Result<Vec<SequencedEvent>> {
    let mut out = Vec::new();
    if max == 0 || lo > hi {
        return Ok(out);
    }
    let txn = shared.env.read_txn().map_err(storage_error)?;
    let dbs = &shared.dbs;
    let plan = eval::plan(&txn, dbs, query)?;
    if let Plan::Items(items) = &plan {
        if items.is_empty() {
            return Ok(out);
        }
    }
    let mut tracking_cache: Option<(Position, Position, TrackingInfo)> = None;
    eval::for_each_match(&txn, dbs, &plan, lo, hi, backwards, |position, record| {
        let bytes = match record {
            Some(bytes) => bytes,
            None => fetch_record(&txn, dbs, position)?,
        };
        out.push(sequenced(&txn, dbs, position, bytes, &mut tracking_cache)?);
        Ok(if out.len() >= max {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        })
    })?;
    Ok(out)
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

/// Decodes the record at `position` and attaches its append's tracking info.
fn sequenced(
    txn: &RoTxn,
    dbs: &Dbs,
    position: Position,
    bytes: &[u8],
    tracking_cache: &mut Option<(Position, Position, TrackingInfo)>,
) -> Result<SequencedEvent> {
    let decoded = decode_record(position, bytes)?;
    let tracking_info = if decoded.tracked {
        match tracking_cache {
            Some((first, last, info)) if *first <= position && position <= *last => {
                Some(info.clone())
            }
            _ => {
                let found = append_tracking(txn, dbs, position)?;
                let info = found.2.clone();
                *tracking_cache = Some(found);
                Some(info)
            }
        }
    } else {
        None
    };
    Ok(SequencedEvent {
        position,
        event: decoded.event,
        tracking_info,
    })
}

/// Positions of up to `max` events matching `query` in `lo..=hi`, ascending, within `txn`.
pub(crate) fn matching_positions(
    txn: &RoTxn,
    dbs: &Dbs,
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
    eval::for_each_match(txn, dbs, &plan, lo, hi, false, |position, _| {
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
