//! Helpers for the reliability tests: the `umadb` binary as a child process, its admin
//! subcommands, a seeded random number generator, and the resident memory of a process.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};
use umadb_proto::v1::dcb_client::DcbClient;

pub const WAIT: Duration = Duration::from_secs(30);

/// A running `umadb` server process and everything it logged.
pub struct Umadb {
    pub child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl Umadb {
    /// Starts `umadb --listen 127.0.0.1:0 --db-path DB ARGS…` and waits for its startup line.
    pub fn spawn(db: &Path, args: &[&str]) -> Umadb {
        Self::try_spawn(db, args).unwrap_or_else(|log| panic!("umadb did not start; log:\n{log}"))
    }

    /// Like [`Umadb::spawn`]; a server that exits or never announces itself gives its log.
    pub fn try_spawn(db: &Path, args: &[&str]) -> Result<Umadb, String> {
        Self::try_spawn_with(db, args, |_| {})
    }

    /// Like [`Umadb::try_spawn`], letting the caller adjust the command first.
    pub fn try_spawn_with(
        db: &Path,
        args: &[&str],
        configure: impl FnOnce(&mut Command),
    ) -> Result<Umadb, String> {
        let mut command = Command::new(env!("CARGO_BIN_EXE_umadb"));
        if !args.contains(&"--listen") {
            command.arg("--listen").arg("127.0.0.1:0");
        }
        command
            .arg("--db-path")
            .arg(db)
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // Last, so the caller may override the environment too.
        configure(&mut command);
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
            // The process ended (or closed stderr) without announcing itself.
            drop(tx);
        });
        match rx.recv_timeout(WAIT) {
            Ok(Ok(addr)) => Ok(Umadb { child, addr, log }),
            _ => {
                let _ = child.kill();
                let status = child.wait();
                // Give the reader thread a moment to collect the last lines.
                std::thread::sleep(Duration::from_millis(50));
                let log = log.lock().unwrap().clone();
                Err(format!("exit: {status:?}\n{log}"))
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub async fn client(&self) -> DcbClient<Channel> {
        DcbClient::new(self.channel().await).max_decoding_message_size(64 * 1024 * 1024)
    }

    pub async fn channel(&self) -> Channel {
        Endpoint::from_shared(format!("http://{}", self.addr))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect")
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM: the server closes its store cleanly (a last checkpoint, so the next opening
    /// takes the data file as it is); waits for it to exit, and gives its exit code.
    pub fn stop(&mut self) -> Option<i32> {
        // SAFETY: kill(2) on our own child's pid, which it keeps until we wait for it.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        self.child.wait().ok().and_then(|status| status.code())
    }

    /// The log once it holds `text`, or after [`WAIT`] (a process's last lines reach the log a
    /// moment after it exits).
    pub fn log_with(&self, text: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let log = self.log();
            if log.contains(text) || Instant::now() >= deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Umadb {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Builds `tests/SOURCE` (C, for `LD_PRELOAD`) with the machine's C compiler (`cc`, or `$CC`:
/// the one LMDB's crate builds with) into `dir/NAME`; its path.
pub fn build_preload_library(source: &str, dir: &Path, name: &str) -> std::path::PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(source);
    let library = dir.join(name);
    let output = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args(["-shared", "-fPIC", "-O2", "-Wall", "-o"])
        .arg(&library)
        .arg(&source)
        .args(["-ldl", "-lpthread"])
        .output()
        .expect("the C compiler runs");
    assert!(
        output.status.success(),
        "building {} failed:\n{}",
        source.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    library
}

/// Runs `umadb ARGS…` to completion.
pub fn umadb(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_umadb"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("umadb runs")
}

/// `umadb check --db-path DB`: (exit code, stdout + stderr). The code is None if it was killed.
pub fn check(db: &Path) -> (Option<i32>, String) {
    let output = umadb(&["check".as_ref(), "--db-path".as_ref(), db.as_os_str()]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code(), text)
}

/// Asserts that `umadb check` finds the store clean.
pub fn assert_check_clean(db: &Path) {
    let (code, text) = check(db);
    assert_eq!(code, Some(0), "umadb check failed:\n{text}");
    assert!(text.contains("OK"), "{text}");
}

/// A small deterministic generator (xorshift64*), so a failing run can be repeated.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Resident anonymous memory of a process in KiB (`RssAnon` in /proc/PID/status).
pub fn rss_anon_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("RssAnon:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("RssAnon in /proc/PID/status")
}

/// Polls `condition` until it holds or [`WAIT`] passes.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
