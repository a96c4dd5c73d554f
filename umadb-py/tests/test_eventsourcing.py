"""eventsourcing-umadb, unchanged, on this package.

Its recorders run the recorder test cases that `eventsourcing` ships for downstream backends
(`eventsourcing.dcb.tests`, `eventsourcing.tests.persistence`), each test against a fresh
server; and example applications run configured only by PERSISTENCE_MODULE and UMADB_URI.

Not run: the snapshot recorder, tracking and process recorder cases — eventsourcing-umadb does
not implement those recorders (it raises NotImplementedError for them).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.dcb import tests as dcb_tests
from eventsourcing.tests import persistence as recorder_tests
from eventsourcing_umadb.recorders import (
    UmaDbAggregateRecorder,
    UmaDbApplicationRecorder,
    UmaDbDcbRecorder,
)

import umadb
from conftest import TESTS, Server


class FreshServer:
    """Starts a server with an empty store before each test, and stops it after."""

    def setUp(self) -> None:
        self._directory = tempfile.TemporaryDirectory()
        self.server = Server(Path(self._directory.name))
        self.client = umadb.Client(self.server.url)
        super().setUp()  # type: ignore[misc]

    def tearDown(self) -> None:
        super().tearDown()  # type: ignore[misc]
        self.client.close()
        self.server.stop()
        self._directory.cleanup()


class TestDcbRecorder(FreshServer, dcb_tests.DcbRecorderTestCase):
    def test_append_read(self) -> None:
        self._test_append_read(UmaDbDcbRecorder(self.client))

    def test_append_subscribe(self) -> None:
        self._test_append_subscribe(UmaDbDcbRecorder(self.client))

    def test_append_read_after_other_events(self) -> None:
        self.client.append([umadb.Event("Earlier", b"") for _ in range(5)])
        self._test_append_read(UmaDbDcbRecorder(self.client), initial_position=5)


class TestAggregateRecorder(FreshServer, recorder_tests.AggregateRecorderTestCase):
    # Re-inserting an event with the same uuid is an idempotent retry in UmaDB (DESIGN.md).
    recorder_supports_idempotent_appends = True

    def create_recorder(self) -> UmaDbAggregateRecorder:
        return UmaDbAggregateRecorder(umadb=self.client)


class TestApplicationRecorder(FreshServer, recorder_tests.ApplicationRecorderTestCase[Any]):
    def create_recorder(self) -> UmaDbApplicationRecorder:
        return UmaDbApplicationRecorder(umadb=self.client)

    def test_insert_subscribe(self) -> None:
        self.optional_test_insert_subscribe()


class TestNonInterleavingNotificationIds(
    FreshServer, recorder_tests.NonInterleavingNotificationIDsBaseCase
):
    def create_recorder(self) -> UmaDbApplicationRecorder:
        return UmaDbApplicationRecorder(umadb=self.client)


@pytest.mark.parametrize("app", ["training_school.py", "bank_accounts.py"])
def test_example_application_runs_with_persistence_module_eventsourcing_umadb(
    server: Server, app: str
) -> None:
    env = dict(os.environ, PERSISTENCE_MODULE="eventsourcing_umadb", UMADB_URI=server.url)
    completed = subprocess.run(
        [sys.executable, str(TESTS / "apps" / app)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert completed.stdout.strip()
