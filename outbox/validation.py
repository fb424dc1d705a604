"""Turn enqueue arguments into a row's values, or raise InvalidMessage naming field and rule.

Runs before any SQL, so invalid input changes nothing. The daemon applies the same rules to rows
written with raw SQL, which the table's CHECKs cannot fully judge (captions, filenames).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from outbox.errors import InvalidMessage
from outbox.schema import MAX_CAPTION_LENGTH, MAX_TEXT_LENGTH, MEDIA_KINDS

# The familiar dict form of media_urls, in the order its parts are sent.
MEDIA_URL_KEYS = {"images": "image", "videos": "video", "documents": "document", "audio": "audio"}
MAX_IDEMPOTENCY_KEY_LENGTH = 255
MAX_URL_LENGTH = 2048
_RECIPIENT_PUNCTUATION = re.compile(r"[\s\-.()]")
_PART_KEYS = {"type", "url", "caption", "filename"}


@dataclass(frozen=True)
class NewMessage:
    """A validated row, ready to insert."""

    recipient: str
    message: str | None
    media: list[dict[str, str]]
    idempotency_key: str | None
    send_at: datetime | None


def normalize_recipient(recipient: object, field: str = "recipient") -> str:
    """Digits only, country code first: `+92 300-123 4567` becomes `923001234567`."""
    if not isinstance(recipient, str):
        raise InvalidMessage(field, "must be a string of digits")
    value = recipient.strip()
    body = value[1:] if value.startswith("+") else value
    digits = _RECIPIENT_PUNCTUATION.sub("", body)
    if digits and not (digits.isascii() and digits.isdigit()):
        raise InvalidMessage(
            field,
            "may hold only digits, spaces, dashes, dots, parentheses and one leading '+'",
        )
    if not 7 <= len(digits) <= 15:
        raise InvalidMessage(field, f"must have 7 to 15 digits, got {len(digits)}")
    return digits


def normalize_text(message: object) -> str | None:
    """The text to send last; None and "" both mean no text."""
    if message is None:
        return None
    if not isinstance(message, str):
        raise InvalidMessage("message", "must be a string")
    if len(message) > MAX_TEXT_LENGTH:
        raise InvalidMessage(
            "message", f"must be at most {MAX_TEXT_LENGTH} characters, got {len(message)}"
        )
    return message or None


def check_url(url: object, field: str) -> str:
    """An absolute http(s) URL with a host, as the Cloud API fetches media by `link`."""
    if not isinstance(url, str):
        raise InvalidMessage(field, "must be a URL string")
    if len(url) > MAX_URL_LENGTH:
        raise InvalidMessage(field, f"must be at most {MAX_URL_LENGTH} characters")
    if any(c.isspace() for c in url):
        raise InvalidMessage(field, "must not contain spaces (percent-encode them as %20)")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise InvalidMessage(field, f"is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidMessage(field, "must be an absolute http:// or https:// URL")
    return url


def check_part(part: object, field: str) -> dict[str, str]:
    """One explicit media part: type, url, optional caption (not audio), optional filename."""
    if not isinstance(part, Mapping):
        raise InvalidMessage(field, "must be an object with type and url")
    unknown = set(part) - _PART_KEYS
    if unknown:
        raise InvalidMessage(field, f"unknown key {sorted(map(str, unknown))[0]!r}")
    kind = part.get("type")
    if kind not in MEDIA_KINDS:
        raise InvalidMessage(f"{field}.type", f"must be one of {', '.join(MEDIA_KINDS)}")
    checked = {"type": str(kind), "url": check_url(part.get("url"), f"{field}.url")}
    caption = part.get("caption")
    if caption is not None and caption != "":
        if kind == "audio":
            raise InvalidMessage(f"{field}.caption", "audio takes no caption")
        if not isinstance(caption, str) or len(caption) > MAX_CAPTION_LENGTH:
            raise InvalidMessage(
                f"{field}.caption", f"must be a string of at most {MAX_CAPTION_LENGTH} characters"
            )
        checked["caption"] = caption
    filename = part.get("filename")
    if filename is not None and filename != "":
        if kind != "document":
            raise InvalidMessage(f"{field}.filename", "only documents take a filename")
        if not isinstance(filename, str) or len(filename) > 255 or "/" in filename:
            raise InvalidMessage(
                f"{field}.filename", "must be a file name of at most 255 characters, no '/'"
            )
        checked["filename"] = filename
    return checked


def normalize_media(media_urls: object) -> list[dict[str, str]]:
    """Media parts in send order, from the dict-of-lists form or an explicit list of parts."""
    if media_urls is None:
        return []
    if isinstance(media_urls, Mapping):
        parts = []
        for key in media_urls:
            if key not in MEDIA_URL_KEYS:
                raise InvalidMessage(
                    f"media_urls.{key}", f"unknown media kind; use {', '.join(MEDIA_URL_KEYS)}"
                )
        for key, kind in MEDIA_URL_KEYS.items():
            urls = media_urls.get(key) or []
            if isinstance(urls, str) or not isinstance(urls, Sequence):
                raise InvalidMessage(f"media_urls.{key}", "must be a list of URLs")
            for index, url in enumerate(urls):
                parts.append({"type": kind, "url": check_url(url, f"media_urls.{key}[{index}]")})
        return parts
    if isinstance(media_urls, Sequence) and not isinstance(media_urls, str | bytes):
        return [check_part(part, f"media_urls[{index}]") for index, part in enumerate(media_urls)]
    raise InvalidMessage("media_urls", "must be a dict of URL lists or a list of parts")


def check_idempotency_key(key: object) -> str | None:
    if key is None:
        return None
    if not isinstance(key, str) or not key or len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
        raise InvalidMessage(
            "idempotency_key",
            f"must be a non-empty string of at most {MAX_IDEMPOTENCY_KEY_LENGTH} characters",
        )
    return key


def check_send_at(send_at: object) -> datetime | None:
    if send_at is None:
        return None
    if not isinstance(send_at, datetime):
        raise InvalidMessage("send_at", "must be a datetime")
    if send_at.tzinfo is None or send_at.utcoffset() is None:
        raise InvalidMessage("send_at", "must be timezone-aware (a naive time is ambiguous)")
    return send_at


def validate(
    recipient: object,
    message: object = None,
    *,
    media_urls: object = None,
    idempotency_key: object = None,
    send_at: object = None,
) -> NewMessage:
    """Check every argument of enqueue; the first broken rule raises InvalidMessage."""
    digits = normalize_recipient(recipient)
    text = normalize_text(message)
    media = normalize_media(media_urls)
    if text is None and not media:
        raise InvalidMessage("message", "a message needs text or at least one media part")
    return NewMessage(
        recipient=digits,
        message=text,
        media=media,
        idempotency_key=check_idempotency_key(idempotency_key),
        send_at=check_send_at(send_at),
    )
