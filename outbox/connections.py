"""Run a SQLAlchemy Core statement on whichever connection the caller holds.

The public API works inside the caller's transaction on a SQLAlchemy AsyncSession or
AsyncConnection, a raw asyncpg Connection, or (sync) a Session or Connection. Statements never
commit. Bind parameters are plain str/int/datetime values (JSON is cast in SQL), so the asyncpg
path needs no SQLAlchemy type processing: it compiles once to `$n` SQL and passes values in order.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any, TypeAlias

import asyncpg
from sqlalchemy import Connection
from sqlalchemy.dialects.postgresql import asyncpg as asyncpg_dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import Session
from sqlalchemy.sql import Executable
from sqlalchemy.sql.compiler import SQLCompiler

AsyncConnectionLike: TypeAlias = AsyncSession | AsyncConnection | asyncpg.Connection
SyncConnectionLike: TypeAlias = Session | Connection
Row: TypeAlias = dict[str, Any]

_DIALECT = asyncpg_dialect.dialect()  # type: ignore[no-untyped-call]


@lru_cache(maxsize=256)
def _compiled_for_asyncpg(statement: Executable) -> SQLCompiler:
    compiled = statement.compile(dialect=_DIALECT)  # type: ignore[attr-defined]
    assert isinstance(compiled, SQLCompiler)
    return compiled


async def fetch_all(
    conn: AsyncConnectionLike, statement: Executable, params: Mapping[str, Any] | None = None
) -> list[Row]:
    """All result rows as dicts; every statement in store.py returns rows."""
    params = params or {}
    if isinstance(conn, asyncpg.Connection):
        compiled = _compiled_for_asyncpg(statement)
        values = compiled.construct_params(dict(params)) or {}
        args = [values[name] for name in compiled.positiontup or ()]
        records = await conn.fetch(compiled.string, *args)
        return [dict(record) for record in records]
    if isinstance(conn, AsyncSession | AsyncConnection):
        result = await conn.execute(statement, dict(params))
        return [dict(row) for row in result.mappings()]
    raise TypeError(
        "conn must be a SQLAlchemy AsyncSession or AsyncConnection or an asyncpg Connection, "
        f"not {type(conn).__name__}"
    )


async def fetch_one(
    conn: AsyncConnectionLike, statement: Executable, params: Mapping[str, Any] | None = None
) -> Row | None:
    rows = await fetch_all(conn, statement, params)
    return rows[0] if rows else None


def fetch_all_sync(
    conn: SyncConnectionLike, statement: Executable, params: Mapping[str, Any] | None = None
) -> list[Row]:
    if not isinstance(conn, Session | Connection):
        raise TypeError(
            f"conn must be a SQLAlchemy Session or Connection, not {type(conn).__name__}"
        )
    result = conn.execute(statement, dict(params or {}))
    return [dict(row) for row in result.mappings()]


def fetch_one_sync(
    conn: SyncConnectionLike, statement: Executable, params: Mapping[str, Any] | None = None
) -> Row | None:
    rows = fetch_all_sync(conn, statement, params)
    return rows[0] if rows else None
