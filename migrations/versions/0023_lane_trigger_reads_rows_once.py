"""the lanes' trigger reads a statement's rows a few times, not once per row of the other side

It found the rows that left their lane by joining old and new rows, in plans made on its first
run in a connection. A plan made for a row or two (a nested loop) compared every old row with
every new one ever after: a lease extension, a claim or a part record of a thousand rows read a
million (~0.1 s). It now checks first, in one pass over each table, that some new row could have
left and some old row was in a lane (a claim, a lease extension, a release stop there), and
pairs old and new rows once, by grouping them by id, which no plan makes quadratic.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-07 13:10:00
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from alembic import op

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _migration(name: str) -> ModuleType:
    path = Path(__file__).with_name(name)
    spec = importlib.util.spec_from_file_location(f"outbox_migration_{path.stem}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _held_now(text: str) -> str:
    """0008's text (or template, `{t}` for the table) with 0021's held rows (deferred marketing
    too)."""
    deferred = _migration("0021_deferred_rows_leave_lanes.py")
    for table in ("b", "o", "n", "{t}"):
        text = text.replace(deferred.HELD_BEFORE.format(t=table), deferred.HELD_NOW.format(t=table))
    return text


def upgrade() -> None:
    held_templates = _migration("0008_held_templates_leave_lanes.py")
    lane_release = _held_now(str(held_templates.LANE_RELEASE))
    gone_deleted = str(held_templates.GONE_DELETED)
    held = _held_now(str(held_templates.HELD))  # a row out of its lane while it waits
    assert "IN (132015, 131049)" in held, held
    # Necessary for a row to have left its lane, each read in one pass over its table: a claim,
    # a lease extension or a release stops here; so does the recursion through the UPDATE below.
    cannot_have_left = f"""NOT EXISTS (SELECT 1 FROM new_rows n
                       WHERE n.status NOT IN ('pending', 'sending') OR {held.format(t="n")})
           OR NOT EXISTS (SELECT 1 FROM old_rows o
                          WHERE o.status IN ('pending', 'sending') AND NOT {held.format(t="o")})"""
    # The rows that left their lane: in it before (old_rows), out now (new_rows). Grouped by id,
    # not joined: a join's plan is made on the trigger's first run in a connection, and one made
    # for a row or two (a nested loop) compared every old row with every new one ever after.
    # Empty, the release below updates nothing.
    gone_updated = f"""(SELECT t.id, max(t.recipient) AS recipient, max(t.sender_key) AS sender_key
                   FROM (SELECT o.id, o.recipient, coalesce(o.sender, '') AS sender_key
                         FROM old_rows o
                         WHERE o.status IN ('pending', 'sending') AND NOT {held.format(t="o")}
                         UNION ALL
                         SELECT n.id, NULL, NULL FROM new_rows n
                         WHERE n.status NOT IN ('pending', 'sending') OR {held.format(t="n")}) AS t
                   GROUP BY t.id HAVING count(*) = 2)"""
    op.execute(f"""
CREATE OR REPLACE FUNCTION outbox_messages_unblock_lanes() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF {cannot_have_left} THEN
            RETURN NULL;
        END IF;
        WITH pg_temp_gone AS {gone_updated} {lane_release};
    ELSE
        IF NOT EXISTS {gone_deleted} THEN
            RETURN NULL;
        END IF;
        WITH pg_temp_gone AS {gone_deleted} {lane_release};
    END IF;
    RETURN NULL;
END
$$
""")


def downgrade() -> None:
    _migration("0021_deferred_rows_leave_lanes.py").upgrade()
