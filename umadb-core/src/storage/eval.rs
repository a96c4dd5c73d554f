//! The query evaluator, used by reads, subscriptions and append conditions alike.
//!
//! Each index key (type or tag) is split into chunks of 2^CHUNK_BITS positions. Evaluation walks
//! chunk numbers in the read direction: an item's next chunk is found by leapfrogging over its
//! tags' chunk lists (a chunk must hold every tag) and then its types' (any type will do). Only
//! chunks that can hold a match are loaded, and the walk stops as soon as enough positions have
//! been found.

use super::format::{self, Kind};
use super::{intern, storage_error, Dbs};
use crate::error::{Error, Result};
use crate::types::{Position, Query};
use heed::RoTxn;
use roaring::RoaringBitmap;
use std::cell::Cell;
use std::ops::ControlFlow;

thread_local! {
    /// Index chunk loads (found or not) on this thread; see [`super::debug_counters`].
    pub(crate) static CHUNKS_LOADED: Cell<u64> = const { Cell::new(0) };
}

/// A query resolved against the intern table.
pub enum Plan {
    /// Some item has no types and no tags: every event matches.
    All,
    /// Items that can match something (an item naming an unknown tag cannot).
    Items(Vec<ItemPlan>),
}

pub struct ItemPlan {
    tags: Vec<u32>,
    types: Vec<u32>,
}

pub fn plan(txn: &RoTxn, dbs: &Dbs, query: &Query) -> Result<Plan> {
    if query.items.is_empty() {
        return Ok(Plan::All);
    }
    let mut items = Vec::with_capacity(query.items.len());
    'items: for item in &query.items {
        if item.types.is_empty() && item.tags.is_empty() {
            return Ok(Plan::All);
        }
        let mut tags = Vec::with_capacity(item.tags.len());
        for tag in &item.tags {
            match intern::lookup(txn, dbs, Kind::Tag, tag)? {
                Some(id) => tags.push(id),
                None => continue 'items,
            }
        }
        tags.sort_unstable();
        tags.dedup();
        let mut types = Vec::with_capacity(item.types.len());
        for event_type in &item.types {
            if let Some(id) = intern::lookup(txn, dbs, Kind::EventType, event_type)? {
                types.push(id);
            }
        }
        if !item.types.is_empty() && types.is_empty() {
            continue;
        }
        types.sort_unstable();
        types.dedup();
        items.push(ItemPlan { tags, types });
    }
    Ok(Plan::Items(items))
}

/// Calls `visit` with each matching position in `lo..=hi`, ascending or (when `backwards`)
/// descending, until it returns `Break` or the range is exhausted.
pub fn for_each_match(
    txn: &RoTxn,
    dbs: &Dbs,
    plan: &Plan,
    lo: Position,
    hi: Position,
    backwards: bool,
    mut visit: impl FnMut(Position) -> Result<ControlFlow<()>>,
) -> Result<()> {
    if lo > hi {
        return Ok(());
    }
    match plan {
        Plan::All => {
            let lo_key = format::position_key(lo);
            let hi_key = format::position_key(hi);
            let range = (
                std::ops::Bound::Included(lo_key.as_slice()),
                std::ops::Bound::Included(hi_key.as_slice()),
            );
            if backwards {
                for entry in dbs.events.rev_range(txn, &range).map_err(storage_error)? {
                    let (key, _) = entry.map_err(storage_error)?;
                    if visit(format::decode_position_key(key)?)?.is_break() {
                        break;
                    }
                }
            } else {
                for entry in dbs.events.range(txn, &range).map_err(storage_error)? {
                    let (key, _) = entry.map_err(storage_error)?;
                    if visit(format::decode_position_key(key)?)?.is_break() {
                        break;
                    }
                }
            }
            Ok(())
        }
        Plan::Items(items) => walk_chunks(txn, dbs, items, lo, hi, backwards, visit),
    }
}

fn walk_chunks(
    txn: &RoTxn,
    dbs: &Dbs,
    items: &[ItemPlan],
    lo: Position,
    hi: Position,
    backwards: bool,
    mut visit: impl FnMut(Position) -> Result<ControlFlow<()>>,
) -> Result<()> {
    let (first_chunk, last_chunk) = (format::chunk_of(lo), format::chunk_of(hi));
    let mut chunk = if backwards { last_chunk } else { first_chunk };
    loop {
        let mut next: Option<u32> = None;
        for item in items {
            if let Some(c) = item.next_chunk(txn, dbs, chunk, backwards)? {
                next = Some(match next {
                    None => c,
                    Some(n) if backwards => n.max(c),
                    Some(n) => n.min(c),
                });
            }
        }
        let Some(c) = next else { return Ok(()) };
        if (!backwards && c > last_chunk) || (backwards && c < first_chunk) {
            return Ok(());
        }
        let mut bitmap = RoaringBitmap::new();
        for item in items {
            bitmap |= item.bitmap_at(txn, dbs, c)?;
        }
        let base = format::chunk_base(c);
        let from = lo.saturating_sub(base).min(u32::MAX as u64) as u32;
        let to = (hi - base.min(hi)).min(u32::MAX as u64) as u32;
        if hi >= base {
            let mut visit_offset = |offset: u32| visit(base + offset as u64);
            if backwards {
                for offset in bitmap.range(from..=to).rev() {
                    if visit_offset(offset)?.is_break() {
                        return Ok(());
                    }
                }
            } else {
                for offset in bitmap.range(from..=to) {
                    if visit_offset(offset)?.is_break() {
                        return Ok(());
                    }
                }
            }
        }
        chunk = if backwards {
            match c.checked_sub(1) {
                Some(p) => p,
                None => return Ok(()),
            }
        } else {
            match c.checked_add(1) {
                Some(n) => n,
                None => return Ok(()),
            }
        };
    }
}

impl ItemPlan {
    /// The first chunk at or after (before, when `backwards`) `from` that holds every tag of
    /// this item and at least one of its types.
    fn next_chunk(
        &self,
        txn: &RoTxn,
        dbs: &Dbs,
        from: u32,
        backwards: bool,
    ) -> Result<Option<u32>> {
        let mut candidate = from;
        'search: loop {
            for &tag in &self.tags {
                match seek_chunk(txn, dbs, Kind::Tag, tag, candidate, backwards)? {
                    None => return Ok(None),
                    Some(c) if c != candidate => {
                        candidate = c;
                        continue 'search;
                    }
                    Some(_) => {}
                }
            }
            if self.types.is_empty() {
                return Ok(Some(candidate));
            }
            let mut best: Option<u32> = None;
            for &event_type in &self.types {
                if let Some(c) =
                    seek_chunk(txn, dbs, Kind::EventType, event_type, candidate, backwards)?
                {
                    best = Some(match best {
                        None => c,
                        Some(b) if backwards => b.max(c),
                        Some(b) => b.min(c),
                    });
                }
            }
            match best {
                None => return Ok(None),
                Some(c) if c == candidate => return Ok(Some(candidate)),
                Some(c) => candidate = c,
            }
        }
    }

    /// Offsets in `chunk` of the events this item matches.
    fn bitmap_at(&self, txn: &RoTxn, dbs: &Dbs, chunk: u32) -> Result<RoaringBitmap> {
        let mut result: Option<RoaringBitmap> = None;
        for &tag in &self.tags {
            let Some(bitmap) = load_chunk(txn, dbs, Kind::Tag, tag, chunk)? else {
                return Ok(RoaringBitmap::new());
            };
            result = Some(match result {
                None => bitmap,
                Some(r) => r & bitmap,
            });
        }
        if !self.types.is_empty() {
            let mut any_type = RoaringBitmap::new();
            for &event_type in &self.types {
                if let Some(bitmap) = load_chunk(txn, dbs, Kind::EventType, event_type, chunk)? {
                    any_type |= bitmap;
                }
            }
            result = Some(match result {
                None => any_type,
                Some(r) => r & any_type,
            });
        }
        Ok(result.unwrap_or_default())
    }
}

/// The nearest chunk number of key (`kind`, `id`) at or after `from` (at or before, backwards).
fn seek_chunk(
    txn: &RoTxn,
    dbs: &Dbs,
    kind: Kind,
    id: u32,
    from: u32,
    backwards: bool,
) -> Result<Option<u32>> {
    let key = format::index_key(kind, id, from);
    let found = if backwards {
        dbs.index.get_lower_than_or_equal_to(txn, &key)
    } else {
        dbs.index.get_greater_than_or_equal_to(txn, &key)
    }
    .map_err(storage_error)?;
    Ok(found.and_then(|(k, _)| format::index_key_chunk(k, kind, id)))
}

pub fn load_chunk(
    txn: &RoTxn,
    dbs: &Dbs,
    kind: Kind,
    id: u32,
    chunk: u32,
) -> Result<Option<RoaringBitmap>> {
    CHUNKS_LOADED.with(|n| n.set(n.get() + 1));
    let key = format::index_key(kind, id, chunk);
    match dbs.index.get(txn, &key).map_err(storage_error)? {
        Some(bytes) => RoaringBitmap::deserialize_from(bytes)
            .map(Some)
            .map_err(|e| {
                Error::Corruption(format!(
                    "index chunk {chunk} of {kind:?} #{id} cannot be decoded: {e}"
                ))
            }),
        None => Ok(None),
    }
}
