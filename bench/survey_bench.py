"""A Rubin-sized burst of survey alerts through listen -> archive -> match (issue 17 item 5).

``python -m bench survey-burst``: ``--survey-alerts`` ZTF and Rubin alerts (half each, made
from the sample Avro files in ``shared/samples``, each a new object dated seconds before
now) with a few planted neutrino triggers and Fermi GBM notices, each of which has
``PARTNERS`` optical transients inside its error region after it (``hen-optical`` and
``grb-optical`` under the shipped pairings), go through one ``listen`` stage and 1, then 2,
``match`` workers on tansu and PostgreSQL (a fresh schema and broker each).  Half the
planted transients are produced before their rare partner, half after.

Figures, for each configuration in one run: wall time (s) from the first alert produced
to the last one matched (``matched_at`` set), CPU seconds of each match worker over that
span, match CPU ms per survey alert, and whether every planted coincidence was found
exactly once and no other.  Everything is encoded before the clock starts: the figure is
the stages', not the feeder's.
"""

from __future__ import annotations

import io
import json
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from bench._common import OUT, Figure
from bench.stages_bench import _cpu_s, _machine_busy, _ztf_factory

ZTF_TOPIC, RUBIN_TOPIC = "ztf_burst", "rubin_burst"
"""The burst's survey topics (``ztf*`` and ``rubin*`` names: read as ZTF and Rubin Avro)."""
PARTNERS = 2
"""Optical transients planted inside each rare alert's error region."""
PLANTED = ((30.0, 20.0), (150.0, -30.0), (270.0, 45.0))
"""(RA, Dec) in degrees of the planted neutrinos; GRBs at RA + 60 deg, Dec negated."""
CLEAR_DEG = 30.0
"""Background transients keep this far (deg) from every planted rare alert."""
BATCH = 100
"""Messages per batch of each stage (``MMBROKER_INGEST_BATCH_SIZE``)."""
WARMUP_EVERY_S = 2.0
"""How often (s) warm-up transients are produced until they are matched."""
SETTLE_S = 15.0
"""Wait (s) between the two warm-up waves: longer than the consumer session timeout (10 s),
so a second match worker has joined the group before the clock starts."""


def _rubin_factory() -> Any:
    """``(k, when, ra_deg, dec_deg) -> bytes``: Rubin alerts (Avro containers) made from
    the sample ``fakeAlert_v11_0.avro``, each a new DIASource; cutouts dropped (as the ZTF
    factory does), history kept."""
    import fastavro

    from tests.conftest import SAMPLES

    with open(SAMPLES / "rubin" / "fakeAlert_v11_0.avro", "rb") as handle:
        reader = fastavro.reader(handle)
        schema = fastavro.parse_schema(reader.writer_schema)
        record = next(reader)
    for cutout in ("cutoutScience", "cutoutTemplate", "cutoutDifference"):
        record[cutout] = None
    base = 300_000_000_000_000_000

    def make(k: int, when: datetime, ra_deg: float, dec_deg: float) -> bytes:
        ident = base + k
        record["diaSourceId"] = ident
        source = record["diaSource"]
        # midpointMjdTai is TAI: UTC + 37 s since 2017.
        source.update(diaSourceId=ident, ra=ra_deg, dec=dec_deg,
                      midpointMjdTai=(when.timestamp() + 37.0) / 86400.0 + 40587.0)
        out = io.BytesIO()
        fastavro.writer(out, schema, [record])
        return out.getvalue()

    return make


def _sep_deg(ra1: float, dec1: float, ra2: float, dec2: float) -> float:
    r1, d1, r2, d2 = map(np.radians, (ra1, dec1, ra2, dec2))
    cos = np.sin(d1) * np.sin(d2) + np.cos(d1) * np.cos(d2) * np.cos(r1 - r2)
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def burst(alerts: int, now: datetime) -> tuple[list[tuple[str, bytes]], dict[str, set[str]]]:
    """The messages of the burst, in the order produced, as (topic, bytes), and the planted
    coincidences: the event id of each rare alert -> the event ids of its partners."""
    from tests.dashboard_support import scenario
    from tests.stage_support import GRBS, TRIGGERS

    ztf, rubin = _ztf_factory(), _rubin_factory()
    rares: list[tuple[str, bytes, float, float, datetime, str]] = []
    for i, (ra, dec) in enumerate(PLANTED):
        # An hour before the burst, 1,000 s apart (beyond hen-grb's 500 s) and far apart.
        t_hen = now - timedelta(hours=1, seconds=2000 * i)
        trigger, _ = scenario(t_hen, ra_deg=ra, dec_deg=dec)
        trigger["event_id"] = f"SURVEY-HEN-{i}"
        rares.append((TRIGGERS, json.dumps(trigger).encode(), ra, dec, t_hen, "SURVEY-HEN-"
                      f"{i}"))
        g_ra, g_dec = (ra + 60.0) % 360.0, -dec
        t_grb = t_hen - timedelta(seconds=1000)
        _, grb = scenario(t_grb, ra_deg=g_ra - 0.5, dec_deg=g_dec - 0.5,
                          grb_number=800_000_000 + i)
        rares.append((GRBS, grb, g_ra, g_dec, t_grb, str(800_000_000 + i)))
    planted: dict[str, set[str]] = {r[5]: set() for r in rares}
    survey: list[tuple[str, bytes]] = []
    partners: list[tuple[str, bytes]] = []
    k = 0

    def transient(ra: float, dec: float, when: datetime) -> tuple[str, bytes, str]:
        nonlocal k
        k += 1
        if k % 2:
            return ZTF_TOPIC, ztf(k, when, ra, dec), "ztf"
        return RUBIN_TOPIC, rubin(k, when, ra, dec), "rubin"

    for _, _, ra, dec, when, event in rares:
        for j in range(PARTNERS):
            topic, data, _ = transient(ra + 0.1 * (j + 1), dec,
                                       when + timedelta(minutes=10 * (j + 1)))
            partners.append((topic, data))
            planted[event].add(f"k{k}")
    background = alerts - len(partners)
    n = 0
    while len(survey) < background:
        n += 1
        ra = (137.50776 * n) % 360
        dec = float(np.degrees(np.arcsin(2 * ((n * 0.6180339887) % 1) - 1)))
        if any(_sep_deg(ra, dec, r[2], r[3]) < CLEAR_DEG for r in rares):
            continue
        topic, data, _ = transient(ra, dec, now - timedelta(seconds=60) +
                                   timedelta(milliseconds=len(survey)))
        survey.append((topic, data))
    # Half the planted transients before their rare partners, half after, amid the burst.
    half = len(survey) // 2
    early = [p for i, p in enumerate(partners) if i % 2 == 0]
    late = [p for i, p in enumerate(partners) if i % 2 == 1]
    messages = (survey[:half] + early + [(r[0], r[1]) for r in rares] + late
                + survey[half:])
    return messages, planted


def _event_id(document: dict[str, Any]) -> str:
    """A planted partner's label ``k<n>`` from its event id, else the event id."""
    event = str(document.get("event_id"))
    for base in (3_000_000_000_000_000_000, 300_000_000_000_000_000):
        if event.isdigit() and base <= int(event) < base + 10_000_000:
            return f"k{int(event) - base}"
    return event.rpartition(":")[2]  # (a detector trigger's is "<detector>:<event id>")


def _matched(archive: Any) -> int:
    """How many alerts the match stage has matched (``matched_at`` set)."""
    from sqlalchemy import func, select

    from broker.archive.models import AlertRow

    with archive.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(AlertRow).where(
            AlertRow.matched_at.is_not(None))).scalar_one()


def run_once(workers: int, alerts: int, listen: int = 1) -> dict[str, Any]:
    """One fresh broker with ``listen`` listen stages and ``workers`` match workers; the
    burst through it.  What was measured."""
    from kafka import KafkaProducer
    from sqlalchemy import func, select

    from broker.archive.models import AlertRow, CoincidenceMember, CoincidenceRow
    from broker.archive.store import Archive
    from tests.conftest import pg_schema
    from tests.servers import stop_process, tansu
    from tests.stage_support import GRBS, TRIGGERS, stage_env, start_stage

    now = datetime.now(UTC)
    messages, planted = burst(alerts, now)
    ztf = _ztf_factory()
    with tempfile.TemporaryDirectory(dir=OUT if OUT.exists() else None) as tmp, \
            pg_schema("bench") as url, tansu(Path(tmp)) as bootstrap:
        Archive.open(url).close()
        # Batches of BATCH messages: a listen stage's batch of 500 full ZTF alerts took
        # longer than the consumer's poll interval here (10 s, see DESIGN.md's tansu trap)
        # and was read again and again.
        env = stage_env(bootstrap, f"survey-{workers}", 0, 0, MMBROKER_LOG_LEVEL="WARNING",
                        MMBROKER_INGEST_BATCH_SIZE=str(BATCH))
        env["MMBROKER_KAFKA_TOPICS"] = f"{TRIGGERS},{GRBS},{ZTF_TOPIC},{RUBIN_TOPIC}"
        del env["MMBROKER_CROSSMATCH_LIVE_WINDOW_S"]
        procs = {(stage, i): start_stage(stage, url, env, Path(tmp) / f"{stage}-{i}.log")
            for stage, count in (("listen", listen), ("match", workers)) for i in range(count)}
        archive = Archive.open(url, upgrade=False)
        producer = KafkaProducer(bootstrap_servers=[bootstrap], acks="all", linger_ms=20,
                                 batch_size=1024 * 1024, max_request_size=32 * 1024 * 1024,
                                 retries=10, request_timeout_ms=120_000,
                                 delivery_timeout_ms=300_000)
        try:
            # Warm-up transients far from the planted alerts (near the south pole), in two
            # waves: the first until the stages are up, the second after the consumer group
            # settled (a worker joining late rebalances it), before the clock starts.
            sent = 0
            for wave in range(2):
                started = time.monotonic()
                while True:
                    for _ in range(8):
                        sent += 1
                        producer.send(ZTF_TOPIC, ztf(9_000_000 + sent, now, (7.0 * sent) % 360,
                                                     -85.0))
                    producer.flush()
                    time.sleep(WARMUP_EVERY_S)
                    if _matched(archive) >= sent:
                        break
                    if time.monotonic() - started > 300:
                        raise RuntimeError("the warm-up alerts were not matched in 300 s")
                if wave == 0:
                    time.sleep(SETTLE_S)
            expected = sent + len(messages)
            cpu0 = {key: _cpu_s(proc.pid) for key, proc in procs.items()}
            busy0, all0 = _machine_busy()
            first = time.monotonic()
            # Every send acknowledged (a send that failed would pass silently otherwise).
            futures = [producer.send(topic, data) for topic, data in messages]
            producer.flush()
            for future in futures:
                future.get(timeout=60)
            produced = time.monotonic()

            while (done := _matched(archive)) < expected:
                if time.monotonic() - first > 900:
                    raise RuntimeError(f"{workers} worker(s): {done} of {expected} matched "
                                       "in 900 s")
                time.sleep(0.1)
            end = time.monotonic()
            busy1, all1 = _machine_busy()
            cpu = {key: _cpu_s(proc.pid) - cpu0[key] for key, proc in procs.items()}
            time.sleep(3.0)  # nothing more may come
            with archive.engine.connect() as conn:
                members = conn.execute(
                    select(CoincidenceRow.id, CoincidenceRow.pairing, AlertRow.document)
                    .join(CoincidenceMember, CoincidenceMember.coincidence_id ==
                          CoincidenceRow.id)
                    .join(AlertRow, AlertRow.id == CoincidenceMember.alert_id)).all()
                archived = conn.execute(select(func.count()).select_from(AlertRow)
                                        ).scalar_one()
        finally:
            producer.close(timeout=10)
            archive.close()
            for proc in procs.values():
                stop_process(proc, 20)
    found: dict[int, list[str]] = {}
    pairing: dict[int, str] = {}
    for m in members:
        found.setdefault(m.id, []).append(_event_id(m.document))
        pairing[m.id] = m.pairing
    want = sorted(tuple(sorted((rare, k))) for rare, ks in planted.items() for k in ks)
    got = sorted(tuple(sorted(v)) for v in found.values())
    return {"workers": workers, "listen": listen, "alerts": len(messages),
            "wall_s": end - first, "produce_s": produced - first,
            "match_cpu_s": [v for (s, _), v in sorted(cpu.items()) if s == "match"],
            "listen_cpu_s": sum(v for (s, _), v in cpu.items() if s == "listen"),
            "busy": (busy1 - busy0) / (all1 - all0), "archived": archived,
            "expected": expected, "planted": len(want), "found": len(got),
            "exact": got == want, "extra": sorted(set(got) - set(want)),
            "missing": sorted(set(want) - set(got)), "pairings": sorted(set(pairing.values())),
            "survey": sum(1 for t, _ in messages if t in (ZTF_TOPIC, RUBIN_TOPIC))}


def bench_survey_burst(alerts: int = 10_000, listen: int = 1) -> list[Figure]:
    """The burst through 1 and then 2 match workers, one run; figures of each and the
    ratios."""
    figures: list[Figure] = []
    runs = {workers: run_once(workers, alerts, listen) for workers in (1, 2)}
    for workers, r in runs.items():
        label = f"{r['listen']} listen + {workers} match"
        per_alert_ms = 1000 * sum(r["match_cpu_s"]) / r["survey"]
        shares = "/".join(f"{v:.1f}" for v in r["match_cpu_s"])
        figures += [
            Figure("survey-burst", "postgresql", f"{label}, first produced to last matched",
                   r["wall_s"], "s",
                   f"{r['alerts']} alerts ({r['survey']} ZTF/Rubin, {r['planted']} planted "
                   f"pairs); producing took {r['produce_s']:.1f} s; machine busy "
                   f"{100 * r['busy']:.0f}%"),
            Figure("survey-burst", "postgresql", f"{label}, match CPU per survey alert",
                   per_alert_ms, "ms",
                   f"match workers' CPU {shares} s; listen {r['listen_cpu_s']:.1f} s"),
            Figure("survey-burst", "postgresql", f"{label}, match CPU per alert per worker",
                   per_alert_ms / workers, "ms", "the busiest worker: "
                   f"{1000 * max(r['match_cpu_s']) / r['survey']:.2f} ms"),
            Figure("survey-burst", "postgresql", f"{label}, planted coincidences found once",
                   r["found"], f"of {r['planted']}",
                   ("exactly the planted ones" if r["exact"] else "NOT exactly the planted "
                    f"ones: missing {r['missing']}, extra {r['extra']}")
                   + f" ({', '.join(r['pairings'])}); {r['archived']} archived of "
                   f"{r['expected']}")]
    figures.append(Figure("survey-burst", "postgresql", "wall-clock ratio 1 / 2 workers",
                          runs[1]["wall_s"] / runs[2]["wall_s"], "x"))
    return figures
