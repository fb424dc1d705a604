"""The figures themselves: each broken guarantee is counted, and excused duplicates are only the
ones in doubt (no database, no daemon: a round's evidence written by hand)."""

from __future__ import annotations

from typing import Any

from tests.chaos.invariants import Evidence, Figures, StoredRow, count, in_doubt_limit, table

TO = "923000000001"


def send(row: int, part: int, at: float, *, host: str = "a", step: str = "ok") -> dict[str, Any]:
    return {
        "wamid": f"w{row}.{part}.{at}",
        "to": TO,
        "callback": f"outbox:{row}:{part}",
        "at": at,
        "received": at - 0.01,
        "host": host,
        "step": step,
    }


def row(row_id: int, status: str, *sends: dict[str, Any], error: str | None = None) -> StoredRow:
    parts = [(s["wamid"], s["at"] + 0.01) for s in sends]
    return StoredRow(row_id, TO, status, error, parts)


def evidence(rows: list[StoredRow], accepted: list[dict[str, Any]], **kwargs: Any) -> Evidence:
    return Evidence(
        committed=kwargs.pop("committed", {r.id: 1 for r in rows}),
        rows={r.id: r for r in rows},
        accepted=accepted,
        kills=kwargs.pop("kills", {}),
        names={},
        requests=len(accepted),
    )


def test_a_clean_round_breaks_nothing() -> None:
    first, second = send(1, 0, 10.0), send(2, 0, 11.0)
    figures = count(
        "clean", evidence([row(1, "sent", first), row(2, "sent", second)], [first, second])
    )
    assert figures.violations() == []
    assert (figures.rows, figures.accepted, figures.duplicated) == (2, 2, 0)


def test_missing_stuck_and_unjustly_failed_rows_are_counted() -> None:
    rows = [row(2, "pending"), row(3, "failed", error="(#131000) boom")]
    figures = count("broken", evidence(rows, [], committed={1: 1, 2: 1, 3: 1}))
    assert (figures.lost, figures.stuck, figures.failed) == (2, 1, 1)


def test_a_failure_the_scenario_allows_is_not_lost() -> None:
    failed = row(1, "failed", error="in doubt after 3 sends, it may have been sent")
    figures = count("allowed", evidence([failed], []), in_doubt_limit)
    assert (figures.lost, figures.failed) == (0, 1)


def test_a_recorded_wamid_the_api_never_accepted_is_lost() -> None:
    accepted = send(1, 0, 10.0)
    stored = StoredRow(1, TO, "sent", None, [("wamid.never", 10.5)])
    assert count("phantom wamid", evidence([stored], [accepted])).lost == 1


def test_a_duplicate_is_in_doubt_only_when_explained() -> None:
    lost_answer, retry = send(1, 0, 10.0, step="accept_and_drop"), send(1, 0, 10.5)
    killed, resend = send(2, 0, 20.0, host="dead"), send(2, 0, 23.0, host="b")
    silent, again = send(3, 0, 30.0, host="alive"), send(3, 0, 33.0, host="b")
    rows = [row(1, "sent", retry), row(2, "sent", resend), row(3, "sent", again)]
    accepted = [lost_answer, retry, killed, resend, silent, again]
    figures = count("duplicates", evidence(rows, accepted, kills={"dead": 20.3}))
    assert (figures.duplicated, figures.in_doubt) == (3, 2)
    assert figures.violations() == ["duplicated parts not in doubt: 1"]


def test_a_part_requested_after_its_wamid_was_recorded_is_resent() -> None:
    first, later = send(1, 0, 10.0), send(1, 0, 12.0)
    figures = count("resent", evidence([row(1, "sent", first)], [first, later]))
    assert figures.resent == 1


def test_parts_first_sent_out_of_row_order_are_counted() -> None:
    later_row, earlier_row = send(2, 0, 10.0), send(1, 0, 11.0)
    rows = [row(1, "sent", earlier_row), row(2, "sent", later_row)]
    assert count("order", evidence(rows, [later_row, earlier_row])).order == 1


def test_rows_never_committed_must_never_be_sent() -> None:
    rolled_back = send(7, 0, 10.0)
    assert count("phantom", evidence([], [rolled_back], committed={})).phantom == 1


def test_the_figures_table_keeps_its_columns_aligned_with_a_long_scenario_name() -> None:
    rounds = [
        Figures("short", rows=120, seconds=4.0),
        Figures("answers lost with the connection, receiver, and more", rows=7, seconds=1.5),
    ]
    header, rule, *lines = table(rounds).splitlines()
    assert len(rule) == len(header)
    assert all(len(line) == len(header) for line in lines)
    rows_end = header.index("rows") + len("rows")
    assert [line[rows_end - 4 : rows_end] for line in lines] == [" 120", "   7"]
