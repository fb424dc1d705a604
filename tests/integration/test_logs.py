"""`outbox run --log-format json` as a real process: every line is one JSON object, a row's lines
name it with a masked recipient and Meta's code, each accepted part, failure, retry and hold is
one line with its fields, a stop line ends the run, and no secret or whole number is written."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from outbox.simulator import Simulator
from tests.daemon_helpers import IMAGE, PHONE, TOKEN, daemon_env, enqueue, script

pytestmark = pytest.mark.timeout(90)
BIN = Path(sys.executable).parent
UNKNOWN = "923001234567"  # not on WhatsApp: 131026
KNOWN = "923007654321"


async def drain_logged(
    database_url: str, simulator: Simulator, *flags: str
) -> tuple[int, list[str]]:
    """`outbox run --drain` with `flags`; its exit code and stderr lines."""
    process = await asyncio.create_subprocess_exec(
        str(BIN / "outbox"),
        "run",
        "--drain",
        "--poll-interval",
        "0.2",
        *flags,
        env=daemon_env(database_url, simulator),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, stderr.decode().splitlines()


@pytest.fixture
async def failed_row(engine: AsyncEngine, simulator: Simulator) -> int:
    """One row Meta refuses (131026) beside one it accepts."""
    script(simulator, UNKNOWN, {"error": 131026})
    await enqueue(engine, KNOWN, "Your table for two is booked")
    return await enqueue(engine, UNKNOWN, "Your room is ready")


async def test_every_line_of_a_json_log_is_one_object_with_the_common_fields(
    database_url: str, simulator: Simulator, failed_row: int
) -> None:
    code, lines = await drain_logged(database_url, simulator, "--log-format", "json")
    assert code == 0
    assert lines
    for line in lines:
        record = json.loads(line)
        assert {"time", "level", "logger", "message"} <= set(record), line


async def test_a_failed_row_is_logged_with_its_id_masked_recipient_and_code(
    database_url: str, simulator: Simulator, failed_row: int
) -> None:
    _, lines = await drain_logged(database_url, simulator, "--log-format", "json")
    records: list[dict[str, Any]] = [json.loads(line) for line in lines]
    failures = [r for r in records if r.get("row_id") == failed_row and "failed" in r["message"]]
    assert failures, lines
    assert failures[0]["recipient"] == "+********4567"
    assert failures[0]["code"] == 131026
    assert UNKNOWN not in "\n".join(lines)


async def test_log_level_warning_leaves_out_info_lines(
    database_url: str, simulator: Simulator, failed_row: int
) -> None:
    _, lines = await drain_logged(
        database_url, simulator, "--log-format", "json", "--log-level", "warning"
    )
    levels = {json.loads(line)["level"] for line in lines}
    assert "INFO" not in levels


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_no_secret_appears_in_the_log_at_debug_level(
    database_url: str, simulator: Simulator, failed_row: int, log_format: str
) -> None:
    code, lines = await drain_logged(
        database_url, simulator, "--log-format", log_format, "--log-level", "DEBUG"
    )
    assert code == 0
    assert any("DEBUG" in line for line in lines)
    assert TOKEN not in "\n".join(lines)


async def test_a_drain_where_everything_is_accepted_logs_no_warning(
    database_url: str, engine: AsyncEngine, simulator: Simulator
) -> None:
    for n in range(5):
        await enqueue(engine, f"92300765432{n}", f"Booking {n} confirmed")
    code, lines = await drain_logged(database_url, simulator, "--log-format", "json")
    assert code == 0
    assert [line for line in lines if json.loads(line)["level"] != "INFO"] == []


def records(lines: list[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines]


async def test_each_accepted_part_is_one_info_line_with_row_masked_recipient_part_and_wamid(
    database_url: str, engine: AsyncEngine, simulator: Simulator
) -> None:
    row = await enqueue(engine, KNOWN, "Your room", media_urls={"images": [IMAGE]})
    code, lines = await drain_logged(database_url, simulator, "--log-format", "json")
    assert code == 0
    accepted = [r for r in records(lines) if "wamid" in r]
    assert [
        (r["level"], r["row_id"], r["recipient"], r["part"], r["parts"], r["wamid"])
        for r in accepted
    ] == [
        ("INFO", row, "+********4321", 1, 2, simulator.accepted[0]["wamid"]),
        ("INFO", row, "+********4321", 2, 2, simulator.accepted[1]["wamid"]),
    ]


async def test_a_text_line_names_the_row_the_masked_recipient_the_part_and_the_wamid(
    database_url: str, engine: AsyncEngine, simulator: Simulator
) -> None:
    row = await enqueue(engine, KNOWN, "Your room")
    _, lines = await drain_logged(database_url, simulator)
    wamid = simulator.accepted[0]["wamid"]
    assert any(
        line.endswith(f"message {row} to +********4321: part 1/1 accepted as {wamid}")
        for line in lines
    ), lines


async def test_a_failed_row_names_the_part_and_the_reason(
    database_url: str, simulator: Simulator, failed_row: int
) -> None:
    _, lines = await drain_logged(database_url, simulator, "--log-format", "json")
    (failure,) = [r for r in records(lines) if r.get("row_id") == failed_row and "code" in r]
    assert (failure["part"], failure["parts"]) == (1, 1)
    assert failure["reason"].startswith("(#131026)")


async def test_a_durable_retry_is_logged_with_its_delay_and_code(
    database_url: str, engine: AsyncEngine, simulator: Simulator
) -> None:
    script(simulator, KNOWN, {"error": 131000, "times": 3})  # outlasts the 3 quick tries
    row = await enqueue(engine, KNOWN, "Your room")
    _, lines = await drain_logged(
        database_url, simulator, "--log-format", "json", "--retry-delay", "0.1"
    )
    retries = [
        r for r in records(lines) if "retry in" in r["message"] and "quick" not in r["message"]
    ]
    assert [(r["row_id"], r["code"], r["attempts"]) for r in retries] == [(row, 131000, 1)]
    assert 0 < retries[0]["delay"] <= 0.1


async def test_each_quick_retry_is_logged_with_its_code(
    database_url: str, engine: AsyncEngine, simulator: Simulator
) -> None:
    script(simulator, KNOWN, {"error": 131000, "times": 2})
    row = await enqueue(engine, KNOWN, "Your room")
    _, lines = await drain_logged(database_url, simulator, "--log-format", "json")
    quick = [r for r in records(lines) if "quick retry" in r["message"]]
    assert [(r["row_id"], r["part"], r["code"]) for r in quick] == [(row, 1, 131000)] * 2


async def test_a_sender_hold_is_logged_when_it_begins_and_when_it_ends(
    database_url: str, engine: AsyncEngine, simulator: Simulator
) -> None:
    script(simulator, KNOWN, {"error": 130429, "retry_after": 1})
    await enqueue(engine, KNOWN, "Your room")
    _, lines = await drain_logged(database_url, simulator, "--log-format", "json")
    held = [r for r in records(lines) if r.get("sender") == PHONE]
    assert [(r["code"] if "code" in r else r["was"]) for r in held] == [130429, "held"]
    assert held[0]["until"] > held[0]["time"]


async def test_a_drain_ends_with_one_stop_line_saying_why_and_what_was_sent(
    database_url: str, engine: AsyncEngine, simulator: Simulator, failed_row: int
) -> None:
    _, lines = await drain_logged(database_url, simulator, "--log-format", "json")
    stop = records(lines)[-1]
    assert stop["message"].startswith("stopped (drained: nothing left to send)")
    assert (stop["accepted"], stop["failed"], stop["released"], stop["unrecorded"]) == (1, 1, 0, 0)
    assert stop["exit_code"] == 0


async def test_sigterm_ends_with_a_stop_line_naming_the_signal(
    database_url: str, simulator: Simulator
) -> None:
    process = await asyncio.create_subprocess_exec(
        str(BIN / "outbox"),
        *("run", "--log-format", "json", "--poll-interval", "0.2"),
        env=daemon_env(database_url, simulator),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    first = await asyncio.wait_for(process.stderr.readline(), 30)
    assert "delivering to" in first.decode()
    process.send_signal(signal.SIGTERM)
    _, rest = await asyncio.wait_for(process.communicate(), 30)
    stop = records(rest.decode().splitlines())[-1]
    assert (process.returncode, stop["reason"], stop["released"]) == (0, "SIGTERM received", 0)


async def test_an_expired_token_says_to_check_meta_access_token_and_restart(
    database_url: str, engine: AsyncEngine, simulator: Simulator
) -> None:
    simulator.access_token = "a-renewed-token"  # the daemon's token now gets 190
    await enqueue(engine, KNOWN, "Your room")
    code, lines = await drain_logged(database_url, simulator, "--log-format", "json")
    *logged, said = lines  # the drain's exit 3 ends with one line naming the cause
    (pause,) = [r for r in records(logged) if r.get("state") == "paused"]
    assert pause["reason"].endswith("check META_ACCESS_TOKEN and restart the daemon")
    assert "(#190)" in pause["reason"]
    assert (code, records(logged)[-1]["exit_code"]) == (3, 3)
    assert said.endswith("check META_ACCESS_TOKEN and restart the daemon")


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_no_secret_and_no_whole_number_in_any_line_of_a_troubled_run(
    database_url: str, engine: AsyncEngine, simulator: Simulator, log_format: str
) -> None:
    """Sent, failed, retried, throttled and in doubt, at DEBUG: the access token, the app
    secret, the database password and the recipients' numbers never appear."""
    password = "db-pass-4242"  # trust authentication: the server ignores it, the log must too
    with_password = re.sub(r"^(postgresql://postgres):?@", rf"\1:{password}@", database_url)
    assert with_password != database_url
    script(simulator, UNKNOWN, {"error": 131026})
    script(simulator, "923005550001", {"error": 131000, "times": 3})
    script(simulator, "923005550002", {"error": 130429, "retry_after": 0.5})
    script(simulator, "923005550003", {"raw": '{"messaging_product": "whatsapp"}'})  # in doubt
    numbers = [KNOWN, UNKNOWN, "923005550001", "923005550002", "923005550003"]
    for number in numbers:
        await enqueue(engine, number, "Your room")
    process = await asyncio.create_subprocess_exec(
        str(BIN / "outbox"),
        *(
            "run",
            "--drain",
            "--poll-interval",
            "0.2",
            "--retry-delay",
            "0.1",
            "--reconcile-seconds",
            "0",
        ),
        *("--log-format", log_format, "--log-level", "DEBUG"),
        env={**daemon_env(with_password, simulator), "META_APP_SECRET": "app-secret-0001"},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    log = stderr.decode()
    assert process.returncode == 0, log
    for event in ("in doubt", "; retry in", "quick retry", "throttled", "failed", "accepted"):
        assert event in log
    for secret in (TOKEN, "app-secret-0001", password, *numbers):
        assert secret not in log
