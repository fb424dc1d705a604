"""A bounded stop: rows in flight get until the deadline to finish, accepted parts are written,
then the rest are given back to pending, whatever the database does meanwhile."""

from __future__ import annotations

import asyncio
import logging

from outbox import store
from outbox.cancel import cancel_and_wait
from outbox.connections import fetch_all
from outbox.database import persistently, short_error
from outbox.delivery.claim import Claim, leases
from outbox.delivery.flight import InFlight
from outbox.delivery.record import PartRecorder
from outbox.delivery.send import RowSender
from outbox.pool import Pool

logger = logging.getLogger("outbox.daemon")


def left(deadline: float, cap: float | None = None) -> float:
    """Seconds until `deadline` (at least a tenth, at most `cap`)."""
    remaining = max(0.1, deadline - asyncio.get_running_loop().time())
    return remaining if cap is None else min(cap, remaining)


async def shut_down(
    pool: Pool,
    rows: RowSender | None,
    recorder: PartRecorder,
    in_flight: InFlight,
    deadline: float,
) -> tuple[int, int]:
    """Finish or give back what is in flight; the number of rows given back to pending,
    and of accepted parts whose wamid is on no row (left unwritten at the stop, or refused
    earlier by rows taken over)."""
    assert rows is not None
    tasks = in_flight.tasks
    if tasks:
        count = len(tasks)
        logger.info("waiting for %d message%s in flight", count, "" if count == 1 else "s")
        await asyncio.wait(tasks, timeout=left(deadline))
    # Snapshot first: a finished task forgets its claim. A row that finished meanwhile no
    # longer carries our token, so releasing it changes nothing.
    claims = list(in_flight.claims.values())
    rows.abandon = True  # no new part goes out; retried writes give up
    rows.stop_lookups()
    # Accepted parts are written before their rows are given back, or they would be lost.
    unrecorded = await recorder.close(left(deadline)) + recorder.refused
    await cancel_and_wait(tasks)
    released = 0
    if claims:
        try:
            async with asyncio.timeout(left(deadline)):
                released = await persistently(
                    _release, pool, claims, what="releasing rows", max_tries=5
                )
        except Exception as exc:
            logger.error(
                "could not release %d messages (%s); their leases expire in %.0fs",
                len(claims),
                short_error(exc),
                rows.settings.lease_seconds,
            )
    return released, unrecorded


async def _release(pool: Pool, claims: list[Claim]) -> int:
    """Give rows back to pending; how many were still ours to give."""
    async with pool.connect() as conn:
        return len(await fetch_all(conn, store.RELEASE, leases(claims)))
