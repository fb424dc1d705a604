"""Every few seconds: fail pending rows past their expires_at, release queued rows that nothing
holds back any more (a claim's mark that raced the trigger's release), prune old pair clocks."""

from __future__ import annotations

import logging

from outbox import store
from outbox.connections import fetch_all
from outbox.metrics.daemon import DaemonMetrics
from outbox.pool import Pool
from outbox.retry import MAY_HAVE_BEEN_ACCEPTED
from outbox.settings import Settings

logger = logging.getLogger("outbox.daemon")
EXPIRY_SWEEP_SECONDS = 10.0
EXPIRY_BATCH = 1000


class ExpirySweep:
    """Runs at most every EXPIRY_SWEEP_SECONDS (at once again while a full batch expired)."""

    def __init__(self, settings: Settings, pool: Pool, metrics: DaemonMetrics) -> None:
        self._settings = settings
        self._pool = pool
        self._metrics = metrics
        self._next_sweep = 0.0

    async def run_if_due(self, now: float) -> None:
        """Every few seconds: fail pending rows past their expires_at, and release queued rows
        that nothing holds back any more (a claim's mark that raced the trigger's release)."""
        if now < self._next_sweep:
            return
        self._next_sweep = now + EXPIRY_SWEEP_SECONDS
        async with self._pool.begin() as conn:
            released = await fetch_all(conn, store.RELEASE_LANES)
            horizon = self._settings.pair_burst * self._settings.pair_interval
            await fetch_all(conn, store.PRUNE_PAIRS, {"horizon": horizon})
        if released:
            logger.debug("%d queued messages released by the sweep", len(released))
        async with self._pool.connect() as conn:
            expired = await fetch_all(
                conn,
                store.EXPIRE_PENDING,
                {"batch": EXPIRY_BATCH, "doubtful": MAY_HAVE_BEEN_ACCEPTED},
            )
        if expired:
            self._metrics.failed.inc(len(expired))
            logger.info("%d messages expired before they could be sent", len(expired))
            if len(expired) == EXPIRY_BATCH:
                self._next_sweep = now
