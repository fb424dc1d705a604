"""Meta's rules applied to a claimed row before any request (outbox/policy/): the 24-hour
window and consent, a template Meta paused, quiet hours, the portfolio's daily limit. A row they
hold back waits with its attempt given back; one they forbid fails; no request is made."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from outbox.connections import Row
from outbox.database import short_error
from outbox.delivery.claim import Claim
from outbox.delivery.events import Event, EventLog
from outbox.delivery.outcome import Outcomes
from outbox.delivery.parts import expired
from outbox.delivery.paused_templates import PausedTemplates
from outbox.errors import InvalidMessage
from outbox.policy import decide as policy_decide
from outbox.policy import quiet as policy_quiet
from outbox.policy import tier as policy_tier
from outbox.policy.numbers import canonical, forms
from outbox.pool import Pool
from outbox.retry import MAX_RETRY_DELAY, TEMPLATE_PAUSED
from outbox.settings import Settings
from outbox.store import policy as policy_store
from outbox.whatsapp import Part, parts_of

logger = logging.getLogger("outbox.daemon")


class Rules:
    """Rules a row before its first request; `clock` is the wall clock quiet hours are judged
    by."""

    def __init__(
        self,
        settings: Settings,
        pool: Pool,
        events: EventLog,
        outcomes: Outcomes,
        templates: PausedTemplates,
        clock: Callable[[], datetime],
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._events = events
        self._outcomes = outcomes
        self._templates = templates
        self._clock = clock
        self._limit = policy_tier.LimitWatch(pool, settings.daily_limit)

    async def read_facts(self, claims: list[Claim]) -> dict[int, Row]:
        """The facts of a claim's rows in one statement, by row id: a row then rules without a
        query of its own. A row missing (the read failed) reads its own."""
        wanted = [
            (c.id, c.sender, forms(c.recipient), canonical(c.recipient)) for c in claims if c.sender
        ]
        try:
            async with self._pool.connect() as conn:
                return await policy_store.rows_facts(conn, wanted)
        except Exception as exc:  # the rows are claimed: they must start whatever happens here
            logger.debug(
                "the rules' facts of %d rows not read at once (%s)", len(wanted), short_error(exc)
            )
            return {}

    async def parts_to_send(
        self, claim: Claim, recipient: str, parts: list[Part], template: Any
    ) -> list[Part] | None:
        """The parts the row goes out as (its fallback template's, when its window is closed),
        or None when the rules held it back or failed it (its outcome is written)."""
        facts = await self._facts(claim, recipient)
        ruling = policy_decide.ruled(
            facts,
            claim.sender,
            recipient,
            template_row=template is not None,
            accepted=claim.accepted,
            may_have_sent=claim.doubtful_part is not None,
        )
        # Its fallback's parts when the fallback is chosen (or was: a switched row), else its own.
        sent_as = parts if ruling.fallback is None else parts_of(None, [], ruling.fallback)
        if ruling.fail is not None and ruling.unless_sent:
            claim.fail_unless_settled = ruling.fail
            return sent_as
        if ruling.fail is not None:
            logger.info("message %d: %s", claim.id, ruling.fail)
            await self._outcomes.fail(claim, ruling.fail)
            return None
        if ruling.hold is not None and ruling.hold_until is not None:
            # Its code marks it as held: it no longer holds back its lane (migration 0008).
            delay = max((ruling.hold_until - datetime.now(UTC)).total_seconds(), 0.0)
            logger.info("message %d: %s", claim.id, ruling.hold)
            await self._outcomes.reschedule(
                claim, delay, ruling.hold, give_back=1, code=TEMPLATE_PAUSED
            )
            return None
        try:
            if await self._quiet(claim, recipient, ruling.quiet_hours, ruling.timezone):
                return None
        except InvalidMessage as exc:  # a plain SQL insert's quiet hours or time zone
            await self._outcomes.fail(claim, f"invalid row: {exc}")
            return None
        waits = claim.fail_unless_settled is None and ruling.business_initiated
        if waits and await self._over_budget(claim, recipient, ruling):
            return None
        if claim.fail_unless_settled is not None:  # its deadline came first (_expired)
            return sent_as
        claim.fallback_on_131047 = ruling.fallback_on_131047 and claim.accepted == 0
        fallback = ruling.fallback if ruling.switch else None
        if fallback is not None and not await self._switch_to_fallback(claim, fallback):
            return None
        if ruling.template_approved:  # approved since Meta paused it (a webhook, or a sync)
            self._templates.lift(sent_as)
        return sent_as

    async def _facts(self, claim: Claim, recipient: str) -> Row | None:
        """The row's facts as its claim read them (waited for), else read now: each read
        serves one ruling only."""
        read, claim.facts_read = claim.facts_read, None
        if read is not None:
            if not read.done():
                await _done(read)  # a read cancelled (a stop) leaves the row its own
            if not read.cancelled() and recipient == claim.recipient:
                facts = read.result().get(claim.id)
                if facts is not None:
                    return facts
        async with self._pool.connect() as conn:
            return await policy_store.row_facts(
                conn, claim.id, claim.sender, forms(recipient), canonical(recipient)
            )

    async def _quiet(
        self, claim: Claim, recipient: str, own_hours: str | None, own_zone: str | None
    ) -> bool:
        """Inside the recipient's quiet hours (the row's own, else the daemon's; in the row's
        time zone, else the number's), the row waits for the opening (its attempt given back, no
        request), or fails `expired` when its deadline comes first. True: it was."""
        hours = policy_quiet.row_quiet_hours(own_hours, self._settings.quiet_hours)
        zone = policy_quiet.row_zone(own_zone)
        now = self._clock()
        quiet = policy_quiet.quiet_until(hours, recipient, now, zone)
        if quiet is None:
            return False
        opens, local = quiet
        delay = max((opens - now).total_seconds(), 0.0)
        loop = asyncio.get_running_loop()
        if claim.deadline is not None and loop.time() + delay >= claim.deadline:
            return await self._expired(
                claim, f"expired: its deadline comes before quiet hours end ({local})"
            )
        # It keeps its error, so it holds its lane: the recipient's later rows are quiet too.
        await self._outcomes.reschedule(claim, delay, f"quiet hours until {local}", give_back=1)
        return True

    async def _over_budget(
        self, claim: Claim, recipient: str, ruling: policy_decide.Ruling
    ) -> bool:
        """Beyond the portfolio's daily limit, the row waits for a place (its attempt given back,
        no request; looked at again within the hour, as the limit may change), or fails
        `expired` when its deadline comes first. True: it was."""
        if not await self._limit.in_effect():
            return False
        async with self._pool.begin() as conn:
            verdict = await policy_tier.reserve(
                conn, recipient, configured=self._settings.daily_limit, category=ruling.category
            )
        if verdict.granted:
            return False
        wait = MAX_RETRY_DELAY
        if verdict.frees_at is not None:
            wait = max((verdict.frees_at - datetime.now(UTC)).total_seconds(), 1.0)
        loop = asyncio.get_running_loop()
        if claim.deadline is not None and loop.time() + wait >= claim.deadline:
            return await self._expired(
                claim, f"expired: its deadline comes before a place frees ({verdict.reason})"
            )
        logger.info("message %d waits: %s", claim.id, verdict.reason)
        delay = min(wait, MAX_RETRY_DELAY)
        await self._outcomes.reschedule(claim, delay, verdict.reason, give_back=1)
        return True

    async def _expired(self, claim: Claim, reason: str) -> bool:
        """The row's deadline comes before the rules would let it go: it fails with `reason`,
        unless an earlier request may have sent its next part; then the send looks for that
        part's status first (`fail_unless_settled`). True: it failed now."""
        if claim.doubtful_part is not None:
            claim.fail_unless_settled = expired(claim)
            return False
        await self._outcomes.fail(claim, reason)
        return True

    async def _switch_to_fallback(self, claim: Claim, fallback: dict[str, Any]) -> bool:
        """Record that the row goes out as its fallback template (its window is closed), before
        the request; False when the row is no longer ours."""
        async with self._pool.connect() as conn:
            ours = await policy_store.mark_sent_fallback(conn, claim.id, claim.token)
        if ours:
            name = fallback.get("name")
            logger.info("message %d: window closed; sending its fallback %s", claim.id, name)
            self._events.record(
                Event(claim.id, None, "fallback", detail=f"window closed: template {name}")
            )
        return ours


async def _done(future: asyncio.Future[Any]) -> None:
    """Wait until `future` is done, cancelled or failed too, without taking on its outcome: what
    asyncio.wait does for one future, at a fraction of its cost (it runs once per row)."""
    waiter = asyncio.get_running_loop().create_future()
    future.add_done_callback(functools.partial(_wake, waiter))
    await waiter


def _wake(waiter: asyncio.Future[None], _: object) -> None:
    if not waiter.done():  # its row's task may have been cancelled meanwhile
        waiter.set_result(None)
