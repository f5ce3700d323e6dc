"""The archive on SQLite and PostgreSQL: migrations, idempotent ingest, queries."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, inspect, select

from alerts_schema.errors import ArchiveUnavailable, PermanentError
from alerts_schema.synthetic import alert_documents
from broker.archive import migrate
from broker.archive.models import AlertRow, Base, QuarantineEntry, RawPayload
from broker.archive.store import AlertQuery, Archive
from broker.runtime.ingest import Ingestor
from crossmatch.healpix import angular_separation_deg
from listeners.envelope import RawMessage, sha256_hex
from tests.conftest import mmbroker


def raw_docs(docs: list[dict], source: str = "file") -> list[RawMessage]:
    return [RawMessage(source, json.dumps(d).encode()) for d in docs]


# -- migrations -------------------------------------------------------------------

def test_migrations_up_from_empty_match_the_models(db_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from broker.archive.db import make_engine

    engine = make_engine(db_url)
    assert migrate.current_revision(engine) is None
    migrate.upgrade(engine)
    assert migrate.is_current(engine)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}),
                                Base.metadata)
        tables = set(inspect(conn).get_table_names())
    assert diff == []
    assert set(Base.metadata.tables) <= tables
    migrate.downgrade(engine, "base")
    with engine.connect() as conn:
        assert set(inspect(conn).get_table_names()) <= {"alembic_version"}
    migrate.upgrade(engine)  # and back up again
    assert migrate.is_current(engine)
    engine.dispose()


def test_db_upgrade_command(db_url: str) -> None:
    out = mmbroker("--db", db_url, "db", "upgrade").stdout
    assert f"revision {migrate.head_revision()}" in out
    head = migrate.head_revision()
    assert f"current: {head}" in mmbroker("--db", db_url, "db", "current").stdout


# -- idempotent ingest --------------------------------------------------------------

def test_same_alert_twice_is_one_row(ingestor: Ingestor, archive: Archive) -> None:
    docs = alert_documents(20, seed=1)
    first = ingestor.ingest(raw_docs(docs))
    assert [o.status for o in first] == ["archived"] * 20
    second = ingestor.ingest(raw_docs(docs))
    assert [o.status for o in second] == ["duplicate"] * 20
    assert {o.alert_id for o in first} == {o.alert_id for o in second}
    assert archive.count_alerts() == 20
    assert archive.count_quarantined() == 0


def test_repeat_within_one_batch(ingestor: Ingestor, archive: Archive) -> None:
    doc = alert_documents(1, seed=2)[0]
    outcomes = ingestor.ingest(raw_docs([doc, doc, doc]))
    assert sorted(o.status for o in outcomes) == ["archived", "duplicate", "duplicate"]
    assert archive.count_alerts() == 1


def test_other_payload_same_key_is_quarantined_not_overwritten(
        ingestor: Ingestor, archive: Archive) -> None:
    doc = alert_documents(1, seed=4)[0]
    ingestor.ingest(raw_docs([doc]))
    changed = {**doc, "far_hz": 1e-3}
    (outcome,) = ingestor.ingest(raw_docs([changed]))
    assert outcome.status == "quarantined"
    assert "conflicting payload" in outcome.reason
    stored = archive.get_alert(f"ivo://test.mmbroker/{doc['source']}#{doc['event_id']}-0")
    assert stored["far_hz"] == doc["far_hz"]
    (entry,) = archive.list_quarantine()
    assert entry["error_class"] == "IngestConflict"
    assert archive.raw_payload(entry["raw_sha256"]) == json.dumps(changed).encode()


def test_new_revision_is_a_new_row(ingestor: Ingestor, archive: Archive) -> None:
    doc = alert_documents(1, seed=5)[0]
    update = {**doc, "revision": 1, "alert_type": "update", "id": doc["id"][:-2] + "-1"}
    outcomes = ingestor.ingest(raw_docs([doc, update]))
    assert [o.status for o in outcomes] == ["archived", "archived"]
    assert archive.count_alerts() == 2


def test_archived_alert_keeps_raw_bytes_hash_and_columns(
        ingestor: Ingestor, archive: Archive) -> None:
    doc = alert_documents(1, seed=6)[0]
    (raw,) = raw_docs([doc])
    ingestor.ingest([raw])
    with archive.engine.connect() as conn:
        row = conn.execute(select(AlertRow)).one()
        payload = conn.execute(select(RawPayload.data)).scalar_one()
    assert payload == raw.data and row.raw_sha256 == raw.sha256
    assert row.event_time == datetime.fromisoformat(doc["trigger_time"].replace("Z", "+00:00"))
    assert row.event_time.tzinfo is UTC
    assert row.ra_deg == pytest.approx(doc["localization"]["ra_deg"])
    import healpy
    assert row.hpx29 == healpy.ang2pix(1 << 29, row.ra_deg, row.dec_deg, nest=True, lonlat=True)
    assert row.document["raw_sha256"] == raw.sha256
    assert row.document["received_time"].endswith("Z")


def test_bad_input_is_quarantined_with_its_bytes(ingestor: Ingestor, archive: Archive) -> None:
    msgs = [RawMessage("gcn.notices.x", b"{not json"), RawMessage("gcn.notices.x", b"\xff\xfe")]
    outcomes = ingestor.ingest(msgs)
    assert [o.status for o in outcomes] == ["quarantined", "quarantined"]
    entries = archive.list_quarantine()
    assert {e["raw_sha256"] for e in entries} == {m.sha256 for m in msgs}
    for m in msgs:
        assert archive.raw_payload(m.sha256) == m.data


def test_raw_bytes_are_committed_before_parsing(
        ingestor: Ingestor, archive: Archive, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash between parsing and archiving still leaves the raw bytes stored."""
    def down(*_args: object, **_kwargs: object) -> None:
        raise ArchiveUnavailable("simulated outage after the raw commit")

    monkeypatch.setattr(archive, "store_results", down)
    doc = alert_documents(1, seed=7)[0]
    (raw,) = raw_docs([doc])
    with pytest.raises(ArchiveUnavailable):
        ingestor.ingest([raw])
    assert archive.raw_payload(raw.sha256) == raw.data
    assert archive.count_alerts() == 0


def test_normalizer_crash_is_quarantined(ingestor: Ingestor, archive: Archive,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from listeners import registry

    def boom(*_args: object) -> None:
        raise ZeroDivisionError("bug in a normalizer")

    monkeypatch.setattr(registry, "normalize", boom)
    (outcome,) = ingestor.ingest(raw_docs(alert_documents(1, seed=8)))
    assert outcome.status == "quarantined"
    assert "ZeroDivisionError" in outcome.reason


_WRITER = """
import json, sys
from pathlib import Path
from broker.archive.store import Archive
from listeners.envelope import RawMessage
from broker.runtime.ingest import Ingestor
url, folder = sys.argv[1], Path(sys.argv[2])
archive = Archive.open(url)
ing = Ingestor(archive, authority="test.mmbroker")
files = sorted(folder.glob("*.json"))
counts = {"archived": 0, "duplicate": 0, "quarantined": 0}
for start in range(0, len(files), 25):
    for o in ing.ingest([RawMessage("file", p.read_bytes()) for p in files[start:start + 25]]):
        counts[o.status] += 1
print(json.dumps(counts))
"""


@pytest.mark.timeout(300)
def test_two_processes_ingesting_the_same_1000_alerts(db_url: str, tmp_path: Path) -> None:
    Archive.open(db_url).close()  # migrate once, as `mmbroker db upgrade` would
    folder = tmp_path / "alerts"
    folder.mkdir()
    for i, doc in enumerate(alert_documents(1000, seed=11)):
        (folder / f"{i:04d}.json").write_text(json.dumps(doc))
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, db_url, str(folder)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert sum(r["archived"] for r in results) == 1000
    assert sum(r["duplicate"] for r in results) == 1000
    assert all(r["quarantined"] == 0 for r in results)
    archive = Archive.open(db_url, upgrade=False)
    with archive.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(AlertRow)).scalar_one() == 1000
        assert conn.execute(select(func.count()).select_from(QuarantineEntry)).scalar_one() == 0
    archive.close()


# -- queries ------------------------------------------------------------------------

@pytest.fixture
def populated(ingestor: Ingestor, archive: Archive) -> list[dict]:
    docs = alert_documents(600, seed=21, span_s=30 * 86400)
    for start in range(0, len(docs), 200):
        ingestor.ingest(raw_docs(docs[start:start + 200]))
    return docs


def _brute(docs: list[dict], ra: float, dec: float, radius: float,
           since: datetime | None = None, until: datetime | None = None) -> set[str]:
    out = set()
    for d in docs:
        t = datetime.fromisoformat(d["trigger_time"].replace("Z", "+00:00"))
        if (since and t < since) or (until and t > until):
            continue
        loc = d["localization"]
        if angular_separation_deg(ra, dec, loc["ra_deg"], loc["dec_deg"]) <= radius:
            out.add(d["event_id"])
    return out


@pytest.mark.parametrize(("ra", "dec", "radius"), [
    (10.0, 20.0, 15.0), (359.5, 0.0, 12.0), (0.2, -30.0, 20.0),  # RA wrap-around
    (123.0, 89.0, 10.0), (300.0, -88.0, 25.0),                   # the poles
    (200.0, 10.0, 0.5), (45.0, 45.0, 90.0),
])
def test_cone_query_matches_brute_force(archive: Archive, populated: list[dict], ra: float,
                                        dec: float, radius: float) -> None:
    got = archive.list_alerts(AlertQuery(cone=(ra, dec, radius), limit=10_000))
    assert {d["event_id"] for d in got} == _brute(populated, ra, dec, radius)


def test_cone_and_time_query_with_limit(archive: Archive, populated: list[dict]) -> None:
    since = datetime(2026, 1, 5, tzinfo=UTC)
    until = since + timedelta(days=10)
    expected = _brute(populated, 100.0, 0.0, 60.0, since, until)
    got = archive.list_alerts(AlertQuery(cone=(100.0, 0.0, 60.0), since=since, until=until,
                                         limit=10_000))
    assert {d["event_id"] for d in got} == expected and len(expected) > 5
    times = [d["trigger_time"] for d in got]
    assert times == sorted(times, reverse=True)
    first3 = archive.list_alerts(AlertQuery(cone=(100.0, 0.0, 60.0), since=since, until=until,
                                            limit=3))
    assert [d["event_id"] for d in first3] == [d["event_id"] for d in got[:3]]


def test_filters(archive: Archive, populated: list[dict]) -> None:
    neutrinos = archive.list_alerts(AlertQuery(messenger="neutrino", limit=10_000))
    assert len(neutrinos) == sum(d["messenger"] == "neutrino" for d in populated)
    assert all(d["messenger"] == "neutrino" for d in neutrinos)
    fermi = archive.list_alerts(AlertQuery(facility="Fermi", far_max_hz=1e-8, limit=10_000))
    assert {d["event_id"] for d in fermi} == {
        d["event_id"] for d in populated if d["facility"] == "Fermi" and d["far_hz"] <= 1e-8}
    assert archive.list_alerts(AlertQuery(role="test")) == []


def test_hpx29_vectorized_agrees_with_scalar() -> None:
    from crossmatch.healpix import nested29

    rng = np.random.default_rng(0)
    ra, dec = rng.uniform(0, 360, 50), rng.uniform(-90, 90, 50)
    vec = nested29(ra, dec)
    assert [nested29(float(a), float(b)) for a, b in zip(ra, dec, strict=True)] == list(vec)


# -- sky maps, heartbeats and stream health ------------------------------------------

def test_skymaps_heartbeats_and_stream_health(archive: Archive) -> None:
    from alerts_schema import Alert
    from broker.archive.models import Skymap
    from listeners.base import Heartbeat, Normalized, SkymapFile

    sky = SkymapFile(b"SIMPLE  = T fake multi-order map", "multiorder", area_90_deg2=31.6)
    doc = alert_documents(1, seed=30)[0]
    doc["localization"] = {"kind": "skymap", "skymap_sha256": sky.sha256,
                           "format": "multiorder"}
    alert = Alert.model_validate(doc)
    t0 = datetime(2026, 11, 21, 3, 0, tzinfo=UTC)
    raws = [RawMessage("igwn.gwalert", b"alert 1", received_at=t0),
            RawMessage("igwn.gwalert", b"alert 1 again, other transport",
                       received_at=t0 + timedelta(seconds=5)),
            RawMessage("snews", b"hb", received_at=t0 + timedelta(seconds=9)),
            RawMessage("snews", b"bad", received_at=t0 + timedelta(seconds=10))]
    archive.store_raw(raws)
    hb_time = t0 + timedelta(seconds=8)
    outcomes = archive.store_results([
        (raws[0], Normalized(alerts=(alert,), skymaps=(sky,))),
        (raws[1], Normalized(skymaps=(sky,), heartbeats=(
            Heartbeat("snews", "Super-K", hb_time - timedelta(seconds=60), "ON"),))),
        (raws[2], Normalized(heartbeats=(Heartbeat("snews", "Super-K", hb_time, "OFF"),))),
        (raws[3], PermanentError("bad")),
    ])
    assert [o.status for o in outcomes] == ["heartbeat", "heartbeat", "archived", "quarantined"]
    with archive.engine.connect() as conn:
        (stored,) = conn.execute(select(Skymap.sha256, Skymap.area_90_deg2)).all()
    assert stored == (sky.sha256, 31.6)
    health = {(h["stream"], h["detector"]): h for h in archive.stream_health()}
    gw = health[("igwn.gwalert", "")]
    assert gw["messages_total"] == 2 and gw["last_message_at"] == t0 + timedelta(seconds=5)
    assert health[("snews", "")]["quarantined_total"] == 1
    sk = health[("snews", "Super-K")]
    assert sk["last_heartbeat_at"] == hb_time and sk["heartbeat_status"] == "OFF"
    # an older heartbeat arriving late does not move the clock back
    late = RawMessage("snews", b"late hb", received_at=t0 + timedelta(seconds=20))
    archive.store_raw([late])
    archive.store_results([(late, Normalized(heartbeats=(
        Heartbeat("snews", "Super-K", hb_time - timedelta(hours=1), "ON"),)))])
    sk = {(h["stream"], h["detector"]): h for h in archive.stream_health()}[("snews", "Super-K")]
    assert sk["last_heartbeat_at"] == hb_time and sk["heartbeat_status"] == "OFF"


def test_same_content_in_other_bytes_is_a_duplicate(ingestor: Ingestor,
                                                    archive: Archive) -> None:
    """The same alert re-encoded (other whitespace, key order) is one alert, not a conflict."""
    doc = alert_documents(1, seed=31)[0]
    compact = json.dumps(doc, separators=(",", ":")).encode()
    pretty = json.dumps(dict(reversed(list(doc.items()))), indent=2).encode()
    assert compact != pretty
    outcomes = ingestor.ingest([RawMessage("file", compact), RawMessage("mmbroker.peer", pretty)])
    assert [o.status for o in outcomes] == ["archived", "duplicate"]
    assert archive.raw_payload(sha256_hex(pretty)) == pretty  # both arrivals kept


def test_migration_0003_backfills_content_hashes(db_url: str) -> None:
    from broker.archive.db import make_engine
    from broker.archive.store import content_sha256

    engine = make_engine(db_url)
    migrate.upgrade(engine, "0002")
    archive = Archive(engine)
    doc = alert_documents(1, seed=32)[0]
    raw = RawMessage("old", json.dumps(doc).encode())
    archive.store_raw([raw])
    from alerts_schema import Alert
    from broker.archive.store import alert_row_values

    values = alert_row_values(Alert.model_validate(doc), raw)
    values.pop("content_sha256")
    values.pop("token_id")  # columns the 0002 schema does not have yet
    with engine.begin() as conn:
        conn.execute(AlertRow.__table__.insert().values(
            **{k: v for k, v in values.items() if k != "hpx29"}))
    migrate.upgrade(engine)
    with engine.connect() as conn:
        stored, document = conn.execute(select(AlertRow.content_sha256,
                                               AlertRow.document)).one()
    assert stored == content_sha256(document)
    engine.dispose()


def test_a_row_the_database_refuses_costs_one_message(
        ingestor: Ingestor, archive: Archive, monkeypatch: pytest.MonkeyPatch) -> None:
    """A permanent database error on one alert quarantines that message, not the batch."""
    from sqlalchemy.exc import DataError

    from broker.archive import store as archive_module

    docs = alert_documents(5, seed=41)
    poisoned = docs[2]["event_id"]
    real = archive_module.alert_row_values

    def refuse_one(alert, raw):  # type: ignore[no-untyped-def]
        if alert.event_id == poisoned:
            raise DataError("INSERT", {}, ValueError("value out of range for type"))
        return real(alert, raw)

    monkeypatch.setattr(archive_module, "alert_row_values", refuse_one)
    outcomes = ingestor.ingest(raw_docs(docs))
    assert sorted(o.status for o in outcomes) == ["archived"] * 4 + ["quarantined"]
    (entry,) = archive.list_quarantine()
    assert "the archive refused it" in entry["reason"] and "out of range" in entry["reason"]
    assert archive.count_alerts() == 4


def test_coincidences_are_stored_once_with_their_members(archive: Archive) -> None:
    import alerts_schema
    from alerts_schema import Coincidence

    ingestor = Ingestor(archive, authority="local.mmbroker")
    examples = {p.name: p.read_bytes() for p in alerts_schema.example_paths("alert")}
    ingestor.ingest([RawMessage("file", examples[name]) for name in (
        "alert-gw-cbc-skymap.example.json", "alert-grb-gbm.example.json")])
    coinc = Coincidence.model_validate_json(
        alerts_schema.example_paths("coincidence")[0].read_bytes())
    assert archive.store_coincidences([("k" * 64, coinc)]) == [True]
    assert archive.store_coincidences([("k" * 64, coinc)]) == [False]  # same result key
    (stored,) = archive.list_coincidences()
    assert stored["id"] == coinc.id and len(stored["members"]) == 2
    from broker.archive.models import CoincidenceMember
    with archive.engine.connect() as conn:
        offsets = sorted(r.time_offset_s for r in conn.execute(select(CoincidenceMember)))
    assert offsets == [0.0, 1.71]


def test_coincidence_revisions_link_to_what_they_supersede(archive: Archive) -> None:
    import alerts_schema
    from alerts_schema import Coincidence
    from broker.archive.models import CoincidenceRow

    ingestor = Ingestor(archive, authority="local.mmbroker")
    examples = {p.name: p.read_bytes() for p in alerts_schema.example_paths("alert")}
    ingestor.ingest([RawMessage("file", examples[name]) for name in (
        "alert-gw-cbc-skymap.example.json", "alert-grb-gbm.example.json")])
    first = Coincidence.model_validate_json(
        alerts_schema.example_paths("coincidence")[0].read_bytes())
    revisions = [first]
    for n in (1, 2, 3):
        revisions.append(first.model_copy(update={
            "id": f"{first.id}-r{n}", "revision": first.revision + n, "state": "updated",
            "supersedes": revisions[-1].id}))
    # The first two in one batch (the second supersedes one stored in the same
    # call), a repeat of the second and the third in the next, the last alone.
    assert archive.store_coincidences([("a" * 64, revisions[0]),
                                       ("b" * 64, revisions[1])]) == [True, True]
    assert archive.store_coincidences([("b" * 64, revisions[1]),
                                       ("c" * 64, revisions[2])]) == [False, True]
    assert archive.store_coincidences([("d" * 64, revisions[3]),
                                       ("e" * 64, revisions[3])]) == [True, False]
    with archive.engine.connect() as conn:
        rows = {r.ivorn: r for r in conn.execute(select(CoincidenceRow))}
    assert len(rows) == 4
    assert rows[first.id].supersedes_id is None
    for earlier, later in itertools.pairwise(revisions):
        assert rows[later.id].supersedes_id == rows[earlier.id].id
    assert all(len(c["members"]) == 2 for c in archive.list_coincidences())
