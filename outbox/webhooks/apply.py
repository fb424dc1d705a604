"""Apply stored webhook bodies in the background, in batches, off the request path.

The request path only makes the raw body durable (outbox.webhooks.intake); this task takes the
oldest unapplied bodies, many at a time, stores their statuses and inbound messages and applies
the statuses, all in one transaction, woken as soon as bodies are stored. A batch that fails is
applied body by body, each under a savepoint, so one body that always fails is skipped for a
while (backoff) and holds back no other. The task also applies statuses that arrived before the
daemon recorded their part. Metrics count what a transaction committed, after the commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import asyncpg

from outbox import store
from outbox.connections import Row
from outbox.database import is_connection_error, short_error
from outbox.metrics.receiver import ReceiverMetrics
from outbox.pool import Pool
from outbox.webhooks.payload import Envelope, parse

logger = logging.getLogger("outbox.webhooks")

RETRY_INTERVAL = 0.5  # seconds between rounds when no body arrives (others' bodies, waiting)
BATCH = 500  # waiting statuses applied per statement
BODIES_PER_BATCH = 200  # stored bodies applied in one transaction
WORKERS = 1  # batches applied at once (more take the database's CPU from the intake)
GATHER = 0.05  # seconds a wake-up waits for more bodies before a batch that is not full
BODIES_PER_ROUND = 50  # bodies applied one by one after a batch failed
LOCK_TIMEOUT = 2.0  # a batch waits this long for a row lock, then is applied body by body
MAX_BACKOFF = 300.0  # longest wait before a body or status that failed is tried again
MAX_PAUSE = 30.0  # longest pause of the background task while the database fails it
MAX_INT32 = 2**31 - 1


class Backoff:
    """Items whose application failed, each skipped for a while (1 s, doubling, at most
    MAX_BACKOFF), so that one that always fails never holds back the others."""

    def __init__(self) -> None:
        self._failures: dict[int, tuple[int, float]] = {}

    def failed(self, item: int) -> float:
        """Record a failure; the seconds `item` is now skipped for."""
        failures = self._failures.get(item, (0, 0.0))[0] + 1
        delay = min(MAX_BACKOFF, 2.0 ** (failures - 1))
        self._failures[item] = (failures, _now() + delay)
        return delay

    def succeeded(self, item: int) -> None:
        self._failures.pop(item, None)

    def skipped(self) -> list[int]:
        now = _now()
        return [item for item, (_, until) in self._failures.items() if until > now]


def _now() -> float:
    return asyncio.get_running_loop().time()


def _int32(value: int | None) -> int | None:
    """An error code that fits the integer column; None for one that does not."""
    return value if value is not None and -MAX_INT32 <= value <= MAX_INT32 else None


def _status_params(envelope: Envelope) -> list[dict[str, Any]]:
    return [
        {
            "wamid": status.wamid,
            "row_id": status.row_id,
            "part": status.part,
            "status": status.status,
            "at": status.at,
            "code": _int32(status.error_code),
            "title": status.error_title,
        }
        for status in envelope.statuses
    ]


def _inbound_params(envelope: Envelope) -> list[dict[str, Any]]:
    return [
        {
            "wamid": message.wamid,
            "phone": message.phone_number_id,
            "customer": message.customer,
            "type": message.type,
            "at": message.at,
        }
        for message in envelope.inbound
    ]


def _merged(
    rows: list[tuple[int, bytes]],
) -> list[tuple[int, list[dict[str, Any]], list[dict[str, Any]]]]:
    """The contents of consecutive bodies merged, to be stored in one statement each (a round
    trip per body cost as much as applying them): (first body's id, statuses, inbound). A body
    naming a wamid or a row already in the group starts a new one, so that a message's statuses
    get their ids (the order of its history) as they arrived, as body by body would give them
    (a statement orders its own by wamid and status)."""
    groups: list[tuple[int, list[dict[str, Any]], list[dict[str, Any]]]] = []
    seen: set[object] = set()
    for webhook_id, body in rows:
        envelope = parse(body)
        statuses, inbound = _status_params(envelope), _inbound_params(envelope)
        named = {status["wamid"] for status in statuses} | {
            ("row", status["row_id"]) for status in statuses if status["row_id"] is not None
        }
        if not groups or named & seen:
            groups.append((webhook_id, [], []))
            seen = set()
        groups[-1][1].extend(statuses)
        groups[-1][2].extend(inbound)
        seen |= named
    return groups


class Applier:
    """Applies stored bodies in batches, and statuses whose part has been recorded since."""

    def __init__(self, pool: Pool, metrics: ReceiverMetrics | None = None) -> None:
        self._pool = pool
        self._bodies = Backoff()
        self._statuses = Backoff()
        self._metrics = metrics or ReceiverMetrics()
        self._woken = asyncio.Event()

    def wake(self) -> None:
        """Bodies were stored: apply them now rather than at the next round."""
        self._woken.set()

    async def run(self) -> None:
        """Until cancelled: WORKERS loops applying batches side by side (SKIP LOCKED keeps
        their bodies apart; the database works on two at once)."""
        await asyncio.gather(*(self._work() for _ in range(WORKERS)))

    async def _work(self) -> None:
        """Apply stored bodies batch after batch while there are any, then waiting statuses;
        between rounds, wait for a wake-up (RETRY_INTERVAL at most)."""
        busy, failures, waiting_checked = False, 0, 0.0
        while True:
            if failures:
                await asyncio.sleep(min(MAX_PAUSE, RETRY_INTERVAL * 2**failures))
            elif not busy:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(RETRY_INTERVAL):
                        await self._woken.wait()
                # Let the bodies of a burst gather: fewer, bigger transactions leave the
                # database to the intake, whose commits the requests wait for.
                await asyncio.sleep(GATHER)
            self._woken.clear()
            try:
                busy = await self._apply_batch()
                if not busy or _now() - waiting_checked >= RETRY_INTERVAL:
                    waiting_checked = _now()
                    busy = await self._retry_statuses() or busy
            except Exception as exc:
                failures += 1
                logger.warning(
                    "applying webhooks failed (%s); next try in %.0fs",
                    short_error(exc),
                    min(MAX_PAUSE, RETRY_INTERVAL * 2**failures),
                )
                continue
            if failures:
                logger.info("applying webhooks works again")
                failures = 0

    async def _apply_batch(self) -> bool:
        """Apply up to BODIES_PER_BATCH stored bodies, oldest first, in one transaction; True
        when there may be more. A batch the database refuses is applied body by body."""
        rows: list[tuple[int, bytes]] = []
        try:
            async with self._pool.begin() as conn:
                rows = await store.next_unapplied_webhooks(
                    conn, BODIES_PER_BATCH, self._bodies.skipped()
                )
                if not rows:
                    return False
                await store.set_lock_timeout(conn, LOCK_TIMEOUT)
                ids, duplicates = [], 0
                for webhook_id, statuses, inbound in _merged(rows):
                    new = await store.store_contents(conn, webhook_id, statuses, inbound)
                    ids += new
                    duplicates += len(statuses) - len(new)
                await store.mark_webhooks_applied(conn, [webhook_id for webhook_id, _ in rows])
                results = await store.apply_statuses(conn, ids)
        except Exception as exc:
            if is_connection_error(exc) or not rows:
                raise
            logger.warning(
                "a batch of %d webhooks could not be applied (%s); applying them one by one",
                len(rows),
                short_error(exc),
            )
            await self._retry_bodies(len(rows))
            return True
        self._log(results)
        self._metrics.bodies.labels("applied").inc(len(rows))
        self._count(results, duplicates=duplicates)
        return len(rows) >= BODIES_PER_BATCH

    async def _apply(
        self, conn: asyncpg.Connection, webhook_id: int, envelope: Envelope
    ) -> tuple[int, list[Row]]:
        """Store and apply the body's contents: the number of duplicate statuses (stored
        before), and the outcome of each new one."""
        ids = await store.store_contents(
            conn, webhook_id, _status_params(envelope), _inbound_params(envelope)
        )
        results = await store.apply_statuses(conn, ids)
        self._log(results)
        return len(envelope.statuses) - len(ids), results

    async def _retry_bodies(self, count: int = BODIES_PER_ROUND) -> bool:
        """Apply up to `count` stored bodies, each in its own transaction; True when there may
        be more."""
        for _ in range(count):
            async with self._pool.begin() as conn:
                found = await store.next_unapplied_webhook(conn, self._bodies.skipped())
                if found is None:
                    return False
                webhook_id, body = found
                try:
                    async with conn.transaction():  # a savepoint
                        duplicates, results = await self._apply(conn, webhook_id, parse(body))
                except Exception as exc:
                    if is_connection_error(exc):
                        raise
                    delay = self._bodies.failed(webhook_id)
                    logger.error(
                        "webhook %d could not be applied (%s); next try in %.0fs",
                        webhook_id,
                        short_error(exc),
                        delay,
                    )
                    continue
            self._bodies.succeeded(webhook_id)
            self._metrics.bodies.labels("reapplied").inc()
            self._count(results, duplicates=duplicates)
            logger.info("webhook %d applied on retry", webhook_id)
        return True

    async def _retry_statuses(self) -> bool:
        """Apply a batch of waiting statuses that can apply now; True when there may be more.
        A batch the database refuses is applied status by status, to isolate the culprit."""
        skip = self._statuses.skipped()
        try:
            async with self._pool.begin() as conn:
                results = await store.apply_waiting(conn, BATCH, skip)
        except Exception as exc:
            if is_connection_error(exc):
                raise
            logger.warning("applying waiting statuses failed (%s); one by one", short_error(exc))
            return await self._retry_one_by_one(skip)
        self._log(results)
        self._count(results, duplicates=None)
        return len(results) >= BATCH

    async def _retry_one_by_one(self, skip: list[int]) -> bool:
        async with self._pool.connect() as conn:
            ids = await store.select_waiting(conn, BATCH, skip)
        for status_id in ids:
            try:
                async with self._pool.begin() as conn:
                    results = await store.apply_statuses(conn, [status_id])
                self._log(results)
                self._count(results, duplicates=None)
            except Exception as exc:
                if is_connection_error(exc):
                    raise
                delay = self._statuses.failed(status_id)
                logger.error(
                    "status %d could not be applied (%s); next try in %.0fs",
                    status_id,
                    short_error(exc),
                    delay,
                )
            else:
                self._statuses.succeeded(status_id)
        return len(ids) >= BATCH

    def _count(self, results: list[Row], *, duplicates: int | None) -> None:
        """Count committed statuses: applied ones by status (a failed status ignored for a part
        already delivered or read is not); with `duplicates` (statuses received now, not
        re-applied later), every outcome too."""
        for result in results:
            if result["outcome"] == "applied" and not result["ignored"]:
                self._metrics.statuses_applied.labels(result["status"]).inc()
            if duplicates is not None:
                self._metrics.statuses.labels(result["outcome"]).inc()
        if duplicates:
            self._metrics.statuses.labels("duplicate").inc(duplicates)

    def _log(self, results: list[Row]) -> None:
        for result in results:
            if result["ignored"]:
                logger.info(
                    "message %d: failed status for part %d ignored: the part was already "
                    "delivered or read",
                    result["row_id"],
                    result["part"],
                )
            elif result["outcome"] == "waiting":
                logger.debug(
                    "status %s for %s waits for its part", result["status"], result["wamid"]
                )
