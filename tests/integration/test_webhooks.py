"""The webhook receiver: Meta's verification, signed POSTs, statuses applied to rows, inbound
messages, raw bodies kept, and the `outbox webhook` command."""

from __future__ import annotations

import asyncio
import copy
import io
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.request import urlopen

import pytest
import sqlalchemy as sa
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.ext.asyncio import AsyncEngine

import outbox
from outbox import store
from outbox.callbacks import callback_data
from outbox.connections import fetch_all
from outbox.webhooks import create_app
from outbox.webhooks.app import MAX_BODY
from outbox.webhooks.payload import sign
from tests.unit.test_webhook_payload import example

SECRET = "test-app-secret"
VERIFY_TOKEN = "test-verify-token"
RECIPIENT = "972987654321"  # the examples' recipient
T0 = 1698266945  # the delivered example's timestamp


def example_status(
    name: str = "status_webhook_delivered.json",
    *,
    wamid: str,
    status: str | None = None,
    timestamp: int | None = None,
    callback: str | None = None,
) -> dict[str, Any]:
    """The example's status entry, about our wamid and recipient."""
    entry: dict[str, Any] = copy.deepcopy(
        example(name)["entry"][0]["changes"][0]["value"]["statuses"][0]
    )
    entry.update(id=wamid, recipient_id=RECIPIENT)
    if status is not None:
        entry["status"] = status
    if timestamp is not None:
        entry["timestamp"] = str(timestamp)
    if callback is not None:
        entry["biz_opaque_callback_data"] = callback
    return entry


def envelope(*statuses: dict[str, Any], messages: list[dict[str, Any]] | None = None) -> bytes:
    """The delivered example's envelope carrying `statuses` (and inbound `messages`)."""
    data = example("status_webhook_delivered.json")
    value = data["entry"][0]["changes"][0]["value"]
    value["statuses"] = list(statuses)
    if messages:
        value["messages"] = messages
    return json.dumps(data).encode()


def at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> outbox.Settings:
    return outbox.Settings(
        database_url=database_url,
        app_secret=SECRET,
        webhook_verify_token=VERIFY_TOKEN,
        home=tmp_path,
    )


@pytest.fixture
async def installation(engine: AsyncEngine) -> str:
    """This database's installation id, as in the callback data of the daemon's sends."""
    return str(await scalar(engine, "SELECT id FROM outbox_installation"))


@pytest.fixture
async def client(settings: outbox.Settings) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(create_app(settings))) as client:
        yield client


async def post(
    client: TestClient[Any, Any], engine: AsyncEngine, body: bytes, *, applied: bool = True
) -> int:
    """POST a correctly signed body; the answer's status. With `applied`, a body answered 200
    is then waited for until the background task has applied it (its newest stored copy)."""
    answer = await client.post(
        "/webhook",
        data=io.BytesIO(body),
        headers={"X-Hub-Signature-256": sign(SECRET, body), "Content-Type": "application/json"},
    )
    if applied and answer.status == 200:

        async def body_applied() -> bool:
            return bool(
                await scalar(
                    engine,
                    "SELECT applied_at IS NOT NULL FROM outbox_webhooks WHERE body = :body "
                    "ORDER BY id DESC LIMIT 1",
                    body=body,
                )
            )

        await eventually(body_applied)
    return answer.status


async def sent_row(engine: AsyncEngine, *wamids: str, media: int = 0) -> int:
    """A row whose parts were all accepted as `wamids` (media first, then the text)."""
    row_id = await claimed_row(engine, media=media)
    for index, wamid in enumerate(wamids):
        await record_part(engine, row_id, index, wamid, final=index == len(wamids) - 1)
    return row_id


async def claimed_row(engine: AsyncEngine, *, media: int = 0) -> int:
    """A row claimed by a daemon (sending, with a lease token) and nothing accepted yet."""
    urls = [f"https://cdn.example.com/{n}.jpg" for n in range(media)]
    async with engine.begin() as conn:
        row_id = await outbox.enqueue(
            conn, RECIPIENT, "Your booking is confirmed", media_urls={"images": urls}
        )
        await conn.execute(
            sa.text(
                "UPDATE outbox_messages SET status = 'sending', attempts = 1, "
                "lease_token = :token, locked_until = now() + interval '30 seconds' "
                "WHERE id = :id"
            ),
            {"id": row_id, "token": uuid.uuid4()},
        )
    return row_id


async def record_part(
    engine: AsyncEngine, row_id: int, index: int, wamid: str, *, final: bool
) -> int:
    """What the daemon's RECORD_PARTS does for an accepted part (its wamid made findable too:
    the last part's by the row's message_id, an earlier one's in outbox_part_wamids); the rows
    it changed."""
    async with engine.begin() as conn:
        result = await conn.execute(
            sa.text(
                """
                WITH recorded AS (
                UPDATE outbox_messages m
                SET parts = m.parts || jsonb_build_array(jsonb_build_object(
                        'wamid', CAST(:wamid AS text), 'status', 'sent', 'sent_at', now())),
                    status = CASE WHEN :final THEN 'sent' ELSE m.status END,
                    message_id = CASE WHEN :final THEN CAST(:wamid AS text)
                                      ELSE m.message_id END,
                    sent_at = CASE WHEN :final THEN now() ELSE m.sent_at END,
                    locked_until = CASE WHEN :final THEN NULL ELSE m.locked_until END,
                    lease_token = CASE WHEN :final THEN NULL ELSE m.lease_token END,
                    updated_at = now()
                WHERE m.id = :id AND m.status = 'sending' AND m.lease_token IS NOT NULL
                  AND jsonb_array_length(m.parts) = :index
                RETURNING m.id),
                findable AS (
                INSERT INTO outbox_part_wamids (wamid, message_id, part)
                SELECT CAST(:wamid AS text), id, :index FROM recorded WHERE NOT :final)
                SELECT count(*) FROM recorded
                """
            ),
            {"id": row_id, "index": index, "wamid": wamid, "final": final},
        )
        return int(result.scalar_one())


async def row(engine: AsyncEngine, row_id: int) -> dict[str, Any]:
    async with engine.connect() as conn:
        result = await conn.execute(
            sa.text(
                "SELECT status, parts, sent_at, delivered_at, read_at, error_code, last_error, "
                "lease_token, locked_until, updated_at FROM outbox_messages WHERE id = :id"
            ),
            {"id": row_id},
        )
        return dict(result.mappings().one())


async def scalar(engine: AsyncEngine, statement: str, **params: Any) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(sa.text(statement), params)).scalar()


async def stored_counts(engine: AsyncEngine) -> tuple[int, int, int]:
    """Bodies, statuses and inbound messages stored."""
    return (
        await scalar(engine, "SELECT count(*) FROM outbox_webhooks"),
        await scalar(engine, "SELECT count(*) FROM outbox_statuses"),
        await scalar(engine, "SELECT count(*) FROM outbox_inbound"),
    )


async def eventually(check: Any, within: float = 10.0) -> None:
    """Wait until `await check()` is true (the background task's work)."""
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "the background task did not get there in time"
        await asyncio.sleep(0.1)


# --- requests that are refused ---------------------------------------------------------------


async def test_a_post_without_signature_is_refused_with_401_and_nothing_stored(
    client: TestClient[Any, Any], engine: AsyncEngine
) -> None:
    answer = await client.post("/webhook", data=envelope(example_status(wamid="wamid.A")))
    assert answer.status == 401
    assert await stored_counts(engine) == (0, 0, 0)


async def test_a_post_with_a_wrong_signature_is_refused_with_403_and_nothing_stored(
    client: TestClient[Any, Any], engine: AsyncEngine
) -> None:
    row_id = await sent_row(engine, "wamid.A")
    body = envelope(example_status(wamid="wamid.A"))
    answer = await client.post(
        "/webhook", data=body, headers={"X-Hub-Signature-256": sign("another secret", body)}
    )
    assert answer.status == 403
    assert await stored_counts(engine) == (0, 0, 0)
    assert (await row(engine, row_id))["status"] == "sent"


async def test_a_signature_over_other_bytes_is_refused_with_403(
    client: TestClient[Any, Any], engine: AsyncEngine
) -> None:
    body = envelope(example_status(wamid="wamid.A"))
    reserialized = json.dumps(json.loads(body), indent=1).encode()
    answer = await client.post(
        "/webhook", data=body, headers={"X-Hub-Signature-256": sign(SECRET, reserialized)}
    )
    assert answer.status == 403


async def test_a_signed_body_that_is_not_an_envelope_is_refused_with_400(
    client: TestClient[Any, Any], engine: AsyncEngine
) -> None:
    for body in (b"not json", b'{"object": "page", "entry": []}', b"[1, 2]", b"\xff\xfe"):
        assert await post(client, engine, body) == 400
    assert await stored_counts(engine) == (0, 0, 0)


async def test_a_body_over_one_mebibyte_is_refused_with_413(
    client: TestClient[Any, Any], engine: AsyncEngine
) -> None:
    body = b" " * MAX_BODY + envelope(example_status(wamid="wamid.A"))
    assert await post(client, engine, body) == 413
    assert await stored_counts(engine) == (0, 0, 0)


async def test_a_chunked_body_over_one_mebibyte_is_refused_with_413(
    client: TestClient[Any, Any], engine: AsyncEngine
) -> None:
    body = b" " * MAX_BODY + envelope(example_status(wamid="wamid.A"))

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 65536):
            yield body[start : start + 65536]

    answer = await client.post(
        "/webhook", data=chunks(), headers={"X-Hub-Signature-256": sign(SECRET, body)}
    )
    assert answer.status == 413
    assert await stored_counts(engine) == (0, 0, 0)


# --- verification ----------------------------------------------------------------------------


async def test_verification_with_the_right_token_answers_the_challenge(
    client: TestClient[Any, Any],
) -> None:
    answer = await client.get(
        "/webhook",
        params={
            "hub.mode": "subscribe",
            "hub.challenge": "1158201444",
            "hub.verify_token": VERIFY_TOKEN,
        },
    )
    assert answer.status == 200
    assert answer.content_type == "text/plain"
    assert await answer.text() == "1158201444"


async def test_verification_with_a_wrong_token_is_refused_with_403(
    client: TestClient[Any, Any],
) -> None:
    answer = await client.get(
        "/webhook",
        params={"hub.mode": "subscribe", "hub.challenge": "1", "hub.verify_token": "guess"},
    )
    assert answer.status == 403
    assert "1" not in await answer.text()


async def test_verification_without_a_challenge_is_refused_with_403(
    client: TestClient[Any, Any],
) -> None:
    answer = await client.get(
        "/webhook", params={"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN}
    )
    assert answer.status == 403


async def test_verification_without_subscribe_mode_is_refused_with_403(
    client: TestClient[Any, Any],
) -> None:
    answer = await client.get(
        "/webhook",
        params={"hub.mode": "unsubscribe", "hub.challenge": "1", "hub.verify_token": VERIFY_TOKEN},
    )
    assert answer.status == 403


# --- statuses applied to rows ----------------------------------------------------------------


async def test_statuses_move_a_row_from_sent_to_delivered_to_read_with_their_timestamps(
    client: TestClient[Any, Any], engine: AsyncEngine
) -> None:
    row_id = await sent_row(engine, "wamid.A")
    sent_at = (await row(engine, row_id))["sent_at"]

    assert (
        await post(client, engine, envelope(example_status(wamid="wamid.A", status="sent"))) == 200
    )
    assert (await row(engine, row_id))["status"] == "sent"

    assert await post(client, engine, envelope(example_status(wamid="wamid.A"))) == 200
    delivered = await row(engine, row_id)
    assert (delivered["status"], delivered["delivered_at"], delivered["read_at"]) == (
        "delivered",
        at(T0),
        None,
    )

    read = example_status(wamid="wamid.A", status="read", timestamp=T0 + 60)
    assert await post(client, engine, envelope(read)) == 200
    final = await row(engine, row_id)
    assert (final["status"], final["delivered_at"], final["read_at"]) == (
        "read",
        at(T0),
        at(T0 + 60),
    )
    assert final["sent_at"] == sent_at
    assert final["parts"][0]["status"] == "read"
    assert final["parts"][0]["delivered_at"].startswith("2023-10-25T")


async def test_a_failed_status_fails_the_row_with_its_code_and_title(
    client: TestClient[Any, Any], engine: AsyncEngine
) -> None:
    row_id = await sent_row(engine, "wamid.A")
    failed = example_status("status_webhook_failed_130472.json", wamid="wamid.A")
    assert await post(client, engine, envelope(failed)) == 200
    result = await row(engine, row_id)
    assert result["status"] == "failed"
    assert result["error_code"] == 130472
    assert result["last_error"] == "(#130472) User's number is part of an experiment"
    assert result["parts"][0]["status"] == "failed"
    assert result["parts"][0]["error_code"] == 130472


async def test_a_failed_status_after_read_is_ignored(
    client: TestClient[Any, Any], engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    row_id = await sent_row(engine, "wamid.A")
    await post(client, engine, envelope(example_status(wamid="wamid.A", status="read")))
    caplog.set_level(logging.INFO, logger="outbox.webhooks")
    failed = example_status("status_webhook_failed_130472.json", wamid="wamid.A")
    assert await post(client, engine, envelope(failed)) == 200
    result = await row(engine, row_id)
    assert (result["status"], result["error_code"], result["last_error"]) == ("read", None, None)
    assert result["parts"][0]["status"] == "read"
    assert f"message {row_id}: failed status for part 0 ignored" in caplog.text


async def test_a_failed_status_for_a_row_still_sending_fails_it_and_keeps_its_next_part(
    client: TestClient[Any, Any], engine: AsyncEngine, installation: str
) -> None:
    row_id = await claimed_row(engine, media=1)
    await record_part(engine, row_id, 0, "wamid.IMG", final=False)
    failed = example_status(
        "status_webhook_failed_130472.json",
        wamid="wamid.IMG",
        callback=callback_data(installation, row_id, 0),
    )
    assert await post(client, engine, envelope(failed)) == 200
    result = await row(engine, row_id)
    assert (result["status"], result["error_code"]) == ("failed", 130472)
    # The text Meta accepted meanwhile is recorded (never to be sent again); the row stays failed.
    async with engine.begin() as conn:
        recorded = await fetch_all(
            conn,
            store.RECORD_PARTS,
            {
                "ids": [row_id],
                "tokens": [result["lease_token"]],
                "indexes": [1],
                "wamids": ["wamid.TEXT"],
                "finals": [True],
                "lease": 30,
                "pair_interval": 6,
                "default_sender": "1234567890",
            },
        )
    assert len(recorded) == 1
    result = await row(engine, row_id)
    assert (result["status"], result["error_code"], len(result["parts"])) == ("failed", 130472, 2)


async def test_a_failed_status_for_a_row_waiting_for_a_retry_fails_it_at_once(
    client: TestClient[Any, Any], engine: AsyncEngine, installation: str
) -> None:
    """Its image was accepted and then could not be delivered, while its text waits for a retry:
    the row sends nothing more and reads failed, with Meta's reason."""
    row_id = await claimed_row(engine, media=1)
    await record_part(engine, row_id, 0, "wamid.IMG", final=False)
    async with engine.begin() as conn:  # the text met a transient error: back to pending
        await conn.execute(
            sa.text(
                "UPDATE outbox_messages SET status = 'pending', last_error = 'timeout', "
                "lease_token = NULL, locked_until = NULL WHERE id = :id"
            ),
            {"id": row_id},
        )
    failed = example_status(
        "status_webhook_failed_130472.json",
        wamid="wamid.IMG",
        callback=callback_data(installation, row_id, 0),
    )
    assert await post(client, engine, envelope(failed)) == 200
    result = await row(engine, row_id)
    assert (result["status"], result["error_code"], result["last_error"]) == (
        "failed",
        130472,
        "(#130472) User's number is part of an experiment",
    )
    assert [part["status"] for part in result["parts"]] == ["failed"]


async def test_a_status_naming_a_row_that_does_not_exist_is_stored_and_set_aside(
    client: TestClient[Any, Any], engine: AsyncEngine, installation: str
) -> None:
    gone = example_status(wamid="wamid.A", callback=callback_data(installation, 999999, 0))
    assert await post(client, engine, envelope(gone)) == 200
    assert await scalar(engine, "SELECT applied_at IS NOT NULL FROM outbox_statuses")
    assert await scalar(engine, "SELECT count(*) FROM outbox_events") == 0


async def test_concurrent_statuses_for_the_parts_of_one_row_are_all_applied(
    client: TestClient[Any, Any], engine: AsyncEngine, installation: str
) -> None:
    wamids = [f"wamid.{n}" for n in range(5)]
    row_id = await sent_row(engine, *wamids, media=4)
    bodies = [
        envelope(
            example_status(
                wamid=wamid,
                status="read",
                timestamp=T0 + n,
                callback=callback_data(installation, row_id, n),
            )
        )
        for n, wamid in enumerate(wamids)
    ]
    assert await asyncio.gather(*(post(client, engine, body) for body in bodies)) == [200] * 5
    result = await row(engine, row_id)
    assert [part["status"] for part in result["parts"]] == ["read"] * 5
    assert (result["status"], result["read_at"]) == ("read", at(T0 + 4))


async def test_a_replayed_status_changes_nothing(
    client: TestClient[Any, Any], engine: AsyncEngine
) -> None:
    row_id = await sent_row(engine, "wamid.A")
    body = envelope(example_status(wamid="wamid.A"))
    assert await post(client, engine, body) == 200
    before = await row(engine, row_id)
    events = await scalar(engine, "SELECT count(*) FROM outbox_events")
    assert await post(client, engine, body) == 200
    assert await row(engine, row_id) == before
    assert await scalar(engine, "SELECT count(*) FROM outbox_events") == events
    assert await stored_counts(engine) == (2, 1, 0)


async def test_a_delivered_arriving_after_read_does_not_move_the_row_back(
    client: TestClient[Any, Any], engine: AsyncEngine
) -> None:
    row_id = await sent_row(engine, "wamid.A")
    read = example_status(wamid="wamid.A", status="read", timestamp=T0 + 60)
    assert await post(client, engine, envelope(read)) == 200
    assert await post(client, engine, envelope(example_status(wamid="wamid.A"))) == 200
    result = await row(engine, row_id)
    assert (result["status"], result["read_at"]) == ("read", at(T0 + 60))
    assert result["parts"][0]["status"] == "read"
    assert result["delivered_at"] == at(T0)  # the real delivery time, once known


async def test_a_sent_arriving_after_delivered_does_not_move_the_row_back(
    client: TestClient[Any, Any], engine: AsyncEngine
) -> None:
    row_id = await sent_row(engine, "wamid.A")
    assert await post(client, engine, envelope(example_status(wamid="wamid.A"))) == 200
    sent = example_status(wamid="wamid.A", status="sent", timestamp=T0 - 5)
    assert await post(client, engine, envelope(sent)) == 200
    result = await row(engine, row_id)
    assert (result["status"], result["delivered_at"]) == ("delivered", at(T0))
    assert result["parts"][0]["status"] == "delivered"


async def test_read_implies_delivered_at(client: TestClient[Any, Any], engine: AsyncEngine) -> None:
    row_id = await sent_row(engine, "wamid.A")
    read = example_status(wamid="wamid.A", status="read", timestamp=T0 + 60)
    assert await post(client, engine, envelope(read)) == 200
    result = await row(engine, row_id)
    assert (result["status"], result["delivered_at"], result["read_at"]) == (
        "read",
        at(T0 + 60),
        at(T0 + 60),
    )


async def test_a_multi_part_row_shows_its_least_advanced_part(
    client: TestClient[Any, Any], engine: AsyncEngine, installation: str
) -> None:
    row_id = await sent_row(engine, "wamid.IMG", "wamid.TEXT", media=1)
    read_text = example_status(wamid="wamid.TEXT", status="read", timestamp=T0 + 60)
    assert await post(client, engine, envelope(read_text)) == 200
    assert (await row(engine, row_id))["status"] == "sent"

    delivered_image = example_status(
        wamid="wamid.IMG", timestamp=T0 + 30, callback=callback_data(installation, row_id, 0)
    )
    assert await post(client, engine, envelope(delivered_image)) == 200
    result = await row(engine, row_id)
    assert [part["status"] for part in result["parts"]] == ["delivered", "read"]
    # delivered as a whole when its last part was: the text, read (so delivered) at T0 + 60
    assert (result["status"], result["delivered_at"], result["read_at"]) == (
        "delivered",
        at(T0 + 60),
        None,
    )

    read_image = example_status(
        wamid="wamid.IMG",
        status="read",
        timestamp=T0 + 90,
        callback=callback_data(installation, row_id, 0),
    )
    assert await post(client, engine, envelope(read_image)) == 200
    result = await row(engine, row_id)
    assert (result["status"], result["delivered_at"], result["read_at"]) == (
        "read",
        at(T0 + 60),
        at(T0 + 90),
    )


async def test_a_status_is_matched_by_its_callback_data(
    client: TestClient[Any, Any], engine: AsyncEngine, installation: str
) -> None:
    row_id = await sent_row(engine, "wamid.IMG", "wamid.TEXT", media=1)
    image = example_status(wamid="wamid.IMG", callback=callback_data(installation, row_id, 0))
    assert await post(client, engine, envelope(image)) == 200
    assert [p["status"] for p in (await row(engine, row_id))["parts"]] == ["delivered", "sent"]
    assert (
        await scalar(
            engine,
            "SELECT message_id || ':' || part FROM outbox_statuses WHERE wamid = 'wamid.IMG'",
        )
        == f"{row_id}:0"
    )


async def test_a_status_without_callback_data_is_matched_by_message_id_to_the_last_part(
    client: TestClient[Any, Any], engine: AsyncEngine
) -> None:
    row_id = await sent_row(engine, "wamid.IMG", "wamid.TEXT", media=1)
    assert await post(client, engine, envelope(example_status(wamid="wamid.TEXT"))) == 200
    assert [p["status"] for p in (await row(engine, row_id))["parts"]] == ["sent", "delivered"]
    assert (
        await scalar(
            engine,
            "SELECT message_id || ':' || part FROM outbox_statuses WHERE wamid = 'wamid.TEXT'",
        )
        == f"{row_id}:1"
    )


async def test_a_status_for_another_copy_of_a_resent_part_is_stored_but_not_applied(
    client: TestClient[Any, Any], engine: AsyncEngine, installation: str
) -> None:
    row_id = await sent_row(engine, "wamid.SECOND-COPY")
    before = await row(engine, row_id)
    first_copy = example_status(
        wamid="wamid.FIRST-COPY", callback=callback_data(installation, row_id, 0)
    )
    assert await post(client, engine, envelope(first_copy)) == 200
    assert await row(engine, row_id) == before
    assert await scalar(
        engine,
        "SELECT applied_at IS NOT NULL FROM outbox_statuses WHERE wamid = 'wamid.FIRST-COPY'",
    )
    assert await scalar(engine, "SELECT count(*) FROM outbox_events") == 0


async def test_a_status_that_arrives_before_its_part_is_recorded_is_applied_once_recorded(
    client: TestClient[Any, Any], engine: AsyncEngine, installation: str
) -> None:
    row_id = await claimed_row(engine)
    early = example_status(wamid="wamid.A", callback=callback_data(installation, row_id, 0))
    assert await post(client, engine, envelope(early)) == 200
    assert await scalar(engine, "SELECT applied_at FROM outbox_statuses") is None

    assert await record_part(engine, row_id, 0, "wamid.A", final=True) == 1

    async def delivered() -> bool:
        return (await row(engine, row_id))["status"] == "delivered"

    await eventually(delivered)
    assert await scalar(engine, "SELECT applied_at IS NOT NULL FROM outbox_statuses")


async def test_a_status_for_a_wamid_no_row_has_yet_is_applied_once_one_has_it(
    client: TestClient[Any, Any], engine: AsyncEngine
) -> None:
    row_id = await claimed_row(engine)
    assert await post(client, engine, envelope(example_status(wamid="wamid.A"))) == 200
    assert await scalar(engine, "SELECT applied_at FROM outbox_statuses") is None

    await record_part(engine, row_id, 0, "wamid.A", final=True)

    async def delivered() -> bool:
        return (await row(engine, row_id))["status"] == "delivered"

    await eventually(delivered)


async def test_one_post_with_several_entries_changes_and_statuses_applies_them_all(
    client: TestClient[Any, Any], engine: AsyncEngine
) -> None:
    first = await sent_row(engine, "wamid.1")
    second = await sent_row(engine, "wamid.2")
    third = await sent_row(engine, "wamid.3")
    data = json.loads(envelope(example_status(wamid="wamid.1", status="sent")))
    change = data["entry"][0]["changes"][0]
    more = copy.deepcopy(change)
    more["value"]["statuses"] = [
        example_status(wamid="wamid.1", timestamp=T0 + 1),
        example_status(wamid="wamid.2", status="read", timestamp=T0 + 2),
    ]
    other_entry = copy.deepcopy(data["entry"][0])
    other_entry["changes"][0]["value"]["statuses"] = [
        example_status("status_webhook_failed_130472.json", wamid="wamid.3")
    ]
    data["entry"][0]["changes"].append(more)
    data["entry"].append(other_entry)
    assert await post(client, engine, json.dumps(data).encode()) == 200
    assert [(await row(engine, r))["status"] for r in (first, second, third)] == [
        "delivered",
        "read",
        "failed",
    ]
    assert await scalar(engine, "SELECT count(*) FROM outbox_events") == 4


async def test_applied_statuses_are_appended_to_the_history(
    client: TestClient[Any, Any], engine: AsyncEngine
) -> None:
    row_id = await sent_row(engine, "wamid.A")
    await post(client, engine, envelope(example_status(wamid="wamid.A")))
    await post(
        client,
        engine,
        envelope(example_status("status_webhook_failed_130472.json", wamid="wamid.A")),
    )
    async with engine.connect() as conn:
        events = (
            await conn.execute(
                sa.text(
                    "SELECT message_id, part, kind, error_code, detail, at FROM outbox_events "
                    "ORDER BY id"
                )
            )
        ).all()
    assert [tuple(event) for event in events] == [
        (row_id, 0, "status:delivered", None, None, at(T0)),
        (
            row_id,
            0,
            "status:failed",
            130472,
            "User's number is part of an experiment",
            at(1689380458),
        ),
    ]


async def test_inbound_messages_are_stored_once(
    client: TestClient[Any, Any], engine: AsyncEngine
) -> None:
    message = {
        "from": RECIPIENT,
        "id": "wamid.INBOUND",
        "timestamp": str(T0),
        "type": "text",
        "text": {"body": "Can I check in early?"},
    }
    body = envelope(messages=[message])
    assert await post(client, engine, body) == 200
    assert await post(client, engine, body) == 200
    async with engine.connect() as conn:
        stored = (
            await conn.execute(
                sa.text("SELECT wamid, phone_number_id, customer, type, at FROM outbox_inbound")
            )
        ).all()
    assert [tuple(r) for r in stored] == [
        ("wamid.INBOUND", "1122334455667", RECIPIENT, "text", at(T0))
    ]


# --- raw bodies and the background task --------------------------------------------------------


async def refuse_statuses_for(engine: AsyncEngine, pattern: str) -> None:
    """Make the database refuse storing statuses whose wamid matches `pattern` (LIKE)."""
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                f"""
                CREATE OR REPLACE FUNCTION refuse_status() RETURNS trigger AS $$
                BEGIN
                    IF NEW.wamid LIKE '{pattern}' THEN
                        RAISE EXCEPTION 'refused by the test';
                    END IF;
                    RETURN NEW;
                END $$ LANGUAGE plpgsql
                """
            )
        )
        await conn.execute(sa.text("DROP TRIGGER IF EXISTS refuse_status ON outbox_statuses"))
        await conn.execute(
            sa.text(
                "CREATE TRIGGER refuse_status BEFORE INSERT ON outbox_statuses "
                "FOR EACH ROW EXECUTE FUNCTION refuse_status()"
            )
        )


async def tried(caplog: pytest.LogCaptureFixture, times: int = 1) -> None:
    """Wait until the background task has failed to apply bodies `times` times."""

    async def failed() -> bool:
        return len(re.findall(r"webhook \d+ could not be applied", caplog.text)) >= times

    await eventually(failed)


async def test_the_raw_body_is_stored_even_when_it_cannot_be_applied(
    client: TestClient[Any, Any], engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    row_id = await sent_row(engine, "wamid.A")
    await refuse_statuses_for(engine, "wamid.%")
    body = envelope(example_status(wamid="wamid.A"))
    assert await post(client, engine, body, applied=False) == 200
    await tried(caplog)
    async with engine.connect() as conn:
        stored = (await conn.execute(sa.text("SELECT body, applied_at FROM outbox_webhooks"))).all()
    assert [tuple(r) for r in stored] == [(body, None)]
    assert (await row(engine, row_id))["status"] == "sent"


async def test_a_stored_body_is_applied_later_by_the_background_task(
    client: TestClient[Any, Any], engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    row_id = await sent_row(engine, "wamid.A")
    await refuse_statuses_for(engine, "wamid.%")
    body = envelope(example_status(wamid="wamid.A"))
    assert await post(client, engine, body, applied=False) == 200
    await tried(caplog)
    await refuse_statuses_for(engine, "nothing")

    async def applied() -> bool:
        return (await row(engine, row_id))["status"] == "delivered"

    await eventually(applied)
    assert await scalar(engine, "SELECT applied_at IS NOT NULL FROM outbox_webhooks")


async def test_a_body_that_always_fails_does_not_hold_back_later_bodies(
    client: TestClient[Any, Any], engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    row_id = await sent_row(engine, "wamid.GOOD")
    await refuse_statuses_for(engine, "wamid.%")
    poison = envelope(example_status(wamid="wamid.POISON"))
    assert await post(client, engine, poison, applied=False) == 200
    good = envelope(example_status(wamid="wamid.GOOD"))
    assert await post(client, engine, good, applied=False) == 200
    await tried(caplog, times=2)
    await refuse_statuses_for(engine, "wamid.POISON")

    async def applied() -> bool:
        return (await row(engine, row_id))["status"] == "delivered"

    await eventually(applied)
    assert (
        await scalar(engine, "SELECT count(*) FROM outbox_webhooks WHERE applied_at IS NULL") == 1
    )


async def test_a_post_while_the_database_is_away_and_no_spool_is_answered_503(
    engine: AsyncEngine,
) -> None:
    settings = outbox.Settings(
        database_url="postgresql://postgres@127.0.0.1:1/outbox",
        app_secret=SECRET,
        webhook_verify_token=VERIFY_TOKEN,
    )
    async with TestClient(TestServer(create_app(settings, spool_dir=None))) as client:
        assert await post(client, engine, envelope(example_status(wamid="wamid.A"))) == 503


async def test_the_app_mounted_in_another_app_receives_webhooks(
    settings: outbox.Settings, engine: AsyncEngine
) -> None:
    row_id = await sent_row(engine, "wamid.A")
    parent = web.Application()
    parent.add_subapp("/meta", create_app(settings))
    async with TestClient(TestServer(parent)) as client:
        body = envelope(example_status(wamid="wamid.A"))
        answer = await client.post(
            "/meta/webhook", data=body, headers={"X-Hub-Signature-256": sign(SECRET, body)}
        )
        assert answer.status == 200

        async def delivered() -> bool:
            return (await row(engine, row_id))["status"] == "delivered"

        await eventually(delivered)


async def test_metrics_count_answers_and_statuses(
    client: TestClient[Any, Any], engine: AsyncEngine
) -> None:
    await post(client, engine, envelope(example_status(wamid="wamid.A")))
    await client.post("/webhook", data=b"{}")
    text = await (await client.get("/metrics")).text()
    assert 'outbox_webhook_requests_total{answer="200"} 1.0' in text
    assert 'outbox_webhook_requests_total{answer="401"} 1.0' in text
    assert 'outbox_webhook_statuses_total{outcome="waiting"} 1.0' in text


# --- retention ---------------------------------------------------------------------------------


async def test_prune_deletes_applied_bodies_and_statuses_past_retention(
    client: TestClient[Any, Any], engine: AsyncEngine
) -> None:
    await sent_row(engine, "wamid.A")
    await post(client, engine, envelope(example_status(wamid="wamid.A")))  # applied
    await post(client, engine, envelope(example_status(wamid="wamid.UNKNOWN")))  # waits for its row
    async with engine.begin() as conn:
        for table in ("outbox_webhooks", "outbox_statuses"):
            await conn.execute(
                sa.text(f"UPDATE {table} SET received_at = received_at - interval '2 days'")
            )
    async with engine.connect() as conn:
        await outbox.store.prune_finished(conn, timedelta(days=1))
    assert await stored_counts(engine) == (0, 1, 0)
    assert await scalar(engine, "SELECT wamid FROM outbox_statuses") == "wamid.UNKNOWN"


# --- configuration and the command -------------------------------------------------------------


def test_create_app_without_an_app_secret_names_the_variable(database_url: str) -> None:
    settings = outbox.Settings(database_url=database_url, webhook_verify_token=VERIFY_TOKEN)
    with pytest.raises(outbox.ConfigurationError, match=r"^META_APP_SECRET: required"):
        create_app(settings)


def test_create_app_without_a_verify_token_names_the_variable(database_url: str) -> None:
    settings = outbox.Settings(database_url=database_url, app_secret=SECRET)
    with pytest.raises(outbox.ConfigurationError, match=r"^META_WEBHOOK_VERIFY_TOKEN: required"):
        create_app(settings)


async def test_secrets_never_appear_in_answers_or_logs(
    client: TestClient[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    body = envelope(example_status(wamid="wamid.A"))
    texts = []
    for headers in ({}, {"X-Hub-Signature-256": sign("wrong", body)}):
        texts.append(await (await client.post("/webhook", data=body, headers=headers)).text())
    texts.append(await (await client.get("/webhook", params={"hub.verify_token": "x"})).text())
    texts.append(await (await client.get("/metrics")).text())
    texts.append(repr(create_app(outbox.Settings(app_secret=SECRET, webhook_verify_token="t1"))))
    for text in [*texts, caplog.text]:
        assert SECRET not in text
        assert VERIFY_TOKEN not in text


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cli_env(**env: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OUTBOX_", "META_"))}
    return {**clean, **env}


@pytest.fixture
def webhook_process(database_url: str) -> Iterator[tuple[subprocess.Popen[str], int]]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "outbox", "webhook", "--port", str(port)],
        env=cli_env(
            OUTBOX_DATABASE_URL=database_url,
            META_APP_SECRET=SECRET,
            META_WEBHOOK_VERIFY_TOKEN=VERIFY_TOKEN,
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    yield process, port
    if process.poll() is None:
        process.kill()
    process.communicate(timeout=20)  # closes the pipes


def test_outbox_webhook_answers_verification_and_exits_0_on_sigterm(
    webhook_process: tuple[subprocess.Popen[str], int],
) -> None:
    process, port = webhook_process
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line == f"webhook receiver listening on http://127.0.0.1:{port}/webhook\n"
    url = (
        f"http://127.0.0.1:{port}/webhook?hub.mode=subscribe&hub.challenge=1158201444"
        f"&hub.verify_token={VERIFY_TOKEN}"
    )
    with urlopen(url, timeout=10) as answer:
        assert (answer.status, answer.read()) == (200, b"1158201444")
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 0


def test_outbox_webhook_without_app_secret_is_a_one_line_error() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "outbox", "webhook"],
        env=cli_env(META_WEBHOOK_VERIFY_TOKEN=VERIFY_TOKEN),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 1
    assert shown.stderr.startswith("outbox: META_APP_SECRET: required by the webhook receiver")
    assert shown.stderr.count("\n") == 1
    assert shown.stdout == ""


async def test_the_receiver_answers_its_liveness_check(client: TestClient[Any, Any]) -> None:
    answer = await client.get("/healthz")
    assert (answer.status, await answer.text()) == (200, "ok\n")


def test_create_app_without_either_secret_names_both_at_once(database_url: str) -> None:
    settings = outbox.Settings(database_url=database_url)
    with pytest.raises(
        outbox.ConfigurationError,
        match=r"^META_APP_SECRET and META_WEBHOOK_VERIFY_TOKEN: required by the webhook receiver",
    ):
        create_app(settings)
