"""The dashboard's live feed: new alerts, coincidences, acknowledgements and stream health.

One :class:`LiveFeed` per app process looks for new rows in the archive every
``live_poll_s`` (one small indexed query per table, whatever the number of
browsers) and pushes them to every connected browser as server-sent events.
Reading the archive rather than the in-process bus means a browser sees what
every process wrote: a listener in another process, ``mmbroker ingest``, a
trigger POSTed to another API worker.

Every row event has an opaque id ``<epoch>-<sealed>`` (the epoch names this
process's feed; the sealed part is the feed's sequence number encrypted and
authenticated with a key of this process, under a fresh nonce each time): ids
and ``last_event_id`` tell a viewer nothing about the events it may not see,
not even that some came in between (:class:`_Sealer`).  The last
:data:`REPLAY_EVENTS` are kept, so a browser that reconnects
(``Last-Event-ID``) gets what it missed, and one whose id this feed cannot
resume from (another process, or too old) gets a ``reset`` event and reloads
its state.  Each subscriber is offered only the rows its viewer may see (the
data-rights rule of :meth:`broker.archive.query.Viewer.may_see`; an acknowledgement
as its coincidence), and stream health only with the ``health_scope``
setting's scope, so neither its queue nor its keep-alives move with hidden
rows; a subscriber too slow to keep up is dropped, and its browser reconnects
and replays.

A stream opened with a token is re-verified every :data:`TOKEN_CHECK_S` (one
query for the tokens of every open stream): once its token is revoked or
expired the stream is ended, and the browser's reconnect answers for whoever
it now is (anonymous, for a sign-in cookie holding that token).

An embargoed row is pushed when it arrives (to those who may see it) and again
when its embargo ends, to everyone it has become visible to: each poll also
reads the alerts whose ``embargo_until`` passed since the previous poll (an
indexed range) and the coincidences they are members of.

Rows are found by id, and ids need not commit in order (two PostgreSQL
writers): an id skipped over stays a gap that is looked for again for
:data:`GAP_GRACE_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, or_, select

from broker.archive import query as q
from broker.archive.db import transaction
from broker.archive.models import Acknowledgement, AlertRow, CoincidenceMember, CoincidenceRow
from broker.archive.query import Viewer
from broker.archive.sealing import Sealer
from broker.archive.store import Archive, utcnow
from broker.config import Settings
from broker.web.streamhealth import health_view
from broker.web.tokens import TokenCache, valid_token_ids
from crossmatch.engine import class_roles, members_class

log = logging.getLogger(__name__)

REPLAY_EVENTS = 2000
"""Events kept for browsers that reconnect with ``Last-Event-ID``."""
BATCH_ROWS = 500
"""Most rows of one table read per poll (more arrive on the next)."""
SUBSCRIBER_QUEUE = 1000
"""Events one browser may lag behind before it is dropped (it reconnects and replays)."""
HEALTH_EVERY_S = 1.0
"""How often (s) stream health is recomputed and pushed (a page takes a pause in these as its
feed being stuck)."""
GAP_GRACE_S = 120.0
"""How long (s) an id skipped by the feed is looked for again (a transaction still open)."""
MAX_GAPS = 5000
"""Most skipped ids remembered per table (a larger jump is a sequence gap, not a backlog)."""
KEEPALIVE_S = 15.0
"""Idle time (s) after which a comment line keeps proxies from closing the stream."""
TOKEN_CHECK_S = 1.0
"""How often (s) the tokens of open streams are verified again (revoked or expired: the
stream ends)."""
TOKEN_FAIL_S = 5.0
"""How long (s) the tokens may go unverified (the archive unreachable) before the streams
opened with one are ended: they reconnect and authenticate again."""
STREAM_MAX_S = 900.0
"""How long (s) one event stream lasts before the server ends it; the browser reconnects
at once with ``Last-Event-ID`` and misses nothing.  Bounds what a shutdown waits for."""

ALERT_STATE = {"initial": "new", "update": "updated", "retraction": "retracted"}


class _Sealer:
    """Opaque event ids ``<epoch>-<sealed sequence number>`` (:mod:`broker.archive.sealing`, with
    a key of this process).

    Two ids of the same number differ, and nothing but this feed can tell their order
    or distance, so a viewer learns nothing from its ids about events it did not get.
    """

    def __init__(self, epoch: str) -> None:
        self.epoch = epoch
        self._sealer = Sealer.random()

    def seal(self, seq: int) -> str:
        return f"{self.epoch}-{self._sealer.seal(seq.to_bytes(8, 'big'))}"

    def open(self, event_id: str) -> int | None:
        """The sequence number in ``event_id``; None if this feed did not issue it."""
        epoch, _, sealed = event_id.partition("-")
        payload = self._sealer.open(sealed) if epoch == self.epoch else None
        return int.from_bytes(payload, "big") if payload is not None and len(payload) == 8 \
            else None


@dataclass
class Event:
    """One server-sent event: its sequence number (None: not replayed), type, data, and
    who may see it (every member's data rights, and a scope if one is needed); ``id`` is
    its opaque id on the wire (:class:`_Sealer`)."""

    seq: int | None
    kind: str
    data: dict[str, Any]
    rights: list[tuple[str, datetime | None]] = field(default_factory=list)
    scope: str | None = None
    id: str | None = None

    def visible_to(self, viewer: Viewer, now: datetime) -> bool:
        if self.scope and not viewer.holds(self.scope):
            return False
        return all(viewer.may_see(r, until, now) for r, until in self.rights)

    @functools.cached_property
    def encoded(self) -> bytes:
        """The event on the wire (encoded once, however many browsers it goes to)."""
        body = json.dumps(self.data, default=json_default, separators=(",", ":"))
        head = "" if self.id is None else f"id: {self.id}\n"
        return f"{head}event: {self.kind}\ndata: {body}\n\n".encode()


def json_default(value: Any) -> Any:
    """JSON for what the feed and the dashboard send: times as ISO 8601 UTC with ``Z``."""
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    raise TypeError(f"{type(value).__name__} is not JSON")


def alert_summary(row: Any) -> dict[str, Any]:
    """What the feed shows of an alert row (times UTC, angles deg, FAR Hz).  Rows are
    named by IVORN, never by database id: gaps between the ids a viewer sees would count
    the rows it may not see."""
    m = row._mapping
    return {"ivorn": m["ivorn"], "event_id": m["event_id"],
            "revision": m["revision"], "source": m["source"], "messenger": m["messenger"],
            "facility": m["facility"], "role": m["role"],
            "state": ALERT_STATE.get(m["alert_type"], m["alert_type"]),
            "event_time": m["event_time"], "received_at": m["received_at"],
            "ra_deg": m["ra_deg"], "dec_deg": m["dec_deg"],
            "error_radius_deg": m["error_radius_deg"], "far_hz": m["far_hz"],
            "data_rights": m["data_rights"]}


ALARM_STATES = ("new", "updated")
"""Coincidence states that can alarm (a retraction never does)."""


def is_significant(far_hz: float | None, role: str, state: str, settings: Settings) -> bool:
    """Whether a coincidence raises the alarm: FAR at or below the threshold, an alarming
    role class, an alarming state.  :func:`alarm_query` is the same rule in SQL."""
    return far_hz is not None and far_hz <= settings.alarm_far_hz and \
        role in settings.alarm_roles and state in ALARM_STATES


def alarm_query(settings: Settings, created_since: datetime) -> q.CoincidenceQuery:
    """:func:`is_significant` as filters (members of one coincidence share a role class,
    so "any member has an alarming role" is "the coincidence's class alarms")."""
    return q.CoincidenceQuery(created_since=created_since, far_max_hz=settings.alarm_far_hz,
                              state=ALARM_STATES, role=class_roles(settings.alarm_roles))


ALERT_COLUMNS = (AlertRow.id, AlertRow.ivorn, AlertRow.event_id, AlertRow.revision,
                 AlertRow.source, AlertRow.messenger, AlertRow.facility, AlertRow.role,
                 AlertRow.alert_type, AlertRow.event_time, AlertRow.received_at,
                 AlertRow.ra_deg, AlertRow.dec_deg, AlertRow.error_radius_deg,
                 AlertRow.far_hz, AlertRow.data_rights, AlertRow.embargo_until)
COINCIDENCE_COLUMNS = (CoincidenceRow.id, CoincidenceRow.ivorn, CoincidenceRow.pairing,
                       CoincidenceRow.state, CoincidenceRow.revision,
                       CoincidenceRow.supersedes_id, CoincidenceRow.reference_time,
                       CoincidenceRow.created_at, CoincidenceRow.ra_deg, CoincidenceRow.dec_deg,
                       CoincidenceRow.far_hz, CoincidenceRow.overlap)
"""What :func:`coincidence_summaries` reads (not the document)."""


def member_rights(conn: Any, coincidence_ids: list[int]) -> dict[int, list[Any]]:
    """Each coincidence's member rows (messenger, role, facility, data rights), in id order."""
    members: dict[int, list[Any]] = {i: [] for i in coincidence_ids}
    if coincidence_ids:
        for m in conn.execute(
                select(CoincidenceMember.coincidence_id, AlertRow.messenger, AlertRow.role,
                       AlertRow.facility, AlertRow.data_rights, AlertRow.embargo_until)
                .join(AlertRow, AlertRow.id == CoincidenceMember.alert_id)
                .where(CoincidenceMember.coincidence_id.in_(coincidence_ids))
                .order_by(CoincidenceMember.coincidence_id, AlertRow.id)):
            members[m.coincidence_id].append(m)
    return members


def coincidence_summaries(conn: Any, rows: Sequence[Any], settings: Settings
                          ) -> list[tuple[dict[str, Any], list[tuple[str, datetime | None]]]]:
    """Feed summaries of coincidence rows, each with its members' data rights (named by
    IVORN, as is the revision each supersedes: no database ids, see :func:`alert_summary`)."""
    ids = [r.id for r in rows]
    members = member_rights(conn, ids)
    earlier = sorted({r.supersedes_id for r in rows if r.supersedes_id is not None})
    supersedes = dict(conn.execute(select(CoincidenceRow.id, CoincidenceRow.ivorn).where(
        CoincidenceRow.id.in_(earlier))).all()) if earlier else {}
    acked: dict[int, dict[str, Any]] = {}
    if ids:
        for a in conn.execute(select(Acknowledgement.__table__).where(
                Acknowledgement.coincidence_id.in_(ids)).order_by(Acknowledgement.id)):
            acked.setdefault(a.coincidence_id, {"acked_by": a.acked_by, "acked_at": a.acked_at})
    out = []
    for r in rows:
        ms = members[r.id]
        role = members_class(m.role for m in ms)
        data = {"ivorn": r.ivorn, "pairing": r.pairing, "state": r.state,
                "revision": r.revision, "supersedes": supersedes.get(r.supersedes_id),
                "reference_time": r.reference_time,
                "created_at": r.created_at, "ra_deg": r.ra_deg, "dec_deg": r.dec_deg,
                "far_hz": r.far_hz, "overlap": r.overlap, "role": role,
                "messengers": sorted({m.messenger for m in ms}),
                "facilities": sorted({m.facility for m in ms}),
                "significant": is_significant(r.far_hz, role, r.state, settings),
                "ack": acked.get(r.id)}
        out.append((data, [(m.data_rights, m.embargo_until) for m in ms]))
    return out


class _Marks:
    """The rows of one table the feed has pushed: every id up to ``last`` except ``gaps``
    (skipped ids, each with the monotonic time it was first missed)."""

    def __init__(self, last: int) -> None:
        self.last = last
        self.gaps: dict[int, float] = {}

    def unseen(self, column: Any) -> Any:
        """SQL condition for the rows not pushed yet; the gaps as ranges of consecutive ids
        (ids burnt by ``ON CONFLICT DO NOTHING`` come in runs, and a run is one term)."""
        if not self.gaps:
            return column > self.last
        runs: list[list[int]] = []
        for i in sorted(self.gaps):
            if runs and i == runs[-1][1] + 1:
                runs[-1][1] = i
            else:
                runs.append([i, i])
        return or_(column > self.last, *(column.between(lo, hi) for lo, hi in runs))

    def pushed(self, row_id: int) -> bool:
        """Whether the row ``row_id`` was pushed already."""
        return row_id <= self.last and row_id not in self.gaps

    def advance(self, ids: list[int], mono_s: float) -> None:
        for i in sorted(ids):
            self.gaps.pop(i, None)
            if i > self.last:
                missing = range(max(self.last + 1, i - MAX_GAPS), i)
                self.gaps.update((m, mono_s) for m in missing)
                self.last = i
        kept = sorted(i for i, since in self.gaps.items() if mono_s - since <= GAP_GRACE_S)
        self.gaps = {i: self.gaps[i] for i in kept[-MAX_GAPS:]}


@dataclass(frozen=True)
class _NewRows:
    """One table's poll for rows not pushed yet: ``build(condition)`` is the statement, and
    ``fast`` the one for the usual case (no gaps: every id up to a mark pushed), built once.
    Built afresh, the five statements of a poll cost about 3 ms of CPU, four times a
    second whether anything came in (issue 17, item 1)."""

    column: Any
    build: Callable[[Any], Any]
    fast: Any


def _new_rows(column: Any, build: Callable[[Any], Any]) -> _NewRows:
    return _NewRows(column, build, build(column > bindparam("last")))


def _unseen(conn: Any, query: _NewRows, marks: _Marks) -> Any:
    """The rows ``query`` finds that ``marks`` says were not pushed yet, in id order."""
    if not marks.gaps:
        return conn.execute(query.fast, {"last": marks.last})
    return conn.execute(query.build(marks.unseen(query.column)))


_NEW_ALERTS = _new_rows(AlertRow.id, lambda unseen: select(*ALERT_COLUMNS).where(unseen)
                        .order_by(AlertRow.id).limit(BATCH_ROWS))
_NEW_COINCIDENCES = _new_rows(
    CoincidenceRow.id, lambda unseen: select(*COINCIDENCE_COLUMNS).where(unseen)
    .order_by(CoincidenceRow.id).limit(BATCH_ROWS))
_NEW_ACKS = _new_rows(
    Acknowledgement.id, lambda unseen: select(
        Acknowledgement.id, Acknowledgement.coincidence_id, Acknowledgement.acked_by,
        Acknowledgement.acked_at, CoincidenceRow.ivorn)
    .join(CoincidenceRow, CoincidenceRow.id == Acknowledgement.coincidence_id)
    .where(unseen).order_by(Acknowledgement.id).limit(BATCH_ROWS))
_EMBARGO_ENDED = (AlertRow.data_rights == "embargoed",
                  AlertRow.embargo_until > bindparam("since"),
                  AlertRow.embargo_until <= bindparam("now"))
"""Alerts whose embargo ended in the window (``since``, ``now``]."""
_RELEASED_ALERTS = (select(*ALERT_COLUMNS).where(*_EMBARGO_ENDED).order_by(AlertRow.id)
                    .limit(BATCH_ROWS))
_RELEASED_COINCIDENCES = (
    select(*COINCIDENCE_COLUMNS).where(CoincidenceRow.id.in_(
        select(CoincidenceMember.coincidence_id)
        .join(AlertRow, AlertRow.id == CoincidenceMember.alert_id).where(*_EMBARGO_ENDED)))
    .order_by(CoincidenceRow.id).limit(BATCH_ROWS))


@dataclass(eq=False)
class _Subscriber:
    """One open stream: who it answers for, and the token it was opened with (if any)."""

    viewer: Viewer
    token_id: int | None
    queue: asyncio.Queue[Event | None] = field(
        default_factory=lambda: asyncio.Queue(SUBSCRIBER_QUEUE))


class LiveFeed:
    """Polls the archive for new rows and fans them out to subscribers.

    Parameters
    ----------
    archive, settings
        What to read, and ``live_poll_s`` / alarm and health settings.
    token_cache
        The app's verified tokens: those the token check finds revoked or expired are
        dropped from it, so that a stream ended for its token cannot reopen with it.
    """

    def __init__(self, archive: Archive, settings: Settings,
                 token_cache: TokenCache | None = None) -> None:
        self.archive = archive
        self.settings = settings
        self.token_cache = token_cache
        self.epoch = secrets.token_hex(4)
        self._sealer = _Sealer(self.epoch)
        self.seq = 0
        self.events: deque[Event] = deque(maxlen=REPLAY_EVENTS)
        self.subscribers: set[_Subscriber] = set()
        self.health: list[dict[str, Any]] = []
        self._marks = {"alert": _Marks(0), "coincidence": _Marks(0), "ack": _Marks(0)}
        self._embargoes_seen_until = utcnow()
        """Embargoes that ended up to this moment have had their rows pushed again."""
        self._task: asyncio.Task[None] | None = None
        self._inflight: asyncio.Future[Any] | None = None
        self._health_mono = -HEALTH_EVERY_S
        self._totals: deque[tuple[float, dict[str, int]]] = deque(maxlen=240)
        self._health_lock = threading.Lock()
        self._tokens_mono = -TOKEN_CHECK_S
        self._tokens_ok_mono = time.monotonic()

    @property
    def running(self) -> bool:
        """Whether the poller is alive."""
        return self._task is not None and not self._task.done()

    @property
    def last_event_id(self) -> str:
        """The id a page that loaded its state now resumes the stream after (opaque, and
        new at every call: two calls do not tell whether events came in between)."""
        return self._sealer.seal(self.seq)

    async def start(self) -> None:
        """Begin polling from the newest rows now in the archive."""
        await asyncio.to_thread(self._start_marks)
        self._task = asyncio.create_task(self._run(), name="live-feed")

    async def _in_thread(self, fn: Any, *args: Any) -> Any:
        """Run a blocking archive read in a thread; :meth:`stop` waits for it to end, so no
        connection is still out when the archive is closed after the app."""
        self._inflight = asyncio.get_running_loop().run_in_executor(None, fn, *args)
        return await asyncio.shield(self._inflight)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._inflight is not None:
            with contextlib.suppress(Exception):
                await self._inflight
        for sub in list(self.subscribers):
            self._end(sub.queue)

    @staticmethod
    def _end(queue: asyncio.Queue[Event | None]) -> None:
        """End a subscriber's stream: whatever it has not sent yet it will replay."""
        while not queue.empty():
            queue.get_nowait()
        queue.put_nowait(None)

    def _start_marks(self) -> None:
        self._embargoes_seen_until = utcnow()
        with transaction(self.archive.engine, readonly=True) as conn:
            for kind, column in (("alert", AlertRow.id), ("coincidence", CoincidenceRow.id),
                                 ("ack", Acknowledgement.id)):
                self._marks[kind] = _Marks(conn.execute(select(func.max(column))).scalar() or 0)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            # Before the rows: a revoked token's stream is not offered another poll's rows.
            await self._check_tokens()
            try:
                fresh, seen = await self._in_thread(self._poll)
                for kind, data, rights in fresh:
                    self._publish(kind, data, rights)
                # Only now: rows of a poll that failed are read again by the next one.
                for kind, ids in seen.items():
                    self._marks[kind].advance(ids, loop.time())
                # Only while some page listens: an API replica nobody watches does
                # not query the archive every second (a page's first state asks itself).
                if self.subscribers and time.monotonic() - self._health_mono >= \
                        HEALTH_EVERY_S:
                    await self._in_thread(self.refresh_health)
                    event = self.health_event()
                    now = utcnow()
                    for sub in list(self.subscribers):
                        self._offer(sub, event, now)
            except asyncio.CancelledError:
                raise
            except Exception:  # the archive may be restarting: keep the feed alive
                log.warning("live feed poll failed; retrying", exc_info=True)
            await asyncio.sleep(self.settings.live_poll_s)

    async def _check_tokens(self) -> None:
        """End the streams whose token was revoked or has expired since they opened; one
        query for every open stream's token, every :data:`TOKEN_CHECK_S`.  Tokens that
        cannot be verified for :data:`TOKEN_FAIL_S` end their streams too."""
        mono = time.monotonic()
        if mono - self._tokens_mono < TOKEN_CHECK_S:
            return
        self._tokens_mono = mono
        held = {s.token_id for s in self.subscribers if s.token_id is not None}
        if not held:
            self._tokens_ok_mono = mono
            return
        try:
            valid = await self._in_thread(valid_token_ids, self.archive, held)
            self._tokens_ok_mono = mono
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("could not verify the live streams' tokens", exc_info=True)
            if mono - self._tokens_ok_mono < TOKEN_FAIL_S:
                return
            valid = set()
        if self.token_cache is not None:
            self.token_cache.forget(held - valid)
        for sub in list(self.subscribers):
            if sub.token_id is not None and sub.token_id not in valid:
                log.info("live stream of token %s ended: revoked, expired or unverifiable",
                         sub.token_id)
                self.subscribers.discard(sub)
                self._end(sub.queue)

    def _poll(self) -> tuple[list[tuple[str, dict[str, Any], list[Any]]], dict[str, list[int]]]:
        out: list[tuple[str, dict[str, Any], list[Any]]] = []
        seen: dict[str, list[int]] = {"alert": [], "coincidence": [], "ack": []}
        marks = self._marks
        with transaction(self.archive.engine, readonly=True) as conn:
            for row in _unseen(conn, _NEW_ALERTS, marks["alert"]):
                out.append(("alert", alert_summary(row),
                            [(row.data_rights, row.embargo_until)]))
                seen["alert"].append(row.id)
            rows = _unseen(conn, _NEW_COINCIDENCES, marks["coincidence"]).all()
            for data, rights in coincidence_summaries(conn, rows, self.settings):
                out.append(("coincidence", data, rights))
            seen["coincidence"] = [r.id for r in rows]
            acks = _unseen(conn, _NEW_ACKS, marks["ack"]).all()
            rights_of = member_rights(conn, sorted({a.coincidence_id for a in acks}))
            for a in acks:
                out.append(("ack", {"coincidence": a.ivorn,
                                    "acked_by": a.acked_by, "acked_at": a.acked_at},
                            [(m.data_rights, m.embargo_until)
                             for m in rights_of[a.coincidence_id]]))
                seen["ack"].append(a.id)
            out += self._released(conn)
        return out, seen

    def _released(self, conn: Any) -> list[tuple[str, dict[str, Any], list[Any]]]:
        """Rows already pushed whose embargo ended since the last poll, to push again: the
        viewers they were hidden from see them now (others already have them; a page
        keeps a row once).  Coincidences come with every member's rights, so one that
        still has a hidden member stays hidden from those it is hidden from."""
        window = {"since": self._embargoes_seen_until, "now": utcnow()}
        out: list[tuple[str, dict[str, Any], list[Any]]] = []
        for row in conn.execute(_RELEASED_ALERTS, window):
            if self._marks["alert"].pushed(row.id):
                out.append(("alert", alert_summary(row), [(row.data_rights, row.embargo_until)]))
        rows = [r for r in conn.execute(_RELEASED_COINCIDENCES, window).all()
                if self._marks["coincidence"].pushed(r.id)]
        for data, rights in coincidence_summaries(conn, rows, self.settings):
            out.append(("coincidence", data, rights))
        self._embargoes_seen_until = window["now"]
        return out

    def refresh_health(self, max_age_s: float = 0.0) -> list[dict[str, Any]]:
        """The stream health, computed now (a blocking archive read) unless it is at
        most ``max_age_s`` old.  The poller and page loads (threads of their own) call
        it: one computes, the others take its result."""
        with self._health_lock:
            now = time.monotonic()
            if now - self._health_mono > max_age_s:
                self.health = health_view(self.archive, self.settings, self._totals, now)
                self._health_mono = now
            return self.health

    def current_health(self) -> list[dict[str, Any]]:
        """The stream health, computed again unless the poller kept it fresh (it does so
        only while a page listens)."""
        return self.refresh_health(2 * HEALTH_EVERY_S)

    def health_event(self) -> Event:
        """The current stream health as an event (no id: it is not replayed, only renewed)."""
        return Event(None, "health", {"streams": self.health},
                     scope=self.settings.health_scope or None)

    def _publish(self, kind: str, data: dict[str, Any], rights: list[Any]) -> None:
        self.seq += 1
        event = Event(self.seq, kind, data, rights, id=self._sealer.seal(self.seq))
        self.events.append(event)
        now = utcnow()
        for sub in list(self.subscribers):
            self._offer(sub, event, now)

    def _offer(self, sub: _Subscriber, event: Event, now: datetime) -> None:
        # Only what it may see: a hidden row must not fill its queue (and drop it) nor
        # put off its keep-alive, which a viewer could time.
        if not event.visible_to(sub.viewer, now):
            return
        try:
            sub.queue.put_nowait(event)
        except asyncio.QueueFull:
            # Too slow: end its stream; the browser reconnects with the last id it
            # got and replays the rest from ``events``.
            self.subscribers.discard(sub)
            self._end(sub.queue)

    def _backlog(self, last_event_id: str | None) -> list[Event] | None:
        """Events after ``last_event_id``; None when this feed cannot resume from it."""
        if not last_event_id:
            return []
        after = self._sealer.open(last_event_id)
        if after is None:
            return None
        oldest = self.events[0].seq if self.events else None  # every kept event has one
        if after > self.seq or (oldest is not None and after < oldest - 1):
            return None
        return [e for e in self.events if e.seq is not None and e.seq > after]

    async def stream(self, viewer: Viewer, who: str | None, last_event_id: str | None,
                     token_id: int | None = None) -> AsyncIterator[bytes]:
        """The server-sent event stream of one browser, replaying after ``last_event_id``.

        It opens with ``hello`` (the signed-in name the stream answers for), then
        ``reset`` if the page must reload its state, the current health, and the
        events the browser missed.  ``token_id`` is the token the stream was opened
        with: the stream ends within :data:`TOKEN_CHECK_S` of its revocation or expiry.
        """
        sub = _Subscriber(viewer, token_id)
        queue = sub.queue
        backlog = self._backlog(last_event_id)
        self.subscribers.add(sub)
        try:
            yield b"retry: 2000\n\n"
            yield Event(None, "hello", {"user": who, "epoch": self.epoch}).encoded
            if backlog is None:
                yield Event(None, "reset", {"last_event_id": self.last_event_id}).encoded
                backlog = []
            # Fresh, not what an idle poller last left (the page's state is fresh too).
            if await self._in_thread(self.current_health):
                health = self.health_event()
                if health.visible_to(viewer, utcnow()):
                    yield health.encoded
            for event in backlog:
                if event.visible_to(viewer, utcnow()):
                    yield event.encoded
            loop = asyncio.get_running_loop()
            end = loop.time() + STREAM_MAX_S
            while loop.time() < end:
                try:
                    queued = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                if queued is None or sub not in self.subscribers:
                    return
                if queued.visible_to(viewer, utcnow()):
                    yield queued.encoded
        finally:
            self.subscribers.discard(sub)
