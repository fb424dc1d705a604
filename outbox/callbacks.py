"""What ties a status webhook to our send: the callback data we attach, and the customer Meta
reports the status for.

Callback data is `outbox:<installation>:<row>:<part>`. Row ids are unique only inside one
database, so the installation id (kept in `outbox_installation`) tells two deployments on one
number apart; the old form `outbox:<row>:<part>` is still read for rows sent before it existed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from outbox import store
from outbox.connections import fetch_one
from outbox.pool import Pool

_CALLBACK = re.compile(r"^outbox:(?:([a-z0-9]{8,32}):)?(\d{1,18}):(\d{1,4})$")


@dataclass(frozen=True)
class Callback:
    installation: str | None  # None: the old form, from before installations
    row: int
    part: int


def callback_data(installation: str, row: int, part: int) -> str:
    return f"outbox:{installation}:{row}:{part}"


def parse_callback(text: object) -> Callback | None:
    """Our callback data, or None for anything else (another integration's, or none)."""
    match = _CALLBACK.match(text) if isinstance(text, str) else None
    if match is None:
        return None
    return Callback(match.group(1), int(match.group(2)), int(match.group(3)))


def same_customer(recipient: str, wa_id: str) -> bool:
    """Whether Meta's `recipient_id` (the WhatsApp id) is the number we sent to. Meta normalises
    some numbers: Brazil's mobile ninth digit and Mexico's mobile `1` may be absent on one side,
    and Argentina's mobile `9` after 54."""
    if recipient == wa_id:
        return True
    longer, shorter = (recipient, wa_id) if len(recipient) > len(wa_id) else (wa_id, recipient)
    if len(longer) != len(shorter) + 1:
        return False
    if longer.startswith("55") and len(longer) == 13 and longer[4] == "9":
        return longer[:4] + longer[5:] == shorter
    if longer.startswith("521") and len(longer) == 13:
        return "52" + longer[3:] == shorter
    if longer.startswith("549"):  # Argentina's mobile 9
        return "54" + longer[3:] == shorter
    return False


async def installation_id(pool: Pool) -> str:
    """This database's installation id (created by migration 0007)."""
    async with pool.connect() as conn:
        row = await fetch_one(conn, store.INSTALLATION_ID)
    if row is None:
        raise LookupError("outbox_installation is empty: run `outbox migrate`")
    return str(row["id"])
