"""deferred marketing leaves its lane: a row Meta's per-user marketing limit deferred (131049,
for a day or more) no longer holds back its recipient's later rows, as a row held for its paused
template (132015, migration 0008) does not

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-06 21:20:00
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from alembic import op

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HELD_BEFORE = "coalesce({t}.error_code, 0) = 132015"
HELD_NOW = "coalesce({t}.error_code, 0) IN (132015, 131049)"


def _held_templates() -> ModuleType:
    path = Path(__file__).with_name("0008_held_templates_leave_lanes.py")
    spec = importlib.util.spec_from_file_location("outbox_migration_0008", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def upgrade() -> None:
    function = str(_held_templates().UNBLOCK_FUNCTION)
    for table in ("b", "o", "n"):
        before, now = HELD_BEFORE.format(t=table), HELD_NOW.format(t=table)
        assert before in function, before
        function = function.replace(before, now)
    op.execute(function)


def downgrade() -> None:
    op.execute(_held_templates().UNBLOCK_FUNCTION)
