"""Run the alembic revisions shipped inside the package, from any directory, beside the app's own.

outbox lives in the app's database, next to the app's alembic history: its revisions are recorded
in `outbox_alembic_version`, never in the app's `alembic_version`, and `include_object` hides
every outbox table from the app's autogenerate.
"""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from outbox.store.revision import VERSION_TABLE

if TYPE_CHECKING:  # alembic is imported where it is used: `outbox run` never needs it
    from alembic.config import Config
    from sqlalchemy import Connection

PREFIX = "outbox_"
# A table each revision creates or changes: an `alembic_version` row naming one of our revisions
# is ours only if that table is there too (an app could have revisions called 0001 of its own).
REVISION_TABLES = {
    "0001": "outbox_messages",
    "0002": "outbox_daemons",
    "0003": "outbox_events",
    "0004": "outbox_messages",
    "0005": "outbox_limits",
    "0006": "outbox_messages",
    "0007": "outbox_installation",
    "0008": "outbox_messages",
    "0009": "outbox_optouts",
    "0010": "outbox_pauses",
    "0011": "outbox_costs",
    "0012": "outbox_audit",
    "0013": "outbox_templates",
    "0014": "outbox_tier_recipients",
    "0015": "outbox_messages",
    "0016": "outbox_rollup",
    "0017": "outbox_media",
    "0018": "outbox_tier_count",
    "0019": "outbox_messages",
    "0020": "outbox_media",
    "0021": "outbox_messages",
    "0022": "outbox_messages",
    "0023": "outbox_messages",
    "0024": "outbox_events",
}
HEAD_REVISION = max(REVISION_TABLES)  # revisions are numbered in order, one after the other


def include_object(
    object: Any,
    name: str | None,
    type_: str,
    reflected: bool,
    compare_to: Any,
) -> bool:
    """Alembic's `include_object` hook for the app's env.py: False for every outbox table (and
    its columns, indexes and constraints), so the app's autogenerate never touches them."""
    return not _ours(object, name, type_)


def only_outbox(
    object: Any,
    name: str | None,
    type_: str,
    reflected: bool,
    compare_to: Any,
) -> bool:
    """The reverse, for outbox's own env.py: the app's tables are not ours to compare."""
    return _ours(object, name, type_)


def _ours(object: Any, name: str | None, type_: str) -> bool:
    if type_ == "table":
        return (name or "").startswith(PREFIX)
    table = getattr(object, "table", None)
    table_name = getattr(table, "name", None)
    return isinstance(table_name, str) and table_name.startswith(PREFIX)


def adopt_old_version_row(connection: Connection) -> None:
    """Move our revision from `alembic_version` (where versions before 0.2 recorded it) to
    `outbox_alembic_version`, leaving the app's rows alone; drop the table if it was ours only."""
    inspector = sa.inspect(connection)
    if not inspector.has_table("alembic_version"):
        return
    rows = [r[0] for r in connection.execute(sa.text("SELECT version_num FROM alembic_version"))]
    ours = [
        revision
        for revision in rows
        if revision in REVISION_TABLES and inspector.has_table(REVISION_TABLES[revision])
    ]
    if not ours or inspector.has_table(VERSION_TABLE):
        return
    connection.execute(
        sa.text(
            f"CREATE TABLE {VERSION_TABLE} (version_num VARCHAR(32) NOT NULL, "
            f"CONSTRAINT {VERSION_TABLE}_pkc PRIMARY KEY (version_num))"
        )
    )
    connection.execute(
        sa.text(f"INSERT INTO {VERSION_TABLE} (version_num) VALUES (:revision)"),
        {"revision": ours[0]},
    )
    connection.execute(
        sa.text("DELETE FROM alembic_version WHERE version_num = :revision"),
        {"revision": ours[0]},
    )
    if len(rows) == 1:
        connection.execute(sa.text("DROP TABLE alembic_version"))


def script_location() -> Path:
    """The revisions: `outbox/migrations/` in an installed wheel, `migrations/` beside the
    package in a checkout (an editable install imports the package from there)."""
    spec = find_spec("outbox.migrations")
    if spec is not None and spec.origin is not None:
        return Path(spec.origin).parent
    checkout = Path(__file__).resolve().parent.parent / "migrations"
    if (checkout / "env.py").is_file():
        return checkout
    raise RuntimeError("outbox.migrations is not installed")


def alembic_config(dsn: str | None = None) -> Config:
    """A Config that needs no alembic.ini; `dsn` overrides the environment's database."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(script_location()))
    config.attributes["configure_logging"] = False
    if dsn is not None:
        config.attributes["dsn"] = dsn
    return config


def upgrade(dsn: str, revision: str = "head") -> None:
    """Bring the schema at `dsn` up to `revision`; idempotent. Blocking: call outside a loop."""
    from alembic import command

    command.upgrade(alembic_config(dsn), revision)


def downgrade(dsn: str, revision: str = "base") -> None:
    from alembic import command

    command.downgrade(alembic_config(dsn), revision)


def head_revision() -> str | None:
    """The scripts' head, as alembic reads it (HEAD_REVISION, which a test holds to it)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(connection: Connection) -> str | None:
    """The revision the database is at (None before the first migration)."""
    from alembic.runtime.migration import MigrationContext

    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()
