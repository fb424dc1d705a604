"""GET /: the search box and what it found, each message in one sentence."""

from __future__ import annotations

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from outbox.dashboard import search as finder
from outbox.dashboard.auth import session_of
from outbox.dashboard.masking import show_phone
from outbox.dashboard.render import page
from outbox.dashboard.summary import clock, sentence

ENGINE: web.AppKey[AsyncEngine] = web.AppKey("outbox_dashboard_engine", AsyncEngine)


async def show(request: web.Request) -> web.Response:
    session = session_of(request)
    unmasked = session.user.role.unmasked
    query = request.query.get("q", "").strip()[:300]
    found = []
    if query:
        async with request.app[ENGINE].connect() as conn:
            deliveries = await finder.find(conn, query)
        found = [
            {
                "id": d.id,
                "sentence": sentence(d, unmasked=unmasked),
                "phone": show_phone(d.recipient, unmasked=unmasked),
                "status": d.status,
                "reference": d.reference,
                "created": clock(d.created_at),
            }
            for d in deliveries
        ]
    return page(
        request,
        "search.html",
        session=session,
        query=query,
        found=found,
        limit=finder.LIMIT,
    )
