//! `Client`, the blocking client, and its `ReadResponse` and `Subscription` iterators.
//!
//! Every call waits with the GIL released and can be interrupted by Ctrl-C (see `wait`). One
//! client can be shared by many threads; a read or subscription can be cancelled from another
//! thread while one is waiting for its events.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyList, PyString, PyTuple};
use umadb_core::{AppendRequest, Query};

use crate::args::{batch_size, Position};
use crate::connection::{Connection, ReadKind};
use crate::errors::{invalid_argument, to_py_err};
use crate::feed::Feed;
use crate::types::{
    event_list, PyAppendCondition, PyEvent, PyQuery, PySequencedEvent, PyTrackingInfo,
};
use crate::wait::{receive, wait};

/// The arguments of `append`, checked and converted.
pub(crate) fn append_request(
    events: Vec<PyRef<'_, PyEvent>>,
    condition: Option<PyRef<'_, PyAppendCondition>>,
    tracking_info: Option<PyRef<'_, PyTrackingInfo>>,
) -> AppendRequest {
    AppendRequest {
        events: events.iter().map(|e| e.inner.clone()).collect(),
        condition: condition.map(|c| c.inner.clone()),
        tracking_info: tracking_info.map(|t| t.inner.clone()),
    }
}

/// The arguments of `read`, checked: how to serve it.
pub(crate) fn read_kind(backwards: bool, subscribe: bool) -> PyResult<ReadKind> {
    match (subscribe, backwards) {
        (false, backwards) => Ok(ReadKind::Read { backwards }),
        (true, false) => Ok(ReadKind::Subscribe),
        (true, true) => Err(invalid_argument(
            "a read with subscribe=True cannot also read backwards",
        )),
    }
}

pub(crate) fn query(query: Option<PyRef<'_, PyQuery>>) -> Option<Query> {
    query.map(|q| q.inner.clone())
}

/// Makes the shared connection from the constructor's arguments.
pub(crate) fn connection(
    url: &str,
    ca_path: Option<&str>,
    api_key: Option<&str>,
    batch: Option<Position>,
) -> PyResult<Arc<Connection>> {
    Connection::new(url, ca_path, api_key, batch_size(batch)?).map_err(to_py_err)
}

/// A blocking UmaDB client. Connects on first use; share it between threads freely.
#[pyclass(module = "umadb", name = "Client", frozen)]
pub struct PyClient {
    connection: Arc<Connection>,
    url: String,
}

#[pymethods]
impl PyClient {
    #[new]
    #[pyo3(signature = (url, ca_path=None, api_key=None, batch_size=None))]
    fn new(
        url: String,
        ca_path: Option<String>,
        api_key: Option<String>,
        batch_size: Option<Position>,
    ) -> PyResult<Self> {
        Ok(PyClient {
            connection: connection(&url, ca_path.as_deref(), api_key.as_deref(), batch_size)?,
            url,
        })
    }

    #[pyo3(signature = (events, condition=None, tracking_info=None))]
    fn append(
        &self,
        py: Python<'_>,
        events: Vec<PyRef<'_, PyEvent>>,
        condition: Option<PyRef<'_, PyAppendCondition>>,
        tracking_info: Option<PyRef<'_, PyTrackingInfo>>,
    ) -> PyResult<u64> {
        let request = append_request(events, condition, tracking_info);
        let connection = self.connection.clone();
        wait(py, async move { connection.append(request).await })
    }

    #[pyo3(signature = (query=None, start=None, backwards=false, limit=None, subscribe=false))]
    fn read(
        &self,
        py: Python<'_>,
        query: Option<PyRef<'_, PyQuery>>,
        start: Option<Position>,
        backwards: bool,
        limit: Option<Position>,
        subscribe: bool,
    ) -> PyResult<PyReadResponse> {
        let kind = read_kind(backwards, subscribe)?;
        let (query, start, limit) = (self::query(query), start.map(|s| s.0), limit.map(|l| l.0));
        let connection = self.connection.clone();
        let feed = receive(py, async move {
            connection.read(query, start, kind, limit).await
        })?;
        Ok(PyReadResponse { feed })
    }

    #[pyo3(signature = (query=None, after=None))]
    fn subscribe(
        &self,
        py: Python<'_>,
        query: Option<PyRef<'_, PyQuery>>,
        after: Option<Position>,
    ) -> PyResult<PySubscription> {
        let (query, after) = (self::query(query), after.map(|a| a.0));
        let connection = self.connection.clone();
        let feed = receive(py, async move { connection.subscribe(query, after).await })?;
        Ok(PySubscription { feed })
    }

    fn head(&self, py: Python<'_>) -> PyResult<Option<u64>> {
        let connection = self.connection.clone();
        wait(py, async move { connection.head().await })
    }

    fn get_tracking_info(&self, py: Python<'_>, source: String) -> PyResult<Option<u64>> {
        let connection = self.connection.clone();
        wait(
            py,
            async move { connection.get_tracking_info(source).await },
        )
    }

    fn check_health(&self, py: Python<'_>) -> PyResult<bool> {
        let connection = self.connection.clone();
        wait(py, async move { connection.check_health().await })
    }

    fn close(&self) {
        self.connection.close();
    }

    #[getter]
    fn closed(&self) -> bool {
        self.connection.is_closed()
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc_info))]
    fn __exit__(&self, _exc_info: &Bound<'_, PyTuple>) {
        self.connection.close();
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "Client(url={})",
            PyString::new(py, &self.url).repr()?
        ))
    }
}

/// Waits for the next event of a feed, with the GIL released.
fn next_event(py: Python<'_>, feed: &Arc<Feed>) -> PyResult<Option<PySequencedEvent>> {
    let next = match feed.try_next_event() {
        Some(next) => next.map_err(to_py_err)?,
        None => {
            let feed = feed.clone();
            receive(py, async move { feed.next_event().await })?
        }
    };
    next.map(|event| PySequencedEvent::from_core(py, event))
        .transpose()
}

fn next_batch<'py>(py: Python<'py>, feed: &Arc<Feed>) -> PyResult<Bound<'py, PyList>> {
    let feed = feed.clone();
    let batch = receive(py, async move { feed.next_batch().await })?;
    event_list(py, batch)
}

/// The events of a `read()`, streamed lazily in batches as they are iterated.
#[pyclass(module = "umadb", name = "ReadResponse", frozen)]
pub struct PyReadResponse {
    feed: Arc<Feed>,
}

#[pymethods]
impl PyReadResponse {
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<PySequencedEvent>> {
        next_event(py, &self.feed)
    }

    fn head(&self, py: Python<'_>) -> PyResult<Option<u64>> {
        if let Some(head) = self.feed.try_head() {
            return head.map_err(to_py_err);
        }
        let feed = self.feed.clone();
        receive(py, async move { feed.head().await })
    }

    fn collect_with_head<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<(Bound<'py, PyList>, Option<u64>)> {
        let feed = self.feed.clone();
        let (events, head) = receive(py, async move { feed.collect_with_head().await })?;
        Ok((event_list(py, events)?, head))
    }

    fn next_batch<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        next_batch(py, &self.feed)
    }

    fn cancel(&self) {
        self.feed.cancel();
    }
}

/// The events of a `subscribe()`: recorded ones first, then new ones as they are committed.
#[pyclass(module = "umadb", name = "Subscription", frozen)]
pub struct PySubscription {
    feed: Arc<Feed>,
}

#[pymethods]
impl PySubscription {
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<PySequencedEvent>> {
        next_event(py, &self.feed)
    }

    fn next_batch<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        next_batch(py, &self.feed)
    }

    fn cancel(&self) {
        self.feed.cancel();
    }
}

pub(crate) fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<PyClient>()?;
    module.add_class::<PyReadResponse>()?;
    module.add_class::<PySubscription>()?;
    Ok(())
}
