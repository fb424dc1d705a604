"""The Graph API misbehaving under several daemons: dropped connections, requests hanging past
the timeout, 5xx and 429 storms, a whole-API outage, poison answers, and an expired token
replaced by a restart with a new one. Rows wait or fail as the contract says; none is lost."""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Sequence

import pytest

from outbox.simulator import Step
from tests.chaos import invariants
from tests.chaos.conftest import MakeRound
from tests.chaos.harness import Round, assert_guarantees, scaled

pytestmark = pytest.mark.timeout(180)
DAEMONS = 2
FLAGS = {"--lease-seconds": "20"}  # no kills here: a lease outlasting the request timeout
RECIPIENTS = 30


async def start(chaos_round: Round, flags: dict[str, str] | None = None) -> asyncio.Task[None]:
    """A backlog, daemons on it, and more rows coming; the task that inserts them."""
    await chaos_round.load.fill(scaled(80))
    producing = asyncio.create_task(chaos_round.load.produce(scaled(40), seconds=1.5))
    await chaos_round.spawn(DAEMONS, flags={**FLAGS, **(flags or {})})
    return producing


async def settle(chaos_round: Round, producing: asyncio.Task[None], within: float = 60) -> None:
    await producing
    await chaos_round.until_done(within)


def script_some(chaos_round: Round, steps: Sequence[object], share: float, most: int = 3) -> None:
    """Give `share` of the recipients up to `most` steps drawn from `steps`, then success."""
    rng = chaos_round.rng
    for recipient in rng.sample(chaos_round.to, round(len(chaos_round.to) * share)):
        chaos_round.api.script(recipient, *rng.choices(steps, k=rng.randint(1, most)))


async def test_dropped_connections_repeat_only_parts_in_doubt(chaos: MakeRound) -> None:
    chaos_round = await chaos("dropped connections", scaled(RECIPIENTS))
    script_some(chaos_round, [{"drop": True}, {"accept_and_drop": True}, "ok"], share=0.7)
    producing = await start(chaos_round)
    await settle(chaos_round, producing)
    assert_guarantees(await chaos_round.finish(invariants.in_doubt_limit))


async def test_answers_lost_with_their_connection_are_settled_by_webhooks_not_resent(
    chaos: MakeRound,
) -> None:
    """Meta accepted the part, then the connection broke before the answer: with the webhook
    receiver running the part's status webhook settles it, and nothing goes out twice."""
    chaos_round = await chaos("answers lost with the connection, receiver", scaled(RECIPIENTS))
    script_some(chaos_round, [{"accept_and_drop": True}, "ok"], share=0.7)
    await chaos_round.load.fill(scaled(80))
    producing = asyncio.create_task(chaos_round.load.produce(scaled(40), seconds=1.5))
    environ = await chaos_round.enter(chaos_round.receiver())
    flags = {**FLAGS, "--reconcile-seconds": "10"}
    await chaos_round.spawn(DAEMONS, flags=flags, environ=environ)
    await settle(chaos_round, producing)
    figures = await chaos_round.finish()
    assert_guarantees(figures)
    assert figures.duplicated == 0, "\n".join(figures.notes[:40])


async def test_requests_hanging_past_the_timeout_repeat_only_parts_in_doubt(
    chaos: MakeRound,
) -> None:
    chaos_round = await chaos("hanging past the timeout (1 s)", scaled(RECIPIENTS))
    hang = [{"delay_ms": 1600}, {"hang_ms": 1600}, {"delay_ms": 300}, "ok"]
    script_some(chaos_round, hang, share=0.6, most=2)  # two doubts at most: no row fails
    producing = await start(chaos_round, flags={"--request-timeout": "1"})
    await settle(chaos_round, producing)
    assert_guarantees(await chaos_round.finish(invariants.in_doubt_limit))


async def test_a_5xx_storm_delays_rows_but_loses_none(chaos: MakeRound) -> None:
    chaos_round = await chaos("5xx storm", scaled(RECIPIENTS))
    errors = [
        {"error": 131000, "times": 3},
        {"error": 131016, "http": 503},
        {"error": 2, "http": 503},
        {"raw": "<html><body>502 Bad Gateway</body></html>", "http": 502},
        {"raw": "", "http": 504},
    ]
    script_some(chaos_round, errors, share=0.5)
    producing = await start(chaos_round)
    await chaos_round.accepted_reach(chaos_round.load.parts / 5)
    chaos_round.simulator.fail_rate = 0.5  # half of all requests: HTTP 500, code 131000
    await asyncio.sleep(2)
    chaos_round.simulator.fail_rate = 0.0
    await settle(chaos_round, producing)
    assert_guarantees(await chaos_round.finish())


async def test_a_429_storm_holds_sending_without_failing_rows(chaos: MakeRound) -> None:
    chaos_round = await chaos("429 storm", scaled(RECIPIENTS))
    throttles = [
        {"error": 130429, "http": 429, "retry_after": 1},
        {"error": 131056, "retry_after": 1},
        {"error": 4, "retry_after": 1},
        {"error": 80007, "retry_after": 1},
        {"raw": "<html>Too Many Requests</html>", "http": 429, "headers": {"Retry-After": "1"}},
    ]
    script_some(chaos_round, throttles, share=0.5)
    producing = await start(chaos_round)
    await chaos_round.accepted_reach(chaos_round.load.parts / 5)
    chaos_round.simulator.mps = 50  # Meta's sender limit, far below the daemons' --rate
    await asyncio.sleep(1.5)
    chaos_round.simulator.mps = None
    await settle(chaos_round, producing)
    assert_guarantees(await chaos_round.finish())


async def test_a_whole_api_outage_is_waited_out(chaos: MakeRound) -> None:
    chaos_round = await chaos("whole-API outage (500s + drops)", scaled(RECIPIENTS))
    producing = await start(chaos_round)
    await chaos_round.accepted_reach(chaos_round.load.parts / 4)
    simulator = chaos_round.simulator
    simulator.fail_rate = 1.0
    await asyncio.sleep(1.5)
    simulator.fail_rate = 0.0
    simulator.scenario = {to: deque([Step("drop", times=0)]) for to in chaos_round.to}
    await asyncio.sleep(1.5)
    simulator.scenario = {}
    await settle(chaos_round, producing)
    assert_guarantees(await chaos_round.finish())


async def test_poison_answers_fail_only_their_rows(chaos: MakeRound) -> None:
    chaos_round = await chaos("poison answers", scaled(RECIPIENTS))
    poison = [
        {"raw": '{"messaging_product": "whatsapp"}'},  # 200 without an id
        {"raw": json.dumps({"messages": [{"id": "wamid.\u0000bad"}]})},
        {"raw": json.dumps({"messages": [{"id": "wamid." + "A" * 600}]})},
        {"raw": '{"messages": [{"id": "wamid.\ud800"}]}'},  # a lone surrogate
        {"raw": "not json at all"},
        {"raw": "<html>\x00bad gateway\x00</html>", "http": 502},
        {"raw": "x" * 200_000, "http": 500},
        {"raw": '{"error": {"code": "abc", "message": null}}', "http": 400},
        {"error": 131000, "retry_after": "inf"},
        {"error": 131026},
    ]
    script_some(chaos_round, poison, share=0.5)
    poisoned = set(chaos_round.simulator.scenario)
    producing = await start(chaos_round)
    await settle(chaos_round, producing)
    figures = await chaos_round.finish(lambda row: row.recipient in poisoned)
    assert_guarantees(figures)


async def test_an_expired_token_pauses_sending_until_a_restart_with_a_new_one(
    chaos: MakeRound,
) -> None:
    chaos_round = await chaos("token expired, restarted with new", scaled(RECIPIENTS))
    producing = await start(chaos_round)
    await chaos_round.accepted_reach(chaos_round.load.parts / 4)
    chaos_round.simulator.access_token = "renewed-token"  # the old one now gets 190
    await asyncio.sleep(1)
    accepted, requests = len(chaos_round.simulator.accepted), chaos_round.simulator.requests
    await asyncio.sleep(1.5)
    chaos_round.notes.append(
        f"while paused: {chaos_round.simulator.requests - requests} requests in 1.5 s "
        f"(probes), {len(chaos_round.simulator.accepted) - accepted} accepted"
    )
    await chaos_round.stop_daemons()
    await chaos_round.spawn(DAEMONS, token="renewed-token", flags=FLAGS)
    await settle(chaos_round, producing)
    assert_guarantees(await chaos_round.finish(token="renewed-token"))
