"""CLI errors name their real cause: a busy port, a missing file, a wrong database, bad usage."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from outbox.cli import main
from tests.conftest import with_database


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port something else is listening on."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


def test_a_simulator_port_in_use_says_so(
    busy_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "simulator", "--port", str(busy_port)) == (
        1,
        "",
        f"outbox: cannot listen on 127.0.0.1:{busy_port}: the port is already in use\n",
    )


def test_a_daemon_http_port_in_use_says_so_before_anything_is_sent(
    cli_env: str,
    busy_port: int,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("META_ACCESS_TOKEN", "token-for-the-port-test")
    monkeypatch.setenv("META_PHONE_NUMBER_ID", "100000000000001")
    code, out, err = run(capsys, "run", "--drain", "--http-port", str(busy_port))
    assert (code, out) == (1, "")
    assert err.endswith(
        f"outbox: cannot listen on 127.0.0.1:{busy_port}: the port is already in use\n"
    )
    assert "PostgreSQL" not in err


def test_a_webhook_receiver_port_in_use_says_so(
    cli_env: str,
    busy_port: int,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("META_APP_SECRET", "app-secret-for-the-port-test")
    monkeypatch.setenv("META_WEBHOOK_VERIFY_TOKEN", "verify-token-for-the-port-test")
    code, out, err = run(capsys, "webhook", "--port", str(busy_port))
    assert (code, out) == (1, "")
    assert err == f"outbox: cannot listen on 127.0.0.1:{busy_port}: the port is already in use\n"


def test_a_missing_scenario_file_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.json"
    assert run(capsys, "simulator", "--scenario", str(missing)) == (
        1,
        "",
        f"outbox: --scenario {missing}: No such file or directory\n",
    )


def test_a_scenario_file_that_is_not_json_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = tmp_path / "scenario.json"
    scenario.write_text("{recipients: nope")
    code, out, err = run(capsys, "simulator", "--scenario", str(scenario))
    assert (code, out) == (1, "")
    assert err.startswith(f"outbox: --scenario {scenario}: not JSON (")


def test_a_database_that_does_not_exist_is_named_once_without_a_class_name(
    server_dsn: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OUTBOX_DATABASE_URL", with_database(server_dsn, "no_such_outbox_db"))
    code, out, err = run(capsys, "list")
    assert (code, out) == (1, "")
    assert err.startswith("outbox: cannot connect to PostgreSQL (")
    assert err.endswith(': database "no_such_outbox_db" does not exist\n')
    assert "Error" not in err


def test_a_role_that_does_not_exist_is_named(
    server_dsn: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    parts = urlsplit(server_dsn)
    address = parts.netloc.rpartition("@")[2]
    url = urlunsplit(parts._replace(netloc=f"no_such_outbox_role@{address}"))
    monkeypatch.setenv("OUTBOX_DATABASE_URL", url)
    code, _, err = run(capsys, "stats")
    assert code == 1
    assert 'role "no_such_outbox_role" does not exist' in err
    assert err.count("\n") == 1


@pytest.mark.parametrize("limit", ["0", "10001", "20000", "many"])
def test_a_list_limit_out_of_range_is_bad_usage(
    limit: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "list", "--limit", limit)
    assert (code, out) == (2, "")
    assert err == (
        f"outbox list: argument --limit: invalid limit {limit!r}: "
        "must be an integer from 1 to 10000\n"
    )


def test_a_fail_rate_above_one_is_bad_usage(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "simulator", "--fail-rate", "2")
    assert code == 2
    assert "--fail-rate" in err
    assert "from 0 to 1" in err
