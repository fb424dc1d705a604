"""`outbox enqueue --dry-run`: validated like enqueue, nothing written, the category and the rate
card's estimate for the recipient's country (or why there is none)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.test_cli import run, sql

CARD = """\
country,category,currency,price,valid_from
IN,marketing,USD,0.0107,2025-07-01
IN,marketing,USD,0.0118,2026-10-01
*,utility,USD,0.0040,2025-07-01
"""
TEMPLATE = ("--template", "promo", "--language", "en")


@pytest.fixture
def rate_card(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "rates.csv"
    path.write_text(CARD)
    monkeypatch.setenv("OUTBOX_RATE_CARD", str(path))
    return path


def dry_run(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code, out, err = run(capsys, "enqueue", "--dry-run", *argv)
    assert (code, err) == (0, "")
    return out


def test_dry_run_writes_nothing(
    cli_env: str, rate_card: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dry_run(capsys, "919876543210", *TEMPLATE, "--category", "marketing")
    assert sql(cli_env, "SELECT count(*) FROM outbox_messages") == [(0,)]


def test_dry_run_prices_a_template_by_its_category_and_the_recipients_country(
    rate_card: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = dry_run(
        capsys, "919876543210", *TEMPLATE, "--category", "marketing", "--send-at", "2026-09-01"
    )
    assert "recipient  919876543210 (IN)" in out
    assert "category   marketing" in out
    assert "estimate   0.0107 USD per message (marketing rate for IN from 2025-07-01)" in out


def test_dry_run_uses_the_rate_valid_at_send_at(
    rate_card: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = dry_run(
        capsys, "919876543210", *TEMPLATE, "--category", "marketing", "--send-at", "2026-10-01"
    )
    assert "0.0118 USD per message (marketing rate for IN from 2026-10-01)" in out


def test_dry_run_free_form_is_a_free_service_message(
    rate_card: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = dry_run(capsys, "919876543210", "Your order shipped")
    assert "category   service" in out
    assert "estimate   0: free-form messages go only inside the customer service window" in out


def test_dry_run_template_without_category_says_why_there_is_no_estimate(
    rate_card: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = dry_run(capsys, "919876543210", *TEMPLATE)
    assert "estimate   none: the template's category is unknown (give --category)" in out


def test_dry_run_without_a_rate_card_says_so(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OUTBOX_RATE_CARD", raising=False)
    out = dry_run(capsys, "919876543210", *TEMPLATE, "--category", "utility")
    assert "estimate   none: no rate card (set OUTBOX_RATE_CARD to a rate card file)" in out


def test_dry_run_names_a_category_the_rate_card_lacks(
    rate_card: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = dry_run(
        capsys, "919876543210", *TEMPLATE, "--category", "authentication", "--send-at", "2026-09-01"
    )
    assert "none: the rate card has no authentication rate for IN or * valid on 2026-09-01" in out


def test_dry_run_refuses_an_invalid_message_as_enqueue_does(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run(capsys, "enqueue", "--dry-run", "919876543210", "x" * 5000)
    assert (code, out) == (1, "")
    assert err.startswith("outbox: invalid message:")


def test_category_is_stored_with_an_enqueued_template(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "enqueue", "919876543210", *TEMPLATE, "--category", "utility")
    assert (code, err) == (0, "")
    assert sql(cli_env, f"SELECT category FROM outbox_messages WHERE id = {out}") == [("utility",)]


def test_category_without_a_template_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "enqueue", "919876543210", "hi", "--category", "utility")
    assert (code, err) == (2, "outbox enqueue: --category needs --template\n")
