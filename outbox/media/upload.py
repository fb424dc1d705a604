"""Meta's answer to an upload, judged: the row's problem or the API's.

An upload carries one row's file, so what Meta says about it is that row's problem, as a link
that answers 404 is: a refusal of the file (413, a Graph error that is not about the token, the
number or the rate) fails the row; an answer without a usable media id (a 2xx without one, a 4xx
that is not Graph's) is tried again with the row's attempt counted, and fails it once they are
spent. Neither reaches the sender: no outage, no hold. No answer (no connection, a timeout) or a
5xx is the upload's too (UploadUnanswered), unless a lookup of the phone number goes unanswered
as well: then the API is down (refusal.py). Throttling (429, Meta's codes) and what says the
token or the number cannot send (account errors) are the sender's, as for a message send.

Reasons name the status and Meta's own error, never the body of an answer that is not Graph's
(a proxy's HTML page may echo the request, token and all).
"""

from __future__ import annotations

from outbox.errors import GraphError, InDoubt, SendError
from outbox.media.fetch import MediaRefused, MediaUnreachable
from outbox.retry import ErrorClass, classify
from outbox.whatsapp_client import CloudAPI

PAYLOAD_TOO_LARGE = 413


class UploadRefused(MediaRefused):
    """Meta refused the file: the row fails."""


class UploadUnusable(MediaUnreachable):
    """Meta answered the upload without a usable media id: the row tries again later, its
    attempt counted."""


class UploadUnanswered(MediaUnreachable):
    """The upload got no answer, or a 5xx: the row tries again later, its attempt counted,
    unless a lookup of the phone number goes unanswered too (an outage: no attempt used)."""


async def upload(api: CloudAPI, sender: str, content: bytes, mime: str, filename: str) -> str:
    """The media id of the file uploaded from `sender`. Raises UploadRefused, UploadUnusable,
    UploadUnanswered, or the SendError that is the sender's (see judged)."""
    try:
        return await api.upload_media(sender, content, mime, filename)
    except SendError as error:
        raise judged(error) from None


def judged(error: SendError) -> Exception:
    """The error an upload's failure is for the row: `error` itself when it is the sender's
    (throttled, an account error), else UploadRefused, UploadUnusable or UploadUnanswered."""
    status = error.http_status
    if isinstance(error, InDoubt) or status is None or status >= 500:
        if classify(error) is not ErrorClass.TRANSIENT:
            return error  # Meta's code says more (throttled, the account...): as for a send
        if status is None:
            return UploadUnanswered(str(error))
        if isinstance(error, GraphError):
            return UploadUnanswered(f"Meta could not take the upload: HTTP {status}, {error}")
        return UploadUnanswered(f"Meta answered the upload with HTTP {status} and no Graph error")
    if isinstance(error, GraphError):
        error_class = classify(error)
        if error_class in (ErrorClass.THROTTLE, ErrorClass.ACCOUNT):
            return error
        if error_class is ErrorClass.TRANSIENT:
            return UploadUnusable(f"Meta could not take the upload: {error}")
        return UploadRefused(f"Meta refused the upload: {error}")
    if status == 429:
        return error
    if status == PAYLOAD_TOO_LARGE:
        return UploadRefused("Meta refused the upload: HTTP 413, the file is too large")
    if 200 <= status < 300:
        return UploadUnusable(f"Meta answered the upload with HTTP {status} but no media id")
    return UploadUnusable(f"Meta answered the upload with HTTP {status} and no Graph error")
