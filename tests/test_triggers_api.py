"""POST /api/v1/triggers: authenticated detector triggers into the archive."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

import alerts_schema
from broker.app import create_app
from broker.config import get_settings
from broker.tokens import create_token, revoke_token

EXAMPLES = {p.name: p.read_bytes() for p in alerts_schema.example_paths("trigger")}
TRACK = EXAMPLES["trigger-track-single.example.json"]


@pytest.fixture
def client(db_url: str) -> Iterator[TestClient]:
    with TestClient(create_app(get_settings(database_url=db_url))) as c:
        yield c


def _auth(client: TestClient, *scopes: str) -> dict[str, str]:
    token, _ = create_token(client.app.state.archive, "test", list(scopes))
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


def test_trigger_is_archived_once(client: TestClient) -> None:
    headers = _auth(client, "write:triggers")
    first = client.post("/api/v1/triggers", content=TRACK, headers=headers)
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["status"] == "archived"
    assert body["id"].endswith("/detector#KM3NeT:ARCA-12041-883201-0")
    again = client.post("/api/v1/triggers", content=TRACK, headers=headers)
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    archive = client.app.state.archive
    doc = archive.get_alert(body["id"])
    assert doc["messenger"] == "neutrino" and doc["role"] == "observation"
    assert doc["source"] == "detector"


def test_test_trigger_is_role_test(client: TestClient) -> None:
    reply = client.post("/api/v1/triggers", content=EXAMPLES["trigger-test.example.json"],
                        headers=_auth(client, "admin"))
    assert reply.status_code == 201
    assert client.app.state.archive.get_alert(reply.json()["id"])["role"] == "test"


@pytest.mark.parametrize(("headers", "code"), [
    ({}, 401),
    ({"Authorization": "Bearer mmb_not-a-real-token"}, 401),
    ({"Authorization": "Basic dXNlcjpwYXNz"}, 401),
])
def test_unauthenticated_is_refused(client: TestClient, headers: dict[str, str],
                                    code: int) -> None:
    reply = client.post("/api/v1/triggers", content=TRACK,
                        headers={**headers, "Content-Type": "application/json"})
    assert reply.status_code == code
    assert client.app.state.archive.count_alerts() == 0


def test_wrong_scope_and_revoked_tokens(client: TestClient) -> None:
    reply = client.post("/api/v1/triggers", content=TRACK, headers=_auth(client, "ack"))
    assert reply.status_code == 403
    token, info = create_token(client.app.state.archive, "gone", ["write:triggers"])
    revoke_token(client.app.state.archive, info.id)
    reply = client.post("/api/v1/triggers", content=TRACK,
                        headers={"Authorization": f"Bearer {token}",
                                 "Content-Type": "application/json"})
    assert reply.status_code == 401
    assert client.app.state.archive.count_alerts() == 0


def test_invalid_trigger_is_quarantined_with_paths(client: TestClient) -> None:
    bad = json.loads(TRACK)
    bad["dec_deg"] = 123
    del bad["detector"]
    reply = client.post("/api/v1/triggers", content=json.dumps(bad).encode(),
                        headers=_auth(client, "write:triggers"))
    assert reply.status_code == 422
    detail = reply.json()["detail"]
    assert "dec_deg" in detail and "detector" in detail
    (entry,) = client.app.state.archive.list_quarantine()
    assert entry["raw_sha256"] == reply.json()["raw_sha256"]


def test_limits_and_media_type(client: TestClient) -> None:
    headers = _auth(client, "write:triggers")
    big = b'{"pad": "' + b"x" * (300 * 1024) + b'"}'
    assert client.post("/api/v1/triggers", content=big, headers=headers).status_code == 413
    plain = {**headers, "Content-Type": "text/plain"}
    assert client.post("/api/v1/triggers", content=TRACK, headers=plain).status_code == 415
    hostile = b"[" * 10_000 + b"]" * 10_000
    reply = client.post("/api/v1/triggers", content=hostile, headers=headers)
    assert reply.status_code == 422 and "nested" in reply.json()["detail"]


def test_openapi_documents_the_trigger_schema(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    post = spec["paths"]["/api/v1/triggers"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Trigger"}
    trigger = spec["components"]["schemas"]["Trigger"]
    assert set(trigger["required"]) >= {"event_id", "detector", "real", "time"}
    assert "#/$defs/" not in json.dumps(spec)
    assert {"401", "403", "413", "415", "422"} <= set(post["responses"])
