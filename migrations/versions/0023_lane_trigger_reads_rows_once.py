"""the lanes' trigger reads a statement's rows a few times, not once per row: before joining
the old and new rows to find the ones that left their lane, it checks that some new row could
have left (finished, failed, cancelled, held) and some old row was in a lane; a claim, a lease
extension or a release changes rows that stay in their lanes, and stops there. The join is then
planned for all its rows (a count), not to find a first one: planned so, a statement that left
no lane compared every old row with every new one (a thousand rows: a million comparisons, ~0.1 s
per lease extension at 1,000 in flight)

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

# A row held for a paused template (132015) or deferred marketing (131049): out of its lane.
HELD = (
    "({t}.status = 'pending' AND coalesce({t}.error_code, 0) IN (132015, 131049)"
    " AND {t}.available_at > now())"
)
# Necessary for a row to have left its lane, each read in one pass over its table.
MAY_LEAVE = f"""(NOT EXISTS (SELECT 1 FROM new_rows n
                              WHERE n.status NOT IN ('pending', 'sending') OR {HELD.format(t="n")})
             OR NOT EXISTS (SELECT 1 FROM old_rows o
                            WHERE o.status IN ('pending', 'sending')
                              AND NOT {HELD.format(t="o")}))"""


def _migration(name: str) -> ModuleType:
    path = Path(__file__).with_name(name)
    spec = importlib.util.spec_from_file_location(f"outbox_migration_{path.stem}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _function_0021() -> tuple[str, str]:
    """The trigger function as migration 0021 left it, and its rows that left their lane."""
    held_templates = _migration("0008_held_templates_leave_lanes.py")
    deferred = _migration("0021_deferred_rows_leave_lanes.py")
    function = str(held_templates.UNBLOCK_FUNCTION)
    gone = str(held_templates.GONE_UPDATED)
    for table in ("b", "o", "n"):
        before, now = deferred.HELD_BEFORE.format(t=table), deferred.HELD_NOW.format(t=table)
        function, gone = function.replace(before, now), gone.replace(before, now)
    return function, gone


def upgrade() -> None:
    function, gone = _function_0021()
    early_exit = f"IF NOT EXISTS {gone} THEN"
    assert function.count(early_exit) == 1, early_exit
    op.execute(
        function.replace(
            early_exit, f"IF {MAY_LEAVE}\n           OR (SELECT count(*) FROM {gone} AS g) = 0 THEN"
        )
    )


def downgrade() -> None:
    function, _ = _function_0021()
    op.execute(function)
