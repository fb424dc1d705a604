"""As root, the embedded server must never open a home directory to other users."""

from __future__ import annotations

from pathlib import Path

import pytest

from outbox import ConfigurationError, embedded


def test_root_refuses_a_data_directory_inside_root_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded.os, "geteuid", lambda: 0)
    with pytest.raises(ConfigurationError, match=r"inside the home directory /root"):
        embedded.check_root_safety(Path("/root/.local/share/outbox"), "OUTBOX_HOME")


def test_root_accepts_the_default_system_location(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded.os, "geteuid", lambda: 0)
    embedded.check_root_safety(Path("/var/lib/outbox"), "OUTBOX_HOME")


def test_a_regular_user_may_keep_data_in_their_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded.os, "geteuid", lambda: 1000)
    embedded.check_root_safety(Path("/home/ana/.local/share/outbox"), "OUTBOX_HOME")
