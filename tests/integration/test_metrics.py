"""Metrics and health on a real PostgreSQL: `outbox run --http-port` scraped during and after a
drain, error and pause series, the backlog gauges, /healthz and /readyz, and the webhook
receiver's /metrics. Every scrape is parsed with prometheus_client's own parser."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import AsyncEngine

import outbox
from outbox import serve
from outbox.delivery import daemon as daemon_module
from outbox.delivery import turn as turn_module
from outbox.delivery.daemon import Daemon
from outbox.metrics.backlog import BacklogGauges
from outbox.metrics.daemon import DaemonMetrics
from outbox.pool import Pool
from outbox.simulator import Simulator
from outbox.webhooks import create_app
from outbox.webhooks.payload import sign
from tests.daemon_helpers import IMAGE, TOKEN, daemon_env, enqueue, script
from tests.integration.test_webhooks import (
    SECRET,
    VERIFY_TOKEN,
    envelope,
    example_status,
    post,
    sent_row,
)
from tests.proxy import PostgresProxy

pytestmark = pytest.mark.timeout(120)
BIN = Path(sys.executable).parent
TEMPLATE = '{"name": "booking_confirmed", "language": {"code": "en"}}'

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of a scrape, by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def total(samples: Samples, name: str) -> float:
    """The sum of a metric over all its label values."""
    return sum(v for (n, _), v in samples.items() if n == name)


def errors(samples: Samples) -> dict[tuple[str, str], float]:
    """outbox_send_errors_total as {(code, class): count}."""
    return {
        (dict(labels)["code"], dict(labels)["class"]): v
        for (name, labels), v in samples.items()
        if name == "outbox_send_errors_total"
    }


def scrape_daemon(daemon: Daemon) -> Samples:
    return parse(generate_latest(daemon.metrics.registry).decode())


async def eventually(check: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def _true(value: bool) -> bool:
    return value


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
async def running() -> AsyncIterator[Callable[[outbox.Settings], Daemon]]:
    """Start daemons in the background; each is stopped (and awaited) after the test."""
    started: list[tuple[Daemon, asyncio.Task[int]]] = []

    def start(settings: outbox.Settings) -> Daemon:
        daemon = Daemon(settings)
        started.append((daemon, asyncio.create_task(daemon.run())))
        return daemon

    yield start
    for daemon, _ in started:
        daemon.stop()
    for _, task in started:
        await asyncio.wait_for(task, 30)


@pytest.fixture
async def health_url() -> AsyncIterator[Callable[[Daemon], Awaitable[str]]]:
    """Serve a daemon's /metrics, /healthz and /readyz; the base URL."""
    runners: list[web.AppRunner] = []

    async def start(daemon: Daemon) -> str:
        runner = await serve._health_server(daemon, "127.0.0.1", 0)
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    yield start
    for runner in runners:
        await runner.cleanup()


async def get(url: str) -> tuple[int, Any]:
    """GET url: the status, and the body as JSON (or text)."""
    async with aiohttp.ClientSession() as http, http.get(url) as answer:
        if answer.content_type == "application/json":
            return answer.status, await answer.json()
        return answer.status, await answer.text()


# --- a real `outbox run --http-port` --------------------------------------------------------


async def fill(database_url: str, rows: int) -> dict[str, int]:
    """`rows` rows of each shape (text; an image and a text; a template), over many recipients;
    the parts to send, by kind."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO outbox_messages (recipient, message, media, template) "
            "SELECT '92300' || lpad(i::text, 7, '0'), "
            "       CASE WHEN i % 3 = 2 THEN NULL ELSE 'message ' || i END, "
            "       CASE WHEN i % 3 = 1 THEN jsonb_build_array(jsonb_build_object("
            "           'type', 'image', 'url', $2::text)) ELSE '[]'::jsonb END, "
            "       CASE WHEN i % 3 = 2 THEN $3::jsonb END "
            "FROM generate_series(0, $1 * 3 - 1) AS i",
            rows,
            IMAGE,
            TEMPLATE,
        )
    finally:
        await conn.close()
    return {"text": 2 * rows, "image": rows, "template": rows}


@pytest.fixture
async def daemon_process(
    database_url: str, simulator: Simulator
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """`outbox run --http-port P` against the simulator; the process and its base URL."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        str(BIN / "outbox"),
        "run",
        "--http-port",
        str(port),
        "--concurrency",
        "8",
        "--rate",
        "5000",
        "--poll-interval",
        "0.5",
        env=daemon_env(database_url, simulator),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        yield process, url
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 0, stderr.decode()[-2000:]


async def scrape(url: str) -> Samples:
    status, text = await get(f"{url}/metrics")
    assert status == 200
    return parse(text)


async def served(url: str, within: float = 20) -> None:
    async def answers() -> bool:
        with contextlib.suppress(aiohttp.ClientError):
            return (await get(f"{url}/healthz"))[0] == 200
        return False

    await eventually(answers, within, "the daemon's HTTP server")


async def test_a_scrape_during_a_drain_counts_no_more_than_the_api_accepted(
    database_url: str,
    simulator: Simulator,
    daemon_process: tuple[asyncio.subprocess.Process, str],
) -> None:
    simulator.latency_ms = 50
    parts = await fill(database_url, 100)
    _, url = daemon_process
    await served(url)
    await asyncio.wait_for(simulator.wait_for_accepted(100), 30)
    before = len(simulator.accepted)
    during = await scrape(url)
    after = len(simulator.accepted)
    sent = total(during, "outbox_messages_sent_total")
    assert before - 8 <= sent <= after < sum(parts.values()), "a scrape mid-way, truthful"
    assert 0 <= value(during, "outbox_in_flight") <= 8
    assert value(during, "outbox_pending_messages") > 0
    assert value(during, "outbox_send_duration_seconds_count") >= sent


async def test_after_a_drain_sent_counts_every_accepted_part_by_kind(
    database_url: str,
    simulator: Simulator,
    daemon_process: tuple[asyncio.subprocess.Process, str],
) -> None:
    parts = await fill(database_url, 50)
    _, url = daemon_process
    await served(url)
    await asyncio.wait_for(simulator.wait_for_accepted(sum(parts.values())), 60)

    async def settled() -> bool:
        samples = await scrape(url)
        return value(samples, "outbox_pending_messages") == 0 and total(
            samples, "outbox_messages_sent_total"
        ) == sum(parts.values())

    await eventually(settled, 15, "the backlog gauges to see the drain done")
    samples = await scrape(url)
    by_kind = {
        kind: value(samples, "outbox_messages_sent_total", kind=kind)
        for kind in ("text", "image", "video", "document", "audio", "template")
    }
    assert by_kind == {**dict.fromkeys(by_kind, 0.0), **parts}
    assert value(samples, "outbox_send_duration_seconds_count") == simulator.requests
    assert errors(samples) == {}
    assert value(samples, "outbox_messages_failed_total") == 0
    assert value(samples, "outbox_in_flight") == 0
    assert value(samples, "outbox_oldest_pending_seconds") == 0


async def test_the_metrics_answer_in_prometheus_text_format(
    database_url: str, daemon_process: tuple[asyncio.subprocess.Process, str]
) -> None:
    _, url = daemon_process
    await served(url)
    async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as answer:
        assert answer.status == 200
        assert answer.headers["Content-Type"].startswith("text/plain; version=")
        text = await answer.text()
    assert "# TYPE outbox_messages_sent_total counter" in text
    assert "# TYPE outbox_send_duration_seconds histogram" in text
    assert TOKEN not in text


# --- errors, failures, pauses (in-process daemons, scraped from their registries) -------------


async def test_send_errors_are_counted_by_graph_code_or_transport_and_class(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    script(simulator, "923001000001", {"error": 131026})  # permanent: fails the row
    script(simulator, "923001000002", {"error": 131000})  # HTTP 500: retried at once
    script(simulator, "923001000003", {"raw": "<html>bad gateway</html>", "http": 502})
    for recipient in ("923001000001", "923001000002", "923001000003"):
        await enqueue(engine, recipient, "hello")
    daemon = Daemon(settings, drain=True)
    assert await asyncio.wait_for(daemon.run(), 30) == 0
    samples = scrape_daemon(daemon)
    assert errors(samples) == {
        ("131026", "permanent"): 1,
        ("131000", "transient"): 1,
        ("transport", "transient"): 1,
    }
    assert value(samples, "outbox_messages_sent_total", kind="text") == 2
    assert value(samples, "outbox_send_duration_seconds_count") == 5


async def test_failed_counts_rows_that_end_failed(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator, database_url: str
) -> None:
    script(simulator, "923001000001", {"error": 131026})
    await enqueue(engine, "923001000001", "undeliverable")
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO outbox_messages (recipient, message, expires_at) "
            "VALUES ('923001000002', 'too late', now() - interval '1 second')"
        )
    finally:
        await conn.close()
    await enqueue(engine, "923001000003", "fine")
    daemon = Daemon(settings, drain=True)
    assert await asyncio.wait_for(daemon.run(), 30) == 0
    assert value(scrape_daemon(daemon), "outbox_messages_failed_total") == 2


async def test_paused_is_1_for_the_account_reason_during_a_190_pause_and_0_after(
    engine: AsyncEngine,
    settings: outbox.Settings,
    simulator: Simulator,
    running: Callable[[outbox.Settings], Daemon],
) -> None:
    script(simulator, "923001234567", {"error": 190, "times": 3})
    await enqueue(engine, "923001234567", "hello")
    daemon = running(replace(settings, pause_probe=0.5))
    await eventually(lambda: _true(daemon.paused_reason is not None), 10, "a pause")
    samples = scrape_daemon(daemon)
    paused = {r: value(samples, "outbox_paused", reason=r) for r in ("account", "outage")}
    assert paused == {"account": 1, "outage": 0}
    assert errors(samples) == {("190", "account"): 1}

    async def resumed() -> bool:
        return value(scrape_daemon(daemon), "outbox_paused", reason="account") == 0

    await eventually(resumed, 20, "a probe to succeed and the pause to end")
    assert len(simulator.accepted) == 1


async def test_paused_is_1_for_the_outage_reason_while_the_api_is_down(
    engine: AsyncEngine,
    settings: outbox.Settings,
    simulator: Simulator,
    running: Callable[[outbox.Settings], Daemon],
) -> None:
    simulator.fail_rate = 1.0
    for n in range(10):
        await enqueue(engine, f"92300100{n:04d}", "hello")
    daemon = running(settings)
    await eventually(lambda: _true(daemon.health()["status"] == "outage"), 10, "an outage")
    samples = scrape_daemon(daemon)
    assert value(samples, "outbox_paused", reason="outage") == 1
    assert value(samples, "outbox_paused", reason="account") == 0


async def test_paused_is_1_for_the_throttle_reason_while_the_sender_is_held(
    engine: AsyncEngine,
    settings: outbox.Settings,
    simulator: Simulator,
    running: Callable[[outbox.Settings], Daemon],
) -> None:
    script(simulator, "923001234567", {"error": 130429, "retry_after": 30})
    await enqueue(engine, "923001234567", "hello")
    daemon = running(settings)
    await eventually(lambda: _true(daemon.health()["status"] == "held"), 10, "a hold")
    samples = scrape_daemon(daemon)
    assert value(samples, "outbox_paused", reason="throttle") == 1
    assert errors(samples) == {("130429", "throttle"): 1}


async def test_paused_is_1_for_the_template_reason_while_meta_pauses_a_template(
    engine: AsyncEngine,
    settings: outbox.Settings,
    simulator: Simulator,
    running: Callable[[outbox.Settings], Daemon],
) -> None:
    script(simulator, "923001234567", {"error": 132015})
    async with engine.begin() as conn:
        await outbox.enqueue(
            conn, "923001234567", template=outbox.Template("booking_confirmed", "en")
        )
    daemon = running(settings)
    await eventually(lambda: _true(bool(daemon.paused_reasons())), 10, "a template hold")
    samples = scrape_daemon(daemon)
    assert value(samples, "outbox_paused", reason="template") == 1
    assert value(samples, "outbox_paused", reason="account") == 0
    assert daemon.health()["ready"], "a paused template holds its rows only"


async def test_in_flight_counts_the_rows_being_sent(
    engine: AsyncEngine,
    settings: outbox.Settings,
    simulator: Simulator,
    running: Callable[[outbox.Settings], Daemon],
) -> None:
    for n in range(3):
        script(simulator, f"92300100{n:04d}", {"delay_ms": 2000})
        await enqueue(engine, f"92300100{n:04d}", "slow")
    daemon = running(settings)
    await eventually(lambda: _true(simulator.requests == 3), 10, "three requests")
    assert value(scrape_daemon(daemon), "outbox_in_flight") == 3


async def test_no_secret_or_error_text_reaches_the_metrics(
    engine: AsyncEngine,
    settings: outbox.Settings,
    simulator: Simulator,
    running: Callable[[outbox.Settings], Daemon],
) -> None:
    simulator.access_token = "another-token"  # every request: 190 Invalid OAuth access token
    await enqueue(engine, "923001234567", "hello")
    daemon = running(settings)
    await eventually(lambda: _true(daemon.paused_reason is not None), 10, "a pause")
    text = generate_latest(daemon.metrics.registry).decode()
    for secret in (TOKEN, "another-token", "OAuth", "923001234567"):
        assert secret not in text


# --- the backlog gauges ---------------------------------------------------------------------


async def _insert_pending(database_url: str) -> None:
    """Three pending rows: due for 30 s, due for 10 s, and scheduled for an hour from now."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO outbox_messages (recipient, message, available_at) VALUES "
            "('923001000001', 'a', now() - interval '30 seconds'), "
            "('923001000002', 'b', now() - interval '10 seconds'), "
            "('923001000003', 'c', now() + interval '1 hour')"
        )
        await conn.execute(
            "INSERT INTO outbox_messages (recipient, message, status) "
            "VALUES ('923001000004', 'd', 'sent')"
        )
    finally:
        await conn.close()


async def test_backlog_gauges_count_pending_rows_and_the_oldest_due_wait(
    pool: Pool, database_url: str
) -> None:
    await _insert_pending(database_url)
    metrics = DaemonMetrics()
    assert await BacklogGauges(metrics.pending, metrics.oldest_pending).refresh(pool)
    samples = parse(generate_latest(metrics.registry).decode())
    assert value(samples, "outbox_pending_messages") == 3
    assert 30 <= value(samples, "outbox_oldest_pending_seconds") < 40


async def test_backlog_gauges_keep_their_values_and_log_once_while_the_database_is_away(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    await _insert_pending(database_url)
    proxy = PostgresProxy(database_url)
    pool = Pool(await proxy.start())
    metrics = DaemonMetrics()
    gauges = BacklogGauges(metrics.pending, metrics.oldest_pending)
    try:
        assert await gauges.refresh(pool)
        proxy.cut()
        assert not await gauges.refresh(pool)
        assert not await gauges.refresh(pool)
        samples = parse(generate_latest(metrics.registry).decode())
        assert value(samples, "outbox_pending_messages") == 3
        warnings = [r for r in caplog.records if "backlog gauges" in r.getMessage()]
        assert len(warnings) == 1
        proxy.restore()
        assert await gauges.refresh(pool)
    finally:
        await pool.close(5)
        await proxy.close()


async def test_the_daemon_refreshes_the_backlog_gauges_on_its_own(
    settings: outbox.Settings,
    database_url: str,
    running: Callable[[outbox.Settings], Daemon],
) -> None:
    await _insert_pending(database_url)
    daemon = running(replace(settings, access_token="wrong"))  # pauses: the rows stay pending

    async def counted() -> bool:
        return value(scrape_daemon(daemon), "outbox_pending_messages") == 3

    await eventually(counted, 15, "the backlog gauges")


# --- /healthz and /readyz -------------------------------------------------------------------


async def test_readyz_is_503_with_the_pause_reason_while_healthz_stays_200(
    engine: AsyncEngine,
    settings: outbox.Settings,
    simulator: Simulator,
    running: Callable[[outbox.Settings], Daemon],
    health_url: Callable[[Daemon], Awaitable[str]],
) -> None:
    simulator.access_token = "another-token"
    await enqueue(engine, "923001234567", "hello")
    daemon = running(replace(settings, pause_probe=30))
    url = await health_url(daemon)
    await eventually(lambda: _true(daemon.paused_reason is not None), 10, "a pause")
    status, body = await get(f"{url}/readyz")
    assert (status, body["ready"], body["status"]) == (503, False, "paused")
    assert body["reason"].startswith("(#190)")
    assert (await get(f"{url}/healthz"))[0] == 200


async def test_readyz_is_503_naming_the_database_while_it_is_unreachable(
    settings: outbox.Settings,
    database_url: str,
    running: Callable[[outbox.Settings], Daemon],
    health_url: Callable[[Daemon], Awaitable[str]],
) -> None:
    proxy = PostgresProxy(database_url)
    daemon = running(replace(settings, database_url=await proxy.start()))
    url = await health_url(daemon)
    try:
        await asyncio.sleep(1)
        assert (await get(f"{url}/readyz"))[0] == 200
        proxy.cut()
        await eventually(lambda: _true(not daemon.health()["ready"]), 10, "not ready")
        status, body = await get(f"{url}/readyz")
        assert (status, body["database"]) == (503, "unreachable")
        assert body["reason"].startswith("database unreachable: ")
        assert (await get(f"{url}/healthz"))[0] == 200, "a database outage is not a stuck loop"
        proxy.restore()
        await eventually(lambda: _true(daemon.health()["ready"]), 15, "ready again")
    finally:
        await proxy.close()


async def test_healthz_is_503_only_while_the_loop_is_stuck(
    settings: outbox.Settings,
    database_url: str,
    running: Callable[[outbox.Settings], Daemon],
    health_url: Callable[[Daemon], Awaitable[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(turn_module, "STUCK_TURN", 1.0)
    monkeypatch.setattr(daemon_module, "STATEMENT_TIMEOUT", 3.0)
    proxy = PostgresProxy(database_url)
    daemon = running(replace(settings, database_url=await proxy.start(), shutdown_timeout=2))
    url = await health_url(daemon)
    try:
        await asyncio.sleep(1.5)
        assert (await get(f"{url}/healthz"))[0] == 200, "idle, turning"
        proxy.stall()  # a turn's statement never gets an answer
        status, body = 200, {}
        deadline = time.monotonic() + 10
        while status == 200 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            status, body = await get(f"{url}/healthz")
        assert (status, body["live"]) == (503, False)
        proxy.restore()  # the statement times out; the next turn works
        await eventually(lambda: _true(daemon.health()["live"]), 20, "live again")
    finally:
        await proxy.close()


# --- the webhook receiver's /metrics --------------------------------------------------------


@pytest.fixture
def receiver_settings(database_url: str, tmp_path: Path) -> outbox.Settings:
    return outbox.Settings(
        database_url=database_url,
        app_secret=SECRET,
        webhook_verify_token=VERIFY_TOKEN,
        home=tmp_path,
    )


@pytest.fixture
async def client(receiver_settings: outbox.Settings) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(create_app(receiver_settings))) as client:
        yield client


async def scrape_receiver(client: TestClient[Any, Any]) -> Samples:
    answer = await client.get("/metrics")
    assert answer.status == 200
    return parse(await answer.text())


async def test_receiver_counts_applied_statuses_by_status(
    client: TestClient[Any, Any], engine: AsyncEngine
) -> None:
    await sent_row(engine, "wamid.A")
    await sent_row(engine, "wamid.B")
    delivered = [example_status(wamid=f"wamid.{w}", status="delivered") for w in "AB"]
    assert await post(client, engine, envelope(*delivered)) == 200
    read = example_status(wamid="wamid.A", status="read")
    assert await post(client, engine, envelope(read)) == 200
    assert await post(client, engine, envelope(example_status(wamid="wamid.UNKNOWN"))) == 200
    samples = await scrape_receiver(client)
    applied = {
        status: value(samples, "outbox_webhook_statuses_applied_total", status=status)
        for status in ("sent", "delivered", "read", "failed")
    }
    assert applied == {"sent": 0, "delivered": 2, "read": 1, "failed": 0}
    assert value(samples, "outbox_webhook_statuses_total", outcome="waiting") == 1
    assert value(samples, "outbox_webhook_requests_total", answer="200") == 3


async def test_receiver_counts_a_status_applied_later_when_its_part_is_recorded(
    client: TestClient[Any, Any], engine: AsyncEngine
) -> None:
    assert await post(client, engine, envelope(example_status(wamid="wamid.LATE"))) == 200
    await sent_row(engine, "wamid.LATE")

    async def applied() -> bool:
        samples = await scrape_receiver(client)
        return value(samples, "outbox_webhook_statuses_applied_total", status="delivered") == 1

    await eventually(applied, 10, "the background task to apply the waiting status")


async def test_receiver_counts_signature_failures_and_applies_nothing(
    client: TestClient[Any, Any],
) -> None:
    body = envelope(example_status(wamid="wamid.A"))
    assert (await client.post("/webhook", data=body)).status == 401
    bad = {"X-Hub-Signature-256": sign("not-the-secret", body)}
    assert (await client.post("/webhook", data=body, headers=bad)).status == 403
    assert (await client.post("/webhook", data=body, headers=bad)).status == 403
    samples = await scrape_receiver(client)
    failures = {
        reason: value(samples, "outbox_webhook_signature_failures_total", reason=reason)
        for reason in ("missing", "invalid")
    }
    assert failures == {"missing": 1, "invalid": 2}
    assert value(samples, "outbox_webhook_requests_total", answer="403") == 2
    assert total(samples, "outbox_webhook_bodies_total") == 0
    assert total(samples, "outbox_webhook_statuses_applied_total") == 0


async def test_two_receivers_in_one_process_count_apart(
    receiver_settings: outbox.Settings,
) -> None:
    async with (
        TestClient(TestServer(create_app(receiver_settings))) as first,
        TestClient(TestServer(create_app(receiver_settings))) as second,
    ):
        assert (await first.post("/webhook", data=b"{}")).status == 401
        first_samples = await scrape_receiver(first)
        second_samples = await scrape_receiver(second)
    assert value(first_samples, "outbox_webhook_requests_total", answer="401") == 1
    assert total(second_samples, "outbox_webhook_requests_total") == 0
