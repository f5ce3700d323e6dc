"""The in-process bus: ingest -> cross-match -> store coincidences -> publish.

:class:`Pipeline` has the Ingestor's interface (``receive`` and ``ingest``),
so every transport feeds it unchanged; ``mmbroker serve`` builds one.  Each
newly archived alert revision goes to the cross-match engine, and the
coincidences it returns are stored in the archive in the same call, before
the transport acknowledges or commits.  The publisher queues the VOEvents of
new detector triggers in the outbox before the engine runs (they need nothing
it does), and those of new coincidence revisions once they are stored.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from alerts_schema import Alert
from broker.archive.db import transaction
from broker.archive.store import Archive, utcnow, window_alerts, window_documents
from broker.metrics import COINCIDENCES, MATCH_SECONDS
from broker.runtime.ingest import Ingestor
from crossmatch.engine import Engine, Result
from listeners.envelope import Outcome, RawMessage
from listeners.registry import DETECTOR_STATUS_HOOKS

if TYPE_CHECKING:
    from broker.publish.publisher import Publisher

log = logging.getLogger(__name__)


class Pipeline:
    """Ingest a batch, cross-match what was newly archived, store the coincidences.

    A :class:`~listeners.envelope.Sink`: every transport of ``serve`` feeds one.

    Parameters
    ----------
    ingestor
        Stores, normalizes and archives raw messages.
    engine
        The cross-match engine (its state is rebuilt from the archive by
        :meth:`warm`).
    """

    def __init__(self, ingestor: Ingestor, engine: Engine,
                 publisher: Publisher | None = None) -> None:
        self.ingestor = ingestor
        self.engine = engine
        self.publisher = publisher
        # Listener threads share one engine: its live window is one state.
        self._engine_lock = threading.Lock()
        # Results not yet stored, and alerts and results not yet queued for
        # publication, when the archive refused a round: retried, in order.
        self._unstored: list[Result] = []
        self._unpublished: list[Result] = []
        self._unpublished_alerts: list[Alert] = []
        self._receipts: dict[str, dict] = {}
        self.archive: Archive = ingestor.archive
        self.coincidences: list[Result] = []  # the latest batch's, for callers and tests
        # When the engine finished the latest batch (UTC): its alerts' ``matched_at``,
        # which the match stage records only once the results are stored and queued.
        self.matched_at: datetime | None = None

    def receive(self, source: str, data: bytes, *, received_at: datetime | None = None,
                transport: dict[str, Any] | None = None) -> RawMessage:
        return self.ingestor.receive(source, data, received_at=received_at,
                                     transport=transport)

    def set_stream_connected(self, streams: Sequence[str], connected: bool) -> None:
        self.ingestor.set_stream_connected(streams, connected)

    def warm(self) -> int:
        """Load the live window's alerts and coincidences into the engine, then match what
        was archived and never matched; how many alerts.

        Unmatched are the alerts of a batch the process died between archiving and
        matching, and alerts whose sky map was stored after they were matched (the map
        store clears ``matched_at``) when it died before matching them again.
        """
        retention = self.engine.retention_by_messenger()
        with transaction(self.archive.engine, readonly=True) as conn:
            alerts, coincidences = window_documents(conn, retention, numbered=False,
                                                    matched=True)
            unmatched = window_alerts(conn, retention, numbered=False, matched=False)
        since = utcnow() - timedelta(seconds=self.engine.window_s)
        with self._engine_lock:
            self.engine.warm(alerts, coincidences)
        if unmatched:
            log.info("matching %d alert(s) archived but never matched", len(unmatched))
            self.match(unmatched, {}, publish_alerts=False, again=True)
        if self.publisher is not None:
            # A crash between archiving and queueing left these unpublished.
            self.publisher.sweep(since)
        return len(alerts) + len(unmatched)

    def ingest(self, messages: Sequence[RawMessage]) -> list[Outcome]:
        outcomes = self.ingestor.ingest(messages)
        fresh = [o.alert for o in outcomes if o.status == "archived" and o.alert is not None]
        by_sha = {m.sha256: m for m in messages}
        receipts = {o.alert.id: {"id": o.alert_id, "source": o.alert.source,
                                 "transport": dict(by_sha[o.raw_sha256].transport),
                                 "raw_sha256": o.raw_sha256,
                                 "received_at": by_sha[o.raw_sha256].received_at}
                    for o in outcomes if o.status == "archived" and o.alert is not None
                    and o.raw_sha256 in by_sha}
        self.match(fresh, receipts)
        return outcomes

    @property
    def backlog(self) -> bool:
        """Whether results or VOEvents are held in memory because the archive refused them
        (stored and queued by the next round)."""
        return bool(self._unstored or self._unpublished or self._unpublished_alerts)

    def match(self, fresh: Sequence[Alert], receipts: dict[str, dict], *,
              record_matched: bool = True, publish_alerts: bool = True,
              again: bool = False, hold: bool = True) -> list[Result]:
        """Cross-match archived alerts, store the coincidences and queue their VOEvents.

        ``receipts`` (by alert IVORN: row id, source, transport, raw hash,
        received time) are what the publisher and the latency metric need.
        Returns the results.  ``matched_at`` is recorded for every alert the engine
        processed (not one it failed on: matched it was not) unless
        ``record_matched`` is False (the match stage records it with its numbers).
        The triggers' own VOEvents are queued first, before the engine runs, unless
        ``publish_alerts`` is False (the match stage queues them before it takes the
        match lock).
        ``again``, ``hold``: as :meth:`~crossmatch.engine.Engine.process` takes them
        (``again``: :meth:`warm`; ``hold=False``: the match stage's survey rounds).
        """
        if not fresh:
            self.coincidences, self.matched_at = [], None
            return []
        status = self._detector_status(fresh)
        results: list[Result] = []
        failed: set[str] = set()
        # One lock from cross-match to outbox: the engine's state, the order in
        # which revisions are stored and the order in which they are published
        # must be the same, whichever thread delivered the alerts.
        with self._engine_lock:
            if publish_alerts:
                # The triggers' own VOEvents need nothing the engine does: queued (and
                # handed to the senders) before it runs, as the match stage does.
                self._unpublished_alerts.extend(fresh)
                self._receipts.update(receipts)
                self._flush_locked()
            if status is not None:
                self.engine.set_detector_status(status)
            for alert in sorted(fresh, key=lambda a: a.trigger_time):
                try:
                    results.extend(self.engine.process(alert, again=again, hold=hold))
                except Exception:  # a cross-match bug must not stop ingest
                    failed.add(alert.id)
                    log.exception("cross-match failed on %s", alert.id,
                                  extra={"ivorn": alert.id})
            matched_at = utcnow()
            self._unstored.extend(results)
            self._receipts.update(receipts)  # (the coincidences' members' receipts)
            self._flush_locked()
        for receipt in receipts.values():
            MATCH_SECONDS.observe(max(0.0, (matched_at - receipt["received_at"]).total_seconds()))
        if record_matched:
            try:
                self.archive.mark_matched([a.id for a in fresh if a.id not in failed],
                                          matched_at)
            except Exception:  # a latency figure is not worth failing a batch for
                log.exception("recording when %d alert(s) were matched failed", len(fresh))
        self.coincidences, self.matched_at = results, matched_at
        return results

    def flush(self) -> None:
        """Store and publish what an earlier round could not (the archive was down)."""
        with self._engine_lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if self._unstored:
            try:
                new = self.archive.store_coincidences(
                    [(r.key, r.coincidence) for r in self._unstored])
            except Exception:  # kept, in order, for the next round: nothing is lost
                log.exception("storing %d coincidence(s) failed; will retry",
                              len(self._unstored))
                return
            for result, is_new in zip(self._unstored, new, strict=True):
                if is_new:
                    COINCIDENCES.labels(result.coincidence.pairing,
                                        result.coincidence.state).inc()
                    self._unpublished.append(result)
                    log.info("coincidence %s (%s, %s)", result.coincidence.id,
                             result.coincidence.pairing, result.coincidence.state,
                             extra={"ivorn": result.coincidence.id,
                                    "pairing": result.coincidence.pairing,
                                    "members": [m.alert_id for m in
                                                result.coincidence.members]})
            self._unstored = []
        if self.publisher is not None and (self._unpublished or self._unpublished_alerts):
            try:
                self.publisher.publish(self._unpublished_alerts, self._unpublished,
                                       self._receipts)
            except Exception:  # the outbox was unreachable: kept for the next round
                log.exception("queueing VOEvents failed; will retry")
                return
        # Receipts serve only what waits to be stored or published: kept past a round
        # that published nothing (a match worker's rounds without a coincidence), they
        # grew by every alert the process ever matched.
        self._unpublished, self._unpublished_alerts, self._receipts = [], [], {}

    def _detector_status(self, fresh: Sequence[Alert]) -> dict[str, bool] | None:
        """Detectors ON/OFF for the streams whose hooks apply to ``fresh``, else None."""
        hooks = [h for h in DETECTOR_STATUS_HOOKS if any(map(h.applies, fresh))]
        if not hooks:
            return None
        rows = self.archive.stream_health()
        status: dict[str, bool] = {}
        for hook in hooks:
            status.update(hook.status(rows))
        return status
