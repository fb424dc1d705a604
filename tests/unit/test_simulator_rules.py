"""The simulator plays Meta's rules (issue 16, point 7): the window of the customers it is told
wrote in, opt-outs, the per-user marketing limit and template statuses, with the webhooks Meta
sends about them, signed as Meta signs them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from outbox.simulator import Simulator, serve
from outbox.status_webhooks import StatusNotifier
from outbox.webhooks.payload import sign

SECRET = "app-secret"
CUSTOMER = "923001234567"
TEXT = {"messaging_product": "whatsapp", "to": CUSTOMER, "type": "text", "text": {"body": "hi"}}


def template(name: str = "spring_sale") -> dict[str, Any]:
    return {
        "messaging_product": "whatsapp",
        "to": CUSTOMER,
        "type": "template",
        "template": {"name": name, "language": {"code": "en_US"}},
    }


@dataclass
class Meta:
    """A running simulator and the webhooks it posted, as a receiver got them."""

    simulator: Simulator
    url: str
    posted: list[dict[str, Any]] = field(default_factory=list)

    async def send(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{self.url}/v23.0/111/messages",
                json=body,
                headers={"Authorization": "Bearer right"},
            ) as response,
        ):
            return response.status, await response.json()

    async def control(self, path: str, body: object) -> tuple[int, dict[str, Any]]:
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{self.url}/_simulator/{path}", json=body) as response,
        ):
            return response.status, await response.json()

    async def statuses(self, count: int) -> list[tuple[str, int | None]]:
        """The first `count` statuses posted: (status, error code)."""
        for _ in range(200):
            found = [
                (s["status"], (s.get("errors") or [{}])[0].get("code"))
                for body in self.posted
                for change in body["entry"][0]["changes"]
                for s in change["value"].get("statuses", [])
            ]
            if len(found) >= count:
                return found
            await asyncio.sleep(0.02)
        raise AssertionError(f"{count} statuses never came: {self.posted}")


@pytest.fixture
async def meta() -> AsyncIterator[Meta]:
    posted: list[dict[str, Any]] = []

    async def receive(request: web.Request) -> web.Response:
        raw = await request.read()
        assert request.headers["X-Hub-Signature-256"] == sign(SECRET, raw)
        posted.append(await request.json())
        return web.Response(text="ok")

    receiver = web.Application()
    receiver.router.add_post("/webhook", receive)
    receiver_runner = web.AppRunner(receiver)
    await receiver_runner.setup()
    await web.TCPSite(receiver_runner, "127.0.0.1", 0).start()
    port = receiver_runner.addresses[0][1]
    notifier = StatusNotifier(f"http://127.0.0.1:{port}/webhook", SECRET, "111", delay=0.0)
    simulator = Simulator(access_token="right", phone_number_id="111", notifier=notifier)
    runner = await serve(simulator, "127.0.0.1", 0)
    yield Meta(simulator, f"http://127.0.0.1:{runner.addresses[0][1]}", posted)
    await runner.cleanup()
    await receiver_runner.cleanup()


async def test_an_injected_inbound_message_is_posted_as_metas_webhook(meta: Meta) -> None:
    status, answer = await meta.control("inbound", {"from": "+" + CUSTOMER, "text": "hola"})
    assert (status, answer["posted"]) == (200, 1)
    value = meta.posted[0]["entry"][0]["changes"][0]["value"]
    assert value["metadata"]["phone_number_id"] == "111"
    assert (value["messages"][0]["from"], value["messages"][0]["text"]) == (
        CUSTOMER,
        {"body": "hola"},
    )


async def test_free_form_inside_the_window_is_delivered(meta: Meta) -> None:
    await meta.control("inbound", {"from": CUSTOMER, "ago_seconds": 23 * 3600 + 59 * 60})
    assert (await meta.send(TEXT))[0] == 200
    assert await meta.statuses(3) == [("sent", None), ("delivered", None), ("read", None)]


async def test_free_form_outside_the_window_is_accepted_then_failed_131047(meta: Meta) -> None:
    await meta.control("inbound", {"from": CUSTOMER, "ago_seconds": 24 * 3600 + 1})
    status, answer = await meta.send(TEXT)
    assert status == 200
    assert answer["messages"][0]["id"].startswith("wamid.")
    assert await meta.statuses(2) == [("sent", None), ("failed", 131047)]


async def test_a_template_goes_outside_the_window(meta: Meta) -> None:
    await meta.control("templates", {"name": "we_miss_you", "language": "en_US",
                                     "category": "UTILITY"})  # fmt: skip
    await meta.control("inbound", {"from": CUSTOMER, "ago_seconds": 30 * 3600})
    assert (await meta.send(template("we_miss_you")))[0] == 200
    assert (await meta.statuses(3))[-1] == ("read", None)


async def test_a_customer_never_heard_from_is_open_unless_the_window_is_enforced(
    meta: Meta,
) -> None:
    await meta.send(TEXT)
    meta.simulator.rules.enforce_window = True
    await meta.send(TEXT)
    found = await meta.statuses(5)
    assert ("failed", 131047) in found
    assert found.count(("read", None)) == 1


async def test_stop_and_resume_are_posted_as_user_preferences_webhooks(meta: Meta) -> None:
    await meta.control("user_preferences", {"customer": CUSTOMER, "value": "stop"})
    await meta.control("user_preferences", {"customer": CUSTOMER, "value": "resume"})
    changes = [body["entry"][0]["changes"][0] for body in meta.posted]
    assert [c["field"] for c in changes] == ["user_preferences", "user_preferences"]
    preferences = [c["value"]["user_preferences"][0] for c in changes]
    assert [(p["wa_id"], p["category"], p["value"]) for p in preferences] == [
        (CUSTOMER, "marketing_messages", "stop"),
        (CUSTOMER, "marketing_messages", "resume"),
    ]


async def test_marketing_to_a_customer_who_said_stop_fails_131050(meta: Meta) -> None:
    await meta.control("user_preferences", {"customer": CUSTOMER, "value": "stop"})
    assert (await meta.send(template()))[0] == 200  # unknown to it: counted as marketing
    assert await meta.statuses(2) == [("sent", None), ("failed", 131050)]


async def test_utility_templates_still_reach_a_customer_who_said_stop(meta: Meta) -> None:
    await meta.control("templates", {"name": "receipt", "language": "en_US",
                                     "category": "UTILITY"})  # fmt: skip
    await meta.control("user_preferences", {"customer": CUSTOMER, "value": "stop"})
    await meta.send(template("receipt"))
    assert (await meta.statuses(3))[-1] == ("read", None)


async def test_the_per_user_marketing_limit_fails_131049_on_demand(meta: Meta) -> None:
    status, _ = await meta.control("marketing_limit", {"customer": CUSTOMER, "times": 1})
    assert status == 200
    await meta.send(template())
    await meta.send(template())
    found = await meta.statuses(5)
    assert found.count(("failed", 131049)) == 1
    assert found.count(("read", None)) == 1


async def test_a_paused_template_is_refused_132015_until_reinstated(meta: Meta) -> None:
    _, answer = await meta.control(
        "templates", {"name": "spring_sale", "language": "en_US", "event": "PAUSED"}
    )
    value = answer["webhooks"][0]["entry"][0]["changes"][0]["value"]
    assert (value["event"], value["other_info"]["title"]) == ("PAUSED", "FIRST_PAUSE")
    status, refused = await meta.send(template())
    assert (status, refused["error"]["code"]) == (400, 132015)
    await meta.control("templates", {"name": "spring_sale", "language": "en_US",
                                     "event": "REINSTATED"})  # fmt: skip
    assert (await meta.send(template()))[0] == 200


async def test_a_disabled_template_is_refused_132016(meta: Meta) -> None:
    await meta.control("templates", {"name": "spring_sale", "language": "en_US",
                                     "event": "DISABLED"})  # fmt: skip
    status, refused = await meta.send(template())
    assert (status, refused["error"]["code"]) == (400, 132016)
    fields = [body["entry"][0]["changes"][0]["field"] for body in meta.posted]
    assert fields == ["message_template_status_update"]


async def test_a_category_change_is_posted_as_template_category_update(meta: Meta) -> None:
    await meta.control("templates", {"name": "receipt", "language": "en_US",
                                     "category": "UTILITY"})  # fmt: skip
    await meta.control("templates", {"name": "receipt", "language": "en_US",
                                     "category": "MARKETING"})  # fmt: skip
    change = meta.posted[-1]["entry"][0]["changes"][0]
    assert change["field"] == "template_category_update"
    assert (change["value"]["previous_category"], change["value"]["new_category"]) == (
        "UTILITY",
        "MARKETING",
    )


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("inbound", {"from": "abc"}, "from"),
        ("user_preferences", {"customer": CUSTOMER, "value": "maybe"}, "value"),
        ("templates", {"name": "Bad Name", "language": "en_US", "event": "PAUSED"}, "name"),
        ("templates", {"name": "ok", "language": "en_US", "event": "GONE"}, "event"),
        ("marketing_limit", {"customer": CUSTOMER, "times": -1}, "times"),
        ("inbound", ["not", "an", "object"], "the body"),
    ],
)
async def test_a_bad_control_request_is_refused_naming_the_field(
    meta: Meta, path: str, body: object, field: str
) -> None:
    status, answer = await meta.control(path, body)
    assert status == 400
    assert answer["error"].startswith(field)
    assert meta.posted == []
