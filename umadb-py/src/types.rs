//! The value types: `Event`, `SequencedEvent`, `Query`, `QueryItem`, `AppendCondition`,
//! `TrackingInfo`. Each wraps its `umadb_core` type, is immutable (read-only properties),
//! compares by value and has a `repr` that reads like the call that made it.

use std::borrow::Cow;

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyMapping, PyString};
use pyo3::BoundObject;
use umadb_core as core;
use umadb_core::Uuid;

use crate::args::Position;
use crate::errors::{invalid_argument, to_py_err};

/// `repr()` of a value converted to Python.
fn repr<'py>(py: Python<'py>, value: impl IntoPyObject<'py>) -> PyResult<String> {
    let object = value.into_pyobject(py).map_err(Into::into)?.into_bound();
    Ok(object.as_any().repr()?.to_string())
}

fn repr_opt_position(position: Option<u64>) -> String {
    position.map_or_else(|| "None".to_string(), |p| p.to_string())
}

/// An event to append, or one read back inside a `SequencedEvent`.
#[pyclass(module = "umadb", name = "Event", frozen, eq)]
#[derive(Clone)]
pub struct PyEvent {
    pub(crate) inner: core::Event,
}

impl PartialEq for PyEvent {
    // Metadata is a dict on the Python side: its order does not count.
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (&self.inner, &other.inner);
        let sorted = |m: &Vec<(String, String)>| {
            let mut m = m.clone();
            m.sort();
            m
        };
        a.event_type == b.event_type
            && a.tags == b.tags
            && a.data == b.data
            && a.uuid == b.uuid
            && sorted(&a.metadata) == sorted(&b.metadata)
    }
}

/// `str` (any UUID text form) or `uuid.UUID`, or `None`.
fn extract_uuid(value: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Uuid>> {
    let Some(value) = value.filter(|v| !v.is_none()) else {
        return Ok(None);
    };
    if let Ok(text) = value.cast::<PyString>() {
        let text = text.to_str()?;
        return Uuid::parse_str(text)
            .map(Some)
            .map_err(|e| invalid_argument(format!("invalid uuid {text:?}: {e}")));
    }
    value.extract::<Uuid>().map(Some).map_err(|_| {
        PyTypeError::new_err(format!(
            "uuid must be a str or a uuid.UUID, not {}",
            type_name(value)
        ))
    })
}

/// A `dict[str, str]` (or any mapping) as entries in iteration order.
fn extract_metadata(value: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<(String, String)>> {
    let Some(value) = value.filter(|v| !v.is_none()) else {
        return Ok(Vec::new());
    };
    let items = if let Ok(dict) = value.cast::<PyDict>() {
        dict.items()
    } else if let Ok(mapping) = value.cast::<PyMapping>() {
        mapping.items()?
    } else {
        return Err(PyTypeError::new_err(format!(
            "metadata must be a dict[str, str], not {}",
            type_name(value)
        )));
    };
    items
        .iter()
        .map(|item| {
            item.extract::<(String, String)>().map_err(|_| {
                PyTypeError::new_err("metadata keys and values must be str".to_string())
            })
        })
        .collect()
}

/// `bytes`, `bytearray` or `memoryview`.
fn extract_data(value: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(bytes) = value.extract::<Cow<'_, [u8]>>() {
        return Ok(bytes.into_owned());
    }
    if value.is_instance_of::<pyo3::types::PyMemoryView>() {
        let bytes = value.call_method0("tobytes")?;
        return Ok(bytes.cast::<PyBytes>()?.as_bytes().to_vec());
    }
    Err(PyTypeError::new_err(format!(
        "data must be bytes, not {}",
        type_name(value)
    )))
}

fn type_name(value: &Bound<'_, PyAny>) -> String {
    value
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".to_string())
}

#[pymethods]
impl PyEvent {
    #[new]
    #[pyo3(signature = (event_type, data, tags=None, uuid=None, metadata=None))]
    fn new(
        event_type: String,
        data: &Bound<'_, PyAny>,
        tags: Option<Vec<String>>,
        uuid: Option<&Bound<'_, PyAny>>,
        metadata: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let inner = core::Event {
            event_type,
            tags: tags.unwrap_or_default(),
            data: extract_data(data)?,
            uuid: extract_uuid(uuid)?,
            metadata: extract_metadata(metadata)?,
        };
        inner.validate().map_err(to_py_err)?;
        Ok(PyEvent { inner })
    }

    #[getter]
    fn event_type(&self) -> &str {
        &self.inner.event_type
    }

    #[getter]
    fn data<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.data)
    }

    #[getter]
    fn tags(&self) -> Vec<String> {
        self.inner.tags.clone()
    }

    #[getter]
    fn uuid(&self) -> Option<Uuid> {
        self.inner.uuid
    }

    #[getter]
    fn metadata<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        for (key, value) in &self.inner.metadata {
            dict.set_item(key, value)?;
        }
        Ok(dict)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "Event(event_type={}, data={}, tags={}, uuid={}, metadata={})",
            repr(py, &self.inner.event_type)?,
            repr(py, self.data(py))?,
            repr(py, &self.inner.tags)?,
            repr(py, self.inner.uuid)?,
            repr(py, self.metadata(py)?)?,
        ))
    }
}

/// A recorded event and its position.
#[pyclass(module = "umadb", name = "SequencedEvent", frozen, eq)]
pub struct PySequencedEvent {
    position: u64,
    event: Py<PyEvent>,
    tracking_info: Option<Py<PyTrackingInfo>>,
}

impl PartialEq for PySequencedEvent {
    fn eq(&self, other: &Self) -> bool {
        self.position == other.position
            && self.event.get() == other.event.get()
            && match (&self.tracking_info, &other.tracking_info) {
                (None, None) => true,
                (Some(a), Some(b)) => a.get() == b.get(),
                _ => false,
            }
    }
}

impl PySequencedEvent {
    pub(crate) fn from_core(py: Python<'_>, event: core::SequencedEvent) -> PyResult<Self> {
        Ok(PySequencedEvent {
            position: event.position,
            event: Py::new(py, PyEvent { inner: event.event })?,
            tracking_info: event
                .tracking_info
                .map(|inner| Py::new(py, PyTrackingInfo { inner }))
                .transpose()?,
        })
    }
}

/// A batch of recorded events as a Python list.
pub(crate) fn event_list(
    py: Python<'_>,
    events: Vec<core::SequencedEvent>,
) -> PyResult<Bound<'_, PyList>> {
    let list = PyList::empty(py);
    for event in events {
        list.append(PySequencedEvent::from_core(py, event)?)?;
    }
    Ok(list)
}

#[pymethods]
impl PySequencedEvent {
    #[new]
    #[pyo3(signature = (position, event, tracking_info=None))]
    fn new(
        position: Position,
        event: Py<PyEvent>,
        tracking_info: Option<Py<PyTrackingInfo>>,
    ) -> Self {
        PySequencedEvent {
            position: position.0,
            event,
            tracking_info,
        }
    }

    #[getter]
    fn position(&self) -> u64 {
        self.position
    }

    #[getter]
    fn event(&self, py: Python<'_>) -> Py<PyEvent> {
        self.event.clone_ref(py)
    }

    #[getter]
    fn tracking_info(&self, py: Python<'_>) -> Option<Py<PyTrackingInfo>> {
        self.tracking_info.as_ref().map(|t| t.clone_ref(py))
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "SequencedEvent(position={}, event={}, tracking_info={})",
            self.position,
            repr(py, self.event.bind(py))?,
            repr(py, self.tracking_info.as_ref().map(|t| t.bind(py)))?,
        ))
    }
}

/// Matches an event when (`types` is empty or the event's type is one of them) and every tag
/// in `tags` is among the event's tags.
#[pyclass(module = "umadb", name = "QueryItem", frozen, eq)]
#[derive(Clone, PartialEq)]
pub struct PyQueryItem {
    pub(crate) inner: core::QueryItem,
}

#[pymethods]
impl PyQueryItem {
    #[new]
    #[pyo3(signature = (types=None, tags=None))]
    fn new(types: Option<Vec<String>>, tags: Option<Vec<String>>) -> PyResult<Self> {
        let inner = core::QueryItem {
            types: types.unwrap_or_default(),
            tags: tags.unwrap_or_default(),
        };
        core::Query::from_items([inner.clone()])
            .validate()
            .map_err(to_py_err)?;
        Ok(PyQueryItem { inner })
    }

    #[getter]
    fn types(&self) -> Vec<String> {
        self.inner.types.clone()
    }

    #[getter]
    fn tags(&self) -> Vec<String> {
        self.inner.tags.clone()
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "QueryItem(types={}, tags={})",
            repr(py, &self.inner.types)?,
            repr(py, &self.inner.tags)?,
        ))
    }
}

/// A list of items, OR-ed. No items: every event matches.
#[pyclass(module = "umadb", name = "Query", frozen, eq)]
#[derive(Clone, PartialEq)]
pub struct PyQuery {
    pub(crate) inner: core::Query,
}

#[pymethods]
impl PyQuery {
    #[new]
    #[pyo3(signature = (items=None))]
    fn new(items: Option<Vec<PyRef<'_, PyQueryItem>>>) -> Self {
        PyQuery {
            inner: core::Query::from_items(
                items
                    .unwrap_or_default()
                    .iter()
                    .map(|item| item.inner.clone()),
            ),
        }
    }

    #[getter]
    fn items(&self) -> Vec<PyQueryItem> {
        self.inner
            .items
            .iter()
            .map(|inner| PyQueryItem {
                inner: inner.clone(),
            })
            .collect()
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let items: PyResult<Vec<String>> = self
            .items()
            .into_iter()
            .map(|item| item.__repr__(py))
            .collect();
        Ok(format!("Query(items=[{}])", items?.join(", ")))
    }
}

/// Fail the append if an event matching `fail_if_events_match` has a position after `after`
/// (at any position when `after` is None).
#[pyclass(module = "umadb", name = "AppendCondition", frozen, eq)]
#[derive(Clone, PartialEq)]
pub struct PyAppendCondition {
    pub(crate) inner: core::AppendCondition,
}

#[pymethods]
impl PyAppendCondition {
    #[new]
    #[pyo3(signature = (fail_if_events_match, after=None))]
    fn new(fail_if_events_match: PyRef<'_, PyQuery>, after: Option<Position>) -> Self {
        PyAppendCondition {
            inner: core::AppendCondition {
                fail_if_events_match: fail_if_events_match.inner.clone(),
                after: after.map(|p| p.0),
            },
        }
    }

    #[getter]
    fn fail_if_events_match(&self) -> PyQuery {
        PyQuery {
            inner: self.inner.fail_if_events_match.clone(),
        }
    }

    #[getter]
    fn after(&self) -> Option<u64> {
        self.inner.after
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "AppendCondition(fail_if_events_match={}, after={})",
            self.fail_if_events_match().__repr__(py)?,
            repr_opt_position(self.inner.after),
        ))
    }
}

/// The position an event processor has reached in an upstream `source`.
#[pyclass(module = "umadb", name = "TrackingInfo", frozen, eq)]
#[derive(Clone, PartialEq)]
pub struct PyTrackingInfo {
    pub(crate) inner: core::TrackingInfo,
}

#[pymethods]
impl PyTrackingInfo {
    #[new]
    fn new(source: String, position: Position) -> PyResult<Self> {
        if source.len() > core::MAX_STRING_LEN {
            return Err(invalid_argument(format!(
                "tracking source is {} bytes long; the limit is {} bytes",
                source.len(),
                core::MAX_STRING_LEN
            )));
        }
        Ok(PyTrackingInfo {
            inner: core::TrackingInfo {
                source,
                position: position.0,
            },
        })
    }

    #[getter]
    fn source(&self) -> &str {
        &self.inner.source
    }

    #[getter]
    fn position(&self) -> u64 {
        self.inner.position
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "TrackingInfo(source={}, position={})",
            repr(py, &self.inner.source)?,
            self.inner.position
        ))
    }
}

/// Adds the value types to the module.
pub(crate) fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<PyEvent>()?;
    module.add_class::<PySequencedEvent>()?;
    module.add_class::<PyQuery>()?;
    module.add_class::<PyQueryItem>()?;
    module.add_class::<PyAppendCondition>()?;
    module.add_class::<PyTrackingInfo>()?;
    Ok(())
}
