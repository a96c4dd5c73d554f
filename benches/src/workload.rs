//! Workloads that drive a running server over gRPC, one connection per simulated client.

use crate::machine::{CpuClock, CpuShare};
use crate::transport::Connection;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tonic::metadata::MetadataValue;
use tonic::Request;
use umadb_proto::v1::{self, dcb_client::DcbClient};

pub const EVENT_TYPES: [&str; 5] = [
    "OrderPlaced",
    "OrderPaid",
    "OrderShipped",
    "OrderCancelled",
    "CustomerRegistered",
];

/// Where the server is and how to authenticate.
#[derive(Clone, Debug)]
pub struct Target {
    pub url: String,
    pub api_key: Option<String>,
}

impl Target {
    /// A fresh connection (one HTTP/2 connection per call).
    pub async fn connect(&self) -> Result<DcbClient<Connection>, String> {
        let (connection, origin) = Connection::open(&self.url).await?;
        Ok(DcbClient::with_origin(connection, origin)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20))
    }

    pub fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Some(key) = &self.api_key {
            if let Ok(value) = MetadataValue::try_from(format!("Bearer {key}")) {
                request.metadata_mut().insert("authorization", value);
            }
        }
        request
    }
}

/// The prepopulate workload's event number `n` of a log of `total` events: five types, one tag
/// out of total/10, spread evenly, ~100-byte payload.
pub fn standard_event(n: u64, total: u64) -> v1::Event {
    let tags = (total / 10).max(1);
    let mut data = vec![b'x'; 100];
    data[..8].copy_from_slice(&n.to_le_bytes());
    v1::Event {
        event_type: EVENT_TYPES[(n % 5) as usize].to_string(),
        tags: vec![tag_name(n % tags)],
        data,
        uuid: String::new(),
        metadata: Vec::new(),
    }
}

pub fn tag_name(k: u64) -> String {
    format!("tag-{k}")
}

/// What one run measured.
#[derive(Clone, Debug, Serialize)]
pub struct RunResult {
    pub workload: String,
    pub clients: usize,
    pub events_per_request: usize,
    pub seconds: f64,
    pub requests: u64,
    pub events: u64,
    pub errors: u64,
    pub requests_per_sec: f64,
    pub events_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// For mixed runs the readers' share, for follow runs the subscribers', reported
    /// separately.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub readers: Option<Box<RunResult>>,
    /// The whole machine's CPU time over the run (for mixed runs, the writers' time), where
    /// the kernel tells it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuShare>,
}

/// Per-client tallies, merged after the run.
#[derive(Default)]
pub(crate) struct Tally {
    pub(crate) requests: u64,
    pub(crate) events: u64,
    errors: u64,
    latencies_us: Vec<u32>,
    first_error: Option<String>,
}

/// A failed call as the results report it: its code and message.
pub(crate) fn describe(status: tonic::Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

impl Tally {
    /// A client that could not even start: one error, nothing done.
    pub(crate) fn failed(error: String) -> Self {
        Tally {
            errors: 1,
            first_error: Some(error),
            ..Default::default()
        }
    }

    pub(crate) fn record(&mut self, started: Instant, result: Result<u64, String>) {
        self.latency(started.elapsed());
        match result {
            Ok(events) => {
                self.requests += 1;
                self.events += events;
            }
            Err(e) => self.fail(e),
        }
    }

    pub(crate) fn latency(&mut self, latency: Duration) {
        self.latencies_us
            .push(latency.as_micros().min(u32::MAX as u128) as u32);
    }

    pub(crate) fn fail(&mut self, error: String) {
        self.errors += 1;
        self.first_error.get_or_insert(error);
    }
}

pub(crate) fn summarise(
    workload: &str,
    clients: usize,
    per_request: usize,
    elapsed: Duration,
    tallies: Vec<Tally>,
) -> RunResult {
    let mut latencies: Vec<u32> = Vec::new();
    let (mut requests, mut events, mut errors) = (0, 0, 0);
    for tally in tallies {
        requests += tally.requests;
        events += tally.events;
        errors += tally.errors;
        if let Some(e) = tally.first_error {
            eprintln!("{workload}: first error: {e}");
        }
        latencies.extend(tally.latencies_us);
    }
    latencies.sort_unstable();
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let i = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies[i] as f64 / 1000.0
    };
    let seconds = elapsed.as_secs_f64();
    RunResult {
        workload: workload.to_string(),
        clients,
        events_per_request: per_request,
        seconds,
        requests,
        events,
        errors,
        requests_per_sec: requests as f64 / seconds,
        events_per_sec: events as f64 / seconds,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        readers: None,
        cpu: None,
    }
}

pub(crate) fn progress(label: &str, seconds: u64) -> ProgressBar {
    let bar = ProgressBar::new(seconds);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>24} [{bar:30}] {pos}/{len}s {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(label.to_string());
    bar
}

/// Appends standard events until the store holds `total`, in requests of `batch`, showing
/// progress. Tags are drawn as for a log of `log_size` events (log_size/10 distinct tags).
pub async fn prepopulate(
    target: &Target,
    total: u64,
    batch: u64,
    log_size: u64,
) -> Result<RunResult, String> {
    let mut client = target.connect().await?;
    let head = client
        .head(target.request(v1::HeadRequest {}))
        .await
        .map_err(|s| s.message().to_string())?
        .into_inner()
        .position
        .unwrap_or(0);
    if head >= total {
        eprintln!("the store already holds {head} events; nothing to do");
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "prepopulate [{bar:30}] {pos}/{len} events ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_position(head.min(total));
    let started = Instant::now();
    let mut tally = Tally::default();
    let mut n = head;
    while n < total {
        let count = batch.min(total - n);
        let events = (n..n + count)
            .map(|i| standard_event(i, log_size))
            .collect();
        let request = target.request(v1::AppendRequest {
            events,
            condition: None,
            tracking_info: None,
        });
        let t = Instant::now();
        let result = client
            .append(request)
            .await
            .map(|_| count)
            .map_err(|s| s.message().to_string());
        if let Err(e) = &result {
            return Err(format!("prepopulate failed at event {n}: {e}"));
        }
        tally.record(t, result);
        n += count;
        bar.set_position(n);
    }
    bar.finish();
    Ok(summarise(
        "prepopulate",
        1,
        batch as usize,
        started.elapsed(),
        vec![tally],
    ))
}

/// How each append request is built.
#[derive(Clone, Copy, Debug)]
pub struct AppendSpec {
    pub events_per_request: usize,
    /// Each request carries a condition: fail if an event with the request's own tag exists
    /// after the position of the client's previous append. It never fails, and it is always
    /// evaluated. The events are the same as without it.
    pub conditional: bool,
    /// Each request's events also carry the request's own tag, a tag new to the store (the
    /// pattern of a boundary that must not exist yet, such as a unique name).
    pub boundary_tag: bool,
}

/// Which reads the readers do.
#[derive(Clone, Copy, Debug)]
pub enum ReadSpec {
    /// Read every event in the store.
    WholeStore,
    /// Read all events of a random tag of the prepopulated log (`tags` distinct tags).
    TagQuery { tags: u64 },
    /// Catch up as an event processor does: `Subscribe` from the start and read until the
    /// head of when the subscription began, then cancel it.
    CatchUp,
}

static UNIQUE: AtomicU64 = AtomicU64::new(0);

async fn append_client(
    target: Target,
    spec: AppendSpec,
    deadline: Instant,
    client_id: usize,
) -> Tally {
    let mut tally = Tally::default();
    let mut client = connect_or_fail!(target);
    let mut after = client
        .head(target.request(v1::HeadRequest {}))
        .await
        .ok()
        .and_then(|r| r.into_inner().position);
    while Instant::now() < deadline {
        let unique = UNIQUE.fetch_add(1, Ordering::Relaxed);
        let boundary = format!("bench-{client_id}-{unique}");
        let events = (0..spec.events_per_request)
            .map(|i| {
                let mut e = standard_event(unique * 1000 + i as u64, 1_000_000);
                // Tags of their own, so that appends leave the prepopulated tags (and so the
                // tag-query workload's ~10 events per tag) as they were.
                e.tags = vec![format!("written-{}", (unique * 1000 + i as u64) % 100_000)];
                if spec.boundary_tag {
                    e.tags.push(boundary.clone());
                }
                e
            })
            .collect();
        let condition = spec.conditional.then(|| v1::AppendCondition {
            fail_if_events_match: Some(v1::Query {
                items: vec![v1::QueryItem {
                    types: Vec::new(),
                    tags: vec![boundary.clone()],
                }],
            }),
            after,
        });
        let request = target.request(v1::AppendRequest {
            events,
            condition,
            tracking_info: None,
        });
        let t = Instant::now();
        let result = match client.append(request).await {
            Ok(response) => {
                after = Some(response.into_inner().position);
                Ok(spec.events_per_request as u64)
            }
            Err(status) => Err(describe(status)),
        };
        tally.record(t, result);
    }
    tally
}

/// Asks for the head over and over: a call with no storage work, so its rate is what the gRPC
/// round trip alone allows on this machine (the ceiling for one-event appends).
async fn head_client(target: Target, deadline: Instant) -> Tally {
    let mut tally = Tally::default();
    let mut client = connect_or_fail!(target);
    while Instant::now() < deadline {
        let t = Instant::now();
        let result = match client.head(target.request(v1::HeadRequest {})).await {
            Ok(_) => Ok(0),
            Err(status) => Err(describe(status)),
        };
        tally.record(t, result);
    }
    tally
}

async fn read_client(target: Target, spec: ReadSpec, deadline: Instant, client_id: usize) -> Tally {
    let mut tally = Tally::default();
    let mut client = connect_or_fail!(target);
    let mut k = client_id as u64 * 7919;
    while Instant::now() < deadline {
        if let ReadSpec::CatchUp = spec {
            let t = Instant::now();
            let result = catch_up(&target, &mut client).await;
            tally.record(t, result);
            continue;
        }
        let query = match spec {
            ReadSpec::WholeStore | ReadSpec::CatchUp => None,
            ReadSpec::TagQuery { tags } => {
                k = (k + 104_729) % tags.max(1);
                Some(v1::Query {
                    items: vec![v1::QueryItem {
                        types: Vec::new(),
                        tags: vec![tag_name(k)],
                    }],
                })
            }
        };
        let request = target.request(v1::ReadRequest {
            query,
            start: None,
            backwards: None,
            limit: None,
            subscribe: None,
            batch_size: None,
        });
        let t = Instant::now();
        match read_until(&mut client, request, deadline).await {
            Ok(Read::Whole(events)) => tally.record(t, Ok(events)),
            // Cut at the deadline: its events count, as a read it is not complete.
            Ok(Read::Cut(events)) => tally.events += events,
            Err(e) => tally.record(t, Err(e)),
        }
    }
    tally
}

/// What a read got before its stream ended or the run's deadline passed.
enum Read {
    Whole(u64),
    Cut(u64),
}

/// Subscribes from the start and reads until the head of when it began; the events read.
async fn catch_up(target: &Target, client: &mut DcbClient<Connection>) -> Result<u64, String> {
    let head = client
        .head(target.request(v1::HeadRequest {}))
        .await
        .map_err(describe)?
        .into_inner()
        .position
        .unwrap_or(0);
    let request = target.request(v1::SubscribeRequest {
        query: None,
        after: None,
        batch_size: None,
    });
    let mut stream = client
        .subscribe(request)
        .await
        .map_err(describe)?
        .into_inner();
    let mut events = 0;
    while events < head {
        let Some(response) = stream.message().await.map_err(describe)? else {
            return Err(format!(
                "the subscription ended after {events} of {head} events"
            ));
        };
        events += response.events.len() as u64;
    }
    Ok(events)
}

/// Reads to the end of the stream, or until `deadline`: a whole-store read can take longer
/// than a run, and its events count only while the run lasts (in a mixed run, only while the
/// writers write).
async fn read_until(
    client: &mut DcbClient<Connection>,
    request: Request<v1::ReadRequest>,
    deadline: Instant,
) -> Result<Read, String> {
    let mut stream = client.read(request).await.map_err(describe)?.into_inner();
    let mut events = 0;
    let mut past_deadline = false;
    while let Some(response) = stream.message().await.map_err(describe)? {
        // A batch after the one that crossed the deadline: the read would go on, so it is cut
        // (that batch uncounted). A stream that ends instead was read whole.
        if past_deadline {
            return Ok(Read::Cut(events));
        }
        events += response.events.len() as u64;
        past_deadline = Instant::now() >= deadline;
    }
    Ok(Read::Whole(events))
}

/// `clients` appenders for `seconds`.
pub async fn append(target: &Target, clients: usize, spec: AppendSpec, seconds: u64) -> RunResult {
    let name = match (spec.conditional, spec.boundary_tag) {
        (false, false) => "append",
        (true, false) => "append-conditional",
        (false, true) => "append-boundary-tag",
        (true, true) => "append-conditional-boundary-tag",
    };
    let label = format!("{name} x{clients} ({}/req)", spec.events_per_request);
    let (elapsed, tallies, cpu) = run_clients(&label, seconds, clients, |id, deadline| {
        tokio::spawn(append_client(target.clone(), spec, deadline, id))
    })
    .await;
    RunResult {
        cpu,
        ..summarise(name, clients, spec.events_per_request, elapsed, tallies)
    }
}

/// `clients` callers of `Head` for `seconds`.
pub async fn head(target: &Target, clients: usize, seconds: u64) -> RunResult {
    let (elapsed, tallies, cpu) = run_clients(
        &format!("head x{clients}"),
        seconds,
        clients,
        |_, deadline| tokio::spawn(head_client(target.clone(), deadline)),
    )
    .await;
    RunResult {
        cpu,
        ..summarise("head", clients, 0, elapsed, tallies)
    }
}

/// `clients` readers for `seconds`.
pub async fn read(target: &Target, clients: usize, spec: ReadSpec, seconds: u64) -> RunResult {
    let name = match spec {
        ReadSpec::WholeStore => "read-whole-store",
        ReadSpec::TagQuery { .. } => "read-tag-query",
        ReadSpec::CatchUp => "subscribe-catch-up",
    };
    let (elapsed, tallies, cpu) = run_clients(
        &format!("{name} x{clients}"),
        seconds,
        clients,
        |id, deadline| tokio::spawn(read_client(target.clone(), spec, deadline, id)),
    )
    .await;
    RunResult {
        cpu,
        ..summarise(name, clients, 0, elapsed, tallies)
    }
}

/// Writers and readers at once; the writers' figures, with the readers' nested.
pub async fn mixed(
    target: &Target,
    writers: usize,
    append_spec: AppendSpec,
    readers: usize,
    read_spec: ReadSpec,
    seconds: u64,
) -> RunResult {
    let cpu = CpuClock::start();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let bar = progress(&format!("mixed {writers}w+{readers}r"), seconds);
    let ticker = tick(bar.clone(), started, seconds);
    // The readers get threads of their own, as separate client processes would have: on one
    // runtime, writers' requests would queue behind the decoding of the readers' large
    // responses inside this load generator, and that is not the server's doing.
    let reader_runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bench-reader")
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            let failed = Tally::failed(format!("cannot start the readers' runtime: {e}"));
            return summarise("mixed-writers", writers, 0, started.elapsed(), vec![failed]);
        }
    };
    let writer_tasks: Vec<_> = (0..writers)
        .map(|id| tokio::spawn(append_client(target.clone(), append_spec, deadline, id)))
        .collect();
    let reader_tasks: Vec<_> = (0..readers)
        .map(|id| reader_runtime.spawn(read_client(target.clone(), read_spec, deadline, id)))
        .collect();
    // Each side's rate over its own time: both stop at the deadline, but a side's last request
    // may end a little after it.
    let writer_tallies = join_all(writer_tasks).await;
    let writers_elapsed = started.elapsed();
    let writers_cpu = cpu.share();
    let reader_tallies = join_all(reader_tasks).await;
    let readers_elapsed = started.elapsed();
    reader_runtime.shutdown_background();
    ticker.abort();
    bar.finish();
    let mut result = summarise(
        "mixed-writers",
        writers,
        append_spec.events_per_request,
        writers_elapsed,
        writer_tallies,
    );
    result.cpu = writers_cpu;
    result.readers = Some(Box::new(summarise(
        "mixed-readers",
        readers,
        0,
        readers_elapsed,
        reader_tallies,
    )));
    result
}

async fn run_clients(
    label: &str,
    seconds: u64,
    clients: usize,
    spawn: impl Fn(usize, Instant) -> tokio::task::JoinHandle<Tally>,
) -> (Duration, Vec<Tally>, Option<CpuShare>) {
    let cpu = CpuClock::start();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let bar = progress(label, seconds);
    let ticker = tick(bar.clone(), started, seconds);
    let tasks: Vec<_> = (0..clients).map(|id| spawn(id, deadline)).collect();
    let tallies = join_all(tasks).await;
    let elapsed = started.elapsed();
    let cpu = cpu.share();
    ticker.abort();
    bar.finish();
    (elapsed, tallies, cpu)
}

pub(crate) fn tick(
    bar: ProgressBar,
    started: Instant,
    seconds: u64,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            bar.set_position(started.elapsed().as_secs().min(seconds));
        }
    })
}

pub(crate) async fn join_all(tasks: Vec<tokio::task::JoinHandle<Tally>>) -> Vec<Tally> {
    let mut tallies = Vec::with_capacity(tasks.len());
    for task in tasks {
        tallies.push(
            task.await
                .unwrap_or_else(|e| Tally::failed(format!("client task failed: {e}"))),
        );
    }
    tallies
}
