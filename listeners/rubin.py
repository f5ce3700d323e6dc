"""Rubin (LSST) alerts: Confluent-framed Avro from Kafka, or Avro container files.

On Kafka, Rubin sends each alert as one schemaless Avro datum in the Confluent
wire format: byte 0 is the magic byte 0, bytes 1-4 the schema id (big-endian),
the rest the Avro body.  The body carries no schema, so the schema comes from a
:class:`SchemaRegistry` of local schema files, looked up by id.

**Schema ids.**  Rubin registers schema version MAJOR.MINOR under the id
``MAJOR * 100 + MINOR`` ("space for two digits in the minor version": 7.1 is
701, 13.10 would be 1310; lsst/alert_packet's README).  The samples agree:
pitt-google's ``lsst.v7_4`` message starts ``00 000002c0`` (704) and its
``lsst.v11_0`` one ``00 0000044c`` (1100).  A schema file gets its id from its
record name ``lsst.v<MAJOR>_<MINOR>.alert``, or from a file name that is the id
itself (``704.avsc``).

Files of alerts (``mmbroker ingest fakeAlert.avro``) are Avro object container
files with the writer schema in their header, handled like ZTF's.

What the Alert says:

* ``event_id`` is the ``diaSourceId`` of the triggering DIASource; revision 0.
  ``diaObjectId``, ``ssObjectId`` and (schemas up to 7.x) ``alertId`` go to ``extra``.
* ``trigger_time`` is the DIASource's ``midpointMjdTai`` (``midPointTai`` up to
  schema 4), an MJD in **TAI**, converted to UTC by subtracting TAI - UTC from
  astropy's leap-second table (37 s since 2017).  The TAI value is kept in ``extra``.
* The localization is the DIASource position with an error circle at
  containment 0.9 of radius 2.146 x max(``raErr``, ``decErr``) (the 90% radius of
  a circular Gaussian; taking the larger error, with ``raErr`` not scaled by
  cos(dec), errs on the large side).  Without errors (early schemas) the radius
  is :data:`DEFAULT_ERROR_RADIUS_DEG`, 1 arcsec.
* Fluxes stay fluxes: ``psfFlux``, ``apFlux``, ``scienceFlux`` and their errors
  in nJy under Rubin's names in ``extra``, with ``band``, ``snr`` and ``reliability``.
* Rubin alerts are world-public: ``data_rights`` is public.

Only ``diaSource`` and the identifiers are decoded (:data:`PROJECTION`): the
history (``prvDiaSources``, ``prvDiaForcedSources``), ``diaObject``, solar
system records and cutouts are skipped by fastavro and stay in the raw bytes.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastavro.schema import load_schema

from alerts_schema import Alert
from alerts_schema.errors import ConfigurationError, InputError, MalformedInput, NormalizationError
from listeners import avro
from listeners.base import MessageMeta, Normalized
from listeners.common import finite_or_none, survey_detection, tai_mjd_to_utc
from listeners.detect import Format

__all__ = [
    "CONTAINMENT",
    "DEFAULT_ERROR_RADIUS_DEG",
    "FAMILY",
    "PROJECTION",
    "STREAM",
    "SchemaRegistry",
    "accepts",
    "handle",
    "normalize",
    "registry",
    "schema_id_for_name",
    "use_registry",
]

STREAM = "lsst"
FACILITY = "Rubin"
_SOURCE_PREFIXES = ("lsst", "rubin")
CONTAINMENT = 0.9
# Radius of a circular Gaussian holding CONTAINMENT, in units of its per-axis sigma.
_SIGMA_TO_RADIUS = math.sqrt(-2.0 * math.log(1.0 - CONTAINMENT))  # 2.146
DEFAULT_ERROR_RADIUS_DEG = 1.0 / 3600.0  # 1 arcsec when the DIASource states no error
_ALERT_NAME = re.compile(r"^lsst\.v(\d+)_(\d+)\.alert$")
FAMILY = avro.SchemaFamily("Rubin", re.compile(r"lsst\.v\d+_\d+\.alert"))
"""The writer schemas of Rubin alert containers: ``lsst.v<MAJOR>_<MINOR>.alert``."""

# DIASource fields read (the union over schema versions 3 to 11).
_IDS = ("diaSourceId", "diaObjectId", "ssObjectId", "parentDiaSourceId", "visit", "detector",
        "ccdVisitId", "programId")
_PHOTOMETRY = ("band", "filterName", "psfFlux", "psfFluxErr", "psFlux", "psFluxErr", "apFlux",
               "apFluxErr", "scienceFlux", "scienceFluxErr", "snr", "reliability",
               "isNegative", "extendedness")
_TIMES = ("midpointMjdTai", "midPointTai", "timeProcessedMjdTai", "time_processed",
          "timeWithdrawnMjdTai")
_POSITION = ("ra", "dec", "decl", "raErr", "decErr", "declErr", "ra_dec_Cov", "ra_decl_Cov")

PROJECTION = avro.Projection(
    name="lsst-diasource",
    keep=frozenset({"alertId", "diaSourceId", "observation_reason", "target_name",
                    "diaSource"}),
    narrow={"diaSource": frozenset(_IDS + _PHOTOMETRY + _TIMES + _POSITION)},
)
"""What the hot path decodes: the identifiers and the triggering DIASource."""


def schema_id_for_name(name: str) -> int | None:
    """Rubin's registry id for the alert schema named ``name``, e.g. 704 for ``lsst.v7_4.alert``.

    None for other names, and for minor versions over 99, which the two-digit
    rule cannot number.
    """
    match = _ALERT_NAME.match(name)
    if not match or int(match.group(2)) > 99:
        return None
    return int(match.group(1)) * 100 + int(match.group(2))


class SchemaRegistry:
    """Rubin alert schemas by Confluent schema id, loaded from local files.

    Every file under ``directory`` (recursively) that holds an alert schema is
    parsed once, here:

    * ``*.avsc`` and ``*.json`` Avro schemas, with named types in sibling
      ``<full name>.avsc`` files as lsst/alert_packet lays them out
      (``schema/7/4/lsst.v7_4.alert.avsc`` beside ``lsst.v7_4.diaSource.avsc``);
    * ``*.json`` answers of a Confluent schema registry (``{"schema": "..."}``,
      with an ``"id"`` or an id as the file name);
    * ``*.avro`` object container files, whose header holds the writer schema
      (Rubin's sample ``fakeAlert.avro`` files), unless ``include_containers`` is False.

    The id is the file name when that is a number, else ``"id"`` in a registry
    answer, else :func:`schema_id_for_name` of the record name.  Files that are
    no Avro schema or no alert schema (the DIASource parts, sample alerts as
    JSON) are passed over and listed in :attr:`skipped`.

    Parameters
    ----------
    directory
        Where the schema files are; None gives an empty registry.
    include_containers
        Whether Avro container files count as schema files.

    Raises
    ------
    ConfigurationError
        The directory does not exist, a schema file does not parse, or two
        files give one id different schemas.
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None, *,
                 include_containers: bool = True) -> None:
        self._schemas: dict[int, avro.WriterSchema] = {}
        self._origins: dict[int, str] = {}
        self.skipped: list[tuple[str, str]] = []
        self.directory = None if directory is None else Path(directory)
        if self.directory is None:
            return
        if not self.directory.is_dir():
            raise ConfigurationError(f"Rubin schema directory {self.directory} does not exist")
        for path in sorted(self._candidates(include_containers)):
            self._load(path)

    def __contains__(self, schema_id: object) -> bool:
        return schema_id in self._schemas

    def __len__(self) -> int:
        return len(self._schemas)

    def __repr__(self) -> str:
        return f"SchemaRegistry({self.directory}, ids={self.ids()})"

    def ids(self) -> list[int]:
        """The schema ids known, ascending."""
        return sorted(self._schemas)

    def origin(self, schema_id: int) -> str:
        """Which file (or ``add`` call) the schema with ``schema_id`` came from."""
        return self._origins[schema_id]

    def get(self, schema_id: int) -> avro.WriterSchema:
        """The writer schema registered under ``schema_id``.

        Raises
        ------
        MalformedInput
            For an id the registry does not hold, naming the ids it does.
        """
        try:
            return self._schemas[schema_id]
        except KeyError:
            pass
        major, minor = divmod(schema_id, 100)
        known = ", ".join(map(str, self.ids())) or "none: no schema directory configured"
        raise MalformedInput(f"unknown Rubin schema id {schema_id} (would be lsst.v{major}_"
                             f"{minor}); the schema registry holds: {known}")

    def add(self, schema_id: int, schema: Any, origin: str = "<added>") -> avro.WriterSchema:
        """Register ``schema`` (Avro schema JSON value or parsed dict) under ``schema_id``.

        Raises
        ------
        ConfigurationError
            When ``schema_id`` already holds a different schema or ``schema`` is invalid.
        """
        try:
            writer = avro.parse_writer_schema(schema)
        except InputError as exc:
            raise ConfigurationError(f"Rubin schema {origin}: {exc.reason}") from exc
        existing = self._schemas.get(schema_id)
        if existing is not None:
            if existing.fingerprint != writer.fingerprint:
                raise ConfigurationError(
                    f"Rubin schema id {schema_id}: {origin} differs from "
                    f"{self._origins[schema_id]} ({writer.name} vs {existing.name})")
            return existing
        self._schemas[schema_id] = writer
        self._origins[schema_id] = origin
        return writer

    # -- loading -----------------------------------------------------------------------

    def _candidates(self, include_containers: bool) -> Iterator[Path]:
        assert self.directory is not None
        suffixes = {".avsc", ".json"} | ({".avro"} if include_containers else set())
        for path in self.directory.rglob("*"):
            if path.is_file() and path.suffix.lower() in suffixes:
                yield path

    def _load(self, path: Path) -> None:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigurationError(f"Rubin schema file {path}: {exc}") from exc
        try:
            if path.suffix.lower() == ".avro":
                self._load_container(path, data)
            else:
                self._load_json(path, data)
        except InputError as exc:
            raise ConfigurationError(f"Rubin schema file {path}: {exc.reason}") from exc

    def _load_container(self, path: Path, data: bytes) -> None:
        if not data.startswith(avro.OCF_MAGIC):
            self.skipped.append((str(path), "not an Avro container file"))
            return
        header = avro.read_container_header(data)
        schema = json.loads(header.schema_json)
        self._register(path, schema, _full_name(schema), None)

    def _load_json(self, path: Path, data: bytes) -> None:
        try:
            document = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigurationError(f"Rubin schema file {path}: not JSON: {exc}") from exc
        if isinstance(document, dict) and isinstance(document.get("schema"), str):
            # A Confluent schema registry answer: the schema is a string inside.
            explicit = document.get("id")
            schema = json.loads(document["schema"])
            self._register(path, schema, _full_name(schema),
                           explicit if isinstance(explicit, int) else None)
            return
        if not (isinstance(document, dict) and document.get("type") in ("record", "error")):
            self.skipped.append((str(path), "not an Avro record schema"))
            return
        name = _full_name(document)
        if path.stem.isdigit() or schema_id_for_name(name) is not None:
            # load_schema resolves named types kept in sibling <full name>.avsc files.
            try:
                schema = load_schema(str(path))
            except Exception as exc:  # fastavro raises assorted types for bad schema files
                raise ConfigurationError(f"Rubin schema file {path}: {type(exc).__name__}: "
                                         f"{exc}") from exc
            self._register(path, schema, name, None)
        else:
            self.skipped.append((str(path), f"{name!r} is not an alert schema"))

    def _register(self, path: Path, schema: Any, name: str, explicit: int | None) -> None:
        schema_id = (int(path.stem) if path.stem.isdigit() else explicit
                     if explicit is not None else schema_id_for_name(name))
        if schema_id is None:
            self.skipped.append((str(path), f"{name!r} is not an alert schema"))
            return
        self.add(schema_id, schema, str(path))


def _full_name(schema: Any) -> str:
    if not isinstance(schema, dict):
        return ""
    name = str(schema.get("name", ""))
    namespace = schema.get("namespace")
    return name if "." in name or not namespace else f"{namespace}.{name}"


_registry = SchemaRegistry()


def use_registry(schemas: SchemaRegistry) -> None:
    """Make ``schemas`` the registry :func:`normalize` and :func:`accepts` use by default."""
    global _registry
    _registry = schemas


def registry() -> SchemaRegistry:
    """The registry in use (empty until :func:`use_registry` is called)."""
    return _registry


# -- routing ---------------------------------------------------------------------------

def accepts(fmt: Format, decoded: Any, meta: MessageMeta, data: bytes | None = None) -> bool:
    """True for Rubin alerts.

    Accepts Confluent-framed Avro from an ``lsst*``/``rubin*`` stream or whose
    schema id the registry holds, and Avro container files from such a stream
    or whose writer schema is ``lsst.*``.  The router passes ``decoded=None``
    for Avro; the raw bytes, given as ``data`` (or as ``decoded``), let the
    schema id or name decide for other sources.
    """
    if fmt not in (Format.AVRO_CONFLUENT, Format.AVRO_OCF):
        return False
    if meta.source.lower().startswith(_SOURCE_PREFIXES):
        return True
    raw = data if data is not None else decoded
    if not isinstance(raw, bytes | bytearray):
        return False
    raw = bytes(raw)
    if fmt is Format.AVRO_CONFLUENT:
        return (len(raw) > avro.CONFLUENT_HEADER_BYTES and raw[0] == avro.CONFLUENT_MAGIC
                and int.from_bytes(raw[1:5], "big") in _registry)
    schema = avro.peek_container_schema(raw)
    return schema is not None and schema.name.startswith("lsst.")


def handle(data: bytes, decoded: Any, meta: MessageMeta) -> Normalized:
    """Route entry point: :func:`normalize` (``decoded`` is unused for Avro)."""
    return normalize(data, meta)


def normalize(data: bytes, meta: MessageMeta,
              schemas: SchemaRegistry | None = None) -> Normalized:
    """One Alert per Rubin alert in ``data`` (Confluent frame or container file).

    Parameters
    ----------
    data
        A Confluent wire-format message, or an Avro object container file.
    meta
        The transport's metadata.
    schemas
        The registry for Confluent schema ids; default :func:`registry`.

    Raises
    ------
    MalformedInput
        Wrong magic byte, unknown schema id, truncated or undecodable body.
    NormalizationError
        A record without a usable DIASource (position, time).
    """
    if data.startswith(avro.OCF_MAGIC):
        writer, records = avro.decode_container(data, PROJECTION, family=FAMILY)
        schema_id = schema_id_for_name(writer.name)
        if not records:
            raise NormalizationError("Rubin Avro container holds no alert record")
    else:
        schema_id, body = avro.split_confluent(data)
        writer = (schemas or _registry).get(schema_id)
        records = [avro.decode_datum(body, writer, PROJECTION)]
    return Normalized(alerts=tuple(_alert(rec, meta, writer.name, schema_id)
                                   for rec in records))


def _alert(record: dict[str, Any], meta: MessageMeta, schema_name: str,
           schema_id: int | None) -> Alert:
    source = record.get("diaSource")
    if not isinstance(source, dict):
        raise NormalizationError(f"Avro record ({schema_name!r}) has no 'diaSource' record: "
                                 "not a Rubin alert")
    dia_source_id = source.get("diaSourceId", record.get("diaSourceId"))
    if not isinstance(dia_source_id, int):
        raise NormalizationError(f"Rubin alert: diaSourceId {dia_source_id!r} is not an integer")
    what = f"Rubin diaSource {dia_source_id}"
    ra = finite_or_none(source.get("ra"), field="diaSource.ra")
    dec_key = "dec" if "dec" in source else "decl"
    dec = finite_or_none(source.get(dec_key), field=f"diaSource.{dec_key}")
    if ra is None or dec is None or not -90.0 <= dec <= 90.0:
        raise NormalizationError(f"{what}: no valid position (ra={source.get('ra')!r}, "
                                 f"{dec_key}={source.get(dec_key)!r})")
    time_key = "midpointMjdTai" if "midpointMjdTai" in source else "midPointTai"
    trigger_time = tai_mjd_to_utc(source.get(time_key), field=f"diaSource.{time_key}")
    event_id = str(dia_source_id)
    return survey_detection(
        meta, stream=STREAM, facility=FACILITY, event_id=event_id, ra_deg=ra, dec_deg=dec,
        error_radius_deg=_error_radius_deg(source), containment=CONTAINMENT,
        trigger_time=trigger_time, data_rights="public", pipeline="Rubin Alert Production",
        pipeline_version=schema_name or None,
        extra=_extra(record, source, schema_name, schema_id), what=what)


def _error_radius_deg(source: dict[str, Any]) -> float:
    """The CONTAINMENT radius (deg) from the DIASource's per-axis errors (deg)."""
    sigmas = [s for s in (finite_or_none(source.get(k)) for k in ("raErr", "decErr", "declErr"))
              if s is not None and s > 0]
    if not sigmas:
        return DEFAULT_ERROR_RADIUS_DEG
    # Not clamped: an error past 180 deg is refused by the shared rule (issue 14, item 6).
    return _SIGMA_TO_RADIUS * max(sigmas)


def _extra(record: dict[str, Any], source: dict[str, Any], schema_name: str,
           schema_id: int | None) -> dict[str, Any]:
    extra: dict[str, Any] = {"schema_name": schema_name, "schema_id": schema_id}
    if record.get("alertId") is not None:  # schemas up to 7.x
        extra["alertId"] = record["alertId"]
    for key in ("observation_reason", "target_name"):
        if record.get(key) is not None:
            extra[key] = record[key]
    for key in _IDS + _PHOTOMETRY + _TIMES + _POSITION:
        if key in source and key not in ("ra", "dec", "decl"):
            extra[key] = avro.json_value(source[key])
    extra["band"] = source.get("band", source.get("filterName"))
    return extra
