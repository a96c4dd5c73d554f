//! The type and tag ids of the newest events, held in memory for the writer and for readers.
//!
//! The events past the indexed head are in no index (see `StoreOptions::index_lag`). The writer
//! needs their index entries for the commit that indexes them, and every query needs to match
//! them. Both take them from here instead of decoding the records again.
//!
//! The window holds a run of consecutive positions. Only the writer changes it, after a commit
//! is durable: a committed position's keys never change, so a reader may match any position
//! its own snapshot holds against the window, whatever the writer has done since. A reader
//! whose range the window does not cover (a snapshot older than the last indexing commit, or a
//! store whose tail could not be read at open) scans the records instead.

use super::format::Kind;
use crate::types::Position;
use std::collections::VecDeque;
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
}

impl Default for Window {
    fn default() -> Self {
        Window {
            first: 1,
            events: VecDeque::new(),
        }
    }
}

impl Window {
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
            *window = Window {
                first,
                events: VecDeque::new(),
            };
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
    }

    /// How many positions the window holds.
    pub fn len(&self) -> usize {
        self.read().events.len()
    }

    /// The positions in `lo..=hi` whose keys satisfy `matches`, ascending; `None` when the
    /// window does not hold the whole range.
    pub fn matching(
        &self,
        lo: Position,
        hi: Position,
        matches: impl Fn(&EventKeys) -> bool,
    ) -> Option<Vec<Position>> {
        if lo > hi {
            return Some(Vec::new());
        }
        let window = self.read();
        if !window.covers(lo, hi) {
            return None;
        }
        Some(
            window
                .get(lo, hi)
                .filter(|(_, keys)| matches(keys))
                .map(|(position, _)| position)
                .collect(),
        )
    }

    /// The index entries (kind, id, position) of the positions in `lo..=hi`, or `None` when the
    /// window does not hold the whole range.
    pub fn index_entries(&self, lo: Position, hi: Position) -> Option<Vec<(Kind, u32, Position)>> {
        if lo > hi {
            return Some(Vec::new());
        }
        let window = self.read();
        if !window.covers(lo, hi) {
            return None;
        }
        let mut entries = Vec::new();
        for (position, keys) in window.get(lo, hi) {
            entries.push((Kind::EventType, keys.event_type, position));
            entries.extend(keys.tags.iter().map(|&tag| (Kind::Tag, tag, position)));
        }
        Some(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(event_type: u32, tags: &[u32]) -> EventKeys {
        EventKeys::new(event_type, tags.to_vec())
    }

    #[test]
    fn the_window_answers_only_for_ranges_it_holds_whole() {
        let recent = Recent::default();
        assert_eq!(recent.matching(1, 1, |_| true), None);
        recent.extend(5, vec![keys(1, &[7]), keys(2, &[]), keys(1, &[7, 8])]);
        assert_eq!(recent.matching(4, 6, |_| true), None);
        assert_eq!(recent.matching(5, 8, |_| true), None);
        assert_eq!(
            recent.matching(5, 7, |k| k.matches(&[1], &[7])),
            Some(vec![5, 7])
        );
        assert_eq!(
            recent.matching(6, 7, |k| k.matches(&[], &[7, 8])),
            Some(vec![7])
        );
        recent.forget_through(5);
        assert_eq!(recent.matching(5, 6, |_| true), None);
        assert_eq!(recent.matching(6, 7, |_| true), Some(vec![6, 7]));
        assert_eq!(
            recent.index_entries(6, 7),
            Some(vec![
                (Kind::EventType, 2, 6),
                (Kind::EventType, 1, 7),
                (Kind::Tag, 7, 7),
                (Kind::Tag, 8, 7),
            ])
        );
    }

    #[test]
    fn keys_that_do_not_follow_on_restart_the_window() {
        let recent = Recent::default();
        recent.extend(1, vec![keys(1, &[])]);
        recent.extend(3, vec![keys(2, &[])]);
        assert_eq!(recent.matching(1, 1, |_| true), None);
        assert_eq!(recent.matching(3, 3, |_| true), Some(vec![3]));
        recent.forget_through(10);
        assert_eq!(recent.len(), 0);
        recent.extend(11, vec![keys(3, &[])]);
        assert_eq!(recent.matching(11, 11, |_| true), Some(vec![11]));
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
