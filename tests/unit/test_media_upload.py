"""Meta's answers to an upload, judged (outbox/media/upload.py): what is about the file is the
row's (UploadRefused fails it, UploadUnusable retries it, counted), as is no answer or a 5xx
(UploadUnanswered: the sender's only if a lookup goes unanswered too); throttling, or the token
or the number refused, stays a SendError for the sender."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aioresponses import aioresponses

from outbox.errors import GraphError, TransportError
from outbox.media.upload import UploadRefused, UploadUnanswered, UploadUnusable, upload
from outbox.retry import ErrorClass, classify
from outbox.whatsapp_client import CloudAPI

URL = "http://127.0.0.1:9/v23.0/1122334455/media"
TOKEN = "EAAG-secret-token"
PDF = b"%PDF-1.4\n..."


@pytest.fixture
async def api() -> AsyncIterator[CloudAPI]:
    async with aiohttp.ClientSession() as session:
        yield CloudAPI(
            session,
            base_url="http://127.0.0.1:9",
            version="v23.0",
            phone_number_id="1122334455",
            access_token=TOKEN,
            timeout=0.5,
        )


def _graph(code: int, message: str) -> str:
    return json.dumps({"error": {"code": code, "message": message, "type": "OAuthException"}})


async def _upload(api: CloudAPI) -> str:
    return await upload(api, "1122334455", PDF, "application/pdf", "menu.pdf")


async def test_an_answer_with_an_id_is_the_media_id(api: CloudAPI) -> None:
    with aioresponses() as mocked:
        mocked.post(URL, status=200, body='{"id": "1234567890123456"}')
        assert await _upload(api) == "1234567890123456"


@pytest.mark.parametrize("body", ["{}", '{"id": null}', "[]", "<html>ok</html>", ""])
async def test_a_2xx_without_a_usable_id_is_retried_by_the_row(api: CloudAPI, body: str) -> None:
    with aioresponses() as mocked:
        mocked.post(URL, status=200, body=body)
        with pytest.raises(UploadUnusable) as caught:
            await _upload(api)
    assert str(caught.value) == "Meta answered the upload with HTTP 200 but no media id"


async def test_an_html_413_fails_the_row_without_the_page_or_the_token(api: CloudAPI) -> None:
    page = f"<html><body><h1>413 Request Entity Too Large</h1>Bearer {TOKEN}</body></html>"
    with aioresponses() as mocked:
        mocked.post(URL, status=413, body=page, content_type="text/html")
        with pytest.raises(UploadRefused) as caught:
            await _upload(api)
    assert str(caught.value) == "Meta refused the upload: HTTP 413, the file is too large"


async def test_a_graph_error_about_the_file_fails_the_row_with_metas_words(api: CloudAPI) -> None:
    with aioresponses() as mocked:
        mocked.post(URL, status=400, body=_graph(131053, "Media upload error"))
        with pytest.raises(UploadRefused) as caught:
            await _upload(api)
    assert str(caught.value) == "Meta refused the upload: (#131053) Media upload error"


async def test_a_4xx_that_is_not_graphs_is_retried_by_the_row(api: CloudAPI) -> None:
    with aioresponses() as mocked:
        mocked.post(URL, status=400, body="<html>Bad Request</html>", content_type="text/html")
        with pytest.raises(UploadUnusable) as caught:
            await _upload(api)
    assert str(caught.value) == "Meta answered the upload with HTTP 400 and no Graph error"


async def test_a_transient_graph_code_in_a_4xx_is_retried_by_the_row(api: CloudAPI) -> None:
    with aioresponses() as mocked:
        mocked.post(URL, status=400, body=_graph(131000, "Something went wrong"))
        with pytest.raises(UploadUnusable):
            await _upload(api)


@pytest.mark.parametrize(
    ("status", "body", "error_class"),
    [
        (429, "Too Many Requests", ErrorClass.THROTTLE),
        (400, _graph(80007, "Rate limit issues"), ErrorClass.THROTTLE),
        (503, _graph(80007, "Rate limit issues"), ErrorClass.THROTTLE),
        (401, _graph(190, "Error validating access token"), ErrorClass.ACCOUNT),
    ],
    ids=["429", "throttle-code", "throttle-code-in-a-5xx", "token"],
)
async def test_throttling_or_refusing_the_token_stays_the_senders(
    api: CloudAPI, status: int, body: str, error_class: ErrorClass
) -> None:
    with aioresponses() as mocked:
        mocked.post(URL, status=status, body=body)
        with pytest.raises((GraphError, TransportError)) as caught:
            await _upload(api)
    assert classify(caught.value) is error_class


@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        (
            502,
            f"<html>Bad Gateway {TOKEN}</html>",
            "Meta answered the upload with HTTP 502 and no Graph error",
        ),
        (
            500,
            _graph(131000, "Something went wrong"),
            "Meta could not take the upload: HTTP 500, (#131000) Something went wrong",
        ),
    ],
    ids=["5xx-html", "5xx-graph"],
)
async def test_a_5xx_is_the_uploads_unanswered_naming_no_body(
    api: CloudAPI, status: int, body: str, reason: str
) -> None:
    with aioresponses() as mocked:
        mocked.post(URL, status=status, body=body)
        with pytest.raises(UploadUnanswered) as caught:
            await _upload(api)
    assert str(caught.value) == reason


async def test_no_connection_is_the_uploads_unanswered(api: CloudAPI) -> None:
    with aioresponses() as mocked:
        mocked.post(URL, exception=aiohttp.ClientConnectionError("refused"))
        with pytest.raises(UploadUnanswered) as caught:
            await _upload(api)
    assert str(caught.value).startswith("the media upload failed: ClientConnectionError")
