"""Tables of query results: the columns of each list, and JSON, VOTable and CSV output.

A list answers in the format asked by ``format=`` or, failing that, by the
``Accept`` header (:func:`negotiate`).  JSON carries the full documents; the
VOTable and CSV carry one flat row per item with the columns below, each with
its unit and IVOA UCD (UCD1+), so that TOPCAT and astropy know what they hold.
Times are ISO 8601 UTC strings (VOTable ``xtype="timestamp"``).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeAlias

import numpy as np

from alerts_schema.errors import RequestError

Format = Literal["json", "votable", "csv"]

Row: TypeAlias = Mapping[Any, Any]
"""One row, its values by column name: a dict, or SQLAlchemy's RowMapping (whose keys may
also be Column objects, hence not ``Mapping[str, Any]``)."""

MEDIA_TYPES: dict[Format, str] = {
    "json": "application/json",
    "votable": "application/x-votable+xml",
    "csv": "text/csv",
}
_ACCEPTED: dict[str, Format] = {
    "application/json": "json", "application/*": "json", "*/*": "json",
    "application/x-votable+xml": "votable", "application/votable+xml": "votable",
    "text/xml": "votable", "application/xml": "votable",
    "text/csv": "csv", "text/*": "csv",
}


class NotAcceptable(RequestError):
    """No format the client accepts is one this API writes."""


def negotiate(format_param: str | None, accept: str | None) -> Format:
    """The output format: ``format=`` if given, else the best ``Accept`` match, else JSON.

    Raises
    ------
    NotAcceptable
        When ``Accept`` names only media types this API does not write.
    """
    if format_param:
        return format_param  # type: ignore[return-value]  # validated by the route
    if not accept or not accept.strip():
        return "json"
    offers: list[tuple[float, int, str]] = []
    for position, part in enumerate(accept.split(",")):
        media, *params = (p.strip() for p in part.split(";"))
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality > 0:
            offers.append((-quality, position, media.lower()))
    for _, _, media in sorted(offers):
        if media in _ACCEPTED:
            return _ACCEPTED[media]
    raise NotAcceptable(f"this API writes {', '.join(MEDIA_TYPES.values())}; "
                        f"Accept was {accept!r}")


@dataclass(frozen=True)
class Column:
    """One column of a flat table.

    ``datatype`` is a VOTable datatype (``char``, ``double``, ``int``,
    ``long``, ``boolean``); ``xtype`` ``timestamp`` marks ISO 8601 times.
    """

    name: str
    datatype: str
    ucd: str
    description: str
    unit: str | None = None
    xtype: str | None = None
    get: Callable[[Row], Any] | None = None
    utype: str | None = None

    def value(self, row: Row) -> Any:
        value = self.get(row) if self.get else row.get(self.name)
        if isinstance(value, datetime):
            return value.isoformat().replace("+00:00", "Z")
        return value


def _text(name: str, ucd: str, description: str, **kw: Any) -> Column:
    return Column(name, "char", ucd, description, **kw)


def _time(name: str, ucd: str, description: str) -> Column:
    return Column(name, "char", ucd, description, xtype="timestamp")


def _real(name: str, ucd: str, description: str, unit: str | None = None) -> Column:
    return Column(name, "double", ucd, description, unit=unit)


ALERT_COLUMNS: tuple[Column, ...] = (
    _text("ivorn", "meta.id;meta.main", "Broker IVORN of this alert revision."),
    _text("source", "meta.id", "Input stream the alert came from."),
    _text("event_id", "meta.id", "The issuer's event identifier."),
    Column("revision", "int", "meta.version", "Revision number within the event."),
    _text("alert_type", "meta.code", "initial, update or retraction."),
    _text("role", "meta.code", "observation, test, drill, utility or prediction."),
    _text("messenger", "meta.code", "Messenger (gravitational_wave, neutrino, gamma_ray, ...)."),
    _text("facility", "meta.id;instr.obsty", "Observatory or collaboration."),
    _text("instrument", "instr", "Instrument or pipeline-level detector name."),
    _time("event_time", "time.epoch", "Trigger time (UTC)."),
    _real("event_time_error_s", "stat.error;time.epoch", "Uncertainty of the trigger time.",
          "s"),
    _time("received_at", "time.processing", "When the broker received it (UTC)."),
    _text("loc_kind", "meta.code", "Localization: point, ellipse, skymap or none."),
    _real("ra_deg", "pos.eq.ra;meta.main", "Right ascension (ICRS).", "deg"),
    _real("dec_deg", "pos.eq.dec;meta.main", "Declination (ICRS).", "deg"),
    _real("error_radius_deg", "stat.error;pos.eq",
          "Error circle radius or ellipse semi-major axis at its stated containment.", "deg"),
    _text("skymap_sha256", "meta.id;meta.file", "SHA-256 of the alert's HEALPix sky map."),
    _real("far_hz", "arith.rate", "False-alarm rate.", "Hz"),
    _real("p_value", "stat.probability", "p-value."),
    _real("signalness", "stat.probability", "Probability of astrophysical origin."),
    _real("energy_gev", "phys.energy", "Energy.", "GeV"),
    _real("energy_min_gev", "phys.energy;stat.min", "Lower end of the energy range.", "GeV"),
    _real("energy_max_gev", "phys.energy;stat.max", "Upper end of the energy range.", "GeV"),
    _text("data_rights", "meta.code", "public, embargoed or proprietary."),
    _time("embargo_until", "time.end", "End of the embargo (UTC)."),
    _text("pipeline", "meta.id;meta.software", "Pipeline that produced the alert."),
    _text("pipeline_version", "meta.version", "Version of that pipeline."),
    _text("reco_method", "meta.note", "Reconstruction method."),
    _text("raw_sha256", "meta.id;meta.file", "SHA-256 of the raw message as received."),
)

COINCIDENCE_COLUMNS: tuple[Column, ...] = (
    _text("ivorn", "meta.id;meta.main", "Broker IVORN of this coincidence revision."),
    _text("pairing", "meta.code", "Pairing of crossmatch/pairings.toml that found it."),
    _text("state", "meta.code", "new, updated or retracted."),
    Column("revision", "int", "meta.version", "Revision number."),
    _time("reference_time", "time.epoch", "Reference (earliest member) time (UTC)."),
    _time("created_at", "time.processing", "When the engine found it (UTC)."),
    _real("ra_deg", "pos.eq.ra;meta.main", "Right ascension of the best position (ICRS).",
          "deg"),
    _real("dec_deg", "pos.eq.dec;meta.main", "Declination of the best position (ICRS).",
          "deg"),
    _real("overlap", "stat.value", "Spatial overlap integral I = 4 pi * integral p1 p2."),
    _real("far_hz", "arith.rate",
          "Smallest false-alarm rate among the significance figures.", "Hz"),
    _text("members", "meta.id",
          "Member alert IVORNs, space-separated.",
          get=lambda row: " ".join(m["alert_id"] for m in row["document"]["members"])),
    _text("engine_version", "meta.version", "Cross-match engine version."),
    _text("config_hash", "meta.id", "SHA-256 of the pairings configuration used."),
)

VOEVENT_COLUMNS: tuple[Column, ...] = (
    _text("ivorn", "meta.id;meta.main", "IVORN of the VOEvent."),
    _text("role", "meta.code", "VOEvent role: observation, test or utility."),
    _text("kind", "meta.code", "alert (a detector trigger) or coincidence."),
    _text("subject_ivorn", "meta.id", "The alert or coincidence it announces."),
    _time("created_at", "time.creation", "When the broker issued it (UTC)."),
    _real("ra_deg", "pos.eq.ra;meta.main", "Right ascension of its subject (ICRS).", "deg"),
    _real("dec_deg", "pos.eq.dec;meta.main", "Declination of its subject (ICRS).", "deg"),
    _text("sha256", "meta.id;meta.file", "SHA-256 of the bytes as sent."),
    Column("size_bytes", "long", "phys.size;meta.file", "Size of the bytes as sent.",
           unit="byte"),
    _text("cites", "meta.id", "Cited IVORNs as cite:IVORN, space-separated.",
          get=lambda row: " ".join(f"{c['cite']}:{c['ivorn']}" for c in row["citations"])),
)


def to_csv(columns: Sequence[Column], rows: Sequence[Row]) -> bytes:
    """CSV with a header row; empty cells for missing values."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([c.name for c in columns])
    for row in rows:
        writer.writerow(["" if (v := c.value(row)) is None else v for c in columns])
    return out.getvalue().encode("utf-8")


# The null value a VOTable 1.1 integer column declares for an empty cell.
_INTEGER_TYPES = {"short": -32768, "int": -2147483648, "long": -9223372036854775808}


def to_votable(columns: Sequence[Column], rows: Sequence[Row], *,
               name: str, description: str, infos: Sequence[tuple[str, str, str]] = (),
               version: str = "1.4") -> bytes:
    """A VOTable (1.4 unless ``version`` says) with one RESOURCE (type results) and one TABLE.

    ``infos`` are (name, value, text) INFO elements of the RESOURCE; a
    ``QUERY_STATUS`` of ``OK`` comes first unless one is given.  ``version``
    "1.1" is for Simple Cone Search 1.03, whose UCD1 words (``ID_MAIN``) later
    VOTable versions no longer accept: times lose their ``xtype`` and integer
    columns declare a null value.
    """
    # astropy.io.votable costs about 0.15 s to import and only a VOTable answer needs it:
    # deferred so that `mmbroker serve` and `stage api` start without it.
    from astropy.io.votable.tree import Field, Info, Resource, TableElement, Values, VOTableFile

    votable = VOTableFile(version=version)
    # VOTable 1.1 (what SCS 1.03 cites) has no xtype and no empty integer cells.
    legacy = version == "1.1"
    resource = Resource(type="results")
    votable.resources.append(resource)
    given = {i[0] for i in infos}
    for info_name, value, text in ([] if "QUERY_STATUS" in given
                                   else [("QUERY_STATUS", "OK", "")]) + list(infos):
        info = Info(name=info_name, value=value)
        if text:
            info.content = text
        resource.infos.append(info)
    table = TableElement(votable, name=name)
    table.description = description
    resource.tables.append(table)
    columns_values = [(col, [col.value(row) for row in rows]) for col in columns]
    for col, values in columns_values:
        extra: dict[str, Any] = {"arraysize": "*"} if col.datatype == "char" else {}
        datatype = col.datatype
        # VOTable char is ASCII: a column holding anything else (a detector named in its
        # own script, say) is written as unicodeChar rather than failing the whole page.
        if datatype == "char" and any(v is not None and not str(v).isascii() for v in values):
            datatype = "unicodeChar"
        field = Field(votable, name=col.name, datatype=datatype, unit=col.unit,
                      ucd=col.ucd or None, xtype=None if legacy else col.xtype,
                      utype=col.utype, **extra)
        field.description = col.description
        if legacy and datatype in _INTEGER_TYPES:
            field.values = Values(votable, field, null=_INTEGER_TYPES[datatype])
        table.fields.append(field)
    table.create_arrays(len(rows))
    for col, values in columns_values:
        missing = np.array([v is None for v in values], dtype=bool)
        if col.datatype == "char":
            filled: Any = np.array(["" if v is None else str(v) for v in values], dtype=object)
        elif col.datatype == "double":
            filled = np.array([np.nan if v is None else float(v) for v in values])
        else:
            filled = np.array([0 if v is None else v for v in values])
        if len(rows):
            table.array[col.name] = filled
            table.array.mask[col.name] = missing
    buffer = io.BytesIO()
    votable.to_xml(buffer)
    return buffer.getvalue()


def error_votable(message: str, version: str = "1.4") -> bytes:
    """A VOTable reporting an error (DALI ``QUERY_STATUS`` ERROR, and SCS 1.03 ``Error``)."""
    return to_votable([], [], name="error", description="The query failed.",
                      infos=[("QUERY_STATUS", "ERROR", message), ("Error", message, message)],
                      version=version)
