"""PostgreSQL restarted while alerts stream in: the stages reconnect by themselves and
nothing is lost or doubled.

The server restarted is a real PostgreSQL of its own (initdb'd for this test on a free
port, from the same installation as the suite's), so restarting it cuts off no other
test; without PostgreSQL's server binaries the test skips, saying why, unless
``MMBROKER_REQUIRE_PG=1``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import func, select

from broker.archive.models import AlertRow, CoincidenceRow
from broker.archive.store import Archive
from tests.conftest import REQUIRE_PG
from tests.servers import (
    postgres_bindir,
    postgres_cluster,
    produce,
    stop_process,
    tansu,
    wait_for,
)
from tests.stage_support import GRBS, TRIGGERS, inputs, numbered, stage_env, start_stage


@pytest.mark.timeout(420)
def test_stages_ride_through_a_postgresql_restart(tmp_path: Path) -> None:
    bindir = postgres_bindir()
    if bindir is None:
        reason = "needs PostgreSQL's server binaries (/usr/lib/postgresql/*/bin)"
        if REQUIRE_PG:
            pytest.fail(f"MMBROKER_REQUIRE_PG=1 but the test {reason}", pytrace=False)
        pytest.skip(reason)
    with postgres_cluster(bindir) as (pg_url, restart_pg):
        _ride_through(tmp_path, pg_url, restart_pg)


def _ride_through(tmp_path: Path, pg_url: str, restart_pg: Callable[[], None]) -> None:
    pairs, singles = 10, 150
    triggers, grbs = inputs(pairs, singles)
    total = len(triggers) + len(grbs)
    Archive.open(pg_url).close()
    with tansu(tmp_path) as bootstrap:
        env = stage_env(bootstrap, "pg-restart", pairs, singles)
        procs = [start_stage(name, pg_url, env, tmp_path / f"{name}.log")
                 for name in ("listen", "match")]
        try:
            produce(bootstrap, TRIGGERS, triggers[: len(triggers) // 2])
            produce(bootstrap, GRBS, grbs[: len(grbs) // 2])
            archive = Archive.open(pg_url, upgrade=False)
            try:
                # Mid-stream for certain: a fixed sleep restarted the server before a
                # loaded machine had started the stages, so the test tested start-up.
                assert wait_for(lambda: numbered(archive) > 0, 120, 0.2), (
                    "the stages numbered nothing before the restart",
                    {p.name: p.read_text()[-2000:] for p in tmp_path.glob("*.log")})
                restart_pg()
                produce(bootstrap, TRIGGERS, triggers[len(triggers) // 2:])
                produce(bootstrap, GRBS, grbs[len(grbs) // 2:])
                done = wait_for(lambda: numbered(archive) == total, 240, 1.0)
                assert done, (numbered(archive), total,
                              {p.name: p.read_text()[-2000:] for p in tmp_path.glob("*.log")})
                with archive.engine.connect() as conn:
                    alerts = conn.execute(select(func.count()).select_from(AlertRow)).scalar()
                    coincidences = conn.execute(select(CoincidenceRow.pairing)).scalars().all()
            finally:
                archive.close()
            assert all(p.poll() is None for p in procs), "a stage died instead of reconnecting"
        finally:
            for proc in procs:
                stop_process(proc, 20)
    assert alerts == total
    assert sorted(coincidences) == ["hen-grb"] * pairs
