//! `umadb-bench`: a load generator for a running UmaDB server (loopback only).
//!
//! ```text
//! umadb-bench prepopulate --events 1000000
//! umadb-bench append --clients 64 --events-per-request 1 --seconds 10 [--conditional] [--boundary-tag]
//! umadb-bench read --clients 1 --seconds 10 [--tag-query | --catch-up]
//! umadb-bench mixed --writers 8 --readers 4 --seconds 10
//! umadb-bench head --clients 64 --seconds 10
//! umadb-bench sweep --workload append --max-clients 256 --seconds 5 --out-dir docs/bench
//! ```
//! Every command prints a markdown table and writes its results as JSON (`--out`).

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use umadb_benches::follow::{self, FollowSpec};
use umadb_benches::report;
use umadb_benches::workload::{self, AppendSpec, ReadSpec, RunResult, Target};

// The load generator shares the machine with the server it measures: glibc's allocator cost it
// about a tenth of its CPU on the HTTP/2 frames and messages of each call, CPU the server then
// did not have. The server binary uses the same allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(version, about = "Load generator for a running UmaDB server")]
struct Cli {
    /// Server URL (loopback only).
    #[arg(
        long,
        global = true,
        default_value = "http://127.0.0.1:50051",
        env = "UMADB_URL"
    )]
    url: String,
    /// API key, if the server requires one.
    #[arg(long, global = true, env = "UMADB_API_KEY")]
    api_key: Option<String>,
    /// Where to write the JSON results.
    #[arg(long, global = true, default_value = "bench-results.json")]
    out: PathBuf,
    /// Run append/read/mixed/follow/head this many times and report the median run (by events/s, or
    /// requests/s for head); every run goes into the JSON. With growth: this many runs at each
    /// store size, the median kept.
    #[arg(long, global = true, default_value_t = 1)]
    repeat: usize,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Fill the store with the standard log: five types, one tag per event out of N/10.
    Prepopulate {
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        #[arg(long, default_value_t = 5_000)]
        batch: u64,
    },
    /// Concurrent appenders.
    Append {
        #[arg(long, default_value_t = 1)]
        clients: usize,
        #[arg(long, default_value_t = 1)]
        events_per_request: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Each request carries a condition on a tag of its own (it never fails); the events
        /// are the same as without it.
        #[arg(long)]
        conditional: bool,
        /// Each request's events also carry that tag of its own, new to the store.
        #[arg(long)]
        boundary_tag: bool,
    },
    /// Concurrent readers of the whole store, or of random tags.
    Read {
        #[arg(long, default_value_t = 1)]
        clients: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long)]
        tag_query: bool,
        /// Catch up through `Subscribe` from the start to the head instead of reading.
        #[arg(long, conflicts_with = "tag_query")]
        catch_up: bool,
        /// Number of distinct tags in the prepopulated log (N/10).
        #[arg(long, default_value_t = 100_000)]
        tags: u64,
    },
    /// Writers and readers at once.
    Mixed {
        #[arg(long, default_value_t = 8)]
        writers: usize,
        #[arg(long, default_value_t = 4)]
        readers: usize,
        #[arg(long, default_value_t = 1)]
        events_per_request: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long)]
        tag_query: bool,
        #[arg(long, default_value_t = 100_000)]
        tags: u64,
    },
    /// Writers appending while live subscriptions follow the store: the writers' rate, and
    /// how many events reach the subscribers how soon (from the append request leaving its
    /// writer to the event arriving). Every subscriber must receive exactly the events it
    /// follows, in order; anything else counts as an error.
    Follow {
        #[arg(long, default_value_t = 8)]
        writers: usize,
        #[arg(long, default_value_t = 4)]
        subscribers: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Subscriber k follows the tag follow-k, and each event carries one such tag in
        /// turn, instead of every subscriber following every event.
        #[arg(long)]
        own_tag: bool,
    },
    /// Concurrent callers of `Head`, which does no storage work: the rate of the gRPC round
    /// trip alone, a ceiling for one-event appends.
    Head {
        #[arg(long, default_value_t = 1)]
        clients: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Append throughput against store size: grow the store step by step (prepopulating) and
    /// measure appends at each size; writes a table and a PNG plot.
    Growth {
        #[arg(long, default_value_t = 10_000_000)]
        max_events: u64,
        #[arg(long, default_value_t = 1_000_000)]
        step: u64,
        #[arg(long, default_value_t = 64)]
        clients: usize,
        #[arg(long, default_value_t = 1)]
        events_per_request: usize,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        #[arg(long, default_value = "docs/bench")]
        out_dir: PathBuf,
    },
    /// One workload at 1, 2, 4, … clients; writes a table and PNG plots.
    Sweep {
        #[arg(long, value_enum)]
        workload: SweepWorkload,
        #[arg(long, default_value_t = 256)]
        max_clients: usize,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        #[arg(long, default_value_t = 1)]
        events_per_request: usize,
        #[arg(long, default_value_t = 100_000)]
        tags: u64,
        #[arg(long, default_value = "docs/bench")]
        out_dir: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum SweepWorkload {
    Append,
    AppendConditional,
    ReadTagQuery,
    ReadWholeStore,
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli).await {
        eprintln!("umadb-bench: {e}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    check_loopback(&cli.url)?;
    let target = Target {
        url: cli.url.clone(),
        api_key: cli.api_key.clone(),
    };
    let repeated = cli.repeat > 1
        && matches!(
            cli.command,
            Command::Append { .. }
                | Command::Read { .. }
                | Command::Mixed { .. }
                | Command::Head { .. }
                | Command::Follow { .. }
        );
    let results: Vec<RunResult> = match cli.command {
        Command::Prepopulate { events, batch } => {
            vec![workload::prepopulate(&target, events, batch.max(1), events).await?]
        }
        Command::Append {
            clients,
            events_per_request,
            seconds,
            conditional,
            boundary_tag,
        } => {
            let spec = AppendSpec {
                events_per_request: events_per_request.max(1),
                conditional,
                boundary_tag,
            };
            let mut runs = Vec::new();
            for _ in 0..cli.repeat.max(1) {
                runs.push(workload::append(&target, clients.max(1), spec, seconds).await);
            }
            median_first(runs)
        }
        Command::Read {
            clients,
            seconds,
            tag_query,
            catch_up,
            tags,
        } => {
            let spec = if catch_up {
                ReadSpec::CatchUp
            } else {
                read_spec(tag_query, tags)
            };
            let mut runs = Vec::new();
            for _ in 0..cli.repeat.max(1) {
                runs.push(workload::read(&target, clients.max(1), spec, seconds).await);
            }
            median_first(runs)
        }
        Command::Mixed {
            writers,
            readers,
            events_per_request,
            seconds,
            tag_query,
            tags,
        } => {
            let spec = AppendSpec {
                events_per_request: events_per_request.max(1),
                conditional: false,
                boundary_tag: false,
            };
            let mut runs = Vec::new();
            for _ in 0..cli.repeat.max(1) {
                runs.push(
                    workload::mixed(
                        &target,
                        writers,
                        spec,
                        readers,
                        read_spec(tag_query, tags),
                        seconds,
                    )
                    .await,
                );
            }
            median_first(runs)
        }
        Command::Follow {
            writers,
            subscribers,
            seconds,
            own_tag,
        } => {
            let spec = if own_tag {
                FollowSpec::OwnTag
            } else {
                FollowSpec::Everything
            };
            let mut runs = Vec::new();
            for _ in 0..cli.repeat.max(1) {
                runs.push(follow::follow(&target, writers, subscribers, spec, seconds).await);
            }
            median_first(runs)
        }
        Command::Head { clients, seconds } => {
            let mut runs = Vec::new();
            for _ in 0..cli.repeat.max(1) {
                runs.push(workload::head(&target, clients.max(1), seconds).await);
            }
            median_first(runs)
        }
        Command::Growth {
            max_events,
            step,
            clients,
            events_per_request,
            seconds,
            out_dir,
        } => {
            let spec = AppendSpec {
                events_per_request: events_per_request.max(1),
                conditional: false,
                boundary_tag: false,
            };
            let mut points = Vec::new();
            let mut results = Vec::new();
            let mut size = step.max(1);
            while size <= max_events {
                workload::prepopulate(&target, size, 5_000, max_events).await?;
                let mut runs = Vec::new();
                for _ in 0..cli.repeat.max(1) {
                    runs.push(workload::append(&target, clients.max(1), spec, seconds).await);
                }
                // The median run stands for this size.
                let Some(result) = median_first(runs).into_iter().next() else {
                    return Err("no run at this store size".into());
                };
                eprintln!("at {size} events: {:.0} events/s", result.events_per_sec);
                points.push((size, result.events_per_sec));
                results.push(result);
                size += step.max(1);
            }
            std::fs::create_dir_all(&out_dir)
                .map_err(|e| format!("cannot create {}: {e}", out_dir.display()))?;
            report::plot_growth(&out_dir, &points)?;
            let mut table = String::from(
                "| store size (events) | append events/s | CPU stolen % |\n|---:|---:|---:|\n",
            );
            for ((size, rate), result) in points.iter().zip(&results) {
                let stolen = report::stolen(result);
                table.push_str(&format!("| {size} | {rate:.0} | {stolen} |\n"));
            }
            std::fs::write(out_dir.join("growth.md"), table)
                .map_err(|e| format!("cannot write the table: {e}"))?;
            results
        }
        Command::Sweep {
            workload: which,
            max_clients,
            seconds,
            events_per_request,
            tags,
            out_dir,
        } => {
            let mut results = Vec::new();
            let mut clients = 1;
            while clients <= max_clients.max(1) {
                let result = match which {
                    SweepWorkload::Append | SweepWorkload::AppendConditional => {
                        let spec = AppendSpec {
                            events_per_request: events_per_request.max(1),
                            conditional: matches!(which, SweepWorkload::AppendConditional),
                            boundary_tag: false,
                        };
                        workload::append(&target, clients, spec, seconds).await
                    }
                    SweepWorkload::ReadTagQuery => {
                        workload::read(&target, clients, ReadSpec::TagQuery { tags }, seconds).await
                    }
                    SweepWorkload::ReadWholeStore => {
                        workload::read(&target, clients, ReadSpec::WholeStore, seconds).await
                    }
                };
                results.push(result);
                clients *= 2;
            }
            std::fs::create_dir_all(&out_dir)
                .map_err(|e| format!("cannot create {}: {e}", out_dir.display()))?;
            let name = results
                .first()
                .map(|r| r.workload.clone())
                .unwrap_or_default();
            let per_event = !matches!(which, SweepWorkload::ReadTagQuery);
            report::plot_sweep(&out_dir, &name, &results, per_event)?;
            let table = report::markdown_table(&results);
            std::fs::write(out_dir.join(format!("{name}.md")), &table)
                .map_err(|e| format!("cannot write the table: {e}"))?;
            eprintln!("plots and table written to {}", out_dir.display());
            results
        }
    };
    let shown = if repeated {
        &results[..1]
    } else {
        &results[..]
    };
    println!("{}", report::markdown_table(shown));
    report::write_json(&cli.out, &results)?;
    eprintln!("results written to {}", cli.out.display());
    Ok(())
}

/// The runs with the median one (by events/s, then requests/s: `head` moves no events) first;
/// the table shows only that one.
fn median_first(mut runs: Vec<RunResult>) -> Vec<RunResult> {
    let mut order: Vec<usize> = (0..runs.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&runs[a], &runs[b]);
        (a.events_per_sec.total_cmp(&b.events_per_sec))
            .then(a.requests_per_sec.total_cmp(&b.requests_per_sec))
    });
    let median = order[order.len() / 2];
    let first = runs.remove(median);
    let mut all = vec![first];
    all.extend(runs);
    all
}

fn read_spec(tag_query: bool, tags: u64) -> ReadSpec {
    if tag_query {
        ReadSpec::TagQuery { tags }
    } else {
        ReadSpec::WholeStore
    }
}

/// The load generator only ever targets this machine.
fn check_loopback(url: &str) -> Result<(), String> {
    let host = url
        .split("://")
        .nth(1)
        .unwrap_or(url)
        .split('/')
        .next()
        .unwrap_or("");
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    match host {
        "127.0.0.1" | "localhost" | "[::1]" | "::1" => Ok(()),
        other if other.starts_with("127.") => Ok(()),
        other => Err(format!(
            "{other} is not a loopback address; umadb-bench only drives a server on this machine"
        )),
    }
}
