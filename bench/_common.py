"""Shared pieces of the benchmarks: timing statistics, machine description, databases."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OUT = Path(__file__).parent / "out"
PG_URL = os.environ.get("MMBROKER_BENCH_PG_URL",
                        os.environ.get("MMBROKER_TEST_PG_URL",
                                       "postgresql+psycopg://postgres@127.0.0.1:5432/test"))


@dataclass
class Figure:
    """One printed figure: what, on which backend, the value and its unit."""

    benchmark: str
    backend: str
    metric: str
    value: float
    unit: str
    note: str = ""


def percentiles_ms(samples_s: list[float]) -> tuple[float, float, float]:
    """(p50, p95, p99) of ``samples_s`` in milliseconds."""
    ordered = sorted(samples_s)
    q = statistics.quantiles(ordered, n=100, method="inclusive")
    return 1000 * statistics.median(ordered), 1000 * q[94], 1000 * q[98]


def machine() -> str:
    """One line naming the machine the figures come from."""
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    import sqlite3

    return (f"{platform.node()}: {cpu}, {os.cpu_count()} cores{mem}; "
            f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}")


def pg_reachable() -> str | None:
    """None when PostgreSQL answers at PG_URL, else the reason."""
    from sqlalchemy import create_engine, text

    try:
        engine = create_engine(PG_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            version = conn.execute(text("SHOW server_version")).scalar_one()
        engine.dispose()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}".splitlines()[0]
    os.environ["MMBROKER_BENCH_PG_VERSION"] = str(version)
    return None


def pg_schema_url(schema: str, *, recreate: bool) -> str:
    """A URL on PG_URL whose search_path is ``schema`` (dropped first when ``recreate``)."""
    from sqlalchemy import create_engine, text

    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        if recreate:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {schema}"))
    admin.dispose()
    sep = "&" if "?" in PG_URL else "?"
    return f"{PG_URL}{sep}options=-csearch_path%3D{schema}"


def sqlite_url(name: str, *, recreate: bool) -> str:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.sqlite3"
    if recreate:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    return f"sqlite:///{path}"


def backend_url(backend: str, name: str, *, recreate: bool) -> str:
    if backend == "sqlite":
        return sqlite_url(name, recreate=recreate)
    return pg_schema_url(f"bench_{name}", recreate=recreate)


def start_server(args: list[str], **popen: Any) -> subprocess.Popen[bytes]:
    """Start a server the benchmark needs (``subprocess.Popen(args, **popen)``) so that it
    ends with the benchmark, even one killed outright.

    On Linux the child asks for SIGTERM when its parent dies (``PR_SET_PDEATHSIG``), so
    a ``mmbroker serve`` does not live on with its Comet after a benchmark is killed,
    using a core beside the next one.  Call it from the main thread: the signal comes
    when the thread that started the child ends.  :func:`stop_process` still ends it.
    """
    if sys.platform != "linux":
        return subprocess.Popen(args, **popen)
    import ctypes
    import signal

    # Looked up here: between fork and exec the child may not import or take locks.
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def die_with_parent() -> None:
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl: do not outlive it
            os._exit(1)

    return subprocess.Popen(args, preexec_fn=die_with_parent, **popen)


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    """SIGTERM ``proc`` (a server the benchmark started), SIGKILL it after ``timeout_s`` (s)."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
