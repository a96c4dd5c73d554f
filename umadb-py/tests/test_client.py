"""Client: every method and argument, against a real server with an empty store."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest

from conftest import Server, free_port
from umadb import (
    AppendCondition,
    CancelledByUserError,
    Client,
    Event,
    IntegrityError,
    InvalidArgumentError,
    Query,
    QueryItem,
    SequencedEvent,
    TrackingInfo,
    TransportError,
)


def make(n: int, event_type: str = "T", tags: list[str] | None = None) -> list[Event]:
    return [Event(event_type, f"{event_type}{i}".encode(), tags=tags) for i in range(n)]


def positions(events: object) -> list[int]:
    return [e.position for e in events]  # type: ignore[attr-defined]


@pytest.fixture
def client(url: str) -> Client:
    return Client(url)


def test_empty_store_has_no_head(client: Client) -> None:
    assert client.head() is None
    response = client.read()
    assert list(response) == []
    assert response.head() is None


def test_append_returns_the_position_of_the_last_event(client: Client) -> None:
    assert client.append(make(1)) == 1
    assert client.append(make(3)) == 4
    assert client.head() == 4
    assert positions(client.read()) == [1, 2, 3, 4]


def test_append_of_no_events_writes_nothing_and_returns_0(client: Client) -> None:
    client.append(make(2))
    assert client.append([]) == 0
    assert client.head() == 2


def test_append_accepts_any_sequence_of_events(client: Client) -> None:
    assert client.append(tuple(make(2))) == 2
    with pytest.raises(TypeError):
        client.append(["not an event"])  # type: ignore[list-item]


def test_events_round_trip_byte_for_byte(client: Client) -> None:
    event = Event(
        event_type="Registered ✓",
        data=bytes(range(256)),
        tags=["student:1", "course:ü"],
        uuid=uuid.uuid4(),
        metadata={"correlation_id": "c1", "empty": ""},
    )
    client.append([event, Event("Bare", b"")])
    first, second = list(client.read())
    assert isinstance(first, SequencedEvent)
    assert first.event == event
    assert first.tracking_info is None
    assert second.event == Event("Bare", b"")
    assert second.event.uuid is None


def test_read_by_type_tag_and_alternatives(client: Client) -> None:
    client.append([Event("A", b"", tags=["x"]), Event("B", b"", tags=["x", "y"]), Event("C", b"")])
    assert positions(client.read(Query([QueryItem(types=["A"])]))) == [1]
    assert positions(client.read(Query([QueryItem(tags=["x"])]))) == [1, 2]
    assert positions(client.read(Query([QueryItem(tags=["x", "y"])]))) == [2]
    assert positions(client.read(Query([QueryItem(types=["A", "C"])]))) == [1, 3]
    assert positions(client.read(Query([QueryItem(types=["C"]), QueryItem(tags=["y"])]))) == [2, 3]
    assert positions(client.read(query=Query())) == [1, 2, 3]
    assert positions(client.read(Query([QueryItem(types=["Z"])]))) == []


def test_read_start_backwards_and_limit(client: Client) -> None:
    client.append(make(5))
    assert positions(client.read(start=3)) == [3, 4, 5]
    assert positions(client.read(start=0)) == [1, 2, 3, 4, 5]
    assert positions(client.read(backwards=True)) == [5, 4, 3, 2, 1]
    assert positions(client.read(start=3, backwards=True)) == [3, 2, 1]
    assert positions(client.read(start=0, backwards=True)) == []
    assert positions(client.read(start=99, backwards=True)) == [5, 4, 3, 2, 1]
    assert positions(client.read(limit=2)) == [1, 2]
    assert positions(client.read(start=2, limit=2)) == [2, 3]
    assert positions(client.read(backwards=True, limit=2)) == [5, 4]
    assert positions(client.read(None, 4, False, None, False)) == [4, 5]


def test_read_head_is_the_store_head_or_the_last_event_within_a_limit(client: Client) -> None:
    client.append([Event("A", b""), Event("B", b""), Event("A", b""), Event("B", b"")])
    response = client.read(Query([QueryItem(types=["A"])]))
    assert positions(response) == [1, 3]
    assert response.head() == 4
    response = client.read(limit=2)
    assert positions(response) == [1, 2]
    assert response.head() == 2
    response = client.read(limit=0)
    assert list(response) == []
    assert response.head() is None


def test_read_head_before_iterating_keeps_the_events(client: Client) -> None:
    client.append(make(3))
    response = client.read()
    assert response.head() == 3
    assert positions(response) == [1, 2, 3]


def test_read_does_not_return_events_appended_after_it_began(client: Client) -> None:
    client.append(make(3))
    response = client.read()
    assert next(response).position == 1
    client.append(make(2))
    assert positions(response) == [2, 3]
    assert response.head() == 3


def test_collect_with_head(client: Client) -> None:
    client.append(make(3))
    events, head = client.read(start=2).collect_with_head()
    assert positions(events) == [2, 3]
    assert head == 3
    assert client.read().collect_with_head()[0][0].event == make(1)[0]


def test_next_batch_respects_the_batch_size_hint(url: str) -> None:
    client = Client(url, batch_size=3)
    client.append(make(10))
    response = client.read()
    batches = []
    while batch := response.next_batch():
        batches.append(positions(batch))
    assert [p for batch in batches for p in batch] == list(range(1, 11))
    assert all(1 <= len(batch) <= 3 for batch in batches), batches
    assert response.next_batch() == []
    assert response.head() == 10


def test_iteration_and_next_batch_can_be_mixed(client: Client) -> None:
    client.append(make(4))
    response = client.read()
    assert next(response).position == 1
    assert positions(response.next_batch()) == [2, 3, 4]
    assert list(response) == []


def test_cancelled_read_raises_cancelled_by_user_error(client: Client) -> None:
    client.append(make(3))
    response = client.read()
    next(response)
    response.cancel()
    with pytest.raises(CancelledByUserError):
        next(response)
    with pytest.raises(CancelledByUserError):
        response.next_batch()


def test_read_with_subscribe_streams_existing_then_new_events(client: Client) -> None:
    client.append(make(2))
    response = client.read(subscribe=True)
    assert next(response).position == 1
    assert next(response).position == 2
    client.append(make(1, "New"))
    third = next(response)
    assert (third.position, third.event.event_type) == (3, "New")
    response.cancel()
    with pytest.raises(CancelledByUserError):
        next(response)


def test_read_with_subscribe_honours_start_limit_and_query(client: Client) -> None:
    client.append([Event("A", b""), Event("B", b""), Event("A", b"")])
    response = client.read(Query([QueryItem(types=["A"])]), start=2, limit=2, subscribe=True)
    assert next(response).position == 3
    client.append([Event("B", b""), Event("A", b""), Event("A", b"")])
    assert next(response).position == 5
    assert list(response) == []  # the limit ends it


def test_read_cannot_subscribe_backwards(client: Client) -> None:
    with pytest.raises(InvalidArgumentError):
        client.read(backwards=True, subscribe=True)


def test_subscribe_catches_up_then_receives_new_events(client: Client) -> None:
    client.append(make(3))
    subscription = client.subscribe()
    assert [next(subscription).position for _ in range(3)] == [1, 2, 3]
    client.append(make(2))
    assert [next(subscription).position for _ in range(2)] == [4, 5]
    subscription.cancel()


def test_subscribe_after_and_query(client: Client) -> None:
    client.append([Event("A", b""), Event("B", b""), Event("A", b"")])
    subscription = client.subscribe(query=Query([QueryItem(types=["A"])]), after=1)
    assert next(subscription).position == 3
    client.append([Event("B", b""), Event("A", b"")])
    assert next(subscription).position == 5
    subscription.cancel()


def test_subscription_next_batch_waits_for_new_events(client: Client) -> None:
    client.append(make(2))
    subscription = client.subscribe()
    assert positions(subscription.next_batch()) == [1, 2]
    appender = threading.Timer(0.2, lambda: client.append(make(1)))
    appender.start()
    assert positions(subscription.next_batch()) == [3]
    appender.join()
    subscription.cancel()


def test_subscription_on_empty_store_returns_before_any_event(client: Client) -> None:
    subscription = client.subscribe()
    client.append(make(1))
    assert next(subscription).position == 1
    subscription.cancel()


def test_cancel_from_another_thread_wakes_a_waiting_subscription(client: Client) -> None:
    subscription = client.subscribe()
    outcome: list[BaseException] = []

    def consume() -> None:
        try:
            next(subscription)
        except BaseException as error:  # noqa: BLE001 - recorded for the assertion
            outcome.append(error)

    consumer = threading.Thread(target=consume)
    consumer.start()
    time.sleep(0.3)
    assert consumer.is_alive()
    subscription.cancel()
    consumer.join(timeout=5)
    assert not consumer.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], CancelledByUserError)
    with pytest.raises(CancelledByUserError):
        next(subscription)


def test_tracking_info_is_recorded_and_returned_with_events(client: Client) -> None:
    assert client.get_tracking_info("upstream") is None
    client.append(make(1), tracking_info=TrackingInfo("upstream", 5))
    assert client.get_tracking_info("upstream") == 5
    assert client.get_tracking_info("other") is None
    (event,) = list(client.read())
    assert event.tracking_info == TrackingInfo("upstream", 5)


def test_tracking_position_must_increase(client: Client) -> None:
    client.append(make(1), tracking_info=TrackingInfo("upstream", 5))
    for stale in (5, 4):
        with pytest.raises(IntegrityError):
            client.append(make(1), tracking_info=TrackingInfo("upstream", stale))
    assert client.head() == 1
    client.append(make(1), tracking_info=TrackingInfo("upstream", 6))
    assert client.get_tracking_info("upstream") == 6


def test_tracking_info_with_no_events_is_still_recorded(client: Client) -> None:
    assert client.append([], tracking_info=TrackingInfo("upstream", 1)) == 0
    assert client.get_tracking_info("upstream") == 1
    assert client.head() is None


def test_check_health(client: Client) -> None:
    assert client.check_health() is True


def test_context_manager_closes_the_client(url: str) -> None:
    with Client(url) as client:
        assert client.head() is None
        assert not client.closed
    assert client.closed
    with pytest.raises(TransportError, match="closed"):
        client.head()
    client.close()  # closing twice is fine


def test_close_cancels_open_subscriptions(client: Client) -> None:
    subscription = client.subscribe()
    outcome: list[BaseException] = []

    def consume() -> None:
        try:
            next(subscription)
        except BaseException as error:  # noqa: BLE001 - recorded for the assertion
            outcome.append(error)

    consumer = threading.Thread(target=consume)
    consumer.start()
    time.sleep(0.2)
    client.close()
    consumer.join(timeout=5)
    assert len(outcome) == 1 and isinstance(outcome[0], CancelledByUserError)


def test_unreachable_server_raises_transport_error_on_first_call() -> None:
    client = Client(f"http://127.0.0.1:{free_port()}")  # nothing listens there
    with pytest.raises(TransportError):
        client.head()
    with pytest.raises(RuntimeError):
        client.append(make(1))


def test_client_reconnects_after_the_server_restarts(tmp_path: Path) -> None:
    first = Server(tmp_path / "a")
    client = Client(first.url)
    client.append(make(2))
    first.stop()
    with pytest.raises(TransportError):
        client.head()
    second = Server(tmp_path / "a", port=first.port)
    try:
        assert client.head() == 2
    finally:
        second.stop()


@pytest.mark.parametrize(
    "make_client",
    [
        lambda: Client("ftp://127.0.0.1:1"),
        lambda: Client("http://"),
        lambda: Client("http://127.0.0.1:1", ca_path="ca.pem"),
        lambda: Client("https://127.0.0.1:1", ca_path="/nonexistent/ca.pem"),
        lambda: Client("http://127.0.0.1:1", api_key="line\nbreak"),
        lambda: Client("http://127.0.0.1:1", batch_size=0),
        lambda: Client("http://127.0.0.1:1", batch_size=-1),
    ],
)
def test_invalid_client_options_are_value_errors(make_client: object) -> None:
    with pytest.raises(InvalidArgumentError):
        make_client()  # type: ignore[operator]


def test_invalid_read_arguments_are_value_errors(client: Client) -> None:
    with pytest.raises(ValueError):
        client.read(start=-1)
    with pytest.raises(ValueError):
        client.read(limit=-1)
    with pytest.raises(ValueError):
        client.subscribe(after=-1)
    with pytest.raises(TypeError):
        client.read(query="not a query")  # type: ignore[arg-type]


def test_repr(url: str) -> None:
    assert repr(Client(url)) == f"Client(url='{url}')"


def test_conditional_append_with_integrity_error_writes_nothing(client: Client) -> None:
    boundary = Query([QueryItem(types=["A"], tags=["x"])])
    client.append([Event("A", b"", tags=["x", "extra"])])
    with pytest.raises(IntegrityError):
        client.append(make(3), condition=AppendCondition(boundary))
    assert client.head() == 1
    assert client.append(make(1), condition=AppendCondition(boundary, after=1)) == 2
