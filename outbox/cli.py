"""The `outbox` command: argparse subcommands over the Python API.

Errors are one line on stderr and a non-zero exit (1 error, 2 usage), never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg
import sqlalchemy.exc

from outbox import migrate, serve, store
from outbox.arguments import UsageError, build_parser, run_overrides
from outbox.commands import (
    breakdown,
    bulk,
    check,
    cost,
    enqueue_json,
    estimate,
    grammar,
    inbound,
    listing,
    number_health,
    pause,
    tail,
    templates,
)
from outbox.database import causes, create_engine, resolve_dsn, short_error
from outbox.enqueue import enqueue
from outbox.errors import InvalidMessage, OutboxError
from outbox.explain import explain_line
from outbox.policy import commands as policy_commands
from outbox.settings import Settings, redact_secrets, redact_url
from outbox.status import Delivery, Event, get_history, get_status
from outbox.templates import Template

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection


T = TypeVar("T")


async def _on_connection(settings: Settings, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
    engine = create_engine(await resolve_dsn(settings), pool_size=1, application_name="outbox-cli")
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
        ("meaning", explain_line(delivery.error_code)),
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
        category=args.category,
    )


async def _enqueue(conn: AsyncConnection, args: argparse.Namespace) -> int:
    if args.json is not None:
        return await enqueue_json.run(conn, args)
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
        sender=args.sender,
        idempotency_key=args.idempotency_key,
        send_at=args.send_at,
        expires_at=await _database_now(conn) + args.expires_in if args.expires_in else None,
        quiet_hours=args.quiet_hours,
        timezone=args.timezone,
    )
    await conn.commit()
    print(message_id)
    return 0


async def _status(conn: AsyncConnection, args: argparse.Namespace) -> int:
    delivery = await get_status(conn, args.id)
    history = await get_history(conn, args.id)
    window = await policy_commands.row_window(conn, delivery)
    if args.json:
        document = delivery.to_json()
        document["window"] = policy_commands.window_json(window)
        document["history"] = [event.to_json() for event in history]
        print(json.dumps(document, ensure_ascii=False))
    else:
        print_delivery(delivery)
        policy_commands.print_rules(delivery, window)
        print_history(history)
    return 0


async def _list(conn: AsyncConnection, args: argparse.Namespace) -> int:
    return await listing.run(conn, args, print_table)


async def _stats(conn: AsyncConnection, args: argparse.Namespace) -> int:
    if args.cost:
        return await cost.run(conn, args)
    if args.by is not None:
        return await breakdown.run(conn, args)
    stats = await store.backlog_stats(conn)
    stats["number_health"] = await number_health.summary(conn)
    if args.json:
        print(json.dumps(stats))
        return 0
    for status, count in stats["counts"].items():
        print(f"{status:<21} {count}")
    if len(stats["senders"]) > 1:
        for sender, counts in sorted(stats["senders"].items()):
            figures = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
            print(f"{'sender ' + sender:<21} {figures}")
    for paused in stats["pauses"]:
        who = "every sender" if paused["sender"] == "*" else f"sender {paused['sender']}"
        reason = f": {paused['reason']}" if paused["reason"] else ""
        print(f"{'paused by operator':<21} {who} since {paused['paused_at']}{reason}")
    oldest = stats["oldest_pending_seconds"]
    print(f"{'oldest pending (s)':<21} {'-' if oldest is None else oldest}")
    print(f"{'sends per minute':<21} {stats['sends_per_minute']}")
    if not stats["daemons"]:
        print(f"{'daemons':<21} none running")
    for daemon in stats["daemons"]:
        state = daemon["state"]
        if daemon["reason"]:
            state += f" since {daemon['since']}: {daemon['reason']}"
        print(f"{'daemon ' + daemon['id']:<21} {state} ({daemon['in_flight']} in flight)")
        for sender, other in sorted(daemon["senders"].items()):
            print(f"{'  sender ' + sender:<21} {other['state']}: {other['reason']}")
    for error in stats["meta_errors_last_day"]:
        what = f"(#{error['code']}) {error['title'] or 'error'}"
        if error["detail"]:
            what += f": {error['detail']}"
        print(
            f"{'Meta reported':<21} {what} for number {error['phone_number_id'] or '?'}, "
            f"{error['count']} times in the last day, last at {error['last_at']}"
        )
    number_health.print_lines(stats["number_health"])
    return 0


async def _retry_or_cancel(conn: AsyncConnection, args: argparse.Namespace) -> int:
    if bulk.has_filters(args) or not args.ids:
        return await bulk.run(conn, args)
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
        if status == "":
            reason = f"message {message_id} not found"
        elif retry and status == "failed":  # refused only when Meta failed an accepted part
            reason = (
                f"message {message_id} failed after Meta accepted it (a status webhook said "
                "so); a retry never sends an accepted part again: enqueue it again instead"
            )
        else:
            done = "retried" if retry else "cancelled"
            reason = f"message {message_id} is {status}; only {required} messages can be {done}"
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
    "optout": policy_commands.optout,
    "inbound": inbound.run,
    "pause": pause.pause,
    "resume": pause.resume,
    "tail": tail.run,
    "templates": templates.run,
}


def _migrate(settings: Settings) -> int:
    dsn = asyncio.run(resolve_dsn(settings))
    migrate.upgrade(dsn)
    print(f"schema at revision {migrate.head_revision()}")
    return 0


def _describe(exc: BaseException, settings: Settings, listening: str | None = None) -> str:
    """One line for an error, naming what to do when we know it; never a secret, whatever the
    driver put in its message. `listening` is the host:port the command serves on, if any."""
    return redact_secrets(_explain(exc, settings, listening), settings)


# Why a server socket could not be opened; any other OSError is about reaching PostgreSQL.
_LISTEN_ERRNOS = {
    errno.EADDRINUSE: "the port is already in use",
    errno.EADDRNOTAVAIL: "no such address on this machine",
    errno.EACCES: "permission denied",
}
# SQLSTATE classes of a refused connection: bad database name, bad role or password, and
# connection failures.
_CONNECT_SQLSTATES = ("3D", "28", "08")


def _explain(exc: BaseException, settings: Settings, listening: str | None) -> str:
    """One line for an error, naming what to do when we know it."""
    cause = exc.orig if isinstance(exc, sqlalchemy.exc.DBAPIError) else exc
    sqlstate = getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)
    if sqlstate == "42P01":
        return "the outbox schema is missing: run `outbox migrate` first"
    if isinstance(exc, OutboxError):
        return str(exc)
    if isinstance(exc, OSError) and exc.errno in _LISTEN_ERRNOS and listening:
        return f"cannot listen on {listening}: {_LISTEN_ERRNOS[exc.errno]}"
    where = redact_url(settings.database_url) if settings.database_url else "embedded"
    postgres = next((c for c in causes(exc) if isinstance(c, asyncpg.PostgresError)), None)
    if postgres is not None:
        message = str(postgres).splitlines()[0] if str(postgres) else type(postgres).__name__
        if (postgres.sqlstate or "").startswith(_CONNECT_SQLSTATES):
            return f"cannot connect to PostgreSQL ({where}): {message}"
        return f"PostgreSQL refused it: {message}"
    if isinstance(cause, OSError | asyncpg.PostgresConnectionError | asyncpg.InterfaceError):
        return f"cannot connect to PostgreSQL ({where}): {cause}"
    return short_error(exc)


def _listening(args: argparse.Namespace) -> str | None:
    """host:port of the server socket this command opens, if it opens one."""
    if args.command in ("simulator", "webhook", "dashboard"):
        return f"{args.host}:{args.port}"
    if args.command == "run" and args.http_port:
        return f"{args.http_host}:{args.http_port}"
    return None


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
        if args.command == "check":
            return check.run(settings, args)
        if args.command == "demo":
            from outbox import demo  # the demo and the dashboard load only for themselves

            return demo.run_demo(settings)
        if args.command == "run":
            return serve.run_daemon(
                replace(settings, **run_overrides(args)),
                drain=args.drain,
                http_port=args.http_port,
                http_host=args.http_host,
                log_format=args.log_format,
                log_level=args.log_level,
            )
        if args.command == "simulator":
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
                enforce_window=args.enforce_window,
                log_format=args.log_format,
                log_level=args.log_level,
            )
        if args.command == "webhook":
            return serve.run_webhook(
                settings,
                host=args.host,
                port=args.port,
                log_format=args.log_format,
                log_level=args.log_level,
            )
        if args.command == "dashboard":
            from outbox.dashboard import server as dashboard_server

            if args.hash_password:
                return dashboard_server.print_hash()
            return dashboard_server.run(settings, host=args.host, port=args.port)
        handler = HANDLERS[args.command]
        grammar.check_usage(args)  # before any connection (or embedded server) is made
        if args.command == "enqueue" and args.dry_run:
            return estimate.run(args, _template(args))  # opens no database
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
        print(f"outbox: {_describe(exc, settings, _listening(args))}", file=sys.stderr)
        return 1
