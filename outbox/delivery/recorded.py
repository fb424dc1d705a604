"""What became of an accepted part's record, and the daemon's line when its row stops there.

A part Meta accepted but no row holds is named with its wamid: it may have been sent twice.
"""

from __future__ import annotations

import enum
import logging
import uuid
from dataclasses import dataclass

logger = logging.getLogger("outbox.recorder")


@dataclass(frozen=True)
class AcceptedPart:
    row_id: int
    token: uuid.UUID
    index: int
    wamid: str
    final: bool


class Recorded(enum.Enum):
    """What became of an accepted part's record."""

    GOING_ON = "written; the row goes on"
    ROW_FAILED = "written; a status webhook failed the row meanwhile"
    ON_ROW = "on the row all the same: an earlier try's answer was lost, or a takeover wrote it"
    ROW_GONE = "not written: the row was deleted"
    NOT_OURS = "not written: the row was taken over"
    UNREAD = "not known: the row could not be read back"

    @property
    def unwritten(self) -> bool:
        """The part may be on no row: sent twice, if the row's holder sends it again."""
        return self in (Recorded.NOT_OURS, Recorded.UNREAD)


def log_refused(part: AcceptedPart, recorded: Recorded) -> None:
    """Why the row stops after `part`, which Meta accepted: a part left unwritten is named with
    its wamid, for whoever finds it sent twice."""
    if recorded is Recorded.ROW_FAILED:
        logger.warning("message %d: stopping: a status webhook failed it", part.row_id)
        return
    if recorded is Recorded.ON_ROW:
        logger.warning(
            "message %d: stopping: part %d is on the row, though this daemon's write of it was "
            "refused (an earlier try's answer was lost, or the row was taken over)",
            part.row_id,
            part.index + 1,
        )
        return
    if recorded is Recorded.ROW_GONE:
        logger.info(
            "message %d: stopping: the row was deleted (part %d was accepted as %s)",
            part.row_id,
            part.index + 1,
            part.wamid,
        )
        return
    if recorded is Recorded.UNREAD:
        why = "its write was refused and the row could not be read back"
    else:
        why = "the row is no longer this daemon's (its lease ran out and it was taken over)"
    logger.warning(
        "message %d: part %d was accepted as %s but not recorded: %s, so the part may be sent "
        "again",
        part.row_id,
        part.index + 1,
        part.wamid,
        why,
        extra={"row_id": part.row_id, "part": part.index + 1, "wamid": part.wamid},
    )
