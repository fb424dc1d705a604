"""What an API outage means for the rows: no attempt used (those its first failures used are
given back, failures undone), no message sent into the void by a probe, and a lookup of the
phone number, apart from the row, after a send without an answer."""

from __future__ import annotations

import asyncio
import logging

from outbox import store
from outbox.connections import fetch_all
from outbox.database import is_connection_error, short_error
from outbox.delivery.claim import Claim
from outbox.delivery.events import Event, EventLog
from outbox.delivery.health import Gate, State
from outbox.delivery.outcome import Outcomes
from outbox.delivery.senders import Senders
from outbox.errors import clean
from outbox.pool import Pool
from outbox.whatsapp_client import CloudAPI

logger = logging.getLogger("outbox.daemon")


class Outages:
    """Turns the senders' gates' view of an outage into writes on the rows it touched."""

    def __init__(
        self, pool: Pool, api: CloudAPI, senders: Senders, events: EventLog, outcomes: Outcomes
    ) -> None:
        self._pool = pool
        self._api = api
        self._senders = senders
        self._events = events
        self._outcomes = outcomes
        self._lookups: set[asyncio.Task[None]] = set()  # outage checks under way

    async def api_answers(self, claim: Claim) -> bool:
        """In an outage, whether the API answers a lookup now: a probe sends a message only
        then, so that however long nothing answers, no part is sent into the void (where each
        send would be one more in doubt)."""
        gate = self._senders.gate(claim.sender)
        if gate.state is not State.OUTAGE:
            return True
        reason = await self._api.unreachable(claim.sender)
        if reason is None:
            return True
        if gate.lookup_missed(reason):  # what /readyz says now
            logger.info("outage probe: %s; sending one message all the same", reason)
            return True
        logger.info("outage probe: %s; no message sent", reason)
        return False

    async def give_back_onset(self, gate: Gate) -> None:
        """An outage uses no attempts: give back those its first failures used, before it was
        recognised as one (rows rescheduled for a retry then)."""
        await self.undo_failures(gate.take_onset_ended())
        rows = gate.take_onset()
        if not rows:
            return
        try:
            async with self._pool.connect() as conn:
                await fetch_all(conn, store.GIVE_BACK_ATTEMPTS, {"ids": rows})
        except Exception as exc:
            if not is_connection_error(exc):
                raise
            logger.warning("attempts of %d rows not given back (%s)", len(rows), short_error(exc))

    async def undo_failures(self, rows: list[tuple[int, str]]) -> None:
        """Rows failed for good by an outage's first failures (their last attempt, used before
        the outage was recognised) go back to pending with that attempt returned: an outage
        fails no row. A row changed since (retried, cancelled, failed by Meta or for a reason
        of its own) stays as it is: its last error is no longer that failure."""
        if not rows:
            return
        ids, errors = [row for row, _ in rows], [clean(error) for _, error in rows]
        try:
            async with self._pool.connect() as conn:
                undone = await fetch_all(
                    conn, store.UNDO_ONSET_FAILURES, {"ids": ids, "errors": errors}
                )
        except Exception as exc:
            if not is_connection_error(exc):
                raise
            logger.warning(
                "%d rows failed by the outage's onset stay failed (%s)", len(rows), short_error(exc)
            )
            return
        for row in undone:
            self._outcomes.failed -= 1
            self._events.record(
                Event(int(row["id"]), None, "unfailed", detail="its failure began an API outage")
            )
        if undone:
            logger.info(
                "%d row(s) failed by the first failures of the outage are pending again",
                len(undone),
            )

    def look_up_later(self, sender: str, failure: str) -> None:
        """After a send without an answer, look the phone number up, apart from the row (whose
        outcome must not wait for it): unanswered too, and no answer since, is an outage."""
        gate = self._senders.gate(sender)
        answers = gate.answers

        async def look_up() -> None:
            down = await self._api.unreachable(sender)
            if down is None or self._outcomes.abandon:  # a stop closes the HTTP session
                return
            if gate.unreachable(f"{failure}; {down}", answers=answers):
                await self.give_back_onset(gate)

        task = asyncio.create_task(look_up(), name=f"outbox-lookup-{sender}")
        self._lookups.add(task)
        task.add_done_callback(self._lookups.discard)

    def stop_lookups(self) -> None:
        """At shutdown: the outage checks under way no longer matter."""
        for task in self._lookups:
            task.cancel()
