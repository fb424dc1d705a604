"""`outbox stats --cost`: the cost ledger's charged parts, counted by group, country, category and
UTC billing day (the rate card prices them in outbox.cost.ledger), and what was not charged.

A part is ours when our callback data named our row (outbox_costs.message_id) or, without it,
when its wamid is one of our recorded parts' (as status webhooks find them, store.webhooks).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import sqlalchemy as sa

from outbox.connections import Row, fetch_all
from outbox.store.periods import since_condition, since_params
from outbox.store.webhooks import row_of_last_part

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection


# The expression each `--by` groups on.
GROUPS = {
    "total": "'total'",
    "day": "to_char(c.billed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
    "template": "coalesce(c.template, m.template ->> 'name', m.fallback ->> 'name', '-')",
    "country": "coalesce(c.country, '-')",
    "category": "c.category",
}

_LEDGER = f"""
    FROM outbox_costs c
    -- A part priced without our callback data is ours by its wamid: an earlier part's is in
    -- outbox_part_wamids, a row's last part's is the row's message_id.
    LEFT JOIN LATERAL (
        SELECT coalesce((SELECT w.message_id FROM outbox_part_wamids w WHERE w.wamid = c.wamid),
                        {row_of_last_part("c.wamid")}) AS id
        WHERE c.message_id IS NULL) f ON true
    LEFT JOIN outbox_messages m ON m.id = f.id
    WHERE {since_condition("c.billed_at")}
"""
_OURS = "(c.message_id IS NOT NULL OR f.id IS NOT NULL)"
_CHARGED = "(c.billable AND c.pricing_type = 'regular')"


def _charged_parts(group: str) -> sa.TextClause:
    """Our charged parts by the group's value, country, category and UTC day."""
    return sa.text(
        f"""
        SELECT {GROUPS[group]} AS grp, c.country, c.category,
               CAST(c.billed_at AT TIME ZONE 'UTC' AS date) AS day, count(*) AS count
        {_LEDGER} AND {_OURS} AND {_CHARGED}
        GROUP BY 1, 2, 3, 4
        ORDER BY 1, 4, 2, 3
        """
    )


CHARGED_PARTS = {group: _charged_parts(group) for group in GROUPS}

# Every part in the period, by whose it is, whether it is charged and Meta's pricing type (or
# model, for CBP): what the totals leave out, and parts a later status priced differently.
LEDGER_SUMMARY = sa.text(
    f"""
    SELECT {_OURS} AS ours, {_CHARGED} AS charged,
           coalesce(c.pricing_type, c.pricing_model, '-') AS kind,
           c.billable, count(*) AS count, count(*) FILTER (WHERE c.changed) AS changed
    {_LEDGER}
    GROUP BY 1, 2, 3, 4
    ORDER BY 1 DESC, 2 DESC, 3
    """
)


async def charged_parts(
    conn: AsyncConnection, group: str, since: datetime | timedelta | None
) -> list[Row]:
    """Rows of grp, country, category, day, count (`group` one of GROUPS)."""
    return await fetch_all(conn, CHARGED_PARTS[group], since_params(since))


async def ledger_summary(conn: AsyncConnection, since: datetime | timedelta | None) -> list[Row]:
    return await fetch_all(conn, LEDGER_SUMMARY, since_params(since))
