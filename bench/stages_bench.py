"""The stages as separate processes on tansu and PostgreSQL: scaling and a soak.

``python -m bench scaling``: with 1 and then 2 ``listen`` + ``match`` workers, alerts/s
from starting the workers, and from the first alert archived (start-up apart), to the
last alert numbered by the match stage; CPU seconds per 1,000 alerts of each stage, how
busy the machine was, and the ratio.  ``python -m bench soak``: one ``listen`` + one
``match`` worker fed at ``--soak-rate`` alerts/s for ``--soak-minutes``; resident memory
of each worker and the receipt -> matched latency (p50, p99) per minute, first minute
against last, and from when the late-arrival slack (``--soak-slack-s``) was full.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench._common import OUT, Figure


def _cpu_s(pid: int) -> float:
    """CPU time (s, user + system) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of every core since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return float(sum(values) - idle), float(sum(values))


def bench_scaling(alerts: int = 8000, *, late: bool = False) -> list[Figure]:
    """The stages' rate with 1 and 2 workers of each.

    The inputs span days (:func:`tests.stage_support.inputs`: one event every
    ``SPACING_S``, the newest an hour old).  By default the stages' late-arrival slack
    covers the whole span, so every alert is matched from memory as if it had arrived
    on time; ``late`` keeps the shipped slack (``crossmatch_late_slack_s``, 1 h): then
    every alert is a late one, matched against the archive's history, as after an
    outage.  Either way the run checks from the archive that the alerts were what it
    claims, and stops otherwise.
    """
    from broker.archive.store import Archive
    from broker.config import Settings
    from tests.conftest import pg_schema
    from tests.servers import produce, stop_process, tansu
    from tests.stage_support import (
        GRBS,
        TRIGGERS,
        inputs,
        live_window_s,
        numbered,
        stage_env,
        start_stage,
    )

    pairs = alerts // 40
    singles = (alerts - 2 * pairs) // 2
    triggers, grbs = inputs(pairs, singles)
    total = len(triggers) + len(grbs)
    # Late: the stages' default slack, as shipped; on time: one holding every input.
    slack_s = Settings.model_fields["crossmatch_late_slack_s"].default if late \
        else live_window_s(pairs, singles)
    slack = {} if late else {"MMBROKER_CROSSMATCH_LATE_SLACK_S": str(slack_s)}
    kind = f"late (past the {slack_s:g} s slack)" if late else "on time (inside the slack)"
    figures: list[Figure] = []
    steady: dict[int, float] = {}
    for workers in (1, 2):
        with tempfile.TemporaryDirectory(dir=OUT if OUT.exists() else None) as tmp, \
                pg_schema("bench") as url, tansu(Path(tmp)) as bootstrap:
            Archive.open(url).close()
            env = stage_env(bootstrap, f"scaling-{workers}", pairs, singles,
                            MMBROKER_LOG_LEVEL="WARNING", **slack)
            # Input first, workers after: the figure is the stages' rate, not the producer's.
            produce(bootstrap, TRIGGERS, triggers)
            produce(bootstrap, GRBS, grbs)
            archive = Archive.open(url, upgrade=False)
            start = time.monotonic()
            procs = {(stage, i): start_stage(stage, url, env, Path(tmp) / f"{stage}-{i}.log")
                     for stage in ("listen", "match") for i in range(workers)}
            try:
                # Start-up (imports, engine warm-up, consumer-group joins) apart from the
                # steady rate: from the first alert archived to the last one numbered.
                while archive.count_alerts() == 0:
                    if time.monotonic() - start > 300:
                        raise RuntimeError("no alert archived in 300 s")
                    time.sleep(0.05)
                first = time.monotonic()
                busy0, all0 = _machine_busy()
                cpu0 = {key: _cpu_s(proc.pid) for key, proc in procs.items()}
                while numbered(archive) < total:
                    if time.monotonic() - start > 900:
                        raise RuntimeError(f"{workers} worker(s): only {numbered(archive)} "
                                           f"of {total} matched in 900 s")
                    time.sleep(0.1)
                end = time.monotonic()
                busy1, all1 = _machine_busy()
                cpu = {key: _cpu_s(proc.pid) - cpu0[key] for key, proc in procs.items()}
                _check_lateness(archive, late=late, slack_s=slack_s)
            finally:
                archive.close()
                for proc in procs.values():
                    stop_process(proc, 20)
        steady[workers] = total / (end - first)
        label = f"{workers} listen + {workers} match, {kind}"
        per_k = {stage: 1000 * sum(v for (s, _), v in cpu.items() if s == stage) / total
                 for stage in ("listen", "match")}
        figures += [
            Figure("stages", "postgresql", f"{label}, start to last numbered",
                   total / (end - start), "alerts/s",
                   f"{total} alerts ({pairs} planted pairs) already on tansu; includes "
                   f"{first - start:.1f} s of start-up to the first alert archived"),
            Figure("stages", "postgresql", f"{label}, first archived to last numbered",
                   steady[workers], "alerts/s",
                   f"CPU s per 1,000 alerts: listen {per_k['listen']:.2f}, match "
                   f"{per_k['match']:.2f}; match workers' shares "
                   + "/".join(f"{v:.1f}" for (s, _), v in sorted(cpu.items()) if s == "match")
                   + " s"),
            Figure("stages", "postgresql", f"{label}, machine busy", 100 * (busy1 - busy0) /
                   (all1 - all0), "%", f"all {os.cpu_count()} cores, first archived to last "
                   "numbered (workers, PostgreSQL, tansu, this benchmark)")]
    figures.append(Figure("stages", "postgresql", "ratio 2 / 1 (first archived to last "
                          "numbered)", steady[2] / steady[1], "x"))
    return figures


def _check_lateness(archive: Any, *, late: bool, slack_s: float) -> None:
    """Stop loudly unless every alert was matched inside the slack (``late`` False) or
    arrived past it (``late`` True): figures of the other path would mislead."""
    from sqlalchemy import func, select

    from broker.archive.models import AlertRow

    with archive.engine.connect() as conn:
        oldest, newest, first, last = conn.execute(select(
            func.min(AlertRow.event_time), func.max(AlertRow.event_time),
            func.min(AlertRow.received_at), func.max(AlertRow.matched_at))).one()
    if late and (first - newest).total_seconds() <= slack_s:
        raise RuntimeError(f"the newest alert arrived {first - newest} after its event, "
                           f"inside the {slack_s:.0f} s slack: not a run of late alerts")
    if not late and (last - oldest).total_seconds() >= slack_s:
        raise RuntimeError(f"the oldest alert was matched {last - oldest} after its event, "
                           f"past the {slack_s:.0f} s slack: it was a late alert")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


OPTICAL = "ztf_soak"
"""The soak's optical survey topic (a ``ztf*`` name: read as ZTF Avro)."""


def _ztf_factory() -> Any:
    """``(k, now, ra_deg, dec_deg) -> bytes``: ZTF alerts (Avro containers) made from a real
    one in ``shared/samples``, each a new object and candidate at ``now``; history kept,
    image cutouts dropped (6 MB/s of stamps would measure the disk, not the broker).

    Encoding a full ZTF container costs the feeder milliseconds, more than the listen
    stage spends on it; so one is encoded with marker values and each alert patches its
    own into a copy (same byte lengths: the container stays valid).
    """
    import io
    import struct
    from datetime import datetime

    import fastavro

    from tests.conftest import SAMPLES

    path = next((SAMPLES / "ztf-avro").glob("ztf_*v4_02.avro"))
    with open(path, "rb") as handle:
        reader = fastavro.reader(handle)
        schema = fastavro.parse_schema(reader.writer_schema)
        record = next(reader)
    for cutout in ("cutoutScience", "cutoutTemplate", "cutoutDifference"):
        record[cutout] = None
    base_candid, marks = 3_000_000_000_000_000_000, (2461000.123456789, 123.456789012345,
                                                      -12.3456789012345)
    record.update(objectId="ZTF26aaaaaaa", candid=base_candid)
    record["candidate"].update(candid=base_candid, jd=marks[0], ra=marks[1], dec=marks[2])
    out = io.BytesIO()
    fastavro.writer(out, schema, [record])
    template = out.getvalue()

    def varint(value: int) -> bytes:
        zigzag, encoded = value << 1, bytearray()  # Avro long: zigzag, then 7-bit groups
        while zigzag >= 0x80:
            encoded.append((zigzag & 0x7F) | 0x80)
            zigzag >>= 7
        return bytes([*encoded, zigzag])

    def offsets(needle: bytes, count: int) -> list[int]:
        found = [m.start() for m in re.finditer(re.escape(needle), template)]
        assert len(found) == count, (needle, found)
        return found

    name_at = offsets(b"ZTF26aaaaaaa", 1)[0] + 5
    candid_at = offsets(varint(base_candid), 2)
    jd_at, ra_at, dec_at = (offsets(struct.pack("<d", m), 1)[0] for m in marks)

    def make(k: int, now: datetime, ra_deg: float, dec_deg: float) -> bytes:
        data = bytearray(template)
        data[name_at:name_at + 7] = bytes(97 + (k // 26 ** i) % 26 for i in range(7))
        candid = varint(base_candid + k)
        for at in candid_at:
            data[at:at + len(candid)] = candid
        struct.pack_into("<d", data, jd_at, now.timestamp() / 86400.0 + 2440587.5)
        struct.pack_into("<d", data, ra_at, ra_deg)
        struct.pack_into("<d", data, dec_at, dec_deg)
        return bytes(data)

    return make


def bench_soak(minutes: float = 30.0, rate_per_s: float = 100.0,
               slack_s: float | None = None) -> list[Figure]:
    """One listen + one match worker fed at ``rate_per_s`` for ``minutes``.

    ``slack_s`` is the match engine's late-arrival slack
    (``MMBROKER_CROSSMATCH_LATE_SLACK_S``; None: the setting's default): how long it
    holds the survey's alerts, the bulk of the feed, in memory.  Resident memory
    grows by design until the slack is full; a soak shorter than the slack cannot
    tell that growth from a leak.  With a slack shorter than the run, memory growth
    and latency drift are also reported from the first sample after it filled,
    where a steady state must be flat.
    """
    from datetime import UTC, datetime

    from sqlalchemy import func, select

    from broker.archive.models import AlertRow
    from broker.archive.store import Archive
    from tests.conftest import pg_schema
    from tests.dashboard_support import scenario
    from tests.servers import stop_process, tansu
    from tests.stage_support import GRBS, TRIGGERS, stage_env, start_stage

    seconds = minutes * 60.0
    with tempfile.TemporaryDirectory(dir=OUT if OUT.exists() else None) as tmp, \
            pg_schema("bench") as url, tansu(Path(tmp)) as bootstrap:
        Archive.open(url).close()
        # Events seconds old, as a running broker's are; the window as asked.
        env = stage_env(bootstrap, "soak", 0, 0, MMBROKER_LOG_LEVEL="WARNING")
        env["MMBROKER_KAFKA_TOPICS"] += f",{OPTICAL}"
        ztf = _ztf_factory()
        del env["MMBROKER_CROSSMATCH_LIVE_WINDOW_S"]
        if slack_s is not None:
            env["MMBROKER_CROSSMATCH_LATE_SLACK_S"] = str(slack_s)
        procs = {stage: start_stage(stage, url, env, Path(tmp) / f"{stage}.log")
                 for stage in ("listen", "match")}
        archive = Archive.open(url, upgrade=False)
        stop = threading.Event()
        sent = [0]

        def feed() -> None:
            from kafka import KafkaProducer

            producer = KafkaProducer(bootstrap_servers=[bootstrap], acks="all", linger_ms=5)
            start, k = time.monotonic(), 0
            while not stop.is_set() and time.monotonic() - start < seconds:
                due = int((time.monotonic() - start) * rate_per_s)
                # A feeder that fell behind gives up the backlog rather than run past the
                # end (and the figures then say what rate was really fed).
                k = max(k, due - int(rate_per_s))
                while k < due:
                    # Positions on a golden-angle spiral over the sky.  An optical
                    # survey's alerts are the bulk, as on a busy night.  Every 1,000th
                    # alert starts a drill: a test neutrino trigger and a test GRB notice
                    # that coincide (test alerts pair only with test alerts; a real GBM
                    # region pairs with every optical alert inside it for 7 days, so
                    # real GRBs at this pace would make the load grow all run long).
                    ra = (137.50776 * k) % 360
                    dec = float(np.degrees(np.arcsin(2 * ((k * 0.6180339887) % 1) - 1)))
                    now = datetime.now(UTC)
                    if k % 1000 == 0:
                        trigger, grb = scenario(now, ra_deg=ra, dec_deg=dec,
                                                grb_number=700_000_000 + k)
                        trigger["real"] = False
                        notice = json.loads(grb)
                        notice["alert_tense"] = "test"
                        producer.send(TRIGGERS, json.dumps(trigger).encode())
                        producer.send(GRBS, json.dumps(notice).encode())
                        k += 2
                        sent[0] += 2
                        continue
                    producer.send(OPTICAL, ztf(k, now, ra, dec))
                    k += 1
                    sent[0] += 1
                producer.flush()
                time.sleep(0.05)
            producer.close()

        feeder = threading.Thread(target=feed)
        feeder.start()
        # (s since start, listen RSS MiB, match RSS MiB, p50 s, p99 s, archived not matched)
        samples: list[tuple[float, float, float, float, float, int]] = []
        started = time.monotonic()
        last_matched = None
        try:
            while feeder.is_alive():
                time.sleep(60.0 if minutes >= 5 else 10.0)
                with archive.engine.connect() as conn:
                    # By when they were matched, not by id: the slowest alerts are
                    # matched after later ids and must count in their own minute.
                    recent = AlertRow.matched_at.is_not(None) if last_matched is None \
                        else AlertRow.matched_at > last_matched
                    rows = conn.execute(select(AlertRow.received_at, AlertRow.matched_at)
                                        .where(recent)).all()
                    backlog = conn.execute(select(func.count()).where(
                        AlertRow.matched_at.is_(None))).scalar_one()
                if rows:
                    last_matched = max(r.matched_at for r in rows)
                    lat = np.array([(r.matched_at - r.received_at).total_seconds()
                                    for r in rows])
                    samples.append((time.monotonic() - started, _rss_mb(procs["listen"].pid),
                                    _rss_mb(procs["match"].pid), float(np.median(lat)),
                                    float(np.percentile(lat, 99)), backlog))
        finally:
            stop.set()
            feeder.join(60)
            archive.close()
            for proc in procs.values():
                stop_process(proc, 20)
    first, last = samples[0], samples[-1]
    if slack_s is None:
        from broker.config import Settings

        slack_s = float(Settings.model_fields["crossmatch_late_slack_s"].default)
    slack = f"{slack_s:g} s"
    note = (f"{sent[0]} alerts at {rate_per_s:.0f}/s over {minutes:g} min, 1 listen + 1 match "
            f"worker, PostgreSQL, late slack {slack}; {len(samples)} samples")

    def growth(a: float, b: float) -> str:
        return f"{a:.0f} -> {b:.0f} MiB ({100 * (b / a - 1):+.1f}%)"

    figures = [
        Figure("soak", "postgresql", "listen RSS first -> last", last[1], "MiB",
               growth(first[1], last[1])),
        Figure("soak", "postgresql", "match RSS first -> last", last[2], "MiB",
               growth(first[2], last[2])),
        Figure("soak", "postgresql", "received->matched p99, first sample", first[4] * 1e3,
               "ms", note),
        Figure("soak", "postgresql", "received->matched p99, last sample", last[4] * 1e3,
               "ms", f"drift {100 * (last[4] / first[4] - 1):+.1f}%; p50 "
                     f"{first[3] * 1e3:.0f} -> {last[3] * 1e3:.0f} ms")]
    full = [x for x in samples if x[0] >= slack_s + 60.0]
    if len(full) >= 2:
        figures += [
            Figure("soak", "postgresql", "listen RSS, slack full -> last", last[1], "MiB",
                   f"from {full[0][0] / 60:.0f} min: " + growth(full[0][1], last[1])),
            Figure("soak", "postgresql", "match RSS, slack full -> last", last[2], "MiB",
                   f"from {full[0][0] / 60:.0f} min: " + growth(full[0][2], last[2])),
            Figure("soak", "postgresql", "received->matched p99, slack full -> last",
                   last[4] * 1e3, "ms", f"{full[0][4] * 1e3:.0f} -> {last[4] * 1e3:.0f} ms "
                   f"({100 * (last[4] / full[0][4] - 1):+.1f}%)")]
    figures.append(Figure("soak", "postgresql", "archived, not yet matched (largest)",
                          max(x[5] for x in samples), "alerts",
                          "at the samples; a stage keeping up stays near one second's input"))
    per_minute = "; ".join(f"{t / 60:.0f} min {m:.0f} MiB p99 {p99 * 1e3:.0f} ms"
                           for t, _, m, _, p99, _ in samples)
    figures.append(Figure("soak", "postgresql", "samples", len(samples), "",
                          f"match worker: {per_minute}"))
    return figures
