"""`outbox enqueue --dry-run`: validate a message as enqueue does, write nothing (no database is
opened), and say its pricing category and the rate card's price for the recipient's country, or
why there is no estimate. A template's category is `--category`; free-form text or media goes
only inside the customer service window, as `service`."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from outbox.arguments import UsageError
from outbox.cost.country import country_of
from outbox.cost.rates import RATE_CARD_VARIABLE, configured_rate_card
from outbox.schema import TEMPLATE_CATEGORIES
from outbox.templates import Template, template_category, template_object
from outbox.validation import validate

SERVICE = "service"


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--category",
        choices=TEMPLATE_CATEGORIES,
        help="the template's Meta category (marketing messages are withheld from opted-out "
        "customers; --dry-run prices by it)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="validate and write nothing: print the pricing category and the estimated price "
        f"from the rate card ${RATE_CARD_VARIABLE} for the recipient's country",
    )


def check_usage(args: argparse.Namespace) -> None:
    if args.category is not None and args.template is None:
        raise UsageError("outbox enqueue: --category needs --template")
    if args.dry_run and args.json is not None:
        raise UsageError("outbox enqueue: --dry-run takes the options, not --json")


def run(args: argparse.Namespace, template: Template | None) -> int:
    """Validate (InvalidMessage on a broken rule, as enqueue) and print the estimate."""
    new = validate(
        args.recipient,
        args.message,
        media_urls={
            key: urls
            for key, urls in (
                ("images", args.image),
                ("videos", args.video),
                ("documents", args.document),
                ("audio", args.audio),
            )
            if urls
        },
        idempotency_key=args.idempotency_key,
        send_at=args.send_at,
        template_json=None if template is None else template_object(template),
        sender=args.sender,
    )
    category = SERVICE if template is None else template_category(template)
    country = country_of(new.recipient)
    billed_at = new.send_at or datetime.now(UTC)
    print("dry run: the message is valid; nothing was written")
    print(f"{'recipient':<10} {new.recipient} ({country or 'unknown country'})")
    print(f"{'category':<10} {category or 'unknown'}")
    print(f"{'estimate':<10} {_estimate(category, country, billed_at)}")
    return 0


def _estimate(category: str | None, country: str | None, billed_at: datetime) -> str:
    if category is None:
        return "none: the template's category is unknown (give --category)"
    card = configured_rate_card()
    rate = None if card is None else card.rate(country, category, billed_at)
    if rate is not None:
        where = "every country" if rate.country == "*" else rate.country
        note = "; free if the customer's service window is open" if category == "utility" else ""
        return (
            f"{rate.price} {rate.currency} per message ({category} rate for {where} from "
            f"{rate.valid_from}){note}"
        )
    if category == SERVICE:
        return (
            "0: free-form messages go only inside the customer service window, where Meta does "
            "not charge them (pricing type free_customer_service)"
        )
    if card is None:
        return f"none: no rate card (set {RATE_CARD_VARIABLE} to a rate card file)"
    if country is None:
        return "none: the recipient's calling code names no country"
    return (
        f"none: the rate card has no {category} rate for {country} or * valid on "
        f"{billed_at.astimezone(UTC).date()}"
    )
