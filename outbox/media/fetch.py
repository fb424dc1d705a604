"""Reading a media part's link, as Meta would: the bytes, their type and their hash. A link
that answers 4xx, serves the wrong type or too much is the row's problem (MediaRefused: it
fails); a host that does not answer may answer later (MediaUnreachable: the row retries). Never
the sender's problem: no outage, no pause. The access token never goes to the link's host."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import aiohttp

from outbox.errors import OutboxError, clean
from outbox.media.limits import LIMITS, canonical, refused_content, type_from_url

MAX_REDIRECTS = 5
_GENERIC = ("application/octet-stream", "binary/octet-stream", "application/binary")


class MediaRefused(OutboxError):
    """The link cannot be sent as its kind: the row fails with this reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(clean(reason))


class MediaUnreachable(OutboxError):
    """The link's host did not answer usefully (connection, timeout, 5xx): try again later."""

    def __init__(self, reason: str) -> None:
        super().__init__(clean(reason))


@dataclass(frozen=True)
class Fetched:
    content: bytes = b""
    mime: str = ""
    sha256: str = ""


async def fetch(session: aiohttp.ClientSession, url: str, kind: str, seconds: float) -> Fetched:
    """The link's bytes, checked against Meta's limits for `kind`, read within `seconds`."""
    limit = LIMITS[kind].max_bytes
    try:
        async with session.get(
            url,
            timeout=aiohttp.ClientTimeout(total=seconds),
            max_redirects=MAX_REDIRECTS,
        ) as response:
            status = response.status
            if status >= 500 or status in (408, 429):
                raise MediaUnreachable(f"the link answered HTTP {status}")
            if status >= 300:
                raise MediaRefused(f"the link answered HTTP {status}")
            declared = response.headers.get("Content-Type")
            mime = canonical(declared) if declared else None
            if mime is None or mime in _GENERIC:
                mime = type_from_url(str(response.url)) or type_from_url(url)
            if response.content_length is not None and response.content_length > limit:
                raise MediaRefused(refused_content(kind, mime, response.content_length) or "")
            chunks, size = [], 0
            async for chunk in response.content.iter_chunked(65536):
                chunks.append(chunk)
                size += len(chunk)
                if size > limit:
                    break
    except aiohttp.TooManyRedirects:
        raise MediaRefused(f"the link redirects more than {MAX_REDIRECTS} times") from None
    except aiohttp.InvalidURL:
        raise MediaRefused("the link is not a URL that can be fetched") from None
    except TimeoutError:
        raise MediaUnreachable(f"the link did not answer within {seconds:.0f}s") from None
    except aiohttp.ClientError as exc:
        raise MediaUnreachable(f"the link could not be fetched: {type(exc).__name__}") from None
    content = b"".join(chunks)
    reason = refused_content(kind, mime, len(content))
    if reason is not None:
        raise MediaRefused(reason)
    assert mime is not None
    return Fetched(content, mime, hashlib.sha256(content).hexdigest())
