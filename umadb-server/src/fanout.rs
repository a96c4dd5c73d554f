//! Wakes a subscription only when a commit holds an event its query matches.
//!
//! Waking every caught-up subscription on every commit, each to look for matches among the new
//! positions, costs the writers dearly once there are many idle subscriptions. Instead one task
//! follows the store's head: while any subscription is registered, it reads each commit's new
//! events once, finds the subscriptions that one of them matches (through maps from a tag or a
//! type to the subscriptions that name it), and moves only their watch to the new head. A
//! subscription then reads the range itself, through the one query evaluator, as before.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{watch, Notify};
use umadb_core::{Position, Query, SequencedEvent, Store};

/// The new events looked at in one step, at most.
const STEP: u64 = 4096;

/// Steps of at most this many events are read on the async thread.
const INLINE_STEP: u64 = 64;

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
    /// The subscriptions to consider for an event, by one of its tags or its type.
    by_key: HashMap<Key, HashSet<u64>>,
    /// Subscriptions with an item that names neither types nor tags: every event matches.
    everything: HashSet<u64>,
}

struct Subscriber {
    query: Arc<Query>,
    wake: watch::Sender<Position>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
enum Key {
    Tag(String),
    Type(String),
}

/// Where a query's items are filed: an item with tags needs all of them, so any one tag finds
/// it; an item with types alone is found by each of its types.
fn keys(query: &Query) -> Option<Vec<Key>> {
    let mut keys = Vec::new();
    if query.items.is_empty() {
        return None;
    }
    for item in &query.items {
        if let Some(tag) = item.tags.first() {
            keys.push(Key::Tag(tag.clone()));
        } else if item.types.is_empty() {
            return None;
        } else {
            keys.extend(item.types.iter().cloned().map(Key::Type));
        }
    }
    Some(keys)
}

/// A registered subscription. Its watch holds a position up to which a matching event may have
/// been committed; dropping it unregisters.
pub(crate) struct Follow {
    pub wake: watch::Receiver<Position>,
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
            Some(keys) => {
                for key in keys {
                    state.by_key.entry(key).or_default().insert(id);
                }
            }
            None => {
                state.everything.insert(id);
            }
        }
        let (wake, rx) = watch::channel(state.seen);
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
        for key in keys(&subscriber.query).unwrap_or_default() {
            if let Some(ids) = state.by_key.get_mut(&key) {
                ids.remove(&id);
                if ids.is_empty() {
                    state.by_key.remove(&key);
                }
            }
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

    async fn catch_up(&self, target: Position) {
        loop {
            let from = {
                let mut state = self.state();
                if state.seen >= target {
                    return;
                }
                if state.subscribers.is_empty() {
                    // Nobody to wake; a subscription registered later starts from here.
                    state.seen = target;
                    return;
                }
                state.seen
            };
            let to = target.min(from + STEP);
            let events = self.read(from, to).await;
            let mut state = self.state();
            match events {
                Some(events) => state.wake_matching(&events, to),
                // Unreadable (logged): let every subscription look, and report, for itself.
                None => state.wake_all(to),
            }
            state.seen = to;
        }
    }

    /// The events at positions `from + 1 ..= to`, or `None` when they cannot be read.
    async fn read(&self, from: Position, to: Position) -> Option<Vec<SequencedEvent>> {
        let all = Query::all();
        let max = (to - from) as usize;
        let result = if to - from <= INLINE_STEP {
            self.store.read_range(&all, from + 1, to, max)
        } else {
            let store = self.store.clone();
            match tokio::task::spawn_blocking(move || store.read_range(&all, from + 1, to, max))
                .await
            {
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
}

impl State {
    fn wake_matching(&self, events: &[SequencedEvent], to: Position) {
        let mut woken: HashSet<u64> = HashSet::new();
        for id in &self.everything {
            self.wake(*id, to);
            woken.insert(*id);
        }
        for sequenced in events {
            let event = &sequenced.event;
            let tags = event.tags.iter().map(|t| Key::Tag(t.clone()));
            for key in tags.chain([Key::Type(event.event_type.clone())]) {
                let Some(ids) = self.by_key.get(&key) else {
                    continue;
                };
                for id in ids {
                    if woken.contains(id) {
                        continue;
                    }
                    if self
                        .subscribers
                        .get(id)
                        .is_some_and(|s| s.query.matches(event))
                    {
                        self.wake(*id, to);
                        woken.insert(*id);
                    }
                }
            }
        }
    }

    fn wake_all(&self, to: Position) {
        for id in self.subscribers.keys() {
            self.wake(*id, to);
        }
    }

    fn wake(&self, id: u64, to: Position) {
        if let Some(subscriber) = self.subscribers.get(&id) {
            subscriber.wake.send_if_modified(|at| {
                let moved = *at < to;
                *at = (*at).max(to);
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
        assert_eq!(*by_tag.wake.borrow(), 1, "a watch starts at the head seen");

        // Tag "a" without "b": files under the tag query but does not match it.
        let head = append(&store, "Registered", &["a"]);
        fanout.catch_up(head).await;
        assert_eq!(*by_tag.wake.borrow(), 1);
        assert_eq!(*by_type.wake.borrow(), head);
        assert_eq!(*typed_and_tagged.wake.borrow(), 1);
        assert_eq!(*everything.wake.borrow(), head);

        let head = append(&store, "Renamed", &["b", "a", "c"]);
        fanout.catch_up(head).await;
        assert_eq!(*by_tag.wake.borrow(), head);
        assert_eq!(*by_type.wake.borrow(), head - 1);
        assert_eq!(*everything.wake.borrow(), head);
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
            assert!(state.by_key.is_empty());
        }
        let head = append(&store, "T", &["x"]);
        fanout.catch_up(head).await;
        let follow = fanout.follow(query(&["T"], &["x"]));
        assert_eq!(*follow.wake.borrow(), head);
    }

    #[tokio::test]
    async fn a_first_subscription_starts_at_the_store_head_though_nobody_followed_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Store::open(dir.path().join("db")).expect("open"));
        let fanout = Fanout::new(store.clone());
        // Commits while nobody subscribes are not looked at.
        let head = append(&store, "T", &["x"]);
        let follow = fanout.follow(query(&["T"], &["x"]));
        assert_eq!(*follow.wake.borrow(), head);
        let next = append(&store, "T", &["x"]);
        fanout.catch_up(next).await;
        assert_eq!(*follow.wake.borrow(), next);
    }
}
