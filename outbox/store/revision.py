"""The schema's revision as alembic recorded it, read without alembic: the daemon checks it at
every start, where importing alembic and loading its scripts cost more than the check."""

from __future__ import annotations

import sqlalchemy as sa

from outbox.connections import AsyncConnectionLike, fetch_all, fetch_one

VERSION_TABLE = "outbox_alembic_version"  # alembic's version table for outbox's own revisions

# Whether the version table exists (a database never migrated has none).
HAS_VERSION_TABLE = sa.text(f"SELECT to_regclass('{VERSION_TABLE}') IS NOT NULL AS present")
VERSIONS = sa.text(f"SELECT version_num FROM {VERSION_TABLE}")


async def recorded_revisions(conn: AsyncConnectionLike) -> list[str]:
    """The revisions the version table records: none before the first migration, one after
    (alembic's branches, which outbox never makes, would record several)."""
    row = await fetch_one(conn, HAS_VERSION_TABLE)
    if row is None or not row["present"]:
        return []
    return sorted(str(version["version_num"]) for version in await fetch_all(conn, VERSIONS))
