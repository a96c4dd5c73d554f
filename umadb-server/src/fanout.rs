//! Wakes a subscription only when a commit holds an event its query matches.
//!
//! Waking every caught-up subscription on every commit, each to look for matches among the new
//! positions, costs the writers dearly once there are many idle subscriptions. Instead one task
//! follows the store's head: while any subscription is registered, it reads each commit's new
//! events once (where the snapshot holds them, without copying them out), finds the
//! subscriptions that one of them matches (through maps from a tag or a type to the
//! subscriptions that name it), and moves only their watch to the new head, with the number of
//! matching events it counted. A subscription then reads the range itself, through the one
//! query evaluator, as before; the count tells it whether that read is small enough to make on
//! the async thread, however many positions the range spans.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{watch, Notify};
use umadb_core::{EventRef, Position, Query, Store};

/// The new events looked at in one step, at most.
const STEP: u64 = 4096;

/// Steps of at most this many events are read on the async thread.
const INLINE_STEP: u64 = 64;

/// What a subscription's watch holds: a position up to which a matching event may have been
/// committed, and what the fanout counted on the way there.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Wake {
    pub head: Position,
    /// Events the fanout found matching the query, in total, since the subscription registered.
    pub matched: u64,
    /// Steps in which the fanout could not count (their events were unreadable, or the
    /// subscription registered during the step): between two values of the watch, `matched`
    /// grew by exactly the number of matching events in between only while this stayed the same.
    pub uncounted: u64,
}

impl Wake {
    /// How many events matching the query lie after `earlier.head` up to `self.head`, when the
    /// fanout counted them all.
    pub fn matched_since(&self, earlier: &Wake) -> Option<u64> {
        (self.uncounted == earlier.uncounted).then(|| self.matched.saturating_sub(earlier.matched))
    }
}

pub(crate) struct Fanout {
    store: Arc<Store>,
    state: Mutex<State>,
    /// Wakes the task when a first subscription arrives; without any, it does not follow the
    /// head at all, so commits cost nothing here.
    first_subscriber: Notify,
}

#[derive(Default)]
struct State {
    /// Every event up to here has been looked at; a new subscription's watch starts here.
    seen: Position,
    next_id: u64,
    subscribers: HashMap<u64, Subscriber>,
    /// The subscriptions to consider for an event, by one of its tags.
    by_tag: HashMap<String, HashSet<u64>>,
    /// The subscriptions to consider for an event, by its type.
    by_type: HashMap<String, HashSet<u64>>,
    /// Subscriptions with an item that names neither types nor tags: every event matches.
    everything: HashSet<u64>,
}

struct Subscriber {
    query: Arc<Query>,
    wake: watch::Sender<Wake>,
}

/// Where a query's items are filed: an item with tags needs all of them, so any one tag finds
/// it; an item with types alone is found by each of its types. `None`: every event matches.
fn keys(query: &Query) -> Option<(Vec<&str>, Vec<&str>)> {
    let (mut tags, mut types) = (Vec::new(), Vec::new());
    if query.items.is_empty() {
        return None;
    }
    for item in &query.items {
        if let Some(tag) = item.tags.first() {
            tags.push(tag.as_str());
        } else if item.types.is_empty() {
            return None;
        } else {
            types.extend(item.types.iter().map(String::as_str));
        }
    }
    Some((tags, types))
}

/// A registered subscription. Its watch holds a position up to which a matching event may have
/// been committed; dropping it unregisters.
pub(crate) struct Follow {
    pub wake: watch::Receiver<Wake>,
    id: u64,
    fanout: Arc<Fanout>,
}

impl Drop for Follow {
    fn drop(&mut self) {
        self.fanout.unregister(self.id);
    }
}

impl Fanout {
    pub fn new(store: Arc<Store>) -> Arc<Fanout> {
        let seen = store.head().unwrap_or(0);
        Arc::new(Fanout {
            store,
            state: Mutex::new(State {
                seen,
                ..State::default()
            }),
            first_subscriber: Notify::new(),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a subscription to `query`. Every commit after the watch's first value that
    /// holds a matching event moves the watch.
    pub fn follow(self: &Arc<Self>, query: Arc<Query>) -> Follow {
        let mut state = self.state();
        if state.subscribers.is_empty() {
            // The task stopped following the head while nobody subscribed: whatever is
            // committed now is this subscription's to read; only later commits are ours.
            state.seen = state.seen.max(self.store.head().unwrap_or(0));
            self.first_subscriber.notify_one();
        }
        let id = state.next_id;
        state.next_id += 1;
        match keys(&query) {
            Some((tags, types)) => {
                for tag in tags {
                    state.by_tag.entry(tag.to_owned()).or_default().insert(id);
                }
                for event_type in types {
                    state
                        .by_type
                        .entry(event_type.to_owned())
                        .or_default()
                        .insert(id);
                }
            }
            None => {
                state.everything.insert(id);
            }
        }
        let (wake, rx) = watch::channel(Wake {
            head: state.seen,
            ..Wake::default()
        });
        state.subscribers.insert(id, Subscriber { query, wake });
        Follow {
            wake: rx,
            id,
            fanout: self.clone(),
        }
    }

    fn unregister(&self, id: u64) {
        let mut state = self.state();
        let Some(subscriber) = state.subscribers.remove(&id) else {
            return;
        };
        state.everything.remove(&id);
        let (tags, types) = keys(&subscriber.query).unwrap_or_default();
        for tag in tags {
            forget(&mut state.by_tag, tag, id);
        }
        for event_type in types {
            forget(&mut state.by_type, event_type, id);
        }
    }

    /// Follows the store's head until the server shuts down (or the head's watch closes),
    /// waking subscriptions as it goes.
    pub async fn run(
        self: Arc<Self>,
        mut head: watch::Receiver<Position>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            if self.state().subscribers.is_empty() {
                tokio::select! {
                    biased;
                    _ = shutdown.wait_for(|down| *down) => return,
                    () = self.first_subscriber.notified() => {}
                }
            }
            let target = *head.borrow_and_update();
            tokio::select! {
                biased;
                _ = shutdown.wait_for(|down| *down) => return,
                () = self.catch_up(target) => {}
            }
            tokio::select! {
                biased;
                _ = shutdown.wait_for(|down| *down) => return,
                changed = head.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
        }
    }

    async fn catch_up(self: &Arc<Self>, target: Position) {
        loop {
            let (from, first_new) = {
                let mut state = self.state();
                if state.seen >= target {
                    return;
                }
                if state.subscribers.is_empty() {
                    // Nobody to wake; a subscription registered later starts from here.
                    state.seen = target;
                    return;
                }
                (state.seen, state.next_id)
            };
            let to = target.min(from + STEP);
            let counted = self.count(from, to).await;
            let mut state = self.state();
            match counted {
                Some(counted) => state.wake_counted(&counted, first_new, to),
                // Unreadable (logged): let every subscription look, and report, for itself.
                None => state.wake_all(to),
            }
            state.seen = to;
        }
    }

    /// Counts, for each subscription, the events at positions `from + 1 ..= to` that its query
    /// matches; `None` when they cannot be read.
    async fn count(self: &Arc<Self>, from: Position, to: Position) -> Option<Counted> {
        let result = if to - from <= INLINE_STEP {
            self.count_now(from, to)
        } else {
            let fanout = self.clone();
            match tokio::task::spawn_blocking(move || fanout.count_now(from, to)).await {
                Ok(result) => result,
                Err(e) => Err(umadb_core::Error::Internal(e.to_string())),
            }
        };
        result
            .map_err(|e| {
                tracing::warn!(error = %e, from = from + 1, to, "cannot read new events to wake subscriptions; waking them all");
            })
            .ok()
    }

    fn count_now(&self, from: Position, to: Position) -> umadb_core::Result<Counted> {
        let mut counted = Counted::default();
        let max = (to - from) as usize;
        // The state is locked per event, not across the read, so that subscriptions come and
        // go while a large step is read (those that came are moved uncounted).
        let (events, _) =
            self.store
                .read_range_with(&Query::all(), from + 1, to, max, |sequenced| {
                    self.state()
                        .count_matching(&sequenced.event, &mut counted.by_id);
                })?;
        counted.events = events as u64;
        Ok(counted)
    }
}

fn forget(map: &mut HashMap<String, HashSet<u64>>, key: &str, id: u64) {
    if let Some(ids) = map.get_mut(key) {
        ids.remove(&id);
        if ids.is_empty() {
            map.remove(key);
        }
    }
}

/// What one step counted.
#[derive(Default)]
struct Counted {
    /// Events looked at: each matches every subscription in `State::everything`.
    events: u64,
    /// Matching events by subscription, for the others.
    by_id: HashMap<u64, u64>,
}

impl State {
    /// Adds one to the count of each subscription (not following everything) that `event`
    /// matches.
    fn count_matching(&self, event: &EventRef<'_>, counts: &mut HashMap<u64, u64>) {
        let mut counted: Vec<u64> = Vec::new();
        let by_tag = event.tags.iter().filter_map(|tag| self.by_tag.get(*tag));
        let by_type = self.by_type.get(event.event_type);
        for ids in by_tag.chain(by_type) {
            for &id in ids {
                if counted.contains(&id) {
                    continue;
                }
                if self
                    .subscribers
                    .get(&id)
                    .is_some_and(|s| s.query.matches_keys(event.event_type, &event.tags))
                {
                    *counts.entry(id).or_default() += 1;
                    counted.push(id);
                }
            }
        }
    }

    /// Moves the watch of every subscription the step's events matched to `to`, with their
    /// count. Subscriptions registered during the step (ids from `first_new`) may have missed
    /// events counted before they registered: their watch moves uncounted.
    fn wake_counted(&self, counted: &Counted, first_new: u64, to: Position) {
        for id in &self.everything {
            self.wake(*id, to, counted.events, false);
        }
        for (id, n) in &counted.by_id {
            self.wake(*id, to, *n, false);
        }
        // Ids are handed out in order: those registered since are the ones from `first_new`
        // (usually none), found without going through every subscription.
        for id in first_new..self.next_id {
            self.wake(id, to, 0, true);
        }
    }

    fn wake_all(&self, to: Position) {
        for id in self.subscribers.keys() {
            self.wake(*id, to, 0, true);
        }
    }

    fn wake(&self, id: u64, to: Position, matched: u64, uncounted: bool) {
        if let Some(subscriber) = self.subscribers.get(&id) {
            subscriber.wake.send_if_modified(|wake| {
                let moved = wake.head < to;
                wake.head = wake.head.max(to);
                wake.matched += matched;
                wake.uncounted += u64::from(uncounted);
                moved
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use umadb_core::{AppendRequest, Event, QueryItem};

    fn append(store: &Store, event_type: &str, tags: &[&str]) -> Position {
        store
            .append(AppendRequest {
                events: vec![Event::new(event_type, tags.iter().copied(), Vec::new())],
                ..Default::default()
            })
            .expect("append")
    }

    fn query(types: &[&str], tags: &[&str]) -> Arc<Query> {
        Arc::new(Query::from_items([QueryItem::new(
            types.iter().copied(),
            tags.iter().copied(),
        )]))
    }

    #[tokio::test]
    async fn only_subscriptions_a_commit_matches_are_woken() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Store::open(dir.path().join("db")).expect("open"));
        append(&store, "Seen", &["before"]);
        let fanout = Fanout::new(store.clone());
        let by_tag = fanout.follow(query(&[], &["a", "b"]));
        let by_type = fanout.follow(query(&["Registered"], &[]));
        let typed_and_tagged = fanout.follow(query(&["Other"], &["a"]));
        let everything = fanout.follow(Arc::new(Query::all()));
        assert_eq!(
            by_tag.wake.borrow().head,
            1,
            "a watch starts at the head seen"
        );

        // Tag "a" without "b": files under the tag query but does not match it.
        let head = append(&store, "Registered", &["a"]);
        fanout.catch_up(head).await;
        assert_eq!(by_tag.wake.borrow().head, 1);
        assert_eq!(by_type.wake.borrow().head, head);
        assert_eq!(typed_and_tagged.wake.borrow().head, 1);
        assert_eq!(everything.wake.borrow().head, head);

        let head = append(&store, "Renamed", &["b", "a", "c"]);
        fanout.catch_up(head).await;
        assert_eq!(by_tag.wake.borrow().head, head);
        assert_eq!(by_type.wake.borrow().head, head - 1);
        assert_eq!(everything.wake.borrow().head, head);

        // What each watch counted: the events its query matched, each once.
        let counts = |f: &Follow| (f.wake.borrow().matched, f.wake.borrow().uncounted);
        assert_eq!(counts(&by_tag), (1, 0));
        assert_eq!(counts(&by_type), (1, 0));
        assert_eq!(counts(&typed_and_tagged), (0, 0));
        assert_eq!(counts(&everything), (2, 0));
    }

    #[tokio::test]
    async fn a_watch_counts_the_matching_events_between_two_of_its_values() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Store::open(dir.path().join("db")).expect("open"));
        let fanout = Fanout::new(store.clone());
        // Two items naming the same tag, and one by type: an event matching several counts once.
        let query = Arc::new(Query::from_items([
            QueryItem::new(Vec::<String>::new(), ["a"]),
            QueryItem::new(["Paid"], ["a"]),
            QueryItem::new(["Paid"], Vec::<String>::new()),
        ]));
        let follow = fanout.follow(query);
        let first = *follow.wake.borrow();
        append(&store, "Paid", &["a"]);
        append(&store, "Other", &["b"]);
        append(&store, "Paid", &["b"]);
        fanout.catch_up(store.head().expect("head")).await;
        let second = *follow.wake.borrow();
        assert_eq!(second.head, 3);
        assert_eq!(second.matched_since(&first), Some(2));
        // Several commits looked at in one step count together.
        for _ in 0..3 {
            append(&store, "Other", &["a", "c"]);
        }
        append(&store, "Other", &["c"]);
        fanout.catch_up(store.head().expect("head")).await;
        let third = *follow.wake.borrow();
        assert_eq!((third.head, third.matched_since(&second)), (7, Some(3)));
        assert_eq!(third.matched_since(&first), Some(5));
    }

    #[tokio::test]
    async fn a_watch_moved_without_a_count_gives_none_across_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Store::open(dir.path().join("db")).expect("open"));
        let fanout = Fanout::new(store.clone());
        let before = fanout.follow(query(&[], &["a"]));
        let during = fanout.follow(query(&[], &["a"]));
        let (before_first, during_first) = (*before.wake.borrow(), *during.wake.borrow());
        append(&store, "T", &["a"]);
        // As if `during` had registered while the step's events were being looked at.
        let counted = Counted {
            events: 1,
            by_id: HashMap::from([(before.id, 1), (during.id, 1)]),
        };
        fanout.state().wake_counted(&counted, during.id, 1);
        assert_eq!(before.wake.borrow().matched_since(&before_first), Some(1));
        assert_eq!(before.wake.borrow().head, 1);
        assert_eq!(during.wake.borrow().head, 1);
        assert_eq!(during.wake.borrow().matched_since(&during_first), None);
        // Unreadable events move every watch uncounted.
        let second = *before.wake.borrow();
        fanout.state().wake_all(2);
        assert_eq!(before.wake.borrow().head, 2);
        assert_eq!(before.wake.borrow().matched_since(&second), None);
    }

    #[tokio::test]
    async fn a_subscription_dropped_is_forgotten_and_a_new_one_starts_at_the_last_head_seen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Store::open(dir.path().join("db")).expect("open"));
        let fanout = Fanout::new(store.clone());
        let follow = fanout.follow(query(&["T"], &["x"]));
        drop(follow);
        {
            let state = fanout.state();
            assert!(state.subscribers.is_empty());
            assert!(state.by_tag.is_empty() && state.by_type.is_empty());
        }
        let head = append(&store, "T", &["x"]);
        fanout.catch_up(head).await;
        let follow = fanout.follow(query(&["T"], &["x"]));
        assert_eq!(follow.wake.borrow().head, head);
    }

    #[tokio::test]
    async fn a_first_subscription_starts_at_the_store_head_though_nobody_followed_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Store::open(dir.path().join("db")).expect("open"));
        let fanout = Fanout::new(store.clone());
        // Commits while nobody subscribes are not looked at.
        let head = append(&store, "T", &["x"]);
        let follow = fanout.follow(query(&["T"], &["x"]));
        assert_eq!(follow.wake.borrow().head, head);
        let next = append(&store, "T", &["x"]);
        fanout.catch_up(next).await;
        assert_eq!(follow.wake.borrow().head, next);
    }
}
