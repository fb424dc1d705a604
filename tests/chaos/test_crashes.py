"""Several daemons under load, SIGKILLed at random points, round after round: nothing committed
is lost or stuck, and only parts in flight at a kill are ever sent twice."""

from __future__ import annotations

import asyncio

import pytest

from tests.chaos.conftest import MakeRound
from tests.chaos.harness import ROUNDS, assert_guarantees, scaled

DAEMONS = 3
KILLS = 4


@pytest.mark.timeout(300)
@pytest.mark.parametrize("round_number", range(1, ROUNDS + 1))
async def test_sigkilled_daemons_under_load_lose_nothing(
    chaos: MakeRound, round_number: int
) -> None:
    chaos_round = await chaos(f"SIGKILL round {round_number}", scaled(40))
    rng = chaos_round.rng
    backlog, more = scaled(100), scaled(60)
    await chaos_round.load.fill(backlog)
    expected = chaos_round.load.parts * (backlog + more) / backlog
    producing = asyncio.create_task(chaos_round.load.produce(more, seconds=2))
    slots = await chaos_round.spawn(DAEMONS)
    for mark in sorted(rng.uniform(0.05, 0.8) for _ in range(KILLS)):
        await chaos_round.accepted_reach(mark * expected)
        await asyncio.sleep(rng.uniform(0, 0.3))
        victims = range(DAEMONS) if rng.random() < 0.2 else [rng.randrange(DAEMONS)]
        for slot in victims:
            await chaos_round.fleet.kill(slots[slot])
        await asyncio.sleep(rng.uniform(0, 0.5))
        for slot in victims:
            (slots[slot],) = await chaos_round.spawn()
    await producing
    await chaos_round.until_done(within=30)
    assert_guarantees(await chaos_round.finish())
