"""One customer, however Meta writes the number: the forms to look a recipient up by.

Meta's `wa_id` may drop Brazil's mobile ninth digit, Mexico's mobile `1` after 52, and
Argentina's mobile `9` after 54 (the same quirks as callbacks.same_customer). Our own tables store
the canonical form; outbox_inbound keeps Meta's `from` as received, so it is looked up by every
form.
"""

from __future__ import annotations


def canonical(number: str) -> str:
    """The number without the digit Meta may drop (Brazil's 9, Mexico's 1, Argentina's 9)."""
    if number.startswith("55") and len(number) == 13 and number[4] == "9":
        return number[:4] + number[5:]
    if number.startswith("521") and len(number) == 13:
        return "52" + number[3:]
    if number.startswith("549"):
        return "54" + number[3:]
    return number


def forms(number: str) -> list[str]:
    """Every way Meta may write this customer's number, the given one first."""
    key = canonical(number)
    found = [number, key]
    if key.startswith("55") and len(key) == 12:
        found.append(key[:4] + "9" + key[4:])
    if key.startswith("52") and len(key) == 12:
        found.append("521" + key[2:])
    if key.startswith("54"):
        found.append("549" + key[2:])
    return [form for form in dict.fromkeys(found) if canonical(form) == key]
