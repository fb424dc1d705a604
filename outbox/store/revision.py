"""The schema's revision as alembic recorded it, read without alembic: the daemon checks it at
every start, where importing alembic and loading its scripts cost more than the check."""

from __future__ import annotations

import sqlalchemy as sa

from outbox.connections import AsyncConnectionLike, fetch_all, fetch_one

VERSION_TABLE = "outbox_alembic_version"  # alembic's version table for outbox's own revisions

# Whether the version table exists (a database never migrated has none).
HAS_VERSION_TABLE = sa.text(f"SELECT to_regclass('{VERSION_TABLE}') IS NOT NULL AS present")
VERSIONS = sa.text(f"SELECT version_num FROM {VERSION_TABLE}")


async def current_revision(conn: AsyncConnectionLike) -> str | None:
    """The revision the database is at; None before the first migration. Several recorded
    revisions (branches, which outbox never makes) read as none of them."""
    row = await fetch_one(conn, HAS_VERSION_TABLE)
    if row is None or not row["present"]:
        return None
    versions = await fetch_all(conn, VERSIONS)
    return str(versions[0]["version_num"]) if len(versions) == 1 else None
