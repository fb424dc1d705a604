"""The dashboard's rollup: outbox_events folded into counts per minute, sender, template,
outcome and Graph error code (outbox_rollup), and the charts read from it.

The fold reads events by id after its mark, one bounded batch at a time, and stops before the
first event younger than the settle delay: an event whose transaction commits later than a
younger one (ids are handed out before commit) is then not skipped, unless its transaction
stayed open longer than that delay. Every read is bounded by the rollup's own size (minutes
times senders, templates and codes), never by the messages table's.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from outbox.connections import AsyncConnectionLike, Row, fetch_all, fetch_one

SOURCE = "events"
# Requests Meta took (per part), and failures: a row failed for good (`failed`, with the code it
# failed with) or a part Meta failed after accepting it (its status webhook).
SENT_KINDS = ("accepted", "reconciled")
FAILED_KINDS = ("failed", "status:failed")

# One fold at a time across dashboards: the mark is read and moved under this lock.
LOCK = sa.text("SELECT pg_advisory_xact_lock(hashtext('outbox_rollup'))")

FOLD = sa.text(
    f"""
    WITH mark AS (
        SELECT coalesce((SELECT upto FROM outbox_rollup_marks WHERE source = '{SOURCE}'), 0)
               AS upto
    ),
    raw AS (
        SELECT e.id, e.at, e.kind, e.error_code, e.message_id
        FROM outbox_events e
        WHERE e.id > (SELECT upto FROM mark)
        ORDER BY e.id
        LIMIT :batch
    ),
    settled AS (
        SELECT coalesce(
            (SELECT min(id) - 1 FROM raw
             WHERE at > now() - make_interval(secs => CAST(:settle AS float8))),
            (SELECT max(id) FROM raw),
            (SELECT upto FROM mark)
        ) AS upto
    ),
    folded AS (
        INSERT INTO outbox_rollup AS r (minute, sender, template, outcome, error_code, count)
        SELECT date_trunc('minute', raw.at), coalesce(m.sender, ''),
               coalesce(m.template ->> 'name', ''),
               CASE WHEN raw.kind IN {SENT_KINDS!r} THEN 'sent' ELSE 'failed' END,
               CASE WHEN raw.kind IN {SENT_KINDS!r} THEN 0 ELSE coalesce(raw.error_code, 0) END,
               count(*)
        FROM raw LEFT JOIN outbox_messages m ON m.id = raw.message_id
        WHERE raw.id <= (SELECT upto FROM settled)
          AND raw.kind IN {SENT_KINDS + FAILED_KINDS!r}
        GROUP BY 1, 2, 3, 4, 5
        ON CONFLICT (minute, sender, template, outcome, error_code)
        DO UPDATE SET count = r.count + excluded.count
        RETURNING 1
    ),
    moved AS (
        INSERT INTO outbox_rollup_marks AS k (source, upto)
        SELECT '{SOURCE}', upto FROM settled
        ON CONFLICT (source) DO UPDATE SET upto = excluded.upto, folded_at = now()
        RETURNING k.upto
    )
    SELECT (SELECT count(*) FROM raw WHERE id <= (SELECT upto FROM settled)) AS read,
           (SELECT count(*) FROM folded) AS groups,
           (SELECT upto FROM moved) AS upto
    """
)

PRUNE = sa.text(
    """
    WITH gone AS (
        DELETE FROM outbox_rollup
        WHERE minute < now() - make_interval(days => CAST(:days AS int)) RETURNING 1
    )
    SELECT count(*) AS deleted FROM gone
    """
)

SELECT_MARK = sa.text(f"SELECT upto, folded_at FROM outbox_rollup_marks WHERE source = '{SOURCE}'")

# Sends and failures per bucket (`width` seconds) since :since, oldest first.
PER_BUCKET = sa.text(
    """
    SELECT date_bin(make_interval(secs => CAST(:width AS float8)), minute,
                    TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket,
           sum(count) FILTER (WHERE outcome = 'sent') AS sent,
           sum(count) FILTER (WHERE outcome = 'failed') AS failed
    FROM outbox_rollup WHERE minute >= :since
    GROUP BY 1 ORDER BY 1
    """
)

# The most frequent failures since :since by Graph code, and by template.
FAILURES_BY_CODE = sa.text(
    """
    SELECT error_code AS key, sum(count) AS count FROM outbox_rollup
    WHERE outcome = 'failed' AND minute >= :since
    GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT :limit
    """
)
FAILURES_BY_TEMPLATE = sa.text(
    """
    SELECT template AS key, sum(count) AS count FROM outbox_rollup
    WHERE outcome = 'failed' AND template <> '' AND minute >= :since
    GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT :limit
    """
)

# Sent and failed since :since per sender.
BY_SENDER = sa.text(
    """
    SELECT sender, sum(count) FILTER (WHERE outcome = 'sent') AS sent,
           sum(count) FILTER (WHERE outcome = 'failed') AS failed
    FROM outbox_rollup WHERE minute >= :since
    GROUP BY 1 ORDER BY 1 LIMIT :limit
    """
)


async def fold(conn: AsyncConnectionLike, *, batch: int, settle_seconds: float) -> int:
    """Fold one batch of settled events into the rollup in the caller's transaction; how many
    events it read (0: caught up)."""
    await fetch_one(conn, LOCK)
    row = await fetch_one(conn, FOLD, {"batch": batch, "settle": settle_seconds})
    assert row is not None
    return int(row["read"])


async def prune(conn: AsyncConnectionLike, days: int) -> None:
    await fetch_all(conn, PRUNE, {"days": days})


async def mark(conn: AsyncConnectionLike) -> Row | None:
    return await fetch_one(conn, SELECT_MARK)


async def per_bucket(conn: AsyncConnectionLike, since: datetime, width_seconds: int) -> list[Row]:
    return await fetch_all(conn, PER_BUCKET, {"since": since, "width": width_seconds})


async def failures_by_code(conn: AsyncConnectionLike, since: datetime, limit: int) -> list[Row]:
    return await fetch_all(conn, FAILURES_BY_CODE, {"since": since, "limit": limit})


async def failures_by_template(conn: AsyncConnectionLike, since: datetime, limit: int) -> list[Row]:
    return await fetch_all(conn, FAILURES_BY_TEMPLATE, {"since": since, "limit": limit})


async def by_sender(conn: AsyncConnectionLike, since: datetime, limit: int) -> list[Row]:
    return await fetch_all(conn, BY_SENDER, {"since": since, "limit": limit})
