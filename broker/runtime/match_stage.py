"""The match stage: cross-match what the listen stage archived, with any number of workers.

Workers consume the alerts topic (:mod:`broker.runtime.announce`) in one consumer
group, so the alerts of one coincidence may reach different workers.  The
archive is the shared index, and one lock makes the workers take turns:

1. take the match lock (a PostgreSQL advisory lock; a file lock beside a
   SQLite archive);
2. catch the engine up: every alert another worker matched since this one
   last held the lock (``alerts.match_seq`` above the last it knows, in that
   order) and every coincidence stored since, loaded without matching again;
3. match its own alerts that nobody has matched yet, store the coincidences
   and queue their VOEvents (the triggers' own VOEvents, which depend on no
   match, were queued before taking the lock);
4. number them (``match_seq``), record ``matched_at``, release the lock; only
   then is the Kafka offset committed.  A database restart drops the advisory
   lock, and another worker may number alerts meanwhile: before storing, the
   round checks the lock's connection; the numbering refuses if the newest
   number is not the one this worker caught up to.  Either way the worker
   rebuilds its engine from the archive and reads the round again, once, in
   place (:class:`~alerts_schema.errors.MatchOrderLost`).  A lock lost while the
   round matches may leave that round's results stored.

So every alert is matched against every alert matched before it, whichever
worker matched that one, and a coincidence is found by the worker that holds
its later member, once.

**Survey alerts are matched in parallel.**  The survey's messengers
(:func:`crossmatch.engine.survey_messengers`, from the pairings: those some side ``b``
names and no side ``a`` nor N-fold group can take; optical for the shipped pairings,
radio too) only ever look back to a rare alert (a neutrino, GRB, GW ...), and no
pairing pairs two of them.  So:

* a *survey round* takes the match lock in **shared** mode (any number of workers at
  once, none while a rare round holds it), catches up as above (rare alerts numbered
  since, coincidences stored since, survey rounds' included), matches its survey alerts
  against that copy of the rare set without holding them in memory
  (``Engine.process(hold=False)``), stores the results, queues their VOEvents and sets
  ``matched_at``, then releases.  Survey alerts are never numbered: ``matched_at`` is
  what marks them done (the sweep and the announcements look for rare alerts without a
  number and survey alerts without ``matched_at``);
* a *rare round* is the numbered round above (exclusive lock); its engine is never fed
  survey alerts (``Engine.external_messengers``) and reads every window on them from
  the archive, **whatever their matched state**.

A pair of rare alert R and survey alert S is found exactly once.  S is archived before
it is announced, so before its survey round U; R is numbered inside its rare round X.
U and X never overlap (shared against exclusive).  If X ends before U begins, U's
catch-up holds R, and also the coincidence X stored if X's archive search already saw
S: U finds the pair, or knows it and skips it.  If U ends before X begins, S was archived
and U's coincidences stored before X began: X reads S from the archive (not from
memory) and finds the pair, or its catch-up knows U's and it re-evaluates it as the
same coincidence (an ``updated`` revision when R is a new revision).  A survey worker
killed mid-round leaves S without ``matched_at``: it is matched again (announcement read
again, or the sweep), results are stored once per result key and VOEvents once per IVORN,
and a coincidence the dead round stored is caught up, so it is neither found again nor
started anew.  A database restart drops the shared lock too; a survey round checks its
lock before matching (``MatchOrderLost``: rebuilt and matched again), with the same gap as
a rare round's: a lock lost while the round matches.

A worker killed at any point leaves its rare alerts unnumbered (its survey alerts
without ``matched_at``): the announcement is read again (or the sweep finds them), the
same results are computed, and the archive stores each result once (result
keys) and queues each VOEvent once (IVORNs); the sweep of unpublished results
covers a death between storing and queueing.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from alerts_schema import Alert, Coincidence
from alerts_schema.errors import ArchiveUnavailable, MatchOrderLost, RetryableError
from broker.archive.db import transaction
from broker.archive.models import AlertRow, CoincidenceRow
from broker.archive.store import RECEIPT_COLUMNS, Archive, receipt, utcnow, window_documents
from broker.config import Settings
from broker.runtime.pipeline import Pipeline
from crossmatch.engine import survey_messengers
from listeners.envelope import Outcome, RawMessage

log = logging.getLogger(__name__)

LOCK_KEY = 0x6D6D_626D
"""The PostgreSQL advisory lock every match worker takes in turn ("mmbm")."""
SWEEP_EVERY_S = 10.0
"""How often (s) a worker looks for alerts nobody announced or matched (results nobody
published: every :data:`PUBLISH_SWEEP_EVERY_S`)."""
PUBLISH_SWEEP_EVERY_S = 60.0
"""How often (s) a worker looks for stored results that have no VOEvent."""
UNANNOUNCED_AFTER_S = 30.0
"""An alert still unmatched this long (s) after it was archived is matched by the sweep."""


@contextlib.contextmanager
def match_lock(archive: Archive, *, shared: bool = False) -> Iterator[Callable[[], bool]]:
    """Hold the match lock: one worker at a time, across processes and hosts.

    PostgreSQL: a session advisory lock on a connection of its own, released
    by the server if the worker dies.  SQLite: an exclusive ``flock`` on
    ``<archive>.match-lock`` (one host, as SQLite itself).  Yields ``held()``:
    False once the lock's connection is gone (a database restart drops the lock).

    ``shared``: the lock in shared mode (a survey round): any number of holders at
    once, none while a worker holds it exclusively (a round of rare alerts).
    """
    mode = "_shared" if shared else ""
    if archive.engine.dialect.name == "postgresql":
        with archive.engine.connect() as conn:
            # Keyed by schema too: two brokers sharing a database do not wait on each other.
            conn.exec_driver_sql(
                f"SELECT pg_advisory_lock{mode}({LOCK_KEY}, hashtext(current_schema()))")
            conn.commit()

            def held() -> bool:
                try:
                    conn.exec_driver_sql("SELECT 1")
                    conn.commit()
                    return True
                except SQLAlchemyError:
                    return False

            try:
                yield held
            finally:
                try:
                    conn.exec_driver_sql(
                        f"SELECT pg_advisory_unlock{mode}({LOCK_KEY}, "
                        "hashtext(current_schema()))")
                    conn.commit()
                except SQLAlchemyError:  # the connection, and the lock with it, are gone
                    log.warning("the match lock's connection was lost before unlocking")
        return
    database = make_url(str(archive.engine.url)).database or ":memory:"
    path = Path(database + ".match-lock") if database != ":memory:" else None
    if path is None:
        yield lambda: True
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield lambda: True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class MatchWorker:
    """One match worker: an engine kept in step with the archive's matching order.

    Parameters
    ----------
    settings, archive
        As for ``mmbroker serve``; the worker queues VOEvents for the targets the
        settings enable (the publish stage delivers them).
    new_pipeline
        Builds a pipeline with a fresh, cold engine for ``archive`` (at start and
        whenever the worker rebuilds): :func:`broker.runtime.assembly.match_worker`
        passes the composition root's.
    """

    def __init__(self, settings: Settings, archive: Archive,
                 new_pipeline: Callable[[], Pipeline]) -> None:
        self.archive = archive
        self.settings = settings
        self._new_pipeline = new_pipeline
        self.pipeline = new_pipeline()
        self.survey = survey_messengers(self.pipeline.engine.config)
        self.pipeline.engine.external_messengers = self.survey
        self.seq = 0
        self.coincidence_seen = 0
        self._swept_publications = 0.0
        self._lock = threading.Lock()  # the sweeper thread and the consumer share the engine

    def warm(self, stop: threading.Event | None = None) -> None:
        """Load the live window's matched alerts and stored coincidences into the engine,
        waiting (1 s doubling to 30 s) while the archive is unreachable: a worker started
        during a database restart must not die of it."""
        delay = 1.0
        while True:
            try:
                self._warm()
                return
            except (ArchiveUnavailable, OperationalError) as exc:
                log.warning("match worker cannot reach the archive (%s); retrying in %.0f s",
                            exc, delay)
                if stop is not None and stop.wait(delay):
                    return
                if stop is None:
                    time.sleep(delay)
                delay = min(2 * delay, 30.0)

    def _warm(self) -> None:
        with self._lock, match_lock(self.archive):
            self._load()
        if self.pipeline.publisher is not None:
            # Outside the lock, and only what is old enough that no live round is still
            # queueing it.
            now = utcnow()
            self.pipeline.publisher.sweep(
                now - timedelta(seconds=self.pipeline.engine.window_s),
                until=now - timedelta(seconds=UNANNOUNCED_AFTER_S))

    def _load(self) -> None:
        """Fill the engine from the archive: the live window's numbered alerts, in their
        order, and its stored coincidences (the match lock held)."""
        engine = self.pipeline.engine
        with transaction(self.archive.engine, readonly=True) as conn:
            self.seq = conn.execute(select(func.max(AlertRow.match_seq))).scalar() or 0
            self.coincidence_seen = conn.execute(
                select(func.max(CoincidenceRow.id))).scalar() or 0
            alerts, coincidences = window_documents(conn, engine.retention_by_messenger(),
                                                    numbered=True)
        engine.warm(alerts, coincidences)
        log.info("match worker warmed with %d alerts, at match_seq %d", len(alerts), self.seq)

    def _unmatched(self) -> ColumnElement[bool]:
        """Alerts this stage has yet to match: rare ones unnumbered (not "unmatched": a
        worker killed between matching and numbering leaves matched_at set, and its alerts
        must be matched again), survey ones without ``matched_at`` (never numbered)."""
        if not self.survey:
            return AlertRow.match_seq.is_(None)
        return and_(AlertRow.match_seq.is_(None), or_(
            AlertRow.matched_at.is_(None), AlertRow.messenger.not_in(sorted(self.survey))))

    def handle(self, ivorns: Sequence[str]) -> int:
        """Match the alerts named that nobody has matched yet; how many this worker matched."""
        wanted = sorted(set(ivorns))
        if not wanted:
            return 0
        with transaction(self.archive.engine, readonly=True) as conn:
            rows = conn.execute(select(AlertRow.ivorn, AlertRow.document, *RECEIPT_COLUMNS)
                                .where(AlertRow.ivorn.in_(wanted), self._unmatched())
                                .order_by(AlertRow.event_time, AlertRow.id)).all()
        if not rows:
            return 0
        alerts = [Alert.model_validate(r.document) for r in rows]
        receipts = {r.ivorn: receipt(r) for r in rows}
        publisher = self.pipeline.publisher
        if publisher is not None:
            # A trigger's own VOEvent depends on nothing matched: built and queued here,
            # outside the match lock (most of a round's work: another worker matches
            # meanwhile) and before it, so it is queued ahead of any coincidence citing
            # it.  The outbox takes an IVORN once, so a round read again queues nothing.
            publisher.publish(alerts, [], receipts)
        survey = [a for a in alerts if a.messenger in self.survey]
        rare = [a for a in alerts if a.messenger not in self.survey]
        done = self._survey_round(survey, receipts) if survey else 0
        return done + (self._rare(rare, receipts) if rare else 0)

    def _rare(self, alerts: list[Alert], receipts: dict[str, dict]) -> int:
        """Match rare alerts (all but the survey's) in the one numbered order."""
        return self._again_if_lost(self._round, alerts, receipts, "a round")

    def _survey_round(self, alerts: list[Alert], receipts: dict[str, dict]) -> int:
        """Match survey alerts against this worker's copy of the rare set, under the match
        lock in *shared* mode (survey rounds of every worker run at once; a rare round
        waits for them, and they for it); how many.  Not numbered: ``matched_at`` marks
        them done.  The protocol is in the module docstring."""
        return self._again_if_lost(self._survey_once, alerts, receipts, "a survey round")

    def _again_if_lost(self, run: Callable[[list[Alert], dict[str, dict]], int],
                       alerts: list[Alert], receipts: dict[str, dict], what: str) -> int:
        """``run`` the round; if it lost the match lock, once more on a rebuilt engine."""
        try:
            return run(alerts, receipts)
        except MatchOrderLost:
            # The round matched, or was about to, against an incomplete past: start the
            # engine again from the archive and read the round again, once, here.
            log.warning("the match lock was lost during %s; rebuilding the engine", what)
            with self._lock, match_lock(self.archive):
                self._rebuild()
            return run(alerts, receipts)

    def _survey_once(self, alerts: list[Alert], receipts: dict[str, dict]) -> int:
        with self._lock, match_lock(self.archive, shared=True) as held:
            # Every rare alert numbered and every coincidence stored so far (a survey
            # round's too: a pair another round stored is then known, and not found again).
            self._catch_up()
            alerts = self._still(alerts, AlertRow.matched_at)
            if not alerts:
                return 0
            if not held():  # a rare round may be running: our copy may be stale
                raise MatchOrderLost("the match lock's connection is gone")
            self.pipeline.match(alerts, {a.id: receipts[a.id] for a in alerts},
                                record_matched=False, publish_alerts=False, hold=False)
            if self.pipeline.backlog:
                raise RetryableError("the archive refused this round's results; retrying")
            # Results stored and queued before matched_at, and both before the shared lock
            # is released: a rare round after this one sees them.  Its time is the
            # engine's, as in ``serve`` (the dashboard's latency chain).
            self.archive.mark_matched([a.id for a in alerts],
                                      self.pipeline.matched_at or utcnow())
            log.info("matched %d survey alert(s) against the rare set at match_seq %d",
                     len(alerts), self.seq)
        return len(alerts)

    def _still(self, alerts: list[Alert], done: Any) -> list[Alert]:
        """Those of ``alerts`` whose ``done`` column (``matched_at`` for survey rounds,
        ``match_seq`` for rare ones) is still empty: another worker may have matched
        some since they were read (a rebalance, or the sweep)."""
        with transaction(self.archive.engine, readonly=True) as conn:
            still = set(conn.execute(select(AlertRow.ivorn).where(
                AlertRow.ivorn.in_([a.id for a in alerts]), done.is_(None))).scalars())
        return [a for a in alerts if a.id in still]

    def _round(self, alerts: list[Alert], receipts: dict[str, dict]) -> int:
        """Catch up, match and number ``alerts`` under the match lock; how many."""
        with self._lock, match_lock(self.archive) as held:
            self._catch_up()
            alerts = self._still(alerts, AlertRow.match_seq)
            if not alerts:
                return 0
            if not held():  # lost while catching up: nothing stored yet
                raise MatchOrderLost("the match lock's connection is gone")
            self.pipeline.match(alerts, {a.id: receipts[a.id] for a in alerts},
                                record_matched=False, publish_alerts=False,
                                again=True)  # unnumbered: never matched as they are now
            if self.pipeline.backlog:
                # Results held in memory only: not numbered, not committed; the next
                # round stores them first (and a restart recomputes them).
                raise RetryableError("the archive refused this round's results; retrying")
            # Refuses (MatchOrderLost) if another worker numbered alerts meanwhile.
            self.seq = self.archive.mark_matched([a.id for a in alerts],
                                                 self.pipeline.matched_at or utcnow(),
                                                 number=True, after=self.seq) or self.seq
            log.info("matched %d alert(s), match_seq up to %d", len(alerts), self.seq)
        return len(alerts)

    def _rebuild(self) -> None:
        """A fresh engine filled from the archive (the match lock held)."""
        self.pipeline = self._new_pipeline()
        self.pipeline.engine.external_messengers = self.survey
        self._load()

    def _catch_up(self) -> None:
        """Load into the engine what other workers matched and stored since this one (its
        own coincidences of the last round too: loading them again changes nothing)."""
        with transaction(self.archive.engine, readonly=True) as conn:
            rows = conn.execute(select(AlertRow.match_seq, AlertRow.document).where(
                AlertRow.match_seq > self.seq).order_by(AlertRow.match_seq)).all()
            stored = conn.execute(select(CoincidenceRow.id, CoincidenceRow.document).where(
                CoincidenceRow.id > self.coincidence_seen).order_by(CoincidenceRow.id)).all()
        if rows or stored:
            self.pipeline.engine.warm([Alert.model_validate(r.document) for r in rows],
                                      [Coincidence.model_validate(c.document) for c in stored])
        if rows:
            self.seq = rows[-1].match_seq
        if stored:
            self.coincidence_seen = stored[-1].id

    def sweep(self) -> int:
        """Match alerts of the live window archived a while ago that no worker numbered (an
        announcement lost between an archive commit and a crash), and publish what nobody
        published."""
        now = utcnow()
        cutoff = now - timedelta(seconds=UNANNOUNCED_AFTER_S)
        horizon = now - timedelta(seconds=self.pipeline.engine.window_s)
        with transaction(self.archive.engine, readonly=True) as conn:
            ivorns = list(conn.execute(select(AlertRow.ivorn).where(
                self._unmatched(), AlertRow.received_at <= cutoff,
                AlertRow.received_at >= horizon).order_by(AlertRow.id).limit(5000)).scalars())
        done = self.handle(ivorns) if ivorns else 0
        if done:
            log.warning("the sweep matched %d alert(s) nobody had announced", done)
        publisher = self.pipeline.publisher
        if publisher is not None and time.monotonic() - self._swept_publications >= \
                PUBLISH_SWEEP_EVERY_S:
            self._swept_publications = time.monotonic()
            with self._lock:
                # Only results old enough that no live worker is still queueing them.
                publisher.sweep(now - timedelta(hours=1), until=cutoff)
        return done


class MatchSink:
    """What the match stage's Kafka listener hands announcements to (a
    :class:`~listeners.envelope.Sink`).

    It records no stream health for the alerts topic: that is the broker's own
    bus, not an input stream a shifter watches (its backlog is the
    ``mmbroker_kafka_consumer_lag`` metric).
    """

    def __init__(self, worker: MatchWorker) -> None:
        self.worker = worker

    def receive(self, source: str, data: bytes, *, received_at: datetime | None = None,
                transport: dict[str, Any] | None = None) -> RawMessage:
        return RawMessage(source, data, received_at=received_at or utcnow(),
                          transport=transport or {})

    def set_stream_connected(self, streams: Sequence[str], connected: bool) -> None:
        pass  # the alerts topic is not an input stream (see the class docstring)

    def ingest(self, messages: Sequence[RawMessage]) -> list[Outcome]:
        ivorns = [m.data.decode("utf-8", errors="replace") for m in messages if m.data]
        self.worker.handle([i for i in ivorns if i.startswith("ivo://")])
        return []


def run_sweeper(worker: MatchWorker, stop: threading.Event) -> None:
    """Sweep every :data:`SWEEP_EVERY_S` until ``stop``."""
    while not stop.wait(SWEEP_EVERY_S):
        try:
            worker.sweep()
        except Exception:  # the archive may be restarting: the next sweep retries
            log.warning("match sweep failed; retrying", exc_info=True)
