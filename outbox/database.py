"""Which PostgreSQL to use, and the async engine on it.

The URL is handed to asyncpg unchanged (after dropping a `+asyncpg` suffix), so anything asyncpg
accepts works: unix sockets (`?host=/run/pg`), sslmode, several hosts. Unset means embedded.
"""

from __future__ import annotations

import asyncio
import re

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from outbox import embedded
from outbox.settings import Settings


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
