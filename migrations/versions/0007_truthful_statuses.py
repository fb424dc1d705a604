"""truthful statuses: an installation id in callback data, statuses once per (wamid, status),
every part's wamid findable, rows marked while statuses wait for their parts, inbound users
without a phone number, value-level errors

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 03:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "outbox_installation",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint("id ~ '^[a-z0-9]{8,32}$'", name="ck_outbox_installation_id_shape"),
        sa.PrimaryKeyConstraint("id", name="pk_outbox_installation"),
    )
    # 16 hex digits of a random UUID: unique enough across every deployment sharing a number.
    op.execute(
        "INSERT INTO outbox_installation (id) "
        "VALUES (substr(replace(gen_random_uuid()::text, '-', ''), 1, 16))"
    )

    op.add_column("outbox_statuses", sa.Column("recipient", sa.Text(), nullable=True))
    # Replays stored before this revision: keep the first of each (wamid, status).
    op.execute(
        """
        DELETE FROM outbox_statuses s USING outbox_statuses t
        WHERE s.wamid = t.wamid AND s.status = t.status AND s.id > t.id
        """
    )
    op.drop_index("ix_outbox_statuses_wamid", table_name="outbox_statuses")
    op.create_unique_constraint("uq_outbox_statuses_wamid", "outbox_statuses", ["wamid", "status"])

    op.create_table(
        "outbox_part_wamids",
        sa.Column("wamid", sa.Text(), nullable=False),
        sa.Column("message_id", sa.BigInteger(), nullable=False),
        sa.Column("part", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["outbox_messages.id"],
            name="fk_outbox_part_wamids_message_id",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("wamid", name="pk_outbox_part_wamids"),
    )
    op.create_index("ix_outbox_part_wamids_message", "outbox_part_wamids", ["message_id"])
    op.execute(
        """
        INSERT INTO outbox_part_wamids (wamid, message_id, part)
        SELECT p.part ->> 'wamid', m.id, p.i - 1
        FROM outbox_messages m,
             jsonb_array_elements(m.parts) WITH ORDINALITY AS p(part, i)
        WHERE p.part ->> 'wamid' IS NOT NULL
        ON CONFLICT (wamid) DO NOTHING
        """
    )

    op.add_column(
        "outbox_messages",
        sa.Column(
            "statuses_waiting", sa.Boolean(), server_default=sa.text("false"), nullable=False
        ),
    )
    op.create_index(
        "ix_outbox_messages_statuses_waiting",
        "outbox_messages",
        ["id"],
        postgresql_where=sa.text("statuses_waiting"),
    )
    # Statuses already waiting for their parts: the receiver's sweep takes them from here.
    op.execute(
        """
        UPDATE outbox_messages SET statuses_waiting = true
        WHERE id IN (SELECT message_id FROM outbox_statuses
                     WHERE applied_at IS NULL AND message_id IS NOT NULL
                     UNION
                     SELECT w.message_id FROM outbox_statuses s
                     JOIN outbox_part_wamids w ON w.wamid = s.wamid
                     WHERE s.applied_at IS NULL)
        """
    )

    op.alter_column("outbox_inbound", "customer", existing_type=sa.Text(), nullable=True)
    op.add_column("outbox_inbound", sa.Column("user_id", sa.Text(), nullable=True))
    op.add_column("outbox_inbound", sa.Column("error_code", sa.Integer(), nullable=True))
    op.add_column("outbox_inbound", sa.Column("error_title", sa.Text(), nullable=True))
    op.create_check_constraint(
        "customer_known", "outbox_inbound", "customer IS NOT NULL OR user_id IS NOT NULL"
    )

    op.create_table(
        "outbox_webhook_errors",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("phone_number_id", sa.Text(), nullable=True),
        sa.Column("code", sa.Integer(), nullable=True),
        sa.Column("title", sa.Text(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column(
            "received_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name="pk_outbox_webhook_errors"),
    )
    op.create_index("ix_outbox_webhook_errors_received", "outbox_webhook_errors", ["received_at"])


def downgrade() -> None:
    op.drop_index("ix_outbox_webhook_errors_received", table_name="outbox_webhook_errors")
    op.drop_table("outbox_webhook_errors")
    op.drop_constraint("ck_outbox_inbound_customer_known", "outbox_inbound")
    op.execute("DELETE FROM outbox_inbound WHERE customer IS NULL")
    op.drop_column("outbox_inbound", "error_title")
    op.drop_column("outbox_inbound", "error_code")
    op.drop_column("outbox_inbound", "user_id")
    op.alter_column("outbox_inbound", "customer", existing_type=sa.Text(), nullable=False)
    op.drop_index("ix_outbox_messages_statuses_waiting", table_name="outbox_messages")
    op.drop_column("outbox_messages", "statuses_waiting")
    op.drop_index("ix_outbox_part_wamids_message", table_name="outbox_part_wamids")
    op.drop_table("outbox_part_wamids")
    op.drop_constraint("uq_outbox_statuses_wamid", "outbox_statuses")
    op.create_index("ix_outbox_statuses_wamid", "outbox_statuses", ["wamid"])
    op.drop_column("outbox_statuses", "recipient")
    op.drop_table("outbox_installation")
