"""``POST /api/v1/triggers``: a detector's own online triggers, over authenticated HTTP.

The body is the trigger JSON of ``alerts_schema/trigger.schema.json`` (one
object, or a list of at most ``max_triggers_per_request`` of them).  It goes
through the same ingest path as every stream (raw bytes stored first,
normalized, archived idempotently, or quarantined with the reason), under
the stream name ``detector``, so a trigger sent by HTTP and again on the
``detector.triggers`` Kafka topic is one alert.

Who may write what
    A ``write:triggers`` token is bound to the detectors it may write
    (``mmbroker token create --scope write:triggers --detector NAME``): a
    trigger (initial, revision or retraction) for another detector is refused
    with 403, and the request's bytes are kept in quarantine
    (:class:`~alerts_schema.errors.RefusedAuthor`, the reason naming the token and
    the detector).  The event id carries the detector, so a token can only
    revise or retract its own detectors' events.  A token bound to no detector
    (made before binding existed) is refused the same way unless
    ``MMBROKER_ALLOW_UNBOUND_TRIGGER_TOKENS`` is set; ``admin`` writes any.
    Each archived revision records the token that wrote it (``alerts.token_id``
    and the receipt's ``transport.http.token_id``).

How much
    A list longer than the cap is refused whole (413, quarantined, nothing
    archived).  The reply lists every trigger's IVORN and outcome.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from alerts_schema.errors import HostileInput, InputError, PermanentError, RefusedAuthor
from alerts_schema.openapi import components
from broker.web.auth import require_scope_in_worker
from broker.web.tokens import TokenInfo
from listeners import json_limits
from listeners.envelope import Outcome, RawMessage

MAX_TRIGGER_BYTES = 256 * 1024
TRIGGER_SOURCE = "detector"

router = APIRouter(prefix="/api/v1", tags=["triggers"])


class TriggerItem(BaseModel):
    """What became of one trigger of the request."""

    id: str | None = Field(description="IVORN of the alert the trigger became (null when "
                                       "nothing was archived for it).")
    status: Literal["archived", "duplicate", "quarantined"] = Field(
        description="archived: a new alert revision; duplicate: this revision was already "
                    "archived with the same content; quarantined: refused, kept with the "
                    "reason (e.g. a revision that conflicts with the archived one).")
    reason: str | None = Field(default=None, description="Why, when quarantined.")


class TriggerResult(BaseModel):
    """What became of the posted trigger(s): every item, in the order posted."""

    status: Literal["archived", "duplicate"] = Field(
        description="archived: at least one new alert revision; duplicate: nothing new.")
    id: str = Field(description="IVORN of the first item's alert (the only one when one "
                                "trigger was posted); see items for all.")
    raw_sha256: str = Field(description="SHA-256 of the body as received.")
    items: list[TriggerItem] = Field(description="One entry per trigger posted, in order: "
                                                 "its IVORN and outcome.")


class TriggerRejected(BaseModel):
    """A request that could not become alerts; its bytes are kept in quarantine."""

    detail: str = Field(description="Why, with the JSON path of each schema violation.")
    raw_sha256: str = Field(description="SHA-256 of the body, to find it in quarantine.")
    items: list[TriggerItem] = Field(default_factory=list,
                                     description="Each trigger's outcome, when the request "
                                                 "was parsed into triggers.")


@router.post(
    "/triggers",
    status_code=status.HTTP_201_CREATED,
    response_model=TriggerResult,
    responses={
        200: {"model": TriggerResult, "description": "Nothing new: every trigger was already "
                                                     "archived with the same content."},
        401: {"description": "No, unknown, expired or revoked token."},
        403: {"description": "The token lacks scope write:triggers, or may not write for a "
                             "detector of the request: then the body is kept in quarantine "
                             "and the answer also gives its raw_sha256."},
        413: {"description": f"Body over {MAX_TRIGGER_BYTES} bytes, or more triggers than "
                             "max_triggers_per_request (default 100) in one list (then kept "
                             "in quarantine, with raw_sha256 in the answer); nothing "
                             "archived."},
        415: {"description": "Body is not application/json."},
        422: {"model": TriggerRejected, "description": "Not a valid trigger; quarantined."},
        429: {"description": "Write or failed-authentication rate limit; see Retry-After."},
    },
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"oneOf": [
            {"$ref": "#/components/schemas/Trigger"},
            {"type": "array", "items": {"$ref": "#/components/schemas/Trigger"},
             "minItems": 1,
             "description": "Several triggers (at most max_triggers_per_request)."}]}}}}},
)
async def post_trigger(
    request: Request,
    authorize: Annotated[Callable[[], TokenInfo],
                         Depends(require_scope_in_worker("write:triggers"))],
) -> Any:
    """Submit detector triggers (bearer token with scope ``write:triggers``, bound to the
    triggers' detector): one trigger object or a list of them; the reply lists each
    one's IVORN and outcome."""
    # MAX_TRIGGER_BYTES is enforced before this runs, for every request to this path
    # (broker.web.bodylimit, set up in broker.web.app).
    body = await request.body()
    return await run_in_threadpool(_ingest, request, body, authorize)


def openapi_components() -> dict[str, Any]:
    """The trigger JSON Schema as OpenAPI components (``Trigger`` and its ``$defs``)."""
    return components("trigger")


def _documents(body: bytes) -> list[Any] | None:
    """The trigger documents of a body, or None when it is not JSON (the ingest path then
    quarantines it with the parser's reason)."""
    try:
        decoded = json_limits.loads(body)
    except InputError:
        return None
    return decoded if isinstance(decoded, list) else [decoded]


def _refusal(documents: list[Any] | None, token: TokenInfo, allow_unbound: bool,
             cap: int) -> tuple[int, PermanentError] | None:
    """The status and error refusing this request before anything is archived, if any."""
    if documents is not None and len(documents) > cap:
        return 413, HostileInput(f"{len(documents)} triggers in one request; at most {cap} "
                                 "(max_triggers_per_request): send them in smaller lists")
    if token.detectors is None and not token.may_write("", allow_unbound=allow_unbound):
        return 403, RefusedAuthor(f"{token.describe()} is bound to no detector and unbound "
                                  "trigger tokens are not allowed: create one with `mmbroker "
                                  "token create --scope write:triggers --detector NAME`")
    for doc in documents or []:
        detector = doc.get("detector") if isinstance(doc, dict) else None
        if isinstance(detector, str) and not token.may_write(detector,
                                                             allow_unbound=allow_unbound):
            return 403, RefusedAuthor(f"{token.describe()} may not write triggers of detector "
                                      f"{json.dumps(detector)}")
    return None


def _in_posted_order(outcomes: list[Outcome], documents: list[Any]) -> list[Outcome]:
    """The archive reports new rows before known ones: put them back in the order posted,
    by (event id, revision) as the trigger normalizer forms them."""
    keys = [(f"{d.get('detector')}:{d.get('event_id')}", d.get("revision", 0))
            if isinstance(d, dict) else None for d in documents]
    pending = {i: o for i, o in enumerate(outcomes)}
    ordered: list[Outcome] = []
    for key in keys:
        match = next((i for i, o in pending.items() if o.alert is not None
                      and (o.alert.event_id, o.alert.revision) == key), None)
        if match is not None:
            ordered.append(pending.pop(match))
    return ordered + list(pending.values())


def _item(outcome: Outcome) -> TriggerItem:
    return TriggerItem(id=outcome.ivorn, status=outcome.status,
                       reason=outcome.reason if outcome.status == "quarantined" else None)


def _ingest(request: Request, body: bytes, authorize: Callable[[], TokenInfo]) -> Any:
    token = authorize()  # here, in the worker thread the ingest needs anyway
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise HTTPException(415, "send the trigger as application/json")
    ingestor = request.app.state.trigger_sink
    settings = request.app.state.settings
    client = request.client.host if request.client else None
    raw = ingestor.receive(TRIGGER_SOURCE, body, transport={
        "http": {"client": client, "token_id": token.id, "token_name": token.name}})
    documents = _documents(body)
    refused = _refusal(documents, token, settings.allow_unbound_trigger_tokens,
                       settings.max_triggers_per_request)
    if refused is not None:
        code, error = refused
        _quarantine(request, raw, error)
        return JSONResponse(TriggerRejected(detail=str(error),
                                            raw_sha256=raw.sha256).model_dump(),
                            status_code=code)
    outcomes = _in_posted_order(ingestor.ingest([raw]), documents or [])
    items = [_item(o) for o in outcomes]
    if not outcomes or all(o.status == "quarantined" for o in outcomes):
        detail = "; ".join(dict.fromkeys(o.reason or "rejected" for o in outcomes)) \
            or "rejected"
        per_trigger = any(o.ivorn for o in outcomes)  # else the whole body was refused
        return JSONResponse(TriggerRejected(detail=detail, raw_sha256=raw.sha256,
                                            items=items if per_trigger else []).model_dump(),
                            status_code=422)
    archived = any(o.status == "archived" for o in outcomes)
    result = TriggerResult(status="archived" if archived else "duplicate",
                           id=outcomes[0].ivorn or "", raw_sha256=raw.sha256, items=items)
    code = status.HTTP_201_CREATED if archived else status.HTTP_200_OK
    return JSONResponse(result.model_dump(), status_code=code)


def _quarantine(request: Request, raw: RawMessage, error: PermanentError) -> None:
    """Keep a refused request's bytes with the reason (never lost, never archived)."""
    archive = request.app.state.archive
    archive.store_raw([raw])
    archive.store_results([(raw, error)])
