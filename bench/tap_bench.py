"""TAP against the REST API: the same cone + time query both ways over HTTP.

``python -m bench tap`` uses the archive of ``python -m bench query``
(``--rows`` synthetic alerts, uniform on the sky over the year before it was
built; built when missing).  One API server (uvicorn, one process, rate limit
off) answers, on loopback, each query twice:

- REST: ``GET /api/v1/alerts?ra=&dec=&radius=&since=&until=&limit=100``
  (JSON, newest first), and the same with ``format=votable``;
- TAP: ``POST /tap/sync`` with ``SELECT TOP 100 * FROM ivoa.obscore WHERE
  CONTAINS(POINT('ICRS', s_ra, s_dec), CIRCLE('ICRS', ra, dec, radius)) = 1
  AND t_min BETWEEN mjd(since) AND mjd(until) ORDER BY t_min DESC`` (VOTable),
  as pyvo and TOPCAT send it; and the same with ``t_min >= mjd(since) AND
  t_max <= mjd(until)``, which bounds the time index at both ends (a
  ``t_min`` range bounds it from below only: :mod:`broker.web.tap.adql`).

Latency is from sending the request to the whole body read.  Every answer is
checked afterwards: TAP's obs_id values must be the REST page's IVORNs in the
same order, or the benchmark stops (it would be timing two different questions).

The windows are dated relative to now: three shapes draw their window anywhere
in the archive's year (as ``query`` does), and one asks for the last 7 days, so
the archive must end now: a reused archive whose alerts were received more than
``FRESH_S`` ago (or in the future) stops the benchmark before anything is timed,
naming ``--rebuild``.  Every synthetic alert is public: the data-rights
condition is in every statement on both paths and filters nothing.
"""

from __future__ import annotations

import io
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import numpy as np

from bench._common import Figure, percentiles_ms, stop_process

FRESH_S = 86400.0
"""How long ago the archive may have been built for its year to end "now"."""
MJD_EPOCH = datetime(1858, 11, 17, tzinfo=UTC)
LIMIT = 100

SHAPES = {  # label: (cone radius deg, window days, window ends now)
    "cone 2 deg x 1 day": (2.0, 1.0, False),
    "cone 10 deg x 7 days": (10.0, 7.0, False),
    "cone 0.5 deg x 30 days": (0.5, 30.0, False),
    "cone 10 deg x the last 7 days": (10.0, 7.0, True),
}


class StaleInput(SystemExit):
    """An input the benchmark takes as dated now is not."""


def mjd(when: datetime) -> float:
    """A UTC time as an MJD (days of 86400 s, as the archive's t_min is computed)."""
    return (when - MJD_EPOCH).total_seconds() / 86400.0


def _iso(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


def tap_query(ra: float, dec: float, radius: float, since: datetime, until: datetime,
              within: bool = False) -> str:
    """The ADQL of a cone + time query: ``t_min BETWEEN since AND until``, or with
    ``within`` ``t_min >= since AND t_max <= until`` (the same rows when alerts state no
    time error, as here; the second bounds the time index at both ends)."""
    window = (f"t_min >= {mjd(since)!r} AND t_max <= {mjd(until)!r}" if within
              else f"t_min BETWEEN {mjd(since)!r} AND {mjd(until)!r}")
    return (f"SELECT TOP {LIMIT} * FROM ivoa.obscore WHERE CONTAINS(POINT('ICRS', s_ra, s_dec), "
            f"CIRCLE('ICRS', {ra:.6f}, {dec:.6f}, {radius})) = 1 AND {window} "
            "ORDER BY t_min DESC")


def rest_path(ra: float, dec: float, radius: float, since: datetime, until: datetime,
              fmt: str = "json") -> str:
    params = {"ra": f"{ra:.6f}", "dec": f"{dec:.6f}", "radius": radius,
              "since": _iso(since), "until": _iso(until), "limit": LIMIT}
    if fmt != "json":
        params["format"] = fmt
    return "/api/v1/alerts?" + urlencode(params)


def check_fresh(start: datetime, now: datetime, archive: str) -> None:
    """Stop unless the archive's year ends now (it was built less than FRESH_S ago)."""
    from bench.archive_bench import SPAN_S

    built = start + timedelta(seconds=SPAN_S)
    age = (now - built).total_seconds()
    if not 0 <= age <= FRESH_S:
        raise StaleInput(
            f"tap benchmark: the {archive} archive's alerts were received at "
            f"{built:%Y-%m-%d %H:%M} UTC, {age / 86400:.1f} days ago; its 'last 7 days' "
            "query needs an "
            "archive built within the last day.  Rebuild it: python -m bench tap --rebuild")


def preflight(backend: str, rows: int) -> None:
    """Stop before any benchmark runs if the kept archive would be found stale later."""
    from sqlalchemy import func, select

    from bench._common import OUT, backend_url
    from broker.archive.models import AlertRow
    from broker.archive.store import Archive

    if backend == "sqlite" and not (OUT / "query.sqlite3").exists():
        return
    archive = Archive.open(backend_url(backend, "query", recreate=False))
    try:
        with archive.engine.connect() as conn:
            if conn.execute(select(func.count()).select_from(AlertRow)).scalar_one() != rows:
                return  # it will be rebuilt, dated now
            built = conn.execute(select(AlertRow.received_at).limit(1)).scalar_one()
    finally:
        archive.close()
    from bench.archive_bench import SPAN_S

    check_fresh(built.astimezone(UTC) - timedelta(seconds=SPAN_S), datetime.now(UTC), backend)


def _windows(rng: np.random.Generator, start: datetime, now: datetime, days: float,
             recent: bool, n: int) -> list[tuple[float, float, datetime, datetime]]:
    from bench.archive_bench import _random_cone

    out = []
    for _ in range(n):
        ra, dec, since = _random_cone(rng, days, start)
        if recent:
            since = now - timedelta(days=days)
        out.append((ra, dec, since, since + timedelta(days=days)))
    return out


def _post(conn: Any, path: str, form: dict[str, str]) -> bytes:
    conn.request("POST", path, body=urlencode(form),
                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    response = conn.getresponse()
    body = response.read()
    if response.status != 200:
        raise RuntimeError(f"POST {path}: {response.status} {body[:300]!r}")
    return body


def _tap_ids(body: bytes) -> list[str]:
    from astropy.io.votable import parse_single_table

    if b'value="OVERFLOW"' in body:
        raise RuntimeError("TAP answered OVERFLOW for a TOP 100 query")
    table = parse_single_table(io.BytesIO(body)).to_table()
    return [str(x) for x in table["obs_id"]]


def bench_tap(backend: str, rows: int, queries: int, rebuild: bool) -> list[Figure]:
    """p50/p95 of the same cone + time queries through TAP and through the REST API."""
    import http.client

    from bench.archive_bench import _get, _read_through, _start_server, query_archive

    url, start, figures = query_archive(backend, rows, rebuild)
    now = datetime.now(UTC)
    check_fresh(start, now, backend)
    if backend == "sqlite":
        _read_through(url)
    proc, port = _start_server(url)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        rng = np.random.default_rng(97)
        for label, (radius, days, recent) in SHAPES.items():
            samples: dict[str, list[float]] = {"rest": [], "rest-votable": [], "tap": [],
                                               "tap-within": []}
            found = 0
            for i, (ra, dec, since, until) in enumerate(
                    _windows(rng, start, now, days, recent, queries + 10)):
                t0 = time.perf_counter()
                rest = _get(conn, rest_path(ra, dec, radius, since, until))
                t1 = time.perf_counter()
                _get(conn, rest_path(ra, dec, radius, since, until, "votable"))
                t2 = time.perf_counter()
                tap = _post(conn, "/tap/sync", {"LANG": "ADQL", "REQUEST": "doQuery",
                                                "QUERY": tap_query(ra, dec, radius, since,
                                                                   until)})
                t3 = time.perf_counter()
                within = _post(conn, "/tap/sync", {
                    "LANG": "ADQL", "REQUEST": "doQuery",
                    "QUERY": tap_query(ra, dec, radius, since, until, within=True)})
                t4 = time.perf_counter()
                rest_ids = [item["id"] for item in json.loads(rest)["items"]]
                if not _tap_ids(tap) == _tap_ids(within) == rest_ids:
                    raise RuntimeError(f"{label}: TAP and REST answered different rows for "
                                       f"cone ({ra}, {dec}, {radius}) {since} .. {until}")
                if i >= 10:  # the first ten warm the caches
                    samples["rest"].append(t1 - t0)
                    samples["rest-votable"].append(t2 - t1)
                    samples["tap"].append(t3 - t2)
                    samples["tap-within"].append(t4 - t3)
                    found += len(rest_ids)
            if recent and found == 0:
                raise StaleInput(f"tap benchmark: {label} found no alert in {queries} "
                                 "queries: the archive does not reach now")
            stats = {k: percentiles_ms(v) for k, v in samples.items()}
            note = f"{queries} queries over {rows} rows, {found / queries:.1f} rows/query"
            for key, what in (("rest", "REST JSON"), ("rest-votable", "REST VOTable"),
                              ("tap", "TAP t_min BETWEEN"),
                              ("tap-within", "TAP t_min >= AND t_max <=")):
                p50, p95, _ = stats[key]
                figures.append(Figure("TAP vs REST", backend, f"{label} {what} p50", p50,
                                      "ms", note if key == "rest" else ""))
                figures.append(Figure("TAP vs REST", backend, f"{label} {what} p95", p95,
                                      "ms"))
            for key, what in (("tap", "BETWEEN"), ("tap-within", ">= AND <=")):
                figures.append(Figure(
                    "TAP vs REST", backend, f"{label} TAP {what} / REST JSON p50",
                    stats[key][0] / stats["rest"][0], "x",
                    f"p95 {stats[key][1] / stats['rest'][1]:.2f}x"))
        conn.close()
    finally:
        stop_process(proc)
    return figures
