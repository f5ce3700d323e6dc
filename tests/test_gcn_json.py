"""GCN Kafka JSON notices (``listeners.gcn_json``): samples, known answers, hostile input.

The copied samples in ``tests/data/gcn`` (NASA gcn-schema examples and the Apache-2.0
heartbeat example; see its MANIFEST.tsv) make the tests pass from a plain clone; the
sweep over ``../shared/samples`` adds the GPL gwcelery examples, read in place and
never copied.
"""

from __future__ import annotations

import base64
import csv
import gzip
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from alerts_schema import (
    Alert,
    EllipseLocalization,
    PointLocalization,
    SkymapLocalization,
    validation_errors,
)
from alerts_schema.errors import HostileInput, InputError, MalformedInput, NormalizationError
from listeners import gcn_json, json_limits, voevent
from listeners.base import MessageMeta, Normalized
from listeners.detect import Format, sniff
from tests.conftest import SAMPLES

DATA = Path(__file__).resolve().parent / "data" / "gcn"
AUTHORITY = "test.mmbroker"
RECEIVED = datetime(2025, 1, 1, tzinfo=UTC)
PERMISSIVE = ("Apache", "BSD", "MIT", "none stated (NASA)")
SHARED_DIRS = ("gcn-schema", "gcn-kafka-json")


def meta(source: str = "file", received_at: datetime = RECEIVED) -> MessageMeta:
    return MessageMeta(source, received_at, AUTHORITY)


def load(name: str) -> dict[str, Any]:
    return json.loads((DATA / name).read_text())


def run(document: dict[str, Any] | bytes, source: str = "file") -> Normalized:
    """Normalize, and hold every alert produced to the contract."""
    data = document if isinstance(document, bytes) else json.dumps(document).encode()
    result = gcn_json.normalize(data, meta(source))
    for alert in result.alerts:
        assert validation_errors("alert", alert.to_document()) == []
        json.dumps(alert.extra)  # JSON values only
    return result


def one(document: dict[str, Any], source: str = "file") -> Alert:
    (alert,) = run(document, source).alerts
    return alert


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# -- sweeps ---------------------------------------------------------------------------

def expected_rejection(path: Path) -> str | None:
    """What the reason must say for files that are not notices; None for notices."""
    if path.name.endswith(".schema.json"):
        return "JSON Schema"
    if path.name.startswith("circulars"):
        return "GCN Circular"
    if path.name.startswith("notices__core__"):
        return "core-schema fragment"
    return None


def check_file(path: Path) -> Normalized | None:
    data = path.read_bytes()
    decoded = json_limits.loads(data)
    assert gcn_json.accepts(sniff(data), decoded, meta()), f"{path.name} not accepted"
    reason = expected_rejection(path)
    if reason is not None:
        with pytest.raises(NormalizationError, match=reason):
            gcn_json.normalize(data, meta())
        return None
    result = run(data)
    assert result == gcn_json.handle(data, decoded, meta())
    if path.name == "gcn.heartbeat.example.json":
        assert result.heartbeats and not result.alerts
    else:
        assert result.alerts and not result.heartbeats
    return result


def shared_files() -> list[Any]:
    files = sorted(p for d in SHARED_DIRS if (SAMPLES / d).is_dir()
                   for p in (SAMPLES / d).rglob("*") if p.is_file())
    if not files:
        return [pytest.param(None, marks=pytest.mark.skip(
            reason=f"shared GCN samples not found under {SAMPLES}"))]
    return [pytest.param(p, id=str(p.relative_to(SAMPLES))) for p in files]


@pytest.mark.parametrize("path", sorted(DATA.glob("*.json")), ids=lambda p: p.name)
def test_copied_sample(path: Path) -> None:
    check_file(path)


@pytest.mark.parametrize("path", shared_files())
def test_shared_sample(path: Path) -> None:
    check_file(path)


def test_copied_samples_are_all_in_the_manifest_with_permissive_licences() -> None:
    with (DATA / "MANIFEST.tsv").open() as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    listed = {row["local_file"]: row for row in rows}
    present = {p.name for p in DATA.iterdir() if p.name != "MANIFEST.tsv"}
    assert present == set(listed)
    for row in rows:
        assert row["license_of_repo"].startswith(PERMISSIVE), row
        assert "GPL" not in row["license_of_repo"]


def test_copied_samples_cover_the_shared_notice_examples() -> None:
    shared = SAMPLES / "gcn-schema"
    if not shared.is_dir():
        pytest.skip(f"shared GCN samples not found under {SAMPLES}")
    assert {p.name for p in shared.glob("*.example.json")} <= {p.name for p in DATA.iterdir()}


# -- known answers ----------------------------------------------------------------------

def test_fermi_gbm_final_position() -> None:
    topic = "gcn.notices.fermi.gbm.final_position"
    alert = one(load("notices__fermi__gbm__trigger.final.example.json"), topic)
    assert alert.source == topic
    assert alert.id == f"ivo://{AUTHORITY}/{topic}#745121685-6"
    assert (alert.facility, alert.instrument, alert.messenger) == ("Fermi", "GBM", "gamma_ray")
    assert (alert.event_id, alert.revision, alert.alert_type) == ("745121685", 6, "update")
    assert alert.role == "observation"
    # "2024-08-24T02:14:40.43" carries no zone: GCN means UTC.
    assert alert.trigger_time == utc(2024, 8, 24, 2, 14, 40, 430000)
    loc = alert.localization
    assert isinstance(loc, PointLocalization)
    assert (loc.ra_deg, loc.dec_deg, loc.error_radius_deg, loc.containment) == (
        29.24, -63.62, 1.0, 0.68)
    assert alert.extra["id"] == ["745121685", "bn240812094"]
    assert alert.extra["healpix_url"].endswith("glg_healpix_all_bn240812094.fit")
    assert alert.data_rights.level == "public"


@pytest.mark.parametrize(("name", "systematic_deg"), [
    ("ground1", 3.72), ("ground2", 3.72), ("final", 3.71),  # systematic_included: false
    ("flight1", None),  # systematic_included: true: its radius holds it already
])
def test_fermi_gbm_systematic_as_on_the_voevent_path(name: str,
                                                     systematic_deg: float | None) -> None:
    """A GBM position whose notice leaves the systematic out gets its position type's
    (Connaughton et al. 2015), as the same position by VOEvent gets it."""
    alert = one(load(f"notices__fermi__gbm__trigger.{name}.example.json"))
    loc = alert.localization
    assert isinstance(loc, PointLocalization) and loc.systematic_deg == systematic_deg
    assert ("systematic_model" in alert.extra) is (systematic_deg is not None)
    if name == "final":  # the VOEvent of the same type states the same core
        gbm_final = voevent.gcn_type(115)
        assert gbm_final is not None and gbm_final.systematic_deg == loc.systematic_deg


def test_time_without_zone_equals_time_with_z() -> None:
    doc = load("notices__fermi__gbm__trigger.final.example.json")
    zoned = dict(doc, trigger_time=doc["trigger_time"] + "Z")
    assert one(doc).trigger_time == one(zoned).trigger_time


def test_fermi_gbm_sequence_revisions_increase() -> None:
    names = ["alert", "flight1", "flight2", "flight3", "ground1", "ground2", "final"]
    alerts = [one(load(f"notices__fermi__gbm__trigger.{n}.example.json")) for n in names]
    assert [a.revision for a in alerts] == list(range(7))
    assert {a.event_id for a in alerts} == {"745121685"}
    assert [a.alert_type for a in alerts] == ["initial"] + ["update"] * 6
    assert alerts[0].localization.kind == "none"
    energy = alerts[0].energy
    assert energy is not None and energy.best_gev is None
    assert energy.min_gev == pytest.approx(47e-6) and energy.max_gev == pytest.approx(291e-6)


def test_swift_guano_update_and_retraction() -> None:
    update = one(load("notices__swift__bat__guano.loc_arc_min.example.json"))
    assert update.source == "gcn.notices.swift.bat.guano"
    assert update.id == f"ivo://{AUTHORITY}/gcn.notices.swift.bat.guano#694215995-2"
    assert (update.facility, update.instrument) == ("Swift", "BAT-GUANO")
    assert update.far_hz == 1e-05  # GCN JSON states FAR in Hz: kept, not converted
    loc = update.localization
    assert isinstance(loc, PointLocalization)
    assert (loc.ra_deg, loc.dec_deg, loc.error_radius_deg, loc.containment) == (
        336.26, 25.139, 0.5, 0.9)
    assert update.trigger_time == utc(2022, 12, 31, 21, 46, 5, 130000)

    retraction = one(load("notices__swift__bat__Guano.Retraction.example.json"))
    assert (retraction.alert_type, retraction.revision) == ("retraction", 3)
    assert retraction.event_id == update.event_id and retraction.revision > update.revision
    assert retraction.localization.kind == "none"


def test_guano_invalid_inline_map_is_noted_not_fatal() -> None:
    alert = one(load("notices__swift__bat__guano.loc_map.example.json"))
    assert alert.localization.kind == "none"
    assert alert.extra["healpix_file"]["ignored"] == "not valid base64"


def test_maxi_ellipse_circle_rectangle_noerror() -> None:
    ellipse = one(load("notices__maxi__gsc.unknown.ellipse.example.json")).localization
    assert isinstance(ellipse, EllipseLocalization)
    assert (ellipse.semi_major_deg, ellipse.semi_minor_deg, ellipse.position_angle_deg,
            ellipse.containment) == (0.22, 0.19, 153.0, 0.9)

    circle = one(load("notices__maxi__gsc.unknown.circle.example.json")).localization
    assert isinstance(circle, PointLocalization) and circle.error_radius_deg == 1.5

    doc = load("notices__maxi__gsc.unknown.rectangle.example.json")
    rect = one(doc)
    assert isinstance(rect.localization, PointLocalization)
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    centre = SkyCoord(doc["ra"] * u.deg, doc["dec"] * u.deg)
    corners = SkyCoord([c[0] for c in doc["rectangular_error_corners"]] * u.deg,
                       [c[1] for c in doc["rectangular_error_corners"]] * u.deg)
    expected = float(centre.separation(corners).deg.max())
    assert rect.localization.error_radius_deg == pytest.approx(expected, rel=1e-9)
    assert rect.localization.containment == 0.9

    noerror = one(load("notices__maxi__gsc.unknown.noerror.example.json"))
    assert isinstance(noerror.localization, PointLocalization)
    assert noerror.localization.error_radius_deg == 0.0
    assert noerror.extra["localization_note"] == "position error not stated"


def test_maxi_retractions() -> None:
    known = one(load("notices__maxi__gsc.known.retraction.example.json"))
    assert (known.alert_type, known.revision, known.event_id) == ("retraction", 1, "0858800020")
    assert known.localization.kind == "none"
    assert one(load("notices__maxi__gsc.known.example.json")).revision == 0


def test_chime_frb_family() -> None:
    detection = one(load("notices__chime__frb.detection.example.json"))
    assert (detection.facility, detection.messenger) == ("CHIME", "radio")
    assert detection.trigger_time_error_s == 0.00786431
    loc = detection.localization
    # CHIME lists [0.504, 0.599, 0]: minor axis first; the same ellipse, turned by 90 deg.
    assert isinstance(loc, EllipseLocalization)
    assert loc.semi_major_deg == pytest.approx(0.598921231135782)
    assert loc.semi_minor_deg == pytest.approx(0.503806986334273)
    assert loc.position_angle_deg == 90.0
    energy = detection.energy
    assert energy is not None
    assert energy.min_gev == pytest.approx(400e6 * 4.135667696e-15 * 1e-9)
    assert energy.max_gev == pytest.approx(800e6 * 4.135667696e-15 * 1e-9)

    update = one(load("notices__chime__frb.update.example.json"))
    retraction = one(load("notices__chime__frb.retraction.example.json"))
    assert detection.revision < update.revision < retraction.revision
    assert (update.alert_type, retraction.alert_type) == ("update", "retraction")
    assert retraction.revision == gcn_json.REVISION_MAX
    assert {detection.event_id, update.event_id, retraction.event_id} == {"427325191"}

    subsequent = one(load("notices__chime__frb.subsequent.example.json"))
    assert (subsequent.event_id, subsequent.alert_type, subsequent.revision) == (
        "427325192", "update", 1)
    assert subsequent.extra["known_source"] == "FRB 20231013B"


def test_subsequent_supersedes_the_initial_of_the_same_id() -> None:
    """DSA-110's examples send the detection and the subsequent alert under one id."""
    detection = one(load("notices__dsa110__frb.detection.example.json"))
    subsequent = one(load("notices__dsa110__frb.subsequent.example.json"))
    assert detection.event_id == subsequent.event_id
    assert detection.revision < subsequent.revision


def test_update_without_record_number_orders_by_issue_time() -> None:
    doc = load("notices__chime__frb.update.example.json")
    first = one(dict(doc, alert_datetime="2024-09-18T07:20:10.765268Z"))
    later = one(dict(doc, alert_datetime="2024-09-18T09:19:10Z"))
    assert first.revision == 61 and later.revision == 1 + 7199
    assert first.revision < later.revision < gcn_json.REVISION_MAX


def test_test_tenses_and_test_notice_types() -> None:
    assert one(load("notices__superk__sn_alert.real.example.json")).role == "observation"
    assert one(load("notices__superk__sn_alert.test.example.json")).role == "test"
    assert one(load("notices__svom__grm__trigger.example.json")).role == "test"
    # Tense "current", but the notice type (schema) is BurstCube's test notice.
    burstcube_test = one(load("notices__burstcube__test.example.json"))
    assert burstcube_test.role == "test"
    real = load("notices__burstcube__alert.example.json")
    assert one(real).role == "observation"
    assert one(real, "gcn.notices.burstcube.test").role == "test"
    for tense, role in [("injection", "test"), ("commanded", "test"), ("TEST", "test"),
                        ("planned", "prediction"), ("archival", "observation")]:
        assert one(dict(real, alert_tense=tense)).role == role
    assert one(load("notices__heasarc__archive_alert.example.json")).role == "utility"


def test_icecube_gold_bronze_track() -> None:
    alert = one(load(
        "notices__icecube__single_neutrino_alerts.gold_bronze_track_alerts.example.json"))
    assert (alert.facility, alert.instrument, alert.messenger) == ("IceCube", "IC86", "neutrino")
    assert alert.event_id == "137840_57034692"
    assert alert.energy is not None and alert.energy.best_gev == pytest.approx(127290.0)
    assert alert.far_hz == 8.029e-08 and alert.signalness == 0.34064
    assert alert.provenance is not None and alert.provenance.pipeline == "Bronze Track Alert"
    assert alert.trigger_time == utc(2023, 4, 16, 5, 22, 26, 150574)


def test_icecube_lvk_nu_track_search_nested_localization() -> None:
    doc = load("notices__icecube__lvk_nu_track_search.example.json")
    alert = one(doc, "gcn.notices.icecube.lvk_nu_track_search")
    assert (alert.event_id, alert.revision, alert.messenger) == ("S230914ak", 1, "neutrino")
    assert alert.p_value == 0.0191
    loc = alert.localization
    assert isinstance(loc, PointLocalization)
    assert (loc.ra_deg, loc.dec_deg, loc.error_radius_deg, loc.containment) == (
        17.49, 16.18, 0.5, 0.9)
    assert len(alert.extra["coincident_events"]) == 2
    assert alert.energy is not None
    assert (alert.energy.min_gev, alert.energy.max_gev) == (542, 23000000)

    no_direction = {k: v for k, v in doc.items() if k != "most_probable_direction"}
    best = one(no_direction).localization
    assert isinstance(best, PointLocalization) and (best.ra_deg, best.dec_deg) == (17.48, 16.15)

    no_events = dict(no_direction, coincident_events=[], n_events_coincident=0,
                     pval_generic=None, pval_bayesian=None)
    empty = one(no_events)
    assert empty.localization.kind == "none" and empty.p_value is None


def test_km3net_energies() -> None:
    single = one(load("notices__km3net__alert.example.json"))
    assert single.energy is not None and single.energy.best_gev == 120000.0
    assert (single.facility, single.instrument) == ("KM3NeT", "ORCA024")
    multiplet = one(load("notices__km3net__alert.multiplet.example.json"))
    assert multiplet.energy is not None and multiplet.energy.min_gev == 120000.0


def test_superk_energy_in_gev() -> None:
    alert = one(load("notices__superk__sn_alert.real.example.json"))
    assert alert.energy is not None
    assert alert.energy.min_gev == pytest.approx(6000 * 1e-6)
    assert alert.energy.max_gev == pytest.approx(100000 * 1e-6)
    assert alert.facility == "Super-Kamiokande"


def test_boom_one_alert_per_target() -> None:
    (alert,) = run(load("notices__boom__alert.example.json")).alerts
    assert (alert.facility, alert.messenger, alert.event_id) == ("BOOM", "optical",
                                                                "ZTF25acffkdr")
    assert alert.trigger_time == utc(2025, 11, 28, 10, 7, 8, 3000)  # first detection
    assert len(alert.extra["photometry"]) == 7


def test_heartbeat_from_topic_and_file() -> None:
    doc = json.loads((DATA / "gcn.heartbeat.example.json").read_text())
    for source in ("gcn.heartbeat", "file"):
        result = run(doc, source)
        assert not result.alerts and bool(result)
        (beat,) = result.heartbeats
        assert (beat.stream, beat.detector) == ("gcn.heartbeat", "")
        assert beat.time == utc(2024, 7, 25, 15, 50, 35, 792451)
    with pytest.raises(NormalizationError, match="alert_datetime"):
        gcn_json.normalize(b"{}", meta("gcn.heartbeat"))


def test_ra_is_never_wrapped() -> None:
    """Issue 14, item 6: an RA outside [0, 360) is refused, not repaired."""
    from alerts_schema.errors import ImplausibleValue

    doc = load("notices__swift__bat__guano.loc_arc_min.example.json")
    for ra in (-10.0, 360.0, 540.0, -360.0, 400.0):
        with pytest.raises(ImplausibleValue, match=r"outside \[0, 360\)"):
            one(dict(doc, ra=ra))


def test_private_streams_are_proprietary() -> None:
    doc = load("notices__fermi__gbm__trigger.final.example.json")
    assert one(dict(doc, instrument="GBM-Targeted-Private")).data_rights.level == "proprietary"
    topic = "gcn.notices.fermi.gbm.targeted.private.igwn"
    assert one(doc, topic).data_rights.level == "proprietary"


def fits_header(*cards: str) -> bytes:
    """A minimal FITS primary header, as the sky maps GCN inlines begin."""
    lines = ["SIMPLE  =                    T", "BITPIX  =                    8",
             "NAXIS   =                    0", *cards, "END"]
    block = "".join(line.ljust(80) for line in lines).encode()
    return block.ljust(2880, b" ")


def test_inline_sky_map() -> None:
    """An inline map the reader reads is the localization; the stated position is kept
    as the summary point and its region in extra (issue 16, item 1)."""
    doc = load("notices__swift__bat__guano.loc_map.example.json")
    raw = (SAMPLES / "voevents" / "gwcelery" / "fermi_skymap.fits.gz").read_bytes()
    result = run(dict(doc, healpix_file=base64.b64encode(raw).decode()))
    (skymap,) = result.skymaps
    (alert,) = result.alerts
    assert skymap.data == raw and skymap.format == "flat"
    loc = alert.localization
    assert isinstance(loc, SkymapLocalization)
    assert loc.skymap_sha256 == skymap.sha256
    # No position stated: the summary point is the map's densest pixel.
    assert (loc.ra_deg, loc.dec_deg) == pytest.approx((225.0, -72.3876), abs=1e-3)
    assert loc.area_90_deg2 == pytest.approx(1373.47, rel=1e-4) == skymap.area_90_deg2

    multi = (SAMPLES / "lvk" / "bayestar.multiorder.fits").read_bytes()
    gz = run(dict(doc, healpix_file=base64.b64encode(gzip.compress(multi)).decode()))
    assert gz.skymaps[0].format == "multiorder"

    stated = load("notices__swift__bat__guano.loc_arc_min.example.json")
    point = run(stated).alerts[0].localization
    assert isinstance(point, PointLocalization)
    with_position = run(dict(stated, healpix_file=base64.b64encode(raw).decode()))
    (mapped,) = with_position.alerts
    assert mapped.localization.kind == "skymap"  # what matching uses
    assert (mapped.localization.ra_deg, mapped.localization.dec_deg) == (  # type: ignore[union-attr]
        point.ra_deg, point.dec_deg)
    assert mapped.extra["position"] == point.model_dump(mode="json")
    assert mapped.extra["healpix_file"]["sha256"] == skymap.sha256

    # A FITS file that is no sky map does not displace the stated position.
    header_only = run(dict(stated, healpix_file=base64.b64encode(fits_header()).decode()))
    assert header_only.alerts[0].localization == point
    assert header_only.skymaps == ()
    assert header_only.alerts[0].extra["healpix_file"]["ignored"].startswith(
        "not a readable sky map")


def test_stream_names_for_files() -> None:
    cases = {
        "https://gcn.nasa.gov/schema/v4.1.0/gcn/notices/einstein_probe/wxt/alert.schema.json":
            "gcn.notices.einstein_probe.wxt.alert",
        "https://gcn.nasa.gov/schema/gcn/notices/fermi/gbm/TargetedSearch.schema.json":
            "gcn.notices.fermi.gbm.targeted_search",
        "https://github.com/nasa-gcn/gcn-schema/blob/main/gcn/notices/swift/bat/Guano.schema.json":
            "gcn.notices.swift.bat.guano",
    }
    for url, stream in cases.items():
        assert gcn_json.stream_name({"$schema": url}, meta()) == stream
    schemaless = {"mission": "Swift", "instrument": "BAT-GUANO"}
    assert gcn_json.stream_name(schemaless, meta()) == "gcn.notices.swift.bat.guano"
    assert gcn_json.stream_name(schemaless, meta("gcn.notices.x.y")) == "gcn.notices.x.y"


def test_pure_and_independent_of_receipt_time() -> None:
    data = (DATA / "notices__fermi__gbm__trigger.flight1.example.json").read_bytes()
    first = gcn_json.normalize(data, meta(received_at=RECEIVED))
    again = gcn_json.normalize(data, meta(received_at=utc(2030, 1, 1)))
    assert first == again


def test_gwcelery_examples_read_in_place() -> None:
    """GPL-licensed gwcelery examples: checked where they lie, never copied."""
    root = SAMPLES / "gcn-kafka-json" / "gwcelery"
    if not root.is_dir():
        pytest.skip(f"gwcelery GCN examples not found under {root}")
    fermi = run((root / "kafka_alert_fermi.json").read_bytes())
    (alert,) = fermi.alerts
    (skymap,) = fermi.skymaps
    assert alert.source == "gcn.notices.fermi.gbm.targeted_search"
    assert alert.data_rights.level == "proprietary"  # GBM-Targeted-Private
    assert alert.far_hz == 5e-06
    assert alert.extra["healpix_file"]["sha256"] == skymap.sha256
    # The inline map is the localization; the stated circle is the summary and in extra.
    loc = alert.localization
    assert isinstance(loc, SkymapLocalization) and loc.skymap_sha256 == skymap.sha256
    assert (loc.ra_deg, loc.dec_deg) == (14.5, -40.1)
    stated = alert.extra["position"]
    assert (stated["error_radius_deg"], stated["containment"]) == (0.3, 0.68)  # [0.3]

    swift = one(json.loads((root / "kafka_alert_swift.json").read_text()))
    assert swift.source == "gcn.notices.swift.bat.guano"  # no $schema: named from mission
    assert isinstance(swift.localization, PointLocalization)
    assert swift.localization.error_radius_deg == 0.03  # ra_uncertainty [0.03]
    assert (swift.revision, swift.alert_type) == (2, "update")
    noloc = one(json.loads((root / "kafka_alert_swift_noloc.json").read_text()))
    assert noloc.localization.kind == "none"
    svom = one(json.loads((root / "kafka_alert_svom_wakeup.json").read_text()))
    assert (svom.role, svom.signalness) == ("test", 1.0)


# -- routing ----------------------------------------------------------------------------

def test_accepts() -> None:
    notice = load("notices__swift__bat__Guano.example.json")
    lvk = {"superevent_id": "S230914ak", "alert_type": "PRELIMINARY"}
    assert gcn_json.accepts(Format.JSON, notice, meta("gcn.notices.swift.bat.guano"))
    assert gcn_json.accepts(Format.JSON, {"alert_datetime": "x"}, meta("gcn.heartbeat"))
    assert gcn_json.accepts(Format.JSON, notice, meta("file"))
    assert not gcn_json.accepts(Format.JSON, lvk, meta("gcn.notices.lvk.alert"))
    assert not gcn_json.accepts(Format.JSON, notice, meta("igwn.gwalert"))
    assert not gcn_json.accepts(Format.JSON, notice, meta("gcn.classic.voevent.SWIFT_BAT"))
    assert not gcn_json.accepts(Format.XML, None, meta("gcn.notices.svom.voevent.eclairs"))
    assert not gcn_json.accepts(Format.JSON, [notice], meta("gcn.notices.swift.bat.guano"))
    assert not gcn_json.accepts(Format.JSON, {"hello": "world"}, meta("file"))
    assert not gcn_json.accepts(Format.JSON, {"$schema": "https://example.org/schema/gcn/"
                                                         "notices/x/y.schema.json"}, meta())
    schemaless = {k: v for k, v in notice.items() if k != "$schema"}
    assert gcn_json.accepts(Format.JSON, schemaless, meta("file"))


# -- hostile and malformed -------------------------------------------------------------

BASE = "notices__swift__bat__guano.loc_arc_min.example.json"
HOSTILE: dict[str, tuple[dict[str, Any], str]] = {
    "dec-200": ({"dec": 200}, "dec = 200 deg is outside [-90, 90]"),
    "dec-below-pole": ({"dec": -90.5}, "outside [-90, 90]"),
    "ra-string": ({"ra": "22h25m"}, "ra: expected a number, got '22h25m'"),
    "ra-bool": ({"ra": True}, "ra: expected a number"),
    "ra-huge-int": ({"ra": 10 ** 400}, "too large"),
    "ra-absurd": ({"ra": 1e300}, "ra = 1e+300 deg is outside [0, 360)"),
    "ra-without-dec": ({"dec": None}, "ra is given without dec"),
    "radius-negative": ({"ra_dec_error": -1}, "[0, 180] degrees"),
    "radius-too-big": ({"ra_dec_error": 400}, "[0, 180] degrees"),
    "radius-four-values": ({"ra_dec_error": [1, 2, 3, 4]}, "got 4 values"),
    "radius-empty": ({"ra_dec_error": []}, "got 0 values"),
    "radius-null-axis": ({"ra_dec_error": [1, None]}, "ra_dec_error[1]: expected a number"),
    "containment-percent": ({"containment_probability": 90}, "strictly between 0 and 1"),
    "containment-zero": ({"containment_probability": 0}, "strictly between 0 and 1"),
    "far-negative": ({"far": -1}, "far = -1 Hz is negative"),
    "far-string": ({"far": "1e-5"}, "far: expected a number"),
    "p-astro-above-one": ({"p_astro": 1.5}, "p_astro = 1.5 is not a probability"),
    "record-negative": ({"record_number": -2}, "record_number -2 is outside"),
    "record-fraction": ({"record_number": 1.5}, "record_number: expected a whole number"),
    "record-string": ({"record_number": "3"}, "record_number: expected a number, got '3'"),
    "alert-type-unknown": ({"alert_type": "final"}, "alert_type 'final' is not one of"),
    "tense-unknown": ({"alert_tense": "maybe"}, "alert_tense 'maybe' is not one of"),
    "time-words": ({"trigger_time": "yesterday"}, "trigger_time: 'yesterday' is not"),
    "time-number": ({"trigger_time": 1672523165}, "trigger_time: expected an ISO 8601"),
    "id-object": ({"id": {"a": 1}}, "id: expected a string or a list of strings"),
    "id-too-long": ({"id": ["x" * 300]}, "exceeds 256"),
    "band-reversed": ({"rate_energy_range": [350, 15]}, "low bound above high bound"),
    "band-negative": ({"rate_energy_range": [-1, 5]}, "negative bound"),
    "band-string": ({"rate_energy_range": "15-350"}, "expected [low, high]"),
    "band-unit": ({"spectral_band_units": "furlong"}, "unknown energy unit 'furlong'"),
    "time-error-negative": ({"trigger_time_error": -0.1}, "trigger_time_error = -0.1 s"),
    "mission-number": ({"mission": 42}, "mission: expected a string"),
    "shape-box": ({"ra_dec_error": None, "ra_uncertainty": [0.1],
                   "uncertainty_shape": "box"}, "uncertainty_shape 'box' is not supported"),
    "corners-short": ({"ra_dec_error": None, "rectangular_error_corners": [[1, 2]]},
                      "expected a list of [ra, dec] corners"),
    "corner-dec": ({"ra_dec_error": None,
                    "rectangular_error_corners": [[1, 2], [1, 3], [2, 95]]}, "outside"),
    "healpix-number": ({"healpix_file": 7}, "healpix_file: expected base64 text"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_values_give_clear_errors(name: str) -> None:
    changes, expected = HOSTILE[name]
    doc = {**load(BASE), **changes}
    with pytest.raises(NormalizationError) as caught:
        run(doc)
    assert expected in caught.value.reason


@pytest.mark.parametrize(("data", "error", "expected"), [
    (b"[1, 2]", NormalizationError, "a GCN notice is a JSON object; got a JSON array"),
    (b'"notice"', NormalizationError, "got a JSON string"),
    (b"{}", NormalizationError, "no trigger_time, observation_start or alert_datetime"),
    # a float overflow decodes as "not stated" (json_limits), leaving half a position
    (b'{"ra": 1e400, "dec": 0, "trigger_time": "2024-01-01T00:00:00"}', NormalizationError,
     "ra: inf is not a finite number"),
    # NaN decodes as "not stated"; what remains is a notice without a time
    (b'{"far": NaN}', NormalizationError, "no trigger_time"),
    (b'{"id": "1"', MalformedInput, "invalid JSON"),
    (b"[" * 200 + b"]" * 200, HostileInput, "nested"),
    (b'{"superevent_id": "S1", "trigger_time": "2024-01-01T00:00:00Z"}', NormalizationError,
     "igwn.gwalert normalizer"),
])
def test_malformed_messages(data: bytes, error: type[InputError], expected: str) -> None:
    with pytest.raises(error) as caught:
        gcn_json.normalize(data, meta("gcn.notices.swift.bat.guano"))
    assert expected in caught.value.reason


def test_no_mission_anywhere_is_refused() -> None:
    doc = {"trigger_time": "2024-01-01T00:00:00Z", "ra": 1, "dec": 2}
    with pytest.raises(NormalizationError, match="cannot tell which mission"):
        gcn_json.normalize(json.dumps(doc).encode(), meta("some.other.topic"))
    alert = one(doc, "gcn.notices.newmission.alert")
    assert (alert.facility, alert.messenger) == ("newmission", "other")


ODD_VALUES: list[Any] = [None, "", "x", [], [None], {}, {"a": []}, True, -1, 0, 1e308,
                         -1e308, [[1, 2]], "2024-13-45T99:99:99"]


@pytest.mark.parametrize("name", [
    "notices__fermi__gbm__trigger.final.example.json",
    "notices__icecube__lvk_nu_track_search.example.json",
    "notices__km3net__alert.multiplet.example.json",
    "notices__boom__alert.example.json",
    "notices__chime__frb.detection.example.json",
])
def test_any_odd_field_value_is_an_alert_or_an_input_error(name: str) -> None:
    """No wrong type or absurd value in any field may crash the normalizer."""
    base = load(name)
    for key in base:
        for value in ODD_VALUES:
            doc = {**base, key: value}
            try:
                run(doc)
            except InputError as exc:
                assert exc.reason and len(exc.reason) < 400, (key, value, exc.reason)


def test_non_finite_never_reaches_an_alert() -> None:
    doc = load("notices__fermi__gbm__trigger.final.example.json")
    def floats(value: Any) -> list[float]:
        if isinstance(value, float):
            return [value]
        if isinstance(value, dict):
            return [f for v in value.values() for f in floats(v)]
        if isinstance(value, list):
            return [f for v in value for f in floats(v)]
        return []

    for key in ("ra", "dec", "far", "ra_dec_error"):
        data = json.dumps({**doc, key: 0.5}).replace(f'"{key}": 0.5', f'"{key}": -1e999')
        try:
            result = gcn_json.normalize(data.encode(), meta())
        except InputError:
            continue  # refused with a reason: fine
        for alert in result.alerts:
            assert all(math.isfinite(f) for f in floats(alert.to_document())), key
    assert math.isfinite(one(doc).localization.ra_deg)  # type: ignore[union-attr]
