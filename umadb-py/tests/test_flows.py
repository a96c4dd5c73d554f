"""The documented flows: a decision model read, a conditional append after its head, conflicts,
idempotent retries, exactly-once processing with tracking info, and a projection that catches
up and follows."""

from __future__ import annotations

import json
import threading
import uuid

import pytest

from umadb import (
    AppendCondition,
    CancelledByUserError,
    Client,
    Event,
    IntegrityError,
    Query,
    QueryItem,
    TrackingInfo,
)

NIL = uuid.UUID(int=0)


@pytest.fixture
def client(url: str) -> Client:
    return Client(url)


def course_boundary(course: str) -> Query:
    return Query([QueryItem(types=["CourseDefined", "StudentSubscribed"], tags=[f"course:{course}"])])


def subscribe_student(client: Client, course: str, student: str) -> int:
    """A command handler: decide on the events of the boundary, append after its head."""
    boundary = course_boundary(course)
    response = client.read(boundary)
    capacity, subscribed = 0, 0
    for recorded in response:
        if recorded.event.event_type == "CourseDefined":
            capacity = json.loads(recorded.event.data)["capacity"]
        else:
            subscribed += 1
    if subscribed >= capacity:
        raise RuntimeError("course is full")
    event = Event(
        "StudentSubscribed",
        json.dumps({"student": student}).encode(),
        tags=[f"course:{course}", f"student:{student}"],
        uuid=uuid.uuid4(),
    )
    return client.append([event], condition=AppendCondition(boundary, after=response.head()))


def define_course(client: Client, course: str, capacity: int) -> int:
    event = Event("CourseDefined", json.dumps({"capacity": capacity}).encode(), tags=[f"course:{course}"])
    return client.append([event], condition=AppendCondition(course_boundary(course)))


def test_decision_model_read_then_conditional_append_after_its_head(client: Client) -> None:
    define_course(client, "c1", capacity=2)
    client.append([Event("Unrelated", b"", tags=["course:c2"])])
    assert subscribe_student(client, "c1", "s1") == 3
    assert subscribe_student(client, "c1", "s2") == 4
    with pytest.raises(RuntimeError, match="full"):
        subscribe_student(client, "c1", "s3")


def test_course_can_be_defined_only_once(client: Client) -> None:
    define_course(client, "c1", capacity=1)
    with pytest.raises(IntegrityError):
        define_course(client, "c1", capacity=5)


def test_conflicting_append_raises_integrity_error(client: Client) -> None:
    define_course(client, "c1", capacity=10)
    boundary = course_boundary("c1")
    head = client.read(boundary).head()
    # Another writer decides on the same boundary first.
    subscribe_student(client, "c1", "other")
    late = Event("StudentSubscribed", b"{}", tags=["course:c1"], uuid=uuid.uuid4())
    with pytest.raises(IntegrityError) as raised:
        client.append([late], condition=AppendCondition(boundary, after=head))
    assert isinstance(raised.value, ValueError)
    assert client.head() == 2


def test_events_outside_the_boundary_do_not_conflict(client: Client) -> None:
    define_course(client, "c1", capacity=10)
    head = client.read(course_boundary("c1")).head()
    client.append([Event("StudentSubscribed", b"{}", tags=["course:c2"])])
    ok = Event("StudentSubscribed", b"{}", tags=["course:c1"])
    assert client.append([ok], condition=AppendCondition(course_boundary("c1"), after=head)) == 3


def test_idempotent_retry_returns_the_same_position_and_writes_nothing(client: Client) -> None:
    define_course(client, "c1", capacity=10)
    boundary = course_boundary("c1")
    head = client.read(boundary).head()
    events = [
        Event("StudentSubscribed", b"1", tags=["course:c1"], uuid=uuid.uuid4()),
        Event("StudentSubscribed", b"2", tags=["course:c1"], uuid=str(uuid.uuid4())),
    ]
    condition = AppendCondition(fail_if_events_match=boundary, after=head)
    first = client.append(events, condition=condition)
    assert first == 3
    assert client.append(events, condition=condition) == first
    assert client.head() == 3
    # A different event under the same condition is a conflict, not a retry.
    other = Event("StudentSubscribed", b"3", tags=["course:c1"], uuid=uuid.uuid4())
    with pytest.raises(IntegrityError):
        client.append([other], condition=condition)


def test_nil_uuid_is_not_an_idempotency_key(client: Client) -> None:
    boundary = Query([QueryItem(types=["T"])])
    event = Event("T", b"", uuid=NIL)
    assert client.append([event], condition=AppendCondition(boundary)) == 1
    with pytest.raises(IntegrityError):
        client.append([event], condition=AppendCondition(boundary))
    assert list(client.read())[0].event.uuid == NIL


def test_exactly_once_processing_with_tracking_info(client: Client) -> None:
    """An event processor records the upstream position with what it writes."""
    source = "upstream-orders"
    for upstream in range(1, 4):
        last = client.get_tracking_info(source)
        assert last == (upstream - 1 or None)
        client.append(
            [Event("OrderProjected", str(upstream).encode(), uuid=uuid.uuid4())],
            tracking_info=TrackingInfo(source, upstream),
        )
    assert client.get_tracking_info(source) == 3
    # Reprocessing an upstream event (a crash before the position was seen) is refused.
    with pytest.raises(IntegrityError):
        client.append([Event("OrderProjected", b"2")], tracking_info=TrackingInfo(source, 2))
    with pytest.raises(IntegrityError):
        client.append([Event("OrderProjected", b"3")], tracking_info=TrackingInfo(source, 3))
    assert client.head() == 3
    # Sources are independent.
    client.append([Event("X", b"")], tracking_info=TrackingInfo("another", 1))
    assert [e.tracking_info for e in client.read()] == [
        TrackingInfo(source, 1),
        TrackingInfo(source, 2),
        TrackingInfo(source, 3),
        TrackingInfo("another", 1),
    ]


def test_projection_catches_up_then_follows_new_events(client: Client) -> None:
    client.append([Event("Deposited", b"10"), Event("Withdrawn", b"3"), Event("Other", b"")])
    query = Query([QueryItem(types=["Deposited", "Withdrawn"])])
    balance: list[int] = []
    caught_up = threading.Event()
    done = threading.Event()
    subscription = client.subscribe(query=query)

    def project() -> None:
        total = 0
        try:
            for recorded in subscription:
                amount = int(recorded.event.data)
                total += amount if recorded.event.event_type == "Deposited" else -amount
                balance.append(total)
                if recorded.position == 2:
                    caught_up.set()
                if recorded.position == 5:
                    done.set()
        except CancelledByUserError:
            pass

    projector = threading.Thread(target=project)
    projector.start()
    assert caught_up.wait(5)
    assert balance == [10, 7]
    client.append([Event("Deposited", b"5"), Event("Withdrawn", b"1")])
    assert done.wait(5)
    assert balance == [10, 7, 12, 11]
    subscription.cancel()
    projector.join(5)
    assert not projector.is_alive()
