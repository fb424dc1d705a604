"""Alembic environment: the URL comes from the caller, or from the environment as the CLI reads it.

Migrations take a transaction-level advisory lock first, so concurrent `outbox migrate` runs
(several daemons starting at once) apply each revision exactly once; being one transaction, the
whole run works through PgBouncer in transaction pooling mode too. Revisions are recorded in
`outbox_alembic_version`, beside (never in) the app's own `alembic_version`.
"""

from __future__ import annotations

import asyncio
from logging.config import fileConfig

import sqlalchemy as sa
from alembic import context
from sqlalchemy.engine import Connection

from outbox import migrate
from outbox.database import create_engine, resolve_dsn
from outbox.schema import metadata
from outbox.settings import Settings

MIGRATION_LOCK = 0x6F7574626F78  # "outbox"

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logging", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        compare_type=True,
        compare_server_default=True,
        transaction_per_migration=False,
        version_table=migrate.VERSION_TABLE,
        include_object=migrate.only_outbox,
    )
    with context.begin_transaction():
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        migrate.adopt_old_version_row(connection)
        context.run_migrations()


async def run_async_migrations() -> None:
    dsn = config.attributes.get("dsn") or await resolve_dsn(Settings.from_env())
    engine = create_engine(dsn, pool_size=1)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(run_migrations)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run against a database")

shared_connection = config.attributes.get("connection")
if shared_connection is not None:
    run_migrations(shared_connection)
else:
    asyncio.run(run_async_migrations())
