"""the lanes' trigger stops at once when no row waits in any lane

The trigger's work is to release rows queued behind a lane's head that left. With no row queued
at all (every recipient's rows one at a time, as a shop's or a booking app's confirmations
mostly are), one probe of ix_outbox_messages_behind says so: the statement's rows are not read.
A row queued by a claim racing this probe is released by RELEASE_LANES' sweep, as one racing the
release itself already was.

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-07 16:00:00
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from alembic import op

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NOTHING_QUEUED = """
    IF NOT EXISTS (SELECT 1 FROM outbox_messages WHERE status = 'pending' AND queued_behind) THEN
        RETURN NULL;
    END IF;"""


def _previous() -> ModuleType:
    path = Path(__file__).with_name("0023_lane_trigger_reads_rows_once.py")
    spec = importlib.util.spec_from_file_location(f"outbox_migration_{path.stem}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def upgrade() -> None:
    op.execute(_previous().lane_trigger(NOTHING_QUEUED))


def downgrade() -> None:
    _previous().upgrade()
