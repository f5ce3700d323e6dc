"""The archive: raw payloads, alerts, quarantine, and the queries on them.

Writes are idempotent.  An alert is keyed by (source, event id, revision): the
same key with the same normalized content (:func:`content_sha256`; the raw
bytes may differ, e.g. the same LVK alert as JSON and as Avro) is a duplicate
and leaves one row; the same key with other content is an
:class:`~alerts_schema.errors.IngestConflict`, quarantined instead of overwriting.
Every arrival's raw bytes are kept either way.  An archived alert that names a sky
map by URL is queued for fetching (``skymap_fetches``) in the same transaction.  Rows
in a batch are inserted in key order so that concurrent writers on PostgreSQL wait for
each other instead of deadlocking.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import Engine, and_, bindparam, case, func, or_, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from alerts_schema import Alert, Coincidence
from alerts_schema.errors import IngestConflict, MatchOrderLost, PermanentError, ProcessDied
from broker.archive import migrate
from broker.archive.db import insert_ignoring_conflicts, is_sqlite, make_engine, transaction
from broker.archive.models import (
    Acknowledgement,
    AlertRow,
    CoincidenceMember,
    CoincidenceRow,
    IngestInflight,
    QuarantineEntry,
    RawPayload,
    Skymap,
    SkymapFetch,
    StreamHealth,
)
from broker.archive.query import ARCHIVIST, AlertQuery, search_alerts, skymap_bytes
from crossmatch.events import EventKey, event_key, namespace, order, supersedes
from crossmatch.healpix import nested29
from listeners.base import Normalized, skymap_url_to_fetch
from listeners.envelope import Outcome, RawMessage


def utcnow() -> datetime:
    return datetime.now(UTC)


RECEIPT_FIELDS = ("received_time", "raw_sha256", "raw_ref")
RECEIPT_COLUMNS = (AlertRow.id, AlertRow.source, AlertRow.transport, AlertRow.raw_sha256,
                   AlertRow.received_at)
"""The alert columns :func:`receipt` reads."""

# Statements every batch runs, built once: building one (clauses, coercions, its cache
# key) cost about 0.25 ms, twice running it on SQLite (issue 17, item 1).
_MARK_MATCHED = (AlertRow.__table__.update()
                 .where(AlertRow.ivorn.in_(bindparam("ivorns", expanding=True)),
                        AlertRow.matched_at.is_(None))
                 .values(matched_at=bindparam("at")))
_DELETE_MARKS = IngestInflight.__table__.delete().where(
    IngestInflight.owner == bindparam("owner"),
    IngestInflight.raw_sha256.in_(bindparam("hashes", expanding=True)))


def receipt(row: Any) -> dict[str, Any]:
    """How an archived alert arrived (from a row with :data:`RECEIPT_COLUMNS`): row id,
    source, transport, raw hash and received time, as the publisher takes them."""
    return {"id": row.id, "source": row.source, "transport": row.transport or {},
            "raw_sha256": row.raw_sha256, "received_at": row.received_at}


def content_sha256(document: dict[str, Any]) -> str:
    """SHA-256 of an Alert document without the fields that describe its receipt.

    Two arrivals of one alert revision (another encoding, another transport)
    hash the same; any change to what the alert says changes the hash.
    """
    body = {k: v for k, v in document.items() if k not in RECEIPT_FIELDS}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def coincidence_far_hz(document: dict[str, Any]) -> float | None:
    """The smallest false-alarm rate (Hz) among a coincidence document's significance figures.

    None when no figure is in Hz (a coincidence judged by p-value alone).
    """
    rates = [float(s["value"]) for s in document.get("significance") or ()
             if s.get("unit") == "Hz" and s.get("value") is not None]
    return min(rates) if rates else None


def with_receipt(alert: Alert, raw: RawMessage) -> Alert:
    """``alert`` as the archive keeps it: when and in which bytes it arrived."""
    return alert.model_copy(update={
        "received_time": raw.received_at,
        "raw_sha256": raw.sha256,
        "raw_ref": f"/api/v1/raw/{raw.sha256}",
    })


def _token_id(transport: dict[str, Any]) -> int | None:
    """The API token that posted an HTTP trigger (recorded on each revision it wrote)."""
    token_id = (transport.get("http") or {}).get("token_id")
    return token_id if isinstance(token_id, int) else None


def localization_columns(loc: Any, *, index: bool = True) -> dict[str, Any]:
    """The ``alerts`` columns that follow an alert's localization (``hpx29`` only with
    ``index``: :func:`store_results` computes it for a whole batch at once)."""
    ra = getattr(loc, "ra_deg", None)
    dec = getattr(loc, "dec_deg", None)
    radius = getattr(loc, "error_radius_deg", None)
    if radius is None:  # an ellipse: its semi-major axis bounds the region
        radius = getattr(loc, "semi_major_deg", None)
    columns = {"loc_kind": loc.kind, "ra_deg": ra, "dec_deg": dec, "error_radius_deg": radius,
               "skymap_sha256": getattr(loc, "skymap_sha256", None)}
    if index:
        columns["hpx29"] = int(nested29(ra, dec)) if ra is not None and dec is not None \
            else None
    return columns


def alert_row_values(alert: Alert, raw: RawMessage) -> dict[str, Any]:
    """The ``alerts`` columns for ``alert`` (with its receipt, see :func:`with_receipt`)."""
    located = localization_columns(alert.localization, index=False)
    document = alert.to_document()
    energy = alert.energy
    rights = alert.data_rights
    prov = alert.provenance
    return {
        "ivorn": alert.id,
        "source": alert.source,
        "source_ivorn": alert.source_ivorn,
        "event_id": alert.event_id,
        "revision": alert.revision,
        "alert_type": alert.alert_type,
        "role": alert.role,
        "messenger": alert.messenger,
        "facility": alert.facility,
        "instrument": alert.instrument,
        "event_time": alert.trigger_time,
        "event_time_error_s": alert.trigger_time_error_s,
        "received_at": raw.received_at,
        **located,
        "hpx29": None,  # filled for the whole batch at once: see _index_positions
        "far_hz": alert.far_hz,
        "p_value": alert.p_value,
        "signalness": alert.signalness,
        "energy_gev": energy.best_gev if energy else None,
        "energy_min_gev": energy.min_gev if energy else None,
        "energy_max_gev": energy.max_gev if energy else None,
        "data_rights": rights.level,
        "embargo_until": rights.embargo_until,
        "pipeline": prov.pipeline if prov else None,
        "pipeline_version": prov.pipeline_version if prov else None,
        "reco_method": prov.reco_method if prov else None,
        "raw_sha256": raw.sha256,
        "content_sha256": content_sha256(document),
        "transport": dict(raw.transport) or None,
        "document": document,
        "token_id": _token_id(raw.transport),
    }


class Archive:
    """Reads and writes of the archive database at one engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sqlite = is_sqlite(engine)

    @classmethod
    def open(cls, url: str, *, upgrade: bool = True) -> Archive:
        """Open the archive at ``url``, bringing its schema up to date unless told not to."""
        engine = make_engine(url)
        if upgrade:
            migrate.upgrade(engine)
        return cls(engine)

    def close(self) -> None:
        self.engine.dispose()

    # -- writes ---------------------------------------------------------------

    def _insert(self, table: Any) -> Any:
        return (sqlite.insert if self._sqlite else postgresql.insert)(table)

    def store_raw(self, messages: Iterable[RawMessage], *, owner: str | None = None) -> set[str]:
        """Store each message's bytes once by SHA-256, committed before any parsing.

        With ``owner`` (a process identity, see :func:`broker.runtime.ingest.process_identity`)
        each message is also marked in flight for that owner in the same
        transaction, and the hashes already stored before (repeats: the only
        messages a dead process can have left a mark on) are returned.
        """
        messages = list(messages)
        rows = {m.sha256: {"sha256": m.sha256, "data": m.data, "size_bytes": len(m.data),
                           "source": m.source, "first_received_at": m.received_at}
                for m in messages}
        if not rows:
            return set()
        with transaction(self.engine) as conn:
            new = insert_ignoring_conflicts(conn, RawPayload.__table__,
                                            [rows[k] for k in sorted(rows)],
                                            returning=("sha256",) if owner else ())
            if owner is None:
                return set()
            now = utcnow()
            marks = {m.sha256: {"raw_sha256": m.sha256, "owner": owner, "source": m.source,
                                "received_at": m.received_at,
                                "transport": dict(m.transport) or None,
                                "full_size": m.full_size, "started_at": now}
                     for m in messages}
            insert_ignoring_conflicts(conn, IngestInflight.__table__,
                                      [marks[k] for k in sorted(marks)])
        return set(rows) - {row[0] for row in new}

    def inflight_marks(self, hashes: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """In-flight marks (all, or those of ``hashes``): hash, owner, when, how received."""
        table = IngestInflight.__table__
        stmt = select(table)
        with transaction(self.engine, readonly=True) as conn:
            if hashes is None:
                return [dict(r._mapping) for r in conn.execute(stmt)]
            return [dict(r._mapping) for chunk in _chunks(sorted(set(hashes)))
                    for r in conn.execute(stmt.where(table.c.raw_sha256.in_(chunk)))]

    def died_on(self, hashes: Iterable[str]) -> set[str]:
        """Those of ``hashes`` already quarantined because a process died normalizing them."""
        table = QuarantineEntry.__table__
        with transaction(self.engine, readonly=True) as conn:
            return {sha for chunk in _chunks(sorted(set(hashes)))
                    for (sha,) in conn.execute(select(table.c.raw_sha256).where(
                        table.c.raw_sha256.in_(chunk),
                        table.c.error_class == ProcessDied.__name__))}

    def clear_inflight(self, marks: Iterable[tuple[str, str]]) -> None:
        """Delete the in-flight marks ``(raw hash, owner)``."""
        with transaction(self.engine) as conn:
            _delete_marks(conn, marks)

    def store_results(
        self, results: Sequence[tuple[RawMessage, Normalized | PermanentError]], *,
        owner: str | None = None, cleared: Iterable[tuple[str, str]] = ()
    ) -> list[Outcome]:
        """Archive what each message became, in one transaction.

        ``results`` pairs each raw message (already stored by
        :meth:`store_raw`) with its :class:`~listeners.base.Normalized`
        content or the error that stopped it.  Sky maps are stored once by
        hash, alerts idempotently, heartbeats and message counts into
        ``stream_health``, failures into quarantine.  Returns one
        :class:`Outcome` per alert, per heartbeat-only message and per failure.
        ``owner``'s in-flight marks on these messages, and the marks
        ``cleared`` (raw hash, owner), are deleted in the same transaction.
        """
        outcomes: list[Outcome] = []
        pending: list[tuple[RawMessage, Alert, dict[str, Any]]] = []
        quarantine: list[tuple[RawMessage, PermanentError]] = []
        skymaps: dict[str, dict[str, Any]] = {}
        heartbeats: list[Any] = []
        for raw, result in results:
            if isinstance(result, PermanentError):
                quarantine.append((raw, result))
                continue
            for received in result.alerts:
                archived = with_receipt(received, raw)
                pending.append((raw, archived, alert_row_values(archived, raw)))
            for sky in result.skymaps:
                skymaps[sky.sha256] = {"sha256": sky.sha256, "data": sky.data,
                                       "format": sky.format, "size_bytes": len(sky.data),
                                       "area_90_deg2": sky.area_90_deg2,
                                       "received_at": raw.received_at}
            heartbeats.extend(result.heartbeats)
            if not result.alerts:
                outcomes.append(Outcome("heartbeat", raw.source, raw.sha256))
        pending.sort(key=lambda p: (p[1].source, p[1].event_id, p[1].revision))
        _index_positions([values for _, _, values in pending])

        with transaction(self.engine) as conn:
            insert_ignoring_conflicts(conn, Skymap.__table__,
                                      [skymaps[k] for k in sorted(skymaps)])
            inserted = {
                (source, event_id, revision): row_id
                for row_id, source, event_id, revision in insert_ignoring_conflicts(
                    conn, AlertRow.__table__, [values for _, _, values in pending],
                    returning=("id", "source", "event_id", "revision"))}
            existing = self._existing(conn, [
                (a.source, a.event_id, a.revision) for _, a, _ in pending
                if (a.source, a.event_id, a.revision) not in inserted])
            claimed: set[tuple[str, str, int]] = set()
            fetches: list[dict[str, Any]] = []
            queued_at = utcnow()
            for raw, alert, values in pending:
                key = (alert.source, alert.event_id, alert.revision)
                if key in inserted and key not in claimed:
                    claimed.add(key)
                    outcomes.append(Outcome("archived", raw.source, raw.sha256, alert.id,
                                            inserted[key], alert=alert))
                    if url := skymap_url_to_fetch(alert):
                        # Queued with the alert: a process that dies now loses no fetch.
                        fetches.append({"alert_id": inserted[key], "url": url[:1024],
                                        "state": "pending", "attempts": 0,
                                        "next_attempt_at": queued_at,
                                        "created_at": queued_at})
                    continue
                match = existing.get(key) or self._claimed_row(conn, key)
                if match is None:
                    quarantine.append((raw, PermanentError(
                        f"IVORN {alert.id} is already used by another alert")))
                elif match[1] == values["content_sha256"]:
                    outcomes.append(Outcome("duplicate", raw.source, raw.sha256, alert.id,
                                            match[0], alert=alert))
                else:
                    quarantine.append((raw, IngestConflict(*key, match[1],
                                                           values["content_sha256"])))
            insert_ignoring_conflicts(conn, SkymapFetch.__table__, fetches)
            # A refusal replayed (the same bytes, stream and reason) is the row already
            # there: quarantine is idempotent like the alerts (issue 16, item 11).
            insert_ignoring_conflicts(conn, QuarantineEntry.__table__, [
                {"source": raw.source, "reason": _reason(err),
                 "error_class": type(err).__name__, "received_at": raw.received_at,
                 "raw_sha256": raw.sha256, "transport": dict(raw.transport) or None,
                 "truncated": raw.truncated,
                 "refusal_sha256": refusal_sha256(raw.source, raw.sha256, _reason(err))}
                for raw, err in quarantine])
            self._update_health(conn, [raw for raw, _ in results],
                                [raw for raw, _ in quarantine], heartbeats)
            if owner is not None:
                cleared = [*cleared, *((raw.sha256, owner) for raw, _ in results)]
            _delete_marks(conn, cleared)
        outcomes.extend(Outcome("quarantined", raw.source, raw.sha256, reason=_reason(err))
                        for raw, err in quarantine)
        return outcomes

    @functools.cached_property
    def _health_upsert(self) -> Any:
        """The stream-health upsert, built once: constructing it cost 1 ms a message."""
        table = StreamHealth.__table__
        stmt = self._insert(table)
        excluded = stmt.excluded
        greatest = func.max if self._sqlite else func.greatest

        def newest(column: str) -> Any:
            return greatest(func.coalesce(table.c[column], excluded[column]), excluded[column])

        stmt = stmt.on_conflict_do_update(
            index_elements=[table.c.stream, table.c.detector],
            set_={
                "messages_total": table.c.messages_total + excluded.messages_total,
                "quarantined_total": table.c.quarantined_total + excluded.quarantined_total,
                "last_message_at": func.coalesce(newest("last_message_at"),
                                                 table.c.last_message_at),
                "last_heartbeat_at": func.coalesce(newest("last_heartbeat_at"),
                                                   table.c.last_heartbeat_at),
                # Only a heartbeat newer than the stored one may change the status.
                "heartbeat_status": case(
                    (excluded.last_heartbeat_at >= func.coalesce(table.c.last_heartbeat_at,
                                                                 excluded.last_heartbeat_at),
                     func.coalesce(excluded.heartbeat_status, table.c.heartbeat_status)),
                    else_=table.c.heartbeat_status),
                "updated_at": excluded.updated_at,
            })
        return stmt

    def _update_health(self, conn: Connection, received: list[RawMessage],
                       quarantined: list[RawMessage], heartbeats: list[Any]) -> None:
        """Upsert per-stream message counts and per-detector heartbeats, in key order."""
        now = utcnow()
        rows: dict[tuple[str, str], dict[str, Any]] = {}

        def row(stream: str, detector: str) -> dict[str, Any]:
            return rows.setdefault((stream, detector), {
                "stream": stream, "detector": detector, "last_message_at": None,
                "messages_total": 0, "quarantined_total": 0, "last_heartbeat_at": None,
                "heartbeat_status": None, "updated_at": now})

        for raw in received:
            r = row(raw.source, "")
            r["messages_total"] += 1
            r["last_message_at"] = max(filter(None, (r["last_message_at"], raw.received_at)))
        for raw in quarantined:
            row(raw.source, "")["quarantined_total"] += 1
        for hb in sorted(heartbeats, key=lambda h: h.time):
            r = row(hb.stream, hb.detector)
            r["last_heartbeat_at"] = hb.time
            r["heartbeat_status"] = hb.status
        if not rows:
            return
        conn.execute(self._health_upsert, [rows[k] for k in sorted(rows)])

    def _existing(self, conn: Connection, keys: list[tuple[str, str, int]]
                  ) -> dict[tuple[str, str, int], tuple[int, str]]:
        found: dict[tuple[str, str, int], tuple[int, str]] = {}
        unique = sorted(set(keys))
        for start in range(0, len(unique), 300):
            chunk = unique[start:start + 300]
            rows = conn.execute(
                select(AlertRow.source, AlertRow.event_id, AlertRow.revision, AlertRow.id,
                       AlertRow.content_sha256)
                .where(tuple_(AlertRow.source, AlertRow.event_id, AlertRow.revision).in_(chunk)))
            for r in rows:
                found[(r.source, r.event_id, r.revision)] = (r.id, r.content_sha256)
        return found

    @staticmethod
    def _claimed_row(conn: Connection, key: tuple[str, str, int]) -> tuple[int, str] | None:
        # A key inserted earlier in this same batch (a message repeated within it).
        row = conn.execute(select(AlertRow.id, AlertRow.content_sha256).where(
            AlertRow.source == key[0], AlertRow.event_id == key[1],
            AlertRow.revision == key[2])).first()
        return (row.id, row.content_sha256) if row else None

    def store_coincidences(self, results: Sequence[tuple[str, Coincidence]]) -> list[bool]:
        """Store cross-match results, idempotently by result key; True for each new row.

        ``results`` pairs each :class:`~alerts_schema.Coincidence` with its result
        key (SHA-256 of member ids, member revisions and config hash): the same
        result computed twice (a replay, a second worker) is stored once.  Members
        are linked to their archived alert rows by IVORN.
        """
        if not results:
            return []
        table = CoincidenceRow.__table__
        rows = []
        for key, coinc in results:
            document = coinc.to_document()
            loc = coinc.localization
            ra, dec = getattr(loc, "ra_deg", None), getattr(loc, "dec_deg", None)
            rows.append({
                "ivorn": coinc.id, "result_key": key, "pairing": coinc.pairing,
                "state": coinc.state, "revision": coinc.revision, "supersedes_id": None,
                "reference_time": coinc.reference_time, "ra_deg": ra, "dec_deg": dec,
                "hpx29": nested29(ra, dec) if ra is not None and dec is not None else None,
                "overlap": coinc.spatial_overlap.integral if coinc.spatial_overlap else None,
                "far_hz": coincidence_far_hz(document),
                "engine_version": coinc.engine_version, "config_hash": coinc.config_hash,
                "created_at": coinc.created_time, "document": document})
        # A fixed number of statements whatever the batch size: the engine hands
        # over thousands of results at once when a sky map meets an optical survey.
        with transaction(self.engine) as conn:
            inserted = {ivorn: row_id for row_id, ivorn in insert_ignoring_conflicts(
                conn, table, rows, returning=("id", "ivorn"))}
            new: list[bool] = []
            stored: list[tuple[int, Coincidence]] = []
            for _, coinc in results:
                row_id = inserted.pop(coinc.id, None)  # popped: a repeated IVORN is not new
                new.append(row_id is not None)
                if row_id is not None:
                    stored.append((row_id, coinc))
            if not stored:
                return new
            ivorns = {m.alert_id for _, c in stored for m in c.members}
            alert_ids = dict(conn.execute(select(AlertRow.ivorn, AlertRow.id)
                                          .where(AlertRow.ivorn.in_(sorted(ivorns)))).all())
            for _, coinc in stored:
                missing = [m.alert_id for m in coinc.members if m.alert_id not in alert_ids]
                if missing:
                    raise PermanentError(f"coincidence {coinc.id} names alerts the archive "
                                         f"does not hold: {', '.join(missing)}")
            conn.execute(CoincidenceMember.__table__.insert(), [
                {"coincidence_id": row_id, "alert_id": alert_ids[m.alert_id],
                 "time_offset_s": m.time_offset_s} for row_id, c in stored for m in c.members])
            # Linked after the insert: a revision may supersede one in this same batch.
            wanted = sorted({c.supersedes for _, c in stored if c.supersedes})
            if wanted:
                earlier = dict(conn.execute(select(table.c.ivorn, table.c.id)
                                            .where(table.c.ivorn.in_(wanted))).all())
                links = [{"row_id": row_id, "earlier_id": earlier[c.supersedes]}
                         for row_id, c in stored if c.supersedes in earlier]
                if links:
                    conn.execute(table.update().where(table.c.id == bindparam("row_id"))
                                 .values(supersedes_id=bindparam("earlier_id")), links)
        return new

    def receipts(self, ivorns: Iterable[str]) -> dict[str, dict[str, Any]]:
        """How each alert revision arrived: row id, source, transport, raw hash, time."""
        wanted = sorted(set(ivorns))
        if not wanted:
            return {}
        with transaction(self.engine, readonly=True) as conn:
            rows = conn.execute(select(AlertRow.ivorn, *RECEIPT_COLUMNS)
                                .where(AlertRow.ivorn.in_(wanted)))
            return {r.ivorn: receipt(r) for r in rows}

    def previous_revision(self, source: str, event_id: str, revision: int) -> str | None:
        """IVORN of the newest archived revision of the event below ``revision``."""
        with transaction(self.engine, readonly=True) as conn:
            return conn.execute(
                select(AlertRow.ivorn).where(AlertRow.source == source,
                                             AlertRow.event_id == event_id,
                                             AlertRow.revision < revision)
                .order_by(AlertRow.revision.desc()).limit(1)).scalar_one_or_none()

    def revisions_of(self, events: Iterable[tuple[str, str]]
                     ) -> dict[tuple[str, str], list[tuple[int, str, str, datetime]]]:
        """Every archived revision of these events (source, event id): (revision, alert
        type, IVORN, event time) of each, by event, in no particular order."""
        wanted = sorted(set(events))
        found: dict[tuple[str, str], list[tuple[int, str, str, datetime]]] = {}
        if not wanted:
            return found
        with transaction(self.engine, readonly=True) as conn:
            for keys in _chunks(wanted):
                for r in conn.execute(select(
                        AlertRow.source, AlertRow.event_id, AlertRow.revision,
                        AlertRow.alert_type, AlertRow.ivorn, AlertRow.event_time).where(
                        tuple_(AlertRow.source, AlertRow.event_id).in_(keys))):
                    found.setdefault((r.source, r.event_id), []).append(
                        (r.revision, r.alert_type, r.ivorn, r.event_time))
        return found

    def recall_event(self, key: EventKey) -> tuple[list[Alert], list[Coincidence]]:
        """What a cross-match engine that is not fed every alert reads before it first
        processes an event (``Engine.recall``): the stored coincidences citing any
        revision of the event (``key``: :func:`crossmatch.events.event_key`, so from
        every stream that brought it), and the newest matched revision of the event and
        of every other event those coincidences cite."""
        with transaction(self.engine, readonly=True) as conn:
            ids = [r.id for r in conn.execute(
                select(AlertRow.id, AlertRow.source, AlertRow.facility)
                .where(AlertRow.event_id == key[1]))
                if namespace(r.source, r.facility) == key[0]]
            coincidences: list[Coincidence] = []
            for chunk in _chunks(ids):
                cited = select(CoincidenceMember.coincidence_id).where(
                    CoincidenceMember.alert_id.in_(chunk))
                coincidences += [Coincidence.model_validate(d) for d in conn.execute(
                    select(CoincidenceRow.document).where(CoincidenceRow.id.in_(cited))
                    .order_by(CoincidenceRow.id)).scalars()]
            coincidences = list({c.id: c for c in coincidences}.values())
            events = {key}
            members = sorted({m.alert_id for c in coincidences for m in c.members})
            for chunk in _chunks(members):
                events.update((namespace(r.source, r.facility), r.event_id)
                              for r in conn.execute(
                    select(AlertRow.source, AlertRow.facility, AlertRow.event_id)
                    .where(AlertRow.ivorn.in_(chunk))))
            newest: dict[EventKey, Alert] = {}
            for chunk in _chunks(sorted({event_id for _, event_id in events})):
                for (document,) in conn.execute(select(AlertRow.document).where(
                        AlertRow.event_id.in_(chunk), AlertRow.matched_at.is_not(None))
                        .order_by(AlertRow.id)):  # (arrival order: see supersedes)
                    alert = Alert.model_validate(document)
                    event = event_key(alert)
                    if event in events and (event not in newest or supersedes(
                            order(alert), order(newest[event]))):
                        newest[event] = alert
        return list(newest.values()), coincidences

    def coincidence_row_ids(self, ivorns: Iterable[str]) -> dict[str, int]:
        """Row ids of the stored coincidence revisions among ``ivorns``."""
        wanted = sorted(set(ivorns))
        if not wanted:
            return {}
        with transaction(self.engine, readonly=True) as conn:
            return dict(conn.execute(select(CoincidenceRow.ivorn, CoincidenceRow.id)
                                     .where(CoincidenceRow.ivorn.in_(wanted))).all())

    def skymap(self, sha256: str) -> bytes | None:
        """The sky map file stored under ``sha256``, or None."""
        with transaction(self.engine, readonly=True) as conn:
            return skymap_bytes(conn, sha256)

    # -- reads ----------------------------------------------------------------

    def count_alerts(self) -> int:
        with transaction(self.engine, readonly=True) as conn:
            return conn.execute(select(func.count()).select_from(AlertRow)).scalar_one()

    def count_quarantined(self) -> int:
        with transaction(self.engine, readonly=True) as conn:
            return conn.execute(select(func.count()).select_from(QuarantineEntry)).scalar_one()

    def get_alert(self, ivorn: str) -> dict[str, Any] | None:
        with transaction(self.engine, readonly=True) as conn:
            return conn.execute(select(AlertRow.document)
                                .where(AlertRow.ivorn == ivorn)).scalar_one_or_none()

    def get_alerts(self, ivorns: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Documents of the archived alert revisions among ``ivorns``, by IVORN."""
        with transaction(self.engine, readonly=True) as conn:
            return _documents(conn, ivorns)

    def later_revisions(self, documents: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Matched revisions of the events of ``documents`` newer than the newest given.

        A cone query finds an event by the position of its revisions that have one;
        its retraction usually has none, and must still be seen.
        """
        newest: dict[tuple[str, str], int] = {}
        for d in documents:
            key = (d["source"], d["event_id"])
            newest[key] = max(newest.get(key, -1), d["revision"])
        later: list[dict[str, Any]] = []
        if not newest:
            return later
        with transaction(self.engine, readonly=True) as conn:
            for keys in _chunks(sorted(newest)):
                rows = conn.execute(select(AlertRow.source, AlertRow.event_id,
                                           AlertRow.revision, AlertRow.document).where(
                    tuple_(AlertRow.source, AlertRow.event_id).in_(keys),
                    AlertRow.revision > 0, AlertRow.matched_at.is_not(None)))
                later += [r.document for r in rows
                          if r.revision > newest[(r.source, r.event_id)]]
        return later

    def load_alerts(self, ivorns: Sequence[str]) -> list[Alert]:
        """The archived alert revisions among ``ivorns`` (the engine's document loader)."""
        return [Alert.model_validate(d) for d in self.get_alerts(ivorns).values()]

    def raw_payload(self, sha256: str) -> bytes | None:
        with transaction(self.engine, readonly=True) as conn:
            return conn.execute(select(RawPayload.data)
                                .where(RawPayload.sha256 == sha256)).scalar_one_or_none()

    def list_alerts(self, query: AlertQuery) -> list[dict[str, Any]]:
        """Alert documents matching ``query``, newest event first, whatever their data rights.

        The broker's own read (CLI, cross-match history); the API answers
        callers through :mod:`broker.archive.query` with their
        :class:`~broker.archive.query.Viewer`.
        """
        with transaction(self.engine, readonly=True) as conn:
            return [row.document for row in search_alerts(conn, query, ARCHIVIST).rows]

    def stream_health(self) -> list[dict[str, Any]]:
        """Every stream's and detector's health row, ordered by stream then detector."""
        table = StreamHealth.__table__
        with transaction(self.engine, readonly=True) as conn:
            return [dict(r._mapping) for r in
                    conn.execute(select(table).order_by(table.c.stream, table.c.detector))]

    def set_stream_connected(self, streams: Sequence[str], connected: bool,
                             at: datetime | None = None) -> None:
        """Record whether the listener of ``streams`` holds a connection (as of ``at``).

        Only a change of state moves ``connection_changed_at``; a stream not
        yet seen gets its health row here, so a dashboard lists it before its
        first message.
        """
        at = at or utcnow()
        table = StreamHealth.__table__
        stmt = self._insert(table)
        stmt = stmt.on_conflict_do_update(
            index_elements=[table.c.stream, table.c.detector],
            set_={"connected": stmt.excluded.connected,
                  "connection_changed_at": case(
                      (table.c.connected.is_not_distinct_from(stmt.excluded.connected),
                       table.c.connection_changed_at),
                      else_=stmt.excluded.connection_changed_at)})
        rows = [{"stream": s, "detector": "", "messages_total": 0, "quarantined_total": 0,
                 "updated_at": at, "connected": connected, "connection_changed_at": at}
                for s in sorted(set(streams))]
        if rows:
            with transaction(self.engine) as conn:
                conn.execute(stmt, rows)

    def mark_matched(self, ivorns: Sequence[str], at: datetime, *, number: bool = False,
                     after: int | None = None) -> int | None:
        """Record that the cross-match engine had processed these alert revisions at ``at``.

        With ``number``, also give them the next ``match_seq`` numbers in the order
        given, in the same transaction (the match stage's order, see
        :mod:`broker.runtime.match_stage`); returns the last number given.  ``after`` is the
        number the caller's engine has caught up to: if the archive's newest number
        is another, some worker numbered alerts the caller never matched against, and
        :class:`~alerts_schema.errors.MatchOrderLost` is raised with nothing numbered.
        """
        if not ivorns:
            return None
        if number:
            try:
                return self._number(ivorns, at, after)
            except IntegrityError as exc:  # two rounds numbered at once: the unique index
                raise MatchOrderLost(f"numbering collided: {exc.orig}") from exc
        with transaction(self.engine) as conn:
            for chunk in _chunks(list(ivorns)):
                conn.execute(_MARK_MATCHED, {"ivorns": chunk, "at": at})
        return None

    def _number(self, ivorns: Sequence[str], at: datetime, after: int | None) -> int:
        table = AlertRow.__table__
        with transaction(self.engine) as conn:
            top = conn.execute(select(func.max(table.c.match_seq))).scalar() or 0
            if after is not None and top != after:
                raise MatchOrderLost(f"match_seq is at {top}, not {after}: another worker "
                                     "numbered alerts this one did not match against")
            conn.execute(table.update().where(table.c.ivorn == bindparam("b_ivorn")).values(
                match_seq=bindparam("b_seq"),
                matched_at=func.coalesce(table.c.matched_at, bindparam("b_at"))),
                [{"b_ivorn": ivorn, "b_seq": top + i, "b_at": at}
                 for i, ivorn in enumerate(ivorns, start=1)])
            return top + len(ivorns)

    def acknowledge(self, coincidence_id: int, by: str, *, token_id: int | None = None,
                    note: str | None = None, at: datetime | None = None) -> dict[str, Any]:
        """Record a shifter's acknowledgement of a coincidence (the row must exist: a foreign
        key; callers have already checked the caller may see it); returns the stored row."""
        at = at or utcnow()
        with transaction(self.engine) as conn:
            table = Acknowledgement.__table__
            ack_id = conn.execute(table.insert().values(
                coincidence_id=coincidence_id, acked_by=by, token_id=token_id, acked_at=at,
                note=note).returning(table.c.id)).scalar_one()
        return {"id": ack_id, "coincidence_id": coincidence_id, "acked_by": by,
                "acked_at": at, "note": note}

    def list_quarantine(self, limit: int = 100, source: str | None = None
                        ) -> list[dict[str, Any]]:
        table = QuarantineEntry.__table__
        stmt = select(table).order_by(table.c.id.desc()).limit(limit)
        if source:
            stmt = stmt.where(table.c.source == source)
        with transaction(self.engine, readonly=True) as conn:
            return [
                {"id": q.id, "source": q.source, "reason": q.reason,
                 "error_class": q.error_class, "received_at": q.received_at.isoformat(),
                 "raw_sha256": q.raw_sha256, "truncated": q.truncated}
                for q in conn.execute(stmt)]

    def get_coincidence(self, ivorn: str) -> dict[str, Any] | None:
        with transaction(self.engine, readonly=True) as conn:
            return conn.execute(select(CoincidenceRow.document)
                                .where(CoincidenceRow.ivorn == ivorn)).scalar_one_or_none()

    def list_coincidences(self, limit: int = 100, *, since: datetime | None = None,
                          until: datetime | None = None, pairing: Sequence[str] = (),
                          state: Sequence[str] = (), far_max_hz: float | None = None
                          ) -> list[dict[str, Any]]:
        """Coincidence revisions, newest first: reference time in [since, until], one of
        ``pairing`` and ``state`` when given, smallest FAR at most ``far_max_hz`` (Hz)."""
        query = select(CoincidenceRow.document)
        if since is not None:
            query = query.where(CoincidenceRow.reference_time >= since)
        if until is not None:
            query = query.where(CoincidenceRow.reference_time <= until)
        if pairing:
            query = query.where(CoincidenceRow.pairing.in_(list(pairing)))
        if state:
            query = query.where(CoincidenceRow.state.in_(list(state)))
        if far_max_hz is not None:
            query = query.where(CoincidenceRow.far_hz <= far_max_hz)
        with transaction(self.engine, readonly=True) as conn:
            return list(conn.execute(query.order_by(CoincidenceRow.created_at.desc(),
                                                    CoincidenceRow.id.desc())
                                     .limit(limit)).scalars())


IN_CHUNK = 1000
"""Most values in one ``IN (...)`` (SQLite allows 32,766 bound variables a statement)."""


def _chunks(values: Sequence[Any]) -> Iterable[Sequence[Any]]:
    """``values`` in slices of at most ``IN_CHUNK``."""
    return (values[i:i + IN_CHUNK] for i in range(0, len(values), IN_CHUNK))


def _documents(conn: Connection, ivorns: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Alert documents by IVORN, however many are asked for."""
    found: dict[str, dict[str, Any]] = {}
    for wanted in _chunks(sorted(set(ivorns))):
        found.update(conn.execute(select(AlertRow.ivorn, AlertRow.document).where(
            AlertRow.ivorn.in_(wanted))).all())
    return found


def window_documents(conn: Connection, retention: tuple[float, Mapping[str, float]], *,
                     numbered: bool, matched: bool | None = None
                     ) -> tuple[list[Alert], list[Coincidence]]:
    """What a restarted cross-match engine reloads: :func:`window_alerts`, and the
    coincidences created since the earliest time those reach back to (members older than
    their retention the engine reads back itself, through its loader)."""
    alerts = window_alerts(conn, retention, numbered=numbered, matched=matched)
    earliest = utcnow() - timedelta(seconds=max([retention[0], *retention[1].values()]))
    coincidences = list(conn.execute(select(CoincidenceRow.document).where(
        CoincidenceRow.created_at >= earliest).order_by(CoincidenceRow.id)).scalars())
    return alerts, [Coincidence.model_validate(d) for d in coincidences]


def window_alerts(conn: Connection, retention: tuple[float, Mapping[str, float]], *,
                  numbered: bool, matched: bool | None = None) -> list[Alert]:
    """The alerts of a cross-match engine's live window.

    ``retention`` is the engine's ``retention_by_messenger()``: alerts with
    event time in the last ``retention[0]`` seconds, or in the last
    ``retention[1][messenger]`` for the messengers held longer;
    ``numbered``: only those a match worker has numbered; ``matched``: only those
    matched (True) or not (False: archived, then the process died before matching
    them, or their sky map arrived since), whatever else.
    """
    now = utcnow()
    since = now - timedelta(seconds=retention[0])
    longer = {m: now - timedelta(seconds=s) for m, s in retention[1].items()}
    window = or_(AlertRow.event_time >= since,
                 *(and_(AlertRow.messenger == m, AlertRow.event_time >= t)
                   for m, t in longer.items()))
    query = select(AlertRow.ivorn, AlertRow.document).where(window)
    if numbered:
        query = query.where(AlertRow.match_seq.is_not(None))
    if matched is not None:
        query = query.where(AlertRow.matched_at.is_not(None) if matched
                            else AlertRow.matched_at.is_(None))
    alerts: dict[str, Any] = dict(conn.execute(query).all())
    return [Alert.model_validate(d) for d in alerts.values()]


def _index_positions(rows: list[dict[str, Any]]) -> None:
    """Set ``hpx29`` of every row with a position, in one vectorized HEALPix call.

    One call per batch: healpy's per-call overhead is ~0.3 ms, far more than
    the per-position cost.
    """
    located = [r for r in rows if r["ra_deg"] is not None and r["dec_deg"] is not None]
    if not located:
        return
    pixels = nested29(np.array([r["ra_deg"] for r in located]),
                      np.array([r["dec_deg"] for r in located]))
    for row, pixel in zip(located, np.atleast_1d(pixels), strict=True):
        row["hpx29"] = int(pixel)


def _delete_marks(conn: Connection, marks: Iterable[tuple[str, str]]) -> None:
    """Delete in-flight marks (raw hash, owner), in key order (no deadlocks between writers)."""
    by_owner: dict[str, list[str]] = {}
    for sha, owner in sorted(set(marks)):
        by_owner.setdefault(owner, []).append(sha)
    for owner, hashes in sorted(by_owner.items()):
        for chunk in _chunks(hashes):
            conn.execute(_DELETE_MARKS, {"owner": owner, "hashes": chunk})


def _reason(err: Exception) -> str:
    return getattr(err, "reason", None) or str(err) or type(err).__name__


def refusal_sha256(source: str, raw_sha256: str, reason: str) -> str:
    """The key of one quarantine row: SHA-256 of its stream, raw payload hash and reason.

    The same bytes refused again on the same stream for the same reason are the
    same refusal (migration 0014 computes it the same way for older rows).
    """
    return hashlib.sha256("\0".join((source, raw_sha256, reason)).encode(
        "utf-8", "surrogatepass")).hexdigest()
