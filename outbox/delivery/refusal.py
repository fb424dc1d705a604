"""What a refused part does to its row and its sender: the error is classified once
(outbox/retry.py), then the row is rescheduled, failed, deferred or given back, and the sender
held, paused or found in an outage. Only outages and account errors reach beyond the row."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from outbox.delivery.claim import Claim
from outbox.delivery.health import State
from outbox.delivery.limiter import RateLimiter
from outbox.delivery.lines import named, part_fields, until
from outbox.delivery.outage import Outages
from outbox.delivery.outcome import Outcomes
from outbox.delivery.paused_templates import PausedTemplates
from outbox.delivery.rate import SharedRate
from outbox.delivery.senders import Senders
from outbox.errors import GraphError, InDoubt, SendError
from outbox.media.fetch import MediaUnreachable
from outbox.media.upload import UploadUnanswered
from outbox.policy import decide as policy_decide
from outbox.policy import receiver as policy_receiver
from outbox.policy.template_holds import DISABLED, PAUSED
from outbox.pool import Pool
from outbox.retry import (
    MAX_RETRY_DELAY,
    MAX_SENDER_HOLD,
    MAX_SPAM_HOLD,
    PAIR_RATE_LIMIT,
    SENDER_THROUGHPUT_CODE,
    TEMPLATE_DISABLED_CODE,
    Defer,
    Doubt,
    ErrorClass,
    Fail,
    HoldSender,
    HoldTemplate,
    Pause,
    Retry,
    Throttle,
    WaitOutage,
    classify,
    decide,
    needs_new_token,
    pauses_every_sender,
    retry_delay,
)
from outbox.settings import Settings
from outbox.whatsapp import Part

logger = logging.getLogger("outbox.daemon")


class Refusals:
    """Decides and writes what follows a refused part; `on_pause` is told of every pause."""

    def __init__(
        self,
        settings: Settings,
        pool: Pool,
        senders: Senders,
        limiter: RateLimiter,
        rate: SharedRate,
        outcomes: Outcomes,
        outages: Outages,
        templates: PausedTemplates,
        on_pause: Callable[[], None],
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._senders = senders
        self._limiter = limiter
        self._rate = rate
        self._outcomes = outcomes
        self._outages = outages
        self._templates = templates
        self._on_pause = on_pause

    async def media_later(self, claim: Claim, index: int, exc: MediaUnreachable) -> None:
        """The link's host, or Meta's upload, did not answer usefully: the row tries again
        later, its attempt counted, and fails once its attempts are spent. The sender is fine,
        unless an upload got no answer and a lookup of the phone number gets none either (an
        outage: the attempt is given back, outage.py); in an outage it uses none. Rows sharing
        one upload count nothing against the sender (never Gate.failed) but share its lookup."""
        reason = f"media part {index + 1}: {exc}"
        unanswered = isinstance(exc, UploadUnanswered)
        gate = self._senders.gate(claim.sender)
        if unanswered:
            if gate.state is State.OUTAGE:  # declared by other evidence: no attempt used
                delay = gate.seconds_to_probe() + 1.0 if claim.probe else 0.0
                reason = f"waiting out an API outage: {exc}"
                await self._outcomes.reschedule(claim, delay, reason, give_back=1)
                return
            self._outages.look_up_later(claim.sender, str(exc))
        if claim.attempts >= self._settings.max_attempts:
            reason = f"{reason} (gave up after {claim.attempts} attempts)"
            await self._outcomes.fail(claim, reason)
            if unanswered:  # its last attempt may be an outage's first failure
                if gate.state is State.OUTAGE:
                    await self._outages.undo_failures([(claim.id, reason)])
                else:
                    gate.ended(claim.id, reason)
        else:
            if unanswered:  # before any await: an outage recognised meanwhile gives it back
                gate.spent(claim.id)
            await self._outcomes.reschedule(
                claim, retry_delay(claim.attempts, self._settings.retry_delay), reason
            )

    async def _meta_ruled(self, claim: Claim, recipient: str, error: SendError) -> str | None:
        """Meta's own word on the rules: 131047 closes the window, 131050 suppresses the
        customer. The reason's prefix the row fails with, or None when it is not such an
        error; a row that can still go as its fallback is given back to be ruled again."""
        code = error.code if isinstance(error, GraphError) else None
        if code not in (policy_receiver.REENGAGEMENT, policy_receiver.MARKETING_STOPPED):
            return None
        async with self._pool.connect() as conn:
            await policy_receiver.learn(conn, claim.sender, recipient, code)
        if code == policy_receiver.REENGAGEMENT and claim.fallback_on_131047:
            reason = f"{policy_decide.WINDOW_CLOSED}: Meta answered {error}; its fallback goes next"
            await self._outcomes.reschedule(claim, 0.0, reason, give_back=1, code=code)
            return ""
        return (
            policy_decide.WINDOW_CLOSED
            if code == policy_receiver.REENGAGEMENT
            else policy_decide.OPTED_OUT
        )

    async def refused(
        self, claim: Claim, recipient: str, parts: list[Part], index: int, error: SendError
    ) -> None:
        part = parts[index]
        prefix = await self._meta_ruled(claim, recipient, error)
        if prefix == "":
            return  # rescheduled, to go as its fallback
        error_class = classify(error)
        # A 2xx without a usable id, or a malformed answer, is in doubt but shows the API up.
        no_answer = error_class is ErrorClass.TRANSIENT or (
            isinstance(error, InDoubt) and not error.answered
        )
        gate = self._senders.gate(claim.sender)
        outage = False
        if no_answer:
            outage = gate.failed(claim.id, recipient, str(error))
            if outage:
                await self._outages.give_back_onset(gate)
            else:
                self._outages.look_up_later(claim.sender, str(error))
        elif error_class is not ErrorClass.ACCOUNT:
            self._senders.answered(claim.sender)
        code = error.code if isinstance(error, GraphError) else None
        outcome = decide(
            error,
            attempts=claim.attempts,
            max_attempts=self._settings.max_attempts,
            base_delay=self._settings.retry_delay,
            pair_strikes=self._limiter.strikes(claim.sender, recipient),
            in_doubt=claim.in_doubt,
            outage=outage,
            sender_strikes=self._limiter.spam_strikes(claim.sender, MAX_SPAM_HOLD),
        )
        doubt = 1 if error_class is ErrorClass.IN_DOUBT else 0
        where = f"{named(claim)}: part {index + 1}/{len(parts)}"
        fields: dict[str, Any] = {**part_fields(index, len(parts)), "code": code}
        if isinstance(outcome, WaitOutage):
            # A probe that failed steps aside until just after the next probe, so that probe
            # tries another row: one row that always fails must not keep the sender in an outage.
            delay = gate.seconds_to_probe() + 1.0 if claim.probe else 0.0
            reason = f"waiting out an API outage: {outcome.reason}"
            logger.debug("%s %s", where, reason, extra=fields)  # the outage has its own line
            await self._outcomes.reschedule(claim, delay, reason, give_back=1, doubt=outcome.doubt)
        elif isinstance(outcome, Retry):
            logger.info(
                "%s: %s; retry in %.1fs (attempt %d of %d)",
                where,
                outcome.reason,
                outcome.delay,
                claim.attempts,
                self._settings.max_attempts,
                extra={**fields, "delay": round(outcome.delay, 3), "attempts": claim.attempts},
            )
            if no_answer:  # before any await: an outage recognised meanwhile gives it back
                gate.spent(claim.id)
            await self._outcomes.reschedule(claim, outcome.delay, outcome.reason, code=code)
        elif isinstance(outcome, Doubt):
            logger.warning(
                "%s in doubt (Meta may have accepted it): %s; sending again in %.1fs",
                where,
                outcome.reason,
                outcome.delay,
                extra={**fields, "delay": round(outcome.delay, 3), "in_doubt": claim.in_doubt + 1},
            )
            reason = f"in doubt: {outcome.reason}"
            await self._outcomes.reschedule(claim, outcome.delay, reason, give_back=1, doubt=1)
        elif isinstance(outcome, Throttle):
            if outcome.recipient_only:
                if code == PAIR_RATE_LIMIT:  # not a flow's throttle: the row alone waits
                    self._limiter.penalize(claim.sender, recipient, outcome.delay)
            else:
                if self._limiter.hold_remaining(claim.sender) <= 0:
                    logger.info(
                        "sending from %s held %.1fs: throttled by Meta: %s",
                        claim.sender,
                        outcome.delay,
                        outcome.reason,
                        extra={
                            "sender": claim.sender,
                            "code": code,
                            "reason": outcome.reason,
                            "until": until(min(outcome.delay, MAX_SENDER_HOLD)),
                        },
                    )
                self._limiter.hold(claim.sender, outcome.delay)
                if code == SENDER_THROUGHPUT_CODE:
                    await self._rate.slow_down(claim.sender)
            logger.info(
                "%s throttled: %s; retry in %.1fs",
                where,
                outcome.reason,
                outcome.delay,
                extra={**fields, "delay": round(outcome.delay, 3)},
            )
            reason = f"throttled: {outcome.reason}"
            await self._outcomes.reschedule(claim, outcome.delay, reason, give_back=1, code=code)
        elif isinstance(outcome, HoldSender):
            new_hold = self._limiter.hold_reason(claim.sender) is None
            self._limiter.hold_for_spam(
                claim.sender, outcome.delay, f"held by Meta: {outcome.reason}", MAX_SPAM_HOLD
            )
            held = self._limiter.hold_remaining(claim.sender)
            if new_hold:  # rows in flight when it began hit it too: one line for the hold
                logger.warning(
                    "sending from %s held %.0fs by Meta's spam rate limit: %s",
                    claim.sender,
                    held,
                    outcome.reason,
                    extra={
                        "sender": claim.sender,
                        "code": code,
                        "reason": outcome.reason,
                        "until": until(held),
                    },
                )
            reason = f"held: {outcome.reason}"
            delay = min(held, MAX_RETRY_DELAY)  # a row waits an hour at most: then it looks again
            logger.debug("%s waits %.0fs for the sender's hold", where, delay, extra=fields)
            await self._outcomes.reschedule(claim, delay, reason, give_back=1, code=code)
        elif isinstance(outcome, HoldTemplate):
            name = str((part.template or {}).get("name"))
            if self._templates.remaining(part) <= 0:  # one line per pause, not per row that hits it
                logger.warning(
                    "template %s paused by Meta; its messages wait %.0fs",
                    name,
                    outcome.delay,
                    extra={
                        "template": name,
                        "code": code,
                        "reason": outcome.reason,
                        "until": until(outcome.delay),
                    },
                )
            self._templates.pause(name, outcome.delay)
            await self._templates.learn(self._pool, part, PAUSED, outcome.delay)
            reason = f"waiting: template paused by Meta: {outcome.reason}"
            logger.debug("%s waits for its template", where, extra=fields)
            await self._outcomes.reschedule(claim, outcome.delay, reason, give_back=1, code=code)
        elif isinstance(outcome, Defer):
            await self._defer(claim, outcome, code, fields)
        elif isinstance(outcome, Fail):
            if code == TEMPLATE_DISABLED_CODE:  # the template's next rows fail with no request
                await self._templates.learn(self._pool, part, DISABLED, 0.0)
            reason = f"{prefix}: {outcome.reason}" if prefix else outcome.reason
            failed_part = (index, len(parts))
            await self._outcomes.fail(claim, reason, code=code, doubt=doubt, part=failed_part)
            if no_answer and not doubt:  # its last attempt may be an outage's first failure
                if gate.state is State.OUTAGE:  # recognised while it was being failed
                    await self._outages.undo_failures([(claim.id, reason)])
                else:
                    gate.ended(claim.id, reason)
        else:
            assert isinstance(outcome, Pause)
            reason = outcome.reason
            if needs_new_token(error):
                reason = f"{reason}; check META_ACCESS_TOKEN and restart the daemon"
            if pauses_every_sender(error):
                self._senders.token.pause(reason)
            else:
                self._senders.gate(claim.sender).pause(f"phone number id {claim.sender}: {reason}")
            self._on_pause()
            await self._outcomes.release(claim)

    async def _defer(
        self, claim: Claim, outcome: Defer, code: int | None, fields: dict[str, Any]
    ) -> None:
        """Meta's per-user marketing limit (131049): the row waits a day or more, not failed,
        unless its deadline comes first."""
        loop = asyncio.get_running_loop()
        if claim.deadline is not None and loop.time() + outcome.delay >= claim.deadline:
            reason = f"expired: its deadline comes before Meta takes it again ({outcome.reason})"
            await self._outcomes.fail(claim, reason, code=code)
            return
        logger.info(
            "%s: %s; deferred %.0fh (Meta's per-user marketing limit)",
            named(claim),
            outcome.reason,
            outcome.delay / 3600,
            extra={**fields, "delay": round(outcome.delay, 3)},
        )
        await self._outcomes.reschedule(
            claim, outcome.delay, f"deferred: {outcome.reason}", code=code
        )
