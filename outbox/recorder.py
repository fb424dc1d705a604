"""Records accepted parts: each wamid is written before the row's next part is sent.

Writes from all rows in flight are batched into one UPDATE per round trip, so a wamid waits at
most one database round trip however many rows are sending. A lost database is retried with
backoff: the wamid stays in memory until written (the duplicate window is only a crash then).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from outbox import store
from outbox.connections import fetch_all
from outbox.database import persistently

logger = logging.getLogger(__name__)
MAX_BATCH = 1000


@dataclass(frozen=True)
class AcceptedPart:
    row_id: int
    token: uuid.UUID
    index: int
    wamid: str
    final: bool


class PartRecorder:
    def __init__(self, engine: AsyncEngine, lease_seconds: float) -> None:
        self._engine = engine
        self._lease = lease_seconds
        self._queue: asyncio.Queue[tuple[AcceptedPart, asyncio.Future[bool]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-recorder")

    async def record(self, part: AcceptedPart) -> bool:
        """Durably record `part`; False when the row's lease was lost to another worker."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((part, future))
        return await asyncio.shield(future)

    async def close(self) -> None:
        """Write what is queued, then stop."""
        await self._queue.join()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty() and len(batch) < MAX_BATCH:
                batch.append(self._queue.get_nowait())
            parts = [part for part, _ in batch]
            recorded = await persistently(
                self._write, parts, what=f"recording {len(parts)} accepted parts"
            )
            for part, future in batch:
                if not future.done():
                    future.set_result(part.row_id in recorded)
                self._queue.task_done()

    async def _write(self, parts: list[AcceptedPart]) -> set[int]:
        """One UPDATE for the batch; the ids of the rows whose lease still matched."""
        async with self._engine.begin() as conn:
            rows = await fetch_all(
                conn,
                store.RECORD_PARTS,
                {
                    "ids": [p.row_id for p in parts],
                    "tokens": [p.token for p in parts],
                    "indexes": [p.index for p in parts],
                    "wamids": [p.wamid for p in parts],
                    "finals": [p.final for p in parts],
                    "lease": self._lease,
                },
            )
        return {int(row["id"]) for row in rows}
