"""The Comet child of `mmbroker serve` under faults, with real processes (issue 14, items 10-11).

* kill -9 of the Comet child while VOEvents flow to a stock Comet subscriber:
  nothing is lost at the subscriber, nothing is doubled (delivery is held
  until the subscriber is back; what was acknowledged just before the crash is
  sent again and the subscriber drops the copies);
* kill -9 of `mmbroker serve`: its Comet child goes with it, the ports are free,
  and `serve` started again delivers everything once to the same subscriber;
* an orphaned Comet of the same data directory on the ports: named and
  replaced, `/ready` never true before our own Comet is up, triggers reach a
  subscriber through our Comet;
* a foreign process on the port: no spawn loop, the reason logged once,
  `/ready` not ready until the port is free, then Comet starts.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import alerts_schema
from broker.config import get_settings
from broker.publish.comet_child import command, port_holders, stock_subscriber_back_s
from tests.conftest import free_port, mmbroker
from tests.servers import (
    RecordingSender,
    comet_subscriber,
    saved_ivorns,
    stop_process,
    wait_for,
)

pytestmark = pytest.mark.timeout(300)
TRACK = json.loads(next(p for p in alerts_schema.example_paths("trigger")
                        if "track-single" in p.name).read_text())


@dataclass
class Serve:
    proc: subprocess.Popen[bytes]
    base: str
    token: str
    ports: dict[str, int]
    data: Path
    log: Path
    db: str

    def get(self, path: str) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(self.base + path, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def post(self, trigger: dict) -> str:
        request = urllib.request.Request(
            f"{self.base}/api/v1/triggers", data=json.dumps(trigger).encode(), method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 201
            return json.loads(response.read())["id"]

    def comet_pid(self) -> int | None:
        """The pid of serve's Comet child (a `comet` process whose parent is serve)."""
        for pid in _pids():
            if _ppid(pid) == self.proc.pid and "comet" in _cmdline(pid):
                return pid
        return None


def _pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def _ppid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _gone(pid: int) -> bool:
    """Dead (a zombie waiting for its parent to reap it counts as dead)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _ports(tmp: Path) -> dict[str, int]:
    return {"http": free_port(), "receive": free_port(), "broadcast": free_port()}


def _env(tmp: Path, ports: dict[str, int]) -> dict[str, str]:
    return {**os.environ, "MMBROKER_DATA_DIR": str(tmp / "data"),
            "MMBROKER_HTTP_PORT": str(ports["http"]),
            "MMBROKER_VTP_RECEIVE_PORT": str(ports["receive"]),
            "MMBROKER_VTP_BROADCAST_PORT": str(ports["broadcast"]),
            "MMBROKER_LOG_LEVEL": "INFO"}


@contextlib.contextmanager
def serve(tmp: Path, ports: dict[str, int], *, wait_up: bool = True) -> Iterator[Serve]:
    """`mmbroker serve` with its Comet child on ``ports``; stopped (killed if need be)."""
    env = _env(tmp, ports)
    db = str(tmp / "broker.sqlite3")
    if not Path(db).exists():
        mmbroker("--db", db, "db", "upgrade", env=env)
    token = mmbroker("--db", db, "token", "create", "--scope", "write:triggers",
                     "--detector", "KM3NeT", env=env).stdout.strip()
    log = tmp / "serve.log"
    out = open(log, "ab")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([str(Path(sys.executable).with_name("mmbroker")), "--db", db,
                             "serve"], env=env, stdout=out, stderr=subprocess.STDOUT)
    broker = Serve(proc, f"http://127.0.0.1:{ports['http']}", token, ports, tmp / "data",
                   log, db)
    try:
        if wait_up:
            assert wait_for(lambda: _up(broker), 90, 0.2), log.read_text()[-3000:]
        yield broker
    finally:
        comet = broker.comet_pid() if proc.poll() is None else None
        stop_process(proc, 30)
        out.close()
        if comet is not None and not _gone(comet):  # never leave one behind
            os.kill(comet, signal.SIGKILL)


def _up(broker: Serve) -> bool:
    assert broker.proc.poll() is None, broker.log.read_text()[-3000:]
    try:
        return broker.get("/health")[0] == 200
    except OSError:
        return False


def _ready(broker: Serve) -> tuple[int, dict]:
    try:
        return broker.get("/ready")
    except OSError as exc:
        return 0, {"error": str(exc)}


def _connected(broker: Serve, saved: Path) -> bool:
    """A throwaway test trigger posted now reaches the subscriber."""
    ivorn = broker.post({**TRACK, "event_id": f"PROBE-{time.monotonic_ns()}", "real": False})
    return wait_for(lambda: ivorn in saved_ivorns(saved), 8)


def saved_ivorns_of(path: Path) -> list[str]:
    import re

    match = re.search(rb'ivorn="([^"]+)"', path.read_bytes())
    return [match.group(1).decode()] if match else []


def test_stock_subscriber_schedule() -> None:
    """The hold after a restart follows a stock subscriber's retries (1 s, then x e)."""
    assert 1.0 < stock_subscriber_back_s(0.5) < 1.5  # its first retry, late end
    assert 3.7 < stock_subscriber_back_s(1.5) < 5.2  # it missed the first: 1 + e s
    assert 11.1 < stock_subscriber_back_s(5.0) < 15.2  # 1 + e + e**2 s


def test_kill_9_of_comet_during_delivery_loses_and_doubles_nothing(tmp_path: Path) -> None:
    """Triggers posted just before and for 12 s after a kill -9 of the Comet child all
    reach a stock Comet subscriber that reconnects on its own schedule, each once."""
    ports = _ports(tmp_path)
    with serve(tmp_path, ports) as broker, \
            comet_subscriber(tmp_path, ports["broadcast"]) as saved:
        assert wait_for(lambda: _connected(broker, saved), 90), "subscriber never received"
        time.sleep(6)  # connected past RESET_DELAY (5 s): its back-off starts from 1 s again
        comet = broker.comet_pid()
        assert comet is not None
        before = [broker.post({**TRACK, "event_id": f"BEFORE-{n}"}) for n in range(10)]
        # Killed while the outbox delivers the burst (Comet acknowledges 13-80 events/s).
        os.kill(comet, signal.SIGKILL)
        killed = time.monotonic()
        after = []
        n = 0
        while time.monotonic() - killed < 12:  # every moment of the restart, and after it
            after.append(broker.post({**TRACK, "event_id": f"AFTER-{n}"}))
            n += 1
            time.sleep(0.2)
        wanted = set(before + after)
        delivered = wait_for(lambda: wanted <= set(saved_ivorns(saved)), 120, 0.2)
        took = time.monotonic() - killed
        time.sleep(3)  # any double would come now
        counts = Counter(i for i in saved_ivorns(saved) if i in wanted)
        arrived = {ivorn: path.stat().st_mtime for path in saved.iterdir()
                   for ivorn in saved_ivorns_of(path)}
        killed_wall = time.time() - (time.monotonic() - killed)
        new = broker.comet_pid()
        log = broker.log.read_text()
        subscriber_log = (tmp_path / f"comet-sub-{ports['broadcast']}.log").read_text()
        listing = mmbroker("--db", broker.db, "voevents", "list", "--limit", "5",
                           env=_env(tmp_path, ports))
    missing = wanted - set(counts)
    print(f"all {len(wanted)} at the subscriber {took:.1f} s after the kill (posting went on "
          f"12 s); the {len(before)} posted before it all there "
          f"{max(arrived.get(i, 0) for i in before) - killed_wall:.1f} s after it; "
          f"Comet restarted as pid {new}")
    assert delivered and not missing, f"{len(missing)} of {len(wanted)} lost: {sorted(missing)}"
    assert set(counts.values()) == {1}, {i: c for i, c in counts.items() if c > 1}
    assert new is not None and new != comet
    # What the dead Comet had acknowledged was sent again (and the subscriber kept one copy).
    assert "sending again the" in log, log[-3000:]
    assert "Event rejected (Previously seen by this broker)" in subscriber_log  # the copies
    assert "for vtp by our own Comet broker, not received by any subscriber" in listing.stderr


def test_kill_9_of_serve_takes_its_comet_child_along(tmp_path: Path) -> None:
    """kill -9 of serve: its Comet child goes too and frees the ports; serve started again
    at once delivers what was posted before and after to a subscriber that reconnects on
    its own schedule, each once."""
    ports = _ports(tmp_path)
    with comet_subscriber(tmp_path, ports["broadcast"]) as saved:
        with serve(tmp_path, ports) as broker:
            assert wait_for(lambda: _connected(broker, saved), 90), "subscriber never received"
            time.sleep(6)  # connected past RESET_DELAY (5 s): its back-off starts from 1 s
            before = [broker.post({**TRACK, "event_id": f"BEFORE-{n}"}) for n in range(5)]
            comet = broker.comet_pid()
            assert comet is not None and not _gone(comet)
            broker.proc.send_signal(signal.SIGKILL)
            broker.proc.wait(10)
            killed = time.monotonic()
            gone = wait_for(lambda: _gone(comet), 10, 0.05)
            took = time.monotonic() - killed
            if not gone:
                os.kill(comet, signal.SIGKILL)  # the orphan: clean up, then fail
        print(f"Comet child gone {took:.2f} s after kill -9 of serve")
        assert gone, f"Comet child {comet} still running {took:.0f} s after its parent died"
        assert took < 6
        holders = port_holders([ports["receive"], ports["broadcast"]])
        assert holders == {}, f"ports still held: {holders}"
        with serve(tmp_path, ports) as broker:
            up = time.monotonic() - killed
            after = [broker.post({**TRACK, "event_id": f"AFTER-{n}"}) for n in range(5)]
            wanted = set(before + after)
            delivered = wait_for(lambda: wanted <= set(saved_ivorns(saved)), 90, 0.2)
            took = time.monotonic() - killed
            time.sleep(3)
            counts = Counter(i for i in saved_ivorns(saved) if i in wanted)
    print(f"serve up again {up:.1f} s after the kill; all {len(wanted)} at the subscriber "
          f"{took:.1f} s after it")
    assert delivered, f"lost: {sorted(wanted - set(counts))}"
    assert set(counts.values()) == {1}, counts


def test_an_orphaned_comet_on_our_ports_is_named_and_replaced(tmp_path: Path) -> None:
    ports = _ports(tmp_path)
    settings = get_settings(data_dir=tmp_path / "data", vtp_receive_port=ports["receive"],
                            vtp_broadcast_port=ports["broadcast"])
    (tmp_path / "data" / "comet-eventdb").mkdir(parents=True)
    # What an earlier `serve` killed uncleanly left behind: its Comet, same command line.
    orphan_log = open(tmp_path / "orphan.log", "wb")  # noqa: SIM115 - closed below
    orphan = subprocess.Popen(command(settings), cwd=tmp_path / "data", stdout=orphan_log,
                              stderr=subprocess.STDOUT)
    samples: list[tuple[int, bool, dict]] = []
    try:
        assert wait_for(lambda: port_holders([ports["receive"]]) == {
            ports["receive"]: {orphan.pid}}, 30), "the orphan did not start"
        with serve(tmp_path, ports, wait_up=False) as broker:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                status, body = _ready(broker)
                # Sampled after the answer: an orphan alive then was alive when it answered.
                samples.append((status, orphan.poll() is None, body))
                if status == 200:
                    break
                time.sleep(0.1)
            assert samples[-1][0] == 200, samples[-5:]
            assert not [s for s in samples if s[0] == 200 and s[1]], "ready while the orphan ran"
            assert samples[-1][2]["checks"]["comet"] == "ok"
            ours = broker.comet_pid()
            assert ours is not None and ours != orphan.pid
            holders = port_holders([ports["receive"], ports["broadcast"]])
            assert holders == {ports["receive"]: {ours}, ports["broadcast"]: {ours}}
            with comet_subscriber(tmp_path, ports["broadcast"]) as saved:
                assert wait_for(lambda: _connected(broker, saved), 90)
                ivorn = broker.post({**TRACK, "event_id": "THROUGH-OURS"})
                assert wait_for(lambda: ivorn in saved_ivorns(saved), 30)
            log = broker.log.read_text()
    finally:
        stop_process(orphan)
        orphan_log.close()
    assert orphan.returncode is not None
    assert f"stale Comet of this data directory left by an earlier run: pid {orphan.pid}" \
        in log, log[-3000:]
    assert f"holding port {ports['receive']} and {ports['broadcast']}" in log


def test_a_foreign_port_holder_is_named_once_and_no_comet_is_spawned(tmp_path: Path) -> None:
    ports = _ports(tmp_path)
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", ports["receive"]))
    squatter.listen()
    try:
        with serve(tmp_path, ports) as broker:
            status, body = _ready(broker)
            assert status == 503
            assert f"port {ports['receive']} is held by pid {os.getpid()}" in \
                body["checks"]["comet"], body
            time.sleep(12)  # old code: a Comet spawned and dying every 5 s
            assert broker.comet_pid() is None
            assert _ready(broker)[0] == 503
            log = broker.log.read_text()
            assert log.count(f"is held by pid {os.getpid()}") == 1, log[-3000:]
            comet_log = broker.data / "comet.log"
            assert not comet_log.exists() or "Address already in use" not in \
                comet_log.read_text()
            squatter.close()
            # Back-off is at most 16 s by now.
            assert wait_for(lambda: _ready(broker)[0] == 200, 40), _ready(broker)
    finally:
        squatter.close()


class _Gate:
    """A restart as the delivery loop sees it: hold until ``until``, then one resend."""

    def __init__(self, until: float, resend: tuple) -> None:
        self.until = until
        self.resend: tuple | None = resend

    def hold_s(self) -> float:
        return max(0.0, self.until - time.monotonic())

    def take_resend(self) -> tuple | None:
        resend, self.resend = self.resend, None
        return resend




def test_a_held_loop_sends_nothing_then_the_window_again_first(archive: object) -> None:
    """The outbox side of a restart, on both backends: nothing goes while the gate holds;
    then what was sent in the window goes again (attempt 2), ahead of what waited."""
    from datetime import timedelta

    from sqlalchemy import select, update

    from broker.archive.db import transaction
    from broker.archive.models import Delivery, VOEventRow
    from broker.archive.store import utcnow
    from broker.publish import outbox
    from broker.publish.senders import DeliveryLoop
    from tests.test_delivery import queue, run, voevent

    sender = RecordingSender()
    loop = DeliveryLoop(archive, sender, poll_s=0.1)  # type: ignore[arg-type]
    thread, stop = run(loop)
    try:
        queue(archive, range(3), ["vtp", "kafka-xml"])  # type: ignore[arg-type]
        assert wait_for(lambda: len(sender.sent) == 3, 20)
        # Nothing sent to that target yet: nothing to send again.
        assert outbox.resend_recent(archive, "kafka-xml", 10) == []
        # ev0 went an hour ago: outside the window.
        with transaction(archive.engine) as conn:  # type: ignore[attr-defined]
            d, v = Delivery.__table__, VOEventRow.__table__
            first = select(v.c.id).where(v.c.ivorn == voevent(0)[0]).scalar_subquery()
            conn.execute(update(d).where(d.c.voevent_id == first).values(
                delivered_at=utcnow() - timedelta(hours=1)))
        loop.gate = _Gate(time.monotonic() + 2.0, (utcnow(), 10.0))
        queue(archive, range(3, 5), ["vtp"])  # type: ignore[arg-type]
        time.sleep(1.0)
        assert len(sender.sent) == 3  # held
        assert wait_for(lambda: len(sender.sent) == 7, 20), sender.sent
        time.sleep(0.5)
    finally:
        stop.set()
        thread.join(10)
    ivorns = [voevent(n)[0] for n in range(5)]
    assert sender.sent == ivorns[:3] + ivorns[1:3] + ivorns[3:]
    states = {e["ivorn"]: e["targets"]["vtp"] for e in outbox.status(archive)}  # type: ignore
    assert all(states[i]["state"] == "sent" for i in ivorns)
    assert [states[i]["attempts"] for i in ivorns] == [1, 2, 2, 1, 1]
