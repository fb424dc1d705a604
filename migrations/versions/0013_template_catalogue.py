"""template catalogue: outbox_templates, Meta's templates of a WABA (name, language, category,
status, quality, body parameter count), kept by `outbox templates sync` and the template
webhooks, and checked by enqueue once it knows a template's name

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 06:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "outbox_templates",
        sa.Column("waba_id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("language", sa.Text(), nullable=False),
        sa.Column("template_id", sa.Text(), nullable=True),
        sa.Column("category", sa.Text(), nullable=True),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("quality", sa.Text(), nullable=True),
        sa.Column("parameter_count", sa.Integer(), nullable=True),
        sa.Column("previous_category", sa.Text(), nullable=True),
        sa.Column("category_changed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("waba_id", "name", "language", name="pk_outbox_templates"),
    )
    op.create_index("ix_outbox_templates_name", "outbox_templates", ["name", "language"])
    op.create_index("ix_outbox_templates_template_id", "outbox_templates", ["template_id"])


def downgrade() -> None:
    op.drop_index("ix_outbox_templates_template_id", table_name="outbox_templates")
    op.drop_index("ix_outbox_templates_name", table_name="outbox_templates")
    op.drop_table("outbox_templates")
