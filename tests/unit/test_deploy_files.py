"""The files under deploy/ stay in step with the command line they run."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from outbox.arguments import build_parser

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
UNITS = sorted(DEPLOY.glob("*.service"))


def unit_commands(unit: Path) -> list[list[str]]:
    """The argv of every ExecStart/ExecStartPre line of a systemd unit that runs outbox."""
    commands = []
    for line in unit.read_text().splitlines():
        key, _, value = line.partition("=")
        if key in ("ExecStart", "ExecStartPre"):
            argv = shlex.split(value)
            assert Path(argv[0]).name == "outbox", line
            commands.append(argv[1:])
    return commands


def dockerfile_instruction(name: str) -> list[str]:
    """The exec-form (JSON) argument list of a Dockerfile instruction."""
    match = re.search(rf"^{name} (\[.*\])$", (DEPLOY / "Dockerfile").read_text(), re.MULTILINE)
    assert match, f"no exec-form {name} in the Dockerfile"
    value: list[str] = json.loads(match.group(1))
    return value


@pytest.mark.parametrize("unit", UNITS, ids=lambda unit: unit.name)
def test_every_systemd_command_line_parses(unit: Path) -> None:
    commands = unit_commands(unit)
    assert commands
    for argv in commands:
        build_parser().parse_args(argv)


@pytest.mark.parametrize("unit", UNITS, ids=lambda unit: unit.name)
def test_every_systemd_unit_runs_as_its_own_user_with_the_env_file(unit: Path) -> None:
    text = unit.read_text()
    assert "\nUser=outbox\n" in text
    assert "\nEnvironmentFile=/etc/outbox/outbox.env\n" in text


def test_the_daemon_unit_migrates_first_and_outlasts_the_shutdown_bound() -> None:
    unit = DEPLOY / "outbox.service"
    assert unit_commands(unit)[0] == ["migrate"]
    stop = re.search(r"^TimeoutStopSec=(\d+)$", unit.read_text(), re.MULTILINE)
    assert stop
    assert int(stop.group(1)) > 30


def test_the_image_runs_the_daemon_as_a_non_root_user() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    users = re.findall(r"^USER (\S+)$", text, re.MULTILINE)
    assert users
    assert users[-1] not in ("root", "0")
    assert dockerfile_instruction("ENTRYPOINT") == ["outbox"]
    args = build_parser().parse_args(dockerfile_instruction("CMD"))
    all_interfaces = "0.0.0.0"  # noqa: S104 - a container must be reachable from outside
    assert (args.command, args.http_host, args.log_format) == ("run", all_interfaces, "json")
    assert f"127.0.0.1:{args.http_port}/healthz" in text


@pytest.mark.parametrize("name", ["outbox.service", "outbox-webhook.service"])
def test_long_running_units_raise_the_open_files_limit(name: str) -> None:
    limit = re.search(r"^LimitNOFILE=(\d+)$", (DEPLOY / name).read_text(), re.MULTILINE)
    assert limit
    assert int(limit.group(1)) >= 65536


def test_the_receiver_unit_gives_its_spool_a_writable_home() -> None:
    text = (DEPLOY / "outbox-webhook.service").read_text()
    assert "\nEnvironment=OUTBOX_HOME=/var/lib/outbox\n" in text
    assert "\nStateDirectory=outbox\n" in text
