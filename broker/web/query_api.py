"""The analysts' query API: alerts, coincidences and VOEvents, listed and in detail.

``GET /api/v1/alerts``, ``/api/v1/coincidences`` and ``/api/v1/voevents`` list
what the archive holds with the filters of :mod:`broker.archive.query`, newest first,
in pages joined by an opaque ``cursor`` (also in the ``Link: rel="next"``
header), in JSON, VOTable or CSV (:mod:`broker.web.tabular`).  Detail routes give
one alert or coincidence, its raw payload, provenance, sky map (FITS) and a
sky map image (PNG, Mollweide).

Every route answers for the caller's :class:`~broker.archive.query.Viewer`: an alert
the caller may not see is "not found", exactly as one that does not exist.
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import select
from sqlalchemy.engine import Connection

from alerts_schema.model import AlertType, CoincidenceState, Messenger, Role
from alerts_schema.openapi import components
from broker.archive import query as q
from broker.archive.db import transaction
from broker.archive.models import (
    AlertRow,
    CoincidenceMember,
    CoincidenceRow,
    ProvenanceDoc,
    RawPayload,
)
from broker.publish import provenance
from broker.web import tabular
from broker.web.auth import current_token
from broker.web.ratelimit import retry_after_header
from broker.web.skymap_image import Marker, render_png
from broker.web.tokens import TokenInfo
from crossmatch.localization import skymap_by_hash

router = APIRouter(prefix="/api/v1", tags=["query"])

DataRights = Literal["public", "embargoed", "proprietary"]
State = CoincidenceState
FormatParam = Literal["json", "votable", "csv"]


# -- caller, limits, errors ----------------------------------------------------------------


def viewer(request: Request,
           token: Annotated[TokenInfo | None, Depends(current_token)]) -> q.Viewer:
    """The caller's :class:`~broker.archive.query.Viewer`, after the rate limit (429 beyond it)."""
    limiter = getattr(request.app.state, "rate_limiter", None)
    if limiter is not None:
        key = f"token:{token.id}" if token else \
            f"ip:{request.client.host if request.client else '-'}"
        wait = limiter.retry_after_s(key)
        if wait is not None:
            raise HTTPException(429, "rate limit exceeded: slow down and retry after "
                                     f"{retry_after_header(wait)} s",
                                headers={"Retry-After": retry_after_header(wait)})
    return q.Viewer(token.scopes) if token else q.ANONYMOUS


ViewerDep = Annotated[q.Viewer, Depends(viewer)]


def known_params(request: Request) -> None:
    """400 for a query parameter the route does not take: a misspelt filter must not
    silently return everything."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    names: set[str] = set()
    stack = [dependant]
    while stack:
        node = stack.pop()
        names.update(p.alias for p in node.query_params)
        stack.extend(node.dependencies)
    unknown = sorted(set(request.query_params) - names)
    if unknown:
        raise HTTPException(400, f"unknown query parameter(s) {', '.join(unknown)}; this "
                                 f"route takes {', '.join(sorted(names))}")


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
"""Characters no parameter may hold: C0/C1 controls (NUL first), DEL, lone surrogates.
PostgreSQL refuses NUL in text and SQLite compares it as data, so letting one through
gives each backend its own answer; refused here, both answer 400."""


async def clean_params(request: Request) -> None:
    """400 for a query or path parameter holding a control character (every route).

    Runs before any route's own parameters are used, so the database never sees one.
    A coroutine although it never awaits: FastAPI runs a plain function dependency in
    a worker thread, a hop every request of every route would pay for a regex.
    """
    for where, items in (("query", request.query_params.multi_items()),
                         ("path", request.path_params.items())):
        for name, value in items:
            for text in (name, value):
                if isinstance(text, str) and _CONTROL.search(text):
                    char = _CONTROL.search(text).group()  # type: ignore[union-attr]
                    shown = json.dumps(name)
                    raise HTTPException(400, f"{where} parameter {shown} holds the control "
                                             f"character U+{ord(char):04X}; parameters may "
                                             "not hold control characters")


def _bad_query(exc: Exception) -> HTTPException:
    return HTTPException(400, str(exc))


def _conn(request: Request) -> Any:
    return transaction(request.app.state.archive.engine, readonly=True)


# -- shared query parameters ----------------------------------------------------------------


class Sky:
    """The sky filters every list takes: a cone and a sky map's credible region."""

    def __init__(
        self,
        ra: Annotated[float | None, Query(ge=0, lt=360, description="Cone centre right "
                                          "ascension, ICRS deg (with dec and radius).")] = None,
        dec: Annotated[float | None, Query(ge=-90, le=90, description="Cone centre "
                                           "declination, ICRS deg.")] = None,
        radius: Annotated[float | None, Query(ge=0, le=180, description="Cone radius, "
                                              "deg.")] = None,
    ) -> None:
        given = [v is not None for v in (ra, dec, radius)]
        if any(given) and not all(given):
            raise HTTPException(400, "a cone needs all of ra, dec and radius (deg)")
        self.cone: tuple[float, float, float] | None = (
            (ra, dec, radius) if ra is not None and dec is not None and radius is not None
            else None)


class Region:
    """A stored sky map's credible region."""

    def __init__(
        self,
        skymap: Annotated[str | None, Query(
            pattern="^[0-9a-f]{64}$",
            description="SHA-256 of a sky map the archive holds: keep rows inside its "
                        "credible region.")] = None,
        level: Annotated[float, Query(gt=0, le=1, description="Credible level of the "
                                      "skymap region (probability).")] = 0.9,
    ) -> None:
        self.skymap, self.level = skymap, level


class Paging:
    """Limit, cursor, total count and output format."""

    def __init__(
        self,
        limit: Annotated[int, Query(ge=1, le=q.MAX_LIMIT,
                                    description="Most rows in this page.")] = 100,
        cursor: Annotated[str | None, Query(max_length=512, description="The `next` cursor "
                                            "of the previous page (same filters).")] = None,
        count: Annotated[bool, Query(description="Also count every matching row "
                                     "(`total`, `X-Total-Count`).")] = False,
        format: Annotated[FormatParam | None, Query(description="Output format; "
                                                    "default from Accept, else json.")] = None,
    ) -> None:
        self.limit, self.cursor, self.count, self.format = limit, cursor, count, format


def _region(conn: Connection, region: Region) -> q.CredibleRegion | None:
    if region.skymap is None:
        return None
    return q.credible_region(conn, region.skymap, region.level)


# -- writing a page -----------------------------------------------------------------------


def _page_response(request: Request, paging: Paging, page: q.Page,
                   items: Sequence[Any], rows: Sequence[tabular.Row],
                   columns: Sequence[tabular.Column], name: str, description: str
                   ) -> Response:
    try:
        fmt = tabular.negotiate(paging.format, request.headers.get("accept"))
    except tabular.NotAcceptable as exc:
        raise HTTPException(406, str(exc)) from exc
    headers: dict[str, str] = {"Vary": "Accept, Authorization"}
    if page.next_cursor:
        next_url = request.url.include_query_params(cursor=page.next_cursor)
        headers["Link"] = f'<{next_url}>; rel="next"'
    if page.total is not None:
        headers["X-Total-Count"] = str(page.total)
    if fmt == "json":
        body = {"items": list(items), "next": page.next_cursor, "total": page.total,
                "limit": paging.limit}
        return JSONResponse(body, headers=headers)
    if fmt == "csv":
        return Response(tabular.to_csv(columns, rows), media_type="text/csv; charset=utf-8",
                        headers=headers)
    infos = [("next", page.next_cursor, "Cursor of the next page.")] if page.next_cursor \
        else []
    if page.total is not None:
        infos.append(("total", str(page.total), "Rows matching the query."))
    return Response(tabular.to_votable(columns, rows, name=name, description=description,
                                       infos=infos),
                    media_type=tabular.MEDIA_TYPES["votable"], headers=headers)


def _page_schema(item: str) -> dict[str, Any]:
    return {
        "type": "object", "required": ["items", "next", "total", "limit"],
        "properties": {
            "items": {"type": "array", "items": {"$ref": f"#/components/schemas/{item}"}},
            "next": {"type": ["string", "null"],
                     "description": "Cursor of the next page; null on the last."},
            "total": {"type": ["integer", "null"],
                      "description": "Rows matching the query, when count=true."},
            "limit": {"type": "integer"},
        },
    }


def openapi_components() -> dict[str, Any]:
    """Schemas of the list pages and details (Alert, Coincidence from the contract)."""
    voevent_item = {
        "type": "object",
        "required": ["ivorn", "role", "kind", "subject_ivorn", "created_at", "sha256",
                     "size_bytes", "citations", "url"],
        "properties": {
            "ivorn": {"type": "string"}, "role": {"type": "string"},
            "kind": {"enum": ["alert", "coincidence", "other"]},
            "subject_ivorn": {"type": ["string", "null"]},
            "created_at": {"type": "string", "format": "date-time"},
            "ra_deg": {"type": ["number", "null"]}, "dec_deg": {"type": ["number", "null"]},
            "sha256": {"type": "string"}, "size_bytes": {"type": "integer"},
            "citations": {"type": "array", "items": {
                "type": "object", "required": ["ivorn", "cite"],
                "properties": {"ivorn": {"type": "string"}, "cite": {"type": "string"}}}},
            "url": {"type": "string", "description": "Where its bytes are, as sent."},
        },
    }
    detail_links = {"type": "object", "additionalProperties": {"type": "string"},
                    "description": "URLs of the related resources."}
    return {
        **components("alert"), **components("coincidence"),
        "VOEventSummary": voevent_item,
        "AlertPage": _page_schema("Alert"),
        "CoincidencePage": _page_schema("Coincidence"),
        "VOEventPage": _page_schema("VOEventSummary"),
        "AlertDetail": {
            "type": "object", "required": ["alert", "receipt", "links"],
            "properties": {
                "alert": {"$ref": "#/components/schemas/Alert"},
                "receipt": {"type": "object", "description": "How the raw bytes arrived: "
                            "raw_sha256, size_bytes, received_at, transport."},
                "links": detail_links}},
        "CoincidenceDetail": {
            "type": "object", "required": ["coincidence", "links"],
            "properties": {
                "coincidence": {"$ref": "#/components/schemas/Coincidence"},
                "links": detail_links}},
    }


def _list_responses(page_schema: str) -> dict[int | str, dict[str, Any]]:
    return {
        200: {"description": "One page, newest first.", "content": {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{page_schema}"}},
            "application/x-votable+xml": {"schema": {"type": "string"}},
            "text/csv": {"schema": {"type": "string"}}}},
        400: {"description": "A filter, cursor or sky map that cannot be used."},
        401: {"description": "An invalid, expired or revoked token."},
        406: {"description": "Accept names no format this API writes."},
        429: {"description": "Rate limit exceeded; see Retry-After."},
    }


# -- alerts --------------------------------------------------------------------------------


@router.get("/alerts", response_class=Response, responses=_list_responses("AlertPage"),
            dependencies=[Depends(known_params)])
def list_alerts(
    request: Request, who: ViewerDep,
    sky: Annotated[Sky, Depends()], region: Annotated[Region, Depends()],
    paging: Annotated[Paging, Depends()],
    since: Annotated[datetime | None, Query(description="Event time from (UTC).")] = None,
    until: Annotated[datetime | None, Query(description="Event time to (UTC).")] = None,
    received_since: Annotated[datetime | None, Query(
        description="Received by the broker from (UTC).")] = None,
    received_until: Annotated[datetime | None, Query(
        description="Received by the broker until (UTC).")] = None,
    messenger: Annotated[list[Messenger] | None, Query(description="Messenger (repeat "
                                                       "for any of several).")] = None,
    source: Annotated[list[str] | None, Query(description="Input stream, e.g. "
                                              "gcn.notices.icecube.lvk_nu_track_search.")
                      ] = None,
    facility: Annotated[list[str] | None, Query(description="Facility, e.g. IceCube.")] = None,
    instrument: Annotated[list[str] | None, Query(description="Instrument.")] = None,
    alert_type: Annotated[list[AlertType] | None, Query(description="Alert type.")] = None,
    role: Annotated[list[Role] | None, Query(description="Role.")] = None,
    data_rights: Annotated[list[DataRights] | None, Query(
        description="Data rights level (within what the caller may see).")] = None,
    event_id: Annotated[str | None, Query(description="The issuer's event id.")] = None,
    far_max: Annotated[float | None, Query(ge=0, description="False-alarm rate at most, "
                                           "Hz.")] = None,
    energy_min: Annotated[float | None, Query(ge=0, description="Energy at least, "
                                              "GeV.")] = None,
    energy_max: Annotated[float | None, Query(ge=0, description="Energy at most, "
                                              "GeV.")] = None,
    pipeline: Annotated[list[str] | None, Query(description="Provenance: pipeline.")] = None,
    pipeline_version: Annotated[list[str] | None, Query(
        description="Provenance: pipeline version.")] = None,
    reco_method: Annotated[list[str] | None, Query(
        description="Provenance: reconstruction method.")] = None,
    ivorn_prefix: Annotated[str | None, Query(description="IVORN starts with.")] = None,
    ivorn_contains: Annotated[str | None, Query(description="IVORN contains.")] = None,
) -> Response:
    """Alerts, newest event first, filtered by time, sky, messenger, significance and
    provenance; what the caller's data rights allow."""
    try:
        with _conn(request) as conn:
            query = q.AlertQuery(
                since=since, until=until, received_since=received_since,
                received_until=received_until, messenger=messenger, source=source,
                facility=facility, instrument=instrument, alert_type=alert_type, role=role,
                data_rights=data_rights, event_id=event_id, far_max_hz=far_max,
                energy_min_gev=energy_min, energy_max_gev=energy_max, pipeline=pipeline,
                pipeline_version=pipeline_version, reco_method=reco_method,
                ivorn_prefix=ivorn_prefix, ivorn_contains=ivorn_contains, cone=sky.cone,
                region=_region(conn, region), limit=paging.limit)
            page = q.search_alerts(conn, query, who, cursor=paging.cursor, count=paging.count)
    except q.QueryError as exc:
        raise _bad_query(exc) from exc
    rows = [r._mapping for r in page.rows]
    return _page_response(request, paging, page, [r["document"] for r in rows], rows,
                          tabular.ALERT_COLUMNS, "alerts",
                          "Alerts archived by mmbroker, newest event first.")


def visible_alert(conn: Connection, ivorn: str, who: q.Viewer) -> Any:
    """The alert row if it exists and ``who`` may see it; else 404 (the same either way)."""
    return _visible(conn, AlertRow, q.alert_visible(who, datetime.now(UTC)), ivorn, "alert")


def _visible(conn: Connection, model: Any, visible: Any, ivorn: str, what: str) -> Any:
    row = conn.execute(select(model.__table__).where(model.ivorn == ivorn, visible)).first()
    if row is None:
        raise HTTPException(404, f"no {what} {ivorn}")
    return row


def _provenance_links(conn: Connection, ivorn: str, base: str, path: str) -> dict[str, str]:
    """Links to the provenance and VOEvent of ``ivorn`` when the broker published it."""
    published = conn.execute(select(ProvenanceDoc.id).where(
        ProvenanceDoc.subject_ivorn == ivorn)).first() is not None
    if not published:
        return {}
    return {"provenance": base + path + "/provenance",
            "voevent": f"{base}/api/v1/voevents/{quote(ivorn, safe='')}"}


def base_url(request: Request) -> str:
    """The URL the caller reached the app at, without a trailing slash (links in answers)."""
    return str(request.base_url).rstrip("/")


@router.get("/alerts/{ivorn:path}/raw", response_class=Response, responses={
    200: {"content": {"application/octet-stream": {}},
          "description": "The message as received, byte for byte."},
    404: {"description": "No such alert (or not visible to the caller)."}})
def alert_raw(request: Request, ivorn: str, who: ViewerDep) -> Response:
    """The raw payload an alert was normalized from."""
    with _conn(request) as conn:
        row = visible_alert(conn, ivorn, who)
        data = conn.execute(select(RawPayload.data).where(
            RawPayload.sha256 == row.raw_sha256)).scalar_one()
    return Response(bytes(data), media_type="application/octet-stream", headers={
        "Content-Disposition": f'attachment; filename="{row.raw_sha256}.bin"'})


@router.get("/alerts/{ivorn:path}/provenance", response_class=Response,
            responses={200: {"content": {"application/json": {}, "application/xml": {},
                                         "text/provenance-notation": {}},
                             "description": "The W3C PROV document of its VOEvent."},
                       404: {"description": "No such alert, or the broker published no "
                                            "VOEvent of it (its receipt is in the detail)."}})
def alert_provenance(request: Request, ivorn: str, who: ViewerDep,
                     format: Annotated[Literal["json", "xml", "provn"], Query(
                         description="PROV-JSON, PROV-XML or PROV-N.")] = "json") -> Response:
    """The provenance of the VOEvent the broker issued for this alert (detector triggers)."""
    with _conn(request) as conn:
        visible_alert(conn, ivorn, who)
        doc = provenance_or_404(conn, ivorn)
    return provenance_response(doc, ivorn, format)


@router.get("/alerts/{ivorn:path}/skymap", response_class=Response, responses={
    200: {"content": {"application/fits": {}}, "description": "The sky map file."},
    404: {"description": "No such alert, or no sky map of it held here."}})
def alert_skymap(request: Request, ivorn: str, who: ViewerDep) -> Response:
    """The alert's HEALPix sky map (FITS, as received)."""
    with _conn(request) as conn:
        row = visible_alert(conn, ivorn, who)
        data = q.skymap_bytes(conn, row.skymap_sha256) if row.skymap_sha256 else None
    if data is None:
        raise HTTPException(404, f"no sky map of {ivorn} is held here")
    return Response(bytes(data), media_type="application/fits", headers={
        "Content-Disposition": f'attachment; filename="{row.skymap_sha256}.fits"'})


@router.get("/alerts/{ivorn:path}/skymap.png", response_class=Response, responses={
    200: {"content": {"image/png": {}}, "description": "Mollweide image."},
    404: {"description": "No such alert, or it has no localization."}})
def alert_skymap_png(request: Request, ivorn: str, who: ViewerDep) -> Response:
    """The alert's localization on a Mollweide projection (PNG)."""
    with _conn(request) as conn:
        row = visible_alert(conn, ivorn, who)
        png = _png(conn, ivorn, [row._mapping])
    return Response(png, media_type="image/png")


@router.get("/alerts/{ivorn:path}", responses={
    200: {"content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/AlertDetail"}}},
        "description": "The alert, how it arrived, and links."},
    404: {"description": "No such alert (or not visible to the caller)."}})
def alert_detail(request: Request, ivorn: str, who: ViewerDep) -> Any:
    """One alert revision: its document, its receipt and links to the rest."""
    base, path = base_url(request), f"/api/v1/alerts/{quote(ivorn, safe='')}"
    with _conn(request) as conn:
        row = visible_alert(conn, ivorn, who)
        published = _provenance_links(conn, ivorn, base, path)
    transport = row.transport or {}
    if "http" in transport and not who.holds("admin"):
        transport = {"http": {}}  # who sent a trigger is the operators' business
    links = {"self": base + path, "raw": base + path + "/raw"}
    if row.skymap_sha256:
        links["skymap"] = base + path + "/skymap"
    if row.loc_kind != "none":
        links["skymap_png"] = base + path + "/skymap.png"
    links.update(published)
    return {"alert": row.document,
            "receipt": {"raw_sha256": row.raw_sha256,
                        "received_at": row.received_at.isoformat().replace("+00:00", "Z"),
                        "transport": transport},
            "links": links}


# -- coincidences --------------------------------------------------------------------------


@router.get("/coincidences", response_class=Response,
            responses=_list_responses("CoincidencePage"), dependencies=[Depends(known_params)])
def list_coincidences(
    request: Request, who: ViewerDep,
    sky: Annotated[Sky, Depends()], region: Annotated[Region, Depends()],
    paging: Annotated[Paging, Depends()],
    since: Annotated[datetime | None, Query(description="Reference time from (UTC).")] = None,
    until: Annotated[datetime | None, Query(description="Reference time to (UTC).")] = None,
    created_since: Annotated[datetime | None, Query(description="Found from (UTC).")] = None,
    created_until: Annotated[datetime | None, Query(description="Found until (UTC).")] = None,
    pairing: Annotated[list[str] | None, Query(description="Pairing name.")] = None,
    state: Annotated[list[State] | None, Query(description="State.")] = None,
    messenger: Annotated[list[Messenger] | None, Query(
        description="Some member has this messenger.")] = None,
    source: Annotated[list[str] | None, Query(
        description="Some member came from this stream.")] = None,
    facility: Annotated[list[str] | None, Query(
        description="Some member is from this facility.")] = None,
    role: Annotated[list[Role] | None, Query(description="Role of the members.")] = None,
    member: Annotated[str | None, Query(description="IVORN of a member alert.")] = None,
    far_max: Annotated[float | None, Query(
        ge=0, description="Smallest significance FAR at most, Hz.")] = None,
    config_hash: Annotated[list[str] | None, Query(
        description="Provenance: SHA-256 of the cross-match configuration.")] = None,
    engine_version: Annotated[list[str] | None, Query(
        description="Provenance: cross-match engine version.")] = None,
    ivorn_prefix: Annotated[str | None, Query(description="IVORN starts with.")] = None,
    ivorn_contains: Annotated[str | None, Query(description="IVORN contains.")] = None,
) -> Response:
    """Coincidences, newest found first; those whose every member the caller may see."""
    try:
        with _conn(request) as conn:
            query = q.CoincidenceQuery(
                since=since, until=until, created_since=created_since,
                created_until=created_until, pairing=pairing, state=state,
                messenger=messenger, source=source, facility=facility, role=role,
                member=member, far_max_hz=far_max, config_hash=config_hash,
                engine_version=engine_version, ivorn_prefix=ivorn_prefix,
                ivorn_contains=ivorn_contains, cone=sky.cone, region=_region(conn, region),
                limit=paging.limit)
            page = q.search_coincidences(conn, query, who, cursor=paging.cursor,
                                         count=paging.count)
    except q.QueryError as exc:
        raise _bad_query(exc) from exc
    rows = [r._mapping for r in page.rows]
    return _page_response(request, paging, page, [r["document"] for r in rows], rows,
                          tabular.COINCIDENCE_COLUMNS, "coincidences",
                          "Coincidences found by mmbroker, newest first.")


def visible_coincidence(conn: Connection, ivorn: str, who: q.Viewer) -> Any:
    """The coincidence row if it exists and ``who`` may see all its members; else 404."""
    return _visible(conn, CoincidenceRow, q.coincidence_visible(who, datetime.now(UTC)),
                    ivorn, "coincidence")


@router.get("/coincidences/{ivorn:path}/provenance", response_class=Response,
            responses={200: {"content": {"application/json": {}, "application/xml": {},
                                         "text/provenance-notation": {}},
                             "description": "The W3C PROV document."},
                       404: {"description": "No such coincidence, or not yet published."}})
def coincidence_provenance(request: Request, ivorn: str, who: ViewerDep,
                           format: Annotated[Literal["json", "xml", "provn"], Query(
                               description="PROV-JSON, PROV-XML or PROV-N.")] = "json"
                           ) -> Response:
    """The provenance of a coincidence: its members' raw hashes, engine and config hash."""
    with _conn(request) as conn:
        visible_coincidence(conn, ivorn, who)
        doc = provenance_or_404(conn, ivorn)
    return provenance_response(doc, ivorn, format)


@router.get("/coincidences/{ivorn:path}/skymap.png", response_class=Response, responses={
    200: {"content": {"image/png": {}}, "description": "Mollweide image of the members."},
    404: {"description": "No such coincidence."}})
def coincidence_skymap_png(request: Request, ivorn: str, who: ViewerDep) -> Response:
    """The members' localizations on one Mollweide projection (PNG)."""
    with _conn(request) as conn:
        row = visible_coincidence(conn, ivorn, who)
        members = conn.execute(
            select(AlertRow.__table__).join(CoincidenceMember,
                                            CoincidenceMember.alert_id == AlertRow.id)
            .where(CoincidenceMember.coincidence_id == row.id).order_by(AlertRow.id)).all()
        png = _png(conn, ivorn, [m._mapping for m in members])
    return Response(png, media_type="image/png")


@router.get("/coincidences/{ivorn:path}", responses={
    200: {"content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/CoincidenceDetail"}}},
        "description": "The coincidence and links."},
    404: {"description": "No such coincidence (or not visible to the caller)."}})
def coincidence_detail(request: Request, ivorn: str, who: ViewerDep) -> Any:
    """One coincidence revision, with links to its members, VOEvent and provenance."""
    base, path = base_url(request), f"/api/v1/coincidences/{quote(ivorn, safe='')}"
    with _conn(request) as conn:
        row = visible_coincidence(conn, ivorn, who)
        published = _provenance_links(conn, ivorn, base, path)
    links = {"self": base + path, "skymap_png": base + path + "/skymap.png"}
    for i, m in enumerate(row.document["members"]):
        links[f"member{i}"] = f"{base}/api/v1/alerts/{quote(m['alert_id'], safe='')}"
    links.update(published)
    return {"coincidence": row.document, "links": links}


# -- VOEvents ------------------------------------------------------------------------------


@router.get("/voevents", response_class=Response, responses=_list_responses("VOEventPage"),
            dependencies=[Depends(known_params)])
def list_voevents(
    request: Request, who: ViewerDep, sky: Annotated[Sky, Depends()],
    paging: Annotated[Paging, Depends()],
    authored_since: Annotated[datetime | None, Query(description="Issued from (UTC).")
                              ] = None,
    authored_until: Annotated[datetime | None, Query(description="Issued until (UTC).")
                              ] = None,
    role: Annotated[list[Literal["observation", "test", "utility"]] | None, Query(
        description="VOEvent role.")] = None,
    kind: Annotated[Literal["alert", "coincidence"] | None, Query(
        description="What it announces.")] = None,
    stream: Annotated[str | None, Query(description="IVORN stream, authority/stream.")
                      ] = None,
    ivorn_prefix: Annotated[str | None, Query(description="IVORN starts with.")] = None,
    ivorn_contains: Annotated[str | None, Query(description="IVORN contains.")] = None,
    ref_exact: Annotated[str | None, Query(description="Cites this IVORN.")] = None,
    ref_contains: Annotated[str | None, Query(description="Cites an IVORN containing "
                                              "this.")] = None,
    ref_any: Annotated[bool | None, Query(description="Cites anything (true) or "
                                          "nothing (false).")] = None,
    cited: Annotated[bool | None, Query(description="Cited by another VOEvent (true) or "
                                        "not (false).")] = None,
    cited_by: Annotated[str | None, Query(description="Cited by the VOEvent with this "
                                          "IVORN.")] = None,
) -> Response:
    """VOEvents this broker issued, newest first (voeventdb's filter names)."""
    try:
        with _conn(request) as conn:
            query = q.VOEventQuery(
                authored_since=authored_since, authored_until=authored_until, role=role,
                kind=kind, stream=stream, ivorn_prefix=ivorn_prefix,
                ivorn_contains=ivorn_contains, ref_exact=ref_exact, ref_contains=ref_contains,
                ref_any=ref_any, cited=cited, cited_by=cited_by, cone=sky.cone,
                limit=paging.limit)
            page = q.search_voevents(conn, query, who, cursor=paging.cursor,
                                     count=paging.count)
            cites = q.citations(conn, (r.id for r in page.rows))
    except q.QueryError as exc:
        raise _bad_query(exc) from exc
    base = base_url(request)
    rows = []
    for r in page.rows:
        m = r._mapping
        kind_of = "alert" if m["alert_id"] is not None else \
            "coincidence" if m["coincidence_id"] is not None else "other"
        rows.append({
            "ivorn": m["ivorn"], "role": m["role"], "kind": kind_of,
            "subject_ivorn": m["subject_ivorn"],
            "created_at": m["created_at"].isoformat().replace("+00:00", "Z"),
            "ra_deg": m["ra_deg"], "dec_deg": m["dec_deg"], "sha256": m["sha256"],
            "size_bytes": int(m["size_bytes"]), "citations": cites.get(m["id"], []),
            "url": f"{base}/api/v1/voevents/{quote(m['ivorn'], safe='')}"})
    return _page_response(request, paging, page, rows, rows, tabular.VOEVENT_COLUMNS,
                          "voevents", "VOEvents issued by mmbroker, newest first.")


# -- shared helpers ------------------------------------------------------------------------


def provenance_doc(conn: Connection, ivorn: str) -> dict[str, Any] | None:
    """The PROV-JSON document of what the broker published for ``ivorn`` (None: nothing)."""
    return conn.execute(select(ProvenanceDoc.document).where(
        ProvenanceDoc.subject_ivorn == ivorn)).scalar_one_or_none()


def provenance_or_404(conn: Connection, ivorn: str) -> dict[str, Any]:
    """The PROV document of ``ivorn``, or 404 when the broker published nothing for it."""
    doc = provenance_doc(conn, ivorn)
    if doc is None:
        raise HTTPException(404, f"the broker published no VOEvent of {ivorn}, so it holds "
                                 "no provenance document for it")
    return doc


def provenance_response(doc: dict[str, Any], ivorn: str, fmt: str) -> Response:
    if fmt == "json":
        return Response(json.dumps(doc).encode(), media_type=provenance.MEDIA_TYPES["json"])
    parsed = provenance.parse(json.dumps(doc).encode(), "json")
    return Response(provenance.serialize(parsed, fmt),  # type: ignore[arg-type]
                    media_type=provenance.MEDIA_TYPES[fmt])


_PNG_CACHE: OrderedDict[tuple[str, ...], bytes] = OrderedDict()
_PNG_CACHE_SIZE = 64
_png_lock = threading.Lock()


def _png(conn: Connection, title: str, alerts: Sequence[Mapping[str, Any]]) -> bytes:
    """Mollweide PNG of alerts' localizations: the first held sky map, and every circle.

    Cached by subject and member revisions: a revision's localization never
    changes, and rendering a multi-order LVK map takes a large share of a second (seen
    in development, not benchmarked).
    """
    key = (title, *(a["ivorn"] for a in alerts))
    with _png_lock:
        if key in _PNG_CACHE:
            _PNG_CACHE.move_to_end(key)
            return _PNG_CACHE[key]

    shas = [a["skymap_sha256"] for a in alerts if a["skymap_sha256"]]
    sky = skymap_by_hash(shas[0], lambda sha256: q.skymap_bytes(conn, sha256)) if shas \
        else None
    markers = [Marker(a["ivorn"].rpartition("/")[2], a["ra_deg"], a["dec_deg"],
                      a["error_radius_deg"])
               for a in alerts if a["ra_deg"] is not None and a["dec_deg"] is not None
               and a["loc_kind"] != "skymap"]
    if sky is None and not markers:
        raise HTTPException(404, f"{title} has no localization to draw")
    png = render_png(title, skymap=sky, markers=markers)
    with _png_lock:
        _PNG_CACHE[key] = png
        while len(_PNG_CACHE) > _PNG_CACHE_SIZE:
            _PNG_CACHE.popitem(last=False)
    return png
