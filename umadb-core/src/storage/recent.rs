//! The type and tag ids of the newest events, held in memory for the writer and for readers.
//!
//! The events past the indexed head are in no index (see `StoreOptions::index_lag`). The writer
//! needs their index entries for the commit that indexes them, and every query needs to match
//! them. Both take them from here instead of decoding the records again.
//!
//! Besides each event's keys, the window lists the positions of each type and tag, so that a
//! query finds its matches there without looking at every event the window holds: the cost of
//! a query does not grow with the index lag.
//!
//! The window holds a run of consecutive positions. Only the writer changes it, after a commit
//! is durable: a committed position's keys never change, so a reader may match any position
//! its own snapshot holds against the window, whatever the writer has done since. A reader
//! whose range the window does not cover (a snapshot older than the last indexing commit, or a
//! store whose tail could not be read at open) scans the records instead.

use super::format::Kind;
use crate::types::Position;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// One event's keys: its type id and its tag ids, ascending and without repeats.
pub(crate) struct EventKeys {
    pub event_type: u32,
    pub tags: Box<[u32]>,
}

impl EventKeys {
    pub fn new(event_type: u32, mut tags: Vec<u32>) -> EventKeys {
        tags.sort_unstable();
        tags.dedup();
        EventKeys {
            event_type,
            tags: tags.into_boxed_slice(),
        }
    }

    /// Whether an event with these keys has every tag in `tags` (ascending) and, when `types`
    /// is not empty, one of them.
    pub fn matches(&self, types: &[u32], tags: &[u32]) -> bool {
        (types.is_empty() || types.contains(&self.event_type))
            && tags.iter().all(|t| self.tags.binary_search(t).is_ok())
    }
}

#[derive(Default)]
pub(crate) struct Recent {
    window: RwLock<Window>,
}

/// `events[i]` holds the keys of position `first + i`.
struct Window {
    first: Position,
    events: VecDeque<EventKeys>,
    /// The positions in the window of each type and tag, ascending.
    postings: HashMap<(Kind, u32), Vec<Position>, BuildHasherDefault<IdHasher>>,
}

/// Hashes the (kind, id) keys of `Window::postings`. Ids are handed out by the store in
/// sequence, never chosen by a client, so a multiply-and-rotate mix is enough; the standard
/// SipHash cost the writer about a twentieth of its time in `extend` and `forget_through`.
#[derive(Default)]
struct IdHasher(u64);

impl IdHasher {
    fn add(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.add(u64::from(b));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl Default for Window {
    fn default() -> Self {
        Window::starting_at(1)
    }
}

impl Window {
    fn starting_at(first: Position) -> Window {
        Window {
            first,
            events: VecDeque::new(),
            postings: HashMap::default(),
        }
    }

    fn keys(&self, position: Position) -> &EventKeys {
        &self.events[(position - self.first) as usize]
    }

    /// The positions in `lo..=hi` of a type or tag.
    fn postings(&self, kind: Kind, id: u32, lo: Position, hi: Position) -> &[Position] {
        let Some(list) = self.postings.get(&(kind, id)) else {
            return &[];
        };
        let start = list.partition_point(|&p| p < lo);
        let end = list.partition_point(|&p| p <= hi);
        &list[start..end.max(start)]
    }

    /// Whether the window holds every position in `lo..=hi` (`lo <= hi`).
    fn covers(&self, lo: Position, hi: Position) -> bool {
        self.first <= lo && hi - self.first < self.events.len() as u64
    }

    fn get(&self, lo: Position, hi: Position) -> impl Iterator<Item = (Position, &EventKeys)> {
        let skip = (lo - self.first) as usize;
        let take = (hi - lo + 1) as usize;
        (lo..).zip(self.events.iter().skip(skip).take(take))
    }
}

impl Recent {
    fn read(&self) -> RwLockReadGuard<'_, Window> {
        self.window.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Window> {
        self.window.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds the keys of the events from position `first` on, just committed. Positions must
    /// follow on from the window's; if they do not, the window restarts at `first`.
    pub fn extend(&self, first: Position, events: Vec<EventKeys>) {
        let mut window = self.write();
        if window.first + window.events.len() as u64 != first {
            *window = Window::starting_at(first);
        }
        let window = &mut *window;
        for (position, keys) in (first..).zip(&events) {
            let ids = std::iter::once((Kind::EventType, keys.event_type))
                .chain(keys.tags.iter().map(|&tag| (Kind::Tag, tag)));
            for key in ids {
                window.postings.entry(key).or_default().push(position);
            }
        }
        window.events.extend(events);
    }

    /// Drops the keys of every position up to and including `position`.
    pub fn forget_through(&self, position: Position) {
        let mut window = self.write();
        let Some(beyond) = position.checked_add(1) else {
            return;
        };
        if beyond <= window.first {
            return;
        }
        let drop = ((beyond - window.first) as usize).min(window.events.len());
        window.events.drain(..drop);
        window.first = beyond;
        window.postings.retain(|_, list| {
            let stale = list.partition_point(|&p| p < beyond);
            list.drain(..stale);
            !list.is_empty()
        });
    }

    /// How many positions the window holds.
    pub fn len(&self) -> usize {
        self.read().events.len()
    }

    /// The positions in `lo..=hi` matched by any of `items`, ascending; `None` when the window
    /// does not hold the whole range. An item is its type ids (an event matches with any of
    /// them, or with any type when there are none) and its tag ids, ascending (an event must
    /// have all of them).
    pub fn matching<'i>(
        &self,
        lo: Position,
        hi: Position,
        items: impl IntoIterator<Item = (&'i [u32], &'i [u32])>,
    ) -> Option<Vec<Position>> {
        if lo > hi {
            return Some(Vec::new());
        }
        let window = self.read();
        if !window.covers(lo, hi) {
            return None;
        }
        let mut found = Vec::new();
        for (types, tags) in items {
            // The rarest tag's positions, each checked for the item's other keys.
            let rarest = tags
                .iter()
                .map(|&tag| window.postings(Kind::Tag, tag, lo, hi))
                .min_by_key(|positions| positions.len());
            match rarest {
                Some(positions) => found.extend(
                    positions
                        .iter()
                        .filter(|&&p| window.keys(p).matches(types, tags)),
                ),
                None if types.is_empty() => found.extend(lo..=hi),
                None => {
                    for &event_type in types {
                        found.extend(window.postings(Kind::EventType, event_type, lo, hi));
                    }
                }
            }
        }
        // Several items or types give several ascending runs; one run is left as it is.
        found.sort_unstable();
        found.dedup();
        Some(found)
    }

    /// Appends the index entries (kind, id, position) of the positions in `lo..=hi` to
    /// `entries`; false, appending nothing, when the window does not hold the whole range.
    pub fn index_entries_into(
        &self,
        lo: Position,
        hi: Position,
        entries: &mut Vec<(Kind, u32, Position)>,
    ) -> bool {
        if lo > hi {
            return true;
        }
        let window = self.read();
        if !window.covers(lo, hi) {
            return false;
        }
        for (position, keys) in window.get(lo, hi) {
            entries.push((Kind::EventType, keys.event_type, position));
            entries.extend(keys.tags.iter().map(|&tag| (Kind::Tag, tag, position)));
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(event_type: u32, tags: &[u32]) -> EventKeys {
        EventKeys::new(event_type, tags.to_vec())
    }

    const ANY: (&[u32], &[u32]) = (&[], &[]);

    #[test]
    fn the_window_answers_only_for_ranges_it_holds_whole() {
        let recent = Recent::default();
        assert_eq!(recent.matching(1, 1, [ANY]), None);
        recent.extend(5, vec![keys(1, &[7]), keys(2, &[]), keys(1, &[7, 8])]);
        assert_eq!(recent.matching(4, 6, [ANY]), None);
        assert_eq!(recent.matching(5, 8, [ANY]), None);
        assert_eq!(
            recent.matching(5, 7, [(&[1][..], &[7][..])]),
            Some(vec![5, 7])
        );
        assert_eq!(
            recent.matching(6, 7, [(&[][..], &[7, 8][..])]),
            Some(vec![7])
        );
        recent.forget_through(5);
        assert_eq!(recent.matching(5, 6, [ANY]), None);
        assert_eq!(recent.matching(6, 7, [ANY]), Some(vec![6, 7]));
        assert_eq!(recent.matching(6, 7, [(&[][..], &[7][..])]), Some(vec![7]));
        let mut entries = vec![(Kind::Tag, 9, 1)];
        assert!(recent.index_entries_into(6, 7, &mut entries));
        assert_eq!(
            entries,
            vec![
                (Kind::Tag, 9, 1),
                (Kind::EventType, 2, 6),
                (Kind::EventType, 1, 7),
                (Kind::Tag, 7, 7),
                (Kind::Tag, 8, 7),
            ]
        );
    }

    #[test]
    fn keys_that_do_not_follow_on_restart_the_window() {
        let recent = Recent::default();
        recent.extend(1, vec![keys(1, &[4])]);
        recent.extend(3, vec![keys(2, &[])]);
        assert_eq!(recent.matching(1, 1, [ANY]), None);
        assert_eq!(recent.matching(3, 3, [ANY]), Some(vec![3]));
        assert_eq!(recent.matching(3, 3, [(&[1][..], &[][..])]), Some(vec![]));
        recent.forget_through(10);
        assert_eq!(recent.len(), 0);
        recent.extend(11, vec![keys(3, &[])]);
        assert_eq!(recent.matching(11, 11, [ANY]), Some(vec![11]));
        assert_eq!(
            recent.matching(11, 11, [(&[3][..], &[][..])]),
            Some(vec![11])
        );
    }

    /// Matches on the window against every event checked one by one, over random events,
    /// forgets, ranges and queries of several items.
    #[test]
    fn matching_agrees_with_checking_every_event() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |bound: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % bound
        };
        let recent = Recent::default();
        let mut all: Vec<(u32, Vec<u32>)> = Vec::new();
        let mut first = 1;
        for round in 0..300 {
            let added: Vec<(u32, Vec<u32>)> = (0..1 + next(20))
                .map(|_| {
                    (
                        next(4) as u32,
                        (0..next(4)).map(|_| next(12) as u32).collect(),
                    )
                })
                .collect();
            let start = all.len() as Position + 1;
            recent.extend(
                start,
                added.iter().map(|(t, tags)| keys(*t, tags)).collect(),
            );
            all.extend(added);
            if round % 7 == 6 {
                let through = first + next(all.len() as u64 + 1 - first);
                recent.forget_through(through);
                first = first.max(through + 1);
            }
            let head = all.len() as Position;
            if first > head {
                continue;
            }
            let lo = first + next(head - first + 1);
            let hi = lo + next(head - lo + 1);
            let items: Vec<(Vec<u32>, Vec<u32>)> = (0..1 + next(3))
                .map(|_| {
                    let types: Vec<u32> = (0..next(3)).map(|_| next(4) as u32).collect();
                    let mut tags: Vec<u32> = (0..next(3)).map(|_| next(12) as u32).collect();
                    tags.sort_unstable();
                    tags.dedup();
                    (types, tags)
                })
                .collect();
            let expected: Vec<Position> = (lo..=hi)
                .filter(|&p| {
                    let (t, tags) = &all[(p - 1) as usize];
                    let event = keys(*t, tags);
                    items.iter().any(|(types, tags)| event.matches(types, tags))
                })
                .collect();
            let got = recent.matching(
                lo,
                hi,
                items.iter().map(|(t, g)| (t.as_slice(), g.as_slice())),
            );
            assert_eq!(got, Some(expected), "round {round}, {lo}..={hi}, {items:?}");
            assert_eq!(
                recent
                    .matching(first.saturating_sub(1).max(1), hi, [ANY])
                    .is_some(),
                first == 1
            );
        }
    }

    #[test]
    fn an_event_matches_when_it_has_every_tag_and_one_of_the_types() {
        let event = keys(3, &[9, 2, 2]);
        assert!(event.matches(&[], &[]));
        assert!(event.matches(&[1, 3], &[2]));
        assert!(event.matches(&[], &[2, 9]));
        assert!(!event.matches(&[1], &[2]));
        assert!(!event.matches(&[3], &[2, 5]));
    }
}
