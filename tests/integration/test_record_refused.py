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
from outbox.delivery.recorded import AcceptedPart, Recorded, log_refused
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
TAKEN_OVER_AND_WRITTEN = (
    "UPDATE outbox_messages SET lease_token = gen_random_uuid(), taken_over = true, "
    "parts = jsonb_build_array(jsonb_build_object("
    f"'wamid', '{WAMID}', 'status', 'sent', 'sent_at', now())) WHERE id = $1"
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


async def test_a_part_found_on_the_row_all_the_same_is_not_said_to_be_unrecorded(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Another daemon took the row over and recorded this very wamid (reconciled from its status
    webhook): the part is on the row, so it is neither named as unwritten nor counted."""
    caplog.set_level(logging.INFO, logger="outbox")
    parts, unrecorded = await deliver_while(database_url, TAKEN_OVER_AND_WRITTEN)
    assert WAMID in parts
    assert unrecorded == 0
    assert not any("not recorded" in r.getMessage() for r in caplog.records)
    assert any("is on the row" in r.getMessage() for r in caplog.records)


async def test_a_part_of_a_deleted_row_is_neither_counted_nor_said_to_go_again(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="outbox")
    parts, unrecorded = await deliver_while(
        database_url, "DELETE FROM outbox_messages WHERE id = $1"
    )
    assert parts == "None"
    assert unrecorded == 0
    assert not any("may be sent again" in r.getMessage() for r in caplog.records)
    assert any("the row was deleted" in r.getMessage() for r in caplog.records)


async def test_a_write_whose_answer_was_lost_finds_its_part_on_the_row(database_url: str) -> None:
    """The write committed, then the connection dropped before its answer: it is tried again,
    finds the part already there, and says so instead of calling it unwritten."""
    conn = await asyncpg.connect(database_url)
    pool = Pool(database_url, size=2)
    try:
        row_id, token = await claimed_row(conn)
        recorder = PartRecorder(pool, 30, on_idle=lambda: None)
        write = recorder._write
        tries = []

        async def answer_lost_once(parts: list[AcceptedPart]) -> dict[int, Recorded]:
            written = await write(parts)
            tries.append(written)
            if len(tries) == 1:
                raise ConnectionResetError("the connection dropped before the answer")
            return written

        recorder._write = answer_lost_once  # type: ignore[method-assign]
        recorder.start()
        outcome = await recorder.record(AcceptedPart(row_id, token, 0, WAMID, True))
        await recorder.close(5)
        assert len(tries) == 2
        assert outcome is Recorded.ON_ROW
        assert recorder.refused == 0
    finally:
        await pool.close(5)
        await conn.close()


async def test_written_parts_go_on_before_the_refused_ones_of_their_batch_are_read_back(
    database_url: str,
) -> None:
    conn = await asyncpg.connect(database_url)
    pool = Pool(database_url, size=2)
    try:
        ours, ours_token = await claimed_row(conn)
        theirs, theirs_token = await claimed_row(conn)
        await conn.execute(TAKEN_OVER, theirs)
        recorder = PartRecorder(pool, 30, on_idle=lambda: None)
        read_back = recorder._refused
        reading = asyncio.Event()
        release = asyncio.Event()

        async def slow_read_back(parts: list[AcceptedPart]) -> dict[int, Recorded]:
            reading.set()
            await release.wait()
            return await read_back(parts)

        recorder._refused = slow_read_back  # type: ignore[method-assign]
        recorder.start()
        written = asyncio.create_task(
            recorder.record(AcceptedPart(ours, ours_token, 0, WAMID, True))
        )
        refused = asyncio.create_task(
            recorder.record(AcceptedPart(theirs, theirs_token, 0, WAMID + "2", True))
        )
        await asyncio.wait_for(reading.wait(), 5)
        assert await asyncio.wait_for(written, 5) is Recorded.GOING_ON
        assert not refused.done()
        release.set()
        assert await refused is Recorded.NOT_OURS
        await recorder.close(5)
    finally:
        await pool.close(5)
        await conn.close()


async def test_a_part_whose_row_cannot_be_read_back_is_counted_without_a_guessed_cause(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="outbox")
    conn = await asyncpg.connect(database_url)
    pool = Pool(database_url, size=2)
    try:
        row_id, token = await claimed_row(conn)
        await conn.execute("DELETE FROM outbox_messages WHERE id = $1", row_id)
        recorder = PartRecorder(pool, 30, on_idle=lambda: None)

        async def unreadable(parts: list[AcceptedPart]) -> dict[int, Recorded]:
            raise ValueError("the read-back broke")

        recorder._refused = unreadable  # type: ignore[method-assign]
        recorder.start()
        part = AcceptedPart(row_id, token, 0, WAMID, True)
        log_refused(part, await recorder.record(part))
        await recorder.close(5)
        assert recorder.refused == 1  # it may be unwritten
        named = [r.getMessage() for r in caplog.records if WAMID in r.getMessage()]
        assert len(named) == 1
        assert "may be sent again" in named[0]
        assert "taken over" not in named[0]
    finally:
        await pool.close(5)
        await conn.close()
