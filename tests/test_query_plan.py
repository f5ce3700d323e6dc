"""Sky queries: the plan chosen never changes the answer, and SQLite is steered to the right one.

``broker.archive.query`` decides per query whether SQLite should read a cone's
HEALPix ranges or walk the time index (PostgreSQL decides by itself).  These
tests run real archives of synthetic alerts (the benchmark's generator) and
compare every page, cursor and total under both plans with positions tested
by brute force in numpy.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from sqlalchemy import event, text

from bench.archive_bench import SPAN_S, T0, load_synthetic
from broker.archive import query as query_module
from broker.archive.db import transaction
from broker.archive.query import ANONYMOUS, AlertQuery, search_alerts
from broker.archive.store import Archive
from crossmatch.healpix import angular_separation_deg

ROWS = 4000
CLUSTER = (150.0, 25.0, 0.4, 60)
"""60 of the alerts within 0.4 deg of one point: small cones must find (and page) rows."""


@pytest.fixture
def synthetic(archive: Archive) -> Iterator[tuple[Archive, np.ndarray, np.ndarray, np.ndarray]]:
    """An archive of ROWS synthetic alerts over a year (CLUSTER among them), and their id,
    RA, Dec (deg), time (s)."""
    load_synthetic(archive, ROWS, cluster=CLUSTER)
    with archive.engine.connect() as conn:
        rows = conn.execute(text("SELECT id, ra_deg, dec_deg, document FROM alerts")).all()
    ids = np.array([r[0] for r in rows])
    pos = np.array([(r[1], r[2]) for r in rows])
    t = np.array([(_trigger(r[3]) - T0).total_seconds() for r in rows])
    yield archive, ids, pos, t


def _trigger(document: Any) -> Any:
    from datetime import datetime

    doc = document if isinstance(document, dict) else json.loads(document)
    return datetime.fromisoformat(doc["trigger_time"].replace("Z", "+00:00"))


def _pages(archive: Archive, query: AlertQuery) -> tuple[list[int], int | None]:
    """Every row id over all pages (newest first) and the total of the first page."""
    got: list[int] = []
    cursor, total = None, None
    for _ in range(1000):
        with transaction(archive.engine, readonly=True) as conn:
            page = search_alerts(conn, query, ANONYMOUS, cursor=cursor, count=cursor is None)
        total = page.total if cursor is None else total
        got += [row.id for row in page.rows]
        cursor = page.next_cursor
        if cursor is None:
            return got, total
    raise AssertionError("paging did not end")


SHAPES = [(0.5, 200.0), (3.0, 30.0), (15.0, 7.0), (60.0, 2.0), (120.0, 60.0)]
"""(cone radius deg, window days): small cones over long windows to large over short."""


@pytest.mark.timeout(300)
@pytest.mark.parametrize("plan", ["choose", "sky", "time"])
def test_every_plan_gives_the_same_pages(
        synthetic: tuple[Archive, np.ndarray, np.ndarray, np.ndarray], plan: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    archive, ids, pos, t = synthetic
    if plan != "choose":
        if archive.engine.dialect.name != "sqlite":
            pytest.skip("the plan is only steered on SQLite")
        monkeypatch.setattr(query_module, "_sky_first", lambda *a: plan == "sky")
    ra, dec = CLUSTER[:2]
    near = np.flatnonzero(angular_separation_deg(ra, dec, pos[:, 0], pos[:, 1]) <= CLUSTER[2])
    # Every window holds the cluster's median alert: no shape may pass on empty pages.
    middle = float(np.median(t[near]))
    paged = 0
    for radius, days in SHAPES:
        start_s = min(max(0.0, middle - days * 43200), SPAN_S - days * 86400)
        since = T0 + timedelta(seconds=start_s)
        query = AlertQuery(cone=(ra, dec, radius), since=since,
                           until=since + timedelta(days=days), limit=4)
        inside = (angular_separation_deg(ra, dec, pos[:, 0], pos[:, 1]) <= radius) \
            & (t >= start_s) & (t <= start_s + days * 86400)
        order = np.lexsort((-ids[inside], -t[inside]))
        expected = ids[inside][order].tolist()
        assert expected, (radius, days)
        paged += len(expected) > query.limit
        got, total = _pages(archive, query)
        assert got == expected, (plan, radius, days)
        assert total == len(expected), (plan, radius, days)
    # Most shapes span pages, the smallest cone among them: the steering and the cursor
    # are tried on more than one batch.
    assert paged >= 3


def _plan_of_page_query(archive: Archive, query: AlertQuery) -> str:
    """SQLite's EXPLAIN QUERY PLAN of the candidate statement a sky query runs."""
    statements: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "LIMIT" in statement and "_hpx29" in statement:
            statements.append((statement, parameters))

    event.listen(archive.engine, "before_cursor_execute", capture)
    try:
        with transaction(archive.engine, readonly=True) as conn:
            search_alerts(conn, query, ANONYMOUS)
            statement, parameters = statements[0]
            plan = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters).all()
    finally:
        event.remove(archive.engine, "before_cursor_execute", capture)
    return " | ".join(str(row[-1]) for row in plan)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_sqlite_reads_a_small_cone_by_sky_and_a_short_window_by_time(
        synthetic: tuple[Archive, np.ndarray, np.ndarray, np.ndarray]) -> None:
    archive = synthetic[0]
    since = T0 + timedelta(days=100)
    small_long = AlertQuery(cone=(10.0, 20.0, 1.0), since=since,
                            until=since + timedelta(days=200))
    plan = _plan_of_page_query(archive, small_long)
    assert "ix_alerts_hpx29_event_time" in plan and "ix_alerts_event_time" not in plan, plan
    large_short = AlertQuery(cone=(10.0, 20.0, 90.0), since=since,
                             until=since + timedelta(days=1))
    plan = _plan_of_page_query(archive, large_short)
    assert "ix_alerts_event_time" in plan and "hpx29" not in plan, plan
