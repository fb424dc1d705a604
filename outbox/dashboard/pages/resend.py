"""GET and POST /messages/{id}/resend: a support user sends a failed or cancelled message again
as a template (a free-form text whose 24-hour window closed can only go so). The new message is
enqueued like any other (enqueue's checks and the catalogue's apply) and both messages record
the action."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from outbox.dashboard.auth import session_of
from outbox.dashboard.pages.message import allowed_to_change, load, message_id_of
from outbox.dashboard.pages.search import ENGINE
from outbox.dashboard.render import page
from outbox.dashboard.summary import sentence
from outbox.enqueue import enqueue
from outbox.errors import InvalidMessage
from outbox.schema import CANCELLED, FAILED, TEMPLATE_CATEGORIES
from outbox.status import Delivery
from outbox.store import dashboard as lookups
from outbox.templates import Template

logger = logging.getLogger("outbox.dashboard")

MAX_PARAMETERS = 100


def _body_parameters(template: Mapping[str, Any]) -> list[str]:
    for component in template.get("components") or []:
        if isinstance(component, Mapping) and str(component.get("type", "")).lower() == "body":
            return [str(p.get("text", "")) for p in component.get("parameters") or []]
    return []


def prefilled(delivery: Delivery) -> dict[str, str]:
    """The form's first values: the message's fallback template, else its own template."""
    template = delivery.fallback or delivery.template or {}
    return {
        "name": str(template.get("name") or ""),
        "language": str((template.get("language") or {}).get("code") or ""),
        "parameters": "\n".join(_body_parameters(template)),
        "category": str(delivery.category or ""),
    }


def template_of(form: Mapping[str, Any]) -> Template:
    """The template the form asks for; enqueue checks the rest (InvalidMessage)."""
    lines = str(form.get("parameters", "")).replace("\r\n", "\n").split("\n")
    parameters = tuple(line.strip() for line in lines if line.strip())
    if len(parameters) > MAX_PARAMETERS:
        raise InvalidMessage("parameters", f"at most {MAX_PARAMETERS} lines", rule="too_many")
    category = str(form.get("category", "")).strip() or None
    if category is not None and category not in TEMPLATE_CATEGORIES:
        raise InvalidMessage(
            "category", f"must be one of {', '.join(TEMPLATE_CATEGORIES)}", rule="choice"
        )
    return Template(
        name=str(form.get("name", "")).strip(),
        language=str(form.get("language", "")).strip(),
        body_params=parameters,
        category=category,
    )


def _resendable(delivery: Delivery) -> None:
    if delivery.status not in (FAILED, CANCELLED):
        raise web.HTTPConflict(text="only a failed or cancelled message can be sent again")


def _form(
    request: web.Request, delivery: Delivery, values: Mapping[str, str], error: str | None
) -> web.Response:
    return page(
        request,
        "resend.html",
        status=400 if error else 200,
        session=session_of(request),
        d=delivery,
        sentence=sentence(delivery, unmasked=True),
        values=values,
        categories=TEMPLATE_CATEGORIES,
        error=error,
    )


async def form(request: web.Request) -> web.Response:
    allowed_to_change(request)
    delivery, _, _ = await load(request, message_id_of(request))
    _resendable(delivery)
    return _form(request, delivery, prefilled(delivery), None)


async def resend(request: web.Request) -> web.StreamResponse:
    allowed_to_change(request)
    message_id = message_id_of(request)
    delivery, _, _ = await load(request, message_id)
    _resendable(delivery)
    posted = await request.post()
    values = {k: str(posted.get(k, "")) for k in ("name", "language", "parameters", "category")}
    user = session_of(request).user.name
    try:
        template = template_of(posted)
        async with request.app[ENGINE].begin() as conn:
            new_id = await enqueue(
                conn,
                "+" + delivery.recipient,
                template=template,
                sender=delivery.sender,
                reference=delivery.reference,
            )
            what = f"template {template.name} ({template.language})"
            await lookups.record_action(
                conn, user, "resend as template", message_id, f"as message {new_id}: {what}"
            )
            await lookups.record_action(
                conn, user, "resent", new_id, f"message {message_id} again, as {what}"
            )
    except InvalidMessage as exc:
        return _form(request, delivery, values, str(exc))
    logger.info("dashboard user %s resent message %d as message %d", user, message_id, new_id)
    location = request.app.router["message"].url_for(message_id=str(new_id))
    raise web.HTTPSeeOther(location.with_query(notice="resent"))
