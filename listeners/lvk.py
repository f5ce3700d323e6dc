"""LVK gravitational-wave alerts (``igwn.gwalert``) in JSON and Avro.

LVK publishes one schema (``igwn.alerts.v1_0.Alert``) in two encodings: JSON
on GCN Kafka, with the multi-order FITS sky map base64-encoded, and Avro
object container files on SCiMMA/hop, with the sky map as bytes.  Both become
the same :class:`~alerts_schema.Alert`:

=====================  =============================================================
LVK field              Alert field
=====================  =============================================================
superevent_id          ``event_id``; ``MS``/``TS`` prefixes (mock, test) or a
                       ``-playground``/``-test`` topic make ``role`` "test"
alert_type             ``alert_type``: EARLYWARNING, PRELIMINARY -> "initial";
                       INITIAL, UPDATE -> "update"; RETRACTION -> "retraction"
                       (the LVK name is kept in ``extra.lvk_alert_type``)
time_created           ``revision`` (see below) and ``extra.time_created``
event.time             ``trigger_time``.  A retraction has no event: its time_created
                       stands in, flagged ``extra.event_time_known`` false, and the
                       broker gives it the event time of the superevent's earlier
                       revisions when it holds one (``broker/runtime/ingest.py``)
event.far (Hz)         ``far_hz``
classification         ``signalness`` = 1 - Terrestrial; the whole map in extra
event.skymap           a :class:`~listeners.base.SkymapFile`, named by sha256 in a
                       ``skymap`` localization with its 90% area and densest pixel
event.instruments      ``instrument`` ("H1,L1,V1") and ``extra.instruments``
event.pipeline         ``provenance.pipeline``; the sky map's CREATOR is
                       ``provenance.reco_method``
significant, group,    ``extra`` (``duration_s``, ``central_frequency_hz`` for Burst)
search, properties...
external_coinc         ``extra.external_coinc``, its ``combined_skymap`` stored as a
                       second SkymapFile and replaced by a summary naming its sha256
=====================  =============================================================

Revision rule ("lvk-time-created-v1")
-------------------------------------
LVK messages carry no counter, so the revision is derived from what every
message of a superevent carries, retractions included: the superevent id (which
holds the UTC date of the event, ``S181101ab`` -> 2018-11-01) and
``time_created``.  With ``dt`` the whole seconds from 00:00 UTC of that date to
``time_created``::

    tick = dt                                  for dt < 36 h (1 s resolution)
         = 129600 + (dt - 36 h) // 60          for dt < 15 d (1 min resolution)
         = 149040 + (dt - 15 d) // 3600        later         (1 h resolution)
    revision = 6 * tick + rank

with ``rank`` 0 EARLYWARNING, 1 PRELIMINARY, 2 INITIAL, 3 UPDATE, 4 UPDATE with
an external coincidence, 5 RETRACTION, so that of two notices created in the
same tick the later in LVK's sequence wins, and a retraction always does.
Later notices thus supersede earlier ones, JSON, Avro and VOEvent copies of one
notice get the same revision (``listeners.voevent`` applies this rule to LVK VOEvents,
``Who/Date`` standing for ``time_created``), and the result stays within the contract's 0..1000000
for about two years after the event; beyond that, or before the event's date,
the message is refused with the reason.  Revisions do not start at 0 as other
streams' do: only their order means anything.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import ValidationError

from alerts_schema import Alert
from alerts_schema.errors import HostileInput, MalformedInput, NormalizationError
from alerts_schema.model import format_utc
from crossmatch.events import ISSUED
from crossmatch.events import REVISION_RULE as REVISION_RULE_KEY
from crossmatch.skymap import MultiOrderMap, read_multiorder
from listeners import avro, json_limits
from listeners.base import MessageMeta, Normalized, SkymapFile
from listeners.common import finite_or_none, local_id, parse_utc
from listeners.detect import Format

__all__ = [
    "REVISION_RULE",
    "STREAM",
    "accepts",
    "handle",
    "is_lvk_source",
    "normalize",
    "normalize_record",
    "revision",
    "superevent_date",
]

STREAM = "igwn.gwalert"
"""The stream name LVK alerts are issued under (GCN Kafka and SCiMMA topic)."""

REVISION_RULE = "lvk-time-created-v1"
"""Name of the revision rule in the module docstring, recorded in each alert's extra."""

MAX_RECORDS = 64
"""Most Avro records accepted in one message (LVK sends one)."""

_LVK_SOURCE = re.compile(r"^igwn\.gwalert(?:[-.][\w.-]*)?$")
_TEST_SOURCE = re.compile(r"(playground|test)", re.IGNORECASE)
_LVK_SCHEMA_NAME = re.compile(r"^igwn\.alerts\.v\d+_\d+\.Alert$")
FAMILY = avro.SchemaFamily("LVK", re.compile(r"igwn\.alerts\.v\d+_\d+\.Alert"))
"""The writer schemas of LVK Avro alerts: ``igwn.alerts.v<MAJOR>_<MINOR>.Alert``."""
_SUPEREVENT_ID = re.compile(r"^(?P<prefix>[A-Z]{0,3})(?P<date>\d{6})(?P<suffix>[a-z]{1,8})$")
_AVRO_MAGIC = b"Obj\x01"

_ALERT_TYPES = {  # LVK type -> (contract alert_type, rank within a revision tick)
    "EARLYWARNING": ("initial", 0),
    "PRELIMINARY": ("initial", 1),
    "INITIAL": ("update", 2),
    "UPDATE": ("update", 3),
    "RETRACTION": ("retraction", 5),
}
_RANK_EXTERNAL_UPDATE = 4


def contract_alert_type(lvk_alert_type: str) -> str | None:
    """The contract's ``alert_type`` of an LVK alert type (``EarlyWarning``,
    ``Preliminary``: initial; ``Initial``, ``Update``: update; ``Retraction``), the same
    whether the alert came as igwn.gwalert JSON/Avro or as a GCN VOEvent; None if unknown.
    """
    known = _ALERT_TYPES.get(lvk_alert_type.strip().upper().replace("_", ""))
    return known[0] if known else None
_SLOTS = 6
_SECOND_SPAN = 36 * 3600
_MINUTE_END = 15 * 86400
_MINUTE_BASE = _SECOND_SPAN
_HOUR_BASE = _MINUTE_BASE + (_MINUTE_END - _SECOND_SPAN) // 60
_MAX_TICK = (1_000_000 - (_SLOTS - 1)) // _SLOTS

# Event fields that become Alert fields or named extra keys; others are kept as sent.
_EVENT_KNOWN = {"time", "far", "significant", "instruments", "group", "pipeline", "search",
                "classification", "properties", "duration", "central_frequency", "skymap"}
_TOP_KNOWN = {"alert_type", "time_created", "superevent_id", "event", "external_coinc", "urls"}


# -- routing -----------------------------------------------------------------------


def is_lvk_source(source: str) -> bool:
    """True for the LVK stream's topic names (``igwn.gwalert``, ``igwn.gwalert-playground``)."""
    return bool(_LVK_SOURCE.match(source))


def accepts(fmt: Format, decoded: Any, meta: MessageMeta, data: bytes | None = None) -> bool:
    """Whether this normalizer takes the message.

    Parameters
    ----------
    fmt
        The sniffed format.
    decoded
        The decoded JSON for JSON messages.  For Avro the router has nothing
        decoded; it may pass the raw bytes here (or as ``data``) so that a
        file of unknown origin can be recognized by its writer schema.
    meta
        The message metadata.
    data
        The raw bytes, needed only for Avro from ``file``.

    Returns
    -------
    bool
        JSON: from an LVK topic, or an object with ``superevent_id`` and
        ``alert_type``.  Avro container: from an LVK topic, or from ``file``
        with an ``igwn.alerts.v*.Alert`` writer schema.
    """
    if fmt is Format.JSON:
        if is_lvk_source(meta.source):
            return True
        return isinstance(decoded, dict) and "superevent_id" in decoded and "alert_type" in decoded
    if fmt is Format.AVRO_OCF:
        if is_lvk_source(meta.source):
            return True
        raw = data if data is not None else decoded
        if meta.source == "file" and isinstance(raw, bytes | bytearray | memoryview):
            writer = avro.peek_container_schema(bytes(raw))
            return writer is not None and bool(_LVK_SCHEMA_NAME.match(writer.name))
    return False


def handle(data: bytes, decoded: Any, meta: MessageMeta) -> Normalized:
    """Normalize a message the router accepted: ``decoded`` is its JSON, or None for Avro."""
    if decoded is not None and not isinstance(decoded, bytes | bytearray | memoryview):
        return _normalize_records([decoded], meta)
    return normalize(data, meta)


def normalize(data: bytes, meta: MessageMeta) -> Normalized:
    """Alerts and sky maps from one ``igwn.gwalert`` message (JSON or Avro container).

    Raises
    ------
    MalformedInput
        Bytes that are not JSON or Avro, truncated Avro, invalid base64, or a
        sky map that is not a readable multi-order FITS file.
    HostileInput
        Oversized JSON, too many Avro records, decompression bombs.
    NormalizationError
        A message lacking what an Alert needs (superevent id, alert type,
        event time), or holding impossible values.
    """
    if data[:4] == _AVRO_MAGIC:
        # The shared, bounded container reader: capped inflation, record counts
        # and zero-width repeats, writer schemas parsed once per process.
        records: list[Any] = avro.decode_container(data, None, family=FAMILY)[1]
        if len(records) > MAX_RECORDS:
            raise HostileInput(f"Avro container holds {len(records)} records (an LVK alert "
                               f"has one; limit {MAX_RECORDS})")
    else:
        records = [json_limits.loads(data)]
    return _normalize_records(records, meta)


def _normalize_records(records: list[Any], meta: MessageMeta) -> Normalized:
    alerts: list[Alert] = []
    skymaps: dict[str, SkymapFile] = {}
    for record in records:
        alert, files = normalize_record(record, meta)
        alerts.append(alert)
        for sky in files:
            skymaps.setdefault(sky.sha256, sky)
    return Normalized(alerts=tuple(alerts), skymaps=tuple(skymaps.values()))


def superevent_date(superevent_id: str) -> datetime:
    """00:00 UTC of the date a superevent id names (``MS181101ab`` -> 2018-11-01).

    Raises
    ------
    NormalizationError
        For an id not of the form ``[prefix]YYMMDD[suffix]``.
    """
    match = _SUPEREVENT_ID.match(superevent_id)
    if not match:
        raise NormalizationError(f"superevent_id {superevent_id!r} is not of the form "
                                 "[prefix]YYMMDD[letters]")
    date = match.group("date")
    try:
        return datetime(2000 + int(date[:2]), int(date[2:4]), int(date[4:]), tzinfo=UTC)
    except ValueError as exc:
        raise NormalizationError(f"superevent_id {superevent_id!r} names no valid date") from exc


def revision(superevent_id: str, time_created: datetime, lvk_alert_type: str,
             external_coinc: bool = False) -> int:
    """The revision of an LVK notice, by the rule in the module docstring.

    Parameters
    ----------
    superevent_id
        GraceDB superevent id; its date is the epoch.
    time_created
        When LVK created the notice (UTC).
    lvk_alert_type
        EARLYWARNING (or EARLY_WARNING), PRELIMINARY, INITIAL, UPDATE or RETRACTION.
    external_coinc
        Whether the notice reports an external coincidence (ranks an UPDATE higher).

    Returns
    -------
    int
        In 0..1000000; later notices of a superevent get higher numbers.

    Raises
    ------
    NormalizationError
        Unknown alert type, ``time_created`` before the superevent's date or
        more than about two years after it.
    """
    kind = lvk_alert_type.upper().replace("_", "")
    if kind not in _ALERT_TYPES:
        raise NormalizationError(f"alert_type {lvk_alert_type!r} is not one of "
                                 f"{', '.join(_ALERT_TYPES)}")
    rank = _ALERT_TYPES[kind][1]
    if kind == "UPDATE" and external_coinc:
        rank = _RANK_EXTERNAL_UPDATE
    dt = math.floor((time_created - superevent_date(superevent_id)).total_seconds())
    if dt < 0:
        raise NormalizationError(f"time_created {format_utc(time_created)} precedes the date of "
                                 f"superevent {superevent_id}")
    if dt < _SECOND_SPAN:
        tick = dt
    elif dt < _MINUTE_END:
        tick = _MINUTE_BASE + (dt - _SECOND_SPAN) // 60
    else:
        tick = _HOUR_BASE + (dt - _MINUTE_END) // 3600
    if tick > _MAX_TICK:
        raise NormalizationError(f"time_created {format_utc(time_created)} is too long after "
                                 f"superevent {superevent_id} for rule {REVISION_RULE}")
    return _SLOTS * tick + rank


# -- one record --------------------------------------------------------------------


def normalize_record(record: Any, meta: MessageMeta) -> tuple[Alert, list[SkymapFile]]:
    """One Alert and the sky maps it references from one decoded LVK alert record.

    ``record`` is the JSON object or the Avro record (sky maps as base64 text
    or as bytes respectively).
    """
    if not isinstance(record, dict):
        raise NormalizationError(f"LVK alert must be an object, got {type(record).__name__}")
    superevent_id = record.get("superevent_id")
    if not isinstance(superevent_id, str) or not superevent_id.strip():
        raise NormalizationError(f"superevent_id missing or not text: {superevent_id!r}")
    superevent_id = superevent_id.strip()
    if len(superevent_id) > 256:
        raise NormalizationError("superevent_id longer than 256 characters")
    raw_type = record.get("alert_type")
    if not isinstance(raw_type, str):
        raise NormalizationError(f"alert_type missing or not text: {raw_type!r}")
    lvk_type = raw_type.strip().upper().replace("_", "")
    if lvk_type not in _ALERT_TYPES:
        raise NormalizationError(f"alert_type {raw_type!r} is not one of "
                                 f"{', '.join(_ALERT_TYPES)}")
    contract_type = _ALERT_TYPES[lvk_type][0]
    time_created = parse_utc(record.get("time_created"), field="time_created")
    event = _optional_object(record.get("event"), "event")
    coinc = _optional_object(record.get("external_coinc"), "external_coinc")
    rev = revision(superevent_id, time_created, lvk_type, coinc is not None)

    files: list[SkymapFile] = []
    extra: dict[str, Any] = {
        "lvk_alert_type": lvk_type,
        "time_created": format_utc(time_created),
        ISSUED: format_utc(time_created),
        REVISION_RULE_KEY: REVISION_RULE,
        "urls": _jsonable(record.get("urls") or {}),
    }
    localization: dict[str, Any] = {"kind": "none"}
    far_hz: float | None = None
    signalness: float | None = None
    instrument: str | None = None
    provenance: dict[str, Any] | None = None

    if event is None:
        if contract_type != "retraction":
            raise NormalizationError(f"{lvk_type} alert for {superevent_id} has no event")
        # A retraction names no event time.  The notice time stands in, flagged as not
        # the event's: the broker replaces it with the event time of the superevent's
        # earlier revisions it holds (never a time invented here).
        trigger_time = time_created
        extra["trigger_time_from"] = "time_created"
        extra["event_time_known"] = False
    else:
        trigger_time = parse_utc(event.get("time"), field="event.time")
        far_hz = finite_or_none(event.get("far"), field="event.far")
        if far_hz is not None and far_hz < 0:
            raise NormalizationError(f"event.far {far_hz!r} Hz is negative")
        instruments = _string_list(event.get("instruments"), "event.instruments")
        instrument = ",".join(instruments)[:128] or None
        classification = _probabilities(event.get("classification"), "event.classification")
        signalness = _signalness(classification)
        significant = event.get("significant")
        if significant is not None and not isinstance(significant, bool):
            raise NormalizationError(f"event.significant {significant!r} is not true/false")
        extra.update({
            "significant": significant,
            "group": _optional_text(event.get("group"), "event.group"),
            "search": _optional_text(event.get("search"), "event.search"),
            "instruments": instruments,
            "classification": classification,
            "properties": _probabilities(event.get("properties"), "event.properties"),
            "duration_s": finite_or_none(event.get("duration"), field="event.duration"),
            "central_frequency_hz": finite_or_none(event.get("central_frequency"),
                                                   field="event.central_frequency"),
        })
        other = {k: v for k, v in event.items() if k not in _EVENT_KNOWN}
        if other:
            extra["event_other"] = _jsonable(other)
        pipeline = _optional_text(event.get("pipeline"), "event.pipeline")
        provenance = {"pipeline": pipeline[:256] if pipeline else None,
                      "pipeline_version": None, "reco_method": None, "cuts": None}
        sky_bytes = _skymap_bytes(event.get("skymap"), "event.skymap")
        if sky_bytes is not None and contract_type != "retraction":
            sky_file, sky_map, summary = _skymap(sky_bytes, "event.skymap")
            files.append(sky_file)
            localization = {"kind": "skymap", "skymap_sha256": sky_file.sha256,
                            "format": sky_file.format, "url": None,
                            "area_90_deg2": summary["area_90_deg2"],
                            "ra_deg": summary["ra_deg"], "dec_deg": summary["dec_deg"]}
            creator = sky_map.meta.get("CREATOR")
            provenance["reco_method"] = str(creator)[:256] if creator else None
            extra["skymap"] = _skymap_meta(sky_map)
    extra["external_coinc"] = None if coinc is None else _external_coinc(coinc, files)
    other_top = {k: v for k, v in record.items() if k not in _TOP_KNOWN}
    if other_top:
        extra["other"] = _jsonable(other_top)

    source = STREAM if meta.source == "file" else meta.source
    # MS: mock (MDC) superevents, TS: test superevents; playground/test topics are tests too.
    test = (superevent_id.startswith(("MS", "TS"))
            or (is_lvk_source(meta.source) and bool(_TEST_SOURCE.search(meta.source))))
    document = {
        "schema_version": "1.0",
        "id": meta.alert_ivorn(source, local_id(superevent_id, rev)),
        "source": source,
        "source_ivorn": None,
        "messenger": "gravitational_wave",
        "facility": "LVK",
        "instrument": instrument,
        "event_id": superevent_id,
        "revision": rev,
        "alert_type": contract_type,
        "role": "test" if test else "observation",
        "trigger_time": trigger_time,
        "trigger_time_error_s": None,
        "localization": localization,
        "energy": None,
        "far_hz": far_hz,
        "p_value": None,
        "signalness": signalness,
        "data_rights": {"level": "public", "embargo_until": None},
        "provenance": provenance,
        "extra": extra,
    }
    try:
        alert = Alert.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise NormalizationError(f"LVK alert {superevent_id}: {where}: {first['msg']}") from exc
    return alert, files


def _external_coinc(coinc: dict[str, Any], files: list[SkymapFile]) -> dict[str, Any]:
    """external_coinc as sent, its combined sky map stored and replaced by a summary."""
    sent = {k: v for k, v in coinc.items() if k != "combined_skymap"}
    for key in ("time_difference", "time_coincidence_far", "time_sky_position_coincidence_far"):
        if key in sent:
            sent[key] = finite_or_none(sent[key], field=f"external_coinc.{key}")
    kept: dict[str, Any] = _jsonable(sent)
    sky_bytes = _skymap_bytes(coinc.get("combined_skymap"), "external_coinc.combined_skymap")
    kept["combined_skymap"] = None
    if sky_bytes is not None:
        sky_file, sky_map, summary = _skymap(sky_bytes, "external_coinc.combined_skymap")
        files.append(sky_file)
        kept["combined_skymap"] = {"skymap_sha256": sky_file.sha256, "format": sky_file.format,
                                   **summary, "skymap": _skymap_meta(sky_map)}
    return kept


# -- sky maps ----------------------------------------------------------------------


def _skymap_bytes(value: Any, field: str) -> bytes | None:
    """The FITS bytes of a sky map field: Avro bytes, or JSON base64 text."""
    if value is None or value == "":
        return None
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if not isinstance(value, str):
        raise NormalizationError(f"{field}: expected base64 text or bytes, got "
                                 f"{type(value).__name__}")
    try:
        # Whitespace (line-wrapped base64) is harmless; any other stray byte is an error.
        return base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MalformedInput(f"{field}: invalid base64 ({exc}); truncated in transit?") from exc


def _skymap(data: bytes, field: str) -> tuple[SkymapFile, MultiOrderMap, dict[str, float]]:
    """Read a multi-order map: the file to store, the map, and its localization figures."""
    try:
        sky = read_multiorder(data)
    except (MalformedInput, HostileInput) as exc:
        raise type(exc)(f"{field}: {exc.reason}") from exc
    ra, dec = sky.max_position()
    area = sky.area_deg2(0.9)
    file = SkymapFile(data=data, format=_skymap_format(sky), area_90_deg2=area)
    return file, sky, {"area_90_deg2": area, "ra_deg": ra, "dec_deg": dec}


def _skymap_format(sky: MultiOrderMap) -> Literal["multiorder", "flat"]:
    """How the file as received is laid out (LVK sends multi-order; the reader takes both)."""
    return "flat" if str(sky.meta.get("ORDERING", "")).upper() in ("RING", "NESTED") else (
        "multiorder")


def _skymap_meta(sky: MultiOrderMap) -> dict[str, Any]:
    """What the map's header and shape say, for analysts (distances in Mpc)."""
    meta = sky.meta
    summary: dict[str, Any] = _jsonable({
        "creator": meta.get("CREATOR"),
        "software": meta.get("VCSVERS"),
        "distmean_mpc": meta.get("DISTMEAN"),
        "diststd_mpc": meta.get("DISTSTD"),
        "instruments": meta.get("INSTRUME"),
        "max_order": sky.max_order,
        "n_pixels": sky.n_pixels,
        "notes": list(sky.notes),
    })
    return summary


# -- field helpers -----------------------------------------------------------------


def _optional_object(value: Any, field: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise NormalizationError(f"{field}: expected an object or null, got "
                                 f"{type(value).__name__}")
    return value


def _optional_text(value: Any, field: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise NormalizationError(f"{field}: expected text, got {type(value).__name__}")
    return value


def _string_list(value: Any, field: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise NormalizationError(f"{field}: expected a list of names, got {value!r}"[:200])
    return list(value)


def _probabilities(value: Any, field: str) -> dict[str, float | None]:
    """A name -> probability map; NaN becomes null (JSON has no NaN)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise NormalizationError(f"{field}: expected an object of numbers, got "
                                 f"{type(value).__name__}")
    return {str(k): finite_or_none(v, field=f"{field}.{k}") for k, v in value.items()}


def _signalness(classification: Mapping[str, float | None]) -> float | None:
    """1 - P(Terrestrial), the probability of astrophysical origin LVK states; None if absent."""
    terrestrial = classification.get("Terrestrial")
    if terrestrial is None:
        return None
    if not -1e-6 <= terrestrial <= 1 + 1e-6:  # tolerate rounding in the sender's arithmetic
        raise NormalizationError(f"classification.Terrestrial {terrestrial!r} is not a "
                                 "probability")
    return min(max(1.0 - terrestrial, 0.0), 1.0)


def _jsonable(value: Any) -> Any:
    """A JSON value from decoded JSON or Avro: NaN/inf -> None, bytes dropped to their size."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, bytes | bytearray):
        return {"bytes": len(value)}  # unknown binary fields: note them, never inline
    if isinstance(value, str | int | bool) or value is None:
        return value
    return str(value)
