"""A local stand-in for the Graph API's /messages endpoint (and the lookup of a phone number,
GET /{version}/{phone_number_id}), for demos, tests and benchmarks.

Validates requests as Meta does (token, phone number id, payload limits), answers in Meta's
formats, and plays scripted faults per recipient. Accepted messages are kept in memory and served
at GET /_simulator/messages so tests can check order and count duplicates; each notes when its
request arrived ("received"), the Host it was addressed to ("host": give each client its own port
to tell them apart) and the step that answered it ("step": "ok", "delay" or "accept_and_drop").

Scenario file (JSON): {"recipients": {"923001234567": [STEP, ...]}}; steps are used in order,
then every request succeeds. A STEP is "ok", {"error": CODE, "http": STATUS, "retry_after": S,
"times": N}, {"drop": true} (close without answering), {"accept_and_drop": true} (accept, then
close without answering), {"delay_ms": MS} (accept after a while, even if the client gave up),
{"hang_ms": MS} (say nothing for a while, then close without accepting), or
{"raw": BODY, "http": STATUS, "headers": {...}} (answer exactly that: poison answers for tests),
{"accept": true, "then": "failed", "error": 131026} (accept, then fail it by webhook; "then" may
also be "sent" or "delivered" to stop there), or {"accept_and_hang": true} (accept and send its
webhooks, but never answer: the client times out). "retry_after" may be any string ("inf", an
HTTP date). "times" repeats a step (0: forever).

Templates are validated like Meta does (name, language code, parameter types) and answered with
`message_status: "accepted"`. With a `notifier` (`--webhook-url`), every accepted message gets its
signed status webhooks: sent, delivered, read.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import random
import re
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from outbox.errors import ConfigurationError
from outbox.logs import mask_recipient
from outbox.simulator_media import MAX_UPLOAD_BYTES, MediaRefusal, SimulatedMedia
from outbox.simulator_rules import TEMPLATE_DISABLED, TEMPLATE_PAUSED, BadControl, MetaRules
from outbox.status_webhooks import STEPS, StatusNotifier
from outbox.whatsapp import MAX_CAPTION_LENGTH, MAX_TEXT_LENGTH, MEDIA_KINDS

logger = logging.getLogger("outbox.simulator")

ERROR_TITLES = {
    0: "AuthException",
    2: "Service temporarily unavailable",
    3: "Capability or permissions issue",
    4: "Too many calls",
    10: "Permission denied",
    100: "Invalid parameter",
    130429: "Rate limit hit",
    131000: "Something went wrong",
    131008: "Required parameter is missing",
    131009: "Parameter value is not valid",
    131016: "Service unavailable",
    131026: "Message undeliverable",
    131030: "Recipient phone number not in allowed list",
    131047: "Re-engagement message",
    131049: "This message was not delivered to maintain healthy ecosystem engagement.",
    131050: "User stopped marketing messages",
    131053: "Media upload error",
    131056: "(Business Account, Consumer Account) pair rate limit hit",
    132001: "Template name does not exist in the translation",
    132012: "Parameter format does not match format in the created template",
    132015: "Template is paused",
    132016: "Template has been disabled",
    190: "Invalid OAuth access token",
    368: "Temporarily blocked for policies violations",
}


def http_status_for(code: int) -> int:
    """Meta's HTTP status per error code (whatsapp-api.md section 10)."""
    if code in (0, 190):
        return 401
    if code in (10, 368, 131005, 131031, 130497) or 200 <= code <= 299:
        return 403
    if code in (3, 131000):
        return 500
    if code in (2, 131016, 133004):
        return 503
    return 400


def error_body(code: int, message: str | None = None, subcode: int | None = None) -> dict[str, Any]:
    title = message or ERROR_TITLES.get(code, "Error")
    error: dict[str, Any] = {
        "message": f"(#{code}) {title}",
        "type": "OAuthException",
        "code": code,
        "fbtrace_id": base64.urlsafe_b64encode(secrets.token_bytes(12)).decode(),
    }
    if code not in (0, 190):
        error["error_data"] = {"messaging_product": "whatsapp", "details": title}
    if subcode is not None:
        error["error_subcode"] = subcode
    return {"error": error}


TEMPLATE_NAME = re.compile(r"^[a-z0-9_]{1,512}$")
LANGUAGE_CODE = re.compile(r"^[a-z]{2,3}(_[A-Za-z0-9]{2,4})?$")
COMPONENT_TYPES = ("header", "body", "footer", "button")
PARAMETER_TYPES = (
    "text", "currency", "date_time", "image", "document", "video", "payload", "location",
    "coupon_code", "action",
)  # fmt: skip


def check_template(template: object) -> None:
    """Refuse a template payload as Meta would: name, language code, parameter types."""
    if not isinstance(template, dict) or not isinstance(template.get("name"), str):
        raise Refusal(100, "The parameter template['name'] is required.")
    language = template.get("language")
    if not isinstance(language, dict) or not isinstance(language.get("code"), str):
        raise Refusal(100, "The parameter template['language']['code'] is required.")
    if not TEMPLATE_NAME.match(template["name"]) or not LANGUAGE_CODE.match(language["code"]):
        raise Refusal(132001, "Template name does not exist in the translation")
    components = template.get("components", [])
    if not isinstance(components, list):
        raise Refusal(100, "Param template['components'] must be an array.")
    for component in components:
        if not isinstance(component, dict) or component.get("type") not in COMPONENT_TYPES:
            raise Refusal(100, "Invalid parameter: template component type")
        for parameter in component.get("parameters", []):
            kind = parameter.get("type") if isinstance(parameter, dict) else None
            if kind not in PARAMETER_TYPES:
                raise Refusal(132012, "Parameter format does not match format in the template")
            value = parameter.get(kind)
            if kind == "text" and (not isinstance(value, str) or not value.strip()):
                raise Refusal(131008, "Required parameter is missing: text")
            if kind in MEDIA_KINDS and not (isinstance(value, dict) and value.get("link")):
                raise Refusal(131008, f"Required parameter is missing: {kind}['link']")


class Refusal(Exception):
    """Answer with a Graph error."""

    def __init__(
        self,
        code: int,
        message: str | None = None,
        *,
        subcode: int | None = None,
        http: int | None = None,
        retry_after: float | str | None = None,
    ) -> None:
        super().__init__(message)
        self.code, self.message, self.subcode = code, message, subcode
        self.http = http or http_status_for(code)
        self.retry_after = retry_after

    def response(self) -> web.Response:
        headers = {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}
        return web.json_response(
            error_body(self.code, self.message, self.subcode), status=self.http, headers=headers
        )


@dataclass
class Step:
    action: str  # ok, error, drop, accept_and_drop, delay, hang, raw
    times: int = 1
    code: int = 131000
    http: int | None = None
    retry_after: float | str | None = None
    delay_ms: int = 0
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    then: str = "read"  # how far its status webhooks go: sent, delivered, read or failed

    @classmethod
    def parse(cls, raw: object) -> Step:
        if raw == "ok":
            return cls("ok")
        if not isinstance(raw, Mapping):
            raise ValueError(f'scenario step must be "ok" or an object, not {raw!r}')
        times = int(raw.get("times", 1))
        if raw.get("accept"):
            then = str(raw.get("then", "read"))
            if then not in STEPS:
                raise ValueError(f'"then" must be one of {", ".join(STEPS)}, not {then!r}')
            return cls("ok", times, code=int(raw.get("error", 131026)), then=then)
        if "error" in raw:
            return cls(
                "error",
                times,
                code=int(raw["error"]),
                http=raw.get("http"),
                retry_after=raw.get("retry_after"),
            )
        if "raw" in raw:
            headers = raw.get("headers") or {}
            return cls(
                "raw",
                times,
                http=int(raw.get("http", 200)),
                body=str(raw["raw"]),
                headers={str(k): str(v) for k, v in headers.items()},
            )
        if raw.get("drop"):
            return cls("drop", times)
        if raw.get("accept_and_drop"):
            return cls("accept_and_drop", times)
        if "delay_ms" in raw:
            return cls("delay", times, delay_ms=int(raw["delay_ms"]))
        if "hang_ms" in raw:
            return cls("hang", times, delay_ms=int(raw["hang_ms"]))
        if raw.get("accept_and_hang"):
            return cls("accept_and_hang", times)
        raise ValueError(f"unknown scenario step {raw!r}")


def load_scenario(path: Path) -> dict[str, deque[Step]]:
    """The per-recipient steps of a `--scenario` file; a bad file is a ConfigurationError."""
    return _load_steps(path, "recipients")


def load_sender_scenario(path: Path) -> dict[str, deque[Step]]:
    """The per-sender (phone number id) steps of a `--scenario` file, under "senders"."""
    return _load_steps(path, "senders")


def _load_steps(path: Path, section: str) -> dict[str, deque[Step]]:
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigurationError(f"--scenario {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ConfigurationError(f"--scenario {path}: not JSON ({exc})") from None
    recipients = data.get(section, {}) if isinstance(data, dict) else None
    if not isinstance(recipients, dict):
        raise ConfigurationError(
            f'--scenario {path}: must be {{"{section}": {{"<digits>": [steps]}}}}'
        )
    try:
        return {
            str(to): deque(Step.parse(step) for step in steps) for to, steps in recipients.items()
        }
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise ConfigurationError(f"--scenario {path}: {exc}") from None


@dataclass
class Simulator:
    """The simulator's behaviour and what it has accepted."""

    access_token: str | None = None
    phone_number_id: str | None = None
    latency_ms: float = 0.0
    fail_rate: float = 0.0
    mps: float | None = None
    pair_burst: int = 45
    pair_interval: float = 6.0
    scenario: dict[str, deque[Step]] = field(default_factory=dict)
    # Steps per sending phone number id, taken before the recipient's: a blocked number, say.
    # A phone number id named here is accepted besides `phone_number_id`.
    sender_scenario: dict[str, deque[Step]] = field(default_factory=dict)
    accepted: list[dict[str, Any]] = field(default_factory=list)
    requests: int = 0  # POSTs to /messages that reached it
    lookups: int = 0  # GETs of a phone number
    # The API cannot be reached: every request is cut off unanswered before it is read.
    unreachable: bool = False
    # How every lookup of a phone number is answered instead, if set: a "drop", "hang" or
    # "error" step (the lookup endpoint failing while messages may work).
    lookup_fault: Step | None = None
    arrivals: list[float] = field(default_factory=list)  # time.time() of every request
    _sender_tokens: float = 0.0
    _sender_at: float = field(default_factory=time.monotonic)
    _pairs: dict[str, tuple[float, float]] = field(default_factory=dict)
    _accepting: asyncio.Event = field(default_factory=asyncio.Event)
    notifier: StatusNotifier | None = None
    # Meta's rules (simulator_rules.py): windows, opt-outs, template statuses.
    rules: MetaRules = field(default_factory=MetaRules)
    # Uploaded media and the test file host (simulator_media.py).
    media: SimulatedMedia = field(default_factory=SimulatedMedia)

    def __post_init__(self) -> None:
        if self.phone_number_id is not None:  # its webhooks name the number it serves
            self.rules.phone_number_id = self.phone_number_id

    async def wait_for_accepted(self, count: int) -> None:
        """Return once at least `count` messages have been accepted."""
        while len(self.accepted) < count:
            self._accepting.clear()
            await self._accepting.wait()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_UPLOAD_BYTES)
        app.router.add_post("/{version}/{phone_number_id}/messages", self.handle_message)
        app.router.add_post("/{version}/{phone_number_id}/media", self.handle_upload)
        self.media.routes(app)
        app.router.add_get("/_simulator/messages", self.handle_accepted)
        app.router.add_get("/{version}/{phone_number_id}", self.handle_lookup)
        for path, play in (
            ("inbound", self.rules.inbound),
            ("user_preferences", self.rules.user_preference),
            ("templates", self.rules.template_event),
            ("marketing_limit", self.rules.limit_marketing),
        ):
            app.router.add_post(f"/_simulator/{path}", self._control(play))
        app.on_cleanup.append(self._close_notifier)
        return app

    async def _close_notifier(self, app: web.Application) -> None:
        if self.notifier is not None:
            await self.notifier.close()

    def _control(
        self, play: Callable[[dict[str, Any]], bytes | list[bytes] | None]
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        """A control endpoint: play the request on the rules, then post the webhooks it makes
        (signed, to --webhook-url) before answering with them."""

        async def handle(request: web.Request) -> web.Response:
            try:
                asked = await request.json()
                if not isinstance(asked, dict):
                    raise BadControl("the body must be a JSON object")
                made = play(asked)
            except (BadControl, ValueError) as exc:
                return web.json_response({"error": str(exc)}, status=400)
            bodies = [made] if isinstance(made, bytes) else made or []
            posted = [await self.notifier.deliver(b) for b in bodies] if self.notifier else []
            webhooks = [json.loads(body) for body in bodies]
            return web.json_response({"webhooks": webhooks, "posted": sum(posted)})

        return handle

    async def handle_accepted(self, request: web.Request) -> web.Response:
        return web.json_response({"requests": self.requests, "accepted": self.accepted})

    def _next_step(self, recipient: str, sender: str | None = None) -> Step:
        steps = self.sender_scenario.get(sender or "") or self.scenario.get(recipient)
        if not steps:
            return Step("ok")
        step = steps[0]
        if step.times > 1:
            step.times -= 1
        elif step.times == 1:
            steps.popleft()
        return step

    def _check_rates(self, recipient: str) -> None:
        if self.mps is None:
            return
        now = time.monotonic()
        self._sender_tokens = min(
            self.mps, self._sender_tokens + (now - self._sender_at) * self.mps
        )
        self._sender_at = now
        if self._sender_tokens < 1:
            raise Refusal(130429)
        tokens, at = self._pairs.get(recipient, (float(self.pair_burst), now))
        tokens = min(float(self.pair_burst), tokens + (now - at) / self.pair_interval)
        if tokens < 1:
            self._pairs[recipient] = (tokens, now)
            raise Refusal(131056)
        self._sender_tokens -= 1
        self._pairs[recipient] = (tokens - 1, now)

    def _check_sender(self, request: web.Request) -> None:
        """The token, and the phone number id in the path, as Meta checks them."""
        authorization = request.headers.get("Authorization")
        if self.access_token is not None and authorization != f"Bearer {self.access_token}":
            raise Refusal(190, "Invalid OAuth access token - Cannot parse access token")
        if self.phone_number_id is not None:
            phone = request.match_info["phone_number_id"]
            if phone != self.phone_number_id and phone not in self.sender_scenario:
                raise Refusal(
                    100,
                    f"Unsupported post request. Object with ID '{phone}' does "
                    "not exist, cannot be loaded due to missing permissions, or does "
                    "not support this operation",
                    subcode=33,
                )

    async def handle_lookup(self, request: web.Request) -> web.StreamResponse:
        """GET /{version}/{phone_number_id}: the number's profile (what an outage probe asks),
        and one INFO line saying how it was answered."""
        response = await self._answer_lookup(request)
        await _log_answer(request, response)
        return response

    async def _answer_lookup(self, request: web.Request) -> web.StreamResponse:
        self.lookups += 1
        if self.unreachable:
            return self._drop(request)
        fault = self.lookup_fault
        if fault is not None and (failed := await self._failed(fault, request)) is not None:
            return failed
        try:
            self._check_sender(request)
        except Refusal as refusal:
            return refusal.response()
        phone = request.match_info["phone_number_id"]
        return web.json_response(
            {
                "id": phone,
                "display_phone_number": "+1 555-0100",
                "verified_name": "Outbox Simulator",
                "quality_rating": "GREEN",
            }
        )

    def _check_request(self, request: web.Request, body: object) -> dict[str, Any]:
        self._check_sender(request)
        if not isinstance(body, dict) or body.get("messaging_product") != "whatsapp":
            raise Refusal(100, "The parameter messaging_product is required.")
        to = body.get("to")
        if not isinstance(to, str) or not to.lstrip("+").isdigit():
            raise Refusal(100, "The parameter to is required.")
        kind = body.get("type")
        if kind == "text":
            text = body.get("text")
            if (
                not isinstance(text, dict)
                or not isinstance(text.get("body"), str)
                or not text["body"]
            ):
                raise Refusal(100, "The parameter text['body'] is required.")
            if len(text["body"]) > MAX_TEXT_LENGTH:
                raise Refusal(100, "Param text['body'] must be at most 4096 characters long.")
        elif kind == "template":
            check_template(body.get("template"))
        elif kind in MEDIA_KINDS:
            media = body.get(kind)
            if isinstance(media, dict) and "id" in media and "link" not in media:
                try:
                    self.media.check_id(kind, media["id"])
                except MediaRefusal as refusal:
                    raise Refusal(refusal.code, refusal.message) from None
            elif not isinstance(media, dict) or not str(media.get("link", "")).startswith(
                ("http://", "https://")
            ):
                raise Refusal(131009, f"Parameter {kind}['link'] is not a valid URL")
            if len(str(media.get("caption", ""))) > MAX_CAPTION_LENGTH:
                raise Refusal(100, f"Param {kind}['caption'] must be at most 1024 characters long.")
        else:
            raise Refusal(100, f"Unsupported message type {kind!r}")
        return body

    async def handle_upload(self, request: web.Request) -> web.StreamResponse:
        """POST /{phone_number_id}/media: a file uploaded, its media id answered."""
        if self.unreachable:
            return self._drop(request)
        try:
            self._check_sender(request)
            return await self.media.upload(request, request.match_info["phone_number_id"])
        except Refusal as refusal:
            return refusal.response()
        except MediaRefusal as refusal:
            return Refusal(refusal.code, refusal.message).response()

    async def handle_message(self, request: web.Request) -> web.StreamResponse:
        """A send: answered as Meta would, and one INFO line saying how."""
        response = await self._answer_message(request)
        await _log_answer(request, response)
        return response

    async def _answer_message(self, request: web.Request) -> web.StreamResponse:
        if self.unreachable:
            return self._drop(request)
        self.requests += 1
        received = time.time()
        self.arrivals.append(received)
        if self.latency_ms:
            await asyncio.sleep(self.latency_ms / 1000)
        try:
            body = self._check_request(request, await request.json())
        except Refusal as refusal:
            return refusal.response()
        except ValueError:
            return Refusal(100, "Request body is not valid JSON").response()
        recipient = str(body["to"]).lstrip("+")
        sender = request.match_info["phone_number_id"]
        ruled = self.rules.answer(body, recipient, time.time())
        if ruled in (TEMPLATE_PAUSED, TEMPLATE_DISABLED):
            return Refusal(ruled).response()
        # As Meta: accepted, then failed by a status webhook (131047, 131049, 131050).
        step = self._next_step(recipient, sender) if ruled is None else Step("ok", code=ruled)
        if ruled is not None:
            step.then = "failed"
        if (failed := await self._failed(step, request)) is not None:
            return failed
        if step.action == "raw":
            return web.Response(
                body=step.body.encode("utf-8", "surrogatepass"),
                status=step.http or 200,
                headers={"Content-Type": "application/json", **step.headers},
            )
        if step.action == "delay":
            await asyncio.sleep(step.delay_ms / 1000)
        if self.fail_rate and random.random() < self.fail_rate:  # noqa: S311
            return Refusal(131000, http=500).response()
        try:
            self._check_rates(recipient)
        except Refusal as refusal:
            return refusal.response()
        wamid = "wamid." + base64.b64encode(secrets.token_bytes(24)).decode().rstrip("=")
        self.accepted.append(
            {
                "wamid": wamid,
                "to": recipient,
                "from": sender,
                "type": body["type"],
                "callback": body.get("biz_opaque_callback_data"),
                "body": body.get("text", {}).get("body") if body["type"] == "text" else None,
                "link": body.get(body["type"], {}).get("link"),
                "media_id": body.get(body["type"], {}).get("id"),
                "at": time.time(),
                "received": received,
                "host": request.host,
                "step": step.action,
                "failed_with": ruled,  # the error of Meta's rules its webhook fails it with
            }
        )
        self._accepting.set()
        if self.notifier is not None:
            callback = body.get("biz_opaque_callback_data")
            self.notifier.accepted(wamid, recipient, callback, then=step.then, error=step.code)
        if step.action == "accept_and_drop":
            return self._drop(request)
        if step.action == "accept_and_hang":
            return await self._hang(request)
        message: dict[str, Any] = {"id": wamid}
        if body["type"] == "template":
            message["message_status"] = "accepted"
        return web.json_response(
            {
                "messaging_product": "whatsapp",
                "contacts": [{"input": body["to"], "wa_id": recipient}],
                "messages": [message],
            }
        )

    async def _failed(self, step: Step, request: web.Request) -> web.StreamResponse | None:
        """The answer of a step that fails the request unaccepted (error, drop, hang), else
        None."""
        if step.action == "error":
            return Refusal(step.code, http=step.http, retry_after=step.retry_after).response()
        if step.action == "drop":
            return self._drop(request)
        if step.action == "hang":
            await asyncio.sleep(step.delay_ms / 1000)
            return self._drop(request)
        return None

    @staticmethod
    async def _hang(request: web.Request) -> web.StreamResponse:
        """Say nothing until the client gives up (closes the connection), at most 5 minutes."""
        for _ in range(3000):
            if request.transport is None or request.transport.is_closing():
                break
            await asyncio.sleep(0.1)
        return Simulator._drop(request)

    @staticmethod
    def _drop(request: web.Request) -> web.StreamResponse:
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=499)


async def _log_answer(request: web.Request, response: web.StreamResponse) -> None:
    """`POST …/messages to +********4567 (text): 200 accepted as wamid.…`, or the Graph code it
    was refused with, or that the connection was dropped unanswered."""
    if not logger.isEnabledFor(logging.INFO):
        return  # benchmarks and tests serve it in-process with logging off: no parsing then
    sent = None
    if request.method == "POST":
        with contextlib.suppress(Exception):  # a body it refused, a connection it dropped
            sent = await request.json()
    to = str(sent.get("to", "")) if isinstance(sent, dict) else ""
    kind = str(sent.get("type", "?")) if isinstance(sent, dict) else ""
    sender = request.match_info.get("phone_number_id")
    fields: dict[str, Any] = {"status": response.status, "sender": sender}
    if to:
        fields["recipient"] = to
    answer = None
    if isinstance(response, web.Response) and isinstance(response.body, bytes):
        with contextlib.suppress(ValueError):
            answer = json.loads(response.body)
    if response.status == 499:
        outcome = "dropped unanswered"
    elif isinstance(answer, dict) and isinstance(answer.get("messages"), list):
        fields["wamid"] = str(answer["messages"][0].get("id"))
        outcome = f"accepted as {fields['wamid']}"
    elif isinstance(answer, dict) and isinstance(answer.get("error"), dict):
        fields["code"] = answer["error"].get("code")
        outcome = f"refused with code {fields['code']}"
    elif request.method == "GET" and response.status == 200:
        outcome = "the number's profile"
    else:
        outcome = "a scripted raw answer"
    target = f" to {mask_recipient(to)} ({kind})" if to else ""
    logger.info(
        "%s %s%s: %d %s",
        request.method,
        request.path,
        target,
        response.status,
        outcome,
        extra=fields,
    )


async def serve(simulator: Simulator, host: str, port: int) -> web.AppRunner:
    """Start the simulator on host:port; the caller cleans the runner up."""
    runner = web.AppRunner(simulator.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
