"""Totals of charged parts: counts from the store priced with the rate card.

Amounts are Decimal and summed exactly; rounding to the cent happens only when a total is shown.
A part without a rate is counted as unpriced, never as zero.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from decimal import ROUND_HALF_UP, Decimal

from outbox.cost.rates import RateCard

CENT = Decimal("0.01")


@dataclass(frozen=True)
class Charged:
    """`count` charged parts of one group, country and category, billed on one UTC day."""

    group: str
    country: str | None
    category: str
    day: date
    count: int


@dataclass
class Total:
    group: str
    messages: int = 0
    unpriced: int = 0
    amounts: dict[str, Decimal] = field(default_factory=dict)  # by currency

    def to_json(self) -> dict[str, object]:
        return {
            "group": self.group,
            "messages": self.messages,
            "unpriced": self.unpriced,
            "amounts": {currency: str(amount) for currency, amount in self.amounts.items()},
        }


def price(charged: Iterable[Charged], card: RateCard | None) -> list[Total]:
    """One Total per group, in the order groups first appear."""
    totals: dict[str, Total] = {}
    for item in charged:
        total = totals.setdefault(item.group, Total(item.group))
        total.messages += item.count
        billed = datetime.combine(item.day, time(), UTC)
        rate = None if card is None else card.rate(item.country, item.category, billed)
        if rate is None:
            total.unpriced += item.count
            continue
        total.amounts[rate.currency] = (
            total.amounts.get(rate.currency, Decimal(0)) + rate.price * item.count
        )
    return list(totals.values())


def in_cents(amount: Decimal) -> Decimal:
    """An amount as shown: rounded half up to the cent."""
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)
