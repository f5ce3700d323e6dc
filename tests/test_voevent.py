"""The VOEvent normalizer: GCN classic, LVK, KM3NeT, IceCube and other VOEvents to Alerts.

Bundled samples (tests/data/voevents, permissive licences, see MANIFEST.tsv)
and synthetic packets cover the quirks from a plain clone; the sweep at the
end runs every VOEvent in ../shared/samples when it is present.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from alerts_schema import Alert, validation_errors
from alerts_schema.errors import HostileInput, InputError, NormalizationError, UnknownFormat
from listeners import lvk as lvk_rules
from listeners import voevent
from listeners.base import MessageMeta, Normalized
from listeners.common import SECONDS_PER_YEAR
from listeners.detect import Format
from tests.conftest import SAMPLES

DATA = Path(__file__).parent / "data" / "voevents"
RECEIVED = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
AUTHORITY = "test.mmbroker"


def meta(source: str = "file") -> MessageMeta:
    return MessageMeta(source, RECEIVED, AUTHORITY, {})


def one_alert(data: bytes, source: str = "file") -> Alert:
    """The single Alert from ``data``, checked against the contract."""
    result = voevent.normalize(data, meta(source))
    assert len(result.alerts) == 1 and not result.heartbeats
    (alert,) = result.alerts
    assert validation_errors("alert", alert.to_document()) == []
    return alert


def sample(name: str, source: str = "file") -> Alert:
    return one_alert((DATA / name).read_bytes(), source)


def point(alert: Alert) -> tuple[float, float, float, float]:
    loc = alert.localization
    assert loc.kind == "point", alert.extra.get("position_note")
    return loc.ra_deg, loc.dec_deg, loc.error_radius_deg, loc.containment


# -- synthetic packets ----------------------------------------------------------------

V20 = "http://www.ivoa.net/xml/VOEvent/v2.0"


def make_voevent(params: str = "", *, ivorn: str = "ivo://nasa.gsfc.gcn/SWIFT#x-1",
                 role: str = "observation", time: str | None = "2024-05-01T10:00:00.50Z",
                 position: tuple[float, float, float] | None = (10.0, 20.0, 1.0),
                 unit: str = "deg", citations: str = "", namespace: str = V20,
                 schema_location: str = "http://www.ivoa.net/xml/VOEvent/v2.0 "
                                        "http://www.ivoa.net/xml/VOEvent/VOEvent-v2.0.xsd",
                 how: str = "", version: str = "2.0") -> bytes:
    """A small VOEvent; ``params`` is raw XML placed inside <What>."""
    where = ""
    if time is not None:
        pos = ""
        if position is not None:
            ra, dec, err = position
            pos = (f'<Position2D unit="{unit}"><Name1>RA</Name1><Name2>Dec</Name2><Value2>'
                   f"<C1>{ra}</C1><C2>{dec}</C2></Value2><Error2Radius>{err}</Error2Radius>"
                   "</Position2D>")
        where = ('<WhereWhen><ObsDataLocation><ObservatoryLocation id="GEOLUN"/>'
                 '<ObservationLocation><AstroCoordSystem id="UTC-FK5-GEO"/>'
                 '<AstroCoords coord_system_id="UTC-FK5-GEO"><Time unit="s"><TimeInstant>'
                 f"<ISOTime>{time}</ISOTime></TimeInstant></Time>{pos}</AstroCoords>"
                 "</ObservationLocation></ObsDataLocation></WhereWhen>")
    cites = f"<Citations>{citations}</Citations>" if citations else ""
    how_xml = f"<How><Description>{how}</Description></How>" if how else ""
    return (f"<?xml version='1.0' encoding='UTF-8'?>\n"
            f'<voe:VOEvent xmlns:voe="{namespace}" '
            f'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
            f'xsi:schemaLocation="{schema_location}" version="{version}" role="{role}" '
            f'ivorn="{ivorn}"><Who><Date>2024-05-01T10:00:30</Date></Who>'
            f"<What>{params}</What>{where}{how_xml}{cites}</voe:VOEvent>").encode()


def param(name: str, value: object, unit: str | None = None, ucd: str | None = None) -> str:
    extra = (f' unit="{unit}"' if unit is not None else "") + (
        f' ucd="{ucd}"' if ucd is not None else "")
    return f'<Param name="{name}" value="{value}"{extra}/>'


def lvk(grace_id: str = "S240501ab", serial: int = 2, alert_type: str = "Preliminary",
        packet_type: int = 150, far: str = param("FAR", "1e-10", "Hz"), role: str = "observation",
        more: str = "", citations: str = "") -> bytes:
    params = (param("Packet_Type", packet_type) + param("internal", 0)
              + param("Pkt_Ser_Num", serial) + param("GraceID", grace_id, ucd="meta.id")
              + param("AlertType", alert_type) + param("HardwareInj", 0)
              + param("OpenAlert", 1) + param("Instruments", "H1,L1") + far
              + param("Pipeline", "gstlal") + param("Group", "CBC")
              + '<Group name="GW_SKYMAP" type="GW_SKYMAP">'
              + param("skymap_fits", "https://gracedb.example/S240501ab/bayestar.multiorder.fits,0")
              + '</Group><Group name="Classification" type="Classification">'
              + param("BNS", 0.9) + param("Terrestrial", 0.1) + "</Group>" + more)
    return make_voevent(params, ivorn=f"ivo://gwnet/LVC#{grace_id}-{serial}-{alert_type}",
                        role=role, time="2024-05-01T09:59:58.123456Z", position=None,
                        citations=citations)


def gbm(packet_type: int, sequence: int, position: tuple[float, float, float],
        cites: str = "") -> bytes:
    params = (param("Packet_Type", packet_type) + param("Pkt_Ser_Num", 3)
              + param("TrigID", 736000001, ucd="meta.id")
              + param("Sequence_Num", sequence, ucd="meta.id.part")
              + param("Lo_Energy", 50000, "keV") + param("Hi_Energy", 300000, "keV")
              + '<Group name="Obs_Support_Info">' + param("Sun_RA", 10.0, "deg") + "</Group>")
    citations = f'<EventIVORN cite="followup">{cites}</EventIVORN>' if cites else ""
    return make_voevent(params, ivorn=f"ivo://nasa.gsfc.gcn/Fermi#GBM_{packet_type}_{sequence}",
                        position=position, citations=citations)


# -- bundled samples --------------------------------------------------------------------

def test_swift_bat_position() -> None:
    alert = sample("BAT_GRB_Pos_655721-214.xml", "gcn.classic.voevent.SWIFT_BAT_GRB_POS_ACK")
    assert (alert.facility, alert.instrument, alert.messenger) == ("Swift", "BAT", "gamma_ray")
    assert alert.source == "ivo://nasa.gsfc.gcn/SWIFT"  # the IVORN stream, not the topic
    assert alert.source_ivorn == "ivo://nasa.gsfc.gcn/SWIFT#BAT_GRB_Pos_655721-214"
    assert (alert.event_id, alert.revision) == ("655721", 2001)
    assert alert.id == "ivo://test.mmbroker/nasa.gsfc.gcn/SWIFT#655721-2001"
    assert alert.trigger_time == datetime(2015, 9, 15, 21, 18, 24, 860000, tzinfo=UTC)
    assert point(alert) == (319.7309, -34.8537, 0.05, 0.9)  # Swift: 90% containment
    assert alert.role == "observation"
    assert alert.received_time == RECEIVED
    assert alert.extra["gcn"] == {"packet_type": 61, "notice_type": "SWIFT_BAT_GRB_POS_ACK"}
    assert alert.extra["params"]["Image_Signif"] == 7.23
    assert alert.extra["groups"]["Solution_Status"]["GRB_Identified"] is True
    assert "Obs_Support_Info" not in alert.extra["groups"]


def test_xrt_position_supersedes_bat_position_of_the_same_trigger() -> None:
    bat = sample("BAT_GRB_Pos_655721-214.xml", "vtp:peer")
    xrt = sample("XRT_Pos_655721-326.xml", "vtp:peer")
    assert xrt.event_id == bat.event_id == "655721"
    assert xrt.revision == 8002 > bat.revision
    assert xrt.alert_type == "update"
    assert (xrt.instrument, xrt.messenger) == ("XRT", "x_ray")
    assert point(xrt) == (319.6588, -34.9131, 0.001, 0.9)
    assert xrt.extra["citations"] == [
        {"ivorn": "ivo://nasa.gsfc.gcn/SWIFT#BAT_GRB_Pos_655721-214", "cite": "followup"}]
    assert xrt.id != bat.id


def test_file_source_is_the_stream_ivorn() -> None:
    alert = sample("SWIFT_bat_position_v2.0_example.xml")
    assert alert.source == "ivo://nasa.gsfc.gcn/SWIFT"
    assert alert.id == "ivo://test.mmbroker/nasa.gsfc.gcn/SWIFT#532871-2001"


def test_voevent_1_1_with_stc_namespace() -> None:
    alert = sample("SWIFT_xrt_position_v1.1_example.xml")
    assert alert.extra["voevent"]["version"] == "1.1"
    assert alert.extra["voevent"]["namespace"] == "http://www.ivoa.net/xml/VOEvent/v1.1"
    assert point(alert) == (314.7162, -53.393, 0.0009, 0.9)
    assert (alert.event_id, alert.revision) == ("644259", 8006)


def test_konus_placeholder_position_means_none() -> None:
    alert = sample("Konus_Lightcurve_2015-07-10T00_28_01.68.xml")
    assert alert.localization.kind == "none"
    assert "no sky position" in alert.extra["position_note"]
    assert (alert.facility, alert.messenger, alert.event_id) == ("Konus-Wind", "gamma_ray",
                                                                 "1721301681")


def test_moa_gaia_asassn_are_optical() -> None:
    moa = sample("MOA_Lensing_Event_2015-07-10T14_50_54.00.xml")
    assert (moa.facility, moa.messenger, moa.event_id) == ("MOA", "optical", "201500354")
    assert point(moa) == (268.686, -29.7073, 0.0, 0.9)
    gaia = sample("Gaia16aac.xml")
    # The id comes from a nameless Param with a <Value> child and UCD meta.id.
    assert (gaia.facility, gaia.messenger, gaia.event_id) == ("Gaia", "optical", "Gaia16aac")
    assert gaia.extra["voevent"]["coord_system"] == "TDB-ICRS-BARY"
    asassn = sample("ASASSN_2016-09-25.47_2016fvf_PTSS-16nqb_PS16ejf.xml")
    assert (asassn.facility, asassn.messenger) == ("ASAS-SN", "optical")
    assert asassn.event_id == "2016-09-25.47_2016fvf_PTSS-16nqb_PS16ejf"
    assert asassn.trigger_time == datetime(2016, 9, 25, 11, 16, 48, tzinfo=UTC)


@pytest.mark.parametrize(("name", "reason"), [
    ("no_namespace_packet.xml", "names no event (no identifier Param, no sky position)"),
    ("test_packet.xml", "has no event time in WhereWhen"),
])
def test_packets_without_an_event_are_rejected_with_a_reason(name: str, reason: str) -> None:
    with pytest.raises(NormalizationError) as info:
        voevent.normalize((DATA / name).read_bytes(), meta())
    assert reason in info.value.reason


def test_km3net_single_track() -> None:
    alert = sample("km3net_voevent_single_HE_example.xml", "gcn.notices.km3net.voevent")
    assert (alert.facility, alert.instrument, alert.messenger) == ("KM3NeT", "ORCA024",
                                                                   "neutrino")
    assert (alert.event_id, alert.revision, alert.alert_type) == ("KM3-240901A", 0, "initial")
    assert alert.far_hz == pytest.approx(8.029e-08 / SECONDS_PER_YEAR)  # yr^-1 in the packet
    assert point(alert) == (10.82, 20.01, 0.9, 0.9)  # Error2Radius = src_error_90
    assert alert.energy is not None and alert.energy.best_gev == 120000.0
    assert alert.provenance is not None and alert.provenance.pipeline == "orca_HE"
    assert alert.trigger_time == datetime(2024, 9, 1, 1, 16, 47, tzinfo=UTC)
    assert alert.extra["events"][0]["id"] == "km3.234.23492.58968.763"


def test_km3net_multiplet() -> None:
    alert = sample("km3net_voevent_multiplet_example.xml")
    assert alert.source == "ivo://KM3NeT_Neutrino"  # the IVORN has no stream path
    assert (alert.event_id, alert.instrument) == ("KM3-240901B", "ARCA021")
    assert alert.energy is None  # two events: their energies stay in extra.events
    assert [e["prob_evt_topology"] for e in alert.extra["events"]] == ["track", "shower"]
    assert alert.extra["counterparts"][0]["name"] == "SourceName"
    assert point(alert) == (13.81, 18.85, 0.41, 0.9)
    assert "Nu_Event_1" not in alert.extra["groups"]


def test_every_bundled_voevent_is_handled() -> None:
    names = sorted(p.name for p in DATA.glob("*.xml"))
    assert len(names) == 12
    manifest = (DATA / "MANIFEST.tsv").read_text().splitlines()[1:]
    assert sorted(line.split("\t")[0] for line in manifest) == names
    assert not any("GPL" in line for line in manifest)
    for name in names:
        data = (DATA / name).read_bytes()
        try:
            result = voevent.normalize(data, meta())
        except NormalizationError:
            continue
        for alert in result.alerts:
            assert validation_errors("alert", alert.to_document()) == []
        # Pure: the same bytes and metadata give the same alert.
        assert voevent.normalize(data, meta()) == result


# -- routing ------------------------------------------------------------------------

def test_accepts_xml_voevents_only() -> None:
    data = (DATA / "Gaia16aac.xml").read_bytes()
    assert voevent.accepts(Format.XML, None, meta(), data)
    assert voevent.accepts(Format.XML, None, meta())  # registry passes no bytes
    assert not voevent.accepts(Format.XML, None, meta(), b"<svg xmlns='x'/>")
    assert not voevent.accepts(Format.JSON, {"VOEvent": 1}, meta(), data)
    assert voevent.looks_like_voevent('<VOEvent/>'.encode("utf-16-le"))
    assert voevent.handle(data, None, meta()) == voevent.normalize(data, meta())


def test_non_voevent_root_is_unknown_format() -> None:
    with pytest.raises(UnknownFormat, match="XML root <Transport> is not a VOEvent"):
        voevent.normalize(b'<trn:Transport xmlns:trn="http://telescope-networks.org/schema/'
                          b'Transport/v1.1" role="iamalive" version="1.0"/>', meta())


def test_hostile_voevent_is_refused_before_normalizing() -> None:
    data = (b'<?xml version="1.0"?><!DOCTYPE VOEvent [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            + make_voevent(param("TrigID", "&x;")).split(b"\n", 1)[1])
    with pytest.raises(HostileInput, match="declares entities"):
        voevent.normalize(data, meta())
    with pytest.raises(HostileInput, match="exceeds"):
        voevent.normalize(b"<VOEvent>" + b" " * voevent.MAX_VOEVENT_BYTES + b"</VOEvent>",
                          meta())


# -- LVK ----------------------------------------------------------------------------

def test_lvk_superevent() -> None:
    alert = one_alert(lvk(), "gcn.classic.voevent.LVC_PRELIMINARY")
    assert (alert.facility, alert.messenger, alert.instrument) == ("LVK", "gravitational_wave",
                                                                   "H1,L1")
    # A Preliminary is "initial" on every path (igwn.gwalert JSON says so too), whatever
    # its serial number; an LVK "Initial" is an update of it.
    # LVK's own revision rule, as on its JSON path (Who/Date is its time_created).
    created = datetime(2024, 5, 1, 10, 0, 30, tzinfo=UTC)
    assert (alert.event_id, alert.revision, alert.alert_type) == (
        "S240501ab", lvk_rules.revision("S240501ab", created, "PRELIMINARY"), "initial")
    assert alert.extra["revision_rule"] == lvk_rules.REVISION_RULE
    assert alert.extra["issued"] == "2024-05-01T10:00:30Z"
    assert alert.role == "observation"
    assert alert.far_hz == 1e-10  # LVK FAR is in Hz
    assert alert.localization.kind == "none"
    # GraceDB's ",0" is the file's version: kept, so the map fetched is the one named.
    assert alert.extra["skymap_url"] == (
        "https://gracedb.example/S240501ab/bayestar.multiorder.fits,0")
    assert alert.extra["classification"] == {"BNS": 0.9, "Terrestrial": 0.1}
    assert alert.signalness == pytest.approx(0.9)
    assert alert.provenance is not None and alert.provenance.pipeline == "gstlal"
    assert alert.data_rights.level == "public"
    assert alert.trigger_time == datetime(2024, 5, 1, 9, 59, 58, 123456, tzinfo=UTC)


@pytest.mark.parametrize("grace_id", ["MS240501ab", "TS240501ab"])
def test_lvk_mock_and_test_superevents_are_tests(grace_id: str) -> None:
    assert one_alert(lvk(grace_id=grace_id)).role == "test"


def test_lvk_hardware_injection_is_a_test() -> None:
    data = lvk().replace(b'name="HardwareInj" value="0"', b'name="HardwareInj" value="1"')
    assert one_alert(data).role == "test"


def test_lvk_first_notice_and_retraction() -> None:
    first = one_alert(lvk(serial=1, alert_type="EarlyWarning", packet_type=163))
    assert first.alert_type == "initial"
    retraction = one_alert(lvk(serial=3, alert_type="Retraction", packet_type=164, far=""))
    assert retraction.alert_type == "retraction"
    # Created in the same second: LVK's sequence decides, and a retraction always wins.
    assert retraction.revision == first.revision + 5
    assert retraction.far_hz is None


def test_lvk_packet_the_lvk_rule_cannot_place_keeps_its_serial() -> None:
    # An O2 GraceID is no superevent (no date in it): Pkt_Ser_Num - 1, and no rule named.
    old = one_alert(lvk(grace_id="G298048", serial=3))
    assert old.revision == 2 and "revision_rule" not in old.extra
    no_type = one_alert(lvk(serial=3, alert_type=""))
    assert no_type.revision == 2 and "revision_rule" not in no_type.extra


@pytest.mark.parametrize(("far", "expected_hz"), [
    (param("FAR", "2e-9", "Hz"), 2e-9),
    (param("FAR", "2e-9"), 2e-9),  # no unit attribute: LVK documents Hz
    (param("FAR", "3.15576", "yr^-1"), 1e-7),  # the unit attribute wins
])
def test_lvk_far_units(far: str, expected_hz: float) -> None:
    assert one_alert(lvk(far=far)).far_hz == pytest.approx(expected_hz)


def test_lvk_internal_or_closed_alert_is_proprietary() -> None:
    data = lvk().replace(b'name="internal" value="0"', b'name="internal" value="1"')
    assert one_alert(data).data_rights.level == "proprietary"


# -- GCN classic quirks ---------------------------------------------------------------

def test_gbm_notice_sequence_orders_revisions() -> None:
    alert = one_alert(gbm(110, 1, (0.0, 0.0, 0.0)))
    flt = one_alert(gbm(111, 45, (120.0, -30.0, 8.5), cites="ivo://nasa.gsfc.gcn/Fermi#a"))
    gnd = one_alert(gbm(112, 57, (121.0, -31.0, 4.0), cites="ivo://nasa.gsfc.gcn/Fermi#a"))
    fin = one_alert(gbm(115, 0, (121.5, -31.5, 2.0)))
    assert [a.revision for a in (alert, flt, gnd, fin)] == [1, 1045, 2057, 3000]
    assert [a.alert_type for a in (alert, flt, gnd, fin)] == ["initial", "update", "update",
                                                              "update"]
    assert {a.event_id for a in (alert, flt, gnd, fin)} == {"736000001"}
    assert alert.localization.kind == "none"
    assert point(flt) == (120.0, -30.0, 8.5, 0.6827)  # GBM: statistical 1-sigma radius
    assert flt.localization.systematic_deg == 7.52
    assert gnd.localization.systematic_deg == 3.72
    # GBM labels its band edges keV but gives eV.
    assert flt.energy is not None
    assert flt.energy.min_gev == pytest.approx(50e3 * 1e-9)
    assert flt.energy.max_gev == pytest.approx(300e3 * 1e-9)


def test_gcn_test_flags_make_a_test_alert() -> None:
    params = (param("Packet_Type", 53) + param("TrigID", 9876, ucd="meta.id")
              + '<Group name="Flags">' + param("Test_Notice", "true") + "</Group>")
    alert = one_alert(make_voevent(params, ivorn="ivo://nasa.gsfc.gcn/INTEGRAL#W_9876-1"))
    assert (alert.role, alert.facility, alert.instrument) == ("test", "INTEGRAL", "IBIS")


def test_gcn_zero_trigger_id_falls_back_to_facility_and_time() -> None:
    params = param("Packet_Type", 100) + param("TrigID", "000000", ucd="meta.id")
    alert = one_alert(make_voevent(params, ivorn="ivo://nasa.gsfc.gcn/AGILE#A_1"))
    assert alert.event_id == "AGILE-2024-05-01T10:00:00.500000Z"


def test_gcn_snews_without_valid_position() -> None:
    params = (param("Packet_Type", 149) + param("TrigID", 1000194, ucd="meta.id")
              + '<Group name="Trigger_ID">' + param("RADec_valid", "false")
              + param("Retraction", "false") + "</Group>")
    alert = one_alert(make_voevent(params, ivorn="ivo://nasa.gsfc.gcn/SNEWS#E_1",
                                   position=(0.0, 0.0, 360.0)))
    assert (alert.facility, alert.messenger, alert.alert_type) == ("SNEWS", "neutrino",
                                                                   "initial")
    assert alert.localization.kind == "none"
    assert alert.extra["position_note"] == "RADec_valid is false"


def test_gcn_retraction_flag() -> None:
    params = (param("Packet_Type", 149) + param("TrigID", 5, ucd="meta.id")
              + param("Retraction", "true"))
    alert = one_alert(make_voevent(params, ivorn="ivo://nasa.gsfc.gcn/SNEWS#E_2"))
    assert alert.alert_type == "retraction"


def test_gcn_heartbeat_becomes_a_heartbeat() -> None:
    data = make_voevent(param("Packet_Type", 3), ivorn="ivo://nasa.gsfc.gcn/gcn#imalive",
                        role="utility", time=None)
    result = voevent.normalize(data, meta("gcn.classic.voevent.IM_ALIVE"))
    assert isinstance(result, Normalized) and not result.alerts
    (beat,) = result.heartbeats
    assert (beat.stream, beat.time) == ("gcn.classic.voevent.IM_ALIVE",
                                        datetime(2024, 5, 1, 10, 0, 30, tzinfo=UTC))


@pytest.mark.parametrize(("packet_type", "reason"), [
    (4, "KILL_SOCKET (Packet_Type 4) is a control packet"),
    (83, "SWIFT_POINTDIR (Packet_Type 83) is a spacecraft pointing"),
])
def test_gcn_control_and_pointing_packets_are_rejected(packet_type: int, reason: str) -> None:
    with pytest.raises(NormalizationError) as info:
        voevent.normalize(make_voevent(param("Packet_Type", packet_type)), meta())
    assert reason in info.value.reason


def test_icecube_gold_far_in_per_year() -> None:
    params = (param("Packet_Type", 173) + param("AMON_ID", 13457731638233, ucd="meta.id")
              + param("run_id", 134577) + param("event_id", 31638233) + param("Rev", 1)
              + param("Energy", 682.65, "TeV") + param("Signalness", 0.886)
              + param("FAR", 0.2624, "yr^-1") + param("src_error_90", 0.5, "deg")
              + param("src_error_50", 0.2, "deg"))
    alert = one_alert(make_voevent(params, ivorn="ivo://nasa.gsfc.gcn/AMON#ICECUBE_GOLD_1",
                                   position=(265.058, 5.382, 0.5)))
    assert (alert.facility, alert.messenger) == ("IceCube", "neutrino")
    assert (alert.event_id, alert.revision, alert.alert_type) == ("134577:31638233", 1,
                                                                  "update")
    assert alert.far_hz == pytest.approx(0.2624 / SECONDS_PER_YEAR)
    assert alert.energy is not None and alert.energy.best_gev == pytest.approx(682650.0)
    assert alert.signalness == 0.886
    assert point(alert) == (265.058, 5.382, 0.5, 0.9)
    fifty = one_alert(make_voevent(params, ivorn="ivo://nasa.gsfc.gcn/AMON#ICECUBE_GOLD_2",
                                   position=(265.058, 5.382, 0.2)))
    assert fifty.localization.containment == 0.5


def test_far_without_unit_is_not_guessed_for_other_streams() -> None:
    alert = one_alert(make_voevent(param("TrigID", 7, ucd="meta.id") + param("FAR", 0.5)))
    assert alert.far_hz is None
    assert "no unit" in alert.extra["far_note"]


# -- VOEvent-level quirks ----------------------------------------------------------------

def test_retraction_citation_and_empty_event_ivorn() -> None:
    citations = ('<EventIVORN cite="retraction">ivo://example.org/stream#EV-17</EventIVORN>'
                 '<EventIVORN cite="supersedes"></EventIVORN>')
    alert = one_alert(make_voevent("", ivorn="ivo://example.org/stream#EV-17-retract",
                                   citations=citations, position=None))
    assert alert.alert_type == "retraction"
    assert (alert.event_id, alert.revision) == ("EV-17", 1)
    assert alert.extra["citations"] == [{"ivorn": "ivo://example.org/stream#EV-17",
                                         "cite": "retraction"}]


def test_v20_namespace_with_v11_schema_location() -> None:
    data = make_voevent(param("TrigID", 42, ucd="meta.id"), schema_location=(
        "http://www.ivoa.net/xml/VOEvent/v1.1 http://www.ivoa.net/xml/VOEvent/VOEvent-v1.1.xsd"))
    alert = one_alert(data)
    assert alert.extra["voevent"]["namespace"] == V20
    assert alert.event_id == "42"


def test_positions_in_radians_never_wrapped_and_placeholders() -> None:
    from alerts_schema.errors import ImplausibleValue

    rad = one_alert(make_voevent(param("TrigID", 1, ucd="meta.id"), unit="rad",
                                 position=(3 * math.pi / 2, math.pi / 6, 0.01)))
    ra, dec, err, _ = point(rad)
    assert (ra, dec, err) == pytest.approx((270.0, 30.0, math.degrees(0.01)))
    # Issue 14, item 6: refused, not wrapped and not reduced to "no position".
    with pytest.raises(ImplausibleValue, match=r"outside \[0, 360\)"):
        one_alert(make_voevent(param("TrigID", 1, ucd="meta.id"), unit="rad",
                               position=(-math.pi / 2, math.pi / 6, 0.01)))
    whole_sky = one_alert(make_voevent(param("TrigID", 2, ucd="meta.id"),
                                       position=(10.0, 10.0, 360.0)))
    assert "whole-sky convention" in whole_sky.extra["position_note"]
    for radius in (180.5, 1e308):
        with pytest.raises(ImplausibleValue, match="not an error"):
            one_alert(make_voevent(param("TrigID", 2, ucd="meta.id"),
                                   position=(10.0, 10.0, radius)))
    zero = one_alert(make_voevent(param("TrigID", 3, ucd="meta.id"), position=(0.0, 0.0, 0.0)))
    assert "placeholder" in zero.extra["position_note"]


@pytest.mark.parametrize(("data", "reason"), [
    (make_voevent(param("TrigID", 1, ucd="meta.id"), position=(10.0, 95.0, 1.0)),
     "declination 95.0 deg outside"),
    (make_voevent(param("TrigID", 1, ucd="meta.id"), role="simulation"), "has role 'simulation'"),
    (make_voevent(param("TrigID", 1, ucd="meta.id"), ivorn=""), "has no ivorn"),
    (make_voevent(param("TrigID", 1, ucd="meta.id"), time="yesterday"), "'yesterday'"),
])
def test_impossible_packets_are_rejected(data: bytes, reason: str) -> None:
    with pytest.raises(NormalizationError, match=reason):
        voevent.normalize(data, meta())


def test_generic_instrument_from_how_and_role_test() -> None:
    data = make_voevent(param("TrigID", "01709015181", ucd="meta.id"), role="test",
                        ivorn="ivo://lvk.internal/einsteinprobe#grb-1",
                        how="EinsteinProbe, WXT Instrument")
    alert = one_alert(data, "vtp:127.0.0.1:8099")
    assert (alert.facility, alert.instrument, alert.messenger) == ("Einstein Probe", "WXT",
                                                                   "x_ray")
    assert (alert.role, alert.event_id) == ("test", "01709015181")
    assert alert.id == "ivo://test.mmbroker/lvk.internal/einsteinprobe#01709015181-0"


# -- every VOEvent in ../shared/samples ----------------------------------------------

def _shared_voevents() -> list[Path]:
    return (sorted((SAMPLES / "voevents").rglob("*.xml"))
            + sorted((SAMPLES / "lvk").glob("*.xml")) + sorted((SAMPLES / "km3net").glob("*.xml")))


SHARED = _shared_voevents()
REJECTED = {  # truly not alerts, with the reason a person reads
    "voevents/pygcn/kill_socket.xml": "KILL_SOCKET (Packet_Type 4) is a control packet",
    "voevents/fourpiskytools/test_packet.xml": "has no event time in WhereWhen",
    "voevents/voevent-parse/no_namespace_packet.xml": "names no event",
}


@pytest.mark.parametrize("path", SHARED or [None],
                         ids=[str(p.relative_to(SAMPLES)) for p in SHARED] or ["absent"])
def test_shared_sample_voevent(path: Path | None) -> None:
    if path is None:
        pytest.skip(f"shared samples not found at {SAMPLES}: sweep skipped")
    rel = str(path.relative_to(SAMPLES))
    data = path.read_bytes()
    if rel in REJECTED:
        with pytest.raises(NormalizationError) as info:
            voevent.normalize(data, meta())
        assert REJECTED[rel] in info.value.reason
        return
    result = voevent.normalize(data, meta())
    assert len(result.alerts) == 1
    for alert in result.alerts:
        assert validation_errors("alert", alert.to_document()) == []
        assert alert.source_ivorn and alert.source.startswith("ivo://")


def shared(rel: str) -> Alert:
    path = SAMPLES / rel
    if not path.is_file():
        pytest.skip(f"shared sample {rel} not found under {SAMPLES}")
    return one_alert(path.read_bytes())


def test_shared_lvk_chain() -> None:
    names = ["1-EarlyWarning", "2-Preliminary", "3-Initial", "4-Update", "5-Retraction",
             "6-Update"]
    chain = [shared(f"lvk/MS181101ab-{name}.xml") for name in names]
    # LVK's rule orders them by time_created (Who/Date): "6-Update" was created at
    # 22:39:25, before the retraction (23:36:23), whatever its serial number says.
    assert [a.revision for a in chain] == [487560, 487735, 488312, 488313, 509903, 489394]
    assert [a.alert_type for a in chain] == ["initial", "initial", "update", "update",
                                             "retraction", "update"]
    assert {a.role for a in chain} == {"test"}
    assert {a.event_id for a in chain} == {"MS181101ab"}
    assert chain[0].far_hz == 9.11069936486e-14
    assert chain[5].extra["external_coinc"]["External_Observatory"] == "Fermi"


def test_shared_gcn_samples() -> None:
    gw170817 = shared("voevents/gwcelery/G298048-1-Initial.xml")
    assert (gw170817.event_id, gw170817.role, gw170817.data_rights.level) == (
        "G298048", "observation", "proprietary")  # OpenAlert=0 in O2
    assert gw170817.far_hz == 3.47773444765e-12
    fin = shared("voevents/gwcelery/fermi_final_gcn.xml")
    flt = shared("voevents/gwcelery/fermi_grb_gcn.xml")
    assert fin.event_id == flt.event_id == "548848711" and fin.revision > flt.revision
    assert point(fin) == (140.05, -39.0499, 5.6, 0.6827)
    snews = shared("voevents/gwcelery/snews_gcn.xml")
    assert (snews.messenger, snews.localization.kind, snews.role) == ("neutrino", "none",
                                                                      "observation")
    assert shared("voevents/gwcelery/snews_gcn_test.xml").role == "test"
    assert shared("voevents/gwcelery/integral_grb_gcn.xml").role == "test"  # Test_Notice=true
    agile = shared("voevents/gwcelery/agile_grb_gcn.xml")
    assert (agile.instrument, agile.localization.kind) == ("MCAL", "none")
    targeted = shared("voevents/gwcelery/swift_subgrbtargeted_template.xml")
    assert (targeted.far_hz, targeted.role) == (5.39583726e-08, "test")


def test_notices_of_one_trigger_on_different_topics_form_one_series() -> None:
    """GCN puts each notice type on its own topic; revisions must still order across them."""
    bat = sample("BAT_GRB_Pos_655721-214.xml", "gcn.classic.voevent.SWIFT_BAT_GRB_POS_ACK")
    xrt = sample("XRT_Pos_655721-326.xml", "gcn.classic.voevent.SWIFT_XRT_POSITION")
    assert (bat.source, bat.event_id) == (xrt.source, xrt.event_id)
    assert bat.revision < xrt.revision


@pytest.mark.parametrize("trig_id", ["²", "9" * 5000, "0" * 30])
def test_odd_identifiers_are_clear_errors_or_alerts(trig_id: str) -> None:
    """No identifier text may crash the normalizer with a bare ValueError."""
    xml = (DATA / "BAT_GRB_Pos_655721-214.xml").read_bytes().replace(
        b'name="TrigID" value="655721"', f'name="TrigID" value="{trig_id}"'.encode())
    try:
        result = voevent.normalize(xml, meta("gcn.classic.voevent.SWIFT_BAT_GRB_POS_ACK"))
    except InputError as exc:
        assert exc.reason
    else:
        for alert in result.alerts:
            assert not validation_errors("alert", alert.to_document())


@pytest.mark.parametrize(("system", "shift_s", "note"), [
    ("UTC-FK5-GEO", 0.0, False),
    ("TT-ICRS-TOPO", -(32.184 + 36), False),   # 2015: TAI - UTC = 36 s
    ("TAI-ICRS-GEO", -36.0, False),
    ("GPS-ICRS-GEO", -(36 - 19), False),
    # TDB - TT is -1.6 ms on that date (astropy; the clock reading is taken at the
    # geocentre, the note says the barycentric light time is not removed).
    ("TDB-ICRS-BARY", -(32.184 + 36) + 0.00156, True),
])
def test_time_scales_become_utc(system: str, shift_s: float, note: bool) -> None:
    xml = (DATA / "BAT_GRB_Pos_655721-214.xml").read_bytes()
    xml = re.sub(rb'coord_system_id="[^"]*"', f'coord_system_id="{system}"'.encode(), xml)
    alert = voevent.normalize(xml, meta("gcn.classic.voevent.x")).alerts[0]
    base = datetime(2015, 9, 15, 21, 18, 24, 860000, tzinfo=UTC)
    assert abs((alert.trigger_time - base).total_seconds() - shift_s) < 1e-3
    assert ("time_scale_note" in alert.extra) is note
    if note:
        assert alert.trigger_time_error_s == 500.0


# -- ANTARES: the site's Position3D first, a gamma-ray Concept on a neutrino ---------------

def antares_packet(concept: str = "process.variation.burst;em.gamma") -> bytes:
    """Built to the layout of ANTARES's real alert packets: an ObservatoryLocation holding
    the detector's geodetic site (Position3D, UTC-GEOD-TOPO) before the
    ObservationLocation that holds the event, and an ``em.gamma`` Concept."""
    return (
        "<?xml version='1.0' encoding='UTF-8'?>\n"
        f'<voe:VOEvent xmlns:voe="{V20}" version="2.0" role="observation" '
        'ivorn="ivo://antares.in2p3/alert#ANT240501A-1">'
        "<Who><AuthorIVORN>ivo://antares.in2p3/alert</AuthorIVORN>"
        "<Author><shortName>ANTARES</shortName></Author><Date>2024-05-01T10:00:30</Date></Who>"
        '<What><Param name="run_id" value="81352" ucd="meta.id.part"/>'
        '<Param name="event_id" value="ANT240501A" ucd="meta.id"/>'
        '<Param name="nhit" value="152" ucd="meta.number"/></What>'
        "<WhereWhen><ObsDataLocation>"
        '<ObservatoryLocation id="ANTARES"><AstroCoordSystem id="UTC-GEOD-TOPO"/>'
        '<AstroCoords coord_system_id="UTC-GEOD-TOPO"><Position3D unit="deg-deg-m">'
        "<Value3><C1>6.1650</C1><C2>42.7917</C2><C3>-2475</C3></Value3></Position3D>"
        "</AstroCoords></ObservatoryLocation>"
        '<ObservationLocation><AstroCoordSystem id="UTC-ICRS-TOPO"/>'
        '<AstroCoords coord_system_id="UTC-ICRS-TOPO"><Time unit="s"><TimeInstant>'
        "<ISOTime>2024-05-01T09:58:12.345</ISOTime></TimeInstant></Time>"
        '<Position2D unit="deg"><Name1>RA</Name1><Name2>Dec</Name2>'
        "<Value2><C1>231.25</C1><C2>-48.6</C2></Value2><Error2Radius>0.4</Error2Radius>"
        "</Position2D></AstroCoords></ObservationLocation>"
        "</ObsDataLocation></WhereWhen>"
        '<How><Description>ANTARES neutrino telescope</Description></How>'
        f'<Why importance="0.9"><Inference probability="0.9"><Concept>{concept}</Concept>'
        "</Inference></Why></voe:VOEvent>").encode()


def test_antares_position_is_the_observation_location_not_the_site() -> None:
    alert = one_alert(antares_packet())
    ra, dec, radius, _ = point(alert)
    assert (ra, dec, radius) == (231.25, -48.6, 0.4)
    assert alert.trigger_time == datetime(2024, 5, 1, 9, 58, 12, 345000, tzinfo=UTC)
    assert "position_note" not in alert.extra


@pytest.mark.parametrize("concept", ["process.variation.burst;em.gamma", "em.opt", ""])
def test_a_neutrino_telescope_is_a_neutrino_whatever_its_concept(concept: str) -> None:
    alert = one_alert(antares_packet(concept))
    assert (alert.facility, alert.messenger) == ("ANTARES", "neutrino")


@pytest.mark.parametrize(("lvk_type", "expected"), [
    ("EarlyWarning", "initial"), ("Preliminary", "initial"), ("Initial", "update"),
    ("Update", "update")])
@pytest.mark.parametrize("serial", [1, 3])
def test_lvk_alert_types_map_as_on_the_json_path(lvk_type: str, expected: str,
                                                  serial: int) -> None:
    """One LVK alert type, one contract alert_type, on the VOEvent path as on igwn.gwalert."""
    from listeners.lvk import contract_alert_type

    alert = one_alert(lvk(alert_type=lvk_type, serial=serial))
    assert alert.alert_type == expected == contract_alert_type(lvk_type)


# -- GCN's notice-type list -----------------------------------------------------------------

# Every type number GCN lists (nasa-gcn/pygcn gcn/notice_types.py, from GCN's filtering
# page), with its name.
GCN_NOTICE_TYPES = {
    1: "GRB_COORDS", 2: "TEST_COORDS", 3: "IM_ALIVE", 4: "KILL_SOCKET", 11: "MAXBC",
    21: "BRAD_COORDS", 22: "GRB_FINAL", 24: "HUNTS_SRC", 25: "ALEXIS_SRC",
    26: "XTE_PCA_ALERT", 27: "XTE_PCA_SRC", 28: "XTE_ASM_ALERT", 29: "XTE_ASM_SRC",
    30: "COMPTEL_SRC", 31: "IPN_RAW", 32: "IPN_SEG", 33: "SAX_WFC_ALERT", 34: "SAX_WFC_SRC",
    35: "SAX_NFI_ALERT", 36: "SAX_NFI_SRC", 37: "XTE_ASM_TRANS", 38: "spare38", 39: "IPN_POS",
    40: "HETE_ALERT_SRC", 41: "HETE_UPDATE_SRC", 42: "HETE_FINAL_SRC", 43: "HETE_GNDANA_SRC",
    44: "HETE_TEST", 45: "GRB_CNTRPART", 46: "SWIFT_TOO_FOM", 47: "SWIFT_TOO_SC_SLEW",
    48: "DOW_TOD", 50: "spare50", 51: "INTEGRAL_POINTDIR", 52: "INTEGRAL_SPIACS",
    53: "INTEGRAL_WAKEUP", 54: "INTEGRAL_REFINED", 55: "INTEGRAL_OFFLINE", 56: "INTEGRAL_WEAK",
    57: "AAVSO", 58: "MILAGRO_POS", 59: "KONUS_LC", 60: "SWIFT_BAT_GRB_ALERT",
    61: "SWIFT_BAT_GRB_POS_ACK", 62: "SWIFT_BAT_GRB_POS_NACK", 63: "SWIFT_BAT_GRB_LC",
    64: "SWIFT_BAT_SCALEDMAP", 65: "SWIFT_FOM_OBS", 66: "SWIFT_SC_SLEW",
    67: "SWIFT_XRT_POSITION", 68: "SWIFT_XRT_SPECTRUM", 69: "SWIFT_XRT_IMAGE",
    70: "SWIFT_XRT_LC", 71: "SWIFT_XRT_CENTROID", 72: "SWIFT_UVOT_DBURST",
    73: "SWIFT_UVOT_FCHART", 76: "SWIFT_BAT_GRB_LC_PROC", 77: "SWIFT_XRT_SPECTRUM_PROC",
    78: "SWIFT_XRT_IMAGE_PROC", 79: "SWIFT_UVOT_DBURST_PROC", 80: "SWIFT_UVOT_FCHART_PROC",
    81: "SWIFT_UVOT_POS", 82: "SWIFT_BAT_GRB_POS_TEST", 83: "SWIFT_POINTDIR",
    84: "SWIFT_BAT_TRANS", 85: "SWIFT_XRT_THRESHPIX", 86: "SWIFT_XRT_THRESHPIX_PROC",
    87: "SWIFT_XRT_SPER", 88: "SWIFT_XRT_SPER_PROC", 89: "SWIFT_UVOT_POS_NACK",
    90: "SWIFT_BAT_ALARM_SHORT", 91: "SWIFT_BAT_ALARM_LONG", 92: "SWIFT_UVOT_EMERGENCY",
    93: "SWIFT_XRT_EMERGENCY", 94: "SWIFT_FOM_PPT_ARG_ERR", 95: "SWIFT_FOM_SAFE_POINT",
    96: "SWIFT_FOM_SLEW_ABORT", 97: "SWIFT_BAT_QL_POS", 98: "SWIFT_BAT_SUB_THRESHOLD",
    99: "SWIFT_BAT_SLEW_POS", 100: "AGILE_GRB_WAKEUP", 101: "AGILE_GRB_GROUND",
    102: "AGILE_GRB_REFINED", 103: "SWIFT_ACTUAL_POINTDIR", 107: "AGILE_POINTDIR",
    108: "AGILE_TRANS", 109: "AGILE_GRB_POS_TEST", 110: "FERMI_GBM_ALERT",
    111: "FERMI_GBM_FLT_POS", 112: "FERMI_GBM_GND_POS", 113: "FERMI_GBM_LC",
    114: "FERMI_GBM_GND_INTERNAL", 115: "FERMI_GBM_FIN_POS", 116: "FERMI_GBM_ALERT_INTERNAL",
    117: "FERMI_GBM_FLT_INTERNAL", 118: "FERMI_GBM_TRANS", 119: "FERMI_GBM_POS_TEST",
    120: "FERMI_LAT_POS_INI", 121: "FERMI_LAT_POS_UPD", 122: "FERMI_LAT_POS_DIAG",
    123: "FERMI_LAT_TRANS", 124: "FERMI_LAT_POS_TEST", 125: "FERMI_LAT_MONITOR",
    126: "FERMI_SC_SLEW", 127: "FERMI_LAT_GND", 128: "FERMI_LAT_OFFLINE",
    129: "FERMI_POINTDIR", 130: "SIMBADNED", 131: "FERMI_GBM_SUBTHRESH",
    133: "SWIFT_BAT_MONITOR", 134: "MAXI_UNKNOWN", 135: "MAXI_KNOWN", 136: "MAXI_TEST",
    137: "OGLE", 138: "CBAT", 139: "MOA", 140: "SWIFT_BAT_SUBSUB", 141: "SWIFT_BAT_KNOWN_SRC",
    142: "VOE_11_IM_ALIVE", 143: "VOE_20_IM_ALIVE", 144: "FERMI_SC_SLEW_INTERNAL",
    145: "COINCIDENCE", 146: "FERMI_GBM_FIN_INTERNAL", 148: "SUZAKU_LC", 149: "SNEWS",
    150: "LVC_PRELIMINARY", 151: "LVC_INITIAL", 152: "LVC_UPDATE", 153: "LVC_TEST",
    154: "LVC_COUNTERPART", 157: "AMON_ICECUBE_COINC", 158: "AMON_ICECUBE_HESE",
    160: "CALET_GBM_FLT_LC", 161: "CALET_GBM_GND_LC", 163: "LVC_EARLY_WARNING",
    164: "LVC_RETRACTION", 168: "GWHEN_COINC", 169: "AMON_ICECUBE_EHE",
    171: "HAWC_BURST_MONITOR", 172: "AMON_NU_EM_COINC", 173: "ICECUBE_ASTROTRACK_GOLD",
    174: "ICECUBE_ASTROTRACK_BRONZE", 175: "SK_SN", 176: "ICECUBE_CASCADE",
    188: "GECAM_FLT", 189: "GECAM_GND",
}


def test_every_gcn_notice_type_maps_by_number_and_name() -> None:
    tables = {**{n: t.name for n, t in voevent.GCN_TYPES.items()},
              **voevent._LVK_TYPES, **voevent._ICECUBE_TYPES}
    assert {n: tables.get(n) for n in GCN_NOTICE_TYPES} == GCN_NOTICE_TYPES


@pytest.mark.parametrize(("number", "facility", "messenger"), [
    (188, "GECAM", "gamma_ray"), (189, "GECAM", "gamma_ray"), (114, "Fermi", "gamma_ray"),
    (116, "Fermi", "gamma_ray"), (117, "Fermi", "gamma_ray"), (175, "Super-Kamiokande",
                                                                "neutrino"),
    (39, "IPN", "gamma_ray"), (145, "GCN", "other")])
def test_live_types_that_were_missing_normalize(number: int, facility: str,
                                                messenger: str) -> None:
    data = make_voevent(param("Packet_Type", number) + param("TrigID", 123456, ucd="meta.id"),
                        ivorn=f"ivo://nasa.gsfc.gcn/X#{number}-1")
    alert = one_alert(data)
    assert (alert.facility, alert.messenger) == (facility, messenger)
    assert alert.extra["gcn"]["notice_type"] == GCN_NOTICE_TYPES[number]


# -- notice semantics ---------------------------------------------------------------------

def test_a_bat_position_citing_nothing_opens_the_event() -> None:
    alert = sample("BAT_GRB_Pos_655721-214.xml")
    assert alert.alert_type == "initial"
    cited = (DATA / "BAT_GRB_Pos_655721-214.xml").read_bytes().replace(
        b"</What>", b"</What>", 1).replace(
        b"<How>", b'<Citations><EventIVORN cite="supersedes">ivo://nasa.gsfc.gcn/SWIFT#'
        b"BAT_QuickLook_Pos_655721-1</EventIVORN></Citations><How>", 1)
    assert one_alert(cited).alert_type == "update"


def _bat_with(flags: dict[str, str]) -> bytes:
    xml = (DATA / "BAT_GRB_Pos_655721-214.xml").read_bytes()
    for name, value in flags.items():
        xml, n = re.subn(rf'<Param name="{name}" value="[^"]*"'.encode(),
                         f'<Param name="{name}" value="{value}"'.encode(), xml)
        assert n >= 1, name
    return xml


@pytest.mark.parametrize(("flags", "reason"), [
    ({"GRB_Identified": "false"}, "GRB_Identified=false"),
    ({"Target_in_Flt_Catalog": "true"}, "Target_in_Flt_Catalog"),
    ({"Def_NOT_a_GRB": "true"}, "Def_NOT_a_GRB"),
])
def test_known_sources_and_not_grbs_are_flagged_and_left_out_of_grb(
        flags: dict[str, str], reason: str) -> None:
    from crossmatch.config import load_config

    alert = one_alert(_bat_with(flags))
    assert alert.extra["not_a_grb"] is True and reason in alert.extra["not_a_grb_reasons"]
    grb = load_config().selectors["grb"]
    assert not grb.matches(alert)
    assert grb.matches(sample("BAT_GRB_Pos_655721-214.xml"))


def test_a_position_without_star_lock_is_kept_but_not_a_localization() -> None:
    alert = one_alert(_bat_with({"StarTrack_Lost_Lock": "true"}))
    assert alert.localization.kind == "none"
    assert "StarTrack_Lost_Lock" in alert.extra["position_note"]
    assert alert.extra["untrusted_position"] == {"C1": "319.7309", "C2": "-34.8537",
                                                 "Error2Radius": "0.0500"}



@pytest.mark.parametrize(("name", "reasons"), [
    ("gwcelery/fermi_noise_gcn.xml", ["Most_Likely_Index=19 (GRB is 4)"]),
    ("gwcelery/fermi_noise_gcn_2.xml", ["Most_Likely_Prob=49% < 50%"]),
    ("pygcn/gbm_flt_pos.xml", None),
])
def test_gbm_classification_decides_what_is_a_grb(name: str, reasons: list[str] | None) -> None:
    """Real GBM notices: gwcelery's two noise examples, and pygcn's GRB (index 4, 93%)."""
    path = SAMPLES / "voevents" / name
    if not path.is_file():
        pytest.skip(f"{path} not present (../shared/samples)")
    alert = one_alert(path.read_bytes())
    assert alert.extra.get("not_a_grb_reasons") == reasons
