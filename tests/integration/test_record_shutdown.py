"""A stop while the database is away: every accepted part the recorder could not write is
counted and named, the batch it was still retrying included."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from outbox.delivery.record import PartRecorder
from outbox.delivery.recorded import AcceptedPart
from outbox.pool import Pool


async def test_a_stop_counts_the_parts_of_the_write_it_gave_up_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = PartRecorder(
        Pool("postgresql://postgres@127.0.0.1:1/nothing"), 30, on_idle=lambda: None
    )
    recorder.start()
    part = AcceptedPart(7, uuid.uuid4(), 0, "wamid.unwritten", True)
    waiting = asyncio.create_task(recorder.record(part))
    await asyncio.sleep(0.3)  # its write is being retried: the database does not answer
    assert not waiting.done()
    assert await recorder.close(0.2) == 1
    assert "wamid.unwritten" in caplog.text
    waiting.cancel()
