//! Durability: a child process appends and acknowledges; it is killed with SIGKILL mid-load,
//! several times; every acknowledged event must be there afterwards, gapless, and the indexes
//! must agree with a full scan.
//!
//! The child is this test binary run again with `--exact durability_child`: that test does
//! nothing unless `UMADB_DURABILITY_CHILD_DIR` is set.

mod common;

use common::model_matches;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use umadb_core::{
    AppendRequest, Event, Position, Query, QueryItem, ReadRequest, SequencedEvent, Store,
    TrackingInfo,
};

const CHILD_DIR: &str = "UMADB_DURABILITY_CHILD_DIR";
const CHILD_THREADS: u64 = 4;

fn source(thread: u64) -> String {
    format!("child-{thread}")
}

/// The events the child appends as `thread`'s `seq`-th request: 1 to 3 of them.
fn expected_events(thread: u64, seq: u64) -> Vec<Event> {
    let n = 1 + seq % 3;
    (0..n)
        .map(|k| {
            Event::new(
                format!("T{}", (seq + k) % 3),
                [format!("thread:{thread}"), format!("k:{k}")],
                format!("{thread}/{seq}/{k}").into_bytes(),
            )
        })
        .collect()
}

/// Appends forever from a few threads, printing `ACK thread seq count position` after each
/// acknowledged append. Each thread resumes after its tracking position, so a seq is never
/// written twice across restarts.
#[test]
fn durability_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let store = Arc::new(Store::open(dir).expect("child opens the store"));
    let handles: Vec<_> = (0..CHILD_THREADS)
        .map(|thread| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut seq = store
                    .tracking_position(&source(thread))
                    .expect("tracking position")
                    .unwrap_or(0);
                loop {
                    seq += 1;
                    let events = expected_events(thread, seq);
                    let n = events.len();
                    let position = store
                        .append(AppendRequest {
                            events,
                            condition: None,
                            tracking_info: Some(TrackingInfo {
                                source: source(thread),
                                position: seq,
                            }),
                        })
                        .expect("child append");
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ACK {thread} {seq} {n} {position}").expect("stdout");
                    out.flush().expect("stdout");
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().expect("child thread");
    }
}

struct Ack {
    thread: u64,
    seq: u64,
    count: u64,
}

fn parse_ack(line: &str) -> Option<(Position, Ack)> {
    let mut fields = line.strip_prefix("ACK ")?.split(' ');
    let mut next = || fields.next()?.parse::<u64>().ok();
    let (thread, seq, count, position) = (next()?, next()?, next()?, next()?);
    Some((position, Ack { thread, seq, count }))
}

fn verify(path: &std::path::Path, acked: &BTreeMap<Position, Ack>) {
    let store = Store::open(path).expect("the store opens after a kill");
    let (events, head) = store.read_all(ReadRequest::default()).expect("full scan");
    let head = head.unwrap_or(0);
    let positions: Vec<Position> = events.iter().map(|e| e.position).collect();
    assert_eq!(positions, (1..=head).collect::<Vec<_>>(), "gapless");

    let mut last_seq = BTreeMap::new();
    for (&last, ack) in acked {
        assert!(
            last <= head,
            "acknowledged position {last} is missing (head {head})"
        );
        let first = last + 1 - ack.count;
        let want = expected_events(ack.thread, ack.seq);
        for (i, event) in want.into_iter().enumerate() {
            let got: &SequencedEvent = &events[(first - 1) as usize + i];
            assert_eq!(got.event, event, "acknowledged event at {}", got.position);
            assert_eq!(
                got.tracking_info,
                Some(TrackingInfo {
                    source: source(ack.thread),
                    position: ack.seq
                })
            );
        }
        let seq = last_seq.entry(ack.thread).or_insert(0);
        *seq = ack.seq.max(*seq);
    }
    for (thread, seq) in last_seq {
        let recorded = store.tracking_position(&source(thread)).unwrap();
        assert!(
            recorded >= Some(seq),
            "tracking of thread {thread}: {recorded:?} < {seq}"
        );
    }

    // Every stored event, acknowledged or not, is one the child wrote, whole.
    for e in &events {
        let info = e
            .tracking_info
            .as_ref()
            .expect("every child append is tracked");
        let thread: u64 = info.source.trim_start_matches("child-").parse().unwrap();
        let data = String::from_utf8(e.event.data.clone()).unwrap();
        let k: usize = data.rsplit('/').next().unwrap().parse().unwrap();
        assert_eq!(e.event, expected_events(thread, info.position)[k]);
    }

    // The indexes agree with a full scan, both ways.
    let mut queries = vec![Query::from_items([QueryItem::new(["T1"], ["k:0"])])];
    for thread in 0..CHILD_THREADS {
        queries.push(Query::from_items([QueryItem::new(
            Vec::<String>::new(),
            [format!("thread:{thread}")],
        )]));
    }
    for t in 0..3 {
        queries.push(Query::from_items([QueryItem::new(
            [format!("T{t}")],
            Vec::<String>::new(),
        )]));
    }
    for query in queries {
        let want: Vec<Position> = events
            .iter()
            .filter(|e| model_matches(&query, &e.event))
            .map(|e| e.position)
            .collect();
        for backwards in [false, true] {
            let (got, _) = store
                .read_all(ReadRequest {
                    query: query.clone(),
                    backwards,
                    ..Default::default()
                })
                .unwrap();
            let mut got: Vec<Position> = got.iter().map(|e| e.position).collect();
            if backwards {
                got.reverse();
            }
            assert_eq!(got, want, "{query:?} backwards={backwards}");
        }
    }
}

#[test]
fn acknowledged_appends_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let exe = std::env::current_exe().unwrap();
    let mut acked: BTreeMap<Position, Ack> = BTreeMap::new();
    for cycle in 0..4u64 {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "durability_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        // Kill after a varying number of acknowledgements, while the child keeps appending.
        let target = 50 + 70 * cycle;
        let mut seen = 0;
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some((position, ack)) = parse_ack(&line) {
                assert!(
                    acked.insert(position, ack).is_none(),
                    "position {position} acknowledged twice"
                );
                seen += 1;
                if seen >= target {
                    break;
                }
            }
        }
        child.kill().unwrap();
        // Acknowledgements already in the pipe count too.
        for line in lines {
            let line = line.unwrap();
            if let Some((position, ack)) = parse_ack(&line) {
                assert!(
                    acked.insert(position, ack).is_none(),
                    "position {position} acknowledged twice"
                );
                seen += 1;
            }
        }
        let status = child.wait().unwrap();
        assert!(
            seen >= target,
            "cycle {cycle}: the child stopped early ({status})"
        );
        assert!(!status.success(), "the child was killed, it did not finish");
        verify(&path, &acked);
    }
    assert!(acked.len() >= 50 + 120 + 190 + 260);
}
