"""The WhatsApp Cloud API: Meta's limits on a message, the payloads we send, and the answers we
read (Graph errors become ours here). No HTTP: the client is whatsapp_client.py, so that enqueue's
validation and the simulator take Meta's limits from here without loading aiohttp.

A part is accepted only when the answer is a 2xx whose JSON holds a usable wamid. Everything else
raises a SendError: InDoubt when Meta may have accepted it (a timeout, a 2xx without a usable id).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from outbox.errors import GraphError, InDoubt, TransportError

# Meta's limits on one message.
MEDIA_KINDS = ("image", "video", "document", "audio")
MAX_TEXT_LENGTH = 4096
MAX_CAPTION_LENGTH = 1024
_URL_IN_TEXT = re.compile(r"https?://\S", re.IGNORECASE)
# Meta's ids are printable ASCII ("wamid.HBgL..."); anything else cannot be stored or trusted.
WAMID = re.compile(r"^[!-~]{1,512}$")
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
    message = str(error.get("message") or "")
    return GraphError(
        http_status=status,
        code=_as_int(error.get("code")),
        subcode=_as_int(error.get("error_subcode")),
        # Blanks or control characters say nothing: the row's reason must say something.
        message=message if any(c.isalnum() for c in message) else "unknown Graph error",
        details=str(details) if details else None,
        fbtrace_id=str(error["fbtrace_id"]) if error.get("fbtrace_id") else None,
        retry_after=retry_after,
    )


def accepted(status: int) -> bool:
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
    if not isinstance(wamid, str) or not WAMID.match(wamid):
        raise InDoubt(f"HTTP {status} without a usable message id", http_status=status)
    return wamid
