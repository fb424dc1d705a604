"""create_app(settings): the dashboard as an aiohttp app, to run alone (`outbox dashboard`) or
mount in an existing one (`parent.add_subapp("/outbox/", create_app(settings))`).

It holds no secret but the users' bcrypt hashes: the access token and the app secret in
`settings` are never read, so no page can show them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

from aiohttp import web

from outbox.cancel import cancel_and_wait
from outbox.dashboard import render
from outbox.dashboard.auth import SESSIONS, Failures, Sessions, require_login
from outbox.dashboard.pages import (
    bulk,
    cancel,
    conversation,
    login,
    message,
    operate,
    resend,
    search,
)
from outbox.dashboard.rollup import keep_folding
from outbox.dashboard.users import User, load_users
from outbox.database import create_engine, resolve_dsn
from outbox.errors import ConfigurationError
from outbox.settings import Settings

CONNECTIONS = 4
COMMAND_TIMEOUT = 10.0


def create_app(
    settings: Settings,
    *,
    users: Mapping[str, User] | None = None,
    secure_cookies: bool = True,
) -> web.Application:
    """The dashboard. Users come from `users` or else from the file OUTBOX_DASHBOARD_USERS
    names (`name:role:bcrypt-hash` lines); ConfigurationError when there are none.
    `secure_cookies=False` is for tests over plain HTTP only."""
    if users is None:
        if settings.dashboard_users is None:
            raise ConfigurationError(
                "OUTBOX_DASHBOARD_USERS: required by the dashboard (a file of "
                "name:role:bcrypt-hash lines; `outbox dashboard --hash-password` makes a hash)"
            )
        users = load_users(settings.dashboard_users)
    if not users:
        raise ConfigurationError("the dashboard needs at least one user")
    sessions = Sessions(secure=secure_cookies)
    app = web.Application(middlewares=[require_login(sessions)], client_max_size=64 * 1024)
    app[render.ENVIRONMENT] = render.environment()
    app[SESSIONS] = sessions
    app[login.USERS] = dict(users)
    app[login.FAILURES] = Failures()

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        dsn = await resolve_dsn(settings)
        engine = create_engine(
            dsn,
            pool_size=CONNECTIONS,
            command_timeout=COMMAND_TIMEOUT,
            application_name="outbox-dashboard",
        )
        app[search.ENGINE] = engine
        folding = asyncio.create_task(keep_folding(engine), name="outbox-dashboard-rollup")
        yield
        await cancel_and_wait([folding])
        await engine.dispose()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_get("/login", login.show, name="login")
    app.router.add_post("/login", login.submit, name="login_submit")
    app.router.add_post("/logout", login.logout, name="logout")
    app.router.add_get("/", search.show, name="search")
    app.router.add_get("/messages/{message_id}", message.show, name="message")
    app.router.add_get("/messages/{message_id}/retry", message.confirm_retry, name="confirm_retry")
    app.router.add_post("/messages/{message_id}/retry", message.retry, name="retry")
    app.router.add_get("/messages/{message_id}/cancel", cancel.confirm, name="confirm_cancel")
    app.router.add_post("/messages/{message_id}/cancel", cancel.cancel, name="cancel")
    app.router.add_get("/messages/{message_id}/resend", resend.form, name="resend_form")
    app.router.add_post("/messages/{message_id}/resend", resend.resend, name="resend")
    app.router.add_get(
        "/messages/{message_id}/conversation", conversation.show, name="conversation"
    )
    app.router.add_get("/operate", operate.show, name="operate")
    app.router.add_get("/operate/bulk", bulk.confirm, name="confirm_bulk")
    app.router.add_post("/operate/bulk", bulk.act, name="bulk")
    app.router.add_get("/healthz", _alive, name="healthz")
    app.router.add_get("/live.js", _live_script, name="live")
    return app


_LIVE_SCRIPT = (Path(__file__).parent / "static" / "live.js").read_text(encoding="utf-8")


async def _live_script(request: web.Request) -> web.Response:
    """The one script: reloads the page of a message still on its way."""
    return web.Response(text=_LIVE_SCRIPT, content_type="text/javascript")


async def _alive(request: web.Request) -> web.Response:
    return web.Response(text="ok\n", content_type="text/plain")
