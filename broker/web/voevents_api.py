"""Published VOEvents, their provenance, and the sky maps they reference.

``GET /api/v1/voevents/{ivorn}`` returns the VOEvent byte for byte as it was
sent; ``.../provenance?format=json|xml|provn`` its W3C PROV document;
``GET /api/v1/skymaps/{sha256}`` a sky map file by its content hash (VOEvents
carry sky maps by reference to this URL, never inline).  Each answers for the
caller's data rights (:mod:`broker.archive.query`): a VOEvent of an alert the caller
may not see is "not found", as is a sky map no visible alert references.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.engine import Connection

from broker.archive import query as q
from broker.archive.db import transaction
from broker.archive.models import AlertRow, CoincidenceRow, VOEventRow
from broker.web.query_api import ViewerDep, provenance_or_404, provenance_response

router = APIRouter(prefix="/api/v1", tags=["voevents"])


@router.get("/voevents/{ivorn:path}/provenance", response_class=Response,
            responses={200: {"content": {"application/json": {}, "application/xml": {},
                                         "text/provenance-notation": {}},
                             "description": "The W3C PROV document."},
                       404: {"description": "No VOEvent with this IVORN."}})
def voevent_provenance(request: Request, ivorn: str, who: ViewerDep,
                       format: Literal["json", "xml", "provn"] = Query(
                           "json", description="PROV-JSON, PROV-XML or PROV-N.")) -> Any:
    """The provenance of a published VOEvent."""
    archive = request.app.state.archive
    with transaction(archive.engine, readonly=True) as conn:
        _visible_voevent(conn, ivorn, who)
        doc = provenance_or_404(conn, ivorn)
    return provenance_response(doc, ivorn, format)


def _visible_voevent(conn: Connection, ivorn: str, who: q.Viewer) -> bytes:
    """The VOEvent's bytes if it exists and the caller may see what it announces; else 404."""
    now = datetime.now(UTC)
    xml = conn.execute(
        select(VOEventRow.xml)
        .outerjoin(AlertRow, AlertRow.id == VOEventRow.alert_id)
        .outerjoin(CoincidenceRow, CoincidenceRow.id == VOEventRow.coincidence_id)
        .where(VOEventRow.ivorn == ivorn, q.voevent_visible(who, now))).scalar_one_or_none()
    if xml is None:
        raise HTTPException(404, f"no VOEvent {ivorn}")
    return bytes(xml)


@router.get("/voevents/{ivorn:path}", response_class=Response,
            responses={200: {"content": {"text/xml": {}},
                             "description": "The VOEvent, byte for byte as sent."},
                       404: {"description": "No VOEvent with this IVORN."}})
def voevent(request: Request, ivorn: str, who: ViewerDep) -> Any:
    """A VOEvent this broker published, exactly as it was sent."""
    archive = request.app.state.archive
    with transaction(archive.engine, readonly=True) as conn:
        xml = _visible_voevent(conn, ivorn, who)
    return Response(xml, media_type="text/xml")


@router.get("/skymaps/{sha256}", response_class=Response,
            responses={200: {"content": {"application/fits": {}},
                             "description": "The sky map file as received."},
                       404: {"description": "No sky map with this hash."}})
def skymap(request: Request, sha256: str, who: ViewerDep) -> Any:
    """A sky map file by the SHA-256 of its bytes, when an alert the caller may see cites it.

    The answer for a map only hidden alerts cite is the same 404 as for an
    unknown hash, so the endpoint does not reveal which maps exist.
    """
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise HTTPException(404, "not a SHA-256")
    archive = request.app.state.archive
    with transaction(archive.engine, readonly=True) as conn:
        public = conn.execute(select(AlertRow.id).where(
            AlertRow.skymap_sha256 == sha256, q.alert_visible(who, datetime.now(UTC))
        ).limit(1)).first()
        data = q.skymap_bytes(conn, sha256) if public is not None else None
    if data is None:
        raise HTTPException(404, f"no sky map {sha256}")
    return Response(bytes(data), media_type="application/fits",
                    headers={"Content-Disposition": f'attachment; filename="{sha256}.fits"'})
