"""per-row quiet hours and time zone; when Meta's pause of a template ends

A row may carry its own quiet hours (`quiet_hours`: `HH:MM-HH:MM`, or `none` for a row that may
go at any hour) and its recipient's time zone (`timezone`, an IANA name), overriding the
daemon's `--quiet-hours` and the zone libphonenumber gives the number. `outbox_templates`
records until when Meta paused a template (`paused_until`: 3 h for a first pause, 6 h for a
second), so that its rows wait that long, and no longer, when no REINSTATED webhook comes.

Revision ID: 0015
Revises: 0014 (renumbered at merge: it follows 0014)
Create Date: 2026-12-07 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

QUIET_HOURS_SHAPE = (
    "quiet_hours = 'none' OR quiet_hours ~ "
    "'^([01][0-9]|2[0-3]):[0-5][0-9]-([01][0-9]|2[0-3]):[0-5][0-9]$'"
)
TIMEZONE_SHAPE = "timezone ~ '^[A-Za-z][A-Za-z0-9_+/-]{0,63}$'"


def upgrade() -> None:
    op.add_column("outbox_messages", sa.Column("quiet_hours", sa.Text, nullable=True))
    op.add_column("outbox_messages", sa.Column("timezone", sa.Text, nullable=True))
    op.create_check_constraint("quiet_hours_shape", "outbox_messages", QUIET_HOURS_SHAPE)
    op.create_check_constraint("timezone_shape", "outbox_messages", TIMEZONE_SHAPE)
    op.add_column(
        "outbox_templates", sa.Column("paused_until", sa.DateTime(timezone=True), nullable=True)
    )
    # Templates paused before this revision: the longest pause Meta gives, from when it was seen.
    op.execute(
        "UPDATE outbox_templates SET paused_until = updated_at + interval '6 hours'"
        " WHERE status = 'PAUSED'"
    )


def downgrade() -> None:
    op.drop_column("outbox_templates", "paused_until")
    op.drop_constraint(op.f("ck_outbox_messages_timezone_shape"), "outbox_messages", type_="check")
    op.drop_constraint(
        op.f("ck_outbox_messages_quiet_hours_shape"), "outbox_messages", type_="check"
    )
    op.drop_column("outbox_messages", "timezone")
    op.drop_column("outbox_messages", "quiet_hours")
