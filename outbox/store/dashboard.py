"""The dashboard's lookups: a message by id, recipient, reference or wamid. Each one walks an
index and stops at a LIMIT, however many rows the table holds."""

from __future__ import annotations

import sqlalchemy as sa

from outbox.connections import AsyncConnectionLike, Row, fetch_all, fetch_one
from outbox.schema import audit, messages, part_wamids, statuses
from outbox.store.messages import DELIVERY_COLUMNS

_m = messages


def _limit() -> sa.BindParameter[int]:
    return sa.bindparam("limit", type_=sa.Integer)


# One message by id (the primary key).
FIND_BY_ID = sa.select(*DELIVERY_COLUMNS).where(
    _m.c.id == sa.bindparam("row_id", type_=sa.BigInteger)
)

# A recipient's newest messages (ix_outbox_messages_recipient).
FIND_BY_RECIPIENT = (
    sa.select(*DELIVERY_COLUMNS)
    .where(_m.c.recipient == sa.bindparam("recipient", type_=sa.Text))
    .order_by(_m.c.id.desc())
    .limit(_limit())
)

# The newest messages with an app reference (ix_outbox_messages_reference).
FIND_BY_REFERENCE = (
    sa.select(*DELIVERY_COLUMNS)
    .where(_m.c.reference == sa.bindparam("reference", type_=sa.Text))
    .order_by(_m.c.id.desc())
    .limit(_limit())
)

# A message by the wamid of any of its parts: the text's is the row's message_id
# (ix_outbox_messages_message_id), every earlier part is in outbox_part_wamids (its key), and a
# status webhook names it in outbox_statuses (the unique (wamid, status) index), which also
# covers a row recorded before part_wamids existed. The few ids are gathered first (a plain OR
# would have the planner walk the primary key through a filter), then each row by its key.
_WAMID_HITS = (
    sa.union(
        sa.select(_m.c.id.label("id")).where(
            _m.c.message_id == sa.bindparam("wamid", type_=sa.Text)
        ),
        sa.select(part_wamids.c.message_id.label("id")).where(
            part_wamids.c.wamid == sa.bindparam("wamid", type_=sa.Text)
        ),
        sa.select(statuses.c.message_id.label("id")).where(
            statuses.c.wamid == sa.bindparam("wamid", type_=sa.Text),
            statuses.c.message_id.is_not(None),
        ),
    )
    .cte("wamid_hits")
    .prefix_with("MATERIALIZED")
)
FIND_BY_WAMID = (
    sa.select(*DELIVERY_COLUMNS)
    .join_from(_m, _WAMID_HITS, _m.c.id == _WAMID_HITS.c.id)
    .order_by(_m.c.id.desc())
    .limit(_limit())
)


async def find_by_id(conn: AsyncConnectionLike, row_id: int) -> list[Row]:
    return await fetch_all(conn, FIND_BY_ID, {"row_id": row_id})


async def find_by_recipient(conn: AsyncConnectionLike, recipient: str, limit: int) -> list[Row]:
    return await fetch_all(conn, FIND_BY_RECIPIENT, {"recipient": recipient, "limit": limit})


async def find_by_reference(conn: AsyncConnectionLike, reference: str, limit: int) -> list[Row]:
    return await fetch_all(conn, FIND_BY_REFERENCE, {"reference": reference, "limit": limit})


async def find_by_wamid(conn: AsyncConnectionLike, wamid: str, limit: int) -> list[Row]:
    return await fetch_all(conn, FIND_BY_WAMID, {"wamid": wamid, "limit": limit})


# Record an action in the caller's transaction.
INSERT_AUDIT = (
    sa.insert(audit)
    .values(
        actor=sa.bindparam("actor", type_=sa.Text),
        action=sa.bindparam("action", type_=sa.Text),
        message_id=sa.bindparam("message_id", type_=sa.BigInteger),
        detail=sa.bindparam("detail", type_=sa.Text),
    )
    .returning(audit.c.id)
)

# A message's audit entries, oldest first (ix_outbox_audit_message).
SELECT_AUDIT_FOR_MESSAGE = (
    sa.select(audit.c.at, audit.c.actor, audit.c.action, audit.c.detail)
    .where(audit.c.message_id == sa.bindparam("message_id", type_=sa.BigInteger))
    .order_by(audit.c.id)
    .limit(_limit())
)

# The latest actions of every user, newest first (the primary key).
SELECT_RECENT_AUDIT = (
    sa.select(audit.c.at, audit.c.actor, audit.c.action, audit.c.message_id, audit.c.detail)
    .order_by(audit.c.id.desc())
    .limit(_limit())
)


async def record_action(
    conn: AsyncConnectionLike,
    actor: str,
    action: str,
    message_id: int | None,
    detail: str | None = None,
) -> None:
    params = {"actor": actor, "action": action, "message_id": message_id, "detail": detail}
    await fetch_one(conn, INSERT_AUDIT, params)


async def select_actions(conn: AsyncConnectionLike, message_id: int, limit: int) -> list[Row]:
    return await fetch_all(
        conn, SELECT_AUDIT_FOR_MESSAGE, {"message_id": message_id, "limit": limit}
    )


async def recent_actions(conn: AsyncConnectionLike, limit: int) -> list[Row]:
    return await fetch_all(conn, SELECT_RECENT_AUDIT, {"limit": limit})
