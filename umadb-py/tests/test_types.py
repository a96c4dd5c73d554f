"""The value types: construction, defaults, read-only properties, repr and value equality."""

from __future__ import annotations

import uuid

import pytest

from umadb import (
    AppendCondition,
    Event,
    InvalidArgumentError,
    Query,
    QueryItem,
    SequencedEvent,
    TrackingInfo,
    UmaDBError,
)

ID = uuid.UUID("12345678-1234-5678-1234-567812345678")


def test_event_defaults() -> None:
    event = Event("Registered", b"{}")
    assert event.event_type == "Registered"
    assert event.data == b"{}"
    assert isinstance(event.data, bytes)
    assert event.tags == []
    assert event.uuid is None
    assert event.metadata == {}


def test_event_keyword_arguments_round_trip() -> None:
    event = Event(
        event_type="Registered",
        data=b"\x00\xff",
        tags=["student:1", "course:2"],
        uuid=ID,
        metadata={"correlation_id": "c1", "causation_id": "c0"},
    )
    assert event.tags == ["student:1", "course:2"]
    assert event.uuid == ID
    assert isinstance(event.uuid, uuid.UUID)
    assert event.metadata == {"correlation_id": "c1", "causation_id": "c0"}
    assert event.data == b"\x00\xff"


def test_event_uuid_accepts_str_and_reads_back_as_uuid() -> None:
    assert Event("T", b"", uuid=str(ID)).uuid == ID
    assert Event("T", b"", uuid=ID.hex).uuid == ID
    assert Event("T", b"", uuid=ID) == Event("T", b"", uuid=str(ID))


def test_event_rejects_invalid_uuid_text_with_value_error() -> None:
    with pytest.raises(ValueError, match="invalid uuid"):
        Event("T", b"", uuid="not-a-uuid")
    with pytest.raises(InvalidArgumentError):
        Event("T", b"", uuid="")


def test_event_rejects_wrong_types() -> None:
    with pytest.raises(TypeError):
        Event("T", "text is not bytes")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Event("T", b"", tags="a-single-string")
    with pytest.raises(TypeError):
        Event("T", b"", uuid=12345)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Event("T", b"", metadata={"k": 1})  # type: ignore[dict-item]


def test_event_data_accepts_bytearray_and_memoryview() -> None:
    assert Event("T", bytearray(b"ab")).data == b"ab"
    assert Event("T", memoryview(b"cd")).data == b"cd"


def test_event_tags_accept_any_sequence() -> None:
    assert Event("T", b"", tags=("a", "b")).tags == ["a", "b"]


def test_event_properties_are_read_only() -> None:
    event = Event("T", b"")
    with pytest.raises(AttributeError):
        event.event_type = "U"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        event.data = b"x"  # type: ignore[misc]


def test_event_returned_lists_are_copies() -> None:
    event = Event("T", b"", tags=["a"], metadata={"k": "v"})
    event.tags.append("b")
    event.metadata["x"] = "y"
    assert event.tags == ["a"]
    assert event.metadata == {"k": "v"}


def test_event_equality_is_by_value() -> None:
    a = Event("T", b"x", tags=["a"], uuid=ID, metadata={"k": "v", "l": "w"})
    b = Event("T", b"x", tags=["a"], uuid=ID, metadata={"l": "w", "k": "v"})
    assert a == b
    assert a != Event("T", b"y", tags=["a"], uuid=ID)
    assert a != Event("T", b"x", tags=["b"], uuid=ID)
    assert a != Event("T", b"x", tags=["a"], uuid=ID, metadata={"k": "v"})
    assert a != "not an event"


def test_event_repr() -> None:
    event = Event("T", b"x", tags=["a"], uuid=ID, metadata={"k": "v"})
    assert repr(event) == (
        "Event(event_type='T', data=b'x', tags=['a'], "
        "uuid=UUID('12345678-1234-5678-1234-567812345678'), metadata={'k': 'v'})"
    )
    assert repr(Event("T", b"")) == "Event(event_type='T', data=b'', tags=[], uuid=None, metadata={})"


def test_strings_over_65535_bytes_are_invalid_arguments() -> None:
    long = "x" * 65_536
    Event("x" * 65_535, b"", tags=["y" * 65_535])
    for make in [
        lambda: Event(long, b""),
        lambda: Event("T", b"", tags=[long]),
        lambda: Event("T", b"", metadata={long: "v"}),
        lambda: Event("T", b"", metadata={"k": long}),
        lambda: QueryItem(types=[long]),
        lambda: QueryItem(tags=[long]),
        lambda: TrackingInfo(long, 1),
    ]:
        with pytest.raises(InvalidArgumentError, match="65535 bytes"):
            make()


def test_query_item_defaults_and_repr() -> None:
    item = QueryItem()
    assert item.types == [] and item.tags == []
    item = QueryItem(types=["A", "B"], tags=["t"])
    assert item.types == ["A", "B"]
    assert item.tags == ["t"]
    assert repr(item) == "QueryItem(types=['A', 'B'], tags=['t'])"
    assert item == QueryItem(types=("A", "B"), tags=("t",))
    assert item != QueryItem(types=["A"], tags=["t"])


def test_query_defaults_and_repr() -> None:
    assert Query().items == []
    query = Query(items=[QueryItem(types=["A"]), QueryItem(tags=["t"])])
    assert query.items == [QueryItem(types=["A"]), QueryItem(tags=["t"])]
    assert repr(query) == "Query(items=[QueryItem(types=['A'], tags=[]), QueryItem(types=[], tags=['t'])])"
    assert query == Query([QueryItem(types=["A"]), QueryItem(tags=["t"])])
    assert query != Query([QueryItem(tags=["t"]), QueryItem(types=["A"])])
    with pytest.raises(TypeError):
        Query(items=["not an item"])  # type: ignore[list-item]


def test_append_condition() -> None:
    query = Query([QueryItem(types=["A"])])
    condition = AppendCondition(fail_if_events_match=query, after=7)
    assert condition.fail_if_events_match == query
    assert condition.after == 7
    assert AppendCondition(query).after is None
    assert repr(condition) == (
        "AppendCondition(fail_if_events_match=Query(items=[QueryItem(types=['A'], tags=[])]), after=7)"
    )
    assert condition == AppendCondition(query, 7)
    assert condition != AppendCondition(query, 8)
    with pytest.raises(TypeError):
        AppendCondition()  # type: ignore[call-arg]


def test_tracking_info() -> None:
    tracking = TrackingInfo("upstream", 3)
    assert tracking.source == "upstream"
    assert tracking.position == 3
    assert repr(tracking) == "TrackingInfo(source='upstream', position=3)"
    assert tracking == TrackingInfo(source="upstream", position=3)
    assert tracking != TrackingInfo("upstream", 4)
    assert tracking != TrackingInfo("other", 3)


def test_negative_positions_are_value_errors() -> None:
    for make in [
        lambda: TrackingInfo("s", -1),
        lambda: AppendCondition(Query(), after=-1),
        lambda: TrackingInfo("s", 2**64),
    ]:
        with pytest.raises(ValueError) as raised:
            make()
        assert isinstance(raised.value, UmaDBError)
    with pytest.raises(TypeError):
        TrackingInfo("s", "1")  # type: ignore[arg-type]


def test_sequenced_event() -> None:
    event = Event("T", b"x", uuid=ID)
    tracking = TrackingInfo("up", 2)
    sequenced = SequencedEvent(5, event, tracking)
    assert sequenced.position == 5
    assert sequenced.event == event
    assert sequenced.tracking_info == tracking
    assert SequencedEvent(5, event).tracking_info is None
    assert sequenced == SequencedEvent(5, Event("T", b"x", uuid=ID), TrackingInfo("up", 2))
    assert sequenced != SequencedEvent(6, event, tracking)
    assert sequenced != SequencedEvent(5, event)
    assert repr(sequenced) == f"SequencedEvent(position=5, event={event!r}, tracking_info={tracking!r})"
