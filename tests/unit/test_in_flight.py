"""The rows in flight a claim must leave out: those another claim could find claimable."""

from __future__ import annotations

import uuid
from dataclasses import replace

from outbox.delivery.claim import Claim
from outbox.delivery.flight import InFlight
from tests.daemon_helpers import claim_of


def _claim(row: int, lease_until: float, lost: bool = False) -> Claim:
    return replace(claim_of(row, uuid.uuid4()), lease_until=lease_until, lost=lost)


def _in_flight(*claims: Claim) -> InFlight:
    flight = InFlight(wake=lambda: None)
    for claim in claims:
        flight.claims[claim.id] = claim
    return flight


async def test_a_row_leased_well_past_the_margin_is_not_listed() -> None:
    assert _in_flight(_claim(1, lease_until=130.0)).lapsing(now=100.0, within=15.0) == []


async def test_a_row_whose_lease_runs_out_within_the_margin_is_listed() -> None:
    flight = _in_flight(_claim(1, lease_until=114.0), _claim(2, lease_until=130.0))
    assert flight.lapsing(now=100.0, within=15.0) == [1]


async def test_a_row_whose_lease_ran_out_is_listed() -> None:
    assert _in_flight(_claim(1, lease_until=90.0)).lapsing(now=100.0, within=15.0) == [1]


async def test_a_row_another_worker_holds_is_listed_whatever_its_lease() -> None:
    flight = _in_flight(_claim(1, lease_until=130.0, lost=True))
    assert flight.lapsing(now=100.0, within=15.0) == [1]


async def test_the_tokens_of_the_rows_in_flight_are_listed_once_each() -> None:
    first, second = _claim(1, lease_until=130.0), _claim(2, lease_until=130.0)
    third = replace(_claim(3, lease_until=130.0), token=first.token)
    assert sorted(_in_flight(first, second, third).tokens()) == sorted([first.token, second.token])
