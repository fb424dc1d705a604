"""`outbox stats --cost [--since WHEN] [--by day|template|country|category]`: what our charged
messages cost, from the pricing Meta put in their status webhooks and the rate card
(OUTBOX_RATE_CARD). Amounts are exact until shown, then rounded to the cent; a charged part
without a rate is counted as unpriced, never as zero."""

from __future__ import annotations

import argparse
import json
import os
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from outbox.arguments import UsageError
from outbox.commands import values
from outbox.cost.ledger import Charged, Total, in_cents, price
from outbox.cost.rates import RATE_CARD_VARIABLE, configured_rate_card
from outbox.store import cost

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection


BREAKDOWNS = ("day", "template", "country", "category")


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cost",
        action="store_true",
        help="instead of the overview: what our charged messages cost (Meta's pricing in their "
        f"status webhooks, priced with the rate card ${RATE_CARD_VARIABLE}); with --by "
        f"{'|'.join(BREAKDOWNS)} and --since (billed since; default: all the ledger)",
    )


def check_usage(args: argparse.Namespace) -> None:
    if args.by is not None and args.by not in BREAKDOWNS:
        raise UsageError(f"outbox stats: --cost takes --by {', '.join(BREAKDOWNS)}")


def _period(since: Any) -> str:
    if since is None:
        return "in the whole ledger"
    if isinstance(since, timedelta):
        return f"in the last {values.age(since)}"
    return f"since {since.isoformat()}"


def _amounts(total: Total) -> str:
    shown = [f"{in_cents(amount)} {currency}" for currency, amount in total.amounts.items()]
    return ", ".join(shown) or "-"


async def run(conn: AsyncConnection, args: argparse.Namespace) -> int:
    card = configured_rate_card()
    group = args.by or "total"
    found = await cost.charged_parts(conn, group, args.since)
    charged = [
        Charged(str(r["grp"]), r["country"], str(r["category"]), r["day"], int(r["count"]))
        for r in found
    ]
    groups = price(charged, card)
    overall = [Charged("total", c.country, c.category, c.day, c.count) for c in charged]
    total = (price(overall, card) or [Total("total")])[0]
    summary = await cost.ledger_summary(conn, args.since)
    free = {
        f"{r['kind']}{'' if r['billable'] else ' (not billable)'}": int(r["count"])
        for r in summary
        if r["ours"] and not r["charged"]
    }
    others = sum(int(r["count"]) for r in summary if not r["ours"] and r["charged"])
    changed = sum(int(r["changed"]) for r in summary if r["ours"])
    rate_card = os.environ.get(RATE_CARD_VARIABLE, "").strip() or None
    if args.json:
        document = {
            "since": None if args.since is None else str(args.since),
            "by": args.by,
            "rate_card": rate_card,
            "groups": [g.to_json() for g in groups] if args.by else [],
            "total": total.to_json(),
            "not_charged": free,
            "others_charged": others,
            "changed": changed,
        }
        print(json.dumps(document, ensure_ascii=False))
        return 0
    print(f"charged messages billed {_period(args.since)}, rate card: {rate_card or 'none'}")
    print(f"{args.by or '':<24} {'messages':>9} {'unpriced':>9}  amount")
    for item in [*(groups if args.by else []), total]:
        print(f"{item.group[:24]:<24} {item.messages:>9} {item.unpriced:>9}  {_amounts(item)}")
    if rate_card is None:
        print(f"no rate card: set {RATE_CARD_VARIABLE} to price them")
    elif total.unpriced:
        print(
            f"unpriced: {total.unpriced} charged messages have no rate for their country, "
            "category and billing date; the amounts leave them out"
        )
    if free:
        print("not charged: " + ", ".join(f"{n} {kind}" for kind, n in free.items()))
    if others:
        print(f"charged parts of other deployments (not in these totals): {others}")
    if changed:
        print(f"parts a later status priced differently (the first pricing counts): {changed}")
    return 0
