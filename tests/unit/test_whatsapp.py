"""The Cloud API client: payloads per part type, the wamid of a 200, typed errors otherwise."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aioresponses import aioresponses

from outbox.errors import GraphError, InDoubt, SendError, TransportError
from outbox.whatsapp import Part, error_from_response, parse_retry_after, parts_of, payload
from outbox.whatsapp_client import CloudAPI

EXAMPLES = Path(__file__).resolve().parents[3] / "shared" / "whatsapp-examples"
URL = "http://127.0.0.1:9/v23.0/1122334455/messages"
TOKEN = "EAAG-secret-token"


def example(name: str) -> str:
    path = EXAMPLES / name
    if path.exists():
        return path.read_text()
    return json.dumps(FALLBACK_EXAMPLES[name])


# The same payloads as ../shared/whatsapp-examples, for checkouts without shared/ beside them.
FALLBACK_EXAMPLES = {
    "send_success_response.json": {
        "messaging_product": "whatsapp",
        "contacts": [{"input": "+16505551234", "wa_id": "16505551234"}],
        "messages": [{"id": "wamid.HBgLMTY0NjcwNDM1OTUVAgARGBI1RjQyNUE3NEYxMzAzMzQ5MkEA"}],
    },
    "error_190_token_expired_real.json": {
        "error": {
            "message": "Error validating access token: Session has expired on Saturday, "
            "29-Jun-24 09:00:00 PDT. The current time is Monday, 01-Jul-24 11:06:30 PDT.",
            "type": "OAuthException",
            "code": 190,
            "error_subcode": 463,
            "fbtrace_id": "AZ-HzGEkqc5Vf3E0gy-eAcV",
        }
    },
    "error_130429_rate_limit_meta_sample.json": {
        "error": {
            "message": "(#130429) Rate limit hit",
            "type": "OAuthException",
            "code": 130429,
            "error_data": {
                "messaging_product": "whatsapp",
                "details": "Message failed to send because there were too many messages sent "
                "from this phone number in a short period of time",
            },
            "error_subcode": 2494055,
            "fbtrace_id": "Az8or2yhqkZfEZ-_4Qn_Bam",
        }
    },
}


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


def test_text_with_a_link_asks_for_a_preview() -> None:
    body = payload("923001234567", Part("text", body="See https://example.com/b/1"), "outbox:7:0")
    assert body == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "923001234567",
        "type": "text",
        "text": {"body": "See https://example.com/b/1", "preview_url": True},
        "biz_opaque_callback_data": "outbox:7:0",
    }


def test_plain_text_has_no_preview_flag() -> None:
    assert payload("923001234567", Part("text", body="hi"))["text"] == {"body": "hi"}


def test_document_carries_link_caption_and_filename() -> None:
    part = Part("document", url="https://a.example/i.pdf", caption="Invoice", filename="i.pdf")
    assert payload("923001234567", part)["document"] == {
        "link": "https://a.example/i.pdf",
        "caption": "Invoice",
        "filename": "i.pdf",
    }


def test_audio_never_carries_a_caption() -> None:
    part = Part("audio", url="https://a.example/v.ogg", caption="ignored")
    assert payload("923001234567", part)["audio"] == {"link": "https://a.example/v.ogg"}


def test_parts_are_media_in_order_then_text() -> None:
    media = [
        {"type": "video", "url": "https://a.example/v.mp4"},
        {"type": "image", "url": "https://a.example/i.jpg"},
    ]
    assert [p.type for p in parts_of("hello", media)] == ["video", "image", "text"]


async def test_success_returns_the_wamid_and_sends_the_bearer_token(api: CloudAPI) -> None:
    with aioresponses() as mocked:
        mocked.post(URL, status=200, body=example("send_success_response.json"))
        wamid = await api.send("16505551234", Part("text", body="hi"))
        request = next(iter(mocked.requests.values()))[0]
    assert wamid == "wamid.HBgLMTY0NjcwNDM1OTUVAgARGBI1RjQyNUE3NEYxMzAzMzQ5MkEA"
    assert request.kwargs["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert request.kwargs["json"]["to"] == "16505551234"


@pytest.mark.parametrize(
    "body", ["not json", "{}", '{"messages": []}', '{"messages": [{"id": ""}]}']
)
async def test_a_200_without_a_wamid_is_in_doubt(api: CloudAPI, body: str) -> None:
    with aioresponses() as mocked:
        mocked.post(URL, status=200, body=body)
        with pytest.raises(InDoubt, match="HTTP 200"):
            await api.send("923001234567", Part("text", body="hi"))


@pytest.mark.parametrize(
    "wamid", ["wamid.\u0000x", "wamid with spaces", "wamid.\u00e9", "x" * 600, "\ud800"]
)
async def test_a_200_with_an_unusable_wamid_is_in_doubt(api: CloudAPI, wamid: str) -> None:
    with aioresponses() as mocked:
        mocked.post(URL, status=200, body=json.dumps({"messages": [{"id": wamid}]}))
        with pytest.raises(InDoubt, match="usable message id"):
            await api.send("923001234567", Part("text", body="hi"))


async def test_an_error_body_is_cleaned_of_nul_bytes(api: CloudAPI) -> None:
    with aioresponses() as mocked:
        mocked.post(URL, status=502, body="<html>\x00Bad\x00 Gateway</html>")
        with pytest.raises(TransportError) as caught:
            await api.send("923001234567", Part("text", body="hi"))
    assert "\x00" not in str(caught.value)
    assert "Bad? Gateway" in str(caught.value)


@pytest.mark.parametrize(
    "body",
    ['{"error": {"message": " "}}', '{"error": {"message": "\\u0000"}}', '{"error": {}}'],
    ids=["blank", "control character", "none"],
)
def test_a_graph_error_without_a_message_still_says_why(body: str) -> None:
    error = error_from_response(400, body, None)
    assert str(error).strip("? ") != ""


def test_a_send_error_with_nothing_to_say_names_its_http_status() -> None:
    assert str(TransportError("  ", http_status=502)) == "HTTP 502, no reason given"
    assert str(TransportError("")) == "no reason given"


async def test_a_huge_answer_is_read_only_in_part(api: CloudAPI) -> None:
    with aioresponses() as mocked:
        mocked.post(URL, status=500, body="x" * 10_000_000)
        with pytest.raises(TransportError) as caught:
            await api.send("923001234567", Part("text", body="hi"))
    assert len(str(caught.value)) < 1000


async def test_graph_error_carries_status_code_subcode_and_trace(api: CloudAPI) -> None:
    with aioresponses() as mocked:
        mocked.post(URL, status=401, body=example("error_190_token_expired_real.json"))
        with pytest.raises(GraphError) as caught:
            await api.send("923001234567", Part("text", body="hi"))
    error = caught.value
    assert (error.http_status, error.code, error.subcode) == (401, 190, 463)
    assert error.fbtrace_id == "AZ-HzGEkqc5Vf3E0gy-eAcV"
    assert TOKEN not in str(error)


async def test_graph_error_keeps_details_and_retry_after(api: CloudAPI) -> None:
    with aioresponses() as mocked:
        mocked.post(
            URL,
            status=429,
            body=example("error_130429_rate_limit_meta_sample.json"),
            headers={"Retry-After": "7"},
        )
        with pytest.raises(GraphError) as caught:
            await api.send("923001234567", Part("text", body="hi"))
    assert caught.value.code == 130429
    assert caught.value.retry_after == 7.0
    assert "too many messages" in (caught.value.details or "")


async def test_a_5xx_html_page_is_a_transport_error(api: CloudAPI) -> None:
    with aioresponses() as mocked:
        mocked.post(URL, status=502, body="<html>Bad Gateway</html>")
        with pytest.raises(TransportError) as caught:
            await api.send("923001234567", Part("text", body="hi"))
    assert caught.value.http_status == 502


async def test_connection_failure_is_a_transport_error(api: CloudAPI) -> None:
    with aioresponses() as mocked:
        mocked.post(URL, exception=aiohttp.ClientConnectionError("connection reset"))
        with pytest.raises(TransportError, match="connection reset"):
            await api.send("923001234567", Part("text", body="hi"))


async def test_a_timeout_is_in_doubt(api: CloudAPI) -> None:
    with aioresponses() as mocked:
        mocked.post(URL, exception=TimeoutError())
        with pytest.raises(InDoubt, match="may have been accepted") as caught:
            await api.send("923001234567", Part("text", body="hi"))
    assert not caught.value.answered


async def test_a_connect_timeout_is_not_in_doubt(api: CloudAPI) -> None:
    with aioresponses() as mocked:
        mocked.post(URL, exception=aiohttp.ConnectionTimeoutError())
        with pytest.raises(TransportError) as caught:
            await api.send("923001234567", Part("text", body="hi"))
    assert not isinstance(caught.value, InDoubt)


def test_repr_never_shows_the_token(api: CloudAPI) -> None:
    assert TOKEN not in repr(api)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("3", 3.0),
        ("0", 0.0),
        (None, None),
        ("soon", None),
        ("inf", None),
        ("-inf", None),
        ("nan", None),
        ("-5", 0.0),
        ("1000000000", 86400.0),
        ("Fri, 31 Dec 9999 23:59:59 GMT", 86400.0),
        ("Mon, 99 Foo 2024 99:99:99 GMT", None),
    ],
)
def test_retry_after_in_seconds(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header) == seconds


async def test_an_error_code_too_big_to_store_is_dropped(api: CloudAPI) -> None:
    with aioresponses() as mocked:
        mocked.post(URL, status=503, body='{"error": {"code": 99999999999, "message": "m"}}')
        with pytest.raises(GraphError) as caught:
            await api.send("923001234567", Part("text", body="hi"))
    assert caught.value.code is None


@pytest.mark.parametrize("code", ["true", "190.5", '"190"x', "[190]"])
async def test_an_error_code_that_is_not_a_whole_number_is_dropped(
    api: CloudAPI, code: str
) -> None:
    with aioresponses() as mocked:
        mocked.post(URL, status=400, body=f'{{"error": {{"code": {code}, "message": "m"}}}}')
        with pytest.raises(SendError) as caught:
            await api.send("923001234567", Part("text", body="hi"))
    assert getattr(caught.value, "code", None) is None


@pytest.mark.parametrize("status", [201, 202])
async def test_any_2xx_with_a_wamid_is_accepted(api: CloudAPI, status: int) -> None:
    with aioresponses() as mocked:
        mocked.post(URL, status=status, body=example("send_success_response.json"))
        wamid = await api.send("923001234567", Part("text", body="hi"))
    assert wamid.startswith("wamid.")


BROKEN_BODIES = {
    # A Content-Length the body never reaches, then the connection closes.
    "truncated": b"Content-Length: 200\r\n\r\n" + b'{"messaging_product": "whatsapp", "mess',
    # A chunked body that is not valid chunked encoding.
    "bad chunk": b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
}
STATUS_SEEN = {"truncated": 200, "bad chunk": None}  # aiohttp refuses the whole bad-chunk answer


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def raw_api(answer: Handler) -> AsyncIterator[CloudAPI]:
    """A CloudAPI whose Graph API is `answer`, on raw sockets."""
    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with aiohttp.ClientSession() as session:
            yield CloudAPI(
                session,
                base_url=f"http://127.0.0.1:{port}",
                version="v23.0",
                phone_number_id="1122334455",
                access_token=TOKEN,
                timeout=5,
            )
    finally:
        server.close()
        await server.wait_closed()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """One whole request: its headers, then the body its Content-Length announces."""
    head = await reader.readuntil(b"\r\n\r\n")
    lengths = [
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    ]
    length = lengths[0] if lengths else 0
    return head + await reader.readexactly(length)


def accepted_answer() -> bytes:
    body = json.dumps({"messaging_product": "whatsapp", "messages": [{"id": "wamid.OK"}]})
    return (
        f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()


@pytest.mark.parametrize("broken", sorted(BROKEN_BODIES))
async def test_a_200_whose_body_breaks_off_is_in_doubt_not_a_transport_error(broken: str) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")  # the request's headers; its body stays unread
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
        writer.write(BROKEN_BODIES[broken])
        await writer.drain()
        writer.close()

    async with raw_api(answer) as api:
        with pytest.raises(InDoubt) as caught:
            await api.send("923001234567", Part("text", body="hi"))
    assert caught.value.http_status == STATUS_SEEN[broken]
    assert caught.value.answered  # something came back: the API is up, this is no outage


UNPACKS_HUGE = """
import asyncio, gzip, sys, tracemalloc
import aiohttp
from outbox.errors import TransportError
from outbox.whatsapp import Part
from outbox.whatsapp_client import CloudAPI

PACKED = gzip.compress(b"x" * 60_000_000, compresslevel=9)

async def answer(reader, writer):
    await reader.readuntil(b"\\r\\n\\r\\n")
    writer.write(
        b"HTTP/1.1 500 Internal Server Error\\r\\nContent-Encoding: gzip\\r\\n"
        b"Content-Length: %d\\r\\n\\r\\n" % len(PACKED) + PACKED
    )
    await writer.drain()
    writer.close()

async def main():
    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with aiohttp.ClientSession() as session:
        api = CloudAPI(session, base_url=f"http://127.0.0.1:{port}", version="v23.0",
                       phone_number_id="1122334455", access_token="EAAG-secret-token", timeout=5)
        tracemalloc.start()
        try:
            await api.send("923001234567", Part("text", body="hi"))
        except TransportError:
            pass
        print(len(PACKED), tracemalloc.get_traced_memory()[1])
    server.close()

asyncio.run(main())
"""


def test_a_small_compressed_answer_that_unpacks_huge_is_read_only_in_part() -> None:
    """Its Content-Length counts the compressed bytes (60 KB), not the 60 MB they unpack to:
    the answer is read up to the cap, never whole (memory traced in a process of its own)."""
    result = subprocess.run(
        [sys.executable, "-c", UNPACKS_HUGE], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    packed, peak = (int(figure) for figure in result.stdout.split())
    assert packed < 64 * 1024
    assert peak < 8_000_000, f"{peak:,} bytes held to read a {packed:,}-byte answer"


@pytest.mark.parametrize("ending", ["close", "reset"])
async def test_a_new_connection_ended_after_the_whole_request_is_in_doubt(ending: str) -> None:
    """The API read the request and may have accepted it before the connection broke: a quick
    resend could deliver the part twice."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        if ending == "reset":
            writer.transport.abort()
        else:
            writer.close()

    async with raw_api(answer) as api:
        with pytest.raises(InDoubt, match="may have been accepted") as caught:
            await api.send("923001234567", Part("text", body="hi"))
    assert not caught.value.answered  # nothing came back: it counts towards an outage
    assert caught.value.dropped


async def test_a_kept_alive_connection_ended_after_the_request_is_in_doubt_too() -> None:
    """Most requests go out on a reused connection, so that is where most answers are lost. A
    server that closed it just as the request left looks the same and is rare: held in doubt
    too (HTTP clients do not replay a POST either)."""
    requests = 0

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal requests
        await read_request(reader)
        requests += 1
        writer.write(accepted_answer())  # the first request is answered, keep-alive
        await writer.drain()
        await read_request(reader)
        requests += 1
        writer.close()

    async with raw_api(answer) as api:
        assert await api.send("923001234567", Part("text", body="hi")) == "wamid.OK"
        with pytest.raises(InDoubt, match="may have been accepted"):
            await api.send("923001234567", Part("text", body="again"))
    assert requests == 2  # the second went out on the first one's connection


async def test_a_refused_connection_is_a_transport_error(api: CloudAPI) -> None:
    with pytest.raises(TransportError) as caught:
        await api.send("923001234567", Part("text", body="hi"))  # nothing listens on port 9
    assert not isinstance(caught.value, InDoubt)


@pytest.mark.parametrize("status", [200, 400, 401, 500, 503])
async def test_a_lookup_answered_at_all_shows_the_api_can_be_reached(
    api: CloudAPI, status: int
) -> None:
    """An error is an answer too: only a message probe tells whether sending works."""
    with aioresponses() as mocked:
        mocked.get(
            "http://127.0.0.1:9/v23.0/1122334455?fields=id",
            status=status,
            payload={"id": "1122334455"},
        )
        reason = await api.unreachable()
        ((_, call),) = [(key, calls[0]) for key, calls in mocked.requests.items()]
    assert reason is None
    assert call.kwargs["headers"]["Authorization"] == f"Bearer {TOKEN}"


async def test_a_lookup_nothing_answers_says_why(api: CloudAPI) -> None:
    assert "ClientConnectorError" in (await api.unreachable() or "")  # port 9: refused
    with aioresponses() as mocked:
        mocked.get("http://127.0.0.1:9/v23.0/1122334455?fields=id", exception=TimeoutError())
        assert await api.unreachable() == "a lookup of the phone number timed out"


async def test_lookups_asked_meanwhile_share_one_request(api: CloudAPI) -> None:
    with aioresponses() as mocked:
        mocked.get("http://127.0.0.1:9/v23.0/1122334455?fields=id", exception=TimeoutError())
        reasons = await asyncio.gather(*(api.unreachable() for _ in range(5)))
        assert sum(len(calls) for calls in mocked.requests.values()) == 1
    assert reasons == ["a lookup of the phone number timed out"] * 5


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (400, json.dumps({"error": {"code": 100, "message": f"bad header Bearer {TOKEN}"}})),
        (502, f"<html>gateway saw Authorization: Bearer {TOKEN}</html>"),
        (200, f"<html>welcome, Bearer {TOKEN}</html>"),
    ],
    ids=["graph-error", "gateway-page", "html-200"],
)
async def test_an_answer_that_echoes_the_access_token_never_carries_it_into_the_error(
    api: CloudAPI, status: int, body: str
) -> None:
    with aioresponses() as mocked:
        mocked.post(URL, status=status, body=body)
        with pytest.raises(SendError) as caught:
            await api.send("923001234567", Part("text", body="hi"))
    error = caught.value
    assert TOKEN not in str(error)
    assert TOKEN not in repr(error.__dict__)
    assert "Bearer ***" in str(error)
