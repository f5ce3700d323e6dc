"""The shifter's dashboard: a live page at ``/`` and a detail page per alert and coincidence.

Everything is served by the broker itself (templates in ``broker/web/templates``,
script and style in ``broker/web/static``; no CDN, no build step), so the page
works on a control-room network with no internet.  Sky maps are PNGs the
query API renders server-side; provenance graphs are SVG drawn here.

The page loads its first rows from ``/dashboard/state`` and then listens to
``/dashboard/events`` (server-sent events from :class:`broker.web.livefeed.LiveFeed`).
A shifter signs in with a token (``POST /dashboard/login``); one holding
the ``ack`` scope can acknowledge a significant coincidence
(``POST /api/v1/coincidences/{ivorn}/acknowledgements``), which is recorded with
the token's name and the time and clears the alarm on every open page.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Body, Depends, Form, HTTPException, Query, Request
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import BaseModel, Field
from sqlalchemy import exists, select
from sqlalchemy.orm import aliased

from broker.archive import query as q
from broker.archive.db import transaction
from broker.archive.models import (
    Acknowledgement,
    AlertRow,
    CoincidenceMember,
    CoincidenceRow,
    VOEventRow,
)
from broker.web.auth import (
    SESSION_COOKIE,
    current_token,
    record_failed_auth,
    refuse_locked_out,
    require_scope,
    same_origin,
)
from broker.web.latency import STEPS, distribution, durations_s, step_times
from broker.web.livefeed import (
    ALERT_COLUMNS,
    ALERT_STATE,
    COINCIDENCE_COLUMNS,
    alarm_query,
    alert_summary,
    coincidence_summaries,
    is_significant,
    json_default,
)
from broker.web.provenance_graph import to_svg
from broker.web.query_api import ViewerDep, provenance_doc, visible_alert, visible_coincidence
from broker.web.sky import sky_view
from broker.web.tokens import TokenInfo, verify_token
from crossmatch.engine import members_class

router = APIRouter(tags=["dashboard"])
api = APIRouter(prefix="/api/v1", tags=["dashboard"])

FEED_ALERTS = 100
"""Alerts the page starts with (newest arrivals)."""
FEED_COINCIDENCES = 50
"""Coincidences the page starts with."""
SESSION_MAX_AGE_S = 12 * 3600
"""How long a dashboard sign-in lasts (s): one long shift."""


def _templates() -> Any:
    folder = resources.files("broker.web").joinpath("templates")
    env = Environment(loader=FileSystemLoader(str(folder)),
                      autoescape=select_autoescape(["html"]))
    env.filters["iso"] = lambda t: "" if t is None else t.astimezone(UTC).strftime(
        "%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"
    env.filters["q"] = lambda s: quote(str(s), safe="")
    # The feed's names for an alert's state (new/updated/retracted), as the live page has them.
    env.filters["alert_state"] = lambda t: ALERT_STATE.get(t, t)
    env.filters["num"] = lambda v, fmt="{:.3g}": "" if v is None else fmt.format(v)
    return env


_ENV = None


def render(name: str, **context: Any) -> HTMLResponse:
    """A template of ``broker/web/templates`` rendered to an HTML response."""
    global _ENV
    if _ENV is None:
        _ENV = _templates()
    return HTMLResponse(_ENV.get_template(name).render(**context))


def _who(token: TokenInfo | None) -> dict[str, Any]:
    if token is None:
        return {"name": None, "scopes": [], "can_ack": False}
    return {"name": token.name, "scopes": sorted(token.scopes),
            "can_ack": bool({"ack", "admin"} & token.scopes)}


TokenDep = Annotated[TokenInfo | None, Depends(current_token)]


# -- pages -----------------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse, summary="The shifter's live dashboard")
def index(request: Request, token: TokenDep, who: ViewerDep) -> HTMLResponse:
    """The live page: alarm banner, feed, stream health and latency."""
    return render("index.html", user=_who(token),
                  sky_hours=request.app.state.settings.dashboard_sky_hours)


@router.get("/dashboard/state", summary="Everything the live page starts from")
def state(request: Request, token: TokenDep, who: ViewerDep) -> Response:
    """The newest alerts and coincidences, unacknowledged alarms, stream health, latency.

    Times are ISO 8601 UTC, angles deg, FAR Hz.  ``last_event_id`` is where
    the page's ``/dashboard/events`` stream picks up.
    """
    settings = request.app.state.settings
    feed = request.app.state.live_feed
    # Before reading: a row committed meanwhile then comes on the stream (the page
    # drops the duplicate) instead of being in neither.
    last_event_id = feed.last_event_id
    now = datetime.now(UTC)
    sees_health = _sees_health(who, settings)
    with transaction(request.app.state.archive.engine, readonly=True) as conn:
        alerts = [alert_summary(r) for r in conn.execute(
            select(*ALERT_COLUMNS).where(q.alert_visible(who, now))
            .order_by(AlertRow.id.desc()).limit(FEED_ALERTS))]
        rows = conn.execute(select(*COINCIDENCE_COLUMNS)
                            .where(q.coincidence_visible(who, now))
                            .order_by(CoincidenceRow.id.desc()).limit(FEED_COINCIDENCES)).all()
        coincidences = [d for d, _ in coincidence_summaries(conn, rows, settings)]
        alarms = _alarms(conn, who, now, settings)
        latency = distribution(conn, visible=q.alert_visible(who, now)) if sees_health \
            else None
    body = {"user": _who(token), "last_event_id": last_event_id, "alerts": alerts,
            "coincidences": coincidences, "alarms": alarms,
            "health": feed.current_health() if sees_health else None, "latency": latency}
    return Response(json.dumps(body, default=json_default), media_type="application/json")


def _sees_health(who: q.Viewer, settings: Any) -> bool:
    return not settings.health_scope or who.holds(settings.health_scope)


def _alarms(conn: Any, who: q.Viewer, now: datetime, settings: Any) -> list[dict[str, Any]]:
    """Significant coincidences of the alarm window nobody has acknowledged yet, newest
    revision only (an update or a retraction replaces the alarm of the revision before).

    Everything that decides an alarm (FAR, role, state) and the acknowledged and
    superseded rows are left out in SQL, before the limit, so that 100 handled (or
    never alarming) rows can never hide an unhandled alarm behind them.
    """
    since = now - timedelta(seconds=settings.alarm_window_s)
    newer = aliased(CoincidenceRow)
    # Superseded by a revision this viewer may see: a hidden one (a member it may not
    # see joined) leaves its alarm as it was, or the alarm's going would tell.
    superseded = exists(select(newer.id).where(newer.supersedes_id == CoincidenceRow.id,
                                               q.coincidence_visible(who, now, newer)))
    acked = exists(select(Acknowledgement.id).where(
        Acknowledgement.coincidence_id == CoincidenceRow.id))
    rows = conn.execute(select(*COINCIDENCE_COLUMNS).where(
        q.coincidence_visible(who, now), *alarm_query(settings, since).conditions(),
        ~superseded, ~acked)
        .order_by(CoincidenceRow.id.desc()).limit(100)).all()
    return [d for d, _ in coincidence_summaries(conn, rows, settings) if d["significant"]]


@router.get("/dashboard/sky", summary="What the all-sky view draws",
            responses={422: {"description": "A span out of range."}})
def sky(request: Request, who: ViewerDep,
        hours: Annotated[float | None, Query(
            gt=0, le=720, description="Span (h): alerts whose event time is at most this "
                                      "old. Default: the dashboard_sky_hours setting.")] = None
        ) -> Response:
    """The alerts of the span the caller may see (position, error radius deg, messenger,
    IVORN, and for a sky map held here the 90% credible region's outline as (RA, Dec)
    polylines in deg), and the coincidences found in it with their members' IVORNs.
    The same data-rights rule as every other read: an alert the caller may not see is
    neither listed nor drawn, nor is a coincidence it is a member of; rows are named by
    IVORN, never by database id."""
    settings = request.app.state.settings
    span = hours if hours is not None else settings.dashboard_sky_hours
    with transaction(request.app.state.archive.engine, readonly=True) as conn:
        body = sky_view(conn, who, datetime.now(UTC), span, settings)
    return Response(json.dumps(body, default=json_default, separators=(",", ":")),
                    media_type="application/json")


@router.get("/dashboard/latency", summary="Recent latency distribution",
            responses={403: {"description": "The caller lacks the health scope."}})
def latency(request: Request, who: ViewerDep) -> JSONResponse:
    """Quantiles (s) and histograms of each step of the latency chain over the newest 500
    alerts the caller may see (403 without the ``health_scope`` setting's scope)."""
    if not _sees_health(who, request.app.state.settings):
        raise HTTPException(403, "stream health and latency need a token with scope "
                                 f"{request.app.state.settings.health_scope}")
    with transaction(request.app.state.archive.engine, readonly=True) as conn:
        return JSONResponse(distribution(conn, visible=q.alert_visible(who, datetime.now(UTC))))


@router.get("/dashboard/events", include_in_schema=False)
async def events(request: Request, token: TokenDep, who: ViewerDep) -> StreamingResponse:
    """Server-sent events: ``hello``, ``reset``, ``alert``, ``coincidence``, ``ack`` and
    ``health``.  Event ids are opaque; the stream ends within seconds of its token's
    revocation or expiry (the browser reconnects as whoever it now is)."""
    last = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    feed = request.app.state.live_feed
    name = token.name if token else None
    return StreamingResponse(feed.stream(who, name, (last or "")[:64] or None,
                                         token.id if token else None),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


_PAGE_404: dict[int | str, dict[str, Any]] = {404: {"content": {"text/html": {}},
                   "description": "No such row, or not visible to the caller (a page)."}}


@router.get("/dashboard/alerts/{ivorn:path}", response_class=HTMLResponse,
            summary="An alert's detail page", responses=_PAGE_404)
def alert_page(request: Request, ivorn: str, token: TokenDep, who: ViewerDep) -> HTMLResponse:
    """The alert, its latency chain, sky map, coincidences, VOEvent and provenance."""
    with transaction(request.app.state.archive.engine, readonly=True) as conn:
        row = visible_alert(conn, ivorn, who)
        steps = step_times(conn, [row.id]).get(row.id, {})
        coincidences = conn.execute(
            select(CoincidenceRow.ivorn, CoincidenceRow.pairing, CoincidenceRow.state,
                   CoincidenceRow.far_hz, CoincidenceRow.created_at)
            .join(CoincidenceMember, CoincidenceMember.coincidence_id == CoincidenceRow.id)
            .where(CoincidenceMember.alert_id == row.id, q.coincidence_visible(
                who, datetime.now(UTC))).order_by(CoincidenceRow.id)).all()
        voevent, graph = _published(conn, row.ivorn, VOEventRow.alert_id == row.id)
    return render("alert.html", user=_who(token), alert=row, doc=row.document,
                  steps=[(s, steps.get(s)) for s in STEPS], durations=durations_s(steps),
                  coincidences=coincidences, voevent=voevent, graph=graph)


@router.get("/dashboard/coincidences/{ivorn:path}", response_class=HTMLResponse,
            summary="A coincidence's detail page", responses=_PAGE_404)
def coincidence_page(request: Request, ivorn: str, token: TokenDep,
                     who: ViewerDep) -> HTMLResponse:
    """Members, overlap, significance figures, acknowledgements, VOEvent and provenance."""
    settings = request.app.state.settings
    with transaction(request.app.state.archive.engine, readonly=True) as conn:
        row = visible_coincidence(conn, ivorn, who)
        members = conn.execute(
            select(AlertRow.id, AlertRow.ivorn, AlertRow.messenger, AlertRow.facility,
                   AlertRow.event_time, AlertRow.ra_deg, AlertRow.dec_deg,
                   AlertRow.error_radius_deg, AlertRow.far_hz, AlertRow.role,
                   CoincidenceMember.time_offset_s)
            .join(CoincidenceMember, CoincidenceMember.alert_id == AlertRow.id)
            .where(CoincidenceMember.coincidence_id == row.id).order_by(AlertRow.id)).all()
        acks = conn.execute(select(Acknowledgement.__table__).where(
            Acknowledgement.coincidence_id == row.id).order_by(Acknowledgement.id)).all()
        steps = step_times(conn, [m.id for m in members])
        voevent, graph = _published(conn, row.ivorn, VOEventRow.coincidence_id == row.id)
    role = members_class(m.role for m in members)
    summary = {"role": role, "significant": is_significant(row.far_hz, role, row.state,
                                                            settings)}
    return render("coincidence.html", user=_who(token), c=row, doc=row.document,
                  summary=summary, members=members, acks=acks,
                  steps=steps, step_names=STEPS, voevent=voevent, graph=graph)


def _published(conn: Any, ivorn: str, which: Any) -> tuple[str | None, str | None]:
    """The VOEvent XML as sent and the provenance graph SVG, when published."""
    xml = conn.execute(select(VOEventRow.xml).where(which).order_by(VOEventRow.id)
                       .limit(1)).scalar_one_or_none()
    doc = provenance_doc(conn, ivorn)
    text = None if xml is None else bytes(xml).decode("utf-8", errors="replace")
    return text, (None if doc is None else to_svg(doc))


# -- signing in and acknowledging ------------------------------------------------------------


@router.post("/dashboard/login", summary="Sign in to the dashboard with a token",
             responses={303: {"description": "Signed in; back to the page."},
                        401: {"description": "Unknown, expired or revoked token."}})
def login(request: Request, token: Annotated[str, Form(max_length=256)],
          next: Annotated[str, Form(max_length=2048)] = "/") -> Any:
    """Keep the token in an HttpOnly, SameSite=Strict cookie for this browser."""
    same_origin(request)
    refuse_locked_out(request)
    info = verify_token(request.app.state.archive, token.strip())
    if info is None:
        record_failed_auth(request)
        response = render("login_failed.html", user=_who(None))
        response.status_code = 401
        return response
    target = next if next.startswith("/") and not next.startswith("//") else "/"
    redirect = RedirectResponse(target, status_code=303)
    public = request.app.state.settings.public_base_url or ""
    redirect.set_cookie(SESSION_COOKIE, token.strip(), max_age=SESSION_MAX_AGE_S,
                        httponly=True, samesite="strict",
                        secure=request.url.scheme == "https" or public.startswith("https:"))
    return redirect


@router.post("/dashboard/logout", summary="Sign out of the dashboard",
             responses={303: {"description": "Signed out."}})
def logout(request: Request) -> RedirectResponse:
    same_origin(request)
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


class AckRequest(BaseModel):
    """An acknowledgement's optional note."""

    note: str | None = Field(default=None, max_length=2000,
                             description="What the shifter did or saw.")


class AckResponse(BaseModel):
    """A recorded acknowledgement."""

    id: int
    coincidence: str = Field(description="The coincidence's IVORN.")
    acked_by: str = Field(description="The name of the token that acknowledged.")
    acked_at: datetime = Field(description="When, UTC.")
    note: str | None = None


@api.post("/coincidences/{ivorn:path}/acknowledgements", status_code=201,
          response_model=AckResponse,
          responses={404: {"description": "No such coincidence (or not visible)."},
                     401: {"description": "No token."},
                     403: {"description": "The token lacks the ack scope."}})
def acknowledge(request: Request, ivorn: str,
                token: Annotated[TokenInfo, Depends(require_scope("ack"))],
                body: Annotated[AckRequest | None, Body()] = None) -> AckResponse:
    """Acknowledge a coincidence (scope ``ack``): recorded with who and when; the alarm
    clears on every dashboard."""
    same_origin(request)
    who = q.Viewer(token.scopes)
    with transaction(request.app.state.archive.engine, readonly=True) as conn:
        row = visible_coincidence(conn, ivorn, who)
    note = body.note if body else None
    ack = request.app.state.archive.acknowledge(row.id, token.name, token_id=token.id,
                                                note=note)
    return AckResponse(id=ack["id"], coincidence=row.ivorn, acked_by=ack["acked_by"],
                       acked_at=ack["acked_at"], note=note)


def error_page(request: Request, exc: Any) -> HTMLResponse:
    """An error of a dashboard page (404, 429) as a page, not JSON."""
    response = render("error.html", user=_who(None), status=exc.status_code, detail=exc.detail)
    response.status_code = exc.status_code
    return response
