"""AsyncClient: the same methods and flows under asyncio, and many coroutines at once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from conftest import free_port
from umadb import (
    AppendCondition,
    AsyncClient,
    AsyncReadResponse,
    AsyncSubscription,
    CancelledByUserError,
    Event,
    IntegrityError,
    InvalidArgumentError,
    Query,
    QueryItem,
    SequencedEvent,
    TrackingInfo,
    TransportError,
)

T = TypeVar("T")


def run(factory: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await asyncio.wait_for(factory(), timeout=30)

    return asyncio.run(main())


async def positions(response: AsyncReadResponse | AsyncSubscription, n: int | None = None) -> list[int]:
    result = []
    async for event in response:
        assert isinstance(event, SequencedEvent)
        result.append(event.position)
        if n is not None and len(result) == n:
            break
    return result


def test_append_read_head_and_tracking(url: str) -> None:
    async def main() -> None:
        async with AsyncClient(url) as client:
            assert await client.head() is None
            assert await client.append([Event("A", b"1", tags=["x"]), Event("B", b"2")]) == 2
            assert await client.append([], tracking_info=TrackingInfo("up", 1)) == 0
            assert await client.get_tracking_info("up") == 1
            assert await client.head() == 2
            response = await client.read()
            assert await positions(response) == [1, 2]
            assert await response.head() == 2
            assert await positions(await client.read(Query([QueryItem(tags=["x"])]))) == [1]
            assert await positions(await client.read(start=2)) == [2]
            assert await positions(await client.read(backwards=True)) == [2, 1]
            limited = await client.read(limit=1)
            assert await positions(limited) == [1]
            assert await limited.head() == 1
            events, head = await (await client.read()).collect_with_head()
            assert [e.event.data for e in events] == [b"1", b"2"]
            assert head == 2
            assert await client.check_health() is True

    run(main)


def test_next_batch_and_cancel(url: str) -> None:
    async def main() -> None:
        client = AsyncClient(url, batch_size=2)
        await client.append([Event("T", b"") for _ in range(5)])
        response = await client.read()
        first = await response.next_batch()
        assert 1 <= len(first) <= 2
        rest = []
        while batch := await response.next_batch():
            rest.extend(batch)
        assert [e.position for e in first + rest] == [1, 2, 3, 4, 5]
        response = await client.read()
        await response.__anext__()
        response.cancel()
        with pytest.raises(CancelledByUserError):
            await response.__anext__()
        await client.close()

    run(main)


def test_documented_flow(url: str) -> None:
    async def main() -> None:
        client = AsyncClient(url)
        cb = Query(items=[QueryItem(types=["example"], tags=["tag1", "tag2"])])
        response = await client.read(query=cb)
        assert await positions(response) == []
        last_known = await response.head()
        ev = Event("example", b"Hello, world!", tags=["tag1", "tag2"], uuid=str(uuid.uuid4()))
        cond = AppendCondition(fail_if_events_match=cb, after=last_known)
        position1 = await client.append([ev], condition=cond)
        with pytest.raises(IntegrityError):
            other = Event("example", b"", tags=["tag1", "tag2"], uuid=str(uuid.uuid4()))
            await client.append([other], condition=cond)
        assert await client.append([ev], condition=cond) == position1
        tracking = TrackingInfo("upstream", 1)
        await client.append([Event("X", b"")], tracking_info=tracking)
        with pytest.raises(IntegrityError):
            await client.append([Event("X", b"")], tracking_info=tracking)
        client.close()

    run(main)


def test_subscription_catches_up_then_sees_new_events(url: str) -> None:
    async def main() -> None:
        async with AsyncClient(url) as client:
            await client.append([Event("T", b"") for _ in range(3)])
            subscription = await client.subscribe(after=1)
            assert await positions(subscription, 2) == [2, 3]
            waiter = asyncio.ensure_future(positions(subscription, 2))
            await asyncio.sleep(0.2)
            assert not waiter.done()
            await client.append([Event("T", b""), Event("T", b"")])
            assert await waiter == [4, 5]
            legacy = await client.read(start=5, subscribe=True)
            assert await positions(legacy, 1) == [5]
            await client.append([Event("Other", b""), Event("T", b"")])
            filtered = await client.subscribe(Query([QueryItem(types=["Other"])]), after=2)
            assert [e.position for e in await filtered.next_batch()] == [6]
            waiter = asyncio.ensure_future(filtered.next_batch())
            await client.append([Event("Other", b"")])
            assert [e.position for e in await waiter] == [8]
            filtered.cancel()
            subscription.cancel()
            with pytest.raises(CancelledByUserError):
                await subscription.__anext__()

    run(main)


def test_cancel_wakes_a_waiting_coroutine(url: str) -> None:
    async def main() -> None:
        client = AsyncClient(url)
        subscription = await client.subscribe()
        waiter = asyncio.ensure_future(subscription.__anext__())
        await asyncio.sleep(0.2)
        subscription.cancel()
        with pytest.raises(CancelledByUserError):
            await waiter

    run(main)


def test_cancelling_the_task_cancels_the_wait(url: str) -> None:
    async def main() -> None:
        client = AsyncClient(url)
        subscription = await client.subscribe()
        waiter = asyncio.ensure_future(subscription.__anext__())
        await asyncio.sleep(0.2)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        # The subscription still works after the cancelled wait.
        await client.append([Event("T", b"")])
        assert (await subscription.__anext__()).position == 1
        # A timeout around a wait cancels it too.
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(subscription.__anext__(), timeout=0.2)

    run(main)


def test_event_loop_keeps_running_while_calls_wait(url: str) -> None:
    async def main() -> None:
        client = AsyncClient(url)
        subscription = await client.subscribe()
        waiter = asyncio.ensure_future(subscription.__anext__())
        ticks = 0
        for _ in range(20):
            await asyncio.sleep(0.01)
            ticks += 1
        assert ticks == 20 and not waiter.done()
        await client.append([Event("T", b"")])
        assert (await waiter).position == 1

    run(main)


def test_many_concurrent_coroutines_appending(url: str) -> None:
    async def main() -> None:
        async with AsyncClient(url) as client:
            writers, appends = 50, 10

            async def writer(n: int) -> list[int]:
                return [
                    await client.append([Event("T", f"{n}".encode(), tags=[f"w{n}"]) for _ in range(2)])
                    for _ in range(appends)
                ]

            results = await asyncio.gather(*(writer(n) for n in range(writers)))
            total = writers * appends * 2
            assert await client.head() == total
            assert sorted(p for r in results for p in r) == list(range(2, total + 1, 2))
            assert await positions(await client.read()) == list(range(1, total + 1))

            # Racing conditional appends on one boundary: exactly one wins.
            boundary = Query([QueryItem(types=["Claimed"])])

            async def claim(n: int) -> bool:
                try:
                    await client.append(
                        [Event("Claimed", str(n).encode())],
                        condition=AppendCondition(boundary, after=total),
                    )
                    return True
                except IntegrityError:
                    return False

            outcomes = await asyncio.gather(*(claim(n) for n in range(20)))
            assert outcomes.count(True) == 1

    run(main)


def test_async_errors(url: str) -> None:
    async def main() -> None:
        with pytest.raises(TransportError):
            await AsyncClient(f"http://127.0.0.1:{free_port()}").head()
        client = AsyncClient(url)
        await client.close()
        assert client.closed
        with pytest.raises(TransportError, match="closed"):
            await client.head()
        with pytest.raises(InvalidArgumentError):
            await AsyncClient(url).read(backwards=True, subscribe=True)

    run(main)
    with pytest.raises(InvalidArgumentError):
        AsyncClient("ftp://x")


def test_repr(url: str) -> None:
    assert repr(AsyncClient(url)) == f"AsyncClient(url='{url}')"
