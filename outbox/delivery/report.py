"""What a daemon says about itself: health() for /healthz and /readyz, why sending is paused for
outbox_paused, and its row in outbox_daemons (on every change, and a heartbeat) for `outbox
stats` and the other daemons."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from outbox import store
from outbox.connections import fetch_all
from outbox.database import short_error
from outbox.delivery.flight import InFlight
from outbox.delivery.health import State
from outbox.delivery.limiter import RateLimiter
from outbox.delivery.senders import Senders
from outbox.metrics.health import NumberHealth
from outbox.pool import Pool

logger = logging.getLogger("outbox.daemon")
HEARTBEAT_SECONDS = 10.0


@dataclass
class Condition:
    """What the loop tells health(): why its database cannot answer (None: it does), and the
    loop time by which it should turn again (None: it has not started)."""

    database_error: str | None = None
    live_until: float | None = None


class Report:
    """Reads the senders' state, the hold, the rows in flight and the loop's condition; writes
    nothing but this daemon's row in outbox_daemons."""

    def __init__(
        self,
        daemon_id: str,
        senders: Senders,
        limiter: RateLimiter,
        in_flight: InFlight,
        number_health: NumberHealth,
        condition: Condition,
        templates_held: Callable[[], list[str]],
    ) -> None:
        self.id = daemon_id
        self.senders = senders
        self.limiter = limiter
        self._in_flight = in_flight
        self._number_health = number_health
        self._condition = condition
        self._templates_held = templates_held

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
        if self._templates_held():
            reasons.add("template")
        if self.senders.operator.everything or self.senders.operator.senders():
            reasons.add("operator")
        return reasons

    def sending_state(self, sender: str | None = None) -> tuple[str, str | None]:
        """ok, paused (account error), outage (API down) or held (throttled), and why, for one
        sender (default: the configured one)."""
        sender = self.senders.default if sender is None else sender
        state, reason = self.senders.state(sender)
        if state is State.OPEN and self.limiter.hold_remaining(sender) > 0:
            reason = self.limiter.hold_reason(sender) or "throttled by Meta"
            return "held", f"{reason}; sending resumes when the hold ends"
        return state.value, reason

    def senders_states(self) -> dict[str, dict[str, Any]]:
        """Every sender this daemon has sent from that is not ok now, with its state."""
        names = set(self.senders.known()) | set(self.limiter.held())
        names |= set(self.senders.operator.senders())
        states = {}
        for sender in sorted(names - {self.senders.default}):
            status, reason = self.sending_state(sender)
            if status != "ok":
                held = round(self.limiter.hold_remaining(sender), 1)
                states[sender] = {"status": status, "reason": reason, "held_for_seconds": held}
        return states

    def health(self) -> dict[str, Any]:
        """The sending state of the default sender (`status`), whether the loop is turning
        (`live`) and whether this daemon can send now (`ready`: neither paused, held nor in an
        outage, and its database answers), with the `reason` when it cannot; `senders` lists the
        other phone numbers that cannot send now."""
        status, reason = self.sending_state()
        database_error = self._condition.database_error
        database_ok = database_error is None
        # Meta restricted the account (account_update): not ready. A RED quality rating is a
        # warning only: the number still sends, and stopping would not raise it.
        restricted = self._number_health.restricted
        if status == "ok" and not database_ok:
            reason = f"database unreachable: {database_error}"
        elif status == "ok" and restricted is not None:
            reason = restricted
        elif status == "ok" and reason is None:
            reason = self._number_health.warning
        live_until = self._condition.live_until
        return {
            "status": status,
            "reason": reason,
            "paused_reason": self.paused_reason,
            "held_for_seconds": round(self.limiter.hold_remaining(self.senders.default), 1),
            "in_flight": len(self._in_flight),
            "database": "ok" if database_ok else "unreachable",
            "live": live_until is None or asyncio.get_running_loop().time() < live_until,
            "ready": status == "ok" and database_ok and restricted is None,
            "senders": self.senders_states(),
        }

    async def keep_reported(self, pool: Pool) -> None:
        """Keep this daemon's row in outbox_daemons current: on every change, and a heartbeat."""
        reported: tuple[Any, ...] | None = None
        beat = 0.0
        loop = asyncio.get_running_loop()
        while True:
            others = {
                sender: {"state": st["status"], "reason": st["reason"]}
                for sender, st in self.senders_states().items()
            }
            state = (*self.sending_state(), json.dumps(others, sort_keys=True))
            if state != reported or loop.time() >= beat:
                try:
                    async with pool.connect() as conn:
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

    async def forget(self, pool: Pool, within: float) -> None:
        """Remove this daemon's row from outbox_daemons (it stops)."""
        try:
            async with asyncio.timeout(within), pool.connect() as conn:
                await fetch_all(conn, store.FORGET_DAEMON, {"daemon": self.id})
        except Exception as exc:
            logger.debug("cannot remove this daemon's state (%s)", short_error(exc))
