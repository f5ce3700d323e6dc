"""The publisher: detector triggers and coincidences become VOEvents with provenance, queued.

What is published:

* every newly archived revision of an internal detector trigger (stream
  ``detector``), under the alert's own IVORN, citing the revision it
  supersedes (or retracts);
* every newly stored coincidence revision, under its own IVORN, citing its
  members (followup) and the revision it supersedes (or retracts).

Each VOEvent is built (:mod:`broker.publish.voevent_build`), checked against the
VOEvent 2.0 XSD and the frame limit, given its W3C PROV document
(:mod:`broker.publish.provenance`), and queued in the outbox (:mod:`broker.publish.outbox`)
in one transaction, with the data rights of every alert it shows: the outbox
holds it from public targets until the anonymous viewer may see all of them
(an embargo's end; never, for a proprietary part).  One that fails the checks
is not queued; the failure is logged and counted, and the alert or coincidence
stays in the archive.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote

from sqlalchemy import exists, select

import broker
from alerts_schema import Alert, Coincidence
from alerts_schema.errors import RetryableError
from broker.archive.db import transaction
from broker.archive.models import AlertRow, CoincidenceRow, VOEventRow
from broker.archive.store import Archive, utcnow
from broker.config import Settings
from broker.publish import outbox, provenance, voevent_build
from broker.publish.provenance import InputAlert
from broker.publish.voevent_build import PublishError, Who
from crossmatch.engine import ENGINE_VERSION, Result
from crossmatch.events import FETCHED_MAP, fetched_map
from listeners.envelope import sha256_hex

log = logging.getLogger(__name__)

TRIGGER_STREAM = "detector"
HANDOFF_WAIT_S = 0.005
"""Longest a publishing thread waits for an idle sender it woke to put the first
VOEvent on the wire, s (normally a fraction of a millisecond)."""


@dataclass
class Publisher:
    """Build and queue the VOEvents of one ingest batch.

    Parameters
    ----------
    archive
        The outbox and the alerts' receipts live here.
    settings
        Authority, author, base URL.
    targets
        Delivery targets every VOEvent is queued for (``vtp``, ``kafka-xml``,
        ``kafka-json``, ``kafka-private``); empty: archive only.
    private_targets
        Those of ``targets`` that carry embargoed and proprietary VOEvents at once
        (a collaboration's own); every other target is public.
    """

    archive: Archive
    settings: Settings
    targets: Sequence[str] = ()
    private_targets: Sequence[str] = ()
    wake: threading.Event = field(default_factory=threading.Event)
    failures: int = 0
    handoffs: list[Callable[[list[outbox.Due]], threading.Event | None]] = \
        field(default_factory=list)

    def __post_init__(self) -> None:
        s = self.settings
        self.who = Who(author_ivorn=s.author_ivorn or f"ivo://{s.ivorn_authority}/mmbroker",
                       short_name=s.author_short_name, contact_name=s.contact_name,
                       contact_email=s.contact_email, publisher=s.author_short_name)
        self.base_url = s.effective_public_base_url

    def provenance_url(self, ivorn: str) -> str:
        return f"{self.base_url}/api/v1/voevents/{quote(ivorn, safe='')}/provenance"

    def skymap_url(self, sha256: str) -> str:
        return f"{self.base_url}/api/v1/skymaps/{sha256}"

    def publish(self, alerts: Sequence[Alert], coincidences: Sequence[Result],
                receipts: dict[str, dict] | None = None) -> int:
        """Queue the VOEvents of newly archived triggers and stored coincidences; how many.

        ``receipts`` (by alert IVORN: row id, source, transport, raw hash,
        received time) spares the archive lookups for alerts the caller has
        just archived.
        """
        started = utcnow()
        known = receipts or {}
        outgoing = []
        for alert in alerts:
            if alert.source == TRIGGER_STREAM:
                item = self._guarded(alert.id,
                                     lambda a=alert: self._trigger(a, started, known))
                if item is not None:
                    outgoing.append(item)
        if coincidences:
            # Looked up once for the whole round, not per coincidence: a sky map
            # meeting an optical survey hands over thousands at once.
            ids = {m.alert_id for r in coincidences for m in r.coincidence.members}
            lookups = _Lookups(
                documents=self.archive.get_alerts(ids),
                receipts={**self.archive.receipts(ids - known.keys()), **known},
                row_ids=self.archive.coincidence_row_ids(
                    r.coincidence.id for r in coincidences))
        for result in coincidences:
            item = self._guarded(result.coincidence.id,
                                 lambda r=result: self._coincidence(r, started, lookups))
            if item is not None:
                outgoing.append(item)
        if not outgoing:
            return 0
        deliveries: list[outbox.Due] = []
        new = outbox.queue(self.archive, outgoing, self.targets, deliveries,
                           private=self.private_targets)
        waits = [w for handoff in self.handoffs if (w := handoff(deliveries)) is not None]
        # The senders just woken get the interpreter until the first VOEvent is on the
        # wire (DeliveryLoop.offer): this thread's next work (the cross-match, the next
        # batch) would otherwise hold it in front of them.  Bounded: a sender that
        # hangs costs the batch HANDOFF_WAIT_S at most, never the delivery.
        deadline = time.monotonic() + HANDOFF_WAIT_S
        for on_wire in waits:
            on_wire.wait(max(0.0, deadline - time.monotonic()))
        if any(new):
            self.wake.set()
        return sum(new)

    def _guarded(self, ivorn: str, build: object) -> outbox.Outgoing | None:
        try:
            return build()  # type: ignore[operator]
        except RetryableError:
            raise  # the archive is away: the whole round is retried
        except PublishError as exc:
            # Not sent, and said: the alert or coincidence is archived regardless.
            self.failures += 1
            log.error("VOEvent %s not published: %s", ivorn, exc)
            return None
        except Exception:  # a builder bug costs this VOEvent, not the batch
            self.failures += 1
            log.exception("VOEvent %s not published: building it failed", ivorn)
            return None

    def sweep(self, since: datetime, until: datetime | None = None) -> int:
        """Queue VOEvents for triggers and coincidences archived between ``since`` and
        ``until`` (default: now) that have none.

        A crash (or an archive outage that outlived a process) between archiving
        and queueing leaves them unpublished; this runs when a pipeline starts,
        and periodically in the match stage with ``until`` a little in the past,
        so as not to publish what another worker is queueing right now.
        """
        def unpublished(ivorn: Any) -> Any:
            # An anti-join on the unique IVORN, not NOT IN over every VOEvent ever issued.
            return ~exists(select(VOEventRow.id).where(VOEventRow.ivorn == ivorn))

        until = until or utcnow()
        with transaction(self.archive.engine, readonly=True) as conn:
            alerts = [Alert.model_validate(d) for d in conn.execute(
                select(AlertRow.document).where(
                    AlertRow.source == TRIGGER_STREAM, AlertRow.received_at >= since,
                    AlertRow.received_at <= until, unpublished(AlertRow.ivorn))
                .order_by(AlertRow.id)).scalars()]
            coincidences = [Result("", Coincidence.model_validate(d)) for d in conn.execute(
                select(CoincidenceRow.document).where(
                    CoincidenceRow.created_at >= since, CoincidenceRow.created_at <= until,
                    unpublished(CoincidenceRow.ivorn)).order_by(CoincidenceRow.id)
            ).scalars()]
        if alerts or coincidences:
            log.warning("publishing %d trigger(s) and %d coincidence(s) left unpublished",
                        len(alerts), len(coincidences))
        return self.publish(alerts, coincidences)

    def _trigger(self, alert: Alert, started: datetime,
                 known: dict[str, dict]) -> outbox.Outgoing:
        previous = (self.archive.previous_revision(alert.source, alert.event_id, alert.revision)
                    if alert.revision > 0 else None)
        retraction = alert.alert_type == "retraction"
        supersedes, retracts = (None, previous) if retraction else (previous, None)
        xml = voevent_build.build_trigger(
            alert, who=self.who, provenance_url=self.provenance_url(alert.id),
            supersedes=supersedes, retracts=retracts)
        receipts = {alert.id: known[alert.id]} if alert.id in known \
            else self.archive.receipts([alert.id])
        prov = provenance.build_json(
            alert.id, "trigger", [_input(alert, receipts.get(alert.id, {}))],
            activity_started=started, activity_ended=utcnow(), engine_version=ENGINE_VERSION,
            config_hash=None, parameters={"conversion": "detector trigger to VOEvent 2.0"},
            broker_id=self.who.author_ivorn, broker_version=_version(), supersedes=previous,
            voevent_sha256=sha256_hex(xml))
        return outbox.Outgoing(alert.id, xml, alert.role, prov,
                               alert_id=receipts.get(alert.id, {}).get("id"),
                               rights=_rights([alert]),
                               citations=tuple(voevent_build.trigger_citations(
                                   supersedes, retracts)))

    def _coincidence(self, result: Result, started: datetime,
                     lookups: _Lookups) -> outbox.Outgoing:
        coinc = result.coincidence
        members = [Alert.model_validate(lookups.documents[m.alert_id])
                   for m in coinc.members if m.alert_id in lookups.documents]
        xml = voevent_build.build_coincidence(
            coinc, members, who=self.who, provenance_url=self.provenance_url(coinc.id),
            skymap_url_for=self.skymap_url)
        prov = provenance.build_json(
            coinc.id, "coincidence",
            [_input(m, lookups.receipts.get(m.id, {})) for m in members],
            activity_started=started, activity_ended=utcnow(),
            engine_version=coinc.engine_version, config_hash=coinc.config_hash,
            parameters={"pairing": coinc.pairing, "state": coinc.state,
                        "revision": coinc.revision},
            broker_id=self.who.author_ivorn, broker_version=_version(),
            supersedes=coinc.supersedes, voevent_sha256=sha256_hex(xml))
        if len(members) < len(coinc.members):
            # A member not found cannot be shown to be public: held for ever.
            members_rights = (*_rights(members), ("proprietary", None))
        else:
            members_rights = _rights(members)
        return outbox.Outgoing(coinc.id, xml, voevent_build.coincidence_role(members),
                               prov,
                               coincidence_id=lookups.row_ids.get(coinc.id),
                               rights=members_rights,
                               citations=tuple(voevent_build.coincidence_citations(coinc)))


@dataclass(frozen=True)
class _Lookups:
    """What the coincidences of one publishing round need from the archive, by IVORN."""

    documents: dict[str, dict]
    receipts: dict[str, dict]
    row_ids: dict[str, int]


def _rights(alerts: Sequence[Alert]) -> outbox.Rights:
    """The data rights of what a VOEvent shows (see :func:`broker.publish.outbox.hold`)."""
    return tuple((a.data_rights.level, a.data_rights.embargo_until) for a in alerts)


def _input(alert: Alert, receipt: dict) -> InputAlert:
    prov = alert.provenance
    return InputAlert(
        ivorn=alert.id, source=alert.source, transport=receipt.get("transport") or {},
        raw_sha256=receipt.get("raw_sha256") or alert.raw_sha256 or "",
        received_time=receipt.get("received_at") or alert.received_time,
        revision=alert.revision, pipeline=prov.pipeline if prov else None,
        pipeline_version=prov.pipeline_version if prov else None,
        reco_method=prov.reco_method if prov else None, cuts=prov.cuts if prov else None,
        source_ivorn=alert.source_ivorn, skymap=_fetched_skymap(alert))


def _fetched_skymap(alert: Alert) -> tuple[str, str, datetime | None] | None:
    """``(sha256, url, fetched at)`` of the map fetched for ``alert`` that is its
    localization (``extra.skymap_fetch``), for its PROV; None without one."""
    sha = fetched_map(alert)
    record = alert.extra.get(FETCHED_MAP)
    if sha is None or not isinstance(record, dict):
        return None
    url = record.get("fetched_url") or record.get("url")
    when = record.get("fetched_at")
    try:
        at = datetime.fromisoformat(when.replace("Z", "+00:00")) if isinstance(when, str) \
            else None
    except ValueError:
        at = None
    return (sha, url, at) if isinstance(url, str) else None


def _version() -> str:
    return broker.__version__
