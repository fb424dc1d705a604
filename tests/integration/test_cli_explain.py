"""`outbox status` explains a failed message's Graph code in the dashboard's words."""

from __future__ import annotations

import pytest

from outbox.explain import explain_line
from tests.integration.test_cli import enqueue, run, sql


def test_status_of_a_failed_message_says_what_its_code_means_and_what_to_do(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    message_id = enqueue(capsys, "923001234567", "hi")
    sql(
        cli_env,
        "UPDATE outbox_messages SET status = 'failed', error_code = 131047, "
        f"last_error = 'Re-engagement message' WHERE id = {message_id} RETURNING id",
    )
    _, text, _ = run(capsys, "status", str(message_id))
    assert f"meaning         {explain_line(131047)}\n" in text
    assert "send a template instead" in text


def test_status_of_a_message_without_an_error_has_no_meaning_line_to_give(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    message_id = enqueue(capsys, "923001234567", "hi")
    _, text, _ = run(capsys, "status", str(message_id))
    assert "meaning         -\n" in text
