"""SNEWS 2.0: detector tier messages, heartbeats, retractions and coincidence alerts.

SNEWS carries two kinds of JSON message, and this module takes both:

* **Detector messages** on the observation topic, one per detector and
  tier: ``CoincidenceTier`` (a neutrino burst time and p-value),
  ``SignificanceTier`` (p-values per time bin), ``TimingTier`` (neutrino
  arrival times), ``Heartbeat`` (detector ON/OFF) and ``Retraction``.  Each
  observation becomes an Alert with messenger ``neutrino``, the detector as
  facility and no sky position; a heartbeat becomes a :class:`Heartbeat`
  and no alert.
* **Coincidence alerts** from the SNEWS Coincidence System (CS), naming the
  detectors that saw a burst within its window.  These become one Alert
  with facility ``SNEWS`` and the detector list, times and p-values in
  ``extra``.

JSON only: ``snews_pt`` can publish pickled objects, which
:func:`listeners.detect.sniff` refuses before any normalizer runs, and
nothing here ever unpickles.  A ``{"format": ..., "content": ...}`` envelope
(older hop-client) is unwrapped when its content is a JSON object.

Field names
    SNEWS renamed fields over the years; the current name is read first and
    then the older ones: ``id``/``_id``, ``neutrino_time_utc``/
    ``neutrino_time``, ``machine_time_utc``/``machine_time``,
    ``sent_time_utc``/``sent_time``, ``t_bin_width_sec``/``t_bin_width``,
    ``retract_message_uuid``/``retract_message_uid``, ``retract_latest_n``/
    ``N_retract_latest``/``retract_latest``.  The tier comes from ``tier``,
    else from the legacy id ``<detector>_<tier>_<time>`` (``TimeTier``,
    ``SigTier`` and ``HeartBeat`` included), else from the fields present; a
    message without a tier that fits several tiers (snews_pt's "combined"
    input) gives one alert per tier, as snews_pt would have sent them.
    Test and drill flags are read at the top level or inside ``meta``, as
    booleans or as the strings snews_pt sends (``"True"``).

Roles
    ``is_test`` (or a CS ``alert_type`` starting with ``TEST``, or hop-client's
    ``_test`` header) gives role ``test``; otherwise ``is_firedrill`` gives ``drill``; otherwise
    ``observation``.

Event ids and revisions (all derived from the message, so a redelivered
message maps to the same archive key)
    * Observation tiers: the message's ``uuid`` (unique per message, and
      what a Retraction names); without one, its ``id``/``_id``; without
      that, or for a combined message, ``<detector>_<tier>_<time>`` as SNEWS
      builds ids, the time being the machine time, else the trigger time,
      in UTC ISO 8601 with ``Z``.  Revision 0, alert type ``initial``.
    * Retraction naming a message (``retract_message_uuid``): event id = that
      uuid, revision 1, alert type ``retraction``, so it supersedes the
      observation it retracts.  A retraction of "the latest N" names no
      message: event id ``<detector>_Retraction_<time>``, revision 0, and
      ``extra.retracts`` = ``{"detector", "latest_n", "tier"}`` for a stage
      that keeps state to resolve (the CS itself drops every cached message
      of that detector).  A retraction's ``trigger_time`` is its own
      machine/sent time, or the receipt time: the retracted event's time is
      not in the message.
    * Coincidence alerts: event id ``SNEWS-<earliest neutrino time to the
      second>`` (e.g. ``SNEWS-2026-11-21T03:12:40``).  Revision 0 (type
      ``initial``) for the CS's first alert: two detectors, state
      ``COINC_MSG``/``COINC_MSG_STAGGERED`` and no ``-UPDATE`` in its id.
      Any later publication has revision = tenths of a second from the
      earliest neutrino time to the CS ``sent_time`` (at least 1, at most
      1,000,000), so later publications supersede earlier ones whether the
      detector count grew (``COINC_MSG``), stayed (``UPDATE``) or shrank
      (``RETRACTION``); without a usable sent time, ``max(1, detectors - 2)``.
      Type ``retraction`` when the CS state is ``RETRACTION`` and fewer than
      two detectors remain, else ``update``.  Limitation: the CS message
      carries no stable group id, so if a detector with an earlier neutrino
      time joins, or the earliest one is retracted, the event id changes.

Data rights
    Coincidence alerts are public.  Detector tier messages are shared within
    SNEWS only, so they are ``proprietary`` (see :data:`TIER_DATA_RIGHTS`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from alerts_schema import Alert, DataRights, NoLocalization, Provenance
from alerts_schema.errors import NormalizationError, UnknownFormat
from alerts_schema.model import format_utc
from listeners import json_limits
from listeners.base import Heartbeat, MessageMeta, Normalized
from listeners.common import finite_or_none, local_id, parse_flag, parse_utc, per_year_to_hz
from listeners.detect import Format, sniff

STREAM = "snews"
"""Stream name in the IVORNs of SNEWS alerts and in SNEWS heartbeats."""

FACILITY = "SNEWS"
CS_PIPELINE = "SNEWS Coincidence System"
TIERS = ("CoincidenceTier", "SignificanceTier", "TimingTier", "Heartbeat", "Retraction")
TIER_DATA_RIGHTS = DataRights(level="proprietary")
"""Detector messages are shared within SNEWS, never published by it."""
ALERT_DATA_RIGHTS = DataRights(level="public")
"""SNEWS publishes its coincidence alerts."""

MAX_REVISION = 1_000_000  # the Alert contract's limit

_TIER_WORDS = {
    "coincidencetier": "CoincidenceTier",
    "significancetier": "SignificanceTier",
    "sigtier": "SignificanceTier",
    "timingtier": "TimingTier",
    "timetier": "TimingTier",
    "heartbeat": "Heartbeat",
    "retraction": "Retraction",
}
_COMMANDS = ("hard-reset", "test-connection", "get-feedback", "reset-cache", "display-heartbeats")
_INITIAL_STATES = frozenset({"COINC_MSG", "COINC_MSG_STAGGERED", ""})
_NEUTRINO_TIME = ("neutrino_time_utc", "neutrino_time")
_MACHINE_TIME = ("machine_time_utc", "machine_time")
_SENT_TIME = ("sent_time_utc", "sent_time")
_T_BIN_WIDTH = ("t_bin_width_sec", "t_bin_width")
_RETRACT_UUID = ("retract_message_uuid", "retract_message_uid")
_RETRACT_N = ("retract_latest_n", "N_retract_latest", "retract_latest")
_DETECTOR_KEYS = frozenset({
    *_NEUTRINO_TIME, *_MACHINE_TIME, *_RETRACT_UUID, *_RETRACT_N, "detector_status",
    "p_values", "timing_series", "retraction_reason",
})
_CS_KEYS = ("detector_names", "neutrino_times")
# snews_pt writes times as "2022-09-28T01:23:45:059496" in places: a colon before the fraction.
_COLON_FRACTION = re.compile(r"^(.*T\d{2}:\d{2}:\d{2}):(\d+)$")
_PERCENT = re.compile(r"^\s*([0-9.eE+-]+)\s*%\s*$")
_EVERY_YEARS = re.compile(r"every\s+([0-9.eE+-]+)\s*y(?:ea)?rs?", re.IGNORECASE)


# -- routing ----------------------------------------------------------------------

def accepts(fmt: Format, decoded: Any, meta: MessageMeta) -> bool:
    """Whether this module handles the message.

    JSON only.  Anything from a stream whose name starts with ``snews`` that
    decodes to an object (or a list of objects) is taken, so that a broken
    SNEWS message is quarantined with a SNEWS reason; from other streams,
    only content that looks like SNEWS (see :func:`looks_like_snews`).
    """
    if fmt is not Format.JSON:
        return False
    documents = decoded if isinstance(decoded, list) else [decoded]
    if not documents:
        return False
    if meta.source.lower().startswith("snews"):
        return all(isinstance(d, dict) for d in documents)
    return all(looks_like_snews(d) for d in documents)


def looks_like_snews(document: Any) -> bool:
    """True for a JSON object shaped like a SNEWS detector message or CS alert."""
    try:
        document = _unwrap(document)
    except NormalizationError:
        return False
    if not isinstance(document, dict):
        return False
    if all(key in document for key in _CS_KEYS):
        return True
    if not isinstance(document.get("detector_name"), str):
        return False
    if document.get("tier") in TIERS:
        return True
    if _DETECTOR_KEYS.intersection(document):
        return True
    return _tier_from_id(document) is not None


def handle(data: bytes, decoded: Any, meta: MessageMeta) -> Normalized:
    """The registry's entry point: normalize the JSON the router already decoded."""
    return normalize_decoded(decoded, meta)


# -- normalizing ------------------------------------------------------------------

def normalize(data: bytes, meta: MessageMeta) -> Normalized:
    """Alerts and heartbeats from one raw SNEWS message.

    Parameters
    ----------
    data
        The message as received: JSON (a pickle raises
        :class:`~alerts_schema.errors.HostileInput` unread).
    meta
        Where and when it was received.

    Raises
    ------
    InputError
        A subclass saying why the message cannot be used.
    """
    fmt = sniff(data)
    if fmt is not Format.JSON:
        raise UnknownFormat(f"SNEWS messages are JSON; got {fmt.value}")
    return normalize_decoded(json_limits.loads(data), meta)


def normalize_decoded(decoded: Any, meta: MessageMeta) -> Normalized:
    """Like :func:`normalize`, for JSON already decoded: one message or a list of them."""
    documents = decoded if isinstance(decoded, list) else [decoded]
    alerts: list[Alert] = []
    heartbeats: list[Heartbeat] = []
    for document in documents:
        result = _normalize_document(_unwrap(document), meta)
        alerts.extend(result.alerts)
        heartbeats.extend(result.heartbeats)
    return Normalized(alerts=tuple(alerts), heartbeats=tuple(heartbeats))


def _normalize_document(doc: Any, meta: MessageMeta) -> Normalized:
    if not isinstance(doc, dict):
        raise NormalizationError(f"SNEWS message must be a JSON object, got {type(doc).__name__}")
    if all(key in doc for key in _CS_KEYS):
        return Normalized(alerts=(coincidence_alert(doc, meta),))
    tiers, explicit = _tiers(doc)
    alerts: list[Alert] = []
    heartbeats: list[Heartbeat] = []
    for tier in tiers:
        if tier == "Heartbeat":
            heartbeats.append(heartbeat(doc, meta))
        elif tier == "Retraction":
            alerts.append(retraction_alert(doc, meta))
        else:
            alerts.append(tier_alert(doc, tier, meta, explicit=explicit))
    return Normalized(alerts=tuple(alerts), heartbeats=tuple(heartbeats))


def heartbeat(doc: Mapping[str, Any], meta: MessageMeta) -> Heartbeat:
    """The :class:`Heartbeat` of a SNEWS heartbeat message (time: machine, sent, or receipt)."""
    detector = _detector(doc)
    time = _optional_time(doc, _MACHINE_TIME) or _optional_time(doc, _SENT_TIME)
    status = doc.get("detector_status")
    if status is not None and not isinstance(status, str):
        raise NormalizationError(f"detector_status: expected a string, got {status!r}")
    return Heartbeat(stream=STREAM, detector=detector, time=time or meta.received_at,
                     status=status.strip() if status else None)


def tier_alert(doc: Mapping[str, Any], tier: str, meta: MessageMeta, *,
               explicit: bool = True) -> Alert:
    """The Alert of one detector observation (Coincidence, Significance or Timing tier).

    Parameters
    ----------
    doc
        The SNEWS message.
    tier
        One of ``CoincidenceTier``, ``SignificanceTier``, ``TimingTier``.
    meta
        Receipt metadata.
    explicit
        Whether the message named its tier; a combined message (tier
        inferred, possibly several) gets per-tier synthesized event ids.
    """
    detector = _detector(doc)
    extra: dict[str, Any] = {"snews_tier": tier}
    if tier == "CoincidenceTier":
        trigger_time = _required_time(doc, _NEUTRINO_TIME, tier)
    elif tier == "TimingTier":
        trigger_time = _timing_time(doc, extra)
    else:
        trigger_time = (_optional_time(doc, _NEUTRINO_TIME) or _optional_time(doc, _MACHINE_TIME)
                        or _required_time(doc, _SENT_TIME, tier))
        p_values = doc.get("p_values")
        if p_values is not None:
            extra["p_values"] = _probabilities(p_values, "p_values")
        width = finite_or_none(_first(doc, _T_BIN_WIDTH), field="t_bin_width_sec")
        if width is not None:
            if width < 0:
                raise NormalizationError(f"t_bin_width_sec: {width} s is negative")
            extra["t_bin_width_s"] = width
    p_value = _probability(doc.get("p_val"), "p_val")
    event_id = _tier_event_id(doc, detector, tier, trigger_time, explicit=explicit)
    extra.update(_common_extra(doc))
    return _build_alert(
        id=meta.alert_ivorn(STREAM, local_id(event_id, 0)),
        source=meta.source, messenger="neutrino", facility=detector,
        event_id=event_id, revision=0, alert_type="initial", role=_role(doc, meta),
        trigger_time=trigger_time, received_time=meta.received_at,
        localization=NoLocalization(), p_value=p_value,
        data_rights=TIER_DATA_RIGHTS, extra=extra,
    )


def retraction_alert(doc: Mapping[str, Any], meta: MessageMeta) -> Alert:
    """The retraction Alert of a SNEWS Retraction message (rules in the module docstring)."""
    detector = _detector(doc)
    time = (_optional_time(doc, _MACHINE_TIME) or _optional_time(doc, _SENT_TIME)
            or meta.received_at)
    target = _first(doc, _RETRACT_UUID)
    reason = doc.get("retraction_reason")
    extra: dict[str, Any] = {"snews_tier": "Retraction", **_common_extra(doc)}
    if reason is not None:
        extra["retraction_reason"] = reason
    if target is not None:
        if not isinstance(target, str) or not target.strip():
            raise NormalizationError(f"retract_message_uuid: expected a message uuid, "
                                     f"got {target!r}")
        event_id, revision = target.strip(), 1
        extra["retracts"] = {"uuid": event_id}
    else:
        count = _first(doc, _RETRACT_N)
        latest_n: int | None
        if isinstance(count, bool):
            latest_n = 1 if count else None
        elif isinstance(count, int) and count >= 0:
            latest_n = count or None  # 0 names nothing: the CS drops all of the detector's
        elif count is None:
            latest_n = None
        else:
            raise NormalizationError(f"retract_latest_n: expected a count, got {count!r}")
        event_id, revision = f"{detector}_Retraction_{format_utc(time)}", 0
        extra["retracts"] = {"detector": detector, "latest_n": latest_n,
                             "tier": doc.get("which_tier")}
    _check_event_id(event_id)
    return _build_alert(
        id=meta.alert_ivorn(STREAM, local_id(event_id, revision)),
        source=meta.source, messenger="neutrino", facility=detector,
        event_id=event_id, revision=revision, alert_type="retraction", role=_role(doc, meta),
        trigger_time=time, received_time=meta.received_at,
        localization=NoLocalization(), data_rights=TIER_DATA_RIGHTS, extra=extra,
    )


def coincidence_alert(doc: Mapping[str, Any], meta: MessageMeta) -> Alert:
    """The Alert of a SNEWS Coincidence System alert (rules in the module docstring)."""
    names = doc.get("detector_names")
    times = doc.get("neutrino_times")
    if not isinstance(names, list) or not names or not all(
            isinstance(n, str) and n.strip() for n in names):
        raise NormalizationError(f"detector_names: expected a list of detector names, "
                                 f"got {names!r}")
    if not isinstance(times, list) or len(times) != len(names):
        raise NormalizationError("neutrino_times: expected one time per detector "
                                 f"({len(names)}), got {times!r}")
    parsed = [_snews_time(t, field=f"neutrino_times[{i}]") for i, t in enumerate(times)]
    earliest = min(parsed)
    ident = _first(doc, ("id", "_id"))
    ident = ident if isinstance(ident, str) else ""
    raw_type = doc.get("alert_type")
    raw_type = raw_type.strip() if isinstance(raw_type, str) else ""
    is_test = raw_type.upper().startswith("TEST") or parse_flag(doc.get("is_test"),
                                                                 field="is_test")
    state = re.sub(r"^TEST\b", "", raw_type.upper()).strip()

    if state in _INITIAL_STATES and len(names) == 2 and "-UPDATE" not in ident.upper():
        revision = 0
    else:
        sent = _cs_sent_time(doc, ident)
        step = (sent - earliest) // timedelta(milliseconds=100) if sent else 0
        revision = (min(step, MAX_REVISION) if step >= 1
                    else max(1, len(names) - 2))
    if revision == 0:
        alert_type = "initial"
    elif state == "RETRACTION" and len(names) < 2:
        alert_type = "retraction"
    else:
        alert_type = "update"

    p_value, far_hz = _false_alarm(_first(doc, ("False Alarm Prob", "false_alarm_prob",
                                               "false_alarm_probability")))
    extra: dict[str, Any] = {
        "detector_names": names,
        "neutrino_times": times,
        "p_values": _probabilities(_first(doc, ("p_values", "p_vals")) or [], "p_values"),
        "p_values_average": finite_or_none(
            _first(doc, ("p_values average", "p_values_average", "p_vals average",
                         "p_val_avg")), field="p_values average"),
        "sub_list_number": _first(doc, ("sub list number", "sub_list_number")),
        "server_tag": doc.get("server_tag"),
        "snews_id": ident or None,
        "snews_alert_type": raw_type or None,
        "sent_time": _first(doc, _SENT_TIME),
        "false_alarm_prob": _first(doc, ("False Alarm Prob", "false_alarm_prob",
                                         "false_alarm_probability")),
    }
    event_id = f"SNEWS-{earliest.strftime('%Y-%m-%dT%H:%M:%S')}"
    return _build_alert(
        id=meta.alert_ivorn(STREAM, local_id(event_id, revision)),
        source=meta.source, messenger="neutrino", facility=FACILITY,
        event_id=event_id, revision=revision, alert_type=alert_type,
        role="test" if is_test else _role(doc, meta),
        trigger_time=earliest, received_time=meta.received_at,
        localization=NoLocalization(), far_hz=far_hz, p_value=p_value,
        data_rights=ALERT_DATA_RIGHTS, provenance=Provenance(pipeline=CS_PIPELINE),
        extra=extra,
    )


# -- helpers ----------------------------------------------------------------------

def _unwrap(document: Any) -> Any:
    """The message inside an old hop-client ``{"format", "content"}`` envelope, if any."""
    if (isinstance(document, dict) and set(document) == {"format", "content"}
            and str(document["format"]).lower() in ("blob", "json")):
        content = document["content"]
        if isinstance(content, str):
            # Decoded as JSON or not at all: a string holding anything else
            # (a pickle, say) is refused, never interpreted.
            try:
                content = json_limits.loads(content.encode("utf-8"))
            except Exception as exc:
                raise NormalizationError("hop envelope content is not JSON") from exc
        return content
    return document


def _first(doc: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    """The value of the first of ``keys`` present with a non-null value (new names first)."""
    for key in keys:
        value = doc.get(key)
        if value is not None:
            return value
    return None


def _meta_flag(doc: Mapping[str, Any], key: str) -> bool:
    meta = doc.get("meta")
    value = doc.get(key)
    if value is None and isinstance(meta, dict):
        value = meta.get(key)
    return parse_flag(value, field=key)


_TEST_TOPIC = re.compile(r"test", re.IGNORECASE)
_DRILL_TOPIC = re.compile(r"fire.?drill|drill", re.IGNORECASE)


def _role(doc: Mapping[str, Any], meta: MessageMeta | None = None) -> str:
    """test, drill or observation, from the message's flags and the topic's name.

    SNEWS runs its fire drills on their own topics (``snews.alert-firedrill``);
    a drill or test topic marks every message on it, whatever the flags say.
    A test that is also a drill is still a test: tests never mix with anything.
    """
    topic = meta.source if meta is not None else ""
    if _meta_flag(doc, "is_test") or _TEST_TOPIC.search(topic) or _hop_test(meta):
        return "test"
    if _meta_flag(doc, "is_firedrill") or _DRILL_TOPIC.search(topic):
        return "drill"
    return "observation"


def _hop_test(meta: MessageMeta | None) -> bool:
    """hop-client's ``_test`` header (``hop publish --test``, ``write(..., test=True)``),
    which the Kafka listener keeps in the transport details."""
    if meta is None:
        return False
    headers = meta.transport.get("kafka", {}).get("headers", {})
    return isinstance(headers, Mapping) and headers.get("_test") == "true"


def _detector(doc: Mapping[str, Any]) -> str:
    name = doc.get("detector_name")
    if not isinstance(name, str) or not name.strip():
        raise NormalizationError(f"detector_name: expected a detector name, got {name!r}")
    name = name.strip()
    if len(name) > 128:
        raise NormalizationError(f"detector_name: {len(name)} characters (limit 128)")
    return name


def _tier_word(value: Any) -> str | None:
    return _TIER_WORDS.get(value.strip().lower()) if isinstance(value, str) else None


def _tier_from_id(doc: Mapping[str, Any]) -> str | None:
    """The tier named in a legacy id ``<detector>_[PRE-SN_]<tier>_<time>``."""
    ident = _first(doc, ("id", "_id"))
    if not isinstance(ident, str):
        return None
    for token in ident.split("_"):
        if tier := _tier_word(token):
            return tier
    return None


def _tiers(doc: Mapping[str, Any]) -> tuple[tuple[str, ...], bool]:
    """The tiers a detector message stands for, and whether the message named its tier."""
    if "tier" in doc:
        tier = _tier_word(doc["tier"])
        if tier is None:
            raise NormalizationError(f"tier: {doc['tier']!r} is not a SNEWS tier "
                                     f"({', '.join(TIERS)})")
        return (tier,), True
    if tier := _tier_from_id(doc):
        return (tier,), True
    ident = str(_first(doc, ("id", "_id")) or "").lower()
    if command := next((c for c in _COMMANDS if c in ident), None):
        raise NormalizationError(f"SNEWS command {command!r} carries no observation")
    if _first(doc, _RETRACT_UUID) is not None or _first(doc, _RETRACT_N) is not None:
        return ("Retraction",), False
    tiers = []
    if _first(doc, _NEUTRINO_TIME) is not None:
        tiers.append("CoincidenceTier")
    if doc.get("p_values") is not None and _first(doc, _T_BIN_WIDTH) is not None:
        tiers.append("SignificanceTier")
    if doc.get("timing_series") is not None:
        tiers.append("TimingTier")
    if doc.get("detector_status") is not None:
        tiers.append("Heartbeat")
    if not tiers:
        raise NormalizationError(
            "SNEWS message names no tier and has none of neutrino_time_utc, p_values with "
            "t_bin_width_sec, timing_series, detector_status or a retraction field")
    return tuple(tiers), False


def _tier_event_id(doc: Mapping[str, Any], detector: str, tier: str, trigger_time: datetime,
                   *, explicit: bool) -> str:
    event_id: Any = None
    if explicit:
        event_id = _first(doc, ("uuid", "id", "_id"))
        if event_id is not None and (not isinstance(event_id, str) or not event_id.strip()):
            raise NormalizationError(f"uuid/id: expected a message id, got {event_id!r}")
    if event_id is None:
        time = _optional_time(doc, _MACHINE_TIME) or trigger_time
        event_id = f"{detector}_{tier}_{format_utc(time)}"
    ident: str = event_id.strip()
    _check_event_id(ident)
    return ident


def _check_event_id(event_id: str) -> None:
    if len(event_id) > 200:  # leaves room for "-<revision>" in the IVORN's local id
        raise NormalizationError(f"SNEWS message id of {len(event_id)} characters (limit 200)")


def _snews_time(value: Any, *, field: str) -> datetime:
    if isinstance(value, str) and (match := _COLON_FRACTION.match(value.strip())):
        value = f"{match.group(1)}.{match.group(2)}"
    return parse_utc(value, field=field)


def _optional_time(doc: Mapping[str, Any], keys: tuple[str, ...]) -> datetime | None:
    for key in keys:
        value = doc.get(key)
        if value is not None:
            return _snews_time(value, field=key)
    return None


def _required_time(doc: Mapping[str, Any], keys: tuple[str, ...], tier: str) -> datetime:
    time = _optional_time(doc, keys)
    if time is None:
        raise NormalizationError(f"{tier} message without {' or '.join(keys)}")
    return time


def _timing_time(doc: Mapping[str, Any], extra: dict[str, Any]) -> datetime:
    """A TimingTier's trigger time: its neutrino time, else its earliest absolute arrival."""
    series = doc.get("timing_series")
    if not isinstance(series, list):
        raise NormalizationError(f"timing_series: expected a list, got {type(series).__name__}")
    extra["timing_series_count"] = len(series)
    if series:
        extra["timing_series_first"] = series[0]
        extra["timing_series_last"] = series[-1]
    neutrino_time = _optional_time(doc, _NEUTRINO_TIME)
    if neutrino_time is not None:
        return neutrino_time
    if not series:
        raise NormalizationError("TimingTier message with an empty timing_series and no "
                                 "neutrino_time_utc")
    if not all(isinstance(t, str) for t in series):
        raise NormalizationError("TimingTier timing_series holds relative times but the "
                                 "message has no neutrino_time_utc to anchor them")
    # Same-shaped ISO strings sort as times do: parse one, not a whole burst of them.
    if len({len(t) for t in series}) == 1:
        return _snews_time(min(series), field="timing_series")
    return min(_snews_time(t, field="timing_series") for t in series)


def _probability(value: Any, field: str) -> float | None:
    number = finite_or_none(value, field=field)
    if number is not None and not 0.0 <= number <= 1.0:
        raise NormalizationError(f"{field}: {number} is not a probability in [0, 1]")
    return number


def _probabilities(values: Any, field: str) -> list[float | None]:
    if not isinstance(values, list):
        raise NormalizationError(f"{field}: expected a list, got {type(values).__name__}")
    return [_probability(v, f"{field}[{i}]") for i, v in enumerate(values)]


def _common_extra(doc: Mapping[str, Any]) -> dict[str, Any]:
    """SNEWS bookkeeping kept as sent: ids, times, flags, schema version, attached meta."""
    keys = {"snews_id": ("id", "_id"), "uuid": ("uuid",), "machine_time": _MACHINE_TIME,
            "sent_time": _SENT_TIME, "schema_version": ("schema_version",),
            "is_pre_sn": ("is_pre_sn",), "meta": ("meta",)}
    return {name: value for name, names in keys.items()
            if (value := _first(doc, names)) is not None}


def _cs_sent_time(doc: Mapping[str, Any], ident: str) -> datetime | None:
    """When the CS published the alert: ``sent_time``, else the time in its id, else None."""
    candidates = [_first(doc, _SENT_TIME)]
    if ident:
        candidates.append(ident.split()[-1])
    for value in candidates:
        if value is None:
            continue
        try:
            return _snews_time(value, field="sent_time")
        except NormalizationError:
            continue  # the CS test alert has "XXXXXXX" here
    return None


def _false_alarm(value: Any) -> tuple[float | None, float | None]:
    """(false alarm probability, false alarm rate in Hz) from the CS's ``False Alarm Prob``.

    The CS has written it as a fraction, as ``"13.96%"``, as ``"Would happen
    every 1.00e+02 year"`` (a recurrence time) and as ``"N/A"``.
    """
    if isinstance(value, bool) or value is None:
        return None, None
    if isinstance(value, int | float):
        number = float(value)
        return (number if math.isfinite(number) and 0.0 <= number <= 1.0 else None), None
    if not isinstance(value, str):
        return None, None
    try:
        if match := _PERCENT.match(value):
            fraction = float(match.group(1)) / 100.0
            return (fraction if 0.0 <= fraction <= 1.0 else None), None
        if match := _EVERY_YEARS.search(value):
            years = float(match.group(1))
            if math.isfinite(years) and years > 0:
                return None, per_year_to_hz(1.0 / years)
    except ValueError:
        pass  # a malformed figure is kept in extra, not guessed at
    return None, None


def _build_alert(**fields: Any) -> Alert:
    """An Alert from these fields; a value the contract refuses becomes a NormalizationError."""
    try:
        return Alert(schema_version="1.0", **fields)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'alert'}: {e['msg']}"
                             for e in exc.errors()[:5])
        raise NormalizationError(f"SNEWS message gives values the Alert contract refuses: "
                                 f"{problems}") from exc


# -- what the cross-match needs from this stream ----------------------------------------

def feeds_detector_status(alert: Alert) -> bool:
    """True for an alert whose N-fold rate depends on which SN detectors are ON."""
    return alert.messenger == "neutrino" and alert.source.startswith("snews")


def detector_status(health: Iterable[Mapping[str, Any]]) -> dict[str, bool]:
    """Which SNEWS detectors are ON, from the archive's ``stream_health`` rows
    (``stream``, ``detector``, ``heartbeat_status``) that their heartbeats keep."""
    return {row["detector"]: (row["heartbeat_status"] or "").upper() == "ON"
            for row in health if row["stream"].startswith("snews") and row["detector"]}

