"""The demo's story: a holiday-lettings site writes its guests' WhatsApp messages into the outbox.

Six chapters, each real: transactions through the public API, the `outbox run` subprocess, the
simulator and the webhook receiver. Every figure printed is read from the rows or from the
simulator's record of what it was asked and what it accepted; nothing is written in advance.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

import outbox
from outbox.callbacks import parse_callback
from outbox.demo.stage import DAEMON_FLAGS, PHOTOS, Stage, book
from outbox.schema import STATUSES
from outbox.simulator import Step
from outbox.status import Delivery
from outbox.validation import normalize_recipient

SARA = "+1 650 555 1234"
OMAR = "+44 7700 900456"
LANDLINE = "+44 7700 900123"  # scripted: accepted, then failed by Meta's webhook (131026)
BUYER = "+92 300 1234567"  # scripted: the third request hangs, and the daemon is killed then
LENA = "+49 151 12345678"
NIAMH = "+353 85 123 4567"  # chapter 6: wrote 25 hours ago, then says stop
WE_MISS_YOU = outbox.Template("stay_follow_up", "en_US", ("Niamh",), category="utility")
GUESTS = (
    ("Ana", "+34 612 345 678"),
    ("Luca", "+39 312 345 6789"),
    ("Chloé", "+33 6 12 34 56 78"),
    ("Kenji", "+81 90 1234 5678"),
    ("Bia", "+55 11 91234 5678"),
    ("Jack", "+61 412 345 678"),
)
HANG_SECONDS = 6.0  # the hanging request outlives the kill; the daemon never hears back
OUTAGE_SECONDS = 2.0  # how long the API stays down once the daemon has noticed
LEASE = DAEMON_FLAGS[DAEMON_FLAGS.index("--lease-seconds") + 1]


class PaymentDeclined(Exception):
    """The business reason chapter 2's transaction rolls back."""


def chapter(number: int, title: str) -> None:
    print(f"\n{number}. {title}")


def say(text: str) -> None:
    print(f"   {text}", flush=True)


def _short(wamid: str | None) -> str:
    return "-" if not wamid else wamid[:22] + "…"


def _what(delivery: Delivery) -> str:
    if delivery.template is not None:
        return f"template {delivery.template.get('name')}"
    kinds = [part.type for part in delivery.parts]
    media = [kind for kind in kinds if kind != "text"]
    said = f"{len(media)} photos" if len(media) > 1 else "a photo" if media else ""
    return " then ".join(text for text in (said, "text" if "text" in kinds else "") if text)


def _line(delivery: Delivery) -> str:
    parts = len(delivery.parts)
    return (
        f"message {delivery.id:<3} {delivery.status:<7} {_what(delivery):<27} "
        f"{parts} part{'s' if parts > 1 else ' '}  {_short(delivery.message_id)}"
    )


async def booking_committed(stage: Stage) -> None:
    chapter(1, "A booking committed")
    async with AsyncSession(stage.engine) as session, session.begin():
        booking = await book(session, "Sara", SARA, "Lakeside Cabin", "12-14 Dec")
        confirmation = await outbox.enqueue(
            session,
            SARA,
            template=outbox.Template(
                "booking_confirmed",
                "en_US",
                ("Sara", "Lakeside Cabin", "12-14 Dec"),
                header_image=f"{PHOTOS}/lakeside-cabin.jpg",
            ),
            idempotency_key=f"demo:booking-{booking}:confirmed",
        )
        directions = await outbox.enqueue(
            session,
            SARA,
            "Check-in from 15:00. The key is in the lockbox by the blue door, code 4812.",
            media_urls={"images": [f"{PHOTOS}/lakeside-door.jpg"]},
            idempotency_key=f"demo:booking-{booking}:directions",
        )
    committed = time.monotonic()
    say(
        f"BEGIN; INSERT booking {booking} (Sara, Lakeside Cabin); "
        f"enqueue messages {confirmation} and {directions}; COMMIT"
    )
    done = await stage.settled([confirmation, directions], ["read"])
    for delivery in done:
        say(_line(delivery))
    say(
        f"sent, then delivered and read by Meta's status webhooks, "
        f"{time.monotonic() - committed:.1f} s after the COMMIT"
    )


async def booking_rolled_back(stage: Stage) -> None:
    chapter(2, "A booking rolled back")
    requests = stage.simulator.requests
    try:
        async with AsyncSession(stage.engine) as session, session.begin():
            booking = await book(session, "Omar", OMAR, "Harbour Loft", "20-22 Dec")
            message = await outbox.enqueue(
                session,
                OMAR,
                "Your stay at Harbour Loft is confirmed for 20-22 Dec.",
                idempotency_key=f"demo:booking-{booking}:confirmed",
            )
            raise PaymentDeclined
    except PaymentDeclined:
        pass
    say(
        f"BEGIN; INSERT booking {booking} (Omar, Harbour Loft); enqueue message {message}; "
        "card declined: ROLLBACK"
    )
    await asyncio.sleep(1.5)  # three of the daemon's polls; a rollback sends no NOTIFY anyway
    async with stage.engine.connect() as conn:
        bookings = await conn.scalar(
            sa.text("SELECT count(*) FROM outbox_demo.bookings WHERE id = :id"), {"id": booking}
        )
        rows = await conn.scalar(
            sa.text("SELECT count(*) FROM outbox_messages WHERE id = :id"), {"id": message}
        )
    asked = stage.simulator.requests - requests
    say(
        f"1.5 s later: {_no(bookings, f'booking {booking}')}, {_no(rows, f'message {message}')}, "
        f"{_no(asked, 'request to the API')}"
    )


def _no(count: int | None, thing: str) -> str:
    return f"no {thing}" if not count else f"{count} of {thing}"


async def not_on_whatsapp(stage: Stage) -> None:
    chapter(3, "A number not on WhatsApp")
    stage.simulator.scenario[normalize_recipient(LANDLINE)] = deque(
        [Step.parse({"accept": True, "then": "failed", "error": 131026})]
    )
    message = await stage.commit(
        LANDLINE, "Your stay at the Old Mill is confirmed for 3-5 Jan.", "booking-old-mill"
    )
    say(f"committed message {message} to {LANDLINE}, a landline")
    (delivery,) = await stage.settled([message], ["failed"])
    say(f"the API accepted it ({_short(delivery.message_id)}), then Meta's status webhook said:")
    say(f"message {delivery.id:<3} {delivery.status}  {delivery.last_error}")


async def api_outage(stage: Stage) -> None:
    chapter(4, "An API outage")
    simulator = stage.simulator
    requests = simulator.requests
    simulator.fail_rate = 1.0  # every request: HTTP 500, Graph error 131000
    say("the API goes down: every request is answered HTTP 500 (#131000)")
    ids = [
        await stage.commit(phone, f"Hi {name}, check-in opens at 15:00 today.", f"reminder-{name}")
        for name, phone in GUESTS
    ]
    say(f"{len(ids)} check-in reminders committed, messages {ids[0]}-{ids[-1]}")

    async def in_outage() -> bool:
        return (await stage.daemon_state())[0] == "outage"

    await stage.until(in_outage, within=30, what="the daemon's outage")
    _, reason = await stage.daemon_state()
    say(f'the daemon declares an outage ("{reason}"):')
    say("it holds all sending, and probes with one message now and then")
    await asyncio.sleep(OUTAGE_SECONDS)
    statuses = Counter(d.status for d in await stage.deliveries(ids))
    waiting = statuses["pending"] + statuses["sending"]
    say(
        f"{OUTAGE_SECONDS:.0f} s later: {_all(waiting, len(ids))} wait, "
        f"{_none(statuses['failed'])} failed; the API has refused "
        f"{simulator.requests - requests} requests"
    )
    simulator.fail_rate = 0.0
    back = time.monotonic()
    done = await stage.settled(ids, ["read", "failed"], within=60)
    read = sum(1 for d in done if d.status == "read")
    say(
        f"the API is back: the next probe goes through, and {_all(read, len(ids))} are read "
        f"{time.monotonic() - back:.1f} s later"
    )


def _all(count: int, total: int) -> str:
    return f"all {total}" if count == total else f"{count} of {total}"


def _none(count: int) -> str:
    return "none" if count == 0 else str(count)


async def daemon_killed(stage: Stage) -> int:
    chapter(5, "The daemon killed mid-send")
    simulator = stage.simulator
    stage.simulator.scenario[normalize_recipient(BUYER)] = deque(
        [Step("ok"), Step("ok"), Step.parse({"hang_ms": int(HANG_SECONDS * 1000)})]
    )
    requests = simulator.requests
    photos = ("canal-road-front.jpg", "canal-road-kitchen.jpg", "canal-road-garden.jpg")
    listing = await stage.commit(
        BUYER, "The 2-bed flat on Canal Road: viewing Saturday 11:00?", "listing-42", photos
    )
    say(f"message {listing} to {BUYER}: 3 photos of a flat, then a text (4 parts)")

    async def third_request() -> bool:
        return simulator.requests >= requests + 3

    await stage.until(third_request, within=30, what="the listing's third request")
    killed_at = time.time()
    pid = await stage.kill_daemon()
    (delivery,) = await stage.deliveries([listing])
    recorded = sum(1 for wamid in delivery.part_ids if wamid)
    say(f"SIGKILL to the daemon (pid {pid}) while part 3 is on its way:")
    say(f"message {listing} is left {delivery.status}, with {recorded} of 4 parts recorded")
    async with AsyncSession(stage.engine) as session, session.begin():
        booking = await book(session, "Lena", LENA, "Canal Road flat", "viewing Sat 11:00")
        late = await outbox.enqueue(
            session,
            LENA,
            "Your viewing of the Canal Road flat is booked: Saturday 11:00.",
            idempotency_key=f"demo:booking-{booking}:confirmed",
        )
    (waiting,) = await stage.deliveries([late])
    say(f"with no daemon running, booking {booking} commits: message {late} is {waiting.status}")
    new_pid = await stage.start_daemon()
    say(f"a new daemon (pid {new_pid}) sends message {late}, and takes message {listing} over")
    say(f"once the dead daemon's lease ({LEASE} s) has run out")
    done = await stage.settled([listing, late], ["read"], within=60)
    say(f"nothing lost: messages {listing} and {late} {_together(done)}")
    accepted, numbers = [], []
    for entry in simulator.accepted:
        callback = parse_callback(entry.get("callback"))
        if callback is not None and callback.row == listing:
            accepted.append(entry)
            numbers.append(callback.part + 1)
    before = [n for a, n in zip(accepted, numbers, strict=True) if a["at"] < killed_at]
    after = [n for a, n in zip(accepted, numbers, strict=True) if a["at"] >= killed_at]
    twice = sorted(n for n, count in Counter(numbers).items() if count > 1)
    say(
        f"nothing repeated: the API accepted parts {_parts(before)} before the kill, "
        f"{_parts(after)} after, "
        + ("each once" if not twice else f"part {_parts(twice)} more than once")
    )
    return listing


def _together(deliveries: Sequence[Delivery]) -> str:
    statuses = {d.status for d in deliveries}
    return statuses.pop() if len(statuses) == 1 else ", ".join(d.status for d in deliveries)


def _parts(numbers: Sequence[int]) -> str:
    return ", ".join(map(str, numbers)) or "none"


async def metas_rules(stage: Stage) -> None:
    chapter(6, "Meta's rules: a closed window, then an opt-out")
    rules, notifier = stage.simulator.rules, stage.simulator.notifier
    assert notifier is not None
    guest = normalize_recipient(NIAMH)
    for name in (WE_MISS_YOU.name, "stay_receipt"):  # Meta knows its templates' categories
        rules.template_event({"name": name, "language": "en_US", "category": "UTILITY"})
    await notifier.deliver(rules.inbound({"from": guest, "text": "Thanks!", "ago_seconds": 90000}))
    await stage.until(lambda: stage.holds_any("outbox_inbound"), within=10, what="her message")
    say(f"{NIAMH} last wrote 25 h ago: her 24-hour window is closed")
    requests = stage.simulator.requests
    async with AsyncSession(stage.engine) as session, session.begin():
        follow_up = await outbox.enqueue(
            session, NIAMH, "How was your stay, Niamh?", fallback=WE_MISS_YOU
        )
    (delivery,) = await stage.settled([follow_up], ["read"])
    asked = stage.simulator.requests - requests
    say(
        f"message {follow_up}, free-form text, went as its fallback template "
        f"{WE_MISS_YOU.name}: {asked} request, {delivery.status}"
    )
    await notifier.deliver(rules.user_preference({"customer": guest, "value": "stop"}))
    await stage.until(lambda: stage.holds_any("outbox_optouts"), within=10, what="her stop")
    say("she stops marketing messages in WhatsApp: Meta's user_preferences webhook says so")
    requests = stage.simulator.requests
    async with AsyncSession(stage.engine) as session, session.begin():
        offer = await outbox.enqueue(
            session, NIAMH, template=outbox.Template("winter_offer", "en_US", category="marketing")
        )
        receipt = await outbox.enqueue(
            session,
            NIAMH,
            template=outbox.Template("stay_receipt", "en_US", ("Niamh",), category="utility"),
        )
    marketing, utility = await stage.settled([offer, receipt], ["failed", "read"])
    asked = stage.simulator.requests - requests
    say(f"message {offer:<3} {marketing.status}  {marketing.last_error}")
    say(f"message {receipt:<3} {utility.status}  (a utility template still goes)")
    say(f"{asked} request for the two: none for the marketing one")


async def totals(stage: Stage) -> None:
    print("\nIn all")
    async with stage.engine.connect() as conn:
        rows = await outbox.list_messages(conn, limit=10_000)
    statuses = Counter(d.status for d in rows)
    parts = sum(len(d.parts) for d in rows)
    accepted = Counter(str(a.get("callback")) for a in stage.simulator.accepted)
    repeated = sum(1 for count in accepted.values() if count > 1)
    notifier = stage.simulator.notifier
    say(
        f"{len(rows)} messages ({parts} parts) committed and 1 rolled back: "
        + ", ".join(f"{statuses[status]} {status}" for status in STATUSES if statuses[status])
    )
    say(
        f"the API got {stage.simulator.requests} requests and accepted "
        f"{sum(accepted.values())} parts, {_none(repeated)} of them twice"
    )
    say(f"the receiver took {notifier.posted if notifier else 0} status webhooks")


async def tell(stage: Stage) -> int:
    """The six chapters and the totals; the id of the message sent across the kill."""
    await booking_committed(stage)
    await booking_rolled_back(stage)
    await not_on_whatsapp(stage)
    await api_outage(stage)
    listing = await daemon_killed(stage)
    await metas_rules(stage)
    await totals(stage)
    return listing
