"""a conversation's pacing clock lives on its rows: outbox_messages.pair_tat

Each recorded part advanced its (sender, recipient) pair's clock in outbox_limits: an insert (or
an update) of a row of its own per conversation, for every message, and a table of a row per
conversation ever sent to, to prune. The clock is now the row's own `pair_tat`, written by the
part record that was updating the row anyway; the claim of a conversation's next row starts it
from the latest clock its earlier rows left (migration-free for the daemon: one row of a lane is
in flight at a time, so the clock still has one writer). Entries of the old kind are left to the
sweep, which prunes them once they pace nothing (daemons of the previous version may still write
some during an upgrade).

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-07 18:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0025"
down_revision: str | None = "0024"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "outbox_messages", sa.Column("pair_tat", sa.DateTime(timezone=True), nullable=True)
    )


def downgrade() -> None:
    op.drop_column("outbox_messages", "pair_tat")
