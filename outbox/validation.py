"""Turn enqueue arguments into a row's values, or raise InvalidMessage naming field and rule.

Runs before any SQL, so invalid input changes nothing. The daemon applies the same rules to rows
written with raw SQL, which the table's CHECKs cannot fully judge (captions, filenames).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import phonenumbers
from phonenumbers import ValidationResult

from outbox.errors import InvalidMessage
from outbox.media.limits import refused_by_extension
from outbox.schema import MAX_MEDIA_PARTS, MAX_REFERENCE_LENGTH
from outbox.whatsapp import MAX_CAPTION_LENGTH, MAX_TEXT_LENGTH, MEDIA_KINDS

# The familiar dict form of media_urls, in the order its parts are sent.
MEDIA_URL_KEYS = {"images": "image", "videos": "video", "documents": "document", "audio": "audio"}
MAX_IDEMPOTENCY_KEY_LENGTH = 255
MAX_URL_LENGTH = 2048
MAX_FILENAME_LENGTH = 255
_RECIPIENT_PUNCTUATION = re.compile(r"[\s\-.()]")
_PART_KEYS = {"type", "url", "caption", "filename"}
# PostgreSQL text cannot hold NUL; UTF-8 cannot encode a surrogate code point (lone or paired).
_SURROGATE = re.compile(r"[\ud800-\udfff]")
# C0, DEL and C1 controls: never part of a URL, and urlsplit silently skips leading ones.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# asyncpg stores the first and last datetime as -infinity and +infinity: keep clear of both.
EARLIEST_TIME = datetime(1, 1, 2, tzinfo=UTC)
LATEST_TIME = datetime(9999, 12, 30, tzinfo=UTC)
# WhatsApp's wa_id for a Mexican mobile keeps the "1" after 52 that libphonenumber dropped.
_MEXICAN_WA_ID = re.compile(r"^521[0-9]{10}$")
_TOO_FEW = (ValidationResult.TOO_SHORT, ValidationResult.IS_POSSIBLE_LOCAL_ONLY)


@dataclass(frozen=True)
class NewMessage:
    """A validated row, ready to insert."""

    recipient: str
    message: str | None
    media: list[dict[str, str]]
    idempotency_key: str | None
    send_at: datetime | None
    expires_at: datetime | None = None
    template: dict[str, Any] | None = None  # Meta's template object
    sender: str | None = None  # the phone number id to send from (None: META_PHONE_NUMBER_ID)
    fallback: dict[str, Any] | None = None  # the template sent when the window is closed
    category: str | None = None  # Meta's category of the template or fallback (None: unknown)
    reference: str | None = None  # the app's own name for the row, to find it by
    quiet_hours: str | None = None  # its own quiet hours (`none`: any hour; None: the daemon's)
    timezone: str | None = None  # its recipient's time zone (None: the number's)


def check_storable(value: str, field: str) -> str:
    """Refuse what PostgreSQL or UTF-8 cannot store, so it never fails the caller's transaction."""
    if "\x00" in value:
        raise InvalidMessage(field, "must not contain NUL characters (\\x00)", rule="nul_character")
    if _SURROGATE.search(value):
        raise InvalidMessage(
            field,
            "must not contain surrogate code points (U+D800 to U+DFFF); it is not UTF-8",
            rule="surrogate",
        )
    return value


def recipient_digits(recipient: object, field: str = "recipient") -> str:
    """The digits of a recipient written with spaces, dashes, dots, parentheses, and one leading
    '+' or the international prefix 00; a national number (a leading 0) is refused with how to
    write it."""
    if not isinstance(recipient, str):
        raise InvalidMessage(field, "must be a string of digits", rule="type")
    value = recipient.strip()
    plus = value.startswith("+")
    digits = _RECIPIENT_PUNCTUATION.sub("", value[1:] if plus else value)
    if digits and not (digits.isascii() and digits.isdigit()):
        raise InvalidMessage(
            field,
            "may hold only digits, spaces, dashes, dots, parentheses and one leading '+' (or 00)",
            rule="characters",
        )
    if not plus and digits.startswith("00"):
        digits = digits[2:]  # the international call prefix most countries dial: 0092... is +92...
    elif not plus and digits.startswith("0"):
        raise InvalidMessage(
            field,
            f"{value} is written as a national number (it starts with 0); write it with its "
            "country code instead, as +<country code> and the number without its leading 0 "
            "(for example +92 300 1234567 for 0300 1234567 in Pakistan)",
            rule="national_number",
        )
    if not 7 <= len(digits) <= 15:
        raise InvalidMessage(
            field, f"must have 7 to 15 digits, got {len(digits)}", rule="digit_count"
        )
    return digits


def _is_possible(digits: str) -> bool:
    """Whether libphonenumber calls +digits a possible number."""
    try:
        return bool(phonenumbers.is_possible_number(phonenumbers.parse(f"+{digits}")))
    except phonenumbers.NumberParseException:
        return False


@lru_cache(maxsize=65_536)  # the daemon checks every row it sends; recipients come back often
def check_possible_number(digits: str, field: str = "recipient") -> str:
    """Refuse digits that libphonenumber says no phone number can have, country code first."""
    if _MEXICAN_WA_ID.match(digits) and _is_possible(f"52{digits[3:]}"):
        return digits
    try:
        number = phonenumbers.parse(f"+{digits}")
    except phonenumbers.NumberParseException:
        # Digits alone fail to parse only when no country code matches (a leading 0, +999...).
        raise InvalidMessage(
            field, f"+{digits} has no valid country code", rule="country_code"
        ) from None
    code = number.country_code
    reason = phonenumbers.is_possible_number_with_reason(number)
    if reason == ValidationResult.INVALID_COUNTRY_CODE:
        raise InvalidMessage(field, f"+{digits} has no valid country code", rule="country_code")
    if reason in _TOO_FEW:
        raise InvalidMessage(
            field, f"+{digits} has too few digits for country code {code}", rule="too_short"
        )
    if reason == ValidationResult.TOO_LONG:
        raise InvalidMessage(
            field, f"+{digits} has too many digits for country code {code}", rule="too_long"
        )
    if reason != ValidationResult.IS_POSSIBLE:
        raise InvalidMessage(
            field,
            f"+{digits} has an impossible number of digits for country code {code}",
            rule="impossible_length",
        )
    national = phonenumbers.national_significant_number(number)
    if f"{code}{national}" != digits:
        # libphonenumber dropped a trunk prefix ("+44 0 7700..."); dialled from abroad it is wrong.
        raise InvalidMessage(
            field,
            f"+{digits} has a national prefix after country code {code}; use +{code}{national}",
            rule="national_prefix",
        )
    return digits


def normalize_recipient(recipient: object, field: str = "recipient") -> str:
    """Digits only, country code first: `+92 300-123 4567` becomes `923001234567`."""
    return check_possible_number(recipient_digits(recipient, field), field)


def normalize_text(message: object) -> str | None:
    """The text to send last; None and "" both mean no text."""
    if message is None:
        return None
    if not isinstance(message, str):
        raise InvalidMessage("message", "must be a string", rule="type")
    if len(message) > MAX_TEXT_LENGTH:
        raise InvalidMessage(
            "message",
            f"must be at most {MAX_TEXT_LENGTH} characters, got {len(message)}",
            rule="too_long",
        )
    return check_storable(message, "message") or None


def check_url(url: object, field: str) -> str:
    """An absolute http(s) URL with a host, as the Cloud API fetches media by `link`; the scheme
    is stored lowercased (it is case-insensitive), so the table's `^https?://` CHECK holds."""
    if not isinstance(url, str):
        raise InvalidMessage(field, "must be a URL string", rule="type")
    if len(url) > MAX_URL_LENGTH:
        raise InvalidMessage(field, f"must be at most {MAX_URL_LENGTH} characters", rule="too_long")
    check_storable(url, field)
    if _CONTROL.search(url):
        raise InvalidMessage(field, "must not contain control characters", rule="control_character")
    if any(c.isspace() for c in url):
        raise InvalidMessage(
            field, "must not contain spaces (percent-encode them as %20)", rule="space"
        )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a port out of range or not a number)
    except ValueError as exc:
        raise InvalidMessage(field, f"is not a valid URL ({exc})", rule="url") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidMessage(
            field, "must be an absolute http:// or https:// URL", rule="url_scheme"
        )
    return parts.scheme + url[len(parts.scheme) :]


def check_caption(caption: object, kind: str, field: str) -> str | None:
    """An optional caption: a string of at most 1024 characters, never on audio."""
    if caption is None or caption == "":
        return None
    if kind == "audio":
        raise InvalidMessage(field, "audio takes no caption", rule="not_allowed")
    if not isinstance(caption, str) or len(caption) > MAX_CAPTION_LENGTH:
        raise InvalidMessage(
            field, f"must be a string of at most {MAX_CAPTION_LENGTH} characters", rule="too_long"
        )
    return check_storable(caption, field)


def check_filename(filename: object, kind: str, field: str) -> str | None:
    """An optional file name for a document: at most 255 characters, no '/'."""
    if filename is None or filename == "":
        return None
    if kind != "document":
        raise InvalidMessage(field, "only documents take a filename", rule="not_allowed")
    if not isinstance(filename, str) or len(filename) > MAX_FILENAME_LENGTH or "/" in filename:
        raise InvalidMessage(
            field,
            f"must be a file name of at most {MAX_FILENAME_LENGTH} characters, no '/'",
            rule="filename",
        )
    return check_storable(filename, field)


def check_media_url(kind: str, url: object, field: str) -> str:
    """A media link (check_url) whose file extension, if it names a type, names one Meta takes
    for `kind` (outbox/media/limits.py): a .gif is no image Meta sends."""
    checked = check_url(url, field)
    reason = refused_by_extension(kind, checked)
    if reason is not None:
        raise InvalidMessage(field, reason, rule="media_type")
    return checked


def check_part(part: object, field: str) -> dict[str, str]:
    """One explicit media part: type, url, optional caption (not audio), optional filename."""
    if not isinstance(part, Mapping):
        raise InvalidMessage(field, "must be an object with type and url", rule="type")
    unknown = set(part) - _PART_KEYS
    if unknown:
        raise InvalidMessage(
            field, f"unknown key {sorted(map(repr, unknown))[0]}", rule="unknown_key"
        )
    kind = next((k for k in MEDIA_KINDS if part.get("type") == k), None)
    if kind is None:
        raise InvalidMessage(
            f"{field}.type", f"must be one of {', '.join(MEDIA_KINDS)}", rule="choice"
        )
    checked = {"type": kind, "url": check_media_url(kind, part.get("url"), f"{field}.url")}
    caption = check_caption(part.get("caption"), kind, f"{field}.caption")
    if caption is not None:
        checked["caption"] = caption
    filename = check_filename(part.get("filename"), kind, f"{field}.filename")
    if filename is not None:
        checked["filename"] = filename
    return checked


def media_from_dict(media_urls: Mapping[object, object]) -> list[dict[str, str]]:
    """Parts from `{"images": [...], "videos": [...], ...}`, in kind order then list order."""
    for key in media_urls:
        if key not in MEDIA_URL_KEYS:
            raise InvalidMessage(
                f"media_urls.{key}",
                f"unknown media kind; use {', '.join(MEDIA_URL_KEYS)}",
                rule="choice",
            )
    parts = []
    for key, kind in MEDIA_URL_KEYS.items():
        urls = media_urls.get(key)
        if urls is None:
            continue
        if isinstance(urls, str | bytes) or not isinstance(urls, Sequence):
            raise InvalidMessage(f"media_urls.{key}", "must be a list of URLs", rule="type")
        for index, url in enumerate(urls):
            field = f"media_urls.{key}[{index}]"
            parts.append({"type": kind, "url": check_media_url(kind, url, field)})
    return parts


def normalize_media(media_urls: object) -> list[dict[str, str]]:
    """Media parts in send order, from the dict-of-lists form or an explicit list of parts."""
    if media_urls is None:
        return []
    if isinstance(media_urls, Mapping):
        parts = media_from_dict(media_urls)
    elif isinstance(media_urls, Sequence) and not isinstance(media_urls, str | bytes):
        parts = [check_part(part, f"media_urls[{index}]") for index, part in enumerate(media_urls)]
    else:
        raise InvalidMessage(
            "media_urls", "must be a dict of URL lists or a list of parts", rule="type"
        )
    if len(parts) > MAX_MEDIA_PARTS:
        raise InvalidMessage(
            "media_urls",
            f"must have at most {MAX_MEDIA_PARTS} parts, got {len(parts)}",
            rule="too_many",
        )
    return parts


def check_idempotency_key(key: object) -> str | None:
    """None, or a non-empty string of at most 255 characters that PostgreSQL can store."""
    if key is None:
        return None
    if not isinstance(key, str) or not key or len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
        raise InvalidMessage(
            "idempotency_key",
            f"must be a non-empty string of at most {MAX_IDEMPOTENCY_KEY_LENGTH} characters",
            rule="length",
        )
    return check_storable(key, "idempotency_key")


def check_reference(reference: object) -> str | None:
    """None, or the app's name for the row: a string of 1 to 255 characters PostgreSQL stores."""
    if reference is None:
        return None
    if not isinstance(reference, str):
        raise InvalidMessage("reference", "must be a string", rule="type")
    if not reference:
        raise InvalidMessage("reference", "must not be empty (leave it out instead)", rule="empty")
    if len(reference) > MAX_REFERENCE_LENGTH:
        raise InvalidMessage(
            "reference",
            f"must be at most {MAX_REFERENCE_LENGTH} characters, got {len(reference)}",
            rule="too_long",
        )
    return check_storable(reference, "reference")


def check_time(value: object, field: str) -> datetime | None:
    """None, or a timezone-aware datetime, returned in UTC: every driver then stores that very
    instant (PostgreSQL refuses offsets of 16 h or more, or with fractions of a second)."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise InvalidMessage(field, "must be a datetime", rule="type")
    try:
        offset = value.utcoffset()
    except Exception:  # a tzinfo of the caller's that fails or answers out of range
        raise InvalidMessage(
            field, "has a time zone whose UTC offset cannot be read", rule="timezone"
        ) from None
    if offset is None:
        raise InvalidMessage(
            field, "must be timezone-aware (a naive time is ambiguous)", rule="naive_time"
        )
    if not EARLIEST_TIME <= value <= LATEST_TIME:
        raise InvalidMessage(
            field, "must be between 0001-01-02 and 9999-12-30 UTC", rule="out_of_range"
        )
    return value.astimezone(UTC)


def check_send_at(send_at: object) -> datetime | None:
    """When the message may first be sent; None for now."""
    return check_time(send_at, "send_at")


def check_expires_at(expires_at: object, send_at: datetime | None) -> datetime | None:
    """When an unsent message stops being worth sending; it must come after send_at."""
    checked = check_time(expires_at, "expires_at")
    if checked is not None and send_at is not None and checked <= send_at:
        raise InvalidMessage("expires_at", "must be later than send_at", rule="order")
    return checked


def validate(
    recipient: object,
    message: object = None,
    *,
    media_urls: object = None,
    idempotency_key: object = None,
    send_at: object = None,
    expires_at: object = None,
    template_json: dict[str, Any] | None = None,
    sender: object = None,
    reference: object = None,
) -> NewMessage:
    """Check every argument of enqueue; the first broken rule raises InvalidMessage.
    `template_json` is a template already checked by templates.template_object()."""
    digits = normalize_recipient(recipient)
    text = normalize_text(message)
    media = normalize_media(media_urls)
    if template_json is not None and (text is not None or media):
        raise InvalidMessage(
            "template", "a template message takes no text and no media", rule="exclusive"
        )
    if template_json is None and text is None and not media:
        raise InvalidMessage(
            "message", "a message needs text, at least one media part, or a template", rule="empty"
        )
    checked_send_at = check_send_at(send_at)
    return NewMessage(
        recipient=digits,
        message=text,
        media=media,
        idempotency_key=check_idempotency_key(idempotency_key),
        send_at=checked_send_at,
        expires_at=check_expires_at(expires_at, checked_send_at),
        template=template_json,
        sender=check_sender(sender),
        reference=check_reference(reference),
    )


MAX_SENDER_DIGITS = 32


def check_sender(sender: object) -> str | None:
    """A phone number id (Meta's, digits only), or None for META_PHONE_NUMBER_ID."""
    if sender is None:
        return None
    if not isinstance(sender, str | int) or isinstance(sender, bool):
        raise InvalidMessage(
            "sender",
            f"must be a phone number id (a string), not {type(sender).__name__}",
            rule="type",
        )
    value = str(sender).strip()
    if not value.isascii() or not value.isdigit() or not 1 <= len(value) <= MAX_SENDER_DIGITS:
        raise InvalidMessage(
            "sender",
            f"must be a phone number id: 1 to {MAX_SENDER_DIGITS} digits, nothing else",
            rule="sender_format",
        )
    return value
