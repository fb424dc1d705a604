"""`outbox run --log-format json` as a real process: every line is one JSON object, a row's lines
name it with a masked recipient and Meta's code, and no secret is ever written."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from outbox.simulator import Simulator
from tests.daemon_helpers import TOKEN, daemon_env, enqueue, script

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
    assert failures[0]["recipient"] == "92300****567"
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
