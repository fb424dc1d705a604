"""Every enqueue rule: what is normalised, and what is refused naming field and rule."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from pathlib import Path

import pytest

from outbox import InvalidMessage
from outbox.schema import MAX_MEDIA_PARTS
from outbox.validation import normalize_media, normalize_recipient, validate

IMAGE = "https://a.example/x.jpg"


@pytest.mark.parametrize(
    ("written", "stored"),
    [
        ("+92 300-123 4567", "923001234567"),
        ("(650) 555.1234", "6505551234"),
        ("  4915112345678 ", "4915112345678"),
        ("+683 4002", "6834002"),  # Niue: 7 digits in all
        ("+49 1511 2345 67890", "491511234567890"),  # 15 digits in all
        ("+971 50 123 4567", "971501234567"),
        ("447700900123", "447700900123"),
        ("+1 650 555 1234", "16505551234"),
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
    with pytest.raises(
        InvalidMessage, match="text, at least one media part, or a template"
    ) as caught:
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
    error = InvalidMessage("recipient", "must have 7 to 15 digits", rule="digit_count")
    assert isinstance(error, ValueError)
    assert str(error) == "recipient: must have 7 to 15 digits"
    assert (error.field, error.rule, error.text) == (
        "recipient",
        "digit_count",
        "must have 7 to 15 digits",
    )


@pytest.mark.parametrize(
    ("recipient", "rule"),
    [
        ("+999 123 456 789", "country_code"),
        ("+1 234 567", "too_short"),
        ("+1 650 555 12345", "too_long"),
        ("+41 22 222 22222", "impossible_length"),
        ("+44 07700 900123", "national_prefix"),
        ("03001234567", "national_number"),
        ("+92 30", "digit_count"),
        ("+92 300 abc 4567", "characters"),
        (923001234567, "type"),
    ],
)
def test_a_refused_recipient_names_its_rule_by_a_stable_id(recipient: object, rule: str) -> None:
    with pytest.raises(InvalidMessage) as caught:
        validate(recipient, "hi")  # type: ignore[arg-type]
    assert (caught.value.field, caught.value.rule) == ("recipient", rule)


@pytest.mark.parametrize(
    ("arguments", "field", "rule"),
    [
        ({"message": "x" * 4097}, "message", "too_long"),
        ({"message": "a\x00b"}, "message", "nul_character"),
        (
            {"media_urls": {"images": ["ftp://a.example/i.jpg"]}},
            "media_urls.images[0]",
            "url_scheme",
        ),
        ({"media_urls": [{"type": "sticker", "url": IMAGE}]}, "media_urls[0].type", "choice"),
        ({}, "message", "empty"),
        ({"message": "hi", "idempotency_key": ""}, "idempotency_key", "length"),
    ],
    ids=["too_long", "nul_character", "url_scheme", "choice", "empty", "length"],
)
def test_a_refused_message_names_its_rule_by_a_stable_id(
    arguments: dict[str, object], field: str, rule: str
) -> None:
    with pytest.raises(InvalidMessage) as caught:
        validate("923001234567", **arguments)  # type: ignore[arg-type]
    assert (caught.value.field, caught.value.rule) == (field, rule)


@pytest.mark.parametrize(
    ("recipient", "rule"),
    [
        ("00999123456789", "+999123456789 has no valid country code"),
        ("+0 123 4567890", "+01234567890 has no valid country code"),
        ("+999 123 456 789", "+999123456789 has no valid country code"),
        ("+1 234 567", "+1234567 has too few digits for country code 1"),
        ("+92 300 12", "+9230012 has too few digits for country code 92"),  # local only
        ("+1 650 555 12345", "+165055512345 has too many digits for country code 1"),
        ("+52 1 55 1234 56789", "+52155123456789 has too many digits for country code 52"),
        (
            "+41 22 222 22222",
            "+412222222222 has an impossible number of digits for country code 41",
        ),
    ],
)
def test_recipient_that_cannot_exist_is_refused(recipient: str, rule: str) -> None:
    with pytest.raises(InvalidMessage) as caught:
        validate(recipient, "hi")
    assert (caught.value.field, caught.value.text) == ("recipient", rule)


def test_recipient_with_a_national_prefix_after_the_country_code_is_refused() -> None:
    with pytest.raises(InvalidMessage) as caught:
        validate("+44 07700 900123", "hi")
    assert caught.value.field == "recipient"
    assert caught.value.text == (
        "+4407700900123 has a national prefix after country code 44; use +447700900123"
    )


def test_mexican_whatsapp_id_with_the_mobile_1_is_accepted() -> None:
    # WhatsApp's wa_id for Mexican mobiles keeps the old "1" after 52; libphonenumber no longer
    # knows it, but the Cloud API takes it, and apps copy wa_ids from webhooks.
    assert validate("5215512345678", "hi").recipient == "5215512345678"


@pytest.mark.parametrize("written", ["0092 300 1234567", "00923001234567", "0092-300-123-4567"])
def test_a_recipient_written_with_the_international_prefix_00_is_accepted(written: str) -> None:
    assert validate(written, "hi").recipient == "923001234567"


def test_a_national_number_is_refused_with_how_to_write_it() -> None:
    with pytest.raises(InvalidMessage) as caught:
        validate("03001234567", "hi")
    message = str(caught.value)
    assert message.startswith("recipient: 03001234567 is written as a national number")
    assert "with its country code" in message
    assert "+03001234567" not in message  # never a '+' the user did not type


def test_normalize_recipient_names_the_given_field() -> None:
    with pytest.raises(InvalidMessage) as caught:
        normalize_recipient("0300 1234567", "to")
    assert caught.value.field == "to"


def test_ten_media_parts_are_accepted() -> None:
    new = validate("923001234567", media_urls={"images": [IMAGE] * MAX_MEDIA_PARTS})
    assert len(new.media) == MAX_MEDIA_PARTS


@pytest.mark.parametrize(
    "media_urls",
    [
        {"images": [IMAGE] * 6, "documents": ["https://a.example/d.pdf"] * 5},
        [{"type": "image", "url": IMAGE}] * (MAX_MEDIA_PARTS + 1),
    ],
    ids=["dict", "parts"],
)
def test_more_than_ten_media_parts_are_refused(media_urls: object) -> None:
    with pytest.raises(InvalidMessage) as caught:
        validate("923001234567", media_urls=media_urls)
    assert caught.value.field == "media_urls"
    assert caught.value.text == "must have at most 10 parts, got 11"


def _with(field: str, value: str) -> dict[str, object]:
    """validate() keyword arguments that put `value` in one field of an otherwise good message."""
    document = {"type": "document", "url": "https://a.example/d.pdf"}
    image = {"type": "image", "url": IMAGE}
    cases: dict[str, dict[str, object]] = {
        "message": {"message": value},
        "idempotency_key": {"message": "hi", "idempotency_key": value},
        "media_urls.images[0]": {"media_urls": {"images": [value]}},
        "media_urls[0].url": {"media_urls": [{**image, "url": value}]},
        "media_urls[0].caption": {"media_urls": [{**image, "caption": value}]},
        "media_urls[0].filename": {"media_urls": [{**document, "filename": value}]},
    }
    return cases[field]


_STRING_FIELDS = [
    ("message", "hi {} there"),
    ("idempotency_key", "key-{}"),
    ("media_urls.images[0]", "https://a.example/{}.jpg"),
    ("media_urls[0].url", "https://a.example/{}.jpg"),
    ("media_urls[0].caption", "caption {}"),
    ("media_urls[0].filename", "file{}.pdf"),
]


@pytest.mark.parametrize(("field", "template"), _STRING_FIELDS)
def test_nul_character_is_refused_naming_the_field(field: str, template: str) -> None:
    with pytest.raises(InvalidMessage) as caught:
        validate("923001234567", **_with(field, template.format("\x00")))
    assert caught.value.field == field
    assert "NUL" in caught.value.text


@pytest.mark.parametrize(("field", "template"), _STRING_FIELDS)
@pytest.mark.parametrize(
    "surrogate",
    [chr(0xD800), chr(0xDFFF), chr(0xD83D) + chr(0xDE00)],  # lone, lone, a pair of code points
    ids=["high", "low", "pair"],
)
def test_surrogate_code_point_is_refused_naming_the_field(
    field: str, template: str, surrogate: str
) -> None:
    with pytest.raises(InvalidMessage) as caught:
        validate("923001234567", **_with(field, template.format(surrogate)))
    assert caught.value.field == field
    assert "surrogate" in caught.value.text


def test_other_control_characters_in_text_are_kept() -> None:
    assert validate("923001234567", "a\x01b\tc\x7f").message == "a\x01b\tc\x7f"


@pytest.mark.parametrize(
    ("written", "stored"),
    [
        ("HTTPS://cdn.example.com/a.jpg", "https://cdn.example.com/a.jpg"),
        ("Http://cdn.example.com/A.JPG", "http://cdn.example.com/A.JPG"),
        ("hTTpS://CDN.example.com/a.jpg?X=Y", "https://CDN.example.com/a.jpg?X=Y"),
    ],
)
def test_url_scheme_is_stored_lowercase_and_the_rest_unchanged(written: str, stored: str) -> None:
    assert validate("923001234567", media_urls={"images": [written]}).media[0]["url"] == stored
    part = {"type": "image", "url": written}
    assert validate("923001234567", media_urls=[part]).media[0]["url"] == stored


@pytest.mark.parametrize(
    "url",
    [
        "\x01https://a.example/x.jpg",
        "https://a.example/\x1bx.jpg",
        "https://a.example/x\x7f.jpg",
        "https://a.example/x\x85.jpg",
    ],
)
def test_control_character_in_url_is_refused(url: str) -> None:
    with pytest.raises(InvalidMessage, match="control characters") as caught:
        validate("923001234567", media_urls={"images": [url]})
    assert caught.value.field == "media_urls.images[0]"


def test_url_with_an_impossible_port_is_refused() -> None:
    with pytest.raises(InvalidMessage, match=r"(?i)port") as caught:
        validate("923001234567", media_urls={"images": ["https://a.example:99999/x.jpg"]})
    assert caught.value.field == "media_urls.images[0]"


@pytest.mark.parametrize("value", [b"https://a.example/x.jpg", 42, None, ["x"]])
def test_non_string_url_is_refused(value: object) -> None:
    with pytest.raises(InvalidMessage, match="URL string") as caught:
        validate("923001234567", media_urls=[{"type": "image", "url": value}])
    assert caught.value.field == "media_urls[0].url"


@pytest.mark.parametrize("value", [b"x.pdf", 42, ["x.pdf"]])
def test_non_string_filename_is_refused(value: object) -> None:
    part = {"type": "document", "url": "https://a.example/d.pdf", "filename": value}
    with pytest.raises(InvalidMessage) as caught:
        validate("923001234567", media_urls=[part])
    assert caught.value.field == "media_urls[0].filename"


@pytest.mark.parametrize("field", ["send_at", "expires_at"])
@pytest.mark.parametrize(
    "when",
    [
        datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5))),  # before year 1 in UTC
        datetime(9999, 12, 31, 23, tzinfo=timezone(-timedelta(hours=5))),  # after 9999 in UTC
        datetime.min.replace(tzinfo=UTC),  # asyncpg would store -infinity
        datetime.max.replace(tzinfo=UTC),  # and +infinity
    ],
)
def test_time_outside_the_storable_range_is_refused(field: str, when: datetime) -> None:
    with pytest.raises(InvalidMessage, match="between") as caught:
        validate("923001234567", "hi", **{field: when})
    assert caught.value.field == field


def test_naive_expires_at_is_refused() -> None:
    with pytest.raises(InvalidMessage, match="timezone-aware") as caught:
        validate("923001234567", "hi", expires_at=datetime(2030, 1, 1))
    assert caught.value.field == "expires_at"


def test_expires_at_must_be_a_datetime() -> None:
    with pytest.raises(InvalidMessage, match="must be a datetime") as caught:
        validate("923001234567", "hi", expires_at="2030-01-01T00:00:00+00:00")
    assert caught.value.field == "expires_at"


def test_expires_at_is_kept() -> None:
    when = datetime(2030, 1, 1, 9, tzinfo=timezone(timedelta(hours=5)))
    assert validate("923001234567", "hi", expires_at=when).expires_at == when


@pytest.mark.parametrize("gap", [timedelta(0), -timedelta(minutes=1)])
def test_expires_at_must_be_later_than_send_at(gap: timedelta) -> None:
    send_at = datetime(2030, 1, 1, tzinfo=UTC)
    with pytest.raises(InvalidMessage, match="later than send_at") as caught:
        validate("923001234567", "hi", send_at=send_at, expires_at=send_at + gap)
    assert caught.value.field == "expires_at"


def test_expires_at_after_send_at_is_accepted() -> None:
    send_at = datetime(2030, 1, 1, tzinfo=UTC)
    new = validate("923001234567", "hi", send_at=send_at, expires_at=send_at + timedelta(hours=1))
    assert new.expires_at == send_at + timedelta(hours=1)


class _BrokenZone(tzinfo):
    """A caller's time zone whose offset cannot be read."""

    def utcoffset(self, dt: datetime | None) -> timedelta:
        return timedelta(hours=30)  # datetime refuses offsets of a day or more

    def dst(self, dt: datetime | None) -> timedelta:
        return timedelta(0)

    def tzname(self, dt: datetime | None) -> str:
        return "broken"


def test_time_zone_with_an_unreadable_offset_is_refused() -> None:
    with pytest.raises(InvalidMessage, match="UTC offset") as caught:
        validate("923001234567", "hi", send_at=datetime(2030, 1, 1, tzinfo=_BrokenZone()))
    assert caught.value.field == "send_at"


@pytest.mark.parametrize("field", ["send_at", "expires_at"])
def test_times_are_stored_as_the_same_instant_in_utc(field: str) -> None:
    # PostgreSQL takes offsets below 16 h without fractions of a second; Python allows more.
    when = datetime(2030, 1, 1, tzinfo=timezone(timedelta(hours=20, microseconds=1)))
    stored = getattr(validate("923001234567", "hi", **{field: when}), field)
    assert (stored, stored.utcoffset()) == (when, timedelta(0))


def test_every_rule_id_the_package_raises_is_documented_in_the_readme() -> None:
    root = Path(__file__).resolve().parents[2]
    raised = {
        match
        for path in (root / "outbox").rglob("*.py")
        for match in re.findall(r'rule="([a-z_]+)"', path.read_text())
    }
    table = (root / "README.md").read_text().split("### Validation errors", 1)[1]
    documented = set(re.findall(r"`([a-z_]+)`", table.split("\n## ", 1)[0]))
    assert raised, "no rule ids found: the pattern no longer matches the code"
    assert raised <= documented, f"undocumented rule ids: {sorted(raised - documented)}"


@pytest.mark.parametrize(
    ("kind", "url"),
    [
        ("image", "https://cdn.example.com/a.gif"),
        ("image", "https://cdn.example.com/a.webp"),
        ("video", "https://cdn.example.com/a.mov"),
        ("document", "https://cdn.example.com/a.png"),
    ],
    ids=["gif-image", "webp-image", "mov-video", "png-document"],
)
def test_a_link_whose_extension_meta_does_not_take_for_its_kind_is_refused(
    kind: str, url: str
) -> None:
    with pytest.raises(InvalidMessage) as caught:
        normalize_media([{"type": kind, "url": url}])
    assert caught.value.field == "media_urls[0].url"
    assert caught.value.rule == "media_type"


@pytest.mark.parametrize(
    ("kind", "url"),
    [
        ("image", "https://cdn.example.com/a.JPG"),
        ("image", "https://cdn.example.com/render?id=7"),
        ("document", "https://cdn.example.com/invoice.pdf?X-Amz-Signature=abc"),
        ("audio", "https://cdn.example.com/note.opus"),
        ("video", "https://cdn.example.com/clip.3gp"),
    ],
    ids=["upper-case-jpg", "no-extension", "presigned-pdf", "opus", "3gp"],
)
def test_a_link_of_a_type_meta_takes_or_of_no_known_type_is_kept(kind: str, url: str) -> None:
    assert normalize_media([{"type": kind, "url": url}])[0]["type"] == kind
