"""The demo's stage: the Graph API simulator and the webhook receiver inside this process, and
the daemon as a real `outbox run` subprocess that a chapter can SIGKILL and start again.

Whatever ends the demo (its end, an error, Ctrl-C, SIGTERM), close() stops every process the
stage started: nothing it started outlives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import sqlalchemy as sa
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from outbox import store
from outbox.database import create_engine
from outbox.enqueue import enqueue
from outbox.errors import OutboxError
from outbox.settings import Settings
from outbox.simulator import Simulator, serve
from outbox.status import Delivery, get_status
from outbox.status_webhooks import StatusNotifier
from outbox.webhooks import create_app

TOKEN = "demo-token"  # noqa: S105 (the local simulator's, not a secret)
PHONE_NUMBER_ID = "100000000000001"
APP_SECRET = "demo-app-secret"  # noqa: S105 (signs the simulator's webhooks locally)
VERIFY_TOKEN = "demo-verify-token"  # noqa: S105
STATUS_DELAY = 0.2  # seconds between a message's sent, delivered and read webhooks
# Short leases and delays so that a crash or an outage takes seconds to get over, not minutes.
DAEMON_FLAGS = (
    "--lease-seconds", "3", "--poll-interval", "0.5", "--retry-delay", "0.5",
    "--reconcile-seconds", "1",
)  # fmt: skip
STOP_WITHIN = 35.0  # the daemon's own shutdown bound is 30 s
PHOTOS = "https://example.com/photos"
# The app's own table, in a schema of its own: the business data the messages go with.
BOOKINGS = (
    "DROP SCHEMA IF EXISTS outbox_demo CASCADE",
    "CREATE SCHEMA outbox_demo",
    """CREATE TABLE outbox_demo.bookings (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        guest text NOT NULL, phone text NOT NULL, place text NOT NULL, dates text NOT NULL,
        booked_at timestamptz NOT NULL DEFAULT now())""",
)


class DemoFailed(OutboxError):
    """A chapter did not come out as the story says; the daemon's log tail goes with it."""


async def create_bookings_table(connection: asyncpg.Connection) -> None:
    for statement in BOOKINGS:
        await connection.execute(statement)


async def book(session: AsyncSession, guest: str, phone: str, place: str, dates: str) -> int:
    """The app's business write: a booking, in the caller's transaction."""
    booked = await session.execute(
        sa.text(
            "INSERT INTO outbox_demo.bookings (guest, phone, place, dates) "
            "VALUES (:guest, :phone, :place, :dates) RETURNING id"
        ),
        {"guest": guest, "phone": phone, "place": place, "dates": dates},
    )
    return int(booked.scalar_one())


class Stage:
    """The simulator, the receiver and the daemon of one demo run, on the database `dsn`."""

    def __init__(self, dsn: str, workdir: Path) -> None:
        self.dsn = dsn
        self.workdir = workdir
        self.engine: AsyncEngine = create_engine(dsn)
        self.simulator = Simulator(access_token=TOKEN, phone_number_id=PHONE_NUMBER_ID)
        self.api_url = ""
        self.webhook_url = ""
        self.daemon: asyncio.subprocess.Process | None = None
        self.daemon_id: str | None = None  # its row in outbox_daemons
        self.started: list[asyncio.subprocess.Process] = []
        self._logs: list[Path] = []
        self._runners: list[web.AppRunner] = []

    async def open(self) -> None:
        settings = Settings(
            database_url=self.dsn, app_secret=APP_SECRET, webhook_verify_token=VERIFY_TOKEN
        )
        receiver = web.AppRunner(create_app(settings), access_log=None)
        await receiver.setup()
        self._runners.append(receiver)
        await web.TCPSite(receiver, "127.0.0.1", 0).start()
        self.webhook_url = f"http://127.0.0.1:{receiver.addresses[0][1]}/webhook"
        self.simulator.notifier = StatusNotifier(
            self.webhook_url, APP_SECRET, PHONE_NUMBER_ID, delay=STATUS_DELAY
        )
        simulator = await serve(self.simulator, "127.0.0.1", 0)
        self._runners.insert(0, simulator)  # closed first: its webhooks go to the receiver
        self.api_url = f"http://127.0.0.1:{simulator.addresses[0][1]}"

    async def close(self) -> None:
        """Stop the daemon (gracefully while the API still answers), then the servers."""
        try:
            await self.stop_daemon()
        finally:
            for runner in self._runners:
                await runner.cleanup()
            self._runners.clear()
            await self.engine.dispose()

    def kill_leftovers(self) -> None:
        """The last resort, outside any event loop: SIGKILL whatever is still running."""
        for process in self.started:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGKILL)

    # --- the daemon ----------------------------------------------------------------------

    async def start_daemon(self) -> int:
        """`outbox run` on the demo's database and simulator; its pid, once it reports in."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OUTBOX_", "META_"))}
        env.update(
            OUTBOX_DATABASE_URL=self.dsn,
            META_ACCESS_TOKEN=TOKEN,
            META_PHONE_NUMBER_ID=PHONE_NUMBER_ID,
            META_GRAPH_API_URL=self.api_url,
            OUTBOX_MEDIA_MODE="link",  # its photos are links to example.com
        )
        log = self.workdir / f"daemon-{len(self._logs) + 1}.log"
        self._logs.append(log)
        with log.open("wb") as output:
            # -P: not the current directory first, which in a checkout holds the sources
            # instead of the installed package.
            self.daemon = await asyncio.create_subprocess_exec(
                sys.executable, "-P", "-m", "outbox", "run", *DAEMON_FLAGS,
                env=env, stdin=asyncio.subprocess.DEVNULL, stdout=output, stderr=output,
            )  # fmt: skip
        self.started.append(self.daemon)
        pid = self.daemon.pid
        await self.until(lambda: self._reported(pid), within=30, what=f"the daemon (pid {pid})")
        return pid

    async def _reported(self, pid: int) -> bool:
        if self.daemon is None or self.daemon.returncode is not None:
            code = self.daemon.returncode if self.daemon else None
            raise DemoFailed(f"the daemon (pid {pid}) exited with status {code}")
        state = await self._daemon_row(pid)
        self.daemon_id = None if state is None else str(state["id"])
        return state is not None

    async def _daemon_row(self, pid: int | None) -> dict[str, Any] | None:
        """The daemon's row as `outbox stats` shows it (its id is host:pid:random)."""
        async with self.engine.connect() as conn:
            daemons = (await store.backlog_stats(conn))["daemons"]
        mine = [d for d in daemons if str(d["id"]).split(":")[-2] == str(pid)]
        return mine[0] if mine else None

    async def daemon_state(self) -> tuple[str, str | None]:
        """The running daemon's state and reason, as `outbox stats` shows them."""
        row = await self._daemon_row(self.daemon.pid if self.daemon else None)
        return ("gone", None) if row is None else (str(row["state"]), row["reason"])

    async def kill_daemon(self) -> int:
        """SIGKILL: no shutdown, no release of its rows; their leases have to run out."""
        assert self.daemon is not None
        pid = self.daemon.pid
        self.daemon.kill()
        await self.daemon.wait()
        self.daemon = None
        # What a clean stop does itself: its row would show a dead daemon in `outbox stats`.
        async with self.engine.begin() as conn:
            await conn.execute(store.FORGET_DAEMON, {"daemon": self.daemon_id})
        return pid

    async def stop_daemon(self) -> None:
        """SIGTERM, as a service manager stops it; SIGKILL if it is not gone in time."""
        daemon, self.daemon = self.daemon, None
        if daemon is None or daemon.returncode is not None:
            return
        daemon.terminate()
        try:
            await asyncio.wait_for(asyncio.shield(daemon.wait()), STOP_WITHIN)
        except TimeoutError:
            daemon.kill()
            await daemon.wait()
        except asyncio.CancelledError:
            daemon.kill()  # reaped by kill_leftovers' caller at the latest
            raise

    def log_tail(self, lines: int = 20) -> str:
        tails = []
        for log in self._logs:
            text = log.read_text(errors="replace").splitlines()[-lines:] if log.exists() else []
            tails.append(f"--- {log.name} ---\n" + "\n".join(text))
        return "\n".join(tails)

    # --- the rows -----------------------------------------------------------------------

    async def commit(self, recipient: str, text: str, key: str, photos: Sequence[str] = ()) -> int:
        """One message in a transaction of its own, committed."""
        async with AsyncSession(self.engine) as session, session.begin():
            media = {"images": [f"{PHOTOS}/{photo}" for photo in photos]} if photos else None
            return await enqueue(
                session, recipient, text, media_urls=media, idempotency_key=f"demo:{key}"
            )

    # --- watching the rows ---------------------------------------------------------------

    async def holds_any(self, table: str) -> bool:
        """Whether one of outbox's tables holds a row yet (what the receiver has stored)."""
        async with self.engine.connect() as conn:
            return bool(await conn.scalar(sa.text(f"SELECT EXISTS (SELECT 1 FROM {table})")))

    async def deliveries(self, ids: Sequence[int]) -> list[Delivery]:
        async with self.engine.connect() as conn:
            return [await get_status(conn, message_id) for message_id in ids]

    async def until(self, done: Callable[[], Awaitable[bool]], *, within: float, what: str) -> None:
        deadline = asyncio.get_running_loop().time() + within
        while not await done():
            if asyncio.get_running_loop().time() > deadline:
                raise DemoFailed(f"{what}: not there after {within:.0f} s")
            await asyncio.sleep(0.05)

    async def settled(
        self, ids: Sequence[int], statuses: Sequence[str], *, within: float = 30
    ) -> list[Delivery]:
        """The messages once every one of them is in one of `statuses`."""
        found: list[Delivery] = []

        async def reached() -> bool:
            nonlocal found
            found = await self.deliveries(ids)
            return all(d.status in statuses for d in found)

        try:
            await self.until(reached, within=within, what="the messages")
        except DemoFailed:
            now = ", ".join(f"{d.id} {d.status}" for d in found)
            raise DemoFailed(f"expected {' or '.join(statuses)}, found {now}") from None
        return found
