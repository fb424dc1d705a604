"""A scratch database for a benchmark run: created on the chosen server, migrated, dropped."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import asyncpg

import outbox
from outbox import migrate
from outbox.database import resolve_dsn


@asynccontextmanager
async def scratch_database() -> AsyncIterator[tuple[str, str]]:
    """Yield (dsn, server version) of a migrated database on OUTBOX_DATABASE_URL's server (else
    the embedded one), dropped afterwards so benchmarks never touch a real outbox."""
    server = await resolve_dsn(outbox.Settings.from_env())
    name = f"outbox_bench_{uuid.uuid4().hex[:8]}"
    dsn = urlunsplit(urlsplit(server)._replace(path=f"/{name}"))
    admin = await asyncpg.connect(server)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        await asyncio.to_thread(migrate.upgrade, dsn)
        yield dsn, str(await admin.fetchval("SHOW server_version"))
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
