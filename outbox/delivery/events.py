"""The delivery history: every request's outcome, appended to outbox_events in batches.

record() never waits for the database, so the send path does not slow down; a flusher writes
what accumulated every EVERY seconds in one statement. History is for people reading it: while
the database is away events wait in memory (up to MAX_BUFFER, then the oldest are dropped with a
warning); a guarantee never depends on them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from outbox import store
from outbox.cancel import cancel_and_wait
from outbox.connections import fetch_all
from outbox.database import is_connection_error, short_error
from outbox.errors import clean
from outbox.pool import Pool

logger = logging.getLogger("outbox.events")
EVERY = 0.2
MAX_BATCH = 2000
MAX_BUFFER = 100_000


@dataclass(frozen=True)
class Event:
    message_id: int
    part: int | None
    kind: str  # accepted, transient, throttle, permanent, account, in_doubt, expired, ...
    http_status: int | None = None
    error_code: int | None = None
    detail: str | None = None
    latency_ms: float | None = None


class EventLog:
    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._buffer: list[Event] = []
        self._task: asyncio.Task[None] | None = None
        self._dropped = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-events")

    def record(self, event: Event) -> None:
        if len(self._buffer) >= MAX_BUFFER:
            del self._buffer[: MAX_BUFFER // 10]
            self._dropped += MAX_BUFFER // 10
        self._buffer.append(event)

    async def close(self, within: float) -> None:
        """Write what is buffered (waiting at most `within` seconds), then stop."""
        if self._task is not None:
            await cancel_and_wait([self._task])
        with contextlib.suppress(Exception):
            async with asyncio.timeout(within):
                while self._buffer:
                    await self._flush()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(EVERY)
            while self._buffer:
                try:
                    await self._flush()
                except Exception as exc:
                    logger.warning("cannot write the delivery history (%s)", short_error(exc))
                    if not is_connection_error(exc):
                        del self._buffer[:MAX_BATCH]  # a batch the database refuses is dropped
                    break
            if self._dropped:
                logger.warning("%d history events dropped: the database was away", self._dropped)
                self._dropped = 0

    async def _flush(self) -> None:
        batch = self._buffer[:MAX_BATCH]
        async with self._pool.connect() as conn:
            await fetch_all(conn, store.APPEND_EVENTS, append_values(batch))
        del self._buffer[: len(batch)]


def append_values(batch: list[Event]) -> dict[str, list[object]]:
    """APPEND_EVENTS' parameters for a batch: a column each, details cleaned."""
    return {
        "ids": [e.message_id for e in batch],
        "parts": [e.part for e in batch],
        "kinds": [e.kind for e in batch],
        "statuses": [e.http_status for e in batch],
        "codes": [e.error_code for e in batch],
        "details": [None if e.detail is None else clean(e.detail) for e in batch],
        "latencies": [e.latency_ms for e in batch],
    }
