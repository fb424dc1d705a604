"""The charts' shapes: scaled to the busiest bucket or bar, with a summary that reads alone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from outbox.dashboard import charts

START = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)


def _buckets(*counts: tuple[int, int]) -> list[charts.Bucket]:
    return [
        charts.Bucket(START + timedelta(minutes=10 * i), sent, failed)
        for i, (sent, failed) in enumerate(counts)
    ]


def test_the_busiest_bucket_fills_the_height() -> None:
    chart = charts.timeline(_buckets((6, 2), (2, 0)), title="t", width=200, height=100)
    busiest, other = chart.columns
    assert busiest.sent_height + busiest.failed_height == 100
    assert busiest.failed_y == 0
    assert other.sent_height == 25


def test_failures_stack_on_the_sends() -> None:
    (column,) = charts.timeline(_buckets((3, 1)), title="t", height=100).columns
    assert column.failed_y + column.failed_height == column.sent_y


def test_the_summary_gives_the_totals() -> None:
    chart = charts.timeline(_buckets((3, 1), (4, 0)), title="Sends")
    assert chart.summary == "Sends: 7 sent, 1 failed; busiest bucket 4"


def test_an_empty_period_draws_no_column() -> None:
    assert charts.timeline(_buckets((0, 0), (0, 0)), title="t").columns == []


def test_the_largest_bar_takes_the_room_and_the_others_their_share() -> None:
    chart = charts.ranking([("#131026", 4), ("#131047", 1)], title="by code", width=300)
    first, second = chart.bars
    assert first.width == round(300 - 300 * 0.45 - 50, 1)
    assert second.width == round(first.width / 4, 1)
    assert chart.summary == "by code: #131026 4, #131047 1"
