"""SNEWS 2.0 normalizer: tier messages, heartbeats, retractions, coincidence alerts.

Runs on the copies in ``tests/data/snews`` (BSD, see its MANIFEST.tsv) and on
messages written here in the current (snews-data-formats 0.2) and older
(snews_pt) shapes; sweeps ``../shared/samples/snews`` when present.
"""

from __future__ import annotations

import ast
import json
import pickle
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import alerts_schema
from alerts_schema import Alert
from alerts_schema.errors import HostileInput, NormalizationError
from listeners import snews
from listeners.base import Heartbeat, MessageMeta, Normalized
from listeners.common import SECONDS_PER_YEAR
from listeners.detect import Format, sniff
from listeners.registry import DETECTOR_STATUS_HOOKS
from tests.conftest import SAMPLES

DATA = Path(__file__).resolve().parent / "data" / "snews"
SHARED = SAMPLES / "snews"
RECEIVED = datetime(2026, 11, 21, 3, 13, 0, tzinfo=UTC)


def meta(source: str = "snews.observation") -> MessageMeta:
    return MessageMeta(source=source, received_at=RECEIVED, authority="test.mmbroker")


def run(doc: Any, source: str = "snews.observation") -> Normalized:
    """Normalize ``doc`` from bytes, and check every alert against the contract."""
    result = snews.normalize(json.dumps(doc).encode(), meta(source))
    for alert in result.alerts:
        assert alerts_schema.validation_errors("alert", alert.to_document()) == []
    return result


def one(doc: Any, source: str = "snews.observation") -> Alert:
    result = run(doc, source)
    assert len(result.alerts) == 1 and not result.heartbeats
    return result.alerts[0]


def load(path: Path) -> Any:
    return json.loads(path.read_text("utf-8"))


# -- the snews_pt examples (legacy field names) ------------------------------------

def test_every_local_example_normalizes_to_valid_alerts() -> None:
    paths = sorted((DATA / "pt").glob("example_*.json"))
    assert len(paths) == 5
    for path in paths:
        assert run(load(path)), path.name


def test_legacy_coincidence_tier_message() -> None:
    alert = one(load(DATA / "pt" / "example_coincidence_tier_message.json"))
    assert alert.messenger == "neutrino"
    assert alert.facility == "XENONnT"
    assert alert.source == "snews.observation"
    assert alert.role == "test"  # "is_test": "True", a string
    assert (alert.alert_type, alert.revision) == ("initial", 0)
    assert alert.trigger_time == datetime(2022, 6, 14, 14, 50, 12, 345275, tzinfo=UTC)
    assert alert.p_value == 0.07
    assert alert.localization.kind == "none"
    assert alert.data_rights.level == "proprietary"
    # No uuid and no id: SNEWS's own id rule <detector>_<tier>_<machine time>.
    assert alert.event_id == "XENONnT_CoincidenceTier_2022-06-14T14:57:12.238275Z"
    assert alert.id == ("ivo://test.mmbroker/snews#"
                        "XENONnT_CoincidenceTier_2022-06-14T14:57:12.238275Z-0")
    assert alert.extra["snews_tier"] == "CoincidenceTier"
    assert alert.extra["machine_time"] == "2022-06-14T14:57:12.238275"


def test_heartbeat_gives_a_heartbeat_and_no_alert() -> None:
    result = run(load(DATA / "pt" / "example_heartbeat_message.json"))
    assert result.alerts == ()
    assert result.heartbeats == (Heartbeat(
        stream="snews", detector="DS-20K",
        time=datetime(2022, 6, 14, 14, 21, 57, 238275, tzinfo=UTC), status="OFF"),)
    assert result  # a heartbeat alone is a result, not "nothing"


def test_heartbeat_without_a_time_uses_the_receipt_time() -> None:
    result = run({"tier": "Heartbeat", "detector_name": "JUNO", "detector_status": "ON"})
    assert result.heartbeats[0].time == RECEIVED


def test_combined_message_gives_one_alert_per_tier_and_a_heartbeat() -> None:
    result = run(load(DATA / "pt" / "example_combined_message.json"))
    tiers = [a.extra["snews_tier"] for a in result.alerts]
    assert tiers == ["CoincidenceTier", "SignificanceTier", "TimingTier"]
    assert len({a.event_id for a in result.alerts}) == 3
    assert [h.status for h in result.heartbeats] == ["ON"]
    sig = result.alerts[1]
    assert sig.extra["p_values"] == [0.4, 0.5, 0.09, 0.04]
    assert sig.extra["t_bin_width_s"] == 0.6
    timing = result.alerts[2]
    assert timing.extra["timing_series_count"] == 3
    assert timing.trigger_time == datetime(2022, 6, 14, 14, 21, 50, 345275, tzinfo=UTC)


def test_scenarios_file_messages_normalize() -> None:
    for name, messages in load(DATA / "pt" / "scenarios.json").items():
        result = run(messages)
        assert len(result.alerts) == len(messages), name
        assert {a.role for a in result.alerts} == {"test"}


def test_the_same_message_twice_gives_the_same_alert() -> None:
    scenario = load(DATA / "pt" / "scenarios.json")["same message submitted twice"]
    first, second = run(scenario).alerts
    assert first == second  # same archive key, same content: stored once


# -- the coincidence system's alert -------------------------------------------------

EXPECTED_CS_ALERT = {
    "schema_version": "1.0",
    "id": "ivo://test.mmbroker/snews#SNEWS-2012-06-09T15:31:07-0",
    "source": "snews.alert",
    "source_ivorn": None,
    "messenger": "neutrino",
    "facility": "SNEWS",
    "instrument": None,
    "event_id": "SNEWS-2012-06-09T15:31:07",
    "revision": 0,
    "alert_type": "initial",
    "role": "test",
    "trigger_time": "2012-06-09T15:31:07.465011Z",
    "trigger_time_error_s": None,
    "received_time": "2026-11-21T03:13:00Z",
    "localization": {"kind": "none"},
    "energy": None,
    "far_hz": None,
    "p_value": None,
    "signalness": None,
    "data_rights": {"level": "public", "embargo_until": None},
    "provenance": {"pipeline": "SNEWS Coincidence System", "pipeline_version": None,
                   "reco_method": None, "cuts": None},
    "raw_sha256": None,
    "raw_ref": None,
    "extra": {
        "detector_names": ["KamLAND", "XENONnT"],
        "neutrino_times": ["2012-06-09T15:31:08.891011000", "2012-06-09T15:31:07.465011000"],
        "p_values": [0.98, 0.98],
        "p_values_average": 0.98,
        "sub_list_number": 0,
        "server_tag": "XXXXXXXX",
        "snews_id": "SNEWS_Coincidence_ALERT XXXXXXXXXXX",
        "snews_alert_type": "TEST COINC_MSG",
        "sent_time": "XXXXXXX",
        "false_alarm_prob": "N/A",
    },
}


def test_cs_expected_test_alert_normalizes_to_the_expected_alert() -> None:
    alert = one(load(DATA / "snews_cs_alert_expected_test.json"), source="snews.alert")
    assert alert.to_document() == EXPECTED_CS_ALERT


def cs_alert(**changes: Any) -> dict[str, Any]:
    doc = {
        "_id": "SNEWS_Coincidence_ALERT 2030-01-01T12:34:50.000000",
        "alert_type": "COINC_MSG",
        "server_tag": "snews-cs-1",
        "False Alarm Prob": "0.00%",
        "detector_names": ["XENONnT", "DS-20K"],
        "sent_time": "2030-01-01T12:34:50.000000",
        "p_values": [0.98, 0.5],
        "neutrino_times": ["2030-01-01T12:34:45.678999", "2030-01-01T12:34:47.678999"],
        "p_values average": 0.74,
        "sub list number": 0,
    }
    doc.update(changes)
    return doc


def test_first_cs_alert_is_initial_revision_0_and_an_observation() -> None:
    alert = one(cs_alert(), source="snews.alert")
    assert (alert.event_id, alert.revision, alert.alert_type) == (
        "SNEWS-2030-01-01T12:34:45", 0, "initial")
    assert alert.role == "observation"
    assert alert.data_rights.level == "public"
    assert alert.p_value == 0.0


def test_later_cs_alerts_supersede_by_sent_time() -> None:
    third = one(cs_alert(**{
        "_id": "SNEWS_Coincidence_ALERT-UPDATE 2030-01-01T12:35:00.000000",
        "sent_time": "2030-01-01T12:35:00.000000",
        "detector_names": ["XENONnT", "DS-20K", "DUNE"],
        "neutrino_times": ["2030-01-01T12:34:45.678999", "2030-01-01T12:34:47.678999",
                           "2030-01-01T12:34:55.678999"],
        "p_values": [0.98, 0.5, 0.2]}), source="snews.alert")
    assert third.event_id == "SNEWS-2030-01-01T12:34:45"
    assert third.alert_type == "update"
    assert third.revision == 143  # 14.321001 s after the first neutrino, in 0.1 s
    update = one(cs_alert(alert_type="UPDATE", sent_time="2030-01-01T12:36:00"),
                 source="snews.alert")
    assert (update.alert_type, update.revision) == ("update", 743)
    retracted = one(cs_alert(alert_type="RETRACTION", sent_time="2030-01-01T12:40:00",
                             detector_names=["DS-20K"],
                             neutrino_times=["2030-01-01T12:34:45.678999"], p_values=[0.5]),
                    source="snews.alert")
    assert (retracted.alert_type, retracted.revision) == ("retraction", 3143)
    assert third.revision < update.revision < retracted.revision


def test_cs_revision_without_a_sent_time_counts_detectors() -> None:
    alert = one(cs_alert(sent_time=None, _id="SNEWS_Coincidence_ALERT-UPDATE ?",
                         detector_names=["A", "B", "C", "D"],
                         neutrino_times=["2030-01-01T12:34:45"] * 4, p_values=[0.1] * 4),
                source="snews.alert")
    assert (alert.alert_type, alert.revision) == ("update", 2)


@pytest.mark.parametrize(("figure", "p_value", "far_hz"), [
    ("13.96%", 0.1396, None),
    ("N/A", None, None),
    (0.01, 0.01, None),
    ("Would happen every 1.00e+02 year", None, 0.01 / SECONDS_PER_YEAR),
    ("(couldn't compute)", None, None),
])
def test_cs_false_alarm_forms(figure: Any, p_value: float | None,
                              far_hz: float | None) -> None:
    alert = one(cs_alert(**{"False Alarm Prob": figure}), source="snews.alert")
    assert alert.p_value == pytest.approx(p_value)
    assert alert.far_hz == pytest.approx(far_hz)
    assert alert.extra["false_alarm_prob"] == figure


def test_cs_alert_with_mismatched_lists_is_refused() -> None:
    with pytest.raises(NormalizationError, match="one time per detector"):
        run(cs_alert(neutrino_times=["2030-01-01T12:34:45"]))


# -- current message shapes (snews-data-formats 0.2) --------------------------------

def current(tier: str, **fields: Any) -> dict[str, Any]:
    return {"id": f"Super-K_{tier}_2026-11-21T03:12:41.000000000",
            "uuid": "0d6a1a4e-1b37-4c43-9d1e-5b8f5f6c3a01", "tier": tier,
            "sent_time_utc": "2026-11-21T03:12:42.000000000",
            "machine_time_utc": "2026-11-21T03:12:41.000000000",
            "is_pre_sn": False, "is_test": False, "is_firedrill": False, "meta": None,
            "schema_version": "0.2", "detector_name": "Super-K", **fields}


def test_current_coincidence_tier_uses_the_uuid_as_event_id() -> None:
    alert = one(current("CoincidenceTier", p_val=0.001,
                        neutrino_time_utc="2026-11-21T03:12:40.123456789"))
    assert alert.event_id == "0d6a1a4e-1b37-4c43-9d1e-5b8f5f6c3a01"
    assert alert.facility == "Super-K"
    assert alert.role == "observation"
    assert alert.trigger_time == datetime(2026, 11, 21, 3, 12, 40, 123457, tzinfo=UTC)
    assert alert.extra["snews_id"] == "Super-K_CoincidenceTier_2026-11-21T03:12:41.000000000"


def test_retraction_by_uuid_supersedes_the_retracted_message() -> None:
    observed = one(current("CoincidenceTier", neutrino_time_utc="2026-11-21T03:12:40"))
    retraction = one(current("Retraction", uuid="a-new-uuid",
                             retract_message_uuid=observed.event_id,
                             retraction_reason="calibration source"))
    assert retraction.event_id == observed.event_id
    assert (retraction.alert_type, retraction.revision) == ("retraction", 1)
    assert retraction.id != observed.id
    assert retraction.extra["retraction_reason"] == "calibration source"
    assert retraction.trigger_time == datetime(2026, 11, 21, 3, 12, 41, tzinfo=UTC)


def test_legacy_retraction_of_the_latest_messages() -> None:
    alert = one({"_id": "19_Retraction_2022-06-14T14:30:00", "detector_name": "XENONnT",
                 "machine_time": "2022-06-14T14:30:00", "which_tier": "CoincidenceTier",
                 "N_retract_latest": 2, "retraction_reason": "oops",
                 "meta": {"is_test": True}})
    assert alert.alert_type == "retraction"
    assert alert.role == "test"
    assert alert.event_id == "XENONnT_Retraction_2022-06-14T14:30:00Z"
    assert alert.extra["retracts"] == {"detector": "XENONnT", "latest_n": 2,
                                       "tier": "CoincidenceTier"}


def test_significance_tier_without_neutrino_time_uses_machine_time() -> None:
    alert = one(current("SignificanceTier", p_values=[0.2, 0.01], t_bin_width_sec=0.5))
    assert alert.trigger_time == datetime(2026, 11, 21, 3, 12, 41, tzinfo=UTC)
    assert alert.p_value is None  # per-bin p-values are not one p-value
    assert alert.extra["p_values"] == [0.2, 0.01]


def test_timing_tier_without_neutrino_time_uses_the_earliest_arrival() -> None:
    series = ["2026-11-21T03:12:40.500000000", "2026-11-21T03:12:40.100000000",
              "2026-11-21T03:12:41.000000000"]
    alert = one(current("TimingTier", timing_series=series))
    assert alert.trigger_time == datetime(2026, 11, 21, 3, 12, 40, 100000, tzinfo=UTC)
    assert alert.extra["timing_series_count"] == 3
    with pytest.raises(NormalizationError, match="relative times"):
        run(current("TimingTier", timing_series=[0, 1500, 30000]))


@pytest.mark.parametrize(("token", "tier"), [("TimeTier", "TimingTier"),
                                             ("SigTier", "SignificanceTier"),
                                             ("CoincidenceTier", "CoincidenceTier")])
def test_legacy_id_names_the_tier(token: str, tier: str) -> None:
    doc = {"_id": f"19_PRE-SN_{token}_2022-06-14T14:21:57.238275", "detector_name": "XENONnT",
           "machine_time": "2022-06-14T14:21:57.238275",
           "neutrino_time": "2022-06-14T14:21:50.345275", "timing_series": [],
           "p_values": [0.1], "t_bin_width": 0.6, "p_val": 0.3}
    alert = one(doc)
    assert alert.extra["snews_tier"] == tier
    assert alert.event_id == doc["_id"]


def test_legacy_heartbeat_id() -> None:
    result = run({"_id": "19_HeartBeat_2022-06-14T14:21:57", "detector_name": "XENONnT",
                  "machine_time": "2022-06-14T14:21:57", "detector_status": "ON"})
    assert result.alerts == () and result.heartbeats[0].status == "ON"


@pytest.mark.parametrize(("flags", "role"), [
    ({"is_test": "False"}, "observation"),
    ({"is_firedrill": True}, "drill"),
    ({"meta": {"is_firedrill": "true"}}, "drill"),
    ({"meta": {"is_test": True}, "is_firedrill": True}, "test"),
    ({"is_test": None, "meta": {"is_test": 1}}, "test"),
])
def test_roles(flags: dict[str, Any], role: str) -> None:
    doc = {"detector_name": "JUNO", "neutrino_time_utc": "2030-01-01T12:30:55.678999",
           "p_val": 0.5, **flags}
    assert one(doc).role == role


@pytest.mark.parametrize("text", [
    # snews-data-formats data/mock/time_formats.json
    "2023-06-12 18:30", "2023-06-12 18:30:10", "2023-06-12 18:30:10.123",
    "2023-06-12 18:30:10.123456", "2023-06-12 18:30:10.123456789", "2023-06-12T18:30:10",
    "2023-06-12T18:30:10.123", "2023-06-12T18:30:10.123456", "2023-06-12T18:30:10.123456789",
    # snews_pt's dashboard writes a colon before the fraction
    "2023-06-12T18:30:10:123456",
])
def test_snews_time_formats(text: str) -> None:
    alert = one({"detector_name": "JUNO", "neutrino_time": text})
    assert alert.trigger_time.date().isoformat() == "2023-06-12"
    assert alert.trigger_time.tzinfo is not None


@pytest.mark.parametrize(("doc", "reason"), [
    ({"detector_name": "JUNO"}, "names no tier"),
    ({"tier": "Bogus", "detector_name": "JUNO"}, "not a SNEWS tier"),
    ({"tier": "CoincidenceTier", "neutrino_time_utc": "2030-01-01T00:00:00"}, "detector_name"),
    ({"tier": "CoincidenceTier", "detector_name": "JUNO"}, "without neutrino_time_utc"),
    ({"tier": "CoincidenceTier", "detector_name": "JUNO", "p_val": 1.5,
      "neutrino_time_utc": "2030-01-01T00:00:00"}, "not a probability"),
    ({"detector_name": "JUNO", "neutrino_time": "yesterday"}, "ISO 8601"),
    ({"detector_name": "JUNO", "neutrino_time": "2030-01-01T00:00:00", "is_test": "maybe"},
     "is_test"),
    ({"_id": "0_hard-reset_", "detector_name": "JUNO"}, "carries no observation"),
    ([1, 2], "must be a JSON object"),
])
def test_unusable_messages_are_refused_with_a_reason(doc: Any, reason: str) -> None:
    with pytest.raises(NormalizationError, match=reason):
        run(doc)


# -- transport shapes, pickles, routing ---------------------------------------------

def test_old_hop_envelope_is_unwrapped() -> None:
    inner = load(DATA / "pt" / "example_coincidence_tier_message.json")
    wrapped = {"format": "blob", "content": json.dumps(inner)}
    assert run(wrapped).alerts == run(inner).alerts
    with pytest.raises(NormalizationError, match="not JSON"):
        run({"format": "blob", "content": "\x80\x04not json"})


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_a_pickled_snews_message_is_refused_unread(protocol: int) -> None:
    message = load(DATA / "pt" / "example_coincidence_tier_message.json")
    data = pickle.dumps(message, protocol=protocol)  # made here, never loaded
    with pytest.raises(HostileInput, match="pickle"):
        sniff(data)
    with pytest.raises(HostileInput, match="pickle"):
        snews.normalize(data, meta())


def test_the_module_never_unpickles() -> None:
    tree = ast.parse(Path(snews.__file__).read_text("utf-8"))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import | ast.ImportFrom)
                for alias in (node.names if isinstance(node, ast.Import)
                              else [ast.alias(node.module or "")])}
    assert not imported & {"pickle", "cPickle", "dill", "marshal", "shelve", "joblib"}


def test_accepts() -> None:
    observation = load(DATA / "pt" / "example_coincidence_tier_message.json")
    cs = load(DATA / "snews_cs_alert_expected_test.json")
    alert_doc = load(alerts_schema.example_paths("alert")[0])
    trigger_doc = load(alerts_schema.example_paths("trigger")[0])
    file_meta = meta("file")
    assert snews.accepts(Format.JSON, observation, meta())
    assert snews.accepts(Format.JSON, {"anything": 1}, meta("snews.alert"))  # refused later
    assert snews.accepts(Format.JSON, observation, file_meta)
    assert snews.accepts(Format.JSON, cs, file_meta)
    assert snews.accepts(Format.JSON, [observation, cs], file_meta)
    assert not snews.accepts(Format.JSON, [], meta())
    assert not snews.accepts(Format.XML, None, meta())
    assert not snews.accepts(Format.JSON, alert_doc, file_meta)
    assert not snews.accepts(Format.JSON, trigger_doc, file_meta)
    assert not snews.accepts(Format.JSON, {"detector_name": "X"}, file_meta)


def test_handle_matches_normalize_and_is_pure() -> None:
    data = (DATA / "pt" / "example_combined_message.json").read_bytes()
    decoded = json.loads(data)
    assert snews.handle(data, decoded, meta()) == snews.normalize(data, meta())
    assert snews.normalize(data, meta()) == snews.normalize(data, meta())
    later = MessageMeta("snews.observation", RECEIVED + timedelta(hours=1), "test.mmbroker")
    assert ([a.id for a in snews.normalize(data, later).alerts]
            == [a.id for a in snews.normalize(data, meta()).alerts])


# -- the shared samples ---------------------------------------------------------------

def _shared(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared SNEWS samples not present at {path}")
    return path


def test_shared_examples_and_cs_alert() -> None:
    for path in sorted(_shared("pt").glob("example_*.json")):
        assert run(load(path)), path.name
    alert = one(load(_shared("snews_cs_alert_expected_test.json")), source="snews.alert")
    assert alert.to_document() == EXPECTED_CS_ALERT


def test_shared_scenarios() -> None:
    count = 0
    for messages in load(_shared("pt", "scenarios.json")).values():
        count += len(run(messages).alerts)
    for scenario in load(_shared("data-formats", "coincidence_scenarios.json")):
        result = run(scenario["events"])
        assert len(result.alerts) == len(scenario["events"])
        count += len(result.alerts)
    assert count > 40


def test_shared_time_formats() -> None:
    for text in load(_shared("data-formats", "time_formats.json")):
        assert one({"detector_name": "JUNO", "neutrino_time": text}).trigger_time.year == 2023


@pytest.mark.parametrize(("changes", "source", "role"), [
    ({}, "snews.alert", "observation"),
    ({"is_firedrill": True}, "snews.alert", "drill"),
    ({"meta": {"is_firedrill": True}}, "snews.alert", "drill"),
    ({}, "snews.alert-firedrill", "drill"),
    ({"meta": {"is_test": True}}, "snews.alert-firedrill", "test"),
    ({}, "snews.alert-test", "test"),
])
def test_coincidence_alert_roles(changes: dict[str, Any], source: str, role: str) -> None:
    """Drills and tests are never observations, whether the flag or the topic says so."""
    assert one(cs_alert(**changes), source=source).role == role


def test_detector_status_from_stream_health_through_the_registry_hook() -> None:
    rows = [{"stream": "snews.heartbeat", "detector": "Super-K", "heartbeat_status": "ON"},
            {"stream": "snews.heartbeat", "detector": "IceCube", "heartbeat_status": "off"},
            {"stream": "snews.heartbeat", "detector": "JUNO", "heartbeat_status": None},
            {"stream": "snews.heartbeat", "detector": None, "heartbeat_status": "ON"},
            {"stream": "gcn.notices.swift", "detector": "BAT", "heartbeat_status": "ON"}]
    assert snews.detector_status(rows) == {"Super-K": True, "IceCube": False, "JUNO": False}
    (hook,) = [h for h in DETECTOR_STATUS_HOOKS if h.status is snews.detector_status]
    assert hook.applies is snews.feeds_detector_status
