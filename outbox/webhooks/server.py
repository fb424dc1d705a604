"""`outbox webhook`'s HTTP server: the receiver app on a TCP port, safe from slow and excess
connections (a slowloris).

aiohttp bounds neither the time a request takes to arrive nor the number of connections, so
every connection is wrapped in a guard: its request headers must arrive within HEADER_TIMEOUT of
the connection (or of the previous answer), else it is closed; the body has its own deadline in
the app. Connections are bounded below the file descriptor limit (raised to its hard limit at
start): at the bound, a new connection closes the oldest one still waiting for its request, or
is answered 503 when every connection is busy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
from collections.abc import Awaitable, Callable
from typing import Any, cast

from aiohttp import web

from outbox.metrics.receiver import ReceiverMetrics
from outbox.webhooks.app import METRICS

logger = logging.getLogger("outbox.webhooks")

HEADER_TIMEOUT = 10.0  # seconds for a request's headers to arrive
MAX_CONNECTIONS = 10_000
FD_RESERVE = 64  # descriptors kept for the database, the spool, logs and the listening socket
BACKLOG = 4096  # connections the kernel queues for us during a burst (capped by somaxconn)
MAX_NOFILE = 1 << 20
REFUSED = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def raise_fd_limit() -> int:
    """Raise this process's soft limit of open files to its hard limit; the limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = MAX_NOFILE if hard == resource.RLIM_INFINITY else min(hard, MAX_NOFILE)
    if soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
    return soft


class Connections:
    """The open connections, the ones waiting for a request (oldest first), and the bound."""

    def __init__(self, limit: int, header_timeout: float, metrics: ReceiverMetrics) -> None:
        self.limit = limit
        self.header_timeout = header_timeout
        self.metrics = metrics
        self.open: dict[Any, _Guard] = {}  # by transport
        self.waiting: dict[_Guard, None] = {}  # insertion order: oldest first

    def admit(self, guard: _Guard) -> bool:
        """Room for `guard`: made by closing the oldest idle connection if need be; False
        when every connection is busy with a request."""
        if len(self.open) >= self.limit:
            if not self.waiting:
                return False
            next(iter(self.waiting)).close("evicted")
        return True

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """The request's headers have arrived: no deadline while it is handled; the next
        request on the connection gets a new one."""
        guard = self.open.get(request.transport)
        if guard is not None:
            guard.disarm()
        try:
            return await handler(request)
        finally:
            if guard is not None:
                guard.arm()


class _Guard(asyncio.Protocol):
    """One connection: aiohttp's protocol inside, a deadline for each request to arrive."""

    def __init__(self, inner: asyncio.Protocol, connections: Connections) -> None:
        self._inner = inner
        self._connections = connections
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        connections = self._connections
        if not connections.admit(self):
            self._refused = True
            connections.metrics.connections_closed.labels("refused").inc()
            transport.write(REFUSED)
            transport.close()
            return
        self._transport = transport
        connections.open[transport] = self
        connections.metrics.connections.set(len(connections.open))
        self.arm()
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if not self._refused:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return None if self._refused else self._inner.eof_received()

    def pause_writing(self) -> None:
        if not self._refused:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if not self._refused:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._refused:
            return
        self._forget()
        self._inner.connection_lost(exc)

    def arm(self) -> None:
        """Start the deadline for the next request to arrive."""
        self.disarm()
        if self._transport is None:
            return
        self._connections.waiting[self] = None
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._connections.header_timeout, self.close, "deadline")

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._connections.waiting.pop(self, None)

    def close(self, reason: str) -> None:
        """Close the connection: its request did not arrive in time, or room is needed."""
        transport = self._transport
        if transport is None:
            return
        self._forget()
        self._connections.metrics.connections_closed.labels(reason).inc()
        transport.abort()

    def _forget(self) -> None:
        self.disarm()
        connections = self._connections
        if self._transport is not None:
            connections.open.pop(self._transport, None)
            connections.metrics.connections.set(len(connections.open))
        self._transport = None


class Served:
    """A running receiver server; `close()` stops listening, finishes the requests in flight
    and stops the app."""

    def __init__(self, runner: web.AppRunner, server: asyncio.AbstractServer) -> None:
        self._runner = runner
        self._server = server

    async def close(self) -> None:
        self._server.close()
        await self._runner.cleanup()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 5)


async def serve(
    app: web.Application, host: str, port: int, *, header_timeout: float = HEADER_TIMEOUT
) -> Served:
    """Serve the receiver `app` (from create_app) on host:port with the guards above."""
    limit = max(16, min(MAX_CONNECTIONS, raise_fd_limit() - FD_RESERVE))
    connections = Connections(limit, header_timeout, app[METRICS])
    app.middlewares.append(connections.middleware)
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=header_timeout)
    await runner.setup()
    try:
        server = await asyncio.get_running_loop().create_server(
            lambda: _Guard(runner.server(), connections),  # type: ignore[misc]
            host,
            port,
            backlog=BACKLOG,
            reuse_address=True,
        )
    except BaseException:
        await runner.cleanup()
        raise
    logger.debug("serving with at most %d connections", limit)
    return Served(runner, server)
