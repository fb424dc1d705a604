"""A TCP proxy to PostgreSQL that tests can cut: the database "goes away" for the daemon only.

cut() aborts every open connection and refuses new ones until restore(), as a failed network or a
stopped server would look from the daemon's side, while the test keeps its own direct access.
stall() is the nastier failure: connections stay open but nothing gets through (a black hole).
close_delay holds back the end of a connection the server closed, as a busy host or network does:
the client reads the server's last words (a FATAL error) well before the connection ends.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import parse_qs, urlsplit, urlunsplit


class PostgresProxy:
    def __init__(self, dsn: str) -> None:
        parts = urlsplit(dsn)
        socket_dir = parse_qs(parts.query).get("host", [""])[0]
        port = parts.port or 5432
        self._unix = f"{socket_dir}/.s.PGSQL.{port}" if socket_dir.startswith("/") else None
        self._target = (parts.hostname or "127.0.0.1", port)
        self._dsn = parts
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self.is_cut = False
        self.is_stalled = False
        self.close_delay = 0.0

    async def start(self) -> str:
        """Start listening; the DSN that goes through the proxy."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        user = self._dsn.username or "postgres"
        password = f":{self._dsn.password}" if self._dsn.password else ""
        return urlunsplit(
            ("postgresql", f"{user}{password}@127.0.0.1:{port}", self._dsn.path, "", "")
        )

    def cut(self) -> None:
        self.is_cut = True
        for writer in list(self._open):
            writer.transport.abort()
        self._open.clear()

    def stall(self) -> None:
        self.is_stalled = True

    def restore(self) -> None:
        self.is_cut = False
        self.is_stalled = False

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.is_cut:
            writer.transport.abort()
            return
        try:
            if self._unix:
                up_reader, up_writer = await asyncio.open_unix_connection(self._unix)
            else:
                up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self._open.update((writer, up_writer))
        await asyncio.gather(
            self._pipe(reader, up_writer),
            self._pipe(up_reader, writer, delay_close=True),
            return_exceptions=True,
        )
        for side in (writer, up_writer):
            self._open.discard(side)
            side.transport.abort()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay_close: bool = False
    ) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while data := await reader.read(65536):
                if not self.is_stalled:  # a black hole swallows what it is sent
                    writer.write(data)
                    await writer.drain()
        if delay_close and not self.is_cut:
            await asyncio.sleep(self.close_delay)
        writer.transport.abort()
