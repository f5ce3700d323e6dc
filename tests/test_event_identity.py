"""One event across transports (issue 16, item 8).

The same LVK superevent as igwn.gwalert JSON and as a GCN VOEvent, the same Swift
trigger as a GCN Classic VOEvent and as a binary notice, the same Einstein Probe or SVOM
trigger as GCN JSON and as a VOEvent: one event to the engine, whose revisions supersede
each other in order and which never makes two coincidences with the same partner.  On
the real messages (samples) or packets built to the real format, through the real
normalizers, the engine, and `mmbroker ingest` on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from alerts_schema import Alert, PointLocalization
from alerts_schema.model import format_utc
from broker.archive.store import AlertQuery, Archive
from broker.cli import main
from broker.runtime.announce import announcement_key
from crossmatch.config import load_config
from crossmatch.engine import Engine, Result
from crossmatch.events import Order, event_key, namespace, order, supersedes
from listeners import registry
from listeners.base import MessageMeta, Normalized
from listeners.common import parse_utc
from tests.conftest import SAMPLES
from tests.test_gcn_binary import BAT_TOPIC, DATA, bat_655721, xrt_655721
from tests.test_sky_map_matching import GBM_DEC, GBM_RA, gbm_map, gbm_notice

pytestmark = pytest.mark.timeout(300)

AUTHORITY = "test.mmbroker"
RECEIVED = datetime(2026, 12, 6, tzinfo=UTC)
LVK = SAMPLES / "lvk"
GWCELERY_JSON = SAMPLES / "gcn-kafka-json" / "gwcelery"
GWCELERY_XML = SAMPLES / "voevents" / "gwcelery"


def normalized(path: Path | bytes, source: str = "file") -> Normalized:
    data = path if isinstance(path, bytes) else path.read_bytes()
    return registry.normalize(data, MessageMeta(source, RECEIVED, AUTHORITY, {}))[1]


def one(path: Path | bytes, source: str = "file") -> Alert:
    (alert,) = normalized(path, source).alerts
    return alert


def series(result: Result) -> str:
    return result.coincidence.id.rsplit("-", 1)[0]


# -- which alerts are one event ------------------------------------------------------

@pytest.mark.parametrize(("first", "second"), [
    pytest.param((LVK / "MS181101ab-preliminary.json", "igwn.gwalert"),
                 (LVK / "MS181101ab-2-Preliminary.xml", "gcn.classic.voevent.LVC_PRELIMINARY"),
                 id="lvk-json-voevent"),
    pytest.param((GWCELERY_JSON / "kafka_alert_einteinprobe.json",
                  "gcn.notices.einstein_probe.wxt.alert"),
                 (GWCELERY_XML / "einsteinprobe_grb_template.xml", "file"), id="ep-json-voevent"),
    pytest.param((GWCELERY_JSON / "kafka_alert_svom_wakeup.json",
                  "gcn.notices.svom.voevent.eclairs"),
                 (GWCELERY_XML / "svom_grb_template.xml", "file"), id="svom-json-voevent"),
    pytest.param((DATA / "BAT_GRB_Pos_655721-214.xml", "gcn.classic.voevent.SWIFT_BAT_GRB_POS_ACK"),
                 (bat_655721(), BAT_TOPIC), id="swift-voevent-binary"),
])
def test_one_notice_from_two_transports_is_one_event(first: tuple[Any, str],
                                                     second: tuple[Any, str]) -> None:
    a, b = one(*first), one(*second)
    assert a.source != b.source  # archived apart, as received
    assert event_key(a) == event_key(b)
    assert announcement_key(a) == announcement_key(b)  # one partition, one match worker
    # Copies of one notice: the second changes nothing, unless it adds a sky map (the
    # LVK JSON notice carries its map inline, the VOEvent names it by URL only).
    assert not supersedes(order(b), order(a))
    adds_map = a.localization.kind == "skymap" and b.localization.kind != "skymap"
    assert supersedes(order(a), order(b)) is adds_map


def test_lvk_voevent_and_json_revisions_interleave() -> None:
    """LVK's own rule on both paths: a notice's copies share its revision, and the six
    VOEvents and six JSON notices of MS181101ab order as LVK issued them."""
    names = [("1-EarlyWarning", "earlywarning"), ("2-Preliminary", "preliminary"),
             ("3-Initial", "initial"), ("4-Update", "update"),
             ("5-Retraction", "retraction")]
    for xml, js in names:
        v, j = one(LVK / f"MS181101ab-{xml}.xml"), one(LVK / f"MS181101ab-{js}.json",
                                                        "igwn.gwalert")
        assert v.revision == j.revision and v.alert_type == j.alert_type, xml
        assert v.extra["revision_rule"] == j.extra["revision_rule"] == "lvk-time-created-v1"
    update = one(LVK / "MS181101ab-4-Update.xml")
    ext = one(LVK / "MS181101ab-ext-update.json", "igwn.gwalert")
    assert supersedes(order(ext), order(update))  # same time, the external coincidence ranks


def test_streams_outside_gcn_and_lvk_keep_their_own_events() -> None:
    assert namespace("detector", "IceCube") == "detector"  # a trigger POST
    assert namespace("gcn.notices.icecube.lvk_nu_track_search", "IceCube") == "gcn/IceCube"
    assert namespace("ztf-alerts", "ZTF") == "ztf-alerts"
    assert namespace("vtp:peer", "LVK") == "LVK"  # superevent ids are LVK's, any road
    assert namespace("ivo://nasa.gsfc.gcn/SWIFT", "Swift") == namespace(
        "gcn.classic.binary/Swift", "Swift")
    assert namespace("ivo://nasa.gsfc.gcn/Fermi", "Fermi") != namespace(
        "ivo://nasa.gsfc.gcn/SWIFT", "Swift")


def _order(source: str, revision: int = 0, *, rule: str | None = None,
           issued: float | None = None, has_map: bool = False, fetched: bool = False,
           content: int = 0) -> Order:
    return Order(source, rule, revision, fetched, has_map, issued, content)


@pytest.mark.parametrize(("new", "held", "wins"), [
    # one stream: the revision number, then a map fetched for the same revision
    (_order("s", 2), _order("s", 1), True),
    (_order("s", 1), _order("s", 2), False),
    (_order("s", 1, fetched=True, has_map=True), _order("s", 1), True),
    (_order("s", 1), _order("s", 1), False),
    # two streams, one revision rule: the number; a copy only for a map it adds
    (_order("j", 5, rule="r"), _order("v", 4, rule="r"), True),
    (_order("j", 4, rule="r"), _order("v", 5, rule="r"), False),
    (_order("j", 4, rule="r", has_map=True), _order("v", 4, rule="r"), True),
    (_order("v", 4, rule="r", has_map=True, fetched=True),
     _order("j", 4, rule="r", has_map=True), False),
    # two rules: the time each was issued
    (_order("j", 0, issued=20.0), _order("v", 9000, rule="r", issued=10.0), True),
    (_order("v", 9000, rule="r", issued=10.0), _order("j", 0, issued=20.0), False),
    (_order("j", 0, issued=10.0), _order("v", 9000, rule="r", issued=10.0), False),
    # nothing orders them: the later arrival, unless it says what is held
    (_order("j", 0), _order("v", 9000, rule="r", issued=10.0, content=1), True),
    (_order("j", 0, content=1), _order("v", 9000, rule="r", issued=10.0, content=1), False),
])
def test_which_revision_supersedes(new: Order, held: Order, wins: bool) -> None:
    assert supersedes(new, held) is wins


# -- the engine: one coincidence per partner -----------------------------------------

@pytest.fixture
def gbm(tmp_path: Path) -> Normalized:
    """The real GCN Fermi GBM JSON notice, 1.2 s after MS181101ab, its map inside the GW's."""
    gw = one(LVK / "MS181101ab-initial.json", "igwn.gwalert")
    when = format_utc(gw.trigger_time + timedelta(seconds=1.2))
    return normalized(gbm_notice(when, gbm_map(GBM_RA, GBM_DEC, tmp_path)),
                      "gcn.notices.fermi.gbm")


def test_lvk_json_and_voevent_make_one_coincidence_with_a_grb(gbm: Normalized) -> None:
    maps = {s.sha256: s.data for s in gbm.skymaps}
    gw_json = normalized(LVK / "MS181101ab-initial.json", "igwn.gwalert")
    maps.update({s.sha256: s.data for s in gw_json.skymaps})
    engine = Engine(load_config(), authority=AUTHORITY, clock=None, skymap_loader=maps.get)

    def grb_results(alert: Alert) -> list[Result]:
        return [r for r in engine.process(alert) if r.coincidence.pairing == "gw_cbc-grb"]

    assert grb_results(gw_json.alerts[0]) == []
    (found,) = grb_results(gbm.alerts[0])
    assert found.coincidence.state == "new"
    first_overlap = found.coincidence.spatial_overlap
    assert first_overlap is not None and first_overlap.method.startswith("map x map")
    # The VOEvent copy of the same Initial notice (its map only by URL): nothing.
    assert engine.process(one(LVK / "MS181101ab-3-Initial.xml",
                              "gcn.classic.voevent.LVC_INITIAL")) == []
    # An older notice from either road, arriving late: nothing.
    assert engine.process(one(LVK / "MS181101ab-2-Preliminary.xml")) == []
    assert engine.process(one(LVK / "MS181101ab-preliminary.json", "igwn.gwalert")) == []
    # The next notice by VOEvent supersedes the JSON one: the same coincidence, updated.
    (updated,) = grb_results(one(LVK / "MS181101ab-4-Update.xml"))
    assert series(updated) == series(found) and updated.coincidence.revision == 1
    # Its JSON copy brings the map back: the same coincidence again, map x map again.
    update_json = normalized(LVK / "MS181101ab-update.json", "igwn.gwalert")
    maps.update({s.sha256: s.data for s in update_json.skymaps})
    again = grb_results(update_json.alerts[0])
    assert [series(r) for r in again] == [series(found)]
    assert again[0].coincidence.state == "updated"
    overlap = again[0].coincidence.spatial_overlap
    assert overlap is not None and overlap.integral == pytest.approx(first_overlap.integral)
    # The retraction, by either road, retracts that one coincidence once.
    (retracted,) = grb_results(one(LVK / "MS181101ab-5-Retraction.xml"))
    assert series(retracted) == series(found) and retracted.coincidence.state == "retracted"
    assert engine.process(one(LVK / "MS181101ab-retraction.json", "igwn.gwalert")) == []


def neutrino_at(when: datetime, ra: float, dec: float) -> Alert:
    return Alert.model_validate({
        "schema_version": "1.0", "id": "ivo://test.mmbroker/detector#nu-1-0",
        "source": "detector", "messenger": "neutrino", "facility": "KM3NeT",
        "event_id": "nu-1", "revision": 0, "alert_type": "initial", "role": "observation",
        "trigger_time": format_utc(when + timedelta(seconds=30)),
        "localization": {"kind": "point", "ra_deg": ra, "dec_deg": dec,
                         "error_radius_deg": 1.0, "containment": 0.9},
        "far_hz": 1e-8, "data_rights": {"level": "public"}})


def test_swift_voevent_and_binary_make_one_coincidence_with_a_neutrino() -> None:
    bat_xml = one(DATA / "BAT_GRB_Pos_655721-214.xml", "gcn.classic.voevent.SWIFT_BAT_GRB_POS_ACK")
    engine = Engine(load_config(), authority=AUTHORITY, clock=None)

    def hen(alert: Alert) -> list[Result]:
        return [r for r in engine.process(alert) if r.coincidence.pairing == "hen-grb"]

    assert hen(bat_xml) == []
    (found,) = hen(neutrino_at(bat_xml.trigger_time, 319.7, -34.8))
    assert found.coincidence.state == "new"
    assert engine.process(one(bat_655721(), BAT_TOPIC)) == []  # the binary copy
    # The XRT position by binary, then its VOEvent copy: one update, then nothing.
    (updated,) = hen(one(xrt_655721(), "gcn.classic.binary.SWIFT_XRT_POSITION"))
    assert series(updated) == series(found) and updated.coincidence.state == "updated"
    assert engine.process(one(DATA / "XRT_Pos_655721-326.xml")) == []
    assert engine.process(one(bat_655721(), BAT_TOPIC)) == []  # older, late


def test_svom_json_and_voevent_make_one_coincidence_with_a_neutrino() -> None:
    """SVOM's JSON and VOEvent notices number revisions differently (0 and 676001): the
    time each was issued (Who/Date, alert_datetime) says they are one notice."""
    doc = json.loads((GWCELERY_JSON / "kafka_alert_svom_wakeup.json").read_text())
    doc["alert_tense"] = "current"  # gwcelery's copy is a test; its VOEvent template is not
    svom_json = one(json.dumps(doc).encode(), "gcn.notices.svom.voevent.eclairs")
    svom_xml = one(GWCELERY_XML / "svom_grb_template.xml")
    assert (svom_json.role, svom_xml.role) == ("observation", "observation")
    engine = Engine(load_config(), authority=AUTHORITY, clock=None)
    assert engine.process(svom_json) == []
    loc = svom_json.localization
    assert isinstance(loc, PointLocalization)
    nu = neutrino_at(svom_json.trigger_time, loc.ra_deg, loc.dec_deg)
    found = [r for r in engine.process(nu) if r.coincidence.pairing == "hen-grb"]
    assert [r.coincidence.state for r in found] == ["new"]
    assert engine.process(svom_xml) == []


# -- the archive and `mmbroker ingest`: history read across transports ---------------

@pytest.fixture
def db(db_url: str) -> Iterator[str]:
    assert main(["--db", db_url, "db", "upgrade"]) == 0
    yield db_url


def test_ingest_runs_by_two_roads_make_one_coincidence(db: str, tmp_path: Path) -> None:
    """The JSON notice and the GRB in one `mmbroker ingest`, the VOEvents of the same
    superevent in later runs: each run's engine recalls the event from every stream."""
    files = tmp_path / "files"
    files.mkdir()
    prelim = files / "MS181101ab-preliminary.json"
    shutil.copy(LVK / "MS181101ab-preliminary.json", prelim)
    event_time = parse_utc(json.loads(prelim.read_text())["event"]["time"], field="t")
    notice = json.loads((Path(__file__).parent / "data" / "gcn" /
                         "notices__fermi__gbm__trigger.ground1.example.json").read_text())
    notice.update(trigger_time=format_utc(event_time + timedelta(seconds=1.2)),
                  ra=195.0, dec=-18.5, alert_tense="test")
    grb = files / "gbm.json"
    grb.write_text(json.dumps(notice))

    def run(source: str, *paths: Path) -> None:
        assert main(["--db", db, "ingest", "--source", source, "-f", "json",
                     *map(str, paths)]) == 0

    run("igwn.gwalert", prelim)
    run("gcn.notices.fermi.gbm", grb)
    run("gcn.classic.voevent.LVC_PRELIMINARY", LVK / "MS181101ab-2-Preliminary.xml")
    run("gcn.classic.voevent.LVC_UPDATE", LVK / "MS181101ab-4-Update.xml")
    run("gcn.classic.voevent.LVC_RETRACTION", LVK / "MS181101ab-5-Retraction.xml")

    archive = Archive.open(db, upgrade=False)
    try:
        found = [c for c in archive.list_coincidences(1000) if c["pairing"] == "gw_cbc-grb"]
        sources = {a["source"] for a in archive.list_alerts(AlertQuery(limit=1000))}
    finally:
        archive.close()
    assert {"igwn.gwalert", "ivo://gwnet/LVC", "gcn.notices.fermi.gbm"} <= sources
    assert len({c["id"].rsplit("-", 1)[0] for c in found}) == 1  # one series
    states = [c["state"] for c in sorted(found, key=lambda c: c["revision"])]
    assert states == ["new", "updated", "retracted"]
