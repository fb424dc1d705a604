"""No row says more than Meta said: a status settles a send in doubt only when it is about our
installation, our row's recipient and our row's time; every part's statuses are found; every
status lands once; a failed part stops its row."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.ext.asyncio import AsyncEngine

import outbox
from outbox import store
from outbox.callbacks import callback_data
from outbox.database import asyncpg_dsn
from outbox.pool import Pool
from outbox.simulator import Simulator
from outbox.webhooks import create_app
from outbox.webhooks.apply import Applier
from tests.daemon_helpers import drain, enqueue, script, sent, status
from tests.integration.test_webhooks import (
    SECRET,
    VERIFY_TOKEN,
    claimed_row,
    envelope,
    example_status,
    post,
    scalar,
    sent_row,
)

CUSTOMER = "923001234567"
STRANGER = "447700900000"  # the repro's recipient_id: not our row's customer
pytestmark = pytest.mark.timeout(90)


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[TestClient[Any, Any]]:
    receiver = outbox.Settings(
        database_url=database_url, app_secret=SECRET, webhook_verify_token=VERIFY_TOKEN
    )
    async with TestClient(TestServer(create_app(receiver))) as client:
        yield client


@pytest.fixture
async def installation(engine: AsyncEngine) -> str:
    return str(await scalar(engine, "SELECT id FROM outbox_installation"))


def delivered(
    wamid: str, callback: str, *, recipient: str = CUSTOMER, at: float | None = None
) -> bytes:
    """A signed-ready `delivered` status body about `recipient`, stamped now unless `at`."""
    entry = example_status(wamid=wamid, callback=callback, timestamp=int(at or time.time()))
    entry["recipient_id"] = recipient
    return envelope(entry)


def in_doubt_once(settings: outbox.Settings, simulator: Simulator) -> outbox.Settings:
    """The first send hangs past the request timeout (in doubt, never accepted), the next one
    is accepted; the daemon waits 3 s for a webhook to settle the first."""
    script(simulator, CUSTOMER, {"hang_ms": 4000})
    return replace(settings, request_timeout=1.0, reconcile_seconds=3.0)


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def assert_not_settled_by(engine: AsyncEngine, simulator: Simulator, row: int) -> None:
    """The part was sent again and accepted, and the row says only that."""
    delivery = await status(engine, row)
    assert (delivery.status, delivery.delivered_at) == ("sent", None)
    assert delivery.message_id == simulator.accepted[0]["wamid"] != "wamid.OTHER"
    assert sent(simulator) == [f"outbox:{row}:0"]


# --- a send in doubt is settled only by a status that is about it ----------------------------


# Statuses that must not settle our row's send in doubt: (callback data, recipient_id, time)
# made from this database's installation id and the row's id.
NOT_ABOUT_OUR_SEND = {
    # The reproduction: another deployment's row with the same id, on the same number.
    "old form, another customer": lambda inst, row: (f"outbox:{row}:0", STRANGER, None),
    "another installation": lambda inst, row: (
        callback_data("0123456789abcdef", row, 0),
        CUSTOMER,
        None,
    ),
    "another recipient": lambda inst, row: (callback_data(inst, row, 0), STRANGER, None),
    "from before the row existed": lambda inst, row: (
        callback_data(inst, row, 0),
        CUSTOMER,
        time.time() - 3600,
    ),
}


@pytest.mark.parametrize("case", NOT_ABOUT_OUR_SEND)
async def test_a_status_not_about_our_send_does_not_settle_it(
    engine: AsyncEngine,
    settings: outbox.Settings,
    simulator: Simulator,
    client: TestClient[Any, Any],
    installation: str,
    case: str,
) -> None:
    row = await enqueue(engine, CUSTOMER, "your booking")
    callback, recipient, at = NOT_ABOUT_OUR_SEND[case](installation, row)
    body = delivered("wamid.OTHER", callback, recipient=recipient, at=at)
    assert await post(client, engine, body) == 200
    assert await drain(in_doubt_once(settings, simulator)) == 0
    await assert_not_settled_by(engine, simulator, row)


async def test_a_status_about_our_row_settles_its_send_in_doubt_and_then_applies(
    engine: AsyncEngine,
    settings: outbox.Settings,
    simulator: Simulator,
    client: TestClient[Any, Any],
    installation: str,
) -> None:
    """Meta accepted the request whose answer was lost: its status names our installation, row,
    part and recipient. The part is recorded with Meta's wamid, not sent again, and the status
    that waited for it applies as soon as it is recorded."""
    row = await enqueue(engine, CUSTOMER, "your booking")
    ours = callback_data(installation, row, 0)
    assert await post(client, engine, delivered("wamid.MINE", ours)) == 200
    assert await drain(in_doubt_once(settings, simulator)) == 0
    assert simulator.accepted == []

    async def delivered_by_its_status() -> bool:
        return (await status(engine, row)).status == "delivered"

    await eventually(delivered_by_its_status)
    assert (await status(engine, row)).message_id == "wamid.MINE"


# --- every part's statuses ---------------------------------------------------------------------


async def test_statuses_for_a_non_last_part_without_callback_data_are_applied_by_wamid(
    engine: AsyncEngine, client: TestClient[Any, Any]
) -> None:
    row = await sent_row(engine, "wamid.IMG", "wamid.TEXT", media=1)
    for wamid in ("wamid.IMG", "wamid.TEXT"):
        assert await post(client, engine, envelope(example_status(wamid=wamid))) == 200
    delivery = await status(engine, row)
    assert [part.status for part in delivery.parts] == ["delivered", "delivered"]
    assert delivery.status == "delivered"


async def test_a_failed_status_for_a_non_last_part_without_callback_data_fails_the_row(
    engine: AsyncEngine, client: TestClient[Any, Any]
) -> None:
    row = await sent_row(engine, "wamid.IMG", "wamid.TEXT", media=1)
    failed = example_status("status_webhook_failed_130472.json", wamid="wamid.IMG")
    assert await post(client, engine, envelope(failed)) == 200
    delivery = await status(engine, row)
    assert (delivery.status, delivery.error_code) == ("failed", 130472)


# --- every status lands once ---------------------------------------------------------------------


async def test_concurrent_deliveries_of_one_webhook_store_and_apply_it_once(
    engine: AsyncEngine, client: TestClient[Any, Any]
) -> None:
    row = await sent_row(engine, "wamid.A")
    body = envelope(example_status(wamid="wamid.A"))
    answers = await asyncio.gather(*(post(client, engine, body) for _ in range(10)))
    assert answers == [200] * 10
    assert await scalar(engine, "SELECT count(*) FROM outbox_statuses") == 1
    assert (
        await scalar(engine, "SELECT count(*) FROM outbox_events WHERE message_id = :id", id=row)
        == 1
    )


async def test_two_transactions_storing_one_status_at_once_store_it_once(
    engine: AsyncEngine,
) -> None:
    """The second waits for the first to commit, then finds the status stored: a replay."""
    entry = {
        "wamid": "wamid.A",
        "installation": None,
        "row_id": None,
        "part": None,
        "status": "delivered",
        "at": datetime.now(UTC),
        "code": None,
        "title": None,
        "recipient": CUSTOMER,
    }
    async with engine.connect() as first, engine.connect() as second:
        await first.begin()
        await second.begin()
        stored = await store.store_contents(
            first, await store.insert_webhook(first, b"{}"), [entry], []
        )
        body = await store.insert_webhook(second, b"{}")
        replay = asyncio.create_task(store.store_contents(second, body, [entry], []))
        await asyncio.sleep(0.5)  # the replay reaches the insert while the first is uncommitted
        await first.commit()
        assert await replay == []
        await second.commit()
    assert len(stored) == 1
    assert await scalar(engine, "SELECT count(*) FROM outbox_statuses") == 1


@pytest.mark.parametrize(
    ("order", "ends"),
    [(("failed", "delivered"), "failed"), (("delivered", "failed"), "delivered")],
)
async def test_statuses_applied_together_count_in_their_arrival_order(
    engine: AsyncEngine, client: TestClient[Any, Any], order: tuple[str, str], ends: str
) -> None:
    """A `delivered` after `failed` (another device) leaves the row failed; a `failed` after
    `delivered` changes nothing: the same when both come in one body (one batch) as apart."""
    row = await sent_row(engine, "wamid.A")
    entries = [
        example_status("status_webhook_failed_130472.json", wamid="wamid.A")
        if kind == "failed"
        else example_status(wamid="wamid.A")
        for kind in order
    ]
    assert await post(client, engine, envelope(*entries)) == 200
    assert (await status(engine, row)).status == ends
    async with engine.connect() as conn:
        history = await outbox.status.get_history(conn, row)
    statuses = [event.kind for event in history if event.kind.startswith("status:")]
    assert statuses == [f"status:{kind}" for kind in order]


@pytest.mark.parametrize("kind", ["played", "deleted", "warning"])
async def test_statuses_that_move_no_row_land_in_its_history(
    engine: AsyncEngine, client: TestClient[Any, Any], kind: str
) -> None:
    row = await sent_row(engine, "wamid.A")
    entry = example_status(wamid="wamid.A", status=kind)
    if kind == "warning":
        entry["errors"] = [{"code": 131059, "title": "Item unavailable"}]
    assert await post(client, engine, envelope(entry)) == 200
    async with engine.connect() as conn:
        history = await outbox.status.get_history(conn, row)
    assert [event.kind for event in history if event.part == 0] == ["accepted", f"status:{kind}"]
    assert (await status(engine, row)).status == "sent"


async def test_a_warning_keeps_its_error_in_the_history(
    engine: AsyncEngine, client: TestClient[Any, Any]
) -> None:
    row = await sent_row(engine, "wamid.A")
    entry = example_status(wamid="wamid.A", status="warning")
    entry["errors"] = [{"code": 131059, "title": "Item unavailable"}]
    assert await post(client, engine, envelope(entry)) == 200
    async with engine.connect() as conn:
        history = await outbox.status.get_history(conn, row)
    [event] = [event for event in history if event.kind == "status:warning"]
    assert (event.error_code, event.detail) == (131059, "Item unavailable")


async def test_value_level_errors_are_stored_with_their_number(
    engine: AsyncEngine, client: TestClient[Any, Any]
) -> None:
    data = json.loads(envelope())
    value = data["entry"][0]["changes"][0]["value"]
    value.pop("statuses")
    value["errors"] = [
        {
            "code": 130429,
            "title": "Rate limit hit",
            "error_data": {"details": "Cloud API message throughput has been reached."},
        }
    ]
    assert await post(client, engine, json.dumps(data).encode()) == 200
    async with engine.connect() as conn:
        stored = (
            (await conn.execute(sa.text("SELECT * FROM outbox_webhook_errors"))).mappings().one()
        )
    assert (stored["code"], stored["title"], stored["detail"]) == (
        130429,
        "Rate limit hit",
        "Cloud API message throughput has been reached.",
    )
    assert stored["phone_number_id"] == value["metadata"]["phone_number_id"]
    metrics = await (await client.get("/metrics")).text()
    assert 'outbox_webhook_reported_errors_total{code="130429"} 1.0' in metrics


async def test_inbound_messages_keep_their_error_and_users_without_a_number(
    engine: AsyncEngine, client: TestClient[Any, Any]
) -> None:
    messages = [
        {
            "from": CUSTOMER,
            "id": "wamid.UNSUPPORTED",
            "timestamp": "1698266945",
            "type": "unsupported",
            "errors": [{"code": 131051, "title": "Message type unknown"}],
        },
        {"from_user_id": "US.1349120865", "id": "wamid.BY-USERNAME", "type": "text"},
    ]
    assert await post(client, engine, envelope(messages=messages)) == 200
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                sa.text(
                    "SELECT wamid, customer, user_id, error_code FROM outbox_inbound ORDER BY wamid"
                )
            )
        ).all()
    assert [tuple(r) for r in rows] == [
        ("wamid.BY-USERNAME", None, "US.1349120865", None),
        ("wamid.UNSUPPORTED", CUSTOMER, None, 131051),
    ]


# --- a failed part stops its row -------------------------------------------------------------


async def test_a_row_whose_accepted_part_fails_while_it_waits_for_a_retry_sends_nothing_more(
    engine: AsyncEngine,
    settings: outbox.Settings,
    simulator: Simulator,
    client: TestClient[Any, Any],
    installation: str,
) -> None:
    script(simulator, CUSTOMER, "ok", {"error": 131000, "times": 10})
    row = await enqueue(
        engine, CUSTOMER, "caption", media_urls={"images": ["https://x.test/a.jpg"]}
    )
    daemon = outbox.Daemon(replace(settings, retry_delay=600))
    task = asyncio.create_task(daemon.run())
    try:

        async def waiting_for_a_retry() -> bool:
            delivery = await status(engine, row)
            return delivery.status == "pending" and delivery.part_ids[0] is not None

        await eventually(waiting_for_a_retry)
        image = simulator.accepted[0]["wamid"]
        failed = example_status(
            "status_webhook_failed_130472.json",
            wamid=image,
            callback=callback_data(installation, row, 0),
        )
        assert await post(client, engine, envelope(failed)) == 200
    finally:
        daemon.stop()
        await task
    delivery = await status(engine, row)
    assert (delivery.status, delivery.error_code) == ("failed", 130472)
    async with engine.begin() as conn:  # the retry falls due: nothing is claimed or sent
        await conn.execute(sa.text("UPDATE outbox_messages SET available_at = now()"))
    assert await drain(settings) == 0
    assert sent(simulator) == [f"outbox:{row}:0"]
    assert (await status(engine, row)).status == "failed"


# --- waiting statuses cost one look each -------------------------------------------------------


async def test_a_status_for_a_wamid_never_recorded_gets_one_second_look_only(
    engine: AsyncEngine, database_url: str
) -> None:
    """Another integration's messages on the number: their statuses wait for a part that never
    comes, and must not be rescanned round after round."""
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO outbox_statuses (wamid, status, at, received_at) "
                "SELECT 'wamid.elsewhere-' || n, 'delivered', now(), now() - interval '5 seconds' "
                "FROM generate_series(1, 1200) n"
            )
        )
    pool = Pool(asyncpg_dsn(database_url), size=1)
    try:
        applier = Applier(pool)
        looks = 0
        while await applier._recheck_statuses():
            looks += 1
        assert not await applier._recheck_statuses()
    finally:
        await pool.close(5)
    assert looks == 2  # 1,200 statuses: two full batches of 500, then the rest
    waiting = await scalar(engine, "SELECT count(*) FROM outbox_statuses WHERE applied_at IS NULL")
    assert waiting == 1200  # they stay, waiting for a part, until pruned after 7 days


async def test_the_old_form_is_not_trusted_for_rows_created_long_after_the_upgrade(
    engine: AsyncEngine,
    settings: outbox.Settings,
    simulator: Simulator,
    client: TestClient[Any, Any],
) -> None:
    """Only daemons of the previous version, during a rolling upgrade, still send the old form:
    a day after it, a status in that form is another deployment's, even about our customer."""
    async with engine.begin() as conn:
        await conn.execute(
            sa.text("UPDATE outbox_installation SET created_at = now() - interval '2 days'")
        )
    row = await enqueue(engine, CUSTOMER, "your booking")
    assert await post(client, engine, delivered("wamid.OTHER", f"outbox:{row}:0")) == 200
    assert await drain(in_doubt_once(settings, simulator)) == 0
    await assert_not_settled_by(engine, simulator, row)


async def test_a_status_for_a_row_recorded_before_part_wamids_existed_finds_its_last_part(
    engine: AsyncEngine, client: TestClient[Any, Any]
) -> None:
    """A part recorded by a daemon of the previous version (no outbox_part_wamids entry) is
    still found by the row's message_id."""
    row = await sent_row(engine, "wamid.IMG", "wamid.TEXT", media=1)
    async with engine.begin() as conn:
        await conn.execute(sa.text("DELETE FROM outbox_part_wamids"))
    assert await post(client, engine, envelope(example_status(wamid="wamid.TEXT"))) == 200
    delivery = await status(engine, row)
    assert [part.status for part in delivery.parts] == ["sent", "delivered"]


# --- statuses that waited are never lost ------------------------------------------------------


async def record_with_the_daemons_statement(
    engine: AsyncEngine, row: int, wamid: str, *, index: int = 0, final: bool = True
) -> Any:
    """RECORD_PARTS for part `index` (by default 0, the last) of a row claimed by claimed_row, as
    the daemon runs it."""
    token = await scalar(engine, "SELECT lease_token FROM outbox_messages WHERE id = :id", id=row)
    async with engine.begin() as conn:
        result = await conn.execute(
            store.RECORD_PARTS,
            {
                "ids": [row],
                "tokens": [token],
                "indexes": [index],
                "wamids": [wamid],
                "finals": [final],
                "lease": 30,
                "pair_interval": 6.0,
                "default_sender": "",
            },
        )
        return result.mappings().one()


async def test_statuses_that_waited_are_applied_by_the_sweep_when_the_daemon_stops_first(
    engine: AsyncEngine, client: TestClient[Any, Any], installation: str
) -> None:
    """The daemon records the part and stops before applying what waited for it (a SIGTERM, a
    crash): the row is marked, and the receiver's background sweep applies it."""
    row = await claimed_row(engine)
    ours = callback_data(installation, row, 0)
    assert await post(client, engine, delivered("wamid.MINE", ours)) == 200
    assert (await status(engine, row)).status == "sending"
    async with engine.begin() as conn:  # long ago: its one second look is over
        await conn.execute(
            sa.text("UPDATE outbox_statuses SET received_at = now() - interval '1 hour'")
        )
    recorded = await record_with_the_daemons_statement(engine, row, "wamid.MINE")
    assert recorded["statuses_waiting"]

    async def delivered_by_the_sweep() -> bool:
        return (await status(engine, row)).status == "delivered"

    await eventually(delivered_by_the_sweep)
    marked = await scalar(
        engine, "SELECT statuses_waiting FROM outbox_messages WHERE id = :id", id=row
    )
    assert marked is False


async def test_only_the_parts_before_the_last_get_an_entry_of_their_own(
    engine: AsyncEngine,
) -> None:
    """The row's message_id holds its last part's wamid, and its index finds it: the record
    writes outbox_part_wamids entries for the earlier parts only, one write fewer a row."""
    row = await claimed_row(engine, media=1)
    await record_with_the_daemons_statement(engine, row, "wamid.IMG", index=0, final=False)
    await record_with_the_daemons_statement(engine, row, "wamid.TEXT", index=1, final=True)
    entries = await scalar(
        engine,
        "SELECT array_agg(wamid ORDER BY part) FROM outbox_part_wamids WHERE message_id = :id",
        id=row,
    )
    assert entries == ["wamid.IMG"]
    assert await scalar(
        engine, "SELECT message_id FROM outbox_messages WHERE id = :id", id=row
    ) == ("wamid.TEXT")


async def test_a_status_without_callback_data_that_waited_for_a_last_part_is_applied_after_it(
    engine: AsyncEngine, client: TestClient[Any, Any]
) -> None:
    """A status naming only the wamid (no callback data) came before its part, the row's last,
    was recorded: the record sees it waiting, and what the daemon applies next (apply_marked)
    finds it by the row's message_id."""
    row = await claimed_row(engine)
    assert await post(client, engine, envelope(example_status(wamid="wamid.MINE"))) == 200
    recorded = await record_with_the_daemons_statement(engine, row, "wamid.MINE")
    assert recorded["statuses_waiting"]
    async with engine.begin() as conn:
        await store.apply_marked(conn, [row])
    assert (await status(engine, row)).status == "delivered"


async def test_a_part_recorded_while_its_status_is_being_stored_learns_of_it(
    engine: AsyncEngine, installation: str
) -> None:
    """The receiver's transaction stores and judges a status (waiting: no part yet) while the
    daemon records that part: the daemon's write waits for the row and then sees the mark."""
    row = await claimed_row(engine)
    entry = {
        "wamid": "wamid.MINE",
        "installation": installation,
        "row_id": row,
        "part": 0,
        "status": "delivered",
        "at": datetime.now(UTC),
        "code": None,
        "title": None,
        "recipient": CUSTOMER,
    }
    async with engine.connect() as receiver:
        await receiver.begin()
        body = await store.insert_webhook(receiver, b"{}")
        ids = await store.store_contents(receiver, body, [entry], [])
        [judged] = await store.apply_statuses(receiver, ids)
        assert judged["outcome"] == "waiting"
        recording = asyncio.create_task(
            record_with_the_daemons_statement(engine, row, "wamid.MINE")
        )
        await asyncio.sleep(0.5)  # the daemon's UPDATE now waits for the row's lock
        await receiver.commit()
    assert (await recording)["statuses_waiting"]


async def test_a_failed_status_stops_a_claimed_row_before_its_next_part(
    engine: AsyncEngine,
    settings: outbox.Settings,
    simulator: Simulator,
    client: TestClient[Any, Any],
    installation: str,
) -> None:
    """The image was accepted; the text waits its turn under pacing, within the same claim; the
    image's failed status arrives meanwhile: the text is not sent. (A quick retry takes the same
    check before its request.)"""
    row = await enqueue(
        engine, CUSTOMER, "caption", media_urls={"images": ["https://x.test/a.jpg"]}
    )
    # One send per 1.9 s to the customer: the text waits in process (up to 2 s), claimed.
    paced = replace(settings, pair_burst=1, pair_interval=1.9)
    daemon = outbox.Daemon(paced)
    task = asyncio.create_task(daemon.run())
    try:

        async def image_accepted() -> bool:
            return len(simulator.accepted) >= 1

        await eventually(image_accepted)
        failed = example_status(
            "status_webhook_failed_130472.json",
            wamid=simulator.accepted[0]["wamid"],
            callback=callback_data(installation, row, 0),
        )
        assert await post(client, engine, envelope(failed)) == 200

        async def row_failed() -> bool:
            return (await status(engine, row)).status == "failed"

        await eventually(row_failed)
        await asyncio.sleep(2.5)  # past the text's turn: were it sent, it would be by now
    finally:
        daemon.stop()
        await task
    assert sent(simulator) == [f"outbox:{row}:0"]
    assert (await status(engine, row)).status == "failed"


async def test_a_body_whose_row_another_transaction_holds_does_not_stall_later_bodies(
    engine: AsyncEngine, client: TestClient[Any, Any]
) -> None:
    held = await sent_row(engine, "wamid.HELD")
    others = [await sent_row(engine, f"wamid.{n}") for n in range(3)]
    async with engine.connect() as locker:
        await locker.begin()
        await locker.execute(
            sa.text("SELECT 1 FROM outbox_messages WHERE id = :id FOR UPDATE"), {"id": held}
        )
        body = envelope(example_status(wamid="wamid.HELD"))
        assert await post(client, engine, body, applied=False) == 200
        for n in range(3):
            assert await post(client, engine, envelope(example_status(wamid=f"wamid.{n}"))) == 200
        assert [(await status(engine, row)).status for row in others] == ["delivered"] * 3
        await locker.rollback()

    async def held_row_applied_once_free() -> bool:
        return (await status(engine, held)).status == "delivered"

    await eventually(held_row_applied_once_free, within=30)
