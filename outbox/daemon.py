"""The delivery loop: claim due rows, send their parts in order, record each result.

Invariants: a row's accepted parts are written before its next part is sent; every write after
the claim names the claim's lease token; a stopped daemon leaves no row `sending` with a live
lease (it finishes, or gives rows back); throttles and pauses never use up attempts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any

import aiohttp
import backoff
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from outbox import migrate, store
from outbox.connections import fetch_all, fetch_one
from outbox.database import create_engine, persistently, resolve_dsn, short_error
from outbox.errors import ConfigurationError, GraphError, InvalidMessage, SendError
from outbox.limiter import RateLimiter
from outbox.listener import NotificationListener
from outbox.recorder import AcceptedPart, PartRecorder
from outbox.retry import ErrorClass, Fail, Pause, Retry, Throttle, classify, decide, expo_delays
from outbox.settings import Settings
from outbox.validation import normalize_media, normalize_recipient, normalize_text
from outbox.whatsapp import CloudAPI, parts_of

logger = logging.getLogger("outbox.daemon")
EXIT_PAUSED = 3
MAX_INLINE_PACING = 2.0  # wait this long in-process for a rate slot; longer: reschedule


@dataclass(frozen=True)
class Claim:
    """A row this daemon holds the lease of."""

    id: int
    recipient: str
    message: str | None
    media: Any
    accepted: int
    attempts: int
    token: uuid.UUID
    probe: bool = False  # claimed while paused, to find out whether sending works again


def _leases(claims: list[Claim]) -> dict[str, list[Any]]:
    """The (row id, lease token) pairs of claims, as the array parameters store.py expects."""
    return {"ids": [c.id for c in claims], "tokens": [c.token for c in claims]}


class Daemon:
    """Delivers committed rows until stop() (or, with drain, until nothing is left to do)."""

    def __init__(self, settings: Settings, *, drain: bool = False) -> None:
        self.settings = settings
        self.drain = drain
        self.paused_reason: str | None = None
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._in_flight: dict[int, Claim] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._probe_at = 0.0
        self._exit_code = 0
        self.limiter = RateLimiter(settings.rate, settings.pair_burst, settings.pair_interval)

    def stop(self) -> None:
        """Stop claiming; in-flight sends finish (bounded), the rest go back to pending."""
        self._stopping.set()
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    def health(self) -> dict[str, Any]:
        return {
            "status": "paused" if self.paused_reason else "ok",
            "paused_reason": self.paused_reason,
            "in_flight": len(self._in_flight),
        }

    # --- lifecycle -------------------------------------------------------------------------

    def _check_configuration(self) -> tuple[str, str]:
        token, phone = self.settings.access_token, self.settings.phone_number_id
        if not token:
            raise ConfigurationError("META_ACCESS_TOKEN is required to send")
        if not phone:
            raise ConfigurationError("META_PHONE_NUMBER_ID is required to send")
        return token, phone

    async def _check_schema(self, engine: AsyncEngine) -> None:
        async with engine.connect() as conn:
            current = await conn.run_sync(migrate.current_revision)
        head = migrate.head_revision()
        if current != head:
            raise ConfigurationError(
                f"the outbox schema is at revision {current or 'none'}, not {head}: "
                "run `outbox migrate` first"
            )

    async def run(self) -> int:
        """Deliver until stopped; 0, or 3 when a drain ended because sending is paused."""
        token, phone = self._check_configuration()
        settings = self.settings
        dsn = await resolve_dsn(settings)
        engine = create_engine(dsn, pool_size=4)
        try:
            await self._check_schema(engine)
            connector = aiohttp.TCPConnector(limit=settings.concurrency)
            async with aiohttp.ClientSession(connector=connector) as http:
                api = CloudAPI(
                    http,
                    base_url=settings.graph_api_url,
                    version=settings.graph_api_version,
                    phone_number_id=phone,
                    access_token=token,
                    timeout=settings.request_timeout,
                )
                await self._run_with(engine, dsn, api)
        finally:
            await engine.dispose()
        return self._exit_code

    async def _run_with(self, engine: AsyncEngine, dsn: str, api: CloudAPI) -> None:
        self._engine = engine
        # Quick in-process retries of transient failures: they belong to one attempt.
        self._send = backoff.on_exception(
            backoff.expo,
            SendError,
            max_tries=self.settings.quick_retries,
            giveup=lambda e: classify(e) is not ErrorClass.TRANSIENT,  # type: ignore[arg-type]
            factor=self.settings.quick_retry_delay,
            max_value=5,
            logger=None,
        )(api.send)
        self._recorder = PartRecorder(engine, self.settings.lease_seconds)
        self._recorder.start()
        listener = NotificationListener(dsn, self.wake)
        listener.start()
        leases = asyncio.create_task(self._keep_leases(), name="outbox-leases")
        logger.info("delivering to %s (concurrency %d)", api.url, self.settings.concurrency)
        try:
            await self._loop()
        finally:
            await self._shut_down()
            leases.cancel()
            await asyncio.gather(leases, return_exceptions=True)
            await listener.stop()
            await self._recorder.close()

    async def _shut_down(self) -> None:
        if self._tasks:
            logger.info("waiting for %d messages in flight", len(self._tasks))
            await asyncio.wait(self._tasks, timeout=self.settings.shutdown_timeout)
        # Snapshot first: a cancelled task forgets its claim. A row that finished meanwhile no
        # longer carries our token, so releasing it changes nothing.
        claims = list(self._in_flight.values())
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if claims:
            await persistently(self._release, claims, what="releasing rows", max_tries=5)
            logger.info("released %d unfinished messages back to pending", len(claims))

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        failure_delays = expo_delays(0.5, 10.0)
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                claimed = await self._claim_some(loop.time())
                if self.drain and not self._tasks and not claimed and await self._finished():
                    logger.info("drained: nothing left to send")
                    return
                timeout = await self._idle_timeout(claimed, loop.time())
                failure_delays = expo_delays(0.5, 10.0)
            except Exception as exc:
                timeout = next(failure_delays)
                logger.warning(
                    "database unavailable (%s); retrying in %.1fs", short_error(exc), timeout
                )
            if timeout > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)

    async def _claim_some(self, now: float) -> int:
        free = self.settings.concurrency - len(self._tasks)
        if self.paused_reason is not None:
            if now < self._probe_at or self._tasks:
                return 0
            self._probe_at = now + self.settings.pause_probe
            free = 1  # the probe: one real send
        if free <= 0:
            return 0
        token = uuid.uuid4()
        async with self._engine.begin() as conn:
            rows = await fetch_all(
                conn,
                store.CLAIM_BATCH,
                {
                    "limit": min(free, self.settings.batch_size),
                    "token": token,
                    "lease": self.settings.lease_seconds,
                },
            )
        for row in rows:
            claim = Claim(
                id=row["id"],
                recipient=row["recipient"],
                message=row["message"],
                media=json.loads(row["media"]),
                accepted=row["accepted"],
                attempts=row["attempts"],
                token=token,
                probe=self.paused_reason is not None,
            )
            self._in_flight[claim.id] = claim
            task = asyncio.create_task(self._deliver(claim), name=f"outbox-row-{claim.id}")
            self._tasks.add(task)
            task.add_done_callback(self._done)
        return len(rows)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._wake.set()
        if not task.cancelled() and task.exception() is not None:
            logger.error("delivery task failed", exc_info=task.exception())

    async def _idle_timeout(self, claimed: int, now: float) -> float:
        """How long to sleep when no notification comes."""
        if self.paused_reason is not None:
            return max(0.0, self._probe_at - now) if not self._tasks else 1.0
        if len(self._tasks) >= self.settings.concurrency:
            return self.settings.poll_interval  # nothing to claim; a finished row wakes us
        if claimed:
            return 0.0  # there may be more due rows right now
        async with self._engine.connect() as conn:
            row = await fetch_one(conn, store.SECONDS_TO_NEXT_DUE)
        seconds = next(iter(row.values())) if row else None
        poll = self.settings.poll_interval
        return poll if seconds is None else min(poll, max(float(seconds), 0.05))

    async def _finished(self) -> bool:
        async with self._engine.connect() as conn:
            row = await fetch_one(conn, store.HAS_UNFINISHED_WORK)
        return row is not None and not next(iter(row.values()))

    async def _keep_leases(self) -> None:
        while True:
            await asyncio.sleep(self.settings.lease_seconds / 3)
            claims = list(self._in_flight.values())
            if not claims:
                continue
            try:
                async with self._engine.begin() as conn:
                    await fetch_all(
                        conn,
                        store.EXTEND_LEASES,
                        {**_leases(claims), "lease": self.settings.lease_seconds},
                    )
            except Exception as exc:
                logger.warning("cannot extend leases (%s)", short_error(exc))

    # --- one row ---------------------------------------------------------------------------

    async def _deliver(self, claim: Claim) -> None:
        try:
            await self._send_parts(claim)
        finally:
            self._in_flight.pop(claim.id, None)

    async def _send_parts(self, claim: Claim) -> None:
        try:
            recipient = normalize_recipient(claim.recipient)
            parts = parts_of(normalize_text(claim.message), normalize_media(claim.media))
            if not parts:
                raise InvalidMessage("message", "a message needs text or at least one media part")
        except InvalidMessage as exc:
            await self._write(store.MARK_FAILED, claim, error=f"invalid row: {exc}", code=None)
            return
        if claim.accepted >= len(parts):
            await self._write(store.FINISH_ACCEPTED, claim)
            return
        for index in range(claim.accepted, len(parts)):
            if self.paused_reason is not None and not claim.probe:
                await persistently(self._release, [claim], what="releasing a row")
                return
            wait = self.limiter.reserve(recipient, MAX_INLINE_PACING)
            if wait is None:
                await self._write(
                    store.RESCHEDULE,
                    claim,
                    delay=self.settings.pair_interval,
                    give_back=1,
                    error="paced: waiting for a rate slot",
                    code=None,
                )
                return
            await asyncio.sleep(wait)
            try:
                wamid = await self._send(recipient, parts[index], f"outbox:{claim.id}:{index}")
            except SendError as error:
                await self._refused(claim, recipient, error)
                return
            self._sent_ok(recipient)
            final = index == len(parts) - 1
            part = AcceptedPart(claim.id, claim.token, index, wamid, final)
            if not await self._recorder.record(part):
                logger.warning("message %d: lease lost to another worker; stopping", claim.id)
                return

    def _sent_ok(self, recipient: str) -> None:
        self.limiter.succeeded(recipient)
        if self.paused_reason is not None:
            logger.warning("sending resumed after a successful probe")
            self.paused_reason = None
            self.wake()

    async def _refused(self, claim: Claim, recipient: str, error: SendError) -> None:
        outcome = decide(
            error,
            attempts=claim.attempts,
            max_attempts=self.settings.max_attempts,
            base_delay=self.settings.retry_delay,
            pair_strikes=self.limiter.strikes(recipient),
        )
        code = error.code if isinstance(error, GraphError) else None
        if isinstance(outcome, Retry):
            logger.info("message %d: %s; retry in %.1fs", claim.id, outcome.reason, outcome.delay)
            await self._write(
                store.RESCHEDULE,
                claim,
                delay=outcome.delay,
                give_back=0,
                error=outcome.reason,
                code=code,
            )
        elif isinstance(outcome, Throttle):
            if outcome.recipient_only:
                self.limiter.penalize(recipient, outcome.delay)
            else:
                self.limiter.hold_all(outcome.delay)
            await self._write(
                store.RESCHEDULE,
                claim,
                delay=outcome.delay,
                give_back=1,
                error=f"throttled: {outcome.reason}",
                code=code,
            )
        elif isinstance(outcome, Fail):
            logger.info("message %d failed: %s", claim.id, outcome.reason)
            await self._write(store.MARK_FAILED, claim, error=outcome.reason, code=code)
        else:
            self._pause(outcome)
            await persistently(self._release, [claim], what="releasing a row")

    def _pause(self, outcome: Pause) -> None:
        if self.paused_reason is None:
            logger.error(
                "sending paused: %s; probing every %.0fs", outcome.reason, self.settings.pause_probe
            )
        self.paused_reason = outcome.reason
        self._probe_at = asyncio.get_running_loop().time() + self.settings.pause_probe
        if self.drain:
            self._exit_code = EXIT_PAUSED
            self.stop()

    # --- writes ----------------------------------------------------------------------------

    async def _write(self, statement: sa.TextClause, claim: Claim, **params: Any) -> None:
        async def write() -> None:
            async with self._engine.begin() as conn:
                await fetch_all(conn, statement, {"id": claim.id, "token": claim.token, **params})

        await persistently(write, what=f"updating message {claim.id}")

    async def _release(self, claims: list[Claim]) -> None:
        async with self._engine.begin() as conn:
            await fetch_all(conn, store.RELEASE, _leases(claims))
        for claim in claims:
            self._in_flight.pop(claim.id, None)
