"""A media part's id: remembered for its link, else found for its bytes, else uploaded.

Per sender (a media id belongs to the number that uploaded it) and kind (one link named as an
image and as a document is fetched, judged and uploaded for each: it may fit only one, and Meta
refusing one's id says nothing of the other's). One daemon resolves each link, and uploads each
content, once at a time however many rows ask together; uploads are paced
per sender through the shared rate (`--upload-rate`). Two daemons meeting the same new file at
the same moment may both upload it: both ids work, the newer is kept.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import replace
from posixpath import basename
from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp

from outbox.cancel import cancel_and_wait
from outbox.delivery.rate import SharedRate
from outbox.errors import GraphError, SendError
from outbox.media import fetch as fetching
from outbox.media import upload as uploading
from outbox.pool import Pool
from outbox.store import media as store
from outbox.whatsapp import Part
from outbox.whatsapp_client import CloudAPI

logger = logging.getLogger("outbox.daemon")

# Meta keeps an upload 30 days; it is used for 29, so that none expires between check and send.
MAX_AGE_SECONDS = 29 * 86400.0
FETCH_TIMEOUT = 60.0
# Codes with which Meta refuses a media id it no longer has (or never had): upload again.
MEDIA_ID_REFUSED = frozenset({131053})
_DEFAULT_NAMES = {"image": "image", "video": "video", "audio": "audio", "document": "document"}


def refuses_media_id(error: SendError) -> bool:
    """Meta refused the part for its media id (expired, deleted, unknown)."""
    if not isinstance(error, GraphError):
        return False
    if error.code in MEDIA_ID_REFUSED:
        return True
    text = f"{error} {error.details or ''}".lower()
    return error.code in (100, 131009) and "media" in text


def filename_for(part: Part) -> str:
    """The upload's file name: the part's own, else the link's last path segment."""
    if part.filename:
        return part.filename
    name = basename(unquote(urlsplit(part.url or "").path))
    return name or _DEFAULT_NAMES.get(part.type, "file")


class MediaIds:
    """Media ids for the daemon's media parts, from outbox_media or new uploads."""

    def __init__(
        self,
        pool: Pool,
        api: CloudAPI,
        upload_rate: SharedRate,
        *,
        fetch_timeout: float = FETCH_TIMEOUT,
        on_upload: Callable[[str], None] | None = None,
    ) -> None:
        self._pool = pool
        self._api = api
        self._upload_rate = upload_rate
        self._fetch_timeout = fetch_timeout
        self._on_upload = on_upload or (lambda sender: None)
        self._session: aiohttp.ClientSession | None = None
        # In flight by (sender, url, kind) and by (sender, sha256, kind).
        self._links: dict[tuple[str, str, str], asyncio.Task[str]] = {}
        self._contents: dict[tuple[str, str, str], asyncio.Task[str]] = {}

    async def close(self) -> None:
        """Stop what is under way (the daemon is stopping) and close the links' session."""
        await cancel_and_wait([*self._links.values(), *self._contents.values()])
        if self._session is not None:
            await self._session.close()

    def _fetcher(self) -> aiohttp.ClientSession:
        # Its own session: nothing of the Graph API's (its token above all) reaches link hosts.
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def prepared(self, part: Part, sender: str, *, refused: str | None = None) -> Part:
        """The part to send by id. `refused`: Meta refused this id for the part (expired or
        deleted; forget() it first): another, found or uploaded since. Rows asking for one link
        and kind at once share one lookup, a refresh too: 200 rows finding their id gone make
        one fetch and one upload. Raises MediaRefused, MediaUnreachable (the row's, upload.py),
        or the upload's SendError that is the API's."""
        assert part.url is not None
        key = (sender, part.url, part.type)
        media_id = await _shared(
            self._links, key, lambda: self._for_link(part, sender, refused), refused
        )
        return replace(part, media_id=media_id)

    async def forget(self, media_id: str, kind: str) -> None:
        """Meta refused `media_id` sent as `kind`: no part of that kind is sent by it again."""
        async with self._pool.connect() as conn:
            await store.forget(conn, media_id, kind)

    async def _for_link(self, part: Part, sender: str, refused: str | None) -> str:
        """The link's id: remembered (another than `refused`: a daemon may have uploaded the
        file again since), else its content's."""
        assert part.url is not None
        async with self._pool.connect() as conn:
            known = await store.by_url(conn, sender, part.url, part.type, MAX_AGE_SECONDS)
        if known is not None and known != refused:
            return known
        fetched = await fetching.fetch(self._fetcher(), part.url, part.type, self._fetch_timeout)
        return await _shared(
            self._contents,
            (sender, fetched.sha256, part.type),
            lambda: self._for_content(part, sender, fetched, refused),
            refused,
        )

    async def _for_content(
        self, part: Part, sender: str, fetched: fetching.Fetched, refused: str | None
    ) -> str:
        """The id of these bytes (another than `refused`), else a new upload's."""
        assert part.url is not None
        async with self._pool.connect() as conn:
            found = await store.by_content(conn, sender, fetched.sha256, part.type, MAX_AGE_SECONDS)
        if found is not None and found[0] != refused:
            media_id, uploaded_at = found
        else:
            await self._upload_rate.acquire(f"upload-{sender}")
            media_id = await uploading.upload(
                self._api, sender, fetched.content, fetched.mime, filename_for(part)
            )
            uploaded_at = None
            self._on_upload(sender)
            logger.info(
                "uploaded a %s of %d bytes for sender %s as media %s",
                fetched.mime,
                len(fetched.content),
                sender,
                media_id,
                extra={"sender": sender, "media_id": media_id},
            )
        async with self._pool.connect() as conn:
            await store.remember(
                conn,
                sender=sender,
                url=part.url,
                kind=part.type,
                sha256=fetched.sha256,
                media_id=media_id,
                mime_type=fetched.mime,
                size=len(fetched.content),
                uploaded_at=uploaded_at,
            )
        return media_id


async def _shared(
    flights: dict[tuple[str, str, str], asyncio.Task[str]],
    key: tuple[str, str, str],
    work: Callable[[], Coroutine[Any, Any, str]],
    refused: str | None,
) -> str:
    """One `work` per key at a time: callers meanwhile share its result (or its error). A caller
    whose id was `refused` shares one too, unless it found that very id (it began before the
    refusal): then it shares the next, and at last starts its own (`work` skips `refused`). A
    caller cancelled does not cancel the others'."""
    media_id = await asyncio.shield(_flight(flights, key, work, join=True))
    for join in (True, False):
        if media_id != refused:
            break
        media_id = await asyncio.shield(_flight(flights, key, work, join=join))
    return media_id


def _flight(
    flights: dict[tuple[str, str, str], asyncio.Task[str]],
    key: tuple[str, str, str],
    work: Callable[[], Coroutine[Any, Any, str]],
    *,
    join: bool,
) -> asyncio.Task[str]:
    """The key's `work` under way (`join`), else a new one, which later callers join."""
    flight = flights.get(key) if join else None
    if flight is not None and not flight.done():
        return flight
    flight = flights[key] = asyncio.create_task(work())

    def done(finished: asyncio.Task[str]) -> None:
        if flights.get(key) is finished:
            del flights[key]
        if not finished.cancelled():
            finished.exception()  # retrieved, so an error nobody awaited is not logged

    flight.add_done_callback(done)
    return flight
