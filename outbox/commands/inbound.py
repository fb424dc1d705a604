"""`outbox inbound`: what customers wrote (newest first) and, per customer and number, when
their 24-hour window closes: outside it only templates are delivered."""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

from outbox.arguments import UsageError, list_limit
from outbox.commands import values
from outbox.commands.inbound_text import texts_by_wamid
from outbox.connections import Row
from outbox.errors import InvalidMessage
from outbox.policy import window
from outbox.store import inbound

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection


def add_command(commands: Any) -> None:
    p = commands.add_parser(
        "inbound",
        help="what customers wrote, and when each one's 24-hour window closes",
        description="The latest messages customers sent to your numbers (type and time; with "
        "--text also what they wrote, read from the stored webhook bodies), then each "
        "customer's 24-hour customer-service window per number: open until 24 h after their "
        "last message. Windows listed are the open ones, or the asked customer's.",
    )
    p.add_argument("--recipient", metavar="R", help="only this customer (their number)")
    p.add_argument("--sender", metavar="PHONE_ID", help="only messages to this phone number id")
    p.add_argument(
        "--since",
        type=values.since,
        metavar="WHEN",
        help="only messages received since: 30m, 2h, 7d back, or an ISO 8601 time",
    )
    p.add_argument(
        "--limit",
        type=list_limit,
        default=20,
        metavar="N",
        help="at most N messages and N windows (default 20)",
    )
    p.add_argument(
        "--text",
        action="store_true",
        help="also show what they wrote, read from the stored webhook bodies (while kept: "
        "outbox prune removes them; only among the latest 50,000)",
    )
    p.add_argument(
        "--json", action="store_true", help='print {"messages": [...], "windows": [...]}'
    )


def check_usage(args: argparse.Namespace) -> None:
    values.recipient_filter("outbox inbound", args.recipient)
    if args.sender is not None and not (args.sender.isascii() and args.sender.isdigit()):
        raise UsageError("outbox inbound: --sender: a phone number id is digits only")


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _who(row: Row) -> str:
    return str(row["customer"] or f"user {row['user_id']}")


def _message(row: Row, texts: dict[str, str] | None) -> dict[str, Any]:
    shown = {} if texts is None else {"text": texts.get(row["wamid"])}
    return {
        **shown,
        "at": _iso(row["at"]),
        "customer": row["customer"],
        "user_id": row["user_id"],
        "phone_number_id": row["phone_number_id"],
        "type": row["type"],
        "wamid": row["wamid"],
        "error_code": row["error_code"],
        "error_title": row["error_title"],
    }


def _window(row: Row) -> dict[str, Any]:
    return {
        "customer": row["customer"],
        "user_id": row["user_id"],
        "phone_number_id": row["phone_number_id"],
        "last_message_at": _iso(row["last_at"]),
        "closes_at": _iso(row["closes_at"]),
        "open": bool(row["open"]),
        "closed_by_meta_at": _iso(row.get("closed_by_meta_at")),
    }


async def _as_policy_sees_it(conn: AsyncConnection, row: Row) -> Row:
    """The window as the daemon judges it (outbox.window: also closed early when Meta said
    131047), for a customer known by number; the plain 24 hours otherwise."""
    if row["customer"] is None:
        return row
    try:
        found = await window(conn, row["customer"], row["phone_number_id"])
    except InvalidMessage:  # a number stored before today's rules: the plain 24 hours
        return row
    if found.closes_at is None:
        return row
    return {
        **row,
        "closes_at": found.closes_at,
        "open": found.open,
        "closed_by_meta_at": found.closed_by_meta_at,
    }


async def run(conn: AsyncConnection, args: argparse.Namespace) -> int:
    filters = {
        "customer": values.recipient_filter("outbox inbound", args.recipient),
        "phone": args.sender,
        "since": args.since,
        "limit": args.limit,
    }
    messages = await inbound.latest_inbound(conn, **filters)
    windows = [
        await _as_policy_sees_it(conn, row) for row in await inbound.windows(conn, **filters)
    ]
    texts = None
    if args.text:
        times = sorted({row["received_at"] for row in messages})
        texts = texts_by_wamid(await inbound.bodies_applied_at(conn, times))
    if args.json:
        document = {
            "messages": [_message(row, texts) for row in messages],
            "windows": [_window(row) for row in windows],
        }
        print(json.dumps(document, ensure_ascii=False))
        return 0
    print(f"{'received':<25}  {'customer':<15}  {'to number':<16}  type")
    for row in messages:
        error = (
            f"  ! (#{row['error_code']}) {row['error_title'] or ''}" if row["error_code"] else ""
        )
        print(
            f"{row['at'].isoformat(timespec='seconds'):<25}  {_who(row):<15}  "
            f"{row['phone_number_id']:<16}  {row['type']}{error}"
            + ("" if texts is None else f"  {texts.get(row['wamid'], '-')}")
        )
    if not messages:
        print("  none")
    print()
    print(f"{'window of':<15}  {'with number':<16}  {'last message':<25}  closes")
    for row in windows:
        closes = row["closes_at"].isoformat(timespec="seconds")
        state = f"open until {closes}" if row["open"] else f"closed since {closes}"
        if row.get("closed_by_meta_at"):
            state += " (Meta said so: 131047)"
        print(
            f"{_who(row):<15}  {row['phone_number_id']:<16}  "
            f"{row['last_at'].isoformat(timespec='seconds'):<25}  {state}"
        )
    if not windows:
        print("  no open window")
    return 0
