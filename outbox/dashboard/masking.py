"""What a user may see of a phone number or a message body: a viewer sees the country code and
the last four digits, and no body at all."""

from __future__ import annotations

import phonenumbers


def _country_code(digits: str) -> str:
    try:
        return str(phonenumbers.parse("+" + digits).country_code)
    except phonenumbers.NumberParseException:
        return digits[:2]


def show_phone(digits: str, *, unmasked: bool) -> str:
    """`+92 300 1234567` for those who may see it, `+92 ***4567` for the others."""
    if not unmasked:
        return f"+{_country_code(digits)} ***{digits[-4:]}"
    try:
        number = phonenumbers.parse("+" + digits)
    except phonenumbers.NumberParseException:
        return "+" + digits
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)


def show_body(text: str | None, *, unmasked: bool) -> str | None:
    """The text, or only how long it is."""
    if text is None or unmasked:
        return text
    return f"(hidden: {len(text)} characters)"
