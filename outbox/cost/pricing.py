"""Meta's `pricing` object of a status webhook, and which parts it makes us pay for.

A part is charged when Meta says `billable: true` and `type: "regular"` (per-message pricing,
PMP). Free types (free_customer_service, free_entry_point) and the old per-conversation model
(CBP, no `type`) are stored but never priced per message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from outbox.cost.country import country_of
from outbox.errors import clean

CHARGED_TYPE = "regular"


@dataclass(frozen=True)
class Pricing:
    billable: bool
    category: str  # marketing, utility, authentication, service, ... as Meta names it
    type: str | None  # regular, free_customer_service, free_entry_point; None before PMP
    model: str | None  # PMP, or CBP in older payloads

    @property
    def charged(self) -> bool:
        """Meta bills this part as one message of its category."""
        return self.billable and self.type == CHARGED_TYPE


def parse_pricing(value: object) -> Pricing | None:
    """The pricing of one `statuses[]` entry; None when absent or not Meta's shape (the stored
    body keeps whatever it was)."""
    if not isinstance(value, dict):
        return None
    billable, category = value.get("billable"), value.get("category")
    if not isinstance(billable, bool) or not isinstance(category, str) or not category.strip():
        return None
    return Pricing(
        billable=billable,
        category=clean(category.strip().lower(), 32),
        type=_word(value.get("type")),
        model=_word(value.get("pricing_model")),
    )


def _word(value: object) -> str | None:
    return clean(value.strip(), 32) if isinstance(value, str) and value.strip() else None


def pricing_params(pricing: Pricing | None, recipient: str | None) -> dict[str, Any]:
    """A status's pricing as the store takes it (outbox.store.webhooks.store_contents), with
    the country of its recipient; all None when it carries none."""
    if pricing is None:
        return dict.fromkeys(PRICING_FIELDS)
    return {
        "billable": pricing.billable,
        "category": pricing.category,
        "pricing_type": pricing.type,
        "pricing_model": pricing.model,
        "country": country_of(recipient),
    }


PRICING_FIELDS = ("billable", "category", "pricing_type", "pricing_model", "country")
