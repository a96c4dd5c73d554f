"""A projection: a thread follows a subscription and records, with each update, the position it
has processed (tracking info), so that after a restart it resumes exactly where it stopped.

    UMADB_URL=http://localhost:50051 python examples/projection.py
"""

from __future__ import annotations

import os
import threading
import uuid

from umadb import CancelledByUserError, Client, Event, Query, QueryItem, TrackingInfo

SOURCE = "balances-projection"


def project(client: Client, stop: threading.Event, seen: threading.Event, expected: int) -> None:
    after = client.get_tracking_info(SOURCE)
    subscription = client.subscribe(Query([QueryItem(types=["Deposited"])]), after=after)

    def cancel_on_stop() -> None:
        stop.wait()
        subscription.cancel()  # wakes the loop below, which ends with CancelledByUserError

    stop_watcher = threading.Thread(target=cancel_on_stop)
    stop_watcher.start()
    try:
        for recorded in subscription:
            summary = Event("BalanceUpdated", recorded.event.data, tags=["projection"])
            client.append([summary], tracking_info=TrackingInfo(SOURCE, recorded.position))
            if recorded.position >= expected:
                seen.set()
    except CancelledByUserError:
        pass
    stop_watcher.join()


def main() -> None:
    url = os.environ.get("UMADB_URL", "http://localhost:50051")
    with Client(url) as client:
        account = str(uuid.uuid4())
        last = 0
        for amount in (10, 20, 30):
            last = client.append([Event("Deposited", str(amount).encode(), tags=[account])])
        stop, seen = threading.Event(), threading.Event()
        projector = threading.Thread(target=project, args=(client, stop, seen, last))
        projector.start()
        seen.wait(10)
        stop.set()
        projector.join()
        print("processed up to", client.get_tracking_info(SOURCE))


if __name__ == "__main__":
    main()
