"""Every enqueue rule: what is normalised, and what is refused naming field and rule."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from outbox import InvalidMessage
from outbox.validation import validate


@pytest.mark.parametrize(
    ("written", "stored"),
    [
        ("+92 300-123 4567", "923001234567"),
        ("(650) 555.1234", "6505551234"),
        ("  4915112345678 ", "4915112345678"),
        ("1234567", "1234567"),
        ("123456789012345", "123456789012345"),
    ],
)
def test_recipient_is_stored_as_digits(written: str, stored: str) -> None:
    assert validate(written, "hi").recipient == stored


@pytest.mark.parametrize(
    ("recipient", "rule"),
    [
        ("92300abc4567", "only digits"),
        ("++923001234567", "only digits"),
        ("92+3001234567", "only digits"),
        ("\uff19\uff12\uff13\uff10\uff10\uff11\uff12\uff13\uff14", "only digits"),  # full-width
        ("123456", "7 to 15 digits, got 6"),
        ("1234567890123456", "7 to 15 digits, got 16"),
        ("", "7 to 15 digits, got 0"),
        (923001234567, "string"),
    ],
)
def test_bad_recipient_is_refused(recipient: object, rule: str) -> None:
    with pytest.raises(InvalidMessage, match=rule) as caught:
        validate(recipient, "hi")
    assert caught.value.field == "recipient"


def test_empty_text_counts_as_no_text() -> None:
    new = validate("923001234567", "", media_urls={"images": ["https://a.example/x.jpg"]})
    assert new.message is None


@pytest.mark.parametrize("message", [None, ""])
def test_no_text_and_no_media_is_refused(message: str | None) -> None:
    with pytest.raises(InvalidMessage, match="text or at least one media part") as caught:
        validate("923001234567", message, media_urls={"images": []})
    assert caught.value.field == "message"


def test_text_over_4096_characters_is_refused() -> None:
    validate("923001234567", "é" * 4096)
    with pytest.raises(InvalidMessage, match="at most 4096 characters, got 4097"):
        validate("923001234567", "é" * 4097)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://a.example/x.jpg",
        "/relative/x.jpg",
        "https://",
        "a.example/x.jpg",
        "javascript:alert(1)",
    ],
)
def test_media_url_must_be_absolute_http(url: str) -> None:
    with pytest.raises(InvalidMessage, match="http") as caught:
        validate("923001234567", media_urls={"images": [url]})
    assert caught.value.field == "media_urls.images[0]"


def test_media_url_with_a_space_is_refused() -> None:
    with pytest.raises(InvalidMessage, match="must not contain spaces"):
        validate("923001234567", media_urls={"images": ["https://a.example/with space.jpg"]})


def test_unknown_media_kind_is_refused() -> None:
    with pytest.raises(InvalidMessage, match="unknown media kind") as caught:
        validate("923001234567", media_urls={"stickers": ["https://a.example/s.webp"]})
    assert caught.value.field == "media_urls.stickers"


def test_a_bare_string_is_not_a_list_of_urls() -> None:
    with pytest.raises(InvalidMessage, match="list of URLs"):
        validate("923001234567", media_urls={"images": "https://a.example/x.jpg"})


def test_explicit_part_with_unknown_type_is_refused() -> None:
    with pytest.raises(InvalidMessage) as caught:
        validate("923001234567", media_urls=[{"type": "sticker", "url": "https://a.example/s"}])
    assert caught.value.field == "media_urls[0].type"


def test_caption_over_1024_characters_is_refused() -> None:
    part = {"type": "image", "url": "https://a.example/x.jpg", "caption": "c" * 1025}
    with pytest.raises(InvalidMessage, match="1024") as caught:
        validate("923001234567", media_urls=[part])
    assert caught.value.field == "media_urls[0].caption"


def test_audio_takes_no_caption() -> None:
    part = {"type": "audio", "url": "https://a.example/x.ogg", "caption": "hi"}
    with pytest.raises(InvalidMessage, match="audio takes no caption"):
        validate("923001234567", media_urls=[part])


def test_only_documents_take_a_filename() -> None:
    part = {"type": "image", "url": "https://a.example/x.jpg", "filename": "x.jpg"}
    with pytest.raises(InvalidMessage, match="only documents"):
        validate("923001234567", media_urls=[part])


def test_unknown_part_key_is_refused() -> None:
    part = {"type": "image", "url": "https://a.example/x.jpg", "link": "x"}
    with pytest.raises(InvalidMessage, match="unknown key 'link'"):
        validate("923001234567", media_urls=[part])


def test_naive_send_at_is_refused() -> None:
    with pytest.raises(InvalidMessage, match="timezone-aware") as caught:
        validate("923001234567", "hi", send_at=datetime(2030, 1, 1))
    assert caught.value.field == "send_at"
    assert validate("923001234567", "hi", send_at=datetime(2030, 1, 1, tzinfo=UTC)).send_at


@pytest.mark.parametrize("key", ["", "k" * 256, 42])
def test_bad_idempotency_key_is_refused(key: object) -> None:
    with pytest.raises(InvalidMessage) as caught:
        validate("923001234567", "hi", idempotency_key=key)
    assert caught.value.field == "idempotency_key"


def test_invalid_message_is_a_value_error_naming_field_and_rule() -> None:
    error = InvalidMessage("recipient", "must have 7 to 15 digits")
    assert isinstance(error, ValueError)
    assert str(error) == "recipient: must have 7 to 15 digits"
