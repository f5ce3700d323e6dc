"""Outbox drain: VOEvents queued in the outbox, delivered to Comet, at a stock subscriber.

``python -m bench drain``: ``--drain-events`` VOEvents (Swift-BAT notices,
dated now, each with its own IVORN) are queued in one round in a fresh SQLite
archive's outbox for VTP; one :class:`broker.publish.senders.DeliveryLoop`
(the publish stage's) sends them to a Comet broker, which broadcasts them to a
stock Comet subscriber saving each event to a file.  Timed from the loop's
start until the outbox has nothing pending (every event acknowledged by Comet)
and until the subscriber has saved all of them.

Both Comets are started as the broker starts its Comet child (this project's
launcher, :mod:`broker.publish.comet_run`), once per event database
(``comet_eventdb``): ``sqlite``, and ``dbm`` (Comet's own: ``dbm.dumb`` on a
Python without gdbm/ndbm), the latter with ``--drain-dbm-events`` (default
the same number) as it slows with every event already seen.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from bench._common import Figure, start_server, stop_process

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "tests" / "data" / "voevents" / "BAT_GRB_Pos_655721-214.xml"


def voevents(n: int, stamp: str) -> list[tuple[str, bytes]]:
    """``n`` schema-valid VOEvents (IVORN, bytes), each unique, dated now."""
    raw = TEMPLATE.read_bytes()
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    raw = re.sub(rb"<Date>[^<]+</Date>", f"<Date>{now}</Date>".encode(), raw, count=1)
    raw = re.sub(rb"<ISOTime>[^<]+</ISOTime>", f"<ISOTime>{now}.00</ISOTime>".encode(), raw,
                 count=1)
    out = []
    for i in range(n):
        ivorn = f"ivo://bench.mmbroker/drain#{stamp}-{i}"
        out.append((ivorn, re.sub(rb'ivorn="[^"]+"', f'ivorn="{ivorn}"'.encode(), raw,
                                  count=1)))
    return out


def bench_drain(n: int = 2000, n_dbm: int | None = None) -> list[Figure]:
    figures = []
    for backend, count in (("sqlite", n), ("dbm", n_dbm if n_dbm is not None else n)):
        if count:
            figures += _drain(backend, count)
    return figures


def _drain(backend: str, n: int) -> list[Figure]:
    from broker.archive.store import Archive
    from broker.publish import outbox
    from broker.publish.senders import DeliveryLoop, VTPSender

    tmp = Path(tempfile.mkdtemp(prefix=f"mmbroker-drain-{backend}-"))
    archive = Archive.open(f"sqlite:///{tmp / 'archive.sqlite3'}")
    items = [outbox.Outgoing(ivorn, xml, "observation", {"entity": {}})
             for ivorn, xml in voevents(n, f"{backend}-{time.time_ns()}")]
    assert all(outbox.queue(archive, items, ["vtp"]))
    ports = {"receive": _free_port(), "broadcast": _free_port()}
    saved = tmp / "saved"
    saved.mkdir()
    procs = []
    stop = threading.Event()
    try:
        procs.append(_comet(tmp, backend, "broker", [
            "--receive", f"--receive-port={ports['receive']}", "--broadcast",
            f"--broadcast-port={ports['broadcast']}", "--broadcast-test-interval=0",
            "--local-ivo=ivo://bench.mmbroker/comet", f"--eventdb={tmp / 'broker-eventdb'}",
            "--author-whitelist=127.0.0.1/32", "--subscriber-whitelist=127.0.0.1/32"]))
        _wait_port(ports["receive"])
        _wait_port(ports["broadcast"])
        procs.append(_comet(tmp, backend, "subscriber", [
            "--local-ivo=ivo://bench.mmbroker/subscriber",
            f"--remote=127.0.0.1:{ports['broadcast']}", "--save-event",
            f"--save-event-directory={saved}", f"--eventdb={tmp / 'subscriber-eventdb'}"]))
        sender = VTPSender("127.0.0.1", ports["receive"])
        _until_subscribed(sender, saved)
        before = len(list(saved.iterdir()))  # the probes
        loop = DeliveryLoop(archive, sender, poll_s=0.05)
        start = time.perf_counter()
        thread = threading.Thread(target=loop.run, args=(stop,), daemon=True)
        thread.start()
        acked = at_subscriber = None
        deadline = start + max(120.0, n / 5)
        while time.perf_counter() < deadline:
            if acked is None and outbox.pending_count(archive) == 0:
                acked = time.perf_counter() - start
            if at_subscriber is None and len(list(saved.iterdir())) - before >= n:
                at_subscriber = time.perf_counter() - start
            if acked is not None and at_subscriber is not None:
                break
            time.sleep(0.1)  # a light poll: the loop shares this process (GIL)
        if acked is None or at_subscriber is None:
            raise RuntimeError(f"{backend}: {outbox.pending_count(archive)} of {n} still "
                               f"pending, {len(list(saved.iterdir())) - before} saved; see {tmp}")
    finally:
        stop.set()
        for proc in procs:
            stop_process(proc, 20)
        archive.close()
    shutil.rmtree(tmp, ignore_errors=True)
    note = f"{n} VOEvents, one delivery loop, comet_eventdb={backend}"
    return [
        Figure("drain", backend, "outbox -> Comet ack", n / acked, "VOEvent/s",
               f"{note}; {acked:.1f} s"),
        Figure("drain", backend, "outbox -> stock subscriber", n / at_subscriber, "VOEvent/s",
               f"target >= 200/s; {at_subscriber:.1f} s"),
    ]


def _comet(tmp: Path, backend: str, name: str, args: list[str]) -> subprocess.Popen[bytes]:
    log = open(tmp / f"comet-{name}.log", "wb")  # noqa: SIM115 - the child holds it
    try:
        return start_server(
            [sys.executable, "-m", "broker.publish.comet_run", f"--eventdb-backend={backend}",
             "-n", "--pidfile=", "comet", *args], stdout=log, stderr=subprocess.STDOUT,
            cwd=tmp)
    finally:
        log.close()


def _until_subscribed(sender: object, saved: Path) -> None:
    """Probe events until the subscriber saves one (it retries 1 s after a refusal)."""
    deadline = time.monotonic() + 60
    k = 0
    while time.monotonic() < deadline:
        (ivorn, xml), = voevents(1, f"probe-{k}")
        sender.send(ivorn, xml)  # type: ignore[attr-defined]
        k += 1
        until = time.monotonic() + 0.5
        while time.monotonic() < until:
            if any(saved.iterdir()):
                return
            time.sleep(0.05)
    raise RuntimeError("the Comet subscriber did not connect in 60 s")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, timeout_s: float = 30.0) -> None:
    import socket

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"Comet did not listen on {port} in {timeout_s:.0f} s")
