"""POST /api/v1/triggers: authenticated detector triggers into the archive."""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

import alerts_schema
from broker.archive.store import Archive
from broker.config import get_settings
from broker.web.app import create_app
from broker.web.tokens import create_token, revoke_token
from tests.servers import live_app

EXAMPLES = {p.name: p.read_bytes() for p in alerts_schema.example_paths("trigger")}
TRACK = EXAMPLES["trigger-track-single.example.json"]


@pytest.fixture
def client(db_url: str) -> Iterator[TestClient]:
    with TestClient(create_app(get_settings(database_url=db_url))) as c:
        yield c


def _auth(client: TestClient, *scopes: str) -> dict[str, str]:
    detectors = ["KM3NeT"] if "write:triggers" in scopes else None
    token, _ = create_token(client.app.state.archive, "test", list(scopes),
                            detectors=detectors)
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
    token, info = create_token(client.app.state.archive, "gone", ["write:triggers"],
                               detectors=["KM3NeT"])
    revoke_token(client.app.state.archive, info.id)
    reply = client.post("/api/v1/triggers", content=TRACK,
                        headers={"Authorization": f"Bearer {token}",
                                 "Content-Type": "application/json"})
    assert reply.status_code == 401
    assert client.app.state.archive.count_alerts() == 0


def test_the_token_is_checked_before_anything_else_about_the_request(
        client: TestClient) -> None:
    """The token is checked in the ingest's worker thread, not in a dependency of its
    own: the answers keep their order (401, 403, then 415), nothing of a refused
    request is kept, and the route still documents bearer tokens (never the sign-in
    cookie, which does not authenticate this write)."""
    plain = {"Content-Type": "text/plain"}
    cases = [({}, 401), ({"Authorization": "Bearer mmb_not-a-real-token"}, 401),
             ({"Authorization": _auth(client, "ack")["Authorization"]}, 403),
             ({"Authorization": _auth(client, "write:triggers")["Authorization"]}, 415)]
    for headers, code in cases:
        reply = client.post("/api/v1/triggers", content=TRACK, headers={**headers, **plain})
        assert reply.status_code == code, (headers, reply.text)
        if code == 401:
            assert reply.headers["WWW-Authenticate"].startswith("Bearer")
    archive = client.app.state.archive
    assert archive.count_alerts() == 0 and archive.list_quarantine() == []
    operation = client.get("/openapi.json").json()["paths"]["/api/v1/triggers"]["post"]
    assert operation["security"] == [{"HTTPBearer": []}]


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
    one_or_list = post["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
    assert one_or_list[0] == {"$ref": "#/components/schemas/Trigger"}
    assert one_or_list[1]["items"] == {"$ref": "#/components/schemas/Trigger"}
    trigger = spec["components"]["schemas"]["Trigger"]
    assert set(trigger["required"]) >= {"event_id", "detector", "real", "time"}
    assert "#/$defs/" not in json.dumps(spec)
    assert {"401", "403", "413", "415", "422", "429"} <= set(post["responses"])
    reply = spec["components"]["schemas"]["TriggerResult"]
    assert "items" in reply["required"]


# -- issue 14: authors bound to detectors, fan-out cap, write and failed-auth limits ---------
# Against a real uvicorn server on both backends: the refusals cross HTTP and storage.


@dataclass
class Reply:
    status_code: int
    headers: Any
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


@dataclass
class Http:
    """A plain HTTP client of a live server (urllib: what a detector's script would use)."""

    base: str

    def _call(self, method: str, path: str, content: bytes | None, headers: dict[str, str],
              params: dict[str, Any] | None) -> Reply:
        url = self.base + path + ("?" + urllib.parse.urlencode(params) if params else "")
        request = urllib.request.Request(url, data=content, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return Reply(response.status, response.headers, response.read().decode())
        except urllib.error.HTTPError as exc:
            return Reply(exc.code, exc.headers, exc.read().decode())

    def get(self, path: str, *, headers: dict[str, str] | None = None,
            params: dict[str, Any] | None = None) -> Reply:
        return self._call("GET", path, None, headers or {}, params)

    def post(self, path: str, *, content: bytes, headers: dict[str, str]) -> Reply:
        return self._call("POST", path, content, headers, None)


@contextlib.contextmanager
def _served(db_url: str, **overrides: Any) -> Iterator[tuple[Http, Archive]]:
    """A live broker app over ``db_url`` (Comet off) and an HTTP client to it."""
    archive = Archive.open(db_url)
    settings = get_settings(database_url=db_url, comet=False, **overrides)
    try:
        with live_app(create_app(settings, archive=archive)) as base:
            yield Http(base), archive
    finally:
        archive.close()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


def _trigger(detector: str, event_id: str, revision: int = 0, **fields: Any) -> bytes:
    doc = {**json.loads(TRACK), "detector": detector, "event_id": event_id, **fields}
    if revision:
        doc["revision"] = revision
    return json.dumps(doc).encode()


def _rows(archive: Archive, table: str) -> list[Any]:
    """Every row of ``table`` (typed columns: JSON decoded, bytes as bytes), by id."""
    from broker.archive.models import Base

    model = Base.metadata.tables[table]
    with archive.engine.connect() as conn:
        return list(conn.execute(select(model).order_by(*model.primary_key.columns)))


def _raw(archive: Archive, sha256: str) -> bytes:
    (row,) = [r for r in _rows(archive, "raw_payloads") if r.sha256 == sha256]
    return bytes(row.data)


@pytest.mark.timeout(120)
def test_token_bound_to_a_detector_cannot_post_for_another(db_url: str) -> None:
    with _served(db_url) as (http, archive):
        token, info = create_token(archive, "km3net-online", ["write:triggers"],
                                   detectors=["KM3NeT"])
        body = _trigger("IceCube", "IC-1")
        reply = http.post("/api/v1/triggers", content=body, headers=_bearer(token))
        assert reply.status_code == 403, reply.text
        assert "IceCube" in reply.json()["detail"] and f"token {info.id}" in reply.json()["detail"]
        assert archive.count_alerts() == 0
        # The refused attempt is kept: its bytes and a reason naming the token and detector.
        (entry,) = archive.list_quarantine()
        assert entry["error_class"] == "RefusedAuthor"
        assert f"token {info.id}" in entry["reason"] and '"IceCube"' in entry["reason"]
        assert _raw(archive, entry["raw_sha256"]) == body
        (quarantined,) = _rows(archive, "quarantine")
        assert quarantined.transport["http"]["token_id"] == info.id
        # Its own detector still works.
        ok = http.post("/api/v1/triggers", content=_trigger("KM3NeT", "K-1"),
                       headers=_bearer(token))
        assert ok.status_code == 201, ok.text


@pytest.mark.timeout(120)
def test_token_cannot_retract_another_detectors_event(db_url: str) -> None:
    with _served(db_url) as (http, archive):
        icecube, _ = create_token(archive, "icecube", ["write:triggers"], detectors=["IceCube"])
        km3net, _ = create_token(archive, "km3net", ["write:triggers"], detectors=["KM3NeT"])
        first = http.post("/api/v1/triggers", content=_trigger("IceCube", "IC-7"),
                          headers=_bearer(icecube))
        assert first.status_code == 201, first.text
        voevents = len(_rows(archive, "voevents"))
        deliveries = len(_rows(archive, "deliveries"))
        assert voevents >= 1  # the initial trigger was published
        retraction = _trigger("IceCube", "IC-7", revision=1, retraction=True)
        update = _trigger("IceCube", "IC-7", revision=1, p_astro=0.9)
        for body in (retraction, update):
            reply = http.post("/api/v1/triggers", content=body, headers=_bearer(km3net))
            assert reply.status_code == 403, reply.text
        assert [r.revision for r in _rows(archive, "alerts")] == [0]
        assert len(_rows(archive, "voevents")) == voevents  # no retraction VOEvent made
        assert len(_rows(archive, "deliveries")) == deliveries  # nor queued
        assert len(archive.list_quarantine()) == 2
        # The detector's own token may retract it.
        own = http.post("/api/v1/triggers", content=retraction, headers=_bearer(icecube))
        assert own.status_code == 201, own.text
        assert archive.get_alert(own.json()["id"])["alert_type"] == "retraction"


@pytest.mark.timeout(120)
def test_each_revision_records_the_token_that_wrote_it(db_url: str) -> None:
    with _served(db_url) as (http, archive):
        online, first_info = create_token(archive, "online", ["write:triggers"],
                                          detectors=["KM3NeT"])
        offline, second_info = create_token(archive, "offline", ["write:triggers"],
                                            detectors=["KM3NeT", "ANTARES"])
        for token, revision in ((online, 0), (offline, 1)):
            reply = http.post("/api/v1/triggers", content=_trigger("KM3NeT", "R-1", revision),
                              headers=_bearer(token))
            assert reply.status_code == 201, reply.text
        rows = sorted(_rows(archive, "alerts"), key=lambda r: r.revision)
        assert [(r.revision, r.token_id) for r in rows] == [(0, first_info.id),
                                                           (1, second_info.id)]


@pytest.mark.timeout(120)
def test_unbound_token_is_refused_unless_allowed(db_url: str) -> None:
    with _served(db_url) as (http, archive):
        token, info = create_token(archive, "legacy", ["write:triggers"])
        reply = http.post("/api/v1/triggers", content=TRACK, headers=_bearer(token))
        assert reply.status_code == 403, reply.text
        assert "bound to no detector" in reply.json()["detail"]
        (entry,) = archive.list_quarantine()
        assert entry["error_class"] == "RefusedAuthor" and f"token {info.id}" in entry["reason"]
        assert archive.count_alerts() == 0
        admin, _ = create_token(archive, "root", ["admin"])  # admin writes any detector
        assert http.post("/api/v1/triggers", content=_trigger("Baikal-GVD", "B-1"),
                         headers=_bearer(admin)).status_code == 201
    with _served(db_url, allow_unbound_trigger_tokens=True) as (http, archive):
        reply = http.post("/api/v1/triggers", content=TRACK, headers=_bearer(token))
        assert reply.status_code == 201, reply.text


@pytest.mark.timeout(120)
@pytest.mark.parametrize("field", ["pipeline", "instrument", "contact"])
def test_control_character_in_a_trigger_field_is_refused_and_kept(db_url: str,
                                                                   field: str) -> None:
    with _served(db_url) as (http, archive):
        token, _ = create_token(archive, "km", ["write:triggers"], detectors=["KM3NeT"])
        body = _trigger("KM3NeT", "NUL-1", **{field: "online\u0000v2"})
        reply = http.post("/api/v1/triggers", content=body, headers=_bearer(token))
        assert reply.status_code == 422, reply.text
        assert f"$.{field}: control character U+0000" in reply.json()["detail"]
        assert archive.count_alerts() == 0
        (entry,) = archive.list_quarantine()
        assert f"$.{field}" in entry["reason"]
        assert _raw(archive, entry["raw_sha256"]) == body


@pytest.mark.timeout(180)
def test_too_many_triggers_in_one_request_are_refused_whole(db_url: str) -> None:
    with _served(db_url) as (http, archive):
        token, _ = create_token(archive, "km", ["write:triggers"], detectors=["KM3NeT"])
        docs = [json.loads(_trigger("KM3NeT", f"FAN-{i}")) for i in range(101)]
        body = json.dumps(docs).encode()
        reply = http.post("/api/v1/triggers", content=body, headers=_bearer(token))
        assert reply.status_code == 413, reply.text
        assert "101 triggers" in reply.json()["detail"] and "at most 100" in reply.json()["detail"]
        assert archive.count_alerts() == 0 and _rows(archive, "voevents") == []
        (entry,) = archive.list_quarantine()
        assert entry["raw_sha256"] == reply.json()["raw_sha256"]
        # At the cap, all go through.
        reply = http.post("/api/v1/triggers", content=json.dumps(docs[:100]).encode(),
                          headers=_bearer(token))
        assert reply.status_code == 201 and len(reply.json()["items"]) == 100
    with _served(db_url, max_triggers_per_request=2) as (http, archive):
        reply = http.post("/api/v1/triggers", content=json.dumps(docs[:3]).encode(),
                          headers=_bearer(token))
        assert reply.status_code == 413 and "at most 2" in reply.json()["detail"]


@pytest.mark.timeout(120)
def test_reply_lists_every_triggers_ivorn_and_outcome(db_url: str) -> None:
    with _served(db_url) as (http, archive):
        token, _ = create_token(archive, "km", ["write:triggers"], detectors=["KM3NeT"])
        docs = [json.loads(_trigger("KM3NeT", f"LIST-{i}")) for i in range(3)]
        reply = http.post("/api/v1/triggers", content=json.dumps(docs).encode(),
                          headers=_bearer(token))
        assert reply.status_code == 201, reply.text
        items = reply.json()["items"]
        assert [i["id"].rpartition("#")[2] for i in items] == [
            f"KM3NeT:LIST-{i}-0" for i in range(3)]
        assert [i["status"] for i in items] == ["archived"] * 3
        assert all(archive.get_alert(i["id"]) is not None for i in items)
        # Posting one new and two known: each outcome on its own.
        docs[1] = json.loads(_trigger("KM3NeT", "LIST-9"))
        again = http.post("/api/v1/triggers", content=json.dumps(docs).encode(),
                          headers=_bearer(token))
        assert again.status_code == 201
        assert [i["status"] for i in again.json()["items"]] == ["duplicate", "archived",
                                                                "duplicate"]


@pytest.mark.timeout(120)
def test_failed_authentications_are_limited_per_address(sqlite_url: str) -> None:
    with _served(sqlite_url) as (http, archive):  # the default settings
        good, _ = create_token(archive, "km", ["write:triggers"], detectors=["KM3NeT"])
        codes = [http.get("/api/v1/alerts", headers={"Authorization": f"Bearer mmb_guess{i}"})
                 .status_code for i in range(60)]
        assert set(codes[:30]) == {401} and codes[-1] == 429, codes
        limited = http.post("/api/v1/triggers", content=TRACK,
                            headers={**_bearer("mmb_guess-again")})
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
        # While the address is locked out, even a valid token waits (no oracle).
        assert http.post("/api/v1/triggers", content=TRACK,
                         headers=_bearer(good)).status_code == 429
        assert archive.count_alerts() == 0
    with _served(sqlite_url, failed_auth_rate_limit_burst=3,
                 failed_auth_rate_limit_per_s=2.0) as (http, archive):
        codes = [http.get("/scs", params={"RA": 1, "DEC": 1, "SR": 1},
                          headers={"Authorization": "Bearer mmb_x"}).status_code
                 for _ in range(5)]
        assert codes == [401, 401, 401, 429, 429]
        time.sleep(1.2)  # the bucket refills at 2/s
        assert http.get("/api/v1/alerts", headers=_bearer(good)).status_code == 200


@pytest.mark.timeout(120)
def test_writes_are_limited_per_token(sqlite_url: str) -> None:
    with _served(sqlite_url, write_rate_limit_burst=3, write_rate_limit_per_s=0.05) \
            as (http, archive):
        token, _ = create_token(archive, "km", ["write:triggers"], detectors=["KM3NeT"])
        other, _ = create_token(archive, "km2", ["write:triggers"], detectors=["KM3NeT"])
        codes = [http.post("/api/v1/triggers", content=_trigger("KM3NeT", f"W-{i}"),
                           headers=_bearer(token)).status_code for i in range(5)]
        assert codes == [201, 201, 201, 429, 429]
        last = http.post("/api/v1/triggers", content=_trigger("KM3NeT", "W-9"),
                         headers=_bearer(token))
        assert last.status_code == 429 and int(last.headers["Retry-After"]) >= 1
        assert archive.count_alerts() == 3
        # Per token: another caller is not held back by the first one's flood.
        assert http.post("/api/v1/triggers", content=_trigger("KM3NeT", "W-10"),
                         headers=_bearer(other)).status_code == 201
