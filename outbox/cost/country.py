"""The country a message is priced for: the region of the recipient's country calling code, as
Meta's rate cards are (all of +1 is US, all of +44 GB)."""

from __future__ import annotations

import phonenumbers

UNKNOWN_REGION = "ZZ"


def country_of(number: str | None) -> str | None:
    """The ISO 3166 region of `number`'s calling code (digits, `+` optional), or None."""
    digits = "".join(c for c in number or "" if c.isdigit())
    if not digits:
        return None
    try:
        parsed = phonenumbers.parse("+" + digits)
    except phonenumbers.NumberParseException:
        return None
    if parsed.country_code is None:
        return None
    region = phonenumbers.region_code_for_country_code(parsed.country_code)
    return None if region == UNKNOWN_REGION else str(region)
