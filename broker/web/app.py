"""The FastAPI application: health, metrics, and (as issues land) the API and dashboard.

``create_app(settings)`` builds the app; the archive is opened in the lifespan
and handed to endpoints by dependency injection (:func:`get_archive`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from sqlalchemy import text
from starlette.exceptions import HTTPException as StarletteHTTPException

import broker
from broker.archive import migrate
from broker.archive.store import Archive
from broker.config import Settings
from broker.metrics import REGISTRY
from broker.publish import outbox
from broker.runtime import assembly
from broker.runtime.grouping import GroupedSink
from broker.web import dashboard, query_api, scs, tap, triggers_api, voevents_api
from broker.web.auth import require_scope
from broker.web.bodylimit import BodyLimit
from broker.web.dashboard import error_page
from broker.web.livefeed import LiveFeed
from broker.web.opsserver import ready_checks, serve_ops
from broker.web.query_api import clean_params
from broker.web.ratelimit import RateLimiter
from broker.web.tabular import MEDIA_TYPES, error_votable
from broker.web.tap import error_votable as tap_error
from broker.web.tap import uws
from broker.web.tokens import TokenCache


class Health(BaseModel):
    """Liveness and readiness of the broker."""

    status: str = Field(description="ok, or degraded when a dependency is down.")
    version: str = Field(description="mmbroker version.")
    database: str = Field(description="ok, or the error reaching the archive.")
    schema_revision: str | None = Field(description="Alembic revision the archive is at.")


class Ready(BaseModel):
    """Readiness of this process to take traffic."""

    status: str = Field(description="ready, or not ready.")
    checks: dict[str, str] = Field(description="Each check: ok, or what is wrong.")


def get_archive(request: Request) -> Archive:
    """The archive the app was started with (a FastAPI dependency)."""
    return request.app.state.archive


ArchiveDep = Annotated[Archive, Depends(get_archive)]


def _shared_responses(spec: dict[str, Any]) -> None:
    """Answers every operation may give: 400 for a control character in a parameter
    (``clean_params``) and 429 from the rate limits (failed authentications count
    on every route)."""
    for operations in spec.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            responses.setdefault("400", {"description": "A parameter that cannot be used "
                                                        "(e.g. one holding a control "
                                                        "character)."})
            responses.setdefault("429", {"description": "Rate limit exceeded (queries, "
                                                        "writes, or failed authentications "
                                                        "from this address); see "
                                                        "Retry-After."})


def create_app(settings: Settings, *, archive: Archive | None = None,
               on_startup: list[Any] | None = None,
               on_shutdown: list[Any] | None = None, staged: bool = False) -> FastAPI:
    """Build the broker's HTTP application.

    Parameters
    ----------
    settings
        Configuration; the archive at ``settings.effective_database_url`` is
        opened (and migrated) at startup unless ``archive`` is given.
    on_startup
        Callables run with the app once the archive is open (e.g. the demo).
    staged
        The API stage of a staged deployment: posted triggers are archived and
        announced to the match stage on Kafka instead of matched in this process.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.archive = archive or Archive.open(settings.effective_database_url)
        app.state.settings = settings
        app.state.rate_limiter = RateLimiter(settings.api_rate_limit_per_s,
                                             settings.api_rate_limit_burst)
        app.state.write_limiter = RateLimiter(settings.write_rate_limit_per_s,
                                              settings.write_rate_limit_burst)
        app.state.failed_auth_limiter = RateLimiter(settings.failed_auth_rate_limit_per_s,
                                                    settings.failed_auth_rate_limit_burst)
        app.state.token_cache = TokenCache(settings.token_cache_s)
        # Every transport of this process feeds this one sink: one cross-match state.
        app.state.ingestor = assembly.make_sink(settings, app.state.archive, staged=staged)
        # One request, one trigger: requests arriving together are ingested as one batch.
        app.state.trigger_sink = GroupedSink(app.state.ingestor)
        app.state.live_feed = LiveFeed(app.state.archive, settings,
                                      token_cache=app.state.token_cache)
        await app.state.live_feed.start()
        for hook in on_startup or []:
            hook(app)
        app.state.draining = False
        try:
            yield
        finally:
            app.state.draining = True
            await app.state.live_feed.stop()
            uws.stop_runner(app)
            for hook in on_shutdown or []:
                hook(app)
            if archive is None:
                app.state.archive.close()

    app = FastAPI(
        title="mmbroker",
        version=broker.__version__,
        summary="Real-time multimessenger alert broker.",
        lifespan=lifespan,
        # No parameter of any route may hold a control character (400 on every backend).
        dependencies=[Depends(clean_params)],
    )

    app.add_middleware(BodyLimit, max_bytes=settings.http_max_body_bytes,
                       limits={"/api/v1/triggers": triggers_api.MAX_TRIGGER_BYTES})
    app.include_router(dashboard.router)
    app.include_router(dashboard.api)
    app.mount("/static", StaticFiles(packages=[("broker.web", "static")]), name="static")
    app.include_router(triggers_api.router)
    app.include_router(query_api.router)
    app.include_router(voevents_api.router)
    app.include_router(scs.router)
    app.include_router(tap.router)
    app.include_router(uws.router)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        """Errors as JSON, except on the cone search, whose clients expect a VOTable."""
        if request.url.path.startswith(("/dashboard/alerts/", "/dashboard/coincidences/")):
            return error_page(request, exc)
        if request.url.path.startswith("/tap/sync"):
            return Response(tap_error(str(exc.detail)), status_code=exc.status_code,
                            media_type="application/x-votable+xml", headers=exc.headers)
        if request.url.path.startswith("/scs"):
            return Response(error_votable(str(exc.detail)), status_code=exc.status_code,
                            media_type=MEDIA_TYPES["votable"], headers=exc.headers)
        return await http_exception_handler(request, exc)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(title=app.title, version=app.version, summary=app.summary,
                               routes=app.routes)
            spec.setdefault("components", {}).setdefault("schemas", {}).update(
                {**triggers_api.openapi_components(), **query_api.openapi_components()})
            _shared_responses(spec)
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get("/health", response_model=Health, tags=["operations"],
             responses={503: {"model": Health, "description": "A dependency is down."}})
    def health(archive: ArchiveDep) -> Any:
        """Whether the broker and its archive are up (503 when the archive is not)."""
        try:
            with archive.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            revision = migrate.current_revision(archive.engine)
            body = Health(status="ok", version=broker.__version__, database="ok",
                          schema_revision=revision)
            return body
        except Exception as exc:  # any failure reaching the database is "down"
            body = Health(status="degraded", version=broker.__version__,
                          database=f"{type(exc).__name__}: {exc}"[:300], schema_revision=None)
            return JSONResponse(body.model_dump(), status_code=503)

    @app.get("/ready", response_model=Ready, tags=["operations"],
             responses={503: {"model": Ready, "description": "Not ready: see checks."}})
    def ready(request: Request) -> Any:
        """Whether this process should get traffic: archive reachable and at the schema this
        code expects, listeners and live feed running, our own Comet child up (`serve`), not
        shutting down (503 otherwise)."""
        checks = app_ready_checks(request.app)
        ok = all(v == "ok" for v in checks.values())
        body = Ready(status="ready" if ok else "not ready", checks=checks)
        return body if ok else JSONResponse(body.model_dump(), status_code=503)

    @app.get("/metrics", tags=["operations"], response_class=Response,
             dependencies=[Depends(require_scope("read:metrics"))],
             responses={200: {"content": {"text/plain": {}},
                              "description": "Prometheus text exposition format."},
                        401: {"description": "No token."},
                        403: {"description": "The token lacks the read:metrics scope."}})
    def metrics(archive: ArchiveDep) -> Response:
        """Prometheus metrics of this process (and the outbox depth, read from the archive).

        They count hidden (embargoed, proprietary) arrivals too, so here they need a token
        with ``read:metrics``; Prometheus scrapes them without one on the ops listener
        (``MMBROKER_OPS_PORT``, loopback unless ``MMBROKER_OPS_HOST`` says otherwise)."""
        outbox.export_pending(archive)

        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return app


def app_ready_checks(app: FastAPI) -> dict[str, str]:
    """What ``/ready`` answers from, on the HTTP listener and on the ops listener."""
    checks = ready_checks(app.state.archive, getattr(app.state, "listeners", None))
    feed = getattr(app.state, "live_feed", None)
    checks["live_feed"] = "ok" if feed is not None and feed.running else "stopped"
    if app.state.settings.comet and getattr(app.state, "listeners", None) is not None:
        # `serve` publishes through its own Comet child: ready only while it is up.
        comet = getattr(app.state, "comet", None)
        checks["comet"] = comet.check() if comet is not None else "not started"
    if getattr(app.state, "draining", False):
        checks["shutdown"] = "draining"
    return checks


def start_ops(app: FastAPI, settings: Settings) -> None:
    """Serve /health, /ready and unauthenticated /metrics on the ops listener
    (``MMBROKER_OPS_HOST``:``MMBROKER_OPS_PORT``) beside the app, when the port is set; an
    ``on_startup`` hook (:func:`stop_ops` is its ``on_shutdown``)."""
    if settings.ops_port:
        app.state.ops_server = serve_ops(settings.ops_host, settings.ops_port,
                                         lambda: app_ready_checks(app), app.state.archive)


def stop_ops(app: FastAPI) -> None:
    server = getattr(app.state, "ops_server", None)
    if server is not None:
        server.shutdown()
        server.server_close()
