"""The simulator answers like the Graph API: its checks, its formats, its scripted faults."""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from outbox.simulator import Simulator, Step, serve

TEXT = {
    "messaging_product": "whatsapp",
    "to": "923001234567",
    "type": "text",
    "text": {"body": "hi"},
}


@pytest.fixture
async def sim() -> AsyncIterator[tuple[Simulator, str]]:
    simulator = Simulator(access_token="right", phone_number_id="111")
    runner = await serve(simulator, "127.0.0.1", 0)
    yield simulator, f"http://127.0.0.1:{runner.addresses[0][1]}/v23.0"
    await runner.cleanup()


async def post(url: str, body: dict[str, Any], token: str = "right") -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, json=body, headers={"Authorization": f"Bearer {token}"}) as response,
    ):
        return response.status, await response.json()


async def test_accepts_a_valid_text_with_a_wamid(sim: tuple[Simulator, str]) -> None:
    simulator, url = sim
    status, body = await post(f"{url}/111/messages", TEXT)
    assert status == 200
    assert body["messages"][0]["id"].startswith("wamid.")
    assert body["contacts"] == [{"input": "923001234567", "wa_id": "923001234567"}]
    assert simulator.accepted[0]["wamid"] == body["messages"][0]["id"]


async def test_a_wrong_token_gets_190_with_401(sim: tuple[Simulator, str]) -> None:
    status, body = await post(f"{sim[1]}/111/messages", TEXT, token="wrong")
    assert (status, body["error"]["code"]) == (401, 190)


async def test_an_unknown_phone_number_id_gets_100_subcode_33(sim: tuple[Simulator, str]) -> None:
    status, body = await post(f"{sim[1]}/999/messages", TEXT)
    assert (status, body["error"]["code"], body["error"]["error_subcode"]) == (400, 100, 33)


async def test_text_over_4096_characters_gets_100(sim: tuple[Simulator, str]) -> None:
    long_text = {**TEXT, "text": {"body": "x" * 4097}}
    status, body = await post(f"{sim[1]}/111/messages", long_text)
    assert (status, body["error"]["code"]) == (400, 100)


async def test_scripted_steps_run_in_order_then_succeed(sim: tuple[Simulator, str]) -> None:
    simulator, url = sim
    simulator.scenario["923001234567"] = deque(
        [Step.parse({"error": 131000, "times": 2}), Step.parse({"error": 131056})]
    )
    answers = [await post(f"{url}/111/messages", TEXT) for _ in range(4)]
    assert [status for status, _ in answers] == [500, 500, 400, 200]
    assert answers[2][1]["error"]["code"] == 131056


async def test_a_dropped_answer_closes_the_connection(sim: tuple[Simulator, str]) -> None:
    simulator, url = sim
    simulator.scenario["923001234567"] = deque([Step.parse({"accept_and_drop": True})])
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await post(f"{url}/111/messages", TEXT)
    assert len(simulator.accepted) == 1


async def get(url: str, token: str = "right") -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, headers={"Authorization": f"Bearer {token}"}) as response,
    ):
        return response.status, await response.json()


async def test_a_lookup_of_the_phone_number_answers_its_profile(sim: tuple[Simulator, str]) -> None:
    simulator, url = sim
    status, body = await get(f"{url}/111?fields=id")
    assert (status, body["id"]) == (200, "111")
    assert (simulator.lookups, simulator.requests) == (1, 0)  # a lookup is not a send


async def test_a_lookup_checks_the_token_and_the_phone_number_id(
    sim: tuple[Simulator, str],
) -> None:
    status, body = await get(f"{sim[1]}/111", token="wrong")
    assert (status, body["error"]["code"]) == (401, 190)
    status, body = await get(f"{sim[1]}/999")
    assert (status, body["error"]["code"], body["error"]["error_subcode"]) == (400, 100, 33)


async def test_an_unreachable_simulator_cuts_sends_and_lookups_off(
    sim: tuple[Simulator, str],
) -> None:
    simulator, url = sim
    simulator.unreachable = True
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await post(f"{url}/111/messages", TEXT)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await get(f"{url}/111")
    assert (simulator.requests, simulator.accepted) == (0, [])


async def test_a_lookup_fault_answers_lookups_and_leaves_sends_alone(
    sim: tuple[Simulator, str],
) -> None:
    simulator, url = sim
    simulator.lookup_fault = Step("error", code=2, http=503)
    status, body = await get(f"{url}/111")
    assert (status, body["error"]["code"]) == (503, 2)
    assert (await post(f"{url}/111/messages", TEXT))[0] == 200
