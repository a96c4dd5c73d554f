//! Integer arguments. A negative or oversized int is an `InvalidArgumentError` (a
//! `ValueError`) that says what was wrong, rather than Python's `OverflowError`.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyInt};

use crate::errors::invalid_argument;

/// A non-negative int that fits in 64 bits: a position, `start`, `after` or `limit`.
pub(crate) struct Position(pub u64);

impl<'a, 'py> FromPyObject<'a, 'py> for Position {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        if !obj.is_instance_of::<PyInt>() || obj.is_instance_of::<PyBool>() {
            return Err(PyTypeError::new_err(format!(
                "expected an int, got {}",
                obj.repr()?
            )));
        }
        obj.extract::<u64>()
            .map(Position)
            .map_err(|_| match obj.repr() {
                Ok(repr) => {
                    invalid_argument(format!("expected an int from 0 to 2**64-1, got {repr}"))
                }
                Err(err) => err,
            })
    }
}

/// `batch_size`: from 1 to 2**32-1.
pub(crate) fn batch_size(value: Option<Position>) -> PyResult<Option<u32>> {
    value
        .map(|Position(n)| match u32::try_from(n) {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(invalid_argument(format!(
                "batch_size must be from 1 to {}, got {n}",
                u32::MAX
            ))),
        })
        .transpose()
}
