"""GET /messages/{id}: the answer in plain words, the timeline, the payload (masked for a
viewer); GET and POST /messages/{id}/retry: a support user's retry, confirmed first (cancel.py
and resend.py are the other actions on one message)."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncConnection

from outbox import store
from outbox.connections import Row
from outbox.dashboard.auth import session_of
from outbox.dashboard.masking import show_body, show_phone
from outbox.dashboard.pages.search import ENGINE
from outbox.dashboard.render import page
from outbox.dashboard.summary import clock, explanation, sentence, timeline
from outbox.errors import MessageNotFound
from outbox.schema import CANCELLED, FAILED, PENDING, READ
from outbox.status import Delivery, Event, get_history, get_status
from outbox.store import dashboard as lookups

logger = logging.getLogger("outbox.dashboard")

MAX_ID = 2**63 - 1
MAX_ACTIONS = 100  # audit entries shown on a message's page
REFRESH_SECONDS = 5  # a message still on its way reloads this often (static/live.js)
# What a retry did, named in the redirect's query (never text from the query itself).
NOTICES = {
    "retried": "Queued again: the daemon sends it within seconds.",
    "meta_failed": "Not retried: Meta failed a part it had accepted; a retry would send nothing.",
    "not_failed": "Not retried: it is no longer failed (someone or something moved it on).",
    "cancelled": "Cancelled: it will not be sent.",
    "not_pending": "Not cancelled: it is no longer pending (a daemon took it, or it ended).",
    "resent": "Enqueued again as a template: this is the new message.",
}


def message_id_of(request: web.Request) -> int:
    text = request.match_info["message_id"]
    if not (text.isascii() and text.isdigit()) or int(text) > MAX_ID:
        raise web.HTTPNotFound(text="no such message")
    return int(text)


def payload(delivery: Delivery, *, unmasked: bool) -> dict[str, Any]:
    """What was (or will be) sent, with the phone and the body hidden from a viewer."""
    shown: dict[str, Any] = {
        "to": show_phone(delivery.recipient, unmasked=unmasked),
        "from (phone number id)": delivery.sender or "META_PHONE_NUMBER_ID",
        "text": show_body(delivery.message, unmasked=unmasked),
    }
    if delivery.media:
        shown["media"] = [
            {
                "type": item.get("type"),
                "url": item.get("url") if unmasked else "(hidden)",
                "caption": show_body(item.get("caption"), unmasked=unmasked),
            }
            for item in delivery.media
        ]
    for name, template in (("template", delivery.template), ("fallback", delivery.fallback)):
        if template is not None:
            components = json.dumps(template.get("components", []), ensure_ascii=False)
            shown[name] = {
                "name": template.get("name"),
                "language": (template.get("language") or {}).get("code"),
                "parameters": show_body(components, unmasked=unmasked),
            }
    return {key: value for key, value in shown.items() if value is not None}


async def load(request: web.Request, message_id: int) -> tuple[Delivery, list[Event], list[Row]]:
    async with request.app[ENGINE].connect() as conn:
        try:
            delivery = await get_status(conn, message_id)
        except MessageNotFound:
            raise web.HTTPNotFound(text=f"no message {message_id}") from None
        history = await get_history(conn, message_id)
        actions = await lookups.select_actions(conn, message_id, MAX_ACTIONS)
    return delivery, history, actions


async def show(request: web.Request) -> web.Response:
    session = session_of(request)
    unmasked = session.user.role.unmasked
    delivery, history, actions = await load(request, message_id_of(request))
    return page(
        request,
        "message.html",
        session=session,
        d=delivery,
        sentence=sentence(delivery, unmasked=unmasked),
        explanation=explanation(delivery),
        steps=timeline(delivery, history, actions),
        parts=[
            {"number": n, "type": p.type, "status": p.status, "wamid": p.wamid}
            for n, p in enumerate(delivery.parts, 1)
        ],
        payload=payload(delivery, unmasked=unmasked),
        clock=clock,
        may_retry=session.user.role.may_retry and delivery.status == FAILED,
        may_cancel=session.user.role.may_retry and delivery.status == PENDING,
        may_resend=session.user.role.may_retry and delivery.status in (FAILED, CANCELLED),
        notice=NOTICES.get(request.query.get("notice", "")),
        refresh=0 if delivery.status in (READ, FAILED, CANCELLED) else REFRESH_SECONDS,
    )


def allowed_to_change(request: web.Request) -> None:
    """Retry, cancel and resend are for support and admin users."""
    if not session_of(request).user.role.may_retry:
        raise web.HTTPForbidden(
            text="only support and admin users may retry, cancel or resend a message"
        )


# What each action does, said on its confirm page.
CONSEQUENCES = {
    "retry": "The daemon will send its unsent parts again, with its attempts counted from zero. "
    "Parts Meta already accepted are not sent twice.",
    "cancel": "It will not be sent. A message a daemon is sending right now cannot be cancelled: "
    "it stays as it is.",
}


async def confirm(request: web.Request, verb: str) -> web.Response:
    """The page that asks before `verb` (retry, cancel) changes a message."""
    allowed_to_change(request)
    delivery, _, _ = await load(request, message_id_of(request))
    return page(
        request,
        "confirm.html",
        session=session_of(request),
        d=delivery,
        verb=verb,
        sentence=sentence(delivery, unmasked=True),
        explanation=explanation(delivery) if verb == "retry" else None,
        consequence=CONSEQUENCES[verb],
    )


async def change(
    request: web.Request,
    verb: str,
    transition: Callable[[AsyncConnection, int], Awaitable[str | None]],
    *,
    done: str,
    refused: str,
    refused_when: Mapping[str, str] | None = None,
) -> web.StreamResponse:
    """Apply a confirmed action (the store's `transition`: None when it changed the row, else
    the status that prevented it), audited in the same transaction when it happened; back to
    the message with a notice naming the outcome (`refused_when` by the preventing status)."""
    allowed_to_change(request)
    message_id = message_id_of(request)
    user = session_of(request).user.name
    async with request.app[ENGINE].begin() as conn:
        prevented = await transition(conn, message_id)
        if prevented is None:  # recorded with the change itself, or not at all
            await lookups.record_action(conn, user, verb, message_id)
    if prevented == "":
        raise web.HTTPNotFound(text=f"no message {message_id}")
    if prevented is None:
        logger.info("dashboard user %s: %s of message %d", user, verb, message_id)
        notice = done
    else:
        notice = (refused_when or {}).get(prevented, refused)
    location = request.app.router["message"].url_for(message_id=str(message_id))
    raise web.HTTPSeeOther(location.with_query(notice=notice))


async def confirm_retry(request: web.Request) -> web.Response:
    return await confirm(request, "retry")


async def retry(request: web.Request) -> web.StreamResponse:
    return await change(
        request,
        "retry",
        store.retry_failed,
        done="retried",
        refused="not_failed",
        refused_when={FAILED: "meta_failed"},
    )
