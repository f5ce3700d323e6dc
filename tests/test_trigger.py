"""Detector triggers: the trigger schema, its examples, and their normalization to Alerts."""

from __future__ import annotations

import copy
import json
import pickle
from datetime import UTC, datetime
from typing import Any

import pytest

import alerts_schema
from alerts_schema import Alert
from alerts_schema.errors import HostileInput, SchemaValidationError
from listeners import trigger
from listeners.base import MessageMeta
from listeners.detect import Format

RECEIVED = datetime(2026, 11, 21, 3, 12, 22, 160000, tzinfo=UTC)


def meta(source: str = "detector") -> MessageMeta:
    return MessageMeta(source=source, received_at=RECEIVED, authority="test.mmbroker")


def example(name: str) -> dict[str, Any]:
    paths = {p.name: p for p in alerts_schema.example_paths("trigger")}
    return json.loads(paths[f"trigger-{name}.example.json"].read_text("utf-8"))


def one(doc: Any, source: str = "detector") -> Alert:
    result = trigger.normalize(json.dumps(doc).encode(), meta(source))
    assert len(result.alerts) == 1 and not result.heartbeats
    alert = result.alerts[0]
    assert alerts_schema.validation_errors("alert", alert.to_document()) == []
    return alert


# -- the schema ------------------------------------------------------------------------

def test_examples_cover_track_multiplet_test_and_retraction() -> None:
    names = {p.name for p in alerts_schema.example_paths("trigger")}
    assert {"trigger-track-single.example.json", "trigger-multiplet.example.json",
            "trigger-test.example.json", "trigger-retraction.example.json"} <= names
    for path in alerts_schema.example_paths("trigger"):
        assert alerts_schema.validation_errors("trigger", json.loads(path.read_text())) == []


def _objects(node: Any, path: str = "$") -> list[tuple[str, dict[str, Any]]]:
    """Every object schema (one with properties) inside ``node``."""
    found = []
    if isinstance(node, dict):
        if "properties" in node and node.get("type") == "object":
            found.append((path, node))
        for key, value in node.items():
            found.extend(_objects(value, f"{path}/{key}"))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found.extend(_objects(value, f"{path}/{i}"))
    return found


def test_schema_objects_are_closed_described_and_bounded() -> None:
    schema = alerts_schema.load_schema("trigger")
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    objects = _objects(schema)
    assert len(objects) == 3  # the trigger, Contact, DataRights
    for path, node in objects:
        assert node.get("additionalProperties") is False, path
        assert node.get("description"), path
        for name, spec in node["properties"].items():
            assert spec.get("description"), f"{path}.{name} has no description"
            types = spec.get("type", [])
            types = [types] if isinstance(types, str) else types
            if "string" in types and "enum" not in spec and "const" not in spec:
                assert "maxLength" in spec, f"{path}.{name}: unbounded string"


def test_required_fields() -> None:
    schema = alerts_schema.load_schema("trigger")
    assert set(schema["required"]) == {"event_id", "detector", "real", "time"}
    assert set(schema["else"]["required"]) == {"trigger_type", "ra_deg", "dec_deg",
                                               "error_radius_90_deg"}


@pytest.mark.parametrize(("change", "path"), [
    ({"ra_deg": None}, "$.ra_deg"),
    ({"ra_deg": 360.0}, "$.ra_deg"),
    ({"dec_deg": -91}, "$.dec_deg"),
    ({"time": "2026-11-21T04:12:21+01:00"}, "$.time"),
    ({"time": "2026-11-21"}, "$.time"),
    ({"real": "yes"}, "$.real"),
    ({"p_astro": 1.2}, "$.p_astro"),
    ({"event_id": "has space"}, "$.event_id"),
    ({"event_id": "x" * 129}, "$.event_id"),
    ({"detector": ""}, "$.detector"),
    ({"trigger_type": "banana"}, "$.trigger_type"),
    ({"multiplicity": 0}, "$.multiplicity"),
    ({"contact": {"name": "A"}}, "$.contact"),
    ({"contact": {"name": "A", "email": "not an address"}}, "$.contact"),
    ({"data_rights": {"level": "embargoed"}}, "$.data_rights"),
    ({"unexpected": 1}, "$"),
    ({"retraction": True}, "$.revision"),  # a retraction is a later revision
    ({"$schema": "https://example.invalid/other.json"}, "$['$schema']"),
])
def test_invalid_triggers_are_refused_with_paths(change: dict[str, Any], path: str) -> None:
    doc = {**example("track-single"), **change}
    with pytest.raises(SchemaValidationError) as info:
        trigger.normalize(json.dumps(doc).encode(), meta())
    assert info.value.schema == "trigger"
    assert any(e.startswith(path) for e in info.value.errors), info.value.errors


@pytest.mark.parametrize("field", ["event_id", "detector", "real", "time", "trigger_type",
                                   "ra_deg", "dec_deg", "error_radius_90_deg"])
def test_required_field_missing(field: str) -> None:
    doc = example("track-single")
    del doc[field]
    with pytest.raises(SchemaValidationError, match=field):
        trigger.normalize(json.dumps(doc).encode(), meta())


def test_a_retraction_needs_no_position() -> None:
    alert = one(example("retraction"))
    assert alert.localization.kind == "none"


def test_every_single_field_mutation_is_refused_or_a_valid_alert() -> None:
    base = example("track-single")
    outcomes = {"refused": 0, "alert": 0}
    for key in list(base):
        for value in (None, "x", 0, -1, 1e9, 0.5, True, {}, [], "2026-11-21T03:12:21Z"):
            doc = copy.deepcopy(base)
            doc[key] = value
            try:
                one(doc)
            except SchemaValidationError:
                outcomes["refused"] += 1
            else:
                outcomes["alert"] += 1
    assert outcomes["refused"] > 100 and outcomes["alert"] > 20


# -- normalization -------------------------------------------------------------------------

def test_single_track_trigger() -> None:
    alert = one(example("track-single"))
    assert alert.id == "ivo://test.mmbroker/detector#KM3NeT:ARCA-12041-883201-0"
    assert (alert.source, alert.messenger) == ("detector", "neutrino")
    assert (alert.facility, alert.instrument) == ("KM3NeT", "ARCA021")
    assert (alert.event_id, alert.revision, alert.alert_type) == (
        "KM3NeT:ARCA-12041-883201", 0, "initial")
    assert alert.role == "observation"
    assert alert.trigger_time == datetime(2026, 11, 21, 3, 12, 21, 805000, tzinfo=UTC)
    assert alert.trigger_time_error_s == 1e-6
    assert alert.received_time == RECEIVED
    loc = alert.localization
    assert (loc.kind, loc.ra_deg, loc.dec_deg) == ("point", 196.8, -22.9)
    assert (loc.error_radius_deg, loc.containment) == (1.1, 0.9)
    assert alert.energy is not None
    assert (alert.energy.best_gev, alert.energy.min_gev, alert.energy.max_gev) == (
        48000.0, 21000.0, 110000.0)
    assert alert.far_hz == 3.2e-8
    assert alert.signalness == 0.41
    assert alert.p_value is None
    assert alert.data_rights.level == "public"
    assert alert.provenance is not None
    assert alert.provenance.reco_method == "JGandalf"
    assert alert.extra == {
        "trigger_type": "track", "multiplicity": 1, "flavor": "mu",
        "neutrino_type": "unknown", "error_radius_50_deg": 0.45, "gal_l_deg": 307.66,
        "gal_b_deg": 39.83, "reco_quality": 52.3, "p_neutrino": 0.97, "ranking": "gold",
        "publisher": "KM3NeT real-time alert system",
        "contact": {"name": "KM3NeT Astro WG", "email": "online@km3net.invalid"},
        "sent_time": "2026-11-21T03:12:22.050000Z",
    }


def test_multiplet_update_with_embargo() -> None:
    alert = one(example("multiplet"))
    assert (alert.revision, alert.alert_type) == (1, "update")
    assert alert.id.endswith("#KM3NeT:ARCA-12055-multiplet-7-1")
    assert alert.extra["multiplicity"] == 2
    assert alert.signalness is None
    assert alert.data_rights.level == "embargoed"
    assert alert.data_rights.embargo_until == datetime(2026, 11, 23, 1, 16, 47, tzinfo=UTC)


def test_test_trigger_has_role_test_and_minimal_fields() -> None:
    alert = one(example("test"))
    assert alert.role == "test"
    assert alert.energy is not None and alert.energy.min_gev is None
    assert alert.trigger_time_error_s is None
    assert alert.provenance is not None and alert.provenance.pipeline == "orca_HE"


def test_retraction_supersedes_the_event() -> None:
    first = one(example("track-single"))
    retraction = one(example("retraction"))
    assert retraction.event_id == first.event_id
    assert (retraction.alert_type, retraction.revision) == ("retraction", 2)
    assert retraction.id != first.id


def test_minimal_trigger_has_no_energy_and_no_provenance() -> None:
    doc = {"event_id": "E1", "detector": "KM3NeT", "real": True, "time": "2026-01-01T00:00:00Z",
           "trigger_type": "other", "ra_deg": 0.0, "dec_deg": 90.0, "error_radius_90_deg": 0}
    alert = one(doc)
    assert alert.energy is None and alert.provenance is None and alert.extra == {
        "trigger_type": "other"}
    assert alert.instrument is None


def test_same_ivorn_whichever_transport() -> None:
    doc = example("track-single")
    by_http, by_kafka = one(doc, "detector"), one(doc, "detector.triggers")
    assert by_http.id == by_kafka.id
    assert by_http.source == by_kafka.source == "detector"


def test_a_list_of_triggers() -> None:
    docs = [example("track-single"), example("test")]
    result = trigger.normalize(json.dumps(docs).encode(), meta())
    assert [a.event_id for a in result.alerts] == ["KM3NeT:ARCA-12041-883201",
                                                   "KM3NeT:ORCA-TEST-0001"]


def test_non_object_is_a_schema_error() -> None:
    with pytest.raises(SchemaValidationError, match="not of type 'object'"):
        trigger.normalize(b'["just a string"]', meta())


def test_pickle_is_refused_unread() -> None:
    data = pickle.dumps(example("track-single"), protocol=4)  # made here, never loaded
    with pytest.raises(HostileInput, match="pickle"):
        trigger.normalize(data, meta())


# -- routing -------------------------------------------------------------------------------

def test_accepts() -> None:
    doc = example("track-single")
    snews_doc = {"detector_name": "Super-K", "neutrino_time_utc": "2026-01-01T00:00:00"}
    alert_doc = json.loads(alerts_schema.example_paths("alert")[0].read_text())
    assert trigger.accepts(Format.JSON, doc, meta())
    assert trigger.accepts(Format.JSON, {"whatever": 1}, meta("detector.triggers"))
    assert trigger.accepts(Format.JSON, doc, meta("file"))
    assert trigger.accepts(Format.JSON, {"$schema": trigger.SCHEMA_ID}, meta("file"))
    assert trigger.accepts(Format.JSON, [doc, example("test")], meta("file"))
    assert not trigger.accepts(Format.JSON, [], meta())
    assert not trigger.accepts(Format.XML, None, meta())
    assert not trigger.accepts(Format.JSON, snews_doc, meta("file"))
    assert not trigger.accepts(Format.JSON, alert_doc, meta("file"))
    assert not trigger.accepts(Format.JSON, [doc, snews_doc], meta("file"))


def test_handle_matches_normalize() -> None:
    data = json.dumps(example("multiplet")).encode()
    assert trigger.handle(data, json.loads(data), meta()) == trigger.normalize(data, meta())


def test_same_event_id_from_two_detectors_are_two_events() -> None:
    km3net = example("track-single")
    icecube = {**km3net, "detector": "IceCube", "revision": 1}
    a, b = (trigger.normalize(json.dumps(d).encode(), meta()).alerts[0] for d in (km3net, icecube))
    assert a.event_id != b.event_id and a.id != b.id


def test_source_is_the_detector_stream_whatever_the_transport() -> None:
    doc = json.dumps(example("track-single")).encode()
    over_http = trigger.normalize(doc, meta()).alerts[0]
    over_kafka = trigger.normalize(doc, meta("detector.triggers")).alerts[0]
    assert over_http.source == over_kafka.source == "detector"
    assert over_http.id == over_kafka.id
