//! The follow workload: writers append while subscribers follow the store live, as an
//! application's event processors do. It measures what live subscriptions cost the writers and
//! how soon a committed event reaches the subscriptions that match it, and it checks that each
//! subscriber receives exactly the events it follows, in order, none missing.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::machine::CpuClock;
use crate::workload::{
    describe, progress, standard_event, summarise, tick, RunResult, Tally, Target,
};
use umadb_proto::v1;

/// How long subscribers may take, after the writers stop, to receive the events written.
const DRAIN: Duration = Duration::from_secs(10);

/// How often a subscriber waiting for its last events looks whether it has them all.
const POLL: Duration = Duration::from_millis(50);

/// Which events each subscriber follows.
#[derive(Clone, Copy, Debug)]
pub enum FollowSpec {
    /// Every subscriber follows every event (a query that matches everything).
    Everything,
    /// Subscriber `k` follows the tag `follow-k`; the writers give each event one such tag, in
    /// turn, so each event reaches one subscriber and the others stay idle for it.
    OwnTag,
}

/// The tag subscriber `k` follows under [`FollowSpec::OwnTag`].
pub fn follow_tag(k: usize) -> String {
    format!("follow-{k}")
}

/// What the writers tell the subscribers.
struct Shared {
    /// When the run started: events carry their send time as microseconds since then.
    epoch: Instant,
    /// Events written that each subscriber follows.
    written: Vec<AtomicU64>,
    /// Set once the writers have stopped: `written` is final.
    writers_done: AtomicBool,
}

impl Shared {
    fn micros(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }
}

/// `writers` appenders (one event per request) and `subscribers` live subscriptions for
/// `seconds`. The writers' figures, with the subscribers' nested: events delivered (to all of
/// them together) per second of the writers' run, and each delivery's latency, from the append
/// request leaving its writer to the event reaching a subscriber.
pub async fn follow(
    target: &Target,
    writers: usize,
    subscribers: usize,
    spec: FollowSpec,
    seconds: u64,
) -> RunResult {
    let name = match spec {
        FollowSpec::Everything => "follow",
        FollowSpec::OwnTag => "follow-own-tag",
    };
    let writers = writers.max(1);
    let subscribers = subscribers.max(1);
    let began = Instant::now();
    let start = match first_head(target).await {
        Ok(head) => head,
        Err(e) => {
            let failed = Tally::failed(format!("cannot read the head: {e}"));
            return summarise(
                &format!("{name}-writers"),
                writers,
                1,
                began.elapsed(),
                vec![failed],
            );
        }
    };
    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        written: (0..subscribers).map(|_| AtomicU64::new(0)).collect(),
        writers_done: AtomicBool::new(false),
    });
    // Subscribed after the head read before any writer starts: every event written comes
    // after it, whether a subscription reaches the server before the first append or after.
    let subscriber_tasks: Vec<_> = (0..subscribers)
        .map(|k| {
            tokio::spawn(subscriber(
                target.clone(),
                spec,
                k,
                start,
                shared.clone(),
                seconds,
            ))
        })
        .collect();
    let cpu = CpuClock::start();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let bar = progress(&format!("{name} {writers}w+{subscribers}s"), seconds);
    let ticker = tick(bar.clone(), started, seconds);
    let writer_tasks: Vec<_> = (0..writers)
        .map(|_| tokio::spawn(writer(target.clone(), spec, shared.clone(), deadline)))
        .collect();
    let writer_tallies = crate::workload::join_all(writer_tasks).await;
    let elapsed = started.elapsed();
    let writers_cpu = cpu.share();
    shared.writers_done.store(true, Ordering::SeqCst);
    let subscriber_tallies = crate::workload::join_all(subscriber_tasks).await;
    ticker.abort();
    bar.finish();
    let mut result = summarise(
        &format!("{name}-writers"),
        writers,
        1,
        elapsed,
        writer_tallies,
    );
    result.cpu = writers_cpu;
    result.readers = Some(Box::new(summarise(
        &format!("{name}-subscribers"),
        subscribers,
        0,
        elapsed,
        subscriber_tallies,
    )));
    result
}

async fn first_head(target: &Target) -> Result<u64, String> {
    let mut client = target.connect().await?;
    let head = client
        .head(target.request(v1::HeadRequest {}))
        .await
        .map_err(describe)?;
    Ok(head.into_inner().position.unwrap_or(0))
}

static NEXT: AtomicU64 = AtomicU64::new(0);

/// Appends one event per request until `deadline`, each stamped with its send time and, under
/// [`FollowSpec::OwnTag`], carrying the tag of one subscriber in turn.
async fn writer(target: Target, spec: FollowSpec, shared: Arc<Shared>, deadline: Instant) -> Tally {
    let mut tally = Tally::default();
    let mut client = connect_or_fail!(target);
    let subscribers = shared.written.len();
    while Instant::now() < deadline {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let mut event = standard_event(n, 1_000_000);
        event.tags = vec![format!("written-{}", n % 100_000)];
        let follower = (n % subscribers as u64) as usize;
        if let FollowSpec::OwnTag = spec {
            event.tags.push(follow_tag(follower));
        }
        let t = Instant::now();
        event.data[8..16].copy_from_slice(&shared.micros().to_le_bytes());
        let request = target.request(v1::AppendRequest {
            events: vec![event],
            condition: None,
            tracking_info: None,
        });
        let result = match client.append(request).await {
            Ok(_) => {
                match spec {
                    FollowSpec::Everything => {
                        for written in &shared.written {
                            written.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    FollowSpec::OwnTag => {
                        shared.written[follower].fetch_add(1, Ordering::SeqCst);
                    }
                }
                Ok(1)
            }
            Err(status) => Err(describe(status)),
        };
        tally.record(t, result);
    }
    tally
}

/// Follows the store from `start` until it has received every event written that it follows
/// (known once the writers stop), checking each: in order, none missing, none it does not
/// follow. Each event's delivery latency goes into the tally; each message counts as a request.
async fn subscriber(
    target: Target,
    spec: FollowSpec,
    k: usize,
    start: u64,
    shared: Arc<Shared>,
    seconds: u64,
) -> Tally {
    let mut tally = Tally::default();
    let mut client = connect_or_fail!(target);
    let tag = follow_tag(k);
    let query = match spec {
        FollowSpec::Everything => None,
        FollowSpec::OwnTag => Some(v1::Query {
            items: vec![v1::QueryItem {
                types: Vec::new(),
                tags: vec![tag.clone()],
            }],
        }),
    };
    let request = target.request(v1::SubscribeRequest {
        query,
        after: Some(start),
        batch_size: None,
    });
    let mut stream = match client.subscribe(request).await {
        Ok(response) => response.into_inner(),
        Err(s) => return Tally::failed(describe(s)),
    };
    let give_up = Instant::now() + Duration::from_secs(seconds) + DRAIN;
    let mut last = start;
    let mut received = 0u64;
    loop {
        if shared.writers_done.load(Ordering::SeqCst)
            && received >= shared.written[k].load(Ordering::SeqCst)
        {
            return tally;
        }
        if Instant::now() >= give_up {
            let want = shared.written[k].load(Ordering::SeqCst);
            tally.fail(format!(
                "subscriber {k} received {received} of the {want} events it follows"
            ));
            return tally;
        }
        let message = match tokio::time::timeout(POLL, stream.message()).await {
            Err(_) => continue,
            Ok(Ok(Some(message))) => message,
            Ok(Ok(None)) => {
                tally.fail(format!("subscriber {k}'s subscription ended"));
                return tally;
            }
            Ok(Err(s)) => {
                tally.fail(describe(s));
                return tally;
            }
        };
        let now = shared.micros();
        tally.requests += 1;
        for sequenced in &message.events {
            let in_order = match spec {
                FollowSpec::Everything => sequenced.position == last + 1,
                FollowSpec::OwnTag => sequenced.position > last,
            };
            let followed = sequenced.event.as_ref().is_some_and(|e| match spec {
                FollowSpec::Everything => true,
                FollowSpec::OwnTag => e.tags.contains(&tag),
            });
            if !in_order || !followed {
                tally.fail(format!(
                    "subscriber {k} received position {} after {last}{}",
                    sequenced.position,
                    if followed {
                        ""
                    } else {
                        ", an event it does not follow"
                    }
                ));
                return tally;
            }
            last = sequenced.position;
            received += 1;
            tally.events += 1;
            if let Some(sent) = sequenced.event.as_ref().and_then(|e| sent_at(&e.data)) {
                tally.latency(Duration::from_micros(now.saturating_sub(sent)));
            }
        }
    }
}

/// The send time a writer stamped into an event's data.
fn sent_at(data: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = data.get(8..16)?.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}
