//! The Python exception hierarchy, and the one mapping from `umadb_core::Error` to it.
//!
//! Every exception derives from `umadb.UmaDBError` and from the builtin that a Python caller
//! would expect for it (`IntegrityError` is a `ValueError`, `TransportError` a
//! `RuntimeError`, ...). Classes with two bases cannot be made with `create_exception!`, so
//! they are created with `type(name, bases, namespace)` when the module is initialised.

use pyo3::exceptions::{PyException, PyOSError, PyPermissionError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};
use umadb_core::Error;

/// One exception class: its name, its builtin base (besides `UmaDBError`) and its docstring.
struct Spec {
    name: &'static str,
    base: fn(Python<'_>) -> Bound<'_, PyType>,
    doc: &'static str,
}

const SPECS: [Spec; 8] = [
    Spec {
        name: "IntegrityError",
        base: |py| py.get_type::<PyValueError>(),
        doc: "An append condition failed, or a tracking position was not after the one recorded.",
    },
    Spec {
        name: "InvalidArgumentError",
        base: |py| py.get_type::<PyValueError>(),
        doc: "An argument was rejected by the client or the server (bad uuid, negative position, \
              a string over 65,535 bytes, ...).",
    },
    Spec {
        name: "TransportError",
        base: |py| py.get_type::<PyRuntimeError>(),
        doc: "The server could not be reached, the connection broke, the client is closed, the \
              server is shutting down, or it did not answer within its request timeout.",
    },
    Spec {
        name: "AuthenticationError",
        base: |py| py.get_type::<PyPermissionError>(),
        doc: "The server refused the API key (missing or wrong).",
    },
    Spec {
        name: "CorruptionError",
        base: |py| py.get_type::<PyRuntimeError>(),
        doc: "The server found damaged data in its store.",
    },
    Spec {
        name: "ServerIOError",
        base: |py| py.get_type::<PyOSError>(),
        doc: "The server's disk or operating system failed.",
    },
    Spec {
        name: "InternalError",
        base: |py| py.get_type::<PyRuntimeError>(),
        doc: "An unexpected failure (a message that cannot be decoded, or a bug).",
    },
    Spec {
        name: "CancelledByUserError",
        base: |py| py.get_type::<PyException>(),
        doc: "The read or subscription was cancelled with cancel() or by closing its client.",
    },
];

const INTEGRITY: usize = 0;
const INVALID_ARGUMENT: usize = 1;
const TRANSPORT: usize = 2;
const AUTHENTICATION: usize = 3;
const CORRUPTION: usize = 4;
const SERVER_IO: usize = 5;
const INTERNAL: usize = 6;
const CANCELLED: usize = 7;

static BASE: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static CLASSES: [PyOnceLock<Py<PyType>>; 8] = [
    PyOnceLock::new(),
    PyOnceLock::new(),
    PyOnceLock::new(),
    PyOnceLock::new(),
    PyOnceLock::new(),
    PyOnceLock::new(),
    PyOnceLock::new(),
    PyOnceLock::new(),
];

fn make_class<'py>(
    py: Python<'py>,
    name: &str,
    bases: Bound<'py, PyTuple>,
    doc: &str,
) -> PyResult<Py<PyType>> {
    let namespace = PyDict::new(py);
    namespace.set_item("__module__", "umadb")?;
    namespace.set_item("__doc__", doc)?;
    let class = py
        .get_type::<PyType>()
        .call1((name, bases, namespace))?
        .cast_into::<PyType>()?;
    Ok(class.unbind())
}

fn base(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    BASE.get_or_try_init(py, || {
        let bases = PyTuple::new(py, [py.get_type::<PyException>()])?;
        make_class(
            py,
            "UmaDBError",
            bases,
            "Base class of every error raised by umadb: catch it to handle all of them.",
        )
    })
    .map(|class| class.bind(py))
}

fn class(py: Python<'_>, index: usize) -> PyResult<&Bound<'_, PyType>> {
    CLASSES[index]
        .get_or_try_init(py, || {
            let spec = &SPECS[index];
            let bases = PyTuple::new(
                py,
                [base(py)?.clone().into_any(), (spec.base)(py).into_any()],
            )?;
            make_class(py, spec.name, bases, spec.doc)
        })
        .map(|class| class.bind(py))
}

/// Adds `UmaDBError` and every exception class to the module.
pub(crate) fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = module.py();
    module.add("UmaDBError", base(py)?)?;
    for (index, spec) in SPECS.iter().enumerate() {
        module.add(spec.name, class(py, index)?)?;
    }
    Ok(())
}

fn new_err(index: usize, message: String) -> PyErr {
    Python::attach(|py| match class(py, index) {
        Ok(class) => PyErr::from_type(class.clone(), message),
        Err(err) => err,
    })
}

/// The Python exception for an error of the store or the client: the one mapping.
pub(crate) fn to_py_err(error: Error) -> PyErr {
    let index = match &error {
        Error::Integrity(_) => INTEGRITY,
        Error::InvalidArgument(_) => INVALID_ARGUMENT,
        Error::Authentication(_) => AUTHENTICATION,
        Error::Corruption(_) => CORRUPTION,
        Error::Io(_) => SERVER_IO,
        Error::Serialization(_) | Error::Internal(_) => INTERNAL,
        Error::Transport(_) => TRANSPORT,
        Error::Cancelled(_) => CANCELLED,
    };
    let message = error.message().to_string();
    new_err(index, message)
}

/// An argument rejected before anything is sent: `InvalidArgumentError`, a `ValueError`.
pub(crate) fn invalid_argument(message: impl Into<String>) -> PyErr {
    to_py_err(Error::InvalidArgument(message.into()))
}
