"""Many senders: a row names the phone number id it goes from; pauses, probes and per-recipient
order are per sender, so one blocked number never stops the others. A token error still pauses
every sender."""

from __future__ import annotations

import asyncio
import json
import sys
from collections import deque
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

import outbox
from outbox.cli import main
from outbox.delivery.daemon import Daemon
from outbox.simulator import Simulator, Step
from tests.daemon_helpers import PHONE, daemon_env, drain, enqueue, status

pytestmark = pytest.mark.timeout(60)
OTHER = "2223334445"  # a second business number
GUEST = "923001234567"
BIN = Path(sys.executable).parent


def block(simulator: Simulator, sender: str, code: int) -> None:
    """Every request from `sender` is refused with `code` (an account error, say)."""
    simulator.sender_scenario[sender] = deque([Step.parse({"error": code, "times": 0})])


async def until(check: Any, within: float = 15) -> None:
    for _ in range(int(within / 0.05)):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("timed out")


async def test_a_row_goes_from_the_sender_it_names(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    simulator.sender_scenario[OTHER] = deque()  # a number the token serves, with no trouble
    named = await enqueue(engine, GUEST, "from the second number", sender=OTHER)
    default = await enqueue(engine, "923007654321", "from the default number")
    assert await drain(settings) == 0
    sent_from = {a["callback"].split(":")[2]: a["from"] for a in simulator.accepted}
    assert sent_from == {str(named): OTHER, str(default): PHONE}
    assert (await status(engine, named)).sender == OTHER
    assert (await status(engine, default)).sender is None


async def test_one_blocked_number_does_not_stop_the_others(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    block(simulator, OTHER, 131031)  # account locked
    blocked = [await enqueue(engine, GUEST, f"b{i}", sender=OTHER) for i in range(3)]
    # The same guest, from the default number: another conversation, not queued behind.
    free = [await enqueue(engine, GUEST, f"a{i}") for i in range(3)]
    free.append(await enqueue(engine, "923007654321", "another guest"))
    daemon = Daemon(settings)
    running = asyncio.create_task(daemon.run())

    async def free_ones_sent() -> bool:
        return all([(await status(engine, row)).status == "sent" for row in free])

    try:
        await until(free_ones_sent)
        health = daemon.health()
    finally:
        daemon.stop()
        await asyncio.wait_for(running, 10)
    assert health["status"] == "ok"
    assert health["senders"][OTHER]["status"] == "paused"
    assert "131031" in health["senders"][OTHER]["reason"]
    for row in blocked:
        delivery = await status(engine, row)
        assert (delivery.status, delivery.attempts) == ("pending", 0)


async def test_a_blocked_number_is_probed_alone_and_resumes(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    block(simulator, OTHER, 368)
    rows = [await enqueue(engine, f"92300123456{i}", "hi", sender=OTHER) for i in range(3)]
    assert await drain(settings) == 3  # a drain stops on a pause, naming it
    refused_by_the_drain = len(simulator.arrivals)
    simulator.sender_scenario[OTHER] = deque([Step.parse({"error": 368, "times": 1})])
    daemon = Daemon(settings)
    running = asyncio.create_task(daemon.run())

    async def all_sent() -> bool:
        return all([(await status(engine, row)).status == "sent" for row in rows])

    try:
        await until(all_sent)
    finally:
        daemon.stop()
        await asyncio.wait_for(running, 10)
    # One probe at a time: the first is refused, the second goes through, then the other rows.
    assert len(simulator.arrivals) - refused_by_the_drain == 1 + 3


async def test_a_drain_sends_every_other_number_s_rows_then_exits_3_naming_the_locked_one(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    block(simulator, OTHER, 131031)
    locked = await enqueue(engine, GUEST, "from the locked number", sender=OTHER)
    free = [
        await enqueue(engine, f"9230076543{i:02}", "from the default number") for i in range(40)
    ]
    daemon = Daemon(replace(settings, batch_size=5), drain=True)
    assert await asyncio.wait_for(daemon.run(), 30) == 3
    assert OTHER in (daemon.paused_reason or "")
    assert [(await status(engine, row)).status for row in free] == ["sent"] * len(free)
    delivery = await status(engine, locked)
    assert (delivery.status, delivery.attempts) == ("pending", 0)


async def test_a_token_error_pauses_every_sender(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    block(simulator, PHONE, 190)
    block(simulator, OTHER, 190)
    rows = [
        await enqueue(engine, GUEST, "x"),
        await enqueue(engine, "923007654321", "y", sender=OTHER),
    ]
    daemon = Daemon(settings)
    running = asyncio.create_task(daemon.run())
    try:
        await until(lambda: _true(daemon.senders.token.state.value == "paused"))
        requests = simulator.requests
        await asyncio.sleep(0.5)  # paused: only probes go out, one at a time
        assert simulator.requests - requests <= 3
    finally:
        daemon.stop()
        await asyncio.wait_for(running, 10)
    assert daemon.health()["status"] == "paused"
    for row in rows:
        assert (await status(engine, row)).attempts == 0


async def test_a_blocked_number_pauses_in_every_daemon_process_while_the_others_drain(
    database_url: str, engine: AsyncEngine, simulator: Simulator
) -> None:
    block(simulator, OTHER, 131031)
    blocked = [await enqueue(engine, f"92300123450{i}", "b", sender=OTHER) for i in range(4)]
    free = [await enqueue(engine, f"9230076543{i:02}", "a") for i in range(30)]
    daemons = [
        await asyncio.create_subprocess_exec(
            str(BIN / "outbox"),
            "run",
            *("--poll-interval", "0.2", "--pause-probe", "2", "--batch-size", "5"),
            env=daemon_env(database_url, simulator),
            stderr=asyncio.subprocess.DEVNULL,
        )
        for _ in range(2)
    ]

    async def sent(rows: list[int]) -> bool:
        return all([(await status(engine, row)).status == "sent" for row in rows])

    async def paused_in_both() -> bool:
        async with engine.connect() as conn:
            paused = await conn.scalar(
                sa.text(
                    "SELECT count(*) FROM outbox_daemons "
                    "WHERE senders -> :sender ->> 'state' = 'paused'"
                ),
                {"sender": OTHER},
            )
        return bool(paused == 2)

    try:
        await until(lambda: sent(free), within=30)
        await until(paused_in_both, within=15)
        for row in blocked:  # refused for the number's sake: no attempt used up
            delivery = await status(engine, row)
            assert (delivery.status, delivery.attempts) == ("pending", 0)
        simulator.sender_scenario[OTHER] = deque()  # the number is unlocked: a probe finds out
        await until(lambda: sent(blocked), within=30)
    finally:
        for process in daemons:
            process.terminate()
        codes = await asyncio.wait_for(asyncio.gather(*(p.wait() for p in daemons)), 20)
    assert codes == [0, 0]
    assert {a["from"] for a in simulator.accepted} == {PHONE, OTHER}


async def _true(value: bool) -> bool:
    return value


def test_enqueue_refuses_a_sender_that_is_not_a_phone_number_id() -> None:
    with pytest.raises(outbox.InvalidMessage, match="sender"):
        asyncio.run(_enqueue_without_database(sender="+1 555 0100"))


async def _enqueue_without_database(**kwargs: Any) -> int:
    return await outbox.enqueue(None, GUEST, "hi", **kwargs)  # type: ignore[arg-type]


def test_outbox_enqueue_takes_a_sender_and_stats_counts_by_sender(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["enqueue", GUEST, "hello", "--sender", OTHER]) == 0
    row_id = int(capsys.readouterr().out)
    assert main(["enqueue", GUEST, "hello"]) == 0
    capsys.readouterr()
    assert main(["status", str(row_id), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["sender"] == OTHER
    assert main(["stats", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["senders"][OTHER]["pending"] == 1
    assert stats["senders"]["default"]["pending"] == 1
    assert stats["counts"]["pending"] == 2
