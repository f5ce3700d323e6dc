"""Publishing end to end: `mmbroker serve` with its Comet child, a real Comet subscriber.

A detector trigger POSTed to the broker reaches the subscriber as a
schema-valid VOEvent under the same IVORN; its update cites ``supersedes``, its
retraction ``retraction``.  Our own VOEvents fed back through VTP and Kafka
are never published again.  A coincidence's provenance names its inputs.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

import alerts_schema
from broker.publish.voevent_build import validate
from tests.conftest import free_port, mmbroker
from tests.servers import (
    FAST_JOIN_ENV,
    broker_up,
    comet_subscriber,
    http,
    saved_ivorns,
    wait_for,
)

pytestmark = pytest.mark.timeout(240)
TRACK = json.loads(next(p for p in alerts_schema.example_paths("trigger")
                        if "track-single" in p.name).read_text())




@pytest.fixture
def broker(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[dict[str, object]]:
    """`mmbroker serve` on free ports, its Comet child included, and a write token.

    A test adds environment with ``@pytest.mark.serve_env.with_args(fn)``,
    ``fn(ports, tmp_path) -> dict``.
    """
    ports = {"http": free_port(), "receive": free_port(), "broadcast": free_port()}
    env = {**os.environ, "MMBROKER_DATA_DIR": str(tmp_path / "data"),
           "MMBROKER_HTTP_PORT": str(ports["http"]),
           "MMBROKER_VTP_RECEIVE_PORT": str(ports["receive"]),
           "MMBROKER_VTP_BROADCAST_PORT": str(ports["broadcast"]),
           "MMBROKER_LOG_LEVEL": "WARNING"}
    marker = request.node.get_closest_marker("serve_env")
    if marker is not None:
        env.update(marker.args[0](ports, tmp_path))
    db = str(tmp_path / "broker.sqlite3")
    mmbroker("--db", db, "db", "upgrade", env=env)
    token = mmbroker("--db", db, "token", "create", "--scope", "write:triggers",
                     "--detector", TRACK["detector"], env=env).stdout.strip()
    exe = Path(sys.executable).with_name("mmbroker")
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([str(exe), "--db", db, "serve"], env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{ports['http']}"
    try:
        assert wait_for(lambda: broker_up(base), 60), (tmp_path / "serve.log").read_text()
        yield {"base": base, "token": token, "ports": ports, "db": db, "env": env,
               "tmp": tmp_path}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()




def _subscribe(broker: dict[str, object]) -> object:
    return comet_subscriber(broker["tmp"], broker["ports"]["broadcast"])  # type: ignore[arg-type]


def _post(broker: dict[str, object], trigger: dict) -> dict:
    status, body = http(f"{broker['base']}/api/v1/triggers", json.dumps(trigger).encode(),
                         broker["token"])  # type: ignore[arg-type]
    assert status == 201, body
    return json.loads(body)


def _connected(broker: dict[str, object], saved: Path) -> bool:
    """Post a throwaway test trigger and see whether the subscriber saves it."""
    probe = {**TRACK, "event_id": f"PROBE-{time.monotonic_ns()}", "real": False}
    ivorn = _post(broker, probe)["id"]
    return wait_for(lambda: ivorn in saved_ivorns(saved), 5)


def test_trigger_update_retraction_reach_a_comet_subscriber(broker: dict[str, object]) -> None:
    with _subscribe(broker) as saved:
        assert wait_for(lambda: _connected(broker, saved), 60), "subscriber never received"
        first = _post(broker, {**TRACK, "event_id": "E2E-1"})
        update = _post(broker, {**TRACK, "event_id": "E2E-1", "revision": 1, "p_astro": 0.6})
        retraction = _post(broker, {**TRACK, "event_id": "E2E-1", "revision": 2,
                                    "retraction": True})
        wanted = [first["id"], update["id"], retraction["id"]]
        assert wait_for(lambda: set(wanted) <= set(saved_ivorns(saved)), 30)
        files = {re.search(rb'ivorn="([^"]+)"', p.read_bytes()).group(1).decode(): p.read_bytes()
                 for p in saved.iterdir()}
    for ivorn in wanted:
        assert validate(files[ivorn]) == []
        assert saved_ivorns(saved).count(ivorn) == 1
        status, sent = http(f"{broker['base']}/api/v1/voevents/{quote(ivorn, safe='')}")
        assert status == 200 and sent == files[ivorn]  # byte for byte what was sent
    assert re.search(rb'<EventIVORN cite="supersedes">' + re.escape(first["id"].encode()),
                     files[update["id"]])
    assert re.search(rb'<EventIVORN cite="retraction">' + re.escape(update["id"].encode()),
                     files[retraction["id"]])
    assert b'role="observation"' in files[first["id"]]


@pytest.fixture
def kafka_for_loop(tmp_path: Path) -> Iterator[str]:
    from tests.servers import tansu

    with tansu(tmp_path) as bootstrap:
        _loop_bootstrap.append(bootstrap)
        yield bootstrap


_loop_bootstrap: list[str] = []


def _loop_env(ports: dict[str, int], _tmp: Path) -> dict[str, str]:
    # The broker listens to itself: its own Comet broadcast over VTP, and its own
    # Kafka output topic.
    return {"MMBROKER_VTP_PEERS": f"127.0.0.1:{ports['broadcast']}",
            "MMBROKER_KAFKA_BOOTSTRAP": _loop_bootstrap[-1],
            "MMBROKER_KAFKA_TOPICS": "mmbroker.voevent",
            "KAFKA_AUTO_OFFSET_RESET": "earliest",
            **FAST_JOIN_ENV}


@pytest.mark.serve_env.with_args(_loop_env)
def test_own_voevents_fed_back_are_not_published_again(kafka_for_loop: str,
                                                       broker: dict[str, object]) -> None:
    """Published over VTP and Kafka, read back over both: never published a second time."""
    from broker.archive.store import Archive

    ivorn = _post(broker, {**TRACK, "event_id": "LOOP-1"})["id"]
    archive = Archive.open(f"sqlite:///{broker['db']}", upgrade=False)
    try:
        def echoes() -> list[dict]:
            return [q for q in archive.list_quarantine(limit=100)
                    if q["error_class"] == "OwnPublication"]

        # One echo from our Comet broadcast, one from our Kafka XML topic.
        assert wait_for(lambda: len(echoes()) >= 2, 90), archive.list_quarantine()
        sources = {q["source"] for q in echoes()}
        assert "mmbroker.voevent" in sources and any(s.startswith("vtp:") for s in sources)
        time.sleep(2)
        assert _voevent_count(broker) == 1  # the trigger's, nothing more
        assert archive.count_alerts() == 1  # the echoes did not become alerts
        status, _ = http(f"{broker['base']}/api/v1/voevents/{quote(ivorn, safe='')}")
        assert status == 200
    finally:
        archive.close()


def _voevent_count(broker: dict[str, object]) -> int:
    from broker.archive.store import Archive
    from broker.publish.outbox import status

    archive = Archive.open(f"sqlite:///{broker['db']}", upgrade=False)
    try:
        return len(status(archive, limit=100_000))
    finally:
        archive.close()


def test_coincidence_provenance_names_inputs_hashes_and_config(tmp_path: Path) -> None:
    from sqlalchemy import select

    from broker.archive.models import AlertRow
    from broker.archive.store import Archive
    from broker.config import get_settings
    from broker.publish import provenance
    from broker.runtime.assembly import make_pipeline
    from crossmatch.config import load_config

    url = f"sqlite:///{tmp_path / 'prov.sqlite3'}"
    archive = Archive.open(url)
    pipeline = make_pipeline(get_settings(database_url=url), archive, targets=[])
    examples = {p.name: p.read_bytes() for p in alerts_schema.example_paths("alert")}
    from listeners.envelope import RawMessage

    pipeline.ingest([RawMessage("file", examples[n]) for n in (
        "alert-gw-cbc-skymap.example.json", "alert-grb-gbm.example.json")])
    (result,) = [r for r in pipeline.coincidences if r.coincidence.pairing == "gw_cbc-grb"]
    from fastapi.testclient import TestClient

    from broker.web.app import create_app

    with TestClient(create_app(get_settings(database_url=url), archive=archive)) as client:
        reply = client.get(f"/api/v1/voevents/{quote(result.coincidence.id, safe='')}"
                           "/provenance", params={"format": "xml"})
    assert reply.status_code == 200
    doc = provenance.parse(reply.content, "xml")
    text = provenance.serialize(doc, "provn").decode()
    with archive.engine.connect() as conn:
        hashes = dict(conn.execute(select(AlertRow.ivorn, AlertRow.raw_sha256)).all())
    for member in result.coincidence.members:
        assert hashes[member.alert_id] in text
    assert load_config().config_hash in text
    for fmt in ("json", "provn"):
        assert provenance.parse(provenance.serialize(doc, fmt), fmt)
    archive.close()


def test_nothing_is_lost_when_storing_or_building_fails(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """An archive outage after ingest is retried; a broken builder costs only its VOEvent."""
    from alerts_schema.errors import ArchiveUnavailable
    from broker.archive.store import Archive
    from broker.config import get_settings
    from broker.publish import voevent_build
    from broker.publish.outbox import status
    from broker.runtime.assembly import make_pipeline
    from listeners.envelope import RawMessage

    url = f"sqlite:///{tmp_path / 'robust.sqlite3'}"
    archive = Archive.open(url)
    pipeline = make_pipeline(get_settings(database_url=url), archive, targets=[])
    examples = {p.name: p.read_bytes() for p in alerts_schema.example_paths("alert")}
    real_store = archive.store_coincidences
    monkeypatch.setattr(archive, "store_coincidences",
                        lambda *_a: (_ for _ in ()).throw(ArchiveUnavailable("restarting")))
    real_build = voevent_build.build_coincidence
    broken = {"gw-hen"}

    def build(coinc, *args, **kwargs):  # type: ignore[no-untyped-def]
        if coinc.pairing in broken:
            raise AttributeError("'module' object has no attribute 'Iterable'")
        return real_build(coinc, *args, **kwargs)

    monkeypatch.setattr(voevent_build, "build_coincidence", build)
    pipeline.ingest([RawMessage("file", examples[n]) for n in (
        "alert-gw-cbc-skymap.example.json", "alert-grb-gbm.example.json",
        "alert-neutrino-trigger.example.json")])
    assert archive.list_coincidences() == []  # the outage: nothing stored yet...
    monkeypatch.setattr(archive, "store_coincidences", real_store)
    pipeline.flush()  # ...and the next round stores and publishes them
    stored = {c["pairing"] for c in archive.list_coincidences()}
    assert stored == {"gw_cbc-grb", "gw-hen", "hen-grb"}
    published = {e["ivorn"].split("#")[1].rsplit("-", 2)[0] for e in status(archive)
                 if "/coincidence#" in e["ivorn"]}
    assert published == {"gw_cbc-grb", "hen-grb"}  # the broken one alone is missing
    assert any("/detector#" in e["ivorn"] for e in status(archive))  # and the trigger
    assert pipeline.publisher.failures == 1
    archive.close()


def test_receipts_are_kept_only_while_something_waits(tmp_path: Path) -> None:
    """The pipeline holds alerts' receipts only for VOEvents not yet queued: not past a
    round that queued nothing (a match worker's round without a coincidence, which
    queues no trigger), or the worker's memory grows with every alert it matches."""
    from broker.archive.store import Archive
    from broker.config import get_settings
    from broker.runtime.assembly import make_pipeline
    from listeners.envelope import RawMessage

    url = f"sqlite:///{tmp_path / 'receipts.sqlite3'}"
    archive = Archive.open(url)
    pipeline = make_pipeline(get_settings(database_url=url), archive, targets=[])
    examples = {p.name: p.read_bytes() for p in alerts_schema.example_paths("alert")}
    message = RawMessage("file", examples["alert-grb-gbm.example.json"])
    outcome, = pipeline.ingestor.ingest([message])
    assert outcome.status == "archived" and outcome.alert is not None
    receipts = {outcome.alert.id: {"id": outcome.alert_id, "source": message.source,
                                   "transport": {}, "raw_sha256": message.sha256,
                                   "received_at": message.received_at}}
    # As the match stage calls it: its triggers were queued before the lock.
    assert pipeline.match([outcome.alert], receipts, record_matched=False,
                          publish_alerts=False) == []
    assert pipeline._receipts == {} and not pipeline.backlog
    # As serve calls it: the trigger's VOEvent queued, then nothing more to queue.
    pipeline.ingest([RawMessage("detector", (alerts_schema.example_paths("trigger")[0]
                                             ).read_bytes())])
    assert pipeline._receipts == {} and not pipeline.backlog
    archive.close()


def test_a_hung_sender_delays_the_publisher_by_its_bound_at_most(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After queueing, the publisher waits for the senders it woke to put the VOEvent on
    the wire (DeliveryLoop.offer), for HANDOFF_WAIT_S at most: a sender that never gets
    there costs the batch that bound, and the VOEvent stays queued for it."""
    import threading
    import time

    from broker.archive.store import Archive
    from broker.config import get_settings
    from broker.publish import publisher as publisher_module
    from broker.publish.outbox import pending_count
    from broker.runtime.assembly import make_pipeline
    from listeners.envelope import RawMessage

    url = f"sqlite:///{tmp_path / 'handoff.sqlite3'}"
    archive = Archive.open(url)
    pipeline = make_pipeline(get_settings(database_url=url), archive, targets=["vtp"])
    assert pipeline.publisher is not None
    handed: list[int] = []
    never = threading.Event()

    def hung(deliveries: list) -> threading.Event:  # type: ignore[type-arg]
        handed.extend(d.delivery_id for d in deliveries)
        return never

    pipeline.publisher.handoffs.append(hung)
    trigger = alerts_schema.example_paths("trigger")[0].read_bytes()

    def event(name: bytes) -> list[RawMessage]:
        return [RawMessage("detector", trigger.replace(b'"event_id": "',
                                                       b'"event_id": "' + name))]

    pipeline.ingest(event(b"A"))  # imports, first statements
    pipeline.ingest(event(b"B"))
    monkeypatch.setattr(publisher_module, "HANDOFF_WAIT_S", 0.3)  # long enough to see
    started = time.monotonic()
    outcome, = pipeline.ingest(event(b"C"))
    took = time.monotonic() - started
    assert outcome.status == "archived" and len(handed) == 3
    assert 0.3 <= took < 1.5
    assert pending_count(archive) == 3  # queued, for a sender to send
    archive.close()


def test_skymaps_are_served_only_for_public_alerts(tmp_path: Path) -> None:
    import base64
    import hashlib

    from fastapi.testclient import TestClient

    from broker.archive.store import Archive
    from broker.config import get_settings
    from broker.demo import scenario_messages
    from broker.runtime.ingest import Ingestor
    from broker.web.app import create_app

    url = f"sqlite:///{tmp_path / 'maps.sqlite3'}"
    archive = Archive.open(url)
    (gw,) = [raw for label, raw, _ in scenario_messages() if label == "gw"]
    doc = json.loads(gw.data)
    sha = hashlib.sha256(base64.b64decode(doc["event"]["skymap"])).hexdigest()
    Ingestor(archive, authority="local.mmbroker").ingest([gw])
    with TestClient(create_app(get_settings(database_url=url), archive=archive)) as client:
        reply = client.get(f"/api/v1/skymaps/{sha}")
        assert reply.status_code == 200 and reply.content.startswith(b"SIMPLE")
        with archive.engine.begin() as conn:
            from sqlalchemy import update

            from broker.archive.models import AlertRow
            conn.execute(update(AlertRow).values(data_rights="proprietary"))
        assert client.get(f"/api/v1/skymaps/{sha}").status_code == 404
        assert client.get(f"/api/v1/skymaps/{'0' * 64}").status_code == 404
    archive.close()
