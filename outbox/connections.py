"""Run a SQLAlchemy Core statement on whichever connection the caller holds.

The public API works inside the caller's transaction on a SQLAlchemy AsyncSession or
AsyncConnection, a raw asyncpg Connection, or (sync) a Session or Connection. Statements never
commit. Bind parameters are plain str/int/datetime values (JSON is cast in SQL), so the asyncpg
path needs no SQLAlchemy type processing: it compiles once to `$n` SQL and passes values in order.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any, TypeAlias

import asyncpg
from sqlalchemy import Connection, Engine
from sqlalchemy.dialects.postgresql import asyncpg as asyncpg_dialect
from sqlalchemy.sql import Executable
from sqlalchemy.sql.compiler import SQLCompiler

# SQLAlchemy's ORM and asyncio layers are imported when a caller's connection may be one of
# theirs (then they are loaded already): the daemon, on asyncpg alone, starts without them.
if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
    from sqlalchemy.orm import Session

    AsyncConnectionLike: TypeAlias = AsyncSession | AsyncConnection | asyncpg.Connection
    SyncConnectionLike: TypeAlias = Session | Connection
else:  # at run time: names that resolve (typing.get_type_hints) without loading those layers
    AsyncConnectionLike = object
    SyncConnectionLike = object
Row: TypeAlias = dict[str, Any]

_DIALECT = asyncpg_dialect.dialect()  # type: ignore[no-untyped-call]


@lru_cache(maxsize=256)
def _compiled_for_asyncpg(statement: Executable) -> SQLCompiler:
    compiled = statement.compile(dialect=_DIALECT)  # type: ignore[attr-defined]
    assert isinstance(compiled, SQLCompiler)
    return compiled


def transaction_problem(conn: object) -> str | None:
    """Why `conn` cannot hold the caller's transaction, or None when it can: an asyncpg
    connection outside a transaction, or a SQLAlchemy one in autocommit, commits every statement
    at once. (A SQLAlchemy connection or session not begun yet begins one: the caller commits.)"""
    if isinstance(conn, asyncpg.Connection):
        return None if conn.is_in_transaction() else "asyncpg connection"
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
    from sqlalchemy.orm import Session

    if isinstance(conn, AsyncSession | Session):
        bind = conn.get_bind()
        engine = bind if isinstance(bind, Engine) else bind.engine
        return "session in autocommit" if _autocommits(engine) else None
    if isinstance(conn, AsyncConnection | Connection):
        sync = conn.sync_connection if isinstance(conn, AsyncConnection) else conn
        if sync is None:  # an AsyncConnection not started yet: only its engine can say
            assert isinstance(conn, AsyncConnection)
            return "connection in autocommit" if _autocommits(conn.sync_engine) else None
        # SQLAlchemy 2.x: the connection's own isolation option, else its engine's.
        autocommit = getattr(sync, "_is_autocommit_isolation", lambda: _autocommits(sync.engine))
        return "connection in autocommit" if autocommit() else None
    return None  # fetch_all names the types it takes


def _autocommits(engine: Engine) -> bool:
    level = engine.get_execution_options().get("isolation_level") or getattr(
        engine.dialect, "_on_connect_isolation_level", None
    )
    return bool(level == "AUTOCOMMIT")


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
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

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
    from sqlalchemy.orm import Session

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
