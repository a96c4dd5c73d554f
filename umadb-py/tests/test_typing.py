"""Typing: the stub matches the extension, `mypy --strict` passes on the documented examples and
on examples/, and the examples run."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO, TESTS, Server
from umadb import Client, Query, QueryItem

PACKAGE = REPO / "umadb-py"
EXAMPLES = sorted((PACKAGE / "examples").glob("*.py"))
DOC_EXAMPLES = sorted((TESTS / "docs").glob("*.py"))


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=300, cwd=PACKAGE
    )


def test_stub_matches_the_extension_module() -> None:
    completed = run("-m", "mypy.stubtest", "umadb._umadb")
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_mypy_strict_passes_on_the_examples() -> None:
    assert EXAMPLES and DOC_EXAMPLES
    completed = run("-m", "mypy", "--strict", *map(str, EXAMPLES + DOC_EXAMPLES))
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "Success" in completed.stdout


def test_mypy_strict_rejects_misuse() -> None:
    # The stub is not permissive: wrong argument types are reported.
    misuse = TESTS / "typing_misuse.py"
    completed = run("-m", "mypy", "--strict", str(misuse))
    assert completed.returncode == 1
    for line in ["typing_misuse.py:6", "typing_misuse.py:7", "typing_misuse.py:8", "typing_misuse.py:9"]:
        assert line in completed.stdout, completed.stdout


def test_examples_run(server: Server) -> None:
    env = dict(os.environ, UMADB_URL=server.url)
    outputs = {}
    for example in EXAMPLES:
        completed = subprocess.run(
            [sys.executable, str(example)], env=env, capture_output=True, text=True, timeout=120
        )
        assert completed.returncode == 0, completed.stdout + completed.stderr
        outputs[example.name] = completed.stdout
    assert outputs["async_service.py"].strip() == "admitted 10, refused 15"
    deposits = Client(server.url).read(Query([QueryItem(types=["Deposited"])]))
    assert outputs["projection.py"].strip() == f"processed up to {list(deposits)[-1].position}"
