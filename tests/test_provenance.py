"""The W3C PROV documents of published VOEvents (:mod:`broker.publish.provenance`)."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import textwrap
import warnings
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from prov.constants import PROV, PROV_ROLE, PROV_TYPE
from prov.model import (
    ProvActivity,
    ProvAgent,
    ProvAssociation,
    ProvDerivation,
    ProvDocument,
    ProvEntity,
    ProvGeneration,
    ProvRecord,
    ProvUsage,
)
from prov.serializers.provjson import encode_json_document

from broker.publish import provenance
from broker.publish.provenance import IVO, MMBROKER, InputAlert

FORMATS = ("json", "xml", "provn")
T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
CONFIG_HASH = "c0" * 32
GRB_RAW = "a1" * 32
NU_RAW = "b2" * 32
COINCIDENCE = "ivo://mmbroker.test/coincidence#nu-grb:2024-05-01:0001"


def grb_alert(**overrides: Any) -> InputAlert:
    """A GCN notice that came over Kafka."""
    fields: dict[str, Any] = dict(
        ivorn="ivo://mmbroker.test/gcn.classic.voevent.SWIFT_BAT_GRB_POS_ACK#1234567-0",
        source="gcn.classic.voevent.SWIFT_BAT_GRB_POS_ACK",
        transport={"kafka": {"bootstrap": "kafka.gcn.nasa.gov:9092",
                             "topic": "gcn.classic.voevent.SWIFT_BAT_GRB_POS_ACK",
                             "partition": 3, "offset": 98765,
                             "timestamp_ms": 1714564790123}},
        raw_sha256=GRB_RAW, received_time=T0 - timedelta(seconds=10), revision=0,
        pipeline="BAT on-board", pipeline_version="2.1", reco_method="coded-mask imaging",
        cuts="image SNR > 6.5",
        source_ivorn="ivo://nasa.gsfc.gcn/SWIFT#BAT_GRB_Pos_1234567-259",
    )
    fields.update(overrides)
    return InputAlert(**fields)


def nu_alert(**overrides: Any) -> InputAlert:
    """A detector trigger that was POSTed over HTTP."""
    fields: dict[str, Any] = dict(
        ivorn="ivo://mmbroker.test/detector.triggers#NT-240501-7:1",
        source="detector.triggers",
        transport={"http": {"client": "10.1.2.3", "token_id": "tok-7",
                            "token_name": "online-filter"}},
        raw_sha256=NU_RAW, received_time=T0 - timedelta(seconds=4), revision=1,
        pipeline="online-filter", pipeline_version="5.3.0", reco_method="SplineMPE",
        cuts="BDT > 0.8; nchannel >= 20",
    )
    fields.update(overrides)
    return InputAlert(**fields)


def coincidence_doc(inputs: list[InputAlert] | None = None, **overrides: Any) -> ProvDocument:
    kwargs: dict[str, Any] = dict(
        activity_started=T0, activity_ended=T0 + timedelta(milliseconds=7),
        engine_version="1.0.0", config_hash=CONFIG_HASH,
        parameters={"pairing": "nu-grb", "time_window_s": [-500, 500], "min_overlap": 0.1},
        broker_id="mmbroker-test-1", broker_version="0.1.0",
        voevent_sha256="d3" * 32,
    )
    kwargs.update(overrides)
    subject = kwargs.pop("subject", COINCIDENCE)
    return provenance.build(subject, "coincidence",
                            inputs if inputs is not None else [grb_alert(), nu_alert()],
                            **kwargs)


def trigger_doc(alert: InputAlert, subject: str, **overrides: Any) -> ProvDocument:
    kwargs: dict[str, Any] = dict(
        activity_started=T0, activity_ended=T0 + timedelta(milliseconds=2),
        engine_version="1.0.0", config_hash=None, parameters={"role": "observation"},
        broker_id="mmbroker-test-1", broker_version="0.1.0",
    )
    kwargs.update(overrides)
    return provenance.build(subject, "trigger", [alert], **kwargs)


def records(doc: ProvDocument, cls: type[ProvRecord]) -> list[Any]:
    return [r for r in doc.get_records(cls)]


def entity(doc: ProvDocument, ivorn: str) -> ProvEntity:
    (found,) = [e for e in records(doc, ProvEntity)
                if e.get_attribute(MMBROKER["ivorn"]) == {ivorn}]
    return found


def attr(record: ProvRecord, term: str) -> Any:
    """The one value of ``mmbroker:<term>``, a typed Literal unwrapped."""
    (value,) = record.get_attribute(MMBROKER[term])
    return getattr(value, "value", value)


def record_keys(doc: ProvDocument) -> list[tuple[str, str, list[str]]]:
    """Each record's kind, identifier and attributes, independent of their order."""
    return sorted((str(r.get_type()), str(r.identifier),
                   sorted(f"{name}={value!r}" for name, value in r.attributes))
                  for r in doc.get_records())


def the_activity(doc: ProvDocument) -> ProvActivity:
    (activity,) = records(doc, ProvActivity)
    return activity


# -- what the coincidence document says ----------------------------------------------------

def test_coincidence_names_both_inputs_with_raw_hashes_and_config_hash() -> None:
    doc = coincidence_doc()
    grb, nu = entity(doc, grb_alert().ivorn), entity(doc, nu_alert().ivorn)
    assert attr(grb, "rawSha256") == GRB_RAW
    assert attr(nu, "rawSha256") == NU_RAW
    assert attr(grb, "sourceStream") == "gcn.classic.voevent.SWIFT_BAT_GRB_POS_ACK"
    assert attr(grb, "sourceIvorn") == "ivo://nasa.gsfc.gcn/SWIFT#BAT_GRB_Pos_1234567-259"
    assert attr(nu, "revision") == 1
    assert attr(grb, "receivedTime") == T0 - timedelta(seconds=10)
    # The facility's own provenance (the CTA use cases).
    assert (attr(nu, "pipeline"), attr(nu, "pipelineVersion"), attr(nu, "recoMethod"),
            attr(nu, "cuts")) == ("online-filter", "5.3.0", "SplineMPE",
                                  "BDT > 0.8; nchannel >= 20")

    activity = the_activity(doc)
    assert activity.get_attribute(PROV_TYPE) == {MMBROKER["crossmatch"]}
    assert attr(activity, "configHash") == CONFIG_HASH
    assert attr(activity, "engineVersion") == "1.0.0"
    assert json.loads(attr(activity, "parameters")) == {
        "pairing": "nu-grb", "time_window_s": [-500, 500], "min_overlap": 0.1}
    assert activity.get_startTime() == T0
    assert activity.get_endTime() == T0 + timedelta(milliseconds=7)

    output = entity(doc, COINCIDENCE)
    assert output.identifier == IVO["mmbroker.test/coincidence#nu-grb:2024-05-01:0001"]
    assert attr(output, "sha256") == "d3" * 32
    (generation,) = records(doc, ProvGeneration)
    assert generation.args[:2] == (output.identifier, activity.identifier)

    input_ids = {grb.identifier, nu.identifier}
    used = {u.args[1] for u in records(doc, ProvUsage)
            if u.get_attribute(PROV_ROLE) == {MMBROKER["input"]}}
    assert used == input_ids
    derived = {d.args[1] for d in records(doc, ProvDerivation) if d.args[0] == output.identifier}
    assert derived == input_ids

    # The configuration is an entity of its own, used in the role of configuration.
    (config,) = [e for e in records(doc, ProvEntity)
                 if e.get_attribute(PROV_TYPE) == {MMBROKER["Configuration"]}]
    assert attr(config, "configHash") == CONFIG_HASH
    assert any(u.args[:2] == (activity.identifier, config.identifier)
               for u in records(doc, ProvUsage))


def test_broker_and_software_are_associated_with_the_activity() -> None:
    doc = coincidence_doc()
    (agent,) = records(doc, ProvAgent)
    assert PROV["SoftwareAgent"] in agent.get_attribute(PROV_TYPE)
    assert attr(agent, "brokerId") == "mmbroker-test-1"
    assert attr(agent, "softwareVersion") == "0.1.0"
    (association,) = records(doc, ProvAssociation)
    activity_id, agent_id, plan_id = association.args
    assert (activity_id, agent_id) == (the_activity(doc).identifier, agent.identifier)
    assert association.get_attribute(PROV_ROLE) == {MMBROKER["publisher"]}
    (software,) = [e for e in records(doc, ProvEntity) if e.identifier == plan_id]
    assert PROV["Plan"] in software.get_attribute(PROV_TYPE)
    assert attr(software, "softwareVersion") == "0.1.0"


@pytest.mark.parametrize("fmt", FORMATS)
def test_serializations_parse_back_to_the_same_records(fmt: provenance.Format) -> None:
    doc = coincidence_doc()
    data = provenance.serialize(doc, fmt)
    assert isinstance(data, bytes)
    # prov itself reads what was written, with nothing but the format named.
    back = ProvDocument.deserialize(content=data, format=fmt)
    assert back == doc
    assert record_keys(back) == record_keys(doc)
    assert provenance.parse(data, fmt) == doc
    assert provenance.queryable_fields(back) == provenance.queryable_fields(doc)
    # Both hashes and the config hash are in the bytes that are served.
    text = data.decode()
    for needle in (GRB_RAW, NU_RAW, CONFIG_HASH):
        assert needle in text


def test_serializations_look_like_their_media_types() -> None:
    doc = coincidence_doc()
    assert provenance.MEDIA_TYPES == {"json": "application/json", "xml": "application/xml",
                                      "provn": "text/provenance-notation"}
    assert "prefix" in json.loads(provenance.serialize(doc, "json"))
    assert provenance.serialize(doc, "xml").startswith(b"<?xml")
    provn = provenance.serialize(doc, "provn").decode()
    assert provn.startswith("document") and provn.rstrip().endswith("endDocument")


def test_json_is_byte_for_byte_what_prov_itself_writes() -> None:
    """serialize() writes PROV-JSON with the C encoder; prov's own writer must agree."""
    for doc in (coincidence_doc(), trigger_doc(grb_alert(), "ivo://mmbroker.test/trigger#T-1")):
        assert provenance.serialize(doc, "json") == doc.serialize(format="json").encode()


def _without_anonymous_ids(obj: dict[str, Any]) -> dict[str, Any]:
    """A PROV-JSON object with each type's ``_:idN`` relations as a sorted list: prov
    numbers them in the order it holds records, which reading changes."""
    out: dict[str, Any] = {}
    for kind, records in obj.items():
        if kind != "prefix" and all(key.startswith("_:") for key in records):
            out[kind] = sorted(json.dumps(r, sort_keys=True) for r in records.values())
        else:
            out[kind] = records
    return out


BUILD_VARIANTS: dict[str, tuple[str, str, list[InputAlert], dict[str, Any]]] = {
    "coincidence, configuration, Kafka and HTTP inputs": (
        COINCIDENCE, "coincidence", [grb_alert(), nu_alert()], {"config_hash": CONFIG_HASH}),
    "trigger revising another, its own IVORN as input and output": (
        nu_alert().ivorn, "trigger", [nu_alert()],
        {"supersedes": "ivo://mmbroker.test/detector.triggers#NT-240501-7:0"}),
    "fetched sky maps, a hashed IVORN, odd transports and times": (
        "ivo://mmbroker.test/odd#a b<c>", "coincidence",
        [grb_alert(skymap=("e5" * 32, "https://gracedb.example/S1/bayestar.fits.gz", T0),
                   transport={"kafka": {"topic": "t", "partition": 0,
                                        "offset": 2**40, "timestamp_ms": 2**64}}),
         nu_alert(ivorn="ivo://mmbroker.test/x#\u00e9t\u00e9", received_time=None,
                  skymap=("f6" * 32, "https://example.org/m.fits", None),
                  transport={"vtp": {"peer": "1.2.3.4:8099"}}),
         nu_alert(ivorn="ivo://mmbroker.test/y#1", transport={"a": 1, "b": [2]},
                  raw_sha256=None, source_ivorn=None, pipeline=None, cuts=None),
         nu_alert(ivorn="ivo://mmbroker.test/y#2", transport={"file": "/data/x.xml"}),
         nu_alert(ivorn="ivo://mmbroker.test/y#3", transport={"weird": ["list"]}),
         nu_alert(ivorn="ivo://mmbroker.test/y#4", transport={"weird": 7})],
        {"config_hash": None, "activity_started": T0.astimezone(timezone(timedelta(hours=-5))),
         "broker_version": "0.1.0+dev.", "broker_id": "a broker: with spaces",
         "parameters": {"when": T0, "set": {3, 1}, "pair": (1, "a"), "x": {"y": [1.5, None]}},
         "voevent_sha256": None}),
}


@pytest.mark.parametrize("variant", BUILD_VARIANTS)
def test_build_json_writes_what_prov_writes_for_its_document(variant: str) -> None:
    """build_json writes PROV-JSON without prov's object model; prov, reading it and
    writing the document again, gives the same object (its relation ids aside), so
    every value has the type prov gives it and every record the form it writes."""
    subject, kind, inputs, overrides = BUILD_VARIANTS[variant]
    kwargs: dict[str, Any] = dict(
        activity_started=T0, activity_ended=T0 + timedelta(milliseconds=7),
        engine_version="1.0.0", config_hash=None, parameters={"pairing": "nu-grb"},
        broker_id="mmbroker-test-1", broker_version="0.1.0", voevent_sha256="d3" * 32)
    kwargs.update(overrides)
    written = json.loads(json.dumps(provenance.build_json(subject, kind, inputs, **kwargs)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # prov warns on what it will refuse one day
        again = encode_json_document(provenance.parse(json.dumps(written), "json"))
    assert _without_anonymous_ids(written) == _without_anonymous_ids(
        json.loads(json.dumps(again)))
    assert written == json.loads(json.dumps(provenance.build_json(subject, kind, inputs,
                                                                  **kwargs)))


# -- trigger conversions and their transports ------------------------------------------------

def test_trigger_conversion_from_kafka_shows_topic_partition_offset() -> None:
    alert = grb_alert()
    doc = trigger_doc(alert, "ivo://mmbroker.test/trigger#T-1")
    activity = the_activity(doc)
    assert activity.get_attribute(PROV_TYPE) == {MMBROKER["trigger-conversion"]}
    assert activity.get_attribute(MMBROKER["configHash"]) == set()
    assert [r for r in records(doc, ProvEntity)
            if MMBROKER["Configuration"] in r.get_attribute(PROV_TYPE)] == []
    for fmt in FORMATS:
        back = provenance.parse(provenance.serialize(doc, fmt), fmt)
        inp = entity(back, alert.ivorn)
        assert attr(inp, "transportKind") == "kafka"
        assert attr(inp, "kafkaTopic") == "gcn.classic.voevent.SWIFT_BAT_GRB_POS_ACK"
        assert attr(inp, "kafkaPartition") == 3
        assert attr(inp, "kafkaOffset") == 98765
        assert attr(inp, "kafkaBootstrap") == "kafka.gcn.nasa.gov:9092"
        assert int(attr(inp, "kafkaTimestampMs")) == 1714564790123
        assert attr(inp, "rawSha256") == GRB_RAW


def test_trigger_posted_over_http_shows_the_client() -> None:
    alert = nu_alert()
    doc = trigger_doc(alert, "ivo://mmbroker.test/trigger#NT-240501-7")
    for fmt in FORMATS:
        inp = entity(provenance.parse(provenance.serialize(doc, fmt), fmt), alert.ivorn)
        assert attr(inp, "transportKind") == "http"
        assert attr(inp, "httpClient") == "10.1.2.3"
        assert attr(inp, "httpTokenId") == "tok-7"
        assert inp.get_attribute(MMBROKER["kafkaTopic"]) == set()


@pytest.mark.parametrize(("transport", "expected"), [
    ({"vtp": {"peer": "ivo://peer.example/comet"}}, {"vtpPeer": "ivo://peer.example/comet"}),
    ({"file": "/data/incoming/x.xml"}, {"filePath": "/data/incoming/x.xml"}),
    ({"demo": True}, {"transportKind": "demo"}),
    ({"carrier-pigeon": {"bird": "Gustav"}},
     {"transportKind": "carrier-pigeon", "transportDetail": '{"bird":"Gustav"}'}),
])
def test_other_transports_are_named(transport: dict[str, Any], expected: dict[str, str]) -> None:
    alert = nu_alert(transport=transport)
    doc = trigger_doc(alert, "ivo://mmbroker.test/trigger#T-2")
    inp = entity(provenance.parse(provenance.serialize(doc, "xml"), "xml"), alert.ivorn)
    for term, value in expected.items():
        assert attr(inp, term) == value


def test_an_input_without_transport_or_receipt_is_still_named() -> None:
    alert = nu_alert(transport=None, received_time=None, raw_sha256=None, pipeline=None,
                     pipeline_version=None, reco_method=None, cuts=None)
    doc = trigger_doc(alert, "ivo://mmbroker.test/trigger#T-3")
    inp = entity(doc, alert.ivorn)
    assert attr(inp, "sourceStream") == "detector.triggers"
    assert inp.get_attribute(MMBROKER["rawSha256"]) == set()
    for fmt in FORMATS:
        assert provenance.parse(provenance.serialize(doc, fmt), fmt) == doc


# -- revisions ---------------------------------------------------------------------------------

def revision_of(doc: ProvDocument) -> Any:
    """The identifier the document's subject is a revision of, or None."""
    revisions = [d for d in records(doc, ProvDerivation)
                 if PROV["Revision"] in d.get_attribute(PROV_TYPE)]
    assert len(revisions) <= 1
    return revisions[0].args[1] if revisions else None


def test_revision_chain_across_documents() -> None:
    ivorns = [f"ivo://mmbroker.test/coincidence#nu-grb-0001-r{n}" for n in range(3)]
    docs = [coincidence_doc(subject=ivorns[0])]
    for previous, current in itertools.pairwise(ivorns):
        docs.append(coincidence_doc(subject=current, supersedes=previous))
    parsed = [provenance.parse(provenance.serialize(d, fmt), fmt)
              for d, fmt in zip(docs, FORMATS, strict=True)]
    assert revision_of(parsed[0]) is None
    # Walk the chain back from the newest, one document per hop.
    by_subject = {entity(d, iv).identifier: d for d, iv in zip(parsed, ivorns, strict=True)}
    chain, current_id = [], entity(parsed[2], ivorns[2]).identifier
    while current_id is not None:
        chain.append(current_id)
        current_id = revision_of(by_subject[current_id])
    assert chain == [IVO[iv.removeprefix("ivo://")] for iv in reversed(ivorns)]
    # The superseded VOEvent is named as a VOEvent, and reported as superseded.
    assert MMBROKER["VOEvent"] in entity(parsed[2], ivorns[1]).get_attribute(PROV_TYPE)
    assert provenance.queryable_fields(parsed[2])["supersedes"] == ivorns[1]
    assert provenance.queryable_fields(parsed[0])["supersedes"] is None


def test_provn_writes_the_revision_as_a_typed_derivation() -> None:
    doc = coincidence_doc(subject=COINCIDENCE + "-r1", supersedes=COINCIDENCE)
    provn = provenance.serialize(doc, "provn").decode()
    (line,) = [x for x in provn.splitlines() if "prov:Revision" in x]
    assert line.strip().startswith("wasDerivedFrom(ivo:mmbroker.test/coincidence#")


# -- determinism ---------------------------------------------------------------------------------

def test_same_inputs_give_identical_serializations() -> None:
    first = coincidence_doc()
    again = coincidence_doc(inputs=[nu_alert(), grb_alert()])  # order does not matter
    for fmt in FORMATS:
        assert provenance.serialize(first, fmt) == provenance.serialize(again, fmt)
    # Parameter mappings equal in content but not in insertion order hash the same too.
    reordered = coincidence_doc(parameters={"min_overlap": 0.1, "time_window_s": [-500, 500],
                                            "pairing": "nu-grb"})
    assert provenance.serialize(reordered, "json") == provenance.serialize(first, "json")
    # The same input named twice is one input.
    twice = coincidence_doc(inputs=[grb_alert(), nu_alert(), grb_alert()])
    assert provenance.serialize(twice, "json") == provenance.serialize(first, "json")


def test_identical_across_processes_with_different_hash_seeds() -> None:
    # Set ordering varies with PYTHONHASHSEED; no identifier or ordering may depend on it.
    script = textwrap.dedent("""
        import sys
        from tests import test_provenance as t
        from broker.publish import provenance
        sys.stdout.buffer.write(provenance.serialize(t.coincidence_doc(), sys.argv[1]))
    """)
    for fmt in FORMATS:
        outputs = set()
        for seed in ("1", "2", "31337"):
            env = {**os.environ, "PYTHONHASHSEED": seed}
            result = subprocess.run([sys.executable, "-c", script, fmt], env=env,
                                    capture_output=True, check=True, timeout=120,
                                    cwd=os.path.dirname(os.path.dirname(__file__)))
            outputs.add(result.stdout)
        assert outputs == {provenance.serialize(coincidence_doc(), fmt)}


def test_different_outputs_get_different_activities() -> None:
    a = the_activity(coincidence_doc(subject=COINCIDENCE + "-a")).identifier
    b = the_activity(coincidence_doc(subject=COINCIDENCE + "-b")).identifier
    assert a != b


def test_times_are_normalized_to_utc() -> None:
    cest = timezone(timedelta(hours=2))
    local = coincidence_doc(activity_started=T0.astimezone(cest),
                            activity_ended=(T0 + timedelta(milliseconds=7)).astimezone(cest))
    assert provenance.serialize(local, "json") == provenance.serialize(coincidence_doc(), "json")


# -- awkward IVORNs ------------------------------------------------------------------------------

@pytest.mark.parametrize("ivorn", [
    "ivo://mmbroker.test/gcn.notices#GRB-240501A:rev-2",
    "ivo://gwnet/LVC#S240501a-1-Preliminary",
    "ivo://mmbroker.test/a-b#c#d:e:f",
    "ivo://nasa.gsfc.gcn/SWIFT#BAT_GRB_Pos_1234567-259",
    "ivo://mmbroker.test/x#ends-with-dot.",
    "ivo://mmbroker.test/x#it's(odd)[yes]=1,2;3",
])
@pytest.mark.parametrize("fmt", FORMATS)
def test_ivorns_with_odd_characters_survive(ivorn: str, fmt: provenance.Format) -> None:
    alert = nu_alert(ivorn=ivorn)
    doc = coincidence_doc(inputs=[alert, grb_alert()], subject=ivorn + "-coinc",
                          supersedes=ivorn + "-prev")
    back = provenance.parse(provenance.serialize(doc, fmt), fmt)
    assert back == doc
    # The identifier is the IVORN itself: prefix URI plus local part gives it back.
    assert entity(back, ivorn).identifier.uri == ivorn
    assert entity(back, ivorn + "-coinc").identifier.uri == ivorn + "-coinc"
    fields = provenance.queryable_fields(back)
    assert fields["subject"] == ivorn + "-coinc"
    assert fields["supersedes"] == ivorn + "-prev"
    assert {i["ivorn"] for i in fields["inputs"]} == {ivorn, grb_alert().ivorn}


@pytest.mark.parametrize("ivorn", [
    "ivo://mmbroker.test/x#50%25",
    "ivo://mmbroker.test/x#caf\u00e9",
    'ivo://mmbroker.test/x#q"<>{}|^`\\',
])
@pytest.mark.parametrize("fmt", FORMATS)
def test_ivorns_prov_n_cannot_spell_keep_a_stable_identifier(ivorn: str,
                                                             fmt: provenance.Format) -> None:
    # PROV-N would percent-encode these (another IRI on reading back), so the
    # identifier is a digest and the IVORN itself travels as mmbroker:ivorn.
    doc = coincidence_doc(inputs=[nu_alert(ivorn=ivorn), grb_alert()])
    back = provenance.parse(provenance.serialize(doc, fmt), fmt)
    assert back == doc
    found = entity(back, ivorn)
    assert found.identifier.namespace == MMBROKER
    assert found.identifier == entity(coincidence_doc(inputs=[nu_alert(ivorn=ivorn)]),
                                      ivorn).identifier


def test_odd_broker_id_and_version_are_kept_verbatim() -> None:
    doc = coincidence_doc(broker_id="broker on host 7", broker_version="0.1.dev3+g1a2b.d2024")
    back = provenance.parse(provenance.serialize(doc, "provn"), "provn")
    assert back == doc
    (agent,) = records(back, ProvAgent)
    assert attr(agent, "brokerId") == "broker on host 7"
    assert attr(agent, "softwareVersion") == "0.1.dev3+g1a2b.d2024"


# -- no warnings ---------------------------------------------------------------------------------

def test_prov_emits_no_warnings() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        doc = coincidence_doc(inputs=[nu_alert(ivorn="ivo://mmbroker.test/x#a:b#c-d"),
                                      nu_alert(ivorn="ivo://mmbroker.test/x#50%",
                                               cuts='x < 1 & y > "2"\nz'),
                                      grb_alert()],
                              supersedes="ivo://mmbroker.test/coincidence#prev:1",
                              parameters={"\u00fc": [1, 2.5, None, True], "t": T0})
        for fmt in FORMATS:
            provenance.queryable_fields(provenance.parse(provenance.serialize(doc, fmt), fmt))
    assert [str(w.message) for w in caught] == []


# -- queryable fields ----------------------------------------------------------------------------

def test_queryable_fields() -> None:
    fields = provenance.queryable_fields(coincidence_doc())
    assert fields == {
        "subject": COINCIDENCE,
        "kind": "coincidence",
        "activity": "crossmatch",
        "engine_version": "1.0.0",
        "config_hash": CONFIG_HASH,
        "supersedes": None,
        "pipeline": ["BAT on-board", "online-filter"],
        "pipeline_version": ["2.1", "5.3.0"],
        "reco_method": ["SplineMPE", "coded-mask imaging"],
        "cuts": ["BDT > 0.8; nchannel >= 20", "image SNR > 6.5"],
        "inputs": [
            {"ivorn": nu_alert().ivorn, "source": "detector.triggers", "raw_sha256": NU_RAW,
             "pipeline": "online-filter", "pipeline_version": "5.3.0",
             "reco_method": "SplineMPE", "cuts": "BDT > 0.8; nchannel >= 20"},
            {"ivorn": grb_alert().ivorn, "source": grb_alert().source, "raw_sha256": GRB_RAW,
             "pipeline": "BAT on-board", "pipeline_version": "2.1",
             "reco_method": "coded-mask imaging", "cuts": "image SNR > 6.5"},
        ],
    }


def test_queryable_fields_of_a_trigger() -> None:
    doc = trigger_doc(nu_alert(cuts=None), "ivo://mmbroker.test/trigger#T-9")
    fields = provenance.queryable_fields(provenance.parse(provenance.serialize(doc, "json"),
                                                          "json"))
    assert (fields["kind"], fields["activity"], fields["config_hash"]) == (
        "trigger", "trigger-conversion", None)
    assert fields["pipeline"] == ["online-filter"]
    assert fields["cuts"] == []


# -- refusals ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("overrides", "error"), [
    ({"activity_started": datetime(2024, 5, 1, 12)}, ValueError),  # naive
    ({"subject": "https://not.an/ivorn"}, ValueError),
    ({"parameters": {"f": object()}}, TypeError),
    ({"parameters": {"nan": float("nan")}}, ValueError),
    ({"inputs": []}, ValueError),
    ({"inputs": [nu_alert(), nu_alert(revision=2)]}, ValueError),  # one IVORN, two alerts
])
def test_refuses_bad_arguments(overrides: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        coincidence_doc(**overrides)


def test_refuses_unknown_kind_and_format() -> None:
    with pytest.raises(ValueError, match="kind"):
        provenance.build(COINCIDENCE, "merger", [nu_alert()],  # type: ignore[arg-type]
                         activity_started=T0, activity_ended=T0, engine_version="1",
                         config_hash=None, parameters={}, broker_id="b", broker_version="1")
    with pytest.raises(ValueError, match="format"):
        provenance.serialize(coincidence_doc(), "rdf")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="format"):
        provenance.parse(b"{}", "jsonld")  # type: ignore[arg-type]
