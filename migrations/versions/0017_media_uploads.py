"""media uploads: outbox_media, per sender and link the content hash and the media id Meta gave
for it, so that a file is uploaded once and sent by id (`--media-mode upload`)

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06 09:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "outbox_media",
        sa.Column("sender", sa.Text(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("sha256", sa.Text(), nullable=False),
        sa.Column("media_id", sa.Text(), nullable=False),
        sa.Column("mime_type", sa.Text(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("uploaded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sender", "url", name="pk_outbox_media"),
    )
    op.create_index("ix_outbox_media_content", "outbox_media", ["sender", "sha256", "uploaded_at"])
    op.create_index("ix_outbox_media_media_id", "outbox_media", ["media_id"])


def downgrade() -> None:
    op.drop_index("ix_outbox_media_media_id", table_name="outbox_media")
    op.drop_index("ix_outbox_media_content", table_name="outbox_media")
    op.drop_table("outbox_media")
