"""A part Meta accepted whose record the row refuses: the log says which of the two reasons it
was, and names the wamid when the part went unrecorded (the row is no longer this daemon's, so
whoever holds it now may send that part again); the stop counts such parts as unrecorded."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import asyncpg
import pytest
from aioresponses import CallbackResult, aioresponses

import outbox
from outbox.delivery.flight import InFlight
from outbox.delivery.record import PartRecorder
from outbox.delivery.shutdown import shut_down
from outbox.pool import Pool
from tests.daemon_helpers import claim_of, claimed_row, row_sender

PHONE = "1122334455"
URL = f"http://127.0.0.1:9/v23.0/{PHONE}/messages"
WAMID = "wamid.HBgMOTIzMDAxMjM0NTY3FQIAERgSQUNDRVBURURXSElMRUxPU1QA"


async def deliver_while(database_url: str, change: str) -> tuple[str, int]:
    """Send one claimed one-text row; while Meta accepts its part, `change` (SQL, $1 the row's
    id) happens to the row; then stop. Its parts as recorded, and the accepted parts the stop
    counts as unrecorded."""
    conn = await asyncpg.connect(database_url)
    pool = Pool(database_url, size=2)
    try:
        row_id, token = await claimed_row(conn)

        async def accepted(url: object, **kwargs: object) -> CallbackResult:
            await conn.execute(change, row_id)
            return CallbackResult(status=200, payload={"messages": [{"id": WAMID}]})

        settings = outbox.Settings(database_url=database_url, quick_retries=1)
        async with aiohttp.ClientSession() as http:
            recorder = PartRecorder(pool, 30, on_idle=lambda: None)
            recorder.start()
            rows = await row_sender(settings, pool, http, recorder, PHONE)
            with aioresponses() as mocked:
                mocked.post(URL, callback=accepted)
                await rows.deliver(claim_of(row_id, token))
            deadline = asyncio.get_running_loop().time() + 5
            _, unrecorded = await shut_down(pool, rows, recorder, InFlight(lambda: None), deadline)
        parts = await conn.fetchval("SELECT parts::text FROM outbox_messages WHERE id = $1", row_id)
        return str(parts), unrecorded
    finally:
        await pool.close(5)
        await conn.close()


TAKEN_OVER = (
    "UPDATE outbox_messages SET lease_token = gen_random_uuid(), taken_over = true WHERE id = $1"
)
FAILED_BY_A_STATUS = (
    "UPDATE outbox_messages SET status = 'failed', last_error = '131026: undeliverable' "
    "WHERE id = $1"
)


async def test_a_part_accepted_after_the_row_was_taken_over_is_logged_with_its_wamid(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="outbox")
    parts, _ = await deliver_while(database_url, TAKEN_OVER)
    assert parts == "[]"  # the row is the other daemon's: nothing of this one's is written
    warning = [r.getMessage() for r in caplog.records if WAMID in r.getMessage()]
    assert len(warning) == 1
    assert "not recorded" in warning[0]
    assert "may be sent again" in warning[0]


async def test_a_part_accepted_while_a_status_failed_the_row_is_recorded_and_says_so(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="outbox")
    parts, _ = await deliver_while(database_url, FAILED_BY_A_STATUS)
    assert WAMID in parts
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("a status webhook failed it" in m for m in messages)
    assert not any("lease" in m for m in messages)


async def test_the_stop_counts_a_part_left_unwritten_by_a_takeover_as_unrecorded(
    database_url: str,
) -> None:
    _, unrecorded = await deliver_while(database_url, TAKEN_OVER)
    assert unrecorded == 1


async def test_the_stop_does_not_count_a_part_recorded_on_a_row_a_status_failed(
    database_url: str,
) -> None:
    _, unrecorded = await deliver_while(database_url, FAILED_BY_A_STATUS)
    assert unrecorded == 0


async def test_a_part_an_earlier_try_wrote_is_not_said_to_be_unrecorded(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The write committed but its answer was lost with the connection, so it was tried again
    and found the part already there: the part is on the row, so it is neither named as
    unwritten nor counted."""
    caplog.set_level(logging.WARNING, logger="outbox")
    written_before = (
        "UPDATE outbox_messages SET parts = jsonb_build_array(jsonb_build_object("
        f"'wamid', '{WAMID}', 'status', 'sent', 'sent_at', now())) WHERE id = $1"
    )
    parts, unrecorded = await deliver_while(database_url, written_before)
    assert WAMID in parts
    assert unrecorded == 0
    assert not any("not recorded" in r.getMessage() for r in caplog.records)
