"""LVK igwn.gwalert notices (JSON and Avro) become Alerts with their sky maps.

Synthetic notices built here (sky maps from tests/test_skymap.py's builders,
Avro from the schema in tests/data/lvk/ or, when present, the official one in
the shared samples), then a sweep of the shared LVK samples.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import hashlib
import io
import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fastavro
import fastavro.schema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alerts_schema import Alert, validation_errors
from alerts_schema.errors import HostileInput, InputError, MalformedInput, NormalizationError
from crossmatch.skymap import read_multiorder
from listeners import avro as avro_machinery
from listeners import lvk
from listeners.base import MessageMeta, Normalized
from listeners.detect import Format, sniff
from tests.conftest import SAMPLES
from tests.test_skymap import fisher_map, multiorder_fits

DATA = Path(__file__).parent / "data" / "lvk"
LVK_SAMPLES = SAMPLES / "lvk"
OFFICIAL_SCHEMA = LVK_SAMPLES / "schema" / "igwn.alerts.v1_0.Alert.avsc"
AUTHORITY = "test.mmbroker"
RECEIVED = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)

GW_MAP = multiorder_fits(*fisher_map(123.4, -45.6, 400.0, max_order=7),
                         header={"CREATOR": "BAYESTAR", "INSTRUME": "H1,L1,V1"})
EXT_MAP = multiorder_fits(*fisher_map(123.6, -45.5, 1500.0, max_order=8),
                          header={"CREATOR": "RAVEN", "INSTRUME": "Fermi,H1,L1,V1"})


def meta(source: str = "igwn.gwalert") -> MessageMeta:
    return MessageMeta(source=source, received_at=RECEIVED, authority=AUTHORITY)


def record(alert_type: str = "PRELIMINARY", *, superevent_id: str = "S240101ab",
           time_created: str = "2024-01-01T10:00:40Z", skymap: bytes | None = GW_MAP,
           external: bool = False, group: str = "CBC") -> dict[str, Any]:
    """An LVK notice as a Python value (sky maps as bytes, as Avro carries them)."""
    if alert_type == "RETRACTION":
        event = None
    else:
        event = {
            "time": "2024-01-01T10:00:00.123Z", "far": 3.2e-10, "significant": True,
            "instruments": ["H1", "L1", "V1"], "group": group, "pipeline": "gstlal",
            "search": "AllSky",
            "classification": ({"BNS": 0.9, "NSBH": 0.05, "BBH": 0.0, "Terrestrial": 0.05}
                               if group == "CBC" else {}),
            "properties": {"HasNS": 0.99, "HasRemnant": 0.9} if group == "CBC" else {},
            "duration": None if group == "CBC" else 0.12,
            "central_frequency": None if group == "CBC" else 245.0,
            "skymap": skymap,
        }
    coinc = None
    if external:
        coinc = {"gcn_notice_id": 123456789, "ivorn": "ivo://nasa.gsfc.gcn/Fermi#GBM_test",
                 "observatory": "Fermi", "search": "GRB", "time_difference": -1.7,
                 "time_coincidence_far": 1e-12, "time_sky_position_coincidence_far": 2e-14,
                 "combined_skymap": EXT_MAP}
    return {"alert_type": alert_type, "time_created": time_created,
            "superevent_id": superevent_id, "event": event, "external_coinc": coinc,
            "urls": {"gracedb": f"https://gracedb.example/superevents/{superevent_id}/view/"}}


def as_json(rec: dict[str, Any]) -> bytes:
    """The JSON encoding: sky maps base64."""
    rec = copy.deepcopy(rec)
    for part, key in (("event", "skymap"), ("external_coinc", "combined_skymap")):
        if rec.get(part) and isinstance(rec[part].get(key), bytes):
            rec[part][key] = base64.b64encode(rec[part][key]).decode("ascii")
    return json.dumps(rec).encode()


def schema(official: bool = False) -> Any:
    if official:
        return fastavro.schema.load_schema(str(OFFICIAL_SCHEMA))
    return fastavro.parse_schema(json.loads((DATA / "lvk_alert.avsc").read_text()))


def as_avro(*recs: dict[str, Any], codec: str = "null", official: bool = False) -> bytes:
    out = io.BytesIO()
    fastavro.writer(out, schema(official), list(recs), codec=codec)
    return out.getvalue()


def check(result: Normalized) -> Alert:
    """Every alert follows the contract; returns the first."""
    assert result.alerts
    for alert in result.alerts:
        assert validation_errors("alert", alert.to_document()) == []
    return result.alerts[0]


# -- fields --------------------------------------------------------------------------------


def test_json_and_avro_give_the_same_alert() -> None:
    rec = record()
    from_json = lvk.normalize(as_json(rec), meta())
    from_avro = lvk.normalize(as_avro(rec), meta())
    assert check(from_json).to_document() == check(from_avro).to_document()
    assert [s.sha256 for s in from_json.skymaps] == [s.sha256 for s in from_avro.skymaps]


def test_preliminary_cbc_fields() -> None:
    result = lvk.normalize(as_json(record()), meta())
    alert = check(result)
    assert alert.source == "igwn.gwalert" and alert.event_id == "S240101ab"
    assert alert.id == f"ivo://{AUTHORITY}/igwn.gwalert#S240101ab-{alert.revision}"
    assert (alert.messenger, alert.facility, alert.role) == ("gravitational_wave", "LVK",
                                                             "observation")
    assert alert.alert_type == "initial"
    assert alert.trigger_time == datetime(2024, 1, 1, 10, 0, 0, 123000, tzinfo=UTC)
    assert alert.far_hz == 3.2e-10
    assert alert.signalness == pytest.approx(0.95)
    assert alert.instrument == "H1,L1,V1"
    assert alert.data_rights.level == "public"
    assert alert.provenance is not None
    assert (alert.provenance.pipeline, alert.provenance.reco_method) == ("gstlal", "BAYESTAR")
    extra = alert.extra
    assert extra["lvk_alert_type"] == "PRELIMINARY" and extra["significant"] is True
    assert extra["group"] == "CBC" and extra["search"] == "AllSky"
    assert extra["classification"]["BNS"] == 0.9 and extra["properties"]["HasNS"] == 0.99
    assert extra["instruments"] == ["H1", "L1", "V1"]
    assert extra["external_coinc"] is None
    assert extra["skymap"]["creator"] == "BAYESTAR" and extra["skymap"]["distmean_mpc"] == 100.0
    assert extra["time_created"] == "2024-01-01T10:00:40Z"
    assert extra["revision_rule"] == lvk.REVISION_RULE


def test_sky_map_is_stored_by_hash_with_its_area_and_peak() -> None:
    result = lvk.normalize(as_avro(record()), meta())
    alert = check(result)
    (sky_file,) = result.skymaps
    assert sky_file.data == GW_MAP and sky_file.format == "multiorder"
    assert sky_file.sha256 == hashlib.sha256(GW_MAP).hexdigest()
    sky = read_multiorder(GW_MAP)
    loc = alert.localization
    assert loc.kind == "skymap"
    assert loc.skymap_sha256 == sky_file.sha256 and loc.format == "multiorder"
    assert loc.url is None
    assert loc.area_90_deg2 == pytest.approx(sky.area_deg2(0.9))
    assert sky_file.area_90_deg2 == loc.area_90_deg2
    # Analytic: a Fisher distribution's 90% cap, kappa = 400.
    assert loc.area_90_deg2 == pytest.approx(
        2 * math.pi * -math.log(0.1) / 400 * (180 / math.pi) ** 2, rel=0.03)
    assert (loc.ra_deg, loc.dec_deg) == pytest.approx((123.4, -45.6), abs=0.5)


def test_external_coincidence_keeps_its_combined_map() -> None:
    result = lvk.normalize(as_json(record("UPDATE", external=True)), meta())
    alert = check(result)
    shas = {s.sha256: s for s in result.skymaps}
    assert set(shas) == {hashlib.sha256(GW_MAP).hexdigest(), hashlib.sha256(EXT_MAP).hexdigest()}
    coinc = alert.extra["external_coinc"]
    assert coinc["observatory"] == "Fermi" and coinc["gcn_notice_id"] == 123456789
    assert coinc["time_difference"] == -1.7
    assert coinc["time_sky_position_coincidence_far"] == 2e-14
    combined = coinc["combined_skymap"]
    assert combined["skymap_sha256"] == hashlib.sha256(EXT_MAP).hexdigest()
    assert combined["format"] == "multiorder"
    assert combined["area_90_deg2"] == pytest.approx(read_multiorder(EXT_MAP).area_deg2(0.9))
    assert combined["area_90_deg2"] < alert.localization.area_90_deg2
    assert combined["skymap"]["creator"] == "RAVEN"
    # The GW map stays the alert's localization.
    assert alert.localization.skymap_sha256 == hashlib.sha256(GW_MAP).hexdigest()


def test_burst_alert() -> None:
    alert = check(lvk.normalize(as_avro(record(group="Burst")), meta()))
    assert alert.signalness is None
    assert alert.extra["group"] == "Burst"
    assert alert.extra["duration_s"] == 0.12 and alert.extra["central_frequency_hz"] == 245.0
    assert alert.extra["classification"] == {}


def test_retraction_retracts() -> None:
    result = lvk.normalize(as_json(record("RETRACTION", time_created="2024-01-01T11:00:00Z")),
                           meta())
    alert = check(result)
    assert alert.alert_type == "retraction" and alert.localization.kind == "none"
    assert result.skymaps == ()
    assert alert.trigger_time == datetime(2024, 1, 1, 11, tzinfo=UTC)
    assert alert.extra["trigger_time_from"] == "time_created"
    assert alert.extra["event_time_known"] is False  # a stand-in, said so (issue 16 item 9)
    assert alert.far_hz is None and alert.provenance is None
    earlier = check(lvk.normalize(as_json(record("UPDATE", external=True)), meta()))
    assert alert.revision > earlier.revision


@pytest.mark.parametrize(("superevent_id", "source", "role"), [
    ("S240101ab", "igwn.gwalert", "observation"),
    ("MS240101ab", "igwn.gwalert", "test"),
    ("TS240101ab", "igwn.gwalert", "test"),
    ("S240101ab", "igwn.gwalert-playground", "test"),
    ("S240101ab", "file", "observation"),
])
def test_roles(superevent_id: str, source: str, role: str) -> None:
    alert = check(lvk.normalize(as_json(record(superevent_id=superevent_id)), meta(source)))
    assert alert.role == role
    assert alert.source == ("igwn.gwalert" if source == "file" else source)
    stream = "igwn.gwalert" if source == "file" else source
    assert alert.id.startswith(f"ivo://{AUTHORITY}/{stream}#{superevent_id}-")


def test_nan_and_unknown_fields_stay_json() -> None:
    rec = record()
    rec["event"]["classification"]["BBH"] = float("nan")
    alert = check(lvk.normalize(as_avro(rec), meta()))
    assert alert.extra["classification"]["BBH"] is None
    doc = json.loads(as_json(record()))
    doc["event"]["new_field"] = {"x": 1}
    doc["schema_version_hint"] = "v1_1"
    alert = check(lvk.normalize(json.dumps(doc).encode(), meta()))
    assert alert.extra["event_other"] == {"new_field": {"x": 1}}
    assert alert.extra["other"] == {"schema_version_hint": "v1_1"}


def test_deflate_and_several_records() -> None:
    later = record("UPDATE", time_created="2024-01-01T10:30:00Z")
    result = lvk.normalize(as_avro(record(), later, codec="deflate"), meta())
    assert len(result.alerts) == 2 and len(result.skymaps) == 1  # one map, stored once
    check(result)
    assert result.alerts[0].revision < result.alerts[1].revision


# -- revisions -----------------------------------------------------------------------------


def test_the_lvk_sequence_gets_increasing_revisions() -> None:
    sequence = [("EARLYWARNING", "2024-01-01T09:59:58Z", False),
                ("PRELIMINARY", "2024-01-01T10:00:20Z", False),
                ("PRELIMINARY", "2024-01-01T10:01:05Z", False),
                ("INITIAL", "2024-01-01T10:30:00Z", False),
                ("UPDATE", "2024-01-01T10:30:00Z", False),        # same second: ranks decide
                ("UPDATE", "2024-01-01T10:30:00Z", True),
                ("RETRACTION", "2024-01-01T10:30:00Z", False),
                ]
    revisions = [lvk.revision("S240101ab", datetime.fromisoformat(t), kind, ext)
                 for kind, t, ext in sequence]
    assert revisions == sorted(revisions) and len(set(revisions)) == len(revisions)
    assert revisions[0] == 6 * (9 * 3600 + 59 * 60 + 58) + 0


def test_revision_resolution_coarsens_later() -> None:
    day = datetime(2024, 1, 1, tzinfo=UTC)

    def rev(offset: timedelta, kind: str = "UPDATE") -> int:
        return lvk.revision("S240101ab", day + offset, kind)

    # One-second resolution for 36 h, then one minute until 15 days, then one hour.
    assert rev(timedelta(hours=35, minutes=59, seconds=59)) < rev(timedelta(hours=36))
    assert rev(timedelta(hours=36)) == rev(timedelta(hours=36, seconds=59))
    assert rev(timedelta(hours=36, seconds=59)) < rev(timedelta(hours=36, seconds=60))
    assert rev(timedelta(days=15)) == rev(timedelta(days=15, minutes=59))
    assert rev(timedelta(days=15)) < rev(timedelta(days=15, hours=1))
    assert rev(timedelta(days=740)) <= 1_000_000
    with pytest.raises(NormalizationError, match="too long after"):
        rev(timedelta(days=760))
    with pytest.raises(NormalizationError, match="precedes"):
        rev(timedelta(seconds=-1))


@settings(max_examples=200)
@given(st.integers(0, 740 * 86400), st.integers(0, 740 * 86400),
       st.sampled_from(["EARLYWARNING", "PRELIMINARY", "INITIAL", "UPDATE", "RETRACTION"]))
def test_revision_is_monotonic_and_bounded(a: int, b: int, kind: str) -> None:
    day = datetime(2018, 11, 1, tzinfo=UTC)
    ra = lvk.revision("MS181101ab", day + timedelta(seconds=min(a, b)), kind)
    rb = lvk.revision("MS181101ab", day + timedelta(seconds=max(a, b)), kind)
    assert 0 <= ra <= rb <= 1_000_000
    if max(a, b) - min(a, b) >= 3600:  # an hour apart is always a different revision
        assert ra < rb


@pytest.mark.parametrize(("superevent_id", "reason"), [
    ("GW170817", "not of the form"), ("S241399ab", "no valid date"), ("", "missing")])
def test_superevent_ids_that_name_no_date(superevent_id: str, reason: str) -> None:
    with pytest.raises(NormalizationError, match=reason):
        lvk.normalize(as_json(record(superevent_id=superevent_id)), meta())


def test_early_warning_spelling_with_underscore() -> None:
    rec = json.loads(as_json(record()))
    rec["alert_type"] = "EARLY_WARNING"
    alert = check(lvk.normalize(json.dumps(rec).encode(), meta()))
    assert alert.extra["lvk_alert_type"] == "EARLYWARNING" and alert.alert_type == "initial"


# -- routing -------------------------------------------------------------------------------


def test_accepts() -> None:
    js = json.loads(as_json(record()))
    assert lvk.accepts(Format.JSON, js, meta())
    assert lvk.accepts(Format.JSON, {"anything": 1}, meta("igwn.gwalert"))
    assert lvk.accepts(Format.JSON, js, meta("file"))
    assert not lvk.accepts(Format.JSON, {"anything": 1}, meta("file"))
    assert not lvk.accepts(Format.JSON, [js], meta("gcn.notices.swift.bat.guano"))
    avro = as_avro(record())
    assert sniff(avro) is Format.AVRO_OCF
    assert lvk.accepts(Format.AVRO_OCF, None, meta())
    assert lvk.accepts(Format.AVRO_OCF, None, meta("file"), avro)
    assert lvk.accepts(Format.AVRO_OCF, avro, meta("file"))  # bytes passed as "decoded"
    assert not lvk.accepts(Format.AVRO_OCF, None, meta("file"))  # nothing to look at
    other = io.BytesIO()
    fastavro.writer(other, {"type": "record", "name": "ztf.alert", "fields": [
        {"name": "x", "type": "int"}]}, [{"x": 1}])
    assert not lvk.accepts(Format.AVRO_OCF, other.getvalue(), meta("file"))
    assert not lvk.accepts(Format.AVRO_OCF, avro[:20], meta("file"))
    assert not lvk.accepts(Format.XML, None, meta())


def test_writer_schema_is_parsed_once() -> None:
    avro = as_avro(record())
    lvk.normalize(avro, meta())
    before = avro_machinery.parse_count()
    assert lvk.accepts(Format.AVRO_OCF, avro, meta("file"))
    lvk.handle(avro, None, meta("file"))
    assert avro_machinery.parse_count() == before  # served from the shared schema cache


def test_handle_uses_the_routers_decoded_json() -> None:
    data = as_json(record())
    alert = check(lvk.handle(data, json.loads(data), meta()))
    assert alert == check(lvk.normalize(data, meta()))


# -- hostile and broken --------------------------------------------------------------------


def test_truncated_base64_sky_map() -> None:
    doc = json.loads(as_json(record()))
    doc["event"]["skymap"] = doc["event"]["skymap"][:-3]
    with pytest.raises(MalformedInput, match=r"event\.skymap: invalid base64"):
        lvk.normalize(json.dumps(doc).encode(), meta())


def test_base64_of_a_truncated_map() -> None:
    doc = json.loads(as_json(record()))
    doc["event"]["skymap"] = base64.b64encode(GW_MAP[:5000]).decode()
    with pytest.raises(MalformedInput, match=r"event\.skymap: sky map FITS is truncated"):
        lvk.normalize(json.dumps(doc).encode(), meta())


@pytest.mark.parametrize("payload", [b"hello", b"x", b"PK\x03\x04zip", b"SIMPLE  = nonsense"])
def test_sky_map_that_is_not_fits(payload: bytes) -> None:
    rec = record(skymap=payload)
    reason = r"event\.skymap: sky map (is not a FITS file|FITS is truncated)"
    with pytest.raises(MalformedInput, match=reason):
        lvk.normalize(as_avro(rec), meta())
    with pytest.raises(MalformedInput, match=reason):
        lvk.normalize(as_json(rec), meta())


def test_combined_map_errors_name_their_field() -> None:
    rec = record("UPDATE", external=True)
    rec["external_coinc"]["combined_skymap"] = b"not fits"
    with pytest.raises(MalformedInput, match=r"external_coinc\.combined_skymap"):
        lvk.normalize(as_avro(rec), meta())


def test_truncated_avro_at_every_kind_of_place() -> None:
    data = as_avro(record())
    cuts = [3, 4, 10, 100, 500, 1000, len(data) // 2, len(data) - 17, len(data) - 1]
    for cut in cuts:
        with pytest.raises(MalformedInput):
            lvk.normalize(data[:cut], meta())


def test_corrupt_avro_block() -> None:
    data = bytearray(as_avro(record()))
    data[-1] ^= 0xFF  # the sync marker after the block
    with pytest.raises(MalformedInput, match="sync marker"):
        lvk.normalize(bytes(data), meta())
    # A second block (1 record, 2 bytes) followed by a wrong sync marker.
    with pytest.raises(MalformedInput, match="sync marker"):
        lvk.normalize(as_avro(record("RETRACTION")) + b"\x02\x04xx" + b"\0" * 16, meta())


def test_too_many_records_is_hostile() -> None:
    data = as_avro(*[record("RETRACTION")] * (lvk.MAX_RECORDS + 1))
    with pytest.raises(HostileInput, match="records"):
        lvk.normalize(data, meta())


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_corrupted_avro_fails_only_as_input_errors(data: st.DataObject) -> None:
    raw = bytearray(as_avro(record("RETRACTION")))
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    with contextlib.suppress(InputError):
        check(lvk.normalize(bytes(raw), meta()))


@pytest.mark.parametrize(("mutate", "error", "reason"), [
    (lambda d: d.pop("superevent_id"), NormalizationError, "superevent_id"),
    (lambda d: d.update(alert_type="FINAL"), NormalizationError, "alert_type"),
    (lambda d: d.update(alert_type=3), NormalizationError, "alert_type"),
    (lambda d: d.update(event=None), NormalizationError, "has no event"),
    (lambda d: d.update(event=[1]), NormalizationError, "event: expected an object"),
    (lambda d: d.update(time_created="yesterday"), NormalizationError, "time_created"),
    (lambda d: d["event"].update(time=None), NormalizationError, "event.time"),
    (lambda d: d["event"].update(far=-1.0), NormalizationError, "negative"),
    (lambda d: d["event"].update(far="fast"), NormalizationError, "event.far"),
    (lambda d: d["event"].update(significant="yes"), NormalizationError, "significant"),
    (lambda d: d["event"].update(instruments="H1"), NormalizationError, "instruments"),
    (lambda d: d["event"]["classification"].update(Terrestrial=3.0), NormalizationError,
     "Terrestrial"),
    (lambda d: d["event"].update(skymap=12), NormalizationError, "event.skymap"),
])
def test_notices_lacking_what_an_alert_needs(mutate: Any, error: type[Exception],
                                             reason: str) -> None:
    doc = json.loads(as_json(record()))
    mutate(doc)
    with pytest.raises(error, match=reason):
        lvk.normalize(json.dumps(doc).encode(), meta())


def test_not_an_object() -> None:
    with pytest.raises(NormalizationError, match="must be an object"):
        lvk.normalize(b"[1, 2]", meta())
    with pytest.raises(MalformedInput, match="invalid JSON"):
        lvk.normalize(b'{"superevent_id": ', meta())


# -- the official Avro schema and the shared samples ---------------------------------------

needs_schema = pytest.mark.skipif(not OFFICIAL_SCHEMA.is_file(),
                                  reason=f"official LVK Avro schema not at {OFFICIAL_SCHEMA}")


@needs_schema
def test_synthetic_notice_in_the_official_schema() -> None:
    for rec in (record(), record("UPDATE", external=True), record("RETRACTION")):
        data = as_avro(rec, official=True)
        assert lvk.accepts(Format.AVRO_OCF, data, meta("file"))
        ours = lvk.normalize(as_avro(rec), meta())
        theirs = lvk.normalize(data, meta())
        assert check(theirs).to_document() == check(ours).to_document()


SAMPLE_ALERTS = (sorted(p for p in LVK_SAMPLES.glob("MS*.*") if p.suffix in (".json", ".avro")
                        and "displayexample" not in p.name) if LVK_SAMPLES.is_dir() else [])
DISPLAY_EXAMPLES = sorted(LVK_SAMPLES.glob("*_displayexample.json")) if SAMPLE_ALERTS else []
needs_samples = pytest.mark.skipif(not SAMPLE_ALERTS,
                                   reason=f"no LVK sample alerts under {LVK_SAMPLES}")
# Order of the mock superevent's notices, for the revision check.
SEQUENCE = ["earlywarning", "preliminary", "initial", "update", "ext-update", "retraction"]


def _sample_kind(path: Path) -> str:
    return path.stem.removeprefix("MS181101ab-")


@needs_samples
@pytest.mark.parametrize("path", SAMPLE_ALERTS, ids=lambda p: p.name)
@pytest.mark.parametrize("source", ["file", "igwn.gwalert"])
def test_sample_alerts(path: Path, source: str) -> None:
    data = path.read_bytes()
    fmt = sniff(data)
    decoded = json.loads(data) if fmt is Format.JSON else None
    assert lvk.accepts(fmt, decoded, meta(source), data)
    result = lvk.handle(data, decoded, meta(source))
    alert = check(result)
    kind = _sample_kind(path)
    assert alert.event_id == "MS181101ab" and alert.role == "test"
    assert alert.source == "igwn.gwalert" and alert.facility == "LVK"
    if kind == "retraction":
        assert alert.alert_type == "retraction" and alert.localization.kind == "none"
        assert result.skymaps == ()
        return
    assert alert.alert_type == ("initial" if kind in ("earlywarning", "preliminary")
                                else "update")
    assert alert.trigger_time == datetime(2018, 11, 1, 22, 22, 46, 654000, tzinfo=UTC)
    assert alert.far_hz == pytest.approx(9.11069936486e-14)
    assert alert.signalness == pytest.approx(0.99)
    assert alert.extra["classification"]["BNS"] == 0.95
    bayestar = LVK_SAMPLES / "bayestar.multiorder.fits"
    loc = alert.localization
    if bayestar.is_file():  # the embedded map is the sample map, byte for byte
        assert loc.skymap_sha256 == hashlib.sha256(bayestar.read_bytes()).hexdigest()
    assert loc.area_90_deg2 == pytest.approx(30.97986, rel=1e-5)
    assert (loc.ra_deg, loc.dec_deg) == pytest.approx((194.30420, -17.85690), abs=1e-4)
    coinc = alert.extra["external_coinc"]
    if kind == "ext-update":
        assert len(result.skymaps) == 2 and coinc["observatory"] == "Fermi"
        combined = LVK_SAMPLES / "combined-ext.multiorder.fits"
        if combined.is_file():
            assert coinc["combined_skymap"]["skymap_sha256"] == hashlib.sha256(
                combined.read_bytes()).hexdigest()
        assert coinc["combined_skymap"]["area_90_deg2"] == pytest.approx(27.70617, rel=1e-5)
    else:
        assert coinc is None and len(result.skymaps) == 1


@needs_samples
def test_sample_json_and_avro_agree_and_revisions_follow_the_sequence() -> None:
    by_kind: dict[str, dict[str, Any]] = {}
    for path in SAMPLE_ALERTS:
        doc = check(lvk.normalize(path.read_bytes(), meta())).to_document()
        other = by_kind.setdefault(_sample_kind(path), doc)
        assert other == doc, f"{path.name}: JSON and Avro differ"
    revisions = [by_kind[k]["revision"] for k in SEQUENCE if k in by_kind]
    assert revisions == sorted(revisions) and len(set(revisions)) == len(revisions)


@needs_samples
@pytest.mark.parametrize("path", DISPLAY_EXAMPLES, ids=lambda p: p.name)
def test_display_examples_with_elided_maps_are_refused(path: Path) -> None:
    # The user guide shortens the base64 sky map to "U0lN...": not a sky map.
    with pytest.raises(MalformedInput, match=r"event\.skymap: invalid base64"):
        lvk.normalize(path.read_bytes(), meta())
