"""The guarantees a round must keep, counted from the rows and the simulator's log.

Lost: a committed row missing, failed without a reason the scenario allows, or with a recorded
wamid the API never accepted for that part. Stuck: pending or sending after the final drain.
Resent: a part requested again after its wamid was recorded. A part accepted more than once is
in doubt only if each acceptance whose wamid was not recorded is explained: by a doubtful answer
(the connection dropped after the accept, or the answer came after the client's timeout), or by
its daemon being SIGKILLed at most KILL_WINDOW seconds later. Order: per recipient, the first
acceptances of parts follow (row id, part).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from outbox.callbacks import parse_callback

KILL_WINDOW = 2.0  # seconds from an accepted answer to its wamid's write, at the most
DOUBTFUL_STEPS = ("accept_and_drop", "delay")  # the simulator accepted; the answer was lost
TERMINAL = ("sent", "delivered", "read", "failed", "cancelled")


@dataclass(frozen=True)
class StoredRow:
    id: int
    recipient: str
    status: str
    last_error: str | None
    parts: list[tuple[str, float]]  # (wamid, when it was recorded), in part order


@dataclass(frozen=True)
class Evidence:
    """What a round leaves behind once its final drain has finished."""

    committed: dict[int, int]  # row id -> number of parts
    rows: dict[int, StoredRow]
    accepted: list[dict[str, Any]]  # the simulator's log, in acceptance order
    kills: dict[str, float]  # simulator host of each SIGKILLed daemon -> when it died
    names: dict[str, str]  # simulator host -> daemon name, for the notes
    requests: int


@dataclass
class Figures:
    scenario: str
    rows: int = 0
    requests: int = 0
    accepted: int = 0
    duplicated: int = 0
    in_doubt: int = 0
    resent: int = 0
    lost: int = 0
    stuck: int = 0
    order: int = 0
    failed: int = 0
    phantom: int = 0  # rows never committed that were sent
    crashed: int = 0  # daemons that did not exit 0 when asked to stop (or drained)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)  # reasons of failed rows
    suspects: set[int] = field(default_factory=set)  # rows a violation names, for their history

    @property
    def unexplained(self) -> int:
        return self.duplicated - self.in_doubt

    def violations(self) -> list[str]:
        counts = {
            "lost": self.lost,
            "stuck": self.stuck,
            "order violations": self.order,
            "parts resent after their wamid was recorded": self.resent,
            "duplicated parts not in doubt": self.unexplained,
            "rolled-back rows sent": self.phantom,
            "daemons that did not exit 0": self.crashed,
        }
        return [f"{name}: {count}" for name, count in counts.items() if count]


AllowFailure = Callable[[StoredRow], bool]


def never(row: StoredRow) -> bool:
    return False


def in_doubt_limit(row: StoredRow) -> bool:
    """The row failed after too many sends with an unknown outcome (retry.MAX_IN_DOUBT)."""
    return (row.last_error or "").startswith("in doubt")


def count(scenario: str, evidence: Evidence, allow_failure: AllowFailure = never) -> Figures:
    """The round's figures; `allow_failure` says which failed rows the scenario justifies."""
    figures = Figures(
        scenario,
        rows=len(evidence.committed),
        requests=evidence.requests,
        accepted=len(evidence.accepted),
    )
    sends = _sends_by_part(evidence.accepted)
    _check_rows(figures, evidence, sends, allow_failure)
    _check_duplicates(figures, evidence, sends)
    _check_order(figures, evidence)
    never_committed = sorted({row for row, _ in sends} - set(evidence.committed))
    figures.phantom = len(never_committed)
    if never_committed:
        figures.notes.append(f"rows sent but never committed: {never_committed[:10]}")
    return figures


def _sends_by_part(accepted: list[dict[str, Any]]) -> dict[tuple[int, int], list[dict[str, Any]]]:
    sends: dict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)
    for entry in accepted:
        callback = parse_callback(entry["callback"])
        assert callback is not None, f"not our callback data: {entry['callback']!r}"
        sends[callback.row, callback.part].append(entry)
    return sends


def _check_rows(
    figures: Figures,
    evidence: Evidence,
    sends: dict[tuple[int, int], list[dict[str, Any]]],
    allow_failure: AllowFailure,
) -> None:
    for row_id, expected in sorted(evidence.committed.items()):
        row = evidence.rows.get(row_id)
        if row is None:
            figures.lost += 1
            figures.notes.append(f"row {row_id}: committed, then gone")
            continue
        if row.status not in TERMINAL:
            figures.stuck += 1
            figures.notes.append(f"row {row_id}: still {row.status} ({row.last_error})")
            continue
        problems = []
        for index, (wamid, _) in enumerate(row.parts):
            if wamid not in {send["wamid"] for send in sends.get((row_id, index), [])}:
                problems.append(f"part {index} recorded as {wamid}, never accepted for it")
        if row.status == "sent" and len(row.parts) != expected:
            problems.append(f"sent with {len(row.parts)} of {expected} parts recorded")
        if row.status == "failed":
            figures.failed += 1
            figures.failures[(row.last_error or "")[:48]] += 1
            if not allow_failure(row):
                problems.append(f"failed: {row.last_error}")
        if row.status == "cancelled":
            problems.append("cancelled by nobody")
        if problems:
            figures.lost += 1
            figures.suspects.add(row_id)
            figures.notes.append(f"row {row_id} ({row.status}): {'; '.join(problems)}")


def _check_duplicates(
    figures: Figures, evidence: Evidence, sends: dict[tuple[int, int], list[dict[str, Any]]]
) -> None:
    for (row_id, index), entries in sorted(sends.items()):
        row = evidence.rows.get(row_id)
        if row_id not in evidence.committed or row is None:
            continue
        recorded = row.parts[index] if index < len(row.parts) else None
        if recorded is not None and any(e["received"] > recorded[1] for e in entries):
            figures.resent += 1
            figures.suspects.add(row_id)
            figures.notes.append(f"part {row_id}:{index} requested again after it was recorded")
        if len(entries) < 2:
            continue
        figures.duplicated += 1
        unrecorded = [e for e in entries if recorded is None or e["wamid"] != recorded[0]]
        if all(_explained(e, evidence.kills) for e in unrecorded):
            figures.in_doubt += 1
        else:
            figures.suspects.add(row_id)
            figures.notes.append(
                f"part {row_id}:{index} sent {len(entries)} times, not in doubt: "
                + ", ".join(_describe(e, evidence) for e in entries)
            )


def _explained(send: dict[str, Any], kills: dict[str, float]) -> bool:
    """An acceptance whose wamid could not be recorded through no fault of the daemon."""
    if send["step"] in DOUBTFUL_STEPS:
        return True
    killed_at = kills.get(send["host"])
    return killed_at is not None and send["at"] >= killed_at - KILL_WINDOW


def _describe(send: dict[str, Any], evidence: Evidence) -> str:
    who = evidence.names.get(send["host"], send["host"])
    killed_at = evidence.kills.get(send["host"])
    death = f", killed {killed_at - send['at']:+.3f}s later" if killed_at else ""
    return f"{send['step']} by {who} at {send['at'] % 1000:.3f}{death}"


def _check_order(figures: Figures, evidence: Evidence) -> None:
    """Per recipient, count parts first accepted after a later (row, part) was."""
    latest: dict[str, tuple[int, int]] = {}
    seen: set[tuple[int, int]] = set()
    for entry in evidence.accepted:
        callback = parse_callback(entry["callback"])
        assert callback is not None, f"not our callback data: {entry['callback']!r}"
        key = (callback.row, callback.part)
        if key in seen or key[0] not in evidence.committed:
            continue
        seen.add(key)
        before = latest.get(entry["to"])
        if before is not None and key < before:
            figures.order += 1
            figures.notes.append(f"to {entry['to']}: part {key} first sent after {before}")
        else:
            latest[entry["to"]] = key


def record_lag(evidence: Evidence) -> float:
    """The longest time from an accepted answer to its wamid's write (for the kill window)."""
    at = {entry["wamid"]: entry["at"] for entry in evidence.accepted}
    lags = [
        when - at[wamid]
        for row in evidence.rows.values()
        for wamid, when in row.parts
        if wamid in at
    ]
    return max(lags, default=0.0)


COLUMNS = (
    ("scenario", "scenario", "<32"),  # at least: widened to the longest name
    ("rows", "rows", ">6"),
    ("requests", "requests", ">8"),
    ("accepted", "accepted", ">8"),
    ("duplicated", "dup parts", ">9"),
    ("in_doubt", "in doubt", ">8"),
    ("resent", "resent", ">6"),
    ("lost", "lost", ">4"),
    ("stuck", "stuck", ">5"),
    ("order", "order", ">5"),
    ("failed", "failed", ">6"),
    ("phantom", "phantom", ">7"),
    ("crashed", "bad exits", ">9"),
    ("seconds", "seconds", ">7"),
)


LEGEND = """\
rows: committed rows; requests: POSTs the API received; accepted: sends it accepted
dup parts: parts accepted more than once; in doubt: those explained by a SIGKILL or a lost answer
resent: parts requested again after their wamid was recorded; lost, stuck, order: violations
failed: rows failed for a reason the scenario allows; phantom: rolled-back rows sent
bad exits: daemons that did not exit 0 on SIGTERM, or a final drain that did not"""


def table(rounds: list[Figures]) -> str:
    """The figures of every round, one line each; the scenario column as wide as its longest
    name, so that the columns stay aligned."""
    width = max([32, *(len(figures.scenario) for figures in rounds)])
    columns = [
        (name, title, f"<{width}" if name == "scenario" else align)
        for name, title, align in COLUMNS
    ]
    header = " ".join(f"{title:{align}}" for _, title, align in columns)
    lines = [header, "-" * len(header)]
    for figures in rounds:
        cells = []
        for name, _, align in columns:
            value = getattr(figures, name)
            cells.append(f"{value:{align}.1f}" if isinstance(value, float) else f"{value:{align}}")
        lines.append(" ".join(cells))
    return "\n".join(lines)
