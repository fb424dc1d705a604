"""`outbox webhook` and `outbox simulator` take --log-format and --log-level like `outbox run`:
the receiver logs every request it refuses, with the reason, and what the bodies it took
applied; the simulator logs how it answered each request. No secret, no whole number."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from outbox.webhooks.payload import sign
from tests.integration.test_receiver_process import sent_rows
from tests.integration.test_webhooks import (
    SECRET,
    VERIFY_TOKEN,
    cli_env,
    envelope,
    example_status,
    free_port,
)

pytestmark = pytest.mark.timeout(60)
TOKEN = "simulator-token-5150"
PHONE = "1234567890"
LOG_FLAGS = ("--log-format", "json", "--log-level", "INFO")


class Server:
    """`outbox <command> --log-format json --log-level INFO` on a free port; its log lines."""

    def __init__(self, command: str, log: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        with log.open("wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "outbox", command, "--port", str(self.port), *LOG_FLAGS],
                env=cli_env(**env),
                stdout=subprocess.PIPE,
                stderr=stderr,
            )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert b"listening" in line, log.read_text()

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    async def logged(self, keep: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The first record `keep` accepts, once it is written (10 s at most)."""
        for _ in range(100):
            found = [record for record in self.records() if keep(record)]
            if found:
                return found[0]
            await asyncio.sleep(0.1)
        raise AssertionError(f"not logged; the log:\n{self.log.read_text()}")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        assert self.process.stdout is not None
        self.process.stdout.close()


@pytest.fixture
def receiver(database_url: str, tmp_path: Path) -> Iterator[Server]:
    server = Server(
        "webhook",
        tmp_path / "receiver.log",
        OUTBOX_DATABASE_URL=database_url,
        OUTBOX_HOME=str(tmp_path),
        META_APP_SECRET=SECRET,
        META_WEBHOOK_VERIFY_TOKEN=VERIFY_TOKEN,
    )
    yield server
    server.stop()
    for secret in (SECRET, VERIFY_TOKEN):
        assert secret not in server.log.read_text()


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[Server]:
    server = Server(
        "simulator", tmp_path / "simulator.log", META_ACCESS_TOKEN=TOKEN, META_PHONE_NUMBER_ID=PHONE
    )
    yield server
    server.stop()
    assert TOKEN not in server.log.read_text()


async def post(url: str, body: bytes, headers: dict[str, str] | None = None) -> int:
    async with aiohttp.ClientSession() as http, http.post(url, data=body, headers=headers) as r:
        return r.status


def refused(status: int) -> Callable[[dict[str, Any]], bool]:
    return lambda record: record["level"] == "WARNING" and record.get("status") == status


async def test_a_post_without_a_signature_is_logged_as_refused_with_the_reason(
    receiver: Server,
) -> None:
    assert await post(f"{receiver.url}/webhook", envelope()) == 401
    record = await receiver.logged(refused(401))
    assert record["reason"] == "missing X-Hub-Signature-256"


async def test_a_post_with_a_wrong_signature_is_logged_as_refused_with_the_reason(
    receiver: Server,
) -> None:
    headers = {"X-Hub-Signature-256": sign("not-the-secret", envelope())}
    assert await post(f"{receiver.url}/webhook", envelope(), headers) == 403
    record = await receiver.logged(refused(403))
    assert record["reason"] == "X-Hub-Signature-256 does not match the body"


async def test_a_signed_body_that_is_not_json_is_logged_as_refused_with_the_reason(
    receiver: Server,
) -> None:
    body = b"{not json"
    headers = {"X-Hub-Signature-256": sign(SECRET, body)}
    assert await post(f"{receiver.url}/webhook", body, headers) == 400
    record = await receiver.logged(refused(400))
    assert record["reason"].startswith("not a WhatsApp webhook: not JSON outbox can read")


async def test_a_verification_with_a_wrong_token_is_logged_without_the_token_given(
    receiver: Server,
) -> None:
    query = "hub.mode=subscribe&hub.challenge=42&hub.verify_token=test-verify-tokem"
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{receiver.url}/webhook?{query}") as response,
    ):
        assert response.status == 403
    record = await receiver.logged(refused(403))
    assert record["reason"] == "wrong hub.verify_token"
    assert "test-verify-tokem" not in receiver.log.read_text()


async def test_what_a_body_applied_is_one_info_line_of_counts(
    database_url: str, receiver: Server
) -> None:
    (wamid,) = await sent_rows(database_url, 1)
    body = envelope(example_status(wamid=wamid), example_status(wamid="wamid.unknown"))
    assert await post(f"{receiver.url}/webhook", body, {"X-Hub-Signature-256": sign(SECRET, body)})
    record = await receiver.logged(lambda record: "bodies" in record)
    assert (record["level"], record["bodies"], record["applied"], record["waiting"]) == (
        "INFO",
        1,
        1,
        1,
    )


async def test_the_simulator_logs_an_accepted_send_with_its_wamid_and_masked_recipient(
    simulator: Server,
) -> None:
    send = {"messaging_product": "whatsapp", "to": "923001234567", "type": "text"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{simulator.url}/v23.0/{PHONE}/messages",
            json={**send, "text": {"body": "hi"}},
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as response,
    ):
        wamid = (await response.json())["messages"][0]["id"]
    record = await simulator.logged(lambda record: record.get("status") == 200)
    assert (record["level"], record["wamid"], record["recipient"]) == (
        "INFO",
        wamid,
        "+********4567",
    )
    assert "923001234567" not in simulator.log.read_text()


async def test_the_simulator_logs_a_refused_send_with_its_graph_code(simulator: Server) -> None:
    send = {"messaging_product": "whatsapp", "to": "923001234567", "type": "text"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{simulator.url}/v23.0/{PHONE}/messages",
            json={**send, "text": {"body": "hi"}},
            headers={"Authorization": "Bearer an-expired-token"},
        ) as response,
    ):
        assert response.status == 401
    record = await simulator.logged(lambda record: record.get("status") == 401)
    assert (record["level"], record["code"]) == ("INFO", 190)
