"""The Comet broker ``mmbroker serve`` runs as a child process.

Comet receives the VOEvents this broker publishes (authors: loopback only)
and broadcasts them to subscribers (the whitelist from settings).  Its own
event database lives in the data directory: SQLite by default (setting
``comet_eventdb``; :mod:`broker.publish.comet_eventdb`).

The child's life:

* It dies with its parent, however the parent ends (SIGKILL included): it runs
  under :mod:`broker.publish.comet_run`, which watches a pipe only the parent holds.
* A Comet found on our ports at start is named (pid, command line, port).  If
  it is provably ours (a ``comet`` whose ``--eventdb`` is this data
  directory's: an orphan of an earlier run) it is stopped and replaced;
  anything else is left alone and Comet is not started (``/ready`` says why).
* A child that will not start is retried with back-off (1, 2, 4 ... s up to
  ``comet_start_max_backoff_s``) and the reason is logged once, not per try.
* It is up (:meth:`CometChild.check`) only while the process runs and it is
  the process holding both ports (Linux ``/proc``; elsewhere: the ports
  answer).
* After every start, VTP delivery is held (:meth:`CometChild.hold_s`) until
  subscribers are back.  The child counts its subscribers into ``comet.subscribers``
  in the data directory (:func:`broker.publish.comet_run.count_subscribers`); when
  the Comet that died had some, delivery waits until as many are connected again
  (then :data:`SETTLE_S` more), up to :data:`HOLD_CAP_S`: a stock subscriber's retry
  schedule, jittered and compounding, slowed by a loaded machine, was not a safe
  thing to predict (a prediction released delivery before a subscriber that came back
  later, and its VOEvents were lost to it).  Otherwise (the first start; none were
  connected) the hold follows the stock schedule: a stock Comet subscriber retries
  1 s after losing its broker, then 3.7 s, 11 s, 31 s (Twisted's
  ``ReconnectingClientFactory``: 1 s, times e each retry, jitter 12%);
  measured here it reconnected 0.7-1.5 s after a kill -9 of its broker.  When
  Comet was down past a retry, the hold lasts until the next one (up to
  :data:`HOLD_CAP_S`); ``comet.lastseen`` in the data directory, touched every
  second while Comet is up, carries that across a restart of ``serve``.
  What the dead Comet acknowledged in ``comet_resend_window_s`` before it died
  is then sent again (:meth:`CometChild.take_resend`): its broadcast may not
  have left the process.  The same bytes go again, so a subscriber that got
  them drops the copy (Comet subscribers dedup on the bytes).  For that to
  pass our own Comet, whose event database would refuse bytes it has seen
  ("previously seen"), each start begins with an empty event database: the
  outbox, not Comet, decides what is published once.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from alerts_schema.errors import CometPortTaken
from broker.archive.store import utcnow
from broker.config import Settings

log = logging.getLogger(__name__)

#: Twisted's ReconnectingClientFactory, as a stock Comet subscriber uses it: first retry
#: after 1 s, each next delay times e, each delay jittered by N(1, 0.12).
STOCK_FIRST_RETRY_S = 1.0
STOCK_FACTOR = 2.718281828459045
STOCK_JITTER = 0.119626565582


HOLD_CAP_S = 60.0
"""Longest hold (s) after a start for a stock subscriber's next retry: one whose broker was
away long retries minutes apart; real-time alerts do not wait for it (the grace applies)."""


SETTLE_S = 0.5
"""Hold (s) after the subscribers the dead Comet had are connected again: their VTP
handshake (Comet's authenticate) completes before the first event."""


def stock_subscriber_back_s(down_s: float) -> float:
    """When (s after its broker died) a stock Comet subscriber is back, if the broker listens
    again ``down_s`` after it died: its first retry surely later than ``down_s``, at the late
    end (3 sigma) of its jitter."""
    t, delay = 0.0, STOCK_FIRST_RETRY_S
    while True:
        t += delay
        if t * (1 - 3 * STOCK_JITTER) >= down_s:
            return t * (1 + 3 * STOCK_JITTER)
        delay *= STOCK_FACTOR


def command(settings: Settings) -> list[str]:
    """The ``twistd -n comet ...`` command line for ``settings``."""
    twistd = Path(sys.executable).with_name("twistd")
    args = [str(twistd), "-n", "--pidfile=", "comet", "--receive",
            f"--receive-port={settings.vtp_receive_port}", "--broadcast",
            f"--broadcast-port={settings.vtp_broadcast_port}",
            f"--local-ivo=ivo://{settings.ivorn_authority}/comet",
            f"--eventdb={eventdb(settings)}", "--author-whitelist=127.0.0.1/32"]
    args += [f"--subscriber-whitelist={net}" for net in settings.comet_subscriber_whitelist]
    return args


def eventdb(settings: Settings) -> Path:
    """Comet's event database folder: what makes a Comet process this data directory's."""
    return (settings.data_dir / "comet-eventdb").resolve()


class CometChild:
    """Start, watch, restart and stop the Comet child process; gate VTP delivery after starts."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.proc: subprocess.Popen[bytes] | None = None
        self._parent_end: int | None = None  # the pipe's write end: the child's lifeline
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.problem: str | None = "not started"
        self.starts = 0
        self._died_at: tuple[float, datetime] | None = None  # monotonic, UTC
        self._hold_until = 0.0  # monotonic
        self._resend: tuple[datetime | None, float] | None = None
        self._up_pid: int | None = None  # the child that started (held both ports)
        self._expected: int | None = None  # subscribers the last Comet had when it died
        self._awaiting = 0  # subscribers delivery waits for after this start

    # -- starting ----------------------------------------------------------------

    def start(self, timeout_s: float = 20.0) -> None:
        """Start Comet and wait until it holds both ports; raise with the reason otherwise."""
        self._replace_stale()
        db = eventdb(self.settings)
        # An empty event database per start: see the module docstring (resends).
        shutil.rmtree(db, ignore_errors=True)
        db.mkdir(parents=True, exist_ok=True)
        # What the Comet before this one counted last (it died with them connected).
        self._expected = self.subscribers()
        log_path = self.settings.data_dir / "comet.log"
        read_end, write_end = os.pipe()
        try:
            with open(log_path, "ab") as log_file:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "broker.publish.comet_run", f"--parent-fd={read_end}",
                     f"--eventdb-backend={self.settings.comet_eventdb}",
                     f"--subscribers-file={self.subscribers_path}",
                     *command(self.settings)[1:]],
                    stdout=log_file, stderr=subprocess.STDOUT, pass_fds=(read_end,),
                    cwd=self.settings.data_dir)
        except BaseException:
            os.close(write_end)
            raise
        finally:
            os.close(read_end)
        self._close_lifeline()
        self.proc, self._parent_end = proc, write_end
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"Comet exited at start (status {proc.returncode}): "
                                   f"{_tail(log_path)}")
            if self._holds_ports(proc.pid):
                self._started(proc.pid)
                log.info("Comet: pid %d receiving on %d, broadcasting on %d (log %s)",
                         proc.pid, self.settings.vtp_receive_port,
                         self.settings.vtp_broadcast_port, log_path)
                return
            time.sleep(0.05)
        self._terminate(proc)
        raise RuntimeError(f"Comet did not listen on {self.settings.vtp_receive_port} and "
                           f"{self.settings.vtp_broadcast_port} within {timeout_s:.0f} s; "
                           f"see {log_path}")

    def _started(self, pid: int) -> None:
        now = time.monotonic()
        with self._lock:
            self._up_pid = pid
            self.starts += 1
            self.problem = None
            grace = self.settings.comet_restart_grace_s
            died_at = self._died_at or self._earlier_run_ended()
            anchor = None if died_at is None else died_at[1]  # None: what was sent last
            self._awaiting = self._expected or 0
            if self._awaiting:
                grace = HOLD_CAP_S  # until they are back (hold_s), at most this
            elif died_at is not None:
                down_s = now - died_at[0]
                extra = stock_subscriber_back_s(down_s) - down_s
                if extra <= HOLD_CAP_S:  # else it comes back too late to wait for
                    grace = max(grace, extra)
            self._hold_until = now + grace
            self._resend = (anchor, self.settings.comet_resend_window_s)
        if self._awaiting:
            log.info("Comet: VTP delivery held until its %d subscriber(s) are back (at most "
                     "%.0f s)", self._awaiting, grace)
        else:
            log.info("Comet: VTP delivery held %.1f s for subscribers to reconnect", grace)

    def _earlier_run_ended(self) -> tuple[float, datetime] | None:
        """When the Comet of an earlier run was last seen up (monotonic, UTC), from
        :attr:`seen_path`: the subscribers it had lost it then, and retry on that schedule."""
        try:
            seen = self.seen_path.stat().st_mtime
        except OSError:
            return None
        ago = max(0.0, time.time() - seen)
        return time.monotonic() - ago, datetime.fromtimestamp(seen, UTC)

    @property
    def seen_path(self) -> Path:
        return self.settings.data_dir / "comet.lastseen"

    @property
    def subscribers_path(self) -> Path:
        return self.settings.data_dir / "comet.subscribers"

    def subscribers(self) -> int | None:
        """How many subscribers the Comet child counted last (None: it never wrote)."""
        try:
            return int(self.subscribers_path.read_text().strip() or 0)
        except (OSError, ValueError):
            return None

    def _seen(self) -> None:
        try:
            self.seen_path.touch()
        except OSError:
            log.debug("cannot touch %s", self.seen_path, exc_info=True)

    def _holds_ports(self, pid: int) -> bool:
        ports = (self.settings.vtp_receive_port, self.settings.vtp_broadcast_port)
        holders = port_holders(ports, only=pid)
        if holders is None:  # no /proc: the ports answering is all we can see
            return all(_listening(p) for p in ports)
        return all(pid in holders.get(p, ()) for p in ports)

    def _replace_stale(self) -> None:
        """Stop an orphaned Comet of this data directory; refuse a foreign port holder."""
        ports = (self.settings.vtp_receive_port, self.settings.vtp_broadcast_port)
        mine = {self.proc.pid} if self.alive() and self.proc is not None else set()
        holders = port_holders(ports)
        if holders is None:
            taken = [p for p in ports if _listening(p)]
            if taken:
                raise CometPortTaken(f"port {taken[0]} is taken by another process")
            return
        stale = {pid for pid in comets_of(eventdb(self.settings)) if pid not in mine}
        for port in ports:
            for pid in holders.get(port, ()):
                if pid in mine or pid in stale:
                    continue
                raise CometPortTaken(
                    f"port {port} is held by pid {pid} ({_cmdline_text(pid)}), which is not "
                    f"a Comet of this data directory ({eventdb(self.settings)}); stop it or "
                    "set MMBROKER_VTP_RECEIVE_PORT / MMBROKER_VTP_BROADCAST_PORT")
            if port in holders and not holders[port]:
                raise CometPortTaken(f"port {port} is held by a process this user cannot see")
        for pid in sorted(stale):
            parent = _parent_of(pid)
            if parent is not None and "serve" in _cmdline_text(parent).split() and \
                    "mmbroker" in _cmdline_text(parent):
                raise CometPortTaken(
                    f"another `mmbroker serve` (pid {parent}: {_cmdline_text(parent)}) runs a "
                    f"Comet (pid {pid}) on this data directory ({self.settings.data_dir}); "
                    "two brokers cannot share one")
            held = [str(p) for p in ports if pid in holders.get(p, ())]
            log.warning("Comet: stopping a stale Comet of this data directory left by an "
                        "earlier run: pid %d (%s)%s", pid, _cmdline_text(pid),
                        f", holding port {' and '.join(held)}" if held else "")
            _kill(pid)

    # -- watching ------------------------------------------------------------------

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check(self) -> str:
        """``ok`` when our own Comet is up (process running, holding both ports), else why not."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            with self._lock:
                problem = self.problem
            return f"down: {problem}" if problem else "down"
        if not self._holds_ports(proc.pid):
            return f"starting (pid {proc.pid})"
        return "ok"

    def run(self, *, first_start_s: float = 25.0) -> None:
        """Start the supervisor thread; wait (up to ``first_start_s``) for the first start."""
        started = threading.Event()
        self._thread = threading.Thread(target=self.supervise, args=(self._stop, started),
                                        name="comet-supervisor", daemon=True)
        self._thread.start()
        started.wait(first_start_s)

    def supervise(self, stop: threading.Event, started: threading.Event | None = None,
                  *, every_s: float = 0.2) -> None:
        """Start Comet, and start it again at once whenever it has died, until ``stop``.

        A broker whose Comet cannot start (its port taken, say) still ingests,
        cross-matches and archives; VOEvents wait in the outbox (delivery is held
        while Comet is down), and go once Comet is up.  Failed starts back off.
        """
        failures, reported, last_seen = 0, None, 0.0
        while not stop.is_set():
            if not self.alive():
                proc = self.proc
                if proc is not None and proc.pid == self._up_pid:
                    self._note_death(proc)
                try:
                    self.start()
                except (OSError, RuntimeError, CometPortTaken) as exc:
                    failures += 1
                    reason = str(exc)
                    with self._lock:
                        self.problem = reason
                    delay = min(self.settings.comet_start_max_backoff_s, 2.0 ** (failures - 1))
                    if reason != reported:
                        log.error("Comet: %s; trying again with back-off up to %.0f s (said "
                                  "again only if the reason changes)", reason,
                                  self.settings.comet_start_max_backoff_s)
                        reported = reason
                    if started is not None:
                        started.set()
                    stop.wait(delay)
                    continue
                if failures:
                    log.warning("Comet: started after %d failed attempts", failures)
                failures, reported = 0, None
                if started is not None:
                    started.set()
            elif self.proc is not None and self.proc.pid == self._up_pid and \
                    time.monotonic() - last_seen >= 1.0:
                self._seen()
                last_seen = time.monotonic()
            stop.wait(every_s)
        self._terminate(self.proc)

    def _note_death(self, proc: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._up_pid = None
            self._died_at = (time.monotonic(), utcnow())
            self.problem = f"pid {proc.pid} exited with status {proc.returncode}"
        log.error("Comet: pid %d exited with status %s; restarting it (delivery held until "
                  "subscribers are back)", proc.pid, proc.returncode)

    # -- the delivery gate -------------------------------------------------------------

    def hold_s(self) -> float:
        """Seconds VTP delivery must still wait: while Comet is not up, and after each start
        until subscribers have had time to reconnect."""
        proc = self.proc
        with self._lock:
            if proc is None or proc.poll() is not None or proc.pid != self._up_pid:
                return 0.5
            now = time.monotonic()
            if self._awaiting and (self.subscribers() or 0) >= self._awaiting:
                log.info("Comet: its %d subscriber(s) are back", self._awaiting)
                self._awaiting = 0
                self._hold_until = min(self._hold_until, now + SETTLE_S)
            return max(0.0, self._hold_until - now)

    def take_resend(self) -> tuple[datetime | None, float] | None:
        """Once per start, after the hold: ``(died_at, window_s)``: deliveries Comet
        acknowledged in ``window_s`` before ``died_at`` (None: before the last one sent) are
        to be sent again."""
        with self._lock:
            resend, self._resend = self._resend, None
        return resend

    # -- stopping ------------------------------------------------------------------------

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_s + 5)
        self._terminate(self.proc, timeout_s)

    def _terminate(self, proc: subprocess.Popen[bytes] | None, timeout_s: float = 10.0) -> None:
        if proc is not None and proc.poll() is None:
            if proc.pid == self._up_pid:
                self._seen()  # its subscribers lose it now
            proc.terminate()
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout_s)
        if proc is self.proc:
            self._close_lifeline()

    def _close_lifeline(self) -> None:
        if self._parent_end is not None:
            os.close(self._parent_end)
            self._parent_end = None


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def port_holders(ports: tuple[int, ...] | list[int], only: int | None = None
                 ) -> dict[int, set[int]] | None:
    """Pids holding a listening TCP socket on each of ``ports`` (a port listened on by no
    process this user can see maps to an empty set); None without Linux's ``/proc``.
    ``only``: look at that pid alone (cheap enough for every ``/ready``)."""
    inodes: dict[str, int] = {}
    try:
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                lines = Path(table).read_text().splitlines()[1:]
            except FileNotFoundError:
                continue
            for line in lines:
                fields = line.split()
                port = int(fields[1].rsplit(":", 1)[1], 16)
                if fields[3] == "0A" and port in ports:  # 0A: LISTEN
                    inodes[f"socket:[{fields[9]}]"] = port
    except OSError:
        return None
    if not Path("/proc/self/fd").is_dir():
        return None
    holders: dict[int, set[int]] = {port: set() for port in inodes.values()}
    if not inodes:
        return holders
    dirs = [Path(f"/proc/{only}")] if only is not None else Path("/proc").iterdir()
    for proc_dir in dirs:
        if not proc_dir.name.isdigit():
            continue
        try:
            for fd in (proc_dir / "fd").iterdir():
                held = inodes.get(os.readlink(fd))
                if held is not None:
                    holders[held].add(int(proc_dir.name))
        except OSError:  # gone, or another user's
            continue
    return holders


def comets_of(db: Path) -> set[int]:
    """Pids of Comet processes (``twistd ... comet``, run directly or under
    :mod:`broker.publish.comet_run`) whose event database is ``db``: this data directory's."""
    found = set()
    for proc_dir in Path("/proc").iterdir() if Path("/proc/self").is_dir() else ():
        if not proc_dir.name.isdigit() or int(proc_dir.name) == os.getpid():
            continue
        try:
            args = (proc_dir / "cmdline").read_bytes().decode(errors="replace").split("\0")
            if "comet" not in args:
                continue
            for arg in args:
                if arg.startswith("--eventdb="):
                    # As that process sees it: relative to its working directory.
                    path = Path(os.readlink(proc_dir / "cwd")) / arg.split("=", 1)[1]
                    if path.resolve() == db:
                        found.add(int(proc_dir.name))
        except OSError:
            continue
    return found


def _cmdline_text(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "command line unknown"
    return " ".join(raw.decode(errors="replace").split("\0")).strip()[:400]


def _parent_of(pid: int) -> int | None:
    try:
        ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return ppid if ppid > 1 else None


def _kill(pid: int, timeout_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL if it lingers; wait until it is gone (it is not our child)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not _exists(pid):
                return
            time.sleep(0.05)


def _exists(pid: int) -> bool:
    try:
        # A zombie (dead, not yet reaped by its parent) holds no port any more.
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def _tail(path: Path, n: int = 300) -> str:
    try:
        text = path.read_bytes()[-4000:].decode(errors="replace")
    except OSError:
        return f"see {path}"
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return (lines[-1][-n:] if lines else "no output") + f" (log {path})"
