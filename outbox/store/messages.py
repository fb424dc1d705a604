"""The statements apps and the CLI run: insert, read, list, retry, cancel, prune, stats."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert

from outbox.connections import (
    AsyncConnectionLike,
    Row,
    SyncConnectionLike,
    fetch_all,
    fetch_one,
    fetch_one_sync,
)
from outbox.schema import FAILED, FINISHED_STATUSES, PENDING, STATUSES, messages
from outbox.store.pauses import select_pauses
from outbox.store.webhooks import prune_webhooks
from outbox.validation import NewMessage

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection


_m = messages


def _text(name: str) -> sa.BindParameter[str]:
    return sa.bindparam(name, type_=sa.Text)


def _id(name: str = "row_id") -> sa.BindParameter[int]:
    return sa.bindparam(name, type_=sa.BigInteger)


def _in(column: sa.ColumnElement[str], values: tuple[str, ...]) -> sa.ColumnElement[bool]:
    # Literal lists: an expanding IN would need per-call compilation on the asyncpg path.
    return column.in_([sa.literal_column(f"'{value}'") for value in values])


# Insert one message; a repeated idempotency key inserts nothing and returns no row.
INSERT_MESSAGE = (
    pg_insert(_m)
    .values(
        recipient=_text("recipient"),
        checked_recipient=_text("checked_recipient"),  # checked by validation.py
        message=_text("message"),
        media=sa.cast(_text("media"), JSONB),
        idempotency_key=_text("idempotency_key"),
        available_at=sa.func.coalesce(
            sa.bindparam("send_at", type_=sa.DateTime(timezone=True)), sa.func.now()
        ),
        expires_at=sa.bindparam("expires_at", type_=sa.DateTime(timezone=True)),
        template=sa.cast(_text("template"), JSONB),
        sender=_text("sender"),
        fallback=sa.cast(_text("fallback"), JSONB),
        category=_text("category"),
        reference=_text("reference"),
        quiet_hours=_text("quiet_hours"),
        timezone=_text("timezone"),
    )
    .on_conflict_do_nothing(index_elements=[_m.c.idempotency_key])
    .returning(_m.c.id)
)

# The id of the row that already holds an idempotency key.
SELECT_ID_BY_IDEMPOTENCY_KEY = sa.select(_m.c.id).where(
    _m.c.idempotency_key == _text("idempotency_key")
)

# The columns a Delivery is built from; JSON as text so every driver returns the same thing.
DELIVERY_COLUMNS = (
    _m.c.id,
    _m.c.recipient,
    _m.c.message,
    sa.cast(_m.c.media, sa.Text).label("media"),
    _m.c.status,
    _m.c.attempts,
    _m.c.message_id,
    sa.cast(_m.c.parts, sa.Text).label("parts"),
    _m.c.last_error,
    _m.c.error_code,
    _m.c.idempotency_key,
    _m.c.available_at,
    _m.c.created_at,
    _m.c.updated_at,
    _m.c.sent_at,
    _m.c.delivered_at,
    _m.c.read_at,
    _m.c.expires_at,
    _m.c.in_doubt,
    sa.cast(_m.c.template, sa.Text).label("template"),
    _m.c.sender,
    sa.cast(_m.c.fallback, sa.Text).label("fallback"),
    _m.c.sent_fallback,
    _m.c.category,
    _m.c.reference,
)

# One message by id.
SELECT_MESSAGE = sa.select(*DELIVERY_COLUMNS).where(_m.c.id == _id())

# Put a failed row back to pending with attempts reset; its accepted parts stay, never resent.
# Not a row Meta failed after accepting one of its parts (a status webhook): the retry would only
# have turned it `sent`.
RETRY_FAILED = (
    sa.update(_m)
    .where(
        _m.c.id == _id(),
        _m.c.status == sa.literal_column(f"'{FAILED}'"),
        sa.text(
            "NOT EXISTS (SELECT FROM jsonb_array_elements(outbox_messages.parts) AS p(part) "
            "WHERE p.part ->> 'status' = 'failed')"
        ),
    )
    .values(
        status=PENDING,
        attempts=0,
        available_at=sa.func.now(),
        locked_until=None,
        lease_token=None,
        updated_at=sa.func.now(),
    )
    .returning(_m.c.id)
)

# Cancel a row that is still waiting to be sent.
CANCEL_PENDING = (
    sa.update(_m)
    .where(_m.c.id == _id(), _m.c.status == sa.literal_column(f"'{PENDING}'"))
    .values(status="cancelled", updated_at=sa.func.now())
    .returning(_m.c.id)
)

# The status of one row, to explain a refused retry or cancel.
SELECT_STATUS = sa.select(_m.c.status).where(_m.c.id == _id())

# Delete up to `batch` finished rows whose last change is older than `cutoff`.
_prunable = (
    sa.select(_m.c.id)
    .where(
        _in(_m.c.status, FINISHED_STATUSES),
        _m.c.updated_at < sa.bindparam("cutoff", type_=sa.DateTime(timezone=True)),
    )
    .limit(sa.bindparam("batch", type_=sa.Integer))
)
PRUNE_FINISHED = sa.delete(_m).where(_m.c.id.in_(_prunable.scalar_subquery())).returning(_m.c.id)

# Rows per status.
# Counts by sender (null: the default one) and status, in one pass over the table.
_SENDER = _m.c.sender.label("sender")
COUNT_BY_STATUS = sa.select(_SENDER, _m.c.status, sa.func.count().label("count")).group_by(
    _m.c.sender, _m.c.status
)

# How long the oldest due pending row has waited, and the send rate over the last five minutes.
BACKLOG_FIGURES = sa.select(
    sa.select(sa.func.extract("epoch", sa.func.now() - sa.func.min(_m.c.available_at)))
    .where(_m.c.status == sa.literal_column(f"'{PENDING}'"), _m.c.available_at <= sa.func.now())
    .scalar_subquery()
    .label("oldest_pending_seconds"),
    sa.select(sa.func.count())
    .where(_m.c.sent_at > sa.func.now() - sa.text("interval '5 minutes'"))
    .scalar_subquery()
    .label("sent_last_5_minutes"),
)


# The daemons that reported within the last two minutes, and what they are doing.
LIVE_DAEMONS = sa.text(
    """
    SELECT id, state, reason, state_since, held_until, in_flight, senders::text AS senders,
           extract(epoch FROM now() - heartbeat_at) AS heartbeat_age
    FROM outbox_daemons WHERE heartbeat_at > now() - interval '2 minutes' ORDER BY id
    """
)


# Errors Meta reported about a number or the app (value-level webhook errors) in the last day,
# by number and code: how many, the last title and details, and when the last came.
RECENT_WEBHOOK_ERRORS = sa.text(
    """
    SELECT DISTINCT ON (phone_number_id, code)
           phone_number_id, code, title, detail, received_at AS last_at,
           count(*) OVER (PARTITION BY phone_number_id, code) AS count
    FROM outbox_webhook_errors
    WHERE received_at > now() - interval '1 day'
    ORDER BY phone_number_id, code, received_at DESC
    LIMIT 50
    """
)


# One row's history, oldest first.
SELECT_EVENTS = sa.text(
    """
    SELECT at, part, kind, http_status, error_code, detail, latency_ms
    FROM outbox_events WHERE message_id = :row_id ORDER BY id
    """
)


# The row's recorded parts that have no `accepted` or `reconciled` event of their wamid: a
# daemon killed after recording a wamid and before writing its history (events are written in
# batches, off the send path). The recorded part says the API accepted it, and when.
SELECT_UNLOGGED_ACCEPTS = sa.text(
    """
    SELECT (x.part ->> 'sent_at')::timestamptz AS at, (x.i - 1)::int AS part,
           'accepted' AS kind, NULL::int AS http_status, NULL::int AS error_code,
           x.part ->> 'wamid' AS detail, NULL::float8 AS latency_ms
    FROM outbox_messages m, jsonb_array_elements(m.parts) WITH ORDINALITY AS x(part, i)
    WHERE m.id = :row_id AND x.part ? 'wamid'
      AND NOT EXISTS (SELECT 1 FROM outbox_events e
                      WHERE e.message_id = m.id AND e.part = x.i - 1
                        AND e.kind IN ('accepted', 'reconciled')
                        AND e.detail = x.part ->> 'wamid')
    ORDER BY x.i
    """
)


async def select_events(conn: AsyncConnectionLike, message_id: int) -> list[Row]:
    return await fetch_all(conn, SELECT_EVENTS, {"row_id": message_id})


async def select_unlogged_accepts(conn: AsyncConnectionLike, message_id: int) -> list[Row]:
    return await fetch_all(conn, SELECT_UNLOGGED_ACCEPTS, {"row_id": message_id})


def _insert_params(new: NewMessage) -> dict[str, Any]:
    return {
        "recipient": new.recipient,
        "checked_recipient": new.recipient,
        "message": new.message,
        "media": json.dumps(new.media),
        "idempotency_key": new.idempotency_key,
        "send_at": new.send_at,
        "expires_at": new.expires_at,
        "template": None if new.template is None else json.dumps(new.template),
        "sender": new.sender,
        "fallback": None if new.fallback is None else json.dumps(new.fallback),
        "category": new.category,
        "reference": new.reference,
        "quiet_hours": new.quiet_hours,
        "timezone": new.timezone,
    }


async def insert_message(conn: AsyncConnectionLike, new: NewMessage) -> int:
    """Insert in the caller's transaction; an existing idempotency key returns that row's id."""
    row = await fetch_one(conn, INSERT_MESSAGE, _insert_params(new))
    if row is None:
        # The conflicting row is committed by now (ON CONFLICT waited for its transaction), and
        # a new statement sees it under READ COMMITTED.
        row = await fetch_one(
            conn, SELECT_ID_BY_IDEMPOTENCY_KEY, {"idempotency_key": new.idempotency_key}
        )
    assert row is not None, "idempotency key conflict without a visible row"
    return int(row["id"])


def insert_message_sync(conn: SyncConnectionLike, new: NewMessage) -> int:
    """insert_message for a synchronous SQLAlchemy Session or Connection."""
    row = fetch_one_sync(conn, INSERT_MESSAGE, _insert_params(new))
    if row is None:
        row = fetch_one_sync(
            conn, SELECT_ID_BY_IDEMPOTENCY_KEY, {"idempotency_key": new.idempotency_key}
        )
    assert row is not None, "idempotency key conflict without a visible row"
    return int(row["id"])


async def select_message(conn: AsyncConnectionLike, message_id: int) -> Row | None:
    return await fetch_one(conn, SELECT_MESSAGE, {"row_id": message_id})


@lru_cache(maxsize=8)
def _list_statement(by_status: bool, by_recipient: bool, since: bool) -> sa.Select[Any]:
    """Messages newest first, filtered by the given parameters."""
    statement = sa.select(*DELIVERY_COLUMNS)
    if by_status:
        statement = statement.where(_m.c.status == _text("status"))
    if by_recipient:
        statement = statement.where(_m.c.recipient == _text("recipient"))
    if since:
        statement = statement.where(
            _m.c.created_at >= sa.bindparam("since", type_=sa.DateTime(timezone=True))
        )
    return statement.order_by(_m.c.id.desc()).limit(sa.bindparam("limit", type_=sa.Integer))


async def select_messages(
    conn: AsyncConnectionLike,
    *,
    status: str | None,
    recipient: str | None,
    since: datetime | None,
    limit: int,
) -> list[Row]:
    assert status is None or status in STATUSES
    statement = _list_statement(status is not None, recipient is not None, since is not None)
    params = {"status": status, "recipient": recipient, "since": since, "limit": limit}
    return await fetch_all(conn, statement, {k: v for k, v in params.items() if v is not None})


async def retry_failed(conn: AsyncConnection, message_id: int) -> str | None:
    """Requeue a failed row; None when done, else the status that prevented it ("" if absent)."""
    return await _transition(conn, RETRY_FAILED, message_id)


async def cancel_pending(conn: AsyncConnection, message_id: int) -> str | None:
    """Cancel a pending row; None when done, else the status that prevented it ("" if absent)."""
    return await _transition(conn, CANCEL_PENDING, message_id)


async def _transition(conn: AsyncConnection, statement: sa.Update, message_id: int) -> str | None:
    if await fetch_one(conn, statement, {"row_id": message_id}) is not None:
        return None
    row = await fetch_one(conn, SELECT_STATUS, {"row_id": message_id})
    return "" if row is None else str(row["status"])


async def prune_finished(conn: AsyncConnection, older_than: timedelta, *, batch: int = 5000) -> int:
    """Delete finished rows unchanged for `older_than`, in batches that each commit; applied
    webhook bodies and statuses received before then go too (a row's events go with it)."""
    cutoff_row = await fetch_one(conn, sa.select(sa.func.now().label("now")))
    assert cutoff_row is not None
    cutoff = cutoff_row["now"] - older_than
    await conn.commit()
    deleted = 0
    while True:
        rows = await fetch_all(conn, PRUNE_FINISHED, {"cutoff": cutoff, "batch": batch})
        await conn.commit()
        deleted += len(rows)
        if len(rows) < batch:
            break
    while await prune_webhooks(conn, cutoff, batch):
        await conn.commit()
    await conn.commit()
    return deleted


async def backlog_stats(conn: AsyncConnection) -> dict[str, Any]:
    """Counts by status (every status listed), oldest due pending age, sends per minute, the
    operators' pauses, the daemons' states and the errors Meta reported about numbers or the
    app in the last day."""
    counts = dict.fromkeys(STATUSES, 0)
    by_sender: dict[str, dict[str, int]] = {}
    for row in await fetch_all(conn, COUNT_BY_STATUS):
        counts[row["status"]] += int(row["count"])
        sender = by_sender.setdefault(row["sender"] or "default", dict.fromkeys(STATUSES, 0))
        sender[row["status"]] = int(row["count"])
    figures = await fetch_one(conn, BACKLOG_FIGURES)
    assert figures is not None
    oldest = figures["oldest_pending_seconds"]
    daemons = [
        {
            "id": row["id"],
            "state": row["state"],
            "reason": row["reason"],
            "since": row["state_since"].isoformat() if row["state_since"] else None,
            "held_until": row["held_until"].isoformat() if row["held_until"] else None,
            "in_flight": row["in_flight"],
            "senders": json.loads(row["senders"]),
            "heartbeat_age_seconds": round(float(row["heartbeat_age"]), 1),
        }
        for row in await fetch_all(conn, LIVE_DAEMONS)
    ]
    reported = [
        {
            "phone_number_id": row["phone_number_id"],
            "code": row["code"],
            "title": row["title"],
            "detail": row["detail"],
            "count": int(row["count"]),
            "last_at": row["last_at"].isoformat(),
        }
        for row in await fetch_all(conn, RECENT_WEBHOOK_ERRORS)
    ]
    paused = [
        {
            "sender": row["sender"],
            "paused_at": row["paused_at"].isoformat(),
            "reason": row["reason"],
        }
        for row in await select_pauses(conn)
    ]
    return {
        "counts": counts,
        "senders": by_sender,
        "pauses": paused,
        "oldest_pending_seconds": None if oldest is None else round(float(oldest), 3),
        "sends_per_minute": round(int(figures["sent_last_5_minutes"]) / 5, 1),
        "daemons": daemons,
        "meta_errors_last_day": reported,
    }
