"""a taken-over row remembers it: outbox_messages.taken_over

A row claimed from an expired lease may have had its next part sent by the daemon that lost it.
The claim knew; a release (a stop, quiet hours, pacing, an outage) forgot, and the next claim
could send that part again or switch to its fallback template. The row now keeps the mark until
its next part is recorded.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-06 20:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "outbox_messages",
        sa.Column("taken_over", sa.Boolean, nullable=False, server_default=sa.text("false")),
    )


def downgrade() -> None:
    op.drop_column("outbox_messages", "taken_over")
