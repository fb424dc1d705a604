"""The delivery loop: claim due rows, hand each to a RowSender, keep leases, report state.

Invariants: a row's accepted parts are written before its next part is sent, and before anything
new is claimed; a daemon never claims a row it is still sending; every write after the claim names
the claim's lease token; a stopped daemon leaves no row `sending` with a live lease (it finishes,
or gives rows back) and stops within a bound whatever the database does; throttles, pauses and
outages never use up attempts; while sending is held, paused or down, nothing is claimed but a
probe.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp

from outbox.callbacks import installation_id
from outbox.cancel import cancel_and_wait
from outbox.database import asyncpg_dsn, persistently, resolve_dsn
from outbox.delivery.claim import Claim, Claimer
from outbox.delivery.events import EventLog
from outbox.delivery.flight import InFlight
from outbox.delivery.lease import Leases
from outbox.delivery.limiter import RateLimiter
from outbox.delivery.listen import NotificationListener
from outbox.delivery.paused_templates import PausedTemplates
from outbox.delivery.pauses import PauseWatcher
from outbox.delivery.rate import SharedRate
from outbox.delivery.record import PartRecorder
from outbox.delivery.report import Condition, Report
from outbox.delivery.send import RowSender
from outbox.delivery.senders import Senders
from outbox.delivery.shutdown import left, shut_down
from outbox.delivery.startup import STATEMENT_TIMEOUT, StartupChecks
from outbox.delivery.sweep import ExpirySweep
from outbox.delivery.turn import Turns
from outbox.media.ids import MediaIds
from outbox.metrics.backlog import BacklogGauges
from outbox.metrics.daemon import DaemonMetrics
from outbox.metrics.health import NumberHealth
from outbox.pool import Pool
from outbox.settings import Settings
from outbox.whatsapp_client import CloudAPI

logger = logging.getLogger("outbox.daemon")
EXIT_PAUSED = 3
CLOSE_TIMEOUT = 3.0  # a database that swallows everything does not hold up the exit


class Daemon:
    """Delivers committed rows until stop() (or, with drain, until nothing is left to do).
    `metrics.registry` holds its Prometheus metrics, for an app that runs it to serve."""

    def __init__(self, settings: Settings, *, drain: bool = False, check_api: bool = False) -> None:
        self.settings = settings
        self.drain = drain
        # Refuse to start when the Graph API's host cannot be connected to (`outbox run` does;
        # an app running the daemon decides for itself).
        self._check_api = check_api
        self._stop_reason: str | None = None
        self._started_at: float | None = None
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.senders = Senders(settings.phone_number_id or "", settings.pause_probe)
        self.limiter = RateLimiter(settings.pair_burst, settings.pair_interval)
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self.in_flight = InFlight(self.wake)
        self._exit_code = 0
        self._condition = Condition()
        # The wall clock quiet hours are judged by; tests set their own before run().
        self.clock: Callable[[], datetime] = lambda: datetime.now(UTC)
        self._rows: RowSender | None = None
        self._templates = PausedTemplates()
        self.metrics = DaemonMetrics(
            in_flight=lambda: len(self.in_flight), paused_reasons=self.paused_reasons
        )
        # What the webhook receiver stored about the numbers: /metrics, and /readyz's reason.
        self.number_health = NumberHealth(settings.daily_limit)
        self.metrics.registry.register(self.number_health)
        self._report = Report(
            self.id,
            self.senders,
            self.limiter,
            self.in_flight,
            self.number_health,
            self._condition,
            self._templates.names,
        )

    def stop(self, reason: str = "stop() was called") -> None:
        """Stop claiming; in-flight sends finish (bounded), the rest go back to pending.
        `reason` is what the stop line says (the first reason given wins)."""
        if self._stop_reason is None:
            self._stop_reason = reason
        self._stopping.set()
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    @property
    def paused_reason(self) -> str | None:
        """Why sending is paused: by an operator, else by an account error (the token's, else
        the first sender's)."""
        return self._report.paused_reason

    def paused_reasons(self) -> set[str]:
        """Why sending is stopped now, in outbox_paused's words (see report.py)."""
        return self._report.paused_reasons()

    def health(self) -> dict[str, Any]:
        """The sending state, liveness and readiness /healthz and /readyz serve (report.py)."""
        return self._report.health()

    def _claims(self) -> list[Claim]:
        return list(self.in_flight.claims.values())

    async def run(self) -> int:
        """Deliver until stopped; 0, or 3 when a drain ended because sending is paused."""
        checks = StartupChecks(self.settings, self._stopping, self._condition)
        token, phone = checks.credentials()
        settings = self.settings
        loop = type(asyncio.get_running_loop())
        logger.debug("starting with %r on %s.%s", settings, loop.__module__, loop.__name__)
        dsn = await resolve_dsn(settings)
        pool = Pool(
            dsn,
            size=4,
            command_timeout=STATEMENT_TIMEOUT,
            application_name="outbox-run",
            prepared=settings.prepared_statements,
        )
        try:
            if not await checks.schema(pool):
                return self._exit_code  # stopped before the database came back: nothing claimed
            if self._check_api and not await checks.api():
                return self._exit_code
            await self._run_on(pool, dsn, token, phone)
        finally:
            await pool.close(CLOSE_TIMEOUT)
        return self._exit_code

    async def _run_on(self, pool: Pool, dsn: str, token: str, phone: str) -> None:
        """The checks passed: deliver through `pool` until stopped."""
        settings = self.settings
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
            media = (
                MediaIds(
                    pool,
                    api,
                    SharedRate(pool, settings.upload_rate),
                    on_upload=lambda sender: self.metrics.media_uploads.labels(sender).inc(),
                )
                if settings.media_mode == "upload"
                else None
            )
            try:
                await self._run_with(pool, dsn, api, media)
            finally:
                if media is not None:
                    await media.close()

    async def _run_with(
        self, pool: Pool, dsn: str, api: CloudAPI, media: MediaIds | None = None
    ) -> None:
        self._recorder = PartRecorder(
            pool,
            self.settings.lease_seconds,
            on_idle=self.wake,
            pair_interval=self.settings.pair_interval,
            default_sender=self.senders.default,
        )
        self._recorder.start()
        events = EventLog(pool)
        events.start()
        self._rows = RowSender(
            self.settings,
            pool,
            api,
            self._recorder,
            self.senders,
            self.limiter,
            self._on_pause,
            events,
            self.metrics,
            installation=await installation_id(pool),
            clock=self.clock,
            media=media,
            templates=self._templates,
        )
        claimer = Claimer(
            self.settings,
            pool,
            self.senders,
            self.limiter,
            self.in_flight,
            self._recorder,
            self._rows,
            drain=self.drain,
        )
        turns = Turns(
            self.settings,
            pool,
            claimer,
            self.in_flight,
            self._recorder,
            self._rows,
            self.senders,
            self.limiter,
            ExpirySweep(self.settings, pool, self.metrics),
            self._condition,
            drain=self.drain,
            stopping=self._stopping,
            wake=self._wake,
            on_drained=self._on_drained,
        )
        backlog = BacklogGauges(self.metrics.pending, self.metrics.oldest_pending)
        pauses = PauseWatcher(pool, self.senders.operator, self.wake)
        await persistently(pauses.read, what="reading the operator pauses", max_tries=10)
        listen_dsn = asyncpg_dsn(self.settings.listen_url) if self.settings.listen_url else dsn
        listener = NotificationListener(listen_dsn, self.wake, on_payload=lambda _: pauses.poke())
        listener.start()
        leases = Leases(
            pool, self.settings, give_up=lambda: self._rows is None or self._rows.abandon
        )
        helpers = [
            asyncio.create_task(pauses.run(), name="outbox-operator-pauses"),
            asyncio.create_task(leases.keep(self._claims), name="outbox-leases"),
            asyncio.create_task(self._report.keep_reported(pool), name="outbox-heartbeat"),
            asyncio.create_task(backlog.run(pool), name="outbox-backlog-gauges"),
            asyncio.create_task(self.number_health.run(pool), name="outbox-number-health"),
        ]
        logger.info(
            "delivering to %s (concurrency %d; %s)",
            api.url,
            self.settings.concurrency,
            pool.statements(),
        )
        self._started_at = asyncio.get_running_loop().time()
        try:
            await turns.run()
        finally:
            # One deadline for the whole shutdown, whatever the database does.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.settings.shutdown_timeout
            released, unrecorded = await shut_down(
                pool, self._rows, self._recorder, self.in_flight, deadline
            )
            await cancel_and_wait(helpers)
            await listener.stop()
            await events.close(left(deadline, cap=2.0))
            await self._report.forget(pool, left(deadline, cap=2.0))
            self._log_stop(released, unrecorded)

    def _log_stop(self, released: int, unrecorded: int) -> None:
        """The last line: why the daemon stops, what it leaves behind, what it did."""
        uptime = asyncio.get_running_loop().time() - (self._started_at or 0.0)
        reason = self._stop_reason or "the delivery loop ended"
        rows = self._rows
        assert rows is not None
        logger.info(
            "stopped (%s) after %.0fs: parts accepted %d, messages failed %d; messages in "
            "flight given back to pending %d, accepted parts unrecorded %d; exit %d",
            reason,
            uptime,
            rows.accepted,
            rows.failed,
            released,
            unrecorded,
            self._exit_code,
            extra={
                "reason": reason,
                "uptime_seconds": round(uptime, 1),
                "accepted": rows.accepted,
                "failed": rows.failed,
                "released": released,
                "unrecorded": unrecorded,
                "exit_code": self._exit_code,
            },
        )

    def _on_pause(self) -> None:
        """A token error ends a drain at once: nothing can be sent. One number's account error
        does not: the drain goes on with the others and exits 3 when only its rows are left."""
        if self.drain and not self.senders.token.open:
            self._exit_code = EXIT_PAUSED
            self.stop(f"drain ended: sending is paused: {self.senders.token.reason}")

    def _on_drained(self, paused: bool) -> None:
        """A drain found nothing left it can send: exit 3 when paused numbers' rows are left."""
        if paused:
            self._exit_code = EXIT_PAUSED
            self.stop("drained: only the rows of paused numbers are left")
        else:
            self.stop("drained: nothing left to send")
