"""SQLite writers of one process: queued on the archive's writer lock, or left to SQLite.

``broker.archive.db.transaction`` makes a process's writing transactions on a SQLite
archive take one lock per database before ``BEGIN IMMEDIATE``.  Without it each writer
that finds the database locked sleeps in SQLite's busy handler (1, 2, 5, 10, ... 100 ms
steps) however soon the lock is free, as ``serve``'s request threads, pipeline and
delivery loops did (py-spy of ``serve`` under ``python -m bench publish``: 23% of its
busy samples in ``BEGIN IMMEDIATE``).  Here ``threads`` writers each commit
``per_thread`` transactions of 20 rows of 2 kB (about an ingest batch's size) to a fresh
WAL archive, once queued on the lock and once with the lock replaced by a no-op, in
alternating rounds of one run.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench._common import Figure, percentiles_ms


class _NoLock:
    """Stands in for the writer lock: every writer goes straight to ``BEGIN IMMEDIATE``."""

    def acquire(self, timeout: float = -1) -> bool:
        return True

    def release(self) -> None:
        pass


@contextlib.contextmanager
def _busy_handler_only() -> Iterator[None]:
    from broker.archive import db

    real = db._sqlite_writer
    db._sqlite_writer = lambda _engine: _NoLock()  # type: ignore[assignment,return-value]
    try:
        yield
    finally:
        db._sqlite_writer = real


def _run(threads: int, per_thread: int) -> tuple[float, list[float]]:
    """Wall seconds and per-transaction seconds of one round on a fresh archive."""
    from sqlalchemy import text

    from broker.archive.db import make_engine, transaction

    folder = Path(tempfile.mkdtemp(prefix="mmbroker-bench-sqlite-"))
    engine = make_engine(f"sqlite:///{folder / 'writers.sqlite3'}")
    with transaction(engine) as conn:
        conn.execute(text("CREATE TABLE rows (id INTEGER PRIMARY KEY, body TEXT)"))
    latencies: list[float] = []
    body: dict[str, Any] = {"body": "x" * 2000}

    def write() -> None:
        for _ in range(per_thread):
            begin = time.perf_counter()
            with transaction(engine) as conn:
                for _row in range(20):
                    conn.execute(text("INSERT INTO rows (body) VALUES (:body)"), body)
            latencies.append(time.perf_counter() - begin)

    workers = [threading.Thread(target=write) for _ in range(threads)]
    start = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    wall = time.perf_counter() - start
    engine.dispose()
    return wall, latencies


def bench_sqlite_writers(threads: int = 8, per_thread: int = 60, rounds: int = 3
                         ) -> list[Figure]:
    results: dict[str, tuple[list[float], list[float]]] = {"writer lock": ([], []),
                                                            "busy handler only": ([], [])}
    for _ in range(rounds):
        for mode, rates_and_latencies in results.items():
            with _busy_handler_only() if mode == "busy handler only" else \
                    contextlib.nullcontext():
                wall, latencies = _run(threads, per_thread)
            rates_and_latencies[0].append(len(latencies) / wall)
            rates_and_latencies[1].extend(latencies)
    figures = []
    note = f"{threads} threads x {per_thread} transactions of 20 rows, {rounds} rounds"
    for mode, (rates, latencies) in results.items():
        p50, _p95, p99 = percentiles_ms(latencies)
        rates.sort()
        figures += [
            Figure("sqlite writers", "sqlite", f"{mode}: transactions/s (median round)",
                   rates[len(rates) // 2], "tx/s", note),
            Figure("sqlite writers", "sqlite", f"{mode}: transaction p50", p50, "ms", note),
            Figure("sqlite writers", "sqlite", f"{mode}: transaction p99", p99, "ms", note)]
    return figures
