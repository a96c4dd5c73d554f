//! A full consistency check of a store, run in one read snapshot (so it can run while the
//! server writes): every record decodes and passes its checksum, positions are gapless from 1,
//! and the indexes hold exactly the (type or tag, position) pairs the events do.
//!
//! Index agreement is checked in two halves that together prove equality without holding the
//! whole index in memory: every event is present in the bitmap of its type and of each of its
//! tags (chunks are cached for a bounded span of events), and the total number of positions in all
//! bitmaps equals the number of (event, type-or-tag) pairs. Both halves stop at the indexed head:
//! the events after it (at most `StoreOptions::index_lag`) must not be in the indexes yet.
//!
//! A long log's events are checked in two halves at once, the upper one on a thread of its own
//! in a second read transaction on the same snapshot; the halves' findings are joined in order
//! (the upper half's first position checked against the lower half's last), so the report is
//! the one a single pass gives.

use super::chunk::Offsets;
use super::eval::{decode_chunk, load_chunk_holding};
use super::format::{self, Kind, INDEX_KEY_LEN};
use super::{append_tracking, indexed_head, intern, storage_error, Dbs};
use crate::error::{Error, Result};
use crate::types::Position;
use heed::{RoTxn, WithoutTls};
use std::collections::HashMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};

/// Problems listed in a report at most; the count covers them all.
const MAX_LISTED: usize = 100;
/// Index chunks are cached for this many events at a time, to bound the check's memory.
const CACHE_SPAN: u64 = 65_536;
/// Event types whose ids are kept once looked up, at most.
const MAX_TYPES_KEPT: usize = 10_000;
/// Events a part of the log's check counts before it says so.
const TICK: u64 = 1_000;
/// The caller hears of progress every this many events.
const PROGRESS_EVERY: u64 = 100_000;
/// A log shorter than twice this many events is checked in one pass.
const SPLIT_AT_LEAST: u64 = 10_000;

/// What [`Store::check`](super::Store::check) found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Events examined.
    pub events: u64,
    /// The last position found (0 when empty).
    pub head: Position,
    /// Number of problems found.
    pub problem_count: u64,
    /// The first problems found, in words.
    pub problems: Vec<String>,
}

impl CheckReport {
    pub fn is_ok(&self) -> bool {
        self.problem_count == 0
    }

    fn problem(&mut self, message: String) {
        self.problem_count += 1;
        if self.problems.len() < MAX_LISTED {
            self.problems.push(message);
        }
    }
}

/// A loaded index chunk: base, last position, offsets.
type CachedChunk = (Position, Position, Offsets);

pub(crate) fn check(
    txn: &RoTxn,
    helper: Option<RoTxn<'_, WithoutTls>>,
    dbs: &Dbs,
    mut progress: impl FnMut(u64),
) -> Result<CheckReport> {
    let mut report = CheckReport::default();
    let indexed = match indexed_head(txn, dbs) {
        Ok(indexed) => indexed,
        Err(e) => {
            report.problem(e.message().to_string());
            Position::MAX
        }
    };
    let last = match dbs.events.last(txn).map_err(storage_error)? {
        Some((key, _)) => format::decode_position_key(key).ok(),
        None => None,
    };
    let checked = AtomicU64::new(0);
    let mut reported = 0;
    let mut tick = || {
        let total = checked.fetch_add(TICK, Ordering::Relaxed) + TICK;
        if total / PROGRESS_EVERY > reported / PROGRESS_EVERY {
            reported = total;
            progress(total / PROGRESS_EVERY * PROGRESS_EVERY);
        }
    };
    // With a second transaction on the same snapshot, the upper half of the log is checked on
    // a thread of its own: both halves decode and look up alike, so the check takes about half
    // as long. The lower half checks from position 1; the upper half's first position is
    // checked against the lower half's end below, as one pass would have.
    let parts = match (helper, last) {
        (Some(helper), Some(last)) if last >= 2 * SPLIT_AT_LEAST => {
            let split = format::position_key(last / 2 + 1);
            let (lower, upper) = std::thread::scope(|scope| {
                let checked = &checked;
                let upper = scope.spawn(move || {
                    let range = (Bound::Included(&split[..]), Bound::Unbounded);
                    let tick = || {
                        checked.fetch_add(TICK, Ordering::Relaxed);
                    };
                    check_log(&helper, dbs, range, None, indexed, tick)
                });
                let range = (Bound::Unbounded, Bound::Excluded(&split[..]));
                let lower = check_log(txn, dbs, range, Some(1), indexed, &mut tick);
                let upper = upper.join().unwrap_or_else(|_| {
                    Err(Error::Internal(
                        "the check of the upper half of the log failed unexpectedly".into(),
                    ))
                });
                (lower, upper)
            });
            vec![lower?, upper?]
        }
        _ => {
            let range = (Bound::Unbounded, Bound::Unbounded);
            vec![check_log(txn, dbs, range, Some(1), indexed, &mut tick)?]
        }
    };
    let mut memberships = 0;
    let mut expected = 1;
    for (i, part) in parts.into_iter().enumerate() {
        // The first part checked its own first position; a later one's follows the parts before.
        if let Some(first) = part.first.filter(|&first| i > 0 && first != expected) {
            report.problem(format!(
                "positions are not gapless: expected {expected}, found {first}"
            ));
        }
        report.events += part.report.events;
        if part.report.events > 0 {
            report.head = part.report.head;
            expected = part.report.head.saturating_add(1);
        }
        report.problem_count += part.report.problem_count;
        let room = MAX_LISTED.saturating_sub(report.problems.len());
        report
            .problems
            .extend(part.report.problems.into_iter().take(room));
        memberships += part.memberships;
    }
    let mut indexed_positions: u64 = 0;
    let mut previous_full: Option<(u8, u32)> = None;
    for entry in dbs.index.iter(txn).map_err(storage_error)? {
        let (key, value) = entry.map_err(storage_error)?;
        if key.len() != INDEX_KEY_LEN {
            report.problem(format!(
                "index key of {} bytes, expected {INDEX_KEY_LEN}",
                key.len()
            ));
            continue;
        }
        let id = u32::from_be_bytes([key[1], key[2], key[3], key[4]]);
        let (base, bytes) = if let Some((kind_byte, id)) = format::open_chunk_key_parts(key) {
            let Some(kind) = Kind::from_byte(kind_byte) else {
                report.problem(format!("an open index chunk of unknown kind {kind_byte}"));
                continue;
            };
            match format::decode_open_chunk(kind, id, value) {
                Ok(open) => {
                    check_full_chunks_before(txn, dbs, kind, id, &open, &mut report)?;
                    (open.base, open.bytes)
                }
                Err(e) => {
                    report.problem(e.message().to_string());
                    continue;
                }
            }
        } else {
            let key_of = (key[0], id);
            if previous_full != Some(key_of) {
                previous_full = Some(key_of);
                let open = Kind::from_byte(key[0]).map(|kind| format::open_chunk_key(kind, id));
                let has_open = match open {
                    Some(open) => dbs.index.get(txn, &open).map_err(storage_error)?.is_some(),
                    None => false,
                };
                if !has_open {
                    report.problem(format!(
                        "the index key {}/#{id} has full chunks but no open chunk",
                        key[0]
                    ));
                }
            }
            let mut base = [0u8; 8];
            base.copy_from_slice(&key[5..13]);
            (Position::from_be_bytes(base), value)
        };
        match decode_chunk(Kind::Tag, id, base, bytes) {
            Ok(offsets) => {
                indexed_positions += offsets.len();
                if !offsets.contains(0) {
                    report.problem(format!(
                        "the index chunk at {base} of key #{id} does not hold its own base"
                    ));
                }
                if let Some(max) = offsets.max() {
                    let last = base + max as u64;
                    if last > report.head.min(indexed) {
                        report.problem(format!(
                            "an index entry names position {last}, beyond the last indexed \
                             event {}",
                            report.head.min(indexed)
                        ));
                    }
                }
            }
            Err(e) => report.problem(e.message().to_string()),
        }
    }
    if indexed != Position::MAX && indexed > report.head {
        report.problem(format!(
            "the indexed head {indexed} lies beyond the last event {}",
            report.head
        ));
    }
    if indexed_positions != memberships {
        report.problem(format!(
            "the indexes hold {indexed_positions} positions but the events name {memberships} (type, tag) memberships"
        ));
    }
    Ok(report)
}

/// What the check of a part of the log found.
#[derive(Default)]
struct LogPart {
    /// Its events, its last position, its problems.
    report: CheckReport,
    /// The first position in it.
    first: Option<Position>,
    /// (type or tag, position) pairs of its indexed events.
    memberships: u64,
}

/// Checks the events whose keys lie in `range`: each record, gaplessness from the first
/// (which must be `expected`, when given), and each indexed event's presence in the indexes.
/// `tick` is called every [`TICK`] events.
fn check_log(
    txn: &RoTxn,
    dbs: &Dbs,
    range: (Bound<&[u8]>, Bound<&[u8]>),
    mut expected: Option<Position>,
    indexed: Position,
    mut tick: impl FnMut(),
) -> Result<LogPart> {
    let mut part = LogPart::default();
    let report = &mut part.report;
    let mut cache: HashMap<(Kind, u32), Option<CachedChunk>> = HashMap::new();
    // Event types are few, and every event names one: each is looked up once.
    let mut type_ids: HashMap<String, Option<u32>> = HashMap::new();
    for entry in dbs.events.range(txn, &range).map_err(storage_error)? {
        let (key, value) = entry.map_err(storage_error)?;
        let position = match format::decode_position_key(key) {
            Ok(p) => p,
            Err(e) => {
                report.problem(e.message().to_string());
                continue;
            }
        };
        report.events += 1;
        report.head = position;
        part.first.get_or_insert(position);
        if let Some(expected) = expected.filter(|&e| e != position) {
            report.problem(format!(
                "positions are not gapless: expected {expected}, found {position}"
            ));
        }
        expected = Some(position.saturating_add(1));
        if report.events % TICK == 0 {
            tick();
        }
        let decoded = match format::decode_event_ref(position, value) {
            Ok(d) => d,
            Err(e) => {
                report.problem(e.message().to_string());
                continue;
            }
        };
        if decoded.tracked {
            if let Err(e) = append_tracking(txn, dbs, position) {
                report.problem(e.message().to_string());
            }
        }
        if report.events % CACHE_SPAN == 0 {
            cache.clear();
        }
        let mut event = decoded.event;
        event.tags.sort_unstable();
        event.tags.dedup();
        let keys = std::iter::once((Kind::EventType, event.event_type))
            .chain(event.tags.iter().map(|&t| (Kind::Tag, t)));
        for (kind, name) in keys {
            if position <= indexed {
                part.memberships += 1;
            }
            let kept = match kind {
                Kind::EventType => type_ids.get(name).copied(),
                _ => None,
            };
            let id = match kept {
                Some(id) => id,
                None => {
                    let id = intern::lookup(txn, dbs, kind, name)?;
                    if kind == Kind::EventType && type_ids.len() < MAX_TYPES_KEPT {
                        type_ids.insert(name.to_string(), id);
                    }
                    id
                }
            };
            let Some(id) = id else {
                report.problem(format!(
                    "event at position {position}: {kind:?} {:?} has no intern entry",
                    short(name)
                ));
                continue;
            };
            if position > indexed {
                // Not indexed yet: an entry for it would be counted below and reported there.
                continue;
            }
            let covered = matches!(cache.get(&(kind, id)), Some(Some((base, last, _))) if *base <= position && position <= *last);
            if !covered {
                match load_chunk_holding(txn, dbs, kind, id, position) {
                    Ok(Some((base, offsets))) => {
                        let last = base + offsets.max().unwrap_or(0) as u64;
                        cache.insert((kind, id), Some((base, last, offsets)));
                    }
                    Ok(None) => {
                        cache.insert((kind, id), None);
                    }
                    Err(e) => {
                        report.problem(e.message().to_string());
                        cache.insert((kind, id), None);
                    }
                }
            }
            let present = match cache.get(&(kind, id)) {
                Some(Some((base, _, offsets))) => position
                    .checked_sub(*base)
                    .and_then(|offset| u32::try_from(offset).ok())
                    .is_some_and(|offset| offsets.contains(offset)),
                _ => false,
            };
            if !present {
                report.problem(format!(
                    "event at position {position} is missing from the index of {kind:?} {:?}",
                    short(name)
                ));
            }
        }
    }
    Ok(part)
}

/// Checks that the full chunks of a key all come before its open chunk, and that the open
/// chunk names the first of them (or itself, without any) as the key's first position.
fn check_full_chunks_before(
    txn: &RoTxn,
    dbs: &Dbs,
    kind: Kind,
    id: u32,
    open: &format::OpenChunk<'_>,
    report: &mut CheckReport,
) -> Result<()> {
    let base_of = |found: Option<(&[u8], &[u8])>| {
        found.and_then(|(k, _)| format::index_key_base(k, kind, id))
    };
    let last = dbs
        .index
        .get_lower_than_or_equal_to(txn, &format::index_key(kind, id, Position::MAX))
        .map_err(storage_error)?;
    let first = dbs
        .index
        .get_greater_than_or_equal_to(txn, &format::index_key(kind, id, 0))
        .map_err(storage_error)?;
    let (last, first) = (base_of(last), base_of(first).unwrap_or(open.base));
    if last.is_some_and(|last| last >= open.base) || first != open.first {
        report.problem(format!(
            "the open index chunk of {kind:?} #{id} (base {}, first position {}) disagrees with \
             the key's full chunks (first base {first}, last base {last:?})",
            open.base, open.first
        ));
    }
    Ok(())
}

fn short(s: &str) -> &str {
    match s.char_indices().nth(80) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
