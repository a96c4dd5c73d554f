//! Helpers shared by the integration tests, and a naive in-memory model of DESIGN.md's
//! semantics that the engine is compared against.
#![allow(dead_code)]

use std::collections::HashMap;
use umadb_core::{
    AppendCondition, AppendRequest, Error, Event, Position, Query, QueryItem, ReadRequest,
    SequencedEvent, Store, TrackingInfo, MAX_STRING_LEN,
};

/// A fresh store in a temporary directory (kept alive by the returned guard).
pub fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path().join("db")).expect("open store");
    (dir, store)
}

pub fn event(event_type: &str, tags: &[&str]) -> Event {
    Event::new(
        event_type,
        tags.iter().copied(),
        event_type.as_bytes().to_vec(),
    )
}

pub fn item(types: &[&str], tags: &[&str]) -> QueryItem {
    QueryItem::new(types.iter().copied(), tags.iter().copied())
}

pub fn query(items: Vec<QueryItem>) -> Query {
    Query::from_items(items)
}

pub fn append(store: &Store, events: Vec<Event>) -> Position {
    store
        .append(AppendRequest {
            events,
            ..Default::default()
        })
        .expect("append")
}

pub fn conditional(events: Vec<Event>, fail_if: Query, after: Option<Position>) -> AppendRequest {
    AppendRequest {
        events,
        condition: Some(AppendCondition {
            fail_if_events_match: fail_if,
            after,
        }),
        tracking_info: None,
    }
}

pub fn tracking(source: &str, position: Position) -> TrackingInfo {
    TrackingInfo {
        source: source.into(),
        position,
    }
}

pub fn read(
    store: &Store,
    query: Query,
    start: Option<Position>,
    backwards: bool,
    limit: Option<u64>,
) -> (Vec<Position>, Option<Position>) {
    let (events, head) = store
        .read_all(ReadRequest {
            query,
            start,
            backwards,
            limit,
        })
        .expect("read");
    (events.iter().map(|e| e.position).collect(), head)
}

pub fn all_positions(store: &Store) -> Vec<Position> {
    read(store, Query::all(), None, false, None).0
}

/// The variant of an error, for comparing outcomes without their messages.
pub fn kind(e: &Error) -> &'static str {
    match e {
        Error::Integrity(_) => "Integrity",
        Error::InvalidArgument(_) => "InvalidArgument",
        Error::Authentication(_) => "Authentication",
        Error::Corruption(_) => "Corruption",
        Error::Io(_) => "Io",
        Error::Serialization(_) => "Serialization",
        Error::Transport(_) => "Transport",
        Error::Cancelled(_) => "Cancelled",
        Error::Internal(_) => "Internal",
    }
}

/// DESIGN.md's semantics, implemented as literally and naively as possible.
#[derive(Default, Clone)]
pub struct Model {
    /// Event at position `i + 1`, with the tracking info of the append that wrote it.
    pub events: Vec<(Event, Option<TrackingInfo>)>,
    pub tracking: HashMap<String, Position>,
}

fn too_long(s: &str) -> bool {
    s.len() > MAX_STRING_LEN
}

fn item_matches(item: &QueryItem, event: &Event) -> bool {
    let type_ok = item.types.is_empty() || item.types.contains(&event.event_type);
    let tags_ok = item.tags.iter().all(|t| event.tags.contains(t));
    type_ok && tags_ok
}

pub fn model_matches(query: &Query, event: &Event) -> bool {
    query.items.is_empty() || query.items.iter().any(|i| item_matches(i, event))
}

impl Model {
    pub fn head(&self) -> Option<Position> {
        (!self.events.is_empty()).then_some(self.events.len() as Position)
    }

    pub fn sequenced(&self, position: Position) -> SequencedEvent {
        let (event, tracking_info) = self.events[(position - 1) as usize].clone();
        SequencedEvent {
            position,
            event,
            tracking_info,
        }
    }

    /// Ok(position) or the kind of error.
    pub fn append(&mut self, request: &AppendRequest) -> Result<Position, &'static str> {
        let invalid = request.events.iter().any(|e| {
            too_long(&e.event_type)
                || e.tags.iter().any(|t| too_long(t))
                || e.metadata.iter().any(|(k, v)| too_long(k) || too_long(v))
        }) || request.condition.as_ref().is_some_and(|c| {
            c.fail_if_events_match
                .items
                .iter()
                .any(|i| i.types.iter().chain(&i.tags).any(|s| too_long(s)))
        }) || request
            .tracking_info
            .as_ref()
            .is_some_and(|t| too_long(&t.source));
        if invalid {
            return Err("InvalidArgument");
        }
        if let Some(condition) = &request.condition {
            let after = condition.after.unwrap_or(0);
            let matching: Vec<Position> = (after + 1..=self.events.len() as Position)
                .filter(|&p| {
                    model_matches(
                        &condition.fail_if_events_match,
                        &self.events[(p - 1) as usize].0,
                    )
                })
                .collect();
            if !matching.is_empty() {
                let n = request.events.len();
                let all_keyed = n > 0
                    && request
                        .events
                        .iter()
                        .all(|e| e.uuid.is_some_and(|u| !u.is_nil()));
                if all_keyed
                    && matching.len() >= n
                    && matching[..n]
                        .iter()
                        .zip(&request.events)
                        .all(|(&p, e)| self.events[(p - 1) as usize].0.uuid == e.uuid)
                {
                    return Ok(matching[n - 1]);
                }
                return Err("Integrity");
            }
        }
        if let Some(t) = &request.tracking_info {
            if let Some(&recorded) = self.tracking.get(&t.source) {
                if t.position <= recorded {
                    return Err("Integrity");
                }
            }
        }
        for e in &request.events {
            self.events.push((e.clone(), request.tracking_info.clone()));
        }
        if let Some(t) = &request.tracking_info {
            self.tracking.insert(t.source.clone(), t.position);
        }
        Ok(if request.events.is_empty() {
            0
        } else {
            self.events.len() as Position
        })
    }

    /// The events a read returns, and its head.
    pub fn read(&self, request: &ReadRequest) -> (Vec<SequencedEvent>, Option<Position>) {
        if request.limit == Some(0) {
            return (Vec::new(), None);
        }
        let head = self.events.len() as Position;
        let mut positions: Vec<Position> = if request.backwards {
            let start = request.start.unwrap_or(head);
            (1..=head).rev().filter(|&p| p <= start).collect()
        } else {
            let start = request.start.unwrap_or(0);
            (1..=head).filter(|&p| p >= start).collect()
        };
        positions.retain(|&p| model_matches(&request.query, &self.events[(p - 1) as usize].0));
        if let Some(limit) = request.limit {
            positions.truncate(limit as usize);
        }
        let read_head = if request.limit.is_some() {
            positions.last().copied()
        } else {
            self.head()
        };
        (
            positions.into_iter().map(|p| self.sequenced(p)).collect(),
            read_head,
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Writing a closed store's databases directly

pub type Raw = heed::types::Bytes;

/// Writes into the LMDB environment at `path` directly, bypassing the engine.
pub fn raw_write(
    path: &std::path::Path,
    f: impl for<'e> FnOnce(
        &heed::DatabaseOpener<'e, heed::WithTls>,
        &mut heed::RwTxn<'e>,
    ) -> heed::Result<()>,
) {
    let env = unsafe { heed::EnvOpenOptions::new().max_dbs(8).open(path) }.unwrap();
    let wtxn = env.write_txn().unwrap();
    env.create_databases_and_commit(wtxn, |opener, wtxn| -> heed::Result<_> {
        f(opener, wtxn)?;
        Ok(heed::CommitOrAbort::<_, ()>::Commit(()))
    })
    .unwrap();
    env.prepare_for_closing().wait();
}

/// Rewrites the format stamp of a closed store.
pub fn rewrite_stamp(path: &std::path::Path, stamp: &[u8]) {
    raw_write(path, |opener, wtxn| {
        let meta = opener.create_database::<Raw, Raw>(wtxn, Some("meta"))?;
        meta.put(wtxn, b"format", stamp)
    });
}

/// Rewrites the index of a closed store as format versions 1 and 2 kept it: every chunk in the
/// roaring form, and each key's newest chunk under its base among the others (version 3 keeps
/// it under an open-chunk key: kind | 0x40, id, base 0; value: base, first position, chunk).
/// Returns how many chunks were in the gap form.
pub fn write_index_as_version_2(path: &std::path::Path) -> usize {
    // The gap form, read here on its own: the form byte 1, the last offset (u32 LE), then each
    // offset after 0 as a LEB128 varint distance from the one before.
    fn gaps(bytes: &[u8]) -> roaring::RoaringBitmap {
        let mut set = roaring::RoaringBitmap::new();
        set.insert(0);
        let (mut offset, mut shift, mut gap) = (0u32, 0, 0u32);
        for &b in &bytes[5..] {
            gap |= u32::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                offset += gap;
                set.insert(offset);
                (shift, gap) = (0, 0);
            }
        }
        assert_eq!(
            offset.to_le_bytes(),
            bytes[1..5],
            "the header's last offset"
        );
        set
    }
    let mut converted = 0;
    raw_write(path, |opener, wtxn| {
        let index = opener.create_database::<Raw, Raw>(wtxn, Some("index"))?;
        let mut entries = Vec::new();
        for entry in index.iter(wtxn)? {
            let (key, value) = entry?;
            entries.push((key.to_vec(), value.to_vec()));
        }
        for (mut key, value) in entries {
            let mut chunk = value.as_slice();
            if key[0] & 0x40 != 0 {
                index.delete(wtxn, &key)?;
                key[0] &= !0x40;
                key[5..13].copy_from_slice(&value[..8]);
                chunk = &value[16..];
            }
            let mut roaring = chunk.to_vec();
            if chunk[0] == 1 {
                converted += 1;
                roaring.clear();
                gaps(chunk).serialize_into(&mut roaring).unwrap();
            }
            index.put(wtxn, &key, &roaring)?;
        }
        Ok(())
    });
    converted
}
