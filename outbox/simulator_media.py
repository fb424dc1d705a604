"""The simulator's media: Meta's upload endpoint (`POST /{phone_number_id}/media`, multipart),
media ids that a send may name instead of a link (and that expire: `POST
/_simulator/media/expire`), and a file host for tests and the demo (`GET
/_simulator/files/{name}`: made-up bytes of the type the extension names; `?status=` answers
that status instead, `?bytes=` sets the size, `?type=` the Content-Type, `?delay_ms=` answers
that much later). `GET
/_simulator/media` counts uploads and fetches. `upload_answer` answers every upload with a fixed
status and body instead (an odd answer: a 200 without an id, a proxy's HTML 413).
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import BodyPartReader, web

from outbox.media.limits import LIMITS, canonical, type_from_url

MAX_UPLOAD_BYTES = 100 * 1024 * 1024 + 1024
# The first bytes of each type the file host serves: enough for a type sniffer.
_MAGIC = {
    "application/pdf": b"%PDF-1.4\n",
    "image/png": b"\x89PNG\r\n\x1a\n",
    "image/jpeg": b"\xff\xd8\xff\xe0",
    "video/mp4": b"\x00\x00\x00\x18ftypmp42",
    "audio/mpeg": b"ID3",
    "audio/ogg": b"OggS",
    "text/plain": b"",
}


class MediaRefusal(Exception):
    """A Graph error for an upload or a media id: code and text."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class SimulatedMedia:
    """Uploaded files by id, and the file host's fetches."""

    uploads: list[dict[str, Any]] = field(default_factory=list)
    expired: set[str] = field(default_factory=set)
    fetches: dict[str, int] = field(default_factory=dict)
    # Whether any fetch of a file carried an Authorization header (a token leaking to a host).
    authorized_fetches: int = 0
    # How every upload is answered instead, if set: (HTTP status, body, Content-Type).
    upload_answer: tuple[int, str, str] | None = None
    upload_requests: int = 0  # POSTs to /media that reached it, answered or refused

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/_simulator/media", self.handle_counts)
        app.router.add_post("/_simulator/media/expire", self.handle_expire)
        app.router.add_get("/_simulator/files/{name}", self.handle_file)

    def check_id(self, kind: str, media_id: object) -> None:
        """A send's media id must be an upload of this kind's type, not expired."""
        upload = next((u for u in self.uploads if u["id"] == media_id), None)
        if upload is None or media_id in self.expired:
            raise MediaRefusal(131053, f"Media upload error: media id {media_id} is not valid")
        if upload["mime"] not in LIMITS[kind].types:
            raise MediaRefusal(131053, f"Media upload error: {upload['mime']} is not a {kind}")

    async def upload(self, request: web.Request, sender: str) -> web.Response:
        """POST /{version}/{phone_number_id}/media: the file kept, its id answered."""
        self.upload_requests += 1
        if self.upload_answer is not None:
            status, body, content_type = self.upload_answer
            await request.read()
            return web.Response(status=status, text=body, content_type=content_type)
        if request.content_length is not None and request.content_length > MAX_UPLOAD_BYTES:
            raise MediaRefusal(131053, "Media upload error: the file is too large")
        fields: dict[str, Any] = {}
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                continue
            if part.name == "file":
                fields["file"] = await part.read()
                fields["file_type"] = part.headers.get("Content-Type")
            elif part.name is not None:
                fields[part.name] = await part.text()
        if fields.get("messaging_product") != "whatsapp":
            raise MediaRefusal(100, "The parameter messaging_product is required.")
        content = fields.get("file")
        mime = canonical(str(fields.get("type") or fields.get("file_type") or ""))
        if not isinstance(content, bytes | bytearray) or not content:
            raise MediaRefusal(100, "The parameter file is required.")
        kind = next((k for k, limit in LIMITS.items() if mime in limit.types), None)
        if kind is None:
            raise MediaRefusal(131053, f"Media upload error: unsupported type {mime!r}")
        if len(content) > LIMITS[kind].max_bytes:
            raise MediaRefusal(131053, f"Media upload error: the file is larger than {kind} allows")
        media_id = str(10**15 + secrets.randbelow(9 * 10**15))
        self.uploads.append(
            {
                "id": media_id,
                "sender": sender,
                "mime": mime,
                "bytes": len(content),
                "sha256": hashlib.sha256(content).hexdigest(),
                "at": time.time(),
            }
        )
        return web.json_response({"id": media_id})

    async def handle_counts(self, request: web.Request) -> web.Response:
        return web.json_response({"uploads": self.uploads, "fetches": self.fetches})

    async def handle_expire(self, request: web.Request) -> web.Response:
        """Expire one id (`{"id": ...}`) or every upload so far (`{}`), as 30 days would."""
        body = await request.json() if request.can_read_body else {}
        wanted = body.get("id") if isinstance(body, dict) else None
        ids = [u["id"] for u in self.uploads if wanted is None or u["id"] == str(wanted)]
        self.expired.update(ids)
        return web.json_response({"expired": ids})

    async def handle_file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self.fetches[name] = self.fetches.get(name, 0) + 1
        if "Authorization" in request.headers:
            self.authorized_fetches += 1
        delay = request.query.get("delay_ms", "")
        if delay.isdigit():
            await asyncio.sleep(int(delay) / 1000)
        status = request.query.get("status", "")
        if status.isdigit() and int(status) != 200:
            return web.Response(status=int(status), text="simulated failure")
        mime = request.query.get("type") or type_from_url("/" + name)
        if mime is None:
            return web.Response(status=404, text="unknown file type")
        size = request.query.get("bytes", "")
        magic = _MAGIC.get(mime, b"")
        filler = hashlib.sha256(name.encode()).hexdigest().encode() * 8
        content = magic + filler
        if size.isdigit():
            wanted = min(int(size), MAX_UPLOAD_BYTES)
            content = (magic + filler * (wanted // len(filler) + 1))[:wanted]
        return web.Response(body=content, content_type=mime)
