"""The query API on SQLite and PostgreSQL: filters, pages, formats, data rights, SCS, limits.

Expected answers are computed here in Python from the documents the test
archived, independently of the SQL the API runs.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alerts_schema.synthetic import alert_documents
from broker.archive.query import AlertQuery
from broker.archive.store import Archive
from broker.config import get_settings
from broker.runtime.ingest import Ingestor
from broker.web.app import create_app
from broker.web.tokens import create_token
from crossmatch.healpix import angular_separation_deg
from listeners.envelope import RawMessage
from tests.conftest import ingest_demo

T0 = datetime(2026, 6, 1, tzinfo=UTC)
FUTURE = "2099-01-01T00:00:00Z"
PAST = "2026-01-01T00:00:00Z"
PIPELINES = ("alpha", "beta")
VERSIONS = ("1.0", "2.0")
RECOS = ("splinempe", "millipede")


def _documents(n: int, seed: int, prefix: str, *, rights: bool = True) -> list[dict[str, Any]]:
    """Synthetic alerts over 30 days with provenance, energies and mixed data rights."""
    rng = np.random.default_rng(seed + 1000)
    docs = alert_documents(n, seed=seed, start=T0, span_s=30 * 86400, prefix=prefix)
    for doc in docs:
        doc["provenance"] = {"pipeline": str(rng.choice(PIPELINES)),
                             "pipeline_version": str(rng.choice(VERSIONS)),
                             "reco_method": str(rng.choice(RECOS))}
        if rng.random() < 0.7:
            best = float(10 ** rng.uniform(0, 6))
            doc["energy"] = {"best_gev": best, "min_gev": best / 2, "max_gev": best * 2}
        if rng.random() < 0.2:
            doc["alert_type"], doc["revision"] = "update", 1
        if rng.random() < 0.1:
            doc["role"] = "test"
        if rights:
            pick = rng.random()
            if pick < 0.15:
                doc["data_rights"] = {"level": "embargoed", "embargo_until": FUTURE}
            elif pick < 0.25:
                doc["data_rights"] = {"level": "embargoed", "embargo_until": PAST}
            elif pick < 0.35:
                doc["data_rights"] = {"level": "proprietary"}
    return docs


def _archive_docs(archive: Archive, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ingest documents; the archived documents (the broker re-issues each IVORN)."""
    ingestor = Ingestor(archive, authority="q.mmbroker")
    outcomes = ingestor.ingest([RawMessage("file", json.dumps(d).encode()) for d in docs])
    assert all(o.status == "archived" for o in outcomes), [o.reason for o in outcomes]
    stored = archive.get_alerts(o.ivorn for o in outcomes if o.ivorn)
    return [stored[o.ivorn] for o in outcomes if o.ivorn]


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _visible(doc: dict[str, Any], scopes: set[str], now: datetime | None = None) -> bool:
    now = now or datetime.now(UTC)
    rights = doc["data_rights"]
    if rights["level"] == "public" or "admin" in scopes:
        return True
    if rights["level"] == "embargoed":
        return "read:embargoed" in scopes or _time(rights["embargo_until"]) <= now
    return "read:proprietary" in scopes


@pytest.fixture
def world(archive: Archive) -> Iterator[tuple[TestClient, list[dict[str, Any]], str]]:
    """A client of an app over an archive of 150 synthetic alerts, and an admin token."""
    docs = _archive_docs(archive, _documents(150, seed=7, prefix="w"))
    admin, _ = create_token(archive, "admin", ["admin"])
    settings = get_settings(api_rate_limit_per_s=0)
    with TestClient(create_app(settings, archive=archive)) as client:
        yield client, docs, admin


def _all(client: TestClient, path: str, params: dict[str, Any], token: str | None = None,
         limit: int = 37) -> tuple[list[dict[str, Any]], int]:
    """Every item of a list, page by page; and the total the first page counted."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    items: list[dict[str, Any]] = []
    cursor, total = None, None
    for _ in range(1000):
        page = client.get(path, params={**params, "limit": limit, "count": "true",
                                        **({"cursor": cursor} if cursor else {})},
                          headers=headers)
        assert page.status_code == 200, page.text
        body = page.json()
        total = body["total"] if total is None else total
        items += body["items"]
        cursor = body["next"]
        if cursor is None:
            return items, total
    raise AssertionError("pagination did not end")


def _in_cone(doc: dict[str, Any], ra: float, dec: float, radius: float) -> bool:
    loc = doc["localization"]
    if loc.get("ra_deg") is None:
        return False
    return angular_separation_deg(ra, dec, loc["ra_deg"], loc["dec_deg"]) <= radius


FILTERS: list[tuple[str, dict[str, Any], Any]] = [
    ("time", {"since": "2026-06-05T00:00:00Z", "until": "2026-06-20T00:00:00Z"},
     lambda d: _time("2026-06-05T00:00:00Z") <= _time(d["trigger_time"])
     <= _time("2026-06-20T00:00:00Z")),
    ("cone", {"ra": 40.0, "dec": 10.0, "radius": 50.0},
     lambda d: _in_cone(d, 40.0, 10.0, 50.0)),
    ("messenger", {"messenger": "neutrino"}, lambda d: d["messenger"] == "neutrino"),
    ("two messengers", {"messenger": ["neutrino", "optical"]},
     lambda d: d["messenger"] in ("neutrino", "optical")),
    ("provenance", {"pipeline": "alpha", "reco_method": "millipede"},
     lambda d: d["provenance"]["pipeline"] == "alpha"
     and d["provenance"]["reco_method"] == "millipede"),
    ("pipeline version", {"pipeline_version": "2.0"},
     lambda d: d["provenance"]["pipeline_version"] == "2.0"),
    ("time x cone", {"since": "2026-06-10T00:00:00Z", "ra": 200.0, "dec": -30.0,
                     "radius": 70.0},
     lambda d: _time(d["trigger_time"]) >= _time("2026-06-10T00:00:00Z")
     and _in_cone(d, 200.0, -30.0, 70.0)),
    ("time x cone x messenger x provenance",
     {"until": "2026-06-25T00:00:00Z", "ra": 100.0, "dec": 0.0, "radius": 100.0,
      "messenger": ["gamma_ray", "neutrino", "radio"], "pipeline": "beta"},
     lambda d: _time(d["trigger_time"]) <= _time("2026-06-25T00:00:00Z")
     and _in_cone(d, 100.0, 0.0, 100.0)
     and d["messenger"] in ("gamma_ray", "neutrino", "radio")
     and d["provenance"]["pipeline"] == "beta"),
    ("far", {"far_max": 1e-7}, lambda d: d["far_hz"] <= 1e-7),
    ("energy range", {"energy_min": 100.0, "energy_max": 1e4},
     lambda d: d.get("energy") is not None and 100.0 <= d["energy"]["best_gev"] <= 1e4),
    ("facility x alert type", {"facility": "Fermi", "alert_type": "update"},
     lambda d: d["facility"] == "Fermi" and d["alert_type"] == "update"),
    ("source", {"source": "ztf"}, lambda d: d["source"] == "ztf"),
    ("role", {"role": "test"}, lambda d: d["role"] == "test"),
    ("data rights", {"data_rights": "proprietary"},
     lambda d: d["data_rights"]["level"] == "proprietary"),
    ("ivorn text", {"ivorn_prefix": "ivo://q.mmbroker/gcn.notices.fermi",
                    "ivorn_contains": "-1"},
     lambda d: d["id"].startswith("ivo://q.mmbroker/gcn.notices.fermi") and "-1" in d["id"]),
    ("event id", {"event_id": "w-7-3"}, lambda d: d["event_id"] == "w-7-3"),
    ("whole sky", {"ra": 0.0, "dec": 90.0, "radius": 180.0}, lambda d: True),
]


@pytest.mark.timeout(120)
def test_alert_filters_and_their_combinations(
        world: tuple[TestClient, list[dict[str, Any]], str]) -> None:
    client, docs, admin = world
    assert client.get("/api/v1/alerts", params={"limit": 1}).status_code == 200
    for name, params, keep in FILTERS:
        for token, scopes in ((admin, {"admin"}), (None, set())):
            expected = [d for d in docs if keep(d) and _visible(d, scopes)]
            items, total = _all(client, "/api/v1/alerts", params, token)
            got = [i["id"] for i in items]
            assert len(got) == len(set(got)), name
            assert sorted(got) == sorted(d["id"] for d in expected), name
            assert total == len(expected), name
            keys = [(_time(i["trigger_time"]), i["id"]) for i in items]
            times = [k[0] for k in keys]
            assert times == sorted(times, reverse=True), f"{name}: not newest first"
    received = sorted(_time(d["received_time"]) for d in docs)
    mid = received[len(received) // 2]
    items, _ = _all(client, "/api/v1/alerts",
                    {"received_since": mid.isoformat()}, admin)
    assert sorted(i["id"] for i in items) == sorted(
        d["id"] for d in docs if _time(d["received_time"]) >= mid)


def test_bad_filters_are_clear_400s_or_422s(
        world: tuple[TestClient, list[dict[str, Any]], str]) -> None:
    client, _, _ = world
    cases = [({"ra": 10, "dec": 5}, 400, "needs all of ra, dec and radius"),
             ({"ra": 10, "dec": 95, "radius": 1}, 422, None),
             ({"cursor": "garbage!"}, 400, "not a cursor"),
             ({"skymap": "0" * 64}, 400, "holds no sky map"),
             ({"messenger": "phonons"}, 422, None),
             ({"limit": 100_000}, 422, None)]
    for params, status, text in cases:
        response = client.get("/api/v1/alerts", params=params)
        assert response.status_code == status, (params, response.text)
        if text:
            assert text in response.json()["detail"]
    first = client.get("/api/v1/alerts", params={"limit": 2, "messenger": "neutrino"}).json()
    other = client.get("/api/v1/alerts", params={"limit": 2, "cursor": first["next"]})
    assert other.status_code == 400 and "other filters" in other.json()["detail"]


@pytest.mark.timeout(120)
def test_pages_neither_skip_nor_repeat_while_alerts_arrive(archive: Archive) -> None:
    docs = _archive_docs(archive, _documents(60, seed=11, prefix="p", rights=False))
    with TestClient(create_app(get_settings(api_rate_limit_per_s=0), archive=archive)) as c:
        seen: list[str] = []
        cursor = None
        batch = 0
        while True:
            params: dict[str, Any] = {"limit": 7}
            if cursor:
                params["cursor"] = cursor
            body = c.get("/api/v1/alerts", params=params).json()
            seen += [i["id"] for i in body["items"]]
            cursor = body["next"]
            if cursor is None:
                break
            # New alerts arrive between pages, older and newer than the page boundary.
            batch += 1
            _archive_docs(archive, _documents(3, seed=100 + batch, prefix=f"n{batch}",
                                              rights=False))
        assert len(seen) == len(set(seen)), "a row was repeated"
        assert {d["id"] for d in docs} <= set(seen), "a row that was there all along was skipped"
        assert batch >= 8


def test_format_negotiation(world: tuple[TestClient, list[dict[str, Any]], str]) -> None:
    from astropy.io.votable import parse_single_table

    client, docs, admin = world
    auth = {"Authorization": f"Bearer {admin}"}
    params = {"messenger": "gamma_ray", "limit": 1000}
    expected = sorted(d["id"] for d in docs if d["messenger"] == "gamma_ray")
    as_json = client.get("/api/v1/alerts", params=params, headers=auth)
    assert as_json.headers["content-type"] == "application/json"
    assert sorted(i["id"] for i in as_json.json()["items"]) == expected
    cases = [({"format": "csv"}, {}, "text/csv"),
             ({"format": "votable"}, {"Accept": "text/csv"}, "application/x-votable+xml"),
             ({}, {"Accept": "text/csv"}, "text/csv"),
             ({}, {"Accept": "application/x-votable+xml"}, "application/x-votable+xml"),
             ({}, {"Accept": "text/csv;q=0.5, application/x-votable+xml;q=0.9"},
              "application/x-votable+xml"),
             ({}, {"Accept": "image/png, */*;q=0.1"}, "application/json"),
             ({}, {"Accept": "text/html, text/*;q=0.2"}, "text/csv")]
    for extra, headers, media in cases:
        response = client.get("/api/v1/alerts", params={**params, **extra},
                              headers={**auth, **headers})
        assert response.status_code == 200
        assert response.headers["content-type"].split(";")[0] == media, (extra, headers)
        if media == "text/csv":
            rows = list(csv.DictReader(io.StringIO(response.text)))
            assert sorted(r["ivorn"] for r in rows) == expected
            assert all(r["messenger"] == "gamma_ray" for r in rows)
        elif media == "application/x-votable+xml":
            table = parse_single_table(io.BytesIO(response.content)).to_table()
            assert sorted(table["ivorn"]) == expected
            assert str(table["ra_deg"].unit) == "deg" and str(table["far_hz"].unit) == "Hz"
    refused = client.get("/api/v1/alerts", headers={"Accept": "image/png"})
    assert refused.status_code == 406 and "application/x-votable+xml" in refused.text


def test_votable_fields_carry_ucds_units_and_the_next_cursor(
        world: tuple[TestClient, list[dict[str, Any]], str]) -> None:
    from astropy.io.votable import parse

    client, _, _ = world
    response = client.get("/api/v1/alerts", params={"format": "votable", "limit": 5,
                                                    "count": "true"})
    votable = parse(io.BytesIO(response.content))
    resource = votable.resources[0]
    infos = {i.name: i.value for i in resource.infos}
    assert infos["QUERY_STATUS"] == "OK" and infos["next"] and int(infos["total"]) > 5
    fields = {f.name: f for f in resource.tables[0].fields}
    assert fields["ra_deg"].ucd == "pos.eq.ra;meta.main" and str(fields["ra_deg"].unit) == "deg"
    assert fields["ivorn"].ucd == "meta.id;meta.main"
    assert fields["event_time"].xtype == "timestamp"
    assert str(fields["energy_gev"].unit) == "GeV"
    following = client.get("/api/v1/alerts", params={"format": "votable", "limit": 5,
                                                     "count": "true", "cursor": infos["next"]})
    assert following.status_code == 200
    assert following.content != response.content
    assert response.headers["link"] == (
        f'<http://testserver/api/v1/alerts?format=votable&limit=5&count=true'
        f'&cursor={infos["next"]}>; rel="next"')


def test_alert_detail_raw_and_image(world: tuple[TestClient, list[dict[str, Any]], str]
                                    ) -> None:
    client, docs, _ = world
    public = next(d for d in docs if d["data_rights"]["level"] == "public")
    path = "/api/v1/alerts/" + quote(public["id"], safe="")
    detail = client.get(path).json()
    assert detail["alert"] == public
    assert detail["receipt"]["raw_sha256"] == public["raw_sha256"]
    raw = client.get(path + "/raw")
    assert raw.status_code == 200 and json.loads(raw.content)["event_id"] == public["event_id"]
    png = client.get(path + "/skymap.png")
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG\r\n\x1a\n")
    assert client.get(path + "/skymap").status_code == 404  # a point alert has no map
    assert client.get(path + "/provenance").status_code == 404
    missing = client.get("/api/v1/alerts/" + quote("ivo://q.mmbroker/x#nothing", safe=""))
    assert missing.status_code == 404


# -- data rights, as a property over every route and format ---------------------------------


def _bodies(client: TestClient, headers: dict[str, str], docs: list[dict[str, Any]]
            ) -> Iterator[tuple[str, int, bytes]]:
    """(what, status, body) of every route that could reveal an alert."""
    for fmt in ("json", "csv", "votable"):
        for params in ({}, {"count": "true", "data_rights": ["embargoed", "proprietary"]},
                       {"ra": 0.0, "dec": 0.0, "radius": 180.0, "count": "true"}):
            r = client.get("/api/v1/alerts", params={**params, "format": fmt, "limit": 1000},
                           headers=headers)
            yield f"alerts {fmt} {params}", r.status_code, r.content
        for route in ("/api/v1/coincidences", "/api/v1/voevents"):
            r = client.get(route, params={"format": fmt, "count": "true"}, headers=headers)
            yield f"{route} {fmt}", r.status_code, r.content
    for doc in docs:
        loc = doc["localization"]
        r = client.get("/scs", params={"RA": loc["ra_deg"], "DEC": loc["dec_deg"],
                                       "SR": 0.5, "VERB": 3}, headers=headers)
        yield "scs", r.status_code, r.content
        path = "/api/v1/alerts/" + quote(doc["id"], safe="")
        for suffix in ("", "/raw", "/skymap.png", "/skymap", "/provenance"):
            r = client.get(path + suffix, headers=headers)
            yield f"detail{suffix}", r.status_code, r.content
        r = client.get("/api/v1/voevents/" + quote(doc["id"], safe=""), headers=headers)
        yield "voevent", r.status_code, r.content


@pytest.mark.timeout(300)
def test_no_caller_ever_sees_what_its_scopes_hide(tmp_path: Any) -> None:
    archive = Archive.open(f"sqlite:///{tmp_path / 'rights.sqlite3'}")
    tokens = {frozenset(s): create_token(archive, "t", sorted(s))[0]
              for s in ({"write:triggers"}, {"ack"}, {"read:embargoed"},
                        {"read:proprietary"})}
    app = create_app(get_settings(api_rate_limit_per_s=0), archive=archive)
    rights = st.sampled_from([{"level": "public"}, {"level": "proprietary"},
                              {"level": "embargoed", "embargo_until": FUTURE},
                              {"level": "embargoed", "embargo_until": PAST}])
    archived: list[dict[str, Any]] = []
    counter = iter(range(10**6))

    @settings(max_examples=8, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(rights, min_size=1, max_size=4), st.integers(0, 2**31))
    def check(levels: list[dict[str, Any]], seed: int) -> None:
        batch = next(counter)
        docs = alert_documents(len(levels), seed=seed % 10_000, start=T0, span_s=86400,
                               prefix=f"secret{batch}x")
        for doc, level in zip(docs, levels, strict=True):
            doc["data_rights"] = level
        archived.extend(_archive_docs(archive, docs))
        with TestClient(app) as client:
            for scopes, token in [(frozenset(), None), *tokens.items()]:
                hidden = [d for d in archived if not _visible(d, set(scopes))]
                shown = [d for d in archived if _visible(d, set(scopes))]
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                for what, status, body in _bodies(client, headers, archived):
                    assert status in (200, 404), (what, status, body[:300])
                    for doc in hidden:
                        if what.startswith(("detail", "voevent")) and status == 404:
                            continue  # the 404 names only what the caller asked for
                        assert doc["event_id"].encode() not in body, (scopes, what)
                    if what == "alerts json {}":
                        ids = {i["id"] for i in json.loads(body)["items"]}
                        assert ids == {d["id"] for d in shown}
                counted = client.get("/api/v1/alerts", params={"count": "true", "limit": 1},
                                     headers=headers)
                assert counted.json()["total"] == len(shown)
                assert counted.headers["x-total-count"] == str(len(shown))
                for doc in hidden:
                    path = "/api/v1/alerts/" + quote(doc["id"], safe="")
                    unknown = "/api/v1/alerts/" + quote(doc["id"] + "zz", safe="")
                    a, b = (client.get(p, headers=headers) for p in (path, unknown))
                    assert a.status_code == b.status_code == 404
                    assert a.json()["detail"].removeprefix("no alert ") == doc["id"]

    check()
    archive.close()


# -- rate limits ---------------------------------------------------------------------------


def test_rate_limits_answer_429_per_caller(tmp_path: Any) -> None:
    archive = Archive.open(f"sqlite:///{tmp_path / 'rl.sqlite3'}")
    token, _ = create_token(archive, "t", ["read:embargoed"])
    settings = get_settings(api_rate_limit_per_s=0.5, api_rate_limit_burst=3)
    with TestClient(create_app(settings, archive=archive)) as client:
        codes = [client.get("/api/v1/alerts").status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        limited = client.get("/api/v1/alerts")
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        assert "rate limit" in limited.json()["detail"]
        scs = client.get("/scs", params={"RA": 1, "DEC": 1, "SR": 1})
        assert scs.status_code == 429 and b'value="ERROR"' in scs.content
        # A token has its own bucket, apart from the anonymous address's.
        authed = [client.get("/api/v1/alerts", headers={"Authorization": f"Bearer {token}"})
                  .status_code for _ in range(3)]
        assert authed == [200, 200, 200]
    archive.close()


def test_rate_limiter_refills_at_its_rate() -> None:
    from broker.web.ratelimit import RateLimiter

    now = [0.0]
    limiter = RateLimiter(2.0, 2, clock=lambda: now[0])
    assert [limiter.retry_after_s("a") for _ in range(2)] == [None, None]
    assert limiter.retry_after_s("a") == pytest.approx(0.5)
    assert limiter.retry_after_s("b") is None
    now[0] += 0.5
    assert limiter.retry_after_s("a") is None
    assert RateLimiter(0, 1).retry_after_s("a") is None


def test_embargo_ends_by_itself(archive: Archive) -> None:
    soon = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    (doc,) = _archive_docs(archive, [{**_documents(1, seed=3, prefix="e", rights=False)[0],
                                      "data_rights": {"level": "embargoed",
                                                      "embargo_until": soon}}])
    from broker.archive import query as q
    from broker.archive.db import transaction

    with transaction(archive.engine, readonly=True) as conn:
        def shown(now: datetime) -> list[str]:
            page = q.search_alerts(conn, q.AlertQuery(), q.ANONYMOUS, now=now)
            return [r.ivorn for r in page.rows]
        # Explicit clocks: the second before the release, and the release itself.
        assert shown(_time(soon) - timedelta(seconds=1)) == []
        assert shown(_time(soon)) == [doc["id"]]


# -- coincidences and VOEvents, from the demo's real wire formats ---------------------------


@pytest.fixture
def demo(archive: Archive, tmp_path: Any) -> Iterator[tuple[TestClient, Archive, str]]:
    """The demo scenario through the real pipeline (3 alerts, 3 coincidences, VOEvents)."""
    settings = get_settings(api_rate_limit_per_s=0, comet=False)
    # The detector trigger is embargoed: what it takes part in is hidden from the public.
    ingest_demo(archive, embargoed_until=FUTURE)
    admin, _ = create_token(archive, "admin", ["admin"])
    with TestClient(create_app(settings, archive=archive)) as client:
        yield client, archive, admin


def test_coincidence_and_voevent_filters(demo: tuple[TestClient, Archive, str]) -> None:
    client, archive, admin = demo
    auth = {"Authorization": f"Bearer {admin}"}
    coincidences, total = _all(client, "/api/v1/coincidences", {}, admin)
    assert total == len(coincidences) >= 3
    trigger = next(a for a in archive.list_alerts(AlertQuery())
                   if a["source"] == "detector")
    with_trigger = [c for c in coincidences
                    if any(m["alert_id"] == trigger["id"] for m in c["members"])]
    assert with_trigger
    public, _ = _all(client, "/api/v1/coincidences", {})
    assert {c["id"] for c in public} == {c["id"] for c in coincidences} - {
        c["id"] for c in with_trigger}
    for params, keep in [
            ({"messenger": "neutrino"}, lambda c: any(m["messenger"] == "neutrino"
                                                      for m in c["members"])),
            ({"member": trigger["id"]}, lambda c: c in with_trigger),
            ({"pairing": coincidences[0]["pairing"]},
             lambda c: c["pairing"] == coincidences[0]["pairing"]),
            ({"config_hash": coincidences[0]["config_hash"], "state": "new"},
             lambda c: c["config_hash"] == coincidences[0]["config_hash"]
             and c["state"] == "new"),
            ({"far_max": 1e-30}, lambda c: False),
            ({"ra": 196.0, "dec": -22.0, "radius": 10.0}, lambda c: True)]:
        got, _ = _all(client, "/api/v1/coincidences", params, admin)
        assert sorted(c["id"] for c in got) == sorted(c["id"] for c in coincidences
                                                      if keep(c)), params
    detail = client.get("/api/v1/coincidences/" + quote(with_trigger[0]["id"], safe=""),
                        headers=auth)
    assert detail.status_code == 200 and "provenance" in detail.json()["links"]
    hidden = client.get("/api/v1/coincidences/" + quote(with_trigger[0]["id"], safe=""))
    assert hidden.status_code == 404
    png = client.get("/api/v1/coincidences/" + quote(coincidences[0]["id"], safe="")
                     + "/skymap.png", headers=auth)
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    prov = client.get("/api/v1/coincidences/" + quote(coincidences[0]["id"], safe="")
                      + "/provenance", params={"format": "provn"}, headers=auth)
    assert prov.status_code == 200 and b"document" in prov.content

    voevents, _ = _all(client, "/api/v1/voevents", {}, admin)
    by_ivorn = {v["ivorn"]: v for v in voevents}
    assert trigger["id"] in by_ivorn and by_ivorn[trigger["id"]]["kind"] == "alert"
    anonymous, _ = _all(client, "/api/v1/voevents", {})
    assert trigger["id"] not in {v["ivorn"] for v in anonymous}
    assert client.get("/api/v1/voevents/" + quote(trigger["id"], safe="")).status_code == 404
    coinc_ivorn = coincidences[-1]["id"]
    cited = {c["ivorn"] for c in by_ivorn[coinc_ivorn]["citations"]}
    assert cited >= {m["alert_id"] for m in coincidences[-1]["members"]}  # as followup
    for params, keep in [
            ({"kind": "coincidence"}, lambda v: v["kind"] == "coincidence"),
            ({"ref_exact": trigger["id"]},
             lambda v: trigger["id"] in {c["ivorn"] for c in v["citations"]}),
            ({"ref_any": "false"}, lambda v: not v["citations"]),
            ({"cited_by": coinc_ivorn}, lambda v: v["ivorn"] in cited),
            ({"cited": "true"}, lambda v: any(v["ivorn"] in {c["ivorn"] for c in w["citations"]}
                                              for w in voevents)),
            ({"ivorn_prefix": "ivo://local.mmbroker/coincidence"},
             lambda v: v["ivorn"].startswith("ivo://local.mmbroker/coincidence")),
            ({"stream": "local.mmbroker/coincidence"},
             lambda v: v["ivorn"].startswith("ivo://local.mmbroker/coincidence#"))]:
        got, _ = _all(client, "/api/v1/voevents", params, admin)
        assert sorted(v["ivorn"] for v in got) == sorted(
            v["ivorn"] for v in voevents if keep(v)), params
    for v in voevents:  # the citations table holds what the bytes as sent say
        from broker.publish.voevent_build import citations_of

        xml = client.get("/api/v1/voevents/" + quote(v["ivorn"], safe=""), headers=auth)
        assert sorted((c["ivorn"], c["cite"]) for c in v["citations"]) == sorted(
            citations_of(xml.content))


def test_skymap_credible_region_filter(demo: tuple[TestClient, Archive, str]) -> None:
    from crossmatch.localization import SkyMap

    client, archive, admin = demo
    _archive_docs(archive, _documents(200, seed=5, prefix="r", rights=False))
    gw = next(a for a in archive.list_alerts(AlertQuery())
              if a["messenger"] == "gravitational_wave")
    sha = gw["localization"]["skymap_sha256"]
    sky = SkyMap.from_fits(archive.skymap(sha) or b"")
    every = archive.list_alerts(AlertQuery(limit=10_000))
    for level in (0.5, 0.9, 0.999):
        expected = sorted(
            a["id"] for a in every if a["localization"].get("ra_deg") is not None
            and a["localization"]["kind"] != "skymap"
            and sky.credible_level_at(a["localization"]["ra_deg"],
                                      a["localization"]["dec_deg"]) < level)
        got, total = _all(client, "/api/v1/alerts", {"skymap": sha, "level": level}, admin)
        got_ids = sorted(a["id"] for a in got if a["localization"]["kind"] != "skymap")
        assert got_ids == expected and total == len(got)
    assert any(a["source"] == "detector" for a in got)  # the trigger lies inside the map


# -- IVOA Simple Cone Search, read by pyvo from a live server ------------------------------


@pytest.mark.timeout(120)
def test_pyvo_cone_search_of_a_live_server(archive: Archive) -> None:
    import pyvo
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    from tests.servers import live_app

    docs = _archive_docs(archive, _documents(200, seed=21, prefix="s", rights=False))
    app = create_app(get_settings(api_rate_limit_per_s=0), archive=archive)
    with live_app(app) as base:
        service = pyvo.dal.SCSService(base + "/scs")
        for ra, dec, radius in ((10.0, 20.0, 30.0), (250.0, -60.0, 15.0), (0.0, 90.0, 5.0)):
            result = service.search(pos=SkyCoord(ra * u.deg, dec * u.deg), radius=radius)
            table = result.to_table()
            expected = sorted(d["id"] for d in docs if _in_cone(d, ra, dec, radius))
            assert sorted(table["ivorn"]) == expected
            assert str(table["ra_deg"].unit) == "deg"
            by_id = {d["id"]: d for d in docs}
            for rec in result:  # SCS 1.03 as pyvo reads it: the UCD1 columns
                assert rec.id in by_id
                loc = by_id[rec.id]["localization"]
                assert rec.pos.ra.deg == pytest.approx(loc["ra_deg"])
                assert rec.pos.dec.deg == pytest.approx(loc["dec_deg"])
        query = service.create_query(pos=SkyCoord(0 * u.deg, 0 * u.deg), radius=180)
        query["MAXREC"] = 5  # DALI's MAXREC; SCS 1.03 clients do not send it
        assert len(query.execute()) == 5
        import urllib.request

        with urllib.request.urlopen(base + "/scs?RA=0&DEC=0&SR=180&MAXREC=5", timeout=10) as r:
            assert b'name="QUERY_STATUS" value="OVERFLOW"' in r.read()
        verbose = service.search(pos=SkyCoord(10 * u.deg, 20 * u.deg), radius=30, verbosity=3)
        assert "raw_sha256" in verbose.to_table().colnames
        with pytest.raises(pyvo.dal.DALQueryError, match="radius 500"):
            service.search(pos=SkyCoord(10 * u.deg, 20 * u.deg), radius=500)

        with urllib.request.urlopen(base + "/scs/capabilities", timeout=10) as r:
            capabilities = r.read()
        assert b"ivo://ivoa.net/std/ConeSearch" in capabilities and base.encode() in capabilities
        with urllib.request.urlopen(base + "/scs/availability", timeout=10) as r:
            assert b"<vosi:available>true</vosi:available>" in r.read()


def test_a_misspelt_filter_is_refused_not_ignored(
        world: tuple[TestClient, list[dict[str, Any]], str]) -> None:
    client, _, _ = world
    for route in ("/api/v1/alerts", "/api/v1/coincidences", "/api/v1/voevents"):
        response = client.get(route, params={"messanger": "neutrino"})
        assert response.status_code == 400 and "messanger" in response.json()["detail"]
    assert client.get("/api/v1/alerts", params={"messenger": "neutrino", "ra": 1, "dec": 1,
                                                "radius": 1, "level": 0.9, "cursor": None,
                                                "count": "true", "format": "csv"}
                      ).status_code == 200


def test_the_python_client_knows_every_filter_of_every_list() -> None:
    """A filter added to a route and not to mmbroker_client would be refused by the client
    (TypeError); one the client sends that no route takes would be a 400."""
    import mmbroker_client as client

    from broker.web.query_api import router

    lists = {"/api/v1/alerts": client.ALERT_FILTERS,
             "/api/v1/coincidences": client.COINCIDENCE_FILTERS,
             "/api/v1/voevents": client.VOEVENT_FILTERS}
    seen = set()
    for route in router.routes:
        if getattr(route, "path", None) in lists:
            seen.add(route.path)
            taken = set()
            stack = [route.dependant]  # type: ignore[attr-defined]
            while stack:
                node = stack.pop()
                taken.update(p.alias for p in node.query_params)
                stack.extend(node.dependencies)
            assert set(lists[route.path]) == taken - {"limit", "cursor", "count", "format"}, \
                route.path
    assert seen == set(lists)  # every list was checked (a renamed route must not slip by)


def test_the_live_feed_rule_and_the_sql_rule_see_the_same_rows(archive: Archive) -> None:
    """``Viewer.may_see`` (the live feed, rows in memory) and ``alert_visible`` (every SQL
    read) are one rule written twice: every rights level x embargo end x scope agrees."""
    from itertools import product

    from sqlalchemy import insert, select

    from broker.archive import query as q
    from broker.archive.db import transaction
    from broker.archive.models import AlertRow

    ingest_demo(archive)
    now = datetime.now(UTC)
    ends = {"none": None, "past": now - timedelta(hours=1), "future": now + timedelta(hours=1)}
    with transaction(archive.engine) as conn:
        template = dict(conn.execute(select(AlertRow.__table__).limit(1)).one()._mapping)
        template.pop("id")
        cases = {}
        for rights, end in product(("public", "embargoed", "proprietary"), ends):
            ivorn = f"{template['ivorn']}-{rights}-{end}"
            row_id = conn.execute(insert(AlertRow.__table__).values(
                {**template, "ivorn": ivorn, "event_id": ivorn, "match_seq": None,
                 "data_rights": rights, "embargo_until": ends[end]})).inserted_primary_key[0]
            cases[row_id] = (rights, ends[end])
    for scopes in ((), ("read:embargoed",), ("read:proprietary",), ("admin",),
                   ("read:embargoed", "read:proprietary")):
        viewer = q.Viewer(frozenset(scopes))
        with transaction(archive.engine, readonly=True) as conn:
            by_sql = set(conn.execute(select(AlertRow.id).where(
                AlertRow.id.in_(cases), q.alert_visible(viewer, now))).scalars())
        by_feed = {i for i, (rights, end) in cases.items() if viewer.may_see(rights, end, now)}
        assert by_sql == by_feed, scopes
        if scopes == ("admin",):
            assert by_sql == set(cases)
        if not scopes:  # anyone: every public row, not every row
            assert {i for i, (rights, _) in cases.items() if rights == "public"} \
                <= by_sql < set(cases)


# -- issue 14 item 7: bad parameters are 4xx, the same on every backend ----------------------


def _get(url: str) -> tuple[int, str]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.mark.timeout(120)
def test_bad_parameters_are_400_on_every_backend(archive: Archive) -> None:
    """A cursor past a signed 64-bit row id, a NUL (or any control character) in a filter
    or a path, a time that leaves the calendar when put in UTC: 400 with a reason, on
    SQLite as on PostgreSQL (was 500 on one, silently ignored or 400 on the other)."""
    import base64

    from tests.servers import live_app

    _archive_docs(archive, _documents(30, seed=5, prefix="bad", rights=False))
    app = create_app(get_settings(api_rate_limit_per_s=0), archive=archive)
    with live_app(app) as base:
        status, body = _get(base + "/api/v1/alerts?limit=5")
        assert status == 200
        cursor = json.loads(body)["next"]
        sealer = _cursor_sealer(archive)
        fingerprint, when, _ = json.loads(sealer.open(cursor) or b"")
        forgeries = [sealer.seal(json.dumps([fingerprint, when, row_id]).encode()).rstrip("=")
                     for row_id in (2**63, 2**64 + 5, -1)]  # as if the key had leaked
        forgeries += [base64.urlsafe_b64encode(json.dumps([fingerprint, when, 2**63]).encode())
                      .decode().rstrip("="),  # the old clear-text form
                      cursor[:-2] + ("AA" if cursor[-2:] != "AA" else "BB")]  # altered
        for forged in forgeries:
            status, body = _get(f"{base}/api/v1/alerts?limit=5&cursor={forged}")
            assert status == 400, (forged, body)
            assert "not a cursor this API issued" in json.loads(body)["detail"]
        cases = {
            "/api/v1/alerts?source=gcn%00x": "U+0000",
            "/api/v1/alerts?facility=%01": "U+0001",
            "/api/v1/alerts?event_id=a%00": "U+0000",
            "/api/v1/alerts?ivorn_contains=%00": "U+0000",
            "/api/v1/coincidences?ivorn_prefix=ivo%00": "U+0000",
            "/api/v1/voevents?ref_contains=%00": "U+0000",
            "/api/v1/alerts/ivo%3A%2F%2Fx%23y%00": "U+0000",
            "/api/v1/voevents/ivo%3A%2F%2Fx%00": "U+0000",
        }
        for path, char in cases.items():
            status, body = _get(base + path)
            assert status == 400, (path, status, body)
            assert char in json.loads(body)["detail"] and "control character" in body
        status, body = _get(base + "/scs?RA=1&DEC=1&SR=1&x=%00")
        assert status == 400 and 'value="ERROR"' in body  # a VOTable, as SCS clients expect
        status, body = _get(base + "/api/v1/alerts?since=0001-01-01T00:00:00%2B01:00")
        assert status == 400 and "outside the years" in json.loads(body)["detail"]


def _cursor_sealer(archive: Archive) -> Any:
    from broker.archive.sealing import archive_sealer

    with archive.engine.connect() as conn:
        return archive_sealer(conn, "cursor")


def test_cursors_reveal_no_row_ids_and_open_in_every_process(archive: Archive,
                                                             db_url: str) -> None:
    """Issue 14 item 4: a cursor held the last row's database id in clear (base64 JSON),
    so an anonymous caller paging one row at a time counted the hidden rows between two
    public ones.  Cursors are now sealed with the archive's own key: they decode to
    nothing, differ each time, and a second API process on the same archive (another
    replica) continues the pages the first one began."""
    import base64
    import binascii

    docs = _documents(16, seed=11, prefix="gap", rights=True)
    _archive_docs(archive, docs)
    other = Archive.open(db_url)
    try:
        apps = [create_app(get_settings(api_rate_limit_per_s=0), archive=a)
                for a in (archive, other)]
        with TestClient(apps[0]) as first, TestClient(apps[1]) as second:
            visible = [a["id"] for a in first.get("/api/v1/alerts",
                                                   params={"limit": 100}).json()["items"]]
            assert 2 <= len(visible) < len(docs)  # some hidden rows lie between
            seen, cursor, turn = [], None, 0
            while True:
                client = (first, second)[turn % 2]
                reply = client.get("/api/v1/alerts", params={
                    "limit": 1, **({"cursor": cursor} if cursor else {})})
                assert reply.status_code == 200, reply.text
                seen += [a["id"] for a in reply.json()["items"]]
                cursor, turn = reply.json()["next"], turn + 1
                if cursor is None:
                    break
                raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
                with pytest.raises((ValueError, UnicodeDecodeError, binascii.Error)):
                    json.loads(raw)  # no JSON, no row id, in clear
                again = first.get("/api/v1/alerts", params={"limit": len(seen)}).json()["next"]
                assert again != cursor  # a fresh nonce each time: nothing to compare
            assert seen == visible
    finally:
        other.close()


def test_citation_filters_count_only_voevents_the_caller_may_see(archive: Archive) -> None:
    """A public trigger, then its revision embargoed until 2099: the revision's VOEvent
    cites the first one's.  `cited=true` and `cited_by` told an anonymous caller that a
    hidden revision exists (the public VOEvent listed as cited); now only citers the
    caller may see count, and a read:embargoed caller still finds the citation."""
    from broker import demo
    from broker.runtime.assembly import make_pipeline

    pipeline = make_pipeline(get_settings(comet=False), archive, targets=[])
    _, raw, _ = demo.scenario_messages()[0]
    trigger = json.loads(raw.data)
    trigger["event_id"] = "I14-CITED"
    ivorns = []
    for revision, rights in ((0, None), (1, {"level": "embargoed",
                                             "embargo_until": "2099-01-01T00:00:00Z"})):
        body = {**trigger, "revision": revision}
        if rights:
            body["data_rights"] = rights
        (outcome,) = pipeline.ingest([RawMessage(raw.source, json.dumps(body).encode())])
        ivorns.append(outcome.ivorn)
    first, hidden = ivorns
    token, _ = create_token(archive, "bob", ["read:embargoed"])
    bob = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(get_settings(api_rate_limit_per_s=0, comet=False),
                               archive=archive)) as client:
        def found(params: dict[str, str], headers: dict[str, str] | None = None) -> list[str]:
            reply = client.get("/api/v1/voevents", params={**params, "count": "true"},
                               headers=headers or {})
            assert reply.status_code == 200, reply.text
            assert reply.json()["total"] == len(reply.json()["items"])
            return [v["ivorn"] for v in reply.json()["items"]]

        cites = client.get(f"/api/v1/voevents/{quote(hidden, safe='')}", headers=bob)
        assert cites.status_code == 200 and first.encode() in cites.content
        assert found({"cited": "true"}, bob) == [first]
        assert found({"cited_by": hidden}, bob) == [first]
        assert found({"cited": "true"}) == []
        assert found({"cited_by": hidden}) == []
        assert found({"cited": "false"}) == [first]


def test_every_votable_is_clean_to_astropy(
        world: tuple[TestClient, list[dict[str, Any]], str]) -> None:
    """Each VOTable we answer parses with astropy's strictest check: no W06 (UCD) or other
    warning, which TOPCAT and pyvo users would otherwise see."""
    import io

    from astropy.io.votable import parse

    client, _, _ = world
    paths = ["/api/v1/alerts?format=votable", "/api/v1/coincidences?format=votable",
             "/api/v1/voevents?format=votable", "/scs?RA=197&DEC=-23&SR=180&VERB=1",
             "/scs?RA=197&DEC=-23&SR=180", "/scs?RA=197&DEC=-23&SR=180&VERB=3",
             "/scs?RA=197&DEC=-23&SR=500"]
    for path in paths:
        body = client.get(path).content
        assert b"<VOTABLE" in body, path
        parse(io.BytesIO(body), verify="exception")  # raises on the first warning
