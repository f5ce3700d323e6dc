"""The stages as separate processes on Kafka and PostgreSQL: two listen and two match
workers, real tansu and PostgreSQL; every alert archived once, every planted coincidence
found once, every VOEvent queued once."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import pytest
from sqlalchemy import select

from broker.archive.models import AlertRow, CoincidenceMember, CoincidenceRow, VOEventRow
from broker.archive.store import Archive
from tests.conftest import free_port, metric
from tests.servers import produce, stop_process, tansu, wait_for
from tests.stage_support import GRBS, TRIGGERS, inputs, numbered, stage_env, start_stage


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


@pytest.mark.timeout(300)
def test_two_listen_and_two_match_workers_find_each_coincidence_once(
        tmp_path: Path, pg_url: str) -> None:
    pairs, singles = 12, 20
    triggers, grbs = inputs(pairs, singles)
    total = len(triggers) + len(grbs)
    Archive.open(pg_url).close()  # migrate once, before the workers race to
    with tansu(tmp_path) as bootstrap:
        env = stage_env(bootstrap, "stages-test", pairs, singles)
        ops = {(name, i): free_port() for name in ("listen", "match") for i in range(2)}
        procs = [start_stage(name, pg_url, {**env, "MMBROKER_OPS_PORT": str(ops[name, i])},
                             tmp_path / f"{name}-{i}.log")
                 for name in ("listen", "match") for i in range(2)]
        archive = Archive.open(pg_url, upgrade=False)
        try:
            # Interleaved as real streams are: the pair's members in separate messages.
            produce(bootstrap, TRIGGERS, triggers)
            produce(bootstrap, GRBS, grbs)
            ok = wait_for(lambda: numbered(archive) == total, 180, 0.5)
            logs = {p.name: p.read_text()[-3000:] for p in tmp_path.glob("*.log")}
            assert ok, (numbered(archive), total, logs)
            time.sleep(2)  # nothing more may come
            # Each stage answers probes and scrapes on its ops port.
            for (name, _), port in ops.items():
                ready = json.loads(_get(f"http://127.0.0.1:{port}/ready"))
                assert ready["status"] == "ready", (name, ready)
            observed = sum(metric(_get(f"http://127.0.0.1:{ops['match', i]}/metrics"),
                                 "mmbroker_match_latency_seconds_count") or 0
                          for i in range(2))
            assert observed == total  # each alert matched once, by one worker or the other
            with archive.engine.connect() as conn:
                alerts = conn.execute(select(AlertRow.ivorn, AlertRow.match_seq)).all()
                coincidences = conn.execute(select(CoincidenceRow.id, CoincidenceRow.pairing,
                                                   CoincidenceRow.ivorn)).all()
                members = conn.execute(select(CoincidenceMember.coincidence_id,
                                              AlertRow.source, AlertRow.ivorn)
                                       .join(AlertRow, AlertRow.id == CoincidenceMember.alert_id)
                                       ).all()
                queued = dict(conn.execute(select(VOEventRow.ivorn, VOEventRow.id)).all())
                voevents = list(queued)
            streams = {h["stream"] for h in archive.stream_health()}
        finally:
            archive.close()
            for proc in procs:
                stop_process(proc, 20)
    assert len(alerts) == total == len({a.ivorn for a in alerts})
    assert sorted(a.match_seq for a in alerts) == list(range(1, total + 1))
    assert len(coincidences) == pairs, coincidences
    assert {c.pairing for c in coincidences} == {"hen-grb"}
    by_coincidence: dict[int, list[str]] = {}
    for m in members:
        by_coincidence.setdefault(m.coincidence_id, []).append(m.source)
    # A trigger is archived under the detector stream whatever topic carried it.
    assert all(sorted(v) == ["detector", GRBS] for v in by_coincidence.values()), by_coincidence
    # One VOEvent per coincidence and per detector trigger, none twice.
    published = [a.ivorn for a in alerts if "/detector#" in a.ivorn]
    assert len(published) == len(triggers)
    assert sorted(voevents) == sorted([c.ivorn for c in coincidences] + published)
    # A trigger's VOEvent is queued (so delivered) before any coincidence citing it.
    ivorn_of = {c.id: c.ivorn for c in coincidences}
    for m in members:
        if m.ivorn in queued:
            assert queued[m.ivorn] < queued[ivorn_of[m.coincidence_id]], m
    # The input streams have health rows; the broker's own alerts topic is no stream.
    assert streams == {TRIGGERS, GRBS}, streams
