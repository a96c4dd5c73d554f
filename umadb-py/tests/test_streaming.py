"""Reads stream lazily: iterating a read far larger than memory allows for its batches never
holds the whole result."""

from __future__ import annotations

import subprocess
import sys

from umadb import Client, Event

EVENTS = 100_000
SIZE = 2_000  # bytes of data per event: 200 MB in all
PER_APPEND = 2_000

READER = """
import resource, sys
import umadb

def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

client = umadb.Client(sys.argv[1])
expected = int(sys.argv[2])
before = peak_mb()
count, total, last = 0, 0, 0
for event in client.read():
    count += 1
    total += len(event.event.data)
    assert event.position == last + 1
    last = event.position
print(count, total, before, peak_mb())
"""


def test_iterating_a_200_mb_read_keeps_memory_flat(url: str) -> None:
    client = Client(url)
    for start in range(0, EVENTS, PER_APPEND):
        client.append([Event("Big", bytes([i % 251]) * SIZE) for i in range(start, start + PER_APPEND)])
    assert client.head() == EVENTS
    completed = subprocess.run(
        [sys.executable, "-c", READER, url, str(EVENTS)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    count, total, before, after = completed.stdout.split()
    assert int(count) == EVENTS
    assert int(total) == EVENTS * SIZE
    growth = float(after) - float(before)
    # Holding the read would take more than 200 MB; a few batches take a few MB.
    assert growth < 60, f"peak memory grew by {growth:.0f} MB while reading 200 MB"
