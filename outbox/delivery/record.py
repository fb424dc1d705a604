"""Records accepted parts: each wamid is written before the row's next part is sent.

Writes from all rows in flight are batched into one UPDATE per round trip, so a wamid waits at
most one database round trip however many rows are sending. A lost database is retried with
backoff: the wamid stays in memory until written (the duplicate window is only a crash then).
Any other error is one part's problem: the batch is retried part by part, and the part that still
fails is reported to its row alone, so one bad item never blocks the others. Status webhooks that
arrived before their part was recorded are applied right after it is, off the send path.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from outbox import store
from outbox.cancel import cancel_and_wait
from outbox.connections import fetch_all
from outbox.database import is_connection_error, persistently, short_error
from outbox.delivery.recorded import AcceptedPart, Recorded
from outbox.errors import clean
from outbox.pool import Pool

logger = logging.getLogger("outbox.recorder")
T = TypeVar("T")
R = TypeVar("R")
MAX_BATCH = 1000
STRUGGLING_AFTER = 0.5  # seconds a batch may take before claiming waits for it


class RecordFailed(Exception):
    """The part was accepted but its wamid could not be written (not for a lost connection)."""


class PartRecorder:
    def __init__(
        self,
        pool: Pool,
        lease_seconds: float,
        on_idle: Callable[[], None],
        *,
        pair_interval: float = 6.0,
        default_sender: str = "",
    ) -> None:
        self._pool = pool
        self._lease = lease_seconds
        self._pair_interval = pair_interval  # the pacing clock each recorded part advances
        self._default_sender = default_sender
        self._on_idle = on_idle
        self._queue: asyncio.Queue[tuple[AcceptedPart, asyncio.Future[Recorded]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._unwritten = 0
        self._abandon = False
        self._writing_since: float | None = None
        self._batch: list[tuple[AcceptedPart, asyncio.Future[Recorded]]] = []  # being written
        self._applying: set[asyncio.Task[None]] = set()  # statuses that waited for their part
        self.refused = 0  # accepted parts that may be on no row (Recorded.unwritten)

    @property
    def busy(self) -> bool:
        """Accepted parts wait while a write struggles (the database is away or slow): nothing
        new may be claimed until they are written. A write of a few milliseconds is not that."""
        since = self._writing_since
        return (
            self._unwritten > 0
            and since is not None
            and asyncio.get_running_loop().time() - since > STRUGGLING_AFTER
        )

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-recorder")

    async def record(self, part: AcceptedPart) -> Recorded:
        """Durably record `part`, unless the row is no longer this claim's; what became of it
        (recorded.py). Raises RecordFailed when the database refuses the write itself."""
        future: asyncio.Future[Recorded] = asyncio.get_running_loop().create_future()
        self._unwritten += 1
        self._queue.put_nowait((part, future))
        return await asyncio.shield(future)

    async def close(self, within: float) -> int:
        """Write what is queued, waiting at most `within` seconds, then stop. Parts still
        unwritten are logged (and counted, the result): their rows will be sent again from their
        last recorded part."""
        try:
            await asyncio.wait_for(self._queue.join(), within)
        except TimeoutError:
            self._abandon = True
        writing = self._batch  # a write given up on: its parts are as unwritten as the queue's
        await cancel_and_wait(t for t in (self._task, *self._applying) if t is not None)
        left = [part for part, future in writing if not future.done()]
        while not self._queue.empty():
            left.append(self._queue.get_nowait()[0])
        for part in left:
            logger.error(
                "message %d: part %d was accepted as %s but could not be recorded before "
                "shutdown; it may be sent again",
                part.row_id,
                part.index + 1,
                part.wamid,
                extra={"row_id": part.row_id, "part": part.index + 1, "wamid": part.wamid},
            )
        return len(left)

    async def _run(self) -> None:
        while True:
            batch = self._batch = [await self._queue.get()]
            while not self._queue.empty() and len(batch) < MAX_BATCH:
                batch.append(self._queue.get_nowait())
            self._writing_since = asyncio.get_running_loop().time()
            try:
                await self._write_batch(batch)
            finally:
                self._writing_since = None
                self._batch = []
                for _ in batch:
                    self._queue.task_done()
                self._unwritten -= len(batch)
                if not self._unwritten:
                    self._on_idle()

    async def _write_batch(
        self, batch: list[tuple[AcceptedPart, asyncio.Future[Recorded]]]
    ) -> None:
        try:
            recorded = await self._persistently([part for part, _ in batch])
        except Exception as exc:
            if is_connection_error(exc) or len(batch) == 1:
                for part, future in batch:
                    _settle(future, error=exc, part=part)
                return
            for item in batch:  # find the part the database refuses; write the others
                await self._write_batch([item])
            return
        refused = []
        for part, future in batch:  # the written ones first: their rows go on meanwhile
            if part.row_id in recorded:
                _settle(future, result=recorded[part.row_id])
            else:
                refused.append((part, future))
        if not refused:
            return
        found = await self._read_back([part for part, _ in refused])
        for part, future in refused:
            result = found.get(part.row_id, Recorded.UNREAD)
            if result.unwritten:
                self.refused += 1
            _settle(future, result=result)

    async def _read_back(self, parts: list[AcceptedPart]) -> dict[int, Recorded]:
        """What became of parts the write refused; none when that cannot be read (UNREAD)."""
        try:
            return await self._until_done(
                self._refused, parts, f"reading back {len(parts)} refused parts", 1.0
            )
        except Exception as exc:
            logger.warning("could not read back %d refused parts: %s", len(parts), short_error(exc))
            return {}

    async def _refused(self, parts: list[AcceptedPart]) -> dict[int, Recorded]:
        async with self._pool.connect() as conn:
            rows = await fetch_all(conn, store.REFUSED_PARTS, _located(parts))
        return {
            int(row["id"]): (
                Recorded.ON_ROW
                if row["on_row"]
                else Recorded.NOT_OURS
                if row["exists"]
                else Recorded.ROW_GONE
            )
            for row in rows
        }

    async def _persistently(self, parts: list[AcceptedPart]) -> dict[int, Recorded]:
        # Retried soon after the database is back: before any other daemon takes over.
        return await self._until_done(
            self._write, parts, f"recording {len(parts)} accepted parts", 1.0
        )

    async def _until_done(
        self,
        work: Callable[[list[T]], Awaitable[R]],
        items: list[T],
        what: str,
        max_delay: float,
    ) -> R:
        """`work(items)` retried while the database is away, until it is done or the recorder
        is abandoned (a stop past its deadline)."""
        return await persistently(
            work, items, what=what, give_up=lambda: self._abandon, max_delay=max_delay
        )

    async def _write(self, parts: list[AcceptedPart]) -> dict[int, Recorded]:
        """One UPDATE for the batch; the rows written, each going on or failed meanwhile by a
        status webhook (the part is recorded all the same). A row not among them is not ours."""
        async with self._pool.connect() as conn:
            rows = await fetch_all(
                conn,
                store.RECORD_PARTS,
                {
                    **_located(parts),
                    "tokens": [p.token for p in parts],
                    "finals": [p.final for p in parts],
                    "lease": self._lease,
                    "pair_interval": self._pair_interval,
                    "default_sender": self._default_sender,
                },
            )
        waiting = sorted({int(row["id"]) for row in rows if row["statuses_waiting"]})
        if waiting:
            task = asyncio.create_task(self._apply_waiting(waiting), name="outbox-apply-waiting")
            self._applying.add(task)
            task.add_done_callback(self._applying.discard)
        return {
            int(row["id"]): Recorded.GOING_ON if row["going_on"] else Recorded.ROW_FAILED
            for row in rows
        }

    async def _apply_waiting(self, row_ids: list[int]) -> None:
        """Apply the statuses that came before these rows' parts were recorded (the webhook beat
        the write, or a send in doubt was settled by one). The rows stay marked until applied:
        if this does not happen (a stop, the database away), the receiver's sweep does it."""
        try:
            await self._until_done(
                self._apply_marked,
                row_ids,
                f"applying the statuses that waited for {len(row_ids)} rows' parts",
                5.0,
            )
        except Exception as exc:
            logger.warning(
                "statuses waiting for rows %s not applied now (%s); the receiver's sweep will",
                row_ids,
                short_error(exc),
            )

    async def _apply_marked(self, row_ids: list[int]) -> None:
        async with self._pool.begin() as conn:
            await store.apply_marked(conn, row_ids)


def _located(parts: list[AcceptedPart]) -> dict[str, list[int] | list[str]]:
    """Each part's row, index and wamid, as the statements' parallel arrays."""
    return {
        "ids": [p.row_id for p in parts],
        "indexes": [p.index for p in parts],
        "wamids": [p.wamid for p in parts],
    }


def _settle(
    future: asyncio.Future[Recorded],
    *,
    part: AcceptedPart | None = None,
    result: Recorded = Recorded.NOT_OURS,
    error: BaseException | None = None,
) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(result)
        return
    assert part is not None
    future.set_exception(
        RecordFailed(
            f"part {part.index} was accepted but could not be recorded: "
            f"{clean(short_error(error), 200)}"
        )
    )
