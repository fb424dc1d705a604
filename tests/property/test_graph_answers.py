"""Any answer the Graph API can give (status, headers, body bytes) leaves the row in a valid
state: sent with its id, failed with a clean reason, or pending with a bounded, clean retry. Never
`sending`, never a wait past the hour cap, never a reason that cannot be stored or printed."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp
import asyncpg
import pytest
from aioresponses import aioresponses
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import outbox
from outbox.delivery.claim import Claim
from outbox.delivery.record import PartRecorder
from outbox.pool import Pool
from tests.daemon_helpers import claim_of, row_sender

URL = "http://127.0.0.1:9/v23.0/1122334455/messages"
CODES = [0, 1, 2, 4, 10, 33, 100, 190, 368, 130429, 131000, 131026, 131047, 131056, 132015]


def graph_error(code: int, subcode: int | None, message: str) -> bytes:
    error: dict[str, Any] = {"code": code, "message": message, "fbtrace_id": "A1"}
    if subcode is not None:
        error["error_subcode"] = subcode
    return json.dumps({"error": error}).encode()


def success(wamid: object) -> bytes:
    return json.dumps({"messaging_product": "whatsapp", "messages": [{"id": wamid}]}).encode()


bodies = st.one_of(
    st.binary(max_size=300),
    st.builds(
        graph_error,
        st.one_of(st.sampled_from(CODES), st.integers(-(2**40), 2**40)),
        st.none() | st.integers(0, 3000),
        st.text(max_size=80),
    ),
    st.builds(success, st.text(max_size=40) | st.integers() | st.none()),
    st.just(b'{"messages": []}'),
)
retry_after = st.none() | st.sampled_from(
    ["inf", "nan", "-1", "1e308", "86400", "0.5", "Wed, 21 Oct 2015 07:28:00 GMT", "soon", "\x00"]
)
answers = st.tuples(
    st.sampled_from([200, 400, 401, 403, 404, 429, 500, 502, 503]), retry_after, bodies
)


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(answer=answers)
# Found by this test: a message of blanks failed the row with an empty reason.
@example(answer=(400, None, b'{"error":{"":0,"message":" ","":""}}'))
def test_any_graph_answer_leaves_the_row_in_a_valid_state(
    loop: asyncio.AbstractEventLoop, database_url: str, answer: tuple[int, str | None, bytes]
) -> None:
    loop.run_until_complete(asyncio.wait_for(_deliver_once(database_url, *answer), 30))


async def _deliver_once(database_url: str, status: int, header: str | None, body: bytes) -> None:
    conn = await asyncpg.connect(database_url)
    pool = Pool(database_url, size=2)
    try:
        row_id = await conn.fetchval(
            "INSERT INTO outbox_messages (recipient, message) VALUES ('923001234567', 'hi') "
            "RETURNING id"
        )
        claim = await _claim(conn, row_id)
        options = outbox.Settings(
            database_url=database_url, quick_retries=2, quick_retry_delay=0, request_timeout=5
        )
        headers = {"Retry-After": header} if header is not None else {}
        async with aiohttp.ClientSession() as http:
            recorder = PartRecorder(pool, 30, on_idle=lambda: None)
            recorder.start()
            rows = await row_sender(options, pool, http, recorder, "1122334455")
            with aioresponses() as mocked:
                mocked.post(URL, status=status, body=body, headers=headers, repeat=True)
                await rows.deliver(claim)
            await recorder.close(5)
        state = await conn.fetchrow(
            "SELECT status, last_error, message_id, attempts, in_doubt, locked_until, "
            "extract(epoch FROM available_at - now()) AS due_in FROM outbox_messages "
            "WHERE id = $1",
            row_id,
        )
        _check(dict(state))
        await conn.execute("DELETE FROM outbox_messages WHERE id = $1", row_id)
    finally:
        await pool.close(5)
        await conn.close()


async def _claim(conn: asyncpg.Connection, row_id: int) -> Claim:
    token = uuid.uuid4()
    await conn.execute(
        "UPDATE outbox_messages SET status = 'sending', attempts = 1, lease_token = $2, "
        "locked_until = now() + interval '30 seconds' WHERE id = $1",
        row_id,
        token,
    )
    return claim_of(row_id, token)


def _check(state: dict[str, Any]) -> None:
    assert state["status"] in ("sent", "failed", "pending"), state
    assert state["locked_until"] is None, state
    if state["status"] == "sent":
        assert state["message_id"], state
        assert state["last_error"] is None, state
        return
    reason = state["last_error"]
    if state["status"] == "pending" and reason is None:
        assert state["attempts"] == 0, state  # released by a pause, its attempt given back
        return
    assert reason, state
    assert reason.isprintable(), state
    assert len(reason) <= 500, state
    if state["status"] == "pending":
        assert state["due_in"] <= 3600 + 1, state
    assert state["in_doubt"] <= 1, state
