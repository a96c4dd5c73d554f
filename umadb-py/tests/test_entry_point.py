"""The wheel's `umadb` console script runs the embedded server: `pip install umadb` alone gives
a working server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import Server, free_port
from umadb import AuthenticationError, Client, Event

SCRIPT = Path(sys.executable).parent / "umadb"


def test_console_script_is_installed_and_documents_its_options() -> None:
    completed = subprocess.run([str(SCRIPT), "--help"], capture_output=True, text=True, timeout=30)
    assert completed.returncode == 0, completed.stderr
    for option in ["--listen", "--db-path", "--tls-cert", "--tls-key", "--api-key"]:
        assert option in completed.stdout


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_console_script_serves_and_stops_gracefully(tmp_path: Path, stop: signal.Signals) -> None:
    server = Server(tmp_path, command=[str(SCRIPT)])
    client = Client(server.url)
    assert client.append([Event("T", b"persisted")]) == 1
    server.process.send_signal(stop)
    assert server.process.wait(timeout=20) == 0
    assert "stopped" in server.log()
    restarted = Server(tmp_path, port=server.port, command=[sys.executable, "-m", "umadb"])
    try:
        assert [e.event.data for e in Client(restarted.url).read()] == [b"persisted"]
    finally:
        assert restarted.stop() == 0


def test_console_script_reads_options_from_the_environment(tmp_path: Path) -> None:
    port = free_port()
    env = dict(
        os.environ,
        UMADB_LISTEN=f"127.0.0.1:{port}",
        UMADB_DB_PATH=str(tmp_path / "store"),
        UMADB_API_KEY="key-one,key-two",
    )
    process = subprocess.Popen([str(SCRIPT)], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline and process.poll() is None
                time.sleep(0.05)
        url = f"http://127.0.0.1:{port}"
        assert Client(url, api_key="key-two").append([Event("T", b"")]) == 1
        with pytest.raises(AuthenticationError):
            Client(url).head()
        assert (tmp_path / "store").is_dir()
    finally:
        process.terminate()
        assert process.wait(timeout=20) == 0


def test_console_script_reports_a_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        completed = subprocess.run(
            [str(SCRIPT), "--listen", f"127.0.0.1:{port}", "--db-path", str(tmp_path / "db")],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert completed.returncode == 1
    assert "cannot listen" in completed.stderr
