"""The command line of Meta's rules: `outbox optout add|remove|list`, and the window and
fallback lines of `outbox status`."""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from typing import Any

from outbox.connections import AsyncConnectionLike
from outbox.errors import ConfigurationError
from outbox.policy.consent import add_optout, list_optouts, remove_optout
from outbox.policy.window import Window, window
from outbox.status import Delivery

SENDER_HELP = "the phone number id (default: $META_PHONE_NUMBER_ID)"


def add_optout_command(commands: Any) -> None:
    """`outbox optout add|remove|list`, for opt-outs made outside WhatsApp."""
    p = commands.add_parser(
        "optout",
        help="the marketing suppression list: add, remove or list customers",
        description="Customers who stopped marketing messages get no marketing template "
        "(utility and authentication ones still go). Opt-outs made in WhatsApp arrive by "
        "webhook; these commands record those made elsewhere.",
    )
    actions = p.add_subparsers(
        dest="optout_action", required=True, parser_class=type(p), help="what to do"
    )
    for action, text in (("add", "suppress"), ("remove", "stop suppressing")):
        a = actions.add_parser(action, help=f"{text} marketing templates to a customer")
        a.add_argument("recipient", help="the customer's number, digits with country code")
        a.add_argument("--sender", metavar="PHONE_ID", help=SENDER_HELP)
        a.add_argument("--note", metavar="TEXT", help="why, kept with the entry")
    a = actions.add_parser("list", help="the customers suppressed now, newest first")
    a.add_argument("--sender", metavar="PHONE_ID", help="only this phone number id's")
    a.add_argument("--json", action="store_true", help="print a JSON list")
    for a in actions.choices.values():  # the global option, also after the action
        a.add_argument("--database-url", metavar="URL", default=argparse.SUPPRESS, help="as above")


async def optout(conn: Any, args: argparse.Namespace) -> int:
    """The handler of `outbox optout` (on the CLI's SQLAlchemy connection)."""
    if args.optout_action == "list":
        entries = await list_optouts(conn, sender=args.sender)
        if args.json:
            print(
                json.dumps(
                    [
                        {
                            "sender": e.sender,
                            "customer": e.customer,
                            "source": e.source,
                            "detail": e.detail,
                            "since": e.since.isoformat(),
                        }
                        for e in entries
                    ]
                )
            )
            return 0
        for e in entries:
            since = e.since.isoformat(timespec="seconds")
            print(f"{e.sender:<18} {e.customer:<16} {since:<26} {e.source:<17} {e.detail or ''}")
        return 0
    change = add_optout if args.optout_action == "add" else remove_optout
    await change(conn, args.recipient, sender=args.sender, note=args.note)
    await conn.commit()
    done = "suppressed" if args.optout_action == "add" else "no longer suppressed"
    print(f"{done}: {args.recipient}")
    return 0


async def row_window(conn: AsyncConnectionLike, delivery: Delivery) -> Window | None:
    """The window of a free-form row's customer, or None (a template row, or no sender known)."""
    if delivery.template is not None:
        return None
    try:
        return await window(conn, delivery.recipient, delivery.sender)
    except ConfigurationError:  # no sender on the row and META_PHONE_NUMBER_ID unset
        return None


def window_text(found: Window | None) -> str:
    if found is None:
        return "-"
    if not found.known:
        return f"unknown: no inbound message stored for sender {found.sender}"
    if found.closes_at is None:
        return "closed: the customer never wrote to this number"
    if found.open:
        return f"open until {found.closes_at.isoformat(timespec='seconds')}"
    return f"closed since {found.closes_at.isoformat(timespec='seconds')}"


def window_json(found: Window | None) -> dict[str, Any] | None:
    if found is None:
        return None
    return {
        "sender": found.sender,
        "known": found.known,
        "open": found.open,
        "last_inbound_at": None
        if found.last_inbound_at is None
        else found.last_inbound_at.isoformat(),
        "closes_at": None if found.closes_at is None else found.closes_at.isoformat(),
    }


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def print_rules(delivery: Delivery, found: Window | None) -> None:
    """The lines `outbox status` adds: what goes out, and the customer's window."""
    if delivery.fallback is not None:
        name = delivery.fallback.get("name")
        going = f"fallback template {name}" if delivery.sent_fallback else "the message"
        print(f"{'sent_as':<16}{going} (fallback: {name})")
    if delivery.template is None:
        print(f"{'window':<16}{window_text(found)}")
