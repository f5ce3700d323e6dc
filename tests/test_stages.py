"""The stages as separate processes on Kafka and PostgreSQL: two listen and two match
workers, real tansu and PostgreSQL; every alert archived once, every planted coincidence
found once, every VOEvent queued once."""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from broker.archive.models import AlertRow, CoincidenceMember, CoincidenceRow, VOEventRow
from broker.archive.store import Archive
from broker.web.latency import step_times
from tests.conftest import chain_forks, free_port, metric
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
                ids = dict(conn.execute(select(AlertRow.id, AlertRow.ivorn)).all())
                steps = step_times(conn, list(ids))
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
    # The dashboard's latency chain as the workers left it: each trigger published by
    # its own VOEvent (queued before the match lock), a GRB only by the coincidence its
    # arrival completed.
    assert chain_forks(steps, ids) == len(triggers)


def _alert_document(event_id: str, messenger: str, facility: str, when: datetime,
                    ra_deg: float,
                    dec_deg: float, radius_deg: float) -> bytes:
    """An Alert document as another mmbroker's output topic delivers it."""
    return json.dumps({
        "schema_version": "1.0", "id": f"ivo://test.mmbroker/file#{event_id}-0",
        "source": f"test.{facility.lower()}", "messenger": messenger, "facility": facility,
        "event_id": event_id, "revision": 0, "alert_type": "initial", "role": "observation",
        "trigger_time": when.isoformat().replace("+00:00", "Z"),
        "data_rights": {"level": "public"},
        "localization": {"kind": "point", "ra_deg": ra_deg, "dec_deg": dec_deg,
                         "error_radius_deg": radius_deg, "containment": 0.9}}).encode()


@pytest.mark.timeout(420)
def test_survey_alerts_matched_by_two_workers_at_once_find_each_planted_pair_once(
        tmp_path: Path, pg_url: str) -> None:
    """Optical transients (the survey) and neutrinos through two listen and two match
    workers on tansu and PostgreSQL, a match worker killed -9 amid the burst and started
    again: each planted neutrino-transient pair (transients before and after their
    neutrino in the stream) is found once and no other; the neutrinos are numbered, the
    transients only marked matched."""
    topic = "mmbroker.test-alerts"  # (Alert documents: another mmbroker's output topic)
    now = datetime.now(UTC)
    planted: dict[str, set[str]] = {}
    messages: list[bytes] = []
    rare: list[bytes] = []
    for i, (ra, dec) in enumerate(((30.0, 20.0), (150.0, -30.0), (270.0, 45.0))):
        planted[f"N{i}"] = {f"P{i}a", f"P{i}b"}
        rare.append(_alert_document(f"N{i}", "neutrino", "IceCube",
                                    now - timedelta(hours=2), ra, dec, 1.0))
    background = [_alert_document(f"Z{k}", "optical", "ZTF",
                                  now - timedelta(minutes=30, seconds=-k), (7.0 * k) % 360,
                                  -80.0, 0.0003) for k in range(400)]
    early = [_alert_document(f"P{i}a", "optical", "ZTF", now - timedelta(hours=1), ra + 0.2,
                             dec, 0.0003)
             for i, (ra, dec) in enumerate(((30.0, 20.0), (150.0, -30.0), (270.0, 45.0)))]
    late = [_alert_document(f"P{i}b", "optical", "ZTF", now - timedelta(hours=1), ra - 0.2,
                            dec, 0.0003)
            for i, (ra, dec) in enumerate(((30.0, 20.0), (150.0, -30.0), (270.0, 45.0)))]
    messages = background[:200] + early + rare + late + background[200:]
    total = len(messages)
    Archive.open(pg_url).close()
    with tansu(tmp_path) as bootstrap:
        env = stage_env(bootstrap, "survey-test", 0, 0, MMBROKER_KAFKA_TOPICS=topic,
                        MMBROKER_INGEST_BATCH_SIZE="50")
        del env["MMBROKER_CROSSMATCH_LIVE_WINDOW_S"]
        procs = {(name, i): start_stage(name, pg_url, env, tmp_path / f"{name}-{i}.log")
                 for name in ("listen", "match") for i in range(2)}
        archive = Archive.open(pg_url, upgrade=False)

        def matched() -> int:
            with archive.engine.connect() as conn:
                return conn.execute(select(func.count()).select_from(AlertRow).where(
                    AlertRow.matched_at.is_not(None))).scalar_one()

        try:
            produce(bootstrap, topic, messages[:total // 2])
            assert wait_for(lambda: matched() >= 100, 180, 0.2), matched()
            procs["match", 0].send_signal(signal.SIGKILL)  # amid the burst
            procs["match", 0].wait()
            procs["match", 0] = start_stage("match", pg_url, env, tmp_path / "match-0.log")
            produce(bootstrap, topic, messages[total // 2:])
            ok = wait_for(lambda: matched() == total, 240, 0.5)
            logs = {p.name: p.read_text()[-3000:] for p in tmp_path.glob("*.log")}
            assert ok, (matched(), total, logs)
            time.sleep(3)  # nothing more may come
            with archive.engine.connect() as conn:
                alerts = conn.execute(select(AlertRow.event_id, AlertRow.messenger,
                                             AlertRow.match_seq)).all()
                members = conn.execute(select(CoincidenceRow.ivorn, CoincidenceRow.pairing,
                                              CoincidenceRow.state, AlertRow.event_id)
                                       .join(CoincidenceMember, CoincidenceMember
                                             .coincidence_id == CoincidenceRow.id)
                                       .join(AlertRow, AlertRow.id == CoincidenceMember.alert_id)
                                       ).all()
                voevents = set(conn.execute(select(VOEventRow.ivorn)).scalars())
        finally:
            archive.close()
            for proc in procs.values():
                stop_process(proc, 20)
    assert len(alerts) == total
    assert sorted(a.match_seq for a in alerts if a.messenger == "neutrino") == [1, 2, 3]
    assert all(a.match_seq is None for a in alerts if a.messenger == "optical")
    found: dict[str, list[str]] = {}
    for m in members:
        assert (m.pairing, m.state) == ("hen-optical", "new"), m
        found.setdefault(m.ivorn, []).append(m.event_id)
    want = sorted(tuple(sorted((n, p))) for n, ps in planted.items() for p in ps)
    assert sorted(tuple(sorted(v)) for v in found.values()) == want
    assert set(found) <= voevents  # each queued (the outbox takes an IVORN once)
