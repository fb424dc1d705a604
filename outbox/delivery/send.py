"""One claimed row: send its parts in order, record each accepted part before the next.

A part is sent only while the row's lease holds (lease.py). Before any request Meta's rules rule
the row (rules.py); a refused part is classified once and the row alone bears the consequence
(refusal.py), except for outages and account errors, which stop the sender (health.py,
outage.py). A write the database refuses for its data fails that row (outcome.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

from outbox import store
from outbox.connections import Row
from outbox.database import is_connection_error, short_error
from outbox.delivery.claim import Claim
from outbox.delivery.events import EventLog
from outbox.delivery.lease import Leases
from outbox.delivery.limiter import RateLimiter
from outbox.delivery.lines import named, part_fields
from outbox.delivery.outage import Outages
from outbox.delivery.outcome import Outcomes
from outbox.delivery.pace import InFlightTarget
from outbox.delivery.parts import expired, row_parts
from outbox.delivery.paused_templates import PausedTemplates
from outbox.delivery.rate import SharedRate
from outbox.delivery.reconcile import Reconciler
from outbox.delivery.record import PartRecorder, RecordFailed
from outbox.delivery.recorded import AcceptedPart, Recorded, log_refused
from outbox.delivery.refusal import Refusals
from outbox.delivery.request import Expired, LeaseLost, Requests
from outbox.delivery.rules import Rules
from outbox.delivery.senders import Senders
from outbox.errors import InDoubt, InvalidMessage, SendError
from outbox.logs import bind_row
from outbox.media.fetch import MediaRefused, MediaUnreachable
from outbox.media.ids import MediaIds
from outbox.metrics.daemon import DaemonMetrics
from outbox.pool import Pool
from outbox.retry import TEMPLATE_PAUSED, retry_delay
from outbox.settings import Settings
from outbox.whatsapp import Part
from outbox.whatsapp_client import CloudAPI

logger = logging.getLogger("outbox.daemon")
MAX_INLINE_PACING = 2.0  # wait this long in-process for a rate slot; longer: reschedule


class RowSender:
    """Delivers claimed rows, one part after the other; `abandon` makes retried writes give up
    (a bounded shutdown)."""

    def __init__(
        self,
        settings: Settings,
        pool: Pool,
        api: CloudAPI,
        recorder: PartRecorder,
        senders: Senders,
        limiter: RateLimiter,
        on_pause: Callable[[], None],
        events: EventLog,
        metrics: DaemonMetrics | None = None,
        rate: SharedRate | None = None,
        pace: InFlightTarget | None = None,
        *,
        installation: str,
        clock: Callable[[], datetime] | None = None,
        media: MediaIds | None = None,
        templates: PausedTemplates | None = None,
    ) -> None:
        self.settings = settings
        # The wall clock quiet hours are judged by (tests give their own).
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        self.accepted = 0  # parts this daemon sent and Meta accepted, for the stop line
        self.pace = pace or InFlightTarget(settings.rate, settings.concurrency)
        self._pool = pool
        self._api = api
        self._recorder = recorder
        self._senders = senders
        self._limiter = limiter
        metrics = metrics or DaemonMetrics()
        rate = self._rate = rate or SharedRate(pool, settings.rate)
        self._templates = templates or PausedTemplates()
        self._outcomes = Outcomes(pool, events, metrics)
        self._leases = Leases(pool, settings, give_up=lambda: self.abandon)
        self._requests = Requests(
            settings,
            api,
            rate,
            self._leases,
            events,
            metrics,
            self.pace,
            installation=installation,
            media=media,
        )
        self._metrics = metrics
        self._reconciler = Reconciler(pool, events, settings.reconcile_window)
        self._outages = Outages(pool, api, senders, events, self._outcomes)
        self._rules = Rules(
            settings, pool, events, self._outcomes, self._templates, lambda: self.clock()
        )
        self._refusals = Refusals(
            settings,
            pool,
            senders,
            limiter,
            rate,
            self._outcomes,
            self._outages,
            self._templates,
            on_pause,
        )

    @property
    def abandon(self) -> bool:
        return self._outcomes.abandon

    @abandon.setter
    def abandon(self, value: bool) -> None:
        self._outcomes.abandon = value

    @property
    def failed(self) -> int:
        """Rows this daemon failed for good (an outage's undone failures taken back)."""
        return self._outcomes.failed

    async def deliver(self, claim: Claim) -> None:
        bind_row(claim.id, claim.recipient)  # every line logged while it is sent names the row
        claim.sender = claim.sender or self._api.phone_number_id
        try:
            recipient, parts, template = row_parts(claim)
        except InvalidMessage as exc:
            await self._outcomes.fail(claim, f"invalid row: {exc}")
            return
        if claim.pair_due_in is not None:
            self._limiter.seed(claim.sender, recipient, claim.pair_due_in)
        # Meta's rules (outbox/policy/), before any request: the window, then consent.
        ruled = await self._rules.parts_to_send(claim, recipient, parts, template)
        if ruled is None:
            return
        parts = ruled
        if claim.fail_unless_settled is not None:
            await self._settle_or_fail(claim, recipient, parts)
            return
        if claim.accepted >= len(parts):
            await self._outcomes.write(store.FINISH_ACCEPTED, claim)
            return
        if claim.probe and not await self._outages.api_answers(claim):
            await self._outcomes.release(claim)  # nothing was sent: no attempt, no send in doubt
            return
        loop = asyncio.get_running_loop()
        for index in range(claim.accepted, len(parts)):
            if self.abandon:
                return  # shutting down: the row is given back as it is
            if claim.deadline is not None and loop.time() >= claim.deadline:
                if await self._settled_at_deadline(claim, recipient, index, len(parts)):
                    continue
                return
            if not self._senders.open(claim.sender) and not claim.probe:
                await self._outcomes.release(claim)
                return
            held = self._templates.remaining(parts[index])
            if held > 0:
                reason = "waiting: its template is paused by Meta"
                # Its code marks it as held: it no longer holds back its lane (migration 0008).
                await self._outcomes.reschedule(
                    claim, held, reason, give_back=1, code=TEMPLATE_PAUSED
                )
                return
            if claim.taken_over and index == claim.doubtful_part:
                # Its last holder lost the lease, not necessarily its request: if Meta accepted
                # that part, its status webhook says so, and the part is recorded, not resent.
                settled = await self._reconciler.wamid(claim, recipient, index, len(parts))
                if settled is not None:  # not counted as sent: another worker's request
                    if not await self._record(claim, index, settled, len(parts)):
                        return
                    continue
            wait = self._limiter.reserve(claim.sender, recipient, MAX_INLINE_PACING)
            if wait is None:
                held = self._limiter.hold_remaining(claim.sender)
                delay = max(held, self.settings.pair_interval)
                await self._outcomes.reschedule(
                    claim, delay, "paced: waiting for a rate slot", give_back=1
                )
                return
            if wait > 0:  # a slot free now costs no turn of the loop
                await asyncio.sleep(wait)
            if claim.deadline is not None and loop.time() >= claim.deadline:
                if await self._settled_at_deadline(claim, recipient, index, len(parts)):
                    continue
                return
            claim.unsettled = True
            try:
                wamid = await self._requests.send(claim, recipient, parts[index], index)
                self.accepted += 1
                logger.info(
                    "%s: part %d/%d accepted as %s",
                    named(claim),
                    index + 1,
                    len(parts),
                    wamid,
                    extra={**part_fields(index, len(parts)), "wamid": wamid},
                )
            except LeaseLost:
                logger.warning(
                    "message %d: no longer ours to send (its lease was lost, or a status webhook "
                    "failed an earlier part); stopping",
                    claim.id,
                )
                return
            except Expired:  # before the request: waiting for a rate slot
                claim.unsettled = False
                if await self._settled_at_deadline(claim, recipient, index, len(parts)):
                    continue
                return
            except MediaRefused as exc:
                await self._outcomes.fail(claim, f"media part {index + 1}: {exc}")
                return
            except MediaUnreachable as exc:
                await self._refusals.media_later(claim, index, exc)
                return
            except InDoubt as error:
                settled = await self._reconciler.wamid(claim, recipient, index, len(parts))
                if settled is None:
                    await self._refusals.refused(claim, recipient, parts, index, error)
                    return
                self._metrics.accepted(parts[index].type)  # our own request, Meta says
                wamid = settled
            except SendError as error:
                await self._refusals.refused(claim, recipient, parts, index, error)
                return
            self._answered(claim.sender, recipient)
            if not await self._record(claim, index, wamid, len(parts)):
                return
            claim.unsettled = False

    async def _settled_at_deadline(
        self, claim: Claim, recipient: str, index: int, count: int
    ) -> bool:
        """At its deadline the row fails expired, unless an earlier request for this part (its
        last holder's, or one in doubt) was accepted, as a status webhook stored by then shows:
        the part is recorded instead. True: it was, and the row goes on."""
        if index == claim.doubtful_part:
            settled = await self._reconciler.wamid(claim, recipient, index, count)
            if settled is not None:
                return await self._record(claim, index, settled, count)
        await self._outcomes.fail(claim, expired(claim))
        return False

    async def _settle_or_fail(self, claim: Claim, recipient: str, parts: list[Part]) -> None:
        """The rules fail the row, unless its last holder's request sent its next part: a status
        webhook showing so records that part (the rest of the row is then ruled again)."""
        reason, claim.fail_unless_settled = claim.fail_unless_settled, None
        assert reason is not None
        index = claim.accepted
        settled = await self._reconciler.wamid(claim, recipient, index, len(parts))
        if settled is None:
            logger.info("message %d: %s", claim.id, reason)
            await self._outcomes.fail(claim, reason)
            return
        if await self._record(claim, index, settled, len(parts)) and index + 1 < len(parts):
            claim.accepted = index + 1
            await self.deliver(claim)

    async def _record(self, claim: Claim, index: int, wamid: str, count: int) -> bool:
        """Write an accepted part; False when the row must not go on (lease lost, refused)."""
        part = AcceptedPart(claim.id, claim.token, index, wamid, index == count - 1)
        claim.fallback_on_131047 = False  # a part went: its fallback can no longer replace it
        claim.settling = part.final  # its place in flight can go to the next row meanwhile
        try:
            recorded = await self._recorder.record(part)
            if recorded is Recorded.GOING_ON:
                if index == claim.doubtful_part:
                    claim.doubtful_part = None  # that request's fate no longer matters
                return True
            log_refused(part, recorded)
        except RecordFailed as exc:
            await self._outcomes.fail(claim, str(exc))
        return False

    async def prepare(self, claims: list[Claim]) -> dict[int, Row]:
        """What a claim's rows need before their first request, for all of them at once: their
        rate tokens are asked for, and Meta's rules' facts read (by row id; rules.py)."""
        for sender, rows in Counter(claim.sender for claim in claims).items():
            self._rate.expect(sender, rows)
        return await self._rules.read_facts(claims)

    async def crashed(self, claim: Claim, exc: Exception) -> None:
        """A bug while delivering: the row retries as after a transient error (the attempt
        counts), so even a row that always crashes ends failed instead of looping forever. The
        database gone away: the row is given back once it is back, unless a request of it may
        have been accepted (then its lease runs out, and whoever takes it over settles that)."""
        if self.abandon:
            return
        if is_connection_error(exc):
            if not claim.unsettled:  # no request in the air: nothing for a takeover to settle
                await self._outcomes.release(claim)
            return
        reason = f"internal error: {short_error(exc)}"
        if claim.attempts >= self.settings.max_attempts:
            await self._outcomes.fail(claim, f"{reason} (gave up after {claim.attempts} attempts)")
        else:
            delay = retry_delay(claim.attempts, self.settings.retry_delay)
            await self._outcomes.reschedule(claim, delay, reason)

    def _answered(self, sender: str, recipient: str) -> None:
        """The API answered: the sender works, whatever it said about this message."""
        self._limiter.succeeded(sender, recipient)
        self._senders.answered(sender)

    async def extend_leases(self, claims: list[Claim]) -> None:
        """Extend the leases of `claims`; a claim whose row is no longer ours is marked lost."""
        await self._leases.extend(claims)

    def templates_held(self) -> list[str]:
        """The templates Meta has paused, whose rows wait now."""
        return self._templates.names()

    def stop_lookups(self) -> None:
        """At shutdown: the outage checks and rate takes under way no longer matter."""
        self._outages.stop_lookups()
        self._rate.stop()
