//! Index lag is invisible: stores with `index_lag` 0, 5 and the default answer the same random
//! appends (conditional, idempotent retries, bursts committed as one group) and reads (also one
//! left open across appends) exactly as a naive in-memory model does, also after a reopen has
//! rebuilt the unindexed tail, and pass `check`. Fixed seeds; assertions name seed and step.

mod common;

use common::{conditional, kind};
use std::sync::mpsc;
use umadb_core::{
    AppendRequest, Event, Position, Query, QueryItem, ReadRequest, SequencedEvent, Store,
    StoreOptions, Uuid,
};

const SEEDS: [u64; 3] = [1, 0x5eed_0002, 0xdead_beef_0003];
const TYPES: [&str; 3] = ["A", "B", "C"];
const TAGS: [&str; 8] = ["t0", "t1", "t2", "t3", "t4", "t5", "t6", "t7"];
/// The stores under test; `None` keeps the default lag.
const LAGS: [Option<u64>; 3] = [Some(0), Some(5), None];
const NAMES: [&str; 3] = ["index_lag 0", "index_lag 5", "default index_lag"];

#[test]
fn index_lag_changes_no_answer() {
    std::thread::scope(|s| {
        for seed in SEEDS {
            s.spawn(move || run(seed));
        }
    });
}

/// The log as it should be; the event at position p is `events[p - 1]`.
#[derive(Default)]
struct Model {
    events: Vec<SequencedEvent>,
}

impl Model {
    fn head(&self) -> Position {
        self.events.len() as Position
    }
    /// The events in `lo..=hi` that `query` matches, ascending.
    fn matching(&self, query: &Query, lo: Position, hi: Position) -> Vec<SequencedEvent> {
        let wanted = |e: &&SequencedEvent| (lo..=hi).contains(&e.position);
        let found = self.events.iter().filter(wanted);
        found.filter(|e| query.matches(&e.event)).cloned().collect()
    }
    /// What the append must return: its last position, or the kind of error.
    fn append(&mut self, request: &AppendRequest) -> Result<Position, &'static str> {
        if let Some(c) = &request.condition {
            let found = self.matching(&c.fail_if_events_match, c.after.unwrap_or(0) + 1, u64::MAX);
            if !found.is_empty() {
                // Unless it is an idempotent retry: its events are the first matches.
                let n = request.events.len();
                let keys = request.events.iter().map(Event::idempotency_key);
                let keyed = n > 0 && found.len() >= n && keys.clone().all(|k| k.is_some());
                let same = keys.zip(&found).all(|(k, e)| k == e.event.uuid);
                let retry = (keyed && same).then(|| found[n - 1].position);
                return retry.ok_or("Integrity");
            }
        }
        for event in request.events.iter().cloned() {
            let (position, tracking_info) = (self.head() + 1, None);
            self.events.push(SequencedEvent {
                position,
                event,
                tracking_info,
            });
        }
        Ok(request.events.last().map_or(0, |_| self.head()))
    }
    fn read(&self, r: &ReadRequest) -> (Vec<SequencedEvent>, Option<Position>) {
        let mut events = match r.backwards {
            true => self.matching(&r.query, 1, r.start.unwrap_or(u64::MAX)),
            false => self.matching(&r.query, r.start.unwrap_or(1), u64::MAX),
        };
        if r.backwards {
            events.reverse();
        }
        events.truncate(r.limit.unwrap_or(u64::MAX) as usize);
        let head = match r.limit {
            Some(_) => events.last().map(|e| e.position),
            None => Some(self.head()).filter(|&h| h > 0),
        };
        (events, head)
    }
}

/// Random events, queries and requests (splitmix64), numbering the events it makes.
struct Gen {
    state: u64,
    serial: u64,
}

impl Gen {
    fn below(&mut self, n: u64) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let z = (self.state ^ (self.state >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        let z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<T: Clone>(&mut self, from: &[T]) -> T {
        from[self.below(from.len() as u64) as usize].clone()
    }
    /// From 0 to just past `head`; half the time among the newest (where the unindexed tail is).
    fn position(&mut self, head: Position) -> Position {
        let span = if self.chance(50) { 45 } else { head + 3 };
        (head + 2).saturating_sub(self.below(span))
    }
    /// 0 to 3 tags; now and then a type or tag "new{serial}" that no other event carries.
    fn event(&mut self) -> Event {
        self.serial += 1;
        let fresh = format!("new{}", self.serial);
        let mut tags: Vec<&str> = (0..self.below(4)).map(|_| self.pick(&TAGS)).collect();
        tags.extend(self.chance(5).then_some(fresh.as_str()));
        let event_type = match self.chance(3) {
            true => fresh.as_str(),
            false => self.pick(&TYPES),
        };
        let mut event = Event::new(event_type, tags, fresh.clone().into_bytes());
        event.uuid = self.chance(30).then(|| Uuid::from_u128(self.serial.into()));
        event
    }
    /// 0 to 2 names from `pool`, or fresh names of the newest events (most of them unused).
    fn names(&mut self, pool: &[&str]) -> Vec<String> {
        let name = |g: &mut Gen| match g.chance(10) {
            true => format!("new{}", g.serial.saturating_sub(g.below(40))),
            false => g.pick(pool).to_string(),
        };
        (0..self.below(3)).map(|_| name(self)).collect()
    }
    /// 0 to 2 items of 0 to 2 types and 0 to 2 tags each.
    fn query(&mut self) -> Query {
        let item = |g: &mut Gen| QueryItem::new(g.names(&TYPES), g.names(&TAGS));
        Query::from_items((0..self.below(3)).map(|_| item(self)))
    }
    /// The next request of a burst, after requests that append `pending`.
    fn request(&mut self, head: u64, pending: &[Event], retry: &[AppendRequest]) -> AppendRequest {
        let mut events: Vec<Event> = (0..1 + self.below(6)).map(|_| self.event()).collect();
        if !pending.is_empty() && self.chance(50) {
            // A condition on an event of this burst, not yet committed when submitted.
            let e = self.pick(pending);
            let tags: Vec<String> = e.tags.into_iter().take(self.below(2) as usize).collect();
            let after = head + self.below(pending.len() as u64 + 1);
            let fail_if = Query::from_items([QueryItem::new([e.event_type], tags)]);
            conditional(events, fail_if, Some(after))
        } else if !retry.is_empty() && self.chance(8) {
            self.pick(retry)
        } else if self.chance(10) {
            // Keyed, with a condition on a tag they all carry: retrying it is idempotent.
            let tag = self.pick(&TAGS);
            for e in &mut events {
                e.tags.push(tag.into());
                e.uuid = Some(Uuid::from_u128((1 << 64) + u128::from(self.serial)));
                self.serial += 1;
            }
            let fail_if = Query::from_items([QueryItem::new(Vec::<String>::new(), [tag])]);
            conditional(events, fail_if, Some(head))
        } else {
            // Half of them without a condition.
            let after = (!self.chance(25)).then(|| self.position(head + pending.len() as u64));
            let mut request = conditional(events, self.query(), after);
            request.condition = request.condition.filter(|_| self.chance(50));
            request
        }
    }
}

fn same(got: &[SequencedEvent], want: &[SequencedEvent], what: &str) {
    let positions = |e: &[SequencedEvent]| e.iter().map(|e| e.position).collect::<Vec<_>>();
    assert_eq!(positions(got), positions(want), "{what}: positions");
    assert_eq!(got, want, "{what}: contents");
}

/// Begins a random read on every store and takes its first batch; the read is finished, and
/// checked against what the model answers now, by calling the closure returned.
fn begin(g: &mut Gen, model: &Model, stores: &[Store], at: &str) -> impl FnOnce() {
    let start = (!g.chance(25)).then(|| g.position(model.head()));
    let (query, backwards, limit) = (g.query(), g.chance(50), g.chance(50).then(|| g.below(8)));
    let request = ReadRequest {
        query,
        start,
        backwards,
        limit,
    };
    let batch = g.pick(&[1, 2, 5, 1000]);
    let mut readers = Vec::new();
    for store in stores {
        let mut reader = store.read(request.clone()).expect("read");
        let first = reader.next_batch(batch).expect("first batch");
        readers.push((reader, first.unwrap_or_default()));
    }
    let (want, head) = model.read(&request);
    let what = format!("{at}: {request:?} in batches of {batch}");
    move || {
        for ((mut reader, mut got), name) in readers.into_iter().zip(NAMES) {
            while let Some(batch) = reader.next_batch(3).expect("next batch") {
                got.extend(batch);
            }
            let what = format!("{what} {name}");
            same(&got, &want, &what);
            assert_eq!(reader.head(), head, "{what}: head");
        }
    }
}

fn check_reads(g: &mut Gen, model: &Model, stores: &[Store], at: &str) {
    for _ in 0..3 {
        begin(g, model, stores, at)();
    }
    let (query, max) = (g.query(), g.pick(&[0, 1, 5, 99]));
    let (from, to) = (g.position(model.head()), g.position(model.head()));
    let mut want = model.matching(&query, from, to);
    want.truncate(max);
    let what = format!("{at}: read_range({query:?}, {from}, {to}, {max})");
    for (store, name) in stores.iter().zip(NAMES) {
        let got = store.read_range(&query, from, to, max).unwrap();
        same(&got, &want, &format!("{what} {name}"));
    }
}

fn check_store(store: &Store, model: &Model, at: &str) {
    let report = store.check(|_| {}).expect("check");
    assert!(report.is_ok(), "{at}: check found {:?}", report.problems);
    assert_eq!(report.head, model.head(), "{at}: checked head");
}

fn run(seed: u64) {
    let mut g = Gen {
        state: seed,
        serial: 0,
    };
    let options = LAGS.map(|lag| {
        let mut options = StoreOptions::default();
        options.index_lag = lag.unwrap_or(options.index_lag);
        options
    });
    let dirs = LAGS.map(|_| tempfile::tempdir().expect("temp dir"));
    let open = |l: usize| Store::open_with(dirs[l].path(), options[l].clone()).expect("open");
    let mut stores: Vec<Store> = (0..LAGS.len()).map(open).collect();
    let (mut model, mut retry) = (Model::default(), Vec::<AppendRequest>::new());
    let mut open_read: Option<Box<dyn FnOnce()>> = None;
    for step in 0..250 {
        let at = format!("seed {seed:#x} step {step}");
        let mut burst: Vec<AppendRequest> = Vec::new();
        let size = if g.chance(20) { 2 + g.below(4) } else { 1 };
        for _ in 0..size {
            let pending: Vec<Event> = burst.iter().flat_map(|r| r.events.clone()).collect();
            burst.push(g.request(model.head(), &pending, &retry));
        }
        // Back to back into every store, so each writer is likely to commit the burst together.
        let (tx, rx) = mpsc::channel();
        for (l, store) in stores.iter().enumerate() {
            for (i, request) in burst.iter().cloned().enumerate() {
                let tx = tx.clone();
                let reply = move |r: umadb_core::Result<Position>| tx.send((l, i, r)).unwrap();
                store.submit_append(request, Box::new(reply)).unwrap();
            }
        }
        drop(tx);
        let mut got = vec![vec![None; burst.len()]; stores.len()];
        for (l, i, result) in rx {
            got[l][i] = Some(result.map_err(|e| kind(&e)));
        }
        for (i, request) in burst.iter().enumerate() {
            let want = model.append(request);
            for (l, name) in NAMES.iter().enumerate() {
                let what = format!("{at} {name}: request {i} of {}", burst.len());
                assert_eq!(got[l][i], Some(want), "{what}: {request:?}");
            }
            let keyed = request.events.iter().all(|e| e.idempotency_key().is_some());
            if want.is_ok() && keyed && request.condition.is_some() {
                retry.push(request.clone());
            }
        }
        // A read begun before these appends ends now, with the answer of when it began.
        if let Some(finish) = open_read.take() {
            finish();
        }
        if g.chance(4) {
            let l = g.below(3) as usize;
            drop(stores.remove(l));
            stores.insert(l, open(l));
            let at = format!("{at} after reopening {}", NAMES[l]);
            check_store(&stores[l], &model, &at);
            check_reads(&mut g, &model, &stores, &at);
        }
        if step % 2 == 1 {
            check_reads(&mut g, &model, &stores, &at);
            let at = format!("{at} (left open)");
            open_read = Some(Box::new(begin(&mut g, &model, &stores, &at)));
        }
    }
    for (store, name) in stores.iter().zip(NAMES) {
        check_store(store, &model, &format!("seed {seed:#x} {name} at the end"));
    }
}
