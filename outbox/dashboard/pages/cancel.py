"""GET and POST /messages/{id}/cancel: a support user's cancel of a pending message, confirmed
first and audited. A message a daemon has claimed meanwhile is not cancelled."""

from __future__ import annotations

from aiohttp import web

from outbox import store
from outbox.dashboard.pages.message import change
from outbox.dashboard.pages.message import confirm as confirm_page


async def confirm(request: web.Request) -> web.Response:
    return await confirm_page(request, "cancel")


async def cancel(request: web.Request) -> web.StreamResponse:
    return await change(
        request, "cancel", store.cancel_pending, done="cancelled", refused="not_pending"
    )
