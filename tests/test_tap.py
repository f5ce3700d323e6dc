"""TAP 1.1 at /tap on SQLite and PostgreSQL: ADQL, ObsCore, TAP_SCHEMA, VOSI, data rights.

Expected answers are computed here in Python from the archived documents, or
taken from the REST API for the same question, independently of the SQL the
ADQL becomes.  A live server is read by pyvo, and by STILTS taplint when
``stilts`` is installed (``MMBROKER_REQUIRE_STILTS=1`` makes its absence a failure).
"""

from __future__ import annotations

import io
import math
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io.votable import parse_single_table
from astropy.time import Time
from fastapi.testclient import TestClient

from broker.archive.store import Archive
from broker.config import get_settings
from broker.web.app import create_app
from broker.web.tap.schema import TABLES
from broker.web.tokens import create_token
from tests.conftest import ingest_demo
from tests.test_query_api import FUTURE, _all, _archive_docs, _documents, _in_cone, _visible

World = tuple[TestClient, list[dict[str, Any]], str]


@pytest.fixture
def world(archive: Archive) -> Iterator[World]:
    """A client of an app over 150 synthetic alerts with mixed data rights, and an admin
    token."""
    docs = _archive_docs(archive, _documents(150, seed=7, prefix="w"))
    admin, _ = create_token(archive, "admin", ["admin"])
    with TestClient(create_app(get_settings(api_rate_limit_per_s=0), archive=archive)) as c:
        yield c, docs, admin


def _tap(client: TestClient, query: str, token: str | None = None, **params: Any) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = client.post("/tap/sync", data={"LANG": "ADQL", "QUERY": query, **params},
                           headers=headers)
    assert response.status_code == 200, response.text
    return parse_single_table(io.BytesIO(response.content)).to_table()


def _refused(client: TestClient, query: str, status: int = 400, **params: Any) -> str:
    response = client.get("/tap/sync", params={"LANG": "ADQL", "QUERY": query, **params})
    assert response.status_code == status, (query, response.text)
    assert b'name="QUERY_STATUS" value="ERROR"' in response.content
    return response.text


def _mjd(text: str) -> float:
    return float(Time(text.replace("Z", ""), scale="utc").mjd)


def test_obscore_rows_are_the_alerts_the_caller_may_see(world: World) -> None:
    client, docs, admin = world
    table = _tap(client, "SELECT obs_id, data_rights FROM ivoa.obscore")
    assert sorted(table["obs_id"]) == sorted(d["id"] for d in docs if _visible(d, set()))
    assert sorted(_tap(client, "SELECT * FROM ivoa.obscore", admin)["obs_id"]) == \
        sorted(d["id"] for d in docs)
    embargoed = [d for d in docs if d["data_rights"]["level"] == "embargoed"
                 and d["data_rights"]["embargo_until"] == FUTURE]
    assert embargoed
    reader, _ = create_token(client.app.state.archive, "reader", ["read:embargoed"])
    for doc in embargoed[:3]:
        query = f"SELECT obs_id FROM ivoa.obscore WHERE obs_id = '{doc['id']}'"
        assert len(_tap(client, query)) == 0  # anonymous: not in the table at all
        assert list(_tap(client, query, reader)["obs_id"]) == [doc["id"]]
    count = "SELECT COUNT(*) AS n FROM ivoa.obscore"
    assert _tap(client, count, reader)["n"][0] == \
        sum(_visible(d, {"read:embargoed"}) for d in docs)


def test_obscore_columns_hold_the_alert(world: World) -> None:
    client, docs, admin = world
    by_id = {d["id"]: d for d in docs}
    table = _tap(client, "SELECT * FROM ivoa.obscore", admin)
    assert [c for c in table.colnames] == [c.name for c in TABLES[0].columns]
    assert str(table["s_ra"].unit) == "deg" and str(table["t_min"].unit) == "d"
    assert table["s_ra"].meta.get("ucd", table["s_ra"].meta) is not None
    for row in table:
        doc = by_id[row["obs_id"]]
        loc = doc["localization"]
        assert row["dataproduct_type"] == "event" and row["obs_publisher_did"] == doc["id"]
        assert row["obs_collection"] == doc["source"]
        assert row["facility_name"] == doc["facility"]
        assert row["messenger"] == doc["messenger"]
        error_s = doc.get("trigger_time_error_s") or 0.0
        assert (row["t_min"] + row["t_max"]) / 2 == pytest.approx(
            _mjd(doc["trigger_time"]), abs=1e-8)  # ~1 ms
        assert (row["t_max"] - row["t_min"]) * 86400 == pytest.approx(2 * error_s, abs=1e-3)
        if loc.get("ra_deg") is not None:
            assert row["s_ra"] == pytest.approx(loc["ra_deg"])
            assert row["s_region"].split()[:2] in (["CIRCLE", "ICRS"], ["POSITION", "ICRS"])
        if loc.get("error_radius_deg") is not None:
            assert row["s_resolution"] == pytest.approx(loc["error_radius_deg"] * 3600)
        assert row["pipeline"] == doc["provenance"]["pipeline"]
        assert row["data_rights"] == doc["data_rights"]["level"]
        energy = doc.get("energy") or {}
        if doc["messenger"] in ("gamma_ray", "x_ray", "optical") and energy.get("max_gev"):
            assert row["em_min"] == pytest.approx(1.239841984e-15 / energy["max_gev"])
        if doc["messenger"] == "neutrino":
            assert np.ma.is_masked(row["em_min"])


def test_cone_time_and_provenance_are_the_rest_answer(world: World) -> None:
    client, docs, admin = world
    for ra, dec, radius in ((10.0, 20.0, 30.0), (250.0, -60.0, 15.0), (0.0, 90.0, 5.0),
                            (359.5, 0.0, 40.0)):
        since, until = "2026-06-05T00:00:00Z", "2026-06-20T00:00:00Z"
        rest, _ = _all(client, "/api/v1/alerts", {"ra": ra, "dec": dec, "radius": radius,
                                                  "since": since, "until": until,
                                                  "pipeline": "alpha"}, admin)
        query = (f"SELECT obs_id FROM ivoa.obscore WHERE CONTAINS(POINT('ICRS', s_ra, s_dec), "
                 f"CIRCLE('ICRS', {ra}, {dec}, {radius})) = 1 AND (t_min + t_max) / 2 "
                 f"BETWEEN {_mjd(since)} AND {_mjd(until)} AND pipeline = 'alpha'")
        got = sorted(_tap(client, query, admin)["obs_id"])
        assert got == sorted(a["id"] for a in rest)
        cone = sorted(_tap(client, "SELECT obs_id FROM ivoa.obscore WHERE 1 = CONTAINS("
                                   f"POINT('ICRS', s_ra, s_dec), CIRCLE('ICRS', {ra}, {dec}, "
                                   f"{radius}))", admin)["obs_id"])
        assert cone == sorted(d["id"] for d in docs if _in_cone(d, ra, dec, radius))
        outside = _tap(client, "SELECT obs_id FROM ivoa.obscore WHERE CONTAINS(POINT('ICRS', "
                               f"s_ra, s_dec), CIRCLE('ICRS', {ra}, {dec}, {radius})) = 0",
                       admin)
        assert sorted(outside["obs_id"]) == sorted(
            d["id"] for d in docs if d["localization"].get("ra_deg") is not None
            and not _in_cone(d, ra, dec, radius))
    distance = _tap(client, "SELECT obs_id, DISTANCE(POINT('ICRS', s_ra, s_dec), "
                            "POINT('ICRS', 10, 20)) AS d FROM ivoa.obscore "
                            "WHERE s_ra IS NOT NULL", admin)
    by_id = {d["id"]: d for d in docs}
    from crossmatch.healpix import angular_separation_deg

    for row in distance:
        loc = by_id[row["obs_id"]]["localization"]
        assert row["d"] == pytest.approx(
            angular_separation_deg(10, 20, loc["ra_deg"], loc["dec_deg"]), abs=1e-9)


def _unit(ra: float, dec: float) -> np.ndarray:
    r, d = math.radians(ra), math.radians(dec)
    return np.array([math.cos(d) * math.cos(r), math.cos(d) * math.sin(r), math.sin(d)])


def test_polygon(world: World) -> None:
    client, docs, admin = world
    vertices = [(0.0, -40.0), (90.0, -40.0), (90.0, 40.0), (0.0, 40.0)]
    for order in (vertices, vertices[::-1]):  # either winding: the smaller region
        flat = ", ".join(f"{a}, {b}" for a, b in order)
        got = _tap(client, "SELECT obs_id FROM ivoa.obscore WHERE CONTAINS(POINT('ICRS', "
                           f"s_ra, s_dec), POLYGON('ICRS', {flat})) = 1", admin)
        corners = [_unit(*v) for v in vertices]
        normals = [np.cross(a, b) for a, b in zip(corners, corners[1:] + corners[:1],
                                                      strict=True)]
        expected = sorted(d["id"] for d in docs if d["localization"].get("ra_deg") is not None
                          and all(np.dot(n, _unit(d["localization"]["ra_deg"],
                                                  d["localization"]["dec_deg"])) >= 0
                                  for n in normals))
        assert expected and sorted(got["obs_id"]) == expected
    _refused(client, "SELECT obs_id FROM ivoa.obscore WHERE CONTAINS(POINT('ICRS', s_ra, "
                     "s_dec), POLYGON('ICRS', 0, 0, 10, 10, 20, 0, 10, 5)) = 1")


def test_top_maxrec_order_and_csv(world: World) -> None:
    client, docs, admin = world
    top = _tap(client, "SELECT TOP 5 obs_id, t_min FROM ivoa.obscore ORDER BY t_min DESC",
               admin)
    newest = sorted(docs, key=lambda d: d["trigger_time"], reverse=True)[:5]
    assert list(top["obs_id"]) == [d["id"] for d in newest]
    response = client.post("/tap/sync", data={"LANG": "ADQL", "MAXREC": "7",
                                              "QUERY": "SELECT obs_id FROM ivoa.obscore"})
    assert response.content.count(b"<TR>") == 7
    assert b'name="QUERY_STATUS" value="OVERFLOW"' in response.content
    response = client.get("/tap/sync", params={"lang": "ADQL", "maxrec": "3", "format": "csv",
                                               "query": "SELECT TOP 2 obs_id, s_ra "
                                                        "FROM ivoa.obscore"})
    assert response.headers["content-type"].startswith("text/csv")
    assert response.text.splitlines()[0] == "obs_id,s_ra" and len(response.text.split()) == 3
    grouped = _tap(client, "SELECT messenger, COUNT(*) AS n FROM ivoa.obscore "
                           "GROUP BY messenger ORDER BY messenger", admin)
    assert dict(zip(grouped["messenger"], grouped["n"], strict=True)) == {
        m: sum(d["messenger"] == m for d in docs) for m in {d["messenger"] for d in docs}}


def test_time_bounds_drop_no_row(archive: Archive) -> None:
    """Bounds on t_min and t_max are also written on the indexed trigger time: whatever
    the time errors (none to three days) and the form of the bound, the rows are those the
    bound on t_min / t_max itself keeps, the boundary row included."""
    docs = _documents(160, seed=5, prefix="tb", rights=False)
    errors = [None, 0.0, 0.4, 3600.0, 3 * 86400.0]
    for i, doc in enumerate(docs):
        doc["trigger_time_error_s"] = errors[i % len(errors)]
    docs = _archive_docs(archive, docs)
    with TestClient(create_app(get_settings(api_rate_limit_per_s=0), archive=archive)) as c:
        every = _tap(c, "SELECT obs_id, s_ra, s_dec, t_min, t_max FROM ivoa.obscore")
        assert len(every) == len(docs)
        ids = [str(i) for i in every["obs_id"]]
        mins, maxs = (np.array(every[c].filled(np.nan), dtype=float) for c in ("t_min", "t_max"))
        t_min, t_max = dict(zip(ids, mins, strict=True)), dict(zip(ids, maxs, strict=True))
        lo, hi = float(np.percentile(mins, 30)), float(np.percentile(maxs, 65))
        edge_id = ids[int(np.argmin(np.abs(mins - lo)))]
        edge = float(t_min[edge_id])  # a row's own t_min as the bound: it must be kept
        cases = {
            f"t_min >= {lo!r}": lambda i: t_min[i] >= lo,
            f"t_min > {lo!r}": lambda i: t_min[i] > lo,
            f"{lo!r} <= t_min": lambda i: t_min[i] >= lo,
            f"t_min >= {edge!r}": lambda i: t_min[i] >= edge,
            f"t_min = {edge!r}": lambda i: t_min[i] == edge,
            f"t_max <= {hi!r}": lambda i: t_max[i] <= hi,
            f"t_max < {hi!r}": lambda i: t_max[i] < hi,
            f"t_min BETWEEN {lo!r} AND {hi!r}": lambda i: lo <= t_min[i] <= hi,
            f"t_max BETWEEN {lo!r} AND {hi!r}": lambda i: lo <= t_max[i] <= hi,
            f"t_min >= {lo!r} AND t_max <= {hi!r}": lambda i: t_min[i] >= lo and t_max[i] <= hi,
            f"t_min <= {lo!r} AND t_max >= {lo!r}": lambda i: t_min[i] <= lo <= t_max[i],
            f"o.t_min > {lo!r} AND -o.t_max > {-hi!r}": lambda i: t_min[i] > lo and
            t_max[i] < hi,
        }
        cones = {"": lambda i: True}
        for ra, dec, radius in ((30.0, -10.0, 40.0), (120.0, 30.0, 3.0)):
            cones[f"CONTAINS(POINT('ICRS', o.s_ra, o.s_dec), CIRCLE('ICRS', {ra}, {dec}, "
                  f"{radius})) = 1 AND "] = (
                lambda i, ra=ra, dec=dec, radius=radius: _in_cone(by_id[i], ra, dec, radius))
        by_id = {d["id"]: d for d in docs}
        for cone, in_cone in cones.items():
            for condition, keep in cases.items():
                query = f"SELECT o.obs_id FROM ivoa.obscore AS o WHERE {cone}{condition}"
                got = sorted(_tap(c, query)["obs_id"])
                assert got == sorted(i for i in by_id if in_cone(i) and keep(i)), query
        assert edge_id in set(_tap(c, f"SELECT obs_id FROM ivoa.obscore WHERE t_min = {edge!r}")
                              ["obs_id"])
    from broker.web.tap.adql import translate

    # The bound is written on the hidden time column; on SQLite, for a cone holding fewer
    # rows than the window, on the one its planner does not walk the time index for.
    day = datetime(2026, 6, 1, tzinfo=UTC)
    span = (1_000_000, day - timedelta(days=365), day)
    small = ("SELECT obs_id FROM ivoa.obscore WHERE CONTAINS(POINT('ICRS', s_ra, s_dec), "
             "CIRCLE('ICRS', 10, 10, 1)) = 1 AND t_min BETWEEN 61000 AND 61100")
    assert "tap_time_ >= '2025-11-20 23:59:59'" in translate(small, "postgresql").sql
    assert "tap_time_scan_ >= '2025-11-20 23:59:59'" in translate(small, "sqlite", span=span).sql
    wide = small.replace("1)) = 1", "60)) = 1").replace("61100", "61000.01")
    assert "obscore.tap_time_ >= " in translate(wide, "sqlite", span=span).sql
    assert "tap_time" not in translate("SELECT obs_id FROM ivoa.obscore WHERE t_min <= 61000 "
                                       "OR t_max >= 61000", "sqlite", span=span).sql


def test_cached_table_sql_is_a_fresh_compile(archive: Archive) -> None:
    """The published tables' SQL is compiled once per kind of caller and dated per query:
    the same text as compiling it afresh for that caller and time."""
    from broker.archive.query import Viewer
    from broker.web.tap import _compile, _cte_sql
    from broker.web.tap.schema import Context

    with archive.engine.connect() as conn:
        for scopes in ((), ("read:embargoed",), ("read:proprietary",), ("admin",),
                       ("ack", "read:embargoed")):
            for now in (datetime.now(UTC), datetime(2031, 7, 8, 9, 10, 11, 120000, UTC)):
                ctx = Context(conn.dialect.name, Viewer(frozenset(scopes)), now,
                              "http://example.org:8000")
                for table in TABLES:
                    fresh = _compile(table.build(ctx), conn.dialect)
                    assert _cte_sql(table, ctx, conn) == fresh
                    assert _cte_sql(table, ctx, conn) == fresh  # and from the cache


HOSTILE = [
    "SELECT * FROM alerts",
    "SELECT token_hash FROM api_tokens",
    "SELECT * FROM main.api_tokens",
    "SELECT * FROM public.alerts",
    "SELECT * FROM tap_ivoa_obscore",
    "SELECT document FROM ivoa.obscore",
    "SELECT tap_hpx29_ FROM ivoa.obscore",
    "SELECT obs_id FROM ivoa.obscore WHERE tap_time_ > '2000-01-01'",
    "SELECT o.tap_time_scan_ FROM ivoa.obscore AS o",
    "SELECT o.tap_hpx29_ FROM ivoa.obscore AS o",
    "SELECT tap_ivoa_obscore.obs_id FROM ivoa.obscore",
    "SELECT obs_id FROM ivoa.obscore; DROP TABLE alerts",
    "DELETE FROM alerts",
    "DROP TABLE alerts",
    "UPDATE alerts SET data_rights = 'public'",
    "INSERT INTO api_tokens VALUES (1)",
    "WITH t AS (SELECT * FROM api_tokens) SELECT * FROM t",
    "SELECT obs_id FROM ivoa.obscore WHERE obs_id IN (SELECT token_hash FROM api_tokens)",
    "SELECT obs_id FROM ivoa.obscore UNION SELECT token_hash FROM api_tokens",
    "SELECT pg_read_file('/etc/passwd') FROM ivoa.obscore",
    "SELECT load_extension('x') FROM ivoa.obscore",
    "SELECT pg_sleep(10) FROM ivoa.obscore",
    "SELECT obs_id INTO newtable FROM ivoa.obscore",
    "SELECT * FROM generate_series(1, 10)",
    "SELECT obs_id FROM ivoa.obscore WHERE CAST(obs_id AS BLOB) = 'x'",
    "SELECT 1",
    "",
    "SELEC obs_id FROM ivoa.obscore",
    "SELECT CONTAINS(POINT('ICRS', s_ra, s_dec), CIRCLE('ICRS', 1, 2, 3)) FROM ivoa.obscore",
    "SELECT obs_id FROM ivoa.obscore WHERE CONTAINS(POINT('GALACTIC', s_ra, s_dec), "
    "CIRCLE('GALACTIC', 1, 2, 3)) = 1",
]


@pytest.mark.parametrize("query", HOSTILE)
def test_hostile_and_bad_queries_are_refused(archive: Archive, query: str) -> None:
    docs = _archive_docs(archive, _documents(5, seed=3, prefix="h"))
    with TestClient(create_app(get_settings(api_rate_limit_per_s=0), archive=archive)) as c:
        _refused(c, query)
        assert len(_tap(c, "SELECT obs_id FROM ivoa.obscore")) == \
            sum(_visible(d, set()) for d in docs)  # nothing was dropped or changed


def test_quoting_keeps_a_string_a_string(world: World) -> None:
    client, _, _ = world
    for text in ("x' OR '1'='1", "%", "a\\", "'; DROP TABLE alerts; --", ":name", "%(x)s"):
        quoted = text.replace("'", "''")
        assert len(_tap(client, f"SELECT obs_id FROM ivoa.obscore WHERE obs_id = '{quoted}'")
                   ) == 0
    assert len(_tap(client, "SELECT obs_id FROM ivoa.obscore WHERE obs_id LIKE 'ivo://%'"))


def test_parameters_and_errors(world: World) -> None:
    client, _, _ = world
    ok = "SELECT TOP 1 obs_id FROM ivoa.obscore"
    assert "LANG" in _refused(client, ok, LANG="")
    assert "SQL" in _refused(client, ok, LANG="SQL")
    assert "RESPONSEFORMAT" in _refused(client, ok, RESPONSEFORMAT="fits")
    assert "MAXREC" in _refused(client, ok, MAXREC="many")
    assert "REQUEST" in _refused(client, ok, REQUEST="getCapabilities")
    assert "unknown column" in _refused(client, "SELECT nope FROM ivoa.obscore")
    assert "unknown table" in _refused(client, "SELECT * FROM ivoa.nope")
    response = client.get("/tap/sync", params={"REQUEST": "doQuery", "LANG": "ADQL",
                                               "QUERY": ok})
    assert response.status_code == 200


def test_tap_schema_and_vosi_describe_every_column(world: World) -> None:
    client, _, _ = world
    tables = _tap(client, "SELECT table_name FROM TAP_SCHEMA.tables")
    assert set(tables["table_name"]) == {t.qualified for t in TABLES}
    columns = _tap(client, "SELECT table_name, column_name, unit, ucd, description, utype "
                           "FROM TAP_SCHEMA.columns WHERE table_name = 'ivoa.obscore'")
    published = {c.name: c for c in TABLES[0].columns}
    assert set(columns["column_name"]) == set(published)
    for row in columns:
        assert row["description"] and row["ucd"] == published[row["column_name"]].ucd
    assert {"obscore:Char.SpatialAxis.Coverage.Location.Coord.Position2D.Value2.C1",
            "obscore:Curation.PublisherDID"} <= set(columns["utype"])
    keys = _tap(client, "SELECT k.from_table, c.from_column, c.target_column FROM "
                        "TAP_SCHEMA.keys AS k JOIN TAP_SCHEMA.key_columns AS c "
                        "ON k.key_id = c.key_id WHERE k.target_table = 'ivoa.obscore'")
    assert list(keys["from_column"]) == ["alert_ivorn"]
    from lxml import etree

    tableset = etree.fromstring(client.get("/tap/tables").content)
    names = tableset.xpath("//table/name/text()")
    assert set(names) == {t.qualified for t in TABLES}
    for column in tableset.xpath("//table[name='ivoa.obscore']/column"):
        name = column.findtext("name")
        assert column.findtext("description") == published[name].description
        assert column.findtext("ucd") == published[name].ucd
        assert column.findtext("unit") == published[name].unit
    one = etree.fromstring(client.get("/tap/tables/mmbroker.coincidences").content)
    assert len(one.xpath("//column")) == len(TABLES[1].columns)
    assert client.get("/tap/tables/nope.nope").status_code == 404
    capabilities = client.get("/tap/capabilities").text
    assert 'standardID="ivo://ivoa.net/std/TAP"' in capabilities
    assert "<form>CONTAINS</form>" in capabilities and "ObsCore-1.1" in capabilities
    assert "<vosi:available>true" in client.get("/tap/availability").text


def test_coincidences_follow_their_members_rights(archive: Archive) -> None:
    ingest_demo(archive, embargoed_until=FUTURE)
    admin, _ = create_token(archive, "admin", ["admin"])
    with TestClient(create_app(get_settings(api_rate_limit_per_s=0), archive=archive)) as c:
        everything = _tap(c, "SELECT c.ivorn, m.alert_ivorn, c.ra, c.dec FROM "
                             "mmbroker.coincidences AS c JOIN mmbroker.coincidence_members "
                             "AS m ON m.coincidence_ivorn = c.ivorn", admin)
        assert len(everything) >= 2
        rest = c.get("/api/v1/coincidences", headers={"Authorization": f"Bearer {admin}"})
        assert set(everything["ivorn"]) == {i["id"] for i in rest.json()["items"]}
        # The neutrino member is embargoed: anonymously no coincidence holding it shows.
        public = _tap(c, "SELECT ivorn FROM mmbroker.coincidences")
        assert set(public["ivorn"]) == {i["id"] for i in
                                        c.get("/api/v1/coincidences").json()["items"]}
        assert len(public) < len(set(everything["ivorn"]))
        members = _tap(c, "SELECT coincidence_ivorn, alert_ivorn "
                          "FROM mmbroker.coincidence_members")
        assert set(members["coincidence_ivorn"]) == set(public["ivorn"])
        visible = set(_tap(c, "SELECT obs_id FROM ivoa.obscore")["obs_id"])
        assert set(members["alert_ivorn"]) <= visible < set(everything["alert_ivorn"]) | \
            set(_tap(c, "SELECT obs_id FROM ivoa.obscore", admin)["obs_id"])
        joined = _tap(c, "SELECT o.obs_id, o.messenger FROM ivoa.obscore AS o JOIN "
                         "mmbroker.coincidence_members AS m ON m.alert_ivorn = o.obs_id", admin)
        assert set(joined["obs_id"]) == set(everything["alert_ivorn"])


# -- a live server: pyvo and taplint ----------------------------------------------------------


@pytest.mark.timeout(300)
def test_pyvo_and_taplint_against_a_live_server(archive: Archive, tmp_path: Path) -> None:
    import pyvo

    from tests.servers import live_app

    docs = _archive_docs(archive, _documents(120, seed=11, prefix="p"))
    admin, _ = create_token(archive, "admin", ["admin"])
    app = create_app(get_settings(api_rate_limit_per_s=0), archive=archive)
    with live_app(app) as base, TestClient(app) as client:
        service = pyvo.dal.TAPService(base + "/tap")
        ra, dec, radius = 30.0, -10.0, 40.0
        since, until = "2026-06-03T00:00:00Z", "2026-06-25T00:00:00Z"
        result = service.search(
            "SELECT obs_id, s_ra, s_dec, t_min, reco_method FROM ivoa.obscore WHERE "
            f"CONTAINS(POINT('ICRS', s_ra, s_dec), CIRCLE('ICRS', {ra}, {dec}, {radius})) = 1 "
            f"AND t_min > {_mjd(since)} AND t_max < {_mjd(until)} "
            "AND reco_method = 'splinempe'")
        rest, _ = _all(client, "/api/v1/alerts", {"ra": ra, "dec": dec, "radius": radius,
                                                  "reco_method": "splinempe"})
        lo, hi = _mjd(since), _mjd(until)
        expected = sorted(
            a["id"] for a in rest
            if _mjd(a["trigger_time"]) - (a.get("trigger_time_error_s") or 0) / 86400 > lo
            and _mjd(a["trigger_time"]) + (a.get("trigger_time_error_s") or 0) / 86400 < hi)
        assert expected and sorted(result.to_table()["obs_id"]) == expected
        assert all(_visible(d, set()) for d in docs if d["id"] in expected)
        assert {t.name for t in service.tables} == {t.qualified for t in TABLES}
        obscore = service.tables["ivoa.obscore"]
        assert all(c.description for c in obscore.columns)
        with pytest.raises(pyvo.dal.DALQueryError, match="unknown table"):
            service.search("SELECT * FROM api_tokens")
        authed = pyvo.dal.TAPService(base + "/tap", session=_bearer_session(admin))
        assert len(authed.search("SELECT obs_id FROM ivoa.obscore")) == len(docs)
        if shutil.which("stilts") is None:
            if os.environ.get("MMBROKER_REQUIRE_STILTS") == "1":
                pytest.fail("stilts (taplint) is not installed: apt-get install stilts")
            pytest.skip("stilts (taplint) is not installed")
        report = _taplint(base + "/tap")
        problems = [line for line in report.splitlines() if line.startswith(("E-", "W-"))]
        assert not problems, report  # no error and no warning, the async stages included
        assert re.search(r"S-QAS-QNUM-1 Successful/submitted TAP queries: ([1-9]\d*)/\1\n",
                         report), report  # every async query it made succeeded
        assert "Totals: Errors:" in report
        for params in ({"QUERY": "SELECT * FROM ivoa.obscore"},
                       {"QUERY": "SELECT * FROM TAP_SCHEMA.columns", "MAXREC": "3"},
                       {"QUERY": "SELECT nope FROM ivoa.obscore"}):
            body = client.get("/tap/sync", params={"LANG": "ADQL", **params},
                              headers={"Authorization": f"Bearer {admin}"}).content
            assert _votlint(body, tmp_path) == "", params  # votlint says nothing: clean


def _bearer_session(token: str) -> Any:
    import requests

    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    return session


def _votlint(body: bytes, folder: Path) -> str:
    """STILTS votlint's complaints about a VOTable (empty when it has none)."""
    path = folder / "result.vot"
    path.write_bytes(body)
    completed = subprocess.run(["stilts", "votlint", f"votable={path}"], capture_output=True,
                               text=True, timeout=120, check=False)
    return (completed.stdout + completed.stderr).strip()


def _taplint(url: str) -> str:
    """STILTS taplint's report (errors, warnings, failures) on the service at ``url``."""
    completed = subprocess.run(
        ["stilts", "taplint", f"tapurl={url}", "report=EWFS", "maxrepeat=3"],
        capture_output=True, text=True, timeout=240, check=False)
    return completed.stdout + completed.stderr


def test_the_tap_benchmark_stops_on_a_stale_archive() -> None:
    """``python -m bench tap`` asks for "the last 7 days": an archive whose year did not
    end within the last day (or ends in the future) stops it before anything is timed."""
    from bench.archive_bench import SPAN_S
    from bench.tap_bench import StaleInput, check_fresh

    now = datetime.now(UTC)
    year = timedelta(seconds=SPAN_S)
    check_fresh(now - year - timedelta(hours=3), now, "sqlite")  # built 3 h ago: fresh
    for built in (now - timedelta(days=2), now + timedelta(hours=1)):
        with pytest.raises(StaleInput, match="--rebuild"):
            check_fresh(built - year, now, "sqlite")
