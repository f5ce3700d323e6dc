"""Published VOEvents, their provenance, and the sky maps they reference.

``GET /api/v1/voevents/{ivorn}`` returns the VOEvent byte for byte as it was
sent; ``.../provenance?format=json|xml|provn`` its W3C PROV document;
``GET /api/v1/skymaps/{sha256}`` a sky map file by its content hash (VOEvents
carry sky maps by reference to this URL, never inline).  What the broker has
published is public.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import Response
from sqlalchemy import select

from broker.db import transaction
from broker.models import ProvenanceDoc, VOEventRow

router = APIRouter(prefix="/api/v1", tags=["voevents"])


@router.get("/voevents/{ivorn:path}/provenance", response_class=Response,
            responses={200: {"content": {"application/json": {}, "application/xml": {},
                                         "text/provenance-notation": {}},
                             "description": "The W3C PROV document."},
                       404: {"description": "No VOEvent with this IVORN."}})
def voevent_provenance(request: Request, ivorn: str,
                       format: Literal["json", "xml", "provn"] = Query(
                           "json", description="PROV-JSON, PROV-XML or PROV-N.")) -> Any:
    """The provenance of a published VOEvent."""
    from broker import provenance

    archive = request.app.state.archive
    with transaction(archive.engine, readonly=True) as conn:
        doc = conn.execute(select(ProvenanceDoc.document)
                           .where(ProvenanceDoc.subject_ivorn == ivorn)).scalar_one_or_none()
    if doc is None:
        raise HTTPException(404, f"no provenance for {ivorn}")
    import json

    parsed = provenance.parse(json.dumps(doc).encode(), "json")
    return Response(provenance.serialize(parsed, format),
                    media_type=provenance.MEDIA_TYPES[format])


@router.get("/voevents/{ivorn:path}", response_class=Response,
            responses={200: {"content": {"text/xml": {}},
                             "description": "The VOEvent, byte for byte as sent."},
                       404: {"description": "No VOEvent with this IVORN."}})
def voevent(request: Request, ivorn: str) -> Any:
    """A VOEvent this broker published, exactly as it was sent."""
    archive = request.app.state.archive
    with transaction(archive.engine, readonly=True) as conn:
        xml = conn.execute(select(VOEventRow.xml)
                           .where(VOEventRow.ivorn == ivorn)).scalar_one_or_none()
    if xml is None:
        raise HTTPException(404, f"no VOEvent {ivorn}")
    return Response(bytes(xml), media_type="text/xml")


@router.get("/skymaps/{sha256}", response_class=Response,
            responses={200: {"content": {"application/fits": {}},
                             "description": "The sky map file as received."},
                       404: {"description": "No sky map with this hash."}})
def skymap(request: Request, sha256: str) -> Any:
    """A sky map file by the SHA-256 of its bytes, when a public alert references it.

    Maps of embargoed (until the embargo ends) or proprietary alerts are not
    served here; the answer is the same 404 as for an unknown hash, so the
    endpoint does not reveal which maps exist.
    """
    from sqlalchemy import and_, or_

    from broker.archive import utcnow
    from broker.models import AlertRow

    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise HTTPException(404, "not a SHA-256")
    archive = request.app.state.archive
    with transaction(archive.engine, readonly=True) as conn:
        public = conn.execute(select(AlertRow.id).where(
            AlertRow.skymap_sha256 == sha256,
            or_(AlertRow.data_rights == "public",
                and_(AlertRow.data_rights == "embargoed", AlertRow.embargo_until <= utcnow()))
        ).limit(1)).first()
    data = archive.skymap(sha256) if public is not None else None
    if data is None:
        raise HTTPException(404, f"no sky map {sha256}")
    return Response(bytes(data), media_type="application/fits",
                    headers={"Content-Disposition": f'attachment; filename="{sha256}.fits"'})
