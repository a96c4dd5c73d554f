"""UmaDB: an event store for Dynamic Consistency Boundaries.

``Client`` is the blocking client and ``AsyncClient`` the asyncio one; both connect on
first use. Every error they raise derives from ``UmaDBError``.
"""

from umadb._umadb import (
    AppendCondition,
    AsyncClient,
    AsyncReadResponse,
    AsyncSubscription,
    AuthenticationError,
    CancelledByUserError,
    Client,
    CorruptionError,
    Event,
    IntegrityError,
    InternalError,
    InvalidArgumentError,
    Query,
    QueryItem,
    ReadResponse,
    SequencedEvent,
    ServerIOError,
    Subscription,
    TrackingInfo,
    TransportError,
    UmaDBError,
    __version__,
)

__all__ = [
    "AppendCondition",
    "AsyncClient",
    "AsyncReadResponse",
    "AsyncSubscription",
    "AuthenticationError",
    "CancelledByUserError",
    "Client",
    "CorruptionError",
    "Event",
    "IntegrityError",
    "InternalError",
    "InvalidArgumentError",
    "Query",
    "QueryItem",
    "ReadResponse",
    "SequencedEvent",
    "ServerIOError",
    "Subscription",
    "TrackingInfo",
    "TransportError",
    "UmaDBError",
    "__version__",
]
