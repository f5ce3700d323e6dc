"""GCN Kafka JSON notices (the unified ``gcn-schema``) and the ``gcn.heartbeat`` topic.

Input: one JSON object per Kafka message on a ``gcn.notices.*`` topic (``igwn.gwalert``
has its own normalizer), on ``gcn.heartbeat``, or a file (``meta.source == "file"``)
whose ``$schema`` names a schema at gcn.nasa.gov/schema or github.com/nasa-gcn/gcn-schema.
Output: :class:`~listeners.base.Normalized` holding one Alert per notice (one per target
for BOOM), any inline HEALPix file, or one :class:`~listeners.base.Heartbeat`.

Almost nothing in a GCN notice is required, so every field is optional here except a
time to place the event: ``trigger_time``, else ``observation_start``, else
``alert_datetime`` (times without a zone are UTC, as GCN means them).

Stream name
    ``meta.source`` (the Kafka topic).  For files it is derived from the ``$schema``
    path, segment by segment, lower-cased and CamelCase split with ``_``:
    ``.../gcn/notices/swift/bat/Guano.schema.json`` -> ``gcn.notices.swift.bat.guano``.
    The schema path is not always the topic name (IceCube's ``single_neutrino_alerts``
    schema travels on ``gcn.notices.icecube.gold_bronze_track_alerts``); no alias table
    is kept, so the derivation stays predictable.  A file without ``$schema`` is named
    from ``mission`` and the ``instrument`` words (``Swift`` + ``BAT-GUANO`` ->
    ``gcn.notices.swift.bat.guano``).  The heartbeat file is ``gcn.heartbeat``.

Event id
    The first entry of ``id`` (a string or a list of trigger ids, e.g. Fermi's
    ``["745121685", "bn240812094"]`` -> ``745121685``; all ids stay in ``extra``), else
    ``trigger_number``, ``obs_id``, ``ref_ID`` (the GW superevent an IceCube search
    follows), else ``event_name`` + ``@`` + trigger time (a source name such as a blazar
    is not an event by itself), else the trigger time.

Revision (a later notice of an event has a higher revision)
    1. ``record_number`` n, GCN's per-trigger sequence 1, 2, 3...: revision n - 1
       (a 0 is taken as 0).
    2. ``icecube.lvk_nu_track_search``: the LVK notice number N in its ``reference``
       (``S230914ak-2-Preliminary``): revision N - 1.
    3. Otherwise from ``alert_type``: initial or absent -> 0; update and subsequent ->
       1 + whole seconds from ``trigger_time`` to ``alert_datetime`` (clamped to
       1 .. 999 999; 1 when either is missing), so successive updates sort by issue time;
       retraction -> 1 000 000, the contract's maximum, so it supersedes every update.
    Two notices of one event that this rule cannot tell apart (two updates without
    ``record_number`` or ``alert_datetime``, or repeated BOOM alerts for one object)
    share a revision; the archive then quarantines the second as a conflict rather
    than lose either.

Alert type
    ``retraction`` -> retraction, ``update`` and ``subsequent`` -> update, ``initial``
    -> initial; absent -> initial for revision 0, else update.  Case is ignored; any
    other value is an error.  GCN's core schema defines ``subsequent`` as a later alert
    in the same sequence (a recurrent detection of the source, under the same ``id``),
    so it must supersede the initial notice rather than collide with it.

Role
    ``alert_tense`` test, injection or commanded (a ground-commanded trigger is not a
    sky event) -> ``test``; so is any notice whose topic or schema path has a ``test``
    segment (``burstcube/test.schema.json``).  planned -> ``prediction``; HEASARC
    archive notices (new data in the archive, not an event) -> ``utility``; current,
    archival and absent -> ``observation``.  Any other tense is an error, so a test can
    never pass as an observation.

Localization
    ``ra``/``dec`` (ICRS deg; an ra outside [0, 360) or |dec| > 90 is an error, never
    wrapped; a NaN or 1e999 in them or in an error is an error too) with
    ``ra_dec_error``: a number is a circle radius; ``[a]`` a circle; ``[a, b]`` or
    ``[a, b, pa]`` an ellipse (pa east of north, default 0; axes given minor-first are
    swapped and pa turned by 90 deg, as CHIME sends them).  Older ``ra_uncertainty`` /
    ``dec_uncertainty`` lists (with ``uncertainty_shape`` circle) give a circle; MAXI's
    ``rectangular_error_corners`` the smallest circle about the position that holds all
    corners; KM3NeT's ``src_error_50`` a 50 % circle.  ``containment_probability``
    defaults to 0.9 (the GCN schema's default).  A position without any error is a
    circle of radius 0 (the contract's "exact position"), flagged in ``extra``.
    ``lvk_nu_track_search`` nests its positions: its ``most_probable_direction`` (or
    the most significant coincident event) with the error region of that most
    significant event; no coincident event, no position.  An inline ``healpix_file``
    that the sky map reader reads is returned as a :class:`SkymapFile`, named in
    ``extra["healpix_file"]``, and is the localization, what matching uses: a
    ``skymap`` localization with the map's 90% area whose ``ra_deg``/``dec_deg`` are
    the notice's own position when it states one (the summary point shown to people;
    else the map's densest pixel).  The region the notice states about that position
    (its circle or ellipse) is kept whole in ``extra["position"]`` (issue 16, item 1:
    a Fermi GBM notice's circle stood in for its map and a GW x GBM overlap came out
    57x too low).  A map the reader refuses is noted in ``extra["healpix_file"]`` and
    the stated position stays the localization.  A ``healpix_url`` naming a FITS file,
    with no inline map as the localization, is recorded in ``extra["skymap_url"]``
    (:func:`listeners.common.skymap_url`; the field itself stays in ``extra`` too): a
    normalizer does no I/O, so the broker fetches the map afterwards and makes it the
    localization then (:mod:`broker.runtime.mapfetch`, issue 16 item 2).

Units
    ``far`` is Hz in GCN JSON (unlike yr^-1 in some VOEvents) and kept as is.
    Energy bands (``rate_energy_range``, ``image_energy_range``, ``spectral_band``:
    keV unless ``spectral_band_units`` says MHz or nm; ``flux_spectral_band`` in
    ``flux_spectral_unit``) become GeV (keV * 1e-6; photon frequency and wavelength
    converted with h and hc).  IceCube ``nu_energy`` is TeV, KM3NeT
    ``energy_measured`` and IceCube ``sensitive_energy_range`` GeV.  ``p_astro`` ->
    signalness; ``p_value`` or IceCube's ``pval_generic`` (else ``pval_bayesian``) ->
    p_value.

Messenger, facility, instrument
    From ``mission`` (canonical spelling from a table, else as sent), else the topic or
    schema path; instrument as sent, else the path segments between mission and notice
    type (``swift.bat.guano`` -> BAT).  The messenger comes from the instrument (XRT,
    WXT: x_ray; UVOT: ultraviolet; ...), else the mission, else the notice's own
    ``messenger`` (GW, Neutrino), else the band's units, else ``other``.  GRB monitors
    (GBM, BAT, ECLAIRs, GRM, BurstCube, Glowbug) count as gamma_ray.

Data rights are public, except proprietary when the topic or instrument has a
``private`` word (Fermi's ``GBM-Targeted-Private``).  Every notice field not mapped
onto an Alert field is kept in ``extra`` as sent (``healpix_file`` replaced by its
hash), with ``gcn_schema`` for the ``$schema`` URL.

Not notices, refused with :class:`NormalizationError` saying what they are: GCN
Circulars, core-schema fragments (``notices/core/Localization.schema.json`` ...), the
JSON Schemas themselves, and LVK alerts (``superevent_id``), which the ``igwn.gwalert``
normalizer reads.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import ValidationError

from alerts_schema import (
    Alert,
    DataRights,
    EllipseLocalization,
    Energy,
    NoLocalization,
    PointLocalization,
    Provenance,
    SkymapLocalization,
)
from alerts_schema.errors import HostileInput, MalformedInput, NormalizationError
from alerts_schema.model import format_utc
from crossmatch.events import ISSUED
from crossmatch.skymap import read_multiorder
from listeners import facilities, json_limits, voevent
from listeners.base import SKYMAP_URL, Heartbeat, MessageMeta, Normalized, SkymapFile
from listeners.common import checked_ra, local_id, parse_utc, photon_energy_gev, skymap_url
from listeners.detect import Format

__all__ = [
    "HEARTBEAT_STREAM",
    "NOTICE_PREFIX",
    "accepts",
    "handle",
    "looks_like_gcn_notice",
    "normalize",
    "normalize_decoded",
    "stream_name",
]

HEARTBEAT_STREAM = "gcn.heartbeat"
NOTICE_PREFIX = "gcn.notices."
DEFAULT_CONTAINMENT = 0.9   # the GCN Localization schema's stated default
REVISION_MAX = 1_000_000    # the Alert contract's maximum revision
MAX_ID_CHARS = 256          # the Alert contract's event_id limit

Localization = PointLocalization | EllipseLocalization | SkymapLocalization | NoLocalization

_TENSES = frozenset({"current", "archival", "planned", "injection", "commanded", "test"})
_TEST_TENSES = frozenset({"test", "injection", "commanded"})
_ALERT_TYPES = frozenset({"initial", "subsequent", "update", "retraction"})
_SCHEMA_HOSTS = frozenset({"gcn.nasa.gov", "test.gcn.nasa.gov", "dev.gcn.nasa.gov"})
_GITHUB_HOSTS = frozenset({"github.com", "raw.githubusercontent.com"})
_SCHEMA_PATH = re.compile(r"/gcn/(notices/[^?#]+?|circulars)(?:\.schema)?\.json$")
_LVK_NOTICE_NUMBER = re.compile(r"-(\d{1,6})-[A-Za-z_]+$")
_JSON_SCHEMA_DIALECT = "json-schema.org"

# Fields mapped onto Alert fields; everything else goes to ``extra`` as sent.
_CONSUMED = frozenset({
    "$schema", "healpix_file", "ra", "dec", "ra_dec_error", "containment_probability",
    "trigger_time", "trigger_time_error", "far", "p_astro", "mission", "instrument",
    "messenger",
})

# instrument word -> messenger, where an instrument differs from its mission's default
_INSTRUMENT_MESSENGERS: dict[str, str] = {
    "gbm": "gamma_ray", "lat": "gamma_ray", "bat": "gamma_ray", "eclairs": "gamma_ray",
    "grm": "gamma_ray", "xrt": "x_ray", "mxt": "x_ray", "wxt": "x_ray", "fxt": "x_ray",
    "gsc": "x_ray", "ssc": "x_ray", "ixpe": "x_ray", "uvot": "ultraviolet",
    "vt": "optical", "ztf": "optical",
}

_NOTICE_MESSENGERS = {"gw": "gravitational_wave", "neutrino": "neutrino"}


# -- routing ----------------------------------------------------------------------

def accepts(fmt: Format, decoded: Any, meta: MessageMeta) -> bool:
    """Whether this normalizer handles a message (the registry's routing predicate).

    Parameters
    ----------
    fmt
        The sniffed format; only :attr:`Format.JSON` is ever accepted.
    decoded
        The decoded JSON value (None for other formats).
    meta
        The message's metadata; ``meta.source`` is the deciding field.

    True for JSON from ``gcn.heartbeat`` and from any ``gcn.notices.*`` topic, unless
    the object is an LVK alert (it has ``superevent_id``: the LVK normalizer reads
    those).  For files (``meta.source == "file"``), true when
    :func:`looks_like_gcn_notice` recognizes the content, which includes circulars,
    core-schema fragments and the GCN JSON Schemas, so that they are refused here with
    a reason naming what they are.
    """
    if fmt is not Format.JSON or not isinstance(decoded, dict):
        return False
    if meta.source == HEARTBEAT_STREAM:
        return True
    if meta.source.startswith(NOTICE_PREFIX):
        return "superevent_id" not in decoded
    if meta.source == "file":
        return looks_like_gcn_notice(decoded)
    return False


def looks_like_gcn_notice(document: Any) -> bool:
    """True for a JSON object that is recognizably GCN unified-schema content.

    Either its ``$schema`` (or, for a schema file, ``$id``) is a GCN schema URL
    (gcn.nasa.gov/schema/..., github.com/nasa-gcn/gcn-schema/...), or it has no
    ``$schema`` but carries GCN's Alert and Reporter fields (``alert_datetime`` or
    ``alert_tense``, ``mission`` or ``instrument``, and ``trigger_time`` or ``id``),
    as notices copied from Kafka without their ``$schema`` do.
    """
    if not isinstance(document, dict):
        return False
    if _schema_path(document.get("$schema")) or _schema_path(document.get("$id")):
        return True
    if "superevent_id" in document or "schema_version" in document:
        return False
    return (("alert_datetime" in document or "alert_tense" in document)
            and (isinstance(document.get("mission"), str)
                 or isinstance(document.get("instrument"), str))
            and ("trigger_time" in document or "id" in document))


def normalize(data: bytes, meta: MessageMeta) -> Normalized:
    """Alerts (or a heartbeat) from the raw bytes of one GCN JSON message.

    Parameters
    ----------
    data
        The message as received (UTF-8 JSON).
    meta
        Its source stream (Kafka topic, or ``file``) and the broker's IVORN authority.

    Returns
    -------
    Normalized
        One Alert per notice (angles in ICRS deg, FAR in Hz, energies in GeV, times
        UTC) with any inline sky map, or one heartbeat for ``gcn.heartbeat``.

    Raises
    ------
    MalformedInput, HostileInput
        From the bounded JSON decoder.
    NormalizationError
        When the JSON is not a notice, or holds values no sky event can have.
    """
    return normalize_decoded(json_limits.loads(data), meta)


def handle(data: bytes, decoded: Any, meta: MessageMeta) -> Normalized:
    """:func:`normalize` for JSON the router has already decoded (``data`` is unused)."""
    del data  # the decoded value is the message; the bytes are archived by the caller
    return normalize_decoded(decoded, meta)


def normalize_decoded(document: Any, meta: MessageMeta) -> Normalized:
    """Like :func:`normalize`, for an already decoded JSON value."""
    if not isinstance(document, dict):
        raise NormalizationError(
            f"a GCN notice is a JSON object; got a JSON {_json_type(document)}")
    # The heartbeat topic's messages are heartbeats whatever else they may carry.
    if meta.source == HEARTBEAT_STREAM:
        return Normalized(heartbeats=(_heartbeat(document),))
    _refuse_non_notices(document)
    if _is_heartbeat(document, meta):
        return Normalized(heartbeats=(_heartbeat(document),))
    stream = stream_name(document, meta)
    context = _Context.build(document, stream)
    if isinstance(document.get("data"), dict) and "targets" in document["data"]:
        return Normalized(alerts=tuple(_boom_alerts(document, context, meta)))
    alert, skymap = _notice_alert(document, context, meta)
    return Normalized(alerts=(alert,), skymaps=(skymap,) if skymap else ())


def stream_name(document: Mapping[str, Any], meta: MessageMeta) -> str:
    """The stream an alert is filed under: the topic, or for files one derived from it.

    See the module docstring for the derivation from ``$schema`` or ``mission``.
    """
    if meta.source != "file":
        return meta.source
    if _is_heartbeat(document, meta):
        return HEARTBEAT_STREAM
    path = _schema_path(document.get("$schema"))
    if path and path.startswith("notices/"):
        return "gcn." + ".".join(_snake(part) for part in path.split("/"))
    words = [_snake(document["mission"])] if isinstance(document.get("mission"), str) else []
    if isinstance(document.get("instrument"), str):
        words += [w.lower() for w in re.split(r"[^A-Za-z0-9]+", document["instrument"]) if w]
    words = [w for w in (re.sub(r"[^a-z0-9_]", "", w) for w in words) if w]
    return NOTICE_PREFIX + (".".join(words) or "unknown")


# -- what is not a notice -----------------------------------------------------------

def _refuse_non_notices(document: dict[str, Any]) -> None:
    """Raise a NormalizationError naming what the object is, when it is no notice."""
    schema_id = _schema_path(document.get("$id"))
    dialect = document.get("$schema")
    if schema_id and isinstance(dialect, str) and _JSON_SCHEMA_DIALECT in dialect:
        raise NormalizationError(
            f"this is the JSON Schema {_clip(document.get('$id'), 120)}, which describes "
            "a GCN message format; it is not a notice itself")
    path = _schema_path(dialect)
    if path == "circulars" or ("circularId" in document and "body" in document):
        raise NormalizationError(
            f"a GCN Circular (circularId {document.get('circularId')!r}, subject "
            f"{_clip(document.get('subject'))}): circulars are human-written reports, "
            "not machine-readable notices; nothing to normalize")
    if path and path.startswith("notices/core/") and not _heartbeat_shaped(document):
        name = path.rsplit("/", 1)[-1]
        raise NormalizationError(
            f"a GCN core-schema fragment ({name}.schema.json), not a notice: core "
            "schemas are building blocks that mission notices include, and an example "
            "of one describes no event")
    if "superevent_id" in document:
        raise NormalizationError(
            f"an LVK alert (superevent_id {_clip(document['superevent_id'])}), not a GCN "
            "unified-schema notice: the igwn.gwalert normalizer reads these")


def _heartbeat_shaped(document: Mapping[str, Any]) -> bool:
    path = _schema_path(document.get("$schema"))
    return path == "notices/core/Alert" and set(document) <= {"$schema", "alert_datetime"}


def _is_heartbeat(document: Mapping[str, Any], meta: MessageMeta) -> bool:
    if meta.source == HEARTBEAT_STREAM:
        return True
    return meta.source == "file" and _heartbeat_shaped(document)


def _heartbeat(document: Mapping[str, Any]) -> Heartbeat:
    if document.get("alert_datetime") is None:
        raise NormalizationError("gcn.heartbeat message without alert_datetime: no time "
                                 "to record the heartbeat at")
    return Heartbeat(stream=HEARTBEAT_STREAM, detector="",
                     time=parse_utc(document["alert_datetime"], field="alert_datetime"))


# -- context from topic and schema --------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Context:
    """What the topic and ``$schema`` path say about a notice."""

    stream: str
    schema_url: str | None
    mission_hint: str | None        # e.g. "swift", from the schema path or topic
    instrument_hint: str | None     # e.g. "bat"
    family: str                     # "<mission>.<notice type>", e.g. "icecube.lvk_nu_track_search"
    test_type: bool                 # a "test" segment in the topic or schema path

    @classmethod
    def build(cls, document: Mapping[str, Any], stream: str) -> _Context:
        url = document.get("$schema") if isinstance(document.get("$schema"), str) else None
        path = _schema_path(url)
        schema_parts = [_snake(p) for p in path.split("/")[1:]] if path else []
        topic_parts = (stream[len(NOTICE_PREFIX):].split(".")
                       if stream.startswith(NOTICE_PREFIX) else [])
        parts = schema_parts or topic_parts
        mission = parts[0] if parts else None
        middle = parts[1:-1]
        family = f"{parts[0]}.{parts[-1]}" if len(parts) >= 2 else (mission or "")
        test_type = "test" in schema_parts or "test" in topic_parts
        return cls(stream, url, mission, middle[0].upper() if middle else None, family,
                   test_type)


def _schema_path(url: Any) -> str | None:
    """``notices/swift/bat/Guano`` from a GCN schema URL; None for any other value."""
    if not isinstance(url, str) or len(url) > 2048:
        return None
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    host = (parts.hostname or "").lower()
    if host in _GITHUB_HOSTS:
        if not parts.path.lower().startswith("/nasa-gcn/gcn-schema/"):
            return None
    elif host not in _SCHEMA_HOSTS or not parts.path.startswith("/schema/"):
        return None
    match = _SCHEMA_PATH.search(parts.path)
    return match.group(1) if match else None


def _snake(text: str) -> str:
    """``TargetedSearch`` -> ``targeted_search``; ``Super-Kamiokande`` -> ``super_kamiokande``."""
    text = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", text.strip())
    return re.sub(r"[^A-Za-z0-9_.]+", "_", text).strip("_").lower()


# -- one notice -----------------------------------------------------------------------

def _notice_alert(document: dict[str, Any], context: _Context,
                  meta: MessageMeta) -> tuple[Alert, SkymapFile | None]:
    trigger_time = _trigger_time(document)
    alert_time = _optional_time(document, "alert_datetime")
    gcn_type = _alert_type(document)
    revision = _revision(document, context, gcn_type, trigger_time, alert_time)
    event_id = _event_id(document, trigger_time)
    facility, instrument, messenger = _who(document, context)
    extra = {k: v for k, v in document.items() if k not in _CONSUMED}
    if context.schema_url:
        extra["gcn_schema"] = context.schema_url
    if alert_time is not None:
        extra[ISSUED] = format_utc(alert_time)  # orders it against other transports

    if context.family == "icecube.lvk_nu_track_search":
        localization = _lvk_nu_localization(document)
    else:
        localization = _localization(document, "", extra)
    localization = _gbm_systematic(document, instrument, localization, extra)
    skymap, peak = _inline_skymap(document, extra)
    if skymap is not None:
        # The map is the localization matching uses; the stated position stays the
        # summary point (the map's ra/dec) and its stated region is kept in extra.
        url = document.get("healpix_url")
        centre = peak
        if isinstance(localization, PointLocalization | EllipseLocalization):
            extra["position"] = localization.model_dump(mode="json")
            centre = (localization.ra_deg, localization.dec_deg)
        localization = SkymapLocalization(
            skymap_sha256=skymap.sha256, format=skymap.format,
            url=url if isinstance(url, str) and len(url) <= 1024 else None,
            area_90_deg2=skymap.area_90_deg2, ra_deg=centre[0], dec_deg=centre[1])
    elif url := skymap_url(document.get("healpix_url")):
        # A map by URL only: the broker fetches it later and makes it the localization.
        extra[SKYMAP_URL] = url

    alert = _make_alert(
        meta, context, event_id=event_id, revision=revision,
        alert_type=_contract_alert_type(gcn_type, revision),
        role=_role(document, context), facility=facility, instrument=instrument,
        messenger=messenger, trigger_time=trigger_time,
        trigger_time_error_s=_time_error(document.get("trigger_time_error")),
        localization=localization, energy=_energy(document),
        far_hz=_non_negative(document.get("far"), "far", unit="Hz"),
        p_value=_p_value(document), signalness=_probability(document.get("p_astro"),
                                                             "p_astro"),
        provenance=_provenance(document, context), extra=extra)
    return alert, skymap


def _make_alert(meta: MessageMeta, context: _Context, *, event_id: str, revision: int,
                **fields: Any) -> Alert:
    """The Alert, with any value the contract cannot hold reported as a NormalizationError."""
    stream = re.sub(r"[^A-Za-z0-9._~-]+", "_", context.stream) or "gcn.notices"
    private = re.search(r"(?i)(^|[^a-z])private([^a-z]|$)",
                        f"{context.stream} {fields.get('instrument') or ''}")
    try:
        return Alert(
            schema_version="1.0",
            id=meta.alert_ivorn(stream, local_id(event_id, revision)),
            source=context.stream,
            event_id=event_id,
            revision=revision,
            data_rights=DataRights(level="proprietary" if private else "public"),
            **fields,
        )
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'alert'}: {err['msg']}"
            for err in exc.errors()[:5])
        raise NormalizationError(f"notice values the Alert contract cannot hold: "
                                 f"{problems}") from exc


# -- times, ids, revisions ----------------------------------------------------------

def _optional_time(document: Mapping[str, Any], key: str) -> datetime | None:
    value = document.get(key)
    return None if value is None else parse_utc(value, field=key)


def _trigger_time(document: Mapping[str, Any]) -> datetime:
    for key in ("trigger_time", "observation_start", "alert_datetime"):
        when = _optional_time(document, key)
        if when is not None:
            return when
    raise NormalizationError("notice has no trigger_time, observation_start or "
                             "alert_datetime: there is no time to place the event at")


def _time_error(value: Any) -> float | None:
    """1-sigma trigger time error in s: a number, or the larger side of [minus, plus]."""
    if isinstance(value, list):
        sides = [_number(v, f"trigger_time_error[{i}]") for i, v in enumerate(value)]
        value = max((abs(s) for s in sides if s is not None), default=None)
    return _non_negative(value, "trigger_time_error", unit="s")


def _alert_type(document: Mapping[str, Any]) -> str | None:
    value = document.get("alert_type")
    if value is None:
        return None
    if not isinstance(value, str) or value.strip().lower() not in _ALERT_TYPES:
        raise NormalizationError(f"alert_type {_clip(value)} is not one of "
                                 f"{', '.join(sorted(_ALERT_TYPES))}")
    return value.strip().lower()


def _contract_alert_type(gcn_type: str | None, revision: int) -> str:
    if gcn_type in ("retraction", "update"):
        return gcn_type
    if gcn_type == "subsequent":
        return "update"
    if gcn_type == "initial":
        return "initial"
    return "initial" if revision == 0 else "update"


def _revision(document: Mapping[str, Any], context: _Context, gcn_type: str | None,
              trigger_time: datetime, alert_time: datetime | None) -> int:
    """The revision number; the rule is stated in the module docstring."""
    record = document.get("record_number")
    if record is not None:
        number = _whole(record, "record_number")
        if not 0 <= number <= REVISION_MAX + 1:
            raise NormalizationError(f"record_number {float(number):g} is outside 0.."
                                     f"{REVISION_MAX + 1}")
        return max(number - 1, 0)
    if context.family == "icecube.lvk_nu_track_search":
        notice = _lvk_notice_number(document.get("reference"))
        if notice is not None:
            return max(notice - 1, 0)
    if gcn_type == "retraction":
        return REVISION_MAX
    if gcn_type in ("update", "subsequent"):
        if alert_time is None or "trigger_time" not in document:
            return 1
        elapsed = int((alert_time - trigger_time).total_seconds())
        return min(max(1 + elapsed, 1), REVISION_MAX - 1)
    return 0


def _lvk_notice_number(reference: Any) -> int | None:
    if not isinstance(reference, dict):
        return None
    for value in reference.values():
        match = _LVK_NOTICE_NUMBER.search(value) if isinstance(value, str) else None
        if match:
            return int(match.group(1))
    return None


def _event_id(document: Mapping[str, Any], trigger_time: datetime) -> str:
    """The facility's id of the event; the order of preference is in the module docstring."""
    ids = _identifiers(document.get("id"), "id")
    if ids:
        return ids[0]
    for key in ("trigger_number", "obs_id", "ref_ID"):
        found = _identifiers(document.get(key), key)
        if found:
            return found[0]
    iso = format_utc(trigger_time)
    names = _identifiers(document.get("event_name"), "event_name")
    if names:
        return _checked_id(f"{names[0]}@{iso}", "event_name")
    return iso


def _identifiers(value: Any, field: str) -> list[str]:
    """A string, whole number, or list of them, as non-empty strings."""
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    found = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, str | int | float):
            raise NormalizationError(f"{field}: expected a string or a list of strings, "
                                     f"got {_clip(value)}")
        if isinstance(item, float):
            if not item.is_integer():
                raise NormalizationError(f"{field}: {item!r} is not an identifier")
            item = int(item)
        text = str(item).strip()
        if text:
            found.append(_checked_id(text, field))
    return found


def _checked_id(text: str, field: str) -> str:
    if len(text) > MAX_ID_CHARS:
        raise NormalizationError(f"{field}: identifier of {len(text)} characters exceeds "
                                 f"{MAX_ID_CHARS}")
    return text


# -- role, who, provenance ------------------------------------------------------------

def _role(document: Mapping[str, Any], context: _Context) -> str:
    tense = document.get("alert_tense")
    if tense is not None:
        if not isinstance(tense, str) or tense.strip().lower() not in _TENSES:
            raise NormalizationError(f"alert_tense {_clip(tense)} is not one of "
                                     f"{', '.join(sorted(_TENSES))}")
        tense = tense.strip().lower()
    if tense in _TEST_TENSES or context.test_type:
        return "test"
    if tense == "planned":
        return "prediction"
    if context.family == "heasarc.archive_alert":
        return "utility"
    return "observation"


def _who(document: Mapping[str, Any], context: _Context) -> tuple[str, str | None, str]:
    """(facility, instrument, messenger) of a notice."""
    mission = _text(document.get("mission"), "mission")
    instrument = _text(document.get("instrument"), "instrument")
    if context.family == "heasarc.archive_alert" and instrument is None:
        instrument = _text(document.get("facility_name"), "facility_name")
    name = mission or context.mission_hint or ""
    if not facilities.key(name):
        raise NormalizationError("cannot tell which mission issued the notice: no mission "
                                 "field, and neither topic nor $schema names one")
    known = facilities.lookup(name)
    facility = known.name if known is not None else (mission or facilities.key(name))
    if instrument is None:
        instrument = context.instrument_hint
    if known is not None and known.fixed:
        return facility, instrument, known.messenger
    messenger = _instrument_messenger(instrument) or (
        known.messenger if known is not None else None)
    if messenger is None:
        stated = document.get("messenger")
        messenger = (_NOTICE_MESSENGERS.get(stated.strip().lower())
                     if isinstance(stated, str) else None) or _band_messenger(document)
    return facility, instrument, messenger


def _instrument_messenger(instrument: str | None) -> str | None:
    if not instrument:
        return None
    for word in re.split(r"[^a-z0-9]+", instrument.lower()):
        if word in _INSTRUMENT_MESSENGERS:
            return _INSTRUMENT_MESSENGERS[word]
        if (known := facilities.lookup(word)) is not None:
            return known.messenger
    return None


def _band_messenger(document: Mapping[str, Any]) -> str:
    """Guess from the spectral band's unit, for missions the tables do not know."""
    unit = document.get("spectral_band_units")
    if unit == "MHz":
        return "radio"
    if unit == "nm":
        return "optical"
    return "other"


def _provenance(document: Mapping[str, Any], context: _Context) -> Provenance | None:
    pipeline = _text(document.get("pipeline"), "pipeline")
    if pipeline is None and context.family == "icecube.lvk_nu_track_search":
        pipeline = _text(document.get("type"), "type")
    return Provenance(pipeline=pipeline) if pipeline else None


def _text(value: Any, field: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise NormalizationError(f"{field}: expected a string, got {_clip(value)}")
    return value.strip() or None


# -- numbers ----------------------------------------------------------------------------

def _number(value: Any, field: str) -> float | None:
    """A finite float; None for null.  Strings and booleans are errors, not numbers."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise NormalizationError(f"{field}: expected a number, got {_clip(value)}")
    try:
        number = float(value)
    except OverflowError as exc:
        raise NormalizationError(f"{field}: {str(value)[:40]}... is too large") from exc
    if not math.isfinite(number):
        raise NormalizationError(f"{field}: {value!r} is not a finite number")
    return number


def _whole(value: Any, field: str) -> int:
    number = _number(value, field)
    if number is None or not number.is_integer():
        raise NormalizationError(f"{field}: expected a whole number, got {_clip(value)}")
    return int(number)


def _non_negative(value: Any, field: str, *, unit: str) -> float | None:
    number = _number(value, field)
    if number is not None and number < 0:
        raise NormalizationError(f"{field} = {number:g} {unit} is negative")
    return number


def _probability(value: Any, field: str) -> float | None:
    number = _number(value, field)
    if number is not None and not 0 <= number <= 1:
        raise NormalizationError(f"{field} = {number:g} is not a probability in [0, 1]")
    return number


def _p_value(document: Mapping[str, Any]) -> float | None:
    for key in ("p_value", "pval_generic", "pval_bayesian"):
        number = _probability(document.get(key), key)
        if number is not None:
            return number
    return None


# -- localization -----------------------------------------------------------------------

def _position(where: Mapping[str, Any], prefix: str) -> tuple[float, float] | None:
    """(ra, dec) in ICRS degrees; None when neither is given.  Never wrapped: an ra outside
    [0, 360) is refused (issue 14, item 6)."""
    ra = _number(where.get("ra"), f"{prefix}ra")
    dec = _number(where.get("dec"), f"{prefix}dec")
    if ra is None and dec is None:
        return None
    if ra is None or dec is None:
        given = "ra" if ra is not None else "dec"
        raise NormalizationError(f"{prefix}{given} is given without "
                                 f"{'dec' if given == 'ra' else 'ra'}: half a position")
    if not -90.0 <= dec <= 90.0:
        raise NormalizationError(f"{prefix}dec = {dec:g} deg is outside [-90, 90]: "
                                 "not a sky position")
    return checked_ra(ra, field=f"{prefix}ra"), dec


def _containment(where: Mapping[str, Any], prefix: str) -> float:
    value = _number(where.get("containment_probability"), f"{prefix}containment_probability")
    if value is None:
        return DEFAULT_CONTAINMENT
    if not 0.0 < value < 1.0:
        raise NormalizationError(f"{prefix}containment_probability = {value:g} is not a "
                                 "probability strictly between 0 and 1")
    return value


def _angle(value: Any, field: str) -> float:
    number = _number(value, field)
    if number is None:
        raise NormalizationError(f"{field}: expected a number, got null")
    if not 0.0 <= number <= 180.0:
        raise NormalizationError(f"{field} = {number:g} deg: an error radius or axis must "
                                 "lie in [0, 180] degrees")
    return number


def _localization(where: Mapping[str, Any], prefix: str,
                  extra: dict[str, Any] | None) -> Localization:
    """The error region of a notice (or a nested localization object)."""
    position = _position(where, prefix)
    if position is None:
        return NoLocalization()
    ra, dec = position
    containment = _containment(where, prefix)
    error = where.get("ra_dec_error")
    if error is not None:
        return _from_ra_dec_error(error, prefix, ra, dec, containment)
    radius = _old_uncertainty(where, prefix)
    if radius is None and where.get("rectangular_error_corners") is not None:
        radius = _circumscribed(where["rectangular_error_corners"], ra, dec,
                                f"{prefix}rectangular_error_corners")
        if extra is not None:
            extra["localization_note"] = ("circle about ra/dec holding all "
                                          "rectangular_error_corners")
    if radius is None and where.get("src_error_50") is not None:
        radius, containment = _angle(where["src_error_50"], f"{prefix}src_error_50"), 0.5
    if radius is None:
        radius = 0.0
        if extra is not None:
            extra["localization_note"] = "position error not stated"
    return PointLocalization(ra_deg=ra, dec_deg=dec, error_radius_deg=radius,
                             containment=containment)


# A Fermi GBM notice's subtype -> the GCN Classic type of the same position, whose
# systematic (Connaughton et al. 2015) the VOEvent and binary paths apply.
_GBM_SUBTYPES = {"FLIGHT_POSITION": 111, "GROUND_POSITION": 112, "FINAL_POSITION": 115}


def _gbm_systematic(document: Mapping[str, Any], instrument: str | None,
                    localization: Localization, extra: dict[str, Any]) -> Localization:
    """A Fermi GBM position whose notice says ``systematic_included: false`` gets the GBM
    systematic of its position type, as the same position by VOEvent or binary notice
    does; one that includes it, or names no type, is matched as stated."""
    if (instrument or "").upper() != "GBM" or document.get("systematic_included") is not False \
            or not isinstance(localization, PointLocalization):
        return localization
    number = _GBM_SUBTYPES.get(str(document.get("subtype") or "").upper())
    known = voevent.gcn_type(number) if number is not None else None
    if known is None or known.systematic_deg is None:
        return localization
    extra["systematic_model"] = voevent.GBM_SYSTEMATIC_MODEL
    return localization.model_copy(update={"systematic_deg": known.systematic_deg})


def _from_ra_dec_error(error: Any, prefix: str, ra: float, dec: float,
                       containment: float) -> PointLocalization | EllipseLocalization:
    field = f"{prefix}ra_dec_error"
    if not isinstance(error, list):
        return PointLocalization(ra_deg=ra, dec_deg=dec, error_radius_deg=_angle(error, field),
                                 containment=containment)
    if not 1 <= len(error) <= 3:
        raise NormalizationError(f"{field}: expected a radius or [semi-major, semi-minor, "
                                 f"position angle], got {len(error)} values")
    major = _angle(error[0], f"{field}[0]")
    minor = _angle(error[1], f"{field}[1]") if len(error) > 1 else major
    angle = _number(error[2], f"{field}[2]") if len(error) > 2 else 0.0
    if angle is None:
        raise NormalizationError(f"{field}[2]: expected a position angle, got null")
    if major == minor:
        return PointLocalization(ra_deg=ra, dec_deg=dec, error_radius_deg=major,
                                 containment=containment)
    if minor > major:
        # Some producers (CHIME) list the axes minor-first; the same ellipse, turned.
        major, minor, angle = minor, major, angle + 90.0
    # An ellipse is unchanged by a half turn, so any angle folds into [0, 180).
    return EllipseLocalization(ra_deg=ra, dec_deg=dec, semi_major_deg=major,
                               semi_minor_deg=minor, position_angle_deg=angle % 180.0,
                               containment=containment)


def _old_uncertainty(where: Mapping[str, Any], prefix: str) -> float | None:
    """Circle radius from the older ``ra_uncertainty``/``dec_uncertainty`` lists."""
    shape = where.get("uncertainty_shape")
    radii = []
    for key in ("ra_uncertainty", "dec_uncertainty"):
        value = where.get(key)
        if value is None:
            continue
        first = value[0] if isinstance(value, list) and value else value
        radii.append(_angle(first, f"{prefix}{key}"))
    if not radii:
        return None
    if shape is not None and shape != "circle":
        raise NormalizationError(f"{prefix}uncertainty_shape {_clip(shape)} is not "
                                 "supported (only circle)")
    return max(radii)


def _circumscribed(corners: Any, ra: float, dec: float, field: str) -> float:
    if not isinstance(corners, list) or len(corners) < 3:
        raise NormalizationError(f"{field}: expected a list of [ra, dec] corners")
    radius = 0.0
    for i, corner in enumerate(corners):
        if not isinstance(corner, list) or len(corner) != 2:
            raise NormalizationError(f"{field}[{i}]: expected [ra, dec]")
        point = _position({"ra": corner[0], "dec": corner[1]}, f"{field}[{i}].")
        assert point is not None  # both coordinates were just given
        radius = max(radius, _separation_deg(ra, dec, *point))
    return radius


def _separation_deg(ra1: float, dec1: float, ra2: float, dec2: float) -> float:
    """Great-circle distance in degrees, by astropy (stable at all distances)."""
    # astropy.coordinates costs ~0.5 s to import: deferred so the CLI starts fast.
    from astropy.coordinates import angular_separation

    radians = map(math.radians, (ra1, dec1, ra2, dec2))
    return math.degrees(float(angular_separation(*radians)))


def _lvk_nu_localization(document: Mapping[str, Any]) -> Localization:
    """Position of an IceCube LVK track search, whose positions are all nested."""
    events = document.get("coincident_events") or []
    if not isinstance(events, list):
        raise NormalizationError("coincident_events: expected a list")
    regions: list[tuple[float, int, PointLocalization | EllipseLocalization]] = []
    for i, event in enumerate(events):
        if not isinstance(event, dict):
            raise NormalizationError(f"coincident_events[{i}]: expected an object")
        nested = event.get("localization", event)
        if not isinstance(nested, dict):
            raise NormalizationError(f"coincident_events[{i}].localization: expected an "
                                     "object")
        region = _localization(nested, f"coincident_events[{i}].localization.", None)
        p_values = [_probability(event.get(k), f"coincident_events[{i}].{k}")
                    for k in ("event_pval_generic", "event_pval_bayesian")]
        p_value = next((p for p in p_values if p is not None), math.inf)
        if isinstance(region, PointLocalization | EllipseLocalization):
            regions.append((p_value, i, region))
    best = min(regions, key=lambda r: (r[0], r[1]))[2] if regions else None
    direction = document.get("most_probable_direction")
    if direction is not None and not isinstance(direction, dict):
        raise NormalizationError("most_probable_direction: expected an object")
    centre = _position(direction, "most_probable_direction.") if direction else None
    if direction is None or centre is None:
        return best if best is not None else NoLocalization()
    if "ra_dec_error" in direction or best is None:
        return _localization(direction, "most_probable_direction.", None)
    # The combined direction borrows the most significant neutrino's error region,
    # as a circle (an ellipse's semi-major axis: never smaller than the truth).
    radius = (best.error_radius_deg if isinstance(best, PointLocalization)
              else best.semi_major_deg)
    return PointLocalization(ra_deg=centre[0], dec_deg=centre[1], error_radius_deg=radius,
                             containment=best.containment)


def _inline_skymap(document: Mapping[str, Any], extra: dict[str, Any]
                   ) -> tuple[SkymapFile | None, tuple[float, float]]:
    """The inline ``healpix_file`` and its densest pixel (ra, dec deg), or (None, ...)
    with the reason in extra.

    The map is read here, as the LVK normalizer reads its maps: a map the engine could
    not read must not displace the position the notice states.
    """
    none = (None, (0.0, 0.0))
    text = document.get("healpix_file")
    if text is None:
        return none
    if not isinstance(text, str):
        raise NormalizationError(f"healpix_file: expected base64 text, got {_clip(text)}")
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        extra["healpix_file"] = {"ignored": "not valid base64", "chars": len(text)}
        return none
    head = data[:65536]
    if head[:2] == b"\x1f\x8b":
        # Only the header is needed to tell the map's layout; never inflate more.
        try:
            head = zlib.decompressobj(wbits=31).decompress(data, 65536)
        except zlib.error:
            head = b""
    if not head.startswith(b"SIMPLE  ="):
        extra["healpix_file"] = {"ignored": "decoded bytes are not a FITS file",
                                 "bytes": len(data)}
        return none
    layout: Literal["multiorder", "flat"] = "multiorder" if b"'UNIQ" in head else "flat"
    try:
        sky = read_multiorder(data)
    except (MalformedInput, HostileInput) as exc:
        extra["healpix_file"] = {"ignored": f"not a readable sky map: {exc.reason}",
                                 "bytes": len(data)}
        return none
    area = sky.area_deg2(0.9)
    skymap = SkymapFile(data=data, format=layout, area_90_deg2=area)
    extra["healpix_file"] = {"sha256": skymap.sha256, "format": layout, "bytes": len(data)}
    return skymap, sky.max_position()


# -- energy -----------------------------------------------------------------------------

def _energy(document: Mapping[str, Any]) -> Energy | None:
    """The event's energy or band in GeV; units per field as in the module docstring."""
    best = _non_negative(document.get("nu_energy"), "nu_energy", unit="TeV")
    best = best * 1e3 if best is not None else None
    band = None
    details = document.get("event_details")
    if best is None and isinstance(details, list):
        measured = [e for e in (_non_negative(d.get("energy_measured"),
                                              f"event_details[{i}].energy_measured", unit="GeV")
                                for i, d in enumerate(details) if isinstance(d, dict))
                    if e is not None]
        if len(measured) == 1:
            best = measured[0]
        elif measured:
            band = (min(measured), max(measured))
    if band is None:
        band = _first_band(document)
    if best is None and band is None:
        return None
    low, high = band if band else (None, None)
    return Energy(best_gev=best, min_gev=low, max_gev=high)


def _first_band(document: Mapping[str, Any]) -> tuple[float, float] | None:
    units = document.get("spectral_band_units") or "keV"
    candidates: Iterable[tuple[str, Any, Any]] = (
        ("rate_energy_range", document.get("rate_energy_range"), units),
        ("image_energy_range", document.get("image_energy_range"), units),
        ("flux_spectral_band", document.get("flux_spectral_band"),
         document.get("flux_spectral_unit") or "keV"),
        ("spectral_band", document.get("spectral_band"), units),
        ("neutrino_flux_sensitivity_range.sensitive_energy_range",
         (document.get("neutrino_flux_sensitivity_range") or {}).get("sensitive_energy_range")
         if isinstance(document.get("neutrino_flux_sensitivity_range"), dict) else None,
         "GeV"),
    )
    for field, value, unit in candidates:
        if value is not None:
            return _band(value, field, unit)
    return None


def _band(value: Any, field: str, unit: Any) -> tuple[float, float]:
    if not isinstance(value, list) or len(value) != 2:
        raise NormalizationError(f"{field}: expected [low, high], got {_clip(value)}")
    low, high = (_number(v, f"{field}[{i}]") for i, v in enumerate(value))
    if low is None or high is None:
        raise NormalizationError(f"{field}: a bound is null")
    if low < 0 or high < 0:
        raise NormalizationError(f"{field} = [{low:g}, {high:g}] {unit}: negative bound")
    if low > high:
        raise NormalizationError(f"{field} = [{low:g}, {high:g}] {unit}: low bound above "
                                 "high bound")
    if not isinstance(unit, str):
        raise NormalizationError(f"{field}: unit {_clip(unit)} is not a string")
    edges = sorted(photon_energy_gev(v, unit, field=field) for v in (low, high))
    return edges[0], edges[1]


# -- BOOM -------------------------------------------------------------------------------

def _boom_alerts(document: dict[str, Any], context: _Context,
                 meta: MessageMeta) -> list[Alert]:
    """One optical Alert per BOOM target: position, first detection, its photometry."""
    data = document["data"]
    targets = data.get("targets")
    if not isinstance(targets, list) or not targets:
        raise NormalizationError("BOOM alert lists no targets (data.targets is empty)")
    photometry = data.get("photometry") or []
    if not isinstance(photometry, list):
        raise NormalizationError("data.photometry: expected a list")
    facility, instrument, messenger = _who(document, context)
    alert_time = _optional_time(document, "alert_datetime")
    alerts = []
    for i, target in enumerate(targets):
        prefix = f"data.targets[{i}]."
        if not isinstance(target, dict):
            raise NormalizationError(f"{prefix[:-1]}: expected an object")
        names = _identifiers(target.get("event_name"), f"{prefix}event_name")
        if not names:
            raise NormalizationError(f"{prefix}event_name is missing: no object to name")
        points = [p for p in photometry if isinstance(p, dict)
                  and p.get("event_name") == names[0]]
        # The first detection (a magnitude, not an upper limit) dates the transient.
        detections = [parse_utc(p["observation_start"], field="observation_start")
                      for p in points if p.get("mag") is not None
                      and p.get("observation_start") is not None]
        trigger_time = min(detections, default=alert_time)
        if trigger_time is None:
            raise NormalizationError(f"{prefix}event_name {names[0]!r}: no detection time "
                                     "and no alert_datetime")
        extra: dict[str, Any] = {
            "target": {k: v for k, v in target.items() if k not in ("ra", "dec")},
            "photometry": points,
            "alert_datetime": document.get("alert_datetime"),
        }
        if context.schema_url:
            extra["gcn_schema"] = context.schema_url
        alerts.append(_make_alert(
            meta, context, event_id=names[0], revision=0, alert_type="initial",
            role=_role(document, context), facility=facility, instrument=instrument,
            messenger=messenger, trigger_time=trigger_time,
            localization=_localization(target, prefix, extra), extra=extra))
    return alerts


# -- small helpers ----------------------------------------------------------------------

def _clip(value: Any, limit: int = 60) -> str:
    """A short repr for error messages, so a hostile value cannot flood the quarantine."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_type(value: Any) -> str:
    return {list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number")
