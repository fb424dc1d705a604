"""One claimed row: send its parts in order, record each accepted part, write the outcome.

A part is sent only while the row's lease holds; a refused part is classified once (retry.py) and
the row alone bears the consequence, except for outages and account errors, which stop the
sender (gate.py). A write the database refuses for its data fails that row with a sanitised
reason instead of being retried forever.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import backoff
import sqlalchemy as sa

from outbox import store
from outbox.callbacks import callback_data, same_customer
from outbox.connections import fetch_all
from outbox.database import is_connection_error, persistently, short_error
from outbox.delivery.claim import Claim, leases
from outbox.delivery.events import Event, EventLog
from outbox.delivery.health import Gate, State
from outbox.delivery.limiter import RateLimiter
from outbox.delivery.pace import InFlightTarget
from outbox.delivery.rate import SharedRate
from outbox.delivery.record import AcceptedPart, PartRecorder, RecordFailed
from outbox.delivery.senders import Senders
from outbox.errors import GraphError, InDoubt, InvalidMessage, SendError, clean
from outbox.logs import bind_row, mask_recipient
from outbox.media.fetch import MediaRefused, MediaUnreachable
from outbox.media.ids import MediaIds, refuses_media_id
from outbox.metrics.daemon import DaemonMetrics
from outbox.policy import decide as policy_decide
from outbox.policy import quiet as policy_quiet
from outbox.policy import receiver as policy_receiver
from outbox.policy import tier as policy_tier
from outbox.policy.template_holds import DISABLED, PAUSED
from outbox.pool import Pool
from outbox.retry import (
    MAX_RETRY_DELAY,
    MAX_SENDER_HOLD,
    MAX_SPAM_HOLD,
    PAIR_RATE_LIMIT,
    SENDER_THROUGHPUT_CODE,
    TEMPLATE_DISABLED_CODE,
    TEMPLATE_PAUSED,
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
from outbox.store import policy as policy_store
from outbox.store import template_holds as template_holds_store
from outbox.validation import normalize_media, normalize_recipient, normalize_text
from outbox.whatsapp import CloudAPI, Part, parts_of

logger = logging.getLogger("outbox.daemon")


class LeaseLost(Exception):
    """Another daemon holds the row now: this one sends nothing more of it."""


class Expired(Exception):
    """The row's deadline passed while its request waited (a rate slot, the lease): nothing of
    it may be sent any more."""


MAX_INLINE_PACING = 2.0  # wait this long in-process for a rate slot; longer: reschedule
LEASE_MARGIN = 2.0  # a part goes out only with this much lease left after its request timeout
RECONCILE_POLL = 0.5  # how often a send in doubt looks for its status webhook


def _named(claim: Claim) -> str:
    """How a log line names a row: its id and its masked recipient, never the number."""
    return f"message {claim.id} to {mask_recipient(claim.recipient)}"


def _until(delay: float) -> str:
    """The wall-clock time `delay` seconds from now, for a log line (UTC, to the second)."""
    return (datetime.now(UTC) + timedelta(seconds=delay)).isoformat(timespec="seconds")


def _part(index: int | None, count: int | None) -> dict[str, int]:
    """A log line's `part` (counted from 1, as `outbox status` shows parts) and `parts`."""
    if index is None:
        return {}
    return {"part": index + 1} if count is None else {"part": index + 1, "parts": count}


def _loaded(value: Any, field: str) -> Any:
    """A JSON column as claimed (text), parsed; what Python cannot read is the row's fault."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except (ValueError, RecursionError) as exc:
        raise InvalidMessage(
            field, f"is JSON outbox cannot read ({clean(str(exc), 100)})", rule="json"
        ) from None


class RowSender:
    """Delivers claimed rows; `abandon` makes retried writes give up (a bounded shutdown)."""

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
    ) -> None:
        self.settings = settings
        # The wall clock quiet hours are judged by (tests give their own).
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        self._media = media  # media parts go by the id of their upload (None: by link)
        self._limit = policy_tier.LimitWatch(pool, settings.daily_limit)
        self._installation = installation  # goes into every send's callback data
        self.abandon = False
        self.accepted = 0  # parts this daemon sent and Meta accepted, for the stop line
        self.failed = 0  # rows this daemon failed for good
        # Template name -> held until (time.monotonic(): metrics may read it from another thread).
        self._template_holds: dict[str, float] = {}
        self._lookups: set[asyncio.Task[None]] = set()  # outage checks under way
        self._pool = pool
        self._recorder = recorder
        self._senders = senders
        self._limiter = limiter
        self._on_pause = on_pause
        self._events = events
        self._api = api
        self._metrics = metrics or DaemonMetrics()
        self._rate = rate or SharedRate(pool, settings.rate)
        self.pace = pace or InFlightTarget(settings.rate, settings.concurrency)
        # Quick in-process retries of transient failures: they belong to one attempt. A send in
        # doubt is never among them.
        self._send = backoff.on_exception(
            backoff.expo,
            SendError,
            max_tries=settings.quick_retries,
            giveup=lambda e: classify(e) is not ErrorClass.TRANSIENT,  # type: ignore[arg-type]
            factor=settings.quick_retry_delay,
            max_value=5,
            logger=None,
            on_backoff=self._log_quick_retry,
        )(self._send_once)

    @staticmethod
    def _log_quick_retry(details: Any) -> None:
        """One line per quick retry of a request (backoff's on_backoff hook)."""
        claim, _, _, index = details["args"]
        error = details.get("exception")
        code = error.code if isinstance(error, GraphError) else None
        logger.info(
            "%s: part %d: %s; quick retry %d in %.1fs",
            _named(claim),
            index + 1,
            error,
            details["tries"],
            details["wait"],
            extra={**_part(index, None), "code": code, "delay": round(details["wait"], 3)},
        )

    async def deliver(self, claim: Claim) -> None:
        bind_row(claim.id, claim.recipient)  # every line logged while it is sent names the row
        claim.sender = claim.sender or self._api.phone_number_id
        try:
            recipient = normalize_recipient(claim.recipient)
            media = normalize_media(_loaded(claim.media, "media"))
            template = _loaded(claim.template, "template")
            parts = parts_of(normalize_text(claim.message), media, template)
            if not parts:
                raise InvalidMessage(
                    "message",
                    "a message needs text, at least one media part, or a template",
                    rule="empty",
                )
        except InvalidMessage as exc:
            await self._fail(claim, f"invalid row: {exc}")
            return
        if claim.pair_due_in is not None:
            self._limiter.seed(claim.sender, recipient, claim.pair_due_in)
        # Meta's rules (outbox/policy/), before any request: the window, then consent.
        async with self._pool.connect() as conn:
            ruling = await policy_decide.rule(
                conn,
                claim.id,
                claim.sender,
                recipient,
                template_row=template is not None,
                accepted=claim.accepted,
                may_have_sent=claim.in_doubt > 0 or claim.taken_over,
            )
        if ruling.fail is not None:
            logger.info("message %d: %s", claim.id, ruling.fail)
            await self._fail(claim, ruling.fail)
            return
        if ruling.hold is not None and ruling.hold_until is not None:
            # Its code marks it as held: it no longer holds back its lane (migration 0008).
            delay = max((ruling.hold_until - datetime.now(UTC)).total_seconds(), 0.0)
            logger.info("message %d: %s", claim.id, ruling.hold)
            await self._reschedule(claim, delay, ruling.hold, give_back=1, code=TEMPLATE_PAUSED)
            return
        try:
            if await self._quiet(claim, recipient, ruling.quiet_hours, ruling.timezone):
                return
        except InvalidMessage as exc:  # a plain SQL insert's quiet hours or time zone
            await self._fail(claim, f"invalid row: {exc}")
            return
        if ruling.business_initiated and await self._over_budget(claim, recipient, ruling):
            return
        claim.fallback_on_131047 = ruling.fallback_on_131047 and claim.accepted == 0
        if ruling.fallback is not None:
            if ruling.switch and not await self._switch_to_fallback(claim, ruling.fallback):
                return
            parts = parts_of(None, [], ruling.fallback)
        if ruling.template_approved:  # approved since Meta paused it (a webhook, or a sync)
            for part in parts:
                if part.template is not None:
                    self._template_holds.pop(str(part.template.get("name")), None)
        if claim.accepted >= len(parts):
            await self._write(store.FINISH_ACCEPTED, claim)
            return
        if claim.probe and not await self._api_answers(claim):
            await self._release(claim)  # nothing was sent: no attempt, no send in doubt
            return
        loop = asyncio.get_running_loop()
        for index in range(claim.accepted, len(parts)):
            if self.abandon:
                return  # shutting down: the row is given back as it is
            if claim.deadline is not None and loop.time() >= claim.deadline:
                await self._fail(claim, "expired: not sent before its deadline")
                return
            if not self._senders.open(claim.sender) and not claim.probe:
                await self._release(claim)
                return
            held = self._template_held(parts[index])
            if held > 0:
                reason = "waiting: its template is paused by Meta"
                # Its code marks it as held: it no longer holds back its lane (migration 0008).
                await self._reschedule(claim, held, reason, give_back=1, code=TEMPLATE_PAUSED)
                return
            if claim.taken_over and index == claim.accepted:
                # Its last holder lost the lease, not necessarily its request: if Meta accepted
                # that part, its status webhook says so, and the part is recorded, not resent.
                settled = await self._reconciled(claim, recipient, index, len(parts))
                if settled is not None:  # not counted as sent: another worker's request
                    if not await self._record(claim, index, settled, len(parts)):
                        return
                    continue
            wait = self._limiter.reserve(claim.sender, recipient, MAX_INLINE_PACING)
            if wait is None:
                held = self._limiter.hold_remaining(claim.sender)
                delay = max(held, self.settings.pair_interval)
                await self._reschedule(claim, delay, "paced: waiting for a rate slot", give_back=1)
                return
            await asyncio.sleep(wait)
            if claim.deadline is not None and loop.time() >= claim.deadline:
                await self._fail(claim, "expired: not sent before its deadline")
                return
            try:
                wamid = await self._send_part(claim, recipient, parts[index], index)
                self.accepted += 1
                logger.info(
                    "%s: part %d/%d accepted as %s",
                    _named(claim),
                    index + 1,
                    len(parts),
                    wamid,
                    extra={**_part(index, len(parts)), "wamid": wamid},
                )
            except LeaseLost:
                logger.warning(
                    "message %d: no longer ours to send (its lease was lost, or a status webhook "
                    "failed an earlier part); stopping",
                    claim.id,
                )
                return
            except Expired:
                await self._fail(claim, "expired: not sent before its deadline")
                return
            except MediaRefused as exc:
                await self._fail(claim, f"media part {index + 1}: {exc}")
                return
            except MediaUnreachable as exc:
                await self._media_later(claim, index, exc)
                return
            except InDoubt as error:
                settled = await self._reconciled(claim, recipient, index, len(parts))
                if settled is None:
                    await self._refused(claim, recipient, parts, index, error)
                    return
                self._metrics.accepted(parts[index].type)  # our own request, Meta says
                wamid = settled
            except SendError as error:
                await self._refused(claim, recipient, parts, index, error)
                return
            self._answered(claim.sender, recipient)
            if not await self._record(claim, index, wamid, len(parts)):
                return

    async def _send_part(self, claim: Claim, recipient: str, part: Part, index: int) -> str:
        """Send one part; a media part by the id of its upload when uploads are on, uploaded
        once more if Meta refuses the id it was given (expired or deleted)."""
        if self._media is None or part.url is None:
            return await self._send(claim, recipient, part, index)
        by_id = await self._media.prepared(part, claim.sender)
        try:
            return await self._send(claim, recipient, by_id, index)
        except SendError as error:
            if not refuses_media_id(error):
                raise
            assert by_id.media_id is not None
            logger.info(
                "%s: part %d: Meta refused media %s (%s); uploading it again",
                _named(claim),
                index + 1,
                by_id.media_id,
                error,
            )
            await self._media.forget(by_id.media_id)
            again = await self._media.prepared(part, claim.sender, fresh=True)
            return await self._send(claim, recipient, again, index)

    async def _media_later(self, claim: Claim, index: int, exc: MediaUnreachable) -> None:
        """The link's host did not answer: the row tries again later, its attempt counted (the
        sender is fine: no outage), and fails once its attempts are spent."""
        reason = f"media part {index + 1}: {exc}"
        if claim.attempts >= self.settings.max_attempts:
            await self._fail(claim, f"{reason} (gave up after {claim.attempts} attempts)")
        else:
            await self._reschedule(
                claim, retry_delay(claim.attempts, self.settings.retry_delay), reason
            )

    async def _quiet(
        self, claim: Claim, recipient: str, own_hours: str | None, own_zone: str | None
    ) -> bool:
        """Inside the recipient's quiet hours (the row's own, else the daemon's; in the row's
        time zone, else the number's), the row waits for the opening (its attempt given back, no
        request), or fails `expired` when its deadline comes first. True: it was."""
        hours = policy_quiet.row_quiet_hours(own_hours, self.settings.quiet_hours)
        zone = policy_quiet.row_zone(own_zone)
        now = self.clock()
        quiet = policy_quiet.quiet_until(hours, recipient, now, zone)
        if quiet is None:
            return False
        opens, local = quiet
        delay = max((opens - now).total_seconds(), 0.0)
        loop = asyncio.get_running_loop()
        if claim.deadline is not None and loop.time() + delay >= claim.deadline:
            await self._fail(claim, f"expired: its deadline comes before quiet hours end ({local})")
            return True
        # It keeps its error, so it holds its lane: the recipient's later rows are quiet too.
        await self._reschedule(claim, delay, f"quiet hours until {local}", give_back=1)
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
                conn, recipient, configured=self.settings.daily_limit, category=ruling.category
            )
        if verdict.granted:
            return False
        wait = MAX_RETRY_DELAY
        if verdict.frees_at is not None:
            wait = max((verdict.frees_at - datetime.now(UTC)).total_seconds(), 1.0)
        loop = asyncio.get_running_loop()
        if claim.deadline is not None and loop.time() + wait >= claim.deadline:
            await self._fail(
                claim, f"expired: its deadline comes before a place frees ({verdict.reason})"
            )
            return True
        logger.info("message %d waits: %s", claim.id, verdict.reason)
        await self._reschedule(claim, min(wait, MAX_RETRY_DELAY), verdict.reason, give_back=1)
        return True

    async def _record(self, claim: Claim, index: int, wamid: str, count: int) -> bool:
        """Write an accepted part; False when the row must not go on (lease lost, refused)."""
        part = AcceptedPart(claim.id, claim.token, index, wamid, index == count - 1)
        claim.fallback_on_131047 = False  # a part went: its fallback can no longer replace it
        claim.settling = part.final  # its place in flight can go to the next row meanwhile
        try:
            if await self._recorder.record(part):
                return True
            logger.warning(
                "message %d: stopping: its lease was lost, or a status webhook failed it", claim.id
            )
        except RecordFailed as exc:
            await self._fail(claim, str(exc))
        return False

    async def _send_once(self, claim: Claim, recipient: str, part: Part, index: int) -> str:
        """One request, its outcome appended to the row's history and to the metrics."""
        callback = callback_data(self._installation, claim.id, index)
        sender = claim.sender
        # Every request, retries too, takes a slot; a row with a deadline waits no longer.
        deadline = asyncio.timeout_at(claim.deadline)
        try:
            async with deadline:
                await self._rate.acquire(sender)
        except TimeoutError:
            if not deadline.expired():
                raise
            raise Expired from None
        # Last, after every wait (a slot, pacing, a database away): the lease must outlast the
        # request, or another daemon may have taken the row over and sent this part; and the
        # deadline must not have passed meanwhile.
        if not await self._lease_holds(claim, recheck=claim.requests > 0):
            raise LeaseLost
        if claim.deadline is not None and asyncio.get_running_loop().time() >= claim.deadline:
            raise Expired
        claim.requests += 1
        started = time.perf_counter()
        try:
            wamid = await self._api.send(recipient, part, callback, sender)
        except SendError as error:
            seconds = time.perf_counter() - started
            self.pace.observe(seconds)
            error_class = classify(error).value
            self._metrics.requested(seconds, error, error_class)
            self._events.record(
                Event(
                    claim.id,
                    index,
                    error_class,
                    http_status=error.http_status,
                    error_code=error.code if isinstance(error, GraphError) else None,
                    detail=str(error),
                    latency_ms=seconds * 1000,
                )
            )
            raise
        seconds = time.perf_counter() - started
        self.pace.observe(seconds)
        self._metrics.requested(seconds, None)
        self._metrics.accepted(part.type)
        self._events.record(
            Event(claim.id, index, "accepted", 200, detail=wamid, latency_ms=seconds * 1000)
        )
        return wamid

    async def _reconciled(self, claim: Claim, recipient: str, index: int, count: int) -> str | None:
        """The wamid of a send in doubt, from a status webhook naming its callback data, if one
        comes within the reconcile window: then the part was accepted and is not sent again.
        Only a status of this installation (the receiver keeps that apart), about this row's
        recipient and from after the row was created counts: anything else says nothing about
        our request."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.reconcile_window
        if claim.deadline is not None:
            deadline = min(deadline, claim.deadline)  # an expiring row does not wait past it
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
                    _named(claim),
                    index + 1,
                    count,
                    wamid,
                    extra={**_part(index, count), "wamid": wamid},
                )
                self._events.record(Event(claim.id, index, "reconciled", detail=wamid))
                return wamid
            if loop.time() >= deadline or claim.lost:
                return None
            await asyncio.sleep(min(RECONCILE_POLL, max(0.0, deadline - loop.time())))

    async def crashed(self, claim: Claim, exc: Exception) -> None:
        """A bug while delivering: the row retries as after a transient error (the attempt
        counts), so even a row that always crashes ends failed instead of looping forever."""
        if is_connection_error(exc) or self.abandon:
            return  # the lease runs out and the row is claimed again
        reason = f"internal error: {short_error(exc)}"
        if claim.attempts >= self.settings.max_attempts:
            await self._fail(claim, f"{reason} (gave up after {claim.attempts} attempts)")
        else:
            delay = retry_delay(claim.attempts, self.settings.retry_delay)
            await self._reschedule(claim, delay, reason)

    async def extend_leases(self, claims: list[Claim]) -> None:
        """Extend the leases of `claims`; a claim whose row is no longer ours is marked lost."""
        now = asyncio.get_running_loop().time()
        async with self._pool.connect() as conn:
            rows = await fetch_all(
                conn, store.EXTEND_LEASES, {**leases(claims), "lease": self.settings.lease_seconds}
            )
        ours = {int(row["id"]) for row in rows}
        for claim in claims:
            if claim.id in ours:
                claim.lease_until = now + self.settings.lease_seconds
            else:
                claim.lost = True

    async def _lease_holds(self, claim: Claim, *, recheck: bool = False) -> bool:
        """True when the lease outlasts the next request: extended first when it might not, or
        when `recheck` asks whether the row is still ours and sending (a status webhook may have
        failed an earlier part meanwhile: then nothing more of it is sent)."""
        left = claim.lease_until - asyncio.get_running_loop().time()
        if not claim.lost and (recheck or left <= self.settings.request_timeout + LEASE_MARGIN):
            await persistently(
                self.extend_leases,
                [claim],
                what=f"extending the lease of message {claim.id}",
                give_up=lambda: self.abandon,
            )
        return not claim.lost

    def templates_held(self) -> list[str]:
        """The templates Meta has paused, whose rows wait now."""
        now = time.monotonic()
        return [name for name, until in list(self._template_holds.items()) if until > now]

    def _template_held(self, part: Part) -> float:
        """Seconds left of Meta's pause of this part's template (0: not paused)."""
        if part.template is None or not self._template_holds:
            return 0.0
        until = self._template_holds.get(str(part.template.get("name")), 0.0)
        return max(0.0, until - time.monotonic())

    async def _api_answers(self, claim: Claim) -> bool:
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

    async def _give_back_onset(self, gate: Gate) -> None:
        """An outage uses no attempts: give back those its first failures used, before it was
        recognised as one (rows rescheduled for a retry then)."""
        await self._undo_failures(gate.take_onset_ended())
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

    async def _undo_failures(self, rows: list[int]) -> None:
        """Rows failed for good by an outage's first failures (their last attempt, used before
        the outage was recognised) go back to pending with that attempt returned: an outage
        fails no row. A row changed since (retried, cancelled, failed by Meta) stays as it is."""
        if not rows:
            return
        try:
            async with self._pool.connect() as conn:
                undone = await fetch_all(conn, store.UNDO_ONSET_FAILURES, {"ids": rows})
        except Exception as exc:
            if not is_connection_error(exc):
                raise
            logger.warning(
                "%d rows failed by the outage's onset stay failed (%s)", len(rows), short_error(exc)
            )
            return
        for row in undone:
            self.failed -= 1
            self._events.record(
                Event(int(row["id"]), None, "unfailed", detail="its failure began an API outage")
            )
        if undone:
            logger.info(
                "%d row(s) failed by the first failures of the outage are pending again",
                len(undone),
            )

    def _look_up_later(self, sender: str, failure: str) -> None:
        """After a send without an answer, look the phone number up, apart from the row (whose
        outcome must not wait for it): unanswered too, and no answer since, is an outage."""
        gate = self._senders.gate(sender)
        answers = gate.answers

        async def look_up() -> None:
            down = await self._api.unreachable(sender)
            if down is None or self.abandon:  # a stop closes the HTTP session
                return
            if gate.unreachable(f"{failure}; {down}", answers=answers):
                await self._give_back_onset(gate)

        task = asyncio.create_task(look_up(), name=f"outbox-lookup-{sender}")
        self._lookups.add(task)
        task.add_done_callback(self._lookups.discard)

    def stop_lookups(self) -> None:
        """At shutdown: the outage checks under way no longer matter."""
        for task in self._lookups:
            task.cancel()

    def _answered(self, sender: str, recipient: str) -> None:
        """The API answered: the sender works, whatever it said about this message."""
        self._limiter.succeeded(sender, recipient)
        self._senders.answered(sender)

    async def _learn_template(self, part: Part, status: str, hold: float) -> None:
        """Meta's answer about a template (132015 paused, 132016 disabled) goes into the
        catalogue, when it has the template: every daemon's next rows of it are ruled by it."""
        template = part.template or {}
        language = template.get("language")
        code = language.get("code") if isinstance(language, dict) else None
        if isinstance(template.get("name"), str) and isinstance(code, str):
            async with self._pool.connect() as conn:
                await template_holds_store.learn_status(conn, template["name"], code, status, hold)

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
            await self._reschedule(claim, 0.0, reason, give_back=1, code=code)
            return ""
        return (
            policy_decide.WINDOW_CLOSED
            if code == policy_receiver.REENGAGEMENT
            else policy_decide.OPTED_OUT
        )

    async def _refused(
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
                await self._give_back_onset(gate)
            else:
                self._look_up_later(claim.sender, str(error))
        elif error_class is not ErrorClass.ACCOUNT:
            self._senders.answered(claim.sender)
        code = error.code if isinstance(error, GraphError) else None
        outcome = decide(
            error,
            attempts=claim.attempts,
            max_attempts=self.settings.max_attempts,
            base_delay=self.settings.retry_delay,
            pair_strikes=self._limiter.strikes(claim.sender, recipient),
            in_doubt=claim.in_doubt,
            outage=outage,
            sender_strikes=self._limiter.spam_strikes(claim.sender, MAX_SPAM_HOLD),
        )
        doubt = 1 if error_class is ErrorClass.IN_DOUBT else 0
        where = f"{_named(claim)}: part {index + 1}/{len(parts)}"
        fields: dict[str, Any] = {**_part(index, len(parts)), "code": code}
        if isinstance(outcome, WaitOutage):
            # A probe that failed steps aside until just after the next probe, so that probe
            # tries another row: one row that always fails must not keep the sender in an outage.
            delay = gate.seconds_to_probe() + 1.0 if claim.probe else 0.0
            reason = f"waiting out an API outage: {outcome.reason}"
            logger.debug("%s %s", where, reason, extra=fields)  # the outage has its own line
            await self._reschedule(claim, delay, reason, give_back=1, doubt=outcome.doubt)
        elif isinstance(outcome, Retry):
            logger.info(
                "%s: %s; retry in %.1fs (attempt %d of %d)",
                where,
                outcome.reason,
                outcome.delay,
                claim.attempts,
                self.settings.max_attempts,
                extra={**fields, "delay": round(outcome.delay, 3), "attempts": claim.attempts},
            )
            if no_answer:  # before any await: an outage recognised meanwhile gives it back
                gate.spent(claim.id)
            await self._reschedule(claim, outcome.delay, outcome.reason, code=code)
        elif isinstance(outcome, Doubt):
            logger.warning(
                "%s in doubt (Meta may have accepted it): %s; sending again in %.1fs",
                where,
                outcome.reason,
                outcome.delay,
                extra={**fields, "delay": round(outcome.delay, 3), "in_doubt": claim.in_doubt + 1},
            )
            reason = f"in doubt: {outcome.reason}"
            await self._reschedule(claim, outcome.delay, reason, give_back=1, doubt=1)
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
                            "until": _until(min(outcome.delay, MAX_SENDER_HOLD)),
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
            await self._reschedule(claim, outcome.delay, reason, give_back=1, code=code)
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
                        "until": _until(held),
                    },
                )
            reason = f"held: {outcome.reason}"
            delay = min(held, MAX_RETRY_DELAY)  # a row waits an hour at most: then it looks again
            logger.debug("%s waits %.0fs for the sender's hold", where, delay, extra=fields)
            await self._reschedule(claim, delay, reason, give_back=1, code=code)
        elif isinstance(outcome, HoldTemplate):
            name = str((part.template or {}).get("name"))
            if self._template_held(part) <= 0:  # one line per pause, not per row that hits it
                logger.warning(
                    "template %s paused by Meta; its messages wait %.0fs",
                    name,
                    outcome.delay,
                    extra={
                        "template": name,
                        "code": code,
                        "reason": outcome.reason,
                        "until": _until(outcome.delay),
                    },
                )
            self._template_holds[name] = time.monotonic() + outcome.delay
            await self._learn_template(part, PAUSED, outcome.delay)
            reason = f"waiting: template paused by Meta: {outcome.reason}"
            logger.debug("%s waits for its template", where, extra=fields)
            await self._reschedule(claim, outcome.delay, reason, give_back=1, code=code)
        elif isinstance(outcome, Defer):
            await self._defer(claim, outcome, code, fields)
        elif isinstance(outcome, Fail):
            if code == TEMPLATE_DISABLED_CODE:  # the template's next rows fail with no request
                await self._learn_template(part, DISABLED, 0.0)
            reason = f"{prefix}: {outcome.reason}" if prefix else outcome.reason
            failed_part = (index, len(parts))
            await self._fail(claim, reason, code=code, doubt=doubt, part=failed_part)
            if no_answer and not doubt:  # its last attempt may be an outage's first failure
                if gate.state is State.OUTAGE:  # recognised while it was being failed
                    await self._undo_failures([claim.id])
                else:
                    gate.ended(claim.id)
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
            await self._release(claim)

    async def _defer(
        self, claim: Claim, outcome: Defer, code: int | None, fields: dict[str, Any]
    ) -> None:
        """Meta's per-user marketing limit (131049): the row waits a day or more, not failed,
        unless its deadline comes first."""
        loop = asyncio.get_running_loop()
        if claim.deadline is not None and loop.time() + outcome.delay >= claim.deadline:
            reason = f"expired: its deadline comes before Meta takes it again ({outcome.reason})"
            await self._fail(claim, reason, code=code)
            return
        logger.info(
            "%s: %s; deferred %.0fh (Meta's per-user marketing limit)",
            _named(claim),
            outcome.reason,
            outcome.delay / 3600,
            extra={**fields, "delay": round(outcome.delay, 3)},
        )
        await self._reschedule(claim, outcome.delay, f"deferred: {outcome.reason}", code=code)

    # --- writes: each names the claim's lease token -----------------------------------------

    async def _reschedule(
        self,
        claim: Claim,
        delay: float,
        error: str,
        *,
        give_back: int = 0,
        doubt: int = 0,
        code: int | None = None,
    ) -> None:
        await self._write(
            store.RESCHEDULE,
            claim,
            delay=delay,
            give_back=give_back,
            doubt=doubt,
            error=error,
            code=code,
        )

    async def _fail(
        self,
        claim: Claim,
        error: str,
        *,
        code: int | None = None,
        doubt: int = 0,
        part: tuple[int, int] | None = None,
    ) -> None:
        """Fail the row for good; `part` is the (index, count) of the part that failed it."""
        self._events.record(Event(claim.id, None, "failed", error_code=code, detail=error))
        if await self._write(store.MARK_FAILED, claim, error=error, code=code, doubt=doubt):
            index, count = part if part is not None else (None, None)
            where = "" if index is None else f" at part {index + 1}/{count}"
            logger.info(
                "%s failed%s: %s",
                _named(claim),
                where,
                clean(error),
                extra={**_part(index, count), "code": code, "reason": clean(error)},
            )

    async def _release(self, claim: Claim) -> None:
        async def release() -> None:
            async with self._pool.connect() as conn:
                await fetch_all(conn, store.RELEASE, leases([claim]))

        await persistently(release, what="releasing a row", give_up=lambda: self.abandon)

    async def _write(self, statement: sa.TextClause, claim: Claim, **params: Any) -> bool:
        """Write the row's outcome, patiently while the database is away. A write refused for
        its data fails the row with the database's reason instead. A row this write fails is
        counted once it is written (not when our lease was lost meanwhile). True when the row
        took this outcome (False: it was no longer ours, or took the fallback failure)."""
        if "error" in params:
            params["error"] = clean(params["error"])

        async def write(statement: sa.TextClause, params: dict[str, Any]) -> bool:
            async with self._pool.connect() as conn:
                rows = await fetch_all(
                    conn, statement, {"id": claim.id, "token": claim.token, **params}
                )
            return bool(rows)

        what = f"updating message {claim.id}"
        try:
            changed = await persistently(
                write, statement, params, what=what, give_up=lambda: self.abandon
            )
        except Exception as exc:
            if is_connection_error(exc):
                raise
            reason = clean(f"could not record the outcome: {short_error(exc)}")
            logger.error("message %d: %s", claim.id, reason)
            fallback = {"error": reason, "code": None, "doubt": params.get("doubt", 0)}
            changed = await persistently(
                write, store.MARK_FAILED, fallback, what=what, give_up=lambda: self.abandon
            )
            if changed:
                self._metrics.failed.inc()
                self.failed += 1
            return False
        if changed and statement is store.MARK_FAILED:
            self._metrics.failed.inc()
            self.failed += 1
        return bool(changed)
