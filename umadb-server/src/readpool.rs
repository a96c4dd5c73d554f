//! Storage reads run on a small pool of threads with a lower scheduling priority than the
//! writer thread and the async workers, that yield their core after each job, so that under
//! CPU contention a flood of reads slows itself rather than the appends. The pool also bounds
//! how many reads touch LMDB at once.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, OnceLock};

type Job = Box<dyn FnOnce() + Send>;

/// Niceness of the read threads (the writer and the async workers keep 0).
const READ_NICENESS: i32 = 10;

struct Pool {
    sender: Mutex<Sender<Job>>,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let (sender, receiver) = channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        let threads = std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(2)
            .saturating_sub(1)
            .max(1);
        for n in 0..threads {
            let receiver = receiver.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("umadb-read-{n}"))
                .spawn(move || work(&receiver));
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cannot start a read thread");
            }
        }
        Pool {
            sender: Mutex::new(sender),
        }
    })
}

fn work(receiver: &Mutex<Receiver<Job>>) {
    lower_priority();
    loop {
        let job = {
            let receiver = receiver.lock().unwrap_or_else(|p| p.into_inner());
            receiver.recv()
        };
        match job {
            // A panicking read fails its own request (its answer channel drops), not the pool.
            Ok(job) => {
                drop(catch_unwind(AssertUnwindSafe(job)));
                // Niceness does not let a woken append thread in before this thread's time slice
                // ends (up to a 4 ms tick under EEVDF): step aside between batches instead.
                std::thread::yield_now();
            }
            Err(_) => return,
        }
    }
}

#[cfg(target_os = "linux")]
fn lower_priority() {
    // SAFETY: gettid and setpriority take no pointers; on Linux, PRIO_PROCESS with a thread id
    // sets that thread's niceness only. Failure just leaves the default priority.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, READ_NICENESS);
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {}

/// Runs `work` on a read thread; `None` if it panicked or the pool is gone.
pub(crate) async fn run<R: Send + 'static>(work: impl FnOnce() -> R + Send + 'static) -> Option<R> {
    let (answer, result) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        let _ = answer.send(work());
    });
    let sent = pool()
        .sender
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send(job);
    if sent.is_err() {
        return None;
    }
    result.await.ok()
}
