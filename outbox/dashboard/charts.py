"""Charts drawn on the server as inline SVG: no script, no chart library. This module computes
the shapes; templates/charts.html draws them (autoescaped like every page). Each chart carries a
one-line summary, its title and text alternative, so it reads without the picture too."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Bucket:
    start: datetime
    sent: int
    failed: int


@dataclass(frozen=True)
class Column:
    """One bucket: its sent bar from the baseline, its failed bar stacked on top."""

    x: float
    width: float
    sent_y: float
    sent_height: float
    failed_y: float
    failed_height: float
    tip: str


@dataclass(frozen=True)
class Timeline:
    width: int
    height: int
    columns: list[Column]
    first: str
    last: str
    summary: str


@dataclass(frozen=True)
class Bar:
    label: str
    value: int
    y: float
    width: float


@dataclass(frozen=True)
class Ranking:
    width: int
    height: int
    row: int
    label_width: float
    bars: list[Bar]
    summary: str


def timeline(
    buckets: Sequence[Bucket], *, title: str, width: int = 720, height: int = 150
) -> Timeline:
    """Sent and failed stacked per bucket, oldest on the left, scaled to the busiest."""
    top = max((b.sent + b.failed for b in buckets), default=0)
    sent = sum(b.sent for b in buckets)
    failed = sum(b.failed for b in buckets)
    summary = f"{title}: {sent} sent, {failed} failed; busiest bucket {top}"
    columns = []
    if top:
        step = width / len(buckets)
        for i, bucket in enumerate(buckets):
            sent_h = height * bucket.sent / top
            failed_h = height * bucket.failed / top
            columns.append(
                Column(
                    x=round(i * step, 1),
                    width=round(max(step - 1, 1), 1),
                    sent_y=round(height - sent_h, 1),
                    sent_height=round(sent_h, 1),
                    failed_y=round(height - sent_h - failed_h, 1),
                    failed_height=round(failed_h, 1),
                    tip=f"{bucket.start:%H:%M} UTC: {bucket.sent} sent, {bucket.failed} failed",
                )
            )
    first = f"{buckets[0].start:%d %b %H:%M}" if buckets else ""
    last = f"{buckets[-1].start:%d %b %H:%M} UTC" if buckets else ""
    return Timeline(width, height, columns, first, last, summary)


def ranking(
    items: Sequence[tuple[str, int]], *, title: str, width: int = 340, row: int = 20
) -> Ranking:
    """Horizontal bars in the order given (largest first), each with its label and count."""
    top = max((value for _, value in items), default=0)
    label_width = width * 0.45
    room = width - label_width - 50
    bars = [
        Bar(label, value, i * row, round(room * value / top, 1) if top else 0.0)
        for i, (label, value) in enumerate(items)
    ]
    summary = f"{title}: " + (", ".join(f"{label} {value}" for label, value in items) or "none")
    return Ranking(width, max(len(items), 1) * row, row, label_width, bars, summary)
