//! A flush that fails: after an fsync error the disk's state is unknown, so the server must not
//! acknowledge the append it was making durable, must refuse every later append (a retried flush
//! can succeed without the lost writes having reached the disk), must go on serving reads, and a
//! restart must bring back every acknowledged append.
//!
//! The failure is injected by `faults/fail_flush.c`, loaded into the server with `LD_PRELOAD`:
//! while a trigger file exists, flushes of the named store file fail with EIO.

mod common;
mod support;

use common::{append, append_request, event, positions, read_all};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::*;
use umadb_proto::v1;
use umadb_proto::v1::dcb_client::DcbClient;

/// A server on a new store whose flushes of files named `file*` fail while `trigger` exists.
struct Failing {
    _dir: tempfile::TempDir,
    db: PathBuf,
    trigger: PathBuf,
    server: Umadb,
}

impl Failing {
    fn spawn(file: &str) -> Failing {
        let dir = tempfile::tempdir().expect("tempdir");
        let library = build_preload_library("faults/fail_flush.c", dir.path(), "libfailflush.so");
        let db = dir.path().join("db");
        let trigger = dir.path().join("fail-now");
        let server = Umadb::try_spawn_with(&db, &[], |command| {
            command
                .env("LD_PRELOAD", &library)
                .env("UMADB_FAIL_FLUSH_FILE", file)
                .env("UMADB_FAIL_FLUSH_WHILE", &trigger);
        })
        .unwrap_or_else(|log| panic!("umadb did not start; log:\n{log}"));
        Failing {
            _dir: dir,
            db,
            trigger,
            server,
        }
    }

    fn fail_flushes(&self, fail: bool) {
        if fail {
            std::fs::write(&self.trigger, b"").expect("trigger");
        } else {
            std::fs::remove_file(&self.trigger).expect("trigger removed");
        }
    }
}

fn numbered(n: usize) -> v1::AppendRequest {
    append_request(vec![event(
        "Numbered",
        &["flush"],
        n.to_string().as_bytes(),
    )])
}

async fn all_events(client: &mut DcbClient<tonic::transport::Channel>) -> Vec<v1::SequencedEvent> {
    read_all(client, v1::ReadRequest::default())
        .await
        .expect("read")
        .0
}

/// Every acknowledged append is there, in order, with its content; what follows them (an append
/// that failed but may have reached the disk) is only ever events of the failed append.
fn assert_acknowledged(events: &[v1::SequencedEvent], acknowledged: &[(u64, usize)]) {
    assert!(
        events.len() >= acknowledged.len(),
        "{} events, {} acknowledged",
        events.len(),
        acknowledged.len()
    );
    for (event, &(position, n)) in events.iter().zip(acknowledged) {
        assert_eq!(event.position, position);
        let stored = event.event.as_ref().expect("an event");
        assert_eq!(stored.data, n.to_string().as_bytes(), "at {position}");
    }
    assert!(
        events.len() <= acknowledged.len() + 1,
        "events beyond the acknowledged ones and the one unconfirmed: {:?}",
        positions(events)
    );
}

/// After restarting without the fault: acknowledged appends all there, the store checks clean,
/// and appends work again.
async fn restart_and_verify(db: &Path, acknowledged: &[(u64, usize)]) {
    let server = Umadb::spawn(db, &[]);
    let mut client = server.client().await;
    let events = all_events(&mut client).await;
    assert_acknowledged(&events, acknowledged);
    let next = events.last().map_or(0, |e| e.position) + 1;
    assert_eq!(
        append(&mut client, numbered(1000))
            .await
            .expect("append after restart"),
        next
    );
    drop(server);
    let (code, report) = check(db);
    assert_eq!(code, Some(0), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_log_flush_fails_its_append_and_refuses_later_ones_until_restart() {
    let mut failing = Failing::spawn("log-");
    let mut client = failing.server.client().await;

    let mut acknowledged = Vec::new();
    for n in 0..10 {
        let position = append(&mut client, numbered(n)).await.expect("append");
        acknowledged.push((position, n));
    }

    failing.fail_flushes(true);
    let failed = append(&mut client, numbered(10))
        .await
        .expect_err("an append whose log flush failed is not acknowledged");
    assert!(
        failed.message().contains("could not be confirmed on disk"),
        "{failed:?}"
    );
    // Flushing works again, but what the failed flush lost cannot be known: still refused.
    failing.fail_flushes(false);
    let refused = append(&mut client, numbered(11))
        .await
        .expect_err("appends after a failed flush are refused");
    assert!(
        refused.message().contains("appends are refused") && refused.message().contains("restart"),
        "{refused:?}"
    );
    // Reads go on.
    assert_acknowledged(&all_events(&mut client).await, &acknowledged);
    assert!(failing.server.is_running());
    assert!(
        failing.server.log().contains("cannot flush the log"),
        "{}",
        failing.server.log()
    );

    stop_unclean(&mut failing.server);
    restart_and_verify(&failing.db, &acknowledged).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_checkpoint_flush_refuses_later_appends_and_loses_none_acknowledged() {
    let mut failing = Failing::spawn("data.mdb");
    let mut client = failing.server.client().await;

    // The data file is flushed only by checkpoints, every 500 ms of appending: appends keep
    // being acknowledged (their log records are flushed) until the writer learns that one
    // failed, and every one after that is refused.
    failing.fail_flushes(true);
    let mut acknowledged = Vec::new();
    let deadline = Instant::now() + WAIT;
    let refused = loop {
        assert!(Instant::now() < deadline, "no append was refused");
        let n = acknowledged.len();
        match append(&mut client, numbered(n)).await {
            Ok(position) => acknowledged.push((position, n)),
            Err(status) => break status,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        refused.message().contains("appends are refused")
            && refused
                .message()
                .contains("cannot flush the data file for a checkpoint"),
        "{refused:?}"
    );
    failing.fail_flushes(false);
    let again = append(&mut client, numbered(9999))
        .await
        .expect_err("still refused once flushes work again");
    assert!(again.message().contains("appends are refused"), "{again:?}");
    let events = all_events(&mut client).await;
    assert_eq!(positions(&events), positions_of(&acknowledged));
    assert!(failing.server.is_running());

    stop_unclean(&mut failing.server);
    restart_and_verify(&failing.db, &acknowledged).await;
}

/// SIGTERM to a server whose log failed: it cannot write a closing checkpoint, says so, and
/// exits 1 (a clean stop exits 0: `process.rs`).
fn stop_unclean(server: &mut Umadb) {
    let code = server.stop();
    let log = server.log_with("not closed cleanly");
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains("the store was not closed cleanly")
            && log.contains("the log failed earlier")
            && log.contains("the next opening applies"),
        "{log}"
    );
}

fn positions_of(acknowledged: &[(u64, usize)]) -> Vec<u64> {
    acknowledged.iter().map(|&(position, _)| position).collect()
}
