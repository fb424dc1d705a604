"""a row remembers the recipient enqueue() checked: outbox_messages.checked_recipient

The daemon checked every row's recipient with libphonenumber before its first request (about 30
µs of CPU per row whose number it had not seen), because a row inserted with plain SQL was never
checked. enqueue() now writes the recipient it checked here too; the daemon checks again only a
row whose recipient differs from it (inserted or changed with plain SQL).

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-06 21:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("outbox_messages", sa.Column("checked_recipient", sa.Text, nullable=True))


def downgrade() -> None:
    op.drop_column("outbox_messages", "checked_recipient")
