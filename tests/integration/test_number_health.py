"""Number health (issue 16, point 6): the quality rating, the tier and account events from Meta's
webhooks, kept by the receiver and shown in the daemon's /metrics and /readyz and in `outbox
stats`; the portfolio's limit they report is the daily limit's budget.

The bodies follow Meta's webhook reference (phone_number_quality_update,
business_capability_update, account_update), whose entry id is the WABA id.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy.ext.asyncio import AsyncEngine

import outbox
from outbox.delivery.daemon import Daemon
from outbox.policy.tier import DailyLimit
from outbox.simulator import Simulator
from tests.integration.test_metrics import (
    eventually,
    get,
    health_url,
    running,
    scrape_daemon,
    value,
)
from tests.integration.test_policy_webhooks import post, receiver
from tests.integration.test_tier_budget import customers, enqueue_templates, run_until
from tests.integration.test_webhooks import scalar

__all__ = ["health_url", "receiver", "running"]  # fixtures, used by name

WABA = "102290129340398"
NUMBER = "15550783881"


def change(field: str, value: dict[str, Any], *, at: int = 1765000000) -> bytes:
    return json.dumps(
        {
            "object": "whatsapp_business_account",
            "entry": [{"id": WABA, "time": at, "changes": [{"value": value, "field": field}]}],
        }
    ).encode()


def quality(event: str, *, at: int = 1765000000, **more: str) -> bytes:
    value = {"display_phone_number": NUMBER, "event": event, **more}
    return change("phone_number_quality_update", value, at=at)


def restriction(*kinds: str, at: int = 1765000000) -> bytes:
    info = [{"restriction_type": k, "expiration": "2099-04-19T13:59:20+0000"} for k in kinds]
    return change(
        "account_update", {"event": "ACCOUNT_RESTRICTION", "restriction_info": info}, at=at
    )


async def started(start: Callable[[outbox.Settings], Daemon], settings: outbox.Settings) -> Daemon:
    """A running daemon once it has read the number health."""
    daemon = start(settings)

    async def read() -> bool:
        return daemon.number_health.health is not None

    await eventually(read, 20, "the number health to be read")
    return daemon


Readyz = Callable[[], Awaitable[tuple[int, Any]]]


@pytest.fixture
def readyz(
    settings: outbox.Settings,
    running: Callable[[outbox.Settings], Daemon],
    health_url: Callable[[Daemon], Awaitable[str]],
) -> Readyz:
    """/readyz's status and body from a daemon started now, once it has read the number health."""

    async def answer() -> tuple[int, Any]:
        url = await health_url(await started(running, settings))
        return await get(f"{url}/readyz")

    return answer


async def test_a_flagged_number_is_stored_red_with_its_tier(
    receiver: TestClient[Any, Any], engine: AsyncEngine
) -> None:
    await post(receiver, engine, quality("FLAGGED", current_limit="TIER_2K"))
    found = await scalar(engine, "SELECT quality || ' ' || limit_tier FROM outbox_number_health")
    assert found == "RED TIER_2K"


async def test_an_older_webhook_arriving_late_changes_nothing(
    receiver: TestClient[Any, Any], engine: AsyncEngine
) -> None:
    await post(receiver, engine, quality("UNFLAGGED", at=1765000100))
    await post(receiver, engine, quality("FLAGGED", at=1765000000))
    assert await scalar(engine, "SELECT quality FROM outbox_number_health") == "GREEN"


async def test_the_portfolio_limit_of_a_quality_webhook_becomes_the_daily_limit(
    receiver: TestClient[Any, Any],
    engine: AsyncEngine,
    settings: outbox.Settings,
    simulator: Simulator,
) -> None:
    body = quality("UPGRADE", current_limit="TIER_10K", max_daily_conversations_per_business="2")
    await post(receiver, engine, body)
    rows = await enqueue_templates(engine, customers(3))
    found = await run_until(settings, engine, rows, {"sent": 2, "tier_budget": 1})
    assert found == {"sent": 2, "tier_budget": 1}


async def test_a_business_capability_update_sets_the_portfolio_limit(
    receiver: TestClient[Any, Any], engine: AsyncEngine
) -> None:
    body = change("business_capability_update", {"max_daily_conversations_per_business": "TIER_2K"})
    await post(receiver, engine, body)
    assert await scalar(engine, "SELECT messaging_limit FROM outbox_account_health") == 2000


async def test_metrics_show_quality_restriction_and_the_limit_in_effect(
    receiver: TestClient[Any, Any],
    engine: AsyncEngine,
    settings: outbox.Settings,
    running: Callable[[outbox.Settings], Daemon],
) -> None:
    await post(receiver, engine, quality("FLAGGED", current_limit="TIER_UNLIMITED"))
    await post(receiver, engine, restriction("RESTRICTED_BIZ_INITIATED_MESSAGING"))
    daemon = await started(running, settings)
    samples = scrape_daemon(daemon)
    assert value(samples, "outbox_number_quality", number=NUMBER) == 0
    assert value(samples, "outbox_account_restricted", waba=WABA) == 1
    assert value(samples, "outbox_messaging_limit", source="webhook") == float("inf")
    assert value(samples, "outbox_messaging_limit_used") == 0


async def test_a_configured_limit_is_the_one_the_metrics_show(
    engine: AsyncEngine, settings: outbox.Settings, running: Callable[[outbox.Settings], Daemon]
) -> None:
    daemon = await started(running, replace(settings, daily_limit=DailyLimit(250)))
    assert value(scrape_daemon(daemon), "outbox_messaging_limit", source="configured") == 250


async def test_readyz_answers_503_while_an_account_update_restricts_messaging(
    receiver: TestClient[Any, Any], engine: AsyncEngine, readyz: Readyz
) -> None:
    await post(receiver, engine, restriction("RESTRICTED_BIZ_INITIATED_MESSAGING"))
    status, body = await readyz()
    assert status == 503
    assert body["reason"].startswith(
        f"account restricted: WABA {WABA}: RESTRICTED_BIZ_INITIATED_MESSAGING until 2099-04-19"
    )


async def test_a_restriction_on_adding_numbers_does_not_stop_readiness(
    receiver: TestClient[Any, Any], engine: AsyncEngine, readyz: Readyz
) -> None:
    await post(receiver, engine, restriction("RESTRICTED_ADD_PHONE_NUMBER_ACTION"))
    status, _ = await readyz()
    assert status == 200


async def test_a_reinstated_account_is_ready_again(
    receiver: TestClient[Any, Any], engine: AsyncEngine, readyz: Readyz
) -> None:
    disabled = {"event": "DISABLED_UPDATE", "ban_info": {"waba_ban_state": "DISABLE"}}
    await post(receiver, engine, change("account_update", disabled, at=1765000000))
    reinstated = {"event": "DISABLED_UPDATE", "ban_info": {"waba_ban_state": "REINSTATE"}}
    await post(receiver, engine, change("account_update", reinstated, at=1765000100))
    status, _ = await readyz()
    assert status == 200


async def test_a_red_quality_rating_is_a_warning_in_readyz_not_a_503(
    receiver: TestClient[Any, Any], engine: AsyncEngine, readyz: Readyz
) -> None:
    await post(receiver, engine, quality("FLAGGED"))
    status, body = await readyz()
    assert (status, body["ready"], body["reason"]) == (200, True, f"quality RED for {NUMBER}")


@pytest.mark.usefixtures("cli_env")
async def test_outbox_stats_has_a_section_on_number_health(
    receiver: TestClient[Any, Any], engine: AsyncEngine, capsys: pytest.CaptureFixture[str]
) -> None:
    from outbox.cli import main

    await post(receiver, engine, quality("FLAGGED", current_limit="TIER_250"))
    await post(receiver, engine, restriction("RESTRICTED_CUSTOMER_INITIATED_MESSAGING"))
    assert await _in_thread(main, ["stats"]) == 0
    text = capsys.readouterr().out
    assert f"number {NUMBER:<14} quality RED, tier TIER_250, last event FLAGGED" in text
    assert f"account {WABA}" in text
    assert "RESTRICTED: RESTRICTED_CUSTOMER_INITIATED" in text
    assert "daily limit           0 of 250 customers in 24 h (webhook)" in text
    assert await _in_thread(main, ["stats", "--json"]) == 0
    health = json.loads(capsys.readouterr().out)["number_health"]
    assert health["numbers"][0]["quality"] == "RED"
    assert health["daily_limit"] == {"limit": "250", "source": "webhook", "used": 0}


async def _in_thread(function: Callable[[list[str]], int], argv: list[str]) -> int:
    import asyncio

    return await asyncio.to_thread(function, argv)
