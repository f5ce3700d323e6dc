"""Detector triggers: a neutrino telescope's own online alerts (``trigger.schema.json``).

A trigger arrives as JSON by ``POST /api/v1/triggers`` or on the
``detector.triggers`` Kafka topic.  It is validated against
``alerts_schema/trigger.schema.json`` first (violations raise
:class:`~alerts_schema.errors.SchemaValidationError` listing each one with its JSON
path), then becomes one Alert:

* messenger ``neutrino``; facility = ``detector``, instrument = ``instrument``;
* localization: a point at (``ra_deg``, ``dec_deg``) with the 90% error
  radius (containment 0.9); no localization for a retraction that gives no
  position;
* energy from ``energy_gev``/``energy_min_gev``/``energy_max_gev``;
  ``far_hz`` as given; signalness = ``p_astro``;
* role ``observation`` when ``real`` is true, else ``test``;
* data rights as the trigger states them, else **public**: the collaboration
  decides what it sends, and a trigger that must stay internal says
  ``{"level": "embargoed", "embargo_until": ...}`` or ``proprietary``
  rather than the broker guessing an embargo length;
* provenance from ``pipeline``, ``pipeline_version``, ``reco_method``, ``cuts``;
* everything else the trigger says (type, multiplicity, flavour, neutrino
  type, 50% radius, galactic l/b, reconstruction quality, neutrino
  probability, ranking, publisher, contact, sent time) in ``extra``.

Event id and revision
    The event id is ``<detector>:<event_id>`` (detectors number their events
    independently); the revision is the trigger's ``revision`` (default 0).
    The alert's ``source`` is ``detector`` whichever transport carried it
    (HTTP or the ``detector.triggers`` topic; the transport is recorded with
    the archived row), so the same trigger sent both ways is one alert.  A
    detector that re-sends a trigger with better reconstruction raises
    ``revision``; the alert type is ``initial`` for revision 0 and ``update``
    above.  ``"retraction": true`` (with a revision of at least 1, as the
    schema requires) gives alert type ``retraction``.  The alert IVORN is
    ``ivo://<authority>/detector#<detector>:<event_id>-<revision>``.

Control characters
    No string of a trigger (value or key) may hold a C0 control character
    other than tab, newline and carriage return, nor DEL or a lone surrogate:
    such a trigger is refused with the JSON path of each (quarantined), on
    every backend alike.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from alerts_schema import (
    Alert,
    DataRights,
    Energy,
    NoLocalization,
    PointLocalization,
    Provenance,
    validation_errors,
)
from alerts_schema.errors import NormalizationError, SchemaValidationError, UnknownFormat
from listeners import json_limits
from listeners.base import MessageMeta, Normalized
from listeners.common import checked_ra, local_id, parse_utc
from listeners.detect import Format, sniff

STREAM = "detector"
"""Stream name in the IVORNs of detector-trigger alerts."""

SOURCES = ("detector", "detector.triggers")
"""Stream names (``MessageMeta.source``) that carry only detector triggers."""

SCHEMA_ID = "https://mmbroker.invalid/schemas/trigger.schema.json"
CONTAINMENT_90 = 0.9
DEFAULT_DATA_RIGHTS = DataRights(level="public")

# Fields that only a trigger document has together.
_SIGNATURE = frozenset({"event_id", "detector", "real", "time"})
_EXTRA_FIELDS = ("trigger_type", "multiplicity", "flavor", "neutrino_type",
                 "error_radius_50_deg", "gal_l_deg", "gal_b_deg", "reco_quality",
                 "p_neutrino", "ranking", "publisher", "contact", "sent_time")


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
"""Characters no trigger string may hold: C0 controls but tab, newline and return; DEL;
lone surrogates.  PostgreSQL refuses NUL in text (and a lone surrogate is no UTF-8) while
SQLite stores both, so they are refused here, the same on every backend."""


def control_character_errors(document: Any, path: str = "$") -> list[str]:
    """One line per string (value or key) of ``document`` holding a control character,
    each with its JSON path; the character is named by code point, never echoed."""
    errors: list[str] = []
    if isinstance(document, str):
        found = _CONTROL.search(document)
        if found:
            errors.append(f"{path}: control character U+{ord(found.group()):04X} is not "
                          "allowed in a trigger string")
    elif isinstance(document, dict):
        for key, value in document.items():
            shown = json.dumps(key)[1:-1]  # escapes what it must; the path stays printable
            if _CONTROL.search(key):
                errors.append(f"{path}: key \"{shown}\" holds a control character")
            errors += control_character_errors(value, f"{path}.{shown}")
    elif isinstance(document, list):
        for i, value in enumerate(document):
            errors += control_character_errors(value, f"{path}[{i}]")
    return errors


def looks_like_trigger(document: Any) -> bool:
    """True for a JSON object naming this schema, or holding its identifying fields."""
    return isinstance(document, dict) and (
        document.get("$schema") == SCHEMA_ID or document.keys() >= _SIGNATURE)


def accepts(fmt: Format, decoded: Any, meta: MessageMeta) -> bool:
    """Whether this module handles the message.

    JSON only: any object (or list of objects) from the ``detector`` or
    ``detector.triggers`` streams, so that a malformed trigger is refused
    with the schema's reasons; from other streams, an object (or a list of
    them) that :func:`looks_like_trigger`.
    """
    if fmt is not Format.JSON:
        return False
    documents = decoded if isinstance(decoded, list) else [decoded]
    if not documents:
        return False
    if meta.source in SOURCES:
        return all(isinstance(d, dict) for d in documents)
    return all(looks_like_trigger(d) for d in documents)


def handle(data: bytes, decoded: Any, meta: MessageMeta) -> Normalized:
    """The registry's entry point: normalize the JSON the router already decoded."""
    return normalize_decoded(decoded, meta)


def normalize(data: bytes, meta: MessageMeta) -> Normalized:
    """The Alert(s) of one raw trigger message: a JSON object, or a list of them.

    Raises
    ------
    SchemaValidationError
        When a trigger breaks ``trigger.schema.json``.
    InputError
        A subclass, for bytes that are not JSON (pickles are refused unread).
    """
    fmt = sniff(data)
    if fmt is not Format.JSON:
        raise UnknownFormat(f"detector triggers are JSON; got {fmt.value}")
    return normalize_decoded(json_limits.loads(data), meta)


def normalize_decoded(decoded: Any, meta: MessageMeta) -> Normalized:
    """Like :func:`normalize`, for JSON already decoded."""
    documents = decoded if isinstance(decoded, list) else [decoded]
    return Normalized(alerts=tuple(trigger_alert(doc, meta) for doc in documents))


def trigger_alert(document: Any, meta: MessageMeta) -> Alert:
    """Validate one trigger document and turn it into an Alert.

    Parameters
    ----------
    document
        The decoded trigger (a JSON object following ``trigger.schema.json``).
    meta
        Receipt metadata; ``meta.source`` becomes the alert's source.

    Raises
    ------
    SchemaValidationError
        Listing every violation of the trigger schema.
    """
    errors = control_character_errors(document) or validation_errors("trigger", document)
    if errors:
        raise SchemaValidationError("trigger", errors)
    doc: Mapping[str, Any] = document
    # Detectors number their events independently: the key carries the detector.
    event_id = f"{doc['detector']}:{doc['event_id']}"
    revision: int = int(doc.get("revision", 0))
    retraction = bool(doc.get("retraction", False))
    alert_type = "retraction" if retraction else "initial" if revision == 0 else "update"

    localization: PointLocalization | NoLocalization
    if doc.get("ra_deg") is not None and doc.get("dec_deg") is not None \
            and doc.get("error_radius_90_deg") is not None:
        localization = PointLocalization(
            ra_deg=checked_ra(doc["ra_deg"], field="ra_deg"), dec_deg=float(doc["dec_deg"]),
            error_radius_deg=float(doc["error_radius_90_deg"]), containment=CONTAINMENT_90)
    else:  # only a retraction may omit the position (the schema enforces it)
        localization = NoLocalization()

    energy_fields = {"best_gev": doc.get("energy_gev"), "min_gev": doc.get("energy_min_gev"),
                     "max_gev": doc.get("energy_max_gev")}
    energy = (Energy(**energy_fields)
              if any(v is not None for v in energy_fields.values()) else None)

    prov_fields = {k: doc.get(k) for k in ("pipeline", "pipeline_version", "reco_method", "cuts")}
    provenance = Provenance(**prov_fields) if any(prov_fields.values()) else None

    rights = doc.get("data_rights")
    data_rights = DEFAULT_DATA_RIGHTS if rights is None else DataRights(
        level=rights["level"],
        embargo_until=(parse_utc(rights["embargo_until"], field="data_rights.embargo_until")
                       if rights.get("embargo_until") else None))

    extra = {k: doc[k] for k in _EXTRA_FIELDS if doc.get(k) is not None}
    try:
        return Alert(
            schema_version="1.0",
            id=meta.alert_ivorn(STREAM, local_id(event_id, revision)),
            source=STREAM, messenger="neutrino", facility=doc["detector"],
            instrument=doc.get("instrument"), event_id=event_id, revision=revision,
            alert_type=alert_type, role="observation" if doc["real"] else "test",
            trigger_time=parse_utc(doc["time"], field="time"),
            trigger_time_error_s=doc.get("time_precision_s"),
            received_time=meta.received_at, localization=localization, energy=energy,
            far_hz=doc.get("far_hz"), signalness=doc.get("p_astro"),
            data_rights=data_rights, provenance=provenance, extra=extra,
        )
    except ValidationError as exc:  # the trigger schema is stricter, so a bug if reached
        raise NormalizationError(f"trigger {event_id!r} gives values the Alert contract "
                                 f"refuses: {exc.errors()[:3]}") from exc
