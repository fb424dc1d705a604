"""LISTEN on the `outbox` channel over a dedicated connection that reconnects on its own.

Every (re)connection also wakes the daemon, since notifications sent while it was away are lost.
A LISTEN counts only once a NOTIFY sent from another connection has come back: through a pooler
in transaction mode (PgBouncer) LISTEN "succeeds" and nothing ever arrives. Then the daemon says
so once and relies on its polling; the listener looks again now and then, silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg

from outbox.cancel import cancel_and_wait
from outbox.database import CONNECT_TIMEOUT, is_connection_error, server_settings, short_error
from outbox.retry import expo_delays
from outbox.schema import NOTIFY_CHANNEL

logger = logging.getLogger("outbox.listener")

PROBE_TIMEOUT = 3.0  # a direct connection hears its probe within milliseconds
RECHECK_INTERVAL = 300.0  # between silent looks once LISTEN proved impossible
QUERY_TIMEOUT = 5.0
_CONNECTION_ERRORS = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)


class ListenImpossible(Exception):
    """The connection works, but notifications sent to it never arrive (or LISTEN is refused)."""


class NotificationListener:
    def __init__(
        self,
        dsn: str,
        on_notify: Callable[[], None],
        *,
        on_payload: Callable[[str], None] | None = None,
        probe_timeout: float = PROBE_TIMEOUT,
        recheck_interval: float = RECHECK_INTERVAL,
    ) -> None:
        self._dsn = dsn
        self._on_notify = on_notify
        self._on_payload = on_payload  # told a notification's payload when it has one
        self._probe_timeout = probe_timeout
        self._recheck_interval = recheck_interval
        self._task: asyncio.Task[None] | None = None
        self._delays = expo_delays(0.5, 10.0)
        self._failed = False  # the last try failed on the connection: say when it is back
        self._impossible = False  # LISTEN proved useless here, and the daemon was told once
        self.listening = False  # a proven LISTEN is in place

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-listener")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait([self._task])

    def _notified(self, *args: Any) -> None:
        # asyncpg calls (connection, pid, channel, payload); a new row's NOTIFY has no payload.
        payload = args[3] if len(args) > 3 else ""
        if payload and self._on_payload is not None:
            self._on_payload(payload)
        self._on_notify()

    async def _run(self) -> None:
        while True:
            try:
                await self._listen()
            except ListenImpossible as exc:
                if not self._impossible:
                    logger.warning(
                        "LISTEN does not work on this connection (%s): is it a pooler in "
                        "transaction mode? Set OUTBOX_LISTEN_URL to a direct connection; "
                        "polling instead",
                        exc,
                    )
                self._impossible, self._failed = True, False
                await asyncio.sleep(self._recheck_interval)
                continue
            except _CONNECTION_ERRORS as exc:
                delay = next(self._delays)
                logger.warning(
                    "LISTEN connection failed (%s); retrying in %.1fs", short_error(exc), delay
                )
                self._failed = True
                await asyncio.sleep(delay)
                continue
            logger.warning("LISTEN connection lost; reconnecting")

    def _in_place(self) -> None:
        if self._failed:
            logger.info("LISTEN connection restored")
        elif self._impossible:
            logger.info("LISTEN works on this connection now; notifications wake the daemon")
        self._delays = expo_delays(0.5, 10.0)
        self._failed = self._impossible = False
        self.listening = True
        self._on_notify()

    async def _listen(self) -> None:
        """Connect, prove that notifications arrive, LISTEN, and return when the connection is
        lost. Connection errors propagate; ListenImpossible when notifications cannot arrive."""
        lost = asyncio.Event()
        conn = await asyncpg.connect(
            self._dsn,
            timeout=CONNECT_TIMEOUT,
            statement_cache_size=0,  # LISTEN runs as a statement: never a named one (a pooler)
            server_settings=server_settings(self._dsn, "outbox-run-listen"),
        )
        try:
            conn.add_termination_listener(lambda _: lost.set())
            await self._probe(conn)
            await _listen_on(conn, NOTIFY_CHANNEL, self._notified)
            self._in_place()
            while not lost.is_set() and not conn.is_closed():
                # A silent network can hide a dead socket: ask it now and then.
                try:
                    await asyncio.wait_for(lost.wait(), 15)
                except TimeoutError:
                    await conn.execute("SELECT 1", timeout=QUERY_TIMEOUT)
        finally:
            self.listening = False
            conn.terminate()

    async def _probe(self, conn: asyncpg.Connection) -> None:
        """LISTEN on a channel of its own, NOTIFY it from a second connection, and wait for it.

        Through PgBouncer in transaction mode the LISTEN stays behind on whichever server
        connection ran it, which then serves other clients: the notification never comes back.
        """
        channel = f"outbox_probe_{uuid.uuid4().hex}"
        arrived = asyncio.Event()

        def heard(*_: Any) -> None:
            arrived.set()

        await _listen_on(conn, channel, heard)
        sender = await asyncpg.connect(self._dsn, timeout=CONNECT_TIMEOUT, statement_cache_size=0)
        try:
            await sender.execute(f"NOTIFY {channel}", timeout=QUERY_TIMEOUT)
            await sender.close(timeout=QUERY_TIMEOUT)
        finally:
            sender.terminate()  # when anything above failed; nothing left to do otherwise
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(arrived.wait(), self._probe_timeout)
        # UNLISTEN also shows that the listening connection still answers: if it does not, the
        # connection is to blame, not LISTEN.
        await conn.execute(f"UNLISTEN {channel}", timeout=QUERY_TIMEOUT)
        if not arrived.is_set():
            raise ListenImpossible(f"a NOTIFY did not arrive within {self._probe_timeout:g}s")


async def _listen_on(conn: asyncpg.Connection, channel: str, callback: Callable[..., None]) -> None:
    """add_listener, with a refusal that is not about the connection made ListenImpossible."""
    try:
        # asyncpg sends LISTEN without a timeout: a black-holed network must not hang it.
        await asyncio.wait_for(conn.add_listener(channel, callback), QUERY_TIMEOUT)
    except asyncpg.PostgresError as exc:
        if is_connection_error(exc):
            raise
        raise ListenImpossible(short_error(exc)) from exc
