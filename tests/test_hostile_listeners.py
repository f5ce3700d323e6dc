"""Issue 14, items 5, 6 and 8: messages that kill, bad values, hostile IVORN parts.

Every hostile case goes through the real ingest path (``Ingestor.ingest``, or
the ``mmbroker`` console script, or a Kafka listener against tansu) on SQLite
and PostgreSQL, and must end in quarantine with its reason.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.archive.store import Archive
from broker.runtime.ingest import DIED_REASON, Ingestor, _start_ticks, owner_alive, process_identity
from listeners import avro
from listeners.base import MessageMeta
from listeners.envelope import RawMessage
from tests.conftest import mmbroker
from tests.servers import FAST_JOIN_ENV, produce, stop_process, tansu, wait_for

DATA = Path(__file__).resolve().parent / "data"
EXAMPLES = Path(__file__).resolve().parent.parent / "alerts_schema" / "examples"


# -- hostile Avro ----------------------------------------------------------------------

def _long(n: int) -> bytes:
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        if not n:
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


def _bytes(b: bytes) -> bytes:
    return _long(len(b)) + b


def container(schema: Any, body: bytes, count: int = 1) -> bytes:
    """An Avro object container written by hand (fastavro refuses to write this data)."""
    sync = b"0123456789abcdef"
    meta = _long(1) + _bytes(b"avro.schema") + _bytes(json.dumps(schema).encode()) + _long(0)
    return b"Obj\x01" + meta + sync + _long(count) + _long(len(body)) + body + sync


def recursive_container(depth: int = 100_000, name: str = "ztf.alert") -> bytes:
    """A record whose only field is an optional copy of itself, nested ``depth`` deep:
    about 100 kB that makes fastavro's C decoder overflow the stack (SIGSEGV)."""
    schema = {"type": "record", "name": name,
              "fields": [{"name": "n", "type": ["null", name]}]}
    return container(schema, b"\x02" * depth + b"\x00")


def deep_container(levels: int) -> bytes:
    """A schema of ``levels`` nested arrays (not recursive; within the JSON depth limit),
    and one datum of it (an empty array)."""
    inner: Any = "int"
    for _ in range(levels):
        inner = {"type": "array", "items": inner}
    schema = {"type": "record", "name": "ztf.alert", "fields": [{"name": "x", "type": inner}]}
    return container(schema, b"\x00")


def test_the_hostile_container_is_what_fastavro_reads() -> None:
    """The control: fastavro parses the hand-written container (small depth decodes)."""
    records = list(fastavro.reader(io.BytesIO(recursive_container(depth=3))))
    assert records == [{"n": {"n": {"n": {"n": None}}}}]


HOSTILE_AVRO = {
    "recursive-on-ztf-topic": ("ztf_20250302_programid1", recursive_container(),
                               "recursive"),
    "recursive-from-file": ("file", recursive_container(), "recursive"),
    "recursive-on-lsst-topic": ("lsst-alerts", recursive_container(name="lsst.v7_4.alert"),
                                "recursive"),
    "recursive-on-lvk-topic": ("igwn.gwalert", recursive_container(name="igwn.alerts.v1_0.Alert"),
                               "recursive"),
    "too-deep": ("ztf_20250302_programid1", deep_container(avro.MAX_SCHEMA_DEPTH + 5),
                 "nests deeper"),
    "foreign-family-on-ztf-topic": (
        "ztf_20250302_programid1",
        container({"type": "record", "name": "evil.Thing",
                   "fields": [{"name": "x", "type": "int"}]}, b"\x02"),
        "not a ZTF alert"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_AVRO))
def test_hostile_writer_schemas_are_refused_unread(name: str, ingestor: Ingestor,
                                                   archive: Archive) -> None:
    source, data, expected = HOSTILE_AVRO[name]
    avro.CACHE.clear()
    for _ in range(3):  # the verdict is cached: one parse for three messages
        (outcome,) = ingestor.ingest([RawMessage(source, data)])
        assert outcome.status == "quarantined"
        assert expected in outcome.reason, outcome.reason
    assert avro.CACHE.misses == 1
    assert archive.count_alerts() == 0
    # Refused three times for the same reason: kept once (quarantine is idempotent).
    (entry,) = archive.list_quarantine()
    assert expected in entry["reason"]
    assert archive.raw_payload(entry["raw_sha256"]) == data


def test_real_schemas_pass_the_check() -> None:
    for path in sorted((DATA / "ztf").glob("*.avro")) + sorted((DATA / "rubin").glob("*.avro")):
        avro.container_schema(path.read_bytes(), avro.SchemaCache())


# -- a process that really dies ----------------------------------------------------------

def _hole(tmp_path: Path) -> dict[str, str]:
    """Environment for a child whose first line of defence has a hole: the schema check
    is switched off (sitecustomize), so the hostile container really kills it."""
    hole = tmp_path / "hole"
    hole.mkdir(exist_ok=True)
    (hole / "sitecustomize.py").write_text(
        "import listeners.avro as _avro\n"
        "_avro._refuse_deep_or_recursive = lambda parsed, named: None\n")
    return {"PYTHONPATH": str(hole), "MMBROKER_LOG_LEVEL": "WARNING"}


@pytest.mark.timeout(300)
def test_mmbroker_ingest_dies_then_quarantines_at_restart(db_url: str, tmp_path: Path) -> None:
    Archive.open(db_url).close()
    hostile = tmp_path / "hostile.avro"
    hostile.write_bytes(recursive_container())
    env = _hole(tmp_path)
    died = mmbroker("--db", db_url, "ingest", str(hostile), env=env, check=False, timeout=120)
    assert died.returncode == -signal.SIGSEGV, (died.returncode, died.stderr[-2000:])
    archive = Archive.open(db_url, upgrade=False)
    try:
        assert archive.count_quarantined() == 0  # nothing was recorded but the mark
        assert len(archive.inflight_marks()) == 1
        again = mmbroker("--db", db_url, "ingest", str(hostile), env=env, timeout=180)
        assert "died while normalizing" in again.stdout + again.stderr
        entries = archive.list_quarantine()
        assert entries and all(e["reason"].startswith(DIED_REASON) for e in entries)
        assert {e["error_class"] for e in entries} == {"ProcessDied"}
        assert archive.inflight_marks() == []
        assert archive.count_alerts() == 0
        # Without the hole, the first line refuses it by its schema.
        fixed = mmbroker("--db", db_url, "ingest", str(hostile), timeout=120)
        assert fixed.returncode == 0
    finally:
        archive.close()


def _owner_of(proc: subprocess.Popen[bytes]) -> str:
    host, boot, _pid, _ticks = process_identity().rsplit(":", 3)
    return f"{host}:{boot}:{proc.pid}:{_start_ticks(proc.pid)}"


def test_owner_liveness() -> None:
    now = datetime.now(UTC)
    assert owner_alive(process_identity(), now)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        owner = _owner_of(sleeper)
        assert owner_alive(owner, now)
        host, boot, pid, _ticks = owner.rsplit(":", 3)
        assert not owner_alive(f"{host}:{boot}:{pid}:1", now), "a reused pid is not the owner"
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not owner_alive(owner, now)
    assert owner_alive("elsewhere:b:1:1", now - timedelta(seconds=30), lease_s=600)
    assert not owner_alive("elsewhere:b:1:1", now - timedelta(seconds=700), lease_s=600)


def _good_trigger(event_id: str) -> bytes:
    doc = json.loads((EXAMPLES / "trigger-track-single.example.json").read_text())
    doc["event_id"] = event_id
    return json.dumps(doc).encode()


def test_live_workers_marks_are_left_alone(archive: Archive, ingestor: Ingestor) -> None:
    """Another live worker's mark on the same bytes is not a death: normalized as usual."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        raw = RawMessage("detector", _good_trigger("live-1"))
        archive.store_raw([raw], owner=_owner_of(sleeper))
        (outcome,) = ingestor.ingest([raw])
        assert outcome.status == "archived"
        assert [m["owner"] for m in archive.inflight_marks()] == [_owner_of(sleeper)]
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_dead_workers_innocent_message_is_archived(archive: Archive) -> None:
    """A worker killed for another reason mid-batch: its messages are probed in a child,
    survive, and are archived when they come again, not quarantined."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    owner = _owner_of(gone)
    gone.wait()
    raw = RawMessage("detector", _good_trigger("bystander-1"))
    archive.store_raw([raw], owner=owner)
    fresh = Ingestor(archive, authority="test.mmbroker", retry_delays_s=(0.05,))
    fresh._recovered = True  # the redelivery path, not the start-up sweep
    (outcome,) = fresh.ingest([raw])
    assert outcome.status == "archived", outcome.reason
    assert archive.count_quarantined() == 0
    assert archive.inflight_marks() == []


@pytest.mark.timeout(300)
def test_kafka_listener_dies_restarts_and_is_not_stuck(db_url: str, tmp_path: Path) -> None:
    """The listener, with the first line switched off, really dies on the hostile message;
    restarted, it quarantines that message and archives the good one behind it."""
    Archive.open(db_url).close()
    archive = Archive.open(db_url, upgrade=False)
    with tansu(tmp_path) as kafka:
        topic = "ztf_hostile"
        produce(kafka, topic, [recursive_container(), _good_trigger("after-hostile")])
        exe = Path(sys.executable).with_name("mmbroker")
        env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka, **FAST_JOIN_ENV,
               **_hole(tmp_path)}

        def start() -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                [str(exe), "--db", db_url, "listen", "kafka", "--topic", topic,
                 "--group-id", "hostile", "--from-beginning"], env=env,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        proc = start()
        try:
            assert proc.wait(120) == -signal.SIGSEGV
            assert archive.count_alerts() == 0 and archive.count_quarantined() == 0
            proc = start()
            assert wait_for(lambda: archive.count_alerts() == 1
                            and archive.count_quarantined() >= 1, 150), "listener stuck"
            produce(kafka, topic, [_good_trigger("later")])
            assert wait_for(lambda: archive.count_alerts() == 2, 60), "listener stuck"
            assert proc.poll() is None
        finally:
            stop_process(proc)
    reasons = {e["reason"] for e in archive.list_quarantine()}
    assert reasons and all(r.startswith(DIED_REASON) for r in reasons), reasons
    archive.close()


@pytest.mark.timeout(240)
def test_kafka_listener_refuses_the_hostile_schema(db_url: str, tmp_path: Path) -> None:
    """With the first line in place the listener never dies: hostile quarantined, good
    archived."""
    Archive.open(db_url).close()
    archive = Archive.open(db_url, upgrade=False)
    with tansu(tmp_path) as kafka:
        topic = "ztf_hostile2"
        produce(kafka, topic, [recursive_container(), _good_trigger("after-hostile-2")])
        exe = Path(sys.executable).with_name("mmbroker")
        proc = subprocess.Popen(
            [str(exe), "--db", db_url, "listen", "kafka", "--topic", topic,
             "--group-id", "hostile2", "--from-beginning"],
            env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka, **FAST_JOIN_ENV,
                 "MMBROKER_LOG_LEVEL": "WARNING"},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            assert wait_for(lambda: archive.count_alerts() == 1
                            and archive.count_quarantined() == 1, 120)
            assert proc.poll() is None
        finally:
            stop_process(proc)
    (entry,) = archive.list_quarantine()
    assert "recursive" in entry["reason"]
    archive.close()


# -- item 6: one range rule, never repaired ------------------------------------------------

def _gcn(**change: Any) -> bytes:
    doc = json.loads((DATA / "gcn" / "notices__einstein_probe__wxt__alert.example.json")
                     .read_text())
    doc.update(change)
    return json.dumps(doc).encode()


def _trigger(**change: Any) -> bytes:
    doc = json.loads((EXAMPLES / "trigger-track-single.example.json").read_text())
    doc.update(change)
    return json.dumps(doc).encode()


def _voevent(**subs: str) -> bytes:
    xml = (DATA / "voevents" / "BAT_GRB_Pos_655721-214.xml").read_bytes()
    for old, new in subs.items():
        pattern = {"C1": rb"<C1>[^<]*</C1>", "C2": rb"<C2>[^<]*</C2>",
                   "Error2Radius": rb"<Error2Radius>[^<]*</Error2Radius>",
                   "ISOTime": rb"<ISOTime>[^<]*</ISOTime>"}[old]
        xml = re.sub(pattern, f"<{old}>{new}</{old}>".encode(), xml, count=1)
    return xml


def _lvk(time: str) -> bytes:
    from tests.test_lvk import as_json, record

    rec = record()
    rec["event"]["time"] = time
    return as_json(rec)


def _ztf(**change: Any) -> bytes:
    from tests.test_ztf import V3_3, rewrite

    return rewrite(V3_3.read_bytes(), lambda r: r["candidate"].update(change))


GCN = "gcn.notices.einstein_probe.wxt.alert"
VOE = "gcn.classic.voevent.SWIFT_BAT_GRB_POS_ACK"
BAD_VALUES = {
    "gcn-ra-400": (GCN, lambda: _gcn(ra=400), "outside [0, 360)"),
    "gcn-ra-negative": (GCN, lambda: _gcn(ra=-10), "outside [0, 360)"),
    "gcn-error-1e999": (GCN, lambda: _gcn(ra_dec_error=1.0).replace(
        b'"ra_dec_error": 1.0', b'"ra_dec_error": 1e999'), "not a finite number"),
    "gcn-error-200": (GCN, lambda: _gcn(ra_dec_error=200), "[0, 180]"),
    "gcn-ra-nan": (GCN, lambda: _gcn(ra=1.0).replace(b'"ra": 1.0', b'"ra": NaN'),
                   "not a finite number"),
    "gcn-year-0001": (GCN, lambda: _gcn(trigger_time="0001-01-01T00:00:00Z"), "trigger_time"),
    "gcn-future": (GCN, lambda: _gcn(trigger_time="2999-01-01T00:00:00Z"), "trigger_time"),
    "voevent-ra-400": (VOE, lambda: _voevent(C1="400.0"), "outside [0, 360)"),
    "voevent-error-1e308": (VOE, lambda: _voevent(Error2Radius="1e308"), "not an error"),
    "voevent-error-nan": (VOE, lambda: _voevent(Error2Radius="NaN"), "not a finite number"),
    "voevent-ra-nan": (VOE, lambda: _voevent(C1="NaN"), "not a finite number"),
    "voevent-dec-100": (VOE, lambda: _voevent(C2="100"), "outside [-90, 90]"),
    "voevent-year-0001": (VOE, lambda: _voevent(ISOTime="0001-01-01T00:00:00"),
                          "trigger_time"),
    "trigger-ra-400": ("detector", lambda: _trigger(ra_deg=400), "ra_deg"),
    "trigger-ra-nan": ("detector", lambda: _trigger(ra_deg=1.5).replace(
        b'"ra_deg": 1.5', b'"ra_deg": NaN'), "ra_deg"),
    "trigger-error-1e999": ("detector", lambda: _trigger(error_radius_90_deg=1.5).replace(
        b'"error_radius_90_deg": 1.5', b'"error_radius_90_deg": 1e999'),
        "error_radius_90_deg"),
    "trigger-year-0001": ("detector", lambda: _trigger(time="0001-01-01T00:00:00Z"),
                          "trigger_time"),
    "lvk-year-0001": ("igwn.gwalert", lambda: _lvk("0001-01-01T00:00:00Z"), "trigger_time"),
    "lvk-future": ("igwn.gwalert", lambda: _lvk("2999-01-01T00:00:00Z"), "trigger_time"),
    "ztf-ra-400": ("ztf_20250302_programid1", lambda: _ztf(ra=400.0), "outside [0, 360)"),
    "ztf-jd-year-1000": ("ztf_20250302_programid1", lambda: _ztf(jd=2086302.5),
                         "trigger_time"),
}


@pytest.mark.parametrize("name", sorted(BAD_VALUES))
def test_bad_values_are_quarantined_never_repaired(name: str, ingestor: Ingestor,
                                                   archive: Archive) -> None:
    source, build, expected = BAD_VALUES[name]
    data = build()
    (outcome,) = ingestor.ingest([RawMessage(source, data)])
    assert outcome.status == "quarantined", (outcome.status, outcome.ivorn)
    assert expected in outcome.reason, outcome.reason
    (entry,) = archive.list_quarantine()
    assert entry["reason"] == outcome.reason
    assert archive.raw_payload(entry["raw_sha256"]) == data
    assert archive.count_alerts() == 0


@pytest.mark.parametrize("source,build", [
    (GCN, lambda: _gcn()), (VOE, lambda: _voevent()), ("detector", lambda: _trigger()),
    ("ztf_20250302_programid1", lambda: _ztf()), ("igwn.gwalert", lambda: _lvk(
        "2024-01-01T10:00:00.123Z")),
    (GCN, lambda: _gcn(ra=0, dec=-90)), (VOE, lambda: _voevent(C1="359.99", C2="90")),
])
def test_the_good_versions_are_archived(source: str, build: Any, ingestor: Ingestor) -> None:
    """The control: the same messages with sane values pass the rule."""
    (outcome, *_) = ingestor.ingest([RawMessage(source, build())])
    assert outcome.status == "archived", outcome.reason


# -- item 8: every IVORN the broker mints is a URI -----------------------------------------

# RFC 3986: the path and fragment of a URI hold pchar (unreserved, sub-delims, ':', '@',
# and percent-encodings) and '/' (and '?' in the fragment).
_PCHAR = r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@]|%[0-9A-F]{2})"
IVORN = re.compile(rf"^ivo://[A-Za-z0-9.\-]+/(?:{_PCHAR}|/)*#(?:{_PCHAR}|[/?])*$")


ANY_TEXT = st.text(st.characters(blacklist_categories=()))  # lone surrogates too


@settings(max_examples=300, deadline=None)
@given(stream=ANY_TEXT, local=ANY_TEXT)
def test_minted_ivorns_are_uris(stream: str, local: str) -> None:
    meta = MessageMeta("x", datetime.now(UTC), "test.mmbroker")
    ivorn = meta.alert_ivorn(stream, local)
    assert IVORN.match(ivorn), ivorn
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(ivorn)
    assert parts.scheme == "ivo" and parts.netloc == "test.mmbroker"
    assert unquote(parts.path[1:], errors="surrogatepass") == stream
    assert unquote(parts.fragment, errors="surrogatepass") == local


def test_hostile_voevent_stream_names_stay_uris(ingestor: Ingestor, archive: Archive) -> None:
    xml = _voevent().replace(b'ivorn="ivo://nasa.gsfc.gcn/SWIFT#BAT_GRB_Pos_655721-214"',
                             b'ivorn="ivo://nasa.gsfc.gcn/SW&lt;script&gt;&quot;IF T%#a&lt;b"')
    assert b"&lt;script" in xml
    (outcome,) = ingestor.ingest([RawMessage(VOE, xml)])
    assert outcome.status == "archived", outcome.reason
    assert IVORN.match(outcome.ivorn), outcome.ivorn
    assert not set('<>" ') & set(outcome.ivorn)
    document = archive.get_alert(outcome.ivorn)
    assert document is not None
    assert not set('<>" ') & set(document["source"]), document["source"]


def test_ivorn_encoding_keeps_ordinary_names() -> None:
    meta = MessageMeta("x", datetime.now(UTC), "test.mmbroker")
    assert meta.alert_ivorn("nasa.gsfc.gcn/SWIFT", "655721-0") == \
        "ivo://test.mmbroker/nasa.gsfc.gcn/SWIFT#655721-0"


def _dead_owner_and_a_hanging_probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The owner id of a process that has exited; and probe children (which take
    PYTHONPATH) that hang on any message holding ``HANG``."""
    hole = tmp_path / "hang"
    hole.mkdir()
    (hole / "sitecustomize.py").write_text(
        "import time\n"
        "import listeners.registry as _r\n"
        "_real = _r.normalize\n"
        "def _normalize(data, meta):\n"
        "    if b'HANG' in data:\n"
        "        time.sleep(600)\n"
        "    return _real(data, meta)\n"
        "_r.normalize = _normalize\n")
    monkeypatch.setenv("PYTHONPATH", str(hole))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    owner = _owner_of(gone)
    gone.wait()
    return owner


def test_a_message_that_hangs_the_probe_is_quarantined(archive: Archive, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Left in flight by a dead process, it hangs the child too: quarantined as hanging,
    and the good message after it in the same probe is not blamed."""
    owner = _dead_owner_and_a_hanging_probe(tmp_path, monkeypatch)
    hanging = RawMessage("detector", b'{"HANG": 1}')
    good = RawMessage("detector", _good_trigger("after-hang"))
    archive.store_raw([hanging, good], owner=owner)
    ingestor = Ingestor(archive, authority="test.mmbroker", probe_timeout_s=5)
    (outcome,) = ingestor.recover()
    assert outcome.status == "quarantined" and outcome.raw_sha256 == hanging.sha256
    assert outcome.reason == f"{DIED_REASON} (it hung for over 5 s)"
    assert archive.inflight_marks() == []


@pytest.mark.timeout(120)
def test_a_trigger_reply_names_only_the_posted_triggers_after_a_dead_process(
        archive: Archive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first batch after a restart also settles what a dead process left in flight;
    those outcomes are other messages' and were appended to the batch's own, so the
    first trigger POSTed after a restart was answered with a second item, the dead
    process's message and its quarantine reason.  Now the reply names only what was
    posted; the dead process's message is in quarantine all the same."""
    from fastapi.testclient import TestClient

    from broker.config import get_settings
    from broker.web.app import create_app
    from broker.web.tokens import create_token

    owner = _dead_owner_and_a_hanging_probe(tmp_path, monkeypatch)
    left = RawMessage("detector", b'{"HANG": 2}')
    archive.store_raw([left], owner=owner)
    token, _ = create_token(archive, "online", ["write:triggers"], detectors=["KM3NeT"])
    app = create_app(get_settings(api_rate_limit_per_s=0, comet=False, probe_timeout_s=3),
                     archive=archive)
    with TestClient(app) as client:
        reply = client.post("/api/v1/triggers", content=_good_trigger("after-restart"),
                            headers={"Authorization": f"Bearer {token}",
                                     "Content-Type": "application/json"})
    assert reply.status_code == 201, reply.text
    items = reply.json()["items"]
    assert [i["status"] for i in items] == ["archived"], items
    assert "after-restart" in items[0]["id"] and DIED_REASON not in reply.text
    assert [q["raw_sha256"] for q in archive.list_quarantine()] == [left.sha256]
    assert archive.inflight_marks() == []
