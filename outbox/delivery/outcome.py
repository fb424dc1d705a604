"""A claimed row's outcome, written: rescheduled, failed for good, or given back to pending.

Every write names the claim's lease token, so a row that is no longer ours changes nothing. A
write the database refuses for its data fails that row with a sanitised reason instead of being
retried forever.
"""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa

from outbox import store
from outbox.connections import fetch_all
from outbox.database import is_connection_error, persistently, short_error
from outbox.delivery.claim import Claim, leases
from outbox.delivery.events import Event, EventLog
from outbox.delivery.lines import named, part_fields
from outbox.errors import clean
from outbox.metrics.daemon import DaemonMetrics
from outbox.pool import Pool

logger = logging.getLogger("outbox.daemon")


class Outcomes:
    """Writes rows' outcomes, patiently while the database is away; `abandon` makes them give up
    (a bounded shutdown). `failed` counts the rows this daemon failed for good."""

    def __init__(self, pool: Pool, events: EventLog, metrics: DaemonMetrics) -> None:
        self.abandon = False
        self.failed = 0  # rows this daemon failed for good, for the stop line
        self._pool = pool
        self._events = events
        self._metrics = metrics

    async def reschedule(
        self,
        claim: Claim,
        delay: float,
        error: str,
        *,
        give_back: int = 0,
        doubt: int = 0,
        code: int | None = None,
    ) -> None:
        await self.write(
            store.RESCHEDULE,
            claim,
            delay=delay,
            give_back=give_back,
            doubt=doubt,
            error=error,
            code=code,
        )

    async def fail(
        self,
        claim: Claim,
        error: str,
        *,
        code: int | None = None,
        doubt: int = 0,
        part: tuple[int, int] | None = None,
    ) -> None:
        """Fail the row for good; `part` is the (index, count) of the part that failed it."""
        self._events.record(Event(claim.id, None, "failed", error_code=code, detail=error))
        if await self.write(store.MARK_FAILED, claim, error=error, code=code, doubt=doubt):
            index, count = part if part is not None else (None, None)
            where = "" if index is None else f" at part {index + 1}/{count}"
            logger.info(
                "%s failed%s: %s",
                named(claim),
                where,
                clean(error),
                extra={**part_fields(index, count), "code": code, "reason": clean(error)},
            )

    async def release(self, claim: Claim) -> None:
        async def release() -> None:
            async with self._pool.connect() as conn:
                await fetch_all(conn, store.RELEASE, leases([claim]))

        await persistently(release, what="releasing a row", give_up=lambda: self.abandon)

    async def write(self, statement: sa.TextClause, claim: Claim, **params: Any) -> bool:
        """Write the row's outcome, patiently while the database is away. A write refused for
        its data fails the row with the database's reason instead. A row this write fails is
        counted once it is written (not when our lease was lost meanwhile). True when the row
        took this outcome (False: it was no longer ours, or took the fallback failure)."""
        if "error" in params:
            params["error"] = clean(params["error"])

        async def write(statement: sa.TextClause, params: dict[str, Any]) -> bool:
            async with self._pool.connect() as conn:
                rows = await fetch_all(
                    conn, statement, {"id": claim.id, "token": claim.token, **params}
                )
            return bool(rows)

        what = f"updating message {claim.id}"
        try:
            changed = await persistently(
                write, statement, params, what=what, give_up=lambda: self.abandon
            )
        except Exception as exc:
            if is_connection_error(exc):
                raise
            reason = clean(f"could not record the outcome: {short_error(exc)}")
            logger.error("message %d: %s", claim.id, reason)
            fallback = {"error": reason, "code": None, "doubt": params.get("doubt", 0)}
            changed = await persistently(
                write, store.MARK_FAILED, fallback, what=what, give_up=lambda: self.abandon
            )
            if changed:
                self._metrics.failed.inc()
                self.failed += 1
            return False
        if changed and statement is store.MARK_FAILED:
            self._metrics.failed.inc()
            self.failed += 1
        return bool(changed)
