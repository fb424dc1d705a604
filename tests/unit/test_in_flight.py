"""What a claim learns from the rows in flight: their tokens, and that a row claimed anew is
no longer its older claim's."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace

from outbox.delivery.claim import Claim
from outbox.delivery.flight import InFlight
from tests.daemon_helpers import claim_of


def _claim(row: int, lease_until: float = 130.0) -> Claim:
    return replace(claim_of(row, uuid.uuid4()), lease_until=lease_until)


def _in_flight(*claims: Claim) -> InFlight:
    flight = InFlight(wake=lambda: None)
    for claim in claims:
        flight.claims[claim.id] = claim
    return flight


async def test_the_tokens_of_the_rows_in_flight_are_listed_once_each() -> None:
    first, second = _claim(1), _claim(2)
    third = replace(_claim(3), token=first.token)
    assert sorted(_in_flight(first, second, third).tokens()) == sorted([first.token, second.token])


class _Rows:
    async def deliver(self, claim: Claim) -> None:
        pass


async def test_a_row_claimed_anew_is_lost_to_its_older_claim() -> None:
    older = _claim(1)
    flight = _in_flight(older)
    newer = _claim(1)
    flight.start(newer, _Rows())  # type: ignore[arg-type]
    await asyncio.gather(*flight.tasks)
    assert older.lost
    assert not newer.lost
