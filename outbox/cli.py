"""The `outbox` command: argparse subcommands over the Python API.

Errors are one line on stderr and a non-zero exit (1 error, 2 usage), never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import asyncpg
import sqlalchemy.exc
from sqlalchemy.ext.asyncio import AsyncConnection

from outbox import demo, migrate, serve, store
from outbox.database import create_engine, resolve_dsn, short_error
from outbox.enqueue import enqueue
from outbox.errors import InvalidMessage, OutboxError
from outbox.logs import LOG_FORMATS, LOG_LEVELS
from outbox.schema import STATUSES
from outbox.settings import Settings, redact_secrets, redact_url
from outbox.status import Delivery, Event, get_history, get_status, list_messages
from outbox.templates import Template

T = TypeVar("T")
_DURATION = re.compile(r"^(\d+)([mhd])$")
MAX_DURATION = timedelta(days=36500)
_DURATION_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


class UsageError(Exception):
    """Bad command-line usage: exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def parse_duration(text: str) -> timedelta:
    """`90m`, `12h`, `30d`."""
    match = _DURATION.match(text.strip())
    if not match or int(match.group(1)) == 0:
        raise argparse.ArgumentTypeError(
            f"invalid duration {text!r}: use a positive number then m, h or d, e.g. 30d"
        )
    duration = timedelta(**{_DURATION_UNITS[match.group(2)]: min(int(match.group(1)), 10**7)})
    if duration > MAX_DURATION:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: at most 100 years")
    return duration


def parse_time(text: str) -> datetime:
    """ISO 8601; UTC when it has no offset."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid time {text!r}: use ISO 8601, e.g. 2026-12-01T09:30:00+05:00"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid id {text!r}: must be a positive integer")
    return value


DAEMON_FLAGS: dict[str, Callable[[str], Any]] = {
    "concurrency": int,
    "batch-size": int,
    "lease-seconds": float,
    "max-attempts": int,
    "retry-delay": float,
    "poll-interval": float,
    "rate": float,
    "pair-burst": int,
    "pair-interval": float,
    "pause-probe": float,
    "request-timeout": float,
    "reconcile-seconds": float,
    "max-age": lambda text: parse_duration(text).total_seconds(),
}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="outbox", description="A transactional outbox for WhatsApp messages.")
    parser.add_argument(
        "--database-url", help="PostgreSQL URL (default: $OUTBOX_DATABASE_URL, else embedded)"
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    commands.add_parser("migrate", help="upgrade the schema to the latest revision")

    p = commands.add_parser("enqueue", help="add one message; prints its id")
    p.add_argument("recipient")
    p.add_argument("message", nargs="?")
    for kind in ("image", "video", "document", "audio"):
        p.add_argument(f"--{kind}", action="append", default=[], metavar="URL")
    p.add_argument("--template", metavar="NAME", help="send this approved template instead")
    p.add_argument("--language", metavar="CODE", help="the template's language, e.g. en_US")
    p.add_argument(
        "--body-param",
        action="append",
        default=[],
        metavar="V",
        help="the template's body parameters {{1}}, {{2}}, … in order",
    )
    p.add_argument("--header-image", metavar="URL", help="the template's header image")
    p.add_argument("--idempotency-key")
    p.add_argument("--send-at", type=parse_time, metavar="ISO")
    p.add_argument(
        "--expires-in",
        type=parse_duration,
        metavar="AGE",
        help="fail the message instead of sending it later than this (90m, 12h, 30d)",
    )

    p = commands.add_parser("status", help="one message's delivery status")
    p.add_argument("id", type=positive_int)
    p.add_argument("--json", action="store_true")

    p = commands.add_parser("list", help="messages, newest first")
    p.add_argument("--status", choices=STATUSES)
    p.add_argument("--recipient")
    p.add_argument("--since", type=parse_time, metavar="ISO")
    p.add_argument("--limit", type=positive_int, default=100)
    p.add_argument("--json", action="store_true")

    p = commands.add_parser("stats", help="counts by status, backlog age, send rate")
    p.add_argument("--json", action="store_true")

    p = commands.add_parser("retry", help="put failed messages back to pending")
    p.add_argument("ids", nargs="+", type=positive_int, metavar="ID")
    p = commands.add_parser("cancel", help="cancel pending messages")
    p.add_argument("ids", nargs="+", type=positive_int, metavar="ID")

    p = commands.add_parser("prune", help="delete finished messages past retention")
    p.add_argument("--older-than", type=parse_duration, required=True, metavar="AGE")

    p = commands.add_parser("run", help="the delivery daemon")
    for flag, convert in DAEMON_FLAGS.items():
        p.add_argument(f"--{flag}", type=convert, metavar="S" if convert is float else "N")
    p.add_argument("--drain", action="store_true", help="exit once nothing is left to send")
    p.add_argument(
        "--http-port", type=positive_int, help="serve /metrics, /healthz and /readyz on this port"
    )
    p.add_argument(
        "--http-host",
        default="127.0.0.1",
        metavar="H",
        help="the address --http-port listens on (default 127.0.0.1; 0.0.0.0 in a container)",
    )
    p.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="text",
        help="text or JSON lines (default text)",
    )
    p.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        default="INFO",
        metavar="L",
        help="DEBUG, INFO, WARNING or ERROR (default INFO)",
    )

    p = commands.add_parser("simulator", help="a local stand-in for the Graph API")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=positive_int, default=8099)
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--fail-rate", type=float, default=0.0)
    p.add_argument("--scenario", type=Path, metavar="FILE")
    p.add_argument("--mps", type=float)
    p.add_argument(
        "--webhook-url",
        metavar="URL",
        help="post signed status webhooks (sent, delivered, read) for what it accepts",
    )
    p.add_argument(
        "--status-delay-ms",
        type=float,
        default=200.0,
        metavar="MS",
        help="the wait before each status webhook (default 200)",
    )

    p = commands.add_parser("webhook", help="receive Meta's status webhooks and inbound messages")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=positive_int, default=8090)

    commands.add_parser("demo", help="embedded PostgreSQL + simulator + sample messages")
    return parser


async def _on_connection(settings: Settings, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
    engine = create_engine(await resolve_dsn(settings), pool_size=1)
    try:
        async with engine.connect() as conn:
            return await work(conn)
    finally:
        await engine.dispose()


def _iso(value: datetime | None) -> str:
    return "-" if value is None else value.isoformat(timespec="seconds")


def _clip(text: str | None, width: int) -> str:
    if not text:
        return "-"
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def print_delivery(delivery: Delivery) -> None:
    fields: list[tuple[str, Any]] = [
        ("id", delivery.id),
        ("recipient", delivery.recipient),
        ("status", delivery.status),
        ("attempts", delivery.attempts),
        ("message_id", delivery.message_id or "-"),
        ("last_error", delivery.last_error or "-"),
        ("error_code", delivery.error_code if delivery.error_code is not None else "-"),
        ("created_at", _iso(delivery.created_at)),
        ("next_attempt_at", _iso(delivery.next_attempt_at)),
        ("expires_at", _iso(delivery.expires_at)),
        ("sent_at", _iso(delivery.sent_at)),
        ("delivered_at", _iso(delivery.delivered_at)),
        ("read_at", _iso(delivery.read_at)),
    ]
    for name, value in fields:
        print(f"{name:<16}{value}")
    print("parts")
    for number, part in enumerate(delivery.parts, 1):
        target = part.url or _clip(delivery.message, 60)
        if delivery.template is not None:
            language = (delivery.template.get("language") or {}).get("code")
            target = f"template {delivery.template.get('name')} ({language})"
        print(f"  {number}. {part.type:<9}{part.status or '-':<10}{part.wamid or '-'}  {target}")


def print_history(history: Sequence[Event]) -> None:
    """The timeline: one line per request outcome or status webhook."""
    print("history")
    if not history:
        print("  -")
    for event in history:
        part = "-" if event.part is None else str(event.part + 1)
        figures = " ".join(
            text
            for text in (
                f"HTTP {event.http_status}" if event.http_status else "",
                f"#{event.error_code}" if event.error_code is not None else "",
                f"{event.latency_ms:.0f} ms" if event.latency_ms is not None else "",
            )
            if text
        )
        print(
            f"  {_iso(event.at)}  part {part:<3}{event.kind:<18}{figures:<24}"
            f"{_clip(event.detail, 70)}"
        )


def print_table(deliveries: Sequence[Delivery]) -> None:
    print(f"{'id':>8}  {'status':<9}  {'recipient':<15}  {'tries':>5}  {'created_at':<25}  text")
    for d in deliveries:
        if d.template is not None:
            text = f"[template {d.template.get('name')}]"
        else:
            text = _clip(d.message, 40) if d.message else f"[{len(d.media)} media]"
        print(
            f"{d.id:>8}  {d.status:<9}  {d.recipient:<15}  {d.attempts:>5}  "
            f"{_iso(d.created_at):<25}  {text}"
            + (f"  ! {_clip(d.last_error, 60)}" if d.last_error else "")
        )


async def _database_now(conn: AsyncConnection) -> datetime:
    """The database's clock (its transaction time), which the daemon compares expires_at with."""
    now = (await conn.execute(sqlalchemy.select(sqlalchemy.func.now()))).scalar_one()
    assert isinstance(now, datetime)
    return now


def _template(args: argparse.Namespace) -> Template | None:
    """The --template options as a Template; bad usage when they do not go together."""
    if args.template is None:
        if args.language or args.body_param or args.header_image:
            raise UsageError(
                "outbox enqueue: --language, --body-param and --header-image need --template"
            )
        return None
    if not args.language:
        raise UsageError("outbox enqueue: --template needs --language (e.g. en_US)")
    return Template(
        args.template,
        args.language,
        body_params=tuple(args.body_param),
        header_image=args.header_image,
    )


async def _enqueue(conn: AsyncConnection, args: argparse.Namespace) -> int:
    template = _template(args)
    media = {
        "images": args.image,
        "videos": args.video,
        "documents": args.document,
        "audio": args.audio,
    }
    message_id = await enqueue(
        conn,
        args.recipient,
        args.message,
        media_urls={key: urls for key, urls in media.items() if urls},
        template=template,
        idempotency_key=args.idempotency_key,
        send_at=args.send_at,
        expires_at=await _database_now(conn) + args.expires_in if args.expires_in else None,
    )
    await conn.commit()
    print(message_id)
    return 0


async def _status(conn: AsyncConnection, args: argparse.Namespace) -> int:
    delivery = await get_status(conn, args.id)
    history = await get_history(conn, args.id)
    if args.json:
        document = delivery.to_json()
        document["history"] = [event.to_json() for event in history]
        print(json.dumps(document, ensure_ascii=False))
    else:
        print_delivery(delivery)
        print_history(history)
    return 0


async def _list(conn: AsyncConnection, args: argparse.Namespace) -> int:
    deliveries = await list_messages(
        conn, status=args.status, recipient=args.recipient, since=args.since, limit=args.limit
    )
    if args.json:
        print(json.dumps([d.to_json() for d in deliveries], ensure_ascii=False))
    else:
        print_table(deliveries)
    return 0


async def _stats(conn: AsyncConnection, args: argparse.Namespace) -> int:
    stats = await store.backlog_stats(conn)
    if args.json:
        print(json.dumps(stats))
        return 0
    for status, count in stats["counts"].items():
        print(f"{status:<22}{count}")
    oldest = stats["oldest_pending_seconds"]
    print(f"{'oldest pending (s)':<22}{'-' if oldest is None else oldest}")
    print(f"{'sends per minute':<22}{stats['sends_per_minute']}")
    if not stats["daemons"]:
        print(f"{'daemons':<22}none running")
    for daemon in stats["daemons"]:
        state = daemon["state"]
        if daemon["reason"]:
            state += f" since {daemon['since']}: {daemon['reason']}"
        print(f"{'daemon ' + daemon['id']:<22}{state} ({daemon['in_flight']} in flight)")
    return 0


async def _retry_or_cancel(conn: AsyncConnection, args: argparse.Namespace) -> int:
    retry = args.command == "retry"
    action = store.retry_failed if retry else store.cancel_pending
    required = "failed" if retry else "pending"
    refused = 0
    for message_id in args.ids:
        status = await action(conn, message_id)
        await conn.commit()
        if status is None:
            print(f"{'retried' if retry else 'cancelled'} {message_id}")
            continue
        refused += 1
        reason = (
            f"message {message_id} not found"
            if status == ""
            else f"message {message_id} is {status}; only {required} messages can be "
            f"{'retried' if retry else 'cancelled'}"
        )
        print(f"outbox: {reason}", file=sys.stderr)
    return 1 if refused else 0


async def _prune(conn: AsyncConnection, args: argparse.Namespace) -> int:
    deleted = await store.prune_finished(conn, args.older_than)
    print(f"pruned {deleted} finished messages")
    return 0


HANDLERS: dict[str, Callable[[AsyncConnection, argparse.Namespace], Awaitable[int]]] = {
    "enqueue": _enqueue,
    "status": _status,
    "list": _list,
    "stats": _stats,
    "retry": _retry_or_cancel,
    "cancel": _retry_or_cancel,
    "prune": _prune,
}


def _migrate(settings: Settings) -> int:
    dsn = asyncio.run(resolve_dsn(settings))
    migrate.upgrade(dsn)
    print(f"schema at revision {migrate.head_revision()}")
    return 0


def _describe(exc: BaseException, settings: Settings) -> str:
    """One line for an error, naming what to do when we know it; never a secret, whatever the
    driver put in its message."""
    return redact_secrets(_explain(exc, settings), settings)


def _explain(exc: BaseException, settings: Settings) -> str:
    """One line for an error, naming what to do when we know it."""
    cause = exc.orig if isinstance(exc, sqlalchemy.exc.DBAPIError) else exc
    sqlstate = getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)
    if sqlstate == "42P01":
        return "the outbox schema is missing: run `outbox migrate` first"
    if isinstance(exc, OutboxError):
        return str(exc)
    if isinstance(cause, OSError | asyncpg.PostgresConnectionError | asyncpg.InterfaceError):
        where = redact_url(settings.database_url) if settings.database_url else "embedded"
        return f"cannot connect to PostgreSQL ({where}): {cause}"
    return short_error(exc)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return 2
    settings = Settings(database_url=None)  # a placeholder for _describe if from_env fails
    try:
        settings = Settings.from_env()
        if args.database_url:
            settings = Settings(**{**settings.__dict__, "database_url": args.database_url.strip()})
        if args.command == "migrate":
            return _migrate(settings)
        if args.command == "demo":
            return demo.run_demo()
        if args.command == "run":
            overrides = {
                flag.replace("-", "_"): getattr(args, flag.replace("-", "_"))
                for flag in DAEMON_FLAGS
                if getattr(args, flag.replace("-", "_")) is not None
            }
            return serve.run_daemon(
                replace(settings, **overrides),
                drain=args.drain,
                http_port=args.http_port,
                http_host=args.http_host,
                log_format=args.log_format,
                log_level=args.log_level,
            )
        if args.command == "simulator":
            if not 0 <= args.fail_rate <= 1:
                raise UsageError("outbox simulator: --fail-rate must be between 0 and 1")
            return serve.run_simulator(
                settings,
                host=args.host,
                port=args.port,
                latency_ms=args.latency_ms,
                fail_rate=args.fail_rate,
                scenario=args.scenario,
                mps=args.mps,
                webhook_url=args.webhook_url,
                status_delay=args.status_delay_ms / 1000,
            )
        if args.command == "webhook":
            return serve.run_webhook(settings, host=args.host, port=args.port)
        handler = HANDLERS[args.command]
        return asyncio.run(_on_connection(settings, lambda conn: handler(conn, args)))
    except KeyboardInterrupt:
        return 130
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return 2
    except InvalidMessage as exc:
        print(f"outbox: {redact_secrets(f'invalid {exc}', settings)}", file=sys.stderr)
        return 1
    except Exception as exc:
        print(f"outbox: {_describe(exc, settings)}", file=sys.stderr)
        return 1
