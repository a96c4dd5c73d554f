//! Running the async client from blocking Python code.
//!
//! Every blocking call spawns its future on the one tokio runtime of the process (the one
//! `pyo3-async-runtimes` also uses for `AsyncClient`) and waits for the result with the GIL
//! released, waking every [`TICK`] to let Python run its signal handlers. When a handler raises
//! (Ctrl-C raises `KeyboardInterrupt`), the future is aborted, which cancels its gRPC call, and
//! the exception propagates.

use std::future::Future;
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

/// Runs `future` to completion with the GIL released; a signal handler's exception aborts it.
pub(crate) fn wait_for<T, F>(py: Python<'_>, future: F) -> PyResult<T>
where
    T: Send + 'static,
    F: Future<Output = T> + Send + 'static,
{
    let (sender, mut receiver) = mpsc::sync_channel(1);
    let task = runtime().map_err(to_py_err)?.spawn(async move {
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
