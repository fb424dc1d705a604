"""`outbox stats --by`: failed rows by Graph error code, and rows by template and status, among
the rows created in a period."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import sqlalchemy as sa

from outbox.connections import Row, fetch_all
from outbox.store.periods import since_condition, since_params

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection


# Failed rows by error code (null: failed without one, e.g. expired or invalid), most first,
# with the last error of the latest such row as its title.
FAILED_BY_CODE = sa.text(
    f"""
    SELECT error_code AS code, count(*) AS count,
           (array_agg(last_error ORDER BY updated_at DESC))[1] AS last_error,
           max(updated_at) AS last_at
    FROM outbox_messages
    WHERE status = 'failed' AND {since_condition("created_at")}
    GROUP BY error_code
    ORDER BY count(*) DESC, error_code NULLS LAST
    """
)

# Template rows by name, language and status.
TEMPLATES_BY_STATUS = sa.text(
    f"""
    SELECT template ->> 'name' AS name, template -> 'language' ->> 'code' AS language,
           status, count(*) AS count
    FROM outbox_messages
    WHERE template IS NOT NULL AND {since_condition("created_at")}
    GROUP BY 1, 2, 3
    ORDER BY 1, 2, 3
    """
)


async def failed_by_code(conn: AsyncConnection, since: datetime | timedelta | None) -> list[Row]:
    return await fetch_all(conn, FAILED_BY_CODE, since_params(since))


async def templates_by_status(
    conn: AsyncConnection, since: datetime | timedelta | None
) -> list[Row]:
    return await fetch_all(conn, TEMPLATES_BY_STATUS, since_params(since))
