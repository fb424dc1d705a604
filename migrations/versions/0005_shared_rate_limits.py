"""shared rate limits: one token bucket per sender in the database, for every daemon

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 03:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Grant up to p_want sends of key's bucket now (GCRA: `p_burst` at once, then one per p_interval
# (a fractional burst is a tolerance for requests a little late, not an extra request)
# seconds, slower by `factor` until `slow_until`); also the seconds until the next one would be
# granted. One row lock per call, so daemons on any host share the rate exactly.
TAKE_FUNCTION = """
CREATE OR REPLACE FUNCTION outbox_take_tokens(
    p_key text, p_want integer, p_interval double precision, p_burst double precision,
    OUT granted integer, OUT wait double precision)
LANGUAGE plpgsql AS $$
DECLARE
    now_ts timestamptz := clock_timestamp();
    current_tat timestamptz;
    current_factor double precision;
    current_slow timestamptz;
    step double precision;
    tolerance double precision;
    base timestamptz;
BEGIN
    INSERT INTO outbox_limits (key, tat) VALUES (p_key, now_ts) ON CONFLICT (key) DO NOTHING;
    SELECT tat, factor, slow_until INTO current_tat, current_factor, current_slow
    FROM outbox_limits WHERE key = p_key FOR UPDATE;
    step := p_interval / CASE WHEN current_slow > now_ts THEN current_factor ELSE 1 END;
    tolerance := (greatest(p_burst, 1.0) - 1.0) * step;
    base := greatest(current_tat, now_ts);
    granted := least(greatest(p_want, 0),
                     greatest(0, floor((extract(epoch FROM now_ts - base) + tolerance) / step)::integer + 1));
    UPDATE outbox_limits SET tat = base + make_interval(secs => granted * step) WHERE key = p_key;
    wait := greatest(0, extract(epoch FROM base - now_ts) + granted * step - tolerance);
END
$$
"""


def upgrade() -> None:
    op.create_table(
        "outbox_limits",
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("tat", sa.DateTime(timezone=True), nullable=False),
        sa.Column("factor", sa.Float(), server_default=sa.text("1"), nullable=False),
        sa.Column("slow_until", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "factor > 0 AND factor <= 1", name=op.f("ck_outbox_limits_factor_fraction")
        ),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_outbox_limits")),
    )
    op.execute(TAKE_FUNCTION)


def downgrade() -> None:
    op.execute(
        "DROP FUNCTION IF EXISTS outbox_take_tokens(text, integer, double precision, double precision)"
    )
    op.drop_table("outbox_limits")
