"""PostgreSQL restarted while alerts stream in: the stages reconnect by themselves and
nothing is lost or doubled.

The server restarted is the real one the suite uses (``pg_ctlcluster ... restart``, so
root on a Debian-packaged cluster); elsewhere the test skips, saying why, unless
``MMBROKER_REQUIRE_PG=1``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import func, select

from broker.archive.models import AlertRow, CoincidenceRow
from broker.archive.store import Archive
from tests.conftest import REQUIRE_PG
from tests.servers import produce, stop_process, tansu, wait_for
from tests.stage_support import GRBS, TRIGGERS, inputs, numbered, stage_env, start_stage


def _cluster() -> tuple[str, str] | None:
    """(version, name) of the local cluster on port 5432, if this process may restart it."""
    if os.geteuid() != 0 or shutil.which("pg_ctlcluster") is None:
        return None
    out = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True,
                         check=False).stdout
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[2] == "5432" and fields[3] == "online":
            return fields[0], fields[1]
    return None


@pytest.mark.timeout(420)
def test_stages_ride_through_a_postgresql_restart(tmp_path: Path, pg_url: str) -> None:
    cluster = _cluster()
    if cluster is None:
        reason = "needs root and the Debian-packaged PostgreSQL cluster on port 5432"
        if REQUIRE_PG:
            pytest.fail(f"MMBROKER_REQUIRE_PG=1 but the test {reason}", pytrace=False)
        pytest.skip(reason)
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
                subprocess.run(["pg_ctlcluster", *cluster, "restart"], check=True, timeout=120)
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
