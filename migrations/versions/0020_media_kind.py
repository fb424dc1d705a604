"""a cached media id is its kind's: outbox_media keyed by (sender, url, kind)

An image row and a document row naming one link shared its cached id, and its in-memory lookup:
the document failed with the image's reason, and a refusal of the id for one kind forgot the
other's good id. Each kind now has its own. Existing ids get the kind their MIME type names
(Meta's types per kind do not overlap); an id of any other type is dropped: ids are only a
cache, and uploading again is always safe.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-06 21:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Meta's MIME types per media kind at this revision (outbox/media/limits.py then).
KINDS = {
    "image": ("image/jpeg", "image/png"),
    "video": ("video/mp4", "video/3gpp"),
    "audio": ("audio/aac", "audio/amr", "audio/mpeg", "audio/mp4", "audio/ogg"),
    "document": (
        "text/plain",
        "application/pdf",
        "application/msword",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "application/vnd.ms-excel",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "application/vnd.ms-powerpoint",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ),
}


def upgrade() -> None:
    op.add_column("outbox_media", sa.Column("kind", sa.Text(), nullable=True))
    for kind, types in KINDS.items():
        op.get_bind().execute(
            sa.text("UPDATE outbox_media SET kind = :kind WHERE mime_type = ANY(:types)"),
            {"kind": kind, "types": list(types)},
        )
    op.execute("DELETE FROM outbox_media WHERE kind IS NULL")
    op.alter_column("outbox_media", "kind", nullable=False)
    op.drop_constraint("pk_outbox_media", "outbox_media", type_="primary")
    op.create_primary_key("pk_outbox_media", "outbox_media", ["sender", "url", "kind"])
    op.drop_index("ix_outbox_media_content", table_name="outbox_media")
    op.create_index(
        "ix_outbox_media_content", "outbox_media", ["sender", "sha256", "kind", "uploaded_at"]
    )


def downgrade() -> None:
    # One id per link again: the newest of its kinds.
    op.execute(
        """
        DELETE FROM outbox_media m USING outbox_media n
        WHERE m.sender = n.sender AND m.url = n.url
          AND (m.uploaded_at, m.kind) < (n.uploaded_at, n.kind)
        """
    )
    op.drop_index("ix_outbox_media_content", table_name="outbox_media")
    op.create_index("ix_outbox_media_content", "outbox_media", ["sender", "sha256", "uploaded_at"])
    op.drop_constraint("pk_outbox_media", "outbox_media", type_="primary")
    op.create_primary_key("pk_outbox_media", "outbox_media", ["sender", "url"])
    op.drop_column("outbox_media", "kind")
