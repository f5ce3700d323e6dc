"""IVOA Simple Cone Search 1.03 over the archived alerts, with VOSI capabilities and availability.

``GET /scs?RA=..&DEC=..&SR=..`` (ICRS degrees; parameter names are
case-insensitive, as DALI has them) answers a VOTable of the alerts with a
position within ``SR`` of (``RA``, ``DEC``), newest event first, as many as
``MAXREC`` allows (``QUERY_STATUS`` ``OVERFLOW`` when more match).  The
identifier and position columns carry the UCD1 words SCS 1.03 requires
(``ID_MAIN``, ``POS_EQ_RA_MAIN``, ``POS_EQ_DEC_MAIN``), so the answer is a
VOTable 1.1, the version SCS 1.03 cites (later versions reject UCD1 words).  ``VERB``
picks the columns: 1 the identifier and position, 2 (default) also time,
messenger, facility, error radius and FAR, 3 every column of
``/api/v1/alerts?format=votable``.  Errors are VOTables too, with an INFO
``QUERY_STATUS`` = ``ERROR`` (DALI) and an INFO ``Error`` (SCS 1.03).

The caller's data rights apply as on every other route (a bearer token may
be sent); rate limits answer 429 with a VOTable body.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy import text

from alerts_schema.errors import RequestError
from broker.archive import query as q
from broker.archive.db import transaction
from broker.web import tabular
from broker.web.query_api import base_url, viewer

router = APIRouter(tags=["ivoa"])

DEFAULT_MAXREC = 1000
MAX_MAXREC = 10_000
VOTABLE = tabular.MEDIA_TYPES["votable"]

_VERB1 = ("ivorn", "ra_deg", "dec_deg")
_VERB2 = (*_VERB1, "event_time", "messenger", "facility", "source", "alert_type",
          "error_radius_deg", "far_hz")


# SCS 1.03 names the identifier and position columns by their UCD1 words, and
# clients find them by those alone (pyvo's ``rec.pos`` and ``rec.id``); every
# other column keeps its UCD1+ word.
SCS_VOTABLE_VERSION = "1.1"
_SCS_UCD1 = {"ivorn": "ID_MAIN", "ra_deg": "POS_EQ_RA_MAIN", "dec_deg": "POS_EQ_DEC_MAIN"}


def _columns(verb: int) -> tuple[tabular.Column, ...]:
    if verb >= 3:
        chosen = tabular.ALERT_COLUMNS
    else:
        wanted = _VERB1 if verb == 1 else _VERB2
        by_name = {c.name: c for c in tabular.ALERT_COLUMNS}
        chosen = tuple(by_name[name] for name in wanted)
    return tuple(replace(c, ucd=_SCS_UCD1[c.name]) if c.name in _SCS_UCD1 else c
                 for c in chosen)


class ScsError(RequestError):
    """A cone search request that cannot be answered."""


def _number(params: dict[str, str], name: str, *, required: bool = True) -> float | None:
    text = params.get(name)
    if text is None or text.strip() == "":
        if required:
            raise ScsError(f"{name} is required (ICRS degrees)")
        return None
    try:
        value = float(text)
    except ValueError:
        raise ScsError(f"{name}={text!r} is not a number") from None
    if not math.isfinite(value):
        raise ScsError(f"{name}={text!r} is not a finite number")
    return value


def _votable_response(body: bytes, status_code: int = 200,
                      headers: dict[str, str] | None = None) -> Response:
    return Response(body, status_code=status_code, media_type=VOTABLE, headers=headers)


_SCS_DOC: dict[int | str, dict[str, Any]] = {
    200: {"description": "A VOTable of matching alerts, or an error VOTable "
                         "(INFO QUERY_STATUS=ERROR) for a bad request.",
          "content": {VOTABLE: {"schema": {"type": "string"}}}},
    401: {"description": "An invalid, expired or revoked token."},
    429: {"description": "Rate limit exceeded (error VOTable; see Retry-After)."},
}


@router.get("/scs", response_class=Response, responses=_SCS_DOC, openapi_extra={
    "parameters": [
        {"name": "RA", "in": "query", "required": True,
         "schema": {"type": "number", "minimum": 0, "maximum": 360},
         "description": "Right ascension of the cone centre, ICRS deg."},
        {"name": "DEC", "in": "query", "required": True,
         "schema": {"type": "number", "minimum": -90, "maximum": 90},
         "description": "Declination of the cone centre, ICRS deg."},
        {"name": "SR", "in": "query", "required": True,
         "schema": {"type": "number", "minimum": 0, "maximum": 180},
         "description": "Search radius, deg."},
        {"name": "VERB", "in": "query", "required": False,
         "schema": {"type": "integer", "minimum": 1, "maximum": 3},
         "description": "Columns: 1 minimal, 2 default, 3 all."},
        {"name": "MAXREC", "in": "query", "required": False,
         "schema": {"type": "integer", "minimum": 0, "maximum": MAX_MAXREC},
         "description": f"Most rows (default {DEFAULT_MAXREC}); 0 gives the columns only."},
    ]})
def cone_search(request: Request, who: Annotated[q.Viewer, Depends(viewer)]) -> Response:
    """IVOA Simple Cone Search over the archived alerts (VOTable)."""
    params = {k.upper(): v for k, v in request.query_params.items()}
    try:
        ra, dec, sr = (_number(params, n) for n in ("RA", "DEC", "SR"))
        verb_value = _number(params, "VERB", required=False)
        maxrec_value = _number(params, "MAXREC", required=False)
        verb = 2 if verb_value is None else int(verb_value)
        if verb not in (1, 2, 3):
            raise ScsError(f"VERB must be 1, 2 or 3, not {params['VERB']!r}")
        maxrec = DEFAULT_MAXREC if maxrec_value is None else int(maxrec_value)
        if not 0 <= maxrec <= MAX_MAXREC:
            raise ScsError(f"MAXREC must be in 0..{MAX_MAXREC}")
        if not 0 <= ra <= 360:  # type: ignore[operator]
            raise ScsError(f"RA={ra} is outside [0, 360] deg")
        try:
            cone = q.Cone(ra, dec, sr)  # type: ignore[arg-type]
        except q.QueryError as exc:
            raise ScsError(str(exc)) from exc
    except ScsError as exc:
        return _votable_response(tabular.error_votable(str(exc), SCS_VOTABLE_VERSION))
    columns = _columns(verb)
    rows: list[Any] = []
    status = "OK"
    if maxrec > 0:
        with transaction(request.app.state.archive.engine, readonly=True) as conn:
            page = q.search_alerts(conn, q.AlertQuery(cone=cone, limit=maxrec), who)
        rows = [r._mapping for r in page.rows]
        if page.next_cursor:
            status = "OVERFLOW"
    infos = [("QUERY_STATUS", status,
              f"More than MAXREC={maxrec} alerts match; the newest are given."
              if status == "OVERFLOW" else ""),
             ("RA", repr(cone.ra_deg), ""), ("DEC", repr(cone.dec_deg), ""),
             ("SR", repr(cone.radius_deg), ""), ("VERB", str(verb), "")]
    return _votable_response(tabular.to_votable(
        columns, rows, name="alerts", description="mmbroker alerts in the cone, newest first.",
        infos=infos, version=SCS_VOTABLE_VERSION))


@router.get("/scs/capabilities", response_class=Response, responses={
    200: {"content": {"text/xml": {}}, "description": "VOSI capabilities."}})
def capabilities(request: Request) -> Response:
    """VOSI capabilities: the cone search, its availability and capabilities endpoints."""
    base = base_url(request)
    body = f"""<?xml version="1.0" encoding="UTF-8"?>
<vosi:capabilities xmlns:vosi="http://www.ivoa.net/xml/VOSICapabilities/v1.0"
    xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
    xmlns:vr="http://www.ivoa.net/xml/VOResource/v1.0"
    xmlns:cs="http://www.ivoa.net/xml/ConeSearch/v1.0">
  <capability standardID="ivo://ivoa.net/std/ConeSearch" xsi:type="cs:ConeSearch">
    <interface xsi:type="vs:ParamHTTP" role="std"
        xmlns:vs="http://www.ivoa.net/xml/VODataService/v1.1">
      <accessURL use="base">{base}/scs?</accessURL>
    </interface>
    <maxSR>180</maxSR>
    <maxRecords>{MAX_MAXREC}</maxRecords>
    <verbosity>true</verbosity>
    <testQuery><ra>0</ra><dec>0</dec><sr>1</sr></testQuery>
  </capability>
  <capability standardID="ivo://ivoa.net/std/VOSI#capabilities">
    <interface xsi:type="vs:ParamHTTP" xmlns:vs="http://www.ivoa.net/xml/VODataService/v1.1">
      <accessURL use="full">{base}/scs/capabilities</accessURL>
    </interface>
  </capability>
  <capability standardID="ivo://ivoa.net/std/VOSI#availability">
    <interface xsi:type="vs:ParamHTTP" xmlns:vs="http://www.ivoa.net/xml/VODataService/v1.1">
      <accessURL use="full">{base}/scs/availability</accessURL>
    </interface>
  </capability>
</vosi:capabilities>
"""
    return Response(body.encode(), media_type="text/xml")


@router.get("/scs/availability", response_class=Response, responses={
    200: {"content": {"text/xml": {}}, "description": "VOSI availability."}})
def availability(request: Request) -> Response:
    """VOSI availability: whether the archive answers."""
    try:
        with transaction(request.app.state.archive.engine, readonly=True) as conn:
            conn.execute(text("SELECT 1"))
        available, note = "true", "The archive answers."
    except Exception as exc:  # any failure reaching the database means unavailable
        available, note = "false", f"The archive does not answer: {type(exc).__name__}"
    body = f"""<?xml version="1.0" encoding="UTF-8"?>
<vosi:availability xmlns:vosi="http://www.ivoa.net/xml/VOSIAvailability/v1.0">
  <vosi:available>{available}</vosi:available>
  <vosi:note>{note}</vosi:note>
</vosi:availability>
"""
    return Response(body.encode(), media_type="text/xml")
