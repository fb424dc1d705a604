"""The claim: which rows to take now and the one statement that takes them, each with a lease
token every later write names. A daemon never claims a row it is still sending, and while a
sender is held, paused or down it claims nothing of it but a probe."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from outbox import store
from outbox.connections import Row, fetch_all
from outbox.delivery.health import State

if TYPE_CHECKING:
    from outbox.delivery.flight import InFlight
    from outbox.delivery.limiter import RateLimiter
    from outbox.delivery.record import PartRecorder
    from outbox.delivery.send import RowSender
    from outbox.delivery.senders import Senders
    from outbox.pool import Pool
    from outbox.settings import Settings

CLAIM_WINDOW = 4  # a claim looks at this many ready rows per row it may take
CLAIM_WHEN_FREE = 4  # while rows are in flight, claim once 1/4 of the in-flight limit is free
# After the database comes back, a daemon takes over no expired lease for this long: the owner
# of a lease that ran out during the outage has accepted parts to record first (its recorder
# retries at least every second), or it would send them again.
TAKEOVER_GRACE = 10.0


@dataclass(eq=False)
class Claim:
    """A row this daemon holds the lease of. `lease_until` and `deadline` are event-loop times:
    when the lease runs out unless extended, and when the row expires (None: never)."""

    id: int
    recipient: str
    message: str | None
    media: Any  # the media parts (or their JSON text, as claimed)
    accepted: int
    attempts: int
    in_doubt: int
    token: uuid.UUID
    lease_until: float
    template: Any = None  # Meta's template object (or its JSON text, as claimed)
    deadline: float | None = None
    probe: bool = False  # claimed while sending is stopped, to find out whether it works again
    taken_over: bool = False  # from an expired lease: its next part may have been sent already
    recipient_checked: bool = False  # enqueue() checked this recipient: no need to again
    lost: bool = False  # another worker holds the row now: send nothing more
    settling: bool = False  # every part sent; only the last one's recording is left
    # A request for its next part may have been accepted and is not recorded yet: a crash now
    # must leave the row to its lease (taken over, it waits for that part's webhook).
    unsettled: bool = False
    # Meta's rules would fail it, unless the request that may have sent its next part did: set by
    # the rules, for the send to look for that part's status webhook first.
    fail_unless_settled: str | None = None
    requests: int = 0  # requests made under this claim (a later one checks the row first)
    sender: str = ""  # the phone number id it goes from (the row's, else the default)
    # Seconds until its (sender, recipient) pair's pacing clock, as the last daemon to send that
    # conversation left it (None: no recent send).
    pair_due_in: float | None = None
    # Nothing of it sent yet and it has a fallback template: a 131047 gives it back, to go as
    # its fallback (outbox/policy/).
    fallback_on_131047: bool = False
    # Meta's rules' facts of the whole claim by row id (store.policy.ROWS_FACTS), being read
    # while its rows start; each row waits for them before it is ruled. None: it reads its own.
    facts_read: asyncio.Future[dict[int, Row]] | None = None
    # The part an earlier request may have sent (in doubt, or taken over): the next one when
    # claimed; None once it is recorded, or when no request is in question.
    doubtful_part: int | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.in_doubt > 0 or self.taken_over:
            self.doubtful_part = self.accepted


def leases(claims: list[Claim]) -> dict[str, list[Any]]:
    """The (row id, lease token) pairs of claims, as the array parameters store.py expects."""
    return {"ids": [c.id for c in claims], "tokens": [c.token for c in claims]}


class Claimer:
    """Claims rows up to the in-flight limit (rate x latency for the senders that can send) and
    starts each in flight; `takeover_after` is the loop time before which expired leases are
    left alone."""

    def __init__(
        self,
        settings: Settings,
        pool: Pool,
        senders: Senders,
        limiter: RateLimiter,
        in_flight: InFlight,
        recorder: PartRecorder,
        rows: RowSender,
        *,
        drain: bool,
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._senders = senders
        self._limiter = limiter
        self._in_flight = in_flight
        self._recorder = recorder
        self._rows = rows
        self._drain = drain
        self.takeover_after = 0.0

    def rounds(self) -> list[tuple[int, bool, str | None, list[str]]]:
        """The claims to make now, as (limit, probe, only this sender, senders left out): a
        probe of the token or of each stopped sender whose probe is due, then the rest."""
        operator = self._senders.operator  # an operator's pause: no claim, no probe
        if self._recorder.busy or operator.everything:
            return []
        free = self.in_flight_limit() - self._in_flight.sending()
        token = self._senders.token
        if not token.open:
            if self._in_flight.tasks or not token.probe_due():
                return []
            # one real send finds out whether the token works
            return [(1, True, None, operator.senders())]
        held = self._limiter.held()
        busy = self._in_flight.senders()
        rounds: list[tuple[int, bool, str | None, list[str]]] = []
        for sender, gate in self._senders.known().items():
            if free <= 0 or gate.open or sender in busy or sender in held:
                continue
            if operator.holds(sender):
                continue
            if self._drain and gate.state is State.PAUSED:
                continue  # a drain does not wait out an account error: it ends with exit 3
            if gate.probe_due():
                rounds.append((1, True, sender, []))
                free -= 1
        if free > 0 and self.worth_claiming(free):
            stopped = sorted(set(self._senders.stopped()) | set(held) | set(operator.senders()))
            rounds.append((min(free, self._settings.batch_size), False, None, stopped))
        return rounds

    def worth_claiming(self, free: int) -> bool:
        """Claim in batches: while rows are in flight, wait until a quarter of the in-flight
        limit (or of a batch) is free, so that each claim's round trip serves many rows."""
        if not self._in_flight.tasks:
            return True
        limit = min(self.in_flight_limit(), self._settings.batch_size)
        return free >= max(1, limit // CLAIM_WHEN_FREE)

    def takeover_grace(self) -> float:
        """How long after a lease expired another daemon may take its row: its owner may be
        alive but cut off from the database for a moment, holding an accepted wamid to record.
        The lease itself, at most TAKEOVER_GRACE: a crashed daemon's rows come back that late."""
        return min(TAKEOVER_GRACE, self._settings.lease_seconds)

    def in_flight_limit(self) -> int:
        """Rows to hold in flight now: rate x latency for the senders that can send."""
        sending = sum(1 for gate in self._senders.known().values() if gate.open)
        return self._rows.pace.rows(max(1, sending))

    async def claim_some(self) -> int:
        """Claim and start rows; how many, plus the rows it found queued (then there may be
        more to claim right now)."""
        progress = 0
        for limit, probe, only, stopped in self.rounds():
            if probe:  # a row that never failed says best whether sending works again
                before = len(self._in_flight.claims)
                progress += await self._claim(limit, probe, only, stopped, fresh=True)
                if len(self._in_flight.claims) > before:
                    continue
            progress += await self._claim(limit, probe, only, stopped)
        return progress

    async def _claim(
        self, limit: int, probe: bool, only: str | None, stopped: list[str], fresh: bool = False
    ) -> int:
        token = uuid.uuid4()
        # Before the statement: the lease runs from the database's transaction start, so a slow
        # claim must not make this daemon believe it holds more lease than it does.
        loop = asyncio.get_running_loop()
        now = loop.time()
        async with self._pool.connect() as conn:  # one statement: its own transaction
            rows = await fetch_all(
                conn,
                store.CLAIM_BATCH,
                {
                    "limit": limit,
                    "window": CLAIM_WINDOW * limit,
                    "token": token,
                    "lease": self._settings.lease_seconds,
                    "mine": list(self._in_flight.claims),
                    "tokens": self._in_flight.tokens(),
                    "max_age": self._settings.max_age,
                    "default_sender": self._senders.default,
                    "stopped": stopped,
                    "only": only,
                    "fresh": fresh,
                    "grace": self.takeover_grace(),
                    "takeover": loop.time() >= self.takeover_after,
                },
            )
        marked = int(rows[0]["marked"]) if rows else 0
        claims: list[Claim] = []
        for row in rows:
            if row["id"] is None:
                continue  # nothing claimed; `marked` says whether rows were queued meanwhile
            expires_in = row["expires_in"]
            claim = Claim(
                id=row["id"],
                recipient=row["recipient"],
                message=row["message"],
                media=row["media"],  # JSON text: parsed by the row's own task, which can fail it
                template=row["template"],
                accepted=row["accepted"],
                attempts=row["attempts"],
                in_doubt=row["in_doubt"],
                token=token,
                probe=probe,
                taken_over=row["taken_over"],
                recipient_checked=row["recipient_checked"],
                sender=row["sender"] or self._senders.default,
                pair_due_in=None if row["pair_due_in"] is None else float(row["pair_due_in"]),
                lease_until=now + self._settings.lease_seconds,
                deadline=None if expires_in is None else now + float(expires_in),
            )
            claims.append(claim)
        if claims:
            # One statement for all, read while the rows start (each waits for it before it is
            # ruled) and the next claim is made: its round trip holds up neither.
            facts = asyncio.ensure_future(self._rows.prepare(claims))
            for claim in claims:
                claim.facts_read = facts
        for claim in claims:  # claimed: in flight whatever happens next (a stop)
            self._in_flight.start(claim, self._rows)
        return len(claims) + marked
