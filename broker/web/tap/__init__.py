"""IVOA Table Access Protocol 1.1 over the archive, with VOSI and TAP_SCHEMA.

Endpoints, under ``/tap``:

- ``sync`` (GET or POST): ``LANG=ADQL``, ``QUERY``, ``MAXREC``,
  ``RESPONSEFORMAT`` (or ``FORMAT``) ``votable`` or ``csv``; ``REQUEST=doQuery``
  is accepted (TAP 1.0).  Parameter names are case-insensitive (DALI).
- ``capabilities``, ``availability``, ``tables`` (and ``tables/{name}``): VOSI.

ADQL is checked and translated by :mod:`broker.web.tap.adql`; the published
tables (:mod:`broker.web.tap.schema`) are common table expressions that hold
the caller's data rights, exactly the REST API's :class:`~broker.archive.query.Viewer`
condition (a bearer token may be sent).  Errors are VOTables with
``QUERY_STATUS`` ``ERROR``: HTTP 400 for a query or parameter this service
refuses, 503 when the archive does not answer.  Asynchronous queries (UWS 1.1,
``/tap/async``) are :mod:`broker.web.tap.uws`, which runs them through
:func:`execute` too.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Annotated, Any
from xml.sax.saxutils import escape, quoteattr

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from alerts_schema.errors import ArchiveUnavailable, RequestError
from broker.archive import query as q
from broker.archive.db import transaction
from broker.archive.models import AlertRow
from broker.web import tabular
from broker.web.query_api import base_url, viewer
from broker.web.scs import availability as scs_availability
from broker.web.tap.adql import Translation, translate
from broker.web.tap.schema import BY_NAME, SCHEMAS, TABLES, Context, TapColumn, TapTable

router = APIRouter(prefix="/tap", tags=["ivoa"])

DEFAULT_MAXREC = 10_000
MAX_MAXREC = 100_000
STATEMENT_TIMEOUT_S = 60
JOB_LIFETIME_S = 7 * 86400
"""How long an asynchronous job is kept by default (UWS destruction), seconds."""
JOB_MAX_LIFETIME_S = 30 * 86400
"""The longest an asynchronous job may be kept, seconds."""
VOTABLE = tabular.MEDIA_TYPES["votable"]
CSV = "text/csv;header=present"
_FORMATS = {"votable": "votable", "application/x-votable+xml": "votable",
            "text/xml": "votable", "application/votable+xml": "votable",
            "votable/td": "votable", "csv": "csv", "text/csv": "csv",
            "text/csv;header=present": "csv"}


class TapError(RequestError):
    """A TAP request that cannot be answered (HTTP 400, error VOTable)."""


def error_votable(message: str) -> bytes:
    """DALI's error document: a results RESOURCE with an INFO QUERY_STATUS ERROR, no TABLE."""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3"
    xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <RESOURCE type="results">
    <INFO name="QUERY_STATUS" value="ERROR">{escape(message)}</INFO>
  </RESOURCE>
</VOTABLE>
""".encode()


def _error(message: str, status_code: int = 400) -> Response:
    return Response(error_votable(message), status_code=status_code, media_type=VOTABLE)


# -- running a query --------------------------------------------------------------------------


def _compile(statement: Any, dialect: Any) -> str:
    return str(statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))


# A time no query is asked at: the stand-in for "now" in the cached table SQL.
_SENTINEL_NOW = datetime(1901, 2, 3, 4, 5, 6, 789012, tzinfo=UTC)


def _time_literal(when: datetime, dialect: Any) -> str:
    """How ``when`` is written inline in a comparison with an archive time column."""
    return _compile(AlertRow.embargo_until <= when, dialect).split("<=", 1)[1].strip()


@lru_cache(maxsize=64)
def _cte_template(table: TapTable, viewer: q.Viewer, base: str, dialect: Any
                  ) -> tuple[str, str]:
    """The table's SQL for this caller's scopes, with a sentinel time where "now" goes,
    and the sentinel as written.  Compiling a published table's SELECT (some 60 column
    expressions) takes ~10 ms a query; what it holds depends only on these arguments
    and the time (tests/test_tap.py compares it with a fresh compile)."""
    ctx = Context(dialect.name, viewer, _SENTINEL_NOW, base)
    return _compile(table.build(ctx), dialect), _time_literal(_SENTINEL_NOW, dialect)


def _cte_sql(table: TapTable, ctx: Context, conn: Any) -> str:
    """The table's SELECT as SQL text with its values inline (no bound parameters), so it
    can sit beside the translated ADQL in one statement."""
    template, sentinel = _cte_template(table, ctx.viewer, ctx.base_url, conn.dialect)
    return template.replace(sentinel, _time_literal(ctx.now, conn.dialect))


def build_sql(translation: Translation, ctx: Context, conn: Any) -> str:
    """The statement sent to the database: the published tables as CTEs, then the query."""
    # PostgreSQL would materialize a CTE read twice (a self-join): inline it always.
    hint = " NOT MATERIALIZED" if ctx.dialect != "sqlite" else ""
    ctes = ",\n".join(f"{t.cte_name} AS{hint} ({_cte_sql(t, ctx, conn)})"
                      for t in translation.tables)
    return f"WITH {ctes}\n{translation.sql}"


class Interrupter:
    """Stops the statement a query runs, from another thread (an abort, a time limit), and
    only while it runs: a connection back in the pool is never touched."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stop: Callable[[], None] | None = None
        self.fired = False

    def arm(self, stop: Callable[[], None]) -> None:
        with self._lock:
            self._stop = stop
            if self.fired:
                stop()

    def disarm(self) -> None:
        with self._lock:
            self._stop = None

    def fire(self) -> None:
        with self._lock:
            self.fired = True
            if self._stop is not None:
                self._stop()


def run_query(conn: Any, adql: str, ctx: Context, maxrec: int,
              timeout_s: float = STATEMENT_TIMEOUT_S, interrupter: Interrupter | None = None
              ) -> tuple[list[str], list[TapColumn | None], list[tuple[Any, ...]], bool]:
    """Translate and run ``adql``: (names, metadata, rows, overflowed).

    The statement stops after ``timeout_s`` (PostgreSQL's ``statement_timeout``;
    on SQLite a timer interrupting the connection) or when ``interrupter`` fires.
    """
    fetch = maxrec + 1  # one beyond MAXREC tells an overflow
    span = q.alert_span(conn) if ctx.dialect == "sqlite" else None
    translation = translate(adql, ctx.dialect, fetch, span)
    sql = build_sql(translation, ctx, conn)
    # The driver's own cursor, without parameters: psycopg then reads no placeholders, so a
    # '%' in an ADQL string stays a '%' (SQLAlchemy always hands the driver parameters).
    dbapi = conn.connection.dbapi_connection
    interrupter = interrupter or Interrupter()
    timer = threading.Timer(timeout_s, interrupter.fire) if ctx.dialect == "sqlite" else None
    cursor = dbapi.cursor()
    try:
        if ctx.dialect != "sqlite":
            cursor.execute(f"SET LOCAL statement_timeout = {int(timeout_s * 1000)}")
        interrupter.arm(dbapi.interrupt if ctx.dialect == "sqlite" else dbapi.cancel)
        if timer is not None:
            timer.start()
        cursor.execute(sql)
        names = [d[0] for d in cursor.description]
        rows = [tuple(r) for r in cursor.fetchmany(fetch)]
    finally:
        interrupter.disarm()
        if timer is not None:
            timer.cancel()
        cursor.close()
    overflow = len(rows) > maxrec
    metas = [meta for _, meta in translation.columns]
    if len(metas) != len(names):
        metas = [None] * len(names)
    return names, metas, rows[:maxrec], overflow


def _infer(values: list[Any]) -> str:
    for value in values:
        if value is None:
            continue
        if isinstance(value, bool):
            return "boolean"
        if isinstance(value, int):
            return "long"
        if isinstance(value, float | Decimal):
            return "double"
        return "char"
    return "char"


def _output_columns(names: list[str], metas: list[TapColumn | None],
                    rows: list[tuple[Any, ...]]) -> list[tabular.Column]:
    """Result columns with the published metadata where a column is a plain one."""
    seen: dict[str, int] = {}
    out = []
    for i, (name, meta) in enumerate(zip(names, metas, strict=True)):
        label = name or f"col{i + 1}"
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:  # two tables' "ivorn" in a join: VOTable names must differ
            label = f"{label}_{seen[label]}"
        values = [r[i] for r in rows]
        if meta is not None:
            datatype = meta.datatype
            out.append(tabular.Column(label, datatype, meta.ucd or "", meta.description,
                                      unit=meta.unit, xtype=meta.xtype, utype=meta.utype,
                                      get=_getter(i, datatype)))
        else:
            datatype = _infer(values)
            out.append(tabular.Column(label, datatype, "", "", get=_getter(i, datatype)))
    return out


def _getter(index: int, datatype: str) -> Any:
    def get(row: Any) -> Any:
        value = row[index]
        if value is None:
            return None
        if datatype == "double":
            number = float(value)
            return None if math.isnan(number) else number
        if datatype in ("int", "long"):
            return int(value)
        if datatype == "boolean":
            return bool(value)
        if isinstance(value, datetime):
            return value.isoformat()
        return value if isinstance(value, str) else str(value)

    return get


def _with_overflow(body: bytes) -> bytes:
    """DALI: an OVERFLOW QUERY_STATUS after the table marks a truncated result."""
    marker = b"</RESOURCE>"
    at = body.rfind(marker)
    info = (b'<INFO name="QUERY_STATUS" value="OVERFLOW">More rows match than MAXREC '
            b'allows.</INFO>\n')
    return body[:at] + info + body[at:]


async def form_params(request: Request) -> dict[str, str]:
    """A TAP or UWS request's parameters, from its URL and form body, by upper-case name
    (DALI: names are case-insensitive)."""
    params = {k.upper(): v for k, v in request.query_params.items()}
    if request.method == "POST":
        form = await request.form()
        params.update({k.upper(): v for k, v in form.items() if isinstance(v, str)})
    return params


def _maxrec(params: dict[str, str]) -> int:
    text = params.get("MAXREC", "").strip()
    if not text:
        return DEFAULT_MAXREC
    try:
        value = int(text)
    except ValueError:
        raise TapError(f"MAXREC={text!r} is not an integer") from None
    if value < 0:
        raise TapError("MAXREC must not be negative")
    return min(value, MAX_MAXREC)


def _format(params: dict[str, str]) -> str:
    text = (params.get("RESPONSEFORMAT") or params.get("FORMAT") or "votable").strip()
    fmt = _FORMATS.get(text.lower().replace(" ", ""))
    if fmt is None:
        raise TapError(f"RESPONSEFORMAT={text!r} is not supported: votable or csv")
    return fmt


_SYNC_DOC: dict[int | str, dict[str, Any]] = {
    200: {"description": "The query's rows (VOTable or CSV).",
          "content": {VOTABLE: {"schema": {"type": "string"}},
                      CSV: {"schema": {"type": "string"}}}},
    400: {"description": "A query or parameter the service refuses (error VOTable).",
          "content": {VOTABLE: {"schema": {"type": "string"}}}},
    401: {"description": "An invalid, expired or revoked token (error VOTable).",
          "content": {VOTABLE: {"schema": {"type": "string"}}}},
    429: {"description": "Rate limit exceeded (error VOTable; see Retry-After).",
          "content": {VOTABLE: {"schema": {"type": "string"}}}},
    503: {"description": "The archive does not answer (error VOTable).",
          "content": {VOTABLE: {"schema": {"type": "string"}}}},
}
_SYNC_PARAMS = {"parameters": [
    {"name": "LANG", "in": "query", "schema": {"type": "string", "enum": ["ADQL"]},
     "description": "Query language: ADQL (2.0)."},
    {"name": "QUERY", "in": "query", "schema": {"type": "string"},
     "description": "The ADQL query."},
    {"name": "MAXREC", "in": "query", "schema": {"type": "integer", "minimum": 0},
     "description": f"Most rows (default {DEFAULT_MAXREC}, at most {MAX_MAXREC})."},
    {"name": "RESPONSEFORMAT", "in": "query",
     "schema": {"type": "string", "enum": ["votable", "csv"]},
     "description": "Output format (FORMAT is accepted too)."},
    {"name": "REQUEST", "in": "query", "schema": {"type": "string", "enum": ["doQuery"]},
     "description": "TAP 1.0's request type; optional."}]}


@router.get("/sync", response_class=Response, responses=_SYNC_DOC,
            openapi_extra=_SYNC_PARAMS, operation_id="tap_sync_get")
async def sync_get(request: Request, who: Annotated[q.Viewer, Depends(viewer)]) -> Response:
    """Run an ADQL query synchronously (TAP 1.1 sync), parameters in the URL."""
    return await _sync(request, who)


@router.post("/sync", response_class=Response, responses=_SYNC_DOC,
             operation_id="tap_sync_post", openapi_extra={"requestBody": {"content": {
                 "application/x-www-form-urlencoded": {"schema": {
                     "type": "object", "properties": {
                         p["name"]: p["schema"] for p in _SYNC_PARAMS["parameters"]}}}}}})
async def sync_post(request: Request, who: Annotated[q.Viewer, Depends(viewer)]) -> Response:
    """Run an ADQL query synchronously (TAP 1.1 sync), parameters in a form body."""
    return await _sync(request, who)


@dataclass(frozen=True)
class TapQuery:
    """A checked TAP query request: the ADQL, MAXREC and output format."""

    query: str
    maxrec: int
    fmt: str


def check_request(params: dict[str, str]) -> TapQuery:
    """The query a TAP request asks for (parameter names upper case); :class:`TapError`
    for a parameter this service refuses."""
    request_type = params.get("REQUEST")
    if request_type is not None and request_type.strip().lower() != "doquery":
        raise TapError(f"REQUEST={request_type!r} is not supported: doQuery")
    lang = (params.get("LANG") or "").strip()
    if lang.upper() not in ("ADQL", "ADQL-2.0", "ADQL-2.1"):
        raise TapError("LANG=ADQL is required" if not lang
                       else f"LANG={lang!r} is not supported: ADQL")
    if params.get("UPLOAD"):
        raise TapError("UPLOAD is not supported")
    query = params.get("QUERY")
    if not query or not query.strip():
        raise TapError("QUERY is required")
    return TapQuery(query, _maxrec(params), _format(params))


async def _sync(request: Request, who: q.Viewer) -> Response:
    try:
        asked = check_request(await form_params(request))
    except TapError as exc:
        return _error(str(exc))
    return await run_in_threadpool(_answer, request, who, asked)


def _answer(request: Request, who: q.Viewer, asked: TapQuery) -> Response:
    try:
        body, media_type = execute(request.app.state.archive.engine, who, base_url(request),
                                   asked)
    except ArchiveUnavailable as exc:
        return _error(str(exc), 503)
    except RequestError as exc:
        return _error(str(exc))
    return Response(body, media_type=media_type)


def execute(engine: Any, who: q.Viewer, base: str, asked: TapQuery, *,
            timeout_s: float = STATEMENT_TIMEOUT_S,
            interrupter: Interrupter | None = None) -> tuple[bytes, str]:
    """Run a checked query for ``who``: the answer's bytes and media type.

    Raises :class:`AdqlError` or :class:`TapError` for a query the service or
    the database refuses (HTTP 400), :class:`ArchiveUnavailable` when the
    archive does not answer (503).  ``timeout_s`` and ``interrupter`` are
    :func:`run_query`'s.
    """
    ctx = Context(engine.dialect.name, who, datetime.now(UTC), base)
    try:
        with transaction(engine, readonly=True) as conn:
            names, metas, rows, overflow = run_query(conn, asked.query, ctx, asked.maxrec,
                                                     timeout_s, interrupter)
    except engine.dialect.loaded_dbapi.Error as exc:
        if getattr(exc, "sqlstate", None) == "57014" or "interrupted" in str(exc):
            # PostgreSQL's statement_timeout or a cancel; SQLite's interrupt.
            raise TapError(f"the query was stopped: it ran over the {timeout_s:g} s "
                           "limit, or was aborted") from None
        if ctx.dialect != "sqlite" and isinstance(
                exc, engine.dialect.loaded_dbapi.OperationalError):
            raise ArchiveUnavailable(f"archive unavailable: {exc}") from None
        # What the database refused in a checked query (a type mismatch, say): its
        # first line names the problem without the whole generated statement.
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise TapError(f"the query failed in the database: {detail}") from None
    columns = _output_columns(names, metas, rows)
    if asked.fmt == "csv":
        return tabular.to_csv(columns, rows), CSV  # type: ignore[arg-type]
    body = tabular.to_votable(columns, rows, name="results",  # type: ignore[arg-type]
                              description="Result of an ADQL query.",
                              infos=[("QUERY_STATUS", "OK", ""), ("QUERY", asked.query, ""),
                                     ("REQUEST_DATE", ctx.now.isoformat(), "")])
    return (_with_overflow(body) if overflow else body), VOTABLE


# -- VOSI -------------------------------------------------------------------------------------


def _capability(standard_id: str, url: str) -> str:
    return f"""  <capability standardID="{standard_id}">
    <interface xsi:type="vs:ParamHTTP">
      <accessURL use="full">{escape(url)}</accessURL>
    </interface>
  </capability>
"""


@router.get("/capabilities", response_class=Response, responses={
    200: {"content": {"text/xml": {}}, "description": "VOSI capabilities (TAPRegExt)."}})
def capabilities(request: Request) -> Response:
    """VOSI capabilities: TAP 1.1 (ADQL 2.0 with geometry, VOTable and CSV, MAXREC limits)."""
    base = escape(base_url(request))
    features = "".join(f"""        <feature><form>{form}</form><description>{text}</description>
        </feature>
""" for form, text in (
        ("POINT", "A position; only ICRS."),
        ("CIRCLE", "A cone, answered from the HEALPix index and the exact separation."),
        ("POLYGON", "A convex spherical polygon; only inside CONTAINS."),
        ("CONTAINS", "Only as CONTAINS(POINT, CIRCLE or POLYGON) = 1 (or = 0)."),
        ("DISTANCE", "Great-circle distance between two POINTs, degrees.")))
    body = f"""<?xml version="1.0" encoding="UTF-8"?>
<vosi:capabilities xmlns:vosi="http://www.ivoa.net/xml/VOSICapabilities/v1.0"
    xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
    xmlns:vs="http://www.ivoa.net/xml/VODataService/v1.1"
    xmlns:tr="http://www.ivoa.net/xml/TAPRegExt/v1.0">
  <capability standardID="ivo://ivoa.net/std/TAP" xsi:type="tr:TableAccess">
    <interface xsi:type="vs:ParamHTTP" role="std" version="1.1">
      <accessURL use="base">{base}/tap</accessURL>
    </interface>
    <dataModel ivo-id="ivo://ivoa.net/std/ObsCore#core-1.1">ObsCore-1.1</dataModel>
    <language>
      <name>ADQL</name>
      <version ivo-id="ivo://ivoa.net/std/ADQL#v2.0">2.0</version>
      <description>ADQL 2.0: one SELECT over the published tables, with TOP.</description>
      <languageFeatures type="ivo://ivoa.net/std/TAPRegExt#features-adqlgeo">
{features}      </languageFeatures>
    </language>
    <outputFormat ivo-id="ivo://ivoa.net/std/TAPRegExt#output-votable-td">
      <mime>application/x-votable+xml</mime>
      <alias>votable</alias>
    </outputFormat>
    <outputFormat>
      <mime>text/csv;header=present</mime>
      <alias>csv</alias>
    </outputFormat>
    <retentionPeriod><default>{JOB_LIFETIME_S}</default><hard>{JOB_MAX_LIFETIME_S}</hard>\
</retentionPeriod>
    <executionDuration><default>{STATEMENT_TIMEOUT_S}</default><hard>{STATEMENT_TIMEOUT_S}\
</hard></executionDuration>
    <outputLimit>
      <default unit="row">{DEFAULT_MAXREC}</default>
      <hard unit="row">{MAX_MAXREC}</hard>
    </outputLimit>
  </capability>
{_capability("ivo://ivoa.net/std/VOSI#capabilities", f"{base}/tap/capabilities")}\
{_capability("ivo://ivoa.net/std/VOSI#availability", f"{base}/tap/availability")}\
{_capability("ivo://ivoa.net/std/VOSI#tables-1.1", f"{base}/tap/tables")}\
</vosi:capabilities>
"""
    return Response(body.encode(), media_type="text/xml")


@router.get("/availability", response_class=Response, responses={
    200: {"content": {"text/xml": {}}, "description": "VOSI availability."}})
def availability(request: Request) -> Response:
    """VOSI availability: whether the archive answers."""
    return scs_availability(request)


def _column_xml(col: TapColumn) -> str:
    parts = [f"<name>{escape(col.adql_name)}</name>",
             f"<description>{escape(col.description)}</description>"]
    if col.unit:
        parts.append(f"<unit>{escape(col.unit)}</unit>")
    if col.ucd:
        parts.append(f"<ucd>{escape(col.ucd)}</ucd>")
    if col.utype:
        parts.append(f"<utype>{escape(col.utype)}</utype>")
    # VODataService 1.1 has the xtype as the dataType's extendedType.
    size = f" arraysize={quoteattr(col.arraysize)}" if col.arraysize else ""
    extended = f" extendedType={quoteattr(col.xtype)}" if col.xtype else ""
    parts.append(f'<dataType xsi:type="vs:VOTableType"{size}{extended}>{col.datatype}'
                 "</dataType>")
    for flag, on in (("indexed", col.indexed), ("principal", col.principal), ("std", col.std)):
        if on:
            parts.append(f"<flag>{flag}</flag>")
    return "      <column>" + "".join(parts) + "</column>\n"


def _table_xml(table: TapTable, *, detail: bool = True) -> str:
    kind = "table" if table.schema == "TAP_SCHEMA" else "view"
    xml = [f'    <table type="{kind}">\n      <name>{escape(table.qualified)}</name>\n'
           f"      <description>{escape(table.description)}</description>\n"]
    if table.utype:
        xml.append(f"      <utype>{escape(table.utype)}</utype>\n")
    if detail:
        xml.extend(_column_xml(c) for c in table.columns)
        for key in table.keys:
            columns = "".join(f"<fkColumn><fromColumn>{a}</fromColumn>"
                              f"<targetColumn>{b}</targetColumn></fkColumn>"
                              for a, b in key.columns)
            xml.append(f"      <foreignKey><targetTable>{escape(key.target)}</targetTable>"
                       f"{columns}<description>{escape(key.description)}</description>"
                       "</foreignKey>\n")
    xml.append("    </table>\n")
    return "".join(xml)


_TABLESET_HEAD = """<?xml version="1.0" encoding="UTF-8"?>
<vosi:tableset xmlns:vosi="http://www.ivoa.net/xml/VOSITables/v1.0"
    xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
    xmlns:vs="http://www.ivoa.net/xml/VODataService/v1.1">
"""


@router.get("/tables", response_class=Response, responses={
    200: {"content": {"text/xml": {}}, "description": "VOSI tables (VODataService tableset)."}})
def tables(request: Request) -> Response:
    """VOSI tables: every published table and column with its description, unit and UCD
    (``detail=min`` lists the tables only)."""
    detail = request.query_params.get("detail", "max").lower() != "min"
    xml = [_TABLESET_HEAD]
    for schema, description in SCHEMAS.items():
        xml.append(f"  <schema>\n    <name>{schema}</name>\n"
                   f"    <description>{escape(description)}</description>\n")
        xml.extend(_table_xml(t, detail=detail) for t in TABLES if t.schema == schema)
        xml.append("  </schema>\n")
    xml.append("</vosi:tableset>\n")
    return Response("".join(xml).encode(), media_type="text/xml")


@router.get("/tables/{name}", response_class=Response, responses={
    200: {"content": {"text/xml": {}}, "description": "One table (VOSI tables 1.1)."},
    404: {"description": "No such table.", "content": {"text/plain": {}}}})
def table(name: str) -> Response:
    """VOSI tables 1.1: one table with its columns."""
    found = BY_NAME.get(name.lower())
    if found is None:
        return Response(f"no table {name}\n".encode(), status_code=404,
                        media_type="text/plain")
    body = ('<?xml version="1.0" encoding="UTF-8"?>\n'
            '<vosi:table xmlns:vosi="http://www.ivoa.net/xml/VOSITables/v1.0"\n'
            '    xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"\n'
            '    xmlns:vs="http://www.ivoa.net/xml/VODataService/v1.1" type="view">\n'
            + _table_xml(found).split("\n", 1)[1].rsplit("    </table>", 1)[0]
            + "</vosi:table>\n")
    return Response(body.encode(), media_type="text/xml")
