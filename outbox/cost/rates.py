"""The rate card: what one charged message costs, by country and category, from a date on.

A CSV file the user keeps (OUTBOX_RATE_CARD names it) with the header
`country,category,currency,price,valid_from`; `#` starts a comment line. `country` is an ISO
3166 region (IN, BR, US for all of +1) or `*` for every country without a row of its own. A rate
applies to messages billed from 00:00 UTC of its `valid_from` date until the next rate for the
same country and category starts, so a new row never reprices what was billed before it.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path

from outbox.errors import ConfigurationError

RATE_CARD_VARIABLE = "OUTBOX_RATE_CARD"
COLUMNS = ("country", "category", "currency", "price", "valid_from")
ANY_COUNTRY = "*"


class RateCardError(ConfigurationError):
    """The rate card cannot be read; the message names the file and line."""


@dataclass(frozen=True)
class Rate:
    country: str
    category: str
    currency: str
    price: Decimal
    valid_from: date


class RateCard:
    """Rates by (country, category), each list ordered by start date."""

    def __init__(self, rates: list[Rate]) -> None:
        self._rates: dict[tuple[str, str], list[Rate]] = {}
        for rate in sorted(rates, key=lambda r: r.valid_from):
            self._rates.setdefault((rate.country, rate.category), []).append(rate)

    def rate(self, country: str | None, category: str, billed_at: datetime) -> Rate | None:
        """The rate of a message billed at `billed_at`: the country's own, else `*`'s; None
        when neither has one started by then."""
        day = billed_at.astimezone(UTC).date()
        for key in ((country or "", category), (ANY_COUNTRY, category)):
            started = [r for r in self._rates.get(key, []) if r.valid_from <= day]
            if started:
                return started[-1]
        return None


def parse_rate_card(text: str, source: str = "rate card") -> RateCard:
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    reader = csv.DictReader(io.StringIO("\n".join(lines)))
    if tuple(name.strip() for name in reader.fieldnames or ()) != COLUMNS:
        raise RateCardError(f"{source}: the header must be {','.join(COLUMNS)}")
    rates = []
    for number, row in enumerate(reader, 2):
        values = {key.strip(): (value or "").strip() for key, value in row.items() if key}
        if not any(values.values()):
            continue
        rates.append(_rate(values, f"{source} row {number}"))
    return RateCard(rates)


def load_rate_card(path: str | Path) -> RateCard:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RateCardError(f"cannot read the rate card {path}: {exc}") from None
    return parse_rate_card(text, str(path))


def configured_rate_card() -> RateCard | None:
    """The rate card OUTBOX_RATE_CARD names, or None when it is not set."""
    path = os.environ.get(RATE_CARD_VARIABLE, "").strip()
    return load_rate_card(path) if path else None


def _rate(values: dict[str, str], where: str) -> Rate:
    country = values["country"].upper()
    if country != ANY_COUNTRY and not (len(country) == 2 and country.isalpha()):
        raise RateCardError(f"{where}: country must be an ISO 3166 code like IN, or *")
    category = values["category"].lower()
    if not category:
        raise RateCardError(f"{where}: category is empty")
    currency = values["currency"].upper()
    if not (len(currency) == 3 and currency.isalpha()):
        raise RateCardError(f"{where}: currency must be an ISO 4217 code like USD")
    try:
        price = Decimal(values["price"])
    except InvalidOperation:
        price = Decimal(-1)
    if not price.is_finite() or price < 0:
        raise RateCardError(f"{where}: price must be a number of at least 0, e.g. 0.0125")
    try:
        valid_from = date.fromisoformat(values["valid_from"])
    except ValueError:
        raise RateCardError(f"{where}: valid_from must be a date like 2026-10-01") from None
    return Rate(country, category, currency, price, valid_from)
