"""Asynchronous TAP: UWS 1.1 jobs at ``/tap/async``.

A job is made by ``POST /tap/async`` with the synchronous query's parameters
(``LANG``, ``QUERY``, ``MAXREC``, ``RESPONSEFORMAT``; ``PHASE=RUN`` starts it
at once, ``RUNID`` names it) and answered with ``303 See Other`` to its URL,
``/tap/async/{id}``.  Its resources, as UWS 1.1 names them: ``phase`` (``POST
PHASE=RUN`` or ``ABORT``), ``parameters``, ``results`` (and
``results/result``, the VOTable or CSV as ``/tap/sync`` would have answered),
``error`` (an error VOTable), ``executionduration``, ``destruction``, ``quote``,
``owner``; ``DELETE`` (or ``POST ACTION=DELETE``) removes it.  ``GET`` of a job
takes ``WAIT`` (seconds, at most :data:`MAX_WAIT_S`) and ``PHASE`` to block
until its phase changes; the job list takes ``PHASE``, ``AFTER`` and ``LAST``.

Data rights: a job belongs to the caller who made it (the token, or anonymous)
and to no one else: any other caller gets 404 for it and does not see it
listed.  It runs with its creator's data rights (the token's scopes, the
token checked still valid when it starts; anonymous: the anonymous caller's),
through the same query path as ``/tap/sync``, so it holds exactly what a
synchronous query of that caller would.  An anonymous job is reachable by its
URL alone (an unguessable random id), and anonymous callers get an empty job
list.

Jobs are rows of ``tap_jobs`` in the archive, so every API process of an
archive answers for every job; each runs in a thread of the process that was
asked to run it (:class:`JobRunner`, two at a time), at most
``executionduration`` seconds (:data:`MAX_DURATION_S`).  A job still
EXECUTING a minute past its duration was lost with its process and reads as
ERROR.  Jobs are deleted at their ``destruction`` time (default
:data:`DEFAULT_LIFETIME` after creation, at most :data:`MAX_LIFETIME`).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from xml.sax.saxutils import escape, quoteattr

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import delete, select, update
from starlette.concurrency import run_in_threadpool

from alerts_schema.errors import ArchiveUnavailable, RequestError
from broker.archive import query as q
from broker.archive.db import transaction
from broker.archive.models import TapJob
from broker.archive.store import Archive, utcnow
from broker.web.auth import current_token
from broker.web.query_api import base_url, viewer
from broker.web.tap import (
    CSV,
    JOB_LIFETIME_S,
    JOB_MAX_LIFETIME_S,
    STATEMENT_TIMEOUT_S,
    VOTABLE,
    Interrupter,
    TapError,
    check_request,
    error_votable,
    execute,
    form_params,
)
from broker.web.tokens import TokenInfo, valid_token_ids

log = logging.getLogger(__name__)

router = APIRouter(prefix="/tap/async", tags=["ivoa"])

MAX_DURATION_S = STATEMENT_TIMEOUT_S
"""The longest a job may run (and its default), seconds."""
DEFAULT_LIFETIME = timedelta(seconds=JOB_LIFETIME_S)
MAX_LIFETIME = timedelta(seconds=JOB_MAX_LIFETIME_S)
MAX_WAIT_S = 60.0
"""The longest a blocking GET of a job (``WAIT``) waits."""
LOST_AFTER = timedelta(seconds=60)
"""How long past its duration an EXECUTING job may stay so before it reads as lost."""
ACTIVE = ("PENDING", "QUEUED", "EXECUTING")
PHASES = ("PENDING", "QUEUED", "EXECUTING", "COMPLETED", "ERROR", "ABORTED", "UNKNOWN",
          "HELD", "SUSPENDED", "ARCHIVED")
TEXT = "text/plain; charset=utf-8"
UWS_NS = ('xmlns:uws="http://www.ivoa.net/xml/UWS/v1.0" '
          'xmlns:xlink="http://www.w3.org/1999/xlink" '
          'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"')
# What a job is made from; anything else posted is kept as a parameter too.
_JOB_CONTROL = {"PHASE", "RUNID", "ACTION", "EXECUTIONDURATION", "DESTRUCTION"}


# -- owners and jobs --------------------------------------------------------------------------


def _owner(token: TokenInfo | None) -> str:
    return f"token:{token.id}" if token is not None else "anonymous"


def _iso(when: datetime | None) -> str | None:
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z") \
        if when is not None else None


def _parse_time(text: str, what: str) -> datetime:
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise TapError(f"{what}={text!r} is not an ISO 8601 time") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _phase_now(job: Any, now: datetime) -> str:
    """The job's phase, reading a job its process lost while running as ERROR."""
    if job.phase == "EXECUTING" and job.started_at is not None and \
            now > job.started_at + timedelta(seconds=job.execution_duration_s) + LOST_AFTER:
        return "ERROR"
    return str(job.phase)


def _sweep(conn: Any, now: datetime) -> None:
    """Delete the jobs past their destruction time."""
    conn.execute(delete(TapJob).where(TapJob.destruction <= now))


JOBS = TapJob.__table__


def _job(conn: Any, job_id: str, owner: str) -> Any:
    """The caller's job (a row), or None: another caller's job is not found, as a row
    hidden from them is not."""
    job = conn.execute(select(JOBS).where(JOBS.c.id == job_id)).first()
    if job is None or job.owner != owner or job.destruction <= utcnow():
        return None
    return job


def _not_found(job_id: str) -> Response:
    return Response(f"no job {job_id}\n".encode(), status_code=404, media_type=TEXT)


def _bad(message: str) -> Response:
    return Response(f"{message}\n".encode(), status_code=400, media_type=TEXT)


def _job_url(request: Request, job_id: str) -> str:
    return f"{base_url(request)}/tap/async/{job_id}"


def _see(url: str) -> Response:
    return RedirectResponse(url, status_code=303)


# -- the job document -------------------------------------------------------------------------


def _element(name: str, value: str | None) -> str:
    if value is None:
        return f'  <uws:{name} xsi:nil="true"/>\n'
    return f"  <uws:{name}>{escape(value)}</uws:{name}>\n"


def _parameters_xml(job: Any, indent: str = "  ") -> str:
    items = "".join(f"{indent}  <uws:parameter id={quoteattr(k)}>{escape(v)}</uws:parameter>\n"
                    for k, v in sorted(job.parameters.items()))
    return f"{indent}<uws:parameters>\n{items}{indent}</uws:parameters>\n"


def _results_xml(request: Request, job: Any, phase: str, indent: str = "  ") -> str:
    if phase != "COMPLETED" or job.result is None:
        return f"{indent}<uws:results/>\n"
    href = quoteattr(f"{_job_url(request, job.id)}/results/result")
    return (f"{indent}<uws:results>\n{indent}  <uws:result id=\"result\" xlink:href={href} "
            f"size=\"{len(job.result)}\" mime-type={quoteattr(job.result_type or VOTABLE)}/>\n"
            f"{indent}</uws:results>\n")


def _error_message(job: Any, phase: str) -> str | None:
    if phase != "ERROR":
        return None
    return job.error or "the process running this job ended before it did"


def job_xml(request: Request, job: Any, now: datetime) -> bytes:
    phase = _phase_now(job, now)
    xml = [f'<?xml version="1.0" encoding="UTF-8"?>\n<uws:job {UWS_NS} version="1.1">\n',
           _element("jobId", job.id)]
    if job.run_id is not None:
        xml.append(_element("runId", job.run_id))
    xml += [_element("ownerId", None if job.token_id is None else job.owner),
            _element("phase", phase), _element("quote", None),
            _element("creationTime", _iso(job.created_at)),
            _element("startTime", _iso(job.started_at)),
            _element("endTime", _iso(job.ended_at)),
            _element("executionDuration", str(job.execution_duration_s)),
            _element("destruction", _iso(job.destruction)),
            _parameters_xml(job), _results_xml(request, job, phase)]
    message = _error_message(job, phase)
    if message is not None:
        xml.append(f'  <uws:errorSummary type="fatal" hasDetail="true">\n'
                   f"    <uws:message>{escape(message)}</uws:message>\n"
                   "  </uws:errorSummary>\n")
    xml.append("</uws:job>\n")
    return "".join(xml).encode()


def _xml(body: bytes) -> Response:
    return Response(body, media_type="text/xml")


# -- running ----------------------------------------------------------------------------------


class JobRunner:
    """Runs jobs in threads of this process, two at a time, and aborts them."""

    def __init__(self, archive: Archive, workers: int = 2) -> None:
        self.archive = archive
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tap-job")
        self._running: dict[str, Interrupter] = {}

    def start(self, job_id: str) -> None:
        self._running[job_id] = Interrupter()
        self._pool.submit(self._run, job_id)

    def abort(self, job_id: str) -> None:
        interrupter = self._running.get(job_id)
        if interrupter is not None:
            interrupter.fire()

    def stop(self) -> None:
        for interrupter in list(self._running.values()):
            interrupter.fire()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _finish(self, job_id: str, **values: Any) -> None:
        """Record the outcome, unless the job was aborted or deleted meanwhile."""
        with transaction(self.archive.engine) as conn:
            conn.execute(update(TapJob).where(TapJob.id == job_id,
                                              TapJob.phase == "EXECUTING")
                         .values(ended_at=utcnow(), **values))

    def _run(self, job_id: str) -> None:
        interrupter = self._running.get(job_id) or Interrupter()
        try:
            now = utcnow()
            with transaction(self.archive.engine) as conn:
                claimed = conn.execute(
                    update(TapJob).where(TapJob.id == job_id, TapJob.phase == "QUEUED")
                    .values(phase="EXECUTING", started_at=now)
                    .returning(TapJob.parameters, TapJob.token_id, TapJob.scopes,
                               TapJob.base_url, TapJob.execution_duration_s)).first()
            if claimed is None or interrupter.fired:
                return
            parameters, token_id, scopes, base, duration = claimed
            if token_id is not None and not valid_token_ids(self.archive, {token_id}):
                raise TapError("the token that made this job has been revoked or has expired")
            who = q.Viewer(frozenset(scopes.split())) if token_id is not None else q.ANONYMOUS
            asked = check_request(parameters)
            body, media_type = execute(self.archive.engine, who, base, asked,
                                       timeout_s=duration, interrupter=interrupter)
            self._finish(job_id, phase="COMPLETED", result=body, result_type=media_type)
        except ArchiveUnavailable as exc:
            self._finish(job_id, phase="ERROR", error=str(exc))
        except RequestError as exc:
            self._finish(job_id, phase="ERROR", error=str(exc))
        except Exception as exc:  # reported in the job; the server goes on
            log.exception("TAP job %s failed", job_id)
            self._finish(job_id, phase="ERROR", error=f"internal error: {type(exc).__name__}")
        finally:
            self._running.pop(job_id, None)


def runner(request: Request) -> JobRunner:
    """This process's job runner (made on first use)."""
    state = request.app.state
    found = getattr(state, "tap_jobs", None)
    if found is None:
        found = state.tap_jobs = JobRunner(state.archive)
    return found


def stop_runner(app: Any) -> None:
    """Abort this process's running jobs (at shutdown)."""
    found = getattr(app.state, "tap_jobs", None)
    if found is not None:
        found.stop()


# -- routes -----------------------------------------------------------------------------------

_BAD_DOC: dict[str, Any] = {
    "description": "A parameter refused (plain text; JSON when the app's own checks refuse "
                   "it, as on every route).",
    "content": {"text/plain": {"schema": {"type": "string"}},
                "application/json": {"schema": {"type": "object"}}}}


def _doc(description: str, media_type: str = "text/plain", *,
         bad: bool = False) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses of a job route: 200 as ``media_type``, 404 for a job the caller
    has not (and 400 with ``bad``)."""
    text = {"text/plain": {"schema": {"type": "string"}}}
    out: dict[int | str, dict[str, Any]] = {
        200: {"description": description, "content": {media_type: {"schema": {
            "type": "string"}}}},
        404: {"description": "No job of the caller's has this id.", "content": text}}
    if bad:
        out[400] = _BAD_DOC
    return out


_RESULT_DOC: dict[int | str, dict[str, Any]] = {
    200: {"description": "The query's rows, as /tap/sync answers (VOTable or CSV).",
          "content": {VOTABLE: {"schema": {"type": "string"}},
                      CSV: {"schema": {"type": "string"}}}},
    404: {"description": "No job of the caller's has this id, or it has no result.",
          "content": {"text/plain": {"schema": {"type": "string"}}}}}

TokenDep = Annotated[TokenInfo | None, Depends(current_token)]
ViewerDep = Annotated[q.Viewer, Depends(viewer)]


def _duration(text: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise TapError(f"EXECUTIONDURATION={text!r} is not a whole number of seconds") \
            from None
    if value < 0:
        raise TapError("EXECUTIONDURATION must not be negative")
    return MAX_DURATION_S if value == 0 else min(value, MAX_DURATION_S)


def _destruction(text: str, created: datetime) -> datetime:
    return min(_parse_time(text, "DESTRUCTION"), created + MAX_LIFETIME)


def _start(conn: Any, job_id: str) -> bool:
    """Queue a PENDING job; whether it was."""
    queued = conn.execute(update(TapJob).where(TapJob.id == job_id, TapJob.phase == "PENDING")
                          .values(phase="QUEUED")).rowcount
    return bool(queued)


@router.get("", response_class=Response, responses={
    200: {"description": "The caller's jobs (UWS 1.1 jobs).",
          "content": {"text/xml": {"schema": {"type": "string"}}}},
    400: _BAD_DOC})
def job_list(request: Request, who: ViewerDep, token: TokenDep) -> Response:
    """The caller's jobs, newest first (``PHASE`` repeated, ``AFTER``, ``LAST``); archived
    jobs only when asked for by ``PHASE``.  Anonymous callers get none."""
    params = request.query_params
    phases = [p.strip().upper() for p in params.getlist("PHASE") + params.getlist("phase")]
    if bad := [p for p in phases if p not in PHASES]:
        return _bad(f"PHASE={bad[0]!r} is not a UWS phase")
    try:
        after = _parse_time(params.get("AFTER") or params.get("after") or "", "AFTER") \
            if (params.get("AFTER") or params.get("after")) else None
        last_text = params.get("LAST") or params.get("last")
        last = int(last_text) if last_text else None
        if last is not None and last < 1:
            raise ValueError
    except TapError as exc:
        return _bad(str(exc))
    except ValueError:
        return _bad("LAST must be a positive whole number")
    now = utcnow()
    jobs: list[Any] = []
    if token is not None:
        with transaction(request.app.state.archive.engine) as conn:
            _sweep(conn, now)
            statement = select(TapJob.id, TapJob.phase, TapJob.run_id, TapJob.owner,
                               TapJob.token_id, TapJob.created_at, TapJob.started_at,
                               TapJob.execution_duration_s).where(
                TapJob.owner == _owner(token)).order_by(TapJob.created_at.desc())
            if after is not None:
                statement = statement.where(TapJob.created_at > after)
            jobs = list(conn.execute(statement))
    out = []
    for job in jobs:
        phase = _phase_now(job, now)
        if (phases and phase not in phases) or (not phases and phase == "ARCHIVED"):
            continue
        out.append(job)
    if last is not None:
        out = out[:last]
    refs = "".join(
        f'  <uws:jobref id={quoteattr(j.id)} '
        f'xlink:href={quoteattr(_job_url(request, j.id))}>\n'
        f"    <uws:phase>{_phase_now(j, now)}</uws:phase>\n"
        + (f"    <uws:runId>{escape(j.run_id)}</uws:runId>\n" if j.run_id else "")
        + f"    <uws:ownerId>{escape(j.owner)}</uws:ownerId>\n"
        f"    <uws:creationTime>{_iso(j.created_at)}</uws:creationTime>\n"
        "  </uws:jobref>\n" for j in out)
    return _xml(f'<?xml version="1.0" encoding="UTF-8"?>\n<uws:jobs {UWS_NS} version="1.1">\n'
                f"{refs}</uws:jobs>\n".encode())


@router.post("", response_class=Response, status_code=303, responses={
    303: {"description": "The job made: its URL in Location."},
    400: {"description": "A job parameter refused.", "content": {"text/plain": {}}}})
async def create_job(request: Request, who: ViewerDep, token: TokenDep) -> Response:
    """Make a job from the query parameters (``PHASE=RUN`` starts it)."""
    params = await form_params(request)
    return await run_in_threadpool(_create, request, token, params)


def _create(request: Request, token: TokenInfo | None, params: dict[str, str]) -> Response:
    now = utcnow()
    phase = params.get("PHASE", "").strip().upper()
    if phase not in ("", "RUN"):
        return _bad(f"PHASE={phase!r}: a new job can only be RUN")
    try:
        duration = _duration(params["EXECUTIONDURATION"]) \
            if "EXECUTIONDURATION" in params else MAX_DURATION_S
        destruction = _destruction(params["DESTRUCTION"], now) \
            if "DESTRUCTION" in params else now + DEFAULT_LIFETIME
    except TapError as exc:
        return _bad(str(exc))
    run_id = params.get("RUNID")
    job_id = secrets.token_hex(16)
    with transaction(request.app.state.archive.engine) as conn:
        _sweep(conn, now)
        conn.execute(TapJob.__table__.insert().values(
            id=job_id, owner=_owner(token), token_id=token.id if token else None,
            scopes=" ".join(sorted(token.scopes)) if token else "", phase="PENDING",
            run_id=run_id[:128] if run_id else None,
            parameters={k: v for k, v in params.items() if k not in _JOB_CONTROL},
            base_url=base_url(request), created_at=now, execution_duration_s=duration,
            destruction=destruction))
        start = phase == "RUN" and _start(conn, job_id)
    if start:
        runner(request).start(job_id)
    return _see(_job_url(request, job_id))


def _read(request: Request, token: TokenInfo | None, job_id: str) -> Any:
    with transaction(request.app.state.archive.engine, readonly=True) as conn:
        return _job(conn, job_id, _owner(token))


@router.get("/{job_id}", response_class=Response,
            responses=_doc("The job (UWS 1.1 job).", "text/xml", bad=True))
async def get_job(request: Request, job_id: str, who: ViewerDep, token: TokenDep) -> Response:
    """The job; with ``WAIT`` (s), once its phase differs from ``PHASE`` (or from its
    phase now) or it is no longer active, or the wait is over."""
    params = {k.upper(): v for k, v in request.query_params.items()}
    try:
        wait = float(params["WAIT"]) if "WAIT" in params else 0.0
    except ValueError:
        return _bad("WAIT must be a number of seconds")
    if wait < 0 or wait != wait:  # UWS: -1 waits as long as the service allows
        wait = MAX_WAIT_S
    job = await run_in_threadpool(_read, request, token, job_id)
    if job is None:
        return _not_found(job_id)
    deadline = asyncio.get_running_loop().time() + min(wait, MAX_WAIT_S)
    since = params.get("PHASE", "").strip().upper() or _phase_now(job, utcnow())
    while (_phase_now(job, utcnow()) == since and since in ACTIVE
           and asyncio.get_running_loop().time() < deadline):
        await asyncio.sleep(0.2)
        job = await run_in_threadpool(_read, request, token, job_id)
        if job is None:
            return _not_found(job_id)
    return _xml(job_xml(request, job, utcnow()))


@router.delete("/{job_id}", response_class=Response, status_code=303)
def delete_job(request: Request, job_id: str, who: ViewerDep, token: TokenDep) -> Response:
    """Delete the job (aborting it if it runs); 303 to the job list."""
    with transaction(request.app.state.archive.engine) as conn:
        if _job(conn, job_id, _owner(token)) is None:
            return _not_found(job_id)
        conn.execute(delete(TapJob).where(TapJob.id == job_id))
    runner(request).abort(job_id)
    return _see(f"{base_url(request)}/tap/async")


@router.post("/{job_id}", response_class=Response, status_code=303)
async def post_job(request: Request, job_id: str, who: ViewerDep, token: TokenDep) -> Response:
    """``ACTION=DELETE`` deletes the job; anything else posted here is refused."""
    params = await form_params(request)
    if params.get("ACTION", "").strip().upper() == "DELETE":
        return await run_in_threadpool(delete_job, request, job_id, who, token)
    return _bad("POST to a job takes ACTION=DELETE")


@router.get("/{job_id}/phase", response_class=Response, responses=_doc("The phase."))
def get_phase(request: Request, job_id: str, who: ViewerDep, token: TokenDep) -> Response:
    """The job's phase, as text."""
    job = _read(request, token, job_id)
    if job is None:
        return _not_found(job_id)
    return Response(_phase_now(job, utcnow()).encode(), media_type=TEXT)


@router.post("/{job_id}/phase", response_class=Response, status_code=303)
async def post_phase(request: Request, job_id: str, who: ViewerDep,
                     token: TokenDep) -> Response:
    """``PHASE=RUN`` queues a pending job; ``PHASE=ABORT`` aborts an active one."""
    params = await form_params(request)
    return await run_in_threadpool(_set_phase, request, job_id, token,
                                   params.get("PHASE", "").strip().upper())


def _set_phase(request: Request, job_id: str, token: TokenInfo | None, phase: str) -> Response:
    if phase not in ("RUN", "ABORT"):
        return _bad(f"PHASE={phase!r}: RUN or ABORT")
    start = False
    with transaction(request.app.state.archive.engine) as conn:
        job = _job(conn, job_id, _owner(token))
        if job is None:
            return _not_found(job_id)
        if phase == "RUN":
            if job.phase != "PENDING":
                return _bad(f"the job is {job.phase}: only a PENDING job can be RUN")
            start = _start(conn, job_id)
        elif job.phase in ACTIVE:
            conn.execute(update(TapJob).where(TapJob.id == job_id, TapJob.phase.in_(ACTIVE))
                         .values(phase="ABORTED", ended_at=utcnow()))
    if start:
        runner(request).start(job_id)
    elif phase == "ABORT":
        runner(request).abort(job_id)
    return _see(_job_url(request, job_id))


def _text_resource(request: Request, job_id: str, token: TokenInfo | None, what: str
                   ) -> Response:
    job = _read(request, token, job_id)
    if job is None:
        return _not_found(job_id)
    value = {"executionduration": str(job.execution_duration_s),
             "destruction": _iso(job.destruction) or "",
             "quote": "",
             "owner": job.owner if job.token_id is not None else ""}[what]
    return Response(value.encode(), media_type=TEXT)


@router.get("/{job_id}/executionduration", response_class=Response,
            responses=_doc("Seconds."))
def get_duration(request: Request, job_id: str, who: ViewerDep, token: TokenDep) -> Response:
    """The longest the job may run, seconds."""
    return _text_resource(request, job_id, token, "executionduration")


@router.get("/{job_id}/destruction", response_class=Response,
            responses=_doc("ISO 8601 UTC."))
def get_destruction(request: Request, job_id: str, who: ViewerDep,
                    token: TokenDep) -> Response:
    """When the job will be deleted (ISO 8601 UTC)."""
    return _text_resource(request, job_id, token, "destruction")


@router.get("/{job_id}/quote", response_class=Response, responses=_doc("Empty."))
def get_quote(request: Request, job_id: str, who: ViewerDep, token: TokenDep) -> Response:
    """No estimate of when the job will end: empty."""
    return _text_resource(request, job_id, token, "quote")


@router.get("/{job_id}/owner", response_class=Response, responses=_doc("The owner."))
def get_owner(request: Request, job_id: str, who: ViewerDep, token: TokenDep) -> Response:
    """The job's owner (``token:<id>``; empty for an anonymous job)."""
    return _text_resource(request, job_id, token, "owner")


@router.post("/{job_id}/executionduration", response_class=Response, status_code=303)
async def post_duration(request: Request, job_id: str, who: ViewerDep,
                        token: TokenDep) -> Response:
    """Set the longest a pending job may run (at most the service's limit)."""
    params = await form_params(request)
    return await run_in_threadpool(_set_value, request, job_id, token, "EXECUTIONDURATION",
                                   params.get("EXECUTIONDURATION", ""))


@router.post("/{job_id}/destruction", response_class=Response, status_code=303)
async def post_destruction(request: Request, job_id: str, who: ViewerDep,
                           token: TokenDep) -> Response:
    """Set when the job is deleted (at most :data:`MAX_LIFETIME` after its creation)."""
    params = await form_params(request)
    return await run_in_threadpool(_set_value, request, job_id, token, "DESTRUCTION",
                                   params.get("DESTRUCTION", ""))


def _set_value(request: Request, job_id: str, token: TokenInfo | None, name: str,
               text: str) -> Response:
    with transaction(request.app.state.archive.engine) as conn:
        job = _job(conn, job_id, _owner(token))
        if job is None:
            return _not_found(job_id)
        try:
            if name == "EXECUTIONDURATION":
                if job.phase != "PENDING":
                    raise TapError(f"the job is {job.phase}: its duration can no longer "
                                   "change")
                values: dict[str, Any] = {"execution_duration_s": _duration(text)}
            else:
                values = {"destruction": _destruction(text, job.created_at)}
        except TapError as exc:
            return _bad(str(exc))
        conn.execute(update(TapJob).where(TapJob.id == job_id).values(**values))
    return _see(_job_url(request, job_id))


@router.get("/{job_id}/parameters", response_class=Response,
            responses=_doc("UWS 1.1 parameters.", "text/xml"))
def get_parameters(request: Request, job_id: str, who: ViewerDep,
                   token: TokenDep) -> Response:
    """The job's parameters (UWS 1.1 parameters)."""
    job = _read(request, token, job_id)
    if job is None:
        return _not_found(job_id)
    body = _parameters_xml(job, "").replace("<uws:parameters>",
                                            f"<uws:parameters {UWS_NS}>", 1)
    return _xml(f'<?xml version="1.0" encoding="UTF-8"?>\n{body}'.encode())


@router.post("/{job_id}/parameters", response_class=Response, status_code=303)
async def post_parameters(request: Request, job_id: str, who: ViewerDep,
                          token: TokenDep) -> Response:
    """Change the parameters of a pending job."""
    params = await form_params(request)
    return await run_in_threadpool(_set_parameters, request, job_id, token, params)


def _set_parameters(request: Request, job_id: str, token: TokenInfo | None,
                    params: dict[str, str]) -> Response:
    with transaction(request.app.state.archive.engine) as conn:
        job = _job(conn, job_id, _owner(token))
        if job is None:
            return _not_found(job_id)
        if job.phase != "PENDING":
            return _bad(f"the job is {job.phase}: its parameters can no longer change")
        merged = {**job.parameters,
                  **{k: v for k, v in params.items() if k not in _JOB_CONTROL}}
        values: dict[str, Any] = {"parameters": merged}
        if params.get("RUNID"):
            values["run_id"] = params["RUNID"][:128]
        conn.execute(update(TapJob).where(TapJob.id == job_id).values(**values))
    return _see(_job_url(request, job_id))


@router.get("/{job_id}/results", response_class=Response,
            responses=_doc("UWS 1.1 results.", "text/xml"))
def get_results(request: Request, job_id: str, who: ViewerDep, token: TokenDep) -> Response:
    """The job's results (one, ``result``, once it has COMPLETED)."""
    job = _read(request, token, job_id)
    if job is None:
        return _not_found(job_id)
    body = _results_xml(request, job, _phase_now(job, utcnow()), "").replace(
        "<uws:results", f"<uws:results {UWS_NS}", 1)
    return _xml(f'<?xml version="1.0" encoding="UTF-8"?>\n{body}'.encode())


@router.get("/{job_id}/results/result", response_class=Response, responses=_RESULT_DOC)
def get_result(request: Request, job_id: str, who: ViewerDep, token: TokenDep) -> Response:
    """The query's answer, as ``/tap/sync`` would have given it."""
    job = _read(request, token, job_id)
    if job is None:
        return _not_found(job_id)
    if _phase_now(job, utcnow()) != "COMPLETED" or job.result is None:
        return Response(f"job {job_id} has no result: it is {_phase_now(job, utcnow())}\n"
                        .encode(), status_code=404, media_type=TEXT)
    return Response(job.result, media_type=job.result_type or VOTABLE)


@router.get("/{job_id}/error", response_class=Response,
            responses=_doc("The error VOTable (QUERY_STATUS ERROR).", VOTABLE))
def get_error(request: Request, job_id: str, who: ViewerDep, token: TokenDep) -> Response:
    """Why the job failed: an error VOTable (``QUERY_STATUS`` ERROR)."""
    job = _read(request, token, job_id)
    if job is None:
        return _not_found(job_id)
    message = _error_message(job, _phase_now(job, utcnow()))
    if message is None:
        return Response(f"job {job_id} has no error: it is {_phase_now(job, utcnow())}\n"
                        .encode(), status_code=404, media_type=TEXT)
    return Response(error_votable(message), media_type=VOTABLE)
