"""`outbox pause [--sender]` and `outbox resume [--sender]`: an operator's pause, stored in the
database, that every running daemon honours within a second and a restart keeps."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from outbox.arguments import UsageError
from outbox.schema import ALL_SENDERS
from outbox.store import pauses

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection


_SENDER_HELP = (
    "only this phone number id (a row without a sender of its own goes from "
    "$META_PHONE_NUMBER_ID of the daemon sending it); default: every sender"
)


def add_commands(commands: Any) -> None:
    p = commands.add_parser(
        "pause",
        help="stop every daemon sending (or one sender) until `outbox resume`",
        description="Pause sending, in the database: every running daemon stops claiming "
        "within a second (a row in flight finishes the part it is sending, then waits), "
        "/readyz answers 503 'paused by operator', `outbox stats` shows it, and a restarted "
        "daemon stays paused. Nothing is lost: the rows stay pending.",
    )
    p.add_argument("--sender", metavar="PHONE_ID", help=_SENDER_HELP)
    p.add_argument("--reason", metavar="TEXT", help="why, for /readyz, stats and the logs")
    p = commands.add_parser(
        "resume",
        help="lift `outbox pause` (every sender's, or one sender's)",
        description="Lift an operator's pause: daemons claim again within a second. Without "
        "--sender it lifts the pause of every sender; senders paused one by one stay paused "
        "(and are named).",
    )
    p.add_argument("--sender", metavar="PHONE_ID", help=_SENDER_HELP)


def check_usage(args: argparse.Namespace) -> None:
    sender = args.sender
    if sender is not None and not (sender.isascii() and sender.isdigit() and len(sender) <= 32):
        raise UsageError(f"outbox {args.command}: --sender: a phone number id is 1 to 32 digits")


def _who(sender: str) -> str:
    return "every sender" if sender == ALL_SENDERS else f"sender {sender}"


async def pause(conn: AsyncConnection, args: argparse.Namespace) -> int:
    sender = args.sender or ALL_SENDERS
    row = await pauses.pause(conn, sender, args.reason)
    since = row["paused_at"].isoformat(timespec="seconds")
    if not row["paused"]:
        print(f"{_who(sender)} was already paused, since {since}")
        return 0
    print(
        f"paused {_who(sender)}: running daemons stop claiming within a second (a row in flight "
        "finishes the part it is sending); `outbox resume"
        + ("" if sender == ALL_SENDERS else f" --sender {sender}")
        + "` lifts it"
    )
    return 0


async def resume(conn: AsyncConnection, args: argparse.Namespace) -> int:
    sender = args.sender or ALL_SENDERS
    lifted = await pauses.resume(conn, sender)
    print(f"resumed {_who(sender)}" if lifted else f"{_who(sender)} was not paused")
    for row in await pauses.select_pauses(conn):
        other = row["sender"]
        flag = "" if other == ALL_SENDERS else f" --sender {other}"
        print(f"still paused: {_who(other)} (outbox resume{flag})")
    return 0
