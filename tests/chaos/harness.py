"""One chaos round: a fresh database, the simulator in this event loop, daemons, load, the final
`outbox run --drain`, and the figures of the guarantees (invariants.py) it must keep.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import random
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

import asyncpg
from aiohttp import web

import outbox
from outbox.callbacks import parse_callback
from outbox.simulator import Simulator, Step, serve
from outbox.status_webhooks import StatusNotifier
from tests.chaos import invariants
from tests.chaos.fleet import PHONE, TOKEN, Daemon, Fleet
from tests.chaos.load import Load

ROUNDS = int(os.environ.get("CHAOS_ROUNDS", "2"))  # SIGKILL rounds
SCALE = float(os.environ.get("CHAOS_SCALE", "1"))  # backlog sizes
SEED = int(os.environ.get("CHAOS_SEED") or random.SystemRandom().randrange(10**6))
DRAIN_TIMEOUT = 120.0
T = TypeVar("T")
RECEIVER_SECRET = "chaos-app-secret"


def scaled(rows: int) -> int:
    return max(1, round(rows * SCALE))


class Api:
    """The simulator, served on a new port for each daemon that asks (its requests' Host)."""

    def __init__(self, simulator: Simulator) -> None:
        self.simulator = simulator
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        self._runner = await serve(self.simulator, "127.0.0.1", 0)

    async def endpoint(self) -> str:
        assert self._runner is not None
        before = set(map(tuple, self._runner.addresses))
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        (address,) = set(map(tuple, self._runner.addresses)) - before
        return f"http://127.0.0.1:{address[1]}"

    def script(self, recipient: str, *steps: object) -> None:
        self.simulator.scenario[recipient] = deque(Step.parse(step) for step in steps)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@dataclass
class Round:
    """Everything one scenario run needs; the conftest fixture builds and closes it."""

    name: str
    database_url: str
    api: Api
    fleet: Fleet
    load: Load
    rng: random.Random
    started: float = field(default_factory=time.monotonic)
    figures: invariants.Figures | None = None
    crashed: int = 0  # daemons that did not exit 0 when stopped or drained
    notes: list[str] = field(default_factory=list)
    resources: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)

    async def enter(self, context: contextlib.AbstractAsyncContextManager[T]) -> T:
        """Enter `context` for the rest of the round (closed when the round is)."""
        return await self.resources.enter_async_context(context)

    @property
    def simulator(self) -> Simulator:
        return self.api.simulator

    @property
    def to(self) -> list[str]:
        return self.load.to

    async def spawn(
        self,
        count: int = 1,
        *,
        database_url: str | None = None,
        token: str = TOKEN,
        flags: dict[str, str] | None = None,
        environ: dict[str, str] | None = None,
    ) -> list[Daemon]:
        """Start `count` `outbox run` daemons (on this round's database unless told otherwise)."""
        url = database_url or self.database_url
        return [
            await self.fleet.spawn(url, token=token, flags=flags, environ=environ)
            for _ in range(count)
        ]

    @contextlib.asynccontextmanager
    async def receiver(self) -> AsyncIterator[dict[str, str]]:
        """The webhook receiver on this round's database, the simulator posting its signed
        statuses to it; yields the environment daemons need to reconcile through it."""
        settings = outbox.Settings(
            database_url=self.database_url,
            app_secret=RECEIVER_SECRET,
            webhook_verify_token="chaos-verify",
        )
        runner = web.AppRunner(outbox.webhooks.create_app(settings), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/webhook"
        self.simulator.notifier = StatusNotifier(url, RECEIVER_SECRET, PHONE, delay=0.05)
        try:
            yield {"META_APP_SECRET": RECEIVER_SECRET}
        finally:
            notifier, self.simulator.notifier = self.simulator.notifier, None
            await notifier.close()
            await runner.cleanup()

    async def accepted_reach(self, count: float, within: float = 60.0) -> None:
        """Wait until the simulator has accepted `count` sends (or `within` seconds passed)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.simulator.wait_for_accepted(math.ceil(count)), within)

    async def until_done(self, within: float) -> bool:
        """Wait until every committed row is finished, at most `within` seconds; whether they
        all were."""
        deadline = time.monotonic() + within
        while await self._unfinished():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.2)
        return True

    async def stop_daemons(self) -> None:
        """SIGTERM every daemon still running but a drain: each must exit 0."""
        for daemon in await self.fleet.stop_all():
            self.crashed += 1
            code = daemon.process.returncode
            self.notes.append(f"{daemon.name} exited {code}:\n{daemon.log_tail()}")

    async def finish(
        self,
        allow_failure: invariants.AllowFailure = invariants.never,
        token: str = TOKEN,
    ) -> invariants.Figures:
        """Stop the daemons (SIGTERM: each must exit 0) while a final `outbox run --drain`
        starts (it waits for rows still `sending`), then count the figures."""
        drain = await self.fleet.spawn(self.database_url, token=token, drain=True)
        await self.stop_daemons()
        try:
            await asyncio.wait_for(drain.process.wait(), DRAIN_TIMEOUT)
        except TimeoutError:
            await self.fleet.kill(drain)
            self.notes.append(f"the final drain ran over {DRAIN_TIMEOUT:.0f}s")
        if drain.process.returncode != 0:
            self.crashed += 1
            code = drain.process.returncode
            self.notes.append(f"the final drain exited {code}:\n{drain.log_tail()}")
        evidence = invariants.Evidence(
            committed=dict(self.load.committed),
            rows=await self._stored_rows(),
            accepted=list(self.simulator.accepted),
            kills=self.fleet.kill_times(),
            names={daemon.host: daemon.name for daemon in self.fleet.daemons},
            requests=self.simulator.requests,
        )
        figures = invariants.count(self.name, evidence, allow_failure)
        figures.seconds = time.monotonic() - self.started
        figures.crashed = self.crashed
        figures.notes[:0] = self.notes
        suspects = sorted(figures.suspects)[:5]
        figures.notes.extend(await self._histories(suspects))
        figures.notes.extend(self._daemon_lines(suspects))
        figures.notes.extend(
            f"  accepted {entry['callback']} {entry['wamid']} by {entry['host']} received "
            f"{entry['received'] % 1000:.3f} at {entry['at'] % 1000:.3f} ({entry['step']})"
            for entry in evidence.accepted
            if (callback := parse_callback(entry["callback"])) and callback.row in suspects
        )
        self.figures = figures
        lag = invariants.record_lag(evidence)
        print(f"\n{invariants.table([figures])}")
        print(
            f"  seed {SEED}; {len(self.load.rolled_back)} rows rolled back; "
            f"{len(evidence.kills)} SIGKILLs; longest accept-to-record {lag:.3f}s"
        )
        for reason, rows in figures.failures.most_common():
            print(f"  failed ({rows}): {reason}")
        for note in figures.notes[:20]:
            print(f"  {note}")
        return figures

    async def _unfinished(self) -> bool:
        conn = await asyncpg.connect(self.database_url)
        try:
            left = await conn.fetchval(
                "SELECT count(*) FROM outbox_messages WHERE status IN ('pending', 'sending')"
            )
        finally:
            await conn.close()
        return bool(left)

    def _daemon_lines(self, row_ids: list[int]) -> list[str]:
        """What each daemon logged about the rows a violation names."""
        marks = tuple(f"message {row}:" for row in row_ids) + tuple(
            f"message {row} " for row in row_ids
        )
        lines = []
        for daemon in self.fleet.daemons:
            text = daemon.log.read_text(errors="replace") if daemon.log.exists() else ""
            said = [line for line in text.splitlines() if any(m in line for m in marks)]
            lines += [f"  log {daemon.name}: {line}" for line in said[-20:]]
        return lines

    async def _histories(self, row_ids: list[int]) -> list[str]:
        """What the database says happened to the rows a violation names: their history events
        and the status webhooks stored for them, each with its time."""
        if not row_ids:
            return []
        conn = await asyncpg.connect(self.database_url)
        try:
            events = await conn.fetch(
                "SELECT message_id, part, kind, detail, extract(epoch FROM at) AS at "
                "FROM outbox_events WHERE message_id = ANY($1) ORDER BY id",
                row_ids,
            )
            statuses = await conn.fetch(
                "SELECT message_id, part, wamid, status, recipient, "
                "extract(epoch FROM received_at) AS received FROM outbox_statuses "
                "WHERE message_id = ANY($1) OR wamid IN (SELECT p ->> 'wamid' FROM "
                "outbox_messages m, jsonb_array_elements(m.parts) p WHERE m.id = ANY($1)) "
                "ORDER BY id",
                row_ids,
            )
        finally:
            await conn.close()
        lines = [
            f"  event {e['message_id']}:{e['part']} {e['kind']} {e['detail'] or ''} "
            f"at {float(e['at']) % 1000:.3f}"
            for e in events
        ]
        lines += [
            f"  status {s['message_id']}:{s['part']} {s['status']} {s['wamid']} to "
            f"{s['recipient']} received {float(s['received']) % 1000:.3f}"
            for s in statuses
        ]
        return lines

    async def _stored_rows(self) -> dict[int, invariants.StoredRow]:
        conn = await asyncpg.connect(self.database_url)
        try:
            records = await conn.fetch(
                "SELECT id, recipient, status, last_error, parts::text AS parts "
                "FROM outbox_messages"
            )
        finally:
            await conn.close()
        return {
            record["id"]: invariants.StoredRow(
                id=record["id"],
                recipient=record["recipient"],
                status=record["status"],
                last_error=record["last_error"],
                parts=[_recorded(part) for part in json.loads(record["parts"])],
            )
            for record in records
        }


def _recorded(part: dict[str, str]) -> tuple[str, float]:
    """A recorded part's wamid and when it was written (never, if the row does not say)."""
    written = part.get("sent_at")
    return part["wamid"], datetime.fromisoformat(written).timestamp() if written else math.inf


def assert_guarantees(figures: invariants.Figures) -> None:
    """Fail the round, with its notes, when a guarantee was broken."""
    broken = figures.violations()
    assert not broken, "; ".join(broken) + "\n" + "\n".join(figures.notes[:80])
