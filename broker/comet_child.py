"""The Comet broker ``mmbroker serve`` runs as a child process.

Comet receives the VOEvents this broker publishes (authors: loopback only)
and broadcasts them to subscribers (the whitelist from settings).  Its own
event database lives in the data directory.  The child is started before the
delivery loops and stopped after them; if it dies, the VTP delivery loop
backs off and the outbox keeps every undelivered VOEvent until it is back.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from broker.config import Settings

log = logging.getLogger(__name__)


def command(settings: Settings) -> list[str]:
    """The ``twistd -n comet ...`` command line for ``settings``."""
    twistd = Path(sys.executable).with_name("twistd")
    eventdb = settings.data_dir / "comet-eventdb"
    args = [str(twistd), "-n", "--pidfile=", "comet", "--receive",
            f"--receive-port={settings.vtp_receive_port}", "--broadcast",
            f"--broadcast-port={settings.vtp_broadcast_port}",
            f"--local-ivo=ivo://{settings.ivorn_authority}/comet", f"--eventdb={eventdb}",
            "--author-whitelist=127.0.0.1/32"]
    args += [f"--subscriber-whitelist={net}" for net in settings.comet_subscriber_whitelist]
    return args


class CometChild:
    """Start, watch and stop the Comet child process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 20.0) -> None:
        (self.settings.data_dir / "comet-eventdb").mkdir(parents=True, exist_ok=True)
        log_path = self.settings.data_dir / "comet.log"
        with open(log_path, "ab") as log_file:
            self.proc = subprocess.Popen(command(self.settings), stdout=log_file,
                                         stderr=subprocess.STDOUT,
                                         cwd=self.settings.data_dir)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Comet exited at start ({self.proc.returncode}); see "
                                   f"{log_path}")
            if _listening(self.settings.vtp_receive_port):
                log.info("Comet: receiving on %d, broadcasting on %d (log %s)",
                         self.settings.vtp_receive_port, self.settings.vtp_broadcast_port,
                         log_path)
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Comet did not listen on {self.settings.vtp_receive_port} within "
                           f"{timeout_s:.0f} s; see {log_path}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def supervise(self, stop: threading.Event, *, every_s: float = 5.0) -> None:
        """Start Comet, and start it again whenever it has died, until ``stop``.

        A broker whose Comet cannot start (its port taken, say) still ingests,
        cross-matches and archives; VOEvents wait in the outbox, and the VTP
        delivery loop sends them once Comet is up.
        """
        while not stop.is_set():
            if not self.alive():
                try:
                    self.start()
                except (OSError, RuntimeError) as exc:
                    log.error("Comet: %s; trying again in %.0f s", exc, every_s)
            stop.wait(every_s)
        self.stop()

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout_s)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0
