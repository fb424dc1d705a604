"""Make webhook bodies durable fast: concurrent requests' bodies go to the database in one
statement and one commit (group commit); each request is answered once its body is committed.

When the database fails or is slow (no commit within SPOOL_AFTER), the batch is written to the
local spool instead (fsynced) and answered; the spool is replayed into the database, oldest file
first, when it answers again, and a file is deleted only after its commit. A batch the spool
cannot take either (full, or no spool) fails its requests: 503, and Meta sends them again.
A write that outlived SPOOL_AFTER may still commit: the body is then stored twice, which the
applier treats as Meta's own duplicates (statuses and inbound messages are stored once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from pathlib import Path

from outbox import store
from outbox.database import short_error
from outbox.metrics.receiver import ReceiverMetrics
from outbox.pool import Pool
from outbox.webhooks.spool import Spool, SpoolCorrupt, SpoolFull

logger = logging.getLogger("outbox.webhooks")

WRITERS = 2  # batches written at once: one fills while the other commits
MAX_BATCH = 1000  # bodies per statement
MAX_BATCH_BYTES = 8 * 1024 * 1024
SPOOL_AFTER = 0.5  # seconds a batch waits for its commit before it is spooled instead
STORE_TIMEOUT = 10.0  # the longest a batch waits for the database when there is no spool
SUBMIT_TIMEOUT = 30.0  # a request never waits longer (503): past every bound above, a bug
REPLAY_INTERVAL = 1.0  # seconds between looks at the spool (other processes' files too)
MAX_REPLAY_PAUSE = 5.0  # longest wait between replay attempts while the database fails


class Unavailable(Exception):
    """The body is not durable: neither the database nor the spool took it."""


class Intake:
    """Takes bodies from requests and makes them durable, in batches."""

    def __init__(
        self,
        pool: Pool,
        spool: Spool | None,
        metrics: ReceiverMetrics,
        on_stored: Callable[[], None],
    ) -> None:
        self._pool = pool
        self._spool = spool
        self._metrics = metrics
        self._on_stored = on_stored
        self._queue: deque[tuple[bytes, asyncio.Future[None]]] = deque()
        self._ready = asyncio.Event()
        self._spooled = asyncio.Event()
        self._database_up = True
        # Bodies this process spooled wait for their replay: until then new ones go to the
        # spool too, behind them, so that a message's statuses are stored in arrival order.
        self._backlog = False
        self._stuck: set[Path] = set()  # replayed files the disk would not let us delete
        self._late: set[asyncio.Task[list[int]]] = set()
        if spool is not None:
            metrics.spool_bytes.set_function(lambda: spool.bytes)

    async def submit(self, body: bytes) -> None:
        """Return once `body` is committed or spooled; raise Unavailable when it is neither."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((body, future))
        self._ready.set()
        try:
            async with asyncio.timeout(SUBMIT_TIMEOUT):
                await future
        except TimeoutError:
            raise Unavailable("the body was not made durable in time") from None

    async def run(self) -> None:
        """Until cancelled: the writers, and the replay of the spool."""
        tasks = [asyncio.create_task(self._write_batches()) for _ in range(WRITERS)]
        if self._spool is not None:
            tasks.append(asyncio.create_task(self._replay_spool()))
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in [*tasks, *self._late]:
                task.cancel()
            await asyncio.gather(*tasks, *self._late, return_exceptions=True)
            for _, future in self._queue:
                if not future.done():
                    future.set_exception(Unavailable("the receiver is stopping"))

    async def _write_batches(self) -> None:
        while True:
            await self._ready.wait()
            batch = self._take()
            if not self._queue:
                self._ready.clear()
            if batch:
                await self._store(batch)

    def _take(self) -> list[tuple[bytes, asyncio.Future[None]]]:
        batch: list[tuple[bytes, asyncio.Future[None]]] = []
        size = 0
        while self._queue and len(batch) < MAX_BATCH and size < MAX_BATCH_BYTES:
            item = self._queue.popleft()
            batch.append(item)
            size += len(item[0])
        return batch

    async def _store(self, batch: list[tuple[bytes, asyncio.Future[None]]]) -> None:
        futures = [future for _, future in batch]
        try:
            await self._make_durable([body for body, _ in batch], futures)
        except BaseException:
            _settle(futures, Unavailable("the receiver is stopping"))
            raise

    async def _make_durable(self, bodies: list[bytes], futures: list[asyncio.Future[None]]) -> None:
        if (
            (self._database_up and not self._backlog) or self._spool is None
        ) and await self._commit(bodies):
            self._metrics.bodies.labels("stored").inc(len(bodies))
            _settle(futures)
            self._on_stored()
            return
        if self._spool is None:
            _settle(futures, Unavailable("the database cannot take the webhook now"))
            return
        try:
            await asyncio.to_thread(self._spool.write, bodies)
        except (SpoolFull, OSError) as exc:
            logger.error("%d webhooks not spooled (%s); Meta sends them again", len(bodies), exc)
            self._metrics.bodies.labels("refused").inc(len(bodies))
            _settle(futures, Unavailable(str(exc)))
            return
        self._metrics.bodies.labels("spooled").inc(len(bodies))
        self._backlog = True
        _settle(futures)
        self._spooled.set()

    async def _commit(self, bodies: list[bytes]) -> bool:
        """Insert and commit `bodies`; False when that failed, or took longer than SPOOL_AFTER
        while a spool can take them (the write then goes on in the background)."""
        task = asyncio.ensure_future(self._insert(bodies))
        wait = SPOOL_AFTER if self._spool is not None else STORE_TIMEOUT
        done, _ = await asyncio.wait({task}, timeout=wait)
        if task not in done:
            if self._spool is None:
                task.cancel()
            else:
                self._late.add(task)
                task.add_done_callback(self._late_done)
            self._database_failed(f"no commit within {wait:.1f}s")
            return False
        exc = task.exception()
        if exc is not None:
            self._database_failed(short_error(exc))
            return False
        return True

    async def _insert(self, bodies: list[bytes]) -> list[int]:
        """One statement in autocommit: one round trip, committed when it returns."""
        async with self._pool.connect() as conn:
            return await store.insert_webhooks(conn, bodies)

    def _late_done(self, task: asyncio.Task[list[int]]) -> None:
        self._late.discard(task)
        if not task.cancelled() and task.exception() is None:
            self._on_stored()  # committed after all; its spooled copy will be a duplicate

    def _database_failed(self, reason: str) -> None:
        if self._spool is None:
            logger.error("webhooks not stored (%s); Meta will send them again", reason)
            return
        if self._database_up:
            logger.warning("webhooks go to the spool: the database failed (%s)", reason)
        self._database_up = False
        self._spooled.set()  # the replayer looks for the database's return

    async def _replay_spool(self) -> None:
        """Replay spooled files into the database, oldest first, and find the database back."""
        failures = 0
        while True:
            if failures:
                await asyncio.sleep(min(MAX_REPLAY_PAUSE, 0.25 * 2**failures))
            else:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(REPLAY_INTERVAL):
                        await self._spooled.wait()
            self._spooled.clear()
            try:
                if not self._database_up:
                    async with asyncio.timeout(STORE_TIMEOUT), self._pool.connect() as conn:
                        await store.ping(conn)
                    logger.info("the database takes webhooks again; replaying the spool")
                    self._database_up = True
                await self._replay_files()
            except Exception as exc:
                if not failures:
                    logger.warning("replaying the webhook spool failed (%s)", short_error(exc))
                failures += 1
                self._database_up = False
                continue
            failures = 0

    async def _replay_files(self) -> None:
        """Replay every spooled file, oldest first; then new bodies go to the database again.
        A file committed but not deletable is skipped from then on (never inserted again)."""
        while await self._replay_pass():
            pass  # bodies spooled meanwhile are still ahead of any new one
        self._backlog = False

    async def _replay_pass(self) -> bool:
        """Replay the spooled files there are now; True when any was replayed."""
        assert self._spool is not None
        spool = self._spool
        replayed = False
        for path in await asyncio.to_thread(spool.files):
            if path in self._stuck:
                continue
            try:
                with spool.claim(path) as bodies:
                    if bodies is None:
                        continue
                    async with asyncio.timeout(STORE_TIMEOUT):
                        await self._insert(bodies)
                    try:
                        await asyncio.to_thread(spool.remove, path)
                    except OSError as exc:
                        self._stuck.add(path)
                        logger.error(
                            "spooled webhooks %s are stored but the file cannot be deleted "
                            "(%s); it is skipped from now on: delete it by hand",
                            path,
                            exc,
                        )
            except SpoolCorrupt as exc:
                aside = await asyncio.to_thread(spool.set_aside, path)
                logger.error("spooled webhooks unreadable (%s); moved to %s", exc, aside)
                continue
            self._metrics.bodies.labels("replayed").inc(len(bodies))
            self._on_stored()
            replayed = True
        return replayed


def _settle(futures: list[asyncio.Future[None]], error: Exception | None = None) -> None:
    for future in futures:
        if future.done():
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
