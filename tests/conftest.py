"""Shared fixtures: the archive on SQLite and on PostgreSQL, and no network.

PostgreSQL comes from ``MMBROKER_TEST_PG_URL`` (default: the local server at
127.0.0.1:5432, database ``test``, trust auth).  Each test gets its own schema
there, dropped afterwards.  Without a server the PostgreSQL variants skip with
the reason shown, unless ``MMBROKER_REQUIRE_PG=1`` (as in CI), where they fail.
Likewise the RAVEN peer (ligo-raven, in the test extra): :func:`import_peer` skips a
test when it cannot be imported, and fails it under ``MMBROKER_REQUIRE_RAVEN=1`` (CI).
"""

from __future__ import annotations

import contextlib
import importlib
import ipaddress
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

PG_URL = os.environ.get("MMBROKER_TEST_PG_URL",
                        "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REQUIRE_PG = os.environ.get("MMBROKER_REQUIRE_PG") == "1"
REQUIRE_RAVEN = os.environ.get("MMBROKER_REQUIRE_RAVEN") == "1"
REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO.parent / "shared" / "samples"


# -- no network beyond loopback ---------------------------------------------------

_real_connect = socket.socket.connect


def _loopback_only(self: socket.socket, address: object) -> object:
    if self.family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple):
        host = address[0]
        try:
            allowed = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            allowed = False
        if not allowed:
            raise OSError(f"network disabled in tests: connection to {address!r} refused")
    return _real_connect(self, address)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket.socket, "connect", _loopback_only)


@pytest.fixture(autouse=True)
def _isolated_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the user's real archive: settings default into tmp_path."""
    monkeypatch.setenv("MMBROKER_DATA_DIR", str(tmp_path / "data"))
    for var in ("MMBROKER_DATABASE_URL", "MMBROKER_CONFIG_FILE"):
        monkeypatch.delenv(var, raising=False)


# -- databases --------------------------------------------------------------------

def _pg_reason() -> str | None:
    """None when PostgreSQL answers, else why not."""
    from sqlalchemy import create_engine, text

    try:
        engine = create_engine(PG_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as exc:
        return f"PostgreSQL at {PG_URL} unavailable: {type(exc).__name__}: {exc}".splitlines()[0]
    return None


@pytest.fixture(scope="session")
def pg_available() -> None:
    reason = _pg_reason()
    if reason is None:
        return
    if REQUIRE_PG:
        pytest.fail(f"MMBROKER_REQUIRE_PG=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def import_peer(name: str) -> ModuleType:
    """A module of the RAVEN peer (``ligo.raven.search``, ``ligo.skymap.moc``...).

    ligo-raven is in the test extra; where it is not installed the test skips, saying
    why, unless ``MMBROKER_REQUIRE_RAVEN=1`` (as in CI), where it fails.
    """
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        reason = (f"the RAVEN peer {name} cannot be imported ({exc}): "
                  "pip install -c constraints.txt -e '.[test]'")
        if REQUIRE_RAVEN:
            pytest.fail(f"MMBROKER_REQUIRE_RAVEN=1 but {reason}", pytrace=False)
        pytest.skip(reason)


def pg_schema_url(schema: str) -> str:
    sep = "&" if "?" in PG_URL else "?"
    return f"{PG_URL}{sep}options=-csearch_path%3D{schema}"


@contextlib.contextmanager
def pg_schema(prefix: str = "t") -> Iterator[str]:
    """A fresh, empty PostgreSQL schema; yields a URL whose search_path is it.  No
    connection is kept while it is in use (a test may restart the server)."""
    from sqlalchemy import create_engine, text

    schema = f"{prefix}_{uuid.uuid4().hex[:16]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    admin.dispose()
    try:
        yield pg_schema_url(schema)
    finally:
        admin = create_engine(PG_URL)
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture
def pg_url(pg_available: None) -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh, empty schema."""
    with pg_schema() as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'archive.sqlite3'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """The archive URL, once per backend."""
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")


@pytest.fixture
def archive(db_url: str) -> Iterator[object]:
    from broker.archive.store import Archive

    arch = Archive.open(db_url)
    try:
        yield arch
    finally:
        arch.close()


@pytest.fixture
def ingestor(archive: object) -> object:
    from broker.runtime.ingest import Ingestor

    return Ingestor(archive, authority="test.mmbroker", retry_delays_s=(0.05, 0.2))


# -- subprocesses -----------------------------------------------------------------

def mmbroker(*args: str, env: dict[str, str] | None = None, timeout: float = 120,
             check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the installed ``mmbroker`` console script (the one the README installs)."""
    exe = Path(sys.executable).with_name("mmbroker")
    proc = subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"mmbroker {' '.join(args)} exited {proc.returncode}\n"
                             f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the demo scenario through the real pipeline -----------------------------------


def ingest_demo(archive: object, *, embargoed_until: str | None = None,
                targets: tuple[str, ...] = ()) -> None:
    """The demo's three alerts through the real pipeline (coincidences and VOEvents stored,
    queued for ``targets``, nothing sent); the neutrino trigger embargoed until
    ``embargoed_until`` if given."""
    import json

    from broker import demo
    from broker.config import get_settings
    from broker.runtime.assembly import make_pipeline
    from listeners.envelope import RawMessage

    pipeline = make_pipeline(get_settings(comet=False), archive,  # type: ignore[arg-type]
                             targets=list(targets))
    messages = demo.scenario_messages()
    if embargoed_until is not None:
        label, raw, _ = messages[0]
        trigger = json.loads(raw.data)
        trigger["data_rights"] = {"level": "embargoed", "embargo_until": embargoed_until}
        messages[0] = (label, RawMessage(raw.source, json.dumps(trigger).encode()), 0.0)
    for _, message, _ in messages:
        pipeline.ingest([message])


def chain_forks(steps: dict[int, dict], ivorns: dict[int, str]) -> int:
    """Check each alert's latency chain (``broker.web.latency.step_times``, by alert row
    id; ``ivorns`` by the same ids) in the order the broker's model states; return how
    many alerts were published by their own VOEvent.

    The chain forks after ``received``: matched on one branch, published ->
    acknowledged on the other.  A trigger's own VOEvent waits for nothing the engine
    does (published no later than matched); a coincidence's comes after the match of
    the member completing it.  Steps not reached are not compared."""
    def ordered(s: dict, *names: str) -> bool:
        times = [s[n] for n in names if s[n] is not None]
        return times == sorted(times)

    own = 0
    for alert_id, s in steps.items():
        assert ordered(s, "event", "received", "matched"), s
        assert ordered(s, "received", "published", "acknowledged"), s
        if s["published"] is None:
            continue
        if s["voevent_ivorn"] == ivorns[alert_id]:
            own += 1
            assert ordered(s, "published", "matched"), s
        else:
            assert ordered(s, "matched", "published"), s
    return own


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus text exposition (None when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v
                                           for k, v in labels.items()):
                return sample.value
    return None
