"""Retractions keep the event's time (issue 16, item 9).

An LVK retraction names no event (igwn.gwalert sends ``"event": null``), so its
notice time (``time_created``, 23:36:23 for MS181101ab, 4416 s after the event) stood in
as the trigger time, and the coincidence it retracted moved by as much, its offsets
with it.  The real notices of the mock superevent MS181101ab (igwn.gwalert JSON, and
the LVK GCN VOEvents), a real GCN Fermi GBM notice placed 1.2 s after the GW, through
the real normalizers, the engine and the broker's ingest.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from alerts_schema import Alert, Coincidence
from alerts_schema.model import format_utc
from broker.archive.store import AlertQuery, Archive
from broker.config import get_settings
from broker.runtime.assembly import make_pipeline
from broker.runtime.pipeline import Pipeline
from crossmatch.config import load_config
from crossmatch.engine import Engine
from listeners import registry
from listeners.base import MessageMeta, Normalized
from listeners.common import parse_utc
from listeners.envelope import RawMessage
from tests.conftest import SAMPLES

pytestmark = pytest.mark.timeout(180)

LVK = SAMPLES / "lvk"
GBM_NOTICE = Path(__file__).parent / "data" / "gcn" / (
    "notices__fermi__gbm__trigger.ground1.example.json")
RECEIVED = parse_utc("2018-11-01T23:40:00Z", field="received")
EVENT_TIME = parse_utc("2018-11-01T22:22:46.654Z", field="event.time")  # the JSON's
TIME_CREATED = parse_utc("2018-11-01T23:36:23Z", field="time_created")  # the retraction's
JSON_TOPIC, VOEVENT_TOPIC = "igwn.gwalert", "gcn.classic.voevent.LVC_PRELIMINARY"
GBM_TOPIC = "gcn.notices.fermi.gbm"


def grb_bytes(gw_time_iso: str) -> bytes:
    notice = json.loads(GBM_NOTICE.read_text())
    notice.update(trigger_time=format_utc(parse_utc(gw_time_iso, field="t")
                                          + timedelta(seconds=1.2)),
                  ra=195.0, dec=-18.5, alert_tense="test")
    return json.dumps(notice).encode()


def normalize(data: bytes, topic: str) -> Normalized:
    return registry.normalize(data, MessageMeta(topic, RECEIVED, "test.mmbroker"))[1]


def engine_for(*normalized: Normalized) -> Engine:
    maps = {s.sha256: s.data for n in normalized for s in n.skymaps}
    return Engine(load_config(), authority="test.mmbroker", clock=None,
                  skymap_loader=maps.get)


def gw_grb(results: list) -> Coincidence:
    (coinc,) = [r.coincidence for r in results if r.coincidence.pairing == "gw_cbc-grb"]
    return coinc


def assert_keeps_time(new: Coincidence, retracted: Coincidence) -> None:
    assert (new.state, retracted.state) == ("new", "retracted")
    assert retracted.supersedes == new.id
    assert retracted.reference_time == new.reference_time
    assert [m.time_offset_s for m in retracted.members] == \
        [m.time_offset_s for m in new.members] == [0.0, 1.2]


# -- the normalizer says so; the engine keeps the coincidence's time ------------------

def test_the_json_retraction_says_its_time_is_not_the_event_s() -> None:
    (retraction,) = normalize((LVK / "MS181101ab-retraction.json").read_bytes(),
                              JSON_TOPIC).alerts
    assert retraction.alert_type == "retraction"
    assert retraction.trigger_time == TIME_CREATED  # the stand-in, and flagged as one:
    assert retraction.extra["event_time_known"] is False
    assert retraction.extra["trigger_time_from"] == "time_created"


def test_the_engine_keeps_the_retracted_coincidence_s_time_json() -> None:
    """The retraction as normalized (flagged stand-in time) reaches the engine directly."""
    gw = normalize((LVK / "MS181101ab-preliminary.json").read_bytes(), JSON_TOPIC)
    grb = normalize(grb_bytes("2018-11-01T22:22:46.654Z"), GBM_TOPIC)
    retraction = normalize((LVK / "MS181101ab-retraction.json").read_bytes(), JSON_TOPIC)
    engine = engine_for(gw, grb)
    assert engine.process(gw.alerts[0]) == []
    new = gw_grb(engine.process(grb.alerts[0]))
    assert new.reference_time == EVENT_TIME
    retracted = gw_grb(engine.process(retraction.alerts[0]))
    assert_keeps_time(new, retracted)
    assert retracted.members[0].alert_id == retraction.alerts[0].id


def test_the_engine_keeps_the_retracted_coincidence_s_time_voevent() -> None:
    """The LVK GCN VOEvents: Preliminary, then Retraction (its WhereWhen holds the event
    time, which the broker keeps)."""
    gw = normalize((LVK / "MS181101ab-2-Preliminary.xml").read_bytes(), VOEVENT_TOPIC)
    (gw_alert,) = gw.alerts
    grb = normalize(grb_bytes(format_utc(gw_alert.trigger_time)), GBM_TOPIC)
    retraction = normalize((LVK / "MS181101ab-5-Retraction.xml").read_bytes(),
                           "gcn.classic.voevent.LVC_RETRACTION")
    (gone,) = retraction.alerts
    assert gone.alert_type == "retraction" and gone.event_id == gw_alert.event_id
    assert gone.trigger_time == gw_alert.trigger_time
    engine = engine_for(gw, grb)
    engine.process(gw_alert)
    new = gw_grb(engine.process(grb.alerts[0]))
    retracted = gw_grb(engine.process(gone))
    assert_keeps_time(new, retracted)


# -- the broker gives the retraction its event's time ---------------------------------

def pipeline_for(archive: Archive) -> Pipeline:
    return make_pipeline(get_settings(comet=False), archive, targets=[])


def feed(pipeline: Pipeline, *items: tuple[bytes, str]) -> None:
    pipeline.ingest([RawMessage(topic, data, received_at=RECEIVED) for data, topic in items])


def archived(archive: Archive) -> list[Alert]:
    return [Alert.model_validate(d) for d in archive.list_alerts(AlertQuery(limit=100))]


def test_the_broker_archives_the_retraction_at_the_event_s_time(archive: Archive) -> None:
    pipeline = pipeline_for(archive)
    feed(pipeline, ((LVK / "MS181101ab-preliminary.json").read_bytes(), JSON_TOPIC))
    feed(pipeline, (grb_bytes("2018-11-01T22:22:46.654Z"), GBM_TOPIC))
    (new,) = [r.coincidence for r in pipeline.coincidences]
    feed(pipeline, ((LVK / "MS181101ab-retraction.json").read_bytes(), JSON_TOPIC))
    (retracted,) = [r.coincidence for r in pipeline.coincidences]
    assert_keeps_time(new, retracted)

    (preliminary,) = [a for a in archived(archive) if a.alert_type == "initial"]
    (gone,) = [a for a in archived(archive) if a.alert_type == "retraction"]
    assert gone.trigger_time == preliminary.trigger_time == EVENT_TIME
    assert gone.extra["trigger_time_from"] == "earlier_revision"
    assert gone.extra["event_time_known"] is True
    assert gone.extra["event_time_alert_id"] == preliminary.id
    assert gone.extra["event_time_revision"] == preliminary.revision
    assert gone.extra["stated_trigger_time"] == gone.extra["time_created"] == \
        "2018-11-01T23:36:23Z"
    stored = Coincidence.model_validate(archive.get_coincidence(retracted.id))
    assert stored.reference_time == new.reference_time

    # The same retraction again is a duplicate, not a conflict.
    outcomes = pipeline.ingest([RawMessage(JSON_TOPIC, (LVK / "MS181101ab-retraction.json")
                                           .read_bytes(), received_at=RECEIVED)])
    assert [o.status for o in outcomes] == ["duplicate"]


def test_an_earlier_revision_in_the_same_batch_gives_the_time(archive: Archive) -> None:
    pipeline = pipeline_for(archive)
    feed(pipeline, ((LVK / "MS181101ab-retraction.json").read_bytes(), JSON_TOPIC),
         ((LVK / "MS181101ab-preliminary.json").read_bytes(), JSON_TOPIC))
    (gone,) = [a for a in archived(archive) if a.alert_type == "retraction"]
    assert gone.trigger_time == EVENT_TIME
    assert gone.extra["trigger_time_from"] == "earlier_revision"


def test_with_no_earlier_revision_the_retraction_is_flagged_not_repaired(
        archive: Archive) -> None:
    """Nothing invented: the stand-in stays, flagged, and is archived; a replay is a
    duplicate even after the preliminary has arrived."""
    pipeline = pipeline_for(archive)
    feed(pipeline, ((LVK / "MS181101ab-retraction.json").read_bytes(), JSON_TOPIC))
    (gone,) = archived(archive)
    assert gone.alert_type == "retraction" and gone.trigger_time == TIME_CREATED
    assert gone.extra["event_time_known"] is False
    assert gone.extra["trigger_time_from"] == "time_created"
    feed(pipeline, ((LVK / "MS181101ab-preliminary.json").read_bytes(), JSON_TOPIC))
    outcomes = pipeline.ingest([RawMessage(JSON_TOPIC, (LVK / "MS181101ab-retraction.json")
                                           .read_bytes(), received_at=RECEIVED)])
    assert [o.status for o in outcomes] == ["duplicate"]
    assert archive.count_quarantined() == 0


def retraction_without_time() -> bytes:
    """The real LVK Retraction VOEvent with no event time in its WhereWhen."""
    data = (LVK / "MS181101ab-5-Retraction.xml").read_bytes()
    start, end = data.index(b"<Time unit"), data.index(b"</Time>") + len(b"</Time>")
    return data[:start] + data[end:]


def test_a_voevent_retraction_without_an_event_time_still_retracts(archive: Archive) -> None:
    """Its Who/Date stands in, flagged; the broker gives it the Preliminary's time."""
    (alone,) = normalize(retraction_without_time(), "gcn.classic.voevent.LVC_RETRACTION").alerts
    assert alone.alert_type == "retraction"
    assert alone.trigger_time == TIME_CREATED  # its Who/Date, said to be no event time
    assert alone.extra["event_time_known"] is False
    assert alone.extra["trigger_time_from"] == "who_date"

    pipeline = pipeline_for(archive)
    feed(pipeline, ((LVK / "MS181101ab-2-Preliminary.xml").read_bytes(), VOEVENT_TOPIC))
    (gw,) = archived(archive)
    feed(pipeline, (grb_bytes(format_utc(gw.trigger_time)), GBM_TOPIC))
    (new,) = [r.coincidence for r in pipeline.coincidences]
    feed(pipeline, (retraction_without_time(), "gcn.classic.voevent.LVC_RETRACTION"))
    (retracted,) = [r.coincidence for r in pipeline.coincidences]
    assert_keeps_time(new, retracted)
    (gone,) = [a for a in archived(archive) if a.alert_type == "retraction"]
    assert gone.trigger_time == gw.trigger_time
    assert gone.extra["event_time_alert_id"] == gw.id
