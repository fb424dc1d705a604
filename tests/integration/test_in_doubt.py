"""A send in doubt during an outage: the row waits for the API instead of failing, but its part
is never sent more than MAX_IN_DOUBT_IN_OUTAGE times; an answer that came back is no outage."""

from __future__ import annotations

import aiohttp
import asyncpg
import pytest
from aioresponses import aioresponses

import outbox
from outbox.delivery.record import PartRecorder
from outbox.delivery.senders import Senders
from outbox.pool import Pool
from outbox.retry import MAX_IN_DOUBT, MAX_IN_DOUBT_IN_OUTAGE
from tests.daemon_helpers import claim_of, claimed_row, row_sender

PHONE = "1122334455"
URL = f"http://127.0.0.1:9/v23.0/{PHONE}/messages"


async def deliver_in_an_outage(database_url: str, in_doubt: int, **answer: object) -> str:
    """Send one row that has been in doubt `in_doubt` times, while its sender is in an outage
    of timeouts, with `answer` from the API to the message (its probe's lookup is answered);
    the row's status and reason afterwards."""
    conn = await asyncpg.connect(database_url)
    pool = Pool(database_url, size=2)
    try:
        row_id, token = await claimed_row(conn, in_doubt)
        claim = claim_of(row_id, token, in_doubt=in_doubt, probe=True)
        senders = Senders(PHONE, 60)
        for n in range(5):  # five timeouts to three recipients: the sender is in an outage
            senders.gate(PHONE).failed(1000 + n, f"92300000000{n % 3}", "timed out")
        settings = outbox.Settings(database_url=database_url, quick_retries=1, request_timeout=5)
        async with aiohttp.ClientSession() as http:
            recorder = PartRecorder(pool, 30, on_idle=lambda: None)
            recorder.start()
            rows = await row_sender(settings, pool, http, recorder, PHONE, senders)
            with aioresponses() as mocked:
                mocked.get(f"http://127.0.0.1:9/v23.0/{PHONE}?fields=id", payload={"id": PHONE})
                mocked.post(URL, **answer)
                await rows.deliver(claim)
            await recorder.close(5)
        state = await conn.fetchrow(
            "SELECT status, last_error FROM outbox_messages WHERE id = $1", row_id
        )
        return f"{state['status']}: {state['last_error']}"
    finally:
        await pool.close(5)
        await conn.close()


async def test_a_timeout_in_an_outage_waits_with_the_other_rows_past_the_usual_limit(
    database_url: str,
) -> None:
    outcome = await deliver_in_an_outage(database_url, MAX_IN_DOUBT, exception=TimeoutError())
    assert outcome.startswith("pending: waiting out an API outage")


async def test_a_timeout_in_an_outage_fails_the_row_at_the_outage_limit(
    database_url: str,
) -> None:
    outcome = await deliver_in_an_outage(
        database_url, MAX_IN_DOUBT_IN_OUTAGE - 1, exception=TimeoutError()
    )
    assert outcome.startswith(f"failed: in doubt after {MAX_IN_DOUBT_IN_OUTAGE} sends")


@pytest.mark.parametrize("body", ['{"messaging_product": "whatsapp"}', "{}"])
async def test_a_2xx_without_an_id_in_an_outage_fails_at_the_usual_limit(
    database_url: str, body: str
) -> None:
    outcome = await deliver_in_an_outage(database_url, MAX_IN_DOUBT - 1, status=200, body=body)
    assert outcome.startswith(f"failed: in doubt after {MAX_IN_DOUBT} sends")
