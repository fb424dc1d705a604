"""Meta's media limits (whatsapp-api.md §1.4): the MIME types and the largest size per kind.

Checked twice: at enqueue, a link whose file extension names a type Meta does not take for its
kind (`.gif` as an image) is refused; before an upload, the bytes fetched are checked by the
type the server declared (or the extension) and by their size.
"""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass
from urllib.parse import urlsplit

MB = 1024 * 1024


@dataclass(frozen=True)
class Limit:
    types: frozenset[str]
    max_bytes: int


LIMITS = {
    "image": Limit(frozenset({"image/jpeg", "image/png"}), 5 * MB),
    "video": Limit(frozenset({"video/mp4", "video/3gpp"}), 16 * MB),
    "audio": Limit(
        frozenset({"audio/aac", "audio/amr", "audio/mpeg", "audio/mp4", "audio/ogg"}), 16 * MB
    ),
    "document": Limit(
        frozenset(
            {
                "text/plain",
                "application/pdf",
                "application/msword",
                "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
                "application/vnd.ms-excel",
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                "application/vnd.ms-powerpoint",
                "application/vnd.openxmlformats-officedocument.presentationml.presentation",
            }
        ),
        100 * MB,
    ),
}

# Names servers and mimetypes give for the types above.
_ALIASES = {
    "image/jpg": "image/jpeg",
    "image/pjpeg": "image/jpeg",
    "video/3gp": "video/3gpp",
    "audio/mp3": "audio/mpeg",
    "audio/x-m4a": "audio/mp4",
    "audio/opus": "audio/ogg",
}
# Extensions mimetypes does not know everywhere.
_EXTENSIONS = {".amr": "audio/amr", ".aac": "audio/aac", ".3gp": "video/3gpp", ".opus": "audio/ogg"}


def canonical(mime: str) -> str:
    """`Image/JPG; charset=x` -> `image/jpeg`."""
    bare = mime.split(";", 1)[0].strip().lower()
    return _ALIASES.get(bare, bare)


def type_from_url(url: str) -> str | None:
    """The MIME type the link's file extension names, if it names one."""
    path = urlsplit(url).path.lower()
    dot = path.rfind(".")
    if dot < 0 or "/" in path[dot:]:
        return None
    extension = path[dot:]
    guessed = _EXTENSIONS.get(extension) or mimetypes.guess_type("x" + extension)[0]
    return None if guessed is None else canonical(guessed)


def refused_by_extension(kind: str, url: str) -> str | None:
    """Why Meta will not take this link as `kind`, judged by its extension; None: no reason."""
    mime = type_from_url(url)
    limit = LIMITS.get(kind)
    if mime is None or limit is None or mime in limit.types:
        return None
    takes = ", ".join(sorted(limit.types))
    return f"a file of type {mime} cannot be sent as {kind} (Meta takes {takes})"


def refused_content(kind: str, mime: str | None, size: int) -> str | None:
    """Why Meta will not take these fetched bytes as `kind`; None: they fit."""
    limit = LIMITS[kind]
    takes = f"Meta takes {', '.join(sorted(limit.types))}"
    if mime is None:
        return f"the link's type is unknown (no Content-Type, no known extension; {takes})"
    if mime not in limit.types:
        return f"the link serves {mime}, which cannot be sent as {kind} ({takes})"
    if size > limit.max_bytes:
        return f"the file is larger than Meta's {limit.max_bytes // MB} MB for {kind}"
    if size == 0:
        return "the link serves an empty file"
    return None
