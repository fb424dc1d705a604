"""The daemon's connections: an asyncpg pool, used through `begin()` and `connect()`.

The daemon runs a few short statements per batch of rows. Through SQLAlchemy's async engine each
one paid for the greenlet adaptation and a pre-ping round trip, and every block for a BEGIN and a
COMMIT: together about a third of the daemon's CPU at 0 ms API latency. Here a one-statement
write runs on `connect()` in autocommit (one round trip), and only blocks of several statements
pay for `begin()`. Statements stay unnamed, for PgBouncer's sake (see database.create_engine),
and each runs in one round trip: its description is kept on the client (described.py).

With `prepared=True` (OUTBOX_PREPARED_STATEMENTS=on, for a connection known to reach PostgreSQL
directly or through PgBouncer 1.21+ with max_prepared_statements), or `prepared=None`
(OUTBOX_PREPARED_STATEMENTS=auto) on each connection that proves it reaches PostgreSQL itself
(direct.py), asyncpg's statement cache keeps them prepared instead, named, per connection: the
server parses each once and, once its generic plan proves as cheap as the custom ones
(plan_cache_mode auto, after five runs), stops planning it. The claim and the record spent about
a fifth of PostgreSQL's time per message planning at 64 rows in flight.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from outbox.database import CONNECT_TIMEOUT, server_settings
from outbox.described import DescribedConnection
from outbox.direct import reaches_postgres_itself

logger = logging.getLogger("outbox.database")
ACQUIRE_TIMEOUT = 30.0  # waiting for a free connection (or a new one) longer is an outage
RELEASE_TIMEOUT = 2.0
PREPARED_STATEMENTS = 100  # per connection, with prepared=True (asyncpg's default cache size)


async def _decode_json_columns(conn: asyncpg.Connection) -> None:
    """json and jsonb results as Python values, as the SQLAlchemy engine returns them."""
    for name in ("json", "jsonb"):
        await conn.set_type_codec(
            name, encoder=str, decoder=json.loads, schema="pg_catalog", format="text"
        )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Nothing to reset when a connection comes back: the daemon sets no session state, and
    asyncpg's default reset costs a round trip per checkout."""


async def _release(pool: asyncpg.Pool, conn: PoolConnectionProxy) -> None:
    """Give a connection back, waiting at most RELEASE_TIMEOUT for the server to acknowledge
    a cancelled statement (a task cancelled mid-statement); past that asyncpg drops the
    connection, which is all a silent database deserves: never an error of its own."""
    try:
        await pool.release(conn, timeout=RELEASE_TIMEOUT)
    except Exception as exc:
        logger.debug("dropped a connection the database did not release (%r)", exc)


def _connection(proxy: PoolConnectionProxy) -> asyncpg.Connection:
    # A pool's proxy passes for a Connection at run time (isinstance says so), not in the stubs.
    return cast(asyncpg.Connection, proxy)


class Pool:
    """Up to `size` connections to `dsn`, opened on first use; `command_timeout` bounds every
    statement, a connect waits at most CONNECT_TIMEOUT."""

    def __init__(
        self,
        dsn: str,
        *,
        size: int = 4,
        command_timeout: float | None = None,
        application_name: str | None = None,
        prepared: bool | None = False,
    ) -> None:
        self._dsn = dsn
        # None: prepared on each connection that proves it reaches PostgreSQL itself.
        self._prepared = prepared
        self.last_direct: bool | None = None  # what the last connection left to decide proved
        self._server_settings = server_settings(dsn, application_name)
        self._size = size
        self._command_timeout = command_timeout
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()

    def __repr__(self) -> str:  # never the DSN: it may carry a password
        return f"<Pool size={self._size}>"

    async def _get(self) -> asyncpg.Pool:
        if self._pool is None:
            async with self._opening:
                if self._pool is None:
                    self._pool = await asyncpg.create_pool(
                        self._dsn,
                        min_size=0,
                        max_size=self._size,
                        timeout=CONNECT_TIMEOUT,
                        command_timeout=self._command_timeout,
                        # Left to decide: unnamed until proved (init), asyncpg's own
                        # statements while it connects included.
                        statement_cache_size=PREPARED_STATEMENTS if self._prepared else 0,
                        connection_class=DescribedConnection,
                        server_settings=self._server_settings,
                        init=self._init,
                        reset=_keep_session,
                    )
        return self._pool

    async def _init(self, conn: asyncpg.Connection) -> None:
        """A new connection, before its first statement: left to decide (`prepared=None`), it
        keeps its statements prepared only once it proves it reaches PostgreSQL itself
        (direct.py). Each connection proves it for itself: a reconnect may land elsewhere (a
        failover to a pooler, another of several hosts)."""
        if self._prepared is None:
            direct = await reaches_postgres_itself(conn)  # its statement unnamed, as all so far
            if direct:
                inner: Any = conn  # asyncpg's cache, as statement_cache_size would have set it
                inner._stmt_cache.set_max_size(PREPARED_STATEMENTS)
                inner._stmt_cache_enabled = True
            self._tell(direct)
        await _decode_json_columns(conn)

    def _tell(self, direct: bool) -> None:
        """One line when a connection decides otherwise than the one before it (the first
        decision is in the daemon's start line: `statements`)."""
        before, self.last_direct = self.last_direct, direct
        if before is not None and before != direct:
            logger.info("a new database connection: %s", self.statements())

    def statements(self) -> str:
        """Whether this pool's statements stay prepared on the server, and why, in a phrase."""
        if self._prepared is not None:
            kept = "kept prepared" if self._prepared else "not kept prepared"
            return f"statements {kept} (OUTBOX_PREPARED_STATEMENTS)"
        if self.last_direct is None:
            return "statements kept prepared on connections that reach PostgreSQL itself"
        if self.last_direct:
            return "statements kept prepared (the connection reaches PostgreSQL itself)"
        return (
            "statements not kept prepared (a pooler or proxy may be in between; "
            "OUTBOX_PREPARED_STATEMENTS=on for PgBouncer 1.21+ with max_prepared_statements)"
        )

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection in autocommit: each statement is its own transaction."""
        pool = await self._get()
        conn = await pool.acquire(timeout=ACQUIRE_TIMEOUT)
        try:
            yield _connection(conn)
        except asyncpg.InternalClientError:
            # Its protocol state is broken, e.g. by the FATAL error a server that shuts down
            # sends before it closes the connection: never hand it out again.
            conn.terminate()
            raise
        finally:
            await _release(pool, conn)

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection in a transaction, committed when the block ends without an error."""
        async with self.connect() as conn, conn.transaction():
            yield conn

    async def close(self, within: float) -> None:
        """Close the connections gracefully, or drop them when the database does not answer
        within `within` seconds or fails meanwhile (a restart): never an error of its own."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        _quiet_abandoned_releases(asyncio.get_running_loop())
        try:
            async with asyncio.timeout(within):
                await pool.close()
        except TimeoutError:
            logger.warning("the database did not answer while closing connections; dropping them")
            pool.terminate()
        except Exception as exc:
            logger.debug("dropped the connections the database failed to close (%r)", exc)
            pool.terminate()


def _quiet_abandoned_releases(loop: asyncio.AbstractEventLoop) -> None:
    """At shutdown, a connection given back while the database swallows everything leaves
    asyncpg's own release task to time out after its caller was cancelled; asyncio would print
    its unretrieved TimeoutError as a traceback. Those say nothing the stop line does not: one
    debug line each instead. Every other unhandled error is reported as before."""
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        task = context.get("future")
        coroutine = task.get_coro() if isinstance(task, asyncio.Task) else None
        name = getattr(coroutine, "__qualname__", "")
        if name == "PoolConnectionHolder.release":
            logger.debug(
                "a connection released at shutdown was dropped (%r)", context.get("exception")
            )
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
