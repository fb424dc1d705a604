"""The cost ledger without a database: Meta's pricing object, the recipient's country, the dated
rate card and exact totals."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from outbox.cost.country import country_of
from outbox.cost.ledger import Charged, in_cents, price
from outbox.cost.pricing import parse_pricing
from outbox.cost.rates import RateCardError, load_rate_card, parse_rate_card
from outbox.webhooks.payload import parse
from tests.unit.test_webhook_payload import example_bytes

CARD = """\
# example rates, not Meta's
country,category,currency,price,valid_from
*,marketing,USD,0.0250,2025-07-01
IN,marketing,USD,0.0107,2025-07-01
IN,marketing,USD,0.0118,2026-10-01
*,utility,USD,0.0040,2025-07-01
"""


def test_example_payload_pricing_is_read_with_its_status() -> None:
    status = parse(example_bytes("status_webhook_delivered.json")).statuses[0]
    assert status.pricing is not None
    assert (status.pricing.billable, status.pricing.category, status.pricing.model) == (
        True,
        "service",
        "CBP",
    )


def test_cbp_pricing_without_type_is_not_charged_per_message() -> None:
    pricing = parse_pricing({"billable": True, "pricing_model": "CBP", "category": "service"})
    assert pricing is not None
    assert not pricing.charged


def test_regular_billable_pricing_is_charged() -> None:
    pricing = parse_pricing(
        {"billable": True, "pricing_model": "PMP", "type": "regular", "category": "marketing"}
    )
    assert pricing is not None
    assert pricing.charged


@pytest.mark.parametrize("kind", ["free_customer_service", "free_entry_point"])
def test_free_types_are_not_charged(kind: str) -> None:
    pricing = parse_pricing(
        {"billable": False, "pricing_model": "PMP", "type": kind, "category": "utility"}
    )
    assert pricing is not None
    assert not pricing.charged


def test_not_billable_regular_is_not_charged() -> None:
    pricing = parse_pricing({"billable": False, "type": "regular", "category": "utility"})
    assert pricing is not None
    assert not pricing.charged


@pytest.mark.parametrize(
    "value", [None, "x", {}, {"billable": "true", "category": "utility"}, {"billable": True}]
)
def test_malformed_pricing_is_none(value: object) -> None:
    assert parse_pricing(value) is None


@pytest.mark.parametrize(
    ("number", "country"),
    [("919876543210", "IN"), ("+15551234567", "US"), ("447700900123", "GB"), ("999", None)],
)
def test_country_is_the_region_of_the_calling_code(number: str, country: str | None) -> None:
    assert country_of(number) == country


def test_country_rate_wins_over_the_wildcard() -> None:
    rate = parse_rate_card(CARD).rate("IN", "marketing", datetime(2026, 1, 1, tzinfo=UTC))
    assert rate is not None
    assert rate.price == Decimal("0.0107")


def test_wildcard_rate_prices_other_countries() -> None:
    rate = parse_rate_card(CARD).rate("BR", "marketing", datetime(2026, 1, 1, tzinfo=UTC))
    assert rate is not None
    assert rate.price == Decimal("0.0250")


def test_new_rate_applies_from_its_start_date_only() -> None:
    card = parse_rate_card(CARD)
    before = card.rate("IN", "marketing", datetime(2026, 9, 30, 23, 59, 59, tzinfo=UTC))
    on = card.rate("IN", "marketing", datetime(2026, 10, 1, tzinfo=UTC))
    assert before is not None
    assert before.price == Decimal("0.0107")
    assert on is not None
    assert on.price == Decimal("0.0118")


def test_no_rate_before_the_first_start_date() -> None:
    card = parse_rate_card(CARD)
    assert card.rate("IN", "marketing", datetime(2025, 6, 30, tzinfo=UTC)) is None


def test_category_without_a_rate_has_none() -> None:
    card = parse_rate_card(CARD)
    assert card.rate("IN", "authentication", datetime(2026, 1, 1, tzinfo=UTC)) is None


@pytest.mark.parametrize(
    ("row", "says"),
    [
        ("India,marketing,USD,0.01,2025-07-01", "country"),
        ("IN,marketing,dollars,0.01,2025-07-01", "currency"),
        ("IN,marketing,USD,-1,2025-07-01", "price"),
        ("IN,marketing,USD,cheap,2025-07-01", "price"),
        ("IN,marketing,USD,0.01,July", "valid_from"),
    ],
)
def test_bad_rate_card_row_names_the_row_and_column(row: str, says: str) -> None:
    with pytest.raises(RateCardError, match=f"row 2: {says}"):
        parse_rate_card(f"country,category,currency,price,valid_from\n{row}\n", "card.csv")


def test_rate_card_without_the_header_is_refused() -> None:
    with pytest.raises(RateCardError, match="header"):
        parse_rate_card("IN,marketing,USD,0.01,2025-07-01\n")


def test_totals_are_exact_and_unpriced_parts_are_counted_apart() -> None:
    card = parse_rate_card(CARD)
    totals = price(
        [
            Charged("total", "IN", "marketing", date(2026, 9, 30), 3),
            Charged("total", "IN", "marketing", date(2026, 10, 1), 2),
            Charged("total", "BR", "authentication", date(2026, 10, 1), 4),
        ],
        card,
    )
    assert len(totals) == 1
    assert totals[0].messages == 9
    assert totals[0].unpriced == 4
    assert totals[0].amounts == {"USD": Decimal("0.0557")}  # 3 x 0.0107 + 2 x 0.0118


def test_without_a_rate_card_every_part_is_unpriced() -> None:
    totals = price([Charged("total", "IN", "marketing", date(2026, 1, 1), 5)], None)
    assert (totals[0].messages, totals[0].unpriced, totals[0].amounts) == (5, 5, {})


def test_amounts_round_to_the_cent_only_when_shown() -> None:
    assert in_cents(Decimal("0.0557")) == Decimal("0.06")
    assert in_cents(Decimal("0.005")) == Decimal("0.01")


def test_bundled_example_rate_card_loads() -> None:
    card = load_rate_card(Path(__file__).parents[2] / "deploy" / "rate-card.example.csv")
    assert card.rate("IN", "utility", datetime(2026, 1, 1, tzinfo=UTC)) is not None
