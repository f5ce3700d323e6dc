"""schemathesis against the broker's own OpenAPI description: no 5xx, every response conforms.

A live server over an archive holding alerts, a sky map, coincidences and
VOEvents (the demo scenario plus synthetic alerts), called with an admin
token so that every route has something to answer with; once on SQLite and
once on PostgreSQL, since a bad parameter must get the same 4xx from both
(issue 14 item 7: a NUL byte or a cursor past 2**63 gave 500 on one of them).
Every GET route, and ``POST /api/v1/triggers`` with generated triggers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from alerts_schema.synthetic import alert_documents
from broker.archive.store import Archive
from broker.config import get_settings
from broker.web.app import create_app
from broker.web.tokens import create_token
from listeners.envelope import RawMessage
from tests.servers import live_app


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def api_schema(request: pytest.FixtureRequest,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    folder: Path = tmp_path_factory.mktemp("fuzz")
    if request.param == "sqlite":
        yield from _served_schema(f"sqlite:///{folder / 'fuzz.sqlite3'}", folder)
        return
    from tests.conftest import pg_schema

    request.getfixturevalue("pg_available")
    with pg_schema("fuzz") as url:
        yield from _served_schema(url, folder)


def _served_schema(db_url: str, folder: Path) -> Iterator[Any]:
    from broker import demo
    from broker.runtime.assembly import make_pipeline

    archive = Archive.open(db_url)
    settings = get_settings(api_rate_limit_per_s=0, write_rate_limit_per_s=0,
                            failed_auth_rate_limit_per_s=0, comet=False, data_dir=folder)
    pipeline = make_pipeline(settings, archive, targets=[])
    for _, raw, _ in demo.scenario_messages():
        pipeline.ingest([raw])
    pipeline.ingest([RawMessage("file", json.dumps(d).encode())
                     for d in alert_documents(50, seed=3)])
    token, _ = create_token(archive, "fuzz", ["admin"])
    app = create_app(settings, archive=archive)
    with live_app(app) as base:
        schema = schemathesis.openapi.from_url(base + "/openapi.json")
        schema.config.headers = {"Authorization": f"Bearer {token}"}
        yield schema
    archive.close()


@pytest.mark.timeout(900)
def test_every_get_route_and_the_trigger_post_conform(api_schema: Any) -> None:
    from hypothesis import HealthCheck, given, settings

    checks = [not_a_server_error, status_code_conformance, content_type_conformance,
              response_schema_conformance]
    operations = [op for op in (result.ok() for result in api_schema.get_all_operations())
                  if op.method.upper() == "GET" or op.label == "POST /api/v1/triggers"]
    assert len(operations) >= 16
    calls: dict[str, set[int]] = {}
    for operation in operations:

        @settings(max_examples=25, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(operation.as_strategy())
        def call(case: Any) -> None:
            response = case.call_and_validate(checks=checks, timeout=30)
            calls.setdefault(case.operation.label, set()).add(response.status_code)

        call()
    assert len(calls) == len(operations)
    assert any(200 in codes for codes in calls.values())
    assert 200 in calls["GET /api/v1/alerts"] and 200 in calls["GET /scs"]
    assert 404 in calls["GET /api/v1/alerts/{ivorn}"]
    assert calls["POST /api/v1/triggers"] & {200, 201, 422}
