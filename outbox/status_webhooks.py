"""The simulator's status webhooks: what Meta posts after accepting a message, signed as Meta
signs them (HMAC-SHA256 of the exact bytes sent, with the app secret).

For every accepted message: `sent`, then `delivered`, then `read`, each after `delay` seconds;
or `sent` then `failed` with an error code. A receiver that does not answer 200 is retried with
backoff a few times, as Meta retries.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from outbox.webhooks.payload import sign

logger = logging.getLogger("outbox.simulator")
RETRIES = 5
STEPS = {
    "sent": ["sent"],
    "delivered": ["sent", "delivered"],
    "read": ["sent", "delivered", "read"],
    "failed": ["sent", "failed"],
}
ERROR_TITLES = {
    131026: "Message undeliverable",
    131047: "Re-engagement message",
    131049: "This message was not delivered to maintain healthy ecosystem engagement.",
    131050: "User stopped marketing messages",
    130472: "User's number is part of an experiment",
}


@dataclass
class StatusNotifier:
    """Posts status webhooks for accepted messages to `url`."""

    url: str
    app_secret: str | None
    phone_number_id: str
    delay: float = 0.2
    posted: int = 0
    failures: int = 0
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _session: aiohttp.ClientSession | None = None

    def accepted(
        self,
        wamid: str,
        recipient: str,
        callback: str | None,
        then: str = "read",
        error: int | None = None,
    ) -> None:
        """Schedule the statuses of a message Meta accepted: up to `then` (delivered, read), or
        `failed` with `error`."""
        steps = STEPS[then]
        task = asyncio.create_task(self._post_all(wamid, recipient, callback, steps, error))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def _post_all(
        self,
        wamid: str,
        recipient: str,
        callback: str | None,
        steps: list[str],
        error: int | None,
    ) -> None:
        for status in steps:
            await asyncio.sleep(self.delay)
            body = self.body(wamid, recipient, callback, status, error)
            await self._post(body)

    def body(
        self, wamid: str, recipient: str, callback: str | None, status: str, error: int | None
    ) -> bytes:
        """One status webhook, serialised with ASCII escapes as Meta sends it."""
        entry: dict[str, Any] = {
            "id": wamid,
            "status": status,
            "timestamp": str(int(time.time())),
            "recipient_id": recipient,
        }
        if callback:
            entry["biz_opaque_callback_data"] = callback
        if status in ("sent", "delivered", "read"):
            entry["pricing"] = {
                "billable": True,
                "pricing_model": "PMP",
                "type": "regular",
                "category": "utility",
            }
        if status == "failed":
            code = error or 131026
            title = ERROR_TITLES.get(code, "Message failed to send")
            entry["errors"] = [
                {
                    "code": code,
                    "title": title,
                    "message": title,
                    "error_data": {"details": title},
                }
            ]
        envelope = {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": "100000000000000",
                    "changes": [
                        {
                            "field": "messages",
                            "value": {
                                "messaging_product": "whatsapp",
                                "metadata": {
                                    "display_phone_number": "15550000000",
                                    "phone_number_id": self.phone_number_id,
                                },
                                "statuses": [entry],
                            },
                        }
                    ],
                }
            ],
        }
        return json.dumps(envelope, ensure_ascii=True).encode()

    async def deliver(self, body: bytes) -> bool:
        """Post any webhook body now, signed, retried as Meta retries; True once taken (200)."""
        return await self._post(body)

    async def _post(self, body: bytes) -> bool:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        headers = {"Content-Type": "application/json"}
        if self.app_secret:
            headers["X-Hub-Signature-256"] = sign(self.app_secret, body)
        for attempt in range(RETRIES):
            try:
                async with self._session.post(
                    self.url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=10)
                ) as response:
                    if response.status == 200:
                        self.posted += 1
                        return True
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.2 * 2**attempt)
        self.failures += 1
        logger.warning("status webhook to %s not accepted after %d tries", self.url, RETRIES)
        return False
