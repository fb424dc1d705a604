"""`outbox check`: one line per check, the fix for each failure, exit 1 when any fails, and never
a secret."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from outbox import Settings
from outbox.cli import main
from outbox.simulator import Simulator
from outbox.webhooks import create_app
from tests.daemon_helpers import PHONE, TOKEN

pytestmark = pytest.mark.timeout(60)
APP_SECRET = "check-app-secret"
VERIFY_TOKEN = "check-verify-token"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def configured(
    monkeypatch: pytest.MonkeyPatch, database_url: str, simulator: Simulator
) -> pytest.MonkeyPatch:
    """The environment of a working installation, against the simulator."""
    for name, value in {
        "OUTBOX_DATABASE_URL": database_url,
        "META_ACCESS_TOKEN": TOKEN,
        "META_PHONE_NUMBER_ID": PHONE,
        "META_GRAPH_API_URL": simulator.url,  # type: ignore[attr-defined]
        "META_APP_SECRET": APP_SECRET,
        "META_WEBHOOK_VERIFY_TOKEN": VERIFY_TOKEN,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("OUTBOX_WEBHOOK_URL", raising=False)
    return monkeypatch


@pytest.fixture
async def receiver(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    """A running webhook receiver; its /webhook URL."""
    settings = Settings(
        database_url=database_url, app_secret=APP_SECRET, webhook_verify_token=VERIFY_TOKEN
    )
    app = create_app(settings, spool_dir=tmp_path_factory.mktemp("spool"))
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}/webhook"
    await runner.cleanup()


async def check(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str]]:
    code = await asyncio.to_thread(main, ["check", *argv])
    out, err = capsys.readouterr()
    assert err == ""
    return code, out.splitlines()


def state(lines: list[str], name: str) -> str:
    (line,) = [line for line in lines if line.split()[1] == name]
    return line


async def test_a_working_installation_passes_every_check(
    configured: pytest.MonkeyPatch, receiver: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, lines = await check(capsys, "--webhook-url", receiver)
    assert code == 0, lines
    assert [line.split()[:2] for line in lines] == [
        ["ok", "database"],
        ["ok", "schema"],
        ["ok", "token"],
        ["ok", "webhook"],
        ["ok", "verification"],
    ]


async def test_the_receiver_url_may_come_from_the_environment(
    configured: pytest.MonkeyPatch, receiver: str, capsys: pytest.CaptureFixture[str]
) -> None:
    configured.setenv("OUTBOX_WEBHOOK_URL", receiver)
    code, lines = await check(capsys)
    assert code == 0
    assert state(lines, "webhook").startswith("ok")


async def test_without_a_receiver_url_its_check_is_skipped_saying_how_to_give_one(
    configured: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, lines = await check(capsys)
    assert code == 0
    assert state(lines, "webhook").startswith("skip")
    assert "OUTBOX_WEBHOOK_URL" in state(lines, "webhook")


async def test_an_unmigrated_database_fails_and_says_to_migrate(
    configured: pytest.MonkeyPatch, empty_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    configured.setenv("OUTBOX_DATABASE_URL", empty_database_url)
    code, lines = await check(capsys)
    assert code == 1
    assert state(lines, "database").startswith("ok")
    assert state(lines, "schema").startswith("FAIL")
    assert "fix: run `outbox migrate`" in state(lines, "schema")


async def test_an_unreachable_database_fails_without_its_password(
    configured: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    configured.setenv(
        "OUTBOX_DATABASE_URL", f"postgresql://app:s3cret-pw@127.0.0.1:{free_port()}/x"
    )
    code, lines = await check(capsys)
    assert code == 1
    assert state(lines, "database").startswith("FAIL")
    assert "fix: set OUTBOX_DATABASE_URL" in state(lines, "database")
    assert "s3cret-pw" not in "\n".join(lines)


async def test_a_wrong_token_fails_saying_to_create_a_new_one_and_is_never_printed(
    configured: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    configured.setenv("META_ACCESS_TOKEN", "EAAG-not-the-right-token")
    code, lines = await check(capsys)
    assert code == 1
    assert state(lines, "token").startswith("FAIL")
    assert "#190" in state(lines, "token") or "(190)" in state(lines, "token")
    assert "set META_ACCESS_TOKEN" in state(lines, "token")
    assert "EAAG-not-the-right-token" not in "\n".join(lines)


async def test_a_phone_number_id_the_token_cannot_see_fails_saying_where_to_find_it(
    configured: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    configured.setenv("META_PHONE_NUMBER_ID", "999999")
    code, lines = await check(capsys)
    assert code == 1
    assert "WhatsApp Manager" in state(lines, "token")


async def test_missing_token_and_phone_number_id_are_named_together(
    configured: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    configured.delenv("META_ACCESS_TOKEN")
    configured.delenv("META_PHONE_NUMBER_ID")
    code, lines = await check(capsys)
    assert code == 1
    assert "META_ACCESS_TOKEN and META_PHONE_NUMBER_ID are not set" in state(lines, "token")


async def test_a_receiver_that_is_not_running_fails_with_the_fix(
    configured: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, lines = await check(capsys, "--webhook-url", f"http://127.0.0.1:{free_port()}/webhook")
    assert code == 1
    assert state(lines, "webhook").startswith("FAIL")
    assert "start `outbox webhook` there" in state(lines, "webhook")


async def test_a_receiver_with_another_verify_token_fails_verification_without_printing_it(
    configured: pytest.MonkeyPatch, receiver: str, capsys: pytest.CaptureFixture[str]
) -> None:
    configured.setenv("META_WEBHOOK_VERIFY_TOKEN", "another-verify-token")
    code, lines = await check(capsys, "--webhook-url", receiver)
    assert code == 1
    assert state(lines, "verification").startswith("FAIL")
    assert "another-verify-token" not in "\n".join(lines)


async def test_check_json_lists_every_check_with_its_state_and_fix(
    configured: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    configured.setenv("META_ACCESS_TOKEN", "EAAG-not-the-right-token")
    code = await asyncio.to_thread(main, ["check", "--json"])
    checks = json.loads(capsys.readouterr().out)
    assert code == 1
    assert [(c["check"], c["state"]) for c in checks] == [
        ("database", "ok"),
        ("schema", "ok"),
        ("token", "FAIL"),
        ("webhook", "skip"),
    ]
    assert "META_ACCESS_TOKEN" in checks[2]["fix"]
