"""Media ids in flight (outbox/media/ids.py): rows asking for one link and kind at once share
one lookup, a refresh after Meta refused an id too, and a refresh never settles for the id
Meta refused."""

from __future__ import annotations

import asyncio

from outbox.media.ids import _shared

KEY = ("1122334455", "https://cdn.example.com/menu.pdf", "document")


async def test_rows_refreshing_one_refused_id_share_one_refresh() -> None:
    flights: dict[tuple[str, str, str], asyncio.Task[str]] = {}
    uploads = 0

    async def upload() -> str:
        nonlocal uploads
        uploads += 1
        await asyncio.sleep(0.01)
        return "new"

    ids = await asyncio.gather(*(_shared(flights, KEY, upload, "old") for _ in range(64)))
    assert ids == ["new"] * 64
    assert uploads == 1
    assert flights == {}


async def test_a_refresh_that_joined_a_lookup_finding_the_refused_id_looks_again() -> None:
    flights: dict[tuple[str, str, str], asyncio.Task[str]] = {}
    found = asyncio.Event()
    works: list[str] = []

    async def lookup_before_the_refusal() -> str:
        works.append("lookup")
        await found.wait()
        return "old"

    async def refresh() -> str:
        works.append("refresh")
        return "new"

    lookup = asyncio.create_task(_shared(flights, KEY, lookup_before_the_refusal, None))
    await asyncio.sleep(0)
    refreshing = asyncio.create_task(_shared(flights, KEY, refresh, "old"))
    await asyncio.sleep(0)
    found.set()
    assert await lookup == "old"
    assert await refreshing == "new"
    assert works == ["lookup", "refresh"]
