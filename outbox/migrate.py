"""Run the alembic revisions shipped inside the package, from any directory."""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection


def script_location() -> Path:
    """The revisions: `migrations/` in a checkout, `outbox/migrations/` in an installed wheel."""
    spec = find_spec("outbox.migrations")
    if spec is None or spec.origin is None:
        raise RuntimeError("outbox.migrations is not installed")
    return Path(spec.origin).parent


def alembic_config(dsn: str | None = None) -> Config:
    """A Config that needs no alembic.ini; `dsn` overrides the environment's database."""
    config = Config()
    config.set_main_option("script_location", str(script_location()))
    config.attributes["configure_logging"] = False
    if dsn is not None:
        config.attributes["dsn"] = dsn
    return config


def upgrade(dsn: str, revision: str = "head") -> None:
    """Bring the schema at `dsn` up to `revision`; idempotent. Blocking: call outside a loop."""
    command.upgrade(alembic_config(dsn), revision)


def downgrade(dsn: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(dsn), revision)


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(connection: Connection) -> str | None:
    """The revision the database is at (None before the first migration)."""
    return MigrationContext.configure(connection).get_current_revision()
