//! The query evaluator, used by reads, subscriptions and append conditions alike.
//!
//! Each index key (type or tag) is a list of positions stored as chunks (see
//! `format::index_key` and `chunk`), each decoded into a roaring bitmap when a cursor enters
//! it. Evaluation is a leapfrog join over per-key cursors: an item's next match at or after a
//! position is the first position every one of its tags holds and one of its types holds; the
//! query's next match is the nearest of its items'. A cursor keeps the
//! chunk it last loaded, so walking a key costs one chunk load per chunk it actually enters,
//! and the walk stops as soon as the caller has enough positions.
//!
//! The indexes cover the log up to the indexed head (see `StoreOptions::index_lag`); the few
//! events after it are matched on their type and tag ids as the writer keeps them in memory
//! (`recent`), or, when a snapshot is older than that window, by scanning their records.

use super::chunk::{self, Offsets};
use super::format::{self, Kind};
use super::recent::Recent;
use super::{indexed_head, intern, storage_error, Dbs};
use crate::error::{Error, Result};
use crate::types::{Position, Query, QueryItem};
use heed::RoTxn;
use roaring::RoaringBitmap;
use std::cell::Cell;
use std::ops::ControlFlow;

thread_local! {
    /// Index chunk loads on this thread; see [`super::debug_counters`].
    pub(crate) static CHUNKS_LOADED: Cell<u64> = const { Cell::new(0) };
    /// Index lookups (B-tree descents) of query walks on this thread; see
    /// [`super::debug_index_lookups`].
    pub(crate) static INDEX_LOOKUPS: Cell<u64> = const { Cell::new(0) };
}

fn count_index_lookup() {
    INDEX_LOOKUPS.with(|n| n.set(n.get() + 1));
}

/// A query resolved against the intern table.
pub enum Plan<'q> {
    /// Some item has no types and no tags: every event matches.
    All,
    /// Items that can match something (an item naming an unknown tag cannot: every event's
    /// type and tags are interned when it is written).
    Items(Vec<ItemPlan<'q>>),
}

pub struct ItemPlan<'q> {
    tags: Vec<u32>,
    types: Vec<u32>,
    /// The item as asked, matched against the events past the indexed head.
    item: &'q QueryItem,
}

pub fn plan<'q>(txn: &RoTxn, dbs: &Dbs, query: &'q Query) -> Result<Plan<'q>> {
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
        items.push(ItemPlan { tags, types, item });
    }
    Ok(Plan::Items(items))
}

/// Calls `visit` with each matching position in `lo..=hi`, ascending or (when `backwards`)
/// descending, until it returns `Break` or the range is exhausted. When the walk scans the
/// events themselves (a query matching everything, or the events past the indexed head when
/// `recent` does not hold them), `visit` also gets the record's bytes. `hi` must not lie beyond
/// the last event of `txn`'s snapshot.
#[allow(clippy::too_many_arguments)]
pub fn for_each_match(
    txn: &RoTxn,
    dbs: &Dbs,
    recent: &Recent,
    plan: &Plan,
    lo: Position,
    hi: Position,
    backwards: bool,
    mut visit: impl FnMut(Position, Option<&[u8]>) -> Result<ControlFlow<()>>,
) -> Result<()> {
    if lo > hi {
        return Ok(());
    }
    match plan {
        Plan::All => scan(txn, dbs, lo, hi, backwards, |position, record| {
            visit(position, Some(record))
        })
        .map(drop),
        Plan::Items(items) => {
            let indexed = indexed_head(txn, dbs)?;
            let (index_lo, index_hi) = (lo, hi.min(indexed));
            // With no item left, nothing past the index can match either: no scan.
            let (tail_lo, tail_hi) = if items.is_empty() {
                (1, 0)
            } else {
                (lo.max(indexed.saturating_add(1)), hi)
            };
            let tail = Unindexed {
                txn,
                dbs,
                recent,
                items,
                lo: tail_lo,
                hi: tail_hi,
                backwards,
            };
            if backwards {
                if tail.visit(&mut visit)?.is_break() {
                    return Ok(());
                }
                walk_index(txn, dbs, items, index_lo, index_hi, true, &mut visit).map(drop)
            } else {
                if walk_index(txn, dbs, items, index_lo, index_hi, false, &mut visit)?.is_break() {
                    return Ok(());
                }
                tail.visit(&mut visit).map(drop)
            }
        }
    }
}

/// The events past the indexed head that a walk visits.
struct Unindexed<'a, 'e, 'q> {
    txn: &'a RoTxn<'e>,
    dbs: &'a Dbs,
    recent: &'a Recent,
    items: &'a [ItemPlan<'q>],
    lo: Position,
    hi: Position,
    backwards: bool,
}

impl Unindexed<'_, '_, '_> {
    /// Calls `visit` with each position some item matches, in order, until it returns `Break`:
    /// matched on the keys the writer kept when they cover the range, else on the records.
    fn visit(
        &self,
        visit: &mut impl FnMut(Position, Option<&[u8]>) -> Result<ControlFlow<()>>,
    ) -> Result<ControlFlow<()>> {
        let (items, backwards) = (self.items, self.backwards);
        let kept = self.recent.matching(
            self.lo,
            self.hi,
            items
                .iter()
                .map(|p| (p.types.as_slice(), p.tags.as_slice())),
        );
        if let Some(mut positions) = kept {
            if backwards {
                positions.reverse();
            }
            for position in positions {
                if visit(position, None)?.is_break() {
                    return Ok(ControlFlow::Break(()));
                }
            }
            return Ok(ControlFlow::Continue(()));
        }
        scan(
            self.txn,
            self.dbs,
            self.lo,
            self.hi,
            backwards,
            |position, record| {
                let (event_type, tags) = format::decode_keys(position, record)?;
                if items.iter().any(|p| p.item.matches_keys(event_type, &tags)) {
                    visit(position, Some(record))
                } else {
                    Ok(ControlFlow::Continue(()))
                }
            },
        )
    }
}

/// Calls `step` with each stored event in `lo..=hi`, in order, until it returns `Break`.
pub(crate) fn scan(
    txn: &RoTxn,
    dbs: &Dbs,
    lo: Position,
    hi: Position,
    backwards: bool,
    mut step: impl FnMut(Position, &[u8]) -> Result<ControlFlow<()>>,
) -> Result<ControlFlow<()>> {
    if lo > hi {
        return Ok(ControlFlow::Continue(()));
    }
    let lo_key = format::position_key(lo);
    let hi_key = format::position_key(hi);
    let range = (
        std::ops::Bound::Included(lo_key.as_slice()),
        std::ops::Bound::Included(hi_key.as_slice()),
    );
    // The log is gapless from 1: a scan forwards starts at `lo` and every step moves by exactly
    // one. Anything else is damaged page structure leading the cursor astray.
    let mut expected = (!backwards).then_some(lo.max(1));
    let mut each = |key: &[u8], record: &[u8]| -> Result<ControlFlow<()>> {
        let position = format::decode_position_key(key)?;
        if let Some(expected) = expected.filter(|&e| e != position) {
            return Err(format::corrupt(format!(
                "the log's page structure is damaged: a scan expected position {expected} \
                 next but found {position}"
            )));
        }
        expected = if backwards {
            position.checked_sub(1)
        } else {
            position.checked_add(1)
        };
        step(position, record)
    };
    if backwards {
        for entry in dbs.events.rev_range(txn, &range).map_err(storage_error)? {
            let (key, record) = entry.map_err(storage_error)?;
            if each(key, record)?.is_break() {
                return Ok(ControlFlow::Break(()));
            }
        }
    } else {
        for entry in dbs.events.range(txn, &range).map_err(storage_error)? {
            let (key, record) = entry.map_err(storage_error)?;
            if each(key, record)?.is_break() {
                return Ok(ControlFlow::Break(()));
            }
        }
    }
    Ok(ControlFlow::Continue(()))
}

/// The leapfrog join over the indexes: calls `visit` with each position in `lo..=hi` some item
/// matches, in order, until it returns `Break`.
fn walk_index(
    txn: &RoTxn,
    dbs: &Dbs,
    items: &[ItemPlan<'_>],
    lo: Position,
    hi: Position,
    backwards: bool,
    visit: &mut impl FnMut(Position, Option<&[u8]>) -> Result<ControlFlow<()>>,
) -> Result<ControlFlow<()>> {
    const DONE: Result<ControlFlow<()>> = Ok(ControlFlow::Continue(()));
    if lo > hi {
        return DONE;
    }
    let mut walk = Walk {
        txn,
        dbs,
        backwards,
    };
    let mut cursors: Vec<ItemCursors> = items.iter().map(ItemCursors::new).collect();
    let start = if backwards { hi } else { lo };
    let mut nexts = Vec::with_capacity(cursors.len());
    for item in &mut cursors {
        nexts.push(item.next(&mut walk, start)?);
    }
    loop {
        let best = if backwards {
            nexts.iter().flatten().max()
        } else {
            nexts.iter().flatten().min()
        };
        let Some(&position) = best else {
            return DONE;
        };
        if position < lo || position > hi {
            return DONE;
        }
        if visit(position, None)?.is_break() {
            return Ok(ControlFlow::Break(()));
        }
        let following = if backwards {
            match position.checked_sub(1) {
                Some(p) if p >= lo => p,
                _ => return DONE,
            }
        } else {
            position + 1
        };
        for (item, next) in cursors.iter_mut().zip(nexts.iter_mut()) {
            if *next == Some(position) {
                *next = item.next(&mut walk, following)?;
            }
        }
    }
}

/// What every cursor of one walk shares.
struct Walk<'a, 'e> {
    txn: &'a RoTxn<'e>,
    dbs: &'a Dbs,
    backwards: bool,
}

struct ItemCursors {
    tags: Vec<KeyCursor>,
    types: Vec<KeyCursor>,
}

impl ItemCursors {
    fn new(plan: &ItemPlan<'_>) -> Self {
        ItemCursors {
            tags: plan
                .tags
                .iter()
                .map(|&id| KeyCursor::new(Kind::Tag, id))
                .collect(),
            types: plan
                .types
                .iter()
                .map(|&id| KeyCursor::new(Kind::EventType, id))
                .collect(),
        }
    }

    /// The first position at or after `from` (at or before, backwards) held by every tag of
    /// the item and by one of its types.
    fn next(&mut self, walk: &mut Walk<'_, '_>, from: Position) -> Result<Option<Position>> {
        let mut candidate = from;
        'search: loop {
            for tag in &mut self.tags {
                match tag.seek(walk, candidate)? {
                    None => return Ok(None),
                    Some(p) if p != candidate => {
                        candidate = p;
                        continue 'search;
                    }
                    Some(_) => {}
                }
            }
            if self.types.is_empty() {
                return Ok(Some(candidate));
            }
            let mut best: Option<Position> = None;
            for event_type in &mut self.types {
                if let Some(p) = event_type.seek(walk, candidate)? {
                    best = Some(match best {
                        None => p,
                        Some(b) if walk.backwards => b.max(p),
                        Some(b) => b.min(p),
                    });
                }
            }
            match best {
                None => return Ok(None),
                Some(p) if p == candidate => return Ok(Some(candidate)),
                Some(p) => candidate = p,
            }
        }
    }
}

/// A loaded chunk: its base, its last position, and its offsets.
struct Chunk {
    base: Position,
    last: Position,
    offsets: Offsets,
}

/// Walks the positions of one index key, keeping the chunk it last loaded.
struct KeyCursor {
    kind: Kind,
    id: u32,
    chunk: Option<Chunk>,
    /// The key's open chunk's base and the key's first position, once looked up (`None`
    /// inside: the key has no chunks).
    open: Option<Option<(Position, Position)>>,
}

impl KeyCursor {
    fn new(kind: Kind, id: u32) -> Self {
        KeyCursor {
            kind,
            id,
            chunk: None,
            open: None,
        }
    }

    /// The key's first position at or after `p` (at or before, backwards).
    fn seek(&mut self, walk: &mut Walk<'_, '_>, p: Position) -> Result<Option<Position>> {
        if let Some(chunk) = &self.chunk {
            if chunk.base <= p && p <= chunk.last {
                return Ok(chunk.find(p, walk.backwards));
            }
        }
        let open = match self.open {
            Some(open) => open,
            None => {
                // The open chunk comes with its header. When the key has no other (most tags)
                // any walk through the key enters it, so it is decoded at once, saving a second
                // lookup.
                let stored = load_open_chunk(walk.txn, walk.dbs, self.kind, self.id)?;
                let open = stored.map(|o| (o.base, o.first));
                if let Some(o) = stored.filter(|o| o.first == o.base) {
                    self.chunk = Some(Chunk::decode(self.kind, self.id, o.base, o.bytes)?);
                }
                self.open = Some(open);
                if let Some(chunk) = &self.chunk {
                    if chunk.base <= p && p <= chunk.last {
                        return Ok(chunk.find(p, walk.backwards));
                    }
                }
                open
            }
        };
        let Some((open_base, first)) = open else {
            return Ok(None);
        };
        if p >= open_base {
            // The open chunk is the key's newest: it holds the answer, or there is none.
            let chunk = match self.chunk.take() {
                Some(cached) if cached.base == open_base => cached,
                _ => {
                    let stored = load_open_chunk(walk.txn, walk.dbs, self.kind, self.id)?;
                    let stored = stored.filter(|o| o.base == open_base).ok_or_else(|| {
                        Error::Internal(format!(
                            "the open index chunk of {:?} #{} moved within a transaction",
                            self.kind, self.id
                        ))
                    })?;
                    Chunk::decode(self.kind, self.id, open_base, stored.bytes)?
                }
            };
            let hit = chunk.find(p, walk.backwards);
            self.chunk = Some(chunk);
            return Ok(hit);
        }
        // Before the open chunk: at or before the key's first position, or in a full chunk
        // (there are some when the first position is not the open chunk's base).
        if p <= first {
            return Ok((p == first || !walk.backwards).then_some(first));
        }
        let key = format::index_key(self.kind, self.id, p);
        // Forwards from just past the chunk in hand (the walk's usual step), no chunk starting
        // before `p` can hold it: the answer is the base of the first chunk at or after it, one
        // lookup where the general case below takes two. That chunk is loaded when the walk
        // moves into it, as below.
        let just_past = matches!(&self.chunk, Some(chunk) if chunk.last.checked_add(1) == Some(p));
        if !walk.backwards && just_past {
            return Ok(Some(self.next_base(walk, &key, true)?.unwrap_or(open_base)));
        }
        // The full chunk that would hold `p`: the last one starting at or before it.
        count_index_lookup();
        let found = walk
            .dbs
            .index
            .get_lower_than_or_equal_to(walk.txn, &key)
            .map_err(storage_error)?;
        if let Some((k, v)) = found {
            if let Some(base) = format::index_key_base(k, self.kind, self.id) {
                let chunk = match self.chunk.take() {
                    Some(cached) if cached.base == base => cached,
                    _ => Chunk::decode(self.kind, self.id, base, v)?,
                };
                let hit = chunk.find(p, walk.backwards);
                self.chunk = Some(chunk);
                if hit.is_some() || walk.backwards {
                    return Ok(hit);
                }
            } else if walk.backwards {
                return Ok(None);
            }
        } else if walk.backwards {
            return Ok(None);
        }
        // Forward past the end of that chunk: the next chunk's base is its first position, and
        // after the last full chunk comes the open one.
        Ok(Some(
            self.next_base(walk, &key, false)?.unwrap_or(open_base),
        ))
    }

    /// The base of the key's first full chunk after `key` (or at it, when `inclusive`): that
    /// chunk's first position, if there is one.
    fn next_base(
        &self,
        walk: &Walk<'_, '_>,
        key: &[u8],
        inclusive: bool,
    ) -> Result<Option<Position>> {
        count_index_lookup();
        let index = walk.dbs.index;
        let next = if inclusive {
            index.get_greater_than_or_equal_to(walk.txn, key)
        } else {
            index.get_greater_than(walk.txn, key)
        };
        let next = next.map_err(storage_error)?;
        Ok(next.and_then(|(k, _)| format::index_key_base(k, self.kind, self.id)))
    }
}

impl Chunk {
    fn decode(kind: Kind, id: u32, base: Position, bytes: &[u8]) -> Result<Chunk> {
        CHUNKS_LOADED.with(|n| n.set(n.get() + 1));
        let offsets = decode_chunk(kind, id, base, bytes)?;
        let last = base + offsets.max().unwrap_or(0) as u64;
        Ok(Chunk {
            base,
            last,
            offsets,
        })
    }

    /// Nearest position to `p` in the chunk, at or after it (at or before, backwards).
    fn find(&self, p: Position, backwards: bool) -> Option<Position> {
        if p < self.base {
            return if backwards {
                None
            } else {
                self.offsets.min().map(|o| self.base + o as u64)
            };
        }
        let Ok(offset) = u32::try_from(p - self.base) else {
            return if backwards {
                self.offsets.max().map(|o| self.base + o as u64)
            } else {
                None
            };
        };
        let found = if backwards {
            self.offsets.at_or_before(offset)
        } else {
            self.offsets.at_or_after(offset)
        };
        found.map(|o| self.base + o as u64)
    }
}

pub fn decode_bitmap(kind: Kind, id: u32, base: Position, bytes: &[u8]) -> Result<RoaringBitmap> {
    chunk::decode(bytes).map_err(|e| undecodable(kind, id, base, e))
}

/// Decodes a chunk for reading (see [`Offsets`]).
pub fn decode_chunk(kind: Kind, id: u32, base: Position, bytes: &[u8]) -> Result<Offsets> {
    chunk::decode_offsets(bytes).map_err(|e| undecodable(kind, id, base, e))
}

fn undecodable(kind: Kind, id: u32, base: Position, e: String) -> Error {
    Error::Corruption(format!(
        "index chunk at {base} of {kind:?} #{id} cannot be decoded: {e}"
    ))
}

/// The open (newest) chunk of a key, as stored, if the key has any chunks.
pub fn load_open_chunk<'t>(
    txn: &'t RoTxn,
    dbs: &Dbs,
    kind: Kind,
    id: u32,
) -> Result<Option<format::OpenChunk<'t>>> {
    count_index_lookup();
    let key = format::open_chunk_key(kind, id);
    match dbs.index.get(txn, &key).map_err(storage_error)? {
        Some(value) => Ok(Some(format::decode_open_chunk(kind, id, value)?)),
        None => Ok(None),
    }
}

/// The chunk of a key that would hold `position`: (base, offsets): the open chunk, or the last
/// full chunk starting at or before `position`.
pub fn load_chunk_holding(
    txn: &RoTxn,
    dbs: &Dbs,
    kind: Kind,
    id: u32,
    position: Position,
) -> Result<Option<(Position, Offsets)>> {
    let Some(open) = load_open_chunk(txn, dbs, kind, id)? else {
        return Ok(None);
    };
    if position >= open.base {
        let offsets = decode_chunk(kind, id, open.base, open.bytes)?;
        return Ok(Some((open.base, offsets)));
    }
    let key = format::index_key(kind, id, position);
    let found = dbs
        .index
        .get_lower_than_or_equal_to(txn, &key)
        .map_err(storage_error)?;
    match found.and_then(|(k, v)| format::index_key_base(k, kind, id).map(|base| (base, v))) {
        Some((base, bytes)) => Ok(Some((base, decode_chunk(kind, id, base, bytes)?))),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    //! The events past the indexed head are matched on the keys the writer keeps (`recent`)
    //! or, for a snapshot older than that window, by scanning their records: both must give
    //! the same positions.
    use super::super::{Store, StoreOptions};
    use super::*;
    use crate::types::{AppendRequest, Event};

    fn matches(
        store: &Store,
        recent: &Recent,
        query: &Query,
        lo: u64,
        hi: u64,
        back: bool,
    ) -> Vec<u64> {
        let shared = &store.shared;
        let txn = shared.env.read_txn().expect("read txn");
        let plan = plan(&txn, &shared.dbs, query).expect("plan");
        let mut found = Vec::new();
        for_each_match(&txn, &shared.dbs, recent, &plan, lo, hi, back, |p, _| {
            found.push(p);
            Ok(ControlFlow::Continue(()))
        })
        .expect("evaluate");
        found
    }

    #[test]
    fn the_kept_keys_and_a_scan_of_the_records_match_the_same_events() {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = StoreOptions {
            index_lag: 40,
            ..Default::default()
        };
        let store = Store::open_with(dir.path().join("db"), options).expect("open");
        let types = ["A", "B", "C"];
        let tags = ["t0", "t1", "t2", "t3", "t4", "t5"];
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let mut log: Vec<Event> = Vec::new();
        for _ in 0..130 {
            let events: Vec<Event> = (0..1 + next(3))
                .map(|_| {
                    let event_tags: Vec<&str> = (0..next(4)).map(|_| tags[next(6)]).collect();
                    Event::new(types[next(3)], event_tags, vec![])
                })
                .collect();
            log.extend(events.iter().cloned());
            let request = AppendRequest {
                events,
                ..Default::default()
            };
            store.append(request).expect("append");
        }
        let head = log.len() as u64;
        let kept = store.shared.recent.len() as u64;
        assert!(kept > 0, "the writer keeps the keys past the indexed head");
        let scan_only = Recent::default();
        let none = Vec::<String>::new;
        let queries = [
            Query::from_items([QueryItem::new(["A"], none())]),
            Query::from_items([QueryItem::new(["A", "B"], none())]),
            Query::from_items([QueryItem::new(none(), ["t1"])]),
            Query::from_items([QueryItem::new(["B", "C"], ["t2"])]),
            Query::from_items([QueryItem::new(none(), ["t2", "t3"])]),
            Query::from_items([
                QueryItem::new(["A", "Z"], ["t4"]),
                QueryItem::new(["C"], ["t0"]),
            ]),
            Query::from_items([QueryItem::new(none(), ["t5", "unknown"])]),
        ];
        for query in &queries {
            for (lo, hi) in [
                (1, head),
                (head - kept / 2, head),
                (head - kept - 3, head - 2),
            ] {
                for back in [false, true] {
                    let mut expected: Vec<u64> = (lo..=hi)
                        .filter(|&p| query.matches(&log[p as usize - 1]))
                        .collect();
                    if back {
                        expected.reverse();
                    }
                    let context = format!("{query:?} in {lo}..={hi}, backwards {back}");
                    let kept_keys = matches(&store, &store.shared.recent, query, lo, hi, back);
                    assert_eq!(kept_keys, expected, "kept keys: {context}");
                    let scanned = matches(&store, &scan_only, query, lo, hi, back);
                    assert_eq!(scanned, expected, "scan: {context}");
                }
            }
        }
    }
}
