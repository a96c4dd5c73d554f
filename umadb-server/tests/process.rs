//! The `umadb` binary as an operator runs it: options and environment, SIGKILL during a write
//! load (every acknowledged append survives, gapless), SIGTERM with open streams (they end and
//! the process exits 0).

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::transport::Channel;
use umadb_proto::v1;
use umadb_proto::v1::dcb_client::DcbClient;

/// A running `umadb` process and everything it logged.
struct Umadb {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl Umadb {
    fn spawn(db: &Path, args: &[&str], env: &[(&str, &str)]) -> Umadb {
        let mut command = Command::new(env!("CARGO_BIN_EXE_umadb"));
        command.arg("--db-path").arg(db);
        Self::spawn_command(command, args, env)
    }

    fn spawn_command(mut command: Command, args: &[&str], env: &[(&str, &str)]) -> Umadb {
        command
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("umadb starts");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let thread_log = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                {
                    let mut log = thread_log.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or_default();
                    let _ = tx.send(addr.parse::<SocketAddr>());
                }
            }
        });
        let addr = match rx.recv_timeout(WAIT) {
            Ok(addr) => addr.expect("listen address in the startup line"),
            Err(_) => {
                let _ = child.kill();
                panic!("no startup line; log:\n{}", log.lock().unwrap());
            }
        };
        Umadb { child, addr, log }
    }

    async fn client(&self) -> DcbClient<Channel> {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .expect("connect");
        DcbClient::new(channel)
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// Waits for the process to exit, without blocking the async runtime.
    async fn exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("umadb did not exit; log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Umadb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An acknowledged append: the position it returned and the data of its events.
type Acknowledged = (u64, Vec<Vec<u8>>);

/// Appends from several writers until told to stop or the server fails them; returns every
/// acknowledged append as (last position, the data of its events).
fn start_writers(
    addr: SocketAddr,
    writers: usize,
    acked: Arc<AtomicUsize>,
) -> Vec<tokio::task::JoinHandle<Vec<Acknowledged>>> {
    (0..writers)
        .map(|writer| {
            let acked = acked.clone();
            tokio::spawn(async move {
                let mut done = Vec::new();
                let Ok(endpoint) =
                    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                else {
                    return done;
                };
                let Ok(channel) = endpoint.connect().await else {
                    return done;
                };
                let mut client = DcbClient::new(channel);
                for seq in 0..20_000 {
                    let data: Vec<Vec<u8>> = (0..=(seq % 3))
                        .map(|k| format!("w{writer}:{seq}:{k}").into_bytes())
                        .collect();
                    let events = data.iter().map(|d| event("Load", &[], d)).collect();
                    match append(&mut client, append_request(events)).await {
                        Ok(position) => {
                            done.push((position, data));
                            acked.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(_) => break,
                    }
                }
                done
            })
        })
        .collect()
}

async fn wait_for(counter: &AtomicUsize, at_least: usize) {
    let deadline = Instant::now() + WAIT;
    while counter.load(Ordering::SeqCst) < at_least {
        assert!(Instant::now() < deadline, "the write load made no progress");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Every acknowledged append is recorded at the position it was acknowledged with, and the
/// log is gapless.
async fn assert_acknowledged_appends_survived(
    client: &mut DcbClient<Channel>,
    acknowledged: &[Acknowledged],
) {
    let (events, head) = read_all(client, v1::ReadRequest::default()).await.unwrap();
    let head = head.unwrap_or(0);
    eprintln!(
        "{} appends acknowledged before the stop; {head} events recorded after restart",
        acknowledged.len()
    );
    assert_eq!(
        positions(&events),
        (1..=head).collect::<Vec<_>>(),
        "gapless"
    );
    for (last, data) in acknowledged {
        let first = last + 1 - data.len() as u64;
        for (offset, expected) in data.iter().enumerate() {
            let position = first + offset as u64;
            assert!(
                position <= head,
                "acknowledged position {position} is lost (head {head})"
            );
            let recorded = &events[(position - 1) as usize];
            assert_eq!(
                &recorded.event.as_ref().unwrap().data,
                expected,
                "at {position}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_write_load_loses_no_acknowledged_append() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let server = Umadb::spawn(&db, &["--listen", "127.0.0.1:0"], &[]);
    let acked = Arc::new(AtomicUsize::new(0));
    let writers = start_writers(server.addr, 8, acked.clone());
    wait_for(&acked, 200).await;
    server.signal(libc::SIGKILL);
    let mut acknowledged = Vec::new();
    for writer in writers {
        acknowledged.extend(writer.await.unwrap());
    }
    drop(server);
    assert!(acknowledged.len() >= 200);

    let restarted = Umadb::spawn(&db, &["--listen", "127.0.0.1:0"], &[]);
    let mut client = restarted.client().await;
    assert_acknowledged_appends_survived(&mut client, &acknowledged).await;
    // And it accepts new appends right after the last recorded position.
    let head = client
        .head(v1::HeadRequest {})
        .await
        .unwrap()
        .into_inner()
        .position
        .unwrap();
    let next = append(&mut client, append_request(vec![event("After", &[], b"")]))
        .await
        .unwrap();
    assert_eq!(next, head + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_open_streams_answers_appends_in_flight_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let mut server = Umadb::spawn(&db, &["--listen", "127.0.0.1:0"], &[]);
    let mut client = server.client().await;
    append(&mut client, append_request(vec![event("A", &[], b"")]))
        .await
        .unwrap();

    let nothing = query(vec![item(&["Nothing"], &[])]);
    let mut idle = client
        .subscribe(v1::SubscribeRequest {
            query: nothing,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut live = client
        .subscribe(v1::SubscribeRequest::default())
        .await
        .unwrap()
        .into_inner();
    receive(&mut live, 1).await;
    let old_style = v1::ReadRequest {
        subscribe: Some(true),
        start: Some(1),
        ..Default::default()
    };
    let mut old_style = client.read(old_style).await.unwrap().into_inner();
    old_style.message().await.unwrap().unwrap();

    let acked = Arc::new(AtomicUsize::new(0));
    let writers = start_writers(server.addr, 4, acked.clone());
    wait_for(&acked, 50).await;
    server.signal(libc::SIGTERM);

    let ended = |outcome: Result<Option<v1::SubscribeResponse>, tonic::Status>| match outcome {
        Ok(None) => None,
        Ok(Some(message)) => Some(message),
        Err(status) => panic!("subscription failed instead of ending: {status:?}"),
    };
    let idle_end = tokio::time::timeout(WAIT, idle.message())
        .await
        .expect("idle ends");
    assert!(ended(idle_end).is_none());
    // The live one may still deliver what was committed before the signal, then it ends.
    loop {
        let next = tokio::time::timeout(WAIT, live.message())
            .await
            .expect("live ends");
        if ended(next).is_none() {
            break;
        }
    }
    loop {
        match tokio::time::timeout(WAIT, old_style.message())
            .await
            .expect("read ends")
        {
            Ok(Some(_)) => continue,
            Ok(None) => break,
            Err(status) => panic!("read subscription failed instead of ending: {status:?}"),
        }
    }
    let status = server.exit().await;
    assert!(
        status.success(),
        "exit status {status:?}; log:\n{}",
        server.log()
    );
    let log = server.log();
    assert!(log.contains("SIGTERM") && log.contains("stopped"), "{log}");

    let mut acknowledged = Vec::new();
    for writer in writers {
        acknowledged.extend(writer.await.unwrap());
    }
    drop(server);
    let restarted = Umadb::spawn(&db, &["--listen", "127.0.0.1:0"], &[]);
    let mut client = restarted.client().await;
    assert_acknowledged_appends_survived(&mut client, &acknowledged).await;
}

#[tokio::test]
async fn options_come_from_the_environment_and_keys_are_never_logged() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("from-env");
    let db_text = db.to_str().unwrap().to_string();
    let env = [
        ("UMADB_LISTEN", "127.0.0.1:0"),
        ("UMADB_DB_PATH", db_text.as_str()),
        ("UMADB_API_KEY", "first-key,second-key"),
        ("RUST_LOG", "debug"),
    ];
    let server = Umadb::spawn_command(Command::new(env!("CARGO_BIN_EXE_umadb")), &[], &env);
    assert_eq!(server.addr.ip().to_string(), "127.0.0.1");
    assert!(db.is_dir(), "the store directory was created");
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    for (key, ok) in [
        (Some("second-key"), true),
        (Some("first-key"), true),
        (None, false),
    ] {
        let mut client =
            DcbClient::with_interceptor(channel.clone(), BearerKey(key.map(String::from)));
        let outcome = client.head(v1::HeadRequest {}).await;
        assert_eq!(outcome.is_ok(), ok, "key {key:?}: {outcome:?}");
    }
    let log = server.log();
    assert!(log.contains("2 API keys"), "{log}");
    assert!(
        !log.contains("first-key") && !log.contains("second-key"),
        "a key was logged:\n{log}"
    );
}

#[tokio::test]
async fn the_startup_line_says_where_it_listens_and_where_the_data_is() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data");
    let server = Umadb::spawn(&db, &["--listen", "127.0.0.1:0"], &[]);
    let log = server.log();
    let line = log.lines().find(|l| l.contains("listening on")).unwrap();
    let canonical = std::fs::canonicalize(&db).unwrap();
    assert!(line.contains(&server.addr.to_string()), "{line}");
    assert!(line.contains(canonical.to_str().unwrap()), "{line}");
}

#[tokio::test]
async fn the_index_lag_comes_from_its_option_or_the_environment_and_is_logged() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let default = Umadb::spawn(&db, &["--listen", "127.0.0.1:0"], &[]);
    let log = default.log();
    let expected = format!("index lag {}", umadb_core::DEFAULT_INDEX_LAG);
    assert!(log.contains(&expected), "{log}");
    drop(default);
    for (args, env, lag) in [
        (&["--index-lag", "0"][..], &[][..], "index lag 0"),
        (&[][..], &[("UMADB_INDEX_LAG", "7")][..], "index lag 7"),
    ] {
        let mut all_args = vec!["--listen", "127.0.0.1:0"];
        all_args.extend(args);
        let server = Umadb::spawn(&db, &all_args, env);
        let log = server.log();
        assert!(log.contains(lag), "{log}");
        // The same store, opened with another lag each time, answers the same.
        let mut client = server.client().await;
        let tagged = vec![event("Seen", &["lag"], b"")];
        let position = append(&mut client, append_request(tagged)).await.unwrap();
        let request = v1::ReadRequest {
            query: query(vec![item(&[], &["lag"])]),
            ..Default::default()
        };
        let (events, _) = read_all(&mut client, request).await.unwrap();
        assert_eq!(positions(&events).last(), Some(&position), "{lag}");
    }
    let output = Command::new(env!("CARGO_BIN_EXE_umadb"))
        .args(["--index-lag", "lots", "--db-path"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--index-lag"));
}

#[test]
fn version_and_help_describe_every_option() {
    let version = Command::new(env!("CARGO_BIN_EXE_umadb"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(version.status.success());
    assert!(String::from_utf8_lossy(&version.stdout).contains(env!("CARGO_PKG_VERSION")));
    let help = Command::new(env!("CARGO_BIN_EXE_umadb"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for option in [
        "--listen",
        "--db-path",
        "--tls-cert",
        "--tls-key",
        "--api-key",
        "--index-lag",
        "UMADB_LISTEN",
        "UMADB_DB_PATH",
        "UMADB_TLS_CERT",
        "UMADB_TLS_KEY",
        "UMADB_API_KEY",
        "UMADB_INDEX_LAG",
        "127.0.0.1:50051",
    ] {
        assert!(
            help.contains(option),
            "--help does not mention {option}:\n{help}"
        );
    }
}

#[test]
fn bad_options_fail_with_a_clear_message_and_a_non_zero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_umadb"))
            .args(args)
            .env("RUST_LOG", "info")
            .output()
            .unwrap()
    };
    let db = dir.path().join("db");
    let db = db.to_str().unwrap();
    let missing = dir.path().join("missing.pem");
    let missing = missing.to_str().unwrap();

    let output = run(&["--listen", "not-an-address", "--db-path", db]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--listen"));

    let output = run(&["--tls-cert", missing, "--db-path", db]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--tls-key"));

    let output = run(&[
        "--listen",
        "127.0.0.1:0",
        "--db-path",
        db,
        "--tls-cert",
        missing,
        "--tls-key",
        missing,
    ]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("missing.pem"));

    // A file where the data directory should be.
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let output = run(&[
        "--listen",
        "127.0.0.1:0",
        "--db-path",
        file.to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("directory"));
}
