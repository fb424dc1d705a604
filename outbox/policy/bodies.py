"""The changes of stored webhook bodies, read leniently for the rules: what is malformed is
skipped, since the body itself stays stored and the receiver has already answered Meta."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Change:
    """One `entry[].changes[]` item whose `value` is an object."""

    entry: dict[str, Any]
    field: object
    value: dict[str, Any]


def changes(bodies: Iterable[bytes]) -> Iterator[Change]:
    """Every change of the bodies, in arrival order."""
    for body in bodies:
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            continue
        for entry in dicts(data.get("entry") if isinstance(data, dict) else None):
            for change in dicts(entry.get("changes")):
                value = change.get("value")
                if isinstance(value, dict):
                    yield Change(entry, change.get("field"), value)


def dicts(value: object) -> list[dict[str, Any]]:
    """The objects of a JSON list; nothing for anything else."""
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []
