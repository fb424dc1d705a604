"""The WhatsApp Cloud API: message payloads and send(); where HTTP and Graph errors become ours.

A part is accepted only when the answer is a 2xx whose JSON holds a usable wamid. Everything else
raises a SendError: InDoubt when Meta may have accepted it (a timeout, a 2xx without a usable id,
a connection closed or reset after the request went out). The access token is only ever in the
Authorization header, never in text.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp

from outbox.errors import GraphError, InDoubt, TransportError
from outbox.settings import MIN_SECRET, REDACTED

_URL_IN_TEXT = re.compile(r"https?://\S", re.IGNORECASE)
# Meta's ids are printable ASCII ("wamid.HBgL..."); anything else cannot be stored or trusted.
_WAMID = re.compile(r"^[!-~]{1,512}$")
MAX_BODY_BYTES = 64 * 1024  # more of an answer than this is never needed to judge it
MAX_RETRY_AFTER = 86400.0  # a sane bound before retry.py applies its own ceilings


@dataclass(frozen=True)
class Part:
    """One message to send: a media item (by link, or by the id of its upload), the text, or a
    template."""

    type: str  # text, image, video, document, audio, template
    body: str | None = None
    url: str | None = None
    media_id: str | None = None  # sent instead of `url` once the file was uploaded
    caption: str | None = None
    filename: str | None = None
    template: dict[str, Any] | None = None  # Meta's template object, sent as is


def parts_of(
    message: str | None, media: list[dict[str, str]], template: dict[str, Any] | None = None
) -> list[Part]:
    """A template alone, or media in the given order, then the text."""
    if template is not None:
        return [Part(type="template", template=template)]
    parts = [
        Part(
            type=item["type"],
            url=item["url"],
            caption=item.get("caption"),
            filename=item.get("filename"),
        )
        for item in media
    ]
    if message:
        parts.append(Part(type="text", body=message))
    return parts


def payload(recipient: str, part: Part, callback_data: str | None = None) -> dict[str, Any]:
    """The JSON body of POST /{phone_number_id}/messages for one part."""
    body: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": recipient,
        "type": part.type,
    }
    if part.type == "template":
        assert part.template is not None
        body["template"] = part.template
    elif part.type == "text":
        assert part.body is not None
        text: dict[str, Any] = {"body": part.body}
        if _URL_IN_TEXT.search(part.body):
            text["preview_url"] = True
        body["text"] = text
    else:
        media: dict[str, Any] = (
            {"id": part.media_id} if part.media_id is not None else {"link": part.url}
        )
        if part.caption and part.type != "audio":
            media["caption"] = part.caption
        if part.filename and part.type == "document":
            media["filename"] = part.filename
        body[part.type] = media
    if callback_data:
        body["biz_opaque_callback_data"] = callback_data
    return body


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if not math.isfinite(seconds):
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER)


def _as_int(value: object) -> int | None:
    """An error code as an int the database can store (a 32-bit integer), else None."""
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        return None  # true is not code 1, and 190.5 is not the token error 190
    try:
        number = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError, OverflowError):
        return None
    return number if -(2**31) <= number < 2**31 else None


def error_from_response(
    status: int, text: str, retry_after: float | None
) -> GraphError | TransportError:
    """The typed error for a non-200 answer; a body that is not Graph's envelope is transport."""
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        snippet = " ".join(text.split())[:120]
        return TransportError(
            f"HTTP {status} without a Graph error body: {snippet or '(empty)'}",
            http_status=status,
            retry_after=retry_after,
        )
    error_data = error.get("error_data")
    details = error_data.get("details") if isinstance(error_data, dict) else None
    return GraphError(
        http_status=status,
        code=_as_int(error.get("code")),
        subcode=_as_int(error.get("error_subcode")),
        message=str(error.get("message") or "unknown Graph error"),
        details=str(details) if details else None,
        fbtrace_id=str(error["fbtrace_id"]) if error.get("fbtrace_id") else None,
        retry_after=retry_after,
    )


def _accepted(status: int) -> bool:
    """Meta answers 200; any 2xx says the request was taken."""
    return 200 <= status < 300


def wamid_from_response(text: str, status: int = 200) -> str:
    """The wamid of a 2xx answer. One without a usable id may still mean Meta accepted the
    part, so it is InDoubt, never a plain failure to retry at once."""
    try:
        data = json.loads(text)
        wamid = data["messages"][0]["id"]
    except (ValueError, KeyError, IndexError, TypeError):
        snippet = " ".join(text.split())[:120]
        raise InDoubt(
            f"HTTP {status} without a message id: {snippet or '(empty)'}", http_status=status
        ) from None
    if not isinstance(wamid, str) or not _WAMID.match(wamid):
        raise InDoubt(f"HTTP {status} without a usable message id", http_status=status)
    return wamid


async def _read_capped(response: aiohttp.ClientResponse) -> bytes:
    """At most MAX_BODY_BYTES of the body: a poisoned answer can be any size."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(16384):
        chunks.append(chunk)
        size += len(chunk)
        if size >= MAX_BODY_BYTES:
            break
    return b"".join(chunks)[:MAX_BODY_BYTES]


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
        # A file of up to 100 MB goes up: the request timeout for its answer, more to send it.
        self._upload_timeout = aiohttp.ClientTimeout(total=max(timeout * 8, 120.0))
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
                    if not _accepted(response.status):
                        raise
                    # Meta said 200 (accepted) before the body broke off: never a quick retry.
                    raise InDoubt(
                        f"HTTP {response.status} whose body broke off ({type(exc).__name__})",
                        http_status=response.status,
                    ) from None
                if _accepted(response.status):
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
        GraphError / TransportError. Never InDoubt: uploading a file twice sends nothing."""
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
                text = self._hidden((await _read_capped(response)).decode("utf-8", "replace"))
                if not _accepted(response.status):
                    retry_after = parse_retry_after(response.headers.get("Retry-After"))
                    raise error_from_response(response.status, text, retry_after)
        except TimeoutError:
            raise TransportError("the media upload timed out") from None
        except aiohttp.ClientError as exc:
            raise TransportError(f"the media upload failed: {_described(exc)}") from None
        try:
            media_id = json.loads(text).get("id")
        except (ValueError, AttributeError):
            media_id = None
        if not isinstance(media_id, str | int) or not _WAMID.match(str(media_id)):
            raise TransportError("the media upload was answered without a media id")
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
