//! Crash safety of the `umadb` binary: a crash loop (concurrent conditional, unconditional and
//! tracked appends; SIGKILL at a random moment; `umadb check`; restart; every acknowledged
//! event present with the same content), power cuts under load (the same load, with the
//! server's writes and flushes recorded, and the files a power cut could have left rebuilt from
//! the record: see `power/mod.rs`), and `umadb backup` under write load.

mod common;
mod power;
mod support;

use common::{append, event, item, positions, query, read_all};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::*;
use tonic::Code;
use umadb_proto::v1;
use umadb_proto::v1::dcb_client::DcbClient;

const CYCLES: u64 = 20;
const WRITERS: usize = 4;

/// One acknowledged append: its last position, what it wrote, and its tracking info.
#[derive(Clone, Debug)]
struct Acked {
    last: u64,
    events: Vec<v1::Event>,
    tracking: Option<(String, u64)>,
}

/// A client of the server at `addr`, or None if it cannot be reached (killed already).
async fn connect(addr: SocketAddr) -> Option<DcbClient<tonic::transport::Channel>> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).ok()?;
    Some(DcbClient::new(endpoint.connect().await.ok()?))
}

/// A writer appending in a loop until the connection breaks. Its appends rotate between
/// unconditional, conditional (on a tag only this writer uses in this cycle, so the condition
/// must always pass) and tracked (a position increasing across cycles).
async fn writer(
    addr: SocketAddr,
    cycle: u64,
    writer: usize,
    acked: Arc<AtomicUsize>,
) -> Vec<Acked> {
    let mut done = Vec::new();
    let Some(mut client) = connect(addr).await else {
        return done;
    };
    let own = format!("c{cycle}-w{writer}");
    let source = format!("source-{writer}");
    let mut own_last: Option<u64> = None;
    for seq in 0..100_000u64 {
        let events: Vec<v1::Event> = (0..=(seq % 3))
            .map(|k| {
                let mut e = event(
                    if k == 0 { "First" } else { "Next" },
                    &[&own, &format!("seq-{}", seq % 5)],
                    format!("{own}:{seq}:{k}").as_bytes(),
                );
                e.uuid = format!(
                    "{:08x}-0000-4000-8000-{:012x}",
                    writer,
                    cycle * 1_000_000 + seq * 4 + k
                );
                e
            })
            .collect();
        let mut request = v1::AppendRequest {
            events: events.clone(),
            condition: None,
            tracking_info: None,
        };
        let mut tracking = None;
        match seq % 3 {
            1 => {
                request.condition = Some(v1::AppendCondition {
                    fail_if_events_match: query(vec![item(&[], &[&own])]),
                    after: own_last,
                });
            }
            2 => {
                let position = cycle * 1_000_000 + seq;
                request.tracking_info = Some(v1::TrackingInfo {
                    source: source.clone(),
                    position,
                });
                tracking = Some((source.clone(), position));
            }
            _ => {}
        }
        match client.append(request).await {
            Ok(response) => {
                let last = response.into_inner().position;
                own_last = Some(last);
                done.push(Acked {
                    last,
                    events,
                    tracking,
                });
                acked.fetch_add(1, Ordering::SeqCst);
            }
            Err(status) => {
                // Only the kill may stop a writer: a failed condition here would be a bug.
                assert_ne!(
                    status.code(),
                    Code::FailedPrecondition,
                    "a condition that must pass failed: {status:?}"
                );
                break;
            }
        }
    }
    done
}

/// An event's data in a bulk append: a group holding one has a log record larger than the
/// log takes (8 MiB), so a checkpoint makes its commit durable instead of a record.
const BULK_BYTES: usize = 9 << 20;

/// Appends single events of [`BULK_BYTES`] (at most three) until the connection breaks.
async fn bulk_writer(addr: SocketAddr, cycle: u64, acked: Arc<AtomicUsize>) -> Vec<Acked> {
    let mut done = Vec::new();
    let Some(client) = connect(addr).await else {
        return done;
    };
    let mut client = client.max_encoding_message_size(64 << 20);
    let own = format!("c{cycle}-bulk");
    for seq in 0..3u64 {
        let fill = b'a' + (seq % 26) as u8;
        let mut e = event("Bulk", &[&own], &vec![fill; BULK_BYTES]);
        e.uuid = format!("{:08x}-0000-4000-8000-{:012x}", 0xb01c, cycle * 10 + seq);
        let events = vec![e];
        let request = v1::AppendRequest {
            events: events.clone(),
            condition: None,
            tracking_info: None,
        };
        match client.append(request).await {
            Ok(response) => {
                done.push(Acked {
                    last: response.into_inner().position,
                    events,
                    tracking: None,
                });
                acked.fetch_add(1, Ordering::SeqCst);
            }
            Err(_) => break,
        }
    }
    done
}

/// The generator of a randomised test: seeded from `UMADB_CRASH_SEED` if set, else `default`;
/// the seed is printed so that a failing run can be repeated.
fn seeded(test: &str, default: u64) -> Rng {
    let seed = std::env::var("UMADB_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    eprintln!("{test} seed {seed} (set UMADB_CRASH_SEED to repeat a run)");
    Rng::new(seed)
}

/// When a loaded server is killed.
enum Kill<'a> {
    /// This many milliseconds after the first acknowledgement.
    After(u64),
    /// This many milliseconds after the first acknowledgement of a bulk append.
    AfterBulk(u64),
    /// As soon as the server's trace (`power/mod.rs`) at this path holds a bulk write: while
    /// its commit's flush is most likely still going on.
    AtBulkWrite(&'a Path),
}

/// Runs [`WRITERS`] writers against `server` (with `bulk`, a further one appending events of
/// [`BULK_BYTES`]) and kills it when `kill` says; what they had acknowledged.
async fn load_until_killed(
    server: &mut Umadb,
    cycle: u64,
    bulk: bool,
    kill: Kill<'_>,
) -> Vec<Acked> {
    let acked = Arc::new(AtomicUsize::new(0));
    let mut writers: Vec<_> = (0..WRITERS)
        .map(|w| tokio::spawn(writer(server.addr, cycle, w, acked.clone())))
        .collect();
    let bulk_acked = Arc::new(AtomicUsize::new(0));
    if bulk {
        writers.push(tokio::spawn(bulk_writer(
            server.addr,
            cycle,
            bulk_acked.clone(),
        )));
    }
    eventually("the first acknowledgement", || {
        acked.load(Ordering::SeqCst) > 0
    })
    .await;
    match kill {
        Kill::AtBulkWrite(trace) => {
            // Polled often: the flush of a bulk commit lasts some milliseconds.
            let traced = || std::fs::metadata(trace).map(|m| m.len()).unwrap_or(0);
            let deadline = std::time::Instant::now() + WAIT;
            while traced() <= BULK_BYTES as u64 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "timed out waiting for a bulk write in the trace"
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        Kill::After(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
        Kill::AfterBulk(ms) => {
            eventually("a bulk acknowledgement", || {
                bulk_acked.load(Ordering::SeqCst) > 0
            })
            .await;
            tokio::time::sleep(Duration::from_millis(ms)).await
        }
    }
    server.kill();
    let mut done = Vec::new();
    for w in writers {
        done.extend(w.await.expect("writer task"));
    }
    done
}

/// Every acknowledged append is at its acknowledged positions with the same content, the log is
/// gapless, and every acknowledged tracking position is recorded (or a later one).
async fn verify(server: &Umadb, acknowledged: &[Acked]) {
    let mut client = server.client().await;
    let (events, head) = read_all(&mut client, v1::ReadRequest::default())
        .await
        .expect("read everything");
    let head = head.unwrap_or(0);
    assert_eq!(
        positions(&events),
        (1..=head).collect::<Vec<_>>(),
        "gapless"
    );
    let mut tracked: HashMap<String, u64> = HashMap::new();
    for acked in acknowledged {
        let first = acked.last + 1 - acked.events.len() as u64;
        for (offset, expected) in acked.events.iter().enumerate() {
            let position = first + offset as u64;
            assert!(
                position <= head,
                "acknowledged position {position} lost (head {head})"
            );
            let recorded = events[(position - 1) as usize]
                .event
                .as_ref()
                .expect("event");
            assert_eq!(recorded, expected, "content at position {position}");
        }
        if let Some((source, position)) = &acked.tracking {
            let entry = tracked.entry(source.clone()).or_default();
            *entry = (*entry).max(*position);
        }
    }
    for (source, at_least) in tracked {
        let recorded = client
            .get_tracking_info(v1::TrackingRequest {
                source: source.clone(),
            })
            .await
            .expect("tracking")
            .into_inner()
            .position
            .unwrap_or(0);
        assert!(
            recorded >= at_least,
            "tracking position of {source}: acknowledged {at_least}, recorded {recorded}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loop_of_sigkills_under_load_never_loses_or_damages_acknowledged_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("db");
    let mut rng = seeded("crash loop", 0x5eed);
    let mut acknowledged: Vec<Acked> = Vec::new();
    for cycle in 0..CYCLES {
        let mut server = Umadb::spawn(&db, &[]);
        verify(&server, &acknowledged).await;
        let done =
            load_until_killed(&mut server, cycle, false, Kill::After(20 + rng.below(200))).await;
        eprintln!(
            "cycle {cycle}: {} appends acknowledged before SIGKILL",
            done.len()
        );
        acknowledged.extend(done);
        assert_check_clean(&db);
    }
    let server = Umadb::spawn(&db, &[]);
    verify(&server, &acknowledged).await;
    let events: usize = acknowledged.iter().map(|a| a.events.len()).sum();
    eprintln!(
        "{CYCLES} cycles, {} acknowledged appends, {events} acknowledged events",
        acknowledged.len()
    );
    assert!(
        acknowledged.len() as u64 >= CYCLES,
        "the load made too little progress to prove anything"
    );
}

/// A temporary directory, the power-cut recorder built in it, and an empty store directory in
/// it by its canonical path (the recorder matches the paths the server opens, which LMDB's are).
fn recorded_store() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let recorder = power::build_recorder(dir.path());
    let db = dir.path().join("db");
    std::fs::create_dir_all(&db).expect("store directory");
    let db = db.canonicalize().expect("canonical store path");
    (dir, recorder, db)
}

/// The server on `db` with the recorder loaded, tracing into `trace`.
fn spawn_recorded(db: &Path, recorder: &Path, trace: &Path, args: &[&str]) -> Umadb {
    Umadb::try_spawn_with(db, args, |command| {
        power::record(command, recorder, db, trace);
    })
    .unwrap_or_else(|log| panic!("umadb did not start under the recorder:\n{log}"))
}

/// `umadb ARGS` (an admin command) with the recorder loaded, recording the files of `dir` into
/// `trace`.
fn umadb_recorded(
    args: &[&std::ffi::OsStr],
    recorder: &Path,
    dir: &Path,
    trace: &Path,
) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_umadb"));
    command.args(args).env("RUST_LOG", "warn");
    power::record(&mut command, recorder, dir, trace)
        .output()
        .expect("umadb runs")
}

/// `umadb check` on `image` (by its canonical path) under the recorder, tracing into `trace`:
/// (exit code, stdout + stderr).
fn check_recorded(image: &Path, recorder: &Path, trace: &Path) -> (Option<i32>, String) {
    let image = image.canonicalize().expect("canonical image path");
    let _ = std::fs::remove_file(trace);
    let output = umadb_recorded(
        &["check".as_ref(), "--db-path".as_ref(), image.as_os_str()],
        recorder,
        &image,
        trace,
    );
    let text = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.code(), text)
}

/// After [`check_recorded`] opened a state (as `before` held it) and applied its log,
/// tracing into `trace`: two states a power cut at a random moment of that opening could have
/// left, each to pass `umadb check` and hold every acknowledged append. How many were staged.
async fn power_cuts_while_opening(
    before: &power::Files,
    trace: &Path,
    work: &Path,
    acknowledged: &[Acked],
    rng: &mut Rng,
) -> usize {
    let records = power::Files::trace_records(trace);
    for k in 0..2 {
        let mut files = before.clone();
        let at = rng.below(records as u64 + 1) as usize;
        files.apply_trace_prefix(trace, at);
        let state = work.join(format!("opening-cut-{k}"));
        let _ = std::fs::remove_dir_all(&state);
        files.power_cut(&state, |choices| rng.below(choices as u64) as usize);
        let (code, text) = check(&state);
        assert_eq!(
            code,
            Some(0),
            "a power cut after {at} of the {records} records an opening traced: umadb check \
             failed:\n{text}"
        );
        let server = Umadb::spawn(&state, &[]);
        verify(&server, acknowledged).await;
    }
    2
}

/// The states a power cut at about `points` moments of the run traced into `trace` (from the
/// files `before` held) could leave: at each, none of the writes not surely flushed, all of the
/// newest, and one of each at random. Each is written under `work` as it is handed to `check`
/// (with what it is, for messages), and removed after.
fn each_cut_state(
    before: &power::Files,
    trace: &Path,
    work: &Path,
    points: usize,
    rng: &mut Rng,
    mut check: impl FnMut(&Path, &str),
) -> usize {
    let records = power::Files::trace_records(trace);
    let step = (records / points).max(1);
    let mut states = 0;
    for at in (0..=records).step_by(step) {
        let mut files = before.clone();
        files.apply_trace_prefix(trace, at);
        for k in 0..3 {
            let state = work.join(format!("cut-{at}-{k}"));
            files.power_cut(&state, |choices| match k {
                0 => 0,
                1 => choices - 1,
                _ => rng.below(choices as u64) as usize,
            });
            check(
                &state,
                &format!("a power cut after {at} of the {records} traced records (state {k})"),
            );
            std::fs::remove_dir_all(&state).expect("remove the state");
            states += 1;
        }
    }
    println!("{states} states of {records} traced records checked");
    states
}

/// `events` one-event appends to the store at `db` by a server, stopped cleanly after.
async fn appended_and_stopped(db: &Path, events: u64) {
    let mut server = Umadb::spawn(db, &[]);
    let mut client = server.client().await;
    for n in 0..events {
        let request = common::append_request(vec![event("Before", &["t"], &n.to_be_bytes())]);
        append(&mut client, request).await.expect("append");
    }
    server.stop();
}

/// A store of an older format is upgraded by the first opening that finds it, in a commit of
/// its own, before the store has a log checkpoint to go back to: a power cut at any moment of
/// that opening leaves a store that passes `umadb check` with every event in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_format_upgrade_survives_a_power_cut_at_any_moment_of_its_opening() {
    let (dir, recorder, db) = recorded_store();
    const EVENTS: u64 = 20;
    appended_and_stopped(&db, EVENTS).await;
    // Fewer events than the index lag: the index is empty, the same in versions 2 and 3, so
    // the stamp alone makes this a version 2 store.
    umadb_core::stamp_format_version(&db, 2).expect("stamp version 2");
    let before = power::Files::from_dir(&db);
    let trace = dir.path().join("trace");
    let (code, text) = check_recorded(&db, &recorder, &trace);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("upgraded the store from on-disk format version 2"),
        "{text}"
    );
    let mut rng = seeded("format upgrade power cut", 1);
    each_cut_state(&before, &trace, dir.path(), 40, &mut rng, |state, what| {
        let (code, text) = check(state);
        assert!(
            code == Some(0) && text.contains(&format!("{EVENTS} events")),
            "{what} of the upgrading opening: umadb check said:\n{text}"
        );
    });
}

/// A store of a build before the log, left by a crash whose last commit is in its journal
/// only: the first opening applies that record in a commit of its own, then starts the log and
/// removes the journal files. A power cut at any moment of that opening leaves a store that
/// passes `umadb check` with the record's event in it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_replay_survives_a_power_cut_at_any_moment_of_its_opening() {
    let (dir, recorder, db) = recorded_store();
    const EVENTS: u64 = 20;
    appended_and_stopped(&db, EVENTS).await;
    let lost = umadb_core::AppendRequest {
        events: vec![umadb_core::Event::new("Lost", ["t"], b"lost".to_vec())],
        condition: None,
        tracking_info: None,
    };
    umadb_core::stage_crash_of_a_build_before_the_log(&db, &[lost]).expect("stage the journal");
    let before = power::Files::from_dir(&db);
    let trace = dir.path().join("trace");
    let (code, text) = check_recorded(&db, &recorder, &trace);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains(&format!("1 events after position {EVENTS}")),
        "{text}"
    );
    let mut rng = seeded("journal replay power cut", 1);
    each_cut_state(&before, &trace, dir.path(), 40, &mut rng, |state, what| {
        let (code, text) = check(state);
        assert!(
            code == Some(0) && text.contains(&format!("{} events", EVENTS + 1)),
            "{what} of the opening that applied the journal: umadb check said:\n{text}"
        );
    });
}

/// A new store's first opening (its databases and format stamp, its first checkpoint): a power
/// cut at any moment of it leaves a directory a server starts on, empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_store_survives_a_power_cut_at_any_moment_of_its_first_opening() {
    let (dir, recorder, db) = recorded_store();
    let before = power::Files::from_dir(&db);
    let trace = dir.path().join("trace");
    let mut server = spawn_recorded(&db, &recorder, &trace, &[]);
    server.stop();
    let mut rng = seeded("new store power cut", 1);
    each_cut_state(&before, &trace, dir.path(), 30, &mut rng, |state, what| {
        let server = Umadb::try_spawn(state, &[]).unwrap_or_else(|log| {
            panic!("{what} of a new store's opening: the server did not start:\n{log}")
        });
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(verify(&server, &[]))
        });
    });
}

/// A new store whose first append is too large for a log record, so that a checkpoint makes it
/// durable: the data file's name must be durable before the append is answered. The power goes just after the answer, and nothing that was
/// not surely flushed reaches the disk, new names included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_store_keeps_its_first_append_through_a_power_cut_without_a_log_record() {
    let (dir, recorder, db) = recorded_store();
    let mut files = power::Files::from_dir(&db);
    let trace = dir.path().join("trace");
    let mut server = spawn_recorded(&db, &recorder, &trace, &[]);
    let mut client = server.client().await.max_encoding_message_size(64 << 20);
    let events = vec![event("Bulk", &["first"], &vec![b'b'; BULK_BYTES])];
    let last = client
        .append(v1::AppendRequest {
            events: events.clone(),
            condition: None,
            tracking_info: None,
        })
        .await
        .expect("the first append")
        .into_inner()
        .position;
    server.kill();
    files.apply_trace(&trace);
    for name in ["log-0", "log-1"] {
        let len = std::fs::metadata(dir.path().join("db").join(name)).map_or(0, |m| m.len());
        assert!(
            len < BULK_BYTES as u64,
            "the append was recorded in {name}: the test no longer tests what it says"
        );
    }
    let image = dir.path().join("cut");
    files.power_cut(&image, |_| 0);
    assert_check_clean(&image);
    let server = Umadb::spawn(&image, &[]);
    let acked = Acked {
        last,
        events,
        tracking: None,
    };
    verify(&server, &[acked]).await;
}

/// `umadb backup` has flushed its copy, and the copy's name, when it returns: a power cut just
/// after leaves the whole copy, though LMDB writes it past the page cache without flushing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_backup_survives_a_power_cut() {
    let (dir, recorder, db) = recorded_store();
    let server = Umadb::spawn(&db, &[]);
    let mut client = server.client().await;
    for n in 0..50u32 {
        let data = n.to_le_bytes().repeat(100);
        append(
            &mut client,
            common::append_request(vec![event("Saved", &[&format!("t{}", n % 7)], &data)]),
        )
        .await
        .expect("append");
    }
    let (original, _) = read_all(&mut client, v1::ReadRequest::default())
        .await
        .expect("read the store");
    let to = dir.path().join("backup");
    std::fs::create_dir_all(&to).expect("backup directory");
    let to = to.canonicalize().expect("canonical backup path");
    let trace = dir.path().join("trace");
    let args = ["backup".as_ref(), "--db-path".as_ref(), db.as_os_str()];
    let args = [&args[..], &["--to".as_ref(), to.as_os_str()]].concat();
    let output = umadb_recorded(&args, &recorder, &to, &trace);
    assert!(
        output.status.success(),
        "umadb backup failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut files = power::Files::from_dir(&to);
    let (writes, _) = files.apply_trace(&trace);
    assert!(writes > 0, "the recorder saw none of the backup's writes");
    let image = dir.path().join("cut");
    files.power_cut(&image, |_| 0);
    assert_check_clean(&image);
    let copy = Umadb::spawn(&image, &[]);
    let (copied, _) = read_all(&mut copy.client().await, v1::ReadRequest::default())
        .await
        .expect("read the copy");
    assert_eq!(copied, original, "the copy after a power cut");
}

/// Power cuts under load: the crash loop's load on a server whose writes and flushes of the
/// store's files are recorded; after each SIGKILL, states the disk could be in had the power
/// gone at that moment are rebuilt from the record (each block not surely flushed in its
/// flushed version, or one written since: none of them, the newest of each, or at random), and
/// each must pass `umadb check` and hold every acknowledged append. The next cut goes on from
/// the last of them. A small index lag makes indexing commits frequent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_cuts_under_load_never_lose_or_damage_acknowledged_events() {
    const CUTS: u64 = 10;
    const BULK_CUTS: u64 = 3;
    let (dir, recorder, db) = recorded_store();
    let mut rng = seeded("power-cut", 0x90_c0de);
    let mut acknowledged: Vec<Acked> = Vec::new();
    let (mut images, mut replays, mut uncertain, mut opening_cuts) = (0, 0, 0, 0);
    for cut in 0..CUTS {
        let mut files = power::Files::from_dir(&db);
        let trace = dir.path().join(format!("trace-{cut}"));
        let mut server = spawn_recorded(&db, &recorder, &trace, &["--index-lag", "40"]);
        // The first cuts add bulk appends, too large for a log record: in the first the kill comes
        // at a random moment after one was acknowledged, in the others during a bulk commit's
        // flush.
        let kill = match cut {
            0 => Kill::AfterBulk(rng.below(100)),
            1..BULK_CUTS => Kill::AtBulkWrite(&trace),
            _ => Kill::After(50 + rng.below(250)),
        };
        let done = load_until_killed(&mut server, cut, cut < BULK_CUTS, kill).await;
        let (writes, flushes) = files.apply_trace(&trace);
        eprintln!(
            "cut {cut}: {} appends acknowledged ({} bulk), {writes} writes and {flushes} \
             flushes recorded, {} blocks not surely on disk",
            done.len(),
            done.iter()
                .filter(|a| a.events[0].event_type == "Bulk")
                .count(),
            files.uncertain_blocks()
        );
        acknowledged.extend(done);
        assert!(flushes > 0, "the recorder saw no flush: it watched nothing");
        uncertain += files.uncertain_blocks();
        let mut last = None;
        for (n, how) in ["none", "newest", "random", "random"].iter().enumerate() {
            let image = dir.path().join(format!("cut-{cut}-{n}"));
            files.power_cut(&image, |choices| match *how {
                "none" => 0,
                "newest" => choices - 1,
                _ => rng.below(choices as u64) as usize,
            });
            // The first random state is opened under the recorder, and power cuts during that
            // opening are staged too when it applies the log.
            let opening = dir.path().join("opening-trace");
            let before = (n == 2).then(|| power::Files::from_dir(&image));
            let (code, text) = if n == 2 {
                check_recorded(&image, &recorder, &opening)
            } else {
                check(&image)
            };
            assert_eq!(
                code,
                Some(0),
                "cut {cut}, image {n} ({how} of the unflushed writes): umadb check failed:\n{text}"
            );
            if text.contains("applied again from the log") {
                replays += 1;
                if let Some(before) = &before {
                    opening_cuts += power_cuts_while_opening(
                        before,
                        &opening,
                        dir.path(),
                        &acknowledged,
                        &mut rng,
                    )
                    .await;
                }
            }
            let server = Umadb::spawn(&image, &[]);
            verify(&server, &acknowledged).await;
            drop(server);
            images += 1;
            last = Some(image);
        }
        let last = last.expect("an image");
        std::fs::remove_dir_all(&db).expect("remove the store");
        std::fs::rename(&last, &db).expect("go on from the last image");
    }
    eprintln!(
        "{images} power-cut images checked ({uncertain} uncertain blocks in all), {replays} of \
         them needed the log, {} acknowledged appends; {opening_cuts} cuts while an opening \
         applied the log",
        acknowledged.len()
    );
    assert!(
        acknowledged.len() as u64 >= CUTS,
        "the load made too little progress to prove anything"
    );
    assert!(
        uncertain > 0,
        "no write was ever unflushed at a cut: nothing was tested"
    );
    assert!(
        opening_cuts > 0,
        "no opening under the recorder applied the log: its cuts were never staged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_under_write_load_is_a_gapless_prefix_that_passes_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("db");
    let server = Umadb::spawn(&db, &[]);
    let acked = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| tokio::spawn(writer(server.addr, 0, w, acked.clone())))
        .collect();
    eventually("some appends", || acked.load(Ordering::SeqCst) >= 200).await;
    let acked_before_backup = acked.load(Ordering::SeqCst);
    let copy = dir.path().join("backup");
    let output = umadb(&[
        "backup".as_ref(),
        "--db-path".as_ref(),
        db.as_os_str(),
        "--to".as_ref(),
        copy.as_os_str(),
    ]);
    let text = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "umadb backup failed:\n{text}");
    // The load went on during the backup.
    let acked_after_backup = acked.load(Ordering::SeqCst);
    eprintln!("{text}appends acknowledged: {acked_before_backup} before the backup, {acked_after_backup} after");
    assert_check_clean(&copy);

    // Serve the copy beside the live store and compare them.
    let backup_server = Umadb::spawn(&copy, &[]);
    let (copied, head) = read_all(
        &mut backup_server.client().await,
        v1::ReadRequest::default(),
    )
    .await
    .expect("read the copy");
    let head = head.expect("the copy holds events");
    assert_eq!(
        positions(&copied),
        (1..=head).collect::<Vec<_>>(),
        "gapless"
    );
    assert!(
        head >= acked_before_backup as u64,
        "the copy lacks appends acknowledged before it began"
    );
    let mut live = server.client().await;
    let (original, _) = read_all(
        &mut live,
        v1::ReadRequest {
            limit: Some(head as u32),
            ..Default::default()
        },
    )
    .await
    .expect("read the live store");
    assert_eq!(copied, original, "the copy is a prefix of the live log");
    drop(server);
    for w in writers {
        let _ = w.await;
    }
    assert!(append(
        &mut backup_server.client().await,
        common::append_request(vec![event("AfterRestore", &[], b"")])
    )
    .await
    .is_ok());
}

#[test]
fn check_and_backup_refuse_a_directory_without_a_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nothing-here");
    let (code, text) = check(&missing);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("no UmaDB store"), "{text}");
    assert!(!missing.exists(), "check created a directory");
    let output = umadb(&[
        "backup".as_ref(),
        "--db-path".as_ref(),
        missing.as_os_str(),
        "--to".as_ref(),
        dir.path().join("b").as_os_str(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(!dir.path().join("b").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_refuses_to_overwrite_an_existing_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("db");
    {
        let server = Umadb::spawn(&db, &[]);
        append(
            &mut server.client().await,
            common::append_request(vec![event("E", &[], b"1")]),
        )
        .await
        .unwrap();
    }
    let args = |to: &Path| -> Vec<std::ffi::OsString> {
        vec![
            "backup".into(),
            "--db-path".into(),
            db.clone().into(),
            "--to".into(),
            to.into(),
        ]
    };
    let to = dir.path().join("copy");
    let run = |args: Vec<std::ffi::OsString>| {
        let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        umadb(&refs)
    };
    assert!(run(args(&to)).status.success());
    let second = run(args(&to));
    assert_eq!(second.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&second.stderr).contains("already holds a store"));
    assert_check_clean(&to);
}

/// Copies the store files of `from` that exist (`data.mdb` only, or with the log files).
fn copy_store_files(from: &Path, to: &Path, names: &[&str]) {
    std::fs::create_dir_all(to).expect("store dir");
    for name in names {
        if from.join(name).exists() {
            std::fs::copy(from.join(name), to.join(name)).expect("copy store file");
        }
    }
}

/// A power cut right after an answered append, with none of that commit's pages on disk, staged
/// on the files (as in `umadb-core/tests/journal.rs`): the data file as it was before the
/// append, the log files from after it. The server applies the commit again at start, says
/// so in its log, and serves it; `umadb check` does the same and reports the store clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answered_append_whose_pages_were_lost_is_applied_again_from_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("db");
    let staged = [dir.path().join("staged-1"), dir.path().join("staged-2")];
    {
        let server = Umadb::spawn(&db, &[]);
        let mut client = server.client().await;
        let request = common::append_request(vec![event("Before", &["t"], b"1")]);
        assert_eq!(append(&mut client, request).await.expect("append"), 1);
    }
    for copy in &staged {
        copy_store_files(&db, copy, &["data.mdb"]);
    }
    {
        // Killed after the answer: no clean close's checkpoint follows the record.
        let mut server = Umadb::spawn(&db, &[]);
        let mut client = server.client().await;
        let request = common::append_request(vec![
            event("Answered", &["t"], b"2"),
            event("Answered", &["u"], b"3"),
        ]);
        assert_eq!(append(&mut client, request).await.expect("append"), 3);
        server.kill();
    }
    for copy in &staged {
        copy_store_files(&db, copy, &["log-0", "log-1"]);
    }

    let server = Umadb::spawn(&staged[0], &[]);
    let mut client = server.client().await;
    let (events, head) = read_all(&mut client, v1::ReadRequest::default())
        .await
        .expect("read");
    assert_eq!(positions(&events), vec![1, 2, 3]);
    assert_eq!(head, Some(3));
    let tagged = read_all(
        &mut client,
        v1::ReadRequest {
            query: query(vec![item(&[], &["u"])]),
            ..Default::default()
        },
    )
    .await
    .expect("query")
    .0;
    assert_eq!(positions(&tagged), vec![3]);
    let log = server.log();
    assert!(
        log.contains("applied again the commits after its last checkpoint")
            && log.contains("2 events after position 1"),
        "{log}"
    );

    let (code, report) = check(&staged[1]);
    assert_eq!(code, Some(0), "{report}");
    assert!(
        report.contains("applied again from the log")
            && report.contains("2 events after position 1"),
        "{report}"
    );
    assert!(report.contains("positions 1..=3"), "{report}");
}

/// One process appends to a store: a second server on it refuses to start, saying why, and
/// `umadb check` beside the first runs without taking its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_the_same_store_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("db");
    let first = Umadb::spawn(&db, &[]);
    let log = match Umadb::try_spawn(&db, &[]) {
        Ok(_) => panic!("a second server started on the same store"),
        Err(log) => log,
    };
    assert!(log.contains("another process is appending"), "{log}");
    let (code, report) = check(&db);
    assert_eq!(code, Some(0), "{report}");
    // The first still appends.
    let mut client = first.client().await;
    let request = common::append_request(vec![event("After", &["t"], b"1")]);
    assert_eq!(append(&mut client, request).await.expect("append"), 1);
}
