//! Completes asyncio futures from tokio tasks, and keeps those tasks out of Python once the
//! interpreter begins to exit.
//!
//! A tokio thread that enters Python while the interpreter finalizes crashes the process
//! ("PyGILState_Release: thread state must be current"). So a task touches Python only at its
//! very end, inside an `entered` section, and converts its result (including errors) there; an
//! `atexit` hook closes the gate and waits, with the GIL released, for sections already inside
//! to leave. Tasks finishing after that drop their result without touching Python.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use pyo3::exceptions::{PyRuntimeError, PyStopAsyncIteration};
use pyo3::prelude::*;
use pyo3::BoundObject;
use tokio::task::AbortHandle;

use crate::errors::to_py_err;

static EXITING: AtomicBool = AtomicBool::new(false);
/// Tasks inside (or about to enter) Python.
static INSIDE: AtomicUsize = AtomicUsize::new(0);

/// Why an awaitable did not produce a value.
pub(crate) enum Failure {
    Store(umadb_core::Error),
    /// The end of an `async for`.
    EndOfStream,
}

impl From<umadb_core::Error> for Failure {
    fn from(error: umadb_core::Error) -> Self {
        Failure::Store(error)
    }
}

impl Failure {
    fn into_py_err(self) -> PyErr {
        match self {
            Failure::Store(error) => to_py_err(error),
            Failure::EndOfStream => PyStopAsyncIteration::new_err(()),
        }
    }
}

/// Runs `future` on the runtime and returns an asyncio future of its result. Cancelling the
/// asyncio future aborts the task.
pub(crate) fn future_into_py<F, T>(py: Python<'_>, future: F) -> PyResult<Bound<'_, PyAny>>
where
    F: Future<Output = Result<T, Failure>> + Send + 'static,
    T: for<'py> IntoPyObject<'py> + Send + 'static,
{
    let runtime = crate::wait::runtime().map_err(to_py_err)?;
    if EXITING.load(Ordering::SeqCst) {
        return Err(PyRuntimeError::new_err("the interpreter is exiting"));
    }
    let event_loop = py.import("asyncio")?.call_method0("get_running_loop")?;
    let py_future = event_loop.call_method0("create_future")?;
    let target = py_future.clone().unbind();
    let event_loop = event_loop.unbind();
    let task = runtime.spawn(async move {
        let result = future.await;
        if !enter() {
            return;
        }
        Python::attach(|py| {
            let result = match result {
                Ok(value) => value
                    .into_pyobject(py)
                    .map(|v| v.into_bound().into_any().unbind())
                    .map_err(Into::into),
                Err(failure) => Err(failure.into_py_err()),
            };
            let complete = Complete {
                future: target,
                result: Mutex::new(Some(result)),
            };
            // Fails only when the loop has closed; then nobody awaits the result.
            let _ = event_loop
                .bind(py)
                .call_method1("call_soon_threadsafe", (complete,));
        });
        INSIDE.fetch_sub(1, Ordering::SeqCst);
    });
    py_future.call_method1(
        "add_done_callback",
        (AbortOnCancel {
            task: task.abort_handle(),
        },),
    )?;
    Ok(py_future)
}

/// Enters the section that may touch Python, unless the interpreter is exiting.
fn enter() -> bool {
    INSIDE.fetch_add(1, Ordering::SeqCst);
    if EXITING.load(Ordering::SeqCst) {
        INSIDE.fetch_sub(1, Ordering::SeqCst);
        return false;
    }
    true
}

/// Sets an asyncio future's outcome on its loop's thread, unless it is already done (cancelled).
#[pyclass(module = "umadb")]
struct Complete {
    future: Py<PyAny>,
    result: Mutex<Option<PyResult<Py<PyAny>>>>,
}

#[pymethods]
impl Complete {
    fn __call__(&self, py: Python<'_>) -> PyResult<()> {
        let future = self.future.bind(py);
        if future.call_method0("done")?.is_truthy()? {
            return Ok(());
        }
        let taken = self
            .result
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        match taken {
            Some(Ok(value)) => future.call_method1("set_result", (value,))?,
            Some(Err(error)) => future.call_method1("set_exception", (error.into_value(py),))?,
            None => return Ok(()),
        };
        Ok(())
    }
}

/// Aborts the task behind an asyncio future when that future is cancelled.
#[pyclass(module = "umadb")]
struct AbortOnCancel {
    task: AbortHandle,
}

#[pymethods]
impl AbortOnCancel {
    fn __call__(&self, future: &Bound<'_, PyAny>) -> PyResult<()> {
        if future.call_method0("cancelled")?.is_truthy()? {
            self.task.abort();
        }
        Ok(())
    }
}

/// Registered with `atexit`: closes the gate and lets tasks already inside Python finish.
#[pyfunction]
fn _close_bridge(py: Python<'_>) {
    EXITING.store(true, Ordering::SeqCst);
    py.detach(|| {
        let deadline = Instant::now() + Duration::from_secs(5);
        while INSIDE.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    });
}

pub(crate) fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    let close = wrap_pyfunction!(_close_bridge, module)?;
    module
        .py()
        .import("atexit")?
        .call_method1("register", (close,))?;
    Ok(())
}
