"""The exception hierarchy: one base, UmaDBError, and the builtin each error is expected to be."""

from __future__ import annotations

import pickle

import pytest

import umadb
from umadb import (
    AuthenticationError,
    CancelledByUserError,
    CorruptionError,
    IntegrityError,
    InternalError,
    InvalidArgumentError,
    ServerIOError,
    TransportError,
    UmaDBError,
)


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        (IntegrityError, ValueError),
        (InvalidArgumentError, ValueError),
        (TransportError, RuntimeError),
        (AuthenticationError, PermissionError),
        (CorruptionError, RuntimeError),
        (ServerIOError, OSError),
        (InternalError, RuntimeError),
        (CancelledByUserError, Exception),
    ],
)
def test_every_error_is_an_umadb_error_and_its_builtin(
    error: type[Exception], builtin: type[Exception]
) -> None:
    assert issubclass(error, UmaDBError)
    assert issubclass(error, builtin)
    assert error.__module__ == "umadb"
    with pytest.raises(UmaDBError):
        raise error("message")
    assert str(error("message")) == "message"


def test_errors_are_distinct_classes() -> None:
    classes = [
        IntegrityError,
        InvalidArgumentError,
        TransportError,
        AuthenticationError,
        CorruptionError,
        ServerIOError,
        InternalError,
        CancelledByUserError,
    ]
    assert len(set(classes)) == len(classes)
    assert not issubclass(IntegrityError, InvalidArgumentError)
    assert not issubclass(TransportError, CorruptionError)


def test_errors_pickle_by_name() -> None:
    error = pickle.loads(pickle.dumps(IntegrityError("condition failed")))
    assert type(error) is IntegrityError
    assert error.args == ("condition failed",)


def test_errors_are_exported() -> None:
    for name in umadb.__all__:
        assert hasattr(umadb, name), name
    assert umadb.UmaDBError.__mro__[1] is Exception
