"""An asyncio service (the shape of a FastAPI app) deciding concurrent commands with AsyncClient.

Each request reads its consistency boundary, decides, and appends on condition that nothing
in the boundary changed since the read; a conflict means another request decided first, so
the handler reads again and retries. The event loop never blocks: no thread pool is needed.

    UMADB_URL=http://localhost:50051 python examples/async_service.py
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid

from umadb import AppendCondition, AsyncClient, Event, IntegrityError, Query, QueryItem


class CourseFull(Exception):
    pass


async def join_course(client: AsyncClient, course: str, student: str, capacity: int) -> int:
    """The request handler: returns the position of the StudentJoined event."""
    boundary = Query([QueryItem(types=["StudentJoined"], tags=[f"course:{course}"])])
    event = Event(
        "StudentJoined",
        json.dumps({"student": student}).encode(),
        tags=[f"course:{course}", f"student:{student}"],
        uuid=uuid.uuid4(),
    )
    while True:
        response = await client.read(boundary)
        joined = [e async for e in response]
        if len(joined) >= capacity:
            raise CourseFull(course)
        condition = AppendCondition(boundary, after=await response.head())
        try:
            return await client.append([event], condition=condition)
        except IntegrityError:
            continue  # someone else joined meanwhile: decide again


async def main() -> None:
    url = os.environ.get("UMADB_URL", "http://localhost:50051")
    course = str(uuid.uuid4())
    async with AsyncClient(url) as client:
        outcomes = await asyncio.gather(
            *(join_course(client, course, f"s{n}", capacity=10) for n in range(25)),
            return_exceptions=True,
        )
    admitted = [o for o in outcomes if isinstance(o, int)]
    refused = [o for o in outcomes if isinstance(o, CourseFull)]
    print(f"admitted {len(admitted)}, refused {len(refused)}")


if __name__ == "__main__":
    asyncio.run(main())
