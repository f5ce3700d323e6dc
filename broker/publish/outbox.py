"""The transactional outbox: VOEvents committed with their deliveries, then sent.

A VOEvent row (its IVORN unique, its bytes final), its provenance document and
one ``deliveries`` row per target are inserted in one transaction: either all
of it is in the archive, or none.  Sender loops then take due deliveries,
send the stored bytes, and mark them sent or schedule a retry with back-off.

Exactly once, as a subscriber sees it:

* an IVORN is inserted once (``ON CONFLICT DO NOTHING``): a second attempt to
  publish it, under any circumstances, queues nothing;
* a redelivery sends the same stored bytes, so a subscriber that dedups on the
  IVORN or on the bytes (Comet does the latter) sees one event;
* a delivery is marked sent only after the target acknowledged it; a crash
  between the two sends the same bytes again, which the two rules above make
  harmless.  A sender marks the sends of one batch together (one transaction,
  each with the time of its acknowledgement), so a crash repeats at most that
  batch (:func:`claim_due`'s ``limit``, 50).

Nothing hidden leaves the broker.  Each VOEvent is queued with the data rights
of what it shows (a trigger's own; every member's for a coincidence), and a
delivery to a public target whose subject the anonymous viewer may not see yet
(the rule of :meth:`broker.archive.query.Viewer.may_see`, the one the query API applies)
is ``held``: ``held_until`` is the moment that viewer may see it (the latest
embargo end among its hidden parts), or None when it never may (a proprietary
part).  :func:`claim_due` first releases held deliveries of its target whose
``held_until`` has passed (``released_at`` records when), so the delivery loop
that polls every half second sends them within a second of the embargo's end,
with no restart and no human.  Private targets (``private`` in :func:`queue`)
are never held.  A revision released no later than a held earlier revision of
the same event withdraws it (``withdrawn``, never sent), and a retraction none
of whose earlier revisions was ever released to a target is withdrawn there too,
with them: it publishes nothing.

Several sender processes may share the outbox (``mmbroker stage publish`` run
more than once): a claim takes due rows with ``FOR UPDATE SKIP LOCKED`` on
PostgreSQL (SQLite's writers take turns) and, in the same transaction, leases
them for :data:`LEASE_S` by moving their next attempt forward, so no other
sender picks them while this one sends.  A sender that dies mid-batch leaves
the lease to run out, and another sends the same bytes again.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, select, update

from broker.archive.db import insert_ignoring_conflicts, transaction
from broker.archive.models import Delivery, ProvenanceDoc, VOEventCitation, VOEventRow
from broker.archive.query import ANONYMOUS
from broker.archive.store import Archive, utcnow
from broker.metrics import OUTBOX_PENDING, PUBLISH_SECONDS
from broker.publish.voevent_build import citations_of

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 60.0
LEASE_S = 60.0
"""How long (s) a claimed delivery is another sender's to leave alone: far above the
time a batch of sends takes (Comet acknowledges in 10-50 ms here)."""


MAX_CHAIN = 1000
"""Most earlier revisions followed back from one VOEvent (a cycle cannot loop forever)."""

# Statements of every publishing round and every send, built once: building one cost
# about 0.25 ms, more than running it on SQLite (issue 17, item 1).
_ANY_HELD = select(Delivery.id).where(Delivery.state == "held").limit(1)
_MARK_SENT = update(Delivery.__table__).where(Delivery.__table__.c.id == bindparam("delivery")
                                              ).values(
    state="sent", delivered_at=bindparam("at"), attempts=Delivery.__table__.c.attempts + 1,
    last_error=None)

Rights = tuple[tuple[str, datetime | None], ...]
"""Data rights of what a VOEvent shows: (level, embargo end UTC) per alert in it."""


@dataclass(frozen=True)
class Outgoing:
    """A VOEvent ready to queue: its IVORN, bytes, what it came from, and the data rights
    of every alert it shows (none: public)."""

    ivorn: str
    xml: bytes
    role: str
    provenance: dict[str, Any]  # PROV-JSON
    alert_id: int | None = None
    coincidence_id: int | None = None
    rights: Rights = ()
    # (IVORN, cite) of the VOEvent's Citations, from its builder; None: read from ``xml``.
    citations: tuple[tuple[str, str], ...] | None = None


def hold(rights: Rights, now: datetime) -> tuple[bool, datetime | None]:
    """Whether a VOEvent showing alerts of these ``rights`` is held from public targets at
    ``now``, and until when (None: for ever).

    The anonymous viewer's rule (:meth:`broker.archive.query.Viewer.may_see`) decides: held when it
    may not see every part now; released at the latest embargo end of the hidden parts if
    it may see every part then, never otherwise (a proprietary part).
    """
    if all(ANONYMOUS.may_see(level, until, now) for level, until in rights):
        return False, None
    ends = [until for level, until in rights
            if until is not None and not ANONYMOUS.may_see(level, until, now)]
    at = max(ends) if ends else None
    if at is not None and all(ANONYMOUS.may_see(level, until, at) for level, until in rights):
        return True, at
    return True, None


@dataclass(frozen=True)
class Due:
    """One delivery to attempt."""

    delivery_id: int
    voevent_id: int
    ivorn: str
    target: str
    xml: bytes
    attempts: int
    created_at: datetime | None = None


def backoff_s(attempts: int, max_backoff_s: float = MAX_BACKOFF_S) -> float:
    """Seconds to wait before attempt ``attempts + 1``: 1, 2, 4, ... up to ``max_backoff_s``."""
    return min(max_backoff_s, 2.0 ** max(0, attempts - 1))


def queue(archive: Archive, items: Sequence[Outgoing], targets: Sequence[str],
          deliveries: list[Due] | None = None, *, private: Sequence[str] = ()) -> list[bool]:
    """Insert VOEvents, provenance and deliveries in one transaction; True where new, in order.

    An IVORN already in the archive is not queued again (False): exactly-once
    starts here.  ``deliveries``, when given, receives the deliveries due now
    (for a hand-off to the senders once the transaction has committed); held
    and withdrawn ones are not handed off.  Deliveries to ``private`` targets
    (a collaboration's own) are never held.
    """
    if not items:
        return []
    now = utcnow()
    ordered = sorted(items, key=lambda i: i.ivorn)  # rows locked in one order by every writer
    queued: list[Due] = []
    with transaction(archive.engine) as conn:
        # A fixed four statements per round, however many VOEvents it holds.
        inserted = {ivorn: row_id for row_id, ivorn in insert_ignoring_conflicts(
            conn, VOEventRow.__table__, [{
                "ivorn": item.ivorn, "xml": item.xml,
                "sha256": hashlib.sha256(item.xml).hexdigest(), "role": item.role,
                "alert_id": item.alert_id, "coincidence_id": item.coincidence_id,
                "created_at": now} for item in ordered], returning=("id", "ivorn"))}
        new = [False] * len(items)
        stored: dict[int, Outgoing] = {}  # by VOEvent row id, in IVORN order
        for i in sorted(range(len(items)), key=lambda i: items[i].ivorn):
            voevent_id = inserted.pop(items[i].ivorn, None)  # popped: a repeat is not new
            if voevent_id is not None:
                new[i] = True
                stored[voevent_id] = items[i]
        insert_ignoring_conflicts(conn, ProvenanceDoc.__table__, [{
            "subject_ivorn": item.ivorn, "voevent_id": voevent_id,
            "document": item.provenance, "created_at": now}
            for voevent_id, item in stored.items()])
        cited = {voevent_id: list(item.citations) if item.citations is not None
                 else citations_of(item.xml) for voevent_id, item in stored.items()}
        insert_ignoring_conflicts(conn, VOEventCitation.__table__, [
            {"voevent_id": voevent_id, "cited_ivorn": ivorn, "cite": cite}
            for voevent_id in stored for ivorn, cite in cited[voevent_id]])
        if targets and stored:
            holds = {voevent_id: hold(item.rights, now) for voevent_id, item in stored.items()}
            rows = insert_ignoring_conflicts(conn, Delivery.__table__, [
                {"voevent_id": voevent_id, "target": target,
                 "state": "held" if held else "pending", "attempts": 0,
                 "next_attempt_at": now, "held_until": until if held else None}
                for voevent_id in stored for target in sorted(targets)
                for held, until in [(False, None) if target in private
                                    else holds[voevent_id]]],
                returning=("id", "voevent_id", "target"))
            by_item = {id(item): voevent_id for voevent_id, item in stored.items()}
            withdrawn = _settle_revisions(
                conn, [(by_item[id(item)], cited[by_item[id(item)]])
                       for item in items if id(item) in by_item], now)
            due = {delivery_id for delivery_id, voevent_id, target in rows
                   if (target in private or not holds[voevent_id][0])
                   and delivery_id not in withdrawn}
            queued = sorted((Due(delivery_id, voevent_id, stored[voevent_id].ivorn, target,
                                 stored[voevent_id].xml, 0, now)
                             for delivery_id, voevent_id, target in rows if delivery_id in due),
                            key=lambda d: (d.ivorn, d.target))
    if deliveries is not None:
        deliveries.extend(queued)  # only now: the transaction has committed
    return new


def _earlier_revisions(conn: Any, ivorns: set[str]) -> list[int]:
    """VOEvent row ids of ``ivorns`` and of every revision they supersede or retract, back
    to the first (followed through ``voevent_citations``)."""
    v, c = VOEventRow.__table__, VOEventCitation.__table__
    found: list[int] = []
    seen: set[str] = set()
    for _ in range(MAX_CHAIN):
        ivorns -= seen
        if not ivorns:
            break
        seen |= ivorns
        ids = list(conn.execute(select(v.c.id).where(v.c.ivorn.in_(sorted(ivorns)))).scalars())
        if not ids:
            break
        found += ids
        ivorns = set(conn.execute(select(c.c.cited_ivorn).where(
            c.c.voevent_id.in_(ids), c.c.cite.in_(("supersedes", "retraction")))).scalars())
    return found


def _withdraw(conn: Any, delivery_ids: list[int], why: str,
              states: tuple[str, ...] = ("held",)) -> set[int]:
    """Withdraw those of ``delivery_ids`` in ``states``; the ids asked for."""
    if delivery_ids:
        d = Delivery.__table__
        conn.execute(update(d).where(d.c.id.in_(delivery_ids), d.c.state.in_(states))
                     .values(state="withdrawn", last_error=why))
    return set(delivery_ids)


def _settle_revisions(conn: Any, new: list[tuple[int, list[tuple[str, str]]]],
                      now: datetime) -> set[int]:
    """Withdraw what must never go out now that these VOEvents (row id, citations) are
    queued (in order); the ids of the deliveries withdrawn (or asked to be).

    Per target: a retraction none of whose earlier revisions was released there is
    withdrawn with them (subscribers never saw the event: nothing to retract); held
    earlier revisions of a retraction are withdrawn; and a held earlier revision that this
    one would overtake (released no later) is withdrawn, so no subscriber gets an old
    revision after a newer one.
    """
    d = Delivery.__table__
    # Revisions matter only for retractions or when something is held: the common
    # round (nothing held, no retraction) costs one indexed look.
    anything_held = conn.execute(_ANY_HELD).first() is not None
    withdrawn: set[int] = set()
    for voevent_id, cites in new:
        earlier = {ivorn for ivorn, cite in cites if cite in ("supersedes", "retraction")}
        retraction = any(cite == "retraction" for _, cite in cites)
        if not earlier or not (retraction or anything_held):
            continue
        chain = _earlier_revisions(conn, earlier)
        if not chain:
            continue
        before = conn.execute(select(d.c.id, d.c.target, d.c.state, d.c.held_until).where(
            d.c.voevent_id.in_(chain))).all()
        for mine in conn.execute(select(d.c.id, d.c.target, d.c.state, d.c.held_until).where(
                d.c.voevent_id == voevent_id)).all():
            there = [r for r in before if r.target == mine.target]
            held = [r.id for r in there if r.state == "held"]
            if retraction:
                if there and all(r.state in ("held", "withdrawn") for r in there):
                    # Its own delivery was inserted pending (its rights are public) in this
                    # transaction: nothing has sent it yet.
                    withdrawn |= _withdraw(conn, [mine.id, *held],
                                           "retracted before release",
                                           ("held", "pending"))
                else:
                    withdrawn |= _withdraw(conn, held, "retracted before release")
                continue
            out_at = now if mine.state == "pending" else mine.held_until
            if out_at is not None:
                withdrawn |= _withdraw(conn, [r.id for r in there if r.state == "held" and (
                    r.held_until is None or r.held_until >= out_at)],
                    "superseded before release")
    return withdrawn


def release_held(archive: Archive, target: str, now: datetime | None = None) -> int:
    """Make held deliveries to ``target`` whose time has come pending (due now); how many.

    One indexed read of (state, held_until) when nothing is due, so a delivery loop
    can run it every poll.
    """
    now = now or utcnow()
    d = Delivery.__table__
    with transaction(archive.engine) as conn:
        ids = list(conn.execute(select(d.c.id).where(
            d.c.state == "held", d.c.held_until <= now, d.c.target == target)).scalars())
        if not ids:
            return 0
        conn.execute(update(d).where(d.c.id.in_(ids), d.c.state == "held").values(
            state="pending", released_at=now, next_attempt_at=now))
    log.info("%s: released %d held VOEvent deliveries (embargo over)", target, len(ids))
    return len(ids)


def claim_due(archive: Archive, target: str, *, limit: int = 50,
              now: datetime | None = None, lease_s: float = LEASE_S) -> list[Due]:
    """Deliveries to ``target`` due now, oldest first, leased to the caller for
    ``lease_s`` seconds (see the module docstring)."""
    now = now or utcnow()
    release_held(archive, target, now)
    d, v = Delivery.__table__, VOEventRow.__table__
    pick = (select(d.c.id).where(d.c.target == target, d.c.state == "pending",
                                 d.c.next_attempt_at <= now)
            .order_by(d.c.next_attempt_at, d.c.id).limit(limit))
    with transaction(archive.engine) as conn:
        if conn.dialect.name == "postgresql":
            pick = pick.with_for_update(skip_locked=True)
        ids = list(conn.execute(pick).scalars())
        if not ids:
            return []
        conn.execute(update(d).where(d.c.id.in_(ids)).values(
            next_attempt_at=now + timedelta(seconds=lease_s)))
        rows = {row.id: row for row in conn.execute(
            # A held VOEvent's wait counts from its release: the publish latency metric
            # is the broker's, not the embargo's.
            select(d.c.id, d.c.voevent_id, v.c.ivorn, d.c.target, v.c.xml, d.c.attempts,
                   func.coalesce(d.c.released_at, v.c.created_at))
            .join(v, v.c.id == d.c.voevent_id).where(d.c.id.in_(ids)))}
    return [Due(*rows[i]) for i in ids]


def release(archive: Archive, delivery_ids: Sequence[int], at: datetime) -> None:
    """End the lease of claimed deliveries not attempted: due again at ``at``."""
    if delivery_ids:
        with transaction(archive.engine) as conn:
            _due_again(conn, delivery_ids, at)


def _due_again(conn: Any, delivery_ids: Sequence[int], at: datetime) -> None:
    d = Delivery.__table__
    conn.execute(update(d).where(d.c.id.in_(list(delivery_ids)), d.c.state == "pending")
                 .values(next_attempt_at=at))


def mark_sent(archive: Archive, sent: Sequence[tuple[Due, datetime]]) -> None:
    """Record deliveries as accepted by their target, each at the time it was (UTC), in one
    transaction; and how long each waited, as a metric.

    One transaction for a whole batch: on SQLite every write transaction queues for the
    one writer lock the ingest path also needs."""
    if not sent:
        return
    with transaction(archive.engine) as conn:
        conn.execute(_MARK_SENT, [{"delivery": due.delivery_id, "at": at} for due, at in sent])
    for due, at in sent:
        if due.created_at is not None:
            PUBLISH_SECONDS.labels(due.target).observe(
                max(0.0, (at - due.created_at).total_seconds()))


def resend_recent(archive: Archive, target: str, window_s: float,
                  before: datetime | None = None) -> list[int]:
    """Make deliveries to ``target`` marked sent since ``window_s`` seconds before ``before``
    (None: the newest one sent) pending again, ahead of what is waiting; their ids.

    No upper bound: an acknowledgement can be recorded a moment after the
    target was seen dead, and nothing else is sent before this runs.

    For a target that may have lost what it acknowledged (a Comet that died
    before its broadcast left it): the same stored bytes go again, which its
    subscribers drop if they had them.
    """
    d = Delivery.__table__
    with transaction(archive.engine) as conn:
        if before is None:
            before = conn.execute(select(func.max(d.c.delivered_at)).where(
                d.c.target == target, d.c.state == "sent")).scalar()
            if before is None:
                return []
        since = before - timedelta(seconds=window_s)
        ids = list(conn.execute(select(d.c.id).where(
            d.c.target == target, d.c.state == "sent", d.c.delivered_at >= since)
            .order_by(d.c.id)).scalars())
        if ids:
            # Due at the window's start: claimed before anything queued since, in order.
            conn.execute(update(d).where(d.c.id.in_(ids)).values(
                state="pending", next_attempt_at=since))
    return ids


def pending_by_target(archive: Archive) -> dict[str, int]:
    """Deliveries waiting in the outbox, per target."""
    d = Delivery.__table__
    with transaction(archive.engine, readonly=True) as conn:
        return dict(conn.execute(select(d.c.target, func.count()).where(d.c.state == "pending")
                                 .group_by(d.c.target)).all())


def mark_failed_attempt(archive: Archive, delivery_id: int, attempts: int, error: str,
                        *, max_backoff_s: float = MAX_BACKOFF_S,
                        behind: Sequence[int] = ()) -> float:
    """Schedule the next attempt with back-off; returns the delay in seconds.

    ``behind``: deliveries of the same claim not attempted, due again at the same
    moment (their lease ended; their order after this one kept).
    """
    delay = backoff_s(attempts + 1, max_backoff_s)
    d = Delivery.__table__
    at = utcnow() + timedelta(seconds=delay)
    with transaction(archive.engine) as conn:
        conn.execute(update(d).where(d.c.id == delivery_id).values(
            attempts=attempts + 1, last_error=error[:2000], next_attempt_at=at))
        if behind:
            _due_again(conn, behind, at)
    return delay


def status(archive: Archive, *, limit: int = 100) -> list[dict[str, Any]]:
    """Per VOEvent (newest first): its IVORN and each target's delivery state."""
    d, v = Delivery.__table__, VOEventRow.__table__
    with transaction(archive.engine, readonly=True) as conn:
        ids = [r.id for r in conn.execute(select(v.c.id).order_by(v.c.id.desc()).limit(limit))]
        rows = conn.execute(
            select(v.c.id, v.c.ivorn, v.c.created_at, d.c.target, d.c.state, d.c.attempts,
                   d.c.last_error, d.c.delivered_at, d.c.held_until, d.c.released_at)
            .join(d, d.c.voevent_id == v.c.id, isouter=True)
            .where(v.c.id.in_(ids)).order_by(v.c.id.desc(), d.c.target)).all()
    out: dict[int, dict[str, Any]] = {}
    for r in rows:
        entry = out.setdefault(r.id, {"ivorn": r.ivorn, "created_at": r.created_at,
                                      "targets": {}})
        if r.target:
            entry["targets"][r.target] = {"state": r.state, "attempts": r.attempts,
                                          "last_error": r.last_error,
                                          "delivered_at": r.delivered_at,
                                          "held_until": r.held_until,
                                          "released_at": r.released_at}
    return list(out.values())


def export_pending(archive: Archive) -> None:
    """Set the ``mmbroker_outbox_pending`` gauge from the archive (when scraped); a
    metrics scrape must answer while the archive is down, so failures are logged only."""
    try:
        pending = pending_by_target(archive)
    except Exception:
        log.debug("outbox depth unavailable", exc_info=True)
        return
    OUTBOX_PENDING.clear()
    for target, n in pending.items():
        OUTBOX_PENDING.labels(target).set(n)


def pending_count(archive: Archive) -> int:
    """Deliveries not yet sent (the outbox depth)."""
    return sum(pending_by_target(archive).values())


def published(archive: Archive, ivorn: str) -> bool:
    """Whether this broker has already issued a VOEvent with ``ivorn``."""
    v = VOEventRow.__table__
    with transaction(archive.engine, readonly=True) as conn:
        return conn.execute(select(v.c.id).where(v.c.ivorn == ivorn)).first() is not None
