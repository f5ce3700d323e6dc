"""Asynchronous TAP (UWS 1.1 at /tap/async) on SQLite and PostgreSQL: the job's life,
its owner, its data rights, and pyvo's ``run_async`` against a live server.

The rows a job returns are compared with ``/tap/sync`` for the same caller, whose own
answers ``tests/test_tap.py`` compares with the REST API's; STILTS taplint's async
stages run in ``tests/test_tap.py::test_pyvo_and_taplint_against_a_live_server``.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from astropy.io.votable import parse_single_table
from fastapi.testclient import TestClient
from lxml import etree
from sqlalchemy import update

from broker.archive.models import TapJob
from broker.archive.store import Archive
from broker.config import get_settings
from broker.web.app import create_app
from broker.web.tap.uws import JobRunner
from broker.web.tokens import create_token, revoke_token
from tests.test_query_api import FUTURE, _archive_docs, _documents, _visible

UWS = {"uws": "http://www.ivoa.net/xml/UWS/v1.0"}
SLOW = ("SELECT COUNT(*) AS n FROM ivoa.obscore AS a JOIN ivoa.obscore AS b ON 1 = 1 "
        "JOIN ivoa.obscore AS c ON 1 = 1 JOIN ivoa.obscore AS d ON 1 = 1 "
        "WHERE a.s_ra + b.s_ra + c.s_ra + d.s_ra > -1")
"""About 5e8 rows of a four-fold join over 150 alerts: minutes, far beyond any limit."""


class World:
    def __init__(self, client: TestClient, docs: list[dict[str, Any]], tokens: dict[str, str],
                 archive: Archive) -> None:
        self.client, self.docs, self.tokens, self.archive = client, docs, tokens, archive

    def headers(self, who: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}

    def create(self, query: str, who: str | None = None, **params: str) -> str:
        response = self.client.post("/tap/async", data={"LANG": "ADQL", "QUERY": query,
                                                         **params},
                                    headers=self.headers(who), follow_redirects=False)
        assert response.status_code == 303, response.text
        url = response.headers["location"]
        assert url.startswith("http://testserver/tap/async/")
        return url.removeprefix("http://testserver")

    def get(self, path: str, who: str | None = None, **params: Any) -> Any:
        return self.client.get(path, params=params, headers=self.headers(who))

    def post(self, path: str, who: str | None = None, **data: str) -> Any:
        return self.client.post(path, data=data, headers=self.headers(who),
                                follow_redirects=False)

    def job(self, path: str, who: str | None = None, **params: Any) -> Any:
        response = self.get(path, who, **params)
        assert response.status_code == 200, response.text
        return etree.fromstring(response.content)

    def phase(self, path: str, who: str | None = None) -> str:
        return str(self.get(f"{path}/phase", who).text)

    def finish(self, path: str, who: str | None = None, timeout_s: float = 60) -> str:
        deadline = time.monotonic() + timeout_s
        while (phase := self.phase(path, who)) in ("PENDING", "QUEUED", "EXECUTING"):
            assert time.monotonic() < deadline, phase
            self.get(path, who, WAIT=2)
        return phase


@pytest.fixture
def world(archive: Archive) -> Iterator[World]:
    docs = _archive_docs(archive, _documents(150, seed=9, prefix="as"))
    tokens = {"admin": create_token(archive, "admin", ["admin"])[0],
              "reader": create_token(archive, "reader", ["read:embargoed"])[0],
              "other": create_token(archive, "other", ["read:embargoed"])[0]}
    with TestClient(create_app(get_settings(api_rate_limit_per_s=0), archive=archive)) as c:
        yield World(c, docs, tokens, archive)


def _ids(body: bytes) -> list[str]:
    return sorted(str(i) for i in parse_single_table(io.BytesIO(body)).to_table()["obs_id"])


def test_a_job_runs_the_sync_query_with_its_creators_rights(world: World) -> None:
    query = "SELECT obs_id FROM ivoa.obscore"
    for who, scopes in ((None, set()), ("reader", {"read:embargoed"}), ("admin", {"admin"})):
        path = world.create(query, who, PHASE="RUN")
        assert world.finish(path, who) == "COMPLETED"
        job = world.job(path, who)
        href = job.findtext("uws:results/uws:result", namespaces=UWS)
        result = job.find("uws:results/uws:result", UWS)
        assert href is not None and result is not None
        assert result.get("{http://www.w3.org/1999/xlink}href", "").endswith(
            f"{path}/results/result")
        body = world.get(f"{path}/results/result", who)
        assert body.headers["content-type"].startswith("application/x-votable+xml")
        expected = sorted(d["id"] for d in world.docs if _visible(d, scopes))
        assert _ids(body.content) == expected
        sync = world.client.get("/tap/sync", params={"LANG": "ADQL", "QUERY": query},
                                headers=world.headers(who))
        assert _ids(sync.content) == expected
    embargoed = [d["id"] for d in world.docs if d["data_rights"]["level"] == "embargoed"
                 and d["data_rights"]["embargo_until"] == FUTURE]
    assert embargoed  # the anonymous job above held none of them, the reader's held all


def test_a_job_is_its_owners_alone(world: World) -> None:
    path = world.create("SELECT obs_id, data_rights FROM ivoa.obscore", "reader",
                        PHASE="RUN", RUNID="mine")
    assert world.finish(path, "reader") == "COMPLETED"
    resources = ("", "/phase", "/parameters", "/results", "/results/result", "/error",
                 "/executionduration", "/destruction", "/quote", "/owner")
    for stranger in (None, "other", "admin"):
        for resource in resources:
            assert world.get(path + resource, stranger).status_code == 404, (stranger,
                                                                               resource)
        assert world.post(f"{path}/phase", stranger, PHASE="ABORT").status_code == 404
        assert world.post(path, stranger, ACTION="DELETE").status_code == 404
        assert world.client.delete(path, headers=world.headers(stranger),
                                   follow_redirects=False).status_code == 404
        jobs = world.job("/tap/async", stranger)
        assert path.rsplit("/", 1)[1] not in jobs.xpath("//uws:jobref/@id", namespaces=UWS)
    assert world.get(f"{path}/owner", "reader").text.startswith("token:")
    assert world.job(path, "reader").findtext("uws:runId", namespaces=UWS) == "mine"
    jobs = world.job("/tap/async", "reader")
    assert jobs.xpath("//uws:jobref/@id", namespaces=UWS) == [path.rsplit("/", 1)[1]]
    # An anonymous job is reachable by its URL alone, and listed to no one.
    anonymous = world.create("SELECT TOP 1 obs_id FROM ivoa.obscore")
    assert world.phase(anonymous) == "PENDING"
    assert world.get(anonymous, "reader").status_code == 404
    assert world.job("/tap/async").xpath("//uws:jobref", namespaces=UWS) == []


def test_a_revoked_token_runs_nothing_more(world: World) -> None:
    path = world.create("SELECT obs_id FROM ivoa.obscore", "reader")
    job_id = path.rsplit("/", 1)[1]
    token_id = int(world.get(f"{path}/owner", "reader").text.split(":")[1])
    assert revoke_token(world.archive, token_id)
    # The token no longer opens it, once the token cache's trust in it has run out.
    time.sleep(world.client.app.state.settings.token_cache_s)  # type: ignore[attr-defined]
    assert world.get(path, "reader").status_code == 401
    # Queued under the token before its revocation, the job refuses to run when it starts.
    with world.archive.engine.begin() as conn:
        conn.execute(update(TapJob).where(TapJob.id == job_id).values(phase="QUEUED"))
    runner = JobRunner(world.archive)
    runner.start(job_id)
    deadline = time.monotonic() + 30
    while True:
        with world.archive.engine.connect() as conn:
            job = conn.execute(TapJob.__table__.select().where(TapJob.id == job_id)).one()
        if job.phase not in ("QUEUED", "EXECUTING"):
            break
        assert time.monotonic() < deadline
        time.sleep(0.1)
    runner.stop()
    assert job.phase == "ERROR" and "revoked" in job.error and job.result is None


def test_the_life_of_a_job(world: World) -> None:
    path = world.create("SELECT TOP 3 obs_id FROM ivoa.obscore ORDER BY obs_id", "admin",
                        RUNID="life")
    job = world.job(path, "admin")
    assert job.get("version") == "1.1"
    assert job.findtext("uws:phase", namespaces=UWS) == "PENDING"
    assert job.find("uws:startTime", UWS).get(
        "{http://www.w3.org/2001/XMLSchema-instance}nil") == "true"
    # Parameters, duration and destruction change while it is pending, within the limits.
    assert world.post(f"{path}/parameters", "admin",
                      QUERY="SELECT TOP 2 obs_id FROM ivoa.obscore ORDER BY obs_id"
                      ).status_code == 303
    assert "TOP 2" in world.get(f"{path}/parameters", "admin").text
    assert world.post(f"{path}/executionduration", "admin",
                      EXECUTIONDURATION="100000").status_code == 303
    assert world.get(f"{path}/executionduration", "admin").text == "60"
    far = (datetime.now(UTC) + timedelta(days=365)).isoformat()
    assert world.post(f"{path}/destruction", "admin", DESTRUCTION=far).status_code == 303
    destruction = datetime.fromisoformat(
        world.get(f"{path}/destruction", "admin").text.replace("Z", "+00:00"))
    assert destruction <= datetime.now(UTC) + timedelta(days=30, minutes=1)
    assert world.get(f"{path}/results/result", "admin").status_code == 404
    assert world.post(f"{path}/phase", "admin", PHASE="SUSPEND").status_code == 400
    assert world.post(f"{path}/phase", "admin", PHASE="RUN").status_code == 303
    assert world.finish(path, "admin") == "COMPLETED"
    job = world.job(path, "admin")
    assert job.findtext("uws:endTime", namespaces=UWS) >= job.findtext(
        "uws:startTime", namespaces=UWS) >= job.findtext("uws:creationTime", namespaces=UWS)
    body = world.get(f"{path}/results/result", "admin").content
    assert _ids(body) == sorted(d["id"] for d in world.docs)[:2]
    assert world.post(f"{path}/phase", "admin", PHASE="RUN").status_code == 400
    assert world.post(f"{path}/parameters", "admin", QUERY="SELECT 1").status_code == 400
    assert world.get(f"{path}/error", "admin").status_code == 404
    # The job list: filters of UWS 1.1.
    other = world.create("SELECT TOP 1 obs_id FROM ivoa.obscore", "admin")
    listed = world.job("/tap/async", "admin").xpath("//uws:jobref/@id", namespaces=UWS)
    assert listed == [other.rsplit("/", 1)[1], path.rsplit("/", 1)[1]]  # newest first
    assert world.job("/tap/async", "admin", PHASE="PENDING").xpath(
        "//uws:jobref/@id", namespaces=UWS) == [other.rsplit("/", 1)[1]]
    assert len(world.job("/tap/async", "admin", LAST=1).xpath("//uws:jobref",
                                                               namespaces=UWS)) == 1
    assert world.get("/tap/async", "admin", PHASE="NOPE").status_code == 400
    # Deleting: DELETE, or POST ACTION=DELETE; both answer 303 to the list.
    response = world.client.delete(path, headers=world.headers("admin"),
                                   follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"].endswith("/tap/async")
    assert world.get(path, "admin").status_code == 404
    assert world.post(other, "admin", ACTION="DELETE").status_code == 303
    assert world.get(other, "admin").status_code == 404


def test_errors_aborts_limits_and_destruction(world: World) -> None:
    bad = world.create("SELECT nope FROM ivoa.obscore", "admin", PHASE="RUN")
    assert world.finish(bad, "admin") == "ERROR"
    assert "unknown column nope" in world.job(bad, "admin").findtext(
        "uws:errorSummary/uws:message", namespaces=UWS)
    error = world.get(f"{bad}/error", "admin")
    assert b'name="QUERY_STATUS" value="ERROR"' in error.content
    assert b"unknown column nope" in error.content
    assert world.get(f"{bad}/results/result", "admin").status_code == 404
    hostile = world.create("SELECT token_hash FROM api_tokens", "admin", PHASE="RUN")
    assert world.finish(hostile, "admin") == "ERROR"
    # The service's limit stops a query that runs too long...
    slow = world.create(SLOW, "admin", EXECUTIONDURATION="1", PHASE="RUN")
    started = time.monotonic()
    assert world.finish(slow, "admin") == "ERROR"
    assert time.monotonic() - started < 30
    assert "1 s limit" in world.get(f"{slow}/error", "admin").text
    # ...and ABORT stops one at once.
    slow = world.create(SLOW, "admin", PHASE="RUN")
    deadline = time.monotonic() + 30
    while world.phase(slow, "admin") != "EXECUTING":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert world.post(f"{slow}/phase", "admin", PHASE="ABORT").status_code == 303
    assert world.phase(slow, "admin") == "ABORTED"
    quick = world.create("SELECT TOP 1 obs_id FROM ivoa.obscore", "admin", PHASE="RUN")
    assert world.finish(quick, "admin", timeout_s=20) == "COMPLETED"  # the runner is free
    assert world.phase(slow, "admin") == "ABORTED"  # and the aborted job stays so
    # WAIT blocks until the phase changes.
    pending = world.create("SELECT TOP 1 obs_id FROM ivoa.obscore", "admin")
    began = time.monotonic()
    assert world.job(pending, "admin", WAIT=1).findtext("uws:phase",
                                                        namespaces=UWS) == "PENDING"
    assert time.monotonic() - began >= 0.9
    assert world.job(pending, "admin", WAIT=5, PHASE="EXECUTING").findtext(
        "uws:phase", namespaces=UWS) == "PENDING"  # it is not EXECUTING: no wait
    # A job lost with its process while EXECUTING reads as ERROR after its duration.
    job_id = pending.rsplit("/", 1)[1]
    with world.archive.engine.begin() as conn:
        conn.execute(update(TapJob).where(TapJob.id == job_id).values(
            phase="EXECUTING", started_at=datetime.now(UTC) - timedelta(minutes=5)))
    assert world.phase(pending, "admin") == "ERROR"
    assert "ended before" in world.get(f"{pending}/error", "admin").text
    # Past its destruction a job is gone.
    assert world.post(f"{pending}/destruction", "admin",
                      DESTRUCTION="2020-01-01T00:00:00Z").status_code == 303
    assert world.get(pending, "admin").status_code == 404
    world.create("SELECT TOP 1 obs_id FROM ivoa.obscore", "admin")  # sweeps
    with world.archive.engine.connect() as conn:
        assert conn.execute(TapJob.__table__.select().where(TapJob.id == job_id)).first() \
            is None


@pytest.mark.timeout(300)
def test_pyvo_run_async_against_a_live_server(world: World) -> None:
    import requests

    from tests.servers import leaky_client, live_app

    plain, session = requests.Session(), requests.Session()
    session.headers["Authorization"] = f"Bearer {world.tokens['reader']}"
    with live_app(world.client.app) as base, plain, session, leaky_client():
        _run_async_with_pyvo(world, base, plain, session)


def _run_async_with_pyvo(world: World, base: str, plain: Any, session: Any) -> None:
    import pyvo

    query = "SELECT obs_id FROM ivoa.obscore WHERE data_rights <> 'public'"
    anonymous = pyvo.dal.TAPService(base + "/tap", session=plain)
    result = anonymous.run_async(query)
    assert sorted(result.to_table()["obs_id"]) == sorted(
        d["id"] for d in world.docs if d["data_rights"]["level"] != "public"
        and _visible(d, set()))
    reader = pyvo.dal.TAPService(base + "/tap", session=session)
    result = reader.run_async(query)
    assert sorted(result.to_table()["obs_id"]) == sorted(
        d["id"] for d in world.docs if d["data_rights"]["level"] != "public"
        and _visible(d, {"read:embargoed"}))
    job = reader.submit_job("SELECT TOP 1 obs_id FROM ivoa.obscore", runid="pyvo")
    assert job.phase == "PENDING" and job.job.runid == "pyvo"
    job.run().wait(timeout=60)
    assert job.phase == "COMPLETED" and len(job.fetch_result()) == 1
    job.delete()
    with pytest.raises(pyvo.dal.DALQueryError, match="unknown column"):
        reader.run_async("SELECT nope FROM ivoa.obscore")
