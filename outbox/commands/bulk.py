"""`outbox retry` and `outbox cancel` by filter: how many rows match, a confirmation, then the
change. Never an unfiltered mass action; a count the operator saw is never exceeded by rows
inserted after it."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, TextIO

from outbox.arguments import UsageError
from outbox.commands import values
from outbox.schema import FAILED, PENDING
from outbox.store import bulk

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection


# The only status each action applies to: the by-id commands refuse any other.
ACTION_STATUS = {"retry": FAILED, "cancel": PENDING}


def add_filters(parser: argparse.ArgumentParser, command: str) -> None:
    """The filter options of `outbox retry` / `outbox cancel`, beside their ids."""
    status = ACTION_STATUS[command]
    group = parser.add_argument_group(
        "by filter (instead of ids)",
        f"Every {status} message matching all the filters given. The count is shown first "
        "and confirmed on a terminal; --yes confirms it in scripts.",
    )
    group.add_argument(
        "--status",
        type=values.status_list,
        action="append",
        metavar="S",
        help=f"only {status} messages can be {'retried' if command == 'retry' else 'cancelled'}"
        f"; --status {status} alone selects them all",
    )
    group.add_argument("--recipient", metavar="R", help="only messages to this number")
    group.add_argument(
        "--code",
        type=values.error_code,
        metavar="N",
        help="only messages whose last Graph error code is N (e.g. 131026)",
    )
    group.add_argument(
        "--since",
        type=values.since,
        metavar="WHEN",
        help="only messages created since: 30m, 2h, 7d back, or an ISO 8601 time",
    )
    group.add_argument("--yes", action="store_true", help="do not ask for confirmation")


def has_filters(args: argparse.Namespace) -> bool:
    return any(value is not None for value in (args.status, args.recipient, args.code, args.since))


def check_usage(args: argparse.Namespace) -> None:
    """Refuse, before any connection, ids with filters, neither, or a status the action does
    not apply to; a malformed recipient too."""
    command = args.command
    status = ACTION_STATUS[command]
    if args.ids and has_filters(args):
        raise UsageError(
            f"outbox {command}: give ids or filters (--status, --recipient, --code, --since), "
            "not both"
        )
    if args.ids:
        return
    if not has_filters(args):
        raise UsageError(
            f"outbox {command}: give message ids, or at least one filter (--status, --recipient, "
            f"--code, --since); `--status {status}` alone selects every {status} message"
        )
    chosen = values.statuses(args.status)
    if chosen and chosen != [status]:
        others = ", ".join(name for name in chosen if name != status)
        raise UsageError(
            f"outbox {command}: --status {others}: only {status} messages can be "
            f"{'retried' if command == 'retry' else 'cancelled'}"
        )
    values.recipient_filter(f"outbox {command}", args.recipient)


def describe(
    status: str,
    *,
    recipient: str | None,
    code: int | None,
    since: datetime | timedelta | None,
) -> str:
    """The filter in words: `failed messages to 923001234567 with error code 131047`."""
    words = [f"{status} messages"]
    if recipient is not None:
        words.append(f"to {recipient}")
    if code is not None:
        words.append(f"with error code {code}")
    if isinstance(since, timedelta):
        words.append(f"created in the last {values.age(since)}")
    elif since is not None:
        words.append(f"created since {since.isoformat()}")
    return " ".join(words)


def _confirmed(question: str, stdin: TextIO, stdout: TextIO) -> bool:
    print(f"{question} [y/N] ", end="", file=stdout, flush=True)
    answer = stdin.readline()
    return answer.strip().lower() in ("y", "yes")


async def run(conn: AsyncConnection, args: argparse.Namespace) -> int:
    """Retry or cancel every row the filters match, after a count and a confirmation."""
    command = args.command
    status = ACTION_STATUS[command]
    check_usage(args)
    recipient = values.recipient_filter(f"outbox {command}", args.recipient)
    params = bulk.filter_params(status, recipient=recipient, code=args.code, since=args.since)
    actionable, refused, upto = await bulk.count_matching(conn, params)
    await conn.commit()
    done = "retried" if command == "retry" else "cancelled"
    what = describe(status, recipient=args.recipient, code=args.code, since=args.since)
    if refused:
        print(
            f"{refused} {what} failed after Meta accepted a part (a status webhook said so) "
            "and are left alone: a retry never sends an accepted part again; enqueue them again "
            "instead",
            file=sys.stderr,
        )
    if not actionable:
        print(f"no {what} to {command}")
        return 0
    question = f"{command} {actionable} {what}?"
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError(
                f"outbox {command}: {actionable} {what} match; add --yes to {command} them "
                "without a terminal to confirm on"
            )
        if not _confirmed(question, sys.stdin, sys.stdout):
            print("nothing changed")
            return 1
    statement = bulk.RETRY_MATCHING if command == "retry" else bulk.CANCEL_MATCHING
    changed = await bulk.change_matching(conn, statement, params, upto)
    print(f"{done} {changed} messages")
    return 0
