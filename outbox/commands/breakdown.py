"""`outbox stats --by code|template [--since WHEN]`: what failed and why, and how each template
fared, over a period (by creation time; the last 24 hours unless --since says otherwise)."""

from __future__ import annotations

import argparse
import json
import re
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from outbox.arguments import UsageError
from outbox.commands import cost, values
from outbox.schema import STATUSES
from outbox.store import breakdowns

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection


BREAKDOWNS = ("code", "template")
DEFAULT_PERIOD = timedelta(hours=24)
_CODE_PREFIX = re.compile(r"^\(#\d+\)\s*")


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--by",
        choices=tuple(dict.fromkeys((*BREAKDOWNS, *cost.BREAKDOWNS))),
        help="instead of the overview: failed messages by Graph error code (with its title), or "
        "template messages by name, language and status; with --cost: day, template, country "
        "or category",
    )
    parser.add_argument(
        "--since",
        type=values.since,
        metavar="WHEN",
        help="with --by: messages created since (30m, 2h, 7d back, or ISO 8601; default 24h)",
    )


def check_usage(args: argparse.Namespace) -> None:
    if args.by is not None and args.by not in BREAKDOWNS:
        raise UsageError(f"outbox stats: --by {args.by} needs --cost")
    if args.since is not None and args.by is None:
        raise UsageError("outbox stats: --since needs --by code or --by template")


def _title(last_error: str | None) -> str:
    return _CODE_PREFIX.sub("", last_error or "").strip() or "-"


async def run(conn: AsyncConnection, args: argparse.Namespace) -> int:
    since = DEFAULT_PERIOD if args.since is None else args.since
    period = (
        f"the last {values.age(since)}"
        if isinstance(since, timedelta)
        else f"since {since.isoformat()}"
    )
    if args.by == "code":
        rows = await breakdowns.failed_by_code(conn, since)
        if args.json:
            document: Any = [
                {
                    "code": row["code"],
                    "count": int(row["count"]),
                    "title": _title(row["last_error"]),
                    "last_at": row["last_at"].isoformat(),
                }
                for row in rows
            ]
            print(json.dumps(document, ensure_ascii=False))
            return 0
        print(f"failed messages created in {period}, by Graph error code")
        print(f"{'code':>8}  {'count':>7}  title (the latest error)")
        for row in rows:
            code = "-" if row["code"] is None else str(row["code"])
            print(f"{code:>8}  {int(row['count']):>7}  {_title(row['last_error'])[:90]}")
        if not rows:
            print("  none")
        return 0
    rows = await breakdowns.templates_by_status(conn, since)
    templates: dict[tuple[str, str], dict[str, int]] = {}
    for row in rows:
        key = (str(row["name"]), str(row["language"]))
        templates.setdefault(key, dict.fromkeys(STATUSES, 0))[row["status"]] = int(row["count"])
    if args.json:
        document = [
            {"name": name, "language": language, "counts": counts}
            for (name, language), counts in templates.items()
        ]
        print(json.dumps(document, ensure_ascii=False))
        return 0
    print(f"template messages created in {period}, by status")
    header = "".join(f"{status:>10}" for status in STATUSES)
    print(f"{'template':<32} {'language':<9}{header}")
    for (name, language), counts in templates.items():
        figures = "".join(f"{counts[status]:>10}" for status in STATUSES)
        print(f"{name[:32]:<32} {language[:9]:<9}{figures}")
    if not templates:
        print("  none")
    return 0
