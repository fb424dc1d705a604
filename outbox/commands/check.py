"""`outbox check`: is this installation ready? The database reachable and migrated, the access
token valid and the phone number id visible to it (`GET /{phone_number_id}`, which sends
nothing), the webhook receiver reachable and answering Meta's verification. One line per check,
with the fix when it fails; exit 1 when any fails. No secret is ever printed."""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from outbox import migrate
from outbox.database import create_engine, resolve_dsn, short_error
from outbox.errors import GraphError
from outbox.settings import Settings, redact_secrets, redact_url
from outbox.whatsapp import error_from_response

TIMEOUT = 10.0


@dataclass(frozen=True)
class Result:
    name: str
    state: str  # ok, FAIL or skip
    detail: str
    fix: str | None = None


def add_command(commands: Any) -> None:
    p = commands.add_parser(
        "check",
        help="is this installation ready: database, schema, token, phone number id, receiver",
        description="Check, one line each, with the fix for what fails: the database is "
        "reachable and migrated; META_ACCESS_TOKEN is valid and META_PHONE_NUMBER_ID is a "
        "number it can send from (a lookup, GET /{phone_number_id}: nothing is sent); the "
        "webhook receiver (--webhook-url, else $OUTBOX_WEBHOOK_URL: the /webhook URL Meta "
        "calls) answers /healthz and, with META_WEBHOOK_VERIFY_TOKEN set, Meta's verification. "
        "Exit 1 when any check fails; secrets are never printed.",
    )
    p.add_argument(
        "--webhook-url",
        metavar="URL",
        help="the receiver's public /webhook URL, as given to Meta (default: "
        "$OUTBOX_WEBHOOK_URL; neither: the check is skipped)",
    )
    p.add_argument("--json", action="store_true", help="print a JSON list of the checks")


async def check_database(settings: Settings) -> list[Result]:
    where = redact_url(settings.database_url) if settings.database_url else "embedded"
    try:
        dsn = await resolve_dsn(settings)
        engine = create_engine(dsn, pool_size=1, application_name="outbox-check")
        try:
            async with engine.connect() as conn:
                current = await conn.run_sync(migrate.current_revision)
        finally:
            await engine.dispose()
    except Exception as exc:
        return [
            Result(
                "database",
                "FAIL",
                f"cannot connect ({where}): {short_error(exc)}",
                "set OUTBOX_DATABASE_URL (or --database-url) to a reachable PostgreSQL: host, "
                "port, database name, user and password",
            ),
            Result("schema", "skip", "the database cannot be reached"),
        ]
    head = migrate.head_revision()
    database = Result("database", "ok", f"reachable ({where})")
    if current == head:
        return [database, Result("schema", "ok", f"at revision {head}, the latest")]
    return [
        database,
        Result(
            "schema",
            "FAIL",
            f"at revision {current or 'none'}, not {head}",
            "run `outbox migrate`",
        ),
    ]


def _graph_fix(error: GraphError) -> str:
    if error.code == 190:
        return (
            "the token is invalid or expired: create a new one (a system user's token does "
            "not expire) and set META_ACCESS_TOKEN"
        )
    if error.code == 100 and error.subcode == 33:
        return (
            "copy the phone number id (not the phone number) from WhatsApp Manager > API "
            "Setup into META_PHONE_NUMBER_ID, and give the token's system user access to its "
            "WhatsApp Business Account"
        )
    if error.code in (10, 200, 3):
        return (
            "grant the token the whatsapp_business_messaging and "
            "whatsapp_business_management permissions"
        )
    return "see the error above (whatsapp-api codes)"


async def check_token(settings: Settings, http: aiohttp.ClientSession) -> Result:
    missing = [
        name
        for name, value in (
            ("META_ACCESS_TOKEN", settings.access_token),
            ("META_PHONE_NUMBER_ID", settings.phone_number_id),
        )
        if not value
    ]
    if missing:
        return Result(
            "token",
            "FAIL",
            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set",
            "set META_ACCESS_TOKEN to a system user's access token and META_PHONE_NUMBER_ID "
            "to the phone number id to send from (WhatsApp Manager > API Setup)",
        )
    phone = settings.phone_number_id
    url = f"{settings.graph_api_url}/{settings.graph_api_version}/{phone}"
    try:
        async with http.get(
            url,
            params={"fields": "id,display_phone_number,verified_name"},
            headers={"Authorization": f"Bearer {settings.access_token}"},
            timeout=aiohttp.ClientTimeout(total=TIMEOUT),
        ) as response:
            text = await response.text(errors="replace")
            status = response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Result(
            "token",
            "FAIL",
            f"cannot reach the Graph API at {settings.graph_api_url}: {type(exc).__name__}: {exc}",
            "check the network and META_GRAPH_API_URL (unset: https://graph.facebook.com)",
        )
    if status == 200:
        try:
            body = json.loads(text)
        except ValueError:
            body = None
        if isinstance(body, dict) and str(body.get("id")) == phone:
            number = body.get("display_phone_number") or "?"
            name = body.get("verified_name") or "?"
            return Result("token", "ok", f"valid; phone number id {phone} is {number} ({name})")
        return Result(
            "token",
            "FAIL",
            f"the lookup of phone number id {phone} answered 200 without it",
            "check META_GRAPH_API_URL: it does not look like the Graph API",
        )
    error = error_from_response(status, text, None)
    if isinstance(error, GraphError):
        return Result(
            "token", "FAIL", f"the lookup of {phone} was refused: {error}", _graph_fix(error)
        )
    return Result(
        "token",
        "FAIL",
        f"the lookup of phone number id {phone}: {error}",
        "check META_GRAPH_API_URL and META_GRAPH_API_VERSION",
    )


def _sibling(url: str, path: str) -> str:
    """The URL of `path` on the receiver whose /webhook (or base) URL this is."""
    parts = urlsplit(url)
    base = parts.path.rstrip("/")
    if base.endswith("/webhook"):
        base = base[: -len("/webhook")]
    return urlunsplit(parts._replace(path=f"{base}{path}", query="", fragment=""))


async def check_webhook(
    settings: Settings, url: str | None, http: aiohttp.ClientSession
) -> list[Result]:
    if not url:
        return [
            Result(
                "webhook",
                "skip",
                "no receiver URL given",
                "give --webhook-url https://…/webhook or set OUTBOX_WEBHOOK_URL to check it",
            )
        ]
    if not url.startswith(("http://", "https://")):
        return [Result("webhook", "FAIL", f"{url!r} is not an http(s) URL", "give its full URL")]
    health = _sibling(url, "/healthz")
    timeout = aiohttp.ClientTimeout(total=TIMEOUT)
    try:
        async with http.get(health, timeout=timeout) as response:
            status = response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        return [
            Result(
                "webhook",
                "FAIL",
                f"cannot reach {health}: {type(exc).__name__}: {exc}",
                "start `outbox webhook` there, and let its proxy forward /healthz and /webhook",
            )
        ]
    if status != 200:
        return [
            Result(
                "webhook",
                "FAIL",
                f"{health} answered HTTP {status}",
                "is this `outbox webhook`? Its proxy must forward /healthz and /webhook to it",
            )
        ]
    results = [Result("webhook", "ok", f"{health} answers")]
    if not settings.webhook_verify_token:
        return results
    challenge = secrets.token_hex(8)
    query = {
        "hub.mode": "subscribe",
        "hub.verify_token": settings.webhook_verify_token,
        "hub.challenge": challenge,
    }
    verify = _sibling(url, "/webhook")
    try:
        async with http.get(verify, params=query, timeout=timeout) as response:
            answered = (response.status, await response.text(errors="replace"))
    except (aiohttp.ClientError, TimeoutError) as exc:
        answered = (0, f"{type(exc).__name__}: {exc}")
    if answered == (200, challenge):
        results.append(Result("verification", "ok", f"{verify} answers Meta's verification"))
    else:
        results.append(
            Result(
                "verification",
                "FAIL",
                f"{verify} refused Meta's verification with this META_WEBHOOK_VERIFY_TOKEN "
                f"(HTTP {answered[0]})",
                "give the receiver and Meta's webhook settings the same META_WEBHOOK_VERIFY_TOKEN",
            )
        )
    return results


async def checks(settings: Settings, webhook_url: str | None) -> list[Result]:
    results = await check_database(settings)
    async with aiohttp.ClientSession() as http:
        results.append(await check_token(settings, http))
        results += await check_webhook(settings, webhook_url, http)
    return results


def run(settings: Settings, args: argparse.Namespace) -> int:
    results = asyncio.run(checks(settings, args.webhook_url or settings.webhook_url))
    if args.json:
        document = [
            {"check": r.name, "state": r.state, "detail": r.detail, "fix": r.fix} for r in results
        ]
        print(redact_secrets(json.dumps(document, ensure_ascii=False), settings))
    else:
        for r in results:
            line = f"{r.state:<5} {r.name:<13} {r.detail}"
            if r.fix and r.state != "ok":
                line += f" — fix: {r.fix}"
            print(redact_secrets(line, settings))
    sys.stdout.flush()
    return 1 if any(r.state == "FAIL" for r in results) else 0
