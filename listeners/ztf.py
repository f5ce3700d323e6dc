"""ZTF alerts: one Avro object container file per Kafka message, into an Alert.

Every ZTF alert packet version in use works (the 2017 prototype with
``alertId``, the 2018 packets without ``schemavsn``, 3.x, 4.02, and repackaged
ones such as Babamul's): the normalizer reads the writer schema each packet
carries, parses it once per distinct schema (:data:`listeners.avro.CACHE`) and
decodes only the fields in :data:`PROJECTION`.  Cutouts and the detection
history (``prv_candidates``, ``fp_hists``, ``prv_nondetections``) are skipped
by fastavro without being decoded; the raw packet is archived before parsing,
and :func:`cutouts` and :func:`history` decode those parts from it on demand.

What the Alert says:

* ``event_id`` is the candidate id ``candid``, unique per detection; revision 0.
* ``trigger_time`` is the candidate's ``jd``: the *start* of the exposure
  (30 s for survey fields, ``exptime`` in ``extra``), a Julian Date in UTC.
* The localization is the candidate position with an error circle of
  :data:`ERROR_RADIUS_DEG` (1 arcsec) at :data:`CONTAINMENT` 0.9.  ZTF gives no
  positional uncertainty per candidate; 1 arcsec contains the centroid of a
  detection at S/N >= 5 (about 0.4 arcsec per axis for a 2 arcsec seeing disk),
  so it is generous for brighter ones and still tiny next to any
  gravitational-wave or neutrino error region.
* ``data_rights`` is public for ``programid`` 1 (the public MSIP survey) and
  proprietary for every other programme (partnership, Caltech, commissioning).
* ``extra`` keeps ``objectId``, ``candid``, the photometry (``magpsf``,
  ``sigmapsf`` in mag, ``fid`` and its ``band``), the real-bogus scores
  (``rb``, ``drb``) and other candidate fields under ZTF's own names; ZTF's
  ``-999`` "none" sentinels and NaN become null, ``isdiffpos`` a boolean.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from alerts_schema import Alert
from alerts_schema.errors import NormalizationError
from listeners import avro
from listeners.base import MessageMeta, Normalized
from listeners.common import finite_or_none, jd_to_utc, survey_detection
from listeners.detect import Format

__all__ = [
    "CONTAINMENT",
    "ERROR_RADIUS_DEG",
    "FAMILY",
    "PROJECTION",
    "STREAM",
    "accepts",
    "cutouts",
    "handle",
    "history",
    "normalize",
]

STREAM = "ztf"
FACILITY = "ZTF"
SCHEMA_NAME = "ztf.alert"
ERROR_RADIUS_DEG = 1.0 / 3600.0  # 1 arcsec, see the module docstring
CONTAINMENT = 0.9
PUBLIC_PROGRAM_ID = 1
BANDS = {1: "g", 2: "r", 3: "i"}  # ZTF filter ids (fid)
_SENTINEL = -999.0  # ZTF's "no value" for distances and scores

# Candidate fields copied into ``extra`` (ZTF's names and units).
_EXTRA_FIELDS = (
    "jd", "magpsf", "sigmapsf", "fid", "diffmaglim", "magap", "sigmagap", "rb", "rbversion",
    "drb", "drbversion", "programid", "field", "rcid", "pid", "nid", "exptime", "ssnamenr",
    "ssdistnr", "ssmagnr", "sgscore1", "distpsnr1", "ndethist", "ncovhist", "jdstarthist",
    "jdendhist", "tooflag", "classtar",
)
_CANDIDATE_FIELDS = frozenset(_EXTRA_FIELDS) | {"ra", "dec", "candid", "isdiffpos"}

FAMILY = avro.SchemaFamily("ZTF",
                           re.compile(r"ztf\.alert|[A-Za-z0-9_.]*Ztf[A-Za-z0-9_]*Alert"))
"""The writer schemas ZTF packets come with: ``ztf.alert`` (every version since the 2017
prototype) and repackagings named for it (Babamul's ``BabamulZtfAlert``)."""

PROJECTION = avro.Projection(
    name="ztf-candidate",
    keep=frozenset({"schemavsn", "publisher", "objectId", "alertId", "candid", "candidate"}),
    narrow={"candidate": _CANDIDATE_FIELDS},
)
"""What the hot path decodes: the identifiers and the current candidate only."""

_CUTOUTS = ("cutoutScience", "cutoutTemplate", "cutoutDifference")
_HISTORY = ("prv_candidates", "fp_hists", "prv_nondetections")


def accepts(fmt: Format, decoded: Any, meta: MessageMeta, data: bytes | None = None) -> bool:
    """True for an Avro container from a ``ztf*`` stream or with a ``ztf.alert`` schema.

    Parameters
    ----------
    fmt, decoded, meta
        As :class:`listeners.registry.Route` passes them.  The router passes
        ``decoded=None`` for Avro; the raw bytes, given as ``data`` (or as
        ``decoded``), let a file of unknown origin be recognized by its writer
        schema's name (parsed once, then cached).
    """
    if fmt is not Format.AVRO_OCF:
        return False
    if meta.source.lower().startswith(STREAM):
        return True
    raw = data if data is not None else decoded
    if not isinstance(raw, bytes | bytearray):
        return False
    schema = avro.peek_container_schema(bytes(raw))
    return schema is not None and schema.name == SCHEMA_NAME


def handle(data: bytes, decoded: Any, meta: MessageMeta) -> Normalized:
    """Route entry point: :func:`normalize` (``decoded`` is unused for Avro)."""
    return normalize(data, meta)


def normalize(data: bytes, meta: MessageMeta) -> Normalized:
    """One Alert per record of a ZTF Avro packet (one record per Kafka message).

    Raises
    ------
    MalformedInput, HostileInput
        When the bytes are not a decodable Avro container (see :mod:`listeners.avro`).
    NormalizationError
        When the writer schema is not of :data:`FAMILY` (nothing is decoded then),
        or a record lacks what an Alert needs (candidate, position, time).
    """
    writer, records = avro.decode_container(data, PROJECTION, family=FAMILY)
    if not records:
        raise NormalizationError("ZTF Avro container holds no alert record")
    raw_only = [name for name in writer.field_names if name not in PROJECTION.keep]
    return Normalized(alerts=tuple(_alert(rec, meta, writer.name, raw_only) for rec in records))


def _alert(record: dict[str, Any], meta: MessageMeta, schema_name: str,
           raw_only: list[str]) -> Alert:
    candidate = record.get("candidate")
    if not isinstance(candidate, dict):
        raise NormalizationError(f"Avro record ({schema_name!r}) has no ZTF 'candidate' "
                                 "record: not a ZTF alert")
    candid = record.get("candid", candidate.get("candid"))
    if not isinstance(candid, int):
        raise NormalizationError(f"ZTF alert: candid {candid!r} is not an integer")
    ra = finite_or_none(candidate.get("ra"), field="candidate.ra")
    dec = finite_or_none(candidate.get("dec"), field="candidate.dec")
    if ra is None or dec is None or not -90.0 <= dec <= 90.0:
        raise NormalizationError(f"ZTF alert {candid}: no valid position "
                                 f"(ra={candidate.get('ra')!r}, dec={candidate.get('dec')!r})")
    trigger_time = jd_to_utc(candidate.get("jd"), field="candidate.jd")
    programid = candidate.get("programid")
    event_id = str(candid)
    return survey_detection(
        meta, stream=STREAM, facility=FACILITY, event_id=event_id, ra_deg=ra, dec_deg=dec,
        error_radius_deg=ERROR_RADIUS_DEG, containment=CONTAINMENT, trigger_time=trigger_time,
        data_rights="public" if programid == PUBLIC_PROGRAM_ID else "proprietary",
        pipeline="ZTF alert pipeline (IPAC)", pipeline_version=None,
        extra=_extra(record, candidate, candid, schema_name, raw_only),
        what=f"ZTF alert {candid}")


def _extra(record: dict[str, Any], candidate: dict[str, Any], candid: int, schema_name: str,
           raw_only: list[str]) -> dict[str, Any]:
    extra: dict[str, Any] = {
        "objectId": record.get("objectId"),
        "candid": candid,
        "schemavsn": record.get("schemavsn"),
        "schema_name": schema_name,
    }
    if record.get("alertId") is not None:  # the 2017 prototype packets
        extra["alertId"] = record["alertId"]
    for name in _EXTRA_FIELDS:
        if name in candidate:
            value = avro.json_value(candidate[name])
            extra[name] = None if value == _SENTINEL or value == "null" else value
    extra["band"] = BANDS.get(candidate.get("fid", 0))  # 0 is no filter id: None
    extra["isdiffpos"] = _positive(candidate.get("isdiffpos"))
    # Decoded only on request (cutouts(), history()) from the archived raw bytes.
    extra["raw_only_fields"] = raw_only
    return extra


def _positive(value: Any) -> bool | None:
    """``isdiffpos`` as a boolean: 't'/'1'/1/True for a positive subtraction."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value == 1
    if isinstance(value, str) and value.strip().lower() in ("t", "1", "true", "f", "0", "false"):
        return value.strip().lower() in ("t", "1", "true")
    return None


# -- the parts the hot path skips, decoded on request from the raw bytes ---------------

def _parts(data: bytes, names: Iterable[str]) -> list[dict[str, Any]]:
    wanted = frozenset(names)
    projection = avro.Projection(name="ztf-parts:" + ",".join(sorted(wanted)), keep=wanted)
    return avro.decode_container(data, projection, family=FAMILY)[1]


def cutouts(data: bytes) -> dict[str, bytes | None]:
    """The three image stamps of a ZTF packet (gzipped FITS), by field name.

    Decodes only the cutouts from the raw packet; a stamp the packet lacks is None.
    """
    (record, *_rest) = _parts(data, _CUTOUTS) or [{}]
    out: dict[str, bytes | None] = {}
    for name in _CUTOUTS:
        cutout = record.get(name)
        out[name] = cutout.get("stampData") if isinstance(cutout, dict) else None
    return out


def history(data: bytes) -> dict[str, list[dict[str, Any]]]:
    """The detection history of a ZTF packet: ``prv_candidates`` and, where present,
    ``fp_hists`` (forced photometry) and ``prv_nondetections``; missing ones are empty lists.
    """
    (record, *_rest) = _parts(data, _HISTORY) or [{}]
    return {name: list(record.get(name) or []) for name in _HISTORY}
