"""Operator pauses as a daemon sees them (`outbox pause|resume [--sender]`, table outbox_pauses).

Read before the first claim, again on every NOTIFY `outbox` with the payload `pause`, and at
least every REREAD_SECONDS, so that every daemon honours a pause within a second (also behind a
pooler where LISTEN cannot work). The daemon reads them before its first claim: a restart of a
paused outbox must not send.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime

from outbox.database import short_error
from outbox.pool import Pool
from outbox.schema import ALL_SENDERS
from outbox.store.pauses import select_pauses

logger = logging.getLogger("outbox.daemon")
REREAD_SECONDS = 0.5


class OperatorHold:
    """Which senders an operator paused: `*` for every sender. In memory; PauseWatcher keeps it
    current."""

    def __init__(self) -> None:
        self._paused: dict[str, str] = {}

    @property
    def everything(self) -> bool:
        return ALL_SENDERS in self._paused

    def holds(self, sender: str) -> bool:
        return ALL_SENDERS in self._paused or sender in self._paused

    def senders(self) -> list[str]:
        """The senders paused one by one (not `*`)."""
        return sorted(sender for sender in self._paused if sender != ALL_SENDERS)

    def reason(self, sender: str) -> str | None:
        """Why `sender` is paused by an operator, None when it is not."""
        return self._paused.get(ALL_SENDERS) or self._paused.get(sender)

    def update(self, paused: dict[str, str]) -> bool:
        """Replace the pauses; True when they changed."""
        changed = paused != self._paused
        self._paused = dict(paused)
        return changed


def describe(sender: str, paused_at: datetime, reason: str | None) -> str:
    """The words /readyz, outbox_daemons and the logs use for one pause."""
    who = "every sender" if sender == ALL_SENDERS else f"sender {sender}"
    text = (
        f"paused by operator (outbox pause) for {who} since {paused_at.isoformat('T', 'seconds')}"
    )
    return f"{text}: {reason}" if reason else f"{text}; `outbox resume` lifts it"


class PauseWatcher:
    """Keeps an OperatorHold current from outbox_pauses; `on_change` is called on every change
    (the daemon wakes up to claim again after a resume)."""

    def __init__(
        self,
        pool: Pool,
        hold: OperatorHold,
        on_change: Callable[[], None],
        interval: float = REREAD_SECONDS,
    ) -> None:
        self._pool = pool
        self._hold = hold
        self._on_change = on_change
        self._interval = interval
        self._poke = asyncio.Event()
        self._failing = False
        self._read_once = False

    def poke(self) -> None:
        """Read again now (a NOTIFY said a pause was set or lifted)."""
        self._poke.set()

    async def read(self) -> None:
        async with self._pool.connect() as conn:
            rows = await select_pauses(conn)
        paused = {row["sender"]: describe(**row) for row in rows}
        first, self._read_once = not self._read_once, True
        if self._hold.update(paused):
            for text in paused.values():
                logger.warning("sending %s", text)
            if not paused and not first:
                logger.warning("sending resumed: no operator pause is left")
            self._on_change()

    async def run(self) -> None:
        while True:
            self._poke.clear()
            try:
                await self.read()
                self._failing = False
            except Exception as exc:  # the last pauses read stay in force meanwhile
                if not self._failing:
                    logger.warning("cannot read the operator pauses (%s)", short_error(exc))
                self._failing = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), self._interval)
