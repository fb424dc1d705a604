"""Media uploaded once (`--media-mode upload`): a file is fetched, checked, uploaded to the
simulator's `/{phone}/media` and sent by its id; the id is kept per sender for 29 days, found
again by link or by content, and uploaded anew when old or refused. A link that cannot be used
is its row's problem alone."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

import outbox
from outbox.delivery.daemon import Daemon
from outbox.simulator import Simulator
from tests.daemon_helpers import TOKEN

RECIPIENT = "+923001234567"


def _upload_settings(settings: outbox.Settings) -> outbox.Settings:
    return dataclasses.replace(settings, media_mode="upload", rate=5000.0, upload_rate=50.0)


def _file(simulator: Simulator, name: str, query: str = "") -> str:
    return f"{simulator.url}/_simulator/files/{name}{query}"  # type: ignore[attr-defined]


async def _enqueue(
    engine: AsyncEngine, url: str, kind: str = "document", count: int = 1
) -> list[int]:
    async with engine.begin() as conn:
        return [
            await outbox.enqueue(
                conn,
                f"+92300{1000000 + i:07d}" if count > 1 else RECIPIENT,
                media_urls=[{"type": kind, "url": url}],
            )
            for i in range(count)
        ]


async def _drain(settings: outbox.Settings) -> Daemon:
    daemon = Daemon(_upload_settings(settings), drain=True)
    assert await asyncio.wait_for(daemon.run(), 120) == 0
    return daemon


async def _rows(engine: AsyncEngine, ids: list[int]) -> list[tuple[str, str | None]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.text(
                "SELECT status, last_error FROM outbox_messages WHERE id = ANY(:ids) ORDER BY id"
            ),
            {"ids": ids},
        )
        return [(row[0], row[1]) for row in rows]


def _sent_ids(simulator: Simulator) -> list[str | None]:
    return [message["media_id"] for message in simulator.accepted]


async def test_one_file_to_a_thousand_recipients_is_uploaded_once_and_sent_by_its_id(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    await _enqueue(engine, _file(simulator, "menu.pdf"), count=1000)
    daemon = await _drain(settings)
    assert len(simulator.media.uploads) == 1
    uploads = daemon.metrics.media_uploads.labels(settings.phone_number_id)._value.get()
    assert uploads == 1
    (upload,) = simulator.media.uploads
    assert upload["mime"] == "application/pdf"
    assert _sent_ids(simulator) == [upload["id"]] * 1000
    assert all(message["link"] is None for message in simulator.accepted)


async def test_a_link_sent_again_is_not_fetched_again(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    await _enqueue(engine, _file(simulator, "menu.pdf"))
    await _drain(settings)
    await _enqueue(engine, _file(simulator, "menu.pdf"))
    await _drain(settings)
    assert simulator.media.fetches == {"menu.pdf": 1}
    assert len(simulator.media.uploads) == 1


async def test_the_same_bytes_at_a_new_link_are_not_uploaded_again(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    await _enqueue(engine, _file(simulator, "menu.pdf", "?sig=1"))
    await _drain(settings)
    await _enqueue(engine, _file(simulator, "menu.pdf", "?sig=2"))  # a fresh presigned link
    await _drain(settings)
    assert simulator.media.fetches == {"menu.pdf": 2}
    assert len(simulator.media.uploads) == 1
    assert len(set(_sent_ids(simulator))) == 1


async def _age_uploads(engine: AsyncEngine, days: int) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            sa.text("UPDATE outbox_media SET uploaded_at = now() - make_interval(days => :days)"),
            {"days": days},
        )


@pytest.mark.parametrize(("days", "uploads"), [(28, 1), (29, 2)], ids=["28-days", "29-days"])
async def test_an_id_is_used_for_28_days_and_uploaded_again_at_29(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator, days: int, uploads: int
) -> None:
    await _enqueue(engine, _file(simulator, "menu.pdf"))
    await _drain(settings)
    await _age_uploads(engine, days)
    await _enqueue(engine, _file(simulator, "menu.pdf"))
    await _drain(settings)
    assert len(simulator.media.uploads) == uploads
    first, last = simulator.media.uploads[0]["id"], simulator.media.uploads[-1]["id"]
    assert _sent_ids(simulator) == [first, last]


async def test_an_id_meta_refuses_is_uploaded_again_and_the_part_sent(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    await _enqueue(engine, _file(simulator, "menu.pdf"))
    await _drain(settings)
    simulator.media.expired.update(u["id"] for u in simulator.media.uploads)  # deleted at Meta
    ids = await _enqueue(engine, _file(simulator, "menu.pdf"))
    await _drain(settings)
    assert len(simulator.media.uploads) == 2
    assert _sent_ids(simulator)[-1] == simulator.media.uploads[1]["id"]
    assert await _rows(engine, ids) == [("sent", None)]


async def test_a_link_answering_404_fails_its_row_without_a_send_and_the_sender_goes_on(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    broken = await _enqueue(engine, _file(simulator, "gone.pdf", "?status=404"))
    fine = await _enqueue(engine, _file(simulator, "menu.pdf"))
    await _drain(settings)
    assert await _rows(engine, broken) == [("failed", "media part 1: the link answered HTTP 404")]
    assert (await _rows(engine, fine))[0][0] == "sent"
    assert simulator.requests == 1


async def test_a_link_whose_host_fails_is_tried_again_later_with_its_attempt_counted(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    ids = await _enqueue(engine, _file(simulator, "menu.pdf", "?status=503"))
    daemon = Daemon(dataclasses.replace(_upload_settings(settings), retry_delay=30.0))
    task = asyncio.create_task(daemon.run())
    async with engine.connect() as conn:
        for _ in range(200):
            row = (
                await conn.execute(
                    sa.text("SELECT attempts, last_error FROM outbox_messages WHERE id = :id"),
                    {"id": ids[0]},
                )
            ).one()
            await conn.commit()
            if row[1]:
                break
            await asyncio.sleep(0.05)
    daemon.stop()
    await asyncio.wait_for(task, 30)
    assert tuple(row) == (1, "media part 1: the link answered HTTP 503")
    assert simulator.requests == 0


async def test_a_file_of_the_wrong_type_fails_its_row_naming_the_type(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    ids = await _enqueue(engine, _file(simulator, "scan", "?type=image/png"), kind="document")
    await _drain(settings)
    ((status, error),) = await _rows(engine, ids)
    assert status == "failed"
    assert "the link serves image/png, which cannot be sent as document" in str(error)
    assert simulator.media.uploads == []


async def test_a_file_larger_than_meta_takes_fails_its_row_without_an_upload(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    ids = await _enqueue(engine, _file(simulator, "big.jpg", "?bytes=5300000"), kind="image")
    await _drain(settings)
    assert await _rows(engine, ids) == [
        ("failed", "media part 1: the file is larger than Meta's 5 MB for image")
    ]
    assert simulator.media.uploads == []


async def test_the_access_token_never_goes_to_the_link_host(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    await _enqueue(engine, _file(simulator, "menu.pdf"))
    await _drain(settings)
    assert simulator.media.fetches == {"menu.pdf": 1}
    assert simulator.media.authorized_fetches == 0


async def test_each_sender_uploads_its_own_copy(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    other = "109876543210"
    simulator.sender_scenario[other] = deque()
    async with engine.begin() as conn:
        for sender in (None, other):
            await outbox.enqueue(
                conn,
                RECIPIENT,
                media_urls=[{"type": "document", "url": _file(simulator, "menu.pdf")}],
                sender=sender,
            )
    await _drain(settings)
    assert sorted(u["sender"] for u in simulator.media.uploads) == sorted(
        [settings.phone_number_id or "", other]
    )


async def test_in_link_mode_meta_fetches_the_link(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    await _enqueue(engine, _file(simulator, "menu.pdf"))
    link_mode = dataclasses.replace(_upload_settings(settings), media_mode="link")
    assert await asyncio.wait_for(Daemon(link_mode, drain=True).run(), 60) == 0
    assert simulator.media.uploads == []
    assert [m["link"] for m in simulator.accepted] == [_file(simulator, "menu.pdf")]


async def test_the_upload_is_remembered_in_outbox_media(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    await _enqueue(engine, _file(simulator, "menu.pdf"))
    await _drain(settings)
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                sa.text("SELECT sender, media_id, mime_type, bytes FROM outbox_media")
            )
        ).one()
    (upload,) = simulator.media.uploads
    assert tuple(row) == (upload["sender"], upload["id"], "application/pdf", upload["bytes"])
    assert json.dumps(row[1])  # a plain string id


# --- A file is uploaded again once, however many rows find its id gone ------------------------


async def _many_at_once(settings: outbox.Settings) -> None:
    daemon = Daemon(dataclasses.replace(_upload_settings(settings), concurrency=64), drain=True)
    assert await asyncio.wait_for(daemon.run(), 120) == 0


async def test_an_id_meta_refuses_to_200_rows_at_once_is_fetched_and_uploaded_again_once(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    await _enqueue(engine, _file(simulator, "menu.pdf"))
    await _drain(settings)
    simulator.media.expired.update(u["id"] for u in simulator.media.uploads)  # gone at Meta
    ids = await _enqueue(engine, _file(simulator, "menu.pdf"), count=200)
    await _many_at_once(settings)
    assert await _rows(engine, ids) == [("sent", None)] * 200
    assert simulator.media.fetches == {"menu.pdf": 2}
    assert len(simulator.media.uploads) == 2


async def test_an_id_too_old_for_200_rows_at_once_is_fetched_and_uploaded_again_once(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    await _enqueue(engine, _file(simulator, "menu.pdf"))
    await _drain(settings)
    await _age_uploads(engine, 29)
    ids = await _enqueue(engine, _file(simulator, "menu.pdf"), count=200)
    await _many_at_once(settings)
    assert await _rows(engine, ids) == [("sent", None)] * 200
    assert simulator.media.fetches == {"menu.pdf": 2}
    assert len(simulator.media.uploads) == 2


# --- A link's id is its kind's: an image and a document at one link are apart ------------------


async def test_an_image_and_a_document_at_one_link_are_each_judged_as_their_kind(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    # No extension: only its type says what it is. Slow, so that both rows resolve it at once.
    pdf = _file(simulator, "scan", "?type=application/pdf&delay_ms=300")
    async with engine.begin() as conn:  # to two recipients, so that neither waits for the other
        image = [await outbox.enqueue(conn, RECIPIENT, media_urls=[{"type": "image", "url": pdf}])]
        document = [
            await outbox.enqueue(
                conn, "+923009876543", media_urls=[{"type": "document", "url": pdf}]
            )
        ]
    await _drain(settings)
    ((status, error),) = await _rows(engine, image)
    assert status == "failed"
    assert "the link serves application/pdf, which cannot be sent as image" in str(error)
    assert await _rows(engine, document) == [("sent", None)]
    assert simulator.requests == 1  # the image was never sent by the document's id


async def test_an_image_at_a_documents_link_leaves_the_documents_id_alone(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    pdf = _file(simulator, "scan", "?type=application/pdf")
    await _enqueue(engine, pdf, kind="document")
    await _drain(settings)
    image = await _enqueue(engine, pdf, kind="image")
    await _drain(settings)
    later = await _enqueue(engine, pdf, kind="document")
    await _drain(settings)
    ((status, error),) = await _rows(engine, image)
    assert status == "failed"
    assert "the link serves application/pdf, which cannot be sent as image" in str(error)
    assert await _rows(engine, later) == [("sent", None)]
    (upload,) = simulator.media.uploads  # the document's id was neither refused nor forgotten
    assert _sent_ids(simulator) == [upload["id"]] * 2


# --- An odd answer from the upload endpoint is the row's problem, never the sender's ---------

# What an attack got from POST /{phone}/media: a 200 without an id, a proxy's HTML page (which
# may echo the request's headers: the token must not reach the row's reason).
_ODD_UPLOADS = {
    "200-without-an-id": (
        (200, "{}", "application/json"),
        "media part 1: Meta answered the upload with HTTP 200 but no media id "
        "(gave up after 3 attempts)",
    ),
    "413-in-html": (
        (
            413,
            f"<html><body><h1>413 Request Entity Too Large</h1>{TOKEN}</body></html>",
            "text/html",
        ),
        "media part 1: Meta refused the upload: HTTP 413, the file is too large",
    ),
    # A 5xx for one file, its lookup of the phone number answered: the upload's, not an outage.
    "500-graph-error": (
        (500, '{"error": {"message": "internal", "code": 1}}', "application/json"),
        "media part 1: Meta could not take the upload: HTTP 500, (#1) internal "
        "(gave up after 3 attempts)",
    ),
    "502-in-html": (
        (502, f"<html><body>Bad Gateway {TOKEN}</body></html>", "text/html"),
        "media part 1: Meta answered the upload with HTTP 502 and no Graph error "
        "(gave up after 3 attempts)",
    ),
}


async def _until(check: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("answer", _ODD_UPLOADS, ids=list(_ODD_UPLOADS))
async def test_an_odd_upload_answer_fails_its_rows_with_a_clean_reason(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator, answer: str
) -> None:
    (status, body, content_type), reason = _ODD_UPLOADS[answer]
    simulator.media.upload_answer = (status, body, content_type)
    ids = await _enqueue(engine, _file(simulator, "menu.pdf"), count=5)
    daemon = Daemon(dataclasses.replace(_upload_settings(settings), max_attempts=3), drain=True)
    assert await asyncio.wait_for(daemon.run(), 30) == 0
    assert await _rows(engine, ids) == [("failed", reason)] * 5
    assert simulator.requests == 0


@pytest.mark.parametrize("answer", _ODD_UPLOADS, ids=list(_ODD_UPLOADS))
async def test_an_odd_upload_answer_declares_no_outage_and_the_senders_text_goes_at_once(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator, answer: str
) -> None:
    simulator.media.upload_answer = _ODD_UPLOADS[answer][0]
    media = await _enqueue(engine, _file(simulator, "menu.pdf"), count=5)
    daemon = Daemon(dataclasses.replace(_upload_settings(settings), max_attempts=3))
    running = asyncio.create_task(daemon.run())
    states: set[str] = set()

    async def watch() -> None:
        while True:
            states.add(daemon.health()["status"])
            await asyncio.sleep(0.01)

    watcher = asyncio.create_task(watch())
    try:
        # The odd answer reached every media row (five recipients) before the text is enqueued.
        await _until(lambda: _async(simulator.media.upload_requests >= 1), 10, "an upload")
        await asyncio.sleep(0.2)
        async with engine.begin() as conn:
            text = await outbox.enqueue(conn, RECIPIENT, "your booking is confirmed")
        enqueued = time.monotonic()
        await _until(lambda: _is_sent(engine, text), 20, "the text row sent")
        waited = time.monotonic() - enqueued
        await _until(lambda: _all_failed(engine, media), 20, "the media rows failed")
    finally:
        watcher.cancel()
        daemon.stop()
        await asyncio.wait_for(running, 30)
    assert "outage" not in states
    assert waited < 2.0, f"the text row waited {waited:.1f}s"


async def _async(value: bool) -> bool:
    return value


async def _is_sent(engine: AsyncEngine, message_id: int) -> bool:
    return await _rows(engine, [message_id]) == [("sent", None)]


async def _all_failed(engine: AsyncEngine, ids: list[int]) -> bool:
    return all(status == "failed" for status, _ in await _rows(engine, ids))
