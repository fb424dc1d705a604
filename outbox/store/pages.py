"""`outbox list`: one page of messages, newest first, by a keyset cursor (ids below :before), so
that rows inserted while an operator pages through never shift or repeat a page."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import sqlalchemy as sa

from outbox.connections import Row, fetch_all
from outbox.store.messages import DELIVERY_COLUMNS
from outbox.store.periods import since_condition, since_params

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection


# Up to :limit rows below :before (null: from the newest), in any of :statuses (null: all), to
# :recipient (null: anyone), created since the period (null: ever).
SELECT_PAGE = (
    sa.select(*DELIVERY_COLUMNS)
    .where(
        sa.text(
            "(CAST(:before AS bigint) IS NULL OR outbox_messages.id < CAST(:before AS bigint))"
            " AND (CAST(:statuses AS text[]) IS NULL"
            "      OR outbox_messages.status = ANY(CAST(:statuses AS text[])))"
            " AND (CAST(:recipient AS text) IS NULL"
            "      OR outbox_messages.recipient = CAST(:recipient AS text))"
            f" AND {since_condition('outbox_messages.created_at')}"
        )
    )
    .order_by(sa.text("outbox_messages.id DESC"))
    .limit(sa.bindparam("limit", type_=sa.Integer))
)


async def select_page(
    conn: AsyncConnection,
    *,
    statuses: list[str] | None,
    recipient: str | None,
    since: datetime | timedelta | None,
    before: int | None,
    limit: int,
) -> list[Row]:
    params = {
        "statuses": statuses or None,
        "recipient": recipient,
        "before": before,
        "limit": limit,
        **since_params(since),
    }
    return await fetch_all(conn, SELECT_PAGE, params)
