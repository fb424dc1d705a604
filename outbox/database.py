"""Which PostgreSQL to use, and the async engine on it.

The URL is handed to asyncpg unchanged (after dropping a `+asyncpg` suffix), so anything asyncpg
accepts works: unix sockets (`?host=/run/pg`), sslmode, several hosts. Unset means embedded.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg
import backoff
import sqlalchemy.exc

from outbox import embedded
from outbox.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine


T = TypeVar("T")
CONNECT_TIMEOUT = 10.0
logger = logging.getLogger("outbox.database")


def asyncpg_dsn(url: str) -> str:
    """The URL as asyncpg wants it: `postgresql+asyncpg://` becomes `postgresql://`."""
    return re.sub(r"^postgres(ql)?\+asyncpg://", "postgresql://", url)


async def resolve_dsn(settings: Settings) -> str:
    """OUTBOX_DATABASE_URL, or the embedded server under OUTBOX_HOME (started if needed)."""
    if settings.database_url:
        return asyncpg_dsn(settings.database_url)
    return await asyncio.to_thread(embedded.start, settings.home)


def server_settings(dsn: str, application_name: str | None) -> dict[str, str] | None:
    """`application_name` for pg_stat_activity (outbox-run, outbox-webhook, ...), unless the
    URL names one itself."""
    if application_name is None or "application_name" in dsn:
        return None
    return {"application_name": application_name}


def create_engine(
    dsn: str,
    *,
    pool_size: int = 5,
    command_timeout: float | None = None,
    application_name: str | None = None,
) -> AsyncEngine:
    """An async SQLAlchemy engine whose connections asyncpg opens from `dsn` as given;
    `command_timeout` bounds every statement (the daemon's are all short).

    No statement stays prepared on the server, so that the engine works through PgBouncer in
    transaction pooling mode, which (before 1.21) cannot carry a named prepared statement from
    one transaction to the next: with asyncpg's statement cache off, every statement is the
    unnamed one, parsed again in the same round trip as each execution; SQLAlchemy's cache keeps
    only the client-side description. Always, not only behind a pooler: a pooler cannot be
    detected reliably, and missing one breaks as soon as two clients share a server connection
    ("prepared statement __asyncpg_stmt_1__ does not exist", or "already exists"). The cost,
    measured against PostgreSQL 15 directly:
    0.3 to 0.5 ms more per statement, 3 to 10% of a claim or a write of 100 rows; a few
    microseconds per row, beside a Graph API request of 100 ms or more.
    """

    async def connect() -> asyncpg.Connection:
        # A bounded connect: a silent network must not hang a write (or a shutdown) for long.
        return await asyncpg.connect(
            dsn,
            timeout=CONNECT_TIMEOUT,
            command_timeout=command_timeout,
            statement_cache_size=0,
            server_settings=server_settings(dsn, application_name),
        )

    def creator() -> Any:
        # What `async_creator` does, plus the argument it cannot pass: asyncpg before 0.31 names
        # every prepare() unless told otherwise.
        dbapi: Any = engine.sync_engine.dialect.loaded_dbapi
        return dbapi.connect(async_creator_fn=connect, prepared_statement_name_func=_unnamed)

    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(
        "postgresql+asyncpg://", creator=creator, pool_size=pool_size, pool_pre_ping=True
    )
    return engine


def _unnamed() -> str:
    return ""


def short_error(exc: BaseException) -> str:
    """A one-line description of a database error, for logs and the CLI."""
    cause = exc.orig if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.orig else exc
    text = str(cause).splitlines()[0] if str(cause) else ""
    return f"{type(cause).__name__}: {text}" if text else type(cause).__name__


# SQLSTATE classes and codes that say "the database is unreachable or busy", not "this data is
# wrong": connection exceptions, shutdowns, lack of resources, serialisation failures, deadlocks,
# a statement cancelled (statement_timeout, an operator), a read-only server (mid-failover), a
# session the server ended for idling (idle_session_timeout).
_RETRYABLE_SQLSTATES = (
    *("08", "53", "57P01", "57P02", "57P03", "40001", "40P01"),
    *("57014", "25006", "57P05"),
)


def causes(exc: BaseException) -> Iterator[BaseException]:
    """exc, the driver error SQLAlchemy wraps, and their causes."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        orig = getattr(current, "orig", None)
        pending.extend([orig if isinstance(orig, BaseException) else None, current.__cause__])


def is_connection_error(exc: BaseException) -> bool:
    """True when retrying later can succeed (the connection or the server failed); False for
    errors about the statement or its data, which would fail the same way forever."""
    for cause in causes(exc):
        if isinstance(cause, asyncpg.InvalidCachedStatementError):
            # A prepared statement (OUTBOX_PREPARED_STATEMENTS) outlived a schema change inside
            # a transaction: asyncpg has dropped it, and the next try prepares it again.
            return True
        if isinstance(cause, ValueError):  # asyncpg's client-side DataError is one
            return False
        sqlstate = getattr(cause, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate:
            return sqlstate.startswith(_RETRYABLE_SQLSTATES)
    for cause in causes(exc):
        if isinstance(cause, sqlalchemy.exc.DBAPIError) and cause.connection_invalidated:
            return True
        if isinstance(
            cause,
            OSError
            | asyncpg.InterfaceError
            | asyncpg.InternalClientError  # the connection's protocol state, not the statement
            | asyncpg.PostgresConnectionError
            | sqlalchemy.exc.InterfaceError
            | sqlalchemy.exc.TimeoutError,
        ):
            return True
    return False


async def persistently(
    operation: Callable[..., Awaitable[T]],
    *args: Any,
    what: str,
    max_tries: int | None = None,
    give_up: Callable[[], bool] = lambda: False,
    max_delay: float = 5.0,
) -> T:
    """Run a database operation until it succeeds, waiting 0.1 s doubling to `max_delay` between
    tries: an outage must not lose an accepted wamid or leave a row leased. Only connection-level
    errors are retried; any other error, `max_tries`, or `give_up()` turning true ends it."""

    def log(details: Any) -> None:
        logger.warning(
            "%s failed (%s); retrying in %.1fs",
            what,
            short_error(details["exception"]),
            details["wait"],
        )

    @backoff.on_exception(
        backoff.expo,
        Exception,
        factor=0.1,
        max_value=max_delay,
        max_tries=max_tries,
        giveup=lambda exc: give_up() or not is_connection_error(exc),
        jitter=None,
        on_backoff=log,
        logger=None,
    )
    async def attempt() -> T:  # a real coroutine function, so backoff awaits and retries it
        return await operation(*args)

    return await attempt()
