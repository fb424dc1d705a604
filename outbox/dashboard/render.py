"""Jinja2 templates, autoescaped, from the package's templates/ folder."""

from __future__ import annotations

from typing import Any

import jinja2
from aiohttp import web
from yarl import URL

ENVIRONMENT: web.AppKey[jinja2.Environment] = web.AppKey(
    "outbox_dashboard_jinja", jinja2.Environment
)


def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("outbox.dashboard", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )


def page(request: web.Request, template: str, status: int = 200, **values: Any) -> web.Response:
    """A template rendered as an HTML response; `url` names routes, prefix included when the
    app is mounted under one."""

    def url(name: str, **parts: Any) -> str:
        return str(request.app.router[name].url_for(**{k: str(v) for k, v in parts.items()}))

    html = request.app[ENVIRONMENT].get_template(template).render(url=url, **values)
    return web.Response(text=html, content_type="text/html", status=status)


def see_other(location: URL) -> web.Response:
    """A 303 to `location`, as a response that can carry cookies."""
    return web.Response(status=303, headers={"Location": str(location)})
