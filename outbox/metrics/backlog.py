"""Keeps the backlog gauges (pending rows, oldest due pending age) current from the database:
one cheap query every few seconds, whatever the scrape rate (see refresh.py)."""

from __future__ import annotations

from prometheus_client import Gauge

from outbox import store
from outbox.connections import AsyncConnectionLike, fetch_one
from outbox.metrics.refresh import REFRESH_SECONDS, Refresher


class BacklogGauges(Refresher):
    """Refreshes `pending` and `oldest_pending` every `interval` seconds until cancelled."""

    what = "the backlog gauges"

    def __init__(
        self, pending: Gauge, oldest_pending: Gauge, *, interval: float = REFRESH_SECONDS
    ) -> None:
        super().__init__(interval=interval)
        self._pending = pending
        self._oldest_pending = oldest_pending

    async def _read(self, conn: AsyncConnectionLike) -> None:
        row = await fetch_one(conn, store.BACKLOG_GAUGES)
        assert row is not None
        oldest = row["oldest_pending_seconds"]
        self._pending.set(int(row["pending"]))
        self._oldest_pending.set(0.0 if oldest is None else float(oldest))
