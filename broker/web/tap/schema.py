"""The tables TAP publishes: ``ivoa.obscore``, ``mmbroker.*`` and ``TAP_SCHEMA.*``.

Each published table is a SELECT built by SQLAlchemy over the archive's own
tables, evaluated per query as a common table expression (no database VIEW,
so no migration, and the same SQL on SQLite and PostgreSQL).  The caller's
data rights are part of that SELECT (:func:`broker.archive.query.alert_visible`
and :func:`~broker.archive.query.coincidence_visible`), so a row the caller may
not see is not in the table their ADQL reads.

``ivoa.obscore`` follows ObsCore 1.1 (names, units, UCDs and utypes as its
table 6 and STILTS taplint have them), one row per alert revision, extended
with the broker's own columns.  Positional tables also carry the order-29
HEALPix index as the hidden column :data:`HPX_COLUMN`, which the ADQL
translator (:mod:`broker.web.tap.adql`) uses for cones and polygons; no ADQL
query can name it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Float, String, and_, case, cast, func, literal, null, select, union_all
from sqlalchemy.orm import aliased

from broker.archive import query as q
from broker.archive.models import AlertRow, CoincidenceMember, CoincidenceRow

HPX_COLUMN = "tap_hpx29_"
"""The hidden order-29 HEALPix column of positional tables (not in TAP_SCHEMA)."""
TIME_COLUMN = "tap_time_"
"""The hidden archive time column of ``ivoa.obscore`` (the trigger time as stored, indexed
with the HEALPix column), which bounds on ``t_min`` and ``t_max`` are also written on."""
TIME_SCAN_COLUMN = "tap_time_scan_"
"""The same time on SQLite as ``+event_time``: a bound SQLite's planner will not walk
the time index for, when the sky ranges are the cheaper plan."""

# h c in GeV m: the wavelength of a photon of energy E GeV is HC_GEV_M / E metres.
HC_GEV_M = 1.239841984e-15
# Messengers whose energies are photon energies (ObsCore's spectral axis is a wavelength).
PHOTON_MESSENGERS = ("gamma_ray", "x_ray", "ultraviolet", "optical", "infrared", "radio")


@dataclass(frozen=True)
class Context:
    """What a published table depends on: backend, caller, time and our URL."""

    dialect: str
    viewer: q.Viewer
    now: datetime
    base_url: str


Expr = Callable[[Context], Any]

# ADQL reserved words among our column names (TAP_SCHEMA.columns."size").
ADQL_RESERVED = frozenset({"SIZE"})


@dataclass(frozen=True)
class TapColumn:
    """One published column and its TAP_SCHEMA metadata.

    ``datatype`` is a VOTable datatype (``char``, ``int``, ``long``,
    ``double``); ``xtype`` ``timestamp`` marks ISO 8601 UTC strings and
    ``adql:REGION`` an STC-S region.
    """

    name: str
    datatype: str
    description: str
    unit: str | None = None
    ucd: str | None = None
    utype: str | None = None
    xtype: str | None = None
    principal: bool = False
    indexed: bool = False
    std: bool = False
    expr: Expr | None = None

    @property
    def adql_name(self) -> str:
        """The name as ADQL writes it: delimited when it is a reserved word."""
        return f'"{self.name}"' if self.name.upper() in ADQL_RESERVED else self.name

    @property
    def arraysize(self) -> str | None:
        return "*" if self.datatype == "char" else None


@dataclass(frozen=True)
class ForeignKey:
    """A TAP_SCHEMA key: ``from_columns`` of this table name ``to_columns`` of ``target``."""

    key_id: str
    target: str
    columns: tuple[tuple[str, str], ...]
    description: str


@dataclass(frozen=True)
class TapTable:
    """One published table: its qualified name, columns and how to build it."""

    schema: str
    name: str
    description: str
    columns: tuple[TapColumn, ...]
    build: Callable[[Context], Any]
    utype: str | None = None
    keys: tuple[ForeignKey, ...] = ()
    #: (ra column, dec column) the hidden HEALPix column indexes, if any.
    position: tuple[str, str] | None = None
    #: Columns bounding the hidden time column: "lower" (the column is never after it, so
    #: ``column >= c`` implies ``time >= c``) or "upper" (never before it), as MJD days.
    time_bounds: tuple[tuple[str, str], ...] = ()

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def cte_name(self) -> str:
        """The name its common table expression has in the SQL sent to the database."""
        return f"tap_{self.schema}_{self.name}".lower()

    def column(self, name: str) -> TapColumn | None:
        for col in self.columns:
            if col.name == name:
                return col
        return None


# -- per-backend SQL helpers ------------------------------------------------------------------


def mjd(ctx: Context, column: Any) -> Any:
    """A UTC timestamp column as a Modified Julian Date (days, double)."""
    if ctx.dialect == "sqlite":
        return func.julianday(column) - 2400000.5
    return cast(func.extract("epoch", column), Float) / 86400.0 + 40587.0


def iso(ctx: Context, column: Any) -> Any:
    """A UTC timestamp column as ISO 8601 text with a Z (millisecond precision)."""
    if ctx.dialect == "sqlite":
        return func.strftime("%Y-%m-%dT%H:%M:%fZ", column)
    return func.to_char(column, 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')


def _text(column: Any) -> Any:
    return cast(column, String)


def _json_text(column: Any, *path: str) -> Any:
    value = column
    for key in path:
        value = value[key]
    return value.as_string()


# -- ivoa.obscore ---------------------------------------------------------------------------

_A = AlertRow


def _obs(name: str, datatype: str, utype: str | None, ucd: str | None, unit: str | None,
         description: str, expr: Expr, *, xtype: str | None = None,
         principal: bool = False, indexed: bool = False) -> TapColumn:
    return TapColumn(name, datatype, description, unit, ucd,
                     f"obscore:{utype}" if utype else None, xtype, principal, indexed,
                     std=utype is not None, expr=expr)


def _err_days(ctx: Context) -> Any:
    return func.coalesce(_A.event_time_error_s, 0.0) / 86400.0


def _photon(expr: Any) -> Any:
    return case((_A.messenger.in_(PHOTON_MESSENGERS), expr), else_=null())


def _region(ctx: Context) -> Any:
    ra, dec = _text(_A.ra_deg), _text(_A.dec_deg)
    return case(
        (_A.ra_deg.is_(None), null()),
        (_A.error_radius_deg.is_(None), literal("POSITION ICRS ") + ra + " " + dec),
        else_=literal("CIRCLE ICRS ") + ra + " " + dec + " " + _text(_A.error_radius_deg))


def _access_url(ctx: Context) -> Any:
    return literal(f"{ctx.base_url}/api/v1/alerts/") + _A.ivorn


OBSCORE_COLUMNS: tuple[TapColumn, ...] = (
    _obs("dataproduct_type", "char", "ObsDataset.dataProductType", "meta.code.class", None,
         "Data product type: always 'event' (one alert revision).",
         lambda c: literal("event"), principal=True),
    _obs("calib_level", "int", "ObsDataset.calibLevel", "meta.code;obs.calib", None,
         "Calibration level: 2, a calibrated and reconstructed event as the facility "
         "issued it.", lambda c: literal(2)),
    _obs("obs_collection", "char", "DataID.Collection", "meta.id", None,
         "The input stream the alert arrived on (e.g. gcn.notices.swift.bat.guano).",
         lambda c: _A.source, principal=True),
    _obs("obs_id", "char", "DataID.observationID", "meta.id", None,
         "Broker IVORN of the alert revision.", lambda c: _A.ivorn, principal=True,
         indexed=True),
    _obs("obs_publisher_did", "char", "Curation.PublisherDID", "meta.ref.ivoid", None,
         "Broker IVORN of the alert revision (its publisher dataset identifier).",
         lambda c: _A.ivorn, indexed=True),
    _obs("access_url", "char", "Access.Reference", "meta.ref.url", None,
         "URL of the alert document (JSON) in this broker's REST API.", _access_url,
         principal=True),
    _obs("access_format", "char", "Access.Format", "meta.code.mime", None,
         "Format of the document at access_url.", lambda c: literal("application/json")),
    _obs("access_estsize", "long", "Access.Size", "phys.size;meta.file", "kbyte",
         "Estimated size of the document at access_url (not known: null).",
         lambda c: cast(null(), Float)),
    _obs("target_name", "char", "Target.Name", "meta.id;src", None,
         "The issuer's event identifier.", lambda c: _A.event_id, principal=True),
    _obs("s_ra", "double", "Char.SpatialAxis.Coverage.Location.Coord.Position2D.Value2.C1",
         "pos.eq.ra", "deg", "Right ascension of the best position (ICRS).",
         lambda c: _A.ra_deg, principal=True, indexed=True),
    _obs("s_dec", "double", "Char.SpatialAxis.Coverage.Location.Coord.Position2D.Value2.C2",
         "pos.eq.dec", "deg", "Declination of the best position (ICRS).",
         lambda c: _A.dec_deg, principal=True, indexed=True),
    _obs("s_fov", "double", "Char.SpatialAxis.Coverage.Bounds.Extent.diameter",
         "phys.angSize;instr.fov", "deg",
         "Diameter of the error circle (twice error_radius_deg).",
         lambda c: _A.error_radius_deg * 2.0),
    _obs("s_region", "char", "Char.SpatialAxis.Coverage.Support.Area", "pos.outline;obs.field",
         None, "Error circle (STC-S CIRCLE), or the POSITION when no error is given.",
         _region, xtype="adql:REGION"),
    _obs("s_resolution", "double", "Char.SpatialAxis.Resolution.Refval.value",
         "pos.angResolution", "arcsec",
         "Localization error: error_radius_deg in arcsec.",
         lambda c: _A.error_radius_deg * 3600.0),
    _obs("s_xel1", "long", "Char.SpatialAxis.numBins1", "meta.number", None,
         "Number of elements along the first spatial axis (an event has none: null).",
         lambda c: cast(null(), Float)),
    _obs("s_xel2", "long", "Char.SpatialAxis.numBins2", "meta.number", None,
         "Number of elements along the second spatial axis (null).",
         lambda c: cast(null(), Float)),
    _obs("t_min", "double", "Char.TimeAxis.Coverage.Bounds.Limits.StartTime",
         "time.start;obs.exposure", "d",
         "Trigger time minus its uncertainty, MJD (UTC).",
         lambda c: mjd(c, _A.event_time) - _err_days(c), principal=True, indexed=True),
    _obs("t_max", "double", "Char.TimeAxis.Coverage.Bounds.Limits.StopTime",
         "time.end;obs.exposure", "d",
         "Trigger time plus its uncertainty, MJD (UTC).",
         lambda c: mjd(c, _A.event_time) + _err_days(c), principal=True),
    _obs("t_exptime", "double", "Char.TimeAxis.Coverage.Support.Extent",
         "time.duration;obs.exposure", "s",
         "Width of the time interval, t_max - t_min, in seconds.",
         lambda c: func.coalesce(_A.event_time_error_s, 0.0) * 2.0),
    _obs("t_resolution", "double", "Char.TimeAxis.Resolution.Refval.value", "time.resolution",
         "s", "Uncertainty of the trigger time.", lambda c: _A.event_time_error_s),
    _obs("t_xel", "long", "Char.TimeAxis.numBins", "meta.number", None,
         "Number of elements along the time axis (null).", lambda c: cast(null(), Float)),
    _obs("em_min", "double", "Char.SpectralAxis.Coverage.Bounds.Limits.LoLimit",
         "em.wl;stat.min", "m",
         "Shortest wavelength, from energy_max_gev, for photon messengers only.",
         lambda c: _photon(HC_GEV_M / _A.energy_max_gev)),
    _obs("em_max", "double", "Char.SpectralAxis.Coverage.Bounds.Limits.HiLimit",
         "em.wl;stat.max", "m",
         "Longest wavelength, from energy_min_gev, for photon messengers only.",
         lambda c: _photon(HC_GEV_M / _A.energy_min_gev)),
    _obs("em_res_power", "double", "Char.SpectralAxis.Resolution.ResolPower.refVal",
         "spect.resolution", None, "Spectral resolving power (not known: null).",
         lambda c: cast(null(), Float)),
    _obs("em_xel", "long", "Char.SpectralAxis.numBins", "meta.number", None,
         "Number of elements along the spectral axis (null).", lambda c: cast(null(), Float)),
    _obs("o_ucd", "char", "Char.ObservableAxis.ucd", "meta.ucd", None,
         "UCD of the observable (an event list has none: null).",
         lambda c: cast(null(), String)),
    _obs("pol_states", "char", "Char.PolarizationAxis.stateList",
         "meta.code;phys.polarization", None, "Polarization states (null).",
         lambda c: cast(null(), String)),
    _obs("pol_xel", "long", "Char.PolarizationAxis.numBins", "meta.number", None,
         "Number of polarization states (null).", lambda c: cast(null(), Float)),
    _obs("facility_name", "char", "Provenance.ObsConfig.Facility.name", "meta.id;instr.tel",
         None, "Observatory or collaboration.", lambda c: _A.facility, principal=True),
    _obs("instrument_name", "char", "Provenance.ObsConfig.Instrument.name", "meta.id;instr",
         None, "Instrument or detector.", lambda c: _A.instrument, principal=True),
    _obs("data_rights", "char", "Curation.Rights", "meta.code", None,
         "public, embargoed or proprietary (as the alert was issued).",
         lambda c: _A.data_rights),
    _obs("obs_release_date", "char", "Curation.releaseDate", "time.release", None,
         "When the alert is or was public: the embargo's end, else its receipt (UTC).",
         lambda c: iso(c, func.coalesce(_A.embargo_until, _A.received_at)),
         xtype="timestamp"),
    # The broker's own columns.
    TapColumn("messenger", "char", "Messenger (gravitational_wave, neutrino, gamma_ray, "
              "x_ray, ultraviolet, optical, infrared, radio, cosmic_ray, other).",
              ucd="meta.code", principal=True, expr=lambda c: _A.messenger),
    TapColumn("event_id", "char", "The issuer's event identifier.", ucd="meta.id",
              expr=lambda c: _A.event_id),
    TapColumn("revision", "int", "Revision number within the event.", ucd="meta.version",
              expr=lambda c: _A.revision),
    TapColumn("alert_type", "char", "initial, update or retraction.", ucd="meta.code",
              expr=lambda c: _A.alert_type),
    TapColumn("role", "char", "observation, test, drill, utility or prediction.",
              ucd="meta.code", expr=lambda c: _A.role),
    TapColumn("event_time", "char", "Trigger time (UTC).", ucd="time.epoch",
              xtype="timestamp", expr=lambda c: iso(c, _A.event_time)),
    TapColumn("event_time_error_s", "double", "Uncertainty of the trigger time.", "s",
              "stat.error;time.epoch", expr=lambda c: _A.event_time_error_s),
    TapColumn("received_at", "char", "When the broker received it (UTC).",
              ucd="time.processing", xtype="timestamp",
              expr=lambda c: iso(c, _A.received_at)),
    TapColumn("loc_kind", "char", "Localization: point, ellipse, skymap or none.",
              ucd="meta.code", expr=lambda c: _A.loc_kind),
    TapColumn("error_radius_deg", "double",
              "Error circle radius or ellipse semi-major axis at its stated containment.",
              "deg", "stat.error;pos.eq", expr=lambda c: _A.error_radius_deg),
    TapColumn("skymap_sha256", "char", "SHA-256 of the alert's HEALPix sky map.",
              ucd="meta.id;meta.file", expr=lambda c: _A.skymap_sha256),
    TapColumn("far_hz", "double", "False-alarm rate.", "Hz", "arith.rate",
              expr=lambda c: _A.far_hz),
    TapColumn("p_value", "double", "p-value.", ucd="stat.probability",
              expr=lambda c: _A.p_value),
    TapColumn("signalness", "double", "Probability of astrophysical origin.",
              ucd="stat.probability", expr=lambda c: _A.signalness),
    TapColumn("energy_gev", "double", "Energy.", "GeV", "phys.energy",
              expr=lambda c: _A.energy_gev),
    TapColumn("energy_min_gev", "double", "Lower end of the energy range.", "GeV",
              "phys.energy;stat.min", expr=lambda c: _A.energy_min_gev),
    TapColumn("energy_max_gev", "double", "Upper end of the energy range.", "GeV",
              "phys.energy;stat.max", expr=lambda c: _A.energy_max_gev),
    TapColumn("embargo_until", "char", "End of the embargo (UTC).", ucd="time.end",
              xtype="timestamp", expr=lambda c: iso(c, _A.embargo_until)),
    TapColumn("pipeline", "char", "Pipeline that produced the alert.",
              ucd="meta.id;meta.software", expr=lambda c: _A.pipeline),
    TapColumn("pipeline_version", "char", "Version of that pipeline.", ucd="meta.version",
              expr=lambda c: _A.pipeline_version),
    TapColumn("reco_method", "char", "Reconstruction or localization method.",
              ucd="meta.note", expr=lambda c: _A.reco_method),
    TapColumn("cuts", "char", "Selection cuts applied, as the facility names them.",
              ucd="meta.note", expr=lambda c: _json_text(_A.document, "provenance", "cuts")),
    TapColumn("source_ivorn", "char", "The facility's own IVORN for the event.",
              ucd="meta.ref.ivoid", expr=lambda c: _A.source_ivorn),
    TapColumn("raw_sha256", "char", "SHA-256 of the raw message as received.",
              ucd="meta.id;meta.file", expr=lambda c: _A.raw_sha256),
)


def _labelled(ctx: Context, columns: Sequence[TapColumn]) -> list[Any]:
    return [c.expr(ctx).label(c.name) for c in columns if c.expr is not None]


def _obscore(ctx: Context) -> Any:
    hidden = [_A.hpx29.label(HPX_COLUMN), _A.event_time.label(TIME_COLUMN)]
    if ctx.dialect == "sqlite":
        hidden.append(q.unindexed(_A.event_time).label(TIME_SCAN_COLUMN))
    return (select(*_labelled(ctx, OBSCORE_COLUMNS), *hidden)
            .where(q.alert_visible(ctx.viewer, ctx.now)))


# -- mmbroker.coincidences and coincidence_members --------------------------------------------

_C = CoincidenceRow


def _col(name: str, datatype: str, description: str, expr: Expr, unit: str | None = None,
         ucd: str | None = None, *, xtype: str | None = None, principal: bool = False,
         indexed: bool = False) -> TapColumn:
    return TapColumn(name, datatype, description, unit, ucd, None, xtype, principal, indexed,
                     expr=expr)


COINCIDENCE_COLUMNS: tuple[TapColumn, ...] = (
    _col("ivorn", "char", "Broker IVORN of this coincidence revision.", lambda c: _C.ivorn,
         ucd="meta.id;meta.main", principal=True, indexed=True),
    _col("pairing", "char", "Pairing of crossmatch/pairings.toml that found it.",
         lambda c: _C.pairing, ucd="meta.code", principal=True),
    _col("state", "char", "new, updated or retracted.", lambda c: _C.state, ucd="meta.code",
         principal=True),
    _col("revision", "int", "Revision number.", lambda c: _C.revision, ucd="meta.version"),
    _col("reference_time", "char", "Reference (earliest member) time (UTC).",
         lambda c: iso(c, _C.reference_time), ucd="time.epoch", xtype="timestamp",
         principal=True),
    _col("reference_mjd", "double", "Reference time as an MJD (UTC).",
         lambda c: mjd(c, _C.reference_time), "d", "time.epoch"),
    _col("created_at", "char", "When the engine found it (UTC).",
         lambda c: iso(c, _C.created_at), ucd="time.processing", xtype="timestamp"),
    _col("ra", "double", "Right ascension of the best position (ICRS).", lambda c: _C.ra_deg,
         "deg", "pos.eq.ra;meta.main", principal=True, indexed=True),
    _col("dec", "double", "Declination of the best position (ICRS).", lambda c: _C.dec_deg,
         "deg", "pos.eq.dec;meta.main", principal=True, indexed=True),
    _col("overlap", "double", "Spatial overlap integral I = 4 pi * integral p1 p2 dOmega.",
         lambda c: _C.overlap, ucd="stat.value"),
    _col("far_hz", "double", "Smallest false-alarm rate among the significance figures.",
         lambda c: _C.far_hz, "Hz", "arith.rate", principal=True),
    _col("engine_version", "char", "Cross-match engine version.",
         lambda c: _C.engine_version, ucd="meta.version"),
    _col("config_hash", "char", "SHA-256 of the pairings configuration used.",
         lambda c: _C.config_hash, ucd="meta.id"),
)


def _coincidences(ctx: Context) -> Any:
    return (select(*_labelled(ctx, COINCIDENCE_COLUMNS), _C.hpx29.label(HPX_COLUMN))
            .where(q.coincidence_visible(ctx.viewer, ctx.now)))


_MEMBER_ALERT = aliased(AlertRow)
_M = CoincidenceMember

MEMBER_COLUMNS: tuple[TapColumn, ...] = (
    _col("coincidence_ivorn", "char", "IVORN of the coincidence revision.",
         lambda c: _C.ivorn, ucd="meta.id;meta.main", principal=True, indexed=True),
    _col("alert_ivorn", "char", "IVORN of the member alert revision (ivoa.obscore obs_id).",
         lambda c: _MEMBER_ALERT.ivorn, ucd="meta.id", principal=True, indexed=True),
    _col("time_offset_s", "double", "Member trigger time minus the coincidence's "
         "reference time.", lambda c: _M.time_offset_s, "s", "time.interval", principal=True),
)


def _members(ctx: Context) -> Any:
    return (select(*_labelled(ctx, MEMBER_COLUMNS))
            .select_from(_M)
            .join(_C, _C.id == _M.coincidence_id)
            .join(_MEMBER_ALERT, _MEMBER_ALERT.id == _M.alert_id)
            .where(and_(q.coincidence_visible(ctx.viewer, ctx.now),
                        q.alert_visible(ctx.viewer, ctx.now, _MEMBER_ALERT))))


OBSCORE = TapTable(
    "ivoa", "obscore",
    "ObsCore 1.1 view of the archived alerts, one row per alert revision, extended with "
    "the broker's own columns (messenger, significance, provenance).",
    OBSCORE_COLUMNS, _obscore, utype="ivo://ivoa.net/std/obscore#table-1.1",
    position=("s_ra", "s_dec"), time_bounds=(("t_min", "lower"), ("t_max", "upper")))
COINCIDENCES = TapTable(
    "mmbroker", "coincidences",
    "Coincidences the cross-match engine found, one row per revision.",
    COINCIDENCE_COLUMNS, _coincidences, position=("ra", "dec"))
MEMBERS = TapTable(
    "mmbroker", "coincidence_members",
    "The alert revisions taking part in each coincidence revision.",
    MEMBER_COLUMNS, _members,
    keys=(ForeignKey("members_coincidence", "mmbroker.coincidences",
                     (("coincidence_ivorn", "ivorn"),), "The coincidence revision."),
          ForeignKey("members_alert", "ivoa.obscore",
                     (("alert_ivorn", "obs_id"),), "The member alert revision.")))


# -- TAP_SCHEMA -------------------------------------------------------------------------------

def _ts(name: str, datatype: str, description: str, *, principal: bool = True,
        ucd: str | None = None) -> TapColumn:
    return TapColumn(name, datatype, description, ucd=ucd, principal=principal, std=True)


TS_SCHEMAS = (_ts("schema_name", "char", "Schema name, as in queries."),
              _ts("utype", "char", "Utype of the schema."),
              _ts("description", "char", "Describes the schema."),
              _ts("schema_index", "int", "Recommended display order.", principal=False))
TS_TABLES = (_ts("schema_name", "char", "The schema the table belongs to."),
             _ts("table_name", "char", "Qualified table name, as in queries."),
             _ts("table_type", "char", "table or view."),
             _ts("utype", "char", "Utype of the table."),
             _ts("description", "char", "Describes the table."),
             _ts("table_index", "int", "Recommended display order.", principal=False))
TS_COLUMNS = (_ts("table_name", "char", "Qualified name of the column's table."),
              _ts("column_name", "char", "Column name, as in queries."),
              _ts("datatype", "char", "VOTable datatype."),
              _ts("arraysize", "char", "VOTable arraysize."),
              _ts("xtype", "char", "VOTable xtype."),
              _ts("size", "int", "Deprecated fixed size: null.", principal=False),
              _ts("description", "char", "Describes the column."),
              _ts("utype", "char", "Utype of the column."),
              _ts("unit", "char", "Unit (VOUnits)."),
              _ts("ucd", "char", "UCD of the column."),
              _ts("indexed", "int", "1 when the column is indexed."),
              _ts("principal", "int", "1 when the column is a principal one."),
              _ts("std", "int", "1 when a standard defines the column."),
              _ts("column_index", "int", "Recommended display order.", principal=False))
TS_KEYS = (_ts("key_id", "char", "Key identifier."),
           _ts("from_table", "char", "Table holding the foreign key."),
           _ts("target_table", "char", "Table the key points to."),
           _ts("description", "char", "Describes the key."),
           _ts("utype", "char", "Utype of the key."))
TS_KEY_COLUMNS = (_ts("key_id", "char", "Key identifier."),
                  _ts("from_column", "char", "Column of the from_table."),
                  _ts("target_column", "char", "Column of the target_table."))

SCHEMAS = {
    "ivoa": "IVOA standard data models: ObsCore.",
    "mmbroker": "The multimessenger broker's own tables: coincidences and their members.",
    "TAP_SCHEMA": "Metadata of this TAP service (TAP 1.1).",
}


def _rows_table(columns: tuple[TapColumn, ...], rows: Callable[[], list[tuple[Any, ...]]]
                ) -> Callable[[Context], Any]:
    """A builder for a constant table: a UNION ALL of one-row SELECTs of literals."""

    def build(ctx: Context) -> Any:
        def value(v: Any, col: TapColumn) -> Any:
            if v is None:
                return cast(null(), String if col.datatype == "char" else Float)
            return literal(v)

        selects = [select(*(value(v, c).label(c.name) for v, c in zip(row, columns,
                                                                      strict=True)))
                   for row in rows()]
        return union_all(*selects) if len(selects) > 1 else selects[0]

    return build


def _schema_rows() -> list[tuple[Any, ...]]:
    return [(name, None, text, i) for i, (name, text) in enumerate(SCHEMAS.items())]


def _table_rows() -> list[tuple[Any, ...]]:
    return [(t.schema, t.qualified, "view" if t.schema != "TAP_SCHEMA" else "table",
             t.utype, t.description, i) for i, t in enumerate(TABLES)]


def _column_rows() -> list[tuple[Any, ...]]:
    return [(t.qualified, c.adql_name, c.datatype, c.arraysize, c.xtype, None, c.description,
             c.utype, c.unit, c.ucd, int(c.indexed), int(c.principal), int(c.std), i)
            for t in TABLES for i, c in enumerate(t.columns)]


def _key_rows() -> list[tuple[Any, ...]]:
    return [(k.key_id, t.qualified, k.target, k.description, None)
            for t in TABLES for k in t.keys]


def _key_column_rows() -> list[tuple[Any, ...]]:
    return [(k.key_id, a, b) for t in TABLES for k in t.keys for a, b in k.columns]


def _ts_key(key_id: str, target: str, column: str, target_column: str) -> ForeignKey:
    return ForeignKey(key_id, f"TAP_SCHEMA.{target}", ((column, target_column),),
                      f"TAP_SCHEMA.{target} {target_column}.")


TAP_SCHEMA_TABLES = (
    TapTable("TAP_SCHEMA", "schemas", "Schemas of this service.", TS_SCHEMAS,
             _rows_table(TS_SCHEMAS, _schema_rows)),
    TapTable("TAP_SCHEMA", "tables", "Tables of this service.", TS_TABLES,
             _rows_table(TS_TABLES, _table_rows),
             keys=(_ts_key("tables_schema", "schemas", "schema_name", "schema_name"),)),
    TapTable("TAP_SCHEMA", "columns", "Columns of every table of this service.", TS_COLUMNS,
             _rows_table(TS_COLUMNS, _column_rows),
             keys=(_ts_key("columns_table", "tables", "table_name", "table_name"),)),
    TapTable("TAP_SCHEMA", "keys", "Foreign keys between tables.", TS_KEYS,
             _rows_table(TS_KEYS, _key_rows),
             keys=(_ts_key("keys_from", "tables", "from_table", "table_name"),
                   _ts_key("keys_target", "tables", "target_table", "table_name"))),
    TapTable("TAP_SCHEMA", "key_columns", "Columns of the foreign keys.", TS_KEY_COLUMNS,
             _rows_table(TS_KEY_COLUMNS, _key_column_rows),
             keys=(_ts_key("key_columns_key", "keys", "key_id", "key_id"),)),
)

TABLES: tuple[TapTable, ...] = (OBSCORE, COINCIDENCES, MEMBERS, *TAP_SCHEMA_TABLES)
BY_NAME: dict[str, TapTable] = {t.qualified.lower(): t for t in TABLES}

