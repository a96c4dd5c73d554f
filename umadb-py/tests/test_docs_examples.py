"""Every example of the published documentation (tests/docs/), run unchanged.

The examples are copied verbatim into tests/docs/*.py; the first test proves that each copy is
a verbatim excerpt of the documentation, so they cannot drift apart. They connect to
http://localhost:50051 (the `docs_server` fixture) and run in a fresh interpreter each, in a
directory holding the `server.pem` that the connection examples name.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import umadb
from conftest import REPO, TESTS, Certificates, Server

DOCS = TESTS / "docs"
DOCUMENT = DOCS / "umadb-python-client-0.3.0.md"
# The document as published beside the repository, when it is there.
SHARED_DOCUMENT = REPO.parent / "shared" / "reference" / "umadb-python-client-0.3.0.md"

# In the order the documentation gives them: the reading example subscribes and waits for one
# event, which the appending example has written before it.
EXAMPLES = ["connecting.py", "appending.py", "reading.py", "complete.py", "tracking.py"]


def test_examples_are_verbatim_excerpts_of_the_documentation() -> None:
    document = DOCUMENT.read_text()
    if SHARED_DOCUMENT.exists():
        assert SHARED_DOCUMENT.read_text() == document, "tests/docs copy is out of date"
    for name in EXAMPLES:
        example = (DOCS / name).read_text()
        assert example.strip() in document, f"{name} is not a verbatim excerpt"


def run_example(name: str, cwd: Path) -> str:
    completed = subprocess.run(
        [sys.executable, str(DOCS / name)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, f"{name} failed:\n{completed.stdout}\n{completed.stderr}"
    return completed.stdout


@pytest.fixture(scope="module")
def example_dir(tmp_path_factory: pytest.TempPathFactory, certificates: Certificates) -> Path:
    directory = tmp_path_factory.mktemp("examples")
    (directory / "server.pem").write_bytes(certificates.ca.read_bytes())
    return directory


def test_connection_examples_make_clients_without_touching_the_network(
    docs_server: Server, example_dir: Path
) -> None:
    # Clients connect on first use: making one for example.com sends nothing anywhere.
    assert run_example("connecting.py", example_dir) == ""


def test_appending_example(docs_server: Server, example_dir: Path) -> None:
    out = run_example("appending.py", example_dir)
    assert "Appended at: " in out
    assert "Conflicting event was rejected: " in out
    assert "Idempotent retry returned position: " in out


def test_reading_example(docs_server: Server, example_dir: Path) -> None:
    if umadb.Client(docs_server.url).head() is None:
        run_example("appending.py", example_dir)  # the subscription waits for an event
    out = run_example("reading.py", example_dir)
    assert "Got event at position 1: Event(event_type='example'" in out
    assert "Last known position: " in out
    assert "New event: 1 Event(" in out


def test_complete_example(docs_server: Server, example_dir: Path) -> None:
    out = run_example("complete.py", example_dir)
    assert "Conflicting event was rejected: " in out
    assert "Append returned same commit position: " in out
    assert "Projection has processed new event!" in out


def test_tracking_example(docs_server: Server, example_dir: Path) -> None:
    out = run_example("tracking.py", example_dir)
    assert "Appended event at position: " in out
    assert "Append returned same commit position: " in out
    assert "Conflicting event was rejected: " in out


def test_tracking_example_runs_again_on_the_same_store(
    docs_server: Server, example_dir: Path
) -> None:
    # The second run resumes after the upstream position recorded by the first.
    client = umadb.Client(docs_server.url)
    before = client.get_tracking_info("upstream")
    assert before is not None
    run_example("tracking.py", example_dir)
    assert client.get_tracking_info("upstream") == before + 1


def parameters(function: object) -> list[tuple[str, object]]:
    signature = inspect.signature(function)  # type: ignore[arg-type]
    return [(p.name, p.default) for p in signature.parameters.values() if p.name != "self"]


EMPTY = inspect.Parameter.empty


def test_documented_signatures() -> None:
    assert parameters(umadb.Client) == [
        ("url", EMPTY),
        ("ca_path", None),
        ("api_key", None),
        ("batch_size", None),
    ]
    assert parameters(umadb.Client.append) == [
        ("events", EMPTY),
        ("condition", None),
        ("tracking_info", None),
    ]
    assert parameters(umadb.Client.read) == [
        ("query", None),
        ("start", None),
        ("backwards", False),
        ("limit", None),
        ("subscribe", False),
    ]
    assert parameters(umadb.Client.head) == []
    assert parameters(umadb.Client.get_tracking_info) == [("source", EMPTY)]
    assert parameters(umadb.Client.subscribe) == [("query", None), ("after", None)]
    assert parameters(umadb.Event) == [
        ("event_type", EMPTY),
        ("data", EMPTY),
        ("tags", None),
        ("uuid", None),
        ("metadata", None),
    ]
    assert parameters(umadb.Query) == [("items", None)]
    assert parameters(umadb.QueryItem) == [("types", None), ("tags", None)]
    assert parameters(umadb.AppendCondition) == [("fail_if_events_match", EMPTY), ("after", None)]
    assert parameters(umadb.TrackingInfo) == [("source", EMPTY), ("position", EMPTY)]


def test_async_client_has_the_signatures_of_client() -> None:
    for name in ["append", "read", "subscribe", "head", "get_tracking_info", "check_health"]:
        assert parameters(getattr(umadb.AsyncClient, name)) == parameters(
            getattr(umadb.Client, name)
        ), name
    assert parameters(umadb.AsyncClient) == parameters(umadb.Client)
