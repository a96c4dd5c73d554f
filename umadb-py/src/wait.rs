//! Running the async client from blocking Python code.
//!
//! A blocking call waits with the GIL released, waking every [`TICK`] to let Python run its
//! signal handlers. When a handler raises (Ctrl-C raises `KeyboardInterrupt`), the call's
//! future is dropped, which cancels its gRPC call, and the exception propagates. Both ways of
//! waiting use the one tokio runtime of the process (the one `pyo3-async-runtimes` also uses for
//! `AsyncClient`):
//!
//! - [`wait`]: a unary call runs as a task of the runtime, and the caller waits for its answer;
//! - [`receive`]: opening a read or subscription, and each step through it, runs on the calling
//!   thread. A read's later batches, and the end of a small read, have usually arrived already:
//!   received in place they cost no thread wake-up at all. Measured against running them as
//!   tasks (one client, loopback): a 10-event tag-query read 0.30–0.40 → 0.18–0.24 ms, a
//!   whole-store iteration 1.2–1.3M → 1.7–2.1M events/s. Unary calls stay tasks: `head()` in
//!   place took 0.16–0.19 ms against 0.12–0.14 ms.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{mpsc, OnceLock};
use std::time::Duration;

use pyo3::prelude::*;
use tokio::runtime::Runtime;
use umadb_core::Error;

use crate::errors::to_py_err;

/// How often a waiting thread checks for signals: Ctrl-C is noticed within this time.
const TICK: Duration = Duration::from_millis(50);

/// The process that started the runtime.
static RUNTIME_PID: OnceLock<u32> = OnceLock::new();

/// The process's tokio runtime, or an error in a child forked after it started: its threads do
/// not exist in the child, so any call would wait forever.
pub(crate) fn runtime() -> Result<&'static Runtime, Error> {
    let pid = *RUNTIME_PID.get_or_init(std::process::id);
    if pid != std::process::id() {
        return Err(Error::Internal(
            "umadb was used before this process was forked, and its runtime does not survive \
             a fork: use umadb only after forking (or start processes with 'spawn')"
                .to_string(),
        ));
    }
    Ok(pyo3_async_runtimes::tokio::get_runtime())
}

/// Runs `future` to completion on this thread with the GIL released; a signal handler's
/// exception cancels it.
fn wait_here<T, F>(py: Python<'_>, future: F) -> PyResult<T>
where
    T: Send + 'static,
    F: Future<Output = T> + Send + 'static,
{
    let runtime = runtime().map_err(to_py_err)?;
    if tokio::runtime::Handle::try_current().is_ok() {
        // Python code called from a thread of a tokio runtime: `block_on` is not allowed there.
        return wait_for(py, future);
    }
    let mut future = Box::pin(future);
    loop {
        let step = py.detach(|| {
            catch_unwind(AssertUnwindSafe(|| {
                runtime.block_on(async { tokio::time::timeout(TICK, future.as_mut()).await })
            }))
        });
        match step {
            Ok(Ok(outcome)) => return Ok(outcome),
            Err(_) => {
                discard(py, runtime, future);
                return Err(to_py_err(Error::Internal(
                    "the operation stopped without an answer (it panicked)".to_string(),
                )));
            }
            Ok(Err(_)) => {
                if let Err(interrupted) = py.check_signals() {
                    // Dropping the future cancels its call.
                    discard(py, runtime, future);
                    return Err(interrupted);
                }
            }
        }
    }
}

/// Drops an unfinished future where its parts expect to be dropped: in the runtime, without
/// the GIL.
fn discard<F: Send>(py: Python<'_>, runtime: &Runtime, future: F) {
    py.detach(|| {
        let _runtime = runtime.enter();
        drop(future);
    });
}

/// Runs `future` as a task of the process's runtime and waits for its answer with the GIL
/// released; a signal handler's exception aborts it.
pub(crate) fn wait_for<T, F>(py: Python<'_>, future: F) -> PyResult<T>
where
    T: Send + 'static,
    F: Future<Output = T> + Send + 'static,
{
    let runtime = runtime().map_err(to_py_err)?;
    let (sender, mut receiver) = mpsc::sync_channel(1);
    let task = runtime.spawn(async move {
        // The receiver is gone only if the caller was interrupted.
        let _ = sender.send(future.await);
    });
    loop {
        let receiver = &mut receiver;
        match py.detach(move || receiver.recv_timeout(TICK)) {
            Ok(outcome) => return Ok(outcome),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Err(interrupted) = py.check_signals() {
                    task.abort();
                    return Err(interrupted);
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(to_py_err(Error::Internal(
                    "the operation stopped without an answer (its task panicked)".to_string(),
                )))
            }
        }
    }
}

/// [`wait_for`] a fallible operation of the client, raising its error as a Python exception.
pub(crate) fn wait<T, F>(py: Python<'_>, future: F) -> PyResult<T>
where
    T: Send + 'static,
    F: Future<Output = Result<T, Error>> + Send + 'static,
{
    wait_for(py, future)?.map_err(to_py_err)
}

/// [`wait_here`] for opening a read or subscription, or a step through one, raising its error
/// as a Python exception.
pub(crate) fn receive<T, F>(py: Python<'_>, future: F) -> PyResult<T>
where
    T: Send + 'static,
    F: Future<Output = Result<T, Error>> + Send + 'static,
{
    wait_here(py, future)?.map_err(to_py_err)
}
