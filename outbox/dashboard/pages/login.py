"""GET /login shows the form (and sets its CSRF cookie); POST /login starts a session."""

from __future__ import annotations

import secrets

from aiohttp import web

from outbox.dashboard.auth import LOGIN_COOKIE, SESSIONS, Failures, same
from outbox.dashboard.render import page, see_other
from outbox.dashboard.users import User, authenticate

FAILURES = web.AppKey("outbox_dashboard_failures", Failures)
TOKEN_LENGTH = len(secrets.token_urlsafe(32))
USERS: web.AppKey[dict[str, User]] = web.AppKey("outbox_dashboard_users", dict)


def _form(request: web.Request, error: str | None = None, status: int = 200) -> web.Response:
    # The token already set is kept: a second tab, or the browser's own request for
    # /favicon.ico (redirected here too), must not invalidate the form already shown.
    token = request.cookies.get(LOGIN_COOKIE, "")
    if len(token) != TOKEN_LENGTH:
        token = secrets.token_urlsafe(32)
    response = page(request, "login.html", status=status, csrf=token, error=error)
    request.app[SESSIONS].set_cookie(response, LOGIN_COOKIE, token)
    return response


async def show(request: web.Request) -> web.Response:
    return _form(request)


async def submit(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    token = form.get("csrf")
    if not same(token if isinstance(token, str) else None, request.cookies.get(LOGIN_COOKIE)):
        raise web.HTTPForbidden(text="this form has expired: reload the login page")
    name, password = form.get("name"), form.get("password")
    if not isinstance(name, str) or not isinstance(password, str):
        return _form(request, "Wrong name or password.", status=401)
    failures = request.app[FAILURES]
    if failures.locked(name):
        return _form(request, "Too many failed logins: wait 15 minutes.", status=429)
    user = authenticate(request.app[USERS], name, password)
    if user is None:
        failures.failed(name)
        return _form(request, "Wrong name or password.", status=401)
    failures.succeeded(name)
    response = see_other(request.app.router["search"].url_for())
    request.app[SESSIONS].start(user, response)
    response.del_cookie(LOGIN_COOKIE, path="/")
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    response = see_other(request.app.router["login"].url_for())
    request.app[SESSIONS].end(request, response)
    return response
