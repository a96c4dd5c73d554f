//! Disk full: on a small filesystem appends fail with a clear error once space runs out, nothing
//! acknowledged is lost, reads keep working, and appends succeed again once space is freed.
//!
//! The store lives on a size-limited tmpfs that the test mounts (and unmounts, even on failure).
//! Where mounting is not allowed, the same fault is injected at the server's write path by
//! limiting the size of files it may write (RLIMIT_FSIZE, raised again with prlimit to "free
//! space"); the test says which one it used.

mod common;
mod support;

use common::{append, append_request, event, positions, read_all};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use support::*;
use tonic::Code;
use umadb_proto::v1;

const MIB: u64 = 1024 * 1024;

/// A tmpfs of a given size mounted on a temporary directory, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: u64) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).into_owned());
        }
        Ok(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// How space runs out, and how it is given back.
enum Fault {
    /// A small tmpfs with a filler file that is deleted to free space.
    Tmpfs { _fs: Tmpfs, filler: PathBuf },
    /// RLIMIT_FSIZE on the server process, raised again with prlimit.
    FileSizeLimit,
}

fn set_file_size_limit(pid: Option<u32>, bytes: u64) {
    let limit = libc::rlimit {
        rlim_cur: bytes,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: prlimit on our own child (or ourselves) with a valid rlimit.
    let rc = unsafe {
        libc::prlimit(
            pid.map_or(0, |p| p as libc::pid_t),
            libc::RLIMIT_FSIZE,
            &limit,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_appends_clearly_loses_nothing_and_recovers_when_space_is_freed() {
    let fallback_dir = tempfile::tempdir().expect("tempdir");
    // UMADB_DISK_FULL_INJECT=1 skips the mount, to exercise the injected fault where mounting works.
    let mounted = if std::env::var_os("UMADB_DISK_FULL_INJECT").is_some() {
        Err("skipped: UMADB_DISK_FULL_INJECT is set".to_string())
    } else {
        Tmpfs::mount(24 * MIB)
    };
    let (fault, db) = match mounted {
        Ok(fs) => {
            let filler = fs.path().join("filler");
            // Leave about 4 MiB for the store.
            std::fs::write(&filler, vec![0u8; (20 * MIB) as usize]).expect("filler");
            let db = fs.path().join("db");
            eprintln!("disk full: a 24 MiB tmpfs, 20 MiB taken by a filler file");
            (Fault::Tmpfs { _fs: fs, filler }, db)
        }
        Err(e) => {
            eprintln!(
                "disk full: mounting a tmpfs is not allowed here ({}); injecting the fault at \
                 the write path with RLIMIT_FSIZE instead",
                e.trim()
            );
            (Fault::FileSizeLimit, fallback_dir.path().join("db"))
        }
    };
    let mut server = Umadb::try_spawn_with(&db, &[], |command| {
        if matches!(fault, Fault::FileSizeLimit) {
            // SAFETY: only async-signal-safe calls between fork and exec.
            unsafe {
                command.pre_exec(|| {
                    // Writing past the limit must fail with EFBIG, not kill the process.
                    libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                    let limit = libc::rlimit {
                        rlim_cur: 4 * MIB,
                        rlim_max: libc::RLIM_INFINITY,
                    };
                    libc::setrlimit(libc::RLIMIT_FSIZE, &limit);
                    Ok(())
                });
            }
        }
    })
    .expect("server starts");
    let mut client = server.client().await;

    // Append 64 KiB events until the disk is full.
    let data = vec![0xA5u8; 64 * 1024];
    let mut acknowledged = 0u64;
    let failure = loop {
        let events = (0..4).map(|_| event("Big", &["full"], &data)).collect();
        match append(&mut client, append_request(events)).await {
            Ok(position) => {
                acknowledged = position;
                assert!(acknowledged < 10_000, "the disk never filled up");
            }
            Err(status) => break status,
        }
    };
    eprintln!(
        "after {acknowledged} events: {:?} {}",
        failure.code(),
        failure.message()
    );
    assert_eq!(failure.code(), Code::Internal, "{failure:?}");
    let message = failure.message().to_lowercase();
    match fault {
        // The server sees the filesystem is full and says so.
        Fault::Tmpfs { .. } => assert!(
            message.contains("disk holding the store is full"),
            "the error says what is wrong: {message}"
        ),
        // A file-size limit leaves the disk with space: only the I/O error is known.
        Fault::FileSizeLimit => assert!(message.contains("error"), "{message}"),
    }
    assert!(acknowledged > 0, "some appends fit before the disk filled");

    // The store is untouched by the failed append and reads keep working.
    let (events, head) = read_all(&mut client, v1::ReadRequest::default())
        .await
        .expect("reads work while the disk is full");
    assert_eq!(head, Some(acknowledged));
    assert_eq!(positions(&events), (1..=acknowledged).collect::<Vec<_>>());
    assert!(events
        .iter()
        .all(|e| e.event.as_ref().unwrap().data == data));
    let head = client.head(v1::HeadRequest {}).await.unwrap().into_inner();
    assert_eq!(head.position, Some(acknowledged));

    // Free space: appends succeed again, right after the acknowledged ones.
    match &fault {
        Fault::Tmpfs { filler, .. } => std::fs::remove_file(filler).expect("remove filler"),
        Fault::FileSizeLimit => set_file_size_limit(Some(server.pid()), libc::RLIM_INFINITY),
    }
    let position = append(
        &mut client,
        append_request(vec![event("AfterFree", &[], b"ok")]),
    )
    .await
    .expect("appends succeed once space is freed");
    assert_eq!(position, acknowledged + 1);
    assert!(server.is_running());
    server.kill();
    assert_check_clean(&db);
    let server = Umadb::spawn(&db, &[]);
    let (events, _) = read_all(&mut server.client().await, v1::ReadRequest::default())
        .await
        .expect("read after restart");
    assert_eq!(
        positions(&events),
        (1..=acknowledged + 1).collect::<Vec<_>>()
    );
    drop(server);
}
