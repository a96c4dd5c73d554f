"""Threads and signals: the GIL is released while waiting, one Client serves many threads, and
Ctrl-C interrupts a blocking read or subscription."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from umadb import (
    AppendCondition,
    CancelledByUserError,
    Client,
    Event,
    IntegrityError,
    Query,
    QueryItem,
    Subscription,
)


def test_waiting_threads_release_the_gil(url: str) -> None:
    client = Client(url)
    subscriptions = [client.subscribe() for _ in range(4)]
    cancelled: list[bool] = []

    def wait_for_events(subscription: Subscription) -> None:
        try:
            list(subscription)
        except CancelledByUserError:
            cancelled.append(True)

    waiting = [threading.Thread(target=wait_for_events, args=(s,)) for s in subscriptions]
    for thread in waiting:
        thread.start()
    time.sleep(0.2)
    # Pure Python work runs while four threads wait for events inside the extension.
    started = time.monotonic()
    count = 0
    while time.monotonic() - started < 0.3:
        count += 1
    assert count > 1000
    for subscription in subscriptions:
        subscription.cancel()
    for thread in waiting:
        thread.join(5)
        assert not thread.is_alive()
    assert cancelled == [True] * 4


def test_one_client_shared_by_threads_appends_gapless(url: str) -> None:
    client = Client(url)
    threads, appends, per_append = 8, 40, 3

    def work(n: int) -> list[int]:
        return [
            client.append([Event("T", f"{n}-{i}".encode(), tags=[f"w{n}"]) for _ in range(per_append)])
            for i in range(appends)
        ]

    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(work, range(threads)))
    total = threads * appends * per_append
    assert client.head() == total
    assert [e.position for e in client.read()] == list(range(1, total + 1))
    # Each append's events are consecutive: the returned positions end distinct blocks.
    lasts = sorted(p for result in results for p in result)
    assert lasts == list(range(per_append, total + 1, per_append))
    # Reading in parallel from the same client.
    with ThreadPoolExecutor(threads) as pool:
        counts = list(pool.map(lambda n: len(list(client.read(Query([QueryItem(tags=[f"w{n}"])])))), range(threads)))
    assert counts == [appends * per_append] * threads


def test_racing_conditional_appends_from_threads_let_exactly_one_win(url: str) -> None:
    client = Client(url)
    boundary = Query([QueryItem(types=["Claimed"], tags=["seat:1"])])
    barrier = threading.Barrier(8)

    def claim(n: int) -> bool:
        head = client.read(boundary).head()
        barrier.wait()
        try:
            client.append(
                [Event("Claimed", str(n).encode(), tags=["seat:1"])],
                condition=AppendCondition(boundary, after=head),
            )
            return True
        except IntegrityError:
            return False

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(claim, range(8)))
    assert outcomes.count(True) == 1
    assert client.head() == 1


INTERRUPTIBLE = """
import signal, sys
import umadb

signal.signal(signal.SIGINT, signal.default_int_handler)
client = umadb.Client(sys.argv[1])


def caught_up_subscription():
    subscription = client.subscribe()
    next(subscription)  # the one recorded event
    return subscription


calls = {
    "next": lambda: next(caught_up_subscription()),
    "next_batch": lambda: caught_up_subscription().next_batch(),
    "read_subscribe": lambda: list(client.read(subscribe=True)),
    "read_subscribe_from": lambda: next(client.read(start=2, subscribe=True)),
}
call = calls[sys.argv[2]]
print("waiting", flush=True)
try:
    call()
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(3)
print("returned", flush=True)
"""


@pytest.mark.parametrize("call", ["next", "next_batch", "read_subscribe", "read_subscribe_from"])
def test_ctrl_c_interrupts_a_blocking_subscription(url: str, call: str) -> None:
    Client(url).append([Event("T", b"")])  # one event, which none of the calls waits for
    child = subprocess.Popen(
        [sys.executable, "-c", INTERRUPTIBLE, url, call],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stderr is not None
        assert child.stdout.readline().strip() == "waiting"
        time.sleep(0.5)
        assert child.poll() is None, child.stderr.read()
        started = time.monotonic()
        child.send_signal(signal.SIGINT)
        code = child.wait(timeout=10)
        assert time.monotonic() - started < 2
        assert code == 3, (child.stdout.read(), child.stderr.read())
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_subscription_outlives_many_waits_and_is_cancelled_cleanly(url: str) -> None:
    client = Client(url)
    subscription = client.subscribe()
    received: list[int] = []

    def consume() -> None:
        try:
            for event in subscription:
                received.append(event.position)
        except CancelledByUserError:
            pass

    consumer = threading.Thread(target=consume)
    consumer.start()
    for i in range(20):
        client.append([Event("T", b"")])
        time.sleep(0.01 * (i % 3))
    deadline = time.monotonic() + 5
    while len(received) < 20 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert received == list(range(1, 21))
    subscription.cancel()
    consumer.join(5)
    assert not consumer.is_alive()


def test_a_forked_child_gets_an_error_instead_of_hanging(url: str) -> None:
    # The runtime's threads do not survive fork(): the child must not wait forever.
    import os

    from umadb import InternalError

    client = Client(url)
    assert client.head() is None
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            client.head()
            os._exit(1)
        except InternalError as error:
            os._exit(7 if "fork" in str(error) else 3)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 7
    assert client.head() is None  # the parent is unaffected
