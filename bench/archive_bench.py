"""Archive benchmarks: ingest throughput, and cone + time queries over a large archive.

``insert``: alerts/s through the real ingest path (raw bytes committed, the
Alert JSON normalized and validated, the row archived), in batches of
``--batch`` and one message per transaction; then coincidences stored in
batches, and 2,000 of them published (VOEvent and PROV built, outbox queued).

``query``: p50/p95/p99 of cone + time-range queries over ``--rows`` synthetic
alerts, uniform on the sky over the year before the archive was built (windows drawn
in that year), through the query path the API uses
(``broker.archive.query.search_alerts`` for an anonymous caller, data-rights condition
included; every synthetic alert is public), first 100 rows newest first, one
shape also counting every match.  Then the same archive over HTTP: the app
served by uvicorn on loopback (rate limit off), the latency of a cone + one
day ``GET /api/v1/alerts``, and requests/s of typical list calls (newest 100,
JSON and VOTable) from a few keep-alive clients.  The table is bulk-loaded
once per backend (COPY on PostgreSQL) and kept in ``bench/out`` / schema
``bench_query`` for later runs; ``--rebuild`` reloads it.  The SQLite file is
read through once before timing, so both backends are measured warm.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from bench._common import OUT, Figure, backend_url, percentiles_ms, start_server, stop_process

SPAN_S = 365.25 * 86400
T0 = datetime(2026, 1, 1, tzinfo=UTC)
_BULK_RAW = b"synthetic bulk-loaded alert (benchmark fixture)"


def bench_insert(backend: str, n_batch: int, n_single: int, batch: int) -> list[Figure]:
    from alerts_schema.synthetic import alert_documents
    from broker.archive.store import Archive
    from broker.runtime.ingest import Ingestor
    from listeners.envelope import RawMessage

    url = backend_url(backend, "insert", recreate=True)
    archive = Archive.open(url)
    ingestor = Ingestor(archive, authority="bench.mmbroker")
    figures = []
    for mode, n, size in (("batch", n_batch, batch), ("single", n_single, 1)):
        docs = alert_documents(n, seed=1 if mode == "batch" else 2, prefix=mode)
        raws = [RawMessage("file", json.dumps(d).encode()) for d in docs]
        start = time.perf_counter()
        for i in range(0, n, size):
            ingestor.ingest(raws[i:i + size])
        elapsed = time.perf_counter() - start
        figures.append(Figure("archive insert", backend, f"{mode} (x{size}) alerts/s",
                              n / elapsed, "alerts/s", f"{n} alerts, {elapsed:.2f} s"))
    assert archive.count_alerts() == n_batch + n_single
    stored, results = _store_coincidences(archive, backend, n_batch, batch)
    figures += [stored, _queue_voevents(archive, backend, results[:2000])]
    archive.close()
    return figures


def _store_coincidences(archive: Any, backend: str, n: int, batch: int
                        ) -> tuple[Figure, list[Any]]:
    """Coincidences/s stored in batches of ``batch``, each pairing two archived alerts.

    Every other one is a revision superseding the one before it, so the
    supersedes links are resolved too, as when a sky map update re-pairs.
    """
    from sqlalchemy import select

    import alerts_schema
    from alerts_schema import Coincidence
    from broker.archive.models import AlertRow

    with archive.engine.connect() as conn:
        ivorns = list(conn.execute(select(AlertRow.ivorn).order_by(AlertRow.id).limit(n + 1))
                      .scalars())
    template = Coincidence.model_validate_json(
        alerts_schema.example_paths("coincidence")[0].read_bytes())
    members = template.members
    results = []
    for i in range(n):
        ivorn = f"ivo://bench.mmbroker/coincidence#{i // 2}-{i % 2}"
        results.append((f"{i:064x}", template.model_copy(update={
            "id": ivorn, "revision": i % 2, "state": "updated" if i % 2 else "new",
            "supersedes": results[-1][1].id if i % 2 else None,
            "members": [members[0].model_copy(update={"alert_id": ivorns[i]}),
                        members[1].model_copy(update={"alert_id": ivorns[i + 1]})]})))
    start = time.perf_counter()
    for i in range(0, n, batch):
        assert all(archive.store_coincidences(results[i:i + batch]))
    elapsed = time.perf_counter() - start
    return Figure("archive insert", backend, f"coincidences (x{batch})/s", n / elapsed,
                  "coinc/s", f"{n} coincidences, half superseding, {elapsed:.2f} s"), results


def _queue_voevents(archive: Any, backend: str, results: list[tuple[str, Any]]) -> Figure:
    """Coincidence VOEvents built (VOEvent 2.0 + PROV) and queued for VTP, in one round."""
    from broker.config import Settings
    from broker.publish.publisher import Publisher
    from crossmatch.engine import Result

    publisher = Publisher(archive, Settings(), targets=("vtp",))
    start = time.perf_counter()
    queued = publisher.publish([], [Result(key, c) for key, c in results])
    elapsed = time.perf_counter() - start
    assert queued == len(results) and publisher.failures == 0
    return Figure("archive insert", backend, "coincidence VOEvents queued/s",
                  len(results) / elapsed, "VOEvent/s",
                  f"{len(results)} in one round, {elapsed:.2f} s")


Cluster = tuple[float, float, float, int]
"""(RA deg, Dec deg, radius deg, how many): synthetic alerts gathered inside one cone."""


def _bulk_rows(n: int, seed: int = 7, cluster: Cluster | None = None, start: datetime = T0
               ) -> tuple[list[str], Any]:
    """Column names and a generator of row tuples for ``n`` synthetic alerts over the year
    from ``start`` (all received at its end), all over the sky except the first
    ``cluster[3]``, which fall inside the ``cluster`` cone."""
    from crossmatch.healpix import nested29
    from listeners.envelope import sha256_hex

    rng = np.random.default_rng(seed)
    ra = rng.uniform(0, 360, n)
    dec = np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    if cluster is not None:
        c_ra, c_dec, c_radius, k = cluster
        # Offsets inside a disc a little smaller than the cone (flat-sky: small radii).
        r = 0.9 * c_radius * np.sqrt(rng.uniform(0, 1, k))
        phi = rng.uniform(0, 2 * np.pi, k)
        dec[:k] = c_dec + r * np.sin(phi)
        ra[:k] = (c_ra + r * np.cos(phi) / np.cos(np.radians(c_dec))) % 360
    hpx = nested29(ra, dec)
    t = rng.uniform(0, SPAN_S, n)
    radius = np.exp(rng.uniform(np.log(0.01), np.log(10.0), n))
    far = 10 ** rng.uniform(-10, -5, n)
    messengers = np.array(["neutrino", "gamma_ray", "x_ray", "optical", "radio"])
    kinds = rng.integers(0, len(messengers), n)
    raw_sha = sha256_hex(_BULK_RAW)
    received = start + timedelta(seconds=SPAN_S)
    cols = ["ivorn", "source", "event_id", "revision", "alert_type", "role", "messenger",
            "facility", "event_time", "received_at", "loc_kind", "ra_deg", "dec_deg",
            "error_radius_deg", "hpx29", "far_hz", "data_rights", "raw_sha256", "document"]

    def rows() -> Any:
        for i in range(n):
            when = start + timedelta(seconds=float(t[i]))
            ivorn = f"ivo://bench.mmbroker/bulk#{i}-0"
            doc = {
                "schema_version": "1.0", "id": ivorn, "source": "bulk",
                "messenger": str(messengers[kinds[i]]), "facility": "Synthetic",
                "event_id": str(i), "revision": 0, "alert_type": "initial",
                "role": "observation", "trigger_time": when.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "localization": {"kind": "point", "ra_deg": float(ra[i]),
                                 "dec_deg": float(dec[i]), "error_radius_deg": float(radius[i]),
                                 "containment": 0.9},
                "far_hz": float(far[i]), "data_rights": {"level": "public"},
                "raw_sha256": raw_sha,
            }
            yield (ivorn, "bulk", str(i), 0, "initial", "observation", doc["messenger"],
                   "Synthetic", when.replace(tzinfo=None), received.replace(tzinfo=None),
                   "point", float(ra[i]), float(dec[i]), float(radius[i]), int(hpx[i]),
                   float(far[i]), "public", raw_sha, json.dumps(doc))

    return cols, rows


def load_synthetic(archive: Any, n: int, cluster: Cluster | None = None,
                   start: datetime = T0) -> float:
    """Bulk-load ``n`` synthetic alerts over the year from ``start`` (see
    :func:`_bulk_rows`); returns the seconds it took."""
    from sqlalchemy import text

    from listeners.envelope import RawMessage

    archive.store_raw([RawMessage("bulk", _BULK_RAW, received_at=start)])
    cols, rows = _bulk_rows(n, cluster=cluster, start=start)
    began = time.perf_counter()
    raw = archive.engine.raw_connection()
    try:
        cur = raw.cursor()
        if archive.engine.dialect.name == "postgresql":
            with cur.copy(f"COPY alerts ({', '.join(cols)}) FROM STDIN") as copy:
                for row in rows():
                    copy.write_row(row)
        else:
            marks = ", ".join("?" for _ in cols)
            cur.execute("BEGIN")
            buf = []
            for row in rows():
                buf.append((*row[:8], row[8].isoformat(sep=" "), row[9].isoformat(sep=" "),
                            *row[10:]))
                if len(buf) == 20_000:
                    cur.executemany(f"INSERT INTO alerts ({', '.join(cols)}) VALUES ({marks})",
                                    buf)
                    buf.clear()
            if buf:
                cur.executemany(f"INSERT INTO alerts ({', '.join(cols)}) VALUES ({marks})", buf)
            cur.execute("COMMIT")
        raw.commit()
    finally:
        raw.close()
    with archive.engine.begin() as conn:
        conn.execute(text("ANALYZE"))
    return time.perf_counter() - began


def query_archive(backend: str, rows: int, rebuild: bool
                  ) -> tuple[str, datetime, list[Figure]]:
    """The archive of the ``query`` and ``tap`` benchmarks: ``rows`` synthetic alerts over
    the year before it was built, every one received when it was built.

    Kept in ``bench/out`` / schema ``bench_query`` and reused while it holds
    ``rows`` alerts (``rebuild`` reloads it).  Returns its URL, the start of
    its year (its alerts' receipt time, one year back) and the bulk-load figure
    when it was loaded now.
    """
    from sqlalchemy import select

    from broker.archive.models import AlertRow
    from broker.archive.store import Archive

    url = backend_url(backend, "query", recreate=rebuild)
    archive = Archive.open(url)
    figures = []
    try:
        if archive.count_alerts() != rows:
            archive.close()
            url = backend_url(backend, "query", recreate=True)
            archive = Archive.open(url)
            start = datetime.now(UTC) - timedelta(seconds=SPAN_S)
            seconds = load_synthetic(archive, rows, start=start)
            figures.append(Figure("bulk load", backend, "rows/s", rows / seconds, "rows/s",
                                  f"{rows} rows in {seconds:.1f} s, the year to "
                                  f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"))
        with archive.engine.connect() as conn:
            built = conn.execute(select(AlertRow.received_at).limit(1)).scalar_one()
    finally:
        archive.close()
    return url, built.astimezone(UTC) - timedelta(seconds=SPAN_S), figures


def bench_query(backend: str, rows: int, queries: int, rebuild: bool) -> list[Figure]:
    from broker.archive.store import Archive

    url, start, figures = query_archive(backend, rows, rebuild)
    if backend == "sqlite":
        _read_through(url)
    archive = Archive.open(url)
    try:
        figures += _cone_queries(archive, backend, rows, queries, start)
    finally:
        archive.close()
    figures += bench_http(url, backend, queries, start)
    return figures


QUERY_SHAPES = {  # label: (cone radius deg, window days, count=true)
    "cone 2 deg x 1 day": (2.0, 1.0, False),
    "cone 10 deg x 7 days": (10.0, 7.0, False),
    "cone 0.5 deg x 30 days": (0.5, 30.0, False),
    "cone 10 deg x 7 days, count": (10.0, 7.0, True),
}


def _read_through(url: str) -> None:
    """Read the SQLite file once so the figures are of a warm page cache, as a running
    broker's would be (ten warm-up queries touch too little of a 1.2 GB file)."""
    from sqlalchemy.engine import make_url

    path = make_url(url).database
    if path:
        with open(path, "rb") as f:
            while f.read(1 << 24):
                pass


def _random_cone(rng: np.random.Generator, days: float, start: datetime
                 ) -> tuple[float, float, datetime]:
    """A cone centre uniform on the sky and a window start uniform in the year from
    ``start``."""
    ra = float(rng.uniform(0, 360))
    dec = float(np.degrees(np.arcsin(rng.uniform(-1, 1))))
    since = start + timedelta(seconds=float(rng.uniform(0, SPAN_S - days * 86400)))
    return ra, dec, since


def _cone_queries(archive: Any, backend: str, rows: int, queries: int, start: datetime
                  ) -> list[Figure]:
    """The API's query path: ``search_alerts`` for an anonymous caller, one read
    transaction per query (data-rights condition included; the synthetic
    alerts are all public, so it filters nothing out)."""
    from broker.archive.db import transaction
    from broker.archive.query import ANONYMOUS, AlertQuery, search_alerts

    rng = np.random.default_rng(99)  # the first three shapes draw the same cones as before
    figures = []
    for label, (radius, days, count) in QUERY_SHAPES.items():
        samples, found, total = [], 0, 0
        for q in range(queries + 10):
            ra, dec, since = _random_cone(rng, days, start)
            query = AlertQuery(cone=(ra, dec, radius), since=since,
                               until=since + timedelta(days=days), limit=100)
            began = time.perf_counter()
            with transaction(archive.engine, readonly=True) as conn:
                page = search_alerts(conn, query, ANONYMOUS, count=count)
                result = [row.document for row in page.rows]
            if q >= 10:  # the first ten warm the caches
                samples.append(time.perf_counter() - began)
                found += len(result)
                total += page.total or 0
        p50, p95, p99 = percentiles_ms(samples)
        note = f"{queries} queries over {rows} rows, {found / queries:.1f} rows/query"
        if count:
            note += f", total {total / queries:.1f}/query"
        figures.append(Figure("cone+time query", backend, f"{label} p50", p50, "ms", note))
        figures.append(Figure("cone+time query", backend, f"{label} p95", p95, "ms",
                              "search_alerts, anonymous viewer"))
        figures.append(Figure("cone+time query", backend, f"{label} p99", p99, "ms"))
    return figures


# -- the same over HTTP ----------------------------------------------------------------------

HTTP_THREADS = 4
"""Concurrent keep-alive client connections of the requests/s figures."""
HTTP_SECONDS = 10.0
"""How long each requests/s figure is measured for."""
LIST_CALLS = {  # label: query string
    "list limit=100 (JSON)": "limit=100",
    "list messenger=neutrino limit=100 (JSON)": "messenger=neutrino&limit=100",
    "list limit=100 (VOTable)": "limit=100&format=votable",
}


def serve_api(url: str, port: int) -> None:
    """Run the broker's app on the archive at ``url`` on 127.0.0.1:``port`` (no rate limit).

    The benchmark's server process: ``python -c`` runs this so the server has
    an interpreter (and GIL) of its own.
    """
    import logging

    import uvicorn

    from broker.config import Settings
    from broker.web.app import create_app

    logging.basicConfig(level=logging.WARNING)
    settings = Settings(database_url=url, api_rate_limit_per_s=0, comet=False,
                        data_dir=OUT / "api", http_port=port)
    uvicorn.run(create_app(settings), host="127.0.0.1", port=port, log_level="warning",
                access_log=False)


def _start_server(url: str) -> tuple[Any, int]:
    """The API server subprocess and its port, once /health answers."""
    import http.client
    import socket
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = ("import sys; from bench.archive_bench import serve_api; "
            "serve_api(sys.argv[1], int(sys.argv[2]))")
    proc = start_server([sys.executable, "-c", code, url, str(port)],
                            cwd=Path(__file__).parent.parent)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the API server exited with status {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                conn.close()
                return proc, port
        except OSError:
            pass
        time.sleep(0.5)
    proc.terminate()
    raise RuntimeError("the API server did not answer /health within 300 s")


def _get(conn: Any, path: str) -> bytes:
    conn.request("GET", path)
    resp = conn.getresponse()
    body = resp.read()
    if resp.status != 200:
        raise RuntimeError(f"GET {path}: {resp.status} {body[:300]!r}")
    return body


def _throughput(port: int, path: str, threads: int, seconds: float
                ) -> tuple[float, list[float]]:
    """Requests/s of ``threads`` keep-alive clients repeating ``path``, and the latencies."""
    import http.client
    import threading

    barrier = threading.Barrier(threads + 1)
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []
    stop = threading.Event()

    def client(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            for _ in range(3):  # connect and warm
                _get(conn, path)
        except Exception as exc:  # reported after the run
            errors.append(exc)
        barrier.wait()
        try:
            while not (stop.is_set() or errors):
                start = time.perf_counter()
                _get(conn, path)
                latencies[i].append(time.perf_counter() - start)
        except Exception as exc:
            errors.append(exc)
        finally:
            conn.close()

    workers = [threading.Thread(target=client, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    barrier.wait()
    start = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    done = [x for lat in latencies for x in lat]
    return len(done) / elapsed, done


def bench_http(url: str, backend: str, queries: int, start: datetime) -> list[Figure]:
    """The API over HTTP on loopback: cone + time latency, and list calls' requests/s.

    A uvicorn process serves ``create_app`` on the archive (rate limit off,
    one worker); the clients are threads of this process using
    ``http.client`` keep-alive connections.  Both share the machine's cores.
    """
    import http.client
    from urllib.parse import urlencode

    proc, port = _start_server(url)
    figures = []
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        rng = np.random.default_rng(98)
        samples, found = [], 0
        for q in range(queries + 10):
            ra, dec, since = _random_cone(rng, 1.0, start)
            params = {"ra": f"{ra:.6f}", "dec": f"{dec:.6f}", "radius": 2,
                      "since": since.isoformat().replace("+00:00", "Z"),
                      "until": (since + timedelta(days=1)).isoformat().replace("+00:00", "Z")}
            began = time.perf_counter()
            body = _get(conn, "/api/v1/alerts?" + urlencode(params))
            page = json.loads(body)
            if q >= 10:
                samples.append(time.perf_counter() - began)
                found += len(page["items"])
        conn.close()
        p50, p95, p99 = percentiles_ms(samples)
        label = "GET alerts cone 2 deg x 1 day"
        figures += [
            Figure("API over HTTP", backend, f"{label} p50", p50, "ms",
                   f"{queries} requests, one client, {found / queries:.1f} rows/request"),
            Figure("API over HTTP", backend, f"{label} p95", p95, "ms",
                   "JSON body read and parsed"),
            Figure("API over HTTP", backend, f"{label} p99", p99, "ms"),
        ]
        for label, query in LIST_CALLS.items():
            path = "/api/v1/alerts?" + query
            check = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            body = _get(check, path)
            check.close()
            size = len(body)
            if "votable" in query:
                assert body.lstrip().startswith(b"<?xml"), body[:100]
            else:
                assert json.loads(body)["items"], path
            rate, latencies = _throughput(port, path, HTTP_THREADS, HTTP_SECONDS)
            p50, p95, _ = percentiles_ms(latencies)
            figures += [
                Figure("API over HTTP", backend, f"{label} req/s", rate, "req/s",
                       f"{HTTP_THREADS} keep-alive clients, {HTTP_SECONDS:.0f} s, "
                       f"{len(latencies)} requests, {size / 1024:.0f} KiB each"),
                Figure("API over HTTP", backend, f"{label} p50", p50, "ms",
                       f"under {HTTP_THREADS} clients"),
                Figure("API over HTTP", backend, f"{label} p95", p95, "ms"),
            ]
    finally:
        stop_process(proc)
    return figures
