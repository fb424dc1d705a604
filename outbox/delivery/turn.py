"""The loop's turns: claim what may be claimed now, then sleep until a notification, a finished
row or the timeout the turn chose. A database error makes a turn retry with backoff; a turn
stuck past STUCK_TURN, or a sleep that overruns its timeout, makes the daemon not live."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from outbox import store
from outbox.connections import fetch_one
from outbox.database import short_error
from outbox.delivery.claim import TAKEOVER_GRACE, Claimer
from outbox.delivery.flight import InFlight
from outbox.delivery.limiter import RateLimiter
from outbox.delivery.record import PartRecorder
from outbox.delivery.report import Condition
from outbox.delivery.send import RowSender
from outbox.delivery.senders import Senders
from outbox.delivery.startup import STATEMENT_TIMEOUT
from outbox.delivery.sweep import ExpirySweep
from outbox.pool import Pool
from outbox.retry import expo_delays
from outbox.settings import Settings

logger = logging.getLogger("outbox.daemon")
STOP_GRACE = 2.0  # a claim in progress at stop() gets this long to finish
# Liveness: a turn runs a few statements, each bounded by STATEMENT_TIMEOUT (and the connect
# before it): one that runs longer than this is stuck. Between turns the loop sleeps for a
# timeout it chose; one that does not wake up within LIVENESS_GRACE after it is stuck too.
STUCK_TURN = 5 * STATEMENT_TIMEOUT
LIVENESS_GRACE = 30.0


class Turns:
    """Turns until `stopping` is set, or until a drain finds nothing left it can send: then
    `on_drained(paused)` is told whether only paused numbers' rows are left."""

    def __init__(
        self,
        settings: Settings,
        pool: Pool,
        claimer: Claimer,
        in_flight: InFlight,
        recorder: PartRecorder,
        rows: RowSender,
        senders: Senders,
        limiter: RateLimiter,
        sweep: ExpirySweep,
        condition: Condition,
        *,
        drain: bool,
        stopping: asyncio.Event,
        wake: asyncio.Event,
        on_drained: Callable[[bool], None],
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._claimer = claimer
        self._in_flight = in_flight
        self._recorder = recorder
        self._rows = rows
        self._senders = senders
        self._limiter = limiter
        self._sweep = sweep
        self._condition = condition
        self._drain = drain
        self._stopping = stopping
        self._wake = wake
        self._on_drained = on_drained
        self._held: set[str] = set()  # senders held (throttled) at the last turn
        self._templates_held: set[str] = set()  # templates paused by Meta at the last turn
        self._failure_delays = expo_delays(0.5, 10.0)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._failure_delays = expo_delays(0.5, 10.0)
        while not self._stopping.is_set():
            self._wake.clear()
            self._condition.live_until = loop.time() + STUCK_TURN
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
                self._condition.live_until = loop.time() + timeout + LIVENESS_GRACE
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)

    async def _turn(self) -> float | None:
        """One round of claiming; how long to sleep after it, or None when a drain is done."""
        loop = asyncio.get_running_loop()
        self._log_ended_holds()
        try:
            if (
                self._condition.database_error is not None
            ):  # back after an outage: see TAKEOVER_GRACE
                self._claimer.takeover_after = loop.time() + TAKEOVER_GRACE
            await self._sweep.run_if_due(loop.time())
            claimed = await self._claimer.claim_some()
            # An operator's pause of every sender leaves a drain nothing to wait for.
            everything = self._senders.operator.everything
            if (
                self._drain
                and not self._in_flight.tasks
                and not claimed
                and await self._finished(everything)
            ):
                self._on_drained(bool(self._senders.paused()) or everything)
                return None
            timeout = await self._idle_timeout(claimed)
            self._failure_delays = expo_delays(0.5, 10.0)
            self._condition.database_error = None
        except Exception as exc:
            self._condition.database_error = short_error(exc)
            timeout = next(self._failure_delays)
            logger.warning(
                "database unavailable (%s); retrying in %.1fs", short_error(exc), timeout
            )
        return timeout

    def _log_ended_holds(self) -> None:
        """One line when a sender's hold (a throttle, Meta's spam limit) or Meta's pause of a
        template is over: their beginnings are logged by the row that met them."""
        held = set(self._limiter.held())
        for sender in sorted(self._held - held):
            logger.info(
                "sending from %s resumed: its hold is over",
                sender,
                extra={"sender": sender, "state": "ok", "was": "held"},
            )
        templates = set(self._rows.templates_held())
        for name in sorted(self._templates_held - templates):
            logger.info(
                "template %s: its messages are sent again (Meta's pause is over)",
                name,
                extra={"template": name, "state": "ok", "was": "held"},
            )
        self._held, self._templates_held = held, templates

    async def _idle_timeout(self, claimed: int) -> float:
        """How long to sleep when no notification comes."""
        poll = self._settings.poll_interval
        token = self._senders.token
        if not token.open:
            return token.seconds_to_probe() if not self._in_flight.tasks else 1.0
        free = self._claimer.in_flight_limit() - self._in_flight.sending()
        if self._recorder.busy or free <= 0 or not self._claimer.worth_claiming(free):
            return poll  # nothing to claim now; the recorder or a finished row wakes us
        if claimed:
            return 0.0  # there may be more due rows right now
        # A stopped sender's next probe, or the end of a hold, may make rows claimable.
        waits = [poll, *self._limiter.held().values()]
        waits += [gate.seconds_to_probe() for gate in self._senders.closed()]
        async with self._pool.connect() as conn:
            row = await fetch_one(
                conn, store.SECONDS_TO_NEXT_DUE, {"grace": self._claimer.takeover_grace()}
            )
        if row is not None and row["seconds"] is not None:
            waits.append(float(row["seconds"]))
        return max(min(waits), 0.05)

    async def _finished(self, paused_by_operator: bool = False) -> bool:
        """Nothing left that can be sent (all of it, when an operator paused every sender)."""
        params = {"default_sender": self._senders.default, "paused": self._senders.paused()}
        async with self._pool.connect() as conn:
            row = await fetch_one(conn, store.HAS_UNFINISHED_WORK, params)
        return paused_by_operator or (row is not None and not next(iter(row.values())))
