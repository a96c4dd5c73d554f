//! `AsyncClient`: the methods of `Client` as coroutines, for asyncio applications. The calls
//! run on the tokio runtime and complete asyncio futures, so the event loop never blocks and
//! no thread pool is needed. Cancelling the awaiting task cancels the call.

use std::sync::Arc;

use pyo3::exceptions::PyStopAsyncIteration;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyString, PyTuple};
use umadb_core::SequencedEvent;

use crate::args::Position;
use crate::bridge::{future_into_py, Failure};
use crate::client::{append_request, connection, query, read_kind};
use crate::connection::Connection;
use crate::errors::to_py_err;
use crate::feed::Feed;
use crate::types::{
    event_list, PyAppendCondition, PyEvent, PyQuery, PySequencedEvent, PyTrackingInfo,
};

/// A recorded event, made into a Python object when its future completes.
struct Recorded(SequencedEvent);

impl<'py> IntoPyObject<'py> for Recorded {
    type Target = PySequencedEvent;
    type Output = Bound<'py, PySequencedEvent>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Self::Output> {
        Bound::new(py, PySequencedEvent::from_core(py, self.0)?)
    }
}

/// A batch of recorded events, made into a list when its future completes.
struct Batch(Vec<SequencedEvent>);

impl<'py> IntoPyObject<'py> for Batch {
    type Target = PyList;
    type Output = Bound<'py, PyList>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Self::Output> {
        event_list(py, self.0)
    }
}

/// An awaitable that is already done, with the result `None`.
#[pyclass(module = "umadb", frozen)]
pub struct Done;

#[pymethods]
impl Done {
    fn __await__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self) -> Option<()> {
        None
    }
}

/// An asyncio UmaDB client. Connects on first use.
#[pyclass(module = "umadb", name = "AsyncClient", frozen)]
pub struct PyAsyncClient {
    connection: Arc<Connection>,
    url: String,
}

#[pymethods]
impl PyAsyncClient {
    #[new]
    #[pyo3(signature = (url, ca_path=None, api_key=None, batch_size=None))]
    fn new(
        url: String,
        ca_path: Option<String>,
        api_key: Option<String>,
        batch_size: Option<Position>,
    ) -> PyResult<Self> {
        Ok(PyAsyncClient {
            connection: connection(&url, ca_path.as_deref(), api_key.as_deref(), batch_size)?,
            url,
        })
    }

    #[pyo3(signature = (events, condition=None, tracking_info=None))]
    fn append<'py>(
        &self,
        py: Python<'py>,
        events: Vec<PyRef<'_, PyEvent>>,
        condition: Option<PyRef<'_, PyAppendCondition>>,
        tracking_info: Option<PyRef<'_, PyTrackingInfo>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let request = append_request(events, condition, tracking_info);
        let connection = self.connection.clone();
        future_into_py(py, async move {
            connection.append(request).await.map_err(Failure::from)
        })
    }

    #[pyo3(signature = (query=None, start=None, backwards=false, limit=None, subscribe=false))]
    fn read<'py>(
        &self,
        py: Python<'py>,
        query: Option<PyRef<'_, PyQuery>>,
        start: Option<Position>,
        backwards: bool,
        limit: Option<Position>,
        subscribe: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let kind = read_kind(backwards, subscribe)?;
        let (query, start, limit) = (self::query(query), start.map(|s| s.0), limit.map(|l| l.0));
        let connection = self.connection.clone();
        future_into_py(py, async move {
            let feed = connection
                .read(query, start, kind, limit)
                .await
                .map_err(Failure::from)?;
            Ok(PyAsyncReadResponse { feed })
        })
    }

    #[pyo3(signature = (query=None, after=None))]
    fn subscribe<'py>(
        &self,
        py: Python<'py>,
        query: Option<PyRef<'_, PyQuery>>,
        after: Option<Position>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (query, after) = (self::query(query), after.map(|a| a.0));
        let connection = self.connection.clone();
        future_into_py(py, async move {
            let feed = connection
                .subscribe(query, after)
                .await
                .map_err(Failure::from)?;
            Ok(PyAsyncSubscription { feed })
        })
    }

    fn head<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let connection = self.connection.clone();
        future_into_py(
            py,
            async move { connection.head().await.map_err(Failure::from) },
        )
    }

    fn get_tracking_info<'py>(
        &self,
        py: Python<'py>,
        source: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        let connection = self.connection.clone();
        future_into_py(py, async move {
            connection
                .get_tracking_info(source)
                .await
                .map_err(Failure::from)
        })
    }

    fn check_health<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let connection = self.connection.clone();
        future_into_py(py, async move {
            connection.check_health().await.map_err(Failure::from)
        })
    }

    /// Closes at once (closing does no I/O) and returns an awaitable, so that both
    /// `client.close()` and `await client.close()` work.
    fn close(&self) -> Done {
        self.connection.close();
        Done
    }

    #[getter]
    fn closed(&self) -> bool {
        self.connection.is_closed()
    }

    fn __aenter__<'py>(slf: Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let client = slf.unbind();
        future_into_py(py, async move { Ok(client) })
    }

    #[pyo3(signature = (*_exc_info))]
    fn __aexit__<'py>(
        &self,
        py: Python<'py>,
        _exc_info: &Bound<'py, PyTuple>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.connection.close();
        future_into_py(py, async move { Ok(()) })
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "AsyncClient(url={})",
            PyString::new(py, &self.url).repr()?
        ))
    }
}

/// The awaitable of `__anext__`: completed at once when an event is at hand, which saves a
/// trip through the runtime for all but the first event of each batch.
fn anext<'py>(py: Python<'py>, feed: &Arc<Feed>) -> PyResult<Bound<'py, PyAny>> {
    if let Some(next) = feed.try_next_event() {
        let future = pyo3_async_runtimes::get_running_loop(py)?.call_method0("create_future")?;
        match next {
            Ok(Some(event)) => {
                future.call_method1("set_result", (Recorded(event),))?;
            }
            Ok(None) => {
                future.call_method1("set_exception", (py.get_type::<PyStopAsyncIteration>(),))?;
            }
            Err(error) => {
                future.call_method1("set_exception", (to_py_err(error).into_value(py),))?;
            }
        }
        return Ok(future);
    }
    let feed = feed.clone();
    future_into_py(py, async move {
        match feed.next_event().await.map_err(Failure::from)? {
            Some(event) => Ok(Recorded(event)),
            None => Err(Failure::EndOfStream),
        }
    })
}

fn next_batch<'py>(py: Python<'py>, feed: &Arc<Feed>) -> PyResult<Bound<'py, PyAny>> {
    let feed = feed.clone();
    future_into_py(py, async move {
        feed.next_batch().await.map(Batch).map_err(Failure::from)
    })
}

/// The events of an `AsyncClient.read()`: iterate with `async for`.
#[pyclass(module = "umadb", name = "AsyncReadResponse", frozen)]
pub struct PyAsyncReadResponse {
    feed: Arc<Feed>,
}

#[pymethods]
impl PyAsyncReadResponse {
    fn __aiter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __anext__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        anext(py, &self.feed)
    }

    fn head<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let feed = self.feed.clone();
        future_into_py(py, async move { feed.head().await.map_err(Failure::from) })
    }

    fn collect_with_head<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let feed = self.feed.clone();
        future_into_py(py, async move {
            let (events, head) = feed.collect_with_head().await.map_err(Failure::from)?;
            Ok((Batch(events), head))
        })
    }

    fn next_batch<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        next_batch(py, &self.feed)
    }

    fn cancel(&self) {
        self.feed.cancel();
    }
}

/// The events of an `AsyncClient.subscribe()`: iterate with `async for`.
#[pyclass(module = "umadb", name = "AsyncSubscription", frozen)]
pub struct PyAsyncSubscription {
    feed: Arc<Feed>,
}

#[pymethods]
impl PyAsyncSubscription {
    fn __aiter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __anext__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        anext(py, &self.feed)
    }

    fn next_batch<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        next_batch(py, &self.feed)
    }

    fn cancel(&self) {
        self.feed.cancel();
    }
}

pub(crate) fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<Done>()?;
    module.add_class::<PyAsyncClient>()?;
    module.add_class::<PyAsyncReadResponse>()?;
    module.add_class::<PyAsyncSubscription>()?;
    Ok(())
}
