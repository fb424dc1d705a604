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
import contextlib
import json
import logging
import os
import socket
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp

from outbox import migrate, store
from outbox.callbacks import installation_id
from outbox.cancel import cancel_and_wait
from outbox.connections import fetch_all, fetch_one
from outbox.database import (
    asyncpg_dsn,
    create_engine,
    is_connection_error,
    persistently,
    resolve_dsn,
    short_error,
)
from outbox.delivery import reach
from outbox.delivery.claim import Claim, leases
from outbox.delivery.events import EventLog
from outbox.delivery.health import State
from outbox.delivery.limiter import RateLimiter
from outbox.delivery.listen import NotificationListener
from outbox.delivery.pauses import PauseWatcher
from outbox.delivery.rate import SharedRate
from outbox.delivery.record import PartRecorder
from outbox.delivery.send import RowSender
from outbox.delivery.senders import Senders
from outbox.errors import ConfigurationError
from outbox.media.ids import MediaIds
from outbox.metrics.backlog import BacklogGauges
from outbox.metrics.daemon import DaemonMetrics
from outbox.metrics.health import NumberHealth
from outbox.pool import Pool
from outbox.retry import expo_delays
from outbox.settings import DEFAULT_GRAPH_API_URL, Settings, redact_url
from outbox.whatsapp import CloudAPI

logger = logging.getLogger("outbox.daemon")
EXIT_PAUSED = 3
HEARTBEAT_SECONDS = 10.0
EXPIRY_SWEEP_SECONDS = 10.0
EXPIRY_BATCH = 1000
STATEMENT_TIMEOUT = 60.0  # a statement that takes longer is on a dead connection
STOP_GRACE = 2.0  # a claim in progress at stop() gets this long to finish
CLAIM_WINDOW = 4  # a claim looks at this many ready rows per row it may take
CLAIM_WHEN_FREE = 4  # while rows are in flight, claim once 1/4 of the in-flight limit is free
# After the database comes back, a daemon takes over no expired lease for this long: the owner
# of a lease that ran out during the outage has accepted parts to record first (its recorder
# retries at least every second), or it would send them again.
TAKEOVER_GRACE = 10.0
# Liveness: a turn runs a few statements, each bounded by STATEMENT_TIMEOUT (and the connect
# before it): one that runs longer than this is stuck. Between turns the loop sleeps for a
# timeout it chose; one that does not wake up within LIVENESS_GRACE after it is stuck too.
STUCK_TURN = 5 * STATEMENT_TIMEOUT
LIVENESS_GRACE = 30.0
CLOSE_TIMEOUT = 3.0  # a database that swallows everything does not hold up the exit
# A database restarting or failing over as the daemon starts is waited out this long; past it
# (a wrong host or port, a server that is not coming) `outbox run` exits with the reason.
STARTUP_WAIT = 120.0
# A Graph API host refusing connections at startup is given this long (a local simulator or a
# proxy starting beside the daemon); past it, `outbox run` exits naming META_GRAPH_API_URL. A
# name that does not resolve is refused at once.
API_STARTUP_WAIT = 10.0


def _left(deadline: float, cap: float | None = None) -> float:
    """Seconds until `deadline` (at least a tenth, at most `cap`)."""
    left = max(0.1, deadline - asyncio.get_running_loop().time())
    return left if cap is None else min(cap, left)


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
        self._held: set[str] = set()  # senders held (throttled) at the last turn
        self._templates_held: set[str] = set()  # templates paused by Meta at the last turn
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.senders = Senders(settings.phone_number_id or "", settings.pause_probe)
        self.limiter = RateLimiter(settings.pair_burst, settings.pair_interval)
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._in_flight: dict[int, Claim] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._exit_code = 0
        self._next_sweep = 0.0
        self._takeover_after = 0.0  # loop time before which expired leases are left alone
        self._database_error: str | None = None
        self._live_until: float | None = None  # None: the loop has not started
        # The wall clock quiet hours are judged by; tests set their own before run().
        self.clock: Callable[[], datetime] = lambda: datetime.now(UTC)
        self._rows: RowSender | None = None
        self.metrics = DaemonMetrics(
            in_flight=lambda: len(self._in_flight), paused_reasons=self.paused_reasons
        )
        # What the webhook receiver stored about the numbers: /metrics, and /readyz's reason.
        self.number_health = NumberHealth(settings.daily_limit)
        self.metrics.registry.register(self.number_health)

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
        if self.senders.operator.holds(self.senders.default):
            return self.senders.operator.reason(self.senders.default)
        for gate in self.senders.closed():
            if gate.state is State.PAUSED:
                return gate.reason
        return None

    def paused_reasons(self) -> set[str]:
        """Why sending is stopped now, in outbox_paused's words (account, outage, throttle,
        template, operator: see outbox.metrics.daemon); empty while everything can be sent."""
        reasons = set()
        for gate in self.senders.closed():
            reasons.add("account" if gate.state is State.PAUSED else "outage")
        if self.limiter.held():
            reasons.add("throttle")
        if self._rows is not None and self._rows.templates_held():
            reasons.add("template")
        if self.senders.operator.everything or self.senders.operator.senders():
            reasons.add("operator")
        return reasons

    @property
    def _sender(self) -> RowSender:
        assert self._rows is not None, "the daemon is not running"
        return self._rows

    def _sending_state(self, sender: str | None = None) -> tuple[str, str | None]:
        """ok, paused (account error), outage (API down) or held (throttled), and why, for one
        sender (default: the configured one)."""
        sender = self.senders.default if sender is None else sender
        state, reason = self.senders.state(sender)
        if state is State.OPEN and self.limiter.hold_remaining(sender) > 0:
            reason = self.limiter.hold_reason(sender) or "throttled by Meta"
            return "held", f"{reason}; sending resumes when the hold ends"
        return state.value, reason

    def _senders_states(self) -> dict[str, dict[str, Any]]:
        """Every sender this daemon has sent from that is not ok now, with its state."""
        names = set(self.senders.known()) | set(self.limiter.held())
        names |= set(self.senders.operator.senders())
        states = {}
        for sender in sorted(names - {self.senders.default}):
            status, reason = self._sending_state(sender)
            if status != "ok":
                held = round(self.limiter.hold_remaining(sender), 1)
                states[sender] = {"status": status, "reason": reason, "held_for_seconds": held}
        return states

    def health(self) -> dict[str, Any]:
        """The sending state of the default sender (`status`), whether the loop is turning
        (`live`) and whether this daemon can send now (`ready`: neither paused, held nor in an
        outage, and its database answers), with the `reason` when it cannot; `senders` lists the
        other phone numbers that cannot send now."""
        status, reason = self._sending_state()
        database_ok = self._database_error is None
        # Meta restricted the account (account_update): not ready. A RED quality rating is a
        # warning only: the number still sends, and stopping would not raise it.
        restricted = self.number_health.restricted
        if status == "ok" and not database_ok:
            reason = f"database unreachable: {self._database_error}"
        elif status == "ok" and restricted is not None:
            reason = restricted
        elif status == "ok" and reason is None:
            reason = self.number_health.warning
        live_until = self._live_until
        return {
            "status": status,
            "reason": reason,
            "paused_reason": self.paused_reason,
            "held_for_seconds": round(self.limiter.hold_remaining(self.senders.default), 1),
            "in_flight": len(self._in_flight),
            "database": "ok" if database_ok else "unreachable",
            "live": live_until is None or asyncio.get_running_loop().time() < live_until,
            "ready": status == "ok" and database_ok and restricted is None,
            "senders": self._senders_states(),
        }

    # --- lifecycle -------------------------------------------------------------------------

    def _check_configuration(self) -> tuple[str, str]:
        token, phone = self.settings.access_token, self.settings.phone_number_id
        missing = [
            name
            for name, value in (("META_ACCESS_TOKEN", token), ("META_PHONE_NUMBER_ID", phone))
            if not value
        ]
        if missing:  # every one at once, not one per attempt
            verb = "is" if len(missing) == 1 else "are"
            raise ConfigurationError(f"{' and '.join(missing)} {verb} required to send")
        assert token
        assert phone
        return token, phone

    async def _check_schema(self, dsn: str) -> None:
        engine = create_engine(
            dsn, pool_size=1, command_timeout=STATEMENT_TIMEOUT, application_name="outbox-run"
        )
        try:
            async with engine.connect() as conn:
                current = await conn.run_sync(migrate.current_revision)
        finally:
            await engine.dispose()
        head = migrate.head_revision()
        if current != head:
            raise ConfigurationError(
                f"the outbox schema is at revision {current or 'none'}, not {head}: "
                "run `outbox migrate` first"
            )

    async def _check_schema_patiently(self, dsn: str) -> bool:
        """The schema check, waiting out a database that cannot answer yet (shutting down,
        starting up, in recovery, refusing connections) for STARTUP_WAIT at most; False when
        stop() came meanwhile. Any other error, or one that outlasts the wait, is raised."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STARTUP_WAIT
        delays = expo_delays(0.5, 5.0)
        while True:
            try:
                await self._check_schema(dsn)
                self._database_error = None
                return True
            except Exception as exc:
                if not is_connection_error(exc) or loop.time() >= deadline:
                    raise
                self._database_error = short_error(exc)
                delay = min(next(delays), max(0.1, deadline - loop.time()))
                logger.warning(
                    "database unavailable at startup (%s); retrying in %.1fs",
                    self._database_error,
                    delay,
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            if self._stopping.is_set():
                return False

    async def _check_api_patiently(self) -> bool:
        """Refuse (ConfigurationError naming META_GRAPH_API_URL) when the Graph API's host
        cannot be connected to at all: at once for a name that does not resolve, after
        API_STARTUP_WAIT for a host that refuses connections. A host that does not answer in
        time is only warned about. False when stop() came meanwhile."""
        url = redact_url(self.settings.graph_api_url)
        try:
            host, port = reach.host_and_port(self.settings.graph_api_url)
        except ValueError as exc:
            raise ConfigurationError(f"META_GRAPH_API_URL: {redact_url(str(exc))}") from None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + API_STARTUP_WAIT
        first = True
        while True:
            try:
                problem = await reach.refusal(host, port)
            except reach.NotAnswering as exc:
                logger.warning(
                    "the Graph API at %s (META_GRAPH_API_URL) may be unreachable: %s; starting "
                    "anyway, an outage is waited out",
                    url,
                    exc,
                    extra={"url": url},
                )
                return True
            if problem is None:
                return True
            if not problem.resolved or loop.time() >= deadline:
                unset = " (unset: this is its default)" if url == DEFAULT_GRAPH_API_URL else ""
                waited = "" if first else f", for {API_STARTUP_WAIT:.0f}s"
                raise ConfigurationError(
                    f"the Graph API at {url} cannot be reached: {problem.reason}{waited}; check "
                    f"META_GRAPH_API_URL{unset}"
                )
            if first:
                logger.warning(
                    "the Graph API at %s (META_GRAPH_API_URL): %s; trying again for %.0fs",
                    url,
                    problem.reason,
                    API_STARTUP_WAIT,
                    extra={"url": url},
                )
                first = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), 1.0)
            if self._stopping.is_set():
                return False

    async def run(self) -> int:
        """Deliver until stopped; 0, or 3 when a drain ended because sending is paused."""
        token, phone = self._check_configuration()
        settings = self.settings
        loop = type(asyncio.get_running_loop())
        logger.debug("starting with %r on %s.%s", settings, loop.__module__, loop.__name__)
        dsn = await resolve_dsn(settings)
        if not await self._check_schema_patiently(dsn):
            return self._exit_code  # stopped before the database came back: nothing claimed
        if self._check_api and not await self._check_api_patiently():
            return self._exit_code
        pool = Pool(dsn, size=4, command_timeout=STATEMENT_TIMEOUT, application_name="outbox-run")
        try:
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
        finally:
            await pool.close(CLOSE_TIMEOUT)
        return self._exit_code

    async def _run_with(
        self, pool: Pool, dsn: str, api: CloudAPI, media: MediaIds | None = None
    ) -> None:
        self._pool = pool
        self._recorder = PartRecorder(
            pool,
            self.settings.lease_seconds,
            on_idle=self.wake,
            pair_interval=self.settings.pair_interval,
            default_sender=self.senders.default,
        )
        self._recorder.start()
        self._events = EventLog(pool)
        self._events.start()
        self._rows = RowSender(
            self.settings,
            pool,
            api,
            self._recorder,
            self.senders,
            self.limiter,
            self._on_pause,
            self._events,
            self.metrics,
            installation=await installation_id(pool),
            clock=self.clock,
            media=media,
        )
        backlog = BacklogGauges(pool, self.metrics.pending, self.metrics.oldest_pending)
        pauses = PauseWatcher(pool, self.senders.operator, self.wake)
        await persistently(pauses.read, what="reading the operator pauses", max_tries=10)
        listen_dsn = asyncpg_dsn(self.settings.listen_url) if self.settings.listen_url else dsn
        listener = NotificationListener(listen_dsn, self.wake, on_payload=lambda _: pauses.poke())
        listener.start()
        helpers = [
            asyncio.create_task(pauses.run(), name="outbox-operator-pauses"),
            asyncio.create_task(self._keep_leases(), name="outbox-leases"),
            asyncio.create_task(self._report_state(), name="outbox-heartbeat"),
            asyncio.create_task(backlog.run(), name="outbox-backlog-gauges"),
            asyncio.create_task(self.number_health.run(pool), name="outbox-number-health"),
        ]
        logger.info("delivering to %s (concurrency %d)", api.url, self.settings.concurrency)
        self._started_at = asyncio.get_running_loop().time()
        try:
            await self._loop()
        finally:
            # One deadline for the whole shutdown, whatever the database does.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.settings.shutdown_timeout
            released, unrecorded = await self._shut_down(deadline)
            await cancel_and_wait(helpers)
            await listener.stop()
            await self._events.close(_left(deadline, cap=2.0))
            await self._forget(_left(deadline, cap=2.0))
            self._log_stop(released, unrecorded)

    def _log_stop(self, released: int, unrecorded: int) -> None:
        """The last line: why the daemon stops, what it leaves behind, what it did."""
        uptime = asyncio.get_running_loop().time() - (self._started_at or 0.0)
        reason = self._stop_reason or "the delivery loop ended"
        rows = self._sender
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

    async def _shut_down(self, deadline: float) -> tuple[int, int]:
        """Finish or give back what is in flight; the number of rows given back to pending,
        and of accepted parts whose wamid could not be written."""
        if self._tasks:
            count = len(self._tasks)
            logger.info("waiting for %d message%s in flight", count, "" if count == 1 else "s")
            await asyncio.wait(self._tasks, timeout=_left(deadline))
        # Snapshot first: a finished task forgets its claim. A row that finished meanwhile no
        # longer carries our token, so releasing it changes nothing.
        claims = list(self._in_flight.values())
        self._sender.abandon = True  # no new part goes out; retried writes give up
        self._sender.stop_lookups()
        # Accepted parts are written before their rows are given back, or they would be lost.
        unrecorded = await self._recorder.close(_left(deadline))
        await cancel_and_wait(self._tasks)
        released = 0
        if claims:
            try:
                async with asyncio.timeout(_left(deadline)):
                    released = await persistently(
                        self._release, claims, what="releasing rows", max_tries=5
                    )
            except Exception as exc:
                logger.error(
                    "could not release %d messages (%s); their leases expire in %.0fs",
                    len(claims),
                    short_error(exc),
                    self.settings.lease_seconds,
                )
        return released, unrecorded

    def _on_pause(self) -> None:
        """A token error ends a drain at once: nothing can be sent. One number's account error
        does not: the drain goes on with the others and exits 3 when only its rows are left."""
        if self.drain and not self.senders.token.open:
            self._exit_code = EXIT_PAUSED
            self.stop(f"drain ended: sending is paused: {self.senders.token.reason}")

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        self._failure_delays = expo_delays(0.5, 10.0)
        while not self._stopping.is_set():
            self._wake.clear()
            self._live_until = loop.time() + STUCK_TURN
            turn = asyncio.create_task(self._turn(), name="outbox-turn")
            stopping = asyncio.create_task(self._stopping.wait())
            await asyncio.wait({turn, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not turn.done():  # stopped while a statement runs: it gets a moment, no more
                await asyncio.wait({turn}, timeout=STOP_GRACE)
            stopping.cancel()
            if not turn.done():
                turn.cancel()
                await asyncio.gather(turn, return_exceptions=True)
                return
            timeout = turn.result()
            if timeout is None:
                return
            if timeout > 0:
                self._live_until = loop.time() + timeout + LIVENESS_GRACE
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)

    async def _turn(self) -> float | None:
        """One round of claiming; how long to sleep after it, or None when a drain is done."""
        loop = asyncio.get_running_loop()
        self._log_ended_holds()
        try:
            if self._database_error is not None:  # back after an outage: see TAKEOVER_GRACE
                self._takeover_after = loop.time() + TAKEOVER_GRACE
            await self._expire_due(loop.time())
            claimed = await self._claim_some()
            # An operator's pause of every sender leaves a drain nothing to wait for.
            everything = self.senders.operator.everything
            if self.drain and not self._tasks and not claimed and await self._finished(everything):
                if self.senders.paused() or everything:
                    self._exit_code = EXIT_PAUSED
                    self.stop("drained: only the rows of paused numbers are left")
                else:
                    self.stop("drained: nothing left to send")
                return None
            timeout = await self._idle_timeout(claimed)
            self._failure_delays = expo_delays(0.5, 10.0)
            self._database_error = None
        except Exception as exc:
            self._database_error = short_error(exc)
            timeout = next(self._failure_delays)
            logger.warning(
                "database unavailable (%s); retrying in %.1fs", short_error(exc), timeout
            )
        return timeout

    def _log_ended_holds(self) -> None:
        """One line when a sender's hold (a throttle, Meta's spam limit) or Meta's pause of a
        template is over: their beginnings are logged by the row that met them."""
        held = set(self.limiter.held())
        for sender in sorted(self._held - held):
            logger.info(
                "sending from %s resumed: its hold is over",
                sender,
                extra={"sender": sender, "state": "ok", "was": "held"},
            )
        templates = set(self._sender.templates_held())
        for name in sorted(self._templates_held - templates):
            logger.info(
                "template %s: its messages are sent again (Meta's pause is over)",
                name,
                extra={"template": name, "state": "ok", "was": "held"},
            )
        self._held, self._templates_held = held, templates

    def _claim_rounds(self) -> list[tuple[int, bool, str | None, list[str]]]:
        """The claims to make now, as (limit, probe, only this sender, senders left out): a
        probe of the token or of each stopped sender whose probe is due, then the rest."""
        operator = self.senders.operator  # an operator's pause: no claim, no probe
        if self._recorder.busy or operator.everything:
            return []
        free = self._in_flight_limit() - self._sending()
        token = self.senders.token
        if not token.open:
            if self._tasks or not token.probe_due():
                return []
            # one real send finds out whether the token works
            return [(1, True, None, operator.senders())]
        held = self.limiter.held()
        busy = {claim.sender for claim in self._in_flight.values()}
        rounds: list[tuple[int, bool, str | None, list[str]]] = []
        for sender, gate in self.senders.known().items():
            if free <= 0 or gate.open or sender in busy or sender in held:
                continue
            if operator.holds(sender):
                continue
            if self.drain and gate.state is State.PAUSED:
                continue  # a drain does not wait out an account error: it ends with exit 3
            if gate.probe_due():
                rounds.append((1, True, sender, []))
                free -= 1
        if free > 0 and self._worth_claiming(free):
            stopped = sorted(set(self.senders.stopped()) | set(held) | set(operator.senders()))
            rounds.append((min(free, self.settings.batch_size), False, None, stopped))
        return rounds

    def _worth_claiming(self, free: int) -> bool:
        """Claim in batches: while rows are in flight, wait until a quarter of the in-flight
        limit (or of a batch) is free, so that each claim's round trip serves many rows."""
        if not self._tasks:
            return True
        limit = min(self._in_flight_limit(), self.settings.batch_size)
        return free >= max(1, limit // CLAIM_WHEN_FREE)

    def _takeover_grace(self) -> float:
        """How long after a lease expired another daemon may take its row: its owner may be
        alive but cut off from the database for a moment, holding an accepted wamid to record.
        The lease itself, at most TAKEOVER_GRACE: a crashed daemon's rows come back that late."""
        return min(TAKEOVER_GRACE, self.settings.lease_seconds)

    def _sending(self) -> int:
        """Rows in flight that still have a part to send (a row whose last part is being
        recorded does not count against the in-flight limit)."""
        return sum(1 for claim in self._in_flight.values() if not claim.settling)

    def _in_flight_limit(self) -> int:
        """Rows to hold in flight now: rate x latency for the senders that can send."""
        sending = sum(1 for gate in self.senders.known().values() if gate.open)
        return self._sender.pace.rows(max(1, sending))

    async def _claim_some(self) -> int:
        """Claim and start rows; how many, plus the rows it found queued (then there may be
        more to claim right now)."""
        progress = 0
        for limit, probe, only, stopped in self._claim_rounds():
            if probe:  # a row that never failed says best whether sending works again
                before = len(self._in_flight)
                progress += await self._claim(limit, probe, only, stopped, fresh=True)
                if len(self._in_flight) > before:
                    continue
            progress += await self._claim(limit, probe, only, stopped)
        return progress

    async def _claim(
        self, limit: int, probe: bool, only: str | None, stopped: list[str], fresh: bool = False
    ) -> int:
        token = uuid.uuid4()
        # Before the statement: the lease runs from the database's transaction start, so a slow
        # claim must not make this daemon believe it holds more lease than it does.
        now = asyncio.get_running_loop().time()
        async with self._pool.connect() as conn:  # one statement: its own transaction
            rows = await fetch_all(
                conn,
                store.CLAIM_BATCH,
                {
                    "limit": limit,
                    "window": CLAIM_WINDOW * limit,
                    "token": token,
                    "lease": self.settings.lease_seconds,
                    "mine": list(self._in_flight),
                    "max_age": self.settings.max_age,
                    "default_sender": self.senders.default,
                    "stopped": stopped,
                    "only": only,
                    "fresh": fresh,
                    "grace": self._takeover_grace(),
                    "takeover": asyncio.get_running_loop().time() >= self._takeover_after,
                },
            )
        marked = int(rows[0]["marked"]) if rows else 0
        claimed = 0
        for row in rows:
            if row["id"] is None:
                continue  # nothing claimed; `marked` says whether rows were queued meanwhile
            claimed += 1
            expires_in = row["expires_in"]
            claim = Claim(
                id=row["id"],
                recipient=row["recipient"],
                message=row["message"],
                media=row["media"],  # JSON text: parsed by the row's own task, which can fail it
                template=row["template"],
                accepted=row["accepted"],
                attempts=row["attempts"],
                in_doubt=row["in_doubt"],
                token=token,
                probe=probe,
                taken_over=row["taken_over"],
                sender=row["sender"] or self.senders.default,
                pair_due_in=None if row["pair_due_in"] is None else float(row["pair_due_in"]),
                lease_until=now + self.settings.lease_seconds,
                deadline=None if expires_in is None else now + float(expires_in),
            )
            self._in_flight[claim.id] = claim
            task = asyncio.create_task(self._deliver(claim), name=f"outbox-row-{claim.id}")
            self._tasks.add(task)
            task.add_done_callback(self._done)
        return claimed + marked

    async def _deliver(self, claim: Claim) -> None:
        try:
            await self._sender.deliver(claim)
        except Exception as exc:
            logger.exception("message %d: delivery failed unexpectedly", claim.id)
            await self._sender.crashed(claim, exc)
        finally:
            # Only our own claim: a newer claim of the same row must keep its lease.
            if self._in_flight.get(claim.id) is claim:
                del self._in_flight[claim.id]

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._wake.set()
        if not task.cancelled() and task.exception() is not None:
            logger.error("delivery task failed", exc_info=task.exception())

    async def _idle_timeout(self, claimed: int) -> float:
        """How long to sleep when no notification comes."""
        poll = self.settings.poll_interval
        token = self.senders.token
        if not token.open:
            return token.seconds_to_probe() if not self._tasks else 1.0
        free = self._in_flight_limit() - self._sending()
        if self._recorder.busy or free <= 0 or not self._worth_claiming(free):
            return poll  # nothing to claim now; the recorder or a finished row wakes us
        if claimed:
            return 0.0  # there may be more due rows right now
        # A stopped sender's next probe, or the end of a hold, may make rows claimable.
        waits = [poll, *self.limiter.held().values()]
        waits += [gate.seconds_to_probe() for gate in self.senders.closed()]
        async with self._pool.connect() as conn:
            row = await fetch_one(
                conn, store.SECONDS_TO_NEXT_DUE, {"grace": self._takeover_grace()}
            )
        if row is not None and row["seconds"] is not None:
            waits.append(float(row["seconds"]))
        return max(min(waits), 0.05)

    async def _finished(self, paused_by_operator: bool = False) -> bool:
        """Nothing left that can be sent (all of it, when an operator paused every sender)."""
        params = {"default_sender": self.senders.default, "paused": self.senders.paused()}
        async with self._pool.connect() as conn:
            row = await fetch_one(conn, store.HAS_UNFINISHED_WORK, params)
        return paused_by_operator or (row is not None and not next(iter(row.values())))

    async def _expire_due(self, now: float) -> None:
        """Every few seconds: fail pending rows past their expires_at, and release queued rows
        that nothing holds back any more (a claim's mark that raced the trigger's release)."""
        if now < self._next_sweep:
            return
        self._next_sweep = now + EXPIRY_SWEEP_SECONDS
        async with self._pool.begin() as conn:
            released = await fetch_all(conn, store.RELEASE_LANES)
            horizon = self.settings.pair_burst * self.settings.pair_interval
            await fetch_all(conn, store.PRUNE_PAIRS, {"horizon": horizon})
        if released:
            logger.debug("%d queued messages released by the sweep", len(released))
        async with self._pool.connect() as conn:
            expired = await fetch_all(conn, store.EXPIRE_PENDING, {"batch": EXPIRY_BATCH})
        if expired:
            self.metrics.failed.inc(len(expired))
            logger.info("%d messages expired before they could be sent", len(expired))
            if len(expired) == EXPIRY_BATCH:
                self._next_sweep = now

    # --- leases and state ------------------------------------------------------------------

    async def _keep_leases(self) -> None:
        while True:
            await asyncio.sleep(self.settings.lease_seconds / 3)
            claims = list(self._in_flight.values())
            if claims:
                try:
                    await self._sender.extend_leases(claims)
                except Exception as exc:
                    logger.warning("cannot extend leases (%s)", short_error(exc))

    async def _report_state(self) -> None:
        """Keep this daemon's row in outbox_daemons current: on every change, and a heartbeat."""
        reported: tuple[Any, ...] | None = None
        beat = 0.0
        loop = asyncio.get_running_loop()
        while True:
            others = {
                sender: {"state": st["status"], "reason": st["reason"]}
                for sender, st in self._senders_states().items()
            }
            state = (*self._sending_state(), json.dumps(others, sort_keys=True))
            if state != reported or loop.time() >= beat:
                try:
                    async with self._pool.connect() as conn:
                        await fetch_all(
                            conn,
                            store.SAVE_DAEMON_STATE,
                            {
                                "daemon": self.id,
                                "state": state[0],
                                "reason": state[1],
                                "held": round(self.limiter.hold_remaining(self.senders.default), 1),
                                "in_flight": len(self._in_flight),
                                "senders": state[2],
                            },
                        )
                    reported, beat = state, loop.time() + HEARTBEAT_SECONDS
                except Exception as exc:
                    logger.debug("cannot report state (%s)", short_error(exc))
            await asyncio.sleep(0.5)

    async def _forget(self, within: float) -> None:
        try:
            async with asyncio.timeout(within), self._pool.connect() as conn:
                await fetch_all(conn, store.FORGET_DAEMON, {"daemon": self.id})
        except Exception as exc:
            logger.debug("cannot remove this daemon's state (%s)", short_error(exc))

    async def _release(self, claims: list[Claim]) -> int:
        """Give rows back to pending; how many were still ours to give."""
        async with self._pool.connect() as conn:
            return len(await fetch_all(conn, store.RELEASE, leases(claims)))
