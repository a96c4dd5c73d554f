# Type stub of the native module umadb._umadb (src/*.rs), kept by hand: when a signature
# changes in Rust, change it here too (tests/test_typing.py runs mypy --strict against it).

import uuid as _uuid
from collections.abc import Awaitable, Generator, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, final

__all__ = [
    "UmaDBError",
    "IntegrityError",
    "InvalidArgumentError",
    "TransportError",
    "AuthenticationError",
    "CorruptionError",
    "ServerIOError",
    "InternalError",
    "CancelledByUserError",
    "Event",
    "SequencedEvent",
    "Query",
    "QueryItem",
    "AppendCondition",
    "TrackingInfo",
    "Client",
    "ReadResponse",
    "Subscription",
    "Done",
    "AsyncClient",
    "AsyncReadResponse",
    "AsyncSubscription",
    "run_server",
    "__version__",
]

__version__: str

# Exceptions. Every one derives from UmaDBError and from the builtin named beside it.

class UmaDBError(Exception):
    """Base class of every error raised by umadb: catch it to handle all of them."""

class IntegrityError(UmaDBError, ValueError):
    """An append condition failed, or a tracking position was not after the one recorded."""

class InvalidArgumentError(UmaDBError, ValueError):
    """An argument was rejected by the client or the server."""

class TransportError(UmaDBError, RuntimeError):
    """The server could not be reached, the connection broke, the client is closed, the server
    is shutting down, or it did not answer within its request timeout."""

class AuthenticationError(UmaDBError, PermissionError):
    """The server refused the API key (missing or wrong)."""

class CorruptionError(UmaDBError, RuntimeError):
    """The server found damaged data in its store."""

class ServerIOError(UmaDBError, OSError):
    """The server's disk or operating system failed."""

class InternalError(UmaDBError, RuntimeError):
    """An unexpected failure (a message that cannot be decoded, or a bug)."""

class CancelledByUserError(UmaDBError):
    """The read or subscription was cancelled with cancel() or by closing its client."""

# Value types: immutable, compared by value.

@final
class Event:
    """An event to append, or one read back inside a SequencedEvent."""

    def __new__(
        cls,
        event_type: str,
        data: bytes | bytearray | memoryview,
        tags: Sequence[str] | None = None,
        uuid: str | _uuid.UUID | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> Event: ...
    @property
    def event_type(self) -> str: ...
    @property
    def data(self) -> bytes: ...
    @property
    def tags(self) -> list[str]: ...
    @property
    def uuid(self) -> _uuid.UUID | None: ...
    @property
    def metadata(self) -> dict[str, str]: ...
    def __eq__(self, value: object, /) -> bool: ...

@final
class TrackingInfo:
    """The position an event processor has reached in an upstream source."""

    def __new__(cls, source: str, position: int) -> TrackingInfo: ...
    @property
    def source(self) -> str: ...
    @property
    def position(self) -> int: ...
    def __eq__(self, value: object, /) -> bool: ...

@final
class SequencedEvent:
    """A recorded event, its position, and the tracking info appended with it."""

    def __new__(
        cls, position: int, event: Event, tracking_info: TrackingInfo | None = None
    ) -> SequencedEvent: ...
    @property
    def position(self) -> int: ...
    @property
    def event(self) -> Event: ...
    @property
    def tracking_info(self) -> TrackingInfo | None: ...
    def __eq__(self, value: object, /) -> bool: ...

@final
class QueryItem:
    """Matches events of one of `types` (any type if empty) that carry every tag in `tags`."""

    def __new__(
        cls, types: Sequence[str] | None = None, tags: Sequence[str] | None = None
    ) -> QueryItem: ...
    @property
    def types(self) -> list[str]: ...
    @property
    def tags(self) -> list[str]: ...
    def __eq__(self, value: object, /) -> bool: ...

@final
class Query:
    """Items OR-ed together; no items matches every event."""

    def __new__(cls, items: Sequence[QueryItem] | None = None) -> Query: ...
    @property
    def items(self) -> list[QueryItem]: ...
    def __eq__(self, value: object, /) -> bool: ...

@final
class AppendCondition:
    """Fail an append if an event matching the query was recorded after `after`."""

    def __new__(
        cls, fail_if_events_match: Query, after: int | None = None
    ) -> AppendCondition: ...
    @property
    def fail_if_events_match(self) -> Query: ...
    @property
    def after(self) -> int | None: ...
    def __eq__(self, value: object, /) -> bool: ...

# The blocking client.

@final
class ReadResponse:
    """The events of a read, streamed lazily in batches as they are iterated."""

    def __iter__(self) -> ReadResponse: ...
    def __next__(self) -> SequencedEvent: ...
    def head(self) -> int | None:
        """The read's head: the store's head when the read began, or with a limit the
        position of the last event returned. Receives the rest of the read if needed."""
    def collect_with_head(self) -> tuple[list[SequencedEvent], int | None]: ...
    def next_batch(self) -> list[SequencedEvent]:
        """The next batch of events; an empty list when the read is complete."""
    def cancel(self) -> None:
        """Ends the read: iterating then raises CancelledByUserError."""

@final
class Subscription:
    """Matching events: recorded ones first, then new ones as they are committed."""

    def __iter__(self) -> Subscription: ...
    def __next__(self) -> SequencedEvent: ...
    def next_batch(self) -> list[SequencedEvent]:
        """The next batch of events, waiting for new ones to be committed."""
    def cancel(self) -> None:
        """Ends the subscription, from any thread: iterating then raises CancelledByUserError."""

@final
class Client:
    """A blocking UmaDB client. Connects on first use; one client can be shared by threads."""

    def __new__(
        cls,
        url: str,
        ca_path: str | None = None,
        api_key: str | None = None,
        batch_size: int | None = None,
    ) -> Client: ...
    def append(
        self,
        events: Sequence[Event],
        condition: AppendCondition | None = None,
        tracking_info: TrackingInfo | None = None,
    ) -> int: ...
    def read(
        self,
        query: Query | None = None,
        start: int | None = None,
        backwards: bool = False,
        limit: int | None = None,
        subscribe: bool = False,
    ) -> ReadResponse: ...
    def subscribe(self, query: Query | None = None, after: int | None = None) -> Subscription: ...
    def head(self) -> int | None: ...
    def get_tracking_info(self, source: str) -> int | None: ...
    def check_health(self) -> bool: ...
    def close(self) -> None: ...
    @property
    def closed(self) -> bool: ...
    def __enter__(self) -> Client: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...

# The asyncio client.

@final
class AsyncReadResponse:
    """The events of an AsyncClient read: iterate with `async for`."""

    def __aiter__(self) -> AsyncReadResponse: ...
    def __anext__(self) -> Awaitable[SequencedEvent]: ...
    def head(self) -> Awaitable[int | None]: ...
    def collect_with_head(self) -> Awaitable[tuple[list[SequencedEvent], int | None]]: ...
    def next_batch(self) -> Awaitable[list[SequencedEvent]]: ...
    def cancel(self) -> None: ...

@final
class AsyncSubscription:
    """The events of an AsyncClient subscription: iterate with `async for`."""

    def __aiter__(self) -> AsyncSubscription: ...
    def __anext__(self) -> Awaitable[SequencedEvent]: ...
    def next_batch(self) -> Awaitable[list[SequencedEvent]]: ...
    def cancel(self) -> None: ...

@final
class Done:
    """An awaitable that is already done (returned by AsyncClient.close)."""

    def __await__(self) -> Generator[Any, None, None]: ...

@final
class AsyncClient:
    """An asyncio UmaDB client: the methods of Client as coroutines. Connects on first use."""

    def __new__(
        cls,
        url: str,
        ca_path: str | None = None,
        api_key: str | None = None,
        batch_size: int | None = None,
    ) -> AsyncClient: ...
    def append(
        self,
        events: Sequence[Event],
        condition: AppendCondition | None = None,
        tracking_info: TrackingInfo | None = None,
    ) -> Awaitable[int]: ...
    def read(
        self,
        query: Query | None = None,
        start: int | None = None,
        backwards: bool = False,
        limit: int | None = None,
        subscribe: bool = False,
    ) -> Awaitable[AsyncReadResponse]: ...
    def subscribe(
        self, query: Query | None = None, after: int | None = None
    ) -> Awaitable[AsyncSubscription]: ...
    def head(self) -> Awaitable[int | None]: ...
    def get_tracking_info(self, source: str) -> Awaitable[int | None]: ...
    def check_health(self) -> Awaitable[bool]: ...
    def close(self) -> Done:
        """Closes at once; the result may be awaited (or not)."""
    @property
    def closed(self) -> bool: ...
    def __aenter__(self) -> Awaitable[AsyncClient]: ...
    def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> Awaitable[None]: ...

def run_server(
    listen: str,
    db_path: str,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    api_keys: Sequence[str] = ...,
) -> None:
    """Serves until interrupted (Ctrl-C), then stops gracefully."""
