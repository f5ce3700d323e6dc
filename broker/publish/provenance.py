"""W3C PROV documents for the VOEvents the broker publishes (pure functions, no I/O).

Every published VOEvent gets one PROV document saying where it came from:

* an **entity** per input alert, identified by its broker IVORN, carrying the source
  stream, how the raw bytes arrived (Kafka topic/partition/offset, VTP peer, HTTP
  client, file), the SHA-256 of those raw bytes, the receipt time and the facility's
  own provenance (pipeline, version, reconstruction method, cuts);
* the **activity** that made the VOEvent (``crossmatch`` or ``trigger-conversion``)
  with the engine version, configuration hash and parameters and its start/end
  time, which ``used`` each input (and the configuration, when hashed);
* the **output entity** (the VOEvent's IVORN and the SHA-256 of its bytes), which
  ``wasGeneratedBy`` the activity, ``wasDerivedFrom`` each input,
  ``wasAttributedTo`` the broker and, for an update or retraction,
  ``wasRevisionOf`` the VOEvent it supersedes -- so following ``wasRevisionOf``
  across documents walks the whole revision chain;
* the **agent**: this broker instance (a ``prov:SoftwareAgent``) associated with the
  activity, with the broker software release as the association's plan.

The shape follows the IVOA Provenance Data Model's reading of W3C PROV (activity
configuration as parameters and a configuration entity, agents with roles) and the
CTA use cases (which pipeline, which version, which reconstruction, which cuts),
kept to plain PROV terms so any PROV tool reads it.

Identifiers are deterministic: IVORNs are ``ivo:`` qualified names, and everything
the broker mints (activity, configuration, agent, software) is derived from its
inputs, never from a random UUID, so building twice gives the same document.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

from prov.constants import PROV, PROV_TYPE
from prov.identifier import Namespace, QualifiedName
from prov.model import Literal as ProvLiteral
from prov.model import (
    ProvActivity,
    ProvDerivation,
    ProvDocument,
    ProvEntity,
    ProvGeneration,
    ProvRecord,
)
from prov.serializers.provjson import ProvJSONEncoder

__all__ = [
    "IVO",
    "MEDIA_TYPES",
    "MMBROKER",
    "NAMESPACE_URI",
    "Format",
    "InputAlert",
    "Kind",
    "build",
    "build_json",
    "parse",
    "queryable_fields",
    "serialize",
]

Kind = Literal["trigger", "coincidence"]
Format = Literal["json", "xml", "provn"]

# Term namespace for the broker's own vocabulary and minted identifiers.  It names
# terms, it is not fetched; it must stay fixed once documents are archived, because
# the identifiers of activities and agents live in it.
NAMESPACE_URI: Final = "https://example.invalid/mmbroker/ns/prov#"
MMBROKER: Final = Namespace("mmbroker", NAMESPACE_URI)
# IVORNs become ``ivo:<authority>/<stream>#<local>``: joining prefix URI and local
# part gives back the IVORN exactly, in every serialization.
IVO: Final = Namespace("ivo", "ivo://")

MEDIA_TYPES: Final[dict[str, str]] = {
    "json": "application/json",
    "xml": "application/xml",
    "provn": "text/provenance-notation",
}

ACTIVITY_NAMES: Final[dict[str, str]] = {
    "coincidence": "crossmatch",
    "trigger": "trigger-conversion",
}

# Characters an IVORN's path may hold that all three formats carry unchanged: PROV-N
# writes them bare or backslash-escaped and reads them back (checked with prov 3.2).
# Anything else (``%``, quotes, ``<>``, non-ASCII ...) PROV-N would percent-encode,
# changing the identifier, so such an IVORN gets a hashed identifier instead (see
# ``_ivorn_id``).
_IVORN_PATH = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.~/#:@!$&*+?=,;'()\[\]\-]*")
_PLAIN_LOCAL = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")


@dataclass(frozen=True)
class InputAlert:
    """One archived alert revision that went into a published VOEvent.

    Parameters
    ----------
    ivorn
        The alert's broker IVORN (``Alert.id``).
    source
        The stream it arrived on (``Alert.source``), e.g. ``gcn.notices.swift.bat.guano``.
    transport
        ``AlertRow.transport`` as stored: ``{"kafka": {...}}``, ``{"vtp": {"peer": ...}}``,
        ``{"http": {"client": ...}}``, ``{"file": path}``, or any other one-key dict.
    raw_sha256
        SHA-256 (hex) of the raw bytes as received.
    received_time
        When the broker received the raw bytes (timezone-aware).
    revision
        The alert's revision number.
    pipeline, pipeline_version, reco_method, cuts
        ``Alert.provenance``: how the facility produced the alert.
    source_ivorn
        The facility's own IVORN for the event, when it has one.
    skymap
        The sky map fetched for the alert after it arrived that is its localization:
        ``(sha256, url it was fetched from, when)``; None when it has none, or its map
        came in the message itself (:func:`crossmatch.events.fetched_map`).
    """

    ivorn: str
    source: str
    transport: Mapping[str, Any] | None
    raw_sha256: str | None
    received_time: datetime | None
    revision: int
    pipeline: str | None = None
    pipeline_version: str | None = None
    reco_method: str | None = None
    cuts: str | None = None
    source_ivorn: str | None = None
    skymap: tuple[str, str, datetime | None] | None = None


def _term(name: str) -> QualifiedName:
    return MMBROKER[name]


class _QName(str):
    """A qualified name written as a value (``{"$": name, "type": "xsd:QName"}``)."""


def _key(name: str) -> str:
    """The PROV-JSON text of the broker's term ``name`` (``mmbroker:<name>``)."""
    return f"{MMBROKER.prefix}:{name}"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _ivorn_id(ivorn: str) -> str:
    """The PROV identifier (PROV-JSON text) of a VOEvent or alert IVORN.

    ``ivo:<path>`` when every format can carry the path unchanged; otherwise a
    hashed ``mmbroker:ivorn/<sha256>`` (the exact IVORN is always kept in the
    ``mmbroker:ivorn`` attribute, so nothing is lost either way).
    """
    if not ivorn.startswith("ivo://"):
        raise ValueError(f"not an IVORN: {ivorn!r}")
    path = ivorn[len("ivo://"):]
    if _IVORN_PATH.fullmatch(path):
        return f"{IVO.prefix}:{path}"
    return _key("ivorn/" + _digest(ivorn))


def _local(text: str) -> str:
    """``text`` as a local part every format writes bare, or its digest."""
    if _PLAIN_LOCAL.fullmatch(text) and not text.endswith("."):
        return text
    return _digest(text)[:32]


def _utc(value: datetime, what: str) -> datetime:
    if value.tzinfo is None:
        raise ValueError(f"{what} is a naive datetime; provenance times must be UTC-aware")
    return value.astimezone(UTC)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return _utc(value, "parameter").isoformat()
    if isinstance(value, set | frozenset):
        return sorted(value)
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"parameter value of type {type(value).__name__} has no JSON form")


def _canonical_json(value: Any) -> str:
    """Key-sorted, compact JSON: equal mappings give byte-equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False, default=_json_default)


_Attributes = list[tuple[str, Any]]
"""A record's attributes: (PROV-JSON name, value: str, int, UTC datetime or _QName)."""
_AttributeSeq = Sequence[tuple[str, Any]]


def _transport_attributes(transport: Mapping[str, Any] | None) -> _Attributes:
    """PROV attributes naming how the raw bytes reached the broker."""
    if not transport:
        return []
    if len(transport) != 1:
        # Not one of the shapes the listeners write: keep it whole rather than guess.
        return [(_key("transport"), _canonical_json(dict(transport)))]
    ((kind, detail),) = transport.items()
    attrs: _Attributes = [(_key("transportKind"), str(kind))]
    if kind == "kafka" and isinstance(detail, Mapping):
        for key, term in (("bootstrap", "kafkaBootstrap"), ("topic", "kafkaTopic"),
                          ("partition", "kafkaPartition"), ("offset", "kafkaOffset"),
                          ("timestamp_ms", "kafkaTimestampMs")):
            value = detail.get(key)
            if value is not None:
                attrs.append((_key(term), value if isinstance(value, int) else str(value)))
    elif kind == "vtp" and isinstance(detail, Mapping):
        if detail.get("peer") is not None:
            attrs.append((_key("vtpPeer"), str(detail["peer"])))
    elif kind == "http" and isinstance(detail, Mapping):
        # The client address and which token posted it; never the token itself
        # (the ingest path only stores its id and name).
        for key, term in (("client", "httpClient"), ("token_id", "httpTokenId"),
                          ("token_name", "httpTokenName")):
            if detail.get(key) is not None:
                attrs.append((_key(term), str(detail[key])))
    elif kind == "file" and isinstance(detail, str):
        attrs.append((_key("filePath"), detail))
    elif isinstance(detail, Mapping | list):
        attrs.append((_key("transportDetail"), _canonical_json(detail)))
    elif detail is not None and not isinstance(detail, bool):
        attrs.append((_key("transportDetail"), str(detail)))
    return attrs


def _input_attributes(alert: InputAlert) -> _Attributes:
    attrs: _Attributes = [
        ("prov:type", _QName(_key("Alert"))),
        ("prov:label", alert.ivorn),
        (_key("ivorn"), alert.ivorn),
        (_key("sourceStream"), alert.source),
        (_key("revision"), int(alert.revision)),
    ]
    if alert.source_ivorn is not None:
        attrs.append((_key("sourceIvorn"), alert.source_ivorn))
    if alert.raw_sha256 is not None:
        attrs.append((_key("rawSha256"), alert.raw_sha256))
    if alert.received_time is not None:
        attrs.append((_key("receivedTime"), _utc(alert.received_time, "received_time")))
    attrs.extend(_transport_attributes(alert.transport))
    for value, term in ((alert.pipeline, "pipeline"),
                        (alert.pipeline_version, "pipelineVersion"),
                        (alert.reco_method, "recoMethod"), (alert.cuts, "cuts")):
        if value is not None:
            attrs.append((_key(term), value))
    return attrs


def _value(value: Any) -> Any:
    """An attribute value as prov's PROV-JSON writer writes it."""
    if isinstance(value, _QName):
        return {"$": str(value), "type": "xsd:QName"}
    if isinstance(value, datetime):
        return {"$": value.isoformat(), "type": "xsd:dateTime"}
    if isinstance(value, int) and not isinstance(value, bool):
        # prov's magnitude-aware integer types (prov.model.canonical_xsd_datatype)
        kind = "int" if -2**31 <= value < 2**31 else "long" if -2**63 <= value < 2**63 \
            else "integer"
        return {"$": str(value), "type": f"xsd:{kind}"}
    return value


class _ProvJSON:
    """A PROV-JSON document written record by record, exactly as prov's own writer
    (``prov.serializers.provjson``) writes the document made of the same records: the
    registered prefixes, then one object per record type in the order the types first
    appear, records in order, ``_:idN`` for each relation in order, and a list for an
    identifier given to more than one record."""

    def __init__(self) -> None:
        self.document: dict[str, Any] = {"prefix": {MMBROKER.prefix: MMBROKER.uri,
                                                    IVO.prefix: IVO.uri}}
        self._anonymous = 0

    def add(self, kind: str, identifier: str | None, formal: _Attributes,
            attributes: _AttributeSeq = ()) -> str:
        """Add a record: ``formal`` attributes (qualified names and times, written bare;
        None: left out) then the others, each name once (several values: a list)."""
        if identifier is None:
            self._anonymous += 1
            identifier = f"_:id{self._anonymous}"
        record: dict[str, Any] = {name: value.isoformat() if isinstance(value, datetime)
                                  else value for name, value in formal if value is not None}
        for name, value in attributes:
            if name not in record:
                record[name] = _value(value)
            elif isinstance(record[name], list):
                record[name].append(_value(value))
            else:
                record[name] = [record[name], _value(value)]
        records = self.document.setdefault(kind, {})
        if identifier not in records:
            records[identifier] = record
        elif isinstance(records[identifier], list):
            records[identifier].append(record)
        else:
            records[identifier] = [records[identifier], record]
        return identifier


def _voevent_entity(doc: _ProvJSON, ivorn: str, extra: _AttributeSeq = ()) -> str:
    return doc.add("entity", _ivorn_id(ivorn), [], [
        ("prov:type", _QName(_key("VOEvent"))), ("prov:label", ivorn), (_key("ivorn"), ivorn),
        *extra])


def build_json(subject_ivorn: str, kind: Kind, inputs: list[InputAlert], *,
               activity_started: datetime, activity_ended: datetime, engine_version: str,
               config_hash: str | None, parameters: Mapping[str, Any], broker_id: str,
               broker_version: str, supersedes: str | None = None,
               voevent_sha256: str | None = None) -> dict[str, Any]:
    """Build the PROV document of one published VOEvent, as its PROV-JSON object.

    Written directly, not through prov's object model (which cost more than building
    the VOEvent itself, issue 17): the object is what prov's own writer writes for the
    same document, which ``tests/test_provenance.py`` checks by reading every variant
    back with prov and writing it again.  :func:`build` gives the document itself.

    Parameters
    ----------
    subject_ivorn
        IVORN of the VOEvent being published.
    kind
        ``"coincidence"`` (made by the cross-match engine) or ``"trigger"`` (a
        detector trigger converted to a VOEvent).
    inputs
        The alert revisions it was made from; their order does not matter.
    activity_started, activity_ended
        When the producing activity ran (timezone-aware).
    engine_version
        Version of the engine that ran the activity (cross-match or converter).
    config_hash
        SHA-256 of the configuration the activity ran with, if it has one.
    parameters
        The activity's parameters (JSON-able: numbers, strings, lists, mappings,
        datetimes); stored as canonical JSON.
    broker_id
        Identifier of this broker instance.
    broker_version
        The broker software's version.
    supersedes
        IVORN of the VOEvent this one updates or retracts.
    voevent_sha256
        SHA-256 of the VOEvent's bytes, when they are already fixed.

    Returns
    -------
    dict
        The PROV-JSON object; equal arguments give an equal object.

    Raises
    ------
    ValueError
        On an unknown kind, no inputs, a naive datetime, or an identifier that is not an
        IVORN.
    TypeError
        When a parameter value has no JSON form.
    """
    if kind not in ACTIVITY_NAMES:
        raise ValueError(f"unknown kind {kind!r}; expected one of {sorted(ACTIVITY_NAMES)}")
    if not inputs:
        raise ValueError("a published VOEvent has at least one input alert")
    started = _utc(activity_started, "activity_started")
    ended = _utc(activity_ended, "activity_ended")
    activity_name = ACTIVITY_NAMES[kind]
    # Sorted so that the caller's ordering of the same inputs changes nothing; an
    # alert named twice is one input, but two different alerts under one IVORN
    # would make one entity with contradictory attributes.
    by_ivorn: dict[str, InputAlert] = {}
    for alert in inputs:
        if by_ivorn.setdefault(alert.ivorn, alert) != alert:
            raise ValueError(f"two different inputs share the IVORN {alert.ivorn!r}")
    ordered = [by_ivorn[ivorn] for ivorn in sorted(by_ivorn)]
    parameters_json = _canonical_json(dict(parameters))

    doc = _ProvJSON()
    # The agent: this broker instance, running a given release of the software.
    software = doc.add("entity", _key(f"software/mmbroker/{_local(broker_version)}"), [], [
        ("prov:type", _QName(_key("Software"))), ("prov:type", _QName("prov:Plan")),
        ("prov:label", f"mmbroker {broker_version}"),
        (_key("softwareName"), "mmbroker"), (_key("softwareVersion"), broker_version),
    ])
    broker = doc.add("agent", _key(f"broker/{_local(broker_id)}"), [], [
        ("prov:type", _QName("prov:SoftwareAgent")), ("prov:label", broker_id),
        (_key("brokerId"), broker_id), (_key("softwareVersion"), broker_version),
    ])

    activity_attrs: _Attributes = [
        ("prov:type", _QName(_key(activity_name))),
        ("prov:label", f"{activity_name} for {subject_ivorn}"),
        (_key("engineVersion"), engine_version),
        (_key("parameters"), parameters_json),
    ]
    if config_hash is not None:
        activity_attrs.append((_key("configHash"), config_hash))
    # One VOEvent is produced by one activity: naming the activity after the
    # VOEvent keeps the id stable without a random UUID.
    activity = doc.add(
        "activity", _key(f"activity/{activity_name}/{_digest(subject_ivorn)[:32]}"),
        [("prov:startTime", started), ("prov:endTime", ended)], activity_attrs)
    doc.add("wasAssociatedWith", None,
            [("prov:activity", activity), ("prov:agent", broker), ("prov:plan", software)],
            [("prov:role", _QName(_key("publisher")))])

    if config_hash is not None:
        # The configuration as an entity (IVOA ProvenanceDM's configuration of an
        # activity): every VOEvent made under one configuration shares it, so
        # "what did config X produce" is one hop in a provenance store.
        config = doc.add("entity", _key(f"config/{_local(config_hash)}"), [], [
            ("prov:type", _QName(_key("Configuration"))), (_key("configHash"), config_hash),
            ("prov:value", parameters_json),
        ])
        doc.add("used", None, [("prov:activity", activity), ("prov:entity", config)],
                [("prov:role", _QName(_key("configuration")))])

    output_attrs: _Attributes = [(_key("kind"), kind)]
    if voevent_sha256 is not None:
        output_attrs.append((_key("sha256"), voevent_sha256))
    output = _voevent_entity(doc, subject_ivorn, output_attrs)
    doc.add("wasGeneratedBy", None, [("prov:entity", output), ("prov:activity", activity),
                                     ("prov:time", ended)])
    doc.add("wasAttributedTo", None, [("prov:entity", output), ("prov:agent", broker)])

    def derivation(generated: str, used: str, by: str | None = None,
                   attributes: _AttributeSeq = ()) -> None:
        doc.add("wasDerivedFrom", None, [("prov:generatedEntity", generated),
                                         ("prov:usedEntity", used), ("prov:activity", by)],
                attributes)

    for alert in ordered:
        entity = doc.add("entity", _ivorn_id(alert.ivorn), [], _input_attributes(alert))
        doc.add("used", None, [("prov:activity", activity), ("prov:entity", entity),
                               ("prov:time", started)], [("prov:role", _QName(_key("input")))])
        derivation(output, entity, activity)
        if alert.skymap is not None:
            # The map the broker fetched by URL and matched as the alert's localization:
            # an input of its own, where it came from and its exact bytes.
            sha, url, fetched_at = alert.skymap
            attrs: _Attributes = [
                ("prov:type", _QName(_key("SkyMap"))), ("prov:label", url),
                (_key("sha256"), sha), ("prov:location", url)]
            if fetched_at is not None:
                attrs.append((_key("fetchedTime"), _utc(fetched_at, "fetched_at")))
            skymap = doc.add("entity", _key(f"skymap/{sha}"), [], attrs)
            doc.add("used", None, [("prov:activity", activity), ("prov:entity", skymap),
                                   ("prov:time", started)],
                    [("prov:role", _QName(_key("skymap")))])
            derivation(output, skymap, activity)
            derivation(entity, skymap)  # the alert, as matched, holds the map

    if supersedes is not None:
        previous = _voevent_entity(doc, supersedes)
        derivation(output, previous, attributes=[("prov:type", _QName("prov:Revision"))])
    return doc.document


def build(subject_ivorn: str, kind: Kind, inputs: list[InputAlert], *,
          activity_started: datetime, activity_ended: datetime, engine_version: str,
          config_hash: str | None, parameters: Mapping[str, Any], broker_id: str,
          broker_version: str, supersedes: str | None = None,
          voevent_sha256: str | None = None) -> ProvDocument:
    """The PROV document of one published VOEvent (:func:`build_json`, read by prov);
    the same parameters.

    Returns
    -------
    prov.model.ProvDocument
        The document; equal arguments give an equal document with equal serializations.
    """
    return parse(json.dumps(build_json(
        subject_ivorn, kind, inputs, activity_started=activity_started,
        activity_ended=activity_ended, engine_version=engine_version,
        config_hash=config_hash, parameters=parameters, broker_id=broker_id,
        broker_version=broker_version, supersedes=supersedes,
        voevent_sha256=voevent_sha256)), "json")


def serialize(doc: ProvDocument, fmt: Format) -> bytes:
    """Serialize ``doc`` as PROV-JSON, PROV-XML or PROV-N (UTF-8).

    Parameters
    ----------
    doc
        The document.
    fmt
        ``"json"``, ``"xml"`` or ``"provn"``; :data:`MEDIA_TYPES` gives the media type.

    Returns
    -------
    bytes
        The serialization; equal documents built by :func:`build` give equal bytes.
    """
    if fmt not in MEDIA_TYPES:
        raise ValueError(f"unknown provenance format {fmt!r}; expected one of "
                         f"{sorted(MEDIA_TYPES)}")
    if fmt == "json":
        # prov writes PROV-JSON with json.dump, which always takes the pure-Python
        # encoder; json.dumps of the same encoder gives the same text with the C one,
        # 1.6x faster (every queued VOEvent stores its PROV-JSON).
        return json.dumps(doc, cls=ProvJSONEncoder).encode("utf-8")
    text = doc.serialize(format=fmt)
    assert text is not None  # no destination given: prov returns the text
    return text.encode("utf-8")


def parse(data: bytes | str, fmt: Format) -> ProvDocument:
    """Read a document written by :func:`serialize` (or any PROV tool).

    Parameters
    ----------
    data
        The serialization, as bytes (UTF-8) or text.
    fmt
        ``"json"``, ``"xml"`` or ``"provn"``.

    Returns
    -------
    prov.model.ProvDocument
        The document; it compares equal to the one serialized.
    """
    if fmt not in MEDIA_TYPES:
        raise ValueError(f"unknown provenance format {fmt!r}; expected one of "
                         f"{sorted(MEDIA_TYPES)}")
    # prov's XML reader uses its own parser with entity resolution and network
    # access switched off, so untrusted PROV-XML cannot expand or fetch entities.
    return ProvDocument.deserialize(content=data, format=fmt)


def _values(record: ProvRecord, term: str) -> list[Any]:
    return [value for name, value in record.attributes if name == _term(term)]


def _first(record: ProvRecord, term: str) -> Any:
    values = _values(record, term)
    return _plain(values[0]) if values else None


def _plain(value: Any) -> Any:
    # A parsed document may hold a typed Literal where the built one held a str or int.
    return value.value if isinstance(value, ProvLiteral) else value


def _has_type(record: ProvRecord, term: str) -> bool:
    return any(name == PROV_TYPE and value == _term(term) for name, value in record.attributes)


def queryable_fields(doc: ProvDocument) -> dict[str, Any]:
    """The fields the archive indexes, read back from a (built or parsed) document.

    Parameters
    ----------
    doc
        A document made by :func:`build`, possibly after a serialization round trip.

    Returns
    -------
    dict
        ``subject`` (the VOEvent IVORN), ``kind``, ``activity``, ``engine_version``,
        ``config_hash``, ``supersedes``; the distinct non-null ``pipeline``,
        ``pipeline_version``, ``reco_method`` and ``cuts`` of the inputs (sorted
        lists, for array columns or a child table); and ``inputs``, one dict per input
        alert (``ivorn``, ``source``, ``raw_sha256``, ``pipeline``,
        ``pipeline_version``, ``reco_method``, ``cuts``), sorted by IVORN.
    """
    records = list(doc.get_records())
    entities = {r.identifier: r for r in records if isinstance(r, ProvEntity)}
    activities = {r.identifier: r for r in records if isinstance(r, ProvActivity)}
    generated = [r for r in records if isinstance(r, ProvGeneration)]
    derivations = [r for r in records if isinstance(r, ProvDerivation)]

    # The subject is the VOEvent some activity generated (a superseded VOEvent is
    # named in the document too, but nothing in it generated that one).
    subject = activity = None
    for gen in generated:
        entity = entities.get(gen.args[0])
        if entity is not None and _has_type(entity, "VOEvent"):
            subject = entity
            activity = activities.get(gen.args[1])
            break

    supersedes = None
    inputs: list[dict[str, Any]] = []
    for rel in derivations:
        if subject is None or rel.args[0] != subject.identifier:
            continue
        source = entities.get(rel.args[1])
        if source is None:
            continue
        if _is_revision(rel):
            supersedes = _first(source, "ivorn")
        elif _has_type(source, "Alert"):
            inputs.append({
                "ivorn": _first(source, "ivorn"),
                "source": _first(source, "sourceStream"),
                "raw_sha256": _first(source, "rawSha256"),
                "pipeline": _first(source, "pipeline"),
                "pipeline_version": _first(source, "pipelineVersion"),
                "reco_method": _first(source, "recoMethod"),
                "cuts": _first(source, "cuts"),
            })
    inputs.sort(key=lambda d: d["ivorn"] or "")

    def distinct(key: str) -> list[str]:
        return sorted({d[key] for d in inputs if d[key] is not None})

    activity_type = None
    if activity is not None:
        kinds = [v for n, v in activity.attributes
                 if n == PROV_TYPE and isinstance(v, QualifiedName) and v.namespace == MMBROKER]
        activity_type = kinds[0].localpart if kinds else None
    return {
        "subject": _first(subject, "ivorn") if subject is not None else None,
        "kind": _first(subject, "kind") if subject is not None else None,
        "activity": activity_type,
        "engine_version": _first(activity, "engineVersion") if activity else None,
        "config_hash": _first(activity, "configHash") if activity else None,
        "supersedes": supersedes,
        "pipeline": distinct("pipeline"),
        "pipeline_version": distinct("pipeline_version"),
        "reco_method": distinct("reco_method"),
        "cuts": distinct("cuts"),
        "inputs": inputs,
    }


def _is_revision(rel: ProvDerivation) -> bool:
    return any(name == PROV_TYPE and value == PROV["Revision"] for name, value in rel.attributes)
