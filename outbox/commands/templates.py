"""`outbox templates sync|list`: the template catalogue (outbox/policy/catalogue.py)."""

from __future__ import annotations

import argparse
import json
import os
from datetime import datetime
from typing import Any

import aiohttp

from outbox.policy.catalogue_sync import fetch_catalogue, waba_id
from outbox.settings import Settings
from outbox.store import templates_catalogue


def add_templates_command(commands: Any) -> None:
    p = commands.add_parser(
        "templates",
        help="the template catalogue: sync it from Meta, or list it",
        description="The catalogue holds each template's language, category, status, quality "
        "and body parameter count. Once it knows a template's name, enqueue refuses that "
        "template in an unknown language, when not APPROVED, or with the wrong parameter count.",
    )
    actions = p.add_subparsers(
        dest="templates_action", required=True, parser_class=type(p), help="what to do"
    )
    actions.add_parser(
        "sync",
        help="read the WABA's templates from the Graph API ($META_WABA_ID, $META_ACCESS_TOKEN)",
    )
    a = actions.add_parser("list", help="the templates the catalogue knows")
    a.add_argument("--json", action="store_true", help="print a JSON list")
    for a in actions.choices.values():  # the global option, also after the action
        a.add_argument("--database-url", metavar="URL", default=argparse.SUPPRESS, help="as above")


async def run(conn: Any, args: argparse.Namespace) -> int:
    """The handler of `outbox templates` (on the CLI's SQLAlchemy connection)."""
    if args.templates_action == "sync":
        return await _sync(conn)
    rows = await templates_catalogue.select_templates(conn)
    if args.json:
        print(json.dumps([{k: _plain(v) for k, v in row.items()} for row in rows], indent=2))
        return 0
    for row in rows:
        count = "-" if row["parameter_count"] is None else row["parameter_count"]
        print(
            f"{row['name']:<32} {row['language']:<8} {row['category'] or '-':<14} "
            f"{row['status']:<10} {row['quality'] or '-':<8} {count}"
        )
    return 0


def _plain(value: object) -> object:
    return value.isoformat() if isinstance(value, datetime) else value


async def _sync(conn: Any) -> int:
    waba = waba_id(os.environ)
    settings = Settings.from_env()
    async with aiohttp.ClientSession() as http:
        entries = await fetch_catalogue(settings, waba, http)
    await templates_catalogue.upsert_templates(conn, waba, [e.row() for e in entries])
    await conn.commit()
    print(f"synced {len(entries)} templates of WABA {waba}")
    return 0
