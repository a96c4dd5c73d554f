"""What one Python thread gets from a running server through the `umadb` package.

An application built on eventsourcing calls the blocking `umadb.Client` from Python threads, so
its figures are those of the Rust client plus the Python layer. This measures, one call after
another from one thread, for `--seconds` each:

- `head`: a call that does no storage work (the round trip);
- `append`: one event of 100 bytes with one tag and a uuid;
- `tag-query`: reading every event of one tag (about 10 on a prepopulated store);
- `decide`: the DCB cycle of a command, reading a tag's events and appending one event on
  condition that none matching arrived since the read (never fails: nothing else writes);
- `scan`: iterating the store from its first event, up to 1,000,000 events.

It needs `umadb` importable (`./scripts/test` builds it into `.venv`) and a server on
loopback holding events from `umadb-bench prepopulate` (tags `tag-0` ... one per ten events).

    .venv/bin/python benches/python/client.py --url http://127.0.0.1:50051 --seconds 3 --out r.json
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
import uuid
from typing import Any, Callable

from umadb import AppendCondition, Client, Event, Query, QueryItem

SCAN_LIMIT = 1_000_000


def timed(name: str, seconds: float, call: Callable[[], int]) -> dict[str, Any]:
    """Repeats `call` (which returns the events it moved) for `seconds`."""
    latencies: list[float] = []
    events = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        t = time.perf_counter()
        events += call()
        latencies.append(time.perf_counter() - t)
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "workload": name,
        "calls": len(latencies),
        "calls_per_sec": len(latencies) / elapsed,
        "events_per_sec": events / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description="One Python thread against a running server through the umadb package."
    )
    parser.add_argument("--url", default="http://127.0.0.1:50051")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--out", default="python-client.json")
    args = parser.parse_args()
    host = args.url.split("//", 1)[-1].rsplit(":", 1)[0].strip("[]")
    if host not in ("127.0.0.1", "::1"):
        print(f"refusing {args.url}: benchmarks run against loopback only", file=sys.stderr)
        return 2

    client = Client(args.url)
    head = client.head()
    if not head:
        print("the store is empty: run `umadb-bench prepopulate` first", file=sys.stderr)
        return 2
    tags = max(1, head // 10)
    rng = random.Random(7)
    payload = b"x" * 100

    def append() -> int:
        client.append([Event("PythonAppended", payload, tags=["python:append"], uuid=uuid.uuid4())])
        return 1

    def tag_query() -> int:
        query = Query([QueryItem(tags=[f"tag-{rng.randrange(tags)}"])])
        return len(list(client.read(query)))

    def decide() -> int:
        tag = f"tag-{rng.randrange(tags)}"
        boundary = Query([QueryItem(tags=[tag])])
        response = client.read(boundary)
        seen = list(response)
        condition = AppendCondition(boundary, after=response.head())
        client.append([Event("PythonDecided", payload, tags=[tag], uuid=uuid.uuid4())], condition=condition)
        return len(seen) + 1

    def scan() -> int:
        n = 0
        for _ in client.read():
            n += 1
            if n == SCAN_LIMIT:
                break
        return n

    def head_only() -> int:
        client.head()
        return 0

    results = []
    for name, call in (
        ("head", head_only),
        ("append", append),
        ("tag-query", tag_query),
        ("decide", decide),
        ("scan", scan),
    ):
        print(f"== python client: {name}", file=sys.stderr, flush=True)
        results.append(timed(name, args.seconds, call))
    client.close()

    with open(args.out, "w") as out:
        json.dump(results, out, indent=2)
    print("| workload | calls/s | events/s | p50 ms | p99 ms |")
    print("|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['workload']} | {r['calls_per_sec']:,.0f} | {r['events_per_sec']:,.0f} "
            f"| {r['p50_ms']:.3f} | {r['p99_ms']:.3f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
