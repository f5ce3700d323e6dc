"""Archive benchmarks: ingest throughput, and cone + time queries over a large archive.

``insert``: alerts/s through the real ingest path (raw bytes committed, the
Alert JSON normalized and validated, the row archived), in batches of
``--batch`` and one message per transaction; then coincidences stored in
batches, and 2,000 of them published (VOEvent and PROV built, outbox queued).

``query``: p50/p95/p99 of cone + time-range queries (the Archive API the REST
and CLI use, first 100 rows newest first) over ``--rows`` synthetic alerts,
uniform on the sky over one year.  The table is bulk-loaded once per backend
(COPY on PostgreSQL) and kept in ``bench/out`` / schema ``bench_query`` for
later runs; ``--rebuild`` reloads it.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from bench._common import Figure, backend_url, percentiles_ms

SPAN_S = 365.25 * 86400
T0 = datetime(2026, 1, 1, tzinfo=UTC)
_BULK_RAW = b"synthetic bulk-loaded alert (benchmark fixture)"


def bench_insert(backend: str, n_batch: int, n_single: int, batch: int) -> list[Figure]:
    from alerts_schema.synthetic import alert_documents
    from broker.archive import Archive, RawMessage
    from broker.ingest import Ingestor

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
    from broker.models import AlertRow

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
    from broker.publisher import Publisher
    from crossmatch.engine import Result

    publisher = Publisher(archive, Settings(), targets=("vtp",))
    start = time.perf_counter()
    queued = publisher.publish([], [Result(key, c) for key, c in results])
    elapsed = time.perf_counter() - start
    assert queued == len(results) and publisher.failures == 0
    return Figure("archive insert", backend, "coincidence VOEvents queued/s",
                  len(results) / elapsed, "VOEvent/s",
                  f"{len(results)} in one round, {elapsed:.2f} s")


def _bulk_rows(n: int, seed: int = 7) -> tuple[list[str], Any]:
    """Column names and a generator of row tuples for ``n`` synthetic alerts."""
    from broker.archive import sha256_hex
    from crossmatch.healpix import nested29

    rng = np.random.default_rng(seed)
    ra = rng.uniform(0, 360, n)
    dec = np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    hpx = nested29(ra, dec)
    t = rng.uniform(0, SPAN_S, n)
    radius = np.exp(rng.uniform(np.log(0.01), np.log(10.0), n))
    far = 10 ** rng.uniform(-10, -5, n)
    messengers = np.array(["neutrino", "gamma_ray", "x_ray", "optical", "radio"])
    kinds = rng.integers(0, len(messengers), n)
    raw_sha = sha256_hex(_BULK_RAW)
    received = T0 + timedelta(seconds=SPAN_S)
    cols = ["ivorn", "source", "event_id", "revision", "alert_type", "role", "messenger",
            "facility", "event_time", "received_at", "loc_kind", "ra_deg", "dec_deg",
            "error_radius_deg", "hpx29", "far_hz", "data_rights", "raw_sha256", "document"]

    def rows() -> Any:
        for i in range(n):
            when = T0 + timedelta(seconds=float(t[i]))
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


def _load(archive: Any, n: int) -> float:
    """Bulk-load ``n`` synthetic alerts; returns the seconds it took."""
    from sqlalchemy import text

    from broker.archive import RawMessage

    archive.store_raw([RawMessage("bulk", _BULK_RAW, received_at=T0)])
    cols, rows = _bulk_rows(n)
    start = time.perf_counter()
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
    return time.perf_counter() - start


def bench_query(backend: str, rows: int, queries: int, rebuild: bool) -> list[Figure]:
    from broker.archive import AlertQuery, Archive

    url = backend_url(backend, "query", recreate=rebuild)
    archive = Archive.open(url)
    figures = []
    have = archive.count_alerts()
    if have != rows:
        archive.close()
        archive = Archive.open(backend_url(backend, "query", recreate=True))
        seconds = _load(archive, rows)
        figures.append(Figure("bulk load", backend, "rows/s", rows / seconds, "rows/s",
                              f"{rows} rows in {seconds:.1f} s"))
    rng = np.random.default_rng(99)
    cases = {
        "cone 2 deg x 1 day": (2.0, 1.0),
        "cone 10 deg x 7 days": (10.0, 7.0),
        "cone 0.5 deg x 30 days": (0.5, 30.0),
    }
    for label, (radius, days) in cases.items():
        samples, found = [], 0
        for q in range(queries + 10):
            ra = float(rng.uniform(0, 360))
            dec = float(np.degrees(np.arcsin(rng.uniform(-1, 1))))
            since = T0 + timedelta(seconds=float(rng.uniform(0, SPAN_S - days * 86400)))
            query = AlertQuery(cone=(ra, dec, radius), since=since,
                               until=since + timedelta(days=days), limit=100)
            start = time.perf_counter()
            result = archive.list_alerts(query)
            if q >= 10:  # the first ten warm the caches
                samples.append(time.perf_counter() - start)
                found += len(result)
        p50, p95, p99 = percentiles_ms(samples)
        note = f"{queries} queries over {rows} rows, {found / queries:.1f} rows/query"
        figures.append(Figure("cone+time query", backend, f"{label} p50", p50, "ms", note))
        figures.append(Figure("cone+time query", backend, f"{label} p95", p95, "ms"))
        figures.append(Figure("cone+time query", backend, f"{label} p99", p99, "ms"))
    archive.close()
    return figures
