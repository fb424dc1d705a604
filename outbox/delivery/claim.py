"""A claimed row: what the daemon holds the lease of while it sends the row's parts."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any


@dataclass(eq=False)
class Claim:
    """A row this daemon holds the lease of. `lease_until` and `deadline` are event-loop times:
    when the lease runs out unless extended, and when the row expires (None: never)."""

    id: int
    recipient: str
    message: str | None
    media: Any  # the media parts (or their JSON text, as claimed)
    accepted: int
    attempts: int
    in_doubt: int
    token: uuid.UUID
    lease_until: float
    template: Any = None  # Meta's template object (or its JSON text, as claimed)
    deadline: float | None = None
    probe: bool = False  # claimed while sending is stopped, to find out whether it works again
    taken_over: bool = False  # from an expired lease: its next part may have been sent already
    lost: bool = False  # another worker holds the row now: send nothing more
    settling: bool = False  # every part sent; only the last one's recording is left
    requests: int = 0  # requests made under this claim (a later one checks the row first)
    sender: str = ""  # the phone number id it goes from (the row's, else the default)
    # Seconds until its (sender, recipient) pair's pacing clock, as the last daemon to send that
    # conversation left it (None: no recent send).
    pair_due_in: float | None = None
    # Nothing of it sent yet and it has a fallback template: a 131047 gives it back, to go as
    # its fallback (outbox/policy/).
    fallback_on_131047: bool = False


def leases(claims: list[Claim]) -> dict[str, list[Any]]:
    """The (row id, lease token) pairs of claims, as the array parameters store.py expects."""
    return {"ids": [c.id for c in claims], "tokens": [c.token for c in claims]}
