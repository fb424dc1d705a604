"""Reading Meta's webhook envelope and checking its signature (outbox.webhooks.payload)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from outbox.webhooks.payload import NotAnEnvelope, parse, sign, signature_matches

EXAMPLES = Path(__file__).resolve().parents[3] / "shared" / "whatsapp-examples"
SECRET = "app-secret"


def example_bytes(name: str) -> bytes:
    """A real payload from ../shared/whatsapp-examples (or its copy below)."""
    path = EXAMPLES / name
    if path.exists():
        return path.read_bytes()
    return json.dumps(FALLBACK_EXAMPLES[name], indent=2).encode()


def example(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(example_bytes(name))
    return data


def _status_webhook(status: dict[str, Any]) -> dict[str, Any]:
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "972123456789", "phone_number_id": "1122334455667"},
        "contacts": [
            {
                "profile": {"name": "Test Name"},
                "wa_id": "972987654321",
                "user_id": "US.13491208655302741918",
                "parent_user_id": "US.ENT.11815799212886844830",
            }
        ],
        "statuses": [status],
    }
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": "5467539754836534", "changes": [{"value": value, "field": "messages"}]}],
    }


# The same payloads as ../shared/whatsapp-examples, for checkouts without shared/ beside them.
FALLBACK_EXAMPLES = {
    "status_webhook_delivered.json": _status_webhook(
        {
            "id": "wamid.xyzxyz",
            "status": "delivered",
            "timestamp": "1698266945",
            "recipient_id": "972987654321",
            "conversation": {"id": "7270432eae37498234f4444b35ffc5", "origin": {"type": "service"}},
            "pricing": {"billable": True, "pricing_model": "CBP", "category": "service"},
        }
    ),
    "status_webhook_failed_130472.json": _status_webhook(
        {
            "id": "wamid.xyzxyz",
            "status": "failed",
            "timestamp": "1689380458",
            "recipient_id": "972987654321",
            "errors": [
                {
                    "code": 130472,
                    "title": "User's number is part of an experiment",
                    "message": "User's number is part of an experiment",
                    "error_data": {
                        "details": "Failed to send message because this user's phone "
                        "number is part of an experiment"
                    },
                    "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/",
                }
            ],
        }
    ),
}


def with_value(**value: Any) -> bytes:
    """An envelope with one change whose value is `value`."""
    change = {"field": "messages", "value": {"messaging_product": "whatsapp", **value}}
    envelope = {
        "object": "whatsapp_business_account",
        "entry": [{"id": "1", "changes": [change]}],
    }
    return json.dumps(envelope).encode()


def status(**fields: Any) -> dict[str, Any]:
    return {"id": "wamid.A", "status": "delivered", "timestamp": "1698266945", **fields}


def test_the_fallback_examples_are_the_shared_ones() -> None:
    for name, payload in FALLBACK_EXAMPLES.items():
        if (EXAMPLES / name).exists():
            assert json.loads((EXAMPLES / name).read_bytes()) == payload


def test_the_delivered_example_is_one_delivered_status() -> None:
    body = example_bytes("status_webhook_delivered.json")
    [found] = parse(body).statuses
    assert (found.wamid, found.status, found.recipient) == (
        "wamid.xyzxyz",
        "delivered",
        "972987654321",
    )
    assert found.at == datetime(2023, 10, 25, 20, 49, 5, tzinfo=UTC)
    assert (found.row_id, found.part, found.error_code, found.error_title) == (
        None,
        None,
        None,
        None,
    )


def test_the_failed_example_carries_its_error_code_and_title() -> None:
    body = example_bytes("status_webhook_failed_130472.json")
    [found] = parse(body).statuses
    assert (found.status, found.error_code, found.error_title) == (
        "failed",
        130472,
        "User's number is part of an experiment",
    )


def test_our_callback_data_names_the_row_and_the_part() -> None:
    [found] = parse(with_value(statuses=[status(biz_opaque_callback_data="outbox:42:3")])).statuses
    assert (found.row_id, found.part) == (42, 3)


@pytest.mark.parametrize("callback", ["order:42:3", "outbox:42", "outbox:x:1", "outbox:4:2:1"])
def test_callback_data_not_ours_names_no_row(callback: str) -> None:
    [found] = parse(with_value(statuses=[status(biz_opaque_callback_data=callback)])).statuses
    assert (found.row_id, found.part) == (None, None)


def test_malformed_statuses_are_skipped() -> None:
    statuses = [
        status(status="exploded"),
        status(id=""),
        status(id=7),
        "not an object",
        status(id="wamid.B", status="read"),
    ]
    assert [s.wamid for s in parse(with_value(statuses=statuses)).statuses] == ["wamid.B"]


def test_a_missing_or_absurd_timestamp_is_taken_as_now() -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    statuses = [status(timestamp=None), status(timestamp="soon"), status(timestamp="99999999999")]
    for found in parse(with_value(statuses=statuses)).statuses:
        assert found.at >= before


def test_an_error_without_title_takes_its_message() -> None:
    errors = [{"code": 131026, "message": "Message undeliverable"}]
    [found] = parse(with_value(statuses=[status(status="failed", errors=errors)])).statuses
    assert (found.error_code, found.error_title) == (131026, "Message undeliverable")


def test_inbound_messages_carry_the_business_number_and_the_customer() -> None:
    message = {"from": "923001234567", "id": "wamid.IN", "timestamp": "1698266945", "type": "text"}
    body = with_value(metadata={"phone_number_id": "1122334455667"}, messages=[message])
    [found] = parse(body).inbound
    assert (found.wamid, found.phone_number_id, found.customer, found.type) == (
        "wamid.IN",
        "1122334455667",
        "923001234567",
        "text",
    )


def test_several_entries_and_changes_are_read_in_order() -> None:
    data = json.loads(with_value(statuses=[status(id="wamid.1")]))
    data["entry"][0]["changes"].append(
        {"field": "messages", "value": {"statuses": [status(id="wamid.2")]}}
    )
    data["entry"].append(
        {"changes": [{"field": "messages", "value": {"statuses": [status(id="wamid.3")]}}]}
    )
    found = parse(json.dumps(data).encode()).statuses
    assert [s.wamid for s in found] == ["wamid.1", "wamid.2", "wamid.3"]


def test_changes_of_other_fields_are_skipped() -> None:
    data = json.loads(with_value(statuses=[status()]))
    data["entry"][0]["changes"][0]["field"] = "message_template_status_update"
    assert parse(json.dumps(data).encode()).statuses == []


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"\xff\xfe",
        b"[]",
        b'{"object": "page", "entry": []}',
        b'{"object": "whatsapp_business_account"}',
        b'{"object": "whatsapp_business_account", "entry": [{"id": "1"}]}',
        b'{"object": "whatsapp_business_account", "entry": ["x"]}',
    ],
)
def test_a_body_that_is_not_a_business_account_webhook_is_not_an_envelope(body: bytes) -> None:
    with pytest.raises(NotAnEnvelope):
        parse(body)


def test_a_signature_of_the_raw_bytes_matches() -> None:
    body = b'{"object":"whatsapp_business_account","entry":[{"name":"Jos\\u00e9"}]}'
    assert signature_matches(SECRET, body, sign(SECRET, body))


def test_a_signature_of_the_same_json_serialized_differently_does_not_match() -> None:
    body = b'{"object":"whatsapp_business_account","entry":[{"name":"Jos\\u00e9"}]}'
    reserialized = json.dumps(json.loads(body), ensure_ascii=False).encode()
    assert not signature_matches(SECRET, body, sign(SECRET, reserialized))


def test_a_signature_with_another_secret_does_not_match() -> None:
    assert not signature_matches(SECRET, b"{}", sign("other", b"{}"))


@pytest.mark.parametrize("header", ["", "sha256=", "sha256=zz", "sha256=é", "garbage"])
def test_a_malformed_signature_header_does_not_match(header: str) -> None:
    assert not signature_matches(SECRET, b"{}", header)


def test_callback_data_with_an_installation_names_it_with_the_row_and_part() -> None:
    callback = "outbox:5f3a9c0e1b2d4e6f:42:3"
    [found] = parse(with_value(statuses=[status(biz_opaque_callback_data=callback)])).statuses
    assert (found.installation, found.row_id, found.part) == ("5f3a9c0e1b2d4e6f", 42, 3)


@pytest.mark.parametrize("kind", ["played", "deleted", "warning"])
def test_statuses_that_move_no_row_are_still_read_for_the_history(kind: str) -> None:
    [found] = parse(with_value(statuses=[status(status=kind)])).statuses
    assert found.status == kind


def test_a_warning_carries_its_error() -> None:
    warning = status(status="warning", errors=[{"code": 131059, "title": "Item unavailable"}])
    [found] = parse(with_value(statuses=[warning])).statuses
    assert (found.error_code, found.error_title) == (131059, "Item unavailable")


def test_value_level_errors_are_read_with_their_phone_number() -> None:
    body = with_value(
        metadata={"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
        errors=[
            {
                "code": 130429,
                "title": "Rate limit hit",
                "message": "(#130429) Rate limit hit",
                "error_data": {"details": "Cloud API message throughput has been reached."},
            }
        ],
    )
    [error] = parse(body).errors
    assert (error.phone_number_id, error.code, error.title, error.detail) == (
        "106540352242922",
        130429,
        "Rate limit hit",
        "Cloud API message throughput has been reached.",
    )


def test_an_inbound_message_meta_could_not_handle_carries_its_error() -> None:
    unsupported = {
        "from": "16505551234",
        "id": "wamid.IN",
        "timestamp": "1698266945",
        "type": "unsupported",
        "errors": [{"code": 131051, "title": "Message type unknown"}],
    }
    [found] = parse(with_value(messages=[unsupported])).inbound
    assert (found.customer, found.type, found.error_code, found.error_title) == (
        "16505551234",
        "unsupported",
        131051,
        "Message type unknown",
    )


def test_an_inbound_message_from_a_user_without_a_phone_number_is_read_by_user_id() -> None:
    by_username = {
        "from_user_id": "US.13491208655302741918",
        "id": "wamid.IN",
        "timestamp": "1698266945",
        "type": "text",
        "text": {"body": "hi"},
    }
    [found] = parse(with_value(messages=[by_username])).inbound
    assert (found.customer, found.user_id) == (None, "US.13491208655302741918")


def test_a_body_nested_too_deep_to_read_is_not_an_envelope() -> None:
    with pytest.raises(NotAnEnvelope, match="not JSON outbox can read"):
        parse(b"[" * 5000 + b"]" * 5000)
