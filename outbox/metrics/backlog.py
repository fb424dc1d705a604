"""Keeps the backlog gauges (pending rows, oldest due pending age) current from the database.

One cheap query every REFRESH_SECONDS, whatever the scrape rate: a scrape never touches the
database. A failed refresh keeps the last values and is logged once, until it works again; it can
neither wedge nor stop the daemon.
"""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import Gauge

from outbox import store
from outbox.connections import fetch_one
from outbox.database import short_error
from outbox.pool import Pool

logger = logging.getLogger("outbox.daemon")
REFRESH_SECONDS = 5.0
REFRESH_TIMEOUT = 10.0  # a refresh that takes longer is abandoned; the gauges keep their values


class BacklogGauges:
    """Refreshes `pending` and `oldest_pending` every `interval` seconds until cancelled."""

    def __init__(
        self,
        pool: Pool,
        pending: Gauge,
        oldest_pending: Gauge,
        *,
        interval: float = REFRESH_SECONDS,
    ) -> None:
        self._pool = pool
        self._pending = pending
        self._oldest_pending = oldest_pending
        self._interval = interval
        self._failing = False

    async def run(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self._interval)

    async def refresh(self) -> bool:
        """One refresh; False (values kept) when the database did not answer in time."""
        try:
            async with asyncio.timeout(REFRESH_TIMEOUT), self._pool.connect() as conn:
                row = await fetch_one(conn, store.BACKLOG_GAUGES)
        except Exception as exc:
            if not self._failing:
                logger.warning(
                    "cannot refresh the backlog gauges (%s); they keep their last values",
                    short_error(exc),
                )
            self._failing = True
            return False
        if self._failing:
            logger.info("the backlog gauges are refreshed again")
            self._failing = False
        assert row is not None
        oldest = row["oldest_pending_seconds"]
        self._pending.set(int(row["pending"]))
        self._oldest_pending.set(0.0 if oldest is None else float(oldest))
        return True
