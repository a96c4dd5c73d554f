"""TLS with a self-signed CA given by `ca_path`, and API keys: right, wrong and missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import API_KEY, Certificates, Server, make_certificates
from umadb import AsyncClient, AuthenticationError, Client, Event, TransportError, UmaDBError


def test_tls_with_self_signed_ca(tls_server: Server, certificates: Certificates) -> None:
    for url in [
        f"https://127.0.0.1:{tls_server.port}",
        f"https://localhost:{tls_server.port}",
        f"grpcs://localhost:{tls_server.port}",
    ]:
        client = Client(url, ca_path=str(certificates.ca))
        position = client.append([Event("Secure", url.encode())])
        assert [e.event.data for e in client.read(start=position)] == [url.encode()]
        subscription = client.subscribe(after=position - 1)
        assert next(subscription).position == position
        subscription.cancel()
        assert client.check_health()


def test_tls_server_is_not_trusted_without_its_ca(tls_server: Server) -> None:
    # Verified against the system's roots, which never signed the test CA.
    with pytest.raises(TransportError):
        Client(f"https://localhost:{tls_server.port}").head()


def test_tls_server_is_not_trusted_with_another_ca(tls_server: Server, tmp_path: Path) -> None:
    other = make_certificates(tmp_path / "other", common_name="another CA")
    with pytest.raises(TransportError):
        Client(f"https://localhost:{tls_server.port}", ca_path=str(other.ca)).head()


def test_plain_text_client_cannot_talk_to_a_tls_server(tls_server: Server) -> None:
    with pytest.raises(TransportError):
        Client(f"http://127.0.0.1:{tls_server.port}").head()


def test_tls_client_cannot_talk_to_a_plain_text_server(server: Server, certificates: Certificates) -> None:
    with pytest.raises(TransportError):
        Client(f"https://127.0.0.1:{server.port}", ca_path=str(certificates.ca)).head()


def test_right_api_key_is_accepted(auth_server: Server) -> None:
    client = Client(auth_server.url, api_key=API_KEY)
    assert client.append([Event("T", b"")]) == 1
    assert client.head() == 1
    assert [e.position for e in client.read()] == [1]
    assert client.get_tracking_info("x") is None
    subscription = client.subscribe()
    assert next(subscription).position == 1
    subscription.cancel()


@pytest.mark.parametrize("api_key", [None, "umadb:wrong-key", API_KEY + "x"])
def test_wrong_or_missing_api_key_raises_authentication_error(
    auth_server: Server, api_key: str | None
) -> None:
    client = Client(auth_server.url, api_key=api_key)
    calls = [
        lambda: client.head(),
        lambda: client.append([Event("T", b"")]),
        lambda: list(client.read()),
        lambda: next(client.subscribe()),
        lambda: client.get_tracking_info("x"),
    ]
    for call in calls:
        with pytest.raises(AuthenticationError) as raised:
            call()
        assert isinstance(raised.value, PermissionError)
        assert isinstance(raised.value, UmaDBError)
    assert Client(auth_server.url, api_key=API_KEY).head() is None  # nothing was written


def test_tls_and_api_key_together(tmp_path: Path, certificates: Certificates) -> None:
    secured = Server(tmp_path / "both", certificates=certificates, api_keys=[API_KEY])
    try:
        url = f"https://localhost:{secured.port}"
        client = Client(url=url, ca_path=str(certificates.ca), api_key=API_KEY, batch_size=1000)
        assert client.append([Event("T", b"")]) == 1
        with pytest.raises(AuthenticationError):
            Client(url, ca_path=str(certificates.ca), api_key="wrong").head()
    finally:
        secured.stop()


def test_async_client_over_tls_with_api_key(tmp_path: Path, certificates: Certificates) -> None:
    import asyncio

    secured = Server(tmp_path / "both", certificates=certificates, api_keys=[API_KEY])

    async def run() -> None:
        url = f"grpcs://localhost:{secured.port}"
        async with AsyncClient(url, ca_path=str(certificates.ca), api_key=API_KEY) as client:
            assert await client.append([Event("T", b"")]) == 1
            assert await client.head() == 1
        with pytest.raises(AuthenticationError):
            await AsyncClient(url, ca_path=str(certificates.ca)).head()

    try:
        asyncio.run(run())
    finally:
        secured.stop()
