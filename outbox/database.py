"""Which PostgreSQL to use, and the async engine on it.

The URL is handed to asyncpg unchanged (after dropping a `+asyncpg` suffix), so anything asyncpg
accepts works: unix sockets (`?host=/run/pg`), sslmode, several hosts. Unset means embedded.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
import backoff
import sqlalchemy.exc
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from outbox import embedded
from outbox.settings import Settings

T = TypeVar("T")
logger = logging.getLogger("outbox.database")


def asyncpg_dsn(url: str) -> str:
    """The URL as asyncpg wants it: `postgresql+asyncpg://` becomes `postgresql://`."""
    return re.sub(r"^postgres(ql)?\+asyncpg://", "postgresql://", url)


async def resolve_dsn(settings: Settings) -> str:
    """OUTBOX_DATABASE_URL, or the embedded server under OUTBOX_HOME (started if needed)."""
    if settings.database_url:
        return asyncpg_dsn(settings.database_url)
    return await asyncio.to_thread(embedded.start, settings.home)


def create_engine(dsn: str, *, pool_size: int = 5) -> AsyncEngine:
    """An async SQLAlchemy engine whose connections asyncpg opens from `dsn` as given."""

    async def connect() -> asyncpg.Connection:
        return await asyncpg.connect(dsn)

    return create_async_engine(
        "postgresql+asyncpg://",
        async_creator=connect,
        pool_size=pool_size,
        pool_pre_ping=True,
    )


def short_error(exc: BaseException) -> str:
    """A one-line description of a database error, for logs and the CLI."""
    cause = exc.orig if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.orig else exc
    text = str(cause).splitlines()[0] if str(cause) else ""
    return f"{type(cause).__name__}: {text}" if text else type(cause).__name__


async def persistently(
    operation: Callable[..., Awaitable[T]], *args: Any, what: str, max_tries: int | None = None
) -> T:
    """Run a database operation until it succeeds (or `max_tries`), waiting 0.1 s doubling to 5 s
    between tries: an outage must not lose an accepted wamid or leave a row leased."""

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
        max_value=5,
        max_tries=max_tries,
        jitter=None,
        on_backoff=log,
        logger=None,
    )
    async def attempt() -> T:  # a real coroutine function, so backoff awaits and retries it
        return await operation(*args)

    return await attempt()
