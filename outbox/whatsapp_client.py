"""The Cloud API client: sends parts, uploads media and looks phone numbers up over a
caller-owned aiohttp session; where HTTP errors become ours.

A connection closed or reset after the request went out, or a timeout, is InDoubt: Meta may have
accepted the part. The access token is only ever in the Authorization header, never in text.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

import aiohttp

from outbox.errors import InDoubt, TransportError
from outbox.settings import MIN_SECRET, REDACTED
from outbox.whatsapp import (
    WAMID,
    Part,
    accepted,
    error_from_response,
    parse_retry_after,
    payload,
    wamid_from_response,
)

MAX_BODY_BYTES = 64 * 1024  # more of an answer than this is never needed to judge it


async def _read_capped(response: aiohttp.ClientResponse) -> bytes:
    """At most MAX_BODY_BYTES of the body: a poisoned answer can be any size."""
    length = response.content_length
    # Meta's answers: read at once. Not a compressed one: its length is not what it unpacks to.
    if length is not None and length <= MAX_BODY_BYTES and not _compressed(response):
        return (await response.content.read())[:MAX_BODY_BYTES]
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(16384):
        chunks.append(chunk)
        size += len(chunk)
        if size >= MAX_BODY_BYTES:
            break
    return b"".join(chunks)[:MAX_BODY_BYTES]


def _compressed(response: aiohttp.ClientResponse) -> bool:
    return response.headers.get("Content-Encoding", "identity").strip().lower() != "identity"


def upload_timeout(request_timeout: float) -> float:
    """A file of up to 100 MB goes up: the request timeout for its answer, more to send it."""
    return max(request_timeout * 8, 120.0)


class CloudAPI:
    """Sends parts from one phone number over a caller-owned aiohttp ClientSession."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        base_url: str,
        version: str,
        phone_number_id: str,
        access_token: str,
        timeout: float = 15.0,
    ) -> None:
        self._session = session
        self.phone_number_id = phone_number_id  # the default sender
        self._base = f"{base_url.rstrip('/')}/{version}"
        self.url = self.url_for(phone_number_id)
        self._headers = {"Authorization": f"Bearer {access_token}"}
        # An answer that echoes our headers (a proxy's error page, a debugging gateway) must not
        # carry the token into errors, which are stored, logged and printed.
        self._token = access_token if len(access_token) >= MIN_SECRET else None
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._upload_timeout = aiohttp.ClientTimeout(total=upload_timeout(timeout))
        self._lookups: dict[str, asyncio.Future[str | None]] = {}

    def __repr__(self) -> str:
        return f"CloudAPI(url={self.url!r})"

    def _hidden(self, text: str) -> str:
        return text if self._token is None else text.replace(self._token, REDACTED)

    def url_for(self, sender: str) -> str:
        return f"{self._base}/{sender}/messages"

    async def send(
        self,
        recipient: str,
        part: Part,
        callback_data: str | None = None,
        sender: str | None = None,
    ) -> str:
        """POST one part from `sender` (default: the configured phone number id); its wamid, or
        a SendError."""
        try:
            async with self._session.post(
                self.url if sender is None else self.url_for(sender),
                json=payload(recipient, part, callback_data),
                headers=self._headers,
                timeout=self._timeout,
            ) as response:
                try:
                    text = self._hidden((await _read_capped(response)).decode("utf-8", "replace"))
                except (aiohttp.ClientError, TimeoutError) as exc:
                    if not accepted(response.status):
                        raise
                    # Meta said 200 (accepted) before the body broke off: never a quick retry.
                    raise InDoubt(
                        f"HTTP {response.status} whose body broke off ({type(exc).__name__})",
                        http_status=response.status,
                    ) from None
                if accepted(response.status):
                    return wamid_from_response(text, response.status)
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                raise error_from_response(response.status, text, retry_after)
        except aiohttp.ConnectionTimeoutError:
            raise TransportError("timed out connecting to the Graph API") from None
        except TimeoutError:
            raise InDoubt("request timed out (the part may have been accepted)") from None
        except aiohttp.ClientResponseError as exc:
            # An answer aiohttp could not parse came after the whole request went out: Meta may
            # have accepted the part.
            raise InDoubt(f"a malformed answer: {exc.message}"[:200], answered=True) from None
        except aiohttp.ClientConnectorError as exc:  # no connection: nothing went out
            raise TransportError(_described(exc)) from None
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            # Closed or reset after the request went out: the API may have accepted the part
            # first, or never read it (a front end closing connections, a stale kept-alive
            # one): retry.decide() counts it as an attempt outside an outage.
            raise InDoubt(
                f"no answer: {_described(exc)} (the part may have been accepted)", dropped=True
            ) from None
        except aiohttp.ClientError as exc:
            raise TransportError(_described(exc)) from None

    async def upload_media(self, sender: str, content: bytes, mime: str, filename: str) -> str:
        """POST the file to /{sender}/media (multipart, as Meta takes it); the media id, or a
        GraphError / TransportError (with the HTTP status when one came: a 2xx without a usable
        id too). Never InDoubt: uploading a file twice sends nothing. What is the row's and what
        the API's: outbox/media/upload.py."""
        form = aiohttp.FormData()
        form.add_field("messaging_product", "whatsapp")
        form.add_field("type", mime)
        form.add_field("file", content, filename=filename, content_type=mime)
        try:
            async with self._session.post(
                f"{self._base}/{sender}/media",
                data=form,
                headers=self._headers,
                timeout=self._upload_timeout,
            ) as response:
                status = response.status
                text = self._hidden((await _read_capped(response)).decode("utf-8", "replace"))
                if not accepted(status):
                    retry_after = parse_retry_after(response.headers.get("Retry-After"))
                    raise error_from_response(status, text, retry_after)
        except TimeoutError:
            raise TransportError("the media upload timed out") from None
        except aiohttp.ClientError as exc:
            raise TransportError(f"the media upload failed: {_described(exc)}") from None
        try:
            media_id = json.loads(text).get("id")
        except (ValueError, AttributeError):
            media_id = None
        if not isinstance(media_id, str | int) or not WAMID.match(str(media_id)):
            raise TransportError(
                f"the media upload was answered with HTTP {status} but no media id",
                http_status=status,
            )
        return str(media_id)

    async def unreachable(self, sender: str | None = None) -> str | None:
        """Why the Graph API does not answer at all, or None when it does, asked without sending
        anything: a GET of the phone number. An outage's probe asks before it risks a message.
        Callers asking about one sender meanwhile share its lookup."""
        sender = sender or self.phone_number_id
        lookup = self._lookups.get(sender)
        if lookup is None:
            lookup = self._lookups[sender] = asyncio.ensure_future(self._look_up(sender))
            lookup.add_done_callback(lambda _: self._lookups.pop(sender, None))
        return await asyncio.shield(lookup)  # a caller cancelled does not cancel the others'

    async def _look_up(self, sender: str) -> str | None:
        try:
            async with self._session.get(
                f"{self._base}/{sender}",
                params={"fields": "id"},
                headers=self._headers,
                timeout=self._timeout,
            ) as response:
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    await _read_capped(response)  # to keep the connection; the status is enough
                return None  # any answer, an error too: the API can be reached
        except TimeoutError:
            return "a lookup of the phone number timed out"
        except aiohttp.ClientError as exc:
            return f"a lookup of the phone number failed: {_described(exc)}"


def _described(exc: aiohttp.ClientError) -> str:
    # str() of aiohttp errors names host and port, never our headers.
    return f"{type(exc).__name__}: {exc}"
