"""A claim's lease: extended while its row is sent, and checked before every request, so that
no part goes out once another daemon may have taken the row over."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from outbox import store
from outbox.connections import fetch_all
from outbox.database import persistently, short_error
from outbox.delivery.claim import Claim, leases
from outbox.pool import Pool
from outbox.settings import Settings

logger = logging.getLogger("outbox.daemon")
LEASE_MARGIN = 2.0  # a part goes out only with this much lease left after its request timeout


class Leases:
    """Extends and checks the leases of claimed rows; `give_up` ends a patient extension (a
    bounded shutdown)."""

    def __init__(self, pool: Pool, settings: Settings, give_up: Callable[[], bool]) -> None:
        self._pool = pool
        self._settings = settings
        self._give_up = give_up

    async def extend(self, claims: list[Claim]) -> None:
        """Extend the leases of `claims`; a claim whose row is no longer ours is marked lost."""
        now = asyncio.get_running_loop().time()
        lease = self._settings.lease_seconds
        async with self._pool.connect() as conn:
            rows = await fetch_all(conn, store.EXTEND_LEASES, {**leases(claims), "lease": lease})
        ours = {int(row["id"]) for row in rows}
        for claim in claims:
            if claim.id in ours:
                claim.lease_until = now + lease
            else:
                claim.lost = True

    async def holds(self, claim: Claim, *, recheck: bool = False) -> bool:
        """True when the lease outlasts the next request: extended first when it might not, or
        when `recheck` asks whether the row is still ours and sending (a status webhook may have
        failed an earlier part meanwhile: then nothing more of it is sent)."""
        left = claim.lease_until - asyncio.get_running_loop().time()
        if not claim.lost and (recheck or left <= self._settings.request_timeout + LEASE_MARGIN):
            await persistently(
                self.extend,
                [claim],
                what=f"extending the lease of message {claim.id}",
                give_up=self._give_up,
            )
        return not claim.lost

    async def keep(self, claims: Callable[[], list[Claim]]) -> None:
        """Extend the leases of the rows in flight every third of a lease, until cancelled."""
        while True:
            await asyncio.sleep(self._settings.lease_seconds / 3)
            held = claims()
            if held:
                try:
                    await self.extend(held)
                except Exception as exc:
                    logger.warning("cannot extend leases (%s)", short_error(exc))
