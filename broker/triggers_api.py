"""``POST /api/v1/triggers``: a detector's own online triggers, over authenticated HTTP.

The body is the trigger JSON of ``alerts_schema/trigger.schema.json``.  It
goes through the same ingest path as every stream (raw bytes stored first,
normalized, archived idempotently, or quarantined with the reason), under
the stream name ``detector``, so a trigger sent by HTTP and again on the
``detector.triggers`` Kafka topic is one alert.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from broker.auth import require_scope
from broker.tokens import TokenInfo

MAX_TRIGGER_BYTES = 256 * 1024
TRIGGER_SOURCE = "detector"

router = APIRouter(prefix="/api/v1", tags=["triggers"])


class TriggerResult(BaseModel):
    """What became of a posted trigger."""

    status: Literal["archived", "duplicate"] = Field(
        description="archived: a new alert; duplicate: this revision was already archived "
                    "with the same content.")
    id: str = Field(description="IVORN of the alert the trigger became.")
    raw_sha256: str = Field(description="SHA-256 of the body as received.")


class TriggerRejected(BaseModel):
    """A trigger that could not become an alert; its bytes are kept in quarantine."""

    detail: str = Field(description="Why, with the JSON path of each schema violation.")
    raw_sha256: str = Field(description="SHA-256 of the body, to find it in quarantine.")


@router.post(
    "/triggers",
    status_code=status.HTTP_201_CREATED,
    response_model=TriggerResult,
    responses={
        200: {"model": TriggerResult, "description": "Already archived (same content)."},
        401: {"description": "No, unknown, expired or revoked token."},
        403: {"description": "The token lacks scope write:triggers."},
        413: {"description": f"Body over {MAX_TRIGGER_BYTES} bytes."},
        415: {"description": "Body is not application/json."},
        422: {"model": TriggerRejected, "description": "Not a valid trigger; quarantined."},
    },
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/Trigger"}}}}},
)
async def post_trigger(
    request: Request,
    token: Annotated[TokenInfo, Depends(require_scope("write:triggers"))],
) -> Any:
    """Submit a detector trigger (bearer token with scope ``write:triggers``)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise HTTPException(415,
                            "send the trigger as application/json")
    # MAX_TRIGGER_BYTES is enforced before this runs, for every request to this path
    # (broker.bodylimit, set up in broker.app).
    body = await request.body()
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(_ingest, request, body, token)


def openapi_components() -> dict[str, Any]:
    """The trigger JSON Schema as OpenAPI components (``Trigger`` and its ``$defs``)."""
    from alerts_schema.openapi import components

    return components("trigger")


def _ingest(request: Request, body: bytes, token: TokenInfo) -> Any:
    ingestor = request.app.state.ingestor
    client = request.client.host if request.client else None
    raw = ingestor.receive(TRIGGER_SOURCE, body, transport={
        "http": {"client": client, "token_id": token.id, "token_name": token.name}})
    (outcome,) = ingestor.ingest([raw])[:1]
    if outcome.status == "quarantined":
        return JSONResponse(TriggerRejected(detail=outcome.reason or "rejected",
                                            raw_sha256=raw.sha256).model_dump(),
                            status_code=422)
    result = TriggerResult(status=outcome.status, id=outcome.ivorn or "",
                           raw_sha256=raw.sha256)
    code = status.HTTP_201_CREATED if outcome.status == "archived" else status.HTTP_200_OK
    return JSONResponse(result.model_dump(), status_code=code)
