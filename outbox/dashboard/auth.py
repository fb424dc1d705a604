"""Logins, sessions and CSRF: no page without a login, no action without the session's token.

A session lives in this process only (a restart logs everyone out). Its cookie is HttpOnly,
SameSite=Strict and, unless the app was made for plain-HTTP tests, Secure; every POST carries
the session's CSRF token in a form field, compared in constant time. The login form has a token
of its own, from a cookie set with the form (double submit), so no other site can log a browser
in as someone else.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Middleware

from outbox.dashboard.users import User

SESSION_COOKIE = "outbox_dashboard"
LOGIN_COOKIE = "outbox_dashboard_login"
SESSION_SECONDS = 8 * 3600.0
MAX_SESSIONS = 10_000


@dataclass
class Session:
    user: User
    csrf: str
    expires: float


class Sessions:
    """Open sessions by their cookie's random value."""

    def __init__(self, *, secure: bool) -> None:
        self.secure = secure
        self._open: dict[str, Session] = {}

    def start(self, user: User, response: web.StreamResponse) -> Session:
        now = time.monotonic()
        self._open = {key: s for key, s in self._open.items() if s.expires > now}
        if len(self._open) >= MAX_SESSIONS:  # the oldest go first
            oldest = sorted(self._open, key=lambda key: self._open[key].expires)
            for key in oldest[: len(self._open) - MAX_SESSIONS + 1]:
                del self._open[key]
        key = secrets.token_urlsafe(32)
        session = Session(user, secrets.token_urlsafe(32), now + SESSION_SECONDS)
        self._open[key] = session
        self.set_cookie(response, SESSION_COOKIE, key, max_age=int(SESSION_SECONDS))
        return session

    def find(self, request: web.Request) -> Session | None:
        key = request.cookies.get(SESSION_COOKIE)
        session = self._open.get(key) if key else None
        if session is None or session.expires <= time.monotonic():
            return None
        return session

    def end(self, request: web.Request, response: web.StreamResponse) -> None:
        key = request.cookies.get(SESSION_COOKIE)
        if key:
            self._open.pop(key, None)
        response.del_cookie(SESSION_COOKIE, path="/")

    def set_cookie(self, response: web.StreamResponse, name: str, value: str, **extra: int) -> None:
        response.set_cookie(
            name,
            value,
            httponly=True,
            secure=self.secure,
            samesite="Strict",
            path="/",
            **extra,  # type: ignore[arg-type]
        )


class Failures:
    """Failed logins per name: past MAX_FAILURES within FAILURE_WINDOW seconds, the name is
    refused until the window has passed, whatever the password (guessing stays slow)."""

    MAX_FAILURES = 5
    FAILURE_WINDOW = 900.0

    def __init__(self) -> None:
        self._times: dict[str, list[float]] = {}

    def _recent(self, name: str) -> list[float]:
        since = time.monotonic() - self.FAILURE_WINDOW
        recent = [at for at in self._times.get(name, []) if at > since]
        if recent:
            self._times[name] = recent
        else:
            self._times.pop(name, None)
        return recent

    def locked(self, name: str) -> bool:
        return len(self._recent(name)) >= self.MAX_FAILURES

    def failed(self, name: str) -> None:
        if len(self._times) >= MAX_SESSIONS and name not in self._times:
            for stale in [key for key in self._times if not self._recent(key)]:
                self._times.pop(stale, None)
        self._times.setdefault(name, []).append(time.monotonic())

    def succeeded(self, name: str) -> None:
        self._times.pop(name, None)


def same(given: str | None, expected: str | None) -> bool:
    """Constant-time equality of two tokens; False when either is missing."""
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PUBLIC = frozenset({"login", "login_submit", "healthz", "live"})


def require_login(sessions: Sessions) -> Middleware:
    """Middleware: a page without a session redirects to the login; a POST without the
    session's CSRF token is refused (403)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        name = request.match_info.route.name
        if name in PUBLIC:
            return _hardened(await handler(request))
        session = sessions.find(request)
        if session is None:
            if request.method != "GET":
                raise web.HTTPForbidden(text="log in first")
            raise web.HTTPSeeOther(request.app.router["login"].url_for())
        if request.method == "POST":
            form = await request.post()
            token = form.get("csrf")
            if not same(token if isinstance(token, str) else None, session.csrf):
                raise web.HTTPForbidden(text="this form has expired: reload the page and retry")
        return _hardened(await handler(request))

    return middleware


def _hardened(response: web.StreamResponse) -> web.StreamResponse:
    """No caching of what a page showed, no framing, no script but our own."""
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; style-src 'self' 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'",
    )
    return response


SESSIONS = web.AppKey("outbox_dashboard_sessions", Sessions)


def session_of(request: web.Request) -> Session:
    """The session of a request the middleware let through."""
    session = request.app[SESSIONS].find(request)
    if session is None:  # it expired between the middleware and the handler
        raise web.HTTPSeeOther(request.app.router["login"].url_for())
    return session
