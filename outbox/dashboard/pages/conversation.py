"""GET /messages/{id}/conversation: what the message's customer wrote to our numbers beside
what we sent them, newest first. The customer is named by a message id, never by a phone
number in the address, so a viewer's browser history holds no number; a viewer sees types and
times only, support and admin users the words too (read from the stored webhook bodies)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web

from outbox.commands.inbound_text import texts_by_wamid
from outbox.dashboard.auth import session_of
from outbox.dashboard.masking import show_body, show_phone
from outbox.dashboard.pages.message import load, message_id_of
from outbox.dashboard.pages.search import ENGINE
from outbox.dashboard.render import page
from outbox.dashboard.summary import clock, sentence
from outbox.status import Delivery
from outbox.store import dashboard as lookups
from outbox.store import inbound

LIMIT = 50  # of each side


async def show(request: web.Request) -> web.Response:
    session = session_of(request)
    unmasked = session.user.role.unmasked
    delivery, _, _ = await load(request, message_id_of(request))
    customer = delivery.recipient
    async with request.app[ENGINE].connect() as conn:
        received = await inbound.latest_inbound(
            conn, customer=customer, phone=None, since=None, limit=LIMIT
        )
        sent = await lookups.find_by_recipient(conn, customer, LIMIT)
        texts: dict[str, str] = {}
        if unmasked and received:
            times = sorted({row["received_at"] for row in received})
            texts = texts_by_wamid(await inbound.bodies_applied_at(conn, times))
    entries: list[tuple[datetime, dict[str, Any]]] = []
    for row in received:
        words = texts.get(row["wamid"]) if unmasked else None
        entries.append(
            (
                row["at"],
                {
                    "at": clock(row["at"]),
                    "who": "customer",
                    "what": f"{row['type']} to {row['phone_number_id']}",
                    "text": words if unmasked else "(hidden)",
                    "id": None,
                },
            )
        )
    for row in sent:
        item = Delivery.from_row(row)
        entries.append(
            (
                item.created_at,
                {
                    "at": clock(item.created_at),
                    "who": "we",
                    "what": sentence(item, unmasked=unmasked),
                    "text": show_body(item.message, unmasked=unmasked)
                    or (f"template {item.template.get('name')}" if item.template else ""),
                    "id": item.id,
                },
            )
        )
    entries.sort(key=lambda entry: entry[0], reverse=True)
    return page(
        request,
        "conversation.html",
        session=session,
        d=delivery,
        phone=show_phone(customer, unmasked=unmasked),
        entries=[entry for _, entry in entries],
        limit=LIMIT,
    )
