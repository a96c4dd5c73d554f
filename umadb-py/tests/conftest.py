"""Fixtures: real UmaDB servers on 127.0.0.1, each with its own temporary store.

The server is the `umadb` binary from the Rust workspace (`target/release/umadb`, built by
`cargo test --release --workspace`), or the one named by UMADB_BIN; failing both, the server
embedded in this package (`python -m umadb`).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TESTS = Path(__file__).resolve().parent

# The documented examples connect to this address, unchanged.
DOCS_PORT = 50051


def server_command() -> list[str]:
    explicit = os.environ.get("UMADB_BIN")
    if explicit:
        return [explicit]
    built = REPO / "target" / "release" / "umadb"
    if built.exists():
        return [str(built)]
    return [sys.executable, "-m", "umadb"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Certificates:
    """A self-signed CA and a server certificate it signed, for localhost and 127.0.0.1."""

    ca: Path
    cert: Path
    key: Path


def make_certificates(directory: Path, common_name: str = "umadb test CA") -> Certificates:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    validity = (now - datetime.timedelta(days=1), now + datetime.timedelta(days=30))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    directory.mkdir(parents=True, exist_ok=True)
    paths = Certificates(
        ca=directory / "ca.pem", cert=directory / "server-cert.pem", key=directory / "server-key.pem"
    )
    paths.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


class Server:
    """A `umadb` server process on 127.0.0.1 with a store in a temporary directory."""

    def __init__(
        self,
        directory: Path,
        port: int | None = None,
        certificates: Certificates | None = None,
        api_keys: Sequence[str] = (),
        command: Sequence[str] | None = None,
    ) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.tls = certificates is not None
        self.db_path = directory / "store"
        self.log_path = directory / "server.log"
        args = list(command or server_command())
        args += ["--listen", f"127.0.0.1:{self.port}", "--db-path", str(self.db_path)]
        if certificates is not None:
            args += ["--tls-cert", str(certificates.cert), "--tls-key", str(certificates.key)]
        for key in api_keys:
            args += ["--api-key", key]
        env = {k: v for k, v in os.environ.items() if not k.startswith("UMADB_")}
        directory.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        self._wait_until_listening()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _wait_until_listening(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"umadb exited with {self.process.returncode} on start:\n{self.log()}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"umadb did not listen on port {self.port} in {timeout}s:\n{self.log()}")

    def stop(self) -> int:
        """Stops the server gracefully (SIGTERM) and returns its exit code."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """A plain-text server with an empty store, for one test."""
    running = Server(tmp_path / "server")
    yield running
    running.stop()


@pytest.fixture
def url(server: Server) -> str:
    return server.url


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def tls_server(tmp_path: Path, certificates: Certificates) -> Iterator[Server]:
    running = Server(tmp_path / "tls-server", certificates=certificates)
    yield running
    running.stop()


API_KEY = "umadb:test-key-7d2c1f0e9b8a"


@pytest.fixture
def auth_server(tmp_path: Path) -> Iterator[Server]:
    """A server that requires API_KEY."""
    running = Server(tmp_path / "auth-server", api_keys=[API_KEY])
    yield running
    running.stop()


@pytest.fixture(scope="session")
def docs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server on 127.0.0.1:50051, where the documented examples connect."""
    try:
        with socket.create_connection(("127.0.0.1", DOCS_PORT), timeout=0.5):
            pytest.fail(
                f"port {DOCS_PORT} is already in use: stop whatever listens there, the "
                "documented examples need a fresh server on it"
            )
    except OSError:
        pass
    running = Server(tmp_path_factory.mktemp("docs-server"), port=DOCS_PORT)
    yield running
    running.stop()


def pytest_report_header() -> str:
    return f"umadb server: {' '.join(server_command())}"
