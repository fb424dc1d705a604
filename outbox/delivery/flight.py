"""The rows in flight: each claimed row is sent by a task of its own; a finished task forgets
its claim (only its own: a newer claim of the same row keeps its lease) and wakes the loop."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from outbox.database import is_connection_error, short_error
from outbox.delivery.claim import Claim

if TYPE_CHECKING:
    from outbox.delivery.send import RowSender

logger = logging.getLogger("outbox.daemon")


class InFlight:
    """The claims this daemon holds (`claims`, by row id) and the tasks sending them."""

    def __init__(self, wake: Callable[[], None]) -> None:
        self.claims: dict[int, Claim] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self._wake = wake

    def __len__(self) -> int:
        return len(self.claims)

    def sending(self) -> int:
        """Rows in flight that still have a part to send (a row whose last part is being
        recorded does not count against the in-flight limit)."""
        return sum(1 for claim in self.claims.values() if not claim.settling)

    def tokens(self) -> list[uuid.UUID]:
        """The lease tokens of the rows in flight (one per claim statement): a claim takes no
        expired lease under them, however late the statement reaches the database."""
        return list({claim.token for claim in self.claims.values()})

    def senders(self) -> set[str]:
        """The senders a row in flight goes from."""
        return {claim.sender for claim in self.claims.values()}

    def start(self, claim: Claim, rows: RowSender) -> None:
        """Send the claimed row in a task of its own. An older claim of the row still in flight
        sends nothing more: the row is no longer its own, whatever it believes of its lease."""
        older = self.claims.get(claim.id)
        if older is not None:
            older.lost = True
        self.claims[claim.id] = claim
        task = asyncio.create_task(self._deliver(claim, rows), name=f"outbox-row-{claim.id}")
        self.tasks.add(task)
        task.add_done_callback(self._done)

    async def _deliver(self, claim: Claim, rows: RowSender) -> None:
        try:
            await rows.deliver(claim)
        except Exception as exc:
            if is_connection_error(exc):
                logger.warning(
                    "message %d: the database went away while it was being sent (%s)",
                    claim.id,
                    short_error(exc),
                )
            else:
                logger.exception("message %d: delivery failed unexpectedly", claim.id)
            await rows.crashed(claim, exc)
        finally:
            # Only our own claim: a newer claim of the same row must keep its lease.
            if self.claims.get(claim.id) is claim:
                del self.claims[claim.id]

    def _done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self._wake()
        if not task.cancelled() and task.exception() is not None:
            logger.error("delivery task failed", exc_info=task.exception())
