"""VOEvent 2.0 building: detector triggers and coincidences (broker.publish.voevent_build).

Every packet is checked against the VOEvent 2.0 XSD bundled with voevent-parse
(offline), against the 99,000-byte limit, for determinism, and read back
through our own VOEvent reader (:mod:`listeners.voevent`).

Reading our own packets back (the mapping these tests pin down)
    ``listeners.voevent`` reads them with its *generic* family: the event id is
    the first top-level ``meta.id`` Param (``event_id`` = the alert's
    ``<detector>:<id>`` key, so it survives), the revision is the number of
    cited IVORNs (0 for an initial packet, 1 for an update or retraction
    citing one predecessor, not the trigger's own revision), the source is the
    stream IVORN ``ivo://<authority>/detector`` and the facility is the
    ``Who/Author/shortName`` (the broker), not the detector.
"""

from __future__ import annotations

import collections
import hashlib
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import voeventparse as vp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

import broker.publish.voevent_build as vb
from alerts_schema import (
    Alert,
    Coincidence,
    EllipseLocalization,
    NoLocalization,
    SkymapLocalization,
)
from broker.publish.voevent_build import (
    MAX_VOEVENT_BYTES,
    TRIGGER_FIELD_PARAMS,
    PublishError,
    Who,
    build_coincidence,
    build_trigger,
    validate,
)
from listeners import trigger as trigger_listener
from listeners import voevent as voevent_reader
from listeners.base import MessageMeta

EXAMPLES = Path(__file__).resolve().parent.parent / "alerts_schema" / "examples"
TRIGGER_EXAMPLES = sorted(EXAMPLES.glob("trigger-*.example.json"))
SAMPLES = Path(__file__).resolve().parent.parent.parent / "shared" / "samples" / "km3net"
RECEIVED = datetime(2026, 11, 21, 3, 12, 22, 160000, tzinfo=UTC)
META = MessageMeta("detector", RECEIVED, "test.mmbroker")
READER_META = MessageMeta("vtp:127.0.0.1", datetime(2027, 1, 1, tzinfo=UTC), "peer.mmbroker")
WHO = Who(author_ivorn="ivo://test.mmbroker/mmbroker", short_name="mmbroker",
          contact_name="Shift crew", contact_email="shift@mmbroker.invalid",
          publisher="mmbroker test instance")
PROV = "http://127.0.0.1:8000/api/v1/voevents/x/provenance"
PREVIOUS = "ivo://test.mmbroker/detector#KM3NeT:ARCA-12041-883201-1"
TRIGGER_TIME_FIELDS = ("time", "sent_time")


# -- helpers ----------------------------------------------------------------------

def _doc(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _alert(path: Path) -> Alert:
    return trigger_listener.normalize(path.read_bytes(), META).alerts[0]


def _build(alert: Alert, **kwargs: Any) -> bytes:
    if alert.alert_type == "retraction":
        kwargs.setdefault("retracts", PREVIOUS)
    elif alert.revision > 0:
        kwargs.setdefault("supersedes", PREVIOUS)
    return build_trigger(alert, who=WHO, provenance_url=PROV, **kwargs)


def _root(xml: bytes) -> etree._Element:
    return etree.fromstring(xml)


def _params(root: etree._Element) -> dict[str, etree._Element]:
    """Every What Param by name (names are unique per packet here, groups included)."""
    found: dict[str, etree._Element] = {}
    for p in root.find("What").iter("Param"):
        assert p.get("name") not in found, f"duplicate Param {p.get('name')}"
        found[p.get("name")] = p
    return found


def _top_params(root: etree._Element) -> dict[str, etree._Element]:
    return {p.get("name"): p for p in root.find("What").findall("Param")}


def _reread(xml: bytes) -> Alert:
    return voevent_reader.normalize(xml, READER_META).alerts[0]


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text.removesuffix("Z")).replace(tzinfo=UTC)


def _examples() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in EXAMPLES.glob("*.example.json")}


def _coincidence_inputs() -> tuple[Coincidence, list[Alert]]:
    ex = _examples()
    coinc = Coincidence.model_validate(ex["coincidence-gw-grb.example.json"])
    members = [Alert.model_validate(ex["alert-gw-cbc-skymap.example.json"]),
               Alert.model_validate(ex["alert-grb-gbm.example.json"])]
    return coinc, members


def _skymap_url(sha256: str) -> str:
    return f"http://127.0.0.1:8000/api/v1/skymaps/{sha256}"


def _expected(field: str, value: Any) -> dict[str, Any]:
    """Param name -> value a trigger field should give (see TRIGGER_FIELD_PARAMS)."""
    names = TRIGGER_FIELD_PARAMS[field]
    if field == "contact":
        return {"contact_name": value["name"], "contact_email": value["email"]}
    if field == "data_rights":
        out = {"data_rights": value["level"]}
        if value.get("embargo_until"):
            out["embargo_until"] = value["embargo_until"]
        return out
    return {names[0]: value}


def _assert_param_value(param: etree._Element, value: Any) -> None:
    text = param.get("value")
    if isinstance(value, bool):
        assert text == ("true" if value else "false")
        assert param.get("dataType") == "string"
    elif isinstance(value, int):
        assert int(text) == value
        assert param.get("dataType") in ("int", "float")
    elif isinstance(value, float):
        assert float(text) == value
        assert param.get("dataType") == "float"
    elif param.get("ucd") in ("time.epoch", "time.processing", "time.end"):
        assert _utc(text) == _utc(value)
    else:
        assert text == vb._clean(value)


# -- detector triggers ------------------------------------------------------------

@pytest.mark.parametrize("path", TRIGGER_EXAMPLES, ids=lambda p: p.name)
def test_example_trigger_builds_a_valid_voevent(path: Path) -> None:
    doc, alert = _doc(path), _alert(path)
    xml = _build(alert)
    assert validate(xml) == []
    assert len(xml) <= MAX_VOEVENT_BYTES
    root = _root(xml)
    assert root.tag == "{http://www.ivoa.net/xml/VOEvent/v2.0}VOEvent"
    assert root.get("version") == "2.0"
    assert root.get("ivorn") == alert.id
    assert root.get("role") == ("observation" if doc["real"] else "test")

    coords = root.find("WhereWhen/ObsDataLocation/ObservationLocation/AstroCoords")
    assert coords.get("coord_system_id") == "UTC-ICRS-GEO"
    assert _utc(coords.findtext("Time/TimeInstant/ISOTime")) == alert.trigger_time
    if doc.get("time_precision_s") is not None:
        assert float(coords.findtext("Time/Error")) == doc["time_precision_s"]
        assert coords.find("Time").get("unit") == "s"
    position = coords.find("Position2D")
    if "ra_deg" in doc:
        assert position.get("unit") == "deg"
        assert float(position.findtext("Value2/C1")) == doc["ra_deg"]
        assert float(position.findtext("Value2/C2")) == doc["dec_deg"]
        assert float(position.findtext("Error2Radius")) == doc["error_radius_90_deg"]
        # The containment Error2Radius stands for is stated, twice over.
        assert "90% containment" in root.findtext("WhereWhen/Description")
        assert float(_params(root)["error_radius_containment"].get("value")) == 0.9
    else:
        assert position is None

    params = _params(root)
    for field, value in doc.items():
        if field in ("$schema", "schema_version") or value is None:
            continue
        for name, expected in _expected(field, value).items():
            assert name in params, f"trigger field {field} has no Param {name}"
            _assert_param_value(params[name], expected)
    # Absent fields default as the schema says: revision 0, not a retraction.
    assert int(params["revision"].get("value")) == doc.get("revision", 0)
    assert params["retraction"].get("value") == ("true" if doc.get("retraction") else "false")
    for param in params.values():
        assert param.get("ucd"), f"Param {param.get('name')} has no UCD"
        assert param.findtext("Description"), f"Param {param.get('name')} undescribed"


def test_trigger_param_units_and_groups() -> None:
    root = _root(_build(_alert(EXAMPLES / "trigger-track-single.example.json")))
    params = _params(root)
    units = {"ra": "deg", "dec": "deg", "gal_l": "deg", "gal_b": "deg", "src_error_50": "deg",
             "src_error_90": "deg", "energy": "GeV", "energy_min": "GeV",
             "energy_max": "GeV", "FAR": "Hz", "time_error": "s"}
    for name, unit in units.items():
        assert params[name].get("unit") == unit, name
    groups = {g.get("name"): [p.get("name") for p in g.iter("Param")]
              for g in root.find("What").iter("Group")}
    assert {"Event", "Localization", "Energy", "Classification", "Reconstruction",
            "Publisher", "Data_Rights", "Provenance"} <= groups.keys()
    assert "trigger_type" in groups["Event"] and "ra" in groups["Localization"]
    assert "p_neutrino" in groups["Classification"] and "reco_method" in groups["Reconstruction"]
    # Readers look for these at the top level (ours reads FAR/signalness only there).
    top = [p.get("name") for p in root.find("What").findall("Param")]
    assert top[0] == "event_id" and {"FAR", "signalness", "revision"} <= set(top)
    # How names detector and reconstruction, and references the provenance document.
    how = [d.text for d in root.findall("How/Description")]
    assert how[0] == "KM3NeT neutrino telescope, ARCA021 Instrument"
    assert "JGandalf" in how[1]
    ref = root.find("How/Reference")
    assert ref.get("uri") == PROV and ref.get("type") == "provenance"
    # Why: p_astro and p_neutrino as Inference probabilities, with a neutrino concept.
    inferences = root.findall("Why/Inference")
    assert [float(i.get("probability")) for i in inferences] == [0.41, 0.97]
    assert all(i.findtext("Concept") == "phys.particle.neutrino" for i in inferences)
    who = root.find("Who")
    assert who.findtext("AuthorIVORN") == WHO.author_ivorn
    assert who.findtext("Author/contactEmail") == WHO.contact_email
    assert who.findtext("Author/title") == WHO.publisher
    # Who/Date is the alert's receipt time (seconds), never the clock.
    assert datetime.fromisoformat(who.findtext("Date")) == RECEIVED.replace(microsecond=0)


@pytest.mark.parametrize("path", TRIGGER_EXAMPLES, ids=lambda p: p.name)
def test_trigger_reads_back_through_our_listener(path: Path) -> None:
    alert = _alert(path)
    back = _reread(_build(alert))
    assert back.role == ("observation" if alert.role == "observation" else "test")
    assert back.trigger_time == alert.trigger_time
    assert back.trigger_time_error_s == alert.trigger_time_error_s
    assert back.localization == alert.localization
    assert back.messenger == "neutrino"
    assert back.instrument == alert.instrument
    assert back.far_hz == alert.far_hz
    assert back.signalness == alert.signalness
    assert back.alert_type == alert.alert_type
    # The event id mapping (module docstring): the key survives; stream and revision do not.
    assert back.event_id == alert.event_id
    assert back.source_ivorn == alert.id
    assert back.source == "ivo://test.mmbroker/detector"
    assert back.revision == (0 if alert.revision == 0 else 1)
    assert back.facility == WHO.short_name


def test_update_cites_supersedes_and_retraction_cites_retraction() -> None:
    update = _alert(EXAMPLES / "trigger-multiplet.example.json")
    assert update.alert_type == "update"
    previous = update.id.replace("-1", "-0")
    root = _root(build_trigger(update, who=WHO, provenance_url=PROV, supersedes=previous))
    cites = [(e.text, e.get("cite")) for e in root.findall("Citations/EventIVORN")]
    assert cites == [(previous, "supersedes")]
    assert "supersedes" in root.findtext("Citations/Description")

    retraction = _alert(EXAMPLES / "trigger-retraction.example.json")
    xml = build_trigger(retraction, who=WHO, provenance_url=PROV, retracts=PREVIOUS)
    root = _root(xml)
    assert [(e.text, e.get("cite")) for e in root.findall("Citations/EventIVORN")] == [
        (PREVIOUS, "retraction")]
    assert "Retracts" in root.findtext("Citations/Description")
    assert _reread(xml).alert_type == "retraction"

    # No predecessor known: no Citations element at all (an empty one is invalid).
    root = _root(build_trigger(update, who=WHO, provenance_url=PROV))
    assert root.find("Citations") is None
    with pytest.raises(ValueError, match="not a retraction"):
        build_trigger(update, who=WHO, provenance_url=PROV, retracts=PREVIOUS)


def test_who_without_a_short_name_takes_the_default() -> None:
    # Settings whose author_short_name is empty: the default short name, not the dataclass
    # slot descriptor that `cls.short_name` is on a slotted dataclass.
    class Bare:
        author_short_name = ""

    who = Who.from_settings(Bare())
    assert (who.short_name, who.publisher) == ("mmbroker", "mmbroker")


def test_roles_test_and_drill_are_test() -> None:
    test = _alert(EXAMPLES / "trigger-test.example.json")
    assert _root(_build(test)).get("role") == "test"
    drill = _alert(EXAMPLES / "trigger-track-single.example.json").model_copy(
        update={"role": "drill"})
    root = _root(_build(drill))
    assert root.get("role") == "test"
    assert _params(root)["real"].get("value") == "false"


def test_only_detector_triggers() -> None:
    grb = Alert.model_validate(_examples()["alert-grb-gbm.example.json"])
    with pytest.raises(ValueError, match="detector triggers only"):
        build_trigger(grb, who=WHO, provenance_url=PROV)


def test_output_is_byte_identical_on_repeat() -> None:
    for path in TRIGGER_EXAMPLES:
        first = _build(_alert(path))
        assert _build(_alert(path)) == first
        assert _build(_alert(path).model_copy(deep=True)) == first
    coinc, members = _coincidence_inputs()
    one = build_coincidence(coinc, members, who=WHO, provenance_url=PROV,
                            skymap_url_for=_skymap_url)
    assert build_coincidence(coinc, list(members), who=WHO, provenance_url=PROV,
                             skymap_url_for=_skymap_url) == one


# SHA-256 of the packets the objectify builder (606ee3d) made of the examples, with WHO,
# PROV and _build's citations.  The text builder (issue 17) must give the same bytes.  An
# intended change of a packet (or of an example, or voevent-parse's version, which Who
# names) updates these, saying so in its commit.
OBJECTIFY_BUILDER_SHA256 = {
    "coincidence": "eb4626653e23dc2d78d0aa0c092c69e6f03a9612101554179faebf4e144a7519",
    "trigger-multiplet": "9cd189547b9c17516f691591694e3c490872832769f566654e6fab5c31b820ef",
    "trigger-retraction": "e7956e259e7214c0271139ea02530cbad7d4b470c1a894c5142e95a61f4c002f",
    "trigger-test": "b0420c8496251d702bf12149ef0f132e01ec757391b22405833c04e38d579a0f",
    "trigger-track-single": "3573c549b1412b2455c4e8e4bce1913206542882881b092f49175068974c3be3",
}


def test_packets_are_the_bytes_the_objectify_builder_gave() -> None:
    made = {p.name.removesuffix(".example.json"): _build(_alert(p)) for p in TRIGGER_EXAMPLES}
    coinc, members = _coincidence_inputs()
    made["coincidence"] = build_coincidence(coinc, members, who=WHO, provenance_url=PROV,
                                            skymap_url_for=_skymap_url)
    assert {name: hashlib.sha256(xml).hexdigest() for name, xml in made.items()} \
        == OBJECTIFY_BUILDER_SHA256


def test_unknown_extra_fields_are_published_in_a_group() -> None:
    alert = _alert(EXAMPLES / "trigger-track-single.example.json")
    alert = alert.model_copy(update={"extra": {**alert.extra, "zz_note": {"b": 1, "a": [2]},
                                               "bad\u0001chars": "x\u0000y"}})
    root = _root(_build(alert))
    group = next(g for g in root.find("What").iter("Group") if g.get("name") == "Extra")
    values = {p.get("name"): p.get("value") for p in group.iter("Param")}
    assert values["zz_note"] == '{"a":[2],"b":1}'  # canonical JSON: deterministic bytes
    assert values["bad\ufffdchars"] == "x\ufffdy"  # what XML cannot carry is replaced


@given(st.text(st.sampled_from(list('ab &<>"\'\t\n\r]]>;#\u00e9\U0001d11e\u0000\ufffe')),
               max_size=40))
@settings(max_examples=80, deadline=None)
def test_what_text_reads_back_exactly(text: str) -> None:
    """Params and Groups are written as text and parsed once (issue 17): whatever a name,
    value or description holds reads back as it would from elements made one by one
    (attribute-value normalization would turn tabs and newlines into spaces, a bare
    ampersand would not parse)."""
    alert = _alert(EXAMPLES / "trigger-track-single.example.json")
    alert = alert.model_copy(update={"extra": {**alert.extra, f"n{text}": text,
                                               "as_json": {"k": text}}})
    root = _root(_build(alert))
    group = next(g for g in root.find("What").iter("Group") if g.get("name") == "Extra")
    values = {p.get("name"): p.get("value") for p in group.iter("Param")}
    assert values[vb._clean(f"n{text}")] == vb._clean(text)
    assert values["as_json"] == vb._value_text({"k": text})[0]
    param = vb._param(text, text, ucd="meta.code", unit="deg", description=text)
    assert param is not None
    element = etree.fromstring(param)
    assert (element.get("name"), element.get("value")) == (vb._clean(text),) * 2
    assert element.findtext("Description") == (vb._clean(text) or None)


def test_citations_without_parsing_are_what_the_packet_cites() -> None:
    """The outbox records a VOEvent's citations as the publisher hands them over; they are
    the ones a reader finds in its bytes."""
    update = _alert(EXAMPLES / "trigger-multiplet.example.json")
    retraction = _alert(EXAMPLES / "trigger-retraction.example.json")
    for alert, supersedes, retracts in ((update, PREVIOUS, None), (update, None, None),
                                        (retraction, None, PREVIOUS)):
        xml = build_trigger(alert, who=WHO, provenance_url=PROV, supersedes=supersedes,
                            retracts=retracts)
        assert vb.trigger_citations(supersedes, retracts) == vb.citations_of(xml)
    coinc, members = _coincidence_inputs()
    for state, supersedes in (("new", None), ("updated", "ivo://x.y/c#c-0"),
                              ("retracted", "ivo://x.y/c#c-1")):
        changed = coinc.model_copy(update={"state": state, "supersedes": supersedes})
        xml = build_coincidence(changed, members, who=WHO, provenance_url=PROV,
                                skymap_url_for=_skymap_url)
        assert vb.coincidence_citations(changed) == vb.citations_of(xml)
        assert (supersedes is None) or vb.citations_of(xml)[-1][0] == supersedes


def test_huge_packet_raises_publish_error_for_the_size_limit() -> None:
    alert = _alert(EXAMPLES / "trigger-track-single.example.json")
    huge = {f"param_{i:04d}": "x" * 100 for i in range(2000)}  # ~200 kB of Params
    with pytest.raises(PublishError, match="99000-byte limit") as info:
        _build(alert.model_copy(update={"extra": {**alert.extra, **huge}}))
    assert info.value.ivorn == alert.id


def test_schema_invalid_packet_raises_publish_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # Simulate the upstream failure mode: an empty How slips into the packet.
    monkeypatch.setattr(vb, "_add_how", lambda voevent, *a: voevent.sections.append("<How/>"))
    with pytest.raises(PublishError, match="How") as info:
        _build(_alert(EXAMPLES / "trigger-track-single.example.json"))
    assert info.value.errors and all(e.startswith("line ") for e in info.value.errors)


def test_validate_reports_errors() -> None:
    assert validate(b"<VOEvent") [0].startswith("not well-formed XML")
    good = _build(_alert(EXAMPLES / "trigger-track-single.example.json"))
    assert validate(good) == []
    assert any("version" in e for e in validate(good.replace(b'version="2.0"',
                                                                b'version="2.1"')))
    assert validate(good.replace(b'role="observation"', b'role="real"'))
    entity = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "boom">]><x>&e;</x>'
    assert validate(entity)  # never expanded into something valid


@pytest.mark.skipif(not SAMPLES.is_dir(), reason=f"KM3NeT samples not present at {SAMPLES}")
def test_validate_accepts_km3net_published_samples() -> None:
    for path in sorted(SAMPLES.glob("*.xml")):
        assert validate(path.read_bytes()) == [], path.name


# -- voevent-parse 1.0.3 on Python >= 3.10 ----------------------------------------

def _bare_packet() -> Any:
    v = vp.Voevent(stream="test.mmbroker/detector", stream_id="x-0", role="test")
    vp.set_who(v, date=RECEIVED, author_ivorn="test.mmbroker/mmbroker")
    return v


@pytest.mark.skipif(hasattr(collections, "Iterable"),
                    reason="collections.Iterable exists: voevent-parse is not broken here")
@pytest.mark.parametrize(("call", "element"), [
    (lambda v: vp.add_how(v, references=vp.Reference(PROV)), "How"),
    (lambda v: vp.add_why(v, inferences=vp.Inference(probability=0.5)), "Why"),
    (lambda v: vp.add_citations(v, vp.EventIvorn(PREVIOUS, "supersedes")), "Citations"),
], ids=["add_how", "add_why", "add_citations"])
def test_upstream_helpers_are_broken_here_and_ours_are_not(call: Any, element: str) -> None:
    v = _bare_packet()
    assert vp.valid_as_v2_0(v)
    with pytest.raises(AttributeError, match="Iterable"):
        call(v)
    # The element was inserted before the failure, empty, and the packet no longer
    # validates (add_how given descriptions too adds those first: then it stays valid
    # but silently loses its references).
    inserted = v.find(element)
    assert inserted is not None and inserted.countchildren() == 0
    assert not vp.valid_as_v2_0(v)
    assert any(element in e for e in validate(vp.dumps(v)))

    # Our path builds all three, complete, and the packet is valid.
    xml = _build(_alert(EXAMPLES / "trigger-multiplet.example.json"))
    assert validate(xml) == []
    root = _root(xml)
    assert root.find("How/Reference") is not None
    assert root.find("Why/Inference") is not None
    assert root.find("Citations/EventIVORN") is not None


# -- coincidences -----------------------------------------------------------------

def test_example_coincidence_builds_a_valid_voevent() -> None:
    coinc, members = _coincidence_inputs()
    xml = build_coincidence(coinc, members, who=WHO, provenance_url=PROV,
                            skymap_url_for=_skymap_url)
    assert validate(xml) == []
    assert len(xml) < 20_000  # the sky map goes by reference, never inline
    root = _root(xml)
    assert root.get("ivorn") == coinc.id
    assert root.get("role") == "observation"
    coords = root.find("WhereWhen/ObsDataLocation/ObservationLocation/AstroCoords")
    assert _utc(coords.findtext("Time/TimeInstant/ISOTime")) == coinc.reference_time
    # The best localization is the GW sky map: its most probable pixel, by reference.
    assert float(coords.findtext("Position2D/Value2/C1")) == 197.45
    assert float(coords.findtext("Position2D/Value2/C2")) == -23.38
    radius = float(coords.findtext("Position2D/Error2Radius"))
    assert 3.1 < radius < 3.2  # the equal-area circle of 31.6 deg2
    params = _params_in(root, "Localization")
    sha = coinc.localization.skymap_sha256
    assert params["skymap_url"].get("value") == _skymap_url(sha)
    assert params["skymap_sha256"].get("value") == sha
    assert params["localization_member"].get("value") == members[0].id

    significance = _params_in(root, "Significance")
    for figure in coinc.significance:
        p = significance[figure.name]
        assert float(p.get("value")) == figure.value
        assert p.get("unit") == figure.unit
        assert figure.definition in p.findtext("Description")
        assert p.findtext("Description").startswith("Upper bound.")
    overlap = _params_in(root, "Spatial_Overlap")
    assert float(overlap["overlap_integral"].get("value")) == 84.2
    assert float(overlap["log10_overlap_integral"].get("value")) == 1.9253
    assert overlap["overlap_method"].get("value") == coinc.spatial_overlap.method
    assert all(p.findtext("Description") for p in overlap.values())

    for i, member in enumerate(coinc.members, start=1):
        group = _params_in(root, f"Member_{i}")
        assert group["ivorn"].get("value") == member.alert_id
        assert group["facility"].get("value") == member.facility
        assert group["messenger"].get("value") == member.messenger
        assert int(group["revision"].get("value")) == member.revision
        assert float(group["time_offset"].get("value")) == member.time_offset_s
        assert group["time_offset"].get("unit") == "s"
    cites = [(e.text, e.get("cite")) for e in root.findall("Citations/EventIVORN")]
    assert cites == [(m.alert_id, "followup") for m in coinc.members]
    assert [c.text for c in root.findall("Why/Inference/Concept")] == [
        "process.gravitation", "em.gamma"]
    assert root.find("How/Reference").get("type") == "provenance"
    assert _top_params(root)["event_id"].get("value") == "gw_cbc-grb-S261121ab-786424370"


def _params_in(root: etree._Element, group: str) -> dict[str, etree._Element]:
    element = next(g for g in root.find("What").iter("Group") if g.get("name") == group)
    return {p.get("name"): p for p in element.iter("Param")}


def test_coincidence_update_and_retraction_citations() -> None:
    coinc, members = _coincidence_inputs()
    first = coinc.id
    updated = coinc.model_copy(update={"id": first[:-2] + "-1", "revision": 1,
                                       "state": "updated", "supersedes": first})
    root = _root(build_coincidence(updated, members, who=WHO, provenance_url=PROV))
    cites = [(e.text, e.get("cite")) for e in root.findall("Citations/EventIVORN")]
    assert cites[-1] == (first, "supersedes")
    assert sum(c == "followup" for _, c in cites) == 2
    assert _top_params(root)["event_id"].get("value") == "gw_cbc-grb-S261121ab-786424370"

    retracted = updated.model_copy(update={"id": first[:-2] + "-2", "revision": 2,
                                           "state": "retracted",
                                           "supersedes": updated.id,
                                           "spatial_overlap": None, "significance": []})
    xml = build_coincidence(retracted, members, who=WHO, provenance_url=PROV)
    assert validate(xml) == []
    root = _root(xml)
    cites = [(e.text, e.get("cite")) for e in root.findall("Citations/EventIVORN")]
    assert cites[-1] == (updated.id, "retraction")
    assert "RETRACTED" in root.findtext("Description")


def test_coincidence_localization_kinds() -> None:
    coinc, members = _coincidence_inputs()
    gbm = members[1].localization
    xml = build_coincidence(coinc.model_copy(update={"localization": gbm}), members,
                            who=WHO, provenance_url=PROV)
    coords = _root(xml).find("WhereWhen/ObsDataLocation/ObservationLocation/AstroCoords")
    assert float(coords.findtext("Position2D/Error2Radius")) == gbm.error_radius_deg
    params = _params_in(_root(xml), "Localization")
    assert float(params["error_radius_containment"].get("value")) == gbm.containment
    assert float(params["systematic_error"].get("value")) == gbm.systematic_deg
    assert params["localization_member"].get("value") == members[1].id

    ellipse = EllipseLocalization(ra_deg=359.98, dec_deg=12.4, semi_major_deg=0.4,
                                  semi_minor_deg=0.2, position_angle_deg=30.0,
                                  containment=0.9)
    xml = build_coincidence(coinc.model_copy(update={"localization": ellipse}), members,
                            who=WHO, provenance_url=PROV)
    assert validate(xml) == []
    coords = _root(xml).find("WhereWhen/ObsDataLocation/ObservationLocation/AstroCoords")
    assert float(coords.findtext("Position2D/Error2Radius")) == 0.4

    for none in (NoLocalization(), None):
        xml = build_coincidence(coinc.model_copy(update={"localization": none}), members,
                                who=WHO, provenance_url=PROV)
        assert validate(xml) == []
        coords = _root(xml).find("WhereWhen/ObsDataLocation/ObservationLocation/AstroCoords")
        assert coords.find("Position2D") is None
        assert _utc(coords.findtext("Time/TimeInstant/ISOTime")) == coinc.reference_time

    # A sky map without the broker's URL falls back to the facility's; never inline.
    skymap = SkymapLocalization(skymap_sha256="ab" * 32, format="flat",
                                url="https://gracedb.example/map.fits", ra_deg=None,
                                dec_deg=None, area_90_deg2=None)
    xml = build_coincidence(coinc.model_copy(update={"localization": skymap}), members,
                            who=WHO, provenance_url=PROV)
    assert validate(xml) == []
    root = _root(xml)
    assert _params_in(root, "Localization")["skymap_url"].get("value") == skymap.url
    assert root.find(".//Position2D") is None

    # No time anywhere (no reference time, no member alerts): no WhereWhen, still valid.
    xml = build_coincidence(coinc.model_copy(update={"reference_time": None,
                                                     "localization": None}), [],
                            who=WHO, provenance_url=PROV)
    assert validate(xml) == []
    assert _root(xml).find("WhereWhen") is None


def test_coincidence_role_and_missing_members() -> None:
    coinc, members = _coincidence_inputs()
    tests = [m.model_copy(update={"role": "test"}) for m in members]
    assert _root(build_coincidence(coinc, tests, who=WHO, provenance_url=PROV)).get(
        "role") == "test"
    drills = [m.model_copy(update={"role": "drill"}) for m in members]
    assert _root(build_coincidence(coinc, drills, who=WHO, provenance_url=PROV)).get(
        "role") == "test"
    # One member alert not available: still published, described, and cited.
    xml = build_coincidence(coinc, members[:1], who=WHO, provenance_url=PROV)
    assert validate(xml) == []
    root = _root(xml)
    group = _params_in(root, "Member_2")
    assert "instrument" not in group and group["ivorn"].get("value") == members[1].id
    assert len(root.findall("Citations/EventIVORN")) == 2


def test_coincidence_with_a_neutrino_trigger_member() -> None:
    ex = _examples()
    nu = _alert(EXAMPLES / "trigger-track-single.example.json")
    grb = Alert.model_validate(ex["alert-grb-gbm.example.json"])
    coinc = Coincidence.model_validate({
        **ex["coincidence-gw-grb.example.json"],
        "id": "ivo://test.mmbroker/coincidence#nu-grb-abc-0", "pairing": "nu-grb",
        "members": [
            {"alert_id": nu.id, "revision": 0, "source": "detector", "messenger": "neutrino",
             "facility": "KM3NeT", "time_offset_s": 0.0},
            {"alert_id": grb.id, "revision": 0, "source": grb.source,
             "messenger": "gamma_ray", "facility": "Fermi", "time_offset_s": 25.215}],
        "reference_time": "2026-11-21T03:12:21.805Z",
        "localization": nu.localization.model_dump()})
    xml = build_coincidence(coinc, [nu, grb], who=WHO, provenance_url=PROV)
    assert validate(xml) == []
    root = _root(xml)
    coords = root.find("WhereWhen/ObsDataLocation/ObservationLocation/AstroCoords")
    assert float(coords.findtext("Time/Error")) == nu.trigger_time_error_s
    assert _params_in(root, "Localization")["localization_member"].get("value") == nu.id


# -- property test ----------------------------------------------------------------

_finite = {"allow_nan": False, "allow_infinity": False}
# Triggers refuse C0 controls but tab/newline/return, and DEL (listeners.trigger); C1
# controls and everything else XML cannot carry still reach the builder.
_REFUSED = "".join(map(chr, [*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F]))
_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters=_REFUSED),
                min_size=1, max_size=60)
_optional = st.none() | _text
_id = st.text(st.sampled_from("ABCxyz019._:+-"), min_size=1, max_size=40)
_time = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31)).map(
    lambda t: t.isoformat(timespec="microseconds") + "Z")


@st.composite
def _trigger_docs(draw: st.DrawFn) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "event_id": draw(_id), "detector": draw(_text.filter(lambda s: len(s) <= 128)),
        "real": draw(st.booleans()), "time": draw(_time),
        "revision": draw(st.integers(0, 1_000_000)),
        "trigger_type": draw(st.sampled_from(["track", "starting_track", "shower",
                                              "multiplet", "other"])),
        "ra_deg": draw(st.floats(0, 360, exclude_max=True, **_finite)),
        "dec_deg": draw(st.floats(-90, 90, **_finite)),
        "error_radius_90_deg": draw(st.floats(0, 180, **_finite)),
    }
    optional = {
        "instrument": _text, "time_precision_s": st.floats(0, 86400, **_finite),
        "sent_time": _time, "gal_l_deg": st.floats(0, 360, exclude_max=True, **_finite),
        "gal_b_deg": st.floats(-90, 90, **_finite),
        "error_radius_50_deg": st.floats(0, 180, **_finite),
        "flavor": st.sampled_from(["e", "mu", "tau", "unknown"]),
        "neutrino_type": st.sampled_from(["neutrino", "antineutrino", "unknown"]),
        "multiplicity": st.integers(1, 10000), "energy_gev": st.floats(0, 1e12, **_finite),
        "energy_min_gev": st.floats(0, 1e12, **_finite),
        "energy_max_gev": st.floats(0, 1e12, **_finite),
        "reco_quality": st.floats(-1e6, 1e6, **_finite), "p_neutrino": st.floats(0, 1),
        "p_astro": st.floats(0, 1), "far_hz": st.floats(0, 1e3, **_finite),
        "ranking": st.sampled_from(["gold", "silver", "bronze"]), "pipeline": _text,
        "pipeline_version": _text, "reco_method": _text, "cuts": _text, "publisher": _text,
        "contact": st.fixed_dictionaries({"name": _text, "email": st.just("a@b.c")}),
        "data_rights": st.sampled_from([{"level": "public"}, {"level": "proprietary"}, {
            "level": "embargoed", "embargo_until": "2030-01-01T00:00:00Z"}]),
    }
    for name, strategy in optional.items():
        if draw(st.booleans()):
            doc[name] = draw(strategy)
    return doc


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_trigger_docs())
def test_any_trigger_builds_valid_and_round_trips(doc: dict[str, Any]) -> None:
    alert = trigger_listener.trigger_alert(doc, META)
    xml = _build(alert)
    assert validate(xml) == []
    assert len(xml) <= MAX_VOEVENT_BYTES
    assert _build(alert) == xml
    root = _root(xml)
    params = _params(root)
    for field, value in doc.items():
        for name, expected in _expected(field, value).items():
            _assert_param_value(params[name], expected)
    back = _reread(xml)
    assert back.trigger_time == alert.trigger_time
    # The reader drops GCN's no-position placeholder RA=Dec=0; a radius of 180 deg is a
    # (poor) position, not the whole-sky convention (360 deg, outside what is drawn here).
    if (doc["ra_deg"], doc["dec_deg"]) != (0.0, 0.0):
        assert back.localization == alert.localization
    else:
        assert back.localization == NoLocalization()
    assert back.role == ("observation" if doc["real"] else "test")
    assert back.event_id == vb._clean(alert.event_id).strip()  # the reader strips values


def test_every_trigger_schema_field_is_mapped() -> None:
    from alerts_schema import load_schema

    fields = set(load_schema("trigger")["properties"]) - {"$schema", "schema_version"}
    assert fields == set(TRIGGER_FIELD_PARAMS)
    # listeners.trigger's extra fields are all known to the builder (else they'd land
    # in the Extra group instead of their own).
    assert set(trigger_listener._EXTRA_FIELDS) == set(vb._TRIGGER_EXTRA)


def test_not_xml_characters_pattern() -> None:
    assert vb._clean("a\x00b\x1fc\ud800d\ufffee\tf") == "a\ufffdb\ufffdc\ufffdd\ufffde\tf"
    assert re.fullmatch(r"[^\x00]*", vb._clean("\x00")) is not None
