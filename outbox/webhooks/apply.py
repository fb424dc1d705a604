"""Store webhook bodies and apply what they say; a background task re-applies what could not be.

The raw body is written first and committed whatever happens next (Meta cannot send a lost
webhook again). Its statuses and inbound messages are stored and applied under a savepoint, so an
unexpected failure leaves the body stored but unapplied, for the background task. A status that
arrived before the daemon recorded its part is applied by the daemon when it records it; the
background task gives each one a single second look, for the moment both were written at once.
Metrics count what a
transaction committed, after the commit.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from outbox import store
from outbox.connections import Row
from outbox.database import is_connection_error, short_error
from outbox.metrics.receiver import ReceiverMetrics
from outbox.webhooks.payload import Envelope, parse

logger = logging.getLogger("outbox.webhooks")

RETRY_INTERVAL = 0.5  # seconds between rounds of the background task when it found no work
BATCH = 500  # waiting statuses applied per statement
SETTLE = 2.0  # seconds after which a waiting status gets its second look (see RECHECK_WAITING)
WATERMARK_HORIZON = 60.0  # on start, waiting statuses this recent get their second look
BODIES_PER_ROUND = 50
LOCK_TIMEOUT = 1.0  # a request waits this long for a row lock, then leaves the body to the task
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
            "installation": status.installation,
            "row_id": status.row_id,
            "part": status.part,
            "status": status.status,
            "at": status.at,
            "code": _int32(status.error_code),
            "title": status.error_title,
            "recipient": status.recipient,
        }
        for status in envelope.statuses
    ]


def _inbound_params(envelope: Envelope) -> list[dict[str, Any]]:
    return [
        {
            "wamid": message.wamid,
            "phone": message.phone_number_id,
            "customer": message.customer,
            "user_id": message.user_id,
            "type": message.type,
            "at": message.at,
            "code": _int32(message.error_code),
            "title": message.error_title,
        }
        for message in envelope.inbound
    ]


def _error_params(envelope: Envelope) -> list[dict[str, Any]]:
    return [
        {
            "phone": error.phone_number_id,
            "code": _int32(error.code),
            "title": error.title,
            "detail": error.detail,
        }
        for error in envelope.errors
    ]


class Applier:
    """Receives bodies for the app, and re-applies in the background what is left unapplied."""

    def __init__(self, engine: AsyncEngine, metrics: ReceiverMetrics | None = None) -> None:
        self._engine = engine
        self._bodies = Backoff()
        self._watermark: int | None = None  # statuses up to this id had their second look
        self._metrics = metrics or ReceiverMetrics()

    async def receive(self, body: bytes, envelope: Envelope) -> bool:
        """Store `body`, then apply `envelope` (parsed from it). False when only the body could
        be stored; raises when not even that was possible (the database is away)."""
        applied: tuple[int, list[Row]] | None = None
        async with self._engine.connect() as conn, conn.begin():
            webhook_id = await store.insert_webhook(conn, body)
            try:
                async with conn.begin_nested():
                    await store.set_lock_timeout(conn, LOCK_TIMEOUT)
                    applied = await self._apply(conn, webhook_id, envelope)
            except Exception as exc:
                logger.warning(
                    "webhook %d stored but not applied (%s); it will be retried",
                    webhook_id,
                    short_error(exc),
                )
        self._metrics.bodies.labels("stored").inc()
        if applied is None:
            self._metrics.bodies.labels("unapplied").inc()
            return False
        self._count(applied[1], duplicates=applied[0])
        return True

    async def run(self) -> None:
        """Until cancelled: re-apply stored bodies not applied yet, apply what waited for parts
        recorded since (rows the daemon marked, if it did not apply them itself), and give new
        waiting statuses their second look."""
        busy, failures = False, 0
        while True:
            pause = min(MAX_PAUSE, RETRY_INTERVAL * 2**failures) if failures else RETRY_INTERVAL
            await asyncio.sleep(0 if busy else pause)
            busy = False
            try:
                busy = await self._retry_bodies()
                busy = await self._sweep_marked_rows() or busy
                busy = await self._recheck_statuses() or busy
            except Exception as exc:
                failures += 1
                logger.warning(
                    "re-applying webhooks failed (%s); next try in %.0fs",
                    short_error(exc),
                    min(MAX_PAUSE, RETRY_INTERVAL * 2**failures),
                )
                continue
            if failures:
                logger.info("re-applying webhooks works again")
                failures = 0

    async def _apply(
        self, conn: AsyncConnection, webhook_id: int, envelope: Envelope
    ) -> tuple[int, list[Row]]:
        """Store and apply the body's contents: the number of duplicate statuses (stored
        before), and the outcome of each new one."""
        ids = await store.store_contents(
            conn,
            webhook_id,
            _status_params(envelope),
            _inbound_params(envelope),
            _error_params(envelope),
        )
        results = await store.apply_statuses(conn, ids)
        self._log(results)
        return len(envelope.statuses) - len(ids), results

    async def _retry_bodies(self) -> bool:
        """Apply up to BODIES_PER_ROUND stored bodies, each in its own transaction; True when
        there may be more."""
        for _ in range(BODIES_PER_ROUND):
            async with self._engine.connect() as conn, conn.begin():
                found = await store.next_unapplied_webhook(conn, self._bodies.skipped())
                if found is None:
                    return False
                webhook_id, body = found
                try:
                    async with conn.begin_nested():
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

    async def _sweep_marked_rows(self) -> bool:
        """Apply what waits for rows marked `statuses_waiting` whose parts are now recorded, and
        unmark the rows nothing waits for any more; True when there may be more. Marked rows are
        few: those whose statuses came before their parts."""
        after, busy = 0, False
        while True:
            async with self._engine.connect() as conn:
                rows = await store.marked_rows(conn, after, BATCH)
            if not rows:
                return busy
            async with self._engine.begin() as conn:
                results = await store.apply_marked(conn, rows)
                await store.unmark_rows(conn, rows)
            self._log(results)
            self._count(results, duplicates=None)
            busy = busy or any(r["outcome"] != "waiting" for r in results)
            if len(rows) < BATCH:
                return busy
            after = rows[-1]

    async def _recheck_statuses(self) -> bool:
        """Give the waiting statuses that came since the watermark their one second look (see
        store.RECHECK_WAITING); True when there may be more. A batch the database refuses is
        applied status by status, and a status that still fails is logged and left waiting."""
        async with self._engine.connect() as conn:
            if self._watermark is None:
                self._watermark = await store.waiting_watermark(conn, WATERMARK_HORIZON)
            ids = await store.recheck_waiting(conn, self._watermark, SETTLE, BATCH)
        if not ids:
            return False
        try:
            async with self._engine.begin() as conn:
                results = await store.apply_statuses(conn, ids)
        except Exception as exc:
            if is_connection_error(exc):
                raise
            logger.warning("applying waiting statuses failed (%s); one by one", short_error(exc))
            results = await self._apply_one_by_one(ids)
        self._watermark = max(ids)
        self._log(results)
        self._count(results, duplicates=None)
        return len(ids) >= BATCH

    async def _apply_one_by_one(self, ids: list[int]) -> list[Row]:
        applied: list[Row] = []
        for status_id in ids:
            try:
                async with self._engine.begin() as conn:
                    applied.extend(await store.apply_statuses(conn, [status_id]))
            except Exception as exc:
                if is_connection_error(exc):
                    raise
                logger.error(
                    "status %d could not be applied (%s); it waits for its part to be recorded",
                    status_id,
                    short_error(exc),
                )
        return applied

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
