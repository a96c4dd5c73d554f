//! umadb-soak: a bounded mixed read/write/subscribe soak of a `umadb` server on loopback.
//!
//! It starts the server itself (a fresh store in a temporary directory), drives writers
//! (conditional and plain appends), readers and subscribers for `--duration` seconds, and prints
//! one line per `--interval`: throughput, the server's memory, and errors. At the end it stops
//! the server with SIGTERM and runs `umadb check` on the store.
//!
//! ```sh
//! cargo build --release -p umadb-server -p umadb-benches
//! ./target/release/umadb-soak --duration 600
//! ```

use clap::Parser;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};
use umadb_proto::v1;
use umadb_proto::v1::dcb_client::DcbClient;

#[derive(Parser, Debug)]
#[command(
    name = "umadb-soak",
    about = "Mixed read/write/subscribe soak of a umadb server"
)]
struct Args {
    /// Seconds to run
    #[arg(long, default_value_t = 600)]
    duration: u64,
    /// Seconds between report lines
    #[arg(long, default_value_t = 10)]
    interval: u64,
    /// Concurrent writers
    #[arg(long, default_value_t = 8)]
    writers: usize,
    /// Concurrent readers
    #[arg(long, default_value_t = 4)]
    readers: usize,
    /// Concurrent subscribers (half follow everything, half one writer's tag)
    #[arg(long, default_value_t = 8)]
    subscribers: usize,
    /// Idle subscriptions held open (on a type nothing has) besides the load
    #[arg(long, default_value_t = 0)]
    idle_subscriptions: usize,
    /// Readers of the whole log that never read their stream
    #[arg(long, default_value_t = 0)]
    stalled_readers: usize,
    /// The umadb binary (default: next to this one)
    #[arg(long)]
    umadb: Option<PathBuf>,
    /// Keep the store here instead of a temporary directory
    #[arg(long)]
    db_path: Option<PathBuf>,
}

#[derive(Default)]
struct Counters {
    appends: AtomicU64,
    appended_events: AtomicU64,
    read_events: AtomicU64,
    subscribed_events: AtomicU64,
    errors: AtomicU64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let umadb = args.umadb.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("umadb")))
            .unwrap_or_else(|| PathBuf::from("umadb"))
    });
    let temp = match tempfile_dir() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("cannot create a temporary directory: {e}");
            return ExitCode::FAILURE;
        }
    };
    let db = args.db_path.clone().unwrap_or_else(|| temp.join("db"));
    let mut server = match Command::new(&umadb)
        .args(["--listen", "127.0.0.1:0", "--db-path"])
        .arg(&db)
        .env("RUST_LOG", "warn,umadb_server=info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            eprintln!(
                "cannot start {}: {e} (build it: cargo build --release -p umadb-server)",
                umadb.display()
            );
            return ExitCode::FAILURE;
        }
    };
    let pid = server.id();
    let Some(stderr) = server.stderr.take() else {
        return ExitCode::FAILURE;
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on ").nth(1) {
                let addr = rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string();
                let _ = tx.send(addr);
            } else if line.contains("ERROR") || line.contains("WARN") {
                eprintln!("server: {line}");
            }
        }
    });
    let addr: SocketAddr = match rx.recv_timeout(Duration::from_secs(30)).map(|a| a.parse()) {
        Ok(Ok(addr)) => addr,
        _ => {
            eprintln!("the server did not start");
            let _ = server.kill();
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(soak(&args, addr, pid));
    // A graceful stop (SIGTERM), as an operator would.
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
    let status = server.wait();
    println!("server stopped: {status:?}");
    let check = Command::new(&umadb)
        .arg("check")
        .arg("--db-path")
        .arg(&db)
        .output();
    let clean = match check {
        Ok(out) => {
            print!("{}", String::from_utf8_lossy(&out.stdout));
            out.status.success()
        }
        Err(e) => {
            eprintln!("cannot run umadb check: {e}");
            false
        }
    };
    if args.db_path.is_none() {
        let _ = std::fs::remove_dir_all(&temp);
    }
    if outcome && clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn tempfile_dir() -> std::io::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("umadb-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

async fn connect(addr: SocketAddr) -> Option<DcbClient<Channel>> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .ok()?
        .connect()
        .await
        .ok()?;
    Some(DcbClient::new(channel).max_decoding_message_size(64 << 20))
}

fn event(event_type: &str, tags: Vec<String>, data: Vec<u8>) -> v1::Event {
    v1::Event {
        event_type: event_type.into(),
        tags,
        data,
        uuid: String::new(),
        metadata: Vec::new(),
    }
}

fn query(types: &[&str], tags: &[String]) -> Option<v1::Query> {
    Some(v1::Query {
        items: vec![v1::QueryItem {
            types: types.iter().map(|t| t.to_string()).collect(),
            tags: tags.to_vec(),
        }],
    })
}

/// Runs the load and prints a line per interval; false if anything went wrong.
async fn soak(args: &Args, addr: SocketAddr, pid: u32) -> bool {
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..args.writers {
        let (counters, stop) = (counters.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let Some(mut client) = connect(addr).await else {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                return;
            };
            let tag = format!("writer-{w}");
            let mut last: Option<u64> = None;
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                seq += 1;
                let count = 1 + (seq % 4) as usize;
                let events = (0..count)
                    .map(|k| {
                        event(
                            "Soak",
                            vec![tag.clone(), format!("k{}", seq % 50)],
                            vec![k as u8; 200],
                        )
                    })
                    .collect();
                let condition = seq.is_multiple_of(2).then(|| v1::AppendCondition {
                    fail_if_events_match: query(&["Soak"], std::slice::from_ref(&tag)),
                    after: last,
                });
                match client
                    .append(v1::AppendRequest {
                        events,
                        condition,
                        tracking_info: None,
                    })
                    .await
                {
                    Ok(r) => {
                        last = Some(r.into_inner().position);
                        counters.appends.fetch_add(1, Ordering::Relaxed);
                        counters
                            .appended_events
                            .fetch_add(count as u64, Ordering::Relaxed);
                    }
                    Err(e) => {
                        counters.errors.fetch_add(1, Ordering::Relaxed);
                        eprintln!("append error: {e:?}");
                    }
                }
            }
        }));
    }
    for r in 0..args.readers {
        let (counters, stop) = (counters.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let Some(mut client) = connect(addr).await else {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                return;
            };
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let request = v1::ReadRequest {
                    query: if i.is_multiple_of(2) {
                        query(&[], &[format!("writer-{}", (r + i as usize) % 8)])
                    } else {
                        None
                    },
                    start: None,
                    backwards: Some(i.is_multiple_of(3)),
                    limit: Some(2_000),
                    subscribe: None,
                    batch_size: None,
                };
                match client.read(request).await {
                    Ok(response) => {
                        let mut stream = response.into_inner();
                        loop {
                            match stream.message().await {
                                Ok(Some(m)) => {
                                    counters
                                        .read_events
                                        .fetch_add(m.events.len() as u64, Ordering::Relaxed);
                                }
                                Ok(None) => break,
                                Err(e) => {
                                    counters.errors.fetch_add(1, Ordering::Relaxed);
                                    eprintln!("read error: {e:?}");
                                    break;
                                }
                            }
                        }
                    }
                    Err(e) => {
                        counters.errors.fetch_add(1, Ordering::Relaxed);
                        eprintln!("read error: {e:?}");
                    }
                }
            }
        }));
    }
    for s in 0..args.subscribers {
        let (counters, stop) = (counters.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let Some(mut client) = connect(addr).await else {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                return;
            };
            let q = if s % 2 == 0 {
                None
            } else {
                query(&[], &[format!("writer-{}", s % 8)])
            };
            let Ok(response) = client
                .subscribe(v1::SubscribeRequest {
                    query: q,
                    after: None,
                    batch_size: None,
                })
                .await
            else {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                return;
            };
            let mut stream = response.into_inner();
            let mut last = 0u64;
            while !stop.load(Ordering::Relaxed) {
                match tokio::time::timeout(Duration::from_millis(500), stream.message()).await {
                    Err(_) => continue,
                    Ok(Ok(Some(m))) => {
                        for e in &m.events {
                            if e.position <= last {
                                counters.errors.fetch_add(1, Ordering::Relaxed);
                                eprintln!("subscriber {s}: position {} after {last}", e.position);
                            }
                            last = e.position;
                        }
                        counters
                            .subscribed_events
                            .fetch_add(m.events.len() as u64, Ordering::Relaxed);
                    }
                    Ok(Ok(None)) => break,
                    Ok(Err(e)) => {
                        counters.errors.fetch_add(1, Ordering::Relaxed);
                        eprintln!("subscription error: {e:?}");
                        break;
                    }
                }
            }
        }));
    }

    // Idle subscriptions and stalled readers, 100 streams per connection, held until the end.
    let mut held: Vec<Box<dyn Send>> = Vec::new();
    let mut client = None;
    for i in 0..args.idle_subscriptions + args.stalled_readers {
        if i.is_multiple_of(100) {
            client = connect(addr).await;
        }
        let Some(c) = client.as_mut() else {
            counters.errors.fetch_add(1, Ordering::Relaxed);
            break;
        };
        let opened = if i < args.idle_subscriptions {
            c.subscribe(v1::SubscribeRequest {
                query: query(&["Never"], &[]),
                after: None,
                batch_size: None,
            })
            .await
            .map(|r| Box::new(r.into_inner()) as Box<dyn Send>)
        } else {
            c.read(v1::ReadRequest::default())
                .await
                .map(|r| Box::new(r.into_inner()) as Box<dyn Send>)
        };
        match opened {
            Ok(stream) => held.push(stream),
            Err(e) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                eprintln!("cannot open a held stream: {e:?}");
            }
        }
    }
    println!(
        "soak: {} s on {addr} (server pid {pid}): {} writers, {} readers, {} subscribers, {} idle subscriptions, {} stalled readers",
        args.duration, args.writers, args.readers, args.subscribers, args.idle_subscriptions, args.stalled_readers
    );
    println!(
        "{:>6} {:>10} {:>12} {:>12} {:>14} {:>9} {:>9} {:>7}",
        "t(s)",
        "appends/s",
        "events in/s",
        "read ev/s",
        "subscr. ev/s",
        "anon MiB",
        "file MiB",
        "errors"
    );
    let started = Instant::now();
    let mut previous = [0u64; 4];
    let mut peak_rss = 0;
    let interval = Duration::from_secs(args.interval.max(1));
    while started.elapsed() < Duration::from_secs(args.duration) {
        tokio::time::sleep(interval).await;
        let now = [
            counters.appends.load(Ordering::Relaxed),
            counters.appended_events.load(Ordering::Relaxed),
            counters.read_events.load(Ordering::Relaxed),
            counters.subscribed_events.load(Ordering::Relaxed),
        ];
        let secs = interval.as_secs_f64();
        let rate = |i: usize| (now[i] - previous[i]) as f64 / secs;
        let anon = memory_mib(pid, "RssAnon:").unwrap_or(0.0);
        let file = memory_mib(pid, "RssFile:").unwrap_or(0.0);
        peak_rss = peak_rss.max(anon as u64);
        println!(
            "{:>6.0} {:>10.0} {:>12.0} {:>12.0} {:>14.0} {:>9.1} {:>9.1} {:>7}",
            started.elapsed().as_secs_f64(),
            rate(0),
            rate(1),
            rate(2),
            rate(3),
            anon,
            file,
            counters.errors.load(Ordering::Relaxed)
        );
        previous = now;
    }
    stop.store(true, Ordering::Relaxed);
    drop(held);
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let errors = counters.errors.load(Ordering::Relaxed);
    println!(
        "total: {} appends ({} events, {:.0}/s), {} events read, {} delivered to subscribers, peak server RssAnon {} MiB, {} errors",
        counters.appends.load(Ordering::Relaxed),
        counters.appended_events.load(Ordering::Relaxed),
        counters.appended_events.load(Ordering::Relaxed) as f64 / elapsed,
        counters.read_events.load(Ordering::Relaxed),
        counters.subscribed_events.load(Ordering::Relaxed),
        peak_rss,
        errors
    );
    errors == 0
}

/// A memory figure of a process from /proc/PID/status (RssAnon: heap and stacks; RssFile:
/// pages of the memory-mapped store, which the kernel reclaims as needed), in MiB.
fn memory_mib(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}
