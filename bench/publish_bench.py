"""Publishing latency: a trigger POSTed to `mmbroker serve` until a VTP subscriber has it.

Beside it, in the same run and through the same Comet broker, the bare Comet
hop: a VOEvent submitted over VTP straight to Comet's receiver until the same
subscriber has it.  Both at ``rate_hz`` events per second.

The subscriber is a VTP client connected to Comet's broadcast port (this
project's VTP subscriber, which speaks the protocol as Comet's own does),
recording when each IVORN arrives; Comet's stock subscriber can only report an
event by writing a file or spawning a process, which would add its own delay.

Every trigger is dated at the moment it is POSTed (the example document's fixed
``time`` is replaced, and the benchmark stops if a trigger it calls fresh is not);
a second run dates them 14 days back, a late alert, side by side in the same run
(issue 17: a late alert must cost little more than a fresh one); a third sends a burst of
100 triggers/s for 10 s, none of which may be lost.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench._common import Figure, percentiles_ms, start_server, stop_process
from listeners.envelope import Outcome, RawMessage

ROOT = Path(__file__).resolve().parent.parent
BURST_RATE_HZ = 100.0
BURST_S = 10.0
"""The burst after the steady runs: 100 triggers/s for 10 s, every one must arrive."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Arrivals:
    """The VTP subscriber's :class:`~listeners.envelope.Sink` here: it notes when each
    IVORN arrives and archives nothing."""

    def __init__(self) -> None:
        self.at: dict[str, float] = {}
        self.lock = threading.Lock()

    def receive(self, source: str, data: bytes, *, received_at: datetime | None = None,
                transport: dict[str, Any] | None = None) -> RawMessage:
        match = re.search(rb'ivorn="([^"]+)"', data[:4096])
        if match:
            with self.lock:
                self.at.setdefault(match.group(1).decode(), time.perf_counter())
        return RawMessage(source, data, received_at=received_at or datetime.now(UTC))

    def ingest(self, messages: Sequence[RawMessage]) -> list[Outcome]:
        return []

    def set_stream_connected(self, streams: Sequence[str], connected: bool) -> None:
        pass


def _wait(predicate: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def bench_publish(n: int = 200, rate_hz: float = 20.0) -> list[Figure]:
    from listeners.vtp import VTPSubscriber

    tmp = Path(tempfile.mkdtemp(prefix="mmbroker-bench-"))
    ports = {"http": _free_port(), "receive": _free_port(), "broadcast": _free_port()}
    env = {**os.environ, "MMBROKER_DATA_DIR": str(tmp / "data"),
           "MMBROKER_HTTP_PORT": str(ports["http"]),
           "MMBROKER_VTP_RECEIVE_PORT": str(ports["receive"]),
           "MMBROKER_VTP_BROADCAST_PORT": str(ports["broadcast"]),
           "MMBROKER_LOG_LEVEL": "WARNING",
           # One token sends the 100/s burst: the per-token write limit (20/s after 200)
           # is a defence against a runaway client, not what is measured here.
           "MMBROKER_WRITE_RATE_LIMIT_PER_S": str(2 * BURST_RATE_HZ),
           "MMBROKER_API_RATE_LIMIT_PER_S": str(2 * BURST_RATE_HZ)}
    exe = Path(sys.executable).with_name("mmbroker")
    db = str(tmp / "bench.sqlite3")
    # Only `db upgrade` and `serve` make an archive; the token goes in first.
    subprocess.run([str(exe), "--db", db, "db", "upgrade"], env=env, capture_output=True,
                   check=True)
    token = subprocess.run([str(exe), "--db", db, "token", "create", "--scope",
                            "write:triggers", "--detector", "KM3NeT"], env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    log = open(tmp / "serve.log", "wb")  # noqa: SIM115 - closed below
    proc = start_server([str(exe), "--db", db, "serve"], env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{ports['http']}"
    arrivals = _Arrivals()
    stop = threading.Event()
    try:
        if not _wait(lambda: _health(base), 60):
            raise RuntimeError(f"broker did not start; see {tmp / 'serve.log'}")
        sub = VTPSubscriber("127.0.0.1", ports["broadcast"], arrivals,
                            local_ivo="ivo://bench.mmbroker/subscriber")
        threading.Thread(target=sub.run, args=(stop,), daemon=True).start()
        if not sub.connected.wait(20):
            raise RuntimeError("subscriber did not connect")
        # Warm-up, not counted: first connections, first queries, caches.
        _bare_hop(ports["receive"], arrivals, 10, rate_hz)
        _end_to_end(base, token, arrivals, 10, rate_hz)
        bare = _bare_hop(ports["receive"], arrivals, n, rate_hz)
        e2e = _end_to_end(base, token, arrivals, n, rate_hz)
        late = _end_to_end(base, token, arrivals, n, rate_hz, age_s=LATE_AGE_S)
        burst = _end_to_end(base, token, arrivals, int(BURST_RATE_HZ * BURST_S),
                            BURST_RATE_HZ, lossy=True)
    finally:
        stop.set()
        stop_process(proc)
        log.close()
    b50, b95, b99 = percentiles_ms(bare)
    e50, e95, e99 = percentiles_ms(e2e)
    l50, _l95, l99 = percentiles_ms(late)
    s50, _s95, s99 = percentiles_ms(burst) if burst else (math.nan,) * 3
    burst_n = int(BURST_RATE_HZ * BURST_S)
    note = f"{n} events at {rate_hz:g}/s; same Comet, same subscriber"
    return [
        Figure("publish", "sqlite", "bare Comet hop p50", b50, "ms", note),
        Figure("publish", "sqlite", "bare Comet hop p99", b99, "ms", f"p95 {b95:.1f} ms"),
        Figure("publish", "sqlite", "trigger POST -> subscriber p50", e50, "ms",
               f"target <= 15 ms; {e50 / b50:.1f}x the bare hop (target <= 3x)"),
        Figure("publish", "sqlite", "trigger POST -> subscriber p99", e99, "ms",
               f"target <= 60 ms; p95 {e95:.1f} ms"),
        Figure("publish", "sqlite", "late trigger (14 d) POST -> subscriber p50", l50, "ms",
               f"{l50 - e50:+.1f} ms vs dated now (target <= +10 ms); p99 {l99:.1f} ms"),
        Figure("publish", "sqlite", f"burst {BURST_RATE_HZ:g}/s POST -> subscriber p99", s99,
               "ms", f"{burst_n} triggers in {BURST_S:g} s, "
               f"{burst_n - len(burst) or 'none'} lost (not there 60 s after the last POST); "
               f"p50 {s50:.1f} ms; target <= 250 ms, none lost"),
    ]


def _health(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _bare_hop(receive_port: int, arrivals: _Arrivals, n: int, rate_hz: float) -> list[float]:
    from broker.publish.senders import VTPSender

    template = (ROOT / "tests" / "data" / "voevents" / "BAT_GRB_Pos_655721-214.xml").read_bytes()
    sender = VTPSender("127.0.0.1", receive_port)
    sent: dict[str, float] = {}
    start = time.perf_counter()
    for i in range(n):
        time.sleep(max(0.0, start + i / rate_hz - time.perf_counter()))
        ivorn = f"ivo://bench.mmbroker/bare#{time.time_ns()}-{i}"
        xml = re.sub(rb'ivorn="[^"]+"', f'ivorn="{ivorn}"'.encode(), template, count=1)
        sent[ivorn] = time.perf_counter()
        sender.send(ivorn, xml)
    _wait(lambda: all(i in arrivals.at for i in sent), 30)
    return [arrivals.at[i] - t for i, t in sent.items() if i in arrivals.at]


LATE_AGE_S = 14 * 86400.0
"""Age of the late triggers, s: past the live window, inside every pairing's reach."""
FRESH_S = 5.0
"""A trigger dated within this many seconds of its POST counts as fresh."""


def _check_age(base: str, token: str, ivorn: str, age_s: float) -> None:
    """Stop loudly unless the broker archived the trigger with the age this run claims
    (a fresh run that measured late alerts, or the reverse, would mislead)."""
    url = f"{base}/api/v1/alerts/{urllib.parse.quote(ivorn, safe='')}"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as reply:
        detail = json.loads(reply.read())
    received = datetime.fromisoformat(detail["receipt"]["received_at"].replace("Z", "+00:00"))
    event = datetime.fromisoformat(detail["alert"]["trigger_time"].replace("Z", "+00:00"))
    age = (received - event).total_seconds()
    if abs(age - age_s) > FRESH_S:
        raise RuntimeError(f"{ivorn}: archived {age:.0f} s after its trigger time, the run "
                           f"claims {age_s:.0f} s: its figures would describe other alerts")


def _end_to_end(base: str, token: str, arrivals: _Arrivals, n: int, rate_hz: float,
                age_s: float = 0.0, *, lossy: bool = False) -> list[float]:
    """Seconds from each POST to the subscriber's copy.  A trigger not there 60 s after
    the last POST stops the run, unless ``lossy`` (the burst, whose losses are a figure)."""
    import alerts_schema

    track = json.loads(next(p for p in alerts_schema.example_paths("trigger")
                            if "track-single" in p.name).read_text())
    sent: dict[str, float] = {}
    threads = []
    start = time.perf_counter()
    stamp = time.time_ns()

    def post(i: int) -> None:
        dated = datetime.now(UTC) - timedelta(seconds=age_s)
        body = json.dumps({**track, "event_id": f"BENCH-{stamp}-{age_s:g}-{i}",
                           "time": dated.isoformat().replace("+00:00", "Z")}).encode()
        request = urllib.request.Request(f"{base}/api/v1/triggers", data=body, method="POST",
                                         headers={"Content-Type": "application/json",
                                                  "Authorization": f"Bearer {token}"})
        ivorn = f"ivo://local.mmbroker/detector#KM3NeT:BENCH-{stamp}-{age_s:g}-{i}-0"
        sent[ivorn] = time.perf_counter()
        with urllib.request.urlopen(request, timeout=30) as reply:
            reply.read()

    for i in range(n):
        time.sleep(max(0.0, start + i / rate_hz - time.perf_counter()))
        thread = threading.Thread(target=post, args=(i,), daemon=True)
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join(30)
    _wait(lambda: all(i in arrivals.at for i in sent), 60)
    missing = [i for i in sent if i not in arrivals.at]
    if missing and not lossy:
        raise RuntimeError(f"{len(missing)} of {n} triggers never reached the subscriber")
    _check_age(base, token, next(iter(sent)), age_s)
    return [arrivals.at[i] - t for i, t in sent.items() if i in arrivals.at]


def bench_trigger_cpu(n: int = 400, sizes: Sequence[int] = (1, 20), rounds: int = 3,
                      paced_n: int = 100) -> list[Figure]:
    """CPU per trigger in process, from raw bytes to queued VOEvent, alone and in batches.

    A fresh SQLite archive, the pipeline ``serve`` builds (VOEvents queued for a VTP
    target no one sends to), ``n`` triggers dated now per round, ingested ``size`` at a
    time; the sizes alternate over ``rounds`` rounds and the median round is reported
    (``time.process_time``: CPU of this process, not the wall clock of a shared
    machine).  What the trigger route's group ingest (``broker/runtime/grouping.py``)
    buys when requests arrive together.  Then ``paced_n`` lone triggers straight after
    another, after 50 ms asleep and after 50 ms busy-waiting (:func:`_paced_ms`): what
    a pause such as the one before every trigger at 20/s costs on this machine.
    """
    import alerts_schema
    from broker.archive import migrate
    from broker.archive.store import Archive
    from broker.config import get_settings
    from broker.runtime import assembly

    tmp = Path(tempfile.mkdtemp(prefix="mmbroker-bench-"))
    os.environ.setdefault("MMBROKER_DATA_DIR", str(tmp / "data"))
    settings = get_settings(database_url=f"sqlite:///{tmp / 'archive.sqlite3'}", comet=False)
    archive = Archive.open(settings.effective_database_url)
    migrate.upgrade(archive.engine)
    assembly.configure_normalizers(settings)
    pipeline = assembly.make_pipeline(settings, archive, targets=["vtp"])
    track = json.loads(next(p for p in alerts_schema.example_paths("trigger")
                            if "track-single" in p.name).read_text())
    count = 0

    def raw() -> RawMessage:
        nonlocal count
        count += 1
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        body = json.dumps({**track, "event_id": f"CPU-{count}", "time": now}).encode()
        return pipeline.receive("detector", body, transport={"http": {"client": "127.0.0.1"}})

    for _ in range(40):  # imports, caches, first statements
        pipeline.ingest([raw()])
    per: dict[int, list[float]] = {size: [] for size in sizes}
    for _ in range(rounds):
        for size in sizes:
            begin = time.process_time()
            for _ in range(n // size):
                pipeline.ingest([raw() for _ in range(size)])
            per[size].append((time.process_time() - begin) / (n // size * size) * 1000)
    paced = _paced_ms(lambda: pipeline.ingest([raw()]), paced_n, PACED_GAP_S)
    archive.engine.dispose()
    figures = [Figure("trigger CPU", "sqlite", f"raw bytes -> queued VOEvent, batches of {size}",
                      sorted(values)[len(values) // 2], "ms",
                      f"CPU per trigger, median of {rounds} rounds of {n // size * size}")
               for size, values in per.items()]
    gap_ms = f"{PACED_GAP_S * 1000:g} ms"
    wall = {arm: statistics.median(w) for arm, (w, _) in paced.items()}
    cpu = {arm: statistics.median(c) for arm, (_, c) in paced.items()}
    for arm, label in (("asleep", f"after {gap_ms} asleep"),
                       ("busy", f"after {gap_ms} busy-waiting")):
        figures.append(Figure(
            "trigger wall", "sqlite", f"one trigger {label}", wall[arm], "ms",
            f"{wall[arm] / wall['tight']:.2f}x the same work straight after another "
            f"({wall['tight']:.2f} ms); its CPU {cpu[arm]:.2f} ms against "
            f"{cpu['tight']:.2f} ms; {paced_n} of each, interleaved"))
    return figures


PACED_GAP_S = 0.05
"""Pause before each paced trigger, s: about the idle time between triggers at 20/s."""


def _paced_ms(ingest_one: Callable[[], object], n: int, gap_s: float
              ) -> dict[str, tuple[list[float], list[float]]]:
    """Wall and CPU ms of ``ingest_one`` run straight after the previous one ("tight"),
    after ``gap_s`` asleep ("asleep") and after ``gap_s`` spinning ("busy"), interleaved
    ``n`` times each; by arm, (wall ms, this thread's CPU ms).

    A trigger at 20/s always follows a pause.  On a shared VM the same work can take
    longer after one; this says how much on the machine at hand, whether the pause
    left the core idle or not (asleep against busy), and whether the extra is CPU
    (the work itself ran slower) or waiting (wall but not CPU).
    """
    out: dict[str, tuple[list[float], list[float]]] = {
        arm: ([], []) for arm in ("tight", "asleep", "busy")}
    for _ in range(n):
        for arm, (walls, cpus) in out.items():
            ingest_one()  # the one before: what the tight arm follows at once
            if arm == "asleep":
                time.sleep(gap_s)
            elif arm == "busy":
                until = time.perf_counter() + gap_s
                while time.perf_counter() < until:
                    pass
            begin, begin_cpu = time.perf_counter(), time.thread_time()
            ingest_one()
            walls.append((time.perf_counter() - begin) * 1000)
            cpus.append((time.thread_time() - begin_cpu) * 1000)
    return out
