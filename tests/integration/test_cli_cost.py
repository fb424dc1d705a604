"""`outbox stats --cost`: the cost ledger priced with the rate card, through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.test_cli import run, sql

CARD = """\
country,category,currency,price,valid_from
IN,marketing,USD,0.0107,2025-07-01
IN,marketing,USD,0.0118,2026-10-01
*,utility,USD,0.0040,2025-07-01
"""


@pytest.fixture
def rate_card(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "rates.csv"
    path.write_text(CARD)
    monkeypatch.setenv("OUTBOX_RATE_CARD", str(path))
    return path


def part(
    database_url: str,
    wamid: str,
    billed_at: str,
    *,
    country: str = "IN",
    category: str = "marketing",
    kind: str = "regular",
    billable: bool = True,
    ours: bool = True,
    template: str | None = "promo",
) -> None:
    owner = "1" if ours else "NULL"
    name = f"'{template}'" if template else "NULL"
    sql(
        database_url,
        "INSERT INTO outbox_costs (wamid, message_id, part, template, country, category, "
        "pricing_type, pricing_model, billable, billed_at) VALUES "
        f"('{wamid}', {owner}, 0, {name}, '{country}', '{category}', '{kind}', 'PMP', "
        f"{billable}, '{billed_at}')",
    )


def cost(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, object]:
    code, out, err = run(capsys, "stats", "--cost", "--json", *argv)
    assert (code, err) == (0, "")
    document: dict[str, object] = json.loads(out)
    return document


def test_stats_cost_totals_every_charged_part_exactly(
    cli_env: str, rate_card: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for n in range(3):
        part(cli_env, f"wamid.{n}", "2026-09-01T10:00:00Z")
    part(cli_env, "wamid.u", "2026-09-01T10:00:00Z", country="BR", category="utility")
    total = cost(capsys)["total"]
    assert total == {"group": "total", "messages": 4, "unpriced": 0, "amounts": {"USD": "0.0361"}}


def test_stats_cost_new_rate_prices_only_parts_billed_from_its_start_date(
    cli_env: str, rate_card: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    part(cli_env, "wamid.before", "2026-09-30T23:59:59Z")
    part(cli_env, "wamid.on", "2026-10-01T00:00:00Z")
    groups = cost(capsys, "--by", "day")["groups"]
    assert groups == [
        {"group": "2026-09-30", "messages": 1, "unpriced": 0, "amounts": {"USD": "0.0107"}},
        {"group": "2026-10-01", "messages": 1, "unpriced": 0, "amounts": {"USD": "0.0118"}},
    ]


def test_stats_cost_counts_a_part_without_a_rate_as_unpriced(
    cli_env: str, rate_card: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    part(cli_env, "wamid.auth", "2026-09-01T10:00:00Z", category="authentication")
    total = cost(capsys)["total"]
    assert total == {"group": "total", "messages": 1, "unpriced": 1, "amounts": {}}


def test_stats_cost_says_the_amounts_leave_unpriced_parts_out(
    cli_env: str, rate_card: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    part(cli_env, "wamid.auth", "2026-09-01T10:00:00Z", category="authentication")
    code, out, _ = run(capsys, "stats", "--cost")
    assert code == 0
    assert "unpriced: 1 charged messages have no rate" in out


def test_stats_cost_by_template_groups_by_the_rows_template(
    cli_env: str, rate_card: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    part(cli_env, "wamid.a", "2026-09-01T10:00:00Z", template="promo")
    part(cli_env, "wamid.b", "2026-09-01T10:00:00Z", template="winback")
    groups = cost(capsys, "--by", "template")["groups"]
    assert [group["group"] for group in groups] == ["promo", "winback"]  # type: ignore[index]


def test_stats_cost_since_leaves_out_parts_billed_before(
    cli_env: str, rate_card: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    part(cli_env, "wamid.old", "2026-09-01T10:00:00Z")
    part(cli_env, "wamid.new", "2026-10-02T10:00:00Z")
    total = cost(capsys, "--since", "2026-10-01")["total"]
    assert total["messages"] == 1  # type: ignore[index]


def test_stats_cost_leaves_free_and_other_deployments_parts_out_of_the_totals(
    cli_env: str, rate_card: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    part(cli_env, "wamid.free", "2026-09-01T10:00:00Z", kind="free_entry_point", billable=False)
    part(cli_env, "wamid.theirs", "2026-09-01T10:00:00Z", ours=False)
    document = cost(capsys)
    assert document["total"]["messages"] == 0  # type: ignore[index]
    assert document["not_charged"] == {"free_entry_point (not billable)": 1}
    assert document["others_charged"] == 1


def test_stats_cost_shows_amounts_rounded_to_the_cent(
    cli_env: str, rate_card: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for n in range(5):
        part(cli_env, f"wamid.{n}", "2026-09-01T10:00:00Z")
    code, out, _ = run(capsys, "stats", "--cost", "--by", "country")
    assert code == 0
    assert "IN                               5         0  0.05 USD" in out


def test_stats_cost_without_a_rate_card_says_how_to_price(
    cli_env: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OUTBOX_RATE_CARD", raising=False)
    part(cli_env, "wamid.a", "2026-09-01T10:00:00Z")
    code, out, _ = run(capsys, "stats", "--cost")
    assert code == 0
    assert "no rate card: set OUTBOX_RATE_CARD to price them" in out


def test_stats_cost_with_a_broken_rate_card_is_one_line_naming_the_row(
    cli_env: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "rates.csv"
    path.write_text("country,category,currency,price,valid_from\nIN,marketing,USD,x,2026-01-01\n")
    monkeypatch.setenv("OUTBOX_RATE_CARD", str(path))
    code, _, err = run(capsys, "stats", "--cost")
    assert code == 1
    assert err == f"outbox: {path} row 2: price must be a number of at least 0, e.g. 0.0125\n"


def test_stats_by_country_without_cost_is_a_usage_error(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "stats", "--by", "country")
    assert (code, err) == (2, "outbox stats: --by country needs --cost\n")


def test_stats_cost_by_code_is_a_usage_error(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "stats", "--cost", "--by", "code")
    assert code == 2
    assert "--cost takes --by day, template, country, category" in err
