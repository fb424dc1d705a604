"""The templates Meta paused (132015) as this daemon met them: their rows wait, with no request,
until the pause is over; Meta's answer also goes into the catalogue for every daemon."""

from __future__ import annotations

import time

from outbox.pool import Pool
from outbox.store import template_holds as template_holds_store
from outbox.whatsapp import Part


class PausedTemplates:
    """Template name -> paused until (time.monotonic(): metrics may read it from another
    thread)."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}

    def names(self) -> list[str]:
        """The templates Meta has paused, whose rows wait now."""
        now = time.monotonic()
        return [name for name, until in list(self._until.items()) if until > now]

    def remaining(self, part: Part) -> float:
        """Seconds left of Meta's pause of this part's template (0: not paused)."""
        if part.template is None or not self._until:
            return 0.0
        until = self._until.get(str(part.template.get("name")), 0.0)
        return max(0.0, until - time.monotonic())

    def pause(self, name: str, delay: float) -> None:
        self._until[name] = time.monotonic() + delay

    def lift(self, parts: list[Part]) -> None:
        """The templates of `parts` were approved since Meta paused them."""
        for part in parts:
            if part.template is not None:
                self._until.pop(str(part.template.get("name")), None)

    @staticmethod
    async def learn(pool: Pool, part: Part, status: str, hold: float) -> None:
        """Meta's answer about a template (132015 paused, 132016 disabled) goes into the
        catalogue, when it has the template: every daemon's next rows of it are ruled by it."""
        template = part.template or {}
        language = template.get("language")
        code = language.get("code") if isinstance(language, dict) else None
        if isinstance(template.get("name"), str) and isinstance(code, str):
            async with pool.connect() as conn:
                await template_holds_store.learn_status(conn, template["name"], code, status, hold)
