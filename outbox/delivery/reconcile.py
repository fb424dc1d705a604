"""A send in doubt settled by Meta's own word: a status webhook naming its callback data says
the part was accepted, so it is recorded instead of sent again."""

from __future__ import annotations

import asyncio
import logging

from outbox import store
from outbox.callbacks import same_customer
from outbox.connections import fetch_all
from outbox.database import is_connection_error
from outbox.delivery.claim import Claim
from outbox.delivery.events import Event, EventLog
from outbox.delivery.lines import named, part_fields
from outbox.pool import Pool

logger = logging.getLogger("outbox.daemon")
RECONCILE_POLL = 0.5  # how often a send in doubt looks for its status webhook


class Reconciler:
    """Looks for the status webhook of a part in doubt, for up to `window` seconds."""

    def __init__(self, pool: Pool, events: EventLog, window: float) -> None:
        self._pool = pool
        self._events = events
        self._window = window

    async def wamid(self, claim: Claim, recipient: str, index: int, count: int) -> str | None:
        """The wamid of a send in doubt, from a status webhook naming its callback data, if one
        comes within the reconcile window: then the part was accepted and is not sent again.
        Only a status of this installation (the receiver keeps that apart), about this row's
        recipient and from after the row was created counts: anything else says nothing about
        our request. A row's own deadline does not cut the wait short: it bounds when a part
        may be sent, not how long the fate of one already requested is looked for."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._window
        while True:
            try:
                async with self._pool.connect() as conn:
                    rows = await fetch_all(
                        conn, store.RECONCILED_WAMID, {"id": claim.id, "part": index}
                    )
            except Exception as exc:
                if not is_connection_error(exc):
                    raise
                rows = []  # the database is away: no status can be read until it is back
            wamid = next(
                (
                    str(row["wamid"])
                    for row in rows
                    if row["recipient"] is not None and same_customer(recipient, row["recipient"])
                ),
                None,
            )
            if wamid is not None:
                logger.info(
                    "%s: part %d/%d in doubt was accepted as %s (a status webhook says so)",
                    named(claim),
                    index + 1,
                    count,
                    wamid,
                    extra={**part_fields(index, count), "wamid": wamid},
                )
                self._events.record(Event(claim.id, index, "reconciled", detail=wamid))
                return wamid
            if loop.time() >= deadline or claim.lost:
                return None
            await asyncio.sleep(min(RECONCILE_POLL, max(0.0, deadline - loop.time())))
