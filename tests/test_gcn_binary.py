"""GCN Classic binary notices (issue 16, item 5): 160-byte packets to Alerts.

``../shared/samples`` holds no binary notice, so every packet here is built slot by slot
(``struct.pack(">40i", ...)``) from the documented layout, most of them from the values
of the same event's real GCN VOEvent (the bundled Swift 655721 and Konus notices, and
gwcelery's, pygcn's and GCN's samples in ../shared when present) or JSON notice: the
binary Alert must say what the VOEvent/JSON Alert says (trigger number, time, position,
radius, containment, notice semantics).
"""

from __future__ import annotations

import json
import re
import struct
from datetime import UTC, datetime
from pathlib import Path

import pytest

from alerts_schema import Alert, validation_errors
from alerts_schema.errors import (
    ImplausibleValue,
    InputError,
    MalformedInput,
    NormalizationError,
    UnknownFormat,
)
from listeners import gcn_binary, gcn_json, registry, voevent
from listeners.base import MessageMeta
from listeners.detect import Format, sniff
from tests.conftest import SAMPLES

DATA = Path(__file__).parent / "data" / "voevents"
RECEIVED = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
AUTHORITY = "test.mmbroker"
BAT_TOPIC = "gcn.classic.binary.SWIFT_BAT_GRB_POS_ACK"


def meta(source: str) -> MessageMeta:
    return MessageMeta(source, RECEIVED, AUTHORITY, {})


def packet(slots: dict[int, int], *, end: int = 10) -> bytes:
    """A socket packet: 40 big-endian signed ints, ``slots`` set, slot 39 the terminator."""
    values = [0] * 40
    for index, value in slots.items():
        values[index] = value - 2**32 if value >= 2**31 else value  # flag words as signed
    values[39] = end
    return struct.pack(">40i", *values)


def binary_alert(data: bytes, topic: str) -> Alert:
    """The one Alert of ``data`` read through the registry from ``topic``, contract-checked."""
    route, result = registry.normalize(data, meta(topic))
    assert route == "gcn-binary"
    assert len(result.alerts) == 1 and not result.heartbeats
    (alert,) = result.alerts
    assert validation_errors("alert", alert.to_document()) == []
    return alert


def voevent_alert(path: Path) -> Alert:
    (alert,) = voevent.normalize(path.read_bytes(), meta("file")).alerts
    return alert


def params(path: Path) -> dict[str, str]:
    return dict(re.findall(r'<Param\s+name="([^"]+)"\s+value="([^"]*)"', path.read_text()))


def shared(relative: str) -> Path:
    path = SAMPLES / relative
    if not path.is_file():
        pytest.skip(f"{path} not present (../shared/samples)")
    return path


def centi(text: str) -> int:
    return round(float(text) * 100)


def e4(value: float) -> int:
    return round(value * 1e4)


def same_event(binary: Alert, other: Alert, *, radius_tol: float = 1e-9) -> None:
    """What the two transports must agree on for one notice."""
    assert (binary.facility, binary.messenger, binary.instrument) == (
        other.facility, other.messenger, other.instrument)
    assert (binary.event_id, binary.revision) == (other.event_id, other.revision)
    assert (binary.alert_type, binary.role) == (other.alert_type, other.role)
    assert binary.trigger_time == other.trigger_time
    assert binary.localization.kind == other.localization.kind
    if other.localization.kind == "point":
        b, o = binary.localization, other.localization
        assert b.ra_deg == pytest.approx(o.ra_deg, abs=1e-9)
        assert b.dec_deg == pytest.approx(o.dec_deg, abs=1e-9)
        assert b.error_radius_deg == pytest.approx(o.error_radius_deg, abs=radius_tol)
        assert (b.containment, b.systematic_deg) == (o.containment, o.systematic_deg)
    assert binary.extra.get("not_a_grb_reasons") == other.extra.get("not_a_grb_reasons")
    assert binary.extra["gcn"]["notice_type"] == other.extra["gcn"]["notice_type"]


# -- Swift 655721: the bundled BAT and XRT VOEvents, as binary packets ---------------------

def bat_655721(changes: dict[int, int] | None = None) -> bytes:
    """SWIFT_BAT_GRB_POS_ACK of trigger 655721, from BAT_GRB_Pos_655721-214.xml."""
    p = params(DATA / "BAT_GRB_Pos_655721-214.xml")
    slots = {0: 61, 1: int(p["Pkt_Ser_Num"]), 3: 7_680_000, 4: int(p["TrigID"]),
             5: int(p["Burst_TJD"]), 6: centi(p["Burst_SOD"]), 7: e4(319.7309),
             8: e4(-34.8537), 9: int(p["Burst_Inten"]), 10: int(p["Burst_Peak"]),
             11: e4(0.05), 12: centi(p["Phi"]), 13: centi(p["Theta"]),
             14: round(float(p["Integ_Time"]) * 250), 17: int(p["Trig_Index"]),
             18: int(p["Soln_Status"], 16), 20: centi(p["Image_Signif"]),
             21: centi(p["Rate_Signif"])}
    slots.update(changes or {})
    return packet(slots)


def xrt_655721() -> bytes:
    """SWIFT_XRT_POSITION of trigger 655721, from XRT_Pos_655721-326.xml."""
    p = params(DATA / "XRT_Pos_655721-326.xml")
    return packet({0: 67, 1: int(p["Pkt_Ser_Num"]), 4: int(p["TrigID"]),
                   5: int(p["Burst_TJD"]), 6: centi(p["Burst_SOD"]), 7: e4(319.6588),
                   8: e4(-34.9131), 11: e4(0.0010), 16: round(0.0010 * 3600 * 100),
                   18: int(p["Soln_Status"], 16), 19: int(p["Misc_flags"], 16),
                   21: centi(p["Det_Signif"])})


def test_a_binary_notice_is_never_taken_for_avro() -> None:
    data = bat_655721()
    assert data[0] == 0 and sniff(data) is Format.AVRO_CONFLUENT  # the trap
    route, _ = registry.route(data, meta(BAT_TOPIC))
    assert route.name == "gcn-binary"
    # Garbage on a binary topic is refused as a binary notice, never as Avro either.
    with pytest.raises(MalformedInput, match="160") as err:
        registry.normalize(b"\x00\x00\x00\x3d" + b"\x01" * 100, meta(BAT_TOPIC))
    assert "avro" not in err.value.reason.lower()


def test_swift_bat_position_equals_its_voevent() -> None:
    binary = binary_alert(bat_655721(), BAT_TOPIC)
    same_event(binary, voevent_alert(DATA / "BAT_GRB_Pos_655721-214.xml"))
    assert binary.event_id == "655721" and binary.alert_type == "initial"
    assert binary.trigger_time == datetime(2015, 9, 15, 21, 18, 24, 860000, tzinfo=UTC)
    loc = binary.localization
    assert (loc.ra_deg, loc.dec_deg, loc.error_radius_deg, loc.containment) == (
        319.7309, -34.8537, 0.05, 0.9)
    assert binary.source == "gcn.classic.binary/Swift"
    assert binary.id == "ivo://test.mmbroker/gcn.classic.binary/Swift#655721-2001"
    assert "not_a_grb" not in binary.extra


def test_xrt_position_equals_its_voevent_and_supersedes_the_bat_one() -> None:
    xrt = binary_alert(xrt_655721(), "gcn.classic.binary.SWIFT_XRT_POSITION")
    same_event(xrt, voevent_alert(DATA / "XRT_Pos_655721-326.xml"))
    bat = binary_alert(bat_655721(), BAT_TOPIC)
    assert (xrt.source, xrt.event_id) == (bat.source, bat.event_id)
    assert xrt.revision > bat.revision and xrt.alert_type == "update"
    assert xrt.messenger == "x_ray" and xrt.localization.error_radius_deg == pytest.approx(
        3.6 / 3600)


@pytest.mark.parametrize(("bits", "reason"), [
    (0x13 & ~0x2, "GRB_Identified=false"), (0x13 | 0x8, "Target_in_Flt_Catalog"),
    (0x13 | 0x20, "Def_NOT_a_GRB"), (0x13 | 0x100, "Target_in_Gnd_Catalog")])
def test_swift_not_a_grb_bits_flag_like_the_voevent_flags(bits: int, reason: str) -> None:
    from crossmatch.config import load_config

    alert = binary_alert(bat_655721({18: bits}), BAT_TOPIC)
    assert alert.extra["not_a_grb"] is True and reason in alert.extra["not_a_grb_reasons"]
    assert not load_config().selectors["grb"].matches(alert)
    assert load_config().selectors["grb"].matches(binary_alert(bat_655721(), BAT_TOPIC))


def test_swift_position_without_star_lock_is_kept_but_not_a_localization() -> None:
    alert = binary_alert(bat_655721({18: 0x13 | 0x400}), BAT_TOPIC)
    assert alert.localization.kind == "none"
    assert alert.extra["position_note"] == voevent.STAR_LOCK_NOTE
    assert alert.extra["untrusted_position"] == {"ra_deg": 319.7309, "dec_deg": -34.8537,
                                                 "error_radius_deg": 0.05}


def test_swift_test_bit_and_test_type_make_test_alerts() -> None:
    assert binary_alert(bat_655721({18: 0x13 | 1 << 30}), BAT_TOPIC).role == "test"
    test = binary_alert(bat_655721({0: 82}), "gcn.classic.binary.SWIFT_BAT_GRB_POS_TEST")
    assert test.role == "test"


def test_konus_light_curve_has_a_time_and_no_position() -> None:
    path = DATA / "Konus_Lightcurve_2015-07-10T00_28_01.68.xml"
    p = params(path)
    data = packet({0: 59, 1: int(p["Pkt_Ser_Num"]), 4: int(p["TrigID"]),
                   5: int(p["Burst_TJD"]), 6: centi(p["Burst_SOD"]), 18: 0x201})
    binary = binary_alert(data, "gcn.classic.binary.KONUS_LC")
    same_event(binary, voevent_alert(path))
    assert binary.extra["position_note"] == "KONUS_LC notices carry no sky position"


# -- Fermi, INTEGRAL, SNEWS: VOEvents in ../shared/samples --------------------------------

def gbm_from_voevent(path: Path, packet_type: int) -> bytes:
    """A GBM position packet from a GBM VOEvent (its Position2D from its Alert)."""
    p = params(path)
    loc = voevent_alert(path).localization
    slots = {0: packet_type, 1: int(p["Pkt_Ser_Num"]), 4: int(p["TrigID"]),
             5: int(p["Burst_TJD"]), 6: centi(p["Burst_SOD"]), 7: e4(loc.ra_deg),
             8: e4(loc.dec_deg), 11: e4(loc.error_radius_deg),
             20: int(p["Sequence_Num"]), 22: int(p["Algorithm"])}
    if "Most_Likely_Index" in p:
        probability = round(int(p["Most_Likely_Prob"]) * 255 / 100)
        slots[23] = probability << 16 | int(p["Most_Likely_Index"])
    if packet_type in (112, 115):
        slots.update({26: int(p["Lo_Energy"]), 27: int(p["Hi_Energy"])})
    return packet(slots)


@pytest.mark.parametrize(("name", "packet_type"), [
    ("voevents/gwcelery/fermi_grb_gcn.xml", 111),
    ("voevents/gwcelery/fermi_final_gcn.xml", 115),
    ("voevents/gwcelery/fermi_noise_gcn.xml", 111),
    ("voevents/gwcelery/fermi_noise_gcn_2.xml", 111),
    ("voevents/pygcn/gbm_flt_pos.xml", 111),
])
def test_fermi_gbm_positions_equal_their_voevents(name: str, packet_type: int) -> None:
    path = shared(name)
    topic = "gcn.classic.binary." + voevent.GCN_TYPES[packet_type].name
    binary = binary_alert(gbm_from_voevent(path, packet_type), topic)
    same_event(binary, voevent_alert(path))
    assert binary.localization.containment == 0.6827
    assert binary.localization.systematic_deg == voevent.GCN_TYPES[packet_type].systematic_deg


def test_fermi_gbm_final_band_edges_are_in_ev() -> None:
    path = shared("voevents/gwcelery/fermi_final_gcn.xml")
    binary = binary_alert(gbm_from_voevent(path, 115), "gcn.classic.binary.FERMI_GBM_FIN_POS")
    assert binary.energy == voevent_alert(path).energy
    assert binary.energy.min_gev == pytest.approx(50e-6)  # 50 keV


def test_fermi_gbm_subthreshold_equals_its_voevent() -> None:
    path = shared("voevents/gwcelery/fermi_subthresh_grb_gcn.xml")
    p = params(path)
    loc = voevent_alert(path).localization
    data = packet({0: 131, 1: int(p["Pkt_Ser_Num"]), 4: int(p["Trans_Num"]),
                   5: int(p["Trans_TJD"]), 6: centi(p["Trans_SOD"]), 7: e4(loc.ra_deg),
                   8: e4(loc.dec_deg), 11: e4(loc.error_radius_deg), 19: 0x40000001},
                  end=0)  # GBM packets end with zeros
    binary = binary_alert(data, "gcn.classic.binary.FERMI_GBM_SUBTHRESH")
    same_event(binary, voevent_alert(path))


def test_integral_wakeup_radius_in_arcsec_and_test_bit() -> None:
    path = shared("voevents/gwcelery/integral_grb_gcn.xml")
    p = params(path)
    other = voevent_alert(path)
    loc = other.localization
    data = packet({0: 53, 1: int(p["Pkt_Ser_Num"]), 4: int(p["TrigID"]),
                   5: int(p["Burst_TJD"]), 6: centi(p["Burst_SOD"]), 7: e4(loc.ra_deg),
                   8: e4(loc.dec_deg), 10: centi(p["Inten_Sigma"]),
                   11: round(loc.error_radius_deg * 3600),  # arcsec
                   12: int(p["Test_mpos"], 16), 13: e4(float(p["Time_Scale"])),
                   16: e4(float(p["Time_Error"]))})
    binary = binary_alert(data, "gcn.classic.binary.INTEGRAL_WAKEUP")
    # The VOEvent writes 61 arcsec as 0.0169 deg (four decimals).
    same_event(binary, other, radius_tol=1e-4)
    assert binary.role == "test" and binary.localization.error_radius_deg == 61 / 3600


def test_snews_without_a_direction_equals_its_voevent() -> None:
    path = shared("voevents/gwcelery/snews_gcn_test.xml")
    p = params(path)
    data = packet({0: 149, 1: int(p["Pkt_Ser_Num"]), 4: int(p["TrigID"]),
                   5: int(p["Event_TJD"]), 6: centi(p["Event_SOD"]), 11: e4(360.0),
                   18: int(p["Trigger_ID"], 16), 19: int(p["Misc_flags"], 16)})
    binary = binary_alert(data, "gcn.classic.binary.SNEWS")
    other = voevent_alert(path)
    same_event(binary, other)
    assert binary.extra["position_note"] == other.extra["position_note"] == "RADec_valid is false"
    retraction = binary_alert(packet({0: 149, 4: 7, 5: 18379, 6: 100, 18: 0x20}),
                              "gcn.classic.binary.SNEWS")
    assert retraction.alert_type == "retraction"


# -- JSON notices of the same kind of event --------------------------------------------------

def json_alert(relative: str) -> Alert:
    path = shared(relative)
    (alert,) = gcn_json.normalize(path.read_bytes(), meta("file")).alerts
    return alert


def tjd_sod(when: datetime) -> tuple[int, int]:
    mjd = (when - datetime(1858, 11, 17, tzinfo=UTC)).days
    sod = when - datetime(when.year, when.month, when.day, tzinfo=UTC)
    return mjd - gcn_binary.TJD_TO_MJD, round(sod.total_seconds() * 100)


def test_super_kamiokande_sn_position_as_in_its_json_notice() -> None:
    other = json_alert("gcn-schema/notices__superk__sn_alert.real.example.json")
    doc = json.loads(shared("gcn-schema/notices__superk__sn_alert.real.example.json")
                     .read_text())
    tjd, sod = tjd_sod(other.trigger_time)
    data = packet({0: 175, 1: 1, 4: doc["trigger_number"], 5: tjd, 6: sod,
                   7: e4(doc["ra"]), 8: e4(doc["dec"]), 9: doc["n_events"],
                   11: e4(0.64), 15: e4(doc["ra_dec_error"]), 16: e4(1.04)})
    binary = binary_alert(data, "gcn.classic.binary.SK_SN")
    assert (binary.facility, binary.messenger, binary.event_id) == (
        other.facility, other.messenger, str(doc["trigger_number"]))
    assert binary.trigger_time == other.trigger_time and binary.role == other.role
    b, o = binary.localization, other.localization
    assert (b.ra_deg, b.dec_deg, b.error_radius_deg) == pytest.approx(
        (o.ra_deg, o.dec_deg, o.error_radius_deg))
    # The packet carries 68 %, 90 % and 95 % radii (slots 11, 15, 16): slot 15 is the
    # 90 % one, though GCN's illustrative JSON calls that radius 68 %.
    assert b.containment == 0.9
    assert binary.extra["super_kamiokande"]["error_68_deg"] == pytest.approx(0.64)


def test_icecube_track_as_in_its_json_notice() -> None:
    relative = "gcn-schema/notices__icecube__single_neutrino_alerts.gold_bronze_track_alerts" \
               ".example.json"
    other = json_alert(relative)
    run, event = 137840, 57034692  # its id "137840_57034692"
    tjd, sod = tjd_sod(other.trigger_time)
    loc = other.localization
    data = packet({0: 174, 1: 1, 4: event, 5: tjd, 6: sod, 7: e4(loc.ra_deg),
                   8: e4(loc.dec_deg), 11: e4(loc.error_radius_deg), 15: event, 23: run},
                  end=0)
    binary = binary_alert(data, "gcn.classic.binary.ICECUBE_ASTROTRACK_BRONZE")
    assert (binary.facility, binary.messenger) == ("IceCube", "neutrino") == (
        other.facility, other.messenger)
    assert binary.event_id == "137840:57034692"  # run:event, as the VOEvent path names it
    assert abs((binary.trigger_time - other.trigger_time).total_seconds()) < 0.01
    b = binary.localization
    assert (b.ra_deg, b.dec_deg, b.error_radius_deg, b.containment) == pytest.approx(
        (loc.ra_deg, loc.dec_deg, loc.error_radius_deg, loc.containment))


# -- the other layouts, built from GCN's documentation -------------------------------------

@pytest.mark.parametrize(("slots", "expected"), [
    # GECAM: time of day in 0.0001 s, radius in slot 10, 1-sigma.
    ({0: 188, 4: 368, 5: 20447, 6: 468_825_504, 7: 578_300, 8: 174_000, 10: 14_899,
      19: 2}, ("GECAM", "368", "2024-05-17T13:01:22.550400", 57.83, 17.4, 1.4899, 0.6827)),
    # AGILE: radius in 0.0001 deg.
    ({0: 100, 4: 1234, 5: 20443, 6: 496_300, 7: 3_240_000, 8: -350_000, 11: 833},
     ("AGILE", "1234", "2024-05-13T01:22:43", 324.0, -35.0, 0.0833, 0.9)),
    # Fermi LAT.
    ({0: 128, 4: 738511436, 5: 20457, 6: 5_063_150, 7: 1_280_999, 8: -144_800, 11: 1900},
     ("Fermi", "738511436", "2024-05-27T14:03:51.500000", 128.0999, -14.48, 0.19, 0.9)),
    # MAXI.
    ({0: 134, 4: 44849999, 5: 20444, 6: 6_723_700, 7: 765_999, 8: -213_000, 11: 10_000},
     ("MAXI", "44849999", "2024-05-14T18:40:37", 76.5999, -21.3, 1.0, 0.9)),
    # IPN position: a 3-sigma circle.
    ({0: 39, 4: 17, 5: 20440, 6: 100, 7: 100_000, 8: 200_000, 11: 500},
     ("IPN", "17", "2024-05-10T00:00:01", 10.0, 20.0, 0.05, 0.9973)),
    # INTEGRAL trigger number in the low 16 bits, radius in arcsec.
    ({0: 56, 4: 3 << 16 | 10696, 5: 20443, 6: 7_339_796, 7: 1_240_264, 8: -339_078,
      11: 228}, ("INTEGRAL", "10696", "2024-05-13T20:23:17.960000", 124.0264, -33.9078,
                 228 / 3600, 0.9)),
    # TEST_COORDS: the BATSE-era centi-degrees.
    ({0: 2, 4: -1, 5: 20442, 6: 2_823_000, 7: 3600, 8: -3500, 11: 500},
     ("GCN", "GCN-2024-05-12T07:50:30Z", "2024-05-12T07:50:30", 36.0, -35.0, 5.0, 0.9)),
])
def test_layouts_decode_to_degrees_and_utc(slots: dict[int, int],
                                           expected: tuple[object, ...]) -> None:
    topic = "gcn.classic.binary." + voevent.GCN_TYPES[slots[0]].name
    alert = binary_alert(packet(slots), topic)
    loc = alert.localization
    got = (alert.facility, alert.event_id, alert.trigger_time.isoformat(), loc.ra_deg,
           loc.dec_deg, loc.error_radius_deg, loc.containment)
    assert got[:3] == (*expected[:2], f"{expected[2]}+00:00")
    assert got[3:] == pytest.approx(expected[3:])


def test_no_position_types_are_alerts_without_a_localization() -> None:
    for number in (60, 110, 52, 31, 105, 148, 160):
        name = voevent.GCN_TYPES[number].name
        alert = binary_alert(packet({0: number, 4: 99, 5: 20440, 6: 100}),
                             "gcn.classic.binary." + name)
        assert alert.localization.kind == "none"
        assert alert.extra["position_note"] == f"{name} notices carry no sky position"


def test_a_placeholder_position_is_no_position() -> None:
    alert = binary_alert(packet({0: 100, 4: 1, 5: 20440, 6: 100, 11: 833}),
                         "gcn.classic.binary.AGILE_GRB_WAKEUP")
    assert alert.localization.kind == "none"
    assert "placeholder" in alert.extra["position_note"]


# -- what is not an alert -----------------------------------------------------------------

def test_im_alive_is_a_heartbeat_of_its_topic() -> None:
    topic = "gcn.classic.binary.IM_ALIVE"
    route, result = registry.normalize(packet({0: 3, 1: 5, 3: 4_319_000}), meta(topic))
    assert route == "gcn-binary" and not result.alerts
    (beat,) = result.heartbeats
    assert beat.stream == topic
    assert beat.time == datetime(2026, 5, 1, 11, 59, 50, tzinfo=UTC)  # 43190 s, the nearest
    near_midnight = MessageMeta(topic, datetime(2026, 5, 1, 0, 0, 5, tzinfo=UTC), AUTHORITY)
    (beat,) = gcn_binary.normalize(packet({0: 3, 3: 8_639_000}), near_midnight).heartbeats
    assert beat.time == datetime(2026, 4, 30, 23, 59, 50, tzinfo=UTC)


@pytest.mark.parametrize(("slots", "error", "reason"), [
    ({0: 4}, NormalizationError, "KILL_SOCKET (type 4) is a control packet"),
    ({0: 83, 5: 20440}, NormalizationError, "SWIFT_POINTDIR (type 83) is a spacecraft pointing"),
    ({0: 63, 4: 1227767, 5: 20441, 6: 100}, NormalizationError,
     "SWIFT_BAT_GRB_LC (type 63) is a data-product notice"),
    ({0: 171, 5: 20441, 6: 100}, NormalizationError,
     "HAWC_BURST_MONITOR (type 171): this broker does not decode that packet layout"),
    ({0: 150, 5: 20441, 6: 100}, NormalizationError,
     "LVC_PRELIMINARY (type 150): this broker does not decode"),
    ({0: 999, 5: 20441}, UnknownFormat, "packet type 999 is not a GCN notice type"),
    ({0: 61, 4: 1, 5: 0, 6: 100}, NormalizationError, "no trigger date"),
])
def test_packets_without_an_alert_are_refused_by_type(slots: dict[int, int],
                                                      error: type[InputError],
                                                      reason: str) -> None:
    with pytest.raises(error, match=re.escape(reason)):
        gcn_binary.normalize(packet(slots), meta("gcn.classic.binary.X"))


@pytest.mark.parametrize(("data", "error", "reason"), [
    (b"", MalformedInput, "0 bytes"),
    (packet({0: 61})[:159], MalformedInput, "159 bytes"),
    (packet({0: 61}) + b"\x00", MalformedInput, "161 bytes"),
    (bat_655721({7: 3_600_000}), ImplausibleValue, "outside [0, 360)"),
    (bat_655721({7: -1}), ImplausibleValue, "outside [0, 360)"),
    (bat_655721({8: 900_001}), ImplausibleValue, "declination 90.0001 deg outside"),
    (bat_655721({8: gcn_binary.UNDEFINED}), ImplausibleValue, "no-value sentinel"),
    (bat_655721({11: -500}), ImplausibleValue, "error radius -0.05 deg"),
    (bat_655721({11: 1_800_001}), ImplausibleValue, "error radius 180 deg"),
    (bat_655721({6: 8_640_100}), ImplausibleValue, "time of day 86401 s"),
    (bat_655721({6: -1}), ImplausibleValue, "time of day -0.01 s"),
    (bat_655721({5: 2**31 - 1}), ImplausibleValue, "is not a GCN date"),
    (bat_655721({5: gcn_binary.UNDEFINED}), ImplausibleValue, "sentinel"),
    (bat_655721({0: 67}), MalformedInput, "type 67 (SWIFT_XRT_POSITION) on " + BAT_TOPIC),
])
def test_malformed_and_hostile_packets_are_clear_errors(data: bytes, error: type[InputError],
                                                        reason: str) -> None:
    with pytest.raises(error, match=re.escape(reason)):
        registry.normalize(data, meta(BAT_TOPIC))


def test_random_packets_never_crash() -> None:
    """Any 160 bytes on a binary topic: an Alert that meets the contract or an InputError."""
    import random

    rng = random.Random(16)
    types = sorted(gcn_binary.LAYOUTS)
    for _ in range(3000):
        values = [rng.choice((0, 1, -1, gcn_binary.UNDEFINED, 2**31 - 1, rng.randrange(-2**31,
                                                                                      2**31)))
                  for _ in range(40)]
        values[0] = rng.choice(types)
        values[5] = rng.choice((values[5], rng.randrange(0, 30000)))
        data = struct.pack(">40i", *values)
        try:
            result = gcn_binary.normalize(data, meta("gcn.classic.binary.ANY"))
        except InputError:
            continue
        for alert in result.alerts:
            assert validation_errors("alert", alert.to_document()) == []


# -- files and the type table ----------------------------------------------------------------

def test_a_file_holding_one_packet_is_read_as_one() -> None:
    assert registry.normalize(bat_655721(), meta("file"))[0] == "gcn-binary"
    assert registry.normalize(packet({0: 111, 4: 1, 5: 20440, 6: 1, 7: 1, 11: 10}, end=0),
                              meta("file"))[0] == "gcn-binary"
    assert not gcn_binary.looks_like_gcn_binary(packet({0: 999}))
    assert not gcn_binary.looks_like_gcn_binary(bat_655721()[:-4] + b"abcd")


def test_every_decoded_layout_is_a_known_notice_type() -> None:
    for number in gcn_binary.LAYOUTS:
        gcn = voevent.gcn_type(number)
        assert gcn is not None and gcn.kind in ("event", "test"), number


def test_selectors_take_binary_notices_as_their_voevents() -> None:
    """The pairings select by facility, instrument and extra.gcn.notice_type, which the
    binary alerts carry as the VOEvent ones do: a Super-K SN notice is a supernova
    burst (never a high-energy neutrino), an IceCube track is one, a GBM position a GRB."""
    from crossmatch.config import load_config

    selectors = load_config().selectors
    sk = binary_alert(packet({0: 175, 4: 10063, 5: 20461, 6: 100, 7: e4(270.82),
                              8: e4(31.46), 15: e4(0.91)}), "gcn.classic.binary.SK_SN")
    assert selectors["sn_burst"].matches(sk) and not selectors["hen"].matches(sk)
    track = binary_alert(packet({0: 173, 4: 1, 5: 20461, 6: 100, 7: e4(10.0), 8: e4(5.0),
                                 11: e4(0.5), 23: 2}),
                         "gcn.classic.binary.ICECUBE_ASTROTRACK_GOLD")
    assert selectors["hen"].matches(track) and not selectors["sn_any"].matches(track)
    subthreshold = binary_alert(packet({0: 131, 4: 1, 5: 20461, 6: 100, 7: e4(10.0),
                                        8: e4(5.0), 11: e4(10.0)}),
                                "gcn.classic.binary.FERMI_GBM_SUBTHRESH")
    assert selectors["grb_subthreshold_gbm"].matches(subthreshold)
    assert not selectors["grb"].matches(subthreshold)
