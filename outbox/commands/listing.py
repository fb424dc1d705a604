"""`outbox list`: messages newest first, by one or more statuses, a recipient and a period, a
page at a time; the next page's cursor (`--before ID`) is printed when there is one."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from outbox.arguments import list_limit, positive_int
from outbox.commands import values
from outbox.status import MAX_LIST_LIMIT, Delivery
from outbox.store.pages import select_page

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--status",
        type=values.status_list,
        action="append",
        metavar="S",
        help="only messages in these statuses: failed,pending (or repeat the option)",
    )
    parser.add_argument("--recipient", metavar="R", help="only messages to this number")
    parser.add_argument(
        "--since",
        type=values.since,
        metavar="WHEN",
        help="only messages created since: 30m, 2h, 7d back, or an ISO 8601 time",
    )
    parser.add_argument(
        "--limit",
        type=list_limit,
        default=100,
        metavar="N",
        help=f"at most N messages, 1 to {MAX_LIST_LIMIT} (default 100)",
    )
    parser.add_argument(
        "--before",
        type=positive_int,
        metavar="ID",
        help="the page after the one that ended at this id (the cursor the last page printed)",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list")


def check_usage(args: argparse.Namespace) -> None:
    values.recipient_filter("outbox list", args.recipient)


async def run(
    conn: AsyncConnection,
    args: argparse.Namespace,
    print_table: Callable[[Sequence[Delivery]], None],
) -> int:
    rows = await select_page(
        conn,
        statuses=values.statuses(args.status),
        recipient=values.recipient_filter("outbox list", args.recipient),
        since=args.since,
        before=args.before,
        limit=args.limit + 1,  # one more says whether there is a next page
    )
    deliveries = [Delivery.from_row(row) for row in rows[: args.limit]]
    more = len(rows) > args.limit
    if args.json:
        print(json.dumps([d.to_json() for d in deliveries], ensure_ascii=False))
        if more:  # stdout stays one JSON list
            print(f"next page: --before {deliveries[-1].id}", file=sys.stderr)
        return 0
    print_table(deliveries)
    if more:
        print(f"next page: --before {deliveries[-1].id}")
    return 0
