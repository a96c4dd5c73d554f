"""The installed package: an abi3 extension module for CPython >= 3.10, typed (stub and
py.typed), exporting the documented names."""

from __future__ import annotations

import tomllib
from pathlib import Path

import umadb
import umadb._umadb
from conftest import REPO

PACKAGE = Path(umadb.__file__).parent


def test_extension_is_built_for_the_stable_abi() -> None:
    assert Path(umadb._umadb.__file__).name.endswith(".abi3.so")


def test_package_is_typed() -> None:
    assert (PACKAGE / "py.typed").exists()
    assert (PACKAGE / "_umadb.pyi").exists()


def test_project_metadata() -> None:
    pyproject = tomllib.loads((REPO / "umadb-py" / "pyproject.toml").read_text())
    assert pyproject["project"]["name"] == "umadb"
    assert pyproject["project"]["requires-python"] == ">=3.10"
    assert pyproject["project"]["scripts"] == {"umadb": "umadb._server:main"}
    assert pyproject["tool"]["maturin"]["module-name"] == "umadb._umadb"
    cargo = (REPO / "umadb-py" / "Cargo.toml").read_text()
    assert '"abi3-py310"' in cargo


def test_documented_names_are_exported() -> None:
    documented = [
        "Client",
        "AsyncClient",
        "Event",
        "SequencedEvent",
        "Query",
        "QueryItem",
        "AppendCondition",
        "TrackingInfo",
        "ReadResponse",
        "Subscription",
        "UmaDBError",
        "IntegrityError",
        "TransportError",
        "AuthenticationError",
        "CorruptionError",
        "CancelledByUserError",
    ]
    for name in documented:
        assert name in umadb.__all__, name
        assert getattr(umadb, name).__module__ == "umadb", name
    assert umadb.__version__ == umadb._umadb.__version__
