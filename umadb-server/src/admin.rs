//! `umadb check` and `umadb backup`: operations on a store directory, safe while a server runs
//! on it (LMDB lets several processes share one environment).

use std::path::Path;
use std::process::ExitCode;
use umadb_core::{Error, Store, StoreOptions};

/// Exit status of `umadb check` when the store is damaged.
const DAMAGED: u8 = 2;

/// Set in the child process that does the actual check.
const CHECK_WORKER: &str = "UMADB_CHECK_WORKER";

/// Verifies the store at `db_path`. The verification runs in a child process: LMDB keeps no
/// checksums of its own pages, so bytes damaged in its page structure can make a read fault;
/// the parent then still reports the store as damaged instead of crashing.
pub fn check(db_path: &Path) -> ExitCode {
    if std::env::var_os(CHECK_WORKER).is_some() {
        return check_here(db_path);
    }
    match run_checker(db_path) {
        Ok((code, verdict)) => {
            print!("{verdict}");
            ExitCode::from(code)
        }
        Err(e) => {
            eprintln!("umadb check: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--verify-on-start`: verifies an existing store as `umadb check` does, before the server
/// opens it. A damaged store is refused with the checker's report, so that a server never
/// follows pointers in damaged pages it could have been warned about (it would crash).
pub fn verify_before_serving(db_path: &Path) -> Result<(), String> {
    if !db_path.join("data.mdb").is_file() {
        return Ok(());
    }
    tracing::info!("verifying {} before serving it", db_path.display());
    let started = std::time::Instant::now();
    let (code, verdict) = run_checker(db_path)?;
    if code == 0 {
        tracing::info!("{} (in {:.1?})", verdict.trim_end(), started.elapsed());
        return Ok(());
    }
    Err(format!(
        "refusing to serve {}; restore it from a backup:\n{}",
        db_path.display(),
        verdict.trim_end()
    ))
}

/// Runs the check in a child process (the checker's progress goes to stderr as it comes);
/// returns its exit code (0 clean, 2 damaged, 1 other failures) and its verdict.
fn run_checker(db_path: &Path) -> Result<(u8, String), String> {
    let exe = std::env::current_exe()
        .map_err(|e| format!("cannot find the umadb executable to run the checker: {e}"))?;
    let output = std::process::Command::new(exe)
        .arg("check")
        .arg("--db-path")
        .arg(db_path)
        .env(CHECK_WORKER, "1")
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot start the checker: {e}"))?;
    let mut verdict = String::from_utf8_lossy(&output.stdout).into_owned();
    match output.status.code() {
        Some(code) => Ok((u8::try_from(code).unwrap_or(1), verdict)),
        None => {
            verdict.push_str(&format!(
                "DAMAGED: {}: reading the store crashed the checker ({}); LMDB's own page \
                 structure is damaged. Restore from a backup.\n",
                db_path.display(),
                describe_signal(&output.status)
            ));
            Ok((DAMAGED, verdict))
        }
    }
}

fn describe_signal(status: &std::process::ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return format!("killed by signal {signal}");
        }
    }
    format!("{status}")
}

fn check_here(db_path: &Path) -> ExitCode {
    if !db_path.join("data.mdb").is_file() {
        eprintln!("no UmaDB store at {} (no data.mdb)", db_path.display());
        return ExitCode::FAILURE;
    }
    eprintln!("checking {} …", db_path.display());
    // The store exists: any failure to open or read it means it cannot be trusted.
    let store = match open_telling_progress(db_path) {
        Ok(store) => store,
        Err(e) => return damaged(db_path, &e),
    };
    if let Some(version) = store.upgraded_from() {
        eprintln!(
            "  upgraded the store from on-disk format version {version} to {}",
            umadb_core::FORMAT_VERSION
        );
    }
    if let Some(replay) = store.journal_replay() {
        eprintln!(
            "  applied again from the log the commits after its last checkpoint ({} records, {} \
             events after position {})",
            replay.records, replay.events, replay.head_before
        );
    }
    match store.page_summary() {
        Some(pages) if pages.conclusive => eprintln!(
            "  LMDB page structure sound: {} pages of {} bytes reached, no page twice",
            pages.pages, pages.page_size
        ),
        Some(_) => eprintln!(
            "  LMDB page structure: the walk did not settle, another process kept appending; \
             the record check below still covers every event"
        ),
        None => {}
    }
    let report = store.check(|events| eprintln!("  {events} events checked"));
    match report {
        Ok(report) if report.is_ok() => {
            if report.events == 0 {
                println!("OK: {}: an empty store", db_path.display());
            } else {
                let pages = match store.page_summary() {
                    Some(pages) if pages.conclusive => "LMDB pages sound, ",
                    _ => "",
                };
                println!(
                    "OK: {}: {} events, {pages}positions 1..={} gapless, every checksum valid, \
                     indexes agree",
                    db_path.display(),
                    report.events,
                    report.head
                );
            }
            ExitCode::SUCCESS
        }
        Ok(report) => {
            println!(
                "DAMAGED: {}: {} problem(s) found in {} events (last position {}):",
                db_path.display(),
                report.problem_count,
                report.events,
                report.head
            );
            for problem in &report.problems {
                println!("  - {problem}");
            }
            if report.problem_count > report.problems.len() as u64 {
                println!(
                    "  … and {} more",
                    report.problem_count - report.problems.len() as u64
                );
            }
            ExitCode::from(DAMAGED)
        }
        Err(e) => damaged(db_path, &e),
    }
}

fn damaged(db_path: &Path, e: &Error) -> ExitCode {
    println!(
        "DAMAGED: {}: the store cannot be read: {e}",
        db_path.display()
    );
    ExitCode::from(DAMAGED)
}

/// Copies the store at `db_path` into the new directory `to` and reports the copy's head.
pub fn backup(db_path: &Path, to: &Path) -> ExitCode {
    let store = match open_existing(db_path) {
        Ok(store) => store,
        Err(code) => return code,
    };
    if let Err(e) = store.backup(to) {
        eprintln!("umadb backup: {e}");
        return ExitCode::FAILURE;
    }
    drop(store);
    let read_only = StoreOptions {
        appends: false,
        ..StoreOptions::default()
    };
    match Store::open_with(to, read_only) {
        Ok(copy) => {
            let size = std::fs::metadata(to.join("data.mdb")).map_or(0, |m| m.len());
            println!(
                "backup of {} written to {}: positions 1..={} ({size} bytes)",
                db_path.display(),
                to.display(),
                copy.head().unwrap_or(0)
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "umadb backup: the copy in {} cannot be opened: {e}",
                to.display()
            );
            ExitCode::FAILURE
        }
    }
}

/// Opens a store that must already exist (neither command creates one).
fn open_existing(db_path: &Path) -> Result<Store, ExitCode> {
    if !db_path.join("data.mdb").is_file() {
        eprintln!("no UmaDB store at {} (no data.mdb)", db_path.display());
        return Err(ExitCode::FAILURE);
    }
    open_telling_progress(db_path).map_err(|e| failure(db_path, &e))
}

/// Opens the store, saying on stderr how a slow opening is getting on.
fn open_telling_progress(db_path: &Path) -> Result<Store, Error> {
    let options = StoreOptions {
        progress: Some(umadb_server::opening_reporter(|line| eprintln!("  {line}"))),
        // A server may be running on the store, or start while this runs: it appends.
        appends: false,
        ..StoreOptions::default()
    };
    Store::open_with(db_path, options)
}

fn failure(db_path: &Path, e: &Error) -> ExitCode {
    match e {
        Error::Corruption(_) => {
            println!("DAMAGED: {}: {e}", db_path.display());
            ExitCode::from(DAMAGED)
        }
        _ => {
            eprintln!("umadb: {}: {e}", db_path.display());
            ExitCode::FAILURE
        }
    }
}
