"""GET and POST /messages/{id}/cancel: a support user's cancel of a pending message, confirmed
first and audited. A message a daemon has claimed meanwhile is not cancelled."""

from __future__ import annotations

import logging

from aiohttp import web

from outbox import store
from outbox.dashboard.auth import session_of
from outbox.dashboard.pages.message import allowed_to_change, load, message_id_of
from outbox.dashboard.pages.search import ENGINE
from outbox.dashboard.render import page
from outbox.dashboard.summary import sentence
from outbox.store import dashboard as lookups

logger = logging.getLogger("outbox.dashboard")


async def confirm(request: web.Request) -> web.Response:
    allowed_to_change(request)
    delivery, _, _ = await load(request, message_id_of(request))
    return page(
        request,
        "cancel.html",
        session=session_of(request),
        d=delivery,
        sentence=sentence(delivery, unmasked=True),
    )


async def cancel(request: web.Request) -> web.StreamResponse:
    allowed_to_change(request)
    message_id = message_id_of(request)
    user = session_of(request).user.name
    async with request.app[ENGINE].begin() as conn:
        refused = await store.cancel_pending(conn, message_id)
        if refused is None:
            await lookups.record_action(conn, user, "cancel", message_id)
    if refused == "":
        raise web.HTTPNotFound(text=f"no message {message_id}")
    if refused is None:
        logger.info("dashboard user %s cancelled message %d", user, message_id)
    notice = "cancelled" if refused is None else "not_pending"
    location = request.app.router["message"].url_for(message_id=str(message_id))
    raise web.HTTPSeeOther(location.with_query(notice=notice))
