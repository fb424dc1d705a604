"""GET and POST /operate/bulk: an admin's retry or cancel of every message a filter matches, as
`outbox retry|cancel --recipient --code --since` does it: counted and confirmed first, never
more than the rows counted, and one audit row saying who did what to how many."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

from outbox.commands import values
from outbox.commands.bulk import ACTION_STATUS, describe
from outbox.dashboard.auth import session_of
from outbox.dashboard.pages.search import ENGINE
from outbox.dashboard.render import page
from outbox.errors import InvalidMessage
from outbox.store import bulk
from outbox.store import dashboard as lookups
from outbox.validation import recipient_digits

logger = logging.getLogger("outbox.dashboard")

DONE = {"retry": "retried", "cancel": "cancelled"}


@dataclass(frozen=True)
class Filter:
    action: str
    recipient: str | None
    code: int | None
    since: datetime | timedelta | None
    fields: dict[str, str]  # as typed, to carry from the confirm page to the action

    @property
    def status(self) -> str:
        return ACTION_STATUS[self.action]

    def params(self) -> dict[str, Any]:
        return bulk.filter_params(
            self.status, recipient=self.recipient, code=self.code, since=self.since
        )

    def words(self) -> str:
        return describe(self.status, recipient=self.recipient, code=self.code, since=self.since)


class BadFilter(ValueError):
    """A field of the form breaks its rule; the text names both."""


def parse(form: Mapping[str, Any]) -> Filter:
    """The filter of a form; BadFilter naming the field. At least one of recipient, code and
    since: never an unfiltered mass action."""
    fields = {k: str(form.get(k, "")).strip() for k in ("action", "recipient", "code", "since")}
    action = fields["action"]
    if action not in ACTION_STATUS:
        raise BadFilter("action: must be retry or cancel")
    try:
        recipient = (
            recipient_digits(fields["recipient"], "recipient") if fields["recipient"] else None
        )
    except InvalidMessage as exc:
        raise BadFilter(str(exc)) from None
    try:
        code = values.error_code(fields["code"]) if fields["code"] else None
    except argparse.ArgumentTypeError as exc:
        raise BadFilter(f"Graph code: {exc}") from None
    try:
        since = values.since(fields["since"]) if fields["since"] else None
    except argparse.ArgumentTypeError as exc:
        raise BadFilter(f"enqueued since: {exc}") from None
    if recipient is None and code is None and since is None:
        raise BadFilter(
            "give at least one filter (recipient, Graph code or enqueued since); "
            "`since 30d` selects the last 30 days"
        )
    return Filter(action, recipient, code, since, fields)


def _admin(request: web.Request) -> None:
    if not session_of(request).user.role.may_bulk:
        raise web.HTTPForbidden(text="only admin users may act on every message a filter matches")


async def confirm(request: web.Request) -> web.Response:
    """How many messages the filter matches now, and a button to act on exactly those."""
    _admin(request)
    session = session_of(request)
    try:
        chosen = parse(request.query)
    except BadFilter as exc:
        return page(request, "bulk.html", status=400, session=session, error=str(exc))
    async with request.app[ENGINE].connect() as conn:
        actionable, refused, upto = await bulk.count_matching(conn, chosen.params())
    return page(
        request,
        "bulk.html",
        session=session,
        error=None,
        chosen=chosen,
        actionable=actionable,
        refused=refused,
        upto=upto,
    )


async def act(request: web.Request) -> web.StreamResponse:
    """Retry or cancel the counted rows (ids up to the count's highest); audited."""
    _admin(request)
    session = session_of(request)
    form = await request.post()
    try:
        chosen = parse(form)
        upto = int(str(form.get("upto", "")))
    except (BadFilter, ValueError) as exc:
        return page(request, "bulk.html", status=400, session=session, error=str(exc))
    statement = bulk.RETRY_MATCHING if chosen.action == "retry" else bulk.CANCEL_MATCHING
    async with request.app[ENGINE].connect() as conn:
        changed = await bulk.change_matching(conn, statement, chosen.params(), upto)
        detail = f"{DONE[chosen.action]} {changed} {chosen.words()}"
        await lookups.record_action(conn, session.user.name, f"bulk {chosen.action}", None, detail)
        await conn.commit()
    logger.info("dashboard user %s: %s", session.user.name, detail)
    location = request.app.router["operate"].url_for()
    raise web.HTTPSeeOther(location.with_query(notice=f"{chosen.action}:{changed}"))
