"""The long-running commands (`outbox run`, `outbox webhook`) leave what they started with out of
the garbage collector's passes, and collect young objects in bulk: a daemon makes a few hundred
objects a message, and the defaults spent ~15% of its CPU collecting them."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from outbox import serve
from outbox.settings import Settings


@pytest.fixture
def collector_seen(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """The collector's settings when the command's event loop would start (it does not)."""
    seen: dict[str, Any] = {}
    threshold = gc.get_threshold()

    def run(main: Callable[[], Any]) -> int:
        seen.update(threshold=gc.get_threshold(), frozen=gc.get_freeze_count())
        return 0

    monkeypatch.setattr(serve, "_run", run)
    try:
        yield seen
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


def test_outbox_run_freezes_what_it_started_with_and_collects_young_objects_in_bulk(
    collector_seen: dict[str, Any],
) -> None:
    assert serve.run_daemon(Settings(), drain=True, http_port=None) == 0
    assert collector_seen["threshold"][0] == serve.YOUNG_GENERATION
    assert collector_seen["frozen"] > 0


def test_outbox_webhook_freezes_what_it_started_with_and_collects_young_objects_in_bulk(
    collector_seen: dict[str, Any],
) -> None:
    settings = Settings(app_secret="an-app-secret-0000", webhook_verify_token="verify")
    assert serve.run_webhook(settings, host="127.0.0.1", port=0) == 0
    assert collector_seen["threshold"][0] == serve.YOUNG_GENERATION
    assert collector_seen["frozen"] > 0
